//! Replica traffic: storing the copies coordinators send, serving replica
//! reads, and feeding replicas' answers to the coordinator's state machines.

use super::*;
use crate::core::coord::targets::owner_of;

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
                hint_for,
            } => {
                let outcome = if self.takes_no_more() {
                    Err(ReplicaError::Storage(format!(
                        "node {} is leaving the cluster and keeps nothing more",
                        self.config.id
                    )))
                } else {
                    self.store_write(hint_for, (&table, &key), &object, engine, store)
                };
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
                // A repair for a key this node does not replicate (sent
                // under an older ring) is not kept: its replicas get theirs.
                let n = self.meta.tables.get(&table).map(|e| e.config.n);
                if n.is_some_and(|n| self.keeps_copy(&table, &key, n)) {
                    let _ = self.store_replica(&table, &key, &object, None, store);
                }
            }
            ReplicaMessage::Read {
                request,
                table,
                key,
                hint_for,
            } => {
                self.stats.replica.reads_served += 1;
                let (outcome, release) = match hint_for.filter(|owner| *owner != self.config.id) {
                    Some(owner) => self.read_hint(&owner, &table, &key, store),
                    None => {
                        let outcome = match self.meta.tables.get(&table) {
                            None => Err(ReplicaError::UnknownTable),
                            // A coordinator behind on the ring asks a former
                            // replica: its "not found" must not count toward R.
                            Some(entry) if !self.keeps_copy(&table, &key, entry.config.n) => {
                                Err(ReplicaError::Storage(
                                    "not a replica of the key under this node's ring".into(),
                                ))
                            }
                            Some(entry) => store
                                .load(&table, entry.config.storage, &key)
                                .map_err(|e| ReplicaError::Storage(e.to_string())),
                        };
                        (outcome, self.release_for(store.copy_state(&table, &key)))
                    }
                };
                if let Some(addr) = self.addr_of(&from) {
                    let message = Message::Replica(ReplicaMessage::ReadReply { request, outcome });
                    self.outbox.push(Output::Send { addr, message }, release);
                }
            }
            ReplicaMessage::WriteAck { request, outcome } => {
                if let Some(Pending::Put(fsm, _)) = self.pending.get_mut(&request) {
                    let missed = outcome
                        .is_err()
                        .then(|| (fsm.slot.clone(), fsm.asked.clone()));
                    fsm.record(&from, outcome);
                    self.progress_put(request);
                    if let Some(((table, key), asked)) = missed {
                        self.write_missed(&table, &key, &from, &asked);
                    }
                }
            }
            ReplicaMessage::ReadReply { request, outcome } => {
                let Some(Pending::Get(fsm)) = self.pending.get(&request) else {
                    return;
                };
                // A stand-in that holds no hint for the key knows nothing
                // of it: its "not found" does not count toward R, or a read
                // (and a delete's read) could miss acknowledged writes.
                let stand_in = |node: &NodeId| {
                    !self
                        .primaries_of(&fsm.table, &fsm.key, fsm.config.n)
                        .contains(node)
                };
                let outcome = match outcome {
                    Ok(None) if stand_in(&from) => Err(ReplicaError::Storage(
                        "a stand-in without a hint for the key".into(),
                    )),
                    other => other,
                };
                if let Some(Pending::Get(fsm)) = self.pending.get_mut(&request) {
                    fsm.record(&from, outcome);
                    self.progress_get(request, store);
                }
            }
        }
    }

    /// Keeps a coordinator's write: as a hint for `hint_for`, as a replica,
    /// or, for a key this node no longer replicates (a coordinator whose
    /// ring predates a completed move), as hints for the key's replicas.
    fn store_write(
        &mut self,
        hint_for: Option<NodeId>,
        (table, key): (&TableName, &Bytes),
        object: &Object,
        engine: Option<StorageKind>,
        store: &mut dyn LocalStore,
    ) -> Result<(), ReplicaError> {
        if let Some(owner) = hint_for.filter(|owner| *owner != self.config.id) {
            let kept = self.store_hint(&owner, table, key, object, store);
            if kept.is_ok() {
                self.stats.handoff.hints_stored += 1;
            }
            return kept;
        }
        match self.meta.tables.get(table).map(|e| e.config.n) {
            Some(n) if !self.keeps_copy(table, key, n) => {
                self.hand_over(table, key, object, n, store)
            }
            _ => self
                .store_replica(table, key, object, engine, store)
                .map(|_changed| ()),
        }
    }

    /// `incoming` merged into this node's copy of `key` (none: empty), whether
    /// that changed the copy, and the table's engine.
    pub(super) fn merged_with_local(
        &self,
        table: &TableName,
        key: &[u8],
        incoming: &Object,
        store: &mut dyn LocalStore,
    ) -> Result<(Object, bool, StorageKind), ReplicaError> {
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
        Ok((object, changed, storage))
    }

    /// Sends a fresh `message(hint_for)` to every node in `replicas` (those
    /// asked for a key of `table`) but this one; `hint_for` names the
    /// primary a node stands in for (sloppy quorum), `None` for a primary.
    pub(super) fn send_to_other_replicas(
        &mut self,
        table: &TableName,
        key: &[u8],
        replicas: &[NodeId],
        message: impl Fn(Option<NodeId>) -> Message,
    ) {
        let primaries = match self.meta.tables.get(table) {
            Some(entry) => self.primaries_of(table, key, entry.config.n),
            None => Vec::new(),
        };
        for node in replicas.iter().filter(|p| **p != self.config.id) {
            let hint_for = owner_of(node, &primaries, replicas).cloned();
            if let Some(addr) = self.addr_of(node) {
                self.outbox.push(
                    Output::Send {
                        addr,
                        message: message(hint_for),
                    },
                    Release::Now,
                );
            }
        }
    }

    /// Replica side of a write, repair or handoff: merge the whole object
    /// in. `Ok(true)` when that changed what this node stores.
    pub(super) fn store_replica(
        &mut self,
        table: &TableName,
        key: &[u8],
        incoming: &Object,
        engine: Option<StorageKind>,
        store: &mut dyn LocalStore,
    ) -> Result<bool, ReplicaError> {
        let (object, changed, storage) = self.merged_with_local(table, key, incoming, store)?;
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
