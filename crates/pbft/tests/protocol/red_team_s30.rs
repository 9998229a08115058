//! Red team s30 on c5150fff (`Durable::Withheld`; node.db migration v5 reading older
//! `PrePrepare` records as `Withheld`; `Replica::new` setting a restarted primary's next
//! sequence number from its stable checkpoint when its ledger is behind it).
use crate::common;

use common::*;
use pbft::*;

/// C (held): the primary of view 0 restarted with its ledger behind its own stable checkpoint
/// 4 (no slot above it) cannot propose until it fetched block 4 (`proposal_time` needs block
/// 4's time). If that fetch never completes (here: never served), the backups' timers on a
/// request the clients sent them too replace it, and the request commits in view 1.
#[test]
fn a_primary_whose_fetch_never_completes_is_replaced() {
    let mut c = Cluster::new(4);
    for i in 1..=4 {
        commit_block(&mut c, i);
    }
    for id in 0..4 {
        assert_eq!(c.replicas[id].stable_checkpoint().0, 4, "replica {id}");
        assert_eq!(c.replicas[id].last_executed().0, 4, "replica {id}");
    }
    let durable = c.durable[0].clone();
    let sent_before = c.sent[0].len();
    restart_behind(&mut c, 0, 3, durable);
    assert_eq!(c.replicas[0].last_executed().0, 3);
    assert_eq!(c.replicas[0].stable_checkpoint().0, 4);
    // The clients send their request to every validator.
    for id in 0..4 {
        c.input(id, Input::Request(request(9)));
    }
    c.run();
    for _ in 0..300 {
        c.tick_all(1);
        // The fetch of block 4 is never served.
        c.fetches[0].clear();
    }
    for id in 1..4 {
        assert!(
            c.executed_ids(id).contains(&request(9).id),
            "replica {id} never executed the request (view {})",
            c.replicas[id as usize].view()
        );
        assert!(c.replicas[id as usize].view() >= 1);
    }
    // Whatever it proposed in view 0, the stuck primary never proposed at or below 4.
    for m in &c.sent[0][sent_before..] {
        if let Message::PrePrepare(pp) = m {
            assert!(
                pp.proposal.seq > 4 || pp.view > 0,
                "proposed {}",
                pp.proposal.seq
            );
        }
    }
}

/// F2 (medium, liveness; fixed). Expected: one view change. Got, before: none, ever. After the restart
/// the request is in the restored slot's `in_log` (`Replica::new`), so the node's resubmission
/// of acknowledged transactions is refused (`add_pending` -> `known_request` ->
/// DuplicateRequest) and no backup has it pending: no timer is armed (`arm_timer` looks at
/// `pending` only), every prepare stays withheld (the clock only moves away from the block
/// time), and the cluster sits in view 0 until some new request arrives.
///
/// B: a whole cluster upgraded (every validator restarted on
/// migration v5) while a slot is pending that every backup had prepared before, more than τ
/// after that slot's block time: every backup's prepare is withheld again (its record now
/// reads `Withheld`), nothing prepares it, and only a view change commits the request. The
/// request does commit (one view change per such upgrade): every node resubmits the requests
/// of its restored slots that its chain does not hold, so every replica waits on slot 1 (the
/// client's request was acknowledged by validator 0 alone; red team s39 F1).
#[test]
fn an_upgrade_of_every_validator_with_a_pending_slot_costs_one_view_change() {
    let c = upgraded_with_pending_slot(&[0], 200);
    for id in 0..4u32 {
        assert!(
            c.executed_ids(id).contains(&request(1).id),
            "replica {id} never executed the request (view {})",
            c.replicas[id as usize].view()
        );
    }
    assert!(
        c.replicas[1].view() >= 1,
        "committed without a view change: the upgrade resent withheld-judged prepares?"
    );
}

/// Red team s39 O1: a replica recovering from lost state accepts its client's request 99,
/// which the faulty primary 0 never proposes (it drops 3's forwards of it). Once 3 has left
/// recovery, with the cluster idle, it must time out on the request: a timer could not be
/// armed while it was passive, so leaving recovery arms it.
#[test]
fn a_request_accepted_while_recovering_is_timed_after_recovery() {
    let mut c = Cluster::new(4);
    commit_block(&mut c, 1);
    c.filter = Box::new(|from, to, m| match m {
        Message::Forward(rs) if from == 3 && to == 0 => {
            let rs: Vec<Request> = rs.into_iter().filter(|r| r.id != request(99).id).collect();
            (!rs.is_empty()).then_some(Message::Forward(rs))
        }
        m => Some(m),
    });
    lose_state(&mut c, 3, 1);
    c.input(3, Input::Request(request(99)));
    c.run();
    assert!(c.replicas[3].is_recovering());
    recover(&mut c, 3, 10);
    assert!(!c.replicas[3].is_recovering());
    assert_eq!(c.replicas[3].pending_len(), 1);
    let sent_before = c.sent[3].len();
    c.tick_all(200);
    let asked = c.sent[3][sent_before..]
        .iter()
        .any(|m| matches!(m, Message::ViewChange(_)));
    assert!(asked, "replica 3 never timed out on the censored request");
}

/// Red team s33 F1, with F2's fix: the primary restarted with its ledger behind its own stable
/// checkpoint (a crash before the applies: blocks 4 and 5 committed, not applied) and slot 5 of
/// its own in the log; the node submits slot 5's request again, since its chain does not hold
/// it, so the primary waits on it. Its catch-up (the state transfer) takes longer than the
/// timeout: it must not time itself out on its own slot and leave the view alone while it
/// knows it is behind: the others' status claims vouch that slot 5 was executed, so its timer
/// waits (red team s39 F3's rule; defaults' ratio of timeout to retransmission, T = 200, 50).
/// Without the push of the timer it sends a view-change after one timeout.
#[test]
fn a_primary_behind_does_not_time_out_on_its_own_restored_slot() {
    let mut c = Cluster::configured(4, |cfg| {
        cfg.view_change_timeout_ticks = 200;
        cfg.retransmit_ticks = 50;
    });
    for i in 1..=5 {
        commit_block(&mut c, i);
    }
    let durable = c.durable[0].clone();
    let sent_before = c.sent[0].len();
    restart_behind(&mut c, 0, 3, durable);
    assert_eq!(c.replicas[0].stable_checkpoint().0, 4);
    // The node resubmits what its chain does not hold: slot 5's request.
    resume(&mut c, 0, &[]);
    assert_eq!(c.replicas[0].pending_len(), 1);
    c.run();
    let timeout = c.replicas[0].config().view_change_timeout_ticks;
    for _ in 0..3 * timeout {
        c.tick_all(1);
        // The state transfer is slow: not served for three timeouts.
        c.fetches[0].clear();
    }
    let view_changes = |c: &Cluster| {
        c.sent[0][sent_before..]
            .iter()
            .filter(|m| matches!(m, Message::ViewChange(_)))
            .count()
    };
    assert_eq!(
        view_changes(&c),
        0,
        "the primary behind timed out on its own slot"
    );
    common::pushed::transfer(&mut c, 0, 1, 5);
    for _ in 0..3 * timeout {
        c.tick_all(1);
    }
    assert!(c.executed_ids(0).contains(&request(5).id));
    assert_eq!(view_changes(&c), 0, "caught up, the request executed");
    assert!((0..4).all(|id| c.replicas[id].view() == 0));
}
