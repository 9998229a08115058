//! §4.4 (view changes, new-view and its validation by backups) and §4.5.2 (liveness: timers
//! doubling, joining f+1 replicas in a higher view).
use crate::common;

use common::*;
use pbft::*;

/// Replica `r` (a backup of view 0) accepts `pp` and sees it prepared (not committed).
fn prepare(r: &mut Replica, pp: &PrePrepare) {
    let v = vote(pp.view, pp.proposal.seq, pp.digest);
    step(r, msg(0, Message::PrePrepare(pp.clone())));
    for from in [1, 2, 3] {
        let mut out = Vec::new();
        let _ = r.step(msg(from, Message::Prepare(v)), &mut out);
    }
}

fn prepares(pp: &PrePrepare, from: &[ReplicaId]) -> Vec<Signed<Vote>> {
    let v = vote(pp.view, pp.proposal.seq, pp.digest);
    from.iter().map(|f| signed(*f, v)).collect()
}

fn expire(r: &mut Replica, ticks: u64) -> Vec<Action> {
    let mut last = Vec::new();
    for _ in 0..ticks {
        last = step(r, Input::Tick { now_ms: 0 });
    }
    last
}

/// §4.4: on timeout a backup multicasts a view-change with its prepared certificates.
#[test]
fn timeout_sends_view_change_with_prepared_certificates() {
    let mut r = replica(2);
    let pp = pre_prepare(1, 0, GENESIS, vec![request(1)]);
    prepare(&mut r, &pp);
    let cert = PreparedCertificate {
        pre_prepare: pp.clone(),
        prepares: prepares(&pp, &[1, 2]),
    };
    assert_eq!(
        expire(&mut r, 20),
        vec![
            Action::Persist(Durable::ViewChange(1)),
            Action::Broadcast(Message::ViewChange(view_change(1, vec![cert]))),
        ]
    );
    assert!(r.in_view_change());
    assert_eq!(r.primary(), 1);
    // Normal-case messages of the old view are now stale.
    assert_eq!(
        step_err(&mut r, msg(3, Message::Prepare(vote(0, 1, pp.digest)))),
        ProtocolError::StaleView { got: 0, current: 1 }
    );
}

/// §4.4: the new primary, with 2f+1 view-changes, re-issues the highest-view prepared
/// certificate per sequence number (the O set), and stops at the first gap.
#[test]
fn new_primary_sends_new_view_with_o_set_truncated_at_gap() {
    let pp1 = pre_prepare(1, 0, GENESIS, vec![request(1)]);
    let pp2 = pre_prepare(2, 0, pp1.digest, vec![request(2)]);
    let pp3 = pre_prepare(3, 0, pp2.digest, vec![request(3)]);
    let cert = |pp: &PrePrepare| PreparedCertificate {
        pre_prepare: pp.clone(),
        prepares: prepares(pp, &[2, 3]),
    };
    // Nobody reports sequence number 2: 3 cannot have committed anywhere.
    let vcs = [
        signed(1, view_change(1, vec![])),
        signed(2, view_change(1, vec![cert(&pp1), cert(&pp3)])),
        signed(3, view_change(1, vec![cert(&pp1)])),
    ];
    let mut r = replica(1);
    expire(&mut r, 0);
    assert_eq!(step(&mut r, Input::Message(vcs[1].clone().map())), vec![]);
    // f+1 view-changes for view 1: replica 1 joins (§4.5.2) and sends its own.
    assert_eq!(
        step(&mut r, Input::Message(vcs[2].clone().map())),
        vec![
            Action::Persist(Durable::ViewChange(1)),
            Action::Broadcast(Message::ViewChange(view_change(1, vec![]))),
        ]
    );
    let o = PrePrepare {
        view: 1,
        digest: pp1.digest,
        proposal: pp1.proposal.clone(),
    };
    // Its own view-change, looped back, completes 2f+1.
    let actions = step(&mut r, Input::Message(vcs[0].clone().map()));
    let nv = NewView {
        view: 1,
        incarnation: 0,
        view_changes: vcs.to_vec(),
        pre_prepares: vec![o.clone()],
    };
    assert_eq!(
        actions,
        vec![
            Action::Persist(Durable::Inherited {
                view: 1,
                time_ms: o.proposal.time_ms,
                seq: 1,
            }),
            Action::Persist(Durable::View(1)),
            Action::Persist(Durable::NewView(nv.clone())),
            Action::Persist(Durable::PrePrepare(o.clone())),
            Action::Broadcast(Message::NewView(nv.clone())),
        ]
    );
    assert!(!r.in_view_change() && r.is_primary() && r.view() == 1);

    // §4.4: a backup checks the new-view and prepares the re-issued pre-prepare.
    let mut b = replica(3);
    assert_eq!(
        step(&mut b, msg(1, Message::NewView(nv.clone()))),
        vec![
            Action::Persist(Durable::Inherited {
                view: 1,
                time_ms: o.proposal.time_ms,
                seq: 1,
            }),
            Action::Persist(Durable::View(1)),
            Action::Persist(Durable::PrePrepare(o.clone())),
            Action::Broadcast(Message::Prepare(vote(1, 1, pp1.digest))),
        ]
    );
    assert_eq!(b.view(), 1);

    // Malformed new-views are rejected.
    let mut b = replica(2);
    let mut tampered = nv.clone();
    tampered.pre_prepares.clear();
    assert_eq!(
        step_err(&mut b, msg(1, Message::NewView(tampered))),
        ProtocolError::InvalidNewView("O set does not match the view-changes")
    );
    let mut short = nv.clone();
    short.view_changes.pop();
    assert_eq!(
        step_err(&mut b, msg(1, Message::NewView(short))),
        ProtocolError::InvalidNewView("fewer than 2f+1 view-changes")
    );
    let mut twice = nv.clone();
    twice.view_changes[2] = twice.view_changes[1].clone();
    assert_eq!(
        step_err(&mut b, msg(1, Message::NewView(twice))),
        ProtocolError::InvalidNewView("view-change senders")
    );
    assert_eq!(
        step_err(&mut b, msg(2, Message::NewView(nv.clone()))),
        ProtocolError::NotPrimary { from: 2, view: 1 }
    );
    let mut forged_cert = nv;
    let Some(vc) = forged_cert.view_changes.get_mut(1) else {
        unreachable!()
    };
    vc.message.prepared[0].prepares.pop();
    assert_eq!(
        step_err(&mut b, msg(1, Message::NewView(forged_cert))),
        ProtocolError::InvalidNewView("invalid view-change inside")
    );
}

/// §4.5.2: with 2f+1 view-changes the timer runs, doubled; when it expires without a
/// new-view, the replica moves to the next view.
#[test]
fn view_change_timeout_doubles() {
    let mut r = replica(3);
    step(&mut r, Input::Request(request(1)));
    let actions = expire(&mut r, 20);
    assert_eq!(actions[0], Action::Persist(Durable::ViewChange(1)));
    for from in [0, 2, 3] {
        step(
            &mut r,
            msg(from, Message::ViewChange(view_change(1, vec![]))),
        );
    }
    // First view change: T << 1 = 40 ticks.
    assert!(
        !expire(&mut r, 39)
            .iter()
            .any(|a| matches!(a, Action::Persist(_)))
    );
    assert_eq!(
        expire(&mut r, 1)[0],
        Action::Persist(Durable::ViewChange(2))
    );
}

/// §4.5.2: f+1 replicas in a higher view make a replica join the smallest such view.
#[test]
fn joins_view_shown_by_f_plus_1_replicas() {
    let mut r = replica(0);
    step(&mut r, msg(1, Message::ViewChange(view_change(2, vec![]))));
    assert!(!r.in_view_change());
    let actions = step(&mut r, msg(2, Message::ViewChange(view_change(3, vec![]))));
    assert_eq!(actions[0], Action::Persist(Durable::ViewChange(2)));
    assert_eq!(r.view(), 2);
}

/// After a view change in a running cluster every replica still executes the same chain,
/// and requests prepared in the old view survive.
#[test]
fn cluster_survives_primary_crash() {
    let mut c = Cluster::new(4);
    for i in 1..=4 {
        c.input(1, Input::Request(request(i)));
    }
    c.run();
    c.tick_all(3);
    c.up[0] = false;
    // Clients whose requests do not commit re-send them to every replica (§4.1).
    for i in 5..=8 {
        for id in 1..4 {
            c.input(id, Input::Request(request(i)));
        }
    }
    c.run();
    c.tick_all(200);
    for id in 1..4 {
        let ids: usize = c.executed[id]
            .iter()
            .map(|x| x.proposal.requests.len())
            .sum();
        assert_eq!(ids, 8, "replica {id}");
        assert_eq!(c.replicas[id].view(), 1);
    }
    let chain: Vec<_> = c.executed[1].iter().map(|x| x.digest).collect();
    for id in 2..4 {
        let other: Vec<_> = c.executed[id].iter().map(|x| x.digest).collect();
        assert_eq!(other, chain);
    }
}

/// Finding 7 (§4.5.2): the new-view a primary sent is persisted, so that after a restart it
/// still hands it to a replica that missed it (here replica 3, which sent its view-change for
/// view 1 and retransmits it), and that replica enters the view.
#[test]
fn finding_7_restarted_primary_resends_its_new_view() {
    let vcs: Vec<Signed<ViewChange>> = [1, 2, 3]
        .iter()
        .map(|f| signed(*f, view_change(1, vec![])))
        .collect();
    let mut p = replica(1);
    let mut actions = Vec::new();
    for vc in [&vcs[1], &vcs[2], &vcs[0]] {
        actions.extend(step(&mut p, Input::Message(vc.clone().map())));
    }
    let Some(nv) = actions.iter().find_map(|a| match a {
        Action::Broadcast(Message::NewView(nv)) => Some(nv.clone()),
        _ => None,
    }) else {
        panic!("no new-view: {actions:?}")
    };
    let durable: Vec<Durable> = actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Persist(d) => Some(d),
            _ => None,
        })
        .collect();
    // Replica 3 changes to view 1 but the new-view never reaches it.
    let mut b = replica(3);
    for vc in &vcs[..2] {
        step(&mut b, Input::Message(vc.clone().map()));
    }
    assert!(b.in_view_change() && b.view() == 1);
    // The primary crashes and restarts from what it persisted (compacted).
    let mut compacted = durable.clone();
    Durable::compact(&mut compacted);
    assert_eq!(
        compacted,
        durable[1..].to_vec(),
        "only the view-change record goes"
    );
    let mut p = Replica::new(
        config(1, 4),
        Restored {
            last_executed: (0, GENESIS),
            durable: compacted,
            ..Restored::genesis(GENESIS, 0, 0)
        },
    );
    assert!(p.is_primary() && !p.in_view_change() && p.view() == 1);
    assert_eq!(
        step(&mut p, Input::Message(vcs[2].clone().map())),
        vec![Action::Send {
            to: 3,
            message: Message::NewView(nv.clone())
        }]
    );
    step(&mut b, msg(1, Message::NewView(nv)));
    assert!(!b.in_view_change() && b.view() == 1);
}

/// A primary resends its new-view to the sender of a stale view-change at most once per half
/// `retransmit_ticks` (a correct laggard retransmits every `retransmit_ticks`, by its own
/// ticks): the new-view may carry a whole log window, the view-change a few hundred bytes, and
/// a faulty replica could replay its own as fast as its link goes (red team s17, helper-99's
/// finding c).
#[test]
fn a_replayed_stale_view_change_gets_the_new_view_once_a_half_interval() {
    let vcs: Vec<Signed<ViewChange>> = [1, 2, 3]
        .iter()
        .map(|f| signed(*f, view_change(1, vec![])))
        .collect();
    let mut p = replica(1);
    for vc in [&vcs[1], &vcs[2], &vcs[0]] {
        step(&mut p, Input::Message(vc.clone().map()));
    }
    assert!(p.is_primary() && !p.in_view_change() && p.view() == 1);
    let resent_to = |actions: &[Action], to: ReplicaId| {
        actions
            .iter()
            .filter(
                |a| matches!(a, Action::Send { to: t, message: Message::NewView(_) } if *t == to),
            )
            .count()
    };
    let replay = |p: &mut Replica| step_err(p, Input::Message(vcs[2].clone().map()));
    assert_eq!(
        resent_to(&step(&mut p, Input::Message(vcs[2].clone().map())), 3),
        1
    );
    for _ in 0..1000 {
        assert_eq!(replay(&mut p), ProtocolError::NewViewResentTooSoon);
    }
    // Another laggard is answered at once.
    assert_eq!(
        resent_to(&step(&mut p, Input::Message(vcs[1].clone().map())), 2),
        1
    );
    let half_interval = config(1, 4).retransmit_ticks.div_ceil(2);
    for _ in 1..half_interval {
        step(&mut p, Input::Tick { now_ms: 0 });
        assert_eq!(replay(&mut p), ProtocolError::NewViewResentTooSoon);
    }
    step(&mut p, Input::Tick { now_ms: 0 });
    assert_eq!(
        resent_to(&step(&mut p, Input::Message(vcs[2].clone().map())), 3),
        1,
        "half a retransmission interval later, it is answered again"
    );
}

trait MapSigned {
    fn map(self) -> Signed<Message>;
}
impl MapSigned for Signed<ViewChange> {
    fn map(self) -> Signed<Message> {
        Signed {
            from: self.from,
            message: Message::ViewChange(self.message),
            signature: self.signature,
        }
    }
}

/// Finding 8 (§4.5.2): the timeout doubles on every view change that does not lead to an
/// execution, without a cap, so that it eventually exceeds the network's real delay. Here a
/// partition holds every message for 40 T (as a transport retrying through it would), longer
/// than the old cap of 32 T: the replicas keep changing views until their timeout covers the
/// delay, then commit; once the partition heals, they commit promptly again.
#[test]
fn finding_8_partition_longer_than_32_timeouts_heals() {
    let timeout = config(0, 4).view_change_timeout_ticks;
    let mut c = Cluster::new(4);
    c.latency_ticks = 40 * timeout;
    for id in 0..4 {
        c.input(id, Input::Request(request(1)));
    }
    c.run();
    let mut ticks = 0;
    while (0..4).any(|id| c.executed_ids(id).is_empty()) {
        assert!(
            ticks < 2_000 * timeout,
            "no commit while the partition lasts"
        );
        c.tick_all(timeout);
        ticks += timeout;
    }
    assert!(c.replicas.iter().all(|r| r.view() > 0));
    // The partition heals: a new request commits within a few timeouts.
    c.latency_ticks = 0;
    c.tick_all(c.delayed.back().map_or(0, |(at, _, _)| at - c.now));
    for id in 0..4 {
        c.input(id, Input::Request(request(2)));
    }
    c.run();
    c.tick_all(4 * timeout);
    for id in 0..4 {
        assert_eq!(c.executed_ids(id), vec![[1; 32], [2; 32]], "replica {id}");
    }
}

/// Finding 8: with no cap, the doubled timeout saturates at `u64::MAX` ticks instead of
/// overflowing (which would wrap it to a timer that fires at once).
#[test]
fn timeout_doubling_saturates_instead_of_overflowing() {
    let mut cfg = config(3, 4);
    cfg.view_change_timeout_ticks = 1 << 62;
    let mut r = Replica::new(cfg, Restored::genesis(GENESIS, 0, 0));
    for view in 1..=4 {
        for from in [0, 1, 2] {
            let _ = r.step(
                msg(from, Message::ViewChange(view_change(view, vec![]))),
                &mut Vec::new(),
            );
        }
        assert_eq!(r.view(), view);
    }
    for _ in 0..1_000 {
        let actions = step(&mut r, Input::Tick { now_ms: 0 });
        assert!(!actions.iter().any(|a| matches!(a, Action::Persist(_))));
    }
    assert_eq!(r.view(), 4);
}

/// Finding 3 (§4.4, §4.5.2): the view-change timer follows the oldest request a backup waits
/// on and is not reset when other requests execute. The primary of view 0 keeps committing
/// every request but one (it never lets the censored one into a batch); the backups time out
/// on that one, replace the primary, and the next primary executes it.
#[test]
fn finding_3_censored_request_replaces_primary() {
    const CENSORED: Digest = [1; 32];
    let mut c = Cluster::new(4);
    // Replica 0 never hears of the censored request: to the backups this is exactly a primary
    // that drops it.
    c.filter = Box::new(|_, to, m| match m {
        Message::Forward(requests) if to == 0 => {
            let kept: Vec<Request> = requests.into_iter().filter(|r| r.id != CENSORED).collect();
            (!kept.is_empty()).then_some(Message::Forward(kept))
        }
        m => Some(m),
    });
    for id in 1..4 {
        c.input(id, Input::Request(request(1)));
    }
    c.run();
    // A request every 5 ticks, each committed within a few ticks: far more often than T = 20.
    for i in 10..60 {
        c.input(0, Input::Request(request(i)));
        c.run();
        c.tick_all(5);
        if i == 12 {
            assert!(
                c.executed_ids(1).contains(&[10; 32]),
                "others commit meanwhile"
            );
        }
    }
    for id in 0..4 {
        assert!(
            c.replicas[id].view() >= 1,
            "replica {id} replaced the primary"
        );
        assert!(
            c.executed_ids(id as ReplicaId).contains(&CENSORED),
            "replica {id} executed the censored request"
        );
        assert_eq!(c.executed_ids(id as ReplicaId).len(), 51, "replica {id}");
    }
}

/// What a view-change or new-view carries matters only while its view is ahead, or is the
/// one being changed to; the caller skips verifying what carries nothing the replica uses.
#[test]
fn only_a_view_change_or_new_view_the_replica_would_use_needs_its_contents_checked() {
    let mut r = replica(0);
    let new_view = |view| {
        Message::NewView(NewView {
            view,
            incarnation: 0,
            view_changes: vec![],
            pre_prepares: vec![],
        })
    };
    let vc = |view| Message::ViewChange(view_change(view, vec![]));
    // View 0, normal: view 0 is settled, view 1 is ahead.
    assert!(!r.uses_contents(1, &vc(0)));
    assert!(r.uses_contents(1, &vc(1)));
    assert!(r.uses_contents(1, &new_view(1)));
    assert!(!r.uses_contents(2, &new_view(1)), "not view 1's primary");
    // Shown view 2 by two replicas, it changes to view 2 and waits for its new-view.
    step(&mut r, msg(1, vc(2)));
    step(&mut r, msg(2, vc(3)));
    assert!(r.in_view_change());
    assert_eq!(r.view(), 2);
    assert!(!r.uses_contents(1, &vc(1)));
    assert!(r.uses_contents(1, &vc(2)), "the view being changed to");
    assert!(r.uses_contents(2, &new_view(2)));
    assert!(!r.uses_contents(1, &new_view(1)), "a view passed");
    assert!(!r.uses_contents(1, &new_view(2)), "not view 2's primary");
    // The replica refuses what it would not use, whatever it carries.
    for (from, message) in [(1, vc(1)), (1, new_view(1)), (1, new_view(2))] {
        let mut actions = Vec::new();
        assert!(r.step(msg(from, message), &mut actions).is_err());
        assert!(actions.is_empty());
    }
}
