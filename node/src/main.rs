//! `commonsd`: the Commons node. Everything is in the `commons_node` library.

fn main() -> std::process::ExitCode {
    commons_node::cli::main(std::env::args_os())
}
