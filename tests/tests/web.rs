//! The web explorer in a real browser (headless Chromium over the DevTools protocol,
//! `commons_harness::browser`): pages of real `commonsd` processes on 127.0.0.1 update live as
//! records arrive by gossip, show diffs, validations and the fork tree; and hostile names,
//! messages, paths, notes and files never run a script — checked through the browser (what ran),
//! not by reading the HTML.
//!
//! Screenshots of the main pages go to `target/web-screenshots/` (the README shows one).

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use commons_harness::browser::{Browser, Page};
use commons_tests::net::{Daemon, converge, wait_for};
use commons_tests::{Person, Scene, bin, daemon_bin, shown_root as root};

/// Longest wait for something to show in a page.
const SHOW: Duration = Duration::from_secs(60);

/// An 8×8 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x08, 0x08, 0x02, 0x00, 0x00, 0x00, 0x4b, 0x6d, 0x29,
    0xdc, 0x00, 0x00, 0x00, 0x11, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x90, 0xcb, 0x8f, 0xc1,
    0x8a, 0x18, 0x86, 0x96, 0x04, 0x00, 0xb3, 0x92, 0x3a, 0x41, 0x61, 0xf0, 0x7d, 0xcf, 0x00, 0x00,
    0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

fn screenshots() -> PathBuf {
    // tests/ is the package; the workspace's target/ is beside it.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/web-screenshots")
}

fn js(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

fn shows(page: &Page, text: &str) {
    page.wait_until(
        &format!("document.body.innerText.includes({})", js(text)),
        SHOW,
    )
    .unwrap_or_else(|e| panic!("the page never showed {text:?}: {e}"));
}

fn web_of(d: &Daemon) -> String {
    d.web
        .clone()
        .expect("the harness starts every daemon with its web explorer")
}

/// Checks `lineage` out, writes `files`, proposes with `message`; returns the patch id.
fn propose(
    scene: &Scene,
    p: &Person,
    lineage: &str,
    files: &[(&str, &[u8])],
    message: &str,
) -> String {
    let wc = scene.path(&format!(
        "wc-{}-{}",
        p.name,
        blake3::hash(message.as_bytes()).to_hex()
    ));
    let _ = fs::remove_dir_all(&wc);
    p.ok(["checkout", lineage, wc.to_str().expect("utf-8")]);
    for (path, content) in files {
        let f = wc.join(path);
        fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
        fs::write(f, content).expect("write");
    }
    p.ok(["propose", wc.to_str().expect("utf-8"), "-m", message])
        .trim()
        .to_owned()
}

/// Sets a mark in the page's JavaScript state: a reload would lose it.
fn mark(page: &Page) {
    page.eval("window.__notReloaded = true").expect("eval");
}

fn still_marked(page: &Page, what: &str) {
    assert_eq!(
        page.eval("window.__notReloaded === true").expect("eval"),
        serde_json::Value::Bool(true),
        "{what}: the page was reloaded instead of updated in place"
    );
}

#[test]
fn the_explorer_shows_gossiped_work_live_in_a_real_browser() {
    let scene = Scene::new(bin!());
    let (alice, bob) = (scene.person("alice"), scene.person("bob"));
    let d = daemon_bin!();
    let a = Daemon::start(&d, &alice.home, &[]);
    let b = Daemon::start(&d, &bob.home, &[&a.addr]);
    let garden = scene.found(
        &alice,
        "Seed Library",
        &[
            ("README.md", b"# Seed Library\n\nSeeds anyone may take.\n"),
            ("beds/tomato.txt", b"sow in March\nwater daily\n"),
            ("img/logo.png", PNG),
        ],
    );
    bob.ok(["follow", &garden]);
    wait_for("B to hold the commons", || root(&bob, &garden));
    converge(&garden, &alice, &[&bob]);

    let b_web = web_of(&b);
    let url = bob.ok(["web", &garden]);
    assert_eq!(url.trim(), format!("{b_web}c/{garden}"), "`commons web ID`");
    assert!(
        bob.ok(["node", "status"])
            .contains(&format!("web        {b_web}")),
        "`commons node status` names the explorer"
    );

    let browser = Browser::launch().unwrap_or_else(|e| panic!("{e}"));
    let page = browser.new_page().expect("a page");
    let shots = screenshots();

    // The home page lists the commons; the commons page shows its charter and files.
    page.goto(&b_web).expect("home");
    shows(&page, "Seed Library");
    shows(&page, "Peers connected");
    page.screenshot(&shots.join("home.png"))
        .expect("screenshot");
    page.goto(&format!("{b_web}c/{garden}"))
        .expect("commons page");
    shows(&page, "CC-BY-SA-4.0");
    shows(&page, "README.md");
    let license = page
        .eval("document.querySelector('dl.charter a[href^=\"https://spdx.org/licenses/\"]').href")
        .expect("eval");
    assert_eq!(license, "https://spdx.org/licenses/CC-BY-SA-4.0.html");
    page.screenshot(&shots.join("commons.png"))
        .expect("screenshot");

    // A patch proposed on A appears, without a reload, on B's commons page (its counts) and,
    // in a second tab, on B's patches page.
    page.goto(&format!("{b_web}c/{garden}"))
        .expect("commons page");
    let list = browser.new_page().expect("a second page");
    list.goto(&format!("{b_web}c/{garden}/patches"))
        .expect("patches");
    for p in [&page, &list] {
        p.wait_until("document.documentElement.dataset.live === '1'", SHOW)
            .expect("the page subscribes to live updates");
        mark(p);
    }
    page.wait_until(
        "document.querySelector('#counts').innerText.includes('pending 0')",
        SHOW,
    )
    .expect("nothing pending yet");
    let patch = propose(
        &scene,
        &alice,
        &garden,
        &[(
            "beds/tomato.txt",
            b"sow in March\nwater every morning\nstake at 30 cm\n",
        )],
        "Tomatoes: water in the morning, stake them",
    );
    page.wait_until(
        "document.querySelector('#counts').innerText.includes('pending 1')",
        SHOW,
    )
    .expect("the commons page counts the gossiped patch");
    still_marked(&page, "the commons page, for a gossiped patch");
    shows(&list, "Tomatoes: water in the morning");
    still_marked(&list, "the patches page, for a gossiped patch");
    list.screenshot(&shots.join("patches.png"))
        .expect("screenshot");
    drop(list);

    // Its page on B: pending; alice validates on A; B's page turns accepted, in place.
    page.goto(&format!("{b_web}p/{patch}")).expect("patch page");
    page.wait_until("document.documentElement.dataset.live === '1'", SHOW)
        .expect("live");
    page.wait_until(
        "document.querySelector('#statuses').innerText.includes('pending')",
        SHOW,
    )
    .expect("pending first");
    mark(&page);
    alice.ok(["validate", &patch, "--accept", "-m", "Good advice, thanks"]);
    page.wait_until(
        "document.querySelector('#statuses').innerText.includes('accepted')",
        SHOW,
    )
    .expect("the status changes without a reload");
    shows(&page, "Good advice, thanks");
    still_marked(&page, "a gossiped validation");
    // The diff: removed and added lines of the changed file.
    let del = page
        .eval("Array.from(document.querySelectorAll('table.diff tr.del')).map(r => r.innerText).join('\\n')")
        .expect("eval");
    let add = page
        .eval("Array.from(document.querySelectorAll('table.diff tr.add')).map(r => r.innerText).join('\\n')")
        .expect("eval");
    assert!(
        del.as_str().is_some_and(|t| t.contains("-water daily")),
        "{del}"
    );
    assert!(
        add.as_str()
            .is_some_and(|t| t.contains("+water every morning") && t.contains("+stake at 30 cm")),
        "{add}"
    );
    page.screenshot(&shots.join("patch.png"))
        .expect("screenshot");
    // Side by side: the removed line on the left, the added ones on the right.
    page.goto(&format!("{b_web}p/{patch}?view=split"))
        .expect("side by side");
    let left = page
        .eval("Array.from(document.querySelectorAll('table.diff.split td.del.old')).map(c => c.innerText).join('|')")
        .expect("eval");
    let right = page
        .eval("Array.from(document.querySelectorAll('table.diff.split td.add.new')).map(c => c.innerText).join('|')")
        .expect("eval");
    assert_eq!(left, "water daily");
    assert_eq!(right, "water every morning|stake at 30 cm");

    // History and files (text with line numbers, the image inline), now and at the first patch.
    page.goto(&format!("{b_web}c/{garden}/history"))
        .expect("history");
    shows(&page, "Tomatoes: water in the morning");
    let first = page
        .eval("fetch('/api/c/' + location.pathname.split('/')[2] + '/history').then(r => r.json()).then(h => h.items[h.items.length - 1].patch.id)")
        .expect("eval");
    let first = first.as_str().expect("a patch id").to_owned();
    page.goto(&format!(
        "{b_web}c/{garden}/files/beds/tomato.txt?at={first}"
    ))
    .expect("the file at the first patch");
    shows(&page, "water daily");
    page.wait_until("document.querySelector('#at') !== null && !document.body.innerText.includes('stake at 30 cm')", SHOW)
        .expect("the file as it was, and says so");
    page.goto(&format!("{b_web}c/{garden}/files/beds/tomato.txt"))
        .expect("a text file");
    shows(&page, "stake at 30 cm");
    assert_eq!(
        page.eval("document.querySelectorAll('table.text td.n').length")
            .expect("eval"),
        3,
        "one numbered row per line"
    );
    page.goto(&format!("{b_web}c/{garden}/files/img/logo.png"))
        .expect("an image");
    page.wait_until("(() => { const i = document.querySelector('img.shown'); return !!i && i.complete && i.naturalWidth === 8; })()", SHOW)
        .expect("the image is shown inline");

    // B's home page lists what arrived by gossip, the patch and its validation.
    page.goto(&b_web).expect("home again");
    page.wait_until(
        "(() => { const a = document.querySelector('#activity').innerText; return a.includes('Tomatoes: water in the morning') && a.includes('accept: Good advice, thanks'); })()",
        SHOW,
    )
    .expect("recent activity");

    // Alice's page: what she maintains, proposed and validated.
    page.goto(&format!("{b_web}person/{}", alice.did()))
        .expect("a person");
    page.wait_until(
        "(() => { const t = document.body.innerText; return t.includes('Seed Library') && document.querySelector('table.patches').innerText.includes('Tomatoes') && document.querySelector('#validated').innerText.includes('Good advice, thanks'); })()",
        SHOW,
    )
    .expect("maintains, proposed, validated");

    // The family: two forks drawn as a graph.
    let arid = alice
        .ok([
            "fork",
            &garden,
            "--name",
            "Seed Library (arid)",
            "-m",
            "dry climates",
        ])
        .trim()
        .to_owned();
    alice.ok([
        "fork",
        &garden,
        "--name",
        "Seed Library (alpine)",
        "-m",
        "mountains",
    ]);
    // A patch the parent rejects and a fork takes: its page says so.
    let cactus = propose(
        &scene,
        &alice,
        &garden,
        &[("beds/cactus.txt", b"water monthly\n")],
        "Add cactus",
    );
    alice.ok(["validate", &cactus, "--reject", "-m", "not in this climate"]);
    alice.ok([
        "validate",
        &cactus,
        "--accept",
        "--in",
        &arid,
        "-m",
        "ideal here",
    ]);
    page.goto(&format!("{}p/{cactus}", web_of(&a)))
        .expect("the rejected patch");
    page.wait_until(
        "(() => { const t = document.querySelector('#taken'); return !!t && t.innerText.includes('Seed Library rejected this patch') && t.innerText.includes('Seed Library (arid)'); })()",
        SHOW,
    )
    .expect("the page says which fork took it");

    page.goto(&format!("{}c/{arid}/family", web_of(&a)))
        .expect("family");
    page.wait_until(
        "document.querySelectorAll('svg.family g.lineage').length === 3",
        SHOW,
    )
    .expect("three lineages drawn");
    assert_eq!(
        page.eval("document.querySelectorAll('svg.family path.edge').length")
            .expect("eval"),
        2,
        "one edge per fork"
    );
    assert_eq!(
        page.eval("document.querySelector('svg.family g.here').dataset.lineage")
            .expect("eval"),
        arid.as_str(),
        "the lineage asked about is marked"
    );
    page.screenshot(&shots.join("family.png"))
        .expect("screenshot");

    // The JSON API mirrors the pages.
    let api = page
        .eval(&format!(
            "fetch('/api/c/{arid}/family').then(r => r.json()).then(j => j.lineages.length)"
        ))
        .expect("eval");
    assert_eq!(api, 3);
    assert!(
        page.dialogs().is_empty() && page.exceptions().is_empty(),
        "{:?} {:?}",
        page.dialogs(),
        page.exceptions()
    );
}

#[test]
fn hostile_content_never_runs_in_the_explorer() {
    let scene = Scene::new(bin!());
    let mallory = scene.person("mallory");
    let d = daemon_bin!();
    let m = Daemon::start(&d, &mallory.home, &[]);
    let web = web_of(&m);
    // Every payload sets window.__pwned (and opens a dialog) if it ever runs.
    let name = "<script>window.__pwned='name';alert('name')</script>";
    let evil_path = "<img src=x onerror=\"window.__pwned='path';alert('path')\">.txt";
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" onload="window.__pwned='svg';alert('svg')"><script>window.__pwned='svg2'</script><circle r="4"/></svg>"#;
    let html = b"<html><body><script>window.__pwned='html';alert('html')</script></body></html>";
    let lineage = scene.found(
        &mallory,
        name,
        &[
            ("evil.svg", svg),
            ("evil.html", html),
            (evil_path, b"<script>window.__pwned='content'</script>\n"),
        ],
    );
    let message = "<img src=x onerror=\"window.__pwned='message';alert('message')\"> fix";
    let patch = propose(
        &scene,
        &mallory,
        &lineage,
        &[("evil.js", b"window.__pwned='js'; alert('js');\n")],
        message,
    );
    mallory.ok([
        "validate",
        &patch,
        "--accept",
        "-m",
        "<script>window.__pwned='note'</script>",
    ]);

    let browser = Browser::launch().unwrap_or_else(|e| panic!("{e}"));
    let page = browser.new_page().expect("a page");
    let pages = [
        String::new(),
        format!("c/{lineage}"),
        format!("c/{lineage}/patches"),
        format!("c/{lineage}/history"),
        format!("c/{lineage}/family"),
        format!("p/{patch}"),
        format!("c/{lineage}/files/evil.svg"),
        format!("c/{lineage}/files/evil.html"),
        format!("c/{lineage}/files/evil.js"),
        format!(
            "c/{lineage}/files/{}",
            commons_web::pages::url_component(evil_path)
        ),
    ];
    for p in &pages {
        page.goto(&format!("{web}{p}")).expect("a page loads");
        page.wait_until("document.readyState === 'complete'", SHOW)
            .expect("loaded");
        assert_eq!(
            page.eval("typeof window.__pwned").expect("eval"),
            "undefined",
            "/{p}: a payload ran"
        );
    }
    // The payloads are shown as text.
    page.goto(&format!("{web}p/{patch}")).expect("patch");
    shows(&page, message);
    shows(&page, "<script>window.__pwned='note'</script>");
    page.goto(&format!("{web}c/{lineage}")).expect("commons");
    shows(&page, name);
    shows(&page, evil_path);
    page.goto(&format!("{web}c/{lineage}/files/evil.svg"))
        .expect("svg as text");
    shows(&page, "<svg xmlns=");
    // Blobs a browser would run are never served as documents or images of this origin.
    let svg_hash = commons_core::BlobHash::of(svg).to_hex();
    for q in ["", "?view=image"] {
        let headers = page
            .eval(&format!(
                "fetch('/blob/{svg_hash}{q}').then(r => r.headers.get('content-type') + '|' + r.headers.get('content-disposition') + '|' + r.headers.get('content-security-policy'))"
            ))
            .expect("eval");
        let h = headers.as_str().unwrap_or_default();
        assert!(
            h.starts_with("application/octet-stream|attachment") && h.contains("sandbox"),
            "/blob/{svg_hash}{q}: {h}"
        );
    }
    // An SVG loaded as an image (where a browser runs no script anyway) is refused as one.
    let loaded = page
        .eval(&format!(
            "new Promise(ok => {{ const i = new Image(); i.onload = () => ok('loaded'); i.onerror = () => ok('refused'); i.src = '/blob/{svg_hash}?view=image'; }})"
        ))
        .expect("eval");
    assert_eq!(loaded, "refused");
    // Every page carries the strict policy.
    let csp = page
        .eval("fetch('/').then(r => r.headers.get('content-security-policy'))")
        .expect("eval");
    assert_eq!(csp, commons_web::CSP);
    assert_eq!(
        page.eval("typeof window.__pwned").expect("eval"),
        "undefined"
    );
    assert!(
        page.dialogs().is_empty(),
        "dialogs opened: {:?}",
        page.dialogs()
    );

    // Over plain HTTP, without a browser: a foreign Host (DNS rebinding) is refused, a write
    // method too, a path that climbs out of the tree finds nothing, an overlong URI is refused,
    // and a page reads without JavaScript (the patch's message is in the HTML, escaped).
    let port = web
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches('/')
        .to_owned();
    let raw = |request: String| -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).expect("connect");
        s.write_all(request.as_bytes()).expect("write");
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).expect("read");
        String::from_utf8_lossy(&reply).into_owned()
    };
    let get = |path: &str, host: &str| {
        raw(format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ))
    };
    let host = format!("127.0.0.1:{port}");
    let reply = get("/", "evil.example:80");
    assert!(reply.starts_with("HTTP/1.1 421"), "{reply}");
    let reply = raw(format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ));
    assert!(reply.starts_with("HTTP/1.1 405"), "{reply}");
    for climb in [
        format!("/c/{lineage}/files/../../../../etc/passwd"),
        format!("/c/{lineage}/files/%2e%2e/%2e%2e/etc/passwd"),
        format!("/c/{lineage}/files/..%2f..%2fetc%2fpasswd"),
    ] {
        let reply = get(&climb, &host);
        assert!(
            !reply.contains("root:") && !reply.starts_with("HTTP/1.1 200"),
            "{climb}: {reply}"
        );
    }
    let reply = get(&format!("/c/{lineage}?{}", "x".repeat(5000)), &host);
    assert!(
        reply.starts_with("HTTP/1.1 414"),
        "{}",
        &reply[..reply.len().min(200)]
    );
    let reply = get(&format!("/p/{patch}"), &host);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.contains("&lt;img src=x onerror=") && !reply.contains("<img src=x onerror"),
        "the message is in the page, escaped"
    );
}

/// `--no-web`: nothing listens, `node status` says so, and `commons web` fails with the fix.
#[test]
fn the_explorer_can_be_turned_off() {
    let scene = Scene::new(bin!());
    let alice = scene.person("alice");
    let d = Daemon::start_with(&daemon_bin!(), &alice.home, &[], &["--no-web"]);
    assert_eq!(d.web, None, "no explorer URL printed");
    assert!(
        alice
            .ok(["node", "status"])
            .contains("web        not served (--no-web"),
        "node status says it is off"
    );
    assert_eq!(
        alice.json(["node", "status"])["web"],
        serde_json::Value::Null
    );
    let err = alice.fails(1, ["web"]);
    assert!(
        err.contains("does not serve the web explorer") && err.contains("--no-web"),
        "{err}"
    );
}

/// `commons web --open` prints the URL and hands it to the desktop's opener (`xdg-open`, here a
/// script on PATH that records what it was given).
#[test]
fn commons_web_open_hands_the_url_to_the_browser() {
    use std::os::unix::fs::PermissionsExt;
    let scene = Scene::new(bin!());
    let alice = scene.person("alice");
    let d = Daemon::start(&daemon_bin!(), &alice.home, &[]);
    let garden = scene.found(&alice, "garden", &[("README.md", b"hi\n")]);
    let tools = scene.path("tools");
    fs::create_dir_all(&tools).expect("mkdir");
    let opened = scene.path("opened.txt");
    let opener = tools.join("xdg-open");
    fs::write(
        &opener,
        format!("#!/bin/sh\nprintf '%s' \"$1\" > '{}'\n", opened.display()),
    )
    .expect("write the opener");
    fs::set_permissions(&opener, fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        tools.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new(bin!())
        .args(["--home", alice.home.to_str().expect("utf-8")])
        .args(["web", &garden, "--open"])
        .env("PATH", path)
        .env_remove("COMMONS_HOME")
        .output()
        .expect("run commons");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = format!("{}c/{garden}", web_of(&d));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), url);
    assert_eq!(fs::read_to_string(&opened).expect("the opener ran"), url);
}
