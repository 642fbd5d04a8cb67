//! A set of `u64` held as sorted, disjoint, inclusive ranges; bounded, dropping the lowest
//! ranges first (quinn's `range_set` idea, kept small: acks only ever need recent ranges).

use smallvec::SmallVec;

/// Ranges kept inline; more spill to the heap up to the set's cap (a message's acked bytes
/// are almost always one range; a connection's received packets spill once and keep it).
const INLINE: usize = 2;

#[derive(Clone, Debug, Default)]
pub(crate) struct RangeSet {
    /// Ascending, disjoint, non-adjacent, inclusive.
    ranges: SmallVec<[(u64, u64); INLINE]>,
}

impl RangeSet {
    /// Inserts `[start, end]`; keeps at most `cap` ranges (the lowest go). Returns true if any
    /// value was new.
    pub(crate) fn insert(&mut self, start: u64, end: u64, cap: usize) -> bool {
        // The common case first: packet numbers arrive in order, so a new one extends the
        // highest range or starts one above it (no scan, no shifting).
        if let Some(last) = self.ranges.last_mut() {
            if start > last.1 {
                if start == last.1 + 1 {
                    last.1 = end;
                } else {
                    self.ranges.push((start, end));
                    if self.ranges.len() > cap.max(1) {
                        self.ranges.remove(0);
                    }
                }
                return true;
            }
        }
        if self.contains_range(start, end) {
            return false;
        }
        let mut s = start;
        let mut e = end;
        // Merge every range that overlaps or touches [s, e].
        let mut i = 0;
        while i < self.ranges.len() {
            let (rs, re) = self.ranges[i];
            if re.saturating_add(1) >= s && rs <= e.saturating_add(1) {
                s = s.min(rs);
                e = e.max(re);
                self.ranges.remove(i);
            } else {
                i += 1;
            }
        }
        let pos = self
            .ranges
            .iter()
            .position(|&(rs, _)| rs > s)
            .unwrap_or(self.ranges.len());
        self.ranges.insert(pos, (s, e));
        while self.ranges.len() > cap.max(1) {
            self.ranges.remove(0);
        }
        true
    }

    pub(crate) fn contains(&self, v: u64) -> bool {
        self.ranges.iter().any(|&(s, e)| s <= v && v <= e)
    }

    fn contains_range(&self, start: u64, end: u64) -> bool {
        self.ranges.iter().any(|&(s, e)| s <= start && end <= e)
    }

    /// Total values covered.
    pub(crate) fn covered(&self) -> u64 {
        self.ranges.iter().map(|&(s, e)| e - s + 1).sum()
    }

    /// Ranges, highest first.
    pub(crate) fn descending(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().rev().copied()
    }

    /// Largest value, if any.
    pub(crate) fn max(&self) -> Option<u64> {
        self.ranges.last().map(|&(_, e)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_neighbours_and_overlaps() {
        let mut r = RangeSet::default();
        assert!(r.insert(5, 5, 10));
        assert!(r.insert(7, 9, 10));
        assert!(r.insert(6, 6, 10));
        assert!(!r.insert(8, 8, 10));
        assert_eq!(r.descending().collect::<Vec<_>>(), vec![(5, 9)]);
        r.insert(20, 30, 10);
        r.insert(1, 2, 10);
        assert_eq!(
            r.descending().collect::<Vec<_>>(),
            vec![(20, 30), (5, 9), (1, 2)]
        );
        assert_eq!(r.covered(), 11 + 5 + 2);
        assert!(r.contains(25) && !r.contains(15));
        r.insert(3, 19, 10);
        assert_eq!(r.descending().collect::<Vec<_>>(), vec![(1, 30)]);
    }

    /// The in-order fast path and the general merge agree: every insertion order of the
    /// same values gives the same ranges.
    #[test]
    fn in_order_and_shuffled_insertions_give_the_same_ranges() {
        use rand::seq::SliceRandom;
        use rand::{SeedableRng, rngs::StdRng};
        let values: Vec<u64> = (0..400).filter(|v| v % 7 != 3 && v % 11 != 5).collect();
        let mut in_order = RangeSet::default();
        for &v in &values {
            assert!(in_order.insert(v, v, 1000));
            assert!(!in_order.insert(v, v, 1000), "{v} twice");
        }
        for seed in 0..20 {
            let mut shuffled = values.clone();
            shuffled.shuffle(&mut StdRng::seed_from_u64(seed));
            let mut r = RangeSet::default();
            for &v in &shuffled {
                assert!(r.insert(v, v, 1000));
            }
            assert!(
                r.descending().eq(in_order.descending()),
                "seed {seed}: {:?}",
                r.descending().collect::<Vec<_>>()
            );
        }
        // Extending the top range by a span, and a span above it.
        let mut r = RangeSet::default();
        r.insert(1, 3, 10);
        r.insert(4, 9, 10);
        r.insert(12, 14, 10);
        assert_eq!(r.descending().collect::<Vec<_>>(), vec![(12, 14), (1, 9)]);
    }

    #[test]
    fn stays_within_its_cap_dropping_the_oldest() {
        let mut r = RangeSet::default();
        for i in 0..100u64 {
            r.insert(i * 10, i * 10, 4);
        }
        assert_eq!(
            r.descending().collect::<Vec<_>>(),
            vec![(990, 990), (980, 980), (970, 970), (960, 960)]
        );
    }
}
