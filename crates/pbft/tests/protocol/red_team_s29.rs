//! Red team s29: attacks on 327cbaaa (a backup's log tells a prepare it sent from one it
//! withheld for its block time: `Durable::Withheld`, superseded by a `Durable::PrePrepare` when
//! the withheld prepare goes out). Its F1 (node.db rows written before read as sent prepares)
//! is fixed by node.db's migration v5, which reads them as withheld; these are its guards.
use crate::common;

use common::*;
use pbft::*;

/// An hour, in ms.
const HOUR_MS: u64 = 3_600_000;

fn prepares(actions: &[Action], seq: SeqNo) -> Vec<Digest> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast(Message::Prepare(v)) if v.seq == seq => Some(v.digest),
            _ => None,
        })
        .collect()
}

fn commits(actions: &[Action], seq: SeqNo) -> Vec<Digest> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast(Message::Commit(v)) if v.seq == seq => Some(v.digest),
            _ => None,
        })
        .collect()
}

/// Guard (held): a backup withholds its prepare for A at (0, 5) (block time an hour from its
/// clock), 2f others prepare A, so it commits A without its prepare. A checkpoint at 4 becomes
/// stable and its log is compacted (`Durable::compact`); it restarts. It must still hold A at
/// (0, 5): a Byzantine primary offering B there is refused, and nothing but A is prepared or
/// committed. If compaction dropped `Durable::Withheld` (a record "like PrePrepare" in `kept`),
/// the restarted backup would have an empty slot and prepare B after committing A: two
/// digests voted for one (view, seq).
#[test]
fn a_withheld_slot_committed_without_its_prepare_survives_compaction_and_restart() {
    let d4 = [4u8; 32];
    let a = timed(5, d4, 4 + HOUR_MS, vec![request(5)]);
    let b = timed(5, d4, 5, vec![request(6)]);
    let clock = 10;
    let mut r = Replica::new(
        config(1, 4),
        Restored {
            last_executed: (4, d4),
            head_time_ms: 4,
            ..Restored::genesis(GENESIS, 0, clock)
        },
    );
    let mut durable = Vec::new();
    let mut keep = |actions: Vec<Action>, out: &mut Vec<Action>| {
        for action in actions {
            if let Action::Persist(d) = &action {
                durable.push(d.clone());
            }
            out.push(action);
        }
    };
    let mut all = Vec::new();
    // A checkpoint at 4 (its head) becomes stable.
    for from in [0, 2, 3] {
        keep(step(&mut r, checkpoint(from, 4, d4)), &mut all);
    }
    keep(step(&mut r, checkpoint(1, 4, d4)), &mut all);
    assert_eq!(r.stable_checkpoint().0, 4, "{all:?}");
    keep(
        step(&mut r, msg(0, Message::PrePrepare(a.clone()))),
        &mut all,
    );
    assert!(prepares(&all, 5).is_empty(), "withheld: {all:?}");
    for from in [2, 3] {
        keep(
            step(&mut r, msg(from, Message::Prepare(vote(0, 5, a.digest)))),
            &mut all,
        );
    }
    assert_eq!(
        commits(&all, 5),
        vec![a.digest],
        "committed A without preparing it"
    );
    // A stable checkpoint record after the others: the compaction runs now.
    durable.push(Durable::StableCheckpoint {
        checkpoint: Checkpoint { seq: 4, digest: d4 },
        proof: [0, 2, 3]
            .into_iter()
            .map(|from| signed(from, Checkpoint { seq: 4, digest: d4 }))
            .collect(),
    });
    let mut compacted = durable.clone();
    Durable::compact(&mut compacted);
    assert!(
        compacted.contains(&Durable::Withheld(a.clone())),
        "compaction keeps the withheld accept above the stable checkpoint: {compacted:?}"
    );
    for log in [durable, compacted] {
        let mut r = Replica::new(
            config(1, 4),
            Restored {
                last_executed: (4, d4),
                head_time_ms: 4,
                durable: log.clone(),
                ..Restored::genesis(GENESIS, 0, clock)
            },
        );
        let tick = step(&mut r, Input::Tick { now_ms: clock });
        assert!(prepares(&tick, 5).is_empty(), "still withheld: {tick:?}");
        let resent = commits(&tick, 5);
        assert!(
            !resent.is_empty() && resent.iter().all(|d| *d == a.digest),
            "resends its commit for A: {tick:?}"
        );
        assert_eq!(
            step_err(&mut r, msg(0, Message::PrePrepare(b.clone()))),
            ProtocolError::Conflicting,
            "{log:?}"
        );
        // Its clock reaches A's time: it prepares A (never B).
        let late = step(
            &mut r,
            Input::Tick {
                now_ms: 4 + HOUR_MS,
            },
        );
        assert_eq!(prepares(&late, 5), vec![a.digest], "{late:?}");
    }
}

/// Guard (held): records in the order a store keeps them after compaction (a store drops
/// rows where they lie): a release's `PrePrepare` after its `Withheld` survives compaction in
/// that order, so the restarted backup resends the prepare however late.
#[test]
fn compaction_keeps_a_released_prepare_after_its_withheld_record() {
    let pp = timed(5, [4; 32], 5, vec![request(5)]);
    let stable = Durable::StableCheckpoint {
        checkpoint: Checkpoint {
            seq: 4,
            digest: [4; 32],
        },
        proof: Vec::new(),
    };
    let mut log = vec![
        Durable::View(0),
        Durable::Withheld(pp.clone()),
        Durable::PrePrepare(pp.clone()),
        stable.clone(),
    ];
    Durable::compact(&mut log);
    assert_eq!(
        log,
        vec![
            Durable::View(0),
            Durable::Withheld(pp.clone()),
            Durable::PrePrepare(pp.clone()),
            stable
        ]
    );
    let mut r = Replica::new(
        config(1, 4),
        Restored {
            last_executed: (4, [4; 32]),
            head_time_ms: 4,
            durable: log,
            ..Restored::genesis(GENESIS, 0, HOUR_MS)
        },
    );
    let tick = step(&mut r, Input::Tick { now_ms: HOUR_MS });
    assert_eq!(prepares(&tick, 5), vec![pp.digest], "{tick:?}");
}

/// A time wrong for everyone commits nowhere, also after every backup restarts from its log:
/// the three correct backups withhold their prepares for a Byzantine primary's block an hour
/// ahead of their clocks, restart, and still send none (their logs say `Withheld`; the rows an
/// older medchain wrote, which said `PrePrepare` for both, read as `Withheld` since node.db's
/// migration v5: red team s29 F1).
#[test]
fn a_time_wrong_for_everyone_commits_nowhere_after_every_backup_restarts() {
    let bad = timed(1, GENESIS, HOUR_MS, vec![request(1)]);
    let mut c = Cluster::new(4);
    c.up[0] = false; // the Byzantine primary: only its pre-prepare is seen.
    for id in 1..4 {
        c.input(id, msg(0, Message::PrePrepare(bad.clone())));
    }
    c.run();
    assert!(
        c.sent
            .iter()
            .flatten()
            .all(|m| !matches!(m, Message::Prepare(_))),
        "every correct backup withholds"
    );
    for id in 1..4u32 {
        let log = c.durable[id as usize].clone();
        assert!(log.contains(&Durable::Withheld(bad.clone())));
        c.replicas[id as usize] = Replica::new(
            config(id, 4),
            Restored {
                durable: log,
                ..Restored::genesis(GENESIS, 0, 0)
            },
        );
    }
    c.tick_all(1);
    assert!(
        c.sent
            .iter()
            .flatten()
            .all(|m| !matches!(m, Message::Prepare(_))),
        "restarted, none prepares"
    );
    assert!(c.executed.iter().flatten().all(|b| b.digest != bad.digest));
}
