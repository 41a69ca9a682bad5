//! Discovery and liveness: Kademlia (bootstrap, providers), identify, ping and mDNS events of
//! the network task.

use super::*;

impl NetTask {
    pub(super) fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(result),
                step,
                ..
            } => self.on_providers(id, result, step.last),
            kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::StartProviding(Err(e)),
                ..
            } => {
                tracing::debug!(target: "commons_net", error = %e, "provider announcement incomplete")
            }
            kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::Bootstrap(Ok(ok)),
                ..
            } if ok.num_remaining == 0 => self.on_bootstrapped(),
            other => tracing::trace!(target: "commons_net", event = ?other, "kademlia event"),
        }
    }

    pub(super) fn on_bootstrapped(&mut self) {
        if !std::mem::take(&mut self.announce_after_bootstrap) {
            return;
        }
        let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() else {
            return;
        };
        for lineage in &self.followed {
            if let Err(e) = kad.start_providing(provider_key(lineage)) {
                tracing::warn!(target: "commons_net", %lineage, error = %e, "cannot announce as provider");
            }
        }
        tracing::debug!(target: "commons_net", lineages = self.followed.len(), "followed lineages announced after bootstrap");
    }

    pub(super) fn on_providers(
        &mut self,
        id: kad::QueryId,
        result: kad::GetProvidersResult,
        last: bool,
    ) {
        let Some(query) = self.queries.get_mut(&id) else {
            return;
        };
        let local = *self.swarm.local_peer_id();
        let mut new = Vec::new();
        if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = result {
            for p in providers {
                if p != local
                    && query.found.len() < MAX_PROVIDERS_PER_QUERY
                    && query.found.insert(p)
                {
                    new.push(p);
                }
            }
        }
        for p in new {
            if !self.swarm.is_connected(&p) && !self.penalties.is_banned(&p) {
                // Kademlia supplies the addresses it knows for the peer.
                if let Err(e) = self.swarm.dial(DialOpts::peer_id(p).build()) {
                    tracing::debug!(target: "commons_net", peer = %p, error = %e, "cannot dial provider");
                }
            }
        }
        if last && let Some(query) = self.queries.remove(&id) {
            tracing::debug!(target: "commons_net", lineage = %query.lineage, found = query.found.len(), "provider lookup done");
            if let Some(reply) = query.reply {
                let _ = reply.send(Ok(query.found.into_iter().collect()));
            }
        }
    }

    pub(super) fn on_identify(&mut self, event: identify::Event) {
        let identify::Event::Received { peer_id, info, .. } = event else {
            return;
        };
        if info.protocol_version != IDENTIFY_PROTOCOL {
            tracing::debug!(target: "commons_net", peer = %peer_id, version = %info.protocol_version, "not a commons node; disconnecting");
            let _ = self.swarm.disconnect_peer_id(peer_id);
            return;
        }
        if info.protocols.contains(&KAD_PROTOCOL)
            && let Some(kad) = self.swarm.behaviour_mut().kad.as_mut()
        {
            for addr in info.listen_addrs.into_iter().take(MAX_ADDRS_PER_PEER) {
                kad.add_address(&peer_id, addr);
            }
        }
    }

    pub(super) fn on_ping(&mut self, event: ping::Event) {
        match event.result {
            // A peer without ping (a light client) is fine; liveness is then not checked.
            Ok(_) | Err(ping::Failure::Unsupported) => {}
            Err(error) => {
                // A dead connection must go quickly, or gossipsub keeps thinking it is alive.
                tracing::debug!(target: "commons_net", peer = %event.peer, %error, "ping failed; closing connection");
                self.swarm.close_connection(event.connection);
            }
        }
    }

    pub(super) fn on_mdns(&mut self, event: mdns::Event) {
        let mdns::Event::Discovered(found) = event else {
            return;
        };
        for (peer, addr) in found.into_iter().take(MAX_ADDRS_PER_PEER) {
            if self.swarm.is_connected(&peer) || self.penalties.is_banned(&peer) {
                continue;
            }
            if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                kad.add_address(&peer, addr.clone());
            }
            let opts = DialOpts::peer_id(peer).addresses(vec![addr]).build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(target: "commons_net", %peer, error = %e, "cannot dial mDNS peer");
            }
        }
    }
}
