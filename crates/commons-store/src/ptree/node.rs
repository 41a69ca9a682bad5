//! The bytes of one node of a shared tree.
//!
//! ```text
//! leaf   0x01 ‖ count u16 BE ‖ count × (key len u16 BE ‖ key ‖ value len u16 BE ‖ value)
//! inner  0x02 ‖ count u16 BE ‖ count × (key len u16 BE ‖ key ‖ child id u64 BE)
//! blob   0x03 ‖ bytes
//! ```
//!
//! Keys of a node are strictly increasing. In an inner node, entry i's key is a lower bound of
//! every key under child i, and entry 0's key is empty (it bounds nothing). Decoding checks all
//! of it: a node read from disk is never trusted to be well formed.

/// A node: a leaf of entries, an inner node of children, or an opaque blob (an accumulator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// Sorted `(key, value)` entries.
    Leaf(Vec<(Vec<u8>, Vec<u8>)>),
    /// Sorted `(lower bound, child id)` entries; the first bound is empty.
    Inner(Vec<(Vec<u8>, u64)>),
    /// Opaque bytes, shared and copied like a node.
    Blob(Vec<u8>),
}

const LEAF: u8 = 1;
const INNER: u8 = 2;
const BLOB: u8 = 3;

/// Entries at most per node (bounded by the u16 count).
pub const MAX_ENTRIES: usize = u16::MAX as usize;

impl Node {
    /// The encoded length, without encoding.
    pub fn encoded_len(&self) -> usize {
        match self {
            Node::Leaf(e) => 3 + e.iter().map(|(k, v)| 4 + k.len() + v.len()).sum::<usize>(),
            Node::Inner(e) => 3 + e.iter().map(|(k, _)| 10 + k.len()).sum::<usize>(),
            Node::Blob(b) => 1 + b.len(),
        }
    }

    /// The node's bytes (layout in the module's documentation).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        match self {
            Node::Leaf(entries) => {
                out.push(LEAF);
                out.extend_from_slice(&(entries.len() as u16).to_be_bytes());
                for (k, v) in entries {
                    put_bytes(&mut out, k);
                    put_bytes(&mut out, v);
                }
            }
            Node::Inner(children) => {
                out.push(INNER);
                out.extend_from_slice(&(children.len() as u16).to_be_bytes());
                for (k, c) in children {
                    put_bytes(&mut out, k);
                    out.extend_from_slice(&c.to_be_bytes());
                }
            }
            Node::Blob(b) => {
                out.push(BLOB);
                out.extend_from_slice(b);
            }
        }
        out
    }

    /// Reads [`Node::encode`], checking lengths, order and the inner node's first bound.
    pub fn decode(bytes: &[u8]) -> Result<Node, &'static str> {
        let (&kind, rest) = bytes.split_first().ok_or("empty node")?;
        if kind == BLOB {
            return Ok(Node::Blob(rest.to_vec()));
        }
        let mut r = Reader(rest);
        let count = usize::from(r.u16()?);
        let node = match kind {
            LEAF => {
                let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(count.min(4096));
                for _ in 0..count {
                    let k = r.bytes()?;
                    let v = r.bytes()?;
                    if entries.last().is_some_and(|(last, _)| last.as_slice() >= k) {
                        return Err("leaf keys out of order");
                    }
                    entries.push((k.to_vec(), v.to_vec()));
                }
                Node::Leaf(entries)
            }
            INNER => {
                let mut children: Vec<(Vec<u8>, u64)> = Vec::with_capacity(count.min(4096));
                for i in 0..count {
                    let k = r.bytes()?;
                    let c = r.u64()?;
                    if c == 0 {
                        return Err("child id 0");
                    }
                    if i == 0 && !k.is_empty() {
                        return Err("first bound not empty");
                    }
                    if i > 0
                        && children
                            .last()
                            .is_some_and(|(last, _)| last.as_slice() >= k)
                    {
                        return Err("bounds out of order");
                    }
                    children.push((k.to_vec(), c));
                }
                if children.is_empty() {
                    return Err("inner node without children");
                }
                Node::Inner(children)
            }
            _ => return Err("unknown node kind"),
        };
        if !r.0.is_empty() {
            return Err("trailing bytes");
        }
        Ok(node)
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("node cut short");
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, &'static str> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn bytes(&mut self) -> Result<&'a [u8], &'static str> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_round_trip_and_damage_is_refused() {
        let leaf = Node::Leaf(vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), vec![]),
        ]);
        let inner = Node::Inner(vec![(vec![], 7), (b"m".to_vec(), 9)]);
        let blob = Node::Blob(vec![5; 2048]);
        for n in [&leaf, &inner, &blob] {
            let bytes = n.encode();
            assert_eq!(bytes.len(), n.encoded_len());
            assert_eq!(&Node::decode(&bytes).unwrap(), n);
        }
        let bytes = leaf.encode();
        for cut in 0..bytes.len() {
            assert!(Node::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let swapped = Node::Leaf(vec![(b"b".to_vec(), vec![]), (b"a".to_vec(), vec![])]);
        assert!(Node::decode(&swapped.encode()).is_err());
        let bad_first = Node::Inner(vec![(b"x".to_vec(), 7)]);
        assert!(Node::decode(&bad_first.encode()).is_err());
        let zero = Node::Inner(vec![(vec![], 0)]);
        assert!(Node::decode(&zero.encode()).is_err());
        assert!(Node::decode(&[9, 0, 0]).is_err());
    }
}
