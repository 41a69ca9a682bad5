//! Which records fetched while catching up a family belong to it (local policy: a node stores
//! only the families it follows). A peer lists ids under a family; the records it then gives are
//! valid, but may be of any lineage. Pure: the caller passes the family's lineages it knows.
//!
//! A record belongs to the family when it names one of its lineages: a charter that is one of
//! them or forks one of them (so a chain of forks in one window is taken whatever its order), a
//! patch or validation of one of them; and a patch of another lineage that is an ancestor of a
//! patch that belongs (a family's history may start in its parent's, as `Store::family_ids`
//! lists it). What is refused is counted, not penalised: a fork whose charter comes in a later
//! window of a large catch-up looks the same, and its records come with the next round.

use std::collections::{BTreeSet, HashMap};

use commons_core::{Body, LineageId, Record, RecordId};

/// Splits `records` into those of the family whose lineages are `known`, and how many are not.
/// The forks found among them join `known`, for the next windows of the same catch-up.
pub fn of_family(records: Vec<Record>, known: &mut BTreeSet<LineageId>) -> (Vec<Record>, usize) {
    let lineages = known;
    // Charters: to a fixed point, so that forks of forks join in any order.
    loop {
        let before = lineages.len();
        for r in &records {
            if let Body::Charter(c) = r.body()
                && let Some(f) = &c.fork
                && lineages.contains(&f.parent)
            {
                lineages.insert(LineageId::from(r.id()));
            }
        }
        if lineages.len() == before {
            break;
        }
    }
    let mut keep: BTreeSet<RecordId> = BTreeSet::new();
    let mut patches: HashMap<RecordId, &[RecordId]> = HashMap::new();
    let mut stack: Vec<RecordId> = Vec::new();
    for r in &records {
        let id = r.id();
        let belongs = match r.body() {
            Body::Charter(_) => lineages.contains(&LineageId::from(id)),
            Body::Patch(p) => {
                patches.insert(id, &p.parents);
                lineages.contains(&p.lineage)
            }
            Body::Validation(v) => lineages.contains(&v.lineage),
        };
        if belongs {
            keep.insert(id);
            if let Some(p) = r.as_patch() {
                stack.extend(p.parents.iter().copied());
            }
        }
    }
    // Ancestors of kept patches, of whatever lineage.
    while let Some(id) = stack.pop() {
        if let Some(parents) = patches.get(&id)
            && keep.insert(id)
        {
            stack.extend(parents.iter().copied());
        }
    }
    let total = records.len();
    let kept: Vec<Record> = records
        .into_iter()
        .filter(|r| keep.contains(&r.id()))
        .collect();
    let refused = total - kept.len();
    (kept, refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use commons_core::{BlobHash, Change, Charter, ForkBase, Patch, SecretKey};

    fn key() -> SecretKey {
        SecretKey::from_seed([9; 32])
    }

    fn fork(parent: LineageId, ts: u64) -> Record {
        Record::sign(
            &key(),
            ts,
            Body::Charter(Charter {
                name: "fork".into(),
                summary: String::new(),
                license: "MIT".into(),
                maintainers: vec![key().public()],
                threshold: 1,
                fork: Some(ForkBase {
                    parent,
                    heads: vec![],
                    excluded: vec![],
                }),
            }),
        )
        .expect("sign")
    }

    fn patch(lineage: LineageId, parents: Vec<RecordId>, n: u64) -> Record {
        Record::sign(
            &key(),
            100 + n,
            Body::Patch(Patch {
                lineage,
                parents,
                changes: vec![Change {
                    path: format!("f{n}"),
                    before: None,
                    after: Some(BlobHash::of(&n.to_be_bytes())),
                }],
                message: format!("p{n}"),
            }),
        )
        .expect("sign")
    }

    #[test]
    fn records_of_other_families_are_refused_and_ancestors_and_fork_chains_kept() {
        let root = crate::testing::charter(&key());
        let family = LineageId::from(root.id());
        let f1 = fork(family, 2);
        let f2 = fork(LineageId::from(f1.id()), 3);
        let elsewhere = LineageId([0x42; 32]);
        // A patch of another lineage that a family patch builds on, and one that nothing uses.
        let ancestor = patch(elsewhere, vec![], 1);
        let child = patch(LineageId::from(f2.id()), vec![ancestor.id()], 2);
        let stranger = patch(elsewhere, vec![], 3);
        let other_family = fork(elsewhere, 4);
        // Forks of forks first, so only the fixed point finds them.
        let records = vec![
            f2.clone(),
            child.clone(),
            stranger.clone(),
            ancestor.clone(),
            other_family.clone(),
            f1.clone(),
        ];
        let known: BTreeSet<LineageId> = [family].into();
        let mut known = known;
        let (kept, refused) = of_family(records, &mut known);
        let ids: BTreeSet<RecordId> = kept.iter().map(Record::id).collect();
        assert_eq!(refused, 2, "{ids:?}");
        for r in [&f1, &f2, &child, &ancestor] {
            assert!(ids.contains(&r.id()));
        }
        assert!(!ids.contains(&stranger.id()));
        assert!(!ids.contains(&other_family.id()));
        assert!(
            known.contains(&LineageId::from(f2.id())),
            "forks join the known lineages"
        );
    }
}
