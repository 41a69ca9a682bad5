//! The web explorer: every `commonsd` serves read-only pages over everything it holds
//! (holoptism), and a JSON API under `/api/` that returns the same views (docs/web.md).
//!
//! - **Pages** (`pages.rs`, maud: every splice escaped) render the views of `view.rs`; the API
//!   returns those views as JSON, so it mirrors every page by construction.
//! - **Live**: `/api/events` is a server-sent event stream that says `change` when the store's
//!   records change (the store's epoch, polled every [`EPOCH_POLL`]); `/static/app.js` then
//!   fetches the page again and swaps its `<main>`. Without JavaScript the pages work the same,
//!   on reload.
//! - **Hostile content**: everything shown came from some peer. Besides escaping, every response
//!   carries a strict Content-Security-Policy (scripts and styles only from `/static/`, no
//!   inline script, no plugins, no framing); blobs are served as `application/octet-stream`
//!   attachments (raster images alone, recognised by their first bytes, inline, under a
//!   `sandbox` policy), so HTML, SVG or JavaScript in a commons never runs in the node's origin.
//! - **Bounds**: at most [`MAX_CONNECTIONS`] connections open, each closed if a request head
//!   takes over [`HEADER_TIMEOUT`] or [`MAX_HEAD_BYTES`]; only GET and HEAD; URIs up to
//!   [`MAX_URI`] bytes; at most [`MAX_IN_FLIGHT`]
//!   requests served at once and [`MAX_EVENT_STREAMS`] event streams (more get 503); every list
//!   paginated or capped (`view.rs`), text and diffs capped (`content.rs`); blobs streamed in
//!   64 KiB chunks.
//! - **DNS rebinding**: on a loopback address, a request whose `Host` is not that address (or
//!   `localhost`) is refused, so a web page elsewhere cannot read the node through a name that
//!   resolves to 127.0.0.1.

pub mod activity;
pub mod content;
pub mod family;
pub mod files;
pub mod pages;
pub mod person;
pub mod reader;
pub mod view;

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use commons_core::BlobHash;
use commons_store::Store;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};

use crate::view::ViewError;

/// Requests served at once (beyond: 503).
pub const MAX_IN_FLIGHT: usize = 64;
/// Event streams open at once (beyond: 503).
pub const MAX_EVENT_STREAMS: usize = 256;
/// Longest request URI.
pub const MAX_URI: usize = 4096;
/// How often the store's epoch is looked at for the event stream.
pub const EPOCH_POLL: Duration = Duration::from_millis(250);
/// Bytes of a blob sent per chunk.
const CHUNK: usize = 64 << 10;

/// The Content-Security-Policy of every page.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/// The policy of a blob (never a document of this origin: no script, no style, sandboxed).
const BLOB_CSP: &str = "default-src 'none'; img-src 'self'; sandbox";

const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// What the node tells the explorer about itself (refreshed by the node).
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeInfo {
    /// `commonsd`'s version.
    pub version: String,
    /// Its libp2p peer id.
    pub peer_id: String,
    /// Peers connected now.
    pub peers: usize,
    /// Its listening addresses.
    pub listen: Vec<String>,
    /// Families followed (their root lineage ids).
    pub followed: Vec<String>,
    /// Peers banned at the moment for misbehaving.
    pub banned: usize,
    /// Gossip messages refused since the node started (bad signatures, oversized, floods…).
    pub refused: u64,
    /// Bootstrap peers configured, and how many are connected.
    pub bootstrap: (usize, usize),
}

#[derive(Clone, Debug)]
struct App {
    store: reader::Reader,
    node: watch::Receiver<NodeInfo>,
    activity: Arc<activity::Activity>,
    epoch: watch::Receiver<u64>,
    in_flight: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    /// `Host` values accepted (`None`: any, the address is not loopback).
    hosts: Option<Arc<Vec<String>>>,
}

/// The router of the explorer over `store`, for a server bound to `addr`.
pub fn router(
    store: Store,
    node: watch::Receiver<NodeInfo>,
    activity: Arc<activity::Activity>,
    addr: SocketAddr,
) -> Router {
    let (epoch_tx, epoch) = watch::channel(store.epoch());
    let watched = store.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EPOCH_POLL);
        loop {
            tick.tick().await;
            let e = watched.epoch();
            if *epoch_tx.borrow() != e && epoch_tx.send(e).is_err() {
                return;
            }
            if epoch_tx.is_closed() {
                return;
            }
        }
    });
    let hosts = addr.ip().is_loopback().then(|| {
        let p = addr.port();
        Arc::new(vec![
            format!("127.0.0.1:{p}"),
            format!("localhost:{p}"),
            format!("[::1]:{p}"),
        ])
    });
    let app = App {
        store: reader::Reader::new(store),
        node,
        activity,
        epoch,
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
        hosts,
    };
    Router::new()
        .route("/", get(home_page))
        .route("/api/node", get(home_api))
        .route("/c/{id}", get(commons_page))
        .route("/api/c/{id}", get(commons_api))
        .route("/c/{id}/patches", get(patches_page))
        .route("/api/c/{id}/patches", get(patches_api))
        .route("/c/{id}/history", get(history_page))
        .route("/api/c/{id}/history", get(history_api))
        .route("/c/{id}/files", get(root_page))
        .route("/api/c/{id}/files", get(root_api))
        .route("/c/{id}/files/{*path}", get(files_page))
        .route("/api/c/{id}/files/{*path}", get(files_api))
        .route("/c/{id}/family", get(family_page))
        .route("/api/c/{id}/family", get(family_api))
        .route("/p/{id}", get(patch_page))
        .route("/api/p/{id}", get(patch_api))
        .route("/person/{did}", get(person_page))
        .route("/api/person/{did}", get(person_api))
        .route("/blob/{hash}", get(blob))
        .route("/api/events", get(events))
        .route(
            "/static/app.js",
            get(|| async { asset(APP_JS, "text/javascript") }),
        )
        .route(
            "/static/style.css",
            get(|| async { asset(STYLE_CSS, "text/css") }),
        )
        .fallback(|| async { page_error(ViewError::NotFound("no such page".into())) })
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Serves the explorer on `listener` until the task is dropped: one task per connection, at
/// most [`MAX_CONNECTIONS`] open (the next waits in the kernel's backlog), and a connection
/// whose request head has not arrived whole within [`HEADER_TIMEOUT`] is closed, so clients
/// that open connections and send nothing (or a byte at a time) cannot hold them.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Store,
    node: watch::Receiver<NodeInfo>,
    activity: Arc<activity::Activity>,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let app = router(store, node, activity, addr);
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(place) = open.clone().acquire_owned().await else {
            return Ok(());
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors, say: wait a moment rather than spin.
                tracing::warn!(target: "commons_web", error = %e, "cannot accept a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _place = place;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES);
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = http.serve_connection(io, service).await {
                tracing::debug!(target: "commons_web", error = %e, "connection ended");
            }
        });
    }
}

/// Connections open at once; the next waits in the kernel's backlog until one closes.
pub const MAX_CONNECTIONS: usize = 512;
/// Longest wait for a request's head, from the connection or the previous answer.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head read (beyond: the connection is closed).
pub const MAX_HEAD_BYTES: usize = 16 << 10;
/// Pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Method, URI and `Host` checks, the in-flight bound, and the security headers.
async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, "read-only: GET only\n").into_response();
    }
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > MAX_URI {
        return (StatusCode::URI_TOO_LONG, "URI too long\n").into_response();
    }
    if let Some(hosts) = &app.hosts {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !hosts.iter().any(|h| h == host) {
            return (
                StatusCode::MISDIRECTED_REQUEST,
                "this node serves its explorer only to its own loopback address\n",
            )
                .into_response();
        }
    }
    let events = req.uri().path() == "/api/events";
    let _permit = match events {
        true => None,
        false => match app.in_flight.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => return busy(),
        },
    };
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    res
}

fn busy() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        "busy\n",
    )
        .into_response()
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ViewError> + Send + 'static,
) -> Result<T, ViewError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(ViewError::Store(commons_store::StoreError::Io(format!(
            "the read stopped: {e}"
        )))),
    }
}

fn status_of(e: &ViewError) -> (StatusCode, String) {
    match e {
        ViewError::NotFound(m) => (StatusCode::NOT_FOUND, m.clone()),
        ViewError::Bad(m) => (StatusCode::BAD_REQUEST, m.clone()),
        ViewError::Store(e) => {
            tracing::warn!(target: "commons_web", error = %e, "a page could not be read");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the store could not be read: {e}"),
            )
        }
    }
}

fn page_error(e: ViewError) -> Response {
    let (code, message) = status_of(&e);
    (
        code,
        Html(pages::error(code.as_u16(), &message).into_string()),
    )
        .into_response()
}

fn page<T>(r: Result<T, ViewError>, render: impl FnOnce(&T) -> maud::Markup) -> Response {
    match r {
        Ok(v) => Html(render(&v).into_string()).into_response(),
        Err(e) => page_error(e),
    }
}

fn api<T: Serialize>(r: Result<T, ViewError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            let (code, message) = status_of(&e);
            (code, Json(serde_json::json!({ "error": message }))).into_response()
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    status: Option<String>,
    page: Option<usize>,
}

async fn html<T: Send + 'static>(
    app: App,
    read: impl FnOnce(&reader::Reader) -> Result<T, ViewError> + Send + 'static,
    render: impl FnOnce(&T) -> maud::Markup,
) -> Response {
    let store = app.store.clone();
    page(blocking(move || read(&store)).await, render)
}

async fn json<T: Serialize + Send + 'static>(
    app: App,
    read: impl FnOnce(&reader::Reader) -> Result<T, ViewError> + Send + 'static,
) -> Response {
    let store = app.store.clone();
    api(blocking(move || read(&store)).await)
}

type Id = Path<String>;
type IdQuery = (Path<String>, Query<ListQuery>);

async fn home_page(State(a): State<App>) -> Response {
    let node = a.node.borrow().clone();
    let recent = a.activity.recent(view::RECENT);
    html(a, move |s| view::home(s, node, recent), pages::home).await
}
async fn home_api(State(a): State<App>) -> Response {
    let node = a.node.borrow().clone();
    let recent = a.activity.recent(view::RECENT);
    json(a, move |s| view::home(s, node, recent)).await
}
async fn commons_page(State(a): State<App>, Path(id): Id) -> Response {
    html(a, move |s| view::commons(s, &id), pages::commons).await
}
async fn commons_api(State(a): State<App>, Path(id): Id) -> Response {
    json(a, move |s| view::commons(s, &id)).await
}
async fn patches_page(State(a): State<App>, (Path(id), Query(q)): IdQuery) -> Response {
    let read =
        move |s: &reader::Reader| view::patches(s, &id, q.status.as_deref(), q.page.unwrap_or(1));
    html(a, read, pages::patches).await
}
async fn patches_api(State(a): State<App>, (Path(id), Query(q)): IdQuery) -> Response {
    json(a, move |s| {
        view::patches(s, &id, q.status.as_deref(), q.page.unwrap_or(1))
    })
    .await
}
async fn history_page(State(a): State<App>, (Path(id), Query(q)): IdQuery) -> Response {
    let read = move |s: &reader::Reader| view::history(s, &id, q.page.unwrap_or(1));
    html(a, read, pages::history).await
}
async fn history_api(State(a): State<App>, (Path(id), Query(q)): IdQuery) -> Response {
    json(a, move |s| view::history(s, &id, q.page.unwrap_or(1))).await
}
#[derive(Debug, Default, Deserialize)]
struct AtQuery {
    at: Option<String>,
}

type PathAt = (Path<(String, String)>, Query<AtQuery>);

async fn root_page(State(a): State<App>, (Path(id), Query(q)): (Id, Query<AtQuery>)) -> Response {
    let read = move |s: &reader::Reader| files::files(s, &id, "", q.at.as_deref());
    html(a, read, pages::files).await
}
async fn root_api(State(a): State<App>, (Path(id), Query(q)): (Id, Query<AtQuery>)) -> Response {
    json(a, move |s| files::files(s, &id, "", q.at.as_deref())).await
}
async fn files_page(State(a): State<App>, (Path((id, path)), Query(q)): PathAt) -> Response {
    let read = move |s: &reader::Reader| files::files(s, &id, &path, q.at.as_deref());
    html(a, read, pages::files).await
}
async fn files_api(State(a): State<App>, (Path((id, path)), Query(q)): PathAt) -> Response {
    json(a, move |s| files::files(s, &id, &path, q.at.as_deref())).await
}
async fn family_page(State(a): State<App>, Path(id): Id) -> Response {
    let render = |f: &family::FamilyView| pages::family(f, &family::svg(f));
    html(a, move |s| family::family(s, &id), render).await
}
async fn family_api(State(a): State<App>, Path(id): Id) -> Response {
    json(a, move |s| family::family(s, &id)).await
}
#[derive(Debug, Default, Deserialize)]
struct DiffQuery {
    view: Option<String>,
}

async fn patch_page(
    State(a): State<App>,
    (Path(id), Query(q)): (Id, Query<DiffQuery>),
) -> Response {
    let split = q.view.as_deref() == Some("split");
    let render = move |p: &view::PatchView| pages::patch(p, split);
    html(a, move |s| view::patch(s, &id), render).await
}
async fn patch_api(State(a): State<App>, Path(id): Id) -> Response {
    json(a, move |s| view::patch(s, &id)).await
}
async fn person_page(State(a): State<App>, Path(did): Id) -> Response {
    html(a, move |s| person::person(s, &did), pages::person).await
}
async fn person_api(State(a): State<App>, Path(did): Id) -> Response {
    json(a, move |s| person::person(s, &did)).await
}

#[derive(Debug, Default, Deserialize)]
struct BlobQuery {
    view: Option<String>,
}

/// A blob: an attachment of `application/octet-stream`, or with `?view=image` a raster image
/// shown inline. Streamed: a blob of any size costs one chunk of memory per request.
async fn blob(
    State(app): State<App>,
    Path(hash): Path<String>,
    Query(q): Query<BlobQuery>,
) -> Response {
    let Ok(h) = hash.parse::<BlobHash>() else {
        return page_error(ViewError::Bad(format!("`{hash}` is not a blob hash")));
    };
    let store = app.store.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    let (head_tx, head_rx) = tokio::sync::oneshot::channel::<Option<(u64, Vec<u8>)>>();
    tokio::task::spawn_blocking(move || {
        let Ok(Some(mut reader)) = store.blobs().open_blob(&h) else {
            let _ = head_tx.send(None);
            return;
        };
        let len = reader.len();
        let mut buf = vec![0u8; CHUNK];
        let mut head_tx = Some(head_tx);
        loop {
            let n = match reader.read(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            if let Some(t) = head_tx.take() {
                let _ = t.send(Some((len, buf[..n.min(16)].to_vec())));
            }
            if n == 0 {
                return;
            }
            if tx
                .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                .is_err()
            {
                return;
            }
        }
    });
    let Ok(Some((len, head))) = head_rx.await else {
        return page_error(ViewError::NotFound(format!(
            "this node does not hold the content {hash}"
        )));
    };
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let image = q
        .view
        .as_deref()
        .filter(|v| *v == "image")
        .and_then(|_| content::image_type(&head));
    let (kind, disposition) = match image {
        Some(t) => (t.to_string(), "inline".to_string()),
        None => (
            "application/octet-stream".to_string(),
            format!("attachment; filename=\"{}\"", h.to_hex()),
        ),
    };
    Response::builder()
        .header(header::CONTENT_TYPE, kind)
        .header(header::CONTENT_DISPOSITION, disposition)
        .header(header::CONTENT_LENGTH, len)
        .header(header::CONTENT_SECURITY_POLICY, BLOB_CSP)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `change` events whenever the store's records change.
async fn events(State(app): State<App>) -> Response {
    let Ok(permit) = app.streams.clone().try_acquire_owned() else {
        return busy();
    };
    let rx = app.epoch.clone();
    let stream = futures::stream::unfold((rx, permit), |(mut rx, permit)| async move {
        rx.changed().await.ok()?;
        let e = *rx.borrow_and_update();
        Some((
            Ok::<_, Infallible>(Event::default().event("change").data(e.to_string())),
            (rx, permit),
        ))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A client that sends half a request head and then nothing is cut off after
    /// [`HEADER_TIMEOUT`], while a whole request on another connection is answered meanwhile.
    #[tokio::test]
    async fn a_client_that_never_finishes_its_request_is_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (_tx, rx) = watch::channel(NodeInfo::default());
        tokio::spawn(serve(listener, store, rx, Arc::default()));

        let started = Instant::now();
        let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
        slow.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1")
            .await
            .expect("write");

        let mut fine = tokio::net::TcpStream::connect(addr).await.expect("connect");
        fine.write_all(
            format!("GET /api/node HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("write");
        let mut reply = Vec::new();
        fine.read_to_end(&mut reply).await.expect("read");
        assert!(
            reply.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
        assert!(
            started.elapsed() < HEADER_TIMEOUT,
            "answered while the slow one waits"
        );

        let mut rest = Vec::new();
        let read = tokio::time::timeout(HEADER_TIMEOUT * 2, slow.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the slow connection was never closed");
        assert!(
            started.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(500),
            "closed only once its time was up ({:?})",
            started.elapsed()
        );
    }
}
