//! Target `control_frame`: the control socket's frames ([`commons_rpc::read_msg`],
//! [`commons_rpc::frame_len`], [`commons_rpc::request_len`]) and the JSON of [`Request`] and
//! [`Response`].

use commons_rpc::{
    FrameError, MAX_FRAME_BYTES, MAX_REQUEST_BYTES, Request, Response, encode_frame, frame_len,
    read_msg, request_len,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Most frames read from one input: each takes at least its 4-byte prefix, so the input bounds
/// them anyway; this keeps a run short.
const MAX_FRAMES: usize = 64;

/// Reads `data` as a stream of request frames and as a stream of response frames (what the
/// daemon and the CLI read), decodes it as one JSON body of each, and puts a length prefix far
/// over the cap in front of it.
pub fn control_frame(data: &[u8]) {
    frames::<Request>(data, same_request);
    frames::<Response>(data, same_response);
    if let Ok(req) = serde_json::from_slice::<Request>(data) {
        json_round_trip(&req, same_request);
    }
    if let Ok(resp) = serde_json::from_slice::<Response>(data) {
        json_round_trip(&resp, same_response);
    }

    // The length prefix alone: accepted exactly up to the cap, the client's (`frame_len`) and
    // the daemon's for requests (`request_len`).
    if let Some(prefix) = data.get(..4).and_then(|p| <[u8; 4]>::try_from(p).ok()) {
        let len = u32::from_be_bytes(prefix) as usize;
        for (got, max) in [
            (frame_len(prefix), MAX_FRAME_BYTES),
            (request_len(prefix), MAX_REQUEST_BYTES),
        ] {
            match got {
                Ok(n) => assert!(n == len && n <= max),
                Err(FrameError::TooLarge(n)) => assert!(n == len && n > max),
                Err(e) => panic!("a length prefix is refused otherwise: {e}"),
            }
        }
    }
    // A prefix far over the cap (2 GiB and more): refused before the body is allocated
    // (libFuzzer's `-malloc_limit_mb` catches an allocation of it).
    let low = data.first().copied().unwrap_or(0);
    let over = 0x8000_0000u32 | (u32::from(low) << 16);
    let mut stream = over.to_be_bytes().to_vec();
    stream.extend_from_slice(data);
    assert!(matches!(
        read_msg::<Request>(&mut stream.as_slice()),
        Err(FrameError::TooLarge(n)) if n == over as usize
    ));
    assert!(matches!(
        read_msg::<Response>(&mut stream.as_slice()),
        Err(FrameError::TooLarge(_))
    ));
}

/// Reads frames until the first error; each message read must round-trip through a frame.
fn frames<T>(data: &[u8], same: fn(&T, &T) -> bool)
where
    T: Serialize + DeserializeOwned + std::fmt::Debug,
{
    let mut r = data;
    for _ in 0..MAX_FRAMES {
        let before = r.len();
        let Ok(msg) = read_msg::<T>(&mut r) else {
            return;
        };
        // A frame took its prefix and a body within the cap.
        let used = before - r.len();
        assert!(used >= 4 && used - 4 <= MAX_FRAME_BYTES);
        let frame = encode_frame(&msg).expect("a message read encodes as a frame");
        let back: T = read_msg(&mut frame.as_slice()).expect("a frame written reads");
        assert!(same(&back, &msg), "frame round trip: {back:?} != {msg:?}");
    }
}

/// A decoded body encodes back to JSON that decodes to the same message.
fn json_round_trip<T>(msg: &T, same: fn(&T, &T) -> bool)
where
    T: Serialize + DeserializeOwned + std::fmt::Debug,
{
    let json = serde_json::to_vec(msg).expect("a decoded message encodes");
    let back: T = serde_json::from_slice(&json).expect("its encoding decodes");
    assert!(same(&back, msg), "JSON round trip: {back:?} != {msg:?}");
}

fn same_request(a: &Request, b: &Request) -> bool {
    a == b
}

/// Responses are equal up to the rounding of peer scores: serde_json (without its
/// `float_roundtrip` feature) may read a float back one unit in the last place away.
fn same_response(a: &Response, b: &Response) -> bool {
    match (a, b) {
        (Response::Peers(x), Response::Peers(y)) => {
            x.len() == y.len()
                && x.iter().zip(y).all(|(p, q)| {
                    p.peer_id == q.peer_id
                        && p.addrs == q.addrs
                        && p.strikes == q.strikes
                        && match (p.score, q.score) {
                            (Some(s), Some(t)) => close(s, t),
                            (s, t) => s == t,
                        }
                })
        }
        _ => a == b,
    }
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= a.abs().max(b.abs()) * 4.0 * f64::EPSILON
}
