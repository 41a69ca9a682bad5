//! Blobs: files named by their plain BLAKE3 hash, written through a temporary file, fsync and
//! rename, read and written as streams.
//!
//! Layout: `blobs/ab/abcdef…` where `ab` is the first two hex digits of the 64-digit hash. A write
//! streams the reader through a fixed [`BUFFER_BYTES`] buffer into `blobs/.tmp-<random>`, hashing
//! as it goes; then `sync_all`, rename to the final name, and fsync of the shard directory and of
//! `blobs/` so the rename itself is durable. The hash (hence the shard) is only known at the end
//! of the stream, so the temporary file lives in `blobs/` itself, on the same file system as
//! every shard, which keeps the rename atomic. A blob already present is not written again.
//! Temporary files left by a crash are removed when the store opens.
//!
//! Next to each blob is its **outboard** `blobs/ab/abcdef….obao` (see `outboard.rs`), the chunk
//! group hashes a peer needs to verify the blob 16 KiB at a time. It is written with the blob by
//! [`BlobStore::put_reader`], or computed on first use for a blob stored without one
//! ([`BlobStore::open_outboard`]). Downloads in progress live in `blobs/partial/` (a data file and
//! its verified outboard, see [`BlobStore::partial_paths`]) until [`BlobStore::adopt_partial`]
//! moves both into place.
//!
//! Small blobs that arrive by the thousand (a catch-up) are stored in **packs** instead
//! ([`BlobStore::put_small`], `packs.rs`): appended to a shared file with one fsync per group.
//! Readers do not see the difference: [`BlobStore::open_blob`] returns a [`BlobReader`] over a
//! loose file or over a pack's range.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use commons_core::BlobHash;

use crate::outboard::{OutboardWriter, compute_outboard};
use crate::packs::{MAX_PACKED_BYTES, Packs};

/// Size of the streaming buffer: memory per write does not depend on the blob's size.
pub const BUFFER_BYTES: usize = 64 * 1024;

/// Prefix of temporary files; never a valid hex shard or blob name.
const TMP_PREFIX: &str = ".tmp-";
/// Extension of outboard files.
const OUTBOARD_EXT: &str = "obao";
/// Directory (inside the blob directory) of downloads in progress; never a valid hex shard.
const PARTIAL_DIR: &str = "partial";

/// The blob directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    pub(crate) dir: PathBuf,
    pub(crate) packs: Arc<Packs>,
    /// What was found good or damaged at rest (`scrub.rs`), shared by the clones.
    pub(crate) health: Arc<crate::scrub::Health>,
}

/// A stored blob, read as a stream ([`Read`], [`Seek`]) or at offsets
/// ([`BlobReader::read_exact_at`]): a loose file, or a range of a pack.
#[derive(Debug)]
pub struct BlobReader {
    file: Arc<File>,
    start: u64,
    len: u64,
    pos: u64,
}

impl BlobReader {
    fn whole(file: File) -> io::Result<BlobReader> {
        let len = file.metadata()?.len();
        Ok(BlobReader {
            file: Arc::new(file),
            start: 0,
            len,
            pos: 0,
        })
    }

    /// The blob's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the blob is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file holding the blob and where the blob starts in it (a loose file: 0; a packed
    /// blob: its offset in the pack), for zero-copy sending (`sendfile`).
    pub fn file_range(&self) -> (Arc<File>, u64) {
        (self.file.clone(), self.start)
    }

    /// Fills `buf` from `offset` in the blob; an error if that runs past its end.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset.saturating_add(buf.len() as u64) > self.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the blob",
            ));
        }
        self.file.read_exact_at(buf, self.start + offset)
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.len.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for BlobReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek before the blob's start")
        })?;
        Ok(self.pos)
    }
}

/// A blob's outboard: its file, or computed in memory for a packed blob (at most a few
/// hundred bytes).
#[derive(Debug)]
pub enum OutboardReader {
    /// The outboard file next to a loose blob.
    File(File),
    /// Computed from a packed blob.
    Memory(Vec<u8>),
}

impl OutboardReader {
    /// The outboard's length.
    pub fn len(&self) -> io::Result<u64> {
        match self {
            OutboardReader::File(f) => Ok(f.metadata()?.len()),
            OutboardReader::Memory(b) => Ok(b.len() as u64),
        }
    }

    /// Whether the outboard is empty (a blob of one chunk group).
    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Fills `buf` from `offset`.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            OutboardReader::File(f) => f.read_exact_at(buf, offset),
            OutboardReader::Memory(b) => {
                let range = usize::try_from(offset)
                    .ok()
                    .and_then(|o| Some(o..o.checked_add(buf.len())?))
                    .filter(|r| r.end <= b.len())
                    .ok_or_else(|| {
                        io::Error::new(io::ErrorKind::UnexpectedEof, "past the outboard's end")
                    })?;
                buf.copy_from_slice(&b[range]);
                Ok(())
            }
        }
    }
}

impl BlobStore {
    /// Blobs under `dir` (created if needed), owned by this process: it may write packs.
    /// Temporary files left by an interrupted write are removed.
    pub fn open(dir: &Path) -> io::Result<BlobStore> {
        fs::create_dir_all(dir)?;
        let store = BlobStore {
            dir: dir.to_path_buf(),
            packs: Arc::new(Packs::owned(dir)),
            health: Arc::default(),
        };
        store.clean_temporaries()?;
        Ok(store)
    }

    /// Blobs under `dir` as another process (the daemon that owns the store) writes them:
    /// loose blobs may be added, packs are only read, and what the owner packs after this
    /// opens is found too.
    pub fn open_shared(dir: &Path) -> io::Result<BlobStore> {
        fs::create_dir_all(dir)?;
        Ok(BlobStore {
            dir: dir.to_path_buf(),
            packs: Arc::new(Packs::shared(dir)),
            health: Arc::default(),
        })
    }

    fn clean_temporaries(&self) -> io::Result<()> {
        let mut removed = 0usize;
        let mut dirs = vec![self.dir.clone()];
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
            }
        }
        for dir in dirs {
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    fs::remove_file(entry.path())?;
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            tracing::info!(target: "commons_store::blobs", removed, "removed temporary blob files left by an interrupted write");
        }
        Ok(())
    }

    /// Streams `reader` into the store in bounded memory and returns its hash. Durable on
    /// return; a blob already present is not written again.
    pub fn put_reader(&self, mut reader: impl Read) -> io::Result<BlobHash> {
        let suffix = random_suffix()?;
        let tmp_path = self.dir.join(format!("{TMP_PREFIX}{suffix}"));
        let tmp_outboard = self
            .dir
            .join(format!("{TMP_PREFIX}{suffix}.{OUTBOARD_EXT}"));
        let result = (|| {
            let mut tmp = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp_path)?;
            let outboard = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp_outboard)?;
            // The outboard writer hashes as it goes: the root it ends with is the blob's hash.
            let mut hasher = OutboardWriter::new(io::BufWriter::new(outboard));
            let mut buf = vec![0u8; BUFFER_BYTES];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                hasher.update(&buf[..n])?;
                tmp.write_all(&buf[..n])?;
            }
            let (hash, len, outboard) = hasher.finish()?;
            let final_path = self.path_of(&hash);
            if final_path.exists() {
                tracing::debug!(target: "commons_store::blobs", %hash, "blob already present");
                return Ok(hash);
            }
            tmp.sync_all()?;
            drop(tmp);
            outboard
                .into_inner()
                .map_err(|e| e.into_error())?
                .sync_all()?;
            let shard = final_path
                .parent()
                .ok_or_else(|| io::Error::other("blob path has no parent"))?;
            fs::create_dir_all(shard)?;
            // The outboard first: a blob is never without its outboard but by a crash between
            // the renames, and a missing outboard is recomputed on first use.
            fs::rename(&tmp_outboard, self.outboard_path(&hash))?;
            fs::rename(&tmp_path, &final_path)?;
            sync_dir(shard)?;
            sync_dir(&self.dir)?;
            tracing::debug!(target: "commons_store::blobs", %hash, len, "blob stored");
            Ok(hash)
        })();
        // After a successful rename there is nothing left to remove.
        for path in [&tmp_path, &tmp_outboard] {
            if path.exists() {
                let _ = fs::remove_file(path);
            }
        }
        result
    }

    /// Where a blob's outboard is (whether or not it exists).
    pub fn outboard_path(&self, hash: &BlobHash) -> PathBuf {
        self.path_of(hash).with_extension(OUTBOARD_EXT)
    }

    /// Opens a blob's outboard, computing it first (from the blob file as it is now, streaming)
    /// if the blob was stored without one; `None` if the blob is absent. A packed blob's
    /// outboard is computed in memory.
    pub fn open_outboard(&self, hash: &BlobHash) -> io::Result<Option<OutboardReader>> {
        if let Some(blob) = self.open_packed(hash)? {
            let mut out = Vec::new();
            let (computed, _) = compute_outboard(blob, &mut out)?;
            if computed != *hash {
                tracing::warn!(target: "commons_store::blobs", %hash, "packed blob does not match its hash; no outboard made");
                return Ok(None);
            }
            return Ok(Some(OutboardReader::Memory(out)));
        }
        let path = self.outboard_path(hash);
        match File::open(&path) {
            Ok(f) => return Ok(Some(OutboardReader::File(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let Some(blob) = self.open_loose(hash)? else {
            return Ok(None);
        };
        let tmp_path = self
            .dir
            .join(format!("{TMP_PREFIX}{}.{OUTBOARD_EXT}", random_suffix()?));
        let result = (|| {
            let tmp = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp_path)?;
            let mut out = io::BufWriter::new(tmp);
            let (computed, _) = compute_outboard(io::BufReader::new(blob), &mut out)?;
            if computed != *hash {
                // The file no longer matches its name: serve no outboard for it.
                tracing::warn!(target: "commons_store::blobs", %hash, "blob file does not match its hash; no outboard made");
                return Ok(None);
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            fs::rename(&tmp_path, &path)?;
            tracing::debug!(target: "commons_store::blobs", %hash, "outboard computed");
            File::open(&path).map(|f| Some(OutboardReader::File(f)))
        })();
        if tmp_path.exists() {
            let _ = fs::remove_file(&tmp_path);
        }
        result
    }

    /// The files of a download in progress: the data (`partial/<hex>`, as long as the blob,
    /// written at the offsets received) and its verified outboard (`partial/<hex>.obao`). The
    /// directory is created.
    pub fn partial_paths(&self, hash: &BlobHash) -> io::Result<(PathBuf, PathBuf)> {
        let dir = self.dir.join(PARTIAL_DIR);
        fs::create_dir_all(&dir)?;
        let data = dir.join(hash.to_hex());
        let outboard = data.with_extension(OUTBOARD_EXT);
        Ok((data, outboard))
    }

    /// Removes downloads in progress that nothing has written to for `max_age` (a blob whose
    /// patch was dropped, a peer that vanished): the rest of `partial/` is kept for resuming.
    /// Returns the bytes freed.
    pub fn remove_stale_partials(&self, max_age: std::time::Duration) -> io::Result<u64> {
        let dir = self.dir.join(PARTIAL_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let now = std::time::SystemTime::now();
        let mut freed = 0;
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if meta.is_file() && age > max_age {
                fs::remove_file(entry.path())?;
                freed += meta.len();
                tracing::info!(target: "commons_store::blobs", file = %entry.path().display(), "stale partial download removed");
            }
        }
        Ok(freed)
    }

    /// Removes outboards whose blob is not here (a crash between the outboard's rename and the
    /// blob's, a damaged blob moved aside) and that nothing wrote for `max_age`: a write renames
    /// its outboard a moment before its blob, so a fresh one is left alone. Returns the bytes
    /// freed. Lists every shard: for the daemon's start.
    pub fn remove_orphan_outboards(&self, max_age: std::time::Duration) -> io::Result<u64> {
        let now = std::time::SystemTime::now();
        let mut freed = 0;
        for shard in fs::read_dir(&self.dir)? {
            let shard = shard?;
            let is_shard = shard.file_name().len() == 2 && shard.file_type()?.is_dir();
            if !is_shard {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let path = entry?.path();
                if path.extension().and_then(|e| e.to_str()) != Some(OUTBOARD_EXT)
                    || path.with_extension("").exists()
                {
                    continue;
                }
                let meta = fs::metadata(&path)?;
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .unwrap_or_default();
                if age > max_age {
                    fs::remove_file(&path)?;
                    freed += meta.len();
                    tracing::info!(target: "commons_store::blobs", file = %path.display(), "outboard without its blob removed");
                }
            }
        }
        Ok(freed)
    }

    /// The loose blobs whose files nothing wrote for `max_age`, by hash (outboards and
    /// temporary files are not blobs). Lists every shard: for the sweep of blobs no record
    /// names (`Store::forget_family`).
    pub fn loose_older_than(&self, max_age: std::time::Duration) -> io::Result<Vec<BlobHash>> {
        let now = std::time::SystemTime::now();
        let mut out = Vec::new();
        for shard in fs::read_dir(&self.dir)? {
            let shard = shard?;
            if shard.file_name().len() != 2 || !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                let Some(hash) = entry
                    .file_name()
                    .to_str()
                    .filter(|n| n.len() == 64)
                    .and_then(|n| n.parse::<BlobHash>().ok())
                else {
                    continue;
                };
                let meta = entry.metadata()?;
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .unwrap_or_default();
                if meta.is_file() && age > max_age {
                    out.push(hash);
                }
            }
        }
        Ok(out)
    }

    /// Moves a completed download into the store: its data file (every group verified by the
    /// caller) and its outboard, each fsynced, renamed, and the directories fsynced.
    pub fn adopt_partial(&self, hash: &BlobHash) -> io::Result<()> {
        let (data, outboard) = self.partial_paths(hash)?;
        File::open(&data)?.sync_all()?;
        let final_path = self.path_of(hash);
        let shard = final_path
            .parent()
            .ok_or_else(|| io::Error::other("blob path has no parent"))?;
        let new_shard = !shard.exists();
        fs::create_dir_all(shard)?;
        if outboard.exists() {
            File::open(&outboard)?.sync_all()?;
            fs::rename(&outboard, self.outboard_path(hash))?;
        }
        fs::rename(&data, &final_path)?;
        // The renames are durable once the shard is; the store directory only changed if the
        // shard is new. The partial directory is not synced: after a crash a partial file may
        // reappear beside its adopted copy, and it is only ever resumed or replaced.
        sync_dir(shard)?;
        if new_shard {
            sync_dir(&self.dir)?;
        }
        tracing::debug!(target: "commons_store::blobs", %hash, "download adopted");
        Ok(())
    }

    /// Stores bytes held in memory.
    pub fn put_bytes(&self, bytes: &[u8]) -> io::Result<BlobHash> {
        self.put_reader(bytes)
    }

    /// Stores a small blob received whole, if `bytes` hash to `expected` (`false`, and nothing
    /// stored, if not). Blobs of at most [`MAX_PACKED_BYTES`] are appended to a pack: readable
    /// at once, **durable once [`BlobStore::sync`] returns**, so a batch of downloads costs one
    /// fsync. Larger ones, and any blob when this process does not own the store, become a
    /// loose file, durable on return.
    pub fn put_small(&self, expected: &BlobHash, bytes: &[u8]) -> io::Result<bool> {
        if BlobHash::of(bytes) != *expected {
            return Ok(false);
        }
        if self.contains(expected) {
            return Ok(true);
        }
        // A blob whose packed copy was found damaged comes back as a loose file (packs are
        // never rewritten).
        if bytes.len() as u64 > MAX_PACKED_BYTES
            || !self.packs.is_owned()
            || self.health.is_damaged(expected)
        {
            self.put_bytes(bytes)?;
        } else {
            self.packs.put(*expected, bytes)?;
        }
        Ok(true)
    }

    /// Makes every blob stored with [`BlobStore::put_small`] so far durable (one fsync, none if
    /// nothing is pending). Call it before committing records that name those blobs.
    pub fn sync(&self) -> io::Result<()> {
        self.packs.sync()
    }

    /// Whether [`BlobStore::sync`] has anything to do (no lock, no I/O): a caller on an async
    /// thread asks this before handing the sync to a blocking thread.
    pub fn has_unsynced(&self) -> bool {
        self.packs.has_unsynced()
    }

    /// Whether the blob is present (and not found damaged).
    pub fn contains(&self, hash: &BlobHash) -> bool {
        (!self.health.is_damaged(hash) && matches!(self.packs.find(hash), Ok(Some(_))))
            || self.path_of(hash).is_file()
    }

    /// The blob's length; `None` if absent.
    pub fn len_of(&self, hash: &BlobHash) -> io::Result<Option<u64>> {
        Ok(self.open_blob(hash)?.map(|b| b.len()))
    }

    /// Opens a blob for reading; `None` if absent.
    pub fn open_blob(&self, hash: &BlobHash) -> io::Result<Option<BlobReader>> {
        if let Some(blob) = self.open_packed(hash)? {
            return Ok(Some(blob));
        }
        self.open_loose(hash)
    }

    fn open_packed(&self, hash: &BlobHash) -> io::Result<Option<BlobReader>> {
        if self.health.is_damaged(hash) {
            // Found damaged at rest: absent, until a good copy is stored (loose).
            return Ok(None);
        }
        let Some(at) = self.packs.find(hash)? else {
            return Ok(None);
        };
        Ok(Some(BlobReader {
            file: self.packs.file(at.pack)?,
            start: at.offset,
            len: u64::from(at.len),
            pos: 0,
        }))
    }

    fn open_loose(&self, hash: &BlobHash) -> io::Result<Option<BlobReader>> {
        match File::open(self.path_of(hash)) {
            Ok(f) => BlobReader::whole(f).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes a loose blob and its outboard; returns the bytes they held, or `None` if the
    /// blob is not loose here (absent, or packed). For `Store::forget_family`, which checks that
    /// no stored record names it.
    pub fn remove_loose(&self, hash: &BlobHash) -> io::Result<Option<u64>> {
        let path = self.path_of(hash);
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        fs::remove_file(&path)?;
        let outboard = self.outboard_path(hash);
        let ob = fs::metadata(&outboard).map_or(0, |m| m.len());
        match fs::remove_file(&outboard) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        Ok(Some(len + ob))
    }

    /// Where a loose blob's file is (whether or not it exists).
    pub fn path_of(&self, hash: &BlobHash) -> PathBuf {
        let hex = hash.to_hex();
        self.dir.join(&hex[..2]).join(hex)
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn random_suffix() -> io::Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets the files' modification time an hour back.
    fn make_old(paths: &[&Path]) {
        let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for p in paths {
            File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
    }

    #[test]
    fn stale_partial_downloads_are_removed_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        assert_eq!(
            store
                .remove_stale_partials(std::time::Duration::from_secs(60))
                .unwrap(),
            0
        );
        let (old_data, old_outboard) = store.partial_paths(&BlobHash([1; 32])).unwrap();
        let (new_data, _) = store.partial_paths(&BlobHash([2; 32])).unwrap();
        for p in [&old_data, &old_outboard, &new_data] {
            fs::write(p, b"partial").unwrap();
        }
        make_old(&[&old_data, &old_outboard]);
        let freed = store
            .remove_stale_partials(std::time::Duration::from_secs(60))
            .unwrap();
        assert_eq!(freed, 14);
        assert!(!old_data.exists() && !old_outboard.exists());
        assert!(new_data.exists(), "a recent download is kept for resuming");
    }

    #[test]
    fn outboards_without_their_blob_are_removed_once_old() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let kept = store.put_bytes(&[7u8; 100_000]).unwrap();
        let orphan = store.outboard_path(&BlobHash([3; 32]));
        let fresh = store.outboard_path(&BlobHash([4; 32]));
        for p in [&orphan, &fresh] {
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"outboard").unwrap();
        }
        make_old(&[&orphan, &store.outboard_path(&kept)]);
        let freed = store
            .remove_orphan_outboards(std::time::Duration::from_secs(60))
            .unwrap();
        assert_eq!(freed, 8);
        assert!(!orphan.exists(), "an old outboard without its blob is gone");
        assert!(
            fresh.exists(),
            "a fresh one may belong to a write in progress"
        );
        assert!(
            store.outboard_path(&kept).exists(),
            "a blob's own outboard stays"
        );
    }

    /// Produces `len` deterministic pseudo-random bytes without holding them.
    struct Generated {
        left: u64,
        state: u64,
    }

    impl Read for Generated {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf
                .len()
                .min(usize::try_from(self.left).unwrap_or(usize::MAX));
            for b in &mut buf[..n] {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                *b = self.state as u8;
            }
            self.left -= n as u64;
            Ok(n)
        }
    }

    #[test]
    fn named_by_plain_blake3_and_sharded() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        let content = b"hello commons\n";
        let hash = blobs.put_bytes(content).unwrap();
        assert_eq!(hash.0, *blake3::hash(content).as_bytes());
        let hex = hash.to_hex();
        let path = dir.path().join(&hex[..2]).join(&hex);
        assert_eq!(blobs.path_of(&hash), path);
        assert_eq!(fs::read(&path).unwrap(), content);
        assert!(blobs.contains(&hash));
        let mut read = String::new();
        blobs
            .open_blob(&hash)
            .unwrap()
            .unwrap()
            .read_to_string(&mut read)
            .unwrap();
        assert_eq!(read.as_bytes(), content);
        assert!(blobs.open_blob(&BlobHash([0; 32])).unwrap().is_none());

        // If b3sum is installed, it agrees (skipped silently otherwise).
        if let Ok(out) = std::process::Command::new("b3sum").arg(&path).output()
            && out.status.success()
        {
            let printed = String::from_utf8_lossy(&out.stdout);
            assert_eq!(printed.split_whitespace().next(), Some(hex.as_str()));
        }
    }

    #[test]
    fn deduplicated_and_no_temporaries_left() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        let a = blobs.put_bytes(b"same").unwrap();
        let b = blobs.put_bytes(b"same").unwrap();
        assert_eq!(a, b);
        let files: Vec<_> = walk(dir.path());
        assert_eq!(files, vec![blobs.path_of(&a), blobs.outboard_path(&a)]);
    }

    #[test]
    fn temporaries_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        let h = blobs.put_bytes(b"kept").unwrap();
        fs::write(dir.path().join(".tmp-deadbeef"), b"partial").unwrap();
        fs::write(
            blobs.path_of(&h).parent().unwrap().join(".tmp-cafe"),
            b"partial",
        )
        .unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        assert_eq!(
            walk(dir.path()),
            vec![blobs.path_of(&h), blobs.outboard_path(&h)]
        );
    }

    #[test]
    fn outboards_are_written_with_the_blob_or_computed_on_first_use() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let h = blobs.put_bytes(&content).unwrap();
        let written = fs::read(blobs.outboard_path(&h)).unwrap();
        assert_eq!(
            written.len() as u64,
            crate::outboard::outboard_len(content.len() as u64)
        );
        assert!(
            crate::outboard::verify_outboard(&h, content.len() as u64, written.as_slice()).unwrap()
        );
        fs::remove_file(blobs.outboard_path(&h)).unwrap();
        let lazily = blobs.open_outboard(&h).unwrap().unwrap();
        let mut bytes = vec![0; lazily.len().unwrap() as usize];
        lazily.read_exact_at(&mut bytes, 0).unwrap();
        assert_eq!(bytes, written);
        assert!(blobs.open_outboard(&BlobHash([0; 32])).unwrap().is_none());
    }

    #[test]
    fn fifty_megabytes_stream_in_bounded_memory() {
        const LEN: u64 = 50 * 1024 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        // The expected hash is computed from a second, identical stream: neither is ever held
        // in memory, only BUFFER_BYTES of it at a time.
        let mut hasher = blake3::Hasher::new();
        io::copy(
            &mut Generated {
                left: LEN,
                state: 42,
            },
            &mut hasher,
        )
        .unwrap();
        let hash = blobs
            .put_reader(Generated {
                left: LEN,
                state: 42,
            })
            .unwrap();
        assert_eq!(hash.0, *hasher.finalize().as_bytes());
        assert_eq!(fs::metadata(blobs.path_of(&hash)).unwrap().len(), LEN);
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out.sort();
        out
    }
}
