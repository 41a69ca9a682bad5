//! Key and value layouts of every sled tree (written down in `docs/storage.md`).
//!
//! Keys are fixed-width concatenations: 32-byte ids first, then big-endian integers, so that
//! sled's byte order is the order we want and every "all X of lineage L" question is a prefix
//! scan. Values are small fixed layouts decoded with explicit length checks: nothing read from
//! disk is trusted to have the right size.

use std::collections::BTreeMap;

use commons_core::state::PatchStatus;
use commons_core::tree::Outcome;
use commons_core::{BlobHash, LineageId, PublicKey, RecordId, StateRoot, Verdict};

/// The schema this build reads and writes. Bump it (and add a migration) whenever a layout below
/// changes.
pub const SCHEMA_VERSION: u32 = 2;

/// Trees of schema 1 that schema 2 replaced (by `nodes`, `node_rc`, `heads`, `excluded`): dropped
/// once a migration has re-indexed the store.
pub const V1_TREES: [&str; 4] = ["files", "log", "accumulators", "fork_base"];

/// Key in the `meta` tree of the next node id of the shared trees (u64 BE; absent: 1).
pub const META_NEXT_NODE_KEY: &[u8] = b"next_node";

/// The key of the schema version in the `meta` tree.
pub const META_SCHEMA_KEY: &[u8] = b"schema_version";

/// Key in the `meta` tree of the number of stored records (u64 big-endian), kept in the same
/// transaction as the records so that counting them never needs a scan.
pub const META_RECORD_COUNT_KEY: &[u8] = b"record_count";

/// Key in the `meta` tree present while a re-index runs (see `repair.rs`): one byte, the phase
/// ([`REINDEX_MOVING`] or [`REINDEX_INGESTING`]), so that a re-index killed midway resumes at open.
pub const META_REINDEX_KEY: &[u8] = b"reindex";
/// Re-index phase: records are being moved from `records` to `reindex`.
pub const REINDEX_MOVING: u8 = 1;
/// Re-index phase: derived trees are cleared, records are being ingested again from `reindex`.
pub const REINDEX_INGESTING: u8 = 2;

/// One sled tree per kind of data, never one per lineage (sled grows badly with many trees).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum T {
    /// `"schema_version"` → u32 BE.
    Meta,
    /// record id → canonical record bytes.
    Records,
    /// lineage ‖ record id → kind byte: the charter, patches proposed to it, validations naming it.
    LineageRecords,
    /// family ‖ lineage → (): the lineages of a family whose chain of charters is complete.
    Family,
    /// parent lineage ‖ fork lineage → ().
    Forks,
    /// parent patch ‖ child patch → () (whether or not the parent is present).
    Children,
    /// target patch ‖ lineage ‖ validation id → author ‖ timestamp BE ‖ verdict.
    Validations,
    /// patch id → generation (u64 BE), present exactly for complete patches.
    Generations,
    /// lineage ‖ patch → status byte, for the patches listed in the lineage as pending or
    /// rejected (the "vote part", never shared; accepted and conflicted patches are the log's).
    Status,
    /// lineage ‖ status byte ‖ patch → (): the index of [`T::Status`].
    ByStatus,
    /// lineage → summary ([`LineageMeta`]), with the roots of the lineage's shared trees.
    Lineages,
    /// lineage ‖ patch → (): the heads of the lineage's accepted set (its fork point).
    Heads,
    /// lineage ‖ patch → (): ancestors of accepted patches that are not accepted (the rest of
    /// its fork point).
    Excluded,
    /// node id BE → node ([`crate::ptree::Node`]): the shared trees of every lineage.
    Nodes,
    /// node id BE → count u32 BE, for nodes that more than one parent or lineage holds.
    NodeRc,
    /// missing patch ‖ fork lineage → (): a fork whose base waits for that patch.
    BaseWaits,
    /// record id → reason length (u16 BE) ‖ reason (UTF-8) ‖ the bytes: stored records that no
    /// longer decode, set aside (never read as records again).
    Damaged,
    /// kind byte ‖ record id → record bytes: records waiting to be ingested again by a re-index.
    Reindex,
    /// target patch ‖ lineage ‖ validation id → author ‖ timestamp BE ‖ verdict: validations by
    /// authors who do not maintain the lineage they name, kept apart from `validations` so that
    /// they are shown but never read to compute a status (a flood of them costs O(1) each).
    Opinions,
    /// blob hash → lineage id: blobs that stored patches create and that were not here when the
    /// patches were stored, kept for the node's downloader (see `wanted.rs`).
    Wanted,
}

impl T {
    /// Every tree, in a fixed order (its index is `self as usize`).
    pub const ALL: [T; 20] = [
        T::Meta,
        T::Records,
        T::LineageRecords,
        T::Family,
        T::Forks,
        T::Children,
        T::Validations,
        T::Generations,
        T::Status,
        T::ByStatus,
        T::Lineages,
        T::Heads,
        T::Excluded,
        T::Nodes,
        T::NodeRc,
        T::BaseWaits,
        T::Damaged,
        T::Reindex,
        T::Opinions,
        T::Wanted,
    ];

    /// Whether the tree is computed from the records (everything but `meta`, `records`, the
    /// trees of the re-index and the node's list of wanted blobs): what a re-index clears and
    /// writes again.
    pub fn is_derived(self) -> bool {
        !matches!(
            self,
            T::Meta | T::Records | T::Damaged | T::Reindex | T::Wanted
        )
    }

    /// The sled tree's name.
    pub fn name(self) -> &'static str {
        match self {
            T::Meta => "meta",
            T::Records => "records",
            T::LineageRecords => "lineage_records",
            T::Family => "family",
            T::Forks => "forks",
            T::Children => "children",
            T::Validations => "validations",
            T::Generations => "generations",
            T::Status => "status",
            T::ByStatus => "by_status",
            T::Lineages => "lineages",
            T::Heads => "heads",
            T::Excluded => "excluded",
            T::Nodes => "nodes",
            T::NodeRc => "node_rc",
            T::BaseWaits => "base_waits",
            T::Damaged => "damaged",
            T::Reindex => "reindex",
            T::Opinions => "opinions",
            T::Wanted => "wanted_blobs",
        }
    }
}

/// Set in the kind byte of a `lineage_records` value that lists a patch's parents.
const WITH_PARENTS: u8 = 0x80;

/// A `lineage_records` value: the kind byte; for a patch, the kind byte with [`WITH_PARENTS`]
/// set, then its parents (32 bytes each), so that a family's ids are listed from the index
/// without decoding its records. Stores written before the parents were kept hold the plain
/// kind byte for patches too.
pub fn lineage_record_value(kind: commons_core::Kind, parents: &[RecordId]) -> Vec<u8> {
    if kind != commons_core::Kind::Patch {
        return vec![kind as u8];
    }
    let mut v = Vec::with_capacity(1 + 32 * parents.len());
    v.push(kind as u8 | WITH_PARENTS);
    for p in parents {
        v.extend_from_slice(p.as_bytes());
    }
    v
}

/// The kind byte of a `lineage_records` value.
pub fn lineage_record_kind(v: &[u8]) -> Option<u8> {
    v.first().map(|k| k & !WITH_PARENTS)
}

/// The parents a `lineage_records` value holds: `None` for a patch indexed without them (by an
/// earlier build) or a value of the wrong length, else the list (empty for charters and
/// validations).
pub fn lineage_record_parents(v: &[u8]) -> Option<Vec<RecordId>> {
    match v {
        [kind] if *kind == commons_core::Kind::Patch as u8 => None,
        [_] => Some(Vec::new()),
        [kind, rest @ ..] if kind & WITH_PARENTS != 0 && rest.len() % 32 == 0 => Some(
            rest.chunks_exact(32)
                .map(|c| RecordId(c.try_into().unwrap_or([0; 32])))
                .collect(),
        ),
        _ => None,
    }
}

/// Two 32-byte ids, concatenated.
pub fn pair(a: &[u8; 32], b: &[u8; 32]) -> Vec<u8> {
    let mut k = Vec::with_capacity(64);
    k.extend_from_slice(a);
    k.extend_from_slice(b);
    k
}

/// Reads a 32-byte id at `at` in `key`.
pub fn id_at(key: &[u8], at: usize) -> Option<[u8; 32]> {
    key.get(at..at + 32)?.try_into().ok()
}

/// `generation BE ‖ patch`: a key of a lineage's log (a shared tree).
pub fn log_key(key: &(u64, RecordId)) -> Vec<u8> {
    let mut k = Vec::with_capacity(40);
    k.extend_from_slice(&key.0.to_be_bytes());
    k.extend_from_slice(key.1.as_bytes());
    k
}

/// Reads a key made by [`log_key`].
pub fn parse_log_key(k: &[u8]) -> Option<(u64, RecordId)> {
    if k.len() != 40 {
        return None;
    }
    let generation = u64::from_be_bytes(k[..8].try_into().ok()?);
    Some((generation, RecordId(id_at(k, 8)?)))
}

/// `lineage ‖ status ‖ patch`: a key of the status index.
pub fn by_status_key(lineage: &LineageId, status: PatchStatus, patch: &RecordId) -> Vec<u8> {
    let mut k = Vec::with_capacity(65);
    k.extend_from_slice(lineage.as_bytes());
    k.push(status_byte(status));
    k.extend_from_slice(patch.as_bytes());
    k
}

/// `patch ‖ lineage ‖ validation`: a key of the validation index.
pub fn validation_key(patch: &RecordId, lineage: &LineageId, id: &RecordId) -> Vec<u8> {
    let mut k = Vec::with_capacity(96);
    k.extend_from_slice(patch.as_bytes());
    k.extend_from_slice(lineage.as_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

/// One status as a byte.
pub fn status_byte(s: PatchStatus) -> u8 {
    match s {
        PatchStatus::Pending => 0,
        PatchStatus::Accepted => 1,
        PatchStatus::Rejected => 2,
        PatchStatus::Conflicted => 3,
    }
}

/// Reads [`status_byte`].
pub fn status_from_byte(b: u8) -> Option<PatchStatus> {
    match b {
        0 => Some(PatchStatus::Pending),
        1 => Some(PatchStatus::Accepted),
        2 => Some(PatchStatus::Rejected),
        3 => Some(PatchStatus::Conflicted),
        _ => None,
    }
}

/// Every status, in byte order.
pub const STATUSES: [PatchStatus; 4] = [
    PatchStatus::Pending,
    PatchStatus::Accepted,
    PatchStatus::Rejected,
    PatchStatus::Conflicted,
];

/// The value of the validation index: who voted, when, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoteValue {
    /// The signer.
    pub author: PublicKey,
    /// The signer's timestamp.
    pub timestamp: u64,
    /// The verdict.
    pub verdict: Verdict,
}

impl VoteValue {
    /// `author (32) ‖ timestamp BE (8) ‖ verdict (1: accept, 2: reject)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(41);
        v.extend_from_slice(self.author.as_bytes());
        v.extend_from_slice(&self.timestamp.to_be_bytes());
        v.push(match self.verdict {
            Verdict::Accept => 1,
            Verdict::Reject => 2,
        });
        v
    }

    /// Reads [`VoteValue::encode`].
    pub fn decode(v: &[u8]) -> Option<Self> {
        if v.len() != 41 {
            return None;
        }
        let author = PublicKey::from_bytes(id_at(v, 0)?).ok()?;
        let timestamp = u64::from_be_bytes(v[32..40].try_into().ok()?);
        let verdict = match v[40] {
            1 => Verdict::Accept,
            2 => Verdict::Reject,
            _ => return None,
        };
        Some(Self {
            author,
            timestamp,
            verdict,
        })
    }
}

/// The stored summary of a lineage (value of the `lineages` tree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineageMeta {
    /// The charter's timestamp.
    pub created: u64,
    /// The family, once every charter up the chain is present.
    pub family: Option<LineageId>,
    /// False while a fork base names patches that are not present.
    pub base_complete: bool,
    /// Files in the canonical tree.
    pub files: u64,
    /// Listed patches per status, indexed by [`status_byte`].
    pub counts: [u64; 4],
    /// The state root.
    pub root: StateRoot,
    /// Root of the shared tree of files: path → blob hash (0: empty).
    pub files_root: u64,
    /// Root of the shared log: generation BE ‖ patch → outcome byte (0: empty).
    pub log_root: u64,
    /// Root of the fork base, as a log (the log the fork started from; 0: not a fork, or no base).
    pub base_root: u64,
    /// The blob node holding the tree's accumulator (0: the empty tree's).
    pub acc: u64,
}

/// Length of an encoded [`LineageMeta`].
const META_LEN: usize = 1 + 8 + 1 + 32 + 1 + 8 + 32 + 32 + 32;
const META_VERSION: u8 = 2;

impl LineageMeta {
    /// A lineage whose charter just arrived: empty state.
    pub fn new(created: u64) -> Self {
        Self {
            created,
            family: None,
            base_complete: true,
            files: 0,
            counts: [0; 4],
            root: commons_core::tree::Accumulator::default().root(),
            files_root: 0,
            log_root: 0,
            base_root: 0,
            acc: 0,
        }
    }

    /// `version (1) ‖ created BE (8) ‖ has family (1) ‖ family (32) ‖ base complete (1) ‖
    /// files BE (8) ‖ 4 × count BE (32) ‖ root (32) ‖ files root ‖ log root ‖ base root ‖
    /// accumulator node (4 × u64 BE)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(META_LEN);
        v.push(META_VERSION);
        v.extend_from_slice(&self.created.to_be_bytes());
        v.push(u8::from(self.family.is_some()));
        v.extend_from_slice(self.family.map(|f| f.0).unwrap_or([0; 32]).as_slice());
        v.push(u8::from(self.base_complete));
        v.extend_from_slice(&self.files.to_be_bytes());
        for c in self.counts {
            v.extend_from_slice(&c.to_be_bytes());
        }
        v.extend_from_slice(self.root.as_bytes());
        for id in [self.files_root, self.log_root, self.base_root, self.acc] {
            v.extend_from_slice(&id.to_be_bytes());
        }
        v
    }

    /// Reads [`LineageMeta::encode`].
    pub fn decode(v: &[u8]) -> Option<Self> {
        if v.len() != META_LEN || v[0] != META_VERSION {
            return None;
        }
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_be_bytes(v.get(at..at + 8)?.try_into().ok()?))
        };
        let bool_at = |at: usize| match v[at] {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        };
        let family = bool_at(9)?.then(|| id_at(v, 10).map(LineageId));
        let family = match family {
            None => None,
            Some(f) => Some(f?),
        };
        let mut counts = [0u64; 4];
        for (i, c) in counts.iter_mut().enumerate() {
            *c = u64_at(51 + 8 * i)?;
        }
        Some(Self {
            created: u64_at(1)?,
            family,
            base_complete: bool_at(42)?,
            files: u64_at(43)?,
            counts,
            root: StateRoot(id_at(v, 83)?),
            files_root: u64_at(115)?,
            log_root: u64_at(123)?,
            base_root: u64_at(131)?,
            acc: u64_at(139)?,
        })
    }

    /// The counts as the public summary shows them (statuses with no patch left out).
    pub fn count_map(&self) -> BTreeMap<PatchStatus, usize> {
        STATUSES
            .iter()
            .zip(self.counts)
            .filter(|(_, c)| *c > 0)
            .map(|(s, c)| (*s, usize::try_from(c).unwrap_or(usize::MAX)))
            .collect()
    }
}

/// Reads a blob hash value.
pub fn blob_value(v: &[u8]) -> Option<BlobHash> {
    Some(BlobHash(v.try_into().ok()?))
}

/// Reads an outcome value.
pub fn outcome_value(v: &[u8]) -> Option<Outcome> {
    match v {
        [b] => Outcome::from_byte(*b),
        _ => None,
    }
}

/// Reads a u64 BE value.
pub fn u64_value(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn lineage_record_values_carry_a_patchs_parents() {
        use commons_core::Kind;
        let parents = [RecordId([1; 32]), RecordId([2; 32])];
        let v = lineage_record_value(Kind::Patch, &parents);
        assert_eq!(lineage_record_kind(&v), Some(Kind::Patch as u8));
        assert_eq!(lineage_record_parents(&v), Some(parents.to_vec()));
        let none = lineage_record_value(Kind::Patch, &[]);
        assert_eq!(lineage_record_parents(&none), Some(vec![]));
        // An earlier build's value for a patch: the parents must be read from the record.
        assert_eq!(lineage_record_parents(&[Kind::Patch as u8]), None);
        let charter = lineage_record_value(Kind::Charter, &[]);
        assert_eq!(charter, vec![Kind::Charter as u8]);
        assert_eq!(lineage_record_parents(&charter), Some(vec![]));
        assert_eq!(lineage_record_parents(&v[..40]), None, "a cut value");
    }

    use super::*;

    #[test]
    fn meta_round_trips_and_rejects_garbage() {
        let m = LineageMeta {
            created: 7,
            family: Some(LineageId([3; 32])),
            base_complete: false,
            files: 9,
            counts: [1, 2, 3, 4],
            root: StateRoot([5; 32]),
            files_root: 6,
            log_root: 7,
            base_root: 8,
            acc: 9,
        };
        assert_eq!(LineageMeta::decode(&m.encode()), Some(m.clone()));
        let none = LineageMeta { family: None, ..m };
        assert_eq!(LineageMeta::decode(&none.encode()), Some(none));
        assert_eq!(LineageMeta::decode(b"garbage"), None);
        let mut bad = LineageMeta::new(1).encode();
        bad[9] = 7;
        assert_eq!(LineageMeta::decode(&bad), None);
    }

    #[test]
    fn log_keys_sort_by_generation_then_id() {
        let a = log_key(&(2, RecordId([0xff; 32])));
        let b = log_key(&(256, RecordId([0; 32])));
        assert!(a < b, "big-endian generations sort numerically");
        assert_eq!(parse_log_key(&b), Some((256, RecordId([0; 32]))));
        assert_eq!(parse_log_key(&b[1..]), None);
    }
}
