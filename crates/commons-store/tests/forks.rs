//! Forks share their parent's state: generated histories with forks at the tip (shared), at
//! older points, and forks of forks, with work continuing in every lineage and records
//! delivered in batches. After every batch each lineage equals its state computed from scratch
//! (so a change in a fork never shows in its parent, nor the other way), the shared trees'
//! counts are exact, and a fork at the tip equals its parent and costs no rebuild.

mod common;

use std::collections::BTreeMap;

use common::*;
use commons_core::{ForkBase, LineageId, Record, RecordId, SecretKey};
use commons_store::Store;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Propose to lineage `l` on its heads: change path `path` (to `content`, or delete it);
    /// `stale` makes the change's `before` wrong, so it conflicts if accepted.
    Propose {
        l: usize,
        path: u8,
        content: Option<u8>,
        stale: bool,
    },
    /// A maintainer of lineage `l` judges the `p`-th patch proposed so far.
    Validate { l: usize, p: usize, accept: bool },
    /// Fork lineage `l` at its current fork point.
    ForkTip { l: usize, maintainer: u8 },
    /// Fork lineage `l` at the `back`-th fork point it had before.
    ForkOld { l: usize, back: usize },
    /// Deliver what was built since the last delivery, as one batch.
    Deliver,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..8, 0u8..6, proptest::option::weighted(0.8, 0u8..8), proptest::bool::weighted(0.1))
            .prop_map(|(l, path, content, stale)| Op::Propose { l, path, content, stale }),
        6 => (0usize..8, 0usize..64, proptest::bool::weighted(0.85))
            .prop_map(|(l, p, accept)| Op::Validate { l, p, accept }),
        2 => (0usize..8, 0u8..3).prop_map(|(l, maintainer)| Op::ForkTip { l, maintainer }),
        1 => (0usize..8, 0usize..8).prop_map(|(l, back)| Op::ForkOld { l, back }),
        4 => Just(Op::Deliver),
    ]
}

const PATHS: [&str; 6] = ["a", "a/b", "a.b", "a-b", "é", "d/e/f"];

struct World {
    store: Store,
    keys: Vec<SecretKey>,
    /// Lineage id and the index of its maintainer's key.
    lineages: Vec<(LineageId, usize)>,
    /// Fork points each lineage had after each delivery.
    points: Vec<Vec<commons_core::state::ForkPoint>>,
    patches: Vec<RecordId>,
    pending: Vec<Record>,
    delivered: Vec<Record>,
    ts: u64,
}

impl World {
    fn new(dir: &std::path::Path) -> Self {
        let keys: Vec<SecretKey> = (1..=3).map(key).collect();
        let store = Store::open(dir).unwrap();
        let root = charter(&keys[0], 1, "root", maintainers(&[&keys[0]]), 1, None);
        let l = LineageId::from(root.id());
        store.put(vec![root.clone()]).unwrap();
        World {
            store,
            keys,
            lineages: vec![(l, 0)],
            points: vec![vec![Default::default()]],
            patches: vec![],
            pending: vec![],
            delivered: vec![root],
            ts: 10,
        }
    }

    fn tick(&mut self) -> u64 {
        self.ts += 1;
        self.ts
    }

    fn deliver(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        self.delivered.extend(batch.iter().cloned());
        self.store.put(batch).unwrap();
        for (i, (l, _)) in self.lineages.iter().enumerate() {
            let point = self.store.lineage(l).unwrap().unwrap().fork_point;
            self.points[i].push(point);
        }
    }

    fn fork(
        &mut self,
        l: usize,
        base: commons_core::state::ForkPoint,
        maintainer: usize,
    ) -> LineageId {
        let (parent, _) = self.lineages[l];
        let ts = self.tick();
        let c = charter(
            &self.keys[maintainer],
            ts,
            &format!("fork {ts}"),
            maintainers(&[&self.keys[maintainer]]),
            1,
            Some(ForkBase {
                parent,
                heads: base.heads,
                excluded: base.excluded,
            }),
        );
        let id = LineageId::from(c.id());
        self.lineages.push((id, maintainer));
        self.points.push(vec![]);
        self.pending.push(c);
        id
    }
}

fn check_all(w: &World, context: &str) {
    for (l, _) in &w.lineages {
        if w.store.lineage(l).unwrap().is_some() {
            assert_matches_scratch(&w.store, l, &format!("{context}, lineage {l}"));
        }
    }
    let check = w.store.check_trees().unwrap();
    assert!(check.problems.is_empty(), "{context}: {:?}", check.problems);
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut w = World::new(dir.path());
    for (n, op) in ops.into_iter().enumerate() {
        match op {
            Op::Propose {
                l,
                path,
                content,
                stale,
            } => {
                let l = l % w.lineages.len();
                let (lineage, _) = w.lineages[l];
                let Some(summary) = w.store.lineage(&lineage).unwrap() else {
                    continue;
                };
                let tree = w.store.tree(&lineage).unwrap();
                let path = PATHS[usize::from(path)].to_string();
                let before = if stale {
                    Some(blob(999))
                } else {
                    tree.get(&path).copied()
                };
                let after = content.map(|c| blob(u64::from(c) + 1000 * n as u64));
                if before == after {
                    continue;
                }
                let ts = w.tick();
                let author = (ts % 3) as usize;
                let p = patch(
                    &w.keys[author],
                    ts,
                    lineage,
                    summary.fork_point.heads.clone(),
                    vec![(path, before, after)],
                    "p",
                );
                w.patches.push(p.id());
                w.pending.push(p);
            }
            Op::Validate { l, p, accept } => {
                if w.patches.is_empty() {
                    continue;
                }
                let (lineage, m) = w.lineages[l % w.lineages.len()];
                let target = w.patches[p % w.patches.len()];
                let ts = w.tick();
                let v = validation(&w.keys[m], ts, lineage, target, accept);
                w.pending.push(v);
            }
            Op::ForkTip { l, maintainer } => {
                w.deliver();
                check_all(&w, &format!("op {n}, before a fork"));
                let l = l % w.lineages.len();
                let (parent, _) = w.lineages[l];
                let Some(summary) = w.store.lineage(&parent).unwrap() else {
                    continue;
                };
                let rebuilds = w.store.stats().rebuilds;
                let fork = w.fork(l, summary.fork_point.clone(), usize::from(maintainer));
                w.deliver();
                let forked = w.store.lineage(&fork).unwrap().expect("fork stored");
                if summary.family.is_some() {
                    assert_eq!(
                        w.store.stats().rebuilds,
                        rebuilds,
                        "op {n}: a fork at the tip is shared, not rebuilt"
                    );
                    assert_eq!(forked.root, summary.root, "op {n}: root");
                    assert_eq!(forked.files, summary.files);
                    assert_eq!(forked.fork_point, summary.fork_point);
                    assert_eq!(w.store.tree(&fork).unwrap(), w.store.tree(&parent).unwrap());
                    assert_eq!(
                        w.store.history(&fork).unwrap(),
                        w.store.history(&parent).unwrap()
                    );
                }
            }
            Op::ForkOld { l, back } => {
                let l = l % w.lineages.len();
                let points = &w.points[l];
                if points.is_empty() {
                    continue;
                }
                let base = points[points.len() - 1 - back % points.len()].clone();
                let m = w.lineages[l].1;
                w.deliver();
                let known = w.store.lineage(&w.lineages[l].0).unwrap().is_some();
                let rebuilds = w.store.stats().rebuilds;
                let fork = w.fork(l, base, (m + 1) % 3);
                w.deliver();
                if known {
                    // The parent's points are fork points of its own accepted sets: the walk
                    // from its state to the base applies, no rebuild.
                    assert_eq!(
                        w.store.stats().rebuilds,
                        rebuilds,
                        "op {n}: a fork at an older point walks the difference"
                    );
                    assert_matches_scratch(
                        &w.store,
                        &fork,
                        &format!("op {n}: fork at an older point"),
                    );
                }
            }
            Op::Deliver => w.deliver(),
        }
        if n % 5 == 4 {
            w.deliver();
            check_all(&w, &format!("after op {n}"));
        }
    }
    w.deliver();
    check_all(&w, "at the end");
    // And the same records in one batch, in another store, give the same states.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Store::open(other_dir.path()).unwrap();
    let mut all = w.delivered.clone();
    all.reverse();
    other.put(all).unwrap();
    let states: BTreeMap<_, _> = w
        .lineages
        .iter()
        .map(|(l, _)| (*l, w.store.lineage(l).unwrap()))
        .collect();
    for (l, s) in states {
        assert_eq!(
            other.lineage(&l).unwrap(),
            s,
            "lineage {l} in a store fed in another order"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn forks_share_and_stay_apart(ops in prop::collection::vec(op(), 1..60)) {
        run(ops);
    }
}

/// Forks of forks, ten deep, each at the tip: each shares (no rebuild), and work in the deepest
/// fork never shows in any ancestor.
#[test]
fn a_chain_of_forks_shares_and_work_in_the_last_stays_there() {
    let mut ops = Vec::new();
    for i in 0..10 {
        for _ in 0..3 {
            ops.push(Op::Propose {
                l: i,
                path: (i % 6) as u8,
                content: Some(i as u8),
                stale: false,
            });
            ops.push(Op::Validate {
                l: i,
                p: 1000,
                accept: true,
            });
        }
        ops.push(Op::ForkTip {
            l: i,
            maintainer: (i % 3) as u8,
        });
    }
    run(ops);
}
