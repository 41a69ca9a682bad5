//! Helper process for the store's crash test (`tests/crash.rs`); not a user tool.
//!
//! `commons-store-crashtest write <dir> <seed>` opens the store in `<dir>` and the blob store in
//! `<dir>/blobs`, and writes signed records (a charter, patches, validations, sometimes a fork)
//! in small batches. Each patch's new content is a real blob: most small enough to be packed
//! (durable at `BlobStore::sync`), some large enough to be a loose file. Each batch stores its
//! blobs, syncs the packs, puts the records, and only then prints `blob <hash>` for each blob and
//! each record id: everything printed has been acknowledged as durable. The tests kill it with
//! SIGKILL, or cut the power under it (`tests/power_loss.rs`), and check nothing printed was lost.
//!
//! `commons-store-crashtest hold <dir>` opens the store, prints `open`, and keeps it open until
//! stdin is closed (used to test the lock held by another process).
//!
//! `commons-store-crashtest reindex <dir>` opens the store, prints `open`, and re-indexes it
//! (`Store::reindex`) again and again, printing `reindexed` after each, until it is killed.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

use commons_core::{
    BlobHash, Body, Change, Charter, ForkBase, LineageId, Patch, Record, RecordId, SecretKey,
    Validation, Verdict,
};
use commons_store::{BlobStore, Store};

/// Records written by one `write` run before it exits on its own.
const MAX_RECORDS: u64 = 600;
/// One patch in this many carries a blob too large to be packed (a loose file).
const LARGE_EVERY: u64 = 12;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("write") if args.len() == 4 => match args[3].parse() {
            Ok(seed) => write(Path::new(&args[2]), seed),
            Err(e) => Err(format!("bad seed: {e}")),
        },
        Some("hold") if args.len() == 3 => hold(Path::new(&args[2])),
        Some("reindex") if args.len() == 3 => reindex(Path::new(&args[2])),
        _ => Err(
            "usage: commons-store-crashtest write <dir> <seed> | hold <dir> | reindex <dir>".into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("commons-store-crashtest: {e}");
            ExitCode::FAILURE
        }
    }
}

fn hold(dir: &Path) -> Result<(), String> {
    let store = Store::open(dir).map_err(|e| e.to_string())?;
    println!("open");
    let mut line = String::new();
    while std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?
        > 0
    {
        line.clear();
    }
    store.close().map_err(|e| e.to_string())
}

/// Re-indexes the store again and again (printing `reindexed` after each), until killed.
fn reindex(dir: &Path) -> Result<(), String> {
    let store = Store::open(dir).map_err(|e| e.to_string())?;
    println!("open");
    loop {
        store.reindex().map_err(|e| e.to_string())?;
        println!("reindexed");
    }
}

fn sign(key: &SecretKey, ts: u64, body: Body) -> Result<Record, String> {
    Record::sign(key, ts, body).map_err(|e| e.to_string())
}

fn write(dir: &Path, seed: u64) -> Result<(), String> {
    let store = Store::open(dir).map_err(|e| e.to_string())?;
    let blobs = BlobStore::open(&dir.join("blobs")).map_err(|e| e.to_string())?;
    let keys = [
        SecretKey::from_seed([7; 32]),
        SecretKey::from_seed([8; 32]),
        SecretKey::from_seed([9; 32]),
    ];
    let mut maintainers = vec![keys[0].public(), keys[1].public()];
    maintainers.sort();
    let root = sign(
        &keys[0],
        1,
        Body::Charter(Charter {
            name: "crash".into(),
            summary: String::new(),
            license: "CC0-1.0".into(),
            maintainers: maintainers.clone(),
            threshold: 1,
            fork: None,
        }),
    )?;
    let mut lineages = vec![LineageId::from(root.id())];
    let mut out = std::io::stdout().lock();
    let ack = |out: &mut std::io::StdoutLock<'_>,
               stored: &[BlobHash],
               ids: &[RecordId]|
     -> Result<(), String> {
        for hash in stored {
            writeln!(out, "blob {hash}").map_err(|e| e.to_string())?;
        }
        for id in ids {
            writeln!(out, "{id}").map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())
    };
    let batch = vec![root.clone()];
    store.put(batch.clone()).map_err(|e| e.to_string())?;
    ack(&mut out, &[], &[root.id()])?;

    for s in store.lineages().map_err(|e| e.to_string())? {
        if !lineages.contains(&s.lineage) {
            lineages.push(s.lineage);
        }
    }
    let mut patches: Vec<RecordId> = store
        .patches(&lineages[0], None)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(id, _)| id)
        .collect();

    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut n = 0u64;
    while n < MAX_RECORDS {
        let size = 1 + rng.below(5);
        let mut batch = Vec::new();
        let mut stored = Vec::new();
        for _ in 0..size {
            n += 1;
            let ts = seed * 1_000_000 + n;
            let lineage = lineages[rng.below(lineages.len() as u64) as usize];
            let roll = rng.below(100);
            let record = if roll < 3 && !patches.is_empty() {
                // A fork of the root lineage at what it has accepted now.
                let point = store
                    .lineage(&lineages[0])
                    .map_err(|e| e.to_string())?
                    .map(|s| s.fork_point)
                    .unwrap_or_default();
                let r = sign(
                    &keys[2],
                    ts,
                    Body::Charter(Charter {
                        name: format!("fork {n}"),
                        summary: String::new(),
                        license: "CC0-1.0".into(),
                        maintainers: maintainers.clone(),
                        threshold: 1,
                        fork: Some(ForkBase {
                            parent: lineages[0],
                            heads: point.heads,
                            excluded: point.excluded,
                        }),
                    }),
                )?;
                lineages.push(LineageId::from(r.id()));
                r
            } else if roll < 60 || patches.is_empty() {
                let mut parents = Vec::new();
                if !patches.is_empty() && rng.below(4) > 0 {
                    parents.push(patches[rng.below(patches.len() as u64) as usize]);
                }
                let before = match rng.below(3) {
                    0 => None,
                    x => Some(BlobHash([x as u8; 32])),
                };
                let len = match rng.below(LARGE_EVERY) {
                    0 => 70_000 + rng.below(100_000),
                    _ => 1 + rng.below(8_000),
                };
                let content = blob_content(&mut rng, len as usize);
                let hash = BlobHash::of(&content);
                blobs
                    .put_small(&hash, &content)
                    .map_err(|e| format!("storing a blob: {e}"))?;
                stored.push(hash);
                let after = Some(hash);
                let r = sign(
                    &keys[rng.below(3) as usize],
                    ts,
                    Body::Patch(Patch {
                        lineage,
                        parents,
                        changes: vec![Change {
                            path: format!("f{}", rng.below(6)),
                            before,
                            after,
                        }],
                        message: format!("patch {n}"),
                    }),
                )?;
                patches.push(r.id());
                r
            } else {
                let target = patches[rng.below(patches.len() as u64) as usize];
                sign(
                    &keys[rng.below(3) as usize],
                    ts,
                    Body::Validation(Validation {
                        lineage,
                        patch: target,
                        verdict: if rng.below(3) == 0 {
                            Verdict::Reject
                        } else {
                            Verdict::Accept
                        },
                        note: String::new(),
                    }),
                )?
            };
            batch.push(record);
        }
        let ids: Vec<RecordId> = batch.iter().map(Record::id).collect();
        // Blobs before the records that name them, as the daemon does.
        blobs.sync().map_err(|e| format!("syncing packs: {e}"))?;
        store.put(batch).map_err(|e| e.to_string())?;
        ack(&mut out, &stored, &ids)?;
    }
    store.close().map_err(|e| e.to_string())
}

/// `len` pseudo-random bytes (incompressible, distinct per call).
fn blob_content(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&rng.next().to_le_bytes());
    }
    v.truncate(len);
    v
}
