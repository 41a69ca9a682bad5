//! The store as the explorer reads it: the lists that cost O(n) to read — every lineage's
//! summary, a lineage's canonical tree, its accepted log, its patches by status — are kept
//! between requests and reused while the store's records have not changed (its epoch), so
//! fifty clients reading pages of the same commons cost one read of each list, then a page of
//! work each. Every other read goes to the store ([`std::ops::Deref`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use commons_core::state::PatchStatus;
use commons_core::tree::Outcome;
use commons_core::{BlobHash, LineageId, RecordId};
use commons_store::{LineageSummary, Store, StoreError};

/// Lists kept at once; beyond, the oldest half is dropped.
pub const MAX_CACHED: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Lineages,
    Tree(LineageId),
    History(LineageId),
    Patches(LineageId, Option<PatchStatus>),
}

#[derive(Debug, Clone)]
enum Value {
    Lineages(Arc<Vec<LineageSummary>>),
    Tree(Arc<BTreeMap<String, BlobHash>>),
    History(Arc<Vec<(RecordId, Outcome)>>),
    Patches(Arc<Vec<(RecordId, PatchStatus)>>),
}

#[derive(Debug, Default)]
struct Cached {
    epoch: u64,
    /// Value and the order it was stored in.
    lists: HashMap<Key, (u64, Value)>,
    next: u64,
}

/// The store with its lists kept while the epoch stands.
#[derive(Debug, Clone)]
pub struct Reader {
    store: Store,
    cached: Arc<Mutex<Cached>>,
}

impl std::ops::Deref for Reader {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

impl Reader {
    /// A reader of `store` with nothing kept yet.
    pub fn new(store: Store) -> Reader {
        Reader {
            store,
            cached: Arc::default(),
        }
    }

    fn get(&self, key: &Key, epoch: u64) -> Option<Value> {
        let c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        (c.epoch == epoch).then(|| c.lists.get(key).map(|(_, v)| v.clone()))?
    }

    fn put(&self, key: Key, epoch: u64, value: Value) {
        let mut c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if c.epoch != epoch {
            if epoch < c.epoch {
                // Read before a change that another request already saw: not worth keeping.
                return;
            }
            c.lists.clear();
            c.epoch = epoch;
        }
        if c.lists.len() >= MAX_CACHED {
            let mut ages: Vec<u64> = c.lists.values().map(|(n, _)| *n).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            c.lists.retain(|_, (n, _)| *n > cut);
        }
        c.next += 1;
        let n = c.next;
        c.lists.insert(key, (n, value));
    }

    /// Reads the list under `key`, from what is kept if the epoch has not moved. The epoch is
    /// read before the list, so a list read during a change is kept under the older epoch and
    /// dropped at the next read.
    fn list<T>(
        &self,
        key: Key,
        read: impl FnOnce(&Store) -> Result<T, StoreError>,
        wrap: impl Fn(Arc<T>) -> Value,
        unwrap: impl Fn(Value) -> Option<Arc<T>>,
    ) -> Result<Arc<T>, StoreError> {
        let epoch = self.store.epoch();
        if let Some(v) = self.get(&key, epoch).and_then(&unwrap) {
            return Ok(v);
        }
        let v = Arc::new(read(&self.store)?);
        self.put(key, epoch, wrap(v.clone()));
        Ok(v)
    }

    /// Every lineage's summary.
    pub fn lineages(&self) -> Result<Arc<Vec<LineageSummary>>, StoreError> {
        self.list(
            Key::Lineages,
            |s| s.lineages(),
            Value::Lineages,
            |v| match v {
                Value::Lineages(l) => Some(l),
                _ => None,
            },
        )
    }

    /// A lineage's canonical tree.
    pub fn tree(&self, l: &LineageId) -> Result<Arc<BTreeMap<String, BlobHash>>, StoreError> {
        self.list(
            Key::Tree(*l),
            |s| s.tree(l),
            Value::Tree,
            |v| match v {
                Value::Tree(t) => Some(t),
                _ => None,
            },
        )
    }

    /// A lineage's accepted log.
    pub fn history(&self, l: &LineageId) -> Result<Arc<Vec<(RecordId, Outcome)>>, StoreError> {
        self.list(
            Key::History(*l),
            |s| s.history(l),
            Value::History,
            |v| match v {
                Value::History(h) => Some(h),
                _ => None,
            },
        )
    }

    /// A lineage's patches (with `status` only, if given), by id.
    pub fn patches(
        &self,
        l: &LineageId,
        status: Option<PatchStatus>,
    ) -> Result<Arc<Vec<(RecordId, PatchStatus)>>, StoreError> {
        let key = Key::Patches(*l, status);
        self.list(
            key,
            |s| s.patches(l, status),
            Value::Patches,
            |v| match v {
                Value::Patches(p) => Some(p),
                _ => None,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use commons_core::{Body, Change, Charter, Patch, Record, SecretKey};

    use super::*;

    fn patch(k: &SecretKey, l: LineageId, n: u64) -> Record {
        Record::sign(
            k,
            10 + n,
            Body::Patch(Patch {
                lineage: l,
                parents: vec![],
                changes: vec![Change {
                    path: format!("f{n}"),
                    before: None,
                    after: Some(BlobHash::of(&n.to_le_bytes())),
                }],
                message: format!("p{n}"),
            }),
        )
        .expect("valid patch")
    }

    /// A kept list is the same list while nothing changes, and a new one as soon as a put
    /// stored something: never a stale page.
    #[test]
    fn lists_are_kept_only_while_the_records_stand() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let reader = Reader::new(store.clone());
        let k = SecretKey::from_seed([5; 32]);
        let charter = Record::sign(
            &k,
            1,
            Body::Charter(Charter {
                name: "kept".into(),
                summary: String::new(),
                license: "CC0-1.0".into(),
                maintainers: vec![k.public()],
                threshold: 1,
                fork: None,
            }),
        )
        .expect("charter");
        let l = LineageId::from(charter.id());
        store.put(vec![charter, patch(&k, l, 1)]).expect("put");
        let first = reader.patches(&l, None).expect("patches");
        let again = reader.patches(&l, None).expect("patches");
        assert!(Arc::ptr_eq(&first, &again), "kept while nothing changed");
        assert_eq!(first.len(), 1);
        assert_eq!(reader.lineages().expect("lineages").len(), 1);
        store.put(vec![patch(&k, l, 2)]).expect("put");
        let after = reader.patches(&l, None).expect("patches");
        assert_eq!(after.len(), 2, "a put makes the kept list stale");
        let pending = reader
            .patches(&l, Some(PatchStatus::Pending))
            .expect("pending");
        assert_eq!(pending.len(), 2);
        for i in 0..(MAX_CACHED as u64 * 2) {
            let _ = reader.tree(&LineageId([i as u8; 32]));
        }
        assert!(
            reader.cached.lock().expect("lock").lists.len() <= MAX_CACHED,
            "bounded"
        );
    }
}
