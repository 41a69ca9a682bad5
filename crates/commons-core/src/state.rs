//! The state of a lineage as a pure function of a set of records (the reference computation).
//!
//! The rules, written out in `docs/protocol.md`:
//! - the **family** of a lineage is the root of its chain of parents; patches and validations
//!   count across a family;
//! - a patch is **complete** when it and all its ancestors are in the set; its **generation** is
//!   0 without parents, else one more than the greatest generation of its parents;
//! - the **votes** of a patch in lineage L are the latest validation (greatest (timestamp, id)) of
//!   each maintainer of L that names L and the patch; a patch is voted *accepted* with at least k
//!   accepts, *rejected* when fewer than k maintainers are left who have not rejected;
//! - the **accepted set** of L is its fork base (for a fork) plus every complete patch of the
//!   family voted accepted in L; it is applied in (generation, id) order, each patch atomically;
//!   one whose `before` hashes do not match is **conflicted** and changes nothing;
//! - a **fork base** is the ancestors of the charter's heads (heads included) minus its exclusions.

use std::collections::{BTreeMap, BTreeSet, btree_map};

use serde::{Deserialize, Serialize};

use crate::id::{LineageId, RecordId, StateRoot};
use crate::keys::PublicKey;
use crate::record::{Charter, ForkBase, Patch, Record, Validation, Verdict};
use crate::tree::{MemTree, Outcome};

/// The status of a patch in a lineage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchStatus {
    /// Not (yet) decided, or accepted but waiting for missing ancestors.
    Pending,
    /// Accepted and applied.
    Accepted,
    /// Enough maintainers rejected it that it cannot reach the threshold.
    Rejected,
    /// Accepted, but it did not apply to the state it came to; it changed nothing.
    Conflicted,
}

impl std::fmt::Display for PatchStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PatchStatus::Pending => "pending",
            PatchStatus::Accepted => "accepted",
            PatchStatus::Rejected => "rejected",
            PatchStatus::Conflicted => "conflicted",
        })
    }
}

impl std::str::FromStr for PatchStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(PatchStatus::Pending),
            "accepted" => Ok(PatchStatus::Accepted),
            "rejected" => Ok(PatchStatus::Rejected),
            "conflicted" => Ok(PatchStatus::Conflicted),
            _ => Err(format!(
                "unknown status `{s}`: expected pending, accepted, rejected or conflicted"
            )),
        }
    }
}

/// Where a patch sorts in the order of application: (generation, id).
pub type OrderKey = (u64, RecordId);

/// The outcome of counting the votes on a patch in a lineage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteResult {
    /// Neither threshold reached.
    Open,
    /// At least k accepts.
    Accepted,
    /// Fewer than k maintainers left who have not rejected.
    Rejected,
}

/// One validation as counted: who, when, which record, which verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vote {
    /// The signer.
    pub author: PublicKey,
    /// The signer's timestamp.
    pub timestamp: u64,
    /// The validation's id (breaks timestamp ties).
    pub id: RecordId,
    /// The verdict.
    pub verdict: Verdict,
}

/// Counts votes under a charter: only maintainers count, and only their latest vote.
pub fn count_votes<'a>(charter: &Charter, votes: impl IntoIterator<Item = &'a Vote>) -> VoteResult {
    let mut latest: BTreeMap<PublicKey, &Vote> = BTreeMap::new();
    for v in votes {
        if charter.maintainers.binary_search(&v.author).is_err() {
            continue;
        }
        match latest.entry(v.author) {
            btree_map::Entry::Vacant(e) => {
                e.insert(v);
            }
            btree_map::Entry::Occupied(mut e) => {
                if (v.timestamp, v.id) > (e.get().timestamp, e.get().id) {
                    e.insert(v);
                }
            }
        }
    }
    let accepts = latest
        .values()
        .filter(|v| v.verdict == Verdict::Accept)
        .count();
    let rejects = latest.len() - accepts;
    let k = usize::from(charter.threshold);
    if accepts >= k {
        VoteResult::Accepted
    } else if charter.maintainers.len() - rejects < k {
        VoteResult::Rejected
    } else {
        VoteResult::Open
    }
}

/// A set of verified records, indexed for the state rules.
#[derive(Debug, Clone, Default)]
pub struct RecordSet {
    charters: BTreeMap<LineageId, (Charter, u64)>,
    patches: BTreeMap<RecordId, Patch>,
    /// lineage → patch → votes cast in that lineage.
    votes: BTreeMap<LineageId, BTreeMap<RecordId, Vec<Vote>>>,
}

impl RecordSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a record; adding one twice changes nothing.
    pub fn insert(&mut self, record: &Record) {
        let id = record.id();
        if let Some(c) = record.as_charter() {
            self.charters
                .insert(LineageId::from(id), (c.clone(), record.timestamp()));
        } else if let Some(p) = record.as_patch() {
            self.patches.insert(id, p.clone());
        } else if let Some(v) = record.as_validation() {
            self.insert_vote(id, record.author(), record.timestamp(), v);
        }
    }

    fn insert_vote(&mut self, id: RecordId, author: PublicKey, timestamp: u64, v: &Validation) {
        let list = self
            .votes
            .entry(v.lineage)
            .or_default()
            .entry(v.patch)
            .or_default();
        if !list.iter().any(|x| x.id == id) {
            list.push(Vote {
                author,
                timestamp,
                id,
                verdict: v.verdict,
            });
        }
    }

    /// The charter of a lineage.
    pub fn charter(&self, lineage: &LineageId) -> Option<&Charter> {
        self.charters.get(lineage).map(|(c, _)| c)
    }

    /// The known lineages.
    pub fn lineages(&self) -> impl Iterator<Item = &LineageId> {
        self.charters.keys()
    }

    /// A patch.
    pub fn patch(&self, id: &RecordId) -> Option<&Patch> {
        self.patches.get(id)
    }

    /// The root of a lineage's family, if every charter up the chain is known.
    pub fn family(&self, lineage: &LineageId) -> Option<LineageId> {
        let mut current = *lineage;
        // A chain of parents cannot be longer than the number of charters we hold (a cycle is
        // impossible because a charter names its parent's id, but bound the walk anyway).
        for _ in 0..=self.charters.len() {
            let charter = self.charter(&current)?;
            match &charter.fork {
                None => return Some(current),
                Some(f) => current = f.parent,
            }
        }
        None
    }

    /// Generation of every complete patch (all ancestors present). Iterative, no recursion.
    pub fn generations(&self) -> BTreeMap<RecordId, u64> {
        let mut gens: BTreeMap<RecordId, u64> = BTreeMap::new();
        let mut incomplete: BTreeSet<RecordId> = BTreeSet::new();
        for start in self.patches.keys() {
            let mut stack = vec![*start];
            while let Some(id) = stack.last().copied() {
                if gens.contains_key(&id) || incomplete.contains(&id) {
                    stack.pop();
                    continue;
                }
                let Some(p) = self.patches.get(&id) else {
                    incomplete.insert(id);
                    stack.pop();
                    continue;
                };
                let mut ready = true;
                let mut gen_ = 0u64;
                let mut missing = false;
                for parent in &p.parents {
                    if let Some(g) = gens.get(parent) {
                        gen_ = gen_.max(g + 1);
                    } else if incomplete.contains(parent) {
                        missing = true;
                    } else {
                        ready = false;
                        stack.push(*parent);
                    }
                }
                if ready {
                    stack.pop();
                    if missing {
                        incomplete.insert(id);
                    } else {
                        gens.insert(id, gen_);
                    }
                }
            }
        }
        gens
    }

    /// The patches of a fork base: ancestors of the heads, heads included, minus exclusions.
    /// `None` if one of them is not in the set.
    pub fn fork_base(&self, base: &ForkBase) -> Option<BTreeSet<RecordId>> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<RecordId> = base.heads.clone();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            stack.extend(self.patches.get(&id)?.parents.iter().copied());
        }
        for x in &base.excluded {
            seen.remove(x);
        }
        Some(seen)
    }

    /// Computes the state of `lineage` from scratch. `None` if its charter is unknown.
    pub fn state(&self, lineage: &LineageId) -> Option<LineageState> {
        let charter = self.charter(lineage)?.clone();
        let family = self.family(lineage);
        let gens = self.generations();
        let no_votes = BTreeMap::new();
        let votes = self.votes.get(lineage).unwrap_or(&no_votes);

        let base = charter.fork.as_ref().map(|f| self.fork_base(f));
        let base_complete = !matches!(base, Some(None));
        let base: BTreeSet<RecordId> = base.flatten().unwrap_or_default();

        let in_family = |p: &Patch| family.is_some() && self.family(&p.lineage) == family;
        let mut statuses = BTreeMap::new();
        let mut accepted: Vec<OrderKey> = Vec::new();
        let mut waiting = BTreeSet::new();
        for (id, patch) in &self.patches {
            let in_base = base.contains(id);
            let counted = if in_base {
                VoteResult::Accepted
            } else if in_family(patch) {
                votes
                    .get(id)
                    .map_or(VoteResult::Open, |v| count_votes(&charter, v))
            } else {
                continue;
            };
            let listed = in_base
                || patch.lineage == *lineage
                || votes.get(id).is_some_and(|vs| {
                    vs.iter()
                        .any(|v| charter.maintainers.binary_search(&v.author).is_ok())
                });
            if !listed {
                continue;
            }
            let status = match counted {
                VoteResult::Open => PatchStatus::Pending,
                VoteResult::Rejected => PatchStatus::Rejected,
                VoteResult::Accepted => match gens.get(id) {
                    Some(g) => {
                        accepted.push((*g, *id));
                        PatchStatus::Accepted
                    }
                    None => {
                        waiting.insert(*id);
                        PatchStatus::Pending
                    }
                },
            };
            statuses.insert(*id, status);
        }
        accepted.sort();

        let mut tree = MemTree::default();
        let mut applied = Vec::with_capacity(accepted.len());
        for key in &accepted {
            let outcome = tree.apply(&self.patches[&key.1]);
            if outcome == Outcome::Conflicted {
                statuses.insert(key.1, PatchStatus::Conflicted);
            }
            applied.push((*key, outcome));
        }
        let accepted_ids: BTreeSet<RecordId> = accepted.iter().map(|k| k.1).collect();
        let fork_point = fork_point(&accepted_ids, |id| self.patches.get(id));
        Some(LineageState {
            lineage: *lineage,
            family,
            root: tree.root(),
            charter,
            statuses,
            applied,
            tree,
            waiting,
            base_complete,
            fork_point,
        })
    }
}

/// Heads and exclusions of an accepted set: what a fork of it names. Heads are accepted patches
/// that are not a parent of another accepted patch; exclusions are their ancestors that are not
/// accepted. The walk stops at accepted patches, whose ancestors are covered by their own walk.
pub fn fork_point<'a>(
    accepted: &BTreeSet<RecordId>,
    patch: impl Fn(&RecordId) -> Option<&'a Patch>,
) -> ForkPoint {
    let mut parents_of_accepted = BTreeSet::new();
    let mut excluded = BTreeSet::new();
    for id in accepted {
        let Some(p) = patch(id) else { continue };
        let mut stack: Vec<RecordId> = p.parents.clone();
        while let Some(q) = stack.pop() {
            if accepted.contains(&q) {
                parents_of_accepted.insert(q);
                continue;
            }
            if excluded.insert(q)
                && let Some(qp) = patch(&q)
            {
                stack.extend(qp.parents.iter().copied());
            }
        }
    }
    ForkPoint {
        heads: accepted
            .iter()
            .filter(|id| !parents_of_accepted.contains(*id))
            .copied()
            .collect(),
        excluded: excluded.into_iter().collect(),
    }
}

/// The heads of an accepted history and the ancestors of those heads it did not accept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkPoint {
    /// Sorted heads.
    pub heads: Vec<RecordId>,
    /// Sorted exclusions.
    pub excluded: Vec<RecordId>,
}

/// The computed state of one lineage.
#[derive(Debug, Clone)]
pub struct LineageState {
    /// Which lineage.
    pub lineage: LineageId,
    /// Its family, if the chain of charters is complete.
    pub family: Option<LineageId>,
    /// Its charter.
    pub charter: Charter,
    /// Status of every patch listed in this lineage: proposed to it, validated in it by one of
    /// its maintainers, or part of its fork base.
    pub statuses: BTreeMap<RecordId, PatchStatus>,
    /// The accepted patches in the order of application, with what became of each.
    pub applied: Vec<(OrderKey, Outcome)>,
    /// The canonical tree.
    pub tree: MemTree,
    /// The state root over `tree`.
    pub root: StateRoot,
    /// Patches accepted by votes but waiting for missing ancestors.
    pub waiting: BTreeSet<RecordId>,
    /// False if a fork base names patches that are not in the set yet.
    pub base_complete: bool,
    /// What a fork of this lineage, now, would name as its base.
    pub fork_point: ForkPoint,
}

impl LineageState {
    /// Number of patches with each status.
    pub fn counts(&self) -> BTreeMap<PatchStatus, usize> {
        let mut c = BTreeMap::new();
        for s in self.statuses.values() {
            *c.entry(*s).or_default() += 1;
        }
        c
    }
}
