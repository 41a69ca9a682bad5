//! [`DaemonBackend`]: the [`Backend`] of a home whose `commonsd` is running, spoken over the
//! daemon's control socket (`HOME/commonsd.sock`, see `commons-rpc`).
//!
//! While the daemon runs it holds the store's lock, so this backend never opens the store: every
//! record read or write is one request and one response on the socket, and every record that
//! comes back is decoded (and so verified) again here. Blobs are plain files whose writes are
//! atomic (temporary file, fsync, rename), so the blob directory of the home is used directly.
//!
//! Besides the store operations it carries the node's own requests (status, peers, connect,
//! follow, unfollow, sync), which only a daemon can answer.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use commons_core::state::PatchStatus;
use commons_core::tree::Outcome;
use commons_core::{BlobHash, LineageId, Record, RecordId};
use commons_rpc::{
    FrameError, NodeStatus, Peer, RecordBytes, Request, Response, RpcError, Summary, SyncReport,
};
use commons_store::home::Home;
use commons_store::{BlobStore, LineageSummary};

use crate::backend::{Backend, BlobReader};
use crate::error::{CliError, Result};

/// How long one answer may take. Generous: a `sync` asks every peer in turn and fetches blobs,
/// but a hung daemon must not hang the CLI forever.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
/// How long sending one request may take (the daemon reads requests promptly).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the control socket of `home` is.
pub fn socket_path(home: &Home) -> PathBuf {
    home.root().join(commons_rpc::SOCKET_NAME)
}

/// The error of a command that needs a daemon when none answers for `home`.
pub fn not_running(home: &Home) -> CliError {
    let dir = home.root().display();
    CliError::no_daemon(format!("no commonsd is running with home {dir}")).hint(format!(
        "start it with `commonsd` (or `commonsd --home {dir}`)"
    ))
}

/// A client of a running `commonsd`: one connection, one request at a time.
#[derive(Debug)]
pub struct DaemonBackend {
    stream: UnixStream,
    blobs: BlobStore,
    socket: PathBuf,
    /// Set once an exchange failed half-way: the stream may be out of step, so it is not reused.
    broken: std::cell::Cell<bool>,
    /// Whether the daemon was asked for progress frames on this connection.
    progress: std::cell::Cell<bool>,
    /// Draws them.
    meter: std::cell::RefCell<crate::progress::Meter>,
}

impl DaemonBackend {
    /// Connects to the daemon of `home`. `None` if no socket is there or nothing answers on it
    /// (a stale socket left by a daemon that died).
    pub fn connect(home: &Home) -> Result<Option<Self>> {
        let socket = socket_path(home);
        if !socket.exists() {
            return Ok(None);
        }
        let Ok(stream) = UnixStream::connect(&socket) else {
            return Ok(None);
        };
        let setup = |e: std::io::Error| {
            CliError::error(format!("control socket {}: {e}", socket.display()))
        };
        stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .map_err(setup)?;
        stream
            .set_write_timeout(Some(SEND_TIMEOUT))
            .map_err(setup)?;
        let blobs_dir = home.store_dir().join("blobs");
        let blobs = BlobStore::open_shared(&blobs_dir).map_err(|e| {
            CliError::error(format!("blob store {}: {e}", blobs_dir.display()))
                .hint("check the home directory's permissions")
        })?;
        Ok(Some(Self {
            stream,
            blobs,
            socket,
            broken: std::cell::Cell::new(false),
            progress: std::cell::Cell::new(false),
            meter: std::cell::RefCell::new(crate::progress::Meter::default()),
        }))
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `req` and reads the answer; an `Error` answer becomes a [`CliError`].
    fn call(&self, req: &Request) -> Result<Response> {
        if self.broken.get() {
            return Err(CliError::error(
                "the connection to commonsd failed earlier in this command",
            )
            .hint("run the command again"));
        }
        let mut stream = &self.stream;
        // Progress frames come before the answer; each one also restarts the read timeout.
        let exchange = commons_rpc::write_msg(&mut stream, req).and_then(|()| {
            loop {
                match commons_rpc::read_msg::<Response>(&mut stream)? {
                    Response::Progress(p) => self.meter.borrow_mut().show(&p),
                    other => {
                        self.meter.borrow_mut().finish();
                        break Ok(other);
                    }
                }
            }
        });
        match exchange {
            Ok(Response::Error(e)) => Err(rpc_error(e)),
            Ok(r) => Ok(r),
            Err(e) => {
                self.broken.set(true);
                Err(frame_error(&self.socket, e))
            }
        }
    }

    /// The node's status.
    pub fn status(&self) -> Result<NodeStatus> {
        match self.call(&Request::NodeStatus)? {
            Response::NodeStatus(s) => Ok(*s),
            other => Err(unexpected("node status", &other)),
        }
    }

    /// The connected peers.
    pub fn peers(&self) -> Result<Vec<Peer>> {
        match self.call(&Request::NodePeers)? {
            Response::Peers(p) => Ok(p),
            other => Err(unexpected("node peers", &other)),
        }
    }

    /// Starts dialling `addr` (a multiaddr, checked by the daemon).
    pub fn connect_peer(&self, addr: &str) -> Result<()> {
        match self.call(&Request::Connect {
            addr: addr.to_owned(),
        })? {
            Response::Ok => Ok(()),
            other => Err(unexpected("connect", &other)),
        }
    }

    /// Blocks (`on`) or unblocks an author or a peer.
    pub fn block(&self, entry: &str, on: bool) -> Result<()> {
        match self.call(&Request::Block {
            entry: entry.to_owned(),
            on,
        })? {
            Response::Ok => Ok(()),
            other => Err(unexpected("block", &other)),
        }
    }

    /// Checks the store at rest (`commons store verify`).
    pub fn verify_store(&self) -> Result<commons_rpc::VerifyReport> {
        match self.call(&Request::VerifyStore)? {
            Response::Verified(report) => Ok(report),
            other => Err(unexpected("verify", &other)),
        }
    }

    /// The block list.
    pub fn blocked(&self) -> Result<Vec<String>> {
        match self.call(&Request::Blocked)? {
            Response::Blocked(list) => Ok(list),
            other => Err(unexpected("blocked", &other)),
        }
    }

    /// Follows a lineage and pulls it from peers now.
    pub fn follow(&self, lineage: LineageId) -> Result<SyncReport> {
        self.want_progress();
        match self.call(&Request::Follow { lineage })? {
            Response::Synced(r) => Ok(r),
            other => Err(unexpected("follow", &other)),
        }
    }

    /// Stops following a lineage.
    pub fn unfollow(&self, lineage: LineageId) -> Result<()> {
        match self.call(&Request::Unfollow { lineage })? {
            Response::Ok => Ok(()),
            other => Err(unexpected("unfollow", &other)),
        }
    }

    /// Stops following a lineage and drops its family's records if nothing else of the
    /// family is followed.
    pub fn forget(&self, lineage: LineageId) -> Result<commons_rpc::ForgetReport> {
        match self.call(&Request::Forget { lineage })? {
            Response::Forgotten(r) => Ok(r),
            other => Err(unexpected("forget", &other)),
        }
    }

    /// Asks the daemon, once per connection, for progress frames before long answers. A daemon
    /// that does not know the request refuses it; then there is simply no progress shown.
    fn want_progress(&self) {
        if !self.progress.replace(true) {
            let _ = self.call(&Request::WantProgress);
        }
    }

    /// Fetches blobs from the daemon's peers now (for a checkout on a `lazy` node), showing
    /// progress.
    pub fn fetch_blobs(&self, hashes: Vec<BlobHash>) -> Result<SyncReport> {
        self.want_progress();
        match self.call(&Request::FetchBlobs { hashes })? {
            Response::Synced(r) => Ok(r),
            other => Err(unexpected("fetch blobs", &other)),
        }
    }

    /// Pulls a lineage's family from peers now.
    pub fn sync(&self, lineage: LineageId) -> Result<SyncReport> {
        self.want_progress();
        match self.call(&Request::Sync { lineage })? {
            Response::Synced(r) => Ok(r),
            other => Err(unexpected("sync", &other)),
        }
    }
}

/// The name of a response variant, for error messages.
fn response_name(r: &Response) -> &'static str {
    match r {
        Response::Stored(_) => "stored",
        Response::Record(_) => "record",
        Response::Records(_) => "records",
        Response::Ids(_) => "ids",
        Response::Lineages(_) => "lineages",
        Response::Lineage(_) => "lineage",
        Response::Patches(_) => "patches",
        Response::Status(_) => "status",
        Response::History(_) => "history",
        Response::Tree(_) => "tree",
        Response::NodeStatus(_) => "node status",
        Response::Peers(_) => "peers",
        Response::Blocked(_) => "blocked",
        Response::Synced(_) => "synced",
        Response::Verified(_) => "verified",
        Response::Forgotten(_) => "forgotten",
        Response::Ok => "ok",
        Response::Progress(_) => "progress",
        Response::Error(_) => "error",
    }
}

fn unexpected(request: &str, got: &Response) -> CliError {
    CliError::error(format!(
        "commonsd answered a {request} request with a {} response",
        response_name(got)
    ))
    .hint("the commons and commonsd versions may differ; install matching versions")
}

/// Maps the daemon's error to the CLI's: `not_found` is exit code 3, `invalid` (a value the
/// daemon refused, e.g. an address that is not a multiaddr) exit code 2, anything else 1. The
/// daemon's message is kept as it is.
pub fn rpc_error(e: RpcError) -> CliError {
    match e.code.as_str() {
        "not_found" => CliError::not_found(e.message),
        "invalid" => CliError::usage(e.message).hint("fix the value and run the command again"),
        "network" => CliError::error(e.message)
            .hint("check the address and that the peer is reachable; `commons node peers` lists connected peers"),
        "store" => CliError::error(e.message)
            .hint("check the daemon's log and the disk of its home"),
        "blocked" | "exists" | "full" => CliError::refused(e.message),
        other => CliError::error(format!("commonsd: {} ({other})", e.message))
            .hint("the commons and commonsd versions may differ; install matching versions"),
    }
}

fn frame_error(socket: &Path, e: FrameError) -> CliError {
    let socket = socket.display();
    match e {
        FrameError::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            CliError::error(format!(
                "commonsd did not answer within {} s on {socket}",
                ANSWER_TIMEOUT.as_secs()
            ))
            .hint("check the daemon's log; restart it if it is stuck")
        }
        FrameError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            CliError::error(format!("commonsd closed the connection on {socket}"))
                .hint("the daemon may have stopped; check its log and run the command again")
        }
        other => CliError::error(format!("talking to commonsd on {socket}: {other}"))
            .hint("check the daemon's log; the commons and commonsd versions may differ"),
    }
}

/// Decodes (and so verifies) a record the daemon sent.
fn decode(bytes: &RecordBytes) -> Result<Record> {
    Record::decode(&bytes.0).map_err(|e| {
        CliError::error(format!("commonsd sent an invalid record: {e}"))
            .hint("the daemon's store may be damaged; check its log")
    })
}

fn decode_all(list: &[RecordBytes]) -> Result<Vec<Record>> {
    list.iter().map(decode).collect()
}

/// Turns the daemon's summary into the store's: the charter is decoded and must be the charter
/// of that lineage; founder and creation time are its author and timestamp.
pub fn lineage_summary(s: Summary) -> Result<LineageSummary> {
    let record = decode(&s.charter)?;
    let Some(charter) = record.as_charter().cloned() else {
        return Err(CliError::error(format!(
            "commonsd sent a {} as the charter of {}",
            record.kind(),
            s.lineage
        ))
        .hint("the daemon's store may be damaged; check its log"));
    };
    if LineageId::from(record.id()) != s.lineage {
        return Err(CliError::error(format!(
            "commonsd sent the charter of {} for {}",
            record.id(),
            s.lineage
        ))
        .hint("the daemon's store may be damaged; check its log"));
    }
    Ok(LineageSummary {
        lineage: s.lineage,
        charter,
        founder: record.author(),
        created: record.timestamp(),
        family: s.family,
        root: s.root,
        counts: s.counts.into_iter().collect(),
        files: s.files,
        fork_point: s.fork_point,
    })
}

fn blob_io(e: std::io::Error) -> CliError {
    CliError::error(format!("blob store: {e}"))
        .hint("check the disk and the home directory's permissions")
}

impl Backend for DaemonBackend {
    fn put(&self, records: Vec<Record>) -> Result<Vec<RecordId>> {
        let records = records
            .iter()
            .map(|r| RecordBytes(r.bytes().to_vec()))
            .collect();
        // In pieces that fit the daemon's request limit; each piece is stored durably before
        // the next is sent, so an interrupted import keeps what it stored.
        let mut ids = Vec::new();
        for records in commons_rpc::put_chunks(records) {
            match self.call(&Request::Put { records })? {
                Response::Stored(stored) => ids.extend(stored),
                other => return Err(unexpected("put", &other)),
            }
        }
        Ok(ids)
    }

    fn get(&self, id: &RecordId) -> Result<Option<Record>> {
        match self.call(&Request::Get { id: *id })? {
            Response::Record(None) => Ok(None),
            Response::Record(Some(bytes)) => {
                let r = decode(&bytes)?;
                if r.id() != *id {
                    return Err(CliError::error(format!(
                        "commonsd sent record {} when asked for {id}",
                        r.id()
                    )));
                }
                Ok(Some(r))
            }
            other => Err(unexpected("get", &other)),
        }
    }

    fn ids_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<RecordId>> {
        match self.call(&Request::IdsWithPrefix {
            prefix: prefix.to_owned(),
            limit,
        })? {
            Response::Ids(ids) => Ok(ids),
            other => Err(unexpected("ids", &other)),
        }
    }

    fn lineages(&self) -> Result<Vec<LineageSummary>> {
        match self.call(&Request::Lineages)? {
            Response::Lineages(list) => list.into_iter().map(lineage_summary).collect(),
            other => Err(unexpected("lineages", &other)),
        }
    }

    fn lineage(&self, id: &LineageId) -> Result<Option<LineageSummary>> {
        match self.call(&Request::Lineage { lineage: *id })? {
            Response::Lineage(s) => s.map(lineage_summary).transpose(),
            other => Err(unexpected("lineage", &other)),
        }
    }

    fn family_records(&self, family: &LineageId) -> Result<Vec<Record>> {
        match self.call(&Request::FamilyRecords { family: *family })? {
            Response::Records(list) => decode_all(&list),
            other => Err(unexpected("family records", &other)),
        }
    }

    fn patches(
        &self,
        lineage: &LineageId,
        status: Option<PatchStatus>,
    ) -> Result<Vec<(RecordId, PatchStatus)>> {
        match self.call(&Request::Patches {
            lineage: *lineage,
            status,
        })? {
            Response::Patches(p) => Ok(p),
            other => Err(unexpected("patches", &other)),
        }
    }

    fn status(&self, lineage: &LineageId, patch: &RecordId) -> Result<Option<PatchStatus>> {
        match self.call(&Request::Status {
            lineage: *lineage,
            patch: *patch,
        })? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected("status", &other)),
        }
    }

    fn history(&self, lineage: &LineageId) -> Result<Vec<(RecordId, Outcome)>> {
        match self.call(&Request::History { lineage: *lineage })? {
            Response::History(h) => Ok(h),
            other => Err(unexpected("history", &other)),
        }
    }

    fn validations_of(&self, patch: &RecordId) -> Result<Vec<Record>> {
        match self.call(&Request::ValidationsOf { patch: *patch })? {
            Response::Records(list) => decode_all(&list),
            other => Err(unexpected("validations", &other)),
        }
    }

    fn tree(&self, lineage: &LineageId) -> Result<BTreeMap<String, BlobHash>> {
        match self.call(&Request::Tree { lineage: *lineage })? {
            Response::Tree(t) => Ok(t.into_iter().collect()),
            other => Err(unexpected("tree", &other)),
        }
    }

    fn put_blob(&self, reader: &mut dyn Read) -> Result<BlobHash> {
        self.blobs.put_reader(reader).map_err(blob_io)
    }

    fn has_blob(&self, hash: &BlobHash) -> Result<bool> {
        Ok(self.blobs.contains(hash))
    }

    fn open_blob(&self, hash: &BlobHash) -> Result<Option<BlobReader>> {
        let Some(file) = self.blobs.open_blob(hash).map_err(blob_io)? else {
            return Ok(None);
        };
        Ok(Some(BlobReader {
            len: file.len(),
            reader: Box::new(file),
        }))
    }

    fn close(&self) -> Result<()> {
        // The daemon owns the store and flushes it; closing the connection is all there is.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        Ok(())
    }

    fn daemon(&self) -> Option<&DaemonBackend> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commons_core::state::ForkPoint;
    use commons_core::{Body, Charter, SecretKey, StateRoot};

    use crate::error::ExitKind;

    fn charter(key: &SecretKey, ts: u64) -> Record {
        Record::sign(
            key,
            ts,
            Body::Charter(Charter {
                name: "Seeds".into(),
                summary: String::new(),
                license: "MIT".into(),
                maintainers: vec![key.public()],
                threshold: 1,
                fork: None,
            }),
        )
        .unwrap()
    }

    fn summary_of(record: &Record, lineage: LineageId) -> Summary {
        Summary {
            lineage,
            charter: RecordBytes(record.bytes().to_vec()),
            family: Some(lineage),
            root: StateRoot([7; 32]),
            counts: vec![(PatchStatus::Accepted, 2), (PatchStatus::Pending, 1)],
            files: 3,
            fork_point: ForkPoint::default(),
        }
    }

    #[test]
    fn summaries_take_founder_and_time_from_the_charter() {
        let key = SecretKey::from_seed([3; 32]);
        let rec = charter(&key, 1_700_000_000_000);
        let lineage = LineageId::from(rec.id());
        let s = lineage_summary(summary_of(&rec, lineage)).unwrap();
        assert_eq!(s.lineage, lineage);
        assert_eq!(s.charter.name, "Seeds");
        assert_eq!(s.founder, key.public());
        assert_eq!(s.created, 1_700_000_000_000);
        assert_eq!(s.family, Some(lineage));
        assert_eq!(s.files, 3);
        assert_eq!(s.counts.get(&PatchStatus::Accepted), Some(&2));
        assert_eq!(s.counts.get(&PatchStatus::Pending), Some(&1));
        assert_eq!(s.counts.get(&PatchStatus::Rejected), None);
    }

    #[test]
    fn summaries_with_a_wrong_or_damaged_charter_are_refused() {
        let key = SecretKey::from_seed([3; 32]);
        let rec = charter(&key, 1);
        let other = LineageId::from(charter(&key, 2).id());
        let e = lineage_summary(summary_of(&rec, other)).unwrap_err();
        assert_eq!(e.kind, ExitKind::Error);

        let lineage = LineageId::from(rec.id());
        let mut s = summary_of(&rec, lineage);
        if let Some(last) = s.charter.0.last_mut() {
            *last ^= 1;
        }
        let e = lineage_summary(s).unwrap_err();
        assert!(e.message.contains("invalid record"), "{}", e.message);
    }

    #[test]
    fn daemon_errors_keep_their_message_and_map_to_exit_codes() {
        let err = |code: &str| {
            rpc_error(RpcError {
                code: code.into(),
                message: format!("it went {code}"),
            })
        };
        let e = err("not_found");
        assert_eq!(
            (e.kind.code(), e.message.as_str()),
            (3, "it went not_found")
        );
        let e = err("invalid");
        assert_eq!((e.kind.code(), e.message.as_str()), (2, "it went invalid"));
        let e = err("network");
        assert_eq!((e.kind.code(), e.message.as_str()), (1, "it went network"));
        assert!(e.hint.is_some());
        let e = err("store");
        assert_eq!((e.kind.code(), e.message.as_str()), (1, "it went store"));
        let e = err("martian");
        assert_eq!(e.kind.code(), 1);
        assert!(e.message.contains("it went martian"), "{}", e.message);
    }

    #[test]
    fn no_daemon_is_exit_code_7_with_a_hint() {
        let home = Home::at("/nonexistent/commons-home");
        let e = not_running(&home);
        assert_eq!(e.kind.code(), 7);
        assert_eq!(
            e.to_string(),
            "error: no commonsd is running with home /nonexistent/commons-home\n\
             hint: start it with `commonsd` (or `commonsd --home /nonexistent/commons-home`)"
        );
        assert!(DaemonBackend::connect(&home).unwrap().is_none());
    }

    #[test]
    fn a_stale_socket_is_no_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let path = socket_path(&home);
        // A socket file nobody listens on any more.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        assert!(DaemonBackend::connect(&home).unwrap().is_none());
    }

    /// A fake daemon answering one connection with canned responses, to check the framing and
    /// the decoding of answers end to end.
    #[test]
    fn talks_frames_with_a_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let listener = std::os::unix::net::UnixListener::bind(socket_path(&home)).unwrap();
        let key = SecretKey::from_seed([5; 32]);
        let rec = charter(&key, 9);
        let bytes = RecordBytes(rec.bytes().to_vec());
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            while let Ok(req) = commons_rpc::read_msg::<Request>(&mut s) {
                let resp = match &req {
                    Request::Get { .. } => Response::Record(Some(bytes.clone())),
                    Request::Unfollow { .. } => Response::Error(RpcError {
                        code: "not_found".into(),
                        message: "not followed".into(),
                    }),
                    _ => Response::Ok,
                };
                seen.push(req);
                commons_rpc::write_msg(&mut s, &resp).unwrap();
            }
            seen
        });
        let d = DaemonBackend::connect(&home).unwrap().unwrap();
        assert_eq!(d.get(&rec.id()).unwrap().unwrap().id(), rec.id());
        let lineage = LineageId::from(rec.id());
        let e = d.unfollow(lineage).unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ExitKind::NotFound, "not followed")
        );
        // An answer of the wrong kind is an error, not a panic.
        let e = d.lineages().unwrap_err();
        assert!(e.message.contains("ok response"), "{}", e.message);
        // Blobs go straight to the home's blob directory.
        let h = d.put_blob(&mut &b"hello"[..]).unwrap();
        assert!(d.has_blob(&h).unwrap());
        d.close().unwrap();
        let seen = server.join().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(matches!(seen[1], Request::Unfollow { .. }));
    }
}
