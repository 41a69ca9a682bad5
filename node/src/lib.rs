//! `commonsd`, the Commons daemon: it owns the store, runs the network and serves the control
//! socket.
//!
//! Tasks (each bound is a named constant next to its use):
//! - the **main loop** (this module): shutdown signals first, then network events, then the
//!   periodic catch-up timer; it never does store I/O itself;
//! - the **network task** (`commons-net`): the libp2p swarm;
//! - the **storage thread** (`commons-store`): sled;
//! - the **control server** (`control`): one task per CLI connection, bounded;
//! - **workers**: record ingestion, serving peers' sync requests and catch-up rounds, each
//!   bounded by a semaphore.

pub mod blob_queue;
pub mod blobs;
pub mod cli;
pub mod config;
pub mod control;
pub mod downloader;
mod family;
pub mod follows;
mod forget;
mod partial;
mod policy;
pub mod reconcile;
pub mod refused;
pub mod serve;
pub mod service;
mod status;
mod sync;
#[cfg(test)]
mod testing;
mod verify;
mod web;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use commons_core::Record;
use commons_net::bulk::BulkServer;
use commons_net::{NetConfig, NetEvent, PeerId, SyncResponse};
use commons_store::home::Home;
use commons_store::{OpenError, Store};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::config::{Config, Overrides};
use crate::follows::Follows;
use crate::service::Ctx;

/// Gossip records waiting to be stored. They queue while earlier batches are stored, and the
/// next batch takes all of them: one store commit (one flush) for many records, and a patch
/// usually finds its parent in its own batch or already stored. Beyond it records are dropped
/// (and counted in `node status`): the main loop never waits, and catch-up brings what was
/// dropped.
pub const GOSSIP_QUEUE: usize = 8192;
/// Most gossip records ingested as one batch.
pub const GOSSIP_BATCH: usize = 1024;
/// Gossip batches being ingested at once. A batch waits on no peer (content goes to the
/// downloader, missing history to a catch-up), only on the store.
pub const MAX_GOSSIP_BATCHES: usize = 2;
/// A partial blob download that nothing wrote to for this long is removed when the node starts
/// (a download interrupted by a restart resumes long before).
pub const STALE_PARTIAL_AGE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// An outboard without its blob (a crash between the two renames of a write, a damaged blob
/// moved aside) older than this is removed when the node starts; a write renames its outboard
/// a moment before its blob, and nothing writes before the start anyway.
pub const ORPHAN_OUTBOARD_AGE: std::time::Duration = std::time::Duration::from_secs(3600);
/// Peer sync requests served at once.
pub const MAX_SERVE_TASKS: usize = 32;

/// What `commonsd` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--home`.
    pub home: Option<PathBuf>,
    /// Flags over the config file.
    pub overrides: Overrides,
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let home = Home::resolve(opts.home.as_deref())?;
    let identity = home
        .ensure_identity()
        .with_context(|| format!("cannot set up the home {}", home.root().display()))?;
    home.restrict()
        .with_context(|| format!("cannot make the home {} owner-only", home.root().display()))?;
    let config = Config::load(home.root(), &opts.overrides)?;
    let store = Store::open(&home.store_dir()).map_err(|e| match e {
        OpenError::Locked { path } => anyhow::anyhow!(
            "another commonsd is already running with the home {} (its store {} is locked); stop it first or use another --home",
            home.root().display(),
            path.display()
        ),
        other => anyhow::Error::new(other),
    })?;
    // Before any download can start, so none is removed under it.
    let blobs_store = store.blobs().clone();
    let cleaned = tokio::task::spawn_blocking(move || {
        blobs_store.remove_stale_partials(STALE_PARTIAL_AGE)?;
        blobs_store.remove_orphan_outboards(ORPHAN_OUTBOARD_AGE)
    })
    .await?;
    if let Err(e) = cleaned {
        tracing::warn!(target: "commons_node", error = %e, "cannot clean stale partial downloads and orphan outboards");
    }
    let socket = control::socket_path(home.root());
    let listener = control::bind(&socket)?;
    let follows = Follows::load(home.root())?;
    let blocked = follows::BlockList::load(home.root())?;

    let mut net_config = NetConfig::new(identity.node.seed());
    net_config.listen = parse_addrs(&config.listen, "listen")?;
    net_config.bootstrap = parse_addrs(&config.bootstrap, "bootstrap")?;
    net_config.mdns = config.mdns;
    net_config.kademlia = config.kademlia;
    if std::env::var("COMMONS_TEST_FAST").is_ok_and(|v| v == "1") {
        {
            // Loopback tests: every peer shares 127.0.0.1, and quick heartbeats keep them short.
            net_config.ip_colocation_factor_threshold = 1000.0;
            net_config.heartbeat = std::time::Duration::from_millis(200);
            net_config.heartbeat_initial_delay = std::time::Duration::from_millis(100);
            net_config.max_connections_per_ip = 1000;
        }
    }
    net_config.rates = config.rates;
    if let Some(n) = config.max_connections_per_ip {
        net_config.max_connections_per_ip = n;
    }
    let bulk = match config.bulk {
        true => Some(bind_bulk(&net_config.listen, config.bulk_port, config.bulk_clear).await?),
        false => None,
    };
    let web = match config.web {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot serve the web explorer on {addr}; choose another address with --web ADDR (or `web` in config.toml), or turn it off with --no-web")
        })?),
        None => None,
    };
    let (net, mut events, net_task) = commons_net::spawn(net_config)?;
    let status = net.status().await?;
    println!("commonsd {}", env!("CARGO_PKG_VERSION"));
    println!("home: {}", home.root().display());
    println!("peer id: {}", status.peer_id);
    println!("node key: {}", identity.node.public());
    println!("author: {}", identity.author.public());
    println!("control socket: {}", socket.display());
    let activity = Arc::new(commons_web::activity::Activity::default());
    let web_url = match web {
        Some(listener) => Some(web::start(
            listener,
            store.clone(),
            net.clone(),
            activity.clone(),
        )?),
        None => None,
    };
    let (downloads, downloads_inbox) = downloader::Downloads::new();
    let bulk_server = match bulk {
        Some((server, listener)) => {
            println!("bulk blob port: {}", server.port());
            let source = Arc::new(serve::StoreSource {
                store: store.clone(),
                downloads: downloads.clone(),
            });
            tokio::spawn(server.clone().run(listener, source, net.clone()));
            Some(server)
        }
        None => None,
    };

    let ctx = Ctx {
        store: store.clone(),
        downloads,
        refusals: Arc::default(),
        net: net.clone(),
        follows,
        blocked: blocked.clone(),
        home: home.root().to_owned(),
        node_key: identity.node.public(),
        catchups: Arc::new(Semaphore::new(service::MAX_CATCHUPS)),
        blobs: Arc::new(blobs::Blobs::new(
            config.blobs,
            config.bulk,
            config.bulk_clear,
            bulk_server,
        )),
        reconcile: Arc::new(reconcile::Reconciliation::default()),
        catching_up: Arc::default(),
        disk_usage: Arc::default(),
        catch_up_chunk: catch_up_chunk(),
        web: web_url,
        activity,
    };
    for entry in blocked.list() {
        net.block(entry.0, true).await?;
    }
    follow_own_commons(&ctx, identity.author.public()).await;
    for l in ctx.follows.list() {
        ctx.subscribe_family(l).await;
    }

    tokio::spawn(downloader::run(ctx.clone(), downloads_inbox));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let control = tokio::spawn(control::serve(listener, ctx.clone(), shutdown_rx));
    let (gossip, gossip_rx) = mpsc::channel(GOSSIP_QUEUE);
    tokio::spawn(ingest_gossip(ctx.clone(), gossip_rx));
    let serve_permits = Arc::new(Semaphore::new(MAX_SERVE_TASKS));
    // One stream per signal for the daemon's whole life: a signal that arrives while the loop is
    // busy in an arm is kept until the next turn (a `ctrl_c()` future made anew each turn would
    // not be listening then).
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(config.sync_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            biased;
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            event = events.recv() => match event {
                Some(event) => on_event(&ctx, event, &gossip, &serve_permits, &peer_id_str(&status)),
                None => break,
            },
            _ = tick.tick() => ctx.spawn_catch_up(None),
        }
    }

    tracing::info!(target: "commons_node", "shutting down");
    let _ = shutdown_tx.send(true);
    let _ = control.await;
    net.shutdown();
    let _ = net_task.await;
    store.close()?;
    let _ = std::fs::remove_file(&socket);
    println!("stopped");
    Ok(())
}

/// Commons founded with this home's author key (perhaps before the daemon first ran) are
/// followed, as `create` and `fork` through the daemon would have done. Start-up reads only the
/// lineage list and each charter, not the summaries (which walk the accepted histories).
async fn follow_own_commons(ctx: &Ctx, author: commons_core::PublicKey) {
    let store = ctx.store.clone();
    let own = tokio::task::spawn_blocking(move || -> Result<Vec<_>, commons_store::StoreError> {
        let mut own = Vec::new();
        for (lineage, _) in store.lineage_families()? {
            if store
                .get(&lineage.into())?
                .is_some_and(|charter| charter.author() == author)
            {
                own.push(lineage);
            }
        }
        Ok(own)
    });
    let Ok(Ok(own)) = own.await else {
        return;
    };
    for lineage in own {
        if let Err(e) = ctx.follows.add_async(lineage).await {
            tracing::warn!(target: "commons_node", error = %format!("{e:#}"), "cannot save follows");
        }
    }
}

fn peer_id_str(status: &commons_net::NetStatus) -> String {
    status.peer_id.to_string()
}

/// Binds the bulk blob port on the IP address of the first listen address that has one.
async fn bind_bulk(
    listen: &[commons_net::Multiaddr],
    port: u16,
    allow_clear: bool,
) -> anyhow::Result<(Arc<BulkServer>, tokio::net::TcpListener)> {
    let ip = listen
        .iter()
        .find_map(commons_net::bulk::ip_of)
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let addr = std::net::SocketAddr::new(ip, port);
    BulkServer::bind(addr, allow_clear).await.with_context(|| {
        format!("cannot listen for bulk blob transfers on {addr}; choose another bulk_port in config.toml, or turn them off with --no-bulk")
    })
}

fn parse_addrs(list: &[String], what: &str) -> anyhow::Result<Vec<commons_net::Multiaddr>> {
    list.iter()
        .map(|a| {
            a.parse().with_context(|| {
                format!("{what} address `{a}` is not a multiaddr (e.g. /ip4/127.0.0.1/tcp/0)")
            })
        })
        .collect()
}

/// One network event. Never waits: what takes time runs in a task, and what finds its queue
/// full is dropped (and counted) or answered `NotFound`.
fn on_event(
    ctx: &Ctx,
    event: NetEvent,
    gossip: &mpsc::Sender<(PeerId, Record)>,
    serve: &Arc<Semaphore>,
    peer_id: &str,
) {
    match event {
        NetEvent::ListeningOn(addr) => {
            println!("listening on {addr}/p2p/{peer_id}");
        }
        NetEvent::PeerConnected(peer) => {
            tracing::info!(target: "commons_node", %peer, "peer connected");
            ctx.downloads.peer_connected();
            ctx.spawn_catch_up(Some(peer));
        }
        NetEvent::PeerDisconnected(peer) => {
            tracing::debug!(target: "commons_node", %peer, "peer disconnected");
        }
        NetEvent::PeerFollows { peer, lineage } => {
            tracing::debug!(target: "commons_node", %peer, %lineage, "peer follows");
            if ctx.follows.contains(&lineage) {
                ctx.spawn_catch_up(Some(peer));
            }
        }
        NetEvent::PeerBanned(peer) => {
            tracing::warn!(target: "commons_node", %peer, "peer banned");
            ctx.blobs.close_peer(&peer);
        }
        NetEvent::Record { from, record, .. } => match gossip.try_send((from, *record)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                ctx.refused("queue full", 1);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!(target: "commons_node", "gossip ingestion stopped");
            }
        },
        NetEvent::Request {
            peer,
            request,
            reply,
        } => {
            let Ok(permit) = serve.clone().try_acquire_owned() else {
                // Every serving slot is taken: the peer asks again later.
                reply.respond(SyncResponse::NotFound);
                return;
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let response = serve::answer(&ctx, peer, request).await;
                tracing::trace!(target: "commons_node::serve", %peer, "answered");
                reply.respond(response);
                drop(permit);
            });
        }
    }
}

/// Stores gossip records in batches: each batch takes every record queued (up to
/// [`GOSSIP_BATCH`]) when a batch slot frees up, so batches grow with the load.
async fn ingest_gossip(ctx: Ctx, mut rx: mpsc::Receiver<(PeerId, Record)>) {
    let slots = Arc::new(Semaphore::new(MAX_GOSSIP_BATCHES));
    let mut queued = Vec::with_capacity(GOSSIP_BATCH);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        if rx.recv_many(&mut queued, GOSSIP_BATCH).await == 0 {
            return;
        }
        let mut by_peer: BTreeMap<PeerId, Vec<Record>> = BTreeMap::new();
        for (peer, record) in queued.drain(..) {
            by_peer.entry(peer).or_default().push(record);
        }
        let ctx = ctx.clone();
        tokio::spawn(async move {
            for (peer, records) in by_peer {
                ctx.ingest_gossip(peer, records).await;
            }
            drop(slot);
        });
    }
}

/// Records per store commit of a catch-up: [`service::CATCH_UP_CHUNK`], or
/// `COMMONS_TEST_CATCH_UP_CHUNK` (the end-to-end tests set it small, so that their catch-ups of
/// tens of records run the chunked pipeline of `Ctx::store_window`).
fn catch_up_chunk() -> usize {
    std::env::var("COMMONS_TEST_CATCH_UP_CHUNK")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(service::CATCH_UP_CHUNK)
}
