//! `node status`: what the daemon reports about itself.

use std::time::Instant;

use commons_rpc::Response;

use crate::service::{Ctx, DISK_USAGE_MAX_AGE, blocking, error};

impl Ctx {
    /// `node status`: the network, the store, downloads, reconciliation, refusals.
    pub(crate) async fn node_status(&self) -> Response {
        let status = match self.net.status().await {
            Ok(s) => s,
            Err(e) => return error("network", e),
        };
        let store = self.store.clone();
        let records = blocking(move || store.record_count()).await.unwrap_or(0);
        let store = self.store.clone();
        let damaged = blocking(move || store.damaged(commons_rpc::MAX_DAMAGED_LISTED))
            .await
            .map(|(count, list)| commons_rpc::DamagedReport {
                count,
                records: list
                    .into_iter()
                    .map(|d| commons_rpc::DamagedEntry {
                        id: d.id,
                        reason: d.reason,
                        refetched: d.refetched,
                    })
                    .collect(),
            })
            .unwrap_or_default();
        let store_bytes = self.store_bytes().await;
        let mut blobs = self.blobs.report();
        self.downloads.fill(&mut blobs);
        let mut refused = status.refused.clone();
        for (kind, n) in self
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            *refused.entry((*kind).to_owned()).or_default() += n;
        }
        Response::NodeStatus(Box::new(commons_rpc::NodeStatus {
            peer_id: status.peer_id.to_string(),
            node_key: self.node_key,
            listen_addrs: status.listen_addrs.iter().map(|a| a.to_string()).collect(),
            peers: status.connected.len(),
            followed: self.follows.list(),
            store_bytes,
            records,
            banned: status.banned.iter().map(|p| p.to_string()).collect(),
            blobs,
            reconcile: self.reconcile.report(),
            damaged,
            refused,
            bootstrap: status
                .bootstrap
                .iter()
                .map(|b| commons_rpc::BootstrapPeer {
                    addr: b.addr.to_string(),
                    connected: b.connected,
                    failed_dials: b.failures,
                    next_dial_ms: b.next_dial.map(|d| d.as_millis() as u64),
                })
                .collect(),
            web: self.web.clone(),
        }))
    }

    /// The store's size on disk, measured at most every [`DISK_USAGE_MAX_AGE`].
    async fn store_bytes(&self) -> u64 {
        let mut cached = self.disk_usage.lock().await;
        if let Some((at, bytes)) = *cached
            && at.elapsed() < DISK_USAGE_MAX_AGE
        {
            return bytes;
        }
        let store_dir = self.home.join("store");
        let bytes = tokio::task::spawn_blocking(move || commons_store::home::dir_size(&store_dir))
            .await
            .unwrap_or(0);
        *cached = Some((Instant::now(), bytes));
        bytes
    }
}
