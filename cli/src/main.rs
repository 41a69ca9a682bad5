//! The `commons` binary: everything is in the `commons_cli` library.

fn main() -> std::process::ExitCode {
    commons_cli::run(std::env::args_os())
}
