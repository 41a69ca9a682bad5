//! Target `config_toml`: [`Config::parse`], the daemon's reading of `config.toml`.

use std::path::Path;
use std::time::Duration;

use commons_node::config::{BlobPolicy, Config, Overrides};
use toml::{Table, Value};

/// Parses `data` (if it is UTF-8) as `config.toml`, without and with flags. What is accepted
/// respects the rules the daemon relies on, the flags override as documented, and the
/// configuration written back as TOML parses to the same configuration.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("config.toml");
    let plain = Config::parse(text, path, &Overrides::default());
    let flags = Overrides {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap: vec!["/ip4/127.0.0.1/tcp/1".into()],
        no_mdns: true,
        no_kademlia: true,
        no_bulk: true,
        web: None,
        no_web: true,
    };
    let flagged = Config::parse(text, path, &flags);
    let Ok(c) = plain else {
        assert!(flagged.is_err(), "flags make no invalid file valid");
        return;
    };
    check(&c);
    let f = flagged.expect("flags make no valid file invalid");
    check(&f);
    assert_eq!(f.listen, flags.listen, "--listen replaces the file's list");
    assert!(f.bootstrap.starts_with(&c.bootstrap) && f.bootstrap.ends_with(&flags.bootstrap));
    assert!(!f.mdns && !f.kademlia && !f.bulk);
    assert_eq!(f.web, None, "--no-web turns the explorer off");
    assert_eq!(
        (f.sync_interval, f.blobs, f.bulk_port, f.rates),
        (c.sync_interval, c.blobs, c.bulk_port, c.rates)
    );

    let written = to_toml(&c);
    let back = Config::parse(&written, path, &Overrides::default())
        .unwrap_or_else(|e| panic!("the configuration written back parses: {e:#}\n{written}"));
    assert_eq!(back, c, "round trip through TOML");
}

fn check(c: &Config) {
    assert!(c.sync_interval >= Duration::from_secs(1));
    assert_ne!(c.max_connections_per_ip, Some(0));
    for rate in [c.rates.peer, c.rates.author] {
        for v in [rate.burst, rate.per_sec] {
            assert!(
                v.is_finite() && v >= 1.0,
                "a rate is a number of at least 1"
            );
        }
    }
}

/// The configuration as the text of a `config.toml` that says everything explicitly.
fn to_toml(c: &Config) -> String {
    let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
    let mut t = Table::new();
    t.insert("listen".into(), strings(&c.listen));
    t.insert("bootstrap".into(), strings(&c.bootstrap));
    t.insert("mdns".into(), Value::Boolean(c.mdns));
    t.insert("kademlia".into(), Value::Boolean(c.kademlia));
    // Parsed from a TOML integer, so within i64.
    let secs = i64::try_from(c.sync_interval.as_secs()).expect("sync_interval_secs fits i64");
    t.insert("sync_interval_secs".into(), Value::Integer(secs));
    let blobs = match c.blobs {
        BlobPolicy::Eager => "eager",
        BlobPolicy::Lazy => "lazy",
    };
    t.insert("blobs".into(), Value::String(blobs.into()));
    t.insert("bulk".into(), Value::Boolean(c.bulk));
    t.insert("bulk_port".into(), Value::Integer(c.bulk_port.into()));
    let web = c.web.map_or("off".to_string(), |a| a.to_string());
    t.insert("web".into(), Value::String(web));
    if let Some(n) = c.max_connections_per_ip {
        t.insert("max_connections_per_ip".into(), Value::Integer(n.into()));
    }
    let mut gossip = Table::new();
    gossip.insert("peer_burst".into(), Value::Float(c.rates.peer.burst));
    gossip.insert("peer_per_sec".into(), Value::Float(c.rates.peer.per_sec));
    gossip.insert("author_burst".into(), Value::Float(c.rates.author.burst));
    gossip.insert(
        "author_per_sec".into(),
        Value::Float(c.rates.author.per_sec),
    );
    t.insert("gossip".into(), Value::Table(gossip));
    toml::to_string(&t).expect("a table of plain values serialises")
}
