//! BLAKE3 verified streaming: a blob's **outboard** and the checks that let a receiver verify a
//! blob one 16 KiB chunk group at a time against its plain BLAKE3 hash (the blob id, what `b3sum`
//! prints).
//!
//! BLAKE3 is a binary Merkle tree over 1 KiB chunks. A **chunk group** is 16 chunks
//! ([`GROUP_BYTES`] = 16 KiB) starting at a multiple of 16 KiB: an aligned, complete subtree of
//! that tree (the last group of a blob may be shorter, which BLAKE3 allows for the subtree on the
//! right edge). Its **chaining value** (CV) is what BLAKE3 computes for that subtree
//! (`blake3::hazmat`), and the tree above the groups is the same left-balanced binary tree over
//! groups as BLAKE3's over chunks. So:
//!
//! - the **outboard** of a blob of more than one group is the CVs of its groups, in order,
//!   32 bytes each ([`outboard_len`]: 2 MiB for 1 GiB, 0.2 % of the data); a blob of one group
//!   (at most 16 KiB, the empty blob included) has an empty outboard and is checked whole;
//! - an outboard is verified against the blob's hash by merging its CVs up the tree
//!   ([`RootBuilder`], memory O(log n)) and comparing the root;
//! - a group's bytes are verified against a verified outboard by recomputing the group's CV
//!   ([`verify_range`]). A peer serving bad bytes is caught in the first bad group, after at most
//!   16 KiB of it.
//!
//! Unlike `bao`'s pre-order encoding, the outboard carries leaves only (the parents are
//! recomputed when it is checked), so it is trivial to cut into pieces, to serve from a file
//! and to index: the CV of group `i` is at byte `32 × i`.
//!
//! Everything here is pure computation over byte slices and readers; the files are in
//! `blobs.rs`.

use std::io::{self, Read, Write};

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};
use commons_core::BlobHash;

/// Bytes per chunk group: 16 BLAKE3 chunks. Corrupt data is caught within this many bytes, and
/// the outboard costs 32 bytes per group.
pub const GROUP_BYTES: u64 = 16 * 1024;
/// Bytes per chaining value in the outboard.
pub const CV_BYTES: u64 = 32;
/// Largest blob fetched from peers. An outboard must be fetched whole before it can be checked,
/// so this bounds what a lying peer can make a node write before it is caught
/// ([`outboard_len`] of it: 128 MiB).
pub const MAX_BLOB_BYTES: u64 = 64 * 1024 * 1024 * 1024;

/// Number of chunk groups of a blob of `len` bytes (the empty blob is one empty group).
pub fn group_count(len: u64) -> u64 {
    len.div_ceil(GROUP_BYTES).max(1)
}

/// Length of the outboard of a blob of `len` bytes: 32 bytes per group when there is more than
/// one group, else 0.
pub fn outboard_len(len: u64) -> u64 {
    match group_count(len) {
        1 => 0,
        n => n * CV_BYTES,
    }
}

/// Byte offset and length of group `index` of a blob of `len` bytes.
pub fn group_span(len: u64, index: u64) -> (u64, u64) {
    let start = index.saturating_mul(GROUP_BYTES).min(len);
    let end = start.saturating_add(GROUP_BYTES).min(len);
    (start, end - start)
}

/// The chaining value of group `index` whose bytes are `data` (non-empty, at most
/// [`GROUP_BYTES`]), as a non-root subtree.
pub fn group_cv(index: u64, data: &[u8]) -> ChainingValue {
    debug_assert!(!data.is_empty() && data.len() as u64 <= GROUP_BYTES);
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(index * GROUP_BYTES);
    hasher.update(data);
    hasher.finalize_non_root()
}

/// Merges group chaining values, left to right, into the root hash, keeping one CV per tree
/// level (as BLAKE3's own incremental hasher does).
#[derive(Debug, Default)]
pub struct RootBuilder {
    /// Roots of the complete subtrees to the left, largest first.
    stack: Vec<ChainingValue>,
    /// The latest CV, not merged yet: only the last group's parents may carry the root flag.
    last: Option<ChainingValue>,
    /// Groups merged into `stack`.
    merged: u64,
}

impl RootBuilder {
    /// Adds the CV of the next group.
    pub fn push(&mut self, cv: ChainingValue) {
        if let Some(mut prev) = self.last.replace(cv) {
            // `prev` was not the last group: merge every subtree it completes.
            self.merged += 1;
            let mut total = self.merged;
            while total & 1 == 0 {
                let Some(left) = self.stack.pop() else { break };
                prev = merge_subtrees_non_root(&left, &prev, Mode::Hash);
                total >>= 1;
            }
            self.stack.push(prev);
        }
    }

    /// Groups pushed so far.
    pub fn groups(&self) -> u64 {
        self.merged + u64::from(self.last.is_some())
    }

    /// The root hash of the groups pushed, if there were at least two (one group's root is the
    /// plain hash of its bytes, which a CV cannot give).
    pub fn finish(self) -> Option<BlobHash> {
        let mut cv = self.last?;
        let (first, rest) = self.stack.split_first()?;
        for left in rest.iter().rev() {
            cv = merge_subtrees_non_root(left, &cv, Mode::Hash);
        }
        Some(BlobHash(
            *merge_subtrees_root(first, &cv, Mode::Hash).as_bytes(),
        ))
    }
}

/// Hashes a stream and writes its outboard as it goes: fed arbitrary slices, it cuts them into
/// groups, holding at most one group ([`GROUP_BYTES`]) in memory.
#[derive(Debug)]
pub struct OutboardWriter<W: Write> {
    out: W,
    group: Vec<u8>,
    index: u64,
    tree: RootBuilder,
    len: u64,
}

impl<W: Write> OutboardWriter<W> {
    /// Writes the outboard to `out`.
    pub fn new(out: W) -> Self {
        OutboardWriter {
            out,
            group: Vec::with_capacity(GROUP_BYTES as usize),
            index: 0,
            tree: RootBuilder::default(),
            len: 0,
        }
    }

    /// Feeds the next bytes of the blob.
    pub fn update(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.len += data.len() as u64;
        while !data.is_empty() {
            if self.group.len() as u64 == GROUP_BYTES {
                // More bytes follow, so the full group is not the last one.
                self.flush_group()?;
            }
            let room = GROUP_BYTES as usize - self.group.len();
            let (now, later) = data.split_at(room.min(data.len()));
            self.group.extend_from_slice(now);
            data = later;
        }
        Ok(())
    }

    fn flush_group(&mut self) -> io::Result<()> {
        let cv = group_cv(self.index, &self.group);
        self.out.write_all(&cv)?;
        self.tree.push(cv);
        self.index += 1;
        self.group.clear();
        Ok(())
    }

    /// The blob's hash and length; the outboard has been written to the writer, which is
    /// returned.
    pub fn finish(mut self) -> io::Result<(BlobHash, u64, W)> {
        if self.index == 0 {
            // One group: no outboard, the root is the plain hash of the bytes.
            let hash = BlobHash(*blake3::hash(&self.group).as_bytes());
            return Ok((hash, self.len, self.out));
        }
        self.flush_group()?;
        let hash = self
            .tree
            .finish()
            .ok_or_else(|| io::Error::other("outboard of fewer than two groups"))?;
        self.out.flush()?;
        Ok((hash, self.len, self.out))
    }
}

/// Reads a whole blob from `reader` and writes its outboard to `out`; returns its hash and
/// length.
pub fn compute_outboard(mut reader: impl Read, out: impl Write) -> io::Result<(BlobHash, u64)> {
    let mut writer = OutboardWriter::new(out);
    let mut buf = vec![0u8; 4 * GROUP_BYTES as usize];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        writer.update(&buf[..n])?;
    }
    let (hash, len, _) = writer.finish()?;
    Ok((hash, len))
}

/// Whether `outboard` (read to its end) is the outboard of the blob `hash` of `len` bytes.
/// Memory is one CV per tree level, whatever the size.
pub fn verify_outboard(hash: &BlobHash, len: u64, mut outboard: impl Read) -> io::Result<bool> {
    let groups = group_count(len);
    let mut tree = RootBuilder::default();
    let mut cv = [0u8; CV_BYTES as usize];
    if groups > 1 {
        for _ in 0..groups {
            match outboard.read_exact(&mut cv) {
                Ok(()) => tree.push(cv),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }
    // Nothing may follow the last CV.
    let mut extra = [0u8; 1];
    loop {
        match outboard.read(&mut extra) {
            Ok(0) => break,
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(groups == 1 || tree.finish().as_ref() == Some(hash))
}

/// Checks bytes starting at group `first` of the blob `hash` of `len` bytes, group by group.
/// `cvs` holds the CVs of those groups from a verified outboard (empty for a one-group blob,
/// which is checked against `hash` itself). Returns how many whole groups at the start of `data`
/// are good: all of them when it equals the number of groups in `data`, else the index (from
/// `first`) of the first bad group. The last group of `data` counts only if it is complete
/// (16 KiB, or the blob's last group).
pub fn verify_range(hash: &BlobHash, len: u64, first: u64, data: &[u8], cvs: &[u8]) -> u64 {
    let groups = group_count(len);
    if groups == 1 {
        let good =
            first == 0 && data.len() as u64 == len && blake3::hash(data).as_bytes() == &hash.0;
        return u64::from(good);
    }
    let mut good = 0u64;
    let mut rest = data;
    for (i, expected) in cvs.chunks_exact(CV_BYTES as usize).enumerate() {
        let index = first + i as u64;
        let (_, size) = group_span(len, index);
        if size == 0 || (rest.len() as u64) < size {
            break;
        }
        let (bytes, tail) = rest.split_at(size as usize);
        if group_cv(index, bytes).as_slice() != expected {
            break;
        }
        good += 1;
        rest = tail;
    }
    good
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(len: usize, seed: u8) -> Vec<u8> {
        let mut state = u64::from(seed) + 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    fn outboard_of(data: &[u8]) -> (BlobHash, Vec<u8>) {
        let mut out = Vec::new();
        let (hash, len) = compute_outboard(data, &mut out).unwrap();
        assert_eq!(len, data.len() as u64);
        (hash, out)
    }

    /// Lengths around every boundary that matters: chunks, groups, powers of two of groups.
    const LENGTHS: [usize; 14] = [
        0,
        1,
        1024,
        1025,
        16 * 1024 - 1,
        16 * 1024,
        16 * 1024 + 1,
        32 * 1024,
        48 * 1024 + 7,
        64 * 1024,
        64 * 1024 + 1,
        5 * 16 * 1024 + 100,
        9 * 16 * 1024,
        200 * 1024 + 3,
    ];

    #[test]
    fn the_root_is_the_plain_blake3_hash_and_the_outboard_verifies() {
        for len in LENGTHS {
            let data = blob(len, 7);
            let (hash, ob) = outboard_of(&data);
            assert_eq!(hash.0, *blake3::hash(&data).as_bytes(), "len {len}");
            assert_eq!(ob.len() as u64, outboard_len(len as u64), "len {len}");
            assert!(verify_outboard(&hash, len as u64, ob.as_slice()).unwrap());
            // Outboard round trip: every group verifies against it.
            let n = verify_range(&hash, len as u64, 0, &data, &ob);
            assert_eq!(n, group_count(len as u64), "len {len}");
        }
    }

    #[test]
    fn a_tampered_outboard_or_wrong_length_is_refused() {
        let data = blob(5 * 16 * 1024 + 100, 3);
        let (hash, mut ob) = outboard_of(&data);
        let len = data.len() as u64;
        assert!(!verify_outboard(&hash, len + GROUP_BYTES, ob.as_slice()).unwrap());
        assert!(!verify_outboard(&hash, len, &ob[..ob.len() - 1]).unwrap());
        let mut longer = ob.clone();
        longer.push(0);
        assert!(!verify_outboard(&hash, len, longer.as_slice()).unwrap());
        ob[40] ^= 1;
        assert!(!verify_outboard(&hash, len, ob.as_slice()).unwrap());
    }

    #[test]
    fn a_flipped_byte_is_caught_in_its_group() {
        let data = blob(9 * 16 * 1024 + 500, 9);
        let len = data.len() as u64;
        let (hash, ob) = outboard_of(&data);
        for at in [
            0usize,
            16 * 1024 - 1,
            16 * 1024,
            3 * 16 * 1024 + 77,
            data.len() - 1,
        ] {
            let mut bad = data.clone();
            bad[at] ^= 0x80;
            let group = at as u64 / GROUP_BYTES;
            assert_eq!(verify_range(&hash, len, 0, &bad, &ob), group, "byte {at}");
        }
    }

    #[test]
    fn ranges_verify_from_any_group() {
        let data = blob(9 * 16 * 1024 + 500, 11);
        let len = data.len() as u64;
        let (hash, ob) = outboard_of(&data);
        let g = GROUP_BYTES as usize;
        let cv = CV_BYTES as usize;
        // Groups 2..5 alone.
        assert_eq!(
            verify_range(&hash, len, 2, &data[2 * g..5 * g], &ob[2 * cv..5 * cv]),
            3
        );
        // The last, short group.
        assert_eq!(
            verify_range(&hash, len, 9, &data[9 * g..], &ob[9 * cv..]),
            1
        );
        // A truncated group does not count; CVs of another position do not verify.
        assert_eq!(
            verify_range(&hash, len, 2, &data[2 * g..3 * g - 1], &ob[2 * cv..3 * cv]),
            0
        );
        assert_eq!(
            verify_range(&hash, len, 3, &data[2 * g..3 * g], &ob[2 * cv..3 * cv]),
            0
        );
        // A one-group blob is checked whole.
        let small = blob(100, 1);
        let h = BlobHash(*blake3::hash(&small).as_bytes());
        assert_eq!(verify_range(&h, 100, 0, &small, &[]), 1);
        assert_eq!(verify_range(&h, 100, 0, &small[..99], &[]), 0);
    }
}
