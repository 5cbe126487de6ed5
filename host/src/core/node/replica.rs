//! Replica traffic: storing the copies coordinators send, serving replica
//! reads, and feeding replicas' answers to the coordinator's state machines.

use super::*;

impl Node {
    /// Replica messages: this node as a replica (writes, reads, repairs it
    /// is sent) and as a coordinator (the replicas' answers).
    pub(super) fn on_replica(
        &mut self,
        from: NodeId,
        message: ReplicaMessage,
        store: &mut dyn LocalStore,
    ) {
        match message {
            ReplicaMessage::Write {
                request,
                table,
                key,
                object,
                engine,
            } => {
                let outcome = self
                    .store_replica(&table, &key, &object, engine, store)
                    .map(|_changed| ());
                let stats = &mut self.stats.replica;
                match outcome {
                    Ok(()) => stats.writes_stored += 1,
                    Err(_) => stats.writes_refused += 1,
                }
                if let Some(addr) = self.addr_of(&from) {
                    self.emit(Output::Send {
                        addr,
                        message: Message::Replica(ReplicaMessage::WriteAck { request, outcome }),
                    });
                }
            }
            ReplicaMessage::Repair { table, key, object } => {
                let _ = self.store_replica(&table, &key, &object, None, store);
            }
            ReplicaMessage::Read {
                request,
                table,
                key,
            } => {
                let outcome = match self.meta.tables.get(&table) {
                    None => Err(ReplicaError::UnknownTable),
                    Some(entry) => store
                        .load(&table, entry.config.storage, &key)
                        .map_err(|e| ReplicaError::Storage(e.to_string())),
                };
                self.stats.replica.reads_served += 1;
                let release = self.release_for(store.copy_state(&table, &key));
                if let Some(addr) = self.addr_of(&from) {
                    let message = Message::Replica(ReplicaMessage::ReadReply { request, outcome });
                    self.outbox.push(Output::Send { addr, message }, release);
                }
            }
            ReplicaMessage::WriteAck { request, outcome } => {
                if let Some(Pending::Put(fsm, _)) = self.pending.get_mut(&request) {
                    fsm.record(&from, outcome);
                    self.progress_put(request);
                }
            }
            ReplicaMessage::ReadReply { request, outcome } => {
                if let Some(Pending::Get(fsm)) = self.pending.get_mut(&request) {
                    fsm.record(&from, outcome);
                    self.progress_get(request, store);
                }
            }
        }
    }

    /// Sends a fresh `message()` to every replica in `primaries` but this node.
    pub(super) fn send_to_other_replicas(
        &mut self,
        primaries: &[NodeId],
        message: impl Fn() -> Message,
    ) {
        for node in primaries.iter().filter(|p| **p != self.config.id) {
            if let Some(addr) = self.addr_of(node) {
                self.outbox.push(
                    Output::Send {
                        addr,
                        message: message(),
                    },
                    Release::Now,
                );
            }
        }
    }

    /// Replica side of a write, repair or (later) handoff: merge the whole
    /// object in. `Ok(true)` when that changed what this node stores.
    pub(super) fn store_replica(
        &mut self,
        table: &TableName,
        key: &[u8],
        incoming: &Object,
        engine: Option<StorageKind>,
        store: &mut dyn LocalStore,
    ) -> Result<bool, ReplicaError> {
        let entry = self
            .meta
            .tables
            .get(table)
            .ok_or(ReplicaError::UnknownTable)?;
        let (storage, mode) = (entry.config.storage, entry.config.merge);
        let mut object = store
            .load(table, storage, key)
            .map_err(|e| ReplicaError::Storage(e.to_string()))?
            .unwrap_or_default();
        let before = object.clone();
        object.merge(incoming, mode);
        let changed = object != before;
        if changed {
            store
                .stage(table, engine.unwrap_or(storage), key, &object)
                .map_err(|e| ReplicaError::Storage(e.to_string()))?;
        }
        // Also when nothing changed: a tree that was wrong about the key
        // learns what the store holds.
        self.observe_staged(table, key, &object);
        Ok(changed)
    }
}
