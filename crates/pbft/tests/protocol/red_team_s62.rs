//! Red team s62: commit 11c23d1b (a new-view written with each batch once; view-change and
//! new-view signatures cover each batch by (view, seq, digest)).
//!
//! Held: no relayed or crafted batch under a signed digest is accepted (view-change, new-view
//! O set, two digests naming one table entry, a querier's own view-change in a recovery
//! answer); the decoder round-trips and refuses hostile bytes without panicking.
//! Found (F1): the shape check, run before any signature, hashes a batch once per view-change
//! that names it: a table entry of the wire is hashed up to n times.
use std::cell::Cell;
use std::sync::Arc;

use crate::common;

use borsh::BorshSerialize;
use common::*;
use pbft::*;

// ----- helpers -------------------------------------------------------------------------------

/// Replica 2 of four (a backup of view 1, whose primary is 1).
fn backup() -> Replica {
    replica(2)
}

fn cert(pp: &PrePrepare, backups: &[ReplicaId]) -> PreparedCertificate {
    PreparedCertificate {
        pre_prepare: pp.clone(),
        prepares: backups
            .iter()
            .map(|f| signed(*f, vote(pp.view, pp.proposal.seq, pp.digest)))
            .collect(),
    }
}

/// An honest prepared chain of `len` pre-prepares of view 0 from genesis.
fn prepared_chain(len: u64) -> Vec<PrePrepare> {
    let mut prev = GENESIS;
    (1..=len)
        .map(|seq| {
            let pp = pre_prepare(seq, 0, prev, vec![request(seq as u8)]);
            prev = pp.digest;
            pp
        })
        .collect()
}

/// The new-view for view 1 from view-changes of replicas 0, 2, 3 each carrying `chain`, and
/// its O set (as the replica computes it: the batches re-issued in view 1).
fn honest_new_view(chain: &[PrePrepare]) -> NewView {
    let certs: Vec<PreparedCertificate> = chain.iter().map(|pp| cert(pp, &[2, 3])).collect();
    NewView {
        view: 1,
        incarnation: 0,
        view_changes: [0, 2, 3]
            .iter()
            .map(|f| signed(*f, view_change(1, certs.clone())))
            .collect(),
        pre_prepares: chain
            .iter()
            .map(|pp| PrePrepare {
                view: 1,
                digest: pp.digest,
                proposal: pp.proposal.clone(),
            })
            .collect(),
    }
}

/// Another batch at `pp`'s sequence number (other requests), claiming `pp`'s digest.
fn swapped(pp: &PrePrepare) -> PrePrepare {
    PrePrepare {
        view: pp.view,
        digest: pp.digest,
        proposal: proposal(
            pp.proposal.seq,
            pp.proposal.view,
            pp.proposal.prev,
            vec![request(200)],
        ),
    }
}

/// A pre-prepare as the wire names it: (view, digest, table entry).
type Named = (View, Digest, u32);
/// A view-change as [`wire`] writes it: its sender and its certificates.
type NamedViewChange = (ReplicaId, Vec<(Named, Vec<Signed<Vote>>)>);

/// A new-view's bytes written by hand, in the layout of `NewViewWire` (so that a test can name
/// table entries as no honest writer would).
fn wire(
    view: View,
    batches: &[Arc<Proposal>],
    view_changes: &[NamedViewChange],
    pre_prepares: &[Named],
) -> Vec<u8> {
    let mut out = Vec::new();
    let w = &mut out;
    view.serialize(w).unwrap();
    0u64.serialize(w).unwrap(); // incarnation
    (batches.len() as u32).serialize(w).unwrap();
    for b in batches {
        (**b).serialize(w).unwrap();
    }
    (view_changes.len() as u32).serialize(w).unwrap();
    for (from, prepared) in view_changes {
        from.serialize(w).unwrap();
        view.serialize(w).unwrap(); // new_view
        0u64.serialize(w).unwrap(); // incarnation
        Checkpoint {
            seq: 0,
            digest: GENESIS,
        }
        .serialize(w)
        .unwrap();
        Vec::<Signed<Checkpoint>>::new().serialize(w).unwrap();
        (prepared.len() as u32).serialize(w).unwrap();
        for (named, prepares) in prepared {
            named.serialize(w).unwrap();
            prepares.serialize(w).unwrap();
        }
        sig(*from).serialize(w).unwrap();
    }
    pre_prepares.to_vec().serialize(w).unwrap();
    out
}

fn decode(bytes: &[u8]) -> Result<NewView, std::io::Error> {
    borsh::from_slice::<NewView>(bytes)
}

/// Whether no two different batches of `nv` claim one digest (as in every valid new-view).
fn one_batch_per_digest(nv: &NewView) -> bool {
    let mut seen: std::collections::HashMap<Digest, &Proposal> = Default::default();
    let all = nv
        .view_changes
        .iter()
        .flat_map(|vc| vc.message.prepared.iter().map(|c| &c.pre_prepare))
        .chain(&nv.pre_prepares);
    for pp in all {
        if **seen.entry(pp.digest).or_insert(&pp.proposal) != *pp.proposal {
            return false;
        }
    }
    true
}

/// `nv` reads back as written (true), or, if it holds two batches under one digest, is
/// refused (false).
fn roundtrips(nv: &NewView) -> bool {
    let bytes = borsh::to_vec(nv).expect("encodes");
    if !one_batch_per_digest(nv) {
        assert!(decode(&bytes).is_err(), "two batches under one digest");
        return false;
    }
    let back = decode(&bytes).expect("decodes what was written");
    assert_eq!(&back, nv);
    // Written again, the same bytes (the encoding of what was read is canonical).
    assert_eq!(borsh::to_vec(&back).expect("encodes"), bytes);
    assert_eq!(
        Message::NewView(back).signing_bytes(),
        Message::NewView(nv.clone()).signing_bytes()
    );
    true
}

/// A tiny deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

// ----- held: the signatures bind batches through the digest check ----------------------------

/// The layout written by hand is the encoder's (so the crafted cases below are meaningful).
#[test]
fn s62_hand_written_layout_is_the_encoders() {
    let chain = prepared_chain(2);
    let nv = honest_new_view(&chain);
    let batches: Vec<Arc<Proposal>> = chain.iter().map(|pp| pp.proposal.clone()).collect();
    let prepares = |pp: &PrePrepare| cert(pp, &[2, 3]).prepares;
    let vcs: Vec<NamedViewChange> = [0, 2, 3]
        .iter()
        .map(|f| {
            (
                *f,
                chain
                    .iter()
                    .enumerate()
                    .map(|(i, pp)| ((0, pp.digest, i as u32), prepares(pp)))
                    .collect(),
            )
        })
        .collect();
    let o: Vec<Named> = chain
        .iter()
        .enumerate()
        .map(|(i, pp)| (1, pp.digest, i as u32))
        .collect();
    assert_eq!(wire(1, &batches, &vcs, &o), borsh::to_vec(&nv).unwrap());
}

/// Baseline: the honest new-view is accepted by a backup, read off the wire.
#[test]
fn s62_honest_new_view_off_the_wire_is_accepted() {
    let chain = prepared_chain(3);
    let nv = decode(&borsh::to_vec(&honest_new_view(&chain)).unwrap()).unwrap();
    let mut r = backup();
    assert_eq!(r.check_shape(&Message::NewView(nv.clone())), Ok(()));
    step(&mut r, msg(1, Message::NewView(nv)));
    assert_eq!(r.view(), 1);
}

/// A relayer (the new primary) swaps a batch of the O set under its signed digest: the
/// new-view's signing bytes are unchanged, and the backup refuses it, since it compares the O
/// set it computes from the view-changes, batches included.
#[test]
fn s62_o_set_batch_swapped_under_its_digest_is_refused() {
    let chain = prepared_chain(3);
    let honest = honest_new_view(&chain);
    let mut nv = honest.clone();
    nv.pre_prepares[1].proposal = swapped(&chain[1]).proposal;
    assert_eq!(
        Message::NewView(nv.clone()).signing_bytes(),
        Message::NewView(honest).signing_bytes(),
        "the new-view's signature does not cover the O set's batches"
    );
    // Off the wire it is refused unread (two batches under one digest); handed over whole,
    // by the O set's comparison.
    assert!(decode(&borsh::to_vec(&nv).unwrap()).is_err());
    let mut r = backup();
    assert_eq!(
        step_err(&mut r, msg(1, Message::NewView(nv))),
        ProtocolError::InvalidNewView("O set does not match the view-changes")
    );
    assert_eq!(r.view(), 0);
}

/// One view-change of the three carries a swapped batch under the honest digest (its signing
/// bytes unchanged): refused by the digest, inside a new-view, even when its table entry is the
/// last written.
#[test]
fn s62_one_view_change_with_a_swapped_batch_inside_a_new_view_is_refused() {
    let chain = prepared_chain(3);
    let honest = honest_new_view(&chain);
    for which in 0..3 {
        let mut nv = honest.clone();
        let before = nv.view_changes[which].message.signing_bytes();
        nv.view_changes[which].message.prepared[2].pre_prepare = swapped(&chain[2]);
        assert_eq!(nv.view_changes[which].message.signing_bytes(), before);
        assert!(decode(&borsh::to_vec(&nv).unwrap()).is_err());
        let mut r = backup();
        assert_eq!(
            step_err(&mut r, msg(1, Message::NewView(nv))),
            ProtocolError::InvalidNewView("invalid view-change inside"),
            "view-change {which}"
        );
    }
}

/// Crafted bytes: a certificate names table entry 0 under the right digest and the O set names
/// the same entry under another digest (or the reverse). Decoding refuses both; built in
/// memory, the replica refuses both.
#[test]
fn s62_one_table_entry_under_two_digests_is_refused() {
    let chain = prepared_chain(1);
    let pp = &chain[0];
    let batches = vec![pp.proposal.clone()];
    let prepares = cert(pp, &[2, 3]).prepares;
    let vcs = |d: Digest| -> Vec<NamedViewChange> {
        [0, 2, 3]
            .iter()
            .map(|f| {
                let prepares = prepares
                    .iter()
                    .map(|p| signed(p.from, vote(0, 1, d)))
                    .collect();
                (*f, vec![((0, d, 0), prepares)])
            })
            .collect()
    };
    let other = [0xee; 32];
    // The O set names the right batch under another digest, or the certificates do: the
    // decoder refuses both (one entry, one digest: F2's fix).
    let bytes = wire(1, &batches, &vcs(pp.digest), &[(1, other, 0)]);
    assert!(decode(&bytes).is_err());
    let bytes = wire(1, &batches, &vcs(other), &[(1, pp.digest, 0)]);
    assert!(decode(&bytes).is_err());
    // Built in memory, sharing the batch all the same, the replica refuses them too.
    let mut nv = honest_new_view(&chain);
    nv.pre_prepares[0].digest = other;
    assert_eq!(
        step_err(&mut backup(), msg(1, Message::NewView(nv))),
        ProtocolError::InvalidNewView("O set does not match the view-changes")
    );
    let mut nv = honest_new_view(&chain);
    for vc in &mut nv.view_changes {
        vc.message.prepared[0].pre_prepare.digest = other;
        for p in &mut vc.message.prepared[0].prepares {
            p.message.digest = other;
        }
    }
    assert_eq!(
        step_err(&mut backup(), msg(1, Message::NewView(nv))),
        ProtocolError::InvalidNewView("invalid view-change inside")
    );
}

/// A recovery answer carries the querier's own view-change, signed by it: an answerer that
/// swaps a batch in it under the signed digest keeps the signature valid; the querier refuses
/// the answer (the view-change is checked whole, digest included), and takes only its view.
#[test]
fn s62_recovery_answer_with_a_swapped_batch_in_the_queriers_view_change_is_refused() {
    let chain = prepared_chain(2);
    let honest = view_change(4, chain.iter().map(|pp| cert(pp, &[2, 3])).collect());
    let mut forged = honest.clone();
    forged.prepared[0].pre_prepare = swapped(&chain[0]);
    assert_eq!(forged.signing_bytes(), honest.signing_bytes());
    refused_then_taken(
        ViewMessage::ViewChange(forged),
        ViewMessage::ViewChange(honest),
    );
}

/// A querier refuses an answer that carries `forged` as its own message, and takes one that
/// carries `honest`.
fn refused_then_taken(forged: ViewMessage, honest: ViewMessage) {
    let answer = |message: ViewMessage| RecoveryAnswer {
        nonce: 9,
        querier: 3,
        last_executed: 0,
        executed_proof: Vec::new(),
        querier_message: Some(Box::new(Signed {
            from: 3,
            message,
            signature: sig(3),
        })),
        lives: Vec::new(),
    };
    let mut q = querier();
    assert_eq!(
        step_err(&mut q, msg(0, Message::RecoveryAnswer(answer(forged)))),
        ProtocolError::InvalidRecoveryAnswer(
            "the querier's message is not a valid view-change or new-view"
        )
    );
    step(&mut q, msg(0, Message::RecoveryAnswer(answer(honest))));
}

/// The same for the querier's own new-view (it is the primary of view 7).
#[test]
fn s62_recovery_answer_with_a_swapped_batch_in_the_queriers_new_view_is_refused() {
    let chain = prepared_chain(2);
    let certs: Vec<PreparedCertificate> = chain.iter().map(|pp| cert(pp, &[2, 3])).collect();
    let honest = NewView {
        view: 7,
        incarnation: 0,
        view_changes: [0, 2, 3]
            .iter()
            .map(|f| signed(*f, view_change(7, certs.clone())))
            .collect(),
        pre_prepares: chain
            .iter()
            .map(|pp| PrePrepare {
                view: 7,
                digest: pp.digest,
                proposal: pp.proposal.clone(),
            })
            .collect(),
    };
    let mut forged = honest.clone();
    forged.view_changes[1].message.prepared[1].pre_prepare = swapped(&chain[1]);
    assert_eq!(forged.signing_bytes(), honest.signing_bytes());
    refused_then_taken(ViewMessage::NewView(forged), ViewMessage::NewView(honest));
}

/// A new-view the primary restores from its own record (`Durable::NewView`, in the new
/// encoding) is the one it wrote, and its O set batches still share the view-changes'.
#[test]
fn s62_durable_new_view_roundtrips() {
    let chain = prepared_chain(3);
    let nv = honest_new_view(&chain);
    let record = Durable::NewView(nv.clone());
    let bytes = borsh::to_vec(&record).unwrap();
    assert_eq!(
        &bytes[..1],
        &[5u8],
        "tag 5, as migration v8 expects inside Record::Whole"
    );
    let back: Durable = borsh::from_slice(&bytes).unwrap();
    assert_eq!(back, record);
}

// ----- held: the decoder ---------------------------------------------------------------------

/// Adversarial shapes round-trip: equal batches in distinct allocations, one batch under two
/// digests, two batches under one digest, an O set batch in no view-change, empty parts.
#[test]
fn s62_adversarial_new_views_roundtrip() {
    let chain = prepared_chain(3);
    let honest = honest_new_view(&chain);
    assert!(roundtrips(&honest));
    assert!(roundtrips(&NewView {
        view: 1,
        incarnation: 3,
        view_changes: Vec::new(),
        pre_prepares: Vec::new(),
    }));
    // Equal batches, distinct allocations.
    let mut apart = honest.clone();
    apart.pre_prepares[0].proposal = Arc::new((*chain[0].proposal).clone());
    assert!(roundtrips(&apart));
    // One batch under two digests.
    let mut two_digests = honest.clone();
    two_digests.view_changes[1].message.prepared[0]
        .pre_prepare
        .digest = [1; 32];
    assert!(roundtrips(&two_digests));
    // Two batches under one digest, in one view-change and the O set.
    let mut one_digest = honest.clone();
    one_digest.view_changes[2].message.prepared[1].pre_prepare = swapped(&chain[1]);
    one_digest.pre_prepares[2] = swapped(&chain[2]);
    assert!(!roundtrips(&one_digest));
    // O set batches in no view-change, and view-changes with nothing prepared.
    let mut foreign = honest.clone();
    for vc in &mut foreign.view_changes {
        vc.message.prepared.clear();
    }
    assert!(roundtrips(&foreign));
    // A batch under the same digest, same contents, but another pre-prepare view.
    let mut views = honest.clone();
    views.view_changes[0].message.prepared[0].pre_prepare.view = 9;
    assert!(roundtrips(&views));
}

/// Random new-views over a small pool of batches and digests (so that sharing, collisions and
/// mismatches are frequent) round-trip exactly and encode canonically.
#[test]
fn s62_random_new_views_roundtrip() {
    let mut rng = Rng(0x5eed_0062);
    let pool: Vec<Arc<Proposal>> = (0..6u8)
        .map(|i| proposal(u64::from(i % 3) + 1, 0, [i; 32], vec![request(i)]))
        .collect();
    let digests: Vec<Digest> = (0..4u8).map(|i| [i; 32]).collect();
    let pick = |rng: &mut Rng| {
        let b = &pool[rng.below(pool.len() as u64) as usize];
        // Half the time a fresh allocation of an equal batch.
        let proposal = if rng.below(2) == 0 {
            b.clone()
        } else {
            Arc::new((**b).clone())
        };
        PrePrepare {
            view: rng.below(3),
            digest: digests[rng.below(digests.len() as u64) as usize],
            proposal,
        }
    };
    let mut read_back = 0;
    for _ in 0..2_000 {
        let nv = NewView {
            view: rng.below(5),
            incarnation: rng.below(3),
            view_changes: (0..rng.below(5))
                .map(|f| Signed {
                    from: f as ReplicaId,
                    message: ViewChange {
                        new_view: rng.below(5),
                        incarnation: 0,
                        checkpoint: Checkpoint {
                            seq: 0,
                            digest: GENESIS,
                        },
                        checkpoint_proof: Vec::new(),
                        prepared: (0..rng.below(4))
                            .map(|_| PreparedCertificate {
                                pre_prepare: pick(&mut rng),
                                prepares: vec![signed(2, vote(0, 1, [0; 32]))],
                            })
                            .collect(),
                    },
                    signature: sig(f as ReplicaId),
                })
                .collect(),
            pre_prepares: (0..rng.below(4)).map(|_| pick(&mut rng)).collect(),
        };
        read_back += usize::from(roundtrips(&nv));
    }
    assert!(read_back > 200, "{read_back} of 2,000 read back");
}

/// Hostile bytes: huge counts, names past the table, an entry nothing names, truncation and
/// random corruption of a valid encoding are errors, never a panic or a huge allocation; what
/// a corruption decodes to is itself a value that round-trips.
#[test]
fn s62_hostile_bytes_are_refused_without_panic() {
    let chain = prepared_chain(2);
    let batches: Vec<Arc<Proposal>> = chain.iter().map(|pp| pp.proposal.clone()).collect();
    // A name past the table / past the next entry / u32::MAX.
    for name in [1u32, 2, 7, u32::MAX] {
        let bytes = wire(
            1,
            &batches[..1],
            &[],
            &[(1, chain[0].digest, 0), (1, [0; 32], name)],
        );
        assert!(decode(&bytes).is_err(), "name {name}");
    }
    // An entry nothing names.
    assert!(decode(&wire(1, &batches, &[], &[(1, chain[0].digest, 0)])).is_err());
    // Names in order (0, 0, 1) are fine; 1 before 0 is not.
    assert!(
        decode(&wire(
            1,
            &batches,
            &[],
            &[(1, [0; 32], 0), (1, [0; 32], 0), (1, [1; 32], 1)]
        ))
        .is_ok()
    );
    assert!(decode(&wire(1, &batches, &[], &[(1, [0; 32], 1), (1, [1; 32], 0)])).is_err());
    // A second entry under a digest already named is refused, equal or not.
    assert!(decode(&wire(1, &batches, &[], &[(1, [0; 32], 0), (1, [0; 32], 1)])).is_err());
    // Huge counts in every length prefix: errors without allocating them.
    let valid = borsh::to_vec(&honest_new_view(&chain)).unwrap();
    let prefixes = [16usize]; // the batch table's count, after view and incarnation
    for at in prefixes {
        let mut bytes = valid.clone();
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&bytes).is_err());
    }
    // Truncations and random corruption.
    for len in 0..valid.len() {
        assert!(decode(&valid[..len]).is_err(), "truncated to {len}");
    }
    let mut rng = Rng(62);
    let mut decoded = 0;
    for _ in 0..20_000 {
        let mut bytes = valid.clone();
        for _ in 0..=rng.below(3) {
            let i = rng.below(bytes.len() as u64) as usize;
            bytes[i] = match rng.below(3) {
                0 => rng.next() as u8,
                1 => 0xff,
                _ => bytes[i].wrapping_add(1),
            };
        }
        if let Ok(nv) = decode(&bytes) {
            decoded += 1;
            assert!(roundtrips(&nv));
            // Whatever decodes, the shape check judges without panicking.
            let _ = backup().check_shape(&Message::NewView(nv));
        }
    }
    assert!(decoded > 0);
}

/// Two different byte strings decoded to one new-view (a batch written twice, equal, under one
/// digest). Harmless in the replica (nothing is keyed by a new-view's wire bytes; signatures
/// cover `signing_bytes`), but the fuzz target's round trip failed (F2): the decoder is
/// canonical now and refuses the doubled table.
#[test]
fn s62_a_non_canonical_encoding_decodes_to_the_same_new_view() {
    let chain = prepared_chain(1);
    let pp = &chain[0];
    let canonical = wire(
        1,
        std::slice::from_ref(&pp.proposal),
        &[],
        &[(1, pp.digest, 0), (1, pp.digest, 0)],
    );
    let doubled = wire(
        1,
        &[pp.proposal.clone(), Arc::new((*pp.proposal).clone())],
        &[],
        &[(1, pp.digest, 0), (1, pp.digest, 1)],
    );
    assert_ne!(canonical, doubled);
    let a = decode(&canonical).unwrap();
    assert_eq!(borsh::to_vec(&a).unwrap(), canonical);
    assert!(
        decode(&doubled).is_err(),
        "the doubled table is refused (F2's fix)"
    );
}

// ----- F1: the shape check hashes a shared batch once per view-change -------------------------

thread_local! {
    static HASHED: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// The test configuration's digest, counting calls and the payload bytes hashed.
fn counting_digest(p: &Proposal) -> Digest {
    let bytes: u64 = p.requests.iter().map(|r| r.payload.len() as u64).sum();
    HASHED.with(|h| {
        let (calls, total) = h.get();
        h.set((calls + 1, total + bytes));
    });
    digest(p)
}

fn counting_replica(id: ReplicaId) -> Replica {
    let mut cfg = config(id, 4);
    cfg.digest = counting_digest;
    Replica::new(cfg, Restored::genesis(GENESIS, 0, 0))
}

/// F1. A new-view whose 4 view-changes each name the same 8 batches of 2 × 64 KiB: on the wire
/// each batch once (about 1 MiB), but `check_shape`, which the node runs on every new-view
/// frame before verifying any signature (`Runtime::on_frame`, and from a validator that is not
/// the view's primary too: `uses_contents` is asked only after), hashes each batch once per
/// view-change that names it: 4 MiB here, n times the frame in general (up to
/// n × `MAX_VIEW_CHANGE_FRAME_BYTES` per frame; before 11c23d1b the frame held each copy it
/// made the receiver hash). `step` hashes them all again.
#[test]
fn s62_f1_shape_check_hashes_each_shared_batch_once_per_view_change() {
    let big = |seq: u64, prev: Digest| {
        let requests = (0..2u8)
            .map(|i| Request {
                id: [seq as u8 * 2 + i; 32],
                timestamp_ms: 1,
                payload: Arc::from(vec![i; 64 * 1024]),
            })
            .collect();
        let proposal = proposal(seq, 0, prev, requests);
        PrePrepare {
            view: 0,
            digest: digest(&proposal),
            proposal,
        }
    };
    let mut chain = Vec::new();
    let mut prev = GENESIS;
    for seq in 1..=8 {
        let pp = big(seq, prev);
        prev = pp.digest;
        chain.push(pp);
    }
    // All n = 4 view-changes (a new-view may carry up to n), each naming the 8 batches.
    let mut nv = honest_new_view(&chain);
    let mut fourth = nv.view_changes[0].clone();
    fourth.from = 1;
    nv.view_changes.push(fourth);
    let bytes = borsh::to_vec(&nv).unwrap();
    let nv = decode(&bytes).unwrap();
    let r = counting_replica(2);
    HASHED.with(|h| h.set((0, 0)));
    assert_eq!(r.check_shape(&Message::NewView(nv)), Ok(()));
    let (calls, hashed) = HASHED.with(Cell::get);
    eprintln!(
        "wire {} bytes; check_shape: {calls} digests over {hashed} payload bytes ({:.2} x the frame)",
        bytes.len(),
        hashed as f64 / bytes.len() as f64
    );
    assert!(
        calls <= chain.len() as u64,
        "check_shape computed {calls} digests for {} distinct batches: {hashed} bytes hashed \
         for a {}-byte frame",
        chain.len(),
        bytes.len()
    );
}

// ----- F2: the new-view encoding is not canonical ---------------------------------------------

/// F2. `pbft::fuzzing::check_messages` (the `pbft_messages` fuzz target) asserts that every
/// message decoded re-encodes to its own bytes ("borsh is canonical"). A new-view whose table
/// holds one batch twice (equal, one digest), or one entry named under two digests, decodes
/// and re-encodes to other bytes: the target panics on a 400-byte input.
#[test]
fn s62_f2_fuzz_target_accepts_a_non_canonical_new_view() {
    let chain = prepared_chain(1);
    let pp = &chain[0];
    let doubled = wire(
        1,
        &[pp.proposal.clone(), Arc::new((*pp.proposal).clone())],
        &[],
        &[(1, pp.digest, 0), (1, pp.digest, 1)],
    );
    let shared = wire(
        1,
        std::slice::from_ref(&pp.proposal),
        &[],
        &[(1, pp.digest, 0), (1, [9; 32], 0)],
    );
    for nv_bytes in [doubled, shared] {
        // Signed<Message>: sender, the message's variant tag, the new-view, the signature.
        let empty = Message::NewView(NewView {
            view: 0,
            incarnation: 0,
            view_changes: Vec::new(),
            pre_prepares: Vec::new(),
        });
        let tag = borsh::to_vec(&empty).unwrap()[0];
        let mut input = Vec::new();
        input.extend_from_slice(&1u32.to_le_bytes());
        input.push(tag);
        input.extend_from_slice(&nv_bytes);
        input.extend_from_slice(&[1; 64]);
        // Before the fix it decoded, to a message written otherwise; now it is refused.
        assert!(borsh::from_slice::<Signed<Message>>(&input).is_err());
        let outcome = std::panic::catch_unwind(|| pbft::fuzzing::check_messages(&input));
        assert!(
            outcome.is_ok(),
            "the pbft_messages fuzz target panics on a {}-byte non-canonical new-view",
            input.len()
        );
    }
}

// ----- note: a validator of before 11c23d1b and one of after ----------------------------------

/// What a view-change's sender signed before 11c23d1b (its tag, 5, then the whole view-change)
/// and what is checked now agree only for a view-change with nothing prepared: a validator of
/// each release reads the other's view-changes with certificates as forged (and its new-views
/// not at all). Taken: the channel's prologue is "medchain validator channel v2" since, so the
/// two releases fail the handshake rather than connect.
#[test]
fn s62_note_old_and_new_view_change_signing_bytes() {
    let old = |vc: &ViewChange| {
        let mut bytes = vec![5u8];
        bytes.extend_from_slice(&borsh::to_vec(vc).unwrap());
        bytes
    };
    let empty = view_change(1, Vec::new());
    assert_eq!(empty.signing_bytes(), old(&empty));
    let chain = prepared_chain(1);
    let with_cert = view_change(1, vec![cert(&chain[0], &[2, 3])]);
    assert_ne!(with_cert.signing_bytes(), old(&with_cert));
}
