//! The set of lineages this node follows, persisted in `$COMMONS_HOME/follows` (one hex id per
//! line, rewritten through a temporary file and rename).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use commons_core::LineageId;

/// File name inside the home.
pub const FOLLOWS_FILE: &str = "follows";

/// Shared, persisted set of followed lineages.
#[derive(Debug, Clone)]
pub struct Follows {
    path: PathBuf,
    set: Arc<Mutex<BTreeSet<LineageId>>>,
}

impl Follows {
    /// Loads the set (empty if the file is absent).
    pub fn load(home: &Path) -> anyhow::Result<Follows> {
        let path = home.join(FOLLOWS_FILE);
        let mut set = BTreeSet::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() {
                        continue;
                    }
                    set.insert(line.parse().with_context(|| {
                        format!("{}:{}: not a lineage id", path.display(), n + 1)
                    })?);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
        Ok(Follows {
            path,
            set: Arc::new(Mutex::new(set)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<LineageId>> {
        // A panic while holding this lock cannot leave the set half-updated (inserts and
        // removes are single operations), so a poisoned lock is still usable.
        self.set.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The followed lineages.
    pub fn list(&self) -> Vec<LineageId> {
        self.lock().iter().copied().collect()
    }

    /// Whether `lineage` is followed.
    pub fn contains(&self, lineage: &LineageId) -> bool {
        self.lock().contains(lineage)
    }

    /// Adds a lineage; returns whether it was new.
    pub fn add(&self, lineage: LineageId) -> anyhow::Result<bool> {
        let mut set = self.lock();
        let new = set.insert(lineage);
        if new {
            self.save(&set)?;
        }
        Ok(new)
    }

    /// Removes a lineage; returns whether it was followed.
    pub fn remove(&self, lineage: &LineageId) -> anyhow::Result<bool> {
        let mut set = self.lock();
        let was = set.remove(lineage);
        if was {
            self.save(&set)?;
        }
        Ok(was)
    }

    fn save(&self, set: &BTreeSet<LineageId>) -> anyhow::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        for l in set {
            writeln!(tmp, "{l}")?;
        }
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let f = Follows::load(dir.path()).unwrap();
        let l = LineageId([7; 32]);
        assert!(f.add(l).unwrap());
        assert!(!f.add(l).unwrap());
        assert_eq!(Follows::load(dir.path()).unwrap().list(), vec![l]);
        assert!(f.remove(&l).unwrap());
        assert!(Follows::load(dir.path()).unwrap().list().is_empty());
    }
}
