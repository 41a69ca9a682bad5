//! `commons demo`: three real `commonsd` nodes on loopback, and the whole story played across
//! them with this very executable, the way people would type it.
//!
//! The nodes stand in a line, A — B — C (B bootstraps to A, C to B), each with a temporary home:
//! alice on A, carol on B, bob on C. alice founds a commons on A; B and C follow it; bob checks
//! it out on C and proposes a patch, which gossip carries to A; alice accepts it; carol forks on
//! B; bob proposes a second patch to alice's commons, and carol accepts it in her fork. At the
//! end all three nodes report the same state root for the commons and for the fork.
//!
//! Each home's `config.toml` sets a short catch-up interval, so that a record gossip did not
//! complete is fetched within seconds.
//!
//! Every step that depends on the network waits on a condition polled until [`DEADLINE`], never
//! on a fixed sleep. On a deadline the demo says what it was waiting for, shows the end of each
//! daemon's log, stops the daemons and exits 1. The daemons are stopped with SIGTERM (through
//! `kill`, as this crate has no `unsafe`), and their homes are removed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::ctx::out;
use crate::error::{CliError, Result};

/// How long any one condition may take before the demo gives up. Generous, for busy machines.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// How often a condition is checked.
const POLL: Duration = Duration::from_millis(100);
/// How long a stopping daemon may take before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(15);
/// Lines of each daemon's log shown when the demo fails.
const LOG_TAIL_LINES: usize = 20;
/// The catch-up interval written to each demo home's `config.toml`: a gossip message whose
/// blobs could not be fetched from the peer that relayed it is made up for by the next round,
/// so a short interval keeps the demo short on a busy machine.
const DEMO_SYNC_INTERVAL_SECS: u64 = 5;
/// The environment variable naming the `commonsd` binary.
pub const COMMONSD_ENV: &str = "COMMONSD_BIN";

const README: &str = "# Seed Library\nSeeds anyone may grow and share.\n";
const TOMATO: &str = "Tomato\n  sow: March\n  spacing: 50 cm\n";
const TOMATO_BOB: &str = "Tomato\n  sow: March, 5 mm deep\n  spacing: 50 cm\n";
const BEAN: &str = "Bean\n  sow: May\n";
const SQUASH: &str = "Squash\n  sow: May, in mounds\n  water: deeply, rarely\n";

/// Finds `commonsd`: `$COMMONSD_BIN`, else next to `exe`, else on the `PATH`.
pub fn find_commonsd(exe: &Path) -> Result<PathBuf> {
    let hint = "build it with `cargo build -p commons-node`, or set COMMONSD_BIN=/path/to/commonsd";
    if let Some(p) = std::env::var_os(COMMONSD_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(CliError::not_found(format!(
            "{COMMONSD_ENV} is {}, which is not a file",
            p.display()
        ))
        .hint(hint));
    }
    let beside = exe.parent().map(|d| d.join("commonsd"));
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("commonsd"))
                .collect()
        })
        .unwrap_or_default();
    beside
        .into_iter()
        .chain(on_path)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CliError::not_found(
                "cannot find commonsd (not in $COMMONSD_BIN, not next to this executable, not on the PATH)",
            )
            .hint(hint)
        })
}

/// Runs the demo.
pub fn run() -> Result<()> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::error(format!("cannot find this executable: {e}")))?;
    let daemon = find_commonsd(&exe)?;
    let tmp = tempfile::Builder::new()
        .prefix("commons-demo-")
        .tempdir()
        .map_err(|e| CliError::error(format!("cannot make a temporary directory: {e}")))?;
    let mut demo = Demo {
        exe,
        daemon,
        dir: tmp.path().to_owned(),
        nodes: Vec::new(),
        step: 0,
    };
    let result = demo.story();
    if result.is_err() {
        demo.show_logs();
    }
    let stopped = demo.stop_all();
    drop(demo);
    let removed = tmp
        .close()
        .map_err(|e| CliError::error(format!("cannot remove the demo's homes: {e}")));
    result?;
    stopped?;
    removed?;
    out("Stopped the three nodes and removed their homes.")
}

/// One running daemon.
struct Node {
    /// `A`, `B` or `C`.
    label: &'static str,
    /// Who uses it.
    person: &'static str,
    home: PathBuf,
    /// The daemon, started by the harness the tests and benchmarks share.
    daemon: commons_harness::Daemon,
}

struct Demo {
    exe: PathBuf,
    daemon: PathBuf,
    dir: PathBuf,
    nodes: Vec<Node>,
    step: usize,
}

/// What `commons` printed, when it succeeded.
type Answer = std::result::Result<Value, String>;

impl Demo {
    fn say(&mut self, text: &str) -> Result<()> {
        self.step += 1;
        out(&format!("{:>2}. {text}", self.step))
    }

    fn node(&self, label: &str) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.label == label)
            .ok_or_else(|| CliError::error(format!("node {label} is not running")))
    }

    /// Runs `commons --home HOME --json ARGS` and parses its output.
    fn try_cli(&self, home: &Path, args: &[&str]) -> Result<Answer> {
        let output = Command::new(&self.exe)
            .arg("--home")
            .arg(home)
            .arg("--json")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| CliError::error(format!("cannot run {}: {e}", self.exe.display())))?;
        if !output.status.success() {
            return Ok(Err(format!(
                "`commons {}` failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        if stdout.trim().is_empty() {
            return Ok(Ok(Value::Null));
        }
        Ok(serde_json::from_str(&stdout).map_err(|e| {
            format!(
                "`commons {}` printed something that is not JSON ({e}): {stdout}",
                args.join(" ")
            )
        }))
    }

    /// Like [`Self::try_cli`] on the home of node `label`, failing the demo on an error.
    fn cli(&self, label: &str, args: &[&str]) -> Result<Value> {
        let home = self.node(label)?.home.clone();
        self.try_cli(&home, args)?
            .map_err(|e| CliError::error(format!("on node {label}: {e}")))
    }

    /// Polls `check` until it gives `Some`, or fails after [`DEADLINE`] saying `what`.
    fn wait<T>(
        &self,
        what: &str,
        mut check: impl FnMut(&Self) -> Result<Option<T>>,
    ) -> Result<(T, Duration)> {
        let start = Instant::now();
        loop {
            if let Some(v) = check(self)? {
                return Ok((v, start.elapsed()));
            }
            if start.elapsed() >= DEADLINE {
                return Err(CliError::error(format!(
                    "timed out after {} s waiting until {what}",
                    DEADLINE.as_secs()
                ))
                .hint("the end of each daemon's log is above; run with RUST_LOG=commons_node=debug for more"));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The state root of `lineage` on node `label`, if it has the commons.
    fn root(&self, label: &str, lineage: &str) -> Result<Option<String>> {
        let home = self.node(label)?.home.clone();
        Ok(self
            .try_cli(&home, &["show", lineage])?
            .ok()
            .and_then(|v| v["root"].as_str().map(str::to_owned)))
    }

    /// The status of `patch` in `lineage` on node `label`, if listed there.
    fn status(&self, label: &str, lineage: &str, patch: &str) -> Result<Option<String>> {
        let home = self.node(label)?.home.clone();
        let Ok(list) = self.try_cli(&home, &["patches", lineage])? else {
            return Ok(None);
        };
        Ok(list.as_array().and_then(|items| {
            items
                .iter()
                .find(|p| p["patch"] == patch)
                .and_then(|p| p["status"].as_str().map(str::to_owned))
        }))
    }

    /// The number of peers node `label` is connected to.
    fn peer_count(&self, label: &str) -> Result<usize> {
        let home = self.node(label)?.home.clone();
        Ok(self
            .try_cli(&home, &["node", "status"])?
            .ok()
            .and_then(|v| v["peers"].as_u64())
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0))
    }

    /// Starts `commonsd` for `person` as node `label`, bootstrapping to `bootstrap`, and waits
    /// for its listening address.
    fn start(
        &mut self,
        label: &'static str,
        person: &'static str,
        bootstrap: Option<String>,
    ) -> Result<()> {
        let home = self.dir.join(person);
        // The identity first, with a name; the daemon would otherwise make a nameless one.
        self.try_cli(&home, &["id", "init", "--name", person])?
            .map_err(CliError::error)?;
        let config = home.join("config.toml");
        fs::write(
            &config,
            format!("sync_interval_secs = {DEMO_SYNC_INTERVAL_SECS}\n"),
        )
        .map_err(|e| CliError::error(format!("cannot write {}: {e}", config.display())))?;
        let log = self.dir.join(format!("commonsd-{label}.log"));
        let spec = commons_harness::Spec::new(&self.daemon, &home)
            .log(&log)
            .bootstrap(bootstrap.iter());
        let daemon = commons_harness::Daemon::start(spec).map_err(|e| match e {
            commons_harness::StartError::Spawn { .. } => CliError::error(e.to_string()).hint(
                "build it with `cargo build -p commons-node`, or set COMMONSD_BIN=/path/to/commonsd",
            ),
            other => CliError::error(other.to_string()),
        })?;
        let node = Node {
            label,
            person,
            home,
            daemon,
        };
        let line = format!(
            "node {label} ({person}) listens on {}{}{}",
            node.daemon.addr,
            match &bootstrap {
                Some(_) => format!(", bootstrapped to {}", self.previous_label(label)),
                None => String::new(),
            },
            match &node.daemon.web {
                Some(url) => format!("; watch it at {url}"),
                None => String::new(),
            }
        );
        self.nodes.push(node);
        self.say(&line)
    }

    fn previous_label(&self, label: &str) -> &'static str {
        self.nodes
            .iter()
            .take_while(|n| n.label != label)
            .last()
            .map_or("?", |n| n.label)
    }

    fn story(&mut self) -> Result<()> {
        out("Commons demo: three commonsd nodes on 127.0.0.1 in a line, A — B — C.")?;
        out("alice uses node A, carol node B, bob node C; nothing travels but gossip and sync.\n")?;

        self.start("A", "alice", None)?;
        let a = self.node("A")?.daemon.addr.clone();
        self.start("B", "carol", Some(a))?;
        let b = self.node("B")?.daemon.addr.clone();
        self.start("C", "bob", Some(b))?;
        let (_, t) = self.wait("A and C have one peer each and B has two", |d| {
            Ok(
                (d.peer_count("A")? >= 1 && d.peer_count("B")? >= 2 && d.peer_count("C")? >= 1)
                    .then_some(()),
            )
        })?;
        self.say(&format!(
            "the nodes are connected: A–B and B–C ({})",
            secs(t)
        ))?;

        // alice founds the commons on A.
        let seeds = self.dir.join("seeds");
        write_files(
            &seeds,
            &[
                ("README.md", README),
                ("varieties/tomato.txt", TOMATO),
                ("varieties/bean.txt", BEAN),
            ],
        )?;
        let seeds_arg = path_arg(&seeds)?;
        let created = self.cli(
            "A",
            &[
                "create",
                "Seed Library",
                "--license",
                "CC-BY-SA-4.0",
                "--summary",
                "Seeds anyone may grow and share.",
                "--from",
                &seeds_arg,
            ],
        )?;
        let lib = text(&created, "lineage")?;
        self.say(&format!(
            "alice founds \"Seed Library\" on A from 3 files: {}",
            short(&lib)
        ))?;

        // carol and bob follow it; C reaches it through B.
        for (label, person) in [("B", "carol"), ("C", "bob")] {
            let report = self.cli(label, &["follow", &lib])?;
            self.say(&format!(
                "{person} follows it on {label}: {}",
                describe(&report)
            ))?;
        }
        let root_a = self.root("A", &lib)?.unwrap_or_default();
        let (_, t) = self.wait("C has \"Seed Library\" as A has it", |d| {
            Ok((d.root("C", &lib)?.as_deref() == Some(root_a.as_str())).then_some(()))
        })?;
        self.say(&format!(
            "C holds the same \"Seed Library\" as A, files included ({})",
            secs(t)
        ))?;

        // bob proposes on C; gossip carries it through B to A.
        let work = self.dir.join("bob-seeds");
        let work_arg = path_arg(&work)?;
        self.cli("C", &["checkout", &lib, &work_arg])?;
        write_files(&work, &[("varieties/tomato.txt", TOMATO_BOB)])?;
        let p1 = text(
            &self.cli(
                "C",
                &["propose", &work_arg, "-m", "Tomato: how deep to sow"],
            )?,
            "patch",
        )?;
        self.say(&format!(
            "bob checks it out on C, edits varieties/tomato.txt and proposes patch {}",
            short(&p1)
        ))?;
        let (_, t) = self.wait("bob's patch reaches A", |d| {
            Ok(d.status("A", &lib, &p1)?.map(|_| ()))
        })?;
        self.say(&format!(
            "the patch reaches A by gossip, via B ({})",
            secs(t)
        ))?;

        // alice accepts it on A; everyone gets the new state.
        let v = self.cli("A", &["validate", &p1, "--accept", "-m", "Thanks!"])?;
        let root1 = text(&v, "root")?;
        self.say(&format!(
            "alice accepts it on A; the state root of \"Seed Library\" is now {}",
            short(&root1)
        ))?;
        let (_, t) = self.wait("B and C have the new state of \"Seed Library\"", |d| {
            Ok((d.root("B", &lib)?.as_deref() == Some(root1.as_str())
                && d.root("C", &lib)?.as_deref() == Some(root1.as_str()))
            .then_some(()))
        })?;
        self.say(&format!(
            "B and C see the acceptance: same state root on all three ({})",
            secs(t)
        ))?;

        // carol forks on B.
        let forked = self.cli(
            "B",
            &[
                "fork",
                &lib,
                "--name",
                "Seed Library (arid)",
                "-m",
                "Seeds for dry climates",
            ],
        )?;
        let fork = text(&forked, "lineage")?;
        self.say(&format!(
            "carol forks it on B as \"Seed Library (arid)\": {}",
            short(&fork)
        ))?;
        let (_, t) = self.wait("A and C have carol's fork", |d| {
            Ok((d.root("A", &fork)?.is_some() && d.root("C", &fork)?.is_some()).then_some(()))
        })?;
        self.say(&format!("the fork reaches A and C ({})", secs(t)))?;

        // bob proposes again, to alice's commons; carol takes it in her fork.
        self.cli("C", &["update", &work_arg])?;
        write_files(&work, &[("varieties/squash.txt", SQUASH)])?;
        let p2 = text(
            &self.cli(
                "C",
                &["propose", &work_arg, "-m", "Squash: water deeply, rarely"],
            )?,
            "patch",
        )?;
        self.say(&format!(
            "bob updates his copy on C, adds varieties/squash.txt and proposes patch {} to \"Seed Library\"",
            short(&p2)
        ))?;
        let (_, t) = self.wait("bob's second patch reaches B", |d| {
            Ok(d.status("B", &lib, &p2)?.map(|_| ()))
        })?;
        self.say(&format!("the patch reaches B ({})", secs(t)))?;
        let v = self.cli(
            "B",
            &[
                "validate",
                &p2,
                "--accept",
                "--in",
                &fork,
                "-m",
                "Just right for dry gardens",
            ],
        )?;
        let root2 = text(&v, "root")?;
        self.say(&format!(
            "carol accepts it in her fork on B (across the fork: it stays pending in \"Seed Library\"); the fork's state root is {}",
            short(&root2)
        ))?;

        // Everyone agrees.
        let expected = [
            ("Seed Library", lib.as_str(), root1.as_str()),
            ("Seed Library (arid)", fork.as_str(), root2.as_str()),
        ];
        let (_, t) = self.wait(
            "A, B and C report the same state roots for both commons",
            |d| {
                for label in ["A", "B", "C"] {
                    for (_, id, root) in expected {
                        if d.root(label, id)?.as_deref() != Some(root) {
                            return Ok(None);
                        }
                    }
                    if d.status(label, &fork, &p2)?.as_deref() != Some("accepted") {
                        return Ok(None);
                    }
                }
                Ok(Some(()))
            },
        )?;
        self.say(&format!(
            "all three nodes agree, the acceptance in the fork included ({}):",
            secs(t)
        ))?;
        let mut roots: BTreeMap<(&str, &str), String> = BTreeMap::new();
        for label in ["A", "B", "C"] {
            for (name, id, _) in expected {
                let root = self.root(label, id)?.unwrap_or_default();
                roots.insert((name, label), root);
            }
        }
        for ((name, label), root) in &roots {
            out(&format!("      root of \"{name}\" on {label}: {root}"))?;
        }
        Ok(())
    }

    /// Prints the end of each daemon's log on stderr.
    fn show_logs(&self) {
        for n in &self.nodes {
            let tail = n.daemon.log_tail(LOG_TAIL_LINES);
            eprintln!(
                "--- node {} ({}): last {} line(s) of its log",
                n.label,
                n.person,
                tail.lines().count()
            );
            eprintln!("{tail}");
        }
    }

    /// Stops every daemon: SIGTERM to all, then a kill after [`STOP_DEADLINE`].
    fn stop_all(&mut self) -> Result<()> {
        for n in &self.nodes {
            let _ = n.daemon.signal("TERM");
        }
        let start = Instant::now();
        let mut stubborn = Vec::new();
        for n in &mut self.nodes {
            let left = STOP_DEADLINE.saturating_sub(start.elapsed());
            if !matches!(n.daemon.wait_exit(left), Ok(Some(_))) {
                n.daemon.kill();
                stubborn.push(n.label);
            }
        }
        self.nodes.clear();
        if stubborn.is_empty() {
            Ok(())
        } else {
            Err(CliError::error(format!(
                "node(s) {} did not stop on SIGTERM within {} s and were killed",
                stubborn.join(", "),
                STOP_DEADLINE.as_secs()
            )))
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // Only reached with nodes left if the demo panicked; never leave daemons behind.
        let _ = self.stop_all();
    }
}

fn write_files(dir: &Path, files: &[(&str, &str)]) -> Result<()> {
    for (path, content) in files {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| CliError::error(format!("cannot create {}: {e}", parent.display())))?;
        }
        fs::write(&file, content)
            .map_err(|e| CliError::error(format!("cannot write {}: {e}", file.display())))?;
    }
    Ok(())
}

fn path_arg(p: &Path) -> Result<String> {
    p.to_str().map(str::to_owned).ok_or_else(|| {
        CliError::error(format!(
            "the temporary directory {} is not UTF-8",
            p.display()
        ))
        .hint("set TMPDIR to a plain path")
    })
}

/// A string field of a command's JSON output.
fn text(v: &Value, field: &str) -> Result<String> {
    v[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| CliError::error(format!("the output of `commons` has no `{field}`: {v}")))
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The sentence of a `follow --json` answer.
fn describe(v: &Value) -> String {
    let report = commons_rpc::SyncReport {
        peers: num(&v["peers"]),
        new_records: num(&v["new_records"]),
        new_blobs: num(&v["new_blobs"]),
        blob_bytes: v["blob_bytes"].as_u64().unwrap_or(0),
    };
    crate::cmd::describe_report(&report)
}

fn num(v: &Value) -> usize {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_daemon_binary_says_how_to_build_it() {
        // Only meaningful where no commonsd is next to the test binary or on the PATH, and
        // COMMONSD_BIN is not set: otherwise the lookup rightly succeeds.
        let exe = Path::new("/nonexistent/dir/commons");
        if std::env::var_os(COMMONSD_ENV).is_none()
            && let Err(e) = find_commonsd(exe)
        {
            assert_eq!(e.kind.code(), 3);
            assert!(
                e.hint
                    .unwrap_or_default()
                    .contains("cargo build -p commons-node")
            );
        }
    }
}
