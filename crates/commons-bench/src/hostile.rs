//! **hostile**: propagation between two honest `commonsd` processes, quiet and then while a
//! third peer floods the receiver with valid patches whose content it withholds (it accepts
//! every sync request and never answers, so each request for that content hangs until the
//! asker's timeout). Both phases run in the same run, with the same records and rate; the
//! target is the issue's: the flooded p99 at most 1.5× the quiet p99.
//!
//! The withholding peer is a real libp2p stack of ours (`commons_net::spawn`) in this process,
//! whose node side holds every request's responder forever.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure};
use commons_core::{BlobHash, Body, Change, LineageId, Patch, Record};
use commons_net::NetEvent;

use crate::daemon::{Client, Daemon, find_commonsd};
use crate::{Opts, Row, records};

/// Patches of the flood's first burst.
pub const FLOOD_BURST: usize = 300;
/// Flood patches per second after the burst, while the flooded phase lasts.
pub const FLOOD_RATE: f64 = 50.0;

/// A patch by a fresh key, creating a file whose content nobody holds.
fn flood_patch(lineage: LineageId, n: u64) -> anyhow::Result<Record> {
    let key = records::key(1_000_000 + n);
    Ok(Record::sign(
        &key,
        records::BASE_TS + n,
        Body::Patch(Patch {
            lineage,
            parents: vec![],
            changes: vec![Change {
                path: format!("flood/{n}.bin"),
                before: None,
                after: Some(BlobHash::of(format!("withheld {n}").as_bytes())),
            }],
            message: "flood".into(),
        }),
    )?)
}

/// Publishes `records` on `from` at `rate` and returns, for each, the milliseconds until `to`
/// held it (`None`: not within the horizon).
fn propagate(
    from: Client,
    to: &mut Client,
    records: &[Record],
    rate: f64,
    poll: Duration,
) -> anyhow::Result<Vec<Option<f64>>> {
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let publisher = {
        let (sent, records, mut from) = (sent.clone(), records.to_vec(), from);
        std::thread::spawn(move || -> anyhow::Result<()> {
            let start = Instant::now();
            for (k, r) in records.iter().enumerate() {
                if let Some(wait) =
                    (start + period * k as u32).checked_duration_since(Instant::now())
                {
                    std::thread::sleep(wait);
                }
                sent.lock()
                    .map_err(|_| anyhow!("poisoned"))?
                    .push(Instant::now());
                from.put(std::slice::from_ref(r))?;
            }
            Ok(())
        })
    };
    let horizon = period * records.len() as u32 + Duration::from_secs(30);
    let start = Instant::now();
    let mut arrived: Vec<Option<f64>> = vec![None; records.len()];
    let mut done = 0;
    while done < records.len() && start.elapsed() < horizon {
        let published: Vec<Instant> = sent.lock().map_err(|_| anyhow!("poisoned"))?.clone();
        for (k, t0) in published.iter().enumerate() {
            if arrived[k].is_none() && to.has(records[k].id())? {
                arrived[k] = Some(t0.elapsed().as_secs_f64() * 1e3);
                done += 1;
            }
        }
        std::thread::sleep(poll);
    }
    publisher
        .join()
        .map_err(|_| anyhow!("the publisher panicked"))??;
    Ok(arrived)
}

/// The `q` quantile of arrival times (a record that never arrived counts as infinitely late),
/// and how many never arrived.
fn quantile(times: &[Option<f64>], q: f64) -> (f64, usize) {
    let mut v: Vec<f64> = times.iter().map(|t| t.unwrap_or(f64::INFINITY)).collect();
    v.sort_by(f64::total_cmp);
    let missing = times.iter().filter(|t| t.is_none()).count();
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    (v[i], missing)
}

/// The scenario.
pub fn run(opts: &Opts) -> anyhow::Result<Vec<Row>> {
    let bin = find_commonsd(opts.commonsd.as_deref())?;
    let m = opts.messages.max(10);
    let poll = Duration::from_millis(opts.poll_ms.max(1));
    let a = Daemon::start(&bin, tempfile::tempdir()?, &[], false)?;
    let b = Daemon::start(
        &bin,
        tempfile::tempdir()?,
        std::slice::from_ref(&a.addr),
        false,
    )?;
    let (charter, all) = records::flat_records(opts.seed + 70, "hostile", 2 * m + 2, 0);
    let lineage = LineageId::from(charter.id());
    let (warm, honest) = all.split_at(2);
    let (mut ca, mut cb) = (a.client()?, b.client()?);
    for c in [&mut ca, &mut cb] {
        c.put(std::slice::from_ref(&charter))?;
        ensure!(
            c.wait_until(
                Duration::from_secs(30),
                poll,
                |c| Ok(c.status()?.peers >= 1)
            )?,
            "the honest daemons did not connect"
        );
    }
    cb.put(warm)?;
    ensure!(
        ca.wait_until(Duration::from_secs(60), poll, |c| c.has(warm[1].id()))?,
        "the warm-up record did not cross"
    );

    opts.progress(format!(
        "hostile: quiet phase, {m} records at {}/s",
        opts.rate
    ));
    let quiet = propagate(b.client()?, &mut ca, &honest[..m], opts.rate, poll)?;

    // The withholding peer joins A and floods.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let flood_records: Vec<Record> = (0..(FLOOD_BURST as u64
        + (FLOOD_RATE * (m as f64 / opts.rate.max(0.001) + 5.0)) as u64))
        .map(|n| flood_patch(lineage, n))
        .collect::<Result<_, _>>()?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood_sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a_addr: commons_net::Multiaddr = a.addr.parse()?;
    let flooder = {
        let (stop, flood_sent) = (stop.clone(), flood_sent.clone());
        runtime.spawn(async move {
            let cfg = crate::scale::loopback_config([0x66; 32])?;
            let (net, mut events, _task) = commons_net::spawn(cfg)?;
            net.dial(a_addr).await?;
            net.follow(lineage).await?;
            // Holds every request's responder: asked for content, it never answers.
            let held = tokio::spawn(async move {
                let mut held = Vec::new();
                while let Some(ev) = events.recv().await {
                    if let NetEvent::Request { reply, .. } = ev {
                        held.push(reply);
                    }
                }
                held.len()
            });
            // Until A takes its records (the mesh exists), then the burst, then a steady rate.
            let deadline = Instant::now() + Duration::from_secs(30);
            while !matches!(
                net.publish(&flood_records[0]).await,
                Ok(commons_net::Published::Sent)
            ) {
                if Instant::now() > deadline {
                    bail!("the flooding peer never reached A's mesh");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let period = Duration::from_secs_f64(1.0 / FLOOD_RATE);
            for (k, r) in flood_records.iter().enumerate().skip(1) {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                if k > FLOOD_BURST {
                    tokio::time::sleep(period).await;
                }
                let _ = net.publish(r).await;
                flood_sent.store(k + 1, std::sync::atomic::Ordering::Relaxed);
            }
            net.shutdown();
            held.abort();
            anyhow::Ok(())
        })
    };
    ensure!(
        ca.wait_until(Duration::from_secs(60), poll, |c| {
            Ok(c.status()?.blobs.queued as usize >= FLOOD_BURST / 2)
        })?,
        "the flood did not reach A"
    );
    opts.progress("hostile: flooded phase");
    let flooded = propagate(b.client()?, &mut ca, &honest[m..], opts.rate, poll)?;
    let status = ca.status()?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    runtime.block_on(flooder)??;
    drop(runtime);
    a.stop();
    b.stop();

    let ((quiet99, quiet_missing), (flood99, flood_missing)) =
        (quantile(&quiet, 0.99), quantile(&flooded, 0.99));
    let (quiet50, flood50) = (quantile(&quiet, 0.5).0, quantile(&flooded, 0.5).0);
    let sent = flood_sent.load(std::sync::atomic::Ordering::Relaxed);
    opts.progress(format!(
        "hostile: p99 quiet {quiet99:.1} ms, flooded {flood99:.1} ms; p50 quiet {quiet50:.1} ms, flooded {flood50:.1} ms ({sent} flood patches, {} blobs queued on A)",
        status.blobs.queued
    ));
    let ratio = flood99 / quiet99.max(f64::MIN_POSITIVE);
    Ok(vec![
        Row::info(
            "hostile",
            format!("propagation p99 B→A, {m} records at {}/s, while a peer floods A", opts.rate),
            flood99,
            "ms",
        )
        .against("the same records without the flood", quiet99, "ms")
        .target("≤ 1.5×", ratio <= 1.5 && flood_missing == 0)
        .note(format!(
            "from Put on B to Get true on A, polled every {} ms; the flood: {sent} valid patches by fresh keys naming content the flooder withholds ({FLOOD_BURST} at once, then {FLOOD_RATE}/s), {} of their blobs queued on A at the end; {quiet_missing} quiet and {flood_missing} flooded records never arrived",
            poll.as_millis(),
            status.blobs.queued
        )),
        Row::info(
            "hostile",
            "propagation p50 B→A, while a peer floods A",
            flood50,
            "ms",
        )
        .against("the same records without the flood", quiet50, "ms"),
    ])
}
