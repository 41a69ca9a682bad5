//! The node's own commands: `node status`, `node peers`, `node connect`, `follow`, `unfollow`
//! and `sync`. Only a running `commonsd` can answer them; without one they fail with exit
//! code 7 and say how to start it.

use commons_core::{Kind, LineageId, RecordId};
use commons_rpc::SyncReport;
use serde::Serialize;

use crate::backend::Backend;
use crate::ctx::{Ctx, note};
use crate::daemon::DaemonBackend;
use crate::error::{CliError, Result};
use crate::resolve;

/// `1.2 MiB`: a size in binary units, bytes below 1 KiB.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return plural(n, "byte", "bytes");
    }
    // Precision is not the point here; a float keeps one decimal simply.
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// `1 peer`, `2 peers`.
pub(crate) fn plural(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

fn count(n: usize, one: &str, many: &str) -> String {
    plural(u64::try_from(n).unwrap_or(u64::MAX), one, many)
}

/// `pulled 3 new records and 2 blobs (1.2 KiB) from 1 peer`.
pub fn describe_report(r: &SyncReport) -> String {
    format!(
        "pulled {} and {} ({}) from {}",
        count(r.new_records, "new record", "new records"),
        count(r.new_blobs, "blob", "blobs"),
        human_bytes(r.blob_bytes),
        count(r.peers, "peer", "peers"),
    )
}

/// A commons named on the command line of `follow` or `sync`: a full id is taken as it is (the
/// commons may not have reached this home yet); a prefix or a name must resolve here.
fn lineage_arg(backend: &dyn Backend, input: &str) -> Result<LineageId> {
    let text = input.trim().to_ascii_lowercase();
    if text.len() == 64
        && let Ok(id) = text.parse::<RecordId>()
    {
        if let Some(r) = backend.get(&id)?
            && r.kind() != Kind::Charter
        {
            return Err(CliError::not_found(format!(
                "`{input}` is a {}, not a commons: {}",
                r.kind(),
                resolve::describe_record(&r)
            ))
            .hint("give the id of a commons, as printed by `commons list`"));
        }
        return Ok(LineageId::from(id));
    }
    Ok(resolve::lineage(backend, input)?.lineage)
}

/// The name of a commons if this node has its charter.
fn name_of(d: &DaemonBackend, lineage: &LineageId) -> Result<Option<String>> {
    Ok(d.lineage(lineage)?.map(|s| s.charter.name))
}

fn label(name: Option<&str>, lineage: &LineageId) -> String {
    match name {
        Some(n) => format!("\"{n}\" ({})", lineage.short()),
        None => lineage.to_string(),
    }
}

/// `commons node status`.
pub fn status(ctx: &Ctx) -> Result<()> {
    let d = ctx.daemon()?;
    let s = d.status()?;
    if ctx.json {
        return ctx.emit(&s, String::new);
    }
    let mut followed = Vec::with_capacity(s.followed.len());
    for l in &s.followed {
        followed.push(match name_of(d, l)? {
            Some(n) => format!("\"{n}\" {l}"),
            None => format!("{l} (not received yet)"),
        });
    }
    ctx.emit(&s, || {
        let mut t = format!("peer id    {}\nnode key   {}\n", s.peer_id, s.node_key);
        let mut first = true;
        for a in &s.listen_addrs {
            let head = if first { "listening " } else { "          " };
            t.push_str(&format!("{head} {a}\n"));
            first = false;
        }
        if first {
            t.push_str("listening  (no address yet)\n");
        }
        t.push_str(&format!("peers      {} connected\n", s.peers));
        match &s.web {
            Some(url) => t.push_str(&format!("web        {url}\n")),
            None => t.push_str("web        not served (--no-web, or web = \"off\" in config.toml)\n"),
        }
        for (i, b) in s.bootstrap.iter().enumerate() {
            let head = if i == 0 { "bootstrap " } else { "          " };
            let state = if b.connected {
                "connected".to_owned()
            } else if b.failed_dials == 0 {
                "dialling".to_owned()
            } else {
                let next = b
                    .next_dial_ms
                    .map(|ms| format!("; next try in {} s", ms.div_ceil(1000)))
                    .unwrap_or_default();
                format!(
                    "unreachable ({}{next})",
                    plural(u64::from(b.failed_dials), "failed dial", "failed dials")
                )
            };
            t.push_str(&format!("{head} {} {state}\n", b.addr));
        }
        if followed.is_empty() {
            t.push_str("following  nothing (`commons follow ID` follows a commons)\n");
        }
        for (i, f) in followed.iter().enumerate() {
            let head = if i == 0 { "following " } else { "          " };
            t.push_str(&format!("{head} {f}\n"));
        }
        if !s.banned.is_empty() {
            t.push_str(&format!(
                "banned     {} for misbehaving: {}\n",
                count(s.banned.len(), "peer", "peers"),
                s.banned.join(", ")
            ));
        }
        t.push_str(&format!(
            "store      {} in {}\n",
            human_bytes(s.store_bytes),
            plural(s.records, "record", "records")
        ));
        if !s.refused.is_empty() {
            let total: u64 = s.refused.values().sum();
            let kinds: Vec<String> = s.refused.iter().map(|(k, n)| format!("{n} {k}")).collect();
            t.push_str(&format!(
                "refused    {} ({})\n",
                plural(total, "gossip message", "gossip messages"),
                kinds.join(", ")
            ));
        }
        if s.damaged.count > 0 {
            t.push_str(&format!(
                "damaged    {} did not decode and {} set aside (fetched again when a peer has {}):\n",
                plural(s.damaged.count, "stored record", "stored records"),
                if s.damaged.count == 1 { "was" } else { "were" },
                if s.damaged.count == 1 { "it" } else { "them" },
            ));
            for d in &s.damaged.records {
                let again = if d.refetched { " (a good copy is back)" } else { "" };
                t.push_str(&format!("           {}: {}{again}\n", d.id, d.reason));
            }
        }
        let b = &s.blobs;
        if b.completed + b.active + b.bad_groups > 0 {
            t.push_str(&format!(
                "blobs      {} fetched ({} received, {} of them over bulk connections, {} resumed), {} in progress, {} bad chunk groups refused\n",
                b.completed,
                human_bytes(b.received_bytes),
                human_bytes(b.bulk_bytes),
                human_bytes(b.resumed_bytes),
                b.active,
                b.bad_groups
            ));
        }
        if b.queued > 0 || b.given_up > 0 {
            t.push_str(&format!(
                "content    {} not here yet, queued ({} waiting to be tried again); {} that no peer gave, tried again later\n",
                plural(b.queued, "blob", "blobs"),
                b.waiting,
                b.given_up
            ));
        }
        t
    })
}

/// `commons node peers`.
pub fn peers(ctx: &Ctx) -> Result<()> {
    let list = ctx.daemon()?.peers()?;
    ctx.emit(&list, || {
        if list.is_empty() {
            return "No peers connected; connect one with `commons node connect MULTIADDR`.\n"
                .into();
        }
        let width = list
            .iter()
            .map(|p| p.peer_id.len())
            .max()
            .unwrap_or(0)
            .max("PEER ID".len());
        let mut t = format!("{:width$}  SCORE   STRIKES  ADDRESSES\n", "PEER ID");
        for p in &list {
            let score = p
                .score
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
            let first = format!("{:width$}  {score:<6}  {:<7}", p.peer_id, p.strikes);
            let blank = format!("{:width$}  {:<6}  {:<7}", "", "", "");
            if p.addrs.is_empty() {
                t.push_str(&format!("{first}  (none known)\n"));
            }
            for (i, a) in p.addrs.iter().enumerate() {
                let head = if i == 0 { &first } else { &blank };
                t.push_str(&format!("{head}  {a}\n"));
            }
        }
        t
    })
}

#[derive(Serialize)]
struct Dialing<'a> {
    addr: &'a str,
    dialing: bool,
}

/// `commons node connect MULTIADDR`.
pub fn connect(ctx: &Ctx, addr: &str) -> Result<()> {
    ctx.daemon()?.connect_peer(addr.trim())?;
    let out = Dialing {
        addr: addr.trim(),
        dialing: true,
    };
    ctx.emit(&out, || {
        format!(
            "Dialling {}; `commons node peers` lists it once connected.",
            out.addr
        )
    })
}

#[derive(Serialize)]
struct Pulled {
    lineage: LineageId,
    name: Option<String>,
    #[serde(flatten)]
    report: SyncReport,
}

/// Notes on stderr what a report with nothing in it may mean.
fn explain_empty(report: &SyncReport, name: Option<&str>) {
    if report.peers == 0 {
        note("No peer was asked: none is connected. `commons node connect MULTIADDR` dials one.");
    } else if name.is_none() {
        note(
            "None of the peers has this commons yet; the node keeps asking as peers connect and at every catch-up round.",
        );
    }
}

/// `commons follow ID`.
pub fn follow(ctx: &Ctx, id: &str) -> Result<()> {
    let d = ctx.daemon()?;
    let lineage = lineage_arg(d, id)?;
    let report = d.follow(lineage)?;
    let name = name_of(d, &lineage)?;
    if !ctx.json {
        explain_empty(&report, name.as_deref());
    }
    let out = Pulled {
        lineage,
        name,
        report,
    };
    ctx.emit(&out, || {
        format!(
            "Following {}: {}.",
            label(out.name.as_deref(), &out.lineage),
            describe_report(&out.report)
        )
    })
}

#[derive(Serialize)]
struct Unfollowed {
    lineage: LineageId,
    name: Option<String>,
    followed: bool,
}

/// Adds `hint` to a not-found error that has none.
fn not_found_hint(hint: &'static str) -> impl Fn(CliError) -> CliError {
    move |e| {
        if e.kind == crate::error::ExitKind::NotFound && e.hint.is_none() {
            e.hint(hint)
        } else {
            e
        }
    }
}

/// `commons unfollow ID`.
pub fn unfollow(ctx: &Ctx, id: &str) -> Result<()> {
    let d = ctx.daemon()?;
    let lineage = lineage_arg(d, id)?;
    d.unfollow(lineage).map_err(not_found_hint(
        "`commons node status` lists what this node follows",
    ))?;
    let out = Unfollowed {
        lineage,
        name: name_of(d, &lineage)?,
        followed: false,
    };
    ctx.emit(&out, || {
        format!(
            "No longer following {}; what this home holds of it stays.",
            label(out.name.as_deref(), &out.lineage)
        )
    })
}

#[derive(Serialize)]
struct Forgot {
    lineage: LineageId,
    name: Option<String>,
    #[serde(flatten)]
    report: commons_rpc::ForgetReport,
}

/// `commons forget ID`.
pub fn forget(ctx: &Ctx, id: &str) -> Result<()> {
    let d = ctx.daemon()?;
    let lineage = lineage_arg(d, id)?;
    let name = name_of(d, &lineage)?;
    let report = d
        .forget(lineage)
        .map_err(not_found_hint("`commons list` shows what this home holds"))?;
    let out = Forgot {
        lineage,
        name,
        report,
    };
    ctx.emit(&out, || {
        let what = label(out.name.as_deref(), &out.lineage);
        let r = &out.report;
        if !r.still_followed.is_empty() {
            let others: Vec<String> = r
                .still_followed
                .iter()
                .map(|l| {
                    name_of(d, l)
                        .ok()
                        .flatten()
                        .map_or(l.short(), |n| format!("\"{n}\""))
                })
                .collect();
            let was = match r.unfollowed.is_empty() {
                true => format!("{what} was not followed"),
                false => format!("No longer following {what}"),
            };
            return format!(
                "{was}. Its records stay: its family is still followed through {}.\n\
                 Forget those too (`commons forget ID`) to drop the family's records.",
                others.join(", ")
            );
        }
        let mut t = format!(
            "Forgot {what}: {} of {} dropped, and {} ({}) no other commons names.",
            plural(r.records, "record", "records"),
            plural(r.dropped.len() as u64, "commons", "commons"),
            plural(r.blobs, "blob", "blobs"),
            human_bytes(r.blob_bytes)
        );
        if r.packed_kept > 0 {
            t.push_str(&format!(
                "\n{} packed with others stay until a repack.",
                plural(r.packed_kept, "small blob", "small blobs")
            ));
        }
        t.push_str("\nPeers keep their copies: `commons follow ID` fetches it back.");
        t
    })
}

/// `commons sync ID`.
pub fn sync(ctx: &Ctx, id: &str) -> Result<()> {
    let d = ctx.daemon()?;
    let lineage = lineage_arg(d, id)?;
    let report = d.sync(lineage)?;
    let name = name_of(d, &lineage)?;
    if !ctx.json {
        explain_empty(&report, name.as_deref());
    }
    let out = Pulled {
        lineage,
        name,
        report,
    };
    ctx.emit(&out, || {
        let mut line = describe_report(&out.report);
        // Sentence case for a line of its own.
        line.replace_range(..1, "P");
        format!("{line}.")
    })
}

/// `commons web [ID]`: the URL of the daemon's web explorer, or of a commons' page on it.
pub fn web(ctx: &Ctx, id: Option<&str>, open: bool) -> Result<()> {
    let d = ctx.daemon()?;
    let s = d.status()?;
    let Some(base) = s.web else {
        return Err(
            CliError::error("the daemon does not serve the web explorer").hint(
                "restart commonsd without --no-web (and without `web = \"off\"` in config.toml)",
            ),
        );
    };
    let url = match id {
        Some(id) => format!("{base}c/{}", resolve::lineage(d, id)?.lineage),
        None => base,
    };
    #[derive(Serialize)]
    struct Web<'a> {
        url: &'a str,
    }
    ctx.emit(&Web { url: &url }, || format!("{url}\n"))?;
    if open {
        let opener = if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        };
        let status = std::process::Command::new(opener)
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .status()
            .map_err(|e| {
                CliError::error(format!("cannot run `{opener}` to open the browser: {e}"))
                    .hint("open the URL above in a browser yourself")
            })?;
        if !status.success() {
            return Err(CliError::error(format!("`{opener}` failed ({status})"))
                .hint("open the URL above in a browser yourself"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(0), "0 bytes");
        assert_eq!(human_bytes(1), "1 byte");
        assert_eq!(human_bytes(1023), "1023 bytes");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert!(human_bytes(u64::MAX).ends_with("PiB"));
    }

    #[test]
    fn reports_read_well() {
        let r = SyncReport {
            peers: 2,
            new_records: 1,
            new_blobs: 3,
            blob_bytes: 2048,
        };
        assert_eq!(
            describe_report(&r),
            "pulled 1 new record and 3 blobs (2.0 KiB) from 2 peers"
        );
    }
}
