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
    lines: mpsc::Receiver<String>,
    bin: PathBuf,
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
            .stderr(Stdio::inherit());
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
    }
}
