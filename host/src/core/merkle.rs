//! Anti-entropy's hash tree over one (table, partition) of a replica, and the
//! pure logic of comparing two replicas' trees: which branches differ, and in
//! the leaves that differ, which keys.
//!
//! Each key contributes one *item hash*, sha256 over the key and the encoded
//! clock of its stored object: two replicas holding the same versions of a
//! key hold the same clock, so the same item. A node of the tree is the XOR
//! of the item hashes beneath it, so a write updates the tree in place, in
//! `DEPTH` steps, by XOR-ing the key's old item out and its new one in — no
//! rebuild, no stored item lists, and the tree of a set of items does not
//! depend on the order they arrived in. Keys are spread over the leaves by
//! another hash of the key alone, so a key stays in one leaf whatever its
//! versions.
//!
//! Comparing two trees ([`Descent`]) asks the other replica for the children
//! of each node whose hashes differ, level by level, and ends with the leaves
//! that differ; [`differing_keys`] then compares the two sides' items of one
//! leaf. What is sent and merged is the caller's: this file does no I/O.

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// A node's or an item's hash.
pub type Hash = [u8; 32];

/// Children per node.
pub const FANOUT: usize = 16;

/// Levels below the root: the leaves are at this depth (16² = 256 leaves per
/// partition, a handful of keys each at 100,000 keys over 256 partitions).
pub const DEPTH: usize = 2;

/// Leaves per tree.
pub const LEAVES: usize = FANOUT.pow(DEPTH as u32);

/// The hash of a tree over no items (XOR's identity).
pub const EMPTY: Hash = [0; 32];

/// A key's item: sha256 over the key's length, the key and the encoded clock
/// of its object (the length keeps `("ab", "c")` apart from `("a", "bc")`).
pub fn item_hash(key: &[u8], clock: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update((key.len() as u64).to_le_bytes());
    hasher.update(key);
    hasher.update(clock);
    hasher.finalize().into()
}

/// The leaf a key belongs to, from a hash of the key alone.
pub fn leaf_of(key: &[u8]) -> usize {
    let mut hasher = Sha256::new();
    hasher.update(b"cairn-merkle-leaf");
    hasher.update(key);
    let digest = hasher.finalize();
    usize::from(u16::from_be_bytes([digest[0], digest[1]])) % LEAVES
}

fn xor_into(target: &mut Hash, item: &Hash) {
    for (t, i) in target.iter_mut().zip(item) {
        *t ^= i;
    }
}

/// A node of the tree: `level` 0 is the root, `DEPTH` the leaves; `index`
/// counts the nodes of its level from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeRef {
    /// Depth below the root.
    pub level: usize,
    /// Position within its level.
    pub index: usize,
}

impl NodeRef {
    /// The root.
    pub const ROOT: NodeRef = NodeRef { level: 0, index: 0 };

    /// Whether this is a leaf.
    pub fn is_leaf(&self) -> bool {
        self.level == DEPTH
    }

    /// Child `child` (`0..FANOUT`) of this node.
    pub fn child(&self, child: usize) -> NodeRef {
        NodeRef {
            level: self.level + 1,
            index: self.index * FANOUT + child,
        }
    }

    /// Whether the node exists in a tree.
    pub fn is_valid(&self) -> bool {
        self.level <= DEPTH && self.index < FANOUT.pow(self.level as u32)
    }
}

/// One replica's hash tree of one (table, partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashTree {
    /// `levels[l]` holds the `FANOUT^l` node hashes of level `l`.
    levels: Vec<Vec<Hash>>,
}

impl Default for HashTree {
    fn default() -> Self {
        HashTree {
            levels: (0..=DEPTH)
                .map(|level| vec![EMPTY; FANOUT.pow(level as u32)])
                .collect(),
        }
    }
}

impl HashTree {
    /// A key's item changed from `old` to `new` (`None`: absent): the path
    /// from its leaf to the root is updated in place.
    pub fn update(&mut self, key: &[u8], old: Option<&Hash>, new: Option<&Hash>) {
        let mut change = EMPTY;
        if let Some(old) = old {
            xor_into(&mut change, old);
        }
        if let Some(new) = new {
            xor_into(&mut change, new);
        }
        let mut index = leaf_of(key);
        for level in (0..=DEPTH).rev() {
            xor_into(&mut self.levels[level][index], &change);
            index /= FANOUT;
        }
    }

    /// The root's hash: equal roots mean (but for a sha256 collision) equal items.
    pub fn root(&self) -> Hash {
        self.levels[0][0]
    }

    /// A node's hash, if the node exists.
    pub fn hash(&self, node: NodeRef) -> Option<Hash> {
        self.levels.get(node.level)?.get(node.index).copied()
    }

    /// Every leaf's hash, in leaf order.
    pub fn leaves(&self) -> &[Hash] {
        &self.levels[DEPTH]
    }

    /// The hashes of a node's children: what a replica answers when asked to
    /// descend (`None` for a leaf or a node that does not exist).
    pub fn children(&self, node: NodeRef) -> Option<&[Hash]> {
        if !node.is_valid() || node.is_leaf() {
            return None;
        }
        let first = node.index * FANOUT;
        self.levels[node.level + 1].get(first..first + FANOUT)
    }
}

/// The comparison of this replica's tree with another's, one level at a
/// time: the caller asks the other replica for the children of each node
/// [`Descent::next_request`] names, and feeds the answer back. It ends with
/// the leaves whose items differ, found in at most `DEPTH` round trips per
/// differing branch.
#[derive(Debug, Clone, Default)]
pub struct Descent {
    /// Nodes whose hashes differ and whose children are still to be asked for.
    to_ask: Vec<NodeRef>,
    /// Leaves whose hashes differ: their items are to be compared.
    leaves: Vec<usize>,
}

/// Why an answer from the other replica cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescentError {
    /// It names a node that was not asked for.
    #[error("an answer for a node that was not asked for")]
    NotAsked,
    /// It holds another number of children than the tree's fan-out.
    #[error("an answer with {0} children (the fan-out is {FANOUT})")]
    WrongFanout(usize),
}

impl Descent {
    /// Starts from the two roots: nothing to do when they are equal.
    pub fn new(mine: Hash, theirs: Hash) -> Descent {
        let to_ask = if mine == theirs {
            Vec::new()
        } else {
            vec![NodeRef::ROOT]
        };
        Descent {
            to_ask,
            leaves: Vec::new(),
        }
    }

    /// The next node whose children to ask the other replica for.
    pub fn next_request(&self) -> Option<NodeRef> {
        self.to_ask.last().copied()
    }

    /// The other replica's children of `node`: the children whose hashes
    /// differ from this tree's are descended into, or, at the leaves, kept
    /// for comparing items.
    pub fn on_children(
        &mut self,
        node: NodeRef,
        theirs: &[Hash],
        mine: &HashTree,
    ) -> Result<(), DescentError> {
        let Some(position) = self.to_ask.iter().position(|asked| *asked == node) else {
            return Err(DescentError::NotAsked);
        };
        let Some(own) = mine.children(node) else {
            return Err(DescentError::NotAsked);
        };
        if theirs.len() != FANOUT {
            return Err(DescentError::WrongFanout(theirs.len()));
        }
        self.to_ask.swap_remove(position);
        for (child, (a, b)) in own.iter().zip(theirs).enumerate() {
            if a == b {
                continue;
            }
            let child = node.child(child);
            if child.is_leaf() {
                self.leaves.push(child.index);
            } else {
                self.to_ask.push(child);
            }
        }
        Ok(())
    }

    /// Whether every differing branch was descended.
    pub fn is_done(&self) -> bool {
        self.to_ask.is_empty()
    }

    /// The leaves found to differ so far, in the order found.
    pub fn differing_leaves(&self) -> &[usize] {
        &self.leaves
    }
}

/// The keys of one leaf whose items differ between two replicas: held by
/// one side only, or with different clocks. Each side lists its `(key,
/// item hash)` pairs of the leaf, in any order; the answer is sorted.
pub fn differing_keys(mine: &[(Bytes, Hash)], theirs: &[(Bytes, Hash)]) -> Vec<Bytes> {
    let mut items: std::collections::BTreeMap<&Bytes, (Option<&Hash>, Option<&Hash>)> =
        std::collections::BTreeMap::new();
    for (key, hash) in mine {
        items.entry(key).or_default().0 = Some(hash);
    }
    for (key, hash) in theirs {
        items.entry(key).or_default().1 = Some(hash);
    }
    items
        .into_iter()
        .filter(|(_, (a, b))| a != b)
        .map(|(key, _)| key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// A replica's items: key → clock bytes.
    type Replica = BTreeMap<Vec<u8>, Vec<u8>>;

    fn tree_of(replica: &Replica) -> HashTree {
        let mut tree = HashTree::default();
        for (key, clock) in replica {
            tree.update(key, None, Some(&item_hash(key, clock)));
        }
        tree
    }

    fn leaf_items(replica: &Replica, leaf: usize) -> Vec<(Bytes, Hash)> {
        replica
            .iter()
            .filter(|(key, _)| leaf_of(key) == leaf)
            .map(|(key, clock)| (Bytes::copy_from_slice(key), item_hash(key, clock)))
            .collect()
    }

    /// Runs a whole comparison of `a` against `b`, `b` answering from its tree.
    fn compare(a: &Replica, b: &Replica) -> (Vec<Bytes>, usize) {
        let (mine, theirs) = (tree_of(a), tree_of(b));
        let mut descent = Descent::new(mine.root(), theirs.root());
        let mut round_trips = 0;
        while let Some(node) = descent.next_request() {
            let answer = theirs.children(node).expect("asked for an inner node");
            descent
                .on_children(node, answer, &mine)
                .expect("a valid answer");
            round_trips += 1;
        }
        let mut keys: Vec<Bytes> = descent
            .differing_leaves()
            .iter()
            .flat_map(|&leaf| differing_keys(&leaf_items(a, leaf), &leaf_items(b, leaf)))
            .collect();
        keys.sort();
        (keys, round_trips)
    }

    fn replicas() -> impl Strategy<Value = (Replica, Replica)> {
        let replica = prop::collection::btree_map(
            prop::collection::vec(any::<u8>(), 1..6),
            prop::collection::vec(0u8..4, 1..3),
            0..60,
        );
        (replica.clone(), replica)
    }

    proptest! {
        #[test]
        fn a_comparison_finds_exactly_the_keys_whose_items_differ((a, b) in replicas()) {
            let expected: Vec<Bytes> = a
                .keys()
                .chain(b.keys())
                .filter(|key| a.get(*key) != b.get(*key))
                .map(|key| Bytes::copy_from_slice(key))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let (found, _) = compare(&a, &b);
            prop_assert_eq!(found, expected);
        }

        #[test]
        fn updating_in_place_equals_building_from_scratch(
            (a, b) in replicas(),
        ) {
            // Start from a, then move every key to its state in b.
            let mut tree = tree_of(&a);
            let keys: std::collections::BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let old = a.get(key).map(|clock| item_hash(key, clock));
                let new = b.get(key).map(|clock| item_hash(key, clock));
                tree.update(key, old.as_ref(), new.as_ref());
            }
            prop_assert_eq!(tree, tree_of(&b));
        }
    }

    #[test]
    fn equal_replicas_need_no_round_trip_and_one_difference_needs_depth() {
        let mut a = Replica::new();
        for i in 0..1_000u32 {
            a.insert(i.to_be_bytes().to_vec(), vec![1]);
        }
        assert_eq!(compare(&a, &a.clone()), (Vec::new(), 0));
        let mut b = a.clone();
        b.insert(7u32.to_be_bytes().to_vec(), vec![2]);
        let (keys, round_trips) = compare(&a, &b);
        assert_eq!(keys, vec![Bytes::copy_from_slice(&7u32.to_be_bytes())]);
        assert_eq!(
            round_trips, DEPTH,
            "one branch descended, one level per trip"
        );
    }

    #[test]
    fn a_bad_answer_is_an_error_not_a_panic() {
        let tree = HashTree::default();
        let mut descent = Descent::new(EMPTY, [1; 32]);
        let leaf = NodeRef {
            level: DEPTH,
            index: 3,
        };
        assert_eq!(
            descent.on_children(leaf, &[EMPTY; FANOUT], &tree),
            Err(DescentError::NotAsked)
        );
        assert_eq!(
            descent.on_children(NodeRef::ROOT, &[EMPTY; 3], &tree),
            Err(DescentError::WrongFanout(3))
        );
        let huge = NodeRef {
            level: 1,
            index: usize::MAX,
        };
        assert!(!huge.is_valid());
        assert_eq!(tree.children(huge), None);
        assert_eq!(tree.hash(huge), None);
    }
}
