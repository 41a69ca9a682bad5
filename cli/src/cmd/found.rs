//! `commons create` and `commons fork`: founding lineages.

use std::collections::BTreeSet;
use std::fs::File;

use commons_core::record::MAX_NAME_BYTES;
use commons_core::state::PatchStatus;
use commons_core::{
    Body, Change, Charter, ForkBase, LineageId, PublicKey, Record, RecordId, Validation, Verdict,
};
use serde::Serialize;

use super::{check_license, maintainers_and_threshold};
use crate::args::{CreateArgs, ForkArgs};
use crate::ctx::{Ctx, now_ms};
use crate::error::{CliError, Result};
use crate::{resolve, worktree};

#[derive(Serialize)]
struct Created {
    lineage: LineageId,
    name: String,
    license: String,
    maintainers: Vec<PublicKey>,
    threshold: u16,
    patches: Vec<RecordId>,
    files: usize,
    accepted: bool,
    root: Option<commons_core::StateRoot>,
}

/// Founds a commons, optionally importing a directory as its first patch(es).
pub fn create(ctx: &Ctx, args: CreateArgs) -> Result<()> {
    check_license(&args.license)?;
    let identity = ctx.identity()?;
    let me = identity.author.public();
    let (maintainers, threshold) =
        maintainers_and_threshold(me, &args.maintainers, args.no_self, args.threshold)?;
    let now = now_ms();
    let charter = Record::sign(
        &identity.author,
        now,
        Body::Charter(Charter {
            name: args.name.trim().to_owned(),
            summary: args.summary.clone(),
            license: args.license.trim().to_owned(),
            maintainers: maintainers.clone(),
            threshold,
            fork: None,
        }),
    )?;
    let lineage = LineageId::from(charter.id());
    let backend = ctx.backend()?;

    let mut records = vec![charter];
    let mut patch_ids = Vec::new();
    let mut files = 0;
    if let Some(dir) = &args.from {
        if !dir.is_dir() {
            return Err(CliError::not_found(format!(
                "--from {}: no such directory",
                dir.display()
            ))
            .hint("give the directory whose files become the first patch"));
        }
        let (found, skipped) = worktree::walk(dir)?;
        for s in &skipped {
            crate::ctx::note(&format!("skipping {s}: not a regular file"));
        }
        let mut changes = Vec::with_capacity(found.len());
        for f in &found {
            let mut file = File::open(&f.file)
                .map_err(|e| CliError::error(format!("cannot read {}: {e}", f.file.display())))?;
            let hash = backend.put_blob(&mut file)?;
            changes.push(Change {
                path: f.path.clone(),
                before: None,
                after: Some(hash),
            });
        }
        files = changes.len();
        if !changes.is_empty() {
            let name = dir
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| dir.display().to_string());
            let patches = commons_core::chain::sign_chain(
                &identity.author,
                now,
                lineage,
                Vec::new(),
                changes,
                &format!("Import {name}"),
            )?;
            patch_ids = patches.iter().map(Record::id).collect();
            records.extend(patches);
        }
    }
    let self_maintains = maintainers.contains(&me);
    if self_maintains {
        for id in &patch_ids {
            records.push(Record::sign(
                &identity.author,
                now,
                Body::Validation(Validation {
                    lineage,
                    patch: *id,
                    verdict: Verdict::Accept,
                    note: "initial import".into(),
                }),
            )?);
        }
    }
    backend.put(records)?;
    let summary = backend.lineage(&lineage)?;
    let accepted_now: BTreeSet<RecordId> = backend
        .patches(&lineage, Some(PatchStatus::Accepted))?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let out = Created {
        lineage,
        name: args.name.trim().to_owned(),
        license: args.license.trim().to_owned(),
        maintainers,
        threshold,
        patches: patch_ids.clone(),
        files,
        accepted: patch_ids.iter().all(|id| accepted_now.contains(id)),
        root: summary.as_ref().map(|s| s.root),
    };
    let mut story = format!(
        "Founded \"{}\" ({}), {} of {} maintainer(s) must accept a patch.",
        out.name,
        out.license,
        threshold,
        out.maintainers.len()
    );
    if !patch_ids.is_empty() {
        story.push_str(&format!(
            "\nImported {files} file(s) as {} patch(es){}.",
            patch_ids.len(),
            if out.accepted {
                ", accepted"
            } else if self_maintains {
                ", with your acceptance; they wait for the other maintainers"
            } else {
                "; they wait for the maintainers"
            }
        ));
    }
    if let Some(s) = &summary {
        story.push_str(&format!("\nState root {}", s.root));
    }
    story.push_str(&format!(
        "\nNext: `commons show {}` or `commons checkout {} DIR`.",
        lineage.short(),
        lineage.short()
    ));
    ctx.emit_made(&out, &lineage.to_string(), &story)
}

#[derive(Serialize)]
struct Forked {
    lineage: LineageId,
    name: String,
    parent: LineageId,
    heads: Vec<RecordId>,
    excluded: Vec<RecordId>,
    maintainers: Vec<PublicKey>,
    threshold: u16,
    root: Option<commons_core::StateRoot>,
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Founds a fork of a commons in one command.
pub fn fork(ctx: &Ctx, args: ForkArgs) -> Result<()> {
    let backend = ctx.backend()?;
    let parent = resolve::lineage(backend, &args.id)?;
    let identity = ctx.identity()?;
    let me = identity.author.public();
    let (maintainers, threshold) =
        maintainers_and_threshold(me, &args.maintainers, args.no_self, args.threshold)?;

    let (heads, excluded) = match &args.at {
        None => (
            parent.fork_point.heads.clone(),
            parent.fork_point.excluded.clone(),
        ),
        Some(at) => fork_at(ctx, &parent, at)?,
    };
    let name = match &args.name {
        Some(n) => n.trim().to_owned(),
        None => {
            let suffix = " (fork)";
            format!(
                "{}{suffix}",
                cut(&parent.charter.name, MAX_NAME_BYTES - suffix.len())
            )
        }
    };
    let summary = args.message.clone().unwrap_or_else(|| {
        format!(
            "Fork of \"{}\" ({}).",
            parent.charter.name,
            parent.lineage.short()
        )
    });
    let charter = Record::sign(
        &identity.author,
        now_ms(),
        Body::Charter(Charter {
            name: name.clone(),
            summary,
            license: parent.charter.license.clone(),
            maintainers: maintainers.clone(),
            threshold,
            fork: Some(ForkBase {
                parent: parent.lineage,
                heads: heads.clone(),
                excluded: excluded.clone(),
            }),
        }),
    )?;
    let lineage = LineageId::from(charter.id());
    backend.put(vec![charter])?;
    let summary = backend.lineage(&lineage)?;
    let out = Forked {
        lineage,
        name,
        parent: parent.lineage,
        heads,
        excluded,
        maintainers,
        threshold,
        root: summary.as_ref().map(|s| s.root),
    };
    let story = format!(
        "Forked \"{}\" as \"{}\" from {} head(s){}; license {} is kept.\n\
         The fork shares all history; its maintainers now decide what it accepts.\n\
         Next: `commons checkout {} DIR`, or accept a patch with `commons validate PATCH --accept --in {}`.",
        parent.charter.name,
        out.name,
        out.heads.len(),
        if out.excluded.is_empty() {
            String::new()
        } else {
            format!(
                ", leaving out {} unaccepted ancestor(s)",
                out.excluded.len()
            )
        },
        parent.charter.license,
        lineage.short(),
        lineage.short()
    );
    ctx.emit_made(&out, &lineage.to_string(), &story)
}

/// Heads and exclusions for `fork --at PATCH`: heads = [PATCH]; excluded = the ancestors of
/// PATCH that the parent did not accept.
fn fork_at(
    ctx: &Ctx,
    parent: &commons_store::LineageSummary,
    at: &str,
) -> Result<(Vec<RecordId>, Vec<RecordId>)> {
    let backend = ctx.backend()?;
    let record = resolve::patch(backend, at)?;
    let patch = record
        .as_patch()
        .ok_or_else(|| CliError::error("not a patch"))?;
    let family = parent.family.unwrap_or(parent.lineage);
    let patch_family = backend
        .lineage(&patch.lineage)?
        .map(|s| s.family.unwrap_or(s.lineage));
    if patch_family != Some(family) {
        return Err(CliError::usage(format!(
            "patch {} belongs to another family of commons than \"{}\"",
            record.id().short(),
            parent.charter.name
        ))
        .hint("--at takes a patch of the commons being forked (see `commons log ID`)"));
    }
    let accepted = |id: &RecordId| -> Result<bool> {
        Ok(matches!(
            backend.status(&parent.lineage, id)?,
            Some(PatchStatus::Accepted | PatchStatus::Conflicted)
        ))
    };
    if !accepted(&record.id())? {
        crate::ctx::note(&format!(
            "note: patch {} is not accepted in \"{}\"; the fork starts with it all the same",
            record.id().short(),
            parent.charter.name
        ));
    }
    // Walk the ancestors iteratively: the ones the parent did not accept are left out. Every
    // ancestor of an accepted patch that is not accepted is one of the parent's exclusions, so
    // when the parent has none the walk stops at accepted patches (a few steps back in a
    // history, not all of it); otherwise it goes all the way down.
    let stop_at_accepted = parent.fork_point.excluded.is_empty();
    let mut excluded = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut stack: Vec<RecordId> = patch.parents.clone();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let is_accepted = accepted(&id)?;
        if is_accepted && stop_at_accepted {
            continue;
        }
        let ancestor = backend.get(&id)?.ok_or_else(|| {
            CliError::not_found(format!(
                "ancestor {} of patch {} is not in this home",
                id.short(),
                record.id().short()
            ))
            .hint("import a complete bundle of the commons first")
        })?;
        if !is_accepted {
            excluded.insert(id);
        }
        if let Some(p) = ancestor.as_patch() {
            stack.extend(p.parents.iter().copied());
        }
    }
    Ok((vec![record.id()], excluded.into_iter().collect()))
}
