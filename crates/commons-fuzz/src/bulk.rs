//! Target `bulk`: the bulk port's messages (`commons_net::bulk`): the server's plan for each
//! request (every field the peer's choice, against blobs at any file position), the receiver's
//! check of each answer header, and the opening of sealed messages under a fixed key.
//!
//! Input: a sequence of 64-byte steps (a shorter tail is ignored). Each step is a request
//! (44 bytes), then 8 bytes that place the blob in its file, then 12 bytes read as the blob's
//! length and a pick of what happens. The same bytes are also offered to the seal as messages.

use commons_net::bulk::seal::{Direction, KEY_BYTES, Seal, TAG_BYTES};
use commons_net::bulk::{
    HEADER_BYTES, Plan, REQUEST_BYTES, check_answer, decode_request, encode_header, plan,
};
use commons_net::wire::MAX_BLOB_CHUNK;

const STEP: usize = 64;

fn u64_at(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Runs the bulk checks on `data`.
pub fn bulk(data: &[u8]) {
    for step in data.chunks_exact(STEP) {
        let request: &[u8; REQUEST_BYTES] = step[..REQUEST_BYTES].try_into().expect("44 bytes");
        let start = u64_at(&step[44..52]);
        let len = u64_at(&step[52..60]);
        let found = step[60] & 1 == 0;
        server_plan(request, found.then_some((start, len)));
        receiver_check(step);
    }
    sealed_messages(data);
}

/// The server's plan never panics, never overflows, and never reads outside the blob.
fn server_plan(request: &[u8; REQUEST_BYTES], blob: Option<(u64, u64)>) {
    let (_, offset, asked) = decode_request(request);
    match plan(request, blob) {
        Err(_) => assert!(
            asked == 0 || asked > MAX_BLOB_CHUNK || blob.is_some(),
            "refused a valid request for an absent blob"
        ),
        Ok(Plan::NotFound) => assert!(blob.is_none()),
        Ok(Plan::Send { total_len, at, n }) => {
            let (start, len) = blob.expect("a plan to send needs a blob");
            assert!((1..=MAX_BLOB_CHUNK).contains(&asked));
            assert_eq!(total_len, len);
            assert!(n <= asked, "more than asked");
            assert_eq!(
                u64::from(n),
                len.saturating_sub(offset).min(u64::from(asked))
            );
            if n > 0 {
                assert_eq!(Some(at), start.checked_add(offset));
                let end = at.checked_add(u64::from(n)).expect("checked in plan");
                assert!(end <= start.saturating_add(len), "past the blob's end");
            }
            // The receiver accepts what the server sends for the same request.
            let header = encode_header(0, total_len, n);
            assert_eq!(check_answer(&header, offset, asked), Ok(Some((len, n))));
        }
    }
}

/// The receiver's check of a header it did not choose: only exact lengths pass.
fn receiver_check(step: &[u8]) {
    let header: &[u8; HEADER_BYTES] = step[..HEADER_BYTES].try_into().expect("13 bytes");
    let offset = u64_at(&step[44..52]);
    let asked =
        u32::from_le_bytes(step[60..64].try_into().expect("4 bytes")) % (MAX_BLOB_CHUNK + 1);
    match check_answer(header, offset, asked) {
        Ok(Some((total_len, n))) => {
            assert_eq!(header[0], 0, "accepted a status other than found");
            assert_eq!(
                u64::from(n),
                total_len.saturating_sub(offset).min(u64::from(asked))
            );
        }
        Ok(None) => assert_eq!(header[0], 1),
        Err(_) => {}
    }
}

/// Messages that were not sealed with the key never open (and never panic), however they are
/// cut; a message sealed with it opens once, in order.
fn sealed_messages(data: &[u8]) {
    let key = [42u8; KEY_BYTES];
    let mut opener = Seal::new(&key, Direction::Answer);
    let mut rest = data;
    while rest.len() > TAG_BYTES {
        let n = usize::from(rest[0]).min(rest.len() - 1 - TAG_BYTES);
        let mut body = rest[1..1 + n].to_vec();
        let tag: [u8; TAG_BYTES] = rest[1 + n..1 + n + TAG_BYTES].try_into().expect("tag");
        // Forging a tag is what AES-GCM makes infeasible: an input that opens is a bug.
        assert!(
            opener.open(&mut body, &tag).is_err(),
            "forged message opened"
        );
        rest = &rest[1 + n + TAG_BYTES..];
    }
    let mut sealer = Seal::new(&key, Direction::Answer);
    let mut opener = Seal::new(&key, Direction::Answer);
    let mut body = data.to_vec();
    let tag = sealer.seal(&mut body).expect("seal");
    opener
        .open(&mut body, &tag)
        .expect("a sealed message opens");
    assert_eq!(body, data);
}
