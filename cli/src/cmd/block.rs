//! `commons block`, `commons unblock`, `commons blocked`: the node's block list (local policy:
//! records of a blocked author are refused and not forwarded; a blocked peer is disconnected
//! and refused).

use serde::Serialize;

use crate::Ctx;
use crate::error::Result;

#[derive(Serialize)]
struct Changed<'a> {
    entry: &'a str,
    kind: &'static str,
    blocked: bool,
}

#[derive(Serialize)]
struct Entry {
    entry: String,
    kind: &'static str,
}

fn kind_of(entry: &str) -> &'static str {
    match entry.starts_with("did:") {
        true => "author",
        false => "peer",
    }
}

/// `commons block ENTRY` (`on`) and `commons unblock ENTRY`.
pub fn block(ctx: &Ctx, entry: &str, on: bool) -> Result<()> {
    let entry = entry.trim();
    let d = ctx.daemon()?;
    d.block(entry, on)?;
    let out = Changed {
        entry,
        kind: kind_of(entry),
        blocked: on,
    };
    ctx.emit(&out, || match (on, out.kind) {
        (true, "author") => format!(
            "Blocked {entry}: this node no longer stores or forwards records they sign (what it holds already stays, and is not served)."
        ),
        (true, _) => format!(
            "Blocked peer {entry}: disconnected, and refused until `commons unblock`."
        ),
        (false, _) => format!("Unblocked {entry}."),
    })
}

/// `commons blocked`.
pub fn list(ctx: &Ctx) -> Result<()> {
    let list: Vec<Entry> = ctx
        .daemon()?
        .blocked()?
        .into_iter()
        .map(|entry| Entry {
            kind: kind_of(&entry),
            entry,
        })
        .collect();
    ctx.emit(&list, || {
        if list.is_empty() {
            return "Nothing is blocked.".to_owned();
        }
        list.iter()
            .map(|e| format!("{:<7}{}", e.kind, e.entry))
            .collect::<Vec<_>>()
            .join("\n")
    })
}
