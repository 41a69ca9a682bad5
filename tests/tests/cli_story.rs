//! The whole story, as three people would type it, each with their own home and only bundles
//! between them: alice founds a seed library from a directory; bob proposes two patches; alice
//! accepts one and rejects the other; carol forks and accepts the rejected one; alice takes a
//! patch back from carol's fork. Every status, tree and state root is checked, and the three
//! homes agree once the bundles have gone round.

use std::collections::BTreeMap;
use std::fs;

use commons_tests::{Person, Scene, bin, read_tree, root_of, str_of, strs, tree};
use serde_json::Value;

const README: &[u8] = b"# Seed Library\nSeeds anyone may grow and share.\n";
const TOMATO: &[u8] = b"Tomato\n  sow: March\n  spacing: 50 cm\n";
const TOMATO_BOB: &[u8] = b"Tomato\n  sow: March, 5 mm deep\n  spacing: 50 cm\n";
const BEAN: &[u8] = b"Bean\n  sow: May\n";
const BEAN_BOB: &[u8] = b"Bean\n  sow: May, after the last frost\n";
const SQUASH: &[u8] = b"Squash\n  sow: May, in mounds\n";
const SAVING: &[u8] = b"# Saving seeds\nDry them well.\n";
const LOGO: &[u8] = &[0x89, b'P', b'N', b'G', 0, 1, 2, 3, 255];

/// `p` founds "Seeds" from a directory holding only the README; returns its lineage.
fn found_seeds(scene: &Scene, p: &Person) -> String {
    let seeds = scene.write_tree("seeds", &[("README.md", README)]);
    str_of(
        &p.json([
            "create",
            "Seeds",
            "--license",
            "MIT",
            "--from",
            seeds.to_str().expect("utf-8"),
        ])["lineage"],
    )
}

/// The status of `patch` in `lineage`, as `patches --json` says.
fn status(p: &Person, lineage: &str, patch: &str) -> String {
    let list = p.json(["patches", lineage]);
    let found = list
        .as_array()
        .expect("an array")
        .iter()
        .find(|x| x["patch"] == patch)
        .unwrap_or_else(|| panic!("{patch} is not listed in {lineage}: {list}"));
    str_of(&found["status"])
}

fn show(p: &Person, lineage: &str) -> Value {
    p.json(["show", lineage])
}

/// Checks `lineage` out in `p`'s home into a fresh directory, compares the files with
/// `expected`, and checks that the state root `show` reports is the root of those files.
fn assert_tree(scene: &Scene, p: &Person, lineage: &str, expected: &BTreeMap<String, Vec<u8>>) {
    let dir = scene.path(&format!("check-{}-{}", p.name, &lineage[..12]));
    let _ = fs::remove_dir_all(&dir);
    let out = p.json(["checkout", lineage, dir.to_str().expect("utf-8")]);
    assert_eq!(&read_tree(&dir), expected, "{}'s tree of {lineage}", p.name);
    let root = str_of(&show(p, lineage)["root"]);
    assert_eq!(
        root,
        root_of(expected),
        "{}'s state root of {lineage}",
        p.name
    );
    assert_eq!(str_of(&out["root"]), root);
    fs::remove_dir_all(&dir).expect("clean up");
}

fn export(p: &Person, scene: &Scene, lineage: &str, name: &str) -> String {
    let file = scene.path(name);
    let path = file.to_str().expect("utf-8").to_owned();
    p.json(["bundle", "export", lineage, &path]);
    path
}

#[test]
fn commoners_maintainers_and_forkers() {
    let scene = Scene::new(bin!());
    let alice = scene.person("alice");
    let bob = scene.person("bob");
    let carol = scene.person("carol");

    // Alice founds the commons from a directory; she maintains it.
    let seeds = scene.write_tree(
        "seeds",
        &[
            ("README.md", README),
            ("varieties/tomato.txt", TOMATO),
            ("varieties/bean.txt", BEAN),
            ("logo.png", LOGO),
            (".git/HEAD", b"ref: refs/heads/main\n"),
        ],
    );
    let created = alice.json([
        "create",
        "Seed Library",
        "--license",
        "CC-BY-SA-4.0",
        "--summary",
        "Open-pollinated seeds and how to grow them.",
        "--from",
        seeds.to_str().expect("utf-8"),
    ]);
    let lib = str_of(&created["lineage"]);
    let import = strs(&created["patches"]);
    assert_eq!(import.len(), 1);
    assert_eq!(created["files"], 4, ".git is not imported");
    assert_eq!(created["accepted"], true);
    let s = show(&alice, &lib);
    assert_eq!(strs(&s["maintainers"]), [alice.did()]);
    assert_eq!(s["threshold"], 1);
    assert_eq!(s["license"], "CC-BY-SA-4.0");
    assert_eq!(s["parent"], Value::Null);
    assert_eq!(s["counts"]["accepted"], 1);
    assert_eq!(s["files"], 4);
    let base = tree(&[
        ("README.md", README),
        ("varieties/tomato.txt", TOMATO),
        ("varieties/bean.txt", BEAN),
        ("logo.png", LOGO),
    ]);
    assert_tree(&scene, &alice, &lib, &base);

    // Bob receives it by bundle and proposes two patches from two working copies.
    let a1 = export(&alice, &scene, &lib, "alice-1.bundle");
    let imported = bob.json(["bundle", "import", &a1]);
    assert_eq!(imported["new_records"], 3);
    assert_eq!(imported["new_blobs"], 4);
    assert_eq!(
        bob.json(["bundle", "import", &a1])["new_records"],
        0,
        "idempotent"
    );
    let wc1 = scene.path("bob-tomato");
    let wc1s = wc1.to_str().expect("utf-8");
    bob.json(["checkout", &lib[..8], wc1s]);
    assert_eq!(read_tree(&wc1), base);
    fs::write(wc1.join("varieties/tomato.txt"), TOMATO_BOB).expect("edit");
    let st = bob.json(["status", wc1s]);
    assert_eq!(strs(&st["modified"]), ["varieties/tomato.txt"]);
    assert_eq!(st["clean"], false);
    let p1 = str_of(&bob.json(["propose", wc1s, "-m", "Tomato: say how deep to sow"])["patch"]);
    assert_eq!(
        strs(&bob.json(["status", wc1s])["modified"]),
        ["varieties/tomato.txt"],
        "after propose the working copy keeps its base"
    );

    let wc2 = scene.path("bob-squash");
    let wc2s = wc2.to_str().expect("utf-8");
    bob.ok(["checkout", "Seed Library", wc2s]);
    fs::write(wc2.join("varieties/bean.txt"), BEAN_BOB).expect("edit");
    fs::write(wc2.join("varieties/squash.txt"), SQUASH).expect("add");
    // The human form prints the id alone on stdout.
    let p2 = bob
        .ok(["propose", wc2s, "-m", "Add squash, and when to sow beans"])
        .trim()
        .to_owned();
    assert_eq!(p2.len(), 64);
    let shown = bob.json(["patch", "show", &p2[..10]]);
    assert_eq!(shown["lineage"], lib.as_str());
    assert_eq!(strs(&shown["parents"]), import);
    let kinds: Vec<(String, String)> = shown["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| (str_of(&c["path"]), str_of(&c["change"])))
        .collect();
    assert_eq!(
        kinds,
        [
            ("varieties/bean.txt".to_owned(), "modified".to_owned()),
            ("varieties/squash.txt".to_owned(), "added".to_owned())
        ]
    );
    let text = bob.ok(["patch", "show", &p2]);
    assert!(text.contains("+++ b/varieties/squash.txt"), "{text}");
    assert!(text.contains("+  sow: May, after the last frost"), "{text}");
    assert_eq!(status(&bob, &lib, &p1), "pending");
    assert_eq!(status(&bob, &lib, &p2), "pending");

    // Alice accepts one and rejects the other.
    let b1 = export(&bob, &scene, &lib, "bob-1.bundle");
    let imported = alice.json(["bundle", "import", &b1]);
    assert_eq!(imported["new"]["patches"], 2);
    let v = alice.json(["validate", &p1[..8], "--accept", "-m", "Thanks, Bob"]);
    assert_eq!(v["status"], "accepted");
    assert_eq!(v["lineage"], lib.as_str());
    let v = alice.json([
        "validate",
        &p2,
        "--reject",
        "-m",
        "Squash does not fit here",
    ]);
    assert_eq!(v["status"], "rejected");
    let rejected = alice.json(["patches", &lib, "--status", "rejected"]);
    assert_eq!(rejected.as_array().map(Vec::len), Some(1));
    assert_eq!(rejected[0]["patch"], p2.as_str());
    let log = alice.json(["log", &lib]);
    let order: Vec<String> = log
        .as_array()
        .expect("log")
        .iter()
        .map(|e| str_of(&e["patch"]))
        .collect();
    assert_eq!(order, [p1.clone(), import[0].clone()], "newest first");
    let mut lib_tree = base.clone();
    lib_tree.insert("varieties/tomato.txt".into(), TOMATO_BOB.to_vec());
    assert_tree(&scene, &alice, &lib, &lib_tree);
    let s = show(&alice, &lib);
    assert_eq!(s["counts"]["accepted"], 2);
    assert_eq!(s["counts"]["rejected"], 1);
    assert_eq!(s["counts"]["pending"], 0);

    // Carol forks alice's commons and accepts bob's rejected patch in her fork.
    let a2 = export(&alice, &scene, &lib, "alice-2.bundle");
    carol.json(["bundle", "import", &a2]);
    let forked = carol.json([
        "fork",
        &lib[..6],
        "--name",
        "Seed Library (squash)",
        "-m",
        "Squash belongs in a seed library",
    ]);
    let fork = str_of(&forked["lineage"]);
    assert_eq!(strs(&forked["heads"]), [p1.as_str()]);
    let f = show(&carol, &fork);
    assert_eq!(f["parent"]["lineage"], lib.as_str());
    assert_eq!(f["parent"]["name"], "Seed Library");
    assert_eq!(f["summary"], "Squash belongs in a seed library");
    assert_eq!(f["license"], "CC-BY-SA-4.0", "license inherited");
    assert_eq!(strs(&f["maintainers"]), [carol.did()]);
    assert_eq!(
        f["root"],
        show(&carol, &lib)["root"],
        "a fork starts where its parent is"
    );
    let v = carol.json(["validate", &p2, "--accept", "--in", &fork]);
    assert_eq!(v["status"], "accepted");
    assert_eq!(status(&carol, &fork, &p2), "accepted");
    assert_eq!(
        status(&carol, &lib, &p2),
        "rejected",
        "the parent is unchanged"
    );
    let mut fork_tree = lib_tree.clone();
    fork_tree.insert("varieties/bean.txt".into(), BEAN_BOB.to_vec());
    fork_tree.insert("varieties/squash.txt".into(), SQUASH.to_vec());
    assert_tree(&scene, &carol, &fork, &fork_tree);
    let family = carol.json(["lineage", &fork]);
    let roles: Vec<(String, String)> = family
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| (str_of(&n["lineage"]), str_of(&n["role"])))
        .collect();
    assert_eq!(
        roles,
        [
            (lib.clone(), "ancestor".to_owned()),
            (fork.clone(), "this".to_owned())
        ]
    );

    // Carol proposes a guide to her fork and accepts it there.
    let wc3 = scene.path("carol-guide");
    let wc3s = wc3.to_str().expect("utf-8");
    carol.json(["checkout", &fork, wc3s]);
    assert_eq!(read_tree(&wc3), fork_tree);
    fs::create_dir_all(wc3.join("guides")).expect("mkdir");
    fs::write(wc3.join("guides/saving.md"), SAVING).expect("add");
    let p3 = str_of(&carol.json(["propose", wc3s, "-m", "A guide to saving seeds"])["patch"]);
    assert_eq!(
        carol.json(["validate", &p3, "--accept"])["status"],
        "accepted"
    );
    fork_tree.insert("guides/saving.md".into(), SAVING.to_vec());
    assert_tree(&scene, &carol, &fork, &fork_tree);

    // Alice takes carol's guide back into her commons (not carol's squash).
    let c1 = export(&carol, &scene, &fork, "carol-1.bundle");
    let imported = alice.json(["bundle", "import", &c1]);
    assert_eq!(imported["new_commons"][0]["lineage"], fork.as_str());
    let refused = alice.fails(5, ["validate", &p3, "--accept"]);
    assert!(
        refused.contains("not a maintainer of \"Seed Library (squash)\""),
        "{refused}"
    );
    let v = alice.json([
        "validate",
        &p3,
        "--accept",
        "--in",
        &lib,
        "-m",
        "Good guide",
    ]);
    assert_eq!(v["status"], "accepted");
    lib_tree.insert("guides/saving.md".into(), SAVING.to_vec());
    assert_tree(&scene, &alice, &lib, &lib_tree);
    assert_eq!(status(&alice, &lib, &p2), "rejected");
    let statuses: BTreeMap<String, String> = alice.json(["patch", "show", &p3])["statuses"]
        .as_array()
        .expect("statuses")
        .iter()
        .map(|s| (str_of(&s["lineage"]), str_of(&s["status"])))
        .collect();
    assert_eq!(
        statuses,
        BTreeMap::from([
            (lib.clone(), "accepted".to_owned()),
            (fork.clone(), "accepted".to_owned())
        ])
    );
    let family = alice.json(["lineage", &lib]);
    assert_eq!(family[1]["role"], "descendant");

    // Once the bundles have gone round, the three homes agree.
    let a3 = export(&alice, &scene, &lib, "alice-3.bundle");
    bob.json(["bundle", "import", &a3]);
    carol.json(["bundle", "import", &a3]);
    for p in [&alice, &bob, &carol] {
        assert_eq!(
            str_of(&show(p, &lib)["root"]),
            root_of(&lib_tree),
            "{}",
            p.name
        );
        assert_eq!(
            str_of(&show(p, &fork)["root"]),
            root_of(&fork_tree),
            "{}",
            p.name
        );
        assert_eq!(status(p, &lib, &p2), "rejected");
        assert_eq!(status(p, &fork, &p2), "accepted");
        assert_eq!(status(p, &lib, &p3), "accepted");
    }
    assert_tree(&scene, &bob, &fork, &fork_tree);
    assert_tree(&scene, &bob, &lib, &lib_tree);
    for p in [&bob, &carol] {
        let again = p.json(["bundle", "import", &a3]);
        assert_eq!(again["new_records"], 0);
        assert_eq!(again["new_blobs"], 0);
    }

    // Bob's first working copy still holds his tomato change; alice accepted it, so update
    // brings in the rest without a conflict, and the change is no longer local.
    let up = bob.json(["update", wc1s]);
    assert_eq!(strs(&up["written"]), ["guides/saving.md"]);
    assert_eq!(strs(&up["kept"]), Vec::<String>::new());
    assert_eq!(read_tree(&wc1), lib_tree);
    let st = bob.json(["status", wc1s]);
    assert_eq!(st["clean"], true);
    assert_eq!(st["behind"], false);
    assert_eq!(bob.json(["update", wc1s])["up_to_date"], true);

    // Forking alice's commons at carol's guide names the guide as the head and leaves out its
    // ancestor that alice rejected, so the fork has alice's files.
    let at = bob.json(["fork", &lib, "--at", &p3, "--name", "Guides"]);
    assert_eq!(strs(&at["heads"]), [p3.as_str()]);
    assert_eq!(strs(&at["excluded"]), [p2.as_str()]);
    let guides = str_of(&at["lineage"]);
    assert_tree(&scene, &bob, &guides, &lib_tree);
    let family = bob.json(["lineage", &lib]);
    assert_eq!(family.as_array().map(Vec::len), Some(3));
}

#[test]
fn fork_at_an_earlier_patch_leaves_out_what_came_after() {
    let scene = Scene::new(bin!());
    let alice = scene.person("alice");
    let dana = scene.person("dana");
    let lib = found_seeds(&scene, &alice);
    let first = vec![str_of(&alice.json(["log", &lib])[0]["patch"])];
    let wc = scene.path("wc");
    let wcs = wc.to_str().expect("utf-8");
    alice.ok(["checkout", &lib, wcs]);
    fs::write(wc.join("README.md"), b"# Seeds, second edition\n").expect("edit");
    let second = str_of(&alice.json(["propose", wcs, "-m", "Second edition"])["patch"]);
    alice.json(["validate", &second, "--accept"]);

    let bundle = export(&alice, &scene, &lib, "a.bundle");
    dana.json(["bundle", "import", &bundle]);
    let forked = dana.json([
        "fork",
        &lib,
        "--at",
        &first[0],
        "-m",
        "Back to the first edition",
    ]);
    let fork = str_of(&forked["lineage"]);
    assert_eq!(strs(&forked["heads"]), first);
    assert_eq!(strs(&forked["excluded"]), Vec::<String>::new());
    assert_eq!(show(&dana, &fork)["name"], "Seeds (fork)");
    assert_tree(&scene, &dana, &fork, &tree(&[("README.md", README)]));
    let listed = dana.json(["patches", &fork]);
    assert!(
        listed
            .as_array()
            .expect("patches")
            .iter()
            .all(|p| p["patch"] != second.as_str()),
        "the second edition is not part of the fork: {listed}"
    );
    assert_eq!(
        status(&dana, &lib, &second),
        "accepted",
        "the parent keeps it"
    );
}

/// A change too large for one patch record (thousands of files) is proposed as a chain of
/// patches, each the parent of the next; accepting every part brings all the files in.
#[test]
fn a_large_proposal_becomes_a_chain_of_patches() {
    let scene = Scene::new(bin!());
    let alice = scene.person("alice");
    let lib = found_seeds(&scene, &alice);
    let wc = scene.path("wc");
    let wcs = wc.to_str().expect("utf-8");
    alice.ok(["checkout", &lib, wcs]);
    // 2 500 files with long names: their changes encode to well over 128 KiB.
    let dir = wc.join("varieties-collected-by-the-seed-library-over-the-years");
    fs::create_dir_all(&dir).expect("mkdir");
    let mut expected = tree(&[("README.md", README)]);
    for i in 0..2_500 {
        let name = format!("variety-number-{i:05}-with-its-sowing-and-harvest-notes.txt");
        let body = format!("variety {i}\n").into_bytes();
        fs::write(dir.join(&name), &body).expect("write");
        expected.insert(
            format!("varieties-collected-by-the-seed-library-over-the-years/{name}"),
            body,
        );
    }
    let proposed = alice.json(["propose", wcs, "-m", "The whole collection"]);
    let parts = strs(&proposed["parts"]);
    assert!(parts.len() >= 2, "a chain of patches: {proposed}");
    assert_eq!(str_of(&proposed["patch"]), parts[parts.len() - 1]);
    for part in &parts {
        alice.json(["validate", part, "--accept"]);
    }
    for part in &parts {
        assert_eq!(status(&alice, &lib, part), "accepted");
    }
    assert_tree(&scene, &alice, &lib, &expected);
}
