//! An item set in memory: two levels of sorted ids, each with a prefix-sum table of their
//! accumulators — a large base shared between snapshots, and a small delta of recent ids.
//!
//! A daemon keeps one set per family and adds the ids it stores (one fork charter, a gossiped
//! patch). A single sorted array would make each addition O(n) — at 100k ids, milliseconds on
//! every put. With two levels an addition merges into the delta only, O(delta); once the delta
//! passes [`DELTA_MAX`] ids it is merged into a new base, O(n) once every `DELTA_MAX` ids. Every
//! query is a binary search in each level (and, for `nth`, a binary search over the delta).

use std::sync::Arc;

use super::{Accumulator, Bound, Fingerprint, Items, Span};
use crate::id::RecordId;

/// Ids the delta may hold before it is merged into the base.
pub const DELTA_MAX: usize = 4096;

/// Sorted, distinct ids and the prefix sums of their accumulators.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Level {
    ids: Vec<RecordId>,
    /// `prefix[i]` sums the first `i` ids; `prefix.len() == ids.len() + 1` (or both empty).
    prefix: Vec<Accumulator>,
}

impl Level {
    /// From sorted, distinct ids: one BLAKE3 call per id.
    fn of_sorted(ids: Vec<RecordId>) -> Self {
        let mut prefix = Vec::with_capacity(ids.len() + 1);
        let mut acc = Accumulator::default();
        prefix.push(acc);
        for id in &ids {
            acc.add(&Accumulator::of(id));
            prefix.push(acc);
        }
        Level { ids, prefix }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    /// The accumulator of the `i`-th id (a difference of two prefix sums, no hashing).
    fn one(&self, i: usize) -> Accumulator {
        let mut d = self.prefix[i + 1];
        d.sub(&self.prefix[i]);
        d
    }

    /// The accumulator of the ids at indices `lo..hi`.
    fn sum(&self, lo: usize, hi: usize) -> Accumulator {
        if self.prefix.is_empty() {
            return Accumulator::default();
        }
        let mut acc = self.prefix[hi];
        acc.sub(&self.prefix[lo]);
        acc
    }

    /// The union with `other` (disjoint from this level): a merge in O(n + k), no hashing.
    fn merge(&self, other: &Level) -> Level {
        let n = self.len() + other.len();
        let mut ids = Vec::with_capacity(n);
        let mut prefix = Vec::with_capacity(n + 1);
        let mut acc = Accumulator::default();
        prefix.push(acc);
        let (mut i, mut j) = (0, 0);
        while i < self.len() || j < other.len() {
            let mine = j >= other.len() || (i < self.len() && self.ids[i] < other.ids[j]);
            let delta = if mine {
                ids.push(self.ids[i]);
                i += 1;
                self.one(i - 1)
            } else {
                ids.push(other.ids[j]);
                j += 1;
                other.one(j - 1)
            };
            acc.add(&delta);
            prefix.push(acc);
        }
        Level { ids, prefix }
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

    fn contains(&self, id: &RecordId) -> bool {
        self.ids.binary_search(id).is_ok()
    }
}

/// The first `limit` ids of two sorted, disjoint slices, merged.
fn merged(a: &[RecordId], b: &[RecordId], limit: usize) -> Vec<RecordId> {
    let mut out = Vec::with_capacity(limit.min(a.len() + b.len()));
    let (mut i, mut j) = (0, 0);
    while out.len() < limit && (i < a.len() || j < b.len()) {
        if j >= b.len() || (i < a.len() && a[i] < b[j]) {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out
}

/// A set of ids in memory (module documentation). Cloning it is cheap: the base is shared, the
/// delta holds at most [`DELTA_MAX`] ids.
#[derive(Clone, Debug, Default)]
pub struct SortedItems {
    base: Arc<Level>,
    /// Disjoint from the base.
    delta: Level,
}

impl SortedItems {
    /// Builds the set (sorting and removing duplicates). One BLAKE3 call per id.
    pub fn new(mut ids: Vec<RecordId>) -> Self {
        ids.sort_unstable();
        ids.dedup();
        SortedItems {
            base: Arc::new(Level::of_sorted(ids)),
            delta: Level::default(),
        }
    }

    /// The set with `new` ids added, hashing only the new ids: O(delta + k log k) while the
    /// delta stays under [`DELTA_MAX`], else one merge into a new base, O(n + k).
    pub fn with(&self, new: &[RecordId]) -> SortedItems {
        let mut add: Vec<RecordId> = new
            .iter()
            .filter(|id| !self.contains(id))
            .copied()
            .collect();
        add.sort_unstable();
        add.dedup();
        if add.is_empty() {
            return self.clone();
        }
        let delta = self.delta.merge(&Level::of_sorted(add));
        if delta.len() <= DELTA_MAX {
            return SortedItems {
                base: Arc::clone(&self.base),
                delta,
            };
        }
        SortedItems {
            base: Arc::new(self.base.merge(&delta)),
            delta: Level::default(),
        }
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.base.len() + self.delta.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `limit` ids after `after` (all from the first if `None`), ascending, and whether
    /// more follow.
    pub fn page(&self, after: Option<RecordId>, limit: usize) -> (Vec<RecordId>, bool) {
        let start = |l: &Level| match after {
            Some(a) => l.ids.partition_point(|id| *id <= a),
            None => 0,
        };
        let (b, d) = (
            &self.base.ids[start(&self.base)..],
            &self.delta.ids[start(&self.delta)..],
        );
        let page = merged(b, d, limit);
        let more = page.len() < b.len() + d.len();
        (page, more)
    }
}

impl PartialEq for SortedItems {
    /// The same ids (however they are split between the levels).
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.page(None, usize::MAX) == other.page(None, usize::MAX)
    }
}

impl Items for SortedItems {
    fn count(&self, span: &Span) -> u64 {
        let (bl, bh) = self.base.bounds(span);
        let (dl, dh) = self.delta.bounds(span);
        (bh - bl + dh - dl) as u64
    }

    fn fingerprint(&self, span: &Span) -> Fingerprint {
        let (bl, bh) = self.base.bounds(span);
        let (dl, dh) = self.delta.bounds(span);
        let mut acc = self.base.sum(bl, bh);
        acc.add(&self.delta.sum(dl, dh));
        acc.fingerprint()
    }

    fn ids(&self, span: &Span, limit: usize) -> Vec<RecordId> {
        let (bl, bh) = self.base.bounds(span);
        let (dl, dh) = self.delta.bounds(span);
        merged(&self.base.ids[bl..bh], &self.delta.ids[dl..dh], limit)
    }

    fn nth(&self, span: &Span, n: u64) -> Option<RecordId> {
        let (bl, bh) = self.base.bounds(span);
        let (dl, dh) = self.delta.bounds(span);
        let (b, d) = (&self.base.ids[bl..bh], &self.delta.ids[dl..dh]);
        let n = usize::try_from(n).ok()?;
        if n >= b.len() + d.len() {
            return None;
        }
        // The rank of d[k] in the union is k plus the base ids below it: increasing in k. Find
        // the first delta id of rank ≥ n; if its rank is n it is the answer, else the answer is
        // the base id preceded by exactly k delta ids.
        let rank = |k: usize| k + b.partition_point(|x| *x < d[k]);
        let (mut lo, mut hi) = (0, d.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if rank(mid) < n {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo < d.len() && rank(lo) == n {
            return Some(d[lo]);
        }
        b.get(n - lo).copied()
    }

    fn contains(&self, id: &RecordId) -> bool {
        self.base.contains(id) || self.delta.contains(id)
    }
}
