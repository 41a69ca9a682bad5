//! What the daemon does with requests from the CLI and records from peers.
//!
//! [`Ctx`] holds handles only (the store, the network, the follow list); it is cloned into each
//! task. Store calls block on the storage thread, so they run under `spawn_blocking`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use commons_core::{BlobHash, Kind, LineageId, Record, RecordId};
use commons_net::{NetHandle, PeerId};
use commons_rpc::{RecordBytes, Request, Response, RpcError, Summary, SyncReport};
use commons_store::{LineageSummary, Store, StoreError};
use tokio::sync::Semaphore;

use crate::follows::Follows;
pub use crate::sync::{
    BLOB_FETCH_ATTEMPTS, BLOB_RETRY_FIRST_PAUSE, BLOBS_AT_ONCE, CATCH_UP_BATCH,
    CATCH_UP_BATCH_BYTES, CATCH_UP_CHUNK, FETCH_BATCH, MAX_DEPENDENCY_FETCH,
    RECORD_REQUESTS_IN_FLIGHT,
};

/// Catch-up rounds running at once (each is with one peer for one family).
pub const MAX_CATCHUPS: usize = 4;

/// Handles shared by every task of the daemon.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// The store.
    pub store: Store,
    /// The network.
    pub net: NetHandle,
    /// Followed lineages.
    pub follows: Follows,
    /// Blocked authors and peers (local policy; the network task applies it to gossip).
    pub blocked: crate::follows::BlockList,
    /// The home directory (for store size and temporary files).
    pub home: PathBuf,
    /// The node key, as shown by `node status`.
    pub node_key: commons_core::PublicKey,
    /// Bounds concurrent catch-up rounds.
    pub catchups: Arc<Semaphore>,
    /// The background downloader of wanted blobs: see `downloader.rs`.
    pub downloads: crate::downloader::Downloads,
    /// What the node itself refused, by kind (the network task counts the rest): gossip
    /// records dropped on a full queue, records a peer listed under a family they are not of.
    pub refusals: Arc<std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>>,
    /// Blob downloads (policy, limits, counters): see `blobs.rs`.
    pub blobs: Arc<crate::blobs::Blobs>,
    /// Set reconciliation (item sets, counters): see `reconcile.rs`.
    pub reconcile: Arc<crate::reconcile::Reconciliation>,
    /// Catch-up rounds running, by peer and family.
    pub catching_up: Arc<std::sync::Mutex<CatchUpRounds>>,
    /// The store's size on disk and when it was measured (see [`DISK_USAGE_MAX_AGE`]).
    pub disk_usage: Arc<tokio::sync::Mutex<Option<(Instant, u64)>>>,
    /// Records per store commit of a catch-up ([`CATCH_UP_CHUNK`] but in tests).
    pub catch_up_chunk: usize,
    /// The web explorer's URL, if it is served.
    pub web: Option<String>,
    /// The records stored lately, for the explorer's home page.
    pub activity: Arc<commons_web::activity::Activity>,
}

/// A lock per peer and family, held by the catch-up round running for them.
pub type CatchUpRounds =
    std::collections::BTreeMap<(PeerId, LineageId), Arc<tokio::sync::Mutex<()>>>;

/// How long a measured store size is shown before it is measured again. Measuring walks every
/// blob file; a client polling `node status` must not turn that into a loop.
pub const DISK_USAGE_MAX_AGE: Duration = Duration::from_secs(5);

pub(crate) fn error(code: &str, message: impl ToString) -> Response {
    Response::Error(RpcError {
        code: code.into(),
        message: message.to_string(),
    })
}

fn store_err(e: StoreError) -> Response {
    error("store", e)
}

/// Runs a blocking store call off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or(Err(StoreError::Closed))
}

fn summary(s: LineageSummary, charter: Record) -> Summary {
    Summary {
        lineage: s.lineage,
        charter: RecordBytes(charter.bytes().to_vec()),
        family: s.family,
        root: s.root,
        counts: s.counts.into_iter().collect(),
        files: s.files,
        fork_point: s.fork_point,
    }
}

impl Ctx {
    /// Answers one control request.
    pub async fn handle(&self, req: Request) -> Response {
        match req {
            Request::Put { records } => self.put_from_cli(records).await,
            Request::Get { id } => {
                let store = self.store.clone();
                match blocking(move || store.get(&id)).await {
                    Ok(r) => Response::Record(r.map(|r| RecordBytes(r.bytes().to_vec()))),
                    Err(e) => store_err(e),
                }
            }
            Request::IdsWithPrefix { prefix, limit } => {
                let store = self.store.clone();
                match blocking(move || store.ids_with_prefix(&prefix, limit)).await {
                    Ok(ids) => Response::Ids(ids),
                    Err(e) => store_err(e),
                }
            }
            Request::Lineages => match self.summaries(None).await {
                Ok(s) => Response::Lineages(s),
                Err(e) => store_err(e),
            },
            Request::Lineage { lineage } => match self.summaries(Some(lineage)).await {
                Ok(mut s) => Response::Lineage(s.pop()),
                Err(e) => store_err(e),
            },
            Request::FamilyRecords { family } => {
                let store = self.store.clone();
                match blocking(move || store.family_records(&family)).await {
                    Ok(rs) => Response::Records(
                        rs.iter().map(|r| RecordBytes(r.bytes().to_vec())).collect(),
                    ),
                    Err(e) => store_err(e),
                }
            }
            Request::Patches { lineage, status } => {
                let store = self.store.clone();
                match blocking(move || store.patches(&lineage, status)).await {
                    Ok(p) => Response::Patches(p),
                    Err(e) => store_err(e),
                }
            }
            Request::Status { lineage, patch } => {
                let store = self.store.clone();
                match blocking(move || store.status(&lineage, &patch)).await {
                    Ok(s) => Response::Status(s),
                    Err(e) => store_err(e),
                }
            }
            Request::History { lineage } => {
                let store = self.store.clone();
                match blocking(move || store.history(&lineage)).await {
                    Ok(h) => Response::History(h),
                    Err(e) => store_err(e),
                }
            }
            Request::ValidationsOf { patch } => {
                let store = self.store.clone();
                match blocking(move || store.validations_of(&patch)).await {
                    Ok(rs) => Response::Records(
                        rs.iter().map(|r| RecordBytes(r.bytes().to_vec())).collect(),
                    ),
                    Err(e) => store_err(e),
                }
            }
            Request::Tree { lineage } => {
                let store = self.store.clone();
                match blocking(move || store.tree(&lineage)).await {
                    Ok(t) => Response::Tree(t.into_iter().collect()),
                    Err(e) => store_err(e),
                }
            }
            Request::NodeStatus => self.node_status().await,
            Request::NodePeers => match self.net.peers().await {
                Ok(peers) => Response::Peers(
                    peers
                        .into_iter()
                        .map(|p| commons_rpc::Peer {
                            peer_id: p.peer_id.to_string(),
                            addrs: p.addrs.iter().map(|a| a.to_string()).collect(),
                            score: p.score,
                            strikes: p.strikes,
                        })
                        .collect(),
                ),
                Err(e) => error("network", e),
            },
            Request::Connect { addr } => {
                let addr = match addr.parse() {
                    Ok(a) => a,
                    Err(e) => {
                        return error(
                            "invalid",
                            format!(
                                "`{addr}` is not a multiaddr ({e}); expected e.g. /ip4/192.0.2.1/tcp/4001"
                            ),
                        );
                    }
                };
                match self.net.dial(addr).await {
                    Ok(()) => Response::Ok,
                    Err(e) => error("network", e),
                }
            }
            Request::Follow { lineage } => match self.follow(lineage).await {
                Ok(report) => Response::Synced(report),
                Err(e) => e,
            },
            Request::Unfollow { lineage } => match self.follows.remove_async(lineage).await {
                Ok(true) => {
                    let _ = self.net.unfollow(lineage).await;
                    Response::Ok
                }
                Ok(false) => error("not_found", format!("{lineage} is not followed")),
                Err(e) => error("store", format!("{e:#}")),
            },
            Request::Forget { lineage } => self.forget(lineage).await,
            Request::Sync { lineage } => match self.sync_lineage(lineage).await {
                Ok(report) => Response::Synced(report),
                Err(e) => e,
            },
            Request::FetchBlobs { hashes } => self.fetch_blobs_now(hashes).await,
            Request::Block { entry, on } => self.block(&entry, on).await,
            Request::VerifyStore => self.verify_store().await,
            Request::Blocked => {
                Response::Blocked(self.blocked.list().iter().map(|e| e.to_string()).collect())
            }
            // The control connection handles it; here it only acknowledges.
            Request::WantProgress => Response::Ok,
        }
    }

    async fn summaries(&self, one: Option<LineageId>) -> Result<Vec<Summary>, StoreError> {
        let store = self.store.clone();
        blocking(move || {
            let list = match one {
                Some(l) => store.lineage(&l)?.into_iter().collect(),
                None => store.lineages()?,
            };
            let mut out = Vec::with_capacity(list.len());
            for s in list {
                let id = RecordId::from(s.lineage);
                let Some(charter) = store.get(&id)? else {
                    continue;
                };
                out.push(summary(s, charter));
            }
            Ok(out)
        })
        .await
    }

    async fn put_from_cli(&self, records: Vec<RecordBytes>) -> Response {
        // The CLI sends whole histories at once (create --from, fork): verified on several threads.
        let bytes: Vec<&[u8]> = records.iter().map(|r| r.0.as_slice()).collect();
        let mut verified = Vec::with_capacity(records.len());
        for (i, r) in Record::decode_batch(&bytes).into_iter().enumerate() {
            match r {
                Ok(rec) if self.blocked.blocks_author(&rec.author()) => {
                    return error(
                        "blocked",
                        format!(
                            "record #{i} ({}) is signed by {}, whom this node blocks; `commons unblock` them first",
                            rec.id().short(),
                            rec.author()
                        ),
                    );
                }
                Ok(rec) => verified.push(rec),
                Err(e) => return error("invalid", format!("record #{i}: {e}")),
            }
        }
        let store = self.store.clone();
        let batch = verified.clone();
        // Content the CLI did not bring (a bundle without it, say) is wanted from peers.
        let eager = self.blobs.policy == crate::config::BlobPolicy::Eager;
        let new = match blocking(move || {
            let wanted = match eager {
                true => crate::sync::missing_content(&store, &batch),
                false => vec![],
            };
            store.want_blobs(wanted.clone())?;
            Ok((store.put(batch)?, wanted))
        })
        .await
        {
            Ok((n, wanted)) => {
                self.downloads.want(None, wanted);
                if !n.is_empty() {
                    let new: std::collections::BTreeSet<&RecordId> = n.iter().collect();
                    let fresh: Vec<Record> = verified
                        .iter()
                        .filter(|r| new.contains(&r.id()))
                        .cloned()
                        .collect();
                    self.reconcile.stored(&fresh);
                    self.activity.stored(&fresh);
                }
                n
            }
            Err(e) => return store_err(e),
        };
        let new_set: BTreeSet<RecordId> = new.iter().copied().collect();
        for rec in verified.iter().filter(|r| new_set.contains(&r.id())) {
            // Charters made here (create, fork) are followed automatically.
            if rec.kind() == Kind::Charter {
                let lineage = LineageId::from(rec.id());
                if let Err(e) = self.follows.add_async(lineage).await {
                    tracing::warn!(target: "commons_node", error = %format!("{e:#}"), "cannot save follows");
                }
                self.subscribe_family(lineage).await;
            }
            if let Err(e) = self.net.publish(rec).await {
                tracing::debug!(target: "commons_node", id = %rec.id(), error = %e, "not published");
            }
        }
        Response::Stored(new)
    }

    /// The lineages of the family of `lineage` that this store knows.
    pub(crate) async fn family_lineages(&self, lineage: LineageId) -> Vec<LineageId> {
        let Some(family) = self.family_of(lineage).await else {
            return vec![lineage];
        };
        let store = self.store.clone();
        match blocking(move || store.lineage_families()).await {
            Ok(all) => all
                .into_iter()
                .filter(|(_, f)| *f == Some(family))
                .map(|(l, _)| l)
                .collect(),
            Err(_) => vec![lineage],
        }
    }

    /// Subscribes to the topic of every known lineage of the family of `lineage`.
    pub async fn subscribe_family(&self, lineage: LineageId) {
        for l in self.family_lineages(lineage).await {
            if let Err(e) = self.net.follow(l).await {
                tracing::warn!(target: "commons_node", lineage = %l, error = %e, "cannot subscribe");
            }
        }
    }

    /// The families of the followed lineages, as far as their charters are known.
    pub async fn followed_families(&self) -> BTreeSet<LineageId> {
        let mut out = BTreeSet::new();
        for l in self.follows.list() {
            out.insert(self.family_of(l).await.unwrap_or(l));
        }
        out
    }

    async fn follow(&self, lineage: LineageId) -> Result<SyncReport, Response> {
        if let Err(e) = self.follows.add_async(lineage).await {
            return Err(error("store", format!("{e:#}")));
        }
        self.net
            .follow(lineage)
            .await
            .map_err(|e| error("network", e))?;
        let report = self.sync_lineage(lineage).await?;
        Ok(report)
    }

    /// Pulls a lineage's family from every connected peer (and providers found through the
    /// DHT), then follows the parent chain of what arrived.
    pub async fn sync_lineage(&self, lineage: LineageId) -> Result<SyncReport, Response> {
        let mut peers: BTreeSet<PeerId> = match self.net.status().await {
            Ok(s) => s.connected.into_iter().collect(),
            Err(e) => return Err(error("network", e)),
        };
        if let Ok(found) = self.net.providers(lineage).await {
            peers.extend(found);
        }
        let mut report = SyncReport {
            peers: peers.len(),
            new_records: 0,
            new_blobs: 0,
            blob_bytes: 0,
        };
        // The charter first: it names the family, which is what peers list.
        let store = self.store.clone();
        let have_charter = blocking(move || store.contains(&RecordId::from(lineage)))
            .await
            .unwrap_or(false);
        if !have_charter {
            for peer in &peers {
                if let Ok(records) = self.net.get_records(*peer, vec![lineage.into()]).await {
                    self.ingest(Some(*peer), records, &mut report).await;
                    break;
                }
            }
        }
        let family = self.family_of(lineage).await.unwrap_or(lineage);
        for peer in &peers {
            self.catch_up(*peer, family, &mut report).await;
        }
        // Following a fork follows its parent too: the family covers it, subscribe to all.
        self.subscribe_family(lineage).await;
        Ok(report)
    }

    /// The family of a lineage, from the store's per-lineage metadata (cheap: no summary).
    pub(crate) async fn family_of(&self, lineage: LineageId) -> Option<LineageId> {
        let store = self.store.clone();
        blocking(move || store.family_of(&lineage))
            .await
            .ok()
            .flatten()
            .flatten()
    }

    /// `FetchBlobs` from the CLI: every connected peer is asked for each missing blob.
    async fn fetch_blobs_now(&self, hashes: Vec<BlobHash>) -> Response {
        let peers = match self.net.status().await {
            Ok(s) => s.connected.len(),
            Err(e) => return error("network", e),
        };
        let mut report = SyncReport {
            peers,
            new_records: 0,
            new_blobs: 0,
            blob_bytes: 0,
        };
        if self.fetch_blobs(None, &hashes, &mut report).await {
            Response::Synced(report)
        } else {
            let missing = hashes
                .iter()
                .filter(|h| !self.store.blobs().contains(h))
                .count();
            error(
                "not_found",
                format!(
                    "{missing} of {} blob(s) could not be fetched from {peers} connected peer(s); what was verified is kept for the next try",
                    hashes.len()
                ),
            )
        }
    }
}
