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
