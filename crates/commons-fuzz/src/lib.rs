//! Fuzz targets for the decoders that read bytes from peers or from local processes, as plain
//! functions: `fuzz/` (cargo-fuzz, nightly) calls them with libFuzzer's inputs, and the test
//! `tests/replay.rs` replays the committed corpus through them on stable.
//!
//! Each target feeds the bytes to the production decoder and checks, with `assert!`, what the
//! decoder promises: it never panics on any input; what it accepts encodes back to a value that
//! decodes to the same (a round trip); and what it accepts respects the documented bounds
//! (lengths, counts). A failed assertion is a bug in the decoder or in its documentation.
//!
//! Targets ([`TARGETS`]): [`record`] (records and gossip messages), [`sync_frame`] (the sync
//! protocol's frames and codec), [`bundle`] (`commons import`), [`reconcile`] (reconciliation
//! messages and the state machine), [`control_frame`] (the control socket), [`config_toml`]
//! (`config.toml`), [`bulk`] (the bulk port's requests, answers and seals).
//!
//! To add a target: a module with `pub fn <name>(data: &[u8])`, an entry in [`TARGETS`], a
//! `fuzz/fuzz_targets/<name>.rs` with its `[[bin]]` in `fuzz/Cargo.toml`, and seeds in
//! `fuzz/corpus/<name>/` (written by `examples/seed.rs`).

mod bulk;
mod bundle;
mod config_toml;
mod control_frame;
mod reconcile;
mod record;
mod sync_frame;

pub use bulk::bulk;
pub use bundle::bundle;
pub use config_toml::config_toml;
pub use control_frame::control_frame;
pub use reconcile::reconcile;
pub use record::record;
pub use sync_frame::sync_frame;

/// A fuzz target: its name (the directory of its corpus) and its function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name. The replay test requires a non-empty `fuzz/corpus/<name>/` for each.
pub const TARGETS: &[Target] = &[
    ("record", record),
    ("sync_frame", sync_frame),
    ("bundle", bundle),
    ("reconcile", reconcile),
    ("control_frame", control_frame),
    ("config_toml", config_toml),
    ("bulk", bulk),
];
