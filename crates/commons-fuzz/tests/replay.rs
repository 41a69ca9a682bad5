//! Replays the committed corpus of every fuzz target on stable: each file of
//! `fuzz/corpus/<target>/` and of `fuzz/regressions/<target>/` (crashes found and fixed, if
//! any) goes through the target's function, which panics on a broken invariant. A target
//! whose corpus is missing or empty fails, so that the test cannot pass by reading nothing.

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of a directory, sorted; empty if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a corpus directory lists").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_and_regression_input_passes() {
    let mut replayed = 0;
    for (name, target) in commons_fuzz::TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{name}/ is missing or empty: run `cargo run -p commons-fuzz --example seed`"
        );
        let regressions = files(&fuzz_dir().join("regressions").join(name));
        for path in corpus.iter().chain(&regressions) {
            let data = std::fs::read(path).expect("a corpus file reads");
            let result = std::panic::catch_unwind(|| target(&data));
            assert!(result.is_ok(), "{name}: {} fails", path.display());
            replayed += 1;
        }
    }
    assert!(replayed >= commons_fuzz::TARGETS.len());
}

#[test]
fn every_target_has_a_fuzz_binary() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (name, _) in commons_fuzz::TARGETS {
        assert!(
            manifest.contains(&format!("path = \"fuzz_targets/{name}.rs\"")),
            "fuzz/Cargo.toml has no [[bin]] for {name}"
        );
        let source = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&source).expect("the fuzz target's source reads");
        assert!(
            text.contains(&format!("commons_fuzz::{name}(")),
            "{} does not call commons_fuzz::{name}",
            source.display()
        );
    }
}
