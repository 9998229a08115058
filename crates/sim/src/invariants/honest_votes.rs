//! Honest votes: no correct replica sends two different pre-prepares, prepares or commits for one
//! (view, sequence number) — across crashes, restarts and lost state (finding 2: a replica
//! restored from nothing; finding 6: a slot cleared by state transfer). Observed on what honest
//! replicas send (amnesiac ones included), not on what they keep.
use std::collections::BTreeMap;

use pbft::{Digest, Message, ReplicaId, SeqNo, View};

use crate::trace::short;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum VoteKind {
    PrePrepare,
    Prepare,
    Commit,
}

/// One vote an honest replica sent.
#[derive(Clone, Copy, Debug)]
pub struct SentVote {
    pub from: ReplicaId,
    pub kind: VoteKind,
    pub view: View,
    pub seq: SeqNo,
    pub digest: Digest,
}

impl SentVote {
    /// The vote `message` casts, if it is one.
    pub fn of(from: ReplicaId, message: &Message) -> Option<SentVote> {
        let (kind, view, seq, digest) = match message {
            Message::PrePrepare(pp) => (VoteKind::PrePrepare, pp.view, pp.proposal.seq, pp.digest),
            Message::Prepare(v) => (VoteKind::Prepare, v.view, v.seq, v.digest),
            Message::Commit(v) => (VoteKind::Commit, v.view, v.seq, v.digest),
            _ => return None,
        };
        Some(SentVote {
            from,
            kind,
            view,
            seq,
            digest,
        })
    }
}

#[derive(Default)]
pub struct HonestVotes {
    sent: BTreeMap<(ReplicaId, VoteKind, View, SeqNo), Digest>,
}

impl HonestVotes {
    pub fn check(&mut self, votes: &[SentVote]) -> Result<(), String> {
        for v in votes {
            let first = *self
                .sent
                .entry((v.from, v.kind, v.view, v.seq))
                .or_insert(v.digest);
            if first != v.digest {
                return Err(format!(
                    "honest votes: replica {} sent two {:?}s for view {} seq {} ({} then {})",
                    v.from,
                    v.kind,
                    v.view,
                    v.seq,
                    short(&first),
                    short(&v.digest)
                ));
            }
        }
        Ok(())
    }
}
