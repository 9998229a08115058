//! This validator's own seals not yet seen on chain (§5.5), with their deadlines, ordered by
//! deadline too: a block deletes the keys of those whose deadline its time has passed, and
//! finds them without walking every pending seal (a busy validator can hold hundreds of
//! thousands, each block three times a second).

use std::collections::{BTreeSet, HashMap};

use ledger::TxId;

#[derive(Debug, Default)]
pub(super) struct Pending {
    not_after_ms: HashMap<TxId, u64>,
    by_deadline: BTreeSet<(u64, TxId)>,
}

impl Pending {
    /// `tx` is pending until `not_after_ms` (a deadline it had before is replaced).
    pub fn insert(&mut self, tx: TxId, not_after_ms: u64) {
        if let Some(before) = self.not_after_ms.insert(tx, not_after_ms) {
            self.by_deadline.remove(&(before, tx));
        }
        self.by_deadline.insert((not_after_ms, tx));
    }

    /// `tx` is pending until `not_after_ms`, unless it is already.
    pub fn insert_if_absent(&mut self, tx: TxId, not_after_ms: u64) {
        if !self.contains(&tx) {
            self.insert(tx, not_after_ms);
        }
    }

    /// Whether `tx` was pending.
    pub fn remove(&mut self, tx: &TxId) -> bool {
        match self.not_after_ms.remove(tx) {
            Some(not_after_ms) => self.by_deadline.remove(&(not_after_ms, *tx)),
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.not_after_ms.len()
    }

    pub fn contains(&self, tx: &TxId) -> bool {
        self.not_after_ms.contains_key(tx)
    }

    /// Takes out the seals that a block of time `time_ms` can no longer apply
    /// (`not_after_ms < time_ms`).
    pub fn take_expired(&mut self, time_ms: u64) -> Vec<TxId> {
        let mut expired = Vec::new();
        while let Some(&(not_after_ms, tx)) = self.by_deadline.first()
            && not_after_ms < time_ms
        {
            self.by_deadline.pop_first();
            self.not_after_ms.remove(&tx);
            expired.push(tx);
        }
        expired
    }

    #[cfg(test)]
    pub fn txs(&self) -> Vec<TxId> {
        self.not_after_ms.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_expire_in_deadline_order_and_a_new_deadline_replaces_the_old() {
        let mut pending = Pending::default();
        pending.insert([1; 32], 30);
        pending.insert([2; 32], 10);
        pending.insert([3; 32], u64::MAX);
        pending.insert_if_absent([2; 32], 50);
        pending.insert([1; 32], 20);
        assert!(
            pending.take_expired(10).is_empty(),
            "a deadline is inclusive"
        );
        assert_eq!(pending.take_expired(21), [[2; 32], [1; 32]]);
        assert!(!pending.contains(&[1; 32]) && pending.contains(&[3; 32]));
        assert!(pending.remove(&[3; 32]));
        assert!(!pending.remove(&[3; 32]));
        assert!(pending.take_expired(u64::MAX).is_empty());
        assert_eq!(pending.by_deadline.len(), 0);
    }
}
