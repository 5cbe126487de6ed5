//! Tombstone collection: the first primary of a key whose copy here holds
//! tombstones only, once the grace period has passed, asks every other
//! member whether the tombstone may go (each primary must have held exactly
//! this item, durably, for the grace; a non-primary must hold no other
//! copy; no member may keep a hint for the key); when all accepted, it
//! removes its copy and tells every member to remove theirs if unchanged.
//! The bookkeeping is [`crate::core::reaper`]'s.
//!
//! Collecting a tombstone forgets the dots it carried (so does handing a
//! copy over after a ring move, `leftover.rs`). So that this node never
//! mints one of them again, its counters for every key start above the
//! largest it forgot under its epoch (the mint floor), and a node that
//! forgot any does not keep its epoch across a restart.

use std::collections::BTreeSet;

use super::*;
use crate::core::antientropy::item_of;
use crate::core::hints::hint_key;
use crate::core::limits::{REAP_ANSWER_MS, REAP_BATCH_KEYS};
use crate::core::merkle::Hash;
use crate::core::msg::{ReapMessage, TombstoneStatus};
use crate::core::reaper::is_tombstone_only;

impl Node {
    /// The mint floor of the current epoch (0 under a fresh one).
    pub(super) fn mint_floor(&self) -> u64 {
        match self.mint_floor {
            (epoch, floor) if epoch == self.epoch => floor,
            _ => 0,
        }
    }

    /// Whether a clean stop may keep this epoch: not once it collected
    /// tombstones or handed copies over, whose dots only the in-memory mint
    /// floor remembers, nor once it minted as a stand-in, whose counter
    /// lives in memory only.
    pub fn may_keep_epoch(&self) -> bool {
        self.mint_floor() == 0 && !self.minted_as_stand_in()
    }

    /// `key` of `table` now holds `object` here: tombstone collection hears
    /// of every copy anti-entropy's trees hear of.
    pub(super) fn observe_tombstones(
        &mut self,
        (table, partition): (&TableName, usize),
        key: &[u8],
        object: Option<&Object>,
    ) {
        let item = object
            .filter(|o| is_tombstone_only(o))
            .map(|o| item_of(key, o));
        self.reaper
            .observe((table, partition), key, object, item, self.now.mono_ms);
    }

    /// What `/cluster` shows of tombstone collection.
    pub(super) fn tombstone_status(&self) -> TombstoneStatus {
        TombstoneStatus {
            pending: self.reaper.pending(),
            collected: self.stats.reap.collected,
            checks_timed_out: self.reaper.checks_timed_out,
            grace_ms: self.config.antientropy.map(|c| c.tombstone_grace_ms),
        }
    }

    /// One turn: give up an overdue check, then, with every member up and
    /// no check under way, ask about the tombstones whose grace passed.
    pub(super) fn reap_turn(&mut self, store: &mut dyn LocalStore) {
        let now = self.now.mono_ms;
        self.reaper.expire(now);
        let served = &self.meta.tables;
        self.reaper.retain_tables(|t| served.contains_key(t));
        let Some(grace_ms) = self.config.antientropy.map(|c| c.tombstone_grace_ms) else {
            return;
        };
        if self.reaper.is_checking() || self.reaper.pending() == 0 {
            return;
        }
        let Some(ring) = self.meta.ring.clone() else {
            return;
        };
        let others: BTreeSet<NodeId> = self.other_members().into_iter().collect();
        // A member that cannot answer might keep a hint or a stale copy.
        if others.iter().any(|id| self.status_of(id) != Status::Up) {
            return;
        }
        let me = self.config.id.clone();
        let tables = &self.meta.tables;
        let first_primary = |table: &TableName, partition: usize| {
            tables.contains_key(table) && ring.first_n(partition, 1).first() == Some(&me)
        };
        let Some((table, keys)) = self
            .reaper
            .ripe(now, grace_ms, REAP_BATCH_KEYS, first_primary)
        else {
            return;
        };
        let request = self.reaper.begin(
            table.clone(),
            keys.clone(),
            others.iter().cloned().chain([me.clone()]).collect(),
            now + REAP_ANSWER_MS,
        );
        // This node answers its own check like every other member.
        let refused = self.refused_for_collection(&table, &keys, store);
        self.checked(&me, request, &refused, store);
        for node in others {
            self.send_to(
                &node,
                Message::Reap(ReapMessage::Check {
                    request,
                    table: table.clone(),
                    keys: keys.clone(),
                }),
            );
        }
    }

    pub(super) fn on_reap(
        &mut self,
        from: NodeId,
        message: ReapMessage,
        store: &mut dyn LocalStore,
    ) {
        match message {
            ReapMessage::Check {
                request,
                table,
                keys,
            } => {
                let refused = self.refused_for_collection(&table, &keys, store);
                self.send_to(
                    &from,
                    Message::Reap(ReapMessage::Checked { request, refused }),
                );
            }
            ReapMessage::Checked { request, refused } => {
                self.checked(&from, request, &refused, store);
            }
            ReapMessage::Collect { table, keys } => {
                let _ = self.collect(&table, &keys, store);
            }
        }
    }

    /// The keys of a check this node refuses: those it is a primary of and
    /// has not held exactly that tombstone for, durably, for the grace
    /// period itself (its own vote cannot wait for a commit as an answer
    /// does; a read it started before the tombstone arrived must be over);
    /// those it holds any other copy of (a former primary's stale copy would
    /// come back were it a primary again); and those it keeps a hint for,
    /// for any owner. Keys past the batch cap are refused unread.
    fn refused_for_collection(
        &mut self,
        table: &TableName,
        keys: &[(Bytes, Hash)],
        store: &mut dyn LocalStore,
    ) -> Vec<u32> {
        let Some(config) = self.meta.tables.get(table).map(|e| e.config.clone()) else {
            // A table this node does not know: it cannot vouch for anything.
            return (0..keys.len())
                .filter_map(|i| u32::try_from(i).ok())
                .collect();
        };
        // Hints kept for removed members count too: they are re-homed to
        // the keys' replicas later and could bring a collected key back.
        let removed = self
            .hints
            .owners()
            .filter(|(id, h)| h.pending > 0 && self.meta.removed.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>();
        let owners: Vec<NodeId> = self.other_members().into_iter().chain(removed).collect();
        // Without anti-entropy this node tracks no tombstones: it vouches
        // for none it holds.
        let grace_ms = self.config.antientropy.map(|c| c.tombstone_grace_ms);
        let now = self.now.mono_ms;
        let mut refused = Vec::new();
        for (index, (key, item)) in keys.iter().enumerate() {
            let Ok(index) = u32::try_from(index) else {
                break;
            };
            if index as usize >= REAP_BATCH_KEYS {
                refused.push(index);
                continue;
            }
            let primaries = self.primaries_of(table, key, config.n);
            let is_primary = primaries.contains(&self.config.id);
            let durable = store.copy_state(table, key) == CopyState::Durable;
            let copy = match store.load(table, config.storage, key) {
                Ok(Some(object)) if !object.is_empty() => {
                    Some(is_tombstone_only(&object) && item_of(key, &object) == *item)
                }
                Ok(_) => None,
                Err(_) => {
                    refused.push(index);
                    continue;
                }
            };
            let held_long_enough = || {
                let since = self.reaper.held_since(table, key, item);
                matches!((since, grace_ms), (Some(since), Some(grace)) if since.saturating_add(grace) <= now)
            };
            let vouches = match copy {
                Some(exact) => exact && durable && held_long_enough(),
                None => !is_primary,
            };
            // Any owner: a hint for a former primary counts too.
            let slot = hint_key(table, key);
            let hinted = owners.iter().any(|owner| {
                let hints = TableName::hints_for(owner);
                // An unreadable hint store may hold one.
                !matches!(store.load(&hints, StorageKind::Lmdb, &slot), Ok(None))
            });
            if !vouches || hinted {
                refused.push(index);
            }
        }
        refused
    }

    /// A member answered a check; once all did, the accepted tombstones
    /// are collected here and, for those removed here, at every other
    /// member holding the same copy; the next check may start at once.
    fn checked(
        &mut self,
        from: &NodeId,
        request: u64,
        refused: &[u32],
        store: &mut dyn LocalStore,
    ) {
        let now = self.now.mono_ms;
        let Some((table, accepted)) = self.reaper.answered(from, request, refused, now) else {
            return;
        };
        self.timers.set(Timer::Reap, now);
        let removed = self.collect(&table, &accepted, store);
        if removed.is_empty() {
            return;
        }
        for node in self.other_members() {
            self.send_to(
                &node,
                Message::Reap(ReapMessage::Collect {
                    table: table.clone(),
                    keys: removed.clone(),
                }),
            );
        }
    }

    /// Removes each tombstone whose copy here is still exactly that item,
    /// raising the mint floor above its dots first; returns those removed.
    fn collect(
        &mut self,
        table: &TableName,
        keys: &[(Bytes, Hash)],
        store: &mut dyn LocalStore,
    ) -> Vec<(Bytes, Hash)> {
        let mut removed = Vec::new();
        let Some(storage) = self.meta.tables.get(table).map(|e| e.config.storage) else {
            return removed;
        };
        let actor = Actor {
            node: self.config.id.clone(),
            epoch: self.epoch,
        };
        for (key, item) in keys.iter().take(REAP_BATCH_KEYS) {
            let Ok(Some(object)) = store.load(table, storage, key) else {
                continue;
            };
            if !is_tombstone_only(&object) || item_of(key, &object) != *item {
                continue;
            }
            let floor = self.mint_floor().max(object.clock.max_counter(&actor));
            self.mint_floor = (self.epoch, floor);
            if store.remove(table, key).is_err() {
                continue;
            }
            self.stats.reap.collected += 1;
            if let Some(ring) = &self.meta.ring {
                let partition = partition_of(ring.partitions(), table, key);
                self.antientropy.observe(table, partition, key, None);
                self.observe_tombstones((table, partition), key, None);
            }
            removed.push((key.clone(), *item));
        }
        removed
    }
}
