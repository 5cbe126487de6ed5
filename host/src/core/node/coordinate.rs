//! Client operations this node coordinates (gets, puts, deletes) or forwards
//! to a replica of the key, and the answers it owes clients. The decisions
//! are the state machines' in `core/coord/`; this file carries them out.

use super::*;
use crate::core::coord::targets::targets;
use crate::core::limits::REQUEST_STALLED_MS;

impl Node {
    /// Forwarded client operations: one to coordinate for another node, or
    /// the answer to one this node forwarded.
    pub(super) fn on_forward(
        &mut self,
        from: NodeId,
        message: ForwardMessage,
        store: &mut dyn LocalStore,
    ) {
        match message {
            ForwardMessage::Request { request, op } => {
                if !self.forwards_seen.first_time(&from, request) {
                    // A duplicate: the first one is answered.
                    return;
                }
                self.stats.client.count_request(&op);
                self.on_client(
                    Origin::Remote {
                        node: from,
                        request,
                    },
                    op,
                    store,
                );
            }
            ForwardMessage::Reply { request, reply } => {
                if let Some(Pending::Forward { client, .. }) = self.pending.remove(&request) {
                    // The coordinator answered after its own commit: nothing here to wait for.
                    self.reply_when(Origin::Local(client), reply, Release::Now);
                }
            }
        }
    }

    pub(super) fn reply(&mut self, origin: Origin, reply: ClientReply) {
        self.reply_when(origin, reply, Release::AfterBatch(self.outbox.open_batch()));
    }

    /// Answers a client once the batch `release` names is durable.
    pub(super) fn reply_when(&mut self, origin: Origin, reply: ClientReply, release: Release) {
        let output = match origin {
            Origin::Local(id) => Output::Reply { id, reply },
            Origin::Background => return,
            Origin::Remote { node, request } => match self.addr_of(&node) {
                Some(addr) => Output::Send {
                    addr,
                    message: Message::Forward(ForwardMessage::Reply { request, reply }),
                },
                None => return,
            },
        };
        self.outbox.push(output, release);
    }

    pub(super) fn on_client(&mut self, origin: Origin, op: ClientOp, store: &mut dyn LocalStore) {
        if self.pending.len() >= CLIENT_REQUESTS_IN_FLIGHT_MAX {
            return self.reply(origin, ClientReply::Overloaded);
        }
        if self.meta.ring.is_none() {
            let reason = "this node has not joined a cluster yet";
            return self.reply(origin, ClientReply::Unavailable(reason.into()));
        }
        if self.meta.removed.contains_key(&self.config.id) {
            let reason = "this node was removed from the cluster";
            return self.reply(origin, ClientReply::Unavailable(reason.into()));
        }
        if let ClientOp::Put {
            context: Some(context),
            ..
        } = &op
        {
            let limit = self.now.wall_ms / 1000 + CONTEXT_EPOCH_AHEAD_MAX_S;
            if context
                .seen
                .actors()
                .any(|a| epoch_generation(a.epoch) > limit)
            {
                let reason = "context token names an epoch no node has reached";
                return self.reply(origin, ClientReply::BadRequest(reason.into()));
            }
        }
        if let ClientOp::Restore { object, .. } = &op {
            if let Some(reason) = crate::core::backup::restore_refusal(object, self.now.wall_ms) {
                return self.reply(origin, ClientReply::BadRequest(reason));
            }
        }
        if let ClientOp::Put { content_type, .. } = &op {
            // The HTTP layer refuses these too; a peer's forwarded write is
            // held to the same bound, so every admitted object fits a frame.
            if content_type.len() > CONTENT_TYPE_BYTES_MAX {
                let reason = format!("Content-Type longer than {CONTENT_TYPE_BYTES_MAX} bytes");
                return self.reply(origin, ClientReply::BadRequest(reason));
            }
        }
        let Some(entry) = self.meta.tables.get(op.table()) else {
            return self.reply(origin, ClientReply::UnknownTable);
        };
        let config = entry.config.clone();
        let Some(ring) = &self.meta.ring else { return };
        let (needed, override_value) = match &op {
            ClientOp::Get { r, .. } => (config.r, *r),
            ClientOp::Put { w, .. } | ClientOp::Restore { w, .. } => (config.w, *w),
        };
        let needed = match override_value {
            Some(k) if k < 1 || k > config.n => {
                return self.reply(
                    origin,
                    ClientReply::BadRequest(format!(
                        "quorum must be between 1 and n ({})",
                        config.n
                    )),
                );
            }
            Some(k) => k,
            None => needed,
        };
        let partition = partition_of(ring.partitions(), op.table(), op.key());
        let primaries = ring.first_n(partition, usize::from(config.n));
        if !primaries.contains(&self.config.id) {
            if self.stands_in_to_coordinate(&op, &config, &primaries) {
                // No primary up: a stand-in among the first n reachable
                // nodes coordinates, this node if it is one.
                let targets = self.replicas_for(op.table(), op.key(), &config);
                if targets.contains(&self.config.id) {
                    let deadline_ms = self.now.mono_ms + self.config.request_timeout_ms;
                    return self.coordinate_as_stand_in(
                        origin,
                        op,
                        &config,
                        needed,
                        &primaries,
                        deadline_ms,
                        store,
                    );
                }
                return self.forward(origin, op, &targets, needed);
            }
            return self.forward(origin, op, &primaries, needed);
        }
        // Sloppy: the reachable primaries and stand-ins for the others.
        let primaries = self.replicas_for(op.table(), op.key(), &config);
        if primaries.len() < usize::from(needed) {
            return self.reply(origin, ClientReply::QuorumNotReached { needed, acked: 0 });
        }
        let deadline_ms = self.now.mono_ms + self.config.request_timeout_ms;
        match op {
            ClientOp::Get { table, key, .. } => {
                let fsm = GetFsm::new(
                    origin,
                    table,
                    key,
                    config,
                    needed,
                    primaries.clone(),
                    deadline_ms,
                    None,
                );
                self.start_get(fsm, &primaries, store);
            }
            ClientOp::Put {
                table,
                key,
                value: None,
                context: None,
                ..
            } => {
                let r = config.r;
                let fsm = GetFsm::new(
                    origin,
                    table,
                    key,
                    config,
                    r,
                    primaries.clone(),
                    deadline_ms,
                    Some(AfterRead::Delete { w: needed }),
                );
                self.start_get(fsm, &primaries, store);
            }
            ClientOp::Restore {
                table, key, object, ..
            } => {
                let restore = (table, key, object);
                self.start_restore(
                    origin,
                    restore,
                    &config,
                    needed,
                    &primaries,
                    deadline_ms,
                    store,
                );
            }
            ClientOp::Put {
                table,
                key,
                value,
                content_type,
                context,
                ..
            } => {
                let write =
                    Write::client(table, key, value, content_type, context.unwrap_or_default());
                let _ = self.start_put(
                    origin,
                    write,
                    &config,
                    needed,
                    &primaries,
                    deadline_ms,
                    store,
                );
            }
        }
    }

    pub(super) fn forward(
        &mut self,
        origin: Origin,
        op: ClientOp,
        primaries: &[NodeId],
        needed: u8,
    ) {
        let Origin::Local(client) = origin else {
            // A forwarded request reached a node that no longer replicates the key.
            return self.reply(
                origin,
                ClientReply::Unavailable("this node is not a replica of the key".into()),
            );
        };
        let target = primaries
            .iter()
            .find(|p| self.status_of(p) == Status::Up)
            .and_then(|p| self.addr_of(p));
        let Some(addr) = target else {
            return self.reply(origin, ClientReply::QuorumNotReached { needed, acked: 0 });
        };
        let request = self.next_id();
        let deadline_ms = self.now.mono_ms + self.config.request_timeout_ms + FORWARD_GRACE_MS;
        self.pending.insert(
            request,
            Pending::Forward {
                client,
                deadline_ms,
                needed,
            },
        );
        self.stats.client.forwarded += 1;
        self.emit(Output::Send {
            addr,
            message: Message::Forward(ForwardMessage::Request { request, op }),
        });
    }

    pub(super) fn next_id(&mut self) -> u64 {
        self.pending.next_id()
    }

    pub(super) fn start_get(
        &mut self,
        mut fsm: GetFsm,
        primaries: &[NodeId],
        store: &mut dyn LocalStore,
    ) {
        fsm.local_batch = match self.release_for(store.copy_state(&fsm.table, &fsm.key)) {
            Release::Now => None,
            Release::AfterBatch(batch) => Some(batch),
        };
        let request = self.next_id();
        let local = store
            .load(&fsm.table, fsm.config.storage, &fsm.key)
            .map_err(|e| ReplicaError::Storage(e.to_string()));
        fsm.record(&self.config.id.clone(), local);
        self.send_to_other_replicas(&fsm.table, &fsm.key, primaries, |hint_for| {
            Message::Replica(ReplicaMessage::Read {
                request,
                table: fsm.table.clone(),
                key: fsm.key.clone(),
                hint_for,
            })
        });
        self.pending.insert(request, Pending::Get(Box::new(fsm)));
        self.progress_get(request, store);
    }

    pub(super) fn progress_get(&mut self, request: u64, store: &mut dyn LocalStore) {
        let now = self.now.mono_ms;
        let Some(Pending::Get(fsm)) = self.pending.get_mut(&request) else {
            return;
        };
        let step = fsm.step(now);
        let done = fsm.is_done(now);
        let origin = fsm.origin.clone();
        let release = fsm.local_batch.map_or(Release::Now, Release::AfterBatch);
        let read_deadline_ms = fsm.deadline_ms;
        let (table, key, config) = (fsm.table.clone(), fsm.key.clone(), fsm.config.clone());
        // A read finishing well past its deadline means this node stalled
        // (SIGSTOP, a starved loop): what it read may predate a delete whose
        // tombstone has since been collected, so it writes nothing from it.
        let stalled = now > read_deadline_ms.saturating_add(REQUEST_STALLED_MS);
        let step = match step {
            GetStep::Write { .. } | GetStep::Delete { .. } | GetStep::Reconcile(_) if stalled => {
                GetStep::Fail(ClientReply::Unavailable(
                    "this node stalled past the request's deadline".into(),
                ))
            }
            step => step,
        };
        match step {
            GetStep::Write {
                merged,
                w,
                value,
                content_type,
                context,
            } => {
                if let Some(merged) = merged {
                    // Dots of this node's own actor that its copy lacks, in
                    // the read or in the context: it may have forgotten dots
                    // it issued, and takes a fresh epoch before it mints
                    // (merging first would hide that).
                    let before = store
                        .load(&table, config.storage, &key)
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    let current = Actor {
                        node: self.config.id.clone(),
                        epoch: self.epoch,
                    };
                    let forgot = merged.clock.max_counter(&current) > self.minted_for(&before)
                        || self.may_have_forgotten(&before, &context.seen);
                    if forgot {
                        let floor = self
                            .epoch
                            .max(context.seen.max_epoch_of(&self.config.id).unwrap_or(0));
                        if let Err(e) = self.take_fresh_epoch(floor, store) {
                            self.reply(origin, ClientReply::Unavailable(e));
                            return self.finish_get(request, done, store);
                        }
                    }
                    // A failed merge leaves the local copy as it was; the
                    // write then goes on as it would have without the read.
                    let _ = self.store_replica(&table, &key, &merged, None, store);
                }
                // Without a quorum read the write still goes on, as it would
                // have; within the request's one deadline.
                let primaries = self.replicas_for(&table, &key, &config);
                let deadline_ms = read_deadline_ms;
                let mut write =
                    Write::client(table.clone(), key.clone(), value, content_type, context);
                write.read_first = false;
                let _ = self.start_put(origin, write, &config, w, &primaries, deadline_ms, store);
            }
            GetStep::Delete { merged, w } => {
                let primaries = self.replicas_for(&table, &key, &config);
                let deadline_ms = now + self.config.request_timeout_ms;
                // The tombstone supersedes everything the read merged and is
                // stamped after all of it, even versions this node lacks.
                let seen = ClientContext {
                    seen: merged.clock.clone(),
                    max_timestamp_ms: ClientContext::of_versions(&merged.versions).max_timestamp_ms,
                };
                let mut write =
                    Write::client(table.clone(), key.clone(), None, String::new(), seen);
                write.read_first = false;
                let _ = self.start_put(origin, write, &config, w, &primaries, deadline_ms, store);
            }
            GetStep::Reconcile(merged) => {
                self.start_reconcile(Some(origin), table, key, config, merged, store);
            }
            GetStep::Answer(read) => self.reply_when(origin, read, release),
            GetStep::Fail(failure) => self.reply(origin, failure),
            GetStep::Wait => {}
        }
        self.finish_get(request, done, store);
    }

    /// Once a read is done, it repairs the replicas that differed, unless
    /// it finished well past its deadline (this node stalled, and what it
    /// read may be older than a collected tombstone).
    pub(super) fn finish_get(&mut self, request: u64, done: bool, store: &mut dyn LocalStore) {
        if done {
            if let Some(Pending::Get(fsm)) = self.pending.remove(&request) {
                let stalled = self.now.mono_ms > fsm.deadline_ms.saturating_add(REQUEST_STALLED_MS);
                if !stalled {
                    self.read_repair(&fsm, store);
                }
            }
        }
    }

    /// Takes a fresh epoch above `floor`, durable before it is used.
    pub(super) fn take_fresh_epoch(
        &mut self,
        floor: u64,
        store: &mut dyn LocalStore,
    ) -> Result<(), String> {
        let epoch = fresh_epoch(floor, self.now, &mut self.rng).map_err(|e| e.to_string())?;
        store.persist_epoch_now(epoch).map_err(|e| e.to_string())?;
        self.epoch = epoch;
        self.refresh_own_record(store);
        Ok(())
    }

    pub(super) fn read_repair(&mut self, fsm: &GetFsm, store: &mut dyn LocalStore) {
        let (merged, stale) = fsm.repairs();
        // A stand-in's hint is handed off to its owner: only primaries are repaired.
        let primaries = self.primaries_of(&fsm.table, &fsm.key, fsm.config.n);
        for node in stale.into_iter().filter(|node| primaries.contains(node)) {
            if node == self.config.id {
                // Merge, never overwrite: the local copy may have moved on since the read.
                let _ = self.store_replica(&fsm.table, &fsm.key, &merged, None, store);
            } else if let Some(addr) = self.addr_of(&node) {
                let message = Message::Replica(ReplicaMessage::Repair {
                    table: fsm.table.clone(),
                    key: fsm.key.clone(),
                    object: merged.clone(),
                });
                self.stats.replica.repairs_sent += 1;
                self.emit(Output::Send { addr, message });
            }
        }
    }

    /// The nodes a request for `key` goes to: on a sloppy table the first
    /// `n` reachable nodes of its preference list (stand-ins for the
    /// unreachable primaries); otherwise its primaries, reachable or not.
    pub(super) fn replicas_for(
        &self,
        table: &TableName,
        key: &[u8],
        config: &TableConfig,
    ) -> Vec<NodeId> {
        let Some(ring) = &self.meta.ring else {
            return Vec::new();
        };
        let n = usize::from(config.n);
        let preference = ring.preference_list(partition_of(ring.partitions(), table, key));
        if !config.sloppy {
            return preference.into_iter().take(n).collect();
        }
        targets(&preference, n, true, |node| {
            self.status_of(node) == Status::Up
        })
    }

    pub(super) fn primaries_of(&self, table: &TableName, key: &[u8], n: u8) -> Vec<NodeId> {
        let Some(ring) = &self.meta.ring else {
            return Vec::new();
        };
        ring.first_n(partition_of(ring.partitions(), table, key), usize::from(n))
    }

    /// The coordinator's half of a write: mint the dot, apply it to the local
    /// object, stage it, and send the whole object to the other primaries.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_put(
        &mut self,
        origin: Origin,
        write: Write,
        config: &TableConfig,
        w: u8,
        primaries: &[NodeId],
        deadline_ms: u64,
        store: &mut dyn LocalStore,
    ) -> Option<ClientContext> {
        if write.is_merge {
            // Held from before the storage plugin runs, so no concurrent read
            // mints a second write-back of the key meanwhile.
            self.writebacks
                .insert((write.table.clone(), write.key.clone()));
        }
        if config.storage == StorageKind::Plugin {
            return self.start_placement(origin, write, config, w, primaries, deadline_ms, store);
        }
        self.put_placed(
            origin,
            write,
            config,
            w,
            primaries,
            deadline_ms,
            config.storage,
            store,
        )
    }

    /// [`Node::start_put`] once the engine is known.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn put_placed(
        &mut self,
        origin: Origin,
        write: Write,
        config: &TableConfig,
        w: u8,
        primaries: &[NodeId],
        deadline_ms: u64,
        engine: StorageKind,
        store: &mut dyn LocalStore,
    ) -> Option<ClientContext> {
        let mut write = write;
        let merged_answer = write.merged_answer.take();
        let local = match store.load(&write.table, config.storage, &write.key) {
            Ok(found) => found.unwrap_or_default(),
            Err(e) => {
                let failure = ClientReply::Unavailable(e.to_string());
                self.abandon_write(origin, &write, merged_answer, failure);
                return None;
            }
        };
        if write.read_first && !local.clock.descends(&write.context) {
            // The client saw versions this copy lacks (it read them from
            // other replicas): read the key at R and merge first, so the
            // write supersedes here too what the client saw superseded.
            let then = AfterRead::Write {
                w,
                value: write.value,
                content_type: write.content_type,
                context: ClientContext {
                    seen: write.context,
                    max_timestamp_ms: write.seen_max_ms,
                },
            };
            let fsm = GetFsm::new(
                origin,
                write.table,
                write.key,
                config.clone(),
                config.r,
                primaries.to_vec(),
                deadline_ms,
                Some(then),
            );
            self.start_get(fsm, primaries, store);
            return None;
        }
        // Counters exhausted under this epoch (a clock from a peer may say
        // so): a fresh epoch starts them again, never a wrapped counter.
        let exhausted = self.minted_for(&local) == u64::MAX;
        if exhausted || self.may_have_forgotten(&local, &write.context) {
            let floor = self
                .epoch
                .max(write.context.max_epoch_of(&self.config.id).unwrap_or(0));
            if let Err(e) = self.take_fresh_epoch(floor, store) {
                let failure = ClientReply::Unavailable(e);
                self.abandon_write(origin, &write, merged_answer, failure);
                return None;
            }
        }
        let actor = Actor {
            node: self.config.id.clone(),
            epoch: self.epoch,
        };
        let Some(counter) = self.minted_for(&local).checked_add(1) else {
            let failure = ClientReply::Unavailable("no counter left for this key's writes".into());
            self.abandon_write(origin, &write, merged_answer, failure);
            return None;
        };
        let mut local = local;
        if counter > local.clock.max_counter(&actor).saturating_add(1) {
            // Past the mint floor: the skipped counters are marked seen.
            local.clock.cover_through(&actor, counter - 1);
        }
        let dot = Dot { counter, actor };
        // A descendant is stamped after every ancestor it supersedes: those
        // held here and those the client saw elsewhere (clock skew must not
        // let an ancestor outrank it under lww).
        let timestamp_ms = write.timestamp_ms.unwrap_or_else(|| {
            let ancestors = local
                .max_timestamp_covered(&write.context)
                .max(write.seen_max_ms);
            self.now.wall_ms.max(ancestors.saturating_add(1))
        });
        let content_type = if write.value.is_some() && write.content_type.is_empty() {
            "application/octet-stream".to_owned()
        } else {
            write.content_type.clone()
        };
        let version = Version {
            dot: dot.clone(),
            timestamp_ms,
            value: write.value.clone(),
            content_type,
        };
        let mut object = local;
        object.apply_write(&write.context, version, config.merge);
        let live = object.live_count();
        if live > SIBLINGS_MAX || object.live_bytes() > OBJECT_LIVE_BYTES_MAX {
            let failure = ClientReply::TooManySiblings { siblings: live };
            self.abandon_write(origin, &write, merged_answer, failure);
            return None;
        }
        if let Err(e) = store.stage(&write.table, engine, &write.key, &object) {
            let failure = match e {
                StoreError::Full(reason) => ClientReply::InsufficientStorage(reason),
                StoreError::Failed(_) => ClientReply::Unavailable(e.to_string()),
            };
            self.abandon_write(origin, &write, merged_answer, failure);
            return None;
        }
        self.observe_staged(&write.table, &write.key, &object);
        let context_out = ClientContext::of_new_version(dot, timestamp_ms);
        let returned = context_out.clone();
        let request = self.next_id();
        let slot = (write.table.clone(), write.key.clone());
        let fsm = PutFsm::new(
            origin,
            slot,
            w,
            primaries.to_vec(),
            context_out,
            deadline_ms,
        );
        self.primaries_left_out(&write.table, &write.key, primaries);
        self.outbox.local_copy_staged(request);
        let placed = (config.storage == StorageKind::Plugin).then_some(engine);
        self.send_to_other_replicas(&write.table, &write.key, primaries, |hint_for| {
            Message::Replica(ReplicaMessage::Write {
                request,
                table: write.table.clone(),
                key: write.key.clone(),
                object: object.clone(),
                engine: placed,
                hint_for,
            })
        });
        self.copy_to_new_replicas(&write.table, &write.key, config.n, primaries, &object);
        let writeback = write
            .is_merge
            .then(|| (write.table.clone(), write.key.clone()));
        if let Some(key) = &writeback {
            self.writebacks.insert(key.clone());
        }
        if let Some(answer) = merged_answer {
            // The merged read is answered with the write-back's context, so
            // a client writing with it supersedes the write-back too.
            let (origin, reply) = answer.into_reply(returned.clone());
            self.reply(origin, reply);
        }
        self.pending.insert(request, Pending::Put(fsm, writeback));
        self.progress_put(request);
        let crowded = config.merge == MergeMode::Plugin && live >= RECONCILE_ON_WRITE_FROM;
        if crowded
            && !write.is_merge
            && !self
                .writebacks
                .contains(&(write.table.clone(), write.key.clone()))
        {
            self.start_reconcile(None, write.table, write.key, config.clone(), object, store);
        }
        Some(returned)
    }

    /// The coordinator's half of a restore: merge the backup's object into
    /// the local copy, stage it, and send the whole merged object to the
    /// other replicas; answered once W hold it durably. A `storage: plugin`
    /// table's restored keys go to LMDB (no plugin call chooses for them).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_restore(
        &mut self,
        origin: Origin,
        (table, key, restored): (TableName, Bytes, Object),
        config: &TableConfig,
        w: u8,
        primaries: &[NodeId],
        deadline_ms: u64,
        store: &mut dyn LocalStore,
    ) {
        let engine = match config.storage {
            StorageKind::Plugin => StorageKind::Lmdb,
            other => other,
        };
        let mut object = match store.load(&table, config.storage, &key) {
            Ok(found) => found.unwrap_or_default(),
            Err(e) => return self.reply(origin, ClientReply::Unavailable(e.to_string())),
        };
        object.merge(&restored, config.merge);
        let live = object.live_count();
        let crowded = object.versions.len() > SIBLINGS_MAX + 1;
        if crowded || live > SIBLINGS_MAX || object.live_bytes() > OBJECT_LIVE_BYTES_MAX {
            return self.reply(origin, ClientReply::TooManySiblings { siblings: live });
        }
        if let Err(e) = store.stage(&table, engine, &key, &object) {
            let failure = match e {
                StoreError::Full(reason) => ClientReply::InsufficientStorage(reason),
                StoreError::Failed(_) => ClientReply::Unavailable(e.to_string()),
            };
            return self.reply(origin, failure);
        }
        self.observe_staged(&table, &key, &object);
        let context_out = ClientContext::of_versions(object.live());
        let request = self.next_id();
        let fsm = PutFsm::new(
            origin,
            (table.clone(), key.clone()),
            w,
            primaries.to_vec(),
            context_out,
            deadline_ms,
        );
        self.primaries_left_out(&table, &key, primaries);
        self.outbox.local_copy_staged(request);
        let placed = (config.storage == StorageKind::Plugin).then_some(engine);
        self.send_to_other_replicas(&table, &key, primaries, |hint_for| {
            Message::Replica(ReplicaMessage::Write {
                request,
                table: table.clone(),
                key: key.clone(),
                object: object.clone(),
                engine: placed,
                hint_for,
            })
        });
        self.copy_to_new_replicas(&table, &key, config.n, primaries, &object);
        self.pending.insert(request, Pending::Put(fsm, None));
        self.progress_put(request);
    }

    /// A write that stopped before it was minted: its client (or the reader
    /// waiting for a merge's write-back) gets `failure` (the merge itself,
    /// with the read's context), and a write-back no longer holds its key.
    pub(super) fn abandon_write(
        &mut self,
        origin: Origin,
        write: &Write,
        merged_answer: Option<reconcile::MergedAnswer>,
        failure: ClientReply,
    ) {
        if write.is_merge {
            self.writebacks
                .remove(&(write.table.clone(), write.key.clone()));
        }
        match merged_answer {
            Some(answer) => {
                let fallback = answer.read_context.clone();
                let (origin, reply) = answer.into_reply(fallback);
                self.reply(origin, reply);
            }
            None => self.reply(origin, failure),
        }
    }

    /// The largest counter this node's current actor may have minted for a
    /// key whose local copy is `local`: the copy's own, or above it the
    /// counters of tombstones collected under this epoch (the mint floor),
    /// so a key deleted and collected never gets a dot it had before.
    pub(super) fn minted_for(&self, local: &Object) -> u64 {
        let actor = Actor {
            node: self.config.id.clone(),
            epoch: self.epoch,
        };
        local.clock.max_counter(&actor).max(self.mint_floor())
    }

    /// Whether the client's context shows dots of this node that its local copy
    /// lacks (beyond what collected tombstones explain): then it may have
    /// forgotten dots it issued and must not reuse them.
    pub(super) fn may_have_forgotten(&self, local: &Object, context: &CausalContext) -> bool {
        let actor = Actor {
            node: self.config.id.clone(),
            epoch: self.epoch,
        };
        context.max_counter(&actor) > self.minted_for(local)
            || context
                .max_epoch_of(&self.config.id)
                .is_some_and(|e| e > self.epoch)
    }

    pub(super) fn progress_put(&mut self, request: u64) {
        let now = self.now.mono_ms;
        let Some(Pending::Put(fsm, writeback)) = self.pending.get_mut(&request) else {
            return;
        };
        let answer = fsm.take_reply(now);
        let done = fsm.is_done(now);
        let origin = fsm.origin.clone();
        // A write-back stops blocking other merges of its key once it is answered.
        let released = if answer.is_some() || done {
            writeback.take()
        } else {
            None
        };
        if let Some(key) = released {
            self.writebacks.remove(&key);
        }
        // Every ack it counts is durable: remote ones are sent after their
        // commit, the local one is counted at `batch_durable`.
        if let Some(reply) = answer {
            self.reply_when(origin, reply, Release::Now);
        }
        if done {
            self.pending.remove(&request);
        }
    }
}

/// A client write on its way to the coordinator's local object.
pub(super) struct Write {
    pub(super) table: TableName,
    pub(super) key: Bytes,
    pub(super) value: Option<Bytes>,
    pub(super) content_type: String,
    /// The dots this write supersedes.
    pub(super) context: CausalContext,
    /// The largest timestamp among the versions the client saw: the write is
    /// stamped after it.
    pub(super) seen_max_ms: u64,
    /// A plugin merge is stamped with the largest timestamp it merged.
    pub(super) timestamp_ms: Option<u64>,
    /// Whether this is a plugin merge's write-back.
    pub(super) is_merge: bool,
    /// A merge's write-back: the read waiting to be answered once it is minted.
    pub(super) merged_answer: Option<reconcile::MergedAnswer>,
    /// Whether a coordinator lacking versions the context names reads the
    /// key first (client writes; not the write that follows such a read).
    pub(super) read_first: bool,
}

impl Write {
    /// A client's write (or delete, with no value), stamped by the coordinator's clock.
    pub(super) fn client(
        table: TableName,
        key: Bytes,
        value: Option<Bytes>,
        content_type: String,
        context: ClientContext,
    ) -> Write {
        Write {
            table,
            key,
            value,
            content_type,
            context: context.seen,
            seen_max_ms: context.max_timestamp_ms,
            timestamp_ms: None,
            is_merge: false,
            merged_answer: None,
            read_first: true,
        }
    }
}
