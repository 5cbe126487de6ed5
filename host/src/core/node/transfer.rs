//! Partition transfer: when a ring move makes this node a new replica of
//! partitions, it pulls their data from a current replica in throttled
//! pages, merging each object in (so writes that reached it during the move
//! are never overwritten), with a checkpoint committed in the same batch as
//! the page. Once a partition's walk is complete and durable, the node marks
//! it moved in the ring; the move completes on every node once every copy it
//! needs is marked (`Ring::settle`). The bookkeeping is
//! [`crate::core::transfer`]'s; this file serves pages as a source too.

use super::*;
use crate::core::limits::{
    REPLICAS_MAX, TRANSFER_ANSWER_MS, TRANSFER_PAGE_BYTES, TRANSFER_PAGE_KEYS_EXAMINED,
};
use crate::core::msg::{MoveStatus, TransferMessage, TransferStatus, WalkPosition};
use crate::core::transfer::{Checkpoints, PageOutcome, CHECKPOINTS_RECORD};
use std::collections::BTreeMap;

/// A transfer's checkpoints as stored, or none (a record that does not
/// decode is dropped: the walks it named start again, which costs time, not data).
pub(super) fn load_checkpoints(store: &mut dyn LocalStore) -> Checkpoints {
    store
        .load_local(CHECKPOINTS_RECORD)
        .ok()
        .flatten()
        .and_then(|bytes| postcard::from_bytes(&bytes).ok())
        .unwrap_or_default()
}

impl Node {
    /// The partitions this node must still copy for the ring's move, in
    /// order (those whose copy waits for its batch to be durable excluded).
    pub(super) fn incoming_partitions(&self) -> Vec<u32> {
        match &self.meta.ring {
            Some(ring) if ring.next.is_some() => ring
                .incoming(&self.config.id, &self.meta.replica_counts())
                .into_iter()
                .filter(|p| !self.marks_waiting.iter().any(|(_, _, ps)| ps.contains(p)))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Batch `batch` is durable: the partitions whose last page it held are
    /// marked moved now (never before: a mark says the copy is durable),
    /// if the move is still the one they were copied for.
    pub(super) fn marks_durable(&mut self, batch: u64) {
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.marks_waiting)
            .into_iter()
            .partition(|(b, _, _)| *b <= batch);
        self.marks_waiting = waiting;
        let mut marked = 0u64;
        for (_, plan, partitions) in due {
            let Some(ring) = self.meta.ring.as_mut().filter(|r| r.plan_id() == plan) else {
                continue;
            };
            for p in partitions {
                marked += u64::from(ring.mark_moved(p, &self.config.id));
            }
        }
        self.marked(marked);
    }

    /// `marked` copies were just marked moved: the move may settle, and
    /// every member hears of it at once.
    fn marked(&mut self, marked: u64) {
        if marked == 0 {
            return;
        }
        self.stats.transfer.partitions_completed += marked;
        self.meta.settle_ring();
        self.meta_unstaged = true;
        let gossip = Message::Member(MemberMessage::Gossip(Box::new(self.meta.clone())));
        for addr in self.peer_addrs() {
            self.emit(Output::Send {
                addr,
                message: gossip.clone(),
            });
        }
    }

    /// Whether the operator wrote `node` off: its removal or replacement
    /// was forced (or it is removed), so nothing is waited for from it and
    /// it is not asked for pages (what only it held is lost with it).
    fn written_off(&self, node: &NodeId) -> bool {
        self.meta.leaving.get(node).is_some_and(|d| d.drained)
            || self.meta.removed.contains_key(node)
            || self
                .meta
                .replacements
                .values()
                .any(|r| r.force && r.old == *node)
    }

    /// Where each incoming partition is copied from. For each n this node
    /// receives the partition for, smallest first, the first n current
    /// replicas hold the keys of every table with that n or more: the first
    /// of them that is up is the source. If one of them is merely down, the
    /// partition waits for it. Only when all of them are written off does
    /// the next larger n get its turn (the tables with the smaller n lose
    /// what only the written-off members held, as `--force` says); after
    /// them, a new replica that already copied the partition (marked). A
    /// partition nobody usable holds is in the second list, to be marked
    /// at once with nothing to copy.
    fn transfer_sources(&self, ring: &Ring, incoming: &[u32]) -> (BTreeMap<u32, NodeId>, Vec<u32>) {
        let counts = self.meta.replica_counts();
        let usable = |node: &NodeId| *node != self.config.id && !self.written_off(node);
        let mut sources = BTreeMap::new();
        let mut nothing_left = Vec::new();
        for &p in incoming {
            let reaches = counts
                .iter()
                .filter(|&&n| ring.receives(p as usize, n, &self.config.id));
            let mut candidate_lists: Vec<Vec<NodeId>> = reaches
                .map(|&n| ring.first_n(p as usize, usize::from(n)))
                .collect();
            let copied: Vec<NodeId> = ring
                .next
                .as_ref()
                .map(|next| {
                    next.moved
                        .iter()
                        .filter(|(q, _)| *q == p)
                        .map(|(_, node)| node.clone())
                        .collect()
                })
                .unwrap_or_default();
            candidate_lists.push(copied);
            let mut decided = false;
            for candidates in candidate_lists {
                let usable: Vec<&NodeId> = candidates.iter().filter(|n| usable(n)).collect();
                if let Some(up) = usable.iter().find(|n| self.status_of(n) == Status::Up) {
                    sources.insert(p, (*up).clone());
                    decided = true;
                    break;
                }
                if !usable.is_empty() {
                    // A usable replica is down: wait for it.
                    decided = true;
                    break;
                }
            }
            if !decided {
                nothing_left.push(p);
            }
        }
        (sources, nothing_left)
    }

    /// One transfer turn: forgets walks no longer needed, gives up an
    /// overdue fetch, and asks for the next page as the throttle allows.
    pub(super) fn transfer_turn(&mut self, store: &mut dyn LocalStore) {
        let incoming = self.incoming_partitions();
        let mut changed = self.incoming.retain(&incoming);
        if let Some(ring) = self.meta.ring.as_ref().filter(|_| !incoming.is_empty()) {
            changed |= self.incoming.for_plan(ring.plan_id());
        }
        if changed {
            self.stage_checkpoints(store);
        }
        let now = self.now.mono_ms;
        if let Some(overdue) = self.incoming.overdue(now) {
            let asked_at = overdue.deadline_ms.saturating_sub(TRANSFER_ANSWER_MS);
            self.liveness.call_failed(&overdue.source, asked_at);
        }
        if incoming.is_empty() {
            return;
        }
        let Some(ring) = self.meta.ring.clone() else {
            return;
        };
        let (sources, nothing_left) = self.transfer_sources(&ring, &incoming);
        if !nothing_left.is_empty() {
            let mut marked = 0u64;
            if let Some(ring) = self.meta.ring.as_mut() {
                for p in nothing_left {
                    marked += u64::from(ring.mark_moved(p, &self.config.id));
                }
            }
            self.marked(marked);
            return;
        }
        let request = self.pending.next_id();
        let source_of = |p: u32| sources.get(&p).cloned();
        let Some(fetch) = self.incoming.next_fetch(
            &incoming,
            source_of,
            request,
            now,
            (TRANSFER_ANSWER_MS, TRANSFER_PAGE_BYTES),
        ) else {
            return;
        };
        let Some(addr) = self.addr_of(&fetch.source) else {
            self.incoming.failed(request);
            return;
        };
        self.fetch_plan = ring.plan_id();
        self.emit(Output::Send {
            addr,
            message: Message::Transfer(TransferMessage::Fetch {
                request,
                plan: ring.plan_id(),
                partitions: fetch.partitions,
                after: fetch.after,
                max_bytes: fetch.max_bytes,
            }),
        });
    }

    /// During a ring move, a write also reaches the key's new replicas
    /// (merged in, unacknowledged: W still counts the current replicas,
    /// whom reads ask), so a partition copied before the write does not
    /// miss it when the move completes.
    pub(super) fn copy_to_new_replicas(
        &mut self,
        table: &TableName,
        key: &[u8],
        n: u8,
        asked: &[NodeId],
        object: &Object,
    ) {
        let Some(ring) = self.meta.ring.as_ref().filter(|r| r.next.is_some()) else {
            return;
        };
        let partition = partition_of(ring.partitions(), table, key);
        let new_replicas: Vec<NodeId> = ring
            .future_first_n(partition, usize::from(n))
            .into_iter()
            .filter(|node| ring.receives(partition, n, node) && !asked.contains(node))
            .filter(|node| *node != self.config.id)
            .collect();
        for node in new_replicas {
            if let Some(addr) = self.addr_of(&node) {
                let message = Message::Replica(ReplicaMessage::Repair {
                    table: table.clone(),
                    key: Bytes::copy_from_slice(key),
                    object: object.clone(),
                });
                self.emit(Output::Send { addr, message });
            }
        }
    }

    /// Stages the checkpoints in the open batch (with the objects they account for).
    fn stage_checkpoints(&mut self, store: &mut dyn LocalStore) {
        if let Ok(bytes) = postcard::to_allocvec(&self.incoming.checkpoints) {
            // A failed stage shows up as a failed commit in the driver.
            let _ = store.stage_local(CHECKPOINTS_RECORD, &bytes);
        }
    }

    /// Transfer messages: fetches as a source, pages as a receiver.
    pub(super) fn on_transfer(
        &mut self,
        from: NodeId,
        message: TransferMessage,
        store: &mut dyn LocalStore,
    ) {
        match message {
            TransferMessage::Fetch {
                request,
                plan,
                partitions,
                after,
                max_bytes,
            } => {
                let page_bytes = (max_bytes as usize).min(TRANSFER_PAGE_BYTES);
                let walk = (&partitions[..], after, page_bytes);
                let answer = self.serve_page(&from, request, plan, walk, store);
                if let TransferMessage::Page { objects, .. } = &answer {
                    self.stats.transfer.pages_served += 1;
                    self.stats.transfer.keys_sent += objects.len() as u64;
                }
                if let Some(addr) = self.addr_of(&from) {
                    self.emit(Output::Send {
                        addr,
                        message: Message::Transfer(answer),
                    });
                }
            }
            TransferMessage::Page {
                request,
                objects,
                next,
                estimate,
            } => self.take_page(&from, request, objects, next, estimate, store),
            TransferMessage::Refused { request, .. } => {
                self.incoming.failed(request);
            }
        }
    }

    /// Source side: the next page of `receiver`'s walk of `partitions`
    /// after `after`, of every table it is a new replica of there.
    fn serve_page(
        &mut self,
        receiver: &NodeId,
        request: u64,
        plan: u64,
        (partitions, after, page_bytes): (&[u32], WalkPosition, usize),
        store: &mut dyn LocalStore,
    ) -> TransferMessage {
        let refuse = |reason: String| TransferMessage::Refused { request, reason };
        let Some(ring) = self.meta.ring.clone() else {
            return refuse("this node has not joined a cluster".into());
        };
        if self.takes_no_more() {
            return refuse("this node handed over what it held and is leaving".into());
        }
        if ring.next.is_none() || ring.plan_id() != plan {
            return refuse(format!(
                "this node's ring (version {}) plans another move: ask again once gossip settles",
                ring.version
            ));
        }
        let q = ring.partitions();
        let wanted: HashSet<u32> = partitions
            .iter()
            .copied()
            .filter(|&p| (p as usize) < q)
            .collect();
        // The walk's tables, in name order, each with the partitions the
        // receiver is a new replica of for that table's n.
        let tables: Vec<(TableName, StorageKind, HashSet<u32>)> = self
            .meta
            .tables
            .iter()
            .filter(|(name, _)| after.as_ref().is_none_or(|(t, _)| *name >= t))
            .map(|(name, entry)| {
                let n = entry.config.n.min(REPLICAS_MAX);
                let mine: HashSet<u32> = wanted
                    .iter()
                    .copied()
                    .filter(|&p| ring.receives(p as usize, n, receiver))
                    .collect();
                (name.clone(), entry.config.storage, mine)
            })
            .filter(|(_, _, mine)| !mine.is_empty())
            .collect();
        let estimate = tables.iter().fold(0u64, |sum, (table, _, _)| {
            let held = store.key_count(table).unwrap_or(0);
            sum + held.saturating_mul(wanted.len() as u64) / q as u64
        });
        let mut objects = Vec::new();
        let mut bytes = 0usize;
        let mut examined = 0usize;
        for (table, storage, mine) in &tables {
            let mut cursor: Option<Bytes> = match &after {
                Some((t, key)) if t == table => Some(key.clone()),
                _ => None,
            };
            loop {
                let room = TRANSFER_PAGE_KEYS_EXAMINED - examined;
                let keys = match store.keys_after(table, cursor.as_deref(), room) {
                    Ok(keys) => keys,
                    Err(e) => return refuse(e.to_string()),
                };
                let exhausted = keys.len() < room;
                for key in keys {
                    examined += 1;
                    let partition = partition_of(q, table, &key) as u32;
                    if mine.contains(&partition) {
                        let object = match store.load(table, *storage, &key) {
                            Ok(found) => found,
                            Err(e) => return refuse(e.to_string()),
                        };
                        if let Some(object) = object {
                            let size = object_bytes(&key, &object);
                            if bytes > 0 && bytes + size > page_bytes {
                                // The page is full: the next starts at this key.
                                return TransferMessage::Page {
                                    request,
                                    objects,
                                    next: Some((table.clone(), cursor.unwrap_or_default())),
                                    estimate,
                                };
                            }
                            bytes += size;
                            objects.push((table.clone(), key.clone(), object));
                        }
                    }
                    cursor = Some(key);
                }
                if examined >= TRANSFER_PAGE_KEYS_EXAMINED && !exhausted {
                    return TransferMessage::Page {
                        request,
                        objects,
                        next: Some((table.clone(), cursor.unwrap_or_default())),
                        estimate,
                    };
                }
                if exhausted {
                    break;
                }
            }
        }
        TransferMessage::Page {
            request,
            objects,
            next: None,
            estimate,
        }
    }

    /// Receiver side: merges a page in, moves the checkpoint on in the same
    /// batch, and marks the partitions whose walk it completed as moved once
    /// that batch is durable.
    fn take_page(
        &mut self,
        from: &NodeId,
        request: u64,
        objects: Vec<(TableName, Bytes, Object)>,
        next: WalkPosition,
        estimate: u64,
        store: &mut dyn LocalStore,
    ) {
        let Some(fetch) = self
            .incoming
            .in_flight
            .clone()
            .filter(|f| f.request == request && f.source == *from)
        else {
            return;
        };
        let Some(ring) = self.meta.ring.clone() else {
            return;
        };
        let q = ring.partitions();
        let mut keys = 0u64;
        let mut bytes = 0u64;
        for (table, key, object) in objects {
            // Only what the fetch asked for, of tables this node is a new
            // replica of: a peer's page names nothing else into the store.
            let Some(entry) = self.meta.tables.get(&table) else {
                // A table this node has not heard of yet: the page is
                // asked for again once it has (nothing is marked meanwhile).
                self.incoming.failed(request);
                return;
            };
            let partition = partition_of(q, &table, &key) as u32;
            if !fetch.partitions.contains(&partition)
                || !ring.receives(partition as usize, entry.config.n, &self.config.id)
            {
                continue;
            }
            bytes += object_bytes(&key, &object) as u64;
            match self.store_replica(&table, &key, &object, None, store) {
                Ok(_) => keys += 1,
                Err(_) => {
                    // Not stored (a full disk): the walk does not move past
                    // it; the fetch is asked again later.
                    self.incoming.failed(request);
                    return;
                }
            }
        }
        let outcome = self.incoming.on_page(request, keys, bytes, next, estimate);
        self.stats.transfer.keys_received += keys;
        self.stats.transfer.bytes_received += bytes;
        self.stage_checkpoints(store);
        if let PageOutcome::Completed(done) = outcome {
            // Marked once the batch holding the last page is durable, if the
            // ring still plans the move the walk was for.
            if self.fetch_plan == ring.plan_id() {
                let batch = self.outbox.open_batch();
                self.marks_waiting.push((batch, self.fetch_plan, done));
            }
        }
        // The next page at once, while the throttle allows: the source's
        // answers pace the copy, not the turn's period.
        self.transfer_turn(store);
    }

    /// The ring move under way as this node knows it, for `/cluster`.
    pub(super) fn move_status(&self) -> Option<MoveStatus> {
        let ring = self.meta.ring.as_ref()?;
        let next = ring.next.as_ref()?;
        let ns = self.meta.replica_counts();
        let left = ring.copies_left(&ns);
        let total: u32 = (0..ring.partitions())
            .map(|p| ring.receivers(p, &ns).len() as u32)
            .sum();
        let mut by_node: BTreeMap<NodeId, u32> = BTreeMap::new();
        for (_, node) in &left {
            *by_node.entry(node.clone()).or_insert(0) += 1;
        }
        Some(MoveStatus {
            partitions_moving: (0..ring.partitions())
                .filter(|&p| ring.owners[p] != next.owners[p])
                .count() as u32,
            copies_total: total,
            copies_done: total.saturating_sub(left.len() as u32),
            copies_left_by_node: by_node.into_iter().collect(),
        })
    }

    /// The transfer this node is receiving, for `/cluster`.
    pub(super) fn transfer_status(&self) -> Option<TransferStatus> {
        let incoming = self.incoming_partitions();
        if incoming.is_empty() {
            return None;
        }
        let now = self.now.mono_ms;
        Some(TransferStatus {
            partitions_left: incoming.len() as u32,
            source: self.incoming.last_source.clone(),
            keys: self.incoming.checkpoints.keys,
            bytes: self.incoming.checkpoints.bytes,
            resumed_keys: self.incoming.resumed_keys,
            keys_per_s: self.incoming.rate_keys_per_s(now),
            bytes_per_s: self.incoming.rate_bytes_per_s(now),
            eta_s: self.incoming.eta_s(now),
        })
    }
}

/// What an object weighs in a page (and against the throttle).
fn object_bytes(key: &[u8], object: &Object) -> usize {
    key.len() + object.live_bytes() + 64 * object.versions.len()
}
