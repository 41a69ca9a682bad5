//! Shared trees: copy-on-write B+trees of u64-addressed nodes with reference counts, so that a
//! lineage's state (its files, its log, its accumulator) is a few root ids and a fork shares
//! its parent's nodes instead of copying them.
//!
//! - A **root** is a node id; 0 is the empty tree. Sharing a root (a fork) adds 1 to its count.
//! - A **write** walks from the root to a leaf. A node whose count is above 1 is shared: it is
//!   copied first (the copy's children each gain a reference, the original loses one), so the
//!   walk only ever edits nodes that one parent alone reaches. A node reached alone is edited in
//!   place. The first write after a fork copies one path (O(depth × fanout) count updates);
//!   later writes in the same lineage touch one leaf.
//! - A node whose count reaches 0 is deleted, and its children lose a reference.
//! - Counts live in `node_rc` only while above 1 (absent means 1).
//!
//! The shape of a tree depends on its history; nothing hashes it. What is published (the state
//! root) is the LtHash of the contents, which is history-independent (docs/storage.md).
//!
//! [`Nodes`] is one batch's working set: nodes read or changed, counts, the next id. The batch
//! reads through it (pending changes first, then the [`NodeSource`], sled), and
//! [`Nodes::finish`] hands back what to write in the batch's transaction.

mod node;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

pub use node::Node;

use crate::StoreError;
use crate::keys::T;
use crate::state::corrupt;

/// A node above this many encoded bytes is split (if it has two entries or more).
pub const NODE_BYTES: usize = 2048;
/// Bulk-built nodes are filled to about this many bytes, leaving room for later inserts.
const BUILD_FILL: usize = NODE_BYTES * 3 / 4;
/// Deeper than this is a damaged store (a cycle, say): at 2 KiB nodes a tree this deep would
/// hold more entries than any store.
const MAX_DEPTH: usize = 40;

/// Where nodes, counts and the id counter live between batches.
pub trait NodeSource {
    /// The stored bytes of node `id`.
    fn node_bytes(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// The stored count of node `id` (absent: 1).
    fn rc_bytes(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// The stored next id (absent: 1).
    fn next_id_bytes(&self) -> Result<Option<Vec<u8>>, StoreError>;
}

/// What a batch writes: nodes (`None`: deleted), counts (`None`: back to 1, or deleted), the
/// next id if ids were allocated.
#[derive(Debug, Default)]
pub struct Writes {
    /// Node id → its bytes, or `None` to delete.
    pub nodes: Vec<(u64, Option<Vec<u8>>)>,
    /// Node id → its count when above 1, or `None` to remove the entry.
    pub rcs: Vec<(u64, Option<u32>)>,
    /// The id counter, if it moved.
    pub next_id: Option<u64>,
}

/// Nodes read (not changed) kept decoded for the rest of a batch: the upper levels of a tree
/// are read once per record otherwise, and decoding them was a fifth of a batch's time.
const MAX_READ_CACHE: usize = 4096;

/// A node as read: one the batch changed (borrowed from its working set), or one read from the
/// store (decoded once per batch and shared).
pub(crate) enum NodeRef<'s> {
    Borrowed(&'s Node),
    Shared(Arc<Node>),
}

impl std::ops::Deref for NodeRef<'_> {
    type Target = Node;
    fn deref(&self) -> &Node {
        match self {
            NodeRef::Borrowed(n) => n,
            NodeRef::Shared(n) => n,
        }
    }
}

impl AsRef<Node> for NodeRef<'_> {
    fn as_ref(&self) -> &Node {
        self
    }
}

impl NodeRef<'_> {
    fn into_owned(self) -> Node {
        match self {
            NodeRef::Borrowed(n) => n.clone(),
            NodeRef::Shared(n) => Arc::try_unwrap(n).unwrap_or_else(|n| (*n).clone()),
        }
    }
}

/// One batch's working set of nodes and counts.
#[derive(Debug, Default)]
pub struct Nodes {
    cache: HashMap<u64, Node>,
    /// Nodes read from the store and not changed, decoded (never consulted for an id in
    /// `cache` or `deleted`: those are checked first). The store does not change under a batch.
    read: RefCell<HashMap<u64, Arc<Node>>>,
    dirty: BTreeSet<u64>,
    deleted: BTreeSet<u64>,
    rcs: HashMap<u64, u32>,
    rc_dirty: BTreeSet<u64>,
    next: Option<u64>,
    next_moved: bool,
}

type Entry = (Vec<u8>, Vec<u8>);
type Split = Option<(Vec<u8>, u64)>;

fn bad(id: u64, what: impl std::fmt::Display) -> StoreError {
    corrupt(T::Nodes, format!("node {id}: {what}"))
}

/// The child of an inner node whose range holds `key`.
fn child_index(children: &[(Vec<u8>, u64)], key: &[u8]) -> usize {
    children
        .partition_point(|(k, _)| k.as_slice() <= key)
        .saturating_sub(1)
}

impl Nodes {
    /// An empty working set.
    pub fn new() -> Self {
        Self::default()
    }

    fn node<'s>(&'s self, src: &dyn NodeSource, id: u64) -> Result<NodeRef<'s>, StoreError> {
        if self.deleted.contains(&id) {
            return Err(bad(id, "used after it was freed"));
        }
        if let Some(n) = self.cache.get(&id) {
            return Ok(NodeRef::Borrowed(n));
        }
        if let Some(n) = self.read.borrow().get(&id) {
            return Ok(NodeRef::Shared(n.clone()));
        }
        let bytes = src.node_bytes(id)?.ok_or_else(|| bad(id, "missing"))?;
        let node = Arc::new(Node::decode(&bytes).map_err(|e| bad(id, e))?);
        let mut read = self.read.borrow_mut();
        if read.len() < MAX_READ_CACHE {
            read.insert(id, node.clone());
        }
        Ok(NodeRef::Shared(node))
    }

    fn node_mut(&mut self, src: &dyn NodeSource, id: u64) -> Result<&mut Node, StoreError> {
        if !self.cache.contains_key(&id) {
            let n = self.node(src, id)?.into_owned();
            self.cache.insert(id, n);
        }
        self.dirty.insert(id);
        self.cache.get_mut(&id).ok_or_else(|| bad(id, "vanished"))
    }

    fn rc(&self, src: &dyn NodeSource, id: u64) -> Result<u32, StoreError> {
        if let Some(rc) = self.rcs.get(&id) {
            return Ok(*rc);
        }
        match src.rc_bytes(id)? {
            None => Ok(1),
            Some(v) => match <[u8; 4]>::try_from(v.as_slice()) {
                Ok(b) if u32::from_be_bytes(b) > 1 => Ok(u32::from_be_bytes(b)),
                _ => Err(corrupt(T::NodeRc, format!("count of node {id}"))),
            },
        }
    }

    fn set_rc(&mut self, id: u64, rc: u32) {
        self.rcs.insert(id, rc);
        self.rc_dirty.insert(id);
    }

    fn alloc(&mut self, src: &dyn NodeSource) -> Result<u64, StoreError> {
        let next = match self.next {
            Some(n) => n,
            None => match src.next_id_bytes()? {
                None => 1,
                Some(v) => crate::keys::u64_value(&v)
                    .filter(|n| *n > 0)
                    .ok_or_else(|| corrupt(T::Meta, "next node id"))?,
            },
        };
        let after = next
            .checked_add(1)
            .ok_or_else(|| corrupt(T::Meta, "node ids exhausted"))?;
        self.next = Some(after);
        self.next_moved = true;
        Ok(next)
    }

    fn put_new(&mut self, src: &dyn NodeSource, node: Node) -> Result<u64, StoreError> {
        let id = self.alloc(src)?;
        self.cache.insert(id, node);
        self.dirty.insert(id);
        self.rcs.insert(id, 1);
        Ok(id)
    }

    fn delete(&mut self, id: u64) {
        self.cache.remove(&id);
        self.dirty.remove(&id);
        self.deleted.insert(id);
        self.rcs.remove(&id);
        self.rc_dirty.insert(id);
    }

    fn incr(&mut self, src: &dyn NodeSource, id: u64) -> Result<(), StoreError> {
        let rc = self.rc(src, id)?;
        let rc = rc
            .checked_add(1)
            .ok_or_else(|| corrupt(T::NodeRc, format!("count of node {id} overflows")))?;
        self.set_rc(id, rc);
        Ok(())
    }

    /// An id that this lineage alone reaches, holding node `id`'s contents: `id` itself if its
    /// count is 1, else a copy (the copy's children gain a reference, `id` loses one).
    fn own(&mut self, src: &dyn NodeSource, id: u64) -> Result<u64, StoreError> {
        let rc = self.rc(src, id)?;
        if rc <= 1 {
            return Ok(id);
        }
        let node = self.node(src, id)?.into_owned();
        if let Node::Inner(children) = &node {
            for (_, c) in children {
                self.incr(src, *c)?;
            }
        }
        self.set_rc(id, rc - 1);
        self.put_new(src, node)
    }

    /// One more lineage holds `root` (a fork). Nothing is copied.
    pub fn share(&mut self, src: &dyn NodeSource, root: u64) -> Result<(), StoreError> {
        if root != 0 {
            self.incr(src, root)?;
        }
        Ok(())
    }

    /// A lineage drops `root`: nodes no other root reaches are deleted.
    pub fn release(&mut self, src: &dyn NodeSource, root: u64) -> Result<(), StoreError> {
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            if id == 0 {
                continue;
            }
            let rc = self.rc(src, id)?;
            if rc > 1 {
                self.set_rc(id, rc - 1);
                continue;
            }
            if let Node::Inner(children) = self.node(src, id)?.as_ref() {
                stack.extend(children.iter().map(|(_, c)| *c));
            }
            self.delete(id);
        }
        Ok(())
    }

    /// The value at `key` in the tree at `root`.
    pub fn get(
        &self,
        src: &dyn NodeSource,
        root: u64,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut id = root;
        for _ in 0..MAX_DEPTH {
            if id == 0 {
                return Ok(None);
            }
            match self.node(src, id)?.as_ref() {
                Node::Leaf(e) => {
                    return Ok(e
                        .binary_search_by(|(k, _)| k.as_slice().cmp(key))
                        .ok()
                        .map(|i| e[i].1.clone()));
                }
                Node::Inner(ch) => id = ch[child_index(ch, key)].1,
                Node::Blob(_) => return Err(bad(id, "a blob inside a tree")),
            }
        }
        Err(bad(root, "tree too deep"))
    }

    /// Up to `limit` entries at or after `start`, in order, while `within` holds for their key.
    pub fn scan(
        &self,
        src: &dyn NodeSource,
        root: u64,
        start: &[u8],
        within: &dyn Fn(&[u8]) -> bool,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        if root != 0 && limit > 0 {
            self.scan_rec(src, root, start, within, limit, &mut out, 0)?;
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn scan_rec(
        &self,
        src: &dyn NodeSource,
        id: u64,
        start: &[u8],
        within: &dyn Fn(&[u8]) -> bool,
        limit: usize,
        out: &mut Vec<Entry>,
        depth: usize,
    ) -> Result<bool, StoreError> {
        if depth >= MAX_DEPTH {
            return Err(bad(id, "tree too deep"));
        }
        match self.node(src, id)?.as_ref() {
            Node::Leaf(e) => {
                let from = e.partition_point(|(k, _)| k.as_slice() < start);
                for (k, v) in &e[from..] {
                    if !within(k) {
                        return Ok(true);
                    }
                    out.push((k.clone(), v.clone()));
                    if out.len() >= limit {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Node::Inner(ch) => {
                for (_, c) in &ch[child_index(ch, start)..] {
                    if self.scan_rec(src, *c, start, within, limit, out, depth + 1)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Node::Blob(_) => Err(bad(id, "a blob inside a tree")),
        }
    }

    /// For a write walking down: the index and id of the child of node `id` whose range holds
    /// `key`, or `None` if `id` is a leaf.
    fn child_for(
        &self,
        src: &dyn NodeSource,
        id: u64,
        key: &[u8],
        depth: usize,
    ) -> Result<Option<(usize, u64)>, StoreError> {
        if depth >= MAX_DEPTH {
            return Err(bad(id, "tree too deep"));
        }
        match self.node(src, id)?.as_ref() {
            Node::Inner(ch) => {
                let i = child_index(ch, key);
                Ok(Some((i, ch[i].1)))
            }
            Node::Leaf(_) => Ok(None),
            Node::Blob(_) => Err(bad(id, "a blob inside a tree")),
        }
    }

    /// Sets `key` to `value` in the tree at `root` (which may change). Returns the old value.
    pub fn insert(
        &mut self,
        src: &dyn NodeSource,
        root: &mut u64,
        key: &[u8],
        value: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        if *root == 0 {
            *root = self.put_new(src, Node::Leaf(vec![(key.to_vec(), value)]))?;
            return Ok(None);
        }
        *root = self.own(src, *root)?;
        let (old, split) = self.insert_rec(src, *root, key, value, 0)?;
        if let Some((bound, right)) = split {
            *root = self.put_new(src, Node::Inner(vec![(vec![], *root), (bound, right)]))?;
        }
        Ok(old)
    }

    fn insert_rec(
        &mut self,
        src: &dyn NodeSource,
        id: u64,
        key: &[u8],
        value: Vec<u8>,
        depth: usize,
    ) -> Result<(Option<Vec<u8>>, Split), StoreError> {
        let child = self.child_for(src, id, key, depth)?;
        let old = match child {
            None => {
                let Node::Leaf(e) = self.node_mut(src, id)? else {
                    return Err(bad(id, "changed kind"));
                };
                match e.binary_search_by(|(k, _)| k.as_slice().cmp(key)) {
                    Ok(i) => Some(std::mem::replace(&mut e[i].1, value)),
                    Err(i) => {
                        e.insert(i, (key.to_vec(), value));
                        None
                    }
                }
            }
            Some((i, c)) => {
                let owned = self.own(src, c)?;
                let (old, split) = self.insert_rec(src, owned, key, value, depth + 1)?;
                if owned != c || split.is_some() {
                    let Node::Inner(ch) = self.node_mut(src, id)? else {
                        return Err(bad(id, "changed kind"));
                    };
                    ch[i].1 = owned;
                    if let Some(s) = split {
                        ch.insert(i + 1, s);
                    }
                }
                old
            }
        };
        Ok((old, self.split_if_big(src, id)?))
    }

    /// Splits node `id` (which this lineage alone reaches) in two if it is too big: returns the
    /// new right half's lower bound and id.
    fn split_if_big(&mut self, src: &dyn NodeSource, id: u64) -> Result<Split, StoreError> {
        let node = self.node(src, id)?;
        let len = node.encoded_len();
        let sizes: Vec<usize> = match node.as_ref() {
            Node::Leaf(e) => e.iter().map(|(k, v)| 4 + k.len() + v.len()).collect(),
            Node::Inner(ch) => ch.iter().map(|(k, _)| 10 + k.len()).collect(),
            Node::Blob(_) => return Ok(None),
        };
        if (len <= NODE_BYTES && sizes.len() <= node::MAX_ENTRIES) || sizes.len() < 2 {
            return Ok(None);
        }
        let mut acc = 0;
        let mut m = sizes.len() / 2;
        for (i, s) in sizes.iter().enumerate() {
            acc += s;
            if acc * 2 >= len {
                m = i;
                break;
            }
        }
        let m = m.clamp(1, sizes.len() - 1);
        let right = match self.node_mut(src, id)? {
            Node::Leaf(e) => Node::Leaf(e.split_off(m)),
            Node::Inner(ch) => Node::Inner(ch.split_off(m)),
            Node::Blob(_) => return Ok(None),
        };
        let (bound, right) = match right {
            Node::Leaf(e) => (e[0].0.clone(), Node::Leaf(e)),
            Node::Inner(mut ch) => (std::mem::take(&mut ch[0].0), Node::Inner(ch)),
            Node::Blob(_) => return Ok(None),
        };
        Ok(Some((bound, self.put_new(src, right)?)))
    }

    /// Removes `key` from the tree at `root` (which may change). Returns the old value. A key
    /// that is absent changes nothing (no path is copied).
    pub fn remove(
        &mut self,
        src: &dyn NodeSource,
        root: &mut u64,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        if self.get(src, *root, key)?.is_none() {
            return Ok(None);
        }
        *root = self.own(src, *root)?;
        let (old, empty) = self.remove_rec(src, *root, key, 0)?;
        if empty {
            self.delete(*root);
            *root = 0;
            return Ok(old);
        }
        // A root with one child gives way to it (the child is this lineage's alone: the walk
        // went through it).
        while let Node::Inner(ch) = self.node(src, *root)?.as_ref() {
            if ch.len() != 1 {
                break;
            }
            let only = ch[0].1;
            self.delete(*root);
            *root = only;
        }
        Ok(old)
    }

    fn remove_rec(
        &mut self,
        src: &dyn NodeSource,
        id: u64,
        key: &[u8],
        depth: usize,
    ) -> Result<(Option<Vec<u8>>, bool), StoreError> {
        let child = self.child_for(src, id, key, depth)?;
        match child {
            None => {
                let Node::Leaf(e) = self.node_mut(src, id)? else {
                    return Err(bad(id, "changed kind"));
                };
                match e.binary_search_by(|(k, _)| k.as_slice().cmp(key)) {
                    Ok(i) => {
                        let (_, v) = e.remove(i);
                        Ok((Some(v), e.is_empty()))
                    }
                    Err(_) => Ok((None, false)),
                }
            }
            Some((i, c)) => {
                let owned = self.own(src, c)?;
                let (old, child_empty) = self.remove_rec(src, owned, key, depth + 1)?;
                if child_empty {
                    self.delete(owned);
                }
                let Node::Inner(ch) = self.node_mut(src, id)? else {
                    return Err(bad(id, "changed kind"));
                };
                if child_empty {
                    ch.remove(i);
                    if let Some(first) = ch.first_mut() {
                        first.0.clear();
                    }
                } else {
                    ch[i].1 = owned;
                }
                Ok((old, ch.is_empty()))
            }
        }
    }

    /// Builds a tree of `entries` (sorted by key, without duplicates) bottom up, its nodes filled
    /// to about three quarters. Returns its root (0 if there are none).
    pub fn build(
        &mut self,
        src: &dyn NodeSource,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<u64, StoreError> {
        let mut level: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut leaf: Vec<Entry> = Vec::new();
        let mut size = 3;
        let mut last: Option<Vec<u8>> = None;
        for (k, v) in entries {
            if last.as_ref().is_some_and(|l| l.as_slice() >= k.as_slice()) {
                return Err(corrupt(T::Nodes, "bulk build given unsorted keys"));
            }
            last = Some(k.clone());
            let s = 4 + k.len() + v.len();
            if !leaf.is_empty() && (size + s > BUILD_FILL || leaf.len() >= node::MAX_ENTRIES) {
                let first = leaf[0].0.clone();
                level.push((
                    first,
                    self.put_new(src, Node::Leaf(std::mem::take(&mut leaf)))?,
                ));
                size = 3;
            }
            size += s;
            leaf.push((k, v));
        }
        if !leaf.is_empty() {
            let first = leaf[0].0.clone();
            level.push((first, self.put_new(src, Node::Leaf(leaf))?));
        }
        while level.len() > 1 {
            let mut up: Vec<(Vec<u8>, u64)> = Vec::new();
            let mut group: Vec<(Vec<u8>, u64)> = Vec::new();
            let mut size = 3;
            for (k, id) in level {
                let s = 10 + k.len();
                if !group.is_empty() && (size + s > BUILD_FILL || group.len() >= node::MAX_ENTRIES)
                {
                    up.push(self.seal_group(src, &mut group)?);
                    size = 3;
                }
                size += s;
                group.push((k, id));
            }
            up.push(self.seal_group(src, &mut group)?);
            level = up;
        }
        Ok(level.pop().map_or(0, |(_, id)| id))
    }

    fn seal_group(
        &mut self,
        src: &dyn NodeSource,
        group: &mut Vec<(Vec<u8>, u64)>,
    ) -> Result<(Vec<u8>, u64), StoreError> {
        let mut children = std::mem::take(group);
        let first = std::mem::take(&mut children[0].0);
        Ok((first, self.put_new(src, Node::Inner(children))?))
    }

    /// The bytes of the blob node `id` (`None` for 0).
    pub fn blob(&self, src: &dyn NodeSource, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        if id == 0 {
            return Ok(None);
        }
        match self.node(src, id)?.as_ref() {
            Node::Blob(b) => Ok(Some(b.clone())),
            _ => Err(bad(id, "expected a blob")),
        }
    }

    /// Sets the blob held at `id` (which may change): in place if this holder is its only one,
    /// else as a new node (the shared one loses a reference).
    pub fn set_blob(
        &mut self,
        src: &dyn NodeSource,
        id: &mut u64,
        bytes: Vec<u8>,
    ) -> Result<(), StoreError> {
        if *id != 0 && self.rc(src, *id)? <= 1 {
            self.node(src, *id)?; // it must exist
            self.cache.insert(*id, Node::Blob(bytes));
            self.dirty.insert(*id);
            return Ok(());
        }
        if *id != 0 {
            self.release(src, *id)?;
        }
        *id = self.put_new(src, Node::Blob(bytes))?;
        Ok(())
    }

    /// What to write: changed and new nodes, deleted ones, changed counts, the id counter.
    pub fn finish(self) -> Writes {
        let mut w = Writes::default();
        for id in &self.dirty {
            if let Some(n) = self.cache.get(id) {
                w.nodes.push((*id, Some(n.encode())));
            }
        }
        for id in &self.deleted {
            w.nodes.push((*id, None));
        }
        for id in &self.rc_dirty {
            let rc = self.rcs.get(id).copied().filter(|rc| *rc > 1);
            w.rcs.push((*id, rc));
        }
        if self.next_moved {
            w.next_id = self.next;
        }
        w
    }
}
