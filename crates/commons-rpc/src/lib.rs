//! The control protocol between `commons` (the CLI) and `commonsd` (the daemon).
//!
//! The daemon listens on a Unix socket in its home (`commonsd.sock`, mode 0600). Each message is
//! a frame: a 4-byte big-endian length, then that many bytes of JSON. A client sends one
//! [`Request`] and reads one [`Response`] per frame; a connection may carry many exchanges.
//! Records cross as hex of their canonical bytes and are verified again on arrival.
//!
//! The requests mirror the store's read and write operations, so every CLI command runs the same
//! code whether it talks to the daemon or, when none runs, opens the store itself; plus the
//! node's own commands (status, peers, connect, follow, sync).

use std::io::{Read, Write};

use commons_core::state::{ForkPoint, PatchStatus};
use commons_core::tree::Outcome;
use commons_core::{BlobHash, Charter, LineageId, PublicKey, RecordId, StateRoot};
use serde::{Deserialize, Serialize};

/// File name of the control socket inside the home.
pub const SOCKET_NAME: &str = "commonsd.sock";
/// Largest frame a client reads: a whole family's records in one response must fit (the client
/// trusts its own daemon; the bound stops a broken one).
pub const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;
/// Largest request the daemon reads. Every request but `Put` is small; clients cut a `Put` into
/// pieces of [`PUT_CHUNK_BYTES`] of records ([`put_chunks`]), which hex encoding doubles. So a
/// client costs the daemon at most this much memory at once, whatever it sends.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;
/// Bytes of records per `Put` a client sends.
pub const PUT_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Cuts records into `Put` requests of at most [`PUT_CHUNK_BYTES`] of record bytes each (a
/// record is at most 128 KiB, so every piece fits [`MAX_REQUEST_BYTES`]), in order.
pub fn put_chunks(records: Vec<RecordBytes>) -> Vec<Vec<RecordBytes>> {
    let mut out = Vec::new();
    let mut piece = Vec::new();
    let mut bytes = 0usize;
    for r in records {
        if !piece.is_empty() && bytes + r.0.len() > PUT_CHUNK_BYTES {
            out.push(std::mem::take(&mut piece));
            bytes = 0;
        }
        bytes += r.0.len();
        piece.push(r);
    }
    if !piece.is_empty() || out.is_empty() {
        out.push(piece);
    }
    out
}

/// A record's canonical bytes, as hex in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RecordBytes(#[serde(with = "hex_bytes")] pub Vec<u8>);

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

/// A request from the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Store records (and publish the new ones to peers).
    Put {
        /// Canonical bytes of each record.
        records: Vec<RecordBytes>,
    },
    /// One record.
    Get {
        /// Its id.
        id: RecordId,
    },
    /// Ids starting with a hex prefix.
    IdsWithPrefix {
        /// Lowercase hex.
        prefix: String,
        /// At most this many.
        limit: usize,
    },
    /// All lineage summaries.
    Lineages,
    /// One lineage summary.
    Lineage {
        /// Which.
        lineage: LineageId,
    },
    /// Every record of a family.
    FamilyRecords {
        /// The family's root lineage.
        family: LineageId,
    },
    /// Patches listed in a lineage.
    Patches {
        /// Which lineage.
        lineage: LineageId,
        /// Only this status.
        status: Option<PatchStatus>,
    },
    /// The status of one patch in a lineage.
    Status {
        /// Which lineage.
        lineage: LineageId,
        /// Which patch.
        patch: RecordId,
    },
    /// Accepted history in order of application.
    History {
        /// Which lineage.
        lineage: LineageId,
    },
    /// Validations of a patch.
    ValidationsOf {
        /// The patch.
        patch: RecordId,
    },
    /// The canonical tree.
    Tree {
        /// Which lineage.
        lineage: LineageId,
    },
    /// The node's status.
    NodeStatus,
    /// Connected peers.
    NodePeers,
    /// Dial an address.
    Connect {
        /// A multiaddr, as text.
        addr: String,
    },
    /// Follow a commons (and its family).
    Follow {
        /// Which.
        lineage: LineageId,
    },
    /// Stop following.
    Unfollow {
        /// Which.
        lineage: LineageId,
    },
    /// Stop following a commons and, unless another commons of its family is still followed,
    /// drop its family's records and the blobs only they name. Answered with `Forgotten`.
    Forget {
        /// Which.
        lineage: LineageId,
    },
    /// Pull a commons from peers now.
    Sync {
        /// Which.
        lineage: LineageId,
    },
    /// Fetch blobs from connected peers now (a `checkout` on a node whose policy is `lazy`).
    /// Answered with `Synced`; blobs that no peer had are missing from its counts.
    FetchBlobs {
        /// The blobs wanted.
        hashes: Vec<BlobHash>,
    },
    /// Add (`on`) or remove an entry of the block list: a `did:key:…` author (their records
    /// are refused and not forwarded) or a peer id (disconnected and refused).
    Block {
        /// The entry, as text.
        entry: String,
        /// Block (true) or unblock.
        on: bool,
    },
    /// The block list. Answered with `Blocked`.
    Blocked,
    /// Checks the store at rest: every record hashed and decoded again and the derived
    /// indexes rebuilt from them (damaged records set aside), every blob hashed again
    /// (damaged ones moved aside and wanted again). Answered with `Verified`.
    VerifyStore,
    /// From now on, on this connection, `Sync`, `Follow` and `FetchBlobs` send `Progress`
    /// frames before their final answer. Answered with `Ok`.
    WantProgress,
}

/// A lineage summary as the daemon reports it (mirrors `commons_store::LineageSummary`; the
/// founder and creation time are the charter record's author and timestamp).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Which lineage.
    pub lineage: LineageId,
    /// Its charter, as canonical record bytes (decode to get the `Charter`).
    pub charter: RecordBytes,
    /// Family root.
    pub family: Option<LineageId>,
    /// State root.
    pub root: StateRoot,
    /// Patches per status.
    pub counts: Vec<(PatchStatus, usize)>,
    /// Files in the tree.
    pub files: u64,
    /// Fork point.
    pub fork_point: ForkPoint,
}

/// A connected peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    /// libp2p peer id.
    pub peer_id: String,
    /// Known addresses.
    pub addrs: Vec<String>,
    /// Its gossip score, if scored (negative: it misbehaved).
    pub score: Option<f64>,
    /// Recent strikes against it (invalid records, bad responses).
    pub strikes: u32,
}

/// The node's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// libp2p peer id.
    pub peer_id: String,
    /// The node key as did:key.
    pub node_key: PublicKey,
    /// Listening addresses.
    pub listen_addrs: Vec<String>,
    /// Number of connected peers.
    pub peers: usize,
    /// Followed lineages.
    pub followed: Vec<LineageId>,
    /// Bytes used by the store on disk (records and blobs).
    pub store_bytes: u64,
    /// Number of records held.
    pub records: u64,
    /// Peers banned at the moment for misbehaving.
    pub banned: Vec<String>,
    /// Blob downloads since the daemon started.
    #[serde(default)]
    pub blobs: BlobStats,
    /// Set reconciliation since the daemon started (catch-up of record ids).
    #[serde(default)]
    pub reconcile: ReconcileStats,
    /// Stored records that did not decode and were set aside.
    #[serde(default)]
    pub damaged: DamagedReport,
    /// Gossip messages refused since the daemon started, by kind: `oversized`, `bad signature`,
    /// `wrong topic`, `malformed`.
    #[serde(default)]
    pub refused: std::collections::BTreeMap<String, u64>,
    /// The bootstrap peers, dialled again with a backoff while they cannot be reached.
    #[serde(default)]
    pub bootstrap: Vec<BootstrapPeer>,
    /// The web explorer's URL (`None`: not served).
    #[serde(default)]
    pub web: Option<String>,
}

/// One bootstrap address of the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapPeer {
    /// The address, as configured.
    pub addr: String,
    /// Whether its peer is connected.
    pub connected: bool,
    /// Dials that failed since it was last connected.
    pub failed_dials: u32,
    /// Milliseconds until the next dial, if one waits.
    pub next_dial_ms: Option<u64>,
}

/// Most damaged records a status lists one by one (all are counted).
pub const MAX_DAMAGED_LISTED: usize = 20;

/// Stored records that did not decode: set aside, and fetched again when a peer has them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamagedReport {
    /// How many records were ever set aside in this store.
    pub count: u64,
    /// The first [`MAX_DAMAGED_LISTED`] of them.
    pub records: Vec<DamagedEntry>,
}

/// One record set aside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamagedEntry {
    /// The id it was stored under.
    pub id: RecordId,
    /// Why it did not decode.
    pub reason: String,
    /// Whether a good copy has been stored since.
    pub refetched: bool,
}

/// Set reconciliation since the daemon started (see `docs/protocol.md`, "Reconciliation").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileStats {
    /// Sessions this node started (one per peer and family per catch-up).
    pub sessions: u64,
    /// Round trips of those sessions.
    pub rounds: u64,
    /// Bytes of reconciliation messages sent and received in them.
    pub bytes: u64,
    /// Record ids they found missing here.
    pub missing: u64,
    /// Reconciliation rounds answered for peers.
    pub served: u64,
    /// `ListIds` pages answered for peers.
    #[serde(default)]
    pub pages: u64,
    /// Item sets built from the store (a family's ids read and hashed): the work behind
    /// `served` and `pages`, once per family until it changes.
    #[serde(default)]
    pub builds: u64,
}

/// Blob downloads since the daemon started (verified streaming, see `docs/protocol.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobStats {
    /// Blobs completed and stored.
    pub completed: u64,
    /// Verified bytes received from peers.
    pub received_bytes: u64,
    /// Bytes found already verified in partial downloads when they were resumed.
    pub resumed_bytes: u64,
    /// Chunk groups that failed verification (each cost its sender a strike when it came over
    /// libp2p; over a bulk connection it ends bulk transfers with that peer instead).
    pub bad_groups: u64,
    /// Verified bytes received per peer (peer id, bytes), for the peers seen first.
    pub by_peer: Vec<(String, u64)>,
    /// Downloads in progress.
    pub active: u64,
    /// Of `received_bytes`, those that came over bulk connections (plain TCP) rather than
    /// libp2p.
    #[serde(default)]
    pub bulk_bytes: u64,
    /// Blobs that stored patches create, not here yet, held by the downloader's queue (ready,
    /// running or waiting to be tried again).
    #[serde(default)]
    pub queued: u64,
    /// Of the queued, waiting for a retry after a failed attempt.
    #[serde(default)]
    pub waiting: u64,
    /// Blobs no peer gave after every attempt, left alone for a while.
    #[serde(default)]
    pub given_up: u64,
    /// Attempts at a blob that failed, since the daemon started.
    #[serde(default)]
    pub failed_attempts: u64,
}

/// How far long work has got, sent before the final answer when the client asked for it
/// (`WantProgress`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// What is being done (`records`, `blobs`).
    pub what: String,
    /// Items done.
    pub items_done: u64,
    /// Items known so far.
    pub items_total: u64,
    /// Bytes done.
    pub bytes_done: u64,
    /// Bytes known so far.
    pub bytes_total: u64,
}

/// What `VerifyStore` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Records checked and indexed again.
    pub records: u64,
    /// Records set aside as damaged, in all (this check and earlier ones).
    pub damaged_records: u64,
    /// Blobs hashed again.
    pub blobs: u64,
    /// Their bytes.
    pub blob_bytes: u64,
    /// Blobs found damaged now: moved aside and wanted again.
    pub damaged_blobs: Vec<BlobHash>,
    /// How long it took, in milliseconds.
    pub millis: u64,
}

/// What `Forget` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetReport {
    /// The family of the commons named.
    pub family: LineageId,
    /// Lineages no longer followed.
    pub unfollowed: Vec<LineageId>,
    /// Lineages of the family still followed: when any is, the records are kept.
    pub still_followed: Vec<LineageId>,
    /// Lineages whose records were dropped (none when the family is still followed).
    pub dropped: Vec<LineageId>,
    /// Records dropped.
    pub records: u64,
    /// Blobs removed (no remaining record names them).
    pub blobs: u64,
    /// Bytes those held.
    pub blob_bytes: u64,
    /// Blobs only the family named that are packed with others, kept until a repack.
    pub packed_kept: u64,
}

/// What a sync brought.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// Peers asked.
    pub peers: usize,
    /// Records that were new.
    pub new_records: usize,
    /// Blobs fetched.
    pub new_blobs: usize,
    /// Bytes of blobs fetched.
    pub blob_bytes: u64,
}

impl SyncReport {
    /// Adds what `other` brought (records, blobs, bytes; the peers asked stay this report's).
    pub fn absorb(&mut self, other: SyncReport) {
        self.new_records += other.new_records;
        self.new_blobs += other.new_blobs;
        self.blob_bytes += other.blob_bytes;
    }
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Response {
    /// Ids that were new.
    Stored(Vec<RecordId>),
    /// One record, if present.
    Record(Option<RecordBytes>),
    /// Many records.
    Records(Vec<RecordBytes>),
    /// Ids.
    Ids(Vec<RecordId>),
    /// Lineage summaries.
    Lineages(Vec<Summary>),
    /// One lineage summary.
    Lineage(Option<Summary>),
    /// Patches with their status.
    Patches(Vec<(RecordId, PatchStatus)>),
    /// One patch's status; `None` if the lineage does not list it.
    Status(Option<PatchStatus>),
    /// History with outcomes.
    History(Vec<(RecordId, Outcome)>),
    /// A tree.
    Tree(Vec<(String, BlobHash)>),
    /// Node status.
    NodeStatus(Box<NodeStatus>),
    /// Peers.
    Peers(Vec<Peer>),
    /// The block list's entries (`did:key:…` authors and peer ids).
    Blocked(Vec<String>),
    /// Sync report.
    Synced(SyncReport),
    /// What `VerifyStore` found.
    Verified(VerifyReport),
    /// What `Forget` did.
    Forgotten(ForgetReport),
    /// Done, nothing to report.
    Ok,
    /// Not the answer yet: how far the work has got (only after `WantProgress`).
    Progress(Progress),
    /// The request failed.
    Error(RpcError),
}

/// An error reported by the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct RpcError {
    /// What kind of failure, for exit codes: `invalid`, `not_found`, `store`, `network`.
    pub code: String,
    /// What happened.
    pub message: String,
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The other side sent more than [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    /// The JSON does not parse.
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
    /// The socket failed.
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes one message as a frame.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Parses a frame's length prefix, refusing one over the limit.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Parses a request frame's length prefix, refusing one over [`MAX_REQUEST_BYTES`].
pub fn request_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_REQUEST_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Writes one message (blocking).
pub fn write_msg<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode_frame(msg)?)?;
    w.flush()?;
    Ok(())
}

/// Reads one message (blocking).
pub fn read_msg<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> Result<T, FrameError> {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix)?;
    let body = read_body(r, frame_len(prefix)?)?;
    Ok(serde_json::from_slice(&body)?)
}

/// Most bytes of a frame's body reserved before any of it has arrived: the buffer grows with
/// what is read, so a length prefix alone (4 bytes claiming up to [`MAX_FRAME_BYTES`]) cannot
/// make the reader allocate its claim.
const BODY_RESERVE_BYTES: usize = 64 * 1024;

/// Reads exactly `len` bytes (already checked against the cap), failing with `UnexpectedEof`
/// as `read_exact` does when the stream ends first.
fn read_body(r: &mut impl Read, len: usize) -> Result<Vec<u8>, FrameError> {
    let mut body = Vec::with_capacity(len.min(BODY_RESERVE_BYTES));
    r.by_ref().take(len as u64).read_to_end(&mut body)?;
    if body.len() != len {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    Ok(body)
}

/// Convenience: the charter inside a summary.
pub fn summary_charter(s: &Summary) -> Option<Charter> {
    commons_core::Record::decode(&s.charter.0)
        .ok()
        .and_then(|r| r.as_charter().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puts_are_cut_to_fit_a_request() {
        let big = |n: u8| RecordBytes(vec![n; 128 * 1024]);
        let records: Vec<RecordBytes> = (0..100u8).map(big).collect();
        let pieces = put_chunks(records.clone());
        assert!(pieces.len() >= 3);
        for p in &pieces {
            let frame = encode_frame(&Request::Put { records: p.clone() }).unwrap();
            assert!(frame.len() - 4 <= MAX_REQUEST_BYTES, "{}", frame.len());
        }
        assert_eq!(pieces.concat(), records, "in order, nothing lost");
        assert_eq!(put_chunks(vec![]), vec![Vec::<RecordBytes>::new()]);
        let over = ((MAX_REQUEST_BYTES + 1) as u32).to_be_bytes();
        assert!(matches!(request_len(over), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn frames_round_trip() {
        let req = Request::Put {
            records: vec![RecordBytes(vec![1, 2, 255])],
        };
        let mut buf = Vec::new();
        write_msg(&mut buf, &req).unwrap();
        let back: Request = read_msg(&mut buf.as_slice()).unwrap();
        assert_eq!(back, req);
        assert!(String::from_utf8_lossy(&buf[4..]).contains("\"0102ff\""));
    }

    /// A reader of `data` that records the largest buffer it was asked to fill.
    struct Recording<'a> {
        data: &'a [u8],
        largest: usize,
    }

    impl Read for Recording<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.largest = self.largest.max(buf.len());
            self.data.read(buf)
        }
    }

    #[test]
    fn a_length_prefix_alone_does_not_allocate_its_claim() {
        // Found by the `control_frame` fuzz target (fuzz/regressions/control_frame/): five bytes
        // claiming a frame of MAX_FRAME_BYTES made the reader allocate 256 MiB.
        let mut input = (MAX_FRAME_BYTES as u32).to_be_bytes().to_vec();
        input.push(b'M');
        let mut r = Recording {
            data: &input,
            largest: 0,
        };
        match read_msg::<Request>(&mut r) {
            Err(FrameError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
            other => panic!("expected a truncated frame, got {other:?}"),
        }
        assert!(
            r.largest <= BODY_RESERVE_BYTES,
            "asked for {} bytes",
            r.largest
        );
        // A frame that does arrive whole, longer than the first reservation, still reads.
        let long = Request::Connect {
            addr: "x".repeat(3 * BODY_RESERVE_BYTES),
        };
        let frame = encode_frame(&long).unwrap();
        assert_eq!(read_msg::<Request>(&mut frame.as_slice()).unwrap(), long);
        assert!(read_msg::<Request>(&mut &frame[..frame.len() - 1]).is_err());
    }

    #[test]
    fn oversized_frames_are_refused_before_reading() {
        let prefix = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes();
        let mut r = prefix.to_vec();
        r.extend_from_slice(b"{}");
        assert!(matches!(
            read_msg::<Request>(&mut r.as_slice()),
            Err(FrameError::TooLarge(_))
        ));
    }
}
