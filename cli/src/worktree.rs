//! Working copies: a directory of plain files with `.commons/checkout.json` beside them, which
//! remembers the lineage, the base tree (path → blob hash) and the base heads (the parents of the
//! next proposed patch).
//!
//! The walk is iterative (no recursion), skips `.commons` and `.git`, refuses paths that are not
//! clean UTF-8 relative paths, and hashes files as streams.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use commons_core::record::check_path;
use commons_core::{BlobHash, LineageId, RecordId, StateRoot};
use serde::{Deserialize, Serialize};

use crate::error::{CliError, Result};

/// The directory inside a working copy that holds its metadata.
pub const META_DIR: &str = ".commons";
const META_FILE: &str = "checkout.json";
/// Directory names the walk never enters.
pub const SKIPPED_DIRS: [&str; 2] = [META_DIR, ".git"];
/// Version of `checkout.json`.
const META_VERSION: u32 = 1;
/// Largest `checkout.json` read: a base tree of many thousand paths fits easily.
const MAX_META_BYTES: u64 = 256 * 1024 * 1024;

/// What `.commons/checkout.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkout {
    /// Format version.
    pub version: u32,
    /// The lineage checked out.
    pub lineage: LineageId,
    /// Heads of the base: the parents of a proposed patch.
    pub heads: Vec<RecordId>,
    /// The state root of the base.
    pub root: StateRoot,
    /// The base tree.
    pub base: BTreeMap<String, BlobHash>,
    /// Files of `base` that were not written because their content was not in the home
    /// (`checkout --allow-missing`): absent on disk, they count as unchanged, not deleted.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub missing: BTreeSet<String>,
}

impl Checkout {
    /// A checkout record for a base.
    pub fn new(
        lineage: LineageId,
        heads: Vec<RecordId>,
        root: StateRoot,
        base: BTreeMap<String, BlobHash>,
    ) -> Self {
        Self {
            version: META_VERSION,
            lineage,
            heads,
            root,
            base,
            missing: BTreeSet::new(),
        }
    }

    /// Counts the files of `missing` that are still absent on disk as their base version.
    pub fn fill_missing(&self, local: &mut BTreeMap<String, BlobHash>) {
        for path in &self.missing {
            if let Some(h) = self.base.get(path) {
                local.entry(path.clone()).or_insert(*h);
            }
        }
    }

    /// Reads the metadata of the working copy at `dir`.
    pub fn load(dir: &Path) -> Result<Checkout> {
        let path = dir.join(META_DIR).join(META_FILE);
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(CliError::not_found(format!(
                    "{} is not a working copy (no {META_DIR}/{META_FILE})",
                    dir.display()
                ))
                .hint("make one with `commons checkout ID DIR`"));
            }
            Err(e) => return Err(CliError::error(format!("{}: {e}", path.display()))),
        };
        let mut text = String::new();
        file.take(MAX_META_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| CliError::error(format!("{}: {e}", path.display())))?;
        let meta: Checkout = serde_json::from_str(&text).map_err(|e| {
            CliError::error(format!("{} is damaged: {e}", path.display()))
                .hint("check out the commons again into a fresh directory")
        })?;
        if meta.version != META_VERSION {
            return Err(CliError::error(format!(
                "{} has version {}, this build reads {META_VERSION}",
                path.display(),
                meta.version
            ))
            .hint("install a newer commons"));
        }
        Ok(meta)
    }

    /// Writes the metadata atomically (temporary file, then rename).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let meta_dir = dir.join(META_DIR);
        fs::create_dir_all(&meta_dir)
            .map_err(|e| CliError::error(format!("{}: {e}", meta_dir.display())))?;
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| CliError::error(format!("cannot encode checkout metadata: {e}")))?;
        write_atomic(&meta_dir.join(META_FILE), &mut text.as_slice())
    }
}

/// Writes `content` to `path` through a temporary file in the same directory and a rename, so a
/// crash leaves either the old file or the new one.
pub fn write_atomic(path: &Path, content: &mut dyn Read) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let err = |e: io::Error| CliError::error(format!("cannot write {}: {e}", path.display()));
    let mut tmp = tempfile::NamedTempFile::new_in(parent).map_err(err)?;
    io::copy(content, &mut tmp).map_err(err)?;
    tmp.flush().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// [`write_atomic`] of a blob's bytes, checked against its hash as they are copied: a stored
/// copy that rotted on disk is refused (nothing is written) with an error that says what to do.
pub fn write_verified(
    path: &Path,
    content: &mut dyn Read,
    hash: &BlobHash,
    name: &str,
) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let err = |e: io::Error| CliError::error(format!("cannot write {}: {e}", path.display()));
    let mut tmp = tempfile::NamedTempFile::new_in(parent).map_err(err)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = content.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n]).map_err(err)?;
    }
    if BlobHash(*hasher.finalize().as_bytes()) != *hash {
        return Err(CliError::error(format!(
            "the stored content of {name} ({hash}) is damaged: its bytes do not match their hash"
        ))
        .hint("run `commons store verify` (the node moves the copy aside and fetches a good one from its peers), then check out again"));
    }
    tmp.flush().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// The plain BLAKE3 hash of a file, streamed.
pub fn hash_file(path: &Path) -> io::Result<BlobHash> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(fs::File::open(path)?)?;
    Ok(BlobHash(*hasher.finalize().as_bytes()))
}

/// One file found in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Relative `/`-separated path.
    pub path: String,
    /// Where it is on disk.
    pub file: PathBuf,
}

/// Lists the regular files under `root` (not following symlinks), skipping [`SKIPPED_DIRS`].
/// Returns the files sorted by path, and the paths of what was skipped (symlinks, sockets…).
pub fn walk(root: &Path) -> Result<(Vec<Found>, Vec<String>)> {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(root.to_owned(), String::new())];
    let err = |p: &Path, e: io::Error| CliError::error(format!("cannot read {}: {e}", p.display()));
    while let Some((dir, prefix)) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(|e| err(&dir, e))? {
            let entry = entry.map_err(|e| err(&dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(CliError::error(format!(
                    "file name {:?} in {} is not UTF-8",
                    entry.file_name(),
                    dir.display()
                ))
                .hint("rename it: paths in a commons are UTF-8"));
            };
            let rel = if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}/{name}")
            };
            let kind = entry.file_type().map_err(|e| err(&entry.path(), e))?;
            if kind.is_dir() {
                if !SKIPPED_DIRS.contains(&name) {
                    stack.push((entry.path(), rel));
                }
            } else if kind.is_file() {
                check_path(&rel).map_err(|e| {
                    CliError::error(format!("cannot use {}: {e}", entry.path().display()))
                        .hint("rename the file")
                })?;
                files.push(Found {
                    path: rel,
                    file: entry.path(),
                });
            } else {
                skipped.push(rel);
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    skipped.sort();
    Ok((files, skipped))
}

/// The files of a directory with their hashes.
pub fn scan(root: &Path) -> Result<(BTreeMap<String, BlobHash>, Vec<String>)> {
    let (files, skipped) = walk(root)?;
    let mut out = BTreeMap::new();
    for f in files {
        let h = hash_file(&f.file)
            .map_err(|e| CliError::error(format!("cannot read {}: {e}", f.file.display())))?;
        out.insert(f.path, h);
    }
    Ok((out, skipped))
}

/// How a working copy differs from its base.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LocalChanges {
    /// New files.
    pub added: Vec<String>,
    /// Changed files.
    pub modified: Vec<String>,
    /// Removed files.
    pub deleted: Vec<String>,
}

impl LocalChanges {
    /// No change at all.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.deleted.is_empty()
    }

    /// Every changed path.
    pub fn paths(&self) -> BTreeSet<&str> {
        self.added
            .iter()
            .chain(&self.modified)
            .chain(&self.deleted)
            .map(String::as_str)
            .collect()
    }
}

/// Compares a scanned tree with the base.
pub fn changes(
    base: &BTreeMap<String, BlobHash>,
    local: &BTreeMap<String, BlobHash>,
) -> LocalChanges {
    let mut c = LocalChanges::default();
    for (path, h) in local {
        match base.get(path) {
            None => c.added.push(path.clone()),
            Some(b) if b != h => c.modified.push(path.clone()),
            Some(_) => {}
        }
    }
    for path in base.keys() {
        if !local.contains_key(path) {
            c.deleted.push(path.clone());
        }
    }
    c
}

/// Whether `dir` is absent or an empty directory (a place `checkout` may write to).
pub fn is_absent_or_empty(dir: &Path) -> Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => Ok(false),
        Err(e) => Err(CliError::error(format!(
            "cannot read {}: {e}",
            dir.display()
        ))),
    }
}

/// The on-disk path of a tree path.
pub fn disk_path(root: &Path, path: &str) -> PathBuf {
    let mut p = root.to_owned();
    for part in path.split('/') {
        p.push(part);
    }
    p
}

/// Removes a file and then its parent directories while they are empty (up to `root`).
pub fn remove_file(root: &Path, path: &str) -> Result<()> {
    let file = disk_path(root, path);
    match fs::remove_file(&file) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(CliError::error(format!(
                "cannot remove {}: {e}",
                file.display()
            )));
        }
    }
    let mut dir = file.parent().map(Path::to_owned);
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) || fs::remove_dir(&d).is_err() {
            break;
        }
        dir = d.parent().map(Path::to_owned);
    }
    Ok(())
}

/// Whether writing a file at `path` would clash with what is on disk: one of its ancestors is a
/// file, or the path itself is a directory.
pub fn blocked(root: &Path, path: &str) -> bool {
    let mut cur = root.to_owned();
    let parts: Vec<&str> = path.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        cur.push(part);
        let last = i + 1 == parts.len();
        match fs::symlink_metadata(&cur) {
            Ok(m) if !last && !m.is_dir() => return true,
            Ok(m) if last && m.is_dir() => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: u8) -> BlobHash {
        BlobHash([b; 32])
    }

    #[test]
    fn walk_skips_metadata_and_git_and_sorts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("src/deep")).unwrap();
        fs::create_dir_all(root.join(".git/objects")).unwrap();
        fs::create_dir_all(root.join(".commons")).unwrap();
        fs::write(root.join("README"), "hi").unwrap();
        fs::write(root.join("src/deep/a.txt"), "a").unwrap();
        fs::write(root.join("src/b.txt"), "b").unwrap();
        fs::write(root.join(".git/HEAD"), "x").unwrap();
        fs::write(root.join(".commons/checkout.json"), "{}").unwrap();
        std::os::unix::fs::symlink("README", root.join("link")).unwrap();
        let (tree, skipped) = scan(root).unwrap();
        let paths: Vec<&str> = tree.keys().map(String::as_str).collect();
        assert_eq!(paths, ["README", "src/b.txt", "src/deep/a.txt"]);
        assert_eq!(tree["README"], BlobHash::of(b"hi"));
        assert_eq!(skipped, ["link"]);
    }

    #[test]
    fn changes_are_classified() {
        let base: BTreeMap<String, BlobHash> =
            [("a".into(), h(1)), ("b".into(), h(2)), ("c".into(), h(3))].into();
        let local: BTreeMap<String, BlobHash> =
            [("a".into(), h(1)), ("b".into(), h(9)), ("d".into(), h(4))].into();
        let c = changes(&base, &local);
        assert_eq!(c.added, ["d"]);
        assert_eq!(c.modified, ["b"]);
        assert_eq!(c.deleted, ["c"]);
        assert!(changes(&base, &base).is_empty());
    }

    #[test]
    fn checkout_metadata_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Checkout::new(
            LineageId([1; 32]),
            vec![RecordId([2; 32])],
            StateRoot([3; 32]),
            [("x/y".into(), h(4))].into(),
        );
        meta.save(dir.path()).unwrap();
        assert_eq!(Checkout::load(dir.path()).unwrap(), meta);
        let other = tempfile::tempdir().unwrap();
        let err = Checkout::load(other.path()).unwrap_err();
        assert_eq!(err.kind, crate::error::ExitKind::NotFound);
    }

    #[test]
    fn remove_prunes_empty_dirs_and_blocked_sees_clashes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/c"), "x").unwrap();
        fs::write(root.join("f"), "x").unwrap();
        assert!(blocked(root, "f/g"));
        assert!(blocked(root, "a/b"));
        assert!(!blocked(root, "a/b/d"));
        remove_file(root, "a/b/c").unwrap();
        assert!(!root.join("a").exists());
        assert!(root.exists());
    }
}
