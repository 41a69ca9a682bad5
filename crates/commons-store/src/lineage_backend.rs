//! The incremental engine's view of one lineage's stored state: `commons_core::incremental`
//! reads and writes a lineage's tree, accumulator and application log through this
//! [`StateBackend`], over the batch's overlay.

use commons_core::incremental::StateBackend;
use commons_core::state::OrderKey;
use commons_core::tree::{Accumulator, Outcome, TreeRead};
use commons_core::{BlobHash, LineageId, Patch, RecordId};

use crate::StoreError;
use crate::keys::{self, T};
use crate::state::{Ctx, bump, corrupt};

/// The incremental engine's view of one lineage's stored state.
#[derive(Debug)]
pub(crate) struct Backend<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
    lineage: LineageId,
}

impl<'c, 'a> Backend<'c, 'a> {
    /// The view of `lineage` through `ctx`.
    pub(crate) fn new(ctx: &'c mut Ctx<'a>, lineage: LineageId) -> Self {
        Backend { ctx, lineage }
    }
}

impl TreeRead for Backend<'_, '_> {
    type Error = StoreError;

    fn get(&self, path: &str) -> Result<Option<BlobHash>, StoreError> {
        match self
            .ctx
            .o
            .get(T::Files, &keys::file_key(&self.lineage, path))?
        {
            None => Ok(None),
            Some(v) => keys::blob_value(&v)
                .map(Some)
                .ok_or_else(|| corrupt(T::Files, format!("blob of `{path}`"))),
        }
    }

    fn under(&self, dir: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let prefix = keys::file_key(&self.lineage, &format!("{dir}/"));
        self.ctx
            .o
            .scan(T::Files, &prefix, &prefix, limit)?
            .into_iter()
            .map(|(k, _)| {
                // Every key of the scan starts with the 32-byte lineage prefix.
                String::from_utf8(k[32..].to_vec()).map_err(|_| corrupt(T::Files, "path not UTF-8"))
            })
            .collect()
    }
}

impl StateBackend for Backend<'_, '_> {
    fn set(&mut self, path: &str, blob: Option<BlobHash>) -> Result<(), StoreError> {
        let key = keys::file_key(&self.lineage, path);
        let existed = self.ctx.o.contains(T::Files, &key)?;
        match blob {
            Some(h) => self.ctx.o.insert(T::Files, key, h.as_bytes().to_vec()),
            None => self.ctx.o.remove(T::Files, key),
        }
        let meta = self.ctx.meta_mut(&self.lineage)?;
        match (existed, blob.is_some()) {
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
        let start = keys::log_key(&self.lineage, key);
        let entries = self
            .ctx
            .o
            .scan(T::Log, &start, self.lineage.as_bytes(), usize::MAX)?;
        bump(&self.ctx.counters.log_entries_read, entries.len() as u64);
        entries
            .into_iter()
            .map(|(k, v)| {
                let key = keys::parse_log_key(&k).ok_or_else(|| corrupt(T::Log, "bad key"))?;
                let o = keys::outcome_value(&v).ok_or_else(|| corrupt(T::Log, "bad outcome"))?;
                Ok((key, o))
            })
            .collect()
    }

    fn log_get(&self, key: &OrderKey) -> Result<Option<Outcome>, StoreError> {
        match self.ctx.o.get(T::Log, &keys::log_key(&self.lineage, key))? {
            None => Ok(None),
            Some(v) => keys::outcome_value(&v)
                .map(Some)
                .ok_or_else(|| corrupt(T::Log, "bad outcome")),
        }
    }

    fn log_put(&mut self, key: &OrderKey, outcome: Outcome) -> Result<(), StoreError> {
        self.ctx.o.insert(
            T::Log,
            keys::log_key(&self.lineage, key),
            vec![outcome.to_byte()],
        );
        Ok(())
    }

    fn log_remove(&mut self, key: &OrderKey) -> Result<(), StoreError> {
        self.ctx.o.remove(T::Log, keys::log_key(&self.lineage, key));
        Ok(())
    }

    fn patch(&self, id: &RecordId) -> Result<Patch, StoreError> {
        bump(&self.ctx.counters.patch_loads, 1);
        // `patch` takes `&self`; read without filling the cache.
        if let Some(r) = self.ctx.records.get(id) {
            return r
                .as_patch()
                .cloned()
                .ok_or_else(|| corrupt(T::Log, format!("{id} in the log is not a patch")));
        }
        let bytes =
            self.ctx.o.get(T::Records, id.as_bytes())?.ok_or_else(|| {
                corrupt(T::Log, format!("the log names {id}, which is not stored"))
            })?;
        let record = self.ctx.decode_at(id, &bytes)?;
        record
            .as_patch()
            .cloned()
            .ok_or_else(|| corrupt(T::Log, format!("{id} in the log is not a patch")))
    }
}
