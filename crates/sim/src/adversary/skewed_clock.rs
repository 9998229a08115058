//! A replica with a skewed clock (pbft's crate docs, "Block time"): as primary, its proposals
//! are far ahead of real time or far behind it. Ahead, its replica goes by a clock that far
//! ahead (so its own chain stays consistent and it keeps proposing, pushing block times to the
//! edge when the skew is about τ; as a backup it withholds prepares for correct times). Behind,
//! its pre-prepares are rewritten to claim a time that far behind its clock (a correct
//! primary's clock never runs behind the time before it, so only a rewrite gets there).
use std::sync::Arc;

use pbft::PrePrepare;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::crypto;

const HOUR_MS: i64 = 3_600_000;

/// The plot's skew (ms): an hour, or about τ (within 400 ms of it, either side: accepted by
/// some correct backups and not others), ahead (positive) or behind (negative).
pub fn draw_skew_ms(tolerance_ms: u64, rng: &mut ChaCha8Rng) -> i64 {
    let tolerance = i64::try_from(tolerance_ms).unwrap_or(i64::MAX / 2);
    let magnitude = if rng.gen_bool(0.3) {
        HOUR_MS
    } else {
        tolerance + rng.gen_range(-400..=400)
    };
    if rng.gen_bool(0.6) {
        magnitude
    } else {
        -magnitude
    }
}

/// How many more ticks (1 ms each at an honest rate) a request may wait when a skewed clock
/// `skew_ms` ahead pushes block times to the edge: the primary of the view after such a block
/// may wait about τ/2 before it proposes, and backups give it that wait plus the allowance for
/// a slower clock (pbft's crate docs, "Timers"). One wait: that is all the runs need (red team
/// s32 F2), so a wait twice as long (`--planted-bug owed-wait-too-long`) is caught. The slack
/// covers honest clocks off by up to 400 ms (the skew profile's).
pub fn owed_wait_ticks(skew_ms: i64, config: &pbft::Config) -> u64 {
    const HONEST_CLOCK_SLACK_MS: u64 = 400;
    let tolerance_ms = config.block_time_tolerance_ms;
    let ahead_ms = u64::try_from(skew_ms).unwrap_or(0);
    if ahead_ms == 0 || ahead_ms > tolerance_ms + HONEST_CLOCK_SLACK_MS {
        return 0; // not ahead, or too far ahead to be accepted by anyone
    }
    tolerance_ms / 2 + config.clock_skew_allowance_ms() + HONEST_CLOCK_SLACK_MS
}

/// What a skewed-clock primary sends instead of `pp` when its skew is `skew_ms` behind.
pub fn behind(pp: &PrePrepare, skew_ms: u64) -> PrePrepare {
    let mut p = (*pp.proposal).clone();
    p.time_ms = p.time_ms.saturating_sub(skew_ms);
    PrePrepare {
        view: pp.view,
        digest: crypto::digest(&p),
        proposal: Arc::new(p),
    }
}
