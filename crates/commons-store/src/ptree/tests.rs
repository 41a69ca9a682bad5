//! Shared trees against a `BTreeMap` model: contents, isolation between sharers, and counts that
//! match the references from the live roots after every batch.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

/// An in-memory [`NodeSource`] standing in for sled.
#[derive(Debug, Default)]
struct Mem {
    nodes: BTreeMap<u64, Vec<u8>>,
    rcs: BTreeMap<u64, u32>,
    next: Option<u64>,
}

impl NodeSource for Mem {
    fn node_bytes(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.nodes.get(&id).cloned())
    }
    fn rc_bytes(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.rcs.get(&id).map(|rc| rc.to_be_bytes().to_vec()))
    }
    fn next_id_bytes(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.next.map(|n| n.to_be_bytes().to_vec()))
    }
}

impl Mem {
    fn apply(&mut self, w: Writes) {
        for (id, bytes) in w.nodes {
            match bytes {
                Some(b) => self.nodes.insert(id, b),
                None => self.nodes.remove(&id),
            };
        }
        for (id, rc) in w.rcs {
            match rc {
                Some(rc) => self.rcs.insert(id, rc),
                None => self.rcs.remove(&id),
            };
        }
        if let Some(n) = w.next_id {
            self.next = Some(n);
        }
    }

    /// Counts from the roots (one per holder) must equal the stored counts, and no stored node
    /// may be unreachable.
    fn check(&self, roots: &[u64]) {
        let mut refs: BTreeMap<u64, u32> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        let mut stack: Vec<u64> = roots.iter().copied().filter(|r| *r != 0).collect();
        for r in &stack {
            *refs.entry(*r).or_default() += 1;
        }
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            let node = Node::decode(self.nodes.get(&id).expect("reachable node exists")).unwrap();
            if let Node::Inner(ch) = node {
                for (_, c) in ch {
                    *refs.entry(c).or_default() += 1;
                    stack.push(c);
                }
            }
        }
        let stored: BTreeSet<u64> = self.nodes.keys().copied().collect();
        assert_eq!(
            stored, seen,
            "every stored node is reachable, and only those"
        );
        for (id, n) in refs {
            let rc = self.rcs.get(&id).copied().unwrap_or(1);
            assert_eq!(rc, n, "count of node {id}");
        }
    }
}

fn contents(n: &Nodes, src: &Mem, root: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    n.scan(src, root, b"", &|_| true, usize::MAX)
        .unwrap()
        .into_iter()
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    Insert(usize, Vec<u8>, Vec<u8>),
    Remove(usize, Vec<u8>),
    Fork(usize),
    Drop(usize),
    Commit,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    // Awkward keys: a, a/b, a.b, a-b, the empty key, long keys, non-ASCII.
    prop_oneof![
        prop::sample::select(vec![
            b"".to_vec(),
            b"a".to_vec(),
            b"a/b".to_vec(),
            b"a.b".to_vec(),
            b"a-b".to_vec(),
            "é/ü".as_bytes().to_vec(),
            vec![b'x'; 1024],
        ]),
        prop::collection::vec(any::<u8>(), 0..40),
        (0u32..3000).prop_map(|i| format!("dir/{i:05}").into_bytes()),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0usize..6, key(), prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(t, k, v)| Op::Insert(t, k, v)),
        3 => (0usize..6, key()).prop_map(|(t, k)| Op::Remove(t, k)),
        1 => (0usize..6).prop_map(Op::Fork),
        1 => (0usize..6).prop_map(Op::Drop),
        1 => Just(Op::Commit),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Several holders (lineages) of trees that fork from each other: each equals its model
    /// after any sequence of writes, forks, drops and commits, and counts stay exact.
    #[test]
    fn shared_trees_match_their_models(ops in prop::collection::vec(op(), 1..400)) {
        let mut mem = Mem::default();
        let mut n = Nodes::new();
        let mut roots: Vec<u64> = vec![0];
        let mut models: Vec<BTreeMap<Vec<u8>, Vec<u8>>> = vec![BTreeMap::new()];
        for op in ops {
            match op {
                Op::Insert(t, k, v) => {
                    let t = t % roots.len();
                    let old = n.insert(&mem, &mut roots[t], &k, v.clone()).unwrap();
                    prop_assert_eq!(old, models[t].insert(k, v));
                }
                Op::Remove(t, k) => {
                    let t = t % roots.len();
                    let old = n.remove(&mem, &mut roots[t], &k).unwrap();
                    prop_assert_eq!(old, models[t].remove(&k));
                }
                Op::Fork(t) => {
                    let t = t % roots.len();
                    n.share(&mem, roots[t]).unwrap();
                    roots.push(roots[t]);
                    models.push(models[t].clone());
                }
                Op::Drop(t) => {
                    if roots.len() > 1 {
                        let t = t % roots.len();
                        n.release(&mem, roots[t]).unwrap();
                        roots.remove(t);
                        models.remove(t);
                    }
                }
                Op::Commit => {
                    mem.apply(std::mem::take(&mut n).finish());
                    mem.check(&roots);
                }
            }
            for (r, m) in roots.iter().zip(&models) {
                prop_assert_eq!(&contents(&n, &mem, *r), m);
            }
        }
        mem.apply(n.finish());
        mem.check(&roots);
        let n = Nodes::new();
        for (r, m) in roots.iter().zip(&models) {
            prop_assert_eq!(&contents(&n, &mem, *r), m);
            for (k, v) in m {
                prop_assert_eq!(n.get(&mem, *r, k).unwrap(), Some(v.clone()));
            }
        }
    }
}

#[test]
fn scans_stop_at_the_prefix_and_the_limit() {
    let mem = Mem::default();
    let mut n = Nodes::new();
    let mut root = 0;
    for i in 0..5000u32 {
        n.insert(
            &mem,
            &mut root,
            format!("d{}/{i:05}", i % 3).as_bytes(),
            vec![1],
        )
        .unwrap();
    }
    let under = n
        .scan(&mem, root, b"d1/", &|k| k.starts_with(b"d1/"), usize::MAX)
        .unwrap();
    assert_eq!(under.len(), 1667);
    assert!(under.windows(2).all(|w| w[0].0 < w[1].0));
    let some = n.scan(&mem, root, b"d1/02000", &|_| true, 3).unwrap();
    assert_eq!(some[0].0, b"d1/02002");
    assert_eq!(some.len(), 3);
}

#[test]
fn a_fork_is_one_count_and_the_first_write_copies_one_path() {
    let mut mem = Mem::default();
    let mut n = Nodes::new();
    let entries = (0..100_000u32).map(|i| (format!("f/{i:06}").into_bytes(), vec![7; 32]));
    let parent = n.build(&mem, entries).unwrap();
    mem.apply(n.finish());
    let stored = mem.nodes.len();
    assert!(stored > 1000, "100 000 entries make many nodes ({stored})");

    let mut n = Nodes::new();
    n.share(&mem, parent).unwrap();
    let w = n.finish();
    assert_eq!(w.nodes.len(), 0, "a fork writes no node");
    assert_eq!(w.rcs.len(), 1, "a fork writes one count");
    mem.apply(w);

    let mut n = Nodes::new();
    let mut fork = parent;
    n.insert(&mem, &mut fork, b"f/050000", vec![9; 32]).unwrap();
    let w = n.finish();
    assert!(
        w.nodes.len() <= 5,
        "one path copied: {} nodes",
        w.nodes.len()
    );
    mem.apply(w);
    mem.check(&[parent, fork]);

    // A second write in the fork, elsewhere, copies at most one more path below the root.
    let mut n = Nodes::new();
    n.insert(&mem, &mut fork, b"f/000001", vec![9; 32]).unwrap();
    let w = n.finish();
    assert!(w.nodes.len() <= 5, "{} nodes", w.nodes.len());
    mem.apply(w);
    let n = Nodes::new();
    assert_eq!(n.get(&mem, parent, b"f/050000").unwrap(), Some(vec![7; 32]));
    assert_eq!(n.get(&mem, fork, b"f/050000").unwrap(), Some(vec![9; 32]));
}

#[test]
fn blobs_are_shared_until_written() {
    let mut mem = Mem::default();
    let mut n = Nodes::new();
    let mut a = 0;
    n.set_blob(&mem, &mut a, vec![1; 2048]).unwrap();
    mem.apply(n.finish());
    let mut n = Nodes::new();
    n.share(&mem, a).unwrap();
    let mut b = a;
    n.set_blob(&mem, &mut b, vec![2; 2048]).unwrap();
    assert_ne!(a, b);
    let before = a;
    n.set_blob(&mem, &mut a, vec![3; 2048]).unwrap();
    assert_eq!(a, before, "the last holder writes in place");
    mem.apply(n.finish());
    let n = Nodes::new();
    assert_eq!(n.blob(&mem, a).unwrap(), Some(vec![3; 2048]));
    assert_eq!(n.blob(&mem, b).unwrap(), Some(vec![2; 2048]));
}

#[test]
fn damaged_nodes_are_errors_not_panics() {
    let mut mem = Mem::default();
    let mut n = Nodes::new();
    let root = n
        .build(
            &mem,
            (0..2000u32).map(|i| (i.to_be_bytes().to_vec(), vec![0; 8])),
        )
        .unwrap();
    mem.apply(n.finish());
    // A cycle: the root's first child points back at the root.
    let mut cyclic = mem.nodes.get(&root).cloned().unwrap();
    if let Ok(Node::Inner(mut ch)) = Node::decode(&cyclic) {
        ch[0].1 = root;
        cyclic = Node::Inner(ch).encode();
    }
    mem.nodes.insert(root, cyclic);
    let n = Nodes::new();
    assert!(n.get(&mem, root, &[0, 0, 0, 0]).is_err());
    assert!(n.scan(&mem, root, b"", &|_| true, usize::MAX).is_err());
    mem.nodes.insert(root, vec![1, 0]);
    // A new working set: one batch's keeps what it decoded (the store never changes under it).
    let n = Nodes::new();
    assert!(n.get(&mem, root, b"x").is_err());
}
