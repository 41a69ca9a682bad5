//! The files of a commons: its canonical tree, or its tree as it was after any patch of its
//! accepted history (`?at=PATCH`), a directory listing or a file.
//!
//! The tree at a patch is rebuilt by replaying the accepted log up to it — the changes of each
//! applied patch, in order; a conflicted patch changed nothing — so it costs O(position in the
//! log) record reads; the canonical tree is the store's maintained state. The replay of the
//! whole log equals the canonical tree (tested below).

use std::collections::BTreeMap;

use crate::reader::Reader as Store;
use commons_core::tree::Outcome;
use commons_core::{BlobHash, RecordId};
use serde::Serialize;

use crate::content::{self, Content};
use crate::view::{Entry, LineageRef, ViewError, lineage_ref, list_dir, summary};

/// Records read at once while replaying a log.
const REPLAY_CHUNK: usize = 1_000;

/// A path of a tree: a directory listing or a file.
#[derive(Debug, Clone, Serialize)]
pub struct FilesView {
    /// Whose tree.
    pub lineage: LineageRef,
    /// The tree after this accepted patch (`None`: the canonical tree).
    pub at: Option<AtPatch>,
    /// The path ("" for the root).
    pub path: String,
    /// The entries of a directory.
    pub entries: Vec<Entry>,
    /// Entries of the directory in all (more than `entries` when capped).
    pub total: usize,
    /// The file at `path`, if it is one.
    pub file: Option<FileView>,
}

/// Where in the history a tree is shown.
#[derive(Debug, Clone, Serialize)]
pub struct AtPatch {
    /// The patch.
    pub id: String,
    /// Its position in the accepted log (from 1).
    pub n: usize,
    /// Patches in the log.
    pub of: usize,
}

/// A file.
#[derive(Debug, Clone, Serialize)]
pub struct FileView {
    /// Its blob.
    pub blob: String,
    /// What can be shown of it.
    pub content: Content,
}

/// The tree of a lineage after the first `upto` entries of its accepted `log`.
pub fn replay(
    store: &Store,
    log: &[(RecordId, Outcome)],
    upto: usize,
) -> Result<BTreeMap<String, BlobHash>, ViewError> {
    let mut tree = BTreeMap::new();
    let applied: Vec<RecordId> = log[..upto.min(log.len())]
        .iter()
        .filter(|(_, o)| *o == Outcome::Applied)
        .map(|(id, _)| *id)
        .collect();
    for chunk in applied.chunks(REPLAY_CHUNK) {
        for (id, r) in chunk.iter().zip(store.get_many(chunk.to_vec())?) {
            let r = r.ok_or_else(|| {
                ViewError::NotFound(format!("patch {id} of the history is not on this node"))
            })?;
            let Some(p) = r.as_patch() else { continue };
            for c in &p.changes {
                match c.after {
                    Some(h) => {
                        tree.insert(c.path.clone(), h);
                    }
                    None => {
                        tree.remove(&c.path);
                    }
                }
            }
        }
    }
    Ok(tree)
}

/// Reads a path of a lineage's canonical tree, or of its tree after the accepted patch `at`.
pub fn files(
    store: &Store,
    id: &str,
    path: &str,
    at: Option<&str>,
) -> Result<FilesView, ViewError> {
    let s = summary(store, id)?;
    let path = path.trim_matches('/');
    let (tree, at) = match at.filter(|a| !a.is_empty()) {
        None => (store.tree(&s.lineage)?, None),
        Some(a) => {
            let patch: RecordId = a
                .parse()
                .map_err(|_| ViewError::Bad(format!("`{a}` is not a patch id (64 hex digits)")))?;
            let log = store.history(&s.lineage)?;
            let n = log.iter().position(|(id, _)| *id == patch).ok_or_else(|| {
                ViewError::NotFound(format!(
                    "patch {a} is not in the accepted history of this commons"
                ))
            })? + 1;
            let at = AtPatch {
                id: patch.to_string(),
                n,
                of: log.len(),
            };
            (std::sync::Arc::new(replay(store, &log, n)?), Some(at))
        }
    };
    if let Some(blob) = tree.get(path) {
        return Ok(FilesView {
            lineage: lineage_ref(&s),
            at,
            path: path.to_string(),
            entries: Vec::new(),
            total: 0,
            file: Some(FileView {
                blob: blob.to_string(),
                content: content::read(store.blobs(), blob),
            }),
        });
    }
    let (entries, total) = list_dir(&tree, path);
    if total == 0 && !path.is_empty() {
        return Err(ViewError::NotFound(format!(
            "no file or directory `{path}` in this commons{}",
            if at.is_some() { " at that patch" } else { "" }
        )));
    }
    Ok(FilesView {
        lineage: lineage_ref(&s),
        at,
        path: path.to_string(),
        entries,
        total,
        file: None,
    })
}

#[cfg(test)]
mod tests {
    use commons_core::{
        Body, Change, Charter, LineageId, Patch, Record, SecretKey, Validation, Verdict,
    };

    use super::*;

    fn sign(k: &SecretKey, ts: u64, body: Body) -> Record {
        Record::sign(k, ts, body).expect("valid record")
    }

    /// A chain of 300 patches that add, change and delete files in 30 directories, each
    /// accepted: the replay of the whole log is the canonical tree, and a replay up to a patch
    /// holds what it added and not what came after.
    #[test]
    fn the_replayed_log_is_the_canonical_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(commons_store::Store::open(dir.path()).expect("store"));
        let m = SecretKey::from_seed([3; 32]);
        let charter = sign(
            &m,
            1,
            Body::Charter(Charter {
                name: "replay".into(),
                summary: String::new(),
                license: "CC0-1.0".into(),
                maintainers: vec![m.public()],
                threshold: 1,
                fork: None,
            }),
        );
        let l = LineageId::from(charter.id());
        let mut records = vec![charter];
        let mut current: BTreeMap<String, BlobHash> = BTreeMap::new();
        let mut parent = None;
        let mut ids = Vec::new();
        for i in 0..300u64 {
            let path = format!("d{}/f{}", i % 30, i % 45);
            let before = current.get(&path).copied();
            let after = match i % 7 {
                6 if before.is_some() => None,
                _ => Some(BlobHash::of(&i.to_le_bytes())),
            };
            match after {
                Some(h) => current.insert(path.clone(), h),
                None => current.remove(&path),
            };
            let p = sign(
                &m,
                10 + i,
                Body::Patch(Patch {
                    lineage: l,
                    parents: parent.into_iter().collect(),
                    changes: vec![Change {
                        path,
                        before,
                        after,
                    }],
                    message: format!("p{i}"),
                }),
            );
            parent = Some(p.id());
            ids.push(p.id());
            let v = sign(
                &m,
                10_000 + i,
                Body::Validation(Validation {
                    lineage: l,
                    patch: p.id(),
                    verdict: Verdict::Accept,
                    note: String::new(),
                }),
            );
            records.push(p);
            records.push(v);
        }
        store.put(records).expect("put");
        let log = store.history(&l).expect("history");
        assert_eq!(log.len(), 300);
        assert_eq!(
            replay(&store, &log, log.len()).expect("replay"),
            *store.tree(&l).expect("tree")
        );
        assert_eq!(replay(&store, &log, log.len()).expect("replay"), current);
        let view = files(&store, &l.to_string(), "d5/f5", Some(&ids[5].to_string())).expect("at");
        assert!(
            view.file.is_some(),
            "the file the 6th patch added is there at it"
        );
        assert_eq!(view.at.as_ref().map(|a| a.n), Some(6));
        let early = files(&store, &l.to_string(), "", Some(&ids[0].to_string())).expect("at 1");
        assert_eq!(early.total, 1, "after the first patch: one directory");
        assert!(matches!(
            files(&store, &l.to_string(), "d29", Some(&ids[3].to_string())),
            Err(ViewError::NotFound(_))
        ));
    }
}
