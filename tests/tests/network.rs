//! End-to-end tests of the network: real `commonsd` processes on 127.0.0.1, each with its own
//! home, driven through the real `commons` command line (which goes through each daemon's
//! control socket). Every wait is a condition with a deadline.

use std::fs;

use commons_core::{BlobHash, Body, Change, LineageId, Patch, Record, SecretKey};
use commons_tests::net::{Daemon, HostilePeer, converge, wait_for};
use commons_tests::{Person, Scene, bin, daemon_bin, shown_root as root, str_of};
use serde_json::Value;

fn status(p: &Person, lineage: &str, patch: &str) -> Option<String> {
    let out = p.run(["--json", "patches", lineage]);
    if out.code != 0 {
        return None;
    }
    let v: Value = serde_json::from_str(&out.stdout).ok()?;
    v.as_array()?
        .iter()
        .find(|x| x["patch"] == patch)
        .map(|x| str_of(&x["status"]))
}

/// Checks `lineage` out in `p`'s home, writes `file`, proposes it; returns the patch id.
fn propose(scene: &Scene, p: &Person, lineage: &str, file: &str, content: &[u8]) -> String {
    let wc = scene.path(&format!("wc-{}-{}", p.name, file.replace('/', "_")));
    let _ = fs::remove_dir_all(&wc);
    p.ok(["checkout", lineage, wc.to_str().expect("utf-8")]);
    fs::write(wc.join(file), content).expect("write");
    p.ok([
        "propose",
        wc.to_str().expect("utf-8"),
        "-m",
        &format!("add {file}"),
    ])
    .trim()
    .to_owned()
}

fn peers_of(p: &Person) -> Vec<Value> {
    p.json(["node", "peers"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Test 1. Line topology A–B–C: a patch proposed on C reaches A; alice's validation on A makes it
/// accepted on C; all three report the same state root. C never connects to A.
#[test]
fn a_patch_crosses_a_line_of_nodes_and_its_validation_comes_back() {
    let scene = Scene::new(bin!());
    let (alice, carol, bob) = (
        scene.person("alice"),
        scene.person("carol"),
        scene.person("bob"),
    );
    let d = daemon_bin!();
    // Without the DHT, C would find A through B and connect to it directly.
    let fixed = ["--no-kademlia"];
    let a = Daemon::start_with(&d, &alice.home, &[], &fixed);
    let b = Daemon::start_with(&d, &carol.home, &[&a.addr], &fixed);
    let c = Daemon::start_with(&d, &bob.home, &[&b.addr], &fixed);

    let garden = scene.found(&alice, "garden", &[("README.md", b"A garden\n")]);
    carol.ok(["follow", &garden]);
    wait_for("B to hold the commons", || root(&carol, &garden));
    bob.ok(["follow", &garden]);
    converge(&garden, &alice, &[&carol, &bob]);

    let patch = propose(&scene, &bob, &garden, "notes.txt", b"water daily\n");
    wait_for("the patch to reach A", || status(&alice, &garden, &patch));
    let validated = alice.json(["validate", &patch, "--accept", "-m", "thanks"]);
    assert_eq!(
        validated["status"], "accepted",
        "through the daemon: {validated}"
    );
    let shown = carol.json(["patch", "show", &patch]);
    assert!(
        shown["statuses"].as_array().is_some_and(|s| !s.is_empty()),
        "patch show lists its status through the daemon: {shown}"
    );
    wait_for("the validation to reach C", || {
        (status(&bob, &garden, &patch).as_deref() == Some("accepted")).then_some(())
    });
    let r = converge(&garden, &alice, &[&carol, &bob]);
    assert_ne!(r, "", "a root");
    assert_eq!(status(&carol, &garden, &patch).as_deref(), Some("accepted"));

    // The line held: C knows B only.
    let c_peers = peers_of(&bob);
    assert!(
        c_peers.iter().all(|p| p["peer_id"] != a.peer_id.as_str()),
        "C connected to A: {c_peers:?}"
    );
    assert!(c_peers.iter().any(|p| p["peer_id"] == b.peer_id.as_str()));
    drop(c);
}

/// Tests 2 and 3. B follows, then stops; A takes 50 patches; a late joiner D and the restarted B both
/// converge on A's state.
#[test]
fn a_late_joiner_and_a_restarted_node_catch_up() {
    let scene = Scene::new(bin!());
    let (alice, bea, dan) = (
        scene.person("alice"),
        scene.person("bea"),
        scene.person("dan"),
    );
    let d = daemon_bin!();
    let a = Daemon::start(&d, &alice.home, &[]);
    let mut b = Daemon::start(&d, &bea.home, &[&a.addr]);

    let garden = scene.found(&alice, "garden", &[("README.md", b"A garden\n")]);
    bea.ok(["follow", &garden]);
    converge(&garden, &alice, &[&bea]);
    assert_eq!(b.stop(), 0, "B stops cleanly on SIGTERM");

    let wc = scene.path("wc-alice");
    alice.ok(["checkout", &garden, wc.to_str().expect("utf-8")]);
    let mut last = String::new();
    for i in 0..50 {
        fs::write(wc.join(format!("bed-{i:02}.txt")), format!("bed {i}\n")).expect("write");
        last = alice
            .ok([
                "propose",
                wc.to_str().expect("utf-8"),
                "-m",
                &format!("bed {i}"),
            ])
            .trim()
            .to_owned();
        alice.ok(["validate", &last, "--accept"]);
        alice.ok(["update", wc.to_str().expect("utf-8")]);
    }
    assert_eq!(status(&alice, &garden, &last).as_deref(), Some("accepted"));

    let _late = Daemon::start(&d, &dan.home, &[&a.addr]);
    dan.ok(["follow", &garden]);
    b.restart(&[&a.addr]);
    let r = converge(&garden, &alice, &[&bea, &dan]);
    let show = dan.json(["show", &garden]);
    assert_eq!(str_of(&show["root"]), r);
    // The late joiner holds the content too, not just the records.
    let out = scene.path("wc-dan");
    dan.ok(["checkout", &garden, out.to_str().expect("utf-8")]);
    assert_eq!(
        fs::read(out.join("bed-49.txt")).expect("file"),
        b"bed 49\n".to_vec()
    );
}

/// Test 4. A hostile peer publishes a record with a bad signature, a record over the size limit,
/// garbage, and a valid record on the topic of a lineage it does not name: none is stored or
/// forwarded, the hostile peer is penalised, and an honest patch
/// published at the same time arrives everywhere.
#[test]
fn hostile_gossip_is_refused_and_penalised() {
    let scene = Scene::new(bin!());
    let (alice, carol, bob) = (
        scene.person("alice"),
        scene.person("carol"),
        scene.person("bob"),
    );
    let d = daemon_bin!();
    let a = Daemon::start(&d, &alice.home, &[]);
    let b = Daemon::start(&d, &carol.home, &[&a.addr]);
    let _c = Daemon::start(&d, &bob.home, &[&b.addr]);
    let garden = scene.found(&alice, "garden", &[("README.md", b"A garden\n")]);
    carol.ok(["follow", &garden]);
    wait_for("B to hold the commons", || root(&carol, &garden));
    bob.ok(["follow", &garden]);
    converge(&garden, &alice, &[&carol, &bob]);
    let records_before: Vec<u64> = [&alice, &carol, &bob]
        .iter()
        .map(|p| {
            p.json(["node", "status"])["records"]
                .as_u64()
                .expect("count")
        })
        .collect();

    // The payloads: a well-formed patch whose signature is broken, bytes over the record
    // limit (but under the gossip limit, so they travel), and garbage.
    let lineage: LineageId = garden.parse().expect("lineage id");
    let forged = Record::sign(
        &SecretKey::from_seed([66; 32]),
        1,
        Body::Patch(Patch {
            lineage,
            parents: vec![],
            changes: vec![Change {
                path: "evil.txt".into(),
                before: None,
                after: Some(BlobHash::of(b"evil")),
            }],
            message: "evil".into(),
        }),
    )
    .expect("sign");
    let forged_id = forged.id().to_hex();
    let mut bad_sig = forged.bytes().to_vec();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 0x01;
    // A valid patch of a commons nobody here follows, sent on garden's topic.
    let elsewhere = commons_tests::one_file_patch(
        66,
        2,
        LineageId([0x5e; 32]),
        "elsewhere.txt",
        b"A garden\n",
        "not for this topic",
    );
    let mut oversized = vec![1u8, 1u8];
    oversized.resize(200 * 1024, 7);
    let garbage: Vec<u8> = (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect();

    // Two hostile peers: one sends the invalid payloads (it is banned at the second), the other
    // only the record on the wrong topic (one strike, so it is judged whatever the first did).
    let spawn_hostile = |payloads: &[(&str, &[u8])]| {
        let files: Vec<std::path::PathBuf> = payloads
            .iter()
            .map(|(name, bytes)| {
                let file = scene.path(name);
                fs::write(&file, bytes).expect("write payload");
                file
            })
            .collect();
        HostilePeer::spawn(
            &commons_tests::hostile_bin!(),
            &[],
            &b.addr,
            &garden,
            &files,
        )
    };
    let elsewhere_bytes = elsewhere.bytes().to_vec();
    let hostile = [
        spawn_hostile(&[
            ("bad-sig", &bad_sig),
            ("oversized", &oversized),
            ("garbage", &garbage),
        ]),
        spawn_hostile(&[("wrong-topic", &elsewhere_bytes)]),
    ];
    // Meanwhile an honest patch from C.
    let patch = propose(&scene, &bob, &garden, "honest.txt", b"honest work\n");
    wait_for("the honest patch to reach A", || {
        status(&alice, &garden, &patch)
    });

    // B penalised the hostile peer: a strike, a negative score, or a ban.
    let hostile_penalised = || {
        let status = carol.json(["node", "status"]);
        if !status["banned"].as_array()?.is_empty() {
            return Some(());
        }
        peers_of(&carol)
            .iter()
            .any(|p| {
                p["peer_id"] != a.peer_id.as_str()
                    && (p["strikes"].as_u64().unwrap_or(0) > 0
                        || p["score"].as_f64().is_some_and(|s| s < 0.0))
            })
            .then_some(())
    };
    wait_for("B to penalise the hostile peer", hostile_penalised);
    // B counted each refusal by kind, and says so in `node status`.
    let refused = wait_for("B to count the refusals", || {
        let r = carol.json(["node", "status"])["refused"].clone();
        ["bad signature", "oversized", "wrong topic"]
            .iter()
            .all(|kind| r[*kind].as_u64() >= Some(1))
            .then_some(r)
    });
    assert!(
        carol.ok(["node", "status"]).contains("refused "),
        "{refused}"
    );
    for (peer, sent) in hostile.into_iter().zip([3, 1]) {
        let printed = peer.finish();
        assert!(
            printed.iter().any(|l| *l == format!("published {sent}")),
            "the hostile peer published its payloads: {printed:?}"
        );
    }

    // Nothing of it was stored anywhere: each node holds exactly one more record (the honest
    // patch), and the forged id is unknown.
    for (p, before) in [&alice, &carol, &bob].iter().zip(records_before) {
        let n = p.json(["node", "status"])["records"]
            .as_u64()
            .expect("count");
        assert_eq!(n, before + 1, "{} holds only the honest patch more", p.name);
        assert_ne!(p.run(["patch", "show", &forged_id]).code, 0);
        assert_ne!(p.run(["patch", "show", &elsewhere.id().to_hex()]).code, 0);
    }
    converge(&garden, &alice, &[&carol, &bob]);
}

/// Test 5. A fork created on B propagates to A; a node that follows only the fork gets the base it
/// needs (parent charter, base patches, their blobs) and checks it out.
#[test]
fn a_fork_propagates_and_brings_its_base() {
    let scene = Scene::new(bin!());
    let (alice, carol, dan) = (
        scene.person("alice"),
        scene.person("carol"),
        scene.person("dan"),
    );
    let d = daemon_bin!();
    let a = Daemon::start(&d, &alice.home, &[]);
    let b = Daemon::start(&d, &carol.home, &[&a.addr]);
    let garden = scene.found(
        &alice,
        "garden",
        &[
            ("README.md", b"A garden\n"),
            ("plan/beds.txt", b"three beds\n"),
        ],
    );
    carol.ok(["follow", &garden]);
    converge(&garden, &alice, &[&carol]);

    let fork = carol
        .ok([
            "fork",
            &garden,
            "--name",
            "wild garden",
            "-m",
            "more wildflowers",
        ])
        .trim()
        .to_owned();
    wait_for("A to see the fork", || root(&alice, &fork));
    let lineage = alice.json(["lineage", &garden]);
    assert!(lineage.to_string().contains(&fork), "{lineage}");

    let _d = Daemon::start(&d, &dan.home, &[&b.addr]);
    dan.ok(["follow", &fork]);
    converge(&fork, &carol, &[&dan, &alice]);
    let wc = scene.path("wc-dan");
    dan.ok(["checkout", &fork, wc.to_str().expect("utf-8")]);
    assert_eq!(
        fs::read(wc.join("plan/beds.txt")).expect("file"),
        b"three beds\n"
    );
    let shown = dan.json(["show", &fork]);
    assert!(
        shown.to_string().contains(&garden),
        "the fork names its parent: {shown}"
    );
}
