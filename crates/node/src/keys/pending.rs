//! This validator's own seals not yet seen on chain (§5.5), with their deadlines, ordered by
//! deadline too: a block deletes the keys of those whose deadline its time has passed, and
//! finds them without walking every pending seal (a busy validator can hold hundreds of
//! thousands, each block three times a second).

use std::collections::{BTreeSet, HashMap};

use ledger::TxId;

#[derive(Debug, Default)]
pub(super) struct Pending {
    seals: HashMap<TxId, Seal>,
    by_deadline: BTreeSet<(u64, TxId)>,
}

#[derive(Debug, Clone, Copy)]
struct Seal {
    not_after_ms: u64,
    /// The `seq` of its key's row in `keys.db`: the block that applies the seal finds the row
    /// there rather than through the epoch index, behind every epoch stored since
    /// (BENCHMARKS.md "thirty-eighth"). Checked before it is used; none for a transaction
    /// whose row a start met twice ([`Pending::insert_read`]).
    row: Option<i64>,
}

impl Pending {
    /// `tx`, its key in row `row`, is pending until `not_after_ms` (a deadline it had before is
    /// replaced).
    pub fn insert(&mut self, tx: TxId, not_after_ms: u64, row: Option<i64>) {
        let seal = Seal { not_after_ms, row };
        if let Some(before) = self.seals.insert(tx, seal) {
            self.by_deadline.remove(&(before.not_after_ms, tx));
        }
        self.by_deadline.insert((not_after_ms, tx));
    }

    /// The row `tx`'s key was in when it became pending (to be checked).
    pub fn row(&self, tx: &TxId) -> Option<i64> {
        self.seals.get(tx)?.row
    }

    /// [`Pending::insert`], unless `tx` is pending already.
    pub fn insert_if_absent(&mut self, tx: TxId, not_after_ms: u64, row: i64) {
        if !self.contains(&tx) {
            self.insert(tx, not_after_ms, Some(row));
        }
    }

    /// [`Pending::insert`] of a row read at a start; whether `tx` was met before. A
    /// transaction met twice (its row copied in the file) keeps no row: its block writes the
    /// chain's facts in the row that lookups find, not in a copy they never read (red team s86).
    pub fn insert_read(&mut self, tx: TxId, not_after_ms: u64, row: i64) -> bool {
        let again = self.contains(&tx);
        self.insert(tx, not_after_ms, (!again).then_some(row));
        again
    }

    /// Whether `tx` was pending.
    pub fn remove(&mut self, tx: &TxId) -> bool {
        match self.seals.remove(tx) {
            Some(seal) => self.by_deadline.remove(&(seal.not_after_ms, *tx)),
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.seals.len()
    }

    pub fn contains(&self, tx: &TxId) -> bool {
        self.seals.contains_key(tx)
    }

    /// Takes out the seals that a block of time `time_ms` can no longer apply
    /// (`not_after_ms < time_ms`), with their rows.
    pub fn take_expired(&mut self, time_ms: u64) -> Vec<(TxId, Option<i64>)> {
        let mut expired = Vec::new();
        while let Some(&(not_after_ms, tx)) = self.by_deadline.first()
            && not_after_ms < time_ms
        {
            self.by_deadline.pop_first();
            let row = self.seals.remove(&tx).and_then(|seal| seal.row);
            expired.push((tx, row));
        }
        expired
    }

    #[cfg(test)]
    pub fn txs(&self) -> Vec<TxId> {
        self.seals.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_expire_in_deadline_order_and_a_new_deadline_replaces_the_old() {
        let mut pending = Pending::default();
        pending.insert([1; 32], 30, None);
        pending.insert([2; 32], 10, None);
        pending.insert([3; 32], u64::MAX, None);
        pending.insert_if_absent([2; 32], 50, 4);
        pending.insert([1; 32], 20, None);
        assert!(
            pending.take_expired(10).is_empty(),
            "a deadline is inclusive"
        );
        assert_eq!(pending.take_expired(21), [([2; 32], None), ([1; 32], None)]);
        assert!(!pending.contains(&[1; 32]) && pending.contains(&[3; 32]));
        assert!(pending.remove(&[3; 32]));
        assert!(!pending.remove(&[3; 32]));
        assert!(pending.take_expired(u64::MAX).is_empty());
        assert_eq!(pending.by_deadline.len(), 0);
    }

    /// A seal's row is known until the seal leaves, whichever way; a new deadline comes with
    /// its row.
    #[test]
    fn a_seal_keeps_its_row_until_it_leaves() {
        let mut pending = Pending::default();
        pending.insert([1; 32], 30, Some(7));
        pending.insert([2; 32], 10, Some(8));
        pending.insert_if_absent([1; 32], 40, 9);
        assert_eq!(pending.row(&[1; 32]), Some(7), "pending already");
        assert_eq!(pending.row(&[3; 32]), None);
        assert_eq!(pending.take_expired(11), [([2; 32], Some(8))]);
        assert_eq!(pending.row(&[2; 32]), None, "expired");
        assert!(pending.remove(&[1; 32]));
        assert_eq!(pending.row(&[1; 32]), None, "removed");
        pending.insert([4; 32], 50, Some(9));
        pending.insert([4; 32], 60, Some(10));
        assert_eq!(pending.row(&[4; 32]), Some(10), "replaced");
        assert!(!pending.insert_read([5; 32], 70, 11));
        assert_eq!(pending.row(&[5; 32]), Some(11));
        assert!(pending.insert_read([5; 32], 80, 12), "met twice");
        assert_eq!(pending.row(&[5; 32]), None, "met twice: no row");
        assert!(pending.insert_read([5; 32], 90, 13));
        assert_eq!(pending.row(&[5; 32]), None);
        assert_eq!(
            pending.take_expired(85),
            [([4; 32], Some(10))],
            "the last deadline read"
        );
    }

    /// Red team s10, held: random inserts (replacing deadlines, with ties and the ends of the
    /// numbers), `insert_if_absent`, removals and blocks against the map walked as before: the
    /// same seals expire at each block, the same removals answer, and the map and the set never
    /// diverge.
    #[test]
    fn red_team_s10_held_pending_does_as_the_map_walked_before() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        use std::collections::HashMap;
        for seed in 0..200u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut pending = Pending::default();
            let mut before: HashMap<TxId, u64> = HashMap::new();
            let deadline = |rng: &mut StdRng| match rng.gen_range(0..10) {
                0 => u64::MAX,
                1 => 0,
                _ => rng.gen_range(0..50),
            };
            for _ in 0..300 {
                let tx = [rng.gen_range(0..20u8); 32];
                match rng.gen_range(0..5) {
                    0 => {
                        let d = deadline(&mut rng);
                        pending.insert(tx, d, None);
                        before.insert(tx, d);
                    }
                    1 => {
                        let d = deadline(&mut rng);
                        pending.insert_if_absent(tx, d, 1);
                        before.entry(tx).or_insert(d);
                    }
                    2 => assert_eq!(pending.remove(&tx), before.remove(&tx).is_some()),
                    _ => {
                        let time = match rng.gen_range(0..10) {
                            0 => u64::MAX,
                            _ => rng.gen_range(0..60),
                        };
                        let mut taken: Vec<TxId> = pending
                            .take_expired(time)
                            .into_iter()
                            .map(|(tx, _)| tx)
                            .collect();
                        let mut expired: Vec<TxId> = before
                            .iter()
                            .filter(|(_, not_after_ms)| **not_after_ms < time)
                            .map(|(tx, _)| *tx)
                            .collect();
                        before.retain(|_, not_after_ms| *not_after_ms >= time);
                        taken.sort();
                        expired.sort();
                        assert_eq!(taken, expired, "seed {seed}");
                    }
                }
                assert_eq!(pending.len(), before.len());
                assert_eq!(pending.by_deadline.len(), before.len(), "seed {seed}");
                assert!(before.iter().all(
                    |(tx, d)| pending.contains(tx) && pending.by_deadline.contains(&(*d, *tx))
                ));
            }
        }
    }
}
