//! Chains of patches: changes too many for one patch become several, each naming the one before.
//!
//! Every command that turns a list of file changes into patches (`create --from`, `propose`, and
//! later imports) goes through [`sign_chain`], so the split is done once, here, with the exact
//! encoded size of each part ([`patch_record_len`]) against both limits of a patch: its bytes
//! ([`MAX_PATCH_BYTES`]) and its number of changes ([`MAX_CHANGES`]). Each part is then signed by
//! [`Record::sign`], which reads its own bytes back with the decoder, so no part can be a record
//! other nodes refuse.

use crate::id::{BlobHash, LineageId, RecordId};
use crate::keys::SecretKey;
use crate::record::{Body, Change, MAX_CHANGES, MAX_PATCH_BYTES, Patch, Record, SignError};

/// The limits one part must fit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of the signed record.
    pub max_bytes: usize,
    /// Most changes.
    pub max_changes: usize,
}

/// The limits of a patch record: what every node's decoder enforces.
pub const PATCH_LIMITS: Limits = Limits {
    max_bytes: MAX_PATCH_BYTES,
    max_changes: MAX_CHANGES,
};

/// Bytes of a signed patch record that do not depend on its parents, changes or message: version
/// and kind (2), author (32), timestamp (8), lineage (32), the three list lengths (3 × 8) and the
/// signature (64). Checked against real encodings by the tests below.
const FIXED_BYTES: usize = 2 + 32 + 8 + 32 + 3 * 8 + 64;

/// Encoded size of one change: the path's length (8) and bytes, and each option (a tag, and 32
/// bytes when present).
pub fn change_len(c: &Change) -> usize {
    let opt = |h: &Option<BlobHash>| if h.is_some() { 33 } else { 1 };
    8 + c.path.len() + opt(&c.before) + opt(&c.after)
}

/// The exact length of the signed record of a patch with `parents` parents, these changes and a
/// message of `message_len` bytes.
pub fn patch_record_len<'a>(
    parents: usize,
    changes: impl IntoIterator<Item = &'a Change>,
    message_len: usize,
) -> usize {
    FIXED_BYTES + 32 * parents + changes.into_iter().map(change_len).sum::<usize>() + message_len
}

/// The longest suffix [`sign_chain`] adds to a message: " (part i of n)" with up to 20 digits each.
pub const PART_SUFFIX_MAX: usize = " (part  of )".len() + 2 * 20;

/// Splits sorted changes into consecutive groups, each of which fits in one patch within `limits`:
/// the first with `first_parents` parents, the others with one (the part before), each with a
/// message of at most `message_len` bytes. An empty list gives no group.
///
/// A group is closed when the next change would break either limit. One change always fits,
/// because the limits of a path ([`crate::record::MAX_PATH_BYTES`]), of the parents and of the
/// message leave room for it; should limits be given that do not, the change gets a group of its
/// own and signing it reports the error.
pub fn split(
    changes: Vec<Change>,
    first_parents: usize,
    message_len: usize,
    limits: Limits,
) -> Vec<Vec<Change>> {
    let mut groups: Vec<Vec<Change>> = Vec::new();
    let mut current: Vec<Change> = Vec::new();
    let mut size = patch_record_len(first_parents, [], message_len);
    for c in changes {
        let n = change_len(&c);
        if !current.is_empty()
            && (size + n > limits.max_bytes || current.len() == limits.max_changes)
        {
            groups.push(std::mem::take(&mut current));
            size = patch_record_len(1, [], message_len);
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
/// of each gets a " (part i of n)" suffix.
pub fn sign_chain(
    key: &SecretKey,
    timestamp: u64,
    lineage: LineageId,
    parents: Vec<RecordId>,
    changes: Vec<Change>,
    message: &str,
) -> Result<Vec<Record>, SignError> {
    sign_chain_within(
        key,
        timestamp,
        lineage,
        parents,
        changes,
        message,
        PATCH_LIMITS,
    )
}

/// [`sign_chain`] within other limits (tighter than a patch's: the tests use it to reach the
/// count limit, which real paths cannot reach before the byte limit).
pub fn sign_chain_within(
    key: &SecretKey,
    timestamp: u64,
    lineage: LineageId,
    parents: Vec<RecordId>,
    changes: Vec<Change>,
    message: &str,
    limits: Limits,
) -> Result<Vec<Record>, SignError> {
    let groups = split(
        changes,
        parents.len(),
        message.len() + PART_SUFFIX_MAX,
        limits,
    );
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
    use crate::record::MAX_PARENTS;

    fn change(path: String, i: u32) -> Change {
        Change {
            path,
            before: (i % 3 != 2).then(|| BlobHash::of(format!("old {i}").as_bytes())),
            after: (i % 3 != 1).then(|| BlobHash::of(format!("new {i}").as_bytes())),
        }
    }

    #[test]
    fn the_computed_length_is_the_encoded_length() {
        let key = SecretKey::from_seed([5; 32]);
        for (parents, n, message) in [(0, 1, "m"), (3, 200, "a longer message\n"), (64, 7, "é")] {
            let changes: Vec<Change> = (0..n).map(|i| change(format!("p/{i:05}"), i)).collect();
            let p = Patch {
                lineage: LineageId([1; 32]),
                parents: (0..parents).map(|i| RecordId([i as u8; 32])).collect(),
                changes: changes.clone(),
                message: message.into(),
            };
            let r = Record::sign(&key, 1, Body::Patch(p)).unwrap();
            assert_eq!(
                r.bytes().len(),
                patch_record_len(parents, &changes, message.len())
            );
        }
    }

    #[test]
    fn parts_fill_the_byte_limit_and_every_part_decodes() {
        let key = SecretKey::from_seed([5; 32]);
        // Short paths: the most changes per byte; thousands of them, as a real tree has.
        let changes: Vec<Change> = (0u32..9000)
            .map(|i| change(format!("{i:04x}"), i))
            .collect();
        let records = sign_chain(&key, 1, LineageId([1; 32]), vec![], changes, "import").unwrap();
        assert!(records.len() >= 3, "{} parts", records.len());
        let mut total = 0;
        for (i, r) in records.iter().enumerate() {
            let back = Record::decode(r.bytes()).unwrap();
            assert_eq!(&back, r);
            let p = r.as_patch().unwrap();
            total += p.changes.len();
            if i + 1 < records.len() {
                // A full part: the next change would not have fit.
                assert!(
                    r.bytes().len() + 8 + 4 + 66 + PART_SUFFIX_MAX > MAX_PATCH_BYTES,
                    "part {i} is not full"
                );
            }
            assert!(r.bytes().len() <= MAX_PATCH_BYTES);
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
        assert_eq!(total, 9000);
    }

    #[test]
    fn parts_respect_the_count_limit() {
        let key = SecretKey::from_seed([5; 32]);
        let limits = Limits {
            max_bytes: MAX_PATCH_BYTES,
            max_changes: 100,
        };
        let changes: Vec<Change> = (0u32..250).map(|i| change(format!("f{i:03}"), i)).collect();
        let records = sign_chain_within(
            &key,
            1,
            LineageId([1; 32]),
            vec![RecordId([7; 32])],
            changes,
            "m",
            limits,
        )
        .unwrap();
        let counts: Vec<usize> = records
            .iter()
            .map(|r| r.as_patch().unwrap().changes.len())
            .collect();
        assert_eq!(counts, vec![100, 100, 50]);
        assert_eq!(
            records[0].as_patch().unwrap().parents,
            vec![RecordId([7; 32])]
        );
    }

    #[test]
    fn the_longest_paths_and_most_parents_still_fit_one_change_per_part_at_least() {
        let key = SecretKey::from_seed([5; 32]);
        let long = |i: u32| format!("{}/{i:04}", "d".repeat(crate::record::MAX_PATH_BYTES - 5));
        let changes: Vec<Change> = (0u32..300).map(|i| change(long(i), i)).collect();
        let parents: Vec<RecordId> = (0..MAX_PARENTS).map(|i| RecordId([i as u8; 32])).collect();
        let message = "ü".repeat(MAX_PATCH_BYTES / 4 - PART_SUFFIX_MAX);
        let records = sign_chain(&key, 1, LineageId([1; 32]), parents, changes, &message).unwrap();
        assert!(records.len() > 1);
        for r in &records {
            Record::decode(r.bytes()).unwrap();
        }
    }
}
