//! End-to-end test of bootstrap peers (`docs/protocol.md`, "Bootstrap peers"): a node keeps
//! dialling a bootstrap peer that is down when it starts, or that goes away later, and says so in
//! `commons node status`. Real `commonsd` processes on 127.0.0.1; every wait has a deadline.

use commons_tests::net::{Daemon, wait_for};
use commons_tests::{Person, Scene, bin, daemon_bin};
use serde_json::Value;

/// A TCP port on 127.0.0.1 that nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `p`'s node status entry for its (single) bootstrap address.
fn boot(p: &Person) -> Option<Value> {
    let s = p.json(["node", "status"]);
    s["bootstrap"].as_array()?.first().cloned()
}

fn connected_to(p: &Person, peer: &str) -> Option<()> {
    let peers = p.json(["node", "peers"]);
    peers
        .as_array()?
        .iter()
        .any(|x| x["peer_id"] == peer)
        .then_some(())
}

#[test]
fn a_bootstrap_peer_down_at_start_or_gone_later_is_dialled_again() {
    let scene = Scene::new(bin!());
    let (alice, carol) = (scene.person("alice"), scene.person("carol"));
    let d = daemon_bin!();
    let port = free_port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let flags = ["--no-kademlia", "--listen", listen.as_str()]; // the harness adds --no-mdns
    // Alice's peer id comes from her home's node key: the same after a restart.
    let mut a = Daemon::start_with(&d, &alice.home, &[], &flags);
    let alice_id = a.peer_id.clone();
    a.stop();
    let boot_addr = format!("{listen}/p2p/{alice_id}");

    // Carol starts while alice is down: her first dial is refused.
    let _c = Daemon::start_with(&d, &carol.home, &[&boot_addr], &["--no-kademlia"]);
    let failing = wait_for("carol's first dial of alice to fail", || {
        boot(&carol).filter(|b| b["failed_dials"].as_u64() >= Some(1))
    });
    assert_eq!(failing["addr"], boot_addr.as_str());
    assert_eq!(failing["connected"], false);
    let text = carol.ok(["node", "status"]);
    assert!(
        text.contains(&format!("bootstrap  {boot_addr} unreachable (")),
        "the status says the bootstrap peer cannot be reached:\n{text}"
    );

    // Alice comes up on the same address: carol reaches her without being told.
    let mut a = Daemon::start_with(&d, &alice.home, &[], &flags);
    wait_for("carol to connect to alice once she is up", || {
        connected_to(&carol, &alice_id)
    });
    wait_for("carol's status to show alice connected", || {
        boot(&carol).filter(|b| b["connected"] == true && b["failed_dials"] == 0)
    });
    assert!(
        carol
            .ok(["node", "status"])
            .contains(&format!("bootstrap  {boot_addr} connected")),
    );

    // Alice is killed and comes back: carol dials her again.
    a.kill();
    wait_for("carol to see alice gone", || {
        connected_to(&carol, &alice_id).is_none().then_some(())
    });
    let _a = Daemon::start_with(&d, &alice.home, &[], &flags);
    wait_for("carol to reconnect to alice after her restart", || {
        connected_to(&carol, &alice_id)
    });
}
