//! A check of the shared trees' structure (tests and `commons store verify`): every count
//! equals the references held by the lineages' roots and by inner nodes, every reachable node
//! exists and decodes, and no stored node is unreachable.

use std::collections::{BTreeMap, BTreeSet};

use crate::StoreError;
use crate::keys::{self, LineageMeta, T};
use crate::overlay::io;
use crate::ptree::Node;
use crate::state::{Ctx, corrupt};

/// What [`check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TreeCheck {
    /// Nodes stored.
    pub nodes: u64,
    /// Nodes held by more than one parent or lineage.
    pub shared: u64,
    /// What is wrong, one line each (empty when the structure is sound).
    pub problems: Vec<String>,
}

/// Walks every lineage's roots. O(nodes): for tests and an explicit verify only.
pub fn check(ctx: &Ctx<'_>) -> Result<TreeCheck, StoreError> {
    let mut out = TreeCheck::default();
    let mut refs: BTreeMap<u64, u32> = BTreeMap::new();
    let mut stack = Vec::new();
    for entry in ctx.o.disk(T::Lineages).iter() {
        let (k, v) = entry.map_err(io)?;
        let meta = LineageMeta::decode(&v).ok_or_else(|| corrupt(T::Lineages, "a summary"))?;
        for root in [meta.files_root, meta.log_root, meta.base_root, meta.acc] {
            if root != 0 {
                *refs.entry(root).or_default() += 1;
                stack.push(root);
            }
        }
        let _ = k;
    }
    let mut seen = BTreeSet::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let Some(bytes) = ctx.o.get(T::Nodes, &id.to_be_bytes())? else {
            out.problems
                .push(format!("node {id} is reachable but missing"));
            continue;
        };
        match Node::decode(&bytes) {
            Ok(Node::Inner(children)) => {
                for (_, c) in children {
                    *refs.entry(c).or_default() += 1;
                    stack.push(c);
                }
            }
            Ok(_) => {}
            Err(e) => out.problems.push(format!("node {id}: {e}")),
        }
    }
    for entry in ctx.o.disk(T::Nodes).iter().keys() {
        let k = entry.map_err(io)?;
        out.nodes += 1;
        let id = keys::u64_value(&k).ok_or_else(|| corrupt(T::Nodes, "a key"))?;
        if !seen.contains(&id) {
            out.problems
                .push(format!("node {id} is stored but unreachable"));
        }
    }
    for (id, n) in &refs {
        let stored = match ctx.o.get(T::NodeRc, &id.to_be_bytes())? {
            None => 1,
            Some(v) => <[u8; 4]>::try_from(v.as_slice())
                .map(u32::from_be_bytes)
                .unwrap_or(0),
        };
        if stored != *n {
            out.problems
                .push(format!("node {id}: count {stored}, referenced {n} times"));
        }
        if *n > 1 {
            out.shared += 1;
        }
    }
    for entry in ctx.o.disk(T::NodeRc).iter().keys() {
        let k = entry.map_err(io)?;
        let id = keys::u64_value(&k).ok_or_else(|| corrupt(T::NodeRc, "a key"))?;
        if !refs.contains_key(&id) {
            out.problems
                .push(format!("a count for node {id}, which nothing holds"));
        }
    }
    Ok(out)
}
