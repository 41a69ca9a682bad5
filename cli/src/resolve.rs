//! Turning what a person types into ids: full ids, unique prefixes of at least
//! [`MIN_PREFIX`] hex digits, and (for commons) exact names.

use commons_core::{Kind, LineageId, Record, RecordId};
use commons_store::LineageSummary;

use crate::backend::Backend;
use crate::error::{CliError, Result};

/// The shortest accepted id prefix, in hex digits.
pub const MIN_PREFIX: usize = 4;
/// How many candidates an ambiguity error lists at most.
const MAX_CANDIDATES: usize = 10;

/// Whether `s` looks like an id or id prefix (hex digits only).
fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn describe(backend: &dyn Backend, id: &RecordId) -> String {
    match backend.get(id) {
        Ok(Some(r)) => format!("{id}  {}", describe_record(&r)),
        _ => id.to_string(),
    }
}

/// A one-line description of a record: its kind and what it says.
pub fn describe_record(r: &Record) -> String {
    match r.body() {
        commons_core::Body::Charter(c) => format!("commons \"{}\"", c.name),
        commons_core::Body::Patch(p) => format!("patch \"{}\"", first_line(&p.message)),
        commons_core::Body::Validation(v) => {
            format!("validation ({:?} of {})", v.verdict, v.patch.short()).to_lowercase()
        }
    }
}

/// The first line of a message.
pub fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Resolves a full id or a unique prefix to a record id.
pub fn record_id(backend: &dyn Backend, input: &str) -> Result<RecordId> {
    let text = input.trim().to_ascii_lowercase();
    if !is_hex(&text) {
        return Err(CliError::usage(format!("`{input}` is not an id"))
            .hint(format!("give an id or a prefix of at least {MIN_PREFIX} hex digits, as printed by `commons list`, `commons patches ID` or `commons log ID`")));
    }
    if text.len() < MIN_PREFIX {
        return Err(CliError::usage(format!(
            "id prefix `{input}` is too short: at least {MIN_PREFIX} hex digits are needed"
        ))
        .hint("give more digits of the id"));
    }
    if text.len() == 64 {
        let id: RecordId = text
            .parse()
            .map_err(|_| CliError::usage(format!("`{input}` is not an id")))?;
        if backend.get(&id)?.is_some() {
            return Ok(id);
        }
        return Err(not_found(input));
    }
    let found = backend.ids_with_prefix(&text, MAX_CANDIDATES + 1)?;
    match found.as_slice() {
        [] => Err(not_found(input)),
        [one] => Ok(*one),
        many => {
            let mut msg = format!(
                "id prefix `{input}` is ambiguous; it matches {}{}:",
                if many.len() > MAX_CANDIDATES {
                    "more than "
                } else {
                    ""
                },
                many.len().min(MAX_CANDIDATES)
            );
            for id in many.iter().take(MAX_CANDIDATES) {
                msg.push_str("\n  ");
                msg.push_str(&describe(backend, id));
            }
            Err(CliError::ambiguous(msg).hint("give more digits of the id"))
        }
    }
}

fn not_found(input: &str) -> CliError {
    CliError::not_found(format!("no record with id `{input}` in this home"))
        .hint("check the id with `commons list` or `commons patches ID`; records from other people arrive with `commons bundle import FILE`")
}

/// Resolves a record of any kind and loads it.
pub fn record(backend: &dyn Backend, input: &str) -> Result<Record> {
    let id = record_id(backend, input)?;
    backend.get(&id)?.ok_or_else(|| not_found(input))
}

/// Resolves a patch.
pub fn patch(backend: &dyn Backend, input: &str) -> Result<Record> {
    let r = record(backend, input)?;
    if r.kind() != Kind::Patch {
        return Err(CliError::not_found(format!(
            "`{input}` is a {}, not a patch: {}",
            r.kind(),
            describe_record(&r)
        ))
        .hint("list patches with `commons patches ID`"));
    }
    Ok(r)
}

/// Resolves a commons by id, unique id prefix or exact name.
pub fn lineage(backend: &dyn Backend, input: &str) -> Result<LineageSummary> {
    let text = input.trim().to_ascii_lowercase();
    if is_hex(&text) && text.len() >= MIN_PREFIX {
        match record(backend, input) {
            Ok(r) => {
                if r.kind() != Kind::Charter {
                    return Err(CliError::not_found(format!(
                        "`{input}` is a {}, not a commons: {}",
                        r.kind(),
                        describe_record(&r)
                    ))
                    .hint("list the commons of this home with `commons list`"));
                }
                let id = LineageId::from(r.id());
                return backend.lineage(&id)?.ok_or_else(|| {
                    CliError::not_found(format!("commons {id} is not known here"))
                        .hint("import it with `commons bundle import FILE`")
                });
            }
            // A hex-looking name (say "cafe") may still name a commons.
            Err(e) if e.kind == crate::error::ExitKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let mut named: Vec<LineageSummary> = backend
        .lineages()?
        .into_iter()
        .filter(|l| l.charter.name == input.trim())
        .collect();
    match named.len() {
        1 => Ok(named.swap_remove(0)),
        0 if is_hex(&text) && text.len() < MIN_PREFIX => Err(CliError::usage(format!(
            "`{input}` names no commons, and as an id prefix it is too short: at least {MIN_PREFIX} hex digits are needed"
        ))
        .hint("give more digits of the id, or the exact name of the commons")),
        0 => Err(CliError::not_found(format!(
            "no commons with id or name `{input}` in this home"
        ))
        .hint("list the commons of this home with `commons list`; others' arrive with `commons bundle import FILE`")),
        _ => {
            let mut msg = format!("the name `{input}` is ambiguous; it names:");
            for l in named.iter().take(MAX_CANDIDATES) {
                msg.push_str(&format!("\n  {}  commons \"{}\"", l.lineage, l.charter.name));
            }
            Err(CliError::ambiguous(msg).hint("use the id (or a unique prefix of it) instead"))
        }
    }
}
