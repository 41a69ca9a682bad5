//! The store's API end to end: idempotent puts, indexes, persistence across reopen, forks, and
//! refusal of bad input (locked, corrupt, newer or damaged stores) without panicking.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::*;
use commons_core::state::PatchStatus;
use commons_core::tree::Outcome;
use commons_core::{ForkBase, LineageId, RecordId};
use commons_store::{OpenError, SCHEMA_VERSION, Store, StoreError};

#[test]
fn put_is_idempotent_and_reports_only_new_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let m = key(1);
    let c = charter(&m, 1, "one", maintainers(&[&m]), 1, None);
    let l = LineageId::from(c.id());
    let p = patch(
        &m,
        2,
        l,
        vec![],
        vec![("a".into(), None, Some(blob(1)))],
        "add a",
    );
    assert_eq!(
        store.put(vec![c.clone(), p.clone(), p.clone()]).unwrap(),
        vec![c.id(), p.id()]
    );
    assert_eq!(
        store.put(vec![c.clone(), p.clone()]).unwrap(),
        Vec::<RecordId>::new()
    );
    assert_eq!(store.get(&p.id()).unwrap(), Some(p.clone()));
    assert_eq!(
        store
            .get_many(vec![p.id(), RecordId([9; 32]), c.id()])
            .unwrap(),
        vec![Some(p.clone()), None, Some(c.clone())],
        "in the order asked, None for what is not stored"
    );
    assert!(store.contains(&c.id()).unwrap());
    assert!(!store.contains(&RecordId([9; 32])).unwrap());
    let hex = p.id().to_hex();
    assert_eq!(store.ids_with_prefix(&hex[..5], 10).unwrap(), vec![p.id()]);
    assert_eq!(store.ids_with_prefix("", 10).unwrap().len(), 2);
    assert!(store.ids_with_prefix("xyz", 10).unwrap().is_empty());
    assert_eq!(
        store.patches(&l, None).unwrap(),
        vec![(p.id(), PatchStatus::Pending)]
    );
    assert_eq!(
        store.status(&l, &p.id()).unwrap(),
        Some(PatchStatus::Pending)
    );
    assert_eq!(store.status(&l, &RecordId([9; 32])).unwrap(), None);
}

#[test]
fn the_record_count_is_kept_across_puts_and_reopens_and_rebuilt_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    let m = key(1);
    let c = charter(&m, 1, "one", maintainers(&[&m]), 1, None);
    let l = LineageId::from(c.id());
    let p = patch(
        &m,
        2,
        l,
        vec![],
        vec![("a".into(), None, Some(blob(1)))],
        "a",
    );
    let q = patch(
        &m,
        3,
        l,
        vec![],
        vec![("b".into(), None, Some(blob(2)))],
        "b",
    );
    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.record_count().unwrap(), 0);
        store.put(vec![c.clone(), p.clone()]).unwrap();
        store.put(vec![p.clone(), q.clone()]).unwrap();
        assert_eq!(
            store.record_count().unwrap(),
            3,
            "duplicates are not counted"
        );
        store.close().unwrap();
    }
    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.record_count().unwrap(),
            3,
            "the count survives a reopen"
        );
        store.close().unwrap();
    }
    // A store written before the count was kept has no count: it is rebuilt by counting.
    {
        let db = raw_sled(&dir.path().join("db"));
        db.open_tree("meta")
            .unwrap()
            .remove(b"record_count")
            .unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.record_count().unwrap(), 3);
}

#[test]
fn validations_before_patches_and_state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (m1, m2, a) = (key(1), key(2), key(3));
    let c = charter(&m1, 1, "two of two", maintainers(&[&m1, &m2]), 2, None);
    let l = LineageId::from(c.id());
    let p1 = patch(
        &a,
        2,
        l,
        vec![],
        vec![("a".into(), None, Some(blob(1)))],
        "add a",
    );
    let p2 = patch(
        &a,
        3,
        l,
        vec![p1.id()],
        vec![("a".into(), Some(blob(1)), Some(blob(2)))],
        "change a",
    );
    let v = |k, ts, p: &commons_core::Record, yes| validation(k, ts, l, p.id(), yes);
    {
        let store = Store::open(dir.path()).unwrap();
        // The child and its votes come first; the parent last, completing it.
        store
            .put(vec![
                c.clone(),
                p2.clone(),
                v(&m1, 10, &p2, true),
                v(&m2, 11, &p2, true),
            ])
            .unwrap();
        assert_eq!(
            store.patches(&l, None).unwrap(),
            vec![(p2.id(), PatchStatus::Pending)]
                .into_iter()
                .filter(|_| true)
                .collect::<Vec<_>>()
        );
        store
            .put(vec![v(&m1, 12, &p1, true), v(&m2, 13, &p1, true)])
            .unwrap();
        store.put(vec![p1.clone()]).unwrap();
        assert_eq!(
            store.history(&l).unwrap(),
            vec![(p1.id(), Outcome::Applied), (p2.id(), Outcome::Applied)]
        );
        assert_eq!(
            store
                .patches(&l, Some(PatchStatus::Accepted))
                .unwrap()
                .len(),
            2
        );
        assert_eq!(store.validations_of(&p1.id()).unwrap().len(), 2);
        // Dropping the last handle flushes and releases the store.
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.tree(&l).unwrap().get("a"), Some(&blob(2)));
    assert_matches_scratch(&store, &l, "after reopen");
    // m2 changes their mind about p1: two of two can no longer accept it, so p1 is rejected,
    // leaves the history, and p2 (which changes the file p1 made) conflicts.
    store.put(vec![v(&m2, 20, &p1, false)]).unwrap();
    assert_eq!(
        store
            .patches(&l, None)
            .unwrap()
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>(),
        [
            (p1.id(), PatchStatus::Rejected),
            (p2.id(), PatchStatus::Conflicted)
        ]
        .into_iter()
        .collect()
    );
    assert_matches_scratch(&store, &l, "after a change of mind");
    let family = store.family_records(&l).unwrap();
    assert_eq!(family.first().map(|r| r.id()), Some(c.id()));
    let pos = |id| family.iter().position(|r| r.id() == id).unwrap();
    assert!(pos(p1.id()) < pos(p2.id()), "parents before children");
    assert_eq!(family.len(), 8, "a charter, two patches, five validations");
}

#[test]
fn a_fork_takes_its_base_and_a_rejected_patch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (m, f) = (key(1), key(2));
    let c = charter(&m, 1, "parent", maintainers(&[&m]), 1, None);
    let l = LineageId::from(c.id());
    let p1 = patch(
        &m,
        2,
        l,
        vec![],
        vec![("a".into(), None, Some(blob(1)))],
        "a",
    );
    let p2 = patch(
        &f,
        3,
        l,
        vec![p1.id()],
        vec![("b".into(), None, Some(blob(2)))],
        "b",
    );
    store
        .put(vec![
            c,
            p1.clone(),
            p2.clone(),
            validation(&m, 4, l, p1.id(), true),
            validation(&m, 5, l, p2.id(), false),
        ])
        .unwrap();
    let point = store.lineage(&l).unwrap().unwrap().fork_point;
    assert_eq!(point.heads, vec![p1.id()]);
    let fork = charter(
        &f,
        6,
        "fork",
        maintainers(&[&f]),
        1,
        Some(ForkBase {
            parent: l,
            heads: point.heads,
            excluded: point.excluded,
        }),
    );
    let fl = LineageId::from(fork.id());
    store
        .put(vec![fork, validation(&f, 7, fl, p2.id(), true)])
        .unwrap();
    let s = store.lineage(&fl).unwrap().unwrap();
    assert_eq!(s.family, Some(l));
    assert_eq!(s.files, 2);
    assert_eq!(store.tree(&l).unwrap().len(), 1);
    assert_matches_scratch(&store, &l, "parent");
    assert_matches_scratch(&store, &fl, "fork");
    let names: Vec<String> = store
        .lineages()
        .unwrap()
        .into_iter()
        .map(|s| s.charter.name)
        .collect();
    assert_eq!(names, ["parent", "fork"]);
}

#[test]
fn close_stops_every_clone_and_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let clone = store.clone();
    let m = key(1);
    let c = charter(&m, 1, "x", maintainers(&[&m]), 1, None);
    let worker = std::thread::spawn(move || clone.put(vec![c]));
    worker.join().unwrap().unwrap();
    store.close().unwrap();
    assert!(matches!(
        store.get(&RecordId([0; 32])),
        Err(StoreError::Closed)
    ));
    assert!(matches!(store.close(), Err(StoreError::Closed)));
    let again = Store::open(dir.path()).unwrap();
    assert_eq!(again.lineages().unwrap().len(), 1);
}

#[test]
fn a_second_open_is_refused_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    match Store::open(dir.path()) {
        Err(e @ OpenError::Locked { .. }) => {
            assert!(
                e.to_string().contains(&dir.path().display().to_string()),
                "{e}"
            );
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(store);
    Store::open(dir.path()).unwrap();
}

#[test]
fn a_store_held_by_another_process_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_commons-store-crashtest"))
        .arg("hold")
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "open");
    let result = Store::open(dir.path());
    // Closing stdin lets the holder close the store and exit.
    child.stdin.take().unwrap().flush().unwrap();
    assert!(child.wait().unwrap().success());
    match result {
        Err(OpenError::Locked { path }) => assert_eq!(path, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    Store::open(dir.path()).unwrap();
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    {
        let db = raw_sled(&dir.path().join("db"));
        let meta = db.open_tree("meta").unwrap();
        meta.insert("schema_version", &(SCHEMA_VERSION + 1).to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    match Store::open(dir.path()) {
        Err(OpenError::Schema {
            found,
            expected,
            path,
        }) => {
            assert_eq!((found, expected), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            assert_eq!(path, dir.path());
        }
        other => panic!("expected Schema, got {other:?}"),
    }
}

fn store_with_records(dir: &std::path::Path) -> Vec<commons_core::Record> {
    let store = Store::open(dir).unwrap();
    let m = key(1);
    let c = charter(&m, 1, "x", maintainers(&[&m]), 1, None);
    let l = LineageId::from(c.id());
    let mut records = vec![c];
    for i in 0..50u64 {
        records.push(patch(
            &m,
            10 + i,
            l,
            vec![],
            vec![(format!("f{i}"), None, Some(blob(i)))],
            "p",
        ));
    }
    store.put(records.clone()).unwrap();
    store.close().unwrap();
    records
}

#[test]
fn garbage_over_the_database_files_is_an_error_not_a_panic() {
    for file in ["conf", "db"] {
        let dir = tempfile::tempdir().unwrap();
        store_with_records(dir.path());
        let path = dir.path().join("db").join(file);
        let len = std::fs::metadata(&path).unwrap().len().max(64) as usize;
        let garbage: Vec<u8> = (0..len).map(|i| (i * 7 + 13) as u8).collect();
        std::fs::write(&path, garbage).unwrap();
        match Store::open(dir.path()) {
            Err(e @ (OpenError::Corrupt { .. } | OpenError::Io { .. })) => {
                assert!(
                    e.to_string().contains(&dir.path().display().to_string()),
                    "{e}"
                );
            }
            other => panic!("garbage over db/{file}: expected Corrupt or Io, got {other:?}"),
        }
    }
}

/// Anyone may validate, but only maintainers count: a flood of validations by non-maintainers
/// is stored and shown, and costs O(1) each (no status is computed again for them), where each
/// used to re-read every vote on the patch (O(n²) in all).
#[test]
fn validations_by_non_maintainers_cost_nothing_per_vote_and_are_still_shown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("store")).expect("open");
    let alice = key(1);
    let c = charter(&alice, 1, "garden", maintainers(&[&alice]), 1, None);
    let lineage = LineageId::from(c.id());
    let p = patch(
        &key(2),
        2,
        lineage,
        vec![],
        vec![("a.txt".into(), None, Some(blob(1)))],
        "p",
    );
    store.put(vec![c, p.clone()]).expect("put");
    let before = store.stats().votes_read;
    let flood = 400u32;
    for i in 0..flood {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&i.to_be_bytes());
        seed[31] = 0xee;
        let spammer = commons_core::SecretKey::from_seed(seed);
        let v = validation(&spammer, 10 + u64::from(i), lineage, p.id(), i % 2 == 0);
        store.put(vec![v]).expect("put");
    }
    assert_eq!(
        store.stats().votes_read - before,
        0,
        "no vote was read for the non-maintainers' validations"
    );
    assert_eq!(
        store.status(&lineage, &p.id()).expect("status"),
        Some(PatchStatus::Pending)
    );
    store
        .put(vec![validation(&alice, 1_000, lineage, p.id(), true)])
        .expect("put");
    assert!(
        store.stats().votes_read - before <= 2,
        "the maintainer's vote is read once"
    );
    assert_eq!(
        store.status(&lineage, &p.id()).expect("status"),
        Some(PatchStatus::Accepted)
    );
    assert_eq!(
        store.validations_of(&p.id()).expect("validations").len(),
        flood as usize + 1,
        "every validation is still shown"
    );
}

/// Relayed records (gossip) are committed without waiting for a flush: visible at once, one
/// transaction each, and durable once the store closes (or sled's flusher runs).
#[test]
fn relayed_records_are_visible_at_once_and_kept_across_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let alice = key(1);
    let c = charter(&alice, 1, "garden", maintainers(&[&alice]), 1, None);
    let lineage = LineageId::from(c.id());
    let p = patch(
        &alice,
        2,
        lineage,
        vec![],
        vec![("a.txt".into(), None, Some(blob(1)))],
        "p",
    );
    {
        let store = Store::open(&path).expect("open");
        let new = store.put_relayed(vec![c.clone(), p.clone()]).expect("put");
        assert_eq!(new.len(), 2);
        assert!(store.contains(&p.id()).expect("read"), "visible at once");
        assert_eq!(store.record_count().expect("count"), 2);
        store.close().expect("close");
    }
    let store = Store::open(&path).expect("reopen");
    assert!(store.contains(&c.id()).expect("read"));
    assert_eq!(
        store.status(&lineage, &p.id()).expect("status"),
        Some(PatchStatus::Pending)
    );
}
