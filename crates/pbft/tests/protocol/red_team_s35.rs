//! Red team s35 of a1f7bbbb: the inherited wait (`Replica::inherited_time_ms`,
//! `view_start_seq`, `Config::clock_skew_allowance_ms`) after red team s32's fixes. F1 (a
//! restart counted the logged O set, whose `proposal.view` a faulty primary writes), F2 (a
//! restart counted the view's own head or stable checkpoint) and F3 (a backup restarted before
//! the state transfer of the pushed head gave no wait) are fixed: what a view inherited is
//! persisted when it is entered (`Durable::Inherited`) and restored exactly.
//!
//! Lever: a view changes on 2f+1 view-changes; f faulty replicas withhold theirs, so a faulty
//! primary keeps its view while f+1 of the 2f+1 correct backups push their timers. What a
//! correct backup counts as inherited decides how long a censoring primary keeps its view.
use crate::common;

use std::sync::Arc;

use common::*;
use pbft::*;

const HOUR_MS: u64 = 3_600_000;

/// A pre-prepare of `view` by its primary (replica `view % 4`) at `seq` whose proposal says it
/// was proposed in `proposal_view` (a faulty primary may write any view up to its own there:
/// `on_pre_prepare` refuses only a later one, replica.rs:1391).
fn forged(
    view: View,
    proposal_view: View,
    seq: SeqNo,
    prev: Digest,
    time_ms: u64,
    requests: Vec<Request>,
) -> PrePrepare {
    let proposal = Arc::new(Proposal {
        seq,
        view: proposal_view,
        proposer: (view % 4) as ReplicaId,
        prev,
        time_ms,
        requests,
    });
    PrePrepare {
        view,
        digest: digest(&proposal),
        proposal,
    }
}

/// Backup 2 of 4 in view 1 (primary: replica 1), clock at START_MS, head genesis (time 0).
fn backup_in_view_1(durable: Vec<Durable>) -> Replica {
    Replica::new(
        config(2, 4),
        Restored {
            now_ms: START_MS,
            durable,
            incarnation: 1,
            ..Restored::genesis(GENESIS, 0, 0)
        },
    )
}

/// Request 9 arrives and is never executed (the primary censors it); ticks of 100 ms; the tick
/// of the backup's first view-change, if any, within `ticks`.
fn censored_until_view_change(backup: &mut Replica, ticks: u64) -> Option<u64> {
    step(backup, Input::Request(request(9)));
    for tick in 1..=ticks {
        let now_ms = START_MS + tick * 100;
        let actions = step(backup, Input::Tick { now_ms });
        if !view_changes_broadcast(&actions).is_empty() {
            return Some(tick);
        }
    }
    None
}

/// The faulty primary of view 1 sends backup 2 its own fresh proposal for seq 1, but writes
/// view 0 into it and stamps it `time_ms`; the backup accepts it (withholding its prepare if
/// the time is far) and logs it. Returns the records it persisted (with its `View(1)`).
fn log_forged_pre_prepare(proposal_view: View, time_ms: u64) -> (Replica, Vec<Durable>) {
    let mut backup = backup_in_view_1(vec![Durable::View(1)]);
    step(&mut backup, Input::Tick { now_ms: START_MS });
    let pp = forged(1, proposal_view, 1, GENESIS, time_ms, vec![request(1)]);
    let actions = step(&mut backup, msg(1, Message::PrePrepare(pp)));
    let mut records = vec![Durable::View(1)];
    records.extend(persisted(&actions));
    assert!(
        records
            .iter()
            .any(|d| matches!(d, Durable::Withheld(_) | Durable::PrePrepare(_))),
        "the backup logs the pre-prepare: {records:?}"
    );
    (backup, records)
}

// ----- F1: a restart counts a faulty primary's current-view proposal as inherited ----------

/// F1 (HIGH, liveness: unbounded censorship after a restart). View 1's faulty primary
/// (replica 1) sends backup 2 a fresh proposal of its own with `proposal.view = 0` and a time
/// an hour ahead. The backup withholds its prepare (the time is far from its clock) but logs
/// `Durable::Withheld`. After a restart (crash, upgrade) `Replica::new` folds every logged
/// pre-prepare of the view whose `proposal.view < view` into `inherited_time_ms`, withheld or
/// not, chained or not: the restarted backup now "owes" the primary a wait of an hour, and
/// pushes its view-change timer for that long. Restart f+1 correct backups this way (a rolling
/// upgrade restarts all of them) and the faulty primary censors for the hour (any time it
/// likes: the time is never checked against anything but the slot before it).
/// Expected: the documented bound, about 3τ/4 (15 ticks) + T (20 ticks).
#[test]
fn f1_a_restart_does_not_inherit_a_forged_far_future_proposal() {
    let (_, records) = log_forged_pre_prepare(0, START_MS + HOUR_MS);
    assert!(
        records.iter().any(|d| matches!(d, Durable::Withheld(_))),
        "an hour ahead: withheld"
    );
    let mut restarted = backup_in_view_1(records);
    let changed_at = censored_until_view_change(&mut restarted, 600);
    assert!(
        changed_at.is_some_and(|t| t <= 45),
        "restarted backup 2 still waits for the censoring primary after 60 s (view change at {changed_at:?}); \
         documented: about 3τ/4 + T = 35 ticks"
    );
}

/// F1, within τ: the same forgery on a time the backup accepts and prepares (τ - 50 ms
/// ahead): a restart renews a wait from the primary's own view that the design says no faulty
/// primary can renew (red team s31), and `view_start_seq` becomes that slot, so a later state
/// transfer up to it counts too.
#[test]
fn f1_a_restart_does_not_inherit_a_forged_current_view_proposal() {
    let (_, records) = log_forged_pre_prepare(0, START_MS + TOLERANCE_MS - 50);
    assert!(
        records.iter().any(|d| matches!(d, Durable::PrePrepare(_))),
        "within τ: prepared"
    );
    let mut restarted = backup_in_view_1(records);
    let changed_at = censored_until_view_change(&mut restarted, 80);
    assert!(
        changed_at.is_some_and(|t| t <= 22),
        "the view's own proposal gives no wait: view change at {changed_at:?}, expected T = 20 ticks"
    );
}

/// Guard (held): without the forgery (`proposal.view = 1`, the view's own) the restarted
/// backup gives no wait for the primary's own far-future proposal: it times out after T.
#[test]
fn guard_a_restart_does_not_inherit_the_views_own_proposal() {
    let (_, records) = log_forged_pre_prepare(1, START_MS + HOUR_MS);
    let mut restarted = backup_in_view_1(records);
    let changed_at = censored_until_view_change(&mut restarted, 80);
    assert!(
        changed_at.is_some_and(|t| t <= 22),
        "view change at {changed_at:?}, expected T = 20 ticks"
    );
}

/// Guard (held): without a restart the forged proposal buys nothing (only `enter_view` sets
/// the inherited time): the backup times out after T.
#[test]
fn guard_no_restart_the_forgery_buys_nothing() {
    let (mut backup, _) = log_forged_pre_prepare(0, START_MS + HOUR_MS);
    let changed_at = censored_until_view_change(&mut backup, 80);
    assert!(
        changed_at.is_some_and(|t| t <= 22),
        "view change at {changed_at:?}, expected T = 20 ticks"
    );
}

/// Four replicas in view 1 (restarted there: `Durable::View(1)`), clocks at START_MS and 100 ms a
/// tick. Replica 1, view 1's primary, is Byzantine: it sends backups 2 and 3 (not 0) the forged
/// pre-prepare of F1 (its own fresh proposal, `proposal.view = 0`, an hour ahead), then is silent.
/// If `restart`, backups 2 and 3 restart from their logs (f+1 of the 3 correct replicas). Request
/// 9 then reaches every correct replica. Returns the cluster after `ticks` ticks.
fn censorship_after_restarts(restart: bool, ticks: u64) -> Cluster {
    let mut c = Cluster::new(4);
    for id in 0..4 {
        c.replicas[id as usize] = Replica::new(
            config(id, 4),
            Restored {
                now_ms: START_MS,
                durable: vec![Durable::View(1)],
                incarnation: 1,
                ..Restored::genesis(GENESIS, 0, 0)
            },
        );
        c.durable[id as usize].push(Durable::View(1));
    }
    c.clocks_ms = vec![START_MS; 4];
    c.tick_all(1);
    let pp = forged(1, 0, 1, GENESIS, START_MS + HOUR_MS, vec![request(1)]);
    for to in [2, 3] {
        c.input(to, msg(1, Message::PrePrepare(pp.clone())));
    }
    c.run();
    c.up[1] = false; // the faulty primary is silent from now on
    if restart {
        for id in [2u32, 3] {
            c.replicas[id as usize] = Replica::new(
                config(id, 4),
                Restored {
                    now_ms: c.clocks_ms[id as usize],
                    durable: c.durable[id as usize].clone(),
                    incarnation: 2,
                    ..Restored::genesis(GENESIS, 0, 0)
                },
            );
        }
    }
    c.ms_per_tick = 100;
    for id in [0, 2, 3] {
        c.input(id, Input::Request(request(9)));
    }
    c.run();
    c.tick_all(ticks);
    c
}

/// F1 in a cluster (n = 4, f = 1): backups 2 and 3 restarted after logging the forged
/// pre-prepare push their timers for the hour; replica 0's view-change alone is not f+1, so the
/// silent faulty primary keeps view 1 and request 9 is not executed after 5 minutes.
#[test]
fn f1_restarted_backups_keep_a_censoring_primary_for_an_hour() {
    let c = censorship_after_restarts(true, 3_000);
    for id in [0, 2, 3] {
        assert!(
            c.executed_ids(id).contains(&request(9).id),
            "replica {id} (view {}, changing {}) has not executed request 9 after 300 s of censorship",
            c.replicas[id as usize].view(),
            c.replicas[id as usize].in_view_change()
        );
    }
}

/// Guard (held): the same run without the restarts: view 2's correct primary executes request 9
/// within about 2T.
#[test]
fn guard_without_restarts_the_censor_is_replaced() {
    let c = censorship_after_restarts(false, 100);
    for id in [0, 2, 3] {
        assert!(
            c.executed_ids(id).contains(&request(9).id),
            "replica {id} (view {}) has not executed request 9",
            c.replicas[id as usize].view()
        );
    }
}

// ----- F2: a restart counts the view's own executed head / stable checkpoint as inherited ----

/// F2 (LOW, liveness: one renewed wait per restart, bounded by τ). Backup 2 restarts in view 1
/// with its ledger's head at block 1, which view 1's faulty primary proposed itself (honestly
/// labelled `proposal.view = 1`) τ - 50 ms ahead of the clocks. `Replica::new` sets
/// `inherited_time_ms` to the restored head's time whatever view produced it (replica.rs:261),
/// so the restart gives the censoring primary the wait its own pushed block would buy (red team
/// s32 INFO, not fixed by a1f7bbbb). Expected: no wait (T = 20 ticks), observed ~34. Fixed by
/// `Durable::Inherited`: the head is above the view's start, so the view's own.
#[test]
fn f2_a_restart_does_not_inherit_the_views_own_executed_head() {
    let block = forged(
        1,
        1,
        1,
        GENESIS,
        START_MS + TOLERANCE_MS - 50,
        vec![request(1)],
    );
    let mut restarted = Replica::new(
        config(2, 4),
        Restored {
            now_ms: START_MS,
            last_executed: (1, block.digest),
            head_time_ms: block.proposal.time_ms,
            // As entering view 1 from genesis recorded it: nothing inherited.
            durable: vec![
                Durable::View(1),
                Durable::Inherited {
                    view: 1,
                    time_ms: 0,
                    seq: 0,
                },
                Durable::PrePrepare(block),
            ],
            incarnation: 1,
            ..Restored::genesis(GENESIS, 0, 0)
        },
    );
    let changed_at = censored_until_view_change(&mut restarted, 80);
    assert!(
        changed_at.is_some_and(|t| t <= 22),
        "the view's own block gives no wait: view change at {changed_at:?}, expected T = 20 ticks"
    );
}

/// F2, the stable-checkpoint half: restarted in view 1 with checkpoint 4 stable (blocks 1..=4
/// all proposed in view 1 by its faulty primary, the last τ - 50 ms ahead) but the ledger at
/// genesis, `view_start_seq` becomes `low` = 4 (replica.rs:402) and the state transfer of block 4
/// folds the view's own block time into the inherited time (checkpoint.rs:318).
#[test]
fn f2_a_restart_does_not_inherit_the_views_own_stable_checkpoint() {
    let mut prev = GENESIS;
    let pps: Vec<PrePrepare> = (1..=4u64)
        .map(|s| {
            let time = START_MS + TOLERANCE_MS - 50 - (4 - s) * 10;
            let pp = forged(1, 1, s, prev, time, vec![request(s as u8)]);
            prev = pp.digest;
            pp
        })
        .collect();
    let stable = Checkpoint {
        seq: 4,
        digest: pps[3].digest,
    };
    let proof = [0u32, 1, 3]
        .iter()
        .map(|from| signed(*from, stable))
        .collect();
    let mut restarted = backup_in_view_1(vec![
        Durable::View(1),
        Durable::StableCheckpoint {
            checkpoint: stable,
            proof,
        },
    ]);
    step(
        &mut restarted,
        Input::StateTransferred {
            seq: 4,
            digest: pps[3].digest,
            time_ms: pps[3].proposal.time_ms,
            request_ids: (1..=4).map(|i| request(i).id).collect(),
        },
    );
    assert_eq!(restarted.last_executed().0, 4);
    let changed_at = censored_until_view_change(&mut restarted, 80);
    assert!(
        changed_at.is_some_and(|t| t <= 22),
        "the view's own blocks give no wait: view change at {changed_at:?}, expected T = 20 ticks"
    );
}

// ----- the wait a restart keeps, exactly ---------------------------------------------------

/// Backup 2 restarted in view 1 on a ledger whose head (seq 1) was pushed τ - 50 ms ahead of
/// its clock, from a log with no `Durable::Inherited` (written before it): the head's time is
/// what the view inherited.
fn restarted_with_pushed_head(cfg: Config) -> Option<u64> {
    let pushed = timed(1, GENESIS, START_MS + TOLERANCE_MS - 50, vec![request(1)]);
    let mut backup = Replica::new(
        cfg,
        Restored {
            now_ms: START_MS,
            last_executed: (1, pushed.digest),
            head_time_ms: pushed.proposal.time_ms,
            durable: vec![Durable::View(1)],
            incarnation: 1,
            ..Restored::genesis(GENESIS, 0, 0)
        },
    );
    censored_until_view_change(&mut backup, 80)
}

/// Guard: the wait is exactly as documented. The inherited time is START + 1950; the backup
/// pushes while START + 1951 > clock + τ/2 - τ/4, i.e. through tick 14 (clock START + 1400),
/// and the timer (T = 20) runs out at tick 34.
#[test]
fn guard_restart_head_wait_is_three_quarters_tau() {
    let changed_at = restarted_with_pushed_head(config(2, 4));
    assert_eq!(
        changed_at,
        Some(34),
        "3τ/4 - 50 ms of wait (14 ticks) + T (20 ticks)"
    );
}

/// The planted too-long wait (margin 0) pushes through tick 24 and changes views at tick 44:
/// the exact guard above tells it apart (red team s32's range, 30..=45, did not).
#[cfg(feature = "planted-bugs")]
#[test]
fn the_planted_owed_wait_too_long_is_ten_ticks_longer() {
    let cfg = Config {
        planted_bug: Some(PlantedBug::OwedWaitTooLong),
        ..config(2, 4)
    };
    assert_eq!(restarted_with_pushed_head(cfg), Some(44));
}

// ----- F3: s32 F1 again across a restart (a view's start is not persisted) ------------------

/// F3 (MEDIUM, liveness: red team s32 F1 is back with one crash). Red team s32 F1's scenario
/// (n = 4; faulty replica 0 pushed blocks 1..=4 to the edge and left replica 3 out; view 1 has
/// min-s = 4, an empty O set, and a correct primary, replica 1, that must wait about τ/2), but
/// replica 3 crashes right after entering view 1, before its node applied checkpoint 4, and
/// restarts. `enter_view` persisted `View(1)` but not the new-view's checkpoint (it was above
/// the head: a fetch target, not a `StableCheckpoint`) and no O set (empty), so after the
/// restart `view_start_seq = low = 0` (replica.rs:402) and the state transfer of block 4 that
/// follows does not fold its pushed time (checkpoint.rs:318): replica 3 gives no wait, times out,
/// and with faulty replica 0's view-change that is f+1: view 1's correct primary is replaced.
/// Expected (as without the crash: red team s32's F1 test, now passing): view 1 keeps its
/// primary and executes request 5.
#[test]
fn f3_a_backup_behind_restarted_before_its_transfer_gives_the_wait() {
    crash_after_entering_view_1(
        |durable| {
            assert!(
                !durable
                    .iter()
                    .any(|d| matches!(d, Durable::StableCheckpoint { checkpoint, .. } if checkpoint.seq == 4)),
                "the new-view's checkpoint above the head is not persisted"
            );
            durable
        },
        false,
    )
    .unwrap();
}

/// Guard (held): the same crash, but the node applied checkpoint 4 before it (the restored head
/// is block 4): the restart inherits the head's pushed time and the primary keeps view 1.
#[test]
fn guard_a_backup_restarted_after_its_transfer_gives_the_wait() {
    crash_after_entering_view_1(|durable| durable, true).unwrap();
}

/// Compaction keeps the inheritance of the last view only: an older view's would give the
/// current primary a wait it is not owed.
#[test]
fn compaction_keeps_the_last_views_inheritance_only() {
    let inherited = |view, time_ms| Durable::Inherited {
        view,
        time_ms,
        seq: 0,
    };
    let mut records = vec![
        Durable::View(1),
        inherited(1, HOUR_MS),
        Durable::ViewChange(2),
        Durable::View(2),
        inherited(2, 5),
    ];
    Durable::compact(&mut records);
    assert_eq!(records, vec![Durable::View(2), inherited(2, 5)]);
    let mut changing = vec![
        Durable::View(1),
        inherited(1, HOUR_MS),
        Durable::ViewChange(2),
    ];
    Durable::compact(&mut changing);
    assert_eq!(changing, vec![Durable::ViewChange(2)]);
}
