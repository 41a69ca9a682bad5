//! Benchmarks of Commons, each side by side with a reference measured in the same run.
//!
//! Every figure is a ratio against something this machine did a moment before (the raw ed25519
//! verification rate, a recomputation from scratch, the first hop of a propagation, ...),
//! because the machines that run this are shared and noisy. `commons-bench all` runs every
//! scenario and prints one table; `docs/benchmarks.md` holds the latest results and says what
//! limits each figure.
//!
//! Module map: [`records`] makes signed records; [`store`] runs the scenarios that use the store API
//! in this process (ingest, fork, state); [`daemon`] starts `commonsd` processes and talks to
//! their control sockets; [`procs`] runs the scenarios over real daemons (network ingest,
//! propagation, memory); [`scale`] runs many network stacks in this process.

pub mod blob_bench;
pub mod catchup;
pub mod daemon;
pub mod fork_bench;
pub mod hostile;
pub mod million;
pub mod procs;
pub mod reconcile_bench;
pub mod records;
pub mod scale;
pub mod store;
pub mod web_bench;

pub use commons_store::home::dir_size;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

/// One scenario of the issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Every scenario below, in this order.
    All,
    /// Records verified from bytes and stored durably through the store API.
    Ingest,
    /// Records arriving by gossip from another `commonsd`.
    NetIngest,
    /// Records published on one of N `commonsd` processes reaching all of them.
    Propagation,
    /// Forking a commons with a short and a long history.
    Fork,
    /// Accepting one patch on a long history.
    State,
    /// `commonsd` RSS, idle, with a large store.
    Memory,
    /// A million records: ingest, summary read, idle RSS, fork (not in `all`).
    Million,
    /// Propagation through many network stacks in one process.
    Scale,
    /// Bytes and round trips to find a small difference between two large record sets.
    Reconcile,
    /// A large blob between two `commonsd`, against a plain TCP copy.
    Blobs,
    /// A new node fetching a whole commons from one peer, against `git clone` of the same files.
    Catchup,
    /// Propagation between two `commonsd` while a peer floods one with content it withholds.
    Hostile,
    /// The web explorer's commons and patches pages under concurrent clients, against a static
    /// file of the same size from the same server.
    Web,
}

impl Scenario {
    /// The scenarios `all` runs. The in-process ones come first; `state` runs before `fork`
    /// because they share the long history.
    pub const ORDER: [Scenario; 12] = [
        Scenario::Reconcile,
        Scenario::Ingest,
        Scenario::State,
        Scenario::Fork,
        Scenario::Memory,
        Scenario::NetIngest,
        Scenario::Propagation,
        Scenario::Scale,
        Scenario::Blobs,
        Scenario::Catchup,
        Scenario::Hostile,
        Scenario::Web,
    ];

    /// The name used on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::All => "all",
            Scenario::Ingest => "ingest",
            Scenario::NetIngest => "net-ingest",
            Scenario::Propagation => "propagation",
            Scenario::Fork => "fork",
            Scenario::State => "state",
            Scenario::Memory => "memory",
            Scenario::Million => "million",
            Scenario::Scale => "scale",
            Scenario::Reconcile => "reconcile",
            Scenario::Blobs => "blobs",
            Scenario::Catchup => "catchup",
            Scenario::Hostile => "hostile",
            Scenario::Web => "web",
        }
    }
}

/// Sizes and knobs. The defaults are the sizes; small values make a smoke run.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Records for `ingest` and `memory` (half patches, half validations).
    pub records: usize,
    /// Records per `Store::put` (and per decode batch) in `ingest`.
    pub batch: usize,
    /// Records sent by gossip in `net-ingest`.
    pub net_records: usize,
    /// The short history of `fork`, in patches.
    pub fork_small: usize,
    /// The long history of `fork` and `state`, in patches.
    pub history: usize,
    /// How many single-patch acceptances `state` times (the median is reported).
    pub state_reps: usize,
    /// `commonsd` processes in `propagation`.
    pub nodes: usize,
    /// Records published in `propagation` and `scale`.
    pub messages: usize,
    /// Publication rate in `propagation` and `scale`, per second.
    pub rate: f64,
    /// Polling interval of the daemons' control sockets, in milliseconds.
    pub poll_ms: u64,
    /// Network stacks in `scale`.
    pub scale_nodes: usize,
    /// Seed of the random topologies.
    pub seed: u64,
    /// The `commonsd` binary (default: next to this executable).
    pub commonsd: Option<PathBuf>,
    /// The `commons` binary (default: next to `commonsd`).
    pub commons: Option<PathBuf>,
    /// No progress lines.
    pub quiet: bool,
    /// Patches (and git commits) of the commons fetched in `catchup`.
    pub catchup_patches: usize,
    /// MiB of files in that commons, spread evenly over the patches.
    pub catchup_mib: u64,
    /// Concurrent clients in `web`, each on its own connection.
    pub web_clients: usize,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            records: 100_000,
            batch: 1000,
            net_records: 10_000,
            fork_small: 1000,
            history: 100_000,
            state_reps: 5,
            nodes: 20,
            messages: 200,
            rate: 20.0,
            poll_ms: 5,
            scale_nodes: 100,
            seed: 1,
            commonsd: None,
            commons: None,
            quiet: false,
            catchup_patches: 10_000,
            catchup_mib: 200,
            web_clients: 50,
        }
    }
}

impl Opts {
    /// A progress line on stderr.
    pub fn progress(&self, line: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("[bench] {}", line.as_ref());
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Which scenario.
    pub scenario: &'static str,
    /// What was measured.
    pub metric: String,
    /// The measured value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// What it is compared with, measured in the same run.
    pub reference: Option<Reference>,
    /// `value / reference.value`.
    pub ratio: Option<f64>,
    /// The target, as text (`≥ 0.6×`, `≤ 100 ms`, `-` for figures without one).
    pub target: String,
    /// Whether the target is met; `None` for figures without a target or that failed to run.
    pub pass: Option<bool>,
    /// Anything the reader must know (an error, a timeout, a sample count).
    pub note: String,
}

/// The reference of a row.
#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    /// What it is.
    pub what: String,
    /// Its value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
}

impl Row {
    /// A row with no reference and no target.
    pub fn info(scenario: &'static str, metric: impl Into<String>, value: f64, unit: &str) -> Row {
        Row {
            scenario,
            metric: metric.into(),
            value,
            unit: unit.to_owned(),
            reference: None,
            ratio: None,
            target: "-".to_owned(),
            pass: None,
            note: String::new(),
        }
    }

    /// Adds a reference; the ratio is `value / reference`.
    pub fn against(mut self, what: impl Into<String>, value: f64, unit: &str) -> Row {
        self.ratio = Some(self.value / value);
        self.reference = Some(Reference {
            what: what.into(),
            value,
            unit: unit.to_owned(),
        });
        self
    }

    /// Sets the target and whether it is met.
    pub fn target(mut self, target: impl Into<String>, pass: bool) -> Row {
        self.target = target.into();
        self.pass = Some(pass);
        self
    }

    /// Adds a note.
    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }

    /// A row saying the scenario could not run.
    pub fn error(scenario: &'static str, error: &anyhow::Error) -> Row {
        Row::info(scenario, "did not run", f64::NAN, "").note(format!("error: {error:#}"))
    }
}

/// What the scenarios leave behind for later ones in the same run (so that `all` builds the
/// long history and the large store once).
#[derive(Debug, Default)]
pub struct Shared {
    /// A home whose store holds `records` records (closed), from `ingest`.
    pub ingest_home: Option<(tempfile::TempDir, u64)>,
    /// The long history in a store, from `state` (reused by `fork`).
    pub long_history: Option<store::Built>,
}

/// Runs `scenario` (or all of them) and returns the rows. A scenario that fails gives an error
/// row instead of stopping the others.
pub fn run(scenario: Scenario, opts: &Opts) -> Vec<Row> {
    let list: Vec<Scenario> = if scenario == Scenario::All {
        Scenario::ORDER.to_vec()
    } else {
        vec![scenario]
    };
    let mut shared = Shared::default();
    let mut rows = Vec::new();
    for s in list {
        let started = Instant::now();
        opts.progress(format!("scenario {} ...", s.name()));
        let result = match s {
            Scenario::Ingest => store::ingest(opts, &mut shared),
            Scenario::State => store::state(opts, &mut shared),
            Scenario::Fork => fork_bench::fork(opts, &mut shared),
            Scenario::Memory => procs::memory(opts, &mut shared),
            Scenario::NetIngest => procs::net_ingest(opts),
            Scenario::Propagation => procs::propagation(opts),
            Scenario::Scale => scale::scale(opts),
            Scenario::Reconcile => reconcile_bench::run(opts),
            Scenario::Blobs => blob_bench::run(opts),
            Scenario::Catchup => catchup::run(opts),
            Scenario::Hostile => hostile::run(opts),
            Scenario::Million => million::run(opts),
            Scenario::Web => web_bench::run(opts),
            Scenario::All => Ok(vec![]),
        };
        match result {
            Ok(r) => rows.extend(r),
            Err(e) => {
                opts.progress(format!("scenario {} failed: {e:#}", s.name()));
                rows.push(Row::error(s.name(), &e));
            }
        }
        opts.progress(format!(
            "scenario {} done in {:.1} s",
            s.name(),
            started.elapsed().as_secs_f64()
        ));
    }
    rows
}

/// A value with its unit, compactly.
pub fn show(value: f64, unit: &str) -> String {
    if value.is_nan() {
        return "-".to_owned();
    }
    let v = if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else if value.abs() >= 0.1 {
        format!("{value:.2}")
    } else {
        format!("{value:.4}")
    };
    if unit.is_empty() {
        v
    } else {
        format!("{v} {unit}")
    }
}

/// The rows as a plain-text table (what stdout gets), notes below it.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "scenario",
        "metric",
        "measured",
        "reference (same run)",
        "ratio",
        "target",
        "result",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.to_owned(),
                r.metric.clone(),
                show(r.value, &r.unit),
                r.reference
                    .as_ref()
                    .map(|x| format!("{} ({})", show(x.value, &x.unit), x.what))
                    .unwrap_or_else(|| "-".to_owned()),
                r.ratio
                    .map(|x| format!("{}×", show(x, "")))
                    .unwrap_or_else(|| "-".to_owned()),
                r.target.clone(),
                match r.pass {
                    Some(true) => "pass".to_owned(),
                    Some(false) => "FAIL".to_owned(),
                    None if r.note.starts_with("error") => "ERROR".to_owned(),
                    None => "-".to_owned(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[String]| {
        let parts: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        let _ = writeln!(out, "| {} |", parts.join(" | "));
    };
    line(&mut out, &header.map(str::to_owned));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let _ = writeln!(out, "|-{}-|", rule.join("-|-"));
    for row in &cells {
        line(&mut out, row);
    }
    let notes: Vec<&Row> = rows.iter().filter(|r| !r.note.is_empty()).collect();
    if !notes.is_empty() {
        out.push('\n');
        for r in notes {
            let _ = writeln!(out, "- {} / {}: {}", r.scenario, r.metric, r.note);
        }
    }
    out
}

/// How records spread: p50 and p99 of the time until every receiver held a record (a record
/// some receiver never got counts as infinitely late), p50 of the time to the first receiver,
/// and how many never reached all. Milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    /// p50 of the time until all held it.
    pub p50: f64,
    /// p99 of the time until all held it.
    pub p99: f64,
    /// p50 of the time until the first receiver held it.
    pub first50: f64,
    /// Records that never reached every receiver.
    pub missing: usize,
}

/// [`Spread`] of records, given for each the arrival time at each receiver (`None`: never).
pub fn spread(per_record: impl IntoIterator<Item = Vec<Option<f64>>>) -> Spread {
    let (mut all_ms, mut first_ms, mut missing) = (Vec::new(), Vec::new(), 0);
    for times in per_record {
        if let Some(first) = times.iter().flatten().copied().reduce(f64::min) {
            first_ms.push(first);
        }
        if times.iter().all(Option::is_some) {
            all_ms.push(times.iter().flatten().copied().fold(0.0, f64::max));
        } else {
            missing += 1;
            all_ms.push(f64::INFINITY);
        }
    }
    all_ms.sort_by(f64::total_cmp);
    first_ms.sort_by(f64::total_cmp);
    Spread {
        p50: percentile(&all_ms, 50.0),
        p99: percentile(&all_ms, 99.0),
        first50: percentile(&first_ms, 50.0),
        missing,
    }
}

/// Percentile (nearest rank) of sorted values; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A small deterministic generator (xorshift64*) for random topologies.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded; never zero.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A random connected graph of `n` nodes with average degree about 4: node `i` links to two
/// random earlier nodes (one if only one exists), then nodes with fewer than 4 links get one more
/// to a random node they are not linked to. Returns the edges and how many of the first ones
/// are of the first kind (`(i, j)` with `j < i`: what node `i` can name as bootstrap peers).
pub fn random_mesh(n: usize, seed: u64) -> (Vec<(usize, usize)>, usize) {
    let mut rng = Rng::new(seed);
    let mut adj = vec![std::collections::BTreeSet::new(); n];
    let mut edges = Vec::new();
    for i in 1..n {
        let want = 2.min(i);
        while adj[i].len() < want {
            let j = rng.below(i);
            if adj[i].insert(j) {
                adj[j].insert(i);
                edges.push((i, j));
            }
        }
    }
    let bootstrap = edges.len();
    for i in 0..n {
        if adj[i].len() < 4 && n > 5 {
            loop {
                let j = rng.below(n);
                if j != i && !adj[i].contains(&j) {
                    adj[i].insert(j);
                    adj[j].insert(i);
                    edges.push((i, j));
                    break;
                }
            }
        }
    }
    (edges, bootstrap)
}

/// Bytes this process has passed to `write`-like system calls so far (`wchar` of
/// `/proc/self/io`), or `None` where that file does not exist.
pub fn bytes_written_by_process() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/io").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_last_arrival_and_counts_a_record_never_everywhere_as_missing() {
        let s = spread([
            vec![Some(3.0), Some(9.0)],
            vec![Some(1.0), Some(2.0)],
            vec![Some(4.0), None],
        ]);
        assert_eq!(s.missing, 1);
        assert_eq!(s.p50, 9.0);
        assert_eq!(s.p99, f64::INFINITY);
        assert_eq!(s.first50, 3.0);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn the_mesh_is_connected_with_degree_about_four() {
        let n = 20;
        let (edges, bootstrap) = random_mesh(n, 7);
        assert!(edges[..bootstrap].iter().all(|(a, b)| b < a));
        let avg = 2.0 * edges.len() as f64 / n as f64;
        assert!((3.5..=6.0).contains(&avg), "average degree {avg}");
        let mut seen = vec![false; n];
        let mut stack = vec![0];
        while let Some(x) = stack.pop() {
            if std::mem::replace(&mut seen[x], true) {
                continue;
            }
            for &(a, b) in &edges {
                if a == x {
                    stack.push(b);
                }
                if b == x {
                    stack.push(a);
                }
            }
        }
        assert!(seen.iter().all(|s| *s));
    }
}
