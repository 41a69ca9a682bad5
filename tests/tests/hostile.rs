//! Open to everyone, stalled by no one: a peer that floods records naming content nobody holds,
//! or that announces content and then stops answering, costs its own queue. Honest work keeps
//! crossing the network within the bounds of the issue (2 s from one honest node to another,
//! `node status` answering within 1 s), and the withheld content arrives once its holder answers
//! again. Real `commonsd` processes on loopback, driven through the CLI.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use commons_core::{LineageId, Record};
use commons_tests::fixture::Rng;
use commons_tests::net::{Daemon, HostilePeer, converge, wait_for};
use commons_tests::{Person, Scene, bin, daemon_bin, one_file_patch, utf8};

/// Honest propagation bound of the issue.
const PROPAGATION: Duration = Duration::from_secs(2);
/// `node status` bound of the issue.
const STATUS: Duration = Duration::from_secs(1);

/// `node status` of `p`, which must answer within [`STATUS`].
fn status_within_bound(p: &Person) -> serde_json::Value {
    let t = Instant::now();
    let s = p.json(["node", "status"]);
    let took = t.elapsed();
    assert!(
        took <= STATUS,
        "{}'s node status took {took:?} (bound {STATUS:?})",
        p.name
    );
    s
}

/// Proposes a one-file change from `wc` (a checkout of `p`'s) and returns the patch id and when
/// the CLI returned (the patch is stored and published by then).
fn propose(p: &Person, wc: &std::path::Path, file: &str, content: &[u8]) -> (String, Instant) {
    fs::write(wc.join(file), content).expect("write");
    let id = p.ok(["propose", utf8(wc), "-m", &format!("add {file}")]);
    (id.trim().to_owned(), Instant::now())
}

/// Waits until `p`'s node holds `patch`, polling `node status` all along (each answer within
/// [`STATUS`]), and asserts that it took at most [`PROPAGATION`] from `since`.
fn arrives_within_bound(p: &Person, patch: &str, since: Instant) {
    loop {
        status_within_bound(p);
        if p.run(["patch", "show", patch]).code == 0 {
            break;
        }
        assert!(
            since.elapsed() <= PROPAGATION,
            "the honest patch took more than {PROPAGATION:?} to reach {}",
            p.name
        );
    }
    let took = since.elapsed();
    assert!(took <= PROPAGATION, "took {took:?}");
    eprintln!("the honest patch reached {} in {took:?}", p.name);
}

/// Test 1. A peer floods 300 valid patches whose content nobody holds into node A, and never
/// answers the requests for it (each hangs until A's request timeout): an honest
/// patch from B reaches A within 2 s and its content follows, A's `node status` answers within
/// 1 s throughout, and the flood is stored (it is valid work) with its content queued.
#[test]
fn a_flood_of_patches_naming_content_nobody_holds_does_not_hold_up_honest_work() {
    let scene = Scene::new(bin!());
    let (alice, bob) = (scene.person("alice"), scene.person("bob"));
    let d = daemon_bin!();
    let a = Daemon::start(&d, &alice.home, &[]);
    let _b = Daemon::start(&d, &bob.home, &[&a.addr]);
    let garden = scene.found(&alice, "garden", &[("README.md", b"A garden\n")]);
    bob.ok(["follow", &garden]);
    converge(&garden, &alice, &[&bob]);
    let wc = scene.path("bob-wc");
    bob.ok(["checkout", &garden, utf8(&wc)]);
    let before = status_within_bound(&alice)["records"]
        .as_u64()
        .expect("count");

    // 300 valid patches, by 150 keys, each naming content that nobody has.
    let lineage: LineageId = garden.parse().expect("id");
    let files: Vec<PathBuf> = (0..300u32)
        .map(|i| {
            let patch = one_file_patch(
                (i % 150) as u8 + 100,
                1_000 + u64::from(i),
                lineage,
                &format!("flood/{i}.bin"),
                format!("content nobody has {i}").as_bytes(),
                "flood",
            );
            let file = scene.path(&format!("flood-{i}"));
            fs::write(&file, patch.bytes()).expect("write payload");
            file
        })
        .collect();
    let mut flood = HostilePeer::spawn(
        &commons_tests::hostile_bin!(),
        &["--withhold"],
        &a.addr,
        &garden,
        &files,
    );
    flood.wait_published(300);

    // Meanwhile, honest work from B.
    let (honest, since) = propose(&bob, &wc, "honest.txt", b"honest work\n");
    arrives_within_bound(&alice, &honest, since);

    // The flood was taken in (it is valid work), and its content is wanted from the peer that
    // withholds it, all at the same time; A keeps answering.
    let flooded = wait_for("A to store the flood", || {
        let s = status_within_bound(&alice);
        (s["records"].as_u64()? >= before + 301).then_some(s)
    });
    assert!(
        flooded["blobs"]["queued"].as_u64() >= Some(300),
        "the flood's content is queued for download: {flooded}"
    );
    // The honest patch's content arrived: it can be accepted without overriding anything.
    alice.ok(["validate", &honest, "--accept"]);
    converge(&garden, &alice, &[&bob]);
    assert!(flood.finish().contains(&"published 300".to_owned()));
}

/// Imports a bundle of `records` and `blobs` into `p`'s home.
fn import(p: &Person, file: &std::path::Path, records: &[Record], blobs: &[&[u8]]) {
    let out = commons_tests::import_bundle(p, file, records, blobs);
    assert_eq!(out.code, 0, "bundle import: {}", out.stderr);
}

/// Test 2. A peer holds the content of a patch and stops answering (SIGSTOP) just as node A
/// wants it: an honest patch still reaches A within 2 s, A's `node status` answers within 1 s,
/// and the withheld content arrives once the peer resumes (SIGCONT).
#[test]
fn a_peer_that_stops_answering_costs_only_its_own_content() {
    let scene = Scene::new(bin!());
    let (alice, bob, eve) = (
        scene.person("alice"),
        scene.person("bob"),
        scene.person("eve"),
    );
    let d = daemon_bin!();
    let a = Daemon::start(&d, &alice.home, &[]);
    let _b = Daemon::start(&d, &bob.home, &[&a.addr]);
    let e = Daemon::start(&d, &eve.home, &[&a.addr]);
    let garden = scene.found(&alice, "garden", &[("README.md", b"A garden\n")]);
    bob.ok(["follow", &garden]);
    eve.ok(["follow", &garden]);
    converge(&garden, &alice, &[&bob, &eve]);
    let bob_wc = scene.path("bob-wc");
    bob.ok(["checkout", &garden, utf8(&bob_wc)]);
    let connected = |p: &Person, n: u64| {
        wait_for("the peers to connect", || {
            (p.json(["node", "status"])["peers"].as_u64()? >= n).then_some(())
        })
    };
    connected(&alice, 2);

    // Only eve's node holds 32 MiB of content; it stops; then a patch that adds it reaches A
    // (without it), so A's downloader wants it from eve.
    let mut big = vec![0u8; 32 << 20];
    Rng::new(7).fill(&mut big);
    let lineage: LineageId = garden.parse().expect("id");
    let withheld = one_file_patch(90, 5, lineage, "big.bin", &big, "a large file");
    import(&eve, &scene.path("content.bundle"), &[], &[&big]);
    e.signal("STOP");
    import(
        &alice,
        &scene.path("record.bundle"),
        std::slice::from_ref(&withheld),
        &[],
    );
    let wanted = wait_for("A to want eve's content", || {
        let s = status_within_bound(&alice);
        (s["blobs"]["queued"].as_u64()? == 1).then_some(s)
    });
    eprintln!("eve stopped; A's downloads: {}", wanted["blobs"]);

    // Honest work from B while eve hangs.
    let (honest, since) = propose(&bob, &bob_wc, "honest.txt", b"honest work\n");
    arrives_within_bound(&alice, &honest, since);
    for _ in 0..5 {
        status_within_bound(&alice);
    }
    let still = status_within_bound(&alice);
    assert_eq!(
        still["blobs"]["queued"].as_u64(),
        Some(1),
        "eve's content cannot have arrived while she is stopped: {still}"
    );

    // Eve answers again: her content arrives, and can be accepted.
    e.signal("CONT");
    wait_for("eve's content to reach A", || {
        let s = status_within_bound(&alice);
        (s["blobs"]["queued"].as_u64()? == 0 && s["blobs"]["given_up"].as_u64()? == 0).then_some(())
    });
    let id = withheld.id().to_hex();
    alice.ok(["validate", &id, "--accept"]);
    converge(&garden, &alice, &[&bob, &eve]);
    let wc = scene.path("alice-wc");
    alice.ok(["checkout", &garden, utf8(&wc)]);
    assert!(fs::read(wc.join("big.bin")).expect("written") == big);
}

/// Test 3. A peer floods node A with `ListIds` requests (each would make A read a whole family):
/// its requests beyond its own budget are refused, A reads the family once however many it
/// answers (asserted on A's counters), and an honest late joiner catches up meanwhile.
#[test]
fn a_flood_of_list_requests_costs_the_flooder_its_budget_and_the_responder_one_read() {
    let scene = Scene::new(bin!());
    let (alice, bob) = (scene.person("alice"), scene.person("bob"));
    let d = daemon_bin!();
    let a = Daemon::start(&d, &alice.home, &[]);
    let files: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| (format!("beds/{i}.txt"), format!("bed {i}\n").into_bytes()))
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    let garden = scene.found(&alice, "garden", &refs);
    let before = status_within_bound(&alice)["reconcile"].clone();

    let started = Instant::now();
    let asks = 3000;
    let mut flood = HostilePeer::spawn(
        &commons_tests::hostile_bin!(),
        &["--ask-ids", &asks.to_string()],
        &a.addr,
        &garden,
        &[],
    );
    // A late joiner, meanwhile.
    let _b = Daemon::start(&d, &bob.home, &[&a.addr]);
    bob.ok(["follow", &garden]);
    converge(&garden, &alice, &[&bob]);
    let line = flood.wait_line("asked ");
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("{line} in {elapsed:.1} s");
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (answered, refused_here) = (numbers[1], numbers[2]);
    assert_eq!(answered + refused_here, asks);
    let budget =
        commons_net::policy::REQUEST_BURST + commons_net::policy::REQUEST_PER_SEC * (elapsed + 1.0);
    assert!(
        (answered as f64) <= budget,
        "at most the flooder's budget was answered: {answered} > {budget}"
    );
    let after = status_within_bound(&alice);
    let counted = after["refused"]["requests over budget"]
        .as_u64()
        .unwrap_or(0);
    assert!(counted >= refused_here.min(1), "{after}");
    let pages =
        after["reconcile"]["pages"].as_u64().expect("n") - before["pages"].as_u64().expect("n");
    let builds =
        after["reconcile"]["builds"].as_u64().expect("n") - before["builds"].as_u64().expect("n");
    assert!(pages >= answered, "{pages} pages for {answered} answers");
    assert!(
        builds <= 3,
        "the family was read {builds} times for {pages} pages and bob's catch-up"
    );
}
