//! The network task: one tokio task owns the libp2p swarm and everything it needs.
//!
//! It waits on, in this order (`biased;`): shutdown, commands from the node, answers the node
//! gave to peers' sync requests, the ban timer, and swarm events. Local work comes before new
//! remote work. Nothing in here blocks or waits on the node: events go out with `try_send`
//! and are counted when dropped, so a slow node can never stall the network (it catches up by
//! sync), and a node waiting on a command reply can never deadlock with the task.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use commons_core::LineageId;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use libp2p::gossipsub::{self, MessageAcceptance, MessageId};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad, mdns, ping};
use tokio::sync::{mpsc, oneshot, watch};

use crate::behaviour::{Behaviour, BehaviourEvent, IDENTIFY_PROTOCOL, KAD_PROTOCOL};
use crate::gossip::{self, Judgement};
use crate::handle::{
    Command, FetchError, NetError, NetEvent, NetStatus, PeerInfo, PublishError, Published,
    RequestFailure, Responder,
};
use crate::penalty::{Penalties, Strike};
use crate::wire::{SyncRequest, SyncResponse};

mod discovery;
mod gossip_events;

/// Commands waiting for the task. The node's callers each wait for their reply, so this holds at
/// most one command per concurrent caller; 256 callers at once is far beyond a daemon's needs.
pub const COMMAND_CHANNEL: usize = 256;
/// Events waiting for the node. A burst of gossip (a busy heartbeat on many topics) fits; beyond
/// it events are dropped and counted rather than stalling the network.
pub const EVENT_CHANNEL: usize = 1024;
/// Gossip messages judged together at most. They wait only while the swarm has other events
/// ready, so a lone message is judged at once.
pub const GOSSIP_JUDGE_BATCH: usize = 64;
/// Inbound sync requests handed to the node and not yet answered, in total. Beyond it requests
/// are refused (the stream is closed), never queued.
pub const MAX_PENDING_INBOUND: usize = 64;
/// Inbound sync requests from one peer not yet answered: one peer cannot take all the slots. It
/// is above a downloader's blob ranges in flight per peer (8, `commons_node::blobs`), so that
/// those and its catch-up requests together are not refused.
pub const MAX_PENDING_INBOUND_PER_PEER: usize = 16;
/// Outbound sync requests in flight. Beyond it the caller gets `FetchError::Busy`.
pub const MAX_PENDING_OUTBOUND: usize = 256;
/// Provider lookups in flight.
pub const MAX_PENDING_QUERIES: usize = 64;
/// Providers remembered per lookup (and dialled).
pub const MAX_PROVIDERS_PER_QUERY: usize = 64;
/// Lineages followed at once: the subscription limit every node accepts from a peer.
pub const MAX_FOLLOWED: usize = crate::behaviour::MAX_PEER_TOPICS;
/// Addresses taken from one identify or mDNS announcement.
pub const MAX_ADDRS_PER_PEER: usize = 16;
/// How often expired bans are lifted.
pub const BAN_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Application score per strike (gossipsub weighs it ×10): one strike costs as much as a gossip
/// threshold breach.
const APP_SCORE_PER_STRIKE: f64 = -1.0;
/// A peer whose gossip score falls below this (gossipsub's default graylist threshold) is
/// banned at once: its gossip is ignored anyway, and it should not get sync service either.
const BAN_SCORE: f64 = -80.0;

/// An inbound request waiting for the node's answer.
struct InboundAnswer {
    peer: PeerId,
    request: SyncRequest,
    channel: ResponseChannel<SyncResponse>,
    answer: Option<SyncResponse>,
}

/// A provider lookup in flight.
struct ProviderQuery {
    lineage: LineageId,
    found: HashSet<PeerId>,
    reply: Option<oneshot::Sender<Result<Vec<PeerId>, NetError>>>,
}

/// Hands events to the node without ever waiting.
struct EventSink {
    tx: mpsc::Sender<NetEvent>,
    dropped: u64,
}

impl EventSink {
    /// Sends an event; false if it was dropped (node too slow or gone).
    fn emit(&mut self, event: NetEvent) -> bool {
        match self.tx.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(event)) => {
                self.dropped += 1;
                tracing::warn!(target: "commons_net", event = event_name(&event), dropped = self.dropped, "event channel full; event dropped");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

fn event_name(e: &NetEvent) -> &'static str {
    match e {
        NetEvent::ListeningOn(_) => "listening_on",
        NetEvent::PeerConnected(_) => "peer_connected",
        NetEvent::PeerDisconnected(_) => "peer_disconnected",
        NetEvent::PeerFollows { .. } => "peer_follows",
        NetEvent::Record { .. } => "record",
        NetEvent::Request { .. } => "request",
        NetEvent::PeerBanned(_) => "peer_banned",
    }
}

/// The network task's state. Each field is one concern; the handlers below are small.
pub(crate) struct NetTask {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    shutdown: watch::Receiver<bool>,
    events: EventSink,
    request_timeout: Duration,
    followed: HashSet<LineageId>,
    outbound: HashMap<OutboundRequestId, oneshot::Sender<Result<SyncResponse, FetchError>>>,
    inbound: FuturesUnordered<BoxFuture<'static, InboundAnswer>>,
    inbound_per_peer: HashMap<PeerId, usize>,
    queries: HashMap<kad::QueryId, ProviderQuery>,
    penalties: Penalties,
    /// The block list and the rate limits on gossip.
    policy: crate::policy::Policy,
    max_connections_per_ip: u32,
    connections: HashMap<PeerId, Vec<(ConnectionId, Multiaddr)>>,
    /// Whether the followed lineages still have to be announced to the DHT. A lineage followed
    /// before the node knew any peer was announced only locally; it is announced again once,
    /// after the first successful Kademlia bootstrap (afterwards Kademlia republishes by itself).
    announce_after_bootstrap: bool,
    /// Gossip messages received and not judged yet (see [`NetTask::judge_gossip`]).
    gossip_waiting: Vec<(PeerId, MessageId, gossipsub::Message)>,
    /// Gossip messages refused since the start, by kind of refusal (a handful of kinds).
    refused: BTreeMap<&'static str, u64>,
    /// The bootstrap addresses, dialled again while they are not connected.
    redial: crate::redial::Redial,
}

impl NetTask {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        shutdown: watch::Receiver<bool>,
        events: mpsc::Sender<NetEvent>,
        cfg: &crate::NetConfig,
    ) -> Self {
        NetTask {
            swarm,
            commands,
            shutdown,
            events: EventSink {
                tx: events,
                dropped: 0,
            },
            request_timeout: cfg.request_timeout,
            followed: HashSet::new(),
            outbound: HashMap::new(),
            inbound: FuturesUnordered::new(),
            inbound_per_peer: HashMap::new(),
            queries: HashMap::new(),
            penalties: Penalties::new(cfg.strikes_before_ban, cfg.ban_duration),
            policy: crate::policy::Policy::new(cfg.rates),
            max_connections_per_ip: cfg.max_connections_per_ip,
            connections: HashMap::new(),
            announce_after_bootstrap: true,
            gossip_waiting: Vec::new(),
            refused: BTreeMap::new(),
            redial: crate::redial::Redial::new(&cfg.bootstrap, Instant::now()),
        }
    }

    /// Runs until shutdown or until every handle is dropped.
    pub(crate) async fn run(mut self) {
        let mut ban_check = tokio::time::interval(BAN_CHECK_INTERVAL);
        ban_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let peer = *self.swarm.local_peer_id();
        tracing::info!(target: "commons_net", %peer, "network task started");
        self.dial_bootstrap();
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => break,
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                Some(answer) = self.inbound.next(), if !self.inbound.is_empty() => self.on_inbound_answer(answer),
                _ = ban_check.tick() => {
                    self.lift_expired_bans();
                    self.dial_bootstrap();
                }
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                // Lowest priority: once nothing else is ready, or when enough are waiting.
                () = std::future::ready(()), if !self.gossip_waiting.is_empty() => self.judge_gossip(),
            }
            if self.gossip_waiting.len() >= GOSSIP_JUDGE_BATCH {
                self.judge_gossip();
            }
        }
        tracing::info!(target: "commons_net", %peer, "network task stopped");
    }

    // ----- commands from the node -----

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Follow { lineage, reply } => {
                let _ = reply.send(self.follow(lineage));
            }
            Command::Unfollow { lineage, reply } => {
                self.unfollow(lineage);
                let _ = reply.send(());
            }
            Command::Publish {
                id,
                lineages,
                bytes,
                reply,
            } => {
                let _ = reply.send(self.publish(id, &lineages, bytes));
            }
            Command::Dial { addr, reply } => {
                let _ = reply.send(self.dial(addr));
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.peers());
            }
            Command::Request {
                peer,
                request,
                reply,
            } => self.send_request(peer, request, reply),
            Command::Providers { lineage, reply } => self.find_providers(lineage, Some(reply)),
            Command::Penalise { peer, reason } => self.strike(peer, &reason),
            Command::Block { entry, on, reply } => {
                let _ = reply.send(self.block(entry, on));
            }
        }
    }

    /// Applies a change of the block list: a blocked peer is disconnected and refused at once
    /// (as a ban, but until unblocked).
    fn block(&mut self, entry: crate::handle::Blocked, on: bool) -> bool {
        use crate::handle::Blocked;
        match entry {
            Blocked::Author(author) => self.policy.block_author(author, on),
            Blocked::Peer(peer) => {
                if !self.policy.block_peer(peer, on) {
                    return false;
                }
                let b = self.swarm.behaviour_mut();
                if on {
                    b.block_list.block_peer(peer);
                } else if !self.penalties.is_banned(&peer) {
                    b.block_list.unblock_peer(peer);
                }
                true
            }
        }
    }

    fn follow(&mut self, lineage: LineageId) -> Result<(), NetError> {
        if !self.followed.contains(&lineage) && self.followed.len() >= MAX_FOLLOWED {
            return Err(NetError::TooManyFollowed { max: MAX_FOLLOWED });
        }
        let topic = gossip::topic(&lineage);
        let gs = &mut self.swarm.behaviour_mut().gossipsub;
        gs.subscribe(&topic).map_err(|e| NetError::Follow {
            lineage,
            reason: e.to_string(),
        })?;
        gs.set_topic_params(topic, crate::behaviour::topic_score_params())
            .map_err(|reason| NetError::Follow {
                lineage,
                reason: reason.to_owned(),
            })?;
        self.followed.insert(lineage);
        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
            if let Err(e) = kad.start_providing(provider_key(&lineage)) {
                tracing::warn!(target: "commons_net", %lineage, error = %e, "cannot announce as provider");
            }
            self.find_providers(lineage, None);
        }
        tracing::info!(target: "commons_net", %lineage, "following");
        Ok(())
    }

    fn unfollow(&mut self, lineage: LineageId) {
        if self.followed.remove(&lineage) {
            let b = self.swarm.behaviour_mut();
            b.gossipsub.unsubscribe(&gossip::topic(&lineage));
            if let Some(kad) = b.kad.as_mut() {
                kad.stop_providing(&provider_key(&lineage));
            }
            tracing::info!(target: "commons_net", %lineage, "unfollowed");
        }
    }

    fn publish(
        &mut self,
        id: commons_core::RecordId,
        lineages: &[LineageId],
        bytes: Vec<u8>,
    ) -> Result<Published, PublishError> {
        let mut outcome = Published::NoPeers;
        for lineage in lineages {
            let gs = &mut self.swarm.behaviour_mut().gossipsub;
            match gs.publish(gossip::topic(lineage), bytes.clone()) {
                Ok(_) | Err(gossipsub::PublishError::Duplicate) => outcome = Published::Sent,
                Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
                Err(gossipsub::PublishError::AllQueuesFull(_)) => {
                    return Err(PublishError::QueuesFull);
                }
                Err(e) => {
                    return Err(PublishError::Gossip {
                        id,
                        reason: e.to_string(),
                    });
                }
            }
        }
        tracing::debug!(target: "commons_net", record = %id, ?outcome, "published");
        Ok(outcome)
    }

    /// Dials the bootstrap addresses that are due (see [`crate::redial`]).
    fn dial_bootstrap(&mut self) {
        let now = Instant::now();
        for (i, addr) in self.redial.due(now) {
            let opts = match self.redial.boots()[i].peer {
                Some(peer) => DialOpts::peer_id(peer)
                    .addresses(vec![addr.clone()])
                    .build(),
                None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
            };
            let conn = opts.connection_id();
            let attempt = self.redial.boots()[i].failures + 1;
            match self.swarm.dial(opts) {
                Ok(()) => {
                    tracing::debug!(target: "commons_net", %addr, attempt, "dialling bootstrap peer");
                    self.redial.dialed(i, Some(conn), now);
                }
                Err(e) => {
                    tracing::debug!(target: "commons_net", %addr, attempt, error = %e, "cannot dial bootstrap peer");
                    self.redial.dialed(i, None, now);
                }
            }
        }
    }

    fn dial(&mut self, addr: Multiaddr) -> Result<(), NetError> {
        self.swarm.dial(addr.clone()).map_err(|e| NetError::Dial {
            addr,
            reason: e.to_string(),
        })
    }

    fn status(&self) -> NetStatus {
        NetStatus {
            peer_id: *self.swarm.local_peer_id(),
            listen_addrs: self.swarm.listeners().cloned().collect(),
            connected: self.swarm.connected_peers().copied().collect(),
            followed: self.followed.iter().copied().collect(),
            banned: self.penalties.banned().copied().collect(),
            dropped_events: self.events.dropped,
            refused: self
                .refused
                .iter()
                .map(|(k, n)| ((*k).to_owned(), *n))
                .collect(),
            bootstrap: self.bootstrap_status(),
        }
    }

    fn bootstrap_status(&self) -> Vec<crate::handle::BootstrapStatus> {
        use crate::redial::BootState;
        let now = Instant::now();
        self.redial
            .boots()
            .iter()
            .map(|b| crate::handle::BootstrapStatus {
                addr: b.addr.clone(),
                connected: b.state == BootState::Connected,
                failures: b.failures,
                next_dial: match b.state {
                    BootState::Waiting(at) => Some(at.saturating_duration_since(now)),
                    _ => None,
                },
            })
            .collect()
    }

    fn peers(&self) -> Vec<PeerInfo> {
        let gs = &self.swarm.behaviour().gossipsub;
        let topics: HashMap<PeerId, Vec<LineageId>> = gs
            .all_peers()
            .map(|(p, ts)| {
                let ls = ts
                    .into_iter()
                    .filter_map(gossip::lineage_of_topic)
                    .collect();
                (*p, ls)
            })
            .collect();
        let mut mesh: HashMap<PeerId, Vec<LineageId>> = HashMap::new();
        for lineage in &self.followed {
            for p in gs.mesh_peers(&gossip::topic(lineage).hash()) {
                mesh.entry(*p).or_default().push(*lineage);
            }
        }
        self.connections
            .iter()
            .map(|(peer, conns)| PeerInfo {
                peer_id: *peer,
                addrs: conns.iter().map(|(_, a)| a.clone()).collect(),
                lineages: topics.get(peer).cloned().unwrap_or_default(),
                mesh: mesh.get(peer).cloned().unwrap_or_default(),
                score: gs.peer_score(peer),
                strikes: self.penalties.strikes(peer),
            })
            .collect()
    }

    fn send_request(
        &mut self,
        peer: PeerId,
        request: SyncRequest,
        reply: oneshot::Sender<Result<SyncResponse, FetchError>>,
    ) {
        if self.outbound.len() >= MAX_PENDING_OUTBOUND {
            let _ = reply.send(Err(FetchError::Busy));
            return;
        }
        let id = self.swarm.behaviour_mut().sync.send_request(&peer, request);
        tracing::debug!(target: "commons_net", %peer, request = ?id, "sync request sent");
        self.outbound.insert(id, reply);
    }

    fn find_providers(
        &mut self,
        lineage: LineageId,
        reply: Option<oneshot::Sender<Result<Vec<PeerId>, NetError>>>,
    ) {
        if self.queries.len() >= MAX_PENDING_QUERIES {
            if let Some(reply) = reply {
                let _ = reply.send(Err(NetError::Busy("provider lookups")));
            }
            return;
        }
        let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() else {
            // Without Kademlia nobody is known to provide anything.
            if let Some(reply) = reply {
                let _ = reply.send(Ok(Vec::new()));
            }
            return;
        };
        let id = kad.get_providers(provider_key(&lineage));
        self.queries.insert(
            id,
            ProviderQuery {
                lineage,
                found: HashSet::new(),
                reply,
            },
        );
    }

    // ----- penalties -----

    /// Counts a strike against a peer, lowers its application score, and bans it at the limit.
    fn strike(&mut self, peer: PeerId, reason: &str) {
        match self.penalties.strike(peer, Instant::now()) {
            Strike::Counted(n) => {
                tracing::warn!(target: "commons_net", %peer, strikes = n, reason, "strike");
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .set_application_score(&peer, APP_SCORE_PER_STRIKE * f64::from(n));
                let score = self.swarm.behaviour().gossipsub.peer_score(&peer);
                if score.is_some_and(|s| s < BAN_SCORE) {
                    self.ban(peer, "gossip score below the graylist threshold");
                }
            }
            Strike::Banned(_) => self.ban(peer, reason),
            Strike::AlreadyBanned => {}
        }
    }

    fn ban(&mut self, peer: PeerId, reason: &str) {
        if !self.penalties.is_banned(&peer) {
            self.penalties.ban(peer, Instant::now());
        }
        // Closes every connection to the peer and refuses new ones until the ban is lifted.
        self.swarm.behaviour_mut().block_list.block_peer(peer);
        tracing::warn!(target: "commons_net", %peer, reason, "peer banned");
        self.events.emit(NetEvent::PeerBanned(peer));
    }

    fn lift_expired_bans(&mut self) {
        self.penalties.expire(Instant::now());
        // Unblock every peer no longer banned: expired, or evicted when the ban list was full.
        let lifted: Vec<PeerId> = self
            .swarm
            .behaviour()
            .block_list
            .blocked_peers()
            .iter()
            .filter(|p| !self.penalties.is_banned(p) && !self.policy.is_blocked_peer(p))
            .copied()
            .collect();
        for peer in lifted {
            let b = self.swarm.behaviour_mut();
            b.block_list.unblock_peer(peer);
            b.gossipsub.set_application_score(&peer, 0.0);
            tracing::info!(target: "commons_net", %peer, "ban lifted");
        }
    }

    // ----- inbound sync requests -----

    fn on_inbound_request(
        &mut self,
        peer: PeerId,
        request: SyncRequest,
        channel: ResponseChannel<SyncResponse>,
    ) {
        let per_peer = self.inbound_per_peer.get(&peer).copied().unwrap_or(0);
        if self.inbound.len() >= MAX_PENDING_INBOUND || per_peer >= MAX_PENDING_INBOUND_PER_PEER {
            // Dropping the channel closes the stream: the peer sees a refusal.
            tracing::debug!(target: "commons_net", %peer, pending = self.inbound.len(), per_peer, "sync request refused: too many pending");
            return;
        }
        // What makes the node read a whole family costs the asker its own budget.
        if matches!(
            request,
            SyncRequest::ListIds { .. } | SyncRequest::Reconcile { .. }
        ) && !self.policy.request(peer, std::time::Instant::now())
        {
            tracing::debug!(target: "commons_net", %peer, "sync request refused: over its budget");
            *self.refused.entry("requests over budget").or_default() += 1;
            return;
        }
        let (tx, rx) = oneshot::channel();
        let event = NetEvent::Request {
            peer,
            request: request.clone(),
            reply: Responder { tx },
        };
        if !self.events.emit(event) {
            return;
        }
        *self.inbound_per_peer.entry(peer).or_default() += 1;
        let timeout = self.request_timeout;
        self.inbound.push(Box::pin(async move {
            let answer = tokio::time::timeout(timeout, rx)
                .await
                .ok()
                .and_then(Result::ok);
            InboundAnswer {
                peer,
                request,
                channel,
                answer,
            }
        }));
    }

    fn on_inbound_answer(&mut self, done: InboundAnswer) {
        if let Some(n) = self.inbound_per_peer.get_mut(&done.peer) {
            *n -= 1;
            if *n == 0 {
                self.inbound_per_peer.remove(&done.peer);
            }
        }
        let Some(answer) = done.answer else {
            tracing::debug!(target: "commons_net", peer = %done.peer, "sync request not answered by the node");
            return;
        };
        let answer = answer.fit_to(&done.request);
        if self
            .swarm
            .behaviour_mut()
            .sync
            .send_response(done.channel, answer)
            .is_err()
        {
            tracing::debug!(target: "commons_net", peer = %done.peer, "sync response not sent: stream gone");
        }
    }

    // ----- swarm events -----

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(e) => self.on_behaviour_event(e),
            SwarmEvent::NewListenAddr { address, .. } => self.on_listening(address),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                if !endpoint.is_dialer() && self.over_ip_cap(endpoint.get_remote_address()) {
                    // One machine may not take every slot with fresh peer ids.
                    tracing::debug!(target: "commons_net", peer = %peer_id, addr = %endpoint.get_remote_address(), "too many connections from one address");
                    *self.refused.entry("connections per address").or_default() += 1;
                    let _ = self.swarm.close_connection(connection_id);
                    return;
                }
                self.on_connected(
                    peer_id,
                    connection_id,
                    endpoint.get_remote_address().clone(),
                    num_established.get(),
                )
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => self.on_disconnected(peer_id, connection_id, num_established),
            SwarmEvent::OutgoingConnectionError {
                peer_id,
                connection_id,
                error,
            } => {
                tracing::debug!(target: "commons_net", peer = ?peer_id, %error, "dial failed");
                self.redial.on_dial_failed(connection_id, Instant::now());
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                tracing::debug!(target: "commons_net", %error, "incoming connection failed");
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!(target: "commons_net", %error, "listener error");
            }
            other => tracing::trace!(target: "commons_net", event = ?other, "swarm event"),
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(e) => self.on_gossipsub(e),
            BehaviourEvent::Sync(e) => self.on_sync(e),
            BehaviourEvent::Kad(e) => self.on_kad(e),
            BehaviourEvent::Identify(e) => self.on_identify(e),
            BehaviourEvent::Ping(e) => self.on_ping(e),
            BehaviourEvent::Mdns(e) => self.on_mdns(e),
            BehaviourEvent::BlockList(never) | BehaviourEvent::Limits(never) => match never {},
        }
    }

    fn on_listening(&mut self, address: Multiaddr) {
        tracing::info!(target: "commons_net", %address, "listening");
        self.events.emit(NetEvent::ListeningOn(address));
    }

    /// Whether a new inbound connection from `addr` would pass [`NetConfig::max_connections_per_ip`].
    fn over_ip_cap(&self, addr: &Multiaddr) -> bool {
        let Some(ip) = crate::bulk::ip_of(addr) else {
            return false;
        };
        let from_ip = self
            .connections
            .values()
            .flatten()
            .filter(|(_, a)| crate::bulk::ip_of(a) == Some(ip))
            .count();
        from_ip >= self.max_connections_per_ip as usize
    }

    fn on_connected(&mut self, peer: PeerId, id: ConnectionId, addr: Multiaddr, established: u32) {
        tracing::debug!(target: "commons_net", %peer, %addr, connection = %id, "connection established");
        self.connections.entry(peer).or_default().push((id, addr));
        self.redial.on_connected(id, peer);
        if established == 1 {
            self.events.emit(NetEvent::PeerConnected(peer));
        }
    }

    fn on_disconnected(&mut self, peer: PeerId, id: ConnectionId, remaining: u32) {
        tracing::debug!(target: "commons_net", %peer, connection = %id, remaining, "connection closed");
        if let Some(conns) = self.connections.get_mut(&peer) {
            conns.retain(|(c, _)| *c != id);
        }
        if remaining == 0 {
            self.connections.remove(&peer);
            self.redial.on_disconnected(peer, Instant::now());
            self.events.emit(NetEvent::PeerDisconnected(peer));
        }
    }

    // ----- request-response -----

    fn on_sync(&mut self, event: request_response::Event<SyncRequest, SyncResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.on_inbound_request(peer, request, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } => self.on_response(peer, request_id, response),
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => self.on_outbound_failure(peer, request_id, error),
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(target: "commons_net", %peer, %error, "inbound sync request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_response(&mut self, peer: PeerId, id: OutboundRequestId, response: SyncResponse) {
        if let Some(reply) = self.outbound.remove(&id) {
            let _ = reply.send(Ok(response));
        } else {
            tracing::debug!(target: "commons_net", %peer, request = ?id, "response to an unknown request");
        }
    }

    fn on_outbound_failure(
        &mut self,
        peer: PeerId,
        id: OutboundRequestId,
        error: request_response::OutboundFailure,
    ) {
        tracing::debug!(target: "commons_net", %peer, request = ?id, %error, "sync request failed");
        let failure = match error {
            request_response::OutboundFailure::DialFailure => RequestFailure::DialFailure,
            request_response::OutboundFailure::Timeout => RequestFailure::Timeout,
            request_response::OutboundFailure::ConnectionClosed => RequestFailure::ConnectionClosed,
            request_response::OutboundFailure::UnsupportedProtocols => {
                RequestFailure::UnsupportedProtocols
            }
            request_response::OutboundFailure::Io(e) => match e.kind() {
                std::io::ErrorKind::UnexpectedEof => RequestFailure::Refused,
                std::io::ErrorKind::InvalidData => {
                    // Our codec reports a response over the limits as invalid data.
                    self.strike(peer, "malformed sync response");
                    RequestFailure::Io(e.to_string())
                }
                _ => RequestFailure::Io(e.to_string()),
            },
        };
        if let Some(reply) = self.outbound.remove(&id) {
            let _ = reply.send(Err(FetchError::Failed { peer, failure }));
        }
    }
}

/// The DHT key under which followers of a lineage announce themselves.
fn provider_key(lineage: &LineageId) -> kad::RecordKey {
    kad::RecordKey::new(&gossip::topic(lineage).hash().as_str())
}
