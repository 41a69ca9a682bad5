//! The command line of `commonsd`.

use std::path::PathBuf;

use clap::Parser;

/// The Commons node: holds a signed, content-addressed store of commons and gossips their
/// patches and validations with other nodes.
#[derive(Debug, Parser)]
#[command(
    name = "commonsd",
    version,
    after_help = "Examples:\n  commonsd                                   # start with $COMMONS_HOME (created if needed)\n  commonsd --listen /ip4/127.0.0.1/tcp/0 --no-mdns\n  commonsd --bootstrap /ip4/192.0.2.7/tcp/4001/p2p/12D3KooW...\n  commonsd --web 127.0.0.1:8080              # the web explorer on another port (--no-web: none)\n\nThe log filter comes from RUST_LOG (e.g. RUST_LOG=commons_node=debug)."
)]
struct Args {
    /// The node's home (keys, store, config.toml). Default: $COMMONS_HOME, else the user's data directory.
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Address to listen on (repeatable). Default: TCP and QUIC on all interfaces.
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// Peer to connect to at start and to stay connected to (dialled again, with a backoff up to
    /// a minute, while it cannot be reached), with its /p2p/ id (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    bootstrap: Vec<String>,
    /// Do not discover peers on the local network with mDNS.
    #[arg(long)]
    no_mdns: bool,
    /// Do not use the Kademlia DHT: connect only to bootstrap peers, mDNS peers and peers
    /// given with `commons node connect` (a fixed topology).
    #[arg(long)]
    no_kademlia: bool,
    /// Neither serve nor use bulk blob transfers: every byte of every blob then travels inside
    /// libp2p's encrypted connections (slower for large blobs). Same as `bulk = false` in
    /// config.toml.
    #[arg(long)]
    no_bulk: bool,
    /// Serve the web explorer (read-only pages of everything this node holds) on ADDR
    /// (IP:PORT; port 0: chosen by the OS). Default: 127.0.0.1:7217, or `web` in config.toml.
    /// An address other than loopback shows it to everyone who can reach it.
    #[arg(long, value_name = "ADDR", conflicts_with = "no_web")]
    web: Option<String>,
    /// Do not serve the web explorer.
    #[arg(long)]
    no_web: bool,
}

/// Parses `argv` and runs the daemon; what `commonsd`'s `main` does.
pub fn main<I, T>(argv: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = match Args::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,libp2p_kad=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let opts = crate::Options {
        home: args.home,
        overrides: crate::config::Overrides {
            listen: args.listen,
            bootstrap: args.bootstrap,
            no_mdns: args.no_mdns,
            no_kademlia: args.no_kademlia,
            no_bulk: args.no_bulk,
            web: args.web,
            no_web: args.no_web,
        },
    };
    match runtime.block_on(crate::run(opts)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
