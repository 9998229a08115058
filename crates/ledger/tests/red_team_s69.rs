//! Red team s69 against 0952a578 (no finding: every test here passes on it): `crypto`'s own ZIP-215 checks on curve25519-dalek (single
//! `Queued::verifies`, batch `verifies_together`, `SignatureBatch::failures`) and the memo of
//! strong keys' points (`strong_point`, since `decoded_key`), compared with ed25519-zebra (the rule's reference) and
//! with ed25519-dalek's `is_weak` (the old strength rule). Every test here asserts verdicts only;
//! the cost measurements print their times and assert nothing about them.

use std::time::Instant;

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::Signer as _;
use ledger::crypto::{SignatureBatch, SigningKey, is_strong_key, verify_signature_bytes};
use proptest::prelude::*;
use rand::{RngCore, SeedableRng};
use sha2::{Digest as _, Sha512};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// ZIP-215's verdict as the reference gives it (the check medchain used before 0952a578).
fn zebra(key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    ed25519_zebra::VerificationKey::try_from(ed25519_zebra::VerificationKeyBytes::from(*key))
        .and_then(|vk| vk.verify(&ed25519_zebra::Signature::from_bytes(signature), message))
        .is_ok()
}

/// The old strength rule.
fn dalek_strong(key: &[u8; 32]) -> bool {
    ed25519_dalek::VerifyingKey::from_bytes(key).is_ok_and(|k| !k.is_weak())
}

fn scalar(seed: &[u8]) -> Scalar {
    Scalar::from_bytes_mod_order_wide(&Sha512::digest(seed).into())
}

fn challenge(r: &[u8; 32], key: &[u8; 32], message: &[u8]) -> Scalar {
    Scalar::from_hash(
        Sha512::new()
            .chain_update(r)
            .chain_update(key)
            .chain_update(message),
    )
}

/// A signature by secret scalar `a` under key bytes `key` (which need not encode `aB`), with
/// nonce point `R = rB + r_extra` and `s = r + k a + s_extra`.
fn sign_raw(
    a: Scalar,
    key: &[u8; 32],
    message: &[u8],
    nonce: &[u8],
    r_extra: EdwardsPoint,
    s_extra: Scalar,
) -> [u8; 64] {
    let r = scalar(nonce);
    let big_r = (r * ED25519_BASEPOINT_POINT + r_extra)
        .compress()
        .to_bytes();
    let k = challenge(&big_r, key, message);
    let s = r + k * a + s_extra;
    let mut signature = [0u8; 64];
    signature[..32].copy_from_slice(&big_r);
    signature[32..].copy_from_slice(&s.to_bytes());
    signature
}

const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// `s + l` (the same scalar, a non-canonical encoding).
/// A case signed by `secret` under `key` over `message` with `sign_raw`'s shifts of `R` and `s`.
fn forged(
    secret: Scalar,
    key: [u8; 32],
    message: &[u8],
    nonce: &[u8],
    r_shift: EdwardsPoint,
    s_shift: Scalar,
) -> Case {
    Case {
        key,
        message: message.to_vec(),
        signature: sign_raw(secret, &key, message, nonce, r_shift, s_shift),
    }
}

/// How long `check` took (printed by the cost tests, never asserted).
fn timed(check: impl FnOnce()) -> std::time::Duration {
    let started = Instant::now();
    check();
    started.elapsed()
}

fn s_plus_l(mut signature: [u8; 64]) -> [u8; 64] {
    let mut carry = 0u16;
    for (byte, l) in signature[32..].iter_mut().zip(L) {
        let sum = u16::from(*byte) + u16::from(l) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    signature
}

/// The `y + p` encoding of a point whose canonical encoding has `y < 19`, if it has one.
fn plus_p(encoding: &[u8; 32]) -> Option<[u8; 32]> {
    let sign = encoding[31] & 0x80;
    let mut y = *encoding;
    y[31] &= 0x7f;
    if y[1..].iter().any(|b| *b != 0) || y[0] >= 19 {
        return None;
    }
    let mut out = [0xff; 32];
    out[0] = 0xed + y[0];
    out[31] = 0x7f | sign;
    Some(out)
}

/// Encodings at the edges: every `y` below 40 and from `p - 5` to `2^255 - 1`, either sign;
/// the eight small-order points; all-ones; all-zero.
fn edge_encodings() -> Vec<[u8; 32]> {
    let mut out: Vec<[u8; 32]> = EIGHT_TORSION.iter().map(|t| t.compress().0).collect();
    for y in 0u8..40 {
        let mut e = [0u8; 32];
        e[0] = y;
        out.push(e);
        e[31] |= 0x80;
        out.push(e);
    }
    for low in 0xe8u8..=0xff {
        let mut e = [0xff; 32];
        e[0] = low;
        e[31] = 0x7f;
        out.push(e);
        e[31] = 0xff;
        out.push(e);
    }
    out.push([0xff; 32]);
    out.push([0; 32]);
    out
}

/// What a proptest case does to an honest signature.
#[derive(Debug, Clone)]
enum Mutation {
    None,
    FlipBit(usize),
    SPlusL,
    SHighBit,
    /// `s` replaced by `l - 1`, `l`, `2^252`, `2^253 - 1`...
    SValue(u8),
    /// The key replaced by its `y + p` encoding when it has one (else random bytes).
    RandomKey([u8; 32]),
    RandomSignature([u8; 32], [u8; 32]),
    /// `s` shifted by a small amount: the equation off by a prime-order point.
    SDelta(u8),
    /// `R` shifted by a small-order point only (still valid under the cofactored rule).
    RTorsion(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => Just(Mutation::None),
        2 => (0usize..512).prop_map(Mutation::FlipBit),
        1 => Just(Mutation::SPlusL),
        1 => Just(Mutation::SHighBit),
        1 => (0u8..6).prop_map(Mutation::SValue),
        1 => any::<[u8; 32]>().prop_map(Mutation::RandomKey),
        1 => (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(r, s)| Mutation::RandomSignature(r, s)),
        1 => (1u8..=255).prop_map(Mutation::SDelta),
        1 => (1usize..8).prop_map(Mutation::RTorsion),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    key: [u8; 32],
    message: Vec<u8>,
    signature: [u8; 64],
}

/// A signature by a secret from `seed`, under `A = aB + T_{a_torsion}` (a mixed-order key when
/// `a_torsion != 0`) with `R = rB + T_{r_torsion}`, then mutated.
fn build(seed: u8, a_torsion: usize, r_torsion: usize, message: &[u8], m: &Mutation) -> Case {
    let a = scalar(&[seed, 1]);
    let mut key = (a * ED25519_BASEPOINT_POINT + EIGHT_TORSION[a_torsion])
        .compress()
        .0;
    let mut signature = sign_raw(
        a,
        &key,
        message,
        &[seed, 2, message.len() as u8],
        EIGHT_TORSION[r_torsion],
        Scalar::ZERO,
    );
    match m {
        Mutation::None => {}
        Mutation::FlipBit(i) => signature[i / 8] ^= 1 << (i % 8),
        Mutation::SPlusL => signature = s_plus_l(signature),
        Mutation::SHighBit => signature[63] |= 0x80,
        Mutation::SValue(v) => {
            let mut s = [0u8; 32];
            match v {
                0 => {
                    s = L;
                    s[0] -= 1;
                }
                1 => s = L,
                2 => s[31] = 0x10,
                3 => {
                    s = [0xff; 32];
                    s[31] = 0x1f;
                }
                4 => s = [0xff; 32],
                _ => s[0] = 1,
            }
            signature[32..].copy_from_slice(&s);
        }
        Mutation::RandomKey(bytes) => key = *bytes,
        Mutation::RandomSignature(r, s) => {
            signature[..32].copy_from_slice(r);
            signature[32..].copy_from_slice(s);
        }
        Mutation::SDelta(d) => {
            let s = Scalar::from_canonical_bytes(signature[32..].try_into().unwrap()).unwrap()
                + Scalar::from(u64::from(*d));
            signature[32..].copy_from_slice(s.as_bytes());
        }
        Mutation::RTorsion(t) => {
            // R changed after k was taken: k is over the old R, so this is a bad signature
            // unless recomputed; recompute it properly with a torsioned R instead.
            signature = sign_raw(
                a,
                &key,
                message,
                &[seed, 3],
                EIGHT_TORSION[(*t + r_torsion) % 8],
                Scalar::ZERO,
            );
        }
    }
    Case {
        key,
        message: message.to_vec(),
        signature,
    }
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        any::<u8>(),
        0usize..8,
        0usize..8,
        proptest::collection::vec(any::<u8>(), 0..40),
        mutation(),
    )
        .prop_map(|(seed, at, rt, message, m)| build(seed, at, rt, &message, &m))
}

fn ours(c: &Case) -> bool {
    verify_signature_bytes(&c.key, &c.message, &c.signature)
}

fn theirs(c: &Case) -> bool {
    zebra(&c.key, &c.message, &c.signature)
}

fn batch_failures(cases: &[Case]) -> Vec<usize> {
    let mut batch = SignatureBatch::default();
    for c in cases {
        batch.push_bytes(&c.key, &c.message, &c.signature);
    }
    let failures = batch.failures();
    assert!(batch.is_empty());
    failures
}

/// Whether ed25519-zebra's batch verifies `cases` (the reference's batch verdict).
fn zebra_batch_verifies(cases: &[Case]) -> bool {
    let mut batch = ed25519_zebra::batch::Verifier::new();
    for c in cases {
        batch.queue((
            ed25519_zebra::VerificationKeyBytes::from(c.key),
            ed25519_zebra::Signature::from_bytes(&c.signature),
            &c.message[..],
        ));
    }
    batch.verify(rand::thread_rng()).is_ok()
}

fn batch_verifies(cases: &[Case]) -> bool {
    let mut batch = SignatureBatch::default();
    for c in cases {
        batch.push_bytes(&c.key, &c.message, &c.signature);
    }
    batch.verifies()
}

fn expected_failures(cases: &[Case]) -> Vec<usize> {
    (0..cases.len()).filter(|&i| !theirs(&cases[i])).collect()
}

/// A fresh honest (key, message, signature) from a random secret.
fn fresh(rng: &mut impl RngCore, message: &[u8]) -> Case {
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let sk = SigningKey::from_bytes(&secret);
    Case {
        key: sk.verifying_key().to_bytes(),
        message: message.to_vec(),
        signature: sk.sign(message).to_bytes(),
    }
}

// ---------------------------------------------------------------------------------------------
// Single verdicts against zebra
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// PASSES: single verdict == zebra's on honest, mixed-order-key, torsioned-R, s + l,
    /// high-bit s, boundary s, random key, random signature, shifted s.
    #[test]
    fn single_verdict_is_zebras_on_structured_cases(c in case_strategy()) {
        prop_assert_eq!(ours(&c), theirs(&c), "{:?}", c);
    }

    /// PASSES: strength is dalek's `!is_weak` on random bytes.
    #[test]
    fn is_strong_key_is_dalek_on_random_bytes(key in any::<[u8; 32]>()) {
        prop_assert_eq!(is_strong_key(&key), dalek_strong(&key));
        // And again, memo or no memo.
        prop_assert_eq!(is_strong_key(&key), dalek_strong(&key));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// PASSES: in any batch of structured cases, `failures` names exactly those zebra refuses
    /// singly, `verifies` is whether there are none, and zebra's batch agrees.
    #[test]
    fn batch_verdicts_are_single_verdicts(cases in proptest::collection::vec(case_strategy(), 0..12)) {
        let expected = expected_failures(&cases);
        prop_assert_eq!(batch_failures(&cases), expected.clone());
        prop_assert_eq!(batch_verifies(&cases), expected.is_empty());
        prop_assert_eq!(zebra_batch_verifies(&cases), expected.is_empty());
    }

    /// PASSES: many signatures of a few keys (same seeds so keys repeat), one to three bad:
    /// the per-key re-batching in `failures` names exactly the bad ones.
    #[test]
    fn repeated_keys_with_some_bad(
        seeds in proptest::collection::vec((0u8..3, 0usize..8), 2..40),
        bad in proptest::collection::vec(any::<prop::sample::Index>(), 1..4),
    ) {
        let mut cases: Vec<Case> = seeds
            .iter()
            .enumerate()
            .map(|(i, (seed, t))| build(*seed, *t, i % 8, format!("m{i}").as_bytes(), &Mutation::None))
            .collect();
        let mut flipped: Vec<usize> = bad.iter().map(|b| b.index(cases.len())).collect();
        flipped.sort_unstable();
        flipped.dedup();
        for i in flipped {
            cases[i].signature[40] ^= 4;
        }
        let expected = expected_failures(&cases);
        prop_assert!(!expected.is_empty());
        prop_assert_eq!(batch_failures(&cases), expected);
        prop_assert!(!batch_verifies(&cases));
    }
}

/// PASSES: every pair of edge encodings as (A, R), s in {0, 1, l-1, l}: ours == zebra, singly
/// and as one batch.
#[test]
fn edge_encodings_as_key_and_r_match_zebra() {
    let edges = edge_encodings();
    let mut s_values = vec![[0u8; 32], [0u8; 32], L, L];
    s_values[1][0] = 1;
    s_values[2][0] -= 1;
    let mut cases = Vec::new();
    for key in &edges {
        for r in &edges {
            for s in &s_values {
                let mut signature = [0u8; 64];
                signature[..32].copy_from_slice(r);
                signature[32..].copy_from_slice(s);
                cases.push(Case {
                    key: *key,
                    message: b"edges".to_vec(),
                    signature,
                });
            }
        }
    }
    let mut valid = 0;
    for c in &cases {
        let z = theirs(c);
        valid += usize::from(z);
        assert_eq!(ours(c), z, "{c:?}");
    }
    eprintln!("edge cases: {} of {} valid under zebra", valid, cases.len());
    assert!(valid > 0);
    assert_eq!(batch_failures(&cases), expected_failures(&cases));
    for key in &edges {
        assert_eq!(
            is_strong_key(key),
            dalek_strong(key),
            "{}",
            hex::encode(key)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// One point under two encodings in one batch
// ---------------------------------------------------------------------------------------------

/// PASSES: a point with two encodings (`y` and `y + p`, and the sign bit on `x = 0`) signing
/// under each in one batch: the batch keeps one `A` term per byte string, which is right since
/// each byte string gives one point and `k` hashes the bytes. Covers small-order points (whose
/// signatures anyone makes) and large-order points with `y < 19` (a non-canonical encoding
/// of a strong key).
#[test]
fn one_point_two_encodings_in_one_batch() {
    // Every encoding with y < 19, both signs, and its y + p twin, that decodes.
    let mut keys = Vec::new();
    for y in 0u8..19 {
        for sign in [0u8, 0x80] {
            let mut e = [0u8; 32];
            e[0] = y;
            e[31] = sign;
            if let Some(point) = CompressedEdwardsY(e).decompress() {
                let twin = plus_p(&e).unwrap();
                assert_eq!(CompressedEdwardsY(twin).decompress(), Some(point));
                keys.push((e, twin, point.is_small_order()));
            }
        }
    }
    eprintln!(
        "encodings with y < 19 on the curve: {} ({} of large order)",
        keys.len(),
        keys.iter().filter(|k| !k.2).count()
    );
    let mut cases = Vec::new();
    for (i, (canonical, twin, small)) in keys.iter().enumerate() {
        assert_eq!(is_strong_key(canonical), dalek_strong(canonical));
        assert_eq!(is_strong_key(twin), dalek_strong(twin));
        assert_eq!(is_strong_key(canonical), !small);
        for key in [canonical, twin] {
            let message = format!("two encodings {i}").into_bytes();
            if *small {
                // Valid under ZIP-215 for a small-order A: R = sB + T.
                let s = scalar(&[i as u8, key[0]]);
                let r = (s * ED25519_BASEPOINT_POINT + EIGHT_TORSION[i % 8])
                    .compress()
                    .0;
                let mut signature = [0u8; 64];
                signature[..32].copy_from_slice(&r);
                signature[32..].copy_from_slice(s.as_bytes());
                cases.push(Case {
                    key: *key,
                    message: message.clone(),
                    signature,
                });
                // And a bad one.
                signature[33] ^= 1;
                cases.push(Case {
                    key: *key,
                    message,
                    signature,
                });
            } else {
                // Nobody knows the discrete log: a random-looking signature.
                let mut signature = [0u8; 64];
                signature[..32].copy_from_slice(&ED25519_BASEPOINT_POINT.compress().0);
                signature[32..].copy_from_slice(scalar(&key[..]).as_bytes());
                cases.push(Case {
                    key: *key,
                    message,
                    signature,
                });
            }
        }
    }
    for c in &cases {
        assert_eq!(ours(c), theirs(c), "{c:?}");
    }
    let expected = expected_failures(&cases);
    assert!(expected.len() < cases.len());
    assert_eq!(batch_failures(&cases), expected);
    // The valid ones alone, as one batch.
    let valid: Vec<Case> = cases.iter().filter(|c| theirs(c)).cloned().collect();
    assert!(batch_verifies(&valid));
    assert!(batch_failures(&valid).is_empty());
}

/// PASSES: a torsion twin `A + T` (mixed order, strong) and `A` itself signed by one secret,
/// in one batch with a bad signature under each.
#[test]
fn key_and_its_torsion_twins_in_one_batch() {
    let a = scalar(b"twin secret");
    let mut cases = Vec::new();
    for (t, torsion) in EIGHT_TORSION.iter().enumerate() {
        let key = (a * ED25519_BASEPOINT_POINT + torsion).compress().0;
        assert!(is_strong_key(&key));
        assert_eq!(is_strong_key(&key), dalek_strong(&key));
        for j in 0..3u8 {
            let message = [t as u8, j];
            let signature = sign_raw(
                a,
                &key,
                &message,
                &[t as u8, j, 9],
                EIGHT_TORSION[(t + j as usize) % 8],
                Scalar::ZERO,
            );
            cases.push(Case {
                key,
                message: message.to_vec(),
                signature,
            });
        }
        let mut bad = cases.last().unwrap().clone();
        bad.message.push(0);
        cases.push(bad);
    }
    for c in &cases {
        assert_eq!(ours(c), theirs(c));
    }
    let expected = expected_failures(&cases);
    assert_eq!(expected.len(), 8);
    assert_eq!(batch_failures(&cases), expected);
}

// ---------------------------------------------------------------------------------------------
// Forged batches designed to cancel
// ---------------------------------------------------------------------------------------------

/// PASSES: two bad signatures whose errors cancel when summed with equal coefficients (one
/// with `s + d`, one with `s - d`, same key; and across two keys; and by `R + P`, `R - P`) are
/// refused in a batch every time: the coefficients are random, not 1 and not derived from
/// the batch.
#[test]
fn cancelling_forgeries_are_refused_in_every_batch() {
    let a = scalar(b"cancel a");
    let b = scalar(b"cancel b");
    let key_a = (a * ED25519_BASEPOINT_POINT).compress().0;
    let key_b = (b * ED25519_BASEPOINT_POINT).compress().0;
    let d = scalar(b"delta");
    let p = scalar(b"P") * ED25519_BASEPOINT_POINT;
    let pairs: Vec<[Case; 2]> = vec![
        [
            forged(a, key_a, b"x", b"n1", EdwardsPoint::default(), d),
            forged(a, key_a, b"y", b"n2", EdwardsPoint::default(), -d),
        ],
        [
            forged(a, key_a, b"x", b"n1", EdwardsPoint::default(), d),
            forged(b, key_b, b"y", b"n2", EdwardsPoint::default(), -d),
        ],
        [
            forged(a, key_a, b"x", b"n1", p, Scalar::ZERO),
            forged(b, key_b, b"y", b"n2", -p, Scalar::ZERO),
        ],
        // R + P with a small-order part on one side, R - P on the other, one key.
        [
            forged(a, key_a, b"x", b"n1", p + EIGHT_TORSION[3], Scalar::ZERO),
            forged(a, key_a, b"y", b"n2", -p, Scalar::ZERO),
        ],
    ];
    for pair in &pairs {
        for c in pair {
            assert!(!theirs(c));
            assert!(!ours(c));
        }
        // With all coefficients 1 the pair would verify: the forgery is well aimed.
        let sum: EdwardsPoint = pair
            .iter()
            .map(|c| {
                let r = CompressedEdwardsY(c.signature[..32].try_into().unwrap())
                    .decompress()
                    .unwrap();
                let s =
                    Scalar::from_canonical_bytes(c.signature[32..].try_into().unwrap()).unwrap();
                let a = CompressedEdwardsY(c.key).decompress().unwrap();
                let k = challenge(c.signature[..32].try_into().unwrap(), &c.key, &c.message);
                r + k * a - s * ED25519_BASEPOINT_POINT
            })
            .sum();
        assert_eq!(sum.mul_by_cofactor(), EdwardsPoint::default());
        let honest = build(77, 0, 0, b"honest", &Mutation::None);
        for _ in 0..100 {
            assert!(!batch_verifies(pair));
            assert_eq!(batch_failures(pair), vec![0, 1]);
            let with = [honest.clone(), pair[0].clone(), pair[1].clone()];
            assert_eq!(batch_failures(&with), vec![1, 2]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Empty, one, many of one key
// ---------------------------------------------------------------------------------------------

/// PASSES.
#[test]
fn empty_and_single_batches() {
    let mut batch = SignatureBatch::default();
    assert!(batch.verifies());
    assert!(batch.failures().is_empty());
    let good = build(5, 0, 0, b"one", &Mutation::None);
    let mut bad = good.clone();
    bad.signature[0] ^= 1;
    assert!(batch_verifies(std::slice::from_ref(&good)));
    assert!(batch_failures(std::slice::from_ref(&good)).is_empty());
    assert!(!batch_verifies(std::slice::from_ref(&bad)));
    assert_eq!(batch_failures(std::slice::from_ref(&bad)), vec![0]);
    // The same signature many times, and the same bad one many times.
    let many = vec![good.clone(); 50];
    assert!(batch_failures(&many).is_empty());
    let mut mixed = vec![good.clone(); 50];
    mixed[17] = bad.clone();
    mixed[49] = bad.clone();
    assert_eq!(batch_failures(&mixed), vec![17, 49]);
}

/// PASSES: 300 signatures of one key with one bad, alone and among other keys' signatures.
#[test]
fn many_signatures_of_one_key_one_bad() {
    let sk = SigningKey::from_bytes(&[3; 32]);
    let key = sk.verifying_key().to_bytes();
    let mut cases: Vec<Case> = (0..300)
        .map(|i| {
            let message = format!("many {i}").into_bytes();
            Case {
                key,
                signature: sk.sign(&message).to_bytes(),
                message,
            }
        })
        .collect();
    cases[123].message.push(1);
    assert_eq!(batch_failures(&cases), vec![123]);
    let mut rng = rand::thread_rng();
    for i in 0..50 {
        cases.push(fresh(&mut rng, format!("other {i}").as_bytes()));
    }
    assert_eq!(batch_failures(&cases), vec![123]);
}

// ---------------------------------------------------------------------------------------------
// The memo
// ---------------------------------------------------------------------------------------------

/// A fixed set of cases with known (zebra) verdicts, mixing honest, bad, weak-key, mixed-order.
fn fixed_cases() -> Vec<(Case, bool)> {
    let mut cases = Vec::new();
    for seed in 0u8..12 {
        for (j, m) in [
            Mutation::None,
            Mutation::FlipBit(300),
            Mutation::SPlusL,
            Mutation::RTorsion(3),
        ]
        .iter()
        .enumerate()
        {
            cases.push(build(seed, usize::from(seed) % 8, j, &[seed, j as u8], m));
        }
    }
    // Small-order keys with signatures valid under them.
    for (t, torsion) in EIGHT_TORSION.iter().enumerate() {
        let key = torsion.compress().0;
        let s = scalar(&[t as u8, 0xaa]);
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&(s * ED25519_BASEPOINT_POINT).compress().0);
        signature[32..].copy_from_slice(s.as_bytes());
        cases.push(Case {
            key,
            message: b"weak".to_vec(),
            signature,
        });
        if let Some(twin) = plus_p(&key) {
            cases.push(Case {
                key: twin,
                message: b"weak".to_vec(),
                signature,
            });
        }
    }
    cases
        .into_iter()
        .map(|c| {
            let v = theirs(&c);
            (c, v)
        })
        .collect()
}

fn check_fixed(fixed: &[(Case, bool)]) {
    for (c, v) in fixed {
        assert_eq!(ours(c), *v, "{c:?}");
    }
    let cases: Vec<Case> = fixed.iter().map(|(c, _)| c.clone()).collect();
    let expected: Vec<usize> = (0..fixed.len()).filter(|&i| !fixed[i].1).collect();
    assert_eq!(batch_failures(&cases), expected);
}

/// PASSES: verdicts do not change as the memo fills past its bound (16,384) and is cleared,
/// with keys looked up by `is_strong_key` first (weak and strong), mid-way between checks.
#[test]
fn memo_filled_and_cleared_changes_no_verdict() {
    let fixed = fixed_cases();
    let mut rng = rand::rngs::StdRng::seed_from_u64(69);
    // Put the fixed keys in the memo via is_strong_key first (weak ones must stay out).
    for (c, _) in &fixed {
        assert_eq!(is_strong_key(&c.key), dalek_strong(&c.key));
    }
    check_fixed(&fixed);
    for round in 0..5 {
        // Push the memo over its bound with fresh random curve points (about half of random
        // bytes decode).
        let mut strong = 0;
        while strong < 7_000 {
            let mut key = [0u8; 32];
            rng.fill_bytes(&mut key);
            let s = is_strong_key(&key);
            assert_eq!(s, dalek_strong(&key));
            strong += usize::from(s);
        }
        check_fixed(&fixed);
        eprintln!("memo round {round}: verdicts unchanged");
    }
}

/// PASSES: two threads thrash the memo with fresh keys while two others check the fixed set,
/// singly and in batches; no verdict changes, no panic, no poisoning.
#[test]
fn threads_hammering_the_memo_change_no_verdict() {
    let fixed = std::sync::Arc::new(fixed_cases());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut handles = Vec::new();
    for t in 0..2u64 {
        let stop = stop.clone();
        handles.push(std::thread::spawn(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + t);
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut key = [0u8; 32];
                rng.fill_bytes(&mut key);
                assert_eq!(is_strong_key(&key), dalek_strong(&key));
                n += 1;
            }
            n
        }));
    }
    let mut checkers = Vec::new();
    for _ in 0..2 {
        let fixed = fixed.clone();
        checkers.push(std::thread::spawn(move || {
            for _ in 0..15 {
                check_fixed(&fixed);
            }
        }));
    }
    for c in checkers {
        c.join().expect("a checker panicked");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let thrashed: u64 = handles
        .into_iter()
        .map(|h| h.join().expect("thrasher"))
        .sum();
    eprintln!("keys looked up by the thrashers meanwhile: {thrashed}");
    check_fixed(&fixed);
}

// ---------------------------------------------------------------------------------------------
// Cost (printed, never asserted)
// ---------------------------------------------------------------------------------------------

/// PASSES (verdicts only): 20,000 signatures under 20,000 fresh keys, a client thrashing the
/// memo: single checks and a batch, ours against zebra's. Prints the times.
#[test]
fn cost_of_fresh_keys_thrashing_the_memo() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(20_000);
    let n = 20_000;
    let cases: Vec<Case> = (0..n)
        .map(|i| fresh(&mut rng, format!("fresh {i}").as_bytes()))
        .collect();

    let t = Instant::now();
    let strong = cases.iter().filter(|c| is_strong_key(&c.key)).count();
    let strength = t.elapsed();
    assert_eq!(strong, n);

    let ours_single = timed(|| assert!(cases.iter().all(ours)));
    let zebra_single = timed(|| assert!(cases.iter().all(theirs)));

    let ours_batch = timed(|| assert!(batch_failures(&cases).is_empty()));
    let zebra_batch = timed(|| assert!(zebra_batch_verifies(&cases)));

    // Worst case of failures(): one bad signature per fresh key in a batch of fresh keys.
    let mut bad = cases[..2_000].to_vec();
    for c in bad.iter_mut().step_by(2) {
        c.signature[1] ^= 1;
    }
    let t = Instant::now();
    let f = batch_failures(&bad);
    let ours_bad = t.elapsed();
    assert_eq!(f, (0..2_000).step_by(2).collect::<Vec<_>>());
    let t = Instant::now();
    let zf: Vec<usize> = (0..bad.len()).filter(|&i| !theirs(&bad[i])).collect();
    let zebra_bad_singles = t.elapsed();
    assert_eq!(zf, f);

    // Many signatures of few keys (the memo's good case).
    let sk: Vec<SigningKey> = (0..16u8)
        .map(|i| SigningKey::from_bytes(&[i + 100; 32]))
        .collect();
    let few: Vec<Case> = (0..n)
        .map(|i| {
            let message = format!("few {i}").into_bytes();
            let k = &sk[i % 16];
            Case {
                key: k.verifying_key().to_bytes(),
                signature: k.sign(&message).to_bytes(),
                message,
            }
        })
        .collect();
    let ours_few = timed(|| assert!(batch_failures(&few).is_empty()));
    let zebra_few = timed(|| assert!(zebra_batch_verifies(&few)));

    // Warm memo: 10,000 keys (below the bound) checked twice, the second pass from the memo.
    let warm = &cases[..10_000];
    let ours_first = timed(|| assert!(warm.iter().all(ours)));
    let ours_second = timed(|| assert!(warm.iter().all(ours)));
    let zebra_warm = timed(|| assert!(warm.iter().all(theirs)));
    eprintln!(
        "10000 keys singly: ours first pass {ours_first:?}, ours second pass {ours_second:?}, zebra {zebra_warm:?}"
    );

    eprintln!(
        "{n} fresh keys: is_strong_key {strength:?}; singles ours {ours_single:?} zebra {zebra_single:?}; \
         batch ours {ours_batch:?} zebra {zebra_batch:?}; 2000 fresh keys half bad: ours failures() \
         {ours_bad:?}, zebra singles {zebra_bad_singles:?}; {n} signatures of 16 keys: ours batch \
         {ours_few:?} zebra batch {zebra_few:?}"
    );
}

/// PASSES (verdicts only): the memo's mutex under contention: two threads verifying batches of
/// fresh keys at once against one thread alone. Prints the times.
#[test]
fn cost_of_memo_contention() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // Two sets of 4,000 fresh keys each, never seen before.
    let mut fresh_sets = |prefix: &str| -> Vec<Vec<Case>> {
        (0..2)
            .map(|s| {
                (0..4_000)
                    .map(|i| fresh(&mut rng, format!("{prefix}{s} {i}").as_bytes()))
                    .collect()
            })
            .collect()
    };
    let sets = fresh_sets("c");
    let sequential = timed(|| {
        for set in &sets {
            assert!(batch_failures(set).is_empty());
        }
    });
    let sets = fresh_sets("d");
    let parallel = timed(|| {
        std::thread::scope(|scope| {
            for set in &sets {
                scope.spawn(move || assert!(batch_failures(set).is_empty()));
            }
        })
    });
    eprintln!("2 x 4000 fresh-key batches: sequential {sequential:?}, two threads {parallel:?}");
}
