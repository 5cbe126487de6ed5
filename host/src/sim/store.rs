//! The simulator's storage: committed state survives a crash, staged state does not.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

use bytes::Bytes;

use crate::core::meta::ClusterMeta;
use crate::core::node::Persisted;
use crate::core::object::Object;
use crate::core::store::{first_keys_after, CopyState, LocalStore, StoreError};
use crate::core::table::StorageKind;
use crate::core::types::TableName;

/// Writes of one sealed batch.
#[derive(Debug, Default)]
struct Batch {
    /// `None`: removed.
    objects: BTreeMap<(TableName, Bytes), Option<Object>>,
    meta: Option<ClusterMeta>,
    local: BTreeMap<String, Vec<u8>>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.meta.is_none() && self.local.is_empty()
    }
}

/// An in-memory [`LocalStore`] with the durability model of the real one.
#[derive(Debug, Default)]
pub struct MemoryStore {
    committed: BTreeMap<(TableName, Bytes), Object>,
    staged: Batch,
    /// Batches handed to the commit, oldest first: lost in a crash, seen by
    /// loads meanwhile.
    sealed: VecDeque<(u64, Batch)>,
    meta: Option<ClusterMeta>,
    /// The node's own records, committed.
    local: BTreeMap<String, Vec<u8>>,
    epoch: Option<u64>,
    modules: BTreeMap<String, Vec<u8>>,
    /// Objects of `memory` tables: gone after any stop, clean or not.
    memory: BTreeMap<(TableName, Bytes), Object>,
    /// Whether the last stop was clean (a restart then keeps its epoch,
    /// unless a table keeps objects in memory).
    clean: bool,
}

/// The longest key the real store's LMDB takes (4 KiB pages, `longer-keys`).
pub const STORE_KEY_BYTES_MAX: usize = 1982;

impl MemoryStore {
    /// What a restarting node reads back; like the real store, any stop
    /// counts as unclean until a clean shutdown says otherwise.
    pub fn persisted(&mut self) -> Persisted {
        let clean_shutdown = std::mem::take(&mut self.clean);
        Persisted {
            epoch: self.epoch,
            clean_shutdown,
            meta: self.meta.clone(),
        }
    }

    /// A clean shutdown: everything pending is committed, objects in memory
    /// are gone, and the next start may keep the epoch if `keep_epoch`
    /// (as the runtime asks the node).
    pub fn shut_down_cleanly(&mut self, keep_epoch: bool) {
        while let Some((_, batch)) = self.sealed.pop_front() {
            self.apply(batch);
        }
        self.commit();
        self.memory.clear();
        self.clean = keep_epoch;
    }

    /// Whether anything is staged since the last seal.
    pub fn has_staged(&self) -> bool {
        !self.staged.is_empty()
    }

    /// Whether sealed batches wait for their commit.
    pub fn has_sealed(&self) -> bool {
        !self.sealed.is_empty()
    }

    /// The newest sealed batch's number.
    pub fn last_sealed(&self) -> Option<u64> {
        self.sealed.back().map(|(number, _)| *number)
    }

    /// Seals what is staged into batch `number`; false when nothing was staged.
    pub fn seal(&mut self, number: u64) -> bool {
        if self.staged.is_empty() {
            return false;
        }
        self.sealed
            .push_back((number, std::mem::take(&mut self.staged)));
        true
    }

    /// Makes everything staged durable at once (a node's start, nothing sealed).
    pub fn commit(&mut self) {
        let staged = std::mem::take(&mut self.staged);
        self.apply(staged);
    }

    /// Makes sealed batches up to `number` durable; later ones and what is
    /// staged stay pending.
    pub fn commit_through(&mut self, number: u64) {
        while self.sealed.front().is_some_and(|(n, _)| *n <= number) {
            if let Some((_, batch)) = self.sealed.pop_front() {
                self.apply(batch);
            }
        }
    }

    fn apply(&mut self, batch: Batch) {
        for (slot, object) in batch.objects {
            match object {
                Some(object) => self.committed.insert(slot, object),
                None => self.committed.remove(&slot),
            };
        }
        if let Some(meta) = batch.meta {
            self.meta = Some(meta);
        }
        self.local.extend(batch.local);
    }

    /// A failed commit: every batch not yet durable is gone; memory stays.
    pub fn lose_pending(&mut self) {
        self.staged = Batch::default();
        self.sealed.clear();
    }

    /// A crash: what was not committed is gone, and so is memory.
    pub fn lose_staged(&mut self) {
        self.staged = Batch::default();
        self.sealed.clear();
        self.memory.clear();
    }

    /// The current object for a key.
    pub fn object(&self, table: &TableName, key: &[u8]) -> Option<Object> {
        let slot = (table.clone(), Bytes::copy_from_slice(key));
        if let Some(object) = self.memory.get(&slot) {
            return Some(object.clone());
        }
        let pending = std::iter::once(&self.staged)
            .chain(self.sealed.iter().rev().map(|(_, batch)| batch))
            .find_map(|batch| batch.objects.get(&slot));
        match pending {
            Some(newest) => newest.clone(),
            None => self.committed.get(&slot).cloned(),
        }
    }
}

impl LocalStore for MemoryStore {
    fn copy_state(&self, table: &TableName, key: &[u8]) -> CopyState {
        let slot = (table.clone(), Bytes::copy_from_slice(key));
        if self.staged.objects.contains_key(&slot) {
            return CopyState::Staged;
        }
        self.sealed
            .iter()
            .rev()
            .find(|(_, batch)| batch.objects.contains_key(&slot))
            .map_or(CopyState::Durable, |(number, _)| CopyState::Sealed(*number))
    }

    fn load(
        &mut self,
        table: &TableName,
        storage: StorageKind,
        key: &[u8],
    ) -> Result<Option<Object>, StoreError> {
        if storage == StorageKind::Memory {
            let slot = (table.clone(), Bytes::copy_from_slice(key));
            return Ok(self.memory.get(&slot).cloned());
        }
        Ok(self.object(table, key))
    }

    fn stage(
        &mut self,
        table: &TableName,
        storage: StorageKind,
        key: &[u8],
        object: &Object,
    ) -> Result<(), StoreError> {
        if key.is_empty() || key.len() > STORE_KEY_BYTES_MAX {
            return Err(StoreError::Failed(format!(
                "a key of {} bytes cannot be stored",
                key.len()
            )));
        }
        if storage == StorageKind::Memory {
            self.memory
                .insert((table.clone(), Bytes::copy_from_slice(key)), object.clone());
            return Ok(());
        }
        self.staged.objects.insert(
            (table.clone(), Bytes::copy_from_slice(key)),
            Some(object.clone()),
        );
        Ok(())
    }

    fn remove(&mut self, table: &TableName, key: &[u8]) -> Result<(), StoreError> {
        let slot = (table.clone(), Bytes::copy_from_slice(key));
        self.memory.remove(&slot);
        self.staged.objects.insert(slot, None);
        Ok(())
    }

    fn stage_meta(&mut self, meta: &ClusterMeta) -> Result<(), StoreError> {
        self.staged.meta = Some(meta.clone());
        Ok(())
    }

    fn persist_epoch_now(&mut self, epoch: u64) -> Result<(), StoreError> {
        self.epoch = Some(epoch);
        Ok(())
    }

    fn stage_local(&mut self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.staged.local.insert(name.to_owned(), bytes.to_vec());
        Ok(())
    }

    fn load_local(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let pending = std::iter::once(&self.staged).chain(self.sealed.iter().rev().map(|(_, b)| b));
        for batch in pending {
            if let Some(bytes) = batch.local.get(name) {
                return Ok(Some(bytes.clone()));
            }
        }
        Ok(self.local.get(name).cloned())
    }

    fn stage_module(&mut self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.modules.insert(sha256.to_owned(), bytes.to_vec());
        Ok(())
    }

    fn load_module(&mut self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.modules.get(sha256).cloned())
    }

    fn key_count(&mut self, table: &TableName) -> Result<u64, StoreError> {
        let start = (table.clone(), Bytes::new());
        Ok([&self.committed, &self.memory]
            .into_iter()
            .map(|objects| {
                objects
                    .range(start.clone()..)
                    .take_while(|(slot, _)| &slot.0 == table)
                    .count() as u64
            })
            .sum())
    }

    fn keys_after(
        &mut self,
        table: &TableName,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Bytes>, StoreError> {
        let start = match after {
            Some(after) => Bound::Excluded((table.clone(), Bytes::copy_from_slice(after))),
            None => Bound::Included((table.clone(), Bytes::new())),
        };
        let in_range = |slot: &(TableName, Bytes)| &slot.0 == table;
        let held = [&self.committed, &self.memory]
            .into_iter()
            .flat_map(|objects| {
                objects
                    .range((start.clone(), Bound::Unbounded))
                    .take_while(|(slot, _)| in_range(slot))
                    .take(limit)
                    .map(|((_, key), _)| key.clone())
            });
        let pending = std::iter::once(&self.staged)
            .chain(self.sealed.iter().map(|(_, batch)| batch))
            .flat_map(|batch| {
                batch
                    .objects
                    .range((start.clone(), Bound::Unbounded))
                    .take_while(|(slot, _)| in_range(slot))
                    .take(limit)
                    .map(|((_, key), _)| key.clone())
            });
        let keys: Vec<Bytes> = held.chain(pending).collect();
        Ok(first_keys_after(keys, after, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::store::conformance::{self, Backend};

    impl Backend for MemoryStore {
        fn commit_staged(&mut self) {
            self.commit();
        }

        fn seal_staged(&mut self, number: u64) {
            self.seal(number);
        }
    }

    #[test]
    fn the_simulator_store_passes_the_local_store_conformance_suite() {
        let engines = [StorageKind::Lmdb, StorageKind::Memory, StorageKind::Blob];
        conformance::run(&engines, |_| MemoryStore::default());
    }
}
