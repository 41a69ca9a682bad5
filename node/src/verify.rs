//! `commons store verify`: the store checked at rest, on demand.

use std::time::Instant;

use commons_rpc::{Response, VerifyReport};

use crate::service::{Ctx, error};

impl Ctx {
    /// Re-indexes the store from its records (each decoded and its id hashed again; damaged
    /// ones set aside), hashes every blob again (damaged ones moved aside), and wants the
    /// damaged blobs again so the downloader fetches good copies. Runs on a blocking thread.
    pub(crate) async fn verify_store(&self) -> Response {
        let (store, downloads) = (self.store.clone(), self.downloads.clone());
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || -> anyhow::Result<VerifyReport> {
            store.reindex()?;
            let records = store.record_count()?;
            let (damaged_records, _) = store.damaged(0)?;
            let blobs = store.blobs().verify_all()?;
            crate::serve::want_again(&store, &downloads, blobs.damaged.clone());
            Ok(VerifyReport {
                records,
                damaged_records,
                blobs: blobs.checked,
                blob_bytes: blobs.bytes,
                damaged_blobs: blobs.damaged,
                millis: 0,
            })
        })
        .await;
        match result {
            Ok(Ok(mut report)) => {
                report.millis = started.elapsed().as_millis() as u64;
                self.reconcile.touched_all();
                Response::Verified(report)
            }
            Ok(Err(e)) => error("store", format!("{e:#}")),
            Err(e) => error("internal", e.to_string()),
        }
    }
}
