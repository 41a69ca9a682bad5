//! Starts the web explorer (`commons-web`) on the listener bound at start, and keeps what it
//! shows about the node (peers, addresses, follows) fresh.

use std::time::Duration;

use commons_net::NetHandle;
use commons_store::Store;
use commons_web::NodeInfo;
use tokio::sync::watch;

/// How often the explorer's view of the node (peers, addresses) is refreshed.
const NODE_INFO_EVERY: Duration = Duration::from_secs(1);

/// Serves the explorer on `listener`; prints and returns its URL.
pub fn start(
    listener: tokio::net::TcpListener,
    store: Store,
    net: NetHandle,
    activity: std::sync::Arc<commons_web::activity::Activity>,
) -> anyhow::Result<String> {
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}/");
    println!("web explorer: {url}");
    if !addr.ip().is_loopback() {
        tracing::warn!(target: "commons_node", %addr, "the web explorer is served beyond this machine: whoever reaches this address can read everything this node holds");
    }
    let (tx, rx) = watch::channel(NodeInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        ..NodeInfo::default()
    });
    tokio::spawn(async move {
        loop {
            let Ok(st) = net.status().await else { return };
            tx.send_replace(NodeInfo {
                version: env!("CARGO_PKG_VERSION").into(),
                peer_id: st.peer_id.to_string(),
                peers: st.connected.len(),
                listen: st.listen_addrs.iter().map(|a| a.to_string()).collect(),
                followed: st.followed.iter().map(|l| l.to_string()).collect(),
                banned: st.banned.len(),
                refused: st.refused.values().sum(),
                bootstrap: (
                    st.bootstrap.len(),
                    st.bootstrap.iter().filter(|b| b.connected).count(),
                ),
            });
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(NODE_INFO_EVERY).await;
        }
    });
    tokio::spawn(async move {
        if let Err(e) = commons_web::serve(listener, store, rx, activity).await {
            tracing::error!(target: "commons_node", error = %e, "the web explorer stopped");
        }
    });
    Ok(url)
}
