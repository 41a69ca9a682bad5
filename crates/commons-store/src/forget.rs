//! Forgetting a family of commons the user no longer follows: its records, the state derived
//! from them, its entries in the download list, and the loose blobs no other record names.
//!
//! **What goes.** The records of the family's lineages (`lineage_records`: each charter,
//! the patches proposed to them, the validations naming them). Patches of other families that
//! the family's patches build on stay: they are the other family's. A patch of another family
//! that builds on a forgotten patch becomes incomplete, as if that parent had never arrived.
//!
//! **How.** One transaction removes the records and the family's `wanted_blobs` entries and
//! marks a re-index as started (`meta/reindex` = moving); the ordinary re-index then rebuilds
//! every derived tree from the records that remain. So the result is by construction the store
//! that never held the family, and a kill at any point leaves a store that finishes the job when
//! it next opens (the re-index resumes; the records are already gone). The cost is that of a
//! re-index, O(records in the store), on the storage thread: other commands wait meanwhile.
//!
//! **Blobs.** Then, still on the storage thread (so no put can slip in and start needing a blob
//! between the check and the removal), every blob the forgotten patches named is looked up in
//! the patches that remain; a loose blob that none of them names is removed with its outboard.
//! The same pass sweeps every loose blob that no remaining record names and that nothing wrote
//! for [`SWEEP_GRACE`] (left by a forget killed before its blob step, or by a download whose
//! record went): so forgetting, or forgetting again, leaves no unreferenced loose blob behind.
//! Small blobs packed together stay until a pack is rewritten (not yet done). A checkout of the
//! forgotten commons running meanwhile may fail on a removed blob; one of another commons never
//! does, since the blobs it needs are kept.

use std::collections::BTreeSet;

use commons_core::{BlobHash, Kind, LineageId, RecordId};

use crate::StoreError;
use crate::blobs::BlobStore;
use crate::keys::{self, T};
use crate::overlay::{Overlay, Trees, io};
use crate::repair;
use crate::state::{Counters, corrupt};

/// How old a loose blob that no record names must be before a sweep removes it: a proposal
/// writes its blobs a moment before its record is stored, and a checkout or a download may hold
/// one meanwhile; an hour is far beyond either.
pub const SWEEP_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// What forgetting a family removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Forgotten {
    /// The family's lineages that were dropped.
    pub lineages: Vec<LineageId>,
    /// Records removed.
    pub records: u64,
    /// Loose blobs removed (no remaining record names them): the family's, and older ones
    /// nothing named (see [`SWEEP_GRACE`]).
    pub blobs: u64,
    /// Bytes those blobs (and their outboards) held.
    pub blob_bytes: u64,
    /// Blobs only the family named that are packed with others, kept until a repack.
    pub packed_kept: u64,
}

/// Forgets `family` (module documentation). Runs on the storage thread.
pub fn forget_family(
    trees: &Trees,
    counters: &Counters,
    blobs: &BlobStore,
    family: &LineageId,
) -> Result<Forgotten, StoreError> {
    let mut out = Forgotten::default();
    let mut lineages: BTreeSet<LineageId> = BTreeSet::new();
    for k in trees.tree(T::Family).scan_prefix(family.as_bytes()).keys() {
        let k = k.map_err(io)?;
        lineages.insert(LineageId(
            keys::id_at(&k, 32).ok_or_else(|| corrupt(T::Family, "short key"))?,
        ));
    }
    lineages.insert(*family);
    // The records, and the blobs the family's patches name.
    let mut ids: BTreeSet<RecordId> = BTreeSet::new();
    let mut named: BTreeSet<BlobHash> = BTreeSet::new();
    for l in &lineages {
        for entry in trees.tree(T::LineageRecords).scan_prefix(l.as_bytes()) {
            let (k, v) = entry.map_err(io)?;
            let id = RecordId(
                keys::id_at(&k, 32).ok_or_else(|| corrupt(T::LineageRecords, "short key"))?,
            );
            if keys::lineage_record_kind(&v) == Some(Kind::Patch as u8) {
                named.extend(patch_blobs(trees, &id)?);
            }
            ids.insert(id);
        }
    }
    if !ids.is_empty() {
        let mut overlay = Overlay::new(trees);
        for id in &ids {
            overlay.remove(T::Records, id.as_bytes().to_vec());
        }
        for entry in trees.tree(T::Wanted).iter() {
            let (k, v) = entry.map_err(io)?;
            if keys::id_at(&v, 0).is_some_and(|l| lineages.contains(&LineageId(l))) {
                overlay.remove(T::Wanted, k.to_vec());
            }
        }
        overlay.insert(
            T::Meta,
            keys::META_REINDEX_KEY.to_vec(),
            vec![keys::REINDEX_MOVING],
        );
        overlay.commit()?;
        trees.flush().map_err(io)?;
        tracing::warn!(target: "commons_store", %family, lineages = lineages.len(), records = ids.len(), "family forgotten; re-indexing what remains");
        repair::reindex(trees, counters)?;
        out.lineages = lineages.into_iter().collect();
        out.records = ids.len() as u64;
    }

    // Blobs: the family's, and any loose one older than `SWEEP_GRACE` (left by a forget or a
    // download cut short), go if no remaining record names them and they are loose.
    let mut candidates = named;
    candidates.extend(
        blobs
            .loose_older_than(SWEEP_GRACE)
            .map_err(|e| StoreError::Io(format!("list blobs: {e}")))?,
    );
    if !candidates.is_empty() {
        for entry in trees.tree(T::Records).iter() {
            let (_, bytes) = entry.map_err(io)?;
            for h in blobs_named(&bytes) {
                candidates.remove(&h);
            }
            if candidates.is_empty() {
                break;
            }
        }
    }
    for h in &candidates {
        match blobs
            .remove_loose(h)
            .map_err(|e| StoreError::Io(format!("remove blob {h}: {e}")))?
        {
            Some(bytes) => {
                out.blobs += 1;
                out.blob_bytes += bytes;
            }
            None if blobs.contains(h) => out.packed_kept += 1,
            None => {}
        }
    }
    Ok(out)
}

/// The blobs a stored patch names (before and after each change); none for another kind of
/// record, or one that is absent or does not decode (a re-index sets those aside).
fn patch_blobs(trees: &Trees, id: &RecordId) -> Result<Vec<BlobHash>, StoreError> {
    let bytes = trees.tree(T::Records).get(id.as_bytes()).map_err(io)?;
    Ok(bytes.map(|b| blobs_named(&b)).unwrap_or_default())
}

/// The blobs the stored record `bytes` names, if it is a patch.
fn blobs_named(bytes: &[u8]) -> Vec<BlobHash> {
    let Ok(record) = commons_core::Record::decode_stored(bytes) else {
        return vec![];
    };
    record
        .as_patch()
        .map(|p| {
            p.changes
                .iter()
                .flat_map(|c| [c.before, c.after])
                .flatten()
                .collect()
        })
        .unwrap_or_default()
}
