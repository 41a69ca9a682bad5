//! Target `reconcile`: a reconciliation [`Message`] as the sync protocol decodes it, and the
//! state machine's answer to it on both sides of a session, against small fixed local sets.

use std::sync::OnceLock;

use commons_core::RecordId;
use commons_core::reconcile::{
    Config, Items, Limits, MAX_ROUNDS, Message, REQUEST_LIMITS, RESPONSE_LIMITS, Reconciler,
    SortedItems,
};
use commons_net::wire::{self, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};

/// Ids in the larger local set: enough that a mismatching fingerprint is split rather than
/// answered with ids (more than `LEAF_SIZE`).
const LARGE_SET: u32 = 600;
/// Most rounds the session after the fuzzed message may take between two honest sides.
const FOLLOW_UP_ROUNDS: u32 = 64;

/// The local sets: the large one, and a small one (fewer than `LEAF_SIZE`) that overlaps it.
fn sets() -> &'static (SortedItems, SortedItems) {
    static SETS: OnceLock<(SortedItems, SortedItems)> = OnceLock::new();
    SETS.get_or_init(|| {
        // Spread over the id space (a multiplicative hash of the index in the first bytes), so
        // that every part of the space holds some.
        let id = |i: u32| {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.wrapping_mul(0x9e37_79b9).to_be_bytes());
            b[4..8].copy_from_slice(&i.to_be_bytes());
            RecordId(b)
        };
        let large = SortedItems::new((0..LARGE_SET).map(id).collect());
        let small = SortedItems::new((0..20).map(|i| id(i * 7)).chain([id(9999)]).collect());
        (large, small)
    })
}

/// Decodes `data` as a reconciliation message (with the caps of a request and of a response),
/// checks the round trip and the caps, then hands it to a responder and to an initiator over
/// each local set and plays the rest of the session against an honest peer.
pub fn reconcile(data: &[u8]) {
    let (large, small) = sets();
    for (max, limits, config) in [
        (MAX_REQUEST_BYTES, REQUEST_LIMITS, Config::responder()),
        (MAX_RESPONSE_BYTES, RESPONSE_LIMITS, Config::initiator()),
    ] {
        let Ok(message) = wire::decode::<Message>(data, max) else {
            continue;
        };
        assert_eq!(message.encoded_len(), data.len(), "encoded_len is exact");
        let again = wire::encode(&message, max).expect("a decoded message encodes");
        assert_eq!(
            again, data,
            "the encoding of a decoded message is its bytes"
        );
        let checked = message.check(&limits).is_ok();
        if checked {
            assert!(message.ranges.len() <= limits.max_ranges);
            assert!(message.id_count() <= limits.max_ids);
        }
        for (mine, theirs) in [(large, small), (small, large)] {
            for (tell_missing, learn) in [(true, true), (false, true), (true, false)] {
                let config = Config {
                    tell_missing,
                    learn,
                    ..config
                };
                session(config, mine, theirs, &message, checked);
            }
        }
    }
}

/// `config`'s side holds `mine` and receives `message`; its answers go to an honest peer holding
/// `theirs`, and the session runs on until it ends or the round limit.
fn session(
    config: Config,
    mine: &SortedItems,
    theirs: &SortedItems,
    message: &Message,
    checked: bool,
) {
    let mut side = Reconciler::new(config);
    let reply = match side.receive(mine, message) {
        Ok(reply) => reply,
        Err(_) => {
            assert!(!checked, "a message within the caps is answered");
            return;
        }
    };
    assert!(checked, "only messages within the caps are answered");
    learned_within(&side, mine);
    let peer_config = Config {
        send: config.receive,
        receive: config.send,
        ..Config::initiator()
    };
    let mut peer = Reconciler::new(peer_config);
    let mut next = reply;
    let mut rounds = 0;
    // Whose turn: the honest peer answers the fuzzed side's reply, and so on.
    let mut to_peer = true;
    while let Some(m) = next.take() {
        let (from, to, items) = if to_peer {
            (&config.send, &mut peer, theirs)
        } else {
            (&peer_config.send, &mut side, mine)
        };
        within(&m, from);
        rounds += 1;
        if rounds > FOLLOW_UP_ROUNDS {
            break;
        }
        next = to
            .receive(items, &m)
            .expect("an honest side's message within the caps is answered");
        to_peer = !to_peer;
    }
    assert!(side.rounds() <= MAX_ROUNDS && peer.rounds() <= MAX_ROUNDS);
    learned_within(&side, mine);
    learned_within(&peer, theirs);
}

/// A message a side sends is within the caps of its direction, and encodes within the sync
/// protocol's frame caps.
fn within(m: &Message, limits: &Limits) {
    assert_eq!(m.check(limits), Ok(()), "a reply is within the caps");
    let max = if limits.max_ids == RESPONSE_LIMITS.max_ids {
        MAX_RESPONSE_BYTES
    } else {
        MAX_REQUEST_BYTES
    };
    let bytes = wire::encode(m, max).expect("a reply fits its frame");
    assert_eq!(bytes.len(), m.encoded_len());
}

/// What a side learned is about the sets: ids it needs are ones it lacks, ids it has that the
/// peer lacks are its own.
fn learned_within(side: &Reconciler, mine: &SortedItems) {
    assert!(side.need().iter().all(|id| !mine.contains(id)));
    assert!(side.have().iter().all(|id| mine.contains(id)));
}
