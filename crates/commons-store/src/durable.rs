//! What `sled::Db::flush` leaves out, done before a write is acknowledged.
//!
//! sled 0.34 makes a flush durable with `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)` on
//! its log file: that writes the data pages, but neither the file's metadata (its new size, the
//! extents a growing log allocates) nor the disk's volatile write cache, so after a power cut the
//! "flushed" tail may be gone (`sync_file_range(2)`: "there are no guarantees that the data will
//! be available after a crash"). sled also writes values too large for its log as separate
//! files under `blobs/` and never fsyncs them. `tests/power_loss.rs` loses acknowledged records
//! without this module; with it, every flush that acknowledges a write is followed by an
//! `fdatasync` of the log, an `fsync` of each new sled blob file and of their directory.
//! `docs/storage.md`, "Durability", says what it costs.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Completes sled's flushes for one database directory.
#[derive(Debug)]
pub struct Syncer {
    /// sled's log (`<db>/db`), opened once; fsync works on a read-only descriptor.
    log: File,
    /// sled's directory of large values (`<db>/blobs`).
    blobs: PathBuf,
    /// sled blob files already fsynced.
    synced: Mutex<HashSet<OsString>>,
}

impl Syncer {
    /// Opens the log of the sled database in `db_dir` (sled has opened it) and makes what sled
    /// created at open durable: its configuration, the directory entries, any blob file.
    pub fn open(db_dir: &Path) -> io::Result<Syncer> {
        let log = File::open(db_dir.join("db"))?;
        let conf = db_dir.join("conf");
        if conf.exists() {
            File::open(&conf)?.sync_all()?;
        }
        let syncer = Syncer {
            log,
            blobs: db_dir.join("blobs"),
            synced: Mutex::default(),
        };
        syncer.sync()?;
        File::open(db_dir)?.sync_all()?;
        Ok(syncer)
    }

    /// Call after `Db::flush` returned: makes what it wrote survive a power cut.
    pub fn sync(&self) -> io::Result<()> {
        // Blob files first: a log entry that names one must not outlive it.
        self.sync_new_blobs()?;
        self.log.sync_data()
    }

    fn sync_new_blobs(&self) -> io::Result<()> {
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = HashSet::new();
        let mut new = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                match File::open(entry.path()) {
                    Ok(f) => f.sync_all()?,
                    // Removed by sled meanwhile (a value replaced): nothing to keep.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                new = true;
            }
            present.insert(name);
        }
        *synced = present;
        if new {
            File::open(&self.blobs)?.sync_all()?;
        }
        Ok(())
    }
}
