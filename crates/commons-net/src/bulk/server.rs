//! The serving side of the bulk port: tickets, the connections waiting for a token, and one
//! thread per admitted connection answering its requests.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use commons_core::BlobHash;
use libp2p::PeerId;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use super::admission::{Admission, MAX_ALIVE};
use super::seal::{self, Direction, KEY_BYTES, Seal, TAG_BYTES};
use super::{
    ANSWER_TIMEOUT, BlobRange, BlobSource, FOUND, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_PEER, MAX_TICKETS, MAX_TICKETS_PER_PEER, NOT_FOUND, Plan, REQUEST_BYTES,
    TICKET_TTL, TOKEN_BYTES, Ticket, decode_request, encode_header, plan,
};
use crate::handle::NetHandle;
use crate::wire::MAX_BLOB_CHUNK;

/// The serving side: the listening port, the tickets waiting and the connections open.
#[derive(Debug)]
pub struct BulkServer {
    port: u16,
    allow_clear: bool,
    state: Mutex<ServerState>,
    /// Woken when a handshake task ends.
    handshake_ended: tokio::sync::Notify,
}

#[derive(Debug)]
struct Issued {
    peer: PeerId,
    at: Instant,
    key: Option<[u8; KEY_BYTES]>,
}

#[derive(Debug, Default)]
struct ServerState {
    tickets: HashMap<[u8; TOKEN_BYTES], Issued>,
    /// Connections admitted, per peer: (id, a handle on the socket to shut it down).
    connections: HashMap<PeerId, Vec<(u64, std::net::TcpStream)>>,
    next_connection: u64,
    /// Handshake tasks alive, evicted ones included until they are dropped (with their
    /// sockets).
    alive: usize,
    /// Connections that have not presented a token yet.
    waiting: Admission,
    handshakes: HashMap<u64, AbortHandle>,
}

impl ServerState {
    fn open_connections(&self) -> usize {
        self.connections.values().map(Vec::len).sum()
    }

    fn end_handshake(&mut self, id: u64) {
        self.waiting.leave(id);
        self.handshakes.remove(&id);
    }
}

/// What the bulk port holds at the moment, for tests and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkCounts {
    /// Tickets issued and not used yet.
    pub tickets: usize,
    /// Connections waiting for their token.
    pub waiting: usize,
    /// Connections admitted and being served.
    pub serving: usize,
}

impl BulkServer {
    /// Binds the bulk port (`addr`'s port 0: chosen by the OS). `allow_clear`: tickets for
    /// clear-text connections are issued to peers that ask for them; otherwise every ticket is
    /// sealed.
    pub async fn bind(
        addr: SocketAddr,
        allow_clear: bool,
    ) -> io::Result<(Arc<BulkServer>, TcpListener)> {
        let listener = TcpListener::bind(addr).await?;
        let server = BulkServer {
            port: listener.local_addr()?.port(),
            allow_clear,
            state: Mutex::new(ServerState::default()),
            handshake_ended: tokio::sync::Notify::new(),
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

    /// What the port holds now.
    pub fn counts(&self) -> BulkCounts {
        let state = self.state();
        BulkCounts {
            tickets: state.tickets.len(),
            waiting: state.waiting.waiting(),
            serving: state.open_connections(),
        }
    }

    /// A ticket for `peer`: a fresh random token and, unless the peer asked for clear text and
    /// this server allows it, a fresh key. `None` when [`MAX_TICKETS`] are waiting, or
    /// [`MAX_TICKETS_PER_PEER`] for this peer, or the system has no randomness to give.
    pub fn issue(&self, peer: PeerId, clear: bool) -> Option<Ticket> {
        let token = seal::fresh_key()?;
        let key = match clear && self.allow_clear {
            true => None,
            false => Some(seal::fresh_key()?),
        };
        let mut state = self.state();
        let now = Instant::now();
        state
            .tickets
            .retain(|_, issued| now.duration_since(issued.at) < TICKET_TTL);
        let of_peer = state.tickets.values().filter(|t| t.peer == peer).count();
        if state.tickets.len() >= MAX_TICKETS || of_peer >= MAX_TICKETS_PER_PEER {
            return None;
        }
        state.tickets.insert(token, Issued { peer, at: now, key });
        Some(Ticket {
            port: self.port,
            token,
            key,
        })
    }

    /// Closes every bulk connection of `peer` and drops its tickets (it was banned or blocked).
    pub fn close_peer(&self, peer: &PeerId) {
        let mut state = self.state();
        state.tickets.retain(|_, t| t.peer != *peer);
        for (_, stream) in state.connections.get(peer).into_iter().flatten() {
            // The serving thread's next read or write fails, and it ends.
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Takes the ticket of `token` and counts a connection for its peer, if the ticket is valid
    /// and the limits allow: (peer, connection id, key).
    fn admit(
        &self,
        token: &[u8; TOKEN_BYTES],
        stream: &std::net::TcpStream,
    ) -> Option<(PeerId, u64, Option<[u8; KEY_BYTES]>)> {
        let mut state = self.state();
        let issued = state.tickets.remove(token)?;
        if issued.at.elapsed() >= TICKET_TTL
            || state.open_connections() >= MAX_CONNECTIONS
            || state.connections.get(&issued.peer).map_or(0, Vec::len) >= MAX_CONNECTIONS_PER_PEER
        {
            return None;
        }
        let handle = stream.try_clone().ok()?;
        let id = state.next_connection;
        state.next_connection += 1;
        state
            .connections
            .entry(issued.peer)
            .or_default()
            .push((id, handle));
        Some((issued.peer, id, issued.key))
    }

    fn release(&self, peer: &PeerId, id: u64) {
        let mut state = self.state();
        if let Some(open) = state.connections.get_mut(peer) {
            open.retain(|(i, _)| *i != id);
            if open.is_empty() {
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
            // An evicted connection's socket closes when its task is dropped, a moment after
            // the eviction: accept no more until the tasks alive are under the cap, so the
            // descriptors held stay bounded however fast connections come. (At most
            // `MAX_WAITING` of them wait; the rest are evicted ones about to be dropped.)
            loop {
                let ended = self.handshake_ended.notified();
                if self.state().alive < MAX_ALIVE {
                    break;
                }
                ended.await;
            }
            let (stream, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(target: "commons_net::bulk", error = %e, "cannot accept a bulk connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            self.accepted(stream, remote.ip(), source.clone(), net.clone());
        }
    }

    /// Starts the handshake of a new connection, closing the oldest waiting one if a cap is
    /// reached (`admission.rs`).
    fn accepted(
        self: &Arc<Self>,
        stream: TcpStream,
        remote: IpAddr,
        source: Arc<dyn BlobSource>,
        net: NetHandle,
    ) {
        // Held while spawning, so the task cannot end its handshake before it is recorded.
        let mut state = self.state();
        let (id, evicted) = state.waiting.arrive(remote);
        state.alive += 1;
        let evicted = evicted.and_then(|old| state.handshakes.remove(&old));
        let server = self.clone();
        let waiting = Waiting {
            stream,
            _alive: Alive(server.clone()),
        };
        let task = tokio::spawn(async move {
            let guard = HandshakeGuard(server.clone(), id);
            if let Err(e) = server.connection(waiting, source, net, guard).await {
                tracing::debug!(target: "commons_net::bulk", %remote, error = %e, "bulk connection ended");
            }
        });
        state.handshakes.insert(id, task.abort_handle());
        drop(state);
        if let Some(task) = evicted {
            // Dropping the task drops its socket.
            task.abort();
        }
    }

    async fn connection(
        self: Arc<Self>,
        mut waiting: Waiting,
        source: Arc<dyn BlobSource>,
        net: NetHandle,
        handshake: HandshakeGuard,
    ) -> io::Result<()> {
        let mut token = [0u8; TOKEN_BYTES];
        tokio::time::timeout(HANDSHAKE_TIMEOUT, waiting.stream.read_exact(&mut token))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no token in time"))??;
        drop(handshake);
        let Waiting { stream, _alive } = waiting;
        drop(_alive);
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        let Some((peer, id, key)) = self.admit(&token, &stream) else {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "unknown, used or expired token, or too many connections",
            ));
        };
        let server = self.clone();
        let ended = tokio::task::spawn_blocking(move || {
            let ended = serve(stream, source.as_ref(), key);
            server.release(&peer, id);
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

/// Ends the handshake record of a connection when its task ends or presents its token.
struct HandshakeGuard(Arc<BulkServer>, u64);

impl Drop for HandshakeGuard {
    fn drop(&mut self) {
        self.0.state().end_handshake(self.1);
    }
}

/// A connection waiting for its token. Fields drop in order: the socket, then the count.
struct Waiting {
    stream: TcpStream,
    _alive: Alive,
}

/// Counts a handshake task alive until it ends, with its socket.
struct Alive(Arc<BulkServer>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.state().alive -= 1;
        self.0.handshake_ended.notify_one();
    }
}

/// Why a served connection ended early.
enum Ended {
    /// The peer sent an authenticated request that breaks the protocol: a strike.
    Violation(&'static str),
    Io(io::Error),
}

impl From<io::Error> for Ended {
    fn from(e: io::Error) -> Ended {
        Ended::Io(e)
    }
}

/// The two directions of a sealed connection.
struct Sealed {
    requests: Seal,
    answers: Seal,
}

/// Answers the requests of one connection, in order, until the peer closes it or is idle for
/// [`IDLE_TIMEOUT`]. Sealed when the ticket had a key; clear text (with `sendfile`) otherwise.
fn serve(
    mut stream: std::net::TcpStream,
    source: &dyn BlobSource,
    key: Option<[u8; KEY_BYTES]>,
) -> Result<(), Ended> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut sealed = key.map(|k| Sealed {
        requests: Seal::new(&k, Direction::Request),
        answers: Seal::new(&k, Direction::Answer),
    });
    // Consecutive requests are mostly for the same blob: keep it open.
    let mut open: Option<(BlobHash, BlobRange)> = None;
    let mut buf = Vec::new();
    let mut request = [0u8; REQUEST_BYTES + TAG_BYTES];
    loop {
        let frame = match &sealed {
            Some(_) => &mut request[..],
            None => &mut request[..REQUEST_BYTES],
        };
        match read_frame(&mut stream, frame) {
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
        if let Some(s) = &mut sealed {
            let (body, tag) = request.split_at_mut(REQUEST_BYTES);
            let tag: &[u8; TAG_BYTES] = (&*tag).try_into().map_err(io::Error::other)?;
            // Not a strike: anyone on the path can send bytes that do not open.
            s.requests
                .open(body, tag)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
        let body: &[u8; REQUEST_BYTES] = (&request[..REQUEST_BYTES])
            .try_into()
            .map_err(io::Error::other)?;
        let (hash, _, len) = decode_request(body);
        if len == 0 || len > MAX_BLOB_CHUNK {
            return Err(Ended::Violation("bulk request length not in 1..=1 MiB"));
        }
        if open.as_ref().is_none_or(|(h, _)| *h != hash) {
            open = source.open(&hash).map(|blob| (hash, blob));
        }
        let blob = open.as_ref().map(|(_, b)| b);
        match plan(body, blob.map(|b| (b.start, b.len))) {
            Err(reason) => return Err(Ended::Violation(reason)),
            Ok(Plan::NotFound) => {
                send_header(&mut stream, &mut sealed, encode_header(NOT_FOUND, 0, 0))?;
            }
            Ok(Plan::Send { total_len, at, n }) => {
                let blob = blob.ok_or_else(|| io::Error::other("planned without a blob"))?;
                send_header(&mut stream, &mut sealed, encode_header(FOUND, total_len, n))?;
                match &mut sealed {
                    Some(s) => {
                        send_sealed(&mut stream, &mut s.answers, blob, at, n as usize, &mut buf)?
                    }
                    None => send_clear(&stream, blob, at, n as usize)?,
                }
            }
        }
    }
}

fn send_header(
    stream: &mut std::net::TcpStream,
    sealed: &mut Option<Sealed>,
    mut header: [u8; super::HEADER_BYTES],
) -> Result<(), Ended> {
    match sealed {
        Some(s) => {
            let tag = s.answers.seal(&mut header).map_err(io::Error::other)?;
            let mut out = [0u8; super::HEADER_BYTES + TAG_BYTES];
            out[..super::HEADER_BYTES].copy_from_slice(&header);
            out[super::HEADER_BYTES..].copy_from_slice(&tag);
            stream.write_all(&out)?;
        }
        None => stream.write_all(&header)?,
    }
    Ok(())
}

/// `n` bytes of the blob from file position `at`, read, sealed and sent with their tag.
fn send_sealed(
    stream: &mut std::net::TcpStream,
    seal: &mut Seal,
    blob: &BlobRange,
    at: u64,
    n: usize,
    buf: &mut Vec<u8>,
) -> Result<(), Ended> {
    if n == 0 {
        return Ok(());
    }
    buf.resize(n + TAG_BYTES, 0);
    // A file shorter than the store says fails here: the connection ends, the receiver sees a
    // short answer and asks elsewhere.
    blob.file.read_exact_at(&mut buf[..n], at)?;
    let tag = seal.seal(&mut buf[..n]).map_err(io::Error::other)?;
    buf[n..].copy_from_slice(&tag);
    stream.write_all(buf)?;
    Ok(())
}

/// `n` bytes of the blob from file position `at`, sent with `sendfile` (no user-space copy).
fn send_clear(
    stream: &std::net::TcpStream,
    blob: &BlobRange,
    mut at: u64,
    mut left: usize,
) -> Result<(), Ended> {
    while left > 0 {
        let sent = rustix::fs::sendfile(stream, blob.file.as_ref(), Some(&mut at), left)
            .map_err(io::Error::from)?;
        if sent == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "blob file is short").into());
        }
        left -= sent;
    }
    Ok(())
}

/// Reads one fixed-size frame; `false` at a clean end of the stream (before its first byte).
fn read_frame(stream: &mut std::net::TcpStream, buf: &mut [u8]) -> io::Result<bool> {
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
