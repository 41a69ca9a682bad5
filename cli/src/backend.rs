//! Where commands get and put records and blobs.
//!
//! Commands talk to a [`Backend`], never to the store directly. When a `commonsd` runs with the
//! home, the backend is [`DaemonBackend`], a client of its control socket; otherwise it is
//! [`LocalBackend`], which opens the store in the home itself (no network). The commands are the
//! same either way; [`Ctx::backend`](crate::ctx::Ctx::backend) chooses.

use std::collections::BTreeMap;
use std::io::Read;

use commons_core::state::PatchStatus;
use commons_core::tree::Outcome;
use commons_core::{BlobHash, LineageId, Record, RecordId};
use commons_store::{LineageSummary, OpenError, Store};

use crate::daemon::DaemonBackend;
use crate::error::Result;

/// A blob opened for reading, with its length.
pub struct BlobReader {
    /// Length in bytes.
    pub len: u64,
    /// The content.
    pub reader: Box<dyn Read>,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("len", &self.len)
            .finish()
    }
}

/// Everything the commands need from a node.
pub trait Backend {
    /// Stores verified records; returns the ids that were new.
    fn put(&self, records: Vec<Record>) -> Result<Vec<RecordId>>;
    /// A record by id.
    fn get(&self, id: &RecordId) -> Result<Option<Record>>;
    /// Ids of records whose hex starts with `prefix`, at most `limit`.
    fn ids_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<RecordId>>;
    /// Every lineage with its summary.
    fn lineages(&self) -> Result<Vec<LineageSummary>>;
    /// One lineage's summary.
    fn lineage(&self, id: &LineageId) -> Result<Option<LineageSummary>>;
    /// All records of a family, charters first, parents before children.
    fn family_records(&self, family: &LineageId) -> Result<Vec<Record>>;
    /// Patches listed in a lineage, with status.
    fn patches(
        &self,
        lineage: &LineageId,
        status: Option<PatchStatus>,
    ) -> Result<Vec<(RecordId, PatchStatus)>>;
    /// One patch's status in a lineage; `None` if the lineage does not list it.
    fn status(&self, lineage: &LineageId, patch: &RecordId) -> Result<Option<PatchStatus>>;
    /// Accepted history in order of application.
    fn history(&self, lineage: &LineageId) -> Result<Vec<(RecordId, Outcome)>>;
    /// Validations of a patch, in any lineage.
    fn validations_of(&self, patch: &RecordId) -> Result<Vec<Record>>;
    /// The canonical tree of a lineage.
    fn tree(&self, lineage: &LineageId) -> Result<BTreeMap<String, BlobHash>>;
    /// Streams a blob in; returns its hash.
    fn put_blob(&self, reader: &mut dyn Read) -> Result<BlobHash>;
    /// Whether a blob is present.
    fn has_blob(&self, hash: &BlobHash) -> Result<bool>;
    /// Opens a blob; `None` if absent.
    fn open_blob(&self, hash: &BlobHash) -> Result<Option<BlobReader>>;
    /// Flushes and closes.
    fn close(&self) -> Result<()>;
    /// The daemon client, if this backend is one (for the commands only a node can answer).
    fn daemon(&self) -> Option<&DaemonBackend> {
        None
    }
}

/// The store in the home, opened by this process.
#[derive(Debug)]
pub struct LocalBackend {
    store: Store,
}

impl LocalBackend {
    /// Opens (creating if needed) the store in `dir`. The error is the store's, so that the
    /// caller can tell a store locked by a daemon from other failures.
    pub fn open(dir: &std::path::Path) -> Result<Self, OpenError> {
        Ok(Self {
            store: Store::open(dir)?,
        })
    }
}

fn blob_io(e: std::io::Error) -> crate::error::CliError {
    crate::error::CliError::error(format!("blob store: {e}"))
        .hint("check the disk and the home directory's permissions")
}

impl Backend for LocalBackend {
    fn put(&self, records: Vec<Record>) -> Result<Vec<RecordId>> {
        Ok(self.store.put(records)?)
    }

    fn get(&self, id: &RecordId) -> Result<Option<Record>> {
        Ok(self.store.get(id)?)
    }

    fn ids_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<RecordId>> {
        Ok(self.store.ids_with_prefix(prefix, limit)?)
    }

    fn lineages(&self) -> Result<Vec<LineageSummary>> {
        Ok(self.store.lineages()?)
    }

    fn lineage(&self, id: &LineageId) -> Result<Option<LineageSummary>> {
        Ok(self.store.lineage(id)?)
    }

    fn family_records(&self, family: &LineageId) -> Result<Vec<Record>> {
        Ok(self.store.family_records(family)?)
    }

    fn patches(
        &self,
        lineage: &LineageId,
        status: Option<PatchStatus>,
    ) -> Result<Vec<(RecordId, PatchStatus)>> {
        Ok(self.store.patches(lineage, status)?)
    }

    fn history(&self, lineage: &LineageId) -> Result<Vec<(RecordId, Outcome)>> {
        Ok(self.store.history(lineage)?)
    }

    fn status(&self, lineage: &LineageId, patch: &RecordId) -> Result<Option<PatchStatus>> {
        Ok(self.store.status(lineage, patch)?)
    }

    fn validations_of(&self, patch: &RecordId) -> Result<Vec<Record>> {
        Ok(self.store.validations_of(patch)?)
    }

    fn tree(&self, lineage: &LineageId) -> Result<BTreeMap<String, BlobHash>> {
        Ok(self.store.tree(lineage)?)
    }

    fn put_blob(&self, reader: &mut dyn Read) -> Result<BlobHash> {
        self.store.blobs().put_reader(reader).map_err(blob_io)
    }

    fn has_blob(&self, hash: &BlobHash) -> Result<bool> {
        Ok(self.store.blobs().contains(hash))
    }

    fn open_blob(&self, hash: &BlobHash) -> Result<Option<BlobReader>> {
        let Some(file) = self.store.blobs().open_blob(hash).map_err(blob_io)? else {
            return Ok(None);
        };
        Ok(Some(BlobReader {
            len: file.len(),
            reader: Box::new(file),
        }))
    }

    fn close(&self) -> Result<()> {
        // Records found damaged by this command are reported here, once: the store set them
        // aside and rebuilt its indexes without them.
        if self.store.stats().set_aside > 0
            && let Ok((_, list)) = self.store.damaged(commons_rpc::MAX_DAMAGED_LISTED)
        {
            for d in list.iter().filter(|d| !d.refetched) {
                crate::ctx::note(&format!(
                    "stored record {} did not decode ({}); it was set aside and the store re-indexed without it. Import a bundle that holds it, or start commonsd to fetch it from a peer",
                    d.id, d.reason
                ));
            }
        }
        Ok(self.store.close()?)
    }
}
