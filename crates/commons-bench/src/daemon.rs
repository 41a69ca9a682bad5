//! Real `commonsd` processes on 127.0.0.1 with temporary homes, and a blocking client of their
//! control socket (`commons-rpc`: 4-byte big-endian length + JSON).

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use commons_core::{Record, RecordId};
use commons_rpc::{RecordBytes, Request, Response};

/// How long a daemon may take to print its listening address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

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

/// A running `commonsd`. Killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
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
        let mut cmd = Command::new(bin);
        cmd.arg("--home")
            .arg(home.path())
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
            .env("COMMONS_TEST_FAST", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(
                home.path().join("commonsd.log"),
            )?));
        if !kademlia {
            cmd.arg("--no-kademlia");
        }
        for b in bootstrap {
            cmd.arg("--bootstrap").arg(b);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = mpsc::sync_channel::<String>(16);
        // Reads stdout to its end so the daemon never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && let Some(addr) = line.strip_prefix("listening on ") {
                    sent = tx.send(addr.trim().to_owned()).is_ok();
                }
            }
        });
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log =
                    std::fs::read_to_string(home.path().join("commonsd.log")).unwrap_or_default();
                bail!("commonsd did not print its address in time; its log:\n{log}");
            }
        };
        Ok(Daemon { child, home, addr })
    }

    /// A new connection to its control socket.
    pub fn client(&self) -> anyhow::Result<Client> {
        Client::connect(&self.home.path().join(commons_rpc::SOCKET_NAME))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size and its peak, in KiB, from `/proc/PID/status`.
    pub fn rss_kib(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no {name} in /proc/PID/status"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// Asks it to stop (SIGTERM through `kill`), waits a moment, then kills it.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // `COMMONS_BENCH_LOGS=<dir>` keeps each daemon's log (run with `RUST_LOG` to see the
        // phases of a run); otherwise it goes with the home.
        if let Some(dir) = std::env::var_os("COMMONS_BENCH_LOGS") {
            let to = Path::new(&dir).join(format!("commonsd-{}.log", self.child.id()));
            if let Err(e) = std::fs::copy(self.home.path().join("commonsd.log"), &to) {
                eprintln!("cannot keep the log of commonsd {}: {e}", self.child.id());
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
            Response::NodeStatus(s) => Ok(s),
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
