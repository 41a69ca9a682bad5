//! **scale**: propagation through many network stacks (`commons_net::spawn`) in one process and
//! one tokio runtime, connected in a random mesh over 127.0.0.1 TCP. No store and no daemon:
//! what is measured is gossip with validation (decode and verify at every hop).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use commons_core::{LineageId, Record, RecordId};
use commons_net::{Multiaddr, NetConfig, NetEvent, NetHandle, Published};
use tokio::sync::mpsc;

use crate::{Opts, Row, Spread, records, spread};

/// Arrivals buffered between the nodes' event loops and the collector.
const ARRIVALS_CHANNEL: usize = 65_536;

/// Runs the scenario on a fresh runtime.
pub fn scale(opts: &Opts) -> anyhow::Result<Vec<Row>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(opts))
}

async fn run(opts: &Opts) -> anyhow::Result<Vec<Row>> {
    let n = opts.scale_nodes.max(2);
    let m = opts.messages.max(1);
    let (charter, all) = records::flat_records(opts.seed + 60, "scale", m + 2, 0);
    let lineage = LineageId::from(charter.id());
    let (warm, records) = all.split_at(2);
    let (edges, _) = crate::random_mesh(n, opts.seed + 1);
    opts.progress(format!(
        "scale: starting {n} network stacks, {} links",
        edges.len()
    ));

    let (arrive_tx, mut arrive_rx) = mpsc::channel::<(usize, RecordId, Instant)>(ARRIVALS_CHANNEL);
    let mut handles: Vec<NetHandle> = Vec::with_capacity(n);
    let mut addrs: Vec<Multiaddr> = Vec::with_capacity(n);
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(opts.seed * 1_000_003 + i as u64 + 1).to_le_bytes());
        seed[31] = 0xbe;
        let (handle, mut events, task) = commons_net::spawn(loopback_config(seed)?)?;
        let addr = loop {
            match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                Ok(Some(NetEvent::ListeningOn(a))) => break a,
                Ok(Some(_)) => continue,
                _ => bail!("stack {i} did not listen"),
            }
        };
        let peer = handle.peer_id();
        addrs.push(format!("{addr}/p2p/{peer}").parse()?);
        let tx = arrive_tx.clone();
        // Drains the node's events: a record is an arrival; sync requests are refused (there is
        // no store behind these stacks).
        tasks.push(tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if let NetEvent::Record { record, .. } = ev
                    && tx.send((i, record.id(), Instant::now())).await.is_err()
                {
                    break;
                }
            }
        }));
        tasks.push(task);
        handles.push(handle);
    }
    drop(arrive_tx);
    for (a, b) in &edges {
        handles[*a].dial(addrs[*b].clone()).await?;
    }
    for h in &handles {
        h.follow(lineage).await?;
    }
    // Warm-up: publish until one record reaches every other stack (the meshes exist).
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen: HashMap<RecordId, Vec<bool>> = HashMap::new();
    let mut ready = false;
    'warm: for r in warm.iter().cycle() {
        if Instant::now() > deadline {
            break;
        }
        let _: Published = handles[0].publish(r).await.map_err(|e| anyhow!("{e}"))?;
        let until = Instant::now() + Duration::from_secs(2);
        while let Ok(Some((node, id, _))) =
            tokio::time::timeout_at(until.into(), arrive_rx.recv()).await
        {
            let s = seen.entry(id).or_insert_with(|| vec![false; n]);
            s[node] = true;
            if s[1..].iter().all(|x| *x) {
                ready = true;
                break 'warm;
            }
        }
    }
    if !ready {
        bail!("no warm-up record reached all {n} stacks within 90 s");
    }
    opts.progress(format!("scale: publishing {m} records at {}/s", opts.rate));

    let period = Duration::from_secs_f64(1.0 / opts.rate.max(0.001));
    let publisher = {
        let h = handles[0].clone();
        let records: Vec<Record> = records.to_vec();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut sent = Vec::with_capacity(records.len());
            for (k, r) in records.iter().enumerate() {
                tokio::time::sleep_until(start + period * k as u32).await;
                sent.push((r.id(), Instant::now()));
                let _ = h.publish(r).await;
            }
            sent
        })
    };
    let want: std::collections::HashSet<RecordId> = records.iter().map(Record::id).collect();
    let horizon = Instant::now() + period * m as u32 + Duration::from_secs(20);
    let mut arrivals: HashMap<RecordId, Vec<Option<Instant>>> = HashMap::new();
    let mut complete = 0;
    while complete < m {
        match tokio::time::timeout_at(horizon.into(), arrive_rx.recv()).await {
            Ok(Some((node, id, at))) if want.contains(&id) => {
                let a = arrivals.entry(id).or_insert_with(|| vec![None; n]);
                if a[node].is_none() {
                    a[node] = Some(at);
                    if a[1..].iter().all(Option::is_some) {
                        complete += 1;
                    }
                }
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let sent = publisher.await.context("the publisher failed")?;
    for h in &handles {
        h.shutdown();
    }
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }

    let Spread {
        p50,
        p99,
        first50,
        missing,
    } = spread(sent.iter().map(|(id, t0)| {
        let a = arrivals.get(id);
        (1..n)
            .map(|i| {
                a.and_then(|a| a[i])
                    .map(|t| t.duration_since(*t0).as_secs_f64() * 1e3)
            })
            .collect()
    }));
    opts.progress(format!(
        "scale: p50 {p50:.1} ms, p99 {p99:.1} ms, first hop {first50:.1} ms, {missing} missing"
    ));
    let note = format!(
        "{n} commons-net stacks in one process (one tokio runtime), {} links, no store; time to NetEvent::Record on every stack; {missing} of {m} never reached all",
        edges.len()
    );
    Ok(vec![
        Row::info(
            "scale",
            format!("p99, {m} records at {}/s, {n} stacks", opts.rate),
            p99,
            "ms",
        )
        .against("p50 first stack to get it", first50, "ms")
        .note(note),
        Row::info("scale", format!("p50, {n} stacks"), p50, "ms").against(
            "p50 first stack to get it",
            first50,
            "ms",
        ),
    ])
}

/// A network stack's configuration for the in-process scenarios: 127.0.0.1 only, no DHT, no
/// mDNS, quick heartbeats, and every peer allowed on one address (they all share loopback).
pub fn loopback_config(seed: [u8; 32]) -> anyhow::Result<NetConfig> {
    let mut cfg = NetConfig::new(seed);
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    cfg.kademlia = false;
    cfg.mdns = false;
    cfg.ip_colocation_factor_threshold = 1000.0;
    cfg.heartbeat = Duration::from_millis(200);
    cfg.heartbeat_initial_delay = Duration::from_millis(100);
    Ok(cfg)
}
