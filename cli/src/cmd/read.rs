//! Reading commands: `list`, `show`, `log`, `patches`, `patch show`, `lineage`.

use std::collections::BTreeMap;
use std::io::Read;

use commons_core::state::PatchStatus;
use commons_core::tree::Outcome;
use commons_core::{BlobHash, ForkBase, LineageId, PublicKey, Record, RecordId, StateRoot};
use commons_store::LineageSummary;
use serde::Serialize;

use super::Counts;
use crate::backend::Backend;
use crate::ctx::{Ctx, format_time};
use crate::diff::{self, ChangeKind, MAX_DIFF_BYTES, Side};
use crate::error::{CliError, Result};
use crate::resolve::{self, first_line};

#[derive(Serialize)]
struct ListItem {
    lineage: LineageId,
    name: String,
    license: String,
    parent: Option<LineageId>,
    family: Option<LineageId>,
    root: StateRoot,
    files: u64,
    counts: Counts,
}

/// `commons list`.
pub fn list(ctx: &Ctx) -> Result<()> {
    let all = ctx.backend()?.lineages()?;
    let items: Vec<ListItem> = all
        .iter()
        .map(|s| ListItem {
            lineage: s.lineage,
            name: s.charter.name.clone(),
            license: s.charter.license.clone(),
            parent: s.charter.fork.as_ref().map(|f| f.parent),
            family: s.family,
            root: s.root,
            files: s.files,
            counts: Counts::from_map(&s.counts),
        })
        .collect();
    ctx.emit(&items, || {
        if items.is_empty() {
            return "No commons in this home yet: found one with `commons create NAME --license SPDX`, or import a bundle.".into();
        }
        let width = items.iter().map(|i| i.name.chars().count()).max().unwrap_or(0);
        let mut s = String::new();
        for i in &items {
            s.push_str(&format!(
                "{}  {:width$}  {}  {} file(s)  {}{}\n",
                i.lineage.short(),
                i.name,
                i.license,
                i.files,
                i.counts,
                i.parent
                    .map(|p| format!("  (fork of {})", p.short()))
                    .unwrap_or_default(),
            ));
        }
        s
    })
}

#[derive(Serialize)]
struct ParentView {
    lineage: LineageId,
    name: Option<String>,
}

#[derive(Serialize)]
struct ShowView {
    lineage: LineageId,
    name: String,
    summary: String,
    license: String,
    maintainers: Vec<PublicKey>,
    threshold: u16,
    founder: PublicKey,
    created: u64,
    family: Option<LineageId>,
    parent: Option<ParentView>,
    fork: Option<ForkBase>,
    root: StateRoot,
    files: u64,
    counts: Counts,
    heads: Vec<RecordId>,
}

/// `commons show ID`.
pub fn show(ctx: &Ctx, id: &str) -> Result<()> {
    let backend = ctx.backend()?;
    let s = resolve::lineage(backend, id)?;
    let parent = match &s.charter.fork {
        Some(f) => Some(ParentView {
            lineage: f.parent,
            name: backend.lineage(&f.parent)?.map(|p| p.charter.name),
        }),
        None => None,
    };
    let v = ShowView {
        lineage: s.lineage,
        name: s.charter.name.clone(),
        summary: s.charter.summary.clone(),
        license: s.charter.license.clone(),
        maintainers: s.charter.maintainers.clone(),
        threshold: s.charter.threshold,
        founder: s.founder,
        created: s.created,
        family: s.family,
        parent,
        fork: s.charter.fork.clone(),
        root: s.root,
        files: s.files,
        counts: Counts::from_map(&s.counts),
        heads: s.fork_point.heads.clone(),
    };
    ctx.emit(&v, || {
        let mut t = format!("commons    {}\nid         {}\n", v.name, v.lineage);
        if !v.summary.is_empty() {
            t.push_str(&format!(
                "summary    {}\n",
                v.summary.replace('\n', "\n           ")
            ));
        }
        t.push_str(&format!("license    {}\n", v.license));
        t.push_str(&format!(
            "founded    {} by {}\n",
            format_time(v.created),
            v.founder
        ));
        t.push_str(&format!(
            "threshold  {} of {} maintainer(s)\n",
            v.threshold,
            v.maintainers.len()
        ));
        for m in &v.maintainers {
            t.push_str(&format!("maintainer {m}\n"));
        }
        if let (Some(p), Some(f)) = (&v.parent, &v.fork) {
            t.push_str(&format!(
                "parent     {} ({})\n",
                p.name.as_deref().unwrap_or("not in this home"),
                p.lineage
            ));
            t.push_str(&format!(
                "fork base  {} head(s){}: {}\n",
                f.heads.len(),
                if f.excluded.is_empty() {
                    String::new()
                } else {
                    format!(", {} excluded", f.excluded.len())
                },
                f.heads
                    .iter()
                    .map(RecordId::short)
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        t.push_str(&format!("state root {}\n", v.root));
        t.push_str(&format!("files      {}\n", v.files));
        t.push_str(&format!("patches    {}\n", v.counts));
        t
    })
}

#[derive(Serialize)]
struct LogEntry {
    patch: RecordId,
    outcome: Outcome,
    author: PublicKey,
    timestamp: u64,
    message: String,
    lineage: LineageId,
    files: usize,
}

/// A listed patch, or `None` if it is no longer stored: reading a damaged record sets it aside
/// and re-indexes the store, so a listing read a moment before can name it.
fn stored_patch(backend: &dyn Backend, id: &RecordId) -> Result<Option<Record>> {
    Ok(backend.get(id)?.filter(|r| r.as_patch().is_some()))
}

/// Says how many listed patches were left out because they are no longer stored.
fn note_missing(missing: usize) {
    if missing > 0 {
        crate::ctx::note(&format!(
            "note: {missing} listed patch(es) are no longer stored (set aside as damaged) and are left out; \
             start commonsd to fetch them again from a peer"
        ));
    }
}

/// `commons log ID`.
pub fn log(ctx: &Ctx, id: &str) -> Result<()> {
    let backend = ctx.backend()?;
    let s = resolve::lineage(backend, id)?;
    let mut entries = Vec::new();
    let mut missing = 0;
    for (pid, outcome) in backend.history(&s.lineage)?.into_iter().rev() {
        let Some(r) = stored_patch(backend, &pid)? else {
            missing += 1;
            continue;
        };
        let Some(p) = r.as_patch() else { continue };
        entries.push(LogEntry {
            patch: pid,
            outcome,
            author: r.author(),
            timestamp: r.timestamp(),
            message: p.message.clone(),
            lineage: p.lineage,
            files: p.changes.len(),
        });
    }
    note_missing(missing);
    ctx.emit(&entries, || {
        if entries.is_empty() {
            return format!(
                "\"{}\" has no accepted patches yet (see `commons patches {}`).",
                s.charter.name,
                s.lineage.short()
            );
        }
        let mut t = String::new();
        for e in &entries {
            let outcome = match e.outcome {
                Outcome::Applied => "",
                Outcome::Conflicted => "  (conflicted: changed nothing)",
            };
            t.push_str(&format!(
                "patch {}{outcome}\nAuthor: {}\nDate:   {}\nFiles:  {}\n\n    {}\n\n",
                e.patch,
                e.author,
                format_time(e.timestamp),
                e.files,
                e.message.replace('\n', "\n    ")
            ));
        }
        t
    })
}

#[derive(Serialize)]
struct PatchItem {
    patch: RecordId,
    status: PatchStatus,
    author: PublicKey,
    timestamp: u64,
    proposed_to: LineageId,
    message: String,
    files: usize,
}

/// `commons patches ID [--status S]`.
pub fn patches(ctx: &Ctx, id: &str, status: Option<PatchStatus>) -> Result<()> {
    let backend = ctx.backend()?;
    let s = resolve::lineage(backend, id)?;
    let mut items = Vec::new();
    let mut missing = 0;
    for (pid, st) in backend.patches(&s.lineage, status)? {
        let Some(r) = stored_patch(backend, &pid)? else {
            missing += 1;
            continue;
        };
        let Some(p) = r.as_patch() else { continue };
        items.push(PatchItem {
            patch: pid,
            status: st,
            author: r.author(),
            timestamp: r.timestamp(),
            proposed_to: p.lineage,
            message: p.message.clone(),
            files: p.changes.len(),
        });
    }
    items.sort_by_key(|i| (i.timestamp, i.patch));
    note_missing(missing);
    ctx.emit(&items, || {
        if items.is_empty() {
            return format!(
                "No {}patches in \"{}\".",
                status.map(|s| format!("{s} ")).unwrap_or_default(),
                s.charter.name
            );
        }
        let mut t = String::new();
        for i in &items {
            t.push_str(&format!(
                "{}  {:10}  {}  {}  {}{}\n",
                i.patch.short(),
                i.status.to_string(),
                format_time(i.timestamp),
                i.author.short(),
                first_line(&i.message),
                if i.proposed_to == s.lineage {
                    String::new()
                } else {
                    format!("  (proposed to {})", i.proposed_to.short())
                }
            ));
        }
        t
    })
}

#[derive(Serialize)]
struct ValidationView {
    validation: RecordId,
    author: PublicKey,
    lineage: LineageId,
    verdict: commons_core::Verdict,
    note: String,
    timestamp: u64,
    maintainer: bool,
}

#[derive(Serialize)]
struct StatusIn {
    lineage: LineageId,
    name: String,
    status: PatchStatus,
}

#[derive(Serialize)]
struct ChangeView {
    path: String,
    change: ChangeKind,
    before: Option<BlobHash>,
    after: Option<BlobHash>,
}

#[derive(Serialize)]
struct PatchView {
    patch: RecordId,
    lineage: LineageId,
    author: PublicKey,
    timestamp: u64,
    parents: Vec<RecordId>,
    message: String,
    changes: Vec<ChangeView>,
    validations: Vec<ValidationView>,
    statuses: Vec<StatusIn>,
}

fn side(backend: &dyn Backend, hash: Option<BlobHash>) -> Result<Side> {
    let Some(hash) = hash else {
        return Ok(Side::Absent);
    };
    let Some(mut blob) = backend.open_blob(&hash)? else {
        return Ok(Side::Missing(hash));
    };
    let mut bytes = Vec::new();
    (&mut blob.reader)
        .take(MAX_DIFF_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::error(format!("cannot read blob {hash}: {e}")))?;
    Ok(Side::Content {
        hash,
        len: blob.len,
        bytes,
    })
}

/// `commons patch show PATCH`.
pub fn patch_show(ctx: &Ctx, input: &str) -> Result<()> {
    let backend = ctx.backend()?;
    let record = resolve::patch(backend, input)?;
    let Some(patch) = record.as_patch() else {
        return Err(CliError::error("not a patch"));
    };
    let lineages = backend.lineages()?;
    let by_id: BTreeMap<LineageId, &LineageSummary> =
        lineages.iter().map(|l| (l.lineage, l)).collect();
    let mut validations = Vec::new();
    for v in backend.validations_of(&record.id())? {
        let Some(body) = v.as_validation() else {
            continue;
        };
        validations.push(ValidationView {
            validation: v.id(),
            author: v.author(),
            lineage: body.lineage,
            verdict: body.verdict,
            note: body.note.clone(),
            timestamp: v.timestamp(),
            maintainer: by_id
                .get(&body.lineage)
                .is_some_and(|l| l.charter.maintainers.contains(&v.author())),
        });
    }
    validations.sort_by_key(|v| (v.timestamp, v.validation));
    let family_of = |l: &LineageSummary| l.family.unwrap_or(l.lineage);
    let family = by_id.get(&patch.lineage).map(|l| family_of(l));
    let mut statuses = Vec::new();
    for l in &lineages {
        // Only the patch's family can list it; without its charter, ask every lineage.
        if family.is_some_and(|f| family_of(l) != f) {
            continue;
        }
        if let Some(st) = backend.status(&l.lineage, &record.id())? {
            statuses.push(StatusIn {
                lineage: l.lineage,
                name: l.charter.name.clone(),
                status: st,
            });
        }
    }
    let view = PatchView {
        patch: record.id(),
        lineage: patch.lineage,
        author: record.author(),
        timestamp: record.timestamp(),
        parents: patch.parents.clone(),
        message: patch.message.clone(),
        changes: patch
            .changes
            .iter()
            .map(|c| ChangeView {
                path: c.path.clone(),
                change: ChangeKind::of(c.before, c.after),
                before: c.before,
                after: c.after,
            })
            .collect(),
        validations,
        statuses,
    };
    if ctx.json {
        return ctx.emit(&view, String::new);
    }
    let name_of = |l: &LineageId| {
        by_id
            .get(l)
            .map(|s| s.charter.name.clone())
            .unwrap_or_else(|| l.short())
    };
    let mut t = format!(
        "patch   {}\nto      {} ({})\nAuthor: {}\nDate:   {}\n",
        view.patch,
        name_of(&view.lineage),
        view.lineage.short(),
        view.author,
        format_time(view.timestamp)
    );
    if !view.parents.is_empty() {
        t.push_str(&format!(
            "Parents: {}\n",
            view.parents
                .iter()
                .map(RecordId::short)
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    t.push_str(&format!(
        "\n    {}\n\n",
        view.message.replace('\n', "\n    ")
    ));
    for s in &view.statuses {
        t.push_str(&format!(
            "status: {} in \"{}\" ({})\n",
            s.status,
            s.name,
            s.lineage.short()
        ));
    }
    if view.statuses.is_empty() {
        t.push_str("status: not listed in any commons of this home\n");
    }
    for v in &view.validations {
        t.push_str(&format!(
            "{} by {} in \"{}\" on {}{}{}\n",
            format!("{:?}", v.verdict).to_lowercase(),
            v.author,
            name_of(&v.lineage),
            format_time(v.timestamp),
            if v.maintainer {
                ""
            } else {
                " (not a maintainer: not counted)"
            },
            if v.note.is_empty() {
                String::new()
            } else {
                format!(": {}", v.note)
            }
        ));
    }
    t.push('\n');
    for c in &patch.changes {
        let before = side(backend, c.before)?;
        let after = side(backend, c.after)?;
        t.push_str(&diff::render(&c.path, &before, &after));
    }
    crate::ctx::out(&t)
}

#[derive(Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Role {
    Ancestor,
    This,
    Descendant,
}

#[derive(Serialize)]
struct TreeNode {
    lineage: LineageId,
    name: String,
    parent: Option<LineageId>,
    role: Role,
    depth: usize,
    root: StateRoot,
}

/// `commons lineage ID`: ancestors (root first), the commons asked about, then its descendants.
pub fn lineage(ctx: &Ctx, id: &str) -> Result<()> {
    let backend = ctx.backend()?;
    let asked = resolve::lineage(backend, id)?;
    let all = backend.lineages()?;
    let by_id: BTreeMap<LineageId, &LineageSummary> = all.iter().map(|l| (l.lineage, l)).collect();
    let mut children: BTreeMap<LineageId, Vec<&LineageSummary>> = BTreeMap::new();
    for l in &all {
        if let Some(f) = &l.charter.fork {
            children.entry(f.parent).or_default().push(l);
        }
    }
    // Ancestors, walking up (bounded by the number of lineages: no cycles are possible, but the
    // walk is bounded anyway).
    let mut ancestors = Vec::new();
    let mut cur = asked.charter.fork.as_ref().map(|f| f.parent);
    while let Some(p) = cur {
        if ancestors.len() > all.len() {
            break;
        }
        match by_id.get(&p) {
            Some(s) => {
                ancestors.push(*s);
                cur = s.charter.fork.as_ref().map(|f| f.parent);
            }
            None => break,
        }
    }
    ancestors.reverse();
    let mut nodes: Vec<TreeNode> = Vec::new();
    let node = |s: &LineageSummary, role, depth| TreeNode {
        lineage: s.lineage,
        name: s.charter.name.clone(),
        parent: s.charter.fork.as_ref().map(|f| f.parent),
        role,
        depth,
        root: s.root,
    };
    for (depth, a) in ancestors.iter().enumerate() {
        nodes.push(node(a, Role::Ancestor, depth));
    }
    let base_depth = ancestors.len();
    nodes.push(node(&asked, Role::This, base_depth));
    // Descendants, depth first, iteratively.
    let mut stack: Vec<(&LineageSummary, usize)> = children
        .get(&asked.lineage)
        .map(|c| c.iter().rev().map(|s| (*s, base_depth + 1)).collect())
        .unwrap_or_default();
    while let Some((s, depth)) = stack.pop() {
        if nodes.len() > all.len() {
            break;
        }
        nodes.push(node(s, Role::Descendant, depth));
        if let Some(c) = children.get(&s.lineage) {
            stack.extend(c.iter().rev().map(|x| (*x, depth + 1)));
        }
    }
    ctx.emit(&nodes, || {
        let mut t = String::new();
        for n in &nodes {
            let marker = match n.role {
                Role::Ancestor => "ancestor",
                Role::This => "this one",
                Role::Descendant => "descendant",
            };
            let branch = if n.depth == 0 { "" } else { "└─ " };
            t.push_str(&format!(
                "{}{branch}{} {}  [{marker}]{}\n",
                "   ".repeat(n.depth.saturating_sub(1)),
                n.lineage.short(),
                n.name,
                if n.role == Role::This { " *" } else { "" }
            ));
        }
        if ancestors.is_empty() && nodes.len() == 1 {
            t.push_str("(no forks yet; make one with `commons fork ID`)\n");
        }
        t
    })
}
