//! Ingesting records: the indexes, and the lineage states kept up to date incrementally.
//!
//! The stored state of every lineage L mirrors `RecordSet::state(L)` exactly (statuses, log,
//! tree, root). After each record of a batch is ingested the mirror holds again, by these rules:
//!
//! - a **validation** of patch p in L can only change p's status in L: [`Ctx::refresh`] recounts
//!   p's votes and calls `incremental::accept` / `unaccept` if p enters or leaves the accepted set;
//! - a **patch** p can change its own status in the lineages that list it (its own lineage and
//!   those with validations of it), and it can complete waiting descendants (found through the
//!   `children` index), which are refreshed in the lineages that voted on them;
//! - the rare cases are recomputed from scratch for one lineage ([`Ctx::rebuild`]): a charter
//!   arriving (its lineage, and forks whose family becomes known through it), and a patch that a
//!   fork base was waiting for (`base_waits`).
//!
//! Everything goes through an [`Overlay`], so a batch commits atomically or not at all.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use commons_core::incremental;
use commons_core::state::{OrderKey, PatchStatus, RecordSet, Vote, VoteResult, count_votes};
use commons_core::tree::{Accumulator, Outcome};
use commons_core::{Charter, Kind, LineageId, Patch, Record, RecordId, Validation};

use crate::StoreError;
use crate::keys::{self, LineageMeta, T, VoteValue};
use crate::lineage_backend::Backend;
use crate::overlay::Overlay;
use crate::ptree::Nodes;

/// Work counters, for tests and benchmarks: they show how much history an update touched.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records read from sled and decoded.
    pub records_decoded: AtomicU64,
    /// Patches the incremental engine asked the backend for.
    pub patch_loads: AtomicU64,
    /// Log entries read by the incremental engine.
    pub log_entries_read: AtomicU64,
    /// Lineage states recomputed from scratch.
    pub rebuilds: AtomicU64,
    /// Votes (entries of the `validations` index) read to compute statuses.
    pub votes_read: AtomicU64,
    /// Records in the store (committed). Maintained by the storage thread.
    pub stored_records: AtomicU64,
    /// Stored records found not to decode and set aside since the store was opened.
    pub set_aside: AtomicU64,
    /// Bumped each time the set of stored records changes (a put that stored something, a
    /// re-index): what caches of record sets are keyed by.
    pub epoch: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// An index entry that does not have the layout this build writes.
pub fn corrupt(tree: T, reason: impl Into<String>) -> StoreError {
    StoreError::CorruptIndex {
        tree: tree.name(),
        reason: reason.into(),
    }
}

/// Reads and writes through an overlay, with caches of decoded records and summaries.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The pending writes.
    pub o: Overlay<'a>,
    pub(crate) counters: &'a Counters,
    /// The batch's working set of shared-tree nodes (written into `o` by [`Ctx::finish`]).
    pub(crate) nodes: Nodes,
    pub(crate) metas: BTreeMap<LineageId, LineageMeta>,
    pub(crate) dirty_metas: BTreeSet<LineageId>,
    pub(crate) accs: BTreeMap<LineageId, Accumulator>,
    pub(crate) records: HashMap<RecordId, Record>,
    /// Stored records this context found that do not decode (id, reason): the caller then
    /// re-indexes the store without them (`repair.rs`).
    damaged: RefCell<Vec<(RecordId, String)>>,
}

impl<'a> Ctx<'a> {
    /// A context over `o`.
    pub fn new(o: Overlay<'a>, counters: &'a Counters) -> Self {
        Self {
            o,
            counters,
            nodes: Nodes::new(),
            metas: BTreeMap::new(),
            dirty_metas: BTreeSet::new(),
            accs: BTreeMap::new(),
            records: HashMap::new(),
            damaged: RefCell::new(Vec::new()),
        }
    }

    /// The storage thread's work counters.
    pub fn counters(&self) -> &'a Counters {
        self.counters
    }

    /// The stored records found not to decode since this context was made.
    pub fn damaged(&self) -> Vec<(RecordId, String)> {
        self.damaged.borrow().clone()
    }

    /// Decodes the bytes stored under `id` (without the signature check, see [`Ctx::record`]) and
    /// checks that they are the record of that id. Bytes that fail are noted as damaged.
    pub(crate) fn decode_at(&self, id: &RecordId, bytes: &[u8]) -> Result<Record, StoreError> {
        bump(&self.counters.records_decoded, 1);
        let reason = match Record::decode_stored(bytes) {
            Ok(r) if r.id() == *id => return Ok(r),
            Ok(r) => format!("the bytes stored under it have id {}", r.id()),
            Err(e) => e.to_string(),
        };
        tracing::debug!(target: "commons_store", %id, %reason, "a stored record does not decode");
        self.damaged.borrow_mut().push((*id, reason.clone()));
        Err(StoreError::CorruptRecord { id: *id, reason })
    }

    // ----- reading -----

    /// A stored record, decoded. Its signature was verified before it was stored, so it is not
    /// checked again (`Record::decode_stored`); everything else is, and the id must match the
    /// key. Stored bytes that no longer decode are an error, and are noted as damaged, so that
    /// the storage thread sets them aside and rebuilds the indexes without them.
    pub fn record(&mut self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        if let Some(r) = self.records.get(id) {
            return Ok(Some(r.clone()));
        }
        let Some(bytes) = self.o.get(T::Records, id.as_bytes())? else {
            return Ok(None);
        };
        let record = self.decode_at(id, &bytes)?;
        self.records.insert(*id, record.clone());
        Ok(Some(record))
    }

    /// A stored patch.
    pub fn patch(&mut self, id: &RecordId) -> Result<Option<Patch>, StoreError> {
        Ok(self.record(id)?.and_then(|r| r.as_patch().cloned()))
    }

    /// A stored charter.
    pub fn charter(&mut self, lineage: &LineageId) -> Result<Option<Charter>, StoreError> {
        let id = RecordId::from(*lineage);
        Ok(self.record(&id)?.and_then(|r| r.as_charter().cloned()))
    }

    /// The stored summary of a lineage.
    pub fn meta(&mut self, lineage: &LineageId) -> Result<Option<LineageMeta>, StoreError> {
        if let Some(m) = self.metas.get(lineage) {
            return Ok(Some(m.clone()));
        }
        let Some(v) = self.o.get(T::Lineages, lineage.as_bytes())? else {
            return Ok(None);
        };
        let meta = LineageMeta::decode(&v)
            .ok_or_else(|| corrupt(T::Lineages, format!("summary of {lineage}")))?;
        self.metas.insert(*lineage, meta.clone());
        Ok(Some(meta))
    }

    pub(crate) fn meta_mut(&mut self, lineage: &LineageId) -> Result<&mut LineageMeta, StoreError> {
        if self.meta(lineage)?.is_none() {
            return Err(corrupt(
                T::Lineages,
                format!("no summary for lineage {lineage}"),
            ));
        }
        self.dirty_metas.insert(*lineage);
        self.metas
            .get_mut(lineage)
            .ok_or_else(|| corrupt(T::Lineages, "summary vanished"))
    }

    /// The generation of a complete patch.
    pub fn generation(&self, id: &RecordId) -> Result<Option<u64>, StoreError> {
        match self.o.get(T::Generations, id.as_bytes())? {
            None => Ok(None),
            Some(v) => keys::u64_value(&v)
                .map(Some)
                .ok_or_else(|| corrupt(T::Generations, format!("generation of {id}"))),
        }
    }

    /// Votes cast on `patch` in `lineage` (by its maintainers, and by anyone before the
    /// lineage's charter was here).
    pub fn votes(&self, patch: &RecordId, lineage: &LineageId) -> Result<Vec<Vote>, StoreError> {
        let prefix = keys::pair(patch.as_bytes(), lineage.as_bytes());
        let entries = self.o.scan_prefix(T::Validations, &prefix)?;
        bump(&self.counters.votes_read, entries.len() as u64);
        entries
            .into_iter()
            .map(|(k, v)| {
                let id = keys::id_at(&k, 64);
                let value = VoteValue::decode(&v);
                match (id, value) {
                    (Some(id), Some(v)) => Ok(Vote {
                        author: v.author,
                        timestamp: v.timestamp,
                        id: RecordId(id),
                        verdict: v.verdict,
                    }),
                    _ => Err(corrupt(T::Validations, format!("a vote on {patch}"))),
                }
            })
            .collect()
    }

    /// The lineages in which `patch` has validations.
    pub fn vote_lineages(&self, patch: &RecordId) -> Result<BTreeSet<LineageId>, StoreError> {
        let mut out = BTreeSet::new();
        for (k, _) in self.o.scan_prefix(T::Validations, patch.as_bytes())? {
            let l = keys::id_at(&k, 32).ok_or_else(|| corrupt(T::Validations, "short key"))?;
            out.insert(LineageId(l));
        }
        Ok(out)
    }

    /// Ids under a 32-byte prefix whose key is `prefix ‖ id` (the second id of a pair key).
    pub fn second_ids(&self, t: T, prefix: &[u8; 32]) -> Result<Vec<[u8; 32]>, StoreError> {
        self.o
            .scan_prefix(t, prefix)?
            .into_iter()
            .map(|(k, _)| keys::id_at(&k, 32).ok_or_else(|| corrupt(t, "short key")))
            .collect()
    }

    /// The status of a patch in a lineage: its row in the vote part (pending, rejected), else
    /// its outcome in the lineage's log (accepted, conflicted).
    pub fn status(
        &mut self,
        lineage: &LineageId,
        patch: &RecordId,
    ) -> Result<Option<PatchStatus>, StoreError> {
        if let Some(s) = self.flat_status(lineage, patch)? {
            return Ok(Some(s));
        }
        let Some(g) = self.generation(patch)? else {
            return Ok(None);
        };
        Ok(self.logged(lineage, &(g, *patch))?.map(status_of))
    }

    /// The vote-part status of a patch (pending or rejected), if it has one.
    fn flat_status(
        &self,
        lineage: &LineageId,
        patch: &RecordId,
    ) -> Result<Option<PatchStatus>, StoreError> {
        let key = keys::pair(lineage.as_bytes(), patch.as_bytes());
        match self.o.get(T::Status, &key)? {
            None => Ok(None),
            Some(v) => match v.as_slice() {
                [b @ (0 | 2)] => keys::status_from_byte(*b)
                    .map(Some)
                    .ok_or_else(|| corrupt(T::Status, format!("status byte {b}"))),
                _ => Err(corrupt(T::Status, "not a pending or rejected status")),
            },
        }
    }

    /// The outcome of `key` in the lineage's log, if it is there.
    pub(crate) fn logged(
        &mut self,
        lineage: &LineageId,
        key: &OrderKey,
    ) -> Result<Option<Outcome>, StoreError> {
        let Some(meta) = self.meta(lineage)? else {
            return Ok(None);
        };
        match self
            .nodes
            .get(&self.o, meta.log_root, &keys::log_key(key))?
        {
            None => Ok(None),
            Some(v) => keys::outcome_value(&v)
                .map(Some)
                .ok_or_else(|| corrupt(T::Nodes, "bad outcome in a log")),
        }
    }

    /// Whether `key` is in the lineage's fork base.
    fn in_base(&mut self, lineage: &LineageId, key: &OrderKey) -> Result<bool, StoreError> {
        let Some(meta) = self.meta(lineage)? else {
            return Ok(false);
        };
        Ok(self
            .nodes
            .get(&self.o, meta.base_root, &keys::log_key(key))?
            .is_some())
    }

    // ----- loading a record set for the from-scratch computation -----

    /// The records `RecordSet::state(lineage)` depends on: the lineage's chain of charters, every
    /// record of its family's lineages (only its chain if the family is not known), and every
    /// present ancestor of those patches and of its fork heads. `None` without a charter.
    pub fn load_set(&mut self, lineage: &LineageId) -> Result<Option<RecordSet>, StoreError> {
        let Some(charter) = self.charter(lineage)? else {
            return Ok(None);
        };
        let mut rs = RecordSet::new();
        let mut lineages = BTreeSet::new();
        // Walk up the chain of charters; a chain cannot be a cycle (a charter names its parent's
        // id), and it is bounded by the number of stored lineages anyway.
        let mut current = Some(*lineage);
        while let Some(l) = current {
            if !lineages.insert(l) {
                break;
            }
            current = self.charter(&l)?.and_then(|c| c.fork.map(|f| f.parent));
        }
        if let Some(family) = self.meta(lineage)?.and_then(|m| m.family) {
            for l in self.second_ids(T::Family, family.as_bytes())? {
                lineages.insert(LineageId(l));
            }
        }
        let mut stack: Vec<RecordId> = charter.fork.map(|f| f.heads).unwrap_or_default();
        for l in &lineages {
            for id in self.second_ids(T::LineageRecords, l.as_bytes())? {
                if let Some(r) = self.record(&RecordId(id))? {
                    if let Some(p) = r.as_patch() {
                        stack.extend(p.parents.iter().copied());
                    }
                    rs.insert(&r);
                }
            }
        }
        // Ancestors, iteratively (no recursion over stored data).
        let mut seen = BTreeSet::new();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) || rs.patch(&id).is_some() {
                continue;
            }
            if let Some(r) = self.record(&id)?
                && let Some(p) = r.as_patch()
            {
                stack.extend(p.parents.iter().copied());
                rs.insert(&r);
            }
        }
        Ok(Some(rs))
    }

    // ----- ingesting -----

    /// Ingests records not stored yet (the caller filtered duplicates), in the order charters,
    /// patches, validations. Returns their ids.
    pub fn ingest(&mut self, records: &[Record]) -> Result<Vec<RecordId>, StoreError> {
        let mut fresh: Vec<&Record> = Vec::with_capacity(records.len());
        let mut seen = BTreeSet::new();
        for r in records {
            if seen.insert(r.id()) && !self.o.contains(T::Records, r.id().as_bytes())? {
                fresh.push(r);
            }
        }
        fresh.sort_by_key(|r| r.kind());
        let ids = fresh.iter().map(|r| r.id()).collect();
        let first_validation = fresh
            .iter()
            .position(|r| r.kind() == Kind::Validation)
            .unwrap_or(fresh.len());
        let validations = fresh.split_off(first_validation);
        for r in fresh {
            self.ingest_one(r)?;
        }
        // Validations in history order (the generation of the patch they judge): accepting a
        // patch before later ones then appends to the log instead of undoing and replaying
        // what follows it. A catch-up delivers records in id order, which is random.
        // Within a generation, by the patch's id: the log's own order, so that thousands of
        // concurrent patches accepted in one batch each append too.
        let mut keyed = Vec::with_capacity(validations.len());
        for r in validations {
            let (generation, patch) = match r.body() {
                commons_core::Body::Validation(v) => (self.generation(&v.patch)?, v.patch),
                _ => (None, RecordId([0; 32])),
            };
            keyed.push(((generation.unwrap_or(u64::MAX), patch), r));
        }
        keyed.sort_by_key(|(k, _)| *k);
        for (_, r) in keyed {
            self.ingest_one(r)?;
        }
        Ok(ids)
    }

    fn ingest_one(&mut self, r: &Record) -> Result<(), StoreError> {
        self.o
            .insert(T::Records, r.id().as_bytes().to_vec(), r.bytes().to_vec());
        self.records.insert(r.id(), r.clone());
        match r.body() {
            commons_core::Body::Charter(c) => self.add_charter(r, c)?,
            commons_core::Body::Patch(p) => self.add_patch(r.id(), p)?,
            commons_core::Body::Validation(v) => self.add_validation(r, v)?,
        }
        Ok(())
    }

    fn index_lineage(
        &mut self,
        lineage: &LineageId,
        id: &RecordId,
        kind: Kind,
        parents: &[RecordId],
    ) {
        self.o.insert(
            T::LineageRecords,
            keys::pair(lineage.as_bytes(), id.as_bytes()),
            keys::lineage_record_value(kind, parents),
        );
    }

    fn add_charter(&mut self, record: &Record, charter: &Charter) -> Result<(), StoreError> {
        let lineage = LineageId::from(record.id());
        self.index_lineage(&lineage, &record.id(), Kind::Charter, &[]);
        let mut meta = LineageMeta::new(record.timestamp());
        meta.family = match &charter.fork {
            None => Some(lineage),
            Some(f) => {
                self.o.insert(
                    T::Forks,
                    keys::pair(f.parent.as_bytes(), lineage.as_bytes()),
                    vec![],
                );
                self.meta(&f.parent)?.and_then(|m| m.family)
            }
        };
        self.metas.insert(lineage, meta.clone());
        self.dirty_metas.insert(lineage);
        tracing::debug!(target: "commons_store::state", %lineage, family = ?meta.family, "charter stored");

        // Forks that were waiting for this charter join the family with it.
        let mut joined = vec![lineage];
        if let Some(family) = meta.family {
            let mut i = 0;
            while i < joined.len() {
                let l = joined[i];
                i += 1;
                self.o.insert(
                    T::Family,
                    keys::pair(family.as_bytes(), l.as_bytes()),
                    vec![],
                );
                self.meta_mut(&l)?.family = Some(family);
                for child in self.second_ids(T::Forks, l.as_bytes())? {
                    let child = LineageId(child);
                    if self.meta(&child)?.is_some_and(|m| m.family.is_none()) {
                        joined.push(child);
                    }
                }
            }
        }
        for l in &joined {
            self.start_lineage(l)?;
        }
        if meta.family.is_some() {
            // Patches proposed to the joined lineages now count in the family: refresh them where
            // other lineages voted on them.
            let joined_set: BTreeSet<LineageId> = joined.iter().copied().collect();
            for l in &joined {
                for (k, v) in self.o.scan_prefix(T::LineageRecords, l.as_bytes())? {
                    if keys::lineage_record_kind(&v) != Some(Kind::Patch as u8) {
                        continue;
                    }
                    let p = RecordId(
                        keys::id_at(&k, 32)
                            .ok_or_else(|| corrupt(T::LineageRecords, "short key"))?,
                    );
                    for voter in self.vote_lineages(&p)? {
                        if !joined_set.contains(&voter) {
                            self.refresh(&voter, &p)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn add_patch(&mut self, id: RecordId, patch: &Patch) -> Result<(), StoreError> {
        self.index_lineage(&patch.lineage, &id, Kind::Patch, &patch.parents);
        for parent in &patch.parents {
            self.o.insert(
                T::Children,
                keys::pair(parent.as_bytes(), id.as_bytes()),
                vec![],
            );
        }
        let completed = self.complete_from(id, patch)?;

        // Forks whose base waited for this patch: recompute them from scratch.
        for fork in self.second_ids(T::BaseWaits, id.as_bytes())? {
            self.o
                .remove(T::BaseWaits, keys::pair(id.as_bytes(), &fork));
            tracing::debug!(target: "commons_store::state", fork = %LineageId(fork), patch = %id, "fork base patch arrived");
            self.rebuild(&LineageId(fork))?;
        }

        self.refresh_everywhere(&id, patch.lineage)?;
        for q in completed.into_iter().filter(|q| *q != id) {
            if let Some(qp) = self.patch(&q)? {
                self.refresh_everywhere(&q, qp.lineage)?;
            }
        }
        Ok(())
    }

    /// Refreshes `patch` in its own lineage and in every lineage that voted on it.
    fn refresh_everywhere(&mut self, patch: &RecordId, own: LineageId) -> Result<(), StoreError> {
        let mut lineages = self.vote_lineages(patch)?;
        lineages.insert(own);
        for l in lineages {
            self.refresh(&l, patch)?;
        }
        Ok(())
    }

    /// Records the generation of `id` if all its parents are complete, then of every descendant
    /// that this completes. Returns the patches that became complete.
    fn complete_from(&mut self, id: RecordId, patch: &Patch) -> Result<Vec<RecordId>, StoreError> {
        let Some(generation) = self.generation_from_parents(patch)? else {
            return Ok(vec![]);
        };
        self.o.insert(
            T::Generations,
            id.as_bytes().to_vec(),
            generation.to_be_bytes().to_vec(),
        );
        let mut done = vec![id];
        let mut i = 0;
        while i < done.len() {
            let x = done[i];
            i += 1;
            for child in self.second_ids(T::Children, x.as_bytes())? {
                let child = RecordId(child);
                if self.generation(&child)?.is_some() {
                    continue;
                }
                let Some(cp) = self.patch(&child)? else {
                    continue;
                };
                if let Some(g) = self.generation_from_parents(&cp)? {
                    self.o.insert(
                        T::Generations,
                        child.as_bytes().to_vec(),
                        g.to_be_bytes().to_vec(),
                    );
                    done.push(child);
                }
            }
        }
        if done.len() > 1 {
            tracing::debug!(target: "commons_store::state", patch = %id, completed = done.len() - 1, "missing ancestor arrived");
        }
        Ok(done)
    }

    fn generation_from_parents(&self, patch: &Patch) -> Result<Option<u64>, StoreError> {
        let mut generation = 0u64;
        for parent in &patch.parents {
            match self.generation(parent)? {
                Some(g) => generation = generation.max(g.saturating_add(1)),
                None => return Ok(None),
            }
        }
        Ok(Some(generation))
    }

    fn add_validation(&mut self, record: &Record, v: &Validation) -> Result<(), StoreError> {
        self.index_lineage(&v.lineage, &record.id(), Kind::Validation, &[]);
        let value = VoteValue {
            author: record.author(),
            timestamp: record.timestamp(),
            verdict: v.verdict,
        };
        let key = keys::validation_key(&v.patch, &v.lineage, &record.id());
        // Anyone may validate, but only the lineage's maintainers count: the others' opinions
        // are kept for display and touch no status (so a flood of them costs O(1) each).
        if let Some(charter) = self.charter(&v.lineage)?
            && charter.maintainers.binary_search(&record.author()).is_err()
        {
            self.o.insert(T::Opinions, key, value.encode());
            return Ok(());
        }
        self.o.insert(T::Validations, key, value.encode());
        self.refresh(&v.lineage, &v.patch)
    }

    fn family_of(&mut self, lineage: &LineageId) -> Result<Option<LineageId>, StoreError> {
        Ok(self.meta(lineage)?.and_then(|m| m.family))
    }

    /// Brings the status of `patch` in `lineage` (and the lineage's accepted set, tree and log)
    /// in line with the records now present. Idempotent; does nothing if either is missing.
    pub fn refresh(&mut self, lineage: &LineageId, patch: &RecordId) -> Result<(), StoreError> {
        let Some(meta) = self.meta(lineage)? else {
            return Ok(());
        };
        let (Some(charter), Some(p)) = (self.charter(lineage)?, self.patch(patch)?) else {
            return Ok(());
        };
        let key: Option<OrderKey> = self.generation(patch)?.map(|g| (g, *patch));
        let in_base = match &key {
            Some(k) => self.in_base(lineage, k)?,
            None => false,
        };
        let votes = self.votes(patch, lineage)?;
        let in_family = meta.family.is_some() && self.family_of(&p.lineage)? == meta.family;
        let counted = if in_base {
            Some(VoteResult::Accepted)
        } else if in_family {
            Some(count_votes(&charter, &votes))
        } else {
            None
        };
        let listed = in_base
            || p.lineage == *lineage
            || votes
                .iter()
                .any(|v| charter.maintainers.binary_search(&v.author).is_ok());
        let counted = counted.filter(|_| listed);

        let want = counted == Some(VoteResult::Accepted) && key.is_some();
        let logged = match &key {
            Some(k) => self.logged(lineage, k)?,
            None => None,
        };
        let changed = match (want, &logged, key) {
            (true, None, Some(k)) => {
                let changed = incremental::accept(&mut self.backend(*lineage)?, k)?;
                self.fork_point_accepted(lineage, &k.1)?;
                changed
            }
            (false, Some(_), Some(k)) => {
                let changed = incremental::unaccept(&mut self.backend(*lineage)?, k)?;
                self.fork_point_unaccepted(lineage, &k.1)?;
                changed
            }
            _ => vec![],
        };
        for (id, outcome) in &changed {
            self.set_status(lineage, id, Some(status_of(*outcome)))?;
        }
        let status = match counted {
            None => None,
            Some(VoteResult::Open) => Some(PatchStatus::Pending),
            Some(VoteResult::Rejected) => Some(PatchStatus::Rejected),
            Some(VoteResult::Accepted) if !want => Some(PatchStatus::Pending),
            Some(VoteResult::Accepted) => {
                let k = key.ok_or_else(|| corrupt(T::Generations, "lost a generation"))?;
                let o = self
                    .logged(lineage, &k)?
                    .ok_or_else(|| corrupt(T::Nodes, "accepted patch missing from the log"))?;
                Some(status_of(o))
            }
        };
        self.set_status(lineage, patch, status)
    }

    fn backend(&mut self, lineage: LineageId) -> Result<Backend<'_, 'a>, StoreError> {
        Backend::new(self, lineage)
    }

    fn set_status(
        &mut self,
        lineage: &LineageId,
        patch: &RecordId,
        new: Option<PatchStatus>,
    ) -> Result<(), StoreError> {
        // Only the vote part is kept here: an accepted or conflicted patch is its log entry,
        // counted by the log's backend (`lineage_backend.rs`).
        let new = new.filter(|s| matches!(s, PatchStatus::Pending | PatchStatus::Rejected));
        let old = self.flat_status(lineage, patch)?;
        if old == new {
            return Ok(());
        }
        let key = keys::pair(lineage.as_bytes(), patch.as_bytes());
        let meta = self.meta_mut(lineage)?;
        if let Some(old) = old {
            let c = &mut meta.counts[usize::from(keys::status_byte(old))];
            *c = c.saturating_sub(1);
        }
        if let Some(new) = new {
            meta.counts[usize::from(keys::status_byte(new))] += 1;
        }
        // A status first set in this batch is not on disk, nor its `by_status` entry: replacing
        // it leaves nothing to delete (a patch often goes pending → accepted in one batch).
        let fresh = self.o.known_absent_on_disk(T::Status, &key);
        if let Some(old) = old {
            let old_key = keys::by_status_key(lineage, old, patch);
            if fresh {
                self.o.forget(T::ByStatus, &old_key);
            } else {
                self.o.remove(T::ByStatus, old_key);
            }
        }
        match new {
            Some(new) => {
                self.o.insert(T::Status, key, vec![keys::status_byte(new)]);
                self.o.insert(
                    T::ByStatus,
                    keys::by_status_key(lineage, new, patch),
                    vec![],
                );
            }
            None if fresh => self.o.forget(T::Status, &key),
            None => self.o.remove(T::Status, key),
        }
        Ok(())
    }

    /// Writes the cached accumulator of `lineage` into its blob node and its root into the
    /// summary.
    pub(crate) fn flush_acc(&mut self, lineage: &LineageId) -> Result<(), StoreError> {
        let Some(acc) = self.accs.remove(lineage) else {
            return Ok(());
        };
        self.meta_mut(lineage)?;
        let Ctx {
            nodes, o, metas, ..
        } = self;
        if let Some(m) = metas.get_mut(lineage) {
            nodes.set_blob(o, &mut m.acc, acc.to_bytes())?;
            m.root = acc.root();
        }
        Ok(())
    }

    /// Writes the cached accumulators, the shared-tree nodes and the summaries into the
    /// overlay and returns it.
    pub fn finish(mut self) -> Result<Overlay<'a>, StoreError> {
        let lineages: Vec<LineageId> = self.accs.keys().copied().collect();
        for lineage in &lineages {
            self.flush_acc(lineage)?;
        }
        let writes = std::mem::take(&mut self.nodes).finish();
        for (id, bytes) in writes.nodes {
            let key = id.to_be_bytes().to_vec();
            match bytes {
                Some(b) => self.o.insert(T::Nodes, key, b),
                None => self.o.remove(T::Nodes, key),
            }
        }
        for (id, rc) in writes.rcs {
            let key = id.to_be_bytes().to_vec();
            match rc {
                Some(rc) => self.o.insert(T::NodeRc, key, rc.to_be_bytes().to_vec()),
                None => self.o.remove(T::NodeRc, key),
            }
        }
        if let Some(next) = writes.next_id {
            self.o.insert(
                T::Meta,
                keys::META_NEXT_NODE_KEY.to_vec(),
                next.to_be_bytes().to_vec(),
            );
        }
        for lineage in &self.dirty_metas {
            if let Some(m) = self.metas.get(lineage) {
                self.o
                    .insert(T::Lineages, lineage.as_bytes().to_vec(), m.encode());
            }
        }
        Ok(self.o)
    }

    /// The accumulator of a lineage (cached for the batch).
    pub(crate) fn accumulator(
        &mut self,
        lineage: &LineageId,
    ) -> Result<&mut Accumulator, StoreError> {
        if !self.accs.contains_key(lineage) {
            let id = self.meta(lineage)?.map_or(0, |m| m.acc);
            let acc = match self.nodes.blob(&self.o, id)? {
                None => Accumulator::default(),
                Some(v) => Accumulator::from_bytes(&v)
                    .ok_or_else(|| corrupt(T::Nodes, format!("accumulator of {lineage}")))?,
            };
            self.accs.insert(*lineage, acc);
        }
        self.accs
            .get_mut(lineage)
            .ok_or_else(|| corrupt(T::Nodes, "accumulator vanished"))
    }
}

pub(crate) fn status_of(o: Outcome) -> PatchStatus {
    match o {
        Outcome::Applied => PatchStatus::Accepted,
        Outcome::Conflicted => PatchStatus::Conflicted,
    }
}
