//! A node's local storage: one LMDB environment per node (a database per table
//! plus one for node state) and a volatile map for `memory` tables.
//!
//! Writes are staged in an overlay that reads see at once; [`NodeStore::commit`]
//! writes the whole overlay in one LMDB transaction (group commit). The driver
//! calls it once per loop turn and only then releases the acks.

use std::collections::HashMap;
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
    tables: HashMap<TableName, Objects>,
    staged: HashMap<(TableName, Bytes), Vec<u8>>,
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
        !self.staged.is_empty() || self.staged_meta.is_some() || !self.staged_modules.is_empty()
    }

    /// Writes everything staged in one transaction and syncs it to disk.
    pub fn commit(&mut self) -> Result<usize, StoreError> {
        if !self.has_staged() {
            return Ok(0);
        }
        let mut wtxn = self.env.write_txn().map_err(storage_error)?;
        let count = self.staged.len();
        for ((table, key), bytes) in self.staged.drain() {
            let db = match self.tables.get(&table) {
                Some(db) => *db,
                None => {
                    let db: Objects = self
                        .env
                        .create_database(&mut wtxn, Some(&format!("t/{table}")))
                        .map_err(storage_error)?;
                    self.tables.insert(table.clone(), db);
                    db
                }
            };
            db.put(&mut wtxn, &key, &bytes).map_err(storage_error)?;
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
        if let Some(db) = self.tables.get(table) {
            return Ok(Some(*db));
        }
        let rtxn = self.env.read_txn().map_err(storage_error)?;
        let db: Option<Objects> = self
            .env
            .open_database(&rtxn, Some(&format!("t/{table}")))
            .map_err(storage_error)?;
        rtxn.commit().map_err(storage_error)?;
        if let Some(db) = db {
            self.tables.insert(table.clone(), db);
        }
        Ok(db)
    }
}

impl LocalStore for NodeStore {
    fn load(
        &mut self,
        table: &TableName,
        storage: StorageKind,
        key: &[u8],
    ) -> Result<Option<Object>, StoreError> {
        let slot = (table.clone(), Bytes::copy_from_slice(key));
        if storage == StorageKind::Memory {
            return Ok(self.memory.get(&slot).cloned());
        }
        if let Some(bytes) = self.staged.get(&slot) {
            return decode_disk(bytes).map(Some).map_err(storage_error);
        }
        let Some(db) = self.table_db(table)? else {
            return Ok(None);
        };
        let rtxn = self.env.read_txn().map_err(storage_error)?;
        match db.get(&rtxn, key).map_err(storage_error)? {
            Some(bytes) => decode_disk(bytes).map(Some).map_err(storage_error),
            None => Ok(None),
        }
    }

    fn stage(
        &mut self,
        table: &TableName,
        storage: StorageKind,
        key: &[u8],
        object: &Object,
    ) -> Result<(), StoreError> {
        let slot = (table.clone(), Bytes::copy_from_slice(key));
        if storage == StorageKind::Memory {
            self.memory.insert(slot, object.clone());
            return Ok(());
        }
        self.staged
            .insert(slot, encode_disk(object).map_err(storage_error)?);
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
mod tests {
    use super::*;
    use crate::core::causal::CausalContext;
    use crate::core::object::Version;
    use crate::core::table::MergeMode;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("cairn-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn object(value: &str) -> Object {
        let mut o = Object::default();
        let dot = crate::core::causal::tests::dot("n1", 1, 1);
        let v = Version {
            dot,
            timestamp_ms: 1,
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            content_type: "t".into(),
        };
        o.apply_write(&CausalContext::new(), v, MergeMode::Siblings);
        o
    }

    #[test]
    fn committed_objects_and_epochs_survive_reopening() {
        let dir = temp_dir("reopen");
        let id = NodeId::new("n1").unwrap();
        let table = TableName::new("t").unwrap();
        {
            let (mut store, persisted) = NodeStore::open(&dir, &id).unwrap();
            assert_eq!(persisted.epoch, None);
            store.persist_epoch_now(7).unwrap();
            store
                .stage(&table, StorageKind::Lmdb, b"k", &object("v"))
                .unwrap();
            assert_eq!(
                store.load(&table, StorageKind::Lmdb, b"k").unwrap(),
                Some(object("v")),
                "staged reads"
            );
            store
                .stage(&table, StorageKind::Memory, b"m", &object("m"))
                .unwrap();
            assert_eq!(store.commit().unwrap(), 1);
        }
        let (mut store, persisted) = NodeStore::open(&dir, &id).unwrap();
        assert_eq!(persisted.epoch, Some(7));
        assert!(!persisted.clean_shutdown);
        assert_eq!(
            store.load(&table, StorageKind::Lmdb, b"k").unwrap(),
            Some(object("v"))
        );
        assert_eq!(
            store.load(&table, StorageKind::Memory, b"m").unwrap(),
            None,
            "memory is volatile"
        );
        store.mark_clean_shutdown().unwrap();
        drop(store);
        let (_, persisted) = NodeStore::open(&dir, &id).unwrap();
        assert!(persisted.clean_shutdown);
        assert!(NodeStore::open(&dir, &NodeId::new("other").unwrap()).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
