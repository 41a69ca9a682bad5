//! What `commonsd` acknowledged over its control socket survives `kill -9`: while a writer
//! imports patches through the CLI one by one, the daemon is killed with SIGKILL at a varying
//! moment; after a restart every patch whose import the CLI reported as done is in the store,
//! and `commons store verify` finds no damaged record.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use commons_core::LineageId;
use commons_tests::net::{Daemon, wait_for};
use commons_tests::{Scene, bin, daemon_bin, import_bundle, one_file_patch, patch_statuses};

/// Kill rounds (each after a different number of acknowledged imports).
const ROUNDS: u64 = 4;

#[test]
fn records_acknowledged_over_the_control_socket_survive_sigkill() {
    let scene = Scene::new(bin!());
    let alice = scene.person("alice");
    let mut daemon = Daemon::start(&daemon_bin!(), &alice.home, &[]);
    let garden = scene.found(&alice, "Garden", &[("README.md", b"seeds\n")]);
    let lineage: LineageId = garden.parse().expect("lineage id");
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut next = 0u64;
    for round in 0..ROUNDS {
        let done = Arc::new(AtomicBool::new(false));
        let this_round = Arc::new(Mutex::new(Vec::<String>::new()));
        let writer = {
            let (done, this_round) = (Arc::clone(&done), Arc::clone(&this_round));
            let alice = scene.existing("alice", &alice.home);
            let dir = scene.path(&format!("bundles-{round}"));
            std::fs::create_dir_all(&dir).expect("bundle dir");
            let start = next;
            std::thread::spawn(move || {
                let mut i = start;
                while !done.load(Ordering::Acquire) {
                    let patch = one_file_patch(
                        7,
                        1_000 + i,
                        lineage,
                        &format!("notes/{i}.md"),
                        format!("note {i}\n").as_bytes(),
                        &format!("note {i}"),
                    );
                    let out = import_bundle(
                        &alice,
                        &dir.join(format!("{i}.bundle")),
                        std::slice::from_ref(&patch),
                        &[],
                    );
                    if out.code != 0 {
                        // The daemon is gone: nothing more is acknowledged this round.
                        break;
                    }
                    this_round.lock().expect("lock").push(patch.id().to_hex());
                    i += 1;
                }
            })
        };
        // Kill after a different number of acknowledgements each round (the writer keeps going,
        // so the kill lands in the middle of a put, or between two).
        let want = 1 + round as usize * 3;
        wait_for(&format!("{want} acknowledged imports"), || {
            (this_round.lock().expect("lock").len() >= want).then_some(())
        });
        daemon.kill();
        done.store(true, Ordering::Release);
        writer.join().expect("writer");
        let got = this_round.lock().expect("lock").clone();
        next += got.len() as u64 + 1;
        acked.extend(got);
        daemon.restart(&[]);
        let stored = patch_statuses(&alice, &garden).expect("patches listed");
        let missing: Vec<&String> = acked
            .iter()
            .filter(|id| !stored.contains_key(*id))
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} acknowledged patch(es) lost after SIGKILL: {missing:?}",
            missing.len()
        );
    }
    assert!(
        acked.len()
            >= (1..=ROUNDS as usize)
                .map(|r| 1 + (r - 1) * 3)
                .sum::<usize>()
    );
    // The store is sound after the kills: verified at rest, no record is damaged.
    let report = alice.json(["store", "verify"]);
    assert_eq!(report["damaged_records"], 0, "{report}");
    assert!(commons_tests::shown_root(&alice, &garden).is_some());
    daemon.stop();
}
