//! Block time (pbft's crate docs, "Block time"): on every honest replica's chain each block's
//! time is later than the time before it (the first one later than the genesis's), and within
//! τ + the largest honest clock skew of the real time at which an honest replica first
//! accepted it: proposed it, or prepared it (after checking it against its clock; prepares of
//! a new-view's O set come after that first one). Votes are observed as honest replicas send
//! them, so a replica that withheld its prepare did not accept.
use std::collections::BTreeMap;

use pbft::Digest;

use super::honest_votes::VoteKind;
use super::{Cursor, SentVote};
use crate::faults::MAX_HONEST_SKEW_MS;
use crate::trace::short;
use crate::world::{GENESIS_TIME_MS, MS_PER_TICK, World, real_ms, replica_config};

/// How stale a replica's clock may be: it is read at the replica's ticks, and one whose timers
/// run at half the rate ticks every other tick of the world.
const STALE_CLOCK_MS: u64 = 2 * MS_PER_TICK;

pub struct BlockTime {
    cursor: Vec<Cursor>,
    /// The real time (ms) an honest replica first proposed or prepared each digest.
    accepted: BTreeMap<Digest, u64>,
}

impl BlockTime {
    pub fn new(n: usize) -> Self {
        BlockTime {
            cursor: vec![Cursor::default(); n],
            accepted: BTreeMap::new(),
        }
    }

    /// `votes`: what honest replicas sent since the last check (now).
    pub fn check(&mut self, w: &World, votes: &[SentVote]) -> Result<(), String> {
        let now_ms = real_ms(w.now);
        for vote in votes {
            if matches!(vote.kind, VoteKind::PrePrepare | VoteKind::Prepare) {
                self.accepted.entry(vote.digest).or_insert(now_ms);
            }
        }
        let bound = replica_config(0, w.n, None).block_time_tolerance_ms
            + MAX_HONEST_SKEW_MS
            + STALE_CLOCK_MS;
        for node in w.nodes.iter().filter(|x| x.is_honest()) {
            let cursor = &mut self.cursor[node.id as usize];
            let start = cursor.start(node);
            let mut before = match start {
                0 => GENESIS_TIME_MS,
                i => node.app.blocks[i - 1].proposal.time_ms,
            };
            for block in &node.app.blocks[start..] {
                let (seq, time) = (block.proposal.seq, block.proposal.time_ms);
                if time <= before {
                    return Err(format!(
                        "block time: replica {} executed block {seq} of time {time} ms after one \
                         of {before} ms",
                        node.id
                    ));
                }
                before = time;
                let Some(accepted) = self.accepted.get(&block.digest) else {
                    return Err(format!(
                        "block time: replica {} executed block {seq} ({}) that no honest replica \
                         proposed or prepared",
                        node.id,
                        short(&block.digest)
                    ));
                };
                if time.abs_diff(*accepted) > bound {
                    return Err(format!(
                        "block time: block {seq} of time {time} ms, first accepted by an honest \
                         replica at {accepted} ms: more than {bound} ms apart"
                    ));
                }
            }
            cursor.at = node.app.blocks.len();
        }
        Ok(())
    }
}
