//! Identifiers and the data that consensus orders.

use std::sync::Arc;

use borsh::{BorshDeserialize, BorshSerialize};

/// Index of a replica in the validator set, `0..n`.
pub type ReplicaId = u32;
/// A view number; the primary of view `v` is `v mod n` (§4.1).
pub type View = u64;
/// A sequence number; sequence number `s` holds the block at height `s` (genesis is 0).
pub type SeqNo = u64;
/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// An Ed25519 signature made by the caller over a message's signing bytes. The core never
/// checks it; it only keeps the commit signatures so that they can form a certificate.
#[derive(Clone, Copy, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct Signature(pub [u8; 64]);

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({:02x}{:02x}..)", self.0[0], self.0[1])
    }
}

/// A client request: opaque to consensus apart from its id (the transaction id, used to
/// deduplicate) and the timestamp the accepting validator gave it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Request {
    pub id: Digest,
    pub timestamp_ms: u64,
    pub payload: Arc<[u8]>,
}

/// What a primary proposes for one sequence number (§4.2's pre-prepared batch). `prev` is the
/// digest of the proposal at `seq - 1`, so the ordered proposals form a hash chain.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Proposal {
    pub seq: SeqNo,
    /// The view in which the batch was first proposed; a new primary re-issues it unchanged.
    pub view: View,
    pub proposer: ReplicaId,
    pub prev: Digest,
    /// The block time (ms since the Unix epoch) the primary chose: its clock, and always later
    /// than the proposal at `seq - 1` (crate docs, "Block time"). Covered by the digest, so a
    /// certificate fixes it; a new primary re-issues it unchanged.
    pub time_ms: u64,
    /// Empty for the null request a new primary puts in a gap (§4.4).
    pub requests: Vec<Request>,
}

/// Computes a proposal's digest. Must be a pure function of the proposal; the ledger makes it
/// the hash of the block the proposal becomes.
pub type DigestFn = fn(&Proposal) -> Digest;

/// A committed sequence number with its commit certificate: the 2f+1 signed commits (all of one
/// view) that made it committed-local (§4.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub proposal: Arc<Proposal>,
    pub digest: Digest,
    pub commit_view: View,
    pub signatures: Vec<(ReplicaId, Signature)>,
}
