//! End-to-end tests of the bulk port (`commons_net::bulk`) between real `commonsd` processes on
//! 127.0.0.1: a flood of connections that never present a token leaves transfers working and
//! the server's file descriptors bounded; the bytes of a sealed link are not readable on the
//! wire (captured with `tcpdump` on loopback), where a clear-text link's are.

use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use commons_net::bulk::admission::MAX_ALIVE;
use commons_tests::net::{Daemon, wait_for};
use commons_tests::{Person, Scene, bin, daemon_bin};

/// Flags of every daemon of these tests.
const FIXED: [&str; 1] = ["--no-kademlia"];
/// The blob: over the small-blob limit, so it travels in ranges over the bulk link.
const LEN: usize = 4 << 20;

fn blob_stat(p: &Person, field: &str) -> u64 {
    let out = p.run(["--json", "node", "status"]);
    serde_json::from_str::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|s| s["blobs"][field].as_u64())
        .unwrap_or(0)
}

/// Writes a file of `len` bytes made of `marker` repeated; returns the BLAKE3 hash.
fn write_marked(path: &Path, marker: &[u8], len: usize) -> blake3::Hash {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let bytes: Vec<u8> = marker.iter().copied().cycle().take(len).collect();
    fs::write(path, &bytes).expect("write");
    blake3::hash(&bytes)
}

/// Alice founds a commons of one `LEN`-byte file of `marker`; bob follows it until he holds the
/// blob. Returns the blob's hash.
fn share(scene: &Scene, alice: &Person, bob: &Person, name: &str, marker: &[u8]) -> blake3::Hash {
    let dir = scene.path(&format!("src-{name}"));
    let hash = write_marked(&dir.join("data.bin"), marker, LEN);
    let lineage = alice
        .ok([
            "create",
            name,
            "--license",
            "CC0-1.0",
            "--from",
            dir.to_str().expect("utf-8"),
        ])
        .trim()
        .to_owned();
    bob.ok(["follow", &lineage]);
    let hex = hash.to_hex().to_string();
    let path = bob
        .home
        .join("store/blobs")
        .join(&hex[..2])
        .join(hex.as_str());
    wait_for("bob to hold the blob", || path.is_file().then_some(()));
    hash
}

/// Descriptors a daemon may open meanwhile for other reasons (store files, libp2p).
const SLACK: usize = 24;

/// Lets this process hold thousands of sockets (the daemons it starts inherit the limit).
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit).expect("raise RLIMIT_NOFILE");
}

/// 3 000 connections to alice's bulk port that never send a token, held open: alice's file
/// descriptors grow by at most the cap on handshake tasks (waiting, or evicted and closing),
/// and bob still fetches her blob over a bulk link while they are open.
#[test]
fn a_flood_of_token_less_connections_is_capped_and_transfers_go_on() {
    raise_fd_limit();
    let scene = Scene::new(bin!());
    let (alice, bob) = (scene.person("alice"), scene.person("bob"));
    let d = daemon_bin!();
    let a = Daemon::start_with(&d, &alice.home, &[], &FIXED);
    let _b = Daemon::start_with(&d, &bob.home, &[&a.addr], &FIXED);
    let port = a.bulk_port.expect("alice serves a bulk port");
    let before = a.open_fds();

    let mut flood = Vec::new();
    let mut peak = 0;
    for i in 0..3_000 {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => flood.push(s),
            Err(e) => panic!("connection {i} to the bulk port failed: {e}"),
        }
        if i % 250 == 0 {
            peak = peak.max(a.open_fds());
        }
    }
    wait_for("alice to close the evicted connections", || {
        let now = a.open_fds();
        peak = peak.max(now);
        (now <= before + MAX_ALIVE + SLACK).then_some(())
    });
    assert!(
        peak <= before + MAX_ALIVE + SLACK,
        "alice's descriptors went from {before} to {peak}"
    );

    share(&scene, &alice, &bob, "flooded", b"flooded commons ");
    assert!(
        blob_stat(&bob, "bulk_bytes") > 0,
        "bob's ranges came over a bulk link despite the flood"
    );
    assert!(a.open_fds() <= before + MAX_ALIVE + SLACK);
    drop(flood);
}

/// A running `tcpdump` writing what passes on loopback to or from one port.
struct Capture {
    child: std::process::Child,
    file: std::path::PathBuf,
}

impl Capture {
    fn start(file: &Path, port: u16) -> Capture {
        let mut child = Command::new("tcpdump")
            // A large buffer: at loopback speed the default one drops packets.
            .args(["-i", "lo", "-U", "-n", "-s", "0", "-B", "131072", "-w"])
            .arg(file)
            .arg(format!("tcp port {port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run tcpdump (as root; .ci/run installs it)");
        // tcpdump says on stderr when it listens.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("listening on") => break,
                Ok(_) => {}
                Err(_) => panic!("tcpdump did not start listening"),
            }
        }
        Capture {
            child,
            file: file.to_owned(),
        }
    }

    /// Stops the capture; returns the bytes captured (pcap, whole packets).
    fn finish(mut self) -> Vec<u8> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        wait_for("tcpdump to exit", || self.child.try_wait().ok().flatten());
        fs::read(&self.file).expect("read the capture")
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Captures the bulk port of a seeder while a follower fetches a blob of known text: returns
/// the capture, the blob's hash and the bulk bytes the follower received.
fn capture_transfer(name: &str, config: &str, marker: &[u8]) -> (Vec<u8>, blake3::Hash, u64) {
    let scene = Scene::new(bin!());
    let (alice, bob) = (scene.person("alice"), scene.person("bob"));
    for p in [&alice, &bob] {
        fs::create_dir_all(&p.home).expect("home");
        fs::File::create(p.home.join("config.toml"))
            .and_then(|mut f| f.write_all(config.as_bytes()))
            .expect("config.toml");
    }
    let d = daemon_bin!();
    let a = Daemon::start_with(&d, &alice.home, &[], &FIXED);
    let _b = Daemon::start_with(&d, &bob.home, &[&a.addr], &FIXED);
    let capture = Capture::start(
        &scene.path(&format!("{name}.pcap")),
        a.bulk_port.expect("bulk port"),
    );
    let hash = share(&scene, &alice, &bob, name, marker);
    let bulk = blob_stat(&bob, "bulk_bytes");
    (capture.finish(), hash, bulk)
}

/// The bytes and the hashes asked for on a sealed bulk link (the default) are not readable on
/// the wire; with `bulk_clear = true` on both sides the same capture shows both, so the capture
/// does see the link.
#[test]
fn a_sealed_bulk_link_shows_neither_bytes_nor_hashes_on_the_wire() {
    let marker = b"PLAINTEXT-MARKER-that-only-the-blob-holds ";
    let (sealed, hash, bulk) = capture_transfer("sealed", "", marker);
    assert!(bulk > 0, "the blob came over a bulk link");
    assert!(
        sealed.len() as u64 > bulk / 2,
        "the capture holds the transfer: {} bytes captured, {bulk} received",
        sealed.len()
    );
    assert!(!contains(&sealed, marker), "blob bytes on the wire");
    assert!(!contains(&sealed, hash.as_bytes()), "the hash asked for");

    let (clear, hash, bulk) = capture_transfer("clear", "bulk_clear = true\n", marker);
    assert!(bulk > 0, "the blob came over a bulk link");
    assert!(contains(&clear, marker), "clear text is readable");
    assert!(contains(&clear, hash.as_bytes()), "and so is the hash");
}
