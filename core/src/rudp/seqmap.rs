//! A map from sequence numbers to values for keys that only ever grow: a ring of slots from
//! the lowest live key, so inserting, looking up and removing are O(1) and steady-state use
//! allocates nothing (a `BTreeMap` allocates and frees nodes as messages come and go).

use std::collections::VecDeque;

#[derive(Debug)]
pub(crate) struct SeqMap<T> {
    /// Key of `slots[0]`.
    base: u32,
    slots: VecDeque<Option<T>>,
    len: usize,
}

impl<T> Default for SeqMap<T> {
    fn default() -> Self {
        Self {
            base: 0,
            slots: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> SeqMap<T> {
    /// Inserts `seq`, which must not be below any key inserted before.
    pub(crate) fn insert(&mut self, seq: u32, v: T) {
        if self.slots.is_empty() {
            self.base = seq;
        }
        let Some(i) = seq.checked_sub(self.base) else {
            debug_assert!(false, "keys only grow");
            return;
        };
        let i = i as usize;
        while self.slots.len() <= i {
            self.slots.push_back(None);
        }
        if self.slots[i].replace(v).is_none() {
            self.len += 1;
        }
    }

    fn index(&self, seq: u32) -> Option<usize> {
        let i = seq.checked_sub(self.base)? as usize;
        (i < self.slots.len()).then_some(i)
    }

    pub(crate) fn get(&self, seq: u32) -> Option<&T> {
        self.slots.get(self.index(seq)?)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, seq: u32) -> Option<&mut T> {
        let i = self.index(seq)?;
        self.slots.get_mut(i)?.as_mut()
    }

    pub(crate) fn contains_key(&self, seq: u32) -> bool {
        self.get(seq).is_some()
    }

    pub(crate) fn remove(&mut self, seq: u32) -> Option<T> {
        let i = self.index(seq)?;
        let v = self.slots[i].take()?;
        self.len -= 1;
        while self.slots.front().is_some_and(Option::is_none) {
            self.slots.pop_front();
            self.base = self.base.wrapping_add(1);
        }
        Some(v)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn first_key(&self) -> Option<u32> {
        // Leading empty slots are always popped, so the front is the first key.
        self.slots.front().map(|_| self.base)
    }

    #[cfg(test)]
    pub(crate) fn keys(&self) -> impl Iterator<Item = u32> + '_ {
        let base = self.base;
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(move |(i, _)| base.wrapping_add(i as u32))
    }

    /// Removes and returns everything, lowest key first.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (u32, T)> + '_ {
        let base = self.base;
        self.len = 0;
        self.slots
            .drain(..)
            .enumerate()
            .filter_map(move |(i, s)| s.map(|v| (base.wrapping_add(i as u32), v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_an_ordered_map_for_growing_keys() {
        let mut m = SeqMap::default();
        for k in 5..10u32 {
            m.insert(k, k * 10);
        }
        assert_eq!(m.first_key(), Some(5));
        assert_eq!(m.remove(7), Some(70));
        assert_eq!(m.remove(7), None);
        assert_eq!(m.remove(5), Some(50));
        assert_eq!(m.first_key(), Some(6));
        assert_eq!(m.keys().collect::<Vec<_>>(), vec![6, 8, 9]);
        assert_eq!(m.len(), 3);
        assert_eq!(m.get(8), Some(&80));
        assert!(!m.contains_key(4) && !m.contains_key(100));
        m.insert(12, 120);
        assert_eq!(m.keys().collect::<Vec<_>>(), vec![6, 8, 9, 12]);
        assert_eq!(
            m.drain().collect::<Vec<_>>(),
            vec![(6, 60), (8, 80), (9, 90), (12, 120)]
        );
        assert_eq!(m.len(), 0);
        m.insert(100, 1);
        assert_eq!(m.first_key(), Some(100));
    }
}
