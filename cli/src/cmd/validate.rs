//! `commons validate`: a maintainer's verdict on a patch.

use commons_core::state::PatchStatus;
use commons_core::{BlobHash, Body, LineageId, Record, RecordId, StateRoot, Validation, Verdict};
use commons_store::LineageSummary;
use serde::Serialize;

use crate::args::ValidateArgs;
use crate::ctx::{Ctx, now_ms};
use crate::error::{CliError, Result};
use crate::resolve;

#[derive(Serialize)]
struct Validated {
    validation: RecordId,
    patch: RecordId,
    lineage: LineageId,
    name: String,
    verdict: Verdict,
    status: PatchStatus,
    root: StateRoot,
}

fn family(s: &LineageSummary) -> LineageId {
    s.family.unwrap_or(s.lineage)
}

/// Signs a validation after checking that this home's key is a maintainer of the lineage.
pub fn validate(ctx: &Ctx, args: ValidateArgs) -> Result<()> {
    let backend = ctx.backend()?;
    let record = resolve::patch(backend, &args.patch)?;
    let Some(patch) = record.as_patch() else {
        return Err(CliError::error("not a patch"));
    };
    let proposed_to = backend.lineage(&patch.lineage)?;
    let target = match &args.lineage {
        Some(l) => resolve::lineage(backend, l)?,
        None => proposed_to.clone().ok_or_else(|| {
            CliError::not_found(format!(
                "the commons this patch was proposed to ({}) is not in this home",
                patch.lineage
            ))
            .hint("import its bundle, or name the commons to validate in with --in ID")
        })?,
    };
    if let Some(p) = &proposed_to
        && family(p) != family(&target)
    {
        return Err(CliError::usage(format!(
            "patch {} was proposed to \"{}\", which is not of the same family as \"{}\"",
            record.id().short(),
            p.charter.name,
            target.charter.name
        ))
        .hint("a patch can be validated in the commons it was proposed to and in its forks and parents"));
    }
    let identity = ctx.identity()?;
    let me = identity.author.public();
    if !target.charter.maintainers.contains(&me) {
        let list = target
            .charter
            .maintainers
            .iter()
            .map(|m| format!("\n  {m}"))
            .collect::<String>();
        return Err(CliError::refused(format!(
            "you ({me}) are not a maintainer of \"{}\" ({}), so your validation would not count; its maintainers are:{list}",
            target.charter.name,
            target.lineage.short()
        ))
        .hint(format!(
            "ask one of its maintainers to validate, or fork it (`commons fork {}`) and validate with --in FORK",
            target.lineage.short()
        )));
    }
    let verdict = if args.accept {
        Verdict::Accept
    } else {
        Verdict::Reject
    };
    if verdict == Verdict::Accept && !args.without_content {
        // Accepting content nobody can give makes every checkout of the commons fail: refuse
        // unless this home holds it (a daemon first asks its peers for what is missing).
        let added: Vec<(String, BlobHash)> = patch
            .changes
            .iter()
            .filter_map(|c| Some((c.path.clone(), c.after?)))
            .collect();
        let (missing, asked_peers) =
            crate::cmd::work::missing_blobs(backend, added.iter().map(|(p, h)| (p, h)))?;
        if !missing.is_empty() {
            return Err(CliError::refused(format!(
                "patch {} adds content this home does not hold, so a checkout of \"{}\" would lack {} once it is accepted",
                record.id().short(),
                target.charter.name,
                crate::cmd::work::some_paths(&missing)
            ))
            .hint(format!(
                "{}; then validate again. To accept it anyway, add --without-content",
                crate::cmd::work::where_to_get(asked_peers)
            )));
        }
    }
    let validation = Record::sign(
        &identity.author,
        now_ms(),
        Body::Validation(Validation {
            lineage: target.lineage,
            patch: record.id(),
            verdict,
            note: args.message.clone(),
        }),
    )?;
    let vid = validation.id();
    backend.put(vec![validation])?;
    let status = backend
        .status(&target.lineage, &record.id())?
        .unwrap_or(PatchStatus::Pending);
    let root = backend
        .lineage(&target.lineage)?
        .map_or(target.root, |s| s.root);
    let out = Validated {
        validation: vid,
        patch: record.id(),
        lineage: target.lineage,
        name: target.charter.name.clone(),
        verdict,
        status,
        root,
    };
    ctx.emit(&out, || {
        let verb = match verdict {
            Verdict::Accept => "Accepted",
            Verdict::Reject => "Rejected",
        };
        let mut t = format!(
            "{verb} patch {} in \"{}\": its status is now {status}.\n",
            record.id().short(),
            target.charter.name
        );
        match status {
            PatchStatus::Pending if target.charter.threshold > 1 => t.push_str(&format!(
                "{} of {} maintainers must accept it.\n",
                target.charter.threshold,
                target.charter.maintainers.len()
            )),
            PatchStatus::Pending if verdict == Verdict::Accept => t.push_str(
                "It waits for ancestors that are not in this home yet; import them with `commons bundle import FILE`.\n",
            ),
            PatchStatus::Conflicted => t.push_str(
                "It did not apply to the current files (its `before` contents differ), so it changed nothing.\n",
            ),
            _ => {}
        }
        t.push_str(&format!("State root {root}\nValidation {vid}"));
        t
    })
}
