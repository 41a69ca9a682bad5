//! Building patches from a list of changes, split into a chain when one patch would be over
//! [`MAX_PATCH_BYTES`] or [`MAX_CHANGES`]: each part names the previous one as its parent.

use commons_core::record::{MAX_CHANGES, MAX_PATCH_BYTES};
use commons_core::{Body, Change, LineageId, Patch, Record, RecordId, SecretKey};

use crate::error::Result;

/// Bytes of a patch record that do not depend on its changes: header, author, timestamp,
/// lineage, the length prefixes of parents, changes and message, and the signature.
const FIXED_BYTES: usize = 2 + 32 + 8 + 32 + 8 + 8 + 8 + 64;
/// Room left for encoding details this estimate does not model.
const MARGIN: usize = 1024;

/// Encoded size of one change (fixed-int bincode: a u64 length, the path, two options).
fn change_bytes(c: &Change) -> usize {
    let opt = |h: &Option<commons_core::BlobHash>| if h.is_some() { 33 } else { 1 };
    8 + c.path.len() + opt(&c.before) + opt(&c.after)
}

/// Splits sorted changes into groups that each fit in one patch with `parents` parents and a
/// message of `message_len` bytes.
pub fn split(changes: Vec<Change>, parents: usize, message_len: usize) -> Vec<Vec<Change>> {
    let budget = MAX_PATCH_BYTES.saturating_sub(FIXED_BYTES + MARGIN + 32 * parents + message_len);
    let mut groups: Vec<Vec<Change>> = Vec::new();
    let mut current: Vec<Change> = Vec::new();
    let mut size = 0;
    for c in changes {
        let n = change_bytes(&c);
        if !current.is_empty() && (size + n > budget || current.len() == MAX_CHANGES) {
            groups.push(std::mem::take(&mut current));
            size = 0;
        }
        size += n;
        current.push(c);
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// Signs the changes as one patch, or as a chain of patches when they do not fit in one. The
/// first names `parents`; each later one names the one before. With several parts, the message
/// of each gets a "(part i of n)" suffix.
pub fn sign_chain(
    key: &SecretKey,
    timestamp: u64,
    lineage: LineageId,
    parents: Vec<RecordId>,
    changes: Vec<Change>,
    message: &str,
) -> Result<Vec<Record>> {
    // The suffix is at most this long; leave room for it in every part.
    const SUFFIX_ROOM: usize = 40;
    let groups = split(changes, parents.len().max(1), message.len() + SUFFIX_ROOM);
    let n = groups.len();
    let mut out: Vec<Record> = Vec::with_capacity(n);
    let mut parents = parents;
    for (i, group) in groups.into_iter().enumerate() {
        let message = if n > 1 {
            format!("{message} (part {} of {n})", i + 1)
        } else {
            message.to_owned()
        };
        let patch = Patch {
            lineage,
            parents: std::mem::take(&mut parents),
            changes: group,
            message,
        };
        let record = Record::sign(key, timestamp, Body::Patch(patch))?;
        parents = vec![record.id()];
        out.push(record);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use commons_core::BlobHash;

    #[test]
    fn a_big_import_is_split_into_a_chain_of_valid_patches() {
        let key = SecretKey::from_seed([5; 32]);
        let changes: Vec<Change> = (0u32..5000)
            .map(|i| Change {
                path: format!("dir/with/a/long/name/file-{i:06}.txt"),
                before: None,
                after: Some(BlobHash::of(&i.to_le_bytes())),
            })
            .collect();
        let records = sign_chain(&key, 1, LineageId([1; 32]), vec![], changes, "import").unwrap();
        assert!(records.len() >= 3, "{} parts", records.len());
        let mut total = 0;
        for (i, r) in records.iter().enumerate() {
            assert!(r.bytes().len() <= MAX_PATCH_BYTES);
            let p = r.as_patch().unwrap();
            total += p.changes.len();
            if i == 0 {
                assert!(p.parents.is_empty());
            } else {
                assert_eq!(p.parents, vec![records[i - 1].id()]);
            }
            assert!(
                p.message
                    .ends_with(&format!("(part {} of {})", i + 1, records.len()))
            );
        }
        assert_eq!(total, 5000);
    }

    #[test]
    fn a_small_patch_is_one_record_with_the_message_as_given() {
        let key = SecretKey::from_seed([5; 32]);
        let change = Change {
            path: "a".into(),
            before: None,
            after: Some(BlobHash::of(b"a")),
        };
        let parent = RecordId([9; 32]);
        let r = sign_chain(&key, 1, LineageId([1; 32]), vec![parent], vec![change], "m").unwrap();
        assert_eq!(r.len(), 1);
        let p = r[0].as_patch().unwrap();
        assert_eq!(p.message, "m");
        assert_eq!(p.parents, vec![parent]);
    }
}
