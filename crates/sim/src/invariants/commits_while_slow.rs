//! Commits while slow (finding 8): in the `slow` profile, every message takes 33-36 T from
//! early in the chaos phase until `SLOW_HEALING_TICKS` into healing. A view-change timeout capped
//! at 32 T never lets a view change complete there; doubled without a cap (§4.5.2) it outgrows
//! the delay, so every honest replica commits again before the network is fast again. A
//! liveness property, checked when the slow phase ends.
use crate::world::World;

pub struct CommitsWhileSlow;

impl CommitsWhileSlow {
    pub fn check(&self, w: &mut World) -> Result<(), String> {
        if !std::mem::take(&mut w.slow_ended) {
            return Ok(());
        }
        let stalled: Vec<u32> = w
            .nodes
            .iter()
            .filter(|x| x.is_honest())
            .filter(|x| {
                x.app.blocks.len()
                    <= w.executed_at_healing
                        .get(x.id as usize)
                        .copied()
                        .unwrap_or(0)
            })
            .map(|x| x.id)
            .collect();
        if stalled.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "commits while slow: replicas {stalled:?} executed nothing in the {} ticks of healing the network stayed slow (max view {})",
                crate::world::SLOW_HEALING_TICKS,
                w.stats.max_view
            ))
        }
    }
}
