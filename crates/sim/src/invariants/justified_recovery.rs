//! Justified recovery bound (issue 8, finding 2): the bound (V, H) an honest recovering replica
//! waits for is one the cluster has reached or can reach: V is no higher than a view some
//! replica was in, H no more than L past a sequence number some replica executed. Were one
//! answer believed that said more, the replica could stay passive for good.
use crate::world::{World, recovery_bound, replica_config};

#[derive(Default)]
pub struct JustifiedRecovery {
    /// The highest sequence number any replica executed so far (a replica that loses its
    /// ledger lowers its own head, not this).
    max_executed: u64,
}

impl JustifiedRecovery {
    pub fn check(&mut self, w: &World) -> Result<(), String> {
        for node in &w.nodes {
            self.max_executed = self.max_executed.max(node.app.head().0);
        }
        let window = replica_config(0, w.n, None).watermark_window;
        let recovering = w
            .nodes
            .iter()
            .filter(|x| x.is_honest() && x.replica.as_ref().is_some_and(|r| r.is_recovering()));
        for node in recovering {
            if let Some((view, seq)) = recovery_bound(node)
                && (view > w.stats.max_view || seq > self.max_executed + window)
            {
                return Err(format!(
                    "justified recovery: replica {} waits for view {view} and sequence number \
                     {seq}, beyond the highest view any replica was in ({}) or L past the \
                     highest execution ({})",
                    node.id, w.stats.max_view, self.max_executed
                ));
            }
        }
        Ok(())
    }
}
