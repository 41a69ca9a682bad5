//! **million**: a store of a million records. Not part of `all` (it takes several minutes); run
//! it alone, `commons-bench million`, and its rows are labelled as a single-scenario run.
//!
//! A linear history of 500 000 accepted patches (500 000 patches + 500 000 validations) with a
//! fork charter every 10 000 patches, forking the root at that patch (50 forks), all signed
//! beforehand. Measured:
//! - **ingest**: every record decoded with its signature verified (`Record::decode_batch`) and
//!   stored durably (`Store::put`), pipelined as the daemon does, per second, against
//!   single-core `verify_strict` over a 100 000-record sample of the same signatures;
//! - **summary read**: `Store::lineage` of the root (summary and fork point from maintained
//!   state), median of 5, against the same read on the first fork (10 000 patches);
//! - **memory**: `commonsd` VmRSS, idle, holding the store (after one `NodeStatus`), against an
//!   idle `commonsd` with an empty store;
//! - **fork**: the fork scenario's rows (`commons fork` as a process, the follower by gossip, the
//!   store's bytes written) at 500 000 patches against 1 000.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use commons_core::{ForkBase, LineageId};
use commons_store::Store;
use commons_store::home::Home;

use crate::daemon::{Client, find_commonsd};
use crate::records;
use crate::store::{Built, decode_and_store};
use crate::{Opts, Row};

/// Patches of the history (each with its validation).
const PATCHES: usize = 500_000;
/// A fork charter every this many patches.
const FORK_EVERY: usize = 10_000;
/// Signatures in the reference sample.
const REFERENCE_SAMPLE: usize = 100_000;
const SCENARIO: &str = "million";

/// The rows (module documentation).
pub fn run(opts: &Opts) -> anyhow::Result<Vec<Row>> {
    let patches = if opts.records < 100_000 {
        // A smoke run (tests): the same steps at a small size.
        opts.records.max(2 * FORK_EVERY) / 2
    } else {
        PATCHES
    };
    opts.progress(format!(
        "million: signing {patches} patches + {patches} validations"
    ));
    let history = records::linear_history(opts.seed + 40, patches, &|n| {
        opts.progress(format!("  signed {n} patches"));
    });
    let lineage = history.lineage();
    let mut forks = Vec::new();
    let mut bytes: Vec<Vec<u8>> = Vec::with_capacity(history.records.len() + patches / FORK_EVERY);
    for (i, r) in history.records.iter().enumerate() {
        bytes.push(r.bytes().to_vec());
        let done = i.div_ceil(2);
        if i % 2 == 1 && done % FORK_EVERY == 0 {
            let fork = records::charter(
                &records::key(opts.seed + 41),
                &format!("fork at {done}"),
                records::BASE_TS + 30_000_000 + done as u64,
                Some(ForkBase {
                    parent: lineage,
                    heads: vec![history.records[i - 1].id()],
                    excluded: vec![],
                }),
            );
            bytes.push(fork.bytes().to_vec());
            forks.push(fork);
        }
    }
    let n = bytes.len();

    let sample = &history.records[..REFERENCE_SAMPLE.min(history.records.len())];
    let sigs = records::raw_signatures(sample);
    let started = Instant::now();
    ensure!(
        records::verify_all(&sigs) == sample.len(),
        "the reference failed"
    );
    let reference = sample.len() as f64 / started.elapsed().as_secs_f64();
    opts.progress(format!("million: reference {reference:.0} verify_strict/s"));

    let dir = tempfile::tempdir()?;
    let store = Store::open(&Home::at(dir.path()).store_dir())?;
    store.put(vec![history.charter.clone()])?;
    let elapsed = decode_and_store(&store, &bytes, opts.batch)?;
    drop(bytes);
    let rate = n as f64 / elapsed.as_secs_f64();
    let held = store.record_count()?;
    ensure!(
        held == n as u64 + 1,
        "the store holds {held} records, expected {}",
        n + 1
    );
    opts.progress(format!("million: {n} records stored at {rate:.0}/s"));

    let read = |l: &LineageId| -> anyhow::Result<f64> {
        let mut times = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            store.lineage(l)?.context("a lineage is missing")?;
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        Ok(times[2])
    };
    let summary_root = read(&lineage)?;
    let first_fork = LineageId::from(forks.first().context("no fork")?.id());
    let summary_fork = read(&first_fork)?;
    let summary = store.lineage(&lineage)?.context("the root is missing")?;
    ensure!(
        summary.counts.values().sum::<usize>() == patches,
        "the root does not hold {patches} patches"
    );
    store.close()?;
    drop(store);

    let (rss, rss_empty) = idle_rss(opts, &dir, held)?;
    opts.progress(format!(
        "million: idle RSS {rss:.1} MiB (empty {rss_empty:.1} MiB)"
    ));

    let store = Store::open(&Home::at(dir.path()).store_dir())?;
    let large = Built {
        dir,
        store,
        history,
        build_time: elapsed,
    };
    let fork_rows = crate::fork_bench::rows_at(opts, large)?;

    let mut rows = vec![
        Row::info(
            SCENARIO,
            format!("{n} records decoded+verified+stored durably (500k patches, 500k validations, a fork every {FORK_EVERY})"),
            rate,
            "rec/s",
        )
        .against("verify_strict/s, 1 core (100 000-signature sample)", reference, "sig/s")
        .target("≥ 0.6×", rate >= 0.6 * reference)
        .note(format!("{:.0} s in all; batches of {}", elapsed.as_secs_f64(), opts.batch)),
        Row::info(
            SCENARIO,
            format!("summary read (Store::lineage) at {patches} patches, median of 5"),
            summary_root,
            "ms",
        )
        .against(format!("the same on a fork of {FORK_EVERY} patches"), summary_fork, "ms")
        .target("≤ 5 ms", summary_root <= 5.0),
        Row::info(
            SCENARIO,
            format!("commonsd VmRSS idle, {held} records"),
            rss,
            "MiB",
        )
        .against("commonsd VmRSS idle, empty store", rss_empty, "MiB")
        .target("≤ 100 MB", rss * 1024.0 * 1024.0 <= 100e6)
        .note("after one NodeStatus"),
    ];
    rows.extend(fork_rows.into_iter().map(|mut r| {
        r.scenario = SCENARIO;
        r
    }));
    Ok(rows)
}

/// Idle VmRSS (MiB) of a `commonsd` on the store in `dir` (after one status request, which
/// counts the records), and of one with an empty store.
fn idle_rss(opts: &Opts, dir: &tempfile::TempDir, held: u64) -> anyhow::Result<(f64, f64)> {
    let bin = find_commonsd(opts.commonsd.as_deref())?;
    let start = |home: &std::path::Path| {
        commons_harness::Daemon::start(
            commons_harness::Spec::new(&bin, home)
                .log(&home.join("commonsd.log"))
                .flags(["--no-kademlia"]),
        )
    };
    let empty_dir = tempfile::tempdir()?;
    let mut empty = start(empty_dir.path())?;
    let mut full = start(dir.path())?;
    let status = Client::connect(&dir.path().join(commons_rpc::SOCKET_NAME))?.status()?;
    ensure!(
        status.records == held,
        "the daemon holds {} records",
        status.records
    );
    Client::connect(&empty_dir.path().join(commons_rpc::SOCKET_NAME))?.status()?;
    std::thread::sleep(Duration::from_secs(3));
    let sample = |d: &commons_harness::Daemon| -> anyhow::Result<f64> {
        let mut rss = 0;
        for _ in 0..5 {
            rss = rss.max(d.rss_kib()?.0);
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(rss as f64 / 1024.0)
    };
    let (full_rss, empty_rss) = (sample(&full)?, sample(&empty)?);
    full.stop_with("TERM", Duration::from_secs(30))?;
    empty.stop_with("TERM", Duration::from_secs(30))?;
    Ok((full_rss, empty_rss))
}
