//! A hostile peer for the end-to-end tests: it speaks our gossip protocol without validating
//! anything and publishes whatever bytes it is given.
//!
//! `hostile-peer [--withhold] ADDR LINEAGE PAYLOAD_FILE...`: dials ADDR, subscribes to LINEAGE's
//! topic, waits until the peer at ADDR subscribes too, publishes the bytes of each payload file,
//! prints `published N`, then keeps the connection open until its standard input closes (the
//! test holds it). With `--withhold` it also accepts our sync protocol's requests (blobs,
//! records, reconciliation) and never answers them, as a peer that withholds content does: each
//! request hangs until the asker's timeout. With `--ask-ids N` it sends N `ListIds` requests
//! for LINEAGE's family to the peer it dialled, 16 at a time, and prints
//! `asked N: answered A, refused R` once all have ended.

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, SwarmBuilder, gossipsub, identity::Keypair, noise, request_response, tcp, yamux,
};
use tokio::io::AsyncReadExt;

#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "HostileEvent")]
struct Hostile {
    gossip: gossipsub::Behaviour,
    sync: request_response::Behaviour<commons_net::wire::SyncCodec>,
}

#[allow(clippy::large_enum_variant)]
enum HostileEvent {
    Gossip(gossipsub::Event),
    Sync(request_response::Event<commons_net::SyncRequest, commons_net::SyncResponse>),
}

impl From<gossipsub::Event> for HostileEvent {
    fn from(e: gossipsub::Event) -> Self {
        HostileEvent::Gossip(e)
    }
}

impl From<request_response::Event<commons_net::SyncRequest, commons_net::SyncResponse>>
    for HostileEvent
{
    fn from(
        e: request_response::Event<commons_net::SyncRequest, commons_net::SyncResponse>,
    ) -> Self {
        HostileEvent::Sync(e)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    let usage = "usage: hostile-peer [--withhold] ADDR LINEAGE PAYLOAD_FILE...";
    let withhold = args.next_if(|a| a == "--withhold").is_some();
    let ask: u32 = match args.next_if(|a| a == "--ask-ids") {
        Some(_) => args.next().ok_or(usage)?.parse()?,
        None => 0,
    };
    let addr: Multiaddr = args.next().ok_or(usage)?.parse()?;
    let lineage: commons_core::LineageId = args.next().ok_or(usage)?.parse()?;
    let payloads: Vec<Vec<u8>> = args.map(std::fs::read).collect::<Result<_, _>>()?;

    let mut swarm = SwarmBuilder::with_existing_identity(Keypair::generate_ed25519())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_key| {
            let cfg = gossipsub::ConfigBuilder::default()
                .max_transmit_size(commons_net::behaviour::MAX_GOSSIP_BYTES)
                .validation_mode(gossipsub::ValidationMode::Anonymous)
                .message_id_fn(|m: &gossipsub::Message| {
                    gossipsub::MessageId::from(commons_net::gossip::message_id(&m.data))
                })
                .heartbeat_interval(Duration::from_millis(100))
                .heartbeat_initial_delay(Duration::from_millis(50))
                .build()?;
            let gossip: gossipsub::Behaviour =
                gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, cfg)?;
            // Without --withhold the sync protocol is not offered at all (requests fail at once).
            let support = match withhold {
                true => request_response::ProtocolSupport::Inbound,
                false => request_response::ProtocolSupport::Outbound,
            };
            let sync = request_response::Behaviour::with_codec(
                commons_net::wire::SyncCodec,
                [(commons_net::wire::PROTOCOL, support)],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_secs(3600))
                    .with_max_concurrent_streams(10_000),
            );
            Ok(Hostile { gossip, sync })
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    let topic = commons_net::gossip::topic(&lineage);
    swarm.behaviour_mut().gossip.subscribe(&topic)?;
    swarm.dial(addr)?;
    println!("peer id: {}", swarm.local_peer_id());

    let mut published = false;
    let (mut target, mut sent, mut answered, mut refused) = (None, 0u32, 0u32, 0u32);
    let ask_ids = |swarm: &mut libp2p::Swarm<Hostile>, peer: &libp2p::PeerId| {
        swarm.behaviour_mut().sync.send_request(
            peer,
            commons_net::SyncRequest::ListIds {
                family: lineage,
                after: None,
                limit: commons_net::wire::MAX_LIST_IDS,
            },
        );
    };
    // Requests held and never answered (dropping a channel would answer with an error).
    let mut withheld = Vec::new();
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    loop {
        tokio::select! {
            n = stdin.read(&mut buf) => {
                if matches!(n, Ok(0) | Err(_)) {
                    return Ok(());
                }
            }
            event = swarm.select_next_some() => {
                match event {
                    SwarmEvent::Behaviour(HostileEvent::Gossip(gossipsub::Event::Subscribed {
                        topic: t,
                        ..
                    })) if t == topic.hash() && !published => {
                        published = true;
                        let mut n = 0;
                        for p in &payloads {
                            if swarm.behaviour_mut().gossip.publish(topic.clone(), p.clone()).is_ok() {
                                n += 1;
                            }
                        }
                        println!("published {n}");
                    }
                    SwarmEvent::Behaviour(HostileEvent::Sync(request_response::Event::Message {
                        message: request_response::Message::Request { channel, .. },
                        ..
                    })) => withheld.push(channel),
                    SwarmEvent::ConnectionEstablished { peer_id, .. } if ask > 0 && target.is_none() => {
                        target = Some(peer_id);
                        while sent < ask.min(16) {
                            ask_ids(&mut swarm, &peer_id);
                            sent += 1;
                        }
                    }
                    SwarmEvent::Behaviour(HostileEvent::Sync(e)) if target.is_some() => {
                        match e {
                            request_response::Event::Message {
                                message: request_response::Message::Response { .. },
                                ..
                            } => answered += 1,
                            request_response::Event::OutboundFailure { .. } => refused += 1,
                            _ => continue,
                        }
                        if let Some(peer) = target
                            && sent < ask
                        {
                            ask_ids(&mut swarm, &peer);
                            sent += 1;
                        }
                        if answered + refused == ask {
                            println!("asked {ask}: answered {answered}, refused {refused}");
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}
