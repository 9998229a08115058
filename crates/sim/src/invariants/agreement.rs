//! Agreement: no two honest replicas execute different blocks at the same height.
use std::collections::BTreeMap;

use pbft::Digest;

use super::Cursor;
use crate::world::World;

pub struct Agreement {
    /// The first digest any honest replica executed at each height.
    chain: BTreeMap<u64, (Digest, u32)>,
    cursor: Vec<Cursor>,
}

impl Agreement {
    pub fn new(n: usize) -> Self {
        Agreement {
            chain: BTreeMap::new(),
            cursor: vec![Cursor::default(); n],
        }
    }

    pub fn chain(&self) -> &BTreeMap<u64, (Digest, u32)> {
        &self.chain
    }

    pub fn check(&mut self, w: &World) -> Result<(), String> {
        for node in w.nodes.iter().filter(|x| x.is_honest()) {
            let cursor = &mut self.cursor[node.id as usize];
            for block in &node.app.blocks[cursor.start(node)..] {
                let seq = block.proposal.seq;
                match self.chain.get(&seq) {
                    Some((d, who)) if *d != block.digest => {
                        return Err(format!(
                            "agreement: replica {} executed {:02x?} at height {seq}, replica {who} executed {:02x?}",
                            node.id,
                            &block.digest[..4],
                            &d[..4]
                        ));
                    }
                    Some(_) => {}
                    None => {
                        self.chain.insert(seq, (block.digest, node.id));
                    }
                }
            }
            cursor.at = node.app.blocks.len();
        }
        Ok(())
    }
}
