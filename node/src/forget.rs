//! `commons forget ID`: stop following a commons and drop what only it used.
//!
//! A family's records serve all its lineages (a fork's state is built from its parent's
//! history), so they go only when no lineage of the family is followed any more: forgetting a
//! fork that is followed alongside its parent unfollows the fork and keeps the records. When
//! they go, the node first leaves the family's gossip topics (so nothing of it is stored while
//! the store drops it), then the store removes the records and re-indexes what remains, and
//! the loose blobs no remaining record names (`Store::forget_family`). Blob downloads already
//! queued for the family finish and leave their blobs unreferenced (not yet collected).

use commons_core::LineageId;
use commons_rpc::{ForgetReport, Response};

use crate::service::{Ctx, error};

impl Ctx {
    pub(crate) async fn forget(&self, lineage: LineageId) -> Response {
        let followed = self.follows.contains(&lineage);
        let family = self.family_of(lineage).await;
        if !followed && family.is_none() {
            return error(
                "not_found",
                format!("commons {lineage} is neither followed nor stored here"),
            );
        }
        let family = family.unwrap_or(lineage);
        let lineages = self.family_lineages(lineage).await;
        let mut report = ForgetReport {
            family,
            unfollowed: vec![],
            still_followed: vec![],
            dropped: vec![],
            records: 0,
            blobs: 0,
            blob_bytes: 0,
            packed_kept: 0,
        };
        if followed {
            match self.follows.remove_async(lineage).await {
                Ok(_) => report.unfollowed.push(lineage),
                Err(e) => return error("store", format!("{e:#}")),
            }
        }
        report.still_followed = lineages
            .iter()
            .copied()
            .filter(|l| *l != lineage && self.follows.contains(l))
            .collect();
        if !report.still_followed.is_empty() {
            let _ = self.net.unfollow(lineage).await;
            return Response::Forgotten(report);
        }
        for l in lineages.iter().chain(std::iter::once(&lineage)) {
            let _ = self.net.unfollow(*l).await;
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.forget_family(&family)).await {
            Ok(Ok(gone)) => {
                self.reconcile.touched_all();
                report.dropped = gone.lineages;
                report.records = gone.records;
                report.blobs = gone.blobs;
                report.blob_bytes = gone.blob_bytes;
                report.packed_kept = gone.packed_kept;
                tracing::info!(target: "commons_node", %family, records = report.records, blobs = report.blobs, "family forgotten");
                Response::Forgotten(report)
            }
            Ok(Err(e)) => error("store", format!("{e:#}")),
            Err(e) => error("internal", e.to_string()),
        }
    }
}
