//! Golden test vectors (also printed in docs/protocol.md) and the decoder's refusals.

use commons_core::record::{MAX_PATCH_BYTES, MAX_VALIDATION_BYTES};
use commons_core::{
    BlobHash, Body, Change, Charter, DecodeError, Kind, LineageId, Patch, Record, RecordId,
    SecretKey, Validation, Verdict,
};

const TIME: u64 = 1_764_000_000_000;

fn author() -> SecretKey {
    SecretKey::from_seed([0x11; 32])
}

fn golden_charter() -> Record {
    Record::sign(
        &author(),
        TIME,
        Body::Charter(Charter {
            name: "seed library".into(),
            summary: "Open-pollinated seed varieties".into(),
            license: "CC-BY-SA-4.0".into(),
            maintainers: vec![author().public()],
            threshold: 1,
            fork: None,
        }),
    )
    .unwrap()
}

fn golden_patch() -> Record {
    Record::sign(
        &author(),
        TIME + 1,
        Body::Patch(Patch {
            lineage: LineageId::from(golden_charter().id()),
            parents: vec![],
            changes: vec![Change {
                path: "README.md".into(),
                before: None,
                after: Some(BlobHash::of(b"hello\n")),
            }],
            message: "add readme".into(),
        }),
    )
    .unwrap()
}

fn golden_validation() -> Record {
    Record::sign(
        &author(),
        TIME + 2,
        Body::Validation(Validation {
            lineage: LineageId::from(golden_charter().id()),
            patch: golden_patch().id(),
            verdict: Verdict::Accept,
            note: "ok".into(),
        }),
    )
    .unwrap()
}

/// Prints the vectors in the form docs/protocol.md shows: `cargo test -p commons-core --test
/// vectors -- --nocapture print_vectors`.
#[test]
fn print_vectors() {
    println!("author did: {}", author().public());
    for (name, r) in [
        ("charter", golden_charter()),
        ("patch", golden_patch()),
        ("validation", golden_validation()),
    ] {
        println!("{name} bytes: {}", hex::encode(r.bytes()));
        println!("{name} id: {}", r.id());
    }
}

#[test]
fn golden_vectors_are_stable() {
    let expect = [
        (golden_charter(), include_str!("vectors/charter.hex")),
        (golden_patch(), include_str!("vectors/patch.hex")),
        (golden_validation(), include_str!("vectors/validation.hex")),
    ];
    for (record, golden) in expect {
        let mut lines = golden.lines();
        let bytes = lines.next().unwrap();
        let id = lines.next().unwrap();
        assert_eq!(
            hex::encode(record.bytes()),
            bytes,
            "{:?} bytes changed",
            record.kind()
        );
        assert_eq!(record.id().to_hex(), id, "{:?} id changed", record.kind());
        let decoded = Record::decode(&hex::decode(bytes).unwrap()).unwrap();
        assert_eq!(decoded, record);
    }
}

#[test]
fn unknown_version_is_named() {
    let mut b = golden_charter().bytes().to_vec();
    b[0] = 2;
    let err = Record::decode(&b).unwrap_err();
    assert_eq!(err, DecodeError::UnknownVersion { version: 2 });
    assert!(err.to_string().contains("upgrade"), "{err}");
}

#[test]
fn oversized_is_refused_before_parsing() {
    // A validation header followed by garbage longer than a validation may be: the limit is
    // checked first, so the garbage is never parsed.
    let mut b = vec![1u8, Kind::Validation as u8];
    b.resize(MAX_VALIDATION_BYTES + 1, 0xff);
    assert!(matches!(
        Record::decode(&b),
        Err(DecodeError::TooLarge {
            kind: Kind::Validation,
            ..
        })
    ));
    let mut b = vec![1u8, Kind::Patch as u8];
    b.resize(MAX_PATCH_BYTES + 1, 0);
    assert!(matches!(
        Record::decode(&b),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn trailing_bytes_are_refused() {
    let r = golden_validation();
    let b = r.bytes();
    // Insert a byte before the signature: the body then has a trailing byte.
    let mut t = b[..b.len() - 64].to_vec();
    t.push(0);
    t.extend_from_slice(&b[b.len() - 64..]);
    assert!(matches!(
        Record::decode(&t),
        Err(DecodeError::TrailingBytes { extra: 1, .. })
    ));
}

#[test]
fn non_canonical_values_are_refused_even_when_signed() {
    // An unsorted parent list parses, but is not the one canonical form of a patch; a signer
    // cannot produce it through `Record::sign`, and the decoder refuses it.
    let p = Patch {
        lineage: LineageId([1; 32]),
        parents: vec![RecordId([2; 32]), RecordId([1; 32])],
        changes: vec![Change {
            path: "a".into(),
            before: None,
            after: Some(BlobHash([3; 32])),
        }],
        message: "m".into(),
    };
    assert!(Record::sign(&author(), 0, Body::Patch(p)).is_err());
    // A bool-like byte out of range (Option tag 2) is refused by the parser.
    let r = golden_patch();
    let mut b = r.bytes().to_vec();
    let tag_at = b.len() - 64 - 8 - "add readme".len() - 32 - 1 - 1;
    assert_eq!(b[tag_at], 0, "offset of the `before` option tag");
    b[tag_at] = 2;
    assert!(matches!(
        Record::decode(&b),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn truncated_and_garbage_are_refused() {
    assert!(matches!(
        Record::decode(&[]),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(Record::decode(&[1, 0, 5, 5, 5]).is_err());
    assert!(matches!(
        Record::decode(&[1, 9].repeat(40)),
        Err(DecodeError::UnknownKind { kind: 9 })
    ));
    let b = golden_patch().bytes().to_vec();
    assert!(Record::decode(&b[..b.len() - 1]).is_err());
}

#[test]
fn bad_signature_is_refused_and_batch_agrees() {
    let good = golden_patch();
    let mut bad = good.bytes().to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    let results = Record::decode_batch(&[good.bytes(), &bad, golden_charter().bytes()]);
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(DecodeError::BadSignature { .. })));
    assert!(results[2].is_ok());
}
