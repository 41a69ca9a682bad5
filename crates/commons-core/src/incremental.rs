//! Keeping a lineage's tree and state root up to date as its accepted set changes, without
//! replaying the history.
//!
//! The accepted patches of a lineage form a log ordered by (generation, id). Adding a patch at
//! the end of the log applies it; adding or removing one in the middle (a late arrival, a
//! maintainer who changed their mind) undoes the suffix after it, makes the change, and replays
//! the suffix. Undo is exact because an applied patch's `before` hashes were the tree's content.
//! The work is proportional to the suffix, not to the history.
//!
//! The storage lives behind [`StateBackend`]; [`MemBackend`] is the in-memory one used by tests,
//! and `commons-store` implements it over sled.

use std::collections::BTreeMap;

use crate::id::{BlobHash, RecordId, StateRoot};
use crate::record::Patch;
use crate::state::OrderKey;
use crate::tree::{Accumulator, MemTree, Outcome, TreeRead, check_applies};

/// What the incremental engine needs from storage, for one lineage.
pub trait StateBackend: TreeRead {
    /// Sets or removes the file at `path`.
    fn set(&mut self, path: &str, blob: Option<BlobHash>) -> Result<(), Self::Error>;
    /// The accumulator of the tree.
    fn accumulator(&mut self) -> Result<&mut Accumulator, Self::Error>;
    /// Log entries at or after `key`, in order.
    fn log_from(&self, key: &OrderKey) -> Result<Vec<(OrderKey, Outcome)>, Self::Error>;
    /// Whether `key` is in the log, and how it came out.
    fn log_get(&self, key: &OrderKey) -> Result<Option<Outcome>, Self::Error>;
    /// Adds or replaces a log entry.
    fn log_put(&mut self, key: &OrderKey, outcome: Outcome) -> Result<(), Self::Error>;
    /// Removes a log entry.
    fn log_remove(&mut self, key: &OrderKey) -> Result<(), Self::Error>;
    /// A patch the log names. The engine only asks for patches it was given or logged before.
    fn patch(&self, id: &RecordId) -> Result<Patch, Self::Error>;
}

fn write_changes<B: StateBackend>(b: &mut B, patch: &Patch, undo: bool) -> Result<(), B::Error> {
    for c in &patch.changes {
        let (old, new) = if undo {
            (c.after, c.before)
        } else {
            (c.before, c.after)
        };
        if let Some(h) = old {
            b.accumulator()?.remove(&c.path, &h);
        }
        if let Some(h) = new {
            b.accumulator()?.insert(&c.path, &h);
        }
        b.set(&c.path, new)?;
    }
    Ok(())
}

fn apply_one<B: StateBackend>(b: &mut B, key: &OrderKey) -> Result<Outcome, B::Error> {
    let patch = b.patch(&key.1)?;
    let outcome = check_applies(b, &patch)?;
    if outcome == Outcome::Applied {
        write_changes(b, &patch, false)?;
    }
    b.log_put(key, outcome)?;
    Ok(outcome)
}

/// Undoes the log from `key` on (inclusive), newest first, and returns what was undone.
fn rewind<B: StateBackend>(b: &mut B, key: &OrderKey) -> Result<Vec<OrderKey>, B::Error> {
    let suffix = b.log_from(key)?;
    for (k, outcome) in suffix.iter().rev() {
        if *outcome == Outcome::Applied {
            let patch = b.patch(&k.1)?;
            write_changes(b, &patch, true)?;
        }
    }
    Ok(suffix.into_iter().map(|(k, _)| k).collect())
}

/// Adds `key` to the accepted set. Returns the outcome of every patch whose outcome was
/// (re)computed, `key` first: the caller updates statuses from it.
pub fn accept<B: StateBackend>(
    b: &mut B,
    key: OrderKey,
) -> Result<Vec<(RecordId, Outcome)>, B::Error> {
    if let Some(o) = b.log_get(&key)? {
        return Ok(vec![(key.1, o)]);
    }
    let suffix = rewind(b, &key)?;
    let mut changed = vec![(key.1, apply_one(b, &key)?)];
    for k in suffix {
        changed.push((k.1, apply_one(b, &k)?));
    }
    Ok(changed)
}

/// Removes `key` from the accepted set. Returns the outcomes recomputed for the patches after it.
pub fn unaccept<B: StateBackend>(
    b: &mut B,
    key: OrderKey,
) -> Result<Vec<(RecordId, Outcome)>, B::Error> {
    if b.log_get(&key)?.is_none() {
        return Ok(vec![]);
    }
    let suffix = rewind(b, &key)?;
    b.log_remove(&key)?;
    let mut changed = Vec::new();
    for k in suffix.into_iter().filter(|k| *k != key) {
        changed.push((k.1, apply_one(b, &k)?));
    }
    Ok(changed)
}

/// The current state root.
pub fn root<B: StateBackend>(b: &mut B) -> Result<StateRoot, B::Error> {
    Ok(b.accumulator()?.root())
}

/// An in-memory backend: the model the sled backend is tested against.
#[derive(Debug, Default, Clone)]
pub struct MemBackend {
    /// The tree.
    pub tree: MemTree,
    /// Its accumulator.
    pub acc: Accumulator,
    /// The log.
    pub log: BTreeMap<OrderKey, Outcome>,
    /// Patches by id.
    pub patches: BTreeMap<RecordId, Patch>,
}

impl TreeRead for MemBackend {
    type Error = std::convert::Infallible;
    fn get(&self, path: &str) -> Result<Option<BlobHash>, Self::Error> {
        self.tree.get(path)
    }
    fn under(&self, dir: &str, limit: usize) -> Result<Vec<String>, Self::Error> {
        self.tree.under(dir, limit)
    }
}

impl StateBackend for MemBackend {
    fn set(&mut self, path: &str, blob: Option<BlobHash>) -> Result<(), Self::Error> {
        match blob {
            Some(h) => self.tree.files.insert(path.to_owned(), h),
            None => self.tree.files.remove(path),
        };
        Ok(())
    }
    fn accumulator(&mut self) -> Result<&mut Accumulator, Self::Error> {
        Ok(&mut self.acc)
    }
    fn log_from(&self, key: &OrderKey) -> Result<Vec<(OrderKey, Outcome)>, Self::Error> {
        Ok(self.log.range(*key..).map(|(k, o)| (*k, *o)).collect())
    }
    fn log_get(&self, key: &OrderKey) -> Result<Option<Outcome>, Self::Error> {
        Ok(self.log.get(key).copied())
    }
    fn log_put(&mut self, key: &OrderKey, outcome: Outcome) -> Result<(), Self::Error> {
        self.log.insert(*key, outcome);
        Ok(())
    }
    fn log_remove(&mut self, key: &OrderKey) -> Result<(), Self::Error> {
        self.log.remove(key);
        Ok(())
    }
    fn patch(&self, id: &RecordId) -> Result<Patch, Self::Error> {
        Ok(self.patches[id].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::LineageId;
    use crate::record::Change;
    use proptest::prelude::*;

    fn patch(changes: Vec<Change>) -> Patch {
        Patch {
            lineage: LineageId([0; 32]),
            parents: vec![],
            changes,
            message: "m".into(),
        }
    }

    fn from_scratch(b: &MemBackend) -> (MemTree, BTreeMap<OrderKey, Outcome>) {
        let mut t = MemTree::default();
        let mut log = BTreeMap::new();
        for k in b.log.keys() {
            log.insert(*k, t.apply(&b.patches[&k.1]));
        }
        (t, log)
    }

    proptest! {
        /// Any sequence of accepts and un-accepts leaves the same tree, outcomes and root as
        /// applying the final accepted set from scratch.
        #[test]
        fn incremental_matches_from_scratch(
            ops in proptest::collection::vec((0u8..12, any::<bool>()), 1..40),
            contents in proptest::collection::vec(
                proptest::collection::vec((0u8..4, proptest::option::of(0u8..3), proptest::option::of(0u8..3)), 1..3),
                12),
        ) {
            let mut b = MemBackend::default();
            for (i, changes) in contents.iter().enumerate() {
                let mut cs: BTreeMap<String, Change> = BTreeMap::new();
                for (p, before, after) in changes {
                    let path = format!("f{p}");
                    let (before, after) = (before.map(|x| BlobHash([x; 32])), after.map(|x| BlobHash([x; 32])));
                    if before != after {
                        cs.insert(path.clone(), Change { path, before, after });
                    }
                }
                if cs.is_empty() {
                    cs.insert("x".into(), Change { path: "x".into(), before: None, after: Some(BlobHash([i as u8; 32])) });
                }
                b.patches.insert(RecordId([i as u8; 32]), patch(cs.into_values().collect()));
            }
            for (i, add) in ops {
                let key = (u64::from(i % 4), RecordId([i; 32]));
                if add { accept(&mut b, key).unwrap(); } else { unaccept(&mut b, key).unwrap(); }
            }
            let (tree, log) = from_scratch(&b);
            prop_assert_eq!(&b.tree, &tree);
            prop_assert_eq!(&b.log, &log);
            prop_assert_eq!(b.acc.root(), tree.root());
        }
    }
}
