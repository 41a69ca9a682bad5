//! A headless Chromium driven over the DevTools protocol, for end-to-end tests of the web UI.
//!
//! [`Browser::launch`] starts Chromium in its own process group with a fresh profile, reads the
//! browser's WebSocket address from `DevToolsActivePort`, and connects with a minimal client:
//! one WebSocket, behind a mutex, carrying every page's commands as a flattened session. One
//! reader (`Conn::read_one`) takes messages off it; responses are matched by `id`, events
//! are filed by `sessionId` into that page's log (console calls, exceptions, dialogs — which are
//! dismissed at once so no page can hang a test — and Content Security Policy reports).
//!
//! Chromium only ever talks to 127.0.0.1: background services are off, every host name but
//! 127.0.0.1 resolves to nothing, and anything not on loopback goes to a proxy on a closed
//! loopback port. Every wait has a deadline; dropping the [`Browser`] kills the whole process
//! group and removes the profile.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// How long Chromium may take to start and open its DevTools port. Generous: machines are shared.
pub const LAUNCH_DEADLINE: Duration = Duration::from_secs(30);
/// How long one DevTools command (an evaluation, a screenshot…) may take.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(30);
/// How long a navigation may take to fire its load event.
pub const LOAD_DEADLINE: Duration = Duration::from_secs(30);
/// How often [`Page::wait_until`] evaluates its condition.
const POLL: Duration = Duration::from_millis(50);
/// How much page text a failed wait shows.
const BODY_LIMIT: usize = 2000;
/// Entries kept per log and page; a test that needs more is doing something else.
const LOG_LIMIT: usize = 10_000;
/// The binaries tried, in order, when `COMMONS_CHROMIUM` is not set.
const CANDIDATES: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];
/// Flags that keep Chromium headless, quiet and on loopback. Non-loopback traffic (IP literals
/// included) is sent to a proxy on 127.0.0.1:9, where nothing listens; loopback bypasses it.
#[rustfmt::skip]
const FLAGS: &[&str] = &[
    "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
    "--disable-background-networking", "--disable-sync", "--disable-component-update",
    "--disable-default-apps", "--disable-dev-shm-usage", "--no-pings", "--password-store=basic",
    "--remote-debugging-port=0",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
];

/// What went wrong driving the browser. Fields name what was being done and why it failed.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// No Chromium binary was found; `tried` says what was looked for, and where.
    #[error(
        "no Chromium to drive: tried {tried}; `apt-get install chromium` provides it \
         (or set COMMONS_CHROMIUM to a Chromium binary)"
    )]
    NotFound { tried: String },
    /// Chromium exited, or did not open its DevTools port before [`LAUNCH_DEADLINE`].
    #[error("{bin} {what}; the end of its output:\n{log_tail}")]
    Start {
        bin: PathBuf,
        what: String,
        log_tail: String,
    },
    /// A local I/O operation (starting Chromium, its profile, a screenshot file) failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The browser's DevTools WebSocket at `url` could not be opened.
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The DevTools WebSocket failed.
    #[error("the DevTools connection failed: {0}")]
    WebSocket(#[from] tungstenite::Error),
    /// Chromium sent something that is not a DevTools message.
    #[error("unexpected DevTools message: {0}")]
    Protocol(String),
    /// A command or event did not come within `after`.
    #[error("{what} did not finish within {after:?}")]
    Timeout { what: String, after: Duration },
    /// Chromium answered the command `method` with an error.
    #[error("{method} failed: {message}")]
    Cdp { method: String, message: String },
    /// An evaluated expression threw; `text` is the exception, with its stack.
    #[error("`{expression}` threw: {text}")]
    Js { expression: String, text: String },
    /// A navigation failed; `error` is Chromium's (`net::ERR_…`).
    #[error("cannot load {url}: {error}")]
    Navigate { url: String, error: String },
    /// A condition was not true within `after`; `last` is its last outcome, `body` the page's
    /// `document.body.innerText`, truncated.
    #[error("`{expression}` was not true within {after:?} ({last}); the page says:\n{body}")]
    WaitTimeout {
        expression: String,
        after: Duration,
        last: String,
        body: String,
    },
    /// No element matched the CSS selector.
    #[error("no element matches `{selector}`")]
    NoElement { selector: String },
    /// A screenshot was not valid base64.
    #[error("the screenshot is not base64: {0}")]
    Decode(#[from] base64::DecodeError),
}

type Result<T> = std::result::Result<T, BrowserError>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BrowserError {
    let what = what.into();
    move |source| BrowserError::Io { what, source }
}

/// What one page's scripts did, as recorded from its events.
#[derive(Debug, Default, Clone)]
struct PageLog {
    loads: u64,
    console: Vec<String>,
    exceptions: Vec<String>,
    dialogs: Vec<String>,
    csp: Vec<String>,
}

/// What one read off the WebSocket gave: nothing before the deadline, an event (now filed), or
/// a response to a command.
#[derive(Debug)]
enum Read {
    Nothing,
    Event,
    Response(Value),
}

/// The one DevTools connection, shared by the browser and its pages.
#[derive(Debug)]
struct Conn {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    logs: HashMap<String, PageLog>,
}

impl Conn {
    /// Sends a command (on a page's session, or to the browser) and returns its id.
    fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<u64> {
        self.next_id += 1;
        let mut msg = json!({ "id": self.next_id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws.send(Message::text(msg.to_string()))?;
        Ok(self.next_id)
    }

    /// Reads one message, waiting until `until` at most; events are filed, responses returned.
    fn read_one(&mut self, until: Instant) -> Result<Read> {
        let left = until.saturating_duration_since(Instant::now());
        self.ws
            .get_ref()
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(io("setting the DevTools read timeout"))?;
        let text = match self.ws.read() {
            Ok(Message::Text(text)) => text,
            Ok(_) => return Ok(Read::Event),
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                return Ok(Read::Nothing);
            }
            Err(e) => return Err(e.into()),
        };
        let msg: Value = serde_json::from_str(text.as_str())
            .map_err(|e| BrowserError::Protocol(format!("{e}: {}", truncate(&text, 200))))?;
        if msg.get("id").is_some() {
            return Ok(Read::Response(msg));
        }
        self.file_event(&msg)?;
        Ok(Read::Event)
    }

    /// Files an event in its page's log; dismisses dialogs.
    fn file_event(&mut self, msg: &Value) -> Result<()> {
        let (Some(method), Some(session)) = (msg["method"].as_str(), msg["sessionId"].as_str())
        else {
            return Ok(());
        };
        let p = &msg["params"];
        if method == "Page.javascriptDialogOpening" {
            // Leaving the page must not be refused, or the navigation would hang.
            let accept = p["type"].as_str() == Some("beforeunload");
            let params = json!({ "accept": accept });
            self.send(Some(session), "Page.handleJavaScriptDialog", params)?;
        }
        // Events of closed pages are dropped.
        let Some(log) = self.logs.get_mut(session) else {
            return Ok(());
        };
        match method {
            "Page.loadEventFired" => log.loads += 1,
            "Runtime.consoleAPICalled" => {
                let args = p["args"].as_array().map(Vec::as_slice).unwrap_or_default();
                let args: Vec<String> = args.iter().map(remote_text).collect();
                let kind = p["type"].as_str().unwrap_or("log");
                push(&mut log.console, format!("{kind}: {}", args.join(" ")));
            }
            "Runtime.exceptionThrown" => {
                push(&mut log.exceptions, exception_text(&p["exceptionDetails"]));
            }
            "Log.entryAdded" => {
                let text = p["entry"]["text"].as_str().unwrap_or_default();
                if text.to_lowercase().contains("content security policy") {
                    push(&mut log.csp, text.to_owned());
                }
            }
            "Page.javascriptDialogOpening" => {
                let kind = p["type"].as_str().unwrap_or("dialog");
                let message = p["message"].as_str().unwrap_or_default();
                push(&mut log.dialogs, format!("{kind}: {message}"));
            }
            _ => {}
        }
        Ok(())
    }

    /// Sends a command and reads until its response, filing events meanwhile.
    fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
        until: Instant,
    ) -> Result<Value> {
        let started = Instant::now();
        let id = self.send(session, method, params)?;
        loop {
            // Responses to other ids answer commands whose caller gave up waiting.
            if let Read::Response(mut msg) = self.read_one(until)?
                && msg["id"].as_u64() == Some(id)
            {
                if let Some(err) = msg.get("error") {
                    let message = err["message"].as_str().unwrap_or("unknown error");
                    return Err(BrowserError::Cdp {
                        method: method.to_owned(),
                        message: message.to_owned(),
                    });
                }
                return Ok(msg["result"].take());
            }
            if Instant::now() >= until {
                return Err(BrowserError::Timeout {
                    what: method.to_owned(),
                    after: started.elapsed(),
                });
            }
        }
    }

    /// Reads and files whatever arrives until `until`.
    fn idle(&mut self, until: Instant) -> Result<()> {
        while Instant::now() < until {
            self.read_one(until)?;
        }
        Ok(())
    }

    /// Files what has already arrived, without waiting.
    fn drain(&mut self) -> Result<()> {
        while !matches!(self.read_one(Instant::now())?, Read::Nothing) {}
        Ok(())
    }

    fn log(&mut self, session: &str) -> &PageLog {
        self.logs.entry(session.to_owned()).or_default()
    }
}

fn push(log: &mut Vec<String>, entry: String) {
    if log.len() < LOG_LIMIT {
        log.push(entry);
    }
}

/// A console argument as text: strings as they are, other values as JSON, objects by name.
fn remote_text(obj: &Value) -> String {
    match obj.get("value") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => ["unserializableValue", "description", "type"]
            .iter()
            .find_map(|k| obj[*k].as_str())
            .unwrap_or("?")
            .to_owned(),
    }
}

/// An exception's description (message and stack) or, failing that, its summary.
fn exception_text(details: &Value) -> String {
    details["exception"]["description"]
        .as_str()
        .or(details["text"].as_str())
        .unwrap_or("unknown exception")
        .to_owned()
}

/// A string field of a response, or an error showing the response.
fn text_field(response: &Value, key: &str) -> Result<String> {
    let value = response[key].as_str().map(str::to_owned);
    value.ok_or_else(|| {
        BrowserError::Protocol(format!(
            "no {key} in {}",
            truncate(&response.to_string(), 200)
        ))
    })
}

fn truncate(s: &str, limit: usize) -> String {
    match s.char_indices().nth(limit) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

/// The Chromium binary: `COMMONS_CHROMIUM` (a path, or a name looked up on `path`) if set,
/// else the first of `chromium`, `chromium-browser` and `google-chrome` on `path`.
pub fn find_chromium(override_: Option<&OsStr>, path: Option<&OsStr>) -> Result<PathBuf> {
    let on_path = |name: &OsStr| {
        let dirs = path.map(std::env::split_paths).into_iter().flatten();
        dirs.map(|d| d.join(name)).find(|p| is_executable(p))
    };
    match override_.filter(|o| !o.is_empty()) {
        Some(o) if Path::new(o).components().count() > 1 => Some(PathBuf::from(o))
            .filter(|p| is_executable(p))
            .ok_or_else(|| format!("COMMONS_CHROMIUM={}", o.to_string_lossy())),
        Some(o) => {
            on_path(o).ok_or_else(|| format!("COMMONS_CHROMIUM={} on PATH", o.to_string_lossy()))
        }
        None => CANDIDATES
            .iter()
            .find_map(|c| on_path(OsStr::new(c)))
            .ok_or_else(|| format!("{} on PATH", CANDIDATES.join(", "))),
    }
    .map_err(|tried| BrowserError::NotFound { tried })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Chromium's process group and profile: killed and removed when dropped.
#[derive(Debug)]
struct Process {
    child: Child,
    /// Whether `child` was reaped already (its id may then belong to someone else).
    reaped: bool,
    bin: PathBuf,
    /// Holds `profile/` and `chromium.log`.
    dir: tempfile::TempDir,
}

impl Process {
    /// Why Chromium did not start, with the end of its output.
    fn start_error(&self, what: String) -> BrowserError {
        let log = std::fs::read_to_string(self.dir.path().join("chromium.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let log_tail = lines[lines.len().saturating_sub(30)..].join("\n");
        let bin = self.bin.clone();
        BrowserError::Start {
            bin,
            what,
            log_tail,
        }
    }

    /// Polls `DevToolsActivePort` until it gives the browser's DevTools port and path.
    fn devtools_port(&mut self) -> Result<(u16, String)> {
        let file = self.dir.path().join("profile").join("DevToolsActivePort");
        let until = Instant::now() + LAUNCH_DEADLINE;
        loop {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let mut lines = text.lines();
            if let (Some(Ok(port)), Some(path)) =
                (lines.next().map(str::parse::<u16>), lines.next())
                && path.starts_with("/devtools/browser/")
            {
                return Ok((port, path.to_owned()));
            }
            if let Some(status) = self.child.try_wait().map_err(io("waiting for chromium"))? {
                self.reaped = true;
                return Err(self.start_error(format!("exited ({status}) before opening DevTools")));
            }
            if Instant::now() >= until {
                let what = format!("did not open DevTools within {LAUNCH_DEADLINE:?}");
                return Err(self.start_error(what));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // The child leads its own group (`process_group(0)`), so its id names the group; while
        // it is unreaped, or any member lives, that id cannot be reused.
        let group = format!("-{}", self.child.id());
        let kill = |signal: &str| {
            Command::new("kill")
                .args([signal, "--", &group])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        kill("-KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Let the rest of the group die before the profile under it is removed.
        let until = Instant::now() + Duration::from_secs(5);
        while kill("-0") && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A headless Chromium, killed (with its whole process group) and its profile removed when
/// dropped.
#[derive(Debug)]
pub struct Browser {
    conn: Arc<Mutex<Conn>>,
    process: Process,
}

fn lock(conn: &Mutex<Conn>) -> MutexGuard<'_, Conn> {
    // A panic mid-command leaves at worst an unread response, which `call` skips.
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Browser {
    /// Starts Chromium (see [`find_chromium`]) and connects to it, within [`LAUNCH_DEADLINE`].
    pub fn launch() -> Result<Browser> {
        let env = |k| std::env::var_os(k);
        let bin = find_chromium(env("COMMONS_CHROMIUM").as_deref(), env("PATH").as_deref())?;
        let dir = tempfile::Builder::new()
            .prefix("commons-chromium-")
            .tempdir()
            .map_err(io("creating a Chromium profile directory"))?;
        let log_path = dir.path().join("chromium.log");
        let log = std::fs::File::create(&log_path).map_err(io("creating chromium.log"))?;
        let log2 = log.try_clone().map_err(io("duplicating chromium.log"))?;
        let mut profile = OsString::from("--user-data-dir=");
        profile.push(dir.path().join("profile"));
        let child = Command::new(&bin)
            .args(FLAGS)
            .arg(profile)
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(io(format!("starting {}", bin.display())))?;
        let mut process = Process {
            child,
            reaped: false,
            bin,
            dir,
        };
        let (port, path) = process.devtools_port()?;
        let url = format!("ws://127.0.0.1:{port}{path}");
        let connect_err = |reason: String| BrowserError::Connect {
            url: url.clone(),
            reason,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .map_err(|e| connect_err(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| connect_err(e.to_string()))?;
        let (ws, _) =
            tungstenite::client(url.as_str(), stream).map_err(|e| connect_err(e.to_string()))?;
        let conn = Conn {
            ws,
            next_id: 0,
            logs: HashMap::new(),
        };
        Ok(Browser {
            conn: Arc::new(Mutex::new(conn)),
            process,
        })
    }

    /// The Chromium binary in use.
    pub fn binary(&self) -> &Path {
        &self.process.bin
    }

    /// Opens a new tab on `about:blank`, attached as its own session with the `Page`,
    /// `Runtime` and `Log` domains enabled.
    pub fn new_page(&self) -> Result<Page> {
        let until = Instant::now() + COMMAND_DEADLINE;
        let mut conn = lock(&self.conn);
        let params = json!({ "url": "about:blank" });
        let created = conn.call(None, "Target.createTarget", params, until)?;
        let target = text_field(&created, "targetId")?;
        let params = json!({ "targetId": target, "flatten": true });
        let attached = conn.call(None, "Target.attachToTarget", params, until)?;
        let session = text_field(&attached, "sessionId")?;
        conn.logs.insert(session.clone(), PageLog::default());
        for domain in ["Page", "Runtime", "Log"] {
            let method = format!("{domain}.enable");
            conn.call(Some(&session), &method, json!({}), until)?;
        }
        drop(conn);
        Ok(Page {
            conn: Arc::clone(&self.conn),
            session,
            target,
        })
    }
}

/// One tab. Closed when dropped.
#[derive(Debug)]
pub struct Page {
    conn: Arc<Mutex<Conn>>,
    session: String,
    target: String,
}

impl Page {
    fn call(&self, method: &str, params: Value, until: Instant) -> Result<Value> {
        lock(&self.conn).call(Some(&self.session), method, params, until)
    }

    /// Loads `url` and waits (up to [`LOAD_DEADLINE`]) for its load event.
    pub fn goto(&self, url: &str) -> Result<()> {
        let until = Instant::now() + LOAD_DEADLINE;
        let mut conn = lock(&self.conn);
        let before = conn.log(&self.session).loads;
        let params = json!({ "url": url });
        let nav = conn.call(Some(&self.session), "Page.navigate", params, until)?;
        if let Some(error) = nav["errorText"].as_str().filter(|e| !e.is_empty()) {
            return Err(BrowserError::Navigate {
                url: url.to_owned(),
                error: error.to_owned(),
            });
        }
        if nav.get("loaderId").is_none() {
            return Ok(()); // A same-document navigation: there is no load to wait for.
        }
        while conn.log(&self.session).loads == before {
            if Instant::now() >= until {
                return Err(BrowserError::Timeout {
                    what: format!("the load of {url}"),
                    after: LOAD_DEADLINE,
                });
            }
            conn.read_one(until)?;
        }
        Ok(())
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value as JSON
    /// (`null` for `undefined`, functions and the like). A thrown exception is an error.
    pub fn eval(&self, expression: &str) -> Result<Value> {
        self.eval_until(expression, Instant::now() + COMMAND_DEADLINE)
    }

    fn eval_until(&self, expression: &str, until: Instant) -> Result<Value> {
        let params =
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true });
        let mut r = self.call("Runtime.evaluate", params, until)?;
        if r.get("exceptionDetails").is_some() {
            return Err(BrowserError::Js {
                expression: expression.to_owned(),
                text: exception_text(&r["exceptionDetails"]),
            });
        }
        Ok(r["result"]["value"].take())
    }

    /// Waits, evaluating `expression` every 50 ms, until it is `true`. Exceptions (an element
    /// not there yet) count as not yet; on timeout the error shows the page's text.
    pub fn wait_until(&self, expression: &str, deadline: Duration) -> Result<()> {
        let until = Instant::now() + deadline;
        let mut last;
        loop {
            match self.eval_until(expression, until) {
                Ok(Value::Bool(true)) => return Ok(()),
                Ok(v) => last = format!("last value {v}"),
                Err(e @ (BrowserError::Js { .. } | BrowserError::Cdp { .. })) => {
                    last = e.to_string();
                }
                Err(BrowserError::Timeout { .. }) => last = "the last evaluation hung".into(),
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            if now >= until {
                return Err(BrowserError::WaitTimeout {
                    expression: expression.to_owned(),
                    after: deadline,
                    last,
                    body: self.body_text(),
                });
            }
            lock(&self.conn).idle(until.min(now + POLL))?;
        }
    }

    /// `document.body.innerText`, truncated, or why it could not be had.
    fn body_text(&self) -> String {
        let expr = "document.body ? document.body.innerText : '(no body)'";
        match self.eval_until(expr, Instant::now() + Duration::from_secs(5)) {
            Ok(Value::String(s)) => truncate(&s, BODY_LIMIT),
            Ok(v) => v.to_string(),
            Err(e) => format!("(unreadable: {e})"),
        }
    }

    /// Clicks the first element matching the CSS `selector`.
    pub fn click(&self, selector: &str) -> Result<()> {
        let quoted = Value::String(selector.to_owned());
        let expr = format!(
            "(() => {{ const el = document.querySelector({quoted}); \
             if (!el) return false; el.click(); return true; }})()"
        );
        match self.eval(&expr)? {
            Value::Bool(true) => Ok(()),
            _ => Err(BrowserError::NoElement {
                selector: selector.to_owned(),
            }),
        }
    }

    /// Writes a PNG of the viewport to `path`, making its directory.
    pub fn screenshot(&self, path: &Path) -> Result<()> {
        let until = Instant::now() + COMMAND_DEADLINE;
        self.call("Page.bringToFront", json!({}), until)?;
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }), until)?;
        let png = base64::engine::general_purpose::STANDARD.decode(text_field(&shot, "data")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        }
        std::fs::write(path, png).map_err(io(format!("writing {}", path.display())))
    }

    fn log(&self) -> PageLog {
        let mut conn = lock(&self.conn);
        // Best effort: a broken connection fails the next command with its reason.
        let _ = conn.drain();
        conn.log(&self.session).clone()
    }

    /// Every dialog the page opened (all dismissed), as `"<type>: <message>"`, e.g. `"alert: 1"`.
    pub fn dialogs(&self) -> Vec<String> {
        self.log().dialogs
    }

    /// Every `console.*` call, as `"<type>: <args joined by spaces>"`, e.g. `"log: x"`.
    pub fn console(&self) -> Vec<String> {
        self.log().console
    }

    /// Every uncaught exception, with its message and stack.
    pub fn exceptions(&self) -> Vec<String> {
        self.log().exceptions
    }

    /// Every browser log entry that mentions the Content Security Policy (a blocked script,
    /// style, frame or connection).
    pub fn csp_violations(&self) -> Vec<String> {
        self.log().csp
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let mut conn = lock(&self.conn);
        let until = Instant::now() + Duration::from_secs(5);
        let params = json!({ "targetId": self.target });
        let _ = conn.call(None, "Target.closeTarget", params, until);
        conn.logs.remove(&self.session);
    }
}
