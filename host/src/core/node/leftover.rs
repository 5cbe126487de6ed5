//! Leftovers: copies a node still holds of keys it no longer replicates,
//! once a ring move has completed (a partition moved away, a table's n
//! shrank, a replica write from a coordinator that had not heard of the
//! move yet). The node never just drops one: it turns each into hints for
//! the key's replicas, in the same batch that removes the plain copy, and
//! hinted handoff delivers them, removing each hint only after its owner
//! stored it durably. So a copy leaves a node only once the new owner
//! confirmed it (see `handoff.rs`).
//!
//! A sweep walks every table once per ring version, a page per turn, and
//! never while a move is under way (the old owners serve until it ends).

use super::*;
use crate::core::hints::parse_hint_key;
use crate::core::limits::{HINTS_MAX, LEFTOVER_WALK_KEYS};

/// Where the sweep of one ring version stands.
#[derive(Debug, Clone, Default)]
pub(super) struct LeftoverSweep {
    /// The ring version swept for (0: none yet since start).
    ring_version: u64,
    /// The table and key after which the walk goes on; `None` once done.
    position: Option<(TableName, Option<Bytes>)>,
}

impl Node {
    /// Whether this node takes nothing more to hold for others: it is no
    /// member, or a leaving member that owns nothing and reported itself
    /// drained or was forced out (what it took now would leave with it). Hinted writes, deliveries and
    /// repairs are refused; their senders keep what they hold.
    pub(super) fn takes_no_more(&self) -> bool {
        let me = &self.config.id;
        let owns = self
            .meta
            .ring
            .as_ref()
            .is_some_and(|r| r.owned_by(me) > 0 || r.future_owned_by(me) > 0);
        !self.is_member() || (!owns && self.meta.leaving.get(me).is_some_and(|d| d.drained))
    }

    /// Whether this node keeps a plain copy of `key`: it is one of its
    /// replicas now, or will be once the ring's move completes.
    pub(super) fn keeps_copy(&self, table: &TableName, key: &[u8], n: u8) -> bool {
        let Some(ring) = &self.meta.ring else {
            return false;
        };
        let partition = partition_of(ring.partitions(), table, key);
        let n = usize::from(n);
        ring.first_n(partition, n).contains(&self.config.id)
            || ring.future_first_n(partition, n).contains(&self.config.id)
    }

    /// Stores `object` for `key` as a replica when this node keeps a copy
    /// of it, else as hints for its replicas (a delivery or repair sent
    /// under an older ring). `Ok(true)` when a plain copy changed.
    pub(super) fn store_or_hand_over(
        &mut self,
        table: &TableName,
        key: &[u8],
        object: &Object,
        store: &mut dyn LocalStore,
    ) -> Result<bool, ReplicaError> {
        self.store_or_hand_over_within(table, key, object, HINTS_MAX, store)
    }

    /// [`Node::store_or_hand_over`] with the cap on hints kept given.
    fn store_or_hand_over_within(
        &mut self,
        table: &TableName,
        key: &[u8],
        object: &Object,
        cap: u64,
        store: &mut dyn LocalStore,
    ) -> Result<bool, ReplicaError> {
        let n = self
            .meta
            .tables
            .get(table)
            .ok_or(ReplicaError::UnknownTable)?
            .config
            .n;
        if self.keeps_copy(table, key, n) {
            self.store_replica(table, key, object, None, store)
        } else {
            self.hand_over_within(table, key, object, (n, cap), store)
                .map(|()| false)
        }
    }

    /// Keeps `object`, merged with any plain copy of `key` held here, as
    /// hints for each of the key's replicas, and removes the plain copy, in
    /// the open batch.
    pub(super) fn hand_over(
        &mut self,
        table: &TableName,
        key: &[u8],
        object: &Object,
        n: u8,
        store: &mut dyn LocalStore,
    ) -> Result<(), ReplicaError> {
        self.hand_over_within(table, key, object, (n, HINTS_MAX), store)
    }

    /// [`Node::hand_over`] with the cap on hints kept given.
    fn hand_over_within(
        &mut self,
        table: &TableName,
        key: &[u8],
        object: &Object,
        (n, cap): (u8, u64),
        store: &mut dyn LocalStore,
    ) -> Result<(), ReplicaError> {
        let (merged, _, _) = self.merged_with_local(table, key, object, store)?;
        let object = &merged;
        let owners: Vec<NodeId> = self
            .primaries_of(table, key, n)
            .into_iter()
            .filter(|owner| *owner != self.config.id)
            .collect();
        for owner in &owners {
            self.store_hint_within(owner, table, key, object, cap, store)?;
        }
        // Removing the copy forgets the dots this node minted for the key:
        // its counters start above them from now on (as after collecting a
        // tombstone), or a write it coordinates later would mint one of
        // them again, and replicas that saw the first would drop it.
        let actor = Actor {
            node: self.config.id.clone(),
            epoch: self.epoch,
        };
        let floor = self.mint_floor().max(object.clock.max_counter(&actor));
        self.mint_floor = (self.epoch, floor);
        store
            .remove(table, key)
            .map_err(|e| ReplicaError::Storage(e.to_string()))?;
        self.stats.transfer.leftovers_handed_over += 1;
        if self.sync_plan.is_some() {
            if let Some(ring) = &self.meta.ring {
                let partition = partition_of(ring.partitions(), table, key);
                self.antientropy.observe(table, partition, key, None);
                self.observe_tombstones((table, partition), key, None);
            }
        }
        Ok(())
    }

    /// Hints kept for a removed member go to the keys' replicas instead
    /// (merged here when this node is one), a page per turn.
    fn rehome_hints(&mut self, store: &mut dyn LocalStore) {
        let Some(owner) = self
            .hints
            .owners()
            .find(|(id, h)| h.pending > 0 && self.meta.removed.contains_key(*id))
            .map(|(id, _)| id.clone())
        else {
            return;
        };
        let hints = TableName::hints_for(&owner);
        let Ok(slots) = store.keys_after(&hints, None, LEFTOVER_WALK_KEYS) else {
            return;
        };
        let mut moved = 0u64;
        for slot in &slots {
            let kept = match store.load(&hints, StorageKind::Lmdb, slot) {
                Ok(kept) => kept,
                Err(_) => break,
            };
            let target = parse_hint_key(slot).filter(|(t, _)| self.meta.tables.contains_key(t));
            if let (Some(object), Some((table, key))) = (kept, target) {
                // Moved, not added: past the cap the moved ones count toward.
                if self
                    .store_or_hand_over_within(&table, &key, &object, u64::MAX, store)
                    .is_err()
                {
                    break;
                }
            }
            if store.remove(&hints, slot).is_err() {
                break;
            }
            moved += 1;
        }
        let entry = self.hints.owner_mut(&owner);
        entry.pending = if slots.len() < LEFTOVER_WALK_KEYS && moved == slots.len() as u64 {
            0
        } else {
            entry.pending.saturating_sub(moved)
        };
    }

    /// A leaving member that owns nothing any more, has swept its copies
    /// into hints and delivered every hint, says so: the cluster then
    /// removes it.
    fn declare_drained(&mut self, store: &mut dyn LocalStore) {
        let me = self.config.id.clone();
        let Some(ring) = &self.meta.ring else {
            return;
        };
        let swept =
            self.leftovers.ring_version == ring.version && self.leftovers.position.is_none();
        let owns = ring.owned_by(&me) > 0 || ring.future_owned_by(&me) > 0;
        let drained = swept && !owns && ring.next.is_none() && self.hints.total_pending() == 0;
        let Some(departure) = self.meta.leaving.get_mut(&me) else {
            return;
        };
        if drained && !departure.drained {
            departure.drained = true;
            self.meta.settle_ring();
            self.meta_changed(store);
        }
    }

    /// One sweep turn: a page of the walk for leftovers, once the ring has
    /// settled; hints for removed members re-homed; a leaving member's
    /// report that it is drained.
    pub(super) fn leftover_turn(&mut self, store: &mut dyn LocalStore) {
        let Some(ring) = self.meta.ring.clone() else {
            return;
        };
        if ring.next.is_some() || !self.is_member() {
            return;
        }
        self.rehome_hints(store);
        self.declare_drained(store);
        if self.leftovers.ring_version != ring.version {
            self.leftovers = LeftoverSweep {
                ring_version: ring.version,
                position: self
                    .meta
                    .tables
                    .keys()
                    .next()
                    .map(|first| (first.clone(), None)),
            };
        }
        let Some((table, after)) = self.leftovers.position.clone() else {
            return;
        };
        let Some(config) = self.meta.tables.get(&table).map(|e| e.config.clone()) else {
            self.leftovers.position = self.table_after(&table);
            return;
        };
        let Ok(keys) = store.keys_after(&table, after.as_deref(), LEFTOVER_WALK_KEYS) else {
            return;
        };
        let exhausted = keys.len() < LEFTOVER_WALK_KEYS;
        let mut reached = after;
        let mut stopped = false;
        for key in keys {
            if !self.keeps_copy(&table, &key, config.n) {
                let handed = match store.load(&table, config.storage, &key) {
                    Ok(Some(object)) => self.hand_over(&table, &key, &object, config.n, store),
                    Ok(None) => Ok(()),
                    Err(e) => Err(ReplicaError::Storage(e.to_string())),
                };
                if handed.is_err() {
                    // Hints full or storage failing: the walk goes on from
                    // here at a later turn.
                    stopped = true;
                    break;
                }
            }
            reached = Some(key);
        }
        self.leftovers.position = if exhausted && !stopped {
            self.table_after(&table)
        } else {
            Some((table, reached))
        };
    }

    /// Where the sweep goes after `table`: the next table's start, or done.
    fn table_after(&self, table: &TableName) -> Option<(TableName, Option<Bytes>)> {
        use std::ops::Bound;
        self.meta
            .tables
            .range((Bound::Excluded(table.clone()), Bound::Unbounded))
            .next()
            .map(|(name, _)| (name.clone(), None))
    }
}
