//! Records the store cannot read back: set aside, and everything derived from the records
//! computed again without them, so that one damaged record never makes a whole home unusable.
//!
//! A stored record can stop decoding: a bit rots on disk, or an older build stored something
//! this one refuses. Reads that meet one note it ([`Ctx::damaged`]); the storage thread then runs
//! [`reindex`] before it answers, and asks again ([`run_repairing`]). A re-index moves every
//! record aside (to the `reindex` tree), clears the derived trees ([`T::is_derived`]), and ingests
//! the records again in chunks through the ordinary ingest path; the records that do not decode
//! go to the `damaged` tree with the reason, logged once, and are never read as records again.
//! The node then simply lacks them, so catch-up fetches a good copy from a peer if one has it.
//!
//! Every step is one transaction that moves records between trees, so a record is always in
//! `records` or in `reindex` (or in `damaged`), never lost; the phase is kept in `meta` under
//! [`keys::META_REINDEX_KEY`], and a re-index killed midway resumes when the store opens.
//! The state computed is the same as for the records delivered in any order (invariant 5), so
//! the order of the chunks does not matter.

use std::sync::atomic::Ordering;
use std::time::Instant;

use commons_core::{Record, RecordId};

use crate::StoreError;
use crate::keys::{self, META_REINDEX_KEY, REINDEX_INGESTING, REINDEX_MOVING, T};
use crate::overlay::{Overlay, Trees, io};
use crate::state::{Counters, Ctx};

/// Records moved, or ingested again, per transaction of a re-index: bounds the memory of one
/// step (the overlay holds one chunk's writes) while keeping the commits few.
pub const REINDEX_CHUNK: usize = 2_000;
/// Bytes of records per step, whichever of the two bounds comes first (2 000 patches of 128 KiB
/// would otherwise be 256 MiB).
pub const REINDEX_CHUNK_BYTES: usize = 16 << 20;

/// Records per step: [`REINDEX_CHUNK`], or fewer if `COMMONS_TEST_REINDEX_CHUNK` says so (tests
/// use it to make many steps, and many points to kill a re-index at, out of few records).
fn chunk() -> usize {
    std::env::var("COMMONS_TEST_REINDEX_CHUNK")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(REINDEX_CHUNK, |n| n.clamp(1, REINDEX_CHUNK))
}

/// Longest reason kept for a damaged record, in bytes.
const MAX_REASON: usize = 1024;

/// A stored record that does not decode, as the `damaged` tree keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DamagedRecord {
    /// The id it was stored under.
    pub id: RecordId,
    /// Why it did not decode.
    pub reason: String,
    /// Its length in bytes.
    pub len: usize,
    /// Whether a good copy has been stored since (fetched again from a peer or a bundle).
    pub refetched: bool,
}

fn damaged_value(reason: &str, bytes: &[u8]) -> Vec<u8> {
    let mut cut = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let reason = &reason.as_bytes()[..cut];
    let mut v = Vec::with_capacity(2 + reason.len() + bytes.len());
    v.extend_from_slice(&(reason.len() as u16).to_be_bytes());
    v.extend_from_slice(reason);
    v.extend_from_slice(bytes);
    v
}

fn parse_damaged(key: &[u8], value: &[u8]) -> Option<(RecordId, String, usize)> {
    let id = RecordId(keys::id_at(key, 0)?);
    let n = usize::from(u16::from_be_bytes(value.get(..2)?.try_into().ok()?));
    let reason = String::from_utf8_lossy(value.get(2..2 + n)?).into_owned();
    Some((id, reason, value.len() - 2 - n))
}

/// The records set aside as damaged, at most `limit` of them, and how many there are.
pub fn damaged(trees: &Trees, limit: usize) -> Result<(u64, Vec<DamagedRecord>), StoreError> {
    let tree = trees.tree(T::Damaged);
    let mut out = Vec::new();
    for entry in tree.iter().take(limit) {
        let (k, v) = entry.map_err(io)?;
        if let Some((id, reason, len)) = parse_damaged(&k, &v) {
            let refetched = trees
                .tree(T::Records)
                .contains_key(id.as_bytes())
                .map_err(io)?;
            out.push(DamagedRecord {
                id,
                reason,
                len,
                refetched,
            });
        }
    }
    Ok((tree.len() as u64, out))
}

fn set_phase(trees: &Trees, phase: Option<u8>) -> Result<(), StoreError> {
    let meta = trees.tree(T::Meta);
    match phase {
        Some(p) => meta.insert(META_REINDEX_KEY, &[p]).map_err(io)?,
        None => meta.remove(META_REINDEX_KEY).map_err(io)?,
    };
    trees.flush().map_err(io)?;
    Ok(())
}

/// The phase of an unfinished re-index, if one was interrupted.
pub fn pending(trees: &Trees) -> Result<Option<u8>, StoreError> {
    Ok(trees
        .tree(T::Meta)
        .get(META_REINDEX_KEY)
        .map_err(io)?
        .and_then(|v| v.first().copied()))
}

fn store_count(counters: &Counters, overlay: &mut Overlay<'_>, count: u64) {
    overlay.insert(
        T::Meta,
        keys::META_RECORD_COUNT_KEY.to_vec(),
        count.to_be_bytes().to_vec(),
    );
    counters.stored_records.store(count, Ordering::Relaxed);
}

/// Where a record waits in `reindex`: kind ‖ generation (u64 BE) ‖ id. Phase 2 takes the records
/// in key order, so charters come back first, then patches, then validations, and patches and
/// validations in history order (the generation of the patch, from the `generations` tree that
/// is still intact during phase 1; unknown generations last): accepting patches in history order
/// appends to each log instead of undoing and replaying what follows.
fn staging_key(trees: &Trees, id: &[u8], bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    // A record's second byte is its kind; bytes too short for one sort last, and fail to decode
    // in phase 2.
    let kind = bytes.get(1).copied().unwrap_or(u8::MAX);
    let judged = match Record::decode_stored(bytes) {
        Ok(r) => match r.body() {
            commons_core::Body::Patch(_) => Some(r.id()),
            commons_core::Body::Validation(v) => Some(v.patch),
            commons_core::Body::Charter(_) => None,
        },
        Err(_) => None,
    };
    let generation = match judged {
        Some(p) => trees
            .tree(T::Generations)
            .get(p.as_bytes())
            .map_err(io)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(u64::MAX, u64::from_be_bytes),
        None => 0,
    };
    let mut key = Vec::with_capacity(STAGING_ID_AT + id.len());
    key.push(kind);
    key.extend_from_slice(&generation.to_be_bytes());
    key.extend_from_slice(id);
    Ok(key)
}

/// Offset of the record id in a `reindex` key.
const STAGING_ID_AT: usize = 1 + 8;

/// Phase 1: every record moves from `records` to `reindex` (see [`staging_key`]).
fn move_aside(trees: &Trees) -> Result<(), StoreError> {
    let chunk = chunk();
    loop {
        let mut overlay = Overlay::new(trees);
        let (mut n, mut bytes) = (0, 0);
        for entry in trees.tree(T::Records).iter() {
            if n == chunk || bytes >= REINDEX_CHUNK_BYTES {
                break;
            }
            let (k, v) = entry.map_err(io)?;
            bytes += v.len();
            overlay.insert(T::Reindex, staging_key(trees, &k, &v)?, v.to_vec());
            overlay.remove(T::Records, k.to_vec());
            n += 1;
        }
        if n == 0 {
            return Ok(());
        }
        overlay.commit()?;
    }
}

/// Phase 2: the records come back from `reindex` a chunk at a time, through the ordinary ingest;
/// those that do not decode go to `damaged`.
fn ingest_again(trees: &Trees, counters: &Counters) -> Result<(u64, u64), StoreError> {
    let (mut stored, mut set_aside) = (0u64, 0u64);
    let chunk = chunk();
    loop {
        let (mut staged, mut records): (Vec<Vec<u8>>, Vec<Record>) = (Vec::new(), Vec::new());
        let mut bad: Vec<(Vec<u8>, RecordId, String, Vec<u8>)> = Vec::new();
        let mut bytes = 0;
        for entry in trees.tree(T::Reindex).iter() {
            if staged.len() + bad.len() == chunk || bytes >= REINDEX_CHUNK_BYTES {
                break;
            }
            let (k, v) = entry.map_err(io)?;
            bytes += v.len();
            let Some(id) = keys::id_at(&k, STAGING_ID_AT).map(RecordId) else {
                bad.push((k.to_vec(), RecordId([0; 32]), "bad key".into(), v.to_vec()));
                continue;
            };
            match Record::decode_stored(&v) {
                Ok(r) if r.id() == id => {
                    staged.push(k.to_vec());
                    records.push(r);
                }
                Ok(r) => bad.push((
                    k.to_vec(),
                    id,
                    format!("the bytes stored under it have id {}", r.id()),
                    v.to_vec(),
                )),
                Err(e) => bad.push((k.to_vec(), id, e.to_string(), v.to_vec())),
            }
        }
        if staged.is_empty() && bad.is_empty() {
            return Ok((stored, set_aside));
        }
        let mut ctx = Ctx::new(Overlay::new(trees), counters);
        let ids = ctx.ingest(&records)?;
        if let Some((id, reason)) = ctx.damaged().into_iter().next() {
            // A record this pass stored a moment ago no longer decodes: the disk is failing.
            return Err(StoreError::CorruptRecord { id, reason });
        }
        let mut overlay = ctx.finish()?;
        for k in staged {
            overlay.remove(T::Reindex, k);
        }
        for (k, id, reason, bytes) in &bad {
            tracing::warn!(target: "commons_store", %id, %reason, "a stored record does not decode: set aside (it will be fetched again if a peer has it)");
            overlay.remove(T::Reindex, k.clone());
            overlay.insert(
                T::Damaged,
                id.as_bytes().to_vec(),
                damaged_value(reason, bytes),
            );
        }
        let count = counters.stored_records.load(Ordering::Relaxed) + ids.len() as u64;
        store_count(counters, &mut overlay, count);
        overlay.commit()?;
        trees.flush().map_err(io)?;
        stored += ids.len() as u64;
        set_aside += bad.len() as u64;
        counters
            .set_aside
            .fetch_add(bad.len() as u64, Ordering::Relaxed);
    }
}

/// Rebuilds every derived tree from the records, setting aside those that do not decode. Resumes
/// an interrupted re-index from its phase. Runs on the storage thread; other commands wait.
pub fn reindex(trees: &Trees, counters: &Counters) -> Result<(), StoreError> {
    let started = Instant::now();
    let phase = pending(trees)?;
    tracing::warn!(target: "commons_store", resuming = phase.is_some(), records = trees.tree(T::Records).len(), "re-indexing the store");
    if phase != Some(REINDEX_INGESTING) {
        set_phase(trees, Some(REINDEX_MOVING))?;
        move_aside(trees)?;
        for t in T::ALL.into_iter().filter(|t| t.is_derived()) {
            trees.tree(t).clear().map_err(io)?;
        }
        let mut overlay = Overlay::new(trees);
        store_count(counters, &mut overlay, 0);
        overlay.insert(T::Meta, META_REINDEX_KEY.to_vec(), vec![REINDEX_INGESTING]);
        overlay.commit()?;
        trees.flush().map_err(io)?;
    }
    let (stored, set_aside) = ingest_again(trees, counters)?;
    set_phase(trees, None)?;
    counters.epoch.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(target: "commons_store", stored, set_aside, ms = started.elapsed().as_millis() as u64, "store re-indexed");
    Ok(())
}

/// Runs the query `f` against the store. If it came upon stored records that do not decode, or
/// upon a derived entry of the wrong layout (`CorruptIndex`), the store is re-indexed (without
/// the damaged records) and `f` runs once more on the repaired store: the caller sees the
/// answer of a store that simply lacks the damaged records. (Puts have their own retry, in
/// `db.rs`, since a put that succeeded must not run twice.)
pub fn run_repairing<R>(
    trees: &Trees,
    counters: &Counters,
    f: &dyn Fn(&mut Ctx<'_>) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    {
        let mut ctx = Ctx::new(Overlay::new(trees), counters);
        let result = f(&mut ctx);
        let damaged = ctx.damaged();
        // A derived entry of the wrong layout is repaired like a damaged record: the indexes
        // are rebuilt from the records, which are the truth.
        let corrupt_index = matches!(result, Err(StoreError::CorruptIndex { .. }));
        if damaged.is_empty() && !corrupt_index {
            return result;
        }
        match corrupt_index {
            true => {
                tracing::warn!(target: "commons_store", error = ?result.as_ref().err(), "a read came upon a corrupt index; re-indexing")
            }
            false => {
                tracing::debug!(target: "commons_store", records = damaged.len(), "a read came upon damaged records")
            }
        }
    }
    if let Err(e) = reindex(trees, counters) {
        tracing::error!(target: "commons_store", error = %e, "re-indexing failed");
        return Err(e);
    }
    f(&mut Ctx::new(Overlay::new(trees), counters))
}
