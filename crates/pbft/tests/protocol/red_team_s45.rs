//! Red team s45 on 0caa28ab (a view-change timer stands still, instead of being renewed, while
//! every request waited on sits in a slot at or below a vouched fetch target: red team s42
//! F1's fix). Its finding F1 (a backup behind its own decided slots timed out on a correct
//! primary under the pause: s39 F3 again) is fixed by renewing the timer while the replica's
//! own pre-prepares hash-chain from the vouched digest down to every waited-on slot; I1 (a
//! fetch retry's overflow with the largest timeout) by saturating additions. The controls
//! keep s42 F1 fixed.
use crate::common;

use common::*;
use pbft::*;

const T: u64 = 200;

/// Backup 1 alone: the censored request arrives at tick 30 (deadline 230), a pre-prepare of
/// primary 0 puts it at seq 1 at tick 80, and replicas 2 and 3 claim seq 4 (f+1: the slot is
/// vouched). Returns the replica, paused from tick 80.
fn paused_at_tick_80(timeout: u64) -> Replica {
    let mut r = lone_backup_waiting(timeout);
    step(
        &mut r,
        msg(
            0,
            Message::PrePrepare(pre_prepare(1, 0, GENESIS, vec![censored()])),
        ),
    );
    claim(&mut r, &[(2, 4, [4; 32]), (3, 4, [4; 32])]);
    r
}

/// Control (Q3, the pause's semantics): while every waited-on request sits in a vouched slot
/// the timer stands still for as long as it lasts (here 5,000 ticks, 25 T); once the transfer
/// shows the slot held something else (the request is not among the transferred ids), the
/// timer runs out after exactly the time it had left when the pause began (230 - 80 = 150
/// ticks): neither renewed (200) nor lost (0). Passes on ee3873ae.
#[test]
fn control_a_paused_timer_neither_renews_nor_loses_time() {
    let mut r = paused_at_tick_80(T);
    for _ in 0..5_000 {
        tick(&mut r);
        assert!(!r.in_view_change(), "paused: no timeout at {}", r.now());
    }
    step(&mut r, transferred_to(4));
    let resumed = r.now();
    let mut waited = 0;
    while !r.in_view_change() {
        tick(&mut r);
        waited += 1;
        assert!(waited <= 1_000, "never timed out after the transfer");
    }
    assert_eq!(
        waited, 150,
        "the time left at the pause (from tick {resumed})"
    );
}

/// Control (Q3): a timeout of T = u64::MAX / 2 (deadline now + T, then deadline + 1 per
/// paused tick: no overflow before u64::MAX) stands still for 1,000 ticks, and after the
/// transfer keeps its wait (no wrap to an early deadline). Passes on ee3873ae.
#[test]
fn control_a_huge_deadline_pauses_without_overflow() {
    let mut r = paused_at_tick_80(u64::MAX / 2);
    for _ in 0..1_000 {
        tick(&mut r);
    }
    step(&mut r, transferred_to(4));
    for _ in 0..1_000 {
        tick(&mut r);
    }
    assert!(!r.in_view_change());
}

/// INFO (not the fix under attack; configuration only): `Config` allows any
/// `view_change_timeout_ticks >= 1` and says the timeout "only saturates at u64::MAX ticks",
/// and the pause's `deadline.saturating_add(1)` is fine at u64::MAX; but `maybe_fetch` retries
/// at `requested_at + view_change_timeout_ticks` unsaturated: with T = u64::MAX a replica
/// that asked for a state transfer panics in debug builds (attempt to add with overflow) and,
/// in release, wraps to a retry at every tick. Fails on ee3873ae (panics). Fix: saturating_add.
#[test]
fn info_a_fetch_retry_with_the_largest_timeout_does_not_overflow() {
    let mut r = paused_at_tick_80(u64::MAX);
    let mut fetches = 0;
    for _ in 0..1_000 {
        fetches += tick(&mut r)
            .iter()
            .filter(|a| matches!(a, Action::FetchState { .. }))
            .count();
    }
    assert!(fetches <= 1, "{fetches} fetches in 1,000 ticks");
    step(&mut r, transferred_to(4));
    for _ in 0..1_000 {
        tick(&mut r);
    }
    assert!(!r.in_view_change());
}

/// n = 4, T = 200; replica 0 (view 0's primary) is Byzantine, as in red team s42: the rotating
/// plant ([`rotate_plants`]) of one slot, at backup `schedule(k)` (if any) in round `k`.
fn planted(
    schedule: impl Fn(usize, &Cluster) -> Option<ReplicaId>,
    rounds: usize,
) -> (Cluster, Vec<Option<u64>>) {
    let rotation = Rotation {
        n: 4,
        correct: 1..4,
        timeout_ticks: T,
        rounds,
        serve_idle_fetches: false,
    };
    rotate_plants(rotation, schedule, plant_one_slot())
}

/// Control (Q1): the primary keeps the SAME correct backup (1) behind in every round, so that
/// it is paused nearly all the time (re-planted as soon as its transfer lands). The other two
/// correct backups are never paused and time out T after the request came; the view changes
/// and the censored request commits. Passes on ee3873ae.
#[test]
fn control_one_backup_kept_behind_for_ever_shields_nobody_else() {
    let (c, left) = planted(|_, _| Some(1), 12);
    assert!(
        left[2].is_some_and(|t| t <= T + 60) && left[3].is_some_and(|t| t <= T + 60),
        "{}",
        rotation_report(&c, &left)
    );
    assert!(
        (1..4).all(|id| c.executed_ids(id).contains(&censored().id)),
        "{}",
        rotation_report(&c, &left)
    );
}

/// Control (Q1, the delay a faulty primary can still buy): it never pauses backup 1 (which
/// times out first, T after the request, and waits alone in view 1: one view-change is no
/// f+1) and rotates the plant between 2 and 3, each paused half the time; once backup 1 has
/// left, it goes on planting at the backup behind while a gap lasts (backup 1's claims still
/// vouch for the head it left at). Backups 2 and 3 time out at most about 2 T after the request
/// (each counted at least half the time before backup 1 left, all of it after: the quorum
/// then needs both). The censored request commits. Passes on ee3873ae.
#[test]
fn control_staggered_plants_delay_the_view_change_by_at_most_about_one_timeout() {
    let (c, left) = planted(
        |round, c| {
            let b = (round % 2) as ReplicaId + 2;
            // Keep planting while view 0 still has the quorum it needs for it.
            (!c.replicas[b as usize].in_view_change() && c.replicas[b as usize].view() == 0)
                .then_some(b)
        },
        16,
    );
    let last = left[1..].iter().copied().max().flatten();
    assert!(
        left[1].is_some() && last.is_some_and(|t| t <= 2 * T + 150),
        "{}",
        rotation_report(&c, &left)
    );
    assert!(
        (1..4).all(|id| c.executed_ids(id).contains(&censored().id)),
        "{}",
        rotation_report(&c, &left)
    );
}

/// Control: s39 F3 with one fresh request 60 ticks after the restart: backup 2's timer runs
/// while that request waits outside a vouched slot (until the others' status claims vouch for
/// its slot 6), but not long enough to time out. Passes on ee3873ae.
#[test]
fn control_one_fresh_request_at_a_backup_behind_costs_no_view_change() {
    let BackupBehind {
        cluster: c,
        left_early,
        ..
    } = backup_behind(&[60], Fresh::Submitted, false);
    assert!(!left_early, "views {:?}", c.views());
}

/// F1 (LOW-MEDIUM, liveness: a correct primary replaced; question 2). s39 F3 with a client's
/// fresh request at backup 2 every 60 ticks during its slow transfer. Each stretch while one
/// waits outside a vouched slot (until the idle others' status claims vouch for its slot 6,
/// one to two retransmit intervals) now counts against the time backup 2 had left at its
/// restart; renewed (before 0caa28ab), each vouched tick gave it a full T again. Backup 2
/// times out alone, Byzantine replica 3 adds the f+1-th view-change, and correct primary 0 is
/// replaced. FAILS on ee3873ae; passes with the renewal (checked by a local edit) and with
/// /work/helpers/rt-s45-f1-sketch.patch (renew only while this replica's own pre-prepares
/// hash-chain from the vouched target down to every waited-on slot: they are decided).
#[test]
fn f1_fresh_requests_at_a_backup_behind_make_it_leave_a_correct_primary() {
    let BackupBehind {
        cluster: c,
        left_early,
        ..
    } = backup_behind(&[60, 120, 180, 240], Fresh::Submitted, true);
    assert!(
        !left_early && c.views().iter().all(|(v, changing)| *v == 0 && !changing),
        "backup 2 (behind, its transfer slow) gave up on correct primary 0; with Byzantine \
         replica 3's view-change the view changed: views {:?}",
        c.views()
    );
}

/// Control (Q1 at n = 7): two faulty replicas (the primary and a helper) keep f = 2 correct
/// backups behind at every instant, rotating over the five correct ones; each correct
/// backup's count grows 3/5 of the time and the view changes within about 2 T; the censored
/// request commits in the next view. Passes on ee3873ae.
#[test]
fn control_two_faulty_of_seven_pausing_two_backups_at_once_still_time_out() {
    let (c, left) = rotate_plants_two_of_seven(T, 25, plant_one_slot());
    let report = rotation_report(&c, &left);
    assert_two_of_seven_time_out_and_commit(&c, &left, T, &report);
    eprintln!("{report}");
}

/// F1 driven by the Byzantine replica alone (besides the crash and the slow transfer, which
/// the node's transfer timeout of 2 T lets a faulty peer asked first cause): the fresh
/// requests are replica 3's forwards of clients' transactions to backup 2. FAILS on ee3873ae.
#[test]
fn f1_a_faulty_replicas_forwards_make_a_backup_behind_leave_a_correct_primary() {
    let BackupBehind {
        cluster: c,
        left_early,
        ..
    } = backup_behind(&[60, 120, 180, 240], Fresh::ForwardedBy3, true);
    assert!(
        !left_early && c.views().iter().all(|(v, changing)| *v == 0 && !changing),
        "views {:?}",
        c.views()
    );
}
