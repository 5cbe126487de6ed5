//! Anti-entropy's state on one node: a hash tree per (table, partition) over
//! the objects this node holds (see [`crate::core::merkle`]), kept current as
//! writes are staged and built at start by a bounded walk of the store; and
//! ([`plan`]) which partition to compare next and the throttle.
//!
//! The exchange itself (node/antientropy.rs) is stateless between messages:
//! a replica sends its root; a replica whose root differs answers with its
//! leaves; the first sends its objects of the differing leaves and asks for
//! the other's; both merge what they receive causally, as a repair. Each
//! leaf's keys come from the per-partition item map kept here, so no store
//! scan is needed to answer.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

mod plan;

pub use plan::{AntiEntropyConfig, Plan, Slot};

use super::merkle::{item_hash, leaf_of, Hash, HashTree, LEAVES};
use super::object::Object;
use super::ring::Ring;
use super::types::{NodeId, TableName};

/// One partition's items (by leaf: key → item hash) and their tree.
#[derive(Debug, Default)]
struct PartitionTree {
    leaves: HashMap<usize, BTreeMap<Bytes, Hash>>,
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
    /// Keys with an item (a non-empty object) across its partitions.
    keys: u64,
}

/// This node's anti-entropy trees (the schedule is [`Plan`]'s).
#[derive(Debug, Default)]
pub struct AntiEntropy {
    tables: HashMap<TableName, TableTrees>,
    /// The partitions this node replicates, by n, for the ring they were
    /// computed from (recomputed only when the ring changes).
    replicated: Option<(Ring, HashMap<u8, Vec<usize>>)>,
}

/// The item of an object: its key, its clock and the dots of the versions
/// it keeps, so two replicas hold the same item exactly when they hold the
/// same versions with the same knowledge. The clock alone is not enough:
/// merged along different paths, two copies can reach the same clock while
/// one still keeps a version the other knows was superseded (and would
/// drop on merging the other's copy).
pub fn item_of(key: &[u8], object: &Object) -> Hash {
    let dots: Vec<_> = object.versions.iter().map(|v| &v.dot).collect();
    let summary = postcard::to_allocvec(&(&object.clock, dots)).unwrap_or_default();
    item_hash(key, &summary)
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
        let trees = self.trees_mut(table);
        let part = trees.partitions.entry(partition).or_default();
        let new = object.filter(|o| !o.is_empty()).map(|o| item_of(key, o));
        let leaf = leaf_of(key);
        let old = match &new {
            Some(hash) => part
                .leaves
                .entry(leaf)
                .or_default()
                .insert(Bytes::copy_from_slice(key), *hash),
            None => {
                let items = part.leaves.get_mut(&leaf);
                let old = items.and_then(|items| items.remove(key));
                if part.leaves.get(&leaf).is_some_and(BTreeMap::is_empty) {
                    part.leaves.remove(&leaf);
                }
                old
            }
        };
        if old != new {
            part.tree.update(key, old.as_ref(), new.as_ref());
        }
        match (&old, &new) {
            (None, Some(_)) => trees.keys += 1,
            (Some(_), None) => trees.keys = trees.keys.saturating_sub(1),
            _ => {}
        }
    }

    /// Where the start-up walk of `table` goes on from: `None` once it is
    /// done, `Some(None)` before its first key.
    pub fn walk_from(&mut self, table: &TableName) -> Option<Option<Bytes>> {
        match &self.trees_mut(table).build {
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

    /// Keys this node holds objects for (of every table), as far as the
    /// trees know: all of them once [`is_built`](Self::is_built) for each.
    pub fn keys_held(&self) -> u64 {
        self.tables.values().map(|trees| trees.keys).sum()
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

    /// This node's items of `leaves` of a partition: whole leaves, in the
    /// order given, until `max_items` would be passed (the first leaf
    /// always). Returns the leaves covered and their items.
    pub fn items_of(
        &self,
        table: &TableName,
        partition: usize,
        leaves: &[u16],
        max_items: usize,
    ) -> (Vec<u16>, Vec<(Bytes, Hash)>) {
        let mut covered = Vec::new();
        let mut items = Vec::new();
        let part = self.partition(table, partition);
        for &leaf in leaves {
            let held = part.and_then(|p| p.leaves.get(&usize::from(leaf)));
            let count = held.map_or(0, BTreeMap::len);
            if !covered.is_empty() && items.len() + count > max_items {
                break;
            }
            covered.push(leaf);
            if let Some(held) = held {
                items.extend(held.iter().map(|(key, hash)| (key.clone(), *hash)));
            }
        }
        (covered, items)
    }

    /// Compares another replica's items of `leaves` with this node's: the
    /// keys this node holds whose items differ (to send), and the keys the
    /// other holds whose items differ here or are missing (to ask for).
    pub fn compare_items(
        &self,
        table: &TableName,
        partition: usize,
        leaves: &[u16],
        theirs: &[(Bytes, Hash)],
    ) -> (Vec<Bytes>, Vec<Bytes>) {
        let part = self.partition(table, partition);
        let mine: BTreeMap<&Bytes, &Hash> = leaves
            .iter()
            .filter_map(|&leaf| part.and_then(|p| p.leaves.get(&usize::from(leaf))))
            .flat_map(|held| held.iter())
            .collect();
        let theirs: BTreeMap<&Bytes, &Hash> = theirs
            .iter()
            .filter(|(key, _)| leaves.contains(&(leaf_of(key) as u16)))
            .map(|(key, hash)| (key, hash))
            .collect();
        let to_send = mine
            .iter()
            .filter(|(key, hash)| theirs.get(*key) != Some(*hash))
            .map(|(key, _)| (*key).clone())
            .collect();
        let to_ask = theirs
            .iter()
            .filter(|(key, hash)| mine.get(*key) != Some(*hash))
            .map(|(key, _)| (*key).clone())
            .collect();
        (to_send, to_ask)
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
                .filter(|&p| ring.first_n(p, usize::from(n)).contains(me))
                .collect()
        })
    }

    /// `table`'s trees, new ones (walk not started) if it has none yet.
    fn trees_mut(&mut self, table: &TableName) -> &mut TableTrees {
        self.tables
            .entry(table.clone())
            .or_insert_with(|| TableTrees {
                partitions: HashMap::new(),
                build: Build::Walking { after: None },
                keys: 0,
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
    use crate::core::causal::{CausalContext, Dot};
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
    fn only_keys_whose_items_differ_are_sent_or_asked_for_however_many_agree() {
        let table = TableName::new("t").unwrap();
        let (mut a, mut b) = (AntiEntropy::default(), AntiEntropy::default());
        for i in 0..3_000 {
            let key = format!("k{i}");
            a.observe(&table, 0, key.as_bytes(), Some(&object(1)));
            // b missed a tenth of the writes and holds a newer version of another tenth.
            match i % 10 {
                0 => {}
                1 => b.observe(&table, 0, key.as_bytes(), Some(&object(2))),
                _ => b.observe(&table, 0, key.as_bytes(), Some(&object(1))),
            }
        }
        let differing = a.differing_leaves(&table, 0, &b.leaves(&table, 0)).unwrap();
        let (covered, items) = a.items_of(&table, 0, &differing, usize::MAX);
        assert_eq!(covered, differing);
        let (to_send, to_ask) = b.compare_items(&table, 0, &covered, &items);
        let tenth = |r: usize| -> Vec<Bytes> {
            let mut keys: Vec<Bytes> = (0..3_000)
                .filter(|i| i % 10 == r)
                .map(|i| Bytes::from(format!("k{i}")))
                .collect();
            keys.sort();
            keys
        };
        assert_eq!(to_send, tenth(1), "b sends only its newer versions");
        let mut asked = tenth(0);
        asked.extend(tenth(1));
        asked.sort();
        assert_eq!(
            to_ask, asked,
            "b asks only for what it lacks or holds otherwise"
        );
        let (few, _) = a.items_of(&table, 0, &differing, 1);
        assert_eq!(few.len(), 1, "whole leaves, at least one");
    }

    #[test]
    fn copies_with_one_clock_but_other_versions_are_different_items() {
        let version = |d: Dot, value: &'static [u8]| Version {
            timestamp_ms: d.counter,
            dot: d,
            value: Some(Bytes::from_static(value)),
            content_type: "text/plain".into(),
        };
        let mode = MergeMode::Siblings;
        let mut first = Object::default();
        first.apply_write(&CausalContext::new(), version(dot("a", 1, 1), b"old"), mode);
        // b's write saw a's version and supersedes it.
        let mut second = first.clone();
        second.apply_write(&first.clock.clone(), version(dot("b", 1, 1), b"new"), mode);
        // A copy of b's write that did not carry what it superseded (a
        // coordinator's object without that history) reaches a's holder.
        let mut partial = Object::default();
        partial.apply_write(&CausalContext::new(), version(dot("b", 1, 1), b"new"), mode);
        let mut stale = first.clone();
        stale.merge(&partial, mode);
        assert_eq!(stale.clock, second.clock);
        assert_ne!(stale.versions, second.versions);
        assert_ne!(item_of(b"k", &stale), item_of(b"k", &second));
        stale.merge(&second, mode);
        assert_eq!(item_of(b"k", &stale), item_of(b"k", &second));
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
        let (covered, items) = b.items_of(&table, 0, &differing, 100);
        assert_eq!(covered, differing);
        let (to_send, to_ask) = a.compare_items(&table, 0, &covered, &items);
        assert_eq!(to_send, vec![Bytes::from_static(b"k2")]);
        assert_eq!(to_ask, vec![Bytes::from_static(b"k2")]);
        b.observe(&table, 0, b"k2", None);
        a.observe(&table, 0, b"k2", None);
        assert_eq!(a.root(&table, 0), b.root(&table, 0));
        assert_eq!(a.differing_leaves(&table, 0, &[[0; 32]; 3]), None);
    }
}
