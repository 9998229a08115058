//! Red-team tests against issue 8's promises for the ledger. Each one that still breaks is
//! `#[ignore]`d with its one-line reason; run them with
//! `cargo test -p ledger --test red_team -- --ignored`.

use std::sync::Arc;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use ledger::testkit::TestNet;
use ledger::{Block, OpenOptions, SignedTx, Store};
use sha2::{Digest as _, Sha512};

/// A transaction validator `validator` signs with a signature whose R carries the point of
/// order 2, (0, -1): `R' = rB + T`, `s = r + H(R' || A || M) a`, for a nonce `r` derived from
/// `grind`. Only the holder of the key can make it: a Byzantine validator, for a transaction
/// it accepts. `verify_strict` always rejects it (`sB = R' + kA - T`); dalek's batch equation
/// (random linear combination, coefficients derived from the batch's transcript) passes when
/// the coefficient of this signature is even: half of all batches, depending on the *other*
/// signatures in the batch.
fn torsion_signed(net: &TestNet, grind: u64) -> SignedTx {
    // Sample 1 is an enrollment by validator 1, its home.
    let mut tx = net.sample_tx(1);
    let key = &net.keys[1];
    let expanded = Sha512::digest(key.to_bytes());
    let mut a_bytes = [0u8; 32];
    a_bytes.copy_from_slice(&expanded[..32]);
    a_bytes[0] &= 248;
    a_bytes[31] &= 127;
    a_bytes[31] |= 64;
    let a = Scalar::from_bytes_mod_order(a_bytes);
    let public = key.verifying_key().to_bytes();
    assert_eq!((a * ED25519_BASEPOINT_POINT).compress().to_bytes(), public);
    let mut t_bytes = [0xffu8; 32];
    t_bytes[0] = 0xec;
    t_bytes[31] = 0x7f;
    let torsion = CompressedEdwardsY(t_bytes).decompress().expect("(0, -1)");
    assert!(torsion.is_small_order() && (torsion + torsion).is_identity());
    let r = Scalar::from_bytes_mod_order_wide(&Sha512::digest(grind.to_le_bytes()).into());
    let big_r = (r * ED25519_BASEPOINT_POINT + torsion)
        .compress()
        .to_bytes();
    let message = tx.signing_bytes(&net.genesis.hash());
    let mut h = Sha512::new();
    h.update(big_r);
    h.update(public);
    h.update(&message);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    let s = r + k * a;
    tx.signature[..32].copy_from_slice(&big_r);
    tx.signature[32..].copy_from_slice(&s.to_bytes());
    tx
}

fn accepted(net: &TestNet, entries: &[&pbft::Request]) -> Vec<bool> {
    ledger::crypto::check_entries(
        net.genesis.keys(),
        &net.genesis.hash(),
        entries.iter().copied(),
    )
    .iter()
    .map(Result::is_ok)
    .collect()
}

/// Finding 1 promises that an entry's verdict is a pure function of its bytes and the genesis
/// keys (`Invalid` docs, `check_entries` docs "never on the others in the call"; SECURITY.md:
/// "a validator cannot craft a signature that one validator accepts and another rejects").
/// It used to fail: `ed25519_dalek::verify_batch` and `verify_strict` differ on signatures
/// with a torsion component, so a ground X was valid alone and invalid next to some C.
#[test]
fn red_team_entry_verdict_depends_on_its_batch_companions() {
    let net = TestNet::new(4);
    // Whatever the Byzantine validator grinds, X's verdict next to any companion is its
    // verdict alone: one rule (ZIP-215) for single and batched checks.
    for g in 0..16 {
        let x = net.request(&torsion_signed(&net, g));
        let alone = accepted(&net, &[&x])[0];
        for i in 2..18 {
            let mut tx = net.sample_tx(i);
            tx.header.signer = ledger::Signer::Validator { index: 2 };
            let c = net.request(&net.sign_header(tx.header, tx.body, &net.keys[2]));
            assert_eq!(
                accepted(&net, &[&x, &c]),
                [alone, true],
                "X (nonce {g})'s verdict alone and next to companion {i}"
            );
        }
    }
}

/// The consequence for one Byzantine validator within the fault model. It forwards X alone:
/// every edge batch-verifies it alone (valid when, as here, its nonce was ground so that the
/// batch {X} passes), remembers it, and later takes the pre-prepare with X already checked
/// (`Authenticator::known`), so every correct validator commits and applies X (`block_of`
/// takes the edge's verdict). On the next start each one verifies its store, which batches X
/// with other signatures (the certificate's, other entries', across blocks): for about half of
/// the X the batch fails, the fallback `verify_strict` rejects X, the stored verdict
/// ("applied") differs from the derived one, and the correct validator refuses to start;
/// `medchain verify` fails on the honest chain. Whether it fails depends on the batch, so on
/// which 2f+1 commit signatures each validator happened to collect: validators disagree too,
/// and one that fetches the block by state transfer (`check_block`, yet another batch) may
/// store X as rejected while the others applied it.
#[test]
fn red_team_torsion_signature_makes_an_honest_store_fail_verification() {
    let net = TestNet::new(4);
    let mut tried = 0;
    for grind in 0..64 {
        let tx = torsion_signed(&net, grind);
        let x = net.request(&tx);
        if accepted(&net, &[&x]) != [true] {
            continue; // the edge would refuse this one; the attacker grinds on
        }
        tried += 1;
        let proposal = pbft::Proposal {
            seq: 1,
            view: 0,
            proposer: 1,
            prev: net.genesis.hash(),
            time_ms: net.genesis.created_at_ms() + 1,
            requests: vec![x],
        };
        let digest = ledger::proposal_digest(&proposal);
        let mut block = Block::from_committed(pbft::Committed {
            proposal: Arc::new(proposal),
            digest,
            commit_view: 0,
            signatures: vec![],
        })
        .expect("block");
        block.certificate = net.certify(&block.header, 0);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chain.db");
        let mut store = Store::open(&path, &net.genesis, OpenOptions::default()).expect("open");
        // The verdict of every validator whose edge checked X (alone, passed).
        store
            .append_block(&block, &[Ok(tx)])
            .expect("stored as the edge decided");
        drop(store);
        if let Err(e) = Store::open(&path, &net.genesis, OpenOptions::default()) {
            panic!(
                "nonce {grind} (try {tried}): the edge accepted X, the honest store holding it \
                 does not verify on the next start: {e}"
            );
        }
    }
}
