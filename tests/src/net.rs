//! Helpers for the network tests: real `commonsd` processes on 127.0.0.1 with their own homes,
//! and waiting on conditions with deadlines.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a condition may take before a test fails. Generous: CI machines are shared.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// How often a condition is checked.
const POLL: Duration = Duration::from_millis(100);

/// The daemon binary under test: `$COMMONSD_BIN` if set, else the one this package builds.
#[macro_export]
macro_rules! daemon_bin {
    () => {
        match std::env::var_os("COMMONSD_BIN") {
            Some(p) if !p.is_empty() => std::path::PathBuf::from(p),
            _ => std::path::PathBuf::from(env!("CARGO_BIN_EXE_commonsd-e2e")),
        }
    };
}

/// The hostile peer binary this package builds (for [`HostilePeer::spawn`]).
#[macro_export]
macro_rules! hostile_bin {
    () => {
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_hostile-peer"))
    };
}

/// Polls `check` until it returns `Some`, or panics after [`DEADLINE`] saying `what`.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// Waits until every person's node reports the same root for `lineage` as `reference`'s; returns
/// that root.
pub fn converge(lineage: &str, reference: &crate::Person, others: &[&crate::Person]) -> String {
    wait_for(&format!("all nodes to agree on {lineage}"), || {
        let want = crate::shown_root(reference, lineage)?;
        others
            .iter()
            .all(|p| crate::shown_root(p, lineage).as_deref() == Some(want.as_str()))
            .then_some(want)
    })
}

/// A running `commonsd`.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    /// Its home.
    pub home: PathBuf,
    /// Its TCP address on 127.0.0.1, with the `/p2p/` suffix.
    pub addr: String,
    /// Its peer id.
    pub peer_id: String,
    /// Its bulk blob port, if it serves one.
    pub bulk_port: Option<u16>,
    lines: mpsc::Receiver<String>,
    bin: PathBuf,
}

/// Log lines of a daemon printed when its test fails.
const LOG_TAIL: usize = 80;

/// The filter of a test daemon's log, unless `RUST_LOG` says otherwise: connections and dials
/// are logged, so that a failed wait shows what the network did.
const TEST_LOG_FILTER: &str = "warn,libp2p_kad=error,commons_net=debug";

/// Where the daemon of `home` writes its log: next to the home, not in it (tests look inside
/// homes).
pub fn log_path(home: &Path) -> PathBuf {
    let mut name = home.file_name().unwrap_or_default().to_owned();
    name.push(".commonsd.log");
    home.with_file_name(name)
}

impl Daemon {
    /// Starts `commonsd --home HOME --listen /ip4/127.0.0.1/tcp/0 --no-mdns` plus `bootstrap`
    /// peers, and waits until it listens.
    pub fn start(bin: &Path, home: &Path, bootstrap: &[&str]) -> Daemon {
        Daemon::start_with(bin, home, bootstrap, &[])
    }

    /// [`Daemon::start`] with extra flags.
    pub fn start_with(bin: &Path, home: &Path, bootstrap: &[&str], flags: &[&str]) -> Daemon {
        let mut cmd = Command::new(bin);
        cmd.args(flags);
        cmd.arg("--home")
            .arg(home)
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
            .env("COMMONS_TEST_FAST", "1")
            // Catch-ups of a few dozen records go through several store commits, as large ones do.
            .env("COMMONS_TEST_CATCH_UP_CHUNK", "8")
            .env_remove("COMMONS_HOME")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Daemon::log_file(home));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", TEST_LOG_FILTER);
        }
        for b in bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut d = Daemon {
            child: Some(child),
            home: home.to_owned(),
            addr: String::new(),
            peer_id: String::new(),
            bulk_port: None,
            lines,
            bin: bin.to_owned(),
        };
        let start = Instant::now();
        while d.addr.is_empty() {
            let left = DEADLINE.saturating_sub(start.elapsed());
            let line = d.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "commonsd in {} did not report a listen address",
                    home.display()
                )
            });
            if let Some(port) = line.strip_prefix("bulk blob port: ") {
                d.bulk_port = port.trim().parse().ok();
            }
            if let Some(id) = line.strip_prefix("peer id: ") {
                d.peer_id = id.trim().to_owned();
            }
            if let Some(addr) = line.strip_prefix("listening on ")
                && addr.starts_with("/ip4/127.0.0.1/tcp/")
            {
                d.addr = addr.trim().to_owned();
            }
        }
        d
    }

    /// The daemon's log file, opened for appending (a restart adds to it).
    fn log_file(home: &Path) -> Stdio {
        let path = log_path(home);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(f) => Stdio::from(f),
            Err(_) => Stdio::inherit(),
        }
    }

    /// The last [`LOG_TAIL`] lines of its log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(log_path(&self.home)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
    }

    /// Stops it with SIGTERM and waits for a clean exit; returns the exit code.
    pub fn stop(&mut self) -> i32 {
        self.stop_with("TERM")
    }

    /// Stops it with `SIG<signal>` (`TERM`, `INT`) and waits for it to exit; returns the exit
    /// code.
    pub fn stop_with(&mut self, signal: &str) -> i32 {
        let Some(mut child) = self.child.take() else {
            return 0;
        };
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} failed");
        let status = wait_for("commonsd to stop", || child.try_wait().ok().flatten());
        status.code().unwrap_or(-1)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// File descriptors it has open now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/PID/fd")
            .count()
    }

    /// Sends it `SIG<signal>` (`STOP`, `CONT`…) and leaves it running.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("running");
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// Kills it with SIGKILL (no chance to clean up) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL commonsd");
            child.wait().expect("reap commonsd");
        }
    }

    /// Restarts a stopped daemon with the same home.
    pub fn restart(&mut self, bootstrap: &[&str]) {
        assert!(self.child.is_none(), "stop it first");
        *self = Daemon::start(&self.bin.clone(), &self.home.clone(), bootstrap);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of the log of commonsd in {} (peer {}) ---\n{}",
                self.home.display(),
                self.peer_id,
                self.log_tail()
            );
        }
    }
}

/// A running `hostile-peer` (see `src/bin/hostile-peer.rs`): it dials a node, and publishes
/// payloads on a lineage's topic once the node subscribes.
#[derive(Debug)]
pub struct HostilePeer {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// What it printed so far.
    pub printed: Vec<String>,
}

impl HostilePeer {
    /// Starts `hostile-peer FLAGS... ADDR LINEAGE FILES...` (`bin`: [`crate::hostile_bin!`]).
    pub fn spawn(
        bin: &Path,
        flags: &[&str],
        addr: &str,
        lineage: &str,
        files: &[PathBuf],
    ) -> HostilePeer {
        let mut child = Command::new(bin)
            .args(flags)
            .arg(addr)
            .arg(lineage)
            .args(files)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a hostile peer");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        HostilePeer {
            child,
            lines,
            printed: Vec::new(),
        }
    }

    /// Waits until it says it published `n` payloads.
    pub fn wait_published(&mut self, n: usize) {
        let want = format!("published {n}");
        let start = Instant::now();
        while !self.printed.contains(&want) {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.printed.push(line),
                Err(_) => panic!("the hostile peer did not publish: {:?}", self.printed),
            }
        }
    }

    /// Waits for a line starting with `prefix` and returns it.
    pub fn wait_line(&mut self, prefix: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.printed.iter().find(|l| l.starts_with(prefix)) {
                return l.clone();
            }
            let left = DEADLINE.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.printed.push(line),
                Err(_) => panic!(
                    "the hostile peer never printed `{prefix}…`: {:?}",
                    self.printed
                ),
            }
        }
    }

    /// Closes its standard input (it exits) and returns everything it printed.
    pub fn finish(mut self) -> Vec<String> {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
        let rest: Vec<String> = self.lines.try_iter().collect();
        self.printed.extend(rest);
        std::mem::take(&mut self.printed)
    }
}

impl Drop for HostilePeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
