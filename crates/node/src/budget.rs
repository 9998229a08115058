//! Per-peer budgets of work done for a peer (token buckets): what a validator spends on a
//! peer's small messages that cost it much (the signatures a view-change carries, the blocks a
//! `FetchBlocks` asks for) is bounded per peer and per second, so that one dishonest validator
//! cannot buy that work as fast as its link goes.

use std::time::{Duration, Instant};

use pbft::ReplicaId;

/// Each peer's budget holds at most `burst` and fills again at `burst` per `refill`.
#[derive(Clone, Debug)]
pub(crate) struct PeerBudgets {
    burst: f64,
    refill: Duration,
    /// Per peer: what it had left, and when that was counted.
    peers: Vec<(f64, Instant)>,
}

impl PeerBudgets {
    /// Budgets for `peers` peers, full at `now`.
    pub(crate) fn new(peers: usize, burst: u64, refill: Duration, now: Instant) -> Self {
        PeerBudgets {
            burst: burst as f64,
            refill,
            peers: vec![(burst as f64, now); peers],
        }
    }

    /// What `peer` has at `now` (negative while it is in debt: [`PeerBudgets::charge`]); none
    /// for an unknown peer.
    pub(crate) fn left(&self, peer: ReplicaId, now: Instant) -> Option<f64> {
        let (left, counted) = self.peers.get(peer as usize)?;
        let refilled = now.saturating_duration_since(*counted).as_secs_f64()
            / self.refill.as_secs_f64().max(f64::MIN_POSITIVE)
            * self.burst;
        Some((left + refilled).min(self.burst))
    }

    /// Whether `peer`'s budget is full at `now`: it covers anything [`PeerBudgets::spend`] takes.
    pub(crate) fn full(&self, peer: ReplicaId, now: Instant) -> bool {
        self.left(peer, now).is_some_and(|left| left >= self.burst)
    }

    /// Takes `amount` from `peer`'s budget if it holds that much: whether it did. An amount
    /// larger than the whole burst counts as the burst: it passes once the budget is full, and
    /// empties it.
    pub(crate) fn spend(&mut self, peer: ReplicaId, amount: u64, now: Instant) -> bool {
        let amount = (amount as f64).min(self.burst);
        match self.left(peer, now) {
            Some(left) if left >= amount => {
                self.peers[peer as usize] = (left - amount, now);
                true
            }
            _ => false,
        }
    }

    /// Takes `amount` from `peer`'s budget whatever it holds, into debt if need be: for work
    /// whose size is known only once done (the peer is served again only once the refill has
    /// paid the debt, so all it was served counts: red team s22).
    pub(crate) fn charge(&mut self, peer: ReplicaId, amount: u64, now: Instant) {
        if let Some(left) = self.left(peer, now) {
            self.peers[peer as usize] = (left - amount as f64, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_per_peer_refills_over_its_period_and_lets_one_large_amount_through_when_full() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        let mut budgets = PeerBudgets::new(4, 100, second, now);
        assert!(budgets.spend(1, 60, now));
        assert!(!budgets.spend(1, 60, now), "40 left");
        assert!(
            budgets.spend(2, 60, now),
            "another peer's budget is its own"
        );
        assert!(!budgets.full(1, now + second / 2));
        assert!(budgets.spend(1, 60, now + second / 5), "40 + 20");
        assert!(budgets.full(1, now + second * 2));
        assert!(
            budgets.spend(1, 1_000, now + second * 2),
            "larger than the burst, when full"
        );
        assert!(!budgets.spend(1, 1, now + second * 2), "and emptied it");
        assert!(!budgets.spend(9, 1, now), "no budget for an unknown peer");
        budgets.charge(3, 250, now);
        assert_eq!(budgets.left(3, now), Some(-150.0), "in debt");
        assert_eq!(budgets.left(3, now + second * 2), Some(50.0));
        assert!(!budgets.full(9, now) && budgets.left(9, now).is_none());
    }
}
