//! Gossip in the network task: messages received, judged together (signatures, size, topic),
//! then local policy (block list, rate limits: `policy.rs`), and each verdict reported to
//! gossipsub before the record goes to the node.

use super::*;

impl NetTask {
    pub(super) fn on_gossipsub(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => self.on_gossip_message(propagation_source, message_id, message),
            gossipsub::Event::Subscribed { peer_id, topic, .. } => {
                if let Some(lineage) = gossip::lineage_of_topic(&topic) {
                    self.events.emit(NetEvent::PeerFollows {
                        peer: peer_id,
                        lineage,
                    });
                }
            }
            other => tracing::debug!(target: "commons_net", event = ?other, "gossipsub event"),
        }
    }

    pub(super) fn on_gossip_message(
        &mut self,
        source: PeerId,
        id: MessageId,
        message: gossipsub::Message,
    ) {
        self.gossip_waiting.push((source, id, message));
    }

    /// Judges the gossip messages received since the last time, together (see
    /// [`gossip::judge_batch`]), and reports each verdict.
    pub(super) fn judge_gossip(&mut self) {
        let waiting = std::mem::take(&mut self.gossip_waiting);
        let data: Vec<&[u8]> = waiting.iter().map(|(_, _, m)| m.data.as_slice()).collect();
        let judgements = gossip::judge_batch(&data);
        for ((source, id, message), judgement) in waiting.into_iter().zip(judgements) {
            self.on_judged(source, id, message, judgement);
        }
    }

    pub(super) fn on_judged(
        &mut self,
        source: PeerId,
        id: MessageId,
        message: gossipsub::Message,
        judgement: Judgement,
    ) {
        let lineage = gossip::lineage_of_topic(&message.topic);
        // Messages only arrive on topics we subscribed to, all of which are lineage topics.
        let judgement = match lineage {
            Some(topic) => gossip::on_topic(judgement, topic),
            None => judgement,
        };
        // Local policy on what verified: refused ones are not forwarded (see `policy.rs`).
        let verdict = match &judgement {
            Judgement::Accept(record) => {
                self.policy
                    .check(source, record.author(), std::time::Instant::now())
            }
            _ => crate::policy::Verdict::Pass,
        };
        let acceptance = match (lineage, verdict) {
            (Some(_), crate::policy::Verdict::Pass) => judgement.acceptance(),
            _ => MessageAcceptance::Ignore,
        };
        if let Some(kind) = verdict.kind() {
            tracing::debug!(target: "commons_net", peer = %source, kind, "gossip refused by local policy");
            *self.refused.entry(kind).or_default() += 1;
            if verdict == (crate::policy::Verdict::PeerRate { strike: true }) {
                self.strike(source, "gossip over the per-peer rate");
            }
            return;
        }
        // Report first: an accepted message is forwarded at once.
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, acceptance);
        match (judgement, lineage) {
            (Judgement::Accept(record), Some(lineage)) => {
                tracing::debug!(target: "commons_net", peer = %source, %lineage, record = %record.id(), "gossip record accepted");
                self.events.emit(NetEvent::Record {
                    from: source,
                    lineage,
                    record,
                });
            }
            (Judgement::Reject(reason), _) => {
                tracing::warn!(target: "commons_net", peer = %source, topic = %message.topic, %reason, "invalid gossip rejected");
                *self.refused.entry(reason.kind()).or_default() += 1;
                self.strike(source, &reason.to_string());
            }
            (Judgement::Ignore(reason), _) => {
                tracing::debug!(target: "commons_net", peer = %source, %reason, "gossip ignored");
            }
            (Judgement::Accept(_), None) => {}
        }
    }
}
