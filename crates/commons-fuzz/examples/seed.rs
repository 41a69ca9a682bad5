//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/seed-<name>`: valid
//! inputs made by the real encoders (records signed by a real key, sync frames as the codec
//! writes them, a bundle from `BundleWriter`, messages of a real reconciliation session, control
//! frames from `encode_frame`, a real `config.toml`). Deterministic: running it again rewrites
//! the same files.
//!
//! ```text
//! cargo run -p commons-fuzz --example seed
//! ```

use std::path::{Path, PathBuf};

use commons_cli::bundle::BundleWriter;
use commons_core::reconcile::{Config, Message, Reconciler, SortedItems};
use commons_core::state::PatchStatus;
use commons_core::{
    BlobHash, Body, Change, Charter, ForkBase, LineageId, Patch, Record, RecordId, SecretKey,
    Validation, Verdict,
};
use commons_net::wire::{
    self, MAX_BLOB_CHUNK, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, PROTOCOL, SmallBlob, SyncCodec,
};
use commons_net::{SyncRequest, SyncResponse};
use commons_rpc::{
    NodeStatus, Peer, Progress, RecordBytes, Request, Response, RpcError, SyncReport, VerifyReport,
    encode_frame,
};
use futures::executor::block_on;
use libp2p::request_response::Codec;

type Seeds = Vec<(String, Vec<u8>)>;

/// Names and bytes given as literals, as seeds.
fn named(seeds: Vec<(&str, Vec<u8>)>) -> Seeds {
    seeds.into_iter().map(|(n, b)| (n.to_owned(), b)).collect()
}

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let records = records();
    let targets: [(&str, Seeds); 6] = [
        ("record", record_seeds(&records)),
        ("sync_frame", sync_seeds(&records)),
        ("bundle", bundle_seeds(&records)),
        ("reconcile", reconcile_seeds()),
        ("control_frame", control_seeds(&records)),
        ("config_toml", config_seeds()),
    ];
    for (target, seeds) in targets {
        let dir: PathBuf = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
        }
        println!("{target}: {} seeds in {}", seeds.len(), dir.display());
    }
    Ok(())
}

fn id(b: u8) -> RecordId {
    RecordId([b; 32])
}

/// A charter, a fork of it, a patch and a validation, signed by fixed keys.
fn records() -> Vec<Record> {
    let alice = SecretKey::from_seed([1; 32]);
    let bob = SecretKey::from_seed([2; 32]);
    let mut maintainers = vec![alice.public(), bob.public()];
    maintainers.sort();
    let charter = Record::sign(
        &alice,
        1_700_000_000_000,
        Body::Charter(Charter {
            name: "Field guide".into(),
            summary: "Birds of the valley.\nWith drawings.".into(),
            license: "CC-BY-SA-4.0".into(),
            maintainers: maintainers.clone(),
            threshold: 1,
            fork: None,
        }),
    )
    .expect("a valid charter signs");
    let lineage = LineageId::from(charter.id());
    let patch = Record::sign(
        &bob,
        1_700_000_000_001,
        Body::Patch(Patch {
            lineage,
            parents: vec![id(3), id(4)],
            changes: vec![
                Change {
                    path: "README.md".into(),
                    before: None,
                    after: Some(BlobHash::of(b"# Field guide\n")),
                },
                Change {
                    path: "birds/heron.md".into(),
                    before: Some(BlobHash::of(b"heron")),
                    after: None,
                },
            ],
            message: "Start the guide".into(),
        }),
    )
    .expect("a valid patch signs");
    let validation = Record::sign(
        &alice,
        1_700_000_000_002,
        Body::Validation(Validation {
            lineage,
            patch: patch.id(),
            verdict: Verdict::Accept,
            note: "Thanks!".into(),
        }),
    )
    .expect("a valid validation signs");
    let fork = Record::sign(
        &bob,
        1_700_000_000_003,
        Body::Charter(Charter {
            name: "Field guide (bob)".into(),
            summary: String::new(),
            license: "MIT".into(),
            maintainers: vec![bob.public()],
            threshold: 1,
            fork: Some(ForkBase {
                parent: lineage,
                heads: vec![patch.id()],
                excluded: vec![id(3)],
            }),
        }),
    )
    .expect("a valid fork signs");
    vec![charter, patch, validation, fork]
}

fn record_seeds(records: &[Record]) -> Seeds {
    let names = ["charter", "patch", "validation", "fork"];
    names
        .into_iter()
        .zip(records)
        .map(|(n, r)| (n.to_owned(), r.bytes().to_vec()))
        .collect()
}

/// A frame as the codec writes it (length prefix and body) and the body alone.
fn frames(name: &str, body: Vec<u8>, framed: Vec<u8>, out: &mut Seeds) {
    out.push((name.to_owned(), framed));
    out.push((format!("{name}-body"), body));
}

fn sync_seeds(records: &[Record]) -> Seeds {
    let (initial, reply) = reconcile_pair();
    let requests = [
        (
            "get-records",
            SyncRequest::GetRecords {
                ids: records.iter().map(Record::id).collect(),
            },
        ),
        (
            "list-ids",
            SyncRequest::ListIds {
                family: LineageId([9; 32]),
                after: Some(id(1)),
                limit: 4096,
            },
        ),
        (
            "get-blob",
            SyncRequest::GetBlob {
                hash: BlobHash::of(b"hello"),
                offset: 0,
                len: MAX_BLOB_CHUNK,
            },
        ),
        (
            "get-outboard",
            SyncRequest::GetOutboard {
                hash: BlobHash::of(b"hello"),
                offset: 64,
                len: 4096,
            },
        ),
        (
            "reconcile",
            SyncRequest::Reconcile {
                family: LineageId([9; 32]),
                round: 0,
                message: initial,
            },
        ),
        (
            "get-small-blobs",
            SyncRequest::GetSmallBlobs {
                hashes: vec![BlobHash::of(b"a"), BlobHash::of(b"b")],
            },
        ),
        ("open-bulk", SyncRequest::OpenBulk { clear: false }),
    ];
    let mut out = Seeds::new();
    for (name, req) in requests {
        let mut framed = Vec::new();
        block_on(SyncCodec.write_request(&PROTOCOL, &mut framed, req.clone()))
            .expect("a request writes");
        let body = wire::encode(&req, MAX_REQUEST_BYTES).expect("a request encodes");
        frames(name, body, framed, &mut out);
    }
    let responses = [
        (
            "records",
            SyncResponse::Records(records.iter().map(|r| r.bytes().to_vec()).collect()),
        ),
        (
            "ids",
            SyncResponse::Ids {
                ids: vec![id(1), id(2), id(5)],
                more: true,
            },
        ),
        (
            "blob",
            SyncResponse::Blob {
                total_len: 5,
                bytes: b"hello".to_vec(),
            },
        ),
        (
            "outboard",
            SyncResponse::Outboard {
                total_len: 100_000,
                bytes: vec![7; 64],
            },
        ),
        ("reconcile-reply", SyncResponse::Reconcile(reply)),
        ("not-found", SyncResponse::NotFound),
        (
            "small-blobs",
            SyncResponse::SmallBlobs(vec![
                SmallBlob::Bytes(b"a".to_vec()),
                SmallBlob::TooLarge(1 << 20),
                SmallBlob::Missing,
            ]),
        ),
        (
            "bulk-ticket",
            SyncResponse::BulkTicket {
                port: 4002,
                token: [3; 32],
                key: Some([4; 32]),
            },
        ),
    ];
    for (name, resp) in responses {
        let mut framed = Vec::new();
        block_on(SyncCodec.write_response(&PROTOCOL, &mut framed, resp.clone()))
            .expect("a response writes");
        let body = wire::encode(&resp, MAX_RESPONSE_BYTES).expect("a response encodes");
        frames(name, body, framed, &mut out);
    }
    out
}

fn bundle_seeds(records: &[Record]) -> Seeds {
    let write = |records: &[Record], blobs: &[&[u8]]| {
        let mut w = BundleWriter::new(Vec::new(), records.len() as u64).expect("in memory");
        for r in records {
            w.record(r).expect("in memory");
        }
        w.blobs(blobs.len() as u64).expect("in memory");
        for b in blobs {
            w.blob(&BlobHash::of(b), b.len() as u64, &mut &b[..])
                .expect("in memory");
        }
        w.finish().expect("in memory")
    };
    let big = vec![0x5a; 70_000];
    named(vec![
        ("empty", write(&[], &[])),
        (
            "family",
            write(records, &[b"# Field guide\n", b"heron", b""]),
        ),
        ("repeated-blob", write(&records[..1], &[b"twice", b"twice"])),
        ("large-blob", write(&records[1..2], &[&big])),
    ])
}

/// Sets of ids for reconciliation: a large one and a smaller one that differs from it.
fn reconcile_sets() -> (SortedItems, SortedItems) {
    let ids = |n: u32, skip: u32| {
        (0..n)
            .filter(|i| skip == 0 || i % skip != 0)
            .map(|i| {
                let mut b = [0u8; 32];
                b[..4].copy_from_slice(&i.wrapping_mul(0x9e37_79b9).to_be_bytes());
                RecordId(b)
            })
            .collect::<Vec<_>>()
    };
    (
        SortedItems::new(ids(2000, 0)),
        SortedItems::new(ids(2000, 97)),
    )
}

/// The initiator's first message and the responder's answer to it.
fn reconcile_pair() -> (Message, Message) {
    let (a, b) = reconcile_sets();
    let first = Reconciler::new(Config::initiator()).initiate(&a);
    let reply = Reconciler::new(Config::responder())
        .receive(&b, &first)
        .expect("a valid message is answered")
        .expect("the sets differ");
    (first, reply)
}

/// Every message of a session between the two sets, and the first message of a small set.
fn reconcile_seeds() -> Seeds {
    let (a, b) = reconcile_sets();
    let mut init = Reconciler::new(Config::initiator());
    let mut resp = Reconciler::new(Config::responder());
    let mut out = Seeds::new();
    let encode = |m: &Message| wire::encode(m, MAX_RESPONSE_BYTES).expect("encodes");
    let mut next = Some(init.initiate(&a));
    let names = [
        "round-0", "round-1", "round-2", "round-3", "round-4", "round-5",
    ];
    for (round, name) in names.into_iter().enumerate() {
        let Some(m) = next.take() else { break };
        out.push((name.to_owned(), encode(&m)));
        next = if round % 2 == 0 {
            resp.receive(&b, &m).expect("answered")
        } else {
            init.receive(&a, &m).expect("answered")
        };
    }
    let small = SortedItems::new((1..=10).map(id).collect());
    let leaf = Reconciler::new(Config::initiator()).initiate(&small);
    out.push(("id-list".into(), encode(&leaf)));
    out.push(("empty".into(), encode(&Message::default())));
    out
}

fn control_seeds(records: &[Record]) -> Seeds {
    let key = SecretKey::from_seed([1; 32]).public();
    let requests = [
        (
            "put",
            Request::Put {
                records: records
                    .iter()
                    .map(|r| RecordBytes(r.bytes().to_vec()))
                    .collect(),
            },
        ),
        ("get", Request::Get { id: id(1) }),
        (
            "ids-with-prefix",
            Request::IdsWithPrefix {
                prefix: "0a1b".into(),
                limit: 10,
            },
        ),
        ("lineages", Request::Lineages),
        (
            "patches",
            Request::Patches {
                lineage: LineageId([2; 32]),
                status: Some(PatchStatus::Pending),
            },
        ),
        (
            "fetch-blobs",
            Request::FetchBlobs {
                hashes: vec![BlobHash::of(b"x")],
            },
        ),
        (
            "block",
            Request::Block {
                entry: key.to_did(),
                on: true,
            },
        ),
        (
            "connect",
            Request::Connect {
                addr: "/ip4/127.0.0.1/tcp/4001".into(),
            },
        ),
        ("want-progress", Request::WantProgress),
        ("verify-store", Request::VerifyStore),
    ];
    let status = NodeStatus {
        peer_id: "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into(),
        node_key: key,
        listen_addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
        peers: 1,
        followed: vec![LineageId([2; 32])],
        store_bytes: 4096,
        records: 4,
        banned: Vec::new(),
        blobs: Default::default(),
        reconcile: Default::default(),
        damaged: Default::default(),
        refused: [("malformed".to_string(), 2)].into_iter().collect(),
        bootstrap: vec![commons_rpc::BootstrapPeer {
            addr: "/ip4/127.0.0.1/tcp/4002".into(),
            connected: false,
            failed_dials: 3,
            next_dial_ms: Some(4_000),
        }],
        web: Some("http://127.0.0.1:7217/".into()),
    };
    let responses = [
        (
            "stored",
            Response::Stored(records.iter().map(Record::id).collect()),
        ),
        (
            "record",
            Response::Record(Some(RecordBytes(records[0].bytes().to_vec()))),
        ),
        (
            "patches-answer",
            Response::Patches(vec![(id(1), PatchStatus::Accepted)]),
        ),
        ("node-status", Response::NodeStatus(Box::new(status))),
        (
            "peers",
            Response::Peers(vec![Peer {
                peer_id: "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into(),
                addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
                score: Some(-12.625),
                strikes: 3,
            }]),
        ),
        ("synced", Response::Synced(SyncReport::default())),
        (
            "progress",
            Response::Progress(Progress {
                what: "blobs".into(),
                items_done: 1,
                items_total: 2,
                bytes_done: 3,
                bytes_total: 4,
            }),
        ),
        (
            "verified",
            Response::Verified(VerifyReport {
                records: 4,
                damaged_records: 1,
                blobs: 2,
                blob_bytes: 100,
                damaged_blobs: vec![BlobHash::of(b"rot")],
                millis: 12,
            }),
        ),
        ("ok", Response::Ok),
        (
            "error",
            Response::Error(RpcError {
                code: "not_found".into(),
                message: "no such lineage".into(),
            }),
        ),
    ];
    let mut out = Seeds::new();
    let mut stream = Vec::new();
    for (name, req) in requests {
        let framed = encode_frame(&req).expect("encodes");
        stream.extend_from_slice(&framed);
        frames(name, framed[4..].to_vec(), framed, &mut out);
    }
    out.push(("request-stream".into(), stream));
    for (name, resp) in responses {
        let framed = encode_frame(&resp).expect("encodes");
        frames(name, framed[4..].to_vec(), framed, &mut out);
    }
    out
}

fn config_seeds() -> Seeds {
    let documented = r#"listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
bootstrap = ["/dns4/boot.example.org/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"]
mdns = true
kademlia = true
sync_interval_secs = 30
blobs = "eager"   # or "lazy": fetch a patch's files only when a checkout needs them
bulk = true       # large blobs over a plain TCP connection (checked, not encrypted)
bulk_port = 0     # the bulk port (0: chosen by the OS)
max_connections_per_ip = 16   # inbound connections from one IP address

[gossip]          # rate limits on gossip records (token buckets: a burst, then a rate)
peer_burst = 20000
peer_per_sec = 1000
author_burst = 10000
author_per_sec = 100
"#;
    named(vec![
        ("documented", documented.as_bytes().to_vec()),
        ("empty", Vec::new()),
        (
            "lazy",
            b"blobs = \"lazy\"\nbulk = false\nsync_interval_secs = 5\n".to_vec(),
        ),
        (
            "gossip-floats",
            b"[gossip]\npeer_burst = 1.5e3\nauthor_per_sec = 2.25\n".to_vec(),
        ),
    ])
}
