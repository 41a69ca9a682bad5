//! End-to-end tests of the network crate: real nodes (noise and yamux over TCP on 127.0.0.1,
//! port 0), mDNS off, short gossip heartbeats. Every wait is on a condition with a deadline.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::ops::Bound;
use std::time::Duration;

use commons_core::{BlobHash, Body, Change, LineageId, Patch, Record, RecordId, SecretKey};
use commons_net::{
    BadResponse, FetchError, Multiaddr, NetConfig, NetEvent, NetHandle, PeerId, Published,
    SmallBlob, SyncRequest, SyncResponse, multiaddr::Protocol,
};
use libp2p::futures::StreamExt;
use libp2p::{SwarmBuilder, gossipsub, identity::Keypair, noise, swarm::SwarmEvent, tcp, yamux};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long any one condition may take to become true.
const DEADLINE: Duration = Duration::from_secs(10);
/// How often a condition is re-checked.
const POLL: Duration = Duration::from_millis(25);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn config(seed: u8) -> NetConfig {
    let mut cfg = NetConfig::new([seed; 32]);
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")];
    cfg.heartbeat = Duration::from_millis(100);
    cfg.heartbeat_initial_delay = Duration::from_millis(50);
    // Every peer is on 127.0.0.1.
    cfg.ip_colocation_factor_threshold = 100.0;
    cfg.request_timeout = Duration::from_secs(5);
    cfg
}

struct Node {
    handle: NetHandle,
    events: mpsc::Receiver<NetEvent>,
    join: JoinHandle<()>,
    addr: Multiaddr,
}

impl Node {
    async fn start(cfg: NetConfig) -> Node {
        let (handle, mut events, join) = commons_net::spawn(cfg).expect("network starts");
        let addr = within("listening", async {
            loop {
                match events.recv().await {
                    Some(NetEvent::ListeningOn(a)) => return a,
                    Some(_) => {}
                    None => panic!("network task ended"),
                }
            }
        })
        .await;
        let addr = addr.with(Protocol::P2p(handle.peer_id()));
        Node {
            handle,
            events,
            join,
            addr,
        }
    }

    fn peer(&self) -> PeerId {
        self.handle.peer_id()
    }

    /// The next gossip record, skipping other events.
    async fn next_record(&mut self) -> (PeerId, Record) {
        within("a gossip record", async {
            loop {
                match self.events.recv().await {
                    Some(NetEvent::Record { from, record, .. }) => return (from, *record),
                    Some(_) => {}
                    None => panic!("network task ended"),
                }
            }
        })
        .await
    }
}

/// Runs `fut` with the deadline, panicking with `what` if it is not done by then.
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Waits until `check` returns true, re-checking every `POLL`, at most `DEADLINE`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Whether `node` has `peer` in its gossip mesh for `lineage`.
async fn in_mesh(node: &NetHandle, peer: PeerId, lineage: LineageId) -> bool {
    node.peers()
        .await
        .expect("network running")
        .iter()
        .any(|p| p.peer_id == peer && p.mesh.contains(&lineage))
}

/// Whether `node` knows that `peer` follows `lineage`.
async fn follows(node: &NetHandle, peer: PeerId, lineage: LineageId) -> bool {
    node.peers()
        .await
        .expect("network running")
        .iter()
        .any(|p| p.peer_id == peer && p.lineages.contains(&lineage))
}

fn patch(author: &SecretKey, lineage: LineageId, n: u32) -> Record {
    let body = Body::Patch(Patch {
        lineage,
        parents: Vec::new(),
        changes: vec![Change {
            path: format!("file-{n}.txt"),
            before: None,
            after: Some(BlobHash::of(&n.to_le_bytes())),
        }],
        message: format!("patch number {n}"),
    });
    Record::sign(author, u64::from(n), body).expect("valid patch")
}

const LINEAGE: LineageId = LineageId([42; 32]);

/// A line A – B – C: a record published by A reaches C through B, which validated it first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_is_forwarded_along_a_line() {
    init_tracing();
    let mut cfgs = [config(1), config(2), config(3)];
    // Kademlia would let C find A and connect to it directly; this test needs the line.
    for c in &mut cfgs {
        c.kademlia = false;
    }
    let [ca, cb, cc] = cfgs;
    let a = Node::start(ca).await;
    let b = Node::start(cb).await;
    let mut c = Node::start(cc).await;
    for n in [&a, &b, &c] {
        n.handle.follow(LINEAGE).await.expect("follow");
    }
    b.handle.dial(a.addr.clone()).await.expect("dial");
    c.handle.dial(b.addr.clone()).await.expect("dial");

    eventually("B meshed with A and C", || async {
        in_mesh(&b.handle, a.peer(), LINEAGE).await && in_mesh(&b.handle, c.peer(), LINEAGE).await
    })
    .await;
    eventually("A knows B follows", || {
        follows(&a.handle, b.peer(), LINEAGE)
    })
    .await;

    let record = patch(&SecretKey::from_seed([7; 32]), LINEAGE, 1);
    assert_eq!(
        a.handle.publish(&record).await.expect("publish"),
        Published::Sent
    );

    let (from, got) = c.next_record().await;
    assert_eq!(got.id(), record.id());
    assert_eq!(from, b.peer(), "C got the record from B, not from A");
    let status = c.handle.status().await.expect("status");
    assert!(!status.connected.contains(&a.peer()), "the line held");

    // Shutdown ends the task.
    for n in [a, b, c] {
        n.handle.shutdown();
        within("shutdown", n.join).await.expect("task ends cleanly");
    }
}

/// Commands to the hostile swarm the test drives.
type Publish = (Vec<u8>, oneshot::Sender<Result<(), String>>);

/// A raw gossipsub node with no validation at all: it publishes whatever it is given.
fn hostile_swarm(seed: u8) -> libp2p::Swarm<gossipsub::Behaviour> {
    let key = Keypair::ed25519_from_bytes([seed; 32]).expect("valid seed");
    SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|_key| {
            let cfg = gossipsub::ConfigBuilder::default()
                .max_transmit_size(commons_net::behaviour::MAX_GOSSIP_BYTES)
                .validation_mode(gossipsub::ValidationMode::Anonymous)
                .message_id_fn(|m: &gossipsub::Message| {
                    gossipsub::MessageId::from(commons_net::gossip::message_id(&m.data))
                })
                .heartbeat_interval(Duration::from_millis(100))
                .heartbeat_initial_delay(Duration::from_millis(50))
                .build()?;
            Ok(gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Anonymous,
                cfg,
            )?)
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Drives the hostile swarm: publishes on request, reports peers that subscribe.
async fn run_hostile(
    mut swarm: libp2p::Swarm<gossipsub::Behaviour>,
    topic: gossipsub::IdentTopic,
    mut publish: mpsc::Receiver<Publish>,
    subscribed: mpsc::Sender<PeerId>,
) {
    loop {
        tokio::select! {
            cmd = publish.recv() => match cmd {
                Some((data, reply)) => {
                    let r = swarm.behaviour_mut().publish(topic.clone(), data);
                    let _ = reply.send(r.map(|_| ()).map_err(|e| e.to_string()));
                }
                None => return,
            },
            ev = swarm.select_next_some() => {
                if let SwarmEvent::Behaviour(gossipsub::Event::Subscribed { peer_id, .. }) = ev {
                    let _ = subscribed.try_send(peer_id);
                }
            }
        }
    }
}

/// A hostile node H connected to honest B (itself connected to C) publishes a forged record,
/// an oversized message and garbage, with one honest record among them. B passes on only the
/// honest record, forwards nothing invalid to C, and penalises H until it is banned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_gossip_is_dropped_and_its_sender_banned() {
    init_tracing();
    let mut b = Node::start(config(11)).await;
    let mut c = Node::start(config(12)).await;
    b.handle.follow(LINEAGE).await.expect("follow");
    c.handle.follow(LINEAGE).await.expect("follow");
    c.handle.dial(b.addr.clone()).await.expect("dial");

    let mut hostile = hostile_swarm(13);
    let h_peer = *hostile.local_peer_id();
    let topic = commons_net::gossip::topic(&LINEAGE);
    hostile
        .behaviour_mut()
        .subscribe(&topic)
        .expect("subscribe");
    hostile.dial(b.addr.clone()).expect("dial");
    let (publish_tx, publish_rx) = mpsc::channel::<Publish>(8);
    let (sub_tx, mut sub_rx) = mpsc::channel(8);
    let h_task = tokio::spawn(run_hostile(hostile, topic, publish_rx, sub_tx));

    within("H sees B subscribed", async {
        while sub_rx.recv().await != Some(b.peer()) {}
    })
    .await;
    eventually("B meshed with C", || in_mesh(&b.handle, c.peer(), LINEAGE)).await;
    eventually("B knows H follows", || follows(&b.handle, h_peer, LINEAGE)).await;

    let author = SecretKey::from_seed([14; 32]);
    let honest = patch(&author, LINEAGE, 1);
    let mut forged = patch(&author, LINEAGE, 2).bytes().to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 0x55;
    let oversized = vec![0xAB; 200 * 1024];
    let garbage = b"this is not a record at all, it is just some bytes".to_vec();
    for (i, data) in [honest.bytes().to_vec(), forged, oversized, garbage]
        .into_iter()
        .enumerate()
    {
        let (tx, rx) = oneshot::channel();
        publish_tx.send((data, tx)).await.expect("hostile running");
        let sent = rx.await.expect("reply");
        // Once B has banned H, H has no peer left to publish to.
        if i == 0 {
            sent.expect("hostile publish accepted locally");
        }
    }

    // B hands the honest record to its node, from H; C gets it from B.
    let (from, got) = b.next_record().await;
    assert_eq!((from, got.id()), (h_peer, honest.id()));
    let (from, got) = c.next_record().await;
    assert_eq!((from, got.id()), (b.peer(), honest.id()));

    // B penalises H: a negative score, and a ban once the strikes add up.
    eventually("B bans H", || async {
        let status = b.handle.status().await.expect("status");
        status.banned.contains(&h_peer) && !status.connected.contains(&h_peer)
    })
    .await;

    // A sentinel from B: once C has it, anything B forwarded earlier has arrived too.
    let sentinel = patch(&SecretKey::from_seed([15; 32]), LINEAGE, 3);
    assert_eq!(
        b.handle.publish(&sentinel).await.expect("publish"),
        Published::Sent
    );
    let (_, got) = c.next_record().await;
    assert_eq!(
        got.id(),
        sentinel.id(),
        "C got nothing between the honest record and the sentinel"
    );
    let c_view_of_b = c
        .handle
        .peers()
        .await
        .expect("peers")
        .into_iter()
        .find(|p| p.peer_id == b.peer())
        .expect("C still connected to B");
    assert_eq!(c_view_of_b.strikes, 0, "B forwarded nothing invalid");
    assert!(c_view_of_b.score.unwrap_or(0.0) >= 0.0);
    // B emitted no other record: the next thing on its channel is not a record.
    while let Ok(ev) = b.events.try_recv() {
        assert!(!matches!(ev, NetEvent::Record { .. }), "unexpected {ev:?}");
    }

    h_task.abort();
    for n in [b, c] {
        n.handle.shutdown();
        within("shutdown", n.join).await.expect("task ends cleanly");
    }
}

/// The in-memory store a test responder answers from.
#[derive(Default)]
struct Store {
    records: HashMap<RecordId, Vec<u8>>,
    family: BTreeSet<RecordId>,
    blobs: HashMap<BlobHash, Vec<u8>>,
    /// Requests for the key are answered with the value's record instead: a lying peer.
    lies: HashMap<RecordId, RecordId>,
    /// Reconciliation is answered with ranges out of order: a peer that sends nonsense.
    nonsense_reconcile: bool,
}

impl Store {
    fn answer(&self, request: &SyncRequest) -> SyncResponse {
        match request {
            SyncRequest::GetRecords { ids } => SyncResponse::Records(
                ids.iter()
                    .map(|id| self.lies.get(id).unwrap_or(id))
                    .filter_map(|id| self.records.get(id).cloned())
                    .collect(),
            ),
            SyncRequest::ListIds { after, limit, .. } => {
                let start = match after {
                    Some(a) => Bound::Excluded(*a),
                    None => Bound::Unbounded,
                };
                let mut ids: Vec<RecordId> = self
                    .family
                    .range((start, Bound::Unbounded))
                    .copied()
                    .collect();
                let more = ids.len() > *limit as usize;
                ids.truncate(*limit as usize);
                SyncResponse::Ids { ids, more }
            }
            SyncRequest::GetBlob { hash, offset, len } => match self.blobs.get(hash) {
                Some(blob) => {
                    let start = (*offset).min(blob.len() as u64) as usize;
                    let end = (start + *len as usize).min(blob.len());
                    SyncResponse::Blob {
                        total_len: blob.len() as u64,
                        bytes: blob[start..end].to_vec(),
                    }
                }
                None => SyncResponse::NotFound,
            },
            SyncRequest::OpenBulk { .. } => SyncResponse::NotFound,
            SyncRequest::GetSmallBlobs { hashes } => SyncResponse::SmallBlobs(
                hashes
                    .iter()
                    .map(|h| match self.blobs.get(h) {
                        Some(b) if b.len() as u64 > commons_net::wire::MAX_SMALL_BLOB_BYTES => {
                            SmallBlob::TooLarge(b.len() as u64)
                        }
                        Some(b) => SmallBlob::Bytes(b.clone()),
                        None => SmallBlob::Missing,
                    })
                    .collect(),
            ),
            SyncRequest::GetOutboard { .. } => SyncResponse::NotFound,
            SyncRequest::Reconcile { message, .. } if self.nonsense_reconcile => {
                let mut reply = message.clone();
                reply.ranges.reverse();
                SyncResponse::Reconcile(reply)
            }
            SyncRequest::Reconcile { message, .. } => {
                use commons_core::reconcile::{Config, Reconciler, SortedItems};
                let items = SortedItems::new(self.family.iter().copied().collect());
                match Reconciler::new(Config::serve()).receive(&items, message) {
                    Ok(reply) => SyncResponse::Reconcile(reply.unwrap_or_default()),
                    Err(_) => SyncResponse::NotFound,
                }
            }
        }
    }
}

/// Answers every sync request from the store.
async fn respond_from(store: Store, mut events: mpsc::Receiver<NetEvent>) {
    while let Some(ev) = events.recv().await {
        if let NetEvent::Request { request, reply, .. } = ev {
            reply.respond(store.answer(&request));
        }
    }
}

/// Fetching records, paging through ids and fetching blob chunks against a responder; a
/// responder that answers with a record other than the one asked for is caught and penalised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_requests_round_trip_and_liars_are_penalised() {
    init_tracing();
    let a = Node::start(config(21)).await;
    let b = Node::start(config(22)).await;

    let author = SecretKey::from_seed([23; 32]);
    let records: Vec<Record> = (0..10).map(|n| patch(&author, LINEAGE, n)).collect();
    let mut store = Store::default();
    for r in &records {
        store.records.insert(r.id(), r.bytes().to_vec());
        store.family.insert(r.id());
    }
    let blob: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
    let blob_hash = BlobHash::of(&blob);
    store.blobs.insert(blob_hash, blob.clone());
    let honest_id = records[0].id();
    let lied_about = RecordId([99; 32]);
    store.lies.insert(lied_about, honest_id);
    let b_peer = b.peer();
    let responder = tokio::spawn(respond_from(store, b.events));

    a.handle.dial(b.addr.clone()).await.expect("dial");

    // Records by id: the two it has, verified; the unknown one is absent.
    let wanted = vec![records[3].id(), records[5].id(), RecordId([1; 32])];
    let got = a
        .handle
        .get_records(b_peer, wanted)
        .await
        .expect("get_records");
    let got: Vec<RecordId> = got.iter().map(Record::id).collect();
    assert_eq!(got, vec![records[3].id(), records[5].id()]);

    // Ids in pages of 4: 4 + 4 + 2, in ascending order.
    let mut all = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = a
            .handle
            .list_ids(b_peer, LINEAGE, after, 4)
            .await
            .expect("list_ids");
        pages += 1;
        all.extend_from_slice(&page.ids);
        after = page.ids.last().copied();
        if !page.more {
            break;
        }
        assert!(pages < 10, "paging does not end");
    }
    let mut expected: Vec<RecordId> = records.iter().map(Record::id).collect();
    expected.sort();
    assert_eq!(all, expected);
    assert_eq!(pages, 3);

    // A blob in chunks of 1 KiB, reassembled and checked against its hash.
    let mut fetched = Vec::new();
    loop {
        let chunk = a
            .handle
            .get_blob_chunk(b_peer, blob_hash, fetched.len() as u64, 1024)
            .await
            .expect("chunk");
        assert_eq!(chunk.total_len, blob.len() as u64);
        fetched.extend_from_slice(&chunk.bytes);
        if fetched.len() as u64 >= chunk.total_len {
            break;
        }
    }
    assert_eq!(BlobHash::of(&fetched), blob_hash);
    let missing = a
        .handle
        .get_blob_chunk(b_peer, BlobHash([5; 32]), 0, 1024)
        .await;
    assert!(
        matches!(missing, Err(FetchError::NotFound { .. })),
        "{missing:?}"
    );

    // Small blobs many at once, in the order asked, the missing one marked.
    let small = a
        .handle
        .get_small_blobs(b_peer, vec![BlobHash([5; 32]), blob_hash])
        .await
        .expect("small blobs");
    assert_eq!(
        small,
        vec![SmallBlob::Missing, SmallBlob::Bytes(blob.clone())]
    );
    let too_many = a
        .handle
        .get_small_blobs(
            b_peer,
            vec![blob_hash; commons_net::wire::MAX_SMALL_BLOBS + 1],
        )
        .await;
    assert!(
        matches!(too_many, Err(FetchError::InvalidRequest(_))),
        "{too_many:?}"
    );

    // A request the protocol forbids is not even sent.
    let too_many = a
        .handle
        .get_records(b_peer, vec![RecordId([0; 32]); 257])
        .await;
    assert!(
        matches!(too_many, Err(FetchError::InvalidRequest(_))),
        "{too_many:?}"
    );

    // The liar answers with another record: an error, and a strike against it.
    let lie = a.handle.get_records(b_peer, vec![lied_about]).await;
    assert_eq!(
        lie,
        Err(FetchError::BadResponse {
            peer: b_peer,
            reason: BadResponse::Unrequested(honest_id)
        })
    );
    let strikes = a
        .handle
        .peers()
        .await
        .expect("peers")
        .into_iter()
        .find(|p| p.peer_id == b_peer)
        .map(|p| p.strikes);
    assert_eq!(strikes, Some(1));

    a.handle.shutdown();
    b.handle.shutdown();
    within("shutdown", a.join).await.expect("task ends cleanly");
    within("shutdown", b.join).await.expect("task ends cleanly");
    within("responder ends", responder)
        .await
        .expect("responder ends");
}

/// The QUIC transport works too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_connect_over_quic() {
    init_tracing();
    let mut cfg = config(41);
    cfg.listen = vec![
        "/ip4/127.0.0.1/udp/0/quic-v1"
            .parse()
            .expect("valid multiaddr"),
    ];
    let a = Node::start(cfg).await;
    let mut b = Node::start(config(42)).await;
    b.handle.dial(a.addr.clone()).await.expect("dial");
    let a_peer = a.peer();
    within("connected over QUIC", async {
        while let Some(ev) = b.events.recv().await {
            if matches!(ev, NetEvent::PeerConnected(p) if p == a_peer) {
                return;
            }
        }
    })
    .await;
    let addrs = b
        .handle
        .peers()
        .await
        .expect("peers")
        .into_iter()
        .find(|p| p.peer_id == a_peer)
        .expect("A connected")
        .addrs;
    assert!(
        addrs
            .iter()
            .all(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)))
    );
    a.handle.shutdown();
    b.handle.shutdown();
}

/// Kademlia provider records: B finds that A follows a lineage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_are_found_through_kademlia() {
    init_tracing();
    let a = Node::start(config(31)).await;
    let b = Node::start(config(32)).await;
    b.handle.dial(a.addr.clone()).await.expect("dial");
    a.handle.follow(LINEAGE).await.expect("follow");
    let a_peer = a.peer();
    eventually("B finds A as a provider", || async {
        b.handle
            .providers(LINEAGE)
            .await
            .expect("providers")
            .contains(&a_peer)
    })
    .await;
    a.handle.shutdown();
    b.handle.shutdown();
}

/// A node that does not answer holds at most `MAX_PENDING_INBOUND_PER_PEER` requests of one
/// peer; the next is refused at once instead of being queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_requests_beyond_the_bound_are_refused() {
    init_tracing();
    let per_peer = commons_net::task::MAX_PENDING_INBOUND_PER_PEER;
    let mut slow = config(52);
    slow.request_timeout = Duration::from_secs(2);
    let a = Node::start(config(51)).await;
    let mut b = Node::start(slow).await;
    a.handle.dial(b.addr.clone()).await.expect("dial");
    let b_peer = b.peer();

    let mut calls = tokio::task::JoinSet::new();
    for i in 0..=per_peer {
        let h = a.handle.clone();
        calls.spawn(async move {
            h.get_blob_chunk(b_peer, BlobHash([i as u8; 32]), 0, 16)
                .await
        });
    }
    // B's node takes the requests it is given and never answers them.
    let mut held = Vec::new();
    within("B is handed the bounded number of requests", async {
        while held.len() < per_peer {
            if let Some(NetEvent::Request { reply, .. }) = b.events.recv().await {
                held.push(reply);
            }
        }
    })
    .await;
    // The one over the bound fails first, and not by timing out.
    let first = within("the refused request", calls.join_next())
        .await
        .expect("a call")
        .expect("no panic");
    assert!(
        matches!(
            &first,
            Err(FetchError::Failed {
                failure: commons_net::RequestFailure::Refused,
                ..
            })
        ),
        "{first:?}"
    );
    while let Ok(ev) = b.events.try_recv() {
        assert!(
            !matches!(ev, NetEvent::Request { .. }),
            "a request over the bound reached B's node"
        );
    }
    drop(held);
    calls.abort_all();
    a.handle.shutdown();
    b.handle.shutdown();
}

/// A reconciliation session over the network finds exactly the ids the peer has and this node
/// lacks; a peer answering with ranges out of order is struck and the session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_finds_what_is_missing_and_nonsense_is_penalised() {
    use commons_core::reconcile::SortedItems;
    init_tracing();
    let a = Node::start(config(41)).await;
    let b = Node::start(config(42)).await;
    let c = Node::start(config(43)).await;
    let id = |i: u32| RecordId(*blake3::hash(&i.to_le_bytes()).as_bytes());

    // B holds ids 0..5000; A lacks 7 of them and holds 5 that B lacks.
    let store = Store {
        family: (0..5000).map(id).collect(),
        ..Store::default()
    };
    let lacking: BTreeSet<RecordId> = [3, 700, 701, 2500, 4000, 4998, 4999]
        .into_iter()
        .map(id)
        .collect();
    let local = SortedItems::new((0..5005).map(id).filter(|i| !lacking.contains(i)).collect());
    let b_peer = b.peer();
    let responder = tokio::spawn(respond_from(store, b.events));
    a.handle.dial(b.addr.clone()).await.expect("dial");
    let session = a
        .handle
        .reconcile(b_peer, LINEAGE, &local)
        .await
        .expect("reconcile");
    assert!(session.complete, "{session:?}");
    assert_eq!(session.need, lacking.into_iter().collect::<Vec<_>>());
    assert!(session.rounds <= 4, "{session:?}");
    assert!(
        session.bytes_sent + session.bytes_received < 5000 * 32 / 5,
        "{session:?}"
    );

    // C answers with its ranges reversed: refused on decoding, a strike, no session.
    let c_store = Store {
        family: (0..100).map(id).collect(),
        nonsense_reconcile: true,
        ..Store::default()
    };
    let c_peer = c.peer();
    let liar = tokio::spawn(respond_from(c_store, c.events));
    a.handle.dial(c.addr.clone()).await.expect("dial");
    let bad = a.handle.reconcile(c_peer, LINEAGE, &local).await;
    assert!(bad.is_err(), "{bad:?}");
    let strikes = a
        .handle
        .peers()
        .await
        .expect("peers")
        .into_iter()
        .find(|p| p.peer_id == c_peer)
        .map(|p| p.strikes);
    assert_eq!(strikes, Some(1));

    for n in [&a.handle, &b.handle, &c.handle] {
        n.shutdown();
    }
    within("shutdown", a.join).await.expect("task ends cleanly");
    within("responder ends", responder).await.expect("ends");
    within("liar ends", liar).await.expect("ends");
}
