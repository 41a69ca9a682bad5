//! Local policy in the node: the block list as the CLI changes it (persisted in the home, then
//! applied by the network task, `commons_net::policy`), and the counts of what the node itself
//! refused, shown by `node status` beside the network's.

use commons_rpc::Response;

use crate::service::{Ctx, error};

impl Ctx {
    /// Counts `n` refusals of `kind` (shown by `node status`).
    pub fn refused(&self, kind: &'static str, n: u64) {
        if n > 0 {
            *self
                .refusals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(kind)
                .or_default() += n;
        }
    }

    /// `commons block` / `unblock`: the block list, persisted, then applied by the network.
    pub(crate) async fn block(&self, entry: &str, on: bool) -> Response {
        let parsed: crate::follows::Entry = match entry.parse() {
            Ok(e) => e,
            Err(e) => return error("invalid", format!("{e:#}")),
        };
        let changed = match on {
            true => self.blocked.add_async(parsed).await,
            false => self.blocked.remove_async(parsed).await,
        };
        match changed {
            Ok(true) => {}
            Ok(false) if on => return error("exists", format!("{entry} is already blocked")),
            Ok(false) => return error("not_found", format!("{entry} is not blocked")),
            Err(e) => return error("store", format!("{e:#}")),
        }
        match self.net.block(parsed.0, on).await {
            Ok(true) => {
                if let (true, commons_net::Blocked::Peer(peer)) = (on, &parsed.0) {
                    // Its bulk connections too, not only its libp2p ones.
                    self.blobs.close_peer(peer);
                }
                Response::Ok
            }
            Ok(false) => {
                let _ = self.blocked.remove_async(parsed).await;
                error(
                    "full",
                    format!(
                        "the block list is full ({} entries of this kind)",
                        commons_net::policy::MAX_BLOCKED
                    ),
                )
            }
            Err(e) => error("network", e),
        }
    }
}
