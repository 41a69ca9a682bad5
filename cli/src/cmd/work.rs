//! Working copies: `checkout`, `status`, `propose`, `update`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::Path;

use commons_core::{BlobHash, Change, LineageId, Record, RecordId, StateRoot};
use serde::Serialize;

use crate::backend::Backend;
use crate::ctx::{Ctx, note, now_ms};
use crate::error::{CliError, Result};
use crate::resolve;
use crate::worktree::{self, Checkout, LocalChanges};

#[derive(Serialize)]
struct CheckedOut {
    lineage: LineageId,
    name: String,
    dir: String,
    files: usize,
    /// Files not written because their content is not in this home (`--allow-missing`).
    missing: Vec<String>,
    root: StateRoot,
    heads: Vec<RecordId>,
}

/// The paths whose content is not in this home, after asking the daemon (if one runs) to fetch
/// them from its peers; and whether peers were asked.
pub(crate) fn missing_blobs<'a>(
    backend: &dyn Backend,
    hashes: impl IntoIterator<Item = (&'a String, &'a BlobHash)> + Clone,
) -> Result<(Vec<String>, bool)> {
    let mut missing = Vec::new();
    for (path, h) in hashes.clone() {
        if !backend.has_blob(h)? {
            missing.push((path.as_str(), *h));
        }
    }
    // A node whose blob policy is `lazy` holds patches without their files: its daemon fetches
    // them now. What no peer had stays missing.
    let mut asked_peers = false;
    if let (Some(d), false) = (backend.daemon(), missing.is_empty()) {
        let wanted: BTreeSet<BlobHash> = missing.iter().map(|(_, h)| *h).collect();
        // A failure shows as the files still missing.
        let _ = d.fetch_blobs(wanted.into_iter().collect());
        asked_peers = true;
        missing.clear();
        for (path, h) in hashes {
            if !backend.has_blob(h)? {
                missing.push((path.as_str(), *h));
            }
        }
    }
    Ok((
        missing.into_iter().map(|(p, _)| p.to_owned()).collect(),
        asked_peers,
    ))
}

/// "N file(s): a, b, c, d, e, …".
pub(crate) fn some_paths(paths: &[String]) -> String {
    format!(
        "{} file(s): {}{}",
        paths.len(),
        paths.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
        if paths.len() > 5 { ", …" } else { "" }
    )
}

/// Where to get content that is missing.
pub(crate) fn where_to_get(asked_peers: bool) -> &'static str {
    if asked_peers {
        "no connected peer could give them; connect to one that has them (`commons node connect ADDR`) or import a bundle that carries them (`commons bundle import FILE`)"
    } else {
        "import a bundle that carries the files (`commons bundle import FILE`), or start commonsd to fetch them from peers"
    }
}

fn check_blobs<'a>(
    backend: &dyn Backend,
    hashes: impl IntoIterator<Item = (&'a String, &'a BlobHash)> + Clone,
) -> Result<()> {
    let (missing, asked_peers) = missing_blobs(backend, hashes)?;
    if missing.is_empty() {
        return Ok(());
    }
    Err(CliError::not_found(format!(
        "the content of {} is not in this home",
        some_paths(&missing)
    ))
    .hint(format!(
        "{}; nothing was written",
        where_to_get(asked_peers)
    )))
}

fn write_blob(backend: &dyn Backend, root: &Path, path: &str, hash: &BlobHash) -> Result<()> {
    let target = worktree::disk_path(root, path);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| CliError::error(format!("cannot create {}: {e}", parent.display())))?;
    }
    let mut blob = backend.open_blob(hash)?.ok_or_else(|| {
        CliError::not_found(format!(
            "the content of {path} ({hash}) is not in this home"
        ))
        .hint("import a bundle that carries it")
    })?;
    worktree::write_verified(&target, &mut blob.reader, hash, path)
}

/// `commons checkout ID DIR [--allow-missing]`.
pub fn checkout(ctx: &Ctx, id: &str, dir: &Path, allow_missing: bool) -> Result<()> {
    let backend = ctx.backend()?;
    let summary = resolve::lineage(backend, id)?;
    if !worktree::is_absent_or_empty(dir)? {
        return Err(CliError::refused(format!(
            "{} exists and is not empty; checkout only writes into a new or empty directory",
            dir.display()
        ))
        .hint(
            "choose another directory, or run `commons update DIR` in an existing working copy",
        ));
    }
    let tree = backend.tree(&summary.lineage)?;
    let missing: BTreeSet<String> = if allow_missing {
        let (missing, asked_peers) = missing_blobs(backend, &tree)?;
        if !missing.is_empty() {
            note(&format!(
                "the content of {} is not in this home and was not written; {} (then `commons update`)",
                some_paths(&missing),
                where_to_get(asked_peers)
            ));
        }
        missing.into_iter().collect()
    } else {
        check_blobs(backend, &tree)?;
        BTreeSet::new()
    };
    fs::create_dir_all(dir)
        .map_err(|e| CliError::error(format!("cannot create {}: {e}", dir.display())))?;
    for (path, hash) in tree.iter().filter(|(p, _)| !missing.contains(*p)) {
        write_blob(backend, dir, path, hash)?;
    }
    let mut meta = Checkout::new(
        summary.lineage,
        summary.fork_point.heads.clone(),
        summary.root,
        tree,
    );
    meta.missing = missing;
    meta.save(dir)?;
    let out = CheckedOut {
        lineage: summary.lineage,
        name: summary.charter.name.clone(),
        dir: dir.display().to_string(),
        files: meta.base.len() - meta.missing.len(),
        missing: meta.missing.iter().cloned().collect(),
        root: summary.root,
        heads: meta.heads.clone(),
    };
    ctx.emit(&out, || {
        format!(
            "Checked out \"{}\" ({} file(s)) into {}.\nState root {}\nEdit files, then `commons status {}` and `commons propose {} -m MESSAGE`.",
            out.name, out.files, out.dir, out.root, out.dir, out.dir
        )
    })
}

#[derive(Serialize)]
struct StatusView {
    lineage: LineageId,
    name: Option<String>,
    dir: String,
    #[serde(flatten)]
    changes: LocalChanges,
    clean: bool,
    base_root: StateRoot,
    current_root: Option<StateRoot>,
    behind: bool,
    skipped: Vec<String>,
}

/// A working copy as found on disk.
struct Local {
    meta: Checkout,
    files: BTreeMap<String, BlobHash>,
    changes: LocalChanges,
    skipped: Vec<String>,
}

fn local_state(dir: &Path) -> Result<Local> {
    let meta = Checkout::load(dir)?;
    let (mut files, skipped) = worktree::scan(dir)?;
    meta.fill_missing(&mut files);
    let changes = worktree::changes(&meta.base, &files);
    Ok(Local {
        meta,
        files,
        changes,
        skipped,
    })
}

/// `commons status DIR`.
pub fn status(ctx: &Ctx, dir: &Path) -> Result<()> {
    let Local {
        meta,
        changes,
        skipped,
        ..
    } = local_state(dir)?;
    let summary = ctx.backend()?.lineage(&meta.lineage)?;
    let v = StatusView {
        lineage: meta.lineage,
        name: summary.as_ref().map(|s| s.charter.name.clone()),
        dir: dir.display().to_string(),
        clean: changes.is_empty(),
        changes,
        base_root: meta.root,
        current_root: summary.as_ref().map(|s| s.root),
        behind: summary.as_ref().is_some_and(|s| s.root != meta.root),
        skipped,
    };
    ctx.emit(&v, || {
        let mut t = format!(
            "On \"{}\" ({}), base state root {}\n",
            v.name.as_deref().unwrap_or("unknown commons"),
            v.lineage.short(),
            v.base_root.short()
        );
        if v.clean {
            t.push_str("No local changes.\n");
        } else {
            for (label, list) in [
                ("added:   ", &v.changes.added),
                ("modified:", &v.changes.modified),
                ("deleted: ", &v.changes.deleted),
            ] {
                for p in list {
                    t.push_str(&format!("  {label} {p}\n"));
                }
            }
            t.push_str(&format!(
                "Propose them with `commons propose {} -m MESSAGE`.\n",
                v.dir
            ));
        }
        for s in &v.skipped {
            t.push_str(&format!("  ignored:  {s} (not a regular file)\n"));
        }
        if v.behind {
            t.push_str(&format!(
                "The commons has moved on since this base: `commons update {}` brings it in.\n",
                v.dir
            ));
        }
        t
    })
}

#[derive(Serialize)]
struct Proposed {
    /// The patch, or the last of a chain.
    patch: RecordId,
    lineage: LineageId,
    parents: Vec<RecordId>,
    /// Every patch made, first to last (one unless the changes needed a chain).
    parts: Vec<RecordId>,
    #[serde(flatten)]
    changes: LocalChanges,
}

/// `commons propose DIR -m MSG`.
pub fn propose(ctx: &Ctx, dir: &Path, message: &str) -> Result<()> {
    if message.trim().is_empty() {
        return Err(CliError::usage("the patch message is empty")
            .hint("say what the patch does and why with -m MESSAGE"));
    }
    let Local {
        meta,
        files: local,
        changes,
        ..
    } = local_state(dir)?;
    if changes.is_empty() {
        return Err(CliError::error(format!(
            "nothing to propose: {} has no local changes against its base",
            dir.display()
        ))
        .hint("edit, add or delete files first; `commons status DIR` lists what changed"));
    }
    let identity = ctx.identity()?;
    let backend = ctx.backend()?;
    let mut list = Vec::new();
    for path in changes.paths() {
        let after = match local.get(path) {
            Some(_) => {
                let file = worktree::disk_path(dir, path);
                let mut f = File::open(&file)
                    .map_err(|e| CliError::error(format!("cannot read {}: {e}", file.display())))?;
                Some(backend.put_blob(&mut f)?)
            }
            None => None,
        };
        let before = meta.base.get(path).copied();
        if before != after {
            list.push(Change {
                path: path.to_owned(),
                before,
                after,
            });
        }
    }
    if list.is_empty() {
        return Err(CliError::error(
            "nothing to propose: the files changed back while reading them",
        )
        .hint("run `commons status DIR` and try again"));
    }
    // Changes too large for one patch record become a chain of patches, each the parent of the
    // next (as `create --from` does).
    let records = commons_core::chain::sign_chain(
        &identity.author,
        now_ms(),
        meta.lineage,
        meta.heads.clone(),
        list,
        message,
    )?;
    let parts: Vec<RecordId> = records.iter().map(Record::id).collect();
    let id = *parts
        .last()
        .ok_or_else(|| CliError::error("the changes made no patch"))?;
    backend.put(records)?;
    let out = Proposed {
        patch: id,
        lineage: meta.lineage,
        parents: meta.heads.clone(),
        parts: parts.clone(),
        changes,
    };
    let what = if parts.len() == 1 {
        format!("Proposed patch {}", id.short())
    } else {
        format!(
            "Proposed a chain of {} patches, too large for one: {} (the last)",
            parts.len(),
            parts
                .iter()
                .map(|p| p.short())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let accept = if parts.len() == 1 {
        format!("`commons validate {} --accept`", id.short())
    } else {
        "`commons validate ID --accept` for each part, first to last".to_owned()
    };
    let story = format!(
        "{what} ({} added, {} modified, {} deleted).\n\
         A maintainer accepts it with {accept}; share it with `commons bundle export {} FILE`.\n\
         Your working copy keeps its base; `commons update {}` brings the patch in once it is accepted.",
        out.changes.added.len(),
        out.changes.modified.len(),
        out.changes.deleted.len(),
        meta.lineage.short(),
        dir.display()
    );
    ctx.emit_made(&out, &id.to_string(), &story)
}

#[derive(Serialize)]
struct Updated {
    lineage: LineageId,
    written: Vec<String>,
    removed: Vec<String>,
    kept: Vec<String>,
    root: StateRoot,
    heads: Vec<RecordId>,
    up_to_date: bool,
}

/// `commons update DIR`: moves the base to the newest canonical state, keeping local changes;
/// refuses (changing nothing) where a local change and an incoming one touch the same file.
pub fn update(ctx: &Ctx, dir: &Path) -> Result<()> {
    let Local {
        meta,
        files: local,
        changes,
        ..
    } = local_state(dir)?;
    let backend = ctx.backend()?;
    let summary = backend.lineage(&meta.lineage)?.ok_or_else(|| {
        CliError::not_found(format!("commons {} is not in this home", meta.lineage))
            .hint("import its bundle with `commons bundle import FILE`")
    })?;
    let new = backend.tree(&summary.lineage)?;
    let paths: BTreeSet<&String> = meta
        .base
        .keys()
        .chain(new.keys())
        .chain(local.keys())
        .collect();
    let mut writes: BTreeMap<String, BlobHash> = BTreeMap::new();
    let mut removals: Vec<String> = Vec::new();
    let mut conflicts: Vec<String> = Vec::new();
    for path in paths {
        let base = meta.base.get(path);
        let incoming = new.get(path);
        let mine = local.get(path);
        if incoming == base {
            continue;
        }
        if mine == base {
            match incoming {
                Some(h) => {
                    writes.insert(path.clone(), *h);
                }
                None => removals.push(path.clone()),
            }
        } else if mine != incoming {
            conflicts.push(path.clone());
        }
    }
    // A file to write must not clash with a file or directory on disk that stays.
    let removed: BTreeSet<&str> = removals.iter().map(String::as_str).collect();
    for path in writes.keys() {
        let ancestor_stays = path
            .match_indices('/')
            .map(|(i, _)| &path[..i])
            .any(|a| local.contains_key(a) && !removed.contains(a));
        let prefix = format!("{path}/");
        let mut under = local.keys().filter(|k| k.starts_with(&prefix)).peekable();
        let dir_stays = match under.peek() {
            Some(_) => under.any(|k| !removed.contains(k.as_str())),
            None => worktree::disk_path(dir, path).is_dir(),
        };
        if ancestor_stays || dir_stays {
            conflicts.push(path.clone());
        }
    }
    if !conflicts.is_empty() {
        conflicts.sort();
        conflicts.dedup();
        let list: String = conflicts.iter().map(|p| format!("\n  {p}")).collect();
        return Err(CliError::conflict(format!(
            "update would overwrite local changes; these files changed both here and in \"{}\":{list}\nNothing was changed.",
            summary.charter.name
        ))
        .hint(format!(
            "save your versions elsewhere, undo them in {} (or propose them with `commons propose`), then run `commons update` again",
            dir.display()
        )));
    }
    check_blobs(backend, &writes)?;
    // Files a checkout left out for want of their content: written now if it has come.
    let still_missing: BTreeMap<String, BlobHash> = meta
        .missing
        .iter()
        .filter_map(|p| {
            Some((
                p.clone(),
                *new.get(p).filter(|h| Some(*h) == meta.base.get(p))?,
            ))
        })
        .filter(|(p, _)| !writes.contains_key(p) && !worktree::disk_path(dir, p).exists())
        .collect();
    if !still_missing.is_empty() {
        let (absent, _) = missing_blobs(backend, &still_missing)?;
        for (p, h) in still_missing {
            if !absent.contains(&p) {
                writes.insert(p, h);
            }
        }
    }
    for path in &removals {
        worktree::remove_file(dir, path)?;
    }
    for (path, hash) in &writes {
        write_blob(backend, dir, path, hash)?;
    }
    let up_to_date = writes.is_empty() && removals.is_empty() && meta.root == summary.root;
    let mut new_meta = Checkout::new(
        summary.lineage,
        summary.fork_point.heads.clone(),
        summary.root,
        new,
    );
    // Files still missing: unchanged by the update, so not written, and not on disk.
    new_meta.missing = meta
        .missing
        .iter()
        .filter(|p| new_meta.base.get(*p) == meta.base.get(*p) && !writes.contains_key(*p))
        .filter(|p| !worktree::disk_path(dir, p).exists())
        .cloned()
        .collect();
    new_meta.save(dir)?;
    // What remains local after the move.
    let (mut now_local, _) = worktree::scan(dir)?;
    new_meta.fill_missing(&mut now_local);
    let kept: Vec<String> = worktree::changes(&new_meta.base, &now_local)
        .paths()
        .into_iter()
        .map(str::to_owned)
        .collect();
    if !changes.is_empty() && kept.len() < changes.paths().len() && !ctx.json {
        note("Some of your local changes are now part of the commons.");
    }
    let out = Updated {
        lineage: summary.lineage,
        written: writes.into_keys().collect(),
        removed: removals,
        kept,
        root: summary.root,
        heads: new_meta.heads.clone(),
        up_to_date,
    };
    ctx.emit(&out, || {
        if out.up_to_date {
            return format!(
                "Already up to date with \"{}\" (state root {}).",
                summary.charter.name,
                out.root.short()
            );
        }
        let mut t = format!(
            "Updated to the newest state of \"{}\": {} file(s) written, {} removed.\n",
            summary.charter.name,
            out.written.len(),
            out.removed.len()
        );
        for p in &out.written {
            t.push_str(&format!("  updated: {p}\n"));
        }
        for p in &out.removed {
            t.push_str(&format!("  removed: {p}\n"));
        }
        for p in &out.kept {
            t.push_str(&format!("  kept local change: {p}\n"));
        }
        t.push_str(&format!("State root {}", out.root));
        t
    })
}
