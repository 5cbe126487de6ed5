//! What the core needs from a node's local storage, as a trait so the same
//! protocol runs over LMDB in production and over memory in the simulator.
//!
//! Writes are staged: the driver commits everything staged in one loop turn in
//! one transaction, and only then releases the answers that depend on it
//! ([`crate::core::node::Output::after_commit`]).

use bytes::Bytes;

use super::meta::ClusterMeta;
use super::object::Object;
use super::ring::partition_of;
use super::table::StorageKind;
use super::types::TableName;

/// A storage failure, reported to whoever asked (a 503 or 507, or a failed
/// replica ack).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The engine failed.
    #[error("storage: {0}")]
    Failed(String),
    /// The data dir's disk is too full for the write, which is refused before
    /// anything is staged (so a commit never fails for want of space the
    /// node knew it lacked); reads and smaller writes go on.
    #[error("insufficient storage: {0}")]
    Full(String),
}

impl StoreError {
    /// The reason alone, without the kind's prefix.
    pub fn reason(&self) -> &str {
        match self {
            StoreError::Failed(reason) | StoreError::Full(reason) => reason,
        }
    }
}

/// How far a key's local copy is on its way to disk, which decides how long
/// an answer built from it must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyState {
    /// Nothing pending for the key: what a load returns is durable.
    Durable,
    /// Its newest write is in sealed batch `n`, being committed.
    Sealed(u64),
    /// Its newest write is staged in the open batch.
    Staged,
}

/// One page of a scan of a table's local objects in one partition.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanPage {
    /// The objects of the partition among the keys examined, in ascending
    /// key order, staged writes included.
    pub objects: Vec<(Bytes, Object)>,
    /// Where the next page starts (pass it as `after`); `None` once every
    /// key of the table was examined.
    pub next: Option<Bytes>,
}

/// A node's local objects and state.
pub trait LocalStore {
    /// Where `key`'s newest local write stands (`Durable` when there is none pending).
    fn copy_state(&self, table: &TableName, key: &[u8]) -> CopyState;
    /// The object stored for `key`, staged writes included.
    fn load(
        &mut self,
        table: &TableName,
        storage: StorageKind,
        key: &[u8],
    ) -> Result<Option<Object>, StoreError>;
    /// Stages `object` for `key`; durable at the end of the turn (volatile for `memory`).
    fn stage(
        &mut self,
        table: &TableName,
        storage: StorageKind,
        key: &[u8],
        object: &Object,
    ) -> Result<(), StoreError>;
    /// Stages the removal of `key`'s object (in whichever engine holds it):
    /// hinted handoff removes a hint once its owner stored it durably.
    fn remove(&mut self, table: &TableName, key: &[u8]) -> Result<(), StoreError>;
    /// Stages the cluster metadata.
    fn stage_meta(&mut self, meta: &ClusterMeta) -> Result<(), StoreError>;
    /// Makes a new epoch durable before it is used to mint any dot.
    fn persist_epoch_now(&mut self, epoch: u64) -> Result<(), StoreError>;
    /// Stages a record of this node's own under `name` (never gossiped,
    /// durable with the batch it is staged in): a transfer's checkpoints,
    /// committed together with the objects they account for.
    fn stage_local(&mut self, name: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// A record [`LocalStore::stage_local`] staged, staged ones included.
    fn load_local(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stages a plugin module under its sha256.
    fn stage_module(&mut self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// A stored plugin module.
    fn load_module(&mut self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Up to `limit` keys of `table` this store holds in any engine, staged
    /// writes included, in ascending byte order, each after `after`. A key
    /// may be listed whose object is gone (a pending delete): loads decide.
    fn keys_after(
        &mut self,
        table: &TableName,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Bytes>, StoreError>;

    /// About how many keys `table` holds here: committed ones (writes not
    /// yet durable may be left out). A transfer's progress estimate.
    fn key_count(&mut self, table: &TableName) -> Result<u64, StoreError>;

    /// One page of the objects of `table` in partition `partition` (of
    /// `partitions`), examining at most `limit` keys of the table after
    /// `after`: the bounded unit of work with which hinted handoff,
    /// anti-entropy and transfers walk a partition between other work. Keys
    /// are not grouped by partition on disk, so a walk of one partition
    /// examines the whole table, `limit` keys per page.
    fn scan_partition(
        &mut self,
        table: &TableName,
        storage: StorageKind,
        (partition, partitions): (usize, usize),
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ScanPage, StoreError> {
        let limit = limit.max(1);
        let keys = self.keys_after(table, after, limit)?;
        let next = if keys.len() == limit {
            keys.last().cloned()
        } else {
            None
        };
        let mut objects = Vec::new();
        for key in keys {
            if partition_of(partitions, table, &key) != partition {
                continue;
            }
            if let Some(object) = self.load(table, storage, &key)? {
                objects.push((key, object));
            }
        }
        Ok(ScanPage { objects, next })
    }
}

/// The first `limit` distinct keys after `after` among `sources`, in
/// ascending order: what backends build [`LocalStore::keys_after`] from when
/// their keys live in several places. Each place must contribute at least its
/// own first `limit` keys after `after` (more is harmless).
pub fn first_keys_after(
    sources: impl IntoIterator<Item = Bytes>,
    after: Option<&[u8]>,
    limit: usize,
) -> Vec<Bytes> {
    let merged: std::collections::BTreeSet<Bytes> = sources
        .into_iter()
        .filter(|key| after.is_none_or(|after| key.as_ref() > after))
        .collect();
    merged.into_iter().take(limit).collect()
}

#[cfg(test)]
pub(crate) mod conformance;
