//! `commons bundle export` and `commons bundle import`: offline exchange.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::path::Path;

use commons_core::{BlobHash, Kind, LineageId, Record};
use serde::Serialize;

use crate::bundle::{self, BundleWriter};
use crate::ctx::{Ctx, note};
use crate::error::{CliError, Result};
use crate::resolve;

#[derive(Serialize, Default)]
struct KindCounts {
    charters: usize,
    patches: usize,
    validations: usize,
}

impl KindCounts {
    fn of<'a>(records: impl IntoIterator<Item = &'a Record>) -> Self {
        let mut c = Self::default();
        for r in records {
            match r.kind() {
                Kind::Charter => c.charters += 1,
                Kind::Patch => c.patches += 1,
                Kind::Validation => c.validations += 1,
            }
        }
        c
    }
}

impl std::fmt::Display for KindCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} commons, {} patch(es), {} validation(s)",
            self.charters, self.patches, self.validations
        )
    }
}

#[derive(Serialize)]
struct Exported {
    file: String,
    family: LineageId,
    records: usize,
    kinds: KindCounts,
    blobs: usize,
    missing_blobs: usize,
    bytes: u64,
}

/// `commons bundle export ID FILE`.
pub fn export(ctx: &Ctx, id: &str, file: &Path) -> Result<()> {
    let backend = ctx.backend()?;
    let summary = resolve::lineage(backend, id)?;
    let family = summary.family.unwrap_or(summary.lineage);
    let records = backend.family_records(&family)?;
    let mut wanted: BTreeSet<BlobHash> = BTreeSet::new();
    for r in &records {
        if let Some(p) = r.as_patch() {
            for c in &p.changes {
                wanted.extend(c.before);
                wanted.extend(c.after);
            }
        }
    }
    let mut present = Vec::with_capacity(wanted.len());
    let mut missing = 0;
    for h in wanted {
        if backend.has_blob(&h)? {
            present.push(h);
        } else {
            missing += 1;
        }
    }
    if missing > 0 && !ctx.json {
        note(&format!(
            "note: {missing} file content(s) referenced by these patches are not in this home and are left out"
        ));
    }
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let werr = |e: io::Error| {
        CliError::error(format!("cannot write {}: {e}", file.display()))
            .hint("check that the directory exists and is writable")
    };
    let tmp = tempfile::NamedTempFile::new_in(parent).map_err(werr)?;
    let mut w = BundleWriter::new(tmp, records.len() as u64)?;
    for r in &records {
        w.record(r)?;
    }
    w.blobs(present.len() as u64)?;
    for h in &present {
        let mut blob = backend
            .open_blob(h)?
            .ok_or_else(|| CliError::error(format!("blob {h} disappeared while exporting")))?;
        w.blob(h, blob.len, &mut blob.reader)?;
    }
    let tmp = w.finish()?;
    tmp.as_file().sync_all().map_err(werr)?;
    tmp.persist(file).map_err(|e| werr(e.error))?;
    let bytes = fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let out = Exported {
        file: file.display().to_string(),
        family,
        records: records.len(),
        kinds: KindCounts::of(&records),
        blobs: present.len(),
        missing_blobs: missing,
        bytes,
    };
    ctx.emit(&out, || {
        format!(
            "Wrote {} record(s) ({}) and {} blob(s) of \"{}\" and its family to {} ({} bytes).\nAnyone can read it with `commons bundle import {}`.",
            out.records,
            out.kinds,
            out.blobs,
            summary.charter.name,
            out.file,
            out.bytes,
            out.file
        )
    })
}

#[derive(Serialize)]
struct NewCommons {
    lineage: LineageId,
    name: String,
}

#[derive(Serialize)]
struct Imported {
    file: String,
    records: usize,
    blobs: usize,
    new_records: usize,
    new: KindCounts,
    new_blobs: usize,
    new_commons: Vec<NewCommons>,
}

/// `commons bundle import FILE`: verifies the whole bundle, then stores what is new.
pub fn import(ctx: &Ctx, file: &Path) -> Result<()> {
    let input = File::open(file).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            CliError::not_found(format!("no bundle at {}", file.display()))
                .hint("check the path; bundles are made with `commons bundle export ID FILE`")
        } else {
            CliError::error(format!("cannot read {}: {e}", file.display()))
        }
    })?;
    let staging = ctx.home.root();
    fs::create_dir_all(staging).map_err(|e| {
        CliError::error(format!("cannot create the home {}: {e}", staging.display()))
    })?;
    let verified = bundle::read(input, staging)?;

    // Everything is verified: now store, blobs first so that no stored patch lacks its content.
    let backend = ctx.backend()?;
    let mut new_blobs = 0;
    for staged in &verified.blobs {
        if backend.has_blob(&staged.hash)? {
            continue;
        }
        let mut f = File::open(&staged.path)
            .map_err(|e| CliError::error(format!("cannot read a staged blob: {e}")))?;
        let stored = backend.put_blob(&mut f)?;
        if stored != staged.hash {
            return Err(CliError::error(format!(
                "blob {} changed while it was being stored",
                staged.hash
            )));
        }
        new_blobs += 1;
    }
    let total = verified.records.len();
    let new_ids: BTreeSet<_> = backend.put(verified.records.clone())?.into_iter().collect();
    let new_records: Vec<&Record> = verified
        .records
        .iter()
        .filter(|r| new_ids.contains(&r.id()))
        .collect();
    let new_commons = new_records
        .iter()
        .filter_map(|r| {
            r.as_charter().map(|c| NewCommons {
                lineage: LineageId::from(r.id()),
                name: c.name.clone(),
            })
        })
        .collect();
    let out = Imported {
        file: file.display().to_string(),
        records: total,
        blobs: verified.blobs.len(),
        new_records: new_ids.len(),
        new: KindCounts::of(new_records.iter().copied()),
        new_blobs,
        new_commons,
    };
    ctx.emit(&out, || {
        let mut t = format!(
            "Verified {} record(s) and {} blob(s) from {}.\n",
            out.records, out.blobs, out.file
        );
        if out.new_records == 0 && out.new_blobs == 0 {
            t.push_str("Nothing new: this home already had all of it.");
            return t;
        }
        t.push_str(&format!("New: {}, {} blob(s).", out.new, out.new_blobs));
        for c in &out.new_commons {
            t.push_str(&format!(
                "\n  new commons \"{}\" ({})",
                c.name,
                c.lineage.short()
            ));
        }
        t
    })
}
