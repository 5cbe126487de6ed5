//! Anti-entropy's state on one node: a hash tree per (table, partition) over
//! the objects this node holds (see [`crate::core::merkle`]), kept current as
//! writes are staged, built at start by a bounded walk of the store, and the
//! round-robin choice of which partition to compare next.
//!
//! The exchange itself (node/antientropy.rs) is stateless between messages:
//! a replica sends its root; a replica whose root differs answers with its
//! leaves; the first sends its objects of the differing leaves and asks for
//! the other's; both merge what they receive causally, as a repair. Each
//! leaf's keys come from the per-partition item map kept here, so no store
//! scan is needed to answer.

use std::collections::HashMap;

use bytes::Bytes;

use super::merkle::{item_hash, leaf_of, Hash, HashTree, LEAVES};
use super::object::Object;
use super::ring::Ring;
use super::types::{NodeId, TableName};

/// One partition's items (key → item hash) and their tree.
#[derive(Debug, Default)]
struct PartitionTree {
    items: HashMap<Bytes, Hash>,
    tree: HashTree,
}

/// How far the start-up walk of a table's objects has come.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Build {
    /// Keys up to and including `after` were observed (`None`: none yet).
    Walking { after: Option<Bytes> },
    /// Every object the store held at start was observed.
    Done,
}

/// One table's trees.
#[derive(Debug)]
struct TableTrees {
    partitions: HashMap<usize, PartitionTree>,
    build: Build,
}

/// This node's anti-entropy trees and its place in the round robin.
#[derive(Debug, Default)]
pub struct AntiEntropy {
    tables: HashMap<TableName, TableTrees>,
    /// Counts exchanges started: picks the partition and the peer.
    turn: u64,
    /// The partitions this node replicates, by n, for the ring they were
    /// computed from (recomputed only when the ring changes).
    replicated: Option<(Ring, HashMap<u8, Vec<usize>>)>,
}

/// The item of an object: its key and its clock, so two replicas holding
/// the same versions of a key hold the same item.
pub fn item_of(key: &[u8], object: &Object) -> Hash {
    let clock = postcard::to_allocvec(&object.clock).unwrap_or_default();
    item_hash(key, &clock)
}

impl AntiEntropy {
    /// `key` of `table` (in `partition`) now holds `object` (`None`: nothing).
    /// Writes call this as they are staged, and the start-up walk for what
    /// the store held; both set the key's current item, so their order does
    /// not matter.
    pub fn observe(
        &mut self,
        table: &TableName,
        partition: usize,
        key: &[u8],
        object: Option<&Object>,
    ) {
        let trees = self
            .tables
            .entry(table.clone())
            .or_insert_with(|| TableTrees {
                partitions: HashMap::new(),
                build: Build::Walking { after: None },
            });
        let part = trees.partitions.entry(partition).or_default();
        let new = object.filter(|o| !o.is_empty()).map(|o| item_of(key, o));
        let old = match &new {
            Some(hash) => part.items.insert(Bytes::copy_from_slice(key), *hash),
            None => part.items.remove(key),
        };
        if old != new {
            part.tree.update(key, old.as_ref(), new.as_ref());
        }
    }

    /// Where the start-up walk of `table` goes on from: `None` once it is
    /// done, `Some(None)` before its first key.
    pub fn walk_from(&mut self, table: &TableName) -> Option<Option<Bytes>> {
        let trees = self
            .tables
            .entry(table.clone())
            .or_insert_with(|| TableTrees {
                partitions: HashMap::new(),
                build: Build::Walking { after: None },
            });
        match &trees.build {
            Build::Walking { after } => Some(after.clone()),
            Build::Done => None,
        }
    }

    /// The walk of `table` observed keys up to `last`; `None` when it ended.
    pub fn walked(&mut self, table: &TableName, last: Option<Bytes>) {
        if let Some(trees) = self.tables.get_mut(table) {
            trees.build = match last {
                Some(after) => Build::Walking { after: Some(after) },
                None => Build::Done,
            };
        }
    }

    /// Whether `table`'s trees hold everything this node stores for it (an
    /// exchange before that would send what the other side already has).
    pub fn is_built(&self, table: &TableName) -> bool {
        self.tables
            .get(table)
            .is_some_and(|trees| trees.build == Build::Done)
    }

    /// Forgets every tree, to be walked again from the store: what was
    /// observed as staged may be gone (a failed commit dropped its batches),
    /// and a tree claiming it would hide the difference from every exchange.
    pub fn forget_trees(&mut self) {
        self.tables.clear();
    }

    /// Forgets the trees of tables no longer served.
    pub fn retain_tables(&mut self, serves: impl Fn(&TableName) -> bool) {
        self.tables.retain(|table, _| serves(table));
    }

    /// The root of a partition's tree.
    pub fn root(&self, table: &TableName, partition: usize) -> Hash {
        self.partition(table, partition)
            .map_or(super::merkle::EMPTY, |p| p.tree.root())
    }

    /// The leaves of a partition's tree.
    pub fn leaves(&self, table: &TableName, partition: usize) -> Vec<Hash> {
        match self.partition(table, partition) {
            Some(p) => p.tree.leaves().to_vec(),
            None => HashTree::default().leaves().to_vec(),
        }
    }

    /// The leaves whose hashes differ from `theirs` (`None` when `theirs` is
    /// not a whole set of leaves).
    pub fn differing_leaves(
        &self,
        table: &TableName,
        partition: usize,
        theirs: &[Hash],
    ) -> Option<Vec<u16>> {
        if theirs.len() != LEAVES {
            return None;
        }
        let mine = self.leaves(table, partition);
        Some(
            mine.iter()
                .zip(theirs)
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .filter_map(|(leaf, _)| u16::try_from(leaf).ok())
                .collect(),
        )
    }

    /// The keys this node holds in `leaves` of a partition, sorted.
    pub fn keys_in(&self, table: &TableName, partition: usize, leaves: &[u16]) -> Vec<Bytes> {
        let Some(part) = self.partition(table, partition) else {
            return Vec::new();
        };
        let wanted: std::collections::HashSet<usize> =
            leaves.iter().map(|&l| usize::from(l)).collect();
        let mut keys: Vec<Bytes> = part
            .items
            .keys()
            .filter(|key| wanted.contains(&leaf_of(key)))
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    /// The next exchange's turn: a counter the node maps to a partition and
    /// a peer, so successive exchanges walk every partition and every peer.
    pub fn next_turn(&mut self) -> u64 {
        self.turn = self.turn.wrapping_add(1);
        self.turn
    }

    /// The partitions whose first `n` preferred nodes include `me`.
    pub fn replicated(&mut self, ring: &Ring, n: u8, me: &NodeId) -> &[usize] {
        if self
            .replicated
            .as_ref()
            .is_none_or(|(known, _)| known != ring)
        {
            self.replicated = Some((ring.clone(), HashMap::new()));
        }
        let Some((_, by_n)) = self.replicated.as_mut() else {
            return &[];
        };
        by_n.entry(n).or_insert_with(|| {
            (0..ring.partitions())
                .filter(|&p| {
                    ring.preference_list(p)
                        .iter()
                        .take(usize::from(n))
                        .any(|id| id == me)
                })
                .collect()
        })
    }

    fn partition(&self, table: &TableName, partition: usize) -> Option<&PartitionTree> {
        self.tables.get(table)?.partitions.get(&partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::causal::tests::dot;
    use crate::core::causal::CausalContext;
    use crate::core::object::Version;
    use crate::core::table::MergeMode;

    fn object(counter: u64) -> Object {
        let mut object = Object::default();
        let version = Version {
            dot: dot("a", 1, counter),
            timestamp_ms: counter,
            value: Some(Bytes::from_static(b"v")),
            content_type: "text/plain".into(),
        };
        object.apply_write(&CausalContext::new(), version, MergeMode::Siblings);
        object
    }

    #[test]
    fn replicas_with_the_same_objects_have_the_same_root_whatever_the_order() {
        let table = TableName::new("t").unwrap();
        let (mut a, mut b) = (AntiEntropy::default(), AntiEntropy::default());
        for key in ["k1", "k2", "k3"] {
            a.observe(&table, 0, key.as_bytes(), Some(&object(1)));
        }
        for key in ["k3", "k1", "k2"] {
            b.observe(&table, 0, key.as_bytes(), Some(&object(2)));
            b.observe(&table, 0, key.as_bytes(), Some(&object(1)));
        }
        assert_eq!(a.root(&table, 0), b.root(&table, 0));
        b.observe(&table, 0, b"k2", Some(&object(3)));
        let differing = a.differing_leaves(&table, 0, &b.leaves(&table, 0)).unwrap();
        assert_eq!(differing.len(), 1);
        assert_eq!(
            a.keys_in(&table, 0, &differing),
            vec![Bytes::from_static(b"k2")]
        );
        b.observe(&table, 0, b"k2", None);
        a.observe(&table, 0, b"k2", None);
        assert_eq!(a.root(&table, 0), b.root(&table, 0));
        assert_eq!(a.differing_leaves(&table, 0, &[[0; 32]; 3]), None);
    }
}
