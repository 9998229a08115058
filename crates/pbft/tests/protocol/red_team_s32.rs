//! Red team s32 of 27e1c09c: a backup's view-change timer gives the primary of a view the wait
//! that view *inherited* (`Replica::inherited_time_ms`, fixed when the replica entered the view
//! or restarted), never the view's own times. F1 and F3 failed on 27e1c09c; fixed by
//! `view_start_seq` (a state-transferred head the view inherited counts) and
//! `Config::clock_skew_allowance_ms` (the wait as a slower correct clock sees it).
//!
//! The f+1 rule (§4.5.2, `join_higher_view`) means a view changes as soon as f Byzantine
//! replicas and ONE correct replica ask for the next view: every correct backup must give the
//! correct primary its wait, not only most of them.
use crate::common;

use common::*;
use pbft::*;

fn dump(c: &Cluster, label: &str) {
    for id in 0..c.replicas.len() {
        let r = &c.replicas[id];
        eprintln!(
            "{label} replica {id}: view {} (changing {}), executed {:?}, head time - clock = {} ms",
            r.view(),
            r.in_view_change(),
            r.last_executed().0,
            c.head_time_ms(id as ReplicaId) as i64 - c.clocks_ms[id] as i64
        );
    }
}

/// Runs `c` 40 ticks (4 s); replica 3's node applies checkpoint 4 (state transfer from replica
/// 1) as soon as replica 3 entered view 1 below it. Returns the tick it entered view 1.
fn run_view_1(c: &mut Cluster) -> Option<u64> {
    let mut entered = None;
    for tick in 0..40 {
        c.tick_all(1);
        if entered.is_none() && c.replicas[3].view() == 1 && !c.replicas[3].in_view_change() {
            entered = Some(tick);
            transfer(c, 3, 1, 4);
        }
        let r = &c.replicas[3];
        eprintln!(
            "tick {tick}: replica 3 view {} changing {} executed {} | replica 1 view {} executed {}",
            r.view(),
            r.in_view_change(),
            r.last_executed().0,
            c.replicas[1].view(),
            c.replicas[1].last_executed().0
        );
    }
    entered
}

/// F1. A backup that entered the view behind (its head below the new-view's checkpoint, and
/// the pushed blocks below min-s, so not in the O set) inherits its old head's time, not the
/// pushed one; the state transfer that brings the pushed head comes after it entered the view,
/// and `inherited_time_ms` never sees it. Its timer is not pushed: it times out while view 1's
/// correct primary (replica 1) still waits out the pushed time, and with the Byzantine
/// replica's view-change that is f+1: replicas 1 and 2 join view 2. The skew slow-down the
/// change fixes, back with one correct replica left behind (the faulty primary chooses which:
/// the one it left out) and a timeout below τ/2 (the simulator's: 40 ticks, τ/2 = 1000 ms).
/// Expected (as with no replica left behind, the guard below): view 1's primary waits (about
/// 7 ticks), proposes request 5 and stays primary.
#[test]
fn f1_a_backup_behind_at_view_entry_gives_the_correct_primary_its_wait() {
    let mut c = pushed_checkpoint(true);
    let entered = run_view_1(&mut c);
    dump(&c, "F1");
    assert!(entered.is_some(), "replica 3 entered view 1");
    assert!(
        c.replicas[3].last_executed().0 >= 4,
        "replica 3 fetched checkpoint 4"
    );
    primary_kept_view_1(&c).unwrap();
}

/// Guard for F1: the same with replica 3 not left behind: every correct backup inherits the
/// pushed time and view 1's primary is not replaced.
#[test]
fn f1_guard_no_backup_behind_the_primary_waits_and_stays() {
    let mut c = pushed_checkpoint(false);
    run_view_1(&mut c);
    dump(&c, "F1 guard");
    for id in 1..4 {
        assert_eq!(c.replicas[id].view(), 1, "replica {id}");
        assert!(
            c.executed_ids(id as ReplicaId).contains(&request(5).id),
            "replica {id}"
        );
    }
}

/// Replica 0 (faulty, clock τ ahead) pushes block 1's time to +τ, then goes silent with
/// request 2 pending at every backup. Correct clocks are off by `offsets_ms` (replicas 1, 2, 3)
/// from real time; real time goes on at 100 ms a tick; the timeout is `timeout_ticks`. Returns
/// the cluster after 60 ticks.
fn pushed_with_honest_skew(timeout_ticks: u64, offsets_ms: [i64; 3]) -> Cluster {
    let mut c = Cluster::configured(4, |cfg| cfg.view_change_timeout_ticks = timeout_ticks);
    c.clocks_ms = vec![START_MS; 4];
    c.clocks_ms[0] += TOLERANCE_MS - 10;
    for (i, off) in offsets_ms.iter().enumerate() {
        c.clocks_ms[i + 1] = START_MS.checked_add_signed(*off).unwrap();
    }
    c.tick_all(1);
    c.input(0, Input::Request(request(1)));
    c.input(0, Input::Cut);
    c.run();
    for id in 0..4 {
        assert_eq!(c.executed[id].len(), 1, "replica {id}");
    }
    c.up[0] = false;
    for id in 1..4 {
        c.input(id, Input::Request(request(2)));
    }
    c.run();
    c.ms_per_tick = 100;
    c.tick_all(60);
    dump(&c, "skew");
    c
}

/// F3. The backups' push ends when THEIR clock reaches the inherited time - τ/2; the correct
/// primary's wait ends when ITS clock does. Correct clocks differ by ε (the crate docs allow
/// it; the simulator's skew profile: -200..+400 ms), so a backup whose clock is ahead of the
/// primary's by more than its timeout stops pushing, times out and asks for the next view
/// before the primary may propose; two such backups (f+1, no Byzantine help needed; with it,
/// one) replace a correct primary that did nothing wrong. Here the new primary (replica 1) is
/// 200 ms behind real time and replicas 2, 3 are 400 ms ahead: 600 ms apart, above the
/// timeout (2 ticks, doubled by the backoff: 400 ms). The simulator's timeout is 40 ms (40
/// ticks of 1 ms) against honest skews up to 600 ms apart: there the owed wait protects a
/// correct primary only if the clocks agree within 40 ms. Expected: view 1's primary waits,
/// proposes request 2, stays primary (as with clocks that agree, the guard below).
#[test]
fn f3_a_correct_primary_with_a_slower_clock_gets_its_wait() {
    let c = pushed_with_honest_skew(2, [-200, 400, 400]);
    for id in 1..4 {
        assert_eq!(
            c.replicas[id].view(),
            1,
            "replica {id}: view 1's correct primary (clock 200 ms behind) was replaced"
        );
        assert_eq!(c.executed[id].len(), 2, "replica {id}");
    }
}

/// Guard for F3: with clocks that agree (or differ by less than the timeout) the primary stays.
#[test]
fn f3_guard_clocks_within_the_timeout_the_primary_stays() {
    for offsets in [[0, 0, 0], [-100, 0, 100]] {
        let c = pushed_with_honest_skew(2, offsets);
        for id in 1..4 {
            assert_eq!(c.replicas[id].view(), 1, "{offsets:?} replica {id}");
            assert_eq!(c.executed[id].len(), 2, "{offsets:?} replica {id}");
        }
    }
}

/// Guard (held): a pushed time is owed once in real time, not once per view. n = 7 (f = 2):
/// replica 0 (clock τ ahead) pushes block 1 to the edge and goes silent; replica 1 (view 1's
/// primary) is silent too. View 1 inherits the pushed time (its timer is pushed until about
/// τ/2 = 10 ticks), view 2 inherits the same time, whose wait is over by then: the timer of
/// view 2 is not pushed again, and view 2's correct primary executes request 2 within
/// τ/2 + the timeouts of views 0, 1 (2 ticks, then doubled) + a few ticks.
#[test]
fn guard_a_pushed_time_is_owed_once_not_once_per_view() {
    let n = 7u32;
    let mut c = Cluster::configured(n, |cfg| cfg.view_change_timeout_ticks = 2);
    c.clocks_ms = vec![START_MS; n as usize];
    c.clocks_ms[0] += TOLERANCE_MS - 10;
    c.tick_all(1);
    c.input(0, Input::Request(request(1)));
    c.input(0, Input::Cut);
    c.run();
    assert_eq!(c.executed[2].len(), 1);
    c.up[0] = false;
    c.up[1] = false;
    for id in 2..n {
        c.input(id, Input::Request(request(2)));
    }
    c.run();
    c.ms_per_tick = 100;
    let mut done = None;
    for tick in 0..100u64 {
        c.tick_all(1);
        if done.is_none() && (2..n).all(|id| c.executed_ids(id).contains(&request(2).id)) {
            done = Some(tick);
        }
    }
    dump(&c, "once");
    let done = done.expect("request 2 executed");
    // τ/2 (10 ticks) + view 0's timeout (2) + view 1's wait-free timeout (4) + slack.
    assert!(done <= 25, "request 2 executed at tick {done}");
    for id in 2..n as usize {
        assert_eq!(c.replicas[id].view(), 2, "replica {id}");
    }
}
