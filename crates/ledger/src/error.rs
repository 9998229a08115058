//! The ledger's one error type, and the faults verification reports.
use std::path::PathBuf;

/// Everything that can go wrong in the ledger. Outside input (files, payloads, stored rows)
/// never panics; it becomes one of these.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bytes that should be borsh of `what` are not.
    #[error("cannot decode {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A request that carries no valid transaction (refused at the edge; in a committed block
    /// the same verdict rejects the entry instead).
    #[error("request {id}: {invalid}")]
    InvalidRequest {
        id: String,
        invalid: crate::tx::Invalid,
    },
    /// A committed proposal whose digest is not the hash of the block built from it.
    #[error("committed digest {expected} is not the block hash {actual}")]
    DigestMismatch { expected: String, actual: String },
    /// A transaction signature that does not verify, or names an unknown validator.
    #[error("transaction {index} ({id}): {reason}")]
    BadTransaction {
        index: usize,
        id: String,
        reason: String,
    },
    /// A pbft message signature that does not verify.
    #[error("bad signature on a message from validator {from}")]
    BadMessageSignature { from: u32 },
    /// A commit certificate that does not prove the block committed.
    #[error("certificate: {0}")]
    Certificate(#[from] CertError),
    /// A key given as bytes or hex that is not an Ed25519 key.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The operator key, or a secret sealed under it, cannot be used (docs/SECURITY.md,
    /// "Confidential records", §3.3): the message says why and what to do.
    #[error("{0}")]
    OperatorKey(String),
    /// The genesis file is unreadable or inconsistent.
    #[error("genesis {path}: {reason}", path = .path.display())]
    Genesis { path: PathBuf, reason: String },
    /// A file could not be read or written.
    #[error("{path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// SQLite failed (disk full, locked, corrupt file, ...).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A block handed to the store that does not extend its head.
    #[error("block at height {height} does not extend the head: {reason}")]
    NotNext { height: u64, reason: String },
    /// The store was written by a newer medchain (schema version unknown to this one).
    #[error("{path}: schema version {found} is newer than this program's {supported}", path = .path.display())]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// The store holds a chain of an older format than this program reads: not tampered, but
    /// unreadable, and no migration can re-sign its blocks.
    #[error(
        "{path}: format {found} is older than this program's {needed}: run `medchain init \
         --force` to start a new chain (records are sealed since format 5; a validator that held \
         plaintext moves to a fresh volume or wipes the old one: deleting files is not erasing \
         them)",
        path = .path.display()
    )]
    FormatTooOld {
        path: PathBuf,
        found: i64,
        needed: i64,
    },
    /// Verification found the chain in `path` wrong at `height`.
    #[error("{path}: block {height}: {fault}", path = .path.display())]
    Corrupt {
        path: PathBuf,
        height: u64,
        fault: Fault,
    },
    /// A block from a peer that does not prove itself.
    #[error("block {height}: {fault}")]
    InvalidBlock { height: u64, fault: Fault },
    /// The derived state is not what the rules expect of it (an effect naming a transaction
    /// that is not applied, an update that matches no row): a bug or an edited store.
    #[error("derived state: {0}")]
    State(String),
    /// A rule read something it did not declare ([`crate::rules::Rule::reads`]): a bug, which
    /// the rule tests catch.
    #[error("a rule read {0}, which it does not declare")]
    UndeclaredRead(String),
    /// Two replicas disagree at `height`.
    #[error("{a} and {b} disagree at block {height}: {what}", a = .a.display(), b = .b.display())]
    Disagree {
        a: PathBuf,
        b: PathBuf,
        height: u64,
        what: String,
    },
}

/// Convenience alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a commit certificate does not prove its block committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("{have} distinct valid signers, {need} needed")]
    TooFewSigners { have: usize, need: usize },
    #[error("validator {0} signed twice")]
    DuplicateSigner(u32),
    #[error("signer {0} is not a genesis validator")]
    UnknownSigner(u32),
    #[error("signature of validator {0} does not verify")]
    BadSignature(u32),
    #[error("the genesis block carries no certificate")]
    GenesisSigned,
}

/// What is wrong with one block, as verification reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("stored bytes do not decode: {0}")]
    Undecodable(String),
    #[error("header says height {found}, expected {expected}")]
    Height { expected: u64, found: u64 },
    #[error("header says seq {seq}, height {height}")]
    SeqNotHeight { seq: u64, height: u64 },
    #[error("previous hash {found} does not match block {height_before}'s hash {expected}")]
    PrevHash {
        height_before: u64,
        expected: String,
        found: String,
    },
    #[error("stored hash {stored} is not the header's hash {computed}")]
    StoredHash { stored: String, computed: String },
    #[error("merkle root {in_header} in header, {computed} over the transactions")]
    MerkleRoot { in_header: String, computed: String },
    #[error("block time {found} is not after the previous block's {previous}")]
    BlockTime { previous: u64, found: u64 },
    #[error("proposer {0} is not a genesis validator")]
    UnknownProposer(u32),
    #[error("transaction {index}: {reason}")]
    Transaction { index: usize, reason: String },
    #[error("transactions: {0}")]
    BatchSignature(String),
    #[error("certificate: {0}")]
    Certificate(CertError),
    #[error("the genesis block differs from the one genesis.toml derives")]
    Genesis,
    #[error("stored column {0} disagrees with the signed data")]
    Column(&'static str),
    #[error("derived state: {0}")]
    State(String),
}
