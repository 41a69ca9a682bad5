//! Property tests of set reconciliation (`commons_core::reconcile`): whatever the two sets, a
//! session run to the end tells each side exactly the ids it lacks, and its cost follows the
//! difference, not the size of the sets.

use std::collections::BTreeSet;

use commons_core::RecordId;
use commons_core::reconcile::{
    BRANCHING, Config, Message, ReconcileError, Reconciler, SortedItems,
};
use proptest::prelude::*;

/// `n` pseudo-random ids from `seed` (xorshift; distinct with overwhelming probability).
fn ids(seed: u64, n: usize) -> Vec<RecordId> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            let mut b = [0u8; 32];
            for chunk in b.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            RecordId(b)
        })
        .collect()
}

/// Two sets: `common` ids shared, `only_a` and `only_b` ids held by one side.
fn sets(seed: u64, common: usize, only_a: usize, only_b: usize) -> (Vec<RecordId>, Vec<RecordId>) {
    let all = ids(seed, common + only_a + only_b);
    let (shared, rest) = all.split_at(common);
    let (a_only, b_only) = rest.split_at(only_a);
    let a = shared.iter().chain(a_only).copied().collect();
    let b = shared.iter().chain(b_only).copied().collect();
    (a, b)
}

/// What a session cost and taught.
#[derive(Debug)]
struct Run {
    initiator: Reconciler,
    responder: Reconciler,
    /// Messages sent, both ways.
    messages: u32,
    /// Round trips: requests sent by the initiator.
    round_trips: u32,
    /// Bytes of all messages in the wire encoding.
    bytes: usize,
}

/// Runs a session to the end in memory, checking every message against its caps.
fn run(a: &[RecordId], b: &[RecordId], initiator: Config) -> Result<Run, ReconcileError> {
    run_with(a, b, initiator, Config::responder())
}

/// The node's session: a pull-only initiator and a stateless responder that only serves.
fn node_configs() -> (Config, Config) {
    (Config::pull(), Config::serve())
}

/// [`run`] with a responder of its own configuration; the initiator salts its short ids.
fn run_with(
    a: &[RecordId],
    b: &[RecordId],
    initiator: Config,
    responder: Config,
) -> Result<Run, ReconcileError> {
    let items_a = SortedItems::new(a.to_vec());
    let items_b = SortedItems::new(b.to_vec());
    let salt = a.len() as u64 ^ 0x5eed;
    let mut ini = Reconciler::new(initiator).with_salt(salt);
    let mut resp = Reconciler::new(responder);
    let mut run_bytes = 0;
    let mut messages = 0;
    let mut round_trips = 0;
    let mut next: Option<Message> = Some(ini.initiate(&items_a));
    while let Some(request) = next.take() {
        assert_eq!(
            request.check(&initiator.send),
            Ok(()),
            "request within caps"
        );
        messages += 1;
        round_trips += 1;
        run_bytes += request.encoded_len();
        let Some(reply) = resp.receive(&items_b, &request)? else {
            break;
        };
        assert_eq!(
            reply.check(&Config::responder().send),
            Ok(()),
            "reply within caps"
        );
        messages += 1;
        run_bytes += reply.encoded_len();
        next = ini.receive(&items_a, &reply)?;
    }
    Ok(Run {
        initiator: ini,
        responder: resp,
        messages,
        round_trips,
        bytes: run_bytes,
    })
}

fn difference(x: &[RecordId], y: &[RecordId]) -> BTreeSet<RecordId> {
    let y: BTreeSet<RecordId> = y.iter().copied().collect();
    x.iter().filter(|id| !y.contains(id)).copied().collect()
}

/// Both sides learn exactly what they lack, so each would end with the union.
fn assert_exact(a: &[RecordId], b: &[RecordId], r: &Run) {
    assert_eq!(
        *r.initiator.need(),
        difference(b, a),
        "initiator learns what it lacks"
    );
    assert_eq!(
        *r.responder.need(),
        difference(a, b),
        "responder learns what it lacks"
    );
    let mut union_a: BTreeSet<RecordId> = a.iter().copied().collect();
    union_a.extend(r.initiator.need());
    let mut union_b: BTreeSet<RecordId> = b.iter().copied().collect();
    union_b.extend(r.responder.need());
    assert_eq!(union_a, union_b);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Random sets with random differences on both sides, from tiny to a few thousand ids.
    #[test]
    fn each_side_learns_exactly_what_it_lacks(
        seed in any::<u64>(),
        common in prop_oneof![0usize..40, 0usize..3000],
        only_a in prop_oneof![Just(0usize), 0usize..10, 0usize..500],
        only_b in prop_oneof![Just(0usize), 0usize..10, 0usize..500],
    ) {
        let (a, b) = sets(seed, common, only_a, only_b);
        let r = run(&a, &b, Config::initiator()).expect("session ends");
        assert_exact(&a, &b, &r);
    }

    /// A large set with a small difference: exact, and far cheaper than the id list.
    #[test]
    fn large_sets_with_small_differences(
        seed in any::<u64>(),
        only_a in 0usize..8,
        only_b in 0usize..8,
    ) {
        let (a, b) = sets(seed, 10_000, only_a, only_b);
        let r = run(&a, &b, Config::initiator()).expect("session ends");
        assert_exact(&a, &b, &r);
        prop_assert!(r.bytes < 10_000 * 32 / 5, "{} bytes", r.bytes);
    }

    /// A pull-only initiator (the node's) learns exactly what it lacks and never sends ids it
    /// holds.
    #[test]
    fn a_pull_only_initiator_learns_what_it_lacks(
        seed in any::<u64>(),
        common in 0usize..3000,
        only_a in 0usize..300,
        only_b in 0usize..300,
    ) {
        let (a, b) = sets(seed, common, only_a, only_b);
        let (pull, serve) = node_configs();
        let r = run_with(&a, &b, pull, serve).expect("session ends");
        prop_assert_eq!(r.initiator.need().clone(), difference(&b, &a));
    }
}

#[test]
fn edge_cases() {
    let (x, _) = sets(7, 5000, 0, 0);
    let cases: [(&str, Vec<RecordId>, Vec<RecordId>); 6] = [
        ("both empty", vec![], vec![]),
        ("empty initiator", vec![], x.clone()),
        ("empty responder", x.clone(), vec![]),
        ("identical", x.clone(), x.clone()),
        ("disjoint", ids(1, 3000), ids(2, 4000)),
        ("one id each", ids(3, 1), ids(4, 1)),
    ];
    for (name, a, b) in cases {
        let r = run(&a, &b, Config::initiator()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_exact(&a, &b, &r);
        if name == "identical" {
            assert_eq!(r.round_trips, 1, "identical sets: one round trip");
            assert!(r.bytes < 1000, "identical sets cost {} bytes", r.bytes);
        }
    }
}

/// A node that lacks a whole family learns it in a few round trips, bounded by the caps.
#[test]
fn a_fresh_node_learns_a_large_family() {
    let (_, b) = sets(11, 0, 0, 50_000);
    let r = run(&[], &b, Config::initiator()).expect("session ends");
    assert_exact(&[], &b, &r);
    assert!(r.round_trips <= 6, "{} round trips", r.round_trips);
}

/// The figure: 100 000 ids, 10 differences (5 on each side).
#[test]
fn cost_follows_the_difference_not_the_set() {
    let (a, b) = sets(42, 100_000, 5, 5);
    let r = run(&a, &b, Config::initiator()).expect("session ends");
    assert_exact(&a, &b, &r);
    let full_list = 8 + 32 * b.len();
    let ratio = r.bytes as f64 / full_list as f64;
    // log_16(100 000) ≈ 4.2: a round trip descends two levels.
    let log_b = (b.len() as f64).ln() / (BRANCHING as f64).ln();
    eprintln!(
        "n = 100 000, d = 10: {} bytes in {} messages ({} round trips); full list {} bytes; ratio {:.4}",
        r.bytes, r.messages, r.round_trips, full_list, ratio
    );
    assert!(ratio < 0.05, "ratio {ratio}");
    assert!(
        f64::from(r.round_trips) <= log_b + 2.0,
        "{} round trips",
        r.round_trips
    );
}

/// The node's session on the figure (100 000 ids each, 5 + 5 differences): the
/// initiator learns exactly its 5 in at most 10 KB and 3 round trips (negentropy's class).
#[test]
fn the_node_session_finds_ten_differences_among_100k_in_10_kb_and_3_round_trips() {
    let (a, b) = sets(42, 100_000, 5, 5);
    let (pull, serve) = node_configs();
    let r = run_with(&a, &b, pull, serve).expect("session ends");
    assert_eq!(*r.initiator.need(), difference(&b, &a));
    eprintln!(
        "node session: {} bytes in {} messages ({} round trips)",
        r.bytes, r.messages, r.round_trips
    );
    assert!(r.bytes <= 10_000, "{} bytes", r.bytes);
    assert!(r.round_trips <= 3, "{} round trips", r.round_trips);
}
