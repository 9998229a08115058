//! Sealed bodies: what a record, a request's purpose or a grant's purpose looks like on chain
//! (docs/SECURITY.md, "Confidential records", §1).
//!
//! The content of a sealed kind is encrypted with XChaCha20-Poly1305 under a **data key** of
//! its own (32 random bytes, one per transaction, §3.1). The associated data is the chain's
//! genesis hash and the transaction's header without its `body_hash`, so a body moved into
//! another transaction, kind or chain does not open. The stored body carries a commitment to
//! its key, bound to its transaction (SHA-256 of a tag, the same associated data and the key):
//! ChaCha20-Poly1305 is not key-committing, and the commitment makes a body open to one
//! plaintext for every reader; bound, a commitment copied into another transaction matches no
//! key there (red team of the code, break 4). Whether one key sealed two transactions is seen
//! by each key store through [`key_id`], never on chain. The plaintext is padded to a multiple
//! of [`PAD_UNIT_BYTES`] so that only a body's length band is visible.
//!
//! The rules never read a body; [`check_body_format`] looks at its framing only, at the edge,
//! so that no plaintext body can reach a block by a correct node's bug.
use borsh::{BorshDeserialize, BorshSerialize};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::Hash;
use crate::tx::{Meta, TxHeader};

/// The version byte of a [`SealedBody`].
pub const SEAL_VERSION: u8 = 1;

/// Plaintexts are padded to a multiple of this many bytes: a body's length is visible in
/// steps of 64 (docs/SECURITY.md, "Confidential records", §2; 256 before §12.1 item 5, which
/// cost 96 bytes more per sealed body on average, at every validator).
pub const PAD_UNIT_BYTES: usize = 64;

/// The AEAD's tag, appended to every ciphertext.
pub const TAG_BYTES: usize = 16;

/// Domain tag of a sealed body's associated data.
const AD_TAG: &[u8] = b"medchain/seal/v1";

/// Domain tag of a data key's commitment (v2: bound to its transaction).
const COMMIT_TAG: &[u8] = b"medchain/seal-key/v2";

/// Domain tag of a data key's id in a key store.
const KEY_ID_TAG: &[u8] = b"medchain/key-id/v1";

/// Bytes of a [`SealedBody`] around its ciphertext: version (1), commitment (32), nonce (24)
/// and the ciphertext's borsh length (4).
pub const SEALED_OVERHEAD_BYTES: usize = 1 + 32 + 24 + 4;

/// Bytes of a [`SealedPlain`] around its body: the two borsh lengths.
const PLAIN_OVERHEAD_BYTES: usize = 4 + 4;

/// The largest content (borsh of a record or purpose) that fits a sealed body of at most
/// [`crate::tx::MAX_BODY_BYTES`]: the API's limit follows it.
pub const MAX_PLAIN_BYTES: usize = {
    let ciphertext = crate::tx::MAX_BODY_BYTES - SEALED_OVERHEAD_BYTES;
    let plain = (ciphertext - TAG_BYTES) / PAD_UNIT_BYTES * PAD_UNIT_BYTES;
    plain - PLAIN_OVERHEAD_BYTES
};

/// One transaction's data key. Never printed, zeroed when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// A fresh key from the operating system's generator.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        DataKey(key)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        DataKey(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The commitment the sealed body of `header`'s transaction, on the chain `genesis_hash`
    /// names, carries when this key seals it: `SHA-256("medchain/seal-key/v2" ||
    /// seal_ad(genesis_hash, header) || key)`. Bound to the transaction, so a commitment
    /// copied into another transaction's body is the commitment of no key there.
    pub fn commitment(&self, genesis_hash: &Hash, header: &TxHeader) -> Hash {
        self.commitment_under(&seal_ad(genesis_hash, header))
    }

    /// [`DataKey::commitment`] for the associated data `ad` of its transaction.
    fn commitment_under(&self, ad: &[u8]) -> Hash {
        let mut bytes = Zeroizing::new(Vec::with_capacity(COMMIT_TAG.len() + ad.len() + 32));
        bytes.extend_from_slice(COMMIT_TAG);
        bytes.extend_from_slice(ad);
        bytes.extend_from_slice(self.as_bytes());
        crate::sha256(&bytes)
    }
}

/// The id of a data key in a key store: `SHA-256("medchain/key-id/v1" || key)`, bound to
/// nothing, so the same key has the same id whichever transaction names it. A key store keeps
/// it UNIQUE and refuses a second transaction sealed under a key it holds (docs/SECURITY.md,
/// "Confidential records", §16 item 13): the chain cannot show key reuse, since a body's
/// commitment is bound to its own transaction. Never put on chain or sent: it is for local
/// lookups only (the hash of a 256-bit random key reveals nothing of it).
pub fn key_id(key: &DataKey) -> Hash {
    let mut bytes = Zeroizing::new(Vec::with_capacity(KEY_ID_TAG.len() + 32));
    bytes.extend_from_slice(KEY_ID_TAG);
    bytes.extend_from_slice(key.as_bytes());
    crate::sha256(&bytes)
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// A sealed kind's body as stored on chain: `borsh(SealedBody)`.
#[derive(Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SealedBody {
    /// [`SEAL_VERSION`].
    pub version: u8,
    /// [`DataKey::commitment`] of the key that opens it, bound to this body's transaction
    /// (genesis hash and header): it names the key only together with that header.
    pub key_commit: Hash,
    pub nonce: [u8; 24],
    /// XChaCha20-Poly1305 of `borsh(SealedPlain)`, tag appended.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedBody")
            .field("version", &self.version)
            .field("key_commit", &hex::encode(self.key_commit))
            .field("ciphertext_bytes", &self.ciphertext.len())
            .finish()
    }
}

impl SealedBody {
    pub fn to_bytes(&self) -> Vec<u8> {
        borsh::to_vec(self).unwrap_or_default()
    }

    /// The body of `stored`, if it is one in the current format (see [`check_body_format`]).
    pub fn from_bytes(stored: &[u8]) -> Result<Self, SealError> {
        let body = SealedBody::try_from_slice(stored).map_err(|_| SealError::Format)?;
        let n = body.ciphertext.len();
        let framed = body.version == SEAL_VERSION
            && n >= PAD_UNIT_BYTES + TAG_BYTES
            && (n - TAG_BYTES).is_multiple_of(PAD_UNIT_BYTES);
        if framed {
            Ok(body)
        } else {
            Err(SealError::Format)
        }
    }
}

/// What is encrypted: the content and the padding that rounds its length up. The padding is
/// zero bytes inside the AEAD's plaintext, not a cipher padding.
#[derive(BorshSerialize, BorshDeserialize)]
struct SealedPlain {
    body: Vec<u8>,
    pad: Vec<u8>,
}

/// Why a body does not open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not a [`SealedBody`] of the current version and framing.
    #[error("body is not a sealed body of this format")]
    Format,
    /// The key is not the one the body commits to.
    #[error("key does not match the body's commitment")]
    WrongKey,
    /// The key matches the commitment but the ciphertext does not open under this header: sealed
    /// wrongly (a body moved from another transaction fails the bound commitment first).
    #[error("sealed body does not open under its transaction's header")]
    DoesNotOpen,
    /// The content is larger than [`MAX_PLAIN_BYTES`].
    #[error("content is larger than a sealed body may carry")]
    TooLarge,
}

/// Whether `meta`'s kind carries content, sealed (`AddRecord`, `RequestGrant`, `Grant`).
pub fn is_sealed_kind(meta: &Meta) -> bool {
    matches!(
        meta,
        Meta::AddRecord(_) | Meta::RequestGrant(_) | Meta::Grant(_)
    )
}

/// The associated data of `header`'s sealed body on the chain `genesis_hash` names: the tag,
/// the genesis hash and the borsh of the header with `body_hash` zeroed (the id cannot be
/// used: it hashes `body_hash`, which hashes the ciphertext).
pub fn seal_ad(genesis_hash: &Hash, header: &TxHeader) -> Vec<u8> {
    let mut unhashed = header.clone();
    unhashed.body_hash = [0; 32];
    let mut ad = Vec::with_capacity(AD_TAG.len() + 32 + 192);
    ad.extend_from_slice(AD_TAG);
    ad.extend_from_slice(genesis_hash);
    // Writing into a Vec cannot fail.
    let _ = BorshSerialize::serialize(&unhashed, &mut ad);
    ad
}

/// Seals `content` (borsh of a record or purpose) for `header`, whose every field but
/// `body_hash` must be final (the signer included): draws the data key, encrypts, sets
/// `header.body_hash` to the stored body's hash and returns the key and the stored body.
pub fn seal(
    genesis_hash: &Hash,
    header: &mut TxHeader,
    content: &[u8],
) -> Result<(DataKey, Vec<u8>), SealError> {
    let key = DataKey::generate();
    let mut nonce = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let stored = seal_with(genesis_hash, header, content, &key, nonce)?;
    Ok((key, stored))
}

/// [`seal`] under a given key and nonce: for [`seal`] itself, and for test vectors and test
/// chains, which must be the same on every run. A key seals one body: never call it twice with
/// one key outside tests.
pub fn seal_with(
    genesis_hash: &Hash,
    header: &mut TxHeader,
    content: &[u8],
    key: &DataKey,
    nonce: [u8; 24],
) -> Result<Vec<u8>, SealError> {
    if content.len() > MAX_PLAIN_BYTES {
        return Err(SealError::TooLarge);
    }
    let padded = (content.len() + PLAIN_OVERHEAD_BYTES).div_ceil(PAD_UNIT_BYTES) * PAD_UNIT_BYTES;
    let plain = Zeroizing::new(
        borsh::to_vec(&SealedPlain {
            body: content.to_vec(),
            pad: vec![0; padded - content.len() - PLAIN_OVERHEAD_BYTES],
        })
        .unwrap_or_default(),
    );
    let ad = seal_ad(genesis_hash, header);
    let key_commit = key.commitment_under(&ad);
    let ciphertext = cipher(key)
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &ad,
            },
        )
        .map_err(|_| SealError::TooLarge)?;
    let stored = SealedBody {
        version: SEAL_VERSION,
        key_commit,
        nonce,
        ciphertext,
    }
    .to_bytes();
    header.body_hash = crate::sha256(&stored);
    Ok(stored)
}

/// Checks `key` against the commitment of the stored body of the transaction `header` names:
/// what a node does with a key it receives before it stores it ([`open`] does it too).
pub fn check_key(
    genesis_hash: &Hash,
    header: &TxHeader,
    stored: &[u8],
    key: &DataKey,
) -> Result<(), SealError> {
    let body = SealedBody::from_bytes(stored)?;
    committed(&body, &seal_ad(genesis_hash, header), key)
}

/// Whether `body` commits to `key` under its transaction's associated data `ad`.
fn committed(body: &SealedBody, ad: &[u8], key: &DataKey) -> Result<(), SealError> {
    if body.key_commit == key.commitment_under(ad) {
        Ok(())
    } else {
        Err(SealError::WrongKey)
    }
}

/// Opens the stored body of the transaction `header` names with `key`: checks the key against
/// the body's commitment under the header, then decrypts under the header's associated data.
pub fn open(
    genesis_hash: &Hash,
    header: &TxHeader,
    stored: &[u8],
    key: &DataKey,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let body = SealedBody::from_bytes(stored)?;
    let ad = seal_ad(genesis_hash, header);
    committed(&body, &ad, key)?;
    let plain = Zeroizing::new(
        cipher(key)
            .decrypt(
                XNonce::from_slice(&body.nonce),
                Payload {
                    msg: &body.ciphertext,
                    aad: &ad,
                },
            )
            .map_err(|_| SealError::DoesNotOpen)?,
    );
    let opened = SealedPlain::try_from_slice(&plain).map_err(|_| SealError::DoesNotOpen)?;
    let SealedPlain { body, pad } = opened;
    drop(Zeroizing::new(pad));
    Ok(Zeroizing::new(body))
}

/// The key commitment a stored sealed body carries, if it is one: the value stored, which a
/// key matches only together with its transaction's header ([`DataKey::commitment`],
/// [`check_key`]).
pub fn key_commitment(stored: &[u8]) -> Result<Hash, SealError> {
    SealedBody::from_bytes(stored).map(|b| b.key_commit)
}

/// The edge check of a body's framing (§1.3): a sealed kind's body is a [`SealedBody`] of the
/// current version with a whole number of padding units; every other kind's body is empty.
pub fn check_body_format(meta: &Meta, stored: &[u8]) -> Result<(), SealError> {
    if is_sealed_kind(meta) {
        SealedBody::from_bytes(stored).map(|_| ())
    } else if stored.is_empty() {
        Ok(())
    } else {
        Err(SealError::Format)
    }
}

fn cipher(key: &DataKey) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.as_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TestNet;
    use crate::tx::RecordBody;

    const GENESIS: Hash = [9; 32];

    fn record_header() -> TxHeader {
        let net = TestNet::new(4);
        let (patient, doctor) = (net.patient(1, 0), net.doctor(2, 0, "Oncology"));
        let meta = Meta::AddRecord(crate::tx::AddRecord {
            patient: patient.id,
            doctor: doctor.id,
            department: "Oncology".into(),
            grant: [1; 32],
        });
        net.header(meta, doctor.custodial().signer)
    }

    fn content(text: &str) -> Vec<u8> {
        RecordBody {
            diagnosis: text.into(),
            prescription: "R-CHOP".into(),
            notes: String::new(),
        }
        .to_bytes()
    }

    #[test]
    fn a_sealed_body_opens_under_its_own_header_with_its_key() {
        let mut header = record_header();
        let (key, stored) = seal(&GENESIS, &mut header, &content("Lymphoma")).unwrap();
        assert_eq!(header.body_hash, crate::sha256(&stored));
        assert_eq!(
            *open(&GENESIS, &header, &stored, &key).unwrap(),
            content("Lymphoma")
        );
        assert!(!stored.windows(8).any(|w| w == b"Lymphoma"));
        assert_eq!(
            key_commitment(&stored).unwrap(),
            key.commitment(&GENESIS, &header)
        );
        assert_eq!(check_key(&GENESIS, &header, &stored, &key), Ok(()));
    }

    /// Red team of the code, break 4: the commitment is bound to its transaction, so a body
    /// moved, or a commitment copied, into another header names no key there, and the key's
    /// id in a key store is the same whichever transaction names it.
    #[test]
    fn a_commitment_names_its_key_only_under_its_own_header() {
        let mut header = record_header();
        let (key, stored) = seal(&GENESIS, &mut header, &content("Lymphoma")).unwrap();
        let mut other = header.clone();
        other.nonce[0] ^= 1;
        assert_ne!(
            key.commitment(&GENESIS, &other),
            key_commitment(&stored).unwrap()
        );
        assert_ne!(
            key.commitment(&[8; 32], &header),
            key.commitment(&GENESIS, &header)
        );
        assert_eq!(
            check_key(&GENESIS, &other, &stored, &key),
            Err(SealError::WrongKey)
        );
        assert_eq!(
            open(&GENESIS, &other, &stored, &key),
            Err(SealError::WrongKey)
        );
        // The same key sealing a second transaction (a sealer's bug): another commitment, the
        // same id.
        let mut second = record_header();
        second.created_ms += 1;
        let again = seal_with(&GENESIS, &mut second, &content("x"), &key, [3; 24]).unwrap();
        assert_ne!(
            key_commitment(&again).unwrap(),
            key_commitment(&stored).unwrap()
        );
        assert_eq!(key_id(&key), key_id(&key.clone()));
        assert_ne!(key_id(&key), key_id(&DataKey::generate()));
        assert_ne!(key_id(&key), key_commitment(&stored).unwrap());
    }

    #[test]
    fn a_sealed_body_opens_only_under_its_own_header() {
        let mut header = record_header();
        let (key, stored) = seal(&GENESIS, &mut header, &content("Lymphoma")).unwrap();
        let mut other = header.clone();
        other.nonce[0] ^= 1;
        let mut signer = header.clone();
        signer.created_ms += 1;
        for (genesis, header) in [(GENESIS, &other), ([8; 32], &header), (GENESIS, &signer)] {
            // The commitment is bound to the header: refused before decryption.
            assert_eq!(
                open(&genesis, header, &stored, &key),
                Err(SealError::WrongKey)
            );
            // With a commitment made for the other header, the AEAD's associated data still
            // refuses the ciphertext.
            let mut forged = SealedBody::from_bytes(&stored).unwrap();
            forged.key_commit = key.commitment(&genesis, header);
            assert_eq!(
                open(&genesis, header, &forged.to_bytes(), &key),
                Err(SealError::DoesNotOpen)
            );
        }
    }

    #[test]
    fn a_key_that_does_not_match_its_commitment_is_refused() {
        let mut header = record_header();
        let (_, stored) = seal(&GENESIS, &mut header, &content("x")).unwrap();
        assert_eq!(
            open(&GENESIS, &header, &stored, &DataKey::generate()),
            Err(SealError::WrongKey)
        );
    }

    #[test]
    fn lengths_are_visible_only_in_steps_of_the_pad_unit() {
        let mut lengths = std::collections::BTreeSet::new();
        for n in [
            0,
            1,
            PAD_UNIT_BYTES / 2,
            PAD_UNIT_BYTES - PLAIN_OVERHEAD_BYTES,
        ] {
            let mut header = record_header();
            let (_, stored) = seal(&GENESIS, &mut header, &vec![7; n]).unwrap();
            lengths.insert(stored.len());
        }
        assert_eq!(lengths.len(), 1, "{lengths:?}");
        let mut header = record_header();
        let (_, longer) = seal(&GENESIS, &mut header, &[7; PAD_UNIT_BYTES]).unwrap();
        assert_eq!(longer.len(), lengths.first().unwrap() + PAD_UNIT_BYTES);
    }

    #[test]
    fn the_largest_content_fits_the_largest_body() {
        let mut header = record_header();
        let (key, stored) = seal(&GENESIS, &mut header, &vec![1; MAX_PLAIN_BYTES]).unwrap();
        assert!(
            stored.len() <= crate::tx::MAX_BODY_BYTES,
            "{}",
            stored.len()
        );
        assert_eq!(
            open(&GENESIS, &header, &stored, &key).unwrap().len(),
            MAX_PLAIN_BYTES
        );
        assert_eq!(
            seal(&GENESIS, &mut header, &vec![1; MAX_PLAIN_BYTES + 1]).map(|_| ()),
            Err(SealError::TooLarge)
        );
    }

    #[test]
    fn an_unsealed_record_and_a_body_on_a_kind_without_content_are_malformed() {
        let mut header = record_header();
        assert_eq!(
            check_body_format(&header.meta, &content("Lymphoma")),
            Err(SealError::Format)
        );
        let (_, stored) = seal(&GENESIS, &mut header, &content("Lymphoma")).unwrap();
        assert_eq!(check_body_format(&header.meta, &stored), Ok(()));
        let mut truncated = SealedBody::from_bytes(&stored).unwrap();
        truncated.ciphertext.pop();
        assert_eq!(
            check_body_format(&header.meta, &truncated.to_bytes()),
            Err(SealError::Format)
        );
        let access = crate::tx::Meta::Access(crate::tx::Access {
            patient: [1; 16],
            reader: [2; 16],
            serving: 0,
            grant: None,
        });
        assert_eq!(check_body_format(&access, &[]), Ok(()));
        assert_eq!(
            check_body_format(&access, b"Lymphoma"),
            Err(SealError::Format)
        );
    }

    #[test]
    fn keys_print_nothing() {
        let key = DataKey::from_bytes([0xab; 32]);
        assert_eq!(format!("{key:?}"), "DataKey(..)");
    }
}
