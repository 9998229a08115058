//! Validity: honest replicas execute only requests that clients submitted, each block carries a
//! valid commit certificate (2f+1 distinct replicas' signatures over its digest, unless the run
//! turned the size check off), and the application applies every request exactly once
//! (duplicates in later blocks are skipped, as the ledger does).
use super::Cursor;
use crate::world::World;

pub struct Validity {
    cursor: Vec<Cursor>,
}

impl Validity {
    pub fn new(n: usize) -> Self {
        Validity {
            cursor: vec![Cursor::default(); n],
        }
    }

    pub fn check(&mut self, w: &World) -> Result<(), String> {
        for node in w.nodes.iter().filter(|x| x.is_honest()) {
            if let Some(seq) = node.app.bad_certificates.first() {
                return Err(format!(
                    "validity: replica {} executed block {seq} without a valid commit certificate",
                    node.id
                ));
            }
            let cursor = &mut self.cursor[node.id as usize];
            for block in &node.app.blocks[cursor.start(node)..] {
                for r in &block.proposal.requests {
                    if !w.submitted.contains_key(&r.id) {
                        return Err(format!(
                            "validity: replica {} executed a request nobody submitted in block {}",
                            node.id, block.proposal.seq
                        ));
                    }
                }
            }
            cursor.at = node.app.blocks.len();
            if node.app.applied.len() != node.app.applied_set.len() {
                return Err(format!(
                    "validity: replica {} applied a request twice",
                    node.id
                ));
            }
        }
        Ok(())
    }
}
