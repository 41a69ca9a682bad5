//! The control socket: a Unix socket in the home, owner-only, speaking `commons-rpc`.
//!
//! One task accepts connections; each connection gets a task of its own, at most
//! [`MAX_CONTROL_CONNECTIONS`] at a time (further clients wait in the kernel's backlog).
//!
//! Only processes of the user who owns the socket (the daemon's user) or root are served: the
//! caller's uid is read from the socket (`SO_PEERCRED`) and checked before anything is read,
//! whatever the permissions of the home and the socket file were made.
//!
//! After a client sends `WantProgress`, its `Sync`, `Follow` and `FetchBlobs` requests get
//! `Progress` frames (blob downloads: items, bytes) every [`PROGRESS_INTERVAL`] while something
//! changes, and at least every [`PROGRESS_KEEPALIVE`], before the final answer.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use commons_rpc::{FrameError, MAX_REQUEST_BYTES, Progress, Request, Response, RpcError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};

use crate::blobs::Snapshot;
use crate::service::Ctx;

/// Most control connections served at once. The CLI opens one per command, so this is many
/// more than a person types, and small enough that a runaway script cannot exhaust tasks.
pub const MAX_CONTROL_CONNECTIONS: usize = 32;
/// While every connection slot is taken and another client waits, a connection that has been
/// waiting this long for its next request is closed to make room (so idle clients cannot lock
/// the socket; a busy daemon keeps the connections that work).
pub const IDLE_UNDER_PRESSURE: std::time::Duration = std::time::Duration::from_secs(5);
/// How often a waiting acceptor asks idle connections again to make room.
const PRESSURE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How often progress is sampled while long work runs for a client that asked for it.
pub const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);
/// Longest silence before a progress frame is sent anyway, well under the CLI's answer timeout
/// (each frame restarts it).
pub const PROGRESS_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(10);

/// Binds the socket at `path`, refusing if another daemon answers there and removing a stale
/// socket file left by one that died.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "another commonsd is already running with this home (its control socket {} answers); stop it first or use another --home",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot listen on control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    Ok(listener)
}

/// Whether a process of `uid` may use the socket owned by `owner`.
fn allowed(uid: u32, owner: u32) -> bool {
    uid == owner || uid == 0
}

/// Serves the control socket until `shutdown` turns true.
pub async fn serve(listener: UnixListener, ctx: Ctx, mut shutdown: watch::Receiver<bool>) {
    use std::os::unix::fs::MetadataExt;
    let permits = Arc::new(Semaphore::new(MAX_CONTROL_CONNECTIONS));
    // Bumped while the acceptor waits for a slot: idle connections then close themselves.
    let (pressure, _) = watch::channel(0u64);
    // The socket file was created by this process: its owner is the daemon's user.
    let owner = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_owned))
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| m.uid());
    loop {
        let permit = loop {
            if let Ok(p) = permits.clone().try_acquire_owned() {
                break p;
            }
            pressure.send_modify(|n| *n += 1);
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => break p,
                    Err(_) => return,
                },
                _ = tokio::time::sleep(PRESSURE_EVERY) => {}
            }
        };
        let stream = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => match (s.peer_cred(), owner) {
                    (Ok(cred), Some(owner)) if allowed(cred.uid(), owner) => s,
                    (cred, _) => {
                        // Dropped unanswered: a process of another user, or no way to tell.
                        let uid = cred.ok().map(|c| c.uid());
                        tracing::warn!(target: "commons_node::control", ?uid, "control connection refused: not the home's user");
                        ctx.refused("control connection of another user", 1);
                        continue;
                    }
                },
                Err(e) => {
                    tracing::warn!(target: "commons_node::control", error = %e, "accept failed");
                    continue;
                }
            },
        };
        let ctx = ctx.clone();
        let pressure = pressure.subscribe();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, ctx, pressure).await {
                tracing::debug!(target: "commons_node::control", error = %e, "control connection ended");
            }
            drop(permit);
        });
    }
}

async fn read_request(stream: &mut UnixStream) -> Result<Option<Request>, FrameError> {
    let mut prefix = [0u8; 4];
    match stream.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = commons_rpc::request_len(prefix)?;
    debug_assert!(len <= MAX_REQUEST_BYTES);
    // The buffer grows with the bytes that arrive: a prefix alone costs no allocation.
    let mut body = Vec::with_capacity(len.min(64 * 1024));
    (&mut *stream)
        .take(len as u64)
        .read_to_end(&mut body)
        .await?;
    if body.len() != len {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    Ok(Some(serde_json::from_slice(&body)?))
}

/// Waits for the next request; `None` if the client closed the connection, or if it has waited
/// longer than [`IDLE_UNDER_PRESSURE`] while another client needs its slot.
async fn next_request(
    stream: &mut UnixStream,
    pressure: &mut watch::Receiver<u64>,
) -> Result<Option<Request>, FrameError> {
    let since = tokio::time::Instant::now();
    let read = read_request(stream);
    tokio::pin!(read);
    loop {
        tokio::select! {
            r = &mut read => return r,
            changed = pressure.changed() => {
                if changed.is_err() {
                    return Ok(None);
                }
                if since.elapsed() >= IDLE_UNDER_PRESSURE {
                    tracing::debug!(target: "commons_node::control", "idle control connection closed to make room");
                    return Ok(None);
                }
            }
        }
    }
}

async fn connection(
    mut stream: UnixStream,
    ctx: Ctx,
    mut pressure: watch::Receiver<u64>,
) -> Result<(), FrameError> {
    let mut progress = false;
    loop {
        let response = match next_request(&mut stream, &mut pressure).await {
            Ok(Some(Request::WantProgress)) => {
                progress = true;
                Response::Ok
            }
            Ok(Some(
                req @ (Request::Sync { .. } | Request::Follow { .. } | Request::FetchBlobs { .. }),
            )) if progress => with_progress(&mut stream, &ctx, req).await?,
            Ok(Some(req)) => ctx.handle(req).await,
            Ok(None) => return Ok(()),
            Err(FrameError::Json(e)) => Response::Error(RpcError {
                code: "invalid".into(),
                message: format!("malformed request: {e}"),
            }),
            Err(FrameError::TooLarge(len)) => {
                // The rest of the frame is not read: answer, then close.
                let refusal = Response::Error(RpcError {
                    code: "invalid".into(),
                    message: format!(
                        "request of {len} bytes is over the control socket's limit of {MAX_REQUEST_BYTES}; send records in pieces (commons_rpc::put_chunks)"
                    ),
                });
                stream
                    .write_all(&commons_rpc::encode_frame(&refusal)?)
                    .await?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let frame = match commons_rpc::encode_frame(&response) {
            Ok(f) => f,
            Err(e) => commons_rpc::encode_frame(&Response::Error(RpcError {
                code: "store".into(),
                message: format!("response too large: {e}"),
            }))?,
        };
        stream.write_all(&frame).await?;
    }
}

/// Answers `req`, sending `Progress` frames while it runs.
async fn with_progress(
    stream: &mut UnixStream,
    ctx: &Ctx,
    req: Request,
) -> Result<Response, FrameError> {
    let start = ctx.blobs.snapshot();
    let work = ctx.handle(req);
    tokio::pin!(work);
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Progress> = None;
    let mut last_sent = tokio::time::Instant::now();
    loop {
        tokio::select! {
            biased;
            response = &mut work => return Ok(response),
            _ = tick.tick() => {
                let p = progress_since(&start, &ctx.blobs.snapshot());
                if last.as_ref() != Some(&p) || last_sent.elapsed() >= PROGRESS_KEEPALIVE {
                    stream.write_all(&commons_rpc::encode_frame(&Response::Progress(p.clone()))?).await?;
                    last = Some(p);
                    last_sent = tokio::time::Instant::now();
                }
            }
        }
    }
}

/// Blob downloads since `start`: finished ones, and the bytes of those still running.
fn progress_since(start: &Snapshot, now: &Snapshot) -> Progress {
    let items_done = now.completed.saturating_sub(start.completed);
    let bytes_done = now.received.saturating_sub(start.received);
    Progress {
        what: "blobs".into(),
        items_done,
        items_total: items_done + now.active,
        bytes_done,
        bytes_total: bytes_done + now.active_total.saturating_sub(now.active_done),
    }
}

/// Where the socket of a home is.
pub fn socket_path(home: &Path) -> PathBuf {
    home.join(commons_rpc::SOCKET_NAME)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_owner_and_root_may_connect() {
        assert!(super::allowed(1000, 1000));
        assert!(super::allowed(0, 1000));
        assert!(!super::allowed(1001, 1000));
    }
}
