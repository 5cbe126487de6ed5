//! Hinted handoff: a stand-in keeps a write for an unreachable primary as a
//! hint (its own store per owner, durable before it acks), answers reads
//! for it from there, and once the owner is reachable delivers its hints in
//! throttled batches, removing each only after the owner answered that it
//! stored the batch durably. The bookkeeping is [`crate::core::hints`]'s.

use super::*;
use crate::core::hints::{hint_key, parse_hint_key, InFlight, Progress};
use crate::core::limits::{
    HANDOFF_ANSWER_MS, HANDOFF_BATCH_BYTES, HANDOFF_BATCH_KEYS, HINTS_COUNT_PAGE, HINTS_MAX,
};
use crate::core::msg::{HandoffMessage, HintStatus};

impl Node {
    /// Counts the hints this node keeps for each member (at start: the
    /// store is their only record).
    pub(super) fn count_hints(&mut self, store: &mut dyn LocalStore) {
        let removed = self.meta.removed.keys().cloned();
        let owners: Vec<NodeId> = self.other_members().into_iter().chain(removed).collect();
        for owner in owners {
            let table = TableName::hints_for(&owner);
            let mut after: Option<Bytes> = None;
            let mut count = 0u64;
            loop {
                let Ok(keys) = store.keys_after(&table, after.as_deref(), HINTS_COUNT_PAGE) else {
                    break;
                };
                count += keys.len() as u64;
                if keys.len() < HINTS_COUNT_PAGE {
                    break;
                }
                after = keys.last().cloned();
            }
            if count > 0 {
                self.hints.owner_mut(&owner).pending = count;
            }
        }
    }

    /// Stand-in side of a write: merges `incoming` into the hint kept for
    /// `owner`, staged in the open batch (the ack waits for it).
    pub(super) fn store_hint(
        &mut self,
        owner: &NodeId,
        table: &TableName,
        key: &[u8],
        incoming: &Object,
        store: &mut dyn LocalStore,
    ) -> Result<(), ReplicaError> {
        self.store_hint_within(owner, table, key, incoming, HINTS_MAX, store)
    }

    /// [`Node::store_hint`] with the cap on hints kept given: re-homing
    /// the hints of a removed member moves hints, and must not stall at
    /// the cap the moved ones count toward.
    pub(super) fn store_hint_within(
        &mut self,
        owner: &NodeId,
        table: &TableName,
        key: &[u8],
        incoming: &Object,
        cap: u64,
        store: &mut dyn LocalStore,
    ) -> Result<(), ReplicaError> {
        let storage_error = |e: StoreError| ReplicaError::Storage(e.to_string());
        let mode = self
            .meta
            .tables
            .get(table)
            .ok_or(ReplicaError::UnknownTable)?
            .config
            .merge;
        let hints = TableName::hints_for(owner);
        let slot = hint_key(table, key);
        let existing = store
            .load(&hints, StorageKind::Lmdb, &slot)
            .map_err(storage_error)?;
        let is_new = existing.is_none();
        if is_new && self.hints.total_pending() >= cap {
            self.hints.refused_full += 1;
            return Err(ReplicaError::Storage(format!(
                "node {} keeps {cap} hints already and takes no more",
                self.config.id
            )));
        }
        let mut object = existing.unwrap_or_default();
        let before = object.clone();
        object.merge(incoming, mode);
        if is_new || object != before {
            store
                .stage(&hints, StorageKind::Lmdb, &slot, &object)
                .map_err(storage_error)?;
        }
        if is_new {
            self.hints.added(owner);
        }
        Ok(())
    }

    /// Stand-in side of a read: the hint kept for `owner`, and when an
    /// answer built from it may leave.
    pub(super) fn read_hint(
        &mut self,
        owner: &NodeId,
        table: &TableName,
        key: &[u8],
        store: &mut dyn LocalStore,
    ) -> (Result<Option<Object>, ReplicaError>, Release) {
        if !self.meta.tables.contains_key(table) {
            return (Err(ReplicaError::UnknownTable), Release::Now);
        }
        let hints = TableName::hints_for(owner);
        let slot = hint_key(table, key);
        let outcome = store
            .load(&hints, StorageKind::Lmdb, &slot)
            .map_err(|e| ReplicaError::Storage(e.to_string()));
        let release = self.release_for(store.copy_state(&hints, &slot));
        (outcome, release)
    }

    /// One handoff turn: for each reachable owner with hints and no batch
    /// under way, the next batch, as far as the throttle allows.
    pub(super) fn handoff_turn(&mut self, store: &mut dyn LocalStore) {
        self.hints.expire(self.now.mono_ms);
        let owners: Vec<NodeId> = self
            .hints
            .owners()
            .filter(|(_, h)| h.pending > 0 && h.in_flight.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for owner in owners {
            self.next_hint_batch(&owner, store);
        }
        self.hints.forget_idle();
    }

    /// Sends `owner` its next batch if it is reachable and the throttle
    /// has tokens (noting when it has none).
    fn next_hint_batch(&mut self, owner: &NodeId, store: &mut dyn LocalStore) {
        if self.status_of(owner) != Status::Up {
            return;
        }
        self.hints.throttle.refill(self.now.mono_ms);
        let available = self.hints.throttle.available();
        self.hints.owner_mut(owner).throttled = available == 0;
        if available == 0 {
            return;
        }
        let limit = usize::try_from(available)
            .unwrap_or(usize::MAX)
            .min(HANDOFF_BATCH_KEYS);
        self.send_hint_batch(owner, limit, store);
    }

    /// Reads up to `limit` of `owner`'s hints after its cursor and sends
    /// them as one batch.
    fn send_hint_batch(&mut self, owner: &NodeId, limit: usize, store: &mut dyn LocalStore) {
        let Some(addr) = self.addr_of(owner) else {
            return;
        };
        let hints = TableName::hints_for(owner);
        let cursor = self.hints.owner_mut(owner).cursor.clone();
        let keys = match store.keys_after(&hints, cursor.as_deref(), limit) {
            Ok(keys) => keys,
            Err(e) => {
                self.hints.owner_mut(owner).last_error = Some(e.to_string());
                return;
            }
        };
        if keys.is_empty() {
            let entry = self.hints.owner_mut(owner);
            if cursor.is_some() {
                // The end of the store: the next batch starts over with
                // what is left (hints refused or changed meanwhile).
                entry.cursor = None;
            } else {
                // Nothing left, whatever was counted.
                entry.pending = 0;
            }
            return;
        }
        let mut sent = Vec::new();
        let mut wire = Vec::new();
        let mut bytes = 0;
        let mut last = None;
        for slot in keys {
            let object = match store.load(&hints, StorageKind::Lmdb, &slot) {
                Ok(Some(object)) => object,
                // Removed in a batch not yet durable.
                Ok(None) => {
                    last = Some(slot);
                    continue;
                }
                Err(e) => {
                    self.hints.owner_mut(owner).last_error = Some(e.to_string());
                    break;
                }
            };
            let Some((table, key)) = parse_hint_key(&slot) else {
                // Not a hint this build wrote: left alone, never sent.
                last = Some(slot);
                continue;
            };
            if self.meta.dropped.contains_key(&table) {
                // Its table was dropped for good: nobody takes it.
                if store.remove(&hints, &slot).is_ok() {
                    let entry = self.hints.owner_mut(owner);
                    entry.pending = entry.pending.saturating_sub(1);
                }
                last = Some(slot);
                continue;
            }
            let size = object.live_bytes();
            if !wire.is_empty() && bytes + size > HANDOFF_BATCH_BYTES {
                break;
            }
            bytes += size;
            wire.push((table, key, object.clone()));
            sent.push((slot.clone(), object));
            last = Some(slot);
        }
        let entry = self.hints.owner_mut(owner);
        entry.cursor = last.or(cursor);
        if wire.is_empty() {
            return;
        }
        self.hints.throttle.spend(wire.len() as u64);
        let request = self.next_id();
        self.hints.owner_mut(owner).in_flight = Some(InFlight {
            request,
            sent,
            deadline_ms: self.now.mono_ms + HANDOFF_ANSWER_MS,
        });
        self.stats.handoff.batches_sent += 1;
        self.emit(Output::Send {
            addr,
            message: Message::Handoff(HandoffMessage::Deliver {
                request,
                hints: wire,
            }),
        });
    }

    /// What `/cluster` shows of the hints kept here.
    pub(super) fn hints_status(&self) -> Vec<HintStatus> {
        self.hints
            .owners()
            .map(|(owner, hints)| {
                let progress = self
                    .hints
                    .progress(owner, self.status_of(owner) == Status::Up);
                HintStatus {
                    owner: owner.clone(),
                    pending: hints.pending,
                    delivered: hints.delivered,
                    state: progress.as_str().to_owned(),
                    error: match progress {
                        Progress::Failing(error) => Some(error),
                        _ => None,
                    },
                }
            })
            .collect()
    }

    /// Handoff messages: an owner storing a batch, a stand-in learning it did.
    pub(super) fn on_handoff(
        &mut self,
        from: NodeId,
        message: HandoffMessage,
        store: &mut dyn LocalStore,
    ) {
        match message {
            HandoffMessage::Deliver { request, hints } => {
                let mut refused = Vec::new();
                if self.takes_no_more() {
                    // Leaving for good: the stand-in keeps its hints, and
                    // sends them to the keys' replicas once this node is gone.
                    let why = ReplicaError::Storage("the owner is leaving the cluster".into());
                    let count = hints.len().min(HANDOFF_BATCH_KEYS);
                    refused = (0..count)
                        .filter_map(|i| u32::try_from(i).ok())
                        .map(|i| (i, why.clone()))
                        .collect();
                    self.send_to(
                        &from,
                        Message::Handoff(HandoffMessage::Delivered { request, refused }),
                    );
                    return;
                }
                // A stand-in sends at most one batch's worth; more is not
                // taken (and the answer names only what was looked at).
                let batch = hints.into_iter().take(HANDOFF_BATCH_KEYS);
                for (index, (table, key, object)) in batch.enumerate() {
                    let Ok(index) = u32::try_from(index) else {
                        break;
                    };
                    match self.store_or_hand_over(&table, &key, &object, store) {
                        Ok(_) => self.stats.handoff.hints_received += 1,
                        Err(e) => refused.push((index, e)),
                    }
                }
                self.send_to(
                    &from,
                    Message::Handoff(HandoffMessage::Delivered { request, refused }),
                );
            }
            HandoffMessage::Delivered { request, refused } => {
                let Some(batch) = self.hints.take_in_flight(&from, request) else {
                    return;
                };
                self.hints_delivered(&from, batch, &refused, store);
                // The next batch at once, while the throttle allows: the
                // owner's answers pace delivery, not the turn's period.
                if self.hints.owner(&from).is_some_and(|h| h.pending > 0) {
                    self.next_hint_batch(&from, store);
                }
            }
        }
    }

    /// The owner stored `batch` but for `refused`: each hint it stored is
    /// removed unless it changed since it was sent.
    fn hints_delivered(
        &mut self,
        owner: &NodeId,
        batch: InFlight,
        refused: &[(u32, ReplicaError)],
        store: &mut dyn LocalStore,
    ) {
        let hints = TableName::hints_for(owner);
        let mut removed = 0;
        let mut error = None;
        let refused: std::collections::BTreeMap<usize, &ReplicaError> = refused
            .iter()
            .take(batch.sent.len())
            .map(|(i, why)| (*i as usize, why))
            .collect();
        for (index, (slot, sent)) in batch.sent.iter().enumerate() {
            if let Some(why) = refused.get(&index) {
                error.get_or_insert_with(|| format!("the owner refused a hint: {why:?}"));
                continue;
            }
            match store.load(&hints, StorageKind::Lmdb, slot) {
                Ok(Some(current)) if current == *sent => {
                    if store.remove(&hints, slot).is_ok() {
                        removed += 1;
                    }
                }
                // Changed meanwhile: it goes again with a later batch.
                Ok(_) => {}
                Err(e) => {
                    error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        self.stats.handoff.hints_delivered += removed;
        let entry = self.hints.owner_mut(owner);
        entry.pending = entry.pending.saturating_sub(removed);
        entry.delivered += removed;
        entry.last_error = error;
    }
}
