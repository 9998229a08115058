//! What a new-view costs its sender and each backup on a loaded network: 72 full batches
//! (1,000 requests of 600 bytes) prepared above the stable checkpoint (K = 64 and 8 in flight),
//! carried by each of 2f+1 = 3 view-changes, each decoded apart as a primary receives them,
//! and re-issued as the O set. Measures the encoding (written once per batch), the decoding,
//! and the signing bytes of the new-view and of its view-changes (what the edge hashes to check
//! the signatures); prints the sizes against the batches written whole.
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use pbft::*;

const BATCHES: u64 = 72;
const REQUESTS: usize = 1000;
const PAYLOAD_BYTES: usize = 600;

fn batch(seq: SeqNo) -> Arc<Proposal> {
    let requests = (0..REQUESTS)
        .map(|i| {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&seq.to_le_bytes());
            id[8..16].copy_from_slice(&(i as u64).to_le_bytes());
            Request {
                id,
                timestamp_ms: seq,
                payload: Arc::from(vec![seq as u8; PAYLOAD_BYTES]),
            }
        })
        .collect();
    Arc::new(Proposal {
        seq,
        view: 0,
        proposer: 0,
        prev: [0; 32],
        time_ms: seq,
        requests,
    })
}

fn new_view() -> NewView {
    let certificate = |seq: SeqNo| PreparedCertificate {
        pre_prepare: PrePrepare {
            view: 0,
            digest: [seq as u8; 32],
            proposal: batch(seq),
        },
        prepares: (1..3)
            .map(|from| Signed {
                from,
                message: Vote {
                    view: 0,
                    seq,
                    digest: [seq as u8; 32],
                },
                signature: Signature([from as u8; 64]),
            })
            .collect(),
    };
    let view_changes = (1..4)
        .map(|from| Signed {
            from,
            message: ViewChange {
                new_view: 1,
                incarnation: 0,
                checkpoint: Checkpoint {
                    seq: 0,
                    digest: [0; 32],
                },
                checkpoint_proof: Vec::new(),
                prepared: (1..=BATCHES).map(certificate).collect(),
            },
            signature: Signature([from as u8; 64]),
        })
        .collect();
    NewView {
        view: 1,
        incarnation: 0,
        view_changes,
        pre_prepares: (1..=BATCHES)
            .map(|seq| PrePrepare {
                view: 1,
                digest: [seq as u8; 32],
                proposal: batch(seq),
            })
            .collect(),
    }
}

fn bench(c: &mut Criterion) {
    let nv = new_view();
    let bytes = borsh::to_vec(&nv).expect("encodes");
    let whole: usize = nv
        .view_changes
        .iter()
        .map(|vc| borsh::to_vec(&vc.message).expect("encodes").len())
        .chain(
            nv.pre_prepares
                .iter()
                .map(|pp| borsh::to_vec(pp).expect("encodes").len()),
        )
        .sum();
    let signing: usize = nv
        .view_changes
        .iter()
        .map(|vc| {
            Message::ViewChange(vc.message.clone())
                .signing_bytes()
                .len()
        })
        .sum::<usize>()
        + Message::NewView(nv.clone()).signing_bytes().len();
    eprintln!(
        "new-view of {BATCHES} batches: {} bytes written (each batch whole in every \
         view-change and the O set: {whole}); signing bytes of it and its view-changes: {signing}",
        bytes.len()
    );
    let mut group = c.benchmark_group("new_view_72_full_batches");
    group.sample_size(10);
    group.bench_function("encode", |b| {
        b.iter(|| black_box(borsh::to_vec(&nv).expect("encodes")))
    });
    group.bench_function("decode", |b| {
        b.iter(|| black_box(borsh::from_slice::<NewView>(&bytes).expect("decodes")))
    });
    group.bench_function("signing_bytes", |b| {
        b.iter(|| {
            let message = Message::NewView(nv.clone());
            black_box(message.signing_bytes());
            black_box(message.embedded_signatures());
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
