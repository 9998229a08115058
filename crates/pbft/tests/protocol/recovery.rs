//! Recovery from lost durable state (issue 8, finding 2): a replica that may have voted before
//! stays passive until it can no longer contradict itself, then takes part again.
use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use pbft::*;

/// The votes a replica sent, per (kind, view, seq): more than one digest is a contradiction.
fn votes(sent: &[Message]) -> BTreeMap<(&'static str, View, SeqNo), BTreeSet<Digest>> {
    let mut out: BTreeMap<_, BTreeSet<Digest>> = BTreeMap::new();
    for m in sent {
        let (kind, v) = match m {
            Message::Prepare(v) => ("prepare", v),
            Message::Commit(v) => ("commit", v),
            _ => continue,
        };
        out.entry((kind, v.view, v.seq))
            .or_default()
            .insert(v.digest);
    }
    out
}

fn count_votes(sent: &[Message]) -> usize {
    sent.iter()
        .filter(|m| matches!(m, Message::Prepare(_) | Message::Commit(_)))
        .count()
}

/// The replica restarts with nothing (its stores deleted), knowing it may have voted.
fn amnesia(c: &mut Cluster, id: ReplicaId, last_executed: (SeqNo, Digest)) {
    c.replicas[id as usize] = Replica::new(
        config(id, 4),
        Restored {
            last_executed,
            executed_checkpoint: None,
            // Block times are sequence numbers in these tests (`common::proposal`).
            head_time_ms: last_executed.0,
            now_ms: 0,
            durable: Vec::new(),
            recovering: true,
            nonce: 0x5eed,
            incarnation: 1,
        },
    );
}

/// Finding 2, the fork of the issue at the core level. The primary (0) is Byzantine: it
/// pre-prepares A at (0, 1) to replicas 1 and 3 and B to replica 2, and sends its commit for
/// whichever each one holds. 1 and 3 prepare, commit and execute A. Replica 3 then loses all
/// its state and restarts; the primary hands it B and replays 2's prepare for B. Restarted from nothing it would prepare
/// and commit B (its votes for A never reached 2), completing B's certificates at replica 2:
/// 1 and 2 would execute different blocks at sequence number 1. Recovering, it sends no vote,
/// and nothing forks.
#[test]
fn finding_2_restored_replica_cannot_vote_twice() {
    let a = pre_prepare(1, 0, GENESIS, vec![request(1)]);
    let b = pre_prepare(1, 0, GENESIS, vec![request(2)]);
    let (a_digest, b_for_2) = (a.digest, b.clone());
    let mut c = Cluster::new(4);
    c.filter = Box::new(move |from, to, m| match m {
        Message::PrePrepare(pp) if from == 0 && to == 2 && pp.digest == a_digest => {
            Some(Message::PrePrepare(b_for_2.clone()))
        }
        Message::Commit(v) if from == 0 && to == 2 && v.digest == a_digest => {
            Some(Message::Commit(vote(0, 1, b_for_2.digest)))
        }
        // Replica 3's votes for A happen to be lost on their way to 2 (else 2 would keep
        // them and refuse 3's second votes as conflicting).
        Message::Prepare(v) | Message::Commit(v)
            if from == 3 && to == 2 && v.digest == a_digest =>
        {
            None
        }
        m => Some(m),
    });
    c.input(0, Input::Request(request(1)));
    c.input(0, Input::Cut);
    c.run();
    for id in [1, 3] {
        assert_eq!(
            c.executed[id][0].digest, a.digest,
            "replica {id} executed A"
        );
    }
    assert!(c.executed[2].is_empty());

    amnesia(&mut c, 3, (0, GENESIS));
    c.input(3, msg(0, Message::PrePrepare(b.clone())));
    c.input(3, msg(0, Message::Commit(vote(0, 1, b.digest))));
    // The primary also relays replica 2's signed prepare for B (a replay it can make).
    c.input(3, msg(2, Message::Prepare(vote(0, 1, b.digest))));
    c.run();
    c.tick_all(200);

    for (key, digests) in votes(&c.sent[3]) {
        assert_eq!(digests.len(), 1, "replica 3 contradicted itself at {key:?}");
    }
    for seq in 0..c.executed[1].len().min(c.executed[2].len()) {
        assert_eq!(
            c.executed[1][seq].digest, c.executed[2][seq].digest,
            "fork at {seq}"
        );
    }
    assert!(
        c.executed.iter().flatten().all(|x| x.digest != b.digest),
        "B never committed"
    );
    assert!(c.replicas[3].is_recovering());
}

/// Finding 2: a recovering replica asks the others where they are, stays passive (executing
/// what commits, sending checkpoints but no vote) until its stable checkpoint passes every
/// sequence number it could have voted at, then votes again.
#[test]
fn finding_2_recovering_replica_resumes_voting_once_safe() {
    let mut c = Cluster::new(4);
    let block = |c: &mut Cluster| {
        let next = c.executed[0].len() as u8 + 1;
        c.input(0, Input::Request(request(next)));
        c.input(0, Input::Cut);
        c.run();
        c.tick_all(1);
    };
    for _ in 0..3 {
        block(&mut c);
    }
    // Replica 3 loses its protocol records (its ledger, at 3, survives).
    let head = c.replicas[3].last_executed();
    assert_eq!(head.0, 3);
    amnesia(&mut c, 3, head);
    c.tick_all(1);
    let recovered_from = c.sent[3].len();
    assert_eq!(
        c.durable[3].last(),
        Some(&Durable::Recovery {
            bound: Some((0, 3 + 8))
        }),
        "2f+1 answers: view 0, executed 3, plus L = 8"
    );
    // Passive: it executes blocks 4..=12 and sends checkpoints, but no vote, until the
    // checkpoint at 12 (>= 11) is stable.
    while c.replicas[3].is_recovering() {
        assert!(c.executed[0].len() < 20, "recovery never ends");
        assert_eq!(count_votes(&c.sent[3][recovered_from..]), 0);
        block(&mut c);
    }
    assert_eq!(c.replicas[3].stable_checkpoint().0, 12);
    let passive_until = c.sent[3].len();
    for _ in 0..3 {
        block(&mut c);
    }
    assert!(count_votes(&c.sent[3][passive_until..]) > 0, "votes again");
    let chain: Vec<Digest> = c.executed[0].iter().map(|x| x.digest).collect();
    assert_eq!(chain.len(), 15);
    assert_eq!(
        c.executed[3].iter().map(|x| x.digest).collect::<Vec<_>>(),
        chain,
        "replica 3 executed every block, in both lives"
    );
    for (key, digests) in votes(&c.sent[3]) {
        assert_eq!(digests.len(), 1, "replica 3 contradicted itself at {key:?}");
    }
}

/// A restart during recovery stays passive (the records say so, whatever the caller passes),
/// and compaction keeps the recovery record only while it matters.
#[test]
fn recovery_survives_a_restart_until_its_bound_is_met() {
    let start = |durable: Vec<Durable>| {
        Replica::new(
            config(3, 4),
            Restored {
                durable,
                nonce: 9,
                ..Restored::genesis(GENESIS, 0, 0)
            },
        )
    };
    let querying = vec![Durable::Recovery { bound: None }];
    assert!(start(querying.clone()).is_recovering());
    let bounded = vec![
        Durable::Recovery { bound: None },
        Durable::Recovery {
            bound: Some((0, 8)),
        },
    ];
    let mut compacted = bounded.clone();
    Durable::compact(&mut compacted);
    assert_eq!(compacted, bounded[1..]);
    let mut r = start(compacted);
    assert!(r.is_recovering());
    // A restart mid-query asks again, with this start's nonce.
    let mut q = start(querying);
    assert!(
        step(&mut q, Input::Tick { now_ms: 0 }).contains(&Action::Broadcast(
            Message::RecoveryQuery(RecoveryQuery {
                nonce: 9,
                incarnation: 0
            })
        ))
    );
    // An answer to another nonce or querier is refused.
    let answer = RecoveryAnswer {
        nonce: 8,
        querier: 3,
        last_executed: 0,
        executed_proof: Vec::new(),
        querier_message: None,
        lives: Vec::new(),
    };
    assert_eq!(
        step_err(&mut q, msg(0, Message::RecoveryAnswer(answer))),
        ProtocolError::UnexpectedRecoveryAnswer
    );
    // Once the stable checkpoint passes the bound, the record is dropped.
    let stable = Checkpoint {
        seq: 8,
        digest: [8; 32],
    };
    let mut met = vec![
        Durable::Recovery {
            bound: Some((0, 8)),
        },
        Durable::StableCheckpoint {
            checkpoint: stable,
            proof: [0, 1, 2].iter().map(|f| signed(*f, stable)).collect(),
        },
    ];
    Durable::compact(&mut met);
    assert_eq!(met.len(), 1);
    r = Replica::new(
        config(3, 4),
        Restored {
            last_executed: (8, [8; 32]),
            durable: met,
            ..Restored::genesis(GENESIS, 0, 0)
        },
    );
    assert!(!r.is_recovering());
}

/// An answer to `querier()` proving execution through `seq` with commits of `view` from
/// `signers` (none for `seq` 0).
fn answer(seq: SeqNo, view: View, signers: &[ReplicaId]) -> RecoveryAnswer {
    let commit = vote(view, seq, [seq as u8; 32]);
    RecoveryAnswer {
        nonce: 9,
        querier: 3,
        last_executed: seq,
        executed_proof: commit_votes(commit, signers.iter().map(|s| (*s, sig(*s)))),
        querier_message: None,
        lives: Vec::new(),
    }
}

fn bound(actions: &[Action]) -> Option<(View, SeqNo)> {
    actions.iter().find_map(|a| match a {
        Action::Persist(Durable::Recovery { bound }) => *bound,
        _ => None,
    })
}

/// Finding 2: an answer whose executed sequence number its certificate does not prove is
/// refused, and does not count toward the 2f+1 answers: one liar cannot raise H.
#[test]
fn finding_2_unproven_recovery_answers_are_refused_and_do_not_count() {
    let mut q = querier();
    let mut mismatched_seq = answer(40, 0, &[0, 1, 2]);
    mismatched_seq.executed_proof[2].message.seq = 41;
    let mut mismatched_digest = answer(40, 0, &[0, 1, 2]);
    mismatched_digest.executed_proof[1].message.digest = [9; 32];
    let mut mixed_views = answer(40, 0, &[0, 1, 2]);
    mixed_views.executed_proof[0].message.view = 1;
    let mut inflated = answer(4, 0, &[0, 1, 2]);
    inflated.last_executed = 1_000_000;
    let unproven = [
        ("short", answer(40, 0, &[0, 1])),
        ("duplicate signer", answer(40, 0, &[0, 1, 1])),
        ("unknown signer", answer(40, 0, &[0, 1, 7])),
        ("mismatched seq", mismatched_seq),
        ("mismatched digest", mismatched_digest),
        ("mixed views", mixed_views),
        ("inflated", inflated),
        (
            "no certificate",
            RecoveryAnswer {
                executed_proof: Vec::new(),
                ..answer(40, 0, &[0, 1, 2])
            },
        ),
        (
            "certificate of 0",
            RecoveryAnswer {
                last_executed: 0,
                ..answer(40, 0, &[0, 1, 2])
            },
        ),
    ];
    for (what, lie) in unproven {
        assert!(
            matches!(
                step_err(&mut q, msg(0, Message::RecoveryAnswer(lie))),
                ProtocolError::InvalidRecoveryAnswer(_)
            ),
            "{what}"
        );
    }
    // Two proven answers are not 2f+1: the refused ones did not count.
    for from in [1, 2] {
        let proven = answer(4, 0, &[0, 1, 2]);
        assert_eq!(
            bound(&step(&mut q, msg(from, Message::RecoveryAnswer(proven)))),
            None
        );
    }
    // The third proven one completes the query: H = the highest proven execution + L.
    let proven = answer(6, 1, &[0, 1, 3]);
    assert_eq!(
        bound(&step(&mut q, msg(0, Message::RecoveryAnswer(proven)))),
        Some((1, 6 + 8)),
        "V is the certificate's view, H = 6 + L"
    );
}

/// Finding 2: V comes only from messages the querier itself signed (its signature is checked
/// at the edge like every embedded one) and from certificates: another replica's message
/// offered as the querier's is refused.
#[test]
fn finding_2_recovery_view_comes_from_the_queriers_own_messages() {
    let mut q = querier();
    let not_the_queriers = RecoveryAnswer {
        querier_message: Some(Box::new(signed(
            0,
            ViewMessage::Prepare(vote(50, 1, [1; 32])),
        ))),
        ..answer(0, 0, &[])
    };
    assert!(matches!(
        step_err(&mut q, msg(0, Message::RecoveryAnswer(not_the_queriers))),
        ProtocolError::InvalidRecoveryAnswer(_)
    ));
    let queriers = RecoveryAnswer {
        querier_message: Some(Box::new(signed(
            3,
            ViewMessage::Commit(vote(5, 2, [2; 32])),
        ))),
        ..answer(2, 0, &[0, 1, 2])
    };
    step(&mut q, msg(0, Message::RecoveryAnswer(queriers)));
    step(&mut q, msg(1, Message::RecoveryAnswer(answer(0, 0, &[]))));
    assert_eq!(
        bound(&step(
            &mut q,
            msg(2, Message::RecoveryAnswer(answer(0, 0, &[])))
        )),
        Some((5, 2 + 8)),
        "V is the view the querier signed"
    );
}

/// An answerer shows the querier the message of the highest view it accepted from it,
/// preferring a vote to a view-change of the same view, and claims its own execution with no
/// proof (the caller adds the certificate).
#[test]
fn answer_carries_the_queriers_highest_view_message() {
    let mut r = replica(0);
    let pp = pre_prepare(1, 0, GENESIS, vec![request(1)]);
    step(&mut r, msg(0, Message::PrePrepare(pp.clone())));
    step(&mut r, msg(3, Message::Prepare(vote(0, 1, pp.digest))));
    let actions = step(
        &mut r,
        msg(
            3,
            Message::RecoveryQuery(RecoveryQuery {
                nonce: 4,
                incarnation: 0,
            }),
        ),
    );
    assert_eq!(
        actions,
        vec![Action::Send {
            to: 3,
            message: Message::RecoveryAnswer(RecoveryAnswer {
                nonce: 4,
                querier: 3,
                last_executed: 0,
                executed_proof: Vec::new(),
                querier_message: Some(Box::new(signed(
                    3,
                    ViewMessage::Prepare(vote(0, 1, pp.digest))
                ))),
                lives: Vec::new(),
            }),
        }]
    );
}

/// Replica 3's view-change to view 1 in incarnation `incarnation`, with nothing prepared.
fn view_change_of(incarnation: u64) -> ViewChange {
    ViewChange {
        new_view: 1,
        incarnation,
        checkpoint: Checkpoint {
            seq: 0,
            digest: GENESIS,
        },
        checkpoint_proof: Vec::new(),
        prepared: Vec::new(),
    }
}

/// Finding 2 (the incarnation): an answerer persists the incarnation a query announces before
/// it answers, and from then on refuses the querier's view-changes of older incarnations,
/// alone or inside a new-view, also after a restart from its (compacted) records; the querier's
/// view-changes of the new incarnation count as usual.
#[test]
fn an_answerer_refuses_a_forgotten_lifes_view_change_across_a_restart() {
    let mut r = replica(0);
    let query = |incarnation| {
        msg(
            3,
            Message::RecoveryQuery(RecoveryQuery {
                nonce: 4,
                incarnation,
            }),
        )
    };
    let actions = step(&mut r, query(2));
    let new_life = signed(
        3,
        RecoveryQuery {
            nonce: 4,
            incarnation: 2,
        },
    );
    let record = Durable::Incarnation {
        life: new_life.clone(),
        at: 0,
    };
    assert_eq!(actions[0], Action::Persist(record.clone()));
    assert_eq!(
        actions[1],
        Action::Broadcast(Message::Lives(vec![new_life])),
        "relayed, so that every replica learns it together"
    );
    assert!(matches!(
        actions[2],
        Action::Send {
            to: 3,
            message: Message::RecoveryAnswer(_)
        }
    ));
    let mut records = vec![
        Durable::Incarnation {
            life: life(3, 1),
            at: 0,
        },
        Durable::Incarnation {
            life: life(2, 5),
            at: 0,
        },
        record,
    ];
    Durable::compact(&mut records);
    assert_eq!(records.len(), 2, "the newest incarnation of each replica");
    let mut restarted = Replica::new(
        config(0, 4),
        Restored {
            durable: records,
            ..Restored::genesis(GENESIS, 0, 0)
        },
    );
    for r in [&mut r, &mut restarted] {
        let old = msg(3, Message::ViewChange(view_change_of(1)));
        assert_eq!(
            step_err(r, old),
            ProtocolError::OlderIncarnation {
                replica: 3,
                got: 1,
                known: 2
            }
        );
        // Inside a new-view (view 1's primary is 1), with 0's and 1's view-changes.
        let view_changes = [(0, 0), (1, 0), (3, 1)]
            .map(|(from, incarnation)| {
                signed(
                    from,
                    ViewChange {
                        incarnation,
                        ..view_change_of(0)
                    },
                )
            })
            .to_vec();
        let new_view = NewView {
            view: 1,
            incarnation: 0,
            view_changes,
            pre_prepares: Vec::new(),
        };
        assert!(matches!(
            step_err(r, msg(1, Message::NewView(new_view))),
            ProtocolError::OlderIncarnation { replica: 3, .. }
        ));
        step(r, msg(3, Message::ViewChange(view_change_of(2))));
    }
}

/// A querier's view-change that an answerer saw only inside a new-view it accepted is shown to
/// the querier like one it received directly: the querier's bound then covers that view (the
/// case where the new-view was accepted before the answerer learned the new incarnation).
#[test]
fn an_answer_shows_the_queriers_view_change_seen_inside_a_new_view() {
    let mut r = replica(2);
    let view_changes = [0, 1, 3]
        .map(|from| signed(from, view_change_of(0)))
        .to_vec();
    let new_view = NewView {
        view: 1,
        incarnation: 0,
        view_changes,
        pre_prepares: Vec::new(),
    };
    step(&mut r, msg(1, Message::NewView(new_view)));
    assert_eq!(r.view(), 1);
    let query = RecoveryQuery {
        nonce: 4,
        incarnation: 1,
    };
    let answer = step(&mut r, msg(3, Message::RecoveryQuery(query)))
        .into_iter()
        .find_map(|a| match a {
            Action::Send {
                message: Message::RecoveryAnswer(answer),
                ..
            } => Some(answer),
            _ => None,
        })
        .expect("an answer");
    assert_eq!(
        answer.querier_message,
        Some(Box::new(signed(
            3,
            ViewMessage::ViewChange(view_change_of(0))
        )))
    );
}

/// Finding 2 (red team): a replica accepts one new incarnation per sender per advance of its
/// stable checkpoint, and does not answer a query that announces a second one sooner (the
/// answer would tell the querier its new life was recorded). Otherwise a faulty replica could
/// announce a new life before every view change and veto each new-view that holds its older
/// view-change.
#[test]
fn a_new_incarnation_is_accepted_once_per_checkpoint() {
    let mut c = Cluster::new(4);
    let query = |incarnation| {
        msg(
            3,
            Message::RecoveryQuery(RecoveryQuery {
                nonce: incarnation,
                incarnation,
            }),
        )
    };
    let learned = |c: &Cluster| -> Vec<u64> {
        c.durable[0]
            .iter()
            .filter_map(|d| life_in(d).filter(|(replica, _)| *replica == 3))
            .map(|(_, incarnation)| incarnation)
            .collect()
    };
    c.input(0, query(1));
    assert_eq!(learned(&c), vec![1]);
    c.tick_all(1_000); // past the per-querier answer interval
    assert_eq!(
        step_err(&mut c.replicas[0], query(2)),
        ProtocolError::IncarnationRaisedTooSoon { replica: 3 }
    );
    // The same incarnation again is no new one: answered.
    let actions = step(&mut c.replicas[0], query(1));
    assert!(matches!(
        actions[..],
        [Action::Send {
            to: 3,
            message: Message::RecoveryAnswer(_)
        }]
    ));
    for i in 1..=4 {
        let primary = c.replicas[0].primary();
        c.input(primary, Input::Request(request(i)));
        c.input(primary, Input::Cut);
        c.run();
    }
    assert_eq!(c.replicas[0].stable_checkpoint().0, 4);
    c.tick_all(1_000);
    c.input(0, query(2));
    assert_eq!(learned(&c), vec![1, 2]);
}
