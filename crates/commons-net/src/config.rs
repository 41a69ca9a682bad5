//! The configuration of the network task: identity, addresses and the few tunables a node or a
//! test may want to change. Everything has a default chosen for a long-running node.

use std::fmt;
use std::time::Duration;

use libp2p::Multiaddr;

/// How the network of one node is set up. Build it with [`NetConfig::new`] and change fields.
#[derive(Clone)]
pub struct NetConfig {
    /// The seed of the node key (ed25519): the libp2p identity of this device. It is not the
    /// author key; see `DESIGN.md`, "Keys".
    pub node_key_seed: [u8; 32],
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/tcp/4001` and `/ip4/0.0.0.0/udp/4001/quic-v1`.
    pub listen: Vec<Multiaddr>,
    /// Bootstrap peers, each with a `/p2p/<peer id>` suffix. They are dialled at start and seed
    /// the Kademlia routing table.
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers on the local network with mDNS (off in tests and in containers, where
    /// multicast is often blocked).
    pub mdns: bool,
    /// Run Kademlia (provider records per lineage, peer discovery beyond the bootstrap peers).
    /// Tests that need a fixed topology turn it off.
    pub kademlia: bool,
    /// Gossipsub heartbeat. Mesh repair and gossip happen once per heartbeat.
    pub heartbeat: Duration,
    /// Delay before the first heartbeat.
    pub heartbeat_initial_delay: Duration,
    /// A connection with no open stream and no protocol wanting it kept is closed after this.
    pub idle_connection_timeout: Duration,
    /// How long a sync request may take end to end (dial, request, response).
    pub request_timeout: Duration,
    /// Most established connections in total.
    pub max_connections: u32,
    /// Most established connections to one peer.
    pub max_connections_per_peer: u32,
    /// Peers on one IP address beyond this count are penalised by gossipsub (P6). Raise it for
    /// tests on loopback, where every peer shares 127.0.0.1.
    pub ip_colocation_factor_threshold: f64,
    /// Strikes (invalid gossip, bad sync responses, reports from the node) after which a peer is
    /// disconnected and banned.
    pub strikes_before_ban: u32,
    /// How long a ban lasts.
    pub ban_duration: Duration,
    /// Rate limits on gossip, per peer and per author (see [`crate::policy`]).
    pub rates: crate::policy::Rates,
    /// Most established connections from one remote IP address: fresh peer ids are free, so
    /// bans per peer id alone would let one machine take every connection slot. Raise it for
    /// tests on loopback, where every peer shares 127.0.0.1.
    pub max_connections_per_ip: u32,
}

impl NetConfig {
    /// A configuration with the given node key seed, no listen address, no bootstrap peer, mDNS
    /// off and defaults for a long-running node.
    pub fn new(node_key_seed: [u8; 32]) -> Self {
        NetConfig {
            node_key_seed,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            mdns: false,
            kademlia: true,
            heartbeat: Duration::from_millis(700),
            heartbeat_initial_delay: Duration::from_secs(1),
            idle_connection_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_connections_per_peer: 8,
            ip_colocation_factor_threshold: 10.0,
            strikes_before_ban: 3,
            ban_duration: Duration::from_secs(15 * 60),
            rates: crate::policy::Rates::default(),
            max_connections_per_ip: 16,
        }
    }
}

impl fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The seed is secret: never print it.
        f.debug_struct("NetConfig")
            .field("node_key_seed", &"<secret>")
            .field("listen", &self.listen)
            .field("bootstrap", &self.bootstrap)
            .field("mdns", &self.mdns)
            .field("kademlia", &self.kademlia)
            .field("heartbeat", &self.heartbeat)
            .field("heartbeat_initial_delay", &self.heartbeat_initial_delay)
            .field("idle_connection_timeout", &self.idle_connection_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_peer", &self.max_connections_per_peer)
            .field(
                "ip_colocation_factor_threshold",
                &self.ip_colocation_factor_threshold,
            )
            .field("strikes_before_ban", &self.strikes_before_ban)
            .field("ban_duration", &self.ban_duration)
            .field("rates", &self.rates)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .finish()
    }
}
