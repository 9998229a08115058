//! Checkpoint agreement: every honest replica's stable checkpoint is at a height it executed
//! (or reached by state transfer) and its digest is the agreed block at that height; no two
//! honest replicas hold different stable checkpoints at the same height.
use std::collections::BTreeMap;

use pbft::Digest;

use crate::world::World;

#[derive(Default)]
pub struct CheckpointAgreement {
    seen: BTreeMap<u64, Digest>,
}

impl CheckpointAgreement {
    pub fn check(&mut self, w: &World, chain: &BTreeMap<u64, (Digest, u32)>) -> Result<(), String> {
        for node in w.nodes.iter().filter(|x| x.is_honest()) {
            let Some(r) = &node.replica else { continue };
            let (seq, digest) = r.stable_checkpoint();
            if seq == 0 {
                continue;
            }
            if let Some(d) = self.seen.get(&seq)
                && *d != digest
            {
                return Err(format!(
                    "checkpoint agreement: replica {} holds a different stable checkpoint at {seq}",
                    node.id
                ));
            }
            self.seen.insert(seq, digest);
            if let Some((d, _)) = chain.get(&seq)
                && *d != digest
            {
                return Err(format!(
                    "checkpoint agreement: replica {}'s stable checkpoint at {seq} is not the executed block",
                    node.id
                ));
            }
            if r.last_executed().0 >= seq {
                let own = node.app.blocks.get(seq as usize - 1).map(|b| b.digest);
                if own != Some(digest) {
                    return Err(format!(
                        "checkpoint agreement: replica {}'s stable checkpoint at {seq} differs from its own chain",
                        node.id
                    ));
                }
            }
        }
        Ok(())
    }
}
