//! Red team s39 on cc8be6f4 + 8a863aa8 (a resubmitted request of a restored slot is waited on,
//! red team s30 F2; a primary catching up pushes its view-change timer, red team s33 F1), kept
//! against the fix that followed: every node resubmits its restored slots' requests
//! (`Replica::restored_requests`), and a timer is pushed only while the request it follows sits
//! in a slot the others vouch they executed.
use crate::common;

use common::*;
use pbft::*;

/// Whether every replica in `replicas` executed request `id`.
fn executed_at(c: &Cluster, replicas: std::ops::Range<u32>, id: Digest) -> Result<(), String> {
    for r in replicas {
        if !c.executed_ids(r).contains(&id) {
            return Err(format!(
                "replica {r} never executed the request (views {:?}, in view change {:?})",
                (0..4).map(|i| c.replicas[i].view()).collect::<Vec<_>>(),
                (0..4)
                    .map(|i| c.replicas[i].in_view_change())
                    .collect::<Vec<_>>()
            ));
        }
    }
    Ok(())
}

/// F1 (MEDIUM, liveness; fixed). The node resubmitted only the transactions it acknowledged
/// itself: a client that submitted request 1 to validator 0 alone (the primary) left one
/// replica waiting on it, which timed out and left view 0 alone while the others sat in view 0
/// with the withheld slot and no timer. Now every node resubmits its restored slots' requests.
#[test]
fn f1_a_request_acknowledged_by_the_primary_alone_commits() {
    let c = upgraded_with_pending_slot(&[0], 3_000);
    executed_at(&c, 0..4, request(1).id).unwrap();
}

/// F1, the acknowledging validator a backup (1, which is also view 1's primary): it used to
/// leave view 0 alone and wait in view 1 for a new-view that never came.
#[test]
fn f1_a_request_acknowledged_by_a_backup_alone_commits() {
    let c = upgraded_with_pending_slot(&[1], 3_000);
    executed_at(&c, 0..4, request(1).id).unwrap();
}

/// Guard: with two validators that acknowledged it, the request commits as well.
#[test]
fn guard_two_acknowledging_validators() {
    let c = upgraded_with_pending_slot(&[0, 1], 3_000);
    executed_at(&c, 0..4, request(1).id).unwrap();
}

/// The primary of view 0 restarted with its ledger behind its own stable checkpoint 4 (a crash
/// before the apply of block 4: ledger head 3), its fetch never served; a client's request 9
/// reaches backups `at` only. Returns the cluster after `ticks` ticks.
fn primary_behind_request_at(at: &[ReplicaId], ticks: u64) -> Cluster {
    let mut c = Cluster::new(4);
    for i in 1..=4 {
        commit_block(&mut c, i);
    }
    let durable = c.durable[0].clone();
    restart_behind(&mut c, 0, 3, durable);
    assert_eq!(c.replicas[0].stable_checkpoint().0, 4);
    for id in at {
        c.input(*id, Input::Request(request(9)));
    }
    c.run();
    for _ in 0..ticks {
        c.tick_all(1);
        c.fetches[0].clear();
    }
    c
}

/// F2 (MEDIUM, liveness regression of 8a863aa8; fixed: a primary catching up times out as
/// before unless its timed request sits in a vouched slot): red team s30's "a primary whose fetch never
/// completes is replaced" holds only when the request reached f+1 replicas besides the
/// primary. With the client's request at ONE backup (1), that backup forwards it to the
/// primary (pending there: its timer armed) and times out alone. Before the change the primary
/// timed out too (it cannot propose: block 4's time is unknown), which is the f+1 the join
/// rule needs (n = 4): the view changed and the request committed in view 1. Now the primary
/// pushes its timer for as long as its catch-up lasts: backup 1 sits alone in view 1, and the
/// request waits on the primary's state transfer — forever if it is never served.
#[test]
fn f2_a_primary_catching_up_joins_a_backup_that_timed_out() {
    let c = primary_behind_request_at(&[1], 300);
    executed_at(&c, 1..4, request(9).id).unwrap();
}

/// Guard (held): with the request at every backup, they replace the primary (s30 C).
#[test]
fn guard_request_at_every_backup_replaces_a_primary_catching_up() {
    let c = primary_behind_request_at(&[1, 2, 3], 300);
    executed_at(&c, 1..4, request(9).id).unwrap();
}

/// Guard (held): after s30's upgrade with every validator resubmitting, request 1 is executed
/// exactly once at each replica (the new view's primary has it pending from its own
/// resubmission and from the others' forwards, and proposes it once).
#[test]
fn guard_a_resubmitted_restored_request_executes_once() {
    let c = upgraded_with_pending_slot(&[0, 1, 2, 3], 3_000);
    for r in 0..4u32 {
        let times = c
            .executed_ids(r)
            .iter()
            .filter(|id| **id == request(1).id)
            .count();
        assert_eq!(times, 1, "replica {r} executed request 1 {times} times");
    }
}

/// Guard (held, s33 F2): a peer's forward of a restored slot's request is refused and arms no
/// timer: a faulty replica cannot make a restarted backup wait on a request of its log.
#[test]
fn guard_a_forward_of_a_restored_request_arms_no_timer() {
    let c = slot_pre_prepared_prepares_lost();
    let mut r = Replica::new(
        config(2, 4),
        Restored {
            durable: c.durable[2].clone(),
            incarnation: 1,
            ..Restored::genesis(GENESIS, 0, 0)
        },
    );
    assert!(r.knows_request(&request(1).id));
    let e = step_err(&mut r, msg(3, Message::Forward(vec![request(1)])));
    assert_eq!(e, ProtocolError::DuplicateRequest);
    assert_eq!(r.pending_len(), 0);
    let timeout = r.config().view_change_timeout_ticks;
    for _ in 0..3 * timeout {
        let actions = step(&mut r, Input::Tick { now_ms: 0 });
        assert!(view_changes_broadcast(&actions).is_empty());
    }
    // The node's own resubmission is waited on (the change under test).
    step(&mut r, Input::Request(request(1)));
    assert_eq!(r.pending_len(), 1);
}

/// F3 (LOW: widens 8a863aa8's accepted "a backup behind still times out"; fixed: slot 5 is at
/// or below the fetch target the others vouch for, so its timer is pushed). Defaults' ratio
/// (T = 200, retransmit 50). A client's request 5 acknowledged by backup 2 commits at every
/// replica at seq 5; backup 2 crashes before applying block 5 (ledger head 4 = its stable
/// checkpoint, slot 5 restored) and its node resubmits request 5 (its chain does not hold
/// it). The cluster is idle. Backup 2 learns it is behind (status claims) and asks for block 5,
/// but the transfer takes longer than T. Before cc8be6f4 the resubmission was refused (in the
/// log) and nothing timed out; now backup 2 waits on a request the cluster already executed and
/// leaves view 0 alone (and stays out of it after the transfer: its view-change is no
/// quorum). With a silent faulty replica, the next request then costs a view change.
#[test]
fn f3_a_backup_behind_by_its_own_restored_slot_stays_in_the_view() {
    let BackupBehind {
        cluster: c, left, ..
    } = backup_behind(&[], Fresh::Submitted, false);
    assert_eq!(c.replicas[2].last_executed().0, 5);
    assert!(
        !left,
        "backup 2 timed out on a request the cluster executed (view {}, in view change {})",
        c.replicas[2].view(),
        c.replicas[2].in_view_change()
    );
}

/// Guard (held): an unrelated request arriving at backup 2 meanwhile commits, and so does
/// request 1. Before cc8be6f4 nobody held request 1 as pending, the O set ended before the
/// unprepared slot 1, and request 1 was lost until the node's next restart.
#[test]
fn guard_f1_a_later_request_rescues_the_restored_request() {
    let mut c = upgraded_with_pending_slot(&[0], 100);
    c.input(2, Input::Request(request(2)));
    c.run();
    c.tick_all(1_000);
    executed_at(&c, 0..4, request(2).id).unwrap();
    executed_at(&c, 0..4, request(1).id).unwrap();
}
