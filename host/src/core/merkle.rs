//! Anti-entropy's hash tree over one (table, partition) of a replica.
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
//! Two replicas compare roots, then leaves (256 hashes, 8 KiB), and exchange
//! the objects of the leaves that differ (`core/antientropy.rs`,
//! `node/antientropy.rs`). At a few keys per leaf that is cheaper than more
//! round trips through the inner level.

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

    /// Every leaf's hash, in leaf order.
    pub fn leaves(&self) -> &[Hash] {
        &self.levels[DEPTH]
    }
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
        fn the_leaves_that_differ_are_exactly_those_of_keys_whose_items_differ(
            (a, b) in replicas(),
        ) {
            let expected: std::collections::BTreeSet<usize> = a
                .keys()
                .chain(b.keys())
                .filter(|key| a.get(*key) != b.get(*key))
                .map(|key| leaf_of(key))
                .collect();
            let (mine, theirs) = (tree_of(&a), tree_of(&b));
            let differing: std::collections::BTreeSet<usize> = mine
                .leaves()
                .iter()
                .zip(theirs.leaves())
                .enumerate()
                .filter(|(_, (x, y))| x != y)
                .map(|(leaf, _)| leaf)
                .collect();
            prop_assert_eq!(differing, expected);
            prop_assert_eq!(mine.root() == theirs.root(), a == b);
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
}
