//! `blobs`: one large blob (1 GiB by default; `COMMONS_BENCH_BLOB_MIB` sets the size in MiB)
//! fetched by a `commonsd` from another over loopback, with verified streaming
//! (`docs/protocol.md` §4), against a plain TCP copy of the same bytes between two threads of
//! this process on loopback, measured in the same run; and the receiving daemon's peak RSS
//! (VmHWM) above what it used before the transfer.
//!
//! Both sides write the bytes to a file and fsync it, so the reference does the same disk work.
//! The daemon's figure includes everything a real follow does: the records, the outboard, the
//! verification of every 16 KiB group, the move into the blob store.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use commons_core::{Body, Change, LineageId, Patch, Record};
use commons_rpc::{Request, Response};
use commons_store::BlobStore;
use commons_store::outboard::compute_outboard;

use crate::daemon::{Daemon, find_commonsd};
use crate::records::{self, BASE_TS};
use crate::{Opts, Row};

/// Default blob size, in MiB.
pub const DEFAULT_BLOB_MIB: u64 = 1024;
/// The environment variable that sets the blob size in MiB.
pub const SIZE_ENV: &str = "COMMONS_BENCH_BLOB_MIB";
/// Target: the daemon moves the blob at least this fraction of the plain TCP copy's speed.
pub const TARGET_RATIO: f64 = 0.5;
/// Target: the receiving daemon's peak RSS grows by less than this while syncing.
pub const TARGET_RSS_MIB: f64 = 100.0;
/// Longest a transfer may take before the run is called failed.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// Copy buffer of the generator and of the TCP reference.
const BUFFER: usize = 1 << 20;

/// Runs the scenario at the size from [`SIZE_ENV`] (default [`DEFAULT_BLOB_MIB`]).
pub fn run(opts: &Opts) -> anyhow::Result<Vec<Row>> {
    let mib = match std::env::var(SIZE_ENV) {
        Ok(v) => v
            .parse::<u64>()
            .with_context(|| format!("{SIZE_ENV}={v} is not a number of MiB"))?,
        Err(_) => DEFAULT_BLOB_MIB,
    };
    run_sized(opts, mib << 20)
}

/// Runs the scenario with a blob of `len` bytes.
pub fn run_sized(opts: &Opts, len: u64) -> anyhow::Result<Vec<Row>> {
    let bin = find_commonsd(opts.commonsd.as_deref())?;
    let work = tempfile::tempdir()?;
    let source = work.path().join("blob.bin");
    opts.progress(format!("writing a {} MiB blob", len >> 20));
    generate(&source, len, opts.seed)?;

    // Each transfer is paired with a TCP copy measured just before it, under the same
    // conditions (`settle`): the machine's speed drifts between steps, and the ratio is taken
    // within a pair.
    let reference = |what: &str| -> anyhow::Result<(f64, f64)> {
        let copy = work.path().join("tcp-copy.bin");
        opts.progress(format!(
            "reference for the {what} transfer: plain TCP copy on loopback"
        ));
        settle(work.path(), len)?;
        let before = cpu_secs(std::process::id())?;
        let secs = tcp_copy(&source, &copy)?;
        let cpu = cpu_secs(std::process::id())? - before;
        std::fs::remove_file(&copy)?;
        Ok((mib(len) / secs, cpu))
    };
    let (tcp_rate, tcp_cpu) = reference("sealed")?;
    opts.progress("sealed bulk transfer (the default)");
    let sealed = transfer(opts, &bin, &source, len, false)?;
    let (clear_tcp_rate, clear_tcp_cpu) = reference("clear-text")?;
    opts.progress("clear-text bulk transfer (bulk_clear = true on both)");
    let clear = transfer(opts, &bin, &source, len, true)?;
    let rate = mib(len) / sealed.secs;
    let clear_rate = mib(len) / clear.secs;
    let growth = sealed.hwm.saturating_sub(sealed.rss_before) as f64 / 1024.0;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu_note = |t: &Transfer, tcp_cpu: f64| {
        format!(
            "CPU time during the transfer: receiver {:.2} s, seeder {:.2} s ({:.2} CPU-s per GiB \
             together; its TCP copy {tcp_cpu:.2} s, {:.2} CPU-s per GiB)",
            t.cpu_receiver,
            t.cpu_seeder,
            (t.cpu_receiver + t.cpu_seeder) / gib(len),
            tcp_cpu / gib(len),
        )
    };
    Ok(vec![
        Row::info(
            "blobs",
            "blob transfer between two commonsd (sealed bulk link, the default)",
            rate,
            "MiB/s",
        )
        .against("plain TCP copy on loopback, just before", tcp_rate, "MiB/s")
        .target(
            format!("≥ {TARGET_RATIO}×"),
            rate / tcp_rate >= TARGET_RATIO,
        )
        .note(format!(
            "{} MiB, {cpus} CPUs; the follow itself fetched {} bytes; {}",
            len >> 20,
            sealed.fetched,
            cpu_note(&sealed, tcp_cpu)
        )),
        Row::info(
            "blobs",
            "blob transfer between two commonsd (clear-text bulk link, bulk_clear)",
            clear_rate,
            "MiB/s",
        )
        .against(
            "plain TCP copy on loopback, just before",
            clear_tcp_rate,
            "MiB/s",
        )
        .note(format!(
            "what sealing costs: the same transfer without it; {}",
            cpu_note(&clear, clear_tcp_cpu)
        )),
        Row::info(
            "blobs",
            "receiver peak RSS growth while syncing",
            growth,
            "MiB",
        )
        .against(
            "receiver RSS before the transfer",
            sealed.rss_before as f64 / 1024.0,
            "MiB",
        )
        .target(format!("< {TARGET_RSS_MIB} MiB"), growth < TARGET_RSS_MIB)
        .note(format!(
            "VmHWM {} MiB after (sealed transfer)",
            sealed.hwm / 1024
        )),
    ])
}

/// What one transfer between two fresh daemons took.
struct Transfer {
    secs: f64,
    cpu_seeder: f64,
    cpu_receiver: f64,
    rss_before: u64,
    hwm: u64,
    fetched: u64,
}

/// A seeding `commonsd` stores the blob at `source`; a second one follows the commons and
/// fetches it. With `clear`, both have `bulk_clear = true`.
fn transfer(
    opts: &Opts,
    bin: &Path,
    source: &Path,
    len: u64,
    clear: bool,
) -> anyhow::Result<Transfer> {
    let home = || -> anyhow::Result<tempfile::TempDir> {
        let dir = tempfile::tempdir()?;
        if clear {
            std::fs::write(dir.path().join("config.toml"), "bulk_clear = true\n")?;
        }
        Ok(dir)
    };
    let seeder = Daemon::start(bin, home()?, &[], false)?;
    let blobs = BlobStore::open(&seeder.home.path().join("store/blobs"))?;
    let hash = blobs.put_reader(io::BufReader::with_capacity(
        BUFFER,
        std::fs::File::open(source)?,
    ))?;
    let key = records::key(opts.seed + 70);
    let charter = records::charter(&key, "blob bench", BASE_TS, None);
    let lineage = LineageId::from(charter.id());
    let patch = Record::sign(
        &key,
        BASE_TS + 1,
        Body::Patch(Patch {
            lineage,
            parents: vec![],
            changes: vec![Change {
                path: "blob.bin".to_owned(),
                before: None,
                after: Some(hash),
            }],
            message: "one large file".to_owned(),
        }),
    )?;
    seeder.client()?.put(&[charter, patch])?;

    let receiver = Daemon::start(bin, home()?, std::slice::from_ref(&seeder.addr), false)?;
    let mut client = receiver.client()?;
    let connected = client.wait_until(Duration::from_secs(30), Duration::from_millis(20), |c| {
        Ok(c.status()?.peers >= 1)
    })?;
    ensure!(connected, "the daemons did not connect");
    settle(&seeder.home.path().join("store"), len)?;
    let (rss_before, _) = receiver.rss_kib()?;
    let cpu_before = (cpu_secs(seeder.pid())?, cpu_secs(receiver.pid())?);
    opts.progress("the receiver follows the commons and fetches the blob");
    let started = Instant::now();
    let report = match client.call(&Request::Follow { lineage })? {
        Response::Synced(r) => r,
        other => bail!("unexpected answer {other:?}"),
    };
    let mut secs = started.elapsed().as_secs_f64();
    let received = receiver.home.path().join("store/blobs");
    let received = BlobStore::open_shared(&received)?;
    if !received.contains(&hash) {
        // The follow's own fetch gave up (a busy peer); the catch-up timer finishes it.
        let deadline = Instant::now() + TRANSFER_TIMEOUT;
        while !received.contains(&hash) {
            ensure!(Instant::now() < deadline, "the blob did not arrive in time");
            std::thread::sleep(Duration::from_millis(20));
        }
        secs = started.elapsed().as_secs_f64();
    }
    let (_, hwm) = receiver.rss_kib()?;
    let cpu_seeder = cpu_secs(seeder.pid())? - cpu_before.0;
    let cpu_receiver = cpu_secs(receiver.pid())? - cpu_before.1;
    let (check, got_len) = compute_outboard(
        io::BufReader::with_capacity(
            BUFFER,
            received.open_blob(&hash)?.context("the blob vanished")?,
        ),
        io::sink(),
    )?;
    ensure!(
        check == hash && got_len == len,
        "the received blob is wrong"
    );
    // The follow's own fetch may find the blob already being fetched by a catch-up round that
    // the connection started; it then waits for it, so the time covers the transfer either way.
    Ok(Transfer {
        secs,
        cpu_seeder,
        cpu_receiver,
        rss_before,
        hwm,
        fetched: report.blob_bytes,
    })
}

/// Prepares the machine the same way before each measured step (the TCP copy and each
/// transfer), so that no step pays for another's leftovers:
///
/// - on a virtual machine, writing memory the guest has not used lately costs the host a page
///   fault per page (a first 1 GiB `dd` here takes 1.9 s of system time, the next 0.3 s), which
///   shows up as a slow kernel copy into the page cache in whichever step meets it: so `len`
///   bytes are written to a file in `dir` and deleted, leaving freed pages for the step to use;
/// - every dirty page is then written back (`sync`), so no step starts behind the write-back of
///   an earlier one.
fn settle(dir: &Path, len: u64) -> anyhow::Result<()> {
    let path = dir.join("warm-up.bin");
    {
        let mut f = std::fs::File::create(&path)?;
        let buf = vec![0x5au8; BUFFER];
        let mut left = len;
        while left > 0 {
            let n = left.min(BUFFER as u64) as usize;
            io::Write::write_all(&mut f, &buf[..n])?;
            left -= n as u64;
        }
    }
    std::fs::remove_file(&path)?;
    let status = std::process::Command::new("sync").status()?;
    ensure!(status.success(), "sync failed");
    Ok(())
}

/// CPU time (user + system, every thread) a process has used so far, from `/proc/PID/stat`
/// (clock ticks of 10 ms, the Linux `USER_HZ`).
fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses; utime and stime
    // are fields 14 and 15 of the line, 12 and 13 after the name.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc/PID/stat")?
            .parse::<u64>()? as f64
            / 100.0)
    };
    Ok(tick(11)? + tick(12)?)
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Writes `len` pseudo-random bytes (xorshift from `seed`) to `path`.
fn generate(path: &Path, len: u64, seed: u64) -> anyhow::Result<()> {
    let mut out = io::BufWriter::with_capacity(BUFFER, std::fs::File::create(path)?);
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; BUFFER];
    let mut left = len;
    while left > 0 {
        let n = left.min(BUFFER as u64) as usize;
        for word in buf[..n].chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bytes = state.to_le_bytes();
            word.copy_from_slice(&bytes[..word.len()]);
        }
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

/// Copies `source` to `dest` through a loopback TCP connection (a sender and a receiver
/// thread), the receiver writing and fsyncing the file; returns the seconds it took.
fn tcp_copy(source: &Path, dest: &Path) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let dest = dest.to_owned();
    let receiver = std::thread::spawn(move || -> io::Result<u64> {
        let (mut conn, _) = listener.accept()?;
        let mut out = std::fs::File::create(&dest)?;
        let mut buf = vec![0u8; BUFFER];
        let mut total = 0u64;
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
            total += n as u64;
        }
        out.sync_all()?;
        Ok(total)
    });
    let started = Instant::now();
    let mut conn = TcpStream::connect(addr)?;
    let mut file = std::fs::File::open(source)?;
    io::copy(&mut file, &mut conn)?;
    conn.shutdown(std::net::Shutdown::Write)?;
    let copied = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("the TCP receiver panicked"))??;
    let secs = started.elapsed().as_secs_f64();
    ensure!(
        copied == std::fs::metadata(source)?.len(),
        "the TCP copy is short"
    );
    Ok(secs)
}
