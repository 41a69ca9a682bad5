//! Power loss: the crash-test writer (`commons-store-crashtest write`) works in a home on a FUSE
//! file system that keeps every byte not yet fsynced in memory (`lossyfs`); at a random moment
//! the test cuts the power — the unsynced bytes are gone and every later operation fails — kills
//! the writer, unmounts, and opens what is left on the backing disk: every record and blob the
//! writer acknowledged must be there, and every lineage's state must equal its state from
//! scratch. A SIGKILL alone (`tests/crash.rs`) cannot show this: the kernel keeps what a killed
//! process wrote.
//!
//! Needs `/dev/fuse` and `fusermount3` (Debian's `fuse3`, which `.ci/run` installs); the test
//! fails, rather than skips, without them. Cuts per run: 20, or `COMMONS_POWER_CUTS` (500 for the long run, docs/storage.md).

mod common;
mod lossyfs;

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn cuts() -> u64 {
    std::env::var("COMMONS_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// Longest wait for the writer to make progress.
const PATIENCE: Duration = Duration::from_secs(60);

fn mount(backing: &std::path::Path, at: &std::path::Path) -> lossyfs::Mounted {
    lossyfs::mount(backing, at).unwrap_or_else(|e| {
        panic!(
            "cannot mount the lossy FUSE file system at {}: {e} (needs /dev/fuse and fusermount3: \
             `apt-get install fuse3`)",
            at.display()
        )
    })
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).expect("random seed");
    u64::from_le_bytes(b)
}

/// The model itself: what was fsynced survives a cut, what was only written does not, and
/// nothing works after it.
#[test]
fn the_lossy_file_system_drops_exactly_what_was_not_fsynced() {
    let backing = tempfile::tempdir().unwrap();
    let at = tempfile::tempdir().unwrap();
    let fs = mount(backing.path(), at.path());
    let kept = at.path().join("kept");
    let lost = at.path().join("lost");
    let mut f = std::fs::File::create(&kept).unwrap();
    f.write_all(&[1u8; 10_000]).unwrap();
    f.sync_all().unwrap();
    // Written after the fsync: lost, and the file keeps its synced length.
    f.write_all_at(&[2u8; 5_000], 10_000).unwrap();
    let mut g = std::fs::File::create(&lost).unwrap();
    g.write_all(b"never synced").unwrap();
    drop(g);
    assert_eq!(std::fs::read(&lost).unwrap(), b"never synced");
    assert_eq!(std::fs::metadata(&kept).unwrap().len(), 15_000);
    fs.control.cut();
    assert!(f.write_all(b"x").is_err(), "writes fail after the cut");
    drop(f);
    assert_eq!(fs.control.dropped_bytes(), 3 * 4096);
    fs.unmount();
    assert_eq!(
        std::fs::read(backing.path().join("kept")).unwrap(),
        vec![1u8; 10_000]
    );
    // Created (a directory operation) but its data never synced: empty.
    assert_eq!(std::fs::read(backing.path().join("lost")).unwrap(), b"");
}

#[test]
fn acknowledged_writes_survive_a_power_cut() {
    let seed = seed();
    eprintln!("power-loss test seed {seed}");
    let mut rng = seed | 1;
    let mut below = |n: u64| {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    };
    let backing = tempfile::tempdir().unwrap();
    let at = tempfile::tempdir().unwrap();
    let mut acked = common::Acked::default();
    let mut dropped = 0;
    let cuts = cuts();
    for round in 0..cuts {
        let fs = mount(backing.path(), at.path());
        let (mut child, rx, reader) =
            common::spawn_writer(&at.path().join("home"), round + 1, Stdio::null());
        // Cut after a random number of acknowledgements, at a random moment after the last.
        let target = 1 + below(60) as usize;
        let mut seen = 0;
        let give_up = Instant::now() + PATIENCE;
        while seen < target {
            let left = give_up.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "cut {round}: the writer made no progress");
            match rx.recv_timeout(left) {
                Ok(line) => seen += usize::from(acked.take(&line)),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let spin = Instant::now() + Duration::from_micros(below(20_000));
        while Instant::now() < spin {
            if let Ok(line) = rx.try_recv() {
                acked.take(&line);
            }
        }
        fs.control.cut();
        dropped += fs.control.dropped_bytes();
        let _ = child.kill();
        child.wait().unwrap();
        reader.join().unwrap();
        // Everything printed was printed before the cut could fail its writes.
        while let Ok(line) = rx.try_recv() {
            acked.take(&line);
        }
        assert!(fs.control.fsyncs() > 0, "cut {round}: nothing was fsynced");
        fs.unmount();
        common::check_acked(
            &backing.path().join("home"),
            &mut acked,
            &format!("after power cut {round} (seed {seed})"),
        );
    }
    eprintln!(
        "{} records and {} blobs acknowledged over {cuts} power cuts, {dropped} unsynced bytes dropped",
        acked.records.len(),
        acked.blobs.len()
    );
    let (loose, packed) = common::loose_and_packed(&backing.path().join("home"), &acked);
    assert!(
        loose > 0 && packed > 0,
        "{loose} loose and {packed} packed blobs: both kinds must be tested"
    );
    assert!(
        dropped > 0,
        "no cut ever dropped unsynced data: the test showed nothing"
    );
}
