//! A hostile peer for the end-to-end tests: it speaks our gossip protocol without validating
//! anything and publishes whatever bytes it is given.
//!
//! `hostile-peer ADDR LINEAGE PAYLOAD_FILE...`: dials ADDR, subscribes to LINEAGE's topic, waits
//! until the peer at ADDR subscribes too, publishes the bytes of each payload file, prints `published N`, then
//! keeps the connection open until its standard input closes (the test holds it).

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, SwarmBuilder, gossipsub, identity::Keypair, noise, tcp, yamux};
use tokio::io::AsyncReadExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: hostile-peer ADDR LINEAGE PAYLOAD_FILE...";
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
            let behaviour: gossipsub::Behaviour =
                gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, cfg)?;
            Ok(behaviour)
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    let topic = commons_net::gossip::topic(&lineage);
    swarm.behaviour_mut().subscribe(&topic)?;
    swarm.dial(addr)?;
    println!("peer id: {}", swarm.local_peer_id());

    let mut published = false;
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
                if let SwarmEvent::Behaviour(gossipsub::Event::Subscribed { topic: t, .. }) = event
                    && t == topic.hash()
                    && !published
                {
                    published = true;
                    let mut n = 0;
                    for p in &payloads {
                        if swarm.behaviour_mut().publish(topic.clone(), p.clone()).is_ok() {
                            n += 1;
                        }
                    }
                    println!("published {n}");
                }
            }
        }
    }
}
