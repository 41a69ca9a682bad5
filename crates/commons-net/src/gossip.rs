//! Gossip rules that do no I/O: topic names, message ids and the verdict on a received message.
//!
//! One topic per lineage, `/commons/1/lineage/<64 hex digits>`. A gossip message is exactly the
//! bytes of one record; its message id is the record id, so the same record published by two
//! nodes is one message. A message is passed on only after [`judge`] accepted it.

use commons_core::record::{MAX_RECORD_BYTES, RECORD_ID_CONTEXT};
use commons_core::{DecodeError, LineageId, Record, RecordId};
use libp2p::gossipsub::{IdentTopic, MessageAcceptance, TopicHash};

/// The prefix of every lineage topic; the lineage id in hex follows.
pub const TOPIC_PREFIX: &str = "/commons/1/lineage/";

/// Length of the signature that ends every record; the record id covers everything before it.
const SIGNATURE_LEN: usize = 64;
/// The shortest byte string that can be a record: the two header bytes and the signature.
const MIN_RECORD_LEN: usize = 2 + SIGNATURE_LEN;

/// The gossip topic of a lineage.
pub fn topic(lineage: &LineageId) -> IdentTopic {
    IdentTopic::new(format!("{TOPIC_PREFIX}{}", lineage.to_hex()))
}

/// The lineage of a topic hash, if it is one of ours.
pub fn lineage_of_topic(hash: &TopicHash) -> Option<LineageId> {
    hash.as_str().strip_prefix(TOPIC_PREFIX)?.parse().ok()
}

/// The record id of bytes that claim to be a record, computed as the core computes it (BLAKE3
/// derive-key over everything but the signature) without decoding or verifying anything.
/// `None` if the bytes are too short to be a record.
pub fn record_id_of_bytes(bytes: &[u8]) -> Option<RecordId> {
    if bytes.len() < MIN_RECORD_LEN {
        return None;
    }
    let mut h = blake3::Hasher::new_derive_key(RECORD_ID_CONTEXT);
    h.update(&bytes[..bytes.len() - SIGNATURE_LEN]);
    Some(RecordId(*h.finalize().as_bytes()))
}

/// The gossipsub message id of a message's data: the record id, or for data too short to be a
/// record a plain BLAKE3 hash (such data is rejected anyway; it only needs some id).
pub fn message_id(data: &[u8]) -> Vec<u8> {
    match record_id_of_bytes(data) {
        Some(id) => id.0.to_vec(),
        None => blake3::hash(data).as_bytes().to_vec(),
    }
}

/// The lineages whose topics a record is published on: a charter on its own lineage and, for a
/// fork, on its parent's too (so followers of the parent see the fork); a patch or validation
/// on the lineage it names.
pub fn lineages_of(record: &Record) -> Vec<LineageId> {
    if let Some(c) = record.as_charter() {
        let mut out = vec![LineageId::from(record.id())];
        if let Some(fork) = &c.fork {
            out.push(fork.parent);
        }
        out
    } else if let Some(p) = record.as_patch() {
        vec![p.lineage]
    } else if let Some(v) = record.as_validation() {
        vec![v.lineage]
    } else {
        Vec::new()
    }
}

/// What to do with a received gossip message.
#[derive(Debug)]
pub enum Judgement {
    /// A valid record: pass it to the node and forward it.
    Accept(Box<Record>),
    /// Not something this build can judge (a newer format): drop it, no penalty.
    Ignore(DecodeError),
    /// Invalid: drop it and penalise the peer that sent it.
    Reject(RejectReason),
}

/// Why a gossip message was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// Bigger than any record may be; nothing was parsed.
    #[error("message of {len} bytes is over the record limit of {MAX_RECORD_BYTES} bytes")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// The bytes are not a valid, correctly signed record.
    #[error(transparent)]
    Invalid(DecodeError),
    /// A valid record on the topic of a lineage it does not name: no honest node publishes it
    /// there (see [`lineages_of`]), so its sender put it there.
    #[error("record {record} was sent on the topic of lineage {topic}, which it does not name")]
    WrongTopic {
        /// The record.
        record: RecordId,
        /// The lineage of the topic it came on.
        topic: LineageId,
    },
}

impl RejectReason {
    /// A short name of the kind of refusal, for counters: `oversized`, `bad signature`,
    /// `wrong topic`, or `malformed` (anything else a decoder refuses).
    pub fn kind(&self) -> &'static str {
        match self {
            RejectReason::TooLarge { .. } | RejectReason::Invalid(DecodeError::TooLarge { .. }) => {
                "oversized"
            }
            RejectReason::Invalid(DecodeError::BadSignature { .. }) => "bad signature",
            RejectReason::WrongTopic { .. } => "wrong topic",
            RejectReason::Invalid(_) => "malformed",
        }
    }
}

/// The verdict on a record that came on `topic`'s topic: a valid record is accepted only there
/// where [`lineages_of`] publishes it; anywhere else it is refused, and its sender penalised.
pub fn on_topic(judgement: Judgement, topic: LineageId) -> Judgement {
    match judgement {
        Judgement::Accept(record) if !lineages_of(&record).contains(&topic) => {
            Judgement::Reject(RejectReason::WrongTopic {
                record: record.id(),
                topic,
            })
        }
        other => other,
    }
}

impl Judgement {
    /// The gossipsub verdict.
    pub fn acceptance(&self) -> MessageAcceptance {
        match self {
            Judgement::Accept(_) => MessageAcceptance::Accept,
            Judgement::Ignore(_) => MessageAcceptance::Ignore,
            Judgement::Reject(_) => MessageAcceptance::Reject,
        }
    }
}

/// Judges a gossip message: size first, then the core's full decode (canonical form, rules of
/// the kind, strict signature check). Records of a format version or kind this build does not
/// know are ignored rather than rejected, so that peers running a newer version are not punished.
pub fn judge(data: &[u8]) -> Judgement {
    if data.len() > MAX_RECORD_BYTES {
        return Judgement::Reject(RejectReason::TooLarge { len: data.len() });
    }
    match Record::decode(data) {
        Ok(record) => Judgement::Accept(Box::new(record)),
        Err(e @ (DecodeError::UnknownVersion { .. } | DecodeError::UnknownKind { .. })) => {
            Judgement::Ignore(e)
        }
        Err(e) => Judgement::Reject(RejectReason::Invalid(e)),
    }
}

/// Judges several gossip messages at once, exactly as [`judge`] would one by one
/// (`Record::decode_batch`: each signature strictly, spread over threads when there are many).
pub fn judge_batch(data: &[&[u8]]) -> Vec<Judgement> {
    let sized: Vec<&[u8]> = data
        .iter()
        .copied()
        .filter(|d| d.len() <= MAX_RECORD_BYTES)
        .collect();
    let mut decoded = Record::decode_batch(&sized).into_iter();
    data.iter()
        .map(|d| {
            if d.len() > MAX_RECORD_BYTES {
                return Judgement::Reject(RejectReason::TooLarge { len: d.len() });
            }
            match decoded.next() {
                Some(Ok(record)) => Judgement::Accept(Box::new(record)),
                Some(Err(
                    e @ (DecodeError::UnknownVersion { .. } | DecodeError::UnknownKind { .. }),
                )) => Judgement::Ignore(e),
                Some(Err(e)) => Judgement::Reject(RejectReason::Invalid(e)),
                // decode_batch answers once per input; judge alone if it ever did not.
                None => judge(d),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use commons_core::{BlobHash, Body, Change, Patch, SecretKey};

    fn patch(key: &SecretKey, lineage: LineageId) -> Record {
        let body = Body::Patch(Patch {
            lineage,
            parents: Vec::new(),
            changes: vec![Change {
                path: "README".into(),
                before: None,
                after: Some(BlobHash::of(b"hello")),
            }],
            message: "hello".into(),
        });
        Record::sign(key, 1, body).expect("valid patch")
    }

    #[test]
    fn record_id_of_bytes_matches_the_core() {
        let r = patch(&SecretKey::from_seed([1; 32]), LineageId([7; 32]));
        assert_eq!(record_id_of_bytes(r.bytes()), Some(r.id()));
        assert_eq!(message_id(r.bytes()), r.id().0.to_vec());
        assert_eq!(record_id_of_bytes(&[1, 2, 3]), None);
        assert_eq!(message_id(&[1, 2, 3]).len(), 32);
    }

    #[test]
    fn a_record_is_accepted_only_on_the_topic_of_a_lineage_it_names() {
        let (l, other) = (LineageId([7; 32]), LineageId([8; 32]));
        let r = patch(&SecretKey::from_seed([1; 32]), l);
        assert!(matches!(
            on_topic(judge(r.bytes()), l),
            Judgement::Accept(_)
        ));
        match on_topic(judge(r.bytes()), other) {
            Judgement::Reject(RejectReason::WrongTopic { record, topic }) => {
                assert_eq!((record, topic), (r.id(), other));
            }
            j => panic!("on another lineage's topic: {j:?}"),
        }
        // A verdict that is not an acceptance stands.
        assert!(matches!(
            on_topic(judge(&[1, 2, 3]), l),
            Judgement::Reject(_)
        ));
    }

    #[test]
    fn topics_round_trip() {
        let l = LineageId([9; 32]);
        let t = topic(&l);
        assert!(t.hash().as_str().starts_with(TOPIC_PREFIX));
        assert_eq!(lineage_of_topic(&t.hash()), Some(l));
        assert_eq!(lineage_of_topic(&TopicHash::from_raw("/other/topic")), None);
    }

    #[test]
    fn judge_accepts_valid_and_rejects_forged_oversized_and_garbage() {
        let r = patch(&SecretKey::from_seed([1; 32]), LineageId([7; 32]));
        assert!(matches!(judge(r.bytes()), Judgement::Accept(_)));
        assert_eq!(lineages_of(&r), vec![LineageId([7; 32])]);

        let mut forged = r.bytes().to_vec();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(matches!(judge(&forged), Judgement::Reject(_)));

        let big = vec![1u8; MAX_RECORD_BYTES + 1];
        assert!(matches!(
            judge(&big),
            Judgement::Reject(RejectReason::TooLarge { .. })
        ));
        assert!(matches!(judge(b"garbage"), Judgement::Reject(_)));

        let mut future = r.bytes().to_vec();
        future[0] = 99;
        assert!(matches!(judge(&future), Judgement::Ignore(_)));
    }

    #[test]
    fn judging_a_batch_gives_each_message_its_own_verdict() {
        let key = SecretKey::from_seed([1; 32]);
        let good: Vec<Record> = (0..5u8).map(|i| patch(&key, LineageId([i; 32]))).collect();
        let mut forged = good[2].bytes().to_vec();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let mut future = good[3].bytes().to_vec();
        future[0] = 99;
        let big = vec![1u8; MAX_RECORD_BYTES + 1];
        let batch: Vec<&[u8]> = vec![
            good[0].bytes(),
            &forged,
            good[1].bytes(),
            &big,
            &future,
            b"garbage",
            good[4].bytes(),
        ];
        let verdicts: Vec<MessageAcceptance> = judge_batch(&batch)
            .iter()
            .map(Judgement::acceptance)
            .collect();
        let one_by_one: Vec<MessageAcceptance> =
            batch.iter().map(|d| judge(d).acceptance()).collect();
        assert_eq!(verdicts, one_by_one);
        assert_eq!(
            verdicts,
            [
                MessageAcceptance::Accept,
                MessageAcceptance::Reject,
                MessageAcceptance::Accept,
                MessageAcceptance::Reject,
                MessageAcceptance::Ignore,
                MessageAcceptance::Reject,
                MessageAcceptance::Accept,
            ]
        );
        // All valid: the records themselves come back, in order.
        let all: Vec<&[u8]> = good.iter().map(Record::bytes).collect();
        for (j, r) in judge_batch(&all).into_iter().zip(&good) {
            assert!(matches!(j, Judgement::Accept(rec) if rec.id() == r.id()));
        }
    }
}
