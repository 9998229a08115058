//! The time a validator goes by.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A validator's clock, in ms since the Unix epoch. Its runtime reads it at every tick (the
/// block times its replica proposes and checks, pbft's "Block time") and when it stamps the
/// transactions it accepts. The embedded cluster shares one clock among its validators and
/// with whoever asks for it (the HTTP layer), so that a test that moves a manual clock moves
/// the chain's time and the application's together.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system clock. In a deployment NTP keeps it within ε of real time, and ε must stay
    /// well below the block-time tolerance τ (2 s by default).
    #[default]
    System,
    /// A clock that only moves when told to (tests).
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
            Clock::System => system_now_ms(),
            Clock::Manual(ms) => ms.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward by `ms` (no effect on the system clock).
    pub fn advance_ms(&self, ms: u64) {
        if let Clock::Manual(now) = self {
            now.fetch_add(ms, Ordering::SeqCst);
        }
    }
}

/// The system clock in ms since the Unix epoch (0 if it reads before 1970).
pub(crate) fn system_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let clock = Clock::manual(1_000);
        let shared = clock.clone();
        assert_eq!(clock.now_ms(), 1_000);
        shared.advance_ms(300_000);
        assert_eq!(clock.now_ms(), 301_000);
        let before = system_now_ms();
        Clock::System.advance_ms(3_600_000);
        let after = Clock::System.now_ms();
        assert!(after >= before && after < before + 3_600_000 && before > 1_600_000_000_000);
    }
}
