//! Property tests of the core's promises on generated histories.

mod common;

use common::*;
use commons_core::state::LineageState;
use commons_core::{LineageId, Record, Verdict};
use proptest::prelude::*;

type Summary = (
    commons_core::StateRoot,
    std::collections::BTreeMap<commons_core::RecordId, commons_core::state::PatchStatus>,
    Vec<(commons_core::state::OrderKey, commons_core::tree::Outcome)>,
    commons_core::tree::MemTree,
    commons_core::state::ForkPoint,
);

fn summary(s: &LineageState) -> Summary {
    (
        s.root,
        s.statuses.clone(),
        s.applied.clone(),
        s.tree.clone(),
        s.fork_point.clone(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The same records delivered in any order give the same state root and statuses.
    #[test]
    fn convergence_under_shuffled_delivery(h in history(), seed in any::<u64>()) {
        let records = h.all();
        let mut shuffled = records.clone();
        // A deterministic Fisher-Yates from the seed.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        // Deliver twice, to check idempotence as well.
        let a = set_of(&records);
        let b = set_of(shuffled.iter().chain(records.iter().rev()));
        for lineage in [h.root, h.fork()] {
            prop_assert_eq!(summary(&a.state(&lineage).unwrap()), summary(&b.state(&lineage).unwrap()));
        }
    }

    /// Any flipped byte in an encoded record makes it refused.
    #[test]
    fn any_flipped_byte_is_refused(
        h in history(),
        pick in any::<prop::sample::Index>(),
        positions in proptest::collection::vec(any::<prop::sample::Index>(), 16),
        bit in 0u8..8,
    ) {
        let records = h.all();
        let r = &records[pick.index(records.len())];
        let bytes = r.bytes();
        // The header, the first body bytes, the signature's ends, and random places between.
        let mut at: Vec<usize> = vec![0, 1, 2, bytes.len() - 64, bytes.len() - 1];
        at.extend(positions.iter().map(|p| p.index(bytes.len())));
        for i in at {
            let mut b = bytes.to_vec();
            b[i] ^= 1 << bit;
            prop_assert!(Record::decode(&b).is_err(), "flip at {} of {:?} accepted", i, r.kind());
        }
    }

    /// Validations signed by non-maintainers never change a status.
    #[test]
    fn non_maintainer_validations_change_nothing(h in history()) {
        let records = h.all();
        let fork_maintainer = key(4).public();
        let counts = |r: &Record, lineage: LineageId| -> bool {
            let Some(v) = r.as_validation() else { return true };
            if v.lineage != lineage { return true; }
            if lineage == h.root {
                [key(0).public(), key(1).public(), key(2).public()].contains(&r.author())
            } else {
                r.author() == fork_maintainer
            }
        };
        for lineage in [h.root, h.fork()] {
            let with_all = set_of(&records).state(&lineage).unwrap();
            let only_maintainers = set_of(records.iter().filter(|r| counts(r, lineage))).state(&lineage).unwrap();
            prop_assert_eq!(&with_all.statuses, &only_maintainers.statuses);
            prop_assert_eq!(with_all.root, only_maintainers.root);
        }
    }

    /// A fork at base B has exactly the parent's state at B, whatever happens afterwards in the
    /// parent, as long as the fork's maintainers have not accepted anything.
    #[test]
    fn fork_has_the_parents_state_at_its_base(h in history()) {
        let parent_at_base = set_of(&h.before_fork).state(&h.root).unwrap();
        let later_parent_only: Vec<Record> = h.after_fork.iter()
            .filter(|r| r.as_validation().is_none_or(|v| v.lineage == h.root))
            .cloned()
            .collect();
        let mut all = h.before_fork.clone();
        all.push(h.fork_charter.clone());
        all.extend(later_parent_only);
        let fork = set_of(&all).state(&h.fork()).unwrap();
        prop_assert!(fork.base_complete);
        prop_assert_eq!(&fork.tree, &parent_at_base.tree);
        prop_assert_eq!(fork.root, parent_at_base.root);
        prop_assert_eq!(fork.fork_point.clone(), parent_at_base.fork_point.clone());
    }
}

/// The scenario of the story: a patch the parent rejected is accepted in a fork, and a patch
/// proposed to the fork is accepted by the parent.
#[test]
fn fork_takes_a_rejected_patch_and_parent_takes_fork_work() {
    use commons_core::state::PatchStatus;
    use commons_core::{BlobHash, Body, Change, ForkBase, Patch, Validation};

    let (alice, bob, carol) = (key(0), key(1), key(2));
    let root_charter = charter(&alice, "garden", sorted_keys(&[&alice]), 1, None);
    let root = LineageId::from(root_charter.id());
    let patch = |by: &commons_core::SecretKey, lineage, path: &str, content: &[u8]| {
        Record::sign(
            by,
            5,
            Body::Patch(Patch {
                lineage,
                parents: vec![],
                changes: vec![Change {
                    path: path.into(),
                    before: None,
                    after: Some(BlobHash::of(content)),
                }],
                message: format!("add {path}"),
            }),
        )
        .unwrap()
    };
    let validate = |by: &commons_core::SecretKey, lineage, p: &Record, verdict| {
        Record::sign(
            by,
            6,
            Body::Validation(Validation {
                lineage,
                patch: p.id(),
                verdict,
                note: String::new(),
            }),
        )
        .unwrap()
    };
    let good = patch(&bob, root, "good.txt", b"good");
    let bold = patch(&bob, root, "bold.txt", b"bold");
    let mut records = vec![
        root_charter.clone(),
        good.clone(),
        bold.clone(),
        validate(&alice, root, &good, Verdict::Accept),
        validate(&alice, root, &bold, Verdict::Reject),
    ];
    let st = set_of(&records).state(&root).unwrap();
    assert_eq!(st.statuses[&good.id()], PatchStatus::Accepted);
    assert_eq!(st.statuses[&bold.id()], PatchStatus::Rejected);

    let point = st.fork_point.clone();
    assert_eq!(point.heads, vec![good.id()]);
    let fork_charter = charter(
        &carol,
        "wild garden",
        sorted_keys(&[&carol]),
        1,
        Some(ForkBase {
            parent: root,
            heads: point.heads,
            excluded: point.excluded,
        }),
    );
    let fork = LineageId::from(fork_charter.id());
    records.push(fork_charter);
    records.push(validate(&carol, fork, &bold, Verdict::Accept));
    // Bob's validation in the fork counts for nothing: he is not its maintainer.
    let from_fork = patch(&carol, fork, "shared.txt", b"shared");
    records.push(from_fork.clone());
    records.push(validate(&bob, root, &from_fork, Verdict::Accept));
    let set = set_of(&records);
    let f = set.state(&fork).unwrap();
    assert_eq!(f.statuses[&good.id()], PatchStatus::Accepted);
    assert_eq!(f.statuses[&bold.id()], PatchStatus::Accepted);
    assert_eq!(f.statuses[&from_fork.id()], PatchStatus::Pending);
    assert_eq!(f.tree.files.len(), 2);
    let r = set.state(&root).unwrap();
    assert!(
        !r.statuses.contains_key(&from_fork.id()),
        "bob's vote must not list it in root"
    );

    records.push(validate(&alice, root, &from_fork, Verdict::Accept));
    let r = set_of(&records).state(&root).unwrap();
    assert_eq!(r.statuses[&from_fork.id()], PatchStatus::Accepted);
    assert_eq!(
        r.tree.files.keys().cloned().collect::<Vec<_>>(),
        vec!["good.txt", "shared.txt"]
    );
}
