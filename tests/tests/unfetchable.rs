//! Nothing unfetchable becomes canonical by accident: a patch whose content no one can give is
//! not accepted by a plain `validate --accept` (the maintainer is told why, and how to accept
//! anyway); a checkout of a tree whose content is missing names what is missing, and writes
//! the rest only when asked (`--allow-missing`), in a working copy that does not mistake the
//! missing files for deletions and fills them in by `update` once the content arrives.

use std::fs;
use std::path::Path;

use commons_cli::bundle::BundleWriter;
use commons_core::{BlobHash, LineageId, Record};
use commons_tests::{Person, Scene, bin, one_file_patch, read_tree, str_of, utf8};

const GHOST: &[u8] = b"content that nobody has given\n";

/// Writes a bundle of `records` and `blobs` and imports it into `p`'s home.
fn import(p: &Person, file: &Path, records: &[Record], blobs: &[&[u8]]) {
    let out = fs::File::create(file).expect("create bundle");
    let mut w = BundleWriter::new(out, records.len() as u64).expect("bundle");
    for r in records {
        w.record(r).expect("record");
    }
    w.blobs(blobs.len() as u64).expect("blobs");
    for b in blobs {
        w.blob(&BlobHash::of(b), b.len() as u64, &mut &b[..])
            .expect("blob");
    }
    w.finish().expect("finish");
    p.ok(["bundle", "import", utf8(file)]);
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

/// A patch whose content no peer gives is left out of a catch-up, and remembered: the next
/// rounds do not ask for it (and its blobs) again, where each round used to count it missing
/// anew and fetch it again.
#[test]
fn a_patch_refused_for_missing_content_is_not_asked_for_every_round() {
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
    let reconcile = |p: &Person| p.json(["node", "status"])["reconcile"].clone();
    let first = wait_for("bob to have tried the ghost patch once", || {
        let r = reconcile(&bob);
        (r["missing"].as_u64()? >= 1).then_some(r)
    });
    for _ in 0..3 {
        bob.ok(["sync", &garden]);
    }
    let after = reconcile(&bob);
    assert!(
        after["sessions"].as_u64() > first["sessions"].as_u64(),
        "more rounds ran: {first} then {after}"
    );
    assert_eq!(
        after["missing"], first["missing"],
        "the refused patch was not counted missing again: {first} then {after}"
    );
    assert!(
        after["skipped"].as_u64().unwrap_or(0) >= 3,
        "each round skipped it: {after}"
    );
    assert_ne!(
        bob.run(["patch", "show", &ghost_id]).code,
        0,
        "bob did not store it"
    );
}
