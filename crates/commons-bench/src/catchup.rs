//! `catchup`: a new node fetching a whole commons from one peer, against `git clone` of the same
//! files from `git daemon`, both on loopback, measured in the same run.
//!
//! The fixture (not timed): N files of M/N bytes of pseudo-random (incompressible) content, the
//! file `i` added by patch `i`. The commons is a linear history of N patches (each the child of
//! the previous, each adding one file), each accepted by the maintainer's validation: 2N + 1
//! records with the charter, stored with the store API into the seeder's home, and the N blobs
//! put into its blob store (with their outboards), before the seeding `commonsd` starts. The git
//! repository holds the same files, one commit per file, built with `git fast-import` into a
//! bare repository (one pack, as fast-import writes it; no repack).
//!
//! Measured: a `commonsd` with an empty home, bootstrapped to the seeder (eager blobs, the
//! default), is sent `Follow`; the time from that request until it holds all 2N + 1 records and
//! all N blobs (its `NodeStatus` polled every [`POLL`]; the blobs are checked on disk). The
//! reference: `git clone git://127.0.0.1:PORT/repo.git` into a fresh directory (negotiation, the
//! pack git makes on the fly, index-pack, checkout of every file). Both results are checked:
//! every blob and every checked-out file hashes to what was generated.

use std::io::{BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use commons_core::{BlobHash, Body, Change, LineageId, Patch, Record, RecordId};
use commons_rpc::{NodeStatus, Request, Response, SyncReport};
use commons_store::home::Home;
use commons_store::outboard::compute_outboard;
use commons_store::{BlobStore, Store};

use crate::daemon::{Daemon, find_commonsd};
use crate::records::{self, BASE_TS};
use crate::{Opts, Row};

/// The scenario's name in the table.
const SCENARIO: &str = "catchup";
/// How often the new node's status is polled. `NodeStatus` walks the node's store directory to
/// report its size (about 3 ms with 20 000 blob and outboard files on the machine of
/// `docs/benchmarks.md`): polled every 25 ms it took a fifth of the new node's CPU time, every
/// 100 ms it takes about 3 % of one core, at 100 ms of resolution.
pub const POLL: Duration = Duration::from_millis(100);
/// Records per `Store::put` while building the seeder's store.
const BUILD_BATCH: usize = 2000;
/// Longest the catch-up may take: this, plus [`DEADLINE_PER_PATCH`] per patch and
/// [`DEADLINE_PER_MIB`] per MiB.
const DEADLINE_BASE: Duration = Duration::from_secs(120);
/// See [`DEADLINE_BASE`].
const DEADLINE_PER_PATCH: Duration = Duration::from_millis(100);
/// See [`DEADLINE_BASE`].
const DEADLINE_PER_MIB: Duration = Duration::from_secs(1);
/// Longest `git daemon` may take to accept connections.
const GIT_START_TIMEOUT: Duration = Duration::from_secs(10);
/// The key number of the maintainer (offset from the seed).
const KEY_OFFSET: u64 = 80;
/// The author and committer of the git commits.
const GIT_IDENT: &str = "Bench <bench@commons.invalid>";

/// The path of file `i`, in the commons and in git: 1 000 files per directory.
pub fn path_of(i: usize) -> String {
    format!("d{:03}/f{i:06}.bin", i / 1000)
}

/// The content of file `i`: `len` pseudo-random bytes (xorshift from the seed and `i`).
pub fn content(seed: u64, i: usize, len: usize) -> Vec<u8> {
    let mut state = (seed ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        | 1;
    let mut out = vec![0u8; len];
    for word in out.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
    }
    out
}

/// What [`build`] made.
#[derive(Debug)]
pub struct Fixture {
    /// The seeder's home: records and blobs stored, the store closed.
    pub home: tempfile::TempDir,
    /// The lineage.
    pub lineage: LineageId,
    /// Records in the store (the charter, N patches, N validations).
    pub records: u64,
    /// The blob of file `i`, in order.
    pub blobs: Vec<BlobHash>,
    /// Bytes of one file.
    pub file_len: usize,
    /// `<git_base>/repo.git`: the bare git repository.
    pub git_base: PathBuf,
    /// Commits on `main`, counted by `git rev-list`.
    pub commits: u64,
    /// Bytes of the git repository on disk.
    pub git_bytes: u64,
}

/// The bare repository's directory name under [`Fixture::git_base`].
pub const REPO: &str = "repo.git";

/// Builds the commons (in a fresh home) and the git repository (under `work`) with `patches`
/// files totalling about `total_bytes`.
pub fn build(
    opts: &Opts,
    work: &Path,
    patches: usize,
    total_bytes: u64,
) -> anyhow::Result<Fixture> {
    ensure!(patches > 0, "at least one patch");
    let file_len = usize::try_from(total_bytes / patches as u64)?.max(1);

    // The git side: a bare repository fed by fast-import as the files are made.
    let git_base = work.join("git");
    std::fs::create_dir_all(&git_base)?;
    let repo = git_base.join(REPO);
    git(
        &git_base,
        &["init", "-q", "--bare", "--initial-branch=main", REPO],
    )?;
    let mut import = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(&repo)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start git fast-import")?;
    let mut stream = BufWriter::with_capacity(
        1 << 20,
        import.stdin.take().context("no stdin for fast-import")?,
    );

    // The commons side: a home with a store.
    let home = tempfile::tempdir()?;
    let store = Store::open(&Home::at(home.path()).store_dir())?;
    let key = records::key(opts.seed + KEY_OFFSET);
    let charter = records::charter(&key, "catch-up bench", BASE_TS, None);
    let lineage = LineageId::from(charter.id());
    store.put(vec![charter])?;
    let mut records_held = 1u64;

    let mut blobs = Vec::with_capacity(patches);
    let mut batch: Vec<Record> = Vec::with_capacity(BUILD_BATCH);
    let mut parent: Option<RecordId> = None;
    let (mut blob_time, mut put_time) = (Duration::ZERO, Duration::ZERO);
    for i in 0..patches {
        let bytes = content(opts.seed, i, file_len);
        let t = Instant::now();
        let hash = put_blob(store.blobs(), &bytes)?;
        blob_time += t.elapsed();
        blobs.push(hash);
        let path = path_of(i);
        let message = format!("add {path}");
        let ts = BASE_TS + 1 + 2 * i as u64;
        let patch = Record::sign(
            &key,
            ts,
            Body::Patch(Patch {
                lineage,
                parents: parent.into_iter().collect(),
                changes: vec![Change {
                    path: path.clone(),
                    before: None,
                    after: Some(hash),
                }],
                message: message.clone(),
            }),
        )?;
        parent = Some(patch.id());
        let accept = records::accept(&key, lineage, patch.id(), ts + 1);
        batch.push(patch);
        batch.push(accept);
        if batch.len() >= BUILD_BATCH {
            let t = Instant::now();
            records_held += store.put(std::mem::take(&mut batch))?.len() as u64;
            put_time += t.elapsed();
        }
        // One commit adding the same file, with the patch's time (seconds).
        let secs = ts / 1000;
        write!(
            stream,
            "commit refs/heads/main\nauthor {GIT_IDENT} {secs} +0000\ncommitter {GIT_IDENT} {secs} +0000\ndata {}\n{message}\nM 100644 inline {path}\ndata {}\n",
            message.len(),
            bytes.len()
        )?;
        stream.write_all(&bytes)?;
        stream.write_all(b"\n")?;
        if (i + 1) % 2000 == 0 {
            opts.progress(format!(
                "catchup: built {} of {patches} files (blobs {:.1} s, puts {:.1} s)",
                i + 1,
                blob_time.as_secs_f64(),
                put_time.as_secs_f64()
            ));
        }
    }
    if !batch.is_empty() {
        records_held += store.put(batch)?.len() as u64;
    }
    let held = store.record_count()?;
    ensure!(
        held == records_held && held == 2 * patches as u64 + 1,
        "the seeder's store holds {held} records, expected {}",
        2 * patches + 1
    );
    store.close()?;
    drop(store);

    drop(stream.into_inner().map_err(|e| e.into_error())?);
    let out = import.wait_with_output()?;
    ensure!(
        out.status.success(),
        "git fast-import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let commits: u64 = git(&repo, &["rev-list", "--count", "main"])?
        .trim()
        .parse()
        .context("git rev-list --count")?;
    ensure!(
        commits == patches as u64,
        "the git repository has {commits} commits, expected {patches}"
    );
    Ok(Fixture {
        home,
        lineage,
        records: held,
        blobs,
        file_len,
        git_bytes: crate::dir_size(&repo),
        git_base,
        commits,
    })
}

/// Puts a blob and its outboard where `BlobStore` keeps them, like `BlobStore::put_bytes` but
/// without its fsyncs (five per blob: they made building 10 000 blobs take minutes, and the
/// fixture needs no durability). The seeder reads the same files either way.
fn put_blob(blobs: &BlobStore, bytes: &[u8]) -> anyhow::Result<BlobHash> {
    let mut outboard = Vec::new();
    let (hash, _) = compute_outboard(bytes, &mut outboard)?;
    let path = blobs.path_of(&hash);
    std::fs::create_dir_all(path.parent().context("a blob path has a parent")?)?;
    std::fs::write(blobs.outboard_path(&hash), outboard)?;
    std::fs::write(&path, bytes)?;
    Ok(hash)
}

/// Runs `git ARGS` in `dir`; its stdout.
fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run git {}", args.join(" ")))?;
    ensure!(
        out.status.success(),
        "git {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A running `git daemon`, killed (and reaped) when dropped, whatever happened.
#[derive(Debug)]
pub struct GitDaemon {
    child: Child,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

impl GitDaemon {
    /// Serves every repository under `base` on 127.0.0.1 and a free port, and waits until it
    /// accepts connections.
    pub fn start(base: &Path, log: &Path) -> anyhow::Result<GitDaemon> {
        // A port the OS chose a moment ago (git daemon cannot be asked for port 0 and tell).
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        // `git daemon` would run `git-daemon` as a child of `git`, and killing `git` would leave
        // it serving: start `git-daemon` itself, so that the process killed is the daemon.
        let exec_path = PathBuf::from(git(base, &["--exec-path"])?.trim());
        let child = Command::new(exec_path.join("git-daemon"))
            .arg("--reuseaddr")
            .arg(format!("--base-path={}", base.display()))
            .arg("--export-all")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(log)?))
            .spawn()
            .context("cannot start git daemon")?;
        let mut daemon = GitDaemon { child, port };
        let deadline = Instant::now() + GIT_START_TIMEOUT;
        loop {
            if let Some(status) = daemon.child.try_wait()? {
                bail!(
                    "git daemon exited ({status}): {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(daemon);
            }
            ensure!(
                Instant::now() < deadline,
                "git daemon does not accept connections on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clones the fixture's repository from a `git daemon` into `dest`; returns the seconds the
/// clone took, after checking every file of the checkout.
fn git_clone(fixture: &Fixture, work: &Path, dest: &Path) -> anyhow::Result<f64> {
    let daemon = GitDaemon::start(&fixture.git_base, &work.join("git-daemon.log"))?;
    let url = format!("git://127.0.0.1:{}/{REPO}", daemon.port);
    let started = Instant::now();
    let out = Command::new("git")
        .args(["clone", "-q", &url])
        .arg(dest)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .context("cannot run git clone")?;
    let secs = started.elapsed().as_secs_f64();
    drop(daemon);
    ensure!(
        out.status.success(),
        "git clone failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let commits: u64 = git(dest, &["rev-list", "--count", "HEAD"])?
        .trim()
        .parse()
        .context("git rev-list --count")?;
    ensure!(
        commits == fixture.commits,
        "the clone has {commits} commits"
    );
    for (i, hash) in fixture.blobs.iter().enumerate() {
        let bytes = std::fs::read(dest.join(path_of(i)))
            .with_context(|| format!("the clone lacks {}", path_of(i)))?;
        ensure!(
            BlobHash::of(&bytes) == *hash,
            "{} differs in the clone",
            path_of(i)
        );
    }
    Ok(secs)
}

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat` (100 ticks a second).
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Runs the scenario at `opts.catchup_patches` and `opts.catchup_mib`.
pub fn run(opts: &Opts) -> anyhow::Result<Vec<Row>> {
    let bin = find_commonsd(opts.commonsd.as_deref())?;
    let n = opts.catchup_patches.max(1);
    let work = tempfile::tempdir()?;
    opts.progress(format!(
        "catchup: building {n} patches / commits, {} MiB of files",
        opts.catchup_mib
    ));
    let started = Instant::now();
    let fixture = build(opts, work.path(), n, opts.catchup_mib << 20)?;
    let total = fixture.file_len as u64 * n as u64;
    opts.progress(format!(
        "catchup: fixture built in {:.1} s ({} records, {} commits, {} bytes of files; git repo {} bytes)",
        started.elapsed().as_secs_f64(),
        fixture.records,
        fixture.commits,
        total,
        fixture.git_bytes
    ));

    opts.progress("catchup: reference: git clone from git daemon");
    let git_secs = git_clone(&fixture, work.path(), &work.path().join("clone"))?;
    opts.progress(format!("catchup: git clone took {git_secs:.2} s"));

    let expected = fixture.records;
    let seeder = Daemon::start(&bin, fixture.home, &[], false)?;
    let mut sc = seeder.client()?;
    // The seeder follows its commons, as the node that holds it would.
    sc.call(&Request::Follow {
        lineage: fixture.lineage,
    })?;
    ensure!(
        sc.status()?.records == expected,
        "the seeder does not hold the {expected} records"
    );
    let receiver = Daemon::start(
        &bin,
        tempfile::tempdir()?,
        std::slice::from_ref(&seeder.addr),
        false,
    )?;
    let mut client = receiver.client()?;
    ensure!(
        client.wait_until(
            Duration::from_secs(30),
            POLL,
            |c| Ok(c.status()?.peers >= 1)
        )?,
        "the daemons did not connect"
    );
    let cpu_before = (cpu_secs(receiver.pid()), cpu_secs(seeder.pid()));
    let deadline = DEADLINE_BASE
        + DEADLINE_PER_PATCH * n as u32
        + DEADLINE_PER_MIB * u32::try_from(opts.catchup_mib).unwrap_or(u32::MAX / 1000);

    opts.progress(format!(
        "catchup: the new node follows the commons ({expected} records, {n} blobs; deadline {} s)",
        deadline.as_secs()
    ));
    let started = Instant::now();
    let follower = {
        let mut c = receiver.client()?;
        let lineage = fixture.lineage;
        std::thread::spawn(move || -> anyhow::Result<(SyncReport, f64)> {
            match c.call(&Request::Follow { lineage })? {
                Response::Synced(r) => Ok((r, started.elapsed().as_secs_f64())),
                other => bail!("unexpected answer {other:?}"),
            }
        })
    };
    let mut last: Option<NodeStatus> = None;
    let mut records_at = None;
    let mut blobs_at = None;
    let mut polls = 0u64;
    // Time spent in `NodeStatus` (it walks the store directory): the cost of watching.
    let mut status_secs = 0.0;
    let mut next_progress = Instant::now() + Duration::from_secs(10);
    while started.elapsed() < deadline {
        let asked = Instant::now();
        let s = client.status()?;
        status_secs += asked.elapsed().as_secs_f64();
        polls += 1;
        let t = started.elapsed().as_secs_f64();
        if records_at.is_none() && s.records >= expected {
            records_at = Some(t);
        }
        if blobs_at.is_none() && s.blobs.completed >= n as u64 {
            blobs_at = Some(t);
        }
        if Instant::now() >= next_progress {
            opts.progress(format!(
                "catchup: {t:.0} s: {} of {expected} records, {} of {n} blobs",
                s.records, s.blobs.completed
            ));
            next_progress = Instant::now() + Duration::from_secs(10);
        }
        last = Some(s);
        if records_at.is_some() && blobs_at.is_some() {
            break;
        }
        std::thread::sleep(POLL);
    }
    let cpu_after = (cpu_secs(receiver.pid()), cpu_secs(seeder.pid()));
    let cpu = |after: Option<f64>, before: Option<f64>| match (after, before) {
        (Some(a), Some(b)) => format!("{:.1} s", a - b),
        _ => "?".to_owned(),
    };
    let cpu_note = format!(
        "CPU during the catch-up: new node {}, seeder {}",
        cpu(cpu_after.0, cpu_before.0),
        cpu(cpu_after.1, cpu_before.1)
    );
    let last = last.context("no status was read")?;
    let received = BlobStore::open_shared(&receiver.home.path().join("store/blobs"))?;
    let on_disk = fixture
        .blobs
        .iter()
        .filter(|h| received.contains(h))
        .count();
    let (Some(records_at), Some(blobs_at)) = (records_at, blobs_at) else {
        receiver.stop();
        seeder.stop();
        let _ = follower.join();
        return Ok(vec![
            Row::error(
                SCENARIO,
                &anyhow!(
                    "timeout after {:.0} s: the new node held {} of {expected} records and {on_disk} of {n} blobs ({} bytes received); {cpu_note}",
                    started.elapsed().as_secs_f64(),
                    last.records,
                    last.blobs.received_bytes
                ),
            ),
            git_row(git_secs, total, n),
        ]);
    };
    let secs = records_at.max(blobs_at);
    // Every blob is on disk and is what was generated.
    for (i, hash) in fixture.blobs.iter().enumerate() {
        let mut bytes = Vec::new();
        received
            .open_blob(hash)?
            .with_context(|| format!("the new node lacks the blob of {}", path_of(i)))?
            .read_to_end(&mut bytes)?;
        ensure!(
            BlobHash::of(&bytes) == *hash,
            "the blob of {} is wrong",
            path_of(i)
        );
    }
    let follow = follower
        .join()
        .map_err(|_| anyhow!("the following thread panicked"))?;
    let follow_note = match &follow {
        Ok((r, t)) => format!(
            "the Follow request returned after {t:.2} s ({} new records, {} blobs, {} bytes through it)",
            r.new_records, r.new_blobs, r.blob_bytes
        ),
        Err(e) => format!("the Follow request failed: {e:#}"),
    };
    let store_bytes = client.status()?.store_bytes;
    receiver.stop();
    seeder.stop();
    opts.progress(format!(
        "catchup: commons {secs:.2} s (records {records_at:.2} s, blobs {blobs_at:.2} s), git clone {git_secs:.2} s"
    ));

    let ratio = secs / git_secs;
    let r = &last.reconcile;
    Ok(vec![
        Row::info(
            SCENARIO,
            format!(
                "new node fetches {n} patches + {:.0} MiB of blobs from 1 peer",
                total as f64 / 1048576.0
            ),
            secs,
            "s",
        )
        .against("git clone from git daemon, loopback", git_secs, "s")
        .target("≤ 1× (no slower than git)", ratio <= 1.0)
        .note(format!(
            "{} records and {n} blobs held and checked ({} blob bytes received, store {:.1} MiB on disk); git: {} commits, repo {:.1} MiB, clone checked file by file; {follow_note}; {cpu_note}; polled every {} ms ({polls} NodeStatus, {:.1} ms each on average)",
            last.records,
            last.blobs.received_bytes,
            store_bytes as f64 / 1048576.0,
            fixture.commits,
            fixture.git_bytes as f64 / 1048576.0,
            POLL.as_millis(),
            status_secs * 1e3 / polls.max(1) as f64
        )),
        Row::info(SCENARIO, format!("all {expected} records held"), records_at, "s"),
        Row::info(SCENARIO, format!("all {n} blobs downloaded"), blobs_at, "s"),
        Row::info(
            SCENARIO,
            "catch-up throughput",
            total as f64 / 1048576.0 / secs,
            "MiB/s",
        )
        .against("git clone", total as f64 / 1048576.0 / git_secs, "MiB/s"),
        Row::info(SCENARIO, "reconciliation rounds", r.rounds as f64, "").note(format!(
            "{} sessions, {} bytes, {} ids found missing",
            r.sessions, r.bytes, r.missing
        )),
    ])
}

/// The reference alone, for a run whose catch-up failed.
fn git_row(git_secs: f64, total: u64, n: usize) -> Row {
    Row::info(
        SCENARIO,
        format!(
            "git clone of {n} commits + {:.0} MiB from git daemon, loopback",
            total as f64 / 1048576.0
        ),
        git_secs,
        "s",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_has_the_same_files_on_both_sides() {
        let opts = Opts {
            quiet: true,
            ..Opts::default()
        };
        let work = tempfile::tempdir().unwrap();
        let f = build(&opts, work.path(), 30, 300_000).unwrap();
        assert_eq!(f.records, 61);
        assert_eq!(f.commits, 30);
        assert_eq!(f.file_len, 10_000);
        let blobs = BlobStore::open(&Home::at(f.home.path()).store_dir().join("blobs")).unwrap();
        for (i, h) in f.blobs.iter().enumerate() {
            assert!(blobs.contains(h));
            assert_eq!(*h, BlobHash::of(&content(opts.seed, i, f.file_len)));
        }
        let secs = git_clone(&f, work.path(), &work.path().join("clone")).unwrap();
        assert!(secs > 0.0);
        // Incompressible: the git repository is about as large as the files.
        assert!(f.git_bytes > 300_000, "{}", f.git_bytes);
    }
}
