//! End-to-end test of catch-up by set reconciliation: two real `commonsd` processes on
//! 127.0.0.1, driven through the real `commons` command line. Every wait is a condition with a
//! deadline.

use std::fs;

use commons_tests::net::{Daemon, wait_for};
use commons_tests::{Person, Scene, bin, daemon_bin, patch_statuses, shown_root as root};
use serde_json::Value;

/// Patches made on each side of the partition.
const PATCHES: usize = 20;

/// A node's reconciliation counters (`node status`).
fn reconcile_stats(p: &Person) -> Value {
    p.json(["node", "status"])["reconcile"].clone()
}

fn counter(stats: &Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter `{name}` in {stats}"))
}

/// Proposes `n` patches from a fresh working copy of `lineage` in `p`'s home, one new file each
/// (`PREFIX-i.txt`); if `accept`, `p` (a maintainer) accepts each and updates the working copy.
fn work(scene: &Scene, p: &Person, lineage: &str, prefix: &str, n: usize, accept: bool) {
    let wc = scene.path(&format!("wc-{}", p.name));
    p.ok(["checkout", lineage, wc.to_str().expect("utf-8")]);
    for i in 0..n {
        fs::write(
            wc.join(format!("{prefix}-{i:02}.txt")),
            format!("{prefix} {i}\n"),
        )
        .expect("write");
        let patch = p
            .ok([
                "propose",
                wc.to_str().expect("utf-8"),
                "-m",
                &format!("{prefix} {i}"),
            ])
            .trim()
            .to_owned();
        if accept {
            p.ok(["validate", &patch, "--accept"]);
            p.ok(["update", wc.to_str().expect("utf-8")]);
        }
    }
}

/// A partition that heals. A and B follow a commons; B stops. While apart, alice (maintainer, on
/// A) proposes and accepts 20 patches, and bob proposes 20 patches on B with B's daemon stopped
/// (the CLI opens B's store itself). Each side now holds records the other lacks. B restarts
/// with A as bootstrap: both catch up by reconciling the family's record ids, and end with the
/// same records — the same state root and the same patch list. The counters show that each side
/// learned what it lacked through `Reconcile` rounds.
#[test]
fn a_healed_partition_converges_by_reconciliation() {
    let scene = Scene::new(bin!());
    let (alice, bob) = (scene.person("alice"), scene.person("bob"));
    let d = daemon_bin!();
    let a = Daemon::start(&d, &alice.home, &[]);
    let mut b = Daemon::start(&d, &bob.home, &[&a.addr]);

    let dir = scene.write_tree("src-garden", &[("README.md", b"A garden\n")]);
    let garden = alice
        .ok([
            "create",
            "garden",
            "--license",
            "CC-BY-SA-4.0",
            "--from",
            dir.to_str().expect("utf-8"),
        ])
        .trim()
        .to_owned();
    bob.ok(["follow", &garden]);
    wait_for("B to hold the commons", || {
        (root(&bob, &garden) == root(&alice, &garden)).then_some(())
    });
    assert_eq!(b.stop(), 0, "B stops cleanly");

    // The partition: both sides work.
    work(&scene, &alice, &garden, "alice", PATCHES, true);
    work(&scene, &bob, &garden, "bob", PATCHES, false);
    let on_a = patch_statuses(&alice, &garden).expect("A lists patches");
    let on_b = patch_statuses(&bob, &garden).expect("B lists patches (store opened directly)");
    assert!(on_a.values().all(|s| s != "pending"), "A: {on_a:?}");
    assert_eq!(
        on_b.values().filter(|s| *s == "pending").count(),
        PATCHES,
        "B: {on_b:?}"
    );
    assert_ne!(root(&alice, &garden), root(&bob, &garden));

    // The partition heals.
    b.restart(&[&a.addr]);
    let (root_a, list) = wait_for("A and B to hold the same records", || {
        let (ra, rb) = (root(&alice, &garden)?, root(&bob, &garden)?);
        let (pa, pb) = (
            patch_statuses(&alice, &garden)?,
            patch_statuses(&bob, &garden)?,
        );
        (ra == rb && pa == pb && pa.len() >= 2 * PATCHES).then_some((ra, pa))
    });
    assert_ne!(root_a, "");
    assert_eq!(
        list.values().filter(|s| *s == "pending").count(),
        PATCHES,
        "bob's patches are pending on both sides: {list:?}"
    );
    assert_eq!(
        list.values().filter(|s| *s == "accepted").count(),
        list.len() - PATCHES,
        "alice's patches are accepted on both sides: {list:?}"
    );

    // Each side learned what it lacked by reconciliation: B lacked alice's 20 patches and 20
    // validations, A lacked bob's 20 patches; nothing else could have brought them (they were
    // made while apart, and catch-up is the only way records made earlier arrive).
    let on_b = reconcile_stats(&bob);
    assert!(counter(&on_b, "rounds") > 0, "B reconciled: {on_b}");
    assert!(
        counter(&on_b, "missing") >= 2 * PATCHES as u64,
        "B found what it lacked by reconciliation: {on_b}"
    );
    let on_a = reconcile_stats(&alice);
    eprintln!("reconciliation on B: {on_b}\nreconciliation on A: {on_a}");
    assert!(
        counter(&on_a, "missing") >= PATCHES as u64,
        "A found what it lacked by reconciliation: {on_a}"
    );
    assert!(
        counter(&on_a, "served") > 0,
        "A answered B's rounds: {on_a}"
    );
    // A session over a small family costs a few hundred bytes per round trip at most.
    assert!(
        counter(&on_b, "bytes") < 64 * 1024,
        "reconciliation bytes: {on_b}"
    );
}
