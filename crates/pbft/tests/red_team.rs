//! Red-team tests against issue 8's promises. One that still breaks is `#[ignore]`d with the
//! one-line reason; run those with `cargo test -p pbft --test red_team -- --ignored`.
mod common;

use common::*;
use pbft::*;

fn commit_block(c: &mut Cluster, i: u8) {
    let primary = c.replicas[0].primary();
    c.input(primary, Input::Request(request(i)));
    c.input(primary, Input::Cut);
    c.run();
    c.tick_all(1);
}

/// n = 7 (f = 2): one Byzantine validator (0) plus one recovering validator (6) is within the
/// fault model. Validator 6 restarts with no records after three blocks; 0 rewrites its answer
/// to 6's recovery query with `lie`; the cluster then commits 57 more blocks (seven windows of
/// L = 8). Validator 6 must have left recovery and executed everything.
fn recovering_replica_rejoins_despite(lie: impl Fn(&mut RecoveryAnswer) + 'static) {
    let n = 7;
    let mut c = Cluster::new(n);
    for i in 1..=3 {
        commit_block(&mut c, i);
    }
    let head = c.replicas[6].last_executed();
    c.replicas[6] = Replica::new(
        config(6, n),
        Restored {
            last_executed: head,
            head_time_ms: head.0,
            now_ms: 0,
            durable: Vec::new(),
            recovering: true,
            nonce: 77,
        },
    );
    c.filter = Box::new(move |from, to, m| match m {
        Message::RecoveryAnswer(mut a) if from == 0 && to == 6 => {
            lie(&mut a);
            Some(Message::RecoveryAnswer(a))
        }
        m => Some(m),
    });
    c.tick_all(1);
    for i in 4..=60 {
        commit_block(&mut c, i);
    }
    assert_eq!(c.executed[0].len(), 60, "the cluster commits");
    assert_eq!(c.executed[6].len(), 60, "replica 6 executes too");
    assert!(
        !c.replicas[6].is_recovering(),
        "57 blocks later replica 6 is still passive; its bound: {:?}",
        c.durable[6]
            .iter()
            .rfind(|r| matches!(r, Durable::Recovery { .. }))
    );
}

/// Finding 2 (red team): the answer claims an absurd executed sequence number. Before answers
/// carried proof, the bound H (the maximum of 2f+1 answers, plus L) saturated and replica 6
/// stayed passive for good. Now the claim must come with the commit certificate of that
/// sequence number: the liar's real certificate is for its real head, so the answer is refused
/// and does not count.
#[test]
fn finding_2_lying_recovery_answer_cannot_strand_a_recovering_replica() {
    recovering_replica_rejoins_despite(|a| a.last_executed = u64::MAX / 2);
}

/// Finding 2 (red team), the twin: the answer claims an absurd view. Before, any answerer's
/// word for its current view or the querier's raised V. Now V comes only from messages the
/// querier itself signed (or from certificates): the liar can offer only its own message.
#[test]
fn finding_2_lying_recovery_view_cannot_strand_a_recovering_replica() {
    recovering_replica_rejoins_despite(|a| {
        a.querier_message = Some(Box::new(signed(
            0,
            ViewMessage::Commit(vote(u64::MAX / 2, 1, [1; 32])),
        )));
    });
}
