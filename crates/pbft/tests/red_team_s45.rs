//! Red team s45 on 0caa28ab (a view-change timer stands still, instead of being renewed, while
//! every request waited on sits in a slot at or below a vouched fetch target: red team s42
//! F1's fix). Its finding F1 (a backup behind its own decided slots timed out on a correct
//! primary under the pause: s39 F3 again) is fixed by renewing the timer while the replica's
//! own pre-prepares hash-chain from the vouched digest down to every waited-on slot; I1 (a
//! fetch retry's overflow with the largest timeout) by saturating additions. The controls
//! keep s42 F1 fixed.
mod common;

use std::cell::Cell;
use std::rc::Rc;

use common::*;
use pbft::*;

/// The censored request: every correct backup holds it from the start.
fn censored() -> Request {
    request(200)
}

const T: u64 = 200;

fn lone_backup(timeout: u64) -> Replica {
    let mut cfg = config(1, 4);
    cfg.view_change_timeout_ticks = timeout;
    cfg.retransmit_ticks = 50;
    Replica::new(cfg, Restored::genesis(GENESIS, 0, 0))
}

fn tick(r: &mut Replica) -> Vec<Action> {
    step(r, Input::Tick { now_ms: 0 })
}

/// Backup 1 alone: the censored request arrives at tick 30 (deadline 230), a pre-prepare of
/// primary 0 puts it at seq 1 at tick 80, and replicas 2 and 3 claim seq 4 (f+1: the slot is
/// vouched). Returns the replica, paused from tick 80.
fn paused_at_tick_80(timeout: u64) -> Replica {
    let mut r = lone_backup(timeout);
    for _ in 0..30 {
        tick(&mut r);
    }
    step(&mut r, Input::Request(censored()));
    for _ in 0..50 {
        tick(&mut r);
    }
    step(
        &mut r,
        msg(
            0,
            Message::PrePrepare(pre_prepare(1, 0, GENESIS, vec![censored()])),
        ),
    );
    let _ = r.step(checkpoint(2, 4, [4; 32]), &mut Vec::new());
    let _ = r.step(checkpoint(3, 4, [4; 32]), &mut Vec::new());
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

/// n = 4, T = 200, retransmit 50, K = 4; replica 0 (view 0's primary) is Byzantine, as in red
/// team s42's `rotating_plant`: it ignores every forward of the censored request, and in round
/// `k` it keeps backup `schedule(k)` (if any) behind with a pre-prepare of its own at that
/// backup's head + 1 holding the censored request, the round's four blocks committed by the
/// others; the backup kept behind fetches the stable checkpoint and is served at once.
/// Returns the cluster and, per replica, the tick at which it first left view 0 (if it did).
fn planted(
    schedule: impl Fn(usize, &Cluster) -> Option<ReplicaId>,
    rounds: usize,
) -> (Cluster, Vec<Option<u64>>) {
    let mut c = Cluster::configured(4, |cfg| {
        cfg.view_change_timeout_ticks = T;
        cfg.retransmit_ticks = 50;
    });
    let target: Rc<Cell<(ReplicaId, SeqNo)>> = Rc::new(Cell::new((0, 0)));
    let t = target.clone();
    let r = censored();
    c.filter = Box::new(move |from, to, m| match m {
        Message::Forward(requests) if to == 0 && requests.iter().any(|x| x.id == r.id) => {
            let rest: Vec<Request> = requests.into_iter().filter(|x| x.id != r.id).collect();
            (!rest.is_empty()).then_some(Message::Forward(rest))
        }
        Message::PrePrepare(pp) if from == 0 && to != 0 && to == t.get().0 => {
            let (_, planted) = t.get();
            if pp.proposal.seq == planted {
                Some(Message::PrePrepare(pre_prepare(
                    planted,
                    pp.view,
                    pp.proposal.prev,
                    vec![r.clone()],
                )))
            } else {
                None
            }
        }
        m => Some(m),
    });
    for b in 1..4 {
        c.input(b, Input::Request(censored()));
    }
    c.run();
    let mut left = vec![None; 4];
    let mut filler = 1u8;
    for round in 0..rounds {
        let planted_at = schedule(round, &c);
        if let Some(b) = planted_at {
            let head = c.replicas[b as usize].last_executed().0;
            target.set((b, head + 1));
        }
        for _ in 0..4 {
            commit_block(&mut c, filler);
            filler = filler.wrapping_add(1).max(1);
            c.note_left_view_0(&mut left);
        }
        if let Some(b) = planted_at {
            for _ in 0..200 {
                if !c.fetches[b as usize].is_empty() {
                    break;
                }
                c.tick_all(1);
                c.note_left_view_0(&mut left);
            }
            target.set((0, 0));
            let source = (1..4).find(|s| *s != b).unwrap_or(1);
            serve_fetches(&mut c, b, source);
            c.run();
        } else {
            c.tick_all(50);
        }
        c.note_left_view_0(&mut left);
    }
    (c, left)
}

fn summary(c: &Cluster, left: &[Option<u64>]) -> String {
    let heads: Vec<SeqNo> = (0..4).map(|id| c.replicas[id].last_executed().0).collect();
    format!(
        "views {:?}, first left view 0 at {left:?}, heads {heads:?}, now {}",
        c.views(),
        c.now
    )
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
        summary(&c, &left)
    );
    assert!(
        (1..4).all(|id| c.executed_ids(id).contains(&censored().id)),
        "{}",
        summary(&c, &left)
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
        summary(&c, &left)
    );
    assert!(
        (1..4).all(|id| c.executed_ids(id).contains(&censored().id)),
        "{}",
        summary(&c, &left)
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

/// n = 7 (f = 2), T = 200, retransmit 50, K = 4. Replicas 0 (view 0's primary) and 6 are
/// Byzantine: 0 ignores every forward of the censored request and, in round `k`, keeps the
/// TWO correct backups `pairs[k % 5]` behind at once (f of them: the quorum of 5 is 0, 6 and
/// the other three correct replicas) with its own pre-prepare of the censored request at
/// their head + 1; 6 follows the protocol but never holds the request. Correct replicas 1..=5
/// hold the request. Returns the cluster and, per replica, the tick it first left view 0.
fn planted_two_of_seven(rounds: usize) -> (Cluster, Vec<Option<u64>>) {
    let mut c = Cluster::configured(7, |cfg| {
        cfg.view_change_timeout_ticks = T;
        cfg.retransmit_ticks = 50;
    });
    let targets: Rc<Cell<[(ReplicaId, SeqNo); 2]>> = Rc::new(Cell::new([(0, 0); 2]));
    let t = targets.clone();
    let r = censored();
    c.filter = Box::new(move |from, to, m| match m {
        Message::Forward(requests) if to == 0 && requests.iter().any(|x| x.id == r.id) => {
            let rest: Vec<Request> = requests.into_iter().filter(|x| x.id != r.id).collect();
            (!rest.is_empty()).then_some(Message::Forward(rest))
        }
        Message::PrePrepare(pp) if from == 0 && to != 0 => {
            match t.get().iter().find(|(b, _)| *b == to) {
                None => Some(Message::PrePrepare(pp)),
                Some((_, planted)) if pp.proposal.seq == *planted => Some(Message::PrePrepare(
                    pre_prepare(*planted, pp.view, pp.proposal.prev, vec![r.clone()]),
                )),
                Some(_) => None,
            }
        }
        m => Some(m),
    });
    for b in 1..6 {
        c.input(b, Input::Request(censored()));
    }
    c.run();
    let pairs: [[ReplicaId; 2]; 5] = [[1, 2], [3, 4], [5, 1], [2, 3], [4, 5]];
    let mut left = vec![None; 7];
    let mut filler = 1u8;
    for round in 0..rounds {
        let pair = pairs[round % 5];
        let in_view_0 = pair.iter().all(|b| {
            c.replicas[*b as usize].view() == 0 && !c.replicas[*b as usize].in_view_change()
        });
        if in_view_0 {
            let heads = pair.map(|b| (b, c.replicas[b as usize].last_executed().0 + 1));
            targets.set(heads);
        }
        for _ in 0..4 {
            commit_block(&mut c, filler);
            filler = filler.wrapping_add(1).max(1);
            c.note_left_view_0(&mut left);
        }
        if in_view_0 {
            for _ in 0..200 {
                if pair.iter().all(|b| !c.fetches[*b as usize].is_empty()) {
                    break;
                }
                c.tick_all(1);
                c.note_left_view_0(&mut left);
            }
            targets.set([(0, 0); 2]);
            let source = (1..6).find(|s| !pair.contains(s)).unwrap_or(1);
            for b in pair {
                serve_fetches(&mut c, b, source);
            }
            c.run();
        } else {
            c.tick_all(50);
            // After view 0, the node serves every state transfer (from the highest head).
            for b in 1..6 {
                let source = (1..6)
                    .filter(|s| *s != b)
                    .max_by_key(|s| c.replicas[*s as usize].last_executed().0)
                    .unwrap_or(1);
                serve_fetches(&mut c, b, source);
            }
            c.run();
        }
        c.note_left_view_0(&mut left);
    }
    (c, left)
}

/// Control (Q1 at n = 7): two faulty replicas (the primary and a helper) keep f = 2 correct
/// backups behind at every instant, rotating over the five correct ones; each correct
/// backup's count grows 3/5 of the time and the view changes within about 2 T; the censored
/// request commits in the next view. Passes on ee3873ae.
#[test]
fn control_two_faulty_of_seven_pausing_two_backups_at_once_still_time_out() {
    let (c, left) = planted_two_of_seven(25);
    let heads: Vec<SeqNo> = (0..7).map(|id| c.replicas[id].last_executed().0).collect();
    let report = format!(
        "views {:?}, left view 0 at {left:?}, heads {heads:?}, now {}",
        c.views(),
        c.now
    );
    let timed_out = left[1..6]
        .iter()
        .filter(|t| t.is_some_and(|t| t <= 2 * T + 150))
        .count();
    assert!(timed_out >= 3, "{report}");
    assert!(
        (1..6).all(|id| c.executed_ids(id).contains(&censored().id)),
        "{report}"
    );
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
