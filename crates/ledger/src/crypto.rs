//! Ed25519 for medchain: validator keys (their files are sealed: [`crate::master`]), signing of pbft messages, commit
//! certificates, and the one rule by which every signature is checked, singly or in batches.
//!
//! The rule is ZIP-215 (as the `ed25519-zebra` crate checks it, the tests' reference): `A` and
//! `R` any encodings of curve points, `s` canonical, and the cofactored equation
//! `[8][s]B = [8]R + [8][k]A`. Its single and batch checks agree by construction (both are here,
//! on curve25519-dalek, so that a signer's key is decompressed once, not at every signature: see
//! [`decoded_key`]), so a signature's verdict is a function of its bytes alone,
//! whichever path checks it and whatever else is in the batch: every validator and
//! `medchain verify` reach the same one (docs/ARCHITECTURE.md, "Signatures"). Signing stays
//! with ed25519-dalek; its signatures are standard Ed25519 and valid under the rule.
//!
//! Every pbft message is signed over `genesis_hash || message.signing_bytes()`: the genesis hash
//! names the chain, so a signature from one chain (a test network, an older chain with the same
//! keys) cannot be replayed on another. The node signs with [`sign_message`] and the certificate
//! check uses the same composition, so the two cannot drift apart.
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::Signer;
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha512};

use crate::block::Certificate;
use crate::tx::{Checked, Invalid, SignedTx, Signer as TxSigner};
use crate::{CertError, Error, Hash, Result};

/// The number of faulty validators `n` validators tolerate, and the signers a commit certificate
/// needs: pbft's one quorum rule ([`pbft::quorum`]), taken over validator-list lengths.
pub fn max_faulty(n: usize) -> usize {
    pbft::max_faulty(u32::try_from(n).unwrap_or(u32::MAX))
}

/// See [`max_faulty`]: `2f + 1` when `n = 3f + 1`, and any two quorums share `f + 1` validators.
pub fn quorum(n: usize) -> usize {
    pbft::quorum(u32::try_from(n).unwrap_or(u32::MAX))
}

/// A fresh validator key from the operating system's random source.
pub fn generate_key() -> SigningKey {
    SigningKey::generate(&mut OsRng)
}

/// Parses a public key from its 32 bytes, refusing points that are not on the curve.
pub fn verifying_key(bytes: &[u8; 32]) -> Result<VerifyingKey> {
    VerifyingKey::from_bytes(bytes).map_err(|e| Error::InvalidKey(e.to_string()))
}

/// Parses a validator's key from a genesis: a point of the prime-order subgroup, not the
/// identity, in its canonical encoding. Under a key of small order the all-zero signature
/// verifies every message, so any validator could sign as that one wherever signatures are
/// relayed (checkpoint proofs, view changes, block certificates). One secret key signs, under
/// ZIP-215's cofactored rule, for `A` and for each `A + T` with `T` of small order (red team
/// s17), and so does a second encoding of one point: either would let one key hold two
/// validators' places past the genesis' duplicate check, which only a key with no torsion
/// component, in one encoding, rules out.
pub fn validator_key(bytes: &[u8; 32]) -> Result<VerifyingKey> {
    let key = verifying_key(bytes)?;
    if key.is_weak() {
        return Err(Error::InvalidKey("a point of small order".into()));
    }
    if key.to_edwards().compress().to_bytes() != *bytes {
        return Err(Error::InvalidKey(
            "not the canonical encoding of its point".into(),
        ));
    }
    if !key.to_edwards().is_torsion_free() {
        return Err(Error::InvalidKey(
            "a point outside the prime-order subgroup (a key plus a small-order point)".into(),
        ));
    }
    Ok(key)
}

/// What is signed for pbft message `message` on the chain with genesis hash `genesis_hash`.
pub fn message_signing_bytes(genesis_hash: &Hash, message: &pbft::Message) -> Vec<u8> {
    prefixed(genesis_hash, &message.signing_bytes())
}

fn prefixed(genesis_hash: &Hash, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + bytes.len());
    out.extend_from_slice(genesis_hash);
    out.extend_from_slice(bytes);
    out
}

/// Signs a pbft message as the node sends it.
pub fn sign_message(
    key: &SigningKey,
    genesis_hash: &Hash,
    message: &pbft::Message,
) -> pbft::Signature {
    pbft::Signature(
        key.sign(&message_signing_bytes(genesis_hash, message))
            .to_bytes(),
    )
}

/// Checks a pbft message's signature by `key`.
pub fn verify_message(
    key: &VerifyingKey,
    genesis_hash: &Hash,
    message: &pbft::Message,
    signature: &pbft::Signature,
) -> bool {
    verify_signature(
        key,
        &message_signing_bytes(genesis_hash, message),
        &signature.0,
    )
}

/// Checks a signed message from validator `signed.from` of `validators` (the genesis keys in
/// order), as the node does before handing it to the replica.
pub fn verify_signed(
    validators: &[VerifyingKey],
    genesis_hash: &Hash,
    signed: &pbft::Signed<pbft::Message>,
) -> Result<()> {
    let key = validators
        .get(signed.from as usize)
        .ok_or(Error::BadMessageSignature { from: signed.from })?;
    if verify_message(key, genesis_hash, &signed.message, &signed.signature) {
        Ok(())
    } else {
        Err(Error::BadMessageSignature { from: signed.from })
    }
}

/// What a validator signed for a message whose signing bytes (`pbft::Message::signing_bytes`,
/// or as `pbft::Message::embedded_signatures` lists them) are `signing_bytes`.
pub fn embedded_signing_bytes(genesis_hash: &Hash, signing_bytes: &[u8]) -> Vec<u8> {
    prefixed(genesis_hash, signing_bytes)
}

/// Checks a signature by validator `from` of `validators` over `signing_bytes`, the bytes of a
/// pbft message (as `pbft::Message::embedded_signatures` lists those nested in a view change).
pub fn verify_embedded(
    validators: &[VerifyingKey],
    genesis_hash: &Hash,
    from: u32,
    signing_bytes: &[u8],
    signature: &pbft::Signature,
) -> Result<()> {
    let valid = validators.get(from as usize).is_some_and(|key| {
        verify_signature(
            key,
            &embedded_signing_bytes(genesis_hash, signing_bytes),
            &signature.0,
        )
    });
    if valid {
        Ok(())
    } else {
        Err(Error::BadMessageSignature { from })
    }
}

/// The bytes each signature of a block's certificate covers: the commit vote for the block.
pub fn certificate_signing_bytes(
    genesis_hash: &Hash,
    view: u64,
    height: u64,
    block_hash: &Hash,
) -> Vec<u8> {
    let vote = pbft::Vote {
        view,
        seq: height,
        digest: *block_hash,
    };
    prefixed(genesis_hash, &pbft::commit_signing_bytes(&vote))
}

/// Signs the commit vote for a block (what a validator's commit message signs).
pub fn sign_commit(
    key: &SigningKey,
    genesis_hash: &Hash,
    view: u64,
    height: u64,
    block_hash: &Hash,
) -> [u8; 64] {
    key.sign(&certificate_signing_bytes(
        genesis_hash,
        view,
        height,
        block_hash,
    ))
    .to_bytes()
}

/// Checks that `certificate` proves the block at `height` with hash `block_hash` committed:
/// signatures from at least [`quorum`] (`2f + 1` for `n = 3f + 1`) distinct validators of
/// `validators` (the genesis keys in order), every one of them valid. A duplicate, an outsider or
/// a bad signature rejects the whole certificate rather than being skipped: an honest node never
/// builds such a certificate.
pub fn verify_certificate(
    validators: &[VerifyingKey],
    genesis_hash: &Hash,
    height: u64,
    block_hash: &Hash,
    certificate: &Certificate,
) -> Result<(), CertError> {
    let message = certificate_signing_bytes(genesis_hash, certificate.view, height, block_hash);
    let signers = certificate_signers(validators, certificate)?;
    let mut batch = SignatureBatch::default();
    for (key, (_, signature)) in signers.into_iter().zip(&certificate.signatures) {
        batch.push(key, &message, signature);
    }
    match batch.failures().first() {
        Some(&i) => Err(CertError::BadSignature(certificate.signatures[i].0)),
        None => Ok(()),
    }
}

/// Checks a certificate's signers (known, distinct, enough) and returns their keys, in the
/// order of its signatures.
pub(crate) fn certificate_signers<'v>(
    validators: &'v [VerifyingKey],
    certificate: &Certificate,
) -> Result<Vec<&'v VerifyingKey>, CertError> {
    let mut seen = vec![false; validators.len()];
    let mut keys = Vec::with_capacity(certificate.signatures.len());
    for (signer, _) in &certificate.signatures {
        let key = validators
            .get(*signer as usize)
            .ok_or(CertError::UnknownSigner(*signer))?;
        let slot = &mut seen[*signer as usize];
        if *slot {
            return Err(CertError::DuplicateSigner(*signer));
        }
        *slot = true;
        keys.push(key);
    }
    let need = quorum(validators.len());
    if keys.len() < need {
        return Err(CertError::TooFewSigners {
            have: keys.len(),
            need,
        });
    }
    Ok(keys)
}

/// The signature rule (ZIP-215, see the module's doc): whether `signature` is `key`'s over
/// `message`. Every signature medchain checks is checked by this rule, here or in a
/// [`SignatureBatch`], whose verdicts are the same.
pub fn verify_signature(key: &VerifyingKey, message: &[u8], signature: &[u8; 64]) -> bool {
    verify_signature_bytes(key.as_bytes(), message, signature)
}

/// [`verify_signature`] under a key given as bytes (not necessarily a curve point, whose
/// signatures then fail).
pub fn verify_signature_bytes(key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    Queued::new(key, message, signature).verifies()
}

/// A signature to check, with its challenge `k = SHA-512(R || A || M)` (reduced mod ℓ) taken
/// at once, so that the message need not be kept.
struct Queued {
    key: [u8; 32],
    r: [u8; 32],
    s: [u8; 32],
    k: Scalar,
}

impl Queued {
    fn new(key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> Queued {
        let (mut r, mut s) = ([0; 32], [0; 32]);
        r.copy_from_slice(&signature[..32]);
        s.copy_from_slice(&signature[32..]);
        let k = Scalar::from_hash(
            Sha512::new()
                .chain_update(r)
                .chain_update(key)
                .chain_update(message),
        );
        Queued { key: *key, r, s, k }
    }

    /// `s` if canonical (below ℓ), as ZIP-215 requires.
    fn s(&self) -> Option<Scalar> {
        Scalar::from_canonical_bytes(self.s).into()
    }

    /// `R`, any encoding of a curve point (ZIP-215 accepts non-canonical ones).
    fn r(&self) -> Option<EdwardsPoint> {
        CompressedEdwardsY(self.r).decompress()
    }

    /// The cofactored equation alone: `[8](R - ([s]B - [k]A))` is the identity.
    fn verifies(&self) -> bool {
        let (Some(s), Some(r), Some(a)) = (self.s(), self.r(), key_point(&self.key)) else {
            return false;
        };
        let r_prime = EdwardsPoint::vartime_double_scalar_mul_basepoint(&self.k, &-a, &s);
        (r - r_prime).mul_by_cofactor().is_identity()
    }
}

/// Signatures checked together, much faster than one by one, with the verdicts of
/// [`verify_signature`]. Under ZIP-215 a batch holding only valid signatures always verifies
/// (each satisfies the cofactored equation, so any combination of them does); one holding an
/// invalid signature verifies with probability below 2^-128 over random 128-bit coefficients
/// (the cofactor clears every small-order part, and what is left of that signature has prime
/// order). The coefficients come from the thread's CSPRNG, so no signer can aim at them.
///
/// A batch that fails is checked again key by key, and singly only within a key whose
/// signatures fail together: one bad signature costs its own signer's signatures a single
/// check each, not everyone's in the batch.
#[derive(Default)]
pub struct SignatureBatch {
    items: Vec<Queued>,
    single_checks: usize,
}

impl SignatureBatch {
    /// Queues `signature` by `key` over `message`.
    pub fn push(&mut self, key: &VerifyingKey, message: &[u8], signature: &[u8; 64]) {
        self.push_bytes(key.as_bytes(), message, signature);
    }

    /// Queues `signature` by the key with bytes `key` over `message`.
    pub fn push_bytes(&mut self, key: &[u8; 32], message: &[u8], signature: &[u8; 64]) {
        self.items.push(Queued::new(key, message, signature));
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// How many signatures this batch has checked singly, all calls of [`Self::failures`]
    /// together: what a bad signature cost.
    pub fn single_checks(&self) -> usize {
        self.single_checks
    }

    /// Checks everything queued as one batch and empties it: whether every signature keeps
    /// the rule, without finding which do not (for a caller that refuses the whole lot).
    pub fn verifies(&mut self) -> bool {
        let items = std::mem::take(&mut self.items);
        let all: Vec<usize> = (0..items.len()).collect();
        verifies_together(&items, &all)
    }

    /// Checks everything queued and empties the batch: the positions, in the order queued, of
    /// the signatures that break the rule (none if the batch verifies).
    pub fn failures(&mut self) -> Vec<usize> {
        let items = std::mem::take(&mut self.items);
        let all: Vec<usize> = (0..items.len()).collect();
        if verifies_together(&items, &all) {
            return Vec::new();
        }
        let mut by_key: Vec<usize> = all;
        by_key.sort_by_key(|&i| items[i].key);
        let mut failed = Vec::new();
        for group in by_key.chunk_by(|&a, &b| items[a].key == items[b].key) {
            let whole_batch = group.len() == items.len();
            if group.len() > 1 && !whole_batch && verifies_together(&items, group) {
                continue;
            }
            self.single_checks += group.len();
            failed.extend(group.iter().copied().filter(|&i| !items[i].verifies()));
        }
        failed.sort_unstable();
        failed
    }
}

/// Whether the signatures of `items` at `positions` verify as one batch: with a random 128-bit
/// `z_i` for each, `[8]([-Σ z_i s_i]B + Σ [z_i]R_i + Σ_A [Σ_{i by A} z_i k_i]A)` is the identity
/// (the equations of one key share its term, so each key's point is taken once). Any `R`, `A`
/// or `s` the rule refuses fails the batch, as it fails its signature singly.
fn verifies_together(items: &[Queued], positions: &[usize]) -> bool {
    let mut rng = rand::thread_rng();
    let mut b_coefficient = Scalar::ZERO;
    let mut r_coefficients = Vec::with_capacity(positions.len());
    let mut r_points = Vec::with_capacity(positions.len());
    // As many keys as signatures at most (a block's are mostly of different clients): grown
    // by doubling, these were copied again and again (BENCHMARKS.md "thirty-eighth").
    let mut key_terms: HashMap<[u8; 32], usize> = HashMap::with_capacity(positions.len());
    let mut a_coefficients: Vec<Scalar> = Vec::with_capacity(positions.len());
    let mut a_points: Vec<EdwardsPoint> = Vec::with_capacity(positions.len());
    for &i in positions {
        let item = &items[i];
        let (Some(s), Some(r)) = (item.s(), item.r()) else {
            return false;
        };
        let term = match key_terms.get(&item.key) {
            Some(&term) => term,
            None => {
                let Some(a) = key_point(&item.key) else {
                    return false;
                };
                a_points.push(a);
                a_coefficients.push(Scalar::ZERO);
                key_terms.insert(item.key, a_points.len() - 1);
                a_points.len() - 1
            }
        };
        let mut z_bytes = [0u8; 32];
        rng.fill_bytes(&mut z_bytes[..16]);
        let z = Scalar::from_bytes_mod_order(z_bytes);
        b_coefficient -= z * s;
        a_coefficients[term] += z * item.k;
        r_coefficients.push(z);
        r_points.push(r);
    }
    let check = EdwardsPoint::vartime_multiscalar_mul(
        std::iter::once(&b_coefficient)
            .chain(&a_coefficients)
            .chain(&r_coefficients),
        std::iter::once(&ED25519_BASEPOINT_POINT)
            .chain(&a_points)
            .chain(&r_points),
    );
    check.mul_by_cofactor().is_identity()
}

/// What each of `entries` carries ([`Checked`]): each is decoded and checked without a key
/// ([`SignedTx::from_request`]), then the signatures of those that pass are checked in one
/// batch ([`check_signatures`]). The verdict of every entry depends on its bytes, `validators`
/// and `genesis_hash` alone, never on the others in the call.
pub fn check_entries<'a>(
    validators: &[VerifyingKey],
    genesis_hash: &Hash,
    entries: impl IntoIterator<Item = &'a pbft::Request>,
) -> Vec<Checked> {
    let mut checked: Vec<Checked> = entries
        .into_iter()
        .map(|entry| SignedTx::from_request(entry, genesis_hash))
        .collect();
    check_signatures(validators, genesis_hash, &mut checked);
    checked
}

/// One signature to check: the public key (as bytes), the signed bytes, the signature.
pub type SignatureCheck = ([u8; 32], Vec<u8>, [u8; 64]);

/// The signatures one transaction carries, each as (public key, signed bytes, signature): the
/// envelope's first (under the key written in it, or the genesis key of a validator signer),
/// then each new key's proof of possession ([`crate::tx::key_pop_bytes`]). A weak key
/// ([`is_strong_key`]) makes the transaction invalid: see [`first_weak_key`].
pub fn tx_signatures(
    validators: &[VerifyingKey],
    genesis_hash: &Hash,
    t: &SignedTx,
) -> Result<Vec<SignatureCheck>, Invalid> {
    let checks = tx_signature_checks(validators, genesis_hash, t)?;
    match first_weak_key(&checks) {
        Some(position) => Err(verdict_at(position)),
        None => Ok(checks),
    }
}

/// [`tx_signatures`] with the keys' strength left unjudged, for a caller that checks it
/// elsewhere ([`first_weak_key`]): verification does it on its signature workers, off the
/// thread that walks the chain.
pub fn tx_signature_checks(
    validators: &[VerifyingKey],
    genesis_hash: &Hash,
    t: &SignedTx,
) -> Result<Vec<SignatureCheck>, Invalid> {
    let signer_key = match &t.header.signer {
        TxSigner::Device { key, .. } | TxSigner::Custodial { key, .. } => *key,
        TxSigner::Validator { index } => validators
            .get(*index as usize)
            .ok_or(Invalid::UnknownValidator)?
            .to_bytes(),
    };
    let mut out = vec![(signer_key, t.signing_bytes(genesis_hash), t.signature)];
    for (person, new) in t.header.meta.new_keys() {
        out.push((new.key, new.pop_bytes(genesis_hash, person), new.pop));
    }
    Ok(out)
}

/// The position in a transaction's signatures ([`tx_signature_checks`]) of the first under a
/// weak key, which makes it invalid as its signature failing there would
/// ([`signature_verdict`]): a weak signer key is a bad signature, a weak new key a bad proof.
pub fn first_weak_key(checks: &[SignatureCheck]) -> Option<usize> {
    checks.iter().position(|(key, _, _)| !is_strong_key(key))
}

/// Whether `key` may sign for a person: a canonical curve point of large order. Under ZIP-215
/// a key of small order (the identity, or a point of order 2, 4 or 8) "verifies" signatures
/// that nobody made (the all-zero signature under the all-zero key verifies every message),
/// so its proof of possession proves nothing; such keys are never registered and never sign.
/// A pure function of the bytes: every validator decides alike.
pub fn is_strong_key(key: &[u8; 32]) -> bool {
    decoded_key(key).is_some_and(|(_, strong)| strong)
}

/// The point a signer's key `key` encodes (any encoding, as ZIP-215 takes `A`), `None` if it
/// encodes none.
fn key_point(key: &[u8; 32]) -> Option<EdwardsPoint> {
    decoded_key(key).map(|(point, _)| point)
}

/// The point `key` encodes and whether it is strong ([`is_strong_key`]), `None` if it encodes
/// none.
///
/// The points of the keys found strong lately are remembered: the same people sign again and
/// again, and a point decompression (an exponentiation in the field) per signature was a third
/// of the edge check before `is_strong_key` remembered keys; a batch takes its signers' points
/// from here too. A memo of a pure function of the bytes changes no verdict; it is cleared
/// whenever it holds `STRONG_KEYS_REMEMBERED` (192 bytes each: 3 MiB at most).
fn decoded_key(key: &[u8; 32]) -> Option<(EdwardsPoint, bool)> {
    const STRONG_KEYS_REMEMBERED: usize = 1 << 14;
    static STRONG_KEYS: OnceLock<Mutex<HashMap<[u8; 32], EdwardsPoint>>> = OnceLock::new();
    let memo = || {
        STRONG_KEYS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    };
    if let Some(point) = memo().get(key) {
        return Some((*point, true));
    }
    let point = CompressedEdwardsY(*key).decompress()?;
    let strong = !point.is_small_order();
    if strong {
        let mut known = memo();
        if known.len() >= STRONG_KEYS_REMEMBERED {
            known.clear();
        }
        known.insert(*key, point);
    }
    Some((point, strong))
}

/// The verdict on a transaction whose signatures ([`tx_signatures`]) failed at `positions`:
/// the envelope's signature first, then the key proofs.
pub fn signature_verdict(positions: &[usize]) -> Option<Invalid> {
    positions.first().copied().map(verdict_at)
}

/// The verdict on a transaction whose signature at `position` failed or is under a weak key.
fn verdict_at(position: usize) -> Invalid {
    if position == 0 {
        Invalid::BadSignature
    } else {
        Invalid::BadKeyProof
    }
}

/// Checks, in one batch, the signatures ([`tx_signatures`]) of the transactions decoded in
/// `checked`: each with an unknown validator signer, a signature that does not verify or a key
/// proof that does not verify becomes invalid.
pub fn check_signatures(validators: &[VerifyingKey], genesis_hash: &Hash, checked: &mut [Checked]) {
    let mut batch = SignatureBatch::default();
    let mut owners = Vec::new();
    for (index, verdict) in checked.iter_mut().enumerate() {
        let Ok(t) = verdict else { continue };
        match tx_signatures(validators, genesis_hash, t) {
            Ok(signatures) => {
                for (position, (key, message, signature)) in signatures.iter().enumerate() {
                    batch.push_bytes(key, message, signature);
                    owners.push((index, position));
                }
            }
            Err(invalid) => *verdict = Err(invalid),
        }
    }
    let mut failed: Vec<(usize, usize)> = batch.failures().into_iter().map(|i| owners[i]).collect();
    failed.sort_unstable();
    let mut i = 0;
    while i < failed.len() {
        let index = failed[i].0;
        let positions: Vec<usize> = failed[i..]
            .iter()
            .take_while(|(j, _)| *j == index)
            .map(|(_, p)| *p)
            .collect();
        i += positions.len();
        if let Some(invalid) = signature_verdict(&positions) {
            checked[index] = Err(invalid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> (Vec<SigningKey>, Vec<VerifyingKey>) {
        let sk: Vec<SigningKey> = (0..n)
            .map(|i| SigningKey::from_bytes(&[i as u8 + 1; 32]))
            .collect();
        let vk = sk.iter().map(SigningKey::verifying_key).collect();
        (sk, vk)
    }

    const GENESIS: Hash = [42; 32];
    const BLOCK: Hash = [7; 32];

    fn cert(sk: &[SigningKey], signers: &[u32]) -> Certificate {
        Certificate {
            view: 2,
            signatures: signers
                .iter()
                .map(|&i| (i, sign_commit(&sk[i as usize], &GENESIS, 2, 5, &BLOCK)))
                .collect(),
        }
    }

    #[test]
    fn quorum_is_pbfts() {
        for n in 1..=20 {
            assert_eq!(quorum(n), pbft::quorum(n as u32), "n = {n}");
        }
    }

    #[test]
    fn certificate_with_quorum_verifies() {
        let (sk, vk) = keys(4);
        verify_certificate(&vk, &GENESIS, 5, &BLOCK, &cert(&sk, &[0, 1, 2])).expect("valid");
        verify_certificate(&vk, &GENESIS, 5, &BLOCK, &cert(&sk, &[3, 1, 0, 2])).expect("valid");
    }

    /// A recovery answer carries a stored certificate as pbft commits, whose signatures the
    /// receiving edge checks over the commit messages' bytes: they must be the same bytes.
    #[test]
    fn certificate_as_commit_votes_verifies_as_embedded_commits() {
        let (sk, vk) = keys(4);
        let votes = cert(&sk, &[0, 2, 3]).commit_votes(5, &BLOCK);
        assert_eq!(votes.len(), 3);
        for commit in &votes {
            assert_eq!(
                commit.message,
                pbft::Vote {
                    view: 2,
                    seq: 5,
                    digest: BLOCK
                }
            );
            let bytes = pbft::Message::Commit(commit.message).signing_bytes();
            verify_embedded(&vk, &GENESIS, commit.from, &bytes, &commit.signature)
                .expect("the certificate's signature is the commit's");
            assert!(
                verify_embedded(&vk, &[0; 32], commit.from, &bytes, &commit.signature).is_err()
            );
        }
    }

    #[test]
    fn certificate_faults_are_named() {
        let (sk, _) = keys(5);
        let (_, vk) = keys(4);
        let check = |c: &Certificate| verify_certificate(&vk, &GENESIS, 5, &BLOCK, c);
        assert_eq!(
            check(&cert(&sk, &[0, 1])),
            Err(CertError::TooFewSigners { have: 2, need: 3 })
        );
        assert_eq!(
            check(&cert(&sk, &[0, 1, 1])),
            Err(CertError::DuplicateSigner(1))
        );
        assert_eq!(
            check(&cert(&sk, &[0, 1, 4])),
            Err(CertError::UnknownSigner(4))
        );

        let mut bad = cert(&sk, &[0, 1, 2]);
        bad.signatures[1].1[3] ^= 1;
        assert_eq!(check(&bad), Err(CertError::BadSignature(1)));

        // An outsider's key signing in a member's name is a bad signature.
        let (outsider, _) = keys(9);
        let mut forged = cert(&sk, &[0, 1]);
        forged
            .signatures
            .push((2, sign_commit(&outsider[8], &GENESIS, 2, 5, &BLOCK)));
        assert_eq!(check(&forged), Err(CertError::BadSignature(2)));

        // Signatures over another height, block, view or chain do not count.
        let c = cert(&sk, &[0, 1, 2]);
        assert!(verify_certificate(&vk, &GENESIS, 6, &BLOCK, &c).is_err());
        assert!(verify_certificate(&vk, &GENESIS, 5, &[8; 32], &c).is_err());
        assert!(verify_certificate(&vk, &[0; 32], 5, &BLOCK, &c).is_err());
        let mut other_view = c.clone();
        other_view.view = 3;
        assert!(verify_certificate(&vk, &GENESIS, 5, &BLOCK, &other_view).is_err());
    }

    #[test]
    fn commit_message_signature_is_a_certificate_signature() {
        let (sk, vk) = keys(4);
        let vote = pbft::Vote {
            view: 2,
            seq: 5,
            digest: BLOCK,
        };
        let message = pbft::Message::Commit(vote);
        let signatures = (0..3u32)
            .map(|i| (i, sign_message(&sk[i as usize], &GENESIS, &message).0))
            .collect();
        let c = Certificate {
            view: 2,
            signatures,
        };
        verify_certificate(&vk, &GENESIS, 5, &BLOCK, &c).expect("commit votes form a certificate");
    }

    #[test]
    fn messages_verify_only_on_their_chain() {
        let (sk, vk) = keys(4);
        let message = pbft::Message::Prepare(pbft::Vote {
            view: 0,
            seq: 1,
            digest: BLOCK,
        });
        let signature = sign_message(&sk[1], &GENESIS, &message);
        assert!(verify_message(&vk[1], &GENESIS, &message, &signature));
        assert!(!verify_message(&vk[2], &GENESIS, &message, &signature));
        assert!(!verify_message(&vk[1], &[0; 32], &message, &signature));
        let signed = pbft::Signed {
            from: 1,
            message: message.clone(),
            signature,
        };
        verify_signed(&vk, &GENESIS, &signed).expect("valid");
        let wrong_sender = pbft::Signed {
            from: 2,
            ..signed.clone()
        };
        assert!(verify_signed(&vk, &GENESIS, &wrong_sender).is_err());
        let outsider = pbft::Signed { from: 9, ..signed };
        assert!(verify_signed(&vk, &GENESIS, &outsider).is_err());
    }

    #[test]
    fn entry_check_names_every_bad_transaction() {
        let net = crate::testkit::TestNet::new(4);
        let (vk, g) = (net.genesis.keys(), net.genesis.hash());
        let mut txs: Vec<SignedTx> = (0..50).map(|i| net.sample_tx(i)).collect();
        let requests = |txs: &[SignedTx]| -> Vec<pbft::Request> {
            txs.iter().map(|t| t.to_request(&g)).collect()
        };
        let verdicts = check_entries(vk, &g, &requests(&txs));
        assert!(verdicts.iter().zip(&txs).all(|(v, t)| v.as_ref() == Ok(t)));

        txs[37].signature[10] ^= 0x40;
        txs[41].signature[0] ^= 0x01;
        // Sample 12 is an enrollment, signed by a validator: name one outside the genesis.
        txs[12].header.signer = TxSigner::Validator { index: 9 };
        // Sample 2 enrolls a key whose proof of possession is broken, and is signed again.
        let mut header = txs[2].header.clone();
        if let crate::tx::Meta::Enroll(e) = &mut header.meta {
            e.keys[0].pop[5] ^= 1;
        }
        txs[2] = net.sign_header(header, Vec::new(), &net.keys[2]);
        // Another body under a well-signed header.
        txs[20].body.push(0);
        let mut entries = requests(&txs);
        entries[3].payload = std::sync::Arc::from(&b"garbage"[..]);
        entries[5].timestamp_ms += 1;
        entries[6].id[0] ^= 1;
        let verdicts = check_entries(vk, &g, &entries);
        let invalid: Vec<(usize, Invalid)> = verdicts
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.as_ref().err().map(|e| (i, *e)))
            .collect();
        assert_eq!(
            invalid,
            [
                (2, Invalid::BadKeyProof),
                (3, Invalid::Undecodable),
                (5, Invalid::TimestampMismatch),
                (6, Invalid::IdMismatch),
                (12, Invalid::UnknownValidator),
                (20, Invalid::BodyMismatch),
                (37, Invalid::BadSignature),
                (41, Invalid::BadSignature),
            ]
        );
        // A verdict does not depend on the company an entry keeps.
        assert_eq!(
            check_entries(vk, &g, &entries[37..38]),
            [Err(Invalid::BadSignature)]
        );
        assert_eq!(
            check_entries(vk, &g, &entries[2..3]),
            [Err(Invalid::BadKeyProof)]
        );
        // Nor is it good on another chain.
        assert_eq!(
            check_entries(vk, &[1; 32], &entries[30..31]),
            [Err(Invalid::IdMismatch)]
        );
        assert!(check_entries(vk, &g, &[]).is_empty());
    }

    #[test]
    fn a_person_signer_is_checked_under_the_key_in_the_envelope() {
        let net = crate::testkit::TestNet::new(4);
        let (vk, g) = (net.genesis.keys(), net.genesis.hash());
        let patient = net.patient(1, 0);
        let doctor = net.doctor(2, 0, "Cardiology");
        let good = net.grant(
            &patient,
            &doctor.id,
            crate::tx::Scope::Write,
            None,
            &patient.device(),
        );
        // Signed by another key than the one the envelope names.
        let mut header = good.header.clone();
        header.nonce[0] ^= 1;
        let forged = net.sign_header(header, good.body.clone(), &patient.custodial);
        // Names a key that is no curve point.
        let mut header = good.header.clone();
        header.signer = TxSigner::Device {
            person: patient.id,
            key: [0xff; 32],
        };
        let not_a_point = net.sign_header(header, good.body.clone(), &patient.device);
        let verdicts = check_entries(
            vk,
            &g,
            &[
                good.to_request(&g),
                forged.to_request(&g),
                not_a_point.to_request(&g),
            ],
        );
        assert!(verdicts[0].is_ok());
        assert_eq!(verdicts[1], Err(Invalid::BadSignature));
        assert_eq!(verdicts[2], Err(Invalid::BadSignature));
    }

    /// `signature` with `l`, the order of the prime subgroup, added to its `s`: the same
    /// point arithmetic, a non-canonical encoding.
    fn with_s_plus_l(mut signature: [u8; 64]) -> [u8; 64] {
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for (byte, l) in signature[32..].iter_mut().zip(L) {
            let sum = u16::from(*byte) + u16::from(l) + carry;
            *byte = sum as u8;
            carry = sum >> 8;
        }
        signature
    }

    #[test]
    fn one_rule_singly_and_in_every_batch() {
        let net = crate::testkit::TestNet::new(4);
        let signed = |t: &SignedTx| {
            let (key, message, signature) =
                tx_signatures(net.genesis.keys(), &net.genesis.hash(), t).expect("known signer")[0]
                    .clone();
            (verifying_key(&key).expect("a point"), message, signature)
        };
        let good = signed(&net.sample_tx(1));
        let bad = (good.0, good.1.clone(), [3; 64]);
        let torsion = signed(&net.torsion_tx(8));
        // The case on which Ed25519 rules differ: cofactorless verification refuses it.
        let strict = torsion.0.verify_strict(
            &torsion.1,
            &ed25519_dalek::Signature::from_bytes(&torsion.2),
        );
        assert!(strict.is_err());
        let noncanonical = (good.0, good.1.clone(), with_s_plus_l(good.2));
        for (case, valid) in [(&torsion, true), (&noncanonical, false), (&good, true)] {
            assert_eq!(verify_signature(&case.0, &case.1, &case.2), valid);
            for company in [vec![], vec![&good], vec![&bad, &good], vec![&torsion, &bad]] {
                let mut batch = SignatureBatch::default();
                for (key, message, signature) in company.iter().copied().chain([case]) {
                    batch.push(key, message, signature);
                }
                let failures = batch.failures();
                assert!(batch.is_empty());
                assert_eq!(!failures.contains(&company.len()), valid);
                let expected: Vec<usize> = (0..company.len())
                    .filter(|&i| std::ptr::eq(company[i], &bad))
                    .chain((!valid).then_some(company.len()))
                    .collect();
                assert_eq!(failures, expected);
            }
        }
    }

    /// ZIP-215's verdict as the reference implementation gives it.
    fn zebra_verdict(key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
        ed25519_zebra::VerificationKey::try_from(ed25519_zebra::VerificationKeyBytes::from(*key))
            .and_then(|vk| vk.verify(&ed25519_dalek::Signature::from_bytes(signature), message))
            .is_ok()
    }

    /// Every encoding the rule must judge as ZIP-215 does: the points of small order in each
    /// of their encodings (`y` and `y + p`, either sign), other non-canonical encodings, bytes
    /// that encode no point, and a valid key.
    fn edge_encodings() -> Vec<[u8; 32]> {
        use curve25519_dalek::constants::EIGHT_TORSION;
        let mut out: Vec<[u8; 32]> = EIGHT_TORSION.iter().map(|t| t.compress().0).collect();
        for delta in 0u8..19 {
            let mut above_p = [0xff; 32];
            above_p[0] = 0xed + delta;
            above_p[31] = 0x7f;
            let mut small = [0; 32];
            small[0] = delta;
            for mut encoding in [above_p, small] {
                out.push(encoding);
                encoding[31] |= 0x80;
                out.push(encoding);
            }
        }
        out.push([0x42; 32]);
        out.push(SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes());
        out
    }

    #[test]
    fn the_rule_is_zebras_singly_and_in_a_batch_on_every_edge_case() {
        use curve25519_dalek::constants::EIGHT_TORSION;
        let message = b"edge cases".as_slice();
        let mut cases: Vec<([u8; 32], [u8; 64])> = Vec::new();
        // Small-order and non-canonical A and R, s zero or not: the cofactor clears a
        // small-order R and A, so these verify under ZIP-215 when both encode points.
        for key in edge_encodings() {
            for r in edge_encodings() {
                for s in [[0; 32], [1; 32]] {
                    let mut signature = [0; 64];
                    signature[..32].copy_from_slice(&r);
                    signature[32..].copy_from_slice(&s);
                    cases.push((key, signature));
                }
            }
        }
        // A real key, its torsion twins (A + T signs with A's secret), s + ℓ, a flipped bit.
        let secret = SigningKey::from_bytes(&[7; 32]);
        let honest = secret.sign(message).to_bytes();
        cases.push((secret.verifying_key().to_bytes(), honest));
        cases.push((secret.verifying_key().to_bytes(), with_s_plus_l(honest)));
        let mut flipped = honest;
        flipped[40] ^= 1;
        cases.push((secret.verifying_key().to_bytes(), flipped));
        let a = secret.to_scalar();
        for torsion in EIGHT_TORSION.iter().skip(1) {
            let twin = (ED25519_BASEPOINT_POINT * a + torsion).compress().0;
            let r = Scalar::from_bytes_mod_order([3; 32]);
            let r_bytes = (ED25519_BASEPOINT_POINT * r).compress().0;
            let k = Scalar::from_hash(
                Sha512::new()
                    .chain_update(r_bytes)
                    .chain_update(twin)
                    .chain_update(message),
            );
            let mut signature = [0; 64];
            signature[..32].copy_from_slice(&r_bytes);
            signature[32..].copy_from_slice((r + k * a).as_bytes());
            cases.push((twin, signature));
        }
        let expected: Vec<bool> = cases
            .iter()
            .map(|(key, signature)| zebra_verdict(key, message, signature))
            .collect();
        let valid = expected.iter().filter(|v| **v).count();
        assert!(
            valid > 100 && valid < cases.len() - 100,
            "{valid} of {}",
            cases.len()
        );
        for ((key, signature), valid) in cases.iter().zip(&expected) {
            assert_eq!(
                verify_signature_bytes(key, message, signature),
                *valid,
                "key {} signature {}",
                hex::encode(key),
                hex::encode(signature)
            );
        }
        let mut batch = SignatureBatch::default();
        for (key, signature) in &cases {
            batch.push_bytes(key, message, signature);
        }
        let failures = batch.failures();
        let refused: Vec<usize> = (0..cases.len()).filter(|&i| !expected[i]).collect();
        assert_eq!(failures, refused);
        // The valid ones alone verify as one batch, as they do in zebra's.
        let mut ours = SignatureBatch::default();
        let mut theirs = ed25519_zebra::batch::Verifier::new();
        for ((key, signature), _) in cases.iter().zip(&expected).filter(|(_, v)| **v) {
            ours.push_bytes(key, message, signature);
            theirs.queue((
                ed25519_zebra::VerificationKeyBytes::from(*key),
                ed25519_dalek::Signature::from_bytes(signature),
                message,
            ));
        }
        assert!(ours.verifies());
        assert!(theirs.verify(rand::thread_rng()).is_ok());
        // Strength is the same function of the bytes as ed25519-dalek's `is_weak`, memo or not.
        for _ in 0..2 {
            for key in edge_encodings() {
                let dalek = VerifyingKey::from_bytes(&key).is_ok_and(|k| !k.is_weak());
                assert_eq!(is_strong_key(&key), dalek, "{}", hex::encode(key));
            }
        }
    }

    #[test]
    fn a_bad_signature_costs_single_checks_only_of_its_signers_batch() {
        let (sk, vk) = keys(3);
        let message = |i: usize| format!("message {i}").into_bytes();
        let mut batch = SignatureBatch::default();
        // 100 good signatures by key 0 and 20 by key 1, with one bad one by key 2 among them.
        for i in 0..120 {
            let signer = usize::from(i >= 100);
            let signature = sk[signer].sign(&message(i)).to_bytes();
            batch.push(&vk[signer], &message(i), &signature);
            if i == 50 {
                batch.push(&vk[2], &message(i), &sk[2].sign(b"another").to_bytes());
            }
        }
        assert_eq!(batch.failures(), vec![51]);
        assert_eq!(
            batch.single_checks(),
            1,
            "only key 2's signature is checked alone"
        );
        // A bad signature by a key with good ones: that key's signatures, alone each.
        for i in 0..10 {
            batch.push(&vk[0], &message(i), &sk[0].sign(&message(i)).to_bytes());
            batch.push(&vk[1], &message(i), &sk[1].sign(&message(i)).to_bytes());
        }
        batch.push(&vk[1], &message(99), &[7; 64]);
        assert_eq!(batch.failures(), vec![20]);
        assert_eq!(batch.single_checks(), 1 + 11);
        // One key only: checked alone each, with no second batch of the same signatures.
        for i in 0..5 {
            batch.push(&vk[0], &message(i), &sk[0].sign(&message(i + 1)).to_bytes());
        }
        assert_eq!(batch.failures(), vec![0, 1, 2, 3, 4]);
        assert_eq!(batch.single_checks(), 12 + 5);
    }
}
