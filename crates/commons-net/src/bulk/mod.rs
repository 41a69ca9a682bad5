//! Bulk blob transfer: ranges of large blobs over a separate TCP connection, sealed with a key
//! agreed inside libp2p.
//!
//! Inside libp2p every byte is encrypted (noise, ChaCha20-Poly1305), cut into yamux frames and
//! copied several times on each side; for a large blob that costs more CPU than the copy itself.
//! So large blobs may travel here instead, in frames of up to 1 MiB sealed with AES-256-GCM
//! (hardware-accelerated; `seal.rs`):
//!
//! 1. The receiver asks the peer for a ticket over libp2p (`SyncRequest::OpenBulk`); the peer
//!    answers `BulkTicket { port, token, key }`: 32 random bytes that open one connection within
//!    [`TICKET_TTL`], and a fresh 32-byte key (only inside the libp2p connection, so only the two
//!    peers know it). `NotFound` if it does not serve bulk transfers or has no ticket to spare.
//! 2. The receiver connects to that port at the IP address of its libp2p connection to the peer
//!    and sends the token. A connection whose token is unknown, used or expired is closed.
//! 3. Requests and answers then follow each other on the connection, in order; the receiver
//!    may send several requests before reading the answers (a pipeline). Each message is sealed
//!    with the key of its direction and the next nonce (`seal.rs`), its 16-byte tag after it:
//!
//! ```text
//! request  seal(hash [u8; 32] ‖ offset u64 LE ‖ len u32 LE) ‖ tag      (len in 1..=1 MiB)
//! answer   seal(status u8 ‖ total_len u64 LE ‖ n u32 LE) ‖ tag
//!          then, if n > 0: seal(n bytes) ‖ tag
//!          (status 0 = found, 1 = not found; n = min(len, total_len − offset);
//!           not found: total_len = n = 0, no bytes)
//! ```
//!
//! An observer of the network sees the sizes of the messages, not which blobs are asked for nor
//! their bytes. A message that does not open ends the connection without a strike (anyone on
//! the path can send bytes); an opened request of length 0 or over 1 MiB is the peer's own and
//! costs it a strike, and so do bytes that open but fail verification against the blob's
//! outboard (the receiver's side, `commons_node::blobs`).
//!
//! **Clear text**, only where both sides ask for it (`bulk_clear = true` in the configuration of
//! each): the ticket then has no key, the same messages travel without seal or tag, and the
//! server sends the bytes with `sendfile` (no user-space copy). Bytes that fail verification
//! then cost no strike (they travelled unauthenticated).
//!
//! **Bounds.** Connections waiting for their token are capped in all and per source address,
//! the oldest closed first (`admission.rs`); tickets are capped in all and per peer;
//! connections served are capped in all and per peer, one thread each; every peer-supplied
//! offset and length is checked; a banned or blocked peer's connections are closed at once
//! ([`BulkServer::close_peer`]).

use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use commons_core::BlobHash;
use libp2p::PeerId;
use libp2p::multiaddr::Protocol;

use crate::handle::NetHandle;

pub mod admission;
mod link;
pub mod seal;
mod server;

pub use link::BulkLink;
pub use seal::KEY_BYTES;
pub use server::{BulkCounts, BulkServer};

/// Bytes of a ticket's token.
pub const TOKEN_BYTES: usize = 32;
/// How long a ticket may wait before its connection is opened.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Tickets waiting at once; more requests are answered `NotFound` until some are used.
pub const MAX_TICKETS: usize = 256;
/// Tickets waiting at once for one peer.
pub const MAX_TICKETS_PER_PEER: usize = 8;
/// Bulk connections served at once, all peers together (one thread each).
pub const MAX_CONNECTIONS: usize = 64;
/// Bulk connections served at once to one peer.
pub const MAX_CONNECTIONS_PER_PEER: usize = 4;
/// How long the token may take to arrive once connected.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no request for this long is closed (by either side).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for one answer (or for the server, to send one).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests one link sends before reading their answers.
pub const PIPELINE: usize = 16;

/// Bytes of a request before its seal.
pub const REQUEST_BYTES: usize = 32 + 8 + 4;
/// Bytes of an answer's header before its seal.
pub const HEADER_BYTES: usize = 1 + 8 + 4;
const FOUND: u8 = 0;
const NOT_FOUND: u8 = 1;

/// What opens one bulk connection: given over libp2p in answer to `OpenBulk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// The bulk port.
    pub port: u16,
    /// Presented first on the connection.
    pub token: [u8; TOKEN_BYTES],
    /// The key the connection is sealed with; `None` for clear text.
    pub key: Option<[u8; KEY_BYTES]>,
}

/// Why a bulk transfer could not be used or failed.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    /// The peer does not serve bulk transfers (or has no ticket to spare).
    #[error("the peer does not serve bulk transfers")]
    Unavailable,
    /// No IP address is known for the peer's libp2p connection.
    #[error("no IP address is known for the peer")]
    NoAddress,
    /// Asking for the ticket failed.
    #[error("cannot get a bulk ticket: {0}")]
    Ticket(#[from] crate::FetchError),
    /// The connection failed.
    #[error("bulk connection: {0}")]
    Io(#[from] io::Error),
    /// The peer took too long.
    #[error("bulk connection timed out")]
    Timeout,
    /// The peer answered outside the protocol.
    #[error("bulk answer breaks the protocol: {0}")]
    Protocol(&'static str),
    /// The peer does not have the blob.
    #[error("the peer does not have the blob")]
    NotFound,
    /// The link is closed (an earlier failure, or idle).
    #[error("the bulk link is closed")]
    Closed,
}

/// Where the server finds what it serves: a blob's bytes as a range of an open file.
#[derive(Debug, Clone)]
pub struct BlobRange {
    /// The file holding the blob.
    pub file: Arc<File>,
    /// Where the blob starts in it.
    pub start: u64,
    /// The blob's length.
    pub len: u64,
}

/// The store side of the server.
pub trait BlobSource: Send + Sync + 'static {
    /// The blob's bytes, if it is stored.
    fn open(&self, hash: &BlobHash) -> Option<BlobRange>;
}

/// A request before its seal.
pub fn encode_request(hash: &BlobHash, offset: u64, len: u32) -> [u8; REQUEST_BYTES] {
    let mut out = [0u8; REQUEST_BYTES];
    out[..32].copy_from_slice(&hash.0);
    out[32..40].copy_from_slice(&offset.to_le_bytes());
    out[40..].copy_from_slice(&len.to_le_bytes());
    out
}

/// The fields of a request: (hash, offset, len).
pub fn decode_request(buf: &[u8; REQUEST_BYTES]) -> (BlobHash, u64, u32) {
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&buf[..32]);
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&buf[32..40]);
    let mut len = [0u8; 4];
    len.copy_from_slice(&buf[40..]);
    (
        BlobHash(hash),
        u64::from_le_bytes(offset),
        u32::from_le_bytes(len),
    )
}

/// An answer's header before its seal.
pub fn encode_header(status: u8, total_len: u64, n: u32) -> [u8; HEADER_BYTES] {
    let mut out = [0u8; HEADER_BYTES];
    out[0] = status;
    out[1..9].copy_from_slice(&total_len.to_le_bytes());
    out[9..].copy_from_slice(&n.to_le_bytes());
    out
}

/// The fields of an answer's header: (status, total_len, n).
pub fn decode_header(buf: &[u8; HEADER_BYTES]) -> (u8, u64, u32) {
    let mut total = [0u8; 8];
    total.copy_from_slice(&buf[1..9]);
    let mut n = [0u8; 4];
    n.copy_from_slice(&buf[9..]);
    (buf[0], u64::from_le_bytes(total), u32::from_le_bytes(n))
}

/// What the server does with one opened request, decided without I/O (fuzzed: every field is
/// the peer's choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Answer "not found".
    NotFound,
    /// Answer "found" with `n` bytes read from file position `at`.
    Send {
        /// Length of the whole blob.
        total_len: u64,
        /// Where the bytes start in the file.
        at: u64,
        /// How many.
        n: u32,
    },
}

/// Plans the answer to a request (hash, offset, len) for a blob found at `(start, len)` of its
/// file, or not found. `Err` (a strike) for a length of 0 or over 1 MiB. Every peer-chosen
/// number is checked: an offset past the end gets an empty answer, and the file position cannot
/// overflow.
pub fn plan(request: &[u8; REQUEST_BYTES], blob: Option<(u64, u64)>) -> Result<Plan, &'static str> {
    let (_, offset, len) = decode_request(request);
    if len == 0 || len > crate::wire::MAX_BLOB_CHUNK {
        return Err("bulk request length not in 1..=1 MiB");
    }
    let Some((start, total_len)) = blob else {
        return Ok(Plan::NotFound);
    };
    let n = total_len.saturating_sub(offset).min(u64::from(len));
    let at = match n {
        0 => 0,
        _ => start
            .checked_add(offset)
            .filter(|at| at.checked_add(n).is_some())
            .ok_or("blob range past u64")?,
    };
    Ok(Plan::Send {
        total_len,
        at,
        n: n as u32,
    })
}

/// Checks an answer's header against the request it answers (`offset`, `len`): the blob's
/// length and the number of bytes that follow (`None`: not found), or why the answer breaks the
/// protocol.
pub fn check_answer(
    header: &[u8; HEADER_BYTES],
    offset: u64,
    len: u32,
) -> Result<Option<(u64, u32)>, &'static str> {
    let (status, total_len, n) = decode_header(header);
    match status {
        FOUND => {}
        NOT_FOUND if total_len == 0 && n == 0 => return Ok(None),
        _ => return Err("unknown answer status"),
    }
    let expected = total_len.saturating_sub(offset).min(u64::from(len));
    if u64::from(n) != expected {
        return Err("answer of the wrong length");
    }
    Ok(Some((total_len, n)))
}

/// The IP address of a multiaddr's first `/ip4` or `/ip6` component.
pub fn ip_of(addr: &libp2p::Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl NetHandle {
    /// Opens a bulk link to `peer`: asks it for a ticket over libp2p (a clear-text one if
    /// `clear`) and connects to its bulk port at the IP address of the libp2p connection. A peer
    /// that answers a request for a sealed ticket with a clear one is struck.
    pub async fn bulk_link(&self, peer: PeerId, clear: bool) -> Result<BulkLink, BulkError> {
        let ticket = match self.open_bulk(peer, clear).await {
            Ok(ticket) => ticket,
            Err(crate::FetchError::NotFound { .. }) => return Err(BulkError::Unavailable),
            Err(e) => return Err(e.into()),
        };
        if !clear && ticket.key.is_none() {
            let reason = "gave a clear-text bulk ticket when asked for a sealed one";
            let _ = self.report_bad_peer(peer, reason).await;
            return Err(BulkError::Protocol(reason));
        }
        let peers = self.peers().await.map_err(|_| BulkError::Closed)?;
        let ip = peers
            .iter()
            .find(|p| p.peer_id == peer)
            .and_then(|p| p.addrs.iter().find_map(ip_of))
            .ok_or(BulkError::NoAddress)?;
        BulkLink::connect(SocketAddr::new(ip, ticket.port), &ticket).await
    }
}

#[cfg(test)]
mod tests;
