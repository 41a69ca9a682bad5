//! What goes wrong, and what `commons` says about it: each case checks the message, the hint,
//! the documented exit code, and that nothing was changed.

use std::collections::BTreeMap;
use std::fs;

use commons_cli::bundle::BundleWriter;
use commons_core::{Body, Change, Charter, LineageId, Patch, Record, SecretKey};
use commons_tests::{Person, Scene, bin, read_tree, str_of, strs};
use serde_json::Value;

/// A commons founded by `p` from a small directory; returns its id.
fn found(scene: &Scene, p: &Person) -> String {
    let dir = scene.write_tree(
        &format!("{}-seeds", p.name),
        &[("README.md", b"# Seeds\n"), ("notes/bean.txt", b"Bean\n")],
    );
    str_of(
        &p.json([
            "create",
            "Seeds",
            "--license",
            "GPL-3.0-or-later",
            "--from",
            dir.to_str().expect("utf-8"),
        ])["lineage"],
    )
}

fn count_lineages(p: &Person) -> usize {
    p.json(["list"]).as_array().map_or(0, Vec::len)
}

fn hint_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("hint: "))
        .unwrap_or_else(|| panic!("no hint line in:\n{stderr}"))
}

#[test]
fn a_non_maintainer_cannot_validate() {
    let scene = Scene::new(bin!());
    let alice = scene.person("alice");
    let bob = scene.person("bob");
    let lib = found(&scene, &alice);
    let file = scene.path("a.bundle");
    let files = file.to_str().expect("utf-8");
    alice.json(["bundle", "export", &lib, files]);
    bob.json(["bundle", "import", files]);
    let wc = scene.path("wc");
    let wcs = wc.to_str().expect("utf-8");
    bob.json(["checkout", &lib, wcs]);
    fs::write(wc.join("README.md"), "# Seeds!\n").expect("edit");
    let patch = str_of(&bob.json(["propose", wcs, "-m", "Excitement"])["patch"]);

    let err = bob.fails(5, ["validate", &patch, "--accept"]);
    assert!(
        err.contains(&format!(
            "you ({}) are not a maintainer of \"Seeds\"",
            bob.did()
        )),
        "{err}"
    );
    assert!(err.contains(&alice.did()), "lists the maintainers: {err}");
    assert!(hint_line(&err).contains("commons fork"), "{err}");
    let shown = bob.json(["patch", "show", &patch]);
    assert_eq!(shown["validations"], Value::Array(vec![]), "nothing stored");
    assert_eq!(
        bob.json(["patches", &lib, "--status", "pending"])[0]["patch"],
        patch.as_str()
    );
}

#[test]
fn unknown_short_and_ambiguous_ids() {
    let scene = Scene::new(bin!());
    let alice = scene.person("alice");
    found(&scene, &alice);

    let err = alice.fails(3, ["show", "0123456789abcdef"]);
    assert!(
        err.contains("no commons with id or name `0123456789abcdef`"),
        "{err}"
    );
    hint_line(&err);
    let err = alice.fails(3, ["show", "No Such Commons"]);
    assert!(
        err.contains("no commons with id or name `No Such Commons`"),
        "{err}"
    );
    let err = alice.fails(3, ["patch", "show", &"f".repeat(64)]);
    assert!(err.contains("no record with id"), "{err}");
    let err = alice.fails(2, ["patch", "show", "abc"]);
    assert!(err.contains("at least 4 hex digits"), "{err}");
    let err = alice.fails(2, ["show", "abc"]);
    assert!(err.contains("at least 4 hex digits"), "{err}");

    // Sign patches here until two ids share their first 4 hex digits (about 300 at most), and
    // hand them to alice in a bundle.
    let key = SecretKey::from_seed([42; 32]);
    let charter = Record::sign(
        &key,
        1,
        Body::Charter(Charter {
            name: "Collisions".into(),
            summary: String::new(),
            license: "MIT".into(),
            maintainers: vec![key.public()],
            threshold: 1,
            fork: None,
        }),
    )
    .expect("sign");
    let lineage = LineageId::from(charter.id());
    let mut by_prefix: BTreeMap<String, Record> = BTreeMap::new();
    let pair = (0u32..100_000)
        .find_map(|i| {
            let patch = Record::sign(
                &key,
                2,
                Body::Patch(Patch {
                    lineage,
                    parents: vec![],
                    changes: vec![Change {
                        path: "f".into(),
                        before: None,
                        after: Some(commons_core::BlobHash::of(&i.to_le_bytes())),
                    }],
                    message: format!("patch {i}"),
                }),
            )
            .expect("sign");
            let prefix = patch.id().to_hex()[..4].to_owned();
            by_prefix
                .insert(prefix.clone(), patch.clone())
                .map(|other| (prefix, other, patch))
        })
        .expect("a collision");
    let (prefix, a, b) = pair;
    let file = scene.path("collide.bundle");
    let mut w = BundleWriter::new(Vec::new(), 3).expect("writer");
    for r in [&charter, &a, &b] {
        w.record(r).expect("record");
    }
    fs::write(&file, w.finish().expect("finish")).expect("write bundle");
    let imported = alice.json(["bundle", "import", file.to_str().expect("utf-8")]);
    assert_eq!(imported["new_records"], 3);

    let err = alice.fails(4, ["patch", "show", &prefix]);
    assert!(
        err.contains(&format!("id prefix `{prefix}` is ambiguous")),
        "{err}"
    );
    assert!(
        err.contains(&a.id().to_hex()) && err.contains(&b.id().to_hex()),
        "{err}"
    );
    assert!(hint_line(&err).contains("more digits"), "{err}");
    alice.fails(4, ["validate", &prefix, "--accept"]);
    // One more digit is enough when the ids differ there.
    let longer = &a.id().to_hex()[..12];
    let shown = alice.json(["patch", "show", longer]);
    assert_eq!(shown["patch"], a.id().to_hex());
    // A commons id where a patch is expected, and the other way round.
    let err = alice.fails(3, ["show", longer]);
    assert!(err.contains("is a patch, not a commons"), "{err}");
}

#[test]
fn corrupt_and_truncated_bundles_store_nothing() {
    let scene = Scene::new(bin!());
    let alice = scene.person("alice");
    let bob = scene.person("bob");
    let lib = found(&scene, &alice);
    let file = scene.path("a.bundle");
    alice.json(["bundle", "export", &lib, file.to_str().expect("utf-8")]);
    let good = fs::read(&file).expect("read");

    assert_eq!(count_lineages(&bob), 0);
    // A flipped bit in the last blob's content (just before the 8-byte end marker).
    let mut bad = good.clone();
    let at = bad.len() - 9;
    bad[at] ^= 0x01;
    let corrupt = scene.path("corrupt.bundle");
    fs::write(&corrupt, &bad).expect("write");
    let err = bob.fails(1, ["bundle", "import", corrupt.to_str().expect("utf-8")]);
    assert!(err.contains("is corrupt"), "{err}");
    assert!(hint_line(&err).contains("nothing was stored"), "{err}");
    assert_eq!(count_lineages(&bob), 0);

    // A flipped bit inside the first record.
    let mut bad = good.clone();
    bad[8 + 4 + 8 + 4 + 10] ^= 0x40;
    fs::write(&corrupt, &bad).expect("write");
    let err = bob.fails(1, ["bundle", "import", corrupt.to_str().expect("utf-8")]);
    assert!(err.contains("bundle record 0 is invalid"), "{err}");
    assert_eq!(count_lineages(&bob), 0);

    // Cut in half.
    let truncated = scene.path("truncated.bundle");
    fs::write(&truncated, &good[..good.len() / 2]).expect("write");
    let err = bob.fails(1, ["bundle", "import", truncated.to_str().expect("utf-8")]);
    assert!(err.contains("bundle is truncated"), "{err}");
    assert_eq!(count_lineages(&bob), 0);

    // Not a bundle at all, and no file.
    let err = bob.fails(
        1,
        [
            "bundle",
            "import",
            scene.path("alice-seeds/README.md").to_str().expect("utf-8"),
        ],
    );
    assert!(err.contains("not a commons bundle"), "{err}");
    let err = bob.fails(
        3,
        [
            "bundle",
            "import",
            scene.path("nope.bundle").to_str().expect("utf-8"),
        ],
    );
    assert!(err.contains("no bundle at"), "{err}");
    assert_eq!(count_lineages(&bob), 0);

    // The good one still imports.
    bob.json(["bundle", "import", file.to_str().expect("utf-8")]);
    assert_eq!(count_lineages(&bob), 1);
}

#[test]
fn working_copy_refusals() {
    let scene = Scene::new(bin!());
    let alice = scene.person("alice");
    let lib = found(&scene, &alice);

    // Checkout into a non-empty directory.
    let busy = scene.write_tree("busy", &[("keep.txt", b"mine\n")]);
    let err = alice.fails(5, ["checkout", &lib, busy.to_str().expect("utf-8")]);
    assert!(err.contains("is not empty"), "{err}");
    assert_eq!(read_tree(&busy).len(), 1, "nothing written");

    // Propose with no changes.
    let wc1 = scene.path("wc1");
    let wc1s = wc1.to_str().expect("utf-8");
    alice.json(["checkout", &lib, wc1s]);
    let err = alice.fails(1, ["propose", wc1s, "-m", "Nothing"]);
    assert!(err.contains("nothing to propose"), "{err}");
    assert!(hint_line(&err).contains("commons status"), "{err}");
    let err = alice.fails(3, ["status", busy.to_str().expect("utf-8")]);
    assert!(err.contains("is not a working copy"), "{err}");

    // Update refusing a local change that collides with an incoming one.
    let wc2 = scene.path("wc2");
    let wc2s = wc2.to_str().expect("utf-8");
    alice.json(["checkout", &lib, wc2s]);
    fs::write(wc2.join("README.md"), "# Seeds (theirs)\n").expect("edit");
    fs::write(wc2.join("notes/pea.txt"), "Pea\n").expect("add");
    let p = str_of(&alice.json(["propose", wc2s, "-m", "Their readme"])["patch"]);
    alice.json(["validate", &p, "--accept"]);
    fs::write(wc1.join("README.md"), "# Seeds (mine)\n").expect("edit");
    let before = read_tree(&wc1);
    let meta = fs::read(wc1.join(".commons/checkout.json")).expect("meta");
    let err = alice.fails(6, ["update", wc1s]);
    assert!(
        err.contains("update would overwrite local changes"),
        "{err}"
    );
    assert!(err.contains("\n  README.md\n"), "lists the file: {err}");
    assert!(!err.contains("pea.txt"), "{err}");
    assert_eq!(read_tree(&wc1), before, "nothing changed");
    assert_eq!(
        fs::read(wc1.join(".commons/checkout.json")).expect("meta"),
        meta
    );

    // Once the local change is put back, update goes through and keeps other local work.
    fs::write(wc1.join("README.md"), "# Seeds\n").expect("undo");
    fs::write(wc1.join("notes/corn.txt"), "Corn\n").expect("add");
    let up = alice.json(["update", wc1s]);
    assert_eq!(strs(&up["written"]), ["README.md", "notes/pea.txt"]);
    assert_eq!(strs(&up["kept"]), ["notes/corn.txt"]);
    assert_eq!(
        fs::read(wc1.join("README.md")).expect("read"),
        b"# Seeds (theirs)\n"
    );
}

#[test]
fn bad_values_and_usage() {
    let scene = Scene::new(bin!());
    let alice = scene.person("alice");

    let err = alice.fails(2, ["create", "Seeds", "--license", "Free-For-All"]);
    assert!(
        err.contains("`Free-For-All` is not a valid SPDX license expression"),
        "{err}"
    );
    assert!(hint_line(&err).contains("GPL-3.0-or-later"), "{err}");
    assert_eq!(count_lineages(&alice), 0, "nothing founded");

    let err = alice.fails(5, ["id", "init"]);
    assert!(err.contains("refusing to overwrite"), "{err}");
    let stranger = scene.stranger("nobody");
    let err = stranger.fails(3, ["create", "Seeds", "--license", "MIT"]);
    assert!(err.contains("no identity"), "{err}");
    assert!(hint_line(&err).contains("commons id init"), "{err}");

    let err = alice.fails(
        2,
        ["create", "Seeds", "--license", "MIT", "--threshold", "2"],
    );
    assert!(
        err.contains("threshold 2 must be between 1 and the number of maintainers (1)"),
        "{err}"
    );

    // Usage errors come from the parser with exit code 2.
    let out = alice.run(["validate", "abcd"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);

    // Help documents the exit codes and gives examples; completions print.
    let help = alice.ok(["--help"]);
    for line in [
        "Exit codes:",
        "3  not found",
        "5  refused",
        "6  conflict",
        "Examples:",
    ] {
        assert!(help.contains(line), "{line} missing from:\n{help}");
    }
    for cmd in [
        &["fork"][..],
        &["bundle", "import"],
        &["patch", "show"],
        &["validate"],
    ] {
        let mut args: Vec<&str> = cmd.to_vec();
        args.push("--help");
        let h = alice.ok(&args);
        assert!(h.contains("Example"), "{cmd:?}:\n{h}");
    }
    let script = alice.ok(["completions", "bash"]);
    assert!(script.contains("commons"), "{script}");
}
