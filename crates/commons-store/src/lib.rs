//! The Commons store: verified records and their indexes in sled, the derived state of every
//! lineage (kept up to date incrementally), and blobs as files named by their BLAKE3 hash.
//!
//! API boundary: only this crate knows sled. Everything it accepts is already verified (it takes
//! [`commons_core::Record`], never raw bytes), and a write returns only once it is durable.

pub mod blobs;
mod db;
mod durable;
mod forget;
mod fork;
pub mod fsck;
pub mod home;
mod keys;
mod lineage_backend;
pub mod outboard;
mod overlay;
pub mod packs;
mod ptree;
mod query;
pub mod repair;
pub mod scrub;
mod state;
mod wanted;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use commons_core::state::{ForkPoint, LineageState, PatchStatus};
use commons_core::{BlobHash, Charter, LineageId, Record, RecordId, StateRoot};

pub use blobs::{BlobReader, BlobStore, OutboardReader};
pub use db::{COMMAND_QUEUE, FLUSH_EVERY_MS};
pub use forget::Forgotten;
pub use keys::SCHEMA_VERSION;
pub use repair::DamagedRecord;

use db::Command;
use overlay::Trees;
use state::{Counters, Ctx};

/// Why the store did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process (usually a running `commonsd`) holds the store.
    #[error(
        "the store at {path} is in use by another process (is commonsd running with this home?)"
    )]
    Locked {
        /// The store's directory.
        path: PathBuf,
    },
    /// The files are damaged.
    #[error("the store at {path} is corrupt: {reason}")]
    Corrupt {
        /// The store's directory.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// The store was written by a newer version.
    #[error(
        "the store at {path} has schema version {found}, this build reads {expected}; upgrade commons"
    )]
    Schema {
        /// The store's directory.
        path: PathBuf,
        /// Version on disk.
        found: u32,
        /// Version this build knows.
        expected: u32,
    },
    /// An I/O error.
    #[error("cannot open the store at {path}: {source}")]
    Io {
        /// The store's directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled or the file system failed.
    #[error("store I/O error: {0}")]
    Io(String),
    /// Stored bytes do not decode any more.
    #[error("stored record {id} is corrupt: {reason}")]
    CorruptRecord {
        /// Its id.
        id: RecordId,
        /// Why.
        reason: String,
    },
    /// An index or state entry does not have the layout this build writes.
    #[error("the store's `{tree}` tree is corrupt: {reason}")]
    CorruptIndex {
        /// The sled tree.
        tree: &'static str,
        /// What was found.
        reason: String,
    },
    /// The storage thread is gone.
    #[error("the storage thread has stopped")]
    Closed,
}

/// How much work the storage thread has done since the store was opened: the counters show
/// whether an update replayed history or touched only what it had to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Records read back from sled and decoded (and verified).
    pub records_decoded: u64,
    /// Patches the incremental engine loaded.
    pub patch_loads: u64,
    /// Application-log entries the incremental engine read.
    pub log_entries_read: u64,
    /// Lineage states recomputed from scratch (charters, completed fork bases).
    pub rebuilds: u64,
    /// Stored records found not to decode, and set aside.
    pub set_aside: u64,
    /// Votes read from the `validations` index to compute statuses.
    pub votes_read: u64,
}

/// A short summary of one lineage, kept up to date by the store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LineageSummary {
    /// Which lineage.
    pub lineage: LineageId,
    /// Its charter.
    pub charter: Charter,
    /// The charter's author.
    pub founder: commons_core::PublicKey,
    /// The charter's timestamp (ms since the Unix epoch).
    pub created: u64,
    /// Its family (root of the chain of parents), if every charter up the chain is present.
    pub family: Option<LineageId>,
    /// The state root.
    pub root: StateRoot,
    /// Patches per status.
    pub counts: BTreeMap<PatchStatus, usize>,
    /// Number of files in the canonical tree.
    pub files: u64,
    /// What a fork made now would name as its base.
    pub fork_point: ForkPoint,
}

/// The store. Cheap to clone; all clones talk to the same storage thread.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// What the clones share. Dropping the last one stops the storage thread after a flush.
#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    tx: SyncSender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
    blobs: BlobStore,
    counters: Arc<Counters>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Ask the thread to flush and stop, then wait, so that the store is flushed and its lock
        // released when the last handle is gone. If it already stopped, the send fails.
        let (reply, _done) = sync_channel(1);
        let _ = self.tx.send(Command::Close { reply });
        let handle = match self.thread.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!(target: "commons_store", dir = %self.dir.display(), "the storage thread panicked");
        }
    }
}

/// Attempts to take a lock that is still held before [`Store::open`] reports `Locked`.
const LOCK_RETRIES: u32 = 5;
/// Pause after the first failed attempt; it doubles each time (25 + 50 + 100 + 200 + 400 ms,
/// under a second in all, so a store really held by a daemon is reported promptly).
const LOCK_RETRY_FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(25);

impl Store {
    /// Opens (creating if needed) the store in `dir`: sled under `dir/db`, blobs under
    /// `dir/blobs`. Refuses a locked, corrupt or newer store with an error naming the path.
    pub fn open(dir: &Path) -> Result<Store, OpenError> {
        // sled releases its file lock only when its background threads let go of the page
        // cache, a moment after the database is dropped (sled #1289): a store closed and
        // reopened at once, in this process or by the next process of the same user, may find
        // it still held. Retry for a short, bounded time before calling the store locked.
        let mut pause = LOCK_RETRY_FIRST_PAUSE;
        for _ in 0..LOCK_RETRIES {
            match Self::open_once(dir) {
                Err(OpenError::Locked { .. }) => {
                    std::thread::sleep(pause);
                    pause = pause.saturating_mul(2);
                }
                other => return other,
            }
        }
        Self::open_once(dir)
    }

    fn open_once(dir: &Path) -> Result<Store, OpenError> {
        let io_err = |source| OpenError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let blobs = BlobStore::open(&dir.join("blobs")).map_err(io_err)?;
        let counters = Arc::new(Counters::default());
        let (tx, rx) = sync_channel::<Command>(COMMAND_QUEUE);
        let (ready_tx, ready_rx) = sync_channel::<Result<(), OpenError>>(1);
        let (store_dir, db_dir) = (dir.to_path_buf(), dir.join("db"));
        let thread_counters = counters.clone();
        // sled is opened on the thread that will own it. If sled panics on damaged files, the
        // thread dies, `ready_tx` is dropped, and that is reported as corruption below.
        let thread = std::thread::Builder::new()
            .name("commons-store".into())
            .spawn(
                move || match db::open_db(&store_dir, &db_dir, &thread_counters) {
                    Ok(trees) => {
                        if ready_tx.send(Ok(())).is_ok() {
                            db::run(trees, thread_counters, rx);
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                },
            )
            .map_err(io_err)?;
        let opened = ready_rx.recv();
        match opened {
            Ok(Ok(())) => {
                tracing::info!(target: "commons_store", dir = %dir.display(), "store opened");
                Ok(Store {
                    inner: Arc::new(Inner {
                        dir: dir.to_path_buf(),
                        tx,
                        thread: Mutex::new(Some(thread)),
                        blobs,
                        counters,
                    }),
                })
            }
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(OpenError::Corrupt {
                    path: dir.to_path_buf(),
                    reason: "the database could not be read (sled failed while opening it)".into(),
                })
            }
        }
    }

    /// Runs `f` on the storage thread and waits for its result. If `f` comes upon stored records
    /// that do not decode, they are set aside, the store is re-indexed without them, and `f` runs
    /// again ([`repair::run_repairing`]).
    fn read<R: Send + 'static>(
        &self,
        f: impl Fn(&mut Ctx<'_>) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (reply, result) = sync_channel(1);
        let command = Command::Read(Box::new(move |trees: &Trees, counters: &Counters| {
            let _ = reply.send(repair::run_repairing(trees, counters, &f));
        }));
        self.inner
            .tx
            .send(command)
            .map_err(|_| StoreError::Closed)?;
        result.recv().map_err(|_| StoreError::Closed)?
    }

    /// Stores verified records as one atomic batch, updates indexes and lineage states, and
    /// returns once all of it is durable. Returns the ids that were new (records already present
    /// are skipped: storing is idempotent).
    pub fn put(&self, records: Vec<Record>) -> Result<Vec<RecordId>, StoreError> {
        self.put_with(records, true)
    }

    /// [`Store::put`] of records relayed from peers, that can be fetched again: returns once
    /// they are committed (visible to every read), without waiting for a flush. sled's flusher
    /// makes them durable within [`FLUSH_EVERY_MS`]; a crash before loses the last of them
    /// whole (each put is one transaction), never part of one, and catch-up brings them back.
    pub fn put_relayed(&self, records: Vec<Record>) -> Result<Vec<RecordId>, StoreError> {
        self.put_with(records, false)
    }

    fn put_with(&self, records: Vec<Record>, durable: bool) -> Result<Vec<RecordId>, StoreError> {
        if records.is_empty() {
            return Ok(vec![]);
        }
        let (reply, result) = sync_channel(1);
        self.inner
            .tx
            .send(Command::Put {
                records,
                reply,
                durable,
            })
            .map_err(|_| StoreError::Closed)?;
        result.recv().map_err(|_| StoreError::Closed)?
    }

    /// A record by id.
    pub fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let id = *id;
        self.read(move |ctx| ctx.record(&id))
    }

    /// Several records in one trip to the storage thread, in the order of `ids` (`None` for
    /// those not stored): what a peer's `GetRecords` reads.
    pub fn get_many(&self, ids: Vec<RecordId>) -> Result<Vec<Option<Record>>, StoreError> {
        self.read(move |ctx| ids.iter().map(|id| ctx.record(id)).collect())
    }

    /// Whether a record is present.
    pub fn contains(&self, id: &RecordId) -> Result<bool, StoreError> {
        let id = *id;
        self.read(move |ctx| ctx.o.contains(keys::T::Records, id.as_bytes()))
    }

    /// Ids of all records whose hex id starts with `prefix` (lowercase hex), at most `limit`.
    pub fn ids_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<RecordId>, StoreError> {
        let prefix = prefix.to_owned();
        self.read(move |ctx| query::ids_with_prefix(ctx, &prefix, limit))
    }

    /// All lineages, with their summaries, ordered by creation time then id.
    pub fn lineages(&self) -> Result<Vec<LineageSummary>, StoreError> {
        self.read(query::lineages)
    }

    /// The summary of one lineage.
    pub fn lineage(&self, lineage: &LineageId) -> Result<Option<LineageSummary>, StoreError> {
        let lineage = *lineage;
        self.read(move |ctx| query::summary(ctx, &lineage))
    }

    /// Every record of a family (charters, patches, validations), in an order where charters
    /// come first and parents before children. Patches of other families that the family's
    /// patches build on are included, so that the family's state can be computed from the result.
    pub fn family_records(&self, family: &LineageId) -> Result<Vec<Record>, StoreError> {
        let family = *family;
        self.read(move |ctx| query::family_records(ctx, &family))
    }

    /// Every lineage with its family (the root of its chain of parents, if every charter up the
    /// chain is present), read from the per-lineage metadata: cheap, unlike [`Store::lineages`],
    /// which builds full summaries.
    pub fn lineage_families(&self) -> Result<Vec<(LineageId, Option<LineageId>)>, StoreError> {
        self.read(|ctx| {
            let mut ids = Vec::new();
            for key in ctx.o.disk(keys::T::Lineages).iter().keys() {
                let key = key.map_err(overlay::io)?;
                if let Some(id) = keys::id_at(&key, 0) {
                    ids.push(LineageId(id));
                }
            }
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(meta) = ctx.meta(&id)? {
                    out.push((id, meta.family));
                }
            }
            Ok(out)
        })
    }

    /// The family of one lineage: `None` if the lineage is unknown, `Some(None)` if a charter up
    /// its chain is missing.
    pub fn family_of(&self, lineage: &LineageId) -> Result<Option<Option<LineageId>>, StoreError> {
        let lineage = *lineage;
        self.read(move |ctx| Ok(ctx.meta(&lineage)?.map(|m| m.family)))
    }

    /// The ids of [`Store::family_records`], sorted: what a peer lists when another catches up.
    /// Read from an index, without decoding the family's records (see `query::family_ids`).
    pub fn family_ids(&self, family: &LineageId) -> Result<Vec<RecordId>, StoreError> {
        let family = *family;
        self.read(move |ctx| query::family_ids(ctx, &family))
    }

    /// Number of records held.
    pub fn record_count(&self) -> Result<u64, StoreError> {
        // Kept by the storage thread, updated before a put is acknowledged.
        Ok(self.inner.counters.stored_records.load(Ordering::Relaxed))
    }

    /// A number that changes whenever the set of stored records does (a put that stored
    /// something, a re-index), and only then: what a cache of record sets is keyed by. Not
    /// kept across opens.
    pub fn epoch(&self) -> u64 {
        self.inner.counters.epoch.load(Ordering::Relaxed)
    }

    /// Patches listed in a lineage with their status, optionally only those with `status`.
    pub fn patches(
        &self,
        lineage: &LineageId,
        status: Option<PatchStatus>,
    ) -> Result<Vec<(RecordId, PatchStatus)>, StoreError> {
        let lineage = *lineage;
        self.read(move |ctx| query::patches(ctx, &lineage, status))
    }

    /// The status of one patch in a lineage; `None` if the lineage does not list it.
    pub fn status(
        &self,
        lineage: &LineageId,
        patch: &RecordId,
    ) -> Result<Option<PatchStatus>, StoreError> {
        let (lineage, patch) = (*lineage, *patch);
        self.read(move |ctx| ctx.status(&lineage, &patch))
    }

    /// The accepted history of a lineage in order of application, with each outcome.
    pub fn history(
        &self,
        lineage: &LineageId,
    ) -> Result<Vec<(RecordId, commons_core::tree::Outcome)>, StoreError> {
        let lineage = *lineage;
        self.read(move |ctx| query::history(ctx, &lineage))
    }

    /// Validations whose target is `patch`, in any lineage.
    pub fn validations_of(&self, patch: &RecordId) -> Result<Vec<Record>, StoreError> {
        let patch = *patch;
        self.read(move |ctx| query::validations_of(ctx, &patch))
    }

    /// The canonical tree of a lineage (path → blob), from the stored incremental state.
    pub fn tree(&self, lineage: &LineageId) -> Result<BTreeMap<String, BlobHash>, StoreError> {
        let lineage = *lineage;
        self.read(move |ctx| query::tree(ctx, &lineage))
    }

    /// Checks the structure of the shared trees (counts, reachability): O(nodes).
    pub fn check_trees(&self) -> Result<fsck::TreeCheck, StoreError> {
        self.read(|ctx| fsck::check(ctx))
    }

    /// The state of a lineage computed from scratch from the family's records: the reference
    /// the incremental state is checked against.
    pub fn state_from_scratch(
        &self,
        lineage: &LineageId,
    ) -> Result<Option<LineageState>, StoreError> {
        let lineage = *lineage;
        self.read(move |ctx| query::state_from_scratch(ctx, &lineage))
    }

    /// The stored records that did not decode and were set aside (at most `limit` of them), with
    /// how many there are in all.
    pub fn damaged(&self, limit: usize) -> Result<(u64, Vec<DamagedRecord>), StoreError> {
        self.read(move |ctx| repair::damaged(ctx.o.trees(), limit))
    }

    /// Rebuilds every index and lineage state from the records, setting aside records that do
    /// not decode (what the store does by itself when a read comes upon one).
    pub fn reindex(&self) -> Result<(), StoreError> {
        self.read(|ctx| repair::reindex(ctx.o.trees(), ctx.counters()))
    }

    /// Forgets a family of commons: removes the records of its lineages and re-indexes what
    /// remains, then removes the loose blobs no remaining patch names (see `forget.rs`). O(the
    /// store): a re-index. Crash-safe: a kill midway finishes at the next open.
    pub fn forget_family(&self, family: &LineageId) -> Result<Forgotten, StoreError> {
        let (blobs, family) = (self.inner.blobs.clone(), *family);
        self.read(move |ctx| forget::forget_family(ctx.o.trees(), ctx.counters(), &blobs, &family))
    }

    /// Lists blobs to download (those that patches about to be stored create and that are not
    /// here): call it before storing the patches, whose durable put makes the list durable
    /// first (see `wanted.rs`).
    pub fn want_blobs(&self, wanted: Vec<(BlobHash, LineageId)>) -> Result<(), StoreError> {
        if wanted.is_empty() {
            return Ok(());
        }
        self.read(move |ctx| wanted::want(ctx.o.trees(), &wanted))
    }

    /// Takes blobs off the list of blobs to download (they are here, durably).
    pub fn unwant_blobs(&self, done: Vec<BlobHash>) -> Result<(), StoreError> {
        if done.is_empty() {
            return Ok(());
        }
        self.read(move |ctx| wanted::unwant(ctx.o.trees(), &done))
    }

    /// A page of the blobs to download, in hash order after `after`, with the lineage that
    /// wanted each.
    pub fn wanted_blobs(
        &self,
        after: Option<BlobHash>,
        limit: usize,
    ) -> Result<Vec<(BlobHash, LineageId)>, StoreError> {
        self.read(move |ctx| wanted::list(ctx.o.trees(), after, limit))
    }

    /// The blob store beside the records.
    pub fn blobs(&self) -> &BlobStore {
        &self.inner.blobs
    }

    /// The work counters of the storage thread since the store was opened.
    pub fn stats(&self) -> StoreStats {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.inner.counters;
        StoreStats {
            records_decoded: c.records_decoded.load(Relaxed),
            patch_loads: c.patch_loads.load(Relaxed),
            log_entries_read: c.log_entries_read.load(Relaxed),
            rebuilds: c.rebuilds.load(Relaxed),
            set_aside: c.set_aside.load(Relaxed),
            votes_read: c.votes_read.load(Relaxed),
        }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Flushes and stops the storage thread; later calls on any clone return `Closed`.
    pub fn close(&self) -> Result<(), StoreError> {
        let (reply, result) = sync_channel(1);
        self.inner
            .tx
            .send(Command::Close { reply })
            .map_err(|_| StoreError::Closed)?;
        let flushed = result.recv().map_err(|_| StoreError::Closed)?;
        // Wait for the thread to drop the database, so the lock is released on return.
        let handle = match self.inner.thread.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        flushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Store>();
    }
}
