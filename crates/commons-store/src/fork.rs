//! A lineage's state at its start (a fork shares its parent's trees when it can, else it is
//! computed from scratch), and its fork point, kept up to date with its accepted set.
//!
//! **Sharing (the fast path).** A fork whose charter names exactly the parent's current fork
//! point, and which has no record of its own yet, has exactly its parent's accepted set, so the
//! same log, outcomes, files and accumulator (state is a function of the accepted set,
//! protocol.md §2). It takes the parent's roots (one more reference on each), its accepted and
//! conflicted counts, and a copy of its heads and exclusions: O(heads), whatever the history.
//! Its fork base is the log it started from (the same root, held once more).
//!
//! **An older point.** A fork whose base differs from the parent's accepted set starts from the
//! parent's trees too, and the patches that separate the two (found by a walk down both head
//! sets, bounded) are taken out of its log or put in, with the incremental engine: O(difference
//! × log n), not O(history).
//!
//! **From scratch (the rare cases).** Everything else — a walk over its budget, a fork that
//! already has records, a family becoming known, a base completing — is recomputed from the
//! records (`RecordSet::state`) and written as freshly built trees.
//!
//! **The fork point** (heads and exclusions of the accepted set) lives in `heads` and `excluded`.
//! When x enters the accepted set: if x was excluded (an ancestor of an accepted patch) it is no
//! longer; else x is a head, and the walk down its ancestors stops at accepted patches (which
//! stop being heads) and at patches already excluded, excluding the rest. When x leaves it: if
//! it was not a head it becomes excluded; if it was, the fork point is recomputed from the log
//! (rare: a maintainer withdrawing the newest acceptance).

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use commons_core::incremental;
use commons_core::state::{ForkPoint, OrderKey, RecordSet, fork_point};
use commons_core::tree::Accumulator;
use commons_core::{LineageId, Patch, RecordId};

use crate::StoreError;
use crate::keys::{self, T};
use crate::lineage_backend::Backend;
use crate::state::{Ctx, bump, corrupt};

/// Patches a fork at an older point may walk before it is computed from scratch instead.
const DIFF_BUDGET: usize = 10_000;

/// The log keys separating a parent's accepted set from a fork's base.
#[derive(Debug, Default)]
struct Diff {
    unaccept: Vec<OrderKey>,
    accept: Vec<OrderKey>,
}

impl Ctx<'_> {
    /// Sets up the state of a lineage whose charter just arrived, or whose family just became
    /// known: shared with its parent if it can be, else computed from scratch.
    pub(crate) fn start_lineage(&mut self, lineage: &LineageId) -> Result<(), StoreError> {
        if self.share_parent(lineage)? {
            return Ok(());
        }
        self.rebuild(lineage)
    }

    /// The fast path (module documentation). Returns whether it applied.
    fn share_parent(&mut self, lineage: &LineageId) -> Result<bool, StoreError> {
        let Some(fork) = self.charter(lineage)?.and_then(|c| c.fork) else {
            return Ok(false);
        };
        // Records of its own (patches, validations) would change its state: not the fast path.
        let own = self
            .o
            .scan(T::LineageRecords, lineage.as_bytes(), lineage.as_bytes(), 2)?;
        if own.len() != 1 {
            return Ok(false);
        }
        let (Some(parent), Some(meta)) = (self.meta(&fork.parent)?, self.meta(lineage)?) else {
            return Ok(false);
        };
        if !parent.base_complete || parent.family.is_none() || parent.family != meta.family {
            return Ok(false);
        }
        let point = self.fork_point(&fork.parent)?;
        let wanted = ForkPoint {
            heads: fork.heads.clone(),
            excluded: fork.excluded.clone(),
        };
        let diff = if point == wanted {
            Diff::default()
        } else {
            match self.diff(&point, &wanted)? {
                Some(d) => d,
                None => return Ok(false),
            }
        };
        // The parent's accumulator may have changed in this batch: write it out first, so that
        // the node shared is the current one.
        self.flush_acc(&fork.parent)?;
        let parent = self
            .meta(&fork.parent)?
            .ok_or_else(|| corrupt(T::Lineages, "the parent's summary vanished"))?;
        // Whatever the lineage held before (it may have been computed earlier in this batch,
        // before its family was known) is dropped: its trees, and its cached accumulator, which
        // would otherwise be written over the shared one at the end of the batch.
        self.clear_lineage(lineage)?;
        for root in [
            parent.files_root,
            parent.log_root,
            parent.log_root,
            parent.acc,
        ] {
            self.nodes.share(&self.o, root)?;
        }
        let m = self.meta_mut(lineage)?;
        m.files_root = parent.files_root;
        m.log_root = parent.log_root;
        m.base_root = parent.log_root;
        m.acc = parent.acc;
        m.root = parent.root;
        m.files = parent.files;
        m.base_complete = true;
        m.counts = [0, parent.counts[1], 0, parent.counts[3]];
        if !diff.unaccept.is_empty() || !diff.accept.is_empty() {
            // An older point: walk the fork from the parent's state to its base. Its base is then
            // the log that this leaves, held once more (its first write will copy it).
            for k in diff.unaccept.iter().rev() {
                incremental::unaccept(&mut Backend::new(self, *lineage)?, *k)?;
            }
            for k in &diff.accept {
                incremental::accept(&mut Backend::new(self, *lineage)?, *k)?;
            }
            self.nodes.release(&self.o, parent.log_root)?;
            let m = self.meta_mut(lineage)?;
            m.base_root = m.log_root;
            let root = m.log_root;
            self.nodes.share(&self.o, root)?;
        }
        self.write_fork_point(lineage, &wanted)?;
        tracing::debug!(target: "commons_store::state", %lineage, parent = %fork.parent, unaccepted = diff.unaccept.len(), accepted = diff.accept.len(), "fork shares its parent's state");
        Ok(true)
    }

    /// What separates the accepted set of `from` (a lineage's fork point) from that of `to` (a
    /// fork's base): the log keys to take out and to put in, each sorted. `None` when the walk
    /// would be too long, or a patch it needs is missing (then the fork is computed from
    /// scratch).
    ///
    /// Both sets are "ancestors of the heads minus the exclusions". The walk goes down from both
    /// head sets at once, highest generation first, painting each patch with the side(s) it is
    /// reached from; a patch's paint is final when it is taken (every child has a higher
    /// generation). It stops once every patch still queued is reached from both sides: below
    /// them the two sets agree. Exclusions must all be met by the walk (else `None`).
    fn diff(&mut self, from: &ForkPoint, to: &ForkPoint) -> Result<Option<Diff>, StoreError> {
        let mut paint: BTreeMap<RecordId, u8> = BTreeMap::new();
        let mut queue: BinaryHeap<(u64, RecordId)> = BinaryHeap::new();
        let mut open = 0usize;
        for (side, heads) in [(FROM, &from.heads), (TO, &to.heads)] {
            for h in heads {
                let Some(g) = self.generation(h)? else {
                    return Ok(None);
                };
                paint_one(&mut paint, &mut queue, &mut open, (g, *h), side);
            }
        }
        // The charter's point must be the fork point of its own base (as `commons fork` writes
        // it), since it becomes the fork's stored point: heads not excluded, not ancestors of
        // one another, exclusions all ancestors of heads. The walk goes on until every head of
        // `to` is taken, so a head below another is reached through its parents first.
        let to_heads: BTreeSet<RecordId> = to.heads.iter().copied().collect();
        if to.excluded.iter().any(|x| to_heads.contains(x)) {
            return Ok(None);
        }
        let mut untaken = to_heads.clone();
        let mut walked = 0usize;
        while open > 0 || !untaken.is_empty() {
            let Some((_, id)) = queue.pop() else { break };
            untaken.remove(&id);
            walked += 1;
            if walked > DIFF_BUDGET {
                return Ok(None);
            }
            let here = paint.get(&id).copied().unwrap_or(0);
            if here != FROM | TO {
                open -= 1;
            }
            let Some(p) = self.patch(&id)? else {
                return Ok(None);
            };
            for parent in p.parents {
                let Some(g) = self.generation(&parent)? else {
                    return Ok(None);
                };
                if here & TO != 0 && to_heads.contains(&parent) {
                    return Ok(None);
                }
                paint_one(&mut paint, &mut queue, &mut open, (g, parent), here);
            }
        }
        let ex_from: BTreeSet<&RecordId> = from.excluded.iter().collect();
        let ex_to: BTreeSet<&RecordId> = to.excluded.iter().collect();
        // An exclusion the walk did not reach lies below where the two sides met: it is an
        // ancestor of both head sets (every path to it from `from`'s heads crosses a patch
        // reached from both). Excluded on both sides, it is no difference; excluded on one side
        // only, it is one the walk did not see, and the fork is computed from scratch.
        if ex_from
            .iter()
            .any(|x| !paint.contains_key(*x) && !ex_to.contains(*x))
            || ex_to.iter().any(|x| {
                !ex_from.contains(*x) && paint.get(*x).is_none_or(|p| p & TO == 0)
                    || paint.get(*x).is_some_and(|p| p & TO == 0)
            })
        {
            return Ok(None);
        }
        let mut d = Diff::default();
        for (id, p) in &paint {
            let in_from = p & FROM != 0 && !ex_from.contains(id);
            let in_to = p & TO != 0 && !ex_to.contains(id);
            if in_from == in_to {
                continue;
            }
            let Some(g) = self.generation(id)? else {
                return Ok(None);
            };
            if in_from {
                d.unaccept.push((g, *id))
            } else {
                d.accept.push((g, *id))
            }
        }
        d.unaccept.sort();
        d.accept.sort();
        Ok(Some(d))
    }

    /// Drops the lineage's trees (releasing the nodes no one else holds) and its vote part.
    fn clear_lineage(&mut self, lineage: &LineageId) -> Result<(), StoreError> {
        self.accs.remove(lineage);
        let m = self.meta_mut(lineage)?.clone();
        for root in [m.files_root, m.log_root, m.base_root, m.acc] {
            self.nodes.release(&self.o, root)?;
        }
        let m = self.meta_mut(lineage)?;
        m.files_root = 0;
        m.log_root = 0;
        m.base_root = 0;
        m.acc = 0;
        for t in [T::Status, T::ByStatus, T::Heads, T::Excluded] {
            for (k, _) in self.o.scan_prefix(t, lineage.as_bytes())? {
                self.o.remove(t, k);
            }
        }
        Ok(())
    }

    /// Recomputes the stored state of `lineage` from scratch and rewrites it. For the rare
    /// events only: a charter arriving that cannot share, a family becoming known, a fork base
    /// completing.
    pub(crate) fn rebuild(&mut self, lineage: &LineageId) -> Result<(), StoreError> {
        let Some(rs) = self.load_set(lineage)? else {
            return Ok(());
        };
        let Some(state) = rs.state(lineage) else {
            return Ok(());
        };
        bump(&self.counters.rebuilds, 1);
        tracing::info!(target: "commons_store::state", %lineage, patches = state.statuses.len(), "lineage state recomputed from scratch");
        self.clear_lineage(lineage)?;
        for (id, s) in &state.statuses {
            if matches!(
                s,
                commons_core::state::PatchStatus::Pending
                    | commons_core::state::PatchStatus::Rejected
            ) {
                self.o.insert(
                    T::Status,
                    keys::pair(lineage.as_bytes(), id.as_bytes()),
                    vec![keys::status_byte(*s)],
                );
                self.o
                    .insert(T::ByStatus, keys::by_status_key(lineage, *s, id), vec![]);
            }
        }
        let log = state
            .applied
            .iter()
            .map(|(k, o)| (keys::log_key(k), vec![o.to_byte()]));
        let log_root = self.nodes.build(&self.o, log)?;
        let files = state
            .tree
            .files
            .iter()
            .map(|(p, b)| (p.as_bytes().to_vec(), b.as_bytes().to_vec()));
        let files_root = self.nodes.build(&self.o, files)?;
        let mut base_root = 0;
        if let Some(fork) = &state.charter.fork {
            match rs.fork_base(fork) {
                Some(base) => {
                    let mut keyed = Vec::with_capacity(base.len());
                    for id in base {
                        if let Some(g) = self.generation(&id)? {
                            keyed.push((keys::log_key(&(g, id)), Vec::new()));
                        }
                    }
                    keyed.sort();
                    base_root = self.nodes.build(&self.o, keyed)?;
                }
                None => {
                    for missing in missing_from_base(&rs, &fork.heads) {
                        self.o.insert(
                            T::BaseWaits,
                            keys::pair(missing.as_bytes(), lineage.as_bytes()),
                            vec![],
                        );
                    }
                }
            }
        }
        let accepted: BTreeSet<RecordId> = state.applied.iter().map(|(k, _)| k.1).collect();
        let point = fork_point(&accepted, |id| rs.patch(id));
        self.write_fork_point(lineage, &point)?;
        self.accs
            .insert(*lineage, Accumulator::of_tree(&state.tree.files));
        let counts = state.counts();
        let meta = self.meta_mut(lineage)?;
        meta.files_root = files_root;
        meta.log_root = log_root;
        meta.base_root = base_root;
        meta.base_complete = state.base_complete;
        meta.files = state.tree.files.len() as u64;
        for (i, s) in keys::STATUSES.iter().enumerate() {
            meta.counts[i] = counts.get(s).copied().unwrap_or(0) as u64;
        }
        Ok(())
    }

    // ----- the fork point -----

    /// The stored fork point of a lineage (sorted heads and exclusions).
    pub fn fork_point(&self, lineage: &LineageId) -> Result<ForkPoint, StoreError> {
        let ids = |t| -> Result<Vec<RecordId>, StoreError> {
            Ok(self
                .second_ids(t, lineage.as_bytes())?
                .into_iter()
                .map(RecordId)
                .collect())
        };
        Ok(ForkPoint {
            heads: ids(T::Heads)?,
            excluded: ids(T::Excluded)?,
        })
    }

    fn write_fork_point(
        &mut self,
        lineage: &LineageId,
        point: &ForkPoint,
    ) -> Result<(), StoreError> {
        for t in [T::Heads, T::Excluded] {
            for (k, _) in self.o.scan_prefix(t, lineage.as_bytes())? {
                self.o.remove(t, k);
            }
        }
        for (t, ids) in [(T::Heads, &point.heads), (T::Excluded, &point.excluded)] {
            for id in ids {
                self.o
                    .insert(t, keys::pair(lineage.as_bytes(), id.as_bytes()), vec![]);
            }
        }
        Ok(())
    }

    fn is_accepted(&mut self, lineage: &LineageId, id: &RecordId) -> Result<bool, StoreError> {
        let Some(g) = self.generation(id)? else {
            return Ok(false);
        };
        Ok(self.logged(lineage, &(g, *id))?.is_some())
    }

    /// `x` entered the accepted set of `lineage` (it is in the log now).
    pub(crate) fn fork_point_accepted(
        &mut self,
        lineage: &LineageId,
        x: &RecordId,
    ) -> Result<(), StoreError> {
        let key = keys::pair(lineage.as_bytes(), x.as_bytes());
        if self.o.contains(T::Excluded, &key)? {
            self.o.remove(T::Excluded, key);
            return Ok(());
        }
        self.o.insert(T::Heads, key, vec![]);
        let mut stack: Vec<RecordId> = self.patch(x)?.map(|p| p.parents).unwrap_or_default();
        let mut seen = BTreeSet::new();
        while let Some(q) = stack.pop() {
            if !seen.insert(q) {
                continue;
            }
            let key = keys::pair(lineage.as_bytes(), q.as_bytes());
            if self.is_accepted(lineage, &q)? {
                if self.o.contains(T::Heads, &key)? {
                    self.o.remove(T::Heads, key);
                }
                continue;
            }
            if self.o.contains(T::Excluded, &key)? {
                continue;
            }
            self.o.insert(T::Excluded, key, vec![]);
            if let Some(p) = self.patch(&q)? {
                stack.extend(p.parents);
            }
        }
        Ok(())
    }

    /// `x` left the accepted set of `lineage` (it is out of the log now).
    pub(crate) fn fork_point_unaccepted(
        &mut self,
        lineage: &LineageId,
        x: &RecordId,
    ) -> Result<(), StoreError> {
        let key = keys::pair(lineage.as_bytes(), x.as_bytes());
        if !self.o.contains(T::Heads, &key)? {
            // An accepted patch descends from x: x is one of its ancestors that is not accepted.
            self.o.insert(T::Excluded, key, vec![]);
            return Ok(());
        }
        let point = self.fork_point_from_log(lineage)?;
        self.write_fork_point(lineage, &point)
    }

    /// The fork point computed from the log and the ancestors of the accepted patches.
    fn fork_point_from_log(&mut self, lineage: &LineageId) -> Result<ForkPoint, StoreError> {
        let root = self.meta(lineage)?.map_or(0, |m| m.log_root);
        let mut accepted = BTreeSet::new();
        for (k, _) in self.nodes.scan(&self.o, root, b"", &|_| true, usize::MAX)? {
            let (_, id) =
                keys::parse_log_key(&k).ok_or_else(|| corrupt(T::Nodes, "bad log key"))?;
            accepted.insert(id);
        }
        let mut patches: BTreeMap<RecordId, Patch> = BTreeMap::new();
        let mut stack: Vec<RecordId> = accepted.iter().copied().collect();
        while let Some(id) = stack.pop() {
            if patches.contains_key(&id) {
                continue;
            }
            if let Some(p) = self.patch(&id)? {
                stack.extend(p.parents.iter().copied());
                patches.insert(id, p);
            }
        }
        Ok(fork_point(&accepted, |id| patches.get(id)))
    }
}

/// Reached from the diff's side `from` (1) or `to` (2), or both (3).
const FROM: u8 = 1;
const TO: u8 = 2;

/// Adds `side` to the paint of `key`'s patch, queueing it when first reached; `open` counts
/// the queued patches not yet reached from both sides.
fn paint_one(
    paint: &mut BTreeMap<RecordId, u8>,
    queue: &mut BinaryHeap<OrderKey>,
    open: &mut usize,
    key: OrderKey,
    side: u8,
) {
    let before = paint.get(&key.1).copied().unwrap_or(0);
    let after = before | side;
    if before == after {
        return;
    }
    if before == 0 {
        queue.push(key);
    } else if before != FROM | TO {
        *open -= 1;
    }
    if after != FROM | TO {
        *open += 1;
    }
    paint.insert(key.1, after);
}

/// The patches a fork base needs that are not in `rs`: the frontier of the walk from the heads.
fn missing_from_base(rs: &RecordSet, heads: &[RecordId]) -> BTreeSet<RecordId> {
    let mut missing = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut stack = heads.to_vec();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        match rs.patch(&id) {
            Some(p) => stack.extend(p.parents.iter().copied()),
            None => {
                missing.insert(id);
            }
        }
    }
    missing
}
