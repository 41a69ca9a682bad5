//! Showing what a change does to a file: a unified diff for text, size and hash for binary
//! content (or text too large to diff).

use commons_core::BlobHash;
use serde::Serialize;

/// Largest file shown as a text diff, in bytes; larger content is summarised like binary.
pub const MAX_DIFF_BYTES: usize = 1024 * 1024;

/// The content on one side of a change, as far as it is known locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    /// No file on this side (an addition or a deletion).
    Absent,
    /// The blob is not in this home.
    Missing(BlobHash),
    /// The blob's first bytes (up to [`MAX_DIFF_BYTES`] + 1) and its full length.
    Content {
        /// The hash.
        hash: BlobHash,
        /// Full length.
        len: u64,
        /// The bytes read (all of them if `len <= MAX_DIFF_BYTES`).
        bytes: Vec<u8>,
    },
}

/// Whether bytes read as text: UTF-8 without NUL, and not over the size limit.
fn as_text(side: &Side) -> Option<&str> {
    match side {
        Side::Absent => Some(""),
        Side::Missing(_) => None,
        Side::Content { len, bytes, .. } => {
            if *len > MAX_DIFF_BYTES as u64 || bytes.contains(&0) {
                return None;
            }
            std::str::from_utf8(bytes).ok()
        }
    }
}

/// What kind of change, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// A new file.
    Added,
    /// A changed file.
    Modified,
    /// A removed file.
    Deleted,
}

impl ChangeKind {
    /// From the before and after hashes.
    pub fn of(before: Option<BlobHash>, after: Option<BlobHash>) -> Self {
        match (before, after) {
            (None, _) => ChangeKind::Added,
            (Some(_), None) => ChangeKind::Deleted,
            (Some(_), Some(_)) => ChangeKind::Modified,
        }
    }
}

fn summary(side: &Side) -> String {
    match side {
        Side::Absent => "no file".into(),
        Side::Missing(h) => format!("{} (content not in this home)", h.short()),
        Side::Content { hash, len, .. } => format!("{len} bytes, blake3 {}", hash.short()),
    }
}

/// Renders one change of `path`: a unified diff (with `a/` and `b/` headers, `/dev/null` for an
/// absent side) when both sides are text, else one line with sizes and hashes.
pub fn render(path: &str, before: &Side, after: &Side) -> String {
    match (as_text(before), as_text(after)) {
        (Some(old), Some(new)) => {
            let a = if *before == Side::Absent {
                "/dev/null".to_owned()
            } else {
                format!("a/{path}")
            };
            let b = if *after == Side::Absent {
                "/dev/null".to_owned()
            } else {
                format!("b/{path}")
            };
            let diff = similar::TextDiff::from_lines(old, new);
            let body = diff
                .unified_diff()
                .context_radius(3)
                .header(&a, &b)
                .to_string();
            if body.is_empty() {
                format!("--- {a}\n+++ {b}\n(empty file)\n")
            } else {
                body
            }
        }
        _ => format!(
            "binary file {path}: {} -> {}\n",
            summary(before),
            summary(after)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(bytes: &[u8]) -> Side {
        Side::Content {
            hash: BlobHash::of(bytes),
            len: bytes.len() as u64,
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn text_changes_are_unified_diffs() {
        let d = render(
            "notes.txt",
            &content(b"one\ntwo\nthree\n"),
            &content(b"one\n2\nthree\n"),
        );
        assert!(d.starts_with("--- a/notes.txt\n+++ b/notes.txt\n@@"), "{d}");
        assert!(d.contains("-two\n+2\n"), "{d}");
    }

    #[test]
    fn additions_and_deletions_use_dev_null() {
        let d = render("new.txt", &Side::Absent, &content(b"hello\n"));
        assert!(d.starts_with("--- /dev/null\n+++ b/new.txt\n"), "{d}");
        assert!(d.contains("+hello"), "{d}");
        let d = render("old.txt", &content(b"bye\n"), &Side::Absent);
        assert!(d.contains("+++ /dev/null") && d.contains("-bye"), "{d}");
    }

    #[test]
    fn binary_and_missing_content_is_summarised() {
        let d = render("img.png", &Side::Absent, &content(&[0x89, b'P', 0, 1, 2]));
        assert!(
            d.starts_with("binary file img.png: no file -> 5 bytes, blake3 "),
            "{d}"
        );
        let h = BlobHash::of(b"x");
        let d = render("a", &Side::Missing(h), &content(b"x"));
        assert!(d.contains("content not in this home"), "{d}");
    }

    #[test]
    fn kinds() {
        let h = Some(BlobHash::of(b"x"));
        assert_eq!(ChangeKind::of(None, h), ChangeKind::Added);
        assert_eq!(ChangeKind::of(h, None), ChangeKind::Deleted);
        assert_eq!(ChangeKind::of(h, h), ChangeKind::Modified);
    }
}
