//! A write set over the sled trees: reads see the pending writes, and the whole set commits as one
//! multi-tree sled transaction.
//!
//! sled transactions cannot iterate, but updating lineage state needs range scans (the log suffix,
//! the files below a directory). So a batch is computed first against an [`Overlay`] — reads go to
//! the pending writes, then to sled — and only the finished write set enters the transaction,
//! whose closure just replays prepared `sled::Batch`es: it is pure, so sled may retry it freely.
//! This is sound because the storage thread is the only writer: nothing can change under the
//! overlay between the reads and the commit.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::iter::Peekable;
use std::path::Path;
use std::sync::Arc;

use sled::transaction::{TransactionError, Transactional};

use crate::StoreError;
use crate::durable::Syncer;
use crate::keys::T;

/// The sled trees of an open store.
#[derive(Debug, Clone)]
pub struct Trees {
    /// The database (flush it with [`Trees::flush`], which makes the flush durable).
    pub db: sled::Db,
    trees: Vec<sled::Tree>,
    /// What completes sled's flush (`None` for a temporary database).
    syncer: Option<Arc<Syncer>>,
}

impl Trees {
    /// Opens every tree of [`T::ALL`] of the database sled opened in `dir` (`None`: a temporary
    /// database, never synced).
    pub fn open(db: sled::Db, dir: Option<&Path>) -> sled::Result<Self> {
        let trees = T::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<sled::Result<Vec<_>>>()?;
        let syncer = dir.map(Syncer::open).transpose()?.map(Arc::new);
        Ok(Self { db, trees, syncer })
    }

    /// Flushes sled and makes what it wrote durable, power cuts included (`durable.rs`).
    pub fn flush(&self) -> sled::Result<()> {
        self.db.flush()?;
        if let Some(s) = &self.syncer {
            s.sync()?;
        }
        Ok(())
    }

    /// One tree.
    pub fn tree(&self, t: T) -> &sled::Tree {
        &self.trees[t as usize]
    }
}

/// Maps a sled error to a store error.
pub fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

type Entry = (Vec<u8>, Vec<u8>);

/// Pending writes over [`Trees`]. `None` values are deletions.
#[derive(Debug)]
pub struct Overlay<'a> {
    trees: &'a Trees,
    writes: Vec<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    /// Keys a read found on neither side. The disk cannot change while an overlay lives (the
    /// storage thread is the only writer), so they stay absent from it.
    absent: Vec<RefCell<HashSet<Vec<u8>>>>,
}

impl<'a> Overlay<'a> {
    /// An empty write set.
    pub fn new(trees: &'a Trees) -> Self {
        Self {
            trees,
            writes: vec![BTreeMap::new(); T::ALL.len()],
            absent: (0..T::ALL.len()).map(|_| RefCell::default()).collect(),
        }
    }

    /// The value at `key`, pending writes first.
    pub fn get(&self, t: T, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.writes[t as usize].get(key) {
            return Ok(v.clone());
        }
        let found = self.trees.tree(t).get(key).map_err(io)?.map(|v| v.to_vec());
        if found.is_none() {
            self.absent[t as usize].borrow_mut().insert(key.to_vec());
        }
        Ok(found)
    }

    /// Whether an earlier read found `key` absent from the disk (it may be pending since).
    pub fn known_absent_on_disk(&self, t: T, key: &[u8]) -> bool {
        self.absent[t as usize].borrow().contains(key)
    }

    /// Drops a pending write of a key the disk does not hold: unlike [`Overlay::remove`], it
    /// leaves nothing to commit. Only for keys known to be absent from the disk.
    pub fn forget(&mut self, t: T, key: &[u8]) {
        self.writes[t as usize].remove(key);
    }

    /// Whether `key` is present.
    pub fn contains(&self, t: T, key: &[u8]) -> Result<bool, StoreError> {
        if let Some(v) = self.writes[t as usize].get(key) {
            return Ok(v.is_some());
        }
        self.trees.tree(t).contains_key(key).map_err(io)
    }

    /// Sets `key` to `value`.
    pub fn insert(&mut self, t: T, key: Vec<u8>, value: Vec<u8>) {
        self.writes[t as usize].insert(key, Some(value));
    }

    /// Removes `key`.
    pub fn remove(&mut self, t: T, key: Vec<u8>) {
        self.writes[t as usize].insert(key, None);
    }

    /// Up to `limit` entries with keys at or after `start` that start with `prefix`, in order.
    pub fn scan(
        &self,
        t: T,
        start: &[u8],
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let disk = self
            .trees
            .tree(t)
            .range(start.to_vec()..)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .take_while(|r| r.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)));
        let pending = self.writes[t as usize]
            .range(start.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix));
        merge(disk.peekable(), pending.peekable(), limit)
    }

    /// Every entry whose key starts with `prefix`.
    pub fn scan_prefix(&self, t: T, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.scan(t, prefix, prefix, usize::MAX)
    }

    /// The trees under the overlay.
    pub fn trees(&self) -> &'a Trees {
        self.trees
    }

    /// The committed tree, for read-only queries that iterate lazily (they run with no pending
    /// writes, so the overlay has nothing to add).
    pub fn disk(&self, t: T) -> &sled::Tree {
        self.trees.tree(t)
    }

    /// Commits every pending write as one atomic sled transaction. Does not flush.
    pub fn commit(self) -> Result<(), StoreError> {
        let mut touched: Vec<&sled::Tree> = Vec::new();
        let mut batches: Vec<sled::Batch> = Vec::new();
        for (t, writes) in T::ALL.iter().zip(&self.writes) {
            if writes.is_empty() {
                continue;
            }
            let mut batch = sled::Batch::default();
            for (k, v) in writes {
                match v {
                    Some(v) => batch.insert(k.as_slice(), v.as_slice()),
                    None => batch.remove(k.as_slice()),
                }
            }
            touched.push(self.trees.tree(*t));
            batches.push(batch);
        }
        if touched.is_empty() {
            return Ok(());
        }
        // The closure only replays prepared batches: no I/O of its own, safe to retry.
        let result: Result<(), TransactionError<()>> = touched.as_slice().transaction(|views| {
            for (view, batch) in views.iter().zip(&batches) {
                view.apply_batch(batch)?;
            }
            Ok(())
        });
        result.map_err(|e| match e {
            TransactionError::Abort(()) => StoreError::Io("transaction aborted".into()),
            TransactionError::Storage(e) => io(e),
        })
    }
}

fn merge<'b, D, P>(
    mut disk: Peekable<D>,
    mut pending: Peekable<P>,
    limit: usize,
) -> Result<Vec<Entry>, StoreError>
where
    D: Iterator<Item = sled::Result<Entry>>,
    P: Iterator<Item = (&'b Vec<u8>, &'b Option<Vec<u8>>)>,
{
    let mut out = Vec::new();
    while out.len() < limit {
        // Surface a disk error as soon as it is next.
        if let Some(Err(_)) = disk.peek()
            && let Some(Err(e)) = disk.next()
        {
            return Err(io(e));
        }
        let disk_key = disk.peek().and_then(|r| r.as_ref().ok()).map(|(k, _)| k);
        let take_pending = match (disk_key, pending.peek()) {
            (None, None) => break,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some(dk), Some((pk, _))) => {
                if dk == *pk {
                    // The pending write shadows the disk entry.
                    disk.next();
                    true
                } else {
                    *pk < dk
                }
            }
        };
        if take_pending {
            if let Some((k, v)) = pending.next()
                && let Some(v) = v
            {
                out.push((k.clone(), v.clone()));
            }
        } else if let Some(Ok(entry)) = disk.next() {
            out.push(entry);
        }
    }
    Ok(out)
}

/// The shared trees' nodes are read through the overlay: a batch sees its own pending writes.
impl crate::ptree::NodeSource for Overlay<'_> {
    fn node_bytes(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(T::Nodes, &id.to_be_bytes())
    }
    fn rc_bytes(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(T::NodeRc, &id.to_be_bytes())
    }
    fn next_id_bytes(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(T::Meta, crate::keys::META_NEXT_NODE_KEY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_see_pending_writes_and_commit_is_visible() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let trees = Trees::open(db, None).unwrap();
        trees.tree(T::Heads).insert(b"a1", b"disk").unwrap();
        trees.tree(T::Heads).insert(b"a3", b"disk").unwrap();
        trees.tree(T::Heads).insert(b"a5", b"disk").unwrap();
        trees.tree(T::Heads).insert(b"b1", b"disk").unwrap();
        let mut o = Overlay::new(&trees);
        o.insert(T::Heads, b"a2".to_vec(), b"new".to_vec());
        o.remove(T::Heads, b"a3".to_vec());
        o.insert(T::Heads, b"a5".to_vec(), b"new".to_vec());
        let keys = |v: Vec<Entry>| {
            v.into_iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        String::from_utf8_lossy(&k),
                        String::from_utf8_lossy(&v)
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(o.scan_prefix(T::Heads, b"a").unwrap()),
            ["a1=disk", "a2=new", "a5=new"]
        );
        assert_eq!(keys(o.scan(T::Heads, b"a2", b"a", 1).unwrap()), ["a2=new"]);
        assert_eq!(o.get(T::Heads, b"a3").unwrap(), None);
        // A key read as absent and written since can be forgotten without a tombstone.
        assert_eq!(o.get(T::Heads, b"c1").unwrap(), None);
        assert!(o.known_absent_on_disk(T::Heads, b"c1"));
        assert!(!o.known_absent_on_disk(T::Heads, b"a1"));
        o.insert(T::Heads, b"c1".to_vec(), b"new".to_vec());
        o.forget(T::Heads, b"c1");
        assert_eq!(o.get(T::Heads, b"c1").unwrap(), None);
        o.commit().unwrap();
        let after = Overlay::new(&trees);
        assert_eq!(
            keys(after.scan_prefix(T::Heads, b"").unwrap()),
            ["a1=disk", "a2=new", "a5=new", "b1=disk"]
        );
    }
}
