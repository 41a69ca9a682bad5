//! The scenarios that run real `commonsd` processes: memory, network ingest, propagation.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use commons_core::{LineageId, Record};
use commons_rpc::Request;

use crate::daemon::{Client, Daemon, find_commonsd};
use crate::{Opts, Row, Shared, Spread, records, spread};

/// How long a daemon is left alone before its idle RSS is read.
const IDLE_SETTLE: Duration = Duration::from_secs(3);

/// **memory**: RSS of an idle `commonsd` holding `records` records, against the RSS of an idle
/// `commonsd` with an empty store started the same way.
pub fn memory(opts: &Opts, shared: &mut Shared) -> anyhow::Result<Vec<Row>> {
    let bin = find_commonsd(opts.commonsd.as_deref())?;
    if shared.ingest_home.is_none() {
        opts.progress("memory: filling a store first (the ingest scenario)");
        crate::store::ingest(opts, shared)?;
    }
    let (home, held) = shared.ingest_home.take().context("no filled home")?;
    let empty = Daemon::start(&bin, tempfile::tempdir()?, &[], false)?;
    let full = Daemon::start(&bin, home, &[], false)?;
    // Idle: nothing asks anything of either daemon while this sleeps; it is the measured state.
    // First right after start (nothing asked yet), then after one status request, which
    // counts the records (what `commons status` does).
    std::thread::sleep(IDLE_SETTLE);
    let sample = |d: &Daemon| -> anyhow::Result<(u64, u64)> {
        let (mut rss, mut hwm) = (0, 0);
        for _ in 0..5 {
            let (r, h) = d.rss_kib()?;
            rss = rss.max(r);
            hwm = hwm.max(h);
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok((rss, hwm))
    };
    let (rss_started, hwm_started) = sample(&full)?;
    let status = full.client()?.status()?;
    ensure!(
        status.records == held,
        "the daemon holds {} records, expected {held}",
        status.records
    );
    empty.client()?.status()?;
    std::thread::sleep(IDLE_SETTLE);
    let (rss_full, hwm_full) = sample(&full)?;
    let (rss_empty, _) = sample(&empty)?;
    full.stop();
    empty.stop();
    let mib = |kib: u64| kib as f64 / 1024.0;
    opts.progress(format!(
        "memory: {:.1} MiB with {held} records, {:.1} MiB empty",
        mib(rss_full),
        mib(rss_empty)
    ));
    Ok(vec![
        Row::info(
            "memory",
            format!("commonsd VmRSS idle, {held} records"),
            mib(rss_full),
            "MiB",
        )
        .against("commonsd VmRSS idle, empty store", mib(rss_empty), "MiB")
        .target("≤ 100 MB", rss_full as f64 * 1024.0 <= 100e6)
        .note(format!(
            "after one NodeStatus; idle right after start, before any request: {:.1} MiB (peak {:.1}); peak after the request {:.1} MiB",
            mib(rss_started),
            mib(hwm_started),
            mib(hwm_full)
        )),
    ])
}

/// **net-ingest**: records put into one `commonsd` arriving by gossip at a second one, per
/// second, against raw single-core verification of the same signatures.
pub fn net_ingest(opts: &Opts) -> anyhow::Result<Vec<Row>> {
    let bin = find_commonsd(opts.commonsd.as_deref())?;
    let n = opts.net_records;
    opts.progress(format!("signing {n} records"));
    // A linear history, as a commons mostly is: each patch's parent is the one before, and each
    // is accepted by the maintainer. (Many patches at one generation cost more: see
    // docs/benchmarks.md, "net-ingest".)
    let history = records::linear_history(opts.seed + 40, n.div_ceil(2) + 1, &|_| {});
    let charter = history.charter;
    let lineage = LineageId::from(charter.id());
    let all = &history.records[..n + 2];
    let (warm, records) = all.split_at(2);
    let records: Vec<Record> = records.to_vec();

    let sigs = records::raw_signatures(&records);
    let started = Instant::now();
    let ok = records::verify_all(&sigs);
    let reference = n as f64 / started.elapsed().as_secs_f64();
    ensure!(ok == n, "the reference failed");

    let d1 = Daemon::start(&bin, tempfile::tempdir()?, &[], true)?;
    // The receiver stores records without waiting for their blobs (nobody has them: this
    // measures records; `blobs` and `catchup` measure blob transfer).
    let home2 = tempfile::tempdir()?;
    std::fs::write(home2.path().join("config.toml"), "blobs = \"lazy\"\n")?;
    let d2 = Daemon::start(&bin, home2, std::slice::from_ref(&d1.addr), true)?;
    let mut c1 = d1.client()?;
    let mut c2 = d2.client()?;
    c1.put(std::slice::from_ref(&charter))?;
    let poll = Duration::from_millis(opts.poll_ms.max(1));
    ensure!(
        c2.wait_until(
            Duration::from_secs(30),
            poll,
            |c| Ok(c.status()?.peers >= 1)
        )?,
        "the daemons did not connect"
    );
    c2.call(&Request::Follow { lineage })?;
    ensure!(
        c2.wait_until(Duration::from_secs(30), poll, |c| c.has(charter.id()))?,
        "the follower did not get the charter"
    );
    // Warm-up: one patch and its validation, so that the gossip mesh exists before timing.
    c1.put(warm)?;
    ensure!(
        c2.wait_until(Duration::from_secs(60), poll, |c| c.has(warm[1].id()))?,
        "the warm-up records did not arrive"
    );
    let base = c2.status()?.records;
    opts.progress(format!("net-ingest: sending {n} records"));

    let started = Instant::now();
    let send_batch = opts.batch.clamp(1, 500);
    let pusher = std::thread::spawn(move || -> anyhow::Result<Duration> {
        for chunk in records.chunks(send_batch) {
            c1.put(chunk)?;
        }
        Ok(started.elapsed())
    });
    let deadline = Duration::from_secs(120) + Duration::from_millis(n as u64 * 5);
    let mut held = base;
    while held < base + n as u64 && started.elapsed() < deadline {
        std::thread::sleep(poll);
        held = c2.status()?.records;
    }
    let elapsed = started.elapsed();
    let sender_time = pusher
        .join()
        .map_err(|_| anyhow!("the sending thread panicked"))??;
    let arrived = held - base;
    let rate = arrived as f64 / elapsed.as_secs_f64();
    opts.progress(format!(
        "net-ingest: {arrived}/{n} in {:.1} s ({rate:.0}/s); the sender stored them in {:.1} s",
        elapsed.as_secs_f64(),
        sender_time.as_secs_f64()
    ));
    d2.stop();
    d1.stop();
    let ratio = rate / reference;
    let complete = arrived == n as u64;
    let mut note = format!(
        "a linear history: half patches (each the child of the one before, one file each), half their Accepts; put to node 1 in batches of {send_batch} over the control socket; node 1 had stored all in {:.1} s ({:.0}/s); polled every {} ms",
        sender_time.as_secs_f64(),
        n as f64 / sender_time.as_secs_f64(),
        poll.as_millis()
    );
    if !complete {
        note = format!("TIMEOUT: only {arrived} of {n} arrived; {note}");
    }
    Ok(vec![
        Row::info(
            "net-ingest",
            format!("{n} records by gossip, stored by node 2"),
            rate,
            "rec/s",
        )
        .against("verify_strict/s, 1 core", reference, "sig/s")
        .target("≥ 0.3×", complete && ratio >= 0.3)
        .note(note),
    ])
}

/// **propagation**: records published at a fixed rate on one of `nodes` daemons in a random
/// mesh; time until every daemon holds each one.
pub fn propagation(opts: &Opts) -> anyhow::Result<Vec<Row>> {
    let bin = find_commonsd(opts.commonsd.as_deref())?;
    let n = opts.nodes.max(2);
    let m = opts.messages.max(1);
    let (edges, boot_edges) = crate::random_mesh(n, opts.seed);
    opts.progress(format!(
        "propagation: starting {n} daemons, {} links",
        edges.len()
    ));
    let mut daemons: Vec<Daemon> = Vec::with_capacity(n);
    for i in 0..n {
        let bootstrap: Vec<String> = edges[..boot_edges]
            .iter()
            .filter(|(a, _)| *a == i)
            .map(|(_, b)| daemons[*b].addr.clone())
            .collect();
        daemons.push(Daemon::start(
            &bin,
            tempfile::tempdir()?,
            &bootstrap,
            false,
        )?);
    }
    for (a, b) in &edges[boot_edges..] {
        daemons[*a].client()?.call(&Request::Connect {
            addr: daemons[*b].addr.clone(),
        })?;
    }
    let (charter, all) = records::flat_records(opts.seed + 50, "propagation", m + 2, 0);
    let (warm, records) = all.split_at(2);
    // Every daemon gets the charter from its own control socket (and so follows the lineage).
    let poll = Duration::from_millis(opts.poll_ms.max(1));
    let mut clients: Vec<Client> = daemons
        .iter()
        .map(Daemon::client)
        .collect::<Result<_, _>>()?;
    for c in clients.iter_mut() {
        c.put(std::slice::from_ref(&charter))?;
    }
    for (i, c) in clients.iter_mut().enumerate() {
        ensure!(
            c.wait_until(
                Duration::from_secs(30),
                poll,
                |c| Ok(c.status()?.peers >= 1)
            )?,
            "daemon {i} has no peer"
        );
    }
    // Warm-up until a record reaches everyone: the gossip meshes exist.
    clients[0].put(warm)?;
    for (i, c) in clients.iter_mut().enumerate() {
        ensure!(
            c.wait_until(Duration::from_secs(60), poll, |c| c.has(warm[1].id()))?,
            "the warm-up record did not reach daemon {i}"
        );
    }
    opts.progress(format!(
        "propagation: publishing {m} records at {}/s",
        opts.rate
    ));

    let ids: Vec<_> = records.iter().map(Record::id).collect();
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::with_capacity(m)));
    let publisher = {
        let sent = sent.clone();
        let records = records.to_vec();
        let mut c0 = clients.remove(0);
        let period = Duration::from_secs_f64(1.0 / opts.rate.max(0.001));
        std::thread::spawn(move || -> anyhow::Result<Client> {
            let start = Instant::now();
            for (k, r) in records.iter().enumerate() {
                let at = start + period * k as u32;
                if let Some(wait) = at.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                sent.lock()
                    .map_err(|_| anyhow!("poisoned"))?
                    .push(Instant::now());
                c0.put(std::slice::from_ref(r))?;
            }
            Ok(c0)
        })
    };
    let horizon =
        Duration::from_secs_f64(m as f64 / opts.rate.max(0.001)) + Duration::from_secs(30);
    // One polling thread per daemon but the publisher, each with its own connection. A record
    // is polled only once published, so an idle daemon costs nothing.
    let pollers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let sent = sent.clone();
            let ids = ids.clone();
            std::thread::spawn(move || -> anyhow::Result<Vec<Option<Instant>>> {
                let start = Instant::now();
                let mut arrived: Vec<Option<Instant>> = vec![None; ids.len()];
                let mut done = 0;
                while done < ids.len() && start.elapsed() < horizon {
                    let published = sent.lock().map_err(|_| anyhow!("poisoned"))?.len();
                    for k in 0..published {
                        if arrived[k].is_none() && c.has(ids[k])? {
                            arrived[k] = Some(Instant::now());
                            done += 1;
                        }
                    }
                    std::thread::sleep(poll);
                }
                Ok(arrived)
            })
        })
        .collect();
    let mut arrivals = Vec::new();
    for p in pollers {
        arrivals.push(p.join().map_err(|_| anyhow!("a poller panicked"))??);
    }
    publisher
        .join()
        .map_err(|_| anyhow!("the publisher panicked"))??;
    let sent = sent.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    for d in daemons {
        d.stop();
    }
    let Spread {
        p50,
        p99,
        first50,
        missing,
    } = spread(sent.iter().enumerate().map(|(k, t0)| {
        arrivals
            .iter()
            .map(|a| a[k].map(|t| t.duration_since(*t0).as_secs_f64() * 1e3))
            .collect()
    }));
    opts.progress(format!(
        "propagation: p50 {p50:.1} ms, p99 {p99:.1} ms, first hop p50 {first50:.1} ms, {missing} missing"
    ));
    let note = format!(
        "{n} daemons, {} links (avg degree {:.1}), Kademlia off; from Put on node 0 to Get true on the last node; polled every {} ms, so figures are up to {} ms late; {missing} of {m} never reached all within the horizon",
        edges.len(),
        2.0 * edges.len() as f64 / n as f64,
        poll.as_millis(),
        poll.as_millis() + 1,
    );
    Ok(vec![
        Row::info(
            "propagation",
            format!("p99, {m} records at {}/s, all {n} nodes", opts.rate),
            p99,
            "ms",
        )
        .against("p50 first node to hold it", first50, "ms")
        .target("≤ 100 ms", p99 <= 100.0)
        .note(note),
        Row::info("propagation", "p50, all nodes", p50, "ms").against(
            "p50 first node to hold it",
            first50,
            "ms",
        ),
    ])
}
