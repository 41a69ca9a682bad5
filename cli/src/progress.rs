//! Progress of long daemon work (`sync`, `follow`, a `checkout` that fetches blobs), shown on
//! stderr from the `Progress` frames the daemon sends before its final answer.
//!
//! On a terminal one line is redrawn in place (items, bytes, rate, time left); otherwise plain
//! lines, at most one every [`PLAIN_INTERVAL`], so logs stay readable. Nothing is shown until
//! there is something to fetch.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use commons_rpc::Progress;

use crate::cmd::human_bytes;

/// Least time between two plain progress lines (when stderr is not a terminal).
pub const PLAIN_INTERVAL: Duration = Duration::from_secs(2);

/// Draws progress frames.
#[derive(Debug)]
pub struct Meter {
    start: Instant,
    last_plain: Option<Instant>,
    terminal: bool,
    drawn: bool,
}

impl Default for Meter {
    fn default() -> Self {
        Meter {
            start: Instant::now(),
            last_plain: None,
            terminal: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }
}

impl Meter {
    /// Shows one frame.
    pub fn show(&mut self, p: &Progress) {
        if p.bytes_total == 0 && p.items_total == 0 {
            return;
        }
        let line = describe(p, self.start.elapsed());
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
            self.drawn = true;
        } else if self
            .last_plain
            .is_none_or(|t| t.elapsed() >= PLAIN_INTERVAL)
        {
            let _ = writeln!(err, "progress: {line}");
            self.last_plain = Some(Instant::now());
        }
    }

    /// Ends the redrawn line, if any, before the command prints its result.
    pub fn finish(&mut self) {
        if self.drawn {
            let _ = writeln!(std::io::stderr());
            self.drawn = false;
        }
        self.start = Instant::now();
        self.last_plain = None;
    }
}

/// One progress line: `blobs 1/3, 12.0 MiB of 64.0 MiB, 30.0 MiB/s, 2 s left`.
pub fn describe(p: &Progress, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = p.bytes_done as f64 / secs;
    let mut line = format!(
        "{} {}/{}, {} of {}",
        p.what,
        p.items_done,
        p.items_total,
        human_bytes(p.bytes_done),
        human_bytes(p.bytes_total)
    );
    if rate >= 1.0 {
        line.push_str(&format!(", {}/s", human_bytes(rate as u64)));
        let left = p.bytes_total.saturating_sub(p.bytes_done) as f64 / rate;
        line.push_str(&format!(", {} s left", left.ceil() as u64));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_items_bytes_rate_and_time_left() {
        let p = Progress {
            what: "blobs".into(),
            items_done: 1,
            items_total: 3,
            bytes_done: 10 * 1024 * 1024,
            bytes_total: 30 * 1024 * 1024,
        };
        assert_eq!(
            describe(&p, Duration::from_secs(2)),
            "blobs 1/3, 10.0 MiB of 30.0 MiB, 5.0 MiB/s, 4 s left"
        );
    }
}
