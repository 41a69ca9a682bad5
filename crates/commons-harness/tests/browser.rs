//! The browser driver against a real headless Chromium and a tiny HTTP server on 127.0.0.1.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use commons_harness::browser::{Browser, BrowserError, find_chromium};

/// A page that logs, alerts, throws later, and adds an element after a delay.
const PAGE: &str = r#"<!doctype html>
<html><head><title>Commons test</title></head>
<body>
<p id="hello">hello from the test page</p>
<button id="btn" onclick="window.clicked = (window.clicked || 0) + 1">press</button>
<script>
console.log("x");
alert(1);
setTimeout(() => {
  const d = document.createElement("div");
  d.id = "late";
  d.textContent = "arrived late";
  document.body.appendChild(d);
}, 300);
setTimeout(() => { throw new Error("late boom"); }, 10);
</script>
</body></html>"#;

/// Serves `body` with `headers` to every request, on 127.0.0.1; gives the base URL.
fn serve(body: &'static str, headers: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = answer(stream, body, headers);
        }
    });
    format!("http://{addr}")
}

fn answer(mut stream: TcpStream, body: &str, headers: &str) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut buf = [0; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n{headers}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())
}

#[test]
fn a_page_is_loaded_evaluated_waited_on_recorded_and_photographed() {
    let url = serve(PAGE, "");
    let browser = Browser::launch().unwrap();
    let page = browser.new_page().unwrap();
    page.goto(&format!("{url}/")).unwrap();

    assert_eq!(page.eval("document.title").unwrap(), "Commons test");
    assert_eq!(page.eval("Promise.resolve(6 * 7)").unwrap(), 42);
    page.wait_until(
        "document.getElementById('late') !== null",
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(
        page.eval("document.getElementById('late').textContent")
            .unwrap(),
        "arrived late"
    );

    // The inline alert did not hang the load: it was recorded and dismissed.
    assert_eq!(page.dialogs(), ["alert: 1"]);
    assert!(
        page.console().contains(&"log: x".to_owned()),
        "{:?}",
        page.console()
    );
    page.eval("console.warn('two', 2, {a: 1})").unwrap();
    assert!(
        page.console().contains(&"warning: two 2 Object".to_owned()),
        "{:?}",
        page.console()
    );
    page.wait_until("true", Duration::from_secs(1)).unwrap();
    assert!(
        page.exceptions().iter().any(|e| e.contains("late boom")),
        "{:?}",
        page.exceptions()
    );

    page.click("#btn").unwrap();
    page.click("#btn").unwrap();
    assert_eq!(page.eval("window.clicked").unwrap(), 2);
    let err = page.click("#missing").unwrap_err();
    assert!(matches!(err, BrowserError::NoElement { .. }), "{err}");

    let err = page
        .eval("(() => { throw new Error('boom'); })()")
        .unwrap_err();
    assert!(
        matches!(err, BrowserError::Js { .. }) && err.to_string().contains("boom"),
        "{err}"
    );

    let err = page.wait_until("document.title === 'never'", Duration::from_millis(300));
    let text = err.unwrap_err().to_string();
    assert!(text.contains("document.title === 'never'"), "{text}");
    assert!(
        text.contains("hello from the test page"),
        "the page text is shown: {text}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let shot = tmp.path().join("shots/page.png");
    page.screenshot(&shot).unwrap();
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
}

#[test]
fn a_script_blocked_by_csp_is_reported_and_never_runs() {
    let page_html = "<!doctype html><title>csp</title>\
                     <script>window.ran = true; alert('injected')</script>";
    let url = serve(page_html, "Content-Security-Policy: script-src 'none'\r\n");
    let browser = Browser::launch().unwrap();
    let page = browser.new_page().unwrap();
    page.goto(&url).unwrap();
    page.wait_until("document.title === 'csp'", Duration::from_secs(10))
        .unwrap();
    assert_eq!(page.eval("window.ran === undefined").unwrap(), true);
    assert!(page.dialogs().is_empty());
    let csp = page.csp_violations();
    assert!(csp.iter().any(|v| v.contains("script-src")), "{csp:?}");
}

#[test]
fn pages_cannot_reach_beyond_loopback() {
    let browser = Browser::launch().unwrap();
    let page = browser.new_page().unwrap();
    let err = page.goto("http://example.com/").unwrap_err();
    assert!(matches!(err, BrowserError::Navigate { .. }), "{err}");
    let fetched = "fetch('http://192.0.2.1/').then(() => 'reached', e => 'refused')";
    assert_eq!(page.eval(fetched).unwrap(), "refused");
}

#[test]
fn a_missing_chromium_is_an_error_that_says_how_to_install_it() {
    let empty = tempfile::tempdir().unwrap();
    let path = Some(empty.path().as_os_str());
    let err = find_chromium(None, path).unwrap_err().to_string();
    assert!(
        err.contains("chromium, chromium-browser, google-chrome"),
        "{err}"
    );
    assert!(err.contains("apt-get install chromium"), "{err}");
    let err = find_chromium(Some(OsStr::new("/nonexistent/chrome")), path).unwrap_err();
    assert!(
        err.to_string()
            .contains("COMMONS_CHROMIUM=/nonexistent/chrome"),
        "{err}"
    );
    let found = find_chromium(Some(OsStr::new("/bin/sh")), path).unwrap();
    assert_eq!(found, std::path::Path::new("/bin/sh"));
}
