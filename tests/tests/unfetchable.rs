//! Nothing unfetchable becomes canonical by accident: a patch whose content no one can give is
//! not accepted by a plain `validate --accept` (the maintainer is told why, and how to accept
//! anyway); a checkout of a tree whose content is missing names what is missing, and writes
//! the rest only when asked (`--allow-missing`), in a working copy that does not mistake the
//! missing files for deletions and fills them in by `update` once the content arrives.

use std::fs;

use commons_core::{LineageId, Record};
use commons_tests::{Person, Scene, bin, one_file_patch, read_tree, str_of, utf8};

const GHOST: &[u8] = b"content that nobody has given\n";

/// Imports a bundle of `records` and `blobs` into `p`'s home.
fn import(p: &Person, file: &std::path::Path, records: &[Record], blobs: &[&[u8]]) {
    let out = commons_tests::import_bundle(p, file, records, blobs);
    assert_eq!(out.code, 0, "bundle import: {}", out.stderr);
}

#[test]
fn content_nobody_holds_is_not_accepted_or_checked_out_by_accident() {
    let scene = Scene::new(bin!());
    let alice = scene.person("alice");
    let src = scene.write_tree(
        "src",
        &[
            ("README.md", b"A garden\n"),
            ("beds/tomato.txt", b"sow in March\n"),
        ],
    );
    let garden = alice
        .ok([
            "create",
            "garden",
            "--license",
            "CC0-1.0",
            "--from",
            utf8(&src),
        ])
        .trim()
        .to_owned();

    // Someone proposes a file whose content they never gave to anyone.
    let lineage: LineageId = garden.parse().expect("id");
    let ghost = one_file_patch(77, 5, lineage, "beds/ghost.txt", GHOST, "no content given");
    let id = ghost.id().to_hex();
    import(&alice, &scene.path("ghost.bundle"), &[ghost], &[]);

    let refused = alice.fails(5, ["validate", &id, "--accept"]);
    assert!(
        refused.contains("beds/ghost.txt") && refused.contains("--without-content"),
        "{refused}"
    );
    let shown = alice.json(["patch", "show", &id]);
    assert_eq!(shown["statuses"][0]["status"], "pending", "{shown}");
    let accepted = alice.json(["validate", &id, "--accept", "--without-content"]);
    assert_eq!(accepted["status"], "accepted");

    // A plain checkout refuses and writes nothing, naming the file.
    let wc = scene.path("wc");
    let err = alice.fails(3, ["checkout", &garden, utf8(&wc)]);
    assert!(
        err.contains("beds/ghost.txt") && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!wc.exists() || fs::read_dir(&wc).expect("dir").next().is_none());

    // With --allow-missing: everything else is written, the missing file is named.
    let out = alice.run(["--json", "checkout", &garden, utf8(&wc), "--allow-missing"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("beds/ghost.txt"),
        "named: {}",
        out.stderr
    );
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["missing"], serde_json::json!(["beds/ghost.txt"]));
    let written = read_tree(&wc);
    assert_eq!(
        written.keys().collect::<Vec<_>>(),
        ["README.md", "beds/tomato.txt"]
    );

    // The working copy does not take the missing file for a deletion.
    let status = alice.json(["status", utf8(&wc)]);
    assert_eq!(status["clean"], true, "{status}");
    fs::write(wc.join("beds/tomato.txt"), b"sow in March, 5 mm deep\n").expect("edit");
    let proposed = alice.json(["propose", utf8(&wc), "-m", "depth"]);
    assert_eq!(proposed["deleted"], serde_json::json!([]), "{proposed}");
    assert_eq!(proposed["modified"], serde_json::json!(["beds/tomato.txt"]));
    let p = str_of(&proposed["patch"]);
    alice.ok(["validate", &p, "--accept"]);

    // The content arrives (a bundle that carries it): update writes the file.
    import(&alice, &scene.path("content.bundle"), &[], &[GHOST]);
    alice.ok(["update", utf8(&wc)]);
    assert_eq!(fs::read(wc.join("beds/ghost.txt")).expect("written"), GHOST);
    assert_eq!(alice.json(["status", utf8(&wc)])["clean"], true);
    let fresh = scene.path("wc2");
    alice.ok(["checkout", &garden, utf8(&fresh)]);
    assert_eq!(read_tree(&fresh), read_tree(&wc));
}

/// A patch whose content no peer gives is stored (records never wait for content), and its
/// content is asked for a bounded number of times, then left alone for a while: later rounds
/// neither fetch the patch again nor ask for its blobs, where each round used to count it
/// missing anew and fetch it again.
#[test]
fn content_no_peer_gives_is_asked_for_a_bounded_number_of_times() {
    use commons_tests::net::{Daemon, converge, wait_for};
    let scene = Scene::new(bin!());
    let (alice, bob) = (scene.person("alice"), scene.person("bob"));
    let d = commons_tests::daemon_bin!();
    let a = Daemon::start(&d, &alice.home, &[]);
    let _b = Daemon::start(&d, &bob.home, &[&a.addr]);
    let garden = scene.found(&alice, "garden", &[("README.md", b"A garden\n")]);
    let lineage: LineageId = garden.parse().expect("id");
    let ghost = one_file_patch(78, 5, lineage, "ghost.txt", GHOST, "no content given");
    let ghost_id = ghost.id().to_hex();
    import(&alice, &scene.path("ghost.bundle"), &[ghost], &[]);
    assert!(
        alice.run(["patch", "show", &ghost_id]).code == 0,
        "alice holds it"
    );

    bob.ok(["follow", &garden]);
    converge(&garden, &alice, &[&bob]);
    assert_eq!(
        bob.run(["patch", "show", &ghost_id]).code,
        0,
        "bob stored it"
    );
    let status = |p: &Person| p.json(["node", "status"]);
    let given_up = wait_for("bob to give the ghost content up", || {
        let s = status(&bob);
        (s["blobs"]["given_up"].as_u64()? == 1 && s["blobs"]["queued"].as_u64()? == 0).then_some(s)
    });
    let attempts = given_up["blobs"]["failed_attempts"]
        .as_u64()
        .expect("count");
    assert!(attempts >= 2, "tried more than once: {given_up}");
    for _ in 0..3 {
        bob.ok(["sync", &garden]);
    }
    let after = status(&bob);
    assert!(
        after["reconcile"]["sessions"].as_u64() > given_up["reconcile"]["sessions"].as_u64(),
        "more rounds ran: {given_up} then {after}"
    );
    assert_eq!(
        after["reconcile"]["missing"], given_up["reconcile"]["missing"],
        "the stored patch was not counted missing again: {given_up} then {after}"
    );
    assert_eq!(
        after["blobs"]["failed_attempts"].as_u64(),
        Some(attempts),
        "its content was not asked for again: {after}"
    );
    let text = bob.ok(["node", "status"]);
    assert!(text.contains("1 that no peer gave"), "{text}");

    // The content appears on alice's node: a new connection makes bob try again, and the
    // blob arrives.
    import(&alice, &scene.path("content.bundle"), &[], &[GHOST]);
    let carol = scene.person("carol");
    let c = Daemon::start(&d, &carol.home, &[&a.addr]);
    bob.ok(["node", "connect", &c.addr]);
    wait_for("the ghost content to reach bob", || {
        let s = status(&bob);
        (s["blobs"]["given_up"].as_u64()? == 0 && s["blobs"]["queued"].as_u64()? == 0).then_some(())
    });
    assert!(status(&bob)["blobs"]["completed"].as_u64() >= Some(1));
    alice.ok(["validate", &ghost_id, "--accept"]);
    converge(&garden, &alice, &[&bob]);
    let wc = scene.path("bob-wc");
    bob.ok(["checkout", &garden, utf8(&wc)]);
    assert_eq!(fs::read(wc.join("ghost.txt")).expect("written"), GHOST);
}
