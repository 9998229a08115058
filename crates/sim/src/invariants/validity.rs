//! Validity: honest replicas execute only requests that clients submitted, each block carries a
//! valid commit certificate (2f+1 distinct replicas' signatures over its digest), and the
//! application applies every request exactly once (duplicates in later blocks are skipped, as
//! the ledger does).
use crate::world::World;

pub struct Validity {
    cursor: Vec<usize>,
}

impl Validity {
    pub fn new(n: usize) -> Self {
        Validity { cursor: vec![0; n] }
    }

    pub fn check(&mut self, w: &World) -> Result<(), String> {
        for node in w.nodes.iter().filter(|x| x.is_honest()) {
            let i = node.id as usize;
            if let Some(seq) = node.app.bad_certificates.first() {
                return Err(format!(
                    "validity: replica {} executed block {seq} without a valid commit certificate",
                    node.id
                ));
            }
            for block in &node.app.blocks[self.cursor[i]..] {
                for r in &block.proposal.requests {
                    if !w.submitted.contains_key(&r.id) {
                        return Err(format!(
                            "validity: replica {} executed a request nobody submitted in block {}",
                            node.id, block.proposal.seq
                        ));
                    }
                }
            }
            self.cursor[i] = node.app.blocks.len();
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
