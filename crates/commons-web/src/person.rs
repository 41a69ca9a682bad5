//! A person's page: the commons a key maintains and founded, and the patches it proposed
//! and validated (among [`PERSON_SCAN`] patches of each commons: there is no index by author yet,
//! so the scan is bounded).

use crate::reader::Reader as Store;
use commons_core::state::PatchStatus;
use commons_core::{PublicKey, RecordId, Verdict};
use serde::Serialize;

use crate::view::{LineageRef, PAGE, PatchItem, Person, ViewError, lineage_ref, title};

/// Newest patches of each lineage looked at for a person's page.
pub const PERSON_SCAN: usize = 2_000;

/// A person's page: what they maintain and founded, and what they proposed.
#[derive(Debug, Clone, Serialize)]
pub struct PersonView {
    /// Who.
    pub person: Person,
    /// Lineages whose charter names them as a maintainer.
    pub maintains: Vec<LineageRef>,
    /// Lineages whose charter they signed.
    pub founded: Vec<LineageRef>,
    /// Their patches among [`PERSON_SCAN`] patches of each lineage (the last in id order: the
    /// store has no index by author yet), newest first, at most [`PAGE`].
    pub proposed: Vec<PatchItem>,
    /// Their validations of those same patches, newest first, at most [`PAGE`].
    pub validated: Vec<Validated>,
    /// Whether some lineage has more patches than were looked at.
    pub partial: bool,
}

/// A validation signed by the person.
#[derive(Debug, Clone, Serialize)]
pub struct Validated {
    /// The patch validated.
    pub patch: PatchItem,
    /// In which lineage.
    pub lineage: LineageRef,
    /// accept or reject.
    pub verdict: String,
    /// The note.
    pub note: String,
    /// When.
    pub timestamp: u64,
}

/// Reads a person's page.
pub fn person(store: &Store, did: &str) -> Result<PersonView, ViewError> {
    let key: PublicKey = did
        .parse()
        .map_err(|_| ViewError::Bad(format!("`{did}` is not a did:key")))?;
    let all = store.lineages()?;
    let maintains = all
        .iter()
        .filter(|s| s.charter.maintainers.contains(&key))
        .map(lineage_ref)
        .collect();
    let founded = all
        .iter()
        .filter(|s| s.founder == key)
        .map(lineage_ref)
        .collect();
    let mut proposed = Vec::new();
    let mut validated = Vec::new();
    let mut partial = false;
    let mut seen = std::collections::BTreeSet::new();
    for s in all.iter() {
        let ids = store.patches(&s.lineage, None)?;
        partial |= ids.len() > PERSON_SCAN;
        let newest: Vec<(RecordId, PatchStatus)> =
            ids.iter().rev().take(PERSON_SCAN).copied().collect();
        for chunk in newest.chunks(500) {
            let records = store.get_many(chunk.iter().map(|(id, _)| *id).collect())?;
            for ((id, st), r) in chunk.iter().zip(records) {
                let Some(r) = r else { continue };
                let Some(p) = r.as_patch() else { continue };
                let item = PatchItem {
                    id: id.to_string(),
                    title: title(&p.message),
                    author: r.author().into(),
                    timestamp: r.timestamp(),
                    status: st.to_string(),
                };
                for v in store.validations_of(id)? {
                    let Some(body) = v.as_validation() else {
                        continue;
                    };
                    if v.author() == key && body.lineage == s.lineage {
                        validated.push(Validated {
                            patch: item.clone(),
                            lineage: lineage_ref(s),
                            verdict: match body.verdict {
                                Verdict::Accept => "accept".into(),
                                Verdict::Reject => "reject".into(),
                            },
                            note: body.note.clone(),
                            timestamp: v.timestamp(),
                        });
                    }
                }
                if r.author() == key && p.lineage == s.lineage && seen.insert(*id) {
                    proposed.push(item);
                }
            }
        }
    }
    proposed.sort_by_key(|p| std::cmp::Reverse(p.timestamp));
    proposed.truncate(PAGE);
    validated.sort_by_key(|v| std::cmp::Reverse(v.timestamp));
    validated.truncate(PAGE);
    Ok(PersonView {
        person: key.into(),
        maintains,
        founded,
        proposed,
        validated,
        partial,
    })
}
