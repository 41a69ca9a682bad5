//! Real `commonsd` processes on 127.0.0.1, each with its own home: the one harness that the
//! end-to-end tests (`commons-tests`), the benchmarks (`commons-bench`) and `commons demo` start
//! daemons with.
//!
//! A [`Spec`] says how to start one (binary, home, bootstrap peers, flags, log file); every
//! daemon listens on `/ip4/127.0.0.1/tcp/0` without mDNS, serves its web explorer on
//! `127.0.0.1:0` (unless its flags name `--web` or `--no-web`), with `COMMONS_TEST_FAST=1` (quick
//! heartbeats, loopback-friendly limits). [`Daemon::start`] waits, with a deadline, until it
//! prints its peer id and listening address; its standard error goes to the log file (appended,
//! so a restart adds to it), whose end [`Daemon::log_tail`] gives when something went wrong.
//! Signals go through `kill(1)`: the workspace has no `unsafe`.

pub mod browser;

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long a daemon may take to print its listening address. Generous: machines are shared.
pub const START_DEADLINE: Duration = Duration::from_secs(60);
/// How often a stopping daemon is checked.
const POLL: Duration = Duration::from_millis(20);
/// The only address harness daemons listen on (a port the kernel picks).
pub const LOOPBACK: &str = "/ip4/127.0.0.1/tcp/0";

/// How to start one daemon.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The `commonsd` binary.
    pub bin: PathBuf,
    /// Its home (`--home`).
    pub home: PathBuf,
    /// Where its standard error (the log) goes, appended.
    pub log: PathBuf,
    /// Peers given with `--bootstrap`.
    pub bootstrap: Vec<String>,
    /// More arguments, before `--home`.
    pub flags: Vec<String>,
    /// More environment variables.
    pub env: Vec<(OsString, OsString)>,
    /// The log filter used when `RUST_LOG` is not set (the daemon's own default otherwise).
    pub log_filter: Option<String>,
}

impl Spec {
    /// A daemon of `bin` in `home`, logging to `<home>.commonsd.log` beside the home (not in
    /// it: tests look inside homes).
    pub fn new(bin: &Path, home: &Path) -> Spec {
        let mut name = home.file_name().unwrap_or_default().to_owned();
        name.push(".commonsd.log");
        Spec {
            bin: bin.to_owned(),
            home: home.to_owned(),
            log: home.with_file_name(name),
            bootstrap: Vec::new(),
            flags: Vec::new(),
            env: Vec::new(),
            log_filter: None,
        }
    }

    /// Logs to `path` instead.
    pub fn log(mut self, path: &Path) -> Spec {
        path.clone_into(&mut self.log);
        self
    }

    /// Adds bootstrap peers.
    pub fn bootstrap<S: AsRef<str>>(mut self, peers: impl IntoIterator<Item = S>) -> Spec {
        self.bootstrap
            .extend(peers.into_iter().map(|p| p.as_ref().to_owned()));
        self
    }

    /// Adds arguments.
    pub fn flags<S: AsRef<str>>(mut self, flags: impl IntoIterator<Item = S>) -> Spec {
        self.flags
            .extend(flags.into_iter().map(|f| f.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Spec {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The log filter when `RUST_LOG` is not set.
    pub fn log_filter(mut self, filter: &str) -> Spec {
        self.log_filter = Some(filter.to_owned());
        self
    }
}

/// Why a daemon did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The process could not be started.
    #[error("cannot start {bin}: {source}")]
    Spawn {
        /// The binary.
        bin: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Its log file could not be opened.
    #[error("cannot open the log {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It exited, or did not print its address before [`START_DEADLINE`].
    #[error(
        "commonsd in {home} {what}; it printed:\n{printed}\nthe end of its log:\n{log_tail}",
        what = if *exited { "exited before listening" } else { "did not print `listening on …` in time" }
    )]
    NoAddress {
        /// Its home.
        home: PathBuf,
        /// Whether it exited (else it is still running, and was killed).
        exited: bool,
        /// What it printed on standard output.
        printed: String,
        /// The end of its log.
        log_tail: String,
    },
}

/// How a daemon stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It exited by itself after the signal (its exit status).
    Exited(ExitStatus),
    /// It did not exit before the deadline and was killed.
    Killed,
    /// It was not running.
    NotRunning,
}

/// A running `commonsd`, killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    /// How it was started (and is restarted).
    pub spec: Spec,
    /// Its TCP address on 127.0.0.1, with the `/p2p/` suffix.
    pub addr: String,
    /// Its peer id.
    pub peer_id: String,
    /// Its bulk blob port, if it serves one.
    pub bulk_port: Option<u16>,
    /// Its web explorer's URL (`http://127.0.0.1:PORT/`), unless started with `--no-web`.
    pub web: Option<String>,
    /// Its standard output, line by line, drained by a thread for the daemon's life.
    lines: Receiver<String>,
}

/// The web explorer on a port the kernel picks, unless the spec's flags say otherwise.
fn web_flags(flags: &[String]) -> Vec<&'static str> {
    match flags
        .iter()
        .any(|f| f == "--no-web" || f == "--web" || f.starts_with("--web="))
    {
        true => vec![],
        false => vec!["--web", "127.0.0.1:0"],
    }
}

impl Daemon {
    /// Starts a daemon and waits (up to [`START_DEADLINE`]) for its listening address.
    pub fn start(spec: Spec) -> Result<Daemon, StartError> {
        let mut cmd = Command::new(&spec.bin);
        cmd.args(&spec.flags)
            .arg("--home")
            .arg(&spec.home)
            .args(["--listen", LOOPBACK, "--no-mdns"])
            .args(web_flags(&spec.flags))
            .env("COMMONS_TEST_FAST", "1")
            .env_remove("COMMONS_HOME")
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(open_log(&spec.log)?);
        if let Some(filter) = &spec.log_filter
            && std::env::var_os("RUST_LOG").is_none()
        {
            cmd.env("RUST_LOG", filter);
        }
        for b in &spec.bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        let mut child = cmd.spawn().map_err(|source| StartError::Spawn {
            bin: spec.bin.clone(),
            source,
        })?;
        let (tx, lines) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut d = Daemon {
            child: Some(child),
            spec,
            addr: String::new(),
            peer_id: String::new(),
            bulk_port: None,
            web: None,
            lines,
        };
        d.read_startup()?;
        Ok(d)
    }

    /// Reads standard output until the listening address.
    fn read_startup(&mut self) -> Result<(), StartError> {
        let start = Instant::now();
        let mut printed = Vec::new();
        while self.addr.is_empty() {
            let left = START_DEADLINE.saturating_sub(start.elapsed());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(e) => {
                    let exited = e == RecvTimeoutError::Disconnected;
                    self.kill();
                    return Err(StartError::NoAddress {
                        home: self.spec.home.clone(),
                        exited,
                        printed: printed.join("\n"),
                        log_tail: self.log_tail(40),
                    });
                }
            };
            if let Some(port) = line.strip_prefix("bulk blob port: ") {
                self.bulk_port = port.trim().parse().ok();
            }
            if let Some(url) = line.strip_prefix("web explorer: ") {
                self.web = Some(url.trim().to_owned());
            }
            if let Some(id) = line.strip_prefix("peer id: ") {
                id.trim().clone_into(&mut self.peer_id);
            }
            if let Some(addr) = line.strip_prefix("listening on ")
                && addr.starts_with("/ip4/127.0.0.1/tcp/")
                && addr.contains("/p2p/")
            {
                addr.trim().clone_into(&mut self.addr);
            }
            printed.push(line);
        }
        Ok(())
    }

    /// Starts it again with the same spec (after [`Daemon::stop`] or [`Daemon::kill`]),
    /// bootstrapping to `bootstrap` instead.
    pub fn restart(&mut self, bootstrap: &[&str]) -> Result<(), StartError> {
        self.kill();
        let mut spec = self.spec.clone();
        spec.bootstrap = bootstrap.iter().map(|b| (*b).to_owned()).collect();
        *self = Daemon::start(spec)?;
        Ok(())
    }

    /// Its home.
    pub fn home(&self) -> &Path {
        &self.spec.home
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends it `SIG<signal>` (`TERM`, `STOP`, `CONT`…) and leaves it be.
    pub fn signal(&self, signal: &str) -> std::io::Result<()> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "kill -{signal} {pid} failed"
            )))
        }
    }

    /// Sends it `SIG<signal>` and waits up to `deadline` for it to exit; kills it if it does
    /// not.
    pub fn stop_with(&mut self, signal: &str, deadline: Duration) -> std::io::Result<Stopped> {
        if self.child.is_none() {
            return Ok(Stopped::NotRunning);
        }
        self.signal(signal)?;
        match self.wait_exit(deadline)? {
            Some(status) => Ok(Stopped::Exited(status)),
            None => {
                self.kill();
                Ok(Stopped::Killed)
            }
        }
    }

    /// Waits up to `deadline` for it to exit by itself; `None` if it still runs.
    pub fn wait_exit(&mut self, deadline: Duration) -> std::io::Result<Option<ExitStatus>> {
        let start = Instant::now();
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(Some(status));
            }
            if start.elapsed() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Kills it with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(&self.spec.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Its resident set size and peak, in KiB (`/proc/PID/status`).
    pub fn rss_kib(&self) -> std::io::Result<(u64, u64)> {
        let pid = self
            .pid()
            .ok_or_else(|| std::io::Error::other("not running"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("no {name} in /proc/{pid}/status")))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// File descriptors it has open now.
    pub fn open_fds(&self) -> std::io::Result<usize> {
        let pid = self
            .pid()
            .ok_or_else(|| std::io::Error::other("not running"))?;
        Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Opens a daemon's log for appending, making its directory.
fn open_log(path: &Path) -> Result<Stdio, StartError> {
    let err = |source| StartError::Log {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    Ok(Stdio::from(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_sits_beside_the_home() {
        let s = Spec::new(Path::new("/bin/commonsd"), Path::new("/tmp/x/homes/alice"));
        assert_eq!(s.log, Path::new("/tmp/x/homes/alice.commonsd.log"));
    }

    #[test]
    fn a_binary_that_exits_at_once_is_reported_with_what_it_printed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let script = dir.join("fake-commonsd");
        std::fs::write(
            &script,
            "#!/bin/sh\necho 'peer id: 12D3'\necho boom >&2\nexit 3\n",
        )
        .unwrap();
        let _ = Command::new("chmod").arg("+x").arg(&script).status();
        let err = Daemon::start(Spec::new(&script, &dir.join("home"))).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("exited before listening"), "{text}");
        assert!(text.contains("peer id: 12D3"), "{text}");
        assert!(text.contains("boom"), "the log tail is shown: {text}");
    }

    #[test]
    fn the_startup_lines_give_address_peer_and_bulk_port() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let script = dir.join("fake-commonsd");
        std::fs::write(
            &script,
            "#!/bin/sh\necho 'peer id: 12D3KooWabc'\necho 'bulk blob port: 4100'\necho 'listening on /ip4/127.0.0.1/tcp/4242/p2p/12D3KooWabc'\nexec sleep 30\n",
        )
        .unwrap();
        let _ = Command::new("chmod").arg("+x").arg(&script).status();
        let mut d = Daemon::start(Spec::new(&script, &dir.join("home"))).unwrap();
        assert_eq!(d.addr, "/ip4/127.0.0.1/tcp/4242/p2p/12D3KooWabc");
        assert_eq!(d.peer_id, "12D3KooWabc");
        assert_eq!(d.bulk_port, Some(4100));
        assert!(matches!(
            d.stop_with("TERM", Duration::from_secs(10)).unwrap(),
            Stopped::Exited(_)
        ));
    }
}
