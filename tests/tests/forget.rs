//! `commons forget`: two real `commonsd` on 127.0.0.1. Bob follows two commons of alice's and
//! forks one. Forgetting the forked commons while its fork is followed keeps the records;
//! forgetting the fork too drops the family: it is gone from `list`, its own blob files are
//! removed, the other commons still checks out byte for byte (including a file both named), and
//! new work on the forgotten commons does not come back by gossip while the other's does.

use std::collections::BTreeSet;

use commons_tests::net::{Daemon, wait_for};
use commons_tests::{
    Person, Scene, bin, daemon_bin, patch_statuses, read_tree, shown_root, str_of, tree, utf8,
};

/// Over the pack limit (64 KiB), so a node keeps each as its own file.
fn big(tag: &str) -> Vec<u8> {
    let mut v = tag.as_bytes().repeat(100_000 / tag.len() + 1);
    v.truncate(100_000);
    v
}

fn names(p: &Person) -> BTreeSet<String> {
    p.json(["list"])
        .as_array()
        .expect("list")
        .iter()
        .map(|c| str_of(&c["name"]))
        .collect()
}

fn blob_file(p: &Person, content: &[u8]) -> std::path::PathBuf {
    let hex = commons_core::BlobHash::of(content).to_hex();
    p.home.join("store/blobs").join(&hex[..2]).join(hex)
}

fn propose_one(scene: &Scene, p: &Person, lineage: &str, file: &str) -> String {
    let wc = scene.path(&format!("wc-{}-{file}", p.name));
    p.ok(["checkout", lineage, utf8(&wc)]);
    std::fs::write(wc.join(file), format!("{file}\n")).expect("write");
    p.ok(["propose", utf8(&wc), "-m", file]).trim().to_owned()
}

#[test]
fn forgetting_a_commons_drops_its_family_and_only_what_it_alone_used() {
    let scene = Scene::new(bin!());
    let (alice, bob) = (scene.person("alice"), scene.person("bob"));
    let d = daemon_bin!();
    let a = Daemon::start(&d, &alice.home, &[]);
    let _b = Daemon::start(&d, &bob.home, &[&a.addr]);
    let (shared, garden_only, orchard_only) = (big("shared "), big("garden "), big("orchard "));
    let garden = scene.found(
        &alice,
        "Garden",
        &[
            ("README.md", b"beds\n"),
            ("seeds.bin", &garden_only),
            ("common.bin", &shared),
        ],
    );
    let orchard_files: &[(&str, &[u8])] = &[
        ("README.md", b"trees\n"),
        ("grafts.bin", &orchard_only),
        ("common.bin", &shared),
    ];
    let orchard = scene.found(&alice, "Orchard", orchard_files);
    for l in [&garden, &orchard] {
        bob.ok(["follow", l]);
    }
    wait_for("bob to hold both commons and their files", || {
        let roots = [&garden, &orchard]
            .iter()
            .all(|l| shown_root(&bob, l).is_some() && shown_root(&bob, l) == shown_root(&alice, l));
        (roots && blob_file(&bob, &garden_only).exists() && blob_file(&bob, &orchard_only).exists())
            .then_some(())
    });
    let fork = bob.json(["fork", &garden, "--name", "Garden (bob)"]);
    let fork = str_of(&fork["lineage"]);

    // The fork is followed: the family's records stay.
    let kept = bob.json(["forget", &garden]);
    assert_eq!(kept["records"], 0, "{kept}");
    assert_eq!(
        kept["still_followed"].as_array().map(Vec::len),
        Some(1),
        "{kept}"
    );
    let human = bob.ok(["forget", &garden]);
    assert!(human.contains("still followed"), "{human}");
    assert!(names(&bob).contains("Garden"));

    // Forgetting the fork too drops the family.
    let gone = bob.json(["forget", &fork]);
    assert_eq!(gone["dropped"].as_array().map(Vec::len), Some(2), "{gone}");
    assert!(gone["records"].as_u64().unwrap_or(0) >= 2, "{gone}");
    assert!(gone["blobs"].as_u64().unwrap_or(0) >= 1, "{gone}");
    assert_eq!(names(&bob), BTreeSet::from(["Orchard".to_string()]));
    assert!(
        !blob_file(&bob, &garden_only).exists(),
        "garden's own file was kept"
    );
    assert!(
        blob_file(&bob, &shared).exists(),
        "the file orchard names too was removed"
    );
    let wc = scene.path("bob-orchard");
    bob.ok(["checkout", &orchard, utf8(&wc)]);
    assert_eq!(read_tree(&wc), tree(orchard_files));

    // New work on both: orchard's reaches bob, garden's does not come back.
    let on_garden = propose_one(&scene, &alice, &garden, "later-garden.txt");
    let on_orchard = propose_one(&scene, &alice, &orchard, "later-orchard.txt");
    wait_for("orchard's new patch on bob", || {
        patch_statuses(&bob, &orchard)?
            .contains_key(&on_orchard)
            .then_some(())
    });
    assert!(!names(&bob).contains("Garden"));
    let asked = bob.run(["patch", "show", &on_garden]);
    assert_ne!(asked.code, 0, "garden's patch came back: {}", asked.stdout);

    // A commons this node never heard of: a clear error.
    let unknown = bob.run(["forget", &"ab".repeat(32)]);
    assert_ne!(unknown.code, 0);
    assert!(
        unknown.stderr.contains("neither followed nor stored"),
        "{}",
        unknown.stderr
    );
}
