//! Blobs the node still has to download: those that stored patches create and that were not in
//! the blob store when the patches were stored.
//!
//! A patch is stored as soon as it verifies, without waiting for its content (a peer that
//! withholds content must not hold up the records of everyone else). The node writes the blobs
//! it lacks here *before* it stores the patches that name them, so that a crash in between
//! leaves at worst a wanted blob that no record names (harmless: it is fetched or given up),
//! never a patch whose content is forgotten. The downloader reads the list in pages, and removes
//! a hash once its blob is durable. The list is the node's, not derived from the records: a
//! re-index keeps it.

use commons_core::{BlobHash, LineageId};

use crate::StoreError;
use crate::keys::T;
use crate::overlay::{Trees, io};

/// Adds `(blob, lineage)` pairs (one already listed keeps its first lineage). Not flushed here:
/// sled's log is one sequence for the whole database, so the flush of the put that follows makes
/// these writes durable first (a crash before it loses both, which is harmless).
pub fn want(trees: &Trees, wanted: &[(BlobHash, LineageId)]) -> Result<(), StoreError> {
    let tree = trees.tree(T::Wanted);
    let mut batch = sled::Batch::default();
    for (hash, lineage) in wanted {
        if !tree.contains_key(hash.as_bytes()).map_err(io)? {
            batch.insert(hash.as_bytes().as_slice(), lineage.as_bytes().as_slice());
        }
    }
    tree.apply_batch(batch).map_err(io)?;
    Ok(())
}

/// Removes hashes from the list (their blobs are here now). Not flushed: a removal lost in a
/// crash is redone when the downloader next reads the list and finds the blob present.
pub fn unwant(trees: &Trees, done: &[BlobHash]) -> Result<(), StoreError> {
    let tree = trees.tree(T::Wanted);
    let mut batch = sled::Batch::default();
    for hash in done {
        batch.remove(hash.as_bytes().as_slice());
    }
    tree.apply_batch(batch).map_err(io)?;
    Ok(())
}

/// Up to `limit` wanted blobs in hash order, after `after` when given.
pub fn list(
    trees: &Trees,
    after: Option<BlobHash>,
    limit: usize,
) -> Result<Vec<(BlobHash, LineageId)>, StoreError> {
    let tree = trees.tree(T::Wanted);
    let range = match after {
        Some(a) => tree.range((
            std::ops::Bound::Excluded(a.as_bytes().to_vec()),
            std::ops::Bound::Unbounded,
        )),
        None => tree.iter(),
    };
    let mut out = Vec::new();
    for entry in range.take(limit) {
        let (k, v) = entry.map_err(io)?;
        let (Ok(hash), Ok(lineage)) = (<[u8; 32]>::try_from(&*k), <[u8; 32]>::try_from(&*v)) else {
            // Not the layout written above: dropped rather than failing every page.
            tree.remove(k).map_err(io)?;
            continue;
        };
        out.push((BlobHash(hash), LineageId(lineage)));
    }
    Ok(out)
}
