//! The core of Commons: ids, keys, records with their canonical encoding and signatures, and the
//! rules that turn a set of records into the state of a lineage.
//!
//! Architecture invariant: this crate does no I/O. Time comes in as arguments, and storage comes
//! in through the [`incremental::StateBackend`] trait, so everything here can be tested and
//! simulated deterministically.

pub mod chain;
pub mod id;
pub mod incremental;
pub mod keys;
pub mod reconcile;
pub mod record;
mod rules;
pub mod state;
pub mod time;
pub mod tree;

pub use id::{BlobHash, LineageId, ParseIdError, RecordId, StateRoot};
pub use keys::{KeyError, PublicKey, SecretKey};
pub use record::{
    Body, Change, Charter, DecodeError, ForkBase, InvalidRecord, Kind, Patch, Record, SignError,
    Validation, Verdict,
};
