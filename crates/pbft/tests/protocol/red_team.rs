//! Red-team tests against issue 8's promises. One that still breaks is `#[ignore]`d with the
//! one-line reason; run those with `cargo test -p pbft --test protocol -- red_team:: --ignored`.
use crate::common;

use common::*;
use pbft::*;

/// n = 7 (f = 2): one Byzantine validator (0) plus one recovering validator (6) is within the
/// fault model. Validator 6 restarts with no records after three blocks; 0 rewrites its answer
/// to 6's recovery query with `lie`; the cluster then commits 57 more blocks (seven windows of
/// L = 8). Validator 6 must have left recovery and executed everything.
fn recovering_replica_rejoins_despite(lie: impl Fn(&mut RecoveryAnswer) + 'static) {
    let n = 7;
    let mut c = Cluster::new(n);
    for i in 1..=3 {
        commit_block(&mut c, i);
    }
    let head = c.replicas[6].last_executed();
    c.replicas[6] = Replica::new(
        config(6, n),
        Restored {
            last_executed: head,
            executed_checkpoint: None,
            head_time_ms: head.0,
            now_ms: 0,
            durable: Vec::new(),
            recovering: true,
            nonce: 77,
            incarnation: 1,
        },
    );
    c.filter = Box::new(move |from, to, m| match m {
        Message::RecoveryAnswer(mut a) if from == 0 && to == 6 => {
            lie(&mut a);
            Some(Message::RecoveryAnswer(a))
        }
        m => Some(m),
    });
    c.tick_all(1);
    for i in 4..=60 {
        commit_block(&mut c, i);
    }
    assert_eq!(c.executed[0].len(), 60, "the cluster commits");
    assert_eq!(c.executed[6].len(), 60, "replica 6 executes too");
    assert!(
        !c.replicas[6].is_recovering(),
        "57 blocks later replica 6 is still passive; its bound: {:?}",
        c.durable[6]
            .iter()
            .rfind(|r| matches!(r, Durable::Recovery { .. }))
    );
}

/// Finding 2 (red team): the answer claims an absurd executed sequence number. Before answers
/// carried proof, the bound H (the maximum of 2f+1 answers, plus L) saturated and replica 6
/// stayed passive for good. Now the claim must come with the commit certificate of that
/// sequence number: the liar's real certificate is for its real head, so the answer is refused
/// and does not count.
#[test]
fn finding_2_lying_recovery_answer_cannot_strand_a_recovering_replica() {
    recovering_replica_rejoins_despite(|a| a.last_executed = u64::MAX / 2);
}

/// Finding 2 (red team), the twin: the answer claims an absurd view. Before, any answerer's
/// word for its current view or the querier's raised V. Now V comes only from messages the
/// querier itself signed (or from certificates): the liar can offer only its own message.
#[test]
fn finding_2_lying_recovery_view_cannot_strand_a_recovering_replica() {
    recovering_replica_rejoins_despite(|a| {
        a.querier_message = Some(Box::new(signed(
            0,
            ViewMessage::Commit(vote(u64::MAX / 2, 1, [1; 32])),
        )));
    });
}

// ----- Red team, round 8: recovery from lost state and two of the nine fixes ------------------

use std::cell::Cell;
use std::rc::Rc;

/// The last message of the kind `pick` selects that replica `id` sent.
fn last_sent<T>(c: &Cluster, id: usize, pick: impl Fn(&Message) -> Option<T>) -> T {
    c.sent[id]
        .iter()
        .rev()
        .find_map(pick)
        .expect("the replica sent such a message")
}

/// Finding 2 (red team, safety): no fork between correct replicas with one Byzantine validator
/// (1) and one validator (3) that lost its stores and recovered as documented.
///
/// 3's lost life timed out alone into view 1; its view-change reached only 1 before it crashed
/// (the rest were in its send queue). 3 restarts from nothing and recovers: the correct
/// answerers never saw that view-change, 1 leaves it out of its answer (it may understate), so
/// the bound's view is 0. 3 leaves recovery in view 0 and votes there again: it prepares and
/// commits block d at sequence s. 2 executes d (with 1's commit). 1, primary of view 1, then
/// builds its new-view from the view-changes of 0, of itself (neither prepared d) and 3's
/// *old* one, in which 3 promised (§4.4) to take no part in view 0 after it and which carries
/// no certificate for s. Before incarnations, 0 and 3 accepted it, 1 assigned s to another
/// block and they executed it: 2 and 3 held different blocks at s.
///
/// Now 3's new life announced its incarnation in its recovery query; 0 and 2 answered it and
/// refuse a view-change of an older incarnation of 3, alone or inside a new-view, and 3 its own.
/// (1, Byzantine, ignores the incarnation, so that it still builds that new-view.) View 1 goes
/// nowhere, the next primary's new-view carries d's certificate, and every correct replica
/// executes d at s.
#[test]
fn finding_2_lost_view_change_of_a_recovered_replica_cannot_fork_the_chain() {
    let n = 4;
    let mut c = Cluster::new(n);
    commit_block(&mut c, 1);
    // 0: normal; 1: 3 times out alone; 2: 3 recovers; 3: block d at s; 4: view change.
    let phase = Rc::new(Cell::new(1u8));
    let s_cell = Rc::new(Cell::new(0u64));
    let (p, s_at) = (phase.clone(), s_cell.clone());
    c.filter = Box::new(move |from, to, m| {
        let (phase, s) = (p.get(), s_at.get());
        match m {
            // Phase 1: 3's forwards are lost (its request is never proposed), and its
            // view-change reaches only 1 before 3 crashes.
            Message::Forward(_) if from == 3 && to == 0 && phase == 1 => None,
            Message::ViewChange(_) if from == 3 && to != 1 && phase == 1 => None,
            // Phase 2: Byzantine 1 leaves 3's view-change out of its recovery answer, and
            // ignores the incarnation 3 announces (it keeps 3's old view-change to use).
            Message::RecoveryAnswer(mut a) if from == 1 => {
                a.querier_message = None;
                Some(Message::RecoveryAnswer(a))
            }
            Message::RecoveryQuery(q) if to == 1 => Some(Message::RecoveryQuery(RecoveryQuery {
                incarnation: 0,
                ..q
            })),
            Message::Lives(_) if to == 1 => None,
            // Phase 3: prepares of d reach neither 0 nor 1 (neither prepares it), commits of d
            // do not reach 3 (it prepares and commits d but does not execute it). 1's forwards
            // stay with it.
            Message::Prepare(v) if phase >= 3 && v.view == 0 && v.seq == s && to <= 1 => None,
            Message::Commit(v) if phase >= 3 && v.view == 0 && v.seq == s && to == 3 => None,
            Message::Forward(_) if phase >= 3 && from == 1 => None,
            // Phase 4: 1 hears only the view-changes of 0 and its own (and holds 3's old one).
            Message::ViewChange(_) if phase == 4 && to == 1 && (from == 2 || from == 3) => None,
            m => Some(m),
        }
    });

    // Phase 1.
    c.input(3, Input::Request(request(100)));
    c.run();
    c.tick_all(25);
    assert!(c.replicas[3].in_view_change() && c.replicas[3].view() == 1);
    let old_view_change = last_sent(&c, 3, |m| match m {
        Message::ViewChange(vc) => Some(vc.clone()),
        _ => None,
    });

    // Phase 2: 3 loses its stores (its chain, at 1, survives) and recovers.
    phase.set(2);
    let head = c.replicas[3].last_executed();
    c.replicas[3] = Replica::new(
        config(3, n),
        Restored {
            last_executed: head,
            executed_checkpoint: None,
            durable: Vec::new(),
            recovering: true,
            nonce: 0x5eed,
            incarnation: 1,
            head_time_ms: 0,
            now_ms: 0,
        },
    );
    c.tick_all(1);
    assert_eq!(
        c.durable[3].last(),
        Some(&Durable::Recovery {
            bound: Some((0, head.0 + 8))
        }),
        "bound: view 0, executed head + L"
    );
    for i in 2..=30 {
        if !c.replicas[3].is_recovering() {
            break;
        }
        commit_block(&mut c, i);
    }
    assert!(!c.replicas[3].is_recovering(), "3 recovered");
    assert_eq!(c.replicas[3].view(), 0);

    // Phase 3: block d at s.
    phase.set(3);
    let s = c.executed[0].len() as SeqNo + 1;
    s_cell.set(s);
    c.input(1, Input::Request(request(201)));
    c.input(0, Input::Request(request(200)));
    c.input(0, Input::Cut);
    c.run();
    let d = last_sent(&c, 0, |m| match m {
        Message::PrePrepare(pp) if pp.proposal.seq == s => Some(pp.digest),
        _ => None,
    });
    assert!(
        c.sent[3]
            .iter()
            .any(|m| matches!(m, Message::Commit(v) if *v == vote(0, s, d))),
        "3, recovered, prepared and committed d at (0, s)"
    );
    // Byzantine 1 adds its commit for d at 2.
    c.input(2, msg(1, Message::Commit(vote(0, s, d))));
    c.run();
    assert_eq!(c.executed[2].len() as SeqNo, s, "2 executed d");
    assert_eq!(c.executed[2][s as usize - 1].digest, d);

    // Phase 4: the view change to 1.
    phase.set(4);
    for _ in 0..200 {
        c.tick_all(1);
        if c.executed[3].len() as SeqNo >= s {
            break;
        }
    }
    let new_view = last_sent(&c, 1, |m| match m {
        Message::NewView(nv) if nv.view == 1 => Some(nv.clone()),
        _ => None,
    });
    assert!(
        new_view
            .view_changes
            .iter()
            .any(|vc| vc.from == 3 && vc.message == old_view_change),
        "1's new-view carries 3's lost-life view-change"
    );
    for id in [0, 3] {
        assert!(
            c.executed[id].len() as SeqNo >= s,
            "replica {id} executed sequence number {s}"
        );
        assert!(
            c.replicas[id].view() >= 2,
            "replica {id} did not stay in view 1, which the lost-life view-change made"
        );
    }
    let (at_2, at_3) = (
        &c.executed[2][s as usize - 1],
        &c.executed[3][s as usize - 1],
    );
    assert_eq!(
        at_3.digest,
        at_2.digest,
        "fork at {s}: correct replicas 2 and 3 executed different blocks: {:?} and {:?}",
        at_2.proposal
            .requests
            .iter()
            .map(|r| r.id[0])
            .collect::<Vec<_>>(),
        at_3.proposal
            .requests
            .iter()
            .map(|r| r.id[0])
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        at_3.digest, d,
        "d, committed in view 0, survives the view change"
    );
}

/// The signed checkpoint at `seq` with `digest` from 0, 2 and 3 (a stable-checkpoint proof).
fn checkpoint_proof(seq: SeqNo, digest: Digest) -> Vec<Signed<Checkpoint>> {
    [0, 2, 3]
        .into_iter()
        .map(|from| signed(from, Checkpoint { seq, digest }))
        .collect()
}

fn sends_new_view(actions: &[Action]) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Broadcast(Message::NewView(_))))
}

/// Finding 2 (red team), the recovery's step 3: "if it is changing to a view up to V that it
/// leads, [it stays passive] until the next view: it may have sent that view's new-view
/// before". Replica 1 (primary of view 1) recovers with the bound (1, 8), reaches a stable
/// checkpoint at 8 and changes to view 1: it stays passive and builds no new-view. It then
/// restarts with its records, full or compacted. The guard lived in memory only: `Replica::new`
/// saw the bound's view and checkpoint met and dropped the recovery (and `Durable::compact`
/// dropped the record for the same reason), so the restarted replica sent a new-view for view
/// 1, which its lost life may have sent with another O set. Now both keep the guard.
#[test]
fn finding_2_restart_remembers_that_a_recovering_primary_may_have_led_its_view() {
    let head = (8, [8; 32]);
    let bound = Durable::Recovery {
        bound: Some((1, 8)),
    };
    let start = |durable: Vec<Durable>| {
        Replica::new(
            config(1, 4),
            Restored {
                last_executed: head,
                executed_checkpoint: None,
                durable,
                recovering: false,
                nonce: 3,
                incarnation: 1,
                head_time_ms: 0,
                now_ms: 0,
            },
        )
    };
    let view_change = |from: ReplicaId| {
        msg(
            from,
            Message::ViewChange(ViewChange {
                new_view: 1,
                incarnation: 0,
                checkpoint: Checkpoint {
                    seq: 8,
                    digest: head.1,
                },
                checkpoint_proof: checkpoint_proof(8, head.1),
                prepared: Vec::new(),
            }),
        )
    };
    let mut r = start(vec![bound.clone()]);
    assert!(r.is_recovering());
    let mut records = vec![bound];
    let mut actions = Vec::new();
    for from in [0, 2, 3] {
        let c = Checkpoint {
            seq: 8,
            digest: head.1,
        };
        actions.extend(step(&mut r, msg(from, Message::Checkpoint(c))));
    }
    assert_eq!(r.stable_checkpoint().0, 8);
    for from in [0, 2, 3] {
        actions.extend(step(&mut r, view_change(from)));
    }
    assert!(r.in_view_change() && r.view() == 1 && r.is_primary());
    assert!(r.is_recovering(), "in memory, the guard holds");
    assert!(!sends_new_view(&actions));
    records.extend(persisted(&actions));

    let mut compacted = records.clone();
    Durable::compact(&mut compacted);
    for (what, durable) in [("full", records), ("compacted", compacted)] {
        let mut restarted = start(durable);
        let mut actions = step(&mut restarted, Input::Tick { now_ms: 0 });
        for from in [0, 2, 3] {
            actions.extend(step(&mut restarted, view_change(from)));
        }
        assert!(
            restarted.is_recovering() && !sends_new_view(&actions),
            "restarted from its {what} records, replica 1 left recovery and sent a new-view \
             for view 1 (recovering: {}, new-view sent: {})",
            restarted.is_recovering(),
            sends_new_view(&actions)
        );
    }
}

/// A request whose payload is `bytes` long.
fn big_request(i: u8, bytes: usize) -> Request {
    Request {
        payload: std::sync::Arc::from(vec![i; bytes]),
        ..request(i)
    }
}

/// A view-change to `new_view` from `from` whose P set holds L prepared certificates of full
/// batches of `bytes`-byte requests (prepared in view 0 by backups 1 and 2): about
/// L * max_batch * bytes, what a view-change after a window of large blocks carries.
fn large_view_change(new_view: View, bytes: usize) -> ViewChange {
    let mut prev = GENESIS;
    let prepared = (1..=8u8)
        .map(|seq| {
            let requests = vec![big_request(2 * seq, bytes), big_request(2 * seq + 1, bytes)];
            let pre_prepare = pre_prepare(u64::from(seq), 0, prev, requests);
            prev = pre_prepare.digest;
            let vote = vote(0, u64::from(seq), pre_prepare.digest);
            PreparedCertificate {
                pre_prepare,
                prepares: vec![signed(1, vote), signed(2, vote)],
            }
        })
        .collect();
    ViewChange {
        new_view,
        incarnation: 0,
        checkpoint: Checkpoint {
            seq: 0,
            digest: GENESIS,
        },
        checkpoint_proof: Vec::new(),
        prepared,
    }
}

/// Finding 5 (red team): "bound every input, per peer", and "cannot halt". One Byzantine
/// validator sends one valid view-change carrying large batches (any prepared certificates of
/// its past, 1 MiB here; up to the 256 MiB view-change frame in a real cluster), which the
/// victim keeps as the sender's highest-view message, then tiny recovery queries, each with a
/// fresh nonce, although it is not recovering. The victim answered every one, each answer
/// carrying that view-change (the node clones, borsh-encodes and signs it, hashing it twice,
/// per query): 50 queries of about 90 bytes cost 50 MiB of answers, and a peer can send
/// thousands per second. Now each querier is answered at most once per `retransmit_ticks`
/// (a correct querier resends at that interval anyway).
#[test]
fn finding_5_recovery_queries_do_not_amplify_a_large_view_change() {
    let mut victim = replica(0);
    let vc = large_view_change(1, 64 * 1024);
    let vc_bytes = borsh::to_vec(&vc).expect("borsh").len();
    step(&mut victim, msg(1, Message::ViewChange(vc)));
    let (mut in_bytes, mut out_bytes, mut answers) = (0, 0, 0);
    for nonce in 0..50 {
        let query = signed(
            1,
            Message::RecoveryQuery(RecoveryQuery {
                nonce,
                incarnation: 0,
            }),
        );
        in_bytes += borsh::to_vec(&query).expect("borsh").len();
        let mut actions = Vec::new();
        let answered = victim.step(Input::Message(query), &mut actions);
        assert!(answered.is_ok() || actions.is_empty());
        for action in actions {
            if let Action::Send {
                to: 1,
                message: message @ Message::RecoveryAnswer(_),
            } = action
            {
                answers += 1;
                out_bytes += borsh::to_vec(&message).expect("borsh").len();
            }
        }
    }
    assert!(
        answers <= 1,
        "{answers} answers ({out_bytes} bytes) to {in_bytes} bytes of queries within one \
         tick; each carries the sender's view-change of {vc_bytes} bytes"
    );
    // A querier that resends at the interval is answered again.
    for _ in 0..victim.config().retransmit_ticks {
        step(&mut victim, Input::Tick { now_ms: 0 });
    }
    let query = msg(
        1,
        Message::RecoveryQuery(RecoveryQuery {
            nonce: 50,
            incarnation: 0,
        }),
    );
    assert!(
        step(&mut victim, query).iter().any(|a| matches!(
            a,
            Action::Send {
                to: 1,
                message: Message::RecoveryAnswer(_)
            }
        )),
        "answered again after retransmit_ticks"
    );
}

/// Finding 5 (red team): "a message's shape is checked before its signatures". `check_shape`
/// passed recovery answers this replica cannot use, so the node verified their signatures
/// first (n + 1 of them, and the querier's over the whole querier message, up to the 256 MiB
/// view-change frame) and only then did the replica refuse them. Two cases: an answer sent to
/// a replica that asked nothing (querier = the sender itself, whose own signature is genuine),
/// and a querier message whose new-view could never be valid (no view-change inside). Both are
/// refused by the shape check now.
#[test]
fn finding_5_shape_check_refuses_unusable_recovery_answers() {
    let garbage_new_view = |view| NewView {
        view,
        incarnation: 0,
        view_changes: Vec::new(),
        pre_prepares: large_view_change(view, 64 * 1024)
            .prepared
            .into_iter()
            .map(|c| c.pre_prepare)
            .collect(),
    };
    // To a replica that asked nothing: the sender names itself querier and signs its own blob.
    let bystander = replica(0);
    let unsolicited = RecoveryAnswer {
        nonce: 1,
        querier: 1,
        last_executed: 0,
        executed_proof: Vec::new(),
        querier_message: Some(Box::new(signed(
            1,
            ViewMessage::NewView(garbage_new_view(5)),
        ))),
        lives: Vec::new(),
    };
    let unsolicited = bystander.check_shape(&Message::RecoveryAnswer(unsolicited));
    // To the querier: its "own" new-view with no view-change in it.
    let querier = querier();
    let malformed = RecoveryAnswer {
        nonce: 9,
        querier: 3,
        last_executed: 0,
        executed_proof: Vec::new(),
        querier_message: Some(Box::new(signed(
            3,
            ViewMessage::NewView(garbage_new_view(7)),
        ))),
        lives: Vec::new(),
    };
    let malformed = querier.check_shape(&Message::RecoveryAnswer(malformed));
    assert!(
        unsolicited.is_err() && malformed.is_err(),
        "check_shape: unsolicited answer {unsolicited:?}, malformed querier message {malformed:?}"
    );
}

/// HELD (finding 2: "a faulty answerer can understate, not deflate the bound below what is
/// safe"). n = 7, f = 2: validators 0 and 1 are Byzantine and answer 6's query first, each
/// claiming nothing (sequence number 0, no certificate, no message of 6). With 2f+1 = 5 answers,
/// three come from correct validators, whose certified heads set H: the bound is the true
/// head plus L.
#[test]
fn red_team_held_f_understating_answerers_do_not_lower_the_bound() {
    let n = 7;
    let mut c = Cluster::new(n);
    for i in 1..=5 {
        commit_block(&mut c, i);
    }
    let head = c.replicas[6].last_executed();
    assert_eq!(head.0, 5);
    c.replicas[6] = Replica::new(
        config(6, n),
        Restored {
            last_executed: (0, GENESIS),
            executed_checkpoint: None,
            durable: Vec::new(),
            recovering: true,
            nonce: 41,
            incarnation: 1,
            head_time_ms: 0,
            now_ms: 0,
        },
    );
    c.filter = Box::new(|from, to, m| match m {
        Message::RecoveryAnswer(a) if from <= 1 && to == 6 => {
            Some(Message::RecoveryAnswer(RecoveryAnswer {
                last_executed: 0,
                executed_proof: Vec::new(),
                querier_message: None,
                ..a
            }))
        }
        m => Some(m),
    });
    c.tick_all(1);
    assert_eq!(
        c.durable[6].last(),
        Some(&Durable::Recovery {
            bound: Some((0, 5 + 8))
        })
    );
}

/// HELD ("crash a validator with a malformed answer"): answers naming unknown replicas, with
/// oversized or inconsistent certificates, or addressed to another querier are errors, from
/// `check_shape` and from `step`, never a panic; none counts toward the 2f+1.
#[test]
fn red_team_held_malformed_recovery_answers_are_errors() {
    let mut q = querier();
    let commit = vote(0, 4, [4; 32]);
    let answer = |querier, proof: Vec<ReplicaId>| RecoveryAnswer {
        nonce: 9,
        querier,
        last_executed: 4,
        executed_proof: commit_votes(commit, proof.into_iter().map(|s| (s, sig(s)))),
        querier_message: None,
        lives: Vec::new(),
    };
    let mut queriers_message_from_nobody = answer(3, vec![0, 1, 2]);
    queriers_message_from_nobody.querier_message = Some(Box::new(signed(
        u32::MAX,
        ViewMessage::Prepare(vote(u64::MAX, u64::MAX, [0; 32])),
    )));
    let malformed = [
        answer(u32::MAX, vec![0, 1, 2]),
        answer(3, vec![0, 1, u32::MAX]),
        answer(3, (0..1000).map(|i| i % 4).collect()),
        answer(3, vec![0; 1000]),
        queriers_message_from_nobody,
    ];
    for a in malformed {
        let message = Message::RecoveryAnswer(a);
        let shape = q.check_shape(&message);
        let stepped = q.step(Input::Message(signed(0, message)), &mut Vec::new());
        assert!(shape.is_err() || stepped.is_err(), "{shape:?} {stepped:?}");
        assert!(stepped.is_err());
    }
    // None counted: 0's proper answer is not a duplicate, and it takes three.
    let bound_in = |actions: Vec<Action>| {
        actions.into_iter().find_map(|a| match a {
            Action::Persist(Durable::Recovery { bound }) => bound,
            _ => None,
        })
    };
    for from in [0, 1] {
        let proper = Message::RecoveryAnswer(answer(3, vec![0, 1, 2]));
        assert_eq!(bound_in(step(&mut q, msg(from, proper))), None);
    }
    let proper = Message::RecoveryAnswer(answer(3, vec![0, 1, 2]));
    assert_eq!(bound_in(step(&mut q, msg(2, proper))), Some((0, 4 + 8)));
}

/// Finding 2 (red team, liveness): one Byzantine validator (3) cannot veto every view change
/// with incarnations. At each view change it sends its view-change to the new primary and the
/// same view-change, of a newer life, to the backups; the network loses one correct replica's
/// view-change to the primary, so the new-view holds 3's older one. 3 takes no part in the
/// normal case and sends no new-view of its own. When incarnations were learned from
/// view-changes too, the backups refused every such new-view (`OlderIncarnation`) and the
/// request was never committed. Now only a recovery query announces a life (and at most one
/// per sender per stable checkpoint: `a_new_incarnation_is_accepted_once_per_checkpoint`).
#[test]
fn finding_2_announcing_new_lives_cannot_veto_every_view_change() {
    let n = 4;
    let mut c = Cluster::new(n);
    commit_block(&mut c, 1);
    let primary = move |view: View| (view % u64::from(n)) as ReplicaId;
    // The correct backup (not 3) after the primary.
    let lost = move |view: View| [1, 2, 0, 0][primary(view) as usize];
    c.filter = Box::new(move |from, to, m| match m {
        // The network: 0's proposals are lost for a while, so the backups time out.
        Message::PrePrepare(pp) if from == 0 && pp.view == 0 => None,
        // 3, Byzantine.
        Message::ViewChange(vc) if from == 3 => {
            let view = vc.new_view;
            if to == primary(view) {
                Some(Message::ViewChange(ViewChange {
                    incarnation: view - 1,
                    ..vc
                }))
            } else {
                Some(Message::ViewChange(ViewChange {
                    incarnation: view,
                    ..vc
                }))
            }
        }
        Message::Prepare(_) | Message::Commit(_) | Message::NewView(_) if from == 3 => None,
        // The network loses one correct replica's view-change to the new primary.
        Message::ViewChange(vc) if to == primary(vc.new_view) && from == lost(vc.new_view) => None,
        m => Some(m),
    });
    for id in 0..3 {
        c.input(id, Input::Request(request(2)));
    }
    c.run();
    for _ in 0..3_000 {
        c.tick_all(1);
        if (0..3).all(|id| c.executed_ids(id).contains(&[2; 32])) {
            break;
        }
    }
    for id in 0..3 {
        assert!(
            c.executed_ids(id).contains(&[2; 32]),
            "replica {id} never committed the request (view {})",
            c.replicas[id as usize].view()
        );
        let learned = c.durable[id as usize]
            .iter()
            .filter(|d| matches!(life_in(d), Some((3, _))))
            .count();
        assert!(
            learned <= 1,
            "replica {id} learned {learned} new lives of 3"
        );
    }
}
