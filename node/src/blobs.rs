//! Blob downloads: BLAKE3 verified streaming from one or several peers, resumable after a crash,
//! in bounded memory whatever the blob's size; and the serving side of outboards.
//!
//! A download of blob `h` ([`Blobs::fetch`]):
//! 1. **Outboard.** The chunk-group hashes of `h` (`commons_store::outboard`) are fetched from the
//!    first peer that has them (`GetOutboard`, 1 MiB pieces, streamed to
//!    `blobs/partial/<hex>.obao.part`), verified against `h` and renamed to
//!    `blobs/partial/<hex>.obao`. A peer whose outboard does not verify gets a strike.
//! 2. **Resume.** If `partial/<hex>` and its outboard are already there (an earlier download
//!    was interrupted, even by SIGKILL), the outboard is verified again and every 16 KiB group of
//!    the data file is checked against it: the groups that verify are kept (counted in
//!    [`BlobStats::resumed_bytes`]), the others (never written, or lost in a crash) are fetched.
//!    No bitfield is kept: the data proves itself.
//! 3. **Data.** Missing groups are cut into ranges of [`GROUPS_PER_REQUEST`] groups (1 MiB) and
//!    requested with `GetBlob` from every peer given, [`PER_PEER_IN_FLIGHT`] ranges per peer at
//!    once and [`MAX_REQUESTS_IN_FLIGHT`] in the whole node. Each answer is checked group by
//!    group on a blocking thread while the next requests are already out; the good groups before
//!    the first bad one are written at their offset in the data file (one `pwrite`), the peer
//!    that sent a bad group gets a strike and is dropped, and the rest of its range goes back to
//!    the queue for the other peers. A peer that fails (timeout, not found) is dropped without a
//!    strike. Answer buffers go back to `commons_net::wire`'s pool once written.
//! 4. **Adopt.** When every group is verified, the data file and outboard are fsynced and renamed
//!    into the blob store. No unverified byte ever becomes part of a stored blob.
//!
//! Memory per download is the queue of ranges and one bit per group (8 KiB per GiB), plus the
//! answers in flight (at most [`MAX_REQUESTS_IN_FLIGHT`] × 1 MiB in the whole node).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, anyhow, bail};
use commons_core::BlobHash;
use commons_net::bulk::{BulkError, BulkLink, BulkServer};
use commons_net::wire::{self, MAX_BLOB_CHUNK};
use commons_net::{BlobChunk, FetchError, NetHandle, PeerId, SmallBlob, SyncResponse};
use commons_rpc::BlobStats;
use commons_store::BlobStore;
use commons_store::outboard::{
    self, GROUP_BYTES, MAX_BLOB_BYTES, group_count, group_span, outboard_len,
};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinError;

use crate::config::BlobPolicy;
use crate::partial::{Job, resume, start, verify_and_write};

/// Groups per data request: 64 × 16 KiB = 1 MiB, the protocol's largest chunk.
pub const GROUPS_PER_REQUEST: u64 = MAX_BLOB_CHUNK as u64 / GROUP_BYTES;
/// Blobs up to this size are fetched in one request and checked against their hash as a whole
/// (four chunk groups: a corrupt answer is still caught within 64 KiB).
pub const SMALL_BLOB_BYTES: u64 = 4 * GROUP_BYTES;
/// `GetSmallBlobs` requests to one peer at once (each answer up to 3 MiB in memory).
pub const SMALL_BATCHES_IN_FLIGHT: usize = 4;
/// Bytes per outboard request (the protocol's largest piece).
pub const OUTBOARD_PIECE: u32 = MAX_BLOB_CHUNK;
/// Data requests in flight to one peer for one blob: each yamux stream starts with a 256 KiB
/// window, so 8 streams keep 2 MiB moving while earlier answers are verified and written. Below
/// the 16 requests per peer a responder holds (`commons_net::task::MAX_PENDING_INBOUND_PER_PEER`).
pub const PER_PEER_IN_FLIGHT: usize = 8;
/// Data requests in the whole node, all downloads together, from the request until its answer
/// is written: each answer is up to 1 MiB held in memory (a few copies of it on the way), so
/// this bounds what downloading costs.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 16;
/// Peers one download uses at once.
pub const MAX_PEERS_PER_BLOB: usize = 8;
/// Peers whose received bytes are counted in [`BlobStats::by_peer`].
pub const MAX_TRACKED_PEERS: usize = 256;
/// After a bulk connection to a peer could not be opened or failed, how long ranges from that
/// peer go over libp2p before a bulk connection is tried again.
pub const BULK_RETRY: std::time::Duration = std::time::Duration::from_secs(300);
/// Extension of an outboard being downloaded (not yet verified).
const OUTBOARD_PART_EXT: &str = "obao.part";

/// The daemon's blob downloads: policy, locks, limits and counters. Shared by every task.
#[derive(Debug)]
pub struct Blobs {
    /// When blobs are fetched.
    pub policy: BlobPolicy,
    requests: Arc<Semaphore>,
    /// One lock per blob being downloaded, so two tasks never write the same partial file.
    /// Entries are removed when nobody holds or waits for them; at most one per running task.
    locks: Mutex<HashMap<BlobHash, Arc<tokio::sync::Mutex<()>>>>,
    stats: Mutex<Stats>,
    /// Whether ranges are fetched over bulk connections when the peer offers them.
    use_bulk: bool,
    /// Whether to ask for clear-text bulk links (`bulk_clear` in the configuration).
    bulk_clear: bool,
    /// The bulk port this node serves, if any.
    server: Option<Arc<BulkServer>>,
    /// Bulk links to peers: open, or off until a time.
    links: Mutex<HashMap<PeerId, LinkState>>,
}

/// Whether ranges from a peer go over a bulk link.
#[derive(Debug)]
enum LinkState {
    Up(BulkLink),
    Off(std::time::Instant),
}

#[derive(Debug, Default)]
struct Stats {
    completed: u64,
    received: u64,
    resumed: u64,
    bad_groups: u64,
    bulk: u64,
    by_peer: BTreeMap<PeerId, u64>,
    /// Downloads in progress: (bytes verified, total bytes).
    active: HashMap<BlobHash, (u64, u64)>,
}

/// How far the blob downloads of the node have got, for progress lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Blobs completed since start.
    pub completed: u64,
    /// Downloads in progress.
    pub active: u64,
    /// Verified bytes of the downloads in progress.
    pub active_done: u64,
    /// Total bytes of the downloads in progress.
    pub active_total: u64,
    /// Verified bytes received since start.
    pub received: u64,
}

/// What a download did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetched {
    /// Length of the blob.
    pub len: u64,
    /// Bytes received now (0 if the blob was already present).
    pub received: u64,
    /// Bytes kept from an interrupted download.
    pub resumed: u64,
}

impl Blobs {
    /// Downloads under `policy`, over bulk links when `use_bulk` and the peer offers them
    /// (asking for clear-text ones if `bulk_clear`); `server` is this node's own bulk port, if
    /// it serves one.
    pub fn new(
        policy: BlobPolicy,
        use_bulk: bool,
        bulk_clear: bool,
        server: Option<Arc<BulkServer>>,
    ) -> Blobs {
        Blobs {
            policy,
            requests: Arc::new(Semaphore::new(MAX_REQUESTS_IN_FLIGHT)),
            locks: Mutex::new(HashMap::new()),
            stats: Mutex::new(Stats::default()),
            use_bulk,
            bulk_clear,
            server,
            links: Mutex::new(HashMap::new()),
        }
    }

    /// Answers a peer's `OpenBulk`: a ticket to this node's bulk port, or `NotFound` when it
    /// serves none (or has too many tickets out).
    pub fn bulk_ticket(&self, peer: PeerId, clear: bool) -> SyncResponse {
        match &self.server {
            Some(server) => match server.issue(peer, clear) {
                Some(ticket) => SyncResponse::BulkTicket {
                    port: ticket.port,
                    token: ticket.token,
                    key: ticket.key,
                },
                None => SyncResponse::NotFound,
            },
            None => SyncResponse::NotFound,
        }
    }

    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, LinkState>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bulk link to `peer`: the open one, a new one, or `None` (bulk transfers off here,
    /// refused or failed recently: libp2p then).
    async fn link(&self, net: &NetHandle, peer: PeerId) -> Option<BulkLink> {
        if !self.use_bulk {
            return None;
        }
        match self.links().get(&peer) {
            Some(LinkState::Up(link)) if !link.is_closed() => return Some(link.clone()),
            Some(LinkState::Off(since)) if since.elapsed() < BULK_RETRY => return None,
            _ => {}
        }
        match net.bulk_link(peer, self.bulk_clear).await {
            Ok(link) => {
                tracing::debug!(target: "commons_node::blobs", %peer, "bulk link open");
                self.links().insert(peer, LinkState::Up(link.clone()));
                Some(link)
            }
            Err(e) => {
                tracing::debug!(target: "commons_node::blobs", %peer, error = %e, "no bulk link; ranges go over libp2p");
                self.bulk_off(peer);
                None
            }
        }
    }

    /// Cuts `peer` off the bulk port (it was banned or blocked): its connections to this node's
    /// bulk port are closed and its tickets void, and this node's link to it is dropped.
    pub fn close_peer(&self, peer: &PeerId) {
        if let Some(server) = &self.server {
            server.close_peer(peer);
        }
        self.bulk_off(*peer);
    }

    /// Stops using bulk transfers with `peer` for [`BULK_RETRY`].
    fn bulk_off(&self, peer: PeerId) {
        self.links()
            .insert(peer, LinkState::Off(std::time::Instant::now()));
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counters, for `node status`.
    pub fn report(&self) -> BlobStats {
        let s = self.stats();
        BlobStats {
            completed: s.completed,
            received_bytes: s.received,
            resumed_bytes: s.resumed,
            bad_groups: s.bad_groups,
            by_peer: s.by_peer.iter().map(|(p, b)| (p.to_string(), *b)).collect(),
            active: s.active.len() as u64,
            bulk_bytes: s.bulk,
            ..BlobStats::default()
        }
    }

    /// How far downloads have got, for progress lines.
    pub fn snapshot(&self) -> Snapshot {
        let s = self.stats();
        Snapshot {
            completed: s.completed,
            active: s.active.len() as u64,
            active_done: s.active.values().map(|(d, _)| d).sum(),
            active_total: s.active.values().map(|(_, t)| t).sum(),
            received: s.received,
        }
    }

    fn received(&self, hash: &BlobHash, peer: PeerId, bytes: u64, bulk: bool) {
        let mut s = self.stats();
        s.received += bytes;
        if bulk {
            s.bulk += bytes;
        }
        if let Some((done, _)) = s.active.get_mut(hash) {
            *done += bytes;
        }
        if s.by_peer.len() < MAX_TRACKED_PEERS || s.by_peer.contains_key(&peer) {
            *s.by_peer.entry(peer).or_default() += bytes;
        }
    }

    /// Fetches blob `hash` from `peers` (in that order of preference) into `store`, resuming a
    /// partial download if there is one. Returns once the blob is stored (a small one is
    /// durable once the caller runs `BlobStore::sync`, once for a whole batch), or fails leaving
    /// the verified part of the download for the next attempt.
    pub async fn fetch(
        &self,
        net: &NetHandle,
        store: &BlobStore,
        hash: BlobHash,
        peers: &[PeerId],
    ) -> anyhow::Result<Fetched> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(hash).or_default().clone()
        };
        let result = {
            let _guard = lock.lock().await;
            self.fetch_locked(net, store, hash, peers).await
        };
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Ours and the map's: nobody else holds or waits for it.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(&hash);
        }
        result
    }

    async fn fetch_locked(
        &self,
        net: &NetHandle,
        store: &BlobStore,
        hash: BlobHash,
        peers: &[PeerId],
    ) -> anyhow::Result<Fetched> {
        if let Some(len) = store.len_of(&hash)? {
            return Ok(Fetched {
                len,
                received: 0,
                resumed: 0,
            });
        }
        let (data_path, outboard_path) = store.partial_paths(&hash)?;
        if !data_path.exists()
            && let Some(fetched) = self.fetch_small(net, store, hash, peers).await?
        {
            return Ok(fetched);
        }
        let mut job = {
            let (d, o) = (data_path.clone(), outboard_path.clone());
            tokio::task::spawn_blocking(move || resume(hash, &d, &o)).await??
        };
        if job.is_none() {
            for peer in peers {
                match self.fetch_outboard(net, *peer, hash, &outboard_path).await {
                    Ok(len) => {
                        let d = data_path.clone();
                        let o = outboard_path.clone();
                        job = Some((
                            tokio::task::spawn_blocking(move || start(hash, len, &d, &o)).await??,
                            0,
                        ));
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(target: "commons_node::blobs", %peer, blob = %hash, error = %format!("{e:#}"), "no outboard from this peer");
                    }
                }
            }
        }
        let Some((job, resumed)) = job else {
            bail!("no peer could give the outboard of blob {hash}");
        };
        if resumed > 0 {
            tracing::info!(target: "commons_node::blobs", blob = %hash, resumed, len = job.len, "resuming an interrupted download");
        }
        {
            let mut s = self.stats();
            s.resumed += resumed;
            s.active.insert(hash, (resumed, job.len));
        }
        let result = self.fetch_data(net, job, peers).await;
        self.stats().active.remove(&hash);
        let received = result?;
        let blobs = store.clone();
        tokio::task::spawn_blocking(move || blobs.adopt_partial(&hash))
            .await?
            .context("cannot move the download into the blob store")?;
        let len = store
            .len_of(&hash)?
            .ok_or_else(|| anyhow!("blob {hash} vanished once adopted"))?;
        self.stats().completed += 1;
        tracing::info!(target: "commons_node::blobs", blob = %hash, len, received, resumed, "blob downloaded and verified");
        Ok(Fetched {
            len,
            received,
            resumed,
        })
    }

    /// Fetches many small blobs whole from `peer` ([`wire::MAX_SMALL_BLOBS`] per request,
    /// [`SMALL_BATCHES_IN_FLIGHT`] requests at once), each checked against its hash and packed
    /// (durable at the caller's `BlobStore::sync`). Returns those stored, with their lengths. Blobs the
    /// peer lacks or that are too large to come whole are left to [`Blobs::fetch`]. A peer
    /// that sends bytes that do not match their hash gets a strike and is asked nothing more.
    pub async fn fetch_small_batch(
        &self,
        net: &NetHandle,
        store: &BlobStore,
        peer: PeerId,
        hashes: &[BlobHash],
    ) -> Vec<(BlobHash, u64)> {
        let chunks: Vec<Vec<BlobHash>> = hashes
            .chunks(wire::MAX_SMALL_BLOBS)
            .map(<[BlobHash]>::to_vec)
            .collect();
        let requests = chunks.into_iter().map(|chunk| {
            let net = net.clone();
            async move {
                let answer = net.get_small_blobs(peer, chunk.clone()).await;
                (chunk, answer)
            }
        });
        let mut answers = futures::stream::iter(requests).buffered(SMALL_BATCHES_IN_FLIGHT);
        let mut stored = Vec::new();
        while let Some((asked, answer)) = answers.next().await {
            let answer = match answer {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(target: "commons_node::blobs", %peer, error = %e, "no small blobs from this peer");
                    break;
                }
            };
            let blobs = store.clone();
            let checked = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
                let mut good = Vec::new();
                for (hash, blob) in asked.iter().zip(answer) {
                    let SmallBlob::Bytes(bytes) = blob else {
                        continue;
                    };
                    if !blobs.put_small(hash, &bytes)? {
                        return Ok((good, Some(*hash)));
                    }
                    good.push((*hash, bytes.len() as u64));
                }
                Ok((good, None))
            })
            .await;
            let (good, bad) = match checked {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::warn!(target: "commons_node::blobs", error = %e, "cannot store small blobs");
                    break;
                }
                Err(e) => {
                    tracing::warn!(target: "commons_node::blobs", error = %e, "small blob check failed");
                    break;
                }
            };
            {
                let mut s = self.stats();
                s.completed += good.len() as u64;
            }
            for (hash, len) in &good {
                self.received(hash, peer, *len, false);
            }
            stored.extend(good);
            if let Some(hash) = bad {
                let reason = "sent bytes that do not match the blob's hash";
                let _ = net.report_bad_peer(peer, reason).await;
                tracing::debug!(target: "commons_node::blobs", %peer, blob = %hash, "{reason}");
                break;
            }
        }
        stored
    }

    /// A blob of at most [`SMALL_BLOB_BYTES`] in one request, checked against its hash as a
    /// whole: no outboard round trip. Returns `None` when the blob is larger (or no peer
    /// answered), and the outboard download takes over. A peer that sends other bytes gets a
    /// strike and the next one is asked.
    async fn fetch_small(
        &self,
        net: &NetHandle,
        store: &BlobStore,
        hash: BlobHash,
        peers: &[PeerId],
    ) -> anyhow::Result<Option<Fetched>> {
        for peer in peers {
            let chunk = match net
                .get_blob_chunk(*peer, hash, 0, SMALL_BLOB_BYTES as u32)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(target: "commons_node::blobs", %peer, blob = %hash, error = %e, "no blob from this peer");
                    continue;
                }
            };
            if chunk.total_len > SMALL_BLOB_BYTES {
                return Ok(None);
            }
            let bytes = chunk.bytes;
            let len = bytes.len() as u64;
            let (blobs, expected) = (store.clone(), hash);
            // Packed, durable at the caller's `BlobStore::sync` (one fsync for the batch).
            let (stored, bytes) = tokio::task::spawn_blocking(move || {
                blobs
                    .put_small(&expected, &bytes)
                    .map(|stored| (stored, bytes))
            })
            .await??;
            wire::recycle_chunk(bytes);
            if !stored {
                let reason = "sent bytes that do not match the blob's hash";
                let _ = net.report_bad_peer(*peer, reason).await;
                tracing::debug!(target: "commons_node::blobs", %peer, blob = %hash, "{reason}");
                continue;
            }
            self.received(&hash, *peer, len, false);
            self.stats().completed += 1;
            tracing::debug!(target: "commons_node::blobs", blob = %hash, len, "small blob downloaded and verified");
            return Ok(Some(Fetched {
                len,
                received: len,
                resumed: 0,
            }));
        }
        Ok(None)
    }

    /// Fetches and verifies the outboard of `hash` from `peer` into `path`; returns the blob's
    /// length.
    async fn fetch_outboard(
        &self,
        net: &NetHandle,
        peer: PeerId,
        hash: BlobHash,
        path: &Path,
    ) -> anyhow::Result<u64> {
        let part = path.with_extension(OUTBOARD_PART_EXT);
        // File work (create, writes, the fsync) runs on blocking threads, piece by piece.
        let p = part.clone();
        let mut out =
            tokio::task::spawn_blocking(move || File::create(&p).map(BufWriter::new)).await??;
        let mut offset = 0u64;
        let mut len = None;
        loop {
            let BlobChunk { total_len, bytes } =
                net.get_outboard(peer, hash, offset, OUTBOARD_PIECE).await?;
            if total_len > MAX_BLOB_BYTES {
                bail!("blob {hash} is {total_len} bytes, over the limit of {MAX_BLOB_BYTES}");
            }
            let expected_len = *len.get_or_insert(total_len);
            let want = outboard_len(expected_len)
                .saturating_sub(offset)
                .min(u64::from(OUTBOARD_PIECE));
            if total_len != expected_len || bytes.len() as u64 != want {
                let reason = "sent an outboard piece of the wrong length";
                let _ = net.report_bad_peer(peer, reason).await;
                bail!("{peer} {reason}");
            }
            out = tokio::task::spawn_blocking(move || {
                out.write_all(&bytes)?;
                wire::recycle_chunk(bytes);
                Ok::<_, std::io::Error>(out)
            })
            .await??;
            offset += want;
            if offset >= outboard_len(expected_len) {
                break;
            }
        }
        let len = len.ok_or_else(|| anyhow!("no outboard piece"))?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        tokio::task::spawn_blocking(move || file.sync_all()).await??;
        let (p, f) = (part.clone(), path.to_owned());
        let good = tokio::task::spawn_blocking(move || -> anyhow::Result<bool> {
            let ok = outboard::verify_outboard(&hash, len, BufReader::new(File::open(&p)?))?;
            if ok {
                std::fs::rename(&p, &f)?;
            } else {
                std::fs::remove_file(&p)?;
            }
            Ok(ok)
        })
        .await??;
        if !good {
            let reason = "sent an outboard that does not match the blob's hash";
            let _ = net.report_bad_peer(peer, reason).await;
            bail!("{peer} {reason}");
        }
        Ok(len)
    }

    /// Fetches every missing group of `job` from `peers`; returns the bytes received.
    async fn fetch_data(
        &self,
        net: &NetHandle,
        mut job: Job,
        peers: &[PeerId],
    ) -> anyhow::Result<u64> {
        let groups = group_count(job.len);
        let mut queue: VecDeque<(u64, u64)> = VecDeque::new();
        let mut i = 0;
        while i < groups {
            if job.present.get(i) {
                i += 1;
                continue;
            }
            let start = i;
            while i < groups && !job.present.get(i) && i - start < GROUPS_PER_REQUEST {
                i += 1;
            }
            queue.push_back((start, i - start));
        }
        if job.len == 0 {
            // The empty blob: nothing to ask for, its hash is checked by the caller's adopt.
            return if job.hash.0 == *blake3::hash(&[]).as_bytes() {
                Ok(0)
            } else {
                bail!("blob {} is not empty", job.hash)
            };
        }
        // Each peer with its requests in flight and its bulk link, if it has one.
        let mut active: Vec<(PeerId, usize, Option<BulkLink>)> = Vec::new();
        for peer in peers.iter().take(MAX_PEERS_PER_BLOB) {
            active.push((*peer, 0, self.link(net, *peer).await));
        }
        // Answers are verified and written on blocking threads while the next requests are
        // already out: a peer's slot is freed when its answer arrives, the node-wide permit
        // (which bounds the memory held) when the answer is written.
        let mut in_flight = FuturesUnordered::new();
        let mut checking = FuturesUnordered::new();
        let mut received = 0u64;
        loop {
            // Fill every peer's allowance, one range at a time in turn.
            let mut gave = true;
            while gave && !queue.is_empty() {
                gave = false;
                for (peer, n, link) in active.iter_mut() {
                    if *n >= PER_PEER_IN_FLIGHT {
                        continue;
                    }
                    let Some(range) = queue.pop_front() else {
                        break;
                    };
                    *n += 1;
                    gave = true;
                    in_flight.push(request(
                        net.clone(),
                        link.clone(),
                        self.requests.clone(),
                        *peer,
                        job.hash,
                        job.len,
                        range,
                    ));
                }
            }
            let step = tokio::select! {
                Some(answer) = in_flight.next(), if !in_flight.is_empty() => Step::Answer(answer),
                Some(checked) = checking.next(), if !checking.is_empty() => Step::Checked(checked),
                else => break,
            };
            match step {
                Step::Answer((peer, range, answer, permit)) => {
                    if let Some(slot) = active.iter_mut().find(|(p, ..)| *p == peer) {
                        slot.1 -= 1;
                    }
                    let via = match &answer {
                        Ok((_, via)) => *via,
                        Err(RangeError::Bulk(_)) => Via::Bulk { sealed: false },
                        Err(RangeError::Net(_)) => Via::Libp2p,
                    };
                    let chunk = match answer {
                        Ok((c, _)) => c,
                        Err(RangeError::Bulk(e)) if !matches!(e, BulkError::NotFound) => {
                            // The link failed, not the peer: its ranges go over libp2p.
                            tracing::debug!(target: "commons_node::blobs", %peer, blob = %job.hash, error = %e, "bulk link failed; the peer's ranges go over libp2p");
                            self.bulk_off(peer);
                            if let Some(slot) = active.iter_mut().find(|(p, ..)| *p == peer) {
                                slot.2 = None;
                            }
                            queue.push_back(range);
                            continue;
                        }
                        Err(e) => {
                            tracing::debug!(target: "commons_node::blobs", %peer, blob = %job.hash, error = %e, "range request failed; peer dropped");
                            active.retain(|(p, ..)| *p != peer);
                            queue.push_back(range);
                            continue;
                        }
                    };
                    let (hash, len, data, ob) =
                        (job.hash, job.len, job.data.clone(), job.outboard.clone());
                    let check = tokio::task::spawn_blocking(move || {
                        let result = verify_and_write(&hash, len, range, &chunk, &data, &ob);
                        wire::recycle_chunk(chunk.bytes);
                        drop(permit);
                        result
                    });
                    checking.push(async move { (peer, range, via, check.await) });
                }
                Step::Checked((peer, range, via, result)) => {
                    let (good, good_bytes) = result??;
                    for g in range.0..range.0 + good {
                        job.present.set(g);
                    }
                    received += good_bytes;
                    self.received(&job.hash, peer, good_bytes, via != Via::Libp2p);
                    if good < range.1 {
                        let bad = range.0 + good;
                        self.stats().bad_groups += 1;
                        queue.push_back((bad, range.1 - good));
                        if via == (Via::Bulk { sealed: false }) {
                            // Not a strike: anyone on the path of a clear-text connection could
                            // have changed the bytes. What the peer sends over libp2p is judged.
                            // (Bytes from a sealed link are the peer's own, judged below.)
                            tracing::warn!(target: "commons_node::blobs", %peer, blob = %job.hash, group = bad, offset = bad * GROUP_BYTES, "chunk group from a clear-text bulk link failed verification; the peer's ranges go over libp2p");
                            self.bulk_off(peer);
                            if let Some(slot) = active.iter_mut().find(|(p, ..)| *p == peer) {
                                slot.2 = None;
                            }
                            continue;
                        }
                        tracing::warn!(target: "commons_node::blobs", %peer, blob = %job.hash, group = bad, offset = bad * GROUP_BYTES, "chunk group failed verification; peer dropped");
                        // A peer already dropped (an earlier bad answer) got its strike then.
                        if active.iter().any(|(p, ..)| *p == peer) {
                            let _ = net
                                .report_bad_peer(peer, "served blob bytes that fail verification")
                                .await;
                        }
                        active.retain(|(p, ..)| *p != peer);
                    }
                }
            }
        }
        if !queue.is_empty() || (0..groups).any(|g| !job.present.get(g)) {
            bail!(
                "blob {}: no peer left to serve the missing ranges ({} bytes received; the verified part is kept)",
                job.hash,
                received
            );
        }
        // The fsync of up to a whole blob: off the async workers.
        let data = job.data.clone();
        tokio::task::spawn_blocking(move || data.sync_all()).await??;
        Ok(received)
    }
}

/// An answer to a data request: who, which range, what came (and how), and the node-wide
/// permit it holds until it is written.
type Answer = (
    PeerId,
    (u64, u64),
    Result<(BlobChunk, Via), RangeError>,
    Option<OwnedSemaphorePermit>,
);

/// How an answer came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// Inside the libp2p connection.
    Libp2p,
    /// Over a bulk link: sealed with the ticket's key (authenticated), or clear text.
    Bulk { sealed: bool },
}

/// Why a data request failed: over libp2p, or over a bulk link.
#[derive(Debug, thiserror::Error)]
enum RangeError {
    #[error(transparent)]
    Net(#[from] FetchError),
    #[error(transparent)]
    Bulk(#[from] BulkError),
}

/// An answer verified and its good groups written: who, which range, how it came, and (good
/// groups, their bytes) or why the check could not run.
type Checked = (
    PeerId,
    (u64, u64),
    Via,
    Result<anyhow::Result<(u64, u64)>, JoinError>,
);

/// What the download loop got next.
enum Step {
    /// A peer answered a range (or failed to).
    Answer(Answer),
    /// An answer was verified and written.
    Checked(Checked),
}

/// One data request (over `link` if there is one, else libp2p), waiting for a permit of the
/// node-wide allowance first. The permit comes back with the answer: the caller keeps it until
/// the answer is written.
async fn request(
    net: NetHandle,
    link: Option<BulkLink>,
    permits: Arc<Semaphore>,
    peer: PeerId,
    hash: BlobHash,
    len: u64,
    range: (u64, u64),
) -> Answer {
    let Ok(permit) = permits.acquire_owned().await else {
        return (peer, range, Err(FetchError::Closed.into()), None);
    };
    let (offset, _) = group_span(len, range.0);
    let (last, last_len) = group_span(len, range.0 + range.1 - 1);
    let n = (last + last_len - offset).min(u64::from(MAX_BLOB_CHUNK)) as u32;
    let answer = match link {
        Some(link) => link
            .get(hash, offset, n)
            .await
            .map(|c| {
                let sealed = link.is_sealed();
                (c, Via::Bulk { sealed })
            })
            .map_err(RangeError::from),
        None => net
            .get_blob_chunk(peer, hash, offset, n)
            .await
            .map(|c| (c, Via::Libp2p))
            .map_err(RangeError::from),
    };
    (peer, range, answer, Some(permit))
}
