//! The ledger of medchain: what a transaction and a block are, how they are encoded (borsh),
//! hashed (SHA-256), signed (Ed25519) and chained; the RFC 6962 Merkle tree over a block's
//! transactions; the genesis file; the rules of the replicated state machine ([`rules`]: who
//! may enroll, add keys, grant, write and read, judged at the block's time) and the SQLite
//! store that holds a replica's chain and the state the rules derive (`chain.db`); and the
//! verification that replays a chain and proves it untampered.
//!
//! The ledger knows nothing of the network. It depends on `pbft` only for plain data types, so
//! that a proposal and the block it becomes are hashed by one function ([`proposal_digest`]) and
//! a block's commit certificate is made of pbft's own commit votes.

pub mod block;
pub mod crypto;
pub mod entitled;
mod error;
pub mod files;
#[cfg(any(test, feature = "testkit"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod genesis;
mod init;
pub mod master;
pub mod merkle;
pub mod pool;
pub mod rules;
pub mod seal;
pub mod store;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod tx;
pub mod verify;

pub use block::{
    Block, BlockHeader, Built, Certificate, Entry, ToAppend, entry_hash, proposal_digest,
};
pub use error::{CertError, Error, Fault, Result};
pub use genesis::{ChainParams, Genesis, ValidatorInfo};
pub use init::{init_dev_network, init_from_public_keys, validator_names};
pub use rules::{
    AskRow, ErasureAnswer, ErasureRow, GrantRow, KeyRow, LinkRow, PersonRow, RecoveryRow, Reject,
    RequestRow, SealedRow, StateView,
};
pub use store::{
    AccessEntry, Applied, BlockSummary, CommittedTx, Erased, INVALID_KIND, OpenCheck, OpenOptions,
    Queries, Reader, RecordEntry, Store, TxStatus,
};
pub use tx::{
    Checked, Decision, Invalid, Meta, PersonId, PublicKey, Refusal, SignedTx, Signer, TxHeader,
    TxId, key_pop_bytes, person_id, signing_bytes,
};

/// A SHA-256 digest: transaction ids, block hashes, Merkle roots.
pub type Hash = [u8; 32];

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Hash {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).into()
}

/// Shortened hex of a hash for messages meant for people (the full hash is in the data).
pub fn short_hex(hash: &Hash) -> String {
    hex::encode(&hash[..4])
}
