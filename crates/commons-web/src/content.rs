//! What a page shows of a blob: text (bounded), a raster image (shown inline from `/blob/…`),
//! or only its size and hash with a download. A file a browser would execute or interpret as a
//! document — HTML, SVG, JavaScript — is never given a type that renders it: it is text here,
//! and `application/octet-stream` as an attachment from `/blob/…` (`lib.rs`).

use std::io::Read;

use commons_core::BlobHash;
use commons_store::BlobStore;
use serde::Serialize;

/// Largest file shown as text.
pub const MAX_TEXT_BYTES: u64 = 1 << 20;
/// Largest side of a diff compared, in bytes.
pub const MAX_DIFF_BYTES: u64 = 256 << 10;
/// Most lines of one diff shown.
pub const MAX_DIFF_LINES: usize = 5_000;

/// What can be shown of a file.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Content {
    /// UTF-8 text, by lines.
    Text {
        /// Its bytes.
        size: u64,
        /// Its lines.
        lines: Vec<String>,
    },
    /// A PNG, JPEG, GIF or WebP image.
    Image {
        /// Its bytes.
        size: u64,
        /// Its media type, from its first bytes.
        media_type: String,
    },
    /// Anything else, or text too large to show.
    Binary {
        /// Its bytes.
        size: u64,
        /// Why it is not shown.
        reason: String,
    },
    /// Not fetched (yet) by this node.
    Missing,
}

/// The media type of a raster image a browser shows without running anything, by magic bytes.
pub fn image_type(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if head.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// Reads up to `max` bytes of a blob; `None` if absent, with its full length.
fn read_prefix(blobs: &BlobStore, hash: &BlobHash, max: u64) -> Option<(u64, Vec<u8>)> {
    let blob = blobs.open_blob(hash).ok()??;
    let len = blob.len();
    let mut bytes = Vec::new();
    blob.take(max).read_to_end(&mut bytes).ok()?;
    Some((len, bytes))
}

fn as_text(bytes: &[u8]) -> Option<&str> {
    if bytes.contains(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// What can be shown of the blob `hash`.
pub fn read(blobs: &BlobStore, hash: &BlobHash) -> Content {
    let Some((size, bytes)) = read_prefix(blobs, hash, MAX_TEXT_BYTES + 1) else {
        return Content::Missing;
    };
    if let Some(t) = image_type(&bytes) {
        return Content::Image {
            size,
            media_type: t.into(),
        };
    }
    if size > MAX_TEXT_BYTES {
        return Content::Binary {
            size,
            reason: format!("larger than {} KiB", MAX_TEXT_BYTES >> 10),
        };
    }
    match as_text(&bytes) {
        Some(t) => Content::Text {
            size,
            lines: t.lines().map(str::to_string).collect(),
        },
        None => Content::Binary {
            size,
            reason: "not UTF-8 text".into(),
        },
    }
}

/// One line of a unified diff.
#[derive(Debug, Clone, Serialize)]
pub struct DiffLine {
    /// ' ', '+' or '-'.
    pub tag: char,
    /// Its number in the old file.
    pub old: Option<usize>,
    /// Its number in the new file.
    pub new: Option<usize>,
    /// The text, without its newline.
    pub text: String,
}

/// What can be shown of a change.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum Diff {
    /// Hunks of a line diff (a `None` between two hunks is an elision).
    Lines(Vec<Option<DiffLine>>),
    /// Not compared, and why (binary, too large, not fetched).
    Skipped(String),
}

/// Lines of context around each change.
const CONTEXT: usize = 3;

/// The line diff of two blobs (either side absent for an added or removed file).
pub fn diff(blobs: &BlobStore, before: Option<&BlobHash>, after: Option<&BlobHash>) -> Diff {
    let side = |h: Option<&BlobHash>| -> Result<String, String> {
        let Some(h) = h else {
            return Ok(String::new());
        };
        let (size, bytes) = read_prefix(blobs, h, MAX_DIFF_BYTES + 1)
            .ok_or_else(|| "content not fetched by this node".to_string())?;
        if size > MAX_DIFF_BYTES {
            return Err(format!(
                "a side is larger than {} KiB",
                MAX_DIFF_BYTES >> 10
            ));
        }
        as_text(&bytes)
            .map(str::to_string)
            .ok_or_else(|| "binary content".to_string())
    };
    let (old, new) = match (side(before), side(after)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => return Diff::Skipped(e),
    };
    let text = similar::TextDiff::from_lines(&old, &new);
    let mut out = Vec::new();
    let mut shown = 0;
    for (i, group) in text.grouped_ops(CONTEXT).iter().enumerate() {
        if i > 0 {
            out.push(None);
        }
        for op in group {
            for change in text.iter_changes(op) {
                if shown >= MAX_DIFF_LINES {
                    out.push(None);
                    return Diff::Lines(out);
                }
                shown += 1;
                let tag = match change.tag() {
                    similar::ChangeTag::Equal => ' ',
                    similar::ChangeTag::Delete => '-',
                    similar::ChangeTag::Insert => '+',
                };
                out.push(Some(DiffLine {
                    tag,
                    old: change.old_index().map(|n| n + 1),
                    new: change.new_index().map(|n| n + 1),
                    text: change.value().trim_end_matches(['\n', '\r']).to_string(),
                }));
            }
        }
    }
    Diff::Lines(out)
}
