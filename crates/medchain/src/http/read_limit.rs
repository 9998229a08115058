//! Record reads per account (issue 12): each read served puts an access entry on chain, so a
//! script reading in a loop would flood every validator. A token bucket per reader allows a
//! burst of [`READ_BURST`] reads and then one per [`READ_REFILL_MS`]: far above what a person
//! reaches by hand (a handful a minute), far below a loop. Beyond it: 429 with `Retry-After`,
//! and no access entry (only reads served are on chain, each with its own entry).

use std::collections::HashMap;
use std::sync::Mutex;

use super::ApiError;

/// Reads one account may make at once.
pub const READ_BURST: u64 = 20;
/// One more read is allowed per this many milliseconds (20 a minute, sustained).
pub const READ_REFILL_MS: u64 = 3_000;
/// Buckets kept before the full ones (as good as none) are dropped.
const MAX_BUCKETS: usize = 10_000;

/// Tokens are counted in thousandths, so that refilling needs no floating point.
const MILLI: u64 = 1_000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    milli_tokens: u64,
    at_ms: u64,
}

impl Bucket {
    fn refilled(self, now_ms: u64) -> Self {
        let elapsed_ms = now_ms.saturating_sub(self.at_ms);
        let earned = elapsed_ms.saturating_mul(MILLI) / READ_REFILL_MS;
        Bucket {
            milli_tokens: self
                .milli_tokens
                .saturating_add(earned)
                .min(READ_BURST * MILLI),
            at_ms: now_ms.max(self.at_ms),
        }
    }
}

/// The read buckets of one hospital's accounts.
#[derive(Default)]
pub(crate) struct ReadLimiter(Mutex<HashMap<String, Bucket>>);

impl ReadLimiter {
    /// Takes one read of `account` now, or refuses it (429) with when to retry.
    pub(crate) fn spend(&self, account: &str, now_ms: u64) -> Result<(), ApiError> {
        let mut buckets = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let full = Bucket {
            milli_tokens: READ_BURST * MILLI,
            at_ms: now_ms,
        };
        let bucket = buckets
            .get(account)
            .map_or(full, |bucket| bucket.refilled(now_ms));
        if bucket.milli_tokens < MILLI {
            let wait_ms = (MILLI - bucket.milli_tokens).saturating_mul(READ_REFILL_MS) / MILLI;
            let retry_after_s = wait_ms.div_ceil(1000).max(1);
            tracing::info!(account = ?account, "record reads over the limit");
            return Err(ApiError::RateLimited {
                message: format!(
                    "Too many record reads: at most {READ_BURST} at once, then one every {} s \
                     (each read is an access entry on the chain); try again in {retry_after_s} s",
                    READ_REFILL_MS / 1000
                ),
                retry_after_s,
            });
        }
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(account) {
            buckets.retain(|_, b| b.refilled(now_ms).milli_tokens < READ_BURST * MILLI);
        }
        buckets.insert(
            account.to_string(),
            Bucket {
                milli_tokens: bucket.milli_tokens - MILLI,
                at_ms: bucket.at_ms,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_read_per_refill_interval() {
        let limiter = ReadLimiter::default();
        let t0 = 1_000_000;
        for _ in 0..READ_BURST {
            limiter.spend("p001", t0).unwrap();
        }
        let refused = limiter.spend("p001", t0).unwrap_err();
        assert!(matches!(
            refused,
            ApiError::RateLimited { retry_after_s, .. } if retry_after_s == READ_REFILL_MS / 1000
        ));
        // Others read on.
        limiter.spend("p002", t0).unwrap();
        // Half an interval earns nothing usable; a whole one earns one read.
        assert!(limiter.spend("p001", t0 + READ_REFILL_MS / 2).is_err());
        limiter.spend("p001", t0 + READ_REFILL_MS).unwrap();
        assert!(limiter.spend("p001", t0 + READ_REFILL_MS).is_err());
        // A long pause refills the burst, never more.
        let later = t0 + 1_000 * READ_REFILL_MS;
        for _ in 0..READ_BURST {
            limiter.spend("p001", later).unwrap();
        }
        assert!(limiter.spend("p001", later).is_err());
    }
}
