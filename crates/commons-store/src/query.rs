//! Read queries, run on the storage thread against the committed trees.

use std::collections::{BTreeMap, BTreeSet};

use commons_core::state::{LineageState, PatchStatus};
use commons_core::tree::Outcome;
use commons_core::{BlobHash, Kind, LineageId, Record, RecordId};

use crate::keys::{self, T};
use crate::state::{Ctx, corrupt};
use crate::{LineageSummary, StoreError};

/// Ids whose lowercase hex starts with `prefix`, at most `limit`, in order.
pub fn ids_with_prefix(
    ctx: &Ctx<'_>,
    prefix: &str,
    limit: usize,
) -> Result<Vec<RecordId>, StoreError> {
    if prefix.len() > 64
        || !prefix
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Ok(vec![]);
    }
    let even = &prefix[..prefix.len() & !1];
    let bytes = hex::decode(even).map_err(|e| StoreError::Io(e.to_string()))?;
    let mut out = Vec::new();
    for key in ctx.o.disk(T::Records).scan_prefix(bytes).keys() {
        if out.len() >= limit {
            break;
        }
        let key = key.map_err(crate::overlay::io)?;
        let id = RecordId(
            keys::id_at(&key, 0).ok_or_else(|| corrupt(T::Records, "key is not 32 bytes"))?,
        );
        if id.to_hex().starts_with(prefix) {
            out.push(id);
        }
    }
    Ok(out)
}

/// The summary of a lineage: its stored summary, its charter and its stored fork point (a few
/// reads, whatever the history).
pub fn summary(
    ctx: &mut Ctx<'_>,
    lineage: &LineageId,
) -> Result<Option<LineageSummary>, StoreError> {
    let Some(meta) = ctx.meta(lineage)? else {
        return Ok(None);
    };
    let Some(record) = ctx.record(&RecordId::from(*lineage))? else {
        return Err(corrupt(T::Lineages, format!("{lineage} has no charter")));
    };
    let Some(charter) = record.as_charter().cloned() else {
        return Err(corrupt(T::Lineages, format!("{lineage} is not a charter")));
    };
    let fork_point = ctx.fork_point(lineage)?;
    Ok(Some(LineageSummary {
        lineage: *lineage,
        charter,
        founder: record.author(),
        created: record.timestamp(),
        family: meta.family,
        root: meta.root,
        counts: meta.count_map(),
        files: meta.files,
        fork_point,
    }))
}

/// Every lineage, ordered by creation time then id.
pub fn lineages(ctx: &mut Ctx<'_>) -> Result<Vec<LineageSummary>, StoreError> {
    let mut ids = Vec::new();
    for key in ctx.o.disk(T::Lineages).iter().keys() {
        let key = key.map_err(crate::overlay::io)?;
        ids.push(LineageId(
            keys::id_at(&key, 0).ok_or_else(|| corrupt(T::Lineages, "key is not 32 bytes"))?,
        ));
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(s) = summary(ctx, &id)? {
            out.push(s);
        }
    }
    out.sort_by_key(|s| (s.created, s.lineage));
    Ok(out)
}

/// The records of a family: its charters (parents first), its patches and the present ancestors
/// of those (parents first), then the validations naming its lineages (by time, then id).
/// The lineages whose records make up `family`'s: those the `family` index lists, or the family's
/// own lineage alone while its family is not known; none without its charter.
fn family_lineages(
    ctx: &mut Ctx<'_>,
    family: &LineageId,
) -> Result<BTreeSet<LineageId>, StoreError> {
    let mut lineages: BTreeSet<LineageId> = ctx
        .second_ids(T::Family, family.as_bytes())?
        .into_iter()
        .map(LineageId)
        .collect();
    if lineages.is_empty() && ctx.charter(family)?.is_some() {
        lineages.insert(*family);
    }
    Ok(lineages)
}

/// The ids of [`family_records`], sorted, read from the `lineage_records` index: no record is
/// decoded but the ancestors proposed to other families (and patches indexed before the index
/// kept parents), so the work is one index entry per record of the family.
pub fn family_ids(ctx: &mut Ctx<'_>, family: &LineageId) -> Result<Vec<RecordId>, StoreError> {
    let mut ids: BTreeSet<RecordId> = BTreeSet::new();
    let mut stack: Vec<RecordId> = Vec::new();
    for l in family_lineages(ctx, family)? {
        for (k, v) in ctx.o.scan_prefix(T::LineageRecords, l.as_bytes())? {
            let id = RecordId(
                keys::id_at(&k, 32).ok_or_else(|| corrupt(T::LineageRecords, "short key"))?,
            );
            match keys::lineage_record_parents(&v) {
                Some(parents) => stack.extend(parents),
                None => {
                    if let Some(p) = ctx.patch(&id)? {
                        stack.extend(p.parents);
                    }
                }
            }
            ids.insert(id);
        }
    }
    // Ancestors outside the family's lineages: present patches only, as family_records has them.
    while let Some(id) = stack.pop() {
        if ids.contains(&id) {
            continue;
        }
        if let Some(p) = ctx.patch(&id)? {
            stack.extend(p.parents);
            ids.insert(id);
        }
    }
    Ok(ids.into_iter().collect())
}

pub fn family_records(ctx: &mut Ctx<'_>, family: &LineageId) -> Result<Vec<Record>, StoreError> {
    let lineages = family_lineages(ctx, family)?;
    if lineages.is_empty() {
        return Ok(vec![]);
    }
    let mut charters = Vec::new();
    let mut patches: BTreeMap<RecordId, Record> = BTreeMap::new();
    let mut validations = Vec::new();
    let mut stack = Vec::new();
    for l in &lineages {
        for id in ctx.second_ids(T::LineageRecords, l.as_bytes())? {
            let Some(r) = ctx.record(&RecordId(id))? else {
                continue;
            };
            match r.kind() {
                Kind::Charter => charters.push(r),
                Kind::Validation => validations.push(r),
                Kind::Patch => {
                    if let Some(p) = r.as_patch() {
                        stack.extend(p.parents.iter().copied());
                    }
                    patches.insert(r.id(), r);
                }
            }
        }
    }
    while let Some(id) = stack.pop() {
        if patches.contains_key(&id) {
            continue;
        }
        if let Some(r) = ctx.record(&id)?
            && let Some(p) = r.as_patch()
        {
            stack.extend(p.parents.iter().copied());
            patches.insert(id, r);
        }
    }
    // Charters: depth in the chain of parents (bounded by the number of charters), then id.
    let index = charters_index(&charters);
    let depth = |r: &Record| -> usize {
        let mut d = 0;
        let mut current = index.get(&LineageId::from(r.id())).copied().flatten();
        while let Some(p) = current {
            d += 1;
            if d > index.len() {
                break;
            }
            current = index.get(&p).copied().flatten();
        }
        d
    };
    let mut keyed: Vec<(usize, Record)> = charters.iter().map(|c| (depth(c), c.clone())).collect();
    keyed.sort_by_key(|(d, r)| (*d, r.id()));
    let mut out: Vec<Record> = keyed.into_iter().map(|(_, r)| r).collect();
    out.extend(topological(&patches));
    validations.sort_by_key(|r| (r.timestamp(), r.id()));
    out.extend(validations);
    Ok(out)
}

fn charters_index(charters: &[Record]) -> BTreeMap<LineageId, Option<LineageId>> {
    charters
        .iter()
        .filter_map(|r| {
            r.as_charter()
                .map(|c| (LineageId::from(r.id()), c.fork.as_ref().map(|f| f.parent)))
        })
        .collect()
}

/// Patches with parents first (iterative depth-first post-order; ties by id).
fn topological(patches: &BTreeMap<RecordId, Record>) -> Vec<Record> {
    let mut out = Vec::with_capacity(patches.len());
    let mut done = BTreeSet::new();
    for start in patches.keys() {
        let mut stack = vec![(*start, false)];
        while let Some((id, expanded)) = stack.pop() {
            if done.contains(&id) {
                continue;
            }
            let Some(r) = patches.get(&id) else { continue };
            if expanded {
                done.insert(id);
                out.push(r.clone());
                continue;
            }
            stack.push((id, true));
            if let Some(p) = r.as_patch() {
                for parent in p.parents.iter().rev() {
                    if !done.contains(parent) {
                        stack.push((*parent, false));
                    }
                }
            }
        }
    }
    out
}

/// Patches listed in a lineage with their status, by id: pending and rejected ones from the
/// vote part, accepted and conflicted ones from the log.
pub fn patches(
    ctx: &mut Ctx<'_>,
    lineage: &LineageId,
    status: Option<PatchStatus>,
) -> Result<Vec<(RecordId, PatchStatus)>, StoreError> {
    let mut out = Vec::new();
    let voted = |s: &PatchStatus| matches!(s, PatchStatus::Pending | PatchStatus::Rejected);
    match status {
        Some(s) if voted(&s) => {
            let mut prefix = lineage.as_bytes().to_vec();
            prefix.push(keys::status_byte(s));
            for (k, _) in ctx.o.scan_prefix(T::ByStatus, &prefix)? {
                let id = keys::id_at(&k, 33).ok_or_else(|| corrupt(T::ByStatus, "short key"))?;
                out.push((RecordId(id), s));
            }
        }
        None => {
            for (k, v) in ctx.o.scan_prefix(T::Status, lineage.as_bytes())? {
                let id = keys::id_at(&k, 32).ok_or_else(|| corrupt(T::Status, "short key"))?;
                let s = match v.as_slice() {
                    [b] => keys::status_from_byte(*b),
                    _ => None,
                }
                .ok_or_else(|| corrupt(T::Status, "bad status"))?;
                out.push((RecordId(id), s));
            }
        }
        Some(_) => {}
    }
    if status.is_none_or(|s| !voted(&s)) {
        for (id, o) in history(ctx, lineage)? {
            let s = crate::state::status_of(o);
            if status.is_none_or(|want| want == s) {
                out.push((id, s));
            }
        }
    }
    out.sort_by_key(|(id, _)| *id);
    Ok(out)
}

/// The log of a lineage, in order of application.
pub fn history(
    ctx: &mut Ctx<'_>,
    lineage: &LineageId,
) -> Result<Vec<(RecordId, Outcome)>, StoreError> {
    let Some(meta) = ctx.meta(lineage)? else {
        return Ok(vec![]);
    };
    let mut out = Vec::new();
    for (k, v) in ctx
        .nodes
        .scan(&ctx.o, meta.log_root, b"", &|_| true, usize::MAX)?
    {
        let (_, id) = keys::parse_log_key(&k).ok_or_else(|| corrupt(T::Nodes, "bad log key"))?;
        let o = keys::outcome_value(&v).ok_or_else(|| corrupt(T::Nodes, "bad outcome"))?;
        out.push((id, o));
    }
    Ok(out)
}

/// Validations of a patch, in any lineage: the maintainers' first, then the others' opinions.
pub fn validations_of(ctx: &mut Ctx<'_>, patch: &RecordId) -> Result<Vec<Record>, StoreError> {
    let mut out = Vec::new();
    for t in [T::Validations, T::Opinions] {
        for (k, _) in ctx.o.scan_prefix(t, patch.as_bytes())? {
            let id = keys::id_at(&k, 64).ok_or_else(|| corrupt(t, "short key"))?;
            if let Some(r) = ctx.record(&RecordId(id))? {
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// The canonical tree of a lineage.
pub fn tree(
    ctx: &mut Ctx<'_>,
    lineage: &LineageId,
) -> Result<BTreeMap<String, BlobHash>, StoreError> {
    let Some(meta) = ctx.meta(lineage)? else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for (k, v) in ctx
        .nodes
        .scan(&ctx.o, meta.files_root, b"", &|_| true, usize::MAX)?
    {
        let path = String::from_utf8(k).map_err(|_| corrupt(T::Nodes, "path is not UTF-8"))?;
        let blob = keys::blob_value(&v).ok_or_else(|| corrupt(T::Nodes, "bad blob hash"))?;
        out.insert(path, blob);
    }
    Ok(out)
}

/// The state of a lineage from scratch.
pub fn state_from_scratch(
    ctx: &mut Ctx<'_>,
    lineage: &LineageId,
) -> Result<Option<LineageState>, StoreError> {
    Ok(ctx.load_set(lineage)?.and_then(|rs| rs.state(lineage)))
}
