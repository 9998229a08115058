//! Bounded batches: every block an honest replica executes holds at most `max_batch` requests,
//! each id once (finding 5: a Byzantine primary's oversized batch of copies must be refused).
use std::collections::BTreeSet;

use super::Cursor;
use crate::world::{World, replica_config};

pub struct BoundedBatches {
    cursor: Vec<Cursor>,
}

impl BoundedBatches {
    pub fn new(n: usize) -> Self {
        BoundedBatches {
            cursor: vec![Cursor::default(); n],
        }
    }

    pub fn check(&mut self, w: &World) -> Result<(), String> {
        let max_batch = replica_config(0, w.n, None).max_batch;
        for node in w.nodes.iter().filter(|x| x.is_honest()) {
            let cursor = &mut self.cursor[node.id as usize];
            for block in &node.app.blocks[cursor.start(node)..] {
                let requests = &block.proposal.requests;
                let distinct: BTreeSet<_> = requests.iter().map(|r| r.id).collect();
                if requests.len() > max_batch || distinct.len() != requests.len() {
                    return Err(format!(
                        "bounded batches: replica {} executed at height {} a batch of {} requests ({} distinct; bound {max_batch})",
                        node.id,
                        block.proposal.seq,
                        requests.len(),
                        distinct.len()
                    ));
                }
            }
            cursor.at = node.app.blocks.len();
        }
        Ok(())
    }
}
