//! A node's local storage: one LMDB environment per node (a database per table
//! plus one for node state) and a volatile map for `memory` tables.
//!
//! Writes are staged in an overlay that reads see at once. The driver seals
//! the overlay into a numbered [`SealedBatch`] ([`NodeStore::seal`]) and hands
//! it to a [`BatchWriter`] on another thread, which writes every batch handed
//! over since its last commit in one LMDB transaction (group commit) while
//! the node stages more; loads see sealed batches until the driver reports
//! them durable ([`NodeStore::durable_through`]), and only then are the
//! answers that depend on them released.

mod blob;
mod lock;
mod space;
mod stored;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use heed::types::{Bytes as RawBytes, Str};
use heed::{Database, Env, EnvOpenOptions};

use crate::core::codec::{decode_disk, encode_disk};
use crate::core::meta::ClusterMeta;
use crate::core::node::Persisted;
use crate::core::object::Object;
use crate::core::store::{first_keys_after, CopyState, LocalStore, StoreError};
use crate::core::table::StorageKind;
use crate::core::types::{NodeId, TableName};
use blob::{BlobDir, BlobId};
use lock::DataDirLock;
pub use space::DiskGauge;
use space::DiskSpace;
use stored::StoredObject;

/// LMDB's map size: address space reserved, not disk used.
const MAP_BYTES: usize = 64 << 30;
/// Named databases: every table plus node state (TABLES_MAX is below it).
const DATABASES_MAX: u32 = 2_048;

const STATE_NODE_ID: &str = "node_id";
const STATE_EPOCH: &str = "epoch";
const STATE_CLEAN: &str = "clean_shutdown";
/// Cluster metadata in the current layout. Earlier builds wrote their
/// layouts under [`STATE_META_V4`], [`STATE_META_V3`] and
/// [`STATE_META_LEGACY`]; a new key keeps the layouts from ever being
/// mistaken for each other (postcard does not describe itself).
const STATE_META: &str = "meta5";
/// The layout before rings had `next` (partition transfer).
const STATE_META_V4: &str = "meta4";
/// The layout before tables had `sloppy`.
const STATE_META_V3: &str = "meta3";
const STATE_META_LEGACY: &str = "meta";

type Objects = Database<RawBytes, RawBytes>;

/// Where a node's own record `name` lives in the state database (a prefix
/// no other state key has).
fn local_state_key(name: &str) -> String {
    format!("local/{name}")
}

/// Writes not yet durable: the overlay being staged, or a sealed batch.
#[derive(Default)]
pub struct SealedBatch {
    /// Records to write (`None`: to delete, when an object moved to memory).
    records: HashMap<(TableName, Bytes), Option<Vec<u8>>>,
    /// The databases of the tables `records` names.
    dbs: HashMap<TableName, Objects>,
    blobs: HashMap<BlobId, Bytes>,
    modules: HashMap<String, Vec<u8>>,
    meta: Option<Vec<u8>>,
    /// The node's own records ([`LocalStore::stage_local`]), by name.
    local: HashMap<String, Vec<u8>>,
    /// What writing it may take on disk ([`DiskSpace::cost`] of each write).
    disk_bytes: u64,
    /// Objects this batch moves out of memory (a `storage: plugin` table
    /// choosing LMDB or blob): put back if the batch is lost.
    evicted: HashMap<(TableName, Bytes), Object>,
}

impl SealedBatch {
    fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.blobs.is_empty()
            && self.modules.is_empty()
            && self.meta.is_none()
            && self.local.is_empty()
    }

    /// How many object records it writes.
    pub fn records(&self) -> usize {
        self.records.len()
    }

    fn record(&self, slot: &(TableName, Bytes)) -> Option<&Option<Vec<u8>>> {
        self.records.get(slot)
    }
}

/// Writes sealed batches durably. It holds no overlay, so it can run on a
/// thread of its own while the node stages the next batch; it never opens
/// or creates a database (LMDB allows that in one transaction at a time, and
/// the node's thread does it).
#[derive(Clone)]
pub struct BatchWriter {
    env: Env,
    state: Database<Str, RawBytes>,
    modules: Database<Str, RawBytes>,
    blobs: BlobDir,
}

impl BatchWriter {
    /// Writes `batches` (oldest first; a later batch's record for a key wins)
    /// in one transaction and syncs it: blob files first (synced), then the
    /// records that reference them, in key order.
    pub fn write<B: std::ops::Deref<Target = SealedBatch>>(
        &self,
        batches: &[B],
    ) -> Result<(), StoreError> {
        let mut blobs = batches.iter().flat_map(|b| b.blobs.iter()).peekable();
        if blobs.peek().is_some() {
            for (id, bytes) in blobs {
                self.blobs.write(id, bytes)?;
            }
            self.blobs.sync()?;
        }
        let mut records = HashMap::new();
        for batch in batches {
            for (slot, record) in &batch.records {
                let db = batch.dbs.get(&slot.0).ok_or_else(|| {
                    StoreError::Failed(format!("table {} has no database in this batch", slot.0))
                })?;
                records.insert(slot, (*db, record));
            }
        }
        let mut records: Vec<_> = records.into_iter().collect();
        records.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut wtxn = self.env.write_txn().map_err(storage_error)?;
        for ((_, key), (db, record)) in records {
            match record {
                Some(bytes) => db.put(&mut wtxn, key, bytes).map_err(storage_error)?,
                None => {
                    db.delete(&mut wtxn, key).map_err(storage_error)?;
                }
            }
        }
        for batch in batches {
            for (sha256, bytes) in &batch.modules {
                self.modules
                    .put(&mut wtxn, sha256, bytes)
                    .map_err(storage_error)?;
            }
            if let Some(meta) = &batch.meta {
                self.state
                    .put(&mut wtxn, STATE_META, meta)
                    .map_err(storage_error)?;
            }
            for (name, bytes) in &batch.local {
                self.state
                    .put(&mut wtxn, &local_state_key(name), bytes)
                    .map_err(storage_error)?;
            }
        }
        wtxn.commit().map_err(storage_error)
    }
}

/// The storage of one node.
pub struct NodeStore {
    /// Writes batches; its environment also serves this store's reads.
    writer: BatchWriter,
    /// Table databases opened so far; `None` records one that does not exist
    /// yet (only this store creates them, when it first stages a record).
    tables: HashMap<TableName, Option<Objects>>,
    staged: SealedBatch,
    /// Batches handed to the committing thread and not yet durable, oldest
    /// first, with their numbers: loads still see them.
    sealed: VecDeque<(u64, Arc<SealedBatch>)>,
    memory: BTreeMap<(TableName, Bytes), Object>,
    /// Free space, and the reserve writes must leave.
    space: DiskSpace,
    /// Keeps other processes off this data dir while the store lives.
    _lock: DataDirLock,
}

fn storage_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(e.to_string())
}

impl NodeStore {
    /// Opens (or creates) the data dir of node `id`. Refuses a dir that
    /// belongs to another node id, or that another process has open.
    pub fn open(dir: &Path, id: &NodeId) -> Result<(NodeStore, Persisted), StoreError> {
        std::fs::create_dir_all(dir).map_err(storage_error)?;
        let lock = DataDirLock::acquire(dir)?;
        // SAFETY: heed requires the caller to ensure the environment is not opened
        // twice in one process and the file is not modified by others; the lock
        // just taken keeps every other opener (this process included) out.
        let env = unsafe {
            EnvOpenOptions::new()
                .map_size(MAP_BYTES)
                .max_dbs(DATABASES_MAX)
                .open(dir)
        }
        .map_err(storage_error)?;
        let mut wtxn = env.write_txn().map_err(storage_error)?;
        let state: Database<Str, RawBytes> = env
            .create_database(&mut wtxn, Some("node"))
            .map_err(storage_error)?;
        let modules: Database<Str, RawBytes> = env
            .create_database(&mut wtxn, Some("modules"))
            .map_err(storage_error)?;
        let owner = state
            .get(&wtxn, STATE_NODE_ID)
            .map_err(storage_error)?
            .map(|b| String::from_utf8_lossy(b).into_owned());
        match owner {
            Some(owner) if owner != id.as_str() => {
                return Err(StoreError::Failed(format!(
                    "data dir {} belongs to node {owner}, not {id}",
                    dir.display()
                )));
            }
            Some(_) => {}
            None => state
                .put(&mut wtxn, STATE_NODE_ID, id.as_str().as_bytes())
                .map_err(storage_error)?,
        }
        let epoch = state
            .get(&wtxn, STATE_EPOCH)
            .map_err(storage_error)?
            .map(decode_disk::<u64>)
            .transpose()
            .map_err(storage_error)?;
        let clean_shutdown =
            state.get(&wtxn, STATE_CLEAN).map_err(storage_error)? == Some(&[1u8][..]);
        let current = state.get(&wtxn, STATE_META).map_err(storage_error)?;
        let v4 = match current {
            Some(_) => None,
            None => state.get(&wtxn, STATE_META_V4).map_err(storage_error)?,
        };
        let v3 = match (current, v4) {
            (None, None) => state.get(&wtxn, STATE_META_V3).map_err(storage_error)?,
            _ => None,
        };
        let meta = match (current, v4, v3) {
            // The layout before API keys has one field fewer under the same key.
            (Some(bytes), _, _) => Some(
                decode_disk::<ClusterMeta>(bytes)
                    .or_else(|e| {
                        decode_disk::<crate::core::meta::ClusterMetaV5>(bytes)
                            .map(ClusterMeta::from)
                            .map_err(|_| e)
                    })
                    .map_err(storage_error)?,
            ),
            (None, Some(bytes), _) => Some(
                decode_disk::<crate::core::meta::ClusterMetaV4>(bytes)
                    .map(ClusterMeta::from)
                    .map_err(storage_error)?,
            ),
            (None, None, Some(bytes)) => Some(
                decode_disk::<crate::core::meta::ClusterMetaV3>(bytes)
                    .map(ClusterMeta::from)
                    .map_err(storage_error)?,
            ),
            (None, None, None) => state
                .get(&wtxn, STATE_META_LEGACY)
                .map_err(storage_error)?
                .map(|bytes| {
                    decode_disk::<crate::core::meta::ClusterMetaV2>(bytes)
                        .map(ClusterMeta::from)
                        .or_else(|e| {
                            decode_disk::<crate::core::meta::ClusterMetaV1>(bytes)
                                .map(ClusterMeta::from)
                                .map_err(|_| e)
                        })
                })
                .transpose()
                .map_err(storage_error)?,
        };
        // Until a clean shutdown says otherwise, any stop is unclean.
        state
            .put(&mut wtxn, STATE_CLEAN, &[0u8])
            .map_err(storage_error)?;
        wtxn.commit().map_err(storage_error)?;
        let writer = BatchWriter {
            env,
            state,
            modules,
            blobs: BlobDir::open(dir.join("blobs"))?,
        };
        let store = NodeStore {
            writer,
            tables: HashMap::new(),
            staged: SealedBatch::default(),
            sealed: VecDeque::new(),
            memory: BTreeMap::new(),
            space: DiskSpace::open(dir)?,
            _lock: lock,
        };
        Ok((
            store,
            Persisted {
                epoch,
                clean_shutdown,
                meta,
            },
        ))
    }

    /// Refuses writes that would leave less than `bytes` free on the data
    /// dir's disk (none are refused for space until this is called).
    pub fn reserve_disk(&mut self, bytes: u64) {
        self.space.set_reserve(bytes);
    }

    /// Free space and reserve as last sampled, for status pages.
    pub fn disk_gauge(&self) -> Arc<DiskGauge> {
        self.space.gauge()
    }

    /// Samples free space now (the driver calls it on every tick).
    pub fn sample_disk(&mut self) -> Result<(), StoreError> {
        self.space.sample()
    }

    /// Bytes staged or being committed, not yet reflected in free space.
    fn pending_disk_bytes(&self) -> u64 {
        self.pending().map(|batch| batch.disk_bytes).sum()
    }

    /// Refuses a write of `cost` bytes that would eat into the reserve.
    fn admit_disk(&self, cost: u64) -> Result<(), StoreError> {
        self.space.admit(self.pending_disk_bytes(), cost)
    }

    /// A writer for sealed batches, for the committing thread.
    pub fn writer(&self) -> BatchWriter {
        self.writer.clone()
    }

    /// Whether sealed batches wait to be reported durable.
    pub fn has_sealed(&self) -> bool {
        !self.sealed.is_empty()
    }

    /// Seals everything staged into batch `number` (numbers increase) for the
    /// committing thread; `None` when nothing was staged. Loads see the batch
    /// until [`NodeStore::durable_through`] covers it.
    pub fn seal(&mut self, number: u64) -> Option<Arc<SealedBatch>> {
        if self.staged.is_empty() {
            return None;
        }
        let batch = Arc::new(std::mem::take(&mut self.staged));
        self.sealed.push_back((number, batch.clone()));
        Some(batch)
    }

    /// Batches up to `number` were written and synced: loads find them in LMDB.
    pub fn durable_through(&mut self, number: u64) {
        while self.sealed.front().is_some_and(|(n, _)| *n <= number) {
            self.sealed.pop_front();
        }
        // What those batches took is on disk now, no longer pending; a failed
        // sample keeps the last one (the next tick tries again).
        let _ = self.space.sample();
    }

    /// A commit failed: drops every sealed batch and everything staged
    /// (later batches were staged over the lost ones), so loads see what is
    /// durable again. Blob files a lost batch managed to write are collected
    /// by the next sweep, as nothing references them.
    pub fn discard_pending(&mut self) {
        let lost: Vec<_> = self.sealed.drain(..).map(|(_, batch)| batch).collect();
        let staged = std::mem::take(&mut self.staged);
        // Oldest first: the first copy a lost batch moved out of memory is
        // the one that was there before.
        for batch in lost.iter().map(|b| &**b).chain([&staged]) {
            for (slot, object) in &batch.evicted {
                self.memory
                    .entry(slot.clone())
                    .or_insert_with(|| object.clone());
            }
        }
    }

    /// Staged and sealed overlays, newest first: where loads look before LMDB.
    fn pending(&self) -> impl Iterator<Item = &SealedBatch> {
        std::iter::once(&self.staged).chain(self.sealed.iter().rev().map(|(_, b)| &**b))
    }

    /// Writes everything staged in one transaction and syncs it, on this
    /// thread (start-up, shutdown, tests), once no sealed batch is pending.
    /// Returns the records written.
    pub fn commit(&mut self) -> Result<usize, StoreError> {
        if self.has_sealed() {
            return Err(StoreError::Failed(
                "sealed batches are still being committed".into(),
            ));
        }
        if self.staged.is_empty() {
            return Ok(0);
        }
        let batch = std::mem::take(&mut self.staged);
        self.writer.write(&[&batch])?;
        Ok(batch.records())
    }

    /// Deletes blob files that no object of `tables` references any more,
    /// counting staged and sealed records as references (the node's own
    /// thread calls this, so nothing is staged meanwhile; a sealed batch's
    /// files are its references). Returns the number of files deleted.
    pub fn collect_blobs(&mut self, tables: &[TableName]) -> Result<usize, StoreError> {
        let mut referenced = HashSet::new();
        for batch in self.pending() {
            referenced.extend(batch.blobs.keys().copied());
            for record in batch.records.values().flatten() {
                let stored: StoredObject = decode_disk(record).map_err(storage_error)?;
                referenced.extend(stored.blob_ids().copied());
            }
        }
        for table in tables {
            let Some(db) = self.table_db(table)? else {
                continue;
            };
            let rtxn = self.writer.env.read_txn().map_err(storage_error)?;
            for entry in db.iter(&rtxn).map_err(storage_error)? {
                let (_, bytes) = entry.map_err(storage_error)?;
                let stored: StoredObject = decode_disk(bytes).map_err(storage_error)?;
                referenced.extend(stored.blob_ids().copied());
            }
        }
        self.writer.blobs.collect(&referenced)
    }

    /// Stages the deletion of up to `max` records of a dropped table after
    /// key `after` (from its first key when `None`, which also drops its
    /// objects in memory), so a large table goes in slices with the node's
    /// ordinary batches. Returns how many were staged and the last key:
    /// `(0, None)` from the first key means the table is empty. Its blob
    /// files go with the next blob collection, which counts only live
    /// tables' references.
    pub fn collect_dropped(
        &mut self,
        table: &TableName,
        after: Option<&[u8]>,
        max: usize,
    ) -> Result<(usize, Option<Vec<u8>>), StoreError> {
        if after.is_none() {
            self.memory.retain(|(t, _), _| t != table);
        }
        let Some(db) = self.table_db(table)? else {
            return Ok((0, None));
        };
        let rtxn = self.writer.env.read_txn().map_err(storage_error)?;
        let keys: Vec<Bytes> = match after {
            None => db
                .iter(&rtxn)
                .map_err(storage_error)?
                .take(max)
                .map(|entry| entry.map(|(key, _)| Bytes::copy_from_slice(key)))
                .collect::<Result<_, _>>(),
            Some(after) => {
                let range = (std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded);
                db.range(&rtxn, &range)
                    .map_err(storage_error)?
                    .take(max)
                    .map(|entry| entry.map(|(key, _)| Bytes::copy_from_slice(key)))
                    .collect::<Result<_, _>>()
            }
        }
        .map_err(storage_error)?;
        drop(rtxn);
        let last = keys.last().map(|k| k.to_vec());
        if !keys.is_empty() {
            self.staged.dbs.entry(table.clone()).or_insert(db);
        }
        for key in &keys {
            self.staged
                .records
                .insert((table.clone(), key.clone()), None);
        }
        Ok((keys.len(), last))
    }

    /// Records a clean shutdown: the next start keeps the epoch. Call it once
    /// no batch is being committed.
    pub fn mark_clean_shutdown(&mut self) -> Result<(), StoreError> {
        self.commit()?;
        let mut wtxn = self.writer.env.write_txn().map_err(storage_error)?;
        self.writer
            .state
            .put(&mut wtxn, STATE_CLEAN, &[1u8])
            .map_err(storage_error)?;
        wtxn.commit().map_err(storage_error)
    }

    fn table_db(&mut self, table: &TableName) -> Result<Option<Objects>, StoreError> {
        if let Some(known) = self.tables.get(table) {
            return Ok(*known);
        }
        let rtxn = self.writer.env.read_txn().map_err(storage_error)?;
        let db: Option<Objects> = self
            .writer
            .env
            .open_database(&rtxn, Some(&format!("t/{table}")))
            .map_err(storage_error)?;
        rtxn.commit().map_err(storage_error)?;
        self.tables.insert(table.clone(), db);
        Ok(db)
    }

    /// The database of `table`, created (in a transaction of its own, once
    /// per table) if it does not exist yet.
    fn table_db_or_create(&mut self, table: &TableName) -> Result<Objects, StoreError> {
        if let Some(db) = self.table_db(table)? {
            return Ok(db);
        }
        let mut wtxn = self.writer.env.write_txn().map_err(storage_error)?;
        let db: Objects = self
            .writer
            .env
            .create_database(&mut wtxn, Some(&format!("t/{table}")))
            .map_err(storage_error)?;
        wtxn.commit().map_err(storage_error)?;
        self.tables.insert(table.clone(), Some(db));
        Ok(db)
    }
}

impl NodeStore {
    /// The LMDB record of a key, staged or committed (`None` when absent or
    /// staged for deletion).
    fn record(
        &mut self,
        table: &TableName,
        key: &[u8],
    ) -> Result<Option<StoredObject>, StoreError> {
        let slot = (table.clone(), Bytes::copy_from_slice(key));
        if let Some(record) = self.pending().find_map(|batch| batch.record(&slot)) {
            return record
                .as_deref()
                .map(decode_disk)
                .transpose()
                .map_err(storage_error);
        }
        let Some(db) = self.table_db(table)? else {
            return Ok(None);
        };
        let rtxn = self.writer.env.read_txn().map_err(storage_error)?;
        let found = db.get(&rtxn, key).map_err(storage_error)?;
        found.map(decode_disk).transpose().map_err(storage_error)
    }

    fn resolve(&self, stored: StoredObject) -> Result<Object, StoreError> {
        stored.into_object(
            |id| match self.pending().find_map(|batch| batch.blobs.get(id)) {
                Some(bytes) => Ok(bytes.clone()),
                None => self.writer.blobs.read(id),
            },
        )
    }

    /// Where an object of a `storage: plugin` table stays when no engine was
    /// chosen for this write (repairs): where it already is.
    fn current_engine(&mut self, table: &TableName, key: &[u8]) -> Result<StorageKind, StoreError> {
        if self
            .memory
            .contains_key(&(table.clone(), Bytes::copy_from_slice(key)))
        {
            return Ok(StorageKind::Memory);
        }
        let in_blobs = self
            .record(table, key)?
            .is_some_and(|r| r.blob_ids().next().is_some());
        Ok(if in_blobs {
            StorageKind::Blob
        } else {
            StorageKind::Lmdb
        })
    }
}

impl LocalStore for NodeStore {
    fn copy_state(&self, table: &TableName, key: &[u8]) -> CopyState {
        let slot = (table.clone(), Bytes::copy_from_slice(key));
        if self.staged.records.contains_key(&slot) {
            return CopyState::Staged;
        }
        let newest_sealed = self.sealed.iter().rev();
        match newest_sealed
            .filter(|(_, batch)| batch.records.contains_key(&slot))
            .map(|(number, _)| *number)
            .next()
        {
            Some(number) => CopyState::Sealed(number),
            None => CopyState::Durable,
        }
    }

    /// For `storage: plugin` tables an object may be in memory or in LMDB
    /// (values inline or in blobs): memory is looked at first.
    fn load(
        &mut self,
        table: &TableName,
        storage: StorageKind,
        key: &[u8],
    ) -> Result<Option<Object>, StoreError> {
        if matches!(storage, StorageKind::Memory | StorageKind::Plugin) {
            if let Some(object) = self
                .memory
                .get(&(table.clone(), Bytes::copy_from_slice(key)))
            {
                return Ok(Some(object.clone()));
            }
            if storage == StorageKind::Memory {
                return Ok(None);
            }
        }
        match self.record(table, key)? {
            Some(stored) => self.resolve(stored).map(Some),
            None => Ok(None),
        }
    }

    /// Stages `object` in `storage`'s engine, moving it out of the other one
    /// when a `storage: plugin` table changed its mind; `Plugin` keeps it where it is.
    fn stage(
        &mut self,
        table: &TableName,
        storage: StorageKind,
        key: &[u8],
        object: &Object,
    ) -> Result<(), StoreError> {
        let engine = match storage {
            StorageKind::Plugin => self.current_engine(table, key)?,
            resolved => resolved,
        };
        // Refused here, before anything is staged: a record LMDB cannot take
        // would fail the whole batch's commit, other writes with it.
        let key_max = self.writer.env.max_key_size();
        if key.is_empty() || key.len() > key_max {
            return Err(StoreError::Failed(format!(
                "a key of {} bytes cannot be stored (1 to {key_max} bytes)",
                key.len()
            )));
        }
        let slot = (table.clone(), Bytes::copy_from_slice(key));
        if engine == StorageKind::Memory {
            self.memory.insert(slot.clone(), object.clone());
            // A copy it had in LMDB goes (records exist only once the database does).
            if let Some(db) = self.table_db(table)? {
                self.staged.dbs.entry(table.clone()).or_insert(db);
                self.staged.records.insert(slot, None);
            }
            return Ok(());
        }
        let mut blobs = Vec::new();
        let stored = StoredObject::from_object(object, engine == StorageKind::Blob, |id, bytes| {
            blobs.push((id, bytes.clone()));
        });
        let record = encode_disk(&stored).map_err(storage_error)?;
        let blob_bytes: usize = blobs
            .iter()
            .filter(|(id, _)| !self.staged.blobs.contains_key(id))
            .map(|(_, bytes)| bytes.len())
            .sum();
        let cost = DiskSpace::cost((key.len() + record.len()) as u64, blob_bytes as u64);
        self.admit_disk(cost)?;
        let db = self.table_db_or_create(table)?;
        if let Some(evicted) = self.memory.remove(&slot) {
            self.staged.evicted.entry(slot.clone()).or_insert(evicted);
        }
        self.staged.dbs.entry(table.clone()).or_insert(db);
        self.staged.blobs.extend(blobs);
        self.staged.records.insert(slot, Some(record));
        self.staged.disk_bytes += cost;
        Ok(())
    }

    fn remove(&mut self, table: &TableName, key: &[u8]) -> Result<(), StoreError> {
        let slot = (table.clone(), Bytes::copy_from_slice(key));
        if let Some(evicted) = self.memory.remove(&slot) {
            self.staged.evicted.entry(slot.clone()).or_insert(evicted);
        }
        // Records exist only once the database does.
        if let Some(db) = self.table_db(table)? {
            self.staged.dbs.entry(table.clone()).or_insert(db);
            self.staged.records.insert(slot, None);
        }
        Ok(())
    }

    fn stage_meta(&mut self, meta: &ClusterMeta) -> Result<(), StoreError> {
        self.staged.meta = Some(encode_disk(meta).map_err(storage_error)?);
        Ok(())
    }

    fn persist_epoch_now(&mut self, epoch: u64) -> Result<(), StoreError> {
        let mut wtxn = self.writer.env.write_txn().map_err(storage_error)?;
        let bytes = encode_disk(&epoch).map_err(storage_error)?;
        self.writer
            .state
            .put(&mut wtxn, STATE_EPOCH, &bytes)
            .map_err(storage_error)?;
        wtxn.commit().map_err(storage_error)
    }

    fn stage_local(&mut self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.staged.local.insert(name.to_owned(), bytes.to_vec());
        Ok(())
    }

    fn load_local(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(bytes) = self.pending().find_map(|batch| batch.local.get(name)) {
            return Ok(Some(bytes.clone()));
        }
        let rtxn = self.writer.env.read_txn().map_err(storage_error)?;
        Ok(self
            .writer
            .state
            .get(&rtxn, &local_state_key(name))
            .map_err(storage_error)?
            .map(<[u8]>::to_vec))
    }

    fn stage_module(&mut self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let cost = DiskSpace::cost((sha256.len() + bytes.len()) as u64, 0);
        self.admit_disk(cost)?;
        self.staged.disk_bytes += cost;
        self.staged
            .modules
            .insert(sha256.to_owned(), bytes.to_vec());
        Ok(())
    }

    fn load_module(&mut self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(bytes) = self.pending().find_map(|batch| batch.modules.get(sha256)) {
            return Ok(Some(bytes.clone()));
        }
        let rtxn = self.writer.env.read_txn().map_err(storage_error)?;
        Ok(self
            .writer
            .modules
            .get(&rtxn, sha256)
            .map_err(storage_error)?
            .map(<[u8]>::to_vec))
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
        let in_memory = self
            .memory
            .range((start, Bound::Unbounded))
            .take_while(|((t, _), _)| t == table)
            .take(limit)
            .map(|((_, key), _)| key.clone());
        let pending = self
            .pending()
            .flat_map(|batch| batch.records.keys())
            .filter(|(t, _)| t == table)
            .map(|(_, key)| key.clone());
        let mut keys: Vec<Bytes> = in_memory.chain(pending).collect();
        if let Some(db) = self.table_db(table)? {
            let rtxn = self.writer.env.read_txn().map_err(storage_error)?;
            let range = match after {
                Some(after) => (Bound::Excluded(after), Bound::Unbounded),
                None => (Bound::Unbounded, Bound::Unbounded),
            };
            for entry in db.range(&rtxn, &range).map_err(storage_error)?.take(limit) {
                let (key, _) = entry.map_err(storage_error)?;
                keys.push(Bytes::copy_from_slice(key));
            }
        }
        Ok(first_keys_after(keys, after, limit))
    }

    fn key_count(&mut self, table: &TableName) -> Result<u64, StoreError> {
        let start = (table.clone(), Bytes::new());
        let in_memory = self
            .memory
            .range(start..)
            .take_while(|((t, _), _)| t == table)
            .count() as u64;
        let Some(db) = self.table_db(table)? else {
            return Ok(in_memory);
        };
        let rtxn = self.writer.env.read_txn().map_err(storage_error)?;
        Ok(in_memory + db.len(&rtxn).map_err(storage_error)?)
    }
}

/// Decodes `bytes` as each kind of record a data dir holds besides cluster
/// metadata (a stored object, resolving blob references to nothing): what
/// a fuzzer drives, since these records are read back from disk.
pub fn decode_records(bytes: &[u8]) {
    if let Ok(stored) = decode_disk::<StoredObject>(bytes) {
        let _ = stored.into_object(|_| Err::<Bytes, ()>(()));
    }
}

/// Decodes `bytes` as cluster metadata in any layout a data dir may hold
/// (the current one first, then older ones), as opening a store does.
pub fn decode_meta(bytes: &[u8]) -> Option<ClusterMeta> {
    decode_disk::<ClusterMeta>(bytes)
        .ok()
        .or_else(|| {
            decode_disk::<crate::core::meta::ClusterMetaV5>(bytes)
                .ok()
                .map(ClusterMeta::from)
        })
        .or_else(|| {
            decode_disk::<crate::core::meta::ClusterMetaV4>(bytes)
                .ok()
                .map(ClusterMeta::from)
        })
        .or_else(|| {
            decode_disk::<crate::core::meta::ClusterMetaV3>(bytes)
                .ok()
                .map(ClusterMeta::from)
        })
        .or_else(|| {
            decode_disk::<crate::core::meta::ClusterMetaV2>(bytes)
                .ok()
                .map(ClusterMeta::from)
        })
        .or_else(|| {
            decode_disk::<crate::core::meta::ClusterMetaV1>(bytes)
                .ok()
                .map(ClusterMeta::from)
        })
}

#[cfg(test)]
mod tests;
