//! Real directories, not toy ones: a commons founded from a tree of 5 000 files shaped like a
//! repository, a change touching 3 000 of them, both carried between two real `commonsd`
//! processes and by a bundle to a third home; every node ends with the same state root and a
//! checkout identical to the source (`diff -r`). And a home damaged by the decode-limit bug of
//! earlier releases works again after the upgrade, with no step from its user.

use std::fs;
use std::path::Path;

use commons_tests::fixture::{RepoShape, Rng, diff_trees};
use commons_tests::net::{Daemon, converge, wait_for};
use commons_tests::{
    Person, Scene, bin, daemon_bin, patch_statuses, shown_root as root, str_of, strs, utf8,
};

/// Files in the founding tree.
const FILES: usize = 5_000;
/// Files the proposed change touches (modified, deleted or added).
const TOUCHED: usize = 3_000;

fn all_accepted(p: &Person, lineage: &str, patches: &[String]) -> Option<()> {
    let s = patch_statuses(p, lineage)?;
    patches
        .iter()
        .all(|id| s.get(id).is_some_and(|st| st == "accepted"))
        .then_some(())
}

/// Changes `TOUCHED` files of the working copy `wc`: most modified, some deleted, some added in
/// new and existing directories.
fn touch_many(wc: &Path, files: &[String], seed: u64) {
    let mut rng = Rng::new(seed);
    let (deleted, added) = (TOUCHED / 10, TOUCHED / 10);
    let modified = TOUCHED - deleted - added;
    let mut order: Vec<&String> = files.iter().filter(|f| !f.starts_with("assets/")).collect();
    // A deterministic shuffle, so the touched files are spread over the tree.
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    for f in &order[..modified] {
        let file = wc.join(f);
        let mut bytes = fs::read(&file).expect("read");
        bytes.extend_from_slice(format!("changed {}\n", rng.next_u64()).as_bytes());
        fs::write(&file, bytes).expect("write");
    }
    for f in &order[modified..modified + deleted] {
        fs::remove_file(wc.join(f)).expect("delete");
    }
    for (i, near) in order.iter().take(added).enumerate() {
        let dir = Path::new(near.as_str()).parent().expect("a parent");
        let file = wc.join(dir).join(format!("added-{i:04}.md"));
        fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        fs::write(file, format!("new file {i}\n")).expect("write");
    }
}

#[test]
fn a_repository_sized_tree_travels_whole_by_gossip_catch_up_and_bundle() {
    let scene = Scene::new(bin!());
    let (alice, bob, carol) = (
        scene.person("alice"),
        scene.person("bob"),
        scene.person("carol"),
    );
    let src = scene.path("src");
    let tree = RepoShape {
        large_size: 1 << 20,
        ..RepoShape::new(FILES, 13)
    }
    .write(&src);
    assert_eq!(tree.files.len(), FILES);

    let d = daemon_bin!();
    let a = Daemon::start(&d, &alice.home, &[]);
    let _b = Daemon::start(&d, &bob.home, &[&a.addr]);

    // Founding: more changes than one patch holds, so a chain of patches, all accepted.
    let created = alice.json([
        "create",
        "big",
        "--license",
        "CC0-1.0",
        "--from",
        utf8(&src),
    ]);
    let lib = str_of(&created["lineage"]);
    let founding = strs(&created["patches"]);
    assert!(founding.len() > 1, "a chain: {created}");
    assert_eq!(created["accepted"], true, "{created}");
    assert_eq!(created["files"], FILES as u64);
    let wc_a = scene.path("wc-alice");
    alice.ok(["checkout", &lib, utf8(&wc_a)]);
    assert_eq!(
        diff_trees(&src, &wc_a),
        None,
        "alice's checkout is the source"
    );

    // Bob follows: the founding chain arrives by catch-up.
    bob.ok(["follow", &lib]);
    let founded_root = converge(&lib, &alice, &[&bob]);

    // Bob changes 3 000 files and proposes: a chain again, gossiped to alice's node.
    let wc_b = scene.path("wc-bob");
    bob.ok(["checkout", &lib, utf8(&wc_b)]);
    assert_eq!(
        diff_trees(&src, &wc_b),
        None,
        "bob's checkout is the source"
    );
    touch_many(&wc_b, &tree.files.keys().cloned().collect::<Vec<_>>(), 5);
    let proposed = bob.json(["propose", utf8(&wc_b), "-m", "A sweeping change"]);
    let parts = strs(&proposed["parts"]);
    assert!(parts.len() > 1, "3 000 changes make a chain: {proposed}");
    wait_for("the proposed chain to reach alice", || {
        let s = patch_statuses(&alice, &lib)?;
        parts.iter().all(|id| s.contains_key(id)).then_some(())
    });
    for part in &parts {
        alice.ok(["validate", part, "--accept", "-m", "thanks"]);
    }
    wait_for("bob to see the chain accepted", || {
        all_accepted(&bob, &lib, &parts)
    });
    let final_root = converge(&lib, &alice, &[&bob]);
    assert_ne!(final_root, founded_root);

    // A bundle carries everything to a home with no daemon and no network.
    let bundle = scene.path("big.bundle");
    alice.ok(["bundle", "export", &lib, utf8(&bundle)]);
    carol.ok(["bundle", "import", utf8(&bundle)]);
    assert_eq!(root(&carol, &lib).as_deref(), Some(final_root.as_str()));
    assert_eq!(all_accepted(&carol, &lib, &parts), Some(()));
    assert_eq!(all_accepted(&carol, &lib, &founding), Some(()));

    // Every node's checkout is bob's working copy, file for file.
    for p in [&alice, &bob, &carol] {
        let wc = scene.path(&format!("final-{}", p.name));
        p.ok(["checkout", &lib, utf8(&wc)]);
        assert_eq!(
            diff_trees(&wc_b, &wc),
            None,
            "{}'s checkout differs from the proposed tree",
            p.name
        );
    }
}

/// The home committed under `tests/fixtures/`, made by the release before this fix: `commons
/// create big --from src` on 1 500 files `f1` … `f1500` (each "line i\n") stored a founding
/// patch that its own decoder then refused, and every command on the home failed.
#[test]
fn a_home_damaged_by_the_decode_limit_bug_works_after_the_upgrade() {
    let scene = Scene::new(bin!());
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/home-decode-limit-bug.tar.gz");
    let homes = scene.path("old");
    fs::create_dir_all(&homes).expect("mkdir");
    let untar = std::process::Command::new("tar")
        .arg("xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(&homes)
        .status()
        .expect("run tar");
    assert!(untar.success(), "unpack {}", fixture.display());
    let old = scene.existing("old", &homes.join("home"));

    let expected = scene.path("expected");
    for i in 1..=1500 {
        let f = expected.join(format!("f{i}"));
        fs::create_dir_all(&expected).expect("mkdir");
        fs::write(f, format!("line {i}\n")).expect("write");
    }

    // Without a daemon: the CLI opens the store itself.
    let list = old.json(["list"]);
    let lineage = str_of(&list[0]["lineage"]);
    assert_eq!(list[0]["name"], "big", "{list}");
    let shown = old.json(["show", &lineage]);
    assert_eq!(shown["counts"]["accepted"], 1, "{shown}");
    let wc = scene.path("wc-old");
    old.ok(["checkout", &lineage, utf8(&wc)]);
    assert_eq!(diff_trees(&expected, &wc), None);

    // With a daemon on the same home: it starts, and answers.
    let mut daemon = Daemon::start(&daemon_bin!(), &old.home, &[]);
    let status = old.json(["node", "status"]);
    assert!(
        status["records"].as_u64().is_some_and(|n| n >= 3),
        "{status}"
    );
    assert_eq!(
        root(&old, &lineage),
        shown["root"].as_str().map(str::to_owned)
    );
    assert_eq!(daemon.stop(), 0);
}
