//! Trees shaped like real repositories, for tests that must not pass only on toy inputs.
//!
//! [`RepoShape`] describes one; [`RepoShape::write`] writes it under a directory,
//! deterministically from its seed, and returns what it wrote. The shape follows what real
//! source and documentation repositories hold: a few files at the top (`README.md`,
//! `.gitignore`, a manifest), many directories of moderate depth and some very deep ones, names
//! from one character to a couple of hundred bytes (some of them not ASCII), a few empty files,
//! text files of varied length, and a few large binaries.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// A deterministic generator (xorshift64*), so a tree is the same on every run of a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// Random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let b = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
}

/// What a generated tree looks like.
#[derive(Debug, Clone)]
pub struct RepoShape {
    /// Number of files, large binaries included.
    pub files: usize,
    /// How many of them are large binaries.
    pub large_binaries: usize,
    /// Size of each large binary, in bytes.
    pub large_size: usize,
    /// Deepest directory nesting.
    pub max_depth: usize,
    /// The seed: the same seed writes the same tree.
    pub seed: u64,
}

impl RepoShape {
    /// A tree of `files` files like a real repository: nesting up to 12 levels, three binaries
    /// of 3 MiB.
    pub fn new(files: usize, seed: u64) -> RepoShape {
        RepoShape {
            files,
            large_binaries: 3.min(files),
            large_size: 3 << 20,
            max_depth: 12,
            seed,
        }
    }
}

/// A written tree: where it is, and each file's path (relative, `/`-separated) and length.
#[derive(Debug, Clone)]
pub struct RepoTree {
    /// Its root directory.
    pub root: PathBuf,
    /// path → length in bytes.
    pub files: BTreeMap<String, u64>,
}

impl RepoTree {
    /// Total bytes of all files.
    pub fn bytes(&self) -> u64 {
        self.files.values().sum()
    }
}

/// Syllables for names; some not ASCII, as names in real repositories sometimes are.
const SYLLABLES: [&str; 24] = [
    "core", "net", "doc", "src", "lib", "test", "util", "api", "io", "db", "ui", "cfg", "x", "a",
    "v2", "fr", "données", "résumé", "日本", "build", "gen", "old", "tmp", "img",
];
const EXTENSIONS: [&str; 10] = [
    ".rs", ".md", ".txt", ".toml", ".json", ".c", ".h", ".py", "", ".yml",
];

fn name(rng: &mut Rng, long: bool) -> String {
    let parts = if long {
        8 + rng.below(30)
    } else {
        1 + rng.below(3)
    };
    let mut s = String::new();
    for i in 0..parts {
        if i > 0 {
            s.push(['_', '-', '.'][rng.below(3)]);
        }
        s.push_str(SYLLABLES[rng.below(SYLLABLES.len())]);
    }
    // Names are at most 255 bytes on common file systems; stay well below.
    while s.len() > 200 {
        s.pop();
    }
    s
}

fn text(rng: &mut Rng, lines: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..lines {
        let words = rng.below(14);
        out.extend_from_slice(format!("{i:4} ").as_bytes());
        for _ in 0..words {
            out.extend_from_slice(SYLLABLES[rng.below(SYLLABLES.len())].as_bytes());
            out.push(b' ');
        }
        out.push(b'\n');
    }
    out
}

impl RepoShape {
    /// Writes the tree under `root` (created if needed) and returns what it wrote.
    pub fn write(&self, root: &Path) -> RepoTree {
        let mut rng = Rng::new(self.seed);
        fs::create_dir_all(root).expect("create the tree's root");
        // Directories first: shallow ones, and a few deep chains.
        let mut dirs: Vec<String> = vec![String::new()];
        let n_dirs = (self.files / 12).max(1);
        while dirs.len() < n_dirs {
            let parent = dirs[rng.below(dirs.len())].clone();
            let depth = parent.matches('/').count() + usize::from(!parent.is_empty());
            if depth >= self.max_depth {
                continue;
            }
            let long = rng.chance(3);
            let child = name(&mut rng, long);
            let dir = if parent.is_empty() {
                child
            } else {
                format!("{parent}/{child}")
            };
            if dir.len() < 700 && !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        // A chain as deep as allowed, with short names.
        let mut deep = String::from("deep");
        for i in 1..self.max_depth {
            deep.push_str(&format!("/{}", ["a", "b", "c"][i % 3]));
        }
        dirs.push(deep);

        let mut files = BTreeMap::new();
        let put = |files: &mut BTreeMap<String, u64>, path: String, bytes: &[u8]| {
            let file = root.join(&path);
            fs::create_dir_all(file.parent().expect("a file has a parent")).expect("mkdir");
            fs::write(&file, bytes).expect("write a fixture file");
            files.insert(path, bytes.len() as u64);
        };
        let top = ["README.md", ".gitignore", "Cargo.toml", "LICENSE"];
        for t in top
            .iter()
            .take(self.files.saturating_sub(self.large_binaries))
        {
            let lines = 5 + rng.below(60);
            put(&mut files, (*t).to_owned(), &text(&mut rng, lines));
        }
        let mut written = top.len().min(self.files);
        let mut large = vec![0u8; self.large_size];
        for i in 0..self.large_binaries {
            rng.fill(&mut large);
            put(&mut files, format!("assets/blob-{i}.bin"), &large);
            written += 1;
        }
        while written < self.files {
            let dir = &dirs[rng.below(dirs.len())];
            let file = format!(
                "{}{}",
                {
                    let long = rng.chance(2);
                    name(&mut rng, long)
                },
                EXTENSIONS[rng.below(EXTENSIONS.len())]
            );
            let path = if dir.is_empty() {
                file
            } else {
                format!("{dir}/{file}")
            };
            if files.contains_key(&path) || dirs.contains(&path) {
                continue;
            }
            let bytes = match rng.below(100) {
                0..=1 => Vec::new(),
                2..=4 => {
                    let mut b = vec![0u8; 1 + rng.below(64 << 10)];
                    rng.fill(&mut b);
                    b
                }
                5..=7 => {
                    let lines = 200 + rng.below(800);
                    text(&mut rng, lines)
                }
                _ => {
                    let lines = 1 + rng.below(40);
                    text(&mut rng, lines)
                }
            };
            put(&mut files, path, &bytes);
            written += 1;
        }
        RepoTree {
            root: root.to_owned(),
            files,
        }
    }
}

/// Runs `diff -r` between two directories, ignoring `.commons` (a working copy's metadata);
/// returns its output if they differ.
pub fn diff_trees(a: &Path, b: &Path) -> Option<String> {
    let out = std::process::Command::new("diff")
        .args(["-r", "-q", "-x", ".commons"])
        .arg(a)
        .arg(b)
        .output()
        .expect("run diff");
    if out.status.success() {
        None
    } else {
        Some(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_has_the_shape_it_promises() {
        let dir = tempfile::tempdir().unwrap();
        let shape = RepoShape {
            large_size: 1 << 20,
            ..RepoShape::new(2_000, 7)
        };
        let tree = shape.write(dir.path());
        assert_eq!(tree.files.len(), 2_000);
        let depth = |p: &str| p.matches('/').count();
        assert!(tree.files.keys().any(|p| depth(p) >= 11), "a deep path");
        assert!(
            tree.files.keys().filter(|p| depth(p) == 0).count() >= 4,
            "top-level files"
        );
        assert!(tree.files.keys().any(|p| p.len() > 150), "a long path");
        assert!(
            tree.files.keys().any(|p| !p.is_ascii()),
            "a name that is not ASCII"
        );
        assert!(
            tree.files.values().filter(|n| **n == 0).count() >= 5,
            "empty files"
        );
        assert_eq!(tree.files.values().filter(|n| **n == 1 << 20).count(), 3);
        // Deterministic: the same seed writes the same files.
        let again = tempfile::tempdir().unwrap();
        let tree2 = shape.write(again.path());
        assert_eq!(tree.files, tree2.files);
        assert_eq!(diff_trees(dir.path(), again.path()), None);
    }
}
