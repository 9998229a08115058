//! State transfer, served over the simulated network as the node serves it: on
//! [`pbft::Action::FetchState`] a replica's node asks one peer (the ones the replica names first,
//! then the others, rotating on every attempt) for the committed blocks after its head; an honest
//! peer answers only if it has newer ones. Every block received is checked (chain link, digest,
//! commit certificate, each transaction at the edge) before it is applied; the valid prefix is
//! applied and handed to the replica as [`pbft::Input::StateTransferred`]. A lost request or
//! answer is retried when the replica asks again.
use pbft::{Committed, Input, ReplicaId, SeqNo};

use crate::crypto;
use crate::network::Packet;
use crate::world::World;

/// Blocks in one answer (the node's limit is larger; the sim's chains are short).
const BLOCKS_PER_ANSWER: usize = 64;

impl World {
    /// Replica `id` asks for state: the next peer in rotation gets a `FetchBlocks`.
    pub(crate) fn request_state(&mut self, id: ReplicaId, peers: Vec<ReplicaId>) {
        let mut candidates: Vec<ReplicaId> = peers.into_iter().filter(|p| *p != id).collect();
        for p in 0..self.n {
            if p != id && !candidates.contains(&p) {
                candidates.push(p);
            }
        }
        let node = &mut self.nodes[id as usize];
        let peer = candidates[node.fetch_round as usize % candidates.len()];
        node.fetch_round += 1;
        let after = node.app.head().0;
        self.trace(|| format!("replica {id} asks {peer} for blocks after s{after}"));
        let now = self.now;
        self.net
            .send(&mut self.rng, now, id, peer, Packet::FetchBlocks { after });
    }

    /// A `FetchBlocks` reaches `server`.
    pub(crate) fn serve_blocks(&mut self, server: ReplicaId, to: ReplicaId, after: SeqNo) {
        let blocks = match self.byzantine_blocks(server, after) {
            Some(blocks) => blocks,
            None => {
                let app = &self.nodes[server as usize].app;
                if app.head().0 <= after {
                    return; // Nothing newer: no answer (as the node).
                }
                app.blocks
                    .iter()
                    .skip(after as usize)
                    .take(BLOCKS_PER_ANSWER)
                    .cloned()
                    .collect()
            }
        };
        let now = self.now;
        self.net
            .send(&mut self.rng, now, server, to, Packet::Blocks(blocks));
    }

    /// Blocks reach `id`: the valid prefix after its head is applied.
    pub(crate) fn receive_blocks(
        &mut self,
        id: ReplicaId,
        from: ReplicaId,
        blocks: Vec<Committed>,
    ) {
        let head = self.nodes[id as usize].app.head();
        let (n, quorum) = (self.n, self.quorum);
        let mut last = head;
        let mut ids = Vec::new();
        for b in blocks {
            if b.proposal.seq <= last.0 {
                continue;
            }
            let valid = b.proposal.seq == last.0 + 1
                && b.proposal.prev == last.1
                && crypto::verify_certificate(&b, n, quorum)
                && b.proposal.requests.iter().all(|r| self.authentic(r));
            if !valid {
                self.stats.bad_blocks += 1;
                self.trace(|| {
                    format!("replica {id} rejects block s{} from {from}", b.proposal.seq)
                });
                break;
            }
            last = (b.proposal.seq, b.digest);
            ids.extend(b.proposal.requests.iter().map(|r| r.id));
            let check = self.certificate_quorum();
            self.nodes[id as usize].app.apply(b, n, check);
        }
        if last.0 > head.0 {
            self.stats.state_transfers += 1;
            self.nodes[id as usize].transfers += 1;
            self.trace(|| {
                format!(
                    "replica {id} state-transferred {} -> {} from {from}",
                    head.0, last.0
                )
            });
            self.step_node(
                id,
                Input::StateTransferred {
                    seq: last.0,
                    digest: last.1,
                    time_ms: self.nodes[id as usize].app.head_time_ms(),
                    request_ids: ids,
                },
            );
            self.drain_loopback();
        }
    }
}
