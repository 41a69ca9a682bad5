//! **web**: the web explorer's pages under load, against a static file of the same size from
//! the same server in the same run.
//!
//! The issue: "On a 100k-patch commons: the commons page and a patches page answer in ≤ 50 ms
//! at p99 with 50 concurrent clients".
//!
//! - **Fixture (not timed):** a linear history of `--history` patches, each accepted
//!   ([`build_history`]), in a home with an identity; one `commonsd` on it (the shared harness:
//!   127.0.0.1 only, no mDNS, `--no-kademlia`, the explorer on a port the kernel picks).
//! - **Measured**, each separately and in this order: the commons page `/c/ID`, the patches page
//!   `/c/ID/patches` (page 1, the newest) and an older patches page (`?page=1000`, or the last
//!   page when there are fewer). `--web-clients` clients (50), each on its own keep-alive
//!   HTTP/1.1 connection, first [`WARMUP`] requests each, then, starting together,
//!   [`REQUESTS`] requests each back to back. A request's latency runs from writing it to
//!   having read the whole body. Every answer must be a `200` with a `Content-Length` body.
//! - **Reference**, measured right after each page the same way: `/blob/HASH` of a blob whose
//!   size is that page's body size, put as a loose file into the daemon's blob store
//!   (`BlobStore::open_shared`) while it runs, so the same server streams a static file of the
//!   same size from disk.
//!
//! The HTTP client is written here over `tokio::net::TcpStream` ([`Conn`]): it sends exactly
//! `Host: 127.0.0.1:PORT` (the explorer refuses other hosts on loopback) and reads only
//! `Content-Length` bodies; anything else is an error.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use commons_store::BlobStore;
use commons_store::home::Home;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::daemon::find_commonsd;
use crate::store::build_history;
use crate::{Opts, Row, percentile};

/// Requests per client before the measured ones (not recorded).
pub const WARMUP: usize = 5;
/// Measured requests per client.
pub const REQUESTS: usize = 40;
/// The older patches page asked for (or the last, if there are fewer).
pub const OLDER_PAGE: usize = 1000;
/// Patches per page of the explorer (`commons_web::view::PAGE`).
const PER_PAGE: usize = 50;
/// The target of the issue, p99 in milliseconds.
const TARGET_MS: f64 = 50.0;
/// Longest wait for one answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the explorer to answer its first `200`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Between two attempts while waiting for the explorer.
const READY_RETRY: Duration = Duration::from_millis(20);
/// The largest response head accepted.
const MAX_HEAD: usize = 64 << 10;
/// The largest body accepted (pages are tens of KiB; bounded so a bug cannot eat memory).
const MAX_BODY: usize = 64 << 20;

/// One answer.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The body (as long as `Content-Length` said).
    pub body: Vec<u8>,
}

/// One keep-alive HTTP/1.1 connection (a request at a time, no pipelining).
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    /// The `Host` header sent: `127.0.0.1:PORT`.
    host: String,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to `addr`, sending `Host: addr` with every request.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            host: addr.to_string(),
            buf: Vec::with_capacity(64 << 10),
        })
    }

    /// Reads more bytes into the buffer; the peer closing is an error.
    async fn fill(&mut self) -> anyhow::Result<()> {
        self.buf.reserve(64 << 10);
        let n = self.stream.read_buf(&mut self.buf).await?;
        ensure!(n > 0, "the server closed the connection mid-answer");
        Ok(())
    }

    /// `GET path`, and its whole answer, within [`REQUEST_TIMEOUT`].
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Reply> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(path))
            .await
            .with_context(|| format!("GET {path}: no answer in {REQUEST_TIMEOUT:?}"))?
            .with_context(|| format!("GET {path}"))
    }

    async fn exchange(&mut self, path: &str) -> anyhow::Result<Reply> {
        ensure!(self.buf.is_empty(), "bytes left over from the last answer");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        self.stream.write_all(request.as_bytes()).await?;
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            ensure!(
                self.buf.len() <= MAX_HEAD,
                "a response head over {MAX_HEAD} bytes"
            );
            self.fill().await?;
        };
        let (status, length) = parse_head(&self.buf[..head_end])?;
        self.buf.drain(..head_end);
        while self.buf.len() < length {
            self.fill().await?;
        }
        ensure!(
            self.buf.len() == length,
            "{} bytes after a body of {length}",
            self.buf.len() - length
        );
        Ok(Reply {
            status,
            body: std::mem::take(&mut self.buf),
        })
    }
}

/// The status and `Content-Length` of a response head (status line, headers, blank line).
/// Anything but an HTTP/1.1 answer with one `Content-Length` and no `Transfer-Encoding` is an
/// error, and so is `Connection: close` (the connections are kept alive).
pub fn parse_head(head: &[u8]) -> anyhow::Result<(u16, usize)> {
    let head = std::str::from_utf8(head).context("a response head that is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next(), parts.next());
    ensure!(
        version == Some("HTTP/1.1"),
        "not an HTTP/1.1 status line: {status_line:?}"
    );
    let status: u16 = code
        .and_then(|c| c.parse().ok())
        .filter(|c| (200..600).contains(c))
        .with_context(|| format!("a bad status line: {status_line:?}"))?;
    let mut length = None;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("a malformed header: {line:?}"))?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .with_context(|| format!("a bad Content-Length: {value:?}"))?;
            ensure!(length.replace(n).is_none(), "more than one Content-Length");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("Transfer-Encoding {value} (only Content-Length bodies are read)");
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            bail!("the server closes the connection (Connection: close)");
        }
    }
    let length = length.context("no Content-Length")?;
    ensure!(length <= MAX_BODY, "a body of {length} bytes");
    Ok((status, length))
}

/// What one load measurement gave.
#[derive(Debug, Clone)]
pub struct Load {
    /// Every measured request's latency, ms, sorted.
    pub latencies: Vec<f64>,
    /// The smallest and largest body seen, bytes.
    pub body: (usize, usize),
}

impl Load {
    /// The p-th percentile, ms.
    pub fn p(&self, p: f64) -> f64 {
        percentile(&self.latencies, p)
    }
}

/// `clients` clients, each on its own connection: [`WARMUP`] requests each, then all together
/// `requests` each back to back, every one timed. Every answer must be a `200` (of
/// `expect_len` bytes, if given).
pub async fn load(
    addr: SocketAddr,
    path: &str,
    clients: usize,
    requests: usize,
    expect_len: Option<usize>,
) -> anyhow::Result<Load> {
    let clients = clients.max(1);
    let start = Arc::new(tokio::sync::Barrier::new(clients));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (start, path) = (start.clone(), path.to_owned());
        tasks.spawn(async move {
            let check = |r: &Reply| -> anyhow::Result<usize> {
                ensure!(r.status == 200, "GET {path}: status {}", r.status);
                if let Some(n) = expect_len {
                    ensure!(
                        r.body.len() == n,
                        "GET {path}: {} bytes, expected {n}",
                        r.body.len()
                    );
                }
                Ok(r.body.len())
            };
            let warm = async {
                let mut conn = Conn::connect(addr).await?;
                for _ in 0..WARMUP {
                    check(&conn.get(&path).await?)?;
                }
                anyhow::Ok(conn)
            }
            .await;
            // Every client reaches the barrier, even one that failed, so none waits forever.
            start.wait().await;
            let mut conn = warm?;
            let mut times = Vec::with_capacity(requests);
            let mut sizes = (usize::MAX, 0);
            for _ in 0..requests {
                let started = Instant::now();
                let reply = conn.get(&path).await?;
                times.push(started.elapsed().as_secs_f64() * 1e3);
                let n = check(&reply)?;
                sizes = (sizes.0.min(n), sizes.1.max(n));
            }
            anyhow::Ok((times, sizes))
        });
    }
    let mut latencies = Vec::with_capacity(clients * requests);
    let mut body = (usize::MAX, 0);
    while let Some(done) = tasks.join_next().await {
        let (times, sizes) = done.context("a client panicked")??;
        latencies.extend(times);
        body = (body.0.min(sizes.0), body.1.max(sizes.1));
    }
    latencies.sort_by(f64::total_cmp);
    Ok(Load { latencies, body })
}

/// `GET path` until it answers `200`, within [`READY_TIMEOUT`]; returns the body.
pub async fn wait_ok(addr: SocketAddr, path: &str) -> anyhow::Result<Vec<u8>> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let last = match Conn::connect(addr).await {
            Ok(mut c) => match c.get(path).await {
                Ok(r) if r.status == 200 => return Ok(r.body),
                Ok(r) => format!("status {}", r.status),
                Err(e) => format!("{e:#}"),
            },
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("GET {path} did not answer 200 in {READY_TIMEOUT:?}: {last}");
        }
        tokio::time::sleep(READY_RETRY).await;
    }
}

/// `len` bytes of xorshift output (incompressible, distinct for each seed).
fn filler(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = crate::Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The `127.0.0.1:PORT` of an explorer URL `http://127.0.0.1:PORT/`.
fn web_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let hostport = url
        .strip_prefix("http://")
        .and_then(|s| s.strip_suffix('/'))
        .with_context(|| format!("an unexpected explorer URL {url:?}"))?;
    let addr: SocketAddr = hostport
        .parse()
        .with_context(|| format!("an unexpected explorer URL {url:?}"))?;
    ensure!(
        addr.ip().is_loopback(),
        "the explorer is not on loopback: {url}"
    );
    Ok(addr)
}

/// One page and its reference, measured.
#[derive(Debug)]
struct Measured {
    label: String,
    page: Load,
    reference: Load,
    size: usize,
}

/// Measures `path`, then a static blob of its body's size (put into `blobs` now) on the same
/// server.
async fn page_and_reference(
    opts: &Opts,
    addr: SocketAddr,
    blobs: &BlobStore,
    label: String,
    path: &str,
    seed: u64,
) -> anyhow::Result<Measured> {
    let size = wait_ok(addr, path).await?.len();
    ensure!(size > 0, "GET {path}: an empty page");
    let hash = blobs.put_bytes(&filler(size, seed))?;
    let blob_path = format!("/blob/{}", hash.to_hex());
    let served = wait_ok(addr, &blob_path).await?;
    ensure!(
        served.len() == size,
        "the reference blob came back with {} bytes, not {size}",
        served.len()
    );
    opts.progress(format!(
        "web: {path} ({size} B), {} clients x {REQUESTS}",
        opts.web_clients
    ));
    let page = load(addr, path, opts.web_clients, REQUESTS, None).await?;
    opts.progress(format!(
        "web: p50 {:.2} ms, p99 {:.2} ms; the static file of {size} B ...",
        page.p(50.0),
        page.p(99.0)
    ));
    let reference = load(addr, &blob_path, opts.web_clients, REQUESTS, Some(size)).await?;
    opts.progress(format!(
        "web: static file p50 {:.2} ms, p99 {:.2} ms",
        reference.p(50.0),
        reference.p(99.0)
    ));
    Ok(Measured {
        label,
        page,
        reference,
        size,
    })
}

/// Keeps the daemon's log when `COMMONS_BENCH_LOGS=<dir>` is set (as [`crate::daemon::Daemon`]
/// does), then kills it.
#[derive(Debug)]
struct Running(commons_harness::Daemon);

impl Drop for Running {
    fn drop(&mut self) {
        let pid = self.0.pid().unwrap_or(0);
        let _ = self.0.stop_with("TERM", Duration::from_secs(5));
        if let Some(dir) = std::env::var_os("COMMONS_BENCH_LOGS") {
            let to = Path::new(&dir).join(format!("commonsd-{pid}.log"));
            if let Err(e) = std::fs::copy(&self.0.spec.log, &to) {
                eprintln!("cannot keep the log of commonsd {pid}: {e}");
            }
        }
    }
}

/// **web**: the rows (module documentation).
pub fn run(opts: &Opts) -> anyhow::Result<Vec<Row>> {
    let commonsd = find_commonsd(opts.commonsd.as_deref())?;
    let built = build_history(opts, opts.seed + 50, opts.history)?;
    let lineage = built.history.lineage();
    let patches = built.history.records.len() / 2;
    let (dir, store) = (built.dir, built.store);
    store.close()?;
    drop(store);
    let home = Home::at(dir.path());
    if !home.has_identity() {
        home.init_identity(Some("web"))?;
    }
    let spec = commons_harness::Spec::new(&commonsd, dir.path())
        .log(&dir.path().join("commonsd.log"))
        .flags(["--no-kademlia"]);
    let daemon = Running(commons_harness::Daemon::start(spec)?);
    let url = daemon
        .0
        .web
        .clone()
        .context("commonsd did not print its explorer's URL")?;
    let addr = web_addr(&url)?;
    // The daemon owns the store; loose blobs may be added beside it while it runs.
    let blobs = BlobStore::open_shared(&home.store_dir().join("blobs"))?;

    let pages = patches.div_ceil(PER_PAGE).max(1);
    let older = OLDER_PAGE.min(pages);
    let id = lineage.to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let measured = runtime.block_on(async {
        let commons = page_and_reference(
            opts,
            addr,
            &blobs,
            "commons page /c/ID".to_owned(),
            &format!("/c/{id}"),
            opts.seed + 51,
        )
        .await?;
        let newest = page_and_reference(
            opts,
            addr,
            &blobs,
            format!("patches page /c/ID/patches (page 1 of {pages}, newest)"),
            &format!("/c/{id}/patches"),
            opts.seed + 52,
        )
        .await?;
        let old = page_and_reference(
            opts,
            addr,
            &blobs,
            format!("patches page /c/ID/patches?page={older} (of {pages})"),
            &format!("/c/{id}/patches?page={older}"),
            opts.seed + 53,
        )
        .await?;
        anyhow::Ok([commons, newest, old])
    })?;
    drop(daemon);

    let clients = opts.web_clients.max(1);
    Ok(measured
        .into_iter()
        .map(|m| {
            let (p50, p99) = (m.page.p(50.0), m.page.p(99.0));
            let (body_min, body_max) = m.page.body;
            Row::info(
                "web",
                format!(
                    "{}, p99 of {} requests by {clients} concurrent clients, {patches}-patch commons",
                    m.label,
                    m.page.latencies.len()
                ),
                p99,
                "ms",
            )
            .against(
                format!(
                    "p99 of /blob/HASH, a static file of the same size ({} B), same server",
                    m.size
                ),
                m.reference.p(99.0),
                "ms",
            )
            .target(format!("≤ {TARGET_MS} ms"), p99 <= TARGET_MS)
            .note(format!(
                "p50 {p50:.2} ms (static file: p50 {:.2} ms); body {body_min}–{body_max} B; each client on its own keep-alive connection, {WARMUP} warm-up requests each, then {REQUESTS} back to back; latency from writing the request to reading the whole body",
                m.reference.p(50.0)
            ))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_length_head_is_read_and_anything_else_refused() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\nContent-Length: 12\r\n\r\n";
        assert_eq!(parse_head(ok).unwrap(), (200, 12));
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(parse_head(chunked).is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n").is_err());
        let close = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n";
        assert!(parse_head(close).is_err());
        let twice = b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\n";
        assert!(parse_head(twice).is_err());
    }

    #[test]
    fn clients_keep_their_connection_and_every_answer_is_timed() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let counter = accepted.clone();
            tokio::spawn(async move {
                loop {
                    let (mut s, _) = listener.accept().await.unwrap();
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        loop {
                            let mut chunk = [0u8; 1024];
                            let n = s.read(&mut chunk).await.unwrap();
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                            while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8(buf.drain(..i + 4).collect()).unwrap();
                                assert!(head.contains(&format!("\r\nHost: {addr}\r\n")), "{head}");
                                // The body comes in two writes, as a server streaming it may.
                                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
                                    .await
                                    .unwrap();
                                s.write_all(b"world").await.unwrap();
                            }
                        }
                    });
                }
            });
            let l = load(addr, "/x", 3, 7, Some(10)).await.unwrap();
            assert_eq!(l.latencies.len(), 21);
            assert_eq!(l.body, (10, 10));
            assert!(l.p(99.0) >= l.p(50.0));
            assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
            assert!(load(addr, "/x", 2, 1, Some(11)).await.is_err());
        });
    }

    #[test]
    fn the_explorer_url_gives_its_address() {
        assert_eq!(
            web_addr("http://127.0.0.1:7217/").unwrap(),
            "127.0.0.1:7217".parse::<SocketAddr>().unwrap()
        );
        assert!(web_addr("http://example.org:80/").is_err());
    }
}
