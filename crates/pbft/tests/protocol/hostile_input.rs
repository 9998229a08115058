//! Byzantine and malformed input: every case is an error value, never a panic, and never
//! unbounded memory. Also: a restarted replica never contradicts what it persisted.
use crate::common;

use common::*;
use pbft::*;

#[test]
fn rejects_each_kind_of_bad_message() {
    let mut r = replica(1);
    let pp = pre_prepare(1, 0, GENESIS, vec![request(1)]);
    assert_eq!(
        step_err(&mut r, msg(9, Message::PrePrepare(pp.clone()))),
        ProtocolError::UnknownSender(9)
    );
    assert_eq!(
        step_err(&mut r, msg(2, Message::PrePrepare(pp.clone()))),
        ProtocolError::NotPrimary { from: 2, view: 0 }
    );
    let mut wrong = pp.clone();
    wrong.digest = [0; 32];
    assert_eq!(
        step_err(&mut r, msg(0, Message::PrePrepare(wrong))),
        ProtocolError::WrongDigest
    );
    let unchained = pre_prepare(1, 0, [3; 32], vec![request(1)]);
    assert_eq!(
        step_err(&mut r, msg(0, Message::PrePrepare(unchained))),
        ProtocolError::ChainMismatch
    );
    step(&mut r, msg(0, Message::PrePrepare(pp.clone())));
    assert_eq!(
        step_err(&mut r, msg(0, Message::PrePrepare(pp.clone()))),
        ProtocolError::Duplicate
    );
    // An equivocating primary: a second pre-prepare for the same sequence number.
    let other = pre_prepare(1, 0, GENESIS, vec![request(2)]);
    assert_eq!(
        step_err(&mut r, msg(0, Message::PrePrepare(other))),
        ProtocolError::Conflicting
    );
    assert_eq!(
        step_err(&mut r, msg(0, Message::Prepare(vote(0, 1, pp.digest)))),
        ProtocolError::Malformed("the primary does not prepare")
    );
    step(&mut r, msg(2, Message::Prepare(vote(0, 1, pp.digest))));
    assert_eq!(
        step_err(&mut r, msg(2, Message::Prepare(vote(0, 1, pp.digest)))),
        ProtocolError::Duplicate
    );
    assert_eq!(
        step_err(&mut r, msg(2, Message::Prepare(vote(0, 1, [5; 32])))),
        ProtocolError::Conflicting
    );
    assert_eq!(
        step_err(
            &mut r,
            msg(
                2,
                Message::Checkpoint(Checkpoint {
                    seq: 0,
                    digest: [0; 32]
                })
            )
        ),
        ProtocolError::Malformed("checkpoint at 0")
    );
    let bad_vc = ViewChange {
        new_view: 1,
        incarnation: 0,
        checkpoint: Checkpoint {
            seq: 4,
            digest: [4; 32],
        },
        checkpoint_proof: vec![signed(
            2,
            Checkpoint {
                seq: 4,
                digest: [4; 32],
            },
        )],
        prepared: vec![],
    };
    assert_eq!(
        step_err(&mut r, msg(2, Message::ViewChange(bad_vc))),
        ProtocolError::InvalidViewChange("checkpoint proof too small")
    );
    let forward = Message::Forward(vec![request(7); 3]);
    assert_eq!(
        step_err(&mut r, msg(3, forward)),
        ProtocolError::Malformed("batch larger than max_batch")
    );
}

/// Messages for future views are buffered, but only a bounded number per sender.
#[test]
fn future_view_buffer_is_bounded_per_sender() {
    let mut r = replica(1);
    for seq in 1..=100u64 {
        let mut out = Vec::new();
        let _ = r.step(
            msg(2, Message::Prepare(vote(5, seq % 8 + 1, [seq as u8; 32]))),
            &mut out,
        );
    }
    assert_eq!(r.log_stats().future_buffered, 8);
    // A Byzantine replica alone (1 < f+1) cannot drag the replica into its view.
    assert_eq!(r.view(), 0);
    assert!(!r.in_view_change());
}

/// Stale view and pending bound.
#[test]
fn stale_views_and_pending_bound() {
    let mut r = replica(3);
    step(&mut r, msg(1, Message::ViewChange(view_change(1, vec![]))));
    step(&mut r, msg(2, Message::ViewChange(view_change(1, vec![]))));
    assert_eq!(r.view(), 1);
    let pp = pre_prepare(1, 0, GENESIS, vec![]);
    assert_eq!(
        step_err(&mut r, msg(0, Message::PrePrepare(pp))),
        ProtocolError::StaleView { got: 0, current: 1 }
    );
    for i in 0..16 {
        step(&mut r, Input::Request(request(i)));
    }
    assert_eq!(
        step_err(&mut r, Input::Request(request(200))),
        ProtocolError::PendingFull
    );
}

/// A restarted primary never re-assigns a sequence number; a restarted backup never accepts a
/// second pre-prepare for a sequence number it accepted.
#[test]
fn restart_never_contradicts_persisted_records() {
    let mut p = replica(0);
    step(&mut p, Input::Request(request(1)));
    let durable: Vec<Durable> = step(&mut p, Input::Cut)
        .into_iter()
        .filter_map(|a| match a {
            Action::Persist(d) => Some(d),
            _ => None,
        })
        .collect();
    // Its pre-prepare at 1 is in flight again: a cut must not wait on it here.
    let mut restarted = config(0, 4);
    restarted.cut_in_flight = restarted.max_in_flight;
    let mut p = Replica::new(
        restarted,
        Restored {
            last_executed: (0, GENESIS),
            durable,
            ..Restored::genesis(GENESIS, 0, 0)
        },
    );
    step(&mut p, Input::Request(request(2)));
    let actions = step(&mut p, Input::Cut);
    let Some(Action::Broadcast(Message::PrePrepare(pp))) = actions.get(1) else {
        panic!("{actions:?}")
    };
    assert_eq!(pp.proposal.seq, 2);

    let mut b = replica(2);
    let pp1 = pre_prepare(1, 0, GENESIS, vec![request(1)]);
    let durable: Vec<Durable> = step(&mut b, msg(0, Message::PrePrepare(pp1)))
        .into_iter()
        .filter_map(|a| match a {
            Action::Persist(d) => Some(d),
            _ => None,
        })
        .collect();
    let mut b = Replica::new(
        config(2, 4),
        Restored {
            last_executed: (0, GENESIS),
            durable,
            ..Restored::genesis(GENESIS, 0, 0)
        },
    );
    let other = pre_prepare(1, 0, GENESIS, vec![request(9)]);
    assert_eq!(
        step_err(&mut b, msg(0, Message::PrePrepare(other))),
        ProtocolError::Conflicting
    );
}

/// Finding 5: every batch is bounded where it arrives. With max_batch = 2, a pre-prepare of
/// 1,000 copies of one request is refused (for the current view and for a future one, which
/// would otherwise be buffered), as are batches that repeat a request, forwards that do, and
/// view-changes whose prepared certificates carry such batches.
#[test]
fn finding_5_oversized_and_duplicate_batches_are_refused() {
    let mut r = replica(1);
    let flood = pre_prepare(1, 0, GENESIS, vec![request(1); 1_000]);
    assert_eq!(
        step_err(&mut r, msg(0, Message::PrePrepare(flood))),
        ProtocolError::Malformed("batch larger than max_batch")
    );
    let future = pre_prepare(1, 4, GENESIS, vec![request(1); 1_000]);
    assert_eq!(
        step_err(&mut r, msg(0, Message::PrePrepare(future))),
        ProtocolError::Malformed("batch larger than max_batch")
    );
    let twice = pre_prepare(1, 0, GENESIS, vec![request(1), request(1)]);
    assert_eq!(
        step_err(&mut r, msg(0, Message::PrePrepare(twice.clone()))),
        ProtocolError::Malformed("the same request twice in a batch")
    );
    assert_eq!(
        step_err(
            &mut r,
            msg(3, Message::Forward(vec![request(2), request(2)]))
        ),
        ProtocolError::Malformed("the same request twice in a batch")
    );
    let cert = certificate(&twice, &[2, 3]);
    let vc = view_change(1, vec![cert]);
    assert_eq!(
        step_err(&mut r, msg(2, Message::ViewChange(vc))),
        ProtocolError::InvalidViewChange("prepared certificate batch")
    );
    let stats = r.log_stats();
    assert_eq!(
        (
            stats.slots,
            stats.waiting,
            stats.future_buffered,
            stats.pending
        ),
        (0, 0, 0, 0)
    );
    // A batch within the bounds is still accepted.
    let fine = pre_prepare(1, 0, GENESIS, vec![request(1), request(2)]);
    step(&mut r, msg(0, Message::PrePrepare(fine)));
    assert_eq!(r.log_stats().slots, 1);
}

/// Finding 5 at the edge: the shape of a message is checked without state and before any
/// signature is verified, so a view-change that repeats one prepare thousands of times, or a
/// flooded batch, costs the caller no signature work.
#[test]
fn finding_5_shape_is_checked_before_signatures() {
    let r = replica(1);
    let pp = pre_prepare(1, 0, GENESIS, vec![request(1)]);
    let stuffed = PreparedCertificate {
        pre_prepare: pp.clone(),
        prepares: vec![signed(2, vote(0, 1, pp.digest)); 5_000],
    };
    let vc = view_change(1, vec![stuffed]);
    assert!(r.check_shape(&Message::ViewChange(vc)).is_err());
    let flood = pre_prepare(1, 0, GENESIS, vec![request(1); 1_000]);
    assert!(r.check_shape(&Message::PrePrepare(flood)).is_err());
    let honest = certificate(&pp, &[2, 3]);
    let vc = view_change(1, vec![honest]);
    assert_eq!(r.check_shape(&Message::ViewChange(vc)), Ok(()));
    assert_eq!(r.check_shape(&Message::PrePrepare(pp)), Ok(()));
}

/// `pp` (of view 0, at sequence 1) with prepares from `backups`.
fn certificate(pp: &PrePrepare, backups: &[ReplicaId]) -> PreparedCertificate {
    PreparedCertificate {
        pre_prepare: pp.clone(),
        prepares: backups
            .iter()
            .map(|f| signed(*f, vote(0, 1, pp.digest)))
            .collect(),
    }
}

/// A view-change's signature covers each batch by its digest only (`ViewChange::signing_bytes`):
/// a relayer that swaps a batch under a signed digest keeps the signature valid, and the
/// replica refuses the certificate by the digest, alone or inside a new-view.
#[test]
fn a_batch_swapped_under_a_signed_digest_is_refused() {
    let mut r = replica(1);
    let honest = pre_prepare(1, 0, GENESIS, vec![request(1)]);
    let mut swapped = certificate(&honest, &[2, 3]);
    swapped.pre_prepare.proposal = proposal(1, 0, GENESIS, vec![request(2)]);
    let vc = view_change(1, vec![swapped]);
    assert_eq!(
        vc.signing_bytes(),
        view_change(1, vec![certificate(&honest, &[2, 3])]).signing_bytes(),
        "the signature does not cover the batch itself"
    );
    assert_eq!(
        step_err(&mut r, msg(2, Message::ViewChange(vc.clone()))),
        ProtocolError::InvalidViewChange("prepared certificate digest")
    );
    let nv = NewView {
        view: 1,
        incarnation: 0,
        view_changes: vec![signed(0, vc.clone()), signed(2, vc.clone()), signed(3, vc)],
        pre_prepares: Vec::new(),
    };
    assert_eq!(
        step_err(&mut r, msg(1, Message::NewView(nv))),
        ProtocolError::InvalidNewView("invalid view-change inside")
    );
}
