//! The HTML pages: each renders one view of `view.rs` with maud, which escapes every splice.
//! Nothing here writes raw HTML from data; the only `PreEscaped` is the SVG that `family.rs`
//! builds (and escapes) itself. Pages work without JavaScript; `/static/app.js` only refreshes
//! `<main>` when the node's records change.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::content::{Content, Diff, DiffLine};
use crate::family::FamilyView;
use crate::files::FilesView;
use crate::view::{CommonsView, Entry, HistoryView, Home, PatchItem, PatchList, PatchView, Person};

/// The frame around every page.
pub fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — Commons" }
                link rel="stylesheet" href="/static/style.css";
                script src="/static/app.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "Commons" }
                    span.tag { "a node's view of the commons it holds" }
                }
                main { (body) }
                footer { "Read-only. Every name, message and file here was written by somebody on the network; this node shows it, it does not vouch for it." }
            }
        }
    }
}

fn time(ms: u64) -> Markup {
    html! { time datetime=(ms) { (commons_core::time::format_utc(ms)) } }
}

fn who(p: &Person) -> Markup {
    html! { a.person href=(format!("/person/{}", p.did)) title=(p.did) { (p.short) } }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn counts(c: &std::collections::BTreeMap<String, usize>) -> Markup {
    html! {
        span.counts {
            @for (status, n) in c {
                span class=(format!("status {status}")) { (status) " " (n) } " "
            }
        }
    }
}

/// The home page.
pub fn home(h: &Home) -> Markup {
    layout(
        "Home",
        html! {
            h1 { "Commons on this node" }
            @if h.commons.is_empty() {
                p { "This node holds no commons yet. Create one with " code { "commons create" } " or follow one with " code { "commons follow ID" } "." }
            }
            table.list #commons {
                thead { tr { th { "Commons" } th { "Patches" } th { "Files" } th { "Founded" } } }
                tbody {
                    @for c in &h.commons {
                        tr {
                            td {
                                a href=(format!("/c/{}", c.lineage.id)) { (c.lineage.name) }
                                @if c.followed { " " span.badge { "followed" } }
                                @if c.parent.is_some() { " " span.badge { "fork" } }
                                br; small { (c.summary) }
                            }
                            td { (counts(&c.counts)) }
                            td { (c.files) }
                            td { (time(c.created)) }
                        }
                    }
                }
            }
            h2 { "Recent activity" }
            @if h.activity.is_empty() { p { "Nothing has arrived since this node started." } }
            ul #activity {
                @for a in &h.activity {
                    li {
                        span class=(format!("kind {}", a.kind)) { (a.kind) } " "
                        @match (a.kind.as_str(), &a.patch) {
                            ("charter", _) => a href=(format!("/c/{}", a.id)) { (a.title) },
                            ("validation", Some(p)) => a href=(format!("/p/{p}")) { (a.title) },
                            _ => a href=(format!("/p/{}", a.id)) { (a.title) },
                        }
                        @if a.kind != "charter" {
                            " in " a href=(format!("/c/{}", a.lineage)) { (a.lineage_name.as_deref().unwrap_or("a commons not held here")) }
                        }
                        " by " (who(&a.author)) " · " (time(a.timestamp))
                    }
                }
            }
            h2 { "This node" }
            dl #node {
                dt { "Version" } dd { (h.node.version) }
                dt { "Peer id" } dd { code { (h.node.peer_id) } }
                dt { "Peers connected" } dd #peers { (h.node.peers) }
                dt { "Listening on" } dd { @for a in &h.node.listen { code { (a) } br; } }
                dt { "Records stored" } dd #records { (h.records) }
                dt { "Commons followed" } dd { (h.node.followed.len()) }
                @if h.node.bootstrap.0 > 0 {
                    dt { "Bootstrap peers" } dd { (h.node.bootstrap.1) " of " (h.node.bootstrap.0) " connected" }
                }
                dt { "Gossip refused" } dd { (h.node.refused) " messages since start; " (h.node.banned) " peers banned now" }
            }
        },
    )
}

fn commons_nav(id: &str, here: &str) -> Markup {
    let links = [
        ("", "Overview"),
        ("/patches", "Patches"),
        ("/history", "History"),
        ("/files", "Files"),
        ("/family", "Family"),
    ];
    html! {
        nav.tabs {
            @for (suffix, label) in links {
                a href=(format!("/c/{id}{suffix}")) class=[(suffix == here).then_some("here")] { (label) }
            }
        }
    }
}

fn entries(lineage: &str, list: &[Entry], total: usize, at: Option<&str>) -> Markup {
    let q = at.map(|a| format!("?at={a}")).unwrap_or_default();
    html! {
        table.list.files {
            tbody {
                @for e in list {
                    tr {
                        td {
                            a href=(format!("/c/{lineage}/files/{}{q}", url_path(&e.path))) {
                                (e.name) @if e.dir { "/" }
                            }
                        }
                        td { @if let Some(b) = &e.blob { code { (short(b)) } } }
                    }
                }
            }
        }
        @if total > list.len() { p { "Showing " (list.len()) " of " (total) " entries." } }
    }
}

/// Percent-encodes a tree path for a URL, keeping its slashes.
pub fn url_path(path: &str) -> String {
    path.split('/')
        .map(url_component)
        .collect::<Vec<_>>()
        .join("/")
}

/// Percent-encodes one URL path component or query value.
pub fn url_component(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A commons' page.
pub fn commons(c: &CommonsView) -> Markup {
    let id = &c.lineage.id;
    layout(
        &c.lineage.name,
        html! {
            h1 { (c.lineage.name) }
            (commons_nav(id, ""))
            p.summary { (c.summary) }
            dl.charter {
                dt { "Id" } dd { code { (id) } }
                dt { "License" } dd {
                    @if let Some(u) = &c.license_url { a href=(u) rel="noreferrer" { (c.license) } } @else { (c.license) }
                }
                dt { "Founded by" } dd { (who(&c.founder)) " on " (time(c.created)) }
                dt { "Maintainers" } dd {
                    @for m in &c.maintainers { (who(m)) " " }
                    "(" (c.threshold) " of " (c.maintainers.len()) " needed to accept)"
                }
                @if let Some(p) = &c.parent {
                    dt { "Forked from" } dd { a href=(format!("/c/{}", p.id)) { (p.name) } }
                }
                @if !c.forks.is_empty() {
                    dt { "Forks" } dd { @for f in &c.forks { a href=(format!("/c/{}", f.id)) { (f.name) } " " } }
                }
                dt { "State root" } dd { code #state-root { (c.state_root) } }
                dt { "Patches" } dd #counts { (counts(&c.counts)) }
                dt { "Files" } dd { (c.files) }
            }
            h2 { "Files" }
            (entries(id, &c.tree, c.tree_total, None))
        },
    )
}

fn patch_rows(items: &[PatchItem]) -> Markup {
    html! {
        table.list.patches {
            thead { tr { th { "Patch" } th { "Status" } th { "Author" } th { "Date" } } }
            tbody {
                @for p in items {
                    tr data-patch=(p.id) {
                        td { a href=(format!("/p/{}", p.id)) { (p.title) } br; small { code { (short(&p.id)) } } }
                        td { span class=(format!("status {}", p.status)) { (p.status) } }
                        td { (who(&p.author)) }
                        td { (time(p.timestamp)) }
                    }
                }
            }
        }
    }
}

fn pager(base: &str, page: usize, pages: usize) -> Markup {
    let sep = if base.contains('?') { '&' } else { '?' };
    html! {
        nav.pager {
            @if page > 1 { a rel="prev" href=(format!("{base}{sep}page={}", page - 1)) { "← newer" } " " }
            "page " (page) " of " (pages)
            @if page < pages { " " a rel="next" href=(format!("{base}{sep}page={}", page + 1)) { "older →" } }
        }
    }
}

/// A page of patches.
pub fn patches(l: &PatchList) -> Markup {
    let id = &l.lineage.id;
    let filter = |st: &str| match st {
        "all" => format!("/c/{id}/patches"),
        st => format!("/c/{id}/patches?status={st}"),
    };
    let current = l.status.as_deref().unwrap_or("all");
    let base = match &l.status {
        Some(st) => format!("/c/{id}/patches?status={st}"),
        None => format!("/c/{id}/patches"),
    };
    layout(
        &format!("Patches of {}", l.lineage.name),
        html! {
            h1 { (l.lineage.name) }
            (commons_nav(id, "/patches"))
            nav.filter {
                "Status: "
                @for st in ["all", "pending", "accepted", "rejected", "conflicted"] {
                    a href=(filter(st)) class=[(st == current).then_some("here")] { (st) } " "
                }
            }
            @if l.family.len() > 1 {
                nav.filter {
                    "Lineage: "
                    @for f in &l.family {
                        a href=(format!("/c/{}/patches", f.id)) class=[(f.id == *id).then_some("here")] { (f.name) } " "
                    }
                }
            }
            p { (l.total) " patches" }
            (patch_rows(&l.items))
            (pager(&base, l.page, l.pages))
        },
    )
}

/// A page of the accepted history.
pub fn history(h: &HistoryView) -> Markup {
    let id = &h.lineage.id;
    layout(
        &format!("History of {}", h.lineage.name),
        html! {
            h1 { (h.lineage.name) }
            (commons_nav(id, "/history"))
            p { (h.total) " accepted patches, newest first" }
            table.list.history {
                tbody {
                    @for i in &h.items {
                        tr {
                            td { (i.n) }
                            td { a href=(format!("/p/{}", i.patch.id)) { (i.patch.title) } }
                            td { span class=(format!("status {}", i.outcome)) { (i.outcome) } }
                            td { a.at href=(format!("/c/{id}/files?at={}", i.patch.id)) { "files" } }
                            td { (who(&i.patch.author)) }
                            td { (time(i.patch.timestamp)) }
                        }
                    }
                }
            }
            (pager(&format!("/c/{id}/history"), h.page, h.pages))
        },
    )
}

/// One row of a side-by-side diff: the old line and the new line (either may be absent).
type SplitRow<'a> = (Option<&'a DiffLine>, Option<&'a DiffLine>);

/// Pairs a unified diff's lines for two columns: context on both sides, each run of removed
/// lines beside the run of added lines that follows it. `None` is an elision.
fn split_rows(lines: &[Option<DiffLine>]) -> Vec<Option<SplitRow<'_>>> {
    let mut rows = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        match &lines[i] {
            None => {
                rows.push(None);
                i += 1;
            }
            Some(l) if l.tag == ' ' => {
                rows.push(Some((Some(l), Some(l))));
                i += 1;
            }
            Some(_) => {
                let mut dels = Vec::new();
                let mut adds = Vec::new();
                while let Some(Some(l)) = lines.get(i) {
                    match l.tag {
                        '-' if adds.is_empty() => dels.push(l),
                        '+' => adds.push(l),
                        _ => break,
                    }
                    i += 1;
                }
                for k in 0..dels.len().max(adds.len()) {
                    rows.push(Some((dels.get(k).copied(), adds.get(k).copied())));
                }
            }
        }
    }
    rows
}

fn diff_split(d: &Diff) -> Markup {
    let Diff::Lines(lines) = d else {
        return diff(d);
    };
    let cell = |l: Option<&DiffLine>, n: Option<usize>, side: &'static str| {
        let class = match l.map(|l| l.tag) {
            Some('-') => "del",
            Some('+') => "add",
            Some(_) => "ctx",
            None => "none",
        };
        html! {
            td.n class=(class) { @if let Some(n) = n { (n) } }
            td class=(format!("{class} {side}")) { @if let Some(l) = l { pre { (l.text) } } }
        }
    };
    html! {
        table.diff.split {
            tbody {
                @for row in split_rows(lines) {
                    @match row {
                        None => tr.gap { td {} td { "⋯" } td {} td { "⋯" } },
                        Some((old, new)) => tr {
                            (cell(old, old.and_then(|l| l.old), "old"))
                            (cell(new, new.and_then(|l| l.new), "new"))
                        },
                    }
                }
            }
        }
    }
}

fn diff(d: &Diff) -> Markup {
    match d {
        Diff::Skipped(why) => html! { p.skipped { "Not compared: " (why) } },
        Diff::Lines(lines) => html! {
            table.diff {
                tbody {
                    @for l in lines {
                        @match l {
                            None => tr.gap { td {} td {} td { "⋯" } },
                            Some(l) => tr class=(match l.tag { '+' => "add", '-' => "del", _ => "ctx" }) {
                                td.n { @if let Some(n) = l.old { (n) } }
                                td.n { @if let Some(n) = l.new { (n) } }
                                td { pre { (l.tag) (l.text) } }
                            },
                        }
                    }
                }
            }
        },
    }
}

/// A patch's page, its diffs unified or side by side.
pub fn patch(p: &PatchView, split: bool) -> Markup {
    let title = p.message.lines().next().unwrap_or("(no message)");
    layout(
        title,
        html! {
            h1 { (title) }
            p { "Proposed to " a href=(format!("/c/{}", p.lineage.id)) { (p.lineage.name) } " by " (who(&p.author)) " on " (time(p.timestamp)) }
            pre.message { (p.message) }
            dl {
                dt { "Id" } dd { code { (p.id) } }
                dt { "Parents" } dd { @if p.parents.is_empty() { "none" } @for x in &p.parents { a href=(format!("/p/{x}")) { code { (short(x)) } } " " } }
            }
            h2 { "Status in each lineage" }
            table.list #statuses {
                tbody {
                    @for s in &p.statuses {
                        tr {
                            td { a href=(format!("/c/{}", s.lineage.id)) { (s.lineage.name) } }
                            td { @match &s.status { Some(st) => span class=(format!("status {st}")) { (st) }, None => "not listed" } }
                        }
                    }
                }
            }
            @if !p.taken_by_forks.is_empty() {
                p.notice #taken {
                    (p.lineage.name) " rejected this patch; "
                    @for f in &p.taken_by_forks { a href=(format!("/c/{}", f.id)) { (f.name) } " " }
                    "took it."
                }
            }
            h2 { "Validations" }
            @if p.validations.is_empty() { p { "None yet." } }
            ul #validations {
                @for v in &p.validations {
                    li {
                        span class=(format!("verdict {}", v.verdict)) { (v.verdict) } " by " (who(&v.by))
                        @if !v.maintainer { " (not a maintainer there)" }
                        " in " a href=(format!("/c/{}", v.lineage.id)) { (v.lineage.name) }
                        " on " (time(v.timestamp))
                        @if !v.note.is_empty() { blockquote { (v.note) } }
                    }
                }
            }
            h2 { "Changes" }
            nav.filter #diff-view {
                "Diff: "
                a href=(format!("/p/{}", p.id)) class=[(!split).then_some("here")] { "unified" } " "
                a href=(format!("/p/{}?view=split", p.id)) class=[split.then_some("here")] { "side by side" }
            }
            @for c in &p.changes {
                section.change {
                    h3 { span class=(format!("kind {}", c.kind)) { (c.kind) } " " code { (c.path) } }
                    @if let Some(b) = &c.after { p { a href=(format!("/blob/{b}")) { "download" } } }
                    @if split { (diff_split(&c.diff)) } @else { (diff(&c.diff)) }
                }
            }
        },
    )
}

/// A directory or file of a tree.
pub fn files(f: &FilesView) -> Markup {
    let id = &f.lineage.id;
    let mut crumbs = vec![(String::new(), f.lineage.name.clone())];
    let mut acc = String::new();
    for part in f.path.split('/').filter(|p| !p.is_empty()) {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(part);
        crumbs.push((acc.clone(), part.to_string()));
    }
    let at = f.at.as_ref().map(|a| a.id.as_str());
    let q = at.map(|a| format!("?at={a}")).unwrap_or_default();
    layout(
        &format!("{} — {}", f.path, f.lineage.name),
        html! {
            h1 { (f.lineage.name) }
            (commons_nav(id, "/files"))
            @if let Some(a) = &f.at {
                p.notice #at {
                    "The files as they were after patch " a href=(format!("/p/{}", a.id)) { code { (short(&a.id)) } }
                    " (" (a.n) " of " (a.of) " in the accepted history). "
                    a href=(format!("/c/{id}/files/{}", url_path(&f.path))) { "See them now." }
                }
            }
            nav.crumbs {
                @for (path, name) in &crumbs {
                    a href=(format!("/c/{id}/files/{}{q}", url_path(path))) { (name) } " / "
                }
            }
            @match &f.file {
                None => (entries(id, &f.entries, f.total, at)),
                Some(file) => {
                    p { code { (file.blob) } " " a href=(format!("/blob/{}", file.blob)) { "download" } }
                    @match &file.content {
                        Content::Text { size, lines } => {
                            p { (size) " bytes, " (lines.len()) " lines" }
                            table.text {
                                tbody {
                                    @for (i, line) in lines.iter().enumerate() {
                                        tr { td.n { (i + 1) } td { pre { (line) } } }
                                    }
                                }
                            }
                        },
                        Content::Image { size, .. } => {
                            p { (size) " bytes" }
                            img.shown src=(format!("/blob/{}?view=image", file.blob)) alt=(f.path);
                        },
                        Content::Binary { size, reason } => p { (size) " bytes, not shown (" (reason) ")." },
                        Content::Missing => p { "This node has not fetched this file's content." },
                    }
                },
            }
        },
    )
}

/// A family's page with its fork graph.
pub fn family(f: &FamilyView, svg: &str) -> Markup {
    layout(
        &format!("Family of {}", f.lineage.name),
        html! {
            h1 { (f.lineage.name) }
            (commons_nav(&f.lineage.id, "/family"))
            p { (f.lineages.len()) " lineages. Each box is a lineage: its patches accepted, pending and rejected; a line joins a fork to the lineage it diverged from." }
            figure #family-graph { (PreEscaped(svg)) }
            table.list {
                thead { tr { th { "Lineage" } th { "Patches" } th { "Diverged at" } th { "Founded" } } }
                tbody {
                    @for n in &f.lineages {
                        tr {
                            td { a href=(format!("/c/{}", n.lineage.id)) { (n.lineage.name) } }
                            td { (counts(&n.counts)) }
                            td { @if n.parent.is_none() { "root" } @for h in &n.diverged_at { a href=(format!("/p/{h}")) { code { (short(h)) } } " " } }
                            td { (time(n.created)) }
                        }
                    }
                }
            }
        },
    )
}

/// An error page.
pub fn error(status: u16, message: &str) -> Markup {
    layout(
        "Error",
        html! {
            h1 { (status) }
            p.error { (message) }
            p { a href="/" { "Back to the home page" } }
        },
    )
}

/// A person's page.
pub fn person(p: &crate::person::PersonView) -> Markup {
    let list = |l: &[crate::view::LineageRef]| {
        html! {
            @if l.is_empty() { p { "None." } }
            ul { @for x in l { li { a href=(format!("/c/{}", x.id)) { (x.name) } } } }
        }
    };
    layout(
        &p.person.short,
        html! {
            h1 { "Person " (p.person.short) }
            p { code { (p.person.did) } }
            h2 { "Maintains" } (list(&p.maintains))
            h2 { "Founded" } (list(&p.founded))
            @if p.partial { p.notice { "Some commons hold more patches than this page looks at (2 000 each): what follows is a part." } }
            h2 { "Proposed" }
            (patch_rows(&p.proposed))
            h2 { "Validated" }
            @if p.validated.is_empty() { p { "None." } }
            ul #validated {
                @for v in &p.validated {
                    li {
                        span class=(format!("verdict {}", v.verdict)) { (v.verdict) } " "
                        a href=(format!("/p/{}", v.patch.id)) { (v.patch.title) }
                        " in " a href=(format!("/c/{}", v.lineage.id)) { (v.lineage.name) }
                        " on " (time(v.timestamp))
                        @if !v.note.is_empty() { blockquote { (v.note) } }
                    }
                }
            }
        },
    )
}
