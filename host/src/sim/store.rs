//! The simulator's storage: committed state survives a crash, staged state does not.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::core::meta::ClusterMeta;
use crate::core::node::Persisted;
use crate::core::object::Object;
use crate::core::store::{CopyState, LocalStore, StoreError};
use crate::core::table::StorageKind;
use crate::core::types::TableName;

/// An in-memory [`LocalStore`] with the durability model of the real one.
#[derive(Debug, Default)]
pub struct MemoryStore {
    committed: BTreeMap<(TableName, Bytes), Object>,
    staged: BTreeMap<(TableName, Bytes), Object>,
    /// The batch being committed: lost in a crash, seen by loads meanwhile.
    sealed: BTreeMap<(TableName, Bytes), Object>,
    meta: Option<ClusterMeta>,
    staged_meta: Option<ClusterMeta>,
    sealed_meta: Option<ClusterMeta>,
    epoch: Option<u32>,
    modules: BTreeMap<String, Vec<u8>>,
}

impl MemoryStore {
    /// What a restarted node reads back (never a clean shutdown: the simulator crashes nodes).
    pub fn persisted(&self) -> Persisted {
        Persisted {
            epoch: self.epoch,
            clean_shutdown: false,
            meta: self.meta.clone(),
        }
    }

    /// Seals what is staged into the batch to commit next; false when nothing
    /// was staged.
    pub fn seal(&mut self) -> bool {
        if self.staged.is_empty() && self.staged_meta.is_none() {
            return false;
        }
        let staged = std::mem::take(&mut self.staged);
        self.sealed.extend(staged);
        if let Some(meta) = self.staged_meta.take() {
            self.sealed_meta = Some(meta);
        }
        true
    }

    /// Makes everything staged or sealed durable at once (a node's start).
    pub fn commit(&mut self) {
        self.seal();
        self.commit_sealed();
    }

    /// Makes the sealed batch durable; what was staged since stays staged.
    pub fn commit_sealed(&mut self) {
        let sealed = std::mem::take(&mut self.sealed);
        self.committed.extend(sealed);
        if let Some(meta) = self.sealed_meta.take() {
            self.meta = Some(meta);
        }
    }

    /// A crash: what was not committed is gone.
    pub fn lose_staged(&mut self) {
        self.staged.clear();
        self.staged_meta = None;
        self.sealed.clear();
        self.sealed_meta = None;
    }

    /// The current object for a key.
    pub fn object(&self, table: &TableName, key: &[u8]) -> Option<Object> {
        let slot = (table.clone(), Bytes::copy_from_slice(key));
        self.staged
            .get(&slot)
            .or_else(|| self.sealed.get(&slot))
            .or_else(|| self.committed.get(&slot))
            .cloned()
    }
}

impl LocalStore for MemoryStore {
    fn copy_state(&self, table: &TableName, key: &[u8]) -> CopyState {
        let slot = (table.clone(), Bytes::copy_from_slice(key));
        if self.staged.contains_key(&slot) {
            CopyState::Staged
        } else if self.sealed.contains_key(&slot) {
            CopyState::Sealed
        } else {
            CopyState::Durable
        }
    }

    fn load(
        &mut self,
        table: &TableName,
        _storage: StorageKind,
        key: &[u8],
    ) -> Result<Option<Object>, StoreError> {
        Ok(self.object(table, key))
    }

    fn stage(
        &mut self,
        table: &TableName,
        _storage: StorageKind,
        key: &[u8],
        object: &Object,
    ) -> Result<(), StoreError> {
        self.staged
            .insert((table.clone(), Bytes::copy_from_slice(key)), object.clone());
        Ok(())
    }

    fn stage_meta(&mut self, meta: &ClusterMeta) -> Result<(), StoreError> {
        self.staged_meta = Some(meta.clone());
        Ok(())
    }

    fn persist_epoch_now(&mut self, epoch: u32) -> Result<(), StoreError> {
        self.epoch = Some(epoch);
        Ok(())
    }

    fn stage_module(&mut self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.modules.insert(sha256.to_owned(), bytes.to_vec());
        Ok(())
    }

    fn load_module(&mut self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.modules.get(sha256).cloned())
    }
}
