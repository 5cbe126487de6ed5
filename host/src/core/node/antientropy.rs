//! Anti-entropy exchanges: every turn the node walks a page of any table
//! not yet in its trees, then sends partitions' roots to other replicas of
//! them (as many as a sweep within [`ANTIENTROPY_SWEEP_TARGET_MS`] needs,
//! known divergent ones first, while the throttle allows). A replica whose
//! root agrees says so; one whose root differs answers with its leaves; the first
//! sends its objects of the differing leaves and asks for the other's; each
//! merges what it receives as a repair (a causal join; plugins never run
//! here). The trees and the round robin are `core/antientropy.rs`'s.

use super::*;
use crate::core::antientropy::Slot;
use crate::core::coord::targets::owner_of;
use crate::core::limits::{
    ANTIENTROPY_BYTES_PER_MESSAGE, ANTIENTROPY_EXCHANGES_PER_TURN_MAX,
    ANTIENTROPY_ITEMS_ACCEPTED_MAX, ANTIENTROPY_ITEMS_PER_MESSAGE, ANTIENTROPY_OBJECTS_PER_MESSAGE,
    ANTIENTROPY_SWEEP_TARGET_MS, ANTIENTROPY_WALK_KEYS,
};
use crate::core::merkle::LEAVES;
use crate::core::msg::AntiEntropyStatus;

impl Node {
    /// A staged object is the key's current item in the trees.
    pub(super) fn observe_staged(&mut self, table: &TableName, key: &[u8], object: &Object) {
        if self.sync_plan.is_none() {
            return;
        }
        if let Some(ring) = &self.meta.ring {
            let partition = partition_of(ring.partitions(), table, key);
            self.antientropy
                .observe(table, partition, key, Some(object));
            self.observe_tombstones((table, partition), key, Some(object));
        }
    }

    /// The tables served, in name order, with their configs.
    fn served_tables(&self) -> Vec<(TableName, TableConfig)> {
        self.meta
            .tables
            .iter()
            .map(|(name, entry)| (name.clone(), entry.config.clone()))
            .collect()
    }

    /// The slots this node compares: every partition it replicates of each
    /// table whose trees are built, with how many there are.
    fn sync_slots(&mut self, ring: &Ring) -> (Vec<(TableName, Vec<usize>)>, u64) {
        let mut slots = Vec::new();
        let mut count = 0;
        for (table, config) in self.served_tables() {
            if !self.antientropy.is_built(&table) {
                continue;
            }
            let partitions = self
                .antientropy
                .replicated(ring, config.n, &self.config.id)
                .to_vec();
            count += partitions.len() as u64;
            slots.push((table, partitions));
        }
        (slots, count)
    }

    /// One anti-entropy turn: walk a page of a table whose trees are not
    /// built yet, then start this turn's share of a sweep's exchanges,
    /// known divergent partitions first, while the throttle allows.
    pub(super) fn antientropy_turn(&mut self, store: &mut dyn LocalStore) {
        let Some(ring) = self.meta.ring.clone() else {
            return;
        };
        let Some(plan) = self.sync_plan.as_mut() else {
            return;
        };
        let every_ms = plan.config().every_ms;
        plan.retain_tables(|table| self.meta.tables.contains_key(table));
        if !self.may_work() {
            return;
        }
        let served = &self.meta.tables;
        self.antientropy
            .retain_tables(|table| served.contains_key(table));
        // One table's page per turn, however many tables are still walked.
        for (table, config) in self.served_tables() {
            if let Some(after) = self.antientropy.walk_from(&table) {
                self.walk_into_trees(&table, &config, after, &ring, store);
                break;
            }
        }
        let (slots, count) = self.sync_slots(&ring);
        if self.resumed_membership {
            // A node that lost its disk: everything it replicates diverges.
            if self
                .served_tables()
                .iter()
                .all(|(t, _)| self.antientropy.is_built(t))
            {
                self.resumed_membership = false;
                if let Some(plan) = self.sync_plan.as_mut() {
                    for (table, partitions) in &slots {
                        for &p in partitions {
                            plan.diverged((table.clone(), p), None);
                        }
                    }
                }
            }
        }
        // Enough exchanges a turn to compare every slot within the sweep
        // target, within the per-turn cap.
        let wanted = (count * every_ms).div_ceil(ANTIENTROPY_SWEEP_TARGET_MS.max(1));
        let wanted = wanted.clamp(1, ANTIENTROPY_EXCHANGES_PER_TURN_MAX);
        let slot_at = |mut index: u64| -> Option<Slot> {
            for (table, partitions) in &slots {
                let len = partitions.len() as u64;
                if index < len {
                    return Some((table.clone(), partitions[index as usize]));
                }
                index -= len;
            }
            None
        };
        let replicates = |slot: &Slot| {
            slots
                .iter()
                .any(|(table, partitions)| *table == slot.0 && partitions.contains(&slot.1))
        };
        // Known divergent partitions first, as many as the throttle allows,
        // each at most once a turn (one whose peer is down goes back).
        let queued = self
            .sync_plan
            .as_ref()
            .map_or(0, |plan| plan.divergent_count() as u64);
        for _ in 0..queued.min(ANTIENTROPY_EXCHANGES_PER_TURN_MAX) {
            if !self.may_work() {
                return;
            }
            let Some(plan) = self.sync_plan.as_mut() else {
                return;
            };
            let now = self.now.mono_ms;
            let Some(((table, partition), known_peer)) = plan.next_divergent(now, replicates)
            else {
                break;
            };
            let sweep = plan.sweep(count);
            self.start_exchange(&ring, &table, partition, known_peer, sweep);
        }
        for _ in 0..wanted {
            if !self.may_work() {
                return;
            }
            let Some(plan) = self.sync_plan.as_mut() else {
                return;
            };
            let Some((table, partition)) = plan.next_in_sweep(count, slot_at) else {
                return;
            };
            if plan.is_under_way(&(table.clone(), partition), self.now.mono_ms) {
                continue;
            }
            let sweep = plan.sweep(count);
            self.start_exchange(&ring, &table, partition, None, sweep);
        }
    }

    /// Whether the throttle lets anti-entropy work now (counted when not).
    fn may_work(&mut self) -> bool {
        let now = self.now.mono_ms;
        let may = self
            .sync_plan
            .as_mut()
            .is_some_and(|plan| plan.may_work(now));
        if !may {
            self.stats.antientropy.throttled_turns += 1;
        }
        may
    }

    /// What `/cluster` shows of anti-entropy.
    pub(super) fn antientropy_status(&mut self) -> Option<AntiEntropyStatus> {
        self.sync_plan.as_ref()?;
        let (slots, count) = match self.meta.ring.clone() {
            Some(ring) => self.sync_slots(&ring),
            None => (Vec::new(), 0),
        };
        let trees_built = self
            .served_tables()
            .iter()
            .all(|(table, _)| self.antientropy.is_built(table));
        let plan = self.sync_plan.as_ref()?;
        let mut oldest: Option<u64> = None;
        let mut never = 0;
        for (table, partitions) in slots {
            for p in partitions {
                match plan.compared_at(&(table.clone(), p)) {
                    Some(at) => oldest = Some(oldest.map_or(at, |o| o.min(at))),
                    None => never += 1,
                }
            }
        }
        let config = plan.config();
        Some(AntiEntropyStatus {
            last_exchange_ms: plan.last_compared_ms(),
            oldest_exchange_ms: if never == 0 { oldest } else { None },
            partitions: count,
            never_compared: never,
            divergent: plan.divergent_count() as u64,
            trees_built,
            keys_held: self.antientropy.keys_held(),
            stats: self.stats.antientropy,
            keys_per_s: config.keys_per_s,
            bytes_per_s: config.bytes_per_s,
        })
    }

    /// `peer` came back without its data: the partitions this node shares
    /// with it are compared with it first.
    pub(super) fn peer_lost_disk(&mut self, peer: &NodeId) {
        let Some(ring) = self.meta.ring.clone() else {
            return;
        };
        if self.sync_plan.is_none() {
            return;
        }
        let mut shared = Vec::new();
        for (table, config) in self.served_tables() {
            let n = usize::from(config.n);
            for &p in self
                .antientropy
                .replicated(&ring, config.n, &self.config.id)
            {
                if ring.first_n(p, n).contains(peer) {
                    shared.push((table.clone(), p));
                }
            }
        }
        if let Some(plan) = self.sync_plan.as_mut() {
            for slot in shared {
                plan.diverged(slot, Some(peer.clone()));
            }
        }
    }

    /// `node`, asked to store a write of `key`, refused it or never
    /// answered (a stand-in full of hints, a full disk, a crash): the
    /// primary it was meant for may lack the write, so the key's partition
    /// is compared with that primary first once it is up. A write no hint
    /// kept is then repaired within a turn of the primary's return, not a
    /// sweep; `/cluster` counts such partitions in `antientropy.divergent`.
    pub(super) fn write_missed(
        &mut self,
        table: &TableName,
        key: &[u8],
        node: &NodeId,
        asked: &[NodeId],
    ) {
        if self.sync_plan.is_none() || *node == self.config.id {
            return;
        }
        let Some(n) = self.meta.tables.get(table).map(|e| e.config.n) else {
            return;
        };
        let Some(partitions) = self.meta.ring.as_ref().map(Ring::partitions) else {
            return;
        };
        let primaries = self.primaries_of(table, key, n);
        if !primaries.contains(&self.config.id) {
            return;
        }
        let owner = if primaries.contains(node) {
            Some(node.clone())
        } else {
            owner_of(node, &primaries, asked).cloned()
        };
        if let (Some(owner), Some(plan)) = (owner, self.sync_plan.as_mut()) {
            let partition = partition_of(partitions, table, key);
            plan.diverged((table.clone(), partition), Some(owner));
        }
    }

    /// A write of `key` went to `asked` only: a primary neither asked nor
    /// covered by a stand-in (no node left to stand in, or a strict table)
    /// misses it, as if it had not answered.
    pub(super) fn primaries_left_out(&mut self, table: &TableName, key: &[u8], asked: &[NodeId]) {
        if self.sync_plan.is_none() {
            return;
        }
        let Some(n) = self.meta.tables.get(table).map(|e| e.config.n) else {
            return;
        };
        let primaries = self.primaries_of(table, key, n);
        for primary in &primaries {
            let covered = asked.contains(primary)
                || asked
                    .iter()
                    .any(|node| owner_of(node, &primaries, asked) == Some(primary));
            if !covered {
                self.write_missed(table, key, primary, asked);
            }
        }
    }

    /// Sends `partition`'s root to one other replica of it that is up: the
    /// one it is known to differ from (kept queued while that one is down),
    /// else the sweep's.
    fn start_exchange(
        &mut self,
        ring: &Ring,
        table: &TableName,
        partition: usize,
        known_peer: Option<NodeId>,
        sweep: u64,
    ) {
        let Some(n) = self.meta.tables.get(table).map(|e| usize::from(e.config.n)) else {
            return;
        };
        let peers: Vec<NodeId> = ring
            .first_n(partition, n)
            .into_iter()
            .filter(|id| *id != self.config.id && self.status_of(id) == Status::Up)
            .collect();
        let peer = match known_peer {
            Some(peer) if peers.contains(&peer) => peer,
            Some(peer) => {
                // Still down (or no longer a replica: then the next turn
                // drops the mark): the sweep goes on with the others.
                let replica = ring.first_n(partition, n).contains(&peer);
                if let (true, Some(plan)) = (replica, self.sync_plan.as_mut()) {
                    plan.diverged((table.clone(), partition), Some(peer));
                }
                return;
            }
            None if peers.is_empty() => return,
            None => peers[(sweep % peers.len() as u64) as usize].clone(),
        };
        let Ok(wire_partition) = u32::try_from(partition) else {
            return;
        };
        self.stats.antientropy.exchanges += 1;
        let now = self.now.mono_ms;
        if let Some(plan) = self.sync_plan.as_mut() {
            plan.begin((table.clone(), partition), now);
        }
        let root = self.antientropy.root(table, partition);
        self.send_to(
            &peer,
            Message::Sync(SyncMessage::Root {
                table: table.clone(),
                partition: wire_partition,
                root,
            }),
        );
    }

    /// Observes up to [`ANTIENTROPY_WALK_KEYS`] more of `table`'s stored
    /// objects into the trees; a failed read is retried next turn.
    fn walk_into_trees(
        &mut self,
        table: &TableName,
        config: &TableConfig,
        after: Option<Bytes>,
        ring: &Ring,
        store: &mut dyn LocalStore,
    ) {
        let page = self.sync_plan.as_ref().map_or(0, |plan| {
            usize::try_from(plan.keys.available()).unwrap_or(usize::MAX)
        });
        let page = page.min(ANTIENTROPY_WALK_KEYS);
        if page == 0 {
            return;
        }
        let Ok(keys) = store.keys_after(table, after.as_deref(), page) else {
            return;
        };
        if let Some(plan) = self.sync_plan.as_mut() {
            plan.keys.spend(keys.len() as u64);
        }
        for key in &keys {
            let Ok(object) = store.load(table, config.storage, key) else {
                return;
            };
            let partition = partition_of(ring.partitions(), table, key);
            self.antientropy
                .observe(table, partition, key, object.as_ref());
            self.observe_tombstones((table, partition), key, object.as_ref());
        }
        let last = if keys.len() == page {
            keys.last().cloned()
        } else {
            None
        };
        self.antientropy.walked(table, last);
    }

    /// A partition of a served table, from a peer's number (`None` for one
    /// that does not exist or a table not served or not yet in the trees).
    fn sync_partition(&self, table: &TableName, partition: u32) -> Option<usize> {
        let ring = self.meta.ring.as_ref()?;
        let partition = usize::try_from(partition).ok()?;
        let known = self.meta.tables.contains_key(table) && self.antientropy.is_built(table);
        (known && partition < ring.partitions()).then_some(partition)
    }

    /// Anti-entropy messages (ignored when this node runs none: it keeps
    /// no trees to answer from).
    pub(super) fn on_sync(
        &mut self,
        from: NodeId,
        message: SyncMessage,
        store: &mut dyn LocalStore,
    ) {
        if self.sync_plan.is_none() {
            return;
        }
        match message {
            SyncMessage::Root {
                table,
                partition,
                root,
            } => {
                let Some(p) = self.sync_partition(&table, partition) else {
                    return;
                };
                self.compared(&table, p);
                if self.antientropy.root(&table, p) == root {
                    self.send_to(
                        &from,
                        Message::Sync(SyncMessage::InSync { table, partition }),
                    );
                    return;
                }
                let leaves = self.antientropy.leaves(&table, p);
                self.send_to(
                    &from,
                    Message::Sync(SyncMessage::Leaves {
                        table,
                        partition,
                        leaves,
                    }),
                );
            }
            SyncMessage::Leaves {
                table,
                partition,
                leaves,
            } => {
                let Some(p) = self.sync_partition(&table, partition) else {
                    return;
                };
                let Some(differing) = self.antientropy.differing_leaves(&table, p, &leaves) else {
                    return;
                };
                self.compared(&table, p);
                if differing.is_empty() {
                    return;
                }
                self.stats.antientropy.differing += 1;
                // One exchange moves a bounded share of a large difference:
                // the partition is compared again before the round robin
                // goes on, until the roots agree.
                if let Some(plan) = self.sync_plan.as_mut() {
                    plan.diverged((table.clone(), p), Some(from.clone()));
                }
                let (leaves, items) =
                    self.antientropy
                        .items_of(&table, p, &differing, ANTIENTROPY_ITEMS_PER_MESSAGE);
                self.send_to(
                    &from,
                    Message::Sync(SyncMessage::Items {
                        table,
                        partition,
                        leaves,
                        items,
                    }),
                );
            }
            SyncMessage::Items {
                table,
                partition,
                leaves,
                items,
            } => {
                let Some(p) = self.sync_partition(&table, partition) else {
                    return;
                };
                let mut leaves: Vec<u16> = leaves
                    .into_iter()
                    .filter(|&leaf| usize::from(leaf) < LEAVES)
                    .collect();
                leaves.sort_unstable();
                leaves.dedup();
                // Never cut: keys past a cut would look missing here. A
                // list beyond any leaf this store could hold is refused.
                if items.len() > ANTIENTROPY_ITEMS_ACCEPTED_MAX {
                    return;
                }
                let (to_send, mut to_ask) =
                    self.antientropy.compare_items(&table, p, &leaves, &items);
                self.send_objects(&from, &table, p, to_send, store);
                to_ask.truncate(ANTIENTROPY_OBJECTS_PER_MESSAGE);
                if !to_ask.is_empty() {
                    self.send_to(
                        &from,
                        Message::Sync(SyncMessage::Pull {
                            table,
                            keys: to_ask,
                        }),
                    );
                }
            }
            SyncMessage::Pull { table, mut keys } => {
                let Some(ring) = &self.meta.ring else {
                    return;
                };
                if !self.meta.tables.contains_key(&table) {
                    return;
                }
                keys.truncate(ANTIENTROPY_OBJECTS_PER_MESSAGE);
                // Keys of several partitions may be asked for; each is sent
                // from its own partition's view.
                let partitions = ring.partitions();
                let mut by_partition: std::collections::BTreeMap<usize, Vec<Bytes>> =
                    std::collections::BTreeMap::new();
                for key in keys {
                    by_partition
                        .entry(partition_of(partitions, &table, &key))
                        .or_default()
                        .push(key);
                }
                for (p, keys) in by_partition {
                    self.send_objects(&from, &table, p, keys, store);
                }
            }
            SyncMessage::InSync { table, partition } => {
                if let Some(p) = self.sync_partition(&table, partition) {
                    self.compared(&table, p);
                    if let Some(plan) = self.sync_plan.as_mut() {
                        plan.agreed(&(table, p));
                    }
                }
            }
            SyncMessage::Objects { table, objects } => {
                if !self.meta.tables.contains_key(&table) || self.takes_no_more() {
                    return;
                }
                for (key, object) in objects.into_iter().take(ANTIENTROPY_OBJECTS_PER_MESSAGE) {
                    if let Ok(true) = self.store_or_hand_over(&table, &key, &object, store) {
                        self.stats.antientropy.objects_repaired += 1;
                    }
                }
            }
        }
    }

    /// `partition` of `table` was just compared with a peer.
    fn compared(&mut self, table: &TableName, partition: usize) {
        let wall_ms = self.now.wall_ms;
        if let Some(plan) = self.sync_plan.as_mut() {
            plan.compared((table.clone(), partition), wall_ms);
        }
    }

    pub(super) fn send_to(&mut self, node: &NodeId, message: Message) {
        if let Message::Sync(sync) = &message {
            // What anti-entropy costs on the wire, framing aside; all but
            // the objects (charged by their live bytes as they are read)
            // is charged to the throttle here.
            let size = postcard::experimental::serialized_size(sync).unwrap_or(0) as u64;
            self.stats.antientropy.message_bytes += size;
            if !matches!(sync, SyncMessage::Objects { .. }) {
                if let Some(plan) = self.sync_plan.as_mut() {
                    plan.bytes.spend(size);
                }
            }
        }
        if let Some(addr) = self.addr_of(node) {
            self.emit(Output::Send { addr, message });
        }
    }

    /// Sends `to` this node's objects of `keys` (of one partition), within
    /// one message's bounds (the rest goes with a later exchange). A key the
    /// tree lists but the store no longer holds leaves the tree.
    fn send_objects(
        &mut self,
        to: &NodeId,
        table: &TableName,
        partition: usize,
        keys: Vec<Bytes>,
        store: &mut dyn LocalStore,
    ) {
        let Some(storage) = self.meta.tables.get(table).map(|e| e.config.storage) else {
            return;
        };
        let Some(plan) = self.sync_plan.as_mut() else {
            return;
        };
        plan.may_work(self.now.mono_ms);
        // Within the throttle: as many keys as it has tokens for, and bytes
        // until it has none (the first object always, overdrawing if large).
        let keys_allowed = if plan.bytes.available() == 0 {
            0
        } else {
            usize::try_from(plan.keys.available())
                .unwrap_or(usize::MAX)
                .min(ANTIENTROPY_OBJECTS_PER_MESSAGE)
        };
        let bytes_allowed = usize::try_from(plan.bytes.available())
            .unwrap_or(usize::MAX)
            .min(ANTIENTROPY_BYTES_PER_MESSAGE);
        let mut objects = Vec::new();
        let mut bytes = 0;
        let mut read = 0;
        for key in keys {
            if read >= keys_allowed {
                break;
            }
            read += 1;
            let object = match store.load(table, storage, &key) {
                Ok(Some(object)) => object,
                Ok(None) => {
                    self.antientropy.observe(table, partition, &key, None);
                    self.observe_tombstones((table, partition), &key, None);
                    continue;
                }
                Err(_) => continue,
            };
            let size = object.live_bytes();
            if !objects.is_empty() && bytes + size > bytes_allowed {
                break;
            }
            bytes += size;
            objects.push((key, object));
        }
        if let Some(plan) = self.sync_plan.as_mut() {
            plan.keys.spend(read as u64);
            plan.bytes.spend(bytes as u64);
        }
        if objects.is_empty() {
            return;
        }
        self.stats.antientropy.objects_sent += objects.len() as u64;
        self.stats.antientropy.bytes_sent += bytes as u64;
        self.send_to(
            to,
            Message::Sync(SyncMessage::Objects {
                table: table.clone(),
                objects,
            }),
        );
    }
}
