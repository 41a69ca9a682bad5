//! The node's side of the network: [`NetHandle`] to give orders, [`NetEvent`] for what happened,
//! [`Responder`] to answer a peer's sync request, and the errors.
//!
//! Every method of the handle sends one command over a bounded channel to the network task and
//! waits for its reply on a oneshot channel. Responses to sync requests are checked here, on the
//! caller's task, so the network task never spends time verifying records it did not ask for.

use std::collections::HashSet;
use std::sync::Arc;

use commons_core::{BlobHash, DecodeError, LineageId, Record, RecordId};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch};

use crate::gossip;
use crate::wire::{MAX_LIST_IDS, SyncRequest, SyncResponse, WireError};

/// Something the network saw that the node should know.
#[derive(Debug)]
pub enum NetEvent {
    /// The node listens on this address.
    ListeningOn(Multiaddr),
    /// First connection to a peer.
    PeerConnected(PeerId),
    /// Last connection to a peer closed.
    PeerDisconnected(PeerId),
    /// A peer announced it follows a lineage. A good moment to catch up with it.
    PeerFollows {
        /// The peer.
        peer: PeerId,
        /// The lineage.
        lineage: LineageId,
    },
    /// A verified record arrived by gossip (it was already forwarded). Duplicates are possible.
    Record {
        /// The peer that sent it to us (not necessarily its author).
        from: PeerId,
        /// The lineage topic it arrived on.
        lineage: LineageId,
        /// The record, decoded and verified.
        record: Box<Record>,
    },
    /// A peer asks for something; answer through `reply` (dropping it refuses the request).
    Request {
        /// Who asks.
        peer: PeerId,
        /// What it asks for; the limits of the protocol have been checked.
        request: SyncRequest,
        /// Where the answer goes.
        reply: Responder,
    },
    /// A peer reached the strike limit and is banned for a while.
    PeerBanned(PeerId),
}

/// The way back to a peer that sent a sync request.
#[derive(Debug)]
pub struct Responder {
    pub(crate) tx: oneshot::Sender<SyncResponse>,
}

impl Responder {
    /// Sends the answer. It is trimmed to the request and the protocol's caps before it goes on
    /// the wire (see [`SyncResponse::fit_to`]). Answering late (after the request timeout) does
    /// nothing.
    pub fn respond(self, response: SyncResponse) {
        // The network task may have given up on this request; nothing to do then.
        let _ = self.tx.send(response);
    }
}

/// What became of a publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Sent to at least one peer (or already sent earlier).
    Sent,
    /// No connected peer follows the record's lineage yet. Not an error: peers get it by sync.
    NoPeers,
}

/// The state of the network, for `commons status`.
#[derive(Debug, Clone)]
pub struct NetStatus {
    /// This node's peer id.
    pub peer_id: PeerId,
    /// Addresses it listens on.
    pub listen_addrs: Vec<Multiaddr>,
    /// Connected peers.
    pub connected: Vec<PeerId>,
    /// Lineages followed.
    pub followed: Vec<LineageId>,
    /// Peers banned at the moment.
    pub banned: Vec<PeerId>,
    /// Events dropped because the node did not take them fast enough.
    pub dropped_events: u64,
    /// Gossip messages refused since the start, by kind (`gossip::RejectReason::kind`).
    pub refused: std::collections::BTreeMap<String, u64>,
    /// The bootstrap addresses and whether they are connected (see [`crate::redial`]).
    pub bootstrap: Vec<BootstrapStatus>,
}

/// Where one bootstrap address stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapStatus {
    /// The address, as configured.
    pub addr: Multiaddr,
    /// Whether its peer is connected.
    pub connected: bool,
    /// Dials that failed since it was last connected.
    pub failures: u32,
    /// When it is dialled next, if it waits for that.
    pub next_dial: Option<std::time::Duration>,
}

/// What is known about one connected peer.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer.
    pub peer_id: PeerId,
    /// Remote addresses of its connections.
    pub addrs: Vec<Multiaddr>,
    /// Lineages it announced it follows.
    pub lineages: Vec<LineageId>,
    /// Lineages on which it is in our gossip mesh.
    pub mesh: Vec<LineageId>,
    /// Its gossipsub score, if scored.
    pub score: Option<f64>,
    /// Its recent strikes.
    pub strikes: u32,
}

/// One page of record ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdPage {
    /// Ids in ascending order.
    pub ids: Vec<RecordId>,
    /// Whether asking again after the last id gives more.
    pub more: bool,
}

/// One chunk of a blob. It is not verified: the caller checks the whole blob against its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobChunk {
    /// Length of the whole blob.
    pub total_len: u64,
    /// The bytes from the requested offset.
    pub bytes: Vec<u8>,
}

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The node key seed is not a usable ed25519 key.
    #[error("invalid node key: {0}")]
    Key(String),
    /// A transport could not be set up.
    #[error("cannot set up the {transport} transport: {reason}")]
    Transport {
        /// Which.
        transport: &'static str,
        /// Why.
        reason: String,
    },
    /// The behaviour could not be built.
    #[error("cannot set up the protocols: {0}")]
    Behaviour(String),
    /// Listening on an address failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
}

/// Why an order to the network failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The network task has stopped.
    #[error("the network has stopped")]
    Closed,
    /// Too much of this is in flight; try again later.
    #[error("the network is busy: {0}")]
    Busy(&'static str),
    /// Following more lineages than gossip peers accept.
    #[error("already following the most lineages allowed ({max})")]
    TooManyFollowed {
        /// The limit.
        max: usize,
    },
    /// Subscribing to the lineage topic failed.
    #[error("cannot follow lineage {lineage}: {reason}")]
    Follow {
        /// The lineage.
        lineage: LineageId,
        /// Why.
        reason: String,
    },
    /// The address could not be dialled.
    #[error("cannot dial {addr}: {reason}")]
    Dial {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
}

/// Why a record could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The network task has stopped.
    #[error("the network has stopped")]
    Closed,
    /// The record names no lineage to publish on.
    #[error("record {0} names no lineage")]
    NoLineage(RecordId),
    /// Every peer's send queue is full.
    #[error("every peer's send queue is full")]
    QueuesFull,
    /// Gossipsub refused it.
    #[error("gossip refused record {id}: {reason}")]
    Gossip {
        /// The record.
        id: RecordId,
        /// Why.
        reason: String,
    },
}

/// How a sync request failed on the way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestFailure {
    /// The peer could not be dialled.
    #[error("cannot dial the peer")]
    DialFailure,
    /// No response within the request timeout.
    #[error("timed out")]
    Timeout,
    /// The connection closed before the response.
    #[error("connection closed")]
    ConnectionClosed,
    /// The peer does not speak the sync protocol, or refused the request.
    #[error("the peer does not serve the sync protocol")]
    UnsupportedProtocols,
    /// The peer closed the stream without answering: it refused the request (too many pending
    /// from us, or its node did not answer).
    #[error("the peer refused the request")]
    Refused,
    /// Reading or writing the stream failed (including a response over the limits, or a request
    /// the peer refused by closing the stream).
    #[error("stream error: {0}")]
    Io(String),
}

/// What was wrong with a peer's response (the peer has been penalised for it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadResponse {
    /// The response is not of the kind the request calls for.
    #[error("wrong kind of response")]
    WrongKind,
    /// A returned record is invalid.
    #[error("record {index} is invalid: {error}")]
    InvalidRecord {
        /// Its position in the response.
        index: usize,
        /// Why.
        error: DecodeError,
    },
    /// A returned record was not asked for.
    #[error("record {0} was not requested")]
    Unrequested(RecordId),
    /// A record came twice.
    #[error("record {0} came twice")]
    Duplicate(RecordId),
    /// Ids not in ascending order after the cursor, or more than the limit.
    #[error("id page out of order or over the limit")]
    BadPage,
    /// A reconciliation message that breaks its caps or the order of its ranges.
    #[error("bad reconciliation message: {0}")]
    Reconcile(commons_core::reconcile::MessageError),
    /// More entries than were asked for.
    #[error("{got} entries for {asked} asked")]
    TooMany {
        /// Entries asked for.
        asked: usize,
        /// Entries received.
        got: usize,
    },
    /// A blob chunk of the wrong length for the offset and total length.
    #[error(
        "blob chunk of {got} bytes at offset {offset} does not fit a blob of {total_len} bytes"
    )]
    BadChunk {
        /// The offset asked for.
        offset: u64,
        /// Bytes received.
        got: usize,
        /// The total length claimed.
        total_len: u64,
    },
}

/// Why fetching from a peer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The network task has stopped.
    #[error("the network has stopped")]
    Closed,
    /// Too many requests in flight.
    #[error("too many requests in flight")]
    Busy,
    /// The request breaks the protocol's limits and was not sent.
    #[error("invalid request: {0}")]
    InvalidRequest(WireError),
    /// The peer does not have it.
    #[error("{peer} does not have it")]
    NotFound {
        /// The peer.
        peer: PeerId,
    },
    /// The request failed on the way.
    #[error("request to {peer} failed: {failure}")]
    Failed {
        /// The peer.
        peer: PeerId,
        /// How.
        failure: RequestFailure,
    },
    /// The peer answered wrongly and was penalised.
    #[error("bad response from {peer}: {reason}")]
    BadResponse {
        /// The peer.
        peer: PeerId,
        /// What was wrong.
        reason: BadResponse,
    },
}

/// Orders from the handle to the network task.
#[derive(Debug)]
pub(crate) enum Command {
    Follow {
        lineage: LineageId,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Unfollow {
        lineage: LineageId,
        reply: oneshot::Sender<()>,
    },
    Publish {
        id: RecordId,
        lineages: Vec<LineageId>,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<Published, PublishError>>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Status {
        reply: oneshot::Sender<NetStatus>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    Request {
        peer: PeerId,
        request: SyncRequest,
        reply: oneshot::Sender<Result<SyncResponse, FetchError>>,
    },
    Providers {
        lineage: LineageId,
        reply: oneshot::Sender<Result<Vec<PeerId>, NetError>>,
    },
    Penalise {
        peer: PeerId,
        reason: String,
    },
    Block {
        entry: Blocked,
        on: bool,
        reply: oneshot::Sender<bool>,
    },
}

/// An entry of the block list (see [`crate::policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Blocked {
    /// Records signed by this author are refused and not forwarded.
    Author(commons_core::PublicKey),
    /// This peer is disconnected and refused, and what it sends is dropped.
    Peer(PeerId),
}

/// Gives orders to the network task. Cheap to clone; the task stops when [`NetHandle::shutdown`]
/// is called or every handle is dropped.
#[derive(Debug, Clone)]
pub struct NetHandle {
    commands: mpsc::Sender<Command>,
    shutdown: Arc<watch::Sender<bool>>,
    peer_id: PeerId,
}

impl NetHandle {
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        shutdown: watch::Sender<bool>,
        peer_id: PeerId,
    ) -> Self {
        NetHandle {
            commands,
            shutdown: Arc::new(shutdown),
            peer_id,
        }
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Follows a lineage: subscribes to its topic, announces this node as a provider in the DHT
    /// and looks for other providers to connect to.
    pub async fn follow(&self, lineage: LineageId) -> Result<(), NetError> {
        self.call(|reply| Command::Follow { lineage, reply })
            .await
            .unwrap_or(Err(NetError::Closed))
    }

    /// Stops following a lineage.
    pub async fn unfollow(&self, lineage: LineageId) -> Result<(), NetError> {
        self.call(|reply| Command::Unfollow { lineage, reply })
            .await
            .ok_or(NetError::Closed)
    }

    /// Publishes a record on the topics of the lineages it belongs to (see [`gossip::lineages_of`]).
    pub async fn publish(&self, record: &Record) -> Result<Published, PublishError> {
        let lineages = gossip::lineages_of(record);
        if lineages.is_empty() {
            return Err(PublishError::NoLineage(record.id()));
        }
        let id = record.id();
        let bytes = record.bytes().to_vec();
        self.call(|reply| Command::Publish {
            id,
            lineages,
            bytes,
            reply,
        })
        .await
        .unwrap_or(Err(PublishError::Closed))
    }

    /// Starts dialling an address (returns once the dial has started, not when connected).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.call(|reply| Command::Dial { addr, reply })
            .await
            .unwrap_or(Err(NetError::Closed))
    }

    /// The state of the network.
    pub async fn status(&self) -> Result<NetStatus, NetError> {
        self.call(|reply| Command::Status { reply })
            .await
            .ok_or(NetError::Closed)
    }

    /// The connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NetError> {
        self.call(|reply| Command::Peers { reply })
            .await
            .ok_or(NetError::Closed)
    }

    /// Peers that announced in the DHT that they follow a lineage. Those found are dialled too.
    pub async fn providers(&self, lineage: LineageId) -> Result<Vec<PeerId>, NetError> {
        self.call(|reply| Command::Providers { lineage, reply })
            .await
            .unwrap_or(Err(NetError::Closed))
    }

    /// Counts a strike against a peer (the node found something wrong with what it sent):
    /// lowers its gossip score and, at the strike limit, bans it for a while.
    pub async fn report_bad_peer(&self, peer: PeerId, reason: &str) -> Result<(), NetError> {
        self.commands
            .send(Command::Penalise {
                peer,
                reason: reason.to_owned(),
            })
            .await
            .map_err(|_| NetError::Closed)
    }

    /// Blocks (`on`) or unblocks an author or a peer. Returns false if the block list is full.
    pub async fn block(&self, entry: Blocked, on: bool) -> Result<bool, NetError> {
        self.call(|reply| Command::Block { entry, on, reply })
            .await
            .ok_or(NetError::Closed)
    }

    /// Stops the network task. The task closes its connections and ends; the join handle
    /// returned by [`crate::spawn`] completes.
    pub fn shutdown(&self) {
        // No receiver means the task has already stopped.
        let _ = self.shutdown.send(true);
    }

    async fn request(
        &self,
        peer: PeerId,
        request: SyncRequest,
    ) -> Result<SyncResponse, FetchError> {
        request.check().map_err(FetchError::InvalidRequest)?;
        let resp = self
            .call(|reply| Command::Request {
                peer,
                request,
                reply,
            })
            .await
            .unwrap_or(Err(FetchError::Closed))?;
        match resp {
            SyncResponse::NotFound => Err(FetchError::NotFound { peer }),
            other => Ok(other),
        }
    }

    async fn bad_response<T>(&self, peer: PeerId, reason: BadResponse) -> Result<T, FetchError> {
        tracing::warn!(target: "commons_net", %peer, %reason, "bad sync response");
        // If the task is gone there is nobody to penalise the peer; the error still stands.
        let _ = self.report_bad_peer(peer, &reason.to_string()).await;
        Err(FetchError::BadResponse { peer, reason })
    }

    /// Fetches records by id (1 to 256). Returns those the peer had, decoded and verified, in the
    /// peer's order; missing ones are simply absent (ask another peer, or again: a peer may send
    /// fewer to stay under the response cap). A peer that returns anything invalid or anything
    /// not asked for is penalised, and the call fails.
    pub async fn get_records(
        &self,
        peer: PeerId,
        ids: Vec<RecordId>,
    ) -> Result<Vec<Record>, FetchError> {
        let wanted: HashSet<RecordId> = ids.iter().copied().collect();
        let items = match self.request(peer, SyncRequest::GetRecords { ids }).await {
            Ok(SyncResponse::Records(items)) => items,
            Ok(_) => return self.bad_response(peer, BadResponse::WrongKind).await,
            Err(FetchError::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        match check_records(&wanted, &items) {
            Ok(records) => Ok(records),
            Err(reason) => self.bad_response(peer, reason).await,
        }
    }

    /// Lists the record ids of a family after `after` (exclusive), at most `limit` (clamped to
    /// 4096), in ascending order. Page on with the last id while `more` is set.
    pub async fn list_ids(
        &self,
        peer: PeerId,
        family: LineageId,
        after: Option<RecordId>,
        limit: u32,
    ) -> Result<IdPage, FetchError> {
        let limit = limit.min(MAX_LIST_IDS);
        let request = SyncRequest::ListIds {
            family,
            after,
            limit,
        };
        let (ids, more) = match self.request(peer, request).await {
            Ok(SyncResponse::Ids { ids, more }) => (ids, more),
            Ok(_) => return self.bad_response(peer, BadResponse::WrongKind).await,
            Err(FetchError::NotFound { .. }) => (Vec::new(), false),
            Err(e) => return Err(e),
        };
        if !page_is_ordered(&ids, after, limit) {
            return self.bad_response(peer, BadResponse::BadPage).await;
        }
        Ok(IdPage { ids, more })
    }

    /// Sends one message of a reconciliation session over a family's record ids and returns
    /// the peer's answer, checked against the caps and the order of ranges (a peer that breaks
    /// them is penalised). Sessions are driven by [`NetHandle::reconcile`].
    pub async fn reconcile_round(
        &self,
        peer: PeerId,
        family: LineageId,
        round: u32,
        message: commons_core::reconcile::Message,
    ) -> Result<commons_core::reconcile::Message, FetchError> {
        let request = SyncRequest::Reconcile {
            family,
            round,
            message,
        };
        let answer = match self.request(peer, request).await? {
            SyncResponse::Reconcile(m) => m,
            _ => return self.bad_response(peer, BadResponse::WrongKind).await,
        };
        match answer.check(&commons_core::reconcile::RESPONSE_LIMITS) {
            Ok(()) => Ok(answer),
            Err(e) => self.bad_response(peer, BadResponse::Reconcile(e)).await,
        }
    }

    /// Fetches `len` (1 to 1 MiB) bytes of a blob from `offset`. Nothing is verified but the
    /// lengths: the caller checks the whole blob against its hash.
    pub async fn get_blob_chunk(
        &self,
        peer: PeerId,
        hash: BlobHash,
        offset: u64,
        len: u32,
    ) -> Result<BlobChunk, FetchError> {
        let request = SyncRequest::GetBlob { hash, offset, len };
        let (total_len, bytes) = match self.request(peer, request).await? {
            SyncResponse::Blob { total_len, bytes } => (total_len, bytes),
            _ => return self.bad_response(peer, BadResponse::WrongKind).await,
        };
        let expected = total_len.saturating_sub(offset).min(u64::from(len));
        if bytes.len() as u64 != expected {
            let reason = BadResponse::BadChunk {
                offset,
                got: bytes.len(),
                total_len,
            };
            return self.bad_response(peer, reason).await;
        }
        Ok(BlobChunk { total_len, bytes })
    }

    /// Fetches up to [`wire::MAX_SMALL_BLOBS`] small blobs whole, one entry per hash in order
    /// (possibly fewer: ask again for the rest). Nothing is verified here: the caller checks
    /// each blob against its hash.
    pub async fn get_small_blobs(
        &self,
        peer: PeerId,
        hashes: Vec<BlobHash>,
    ) -> Result<Vec<crate::wire::SmallBlob>, FetchError> {
        let asked = hashes.len();
        let blobs = match self
            .request(peer, SyncRequest::GetSmallBlobs { hashes })
            .await?
        {
            SyncResponse::SmallBlobs(blobs) => blobs,
            _ => return self.bad_response(peer, BadResponse::WrongKind).await,
        };
        if blobs.len() > asked {
            return self
                .bad_response(
                    peer,
                    BadResponse::TooMany {
                        asked,
                        got: blobs.len(),
                    },
                )
                .await;
        }
        Ok(blobs)
    }

    /// Asks `peer` for a ticket to its bulk port (`crate::bulk`), a clear-text one if `clear`.
    /// `FetchError::NotFound` if it does not serve bulk transfers.
    pub async fn open_bulk(
        &self,
        peer: PeerId,
        clear: bool,
    ) -> Result<crate::bulk::Ticket, FetchError> {
        match self.request(peer, SyncRequest::OpenBulk { clear }).await? {
            SyncResponse::BulkTicket { port, token, key } => {
                Ok(crate::bulk::Ticket { port, token, key })
            }
            _ => self.bad_response(peer, BadResponse::WrongKind).await,
        }
    }

    /// Fetches `len` (1 to 1 MiB) bytes of a blob's outboard from `offset`, with the blob's
    /// length. Nothing is verified here: the caller knows the outboard's layout, checks the
    /// lengths against the blob's and the whole outboard against the blob's hash.
    pub async fn get_outboard(
        &self,
        peer: PeerId,
        hash: BlobHash,
        offset: u64,
        len: u32,
    ) -> Result<BlobChunk, FetchError> {
        let request = SyncRequest::GetOutboard { hash, offset, len };
        match self.request(peer, request).await? {
            SyncResponse::Outboard { total_len, bytes } => Ok(BlobChunk { total_len, bytes }),
            _ => self.bad_response(peer, BadResponse::WrongKind).await,
        }
    }
}

/// Verifies the records of a `Records` response against the ids asked for.
fn check_records(
    wanted: &HashSet<RecordId>,
    items: &[Vec<u8>],
) -> Result<Vec<Record>, BadResponse> {
    let slices: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
    let mut seen = HashSet::with_capacity(items.len());
    let mut out = Vec::with_capacity(items.len());
    for (index, decoded) in Record::decode_batch(&slices).into_iter().enumerate() {
        let record = decoded.map_err(|error| BadResponse::InvalidRecord { index, error })?;
        let id = record.id();
        if !wanted.contains(&id) {
            return Err(BadResponse::Unrequested(id));
        }
        if !seen.insert(id) {
            return Err(BadResponse::Duplicate(id));
        }
        out.push(record);
    }
    Ok(out)
}

/// Whether ids are strictly ascending, all after the cursor, and no more than the limit.
fn page_is_ordered(ids: &[RecordId], after: Option<RecordId>, limit: u32) -> bool {
    if ids.len() > limit as usize {
        return false;
    }
    let mut prev = after;
    for id in ids {
        if prev.is_some_and(|p| *id <= p) {
            return false;
        }
        prev = Some(*id);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_must_ascend_after_the_cursor() {
        let a = RecordId([1; 32]);
        let b = RecordId([2; 32]);
        let c = RecordId([3; 32]);
        assert!(page_is_ordered(&[a, b, c], None, 3));
        assert!(page_is_ordered(&[b, c], Some(a), 3));
        assert!(!page_is_ordered(&[a, b], Some(a), 3));
        assert!(!page_is_ordered(&[b, a], None, 3));
        assert!(!page_is_ordered(&[a, b, c], None, 2));
    }
}
