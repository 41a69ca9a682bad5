//! The bulk port between a real server and real links on loopback.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::seal::{Direction, Seal, TAG_BYTES};
use super::*;
use crate::wire::MAX_BLOB_CHUNK;

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

struct Port {
    server: Arc<BulkServer>,
    addr: SocketAddr,
    hash: BlobHash,
    bytes: Vec<u8>,
    _dir: tempfile::TempDir,
    _events: tokio::sync::mpsc::Receiver<crate::NetEvent>,
    _task: tokio::task::JoinHandle<()>,
}

async fn port(allow_clear: bool) -> Port {
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let path = dir.path().join("blob");
    std::fs::write(&path, &bytes).unwrap();
    let hash = BlobHash(*blake3::hash(&bytes).as_bytes());
    let source = Arc::new(Files(HashMap::from([(
        hash,
        Arc::new(File::open(&path).unwrap()),
    )])));
    let (net, events, task) = crate::spawn(crate::NetConfig::new([7u8; 32])).unwrap();
    let (server, listener) = BulkServer::bind("127.0.0.1:0".parse().unwrap(), allow_clear)
        .await
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], server.port()));
    tokio::spawn(server.clone().run(listener, source, net));
    Port {
        server,
        addr,
        hash,
        bytes,
        _dir: dir,
        _events: events,
        _task: task,
    }
}

/// Waits up to 10 s for `done`.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn ranges_and_tickets(p: &Port, clear: bool) {
    let peer = PeerId::random();
    let (hash, bytes) = (p.hash, &p.bytes);
    let ticket = p.server.issue(peer, clear).unwrap();
    assert_eq!(ticket.key.is_none(), clear);
    let link = BulkLink::connect(p.addr, &ticket).await.unwrap();
    assert_eq!(link.is_sealed(), !clear);
    let asks: Vec<_> = (0..3u64)
        .map(|i| link.get(hash, i * u64::from(MAX_BLOB_CHUNK), MAX_BLOB_CHUNK))
        .collect();
    let mut got = Vec::new();
    for chunk in futures::future::join_all(asks).await {
        let chunk = chunk.unwrap();
        assert_eq!(chunk.total_len, bytes.len() as u64);
        got.extend_from_slice(&chunk.bytes);
    }
    assert_eq!(&got, bytes);
    // Not found keeps the link; past the end is an empty answer, even at an offset that would
    // overflow the file position.
    assert!(matches!(
        link.get(BlobHash([0; 32]), 0, 10).await,
        Err(BulkError::NotFound)
    ));
    let end = link.get(hash, bytes.len() as u64, 10).await.unwrap();
    assert!(end.bytes.is_empty());
    let far = link.get(hash, u64::MAX, MAX_BLOB_CHUNK).await.unwrap();
    assert!(far.bytes.is_empty());
    assert_eq!(link.get(hash, 7, 3).await.unwrap().bytes, bytes[7..10]);

    // A ticket opens one connection only.
    let ticket = p.server.issue(peer, clear).unwrap();
    let first = BulkLink::connect(p.addr, &ticket).await.unwrap();
    assert_eq!(first.get(hash, 5, 5).await.unwrap().bytes, bytes[5..10]);
    let again = BulkLink::connect(p.addr, &ticket).await.unwrap();
    assert!(again.get(hash, 5, 5).await.is_err(), "a reused ticket");
    // A made-up token: the connection is closed at once.
    let bogus = Ticket {
        token: [9; TOKEN_BYTES],
        ..ticket
    };
    let bogus = BulkLink::connect(p.addr, &bogus).await.unwrap();
    assert!(bogus.get(hash, 0, 1024).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_ranges_come_back_in_order_and_tickets_open_one_connection() {
    let p = port(false).await;
    ranges_and_tickets(&p, false).await;
    // Asking for clear text from a server that does not allow it still gets a sealed ticket.
    assert!(
        p.server
            .issue(PeerId::random(), true)
            .unwrap()
            .key
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_ranges_work_where_both_sides_ask_for_them() {
    let p = port(true).await;
    ranges_and_tickets(&p, true).await;
    assert!(
        p.server
            .issue(PeerId::random(), false)
            .unwrap()
            .key
            .is_some()
    );
}

/// Someone who saw a token on the wire (it travels in clear) but not the key, which only went
/// inside libp2p: the connection is refused at its first request, and the ticket is spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_its_key_is_refused() {
    let p = port(false).await;
    let ticket = p.server.issue(PeerId::random(), false).unwrap();
    let stolen = Ticket {
        key: Some([1; KEY_BYTES]),
        ..ticket
    };
    let link = BulkLink::connect(p.addr, &stolen).await.unwrap();
    assert!(link.get(p.hash, 0, 1024).await.is_err());
    let link = BulkLink::connect(p.addr, &ticket).await.unwrap();
    assert!(
        link.get(p.hash, 0, 1024).await.is_err(),
        "the ticket is spent"
    );
    // A clear-text request on a sealed ticket gets no bytes either.
    let ticket = p.server.issue(PeerId::random(), false).unwrap();
    let mut raw = TcpStream::connect(p.addr).await.unwrap();
    raw.write_all(&ticket.token).await.unwrap();
    raw.write_all(&encode_request(&p.hash, 0, 1024))
        .await
        .unwrap();
    raw.write_all(&[0; TAG_BYTES]).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut rest));
    assert!(closed.await.is_ok(), "closed");
    assert!(rest.is_empty(), "no answer");
}

/// An opened request of length 0 breaks the protocol: no answer, the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_request_of_length_zero_closes_the_connection() {
    let p = port(false).await;
    let ticket = p.server.issue(PeerId::random(), false).unwrap();
    let mut seal = Seal::new(&ticket.key.unwrap(), Direction::Request);
    let mut raw = TcpStream::connect(p.addr).await.unwrap();
    raw.write_all(&ticket.token).await.unwrap();
    let mut request = encode_request(&p.hash, 0, 0);
    let tag = seal.seal(&mut request).unwrap();
    raw.write_all(&request).await.unwrap();
    raw.write_all(&tag).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut rest));
    assert!(closed.await.is_ok(), "closed");
    assert!(rest.is_empty(), "no answer to a bad request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_are_capped_per_peer() {
    let p = port(false).await;
    let greedy = PeerId::random();
    for _ in 0..MAX_TICKETS_PER_PEER {
        assert!(p.server.issue(greedy, false).is_some());
    }
    assert!(p.server.issue(greedy, false).is_none(), "over its cap");
    assert!(p.server.issue(PeerId::random(), false).is_some(), "others");
}

/// Thousands of connections that never present a token: at most `MAX_WAITING` wait at once,
/// and a receiver with a ticket still gets its ranges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_connections_does_not_lock_out_a_ticket() {
    let p = port(false).await;
    let mut silent = Vec::new();
    for i in 0..2_000 {
        if let Ok(s) = TcpStream::connect(p.addr).await {
            silent.push(s);
        }
        if i % 100 == 0 {
            assert!(p.server.counts().waiting <= admission::MAX_WAITING);
        }
    }
    let ticket = p.server.issue(PeerId::random(), false).unwrap();
    let link = BulkLink::connect(p.addr, &ticket).await.unwrap();
    assert_eq!(
        link.get(p.hash, 100, 100).await.unwrap().bytes,
        p.bytes[100..200]
    );
    assert!(p.server.counts().waiting <= admission::MAX_WAITING_PER_SOURCE);
    // The evicted connections were closed by the server: reading gives end of stream.
    let mut first = silent.remove(0);
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), first.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_peer_ends_its_connections_and_tickets() {
    let p = port(false).await;
    let banned = PeerId::random();
    let link = BulkLink::connect(p.addr, &p.server.issue(banned, false).unwrap())
        .await
        .unwrap();
    assert!(link.get(p.hash, 0, 10).await.is_ok());
    let spare = p.server.issue(banned, false).unwrap();
    eventually("the connection to be served", || {
        p.server.counts().serving == 1
    })
    .await;
    p.server.close_peer(&banned);
    assert!(link.get(p.hash, 0, 10).await.is_err(), "closed");
    eventually("the connection to end", || p.server.counts().serving == 0).await;
    let late = BulkLink::connect(p.addr, &spare).await.unwrap();
    assert!(
        late.get(p.hash, 0, 10).await.is_err(),
        "its tickets are void"
    );
}

/// 64 slow connections from 8 addresses fill every waiting slot: a receiver with a ticket is
/// still accepted at once (eviction makes room), not after their 10 s handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_waiting_slots_do_not_stall_the_accept_loop() {
    let p = port(false).await;
    let mut slow = Vec::new();
    for n in 2..10u8 {
        for _ in 0..admission::MAX_WAITING_PER_SOURCE {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::from(([127, 0, 0, n], 0))).unwrap();
            slow.push(socket.connect(p.addr).await.unwrap());
        }
    }
    eventually("every slot to be taken", || {
        p.server.counts().waiting == admission::MAX_WAITING
    })
    .await;
    let started = tokio::time::Instant::now();
    let ticket = p.server.issue(PeerId::random(), false).unwrap();
    let link = BulkLink::connect(p.addr, &ticket).await.unwrap();
    assert_eq!(link.get(p.hash, 0, 10).await.unwrap().bytes, p.bytes[..10]);
    assert!(
        started.elapsed() < HANDSHAKE_TIMEOUT / 2,
        "served after {:?}",
        started.elapsed()
    );
    drop(slow);
}
