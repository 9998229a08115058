//! The protocol's messages (§4), as the caller authenticates them.
use std::sync::Arc;

use borsh::{BorshDeserialize, BorshSerialize};

use crate::types::{Digest, Proposal, ReplicaId, Request, SeqNo, Signature, View};

/// A message with its sender and the sender's signature over [`Message::signing_bytes`].
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Signed<M> {
    pub from: ReplicaId,
    pub message: M,
    pub signature: Signature,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PrePrepare {
    pub view: View,
    pub digest: Digest,
    pub proposal: Arc<Proposal>,
}

/// Prepare and commit carry the same fields (§4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Vote {
    pub view: View,
    pub seq: SeqNo,
    pub digest: Digest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Checkpoint {
    pub seq: SeqNo,
    pub digest: Digest,
}

/// A pre-prepare and 2f matching prepares from other replicas (§4.4's P set entry).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PreparedCertificate {
    pub pre_prepare: Signed<PrePrepare>,
    pub prepares: Vec<Signed<Vote>>,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ViewChange {
    pub new_view: View,
    /// The sender's last stable checkpoint and the 2f+1 checkpoint messages that prove it
    /// (empty for the genesis checkpoint at sequence 0).
    pub checkpoint: Checkpoint,
    pub checkpoint_proof: Vec<Signed<Checkpoint>>,
    pub prepared: Vec<PreparedCertificate>,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct NewView {
    pub view: View,
    pub view_changes: Vec<Signed<ViewChange>>,
    /// The O set: one pre-prepare per sequence number between the chosen checkpoint and the
    /// highest prepared sequence number, signed by the new primary.
    pub pre_prepares: Vec<Signed<PrePrepare>>,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Message {
    /// Requests a backup received and forwards to the primary (§4.1).
    Forward(Vec<Request>),
    PrePrepare(PrePrepare),
    Prepare(Vote),
    Commit(Vote),
    Checkpoint(Checkpoint),
    ViewChange(ViewChange),
    NewView(NewView),
}

/// Domain tags keep a signature on one kind of message from being replayed as another.
const TAG_FORWARD: u8 = 0;
const TAG_PRE_PREPARE: u8 = 1;
const TAG_PREPARE: u8 = 2;
const TAG_COMMIT: u8 = 3;
const TAG_CHECKPOINT: u8 = 4;
const TAG_VIEW_CHANGE: u8 = 5;
const TAG_NEW_VIEW: u8 = 6;

impl Message {
    /// The bytes a sender signs. Small and fixed-size where it can be: a pre-prepare signs its
    /// digest, not its batch, because the replica checks the batch against the digest.
    /// A commit signs `commit_signing_bytes`, so commit signatures form the block certificate.
    pub fn signing_bytes(&self) -> Vec<u8> {
        match self {
            Message::Forward(requests) => {
                let mut bytes = vec![TAG_FORWARD];
                for request in requests {
                    bytes.extend_from_slice(&request.id);
                }
                bytes
            }
            Message::PrePrepare(pp) => vote_bytes(
                TAG_PRE_PREPARE,
                &Vote {
                    view: pp.view,
                    seq: pp.proposal.seq,
                    digest: pp.digest,
                },
            ),
            Message::Prepare(vote) => vote_bytes(TAG_PREPARE, vote),
            Message::Commit(vote) => commit_signing_bytes(vote),
            Message::Checkpoint(c) => {
                let mut bytes = vec![TAG_CHECKPOINT];
                bytes.extend_from_slice(&c.seq.to_le_bytes());
                bytes.extend_from_slice(&c.digest);
                bytes
            }
            Message::ViewChange(vc) => tagged_borsh(TAG_VIEW_CHANGE, vc),
            Message::NewView(nv) => tagged_borsh(TAG_NEW_VIEW, nv),
        }
    }
}

/// The bytes of a commit vote, which a block's commit certificate verifies against.
pub fn commit_signing_bytes(vote: &Vote) -> Vec<u8> {
    vote_bytes(TAG_COMMIT, vote)
}

fn vote_bytes(tag: u8, vote: &Vote) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + 8 + 8 + 32);
    bytes.push(tag);
    bytes.extend_from_slice(&vote.view.to_le_bytes());
    bytes.extend_from_slice(&vote.seq.to_le_bytes());
    bytes.extend_from_slice(&vote.digest);
    bytes
}

fn tagged_borsh<T: BorshSerialize>(tag: u8, value: &T) -> Vec<u8> {
    let mut bytes = vec![tag];
    // Serialising into a Vec cannot fail.
    value.serialize(&mut bytes).unwrap_or_default();
    bytes
}
