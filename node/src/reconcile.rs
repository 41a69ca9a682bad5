//! Set reconciliation in the daemon: the item set of a family (built from the store, cached),
//! the answer to a peer's `Reconcile` and `ListIds` requests, and the counters `node status`
//! shows.
//!
//! The responder is stateless: every round arrives with everything it needs, so answering is
//! one call of [`commons_core::reconcile::Reconciler::receive`] on the family's ids, and a page
//! of `ListIds` a binary search in them. Building the set reads the family's ids from the
//! store's index (no record decoded) and hashes every id once; the cache keeps the last few
//! sets, **per family**: a set stays valid until the node stores a record naming one of the
//! family's lineages ([`Reconciliation::touched`], called after each put), or for
//! [`ITEMS_MAX_AGE`] at most (which bounds how long a change the node did not see, such as a
//! re-index, can go unnoticed). So the work a peer's request causes is bounded by its answer,
//! whatever happens in other families, and a flood of requests for one family reads it once.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use commons_core::reconcile::{Config, Message, Reconciler, SortedItems};
use commons_core::{LineageId, Record, RecordId};
use commons_net::gossip::lineages_of;
use commons_net::{Reconciled, SyncResponse};
use commons_rpc::ReconcileStats;
use commons_store::{Store, StoreError};

/// Item sets kept. A node serves a handful of families at once; each set costs about 64 bytes
/// per id (the id and its prefix sum), so 8 sets of 100 000 ids stay near 50 MiB.
pub const ITEMS_CACHE: usize = 8;
/// Longest a cached item set is used.
pub const ITEMS_MAX_AGE: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Cached {
    family: LineageId,
    /// The family's lineages when the set was built: a record naming one of them changes it.
    lineages: BTreeSet<LineageId>,
    built: Instant,
    items: Arc<SortedItems>,
}

/// The cache of item sets and the counters.
#[derive(Debug, Default)]
pub struct Reconciliation {
    /// Most recently used first; at most [`ITEMS_CACHE`] entries.
    cache: Mutex<VecDeque<Cached>>,
    /// Bumped by every [`Reconciliation::touched`]: a set built across one is not cached.
    touches: AtomicU64,
    /// Held while a set is built.
    building: Mutex<()>,
    builds: AtomicU64,
    sessions: AtomicU64,
    rounds: AtomicU64,
    bytes: AtomicU64,
    missing: AtomicU64,
    served: AtomicU64,
    pages: AtomicU64,
}

impl Reconciliation {
    /// The record ids of `family` held in the store, as a reconciliation item set. Blocking
    /// (it reads the store): call it under `spawn_blocking`.
    pub fn items(&self, store: &Store, family: LineageId) -> Result<Arc<SortedItems>, StoreError> {
        if let Some(hit) = self.cached(family) {
            return Ok(hit);
        }
        // One build at a time: requests that missed together wait for it and then find it
        // cached, instead of each reading the family.
        let _building = self.building.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = self.cached(family) {
            return Ok(hit);
        }
        let touches = self.touches.load(Ordering::Acquire);
        let mut lineages: BTreeSet<LineageId> = store
            .lineage_families()?
            .into_iter()
            .filter(|(_, f)| *f == Some(family))
            .map(|(l, _)| l)
            .collect();
        lineages.insert(family);
        let items = Arc::new(SortedItems::new(store.family_ids(&family)?));
        self.builds.fetch_add(1, Ordering::Relaxed);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|c| c.family != family);
        // A put that landed while the set was read may be in it or not: not cached then.
        if self.touches.load(Ordering::Acquire) == touches {
            cache.push_front(Cached {
                family,
                lineages,
                built: Instant::now(),
                items: items.clone(),
            });
            cache.truncate(ITEMS_CACHE);
        }
        Ok(items)
    }

    /// The cached set of `family`, if it is fresh (moved to the front).
    fn cached(&self, family: LineageId) -> Option<Arc<SortedItems>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let pos = cache
            .iter()
            .position(|c| c.family == family && c.built.elapsed() < ITEMS_MAX_AGE)?;
        let hit = cache.remove(pos)?;
        let items = hit.items.clone();
        cache.push_front(hit);
        Some(items)
    }

    /// Records naming `lineages` were stored: the sets of their families are stale.
    pub fn touched(&self, lineages: &BTreeSet<LineageId>) {
        if lineages.is_empty() {
            return;
        }
        self.touches.fetch_add(1, Ordering::AcqRel);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|c| c.lineages.is_disjoint(lineages));
    }

    /// `records` were stored: their ids are added to the cached sets of the families they
    /// name (a fork charter joins its parent's family), a merge in memory instead of reading
    /// the family again from the store, where a build would hold up every other command.
    pub fn stored(&self, records: &[Record]) {
        if records.is_empty() {
            return;
        }
        self.touches.fetch_add(1, Ordering::AcqRel);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        for c in cache.iter_mut() {
            let mut add = Vec::new();
            // Charters first, parents before forks: a fork of a fork joins through its parent.
            let mut charters: Vec<&Record> = records
                .iter()
                .filter(|r| r.as_charter().is_some())
                .collect();
            let mut grew = true;
            while grew {
                grew = false;
                charters.retain(|r| {
                    let joins = lineages_of(r).iter().any(|l| c.lineages.contains(l));
                    if joins {
                        c.lineages.insert(LineageId::from(r.id()));
                        add.push(r.id());
                        grew = true;
                    }
                    !joins
                });
            }
            for r in records.iter().filter(|r| r.as_charter().is_none()) {
                if lineages_of(r).iter().any(|l| c.lineages.contains(l)) {
                    add.push(r.id());
                }
            }
            if !add.is_empty() {
                c.items = Arc::new(c.items.with(&add));
            }
        }
    }

    /// The store was re-indexed (records may have been set aside): every set is stale.
    pub fn touched_all(&self) {
        self.touches.fetch_add(1, Ordering::AcqRel);
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Answers `ListIds`: a page of the family's ids after `after`, from the cached set.
    /// Blocking: call it under `spawn_blocking`.
    pub fn page(
        &self,
        store: &Store,
        family: LineageId,
        after: Option<RecordId>,
        limit: u32,
    ) -> SyncResponse {
        self.pages.fetch_add(1, Ordering::Relaxed);
        let Ok(items) = self.items(store, family) else {
            return SyncResponse::NotFound;
        };
        let limit = limit.min(commons_net::wire::MAX_LIST_IDS) as usize;
        let (ids, more) = items.page(after, limit);
        SyncResponse::Ids { ids, more }
    }

    /// Answers one round of a peer's session (the wire codec has checked the message's caps
    /// and order). Blocking: call it under `spawn_blocking`.
    pub fn answer(&self, store: &Store, family: LineageId, message: &Message) -> SyncResponse {
        self.served.fetch_add(1, Ordering::Relaxed);
        let Ok(items) = self.items(store, family) else {
            return SyncResponse::NotFound;
        };
        let mut responder = Reconciler::new(Config::serve());
        match responder.receive(&*items, message) {
            Ok(reply) => SyncResponse::Reconcile(reply.unwrap_or_default()),
            Err(e) => {
                tracing::debug!(target: "commons_node::serve", %family, error = %e, "reconcile refused");
                SyncResponse::NotFound
            }
        }
    }

    /// Counts a finished session.
    pub fn record(&self, session: &Reconciled) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        self.rounds
            .fetch_add(u64::from(session.rounds), Ordering::Relaxed);
        self.bytes.fetch_add(
            session.bytes_sent + session.bytes_received,
            Ordering::Relaxed,
        );
        self.missing
            .fetch_add(session.need.len() as u64, Ordering::Relaxed);
    }

    /// The counters, for `node status`.
    pub fn report(&self) -> ReconcileStats {
        ReconcileStats {
            sessions: self.sessions.load(Ordering::Relaxed),
            rounds: self.rounds.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            missing: self.missing.load(Ordering::Relaxed),
            served: self.served.load(Ordering::Relaxed),
            pages: self.pages.load(Ordering::Relaxed),
            builds: self.builds.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commons_core::{Body, Patch, Record, SecretKey};

    #[test]
    fn requests_that_miss_together_build_the_set_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("store")).expect("open");
        let charter = crate::testing::charter(&SecretKey::from_seed([7; 32]));
        let family = LineageId::from(charter.id());
        store.put(vec![charter]).expect("put");
        let r = Reconciliation::default();
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| r.items(&store, family).expect("items"));
            }
        });
        assert_eq!(r.report().builds, 1);
    }

    /// A patch of `lineage` adding `path`.
    fn patch(key: &SecretKey, ts: u64, lineage: LineageId, path: &str) -> Record {
        Record::sign(
            key,
            ts,
            Body::Patch(Patch {
                lineage,
                parents: vec![],
                changes: vec![commons_core::Change {
                    path: path.into(),
                    before: None,
                    after: Some(commons_core::BlobHash::of(path.as_bytes())),
                }],
                message: "p".into(),
            }),
        )
        .expect("sign")
    }

    #[test]
    fn the_item_set_is_reused_until_a_record_of_its_family_is_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("store")).expect("open");
        let key = SecretKey::from_seed([5; 32]);
        let charter = crate::testing::charter(&key);
        let family = LineageId::from(charter.id());
        store.put(vec![charter]).expect("put");
        let r = Reconciliation::default();

        let first = r.items(&store, family).expect("items");
        let again = r.items(&store, family).expect("items");
        assert!(
            Arc::ptr_eq(&first, &again),
            "no put in between: the cached set"
        );

        let patch = patch(&key, 2, family, "a");
        // A record of another family changes nothing here.
        let other = crate::testing::charter(&SecretKey::from_seed([6; 32]));
        store.put(vec![other.clone()]).expect("put");
        r.touched(&[LineageId::from(other.id())].into());
        let still = r.items(&store, family).expect("items");
        assert!(
            Arc::ptr_eq(&first, &still),
            "another family's put: still cached"
        );
        assert_eq!(r.report().builds, 1);

        store.put(vec![patch]).expect("put");
        r.touched(&[family].into());
        let after = r.items(&store, family).expect("items");
        assert!(
            !Arc::ptr_eq(&first, &after),
            "a put in the family makes the set stale"
        );
        assert_eq!(r.report().builds, 2);
        assert_eq!(
            after.len(),
            first.len() + 1,
            "the new record is in the new set"
        );
    }

    #[test]
    fn stored_records_are_merged_into_the_cached_set_without_a_rebuild() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("store")).expect("open");
        let key = SecretKey::from_seed([5; 32]);
        let charter = crate::testing::charter(&key);
        let family = LineageId::from(charter.id());
        store.put(vec![charter]).expect("put");
        let r = Reconciliation::default();
        r.items(&store, family).expect("items");
        let fork = Record::sign(
            &key,
            3,
            Body::Charter(commons_core::Charter {
                name: "fork".into(),
                summary: String::new(),
                license: "MIT".into(),
                maintainers: vec![key.public()],
                threshold: 1,
                fork: Some(commons_core::ForkBase {
                    parent: family,
                    heads: vec![],
                    excluded: vec![],
                }),
            }),
        )
        .expect("sign");
        let on_fork = patch(&key, 4, LineageId::from(fork.id()), "b");
        let other = crate::testing::charter(&SecretKey::from_seed([6; 32]));
        // In one batch, the patch on the fork before the fork's charter.
        let batch = vec![on_fork, other, fork];
        store.put(batch.clone()).expect("put");
        r.stored(&batch);
        let merged = r.items(&store, family).expect("items");
        assert_eq!(r.report().builds, 1, "no rebuild");
        let rebuilt = SortedItems::new(store.family_ids(&family).expect("ids"));
        assert_eq!(*merged, rebuilt, "the same set as a rebuild");
    }
}
