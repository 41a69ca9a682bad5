//! The network of a Commons node: libp2p transports (TCP and QUIC, noise, yamux), gossip of
//! records with validation before forwarding, discovery (Kademlia, mDNS, identify) and the sync
//! protocol `/commons/sync/2`.
//!
//! API boundary: only this crate knows libp2p. The node calls [`spawn`], gives orders through
//! the cloneable [`NetHandle`] and receives [`NetEvent`]s on a bounded channel. It answers peers'
//! sync requests from its store through the [`Responder`] carried by [`NetEvent::Request`].
//!
//! Architecture invariant: the swarm lives in one tokio task ([`task`]); every channel and queue
//! between it and the node is bounded, with the bound next to its constant. Nothing that did not
//! pass [`commons_core::Record::decode`] is forwarded or handed to the node as a record.
//!
//! Module map: [`gossip`] (topics, message ids, the verdict on a gossip message), [`wire`] (the
//! sync messages, their limits and codec), [`penalty`] (strikes and bans), [`policy`] (block list
//! and rate limits on gossip), [`behaviour`] (how each
//! libp2p protocol is configured), [`handle`] (the node's API), [`task`] (the event loop),
//! [`reconcile`] (a set-reconciliation session with a peer).

pub mod behaviour;
pub mod bulk;
pub mod config;
pub mod gossip;
pub mod handle;
pub mod penalty;
pub mod policy;
pub mod reconcile;
pub mod redial;
pub mod task;
pub mod wire;

use libp2p::identity::Keypair;
use libp2p::{SwarmBuilder, noise, tcp, yamux};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use config::NetConfig;
pub use gossip::record_id_of_bytes;
pub use handle::{
    BadResponse, BlobChunk, Blocked, FetchError, IdPage, NetError, NetEvent, NetHandle, NetStatus,
    PeerInfo, PublishError, Published, RequestFailure, Responder, SpawnError,
};
pub use libp2p::{Multiaddr, PeerId, multiaddr};
pub use reconcile::Reconciled;
pub use wire::{SmallBlob, SyncRequest, SyncResponse};

/// The peer id that a node key seed gives, without starting anything.
pub fn peer_id_of_seed(seed: [u8; 32]) -> Result<PeerId, SpawnError> {
    let key = Keypair::ed25519_from_bytes(seed).map_err(|e| SpawnError::Key(e.to_string()))?;
    Ok(key.public().to_peer_id())
}

/// Starts the network task. Must be called inside a tokio runtime.
///
/// Returns the handle, the receiver of events (bounded: [`task::EVENT_CHANNEL`]) and the task's
/// join handle. Listening starts at once (watch for [`NetEvent::ListeningOn`] to learn the port
/// when listening on port 0); bootstrap peers are dialled and seed Kademlia.
pub fn spawn(
    cfg: NetConfig,
) -> Result<(NetHandle, mpsc::Receiver<NetEvent>, JoinHandle<()>), SpawnError> {
    // `ed25519_from_bytes` zeroes the buffer it is given: pass a copy.
    let seed = cfg.node_key_seed;
    let key = Keypair::ed25519_from_bytes(seed).map_err(|e| SpawnError::Key(e.to_string()))?;
    let peer_id = key.public().to_peer_id();
    let mut swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| SpawnError::Transport {
            transport: "tcp",
            reason: e.to_string(),
        })?
        .with_quic()
        .with_dns()
        .map_err(|e| SpawnError::Transport {
            transport: "dns",
            reason: e.to_string(),
        })?
        .with_behaviour(|key| behaviour::Behaviour::new(key, &cfg))
        .map_err(|e| SpawnError::Behaviour(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(cfg.idle_connection_timeout))
        .build();

    for addr in &cfg.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| SpawnError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
    }
    bootstrap(&mut swarm, &cfg.bootstrap);

    let (cmd_tx, cmd_rx) = mpsc::channel(task::COMMAND_CHANNEL);
    let (event_tx, event_rx) = mpsc::channel(task::EVENT_CHANNEL);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let net = task::NetTask::new(swarm, cmd_rx, shutdown_rx, event_tx, &cfg);
    let join = tokio::spawn(net.run());
    Ok((NetHandle::new(cmd_tx, shutdown_tx, peer_id), event_rx, join))
}

/// Seeds Kademlia with the bootstrap peers that name their peer id (the network task dials them
/// all, and again when they cannot be reached: [`redial`]).
fn bootstrap(swarm: &mut libp2p::Swarm<behaviour::Behaviour>, peers: &[Multiaddr]) {
    let mut seeded = false;
    for addr in peers {
        let mut base = addr.clone();
        if let Some(multiaddr::Protocol::P2p(peer)) = base.pop()
            && let Some(kad) = swarm.behaviour_mut().kad.as_mut()
        {
            kad.add_address(&peer, base);
            seeded = true;
        }
    }
    if seeded
        && let Some(kad) = swarm.behaviour_mut().kad.as_mut()
        && let Err(e) = kad.bootstrap()
    {
        tracing::debug!(target: "commons_net", error = %e, "kademlia bootstrap not started");
    }
}
