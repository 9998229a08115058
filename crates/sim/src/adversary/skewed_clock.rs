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

/// How far from τ a skew "about τ" may be, either side (ms).
const SKEW_SPREAD_MS: i64 = 400;

/// The plot's skew (ms): an hour, or about τ (within 400 ms of it, either side: accepted by
/// some correct backups and not others), ahead (positive) or behind (negative).
pub fn draw_skew_ms(tolerance_ms: u64, rng: &mut ChaCha8Rng) -> i64 {
    let tolerance = i64::try_from(tolerance_ms).unwrap_or(i64::MAX / 2);
    let magnitude = if rng.gen_bool(0.3) {
        HOUR_MS
    } else {
        tolerance + rng.gen_range(-SKEW_SPREAD_MS..=SKEW_SPREAD_MS)
    };
    if rng.gen_bool(0.6) {
        magnitude
    } else {
        -magnitude
    }
}

/// How many more ticks (1 ms each at an honest rate) a request may wait when `skewed` primaries
/// with clocks `skew_ms` ahead push block times to the edge and are replaced in turn (the
/// `censor` profile): backups give the primary of each view after such a block the wait it
/// inherited, until their clocks are within τ/4 of the block (pbft's crate docs, "Timers"), so
/// every skewed primary after the first costs `skew − τ/4`; the first correct primary then
/// waits `skew − τ/2` before its block time may follow. Each wait gets `slack_ms` (honest
/// clocks off real time, message delays). Exactly the design's waits, no more: a wait τ/2
/// longer per view (`--planted-bug owed-wait-too-long`) is caught (red team s32 F2).
pub fn owed_wait_ticks(skew_ms: i64, skewed: u64, slack_ms: u64, config: &pbft::Config) -> u64 {
    let tolerance_ms = config.block_time_tolerance_ms;
    let ahead_ms = u64::try_from(skew_ms).unwrap_or(0);
    if skewed == 0 || ahead_ms == 0 || ahead_ms > tolerance_ms + SKEW_SPREAD_MS.unsigned_abs() {
        return 0; // not ahead, or too far ahead to be accepted by anyone
    }
    let owed_per_view = ahead_ms.saturating_sub(config.clock_skew_allowance_ms());
    let first_correct = ahead_ms.saturating_sub(tolerance_ms / 2);
    (skewed - 1) * (owed_per_view + slack_ms) + first_correct + slack_ms
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
