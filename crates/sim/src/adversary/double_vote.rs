//! A double-voter: prepares and commits every digest it sees for a (view, sequence number), in
//! pre-prepares and in others' votes, not only the one its replica accepted. Colluding with an
//! equivocating primary (see [`super::Plot`]), it sends its prepares only to f chosen honest
//! replicas, so that exactly f of them become prepared: with a quorum weakened to 2f commits
//! they commit what the others never prepared.
use pbft::{Message, ReplicaId, Vote};

use super::Memory;

/// Votes remembered before the memory is reset (a run has far fewer).
const REMEMBERED: usize = 100_000;

/// The votes `id` adds on seeing `m`.
pub fn votes(id: ReplicaId, n: u32, memory: &mut Memory, m: &Message) -> Vec<Message> {
    let vote = match m {
        Message::PrePrepare(pp) => Vote {
            view: pp.view,
            seq: pp.proposal.seq,
            digest: pp.digest,
        },
        Message::Prepare(v) | Message::Commit(v) => *v,
        _ => return Vec::new(),
    };
    if memory.voted.len() > REMEMBERED {
        memory.voted.clear();
    }
    let mut out = Vec::new();
    let primary = (vote.view % u64::from(n)) as ReplicaId;
    if primary != id
        && memory
            .voted
            .insert((false, vote.view, vote.seq, vote.digest))
    {
        out.push(Message::Prepare(vote));
    }
    if memory
        .voted
        .insert((true, vote.view, vote.seq, vote.digest))
    {
        out.push(Message::Commit(vote));
    }
    out
}
