//! Target `bundle`: [`bundle::read`], the reader behind `commons import`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use commons_cli::bundle::{
    self, BundleWriter, MAX_BLOB_BYTES, MAX_BLOBS, MAX_RECORDS, MAX_RECORDS_TOTAL_BYTES, Verified,
};
use commons_core::BlobHash;
use commons_core::record::MAX_RECORD_BYTES;

/// Where the reader stages blobs: one directory per process run, under the system's temporary
/// directory. Each read makes (and removes) its own staging directory inside it.
fn staging_parent() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("commons-fuzz-bundle");
        std::fs::create_dir_all(&dir).expect("the staging parent can be made");
        dir
    })
}

/// Reads `data` as a bundle. What is accepted is within the format's limits, every blob staged
/// matches its hash and length, and writing the bundle again gives one that reads the same (and
/// is the same bytes when the input repeated no blob).
pub fn bundle(data: &[u8]) {
    let Ok(v) = bundle::read(data, staging_parent()) else {
        return;
    };
    check(&v);
    let again = write(&v);
    assert!(again.len() <= data.len(), "only repeated blobs are dropped");
    if again.len() == data.len() {
        assert_eq!(
            again, data,
            "a bundle without repeated blobs is written as read"
        );
    }
    let back = bundle::read(again.as_slice(), staging_parent()).expect("a bundle written reads");
    assert_eq!(back.records, v.records, "records round trip");
    let blobs = |v: &Verified| v.blobs.iter().map(|b| (b.hash, b.len)).collect::<Vec<_>>();
    assert_eq!(blobs(&back), blobs(&v), "blobs round trip");
}

fn check(v: &Verified) {
    assert!(v.records.len() as u64 <= MAX_RECORDS);
    let total: u64 = v.records.iter().map(|r| r.bytes().len() as u64).sum();
    assert!(total <= MAX_RECORDS_TOTAL_BYTES);
    assert!(
        v.records
            .iter()
            .all(|r| r.bytes().len() <= MAX_RECORD_BYTES)
    );
    assert!(v.blobs.len() as u64 <= MAX_BLOBS);
    let mut hashes: Vec<BlobHash> = v.blobs.iter().map(|b| b.hash).collect();
    hashes.sort_unstable();
    hashes.dedup();
    assert_eq!(hashes.len(), v.blobs.len(), "blobs without duplicates");
    for b in &v.blobs {
        assert!(b.len <= MAX_BLOB_BYTES);
        let content = std::fs::read(&b.path).expect("a staged blob is there");
        assert_eq!(content.len() as u64, b.len, "staged length");
        assert_eq!(
            BlobHash::of(&content),
            b.hash,
            "staged content matches its hash"
        );
    }
}

fn write(v: &Verified) -> Vec<u8> {
    let mut w = BundleWriter::new(Vec::new(), v.records.len() as u64).expect("writes to memory");
    for r in &v.records {
        w.record(r).expect("writes to memory");
    }
    w.blobs(v.blobs.len() as u64).expect("writes to memory");
    for b in &v.blobs {
        let mut f = File::open(&b.path).expect("a staged blob opens");
        w.blob(&b.hash, b.len, &mut f)
            .expect("a staged blob is copied");
    }
    w.finish().expect("writes to memory")
}
