//! §4.3: checkpoints, stable checkpoints, garbage collection and watermarks; state transfer.
use crate::common;

use common::*;
use pbft::*;

/// Drives one sequence number to execution at backup `r` (view 0, primary 0).
fn commit(r: &mut Replica, pp: &PrePrepare) -> Vec<Action> {
    let me = r.id();
    let v = vote(pp.view, pp.proposal.seq, pp.digest);
    let mut actions = step(r, msg(0, Message::PrePrepare(pp.clone())));
    for from in [1, 2, 3] {
        actions.extend(step(r, msg(from, Message::Prepare(v))));
    }
    for from in [0, me, (me % 3) + 1] {
        let mut out = Vec::new();
        let _ = r.step(msg(from, Message::Commit(v)), &mut out);
        actions.extend(out);
    }
    actions
}

#[test]
fn checkpoint_every_k_becomes_stable_with_2f_plus_1_and_collects_garbage() {
    let mut r = replica(1);
    let pps = chain(4);
    for pp in &pps[..3] {
        let actions = commit(&mut r, pp);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::Broadcast(Message::Checkpoint(_))))
        );
    }
    let actions = commit(&mut r, &pps[3]);
    let c = Checkpoint {
        seq: 4,
        digest: pps[3].digest,
    };
    assert_eq!(
        actions.last(),
        Some(&Action::Broadcast(Message::Checkpoint(c)))
    );
    assert_eq!(r.log_stats().slots, 4);
    assert_eq!(step(&mut r, msg(1, Message::Checkpoint(c))), vec![]);
    assert_eq!(step(&mut r, msg(3, Message::Checkpoint(c))), vec![]);
    assert_eq!(
        step(&mut r, msg(0, Message::Checkpoint(c))),
        vec![Action::Persist(Durable::StableCheckpoint {
            checkpoint: c,
            proof: vec![signed(0, c), signed(1, c), signed(3, c)],
        })]
    );
    assert_eq!(r.stable_checkpoint(), (4, pps[3].digest));
    let stats = r.log_stats();
    assert_eq!((stats.slots, stats.prepared_certificates), (0, 0));
    // A checkpoint at or below h that is no news about its sender is stale.
    assert_eq!(
        step_err(&mut r, msg(0, Message::Checkpoint(c))),
        ProtocolError::StaleCheckpoint
    );
}

#[test]
fn watermarks_bound_accepted_sequence_numbers() {
    let mut r = replica(1);
    // L = 8: sequence number 9 is above the high watermark while h = 0.
    let far = pre_prepare(9, 0, [1; 32], vec![]);
    assert_eq!(
        step_err(&mut r, msg(0, Message::PrePrepare(far))),
        ProtocolError::OutsideWatermarks {
            seq: 9,
            low: 0,
            high: 8
        }
    );
    // After a stable checkpoint at 4, the window is (4, 12].
    let pps = chain(4);
    for pp in &pps {
        commit(&mut r, pp);
    }
    let c = Checkpoint {
        seq: 4,
        digest: pps[3].digest,
    };
    for from in [0, 1, 2] {
        step(&mut r, msg(from, Message::Checkpoint(c)));
    }
    let v = vote(0, 3, pps[2].digest);
    assert_eq!(
        step_err(&mut r, msg(2, Message::Prepare(v))),
        ProtocolError::OutsideWatermarks {
            seq: 3,
            low: 4,
            high: 12
        }
    );
}

/// A replica that sees f+1 matching checkpoints beyond its head asks for a state transfer,
/// then resumes from the transferred head.
#[test]
fn state_transfer_after_f_plus_1_checkpoints_ahead() {
    let mut cfg = config(3, 4);
    cfg.retransmit_ticks = 5;
    let mut r = Replica::new(cfg, Restored::genesis(GENESIS, 0, 0));
    let c = Checkpoint {
        seq: 8,
        digest: [8; 32],
    };
    step(&mut r, msg(0, Message::Checkpoint(c)));
    step(&mut r, msg(1, Message::Checkpoint(c)));
    let mut fetched = Vec::new();
    for _ in 0..5 {
        fetched.extend(
            step(&mut r, Input::Tick { now_ms: 0 })
                .into_iter()
                .filter(|a| matches!(a, Action::FetchState { .. })),
        );
    }
    assert_eq!(
        fetched,
        vec![Action::FetchState {
            seq: 8,
            digest: [8; 32],
            peers: vec![0, 1]
        }]
    );
    assert_eq!(
        step(
            &mut r,
            Input::StateTransferred {
                seq: 8,
                digest: [8; 32],
                time_ms: 8,
                request_ids: vec![[1; 32]],
            }
        ),
        vec![Action::Broadcast(Message::Checkpoint(c))]
    );
    assert_eq!(r.last_executed(), (8, [8; 32]));
    // Its own checkpoint makes 2f+1: stable, watermarks advance.
    assert_eq!(
        step(&mut r, msg(3, Message::Checkpoint(c))),
        vec![Action::Persist(Durable::StableCheckpoint {
            checkpoint: c,
            proof: vec![signed(0, c), signed(1, c), signed(3, c)],
        })]
    );
    assert_eq!(r.stable_checkpoint(), (8, [8; 32]));
    // The transferred request counts as executed.
    assert_eq!(
        step_err(&mut r, Input::Request(request(1))),
        ProtocolError::DuplicateRequest
    );
    assert_eq!(
        step_err(
            &mut r,
            Input::StateTransferred {
                seq: 8,
                digest: [8; 32],
                time_ms: 8,
                request_ids: vec![]
            }
        ),
        ProtocolError::StaleStateTransfer { seq: 8 }
    );
}

/// Durable records compact to what a restart needs, and restoring from the compacted list
/// gives the same replica.
#[test]
fn durable_records_compact_below_the_stable_checkpoint() {
    let mut c = Cluster::new(4);
    for i in 1..=14 {
        c.input(u32::from(i % 4), Input::Request(request(i)));
        c.run();
        c.tick_all(3);
    }
    let full = c.durable[2].clone();
    let mut compacted = full.clone();
    Durable::compact(&mut compacted);
    assert!(
        compacted.len() < full.len(),
        "{} -> {}",
        full.len(),
        compacted.len()
    );
    let stable = c.replicas[2].stable_checkpoint().0;
    assert!(stable >= 4);
    assert!(compacted.iter().all(|d| match d {
        Durable::PrePrepare(_) | Durable::Prepared(_) => d.seq().is_some_and(|s| s > stable),
        _ => true,
    }));
    let head = c.replicas[2].last_executed();
    let a = Replica::new(
        config(2, 4),
        Restored {
            last_executed: head,
            durable: full,
            ..Restored::genesis(GENESIS, 0, 0)
        },
    );
    let b = Replica::new(
        config(2, 4),
        Restored {
            last_executed: head,
            durable: compacted,
            ..Restored::genesis(GENESIS, 0, 0)
        },
    );
    assert_eq!(a.stable_checkpoint(), b.stable_checkpoint());
    assert_eq!(a.view(), b.view());
    assert_eq!(a.log_stats(), b.log_stats());
}

/// Finding 6 (§4.2): a correct backup never sends two different prepares for one (view, seq).
/// Replica 2 prepares A at 1 and 2 of view 0; a state transfer then brings the committed B at
/// 1, so its A at 2 can never execute here. When the (equivocating) primary offers B's
/// successor at 2, the backup refuses it: it already prepared A at (0, 2). Only a view change
/// frees that sequence number.
#[test]
fn finding_6_state_transfer_never_leads_to_a_second_prepare() {
    let mut r = replica(2);
    let a1 = pre_prepare(1, 0, GENESIS, vec![request(1)]);
    let a2 = pre_prepare(2, 0, a1.digest, vec![request(2)]);
    step(&mut r, msg(0, Message::PrePrepare(a1)));
    let sent = step(&mut r, msg(0, Message::PrePrepare(a2.clone())));
    assert!(sent.contains(&Action::Broadcast(Message::Prepare(vote(0, 2, a2.digest)))));
    let b1 = pre_prepare(1, 0, GENESIS, vec![request(3)]);
    step(
        &mut r,
        Input::StateTransferred {
            seq: 1,
            digest: b1.digest,
            time_ms: 1,
            request_ids: vec![[3; 32]],
        },
    );
    let b2 = pre_prepare(2, 0, b1.digest, vec![request(4)]);
    assert_eq!(
        step_err(&mut r, msg(0, Message::PrePrepare(b2.clone()))),
        ProtocolError::Conflicting
    );
    // Nor does it commit or execute the abandoned A at 2.
    let v = vote(0, 2, a2.digest);
    let mut out = Vec::new();
    for from in [1, 3] {
        let _ = r.step(msg(from, Message::Prepare(v)), &mut out);
    }
    for from in [0, 1, 3] {
        let _ = r.step(msg(from, Message::Commit(v)), &mut out);
    }
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(r.last_executed(), (1, b1.digest));
    // Its request is waited on again (it did not execute), so the replica will time out.
    assert_eq!(r.pending_len(), 2);
}

/// A view-change from `from` to `view` with the given checkpoint, its proof signed by
/// `proof_from`, and prepared certificates (prepares from replicas 2 and 3 of view 0).
fn view_change_from(
    view: View,
    checkpoint: Checkpoint,
    proof_from: &[ReplicaId],
    prepared: &[PrePrepare],
) -> ViewChange {
    ViewChange {
        new_view: view,
        incarnation: 0,
        checkpoint,
        checkpoint_proof: proof_from.iter().map(|f| signed(*f, checkpoint)).collect(),
        prepared: prepared
            .iter()
            .map(|pp| PreparedCertificate {
                pre_prepare: pp.clone(),
                prepares: [2, 3]
                    .iter()
                    .map(|f| signed(*f, vote(pp.view, pp.proposal.seq, pp.digest)))
                    .collect(),
            })
            .collect(),
    }
}

/// Finding 9: state that cannot occur with at most f faults is reported and recovered from,
/// never a panic. Replica 2 executed A1..A4; 2f+1 (forged, beyond the fault model) replicas
/// then carry it into view 1 from a checkpoint B4 it did not execute and commit B5 on top:
/// it raises a checkpoint alarm, refuses to execute B5 (which does not follow its head; this
/// used to be an assert), raises an alarm for it and asks for a state transfer.
#[test]
fn finding_9_off_chain_commit_raises_alarms_instead_of_panicking() {
    let mut r = replica(2);
    for pp in chain(4) {
        commit(&mut r, &pp);
    }
    let a4 = r.last_executed();
    let b4 = Checkpoint {
        seq: 4,
        digest: [4; 32],
    };
    let b5 = pre_prepare(5, 0, b4.digest, vec![request(5)]);
    let vcs: Vec<Signed<ViewChange>> = [0, 1, 3]
        .iter()
        .map(|f| {
            signed(
                *f,
                view_change_from(1, b4, &[0, 1, 3], std::slice::from_ref(&b5)),
            )
        })
        .collect();
    let o = PrePrepare {
        view: 1,
        digest: b5.digest,
        proposal: b5.proposal.clone(),
    };
    let nv = NewView {
        view: 1,
        incarnation: 0,
        view_changes: vcs,
        pre_prepares: vec![o.clone()],
    };
    let mut actions = step(&mut r, msg(1, Message::NewView(nv)));
    let v = vote(1, 5, b5.digest);
    for from in [0, 3] {
        actions.extend(step(&mut r, msg(from, Message::Prepare(v))));
    }
    for from in [0, 1, 3] {
        actions.extend(step(&mut r, msg(from, Message::Commit(v))));
    }
    let alarms: Vec<&Action> = actions
        .iter()
        .filter(|a| matches!(a, Action::Alarm(_)))
        .collect();
    assert_eq!(
        alarms,
        vec![
            &Action::Alarm(Alarm::CheckpointMismatch { seq: 4 }),
            &Action::Alarm(Alarm::CommittedOffChain { seq: 5, view: 1 }),
        ]
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::Execute(_))));
    assert_eq!(r.last_executed(), a4);
    assert_eq!(r.log_stats().alarms, 2);
    // It fetches what the committers executed.
    let fetched: Vec<Action> = (0..1_000)
        .flat_map(|_| step(&mut r, Input::Tick { now_ms: 0 }))
        .filter(|a| matches!(a, Action::FetchState { .. }))
        .take(1)
        .collect();
    assert_eq!(
        fetched,
        vec![Action::FetchState {
            seq: 5,
            digest: b5.digest,
            peers: vec![0, 1, 3]
        }]
    );
}

/// Finding 9: a new primary whose 2f+1 view-changes yield an O set that conflicts with what it
/// executed does not stall silently: it raises an alarm and moves on to the next view.
#[test]
fn finding_9_conflicting_new_primary_raises_an_alarm_and_moves_on() {
    let mut r = replica(1);
    let a1 = chain(1).remove(0);
    commit(&mut r, &a1);
    assert_eq!(r.last_executed(), (1, a1.digest));
    let b1 = pre_prepare(1, 0, GENESIS, vec![request(9)]);
    let genesis = Checkpoint {
        seq: 0,
        digest: GENESIS,
    };
    let mut actions = Vec::new();
    for from in [0, 2, 3] {
        let vc = view_change_from(1, genesis, &[], std::slice::from_ref(&b1));
        actions.extend(step(&mut r, msg(from, Message::ViewChange(vc))));
    }
    assert!(
        actions.contains(&Action::Alarm(Alarm::NewViewConflictsWithExecuted {
            view: 1,
            seq: 1
        })),
        "{actions:?}"
    );
    assert!(actions.contains(&Action::Persist(Durable::ViewChange(2))));
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Broadcast(Message::NewView(_))))
    );
    assert_eq!(r.view(), 2);
    assert_eq!(r.log_stats().alarms, 1);
}

/// Every replica restarted with its chain past the watermarks and no stable checkpoint in its
/// records (a chain built outside the protocol, or every store put back from a backup whose
/// protocol records are older than its chain): without `executed_checkpoint` nothing moves the
/// window, so nothing commits again; with it, each replica vouches again for the last
/// checkpoint it executed and the chain goes on.
#[test]
fn replicas_restarted_past_the_watermarks_vouch_for_their_last_checkpoint_again() {
    for vouch in [false, true] {
        let mut c = Cluster::new(4);
        // A head that is no checkpoint: the status claim at the head vouches for nothing.
        for i in 1..=14 {
            commit_block(&mut c, i);
        }
        let head = c.replicas[0].last_executed();
        assert_eq!(head.0, 14, "K = 4, L = 8: the head is past one window");
        for id in 0..4u32 {
            let block_at_12 = c.executed[id as usize]
                .iter()
                .find(|b| b.proposal.seq == 12)
                .map(|b| (12, b.digest));
            c.replicas[id as usize] = Replica::new(
                config(id, 4),
                Restored {
                    last_executed: head,
                    executed_checkpoint: block_at_12.filter(|_| vouch),
                    head_time_ms: c.head_time_ms(id),
                    now_ms: c.clocks_ms[id as usize],
                    durable: Vec::new(),
                    recovering: false,
                    nonce: 0,
                    incarnation: 0,
                },
            );
        }
        c.tick_all(1);
        commit_block(&mut c, 15);
        c.tick_all(200);
        let executed = c.executed_ids(0);
        assert_eq!(
            executed.contains(&request(15).id),
            vouch,
            "vouching again: {vouch}; executed {} requests",
            executed.len()
        );
    }
}

/// A stable checkpoint made durable before its block was applied (the node sends and persists
/// what follows an execution before applying the block; pbft's contract, item 4), then a crash:
/// restarted on a ledger one block behind its own stable checkpoint, the replica fetches up to
/// the checkpoint from the replicas whose checkpoints prove it.
#[test]
fn a_stable_checkpoint_ahead_of_the_ledger_is_fetched_after_a_restart() {
    let mut cfg = config(3, 4);
    cfg.retransmit_ticks = 5;
    let stable = Checkpoint {
        seq: 8,
        digest: [8; 32],
    };
    let mut r = Replica::new(
        cfg,
        Restored {
            last_executed: (7, [7; 32]),
            durable: vec![Durable::StableCheckpoint {
                checkpoint: stable,
                proof: [0, 1, 2].iter().map(|f| signed(*f, stable)).collect(),
            }],
            ..Restored::genesis(GENESIS, 0, 0)
        },
    );
    let mut fetched = Vec::new();
    for _ in 0..10 {
        fetched.extend(
            step(&mut r, Input::Tick { now_ms: 0 })
                .into_iter()
                .filter(|a| matches!(a, Action::FetchState { .. })),
        );
    }
    assert_eq!(
        fetched.first(),
        Some(&Action::FetchState {
            seq: 8,
            digest: [8; 32],
            peers: vec![0, 1, 2]
        })
    );
}
