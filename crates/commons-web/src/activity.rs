//! Recent activity: the records this node stored lately (by gossip, catch-up or its own user),
//! newest first, for the home page. The node tells [`Activity::stored`] what each put stored
//! that was new; only the newest [`KEPT`] are kept, in memory (it starts empty with the node).

use std::collections::VecDeque;
use std::sync::Mutex;

use commons_core::{Body, Record, Verdict};
use serde::Serialize;

use crate::view::Person;

/// Entries kept.
pub const KEPT: usize = 100;

/// One stored record, described.
#[derive(Debug, Clone, Serialize)]
pub struct ActivityEntry {
    /// The record's id.
    pub id: String,
    /// `charter`, `patch` or `validation`.
    pub kind: String,
    /// The lineage it belongs to (a charter's own id).
    pub lineage: String,
    /// Its lineage's name, when known here (filled when shown).
    pub lineage_name: Option<String>,
    /// A line about it: a charter's name, a patch's first message line, a verdict and its note.
    pub title: String,
    /// For a validation, the patch it is about.
    pub patch: Option<String>,
    /// Who signed it.
    pub author: Person,
    /// Its timestamp (ms since the epoch).
    pub timestamp: u64,
}

/// The newest records stored, shared by the node (which adds) and the explorer (which shows).
#[derive(Debug, Default)]
pub struct Activity(Mutex<VecDeque<ActivityEntry>>);

fn line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(200).collect()
}

impl Activity {
    /// Records that a put stored `records` (those that were new).
    pub fn stored(&self, records: &[Record]) {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for r in records.iter().skip(records.len().saturating_sub(KEPT)) {
            let (kind, lineage, title, patch) = match r.body() {
                Body::Charter(c) => ("charter", r.id().to_string(), c.name.clone(), None),
                Body::Patch(p) => ("patch", p.lineage.to_string(), line(&p.message), None),
                Body::Validation(v) => (
                    "validation",
                    v.lineage.to_string(),
                    format!(
                        "{}{}{}",
                        match v.verdict {
                            Verdict::Accept => "accept",
                            Verdict::Reject => "reject",
                        },
                        if v.note.is_empty() { "" } else { ": " },
                        line(&v.note)
                    ),
                    Some(v.patch.to_string()),
                ),
            };
            q.push_front(ActivityEntry {
                id: r.id().to_string(),
                kind: kind.into(),
                lineage,
                lineage_name: None,
                title,
                patch,
                author: r.author().into(),
                timestamp: r.timestamp(),
            });
        }
        q.truncate(KEPT);
    }

    /// The newest entries, at most `n`.
    pub fn recent(&self, n: usize) -> Vec<ActivityEntry> {
        let q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        q.iter().take(n).cloned().collect()
    }
}
