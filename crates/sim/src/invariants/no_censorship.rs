//! No censorship: after healing, every submitted request is executed by every honest replica
//! within `censorship_bound_ticks` of its submission (or of healing, if submitted before), while
//! clients keep sending others (finding 3: a primary that keeps committing other requests must
//! not be able to drop one forever). A liveness property, checked as the run goes.
use crate::trace::short;
use crate::world::World;

/// Checked every this many ticks (the bound is far longer).
const EVERY_TICKS: u64 = 25;

pub struct NoCensorship;

impl NoCensorship {
    /// Also keeps the longest wait seen so far in `w.stats` (to within [`EVERY_TICKS`]), so
    /// that a run shows how close it came to the bound.
    pub fn check(&self, w: &mut World) -> Result<(), String> {
        if !w.healing || !w.now.is_multiple_of(EVERY_TICKS) {
            return Ok(());
        }
        let bound = w.cfg.censorship_bound_ticks;
        let longest = w
            .submitted
            .iter()
            .filter(|(id, _)| !w.done(id))
            .map(|(_, s)| w.now - s.at.max(w.healed_at))
            .max()
            .unwrap_or(0);
        w.stats.longest_wait_ticks = w.stats.longest_wait_ticks.max(longest);
        for (id, s) in &w.submitted {
            let since = s.at.max(w.healed_at);
            if w.now > since + bound && !w.done(id) {
                let missing: Vec<u32> = w
                    .nodes
                    .iter()
                    .filter(|x| x.is_honest() && !x.app.applied_set.contains(id))
                    .map(|x| x.id)
                    .collect();
                return Err(format!(
                    "no censorship: request {} ({}) waited more than {bound} ticks after healing, while {} others were submitted; not executed by replicas {missing:?}",
                    short(id),
                    if w.plot.censored.contains(id) {
                        "censored"
                    } else {
                        "not targeted"
                    },
                    w.submitted.values().filter(|o| o.at > since).count(),
                ));
            }
        }
        Ok(())
    }
}
