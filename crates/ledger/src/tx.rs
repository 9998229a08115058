//! Transactions: one signed envelope for every kind (docs/SECURITY.md, "Identities, keys and
//! consent on chain", §1-2).
//!
//! A transaction is a [`TxHeader`] (the kind and its metadata as a [`Meta`], the [`Signer`], the
//! signer's clock, a deadline, a nonce and the hash of the body), the body bytes as stored, and
//! one Ed25519 signature over [`signing_bytes`]: the domain tag `medchain/tx/v2`, the genesis
//! hash and the borsh bytes of the header. The id is SHA-256 of those same bytes, the signature
//! excluded: ZIP-215 accepts several encodings of one signature, and an id over the signature
//! would let anyone re-encode a signed grant into a second transaction.
//!
//! The signature is checked at the edge under the key written in the envelope (or the genesis
//! key of a validator signer), with every new key's proof of possession
//! ([`crate::crypto::check_entries`]); whether that key belongs to the person, is live and may
//! sign this kind is decided by [`crate::rules`], at the transaction's place in the chain. The
//! rules read the metadata only, never a body, so that the next issue can store bodies sealed.
use std::sync::Arc;

use borsh::{BorshDeserialize, BorshSerialize};
use ed25519_dalek::{Signer as _, SigningKey};
use serde::{Deserialize, Serialize};

use crate::{Error, Hash, Result};

/// Domain tag of a transaction signature (and of its id): no other signed bytes (a pbft
/// message, a key proof, a transaction of another format) can be taken for a transaction's.
pub const TX_SIGNING_TAG: &[u8] = b"medchain/tx/v2";

/// Domain tag of a new key's proof of possession ([`key_pop_bytes`]).
pub const KEY_POP_TAG: &[u8] = b"medchain/key-pop/v2";

/// Domain tag of a person id's derivation ([`person_id`]).
pub const PERSON_TAG: &[u8] = b"medchain/person/v1";

/// The largest body a transaction may carry (64 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The largest encoded [`SignedTx`]: a body and 1 KiB of header and signature.
pub const MAX_TX_BYTES: usize = MAX_BODY_BYTES + 1024;

/// A person's consortium-wide identifier: 16 bytes derived from the home and a random nonce
/// ([`person_id`]), shown as 32 hex digits.
pub type PersonId = [u8; 16];

/// An Ed25519 public key, 32 bytes.
pub type PublicKey = [u8; 32];

/// A transaction id: SHA-256 of its [`signing_bytes`].
pub type TxId = Hash;

/// Hex (de)serialisation of fixed byte arrays, for the JSON views of transactions.
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| D::Error::custom(format!("expected {} hex digits", 2 * N)))
    }

    /// The same for an optional array (`null` when absent).
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer, const N: usize>(
            bytes: &Option<[u8; N]>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match bytes {
                Some(b) => s.serialize_some(&hex::encode(b)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
            d: D,
        ) -> Result<Option<[u8; N]>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped<const M: usize>(#[serde(with = "super")] [u8; M]);
            Ok(Option::<Wrapped<N>>::deserialize(d)?.map(|w| w.0))
        }
    }
}

/// A person's role, fixed at enrollment.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Patient,
    Doctor,
}

/// Who holds a key: the person's browser (device) or the person's home hospital (custodial).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    Device,
    Custodial,
}

/// Which kind of key signed a transaction: the variant index of [`Signer`].
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SignerKind {
    Device,
    Custodial,
    Validator,
}

impl From<KeyKind> for SignerKind {
    fn from(kind: KeyKind) -> Self {
        match kind {
            KeyKind::Device => SignerKind::Device,
            KeyKind::Custodial => SignerKind::Custodial,
        }
    }
}

/// A key registered for a person, with its proof of possession.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct NewKey {
    #[serde(with = "hex_bytes")]
    pub key: PublicKey,
    pub kind: KeyKind,
    /// The validator whose page or custody made the key: the person's home for a custodial
    /// key and a device key made at the home's page, the asking validator for a key made at
    /// another hospital's page. The rules check it against the transaction ([`crate::rules`]),
    /// and the key's row keeps it (which keys it may revoke).
    pub origin: u32,
    /// Text from the page or the hospital that made the key (at most 64 characters); shown
    /// only as secondary text, never as the key's origin.
    pub label: String,
    /// The new key's signature over [`key_pop_bytes`]`(genesis, person, key, kind, origin)`:
    /// nobody can register a key they do not hold, nor register a key seen in another
    /// validator's transaction as a key of another kind or origin.
    #[serde(with = "hex_bytes")]
    pub pop: [u8; 64],
}

impl NewKey {
    /// A new key of `person` made by validator `origin`'s page or custody, its proof of
    /// possession signed with `secret`.
    pub fn prove(
        genesis_hash: &Hash,
        person: &PersonId,
        kind: KeyKind,
        origin: u32,
        label: impl Into<String>,
        secret: &SigningKey,
    ) -> NewKey {
        let key = secret.verifying_key().to_bytes();
        NewKey {
            key,
            kind,
            origin,
            label: label.into(),
            pop: secret
                .sign(&key_pop_bytes(genesis_hash, person, &key, kind, origin))
                .to_bytes(),
        }
    }

    /// The bytes this key's [`NewKey::pop`] signs, for `person`.
    pub fn pop_bytes(&self, genesis_hash: &Hash, person: &PersonId) -> Vec<u8> {
        key_pop_bytes(genesis_hash, person, &self.key, self.kind, self.origin)
    }
}

/// `person = SHA-256("medchain/person/v1" || home (u32 LE) || nonce)[0..16]`: only validator
/// `home` can enroll it (the `Enroll` rule checks the derivation), so no other validator can
/// enroll a person id first and become that person's home.
pub fn person_id(home: u32, nonce: &[u8; 16]) -> PersonId {
    let mut bytes = Vec::with_capacity(PERSON_TAG.len() + 4 + 16);
    bytes.extend_from_slice(PERSON_TAG);
    bytes.extend_from_slice(&home.to_le_bytes());
    bytes.extend_from_slice(nonce);
    let digest = crate::sha256(&bytes);
    let mut id = [0; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// What a new key signs to prove it is held by whoever registers it, as what kind and made
/// by which validator: `"medchain/key-pop/v2" || genesis_hash || person || key || kind (1 byte:
/// 0 device, 1 custodial) || origin (u32 LE)`. The kind and origin are bound so that a
/// validator that sees a key go by (in another hospital's public `Ask`) cannot register it
/// first under its own origin or as a custodial key.
pub fn key_pop_bytes(
    genesis_hash: &Hash,
    person: &PersonId,
    key: &PublicKey,
    kind: KeyKind,
    origin: u32,
) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(KEY_POP_TAG.len() + 32 + 16 + 32 + 1 + 4);
    bytes.extend_from_slice(KEY_POP_TAG);
    bytes.extend_from_slice(genesis_hash);
    bytes.extend_from_slice(person);
    bytes.extend_from_slice(key);
    bytes.push(kind as u8);
    bytes.extend_from_slice(&origin.to_le_bytes());
    bytes
}

/// A new person, enrolled by their home validator.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Enroll {
    /// [`person_id`]`(home, nonce)`.
    #[serde(with = "hex_bytes")]
    pub person: PersonId,
    #[serde(with = "hex_bytes")]
    pub nonce: [u8; 16],
    pub role: Role,
    /// A doctor's department (1 to 64 characters); a patient has none.
    pub department: Option<String>,
    /// A doctor's public professional name (1 to 64 characters), shown to patients at every
    /// hospital; a patient has none (a patient's name is never on chain).
    pub name: Option<String>,
    /// The validator that verified who the person is, and holds their custodial key.
    pub home: u32,
    /// 1 to 8 keys, normally one custodial key.
    pub keys: Vec<NewKey>,
}

/// What an [`Ask`] asks for.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AskWhat {
    /// A login at the asking validator, linked to the person.
    Link,
    /// A key made at the asking validator's page.
    Key(NewKey),
}

/// A validator's rendezvous for the person's approval, answered by a [`Link`] or an [`AddKey`].
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Ask {
    #[serde(with = "hex_bytes")]
    pub person: PersonId,
    pub what: AskWhat,
}

/// Validator `validator` may serve `person` (own reads), approved by the person's key.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Link {
    #[serde(with = "hex_bytes")]
    pub person: PersonId,
    pub validator: u32,
    #[serde(with = "hex_bytes::option")]
    pub ask: Option<TxId>,
}

/// A new key of `person`, approved by one of their keys.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct AddKey {
    #[serde(with = "hex_bytes")]
    pub person: PersonId,
    pub key: NewKey,
    #[serde(with = "hex_bytes::option")]
    pub ask: Option<TxId>,
}

/// `key` of `person` signs nothing after this commits; revoking a key that waits for its
/// recovery cancels that recovery.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct RevokeKey {
    #[serde(with = "hex_bytes")]
    pub person: PersonId,
    #[serde(with = "hex_bytes")]
    pub key: PublicKey,
}

/// The home re-enrolls a custodial key for `person`, usable after the genesis's
/// `recovery_wait_ms` unless one of the person's keys revokes it first.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Recover {
    #[serde(with = "hex_bytes")]
    pub person: PersonId,
    pub key: NewKey,
}

/// What a grant allows its doctor.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One record, within [`crate::rules::WRITE_GRANT_MS`] of the grant's block.
    Write,
    /// Reads until `duration_ms` after the grant's block (1 minute to 30 days).
    Read { duration_ms: u64 },
}

/// A doctor asks a patient remotely for a grant.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct RequestGrant {
    #[serde(with = "hex_bytes")]
    pub patient: PersonId,
    #[serde(with = "hex_bytes")]
    pub doctor: PersonId,
    pub scope: Scope,
}

/// How the patient gave a grant: on their own device, or in person at their home (where the
/// home's custodial key signs).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Attested {
    Device,
    InPerson,
}

/// A patient's grant to a doctor.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Grant {
    #[serde(with = "hex_bytes")]
    pub patient: PersonId,
    #[serde(with = "hex_bytes")]
    pub doctor: PersonId,
    pub scope: Scope,
    /// The request this grant answers, if any.
    #[serde(with = "hex_bytes::option")]
    pub request: Option<TxId>,
    pub attested: Attested,
}

/// A patient revokes a grant not used up, or denies a pending request.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Revoke {
    #[serde(with = "hex_bytes")]
    pub patient: PersonId,
    #[serde(with = "hex_bytes")]
    pub target: TxId,
}

/// A record by `doctor` in `patient`'s history, under write grant `grant` (used up by it).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct AddRecord {
    #[serde(with = "hex_bytes")]
    pub patient: PersonId,
    #[serde(with = "hex_bytes")]
    pub doctor: PersonId,
    pub department: String,
    #[serde(with = "hex_bytes")]
    pub grant: TxId,
}

/// Validator `serving` served `reader` the records of `patient`: an own read (no grant), or a
/// doctor's read under a live read grant.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Access {
    #[serde(with = "hex_bytes")]
    pub patient: PersonId,
    #[serde(with = "hex_bytes")]
    pub reader: PersonId,
    pub serving: u32,
    #[serde(with = "hex_bytes::option")]
    pub grant: Option<TxId>,
}

/// The patient asks for sealed transaction `tx` of theirs (a record, a request or a grant, whose
/// purpose is sealed) to be erased (GDPR Art. 17): its sealer answers with an
/// [`AnswerErasure`]. The body is empty.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct RequestErasure {
    #[serde(with = "hex_bytes")]
    pub patient: PersonId,
    #[serde(with = "hex_bytes")]
    pub tx: TxId,
}

/// The hospital that sealed the transaction an erasure request names answers it. The body is
/// empty.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct AnswerErasure {
    /// The `RequestErasure`.
    #[serde(with = "hex_bytes")]
    pub request: TxId,
    pub decision: Decision,
}

/// What a hospital decides on an erasure request.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Every correct validator deletes the keys that open the transaction's body.
    Erase,
    /// Kept, for a reason the patient sees, until `until_ms` if the reason has an end (a
    /// retention period). A refused request may be made again.
    Refuse {
        reason: Refusal,
        until_ms: Option<u64>,
    },
}

/// Why an erasure is refused: the exceptions of GDPR Art. 17(3), as codes (free text about a
/// record could say what the record says).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// A legal obligation to keep medical records for a period (Art. 17(3)(b)).
    RetentionPeriod,
    /// Needed for the patient's ongoing care (Art. 17(3)(c), Art. 9(2)(h)).
    OngoingCare,
    /// Needed to establish, exercise or defend legal claims (Art. 17(3)(e)).
    LegalClaims,
    /// Public health (Art. 17(3)(c), Art. 9(2)(i)).
    PublicHealth,
}

/// The kind of a transaction and its metadata: the variant index is the kind byte of the
/// signed bytes. Append-only: a variant is never renumbered or removed.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(tag = "kind", content = "meta", rename_all = "snake_case")]
pub enum Meta {
    Enroll(Enroll),
    Ask(Ask),
    Link(Link),
    AddKey(AddKey),
    RevokeKey(RevokeKey),
    Recover(Recover),
    RequestGrant(RequestGrant),
    Grant(Grant),
    Revoke(Revoke),
    AddRecord(AddRecord),
    Access(Access),
    RequestErasure(RequestErasure),
    AnswerErasure(AnswerErasure),
}

impl Meta {
    /// Every kind's name, in kind-byte order: the `kind` column of the store.
    pub const KINDS: [&'static str; 13] = [
        "enroll",
        "ask",
        "link",
        "add_key",
        "revoke_key",
        "recover",
        "request_grant",
        "grant",
        "revoke",
        "add_record",
        "access",
        "request_erasure",
        "answer_erasure",
    ];

    /// The kind byte (the borsh variant index).
    pub fn kind_byte(&self) -> u8 {
        match self {
            Meta::Enroll(_) => 0,
            Meta::Ask(_) => 1,
            Meta::Link(_) => 2,
            Meta::AddKey(_) => 3,
            Meta::RevokeKey(_) => 4,
            Meta::Recover(_) => 5,
            Meta::RequestGrant(_) => 6,
            Meta::Grant(_) => 7,
            Meta::Revoke(_) => 8,
            Meta::AddRecord(_) => 9,
            Meta::Access(_) => 10,
            Meta::RequestErasure(_) => 11,
            Meta::AnswerErasure(_) => 12,
        }
    }

    /// The kind's name, as stored in the `kind` column and named in reasons.
    pub fn kind(&self) -> &'static str {
        Meta::KINDS[self.kind_byte() as usize]
    }

    /// The person the transaction is about (the patient of a grant, record, access or erasure
    /// request), if its metadata names one: an erasure's answer names only the request.
    pub fn subject(&self) -> Option<&PersonId> {
        Some(match self {
            Meta::Enroll(m) => &m.person,
            Meta::Ask(m) => &m.person,
            Meta::Link(m) => &m.person,
            Meta::AddKey(m) => &m.person,
            Meta::RevokeKey(m) => &m.person,
            Meta::Recover(m) => &m.person,
            Meta::RequestGrant(m) => &m.patient,
            Meta::Grant(m) => &m.patient,
            Meta::Revoke(m) => &m.patient,
            Meta::AddRecord(m) => &m.patient,
            Meta::Access(m) => &m.patient,
            Meta::RequestErasure(m) => &m.patient,
            Meta::AnswerErasure(_) => return None,
        })
    }

    /// The keys this transaction registers, with the person each is for: each carries a
    /// proof of possession, checked at the edge.
    pub fn new_keys(&self) -> Vec<(&PersonId, &NewKey)> {
        match self {
            Meta::Enroll(m) => m.keys.iter().map(|k| (&m.person, k)).collect(),
            Meta::Ask(Ask {
                person,
                what: AskWhat::Key(k),
            }) => vec![(person, k)],
            Meta::AddKey(m) => vec![(&m.person, &m.key)],
            Meta::Recover(m) => vec![(&m.person, &m.key)],
            _ => Vec::new(),
        }
    }
}

/// Who signed: a person's key (written out, so the signature check needs no state) or a
/// validator's genesis key.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Signer {
    /// A device key of `person` (their browser).
    Device {
        #[serde(with = "hex_bytes")]
        person: PersonId,
        #[serde(with = "hex_bytes")]
        key: PublicKey,
    },
    /// A custodial key of `person`, held by their home.
    Custodial {
        #[serde(with = "hex_bytes")]
        person: PersonId,
        #[serde(with = "hex_bytes")]
        key: PublicKey,
    },
    /// Validator `index`'s genesis key (its `node.key`).
    Validator { index: u32 },
}

impl Signer {
    pub fn kind(&self) -> SignerKind {
        match self {
            Signer::Device { .. } => SignerKind::Device,
            Signer::Custodial { .. } => SignerKind::Custodial,
            Signer::Validator { .. } => SignerKind::Validator,
        }
    }

    /// The person and key of a person's signature; `None` for a validator.
    pub fn person_key(&self) -> Option<(&PersonId, &PublicKey)> {
        match self {
            Signer::Device { person, key } | Signer::Custodial { person, key } => {
                Some((person, key))
            }
            Signer::Validator { .. } => None,
        }
    }
}

/// How long the signers medchain ships (its HTTP flows, the load generator) leave a transaction
/// valid for a block to include it (`not_after_ms`): long enough for any queue, short enough
/// that a seal whose transaction was never submitted, or refused, is deleted within the hour.
pub const SIGNATURE_LIFE_MS: u64 = 3_600_000;

/// Everything a transaction's signature and id cover (with the tag and the genesis hash).
/// The borsh field order is the byte order of the signed bytes.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct TxHeader {
    pub meta: Meta,
    pub signer: Signer,
    /// The signer's clock: shown, never judged (the block time is what rules judge by).
    pub created_ms: u64,
    /// Rejected in a block whose time is later than this.
    pub not_after_ms: u64,
    /// Random: two identical actions are two transactions.
    #[serde(with = "hex_bytes")]
    pub nonce: [u8; 16],
    /// SHA-256 of the body bytes exactly as stored.
    #[serde(with = "hex_bytes")]
    pub body_hash: Hash,
}

impl TxHeader {
    /// The bytes a signer signs for this header on the chain `genesis_hash` names.
    pub fn signing_bytes(&self, genesis_hash: &Hash) -> Vec<u8> {
        signing_bytes(genesis_hash, self)
    }

    /// The id of any transaction with this header: SHA-256 of its signing bytes.
    pub fn id(&self, genesis_hash: &Hash) -> TxId {
        crate::sha256(&signing_bytes(genesis_hash, self))
    }
}

/// `"medchain/tx/v2" || genesis_hash || borsh(header)`: what a transaction's signature covers,
/// and what its id hashes.
pub fn signing_bytes(genesis_hash: &Hash, header: &TxHeader) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(TX_SIGNING_TAG.len() + 32 + 160);
    bytes.extend_from_slice(TX_SIGNING_TAG);
    bytes.extend_from_slice(genesis_hash);
    // Writing into a Vec cannot fail.
    let _ = BorshSerialize::serialize(header, &mut bytes);
    bytes
}

/// A body of a record (`AddRecord`), borsh-encoded, then sealed ([`crate::seal`]). Read by the
/// application, never by the rules. `Debug` prints lengths only, so no log holds a diagnosis.
#[derive(
    Clone, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct RecordBody {
    pub diagnosis: String,
    pub prescription: String,
    pub notes: String,
}

/// The body of a `RequestGrant` or a `Grant`: why, in the patient's words or the doctor's;
/// sealed like a record. `Debug` prints its length only.
#[derive(
    Clone, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct PurposeBody {
    pub purpose: String,
}

impl std::fmt::Debug for RecordBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBody")
            .field("diagnosis_bytes", &self.diagnosis.len())
            .field("prescription_bytes", &self.prescription.len())
            .field("notes_bytes", &self.notes.len())
            .finish()
    }
}

impl std::fmt::Debug for PurposeBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurposeBody")
            .field("purpose_bytes", &self.purpose.len())
            .finish()
    }
}

macro_rules! body_bytes {
    ($t:ty, $what:literal) => {
        impl $t {
            pub fn to_bytes(&self) -> Vec<u8> {
                borsh::to_vec(self).unwrap_or_default()
            }

            pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
                <$t>::try_from_slice(bytes).map_err(|source| Error::Decode {
                    what: $what,
                    source,
                })
            }
        }
    };
}
body_bytes!(RecordBody, "record body");
body_bytes!(PurposeBody, "purpose body");

/// A transaction as it goes on chain: what a block entry's payload is, `borsh(SignedTx)`.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SignedTx {
    pub header: TxHeader,
    /// The kind's body as stored (this issue: borsh of [`RecordBody`] or [`PurposeBody`], or
    /// empty); its hash is `header.body_hash`.
    pub body: Vec<u8>,
    /// Ed25519 over [`signing_bytes`] by the signer's key.
    pub signature: [u8; 64],
}

impl SignedTx {
    /// Signs `header` with `body` (setting `header.body_hash` to the body's hash) with `key`,
    /// for the chain `genesis_hash` names.
    pub fn sign(
        mut header: TxHeader,
        body: Vec<u8>,
        genesis_hash: &Hash,
        key: &SigningKey,
    ) -> Self {
        header.body_hash = crate::sha256(&body);
        let signature = key.sign(&signing_bytes(genesis_hash, &header)).to_bytes();
        SignedTx {
            header,
            body,
            signature,
        }
    }

    /// SHA-256 of [`signing_bytes`]: the signature is not covered.
    pub fn id(&self, genesis_hash: &Hash) -> TxId {
        self.header.id(genesis_hash)
    }

    /// The bytes the signature covers.
    pub fn signing_bytes(&self, genesis_hash: &Hash) -> Vec<u8> {
        signing_bytes(genesis_hash, &self.header)
    }

    pub fn meta(&self) -> &Meta {
        &self.header.meta
    }

    /// The canonical bytes: borsh of the whole signed transaction.
    pub fn to_bytes(&self) -> Vec<u8> {
        borsh::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        SignedTx::try_from_slice(bytes).map_err(|source| Error::Decode {
            what: "signed transaction",
            source,
        })
    }

    /// The pbft request that orders this transaction: its id, `created_ms` and canonical bytes.
    pub fn to_request(&self, genesis_hash: &Hash) -> pbft::Request {
        pbft::Request {
            id: self.id(genesis_hash),
            timestamp_ms: self.header.created_ms,
            payload: Arc::from(self.to_bytes()),
        }
    }

    /// The Merkle leaf of this transaction in a block ([`crate::block::entry_hash`] of its
    /// request), so a client holding the transaction can check an inclusion proof.
    pub fn entry_hash(&self, genesis_hash: &Hash) -> Hash {
        crate::block::entry_hash(&self.to_request(genesis_hash))
    }

    /// Decodes a request's payload and checks what needs no key: the payload is at most
    /// [`MAX_TX_BYTES`] and decodes, its id and `created_ms` are the request's (consensus
    /// orders and deduplicates by the request's fields, the block is built from the
    /// transaction's), and the body is the one its hash names. Signatures are checked by
    /// [`crate::crypto::check_entries`], many at once.
    pub fn from_request(request: &pbft::Request, genesis_hash: &Hash) -> Result<Self, Invalid> {
        if request.payload.len() > MAX_TX_BYTES {
            return Err(Invalid::TooLarge);
        }
        let tx = SignedTx::from_bytes(&request.payload).map_err(|_| Invalid::Undecodable)?;
        if tx.id(genesis_hash) != request.id {
            return Err(Invalid::IdMismatch);
        }
        if tx.header.created_ms != request.timestamp_ms {
            return Err(Invalid::TimestampMismatch);
        }
        if crate::sha256(&tx.body) != tx.header.body_hash {
            return Err(Invalid::BodyMismatch);
        }
        // Framing only, never content: no plaintext body reaches a block by a correct node's
        // bug, and no kind without content carries free text (docs/SECURITY.md, §1.3).
        crate::seal::check_body_format(&tx.header.meta, &tx.body)
            .map_err(|_| Invalid::BodyFormat)?;
        Ok(tx)
    }
}

/// Why a block entry carries no transaction that may be applied. The verdict is a pure function
/// of the entry's bytes and the genesis (keys and hash), so every replica (and `medchain
/// verify`) derives the same one; [`Invalid::reason`] is what the store keeps in the entry's
/// `rejected` column.
///
/// Correct replicas check every request before they pre-prepare or accept it, so an invalid
/// entry commits only if more than f validators are faulty; it is then rejected like a
/// duplicate, not a reason for a replica to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// The payload is larger than [`MAX_TX_BYTES`].
    TooLarge,
    /// The payload is not the borsh of a signed transaction.
    Undecodable,
    /// The payload's transaction has another id than the request that ordered it.
    IdMismatch,
    /// The payload's `created_ms` is not the request's timestamp.
    TimestampMismatch,
    /// The body's hash is not the header's `body_hash`.
    BodyMismatch,
    /// A validator signer that is not in the genesis set.
    UnknownValidator,
    /// The signature does not verify under the signer's key
    /// ([`crate::crypto::verify_signature`], ZIP-215).
    BadSignature,
    /// A new key's proof of possession does not verify under that key.
    BadKeyProof,
    /// A sealed kind's body is not a sealed body of the current framing, or another kind's
    /// body is not empty ([`crate::seal::check_body_format`], docs/SECURITY.md, "Confidential
    /// records", §1.3).
    BodyFormat,
}

impl Invalid {
    pub const ALL: [Invalid; 9] = [
        Invalid::TooLarge,
        Invalid::Undecodable,
        Invalid::IdMismatch,
        Invalid::TimestampMismatch,
        Invalid::BodyMismatch,
        Invalid::UnknownValidator,
        Invalid::BadSignature,
        Invalid::BadKeyProof,
        Invalid::BodyFormat,
    ];

    /// The rejection reason stored with the entry.
    pub fn reason(self) -> &'static str {
        match self {
            Invalid::TooLarge => "invalid: payload is larger than a transaction may be",
            Invalid::Undecodable => "invalid: payload does not decode as a signed transaction",
            Invalid::IdMismatch => "invalid: payload's transaction id is not the request's",
            Invalid::TimestampMismatch => "invalid: payload's timestamp is not the request's",
            Invalid::BodyMismatch => "invalid: body does not match its hash",
            Invalid::UnknownValidator => "invalid: signing validator is not in the genesis set",
            Invalid::BadSignature => "invalid: signature does not verify",
            Invalid::BadKeyProof => "invalid: a new key's proof of possession does not verify",
            Invalid::BodyFormat => "invalid: body is not in its kind's format",
        }
    }

    /// The verdict a stored reason names, if it names one.
    pub fn from_reason(reason: &str) -> Option<Invalid> {
        Invalid::ALL.into_iter().find(|i| i.reason() == reason)
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

/// A block entry as the state machine takes it: the transaction it carries (decoded, its id,
/// timestamp and body hash the request's, its signatures checked), or why it carries none.
pub type Checked = std::result::Result<SignedTx, Invalid>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{self, TestNet};

    const GENESIS: Hash = [9; 32];

    #[test]
    fn every_kind_round_trips_with_its_kind_byte_first() {
        let net = TestNet::new(4);
        let g = net.genesis.hash();
        let samples = testkit::every_kind(&net);
        let mut kinds: Vec<u8> = samples.iter().map(|t| t.meta().kind_byte()).collect();
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds, (0..13).collect::<Vec<u8>>(), "every kind is sampled");
        for tx in samples {
            let decoded = SignedTx::from_bytes(&tx.to_bytes()).expect("decodes");
            assert_eq!(decoded, tx);
            let bytes = tx.signing_bytes(&g);
            assert_eq!(&bytes[..14], TX_SIGNING_TAG);
            assert_eq!(&bytes[14..46], &g);
            assert_eq!(bytes[46], tx.meta().kind_byte());
            assert_eq!(tx.id(&g), crate::sha256(&bytes));
            let request = tx.to_request(&g);
            assert_eq!(request.id, tx.id(&g));
            assert_eq!(request.timestamp_ms, tx.header.created_ms);
            assert_eq!(SignedTx::from_request(&request, &g), Ok(tx.clone()));
            // The id names the chain.
            assert_ne!(tx.id(&GENESIS), tx.id(&g));
            // JSON view round-trips.
            let json = serde_json::to_string(&tx.header).expect("json");
            assert_eq!(
                serde_json::from_str::<TxHeader>(&json).expect("json back"),
                tx.header
            );
        }
    }

    #[test]
    fn id_covers_every_header_field_but_not_the_signature() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let tx = testkit::every_kind(&TestNet::new(4)).remove(7);
        let signed = SignedTx::sign(tx.header.clone(), tx.body.clone(), &GENESIS, &key);
        let id = signed.id(&GENESIS);
        let mut variants = Vec::new();
        let mut h = signed.header.clone();
        h.created_ms += 1;
        variants.push(h);
        let mut h = signed.header.clone();
        h.not_after_ms -= 1;
        variants.push(h);
        let mut h = signed.header.clone();
        h.nonce[3] ^= 1;
        variants.push(h);
        let mut h = signed.header.clone();
        h.body_hash[0] ^= 1;
        variants.push(h);
        let mut h = signed.header.clone();
        h.signer = Signer::Custodial {
            person: [1; 16],
            key: key.verifying_key().to_bytes(),
        };
        variants.push(h);
        let mut h = signed.header.clone();
        if let Meta::Grant(g) = &mut h.meta {
            g.attested = Attested::InPerson;
        }
        variants.push(h);
        for h in variants {
            assert_ne!(h.id(&GENESIS), id, "{h:?}");
        }
        let mut other = signed.clone();
        other.signature[0] ^= 1;
        assert_eq!(other.id(&GENESIS), id);
        assert_eq!(signed.header.body_hash, crate::sha256(&signed.body));
    }

    #[test]
    fn request_checks_need_no_key() {
        let net = TestNet::new(4);
        let g = net.genesis.hash();
        let tx = testkit::every_kind(&net).remove(9);
        let check = |r: &pbft::Request| SignedTx::from_request(r, &g);
        let mut request = tx.to_request(&g);
        request.id[0] ^= 1;
        assert_eq!(check(&request), Err(Invalid::IdMismatch));
        let mut request = tx.to_request(&g);
        request.timestamp_ms += 1;
        assert_eq!(check(&request), Err(Invalid::TimestampMismatch));
        let mut request = tx.to_request(&g);
        request.payload = Arc::from(&request.payload[..10]);
        assert_eq!(check(&request), Err(Invalid::Undecodable));
        let mut request = tx.to_request(&g);
        request.payload = Arc::from(vec![0u8; MAX_TX_BYTES + 1]);
        assert_eq!(check(&request), Err(Invalid::TooLarge));
        // Another body under the same header: the signature still verifies, the hash does not.
        let mut swapped = tx.clone();
        swapped.body = RecordBody {
            diagnosis: "another".into(),
            ..RecordBody::default()
        }
        .to_bytes();
        assert_eq!(check(&swapped.to_request(&g)), Err(Invalid::BodyMismatch));
        for invalid in Invalid::ALL {
            assert_eq!(Invalid::from_reason(invalid.reason()), Some(invalid));
        }
        assert_eq!(Invalid::from_reason(crate::rules::reason::DUPLICATE), None);
    }

    /// docs/SECURITY.md, "Confidential records", §8: a body logged by mistake shows its
    /// lengths, not what it says.
    #[test]
    fn bodies_print_their_lengths_only() {
        let record = RecordBody {
            diagnosis: "Lymphoma".into(),
            prescription: "R-CHOP".into(),
            notes: String::new(),
        };
        let purpose = PurposeBody {
            purpose: "Oncology review".into(),
        };
        let printed = format!("{record:?} {purpose:?}");
        for secret in ["Lymphoma", "R-CHOP", "Oncology"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("diagnosis_bytes: 8"), "{printed}");
    }

    #[test]
    fn person_ids_derive_from_home_and_nonce() {
        let a = person_id(0, &[1; 16]);
        assert_eq!(a, person_id(0, &[1; 16]));
        assert_ne!(a, person_id(1, &[1; 16]));
        assert_ne!(a, person_id(0, &[2; 16]));
        let mut bytes = b"medchain/person/v1".to_vec();
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&[1; 16]);
        assert_eq!(a[..], crate::sha256(&bytes)[..16]);
    }

    #[test]
    fn a_key_proof_binds_chain_person_key_kind_and_origin() {
        let secret = SigningKey::from_bytes(&[3; 32]);
        let person = [5; 16];
        let new = NewKey::prove(&GENESIS, &person, KeyKind::Device, 1, "phone", &secret);
        let verify = |g: &Hash, p: &PersonId, k: &NewKey| {
            let Ok(vk) = crate::crypto::verifying_key(&k.key) else {
                return false;
            };
            crate::crypto::verify_signature(&vk, &k.pop_bytes(g, p), &k.pop)
        };
        assert!(verify(&GENESIS, &person, &new));
        assert!(!verify(&[8; 32], &person, &new));
        assert!(!verify(&GENESIS, &[6; 16], &new));
        let custodial = NewKey {
            kind: KeyKind::Custodial,
            ..new.clone()
        };
        assert!(!verify(&GENESIS, &person, &custodial));
        let elsewhere = NewKey {
            origin: 0,
            ..new.clone()
        };
        assert!(!verify(&GENESIS, &person, &elsewhere));
        let mut bytes = b"medchain/key-pop/v2".to_vec();
        bytes.extend_from_slice(&GENESIS);
        bytes.extend_from_slice(&person);
        bytes.extend_from_slice(&new.key);
        bytes.push(0);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        assert_eq!(new.pop_bytes(&GENESIS, &person), bytes);
    }
}
