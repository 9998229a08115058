//! Red team s17 against dfcf59b1 (+ dce54719, 622ce3c8): `crypto::validator_key` and
//! `SignatureBatch::failures`. The torsion twin failed on the code under review (fixed since:
//! a validator key must lie in the prime-order subgroup); the batch against single checks is
//! an attack that failed. The cost of forged signatures a message carries is tested where
//! they are checked (`node::verify`, red team s17).

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::Signer as _;
use ledger::crypto::{self, SignatureBatch, SigningKey};
use ledger::genesis::{Genesis, ValidatorInfo};
use sha2::{Digest as _, Sha512};

fn scalar(seed: &[u8]) -> Scalar {
    Scalar::from_bytes_mod_order_wide(&Sha512::digest(seed).into())
}

/// An Ed25519 signature by secret scalar `a` over `message` under the public key bytes `key`
/// (which need not be `aB`): `R = rB`, `s = r + H(R || key || M) a`.
fn sign_raw(a: Scalar, key: &[u8; 32], message: &[u8], nonce: &[u8]) -> [u8; 64] {
    let r = scalar(nonce);
    let big_r = (r * ED25519_BASEPOINT_POINT).compress().to_bytes();
    let mut h = Sha512::new();
    h.update(big_r);
    h.update(key);
    h.update(message);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    let s = r + k * a;
    let mut signature = [0u8; 64];
    signature[..32].copy_from_slice(&big_r);
    signature[32..].copy_from_slice(&s.to_bytes());
    signature
}

fn validator(name: &str, public_key: [u8; 32]) -> ValidatorInfo {
    ValidatorInfo {
        name: name.into(),
        public_key,
    }
}

/// Promise 1's purpose ("a second encoding of the same point would let one key hold two
/// validators' places past the genesis' duplicate check") is not met under ZIP-215's
/// cofactored rule: `A` and `A + T` (T of order 8) are distinct canonical points of large
/// order, so `validator_key` accepts both, yet one secret scalar `a` signs validly under both.
/// One operator thus holds two of four validator places with one key (f = 1 broken by one
/// party), and the twin's signatures fail RFC 8032's cofactorless check (7 in 8 of them), so an
/// outside auditor's verifier and medchain disagree on that validator's certificates.
#[test]
fn a_torsion_twin_of_a_validator_key_is_refused() {
    let a = scalar(b"red team s17: one operator");
    let point = a * ED25519_BASEPOINT_POINT;
    let key = point.compress().to_bytes();
    let twin = (point + EIGHT_TORSION[1]).compress().to_bytes();
    assert_ne!(key, twin);
    // Both are canonical points of large order; only A is a validator key.
    crypto::validator_key(&key).expect("A is a validator key");
    let refused = crypto::validator_key(&twin).expect_err("A + T has a torsion component");
    assert!(refused.to_string().contains("prime-order"), "{refused}");
    // The same scalar signs under both (ZIP-215, the rule medchain verifies by).
    let message = b"a commit vote";
    let twin_key = crypto::verifying_key(&twin).expect("a point");
    let own_key = crypto::verifying_key(&key).expect("a point");
    let under_twin = sign_raw(a, &twin, message, b"nonce 1");
    let under_own = sign_raw(a, &key, message, b"nonce 2");
    assert!(crypto::verify_signature(&own_key, message, &under_own));
    assert!(crypto::verify_signature(&twin_key, message, &under_twin));
    // RFC 8032 cofactorless verification disagrees on the twin's signatures for some message.
    let disagrees = (0u32..64).any(|i| {
        let m = format!("vote {i}");
        let sig = sign_raw(a, &twin, m.as_bytes(), &i.to_le_bytes());
        crypto::verify_signature(&twin_key, m.as_bytes(), &sig)
            && twin_key
                .verify_strict(m.as_bytes(), &ed25519_dalek::Signature::from_bytes(&sig))
                .is_err()
    });
    assert!(
        disagrees,
        "some twin signature passes ZIP-215 and fails RFC 8032"
    );
    // A genesis giving the one operator two of four places.
    let others: Vec<[u8; 32]> = (0..2u8)
        .map(|i| {
            SigningKey::from_bytes(&[i + 1; 32])
                .verifying_key()
                .to_bytes()
        })
        .collect();
    let validators = vec![
        validator("op-a", key),
        validator("op-b", twin),
        validator("honest-1", others[0]),
        validator("honest-2", others[1]),
    ];
    assert!(
        Genesis::new("red-team-s17", 1, validators).is_err(),
        "one secret key holds two validator places: A and A + T (T of order 8) are both accepted"
    );
}

/// Attack that failed (kept as evidence, passes): `failures` against single checks over
/// random mixes of hostile items: good, wrong message, `s + l`, `R` off the curve, a key off
/// the curve, the identity key with the all-zero signature (valid under ZIP-215), a
/// non-canonical encoding of a strong key, mixed-order keys, duplicates, the empty batch.
#[test]
fn failed_attack_failures_agrees_with_single_checks_on_hostile_mixes() {
    use rand::{Rng, SeedableRng};
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    fn add_l(s: &mut [u8]) {
        let mut carry = 0u16;
        for (i, byte) in s.iter_mut().enumerate() {
            let sum = u16::from(*byte) + u16::from(L[i]) + carry;
            *byte = sum as u8;
            carry = sum >> 8;
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let keys: Vec<SigningKey> = (0..3u8)
        .map(|i| SigningKey::from_bytes(&[i + 40; 32]))
        .collect();
    let a = scalar(b"mixed order");
    let mixed = (a * ED25519_BASEPOINT_POINT + EIGHT_TORSION[3])
        .compress()
        .to_bytes();
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let off_curve = (2u8..)
        .map(|y| {
            let mut r = [0u8; 32];
            r[0] = y;
            r
        })
        .find(|r| crypto::verifying_key(r).is_err())
        .expect("some y is on no point");
    // A strong key whose y < 19, in its second encoding y + p.
    let non_canonical = (2..19u8)
        .find_map(|y| {
            let mut c = [0u8; 32];
            c[0] = y;
            crypto::verifying_key(&c).ok().filter(|k| !k.is_weak())?;
            let mut second = [0xffu8; 32];
            second[0] = 0xed + y;
            second[31] = 0x7f;
            Some(second)
        })
        .expect("some y below 19");
    for round in 0..300 {
        let count = rng.gen_range(0..12);
        let mut items: Vec<([u8; 32], Vec<u8>, [u8; 64])> = Vec::new();
        for i in 0..count {
            let message = format!("m{round}-{i}").into_bytes();
            let key = &keys[rng.gen_range(0..keys.len())];
            let good = key.sign(&message).to_bytes();
            let item = match rng.gen_range(0..10) {
                0..=2 => (key.verifying_key().to_bytes(), message, good),
                3 => (key.verifying_key().to_bytes(), b"other".to_vec(), good),
                4 => {
                    let mut s = good;
                    add_l(&mut s[32..]);
                    (key.verifying_key().to_bytes(), message, s)
                }
                5 => {
                    let mut s = good;
                    s[..32].copy_from_slice(&off_curve);
                    (key.verifying_key().to_bytes(), message, s)
                }
                6 => (off_curve, message, good),
                7 => (identity, message, [0u8; 64]),
                8 => (
                    mixed,
                    message.clone(),
                    sign_raw(a, &mixed, &message, &message),
                ),
                _ => match items.last() {
                    Some(last) => last.clone(),
                    None => (non_canonical, message, good),
                },
            };
            items.push(item);
        }
        let single: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, (k, m, s))| !crypto::verify_signature_bytes(k, m, s))
            .map(|(i, _)| i)
            .collect();
        let mut batch = SignatureBatch::default();
        for (k, m, s) in &items {
            batch.push_bytes(k, m, s);
        }
        assert_eq!(batch.failures(), single, "round {round}: {items:?}");
    }
}
