//! Protocol steps per second of one replica: a backup of a 4-replica cluster processing, per
//! sequence number, the primary's pre-prepare, three prepares (its own looped back and two
//! others), three commits, and every K = 128 sequence numbers the checkpoint messages that make
//! the checkpoint stable (so the log is garbage-collected as in a long run). The digest is
//! SHA-256 over the borsh proposal (the ledger's block hash costs about the same).
use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pbft::*;
use sha2::{Digest as _, Sha256};

const GENESIS: Digest = [7; 32];
const SEQS: u64 = 512;

fn digest(p: &Proposal) -> Digest {
    Sha256::digest(borsh::to_vec(p).expect("borsh")).into()
}

fn input(from: ReplicaId, message: Message) -> Input {
    Input::Message(Signed {
        from,
        message,
        signature: Signature([from as u8; 64]),
    })
}

/// The inputs backup 1 sees for `SEQS` sequence numbers of `batch` requests each.
fn workload(batch: usize) -> Vec<Input> {
    let mut inputs = Vec::new();
    let mut prev = GENESIS;
    for seq in 1..=SEQS {
        let requests = (0..batch)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&seq.to_le_bytes());
                id[8..16].copy_from_slice(&(i as u64).to_le_bytes());
                Request {
                    id,
                    timestamp_ms: seq,
                    payload: Arc::from(vec![0u8; 200]),
                }
            })
            .collect();
        let proposal = Arc::new(Proposal {
            seq,
            view: 0,
            proposer: 0,
            prev,
            time_ms: seq,
            requests,
        });
        let d = digest(&proposal);
        prev = d;
        let vote = Vote {
            view: 0,
            seq,
            digest: d,
        };
        inputs.push(input(
            0,
            Message::PrePrepare(PrePrepare {
                view: 0,
                digest: d,
                proposal,
            }),
        ));
        for from in [1, 2, 3] {
            inputs.push(input(from, Message::Prepare(vote)));
        }
        for from in [0, 1, 2] {
            inputs.push(input(from, Message::Commit(vote)));
        }
        if seq % 128 == 0 {
            for from in [0, 1, 2] {
                inputs.push(input(
                    from,
                    Message::Checkpoint(Checkpoint { seq, digest: d }),
                ));
            }
        }
    }
    inputs
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("backup_normal_case");
    for batch in [1usize, 100] {
        let inputs = workload(batch);
        group.throughput(Throughput::Elements(inputs.len() as u64));
        group.bench_function(format!("batch_{batch}_steps"), |b| {
            b.iter_batched(
                || {
                    let mut cfg = Config::new(1, 4, digest, GENESIS);
                    cfg.max_pending = 1_000_000;
                    (
                        Replica::new(cfg, Restored::genesis(GENESIS, 0, 0)),
                        inputs.clone(),
                    )
                },
                |(mut replica, inputs)| {
                    let mut actions = Vec::with_capacity(16);
                    for i in inputs {
                        actions.clear();
                        replica.step(i, &mut actions).expect("valid input");
                        black_box(&actions);
                    }
                    assert_eq!(replica.last_executed().0, SEQS);
                    replica
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
