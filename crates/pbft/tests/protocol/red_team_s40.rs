//! Red team s40 on 20e0eee4 (every restarted node resubmits its restored slots' requests its
//! chain does not hold; a view-change timer is pushed only while the request it follows sits
//! in a slot at or below a vouched fetch target; a state transfer clears the log's ids at or
//! below the new head).
use crate::common;

use common::*;
use pbft::*;

/// The primary of view 0 (T = 200, retransmit 50) commits blocks 1..=4 and then block 5 of
/// request 5 at every replica, and crashes before applying block 5 (ledger head 4, its stable
/// checkpoint; slot 5 restored from its log). Its node resubmits what its chain does not hold
/// (`resume`) when `resubmit` holds (20e0eee4's `resume_pending`: the restored slot's request),
/// else nothing. Its state transfer is never served. It then proposes requests 6, 7, 8 (its
/// pipeline of 3 fills: it cannot execute its own proposals without block 5) and a client's
/// request 9 reaches backup 1 alone. Returns the cluster after `ticks` ticks.
fn primary_behind_its_restored_slot(resubmit: bool, ticks: u64) -> Cluster {
    let mut c = Cluster::configured(4, |cfg| {
        cfg.view_change_timeout_ticks = 200;
        cfg.retransmit_ticks = 50;
    });
    for i in 1..=4 {
        commit_block(&mut c, i);
    }
    commit_block(&mut c, 5);
    for id in 0..4u32 {
        assert!(c.executed_ids(id).contains(&request(5).id), "replica {id}");
    }
    let durable = c.durable[0].clone();
    restart_behind(&mut c, 0, 4, durable);
    assert_eq!(c.replicas[0].stable_checkpoint().0, 4);
    if resubmit {
        resume(&mut c, 0, &[]);
        assert_eq!(c.replicas[0].pending_len(), 1, "request 5 resubmitted");
    }
    c.run();
    for i in 6..=8 {
        c.input(0, Input::Request(request(i)));
    }
    c.input(0, Input::Cut);
    c.run();
    c.tick_all(5);
    for id in 1..4u32 {
        assert!(c.executed_ids(id).contains(&request(8).id), "replica {id}");
    }
    c.input(1, Input::Request(request(9)));
    c.run();
    for _ in 0..ticks {
        c.tick_all(1);
        c.fetches[0].clear();
    }
    c
}

fn backups_executed(c: &Cluster, id: Digest) -> Result<(), String> {
    for r in 1..4u32 {
        if !c.executed_ids(r).contains(&id) {
            return Err(format!(
                "backup {r} never executed the request (views, in view change: {:?}; \
                 primary's head {}, pending {})",
                c.views(),
                c.replicas[0].last_executed().0,
                c.replicas[0].pending_len(),
            ));
        }
    }
    Ok(())
}

/// F1 (MEDIUM, liveness; s39 F2 is not closed once the primary behind has a proposal in its
/// pipeline). The push of `waits_on_a_vouched_slot` (now `lowest_waited_vouched_slot`) is decided on `timed_request`, the OLDEST
/// request the replica waits on, and then shields every later request too. A primary behind
/// its own committed slots (a crash between commit and apply: ledger head 4, slot 5 restored)
/// resubmits request 5 (oldest) and proposes 6, 7, 8 until its pipeline is full; the others
/// execute them; its status-claim fetch target (8) vouches for all its slots, so its timer is
/// pushed for the whole catch-up. A client's request 9 at backup 1 alone: backup 1 forwards it
/// (pending at the primary, which cannot propose it) and times out alone (view 1); the
/// primary, which would supply the f+1-th view-change, never times out; request 9 waits on
/// the primary's state transfer, forever if it is never served (s39 F2's premise).
/// Fails now; passes with the push disabled (checked by hand).
#[test]
fn f1_a_primary_behind_its_restored_slot_joins_a_backup_that_timed_out() {
    let c = primary_behind_its_restored_slot(true, 1_000);
    backups_executed(&c, request(9).id).unwrap();
}

/// F1 without the node's resubmission (request 5 not waited on): the primary's own proposals
/// 6 and 7, committed by the others and pending at the primary until it executes them, are
/// the oldest requests it waits on and push its timer just the same. Fails now; passes with
/// the push disabled (checked by hand). Before 20e0eee4 (8a863aa8) the primary pushed while
/// catching up anyway (s39 F2); before 8a863aa8 it timed out.
#[test]
fn f1_a_primary_behind_its_own_proposals_joins_a_backup_that_timed_out() {
    let c = primary_behind_its_restored_slot(false, 1_000);
    backups_executed(&c, request(9).id).unwrap();
}
