//! The daemon's configuration: `$COMMONS_HOME/config.toml`, overridden by flags.
//!
//! ```toml
//! listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
//! bootstrap = ["/dns4/boot.example.org/tcp/4001/p2p/12D3KooW…"]
//! mdns = true
//! kademlia = true
//! sync_interval_secs = 30
//! blobs = "eager"   # or "lazy": fetch a patch's files only when a checkout needs them
//! bulk = true       # large blobs over a separate TCP connection, sealed with AES-256-GCM
//! bulk_port = 0     # the bulk port (0: chosen by the OS)
//! bulk_clear = false  # true: bulk links in clear text (faster) with peers that also allow it
//! max_connections_per_ip = 16   # inbound connections from one IP address
//! web = "127.0.0.1:7217"   # the web explorer's address, or "off"; a non-loopback address
//!                          # shows everything this node holds to whoever can reach it
//!
//! [gossip]          # rate limits on gossip records (token buckets: a burst, then a rate)
//! peer_burst = 20000
//! peer_per_sec = 1000
//! author_burst = 10000
//! author_per_sec = 100
//! ```

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// File name of the configuration inside the home.
pub const CONFIG_FILE: &str = "config.toml";
/// Default listen addresses: TCP and QUIC on all interfaces, ports chosen by the OS.
pub const DEFAULT_LISTEN: [&str; 2] = ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"];
/// Where the web explorer listens unless told otherwise: loopback only.
pub const DEFAULT_WEB: &str = "127.0.0.1:7217";
/// How often followed commons are caught up with peers when nothing else triggers it.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<Vec<String>>,
    bootstrap: Option<Vec<String>>,
    mdns: Option<bool>,
    kademlia: Option<bool>,
    sync_interval_secs: Option<u64>,
    blobs: Option<BlobPolicy>,
    bulk: Option<bool>,
    bulk_port: Option<u16>,
    bulk_clear: Option<bool>,
    max_connections_per_ip: Option<u32>,
    gossip: Option<GossipLimits>,
    web: Option<String>,
}

/// `[gossip]` of the file.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct GossipLimits {
    peer_burst: Option<f64>,
    peer_per_sec: Option<f64>,
    author_burst: Option<f64>,
    author_per_sec: Option<f64>,
}

/// When the blobs (file contents) of patches are fetched from peers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobPolicy {
    /// When the patch arrives: a patch is stored only once its blobs are here.
    #[default]
    Eager,
    /// Patches are stored without their blobs; a checkout that needs them fetches them.
    Lazy,
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Multiaddrs to listen on.
    pub listen: Vec<String>,
    /// Bootstrap peers.
    pub bootstrap: Vec<String>,
    /// mDNS discovery on the local network.
    pub mdns: bool,
    /// The Kademlia DHT (peer discovery and providers of lineages).
    pub kademlia: bool,
    /// Periodic catch-up interval.
    pub sync_interval: Duration,
    /// When blobs are fetched.
    pub blobs: BlobPolicy,
    /// Whether large blobs are served and fetched over bulk connections
    /// (`commons_net::bulk`: a separate TCP connection sealed with a key agreed inside libp2p,
    /// every byte also checked against the blob's hash); false keeps every byte inside
    /// libp2p's connections.
    pub bulk: bool,
    /// Whether bulk connections may be in clear text: asked for when fetching, granted when
    /// serving. Only a pair of nodes that both set it uses clear text; an observer of the
    /// network then sees which blobs they exchange and their bytes.
    pub bulk_clear: bool,
    /// The bulk port (0: chosen by the OS), on the IP address of the first listen address.
    pub bulk_port: u16,
    /// Most inbound connections from one IP address (`None`: the network's default, or a
    /// loopback-friendly one in tests).
    pub max_connections_per_ip: Option<u32>,
    /// Rate limits on gossip records, per peer and per author.
    pub rates: commons_net::policy::Rates,
    /// Where the web explorer listens (`None`: not served).
    pub web: Option<std::net::SocketAddr>,
}

/// Flags that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen` (replaces the file's list when given).
    pub listen: Vec<String>,
    /// `--bootstrap` (added to the file's list).
    pub bootstrap: Vec<String>,
    /// `--no-mdns`.
    pub no_mdns: bool,
    /// `--no-kademlia`.
    pub no_kademlia: bool,
    /// `--no-bulk`.
    pub no_bulk: bool,
    /// `--web ADDR`.
    pub web: Option<String>,
    /// `--no-web`.
    pub no_web: bool,
}

impl Config {
    /// Reads `home/config.toml` if present and applies the flags.
    pub fn load(home: &Path, flags: &Overrides) -> anyhow::Result<Config> {
        let path = home.join(CONFIG_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path, flags),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Self::from_file(FileConfig::default(), &path, flags)
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Parses the text of a `config.toml` and applies the flags; `path` only names the file in
    /// error messages. No I/O: this is what [`Config::load`] does once it has read the file.
    pub fn parse(text: &str, path: &Path, flags: &Overrides) -> anyhow::Result<Config> {
        let file: FileConfig = toml::from_str(text)
            .with_context(|| format!("{} is not a valid configuration", path.display()))?;
        Self::from_file(file, path, flags)
    }

    fn from_file(file: FileConfig, path: &Path, flags: &Overrides) -> anyhow::Result<Config> {
        let listen = if flags.listen.is_empty() {
            file.listen
                .unwrap_or_else(|| DEFAULT_LISTEN.iter().map(|s| s.to_string()).collect())
        } else {
            flags.listen.clone()
        };
        let mut bootstrap = file.bootstrap.unwrap_or_default();
        bootstrap.extend(flags.bootstrap.iter().cloned());
        let sync_interval = match file.sync_interval_secs {
            Some(0) => bail!("{}: sync_interval_secs must be at least 1", path.display()),
            Some(s) => Duration::from_secs(s),
            None => DEFAULT_SYNC_INTERVAL,
        };
        Ok(Config {
            listen,
            bootstrap,
            mdns: file.mdns.unwrap_or(true) && !flags.no_mdns,
            kademlia: file.kademlia.unwrap_or(true) && !flags.no_kademlia,
            sync_interval,
            blobs: file.blobs.unwrap_or_default(),
            bulk: file.bulk.unwrap_or(true) && !flags.no_bulk,
            bulk_port: file.bulk_port.unwrap_or(0),
            bulk_clear: file.bulk_clear.unwrap_or(false),
            max_connections_per_ip: match file.max_connections_per_ip {
                Some(0) => bail!(
                    "{}: max_connections_per_ip must be at least 1",
                    path.display()
                ),
                other => other,
            },
            rates: rates(file.gossip.unwrap_or_default(), path)?,
            web: web(file.web, flags, path)?,
        })
    }
}

fn web(
    file: Option<String>,
    flags: &Overrides,
    path: &Path,
) -> anyhow::Result<Option<std::net::SocketAddr>> {
    if flags.no_web {
        return Ok(None);
    }
    let (text, from) = match (&flags.web, file) {
        (Some(w), _) => (w.clone(), "--web".to_string()),
        (None, Some(w)) => (w, format!("{}: web", path.display())),
        (None, None) => (
            DEFAULT_WEB.to_string(),
            "the default web address".to_string(),
        ),
    };
    if text == "off" {
        return Ok(None);
    }
    text.parse().map(Some).with_context(|| {
        format!("{from}: `{text}` is not an address (IP:PORT, e.g. 127.0.0.1:7217), or \"off\"")
    })
}

fn rates(g: GossipLimits, path: &Path) -> anyhow::Result<commons_net::policy::Rates> {
    use commons_net::policy::{Rate, Rates};
    let d = Rates::default();
    let check = |v: Option<f64>, default: f64, name: &str| -> anyhow::Result<f64> {
        match v {
            Some(x) if !(x.is_finite() && x >= 1.0) => bail!(
                "{}: gossip.{name} must be a number of at least 1",
                path.display()
            ),
            Some(x) => Ok(x),
            None => Ok(default),
        }
    };
    Ok(Rates {
        peer: Rate {
            burst: check(g.peer_burst, d.peer.burst, "peer_burst")?,
            per_sec: check(g.peer_per_sec, d.peer.per_sec, "peer_per_sec")?,
        },
        author: Rate {
            burst: check(g.author_burst, d.author.burst, "author_burst")?,
            per_sec: check(g.author_per_sec, d.author.per_sec, "author_per_sec")?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "listen = [\"/ip4/0.0.0.0/tcp/4001\"]\nbootstrap = [\"/ip4/1.2.3.4/tcp/1\"]\nsync_interval_secs = 5\n",
        )
        .unwrap();
        let c = Config::load(dir.path(), &Overrides::default()).unwrap();
        assert_eq!(c.listen, vec!["/ip4/0.0.0.0/tcp/4001"]);
        assert!(c.mdns);
        assert_eq!(c.sync_interval, Duration::from_secs(5));
        assert_eq!(c.blobs, BlobPolicy::Eager);
        assert!(c.bulk);
        std::fs::write(dir.path().join(CONFIG_FILE), "blobs = \"lazy\"\n").unwrap();
        let lazy = Config::load(dir.path(), &Overrides::default()).unwrap();
        assert_eq!(lazy.blobs, BlobPolicy::Lazy);
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "bulk = false\nbulk_port = 4002\n",
        )
        .unwrap();
        let plain = Config::load(dir.path(), &Overrides::default()).unwrap();
        assert!(!plain.bulk);
        assert_eq!(plain.bulk_port, 4002);
        std::fs::write(dir.path().join(CONFIG_FILE), "blobs = \"sometimes\"\n").unwrap();
        assert!(Config::load(dir.path(), &Overrides::default()).is_err());
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "listen = [\"/ip4/0.0.0.0/tcp/4001\"]\nbootstrap = [\"/ip4/1.2.3.4/tcp/1\"]\nsync_interval_secs = 5\n",
        )
        .unwrap();
        let flags = Overrides {
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            bootstrap: vec!["/ip4/5.6.7.8/tcp/2".into()],
            no_mdns: true,
            no_kademlia: true,
            no_bulk: true,
            web: None,
            no_web: false,
        };
        let c = Config::load(dir.path(), &flags).unwrap();
        assert_eq!(c.listen, vec!["/ip4/127.0.0.1/tcp/0"]);
        assert_eq!(c.bootstrap.len(), 2);
        assert!(!c.mdns);
        assert!(!c.kademlia);
        assert!(!c.bulk);
    }

    #[test]
    fn the_web_explorer_is_on_loopback_unless_told_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(dir.path(), &Overrides::default()).unwrap();
        assert_eq!(c.web, Some(DEFAULT_WEB.parse().unwrap()));
        assert!(c.web.unwrap().ip().is_loopback());
        std::fs::write(dir.path().join(CONFIG_FILE), "web = \"off\"\n").unwrap();
        assert_eq!(
            Config::load(dir.path(), &Overrides::default()).unwrap().web,
            None
        );
        std::fs::write(dir.path().join(CONFIG_FILE), "web = \"0.0.0.0:8080\"\n").unwrap();
        let open = Config::load(dir.path(), &Overrides::default()).unwrap();
        assert_eq!(open.web, Some("0.0.0.0:8080".parse().unwrap()));
        let flags = Overrides {
            web: Some("127.0.0.1:0".into()),
            ..Overrides::default()
        };
        let c = Config::load(dir.path(), &flags).unwrap();
        assert_eq!(c.web, Some("127.0.0.1:0".parse().unwrap()));
        let off = Overrides {
            no_web: true,
            ..Overrides::default()
        };
        assert_eq!(Config::load(dir.path(), &off).unwrap().web, None);
        std::fs::write(dir.path().join(CONFIG_FILE), "web = \"localhost\"\n").unwrap();
        let err = Config::load(dir.path(), &Overrides::default()).unwrap_err();
        assert!(format!("{err:#}").contains("IP:PORT"), "{err:#}");
    }

    #[test]
    fn unknown_keys_are_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "lisen = []\n").unwrap();
        let err = Config::load(dir.path(), &Overrides::default()).unwrap_err();
        assert!(format!("{err:#}").contains("config.toml"), "{err:#}");
    }
}
