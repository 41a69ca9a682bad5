//! A set-reconciliation session with one peer: the node's side of `SyncRequest::Reconcile`.
//!
//! The logic is [`commons_core::reconcile`]'s state machine; this module only carries its
//! messages, one request per round, and bounds the session: at most
//! [`reconcile::MAX_ROUNDS`] rounds and [`SESSION_TIMEOUT`] in all. Each answer is checked
//! against the caps and the order of ranges before the state machine sees it; a peer that breaks
//! them is penalised ([`NetHandle::reconcile_round`]) and the session ends.
//!
//! The node's side is pull-only (it does not tell the responder which ids the responder lacks):
//! responders serve statelessly, and every node catches up from its peers on its own.

use std::time::Duration;

use commons_core::reconcile::{self, Config, Items, ReconcileError, Reconciler};
use commons_core::{LineageId, RecordId};
use libp2p::PeerId;

use crate::handle::{BadResponse, FetchError, NetHandle};

/// Longest a whole session may take. A session needs a handful of round trips of at most a
/// few hundred KiB each; one that takes longer is stopped, keeping what it learned.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(60);

/// What a session learned and cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Ids the peer holds that the local set lacks, ascending.
    pub need: Vec<RecordId>,
    /// Round trips made.
    pub rounds: u32,
    /// Bytes of reconciliation messages sent (their wire encoding, without framing).
    pub bytes_sent: u64,
    /// Bytes of reconciliation messages received.
    pub bytes_received: u64,
    /// Whether the session ran to its end (else it stopped at the round limit, the timeout or
    /// an error, and `need` is what was learned until then).
    pub complete: bool,
}

impl NetHandle {
    /// Reconciles the local record ids of `family` (`items`) with `peer`'s and returns the ids
    /// the peer holds that are missing here. Fails only when the first round fails; a session
    /// cut short later returns what it learned, with `complete` unset.
    pub async fn reconcile<I: Items + Sync>(
        &self,
        peer: PeerId,
        family: LineageId,
        items: &I,
    ) -> Result<Reconciled, FetchError> {
        let mut salt = [0u8; 8];
        // A salt nobody knows in advance: short ids that collide on purpose cannot be made.
        let _ = getrandom::getrandom(&mut salt);
        let mut state = Reconciler::new(Config::pull()).with_salt(u64::from_le_bytes(salt));
        let mut out = Reconciled::default();
        let deadline = tokio::time::Instant::now() + SESSION_TIMEOUT;
        let mut next = Some(state.initiate(items));
        while let Some(message) = next.take() {
            if out.rounds >= reconcile::MAX_ROUNDS {
                tracing::debug!(target: "commons_net::reconcile", %peer, %family, "round limit reached");
                break;
            }
            out.bytes_sent += message.encoded_len() as u64;
            let round = self.reconcile_round(peer, family, out.rounds, message);
            let answer = match tokio::time::timeout_at(deadline, round).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) if out.rounds == 0 => return Err(e),
                Ok(Err(e)) => {
                    tracing::debug!(target: "commons_net::reconcile", %peer, %family, error = %e, "session cut short");
                    break;
                }
                Err(_) => {
                    tracing::debug!(target: "commons_net::reconcile", %peer, %family, "session timed out");
                    break;
                }
            };
            out.rounds += 1;
            out.bytes_received += answer.encoded_len() as u64;
            match state.receive(items, &answer) {
                Ok(reply) => next = reply,
                Err(ReconcileError::TooManyRounds(_)) => break,
                Err(ReconcileError::Invalid(e)) => {
                    // `reconcile_round` checked the same rules; kept for defence in depth.
                    let reason = BadResponse::Reconcile(e);
                    let _ = self.report_bad_peer(peer, &reason.to_string()).await;
                    break;
                }
            }
            out.complete = next.is_none();
        }
        out.need = state.into_need();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use commons_core::reconcile::{
        FINGERPRINT_BYTES, Fingerprint, MAX_RANGES, MAX_REQUEST_IDS, MAX_RESPONSE_IDS, Message,
        Mode, Range,
    };

    use super::*;
    use crate::wire::{self, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, SyncRequest, SyncResponse};

    fn id(i: u32) -> RecordId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&i.to_be_bytes());
        b[4] = 1;
        RecordId(b)
    }

    /// A message at the caps: every range but the last a fingerprint, the last an id list.
    fn largest(ids: usize) -> Message {
        let ranges = MAX_RANGES - 1;
        let mut out: Vec<Range> = (0..ranges)
            .map(|i| Range {
                upper: Some(id(i as u32)),
                mode: Mode::Fingerprint(Fingerprint([0xab; FINGERPRINT_BYTES])),
            })
            .collect();
        out.push(Range {
            upper: None,
            mode: Mode::IdList((0..ids).map(|i| id((ranges + i) as u32)).collect()),
        });
        Message {
            salt: 0,
            ranges: out,
        }
    }

    #[test]
    fn the_largest_messages_fit_their_frames() {
        let request = SyncRequest::Reconcile {
            family: LineageId([9; 32]),
            round: reconcile::MAX_ROUNDS - 1,
            message: largest(MAX_REQUEST_IDS),
        };
        assert_eq!(request.check(), Ok(()));
        let bytes = wire::encode(&request, MAX_REQUEST_BYTES).expect("fits the request cap");
        assert_eq!(
            wire::decode::<SyncRequest>(&bytes, MAX_REQUEST_BYTES).expect("decodes"),
            request
        );
        let response = SyncResponse::Reconcile(largest(MAX_RESPONSE_IDS));
        assert_eq!(response.check(), Ok(()));
        let bytes = wire::encode(&response, MAX_RESPONSE_BYTES).expect("fits the response cap");
        assert_eq!(
            wire::decode::<SyncResponse>(&bytes, MAX_RESPONSE_BYTES).expect("decodes"),
            response
        );
    }

    #[test]
    fn over_the_caps_or_out_of_order_is_refused_on_decoding() {
        let request = SyncRequest::Reconcile {
            family: LineageId([9; 32]),
            round: 0,
            message: largest(MAX_REQUEST_IDS + 1),
        };
        assert!(request.check().is_err(), "too many ids for a request");
        let late = SyncRequest::Reconcile {
            family: LineageId([9; 32]),
            round: reconcile::MAX_ROUNDS,
            message: Message::default(),
        };
        assert!(late.check().is_err(), "round over the limit");
        let mut disorder = largest(1);
        disorder.ranges.swap(0, 1);
        assert!(SyncResponse::Reconcile(disorder).check().is_err());
    }
}
