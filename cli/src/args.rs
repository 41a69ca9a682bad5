//! The command line: every command, its arguments, and an example for each in `--help`.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};
use commons_core::state::PatchStatus;

use crate::error::EXIT_CODES_HELP;

const ROOT_AFTER_HELP: &str = "\
Examples:
  commons id init --name alice
  commons create \"Seed Library\" --license CC-BY-SA-4.0 --from ./seeds
  commons list
  commons checkout 3f2a ./seeds && commons propose ./seeds -m \"Add tomato notes\"
  commons validate 9c1e --accept -m \"Thanks!\"

Ids may be shortened to a unique prefix of at least 4 hex digits; a commons may also be named.
The home (keys and store) is --home DIR, else $COMMONS_HOME, else commons/ in the data directory.
When commonsd runs with the home, every command goes through it; `commons node status`,
`commons follow ID` and `commons sync ID` need it. `commons demo` shows three nodes at work.
";

/// `commons`: a node for commons-based peer production. Found a commons, contribute patches,
/// validate them as a maintainer, fork freely, and exchange everything by bundle.
#[derive(Debug, Parser)]
#[command(
    name = "commons",
    bin_name = "commons",
    version,
    about = "A node for commons-based peer production: found, contribute, validate, fork, exchange.",
    after_help = format!("{ROOT_AFTER_HELP}\n{EXIT_CODES_HELP}"),
    propagate_version = true
)]
pub struct Cli {
    /// The home directory holding keys and store [default: $COMMONS_HOME, else the data dir].
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or show this home's identity (author and node keys).
    #[command(subcommand)]
    Id(IdCommand),
    /// Found a new commons (a lineage) and print its id.
    #[command(after_help = "\
Examples:
  commons create \"Seed Library\" --license CC-BY-SA-4.0 --from ./seeds
  commons create Firmware --license GPL-3.0-or-later --maintainer did:key:z6Mk… --threshold 2")]
    Create(CreateArgs),
    /// List the commons this home knows.
    #[command(visible_alias = "ls", after_help = "Example:\n  commons list --json")]
    List,
    /// Show a commons: charter, maintainers, license, parent, state root, patch counts.
    #[command(after_help = "Example:\n  commons show 3f2a")]
    Show {
        /// Id, unique id prefix, or name of the commons.
        id: String,
    },
    /// The accepted history of a commons, newest first.
    #[command(after_help = "Example:\n  commons log 3f2a")]
    Log {
        /// Id, unique id prefix, or name of the commons.
        id: String,
    },
    /// The patches of a commons and their status.
    #[command(after_help = "Example:\n  commons patches 3f2a --status pending")]
    Patches {
        /// Id, unique id prefix, or name of the commons.
        id: String,
        /// Only patches with this status.
        #[arg(long, value_name = "STATUS", value_parser = parse_status)]
        status: Option<PatchStatus>,
    },
    /// Inspect one patch.
    #[command(subcommand)]
    Patch(PatchCommand),
    /// The address of the daemon's web explorer, or of a commons' page on it (open it in a
    /// browser: every commons, patch, diff and fork this node holds, updated live).
    #[command(after_help = "Examples:\n  commons web\n  commons web 3f2a --open")]
    Web {
        /// Id, unique id prefix, or name of a commons (default: the home page).
        id: Option<String>,
        /// Open it in the desktop's browser (`xdg-open`, or `open` on macOS) as well.
        #[arg(long)]
        open: bool,
    },
    /// The fork tree around a commons: its ancestors and descendants.
    #[command(after_help = "Example:\n  commons lineage 3f2a")]
    Lineage {
        /// Id, unique id prefix, or name of the commons.
        id: String,
    },
    /// Write the canonical files of a commons into a new directory.
    #[command(
        visible_alias = "co",
        after_help = "Example:\n  commons checkout 3f2a ./seeds"
    )]
    Checkout {
        /// Id, unique id prefix, or name of the commons.
        id: String,
        /// Where to write (must be absent or empty).
        dir: PathBuf,
        /// Write the files whose content is here even if some are not (they are named, and the
        /// working copy remembers them: they do not count as deleted).
        #[arg(long)]
        allow_missing: bool,
    },
    /// List the local changes of a working copy.
    #[command(
        visible_alias = "st",
        after_help = "Example:\n  commons status ./seeds"
    )]
    Status {
        /// The working copy.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Sign a patch of the local changes of a working copy and print its id.
    ///
    /// Changes too large for one patch (128 KiB, 4096 files) become a chain of patches, each
    /// the parent of the next; the last one's id is printed.
    #[command(after_help = "Example:\n  commons propose ./seeds -m \"Add tomato notes\"")]
    Propose {
        /// The working copy.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// What the patch does and why.
        #[arg(short, long, value_name = "MSG")]
        message: String,
    },
    /// Bring a working copy to the newest canonical state, keeping local changes.
    #[command(after_help = "Example:\n  commons update ./seeds")]
    Update {
        /// The working copy.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Accept or reject a patch as a maintainer.
    #[command(after_help = "\
Examples:
  commons validate 9c1e --accept -m \"Thanks!\"
  commons validate 9c1e --reject -m \"Please split this\" --in 3f2a")]
    Validate(ValidateArgs),
    /// Found a new lineage from a commons, with its own maintainers, and print its id.
    #[command(after_help = "\
Examples:
  commons fork 3f2a --name \"Seed Library (arid)\" -m \"Focus on dry climates\"
  commons fork 3f2a --at 9c1e --maintainer did:key:z6Mk… --threshold 1")]
    Fork(ForkArgs),
    /// Exchange commons without a network.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// The running node (`commonsd`) of this home: status, peers, connect.
    #[command(subcommand)]
    Node(NodeCommand),
    /// The node's store: check it at rest.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Follow a commons: the node pulls it (and its forks) from peers now and keeps it current.
    #[command(after_help = "\
Examples:
  commons follow 3f2a5c0e9d7b4a1f8e6c2d0b9a7f5e3c1d9b7a5f3e1c0d8b6a4f2e0c9d7b5a31
  commons follow \"Seed Library\"

A full 64-digit id may name a commons this home has not seen yet. Needs a running commonsd.")]
    Follow {
        /// Id (full, or a unique prefix if known here) or name of the commons.
        id: String,
    },
    /// Stop following a commons (what is stored stays).
    #[command(after_help = "Example:\n  commons unfollow 3f2a\n\nNeeds a running commonsd.")]
    Unfollow {
        /// Id, unique id prefix, or name of the commons.
        id: String,
    },
    /// Stop following a commons and drop what this home holds of it: its family's records and
    /// the blobs no other commons names (kept while another commons of its family is followed).
    #[command(after_help = "\
Examples:
  commons forget 3f2a
  commons forget \"Seed Library (fork)\"

The records are dropped only when no commons of the family is followed any more (a fork is
built from its parent's history); forget each one you follow. Peers keep their copies: follow
the commons again to fetch it back. Needs a running commonsd.")]
    Forget {
        /// Id, unique id prefix, or name of the commons.
        id: String,
    },
    /// Refuse an author's records or a peer's connections from now on (local policy: they are
    /// not stored and not forwarded).
    #[command(after_help = "\
Examples:
  commons block did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK
  commons block 12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo

Needs a running commonsd. `commons blocked` lists what is blocked.")]
    Block {
        /// An author (`did:key:…`, as `patch show` names them) or a peer id (`node peers`).
        entry: String,
    },
    /// Take an author or a peer off the block list.
    #[command(
        after_help = "Example:\n  commons unblock did:key:z6Mk…\n\nNeeds a running commonsd."
    )]
    Unblock {
        /// The author or peer id, as `commons blocked` lists it.
        entry: String,
    },
    /// List the blocked authors and peers.
    #[command(after_help = "Example:\n  commons blocked --json\n\nNeeds a running commonsd.")]
    Blocked,
    /// Pull a commons and its forks from the connected peers now.
    #[command(after_help = "Example:\n  commons sync 3f2a --json\n\nNeeds a running commonsd.")]
    Sync {
        /// Id (full, or a unique prefix if known here) or name of the commons.
        id: String,
    },
    /// Start three commonsd nodes on loopback and play the whole story across them.
    #[command(after_help = "\
Example:
  commons demo
  COMMONSD_BIN=target/debug/commonsd commons demo

Uses temporary homes, removed at the end. commonsd is $COMMONSD_BIN, else the one next to
this executable, else the one on the PATH.")]
    Demo,
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  commons completions bash > ~/.local/share/bash-completion/completions/commons"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `commons id …`.
#[derive(Debug, Subcommand)]
pub enum IdCommand {
    /// Create the author and node keys of this home (never overwrites).
    #[command(after_help = "Example:\n  COMMONS_HOME=/tmp/alice commons id init --name alice")]
    Init {
        /// A display name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Print this home's keys (did:key).
    #[command(after_help = "Example:\n  commons id show --json")]
    Show,
}

/// `commons patch …`.
#[derive(Debug, Subcommand)]
pub enum PatchCommand {
    /// Message, author, validations, statuses, and a diff of a patch.
    #[command(after_help = "Example:\n  commons patch show 9c1e")]
    Show {
        /// Id or unique id prefix of the patch.
        patch: String,
    },
}

/// `commons store …`: they need a running `commonsd` (exit code 7 otherwise).
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Hash every record and blob again: damaged ones are reported and moved aside (the node
    /// fetches good copies from its peers), and the indexes are rebuilt from the records.
    #[command(after_help = "Example:\n  commons store verify --json")]
    Verify,
}

/// `commons node …`: they need a running `commonsd` (exit code 7 otherwise).
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Peer id, node key, listen addresses, peers, followed commons and store size.
    #[command(after_help = "Example:\n  commons node status --json")]
    Status,
    /// The connected peers and their addresses.
    #[command(after_help = "Example:\n  commons node peers")]
    Peers,
    /// Dial a peer.
    #[command(
        after_help = "Example:\n  commons node connect /ip4/192.0.2.7/tcp/4001/p2p/12D3KooW…"
    )]
    Connect {
        /// Its multiaddr, with /p2p/PEER_ID.
        addr: String,
    },
}

/// `commons bundle …`.
#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Write every record and blob of a commons and its family of forks to a file.
    #[command(after_help = "Example:\n  commons bundle export 3f2a seeds.bundle")]
    Export {
        /// Id, unique id prefix, or name of the commons.
        id: String,
        /// The bundle file to write.
        file: PathBuf,
    },
    /// Verify a bundle and store what it holds that is new.
    #[command(after_help = "Example:\n  commons bundle import seeds.bundle")]
    Import {
        /// The bundle file.
        file: PathBuf,
    },
}

/// `commons create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The name of the commons.
    pub name: String,
    /// Its license, as an SPDX expression (e.g. CC-BY-SA-4.0, GPL-3.0-or-later).
    #[arg(long, value_name = "SPDX")]
    pub license: String,
    /// One paragraph about it.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub summary: String,
    /// Another maintainer (did:key:…); repeat for several.
    #[arg(long = "maintainer", value_name = "DID")]
    pub maintainers: Vec<String>,
    /// Do not make yourself a maintainer.
    #[arg(long)]
    pub no_self: bool,
    /// How many maintainers must accept a patch [default: 1].
    #[arg(long, value_name = "K")]
    pub threshold: Option<u16>,
    /// Import this directory as the first patch(es).
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
}

/// `commons validate`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("verdict").required(true).args(["accept", "reject"])))]
pub struct ValidateArgs {
    /// Id or unique id prefix of the patch.
    pub patch: String,
    /// The patch belongs in the commons.
    #[arg(long)]
    pub accept: bool,
    /// It does not.
    #[arg(long)]
    pub reject: bool,
    /// Why.
    #[arg(short, long, value_name = "NOTE", default_value = "")]
    pub message: String,
    /// The commons to validate in [default: the one the patch was proposed to].
    #[arg(long = "in", value_name = "ID")]
    pub lineage: Option<String>,
    /// Accept even if the content the patch adds is not in this home and no peer could give it
    /// (checkouts of the commons then lack those files until someone provides them).
    #[arg(long)]
    pub without_content: bool,
}

/// `commons fork`.
#[derive(Debug, Args)]
pub struct ForkArgs {
    /// Id, unique id prefix, or name of the commons to fork.
    pub id: String,
    /// The fork's name [default: the parent's name followed by " (fork)"].
    #[arg(long)]
    pub name: Option<String>,
    /// Fork at this accepted patch instead of the current state.
    #[arg(long, value_name = "PATCH")]
    pub at: Option<String>,
    /// Another maintainer of the fork (did:key:…); repeat for several.
    #[arg(long = "maintainer", value_name = "DID")]
    pub maintainers: Vec<String>,
    /// Do not make yourself a maintainer of the fork.
    #[arg(long)]
    pub no_self: bool,
    /// How many maintainers must accept a patch [default: 1].
    #[arg(long, value_name = "K")]
    pub threshold: Option<u16>,
    /// Why you fork; it becomes the fork's summary.
    #[arg(short, long, value_name = "REASON")]
    pub message: Option<String>,
}

fn parse_status(s: &str) -> Result<PatchStatus, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_story() {
        let cli = Cli::try_parse_from([
            "commons",
            "--home",
            "/tmp/a",
            "create",
            "Seeds",
            "--license",
            "MIT",
            "--from",
            "d",
        ])
        .unwrap();
        assert_eq!(cli.home.as_deref(), Some(std::path::Path::new("/tmp/a")));
        let Command::Create(c) = cli.command else {
            panic!("not create")
        };
        assert_eq!(c.name, "Seeds");
        assert_eq!(c.from.as_deref(), Some(std::path::Path::new("d")));

        let cli = Cli::try_parse_from([
            "commons", "patches", "abcd", "--status", "rejected", "--json",
        ])
        .unwrap();
        assert!(cli.json);
        assert!(matches!(
            cli.command,
            Command::Patches {
                status: Some(PatchStatus::Rejected),
                ..
            }
        ));
        let cli = Cli::try_parse_from(["commons", "validate", "abcd", "--reject", "--in", "ef01"])
            .unwrap();
        let Command::Validate(v) = cli.command else {
            panic!("not validate")
        };
        assert!(v.reject && !v.accept);
        assert_eq!(v.lineage.as_deref(), Some("ef01"));
    }

    #[test]
    fn usage_errors_are_refused() {
        for bad in [
            &["commons", "validate", "abcd"][..],
            &["commons", "validate", "abcd", "--accept", "--reject"],
            &["commons", "patches", "abcd", "--status", "maybe"],
            &["commons", "create", "x"],
            &["commons", "propose", "."],
        ] {
            let err = Cli::try_parse_from(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn every_command_has_an_example() {
        let cmd = Cli::command();
        let mut stack = vec![cmd];
        while let Some(c) = stack.pop() {
            let subs: Vec<_> = c.get_subcommands().cloned().collect();
            if subs.is_empty() && c.get_name() != "help" {
                let help = c
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                assert!(help.contains("commons "), "{} has no example", c.get_name());
            }
            stack.extend(subs);
        }
    }
}
