//! Bulk blob transfer: ranges of large blobs over a separate, plain TCP connection.
//!
//! Inside libp2p every byte is encrypted (noise, ChaCha20-Poly1305), cut into yamux frames and
//! copied several times on each side; for a large blob that costs more CPU than the copy itself.
//! Blob bytes need integrity, not secrecy: a commons is public, and the receiver checks every
//! 16 KiB group against the blob's outboard (itself fetched over libp2p and checked against the
//! blob's hash) before it writes it. So large blobs may travel here instead:
//!
//! 1. The receiver asks the peer for a ticket over libp2p (`SyncRequest::OpenBulk`); the peer
//!    answers `BulkTicket { port, token }` (32 random bytes, one connection, valid
//!    [`TICKET_TTL`]) or `NotFound` if it does not serve bulk transfers.
//! 2. The receiver connects to that port at the IP address of its libp2p connection to the peer
//!    and sends the token. A connection whose token is unknown or expired is closed.
//! 3. Requests and answers then follow each other on the connection, in order; the receiver
//!    may send several requests before reading the answers (a pipeline).
//!
//! ```text
//! request  hash [u8; 32] ‖ offset u64 LE ‖ len u32 LE          (len in 1..=1 MiB)
//! answer   status u8 ‖ total_len u64 LE ‖ n u32 LE ‖ n bytes   (status 0 = found, 1 = not found;
//!          n = min(len, total_len − offset); not found: total_len = n = 0, no bytes)
//! ```
//!
//! The server sends the bytes with `sendfile` (no user-space copy) from a thread per
//! connection. Anything unexpected on either side closes the connection: a request of length 0
//! or over 1 MiB costs the sender a strike; an answer of the wrong length ends the link and the
//! receiver goes back to libp2p for that peer. Bytes that fail verification are not a strike
//! (anyone on the path could have changed them: the connection is not authenticated); the
//! receiver stops using bulk transfers with that peer, and what the peer then sends over libp2p
//! is judged as usual.
//!
//! What an observer of the network learns: the bytes of the blobs sent, and so which blobs are
//! fetched. A node that must not show that turns bulk transfers off (`bulk = false` in its
//! configuration): it then neither serves nor uses them.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use commons_core::BlobHash;
use libp2p::PeerId;
use libp2p::multiaddr::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::handle::{BlobChunk, NetHandle};
use crate::wire::{self, MAX_BLOB_CHUNK};

/// Bytes of a ticket's token.
pub const TOKEN_BYTES: usize = 32;
/// How long a ticket may wait before its connection is opened.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Tickets waiting at once; more requests are answered `NotFound` until some are used.
pub const MAX_TICKETS: usize = 256;
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

const REQUEST_BYTES: usize = 32 + 8 + 4;
const HEADER_BYTES: usize = 1 + 8 + 4;
const FOUND: u8 = 0;
const NOT_FOUND: u8 = 1;

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

/// The serving side: the listening port, the tickets waiting and the connections open.
#[derive(Debug)]
pub struct BulkServer {
    port: u16,
    state: Mutex<ServerState>,
}

#[derive(Debug, Default)]
struct ServerState {
    tickets: HashMap<[u8; TOKEN_BYTES], (PeerId, Instant)>,
    connections: HashMap<PeerId, usize>,
}

impl ServerState {
    fn open_connections(&self) -> usize {
        self.connections.values().sum()
    }
}

impl BulkServer {
    /// Binds the bulk port (`addr`'s port 0: chosen by the OS).
    pub async fn bind(addr: SocketAddr) -> io::Result<(Arc<BulkServer>, TcpListener)> {
        let listener = TcpListener::bind(addr).await?;
        let server = BulkServer {
            port: listener.local_addr()?.port(),
            state: Mutex::new(ServerState::default()),
        };
        Ok((Arc::new(server), listener))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ServerState> {
        // Plain maps: usable after a panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ticket for `peer`: a fresh random token, or `None` when [`MAX_TICKETS`] are waiting or
    /// the system has no randomness to give.
    pub fn issue(&self, peer: PeerId) -> Option<[u8; TOKEN_BYTES]> {
        let mut token = [0u8; TOKEN_BYTES];
        getrandom::getrandom(&mut token).ok()?;
        let mut state = self.state();
        let now = Instant::now();
        state
            .tickets
            .retain(|_, (_, issued)| now.duration_since(*issued) < TICKET_TTL);
        if state.tickets.len() >= MAX_TICKETS {
            return None;
        }
        state.tickets.insert(token, (peer, now));
        Some(token)
    }

    /// Takes the ticket of `token` and counts a connection for its peer, if the ticket is valid
    /// and the limits allow.
    fn admit(&self, token: &[u8; TOKEN_BYTES]) -> Option<PeerId> {
        let mut state = self.state();
        let (peer, issued) = state.tickets.remove(token)?;
        if issued.elapsed() >= TICKET_TTL
            || state.open_connections() >= MAX_CONNECTIONS
            || state.connections.get(&peer).copied().unwrap_or(0) >= MAX_CONNECTIONS_PER_PEER
        {
            return None;
        }
        *state.connections.entry(peer).or_default() += 1;
        Some(peer)
    }

    fn release(&self, peer: &PeerId) {
        let mut state = self.state();
        if let Some(n) = state.connections.get_mut(peer) {
            *n -= 1;
            if *n == 0 {
                state.connections.remove(peer);
            }
        }
    }

    /// Accepts connections until the listener fails, serving each from `source` on a thread of
    /// its own; a peer that breaks the protocol is reported to `net`.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        source: Arc<dyn BlobSource>,
        net: NetHandle,
    ) {
        loop {
            let (stream, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(target: "commons_net::bulk", error = %e, "cannot accept a bulk connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (server, source, net) = (self.clone(), source.clone(), net.clone());
            tokio::spawn(async move {
                if let Err(e) = server.connection(stream, source, net).await {
                    tracing::debug!(target: "commons_net::bulk", %remote, error = %e, "bulk connection ended");
                }
            });
        }
    }

    async fn connection(
        self: Arc<Self>,
        mut stream: TcpStream,
        source: Arc<dyn BlobSource>,
        net: NetHandle,
    ) -> io::Result<()> {
        let mut token = [0u8; TOKEN_BYTES];
        tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut token))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no token in time"))??;
        let Some(peer) = self.admit(&token) else {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "unknown or expired token, or too many connections",
            ));
        };
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        let server = self.clone();
        let ended = tokio::task::spawn_blocking(move || {
            let ended = serve(stream, source.as_ref());
            server.release(&peer);
            ended
        })
        .await
        .map_err(io::Error::other)?;
        match ended {
            Ok(()) => Ok(()),
            Err(Ended::Violation(reason)) => {
                tracing::warn!(target: "commons_net::bulk", %peer, reason, "bulk request breaks the protocol");
                let _ = net.report_bad_peer(peer, reason).await;
                Ok(())
            }
            Err(Ended::Io(e)) => Err(e),
        }
    }
}

/// Why a served connection ended early.
enum Ended {
    Violation(&'static str),
    Io(io::Error),
}

impl From<io::Error> for Ended {
    fn from(e: io::Error) -> Ended {
        Ended::Io(e)
    }
}

/// Answers the requests of one connection, in order, until the peer closes it or is idle for
/// [`IDLE_TIMEOUT`].
fn serve(mut stream: std::net::TcpStream, source: &dyn BlobSource) -> Result<(), Ended> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    stream.set_nodelay(true)?;
    // Consecutive requests are mostly for the same blob: keep it open.
    let mut open: Option<(BlobHash, BlobRange)> = None;
    let mut request = [0u8; REQUEST_BYTES];
    loop {
        match read_request(&mut stream, &mut request) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        let (hash, offset, len) = decode_request(&request);
        if len == 0 || len > MAX_BLOB_CHUNK {
            return Err(Ended::Violation("bulk request length not in 1..=1 MiB"));
        }
        if open.as_ref().is_none_or(|(h, _)| *h != hash) {
            open = source.open(&hash).map(|blob| (hash, blob));
        }
        let Some((_, blob)) = &open else {
            stream.write_all(&encode_header(NOT_FOUND, 0, 0))?;
            continue;
        };
        let n = blob.len.saturating_sub(offset).min(u64::from(len));
        stream.write_all(&encode_header(FOUND, blob.len, n as u32))?;
        let mut at = blob.start + offset;
        let mut left = n as usize;
        while left > 0 {
            let sent = rustix::fs::sendfile(&stream, blob.file.as_ref(), Some(&mut at), left)
                .map_err(io::Error::from)?;
            if sent == 0 {
                // The file is shorter than the store says: end the connection, the receiver
                // sees a short answer and asks elsewhere.
                return Err(
                    io::Error::new(io::ErrorKind::UnexpectedEof, "blob file is short").into(),
                );
            }
            left -= sent;
        }
    }
}

/// Reads one request; `false` at a clean end of the stream (before its first byte).
fn read_request(
    stream: &mut std::net::TcpStream,
    buf: &mut [u8; REQUEST_BYTES],
) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn encode_request(hash: &BlobHash, offset: u64, len: u32) -> [u8; REQUEST_BYTES] {
    let mut out = [0u8; REQUEST_BYTES];
    out[..32].copy_from_slice(&hash.0);
    out[32..40].copy_from_slice(&offset.to_le_bytes());
    out[40..].copy_from_slice(&len.to_le_bytes());
    out
}

fn decode_request(buf: &[u8; REQUEST_BYTES]) -> (BlobHash, u64, u32) {
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

fn encode_header(status: u8, total_len: u64, n: u32) -> [u8; HEADER_BYTES] {
    let mut out = [0u8; HEADER_BYTES];
    out[0] = status;
    out[1..9].copy_from_slice(&total_len.to_le_bytes());
    out[9..].copy_from_slice(&n.to_le_bytes());
    out
}

/// The receiving side: one connection to a peer's bulk port, requests pipelined on it. Cheap
/// to clone; the connection closes when every clone is dropped, after [`IDLE_TIMEOUT`] without
/// a request, or at the first failure.
#[derive(Debug, Clone)]
pub struct BulkLink {
    requests: mpsc::Sender<Pending>,
}

#[derive(Debug)]
struct Pending {
    hash: BlobHash,
    offset: u64,
    len: u32,
    reply: oneshot::Sender<Result<BlobChunk, BulkError>>,
}

impl BulkLink {
    /// Connects to a bulk port and presents `token`.
    pub async fn connect(
        addr: SocketAddr,
        token: [u8; TOKEN_BYTES],
    ) -> Result<BulkLink, BulkError> {
        let mut stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| BulkError::Timeout)??;
        stream.set_nodelay(true)?;
        stream.write_all(&token).await?;
        let (requests, rx) = mpsc::channel(PIPELINE);
        tokio::spawn(drive(stream, rx));
        Ok(BulkLink { requests })
    }

    /// Whether the link has ended (nothing more can be asked on it).
    pub fn is_closed(&self) -> bool {
        self.requests.is_closed()
    }

    /// `len` (1 to 1 MiB) bytes of blob `hash` from `offset`, with the blob's length. Only the
    /// lengths are checked here; the caller verifies the bytes.
    pub async fn get(&self, hash: BlobHash, offset: u64, len: u32) -> Result<BlobChunk, BulkError> {
        if len == 0 || len > MAX_BLOB_CHUNK {
            return Err(BulkError::Protocol("request length not in 1..=1 MiB"));
        }
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            hash,
            offset,
            len,
            reply,
        };
        self.requests
            .send(pending)
            .await
            .map_err(|_| BulkError::Closed)?;
        answer.await.map_err(|_| BulkError::Closed)?
    }
}

/// Runs one link: sends requests as they come, reads the answers in the same order. The first
/// failure fails that request and ends the link (the requests behind it fail as `Closed`).
async fn drive(stream: TcpStream, mut requests: mpsc::Receiver<Pending>) {
    let (mut rd, mut wr) = stream.into_split();
    let (sent_tx, mut sent) = mpsc::unbounded_channel::<Pending>();
    let writer = async move {
        loop {
            let next = match tokio::time::timeout(IDLE_TIMEOUT, requests.recv()).await {
                Ok(Some(p)) => p,
                Ok(None) | Err(_) => break,
            };
            if let Err(e) = wr
                .write_all(&encode_request(&next.hash, next.offset, next.len))
                .await
            {
                let _ = next.reply.send(Err(e.into()));
                break;
            }
            if sent_tx.send(next).is_err() {
                break;
            }
        }
    };
    let reader = async move {
        while let Some(p) = sent.recv().await {
            let answer = match tokio::time::timeout(ANSWER_TIMEOUT, read_answer(&mut rd, &p)).await
            {
                Ok(a) => a,
                Err(_) => Err(BulkError::Timeout),
            };
            let fatal = matches!(answer, Err(ref e) if !matches!(e, BulkError::NotFound));
            let _ = p.reply.send(answer);
            if fatal {
                break;
            }
        }
    };
    tokio::pin!(writer, reader);
    tokio::select! {
        // The reader failed: drop the writer (and the request queue with it).
        () = &mut reader => {}
        // Idle, or every handle dropped: answer what was sent, then close.
        () = &mut writer => reader.await,
    }
}

async fn read_answer(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    p: &Pending,
) -> Result<BlobChunk, BulkError> {
    let mut header = [0u8; HEADER_BYTES];
    rd.read_exact(&mut header).await?;
    let mut total = [0u8; 8];
    total.copy_from_slice(&header[1..9]);
    let mut n = [0u8; 4];
    n.copy_from_slice(&header[9..]);
    let (total_len, n) = (u64::from_le_bytes(total), u32::from_le_bytes(n));
    match header[0] {
        FOUND => {}
        NOT_FOUND if total_len == 0 && n == 0 => return Err(BulkError::NotFound),
        _ => return Err(BulkError::Protocol("unknown answer status")),
    }
    let expected = total_len.saturating_sub(p.offset).min(u64::from(p.len));
    if u64::from(n) != expected {
        return Err(BulkError::Protocol("answer of the wrong length"));
    }
    let mut bytes = wire::chunk_buffer(n as usize);
    rd.read_exact(&mut bytes).await?;
    Ok(BlobChunk { total_len, bytes })
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
    /// Opens a bulk link to `peer`: asks it for a ticket over libp2p and connects to its bulk
    /// port at the IP address of the libp2p connection.
    pub async fn bulk_link(&self, peer: PeerId) -> Result<BulkLink, BulkError> {
        let (port, token) = match self.open_bulk(peer).await {
            Ok(ticket) => ticket,
            Err(crate::FetchError::NotFound { .. }) => return Err(BulkError::Unavailable),
            Err(e) => return Err(e.into()),
        };
        let peers = self.peers().await.map_err(|_| BulkError::Closed)?;
        let ip = peers
            .iter()
            .find(|p| p.peer_id == peer)
            .and_then(|p| p.addrs.iter().find_map(ip_of))
            .ok_or(BulkError::NoAddress)?;
        BulkLink::connect(SocketAddr::new(ip, port), token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files(HashMap<BlobHash, Arc<File>>);

    impl BlobSource for Files {
        fn open(&self, hash: &BlobHash) -> Option<BlobRange> {
            let file = self.0.get(hash)?.clone();
            let len = file.metadata().ok()?.len();
            Some(BlobRange {
                file,
                start: 0,
                len,
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ranges_come_back_in_order_and_bad_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let path = dir.path().join("blob");
        std::fs::write(&path, &bytes).unwrap();
        let hash = BlobHash(*blake3::hash(&bytes).as_bytes());
        let source = Arc::new(Files(HashMap::from([(
            hash,
            Arc::new(File::open(&path).unwrap()),
        )])));
        let (net, _events, _task) = crate::spawn(crate::NetConfig::new([7u8; 32])).unwrap();
        let (server, listener) = BulkServer::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], server.port()));
        tokio::spawn(server.clone().run(listener, source, net));
        let peer = PeerId::random();

        // A made-up token: the connection is closed at once.
        let bogus = BulkLink::connect(addr, [9; TOKEN_BYTES]).await.unwrap();
        assert!(bogus.get(hash, 0, 1024).await.is_err());

        let link = BulkLink::connect(addr, server.issue(peer).unwrap())
            .await
            .unwrap();
        let asks: Vec<_> = (0..3u64)
            .map(|i| link.get(hash, i * u64::from(MAX_BLOB_CHUNK), MAX_BLOB_CHUNK))
            .collect();
        let mut got = Vec::new();
        for chunk in futures::future::join_all(asks).await {
            let chunk = chunk.unwrap();
            assert_eq!(chunk.total_len, bytes.len() as u64);
            got.extend_from_slice(&chunk.bytes);
        }
        assert_eq!(got, bytes);
        // Not found keeps the link; past the end is an empty answer.
        assert!(matches!(
            link.get(BlobHash([0; 32]), 0, 10).await,
            Err(BulkError::NotFound)
        ));
        let end = link.get(hash, bytes.len() as u64, 10).await.unwrap();
        assert!(end.bytes.is_empty());
        // A ticket opens one connection only.
        let token = server.issue(peer).unwrap();
        let first = BulkLink::connect(addr, token).await.unwrap();
        assert_eq!(first.get(hash, 5, 5).await.unwrap().bytes, bytes[5..10]);
        let again = BulkLink::connect(addr, token).await.unwrap();
        assert!(again.get(hash, 5, 5).await.is_err());

        // A request of length 0 breaks the protocol: the server closes the connection.
        let mut raw = TcpStream::connect(addr).await.unwrap();
        raw.write_all(&server.issue(peer).unwrap()).await.unwrap();
        raw.write_all(&encode_request(&hash, 0, 0)).await.unwrap();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut rest));
        assert!(closed.await.is_ok_and(|r| r.is_ok()), "closed");
        assert!(rest.is_empty(), "no answer to a bad request");
    }
}
