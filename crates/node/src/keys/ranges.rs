//! A set of block heights kept as ranges, in bounded memory: past [`RANGES_MAX`] ranges the
//! closest ones are merged, so the set may grow to hold heights never added. That is safe where
//! it is used ([`super::wanted`]): a height is a block to read again for the keys it wants, and
//! a block that wants none costs a read and adds nothing.

use std::collections::BTreeMap;

/// Ranges a set holds at most (16 bytes each in the tree, about 40 with its nodes).
pub(super) const RANGES_MAX: usize = 256;

/// Heights, as inclusive ranges `start -> end`, neither overlapping nor adjacent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Ranges {
    ranges: BTreeMap<u64, u64>,
}

impl Ranges {
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// How many ranges (not heights) it holds.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn first(&self) -> Option<u64> {
        self.ranges.keys().next().copied()
    }

    pub fn contains(&self, height: u64) -> bool {
        self.ranges
            .range(..=height)
            .next_back()
            .is_some_and(|(_, end)| *end >= height)
    }

    /// The ranges, ascending.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(start, end)| (*start, *end))
    }

    pub fn insert(&mut self, height: u64) {
        self.insert_range(height, height);
    }

    /// Adds `start..=end` (nothing if `end < start`).
    pub fn insert_range(&mut self, mut start: u64, mut end: u64) {
        if end < start {
            return;
        }
        // Every range overlapping or adjacent to `start..=end` is merged into it.
        let touching: Vec<(u64, u64)> = self
            .ranges
            .range(..=end.saturating_add(1))
            .rev()
            .take_while(|(_, e)| e.saturating_add(1) >= start)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in touching {
            self.ranges.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
        if self.ranges.len() > RANGES_MAX {
            self.coarsen();
        }
    }

    pub fn extend(&mut self, other: &Ranges) {
        for (start, end) in other.iter() {
            self.insert_range(start, end);
        }
    }

    /// Takes the lowest height out.
    pub fn pop_first(&mut self) -> Option<u64> {
        let (start, end) = self.ranges.pop_first()?;
        if end > start {
            self.ranges.insert(start + 1, end);
        }
        Some(start)
    }

    /// Merges the ranges across the smaller half of the gaps between them: about half as many
    /// are left, each cost amortised over the insertions that made them.
    fn coarsen(&mut self) {
        let ranges: Vec<(u64, u64)> = self.iter().collect();
        let mut gaps: Vec<u64> = ranges.windows(2).map(|w| w[1].0 - w[0].1).collect();
        gaps.sort_unstable();
        let Some(&cut) = gaps.get(gaps.len() / 2) else {
            return;
        };
        self.ranges.clear();
        let mut current = ranges[0];
        for &(start, end) in &ranges[1..] {
            if start - current.1 <= cut {
                current.1 = end;
            } else {
                self.ranges.insert(current.0, current.1);
                current = (start, end);
            }
        }
        self.ranges.insert(current.0, current.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_pop_in_order() {
        let mut r = Ranges::default();
        for h in [5, 7, 6, 1, 2, 10] {
            r.insert(h);
        }
        assert_eq!(r.iter().collect::<Vec<_>>(), [(1, 2), (5, 7), (10, 10)]);
        r.insert_range(3, 4);
        assert_eq!(r.iter().collect::<Vec<_>>(), [(1, 7), (10, 10)]);
        assert!(r.contains(4) && r.contains(10) && !r.contains(8));
        assert_eq!(r.pop_first(), Some(1));
        assert_eq!(r.first(), Some(2));
        let popped: Vec<u64> = std::iter::from_fn(|| r.pop_first()).collect();
        assert_eq!(popped, [2, 3, 4, 5, 6, 7, 10]);
        assert!(r.is_empty());
    }

    /// A million scattered heights stay in at most RANGES_MAX ranges, and every one is kept.
    #[test]
    fn scattered_heights_stay_bounded_and_none_is_lost() {
        let mut r = Ranges::default();
        let heights: Vec<u64> = (0..1_000_000u64).map(|i| i * 7 + (i * i) % 5).collect();
        for h in &heights {
            r.insert(*h);
            assert!(r.len() <= RANGES_MAX);
        }
        assert!(heights.iter().all(|h| r.contains(*h)));
    }
}
