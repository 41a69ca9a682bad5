//! What can go wrong in a command, as the user sees it: a message, a hint saying what to do, and
//! a documented exit code.
//!
//! Library errors (store, home, records, bundles) are converted here, in one place, so every
//! command reports them the same way.

use std::fmt;

use commons_core::{DecodeError, SignError};
use commons_store::home::HomeError;
use commons_store::{OpenError, StoreError};

use crate::bundle::BundleError;

/// The exit codes of `commons`, documented in `commons --help` and `docs/walkthrough.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// 1: the command failed (I/O, a damaged store or bundle, nothing to do).
    Error,
    /// 2: the command line or a value on it is wrong.
    Usage,
    /// 3: an id, name or file the command needs does not exist.
    NotFound,
    /// 4: an id prefix or name matches more than one thing.
    Ambiguous,
    /// 5: refused: the key is not allowed to do this, or the command would overwrite something.
    Refused,
    /// 6: a conflict between local changes and incoming ones.
    Conflict,
    /// 7: the command needs a running `commonsd` and none answers for this home.
    NoDaemon,
}

impl ExitKind {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitKind::Error => 1,
            ExitKind::Usage => 2,
            ExitKind::NotFound => 3,
            ExitKind::Ambiguous => 4,
            ExitKind::Refused => 5,
            ExitKind::Conflict => 6,
            ExitKind::NoDaemon => 7,
        }
    }
}

/// The table printed after `commons --help` and copied into the walk-through.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  error (I/O, damaged store or bundle, nothing to do)
  2  usage (bad arguments or values, e.g. an invalid SPDX license)
  3  not found (no such id, name, file or identity)
  4  ambiguous (an id prefix or name matches several things)
  5  refused (not a maintainer, or it would overwrite something)
  6  conflict (local changes collide with incoming ones)
  7  no daemon (the command needs a running commonsd)";

/// A failed command: what happened, what to do about it, and the exit code.
#[derive(Debug)]
pub struct CliError {
    /// Which exit code.
    pub kind: ExitKind,
    /// One line (or a few) saying what went wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

/// The result of a command.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    /// An error of `kind`.
    pub fn new(kind: ExitKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    /// Exit code 1.
    pub fn error(message: impl Into<String>) -> Self {
        Self::new(ExitKind::Error, message)
    }

    /// Exit code 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ExitKind::Usage, message)
    }

    /// Exit code 3.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ExitKind::NotFound, message)
    }

    /// Exit code 4.
    pub fn ambiguous(message: impl Into<String>) -> Self {
        Self::new(ExitKind::Ambiguous, message)
    }

    /// Exit code 5.
    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(ExitKind::Refused, message)
    }

    /// Exit code 6.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ExitKind::Conflict, message)
    }

    /// Exit code 7.
    pub fn no_daemon(message: impl Into<String>) -> Self {
        Self::new(ExitKind::NoDaemon, message)
    }

    /// Adds the hint line.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CliError {}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<CliError>() {
            Ok(c) => c,
            Err(e) => CliError::error(format!("{e:#}")),
        }
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        CliError::error(e.to_string())
            .hint("check the disk and the home directory; if the store is damaged, re-import a bundle into a fresh --home")
    }
}

impl From<OpenError> for CliError {
    fn from(e: OpenError) -> Self {
        let hint = match &e {
            OpenError::Locked { .. } => {
                "stop the daemon using this home, or pass another --home DIR"
            }
            OpenError::Schema { .. } => "install a newer commons",
            _ => "check the path and its permissions, or pass another --home DIR",
        };
        CliError::error(e.to_string()).hint(hint)
    }
}

impl From<HomeError> for CliError {
    fn from(e: HomeError) -> Self {
        let msg = e.to_string();
        match e {
            HomeError::NoKeys { .. } => CliError::not_found(msg)
                .hint("create an identity with `commons id init --name NAME`"),
            HomeError::KeysExist { .. } => CliError::refused(msg)
                .hint("`commons id show` prints the existing identity; use --home DIR for another"),
            HomeError::NoHome => CliError::usage(msg).hint("export COMMONS_HOME=DIR"),
            HomeError::Permissions { .. } => {
                CliError::refused(msg).hint("make the key file readable by its owner only")
            }
            HomeError::BadName(_) => {
                CliError::usage(msg).hint("pick a shorter name without control characters")
            }
            _ => CliError::error(msg).hint("check the home directory and its permissions"),
        }
    }
}

impl From<SignError> for CliError {
    fn from(e: SignError) -> Self {
        match e {
            SignError::Invalid { .. } => {
                CliError::usage(e.to_string()).hint("fix the value and run the command again")
            }
            SignError::TooLarge {
                kind: commons_core::Kind::Charter,
                ..
            } => CliError::error(e.to_string()).hint(
                "a fork charter names its heads and the ancestors its base leaves out: fork at a point the parent accepted whole (without --at, or --at an accepted patch)",
            ),
            SignError::TooLarge { .. } => CliError::error(e.to_string())
                .hint("split the work into smaller steps (fewer files per patch)"),
            SignError::Undecodable { .. } => CliError::error(e.to_string())
                .hint("nothing was stored or sent; please report this with the command you ran"),
        }
    }
}

impl From<DecodeError> for CliError {
    fn from(e: DecodeError) -> Self {
        CliError::error(format!("invalid record: {e}"))
    }
}

impl From<BundleError> for CliError {
    fn from(e: BundleError) -> Self {
        let hint = match &e {
            BundleError::Io { .. } => "check the file path and the disk",
            _ => "nothing was stored; ask for a fresh bundle (`commons bundle export ID FILE`)",
        };
        CliError::error(e.to_string()).hint(hint)
    }
}
