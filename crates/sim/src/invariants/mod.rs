//! Invariants, checked after every step of every replica. One file each; each keeps a cursor
//! per replica so a check only looks at what changed (reset when a replica loses its ledger).
mod agreement;
mod block_time;
mod bounded_batches;
mod bounded_log;
mod checkpoint_agreement;
mod commits_while_slow;
mod exact_payload;
mod honest_votes;
mod justified_recovery;
mod no_alarms;
mod no_censorship;
mod total_order;
mod validity;

pub use honest_votes::SentVote;
pub use no_alarms::RaisedAlarm;

use crate::world::{Node, World};

/// How a check failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    Safety(String),
    Liveness(String),
}

pub struct Checkers {
    agreement: agreement::Agreement,
    total_order: total_order::TotalOrder,
    validity: validity::Validity,
    exact_payload: exact_payload::ExactPayload,
    bounded_batches: bounded_batches::BoundedBatches,
    checkpoints: checkpoint_agreement::CheckpointAgreement,
    bounded: bounded_log::BoundedLog,
    honest_votes: honest_votes::HonestVotes,
    recovery: justified_recovery::JustifiedRecovery,
    censorship: no_censorship::NoCensorship,
    alarms: no_alarms::NoAlarms,
    slow: commits_while_slow::CommitsWhileSlow,
    block_time: block_time::BlockTime,
}

impl Checkers {
    pub fn new(n: usize) -> Self {
        Checkers {
            agreement: agreement::Agreement::new(n),
            total_order: total_order::TotalOrder::new(n),
            validity: validity::Validity::new(n),
            exact_payload: exact_payload::ExactPayload::new(n),
            bounded_batches: bounded_batches::BoundedBatches::new(n),
            checkpoints: checkpoint_agreement::CheckpointAgreement::default(),
            bounded: bounded_log::BoundedLog,
            honest_votes: honest_votes::HonestVotes::default(),
            recovery: justified_recovery::JustifiedRecovery::default(),
            censorship: no_censorship::NoCensorship,
            alarms: no_alarms::NoAlarms,
            slow: commits_while_slow::CommitsWhileSlow,
            block_time: block_time::BlockTime::new(n),
        }
    }

    /// Runs every safety checker on the world and on the votes honest replicas sent and the
    /// alarms they raised since the last check; the first violation wins.
    pub fn check(
        &mut self,
        w: &World,
        votes: &[SentVote],
        alarms: &[RaisedAlarm],
    ) -> Result<(), Failure> {
        let mut safety = || -> Result<(), String> {
            self.alarms.check(alarms)?;
            self.honest_votes.check(votes)?;
            self.agreement.check(w)?;
            self.total_order.check(w)?;
            self.validity.check(w)?;
            self.exact_payload.check(w)?;
            self.bounded_batches.check(w)?;
            self.checkpoints.check(w, self.agreement.chain())?;
            self.bounded.check(w)?;
            self.block_time.check(w, votes)?;
            self.recovery.check(w)
        };
        safety().map_err(Failure::Safety)
    }

    /// The liveness bounds checked while the run goes on (the overall one is the run's end).
    pub fn check_liveness(&mut self, w: &mut World) -> Result<(), Failure> {
        self.slow.check(w).map_err(Failure::Liveness)?;
        self.censorship.check(w).map_err(Failure::Liveness)
    }
}

/// Where a checker got to in one replica's executed chain.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cursor {
    /// The replica's amnesia count when the cursor was set: a replica that lost its ledger is
    /// checked again from its first block.
    amnesia: u32,
    pub(crate) at: usize,
}

impl Cursor {
    /// Where to continue in `node`'s chain (0 if it lost its ledger since).
    pub(crate) fn start(&mut self, node: &Node) -> usize {
        if node.amnesia != self.amnesia || self.at > node.app.blocks.len() {
            *self = Cursor {
                amnesia: node.amnesia,
                at: 0,
            };
        }
        self.at
    }
}
