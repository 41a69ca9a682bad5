//! The context every command runs in: the home, the output mode, the backend (opened on first
//! use) and small output helpers.
//!
//! The backend is chosen once per process: when a `commonsd` answers on the home's control
//! socket, every command goes through it ([`DaemonBackend`]); otherwise the store is opened
//! here ([`LocalBackend`]). A socket file nobody answers on (a daemon that died) is ignored.

use std::cell::OnceCell;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use commons_store::OpenError;
use commons_store::home::{Home, Identity};
use serde::Serialize;

use crate::backend::{Backend, LocalBackend};
use crate::daemon::{self, DaemonBackend};
use crate::error::{CliError, Result};

/// What a command runs against.
pub struct Ctx {
    /// The home (keys and store).
    pub home: Home,
    /// Print JSON instead of text.
    pub json: bool,
    backend: OnceCell<Box<dyn Backend>>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("home", &self.home)
            .field("json", &self.json)
            .finish()
    }
}

impl Ctx {
    /// A context over `home`.
    pub fn new(home: Home, json: bool) -> Self {
        Self {
            home,
            json,
            backend: OnceCell::new(),
        }
    }

    /// A context with a given backend (for a daemon client, or tests).
    pub fn with_backend(home: Home, json: bool, backend: Box<dyn Backend>) -> Self {
        let ctx = Self::new(home, json);
        // The cell was just created empty, so this cannot fail.
        let _ = ctx.backend.set(backend);
        ctx
    }

    /// The backend: the daemon of the home if one answers, else the local store, opened on
    /// first use.
    pub fn backend(&self) -> Result<&dyn Backend> {
        if let Some(b) = self.backend.get() {
            return Ok(b.as_ref());
        }
        let opened = self.open_backend()?;
        Ok(self.backend.get_or_init(|| opened).as_ref())
    }

    fn open_backend(&self) -> Result<Box<dyn Backend>> {
        if let Some(d) = DaemonBackend::connect(&self.home)? {
            return Ok(Box::new(d));
        }
        match LocalBackend::open(&self.home.store_dir()) {
            Ok(local) => Ok(Box::new(local)),
            Err(OpenError::Locked { path }) => {
                // A daemon that was starting may have bound its socket in the meantime.
                if let Some(d) = DaemonBackend::connect(&self.home)? {
                    return Ok(Box::new(d));
                }
                Err(CliError::error(format!(
                    "the store {} is in use by another process; if commonsd is starting, retry",
                    path.display()
                ))
                .hint("run the command again once commonsd prints its `control socket:` line; otherwise wait for the other `commons` command to finish"))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The running daemon of the home, for commands only a node can answer (exit code 7 when
    /// none runs). Never opens the local store.
    pub fn daemon(&self) -> Result<&DaemonBackend> {
        if self.backend.get().is_none()
            && let Some(d) = DaemonBackend::connect(&self.home)?
        {
            let _ = self.backend.set(Box::new(d));
        }
        self.backend
            .get()
            .and_then(|b| b.daemon())
            .ok_or_else(|| daemon::not_running(&self.home))
    }

    /// The identity of this home (its author key signs).
    pub fn identity(&self) -> Result<Identity> {
        Ok(self.home.load_identity()?)
    }

    /// Flushes and closes the backend if it was opened.
    pub fn finish(self) -> Result<()> {
        if let Some(b) = self.backend.get() {
            b.close()?;
        }
        Ok(())
    }

    /// Prints `value` as JSON in `--json` mode, else the text `human` makes.
    pub fn emit<T: Serialize>(&self, value: &T, human: impl FnOnce() -> String) -> Result<()> {
        let text = if self.json {
            serde_json::to_string_pretty(value)
                .map_err(|e| CliError::error(format!("cannot encode JSON: {e}")))?
        } else {
            human()
        };
        out(&text)
    }

    /// For commands that make something: the id alone on stdout (so `X=$(commons …)` works),
    /// the story on stderr; or everything as JSON on stdout.
    pub fn emit_made<T: Serialize>(&self, value: &T, id: &str, story: &str) -> Result<()> {
        if self.json {
            return self.emit(value, String::new);
        }
        note(story);
        out(id)
    }
}

/// Prints a line (or lines) on stdout. A closed pipe is not an error worth a message.
pub fn out(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    let res = if text.is_empty() || text.ends_with('\n') {
        stdout.write_all(text.as_bytes())
    } else {
        writeln!(stdout, "{text}")
    };
    match res.and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::error(format!("cannot write output: {e}"))),
    }
}

/// Prints a note for people on stderr.
pub fn note(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = if text.ends_with('\n') {
        stderr.write_all(text.as_bytes())
    } else {
        writeln!(stderr, "{text}")
    };
}

/// Milliseconds since the Unix epoch, for record timestamps.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM UTC` for a timestamp in milliseconds.
pub fn format_time(ms: u64) -> String {
    commons_core::time::format_utc(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        assert_eq!(format_time(0), "1970-01-01 00:00 UTC");
        // 2026-11-22 01:48:00 UTC.
        assert_eq!(format_time(1_795_312_080_000), "2026-11-22 01:48 UTC");
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00 UTC");
    }
}
