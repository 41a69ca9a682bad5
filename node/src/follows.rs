//! Sets the daemon persists in its home, one entry per line, rewritten through a temporary file
//! and rename: the followed lineages (`$COMMONS_HOME/follows`, hex ids) and the block list
//! (`$COMMONS_HOME/blocked`, `did:key:…` authors and peer ids).

use std::collections::BTreeSet;
use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use commons_core::{LineageId, PublicKey};
use commons_net::{Blocked, PeerId};

/// File name of the follow list inside the home.
pub const FOLLOWS_FILE: &str = "follows";
/// File name of the block list inside the home.
pub const BLOCKED_FILE: &str = "blocked";

/// A shared set persisted in a file of the home.
#[derive(Debug, Clone)]
pub struct ListFile<T> {
    path: PathBuf,
    set: Arc<Mutex<BTreeSet<T>>>,
}

/// The followed lineages.
pub type Follows = ListFile<LineageId>;
/// The blocked authors and peers.
pub type BlockList = ListFile<Entry>;

/// An entry of the block list, as written in its file and on the command line: a `did:key:…`
/// author or a libp2p peer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry(pub Blocked);

impl FromStr for Entry {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Entry> {
        let s = s.trim();
        if s.starts_with("did:") {
            return Ok(Entry(Blocked::Author(s.parse::<PublicKey>()?)));
        }
        match s.parse::<PeerId>() {
            Ok(p) => Ok(Entry(Blocked::Peer(p))),
            Err(_) => anyhow::bail!(
                "`{s}` is neither an author (did:key:z6Mk…) nor a peer id (12D3KooW…)"
            ),
        }
    }
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Blocked::Author(a) => write!(f, "{a}"),
            Blocked::Peer(p) => write!(f, "{p}"),
        }
    }
}

impl Follows {
    /// Loads the follow list of `home` (empty if the file is absent).
    pub fn load(home: &Path) -> anyhow::Result<Follows> {
        ListFile::load_file(home.join(FOLLOWS_FILE), "a lineage id")
    }
}

impl BlockList {
    /// Loads the block list of `home` (empty if the file is absent).
    pub fn load(home: &Path) -> anyhow::Result<BlockList> {
        ListFile::load_file(home.join(BLOCKED_FILE), "an author or a peer id")
    }

    /// Whether records signed by `author` are refused.
    pub fn blocks_author(&self, author: &PublicKey) -> bool {
        self.contains(&Entry(Blocked::Author(*author)))
    }
}

impl<T> ListFile<T>
where
    T: FromStr + Display + Ord + Clone + Send + 'static,
    T::Err: Display,
{
    /// [`ListFile::add`] on a blocking thread (the file is written and fsynced): for async code.
    pub async fn add_async(&self, entry: T) -> anyhow::Result<bool> {
        let list = self.clone();
        tokio::task::spawn_blocking(move || list.add(entry)).await?
    }

    /// [`ListFile::remove`] on a blocking thread: for async code.
    pub async fn remove_async(&self, entry: T) -> anyhow::Result<bool> {
        let list = self.clone();
        tokio::task::spawn_blocking(move || list.remove(&entry)).await?
    }
}

impl<T> ListFile<T>
where
    T: FromStr + Display + Ord + Clone,
    T::Err: Display,
{
    fn load_file(path: PathBuf, what: &str) -> anyhow::Result<ListFile<T>> {
        let mut set = BTreeSet::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() {
                        continue;
                    }
                    let entry = line.parse().map_err(|e| {
                        anyhow::anyhow!("{}:{}: not {what}: {e}", path.display(), n + 1)
                    })?;
                    set.insert(entry);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
        Ok(ListFile {
            path,
            set: Arc::new(Mutex::new(set)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<T>> {
        // A panic while holding this lock cannot leave the set half-updated (inserts and
        // removes are single operations), so a poisoned lock is still usable.
        self.set.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entries.
    pub fn list(&self) -> Vec<T> {
        self.lock().iter().cloned().collect()
    }

    /// Whether `entry` is in the set.
    pub fn contains(&self, entry: &T) -> bool {
        self.lock().contains(entry)
    }

    /// Adds an entry; returns whether it was new.
    pub fn add(&self, entry: T) -> anyhow::Result<bool> {
        let mut set = self.lock();
        let new = set.insert(entry);
        if new {
            self.save(&set)?;
        }
        Ok(new)
    }

    /// Removes an entry; returns whether it was there.
    pub fn remove(&self, entry: &T) -> anyhow::Result<bool> {
        let mut set = self.lock();
        let was = set.remove(entry);
        if was {
            self.save(&set)?;
        }
        Ok(was)
    }

    fn save(&self, set: &BTreeSet<T>) -> anyhow::Result<()> {
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

    #[test]
    fn the_block_list_takes_authors_and_peers_and_refuses_anything_else() {
        let dir = tempfile::tempdir().unwrap();
        let b = BlockList::load(dir.path()).unwrap();
        let author = commons_core::SecretKey::from_seed([3; 32]).public();
        let peer = PeerId::random();
        b.add(author.to_did().parse().unwrap()).unwrap();
        b.add(peer.to_string().parse().unwrap()).unwrap();
        let again = BlockList::load(dir.path()).unwrap();
        assert!(again.blocks_author(&author));
        assert!(again.contains(&Entry(Blocked::Peer(peer))));
        let err = "alice".parse::<Entry>().unwrap_err().to_string();
        assert!(err.contains("neither an author"), "{err}");
        assert!("did:key:z111".parse::<Entry>().is_err());
        // The example of the walkthrough and of `commons block --help`.
        let example = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";
        assert_eq!(example.parse::<Entry>().unwrap().to_string(), example);
        let peer_example = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo";
        assert_eq!(
            peer_example.parse::<Entry>().unwrap().to_string(),
            peer_example
        );
        std::fs::write(dir.path().join(BLOCKED_FILE), "nonsense\n").unwrap();
        let err = BlockList::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("blocked:1"), "{err}");
    }
}
