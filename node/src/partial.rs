//! The files of a blob download in progress (`blobs/partial/<hex>` and its outboard): created,
//! checked and written group by group against the outboard, and picked up again after an
//! interruption. Blocking file I/O: called on blocking threads by `blobs.rs`.

use std::fs::{File, OpenOptions};
use std::io::BufReader;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use commons_core::BlobHash;
use commons_net::BlobChunk;
use commons_store::outboard::{
    self, CV_BYTES, GROUP_BYTES, MAX_BLOB_BYTES, group_count, group_span, outboard_len,
};

/// A download in progress: the partial files and which groups are verified.
pub(crate) struct Job {
    pub hash: BlobHash,
    pub len: u64,
    pub data: Arc<File>,
    pub outboard: Arc<File>,
    pub present: Bits,
}

/// One bit per chunk group.
#[derive(Debug, Clone)]
pub(crate) struct Bits(Vec<u64>);

impl Bits {
    pub fn new(n: u64) -> Bits {
        Bits(vec![0; n.div_ceil(64) as usize])
    }
    pub fn set(&mut self, i: u64) {
        self.0[(i / 64) as usize] |= 1 << (i % 64);
    }
    pub fn get(&self, i: u64) -> bool {
        self.0[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
}

/// Checks an answer for `range` group by group against the outboard and writes the good groups
/// before the first bad one; returns (good groups, their bytes).
pub(crate) fn verify_and_write(
    hash: &BlobHash,
    len: u64,
    range: (u64, u64),
    chunk: &BlobChunk,
    data: &File,
    outboard: &File,
) -> anyhow::Result<(u64, u64)> {
    if chunk.total_len != len {
        return Ok((0, 0));
    }
    let mut cvs = vec![0u8; (outboard_len(len).min(range.1 * CV_BYTES)) as usize];
    if !cvs.is_empty() {
        outboard.read_exact_at(&mut cvs, range.0 * CV_BYTES)?;
    }
    let good = outboard::verify_range(hash, len, range.0, &chunk.bytes, &cvs).min(range.1);
    let (offset, _) = group_span(len, range.0);
    let end = if good == 0 {
        offset
    } else {
        let (s, l) = group_span(len, range.0 + good - 1);
        s + l
    };
    let bytes = end - offset;
    data.write_all_at(&chunk.bytes[..bytes as usize], offset)?;
    Ok((good, bytes))
}

/// Creates the data file of a new download (as long as the blob, sparse) with its verified
/// outboard at `outboard_path`.
pub(crate) fn start(
    hash: BlobHash,
    len: u64,
    data: &Path,
    outboard_path: &Path,
) -> anyhow::Result<Job> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(data)?;
    file.set_len(len)?;
    Ok(Job {
        hash,
        len,
        data: Arc::new(file),
        outboard: Arc::new(File::open(outboard_path)?),
        present: Bits::new(group_count(len)),
    })
}

/// Picks up an interrupted download: verifies its outboard again and every group of its data
/// file against it. `None` (and the files removed) if there is nothing usable.
pub(crate) fn resume(
    hash: BlobHash,
    data: &Path,
    outboard_path: &Path,
) -> anyhow::Result<Option<(Job, u64)>> {
    let (Ok(meta), true) = (std::fs::metadata(data), outboard_path.exists()) else {
        discard(&[data.to_owned(), outboard_path.to_owned()]);
        return Ok(None);
    };
    let len = meta.len();
    let outboard_file = File::open(outboard_path)?;
    if len > MAX_BLOB_BYTES
        || !outboard::verify_outboard(&hash, len, BufReader::new(&outboard_file))?
    {
        tracing::warn!(target: "commons_node::blobs", blob = %hash, "partial download does not verify; starting again");
        discard(&[data.to_owned(), outboard_path.to_owned()]);
        return Ok(None);
    }
    let file = OpenOptions::new().read(true).write(true).open(data)?;
    let groups = group_count(len);
    let mut present = Bits::new(groups);
    let mut resumed = 0u64;
    let mut buf = vec![0u8; GROUP_BYTES as usize];
    let mut cv = [0u8; CV_BYTES as usize];
    for g in 0..groups {
        let (offset, size) = group_span(len, g);
        let bytes = &mut buf[..size as usize];
        file.read_exact_at(bytes, offset)?;
        let cvs: &[u8] = if groups > 1 {
            outboard_file.read_exact_at(&mut cv, g * CV_BYTES)?;
            &cv
        } else {
            &[]
        };
        if size > 0 && outboard::verify_range(&hash, len, g, bytes, cvs) == 1 {
            present.set(g);
            resumed += size;
        }
    }
    Ok(Some((
        Job {
            hash,
            len,
            data: Arc::new(file),
            outboard: Arc::new(outboard_file),
            present,
        },
        resumed,
    )))
}

pub(crate) fn discard(paths: &[PathBuf]) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}
