//! Micro-benchmarks of the record format: encode, sign, hash (the id), verify, decode.
//!
//! `cargo bench -p commons-core`. The encoding itself is private to the crate, so "encode" is
//! bincode over the patch body with the record's configuration (fixed-width little-endian
//! integers), which is what `Record::sign` does before hashing and signing; "sign" is the whole
//! of `Record::sign`, and the difference is the cost of the id and the signature.

use std::hint::black_box;

use commons_core::record::{RECORD_ID_CONTEXT, SIGNATURE_DOMAIN};
use commons_core::{BlobHash, Body, Change, LineageId, Patch, Record, SecretKey};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn patch_body(i: u64) -> Patch {
    Patch {
        lineage: LineageId([7; 32]),
        parents: vec![commons_core::RecordId([i as u8; 32])],
        changes: vec![Change {
            path: format!("docs/chapter-{i:04}.md"),
            before: None,
            after: Some(BlobHash::of(format!("chapter {i}\n").as_bytes())),
        }],
        message: "add a chapter".to_owned(),
    }
}

fn canon() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_fixed_int_encoding()
        .with_little_endian()
}

fn benches(c: &mut Criterion) {
    let key = SecretKey::from_seed([0x11; 32]);
    let body = patch_body(1);
    let record = Record::sign(&key, 1_764_000_000_000, Body::Patch(body.clone())).unwrap();
    let bytes = record.bytes().to_vec();
    let signed_part = &bytes[..bytes.len() - 64];
    let mut message = SIGNATURE_DOMAIN.to_vec();
    message.extend_from_slice(record.id().as_bytes());
    let mut sig = [0u8; 64];
    sig.copy_from_slice(&bytes[bytes.len() - 64..]);
    let signature = ed25519_dalek::Signature::from_bytes(&sig);
    let vk = ed25519_dalek::VerifyingKey::from_bytes(record.author().as_bytes()).unwrap();

    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode (bincode body)", |b| {
        b.iter(|| bincode::encode_to_vec(black_box(&body), canon()).unwrap())
    });
    g.bench_function("sign (Record::sign: check + encode + id + ed25519)", |b| {
        b.iter(|| {
            Record::sign(
                &key,
                1_764_000_000_000,
                Body::Patch(black_box(&body).clone()),
            )
            .unwrap()
        })
    });
    g.bench_function("hash (record id, BLAKE3 derive-key)", |b| {
        b.iter(|| {
            let mut h = blake3::Hasher::new_derive_key(RECORD_ID_CONTEXT);
            h.update(black_box(signed_part));
            *h.finalize().as_bytes()
        })
    });
    g.bench_function("verify (ed25519 verify_strict)", |b| {
        b.iter(|| {
            vk.verify_strict(black_box(&message), black_box(&signature))
                .unwrap()
        })
    });
    g.bench_function("decode (Record::decode, verify included)", |b| {
        b.iter(|| Record::decode(black_box(&bytes)).unwrap())
    });
    g.finish();

    // Batch decoding: per-record cost of `Record::decode_batch` over 256 records.
    let many: Vec<Vec<u8>> = (0..256u64)
        .map(|i| {
            Record::sign(&key, 1_764_000_000_000 + i, Body::Patch(patch_body(i)))
                .unwrap()
                .bytes()
                .to_vec()
        })
        .collect();
    let refs: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(refs.len() as u64));
    g.bench_function("decode_batch (256 records)", |b| {
        b.iter(|| Record::decode_batch(black_box(&refs)))
    });
    g.finish();
}

criterion_group!(record, benches);
criterion_main!(record);
