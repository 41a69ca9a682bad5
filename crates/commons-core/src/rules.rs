//! The rules of each kind of record: what a value must satisfy besides parsing (text fields,
//! sorted lists, list lengths, paths, the threshold). `Record::sign` checks them before signing
//! and `Record::decode` after parsing, so both sides apply the same rules.

use crate::record::{
    Body, Charter, MAX_CHANGES, MAX_CHARTER_BYTES, MAX_FORK_HEADS, MAX_LICENSE_BYTES,
    MAX_MAINTAINERS, MAX_NAME_BYTES, MAX_PARENTS, MAX_PATCH_BYTES, MAX_PATH_BYTES,
    MAX_VALIDATION_BYTES, Patch, Validation,
};

/// A rule a record's value breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRecord {
    /// A text field is empty, too long or holds control characters.
    #[error("{field} {problem}")]
    Text {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// A list must be sorted without duplicates.
    #[error("{0} must be sorted and without duplicates")]
    NotSorted(&'static str),
    /// A list is too long.
    #[error("{field} has {len} entries, more than the limit of {max}")]
    TooMany {
        /// Which list.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The threshold is not between 1 and the number of maintainers.
    #[error(
        "threshold {threshold} must be between 1 and the number of maintainers ({maintainers})"
    )]
    Threshold {
        /// k.
        threshold: u16,
        /// n.
        maintainers: usize,
    },
    /// A path is not a clean relative path.
    #[error("path `{path}` {problem}")]
    Path {
        /// The path.
        path: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A change that changes nothing.
    #[error("change of `{0}` has the same before and after")]
    EmptyChange(String),
}

fn check_text(
    field: &'static str,
    s: &str,
    max: usize,
    allow_empty: bool,
    allow_newlines: bool,
) -> Result<(), InvalidRecord> {
    if !allow_empty && s.trim().is_empty() {
        return Err(InvalidRecord::Text {
            field,
            problem: "is empty",
        });
    }
    if s.len() > max {
        return Err(InvalidRecord::Text {
            field,
            problem: "is too long",
        });
    }
    if s.chars()
        .any(|c| c.is_control() && !(allow_newlines && (c == '\n' || c == '\t')))
    {
        return Err(InvalidRecord::Text {
            field,
            problem: "contains control characters",
        });
    }
    Ok(())
}

fn check_sorted<T: Ord>(field: &'static str, v: &[T], max: usize) -> Result<(), InvalidRecord> {
    if v.len() > max {
        return Err(InvalidRecord::TooMany {
            field,
            len: v.len(),
            max,
        });
    }
    if v.windows(2).any(|w| w[0] >= w[1]) {
        return Err(InvalidRecord::NotSorted(field));
    }
    Ok(())
}

/// Checks that `path` is a clean relative path: `/`-separated, no empty, `.` or `..` component,
/// no backslash or NUL, at most [`MAX_PATH_BYTES`] bytes.
pub fn check_path(path: &str) -> Result<(), InvalidRecord> {
    let bad = |problem| InvalidRecord::Path {
        path: path.to_owned(),
        problem,
    };
    if path.is_empty() {
        return Err(bad("is empty"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(bad("is too long"));
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return Err(bad("contains a control character or a backslash"));
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad(
            "must be relative, without empty, `.` or `..` components",
        ));
    }
    Ok(())
}

impl Charter {
    /// Checks the rules of a charter.
    pub fn check(&self) -> Result<(), InvalidRecord> {
        check_text("name", &self.name, MAX_NAME_BYTES, false, false)?;
        check_text("summary", &self.summary, MAX_CHARTER_BYTES / 2, true, true)?;
        check_text("license", &self.license, MAX_LICENSE_BYTES, false, false)?;
        check_sorted("maintainers", &self.maintainers, MAX_MAINTAINERS)?;
        if self.threshold == 0 || usize::from(self.threshold) > self.maintainers.len() {
            return Err(InvalidRecord::Threshold {
                threshold: self.threshold,
                maintainers: self.maintainers.len(),
            });
        }
        if let Some(fork) = &self.fork {
            check_sorted("fork heads", &fork.heads, MAX_FORK_HEADS)?;
            check_sorted("fork exclusions", &fork.excluded, MAX_CHANGES)?;
        }
        Ok(())
    }
}

impl Patch {
    /// Checks the rules of a patch.
    pub fn check(&self) -> Result<(), InvalidRecord> {
        check_text("message", &self.message, MAX_PATCH_BYTES / 2, false, true)?;
        check_sorted("parents", &self.parents, MAX_PARENTS)?;
        if self.changes.is_empty() {
            return Err(InvalidRecord::Text {
                field: "changes",
                problem: "is empty",
            });
        }
        if self.changes.len() > MAX_CHANGES {
            return Err(InvalidRecord::TooMany {
                field: "changes",
                len: self.changes.len(),
                max: MAX_CHANGES,
            });
        }
        if self.changes.windows(2).any(|w| w[0].path >= w[1].path) {
            return Err(InvalidRecord::NotSorted("changes"));
        }
        for c in &self.changes {
            check_path(&c.path)?;
            if c.before == c.after {
                return Err(InvalidRecord::EmptyChange(c.path.clone()));
            }
        }
        Ok(())
    }
}

impl Validation {
    /// Checks the rules of a validation.
    pub fn check(&self) -> Result<(), InvalidRecord> {
        check_text("note", &self.note, MAX_VALIDATION_BYTES / 2, true, true)
    }
}

impl Body {
    /// Checks the rules of the kind.
    pub fn check(&self) -> Result<(), InvalidRecord> {
        match self {
            Body::Charter(c) => c.check(),
            Body::Patch(p) => p.check(),
            Body::Validation(v) => v.check(),
        }
    }
}
