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

/// The filter of a test daemon's log, unless `RUST_LOG` says otherwise: connections and dials
/// are logged, so that a failed wait shows what the network did.
const TEST_LOG_FILTER: &str = "warn,libp2p_kad=error,commons_net=debug";
/// Log lines of each daemon printed when its test fails.
const LOG_TAIL: usize = 80;

/// A running `commonsd` of a test (the shared harness, [`commons_harness::Daemon`], with
/// panics for errors): its log sits beside its home, and its end is printed if the test fails.
#[derive(Debug)]
pub struct Daemon(commons_harness::Daemon);

impl std::ops::Deref for Daemon {
    type Target = commons_harness::Daemon;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Daemon {
    /// Starts `commonsd --home HOME --listen /ip4/127.0.0.1/tcp/0 --no-mdns` plus `bootstrap`
    /// peers, and waits until it listens.
    pub fn start(bin: &Path, home: &Path, bootstrap: &[&str]) -> Daemon {
        Daemon::start_with(bin, home, bootstrap, &[])
    }

    /// [`Daemon::start`] with extra flags.
    pub fn start_with(bin: &Path, home: &Path, bootstrap: &[&str], flags: &[&str]) -> Daemon {
        let spec = commons_harness::Spec::new(bin, home)
            .bootstrap(bootstrap)
            .flags(flags)
            // Catch-ups of a few dozen records go through several store commits, as large ones do.
            .env("COMMONS_TEST_CATCH_UP_CHUNK", "8")
            .log_filter(TEST_LOG_FILTER);
        Daemon(commons_harness::Daemon::start(spec).unwrap_or_else(|e| panic!("{e}")))
    }

    /// Its home.
    pub fn home(&self) -> PathBuf {
        self.0.home().to_owned()
    }

    /// Stops it with SIGTERM and waits for a clean exit; returns the exit code.
    pub fn stop(&mut self) -> i32 {
        self.stop_with("TERM")
    }

    /// Stops it with `SIG<signal>` (`TERM`, `INT`) and waits for it to exit; returns the exit
    /// code.
    pub fn stop_with(&mut self, signal: &str) -> i32 {
        match self.0.stop_with(signal, DEADLINE) {
            Ok(commons_harness::Stopped::Exited(status)) => status.code().unwrap_or(-1),
            Ok(commons_harness::Stopped::NotRunning) => 0,
            Ok(commons_harness::Stopped::Killed) => {
                panic!("commonsd did not stop within {DEADLINE:?} of SIG{signal}")
            }
            Err(e) => panic!("cannot stop commonsd: {e}"),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.0.pid().expect("running")
    }

    /// File descriptors it has open now.
    pub fn open_fds(&self) -> usize {
        self.0.open_fds().expect("read /proc/PID/fd")
    }

    /// Sends it `SIG<signal>` (`STOP`, `CONT`…) and leaves it running.
    pub fn signal(&self, signal: &str) {
        self.0
            .signal(signal)
            .unwrap_or_else(|e| panic!("kill -{signal}: {e}"));
    }

    /// Restarts a stopped daemon with the same home and flags.
    pub fn restart(&mut self, bootstrap: &[&str]) {
        assert!(self.0.pid().is_none(), "stop it first");
        self.0.restart(bootstrap).unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of the log of commonsd in {} (peer {}) ---\n{}",
                self.0.home().display(),
                self.0.peer_id,
                self.0.log_tail(LOG_TAIL)
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
