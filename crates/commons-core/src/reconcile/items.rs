//! An item set in memory: sorted ids with a prefix-sum table of their accumulators.

use super::{Accumulator, Bound, Fingerprint, Items, Span};
use crate::id::RecordId;

/// A set of ids in memory: sorted ids and a prefix-sum table of their accumulators, so every
/// query is a binary search and a subtraction.
#[derive(Clone, Debug, Default)]
pub struct SortedItems {
    pub(super) ids: Vec<RecordId>,
    /// `prefix[i]` sums the first `i` ids; `prefix.len() == ids.len() + 1`.
    pub(super) prefix: Vec<Accumulator>,
}

impl SortedItems {
    /// Builds the set (sorting and removing duplicates). One BLAKE3 call per id.
    pub fn new(mut ids: Vec<RecordId>) -> Self {
        ids.sort_unstable();
        ids.dedup();
        let mut prefix = Vec::with_capacity(ids.len() + 1);
        let mut acc = Accumulator::default();
        prefix.push(acc);
        for id in &ids {
            acc.add(&Accumulator::of(id));
            prefix.push(acc);
        }
        SortedItems { ids, prefix }
    }

    /// The set with `new` ids added: a merge in O(n + k log k), hashing only the new ids (an
    /// old id's accumulator is the difference of two prefix sums).
    pub fn with(&self, new: &[RecordId]) -> SortedItems {
        let mut add: Vec<RecordId> = new
            .iter()
            .filter(|id| self.ids.binary_search(id).is_err())
            .copied()
            .collect();
        add.sort_unstable();
        add.dedup();
        if add.is_empty() {
            return self.clone();
        }
        let n = self.ids.len() + add.len();
        let mut ids = Vec::with_capacity(n);
        let mut prefix = Vec::with_capacity(n + 1);
        let mut acc = Accumulator::default();
        prefix.push(acc);
        let (mut i, mut j) = (0, 0);
        while i < self.ids.len() || j < add.len() {
            let old = j >= add.len() || (i < self.ids.len() && self.ids[i] < add[j]);
            let delta = if old {
                let mut d = self.prefix[i + 1];
                d.sub(&self.prefix[i]);
                ids.push(self.ids[i]);
                i += 1;
                d
            } else {
                ids.push(add[j]);
                j += 1;
                Accumulator::of(&add[j - 1])
            };
            acc.add(&delta);
            prefix.push(acc);
        }
        SortedItems { ids, prefix }
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The ids, ascending.
    pub fn as_slice(&self) -> &[RecordId] {
        &self.ids
    }

    /// Index range of a span.
    fn bounds(&self, span: &Span) -> (usize, usize) {
        let lo = self.ids.partition_point(|id| *id < span.lower);
        let hi = match span.upper {
            Bound::End => self.ids.len(),
            Bound::Id(u) => self.ids.partition_point(|id| *id < u),
        };
        (lo, hi.max(lo))
    }
}

impl Items for SortedItems {
    fn count(&self, span: &Span) -> u64 {
        let (lo, hi) = self.bounds(span);
        (hi - lo) as u64
    }

    fn fingerprint(&self, span: &Span) -> Fingerprint {
        let (lo, hi) = self.bounds(span);
        let mut acc = self.prefix[hi];
        acc.sub(&self.prefix[lo]);
        acc.fingerprint()
    }

    fn ids(&self, span: &Span, limit: usize) -> Vec<RecordId> {
        let (lo, hi) = self.bounds(span);
        self.ids[lo..hi.min(lo.saturating_add(limit))].to_vec()
    }

    fn nth(&self, span: &Span, n: u64) -> Option<RecordId> {
        let (lo, hi) = self.bounds(span);
        let i = lo.checked_add(usize::try_from(n).ok()?)?;
        (i < hi).then(|| self.ids[i])
    }

    fn contains(&self, id: &RecordId) -> bool {
        self.ids.binary_search(id).is_ok()
    }
}
