//! Anti-entropy exchanges: every turn the node walks a page of any table
//! not yet in its trees, then sends one partition's root to another replica
//! of it. A replica whose root differs answers with its leaves; the first
//! sends its objects of the differing leaves and asks for the other's; each
//! merges what it receives as a repair (a causal join; plugins never run
//! here). The trees and the round robin are `core/antientropy.rs`'s.

use super::*;
use crate::core::limits::{
    ANTIENTROPY_BYTES_PER_MESSAGE, ANTIENTROPY_ITEMS_PER_MESSAGE, ANTIENTROPY_OBJECTS_PER_MESSAGE,
    ANTIENTROPY_WALK_KEYS,
};
use crate::core::merkle::LEAVES;

impl Node {
    /// A staged object is the key's current item in the trees.
    pub(super) fn observe_staged(&mut self, table: &TableName, key: &[u8], object: &Object) {
        if self.config.antientropy_every_ms.is_none() {
            return;
        }
        if let Some(ring) = &self.meta.ring {
            let partition = partition_of(ring.partitions(), table, key);
            self.antientropy
                .observe(table, partition, key, Some(object));
        }
    }

    /// One anti-entropy turn: walk a page of each table whose trees are not
    /// built yet, then start one exchange.
    pub(super) fn antientropy_turn(&mut self, store: &mut dyn LocalStore) {
        let Some(ring) = self.meta.ring.clone() else {
            return;
        };
        let served = &self.meta.tables;
        self.antientropy
            .retain_tables(|table| served.contains_key(table));
        let tables: Vec<(TableName, TableConfig)> = self
            .meta
            .tables
            .iter()
            .map(|(name, entry)| (name.clone(), entry.config.clone()))
            .collect();
        // One table's page per turn, however many tables are still walked.
        for (table, config) in &tables {
            if let Some(after) = self.antientropy.walk_from(table) {
                self.walk_into_trees(table, config, after, &ring, store);
                break;
            }
        }
        if tables.is_empty() {
            return;
        }
        let turn = self.antientropy.next_turn();
        let (table, config) = &tables[(turn % tables.len() as u64) as usize];
        if !self.antientropy.is_built(table) {
            return;
        }
        let n = usize::from(config.n);
        let replicated = self
            .antientropy
            .replicated(&ring, config.n, &self.config.id);
        if replicated.is_empty() {
            return;
        }
        let round = turn / tables.len() as u64;
        let count = replicated.len() as u64;
        let partition = replicated[(round % count) as usize];
        let peers: Vec<NodeId> = ring
            .preference_list(partition)
            .into_iter()
            .take(n)
            .filter(|id| *id != self.config.id && self.status_of(id) == Status::Up)
            .collect();
        if peers.is_empty() {
            return;
        }
        // One sweep of the partitions with one peer, the next with another.
        let sweep = round / count;
        let peer = &peers[(sweep % peers.len() as u64) as usize];
        let Some(addr) = self.addr_of(peer) else {
            return;
        };
        let Ok(wire_partition) = u32::try_from(partition) else {
            return;
        };
        self.stats.antientropy.exchanges += 1;
        let root = self.antientropy.root(table, partition);
        self.emit(Output::Send {
            addr,
            message: Message::Sync(SyncMessage::Root {
                table: table.clone(),
                partition: wire_partition,
                root,
            }),
        });
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
        let Ok(keys) = store.keys_after(table, after.as_deref(), ANTIENTROPY_WALK_KEYS) else {
            return;
        };
        for key in &keys {
            let Ok(object) = store.load(table, config.storage, key) else {
                return;
            };
            let partition = partition_of(ring.partitions(), table, key);
            self.antientropy
                .observe(table, partition, key, object.as_ref());
        }
        let last = if keys.len() == ANTIENTROPY_WALK_KEYS {
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
        if self.config.antientropy_every_ms.is_none() {
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
                if self.antientropy.root(&table, p) == root {
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
                if differing.is_empty() {
                    return;
                }
                self.stats.antientropy.differing += 1;
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
                let items = &items[..items.len().min(ANTIENTROPY_ITEMS_PER_MESSAGE)];
                let (to_send, mut to_ask) =
                    self.antientropy.compare_items(&table, p, &leaves, items);
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
            SyncMessage::Objects { table, objects } => {
                if !self.meta.tables.contains_key(&table) {
                    return;
                }
                for (key, object) in objects.into_iter().take(ANTIENTROPY_OBJECTS_PER_MESSAGE) {
                    if self
                        .store_replica(&table, &key, &object, None, store)
                        .is_ok()
                    {
                        self.stats.antientropy.objects_repaired += 1;
                    }
                }
            }
        }
    }

    fn send_to(&mut self, node: &NodeId, message: Message) {
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
        let mut objects = Vec::new();
        let mut bytes = 0;
        for key in keys {
            if objects.len() >= ANTIENTROPY_OBJECTS_PER_MESSAGE {
                break;
            }
            let object = match store.load(table, storage, &key) {
                Ok(Some(object)) => object,
                Ok(None) => {
                    self.antientropy.observe(table, partition, &key, None);
                    continue;
                }
                Err(_) => continue,
            };
            let size = object.live_bytes();
            if !objects.is_empty() && bytes + size > ANTIENTROPY_BYTES_PER_MESSAGE {
                break;
            }
            bytes += size;
            objects.push((key, object));
        }
        if objects.is_empty() {
            return;
        }
        self.stats.antientropy.objects_sent += objects.len() as u64;
        self.send_to(
            to,
            Message::Sync(SyncMessage::Objects {
                table: table.clone(),
                objects,
            }),
        );
    }
}
