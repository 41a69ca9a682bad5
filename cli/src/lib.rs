//! The `commons` command-line tool as a library: argument parsing ([`args`]), the commands
//! ([`cmd`]) and the pieces they share (working copies, bundles, diffs, id resolution).
//!
//! Commands reach records and blobs only through [`backend::Backend`]: a client of the control
//! socket of the home's `commonsd` when one runs ([`daemon::DaemonBackend`]), else the local
//! store ([`backend::LocalBackend`]). The node's own commands (`node`, `follow`, `sync`) need a
//! daemon; `commons demo` ([`demo`]) starts three on loopback and plays the story across them.
//!
//! Errors are [`error::CliError`]s: printed as `error: …` with a `hint: …` line, and mapped to
//! the exit codes in [`error::EXIT_CODES_HELP`].

pub mod args;
pub mod backend;
pub mod bundle;
pub mod cmd;
pub mod ctx;
pub mod daemon;
pub mod demo;
pub mod diff;
pub mod error;
pub mod progress;
pub mod resolve;
pub mod worktree;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use commons_store::home::Home;

use crate::args::{Cli, Command};
use crate::ctx::Ctx;
use crate::error::CliError;

/// Parses `argv`, runs the command, prints any error, and returns the exit code.
pub fn run<I, T>(argv: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with code 0; usage errors to stderr with code 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.kind.code())
        }
    }
}

/// Runs a parsed command line against the local store of the selected home.
pub fn execute(cli: Cli) -> Result<(), CliError> {
    if let Command::Completions { shell } = cli.command {
        let mut cmd = Cli::command();
        clap_complete::generate(shell, &mut cmd, "commons", &mut std::io::stdout());
        return Ok(());
    }
    if let Command::Demo = cli.command {
        return demo::run();
    }
    let home = Home::resolve(cli.home.as_deref())?;
    let ctx = Ctx::new(home, cli.json);
    let result = cmd::run(&ctx, cli.command);
    let closed = ctx.finish();
    result.and(closed)
}
