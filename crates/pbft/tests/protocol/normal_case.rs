//! §4.1 (client requests) and §4.2 (normal-case operation): exact actions of each step.
use crate::common;

use common::*;
use pbft::*;

/// §4.2: a backup accepts a pre-prepare, prepares, becomes prepared with 2f prepares, commits,
/// and executes with 2f+1 commits, handing over the commit certificate.
#[test]
fn backup_pre_prepare_prepare_commit_execute() {
    let mut r = replica(1);
    let pp = pre_prepare(1, 0, GENESIS, vec![request(1)]);
    let v = vote(0, 1, pp.digest);
    assert_eq!(
        step(&mut r, msg(0, Message::PrePrepare(pp.clone()))),
        vec![
            Action::Persist(Durable::PrePrepare(pp.clone())),
            Action::Broadcast(Message::Prepare(v)),
        ]
    );
    // Its own prepare, looped back, is one of the 2f.
    assert_eq!(step(&mut r, msg(1, Message::Prepare(v))), vec![]);
    let cert = PreparedCertificate {
        pre_prepare: pp.clone(),
        prepares: vec![signed(1, v), signed(2, v)],
    };
    assert_eq!(
        step(&mut r, msg(2, Message::Prepare(v))),
        vec![
            Action::Persist(Durable::Prepared(cert)),
            Action::Broadcast(Message::Commit(v)),
        ]
    );
    assert_eq!(step(&mut r, msg(1, Message::Commit(v))), vec![]);
    assert_eq!(step(&mut r, msg(3, Message::Commit(v))), vec![]);
    assert_eq!(
        step(&mut r, msg(0, Message::Commit(v))),
        vec![Action::Execute(Committed {
            proposal: pp.proposal.clone(),
            digest: pp.digest,
            commit_view: 0,
            signatures: vec![(0, sig(0)), (1, sig(1)), (3, sig(3))],
        })]
    );
    assert_eq!(r.last_executed(), (1, pp.digest));
    assert_eq!(r.pending_len(), 0);
}

/// §4.1: a backup forwards a client request to the primary and starts its timer; when it
/// expires without execution, it starts a view change (§4.4).
#[test]
fn backup_forwards_request_and_times_out() {
    let mut r = replica(2);
    assert_eq!(
        step(&mut r, Input::Request(request(9))),
        vec![Action::Send {
            to: 0,
            message: Message::Forward(vec![request(9)])
        }]
    );
    assert_eq!(
        step_err(&mut r, Input::Request(request(9))),
        ProtocolError::DuplicateRequest
    );
    for _ in 0..19 {
        assert_eq!(step(&mut r, Input::Tick { now_ms: 0 }), vec![]);
    }
    let actions = step(&mut r, Input::Tick { now_ms: 0 });
    assert_eq!(actions[0], Action::Persist(Durable::ViewChange(1)));
    assert!(matches!(&actions[1], Action::Broadcast(Message::ViewChange(vc)) if vc.new_view == 1));
    assert!(r.in_view_change());
}

/// Retransmission (§5): a stalled backup forwards a pending request to the primary again only
/// once it waited a batch window (the primary legitimately holds it until then).
#[test]
fn a_backup_forwards_again_only_what_waited_a_batch_window() {
    let mut cfg = config(2, 4);
    cfg.batch_window_ticks = 6;
    cfg.retransmit_ticks = 4;
    cfg.view_change_timeout_ticks = 100;
    let mut r = Replica::new(cfg, Restored::genesis(GENESIS, 0, 0));
    let forward = Action::Send {
        to: 0,
        message: Message::Forward(vec![request(9)]),
    };
    assert_eq!(
        step(&mut r, Input::Request(request(9))),
        vec![forward.clone()]
    );
    for _ in 0..4 {
        assert_eq!(step(&mut r, Input::Tick { now_ms: 0 }), vec![], "too early");
    }
    for _ in 0..3 {
        assert_eq!(step(&mut r, Input::Tick { now_ms: 0 }), vec![]);
    }
    assert_eq!(step(&mut r, Input::Tick { now_ms: 0 }), vec![forward]);
}

/// A withdrawn request (its client gave up: the state machine would reject it now) is no
/// longer waited on: a primary that left it out is not replaced for it; the timer restarts for
/// the next request still pending.
#[test]
fn a_withdrawn_request_does_not_time_out_the_primary() {
    let mut r = replica(2);
    step(&mut r, Input::Request(request(9)));
    for _ in 0..10 {
        step(&mut r, Input::Tick { now_ms: 0 });
    }
    step(&mut r, Input::Request(request(8)));
    step(&mut r, Input::Withdraw(vec![request(9).id]));
    assert_eq!(r.pending_len(), 1);
    for _ in 0..19 {
        assert_eq!(step(&mut r, Input::Tick { now_ms: 0 }), vec![]);
    }
    let actions = step(&mut r, Input::Tick { now_ms: 0 });
    assert_eq!(
        actions[0],
        Action::Persist(Durable::ViewChange(1)),
        "8 timed out"
    );
    step(&mut r, Input::Withdraw(vec![[0xee; 32]]));
}

/// A withdrawal is no progress (red team s76): the timer then follows the next request, due a
/// full timeout after that one came (here tick 5 + 20), not a full timeout after the
/// withdrawal (tick 15 + 20).
#[test]
fn a_withdrawal_does_not_restart_the_timer() {
    let mut r = replica(2);
    step(&mut r, Input::Request(request(9)));
    ticks(&mut r, 5);
    step(&mut r, Input::Request(request(8)));
    ticks(&mut r, 10);
    step(&mut r, Input::Withdraw(vec![request(9).id]));
    ticks(&mut r, 9);
    the_next_tick_starts_view_change_1(&mut r);
}

/// Red team s76: a faulty primary forwards its own transactions, which expire one after
/// another, and proposes nothing. Each is withdrawn in turn; were the timer restarted at each,
/// the backup would wait a full timeout after the last, for ever. The request of a correct
/// client that came at tick 5 still replaces the primary at tick 25.
#[test]
fn withdrawals_one_after_another_do_not_postpone_the_view_change() {
    let mut r = replica(2);
    let planted: Vec<Request> = (100..105).map(request).collect();
    for p in &planted {
        step(&mut r, Input::Request(p.clone()));
        ticks(&mut r, 1);
    }
    step(&mut r, Input::Request(request(9)));
    ticks(&mut r, 14);
    for p in &planted {
        step(&mut r, Input::Withdraw(vec![p.id]));
        ticks(&mut r, 1);
    }
    assert!(!r.in_view_change(), "tick 24");
    the_next_tick_starts_view_change_1(&mut r);
}

/// What the node judges again: requests waited on and in no slot, oldest first, with the
/// ticks each waited; one withdrawn and pending again holds its new place only.
#[test]
fn waited_unproposed_lists_requests_in_arrival_order() {
    let mut r = replica(2);
    step(&mut r, Input::Request(request(1)));
    ticks(&mut r, 3);
    step(&mut r, Input::Request(request(2)));
    step(&mut r, Input::Withdraw(vec![request(1).id]));
    ticks(&mut r, 2);
    step(&mut r, Input::Request(request(1)));
    ticks(&mut r, 1);
    let waited: Vec<(u8, u64)> = r
        .waited_unproposed()
        .map(|(request, waited)| (request.id[0], waited))
        .collect();
    assert_eq!(waited, vec![(2, 3), (1, 1)]);
    // Withdrawn and pending again within a tick, behind another: listed once (red team s78).
    step(&mut r, Input::Withdraw(vec![request(1).id]));
    step(&mut r, Input::Request(request(1)));
    let waited: Vec<u8> = r
        .waited_unproposed()
        .map(|(request, _)| request.id[0])
        .collect();
    assert_eq!(waited, vec![2, 1]);
}

fn ticks(r: &mut Replica, n: usize) {
    for _ in 0..n {
        assert_eq!(step(r, Input::Tick { now_ms: 0 }), vec![]);
    }
}

/// §4.2 with batching: the primary waits for a full batch or the batch window.
#[test]
fn primary_batches_by_size_window_and_cut() {
    let mut r = replica(0);
    assert_eq!(step(&mut r, Input::Request(request(1))), vec![]);
    assert_eq!(step(&mut r, Input::Tick { now_ms: 0 }), vec![]);
    let actions = step(&mut r, Input::Tick { now_ms: 0 });
    let pp1 = pre_prepare(1, 0, GENESIS, vec![request(1)]);
    assert_eq!(
        actions,
        vec![
            Action::Persist(Durable::PrePrepare(pp1.clone())),
            Action::Broadcast(Message::PrePrepare(pp1.clone())),
        ]
    );
    // A full batch (max_batch = 2) goes out at once, chained to the previous proposal.
    assert_eq!(step(&mut r, Input::Request(request(2))), vec![]);
    let pp2 = pre_prepare(2, 0, pp1.digest, vec![request(2), request(3)]);
    assert_eq!(
        step(&mut r, Input::Request(request(3))),
        vec![
            Action::Persist(Durable::PrePrepare(pp2.clone())),
            Action::Broadcast(Message::PrePrepare(pp2.clone())),
        ]
    );
    // A cut with proposals in flight waits (cut_in_flight = 1); the batch window still runs.
    assert_eq!(step(&mut r, Input::Request(request(4))), vec![]);
    assert_eq!(step(&mut r, Input::Cut), vec![]);
    let pp3 = pre_prepare(3, 0, pp2.digest, vec![request(4)]);
    assert_eq!(step(&mut r, Input::Tick { now_ms: 0 }), vec![]);
    assert_eq!(
        step(&mut r, Input::Tick { now_ms: 0 }),
        vec![
            Action::Persist(Durable::PrePrepare(pp3.clone())),
            Action::Broadcast(Message::PrePrepare(pp3)),
        ]
    );
    // max_in_flight = 3: the fourth batch waits for an execution, window or not.
    assert_eq!(step(&mut r, Input::Request(request(5))), vec![]);
    assert_eq!(step(&mut r, Input::Cut), vec![]);
    assert_eq!(step(&mut r, Input::Tick { now_ms: 0 }), vec![]);
    assert_eq!(step(&mut r, Input::Tick { now_ms: 0 }), vec![]);
    // The primary's own pre-prepare looped back is not an error.
    assert_eq!(step(&mut r, msg(0, Message::PrePrepare(pp1))), vec![]);
}

/// Batching under load (Castro and Liskov, TOCS 2002, §5.1.4): a cut proposes at once into an
/// idle pipeline; cuts that come while a block is in flight wait for it to execute, and the
/// requests that came meanwhile go out in one batch, not one block per cut.
#[test]
fn cuts_while_a_block_is_in_flight_gather_into_one_batch() {
    let mut c = Cluster::new(4);
    c.replicas = (0..4)
        .map(|i| {
            let cfg = Config {
                max_batch: 8,
                ..config(i, 4)
            };
            Replica::new(cfg, Restored::genesis(GENESIS, 0, 0))
        })
        .collect();
    let pre_prepares = |c: &Cluster| {
        c.sent[0]
            .iter()
            .filter(|m| matches!(m, Message::PrePrepare(_)))
            .count()
    };
    c.input(0, Input::Request(request(1)));
    c.input(0, Input::Cut);
    assert_eq!(
        pre_prepares(&c),
        1,
        "an idle pipeline: the cut proposes at once"
    );
    for i in 2..=4 {
        c.input(0, Input::Request(request(i)));
        c.input(0, Input::Cut);
    }
    assert_eq!(pre_prepares(&c), 1, "block 1 is in flight: the cuts wait");
    c.run();
    let batches: Vec<Vec<Digest>> = c.executed[1]
        .iter()
        .map(|block| block.proposal.requests.iter().map(|r| r.id).collect())
        .collect();
    let id = |i: u8| request(i).id;
    assert_eq!(batches, vec![vec![id(1)], vec![id(2), id(3), id(4)]]);
}

/// Chaining: a pre-prepare whose predecessor is missing waits for it, then both are accepted
/// in order.
#[test]
fn out_of_order_pre_prepares_wait_for_predecessor() {
    let mut r = replica(1);
    let pp1 = pre_prepare(1, 0, GENESIS, vec![request(1)]);
    let pp2 = pre_prepare(2, 0, pp1.digest, vec![request(2)]);
    assert_eq!(
        step(&mut r, msg(0, Message::PrePrepare(pp2.clone()))),
        vec![]
    );
    assert_eq!(
        step(&mut r, msg(0, Message::PrePrepare(pp1.clone()))),
        vec![
            Action::Persist(Durable::PrePrepare(pp1.clone())),
            Action::Broadcast(Message::Prepare(vote(0, 1, pp1.digest))),
            Action::Persist(Durable::PrePrepare(pp2.clone())),
            Action::Broadcast(Message::Prepare(vote(0, 2, pp2.digest))),
        ]
    );
}

/// A commit for s+1 is sent only once s is prepared too (ARCHITECTURE.md's chaining rule).
#[test]
fn commit_waits_for_predecessor_prepared() {
    let mut r = replica(1);
    let pp1 = pre_prepare(1, 0, GENESIS, vec![request(1)]);
    let pp2 = pre_prepare(2, 0, pp1.digest, vec![request(2)]);
    step(&mut r, msg(0, Message::PrePrepare(pp1.clone())));
    step(&mut r, msg(0, Message::PrePrepare(pp2.clone())));
    let v1 = vote(0, 1, pp1.digest);
    let v2 = vote(0, 2, pp2.digest);
    step(&mut r, msg(1, Message::Prepare(v2)));
    let actions = step(&mut r, msg(3, Message::Prepare(v2)));
    assert_eq!(
        actions.len(),
        1,
        "prepared, persisted, but no commit yet: {actions:?}"
    );
    assert!(matches!(actions[0], Action::Persist(Durable::Prepared(_))));
    step(&mut r, msg(1, Message::Prepare(v1)));
    let actions = step(&mut r, msg(3, Message::Prepare(v1)));
    assert_eq!(
        actions[1..],
        [
            Action::Broadcast(Message::Commit(v1)),
            Action::Broadcast(Message::Commit(v2)),
        ]
    );
}

/// The whole normal case over four replicas, pipelined: every replica executes the same
/// blocks in order.
#[test]
fn four_replicas_execute_the_same_chain() {
    let mut c = Cluster::new(4);
    for i in 1..=9 {
        c.input(u32::from(i % 4), Input::Request(request(i)));
    }
    c.run();
    c.tick_all(5);
    let chain: Vec<_> = c.executed[0].iter().map(|x| x.digest).collect();
    let ids: usize = c.executed[0]
        .iter()
        .map(|x| x.proposal.requests.len())
        .sum();
    assert_eq!(ids, 9);
    for id in 1..4 {
        let other: Vec<_> = c.executed[id].iter().map(|x| x.digest).collect();
        assert_eq!(other, chain);
    }
    for x in &c.executed[0] {
        assert_eq!(x.signatures.len(), 3);
    }
}

/// The next tick runs the timer out: the replica's first action is to persist view change 1.
fn the_next_tick_starts_view_change_1(r: &mut Replica) {
    let actions = step(r, Input::Tick { now_ms: 0 });
    assert_eq!(
        actions.first(),
        Some(&Action::Persist(Durable::ViewChange(1)))
    );
}
