//! Bounded log: whatever the faults, every replica's memory (log, buffers, pending requests,
//! checkpoint and view-change tables) and its durable records stay within bounds derived from
//! the configuration.
use crate::world::{World, replica_config};

pub struct BoundedLog;

impl BoundedLog {
    pub fn check(&self, w: &World) -> Result<(), String> {
        let c = replica_config(0, w.n, None);
        let l = c.watermark_window as usize;
        let n = w.n as usize;
        let per_sender_checkpoints = l / c.checkpoint_interval as usize + 2;
        for node in &w.nodes {
            let Some(r) = &node.replica else { continue };
            let s = r.log_stats();
            let bounds = [
                ("slots", s.slots, l),
                ("waiting", s.waiting, l),
                ("prepared certificates", s.prepared_certificates, l),
                ("executed digests", s.executed_digests, l + 1),
                ("pending", s.pending, c.max_pending),
                ("executed ids", s.executed_ids, c.executed_window),
                (
                    "future buffer",
                    s.future_buffered,
                    n * c.future_buffer_per_sender,
                ),
                (
                    "checkpoint messages",
                    s.checkpoint_messages,
                    n * per_sender_checkpoints,
                ),
                (
                    "view changes",
                    s.view_changes,
                    n * pbft::VIEW_CHANGES_PER_SENDER,
                ),
                // Compacted at every stable checkpoint: a view record, a checkpoint, and per
                // sequence number in the window a pre-prepare and a certificate, plus what a
                // window's worth of view changes between checkpoints can add.
                ("durable records", node.durable.len(), 8 * l + 64),
            ];
            for (what, value, bound) in bounds {
                if value > bound {
                    return Err(format!(
                        "bounded log: replica {} keeps {value} {what} (bound {bound})",
                        node.id
                    ));
                }
            }
        }
        Ok(())
    }
}
