//! Catch-up and ingest: fetching what a peer has that this node lacks (reconciliation, then
//! the records, their dependencies and their blobs), and storing records in history order.
//! Methods of [`Ctx`], apart from the request handling in `service.rs`.

use futures::StreamExt;
use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Arc;

use commons_core::{BlobHash, Kind, LineageId, Record, RecordId};
use commons_net::PeerId;
use commons_rpc::SyncReport;

use crate::service::{Ctx, blocking};

/// Most records fetched while chasing the dependencies of one arrival (parents, the patch of a
/// validation, the parent of a fork charter). A history deeper than this is finished by the
/// next catch-up round instead.
pub const MAX_DEPENDENCY_FETCH: usize = 10_000;
/// Records asked of a peer in one request (the protocol allows up to 256).
pub const FETCH_BATCH: usize = 256;
/// Records a catch-up stores at once (one store commit), at most.
pub const CATCH_UP_BATCH: usize = 20_000;
/// Bytes of records a catch-up holds before storing them, at most.
pub const CATCH_UP_BATCH_BYTES: usize = 16 << 20;
/// Rounds of asking peers for a patch's blobs before the patch is left for the next catch-up.
pub const BLOB_FETCH_ATTEMPTS: u32 = 4;
/// Blobs downloaded at once by one fetch (each also bounded by the per-peer and per-node request
/// limits of `blobs.rs`).
pub const BLOBS_AT_ONCE: usize = 16;
/// Records a catch-up stores per store commit, in history order (see `Ctx::store_window`).
pub const CATCH_UP_CHUNK: usize = 2_000;
/// `GetRecords` requests a catch-up keeps out at once.
pub const RECORD_REQUESTS_IN_FLIGHT: usize = 4;
/// Pause before the second round; it doubles each round (0.2 + 0.4 + 0.8 s in all).
pub const BLOB_RETRY_FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

impl Ctx {
    /// Starts a catch-up round (all followed families with `peer`, or with every connected peer)
    /// unless [`crate::service::MAX_CATCHUPS`] rounds are already running. Never waits. With
    /// every peer, the peers of a family are caught up with at once, so one slow peer does not
    /// hold up the others.
    pub fn spawn_catch_up(&self, peer: Option<PeerId>) {
        let Ok(permit) = self.catchups.clone().try_acquire_owned() else {
            return;
        };
        let ctx = self.clone();
        tokio::spawn(async move {
            let peers = match peer {
                Some(p) => vec![p],
                None => match ctx.net.status().await {
                    Ok(s) => s.connected,
                    Err(_) => vec![],
                },
            };
            let families = ctx.followed_families().await;
            for lineage in ctx.follows.list() {
                let store = ctx.store.clone();
                let have = blocking(move || store.contains(&lineage.into()))
                    .await
                    .unwrap_or(false);
                if !have {
                    // A followed lineage whose charter is not here yet: ask for it.
                    let _ = ctx.sync_lineage(lineage).await;
                }
            }
            let mut report = SyncReport {
                peers: peers.len(),
                ..SyncReport::default()
            };
            for family in families {
                let rounds = peers.iter().map(|p| {
                    let ctx = &ctx;
                    async move {
                        let mut r = SyncReport::default();
                        ctx.catch_up(*p, family, &mut r).await;
                        r
                    }
                });
                for r in futures::future::join_all(rounds).await {
                    report.absorb(r);
                }
                ctx.subscribe_family(family).await;
            }
            if report.new_records > 0 {
                tracing::info!(target: "commons_node::sync", records = report.new_records, blobs = report.new_blobs, "caught up");
            }
            drop(permit);
        });
    }

    /// Fetches from `peer` every record of `family` this store lacks: reconciles the family's
    /// record ids with the peer's (`NetHandle::reconcile`, whose cost follows the difference,
    /// not the family's size), then fetches the missing records and ingests them.
    pub async fn catch_up(&self, peer: PeerId, family: LineageId, report: &mut SyncReport) {
        // One round per peer and family at a time: a follow, the peer's announcement and the
        // timer often start one together, and each would fetch the same records. A round that
        // waited finds what the one before it fetched already stored.
        let lock = {
            let mut rounds = self.catching_up.lock().unwrap_or_else(|p| p.into_inner());
            rounds.retain(|_, l| Arc::strong_count(l) > 1);
            rounds.entry((peer, family)).or_default().clone()
        };
        let _running = lock.lock().await;
        let store = self.store.clone();
        let reconcile = self.reconcile.clone();
        let Ok(items) = blocking(move || reconcile.items(&store, family)).await else {
            return;
        };
        let session = match self.net.reconcile(peer, family, &*items).await {
            Ok(session) => session,
            Err(e) => {
                tracing::debug!(target: "commons_node::sync", %peer, error = %e, "reconcile failed");
                return;
            }
        };
        self.reconcile.record(&session);
        tracing::debug!(
            target: "commons_node::sync",
            %peer,
            %family,
            rounds = session.rounds,
            bytes = session.bytes_sent + session.bytes_received,
            missing = session.need.len(),
            complete = session.complete,
            "reconciled"
        );
        // Every id of `need` is on its way: a record whose parent comes in a later batch is
        // stored now (the store completes it when the parent arrives) instead of chasing the
        // parent, and its parent's parent, one round trip at a time.
        let coming: BTreeSet<RecordId> = session.need.iter().copied().collect();
        // The family's lineages known here: what the peer gives must belong to them.
        let store = self.store.clone();
        let mut known: BTreeSet<LineageId> = blocking(move || store.lineage_families())
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, f)| *f == Some(family))
            .map(|(l, _)| l)
            .collect();
        known.insert(family);
        let mut foreign = 0usize;
        let mut window: Vec<Record> = Vec::new();
        let mut window_bytes = 0usize;
        // Several requests out at once: the peer reads each batch from its store, and the
        // answers arrive while the next are being read. `buffered` keeps them in order.
        let requests: Vec<Vec<RecordId>> = session
            .need
            .chunks(FETCH_BATCH)
            .map(<[RecordId]>::to_vec)
            .collect();
        let net = self.net.clone();
        let mut answers = futures::stream::iter(requests)
            .map(move |ids| {
                let net = net.clone();
                async move { net.get_records(peer, ids).await }
            })
            .buffered(RECORD_REQUESTS_IN_FLIGHT);
        while let Some(answer) = answers.next().await {
            match answer {
                Ok(records) => {
                    window_bytes += records.iter().map(|r| r.bytes().len()).sum::<usize>();
                    window.extend(records);
                }
                Err(e) => {
                    tracing::debug!(target: "commons_node::sync", %peer, error = %e, "get_records failed");
                    break;
                }
            }
            if window.len() >= CATCH_UP_BATCH || window_bytes >= CATCH_UP_BATCH_BYTES {
                window_bytes = 0;
                let (records, refused) =
                    crate::family::of_family(std::mem::take(&mut window), &mut known);
                foreign += refused;
                self.store_window(peer, records, report, &coming).await;
            }
        }
        if !window.is_empty() {
            let (records, refused) = crate::family::of_family(window, &mut known);
            foreign += refused;
            self.store_window(peer, records, report, &coming).await;
        }
        if foreign > 0 {
            // Not of this family as far as this node knows. No strike: a fork whose charter
            // comes in a later window looks the same, and its records come with the next round.
            tracing::info!(target: "commons_node::sync", %peer, %family, records = foreign, "records of another family refused");
            self.refused("not of the family", foreign as u64);
        }
    }

    /// Stores a window of a catch-up: in history order (charters, then each patch after its
    /// parents and followed by its validations), in chunks of `catch_up_chunk` records, the
    /// blobs of the next chunk downloading while the store commits the one before. Each chunk
    /// is one store commit that appends to the lineage's log, never one that undoes and
    /// replays it, and no patch waits for a parent in a later chunk.
    async fn store_window(
        &self,
        peer: PeerId,
        records: Vec<Record>,
        report: &mut SyncReport,
        coming: &BTreeSet<RecordId>,
    ) {
        tracing::debug!(target: "commons_node::sync", %peer, records = records.len(), "records fetched");
        let mut ordered = history_order(records).into_iter();
        let chunks: Vec<Vec<Record>> = std::iter::from_fn(|| {
            let chunk: Vec<Record> = ordered.by_ref().take(self.catch_up_chunk).collect();
            (!chunk.is_empty()).then_some(chunk)
        })
        .collect();
        let eager = self.blobs.policy == crate::config::BlobPolicy::Eager;
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Vec<Record>>(1);
        let mut fetch_report = SyncReport::default();
        let mut store_report = SyncReport::default();
        let fetching = async {
            // Owned here, so that the channel closes when the last chunk is handed over.
            let ready_tx = ready_tx;
            for chunk in chunks {
                if eager {
                    let blobs = blobs_of(&chunk);
                    if !blobs.is_empty() {
                        // One attempt here: a patch whose blobs are still missing retries on
                        // its own when the chunk is stored.
                        self.fetch_blobs_with(Some(peer), &blobs, &mut fetch_report, 1)
                            .await;
                        tracing::debug!(target: "commons_node::sync", blobs = blobs.len(), "blobs of the chunk fetched");
                    }
                }
                if ready_tx.send(chunk).await.is_err() {
                    return;
                }
            }
        };
        let storing = async {
            while let Some(chunk) = ready_rx.recv().await {
                self.ingest_expecting(Some(peer), chunk, &mut store_report, coming)
                    .await;
            }
        };
        tokio::join!(fetching, storing);
        report.absorb(fetch_report);
        report.absorb(store_report);
    }

    /// Stores records that arrived from `from`, after fetching what they depend on: missing
    /// parents, the patch a validation judges, a fork's parent charter, the charter of a
    /// patch's lineage. Content is not waited for: the blobs that are not here go to the
    /// downloader (see [`Ctx::store_now`]).
    pub async fn ingest(
        &self,
        from: Option<PeerId>,
        records: Vec<Record>,
        report: &mut SyncReport,
    ) {
        self.ingest_expecting(from, records, report, &BTreeSet::new())
            .await;
    }

    /// [`Ctx::ingest`], not chasing the dependencies listed in `coming`: they are being
    /// fetched already.
    pub async fn ingest_expecting(
        &self,
        from: Option<PeerId>,
        records: Vec<Record>,
        report: &mut SyncReport,
        coming: &BTreeSet<RecordId>,
    ) {
        // What the batch itself brings needs no store lookup and no fetch: a chain of patches
        // arriving together finds each parent here.
        let mut asked: BTreeSet<RecordId> = records.iter().map(Record::id).collect();
        asked.extend(coming.iter().copied());
        let mut queue: VecDeque<Record> = records.into();
        let mut fetched = 0usize;
        let mut ready = Vec::new();
        while let Some(record) = queue.pop_front() {
            let wanted = dependencies(&record);
            ready.push(record);
            let store = self.store.clone();
            let candidates: Vec<RecordId> =
                wanted.into_iter().filter(|id| asked.insert(*id)).collect();
            if candidates.is_empty() {
                continue;
            }
            let missing = blocking(move || {
                let mut out = Vec::new();
                for id in candidates {
                    if !store.contains(&id)? {
                        out.push(id);
                    }
                }
                Ok(out)
            })
            .await
            .unwrap_or_default();
            let missing: Vec<RecordId> = missing
                .into_iter()
                .filter(|id| {
                    !ready.iter().any(|r| r.id() == *id) && !queue.iter().any(|r| r.id() == *id)
                })
                .collect();
            if let (Some(peer), false) = (from, missing.is_empty()) {
                if fetched >= MAX_DEPENDENCY_FETCH {
                    continue;
                }
                for chunk in missing.chunks(FETCH_BATCH) {
                    match self.net.get_records(peer, chunk.to_vec()).await {
                        Ok(rs) => {
                            fetched += rs.len();
                            queue.extend(rs);
                        }
                        Err(e) => {
                            tracing::debug!(target: "commons_node::sync", %peer, error = %e, "dependency fetch failed");
                        }
                    }
                }
            }
        }
        self.store_now(from, ready, report, true).await;
    }

    /// Gossip: stores records at once, waiting on no peer; a record whose dependencies are
    /// not here (nor in the batch) starts a catch-up with its sender, which brings them in
    /// history order in the background.
    pub async fn ingest_gossip(&self, from: PeerId, records: Vec<Record>) {
        let in_batch: BTreeSet<RecordId> = records.iter().map(Record::id).collect();
        let deps: BTreeSet<RecordId> = records
            .iter()
            .flat_map(dependencies)
            .filter(|id| !in_batch.contains(id))
            .collect();
        let store = self.store.clone();
        let lacking = blocking(move || {
            for id in deps {
                if !store.contains(&id)? {
                    return Ok(true);
                }
            }
            Ok(false)
        })
        .await
        .unwrap_or(false);
        let mut report = SyncReport::default();
        self.store_now(Some(from), records, &mut report, false)
            .await;
        if lacking {
            self.spawn_catch_up(Some(from));
        }
    }

    /// Stores `ready` as one commit, after listing the blobs its patches create and that are
    /// not here (`Store::want_blobs`, so a crash cannot forget them), then hands those to the
    /// downloader. A new lineage in a followed family gets its topic subscribed. Unless
    /// `durable`, the commit does not wait for a flush (`Store::put_relayed`: gossip records,
    /// forwarded already and fetched again by catch-up if a crash loses them).
    pub(crate) async fn store_now(
        &self,
        from: Option<PeerId>,
        ready: Vec<Record>,
        report: &mut SyncReport,
        durable: bool,
    ) {
        // Local policy: records of blocked authors are not stored (a peer may not know).
        let mut ready = ready;
        ready.retain(|r| !self.blocked.blocks_author(&r.author()));
        if ready.is_empty() {
            return;
        }
        let charters: Vec<LineageId> = ready
            .iter()
            .filter(|r| r.kind() == Kind::Charter)
            .map(|r| LineageId::from(r.id()))
            .collect();
        let count = ready.len();
        let kept = ready.clone();
        let eager = self.blobs.policy == crate::config::BlobPolicy::Eager;
        let store = self.store.clone();
        let stored = blocking(move || {
            let wanted = match eager {
                true => missing_content(&store, &ready),
                false => vec![],
            };
            store.want_blobs(wanted.clone())?;
            let new = match durable {
                true => store.put(ready)?,
                false => store.put_relayed(ready)?,
            };
            Ok((new, wanted))
        })
        .await;
        match stored {
            Ok((new, wanted)) => {
                tracing::debug!(target: "commons_node::sync", records = count, new = new.len(), blobs_wanted = wanted.len(), "records stored");
                report.new_records += new.len();
                if !new.is_empty() {
                    let fresh: BTreeSet<&RecordId> = new.iter().collect();
                    let stored: Vec<Record> = kept
                        .into_iter()
                        .filter(|r| fresh.contains(&r.id()))
                        .collect();
                    self.reconcile.stored(&stored);
                    self.activity.stored(&stored);
                }
                self.downloads.want(from, wanted);
            }
            Err(e) => {
                tracing::warn!(target: "commons_node", error = %e, "cannot store records");
                return;
            }
        }
        if charters.is_empty() {
            return;
        }
        let followed = self.followed_families().await;
        for l in charters {
            if let Some(f) = self.family_of(l).await
                && followed.contains(&f)
            {
                let _ = self.net.follow(l).await;
            }
        }
    }

    /// Fetches the blobs that are not present, verified 16 KiB at a time as they stream in
    /// (`blobs.rs`), from the sender and every other connected peer in parallel: a relay may
    /// not hold the blobs yet (gossip forwards a record as soon as it is verified), so peers are
    /// asked a few times with a growing pause. Returns whether all are present afterwards.
    pub(crate) async fn fetch_blobs(
        &self,
        from: Option<PeerId>,
        blobs: &[BlobHash],
        report: &mut SyncReport,
    ) -> bool {
        self.fetch_blobs_with(from, blobs, report, BLOB_FETCH_ATTEMPTS)
            .await
    }

    /// [`Ctx::fetch_blobs`] with `attempts` rounds over the peers.
    pub(crate) async fn fetch_blobs_with(
        &self,
        from: Option<PeerId>,
        blobs: &[BlobHash],
        report: &mut SyncReport,
        attempts: u32,
    ) -> bool {
        let mut missing: Vec<BlobHash> = blobs
            .iter()
            .filter(|h| !self.store.blobs().contains(h))
            .copied()
            .collect();
        let mut pause = BLOB_RETRY_FIRST_PAUSE;
        for attempt in 0..attempts {
            if missing.is_empty() {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            let mut peers: Vec<PeerId> = from.into_iter().collect();
            if let Ok(status) = self.net.status().await {
                peers.extend(status.connected.into_iter().filter(|p| Some(*p) != from));
            }
            // Small blobs first, many per round trip, from each peer in turn; what is left
            // (large blobs, blobs no peer sent whole) streams one blob at a time below.
            for peer in &peers {
                if missing.len() < 2 {
                    break;
                }
                let got = self
                    .blobs
                    .fetch_small_batch(&self.net, self.store.blobs(), *peer, &missing)
                    .await;
                if !got.is_empty() {
                    report.new_blobs += got.len();
                    report.blob_bytes += got.iter().map(|(_, len)| len).sum::<u64>();
                    let got: HashSet<BlobHash> = got.into_iter().map(|(h, _)| h).collect();
                    missing.retain(|h| !got.contains(h));
                }
            }
            // Several blobs at once: small files are bound by round trips, not bandwidth. The
            // requests in flight stay bounded by `Blobs` (per node and per peer).
            let peers = &peers;
            let results: Vec<(BlobHash, anyhow::Result<crate::blobs::Fetched>)> =
                futures::stream::iter(missing)
                    .map(|hash| async move {
                        let r = self
                            .blobs
                            .fetch(&self.net, self.store.blobs(), hash, peers)
                            .await;
                        (hash, r)
                    })
                    .buffer_unordered(BLOBS_AT_ONCE)
                    .collect()
                    .await;
            let mut still = Vec::new();
            for (hash, result) in results {
                match result {
                    Ok(f) => {
                        if f.received > 0 || f.resumed > 0 {
                            report.new_blobs += 1;
                            report.blob_bytes += f.received;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(target: "commons_node::sync", blob = %hash, error = %format!("{e:#}"), "blob fetch failed");
                    }
                }
                if !self.store.blobs().contains(&hash) {
                    still.push(hash);
                }
            }
            missing = still;
        }
        // Small blobs went to a pack: one fsync for all of them, before anything that names
        // them is committed. Blobs found present may have been packed by another task that
        // has not synced yet, so the check is for anything pending, not for what came here.
        if !self.store.blobs().has_unsynced() {
            return missing.is_empty();
        }
        let blobs = self.store.blobs().clone();
        let synced = tokio::task::spawn_blocking(move || blobs.sync()).await;
        if let Err(e) = synced.map_err(std::io::Error::other).and_then(|r| r) {
            tracing::warn!(target: "commons_node::sync", error = %e, "cannot make downloaded blobs durable");
            return false;
        }
        missing.is_empty()
    }
}

/// What a record depends on: a fork's parent charter and heads, a patch's lineage and parents,
/// a validation's lineage and patch.
fn dependencies(record: &Record) -> Vec<RecordId> {
    match record.body() {
        commons_core::Body::Charter(c) => match &c.fork {
            Some(f) => std::iter::once(f.parent.into())
                .chain(f.heads.iter().copied())
                .collect(),
            None => vec![],
        },
        commons_core::Body::Patch(p) => std::iter::once(p.lineage.into())
            .chain(p.parents.iter().copied())
            .collect(),
        commons_core::Body::Validation(v) => vec![v.lineage.into(), v.patch],
    }
}

/// The blobs the patches among `records` create that the blob store does not hold, each once
/// with the lineage of a patch that creates it.
pub(crate) fn missing_content(
    store: &commons_store::Store,
    records: &[Record],
) -> Vec<(BlobHash, LineageId)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for p in records.iter().filter_map(Record::as_patch) {
        for hash in p.changes.iter().filter_map(|c| c.after) {
            if seen.insert(hash) && !store.blobs().contains(&hash) {
                out.push((hash, p.lineage));
            }
        }
    }
    out
}

/// The blobs the patches among `records` create, each once.
fn blobs_of(records: &[Record]) -> Vec<BlobHash> {
    records
        .iter()
        .filter_map(Record::as_patch)
        .flat_map(|p| p.changes.iter().filter_map(|c| c.after))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// `records` in an order the store can apply without going back: charters (a fork's after
/// its parent's, by timestamp), then patches each after those of its parents that are among
/// `records`, each followed by the validations that judge it; validations of other patches
/// last. Every record of `records` is in the result once.
fn history_order(records: Vec<Record>) -> Vec<Record> {
    use std::collections::{BTreeMap, HashMap};
    let mut charters = Vec::new();
    let mut patches: BTreeMap<RecordId, Record> = BTreeMap::new();
    let mut judging: HashMap<RecordId, Vec<Record>> = HashMap::new();
    for r in records {
        match r.body() {
            commons_core::Body::Charter(_) => charters.push(r),
            commons_core::Body::Patch(_) => {
                patches.insert(r.id(), r);
            }
            commons_core::Body::Validation(v) => judging.entry(v.patch).or_default().push(r),
        }
    }
    charters.sort_by_key(|r| (r.timestamp(), r.id()));
    // Kahn's algorithm over the parent links inside the set, smallest id first among equals.
    let mut waiting_on: HashMap<RecordId, usize> = HashMap::new();
    let mut children: HashMap<RecordId, Vec<RecordId>> = HashMap::new();
    for (id, r) in &patches {
        let parents = r
            .as_patch()
            .map(|p| p.parents.as_slice())
            .unwrap_or_default();
        let inside = parents.iter().filter(|p| patches.contains_key(p)).count();
        waiting_on.insert(*id, inside);
        for p in parents.iter().filter(|p| patches.contains_key(p)) {
            children.entry(*p).or_default().push(*id);
        }
    }
    let mut free: BTreeSet<RecordId> = waiting_on
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(id, _)| *id)
        .collect();
    let mut out = Vec::with_capacity(charters.len() + patches.len() + judging.len());
    out.extend(charters);
    while let Some(id) = free.pop_first() {
        for child in children.remove(&id).unwrap_or_default() {
            if let Some(n) = waiting_on.get_mut(&child) {
                *n -= 1;
                if *n == 0 {
                    free.insert(child);
                }
            }
        }
        if let Some(r) = patches.remove(&id) {
            out.push(r);
        }
        out.extend(judging.remove(&id).unwrap_or_default());
    }
    // Ids are hashes of content that names the parents, so there is no cycle; whatever is
    // left (it cannot be) still goes in.
    for (id, r) in patches {
        out.push(r);
        out.extend(judging.remove(&id).unwrap_or_default());
    }
    let mut rest: Vec<(RecordId, Vec<Record>)> = judging.into_iter().collect();
    rest.sort_by_key(|(id, _)| *id);
    out.extend(rest.into_iter().flat_map(|(_, v)| v));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use commons_core::{Body, Change, Patch, SecretKey, Validation, Verdict};

    #[test]
    fn history_order_puts_parents_before_children_and_validations_after_their_patch() {
        let key = SecretKey::from_seed([3; 32]);
        let charter = crate::testing::charter(&key);
        let lineage = LineageId::from(charter.id());
        // A chain of patches, a second head on the first, and a validation of each.
        let mut patches: Vec<Record> = Vec::new();
        for i in 0..40u64 {
            let parents = match i {
                0 => vec![],
                39 => vec![patches[0].id()],
                _ => vec![patches[i as usize - 1].id()],
            };
            let patch = Patch {
                lineage,
                parents,
                changes: vec![Change {
                    path: format!("f{i}"),
                    before: None,
                    after: Some(BlobHash::of(&i.to_be_bytes())),
                }],
                message: format!("p{i}"),
            };
            patches.push(Record::sign(&key, 10 + i, Body::Patch(patch)).expect("sign"));
        }
        let validate = |patch: RecordId, t: u64| {
            Record::sign(
                &key,
                t,
                Body::Validation(Validation {
                    lineage,
                    patch,
                    verdict: Verdict::Accept,
                    note: String::new(),
                }),
            )
            .expect("sign")
        };
        let mut all: Vec<Record> = patches
            .iter()
            .enumerate()
            .map(|(i, p)| validate(p.id(), 100 + i as u64))
            .collect();
        // One validation of a patch that is not in the set, and the charter.
        all.push(validate(RecordId([0xee; 32]), 500));
        all.push(charter.clone());
        all.extend(patches.iter().cloned());
        // Arrival in id order, as a catch-up brings them.
        all.sort_by_key(Record::id);
        let ordered = history_order(all.clone());

        assert_eq!(ordered.len(), all.len(), "every record once");
        let at = |id: RecordId| ordered.iter().position(|r| r.id() == id).expect("present");
        assert_eq!(ordered[0].id(), charter.id(), "charters first");
        for (i, p) in patches.iter().enumerate() {
            for parent in &p.as_patch().expect("patch").parents {
                assert!(at(*parent) < at(p.id()), "patch {i} after its parent");
            }
        }
        for r in &ordered {
            if let Body::Validation(v) = r.body()
                && let Some(p) = patches.iter().find(|p| p.id() == v.patch)
            {
                assert!(at(p.id()) < at(r.id()), "a validation after its patch");
            }
        }
        let last = ordered.last().expect("not empty");
        assert!(
            matches!(last.body(), Body::Validation(v) if !patches.iter().any(|p| p.id() == v.patch)),
            "the validation of an absent patch goes last"
        );
    }
}
