//! The commands. Each takes a [`Ctx`] and its arguments, talks to the backend, and prints through
//! [`Ctx::emit`] (text or `--json`).

mod block;
mod exchange;
mod found;
mod id;
mod node;
mod read;
mod store;
mod validate;
mod work;

use std::collections::BTreeMap;

pub use node::{describe_report, human_bytes};

use commons_core::PublicKey;
use commons_core::state::PatchStatus;
use serde::Serialize;

use crate::args::{BundleCommand, Command, IdCommand, NodeCommand, PatchCommand, StoreCommand};
use crate::ctx::Ctx;
use crate::error::{CliError, Result};

/// Runs one command.
pub fn run(ctx: &Ctx, command: Command) -> Result<()> {
    match command {
        Command::Id(IdCommand::Init { name }) => id::init(ctx, name.as_deref()),
        Command::Id(IdCommand::Show) => id::show(ctx),
        Command::Create(args) => found::create(ctx, args),
        Command::List => read::list(ctx),
        Command::Show { id } => read::show(ctx, &id),
        Command::Log { id } => read::log(ctx, &id),
        Command::Patches { id, status } => read::patches(ctx, &id, status),
        Command::Patch(PatchCommand::Show { patch }) => read::patch_show(ctx, &patch),
        Command::Lineage { id } => read::lineage(ctx, &id),
        Command::Checkout {
            id,
            dir,
            allow_missing,
        } => work::checkout(ctx, &id, &dir, allow_missing),
        Command::Status { dir } => work::status(ctx, &dir),
        Command::Propose { dir, message } => work::propose(ctx, &dir, &message),
        Command::Update { dir } => work::update(ctx, &dir),
        Command::Validate(args) => validate::validate(ctx, args),
        Command::Fork(args) => found::fork(ctx, args),
        Command::Bundle(BundleCommand::Export { id, file }) => exchange::export(ctx, &id, &file),
        Command::Bundle(BundleCommand::Import { file }) => exchange::import(ctx, &file),
        Command::Store(StoreCommand::Verify) => store::verify(ctx),
        Command::Node(NodeCommand::Status) => node::status(ctx),
        Command::Web { id, open } => node::web(ctx, id.as_deref(), open),
        Command::Node(NodeCommand::Peers) => node::peers(ctx),
        Command::Node(NodeCommand::Connect { addr }) => node::connect(ctx, &addr),
        Command::Follow { id } => node::follow(ctx, &id),
        Command::Unfollow { id } => node::unfollow(ctx, &id),
        Command::Forget { id } => node::forget(ctx, &id),
        Command::Sync { id } => node::sync(ctx, &id),
        Command::Block { entry } => block::block(ctx, &entry, true),
        Command::Unblock { entry } => block::block(ctx, &entry, false),
        Command::Blocked => block::list(ctx),
        Command::Completions { .. } | Command::Demo => Err(CliError::error(
            "this command runs before a context is made",
        )),
    }
}

/// Patch counts by status, every status present (zero included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Pending.
    pub pending: usize,
    /// Accepted.
    pub accepted: usize,
    /// Rejected.
    pub rejected: usize,
    /// Conflicted.
    pub conflicted: usize,
}

impl Counts {
    fn from_map(m: &BTreeMap<PatchStatus, usize>) -> Self {
        let get = |s| m.get(&s).copied().unwrap_or(0);
        Self {
            pending: get(PatchStatus::Pending),
            accepted: get(PatchStatus::Accepted),
            rejected: get(PatchStatus::Rejected),
            conflicted: get(PatchStatus::Conflicted),
        }
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} pending, {} accepted, {} rejected, {} conflicted",
            self.pending, self.accepted, self.rejected, self.conflicted
        )
    }
}

/// Parses `--maintainer` values, adds the caller unless `no_self`, sorts and deduplicates, and
/// checks the threshold.
fn maintainers_and_threshold(
    me: PublicKey,
    given: &[String],
    no_self: bool,
    threshold: Option<u16>,
) -> Result<(Vec<PublicKey>, u16)> {
    let mut keys = Vec::with_capacity(given.len() + 1);
    for did in given {
        let key: PublicKey = did.trim().parse().map_err(|e| {
            CliError::usage(format!("--maintainer `{did}` is not a key: {e}"))
                .hint("give a did:key as printed by `commons id show`")
        })?;
        keys.push(key);
    }
    if !no_self {
        keys.push(me);
    }
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        return Err(CliError::usage("a commons needs at least one maintainer")
            .hint("drop --no-self, or add --maintainer DID"));
    }
    let k = threshold.unwrap_or(1);
    if k == 0 || usize::from(k) > keys.len() {
        return Err(CliError::usage(format!(
            "threshold {k} must be between 1 and the number of maintainers ({})",
            keys.len()
        ))
        .hint("lower --threshold or add maintainers with --maintainer DID"));
    }
    Ok((keys, k))
}

/// Checks an SPDX license expression.
pub fn check_license(license: &str) -> Result<()> {
    spdx::Expression::parse(license).map_err(|e| {
        CliError::usage(format!(
            "`{license}` is not a valid SPDX license expression: {}",
            e.reason
        ))
        .hint("use an SPDX identifier or expression, e.g. MIT, GPL-3.0-or-later, CC-BY-SA-4.0, Apache-2.0 OR MIT (see https://spdx.org/licenses/)")
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn licenses() {
        for ok in [
            "MIT",
            "GPL-3.0-or-later",
            "CC-BY-SA-4.0",
            "Apache-2.0 OR MIT",
        ] {
            check_license(ok).unwrap();
        }
        for bad in ["", "Nonsense-License", "MIT AND", "GPL"] {
            let e = check_license(bad).unwrap_err();
            assert_eq!(e.kind, crate::error::ExitKind::Usage, "{bad}");
        }
    }

    #[test]
    fn maintainer_lists() {
        let me = commons_core::SecretKey::from_seed([1; 32]).public();
        let other = commons_core::SecretKey::from_seed([2; 32]).public();
        let (keys, k) =
            maintainers_and_threshold(me, &[other.to_string(), me.to_string()], false, Some(2))
                .unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(k, 2);
        assert!(maintainers_and_threshold(me, &[], true, None).is_err());
        assert!(maintainers_and_threshold(me, &[], false, Some(2)).is_err());
        assert!(maintainers_and_threshold(me, &["nope".into()], false, None).is_err());
    }
}
