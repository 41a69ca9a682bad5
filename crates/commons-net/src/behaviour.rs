//! The libp2p behaviour of a node and how each part is configured.
//!
//! Order matters: the block list and the connection limits come first, so that a banned peer or a
//! connection over the limits is refused before any other protocol sees it.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, allow_block_list, connection_limits, gossipsub, identify, kad, mdns, ping,
    request_response,
};

use crate::config::NetConfig;
use crate::gossip;
use crate::wire::{self, SyncCodec};

/// Largest gossip message data. It must be the same on every node: a receiver drops frames
/// bigger than its own limit. A record is at most `MAX_RECORD_BYTES` (128 KiB); the headroom
/// lets an oversized message reach validation, where the sender is penalised for it.
pub const MAX_GOSSIP_BYTES: usize = 256 * 1024;
/// Most topics a peer may subscribe to as far as we track: above the 100 of gossipsub 0.50's
/// default filter, which would make a peer following many lineages invisible on all of them.
pub const MAX_PEER_TOPICS: usize = 5000;
/// Gossip messages stay in the message cache (and can still be validated and forwarded) for
/// this many heartbeats.
pub const HISTORY_LENGTH: usize = 12;
/// How long a message id is remembered to drop duplicates.
pub const DUPLICATE_CACHE_TIME: Duration = Duration::from_secs(120);
/// The Kademlia protocol: a private DHT, never the public IPFS one.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/commons/kad/1.0.0");
/// The identify protocol version; peers announcing another one are disconnected.
pub const IDENTIFY_PROTOCOL: &str = "/commons/1.0.0";
/// How long a Kademlia query may run.
pub const KAD_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Every protocol a node speaks.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) block_list: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) sync: request_response::Behaviour<SyncCodec>,
    pub(crate) kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
}

type BuildError = Box<dyn std::error::Error + Send + Sync>;

impl Behaviour {
    pub(crate) fn new(key: &Keypair, cfg: &NetConfig) -> Result<Self, BuildError> {
        let peer_id = key.public().to_peer_id();
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(cfg.max_connections))
            .with_max_established_per_peer(Some(cfg.max_connections_per_peer))
            .with_max_pending_incoming(Some(cfg.max_connections / 4 + 1));
        let sync = request_response::Behaviour::with_codec(
            SyncCodec,
            [(wire::PROTOCOL, request_response::ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(cfg.request_timeout)
                .with_max_concurrent_streams(wire::MAX_CONCURRENT_STREAMS),
        );
        let kad = if cfg.kademlia {
            let mut kad_cfg = kad::Config::new(KAD_PROTOCOL);
            kad_cfg.set_query_timeout(KAD_QUERY_TIMEOUT);
            let mut kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::new(peer_id),
                kad_cfg,
            );
            // Nodes are reachable peers of a small private DHT: answer queries from the start
            // rather than waiting for a confirmed external address.
            kad.set_mode(Some(kad::Mode::Server));
            Some(kad)
        } else {
            None
        };
        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                .with_agent_version(format!("commons/{}", env!("CARGO_PKG_VERSION")))
                .with_push_listen_addr_updates(true),
        );
        let mdns = if cfg.mdns {
            Some(mdns::tokio::Behaviour::new(
                mdns::Config::default(),
                peer_id,
            )?)
        } else {
            None
        };
        Ok(Behaviour {
            block_list: allow_block_list::Behaviour::default(),
            limits: connection_limits::Behaviour::new(limits),
            gossipsub: gossipsub_behaviour(cfg)?,
            sync,
            kad: Toggle::from(kad),
            identify,
            ping: ping::Behaviour::default(),
            mdns: Toggle::from(mdns),
        })
    }
}

fn gossipsub_behaviour(cfg: &NetConfig) -> Result<gossipsub::Behaviour, BuildError> {
    let config = gossipsub::ConfigBuilder::default()
        // Records carry their author's signature and the message id is the record id, so a
        // second signature by the publishing node would be paid twice per record (signed by the
        // sender, checked by every receiver) for nothing: penalties go to the peer that
        // forwarded a message, whoever first published it.
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .validate_messages()
        .message_id_fn(|m: &gossipsub::Message| {
            gossipsub::MessageId::from(gossip::message_id(&m.data))
        })
        .max_transmit_size(MAX_GOSSIP_BYTES)
        .heartbeat_interval(cfg.heartbeat)
        .heartbeat_initial_delay(cfg.heartbeat_initial_delay)
        .history_length(HISTORY_LENGTH)
        .history_gossip(3)
        .duplicate_cache_time(DUPLICATE_CACHE_TIME)
        .build()?;
    let filter = gossipsub::MaxCountSubscriptionFilter {
        filter: gossipsub::AllowAllSubscriptionFilter {},
        max_subscribed_topics: MAX_PEER_TOPICS,
        max_subscriptions_per_request: MAX_PEER_TOPICS,
    };
    let mut gs = gossipsub::Behaviour::new_with_subscription_filter(
        gossipsub::MessageAuthenticity::Anonymous,
        config,
        filter,
    )?;
    gs.with_peer_score(score_params(cfg), gossipsub::PeerScoreThresholds::default())?;
    Ok(gs)
}

/// Peer score parameters. The defaults suit busy Ethereum topics; commons topics are sparse, so
/// the positive terms are capped low (a hostile peer cannot bank credit by sitting in a mesh)
/// and the penalty for invalid messages is steep.
fn score_params(cfg: &NetConfig) -> gossipsub::PeerScoreParams {
    gossipsub::PeerScoreParams {
        // Positive topic score is at most this, whatever the number of topics.
        topic_score_cap: 50.0,
        ip_colocation_factor_threshold: cfg.ip_colocation_factor_threshold,
        ..gossipsub::PeerScoreParams::default()
    }
}

/// Score parameters of one lineage topic.
pub(crate) fn topic_score_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        // P1, time in mesh: +0.1 per second, at most +10.
        time_in_mesh_weight: 0.1,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 100.0,
        // P2, first deliveries: +0.5 each, at most +10.
        first_message_deliveries_weight: 0.5,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 20.0,
        // P3 and P3b off: on a quiet topic an honest peer delivers nothing for hours.
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        // P4, invalid messages: −50 × count². One invalid record puts a peer below the gossip
        // threshold (−10), two below the graylist (−80). Halves in about 23 s.
        invalid_message_deliveries_weight: -50.0,
        invalid_message_deliveries_decay: 0.97,
        ..gossipsub::TopicScoreParams::default()
    }
}
