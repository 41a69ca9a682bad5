//! **fork**: what forking a commons costs at a long history against a short one, end to end.
//!
//! For each history (built through the store API, not timed): the store's cost of a fork
//! charter (what every follower's store does when one arrives), then two real `commonsd` — the
//! home that holds the history, and a follower holding a copy of it — and `commons fork` run as
//! a process on the first: from its start to its exit, then until the follower's store holds
//! the fork (gossip). After one untimed warm-up fork, five forks are timed and the rows report
//! the median (one run of a few milliseconds is at the mercy of the scheduler on two cores). A
//! fork at an older point (`--at`, 100 patches back) is timed the same way.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use commons_core::{ForkBase, LineageId};
use commons_rpc::{Request, Response};
use commons_store::home::Home;

use crate::daemon::{Daemon, find_commonsd};
use crate::records;
use crate::store::{Built, build_history};
use crate::{Opts, Row, Shared};

/// How long the follower may take to hold a fork.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(2);
/// Fork charters put through the store API; the row reports the median.
const PUT_REPS: usize = 5;
/// Timed `commons fork` runs of each kind (after one warm-up); the rows report the median.
const CLI_REPS: usize = 5;

/// The median of some timings, ms.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// What one fork cost.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    /// The store API: `put` of the fork charter, ms.
    put_ms: f64,
    /// Bytes this process passed to write() during that put (the storage thread's sled writes).
    put_written: Option<u64>,
    /// `commons fork` as a process, start to exit, ms.
    cli_ms: f64,
    /// From the start of `commons fork` until the follower's store holds the fork, ms.
    follower_ms: f64,
    /// Bytes the follower's `commonsd` dirtied for storage while the fork arrived (page granular).
    follower_disk: Option<u64>,
    /// `commons fork --at` 100 patches back, start to exit, ms.
    older_ms: f64,
}

/// `write_bytes` of a process (bytes it caused to be written to storage), from /proc.
fn disk_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Runs `commons --home HOME --json ARGS` and returns the time from start to exit and its
/// JSON output.
fn run_commons(
    commons: &Path,
    home: &Path,
    args: &[&str],
) -> anyhow::Result<(f64, serde_json::Value)> {
    let started = Instant::now();
    let out = Command::new(commons)
        .arg("--home")
        .arg(home)
        .arg("--json")
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", commons.display()))?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        bail!(
            "commons {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((ms, serde_json::from_slice(&out.stdout)?))
}

fn lineage_of(v: &serde_json::Value) -> anyhow::Result<LineageId> {
    let s = v["lineage"].as_str().context("no lineage in the output")?;
    s.parse()
        .map_err(|e| anyhow::anyhow!("bad lineage id {s}: {e:?}"))
}

fn measure(opts: &Opts, built: Built, commons: &Path, commonsd: &Path) -> anyhow::Result<Cost> {
    let mut cost = Cost::default();
    let lineage = built.history.lineage();
    let patches = built.history.records.len() / 2;

    // The store's cost of a fork charter.
    let summary = built
        .store
        .lineage(&lineage)?
        .context("the lineage is missing")?;
    let base = ForkBase {
        parent: lineage,
        heads: summary.fork_point.heads.clone(),
        excluded: summary.fork_point.excluded.clone(),
    };
    // The median of PUT_REPS charters: sled's own background work (segment cleaning after
    // the build) sometimes lands in one put's window, and is not the fork's.
    let mut puts = Vec::with_capacity(PUT_REPS);
    let mut fork = None;
    for rep in 0..PUT_REPS {
        let charter = records::charter(
            &records::key(999),
            &format!("api fork {rep}"),
            records::BASE_TS + 20_000_000 + rep as u64,
            Some(base.clone()),
        );
        let written_before = crate::bytes_written_by_process();
        let started = Instant::now();
        built.store.put(vec![charter.clone()])?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let written = written_before
            .zip(crate::bytes_written_by_process())
            .map(|(a, b)| b - a);
        puts.push((written, ms));
        fork.get_or_insert(charter);
    }
    let fork = fork.context("no fork put")?;
    let mut bytes: Vec<Option<u64>> = puts.iter().map(|p| p.0).collect();
    bytes.sort();
    cost.put_written = bytes[PUT_REPS / 2];
    cost.put_ms = median(puts.iter().map(|p| p.1).collect());
    let forked = built
        .store
        .lineage(&LineageId::from(fork.id()))?
        .context("the fork is missing")?;
    ensure!(
        forked.root == summary.root,
        "the fork's state root differs from its parent's"
    );

    // Two daemons: the home, and a follower with a copy of its store.
    let Built {
        dir,
        store,
        history,
        ..
    } = built;
    store.close()?;
    drop(store);
    if !Home::at(dir.path()).has_identity() {
        Home::at(dir.path()).init_identity(Some("forker"))?;
    }
    let follower_home = tempfile::tempdir()?;
    Home::at(follower_home.path()).init_identity(Some("follower"))?;
    copy_dir(
        &dir.path().join("store"),
        &follower_home.path().join("store"),
    )?;
    let home_path: PathBuf = dir.path().to_owned();
    let a = Daemon::start(commonsd, dir, &[], false)?;
    let b = Daemon::start(
        commonsd,
        follower_home,
        std::slice::from_ref(&a.addr),
        false,
    )?;
    let (mut ca, mut cb) = (a.client()?, b.client()?);
    for c in [&mut ca, &mut cb] {
        c.call(&Request::Follow { lineage })?;
    }
    ensure!(
        cb.wait_until(
            Duration::from_secs(30),
            POLL,
            |c| Ok(c.status()?.peers >= 1)
        )?,
        "the daemons did not connect"
    );
    let lineage_arg = lineage.to_string();
    let follow = |fork: LineageId, cb: &mut crate::daemon::Client| -> anyhow::Result<()> {
        let found = cb.wait_until(FOLLOW_TIMEOUT, POLL, |c| {
            Ok(matches!(
                c.call(&Request::Lineage { lineage: fork })?,
                Response::Lineage(Some(_))
            ))
        })?;
        ensure!(
            found,
            "the follower did not get the fork in {FOLLOW_TIMEOUT:?}"
        );
        Ok(())
    };
    // One untimed warm-up, then CLI_REPS timed forks; the rows report medians.
    let (mut cli, mut followed, mut disk) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..=CLI_REPS {
        let name = format!("fork {i}");
        let disk_before = disk_bytes(b.pid());
        let started = Instant::now();
        let (ms, out) = run_commons(
            commons,
            &home_path,
            &["fork", &lineage_arg, "--name", &name],
        )?;
        let fork = lineage_of(&out)?;
        follow(fork, &mut cb)?;
        if i > 0 {
            cli.push(ms);
            followed.push(started.elapsed().as_secs_f64() * 1e3);
            disk.push(disk_before.zip(disk_bytes(b.pid())).map(|(x, y)| y - x));
        }
    }
    cost.cli_ms = median(cli);
    cost.follower_ms = median(followed);
    disk.sort();
    cost.follower_disk = disk[disk.len() / 2];
    // A fork at an older point: 100 patches back (a linear history: patch, validation, ...).
    let back = 100.min(patches.saturating_sub(1));
    let at = history.records[2 * (patches - 1 - back)].id().to_hex();
    let mut older = Vec::new();
    for i in 0..=CLI_REPS {
        let name = format!("older {i}");
        let (ms, _) = run_commons(
            commons,
            &home_path,
            &["fork", &lineage_arg, "--name", &name, "--at", &at],
        )?;
        if i > 0 {
            older.push(ms);
        }
    }
    cost.older_ms = median(older);
    opts.progress(format!(
        "fork at {patches}: put {:.2} ms ({:?} B), commons fork {:.1} ms, follower {:.1} ms, older {:.1} ms",
        cost.put_ms, cost.put_written, cost.cli_ms, cost.follower_ms, cost.older_ms
    ));
    b.stop();
    a.stop();
    Ok(cost)
}

/// **fork**: the rows (module documentation).
pub fn fork(opts: &Opts, shared: &mut Shared) -> anyhow::Result<Vec<Row>> {
    let large = match shared.long_history.take() {
        Some(b) => b,
        None => build_history(opts, opts.seed + 20, opts.history)?,
    };
    rows_at(opts, large)
}

/// The fork rows for the history in `large`, against a history of `opts.fork_small` patches
/// built here.
pub fn rows_at(opts: &Opts, large: Built) -> anyhow::Result<Vec<Row>> {
    let commonsd = find_commonsd(opts.commonsd.as_deref())?;
    let commons = opts
        .commons
        .clone()
        .unwrap_or_else(|| commonsd.with_file_name("commons"));
    ensure!(
        commons.exists(),
        "{} not found: build it with `cargo build --release -p commons-cli`",
        commons.display()
    );
    let small = build_history(opts, opts.seed + 30, opts.fork_small)?;
    let small_cost = measure(opts, small, &commons, &commonsd)?;
    let n = large.history.records.len() / 2;
    let large_cost = measure(opts, large, &commons, &commonsd)?;
    let small_n = opts.fork_small;
    let written = large_cost.put_written.map_or(f64::NAN, |w| w as f64);
    Ok(vec![
        Row::info("fork", format!("`commons fork` at {n} patches, as a process through commonsd (start to exit; median of {CLI_REPS})"), large_cost.cli_ms, "ms")
            .against(format!("the same at {small_n} patches"), small_cost.cli_ms, "ms")
            .target("≤ 1.5×", large_cost.cli_ms <= 1.5 * small_cost.cli_ms),
        Row::info("fork", format!("follower holds the fork at {n} patches (from the start of `commons fork`, by gossip; median of {CLI_REPS})"), large_cost.follower_ms, "ms")
            .against(format!("the same at {small_n} patches"), small_cost.follower_ms, "ms")
            .target("≤ 1.5×", large_cost.follower_ms <= 1.5 * small_cost.follower_ms)
            .note(format!(
                "the follower's commonsd dirtied {:?} B of storage pages meanwhile ({:?} B at {small_n}); page granular",
                large_cost.follower_disk, small_cost.follower_disk
            )),
        Row::info("fork", format!("store: a fork charter put at {n} patches, bytes written (median of {PUT_REPS} forks)"), written, "B")
            .against(format!("the same at {small_n} patches"), small_cost.put_written.map_or(f64::NAN, |w| w as f64), "B")
            .target("< 4096 B", written < 4096.0)
            .note(format!(
                "write() bytes of the storage thread during the put (the charter, its indexes, the summary, 4 counts, the fork point; sled's log framing included); put took {:.2} ms ({:.2} ms at {small_n})",
                large_cost.put_ms, small_cost.put_ms
            )),
        Row::info("fork", format!("`commons fork --at` 100 patches back at {n} patches (start to exit; median of {CLI_REPS})"), large_cost.older_ms, "ms")
            .against(format!("the same at {small_n} patches"), small_cost.older_ms, "ms")
            .target("≤ 1.5×", large_cost.older_ms <= 1.5 * small_cost.older_ms),
    ])
}
