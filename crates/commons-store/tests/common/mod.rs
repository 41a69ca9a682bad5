//! Helpers shared by the store's integration tests: fixed keys, record builders, and the check
//! that a lineage's stored incremental state equals its state computed from scratch.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use commons_core::state::{LineageState, PatchStatus, RecordSet};
use commons_core::{
    BlobHash, Body, Change, Charter, ForkBase, LineageId, Patch, PublicKey, Record, RecordId,
    SecretKey, Validation, Verdict,
};
use commons_store::{BlobStore, Store};

/// A fixed key.
pub fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

/// Public keys, sorted (as a charter wants them).
pub fn maintainers(keys: &[&SecretKey]) -> Vec<PublicKey> {
    let mut v: Vec<PublicKey> = keys.iter().map(|k| k.public()).collect();
    v.sort();
    v.dedup();
    v
}

/// A signed charter.
pub fn charter(
    by: &SecretKey,
    ts: u64,
    name: &str,
    maintainers: Vec<PublicKey>,
    threshold: u16,
    fork: Option<ForkBase>,
) -> Record {
    Record::sign(
        by,
        ts,
        Body::Charter(Charter {
            name: name.into(),
            summary: String::new(),
            license: "CC0-1.0".into(),
            maintainers,
            threshold,
            fork,
        }),
    )
    .expect("valid charter")
}

/// A blob hash standing for content `n`.
pub fn blob(n: u64) -> BlobHash {
    BlobHash::of(&n.to_le_bytes())
}

/// A signed patch. `changes` need not be sorted.
pub fn patch(
    by: &SecretKey,
    ts: u64,
    lineage: LineageId,
    mut parents: Vec<RecordId>,
    changes: Vec<(String, Option<BlobHash>, Option<BlobHash>)>,
    message: &str,
) -> Record {
    parents.sort();
    parents.dedup();
    let mut changes: Vec<Change> = changes
        .into_iter()
        .map(|(path, before, after)| Change {
            path,
            before,
            after,
        })
        .collect();
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    Record::sign(
        by,
        ts,
        Body::Patch(Patch {
            lineage,
            parents,
            changes,
            message: message.into(),
        }),
    )
    .expect("valid patch")
}

/// A signed validation.
pub fn validation(
    by: &SecretKey,
    ts: u64,
    lineage: LineageId,
    patch: RecordId,
    accept: bool,
) -> Record {
    Record::sign(
        by,
        ts,
        Body::Validation(Validation {
            lineage,
            patch,
            verdict: if accept {
                Verdict::Accept
            } else {
                Verdict::Reject
            },
            note: String::new(),
        }),
    )
    .expect("valid validation")
}

/// Asserts that everything the store keeps about `lineage` equals `expected`.
pub fn assert_state_eq(store: &Store, lineage: &LineageId, expected: &LineageState, context: &str) {
    let statuses: BTreeMap<RecordId, PatchStatus> =
        store.patches(lineage, None).unwrap().into_iter().collect();
    assert_eq!(statuses, expected.statuses, "{context}: statuses");
    for s in [
        PatchStatus::Pending,
        PatchStatus::Accepted,
        PatchStatus::Rejected,
        PatchStatus::Conflicted,
    ] {
        let by_status: Vec<RecordId> = store
            .patches(lineage, Some(s))
            .unwrap()
            .into_iter()
            .map(|(id, got)| {
                assert_eq!(got, s);
                id
            })
            .collect();
        let want: Vec<RecordId> = expected
            .statuses
            .iter()
            .filter(|(_, x)| **x == s)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(by_status, want, "{context}: status index for {s}");
    }
    assert_eq!(
        store.tree(lineage).unwrap(),
        expected.tree.files,
        "{context}: tree"
    );
    let history: Vec<_> = expected.applied.iter().map(|(k, o)| (k.1, *o)).collect();
    assert_eq!(
        store.history(lineage).unwrap(),
        history,
        "{context}: history"
    );
    let summary = store.lineage(lineage).unwrap().expect("summary");
    assert_eq!(summary.root, expected.root, "{context}: root");
    assert_eq!(summary.counts, expected.counts(), "{context}: counts");
    assert_eq!(
        summary.files,
        expected.tree.files.len() as u64,
        "{context}: files"
    );
    assert_eq!(summary.family, expected.family, "{context}: family");
    assert_eq!(
        summary.fork_point, expected.fork_point,
        "{context}: fork point"
    );
}

/// Asserts that the stored state of `lineage` equals the store's own from-scratch computation.
pub fn assert_matches_scratch(store: &Store, lineage: &LineageId, context: &str) {
    let expected = store
        .state_from_scratch(lineage)
        .unwrap()
        .expect("lineage known");
    assert_state_eq(store, lineage, &expected, context);
}

/// Asserts that every lineage the store knows matches both the store's from-scratch state and
/// the state computed from `all` (every record delivered so far, in a fresh `RecordSet`).
pub fn assert_all_lineages(store: &Store, all: &[Record], context: &str) {
    let mut rs = RecordSet::new();
    for r in all {
        rs.insert(r);
    }
    let lineages = store.lineages().unwrap();
    assert_eq!(
        lineages.len(),
        rs.lineages().count(),
        "{context}: number of lineages"
    );
    for s in lineages {
        let context = format!("{context}, lineage {}", s.charter.name);
        assert_matches_scratch(store, &s.lineage, &context);
        // The family's ids, read from the index, are exactly those of its records.
        let family = s.family.unwrap_or(s.lineage);
        let mut want: Vec<RecordId> = store
            .family_records(&family)
            .unwrap()
            .iter()
            .map(Record::id)
            .collect();
        want.sort();
        assert_eq!(
            store.family_ids(&family).unwrap(),
            want,
            "{context}: family ids"
        );
        let reference = rs.state(&s.lineage).expect("charter delivered");
        assert_state_eq(
            store,
            &s.lineage,
            &reference,
            &format!("{context} (full set)"),
        );
    }
    // The shared trees hold no leaked or missing node.
    let check = store.check_trees().unwrap();
    assert!(
        check.problems.is_empty(),
        "{context}: shared trees: {:?}",
        check.problems
    );
}

/// Opens the database under a store with sled directly. sled releases its lock a moment after
/// the store that held it closed (sled #1289), so retry for a bounded time.
pub fn raw_sled(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("cannot open {}: {e}", path.display()),
        }
    }
}

/// What the crash-test writer (`commons-store-crashtest write`) has acknowledged.
#[derive(Default)]
pub struct Acked {
    /// Records whose `put` returned.
    pub records: BTreeSet<RecordId>,
    /// Blobs stored (and synced) before a `put` that returned.
    pub blobs: BTreeSet<BlobHash>,
    /// Blobs acknowledged since the last [`check_acked`]: their contents are read back.
    fresh: BTreeSet<BlobHash>,
}

impl Acked {
    /// Takes one line of the writer's output; `true` if it acknowledged something. A line cut
    /// by a kill is not an acknowledgement (ids and hashes are written whole).
    pub fn take(&mut self, line: &str) -> bool {
        let line = line.trim();
        if let Some(hash) = line.strip_prefix("blob ") {
            return match hash.parse::<BlobHash>() {
                Ok(h) => {
                    self.blobs.insert(h);
                    self.fresh.insert(h);
                    true
                }
                Err(_) => false,
            };
        }
        match line.parse::<RecordId>() {
            Ok(id) => {
                self.records.insert(id);
                true
            }
            Err(_) => false,
        }
    }
}

/// Opens the home the writer wrote in `dir` and checks that it opens, holds every acknowledged
/// record and blob (reading back the contents of those acknowledged since the last check), that
/// every lineage's state equals its state from scratch, and that the shared trees' counts are
/// exact.
pub fn check_acked(dir: &Path, acked: &mut Acked, context: &str) {
    let store =
        Store::open(dir).unwrap_or_else(|e| panic!("{context}: the store does not open: {e}"));
    for id in &acked.records {
        assert!(
            store.contains(id).unwrap(),
            "{context}: acknowledged record {id} was lost"
        );
    }
    for s in store.lineages().unwrap() {
        assert_matches_scratch(&store, &s.lineage, context);
    }
    let check = store.check_trees().unwrap();
    assert!(check.problems.is_empty(), "{context}: {:?}", check.problems);
    store.close().unwrap();

    let blobs = BlobStore::open(&dir.join("blobs"))
        .unwrap_or_else(|e| panic!("{context}: the blob store does not open: {e}"));
    for hash in &acked.blobs {
        assert!(
            blobs.contains(hash),
            "{context}: acknowledged blob {hash} was lost"
        );
    }
    for hash in std::mem::take(&mut acked.fresh) {
        let mut bytes = Vec::new();
        blobs
            .open_blob(&hash)
            .unwrap()
            .unwrap_or_else(|| panic!("{context}: acknowledged blob {hash} was lost"))
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(
            BlobHash::of(&bytes),
            hash,
            "{context}: acknowledged blob {hash} reads back damaged"
        );
    }
}

/// How many acknowledged blobs are loose files and how many are packed.
pub fn loose_and_packed(dir: &Path, acked: &Acked) -> (usize, usize) {
    let blobs = BlobStore::open(&dir.join("blobs")).unwrap();
    let loose = acked
        .blobs
        .iter()
        .filter(|h| blobs.path_of(h).is_file())
        .count();
    (loose, acked.blobs.len() - loose)
}

/// Starts `commons-store-crashtest write DIR SEED`; its standard output comes line by line on
/// the receiver, read by the returned thread until the writer exits or is killed.
pub fn spawn_writer(
    dir: &Path,
    seed: u64,
    stderr: std::process::Stdio,
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<String>,
    std::thread::JoinHandle<()>,
) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_commons-store-crashtest"))
        .arg("write")
        .arg(dir)
        .arg(seed.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start the crash-test writer");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx, reader)
}
