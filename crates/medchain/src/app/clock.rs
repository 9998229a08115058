//! The time the application goes by.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The system clock, or a hand-moved one for tests (the same shape as the node's clock, which
/// the embedded cluster shares with the HTTP layer).
#[derive(Clone, Debug, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A manual clock reading `start_ms`.
    pub fn manual(start_ms: u64) -> Self {
        Clock::Manual(Arc::new(AtomicU64::new(start_ms)))
    }

    /// The time now, in ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::System => super::now_ms(),
            Clock::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward by `by` and returns the new time; the system clock is not
    /// moved (`None`).
    pub fn advance(&self, by: Duration) -> Option<u64> {
        match self {
            Clock::System => None,
            Clock::Manual(t) => {
                let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
                Some(t.fetch_add(by, Ordering::SeqCst).saturating_add(by))
            }
        }
    }
}
