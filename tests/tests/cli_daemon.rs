//! The CLI and the daemon together: `commons demo` plays the whole story across three real
//! `commonsd` nodes on loopback and must end with the same state roots everywhere; and the
//! node's commands say clearly, with exit code 7, when no daemon runs; and Ctrl-C stops a
//! daemon cleanly.

use std::collections::BTreeMap;
use std::process::Command;

use commons_tests::{Scene, bin, daemon_bin};

#[test]
fn the_demo_ends_with_the_same_roots_on_all_three_nodes() {
    let out = Command::new(bin!())
        .arg("demo")
        .env("COMMONSD_BIN", daemon_bin!())
        .output()
        .expect("run commons demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "commons demo failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    // Lines like `root of "Seed Library" on B: 4a02…`.
    let mut roots: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for line in stdout.lines() {
        let Some(rest) = line.trim().strip_prefix("root of ") else {
            continue;
        };
        let (what, root) = rest.rsplit_once(": ").expect("`: ROOT` ends the line");
        let (name, node) = what.rsplit_once(" on ").expect("` on NODE` names the node");
        roots
            .entry(name.to_owned())
            .or_default()
            .insert(node.to_owned(), root.to_owned());
    }
    assert_eq!(
        roots.keys().collect::<Vec<_>>(),
        ["\"Seed Library (arid)\"", "\"Seed Library\""],
        "{stdout}"
    );
    for (name, by_node) in &roots {
        assert_eq!(
            by_node.keys().collect::<Vec<_>>(),
            ["A", "B", "C"],
            "{name}: {stdout}"
        );
        let first = by_node.values().next().expect("three roots");
        assert_eq!(first.len(), 64, "{name}: a full root: {stdout}");
        assert!(
            by_node.values().all(|r| r == first),
            "{name} differs between nodes: {by_node:?}"
        );
    }
    assert!(
        stdout.contains("Stopped the three nodes and removed their homes."),
        "{stdout}"
    );
}

#[test]
fn node_commands_need_a_running_daemon() {
    let scene = Scene::new(bin!());
    let alice = scene.person("alice");
    let home = alice.home.display().to_string();
    for args in [
        &["node", "status"][..],
        &["node", "peers"],
        &["node", "connect", "/ip4/127.0.0.1/tcp/4001"],
        &["follow", &"ab".repeat(32)],
        &["unfollow", "abcd"],
        &["sync", "abcd"],
    ] {
        let err = alice.fails(7, args);
        assert_eq!(
            err.trim_end(),
            format!(
                "error: no commonsd is running with home {home}\n\
                 hint: start it with `commonsd` (or `commonsd --home {home}`)"
            ),
            "{args:?}"
        );
    }
    // Asking about the node opened no store: nothing was created in the home.
    assert!(!alice.home.join("store").exists());

    // A socket file nobody answers on (a daemon that died) is ignored: the store is used.
    drop(std::os::unix::net::UnixListener::bind(alice.home.join("commonsd.sock")).expect("bind"));
    let seeds = scene.write_tree("seeds", &[("a.txt", b"a\n")]);
    alice.ok([
        "create",
        "Seeds",
        "--license",
        "MIT",
        "--from",
        seeds.to_str().expect("utf-8"),
    ]);
    assert!(alice.ok(["list"]).contains("Seeds"));
    alice.fails(7, ["node", "status"]);

    let help = alice.ok(["--help"]);
    assert!(help.contains("7  no daemon"), "{help}");
}

/// Ctrl-C (SIGINT) stops the daemon as SIGTERM does: it flushes the store, removes its socket
/// and exits 0, and what it acknowledged is there when the CLI opens the store itself.
#[test]
fn ctrl_c_stops_the_daemon_cleanly() {
    let scene = Scene::new(bin!());
    let alice = scene.person("alice");
    let mut d = commons_tests::net::Daemon::start(&daemon_bin!(), &alice.home, &[]);
    scene.found(&alice, "Seeds", &[("a.txt", b"a\n")]);
    assert_eq!(d.stop_with("INT"), 0, "a clean exit on SIGINT");
    assert!(!alice.home.join("commonsd.sock").exists(), "socket removed");
    assert!(alice.ok(["list"]).contains("Seeds"));
}

/// The daemon locks its home down at every start (0700, whatever was done to it), serves only
/// processes of its own user (or root) on the control socket, and starts on a home whose
/// identity was cut short by a crash (a node key without an author key).
#[test]
fn the_home_is_owner_only_and_only_its_user_talks_to_the_daemon() {
    use std::os::unix::fs::PermissionsExt;
    let scene = Scene::new(bin!());
    // An identity cut short: only a node key, half written.
    let home = scene.path("fresh-home");
    std::fs::create_dir_all(&home).expect("home");
    std::fs::write(home.join("node.key"), "00").expect("partial key");
    let alice = scene.existing("alice", &home);
    std::fs::set_permissions(&alice.home, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut d = commons_tests::net::Daemon::start(&daemon_bin!(), &alice.home, &[]);
    alice.ok(["node", "status"]);
    // Opened up while the daemon is stopped: the next start closes it again.
    assert_eq!(d.stop(), 0);
    std::fs::set_permissions(&alice.home, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d.restart(&[]);
    let mode = std::fs::metadata(&alice.home)
        .expect("home")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "the daemon made the home owner-only");

    // Another user's process, even if the home and socket are opened up by hand, is refused
    // before anything is read. The same script run as this user gets an answer.
    let socket = alice.home.join("commonsd.sock");
    std::fs::set_permissions(&alice.home, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let frame = {
        let body = serde_json::to_vec(&commons_rpc::Request::NodeStatus).expect("json");
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend(body);
        hex::encode(f)
    };
    let script = [
        "import socket, sys",
        "s = socket.socket(socket.AF_UNIX)",
        "s.settimeout(20)",
        "s.connect(sys.argv[1])",
        "try:",
        "    s.sendall(bytes.fromhex(sys.argv[2]))",
        "    print(len(s.recv(4)))",
        "except OSError:",
        "    print(0)",
    ]
    .join("\n");
    let run = |prefix: &[&str]| -> String {
        let out = Command::new(prefix[0])
            .args(&prefix[1..])
            .args(["/usr/bin/python3", "-c", &script])
            .arg(&socket)
            .arg(&frame)
            .output()
            .expect("run python");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(run(&["env"]), "4", "the owner gets an answer");
    let root = String::from_utf8_lossy(&Command::new("id").arg("-u").output().expect("id").stdout)
        .trim()
        == "0";
    if root {
        let nobody = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ];
        assert_eq!(run(&nobody), "0", "another user is refused unanswered");
        let status = alice.json(["node", "status"]);
        assert!(
            status["refused"]["control connection of another user"].as_u64() >= Some(1),
            "{status}"
        );
    } else {
        eprintln!("not root: the refusal of another user's process needs root to switch users");
    }
    drop(d);
}

/// Clients that connect and never send a request cannot lock the control socket: while every
/// slot is taken and another client waits, connections idle for a few seconds are closed.
#[test]
fn idle_clients_do_not_lock_the_control_socket() {
    let scene = Scene::new(bin!());
    let alice = scene.person("alice");
    let _d = commons_tests::net::Daemon::start(&daemon_bin!(), &alice.home, &[]);
    let socket = alice.home.join("commonsd.sock");
    // More idle clients than the daemon serves at once.
    let idle: Vec<std::os::unix::net::UnixStream> = (0..40)
        .map(|_| std::os::unix::net::UnixStream::connect(&socket).expect("connect"))
        .collect();
    let started = std::time::Instant::now();
    let status = alice.json(["node", "status"]);
    let took = started.elapsed();
    assert!(status["peer_id"].is_string(), "{status}");
    assert!(
        took < std::time::Duration::from_secs(30),
        "node status waited {took:?} behind idle clients"
    );
    // Some of the idle ones were closed to make room.
    let closed = idle
        .iter()
        .filter(|s| {
            use std::io::Read;
            s.set_read_timeout(Some(std::time::Duration::from_millis(50)))
                .expect("timeout");
            matches!((&mut &**s).read(&mut [0u8; 1]), Ok(0))
        })
        .count();
    assert!(closed >= 1, "no idle connection was closed");
}

/// A request frame over the control socket's limit is refused with an error that names the
/// limit, before its body is read (the daemon allocates nothing for it); the daemon goes on
/// serving. (Clients cut large puts to fit: `commons_rpc::put_chunks`, unit-tested there.)
#[test]
fn an_oversized_control_request_is_refused_before_it_is_read() {
    use std::io::Write;
    let scene = Scene::new(bin!());
    let alice = scene.person("alice");
    let _d = commons_tests::net::Daemon::start(&daemon_bin!(), &alice.home, &[]);
    let socket = alice.home.join("commonsd.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
    let len = (commons_rpc::MAX_REQUEST_BYTES + 1) as u32;
    s.write_all(&len.to_be_bytes()).expect("prefix");
    // The daemon may refuse on the prefix and close before this arrives (EPIPE): the answer is
    // what is checked, not this write.
    let _ = s.write_all(&[b'{'; 4096]);
    let answer: commons_rpc::Response = commons_rpc::read_msg(&mut s).expect("an answer");
    match answer {
        commons_rpc::Response::Error(e) => {
            assert!(e.message.contains("limit"), "{}", e.message);
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(alice.json(["node", "status"])["peer_id"].is_string());
}
