//! Crash safety: a child process writes records and blobs (packed and loose) and prints each id
//! and hash once `put` returned; the test kills it with SIGKILL at random moments, reopens the
//! store, and checks that every acknowledged record and blob is there, that the store opens, and
//! that every lineage's state equals from-scratch.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use commons_core::{LineageId, Record};
use commons_store::Store;

/// Kills per run: 20 in CI; `COMMONS_CRASH_ROUNDS=500 cargo test --release -p commons-store
/// --test crash` for the long run (docs/storage.md, "Crash recovery").
fn rounds() -> u64 {
    std::env::var("COMMONS_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}
/// Longest wait for the child to make progress before the test gives up.
const PATIENCE: Duration = Duration::from_secs(20);

fn seed() -> u64 {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).expect("random seed");
    u64::from_le_bytes(b)
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[test]
fn acknowledged_records_survive_sigkill() {
    let seed = seed();
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let mut acked = common::Acked::default();
    let mut kills_mid_write = 0;

    let rounds = rounds();
    for round in 0..rounds {
        let (mut child, rx, reader) = common::spawn_writer(dir.path(), round + 1, Stdio::inherit());

        let target = 1 + rng.below(40) as usize;
        let delay = Duration::from_micros(rng.below(30_000));
        let mut seen = 0usize;
        let record = |line: String, acked: &mut common::Acked| acked.take(&line);
        // Wait for a random number of acknowledgements...
        let give_up = Instant::now() + PATIENCE;
        let mut exited = false;
        while seen < target {
            let left = give_up.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "round {round}: the writer made no progress"
            );
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if record(line, &mut acked) {
                        seen += 1;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    exited = true;
                    break;
                }
            }
        }
        // ...then let it run for a random time, still collecting, and kill it mid-flight.
        let kill_at = Instant::now() + delay;
        while !exited {
            let left = kill_at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(left) {
                Ok(line) => {
                    record(line, &mut acked);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => exited = true,
            }
        }
        // `Child::kill` is SIGKILL on Unix.
        let _ = child.kill();
        let status = child.wait().unwrap();
        if !status.success() {
            kills_mid_write += 1;
        }
        // Everything printed before the kill was acknowledged.
        reader.join().unwrap();
        while let Ok(line) = rx.try_recv() {
            record(line, &mut acked);
        }

        common::check_acked(dir.path(), &mut acked, &format!("round {round}"));
    }
    let store = Store::open(dir.path()).unwrap();
    let lineages = store.lineages().unwrap().len();
    eprintln!(
        "{} records and {} blobs acknowledged over {rounds} rounds, {kills_mid_write} killed mid-flight, {lineages} lineages",
        acked.records.len(),
        acked.blobs.len()
    );
    drop(store);
    assert!(
        acked.records.len() > rounds as usize,
        "too few records written"
    );
    let (loose, packed) = common::loose_and_packed(dir.path(), &acked);
    assert!(
        loose > 0 && packed > 0,
        "{loose} loose and {packed} packed blobs: both kinds must be tested"
    );

    assert!(
        kills_mid_write > 0,
        "the writer was never killed mid-flight"
    );
}

/// Kills a re-index (`commons-store-crashtest reindex`) at random moments: each time, the store
/// opens (finishing the re-index), holds every record, and every lineage's state is the state of
/// all the records.
#[test]
fn a_reindex_killed_at_any_moment_loses_nothing() {
    const KILLS: usize = 8;
    let seed = seed();
    eprintln!("re-index crash test seed {seed}");
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let m = common::key(1);
    let c = common::charter(&m, 1, "big", common::maintainers(&[&m]), 1, None);
    let l = LineageId::from(c.id());
    let mut all: Vec<Record> = vec![c];
    // 300 patches in chains of 30, each accepted; re-indexed 50 records at a time, so a kill
    // falls in one of many steps.
    for i in 0..300u64 {
        let parents = match all.last() {
            Some(r) if i % 30 != 0 && r.as_validation().is_some() => {
                vec![r.as_validation().expect("a validation").patch]
            }
            _ => vec![],
        };
        let p = common::patch(
            &m,
            10 + i,
            l,
            parents,
            vec![(format!("d{}/f{i}", i % 30), None, Some(common::blob(i)))],
            "p",
        );
        let v = common::validation(&m, 10_000 + i, l, p.id(), true);
        all.push(p);
        all.push(v);
    }
    let store = Store::open(dir.path()).unwrap();
    store.put(all.clone()).unwrap();
    store.close().unwrap();

    let mut killed_mid_reindex = 0;
    for round in 0..KILLS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_commons-store-crashtest"))
            .arg("reindex")
            .arg(dir.path())
            .env("COMMONS_TEST_REINDEX_CHUNK", "50")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(
            lines.next().and_then(Result::ok).as_deref(),
            Some("open"),
            "round {round}: the re-indexer did not open the store"
        );
        // Not a synchronisation: a random moment to kill it at, within about one re-index.
        std::thread::sleep(Duration::from_millis(rng.below(1_000)));
        let _ = child.kill();
        child.wait().unwrap();
        let store = Store::open(dir.path())
            .unwrap_or_else(|e| panic!("round {round}: the store does not open: {e}"));
        let stats_before = store.stats();
        common::assert_all_lineages(&store, &all, &format!("round {round}"));
        assert_eq!(store.record_count().unwrap(), all.len() as u64);
        assert_eq!(stats_before.set_aside, 0);
        if store.stats().rebuilds > 0 || stats_before.records_decoded > 0 {
            killed_mid_reindex += 1;
        }
        store.close().unwrap();
    }
    eprintln!("{killed_mid_reindex} of {KILLS} opens finished an interrupted re-index");
    assert!(killed_mid_reindex > 0, "no re-index was ever interrupted");
}
