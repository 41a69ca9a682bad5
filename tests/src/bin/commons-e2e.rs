//! The `commons` command line, built inside the test package so that the end-to-end tests can
//! find it with `CARGO_BIN_EXE_commons-e2e`, fresh and with the same features as the tests,
//! under `cargo test` and `cargo nextest` alike. It is the same code as `cli/src/main.rs`.

fn main() -> std::process::ExitCode {
    commons_cli::run(std::env::args_os())
}
