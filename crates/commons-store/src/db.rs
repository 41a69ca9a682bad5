//! The storage thread: the only owner of the `sled::Db`, fed through a bounded channel.
//!
//! Every call on a [`crate::Store`] becomes a [`Command`] carrying its own reply channel. Writes
//! (`Put`) are computed against an overlay, committed as one multi-tree transaction, and
//! acknowledged only after `Db::flush` returned. Puts that are already queued when one starts are
//! committed in the same round and share one flush (group commit).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};

use commons_core::{Record, RecordId};

use crate::keys::{self, SCHEMA_VERSION, T};
use crate::overlay::{Overlay, Trees, io};
use crate::state::{Counters, Ctx};
use crate::{OpenError, StoreError, repair};

/// Commands waiting for the storage thread. Small on purpose: a caller that finds the queue full
/// blocks, which is the back-pressure that keeps memory bounded when writers outpace the disk,
/// and 64 queued commands are plenty to fill one group commit.
pub const COMMAND_QUEUE: usize = 64;

/// Most `put` commands committed under one flush. Bounds the latency a put waits for others.
pub const MAX_GROUP: usize = 32;

/// sled's page cache. sled defaults to 1 GiB, far too much for a daemon that mostly idles.
pub const CACHE_BYTES: u64 = 64 << 20;

/// How often sled's background flusher runs. Durability of acknowledged puts does not depend on
/// it (a durable put flushes before it is acknowledged); it bounds what an unacknowledged write,
/// or a put of relayed records (`Store::put_relayed`), risks.
pub const FLUSH_EVERY_MS: u64 = 500;

/// A query run on the storage thread.
pub type ReadFn = Box<dyn FnOnce(&Trees, &Counters) + Send>;

/// A request to the storage thread.
pub enum Command {
    /// Store records; reply after the flush (if `durable`; else once committed).
    Put {
        /// The records.
        records: Vec<Record>,
        /// Where the new ids go.
        reply: SyncSender<Result<Vec<RecordId>, StoreError>>,
        /// Whether the reply waits for a flush.
        durable: bool,
    },
    /// Run a query (it sends its own reply).
    Read(ReadFn),
    /// Flush and stop.
    Close {
        /// Where the result of the last flush goes.
        reply: SyncSender<Result<(), StoreError>>,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Put { records, .. } => write!(f, "Put({} records)", records.len()),
            Command::Read(_) => f.write_str("Read"),
            Command::Close { .. } => f.write_str("Close"),
        }
    }
}

/// Opens sled under `db_dir` and checks the schema. `store_dir` names the store in errors.
pub fn open_db(store_dir: &Path, db_dir: &Path, counters: &Counters) -> Result<Trees, OpenError> {
    let path = store_dir.to_path_buf();
    let initialized = store_dir.join(INITIALIZED_MARKER);
    let db = sled::Config::new()
        .path(db_dir)
        .cache_capacity(CACHE_BYTES)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(Some(FLUSH_EVERY_MS))
        .open()
        .map_err(|e| open_error(&path, e))?;
    let trees = Trees::open(db, Some(db_dir)).map_err(|e| open_error(&path, e))?;
    let meta = trees.tree(T::Meta);
    match meta
        .get(keys::META_SCHEMA_KEY)
        .map_err(|e| open_error(&path, e))?
    {
        Some(v) => {
            let found = <[u8; 4]>::try_from(v.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| OpenError::Corrupt {
                    path: path.clone(),
                    reason: "the schema version is not 4 bytes".into(),
                })?;
            if found > SCHEMA_VERSION {
                return Err(OpenError::Schema {
                    path,
                    found,
                    expected: SCHEMA_VERSION,
                });
            }
            if found == 1 {
                migrate_from_v1(&trees).map_err(|e| open_error(&path, e))?;
            } else if found < SCHEMA_VERSION {
                return Err(OpenError::Corrupt {
                    path,
                    reason: format!("unknown schema version {found}"),
                });
            }
        }
        None => {
            // A store that was initialised once always has a schema version: if sled now opens
            // without one, it has lost its data (sled opens some damaged files as empty).
            if initialized.exists() || !trees.tree(T::Records).is_empty() {
                return Err(OpenError::Corrupt {
                    path,
                    reason: "the schema version is missing: the database has lost its contents"
                        .into(),
                });
            }
            meta.insert(keys::META_SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                .map_err(|e| open_error(&path, e))?;
            trees.flush().map_err(|e| open_error(&path, e))?;
            tracing::info!(target: "commons_store", path = %path.display(), schema = SCHEMA_VERSION, "created a new store");
        }
    }
    let count = match meta
        .get(keys::META_RECORD_COUNT_KEY)
        .map_err(|e| open_error(&path, e))?
    {
        Some(v) => <[u8; 8]>::try_from(v.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| OpenError::Corrupt {
                path: path.clone(),
                reason: "the record count is not 8 bytes".into(),
            })?,
        None => {
            // A store written before the count was kept: count once and remember.
            let n = trees.tree(T::Records).len() as u64;
            meta.insert(keys::META_RECORD_COUNT_KEY, &n.to_be_bytes())
                .map_err(|e| open_error(&path, e))?;
            trees.flush().map_err(|e| open_error(&path, e))?;
            n
        }
    };
    counters.stored_records.store(count, Ordering::Relaxed);
    if repair::pending(&trees)
        .map_err(|e| corrupt_open(&path, e))?
        .is_some()
    {
        // A re-index was interrupted (killed, or the disk failed): finish it before anything
        // reads the derived trees.
        repair::reindex(&trees, counters).map_err(|e| corrupt_open(&path, e))?;
    }
    // Trees of schema 1 are dropped once the migration's re-index is done (a migration killed
    // after it finished but before this drops them at the next open).
    let names = trees.db.tree_names();
    for old in keys::V1_TREES {
        if names.iter().any(|n| n.as_ref() == old.as_bytes()) {
            trees.db.drop_tree(old).map_err(|e| open_error(&path, e))?;
        }
    }
    if !initialized.exists() {
        // Written only once the schema version is durable; a crash before this point leaves a
        // store that is simply initialised again.
        write_marker(&initialized).map_err(|source| OpenError::Io {
            path: path.clone(),
            source,
        })?;
    }
    Ok(trees)
}

/// Migrates a schema-1 store: schema 2 keeps each lineage's files, log and accumulator in shared
/// trees (`ptree.rs`) instead of flat rows, and its fork point in `heads` and `excluded`. All of
/// that is derived from the records, so the migration is a re-index: the new version and the
/// re-index's first phase are written in one atomic batch and flushed, then the re-index runs
/// (at open, below). Killed midway, the re-index resumes at the next open, like any other.
fn migrate_from_v1(trees: &Trees) -> sled::Result<()> {
    tracing::warn!(target: "commons_store", "migrating the store from schema 1 to 2 (a re-index of every record)");
    let mut batch = sled::Batch::default();
    batch.insert(keys::META_SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes());
    batch.insert(keys::META_REINDEX_KEY, &[keys::REINDEX_MOVING]);
    trees.tree(T::Meta).apply_batch(batch)?;
    trees.flush()?;
    Ok(())
}

/// Name of the file, beside `db/`, that says the store was initialised.
pub const INITIALIZED_MARKER: &str = "initialized";

fn write_marker(marker: &Path) -> std::io::Result<()> {
    let tmp = marker.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    std::io::Write::write_all(
        &mut f,
        format!("commons store, schema {SCHEMA_VERSION}\n").as_bytes(),
    )?;
    f.sync_all()?;
    std::fs::rename(&tmp, marker)?;
    if let Some(dir) = marker.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn corrupt_open(path: &Path, e: StoreError) -> OpenError {
    OpenError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("an interrupted re-index could not be finished: {e}"),
    }
}

fn open_error(path: &Path, e: sled::Error) -> OpenError {
    let path: PathBuf = path.to_path_buf();
    match e {
        sled::Error::Io(e) if e.to_string().contains("could not acquire lock") => {
            OpenError::Locked { path }
        }
        sled::Error::Io(source) => OpenError::Io { path, source },
        other => OpenError::Corrupt {
            path,
            reason: other.to_string(),
        },
    }
}

/// The loop of the storage thread. Returns when told to close or when every sender is gone,
/// flushing on the way out.
pub fn run(trees: Trees, counters: Arc<Counters>, rx: Receiver<Command>) {
    let mut next: Option<Command> = None;
    loop {
        let command = match next.take() {
            Some(c) => c,
            None => match rx.recv() {
                Ok(c) => c,
                Err(_) => break,
            },
        };
        match command {
            Command::Put {
                records,
                reply,
                durable,
            } => {
                let mut group = vec![(records, reply)];
                let mut flush = durable;
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(Command::Put {
                            records,
                            reply,
                            durable,
                        }) => {
                            flush |= durable;
                            group.push((records, reply));
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                put_group(&trees, &counters, group, flush);
            }
            Command::Read(f) => f(&trees, &counters),
            Command::Close { reply } => {
                let flushed = trees.flush().map_err(io);
                tracing::info!(target: "commons_store", "store closed");
                let _ = reply.send(flushed);
                return;
            }
        }
    }
    if let Err(e) = trees.flush() {
        tracing::error!(target: "commons_store", error = %e, "final flush failed");
    }
    tracing::info!(target: "commons_store", "store closed (last handle dropped)");
}

type PutReply = SyncSender<Result<Vec<RecordId>, StoreError>>;

fn put_group(trees: &Trees, counters: &Counters, group: Vec<(Vec<Record>, PutReply)>, flush: bool) {
    let mut results = Vec::with_capacity(group.len());
    let mut records_in_group = 0;
    for (records, reply) in group {
        records_in_group += records.len();
        results.push((put_one(trees, counters, records), reply));
    }
    // One flush makes every committed transaction of the group durable (none if no put of the
    // group asked: sled's flusher makes them durable within `FLUSH_EVERY_MS`).
    let flushed = match flush {
        true => trees.flush().map_err(|e| e.to_string()),
        false => Ok(()),
    };
    tracing::debug!(target: "commons_store", puts = results.len(), records = records_in_group, "group committed");
    for (result, reply) in results {
        let result = match (&flushed, result) {
            (Ok(_), r) => r,
            (Err(e), Ok(_)) => Err(StoreError::Io(format!("flush failed: {e}"))),
            (Err(_), Err(e)) => Err(e),
        };
        // The caller may have given up waiting; nothing to do then.
        let _ = reply.send(result);
    }
}

/// Stores one put's records. If ingesting them came upon stored records that no longer decode,
/// nothing of the attempt is committed unless it succeeded; the store is re-indexed without the
/// damaged records, and a failed attempt is made once more.
fn put_one(
    trees: &Trees,
    counters: &Counters,
    records: Vec<Record>,
) -> Result<Vec<RecordId>, StoreError> {
    let (result, damaged) = try_put(trees, counters, &records);
    // A derived entry of the wrong layout is repaired the same way: the indexes are rebuilt
    // from the records.
    let corrupt_index = matches!(result, Err(StoreError::CorruptIndex { .. }));
    if damaged.is_empty() && !corrupt_index {
        return result;
    }
    if corrupt_index {
        tracing::warn!(target: "commons_store", error = ?result.as_ref().err(), "a put came upon a corrupt index; re-indexing");
    }
    repair::reindex(trees, counters)?;
    match result {
        Ok(ids) => Ok(ids),
        Err(_) => try_put(trees, counters, &records).0,
    }
}

type Damaged = Vec<(RecordId, String)>;

fn try_put(
    trees: &Trees,
    counters: &Counters,
    records: &[Record],
) -> (Result<Vec<RecordId>, StoreError>, Damaged) {
    let mut ctx = Ctx::new(Overlay::new(trees), counters);
    let ingested = ctx.ingest(records);
    let damaged = ctx.damaged();
    match ingested {
        Ok(ids) => (commit_put(counters, ctx, ids), damaged),
        Err(e) => (Err(e), damaged),
    }
}

fn commit_put(
    counters: &Counters,
    ctx: Ctx<'_>,
    ids: Vec<RecordId>,
) -> Result<Vec<RecordId>, StoreError> {
    let mut overlay = ctx.finish()?;
    let count = counters.stored_records.load(Ordering::Relaxed) + ids.len() as u64;
    if !ids.is_empty() {
        overlay.insert(
            T::Meta,
            keys::META_RECORD_COUNT_KEY.to_vec(),
            count.to_be_bytes().to_vec(),
        );
    }
    overlay.commit()?;
    if !ids.is_empty() {
        counters.stored_records.store(count, Ordering::Relaxed);
        counters.epoch.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(target: "commons_store", new = ids.len(), "records stored");
    }
    Ok(ids)
}
