//! Local policy (DESIGN invariant 3): a node refuses, and does not forward, the records of the
//! authors it blocks; cuts off the peers it blocks; limits gossip per peer and per author; and
//! caps inbound connections per IP address. Each refusal is counted in `node status`, and the
//! sender is penalised only where that is fair (a peer over its own rate, not an honest relay of
//! a blocked author). Real `commonsd` processes on loopback, driven through the CLI.

use std::fs;
use std::path::PathBuf;

use commons_core::{LineageId, Record};
use commons_tests::net::{Daemon, HostilePeer, converge, wait_for};
use commons_tests::{Person, Scene, bin, daemon_bin, import_bundle, one_file_patch, utf8};
use serde_json::Value;

fn refused(p: &Person, kind: &str) -> u64 {
    p.json(["node", "status"])["refused"][kind]
        .as_u64()
        .unwrap_or(0)
}

fn peers(p: &Person) -> Vec<Value> {
    p.json(["node", "peers"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn has(p: &Person, patch: &str) -> bool {
    p.run(["patch", "show", patch]).code == 0
}

fn propose(scene: &Scene, p: &Person, lineage: &str, file: &str) -> String {
    let wc = scene.path(&format!("wc-{}-{file}", p.name));
    p.ok(["checkout", lineage, utf8(&wc)]);
    fs::write(wc.join(file), format!("{file} by {}\n", p.name)).expect("write");
    p.ok(["propose", utf8(&wc), "-m", &format!("add {file}")])
        .trim()
        .to_owned()
}

/// Writes `config.toml` into a home before its daemon starts.
fn configure(p: &Person, toml: &str) {
    fs::create_dir_all(&p.home).expect("home");
    fs::write(p.home.join("config.toml"), toml).expect("config");
}

#[test]
fn a_blocked_author_is_refused_and_not_forwarded_and_a_blocked_peer_is_cut_off() {
    let scene = Scene::new(bin!());
    let (alice, carol, bob) = (
        scene.person("alice"),
        scene.person("carol"),
        scene.person("bob"),
    );
    let d = daemon_bin!();
    // A line: A — B — C (no DHT, so C meets A only through B).
    let fixed = ["--no-kademlia"];
    let a = Daemon::start_with(&d, &alice.home, &[], &fixed);
    let b = Daemon::start_with(&d, &carol.home, &[&a.addr], &fixed);
    let _c = Daemon::start_with(&d, &bob.home, &[&b.addr], &fixed);
    let garden = scene.found(&alice, "garden", &[("README.md", b"A garden\n")]);
    carol.ok(["follow", &garden]);
    bob.ok(["follow", &garden]);
    converge(&garden, &alice, &[&carol, &bob]);

    // Mistakes get a clear error.
    let err = carol.fails(2, ["block", "mallory"]);
    assert!(err.contains("neither an author"), "{err}");

    // Carol (node B) blocks mallory's key.
    let lineage: LineageId = garden.parse().expect("id");
    let spam = b"buy now\n";
    let mallory: Record = one_file_patch(201, 10, lineage, "spam.txt", spam, "spam");
    let did = mallory.author().to_did();
    carol.ok(["block", &did]);
    let listed = carol.json(["blocked"]);
    assert_eq!(listed[0]["entry"], did.as_str(), "{listed}");
    assert_eq!(listed[0]["kind"], "author");
    let again = carol.fails(5, ["block", &did]);
    assert!(again.contains("already blocked"), "{again}");

    // Mallory's patch enters the network at A; an honest patch follows it.
    let out = import_bundle(
        &alice,
        &scene.path("spam.bundle"),
        std::slice::from_ref(&mallory),
        &[spam],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let honest = propose(&scene, &alice, &garden, "honest.txt");
    wait_for("the honest patch to cross B", || {
        has(&bob, &honest).then_some(())
    });
    wait_for("B to count the refusal", || {
        (refused(&carol, "blocked author") >= 1).then_some(())
    });
    bob.ok(["sync", &garden]);
    let spam_id = mallory.id().to_hex();
    assert!(
        !has(&carol, &spam_id),
        "B did not store the blocked author's patch"
    );
    assert!(
        !has(&bob, &spam_id),
        "nor did C, behind B: B did not forward it"
    );
    assert!(has(&alice, &spam_id));
    // A, who relayed it in good faith, was not struck.
    let relay = peers(&carol)
        .into_iter()
        .find(|p| p["peer_id"] == a.peer_id.as_str())
        .expect("A still connected");
    assert_eq!(relay["strikes"], 0, "{relay}");
    // Nor is it taken from the CLI.
    let out = import_bundle(
        &carol,
        &scene.path("spam2.bundle"),
        std::slice::from_ref(&mallory),
        &[],
    );
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(out.stderr.contains("unblock"), "{}", out.stderr);

    // Unblocked, the next catch-up brings it.
    carol.ok(["unblock", &did]);
    assert_eq!(carol.json(["blocked"]), serde_json::json!([]));
    carol.ok(["sync", &garden]);
    assert!(
        has(&carol, &spam_id),
        "after unblock, the catch-up brings it"
    );

    // Carol blocks A's node: it is cut off at once, and stays off.
    carol.ok(["block", &a.peer_id]);
    wait_for("B to drop A", || {
        (!peers(&carol)
            .iter()
            .any(|p| p["peer_id"] == a.peer_id.as_str()))
        .then_some(())
    });
    let _ = carol.run(["node", "connect", &a.addr]);
    let after = propose(&scene, &alice, &garden, "later.txt");
    carol.ok(["sync", &garden]);
    assert!(!has(&carol, &after), "nothing comes from a blocked peer");
    assert!(
        !peers(&carol)
            .iter()
            .any(|p| p["peer_id"] == a.peer_id.as_str()),
        "a blocked peer cannot connect again"
    );
    carol.ok(["unblock", &a.peer_id]);
    carol.ok(["node", "connect", &a.addr]);
    wait_for("A's work to reach B again", || {
        carol.ok(["sync", &garden]);
        has(&carol, &after).then_some(())
    });
}

#[test]
fn gossip_over_the_rate_limits_is_refused_and_a_flooding_peer_struck() {
    let scene = Scene::new(bin!());
    let (alice, carol) = (scene.person("alice"), scene.person("carol"));
    configure(
        &carol,
        "[gossip]\npeer_burst = 30\npeer_per_sec = 1\nauthor_burst = 5\nauthor_per_sec = 1\n",
    );
    let d = daemon_bin!();
    let a = Daemon::start(&d, &alice.home, &[]);
    let b = Daemon::start(&d, &carol.home, &[&a.addr]);
    let garden = scene.found(&alice, "garden", &[("README.md", b"A garden\n")]);
    carol.ok(["follow", &garden]);
    converge(&garden, &alice, &[&carol]);
    let before = carol.json(["node", "status"])["records"]
        .as_u64()
        .expect("count");

    // 20 patches by one author, then 20 by 20 others, from one peer.
    let lineage: LineageId = garden.parse().expect("id");
    let files: Vec<PathBuf> = (0..40u32)
        .map(|i| {
            let seed = if i < 20 { 150 } else { 150 + i as u8 };
            let patch = one_file_patch(
                seed,
                100 + u64::from(i),
                lineage,
                &format!("rate/{i}.txt"),
                format!("{i}\n").as_bytes(),
                "many",
            );
            let file = scene.path(&format!("rate-{i}"));
            fs::write(&file, patch.bytes()).expect("payload");
            file
        })
        .collect();
    let mut flood = HostilePeer::spawn(
        &commons_tests::hostile_bin!(),
        &[],
        &b.addr,
        &garden,
        &files,
    );
    flood.wait_published(40);
    wait_for("B to refuse over both rates", || {
        (refused(&carol, "author over their rate") >= 10
            && refused(&carol, "peer over its rate") >= 5)
            .then_some(())
    });
    let stored = wait_for("B to store what passed", || {
        let n = carol.json(["node", "status"])["records"].as_u64()? - before;
        (n >= 10).then_some(n)
    });
    assert!(
        stored < 30,
        "only what passed both limits was stored: {stored}"
    );
    // The flooding peer got a strike (once for the episode); A, honest, none.
    let struck = wait_for("B to strike the flooding peer", || {
        peers(&carol)
            .into_iter()
            .find(|p| p["peer_id"] != a.peer_id.as_str() && p["strikes"].as_u64() >= Some(1))
    });
    assert_eq!(struck["strikes"], 1, "{struck}");
    let text = carol.ok(["node", "status"]);
    assert!(text.contains("author over their rate"), "{text}");
    flood.finish();
}

#[test]
fn inbound_connections_per_address_are_capped() {
    let scene = Scene::new(bin!());
    let alice = scene.person("alice");
    configure(&alice, "max_connections_per_ip = 2\n");
    let d = daemon_bin!();
    let a = Daemon::start(&d, &alice.home, &[]);
    let garden = scene.found(&alice, "garden", &[("README.md", b"A garden\n")]);
    // Six fresh peer ids from 127.0.0.1.
    let crowd: Vec<HostilePeer> = (0..6)
        .map(|_| HostilePeer::spawn(&commons_tests::hostile_bin!(), &[], &a.addr, &garden, &[]))
        .collect();
    wait_for("A to refuse the connections over the cap", || {
        (refused(&alice, "connections per address") >= 4).then_some(())
    });
    let connected = alice.json(["node", "status"])["peers"].as_u64().expect("n");
    assert!(connected <= 2, "at most 2 from one address: {connected}");
    drop(crowd);
}
