//! Target `record`: [`Record::decode`], [`Record::decode_stored`] and [`Record::decode_batch`],
//! and the gossip verdict on the same bytes (a gossip message is exactly one record's bytes).

use commons_core::record::{
    FORMAT_VERSION, MAX_CHANGES, MAX_CHARTER_BYTES, MAX_FORK_HEADS, MAX_LICENSE_BYTES,
    MAX_MAINTAINERS, MAX_NAME_BYTES, MAX_PARENTS, MAX_PATCH_BYTES, MAX_PATH_BYTES,
    MAX_RECORD_BYTES, MAX_VALIDATION_BYTES, check_path,
};
use commons_core::{Body, Record};
use commons_net::gossip::{self, Judgement, RejectReason};

/// Decodes `data` as a record in every way the node does and checks that the ways agree, that
/// an accepted record reads back to itself, and that it is within the limits of its kind.
pub fn record(data: &[u8]) {
    let stored = Record::decode_stored(data);
    let full = Record::decode(data);
    // `decode` is `decode_stored` and then the signature: it accepts nothing more, and refuses
    // with the same error whatever `decode_stored` refuses.
    match (&stored, &full) {
        (Ok(s), Ok(f)) => assert_eq!(s, f, "decode and decode_stored disagree"),
        (Err(s), Err(f)) => assert_eq!(s, f, "decode and decode_stored refuse differently"),
        (Ok(_), Err(_)) => {}
        (Err(e), Ok(_)) => panic!("decode accepts what decode_stored refuses ({e})"),
    }
    if let Ok(r) = &stored {
        check_accepted(data, r);
    }

    // A batch of one answers as `decode` alone.
    let batch = Record::decode_batch(&[data]);
    assert_eq!(batch.len(), 1, "decode_batch answers once per input");
    assert_eq!(batch[0], full, "decode_batch disagrees with decode");

    // The gossip verdict: accepted exactly when `decode` accepts, as the same record.
    let judged = gossip::judge(data);
    match (&judged, &full) {
        (Judgement::Accept(r), Ok(f)) => assert_eq!(**r, *f, "judge accepts another record"),
        (Judgement::Accept(_), Err(e)) => panic!("judge accepts what decode refuses ({e})"),
        (Judgement::Reject(RejectReason::TooLarge { len }), _) => {
            assert!(*len > MAX_RECORD_BYTES && *len == data.len());
            assert!(full.is_err(), "decode accepts an oversized record");
        }
        (Judgement::Reject(RejectReason::WrongTopic { .. }), _) => {
            panic!("judge alone knows no topic")
        }
        (_, Ok(_)) => panic!("judge refuses a record that decodes"),
        _ => {}
    }
    let batch = gossip::judge_batch(&[data]);
    assert_eq!(batch.len(), 1, "judge_batch answers once per input");
    assert_eq!(
        batch[0].acceptance(),
        judged.acceptance(),
        "judge_batch disagrees with judge"
    );
    if let (Judgement::Accept(a), Judgement::Accept(b)) = (&batch[0], &judged) {
        assert_eq!(a, b);
    }
}

/// What holds of every record the decoder accepts.
fn check_accepted(data: &[u8], r: &Record) {
    // The record keeps exactly the bytes it came from, and they read back to the same record.
    assert_eq!(r.bytes(), data, "a record keeps its exact bytes");
    assert_eq!(
        Record::decode_stored(r.bytes()).as_ref(),
        Ok(r),
        "round trip"
    );
    assert_eq!(data[0], FORMAT_VERSION);
    assert_eq!(data[1], r.kind() as u8);
    assert_eq!(
        gossip::record_id_of_bytes(data),
        Some(r.id()),
        "the gossip message id is the record id"
    );
    let max = match r.body() {
        Body::Charter(c) => {
            assert!(!c.name.trim().is_empty() && c.name.len() <= MAX_NAME_BYTES);
            assert!(!c.license.trim().is_empty() && c.license.len() <= MAX_LICENSE_BYTES);
            assert!(c.summary.len() <= MAX_CHARTER_BYTES / 2);
            assert!(c.maintainers.len() <= MAX_MAINTAINERS);
            assert!(c.maintainers.windows(2).all(|w| w[0] < w[1]));
            assert!(c.threshold >= 1 && usize::from(c.threshold) <= c.maintainers.len());
            if let Some(fork) = &c.fork {
                assert!(fork.heads.len() <= MAX_FORK_HEADS);
                assert!(fork.heads.windows(2).all(|w| w[0] < w[1]));
                assert!(fork.excluded.len() <= MAX_CHANGES);
                assert!(fork.excluded.windows(2).all(|w| w[0] < w[1]));
            }
            MAX_CHARTER_BYTES
        }
        Body::Patch(p) => {
            assert!(!p.message.trim().is_empty() && p.message.len() <= MAX_PATCH_BYTES / 2);
            assert!(p.parents.len() <= MAX_PARENTS);
            assert!(p.parents.windows(2).all(|w| w[0] < w[1]));
            assert!(!p.changes.is_empty() && p.changes.len() <= MAX_CHANGES);
            assert!(p.changes.windows(2).all(|w| w[0].path < w[1].path));
            for c in &p.changes {
                assert!(c.path.len() <= MAX_PATH_BYTES && check_path(&c.path).is_ok());
                assert_ne!(c.before, c.after, "a change changes something");
            }
            MAX_PATCH_BYTES
        }
        Body::Validation(v) => {
            assert!(v.note.len() <= MAX_VALIDATION_BYTES / 2);
            MAX_VALIDATION_BYTES
        }
    };
    assert!(data.len() <= max && max <= MAX_RECORD_BYTES, "size limit");
}
