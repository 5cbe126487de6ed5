//! A node's local storage: one LMDB environment per node (a database per table
//! plus one for node state) and a volatile map for `memory` tables.
//!
//! Writes are staged in an overlay that reads see at once; [`NodeStore::commit`]
//! writes the whole overlay in one LMDB transaction (group commit). The driver
//! calls it once per loop turn and only then releases the acks.

mod blob;
mod stored;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use bytes::Bytes;
use heed::types::{Bytes as RawBytes, Str};
use heed::{Database, Env, EnvOpenOptions};

use crate::core::codec::{decode_disk, encode_disk};
use crate::core::meta::ClusterMeta;
use crate::core::node::Persisted;
use crate::core::object::Object;
use crate::core::store::{LocalStore, StoreError};
use crate::core::table::StorageKind;
use crate::core::types::{NodeId, TableName};
use blob::{BlobDir, BlobId};
use stored::StoredObject;

/// LMDB's map size: address space reserved, not disk used.
const MAP_BYTES: usize = 64 << 30;
/// Named databases: every table plus node state (TABLES_MAX is below it).
const DATABASES_MAX: u32 = 512;

const STATE_NODE_ID: &str = "node_id";
const STATE_EPOCH: &str = "epoch";
const STATE_CLEAN: &str = "clean_shutdown";
const STATE_META: &str = "meta";

type Objects = Database<RawBytes, RawBytes>;

/// The storage of one node.
pub struct NodeStore {
    env: Env,
    state: Database<Str, RawBytes>,
    modules: Database<Str, RawBytes>,
    staged_modules: HashMap<String, Vec<u8>>,
    blobs: BlobDir,
    staged_blobs: HashMap<BlobId, Bytes>,
    /// Table databases opened so far; `None` records one that does not exist
    /// yet (only this store's own commits create them).
    tables: HashMap<TableName, Option<Objects>>,
    /// Records to write (`None`: to delete, when an object moved to memory).
    staged: HashMap<(TableName, Bytes), Option<Vec<u8>>>,
    staged_meta: Option<Vec<u8>>,
    memory: HashMap<(TableName, Bytes), Object>,
}

fn storage_error(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl NodeStore {
    /// Opens (or creates) the data dir of node `id`. Refuses a dir that
    /// belongs to another node id.
    pub fn open(dir: &Path, id: &NodeId) -> Result<(NodeStore, Persisted), StoreError> {
        std::fs::create_dir_all(dir).map_err(storage_error)?;
        // SAFETY: heed requires the caller to ensure the environment is not opened
        // twice in one process and the file is not modified by others; a data dir
        // belongs to exactly one node, which opens it once.
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
                return Err(StoreError(format!(
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
            .map(decode_disk::<u32>)
            .transpose()
            .map_err(storage_error)?;
        let clean_shutdown =
            state.get(&wtxn, STATE_CLEAN).map_err(storage_error)? == Some(&[1u8][..]);
        let meta = state
            .get(&wtxn, STATE_META)
            .map_err(storage_error)?
            .map(decode_disk::<ClusterMeta>)
            .transpose()
            .map_err(storage_error)?;
        // Until a clean shutdown says otherwise, any stop is unclean.
        state
            .put(&mut wtxn, STATE_CLEAN, &[0u8])
            .map_err(storage_error)?;
        wtxn.commit().map_err(storage_error)?;
        let store = NodeStore {
            env,
            state,
            modules,
            staged_modules: HashMap::new(),
            blobs: BlobDir::open(dir.join("blobs"))?,
            staged_blobs: HashMap::new(),
            tables: HashMap::new(),
            staged: HashMap::new(),
            staged_meta: None,
            memory: HashMap::new(),
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

    /// Whether anything waits for [`NodeStore::commit`].
    pub fn has_staged(&self) -> bool {
        !self.staged.is_empty()
            || self.staged_meta.is_some()
            || !self.staged_modules.is_empty()
            || !self.staged_blobs.is_empty()
    }

    /// Writes everything staged in one transaction and syncs it to disk.
    pub fn commit(&mut self) -> Result<usize, StoreError> {
        if !self.has_staged() {
            return Ok(0);
        }
        // Blob files first: the LMDB records that reference them come after.
        if !self.staged_blobs.is_empty() {
            for (id, bytes) in self.staged_blobs.drain() {
                self.blobs.write(&id, &bytes)?;
            }
            self.blobs.sync()?;
        }
        let mut wtxn = self.env.write_txn().map_err(storage_error)?;
        let count = self.staged.len();
        for ((table, key), record) in self.staged.drain() {
            let db = match self.tables.get(&table) {
                Some(Some(db)) => *db,
                Some(None) | None => {
                    let db: Objects = self
                        .env
                        .create_database(&mut wtxn, Some(&format!("t/{table}")))
                        .map_err(storage_error)?;
                    self.tables.insert(table.clone(), Some(db));
                    db
                }
            };
            match record {
                Some(bytes) => db.put(&mut wtxn, &key, &bytes).map_err(storage_error)?,
                None => {
                    db.delete(&mut wtxn, &key).map_err(storage_error)?;
                }
            }
        }
        for (sha256, bytes) in self.staged_modules.drain() {
            self.modules
                .put(&mut wtxn, &sha256, &bytes)
                .map_err(storage_error)?;
        }
        if let Some(meta) = self.staged_meta.take() {
            self.state
                .put(&mut wtxn, STATE_META, &meta)
                .map_err(storage_error)?;
        }
        wtxn.commit().map_err(storage_error)?;
        Ok(count)
    }

    /// Deletes blob files no object of `tables` references any more. Runs
    /// between turns, when nothing is staged, so no file of an uncommitted
    /// write can be taken. Returns the number of files deleted.
    pub fn collect_blobs(&mut self, tables: &[TableName]) -> Result<usize, StoreError> {
        self.commit()?;
        let mut referenced = HashSet::new();
        for table in tables {
            let Some(db) = self.table_db(table)? else {
                continue;
            };
            let rtxn = self.env.read_txn().map_err(storage_error)?;
            for entry in db.iter(&rtxn).map_err(storage_error)? {
                let (_, bytes) = entry.map_err(storage_error)?;
                let stored: StoredObject = decode_disk(bytes).map_err(storage_error)?;
                referenced.extend(stored.blob_ids().copied());
            }
        }
        self.blobs.collect(&referenced)
    }

    /// Records a clean shutdown: the next start keeps the epoch.
    pub fn mark_clean_shutdown(&mut self) -> Result<(), StoreError> {
        self.commit()?;
        let mut wtxn = self.env.write_txn().map_err(storage_error)?;
        self.state
            .put(&mut wtxn, STATE_CLEAN, &[1u8])
            .map_err(storage_error)?;
        wtxn.commit().map_err(storage_error)
    }

    fn table_db(&mut self, table: &TableName) -> Result<Option<Objects>, StoreError> {
        if let Some(known) = self.tables.get(table) {
            return Ok(*known);
        }
        let rtxn = self.env.read_txn().map_err(storage_error)?;
        let db: Option<Objects> = self
            .env
            .open_database(&rtxn, Some(&format!("t/{table}")))
            .map_err(storage_error)?;
        rtxn.commit().map_err(storage_error)?;
        self.tables.insert(table.clone(), db);
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
        if let Some(record) = self.staged.get(&slot) {
            return record
                .as_deref()
                .map(decode_disk)
                .transpose()
                .map_err(storage_error);
        }
        let Some(db) = self.table_db(table)? else {
            return Ok(None);
        };
        let rtxn = self.env.read_txn().map_err(storage_error)?;
        let found = db.get(&rtxn, key).map_err(storage_error)?;
        found.map(decode_disk).transpose().map_err(storage_error)
    }

    fn resolve(&self, stored: StoredObject) -> Result<Object, StoreError> {
        stored.into_object(|id| match self.staged_blobs.get(id) {
            Some(bytes) => Ok(bytes.clone()),
            None => self.blobs.read(id),
        })
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
        let slot = (table.clone(), Bytes::copy_from_slice(key));
        if engine == StorageKind::Memory {
            self.memory.insert(slot.clone(), object.clone());
            if self.table_db(table)?.is_some() || self.staged.contains_key(&slot) {
                self.staged.insert(slot, None);
            }
            return Ok(());
        }
        self.memory.remove(&slot);
        let staged_blobs = &mut self.staged_blobs;
        let stored = StoredObject::from_object(object, engine == StorageKind::Blob, |id, bytes| {
            staged_blobs.insert(id, bytes.clone());
        });
        self.staged
            .insert(slot, Some(encode_disk(&stored).map_err(storage_error)?));
        Ok(())
    }

    fn stage_meta(&mut self, meta: &ClusterMeta) -> Result<(), StoreError> {
        self.staged_meta = Some(encode_disk(meta).map_err(storage_error)?);
        Ok(())
    }

    fn persist_epoch_now(&mut self, epoch: u32) -> Result<(), StoreError> {
        let mut wtxn = self.env.write_txn().map_err(storage_error)?;
        let bytes = encode_disk(&epoch).map_err(storage_error)?;
        self.state
            .put(&mut wtxn, STATE_EPOCH, &bytes)
            .map_err(storage_error)?;
        wtxn.commit().map_err(storage_error)
    }

    fn stage_module(&mut self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.staged_modules
            .insert(sha256.to_owned(), bytes.to_vec());
        Ok(())
    }

    fn load_module(&mut self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(bytes) = self.staged_modules.get(sha256) {
            return Ok(Some(bytes.clone()));
        }
        let rtxn = self.env.read_txn().map_err(storage_error)?;
        Ok(self
            .modules
            .get(&rtxn, sha256)
            .map_err(storage_error)?
            .map(<[u8]>::to_vec))
    }
}

#[cfg(test)]
mod tests;
