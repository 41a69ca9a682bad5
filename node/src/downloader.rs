//! The background blob downloader: drives [`BlobQueue`] with real time, the network and the
//! store. Ingest never waits for content; it lists what it lacks in the store
//! (`Store::want_blobs`) and tells the downloader ([`Downloads::want`]), which fetches it in
//! jobs, fairly between peers and lineages (see `blob_queue.rs`).
//!
//! The downloader's task is the only owner of the queue. Its inputs: wants from ingest (a
//! bounded channel; a want that does not fit is still in the store's list), peer connections,
//! the end of a job, the earliest retry, and a periodic read of the store's list (what a
//! restart, a full queue or an expired give-up left there). A job asks the peer that sent the
//! record first, then every connected peer, once; the blobs it brought are made durable, then
//! taken off the store's list.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use commons_core::{BlobHash, LineageId};
use commons_rpc::{BlobStats, SyncReport};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;

use crate::blob_queue::{BlobQueue, Job, QueueStats, Retry, Source};
use crate::service::{Ctx, blocking};

/// Wants waiting for the downloader's task; beyond it they wait in the store's list.
pub const WANT_QUEUE: usize = 1024;
/// Wanted blobs read from the store's list per turn of the downloader.
pub const REFILL_PAGE: usize = 4096;
/// How often the store's list is read again from the start.
pub const REFILL_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug)]
enum Command {
    Want {
        source: Source,
        blobs: Vec<(BlobHash, LineageId)>,
    },
    PeerConnected,
}

/// The handle ingest and the main loop use; cheap to clone.
#[derive(Debug, Clone)]
pub struct Downloads {
    tx: mpsc::Sender<Command>,
    stats: Arc<Mutex<QueueStats>>,
}

/// The receiving end, given to [`run`].
#[derive(Debug)]
pub struct Inbox(mpsc::Receiver<Command>);

impl Downloads {
    /// A handle and the inbox its task reads.
    pub fn new() -> (Downloads, Inbox) {
        let (tx, rx) = mpsc::channel(WANT_QUEUE);
        (
            Downloads {
                tx,
                stats: Arc::default(),
            },
            Inbox(rx),
        )
    }

    /// Asks for blobs that `source` sent records naming. Never waits: when the channel is
    /// full the want is dropped here, and the store's list brings it back.
    pub fn want(&self, source: Source, blobs: Vec<(BlobHash, LineageId)>) {
        if blobs.is_empty() {
            return;
        }
        let _ = self.tx.try_send(Command::Want { source, blobs });
    }

    /// A peer connected (it may hold what others did not give). Never waits.
    pub fn peer_connected(&self) {
        let _ = self.tx.try_send(Command::PeerConnected);
    }

    /// Adds the queue's counters to `stats`.
    pub fn fill(&self, stats: &mut BlobStats) {
        let q = *self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.queued = q.queued;
        stats.waiting = q.waiting;
        stats.given_up = q.given_up;
        stats.failed_attempts = q.failed_attempts;
    }
}

/// Where the reading of the store's list is.
#[derive(Debug, Default)]
struct Refill {
    /// The last hash read; the next page starts after it.
    cursor: Option<BlobHash>,
    /// Whether the list has more to read in this pass.
    more: bool,
}

/// Runs the downloader until the handle's senders are gone.
pub async fn run(ctx: Ctx, Inbox(mut rx): Inbox) {
    let mut queue = BlobQueue::new(retry());
    let mut running = FuturesUnordered::new();
    let mut refill = Refill {
        more: true,
        ..Refill::default()
    };
    let mut every = tokio::time::interval(REFILL_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if refill.more && queue.has_room() {
            read_list(&ctx, &mut queue, &mut refill).await;
        }
        let now = Instant::now();
        while let Some(job) = queue.next_job(now) {
            running.push(fetch(ctx.clone(), job));
        }
        *ctx.downloads
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = queue.stats(now);
        let wake = queue.next_wakeup();
        tokio::select! {
            command = rx.recv() => match command {
                Some(Command::Want { source, blobs }) => {
                    let now = Instant::now();
                    for (hash, lineage) in blobs {
                        queue.want(hash, source, lineage, now);
                    }
                }
                Some(Command::PeerConnected) => {
                    if queue.peer_connected(Instant::now()) {
                        refill = Refill { cursor: None, more: true };
                    }
                }
                None => return,
            },
            Some((job, fetched)) = running.next(), if !running.is_empty() => {
                let done: Vec<BlobHash> = fetched.iter().copied().collect();
                let store = ctx.store.clone();
                if let Err(e) = blocking(move || store.unwant_blobs(done)).await {
                    tracing::warn!(target: "commons_node::blobs", error = %e, "cannot update the list of wanted blobs");
                }
                queue.finish(&job, &fetched, Instant::now());
            }
            _ = sleep_until(wake), if wake.is_some() => {}
            _ = every.tick() => refill.more = true,
        }
    }
}

/// [`Retry::default`], or quicker retries when `COMMONS_TEST_FAST=1` (the end-to-end tests,
/// which watch a blob being given up).
fn retry() -> Retry {
    match std::env::var("COMMONS_TEST_FAST").is_ok_and(|v| v == "1") {
        true => Retry {
            attempts: 4,
            first: Duration::from_millis(100),
            max: Duration::from_secs(1),
        },
        false => Retry::default(),
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

/// Reads a page of the store's list into the queue (in this node's own lane); blobs that are
/// here already (they came by another way) are taken off the list.
async fn read_list(ctx: &Ctx, queue: &mut BlobQueue, refill: &mut Refill) {
    let store = ctx.store.clone();
    let cursor = refill.cursor;
    let Ok(page) = blocking(move || store.wanted_blobs(cursor, REFILL_PAGE)).await else {
        refill.more = false;
        return;
    };
    refill.more = page.len() == REFILL_PAGE;
    refill.cursor = if refill.more {
        page.last().map(|(h, _)| *h)
    } else {
        None
    };
    let now = Instant::now();
    let mut present = Vec::new();
    for (hash, lineage) in page {
        if queue.contains(&hash) {
            continue;
        }
        if ctx.store.blobs().contains(&hash) {
            present.push(hash);
            continue;
        }
        queue.want(hash, None, lineage, now);
    }
    if !present.is_empty() {
        let store = ctx.store.clone();
        let _ = blocking(move || store.unwant_blobs(present)).await;
    }
}

/// One job: one attempt over the source and every connected peer. Returns the blobs that are
/// here and durable afterwards.
async fn fetch(ctx: Ctx, job: Job) -> (Job, BTreeSet<BlobHash>) {
    let mut report = SyncReport::default();
    let durable = ctx
        .fetch_blobs_with(job.source, &job.blobs, &mut report, 1)
        .await;
    let fetched: BTreeSet<BlobHash> = job
        .blobs
        .iter()
        .filter(|h| ctx.store.blobs().contains(h))
        .copied()
        .collect();
    // If the final fsync failed, nothing counts as fetched: it is tried again.
    let fetched = match durable || !ctx.store.blobs().has_unsynced() {
        true => fetched,
        false => BTreeSet::new(),
    };
    if report.new_blobs > 0 {
        tracing::debug!(target: "commons_node::blobs", blobs = report.new_blobs, bytes = report.blob_bytes, lineage = %job.lineage, "blobs fetched");
    }
    (job, fetched)
}
