//! Transactions: what goes on chain, who accepted it, and its identity.
use std::sync::Arc;

use borsh::{BorshDeserialize, BorshSerialize};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::{Error, Hash, Result};

/// Domain tag of a transaction signature, so that no other signed bytes (a pbft message, a
/// transaction of a future format) can be replayed as a transaction signature.
pub const TX_SIGNING_TAG: &[u8] = b"medchain/tx/v1";

/// What a transaction does to the shared state. Every field that must agree across validators
/// is here; secrets (passwords, OTPs) never are, only the consent hash derived from them.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub enum Transaction {
    /// A doctor adds a medical record, authorised by the patient's consent `consent_hash`. Each
    /// consent authorises at most one record.
    AddRecord {
        patient_id: String,
        doctor_id: String,
        department: String,
        diagnosis: String,
        prescription: String,
        notes: String,
        consent_hash: Hash,
    },
    /// A patient granted a doctor consent for `purpose`, valid until `expires_at_ms`.
    ConsentGranted {
        patient_id: String,
        doctor_id: String,
        department: String,
        purpose: String,
        consent_hash: Hash,
        expires_at_ms: u64,
    },
    /// A consent was used (and so cannot be used again).
    ConsentUsed {
        patient_id: String,
        doctor_id: String,
        consent_hash: Hash,
    },
    /// `reader_id` (in role `reader_role`) read `patient_id`'s records, under a consent if any:
    /// the patient can see who looked.
    Access {
        patient_id: String,
        reader_id: String,
        reader_role: String,
        consent_hash: Option<Hash>,
    },
}

impl Transaction {
    /// A short name of the variant, stored beside the transaction for queries and display.
    pub fn kind(&self) -> &'static str {
        match self {
            Transaction::AddRecord { .. } => "add_record",
            Transaction::ConsentGranted { .. } => "consent_granted",
            Transaction::ConsentUsed { .. } => "consent_used",
            Transaction::Access { .. } => "access",
        }
    }

    /// The patient the transaction is about.
    pub fn patient_id(&self) -> &str {
        match self {
            Transaction::AddRecord { patient_id, .. }
            | Transaction::ConsentGranted { patient_id, .. }
            | Transaction::ConsentUsed { patient_id, .. }
            | Transaction::Access { patient_id, .. } => patient_id,
        }
    }
}

/// A transaction as one validator accepted it: stamped with its time and a random nonce (so that
/// two identical bodies are two transactions), and signed by that validator.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SignedTransaction {
    pub body: Transaction,
    pub timestamp_ms: u64,
    pub nonce: [u8; 16],
    /// Index of the accepting validator in the genesis validator list.
    pub validator: u32,
    /// Ed25519 signature of `TX_SIGNING_TAG || id` by that validator.
    pub signature: [u8; 64],
}

/// The part of a signed transaction its id covers: everything but the signature.
#[derive(BorshSerialize)]
struct Unsigned<'a> {
    body: &'a Transaction,
    timestamp_ms: u64,
    nonce: &'a [u8; 16],
    validator: u32,
}

impl SignedTransaction {
    /// Stamps and signs `body` as validator `validator` holding `key`.
    pub fn sign(
        body: Transaction,
        timestamp_ms: u64,
        nonce: [u8; 16],
        validator: u32,
        key: &SigningKey,
    ) -> Self {
        let mut tx = SignedTransaction {
            body,
            timestamp_ms,
            nonce,
            validator,
            signature: [0; 64],
        };
        tx.signature = key.sign(&signing_bytes(&tx.id())).to_bytes();
        tx
    }

    /// SHA-256 of the borsh bytes of `(body, timestamp_ms, nonce, validator)`.
    pub fn id(&self) -> Hash {
        let unsigned = Unsigned {
            body: &self.body,
            timestamp_ms: self.timestamp_ms,
            nonce: &self.nonce,
            validator: self.validator,
        };
        crate::sha256(&borsh::to_vec(&unsigned).unwrap_or_default())
    }

    /// Checks the signature against the accepting validator's key. Checking many at once is
    /// [`crate::crypto::check_entries`], which batches.
    pub fn verify(&self, key: &VerifyingKey) -> Result<()> {
        let id = self.id();
        if crate::crypto::verify_signature(key, &signing_bytes(&id), &self.signature) {
            Ok(())
        } else {
            Err(Error::BadTransaction {
                index: 0,
                id: hex::encode(id),
                reason: "signature does not verify".into(),
            })
        }
    }

    /// The canonical bytes: borsh of the whole signed transaction.
    pub fn to_bytes(&self) -> Vec<u8> {
        borsh::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        SignedTransaction::try_from_slice(bytes).map_err(|source| Error::Decode {
            what: "signed transaction",
            source,
        })
    }

    /// The Merkle leaf of this transaction in a block: [`crate::block::entry_hash`] of
    /// [`SignedTransaction::to_request`], so a client holding the transaction can check an
    /// inclusion proof.
    pub fn entry_hash(&self) -> Hash {
        crate::block::entry_hash(&self.to_request())
    }

    /// The pbft request that orders this transaction: its id, timestamp and canonical bytes.
    pub fn to_request(&self) -> pbft::Request {
        pbft::Request {
            id: self.id(),
            timestamp_ms: self.timestamp_ms,
            payload: Arc::from(self.to_bytes()),
        }
    }

    /// Decodes a request's payload, refusing one whose transaction has another id or timestamp
    /// than the request: consensus orders and deduplicates by the request's fields, the block is
    /// built from the transaction's, and the two must be the same. The signature is not checked
    /// here ([`crate::crypto::check_entries`] checks many at once).
    pub fn from_request(request: &pbft::Request) -> Result<Self, Invalid> {
        let tx =
            SignedTransaction::from_bytes(&request.payload).map_err(|_| Invalid::Undecodable)?;
        if tx.id() != request.id {
            return Err(Invalid::IdMismatch);
        }
        if tx.timestamp_ms != request.timestamp_ms {
            return Err(Invalid::TimestampMismatch);
        }
        Ok(tx)
    }
}

/// Why a block entry carries no transaction that may be applied. The verdict is a pure function
/// of the entry's bytes and the genesis keys, so every replica (and `medchain verify`) derives
/// the same one; [`Invalid::reason`] is what the store keeps in the entry's `rejected` column.
///
/// Correct replicas check every request before they pre-prepare or accept it, so an invalid
/// entry commits only if more than f validators are faulty; it is then rejected like a
/// duplicate, not a reason for a replica to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// The payload is not the borsh of a signed transaction.
    Undecodable,
    /// The payload's transaction has another id than the request that ordered it.
    IdMismatch,
    /// The payload's transaction has another timestamp than the request that ordered it.
    TimestampMismatch,
    /// The accepting validator is not in the genesis set.
    UnknownValidator,
    /// The accepting validator's signature does not verify
    /// ([`crate::crypto::verify_signature`], ZIP-215).
    BadSignature,
}

impl Invalid {
    pub const ALL: [Invalid; 5] = [
        Invalid::Undecodable,
        Invalid::IdMismatch,
        Invalid::TimestampMismatch,
        Invalid::UnknownValidator,
        Invalid::BadSignature,
    ];

    /// The rejection reason stored with the entry.
    pub fn reason(self) -> &'static str {
        match self {
            Invalid::Undecodable => "invalid: payload does not decode as a signed transaction",
            Invalid::IdMismatch => "invalid: payload's transaction id is not the request's",
            Invalid::TimestampMismatch => "invalid: payload's timestamp is not the request's",
            Invalid::UnknownValidator => "invalid: accepting validator is not in the genesis set",
            Invalid::BadSignature => "invalid: signature does not verify",
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

/// A block entry as the state machine takes it: the transaction it carries (decoded, its id and
/// timestamp the request's, its signature checked), or why it carries none.
pub type Checked = std::result::Result<SignedTransaction, Invalid>;

/// The bytes a validator signs for a transaction with id `id`.
pub fn signing_bytes(id: &Hash) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(TX_SIGNING_TAG.len() + 32);
    bytes.extend_from_slice(TX_SIGNING_TAG);
    bytes.extend_from_slice(id);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn samples() -> Vec<Transaction> {
        vec![
            Transaction::AddRecord {
                patient_id: "p001".into(),
                doctor_id: "d001".into(),
                department: "Cardiology".into(),
                diagnosis: "Hypertension".into(),
                prescription: "Lisinopril 10mg".into(),
                notes: "".into(),
                consent_hash: [1; 32],
            },
            Transaction::ConsentGranted {
                patient_id: "p001".into(),
                doctor_id: "d001".into(),
                department: "Cardiology".into(),
                purpose: "add_record".into(),
                consent_hash: [2; 32],
                expires_at_ms: 300_000,
            },
            Transaction::ConsentUsed {
                patient_id: "p001".into(),
                doctor_id: "d001".into(),
                consent_hash: [2; 32],
            },
            Transaction::Access {
                patient_id: "p002".into(),
                reader_id: "d002".into(),
                reader_role: "doctor".into(),
                consent_hash: None,
            },
            Transaction::Access {
                patient_id: "p002".into(),
                reader_id: "p002".into(),
                reader_role: "patient".into(),
                consent_hash: Some([3; 32]),
            },
        ]
    }

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    #[test]
    fn every_variant_round_trips_and_verifies() {
        for (i, body) in samples().into_iter().enumerate() {
            let tx =
                SignedTransaction::sign(body.clone(), 1_000 + i as u64, [i as u8; 16], 2, &key());
            let decoded = SignedTransaction::from_bytes(&tx.to_bytes()).expect("decodes");
            assert_eq!(decoded, tx);
            assert_eq!(decoded.id(), tx.id());
            tx.verify(&key().verifying_key())
                .expect("signature verifies");

            let request = tx.to_request();
            assert_eq!(request.id, tx.id());
            assert_eq!(
                SignedTransaction::from_request(&request).expect("decodes"),
                tx
            );

            let json = serde_json::to_string(&body).expect("json");
            assert_eq!(
                serde_json::from_str::<Transaction>(&json).expect("json back"),
                body
            );
        }
    }

    #[test]
    fn id_covers_every_signed_field() {
        let tx = SignedTransaction::sign(samples().remove(0), 5, [0; 16], 0, &key());
        let mut other = tx.clone();
        other.timestamp_ms += 1;
        assert_ne!(other.id(), tx.id());
        let mut other = tx.clone();
        other.nonce[15] = 1;
        assert_ne!(other.id(), tx.id());
        let mut other = tx.clone();
        other.validator = 1;
        assert_ne!(other.id(), tx.id());
        assert!(other.verify(&key().verifying_key()).is_err());
        // The signature is not part of the id.
        let mut other = tx.clone();
        other.signature[0] ^= 1;
        assert_eq!(other.id(), tx.id());
        assert!(other.verify(&key().verifying_key()).is_err());
    }

    #[test]
    fn request_with_foreign_id_or_timestamp_is_refused() {
        let tx = SignedTransaction::sign(samples().remove(1), 5, [0; 16], 0, &key());
        let mut request = tx.to_request();
        request.id[0] ^= 1;
        assert_eq!(
            SignedTransaction::from_request(&request),
            Err(Invalid::IdMismatch)
        );
        let mut request = tx.to_request();
        request.timestamp_ms += 1;
        assert_eq!(
            SignedTransaction::from_request(&request),
            Err(Invalid::TimestampMismatch)
        );
        let mut request = tx.to_request();
        request.payload = Arc::from(&request.payload[..10]);
        assert_eq!(
            SignedTransaction::from_request(&request),
            Err(Invalid::Undecodable)
        );
        for invalid in Invalid::ALL {
            assert_eq!(Invalid::from_reason(invalid.reason()), Some(invalid));
        }
        assert_eq!(Invalid::from_reason(crate::store::DUPLICATE), None);
    }
}
