//! Packs: small blobs appended to shared files, so that storing ten thousand of them costs a few
//! fsyncs instead of a file, an inode, a rename and an fsync each.
//!
//! Layout, inside the blob directory: `packs/00000001.pack` and `packs/00000001.idx`, numbered
//! from 1. A pack is a sequence of entries, each `hash (32 bytes) · length (u32 LE) · bytes`. An
//! index lists a pack's entries in order as fixed [`IDX_ENTRY`]-byte lines `hash · data offset
//! (u64 LE) · length (u32 LE) · check (u32 LE)`, where the check is the first four bytes of the
//! BLAKE3 hash of the rest of the line.
//!
//! **One fsync per batch.** [`Packs::put`] appends an entry (readable at once, by this process
//! and others); [`Packs::sync`] makes everything appended so far durable with one `fdatasync`.
//! A download batch puts its blobs, syncs, and only then commits the records that name them.
//!
//! **Crash safety without a second fsync.** The index is written after the pack's fsync and is
//! not synced itself: it is a cache that saves reading the packs at open. Reading it stops at the
//! first line whose check fails or whose offset does not follow the previous entry, and the rest
//! of the pack is then read entry by entry, each checked against its hash; reading stops at the
//! first entry that does not verify (the unsynced tail of a crash). A writer never appends to a
//! pack written before it opened (nor after a failed write): it starts a new one, so a damaged
//! tail is never followed by good entries and nothing is ever truncated.
//!
//! Only the process that owns the store (the one holding the sled lock) writes packs. Another
//! process reading the same blob directory (the CLI next to a running daemon) opens it
//! [`Packs::shared`]: a lookup that misses reads what the owner appended since.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use commons_core::BlobHash;

/// Blobs up to this size may be packed (four 16 KiB chunk groups).
pub const MAX_PACKED_BYTES: u64 = 64 * 1024;
/// A writer starts a new pack once its pack reaches this size.
pub const PACK_ROLL_BYTES: u64 = 256 * 1024 * 1024;
/// Bytes of an entry's header in a pack: hash, length.
pub const ENTRY_HEADER: u64 = 32 + 4;
/// Bytes of one index line.
pub const IDX_ENTRY: usize = 32 + 8 + 4 + 4;
/// Directory of the packs, inside the blob directory; never a valid hex shard.
pub const PACK_DIR: &str = "packs";
const PACK_EXT: &str = "pack";
const IDX_EXT: &str = "idx";

/// Where a packed blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Number of the pack.
    pub pack: u32,
    /// Offset of the blob's bytes in the pack.
    pub offset: u64,
    /// Length of the blob.
    pub len: u32,
}

/// The packs of one blob directory: an in-memory index of every packed blob and, in the owning
/// process, the writer.
#[derive(Debug)]
pub struct Packs {
    dir: PathBuf,
    owner: bool,
    inner: Mutex<Inner>,
    /// Whether blobs were put since the last sync: read without the lock, which a sync holds
    /// for the whole fsync.
    pending: AtomicBool,
}

#[derive(Debug, Default)]
struct Inner {
    loaded: bool,
    index: HashMap<BlobHash, Location>,
    /// How far each pack (and its index) has been read.
    scans: BTreeMap<u32, Scan>,
    writer: Option<Writer>,
    /// Open read handles, one per pack.
    files: HashMap<u32, std::sync::Arc<File>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Scan {
    /// End of the last entry known good.
    end: u64,
    /// Bytes of the index consumed.
    idx_pos: u64,
}

#[derive(Debug)]
struct Writer {
    pack_no: u32,
    pack: File,
    idx: File,
    len: u64,
    /// Index lines of the entries appended since the last sync.
    unsynced: Vec<[u8; IDX_ENTRY]>,
    /// A write failed: the tail is unknown, nothing more is appended.
    broken: bool,
}

impl Drop for Packs {
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            tracing::warn!(target: "commons_store::packs", error = %e, "cannot sync the pack being written");
        }
    }
}

impl Packs {
    /// The packs under `blob_dir`, written by this process (the store's owner).
    pub fn owned(blob_dir: &Path) -> Packs {
        Packs::new(blob_dir, true)
    }

    /// The packs under `blob_dir` as another process writes them: read only.
    pub fn shared(blob_dir: &Path) -> Packs {
        Packs::new(blob_dir, false)
    }

    fn new(blob_dir: &Path, owner: bool) -> Packs {
        Packs {
            dir: blob_dir.join(PACK_DIR),
            owner,
            inner: Mutex::new(Inner::default()),
            pending: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain maps and counters: still consistent after a panic elsewhere.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this process writes the packs.
    pub fn is_owned(&self) -> bool {
        self.owner
    }

    /// Where `hash` is packed, if it is.
    pub fn find(&self, hash: &BlobHash) -> io::Result<Option<Location>> {
        let mut inner = self.lock();
        if !inner.loaded {
            self.refresh(&mut inner)?;
            inner.loaded = true;
        } else if let Some(at) = inner.index.get(hash) {
            return Ok(Some(*at));
        } else if !self.owner {
            // The owner may have packed it since.
            self.refresh(&mut inner)?;
        }
        Ok(inner.index.get(hash).copied())
    }

    /// The pack file `n`, opened once.
    pub fn file(&self, n: u32) -> io::Result<std::sync::Arc<File>> {
        let mut inner = self.lock();
        if let Some(f) = inner.files.get(&n) {
            return Ok(f.clone());
        }
        let f = std::sync::Arc::new(File::open(self.pack_path(n))?);
        inner.files.insert(n, f.clone());
        Ok(f)
    }

    /// Every packed blob known, in no order.
    pub fn hashes(&self) -> io::Result<Vec<BlobHash>> {
        let mut inner = self.lock();
        self.refresh(&mut inner)?;
        inner.loaded = true;
        Ok(inner.index.keys().copied().collect())
    }

    /// Number of packed blobs known.
    pub fn count(&self) -> io::Result<usize> {
        let mut inner = self.lock();
        if !inner.loaded {
            self.refresh(&mut inner)?;
            inner.loaded = true;
        }
        Ok(inner.index.len())
    }

    /// Appends `bytes` (at most [`MAX_PACKED_BYTES`], already known to hash to `hash`) to the
    /// current pack. Readable at once, durable once [`Packs::sync`] returns: callers store many
    /// blobs, then sync once, then commit what names them.
    pub fn put(&self, hash: BlobHash, bytes: &[u8]) -> io::Result<()> {
        if bytes.len() as u64 > MAX_PACKED_BYTES {
            return Err(io::Error::other(format!(
                "a blob of {} bytes is too large for a pack (at most {MAX_PACKED_BYTES})",
                bytes.len()
            )));
        }
        if !self.owner {
            return Err(io::Error::other(
                "packs are written only by the process that owns the store",
            ));
        }
        let mut inner = self.lock();
        if !inner.loaded {
            self.refresh(&mut inner)?;
            inner.loaded = true;
        }
        if inner.index.contains_key(&hash) {
            return Ok(());
        }
        let needs_new = match &inner.writer {
            None => true,
            Some(w) => w.broken || w.len >= PACK_ROLL_BYTES,
        };
        if needs_new {
            // What the old pack holds is made durable before it is left.
            self.sync_locked(&mut inner)?;
            inner.writer = Some(self.new_writer()?);
        }
        let writer = inner.writer.as_mut().expect("a writer was just made");
        let mut entry = Vec::with_capacity(ENTRY_HEADER as usize + bytes.len());
        entry.extend_from_slice(&hash.0);
        entry.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        entry.extend_from_slice(bytes);
        if let Err(e) = writer.pack.write_all_at(&entry, writer.len) {
            // The pack's tail is unknown now: the next blob starts a new pack.
            writer.broken = true;
            return Err(e);
        }
        let at = Location {
            pack: writer.pack_no,
            offset: writer.len + ENTRY_HEADER,
            len: bytes.len() as u32,
        };
        writer.len += entry.len() as u64;
        writer.unsynced.push(idx_line(&hash, &at));
        inner.index.insert(hash, at);
        self.pending.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether blobs were put that [`Packs::sync`] has not made durable yet (a sync under way
    /// counts as not done). Cheap: no lock, no I/O.
    pub fn has_unsynced(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Makes every blob put so far durable: one `fdatasync` of the pack, then the index lines
    /// of what it synced (see the module on why they are never written before).
    pub fn sync(&self) -> io::Result<()> {
        let mut inner = self.lock();
        self.sync_locked(&mut inner)
    }

    fn sync_locked(&self, inner: &mut Inner) -> io::Result<()> {
        let Some(writer) = inner.writer.as_mut() else {
            return Ok(());
        };
        if writer.unsynced.is_empty() {
            return Ok(());
        }
        let t0 = std::time::Instant::now();
        writer.pack.sync_data()?;
        let lines = writer.unsynced.concat();
        let idx_at = writer.idx.metadata()?.len();
        writer.idx.write_all_at(&lines, idx_at)?;
        tracing::debug!(target: "commons_store::packs", pack = writer.pack_no, blobs = writer.unsynced.len(), ms = t0.elapsed().as_secs_f64() * 1e3, "pack synced");
        writer.unsynced.clear();
        // Under the lock, as every put is: nothing was put between the fsync and here.
        self.pending.store(false, Ordering::Release);
        Ok(())
    }

    /// A new, empty pack numbered after every pack there is; the directory entry made durable.
    fn new_writer(&self) -> io::Result<Writer> {
        let fresh_dir = !self.dir.exists();
        fs::create_dir_all(&self.dir)?;
        if fresh_dir && let Some(parent) = self.dir.parent() {
            File::open(parent)?.sync_all()?;
        }
        let pack_no = pack_numbers(&self.dir)?.last().map_or(1, |n| n + 1);
        let create = |path: PathBuf| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)
        };
        let pack = create(self.pack_path(pack_no))?;
        let idx = create(self.idx_path(pack_no))?;
        File::open(&self.dir)?.sync_all()?;
        tracing::debug!(target: "commons_store::packs", pack = pack_no, "new pack");
        Ok(Writer {
            pack_no,
            pack,
            idx,
            len: 0,
            unsynced: Vec::new(),
            broken: false,
        })
    }

    fn pack_path(&self, n: u32) -> PathBuf {
        self.dir.join(format!("{n:08}.{PACK_EXT}"))
    }

    fn idx_path(&self, n: u32) -> PathBuf {
        self.dir.join(format!("{n:08}.{IDX_EXT}"))
    }

    /// Reads what is new in every pack: index lines first, then entries past them, each
    /// checked against its hash.
    fn refresh(&self, inner: &mut Inner) -> io::Result<()> {
        let writing_to = inner.writer.as_ref().map(|w| w.pack_no);
        for n in pack_numbers(&self.dir)? {
            if Some(n) == writing_to {
                continue;
            }
            let mut scan = inner.scans.get(&n).copied().unwrap_or_default();
            let Ok(pack) = File::open(self.pack_path(n)) else {
                continue;
            };
            let pack_len = pack.metadata()?.len();
            if pack_len == scan.end {
                continue;
            }
            let mut found = Vec::new();
            read_idx(&self.idx_path(n), n, pack_len, &mut scan, &mut found)?;
            scan_pack(&pack, n, pack_len, &mut scan, &mut found)?;
            for (hash, at) in found {
                inner.index.entry(hash).or_insert(at);
            }
            inner.scans.insert(n, scan);
        }
        Ok(())
    }
}

/// The numbers of the packs in `dir`, ascending.
fn pack_numbers(dir: &Path) -> io::Result<Vec<u32>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(&format!(".{PACK_EXT}"))
            && let Ok(n) = stem.parse::<u32>()
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn idx_check(line: &[u8]) -> [u8; 4] {
    let h = blake3::hash(line);
    let mut out = [0u8; 4];
    out.copy_from_slice(&h.as_bytes()[..4]);
    out
}

fn idx_line(hash: &BlobHash, at: &Location) -> [u8; IDX_ENTRY] {
    let mut line = [0u8; IDX_ENTRY];
    line[..32].copy_from_slice(&hash.0);
    line[32..40].copy_from_slice(&at.offset.to_le_bytes());
    line[40..44].copy_from_slice(&at.len.to_le_bytes());
    let check = idx_check(&line[..44]);
    line[44..].copy_from_slice(&check);
    line
}

/// Index lines from `scan.idx_pos` on, while each checks out and follows the previous entry.
fn read_idx(
    path: &Path,
    pack_no: u32,
    pack_len: u64,
    scan: &mut Scan,
    found: &mut Vec<(BlobHash, Location)>,
) -> io::Result<()> {
    let Ok(idx) = File::open(path) else {
        return Ok(());
    };
    let idx_len = idx.metadata()?.len();
    let Some(rest) = idx_len.checked_sub(scan.idx_pos).filter(|r| *r > 0) else {
        return Ok(());
    };
    let mut bytes = vec![0u8; rest as usize - rest as usize % IDX_ENTRY];
    idx.read_exact_at(&mut bytes, scan.idx_pos)?;
    for line in bytes.chunks_exact(IDX_ENTRY) {
        if idx_check(&line[..44]) != line[44..] {
            break;
        }
        let hash = BlobHash(line[..32].try_into().expect("32 bytes"));
        let offset = u64::from_le_bytes(line[32..40].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(line[40..44].try_into().expect("4 bytes"));
        let end = offset + u64::from(len);
        if end <= scan.end {
            // Already read from the pack itself.
            scan.idx_pos += IDX_ENTRY as u64;
            continue;
        }
        if offset != scan.end + ENTRY_HEADER || end > pack_len {
            break;
        }
        found.push((
            hash,
            Location {
                pack: pack_no,
                offset,
                len,
            },
        ));
        scan.end = end;
        scan.idx_pos += IDX_ENTRY as u64;
    }
    Ok(())
}

/// Entries of the pack from `scan.end` on, each checked against its hash; stops at the first
/// that does not verify.
fn scan_pack(
    pack: &File,
    pack_no: u32,
    pack_len: u64,
    scan: &mut Scan,
    found: &mut Vec<(BlobHash, Location)>,
) -> io::Result<()> {
    let mut header = [0u8; ENTRY_HEADER as usize];
    let mut data = Vec::new();
    while scan.end + ENTRY_HEADER <= pack_len {
        pack.read_exact_at(&mut header, scan.end)?;
        let hash = BlobHash(header[..32].try_into().expect("32 bytes"));
        let len = u32::from_le_bytes(header[32..].try_into().expect("4 bytes"));
        let offset = scan.end + ENTRY_HEADER;
        if u64::from(len) > MAX_PACKED_BYTES || offset + u64::from(len) > pack_len {
            break;
        }
        data.resize(len as usize, 0);
        pack.read_exact_at(&mut data, offset)?;
        if BlobHash::of(&data) != hash {
            tracing::debug!(target: "commons_store::packs", pack = pack_no, offset, "pack ends in an entry that does not verify (an interrupted write)");
            break;
        }
        found.push((
            hash,
            Location {
                pack: pack_no,
                offset,
                len,
            },
        ));
        scan.end = offset + u64::from(len);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::Arc;

    fn blob(i: u32) -> Vec<u8> {
        // Lengths from 0 to 64 KiB, content unique per i.
        let len = (i as usize * 7919) % (MAX_PACKED_BYTES as usize + 1);
        (0..len)
            .map(|j| (j as u32 ^ i.wrapping_mul(2654435761)) as u8)
            .collect()
    }

    fn put_all(packs: &Arc<Packs>, range: std::ops::Range<u32>) {
        // Eight threads at once, as downloads do.
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let packs = packs.clone();
                let range = range.clone();
                std::thread::spawn(move || {
                    for i in range.filter(|i| i % 8 == t) {
                        let b = blob(i);
                        packs.put(BlobHash::of(&b), &b).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }

    fn read(packs: &Packs, hash: &BlobHash) -> Option<Vec<u8>> {
        let at = packs.find(hash).unwrap()?;
        let mut bytes = vec![0; at.len as usize];
        packs
            .file(at.pack)
            .unwrap()
            .read_exact_at(&mut bytes, at.offset)
            .unwrap();
        Some(bytes)
    }

    fn assert_holds(packs: &Packs, range: std::ops::Range<u32>) {
        for i in range {
            let b = blob(i);
            assert_eq!(
                read(packs, &BlobHash::of(&b)).as_deref(),
                Some(&b[..]),
                "blob {i}"
            );
        }
    }

    #[test]
    fn concurrent_puts_are_readable_at_once_durable_after_sync_and_found_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let packs = Arc::new(Packs::owned(dir.path()));
        assert!(!packs.has_unsynced());
        put_all(&packs, 0..400);
        assert_holds(&packs, 0..400);
        assert!(packs.has_unsynced(), "puts wait for a sync");
        let idx_path = dir.path().join("packs/00000001.idx");
        assert_eq!(
            fs::metadata(&idx_path).unwrap().len(),
            0,
            "no index line before the pack is synced"
        );
        packs.sync().unwrap();
        assert!(!packs.has_unsynced(), "the sync made them durable");
        assert_eq!(
            fs::metadata(&idx_path).unwrap().len(),
            400 * IDX_ENTRY as u64
        );
        assert_eq!(packs.count().unwrap(), 400);
        // Storing again changes nothing.
        let b = blob(3);
        packs.put(BlobHash::of(&b), &b).unwrap();
        drop(packs);
        let reopened = Packs::owned(dir.path());
        assert_eq!(reopened.count().unwrap(), 400);
        assert_holds(&reopened, 0..400);
        assert_eq!(reopened.find(&BlobHash([7; 32])).unwrap(), None);
        // One pack; every blob listed once.
        assert_eq!(
            fs::metadata(&idx_path).unwrap().len(),
            400 * IDX_ENTRY as u64
        );
    }

    #[test]
    fn a_torn_tail_and_a_damaged_index_lose_only_what_was_not_synced() {
        let dir = tempfile::tempdir().unwrap();
        let packs = Arc::new(Packs::owned(dir.path()));
        put_all(&packs, 0..50);
        drop(packs);
        let pack_path = dir.path().join("packs/00000001.pack");
        let idx_path = dir.path().join("packs/00000001.idx");
        // A crash in the middle of a write: half an entry at the pack's end, and an index line
        // for it that was never completed.
        let torn = blob(999);
        let mut tail = BlobHash::of(&torn).0.to_vec();
        tail.extend_from_slice(&(torn.len() as u32).to_le_bytes());
        tail.extend_from_slice(&torn[..torn.len() / 2]);
        let mut f = OpenOptions::new().append(true).open(&pack_path).unwrap();
        f.write_all(&tail).unwrap();
        let mut f = OpenOptions::new().append(true).open(&idx_path).unwrap();
        f.write_all(&[0xAB; IDX_ENTRY / 2]).unwrap();
        // And a line in the middle of the index garbled: the pack itself is read from there.
        let mut idx = fs::read(&idx_path).unwrap();
        idx[10 * IDX_ENTRY + 40] ^= 0xFF;
        fs::write(&idx_path, &idx).unwrap();

        let reopened = Arc::new(Packs::owned(dir.path()));
        assert_eq!(reopened.count().unwrap(), 50);
        assert_holds(&reopened, 0..50);
        assert_eq!(reopened.find(&BlobHash::of(&torn)).unwrap(), None);
        // New blobs go to a new pack; the damaged one is never appended to.
        put_all(&reopened, 50..80);
        assert!(dir.path().join("packs/00000002.pack").exists());
        drop(reopened);
        let again = Packs::owned(dir.path());
        assert_eq!(again.count().unwrap(), 80);
        assert_holds(&again, 0..80);
    }

    #[test]
    fn without_its_index_a_pack_is_read_entry_by_entry() {
        let dir = tempfile::tempdir().unwrap();
        let packs = Packs::owned(dir.path());
        for i in 0..30 {
            let b = blob(i);
            packs.put(BlobHash::of(&b), &b).unwrap();
        }
        drop(packs);
        fs::remove_file(dir.path().join("packs/00000001.idx")).unwrap();
        let reopened = Packs::owned(dir.path());
        assert_holds(&reopened, 0..30);
        // An entry whose bytes were damaged ends what is read: it is not served as good.
        drop(reopened);
        let pack_path = dir.path().join("packs/00000001.pack");
        let mut pack = fs::read(&pack_path).unwrap();
        let first_len = blob(0).len();
        let second = ENTRY_HEADER as usize + first_len + ENTRY_HEADER as usize;
        let b1 = blob(1);
        assert!(!b1.is_empty());
        pack[second] ^= 1;
        fs::write(&pack_path, &pack).unwrap();
        let damaged = Packs::owned(dir.path());
        assert_eq!(
            damaged.count().unwrap(),
            1,
            "only the entry before the damage"
        );
        assert_eq!(damaged.find(&BlobHash::of(&b1)).unwrap(), None);
    }

    #[test]
    fn a_shared_reader_finds_what_the_owner_packs_later() {
        let dir = tempfile::tempdir().unwrap();
        let owner = Arc::new(Packs::owned(dir.path()));
        let reader = Packs::shared(dir.path());
        assert_eq!(reader.count().unwrap(), 0);
        put_all(&owner, 0..20);
        assert_holds(&reader, 0..20);
        let b = blob(1);
        assert!(
            reader.put(BlobHash::of(&b), &b).is_err(),
            "a reader never writes"
        );
        let too_big = vec![1u8; MAX_PACKED_BYTES as usize + 1];
        let err = owner.put(BlobHash::of(&too_big), &too_big).unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }

    #[test]
    fn a_blob_store_reads_a_packed_blob_like_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::BlobStore::open(dir.path()).unwrap();
        let (a, b) = (blob(5), blob(6));
        let (ha, hb) = (BlobHash::of(&a), BlobHash::of(&b));
        assert!(
            !store.put_small(&ha, &b).unwrap(),
            "wrong bytes are refused"
        );
        assert!(!store.contains(&ha));
        assert!(store.put_small(&ha, &a).unwrap());
        assert!(store.put_small(&hb, &b).unwrap());
        store.sync().unwrap();
        assert!(store.contains(&ha) && store.contains(&hb));
        assert!(!store.path_of(&ha).exists(), "packed, not a loose file");
        let mut reader = store.open_blob(&ha).unwrap().unwrap();
        assert_eq!(reader.len(), a.len() as u64);
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(got, a, "the range ends where the blob does");
        let mut outboard = Vec::new();
        crate::outboard::compute_outboard(&a[..], &mut outboard).unwrap();
        let served = store.open_outboard(&ha).unwrap().unwrap();
        let mut bytes = vec![0; served.len().unwrap() as usize];
        served.read_exact_at(&mut bytes, 0).unwrap();
        assert_eq!(bytes, outboard);
        assert_eq!(store.len_of(&hb).unwrap(), Some(b.len() as u64));
    }
}
