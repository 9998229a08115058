//! The time the application goes by.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The system clock, or one that tests move by hand.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    #[default]
    System,
    /// A clock that only moves when told to.
    Manual(Arc<AtomicU64>),
    /// The system clock plus an offset that only grows: it moves on its own (as the
    /// transactions' timestamps must, while a block's time is its latest entry's) and jumps
    /// when a test advances it.
    Ahead(Arc<AtomicU64>),
}

impl Clock {
    /// A manual clock reading `start_ms`.
    pub fn manual(start_ms: u64) -> Self {
        Clock::Manual(Arc::new(AtomicU64::new(start_ms)))
    }

    /// The system clock, advanced by tests.
    pub fn ahead() -> Self {
        Clock::Ahead(Arc::new(AtomicU64::new(0)))
    }

    /// The time now, in ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::System => super::now_ms(),
            Clock::Manual(t) => t.load(Ordering::SeqCst),
            Clock::Ahead(offset) => super::now_ms().saturating_add(offset.load(Ordering::SeqCst)),
        }
    }

    /// Moves a manual clock forward by `by` and returns the new time; the system clock is not
    /// moved (`None`).
    pub fn advance(&self, by: Duration) -> Option<u64> {
        match self {
            Clock::System => None,
            Clock::Manual(t) | Clock::Ahead(t) => {
                let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
                t.fetch_add(by, Ordering::SeqCst);
                Some(self.now_ms())
            }
        }
    }
}
