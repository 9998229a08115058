//! Total order without gaps: every honest replica's executed chain is heights 1, 2, 3, ...
//! each block's `prev` the digest of the one before (genesis for the first).
use pbft::Digest;

use super::Cursor;
use crate::crypto::GENESIS;
use crate::world::World;

pub struct TotalOrder {
    cursor: Vec<Cursor>,
}

impl TotalOrder {
    pub fn new(n: usize) -> Self {
        TotalOrder {
            cursor: vec![Cursor::default(); n],
        }
    }

    pub fn check(&mut self, w: &World) -> Result<(), String> {
        for node in w.nodes.iter().filter(|x| x.is_honest()) {
            let cursor = &mut self.cursor[node.id as usize];
            let mut at = cursor.start(node);
            let mut prev: Digest = at
                .checked_sub(1)
                .map_or(GENESIS, |i| node.app.blocks[i].digest);
            for block in &node.app.blocks[at..] {
                let expected = at as u64 + 1;
                if block.proposal.seq != expected {
                    return Err(format!(
                        "total order: replica {} executed height {} where {expected} was next",
                        node.id, block.proposal.seq
                    ));
                }
                if block.proposal.prev != prev {
                    return Err(format!(
                        "total order: replica {} block {expected} does not chain to block {}",
                        node.id,
                        expected - 1
                    ));
                }
                prev = block.digest;
                at += 1;
            }
            cursor.at = at;
        }
        Ok(())
    }
}
