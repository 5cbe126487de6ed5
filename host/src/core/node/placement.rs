//! `storage: plugin`: before a write is applied, the table's plugin chooses the
//! engine for the object from its total live size (`select_storage`), off the
//! node loop. The write waits unapplied, so nothing is minted against a local
//! copy that may still change; replicas are told the engine with the object.
//! A plugin that fails or is missing sends the object to LMDB, which is durable.

use super::*;

/// A write waiting for its engine.
pub(super) struct Placement {
    origin: Origin,
    write: Write,
    config: TableConfig,
    w: u8,
    primaries: Vec<NodeId>,
    /// The write's own deadline.
    pub(super) deadline_ms: u64,
}

impl Node {
    /// Asks the storage plugin where the object will live; always `None` (the
    /// write goes on once the answer comes).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_placement(
        &mut self,
        origin: Origin,
        write: Write,
        config: &TableConfig,
        w: u8,
        primaries: &[NodeId],
        deadline_ms: u64,
        store: &mut dyn LocalStore,
    ) -> Option<ClientContext> {
        let plugin = config
            .storage_plugin
            .as_deref()
            .and_then(|name| self.meta.plugin(name))
            .and_then(|p| p.sha256.clone());
        let Some(sha256) = plugin else {
            return self.put_placed(
                origin,
                write,
                config,
                w,
                primaries,
                deadline_ms,
                StorageKind::Lmdb,
                store,
            );
        };
        let local = store
            .load(&write.table, config.storage, &write.key)
            .ok()
            .flatten()
            .unwrap_or_default();
        let kept: usize = local
            .live()
            .filter(|v| !write.context.covers(&v.dot))
            .map(Version::live_bytes)
            .sum();
        let new_bytes = write
            .value
            .as_ref()
            .map_or(0, |v| v.len() + write.content_type.len());
        let total_live_bytes = (kept + new_bytes) as u64;
        let query = StorageQuery {
            table: write.table.to_string(),
            key: write.key.to_vec(),
            total_live_bytes,
        };
        let job = self.next_id();
        let placement = Placement {
            origin,
            write,
            config: config.clone(),
            w,
            primaries: primaries.to_vec(),
            deadline_ms,
        };
        self.pending
            .insert(job, Pending::Placement(Box::new(placement)));
        self.emit(Output::SelectStorage { job, sha256, query });
        None
    }

    /// Applies the waiting write in the chosen engine.
    pub(super) fn finish_placement(
        &mut self,
        placement: Placement,
        outcome: Result<Storage, PluginFailure>,
        store: &mut dyn LocalStore,
    ) {
        let engine = match outcome {
            Ok(Storage::Lmdb) | Err(_) => StorageKind::Lmdb,
            Ok(Storage::Memory) => StorageKind::Memory,
            Ok(Storage::Blob) => StorageKind::Blob,
        };
        let Placement {
            origin,
            write,
            config,
            w,
            primaries,
            deadline_ms,
        } = placement;
        let _ = self.put_placed(
            origin,
            write,
            &config,
            w,
            &primaries,
            deadline_ms,
            engine,
            store,
        );
    }
}
