//! Signed records for the benchmarks: a charter, chains of patches and the validations that
//! accept them. Everything is deterministic (keys from seeds, fixed timestamps) so two runs with
//! the same sizes measure the same bytes.

use commons_core::record::SIGNATURE_DOMAIN;
use commons_core::{
    BlobHash, Body, Change, Charter, ForkBase, LineageId, Record, RecordId, SecretKey, Validation,
    Verdict,
};

/// Timestamps start here (2025-11-24, milliseconds); record `i` of a history gets `BASE_TS + i`.
pub const BASE_TS: u64 = 1_764_000_000_000;

/// The key with the given number: seed = the number, little-endian, repeated.
pub fn key(n: u64) -> SecretKey {
    let mut seed = [0u8; 32];
    for chunk in seed.chunks_mut(8) {
        chunk.copy_from_slice(&(n.wrapping_add(1)).to_le_bytes());
    }
    SecretKey::from_seed(seed)
}

/// A one-maintainer charter (threshold 1), optionally a fork.
pub fn charter(maintainer: &SecretKey, name: &str, ts: u64, fork: Option<ForkBase>) -> Record {
    let body = Body::Charter(Charter {
        name: name.to_owned(),
        summary: "benchmark commons".to_owned(),
        license: "CC0-1.0".to_owned(),
        maintainers: vec![maintainer.public()],
        threshold: 1,
        fork,
    });
    Record::sign(maintainer, ts, body).expect("a benchmark charter is valid")
}

/// The blob a patch numbered `i` writes (never stored: the store API does not need blobs).
pub fn blob_of(i: u64) -> BlobHash {
    BlobHash::of(format!("content of file {i}\n").as_bytes())
}

fn path_of(i: u64) -> String {
    format!("d{:04}/f{:07}", i / 1000, i)
}

/// Patch `i`: adds the file `d…/f…` (a new path for every `i`) on top of `parent`.
pub fn add_patch(
    author: &SecretKey,
    lineage: LineageId,
    parent: Option<RecordId>,
    i: u64,
    ts: u64,
) -> Record {
    let body = Body::Patch(commons_core::Patch {
        lineage,
        parents: parent.into_iter().collect(),
        changes: vec![Change {
            path: path_of(i),
            before: None,
            after: Some(blob_of(i)),
        }],
        message: format!("add file {i}"),
    });
    Record::sign(author, ts, body).expect("a benchmark patch is valid")
}

/// Patch `i` that only deletes a file (`after: None`), with no parents: a node can store it
/// without fetching any blob or ancestor, which is what the network benchmarks need.
pub fn delete_patch(author: &SecretKey, lineage: LineageId, i: u64, ts: u64) -> Record {
    let body = Body::Patch(commons_core::Patch {
        lineage,
        parents: vec![],
        changes: vec![Change {
            path: path_of(i),
            before: Some(blob_of(i)),
            after: None,
        }],
        message: format!("remove file {i}"),
    });
    Record::sign(author, ts, body).expect("a benchmark patch is valid")
}

/// An Accept validation of `patch` in `lineage`.
pub fn accept(maintainer: &SecretKey, lineage: LineageId, patch: RecordId, ts: u64) -> Record {
    let body = Body::Validation(Validation {
        lineage,
        patch,
        verdict: Verdict::Accept,
        note: "ok".to_owned(),
    });
    Record::sign(maintainer, ts, body).expect("a benchmark validation is valid")
}

/// A linear history: `patches` chained patches (each the child of the previous, each adding
/// one file), each followed by the maintainer's Accept. `records[2k]` is patch k,
/// `records[2k+1]` its validation. The charter is not included.
#[derive(Debug)]
pub struct History {
    /// The maintainer (also the author of the patches).
    pub key: SecretKey,
    /// The founding charter.
    pub charter: Record,
    /// Patches and validations, interleaved.
    pub records: Vec<Record>,
}

impl History {
    /// The lineage.
    pub fn lineage(&self) -> LineageId {
        LineageId::from(self.charter.id())
    }

    /// The last patch, if any.
    pub fn head(&self) -> Option<RecordId> {
        self.records
            .iter()
            .rev()
            .find(|r| r.as_patch().is_some())
            .map(Record::id)
    }
}

/// Builds a linear history of `patches` accepted patches.
pub fn linear_history(key_no: u64, patches: usize, progress: &dyn Fn(usize)) -> History {
    let key = key(key_no);
    let charter = charter(&key, "bench", BASE_TS, None);
    let lineage = LineageId::from(charter.id());
    let mut records = Vec::with_capacity(patches * 2);
    let mut parent = None;
    for i in 0..patches as u64 {
        let p = add_patch(&key, lineage, parent, i, BASE_TS + 1 + 2 * i);
        let v = accept(&key, lineage, p.id(), BASE_TS + 2 + 2 * i);
        parent = Some(p.id());
        records.push(p);
        records.push(v);
        if (i + 1) % 20_000 == 0 {
            progress(i as usize + 1);
        }
    }
    History {
        key,
        charter,
        records,
    }
}

/// Flat records for the network: `n` records, alternately a delete-only patch without parents
/// and the Accept of that patch (so half patches, half validations). Returns the charter too.
pub fn flat_records(key_no: u64, name: &str, n: usize, first: u64) -> (Record, Vec<Record>) {
    let key = key(key_no);
    let charter = charter(&key, name, BASE_TS, None);
    let lineage = LineageId::from(charter.id());
    let mut out = Vec::with_capacity(n);
    let mut i = first;
    while out.len() < n {
        let p = delete_patch(&key, lineage, i, BASE_TS + 1 + 2 * i);
        let pid = p.id();
        out.push(p);
        if out.len() < n {
            out.push(accept(&key, lineage, pid, BASE_TS + 2 + 2 * i));
        }
        i += 1;
    }
    (charter, out)
}

/// What the raw ed25519 reference verifies for one record: its author's key (decompressed
/// beforehand), the signed message `SIGNATURE_DOMAIN ‖ id`, and the signature.
#[derive(Debug)]
pub struct RawSig {
    key: ed25519_dalek::VerifyingKey,
    message: Vec<u8>,
    signature: ed25519_dalek::Signature,
}

/// The signatures of `records`, for [`verify_all`].
pub fn raw_signatures(records: &[Record]) -> Vec<RawSig> {
    records
        .iter()
        .map(|r| {
            let bytes = r.bytes();
            let mut sig = [0u8; 64];
            sig.copy_from_slice(&bytes[bytes.len() - 64..]);
            let mut message = SIGNATURE_DOMAIN.to_vec();
            message.extend_from_slice(r.id().as_bytes());
            RawSig {
                key: ed25519_dalek::VerifyingKey::from_bytes(r.author().as_bytes())
                    .expect("a decoded record's author is a valid key"),
                message,
                signature: ed25519_dalek::Signature::from_bytes(&sig),
            }
        })
        .collect()
}

/// The reference: `verify_strict` over every signature, one by one, on this thread. Returns
/// how many verified (all of them, for records that decoded).
pub fn verify_all(sigs: &[RawSig]) -> usize {
    sigs.iter()
        .filter(|s| s.key.verify_strict(&s.message, &s.signature).is_ok())
        .count()
}
