//! `commonsd`, built inside the test package so that the end-to-end tests find it with
//! `CARGO_BIN_EXE_commonsd-e2e`. It is the same code as `node/src/main.rs`.

fn main() -> std::process::ExitCode {
    commons_node::cli::main(std::env::args_os())
}
