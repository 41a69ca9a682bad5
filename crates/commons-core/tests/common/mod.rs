//! Generated histories for the property tests: several authors and maintainers, patches with
//! parents, conflicting changes, validations that change their minds, and a fork.

#![allow(dead_code)]

use commons_core::state::RecordSet;
use commons_core::{
    BlobHash, Body, Change, Charter, ForkBase, LineageId, Patch, PublicKey, Record, RecordId,
    SecretKey, Validation, Verdict,
};
use proptest::prelude::*;

pub fn key(i: u8) -> SecretKey {
    SecretKey::from_seed([i + 1; 32])
}

pub fn sorted_keys(keys: &[&SecretKey]) -> Vec<PublicKey> {
    let mut v: Vec<PublicKey> = keys.iter().map(|k| k.public()).collect();
    v.sort();
    v.dedup();
    v
}

pub fn charter(
    by: &SecretKey,
    name: &str,
    maintainers: Vec<PublicKey>,
    k: u16,
    fork: Option<ForkBase>,
) -> Record {
    Record::sign(
        by,
        1,
        Body::Charter(Charter {
            name: name.into(),
            summary: String::new(),
            license: "CC-BY-SA-4.0".into(),
            maintainers,
            threshold: k,
            fork,
        }),
    )
    .unwrap()
}

/// One step of a generated history.
#[derive(Debug, Clone)]
pub enum Step {
    /// A patch by author `author`, on parents chosen among earlier patches, touching paths.
    Patch {
        author: u8,
        parents: Vec<usize>,
        /// (path index, before choice, after choice); choice 0 = absent, else blob n.
        changes: Vec<(u8, u8, u8)>,
        /// Propose to the fork instead of the root (if a fork exists).
        to_fork: bool,
    },
    /// A validation by key `author` of patch number `patch`.
    Validate {
        author: u8,
        patch: usize,
        accept: bool,
        in_fork: bool,
        time: u8,
    },
}

pub fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (
            0u8..5,
            proptest::collection::vec(0usize..64, 0..3),
            proptest::collection::vec((0u8..5, 0u8..3, 0u8..3), 1..3),
            any::<bool>()
        )
            .prop_map(|(author, parents, changes, to_fork)| Step::Patch {
                author,
                parents,
                changes,
                to_fork
            }),
        (0u8..5, 0usize..64, any::<bool>(), any::<bool>(), 0u8..4).prop_map(
            |(author, patch, accept, in_fork, time)| Step::Validate {
                author,
                patch,
                accept,
                in_fork,
                time
            }
        ),
    ]
}

/// A built history: records of the root lineage, where the fork is made, and the rest.
#[derive(Debug, Clone)]
pub struct History {
    pub root: LineageId,
    /// Keys 0..3 maintain the root (k = 2); keys 3 and 4 are other contributors.
    pub before_fork: Vec<Record>,
    /// The fork charter (maintained by key 4 alone), made from the state of `before_fork`.
    pub fork_charter: Record,
    pub after_fork: Vec<Record>,
}

impl History {
    pub fn fork(&self) -> LineageId {
        LineageId::from(self.fork_charter.id())
    }

    pub fn all(&self) -> Vec<Record> {
        let mut v = self.before_fork.clone();
        v.push(self.fork_charter.clone());
        v.extend(self.after_fork.iter().cloned());
        v
    }
}

fn path(i: u8) -> String {
    // Includes a directory and a file of the same name, to exercise those conflicts.
    ["a", "b", "dir/x", "dir/y", "dir"][usize::from(i) % 5].to_string()
}

fn blob(choice: u8) -> Option<BlobHash> {
    (choice > 0).then(|| BlobHash::of(&[choice]))
}

fn build_records(
    root: LineageId,
    fork: Option<LineageId>,
    steps: &[Step],
    patches: &mut Vec<RecordId>,
    ts: &mut u64,
) -> Vec<Record> {
    let mut out = Vec::new();
    for s in steps {
        *ts += 1;
        match s {
            Step::Patch {
                author,
                parents,
                changes,
                to_fork,
            } => {
                let mut ps: Vec<RecordId> = parents
                    .iter()
                    .filter(|_| !patches.is_empty())
                    .map(|i| patches[i % patches.len()])
                    .collect();
                ps.sort();
                ps.dedup();
                let mut cs: Vec<Change> = changes
                    .iter()
                    .filter(|(_, b, a)| b != a)
                    .map(|(p, b, a)| Change {
                        path: path(*p),
                        before: blob(*b),
                        after: blob(*a),
                    })
                    .collect();
                cs.sort_by(|x, y| x.path.cmp(&y.path));
                cs.dedup_by(|x, y| x.path == y.path);
                if cs.is_empty() {
                    continue;
                }
                let lineage = match (to_fork, fork) {
                    (true, Some(f)) => f,
                    _ => root,
                };
                let r = Record::sign(
                    &key(*author),
                    *ts,
                    Body::Patch(Patch {
                        lineage,
                        parents: ps,
                        changes: cs,
                        message: format!("p{ts}"),
                    }),
                )
                .unwrap();
                patches.push(r.id());
                out.push(r);
            }
            Step::Validate {
                author,
                patch,
                accept,
                in_fork,
                time,
            } => {
                if patches.is_empty() {
                    continue;
                }
                let lineage = match (in_fork, fork) {
                    (true, Some(f)) => f,
                    _ => root,
                };
                let r = Record::sign(
                    &key(*author),
                    u64::from(*time),
                    Body::Validation(Validation {
                        lineage,
                        patch: patches[patch % patches.len()],
                        verdict: if *accept {
                            Verdict::Accept
                        } else {
                            Verdict::Reject
                        },
                        note: String::new(),
                    }),
                )
                .unwrap();
                out.push(r);
            }
        }
    }
    out
}

pub fn build(before: &[Step], after: &[Step]) -> History {
    let founder = key(0);
    let root_charter = charter(
        &founder,
        "root",
        sorted_keys(&[&key(0), &key(1), &key(2)]),
        2,
        None,
    );
    let root = LineageId::from(root_charter.id());
    let mut patches = Vec::new();
    let mut ts = 10;
    let mut before_fork = vec![root_charter];
    before_fork.extend(build_records(root, None, before, &mut patches, &mut ts));

    let mut set = RecordSet::new();
    for r in &before_fork {
        set.insert(r);
    }
    let point = set.state(&root).unwrap().fork_point;
    let fork_charter = charter(
        &key(4),
        "fork",
        sorted_keys(&[&key(4)]),
        1,
        Some(ForkBase {
            parent: root,
            heads: point.heads,
            excluded: point.excluded,
        }),
    );
    let fork = LineageId::from(fork_charter.id());
    let after_fork = build_records(root, Some(fork), after, &mut patches, &mut ts);
    History {
        root,
        before_fork,
        fork_charter,
        after_fork,
    }
}

pub fn history() -> impl Strategy<Value = History> {
    (
        proptest::collection::vec(step(), 0..30),
        proptest::collection::vec(step(), 0..30),
    )
        .prop_map(|(b, a)| build(&b, &a))
}

pub fn set_of<'a>(records: impl IntoIterator<Item = &'a Record>) -> RecordSet {
    let mut set = RecordSet::new();
    for r in records {
        set.insert(r);
    }
    set
}
