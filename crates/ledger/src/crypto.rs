//! Ed25519 for medchain: validator keys and key files, signing of pbft messages, commit
//! certificates, and batch verification of transaction signatures.
//!
//! Every pbft message is signed over `genesis_hash || message.signing_bytes()`: the genesis hash
//! names the chain, so a signature from one chain (a test network, an older chain with the same
//! keys) cannot be replayed on another. The node signs with [`sign_message`] and the certificate
//! check uses the same composition, so the two cannot drift apart.
use std::io::Write;
use std::path::Path;

use ed25519_dalek::{Signature, Signer};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::rngs::OsRng;

use crate::block::Certificate;
use crate::tx::{self, Checked, Invalid, SignedTransaction};
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
    key.verify_strict(
        &message_signing_bytes(genesis_hash, message),
        &Signature::from_bytes(&signature.0),
    )
    .is_ok()
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

/// Checks a signature by validator `from` of `validators` over `signing_bytes`, the bytes of a
/// pbft message (as `pbft::Message::embedded_signatures` lists those nested in a view change).
pub fn verify_embedded(
    validators: &[VerifyingKey],
    genesis_hash: &Hash,
    from: u32,
    signing_bytes: &[u8],
    signature: &pbft::Signature,
) -> Result<()> {
    let bad = Error::BadMessageSignature { from };
    let key = validators
        .get(from as usize)
        .ok_or(Error::BadMessageSignature { from })?;
    key.verify_strict(
        &prefixed(genesis_hash, signing_bytes),
        &Signature::from_bytes(&signature.0),
    )
    .map_err(|_| bad)
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
/// signatures from at least [`quorum`] (`2f + 1` for `n = 3f + 1`) distinct validators of `validators` (the genesis keys in
/// order), every one of them valid. A duplicate, an outsider or a bad signature rejects the whole
/// certificate rather than being skipped: an honest node never builds such a certificate.
pub fn verify_certificate(
    validators: &[VerifyingKey],
    genesis_hash: &Hash,
    height: u64,
    block_hash: &Hash,
    certificate: &Certificate,
) -> Result<(), CertError> {
    let message = certificate_signing_bytes(genesis_hash, certificate.view, height, block_hash);
    let items = certificate_items(validators, certificate)?;
    let messages = vec![message.as_slice(); items.len()];
    check_batch(&messages, &items).map_err(|i| CertError::BadSignature(certificate.signatures[i].0))
}

/// A key and a signature to check against it.
pub(crate) type SignatureItem = (VerifyingKey, Signature);

/// Checks signers (known, distinct, enough) and returns their keys and signatures, in order.
pub(crate) fn certificate_items(
    validators: &[VerifyingKey],
    certificate: &Certificate,
) -> Result<Vec<(VerifyingKey, Signature)>, CertError> {
    let mut seen = vec![false; validators.len()];
    let mut items = Vec::with_capacity(certificate.signatures.len());
    for (signer, sig) in &certificate.signatures {
        let key = validators
            .get(*signer as usize)
            .ok_or(CertError::UnknownSigner(*signer))?;
        let slot = &mut seen[*signer as usize];
        if *slot {
            return Err(CertError::DuplicateSigner(*signer));
        }
        *slot = true;
        items.push((*key, Signature::from_bytes(sig)));
    }
    let need = quorum(validators.len());
    if items.len() < need {
        return Err(CertError::TooFewSigners {
            have: items.len(),
            need,
        });
    }
    Ok(items)
}

/// Verifies many signatures at once; on failure, finds the first bad one (its index) by
/// checking them one by one. `ed25519_dalek::verify_batch` derives its random coefficients from
/// a transcript of its inputs, so every node reaches the same verdict on the same batch.
pub(crate) fn check_batch(
    messages: &[&[u8]],
    items: &[(VerifyingKey, Signature)],
) -> Result<(), usize> {
    match bad_signatures(messages, items).first() {
        Some(&i) => Err(i),
        None => Ok(()),
    }
}

/// The indices of the signatures that do not verify: none if the batch verifies, else each
/// checked alone with `verify_strict`, whose verdict is the rule. (A batch can only fail if some
/// signature alone fails: each one satisfying the verification equation makes any linear
/// combination of them satisfy it.)
fn bad_signatures(messages: &[&[u8]], items: &[(VerifyingKey, Signature)]) -> Vec<usize> {
    if items.is_empty() {
        return Vec::new();
    }
    let keys: Vec<VerifyingKey> = items.iter().map(|(k, _)| *k).collect();
    let sigs: Vec<Signature> = items.iter().map(|(_, s)| *s).collect();
    if ed25519_dalek::verify_batch(messages, &sigs, &keys).is_ok() {
        return Vec::new();
    }
    items
        .iter()
        .zip(messages)
        .enumerate()
        .filter(|(_, ((key, sig), msg))| key.verify_strict(msg, sig).is_err())
        .map(|(i, _)| i)
        .collect()
}

/// What each of `entries` carries ([`Checked`]): each is decoded (its id and timestamp must be
/// its request's) and the signatures of those that decode are checked in one batch. The verdict
/// of every entry depends on its bytes and `validators` alone, never on the others in the call.
pub fn check_entries<'a>(
    validators: &[VerifyingKey],
    entries: impl IntoIterator<Item = &'a pbft::Request>,
) -> Vec<Checked> {
    let entries: Vec<&pbft::Request> = entries.into_iter().collect();
    let mut checked: Vec<Checked> = entries
        .iter()
        .map(|entry| SignedTransaction::from_request(entry))
        .collect();
    check_signatures(validators, entries.iter().map(|e| &e.id), &mut checked);
    checked
}

/// Checks, in one batch, the signatures of the transactions decoded in `checked` (entries with
/// ids `ids`, as [`SignedTransaction::from_request`] decoded them): each whose validator is not
/// in `validators`, or whose signature does not verify, becomes invalid.
pub fn check_signatures<'a>(
    validators: &[VerifyingKey],
    ids: impl IntoIterator<Item = &'a Hash>,
    checked: &mut [Checked],
) {
    let mut messages = Vec::new();
    let mut items = Vec::new();
    let mut owners = Vec::new();
    for (index, (id, verdict)) in ids.into_iter().zip(checked.iter_mut()).enumerate() {
        let Ok(t) = verdict else { continue };
        match validators.get(t.validator as usize) {
            Some(key) => {
                messages.push(tx::signing_bytes(id));
                items.push((*key, Signature::from_bytes(&t.signature)));
                owners.push(index);
            }
            None => *verdict = Err(Invalid::UnknownValidator),
        }
    }
    let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    for bad in bad_signatures(&refs, &items) {
        checked[owners[bad]] = Err(Invalid::BadSignature);
    }
}

/// Writes a secret key as hex to a new file readable only by its owner (mode 0600), refusing to
/// overwrite an existing key: losing a validator key is not something to do by accident.
pub fn write_key_file(path: &Path, key: &SigningKey) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    let mut text = hex::encode(key.to_bytes());
    text.push('\n');
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Reads a key written by [`write_key_file`].
pub fn read_key_file(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::InvalidKey(format!("{}: not 32 bytes of hex", path.display())))?;
    Ok(SigningKey::from_bytes(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tx::Transaction;

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
        let (sk, vk) = keys(4);
        let mut txs: Vec<SignedTransaction> = (0..50u32)
            .map(|i| {
                SignedTransaction::sign(
                    Transaction::ConsentUsed {
                        patient_id: "p".into(),
                        doctor_id: "d".into(),
                        consent_hash: [i as u8; 32],
                    },
                    i as u64,
                    [0; 16],
                    i % 4,
                    &sk[(i % 4) as usize],
                )
            })
            .collect();
        let requests = |txs: &[SignedTransaction]| -> Vec<pbft::Request> {
            txs.iter().map(SignedTransaction::to_request).collect()
        };
        let verdicts = check_entries(&vk, &requests(&txs));
        assert!(verdicts.iter().zip(&txs).all(|(v, t)| v.as_ref() == Ok(t)));

        txs[37].signature[10] ^= 0x40;
        txs[41].signature[0] ^= 0x01;
        txs[12].validator = 9;
        let mut entries = requests(&txs);
        entries[3].payload = std::sync::Arc::from(&b"garbage"[..]);
        entries[5].timestamp_ms += 1;
        entries[6].id[0] ^= 1;
        let verdicts = check_entries(&vk, &entries);
        let invalid: Vec<(usize, Invalid)> = verdicts
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.as_ref().err().map(|e| (i, *e)))
            .collect();
        assert_eq!(
            invalid,
            [
                (3, Invalid::Undecodable),
                (5, Invalid::TimestampMismatch),
                (6, Invalid::IdMismatch),
                (12, Invalid::UnknownValidator),
                (37, Invalid::BadSignature),
                (41, Invalid::BadSignature),
            ]
        );
        // A verdict does not depend on the company an entry keeps.
        assert_eq!(
            check_entries(&vk, &entries[37..38]),
            [Err(Invalid::BadSignature)]
        );
        assert!(check_entries(&vk, &[]).is_empty());
    }

    #[test]
    fn key_file_round_trips_with_owner_only_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.key");
        let key = generate_key();
        write_key_file(&path, &key).expect("writes");
        assert_eq!(
            read_key_file(&path).expect("reads").to_bytes(),
            key.to_bytes()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(
            write_key_file(&path, &key).is_err(),
            "never overwrites a key"
        );
        std::fs::write(&path, "zz").expect("write");
        assert!(read_key_file(&path).is_err());
    }
}
