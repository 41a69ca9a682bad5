//! `commons-bench`: runs the benchmarks and prints the table (stdout) or JSON (`--json`);
//! progress goes to stderr. Everything is in the `commons_bench` library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use commons_bench::{Opts, Scenario};

/// Benchmarks of Commons, each against a reference measured in the same run.
#[derive(Debug, Parser)]
#[command(
    name = "commons-bench",
    after_help = "Examples:\n  cargo build --release -p commons-node -p commons-bench\n  target/release/commons-bench all\n  target/release/commons-bench ingest --records 2000      # a quick smoke run\n  target/release/commons-bench propagation --nodes 5 --messages 20 --json"
)]
struct Args {
    /// Which scenario.
    #[arg(value_enum)]
    scenario: Scenario,
    /// Records for `ingest` and `memory` (half patches, half validations).
    #[arg(long, default_value_t = Opts::default().records)]
    records: usize,
    /// Records per `Store::put` and per decode batch in `ingest`; per control `Put` in `net-ingest` (at most 500).
    #[arg(long, default_value_t = Opts::default().batch)]
    batch: usize,
    /// Records sent by gossip in `net-ingest`.
    #[arg(long, default_value_t = Opts::default().net_records)]
    net_records: usize,
    /// The short history of `fork`, in patches.
    #[arg(long, default_value_t = Opts::default().fork_small)]
    fork_small: usize,
    /// The long history of `fork` and `state`, in patches (each with its validation).
    #[arg(long, default_value_t = Opts::default().history)]
    history: usize,
    /// Single-patch acceptances timed by `state` (the median is reported).
    #[arg(long, default_value_t = Opts::default().state_reps)]
    state_reps: usize,
    /// `commonsd` processes in `propagation`.
    #[arg(long, default_value_t = Opts::default().nodes)]
    nodes: usize,
    /// Records published in `propagation` and `scale`.
    #[arg(long, default_value_t = Opts::default().messages)]
    messages: usize,
    /// Publication rate in `propagation` and `scale`, records per second.
    #[arg(long, default_value_t = Opts::default().rate)]
    rate: f64,
    /// Polling interval of the daemons' control sockets, milliseconds.
    #[arg(long, default_value_t = Opts::default().poll_ms)]
    poll_ms: u64,
    /// Network stacks in `scale`.
    #[arg(long, default_value_t = Opts::default().scale_nodes)]
    scale_nodes: usize,
    /// Seed of the random topologies.
    #[arg(long, default_value_t = Opts::default().seed)]
    seed: u64,
    /// Patches (and git commits) of the commons fetched in `catchup`.
    #[arg(long, default_value_t = Opts::default().catchup_patches)]
    catchup_patches: usize,
    /// MiB of files in the commons of `catchup`, spread evenly over its patches.
    #[arg(long, default_value_t = Opts::default().catchup_mib)]
    catchup_mib: u64,
    /// Concurrent clients in `web`, each on its own connection.
    #[arg(long, default_value_t = Opts::default().web_clients)]
    web_clients: usize,
    /// The `commonsd` binary (default: next to this executable).
    #[arg(long, value_name = "PATH")]
    commonsd: Option<PathBuf>,
    /// Print the rows as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let opts = Opts {
        records: a.records,
        batch: a.batch.max(1),
        net_records: a.net_records,
        fork_small: a.fork_small,
        history: a.history,
        state_reps: a.state_reps,
        nodes: a.nodes,
        messages: a.messages,
        rate: a.rate,
        poll_ms: a.poll_ms,
        scale_nodes: a.scale_nodes,
        seed: a.seed,
        commonsd: a.commonsd,
        commons: None,
        quiet: a.quiet,
        catchup_patches: a.catchup_patches,
        catchup_mib: a.catchup_mib,
        web_clients: a.web_clients,
    };
    let rows = commons_bench::run(a.scenario, &opts);
    if a.json {
        match serde_json::to_string_pretty(&rows) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", commons_bench::table(&rows));
    }
    // Missed targets are results, not failures of the tool; a scenario that could not run is.
    if rows.iter().any(|r| r.note.starts_with("error")) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
