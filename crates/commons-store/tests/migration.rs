//! A store written by the previous release (schema 1, committed under `tests/fixtures/store-v1`,
//! made by `made-by.rs.txt` against that release) opens with this one: it is migrated in place
//! to schema 2, every lineage's summary is the one the old release computed, every state equals
//! the from-scratch computation, and the old trees are gone. A migration killed at random
//! moments resumes at the next open and ends the same.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use commons_store::Store;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1")
}

/// A copy of the fixture in a fresh directory (the fixture itself is never opened).
fn copy_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("db")).unwrap();
    for f in ["db/conf", "db/db", "initialized"] {
        std::fs::copy(fixture().join(f), dir.path().join(f)).unwrap();
    }
    dir
}

/// `lineage root files [counts] heads`, one line per lineage, as the old release wrote them.
fn expected() -> Vec<String> {
    std::fs::read_to_string(fixture().join("expected.txt"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn check_migrated(dir: &Path) {
    let store = Store::open(dir).unwrap();
    let got: Vec<String> = store
        .lineages()
        .unwrap()
        .into_iter()
        .map(|s| {
            format!(
                "{} {} {} {:?} {}",
                s.lineage,
                s.root,
                s.files,
                s.counts.values().collect::<Vec<_>>(),
                s.fork_point.heads.len()
            )
        })
        .collect();
    assert_eq!(
        got,
        expected(),
        "summaries as the old release computed them"
    );
    for s in store.lineages().unwrap() {
        assert_matches_scratch(&store, &s.lineage, &format!("migrated {}", s.charter.name));
    }
    let check = store.check_trees().unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    store.close().unwrap();
    drop(store);
    let db = raw_sled(&dir.join("db"));
    let names: Vec<String> = db
        .tree_names()
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    for old in ["files", "log", "accumulators", "fork_base"] {
        assert!(
            !names.contains(&old.to_string()),
            "tree {old} dropped: {names:?}"
        );
    }
    let schema = db
        .open_tree("meta")
        .unwrap()
        .get("schema_version")
        .unwrap()
        .unwrap();
    assert_eq!(schema.as_ref(), 2u32.to_be_bytes());
}

#[test]
fn a_schema_1_store_is_migrated_in_place() {
    let dir = copy_fixture();
    check_migrated(dir.path());
    // Opening again changes nothing.
    check_migrated(dir.path());
}

#[test]
fn a_migration_killed_midway_resumes() {
    let mut killed_before_open = 0;
    for round in 0..12u64 {
        let dir = copy_fixture();
        let mut child = Command::new(env!("CARGO_BIN_EXE_commons-store-crashtest"))
            .arg("hold")
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Spread the kills over the migration: from at once to a little after it ends.
        let deadline = Instant::now() + Duration::from_millis(round * 15);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::yield_now();
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let db = raw_sled(&dir.path().join("db"));
        let mid = db
            .open_tree("meta")
            .unwrap()
            .get("reindex")
            .unwrap()
            .is_some()
            || db.tree_names().iter().any(|n| n.as_ref() == b"files");
        drop(db);
        if mid {
            killed_before_open += 1;
        }
        check_migrated(dir.path());
    }
    assert!(
        killed_before_open > 0,
        "at least one kill landed before the migration ended"
    );
}
