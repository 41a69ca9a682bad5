//! The scenarios that run the store API in this process: ingest, state and fork.

use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use commons_core::state::RecordSet;
use commons_core::{LineageId, Record};
use commons_store::Store;
use commons_store::home::Home;

use crate::records::{self, History};
use crate::{Opts, Row, Shared};

/// Records per `put` while building histories (not timed).
const BUILD_BATCH: usize = 2000;

/// A history stored in a store of its own.
#[derive(Debug)]
pub struct Built {
    /// The store's home (a temporary directory).
    pub dir: tempfile::TempDir,
    /// The open store.
    pub store: Store,
    /// The records.
    pub history: History,
    /// How long storing them took.
    pub build_time: Duration,
}

/// Signs a linear history of `patches` accepted patches and stores it (charter first, then
/// batches of [`BUILD_BATCH`]).
pub fn build_history(opts: &Opts, key_no: u64, patches: usize) -> anyhow::Result<Built> {
    opts.progress(format!(
        "signing a history of {patches} patches + {patches} validations"
    ));
    let history = records::linear_history(key_no, patches, &|n| {
        opts.progress(format!("  signed {n} patches"));
    });
    let dir = tempfile::tempdir()?;
    let store = Store::open(&Home::at(dir.path()).store_dir())?;
    store.put(vec![history.charter.clone()])?;
    let started = Instant::now();
    for (i, chunk) in history.records.chunks(BUILD_BATCH).enumerate() {
        store.put(chunk.to_vec())?;
        if (i + 1) % 20 == 0 {
            opts.progress(format!(
                "  stored {} records ({:.0}/s)",
                (i + 1) * BUILD_BATCH,
                ((i + 1) * BUILD_BATCH) as f64 / started.elapsed().as_secs_f64()
            ));
        }
    }
    let build_time = started.elapsed();
    Ok(Built {
        dir,
        store,
        history,
        build_time,
    })
}

/// **ingest**: records verified from bytes (`Record::decode_batch`) and stored durably
/// (`Store::put`), per second, against `verify_strict` one by one over the same signatures.
pub fn ingest(opts: &Opts, shared: &mut Shared) -> anyhow::Result<Vec<Row>> {
    let patches = opts.records.div_ceil(2);
    opts.progress(format!("signing {} records", patches * 2));
    let history = records::linear_history(opts.seed + 10, patches, &|n| {
        opts.progress(format!("  signed {n} patches"));
    });
    let records = &history.records[..opts.records.min(history.records.len())];
    let n = records.len();
    let bytes: Vec<Vec<u8>> = records.iter().map(|r| r.bytes().to_vec()).collect();

    // The reference: raw verification on one core, over the same signatures.
    let sigs = records::raw_signatures(records);
    let started = Instant::now();
    let ok = records::verify_all(&sigs);
    let reference = n as f64 / started.elapsed().as_secs_f64();
    ensure!(
        ok == n,
        "the reference failed to verify {} signatures",
        n - ok
    );
    opts.progress(format!("reference: {reference:.0} verify_strict/s"));

    // Decoding alone (batch verification included), for the breakdown.
    let started = Instant::now();
    for chunk in bytes.chunks(opts.batch) {
        let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        for r in Record::decode_batch(&refs) {
            r?;
        }
    }
    let decode_rate = n as f64 / started.elapsed().as_secs_f64();

    // The measure: decode on this thread, `put` on another, as a daemon would pipeline them.
    let home = tempfile::tempdir()?;
    let store = Store::open(&Home::at(home.path()).store_dir())?;
    store.put(vec![history.charter.clone()])?;
    let elapsed = decode_and_store(&store, &bytes, opts.batch)?;
    let rate = n as f64 / elapsed.as_secs_f64();
    let held = store.record_count()?;
    ensure!(
        held == n as u64 + 1,
        "the store holds {held} records, expected {}",
        n + 1
    );
    let summary = store
        .lineage(&history.lineage())?
        .context("the lineage is missing")?;
    store.close()?;
    opts.progress(format!("ingest: {rate:.0} records/s"));

    let target = 0.6;
    let ratio = rate / reference;
    shared.ingest_home = Some((home, held));
    Ok(vec![
        Row::info(
            "ingest",
            format!("{n} records decoded+verified+stored durably"),
            rate,
            "rec/s",
        )
        .against("verify_strict/s, 1 core", reference, "sig/s")
        .target(format!("≥ {target}×"), ratio >= target)
        .note(format!(
            "batches of {}; {} patches accepted",
            opts.batch,
            summary.counts.values().sum::<usize>()
        )),
        Row::info(
            "ingest",
            "decode_batch alone (no store)",
            decode_rate,
            "rec/s",
        )
        .against("verify_strict/s, 1 core", reference, "sig/s"),
    ])
}

/// Decodes (verifying every signature, `Record::decode_batch`) batches of `batch` records on
/// this thread and stores each durably (`Store::put`) on another, as a daemon pipelines them;
/// returns the time from the first decode to the last put's return.
pub fn decode_and_store(
    store: &Store,
    bytes: &[Vec<u8>],
    batch: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let (tx, rx) = sync_channel::<Vec<Record>>(2);
    let putter = {
        let store = store.clone();
        std::thread::spawn(move || -> anyhow::Result<()> {
            for batch in rx {
                store.put(batch)?;
            }
            Ok(())
        })
    };
    for chunk in bytes.chunks(batch) {
        let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        let batch = Record::decode_batch(&refs)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        if tx.send(batch).is_err() {
            break;
        }
    }
    drop(tx);
    putter
        .join()
        .map_err(|_| anyhow!("the storing thread panicked"))??;
    Ok(started.elapsed())
}

/// **state**: one validation that makes one more patch accepted on a long history, against
/// the state of that lineage computed from scratch in memory.
pub fn state(opts: &Opts, shared: &mut Shared) -> anyhow::Result<Vec<Row>> {
    let built = match shared.long_history.take() {
        Some(b) => b,
        None => build_history(opts, opts.seed + 20, opts.history)?,
    };
    let lineage = built.history.lineage();
    let key = built.history.key.clone();
    let mut head = built.history.head();
    let mut times = Vec::new();
    let before = built.store.stats();
    for rep in 0..opts.state_reps.max(1) as u64 {
        let i = opts.history as u64 + rep;
        let ts = records::BASE_TS + 10_000_000 + 2 * i;
        let patch = records::add_patch(&key, lineage, head, i, ts);
        let validation = records::accept(&key, lineage, patch.id(), ts + 1);
        head = Some(patch.id());
        built.store.put(vec![patch])?;
        let started = Instant::now();
        built.store.put(vec![validation])?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let after = built.store.stats();
    let summary = built
        .store
        .lineage(&lineage)?
        .context("the lineage is missing")?;
    let accepted = summary
        .counts
        .get(&commons_core::state::PatchStatus::Accepted)
        .copied()
        .unwrap_or(0);
    ensure!(
        accepted == opts.history + opts.state_reps.max(1),
        "{accepted} patches accepted, expected {}",
        opts.history + opts.state_reps.max(1)
    );
    times.sort_by(f64::total_cmp);
    let median = crate::percentile(&times, 50.0);

    // The references: the same lineage's state from scratch, in memory and through the store.
    let mut set = RecordSet::new();
    set.insert(&built.history.charter);
    for r in &built.history.records {
        set.insert(r);
    }
    let started = Instant::now();
    let mem_state = set.state(&lineage).context("no state")?;
    let from_scratch_mem = started.elapsed().as_secs_f64() * 1e3;
    ensure!(
        mem_state.applied.len() == opts.history,
        "in-memory state differs"
    );
    drop(set);
    let started = Instant::now();
    built
        .store
        .state_from_scratch(&lineage)?
        .context("no state")?;
    let from_scratch_store = started.elapsed().as_secs_f64() * 1e3;
    // A summary read (what `show`, `status`, `propose`, `validate` and `fork` do first, and the
    // node after every ingested record, through `followed_families`).
    // Right after the from-scratch load above, sled's cache holds other pages: the first read
    // is a cold one. The median of 21 is reported, the first and the slowest in the note.
    let decoded_before = built.store.stats().records_decoded;
    let mut reads = Vec::with_capacity(21);
    for _ in 0..21 {
        let started = Instant::now();
        built.store.lineage(&lineage)?.context("no summary")?;
        reads.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let first_read = reads[0];
    reads.sort_by(f64::total_cmp);
    let summary_ms = crate::percentile(&reads, 50.0);
    let slowest_read = reads[reads.len() - 1];
    let summary_decoded = built.store.stats().records_decoded - decoded_before;
    opts.progress(format!(
        "state: accept {median:.2} ms, from scratch {from_scratch_mem:.0} ms (memory), {from_scratch_store:.0} ms (store)"
    ));

    let ratio = median / from_scratch_mem;
    let pass = median <= 5.0 && ratio <= 0.01;
    let rows = vec![
        Row::info(
            "state",
            format!("accept 1 patch on {} (put of 1 validation, durable)", opts.history),
            median,
            "ms",
        )
        .against("RecordSet::state from scratch, in memory", from_scratch_mem, "ms")
        .target("≤ 5 ms and ≤ 0.01×", pass)
        .note(format!(
            "median of {}; min {:.2} ms, max {:.2} ms; engine read {} log entries, {} patches, {} rebuilds",
            times.len(),
            times[0],
            times[times.len() - 1],
            after.log_entries_read - before.log_entries_read,
            after.patch_loads - before.patch_loads,
            after.rebuilds - before.rebuilds,
        )),
        Row::info("state", "Store::state_from_scratch (loads and decodes the records; signatures are not verified again)", from_scratch_store, "ms")
            .against("RecordSet::state from scratch, in memory", from_scratch_mem, "ms"),
        Row::info("state", "Store::lineage (one summary read, median of 21)", summary_ms, "ms")
            .against("accept 1 patch", median, "ms")
            .target("≤ 5 ms", summary_ms <= 5.0)
            .note(format!("records decoded by the 21 reads: {summary_decoded} (the fork point is kept, not computed); first read {first_read:.2} ms (cold), slowest {slowest_read:.2} ms")),
        Row::info("state", format!("build: {} records stored in batches of {BUILD_BATCH}", built.history.records.len()), built.history.records.len() as f64 / built.build_time.as_secs_f64(), "rec/s"),
    ];
    let mut rows = rows;
    rows.push(concurrent_row(opts)?);
    shared.long_history = Some(built);
    Ok(rows)
}

/// Accepting `n` patches in one put, validations in record-id order: `concurrent` says whether
/// the patches are concurrent (one generation, no parents) or a linear history.
fn accept_all(opts: &Opts, n: usize, concurrent: bool) -> anyhow::Result<(f64, u64)> {
    let key = records::key(opts.seed + 40 + u64::from(concurrent));
    let charter = records::charter(&key, "concurrent", records::BASE_TS, None);
    let lineage = LineageId::from(charter.id());
    let mut patches = Vec::with_capacity(n);
    let mut validations = Vec::with_capacity(n);
    let mut parent = None;
    for i in 0..n as u64 {
        let p = records::add_patch(&key, lineage, parent, i, records::BASE_TS + 1 + 2 * i);
        validations.push(records::accept(
            &key,
            lineage,
            p.id(),
            records::BASE_TS + 2 + 2 * i,
        ));
        if !concurrent {
            parent = Some(p.id());
        }
        patches.push(p);
    }
    validations.sort_by_key(Record::id);
    let dir = tempfile::tempdir()?;
    let store = Store::open(&Home::at(dir.path()).store_dir())?;
    store.put(vec![charter])?;
    for chunk in patches.chunks(BUILD_BATCH) {
        store.put(chunk.to_vec())?;
    }
    let before = store.stats().log_entries_read;
    let started = Instant::now();
    store.put(validations)?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let read = store.stats().log_entries_read - before;
    let accepted = store.history(&lineage)?.len();
    ensure!(accepted == n, "{accepted} of {n} accepted");
    store.close()?;
    Ok((ms, read))
}

/// **state**: thousands of concurrent patches accepted at once cost what a linear history does
/// (no undo and replay of the log's suffix per acceptance).
fn concurrent_row(opts: &Opts) -> anyhow::Result<Row> {
    let n = opts.history.min(10_000);
    let (linear_ms, _) = accept_all(opts, n, false)?;
    let (concurrent_ms, read) = accept_all(opts, n, true)?;
    opts.progress(format!(
        "state: {n} concurrent acceptances {concurrent_ms:.0} ms, linear {linear_ms:.0} ms"
    ));
    Ok(Row::info(
        "state",
        format!(
            "accept {n} concurrent patches (one generation) in one put, validations in id order"
        ),
        concurrent_ms,
        "ms",
    )
    .against(
        format!("the same for {n} patches of a linear history"),
        linear_ms,
        "ms",
    )
    .target("≤ 2×", concurrent_ms <= 2.0 * linear_ms)
    .note(format!(
        "log entries read by the engine: {read} (a replay per acceptance would read ~n²/2)"
    )))
}
