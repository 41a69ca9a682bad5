//! The canonical file tree of a lineage, how a patch applies to it, and the state root.
//!
//! The state root is a homomorphic set hash (LtHash with 1024 lanes of 16 bits): every entry
//! `(path, blob)` is expanded by BLAKE3's extendable output into 1024 lanes, and the tree's
//! accumulator is the lane-wise sum of its entries modulo 2^16. Adding or removing one entry is
//! O(1), whatever the size of the tree, and the result does not depend on the order of the
//! operations. The root is BLAKE3 (derive-key mode) of the accumulator.

use std::collections::BTreeMap;
use std::fmt;

use crate::id::{BlobHash, StateRoot};
use crate::record::Patch;

/// Number of 16-bit lanes in the accumulator (2048 bytes, as in LtHash16).
pub const LANES: usize = 1024;
const ENTRY_CONTEXT: &str = "commons 2026-11-22 tree entry v1";
const ROOT_CONTEXT: &str = "commons 2026-11-22 state root v1";

/// A set hash over the entries of a tree.
#[derive(Clone, PartialEq, Eq)]
pub struct Accumulator(Box<[u16; LANES]>);

impl Default for Accumulator {
    fn default() -> Self {
        Self(Box::new([0; LANES]))
    }
}

impl fmt::Debug for Accumulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Accumulator({})", self.root().short())
    }
}

fn entry_lanes(path: &str, blob: &BlobHash) -> [u16; LANES] {
    let mut h = blake3::Hasher::new_derive_key(ENTRY_CONTEXT);
    h.update(&(path.len() as u64).to_le_bytes());
    h.update(path.as_bytes());
    h.update(blob.as_bytes());
    let mut bytes = [0u8; LANES * 2];
    h.finalize_xof().fill(&mut bytes);
    let mut lanes = [0u16; LANES];
    for (lane, pair) in lanes.iter_mut().zip(bytes.chunks_exact(2)) {
        *lane = u16::from_le_bytes([pair[0], pair[1]]);
    }
    lanes
}

impl Accumulator {
    /// Adds an entry.
    pub fn insert(&mut self, path: &str, blob: &BlobHash) {
        for (a, e) in self.0.iter_mut().zip(entry_lanes(path, blob)) {
            *a = a.wrapping_add(e);
        }
    }

    /// Removes an entry that was added before.
    pub fn remove(&mut self, path: &str, blob: &BlobHash) {
        for (a, e) in self.0.iter_mut().zip(entry_lanes(path, blob)) {
            *a = a.wrapping_sub(e);
        }
    }

    /// The state root.
    pub fn root(&self) -> StateRoot {
        StateRoot(
            *blake3::Hasher::new_derive_key(ROOT_CONTEXT)
                .update(&self.to_bytes())
                .finalize()
                .as_bytes(),
        )
    }

    /// The accumulator as 2048 little-endian bytes, for storage.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|l| l.to_le_bytes()).collect()
    }

    /// Reads the form written by [`Accumulator::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != LANES * 2 {
            return None;
        }
        let mut lanes = Box::new([0u16; LANES]);
        for (lane, pair) in lanes.iter_mut().zip(bytes.chunks_exact(2)) {
            *lane = u16::from_le_bytes([pair[0], pair[1]]);
        }
        Some(Self(lanes))
    }

    /// The accumulator of a whole tree, computed from scratch.
    pub fn of_tree<'a>(entries: impl IntoIterator<Item = (&'a String, &'a BlobHash)>) -> Self {
        let mut acc = Self::default();
        for (path, blob) in entries {
            acc.insert(path, blob);
        }
        acc
    }
}

/// Read access to a tree, as the rules of application need it.
pub trait TreeRead {
    /// The error of the backing storage.
    type Error;
    /// The blob at `path`, if there is a file there.
    fn get(&self, path: &str) -> Result<Option<BlobHash>, Self::Error>;
    /// Up to `limit` paths of files below the directory `dir` (paths starting with `dir/`).
    fn under(&self, dir: &str, limit: usize) -> Result<Vec<String>, Self::Error>;
}

/// What became of an accepted patch when it was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Its changes are in the tree.
    Applied,
    /// Its `before` hashes did not match, or it would put a file where a directory is (or the
    /// other way round); it changed nothing.
    Conflicted,
}

impl Outcome {
    /// One byte, for storage.
    pub fn to_byte(self) -> u8 {
        match self {
            Outcome::Applied => 1,
            Outcome::Conflicted => 2,
        }
    }

    /// Reads [`Outcome::to_byte`].
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Outcome::Applied),
            2 => Some(Outcome::Conflicted),
            _ => None,
        }
    }
}

/// Decides whether `patch` applies to `tree`: every `before` matches, and afterwards no file
/// sits at a path that is also a directory. Reads only; the caller writes the changes.
pub fn check_applies<T: TreeRead>(tree: &T, patch: &Patch) -> Result<Outcome, T::Error> {
    let after_of = |path: &str| -> Option<Option<BlobHash>> {
        patch
            .changes
            .binary_search_by(|c| c.path.as_str().cmp(path))
            .ok()
            .map(|i| patch.changes[i].after)
    };
    for change in &patch.changes {
        if tree.get(&change.path)? != change.before {
            return Ok(Outcome::Conflicted);
        }
    }
    for change in patch.changes.iter().filter(|c| c.after.is_some()) {
        // No ancestor directory of the new file may remain a file.
        let mut end = 0;
        while let Some(i) = change.path[end..].find('/') {
            let ancestor = &change.path[..end + i];
            let exists_after = match after_of(ancestor) {
                Some(after) => after.is_some(),
                None => tree.get(ancestor)?.is_some(),
            };
            if exists_after {
                return Ok(Outcome::Conflicted);
            }
            end += i + 1;
        }
        // No file may remain below the new file's path. Any file there must be deleted by this
        // patch, so there can be at most `changes.len()` of them.
        let below = tree.under(&change.path, patch.changes.len() + 1)?;
        if below.iter().any(|p| after_of(p) != Some(None)) {
            return Ok(Outcome::Conflicted);
        }
        let prefix = format!("{}/", change.path);
        if patch
            .changes
            .iter()
            .any(|c| c.after.is_some() && c.path.starts_with(&prefix))
        {
            return Ok(Outcome::Conflicted);
        }
    }
    Ok(Outcome::Applied)
}

/// A tree held in memory: the reference implementation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemTree {
    /// path → blob.
    pub files: BTreeMap<String, BlobHash>,
}

impl TreeRead for MemTree {
    type Error = std::convert::Infallible;

    fn get(&self, path: &str) -> Result<Option<BlobHash>, Self::Error> {
        Ok(self.files.get(path).copied())
    }

    fn under(&self, dir: &str, limit: usize) -> Result<Vec<String>, Self::Error> {
        let prefix = format!("{dir}/");
        Ok(self
            .files
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .take(limit)
            .map(|(p, _)| p.clone())
            .collect())
    }
}

impl MemTree {
    /// Applies `patch` if it applies, and says what happened.
    pub fn apply(&mut self, patch: &Patch) -> Outcome {
        let Ok(outcome) = check_applies(self, patch);
        if outcome == Outcome::Applied {
            for c in &patch.changes {
                match c.after {
                    Some(h) => self.files.insert(c.path.clone(), h),
                    None => self.files.remove(&c.path),
                };
            }
        }
        outcome
    }

    /// The state root of this tree.
    pub fn root(&self) -> StateRoot {
        Accumulator::of_tree(&self.files).root()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::LineageId;
    use crate::record::Change;

    fn patch(changes: &[(&str, Option<u8>, Option<u8>)]) -> Patch {
        Patch {
            lineage: LineageId([0; 32]),
            parents: vec![],
            changes: changes
                .iter()
                .map(|(p, b, a)| Change {
                    path: p.to_string(),
                    before: b.map(|x| BlobHash([x; 32])),
                    after: a.map(|x| BlobHash([x; 32])),
                })
                .collect(),
            message: "m".into(),
        }
    }

    #[test]
    fn accumulator_is_order_independent_and_invertible() {
        let (a, b) = (BlobHash([1; 32]), BlobHash([2; 32]));
        let mut x = Accumulator::default();
        x.insert("a", &a);
        x.insert("b", &b);
        let mut y = Accumulator::default();
        y.insert("b", &b);
        y.insert("a", &a);
        assert_eq!(x.root(), y.root());
        x.remove("b", &b);
        let mut z = Accumulator::default();
        z.insert("a", &a);
        assert_eq!(x, z);
        assert_ne!(x.root(), Accumulator::default().root());
        assert_eq!(Accumulator::from_bytes(&x.to_bytes()), Some(x));
    }

    #[test]
    fn before_mismatch_conflicts_and_changes_nothing() {
        let mut t = MemTree::default();
        assert_eq!(t.apply(&patch(&[("a", None, Some(1))])), Outcome::Applied);
        let before = t.clone();
        assert_eq!(
            t.apply(&patch(&[("a", Some(9), Some(2)), ("b", None, Some(3))])),
            Outcome::Conflicted
        );
        assert_eq!(t, before);
    }

    #[test]
    fn file_and_directory_cannot_share_a_path() {
        let mut t = MemTree::default();
        t.apply(&patch(&[("a/b", None, Some(1))]));
        assert_eq!(
            t.apply(&patch(&[("a", None, Some(2))])),
            Outcome::Conflicted
        );
        assert_eq!(
            t.apply(&patch(&[("a/b/c", None, Some(2))])),
            Outcome::Conflicted
        );
        // Replacing the directory by a file in one patch is fine.
        assert_eq!(
            t.apply(&patch(&[("a", None, Some(2)), ("a/b", Some(1), None)])),
            Outcome::Applied
        );
        assert_eq!(t.files.len(), 1);
    }
}
