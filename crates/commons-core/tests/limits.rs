//! One definition of a valid record: records built at every limit of their kind are signed, and
//! what is signed decodes, on every node, to the same value and the same bytes.
//!
//! Each case fills a record up to its byte limit (or its count limit) with generated content of
//! the shapes that stress the decoder differently: the most changes with the shortest paths (the
//! most memory bincode reserves per byte), the longest paths, the most parents and maintainers,
//! and multi-byte text everywhere. Then sign → decode → re-encode must give the same record, and
//! one more element must be refused by `Record::sign` and by `Record::decode` alike.

use commons_core::chain::{change_len, patch_record_len};
use commons_core::record::{
    MAX_CHANGES, MAX_CHARTER_BYTES, MAX_FORK_HEADS, MAX_LICENSE_BYTES, MAX_MAINTAINERS,
    MAX_NAME_BYTES, MAX_PARENTS, MAX_PATCH_BYTES, MAX_PATH_BYTES, MAX_VALIDATION_BYTES,
};
use commons_core::{
    BlobHash, Body, Change, Charter, DecodeError, ForkBase, LineageId, Patch, Record, RecordId,
    SecretKey, SignError, Validation, Verdict,
};
use proptest::prelude::*;

/// Characters of 1, 2, 3 and 4 bytes in UTF-8.
const ALPHABET: [char; 12] = [
    'a', 'b', 'z', '0', '9', '-', 'é', 'ß', '日', '本', '🌱', '🍅',
];

/// A deterministic generator (xorshift), so a failing case is reproduced from its seed.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn hash(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        out
    }

    /// Text of at most `max` bytes, mixing characters of every UTF-8 width.
    fn text(&mut self, max: usize, multibyte: bool) -> String {
        let mut s = String::new();
        loop {
            let c = if multibyte {
                ALPHABET[self.below(ALPHABET.len())]
            } else {
                ALPHABET[self.below(6)]
            };
            if s.len() + c.len_utf8() > max {
                return s;
            }
            s.push(c);
        }
    }
}

/// How the paths of a generated patch look.
#[derive(Debug, Clone, Copy)]
enum Paths {
    /// The shortest distinct paths: `a`, `b`, … then two characters, and so on.
    Shortest,
    /// Paths of close to [`MAX_PATH_BYTES`], in nested directories.
    Longest,
    /// Anything between, with multi-byte names.
    Mixed,
}

/// The `i`-th shortest path over the alphabet (bijective base-n numbering).
fn shortest_path(mut i: usize, multibyte: bool) -> String {
    let n = if multibyte { ALPHABET.len() } else { 6 };
    let mut s = Vec::new();
    loop {
        s.push(ALPHABET[i % n]);
        if i < n {
            break;
        }
        i = i / n - 1;
    }
    s.into_iter().rev().collect()
}

fn path(g: &mut Gen, style: Paths, i: usize, multibyte: bool) -> String {
    match style {
        Paths::Shortest => shortest_path(i, multibyte),
        Paths::Longest => {
            let tail = format!("/{i:06}");
            let mut dirs = String::new();
            while dirs.len() + tail.len() + 60 <= MAX_PATH_BYTES {
                if !dirs.is_empty() {
                    dirs.push('/');
                }
                dirs.push_str(&g.text(50, multibyte));
            }
            let pad = g.text(MAX_PATH_BYTES - dirs.len() - tail.len() - 1, multibyte);
            format!("{dirs}/{pad}{tail}")
        }
        Paths::Mixed => {
            let depth = 1 + g.below(6);
            let mut parts: Vec<String> = (0..depth)
                .map(|_| {
                    let n = 1 + g.below(40);
                    g.text(n, multibyte)
                })
                .collect();
            parts.push(format!("{i}"));
            parts.retain(|p| !p.is_empty());
            parts.join("/")
        }
    }
}

fn change(g: &mut Gen, path: String) -> Change {
    let (before, after) = match g.below(3) {
        0 => (None, Some(BlobHash(g.hash()))),
        1 => (Some(BlobHash(g.hash())), None),
        _ => (Some(BlobHash(g.hash())), Some(BlobHash(g.hash()))),
    };
    Change {
        path,
        before,
        after,
    }
}

/// sign → decode → re-encode: the same value, id and bytes, and signing again gives the same
/// bytes (ed25519 signatures are deterministic).
fn round_trip(key: &SecretKey, timestamp: u64, body: Body) -> Result<Record, TestCaseError> {
    let signed = Record::sign(key, timestamp, body.clone()).map_err(|e| {
        TestCaseError::fail(format!("sign refused a record within the limits: {e}"))
    })?;
    let decoded = Record::decode(signed.bytes())
        .map_err(|e| TestCaseError::fail(format!("decode refused a signed record: {e}")))?;
    prop_assert_eq!(&decoded, &signed);
    prop_assert_eq!(decoded.body(), &body);
    let again = Record::sign(key, timestamp, decoded.body().clone()).expect("signs again");
    prop_assert_eq!(again.bytes(), signed.bytes());
    prop_assert_eq!(
        Record::decode_stored(signed.bytes()).expect("stored form"),
        signed.clone()
    );
    Ok(signed)
}

/// The bytes a record would have, made without `Record::sign`'s checks (as a peer could make
/// them): version, kind, bincode of (author, timestamp, body), and a signature-sized tail.
fn encode_unchecked(key: &SecretKey, body: &Body) -> Vec<u8> {
    let config = bincode::config::standard()
        .with_fixed_int_encoding()
        .with_little_endian();
    let author = key.public();
    let encoded = match body {
        Body::Charter(c) => bincode::encode_to_vec((&author, 1u64, c), config),
        Body::Patch(p) => bincode::encode_to_vec((&author, 1u64, p), config),
        Body::Validation(v) => bincode::encode_to_vec((&author, 1u64, v), config),
    }
    .expect("encodes");
    let mut out = vec![1, body.kind() as u8];
    out.extend_from_slice(&encoded);
    out.extend_from_slice(&[7u8; 64]);
    out
}

/// A record one step over a limit is refused by `Record::sign` and by `Record::decode`, for the
/// same reason.
fn refused_both_ways(key: &SecretKey, body: Body) -> Result<(), TestCaseError> {
    let bytes = encode_unchecked(key, &body);
    let decoded = Record::decode(&bytes);
    match Record::sign(key, 1, body) {
        Err(SignError::TooLarge { len, max, .. }) => {
            prop_assert!(len > max);
            prop_assert!(
                matches!(decoded, Err(DecodeError::TooLarge { .. })),
                "decode: {:?}",
                decoded
            );
        }
        Err(SignError::Invalid { .. }) => prop_assert!(
            matches!(decoded, Err(DecodeError::Invalid { .. })),
            "decode: {:?}",
            decoded
        ),
        other => prop_assert!(
            false,
            "signed a record over the limits: {:?}",
            other.map(|r| r.bytes().len())
        ),
    }
    Ok(())
}

fn patch_at_limit(
    g: &mut Gen,
    parents: usize,
    style: Paths,
    multibyte: bool,
    message_bytes: usize,
) -> (Patch, Change) {
    let message = {
        let m = g.text(message_bytes, multibyte);
        if m.trim().is_empty() {
            "m".to_owned()
        } else {
            m
        }
    };
    let mut parent_ids: Vec<RecordId> = (0..parents).map(|_| RecordId(g.hash())).collect();
    parent_ids.sort();
    parent_ids.dedup();
    // Enough candidate paths to fill the record, sorted and distinct.
    let mut paths: Vec<String> = Vec::new();
    let mut budget = MAX_PATCH_BYTES.saturating_sub(patch_record_len(parents, [], message.len()));
    let mut i = 0;
    while budget > 0 && paths.len() <= MAX_CHANGES {
        let p = path(g, style, i, multibyte);
        budget = budget.saturating_sub(8 + p.len() + 2);
        paths.push(p);
        i += 1;
    }
    paths.sort();
    paths.dedup();
    let mut changes: Vec<Change> = paths.into_iter().map(|p| change(g, p)).collect();
    // Keep the longest prefix that fits: the record is then at its byte or its count limit.
    let mut len = patch_record_len(parent_ids.len(), [], message.len());
    let mut keep = 0;
    for c in &changes {
        if keep == MAX_CHANGES || len + change_len(c) > MAX_PATCH_BYTES {
            break;
        }
        len += change_len(c);
        keep += 1;
    }
    let extra = changes
        .get(keep)
        .cloned()
        .unwrap_or_else(|| change(g, "~~~~".repeat(MAX_PATH_BYTES / 4)));
    changes.truncate(keep);
    let patch = Patch {
        lineage: LineageId(g.hash()),
        parents: parent_ids,
        changes,
        message,
    };
    (patch, extra)
}

fn paths_strategy() -> impl Strategy<Value = Paths> {
    prop_oneof![
        Just(Paths::Shortest),
        Just(Paths::Longest),
        Just(Paths::Mixed)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Patches filled to their limit, with every shape of path, parents and message.
    #[test]
    fn patches_at_the_limit_round_trip(
        seed in any::<u64>(),
        parents in prop_oneof![Just(0usize), Just(1), Just(MAX_PARENTS), 0..=MAX_PARENTS],
        style in paths_strategy(),
        multibyte in any::<bool>(),
        message_bytes in prop_oneof![Just(1usize), Just(MAX_PATCH_BYTES / 2), 1..4096usize],
    ) {
        let mut g = Gen(seed | 1);
        let key = SecretKey::from_seed(g.hash());
        let (patch, extra) = patch_at_limit(&mut g, parents, style, multibyte, message_bytes);
        let n = patch.changes.len();
        let signed = round_trip(&key, g.next(), Body::Patch(patch.clone()))?;
        let len = signed.bytes().len();
        // At the limit: the byte limit within one change, or the count limit.
        prop_assert!(
            n == MAX_CHANGES || len + change_len(&extra) > MAX_PATCH_BYTES,
            "{n} changes in {len} bytes is not at a limit"
        );
        if matches!(style, Paths::Shortest) && message_bytes < 4096 && parents < 8 && !multibyte {
            // The case of the bug: far more changes than 128 KiB / size_of::<Change>().
            prop_assert!(n > MAX_PATCH_BYTES / std::mem::size_of::<Change>(), "only {n} changes");
        }
        // One more change (kept sorted) is over a limit: both sides refuse it.
        let mut over = patch;
        over.changes.push(extra);
        over.changes.sort_by(|a, b| a.path.cmp(&b.path));
        over.changes.dedup_by(|a, b| a.path == b.path);
        if over.changes.len() > n {
            refused_both_ways(&key, Body::Patch(over))?;
        }
    }

    /// Charters with the most maintainers, the longest texts, the most fork heads, and as many
    /// exclusions as fit.
    #[test]
    fn charters_at_the_limit_round_trip(seed in any::<u64>(), multibyte in any::<bool>(), fork in any::<bool>()) {
        let mut g = Gen(seed | 1);
        let key = SecretKey::from_seed(g.hash());
        let mut maintainers: Vec<_> = (0..MAX_MAINTAINERS)
            .map(|i| SecretKey::from_seed([i as u8 + 1; 32]).public())
            .collect();
        maintainers.sort();
        let threshold = 1 + g.below(MAX_MAINTAINERS) as u16;
        let name = g.text(MAX_NAME_BYTES, multibyte);
        let license = g.text(MAX_LICENSE_BYTES, false);
        let fork_base = fork.then(|| {
            let mut heads: Vec<RecordId> = (0..MAX_FORK_HEADS).map(|_| RecordId(g.hash())).collect();
            heads.sort();
            ForkBase { parent: LineageId(g.hash()), heads, excluded: vec![] }
        });
        let mut charter = Charter {
            name: if name.trim().is_empty() { "n".into() } else { name },
            summary: String::new(),
            license: if license.trim().is_empty() { "l".into() } else { license },
            maintainers,
            threshold,
            fork: fork_base,
        };
        let size = |c: &Charter| Record::sign(&key, 1, Body::Charter(c.clone())).map(|r| r.bytes().len());
        let room = MAX_CHARTER_BYTES - size(&charter).expect("fits");
        if let Some(f) = &mut charter.fork {
            // Fill the record with exclusions (32 bytes each).
            let mut excluded: Vec<RecordId> = (0..room / 32).map(|_| RecordId(g.hash())).collect();
            excluded.sort();
            f.excluded = excluded;
        } else {
            charter.summary = g.text(room.min(MAX_CHARTER_BYTES / 2), multibyte);
        }
        let signed = round_trip(&key, g.next(), Body::Charter(charter.clone()))?;
        prop_assert!(signed.bytes().len() + 32 > MAX_CHARTER_BYTES || charter.fork.is_none());
        if let Some(f) = &mut charter.fork {
            f.excluded.push(RecordId([0xff; 32]));
            refused_both_ways(&key, Body::Charter(charter))?;
        }
    }

    /// Validations with the longest note.
    #[test]
    fn validations_at_the_limit_round_trip(seed in any::<u64>(), multibyte in any::<bool>()) {
        let mut g = Gen(seed | 1);
        let key = SecretKey::from_seed(g.hash());
        let note = g.text(MAX_VALIDATION_BYTES / 2, multibyte);
        let body = Body::Validation(Validation {
            lineage: LineageId(g.hash()),
            patch: RecordId(g.hash()),
            verdict: if g.below(2) == 0 { Verdict::Accept } else { Verdict::Reject },
            note: note.clone(),
        });
        round_trip(&key, g.next(), body)?;
        let over = Body::Validation(Validation {
            lineage: LineageId(g.hash()),
            patch: RecordId(g.hash()),
            verdict: Verdict::Accept,
            note: format!("{note}{}", "x".repeat(MAX_VALIDATION_BYTES / 2 - note.len() + 1)),
        });
        refused_both_ways(&key, over)?;
    }
}

/// A hostile record that claims a list far longer than its bytes is refused, without the decoder
/// reserving more than its bound: the limit stops it before the allocation.
#[test]
fn a_list_longer_than_its_bytes_is_refused_before_allocating() {
    let key = SecretKey::from_seed([3; 32]);
    let patch = Patch {
        lineage: LineageId([1; 32]),
        parents: vec![],
        changes: vec![Change {
            path: "a".into(),
            before: None,
            after: Some(BlobHash::of(b"a")),
        }],
        message: "m".into(),
    };
    let r = Record::sign(&key, 1, Body::Patch(patch)).unwrap();
    // The changes' length prefix follows version, kind, author, timestamp, lineage and the
    // (empty) parents list.
    let at = 2 + 32 + 8 + 32 + 8;
    for claimed in [u64::MAX, 1 << 40, 20_000] {
        let mut b = r.bytes().to_vec();
        b[at..at + 8].copy_from_slice(&claimed.to_le_bytes());
        match Record::decode(&b) {
            Err(DecodeError::Malformed { reason, .. }) => {
                assert!(
                    reason.contains("Limit") || reason.contains("nexpected"),
                    "{reason}"
                );
            }
            other => panic!("claimed {claimed} changes: {other:?}"),
        }
    }
}
