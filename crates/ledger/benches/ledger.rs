//! Ledger benchmarks: hashing, signatures, sealed bodies, durable appends and whole-chain
//! verification.
//!
//! Stores live under cargo's target tmp directory (a real disk, not tmpfs), so "durable" means
//! a real fsync.
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ledger::testkit::TestNet;
use ledger::{Hash, OpenOptions, SignedTx, Store, crypto, merkle};

fn ids(n: u64) -> Vec<Hash> {
    (0..n).map(|i| ledger::sha256(&i.to_le_bytes())).collect()
}

fn bench_merkle(c: &mut Criterion) {
    let leaves = ids(1000);
    let mut g = c.benchmark_group("merkle");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("root of 1000 tx ids", |b| b.iter(|| merkle::root(&leaves)));
    // What each replica computes per pre-prepare and per commit: every entry's bytes hashed,
    // then the Merkle root over those hashes.
    let net = TestNet::new(4);
    let proposal = pbft::Proposal {
        seq: 1,
        view: 0,
        proposer: 0,
        prev: net.genesis.hash(),
        time_ms: net.genesis.created_at_ms() + 1,
        requests: (0..1000).map(|i| net.request(&net.sample_tx(i))).collect(),
    };
    g.bench_function("digest of a 1000-entry proposal", |b| {
        b.iter(|| ledger::proposal_digest(&proposal))
    });
    let tree = merkle::MerkleTree::new(&leaves);
    let proof = tree.prove(617).expect("in range");
    let root = tree.root();
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify one inclusion proof (1000 leaves)", |b| {
        b.iter(|| merkle::verify(&root, &leaves[617], &proof))
    });
    g.finish();
}

/// Whether `signatures` (key, message, signature) verify as one of medchain's batches.
fn batch_verifies(signatures: &[([u8; 32], Vec<u8>, [u8; 64])]) -> bool {
    let mut batch = crypto::SignatureBatch::default();
    for (key, message, signature) in signatures {
        batch.push_bytes(key, message, signature);
    }
    batch.failures().is_empty()
}

/// The same verdict by ed25519-zebra's batch, the rule's reference.
fn zebra_batch_verifies(signatures: &[([u8; 32], Vec<u8>, [u8; 64])]) -> bool {
    let mut batch = ed25519_zebra::batch::Verifier::new();
    for (key, message, signature) in signatures {
        batch.queue((
            ed25519_zebra::VerificationKeyBytes::from(*key),
            ed25519_dalek::Signature::from_bytes(signature),
            &message[..],
        ));
    }
    batch.verify(rand::thread_rng()).is_ok()
}

fn bench_signatures(c: &mut Criterion) {
    let net = TestNet::new(4);
    let txs: Vec<SignedTx> = (0..1000).map(|i| net.sample_tx(i)).collect();
    let keys = net.genesis.keys().to_vec();
    let genesis_hash = net.genesis.hash();
    let mut g = c.benchmark_group("signatures");
    g.throughput(Throughput::Elements(1000));
    // What a signer does per transaction: signing bytes, body hash, one signature.
    g.bench_function("sign 1000 transactions", |b| {
        b.iter(|| {
            txs.iter()
                .map(|t| {
                    SignedTx::sign(
                        t.header.clone(),
                        t.body.clone(),
                        &genesis_hash,
                        &net.keys[0],
                    )
                })
                .collect::<Vec<_>>()
        })
    });
    // The signature rule alone (ZIP-215), per signature: singly, and in one batch as the
    // node checks a pre-prepare's transactions and verification checks a run of blocks.
    // The envelopes' signatures (the enrollments' key proofs left out).
    let signed: Vec<(ed25519_dalek::VerifyingKey, Vec<u8>, [u8; 64])> = txs
        .iter()
        .map(|t| {
            let (key, message, signature) = crypto::tx_signatures(&keys, &genesis_hash, t)
                .expect("known signer")
                .swap_remove(0);
            (
                crypto::verifying_key(&key).expect("a point"),
                message,
                signature,
            )
        })
        .collect();
    g.bench_function("ZIP-215: 1000 signatures one by one", |b| {
        b.iter(|| {
            signed
                .iter()
                .all(|(key, message, signature)| crypto::verify_signature(key, message, signature))
        })
    });
    let signed_bytes: Vec<([u8; 32], Vec<u8>, [u8; 64])> = signed
        .iter()
        .map(|(key, message, signature)| (key.to_bytes(), message.clone(), *signature))
        .collect();
    g.bench_function("ZIP-215: 1000 signatures in one batch", |b| {
        b.iter(|| batch_verifies(&signed_bytes))
    });
    // The same with ed25519-zebra's batch (the rule's reference, which medchain used until the
    // thirty-third session): each signer's key decompressed again in every batch.
    g.bench_function(
        "ZIP-215 by ed25519-zebra: 1000 signatures in one batch",
        |b| b.iter(|| zebra_batch_verifies(&signed_bytes)),
    );
    // 1,000 signers once each (none remembered from another batch: more than the memo holds
    // pass through it between two runs), ours and the reference.
    let strangers: Vec<([u8; 32], Vec<u8>, [u8; 64])> = (0..20_000u32)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            seed[4] = 0x5a;
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            let message = i.to_le_bytes().to_vec();
            let signature = ed25519_dalek::Signer::sign(&key, &message).to_bytes();
            (key.verifying_key().to_bytes(), message, signature)
        })
        .collect();
    let mut turn = 0;
    let mut next_thousand = || {
        turn = (turn + 1) % 20;
        &strangers[turn * 1000..(turn + 1) * 1000]
    };
    g.bench_function(
        "ZIP-215: 1000 signatures of 1000 new signers in one batch",
        |b| b.iter(|| batch_verifies(next_thousand())),
    );
    g.bench_function(
        "ZIP-215 by ed25519-zebra: 1000 signatures of 1000 new signers in one batch",
        |b| b.iter(|| zebra_batch_verifies(next_thousand())),
    );
    // A turn's consensus messages: 1,000 signatures by four validators, one of them bad. The
    // batch fails and is checked again key by key: the bad signer's 250 singly, the others'
    // in three batches (before, all 1,000 were checked singly).
    let validators: Vec<ed25519_dalek::SigningKey> = (0..4u8)
        .map(|i| ed25519_dalek::SigningKey::from_bytes(&[i + 1; 32]))
        .collect();
    let votes: Vec<(ed25519_dalek::VerifyingKey, Vec<u8>, [u8; 64])> = (0..1000u32)
        .map(|i| {
            let key = &validators[i as usize % 4];
            let message = i.to_le_bytes().to_vec();
            let mut signature = ed25519_dalek::Signer::sign(key, &message).to_bytes();
            if i == 501 {
                signature[3] ^= 1;
            }
            (key.verifying_key(), message, signature)
        })
        .collect();
    g.bench_function(
        "ZIP-215: 1000 signatures of 4 validators, one bad, in one batch",
        |b| {
            b.iter(|| {
                let mut batch = crypto::SignatureBatch::default();
                for (key, message, signature) in &votes {
                    batch.push(key, message, signature);
                }
                batch.failures() == [501]
            })
        },
    );
    // For comparison, the rule medchain no longer uses.
    g.bench_function(
        "ed25519-dalek verify_strict: 1000 signatures one by one",
        |b| {
            b.iter(|| {
                signed.iter().all(|(key, message, signature)| {
                    key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature))
                        .is_ok()
                })
            })
        },
    );
    // The edge's check that a signer or new key is not of small order (one decompression
    // each), against the batch's cost per signature above.
    let signer_keys: Vec<[u8; 32]> = signed.iter().map(|(key, ..)| key.to_bytes()).collect();
    g.bench_function("is_strong_key: 1000 signer keys", |b| {
        b.iter(|| signer_keys.iter().all(crypto::is_strong_key))
    });
    let requests: Vec<_> = txs.iter().map(|t| net.request(t)).collect();
    g.bench_function("decode and batch-verify 1000 entries", |b| {
        b.iter(|| {
            crypto::check_entries(&keys, &genesis_hash, &requests)
                .iter()
                .all(Result::is_ok)
        })
    });
    g.finish();
}

fn bench_append(c: &mut Criterion) {
    let net = TestNet::new(4);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let mut store = Store::open(
        &dir.path().join("chain.db"),
        &net.genesis,
        OpenOptions::default(),
    )
    .expect("open");
    let mut next_tx = 0u64;
    let mut make_block = |head: (u64, Hash)| {
        let txs = (next_tx..next_tx + 1000)
            .map(|i| net.sample_tx(i))
            .collect();
        next_tx += 1000;
        net.next_block(head, txs)
    };
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(1000));
    g.sample_size(30);
    g.bench_function("append a 1000-tx block durably (fsync)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let block = make_block(store.head());
                let checked = net.check(&block);
                let started = Instant::now();
                store.append_block(&block, &checked).expect("append");
                total += started.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn bench_verify_chain(c: &mut Criterion) {
    const BLOCKS: u64 = 10_000;
    const TXS: u64 = 4;
    let net = TestNet::new(4);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let path = dir.path().join("chain.db");
    {
        let mut store = Store::open(&path, &net.genesis, OpenOptions::default()).expect("open");
        for block in net.chain(BLOCKS, TXS) {
            net.append(&mut store, &block).expect("append");
        }
    }
    let mut g = c.benchmark_group("verify");
    g.sample_size(10);
    g.throughput(Throughput::Elements(BLOCKS));
    g.bench_function("verify a 10000-block chain (4 tx per block)", |b| {
        b.iter_batched(
            || (),
            |()| ledger::verify::verify_store(&path, &net.genesis, &mut |_| {}).expect("verifies"),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// docs/SECURITY.md, "Confidential records", §12: the cryptography a sealed body adds, per
/// body, for 1,000 record bodies of the sample stream's size: sealing (a fresh key and nonce,
/// the key commitment, XChaCha20-Poly1305 over the padded content), opening (commitment check
/// and decryption) and the edge check of the framing.
fn bench_seal(c: &mut Criterion) {
    let net = TestNet::new(4);
    let genesis_hash = net.genesis.hash();
    let records: Vec<SignedTx> = (0..3000)
        .map(|i| net.sample_tx(i))
        .filter(|t| matches!(t.meta(), ledger::Meta::AddRecord(_)))
        .take(1000)
        .collect();
    let contents: Vec<Vec<u8>> = (0..records.len() as u64)
        .map(|i| ledger::testkit::sample_record(i).to_bytes())
        .collect();
    let sealed: Vec<(ledger::TxHeader, ledger::seal::DataKey, Vec<u8>)> = records
        .iter()
        .zip(&contents)
        .map(|(t, content)| {
            let mut header = t.header.clone();
            let (key, stored) =
                ledger::seal::seal(&genesis_hash, &mut header, content).expect("sealed");
            (header, key, stored)
        })
        .collect();
    let mut g = c.benchmark_group("seal");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("seal 1000 record bodies", |b| {
        b.iter(|| {
            records
                .iter()
                .zip(&contents)
                .map(|(t, content)| {
                    let mut header = t.header.clone();
                    ledger::seal::seal(&genesis_hash, &mut header, content).expect("sealed")
                })
                .collect::<Vec<_>>()
        })
    });
    g.bench_function("open 1000 record bodies", |b| {
        b.iter(|| {
            sealed
                .iter()
                .map(|(header, key, stored)| {
                    ledger::seal::open(&genesis_hash, header, stored, key).expect("opens")
                })
                .collect::<Vec<_>>()
        })
    });
    g.bench_function("check the format of 1000 record bodies", |b| {
        b.iter(|| {
            sealed.iter().all(|(header, _, stored)| {
                ledger::seal::check_body_format(&header.meta, stored).is_ok()
            })
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_merkle,
    bench_signatures,
    bench_seal,
    bench_append,
    bench_verify_chain
);
criterion_main!(benches);
