//! Real `commonsd` processes on 127.0.0.1 with temporary homes, and a blocking client of their
//! control socket (`commons-rpc`: 4-byte big-endian length + JSON).

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use commons_core::{Record, RecordId};
use commons_rpc::{RecordBytes, Request, Response};

/// Finds `commonsd`: the given path, else next to this executable (both are in
/// `target/release` after `cargo build --release -p commons-node`).
pub fn find_commonsd(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("the executable has no directory")?;
    // Test binaries live in target/<profile>/deps.
    if dir.ends_with("deps") {
        dir = dir.parent().context("no parent")?;
    }
    let candidate = dir.join("commonsd");
    if candidate.exists() {
        Ok(candidate)
    } else {
        bail!(
            "{} not found: build it with `cargo build --release -p commons-node` or pass --commonsd",
            candidate.display()
        )
    }
}

/// How long a stopping daemon may take before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// A running `commonsd` of a benchmark (the shared harness, [`commons_harness::Daemon`]) in a
/// temporary home, logging to `commonsd.log` in it. Killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    inner: commons_harness::Daemon,
    /// Its home (kept alive as long as the daemon).
    pub home: tempfile::TempDir,
    /// `…/p2p/<peer id>`: where peers dial it.
    pub addr: String,
}

impl Daemon {
    /// Starts `commonsd` on `/ip4/127.0.0.1/tcp/0` without mDNS, with `COMMONS_TEST_FAST=1`, in
    /// `home`, and waits until it prints its listening address.
    pub fn start(
        bin: &Path,
        home: tempfile::TempDir,
        bootstrap: &[String],
        kademlia: bool,
    ) -> anyhow::Result<Daemon> {
        let mut spec = commons_harness::Spec::new(bin, home.path())
            .log(&home.path().join("commonsd.log"))
            .bootstrap(bootstrap);
        if !kademlia {
            spec = spec.flags(["--no-kademlia"]);
        }
        let inner = commons_harness::Daemon::start(spec)?;
        let addr = inner.addr.clone();
        Ok(Daemon { inner, home, addr })
    }

    /// A new connection to its control socket.
    pub fn client(&self) -> anyhow::Result<Client> {
        Client::connect(&self.home.path().join(commons_rpc::SOCKET_NAME))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.inner.pid().unwrap_or(0)
    }

    /// Resident set size and its peak, in KiB, from `/proc/PID/status`.
    pub fn rss_kib(&self) -> anyhow::Result<(u64, u64)> {
        Ok(self.inner.rss_kib()?)
    }

    /// Asks it to stop (SIGTERM), waits a moment, then kills it.
    pub fn stop(mut self) {
        let _ = self.inner.stop_with("TERM", STOP_DEADLINE);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.pid();
        self.inner.kill();
        // `COMMONS_BENCH_LOGS=<dir>` keeps each daemon's log (run with `RUST_LOG` to see the
        // phases of a run); otherwise it goes with the home.
        if let Some(dir) = std::env::var_os("COMMONS_BENCH_LOGS") {
            let to = Path::new(&dir).join(format!("commonsd-{pid}.log"));
            if let Err(e) = std::fs::copy(&self.inner.spec.log, &to) {
                eprintln!("cannot keep the log of commonsd {pid}: {e}");
            }
        }
    }
}

/// A blocking control-socket client.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
}

impl Client {
    /// Connects.
    pub fn connect(path: &Path) -> anyhow::Result<Client> {
        let stream = UnixStream::connect(path)
            .with_context(|| format!("cannot connect to {}", path.display()))?;
        Ok(Client { stream })
    }

    /// One request, one response; an `Error` response is an error.
    pub fn call(&mut self, req: &Request) -> anyhow::Result<Response> {
        commons_rpc::write_msg(&mut self.stream, req)?;
        match commons_rpc::read_msg(&mut self.stream)? {
            Response::Error(e) => Err(anyhow!("commonsd: {} ({})", e.message, e.code)),
            r => Ok(r),
        }
    }

    /// Stores (and publishes) records.
    pub fn put(&mut self, records: &[Record]) -> anyhow::Result<()> {
        let records = records
            .iter()
            .map(|r| RecordBytes(r.bytes().to_vec()))
            .collect();
        for records in commons_rpc::put_chunks(records) {
            self.call(&Request::Put { records })?;
        }
        Ok(())
    }

    /// Whether it holds a record.
    pub fn has(&mut self, id: RecordId) -> anyhow::Result<bool> {
        match self.call(&Request::Get { id })? {
            Response::Record(r) => Ok(r.is_some()),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    /// Its status.
    pub fn status(&mut self) -> anyhow::Result<commons_rpc::NodeStatus> {
        match self.call(&Request::NodeStatus)? {
            Response::NodeStatus(s) => Ok(*s),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    /// Polls `f` every `every` until it is true or `timeout` passes.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        every: Duration,
        mut f: impl FnMut(&mut Client) -> anyhow::Result<bool>,
    ) -> anyhow::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if f(self)? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(every);
        }
    }
}
