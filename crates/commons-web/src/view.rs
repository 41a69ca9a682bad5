//! What each page shows, read from the store: plain serialisable structs. The HTML pages
//! (`pages.rs`) render them and the JSON API (`/api/…`) returns them as they are, so the API
//! mirrors every page by construction.
//!
//! Everything here is blocking (store reads); handlers run it on a blocking thread. Every list
//! is bounded: paginated ([`PAGE`]) or capped, so no request costs more than a page of work
//! beyond the store's own reads.

use std::collections::BTreeMap;

use commons_core::state::PatchStatus;
use commons_core::tree::Outcome;
use commons_core::{BlobHash, LineageId, PublicKey, Record, RecordId, Verdict};
use commons_store::{LineageSummary, StoreError};
use serde::Serialize;

use crate::NodeInfo;
use crate::content;
use crate::reader::Reader as Store;

/// Items per page of a list.
pub const PAGE: usize = 50;
/// Entries shown of one directory.
pub const MAX_DIR_ENTRIES: usize = 2_000;

/// Why a view could not be made.
#[derive(Debug)]
pub enum ViewError {
    /// Nothing of that id or path here (404).
    NotFound(String),
    /// The request itself is wrong (400).
    Bad(String),
    /// The store failed (500).
    Store(StoreError),
}

impl From<StoreError> for ViewError {
    fn from(e: StoreError) -> Self {
        ViewError::Store(e)
    }
}

type Result<T> = std::result::Result<T, ViewError>;

/// A person, by key.
#[derive(Debug, Clone, Serialize)]
pub struct Person {
    /// `did:key:z6Mk…`.
    pub did: String,
    /// Its last characters, for tables.
    pub short: String,
}

impl From<PublicKey> for Person {
    fn from(k: PublicKey) -> Self {
        Person {
            did: k.to_did(),
            short: k.short(),
        }
    }
}

/// A lineage, named.
#[derive(Debug, Clone, Serialize)]
pub struct LineageRef {
    /// Its id (hex).
    pub id: String,
    /// Its charter's name (somebody's text).
    pub name: String,
}

pub(crate) fn lineage_ref(s: &LineageSummary) -> LineageRef {
    LineageRef {
        id: s.lineage.to_string(),
        name: s.charter.name.clone(),
    }
}

pub(crate) fn counts(s: &LineageSummary) -> BTreeMap<String, usize> {
    let mut c: BTreeMap<String, usize> = [
        PatchStatus::Pending,
        PatchStatus::Accepted,
        PatchStatus::Rejected,
        PatchStatus::Conflicted,
    ]
    .iter()
    .map(|st| (st.to_string(), 0))
    .collect();
    for (st, n) in &s.counts {
        c.insert(st.to_string(), *n);
    }
    c
}

/// One commons in a list.
#[derive(Debug, Clone, Serialize)]
pub struct CommonsItem {
    /// Which.
    pub lineage: LineageRef,
    /// Its summary line.
    pub summary: String,
    /// The lineage it forked from, if any.
    pub parent: Option<String>,
    /// Whether this node follows its family.
    pub followed: bool,
    /// Patches per status.
    pub counts: BTreeMap<String, usize>,
    /// Files in its canonical tree.
    pub files: u64,
    /// Its charter's time (ms since the epoch).
    pub created: u64,
}

/// Entries of recent activity on the home page.
pub const RECENT: usize = 20;

/// The home page.
#[derive(Debug, Clone, Serialize)]
pub struct Home {
    /// The node.
    pub node: NodeInfo,
    /// The newest records this node stored since it started, newest first.
    pub activity: Vec<crate::activity::ActivityEntry>,
    /// Records stored.
    pub records: u64,
    /// Every commons held, followed first, then newest first.
    pub commons: Vec<CommonsItem>,
}

/// Reads the home page.
pub fn home(
    store: &Store,
    node: NodeInfo,
    mut activity: Vec<crate::activity::ActivityEntry>,
) -> Result<Home> {
    let all = store.lineages()?;
    for a in &mut activity {
        a.lineage_name = all
            .iter()
            .find(|s| s.lineage.to_string() == a.lineage)
            .map(|s| s.charter.name.clone());
    }
    let mut commons: Vec<CommonsItem> = all
        .iter()
        .map(|s| CommonsItem {
            lineage: lineage_ref(s),
            summary: s.charter.summary.clone(),
            parent: s.charter.fork.as_ref().map(|f| f.parent.to_string()),
            followed: node.followed.contains(&s.lineage.to_string())
                || s.family
                    .is_some_and(|f| node.followed.contains(&f.to_string())),
            counts: counts(s),
            files: s.files,
            created: s.created,
        })
        .collect();
    commons.sort_by(|a, b| b.followed.cmp(&a.followed).then(b.created.cmp(&a.created)));
    Ok(Home {
        records: store.record_count()?,
        node,
        activity,
        commons,
    })
}

/// Finds a lineage by id.
pub(crate) fn summary(store: &Store, id: &str) -> Result<LineageSummary> {
    let lineage: LineageId = id
        .parse()
        .map_err(|_| ViewError::Bad(format!("`{id}` is not a commons id (64 hex digits)")))?;
    store
        .lineage(&lineage)?
        .ok_or_else(|| ViewError::NotFound(format!("no commons {id} on this node")))
}

/// A directory entry or file of a tree.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Its last component.
    pub name: String,
    /// Its whole path.
    pub path: String,
    /// A directory (its files below) or a file (its blob).
    pub dir: bool,
    /// The blob of a file.
    pub blob: Option<String>,
}

/// The entries directly below `dir` ("" for the root) of a tree, directories first.
pub(crate) fn list_dir(tree: &BTreeMap<String, BlobHash>, dir: &str) -> (Vec<Entry>, usize) {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut dirs: Vec<Entry> = Vec::new();
    let mut files: Vec<Entry> = Vec::new();
    let mut total = 0;
    // A subdirectory is listed once, then skipped whole: every path below `d/` sorts before
    // `d0` ('0' follows '/'), so the walk costs O(entries × log n), not O(paths below).
    let mut from = prefix.clone();
    while let Some((path, blob)) = tree.range(from.clone()..).next() {
        let Some(rest) = path.strip_prefix(&prefix) else {
            break;
        };
        total += 1;
        let room = dirs.len() + files.len() < MAX_DIR_ENTRIES;
        match rest.split_once('/') {
            Some((d, _)) => {
                if room {
                    dirs.push(Entry {
                        name: d.to_string(),
                        path: format!("{prefix}{d}"),
                        dir: true,
                        blob: None,
                    });
                }
                from = format!("{prefix}{d}0");
            }
            None => {
                if room {
                    files.push(Entry {
                        name: rest.to_string(),
                        path: path.clone(),
                        dir: false,
                        blob: Some(blob.to_string()),
                    });
                }
                from = format!("{path}\u{0}");
            }
        }
    }
    dirs.extend(files);
    (dirs, total)
}

/// A commons' page.
#[derive(Debug, Clone, Serialize)]
pub struct CommonsView {
    /// Which.
    pub lineage: LineageRef,
    /// Its summary line.
    pub summary: String,
    /// Its license (an SPDX expression).
    pub license: String,
    /// The SPDX page of the license, when it is one known identifier.
    pub license_url: Option<String>,
    /// Who founded it.
    pub founder: Person,
    /// Its maintainers.
    pub maintainers: Vec<Person>,
    /// Validations needed to accept.
    pub threshold: u16,
    /// When (ms since the epoch).
    pub created: u64,
    /// The lineage it forked from.
    pub parent: Option<LineageRef>,
    /// Its forks held here.
    pub forks: Vec<LineageRef>,
    /// The root of its family.
    pub family: Option<String>,
    /// The state root (LtHash of the canonical tree).
    pub state_root: String,
    /// Patches per status.
    pub counts: BTreeMap<String, usize>,
    /// Files in the canonical tree.
    pub files: u64,
    /// The top of the canonical tree.
    pub tree: Vec<Entry>,
    /// Entries at the top (more than `tree` holds when capped).
    pub tree_total: usize,
}

/// The SPDX page of a license expression that is one identifier.
pub fn license_url(license: &str) -> Option<String> {
    let id = spdx::license_id(license.trim())?;
    Some(format!("https://spdx.org/licenses/{}.html", id.name))
}

/// Reads a commons' page.
pub fn commons(store: &Store, id: &str) -> Result<CommonsView> {
    let s = summary(store, id)?;
    let all = store.lineages()?;
    let parent = s.charter.fork.as_ref().map(|f| {
        all.iter()
            .find(|o| o.lineage == f.parent)
            .map(lineage_ref)
            .unwrap_or(LineageRef {
                id: f.parent.to_string(),
                name: "(not on this node)".into(),
            })
    });
    let forks = all
        .iter()
        .filter(|o| {
            o.charter
                .fork
                .as_ref()
                .is_some_and(|f| f.parent == s.lineage)
        })
        .map(lineage_ref)
        .collect();
    let tree = store.tree(&s.lineage)?;
    let (entries, total) = list_dir(&tree, "");
    Ok(CommonsView {
        lineage: lineage_ref(&s),
        summary: s.charter.summary.clone(),
        license_url: license_url(&s.charter.license),
        license: s.charter.license.clone(),
        founder: s.founder.into(),
        maintainers: s.charter.maintainers.iter().map(|k| (*k).into()).collect(),
        threshold: s.charter.threshold,
        created: s.created,
        parent,
        forks,
        family: s.family.map(|f| f.to_string()),
        state_root: s.root.to_string(),
        counts: counts(&s),
        files: s.files,
        tree: entries,
        tree_total: total,
    })
}

/// One patch in a list.
#[derive(Debug, Clone, Serialize)]
pub struct PatchItem {
    /// Its id.
    pub id: String,
    /// The first line of its message.
    pub title: String,
    /// Who proposed it.
    pub author: Person,
    /// When (ms since the epoch).
    pub timestamp: u64,
    /// Its status in the lineage listed.
    pub status: String,
}

/// A page of a lineage's patches.
#[derive(Debug, Clone, Serialize)]
pub struct PatchList {
    /// Whose.
    pub lineage: LineageRef,
    /// The lineages of the family, to filter by.
    pub family: Vec<LineageRef>,
    /// The status filtered on.
    pub status: Option<String>,
    /// This page (from 1).
    pub page: usize,
    /// Pages in all.
    pub pages: usize,
    /// Patches matching.
    pub total: usize,
    /// This page's patches, in descending id order.
    pub items: Vec<PatchItem>,
}

pub(crate) fn title(message: &str) -> String {
    let line = message.lines().next().unwrap_or("");
    line.chars().take(200).collect()
}

/// Page `page` (from 1) of `all` read from its end: the last item first.
fn page_from_end<T: Clone>(all: &[T], page: usize) -> (Vec<(usize, T)>, usize, usize) {
    let pages = all.len().div_ceil(PAGE).max(1);
    let page = page.clamp(1, pages);
    let skip = (page - 1) * PAGE;
    let items = all
        .iter()
        .enumerate()
        .rev()
        .skip(skip)
        .take(PAGE)
        .map(|(i, x)| (i, x.clone()))
        .collect();
    (items, page, pages)
}

fn family_refs(store: &Store, s: &LineageSummary) -> Result<Vec<LineageRef>> {
    let Some(family) = s.family else {
        return Ok(vec![lineage_ref(s)]);
    };
    Ok(store
        .lineages()?
        .iter()
        .filter(|o| o.family == Some(family))
        .map(lineage_ref)
        .collect())
}

/// Reads a page of a lineage's patches.
pub fn patches(store: &Store, id: &str, status: Option<&str>, page: usize) -> Result<PatchList> {
    let s = summary(store, id)?;
    let status = match status.filter(|st| !st.is_empty() && *st != "all") {
        Some(st) => Some(st.parse::<PatchStatus>().map_err(|_| {
            ViewError::Bad(format!(
                "unknown status `{st}`: pending, accepted, rejected or conflicted"
            ))
        })?),
        None => None,
    };
    let all = store.patches(&s.lineage, status)?;
    // The store lists patches by id; descending, so pages are stable as patches arrive (a list
    // by date would need an index by time).
    let (slice, page, pages) = page_from_end(&all, page);
    let records = store.get_many(slice.iter().map(|(_, (id, _))| *id).collect())?;
    let items = slice
        .iter()
        .zip(records)
        .filter_map(|((_, (id, st)), r)| {
            let r = r?;
            let p = r.as_patch()?;
            Some(PatchItem {
                id: id.to_string(),
                title: title(&p.message),
                author: r.author().into(),
                timestamp: r.timestamp(),
                status: st.to_string(),
            })
        })
        .collect();
    Ok(PatchList {
        family: family_refs(store, &s)?,
        lineage: lineage_ref(&s),
        status: status.map(|s| s.to_string()),
        page,
        pages,
        total: all.len(),
        items,
    })
}

/// A page of a lineage's accepted history.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryView {
    /// Whose.
    pub lineage: LineageRef,
    /// This page (from 1).
    pub page: usize,
    /// Pages in all.
    pub pages: usize,
    /// Patches in the history.
    pub total: usize,
    /// This page, newest first.
    pub items: Vec<HistoryItem>,
}

/// One accepted patch.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryItem {
    /// Its position in the history (from 1).
    pub n: usize,
    /// The patch.
    pub patch: PatchItem,
    /// Applied, or conflicted (accepted, changed nothing).
    pub outcome: String,
}

/// Reads a page of the accepted history.
pub fn history(store: &Store, id: &str, page: usize) -> Result<HistoryView> {
    let s = summary(store, id)?;
    let log = store.history(&s.lineage)?;
    let (slice, page, pages) = page_from_end(&log, page);
    let records = store.get_many(slice.iter().map(|(_, (id, _))| *id).collect())?;
    let items = slice
        .iter()
        .zip(records)
        .filter_map(|((i, (id, o)), r)| {
            let n = &(i + 1);
            let r = r?;
            let p = r.as_patch()?;
            Some(HistoryItem {
                n: *n,
                outcome: match o {
                    Outcome::Applied => "applied".into(),
                    Outcome::Conflicted => "conflicted".into(),
                },
                patch: PatchItem {
                    id: id.to_string(),
                    title: title(&p.message),
                    author: r.author().into(),
                    timestamp: r.timestamp(),
                    status: "accepted".into(),
                },
            })
        })
        .collect();
    Ok(HistoryView {
        lineage: lineage_ref(&s),
        page,
        pages,
        total: log.len(),
        items,
    })
}

/// A validation of a patch.
#[derive(Debug, Clone, Serialize)]
pub struct ValidationView {
    /// Its id.
    pub id: String,
    /// Who signed it.
    pub by: Person,
    /// Whether `by` maintains the lineage it names.
    pub maintainer: bool,
    /// In which lineage.
    pub lineage: LineageRef,
    /// accept or reject.
    pub verdict: String,
    /// The note (somebody's text).
    pub note: String,
    /// When.
    pub timestamp: u64,
}

/// One change of a patch.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeView {
    /// The path (somebody's text).
    pub path: String,
    /// added, removed or modified.
    pub kind: String,
    /// The blob before.
    pub before: Option<String>,
    /// The blob after.
    pub after: Option<String>,
    /// What can be shown of the two contents.
    pub diff: content::Diff,
}

/// The status of a patch in one lineage of its family.
#[derive(Debug, Clone, Serialize)]
pub struct LineageStatus {
    /// Which lineage.
    pub lineage: LineageRef,
    /// Its status there (`None`: not listed there).
    pub status: Option<String>,
}

/// A patch's page.
#[derive(Debug, Clone, Serialize)]
pub struct PatchView {
    /// Its id.
    pub id: String,
    /// The lineage it was proposed to.
    pub lineage: LineageRef,
    /// Who proposed it.
    pub author: Person,
    /// When.
    pub timestamp: u64,
    /// Its message (somebody's text).
    pub message: String,
    /// The patches it builds on.
    pub parents: Vec<String>,
    /// What it changes.
    pub changes: Vec<ChangeView>,
    /// Every validation of it, in any lineage.
    pub validations: Vec<ValidationView>,
    /// Its status in every lineage of the family.
    pub statuses: Vec<LineageStatus>,
    /// Lineages that accepted it although the lineage it was proposed to rejected it.
    pub taken_by_forks: Vec<LineageRef>,
}

/// Most changes of one patch whose contents are compared.
pub const MAX_DIFFED_CHANGES: usize = 50;

/// Reads a patch's page.
pub fn patch(store: &Store, id: &str) -> Result<PatchView> {
    let rid: RecordId = id
        .parse()
        .map_err(|_| ViewError::Bad(format!("`{id}` is not a patch id (64 hex digits)")))?;
    let r = store
        .get(&rid)?
        .ok_or_else(|| ViewError::NotFound(format!("no patch {id} on this node")))?;
    let p = r
        .as_patch()
        .ok_or_else(|| ViewError::NotFound(format!("{id} is a record but not a patch")))?;
    let all = store.lineages()?;
    let home = all.iter().find(|s| s.lineage == p.lineage);
    let lineage = home.map(lineage_ref).unwrap_or(LineageRef {
        id: p.lineage.to_string(),
        name: "(not on this node)".into(),
    });
    let family_lineages: Vec<&LineageSummary> = match home.and_then(|h| h.family) {
        Some(f) => all.iter().filter(|s| s.family == Some(f)).collect(),
        None => home.into_iter().collect(),
    };
    let mut statuses = Vec::new();
    for s in &family_lineages {
        statuses.push(LineageStatus {
            lineage: lineage_ref(s),
            status: store.status(&s.lineage, &rid)?.map(|st| st.to_string()),
        });
    }
    let rejected_home = statuses
        .iter()
        .any(|s| s.lineage.id == lineage.id && s.status.as_deref() == Some("rejected"));
    let taken_by_forks = match rejected_home {
        true => statuses
            .iter()
            .filter(|s| s.lineage.id != lineage.id && s.status.as_deref() == Some("accepted"))
            .map(|s| s.lineage.clone())
            .collect(),
        false => Vec::new(),
    };
    let validations = store
        .validations_of(&rid)?
        .iter()
        .filter_map(|v: &Record| {
            let body = v.as_validation()?;
            let in_lineage = all.iter().find(|s| s.lineage == body.lineage);
            Some(ValidationView {
                id: v.id().to_string(),
                by: v.author().into(),
                maintainer: in_lineage.is_some_and(|s| s.charter.maintainers.contains(&v.author())),
                lineage: in_lineage.map(lineage_ref).unwrap_or(LineageRef {
                    id: body.lineage.to_string(),
                    name: "(not on this node)".into(),
                }),
                verdict: match body.verdict {
                    Verdict::Accept => "accept".into(),
                    Verdict::Reject => "reject".into(),
                },
                note: body.note.clone(),
                timestamp: v.timestamp(),
            })
        })
        .collect();
    let changes = p
        .changes
        .iter()
        .enumerate()
        .map(|(i, c)| ChangeView {
            path: c.path.clone(),
            kind: match (c.before, c.after) {
                (None, Some(_)) => "added".into(),
                (Some(_), None) => "removed".into(),
                _ => "modified".into(),
            },
            before: c.before.map(|h| h.to_string()),
            after: c.after.map(|h| h.to_string()),
            diff: match i < MAX_DIFFED_CHANGES {
                true => content::diff(store.blobs(), c.before.as_ref(), c.after.as_ref()),
                false => content::Diff::Skipped("too many changes in this patch to compare".into()),
            },
        })
        .collect();
    Ok(PatchView {
        id: rid.to_string(),
        lineage,
        author: r.author().into(),
        timestamp: r.timestamp(),
        message: p.message.clone(),
        parents: p.parents.iter().map(|x| x.to_string()).collect(),
        changes,
        validations,
        statuses,
        taken_by_forks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory lists each subdirectory once and each file, directories first, whatever the
    /// names around the `/` (`a.txt` sorts between `a` and `a/…`).
    #[test]
    fn a_directory_lists_its_entries_once() {
        let h = BlobHash::of(b"x");
        let mut tree = BTreeMap::new();
        for p in ["a.txt", "a/b", "a/c/d", "a0", "b/x", "z", "a/c/e"] {
            tree.insert(p.to_string(), h);
        }
        for i in 0..10_000 {
            tree.insert(format!("big/f{i:05}"), h);
        }
        let (root, total) = list_dir(&tree, "");
        let names: Vec<(&str, bool)> = root.iter().map(|e| (e.name.as_str(), e.dir)).collect();
        assert_eq!(
            names,
            [
                ("a", true),
                ("b", true),
                ("big", true),
                ("a.txt", false),
                ("a0", false),
                ("z", false)
            ]
        );
        assert_eq!(total, 6);
        let (a, _) = list_dir(&tree, "a");
        let names: Vec<&str> = a.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(names, ["a/c", "a/b"]);
        let (big, total) = list_dir(&tree, "big");
        assert_eq!(total, 10_000);
        assert_eq!(big.len(), MAX_DIR_ENTRIES);
    }
}
