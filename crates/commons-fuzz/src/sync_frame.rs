//! Target `sync_frame`: the messages of `/commons/sync/2` ([`wire::decode`] with the production
//! caps, then `check`) and the request-response codec that reads them from a stream
//! ([`SyncCodec`], whose response reader has a fast path for blob chunks).

use commons_core::reconcile::{MAX_RANGES, MAX_REQUEST_IDS, MAX_RESPONSE_IDS, MAX_ROUNDS};
use commons_core::record::MAX_RECORD_BYTES;
use commons_core::{BlobHash, LineageId, RecordId};
use commons_net::wire::{
    self, MAX_BLOB_CHUNK, MAX_GET_RECORDS, MAX_LIST_IDS, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES,
    MAX_SMALL_BLOB_BYTES, MAX_SMALL_BLOBS, PROTOCOL, SmallBlob, SyncCodec,
};
use commons_net::{SyncRequest, SyncResponse};
use futures::executor::block_on;
use futures::io::Cursor;
use libp2p::request_response::Codec;

/// Decodes `data` as a request and as a response body, then reads it as a stream through the
/// codec (a length prefix, then the frame), and finally behind a length prefix far over the
/// caps.
pub fn sync_frame(data: &[u8]) {
    if let Ok(req) = wire::decode::<SyncRequest>(data, MAX_REQUEST_BYTES) {
        assert!(data.len() <= MAX_REQUEST_BYTES);
        assert_canonical(&req, data, MAX_REQUEST_BYTES);
        if req.check().is_ok() {
            check_request(&req);
        }
    }
    if let Ok(resp) = wire::decode::<SyncResponse>(data, MAX_RESPONSE_BYTES) {
        assert!(data.len() <= MAX_RESPONSE_BYTES);
        assert_canonical(&resp, data, MAX_RESPONSE_BYTES);
        if resp.check().is_ok() {
            check_response(&resp);
        }
        check_fit(resp);
    }
    codec_request(data);
    codec_response(data);
    over_the_cap(data);
}

/// A decoded message encodes back to exactly the bytes it came from (bincode with fixed-width
/// integers has one encoding per value), and those decode to the same value.
fn assert_canonical<T>(value: &T, data: &[u8], max: usize)
where
    T: bincode::Encode + bincode::Decode<()> + PartialEq + std::fmt::Debug,
{
    let again = wire::encode(value, max).expect("a decoded message encodes within its cap");
    assert_eq!(
        again, data,
        "the encoding of a decoded message is its bytes"
    );
    let back: T = wire::decode(&again, max).expect("re-encoded message decodes");
    assert_eq!(&back, value, "round trip");
}

/// The bounds a checked request respects (restated from the protocol's documentation).
fn check_request(req: &SyncRequest) {
    match req {
        SyncRequest::GetRecords { ids } => assert!((1..=MAX_GET_RECORDS).contains(&ids.len())),
        SyncRequest::ListIds { limit, .. } => assert!(*limit >= 1),
        SyncRequest::GetBlob { len, .. } | SyncRequest::GetOutboard { len, .. } => {
            assert!((1..=MAX_BLOB_CHUNK).contains(len))
        }
        SyncRequest::Reconcile { round, message, .. } => {
            assert!(*round < MAX_ROUNDS);
            assert!(message.ranges.len() <= MAX_RANGES);
            assert!(message.id_count() <= MAX_REQUEST_IDS);
        }
        SyncRequest::GetSmallBlobs { hashes } => {
            assert!((1..=MAX_SMALL_BLOBS).contains(&hashes.len()))
        }
        SyncRequest::OpenBulk { .. } => {}
    }
}

/// The bounds a checked response respects.
fn check_response(resp: &SyncResponse) {
    match resp {
        SyncResponse::Records(rs) => {
            assert!(rs.len() <= MAX_GET_RECORDS);
            assert!(rs.iter().all(|r| r.len() <= MAX_RECORD_BYTES));
        }
        SyncResponse::Ids { ids, .. } => assert!(ids.len() <= MAX_LIST_IDS as usize),
        SyncResponse::Blob { bytes, .. } | SyncResponse::Outboard { bytes, .. } => {
            assert!(bytes.len() <= MAX_BLOB_CHUNK as usize)
        }
        SyncResponse::Reconcile(message) => {
            assert!(message.ranges.len() <= MAX_RANGES);
            assert!(message.id_count() <= MAX_RESPONSE_IDS);
        }
        SyncResponse::SmallBlobs(blobs) => {
            assert!(blobs.len() <= MAX_SMALL_BLOBS);
            for b in blobs {
                match b {
                    SmallBlob::Bytes(b) => assert!(b.len() as u64 <= MAX_SMALL_BLOB_BYTES),
                    SmallBlob::TooLarge(len) => assert!(*len > MAX_SMALL_BLOB_BYTES),
                    SmallBlob::Missing => {}
                }
            }
        }
        SyncResponse::NotFound | SyncResponse::BulkTicket { .. } => {}
    }
}

/// `fit_to` makes any answer of the right kind fit its request and the caps, whatever it held:
/// tried against the largest request of its kind and against the smallest.
fn check_fit(resp: SyncResponse) {
    let hash = BlobHash([0; 32]);
    let requests = |n: usize| -> Option<SyncRequest> {
        Some(match &resp {
            SyncResponse::Records(_) => SyncRequest::GetRecords {
                ids: vec![RecordId([0; 32]); n.min(MAX_GET_RECORDS)],
            },
            SyncResponse::Ids { .. } => SyncRequest::ListIds {
                family: LineageId([0; 32]),
                after: None,
                limit: n as u32,
            },
            SyncResponse::Blob { .. } => SyncRequest::GetBlob {
                hash,
                offset: 0,
                len: n as u32,
            },
            SyncResponse::Outboard { .. } => SyncRequest::GetOutboard {
                hash,
                offset: 0,
                len: n as u32,
            },
            SyncResponse::SmallBlobs(_) => SyncRequest::GetSmallBlobs {
                hashes: vec![hash; n.min(MAX_SMALL_BLOBS)],
            },
            _ => return None,
        })
    };
    for n in [1, MAX_BLOB_CHUNK as usize] {
        let Some(req) = requests(n) else { return };
        let fitted = resp.clone().fit_to(&req);
        assert!(fitted.check().is_ok(), "a fitted answer passes its checks");
        wire::encode(&fitted, MAX_RESPONSE_BYTES).expect("a fitted answer fits the cap");
        match (&fitted, &req) {
            (SyncResponse::Records(rs), SyncRequest::GetRecords { ids }) => {
                assert!(rs.len() <= ids.len())
            }
            (SyncResponse::Ids { ids, .. }, SyncRequest::ListIds { limit, .. }) => {
                assert!(ids.len() <= *limit as usize)
            }
            (SyncResponse::Blob { bytes, .. }, SyncRequest::GetBlob { len, .. })
            | (SyncResponse::Outboard { bytes, .. }, SyncRequest::GetOutboard { len, .. }) => {
                assert!(bytes.len() <= *len as usize)
            }
            (SyncResponse::SmallBlobs(bs), SyncRequest::GetSmallBlobs { hashes }) => {
                assert!(bs.len() <= hashes.len())
            }
            (fitted, req) => panic!("fit_to changed the kind of answer: {fitted:?} to {req:?}"),
        }
    }
}

/// The frame at the start of a stream: `None` if the prefix or the frame is cut short,
/// `Some(Err(len))` if the prefix is over `max`.
fn frame(data: &[u8], max: usize) -> Option<Result<&[u8], usize>> {
    let prefix: [u8; 4] = data.get(..4)?.try_into().ok()?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Some(Err(len));
    }
    data.get(4..4 + len).map(Ok)
}

/// The codec reads a request exactly when the reference (length prefix, `decode`, `check`) does,
/// and writes it back as the same bytes.
fn codec_request(data: &[u8]) {
    codec_agrees(
        "request",
        data,
        MAX_REQUEST_BYTES,
        |bytes| block_on(SyncCodec.read_request(&PROTOCOL, &mut Cursor::new(bytes))),
        |r, out| block_on(SyncCodec.write_request(&PROTOCOL, out, r)),
        |r: &SyncRequest| r.check().is_ok(),
        check_request,
    );
}

/// The codec's response reader (with its direct path for `Blob` and `Outboard`) reads exactly
/// what the reference reads, and writes it back as the same bytes.
fn codec_response(data: &[u8]) {
    codec_agrees(
        "response",
        data,
        MAX_RESPONSE_BYTES,
        |bytes| block_on(SyncCodec.read_response(&PROTOCOL, &mut Cursor::new(bytes))),
        |r, out| block_on(SyncCodec.write_response(&PROTOCOL, out, r)),
        |r: &SyncResponse| r.check().is_ok(),
        check_response,
    );
}

/// `read` accepts `data` exactly when the reference does (a frame within `cap`, `decode`,
/// `valid`), as the same message; `write` then gives back the bytes read, which read again.
fn codec_agrees<T>(
    what: &str,
    data: &[u8],
    cap: usize,
    read: impl Fn(&[u8]) -> std::io::Result<T>,
    write: impl Fn(T, &mut Vec<u8>) -> std::io::Result<()>,
    valid: impl Fn(&T) -> bool,
    check: fn(&T),
) where
    T: bincode::Decode<()> + PartialEq + Clone + std::fmt::Debug,
{
    let got = read(data);
    let expected = match frame(data, cap) {
        Some(Ok(f)) => wire::decode::<T>(f, cap)
            .ok()
            .filter(|m| valid(m))
            .map(|m| (m, f.len())),
        _ => None,
    };
    match (got, expected) {
        (Ok(got), Some((expected, len))) => {
            assert_eq!(got, expected, "the codec reads another {what}");
            check(&got);
            let mut written = Vec::new();
            write(got.clone(), &mut written).expect("a message read writes");
            assert_eq!(written, data[..4 + len], "written as read");
            assert_eq!(
                read(&written).ok(),
                Some(got),
                "round trip through the codec"
            );
        }
        (Err(_), None) => {}
        (Ok(got), None) => panic!("the codec reads a {what} the reference refuses: {got:?}"),
        (Err(e), Some((m, _))) => panic!("the codec refuses a valid {what} {m:?}: {e}"),
    }
}

/// A length prefix far over either cap (2 GiB and more), followed by the input: refused
/// before anything is allocated (libFuzzer's `-malloc_limit_mb` catches an allocation of it).
fn over_the_cap(data: &[u8]) {
    let low = data.first().copied().unwrap_or(0);
    let len = 0x8000_0000u32 | (u32::from(low) << 16);
    let mut stream = len.to_be_bytes().to_vec();
    stream.extend_from_slice(data);
    let req = block_on(SyncCodec.read_request(&PROTOCOL, &mut Cursor::new(&stream)));
    assert!(req.is_err(), "a request frame over the cap is refused");
    let resp = block_on(SyncCodec.read_response(&PROTOCOL, &mut Cursor::new(&stream)));
    assert!(resp.is_err(), "a response frame over the cap is refused");
}
