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

/// A pre-prepare and 2f matching prepares from distinct backups (§4.4's P set entry).
///
/// The pre-prepare is carried unsigned: 2f prepares from distinct backups of its view (at least
/// f of them honest, each of which only prepared after accepting the primary's pre-prepare)
/// already prove that the primary of `pre_prepare.view` issued it, and two such certificates
/// for one view and sequence number cannot disagree (their 2f-backup sets share an honest
/// backup). This lets a new primary's O set, which it cannot sign inside the pure core, be
/// carried by the signed [`NewView`] alone.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PreparedCertificate {
    pub pre_prepare: PrePrepare,
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
    /// The O set: one pre-prepare per sequence number from just above the chosen checkpoint,
    /// re-issued in `view`, covered by the new-view's own signature. It stops at the first gap
    /// or broken `prev` link (see `docs/ARCHITECTURE.md` and the crate docs).
    pub pre_prepares: Vec<PrePrepare>,
}

/// A replica that lost its durable state asks the others where the cluster is (see the crate
/// docs, "Recovering from lost state"). `nonce` is drawn by its caller at this start, so that
/// answers to an earlier query cannot be replayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct RecoveryQuery {
    pub nonce: u64,
}

/// One replica's answer to a [`RecoveryQuery`], sent to the querier only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct RecoveryAnswer {
    /// The query's nonce.
    pub nonce: u64,
    /// Who asked: an answer is only valid for that replica.
    pub querier: ReplicaId,
    /// The answerer's current view.
    pub view: View,
    /// The highest view the answerer has seen in a message of the querier.
    pub querier_view: View,
    /// The answerer's last executed sequence number.
    pub last_executed: SeqNo,
}

/// The messages of §4. A [`Checkpoint`] at a sequence number that is not a multiple of the
/// checkpoint interval is a status claim ("I have executed up to here"): it never becomes stable
/// but lets a lagging replica learn that f+1 replicas are ahead of it and fetch state.
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
    /// Not in the paper's normal protocol: recovery from lost state (crate docs).
    RecoveryQuery(RecoveryQuery),
    RecoveryAnswer(RecoveryAnswer),
}

/// Domain tags keep a signature on one kind of message from being replayed as another.
const TAG_FORWARD: u8 = 0;
const TAG_PRE_PREPARE: u8 = 1;
const TAG_PREPARE: u8 = 2;
const TAG_COMMIT: u8 = 3;
const TAG_CHECKPOINT: u8 = 4;
const TAG_VIEW_CHANGE: u8 = 5;
const TAG_NEW_VIEW: u8 = 6;
const TAG_RECOVERY_QUERY: u8 = 7;
const TAG_RECOVERY_ANSWER: u8 = 8;

impl Message {
    /// The view a message belongs to (for a view-change, the view it asks to move to).
    pub fn view(&self) -> Option<View> {
        match self {
            Message::PrePrepare(pp) => Some(pp.view),
            Message::Prepare(v) | Message::Commit(v) => Some(v.view),
            Message::ViewChange(vc) => Some(vc.new_view),
            Message::NewView(nv) => Some(nv.view),
            Message::Forward(_)
            | Message::Checkpoint(_)
            | Message::RecoveryQuery(_)
            | Message::RecoveryAnswer(_) => None,
        }
    }

    /// Every signed message embedded in this one, as `(signer, signing bytes, signature)`:
    /// checkpoint proofs and prepares inside a view-change, and the view-changes inside a
    /// new-view (recursively). The caller must verify all of them, as it verifies the outer
    /// signature, before handing the message to the replica: the core never checks signatures.
    pub fn embedded_signatures(&self) -> Vec<(ReplicaId, Vec<u8>, Signature)> {
        let mut out = Vec::new();
        match self {
            Message::ViewChange(vc) => view_change_signatures(vc, &mut out),
            Message::NewView(nv) => {
                for vc in &nv.view_changes {
                    out.push((
                        vc.from,
                        Message::ViewChange(vc.message.clone()).signing_bytes(),
                        vc.signature,
                    ));
                    view_change_signatures(&vc.message, &mut out);
                }
            }
            _ => {}
        }
        out
    }

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
            Message::RecoveryQuery(q) => tagged_borsh(TAG_RECOVERY_QUERY, q),
            Message::RecoveryAnswer(a) => tagged_borsh(TAG_RECOVERY_ANSWER, a),
        }
    }
}

fn view_change_signatures(vc: &ViewChange, out: &mut Vec<(ReplicaId, Vec<u8>, Signature)>) {
    for c in &vc.checkpoint_proof {
        out.push((
            c.from,
            Message::Checkpoint(c.message).signing_bytes(),
            c.signature,
        ));
    }
    for cert in &vc.prepared {
        for p in &cert.prepares {
            out.push((
                p.from,
                Message::Prepare(p.message).signing_bytes(),
                p.signature,
            ));
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
