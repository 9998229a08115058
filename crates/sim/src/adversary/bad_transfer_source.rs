//! A Byzantine state-transfer source: answers every fetch, even with nothing newer, with blocks
//! that must not be applied: its blocks with substituted payloads under the same certificate,
//! blocks whose certificate is forged, blocks that do not chain, or made-up blocks past its head.
use std::sync::Arc;

use pbft::{Committed, Proposal, ReplicaId, SeqNo, Signature};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::substitute_payload;
use crate::crypto;
use crate::world::App;

pub fn answer(app: &App, after: SeqNo, server: ReplicaId, rng: &mut ChaCha8Rng) -> Vec<Committed> {
    let mut blocks: Vec<Committed> = app.blocks.iter().skip(after as usize).cloned().collect();
    match rng.gen_range(0..4) {
        0 => {
            for b in &mut blocks {
                b.proposal = Arc::new(substitute_payload::proposal(&b.proposal, rng));
            }
        }
        1 => {
            for b in &mut blocks {
                for (_, signature) in &mut b.signatures {
                    *signature = Signature([rng.r#gen(); 64]);
                }
            }
        }
        2 => {
            if let Some(b) = blocks.first_mut() {
                let mut p = (*b.proposal).clone();
                p.prev = rng.r#gen();
                b.digest = crypto::digest(&p);
                b.proposal = Arc::new(p);
            }
        }
        _ => {
            let (mut seq, mut prev) = app.head();
            for _ in 0..3 {
                seq += 1;
                let proposal = Proposal {
                    seq,
                    view: 0,
                    proposer: server,
                    prev,
                    time_ms: 0,
                    requests: Vec::new(),
                };
                let digest = crypto::digest(&proposal);
                let vote = pbft::Vote {
                    view: 0,
                    seq,
                    digest,
                };
                let own = crypto::sign_bytes(server, &pbft::commit_signing_bytes(&vote));
                blocks.push(Committed {
                    proposal: Arc::new(proposal),
                    digest,
                    commit_view: 0,
                    signatures: vec![(server, own), (server, own), (server, own)],
                });
                prev = digest;
            }
        }
    }
    blocks
}
