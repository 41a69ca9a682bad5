//! A damaged record never makes a home unusable: a record of bob's store is overwritten on disk;
//! the CLI still lists, logs and shows his commons (and says, once, what it set aside), his daemon
//! starts, `node status` reports the record, and catch-up fetches a good copy from alice's node,
//! after which both nodes agree again and bob's checkout is alice's.

use commons_tests::fixture::{RepoShape, diff_trees};
use commons_tests::net::{Daemon, converge, wait_for};
use commons_tests::{Person, Scene, bin, daemon_bin, shown_root as root, str_of, strs, utf8};

/// Overwrites the bytes of record `id` in `p`'s store (no daemon may hold it).
fn damage(p: &Person, id: &str) {
    let db = sled::open(p.home.join("store/db")).expect("open bob's store with sled");
    let records = db.open_tree("records").expect("records tree");
    let key = hex::decode(id).expect("hex id");
    assert!(records.get(&key).expect("read").is_some(), "{id} is stored");
    records
        .insert(key, &b"\x01\x01these bytes are not a record"[..])
        .expect("overwrite");
    db.flush().expect("flush");
}

#[test]
fn a_damaged_record_is_set_aside_and_fetched_again_from_a_peer() {
    let scene = Scene::new(bin!());
    let (alice, bob) = (scene.person("alice"), scene.person("bob"));
    let src = scene.path("src");
    RepoShape {
        large_binaries: 1,
        large_size: 256 << 10,
        ..RepoShape::new(400, 3)
    }
    .write(&src);

    let d = daemon_bin!();
    let a = Daemon::start(&d, &alice.home, &[]);
    let mut b = Daemon::start(&d, &bob.home, &[&a.addr]);
    let created = alice.json([
        "create",
        "docs",
        "--license",
        "CC0-1.0",
        "--from",
        utf8(&src),
    ]);
    let lib = str_of(&created["lineage"]);
    let founding = strs(&created["patches"]);
    bob.ok(["follow", &lib]);
    let want = converge(&lib, &alice, &[&bob]);
    assert_eq!(b.stop(), 0);

    damage(&bob, &founding[0]);

    // Without a daemon: the commons is still listed (its summary reads no patch), and the
    // first command that reads the damaged record (the log shows every patch's message) sets
    // it aside and says so.
    let listed = bob.run(["list"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(listed.stdout.contains("docs"), "{}", listed.stdout);
    let log = bob.run(["log", &lib]);
    assert_eq!(log.code, 0, "{}", log.stderr);
    assert!(
        log.stderr.contains(&founding[0]) && log.stderr.contains("set aside"),
        "reported: {}",
        log.stderr
    );
    let shown = bob.json(["show", &lib]);
    assert_eq!(shown["name"], "docs");
    let again = bob.run(["log", &lib]);
    assert!(
        !again.stderr.contains("set aside"),
        "reported once: {}",
        again.stderr
    );

    // The daemon starts on the home, reports the record, and fetches it again.
    b.restart(&[&a.addr]);
    let status = bob.json(["node", "status"]);
    assert_eq!(status["damaged"]["count"], 1, "{status}");
    assert_eq!(status["damaged"]["records"][0]["id"], founding[0].as_str());
    wait_for("bob to fetch the record again", || {
        (root(&bob, &lib)? == want).then_some(())
    });
    let status = bob.json(["node", "status"]);
    assert_eq!(
        status["damaged"]["records"][0]["refetched"], true,
        "{status}"
    );
    let text = bob.ok(["node", "status"]);
    assert!(
        text.contains("damaged") && text.contains("a good copy is back"),
        "{text}"
    );

    let wc = scene.path("wc-bob");
    bob.ok(["checkout", &lib, utf8(&wc)]);
    assert_eq!(diff_trees(&src, &wc), None);
}
