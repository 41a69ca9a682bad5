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

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use commons_core::BlobHash;

/// Size of the streaming buffer: memory per write does not depend on the blob's size.
pub const BUFFER_BYTES: usize = 64 * 1024;

/// Prefix of temporary files; never a valid hex shard or blob name.
const TMP_PREFIX: &str = ".tmp-";

/// The blob directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    /// Blobs under `dir` (created if needed). Temporary files left by an interrupted write are
    /// removed.
    pub fn open(dir: &Path) -> io::Result<BlobStore> {
        fs::create_dir_all(dir)?;
        let store = BlobStore {
            dir: dir.to_path_buf(),
        };
        store.clean_temporaries()?;
        Ok(store)
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
        let tmp_path = self.dir.join(format!("{TMP_PREFIX}{}", random_suffix()?));
        let result = (|| {
            let mut tmp = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp_path)?;
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0u8; BUFFER_BYTES];
            let mut len = 0u64;
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                hasher.update(&buf[..n]);
                tmp.write_all(&buf[..n])?;
                len += n as u64;
            }
            let hash = BlobHash(*hasher.finalize().as_bytes());
            let final_path = self.path_of(&hash);
            if final_path.exists() {
                tracing::debug!(target: "commons_store::blobs", %hash, "blob already present");
                return Ok(hash);
            }
            tmp.sync_all()?;
            drop(tmp);
            let shard = final_path
                .parent()
                .ok_or_else(|| io::Error::other("blob path has no parent"))?;
            fs::create_dir_all(shard)?;
            fs::rename(&tmp_path, &final_path)?;
            sync_dir(shard)?;
            sync_dir(&self.dir)?;
            tracing::debug!(target: "commons_store::blobs", %hash, len, "blob stored");
            Ok(hash)
        })();
        // After a successful rename there is nothing left to remove.
        if tmp_path.exists() {
            let _ = fs::remove_file(&tmp_path);
        }
        result
    }

    /// Stores bytes held in memory.
    pub fn put_bytes(&self, bytes: &[u8]) -> io::Result<BlobHash> {
        self.put_reader(bytes)
    }

    /// Whether the blob is present.
    pub fn contains(&self, hash: &BlobHash) -> bool {
        self.path_of(hash).is_file()
    }

    /// Opens a blob for streaming reads; `None` if absent.
    pub fn open_blob(&self, hash: &BlobHash) -> io::Result<Option<File>> {
        match File::open(self.path_of(hash)) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Where a blob's file is (whether or not it exists).
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
        assert_eq!(files, vec![blobs.path_of(&a)]);
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
        assert_eq!(walk(dir.path()), vec![blobs.path_of(&h)]);
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
