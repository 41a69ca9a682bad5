//! The incremental lineage state: equal to the from-scratch state for generated histories
//! delivered in any order and any batches, and cheap: one more accepted patch on a long history
//! does not replay it.

mod common;

use std::collections::BTreeSet;

use common::*;
use commons_core::{ForkBase, LineageId, Record, RecordId};
use commons_store::Store;
use proptest::prelude::*;

/// One generated patch: lineage (0 root, 1 fork, 2 an unrelated lineage), parents (indices of
/// earlier patches), author, and changes as (path index, before, after).
#[derive(Debug, Clone)]
struct PatchSpec {
    lineage: u8,
    parents: Vec<usize>,
    author: u8,
    changes: Vec<(u8, Option<u8>, Option<u8>)>,
}

/// One generated validation: signer (0..3 root maintainers, 3..5 others), lineage, patch
/// index, verdict, timestamp (small, so maintainers change their minds and ties happen).
#[derive(Debug, Clone)]
struct VoteSpec {
    signer: u8,
    lineage: u8,
    patch: usize,
    accept: bool,
    ts: u64,
}

#[derive(Debug, Clone)]
struct History {
    patches: Vec<PatchSpec>,
    votes: Vec<VoteSpec>,
    fork_heads: Vec<usize>,
    fork_excluded: Vec<usize>,
    withheld: Vec<bool>,
    shuffle: u64,
}

const PATHS: [&str; 5] = ["a", "b", "d", "d/e", "c"];

fn history() -> impl Strategy<Value = History> {
    let patch = (
        0u8..3,
        proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
        0u8..5,
        proptest::collection::vec(
            (
                0u8..5,
                proptest::option::of(0u8..3),
                proptest::option::of(0u8..3),
            ),
            1..3,
        ),
    );
    (proptest::collection::vec(patch, 2..10), any::<u64>()).prop_flat_map(|(raw, shuffle)| {
        let n = raw.len();
        let patches: Vec<PatchSpec> = raw
            .into_iter()
            .enumerate()
            .map(|(i, (lineage, parents, author, changes))| PatchSpec {
                lineage,
                parents: if i == 0 {
                    vec![]
                } else {
                    parents.iter().map(|x| x.index(i)).collect()
                },
                author,
                changes,
            })
            .collect();
        let own: Vec<u8> = patches.iter().map(|p| p.lineage).collect();
        // Most votes are cast in the lineage the patch was proposed to, so that many patches
        // reach the threshold; the rest exercise cross-lineage validation.
        let vote = (
            0u8..5,
            proptest::option::weighted(0.4, 0u8..3),
            0..n,
            proptest::bool::weighted(0.75),
            0u64..4,
        )
            .prop_map(move |(signer, lineage, patch, accept, ts)| VoteSpec {
                signer,
                lineage: lineage.unwrap_or(own[patch]),
                patch,
                accept,
                ts,
            });
        (
            Just(patches),
            proptest::collection::vec(vote, 0..30),
            proptest::collection::vec(0..n, 0..3),
            proptest::collection::vec(0..n, 0..2),
            proptest::collection::vec(proptest::bool::weighted(0.1), n),
            Just(shuffle),
        )
            .prop_map(
                |(patches, votes, fork_heads, fork_excluded, withheld, shuffle)| History {
                    patches,
                    votes,
                    fork_heads,
                    fork_excluded,
                    withheld,
                    shuffle,
                },
            )
    })
}

/// Signs a generated history: the records to deliver (withheld patches left out).
fn build(h: &History) -> Vec<Record> {
    let keys: Vec<_> = (1..=5).map(key).collect();
    // Root: three maintainers, two must accept. The unrelated lineage: one maintainer.
    let root = charter(
        &keys[0],
        1,
        "root",
        maintainers(&[&keys[0], &keys[1], &keys[2]]),
        2,
        None,
    );
    let other = charter(&keys[3], 2, "other", maintainers(&[&keys[3]]), 1, None);
    let root_l = LineageId::from(root.id());
    let mut patches: Vec<Record> = Vec::new();
    // The fork's id depends on the ids of its heads, and patches proposed to the fork need the
    // fork's id. So patches are signed once with the root standing in for the fork, the fork
    // names heads among those, and every patch from the first fork patch on is signed again
    // with the real fork id. A head that was re-signed is never delivered: that fork's base
    // stays incomplete, which is a case worth generating too.
    let mut fork_patch_indices = Vec::new();
    let lineage_of = |l: u8, fork: Option<LineageId>| match l {
        0 => root_l,
        1 => fork.unwrap_or(root_l),
        _ => LineageId::from(other.id()),
    };
    for (i, spec) in h.patches.iter().enumerate() {
        if spec.lineage == 1 {
            fork_patch_indices.push(i);
        }
        patches.push(sign_patch(
            i,
            spec,
            &patches,
            lineage_of(spec.lineage, None),
            &keys,
        ));
    }
    // The fork names heads among patches of the root family (ancestors must exist).
    let id_of = |i: usize, patches: &[Record]| patches[i].id();
    let mut heads: Vec<RecordId> = h.fork_heads.iter().map(|i| id_of(*i, &patches)).collect();
    heads.sort();
    heads.dedup();
    let mut excluded: Vec<RecordId> = h
        .fork_excluded
        .iter()
        .map(|i| id_of(*i, &patches))
        .collect();
    excluded.sort();
    excluded.dedup();
    let fork = charter(
        &keys[4],
        3,
        "fork",
        maintainers(&[&keys[1], &keys[4]]),
        1,
        Some(ForkBase {
            parent: root_l,
            heads,
            excluded,
        }),
    );
    let fork_l = LineageId::from(fork.id());
    if let Some(first) = fork_patch_indices.first().copied() {
        for i in first..patches.len() {
            let spec = &h.patches[i];
            let p = sign_patch(
                i,
                spec,
                &patches,
                lineage_of(spec.lineage, Some(fork_l)),
                &keys,
            );
            patches[i] = p;
        }
    }
    let lineages = [root_l, fork_l, LineageId::from(other.id())];
    let mut out = vec![root, other, fork];
    for v in &h.votes {
        out.push(validation(
            &keys[usize::from(v.signer)],
            10 + v.ts,
            lineages[usize::from(v.lineage)],
            patches[v.patch].id(),
            v.accept,
        ));
    }
    for (i, p) in patches.into_iter().enumerate() {
        if !h.withheld[i] {
            out.push(p);
        }
    }
    out
}

fn sign_patch(
    i: usize,
    spec: &PatchSpec,
    earlier: &[Record],
    lineage: LineageId,
    keys: &[commons_core::SecretKey],
) -> Record {
    let mut changes = std::collections::BTreeMap::new();
    for (p, before, after) in &spec.changes {
        let (before, after) = (
            before.map(|x| blob(u64::from(x))),
            after.map(|x| blob(u64::from(x))),
        );
        if before != after {
            changes.insert(PATHS[usize::from(*p)].to_string(), (before, after));
        }
    }
    if changes.is_empty() {
        changes.insert(format!("own/{i}"), (None, Some(blob(100 + i as u64))));
    }
    patch(
        &keys[usize::from(spec.author)],
        100 + i as u64,
        lineage,
        spec.parents.iter().map(|p| earlier[*p].id()).collect(),
        changes
            .into_iter()
            .map(|(path, (b, a))| (path, b, a))
            .collect(),
        &format!("patch {i}"),
    )
}

/// A deterministic shuffle and split into batches.
fn batches(mut records: Vec<Record>, seed: u64) -> Vec<Vec<Record>> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for i in (1..records.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        records.swap(i, j);
    }
    let mut out = Vec::new();
    while !records.is_empty() {
        let take = (1 + next() % 6) as usize;
        let rest = records.split_off(take.min(records.len()));
        out.push(std::mem::replace(&mut records, rest));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Whatever the order and batching of delivery, after every batch each lineage's stored
    /// statuses, status index, tree, history, counts, fork point and root equal the state
    /// computed from scratch from the records delivered so far.
    #[test]
    fn incremental_state_equals_from_scratch(h in history()) {
        let records = build(&h);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut delivered = Vec::new();
        for (n, batch) in batches(records, h.shuffle).into_iter().enumerate() {
            delivered.extend(batch.iter().cloned());
            store.put(batch).unwrap();
            assert_all_lineages(&store, &delivered, &format!("after batch {n}"));
        }
    }
}

/// Accepting one more patch at the end of a history of 2,000 accepted patches touches a
/// constant amount of it; changing the verdict on a patch near the end touches only the suffix.
/// A from-scratch recomputation would decode every record of the lineage.
#[test]
fn one_more_patch_on_a_long_history_does_not_replay_it() {
    const N: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let m = key(1);
    let c = charter(&m, 1, "long", maintainers(&[&m]), 1, None);
    let l = LineageId::from(c.id());
    store.put(vec![c]).unwrap();
    let mut parent: Option<RecordId> = None;
    let mut ids = Vec::new();
    let mut batch = Vec::new();
    let make = |i: u64, parent: Option<RecordId>| {
        let p = patch(
            &m,
            10 + i,
            l,
            parent.into_iter().collect(),
            vec![(format!("files/{i}"), None, Some(blob(i)))],
            "p",
        );
        let v = validation(&m, 10 + i, l, p.id(), true);
        (p, v)
    };
    for i in 0..N {
        let (p, v) = make(i, parent);
        parent = Some(p.id());
        ids.push(p.id());
        batch.push(p);
        batch.push(v);
        if batch.len() >= 500 {
            store.put(std::mem::take(&mut batch)).unwrap();
        }
    }
    store.put(batch).unwrap();
    assert_eq!(store.history(&l).unwrap().len(), N as usize);

    // One more, at the end.
    let before = store.stats();
    let (p, v) = make(N, parent);
    store.put(vec![p.clone(), v]).unwrap();
    let after = store.stats();
    assert_eq!(store.history(&l).unwrap().last().map(|x| x.0), Some(p.id()));
    assert_eq!(
        after.rebuilds, before.rebuilds,
        "no recomputation from scratch"
    );
    assert!(
        after.patch_loads - before.patch_loads <= 2,
        "patches loaded: {:?} → {:?}",
        before,
        after
    );
    assert!(
        after.log_entries_read - before.log_entries_read <= 1,
        "log read: {:?} → {:?}",
        before,
        after
    );
    assert!(
        after.records_decoded - before.records_decoded <= 4,
        "records decoded: {:?} → {:?}",
        before,
        after
    );

    // The maintainer changes their mind about the tenth patch from the end: only the suffix
    // after it is undone and replayed.
    let target = ids[ids.len() - 10];
    let before = store.stats();
    store
        .put(vec![validation(&m, 100_000, l, target, false)])
        .unwrap();
    let after = store.stats();
    assert_eq!(after.rebuilds, before.rebuilds);
    assert!(
        after.log_entries_read - before.log_entries_read <= 11,
        "log read: {:?} → {:?}",
        before,
        after
    );
    assert!(
        after.patch_loads - before.patch_loads <= 2 * 11,
        "patches loaded: {:?} → {:?}",
        before,
        after
    );
    assert_eq!(
        store.history(&l).unwrap().len(),
        N as usize,
        "one left, one came"
    );
    assert_eq!(store.lineage(&l).unwrap().unwrap().files, N);

    assert_matches_scratch(&store, &l, "long history");
    let accepted: BTreeSet<RecordId> = store
        .history(&l)
        .unwrap()
        .into_iter()
        .map(|x| x.0)
        .collect();
    assert!(!accepted.contains(&target));
}

/// A catch-up delivers a history's validations in record-id order, which is random with respect
/// to the history. Stored in one batch, they are applied in history order: no patch is undone
/// and replayed, and the state is the one computed from scratch.
#[test]
fn validations_arriving_in_random_order_are_applied_in_history_order() {
    const N: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let m = key(1);
    let c = charter(&m, 1, "shuffled", maintainers(&[&m]), 1, None);
    let l = LineageId::from(c.id());
    let mut patches = Vec::new();
    let mut validations = Vec::new();
    let mut parent: Option<RecordId> = None;
    for i in 0..N {
        let p = patch(
            &m,
            10 + i,
            l,
            parent.into_iter().collect(),
            vec![(format!("files/{i}"), None, Some(blob(i)))],
            "p",
        );
        validations.push(validation(&m, 10 + i, l, p.id(), true));
        parent = Some(p.id());
        patches.push(p);
    }
    // Record-id order, as reconciliation hands them out.
    validations.sort_by_key(|v| v.id());
    store.put(vec![c]).unwrap();
    store.put(patches).unwrap();
    let before = store.stats();
    store.put(validations).unwrap();
    let after = store.stats();
    assert_eq!(store.history(&l).unwrap().len(), N as usize);
    assert!(
        after.patch_loads - before.patch_loads <= 2 * N,
        "each patch loaded about once, not once per later acceptance: {before:?} → {after:?}"
    );
    assert_matches_scratch(&store, &l, "validations in id order");
}

/// Thousands of concurrent patches (one generation) accepted in one batch whose validations come
/// in record-id order: each acceptance appends to the log (the batch takes them by generation,
/// then by patch id, the log's own order), so no suffix is undone and replayed.
#[test]
fn concurrent_patches_accepted_in_one_batch_append_to_the_log() {
    const N: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let m = key(1);
    let c = charter(&m, 1, "concurrent", maintainers(&[&m]), 1, None);
    let l = LineageId::from(c.id());
    let mut patches = Vec::new();
    let mut validations = Vec::new();
    for i in 0..N {
        let p = patch(
            &m,
            10 + i,
            l,
            vec![],
            vec![(format!("f/{i}"), None, Some(blob(i)))],
            "p",
        );
        validations.push(validation(&m, 10 + i, l, p.id(), true));
        patches.push(p);
    }
    validations.sort_by_key(|v| v.id());
    store.put(vec![c]).unwrap();
    store.put(patches).unwrap();
    let before = store.stats();
    store.put(validations).unwrap();
    let after = store.stats();
    assert_eq!(store.history(&l).unwrap().len(), N as usize);
    assert!(
        after.log_entries_read - before.log_entries_read <= N,
        "no suffix replayed: {before:?} → {after:?}"
    );
    assert_matches_scratch(&store, &l, "concurrent patches");
}
