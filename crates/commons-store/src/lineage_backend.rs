//! The incremental engine's view of one lineage's stored state: `commons_core::incremental`
//! reads and writes a lineage's tree, accumulator and application log through this
//! [`StateBackend`], over the batch's shared-tree nodes (`ptree.rs`) and overlay.
//!
//! The log's writes keep the summary's accepted and conflicted counts: a patch has one of those
//! statuses exactly while it is in the log, with that outcome.

use commons_core::incremental::StateBackend;
use commons_core::state::OrderKey;
use commons_core::tree::{Accumulator, Outcome, TreeRead};
use commons_core::{BlobHash, LineageId, Patch, RecordId};

use crate::StoreError;
use crate::keys::{self, LineageMeta, T};
use crate::overlay::Overlay;
use crate::ptree::Nodes;
use crate::state::{Ctx, bump, corrupt, status_of};

/// The incremental engine's view of one lineage's stored state.
#[derive(Debug)]
pub(crate) struct Backend<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
    lineage: LineageId,
}

impl<'c, 'a> Backend<'c, 'a> {
    /// The view of `lineage` through `ctx` (its summary must exist).
    pub(crate) fn new(ctx: &'c mut Ctx<'a>, lineage: LineageId) -> Result<Self, StoreError> {
        ctx.meta_mut(&lineage)?;
        Ok(Backend { ctx, lineage })
    }

    fn meta(&self) -> Result<&LineageMeta, StoreError> {
        self.ctx
            .metas
            .get(&self.lineage)
            .ok_or_else(|| corrupt(T::Lineages, "summary vanished"))
    }

    /// The batch's nodes, the overlay they read through, and this lineage's summary (whose
    /// roots a write moves), borrowed apart.
    fn parts(&mut self) -> Result<(&mut Nodes, &Overlay<'a>, &mut LineageMeta), StoreError> {
        let Ctx {
            nodes, o, metas, ..
        } = &mut *self.ctx;
        let meta = metas
            .get_mut(&self.lineage)
            .ok_or_else(|| corrupt(T::Lineages, "summary vanished"))?;
        Ok((nodes, o, meta))
    }

    /// Counts a log entry's outcome leaving (`-1`) or entering (`+1`) the summary.
    fn count(meta: &mut LineageMeta, outcome: Outcome, add: bool) {
        let c = &mut meta.counts[usize::from(keys::status_byte(status_of(outcome)))];
        *c = if add { *c + 1 } else { c.saturating_sub(1) };
    }
}

fn outcome(v: &[u8]) -> Result<Outcome, StoreError> {
    keys::outcome_value(v).ok_or_else(|| corrupt(T::Nodes, "bad outcome in a log"))
}

impl TreeRead for Backend<'_, '_> {
    type Error = StoreError;

    fn get(&self, path: &str) -> Result<Option<BlobHash>, StoreError> {
        let root = self.meta()?.files_root;
        match self.ctx.nodes.get(&self.ctx.o, root, path.as_bytes())? {
            None => Ok(None),
            Some(v) => keys::blob_value(&v)
                .map(Some)
                .ok_or_else(|| corrupt(T::Nodes, format!("blob of `{path}`"))),
        }
    }

    fn under(&self, dir: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let prefix = format!("{dir}/").into_bytes();
        let root = self.meta()?.files_root;
        self.ctx
            .nodes
            .scan(
                &self.ctx.o,
                root,
                &prefix,
                &|k| k.starts_with(&prefix),
                limit,
            )?
            .into_iter()
            .map(|(k, _)| String::from_utf8(k).map_err(|_| corrupt(T::Nodes, "path not UTF-8")))
            .collect()
    }
}

impl StateBackend for Backend<'_, '_> {
    fn set(&mut self, path: &str, blob: Option<BlobHash>) -> Result<(), StoreError> {
        let (nodes, o, meta) = self.parts()?;
        let old = match blob {
            Some(h) => nodes.insert(
                o,
                &mut meta.files_root,
                path.as_bytes(),
                h.as_bytes().to_vec(),
            )?,
            None => nodes.remove(o, &mut meta.files_root, path.as_bytes())?,
        };
        match (old.is_some(), blob.is_some()) {
            (false, true) => meta.files += 1,
            (true, false) => meta.files = meta.files.saturating_sub(1),
            _ => {}
        }
        Ok(())
    }

    fn accumulator(&mut self) -> Result<&mut Accumulator, StoreError> {
        let lineage = self.lineage;
        self.ctx.accumulator(&lineage)
    }

    fn log_from(&self, key: &OrderKey) -> Result<Vec<(OrderKey, Outcome)>, StoreError> {
        let root = self.meta()?.log_root;
        let entries = self.ctx.nodes.scan(
            &self.ctx.o,
            root,
            &keys::log_key(key),
            &|_| true,
            usize::MAX,
        )?;
        bump(&self.ctx.counters.log_entries_read, entries.len() as u64);
        entries
            .into_iter()
            .map(|(k, v)| {
                let key =
                    keys::parse_log_key(&k).ok_or_else(|| corrupt(T::Nodes, "bad log key"))?;
                Ok((key, outcome(&v)?))
            })
            .collect()
    }

    fn log_get(&self, key: &OrderKey) -> Result<Option<Outcome>, StoreError> {
        let root = self.meta()?.log_root;
        match self.ctx.nodes.get(&self.ctx.o, root, &keys::log_key(key))? {
            None => Ok(None),
            Some(v) => outcome(&v).map(Some),
        }
    }

    fn log_put(&mut self, key: &OrderKey, new: Outcome) -> Result<(), StoreError> {
        let (nodes, o, meta) = self.parts()?;
        let old = nodes.insert(
            o,
            &mut meta.log_root,
            &keys::log_key(key),
            vec![new.to_byte()],
        )?;
        if let Some(old) = old {
            Self::count(meta, outcome(&old)?, false);
        }
        Self::count(meta, new, true);
        Ok(())
    }

    fn log_remove(&mut self, key: &OrderKey) -> Result<(), StoreError> {
        let (nodes, o, meta) = self.parts()?;
        if let Some(old) = nodes.remove(o, &mut meta.log_root, &keys::log_key(key))? {
            Self::count(meta, outcome(&old)?, false);
        }
        Ok(())
    }

    fn patch(&self, id: &RecordId) -> Result<Patch, StoreError> {
        bump(&self.ctx.counters.patch_loads, 1);
        // `patch` takes `&self`; read without filling the cache.
        if let Some(r) = self.ctx.records.get(id) {
            return r
                .as_patch()
                .cloned()
                .ok_or_else(|| corrupt(T::Nodes, format!("{id} in the log is not a patch")));
        }
        let bytes =
            self.ctx.o.get(T::Records, id.as_bytes())?.ok_or_else(|| {
                corrupt(T::Nodes, format!("the log names {id}, which is not stored"))
            })?;
        let record = self.ctx.decode_at(id, &bytes)?;
        record
            .as_patch()
            .cloned()
            .ok_or_else(|| corrupt(T::Nodes, format!("{id} in the log is not a patch")))
    }
}
