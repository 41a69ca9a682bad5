//! Forgetting a family: the store afterwards is the store that never held it (every remaining
//! lineage equals its state from scratch, the shared trees are sound, the counts are right),
//! the blobs only it named are gone while every blob a remaining commons names stays (one of
//! them shared with the forgotten family), its download-list entries are gone, and a kill right
//! after the removal finishes the job when the store next opens.

mod common;

use std::collections::BTreeSet;

use commons_core::{BlobHash, ForkBase, LineageId, Record};
use commons_store::Store;

use common::{assert_all_lineages, charter, key, maintainers, patch, raw_sled, validation};

/// Two families. "garden" (a root and a fork, 60 patches with validations, some files its own,
/// one shared with "orchard") and "orchard" (a root, 40 patches). Returns (garden's records,
/// orchard's records, garden-only blobs, orchard's blobs, the shared blob).
struct World {
    garden: Vec<Record>,
    orchard: Vec<Record>,
    garden_only: Vec<BlobHash>,
    orchard_blobs: Vec<BlobHash>,
    shared: BlobHash,
    garden_l: LineageId,
}

fn world(store: &Store) -> World {
    let (g, o) = (key(1), key(2));
    let blob = |content: &[u8]| store.blobs().put_bytes(content).expect("blob");
    // Loose blobs (over the pack limit), so removing them frees their files.
    let big = |tag: &str, i: u64| {
        let mut v = vec![0u8; 70 * 1024];
        v[..tag.len()].copy_from_slice(tag.as_bytes());
        v[tag.len()..tag.len() + 8].copy_from_slice(&i.to_le_bytes());
        v
    };
    let shared = blob(&big("shared", 0));
    let root = charter(&g, 1, "garden", maintainers(&[&g]), 1, None);
    let garden_l = LineageId::from(root.id());
    let mut garden = vec![root];
    let mut garden_only = Vec::new();
    let mut last = None;
    for i in 0..60u64 {
        let h = if i == 7 {
            shared
        } else {
            let h = blob(&big("garden", i));
            garden_only.push(h);
            h
        };
        let p = patch(
            &g,
            10 + i,
            garden_l,
            last.into_iter().collect(),
            vec![(format!("beds/{i}.txt"), None, Some(h))],
            &format!("bed {i}"),
        );
        last = Some(p.id());
        garden.push(validation(&g, 10 + i, garden_l, p.id(), true));
        garden.push(p);
    }
    let fork = charter(
        &key(3),
        100,
        "garden (fork)",
        maintainers(&[&key(3)]),
        1,
        Some(ForkBase {
            parent: garden_l,
            heads: last.into_iter().collect(),
            excluded: vec![],
        }),
    );
    let fork_l = LineageId::from(fork.id());
    let on_fork = patch(
        &key(3),
        101,
        fork_l,
        last.into_iter().collect(),
        vec![("beds/fork.txt".into(), None, Some(garden_only[0]))],
        "fork bed",
    );
    garden.extend([fork, on_fork]);

    let root = charter(&o, 2, "orchard", maintainers(&[&o]), 1, None);
    let orchard_l = LineageId::from(root.id());
    let mut orchard = vec![root];
    let mut orchard_blobs = vec![shared];
    let mut last = None;
    for i in 0..40u64 {
        let h = blob(&big("orchard", i));
        orchard_blobs.push(h);
        let mut changes = vec![(format!("trees/{i}.txt"), None, Some(h))];
        if i == 0 {
            changes.push(("shared.txt".into(), None, Some(shared)));
        }
        let p = patch(
            &o,
            20 + i,
            orchard_l,
            last.into_iter().collect(),
            changes,
            &format!("tree {i}"),
        );
        last = Some(p.id());
        orchard.push(validation(&o, 20 + i, orchard_l, p.id(), true));
        orchard.push(p);
    }
    World {
        garden,
        orchard,
        garden_only,
        orchard_blobs,
        shared,
        garden_l,
    }
}

fn check_forgotten(store: &Store, w: &World) {
    let left: BTreeSet<String> = store
        .lineages()
        .unwrap()
        .into_iter()
        .map(|s| s.charter.name)
        .collect();
    assert_eq!(left, BTreeSet::from(["orchard".to_string()]));
    assert_eq!(store.record_count().unwrap(), w.orchard.len() as u64);
    for r in &w.garden {
        assert!(!store.contains(&r.id()).unwrap(), "{} still stored", r.id());
    }
    // The store that never held garden: states, family ids, shared trees (no leaked node).
    assert_all_lineages(store, &w.orchard, "after forgetting garden");
    for h in &w.orchard_blobs {
        assert!(store.blobs().contains(h), "orchard's blob {h} was removed");
    }
    assert!(store.blobs().contains(&w.shared), "the shared blob stays");
    let wanted = store.wanted_blobs(None, 100).unwrap();
    assert!(
        wanted.iter().all(|(_, l)| *l != w.garden_l),
        "garden's download entries stay: {wanted:?}"
    );
}

/// The trees whose content does not depend on the order records came in or on node ids: after
/// forgetting, each must hold exactly what a store given only the remaining records holds.
const COMPARED: [&str; 14] = [
    "records",
    "lineage_records",
    "family",
    "forks",
    "children",
    "validations",
    "generations",
    "status",
    "by_status",
    "heads",
    "excluded",
    "base_waits",
    "opinions",
    "wanted_blobs",
];

type Dump = Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>;

/// The content of the compared trees of a closed store.
fn dump(dir: &std::path::Path) -> Dump {
    let db = raw_sled(&dir.join("db"));
    COMPARED
        .iter()
        .map(|t| {
            let tree = db.open_tree(t).unwrap();
            let entries = tree
                .iter()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (k.to_vec(), v.to_vec())
                })
                .collect();
            (t.to_string(), entries)
        })
        .collect()
}

#[test]
fn forgetting_a_family_leaves_the_store_that_never_held_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let w = world(&store);
    // A blob garden wants (not here) and one orchard wants.
    let (missing_g, missing_o) = (BlobHash::of(b"never came g"), BlobHash::of(b"never came o"));
    let orchard_l = LineageId::from(w.orchard[0].id());
    store
        .want_blobs(vec![(missing_g, w.garden_l), (missing_o, orchard_l)])
        .unwrap();
    store.put(w.garden.clone()).unwrap();
    store.put(w.orchard.clone()).unwrap();
    assert_eq!(store.lineages().unwrap().len(), 3);

    let gone = store.forget_family(&w.garden_l).unwrap();
    assert_eq!(gone.lineages.len(), 2, "the root and its fork");
    assert_eq!(gone.records, w.garden.len() as u64);
    assert_eq!(gone.blobs, w.garden_only.len() as u64);
    assert!(gone.blob_bytes >= 59 * 70 * 1024);
    for h in &w.garden_only {
        assert!(!store.blobs().contains(h), "garden's blob {h} stays");
    }
    check_forgotten(&store, &w);
    assert_eq!(
        store.wanted_blobs(None, 100).unwrap(),
        vec![(missing_o, orchard_l)]
    );
    // Forgetting again, or an unknown family, removes nothing.
    assert_eq!(store.forget_family(&w.garden_l).unwrap().records, 0);
    store.close().unwrap();
    drop(store);
    // Byte for byte, the indexes of a store that only ever held orchard.
    let fresh = tempfile::tempdir().unwrap();
    {
        let other = Store::open(fresh.path()).unwrap();
        other.want_blobs(vec![(missing_o, orchard_l)]).unwrap();
        other.put(w.orchard.clone()).unwrap();
        other.close().unwrap();
    }
    let (got, want) = (dump(dir.path()), dump(fresh.path()));
    for ((t, g), (_, f)) in got.iter().zip(&want) {
        assert_eq!(g.len(), f.len(), "tree {t}: entries");
        assert!(g == f, "tree {t}: content differs");
    }
    // The home works on: garden can come back.
    let store = Store::open(dir.path()).unwrap();
    store.put(w.garden.clone()).unwrap();
    assert_all_lineages(
        &store,
        &[w.orchard.clone(), w.garden.clone()].concat(),
        "garden stored again",
    );
    store.close().unwrap();
}

/// What a kill right after the removal's transaction leaves (the records gone, the re-index
/// marked as started): the store finishes it when it opens.
#[test]
fn a_forget_killed_after_its_transaction_finishes_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let w = world(&store);
    store.put(w.garden.clone()).unwrap();
    store.put(w.orchard.clone()).unwrap();
    store.close().unwrap();
    drop(store);
    {
        let db = raw_sled(&dir.path().join("db"));
        let records = db.open_tree("records").unwrap();
        let mut batch = sled::Batch::default();
        for r in &w.garden {
            batch.remove(r.id().as_bytes().as_slice());
        }
        records.apply_batch(batch).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("reindex", &[1u8])
            .unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    check_forgotten(&store, &w);
    store.close().unwrap();
}

/// The sweep: a loose blob no record names and nothing wrote for over an hour (left by a forget
/// killed before its blob step, say) goes with the next forget, even of a family that is not
/// here; a fresh one (a proposal's, written just before its record) stays, as does every blob a
/// stored record names, old or not.
#[test]
fn forgetting_sweeps_old_blobs_no_record_names_and_keeps_fresh_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let w = world(&store);
    store.put(w.orchard.clone()).unwrap();
    let age = |h: &BlobHash, secs: u64| {
        let f = std::fs::File::options()
            .write(true)
            .open(store.blobs().path_of(h))
            .unwrap();
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(secs))
            .unwrap();
    };
    let big = |tag: &[u8]| {
        let mut v = vec![7u8; 70 * 1024];
        v[..tag.len()].copy_from_slice(tag);
        store.blobs().put_bytes(&v).unwrap()
    };
    let (old, fresh) = (big(b"left behind"), big(b"a proposal's"));
    age(&old, 2 * 3600);
    // Garden's blobs were written but garden's records never stored: old ones are unreferenced.
    for h in &w.garden_only {
        age(h, 2 * 3600);
    }
    for h in w.orchard_blobs.iter().chain([&w.shared]) {
        age(h, 3 * 3600);
    }
    let swept = store.forget_family(&LineageId([0xee; 32])).unwrap();
    assert_eq!(swept.records, 0, "nothing of that family was here");
    assert_eq!(swept.blobs, 1 + w.garden_only.len() as u64);
    assert!(
        !store.blobs().contains(&old),
        "the old unreferenced blob went"
    );
    assert!(store.blobs().contains(&fresh), "the fresh one stays");
    for h in w.orchard_blobs.iter().chain([&w.shared]) {
        assert!(store.blobs().contains(h), "orchard's blob {h} stays");
    }
    assert_all_lineages(&store, &w.orchard, "orchard after the sweep");
    store.close().unwrap();
}
