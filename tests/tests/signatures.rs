//! One verdict per record on every node: a record's signature is judged as `verify_strict`
//! judges it, alone or in any batch, so nodes that batch records differently never disagree and
//! never strike an honest peer for forwarding what they themselves accepted.
//!
//! The cases (`commons_tests::forge`) are the edge cases of "Taming the many EdDSAs" built on
//! real records: nonce points with a torsion component of order 2, 4 and 8, small-order and
//! non-canonical R, s ≥ ℓ, and an author key with a torsion component.

use std::fs;
use std::process::{Command, Stdio};

use commons_core::{BlobHash, Body, Change, LineageId, Patch, Record, SecretKey};
use commons_tests::forge;
use commons_tests::net::{Daemon, converge, wait_for};
use commons_tests::{Scene, bin, daemon_bin, patch_statuses, str_of};
use proptest::prelude::*;

fn patch_body(lineage: LineageId, i: u32, content: &[u8]) -> Body {
    Body::Patch(Patch {
        lineage,
        parents: vec![],
        changes: vec![Change {
            path: format!("notes/{i:04}.txt"),
            before: None,
            after: Some(BlobHash::of(content)),
        }],
        message: format!("note {i}"),
    })
}

const SEED: [u8; 32] = [0x33; 32];

fn valid(lineage: LineageId, i: u32) -> Record {
    Record::sign(
        &SecretKey::from_seed(SEED),
        1 + u64::from(i),
        patch_body(lineage, i, b"x"),
    )
    .expect("sign")
}

/// Every edge case, with the verdict `verify_strict` gives it.
fn cases(lineage: LineageId) -> Vec<(String, Vec<u8>, bool)> {
    let mut out = Vec::new();
    for (i, order) in [2u8, 4, 8].into_iter().enumerate() {
        for n in 0..3u32 {
            let r = valid(lineage, 1000 + 10 * i as u32 + n);
            out.push((
                format!("R with torsion of order {order}"),
                forge::mixed_order_r(&r, SEED, order, u64::from(n)),
                false,
            ));
        }
    }
    for order in [1u8, 2, 4, 8] {
        out.push((
            format!("R of order {order}"),
            forge::small_order_r(&valid(lineage, 1100 + u32::from(order)), order),
            false,
        ));
    }
    out.push((
        "non-canonical R".into(),
        forge::non_canonical_r(&valid(lineage, 1200)),
        false,
    ));
    out.push((
        "s + ℓ".into(),
        forge::non_canonical_s(&valid(lineage, 1201)),
        false,
    ));
    for order in [2u8, 4, 8] {
        let b =
            forge::mixed_order_author(patch_body(lineage, 1300 + u32::from(order), b"x"), 5, order);
        let strict = forge::strict(&b);
        out.push((format!("author with torsion of order {order}"), b, strict));
    }
    out
}

#[test]
fn each_case_gets_the_strict_verdict_alone() {
    let lineage = LineageId([9; 32]);
    for (what, bytes, strict) in cases(lineage) {
        assert_eq!(
            forge::strict(&bytes),
            strict,
            "{what}: the library's strict verdict"
        );
        assert_eq!(Record::decode(&bytes).is_ok(), strict, "{what}: decode");
        assert_eq!(
            Record::decode_batch(&[&bytes])[0].is_ok(),
            strict,
            "{what}: a batch of one"
        );
    }
}

/// Without this rule the test above would not matter: ed25519 batch verification does accept a
/// nonce with a torsion component for some batches.
#[test]
fn plain_batch_verification_accepts_a_torsioned_nonce_in_some_batch() {
    let lineage = LineageId([9; 32]);
    let bad = forge::mixed_order_r(&valid(lineage, 7), SEED, 2, 0);
    assert!(!forge::strict(&bad));
    let found = (0..64u32).any(|k| {
        let companions: Vec<Record> = (0..1 + k % 7)
            .map(|j| valid(lineage, 100 * k + j))
            .collect();
        let mut batch: Vec<&[u8]> = companions.iter().map(Record::bytes).collect();
        batch.insert((k as usize) % (batch.len() + 1), &bad);
        forge::dalek_batch(&batch)
    });
    assert!(
        found,
        "some batch passes the torsioned nonce (order 2: about one in two)"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// A record's verdict is its verdict alone, first, last or anywhere in a batch of any size
    /// (across the size at which verification spreads over threads).
    #[test]
    fn a_verdict_does_not_depend_on_the_batch(
        sizes in 1usize..90,
        picks in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 1..6),
        salt in any::<u32>(),
    ) {
        let lineage = LineageId([9; 32]);
        let all_cases = cases(lineage);
        let honest: Vec<Record> = (0..sizes as u32).map(|i| valid(lineage, salt.wrapping_add(i) % 100_000)).collect();
        let mut batch: Vec<(Vec<u8>, bool)> = honest.iter().map(|r| (r.bytes().to_vec(), true)).collect();
        for (case, at) in &picks {
            let (_, bytes, strict) = &all_cases[case.index(all_cases.len())];
            batch.insert(at.index(batch.len() + 1), (bytes.clone(), *strict));
        }
        let refs: Vec<&[u8]> = batch.iter().map(|(b, _)| b.as_slice()).collect();
        let verdicts = Record::decode_batch(&refs);
        prop_assert_eq!(verdicts.len(), batch.len());
        for ((bytes, strict), verdict) in batch.iter().zip(&verdicts) {
            prop_assert_eq!(verdict.is_ok(), *strict);
            prop_assert_eq!(verdict.is_ok(), Record::decode(bytes).is_ok());
        }
    }
}

/// Three nodes in a line A–B–C. Peers hand A 63 valid patches and, at the same time, three whose
/// nonce hides a torsion component (orders 2, 4, 8): no node stores those three, all 63 reach C,
/// and no honest node is struck or banned by another.
#[test]
fn torsioned_signatures_among_valid_ones_strike_no_honest_node() {
    let scene = Scene::new(bin!());
    let (alice, carol, bob) = (
        scene.person("alice"),
        scene.person("carol"),
        scene.person("bob"),
    );
    let d = daemon_bin!();
    let fixed = ["--no-kademlia"];
    let a = Daemon::start_with(&d, &alice.home, &[], &fixed);
    let b = Daemon::start_with(&d, &carol.home, &[&a.addr], &fixed);
    let c = Daemon::start_with(&d, &bob.home, &[&b.addr], &fixed);
    let content = b"A garden\n";
    let garden = scene.found(&alice, "garden", &[("README.md", content)]);
    carol.ok(["follow", &garden]);
    bob.ok(["follow", &garden]);
    converge(&garden, &alice, &[&carol, &bob]);

    // Every patch names content every node already holds (README's), so nothing waits on blobs.
    let lineage: LineageId = garden.parse().expect("lineage id");
    let good: Vec<Record> = (0..63u32)
        .map(|i| {
            Record::sign(
                &SecretKey::from_seed(SEED),
                10 + u64::from(i),
                patch_body(lineage, i, content),
            )
            .expect("sign")
        })
        .collect();
    let bad: Vec<(String, Vec<u8>)> = [2u8, 4, 8]
        .into_iter()
        .enumerate()
        .map(|(i, order)| {
            let r = Record::sign(
                &SecretKey::from_seed(SEED),
                500 + i as u64,
                patch_body(lineage, 500 + i as u32, content),
            )
            .expect("sign");
            (
                r.id().to_hex(),
                forge::mixed_order_r(&r, SEED, order, i as u64),
            )
        })
        .collect();
    // Two peers publish into A at once, so A judges batches that mix both: one hands it the 63
    // valid patches, the other the three torsioned ones (it is refused and banned, as it should).
    let write = |name: String, bytes: &[u8]| {
        let file = scene.path(&name);
        fs::write(&file, bytes).expect("write");
        file
    };
    let good_files: Vec<_> = good
        .iter()
        .enumerate()
        .map(|(i, r)| write(format!("good-{i}"), r.bytes()))
        .collect();
    let bad_files: Vec<_> = bad
        .iter()
        .enumerate()
        .map(|(i, (_, b))| write(format!("bad-{i}"), b))
        .collect();
    let publish = |files: &[std::path::PathBuf]| {
        Command::new(env!("CARGO_BIN_EXE_hostile-peer"))
            .arg(&a.addr)
            .arg(&garden)
            .args(files)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start a publishing peer")
    };
    let mut peers = [publish(&good_files), publish(&bad_files)];

    wait_for("the 63 valid patches to reach C", || {
        let s = patch_statuses(&bob, &garden)?;
        good.iter()
            .all(|r| s.contains_key(&r.id().to_hex()))
            .then_some(())
    });
    for p in &mut peers {
        drop(p.stdin.take());
        let _ = p.wait();
    }

    let honest = [a.peer_id.as_str(), b.peer_id.as_str(), c.peer_id.as_str()];
    for p in [&alice, &carol, &bob] {
        for (id, _) in &bad {
            assert_ne!(
                p.run(["patch", "show", id]).code,
                0,
                "{} stored a torsioned patch",
                p.name
            );
        }
        let status = p.json(["node", "status"]);
        for banned in status["banned"].as_array().expect("banned") {
            assert!(
                !honest.contains(&str_of(banned).as_str()),
                "{} banned an honest node: {status}",
                p.name
            );
        }
        for peer in p.json(["node", "peers"]).as_array().expect("peers") {
            if honest.contains(&str_of(&peer["peer_id"]).as_str()) {
                assert_eq!(
                    peer["strikes"], 0,
                    "{} struck an honest node: {peer}",
                    p.name
                );
            }
        }
    }
    converge(&garden, &alice, &[&carol, &bob]);
}
