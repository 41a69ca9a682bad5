//! Bundles: every record and blob of a family of commons in one file, for exchange without a
//! network (a USB stick, an e-mail attachment).
//!
//! Format, version 1 (all integers little-endian):
//!
//! ```text
//! magic    8 bytes   "CMNSBNDL"
//! version  u32       1
//! records  u64       count, at most MAX_RECORDS
//!   length u32       1..=MAX_RECORD_BYTES
//!   bytes            the record's canonical bytes (as hashed and signed)
//! blobs    u64       count, at most MAX_BLOBS
//!   hash   32 bytes  plain BLAKE3 of the content
//!   length u64       at most MAX_BLOB_BYTES
//!   bytes            the content
//! end      8 bytes   "CMNSEND\n"
//! ```
//!
//! Nothing may follow the end marker. Reading verifies everything before the caller stores
//! anything: every record decodes and its signature verifies, every blob's hash matches. Records
//! are held in memory (at most [`MAX_RECORDS_TOTAL_BYTES`]); blobs are streamed into temporary
//! files while hashed, so memory stays bounded whatever their size.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use commons_core::record::MAX_RECORD_BYTES;
use commons_core::{BlobHash, DecodeError, Record};

/// The first bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"CMNSBNDL";
/// The last bytes of every bundle.
pub const END: [u8; 8] = *b"CMNSEND\n";
/// The format version written and read.
pub const VERSION: u32 = 1;
/// Most records in one bundle.
pub const MAX_RECORDS: u64 = 1_000_000;
/// Most bytes of records in one bundle: they are held in memory until all are verified.
pub const MAX_RECORDS_TOTAL_BYTES: u64 = 256 * 1024 * 1024;
/// Most blobs in one bundle.
pub const MAX_BLOBS: u64 = 1_000_000;
/// Largest blob: blobs stream to disk, so this bounds disk use per blob, not memory.
pub const MAX_BLOB_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Size of the buffer blobs are copied through.
const CHUNK: usize = 64 * 1024;

/// Why a bundle could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: io::Error,
    },
    /// The magic bytes are wrong.
    #[error("not a commons bundle (the file does not start with the bundle signature)")]
    NotABundle,
    /// A version this build does not read.
    #[error("bundle format version {found} is not supported (this build reads version {VERSION})")]
    Version {
        /// The version in the file.
        found: u32,
    },
    /// The file ends early.
    #[error("bundle is truncated: it ends at byte {at} while reading {reading}")]
    Truncated {
        /// Offset where it ended.
        at: u64,
        /// What was being read.
        reading: String,
    },
    /// A count or length is over its limit.
    #[error("bundle {what} is {value}, over the limit of {max}")]
    TooLarge {
        /// What.
        what: String,
        /// Its value.
        value: u64,
        /// The limit.
        max: u64,
    },
    /// A record does not decode or verify.
    #[error("bundle record {index} is invalid: {source}")]
    BadRecord {
        /// Position in the bundle (from 0).
        index: u64,
        /// Why.
        source: DecodeError,
    },
    /// A blob's content does not match its hash.
    #[error(
        "bundle blob {index} is corrupt: it claims hash {claimed} but its content hashes to {actual}"
    )]
    BlobMismatch {
        /// Position in the bundle (from 0).
        index: u64,
        /// The hash in the bundle.
        claimed: BlobHash,
        /// The hash of the content.
        actual: BlobHash,
    },
    /// The end marker is missing or wrong.
    #[error("bundle is damaged: no end marker at byte {at}")]
    NoEnd {
        /// Offset.
        at: u64,
    },
    /// Bytes after the end marker.
    #[error("bundle is damaged: unexpected bytes after the end marker at byte {at}")]
    TrailingBytes {
        /// Offset.
        at: u64,
    },
    /// A blob given to the writer is shorter or longer than announced.
    #[error(
        "blob {hash} changed while it was being written ({expected} bytes announced, {actual} read)"
    )]
    BlobLength {
        /// The blob.
        hash: BlobHash,
        /// Announced length.
        expected: u64,
        /// Bytes read.
        actual: u64,
    },
}

fn io_ctx(context: &str) -> impl FnOnce(io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        context: context.to_owned(),
        source,
    }
}

/// Writes a bundle as a stream: header, records, blobs, end. The counts are given up front.
#[derive(Debug)]
pub struct BundleWriter<W: Write> {
    w: BufWriter<W>,
    records_left: u64,
    blobs_left: Option<u64>,
}

impl<W: Write> BundleWriter<W> {
    /// Starts a bundle of `records` records.
    pub fn new(w: W, records: u64) -> Result<Self, BundleError> {
        let mut w = BufWriter::new(w);
        let ctx = "cannot write the bundle";
        w.write_all(&MAGIC).map_err(io_ctx(ctx))?;
        w.write_all(&VERSION.to_le_bytes()).map_err(io_ctx(ctx))?;
        w.write_all(&records.to_le_bytes()).map_err(io_ctx(ctx))?;
        Ok(Self {
            w,
            records_left: records,
            blobs_left: None,
        })
    }

    /// Writes one record.
    pub fn record(&mut self, record: &Record) -> Result<(), BundleError> {
        debug_assert!(self.records_left > 0, "more records than announced");
        self.records_left = self.records_left.saturating_sub(1);
        let bytes = record.bytes();
        // A verified record is at most MAX_RECORD_BYTES, far below u32::MAX.
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let ctx = "cannot write the bundle";
        self.w.write_all(&len.to_le_bytes()).map_err(io_ctx(ctx))?;
        self.w.write_all(bytes).map_err(io_ctx(ctx))
    }

    /// Starts the blob section with `count` blobs.
    pub fn blobs(&mut self, count: u64) -> Result<(), BundleError> {
        debug_assert_eq!(self.records_left, 0, "fewer records than announced");
        self.blobs_left = Some(count);
        self.w
            .write_all(&count.to_le_bytes())
            .map_err(io_ctx("cannot write the bundle"))
    }

    /// Streams one blob of `len` bytes.
    pub fn blob(
        &mut self,
        hash: &BlobHash,
        len: u64,
        content: &mut dyn Read,
    ) -> Result<(), BundleError> {
        let ctx = "cannot write the bundle";
        self.w.write_all(hash.as_bytes()).map_err(io_ctx(ctx))?;
        self.w.write_all(&len.to_le_bytes()).map_err(io_ctx(ctx))?;
        let copied =
            io::copy(&mut content.take(len), &mut self.w).map_err(io_ctx("cannot read a blob"))?;
        if copied != len {
            return Err(BundleError::BlobLength {
                hash: *hash,
                expected: len,
                actual: copied,
            });
        }
        self.blobs_left = self.blobs_left.map(|n| n.saturating_sub(1));
        Ok(())
    }

    /// Writes the end marker and flushes.
    pub fn finish(mut self) -> Result<W, BundleError> {
        if self.blobs_left.is_none() {
            self.blobs(0)?;
        }
        let ctx = "cannot write the bundle";
        self.w.write_all(&END).map_err(io_ctx(ctx))?;
        self.w.into_inner().map_err(|e| BundleError::Io {
            context: ctx.to_owned(),
            source: e.into_error(),
        })
    }
}

/// A blob read from a bundle, verified, waiting in a temporary file.
#[derive(Debug)]
pub struct StagedBlob {
    /// Its hash (checked).
    pub hash: BlobHash,
    /// Its length.
    pub len: u64,
    /// The temporary file.
    pub path: PathBuf,
}

/// A bundle whose every record and blob has been verified. The temporary files go away when it
/// is dropped.
#[derive(Debug)]
pub struct Verified {
    /// The records, in bundle order.
    pub records: Vec<Record>,
    /// The blobs, without duplicates.
    pub blobs: Vec<StagedBlob>,
    _staging: tempfile::TempDir,
}

struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Counting<R> {
    fn exact(
        &mut self,
        buf: &mut [u8],
        reading: impl FnOnce() -> String,
    ) -> Result<(), BundleError> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(BundleError::Truncated {
                at: self.pos,
                reading: reading(),
            }),
            Err(e) => Err(BundleError::Io {
                context: "cannot read the bundle".into(),
                source: e,
            }),
        }
    }

    fn u32(&mut self, reading: impl FnOnce() -> String) -> Result<u32, BundleError> {
        let mut b = [0u8; 4];
        self.exact(&mut b, reading)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self, reading: impl FnOnce() -> String) -> Result<u64, BundleError> {
        let mut b = [0u8; 8];
        self.exact(&mut b, reading)?;
        Ok(u64::from_le_bytes(b))
    }
}

fn limit(what: impl Into<String>, value: u64, max: u64) -> Result<(), BundleError> {
    if value > max {
        return Err(BundleError::TooLarge {
            what: what.into(),
            value,
            max,
        });
    }
    Ok(())
}

/// Reads and verifies a whole bundle. Blobs are staged in a temporary directory created under
/// `staging_parent` (best on the same file system as the store). Nothing is stored.
pub fn read(input: impl Read, staging_parent: &Path) -> Result<Verified, BundleError> {
    let mut r = Counting {
        inner: BufReader::new(input),
        pos: 0,
    };
    let mut magic = [0u8; 8];
    match r.exact(&mut magic, || "the bundle signature".into()) {
        Err(BundleError::Truncated { .. }) => return Err(BundleError::NotABundle),
        other => other?,
    }
    if magic != MAGIC {
        return Err(BundleError::NotABundle);
    }
    let version = r.u32(|| "the format version".into())?;
    if version != VERSION {
        return Err(BundleError::Version { found: version });
    }

    let count = r.u64(|| "the number of records".into())?;
    limit("record count", count, MAX_RECORDS)?;
    let mut raw: Vec<Vec<u8>> = Vec::with_capacity(count.min(4096) as usize);
    let mut total = 0u64;
    for i in 0..count {
        let len = r.u32(|| format!("the length of record {i} of {count}"))?;
        limit(
            format!("record {i} length"),
            u64::from(len),
            MAX_RECORD_BYTES as u64,
        )?;
        total += u64::from(len);
        limit("total size of records", total, MAX_RECORDS_TOTAL_BYTES)?;
        let mut bytes = vec![0u8; len as usize];
        r.exact(&mut bytes, || format!("record {i} of {count}"))?;
        raw.push(bytes);
    }
    let slices: Vec<&[u8]> = raw.iter().map(Vec::as_slice).collect();
    let mut records = Vec::with_capacity(raw.len());
    for (index, result) in Record::decode_batch(&slices).into_iter().enumerate() {
        records.push(result.map_err(|source| BundleError::BadRecord {
            index: index as u64,
            source,
        })?);
    }
    drop(slices);
    drop(raw);

    let staging = tempfile::Builder::new()
        .prefix(".bundle-import-")
        .tempdir_in(staging_parent)
        .map_err(io_ctx("cannot create a staging directory"))?;
    let count = r.u64(|| "the number of blobs".into())?;
    limit("blob count", count, MAX_BLOBS)?;
    let mut blobs = Vec::with_capacity(count.min(4096) as usize);
    let mut seen = BTreeSet::new();
    let mut buf = vec![0u8; CHUNK];
    for i in 0..count {
        let mut h = [0u8; 32];
        r.exact(&mut h, || format!("the hash of blob {i} of {count}"))?;
        let claimed = BlobHash(h);
        let len = r.u64(|| format!("the length of blob {i} of {count}"))?;
        limit(format!("blob {i} length"), len, MAX_BLOB_BYTES)?;
        let path = staging.path().join(format!("{i}"));
        let mut file = BufWriter::new(File::create(&path).map_err(io_ctx("cannot stage a blob"))?);
        let mut hasher = blake3::Hasher::new();
        let mut left = len;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            r.exact(&mut buf[..n], || {
                format!("the content of blob {i} of {count}")
            })?;
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .map_err(io_ctx("cannot stage a blob"))?;
            left -= n as u64;
        }
        file.flush().map_err(io_ctx("cannot stage a blob"))?;
        drop(file);
        let actual = BlobHash(*hasher.finalize().as_bytes());
        if actual != claimed {
            return Err(BundleError::BlobMismatch {
                index: i,
                claimed,
                actual,
            });
        }
        if seen.insert(claimed) {
            blobs.push(StagedBlob {
                hash: claimed,
                len,
                path,
            });
        }
    }

    let mut end = [0u8; 8];
    let at = r.pos;
    match r.exact(&mut end, || "the end marker".into()) {
        Ok(()) if end == END => {}
        Ok(()) => return Err(BundleError::NoEnd { at }),
        Err(e) => return Err(e),
    }
    let mut probe = [0u8; 1];
    loop {
        match r.inner.read(&mut probe) {
            Ok(0) => break,
            Ok(_) => return Err(BundleError::TrailingBytes { at: r.pos }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_ctx("cannot read the bundle")(e)),
        }
    }
    Ok(Verified {
        records,
        blobs,
        _staging: staging,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use commons_core::{Body, Charter, SecretKey};

    fn charter(key: &SecretKey, name: &str) -> Record {
        Record::sign(
            key,
            7,
            Body::Charter(Charter {
                name: name.into(),
                summary: String::new(),
                license: "MIT".into(),
                maintainers: vec![key.public()],
                threshold: 1,
                fork: None,
            }),
        )
        .unwrap()
    }

    fn sample() -> (Vec<Record>, Vec<Vec<u8>>, Vec<u8>) {
        let key = SecretKey::from_seed([3; 32]);
        let records = vec![charter(&key, "a"), charter(&key, "b")];
        let blobs = vec![b"hello".to_vec(), vec![7u8; 200_000], Vec::new()];
        let mut w = BundleWriter::new(Vec::new(), records.len() as u64).unwrap();
        for r in &records {
            w.record(r).unwrap();
        }
        w.blobs(blobs.len() as u64).unwrap();
        for b in &blobs {
            w.blob(&BlobHash::of(b), b.len() as u64, &mut b.as_slice())
                .unwrap();
        }
        let bytes = w.finish().unwrap();
        (records, blobs, bytes)
    }

    #[test]
    fn round_trip() {
        let (records, blobs, bytes) = sample();
        let dir = tempfile::tempdir().unwrap();
        let v = read(bytes.as_slice(), dir.path()).unwrap();
        assert_eq!(v.records, records);
        assert_eq!(v.blobs.len(), blobs.len());
        for (staged, original) in v.blobs.iter().zip(&blobs) {
            assert_eq!(staged.hash, BlobHash::of(original));
            assert_eq!(&std::fs::read(&staged.path).unwrap(), original);
        }
        let staging = v.blobs[0].path.parent().unwrap().to_owned();
        drop(v);
        assert!(!staging.exists(), "staging directory is removed");
    }

    #[test]
    fn every_truncation_is_refused() {
        let (_, _, bytes) = sample();
        let dir = tempfile::tempdir().unwrap();
        // Every proper prefix must fail (step through the interesting region and the blobs).
        for cut in (0..bytes.len())
            .step_by(997)
            .chain([bytes.len() - 1, 9, 13])
        {
            let err = read(&bytes[..cut], dir.path()).unwrap_err();
            assert!(
                matches!(err, BundleError::Truncated { .. } | BundleError::NotABundle),
                "cut {cut}: {err}"
            );
        }
    }

    #[test]
    fn corruption_is_refused() {
        let (records, _, bytes) = sample();
        let dir = tempfile::tempdir().unwrap();
        // Flip a byte inside the first record's signature.
        let mut bad = bytes.clone();
        let sig_at = 8 + 4 + 8 + 4 + records[0].bytes().len() - 1;
        bad[sig_at] ^= 1;
        assert!(matches!(
            read(bad.as_slice(), dir.path()).unwrap_err(),
            BundleError::BadRecord { index: 0, .. }
        ));
        // Flip a byte of blob content near the end.
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 8 - 100] ^= 1;
        assert!(matches!(
            read(bad.as_slice(), dir.path()).unwrap_err(),
            BundleError::BlobMismatch { index: 1, .. }
        ));
        // Trailing bytes, wrong magic, wrong version, absurd counts.
        let mut bad = bytes.clone();
        bad.push(0);
        assert!(matches!(
            read(bad.as_slice(), dir.path()).unwrap_err(),
            BundleError::TrailingBytes { .. }
        ));
        assert!(matches!(
            read(&b"hello world, not a bundle"[..], dir.path()).unwrap_err(),
            BundleError::NotABundle
        ));
        let mut bad = bytes.clone();
        bad[8] = 9;
        assert!(matches!(
            read(bad.as_slice(), dir.path()).unwrap_err(),
            BundleError::Version { found: 9 }
        ));
        let mut bad = bytes[..12].to_vec();
        bad.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            read(bad.as_slice(), dir.path()).unwrap_err(),
            BundleError::TooLarge { .. }
        ));
    }
}
