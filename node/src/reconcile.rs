//! Set reconciliation in the daemon: the item set of a family (built from the store, cached),
//! the answer to a peer's `Reconcile` request, and the counters `node status` shows.
//!
//! The responder is stateless: every round arrives with everything it needs, so answering is
//! one call of [`commons_core::reconcile::Reconciler::receive`] on the family's ids. Building
//! the set reads the family's ids from the store's index (no record decoded) and hashes every id
//! once; the cache keeps the last few sets, keyed by family and the store's epoch
//! (`Store::epoch`) when the set was built. The epoch moves whenever the set of stored records
//! does (a committed put, a re-index), so while it has not moved no family has changed, and a
//! round finds its set without reading the family again (a session of a large family costs one
//! read, not one per round).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use commons_core::LineageId;
use commons_core::reconcile::{Config, Message, Reconciler, SortedItems};
use commons_net::{Reconciled, SyncResponse};
use commons_rpc::ReconcileStats;
use commons_store::{Store, StoreError};

/// Item sets kept. A node serves a handful of families at once; each set costs about 64 bytes
/// per id (the id and its prefix sum), so 8 sets of 100 000 ids stay near 50 MiB.
pub const ITEMS_CACHE: usize = 8;

/// The cache of item sets and the counters.
#[derive(Debug, Default)]
pub struct Reconciliation {
    /// Most recently used first; at most [`ITEMS_CACHE`] entries.
    cache: Mutex<VecDeque<(LineageId, u64, Arc<SortedItems>)>>,
    sessions: AtomicU64,
    rounds: AtomicU64,
    bytes: AtomicU64,
    missing: AtomicU64,
    served: AtomicU64,
}

impl Reconciliation {
    /// The record ids of `family` held in the store, as a reconciliation item set. Blocking
    /// (it reads the store): call it under `spawn_blocking`.
    pub fn items(&self, store: &Store, family: LineageId) -> Result<Arc<SortedItems>, StoreError> {
        // Read before the family: a put committed meanwhile can only make the set newer than
        // its key says, never older.
        let count = store.epoch();
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(pos) = cache
                .iter()
                .position(|(f, n, _)| *f == family && *n == count)
                && let Some(hit) = cache.remove(pos)
            {
                let items = hit.2.clone();
                cache.push_front(hit);
                return Ok(items);
            }
        }
        let items = Arc::new(SortedItems::new(store.family_ids(&family)?));
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|(f, _, _)| *f != family);
        cache.push_front((family, count, items.clone()));
        cache.truncate(ITEMS_CACHE);
        Ok(items)
    }

    /// Answers one round of a peer's session (the wire codec has checked the message's caps
    /// and order). Blocking: call it under `spawn_blocking`.
    pub fn answer(&self, store: &Store, family: LineageId, message: &Message) -> SyncResponse {
        self.served.fetch_add(1, Ordering::Relaxed);
        let Ok(items) = self.items(store, family) else {
            return SyncResponse::NotFound;
        };
        let mut responder = Reconciler::new(Config::responder());
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commons_core::{Body, Patch, Record, SecretKey};

    #[test]
    fn the_item_set_is_reused_until_a_record_is_stored() {
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

        let patch = Record::sign(
            &key,
            2,
            Body::Patch(Patch {
                lineage: family,
                parents: vec![],
                changes: vec![commons_core::Change {
                    path: "a".into(),
                    before: None,
                    after: Some(commons_core::BlobHash::of(b"a")),
                }],
                message: "p".into(),
            }),
        )
        .expect("sign");
        store.put(vec![patch]).expect("put");
        let after = r.items(&store, family).expect("items");
        assert!(!Arc::ptr_eq(&first, &after), "a put makes the set stale");
        assert_eq!(
            after.len(),
            first.len() + 1,
            "the new record is in the new set"
        );
    }
}
