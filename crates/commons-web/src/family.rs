//! The fork tree of a family, drawn as inline SVG: one box per lineage (its name, its accepted,
//! pending and rejected patches), a line from each fork to the lineage it diverged from, laid
//! out as a tree (depth to the right, lineages in order of founding downwards). Names are
//! somebody's text: escaped here, as maud would (this is the one place markup is built by hand).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use commons_store::LineageSummary;

use crate::reader::Reader as Store;
use serde::Serialize;

use crate::view::{LineageRef, ViewError, counts, lineage_ref, summary};

const BOX_W: usize = 220;
const BOX_H: usize = 52;
const GAP_X: usize = 60;
const GAP_Y: usize = 18;
/// Characters of a name drawn in a box.
const NAME_CHARS: usize = 28;

/// Escapes text for an XML text node or attribute value.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// The SVG of a family.
pub fn svg(f: &FamilyView) -> String {
    let index: HashMap<&str, usize> = f
        .lineages
        .iter()
        .enumerate()
        .map(|(i, n)| (n.lineage.id.as_str(), i))
        .collect();
    // Depth: parents come before children (sorted by founding time), so one pass suffices;
    // a parent not held here makes its fork a root.
    let mut depth = vec![0usize; f.lineages.len()];
    for (i, n) in f.lineages.iter().enumerate() {
        if let Some(p) = n.parent.as_deref().and_then(|p| index.get(p))
            && *p < i
        {
            depth[i] = depth[*p] + 1;
        }
    }
    let pos = |i: usize| (10 + depth[i] * (BOX_W + GAP_X), 10 + i * (BOX_H + GAP_Y));
    let width = 20 + (depth.iter().max().copied().unwrap_or(0) + 1) * (BOX_W + GAP_X);
    let height = 20 + f.lineages.len() * (BOX_H + GAP_Y);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="family" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="fork tree">"#
    );
    for (i, n) in f.lineages.iter().enumerate() {
        if let Some(&p) = n.parent.as_deref().and_then(|p| index.get(p))
            && p < i
        {
            let (px, py) = pos(p);
            let (x, y) = pos(i);
            let _ = write!(
                s,
                r#"<path class="edge" d="M{} {} H{} V{} H{}" fill="none"/>"#,
                px + BOX_W / 2,
                py + BOX_H,
                px + BOX_W / 2,
                y + BOX_H / 2,
                x
            );
        }
    }
    for (i, n) in f.lineages.iter().enumerate() {
        let (x, y) = pos(i);
        let here = n.lineage.id == f.lineage.id;
        let name: String = n.lineage.name.chars().take(NAME_CHARS).collect();
        let count = |k: &str| n.counts.get(k).copied().unwrap_or(0);
        let _ = write!(
            s,
            r#"<a href="/c/{id}"><g class="lineage{cls}" data-lineage="{id}"><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6"/><text x="{tx}" y="{ty1}" class="name">{name}</text><text x="{tx}" y="{ty2}" class="counts">{a} accepted · {p} pending · {r} rejected</text></g></a>"#,
            id = xml_escape(&n.lineage.id),
            cls = if here { " here" } else { "" },
            tx = x + 10,
            ty1 = y + 21,
            ty2 = y + 40,
            name = xml_escape(&name),
            a = count("accepted"),
            p = count("pending"),
            r = count("rejected"),
        );
    }
    s.push_str("</svg>");
    s
}

/// One lineage of a family.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyNode {
    /// Which.
    pub lineage: LineageRef,
    /// Its parent in the fork tree.
    pub parent: Option<String>,
    /// Patches per status.
    pub counts: BTreeMap<String, usize>,
    /// The patches of the parent's history it took when it diverged (the fork base's heads).
    pub diverged_at: Vec<String>,
    /// When it was founded.
    pub created: u64,
}

/// A family: the fork tree.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyView {
    /// The lineage the page was asked for.
    pub lineage: LineageRef,
    /// Every lineage of its family held here, parents before children.
    pub lineages: Vec<FamilyNode>,
}

/// Reads a family.
pub fn family(store: &Store, id: &str) -> Result<FamilyView, ViewError> {
    let s = summary(store, id)?;
    let all = store.lineages()?;
    let mut members: Vec<&LineageSummary> = match s.family {
        Some(f) => all.iter().filter(|o| o.family == Some(f)).collect(),
        None => vec![&s],
    };
    members.sort_by_key(|m| (m.created, m.lineage));
    Ok(FamilyView {
        lineage: lineage_ref(&s),
        lineages: members
            .iter()
            .map(|m| FamilyNode {
                lineage: lineage_ref(m),
                parent: m.charter.fork.as_ref().map(|f| f.parent.to_string()),
                counts: counts(m),
                diverged_at: m
                    .charter
                    .fork
                    .as_ref()
                    .map(|f| f.heads.iter().map(|h| h.to_string()).collect())
                    .unwrap_or_default(),
                created: m.created,
            })
            .collect(),
    })
}
