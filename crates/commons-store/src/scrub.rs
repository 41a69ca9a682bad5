//! Blobs checked at rest: a blob's bytes are hashed again before this node serves them (once per
//! [`CHECK_EVERY`] and process) and by `commons store verify`, so a disk that rots is caught
//! here rather than by the peers it would otherwise feed bad bytes (and be struck by).
//!
//! A blob found damaged is **moved aside**: a loose file is renamed into `blobs/damaged/` (kept
//! for inspection, never read again), a packed one is marked damaged in memory (packs are
//! append-only; a good copy fetched again is stored loose, and a restart finds the packed copy
//! damaged again at its first use). Either way the blob is then absent, so the node's
//! downloader fetches it again once the caller puts it on the wanted list.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Seek, SeekFrom};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use commons_core::BlobHash;

use crate::blobs::{BlobReader, BlobStore};

/// A blob hashed good is served without hashing it again for this long.
pub const CHECK_EVERY: Duration = Duration::from_secs(24 * 3600);
/// Blobs remembered as checked; beyond it the memory is cleared (they are checked again).
pub const MAX_REMEMBERED: usize = 1 << 20;
/// Directory (inside the blob directory) where damaged loose blobs are moved.
pub const DAMAGED_DIR: &str = "damaged";

/// What was found good or damaged, in memory.
#[derive(Debug, Default)]
pub struct Health {
    good: Mutex<HashMap<BlobHash, Instant>>,
    damaged: Mutex<HashSet<BlobHash>>,
    /// Held while a blob is hashed for serving: one at a time, so peers asking for many large
    /// blobs cost this node one core at most (the others wait; blobs checked already do not).
    hashing: Mutex<()>,
}

impl Health {
    /// Whether the blob's stored copy was found damaged.
    pub fn is_damaged(&self, hash: &BlobHash) -> bool {
        self.damaged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(hash)
    }

    fn checked_recently(&self, hash: &BlobHash, now: Instant) -> bool {
        self.good
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
            .is_some_and(|at| now.duration_since(*at) < CHECK_EVERY)
    }

    fn mark_good(&self, hash: BlobHash, now: Instant) {
        let mut good = self.good.lock().unwrap_or_else(|p| p.into_inner());
        if good.len() >= MAX_REMEMBERED {
            good.clear();
        }
        good.insert(hash, now);
    }

    fn mark_damaged(&self, hash: BlobHash) {
        self.good
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&hash);
        self.damaged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hash);
    }
}

/// A blob opened for serving.
#[derive(Debug)]
pub enum Checked {
    /// Present, and its bytes hash to its name.
    Good(BlobReader),
    /// Not stored.
    Absent,
    /// Its bytes did not hash to its name: moved aside, now absent.
    Damaged,
}

/// What [`BlobStore::verify_all`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobReport {
    /// Blobs hashed.
    pub checked: u64,
    /// Bytes hashed.
    pub bytes: u64,
    /// Blobs whose bytes did not match their name, now moved aside.
    pub damaged: Vec<BlobHash>,
}

/// The BLAKE3 hash of a stored blob's bytes, streamed; the reader is left at the blob's start.
fn hash_of(blob: &mut BlobReader) -> io::Result<BlobHash> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(&mut *blob)?;
    blob.seek(SeekFrom::Start(0))?;
    Ok(BlobHash(*hasher.finalize().as_bytes()))
}

impl BlobStore {
    /// Opens a blob for serving: hashed again first unless it was found good within
    /// [`CHECK_EVERY`]. A damaged copy is moved aside; if another copy is stored (a loose one
    /// fetched again after a packed copy rotted) that one is checked instead.
    pub fn open_checked(&self, hash: &BlobHash) -> io::Result<Checked> {
        let now = Instant::now();
        let mut found_damaged = false;
        // At most twice: the packed copy, then a loose one.
        for _ in 0..2 {
            let Some(mut blob) = self.open_blob(hash)? else {
                break;
            };
            if self.health.checked_recently(hash, now) {
                return Ok(Checked::Good(blob));
            }
            let _one_at_a_time = self
                .health
                .hashing
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // Another request may have checked it meanwhile.
            if self.health.checked_recently(hash, now) {
                return Ok(Checked::Good(blob));
            }
            if hash_of(&mut blob)? == *hash {
                self.health.mark_good(*hash, now);
                return Ok(Checked::Good(blob));
            }
            found_damaged = true;
            self.move_aside(hash)?;
        }
        Ok(match found_damaged {
            true => Checked::Damaged,
            false => Checked::Absent,
        })
    }

    /// Moves the stored copy of `hash` aside (see the module's documentation).
    pub fn move_aside(&self, hash: &BlobHash) -> io::Result<()> {
        let loose = self.path_of(hash);
        let packed = !loose.is_file();
        tracing::error!(target: "commons_store::blobs", blob = %hash, packed, "a stored blob does not match its hash (damaged on disk); moved aside, to be fetched again");
        if packed {
            self.health.mark_damaged(*hash);
            return Ok(());
        }
        let aside = self.dir.join(DAMAGED_DIR);
        fs::create_dir_all(&aside)?;
        fs::rename(&loose, aside.join(hash.to_hex()))?;
        let _ = fs::remove_file(self.outboard_path(hash));
        self.health.mark_damaged(*hash);
        Ok(())
    }

    /// Every stored blob (loose and packed), in no order.
    pub fn all_hashes(&self) -> io::Result<Vec<BlobHash>> {
        let mut out = self.packs.hashes()?;
        for shard in fs::read_dir(&self.dir)? {
            let shard = shard?;
            let name = shard.file_name();
            let name = name.to_string_lossy();
            if name.len() != 2 || !shard.file_type()?.is_dir() {
                continue;
            }
            for file in fs::read_dir(shard.path())? {
                let file = file?;
                if let Ok(hash) = file.file_name().to_string_lossy().parse::<BlobHash>() {
                    out.push(hash);
                }
            }
        }
        out.sort_unstable_by_key(|h| h.0);
        out.dedup();
        Ok(out)
    }

    /// Hashes every stored blob again; the damaged ones are moved aside and listed.
    pub fn verify_all(&self) -> io::Result<BlobReport> {
        let mut report = BlobReport::default();
        let now = Instant::now();
        for hash in self.all_hashes()? {
            let Some(mut blob) = self.open_blob(&hash)? else {
                continue;
            };
            report.checked += 1;
            report.bytes += blob.len();
            if hash_of(&mut blob)? == hash {
                self.health.mark_good(hash, now);
            } else {
                self.move_aside(&hash)?;
                report.damaged.push(hash);
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {

    use std::io::Read;

    use super::*;

    fn rot(path: &std::path::Path, at: u64) {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(b"ROT", at).unwrap();
    }

    #[test]
    fn a_rotten_loose_blob_is_not_served_and_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let bytes = vec![7u8; 300_000];
        let hash = store.put_bytes(&bytes).unwrap();
        let good = store.put_bytes(b"another blob").unwrap();
        assert!(matches!(
            store.open_checked(&hash).unwrap(),
            Checked::Good(_)
        ));
        rot(&store.path_of(&hash), 123_456);
        // Found good a moment ago: served without hashing until CHECK_EVERY (the cadence).
        assert!(matches!(
            store.open_checked(&hash).unwrap(),
            Checked::Good(_)
        ));
        // A fresh process (or `verify_all`) hashes it again.
        let fresh = BlobStore::open(dir.path()).unwrap();
        assert!(matches!(
            fresh.open_checked(&hash).unwrap(),
            Checked::Damaged
        ));
        assert!(!fresh.contains(&hash), "moved aside");
        assert!(dir.path().join(DAMAGED_DIR).join(hash.to_hex()).is_file());
        assert!(matches!(
            fresh.open_checked(&good).unwrap(),
            Checked::Good(_)
        ));
        // Fetched again: stored and served.
        assert!(fresh.put_small(&hash, &bytes).unwrap());
        assert!(matches!(
            fresh.open_checked(&hash).unwrap(),
            Checked::Good(_)
        ));
    }

    #[test]
    fn verify_all_finds_rot_in_loose_and_packed_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let small: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1000 + usize::from(i)]).collect();
        let mut hashes = Vec::new();
        for b in &small {
            let h = BlobHash::of(b);
            assert!(store.put_small(&h, b).unwrap());
            hashes.push(h);
        }
        store.sync().unwrap();
        let big = store.put_bytes(&vec![1u8; 200_000]).unwrap();
        assert_eq!(store.verify_all().unwrap().damaged, vec![]);

        // Rot one packed blob (inside its pack file) and the loose one.
        let victim = hashes[5];
        let (file, start) = store.open_blob(&victim).unwrap().unwrap().file_range();
        drop(file);
        let pack = fs::read_dir(dir.path().join(crate::packs::PACK_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "pack"))
            .unwrap();
        rot(&pack, start + 10);
        rot(&store.path_of(&big), 5);
        let fresh = BlobStore::open(dir.path()).unwrap();
        let report = fresh.verify_all().unwrap();
        assert_eq!(report.checked, 21);
        let mut expected = vec![victim, big];
        expected.sort_unstable_by_key(|h| h.0);
        let mut got = report.damaged.clone();
        got.sort_unstable_by_key(|h| h.0);
        assert_eq!(got, expected);
        assert!(!fresh.contains(&victim) && !fresh.contains(&big));
        assert!(fresh.contains(&hashes[4]), "the others are kept");
        // A good copy of the packed one comes back loose, and is read instead.
        assert!(fresh.put_small(&victim, &small[5]).unwrap());
        let mut back = Vec::new();
        fresh
            .open_blob(&victim)
            .unwrap()
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, small[5]);
    }
}
