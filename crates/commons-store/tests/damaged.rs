//! A record the store cannot decode never bricks the home: the store opens, every other record
//! and commons stays readable, the bad record is reported once and set aside, and a good copy
//! stored later brings the state back. A re-index killed midway resumes when the store opens.

mod common;

use common::*;
use commons_core::{LineageId, Record, RecordId};
use commons_store::Store;

/// Two commons: "a" with 30 accepted patches and a pending one, "b" with 5 accepted patches.
fn two_commons() -> Vec<Record> {
    let m = key(1);
    let mut all = Vec::new();
    for (name, n) in [("a", 30u64), ("b", 5)] {
        let c = charter(&m, 1, name, maintainers(&[&m]), 1, None);
        let l = LineageId::from(c.id());
        all.push(c);
        let mut parent: Option<RecordId> = None;
        for i in 0..n {
            let p = patch(
                &m,
                10 + i,
                l,
                parent.into_iter().collect(),
                vec![(format!("{name}/f{i}"), None, Some(blob(i)))],
                "p",
            );
            parent = Some(p.id());
            all.push(validation(&m, 100 + i, l, p.id(), true));
            all.push(p);
        }
        all.push(patch(
            &m,
            99,
            l,
            vec![],
            vec![(format!("{name}/pending"), None, Some(blob(999)))],
            "pending",
        ));
    }
    all
}

fn lineage_of(records: &[Record], name: &str) -> LineageId {
    let c = records
        .iter()
        .find(|r| r.as_charter().is_some_and(|c| c.name == name))
        .expect("charter");
    LineageId::from(c.id())
}

/// A store holding `records`, closed, with two of them damaged on disk: one overwritten with
/// garbage, one holding the bytes of another record. Returns the two damaged ids.
fn damaged_store(dir: &std::path::Path, records: &[Record]) -> [RecordId; 2] {
    let store = Store::open(dir).unwrap();
    store.put(records.to_vec()).unwrap();
    store.close().unwrap();
    let a = lineage_of(records, "a");
    let patches: Vec<&Record> = records
        .iter()
        .filter(|r| r.as_patch().is_some_and(|p| p.lineage == a))
        .collect();
    // The 10th patch of the chain (so its descendants lose their base), and the pending one.
    let (garbage, swapped) = (patches[9].id(), patches[patches.len() - 1].id());
    let db = raw_sled(&dir.join("db"));
    let t = db.open_tree("records").unwrap();
    t.insert(garbage.as_bytes(), &b"\x01\x01not a record at all"[..])
        .unwrap();
    t.insert(swapped.as_bytes(), records[0].bytes()).unwrap();
    db.flush().unwrap();
    drop(db);
    [garbage, swapped]
}

fn without(records: &[Record], gone: &[RecordId]) -> Vec<Record> {
    records
        .iter()
        .filter(|r| !gone.contains(&r.id()))
        .cloned()
        .collect()
}

#[test]
fn a_record_that_does_not_decode_is_set_aside_and_everything_else_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let all = two_commons();
    let before = {
        let s = Store::open(dir.path()).unwrap();
        s.put(all.clone()).unwrap();
        let roots: std::collections::BTreeMap<String, _> = s
            .lineages()
            .unwrap()
            .into_iter()
            .map(|l| (l.charter.name, l.root))
            .collect();
        s.close().unwrap();
        roots
    };
    let dir = tempfile::tempdir().unwrap();
    let bad = damaged_store(dir.path(), &all);
    let store = Store::open(dir.path()).unwrap();

    // The first read comes upon a damaged record; it is answered as if the record were absent.
    let a = lineage_of(&all, "a");
    let listed = store.lineages().unwrap();
    assert_eq!(listed.len(), 2, "both commons listed");
    let family = store.family_records(&a).unwrap();
    assert!(family.iter().all(|r| !bad.contains(&r.id())));
    assert_eq!(store.get(&bad[0]).unwrap(), None);
    assert_eq!(store.get(&bad[1]).unwrap(), None);
    // Everything matches the state of the records that are left, "b" untouched.
    let left = without(&all, &bad);
    assert_all_lineages(&store, &left, "after the repair");
    let b = lineage_of(&all, "b");
    assert_eq!(store.lineage(&b).unwrap().unwrap().root, before["b"]);
    assert_eq!(store.record_count().unwrap(), left.len() as u64);

    // Reported once, with the reason.
    let (count, listed) = store.damaged(10).unwrap();
    assert_eq!(count, 2);
    let mut ids: Vec<RecordId> = listed.iter().map(|d| d.id).collect();
    ids.sort();
    let mut want = bad.to_vec();
    want.sort();
    assert_eq!(ids, want);
    assert!(listed.iter().all(|d| !d.reason.is_empty() && !d.refetched));
    assert!(
        listed.iter().any(|d| d.reason.contains("have id")),
        "{listed:?}"
    );
    assert_eq!(store.stats().set_aside, 2);
    store.lineages().unwrap();
    store.family_records(&a).unwrap();
    assert_eq!(store.stats().set_aside, 2, "reported once");

    // A good copy (from a peer or a bundle) brings the commons back as it was.
    let copies: Vec<Record> = all
        .iter()
        .filter(|r| bad.contains(&r.id()))
        .cloned()
        .collect();
    assert_eq!(store.put(copies).unwrap().len(), 2);
    assert_all_lineages(&store, &all, "after the good copies");
    assert_eq!(store.lineage(&a).unwrap().unwrap().root, before["a"]);
    let (_, listed) = store.damaged(10).unwrap();
    assert!(listed.iter().all(|d| d.refetched), "{listed:?}");
    store.close().unwrap();

    // And after a reopen, nothing is found damaged again.
    let store = Store::open(dir.path()).unwrap();
    assert_all_lineages(&store, &all, "reopened");
    assert_eq!(store.stats().set_aside, 0);
}

#[test]
fn a_put_that_meets_a_damaged_record_still_stores_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let all = two_commons();
    let bad = damaged_store(dir.path(), &all);
    let store = Store::open(dir.path()).unwrap();
    // A second maintainer's vote on the garbage patch makes the store load that patch.
    let a = lineage_of(&all, "a");
    let m = key(1);
    let vote = validation(&m, 500, a, bad[0], false);
    assert_eq!(store.put(vec![vote.clone()]).unwrap(), vec![vote.id()]);
    let mut left = without(&all, &bad);
    left.push(vote);
    assert_all_lineages(&store, &left, "after the put");
    assert_eq!(store.stats().set_aside, 2);
}

#[test]
fn a_reindex_killed_midway_resumes_when_the_store_opens() {
    // Every tree the re-index rebuilds (schema 2).
    const DERIVED: [&str; 15] = [
        "lineage_records",
        "family",
        "forks",
        "children",
        "validations",
        "generations",
        "status",
        "by_status",
        "lineages",
        "heads",
        "excluded",
        "nodes",
        "node_rc",
        "base_waits",
        "opinions",
    ];
    let all = two_commons();
    for phase in [1u8, 2] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put(all.clone()).unwrap();
        store.close().unwrap();
        {
            // What a kill leaves: the phase in `meta`, some records moved aside (phase 1), or all
            // of them with the derived trees cleared (phase 2, before its first chunk).
            let db = raw_sled(&dir.path().join("db"));
            let records = db.open_tree("records").unwrap();
            let staging = db.open_tree("reindex").unwrap();
            // Phase 1: half of the records moved; phase 2: all of them, derived trees cleared.
            let step = if phase == 1 { 2 } else { 1 };
            for entry in records.iter().step_by(step) {
                let (k, v) = entry.unwrap();
                // kind ‖ generation ‖ id; the generation only orders the re-index.
                let mut staged = vec![v[1]];
                staged.extend_from_slice(&[0; 8]);
                staged.extend_from_slice(&k);
                staging.insert(staged, v.clone()).unwrap();
                records.remove(&k).unwrap();
            }
            if phase == 2 {
                for t in DERIVED {
                    db.open_tree(t).unwrap().clear().unwrap();
                }
                db.open_tree("meta")
                    .unwrap()
                    .insert("record_count", &0u64.to_be_bytes())
                    .unwrap();
            }
            db.open_tree("meta")
                .unwrap()
                .insert("reindex", &[phase])
                .unwrap();
            db.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_all_lineages(&store, &all, &format!("resumed from phase {phase}"));
        assert_eq!(store.record_count().unwrap(), all.len() as u64);
        store.close().unwrap();
        let db = raw_sled(&dir.path().join("db"));
        assert!(
            db.open_tree("meta")
                .unwrap()
                .get("reindex")
                .unwrap()
                .is_none()
        );
        assert!(db.open_tree("reindex").unwrap().is_empty());
    }
}

/// Listing a family's ids (what a peer's `ListIds` and reconciliation read) decodes no record:
/// the work is one index entry per record, whatever the records hold.
#[test]
fn a_familys_ids_are_listed_without_decoding_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let all = two_commons();
    let store = Store::open(dir.path()).unwrap();
    store.put(all.clone()).unwrap();
    store.close().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = lineage_of(&all, "a");
    let before = store.stats().records_decoded;
    let ids = store.family_ids(&a).unwrap();
    assert_eq!(store.stats().records_decoded, before, "no record decoded");
    let want = all
        .iter()
        .filter(|r| match r.body() {
            commons_core::Body::Charter(_) => LineageId::from(r.id()) == a,
            commons_core::Body::Patch(p) => p.lineage == a,
            commons_core::Body::Validation(v) => v.lineage == a,
        })
        .count();
    assert_eq!(ids.len(), want);
}

/// A derived entry of the wrong layout (here every node of the shared trees cut short) is not
/// an error that sticks: the read that meets it re-indexes the store from its records and
/// answers as before.
#[test]
fn a_corrupt_index_entry_is_rebuilt_from_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let all = two_commons();
    let a = lineage_of(&all, "a");
    let before = {
        let s = Store::open(dir.path()).unwrap();
        s.put(all.clone()).unwrap();
        let t = s.tree(&a).unwrap();
        s.close().unwrap();
        t
    };
    {
        let db = raw_sled(&dir.path().join("db"));
        let nodes = db.open_tree("nodes").unwrap();
        let ids: Vec<_> = nodes.iter().keys().map(|k| k.unwrap()).collect();
        assert!(!ids.is_empty(), "the lineages' trees are nodes");
        for k in ids {
            nodes.insert(k, &b"\x01short"[..]).unwrap();
        }
        db.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let trees: Vec<_> = store
        .lineages()
        .unwrap()
        .into_iter()
        .map(|l| store.tree(&l.lineage).expect("no CorruptIndex error"))
        .collect();
    assert!(trees.contains(&before), "the tree of `a` is back");
    assert_eq!(store.tree(&a).unwrap(), before);
    assert_eq!(store.stats().set_aside, 0, "no record was lost");
}
