//! Exact payloads: every request an honest replica executes is, byte for byte, one a client
//! submitted (same id, same timestamp, same transaction bytes). A payload substituted under the
//! same id and timestamp (finding 1) breaks this even when every replica executes the same
//! substitute.
use super::Cursor;
use crate::client;
use crate::trace::short;
use crate::world::World;

pub struct ExactPayload {
    cursor: Vec<Cursor>,
}

impl ExactPayload {
    pub fn new(n: usize) -> Self {
        ExactPayload {
            cursor: vec![Cursor::default(); n],
        }
    }

    pub fn check(&mut self, w: &World) -> Result<(), String> {
        for node in w.nodes.iter().filter(|x| x.is_honest()) {
            let cursor = &mut self.cursor[node.id as usize];
            for block in &node.app.blocks[cursor.start(node)..] {
                for r in &block.proposal.requests {
                    let exact = w
                        .submitted
                        .get(&r.id)
                        .is_some_and(|s| client::same(&s.request, r));
                    if !exact {
                        return Err(format!(
                            "exact payload: replica {} executed at height {} request {} with bytes no client submitted",
                            node.id,
                            block.proposal.seq,
                            short(&r.id)
                        ));
                    }
                }
            }
            cursor.at = node.app.blocks.len();
        }
        Ok(())
    }
}
