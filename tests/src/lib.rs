//! Helpers for the end-to-end tests: a scene (one temporary directory), people in it (each with
//! their own home), running the real `commons` command line as a process, and reading trees.
//!
//! The binary is `commons-e2e`, built by this package from the same library as `commons` (see
//! `src/bin/commons-e2e.rs`), so Cargo builds it fresh before the tests under `cargo test` and
//! `cargo nextest` alike. Set `COMMONS_BIN=/path/to/commons` to test another build.

pub mod fixture;
pub mod forge;
pub mod net;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use commons_core::BlobHash;
use commons_core::tree::MemTree;
use serde_json::Value;

/// The binary under test: `$COMMONS_BIN` if set, else the one this package builds.
#[macro_export]
macro_rules! bin {
    () => {
        $crate::binary(env!("CARGO_BIN_EXE_commons-e2e"))
    };
}

/// `$COMMONS_BIN` if set, else `built`.
pub fn binary(built: &str) -> PathBuf {
    match std::env::var_os("COMMONS_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(built),
    }
}

/// What a run of `commons` did.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// A temporary directory holding homes, working copies and bundles.
#[derive(Debug)]
pub struct Scene {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Scene {
    /// A new, empty scene.
    pub fn new(bin: PathBuf) -> Scene {
        Scene {
            dir: tempfile::tempdir().expect("create a temporary directory"),
            bin,
        }
    }

    /// A path inside the scene.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A person with a fresh home and identity (`commons id init --name NAME`).
    pub fn person(&self, name: &str) -> Person {
        let p = self.stranger(name);
        p.ok(["id", "init", "--name", name]);
        p
    }

    /// A person using an existing home (one unpacked from a fixture, say).
    pub fn existing(&self, name: &str, home: &Path) -> Person {
        Person {
            name: name.to_owned(),
            home: home.to_owned(),
            bin: self.bin.clone(),
            cwd: self.dir.path().to_owned(),
        }
    }

    /// A person whose home has no identity yet.
    pub fn stranger(&self, name: &str) -> Person {
        Person {
            name: name.to_owned(),
            home: self.path(&format!("homes/{name}")),
            bin: self.bin.clone(),
            cwd: self.dir.path().to_owned(),
        }
    }

    /// `p` founds a commons named `name` from `files` (written under `src-NAME`), license
    /// CC-BY-SA-4.0; returns its id.
    pub fn found(&self, p: &Person, name: &str, files: &[(&str, &[u8])]) -> String {
        let dir = self.write_tree(&format!("src-{name}"), files);
        p.ok([
            "create",
            name,
            "--license",
            "CC-BY-SA-4.0",
            "--from",
            utf8(&dir),
        ])
        .trim()
        .to_owned()
    }

    /// Writes files (path → content) under `rel`.
    pub fn write_tree(&self, rel: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let root = self.path(rel);
        for (path, content) in files {
            let file = root.join(path);
            fs::create_dir_all(file.parent().expect("a file has a parent")).expect("mkdir");
            fs::write(&file, content).expect("write");
        }
        fs::create_dir_all(&root).expect("mkdir");
        root
    }
}

/// Someone using `commons` with their own home.
#[derive(Debug, Clone)]
pub struct Person {
    /// Their name.
    pub name: String,
    /// Their home directory.
    pub home: PathBuf,
    bin: PathBuf,
    cwd: PathBuf,
}

impl Person {
    /// Runs `commons --home HOME ARGS…` and returns what happened.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = Command::new(&self.bin)
            .arg("--home")
            .arg(&self.home)
            .args(args)
            .current_dir(&self.cwd)
            .env_remove("COMMONS_HOME")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        let shown: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        let out = self.run(args);
        assert_eq!(
            out.code,
            0,
            "{}: `commons {}` failed\nstdout:\n{}\nstderr:\n{}",
            self.name,
            shown.join(" "),
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// Runs a command with `--json` that must succeed; returns the parsed output.
    pub fn json<I, S>(&self, args: I) -> Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["--json".into()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        let text = self.ok(&all);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: output is not JSON ({e}):\n{text}", self.name))
    }

    /// Runs a command that must fail with `code`; returns its stderr.
    pub fn fails<I, S>(&self, code: i32, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.run(args);
        assert_eq!(
            out.code, code,
            "{}: expected exit code {code}\nstdout:\n{}\nstderr:\n{}",
            self.name, out.stdout, out.stderr
        );
        assert!(
            out.stderr.starts_with("error: "),
            "errors start with `error: `:\n{}",
            out.stderr
        );
        out.stderr
    }

    /// Their author key (did:key).
    pub fn did(&self) -> String {
        str_of(&self.json(["id", "show"])["author"])
    }
}

/// The state root `p`'s node shows for `lineage` (`show --json`), or `None` while it cannot
/// show it (not arrived yet, daemon busy): for waiting on convergence.
pub fn shown_root(p: &Person, lineage: &str) -> Option<String> {
    let out = p.run(["--json", "show", lineage]);
    if out.code != 0 {
        return None;
    }
    let v: Value = serde_json::from_str(&out.stdout).ok()?;
    v["root"].as_str().map(str::to_owned)
}

/// The patches `p`'s node lists in `lineage` (`patches --json`), patch id → status, or `None`
/// while it cannot list them: for waiting on convergence.
pub fn patch_statuses(p: &Person, lineage: &str) -> Option<BTreeMap<String, String>> {
    let out = p.run(["--json", "patches", lineage]);
    if out.code != 0 {
        return None;
    }
    let v: Value = serde_json::from_str(&out.stdout).ok()?;
    Some(
        v.as_array()?
            .iter()
            .map(|x| (str_of(&x["patch"]), str_of(&x["status"])))
            .collect(),
    )
}

/// A patch that adds one file, signed by the key of `seed`: what a test hands a node as
/// somebody else's work (the file's content is named by hash, not given).
pub fn one_file_patch(
    seed: u8,
    timestamp: u64,
    lineage: commons_core::LineageId,
    path: &str,
    content: &[u8],
    message: &str,
) -> commons_core::Record {
    commons_core::Record::sign(
        &commons_core::SecretKey::from_seed([seed; 32]),
        timestamp,
        commons_core::Body::Patch(commons_core::Patch {
            lineage,
            parents: vec![],
            changes: vec![commons_core::Change {
                path: path.into(),
                before: None,
                after: Some(BlobHash::of(content)),
            }],
            message: message.into(),
        }),
    )
    .expect("a valid one-file patch")
}

/// Writes a bundle of `records` and `blobs` to `file` and imports it into `p`'s home (through
/// its daemon when it runs one).
pub fn import_bundle(
    p: &Person,
    file: &Path,
    records: &[commons_core::Record],
    blobs: &[&[u8]],
) -> Output {
    let out = std::fs::File::create(file).expect("create bundle");
    let mut w = commons_cli::bundle::BundleWriter::new(out, records.len() as u64).expect("bundle");
    for r in records {
        w.record(r).expect("record");
    }
    w.blobs(blobs.len() as u64).expect("blobs");
    for b in blobs {
        w.blob(&BlobHash::of(b), b.len() as u64, &mut &b[..])
            .expect("blob");
    }
    w.finish().expect("finish");
    p.run(["bundle", "import", utf8(file)])
}

/// A path as `&str`, for command-line arguments (test paths are UTF-8).
pub fn utf8(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// A JSON string value as a `String` (panics with the value otherwise).
pub fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
        .to_owned()
}

/// A JSON array of strings.
pub fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
        .iter()
        .map(str_of)
        .collect()
}

/// The files under `root` (path → content), skipping `.commons`.
pub fn read_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_owned(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let entry = entry.expect("entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            if entry.file_type().expect("file type").is_dir() {
                if name != ".commons" {
                    stack.push((entry.path(), rel));
                }
            } else {
                out.insert(rel, fs::read(entry.path()).expect("read"));
            }
        }
    }
    out
}

/// A tree given as (path, content) pairs.
pub fn tree(files: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .map(|(p, c)| ((*p).to_owned(), c.to_vec()))
        .collect()
}

/// The state root of a tree, computed here, independently of the store.
pub fn root_of(files: &BTreeMap<String, Vec<u8>>) -> String {
    let t = MemTree {
        files: files
            .iter()
            .map(|(p, c)| (p.clone(), BlobHash::of(c)))
            .collect(),
    };
    t.root().to_hex()
}
