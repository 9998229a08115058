//! No alarms: a correct replica never raises a [`pbft::Alarm`] (nor counts one in
//! [`pbft::LogStats::alarms`] while rejecting an input). An alarm means "more than f faulty, or
//! damaged stores, or a bug" (finding 9: the asserts it replaced); every run stays within the
//! fault model (at most f replicas Byzantine, crashed or amnesiac, and an amnesiac replica
//! restarts recovering), so any alarm from an honest replica is a violation.
use pbft::ReplicaId;

/// An alarm an honest replica raised (`what`: the alarm, or how many were counted while it
/// rejected an input).
#[derive(Clone, Debug)]
pub struct RaisedAlarm {
    pub id: ReplicaId,
    pub at: u64,
    pub what: String,
}

pub struct NoAlarms;

impl NoAlarms {
    pub fn check(&self, alarms: &[RaisedAlarm]) -> Result<(), String> {
        match alarms.first() {
            Some(a) => Err(format!(
                "no alarms: replica {} raised an alarm at tick {}: {}",
                a.id, a.at, a.what
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alarm_from_an_honest_replica_is_a_violation() {
        assert!(NoAlarms.check(&[]).is_ok());
        let alarm = RaisedAlarm {
            id: 2,
            at: 17,
            what: pbft::Alarm::CheckpointMismatch { seq: 8 }.to_string(),
        };
        let err = NoAlarms
            .check(&[alarm])
            .expect_err("an alarm must fail the run");
        assert!(
            err.contains("replica 2") && err.contains("checkpoint at 8"),
            "{err}"
        );
    }
}
