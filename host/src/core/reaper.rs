//! Tombstone collection's bookkeeping: which keys this node holds only
//! tombstones for, and the one check under way. Pure logic; the node drives
//! it (node/reaper.rs).
//!
//! A tombstone may be collected only when it can no longer be needed to
//! keep a deleted value from coming back: every primary of its key holds
//! exactly this tombstone (the acknowledgement watermark, learned by asking
//! them), no node of the cluster keeps a hint for the key (a hint delivered
//! after collection would bring an older version back), and the grace period
//! has passed since this node stored it (for messages still on their way).
//! A timer alone never collects anything.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;

use super::merkle::Hash;
use super::object::Object;
use super::types::{NodeId, TableName};

/// A key whose copy here holds tombstones only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    /// The copy's item (key, clock and dots): what every replica must hold.
    item: Hash,
    /// The key's partition, so deciding who collects needs no hashing.
    partition: usize,
    /// When this node stored that copy (monotonic ms): the grace runs from here.
    since_ms: u64,
}

/// A check under way: the members asked whether the batch may be
/// collected, and the keys any of them refused.
#[derive(Debug, Clone)]
pub struct Check {
    /// Its id, echoed by the answers.
    pub request: u64,
    /// The table of every key in the batch.
    pub table: TableName,
    /// (key, item) of each tombstone checked.
    pub keys: Vec<(Bytes, Hash)>,
    /// Members whose answer is still awaited.
    waiting: BTreeSet<NodeId>,
    /// Indexes into `keys` some member refused.
    refused: BTreeSet<usize>,
    /// When the check is abandoned (monotonic ms).
    deadline_ms: u64,
}

/// Whether an object holds tombstones only: what collection may remove.
pub fn is_tombstone_only(object: &Object) -> bool {
    !object.versions.is_empty() && object.versions.iter().all(|v| !v.is_live())
}

/// The tombstones held here and the check under way.
#[derive(Debug, Default)]
pub struct Reaper {
    candidates: HashMap<(TableName, Bytes), Candidate>,
    check: Option<Check>,
    next_request: u64,
    /// Checks abandoned because a member did not answer in time.
    pub checks_timed_out: u64,
}

impl Reaper {
    /// `key` of `table` now holds `object` (`None`: nothing), stored at
    /// `now_ms`; `item` is its anti-entropy item. Called wherever the
    /// anti-entropy trees are told, so both see the same copies.
    pub fn observe(
        &mut self,
        (table, partition): (&TableName, usize),
        key: &[u8],
        object: Option<&Object>,
        item: Option<Hash>,
        now_ms: u64,
    ) {
        let slot = (table.clone(), Bytes::copy_from_slice(key));
        match (object.filter(|o| is_tombstone_only(o)), item) {
            (Some(_), Some(item)) => {
                let fresh = Candidate {
                    item,
                    partition,
                    since_ms: now_ms,
                };
                let entry = self.candidates.entry(slot).or_insert(fresh);
                if entry.item != item {
                    *entry = fresh;
                }
            }
            _ => {
                self.candidates.remove(&slot);
            }
        }
    }

    /// Since when (monotonic ms) this node holds `item` as `key`'s copy,
    /// as far as it observed: a member vouches for a tombstone only after
    /// holding it for the grace itself.
    pub fn held_since(&self, table: &TableName, key: &[u8], item: &Hash) -> Option<u64> {
        self.candidates
            .get(&(table.clone(), Bytes::copy_from_slice(key)))
            .filter(|c| c.item == *item)
            .map(|c| c.since_ms)
    }

    /// Tombstones held here, awaiting collection.
    pub fn pending(&self) -> u64 {
        self.candidates.len() as u64
    }

    /// Forgets the tombstones of tables no longer served.
    pub fn retain_tables(&mut self, serves: impl Fn(&TableName) -> bool) {
        self.candidates.retain(|(table, _), _| serves(table));
        if self.check.as_ref().is_some_and(|c| !serves(&c.table)) {
            self.check = None;
        }
    }

    /// Whether a check is under way.
    pub fn is_checking(&self) -> bool {
        self.check.is_some()
    }

    /// Up to `max` tombstones of one table whose grace has passed at
    /// `now_ms` and whose partition `collects` says this node decides for
    /// (it is the first primary), in key order so a batch is deterministic.
    pub fn ripe(
        &self,
        now_ms: u64,
        grace_ms: u64,
        max: usize,
        collects: impl Fn(&TableName, usize) -> bool,
    ) -> Option<(TableName, Vec<(Bytes, Hash)>)> {
        let mut ripe: Vec<(&TableName, &Bytes, Hash)> = self
            .candidates
            .iter()
            .filter(|(_, c)| c.since_ms.saturating_add(grace_ms) <= now_ms)
            .filter(|((table, _), c)| collects(table, c.partition))
            .map(|((table, key), c)| (table, key, c.item))
            .collect();
        ripe.sort();
        let table = ripe.first()?.0.clone();
        let keys = ripe
            .into_iter()
            .filter(|(t, _, _)| **t == table)
            .take(max.max(1))
            .map(|(_, key, item)| (key.clone(), item))
            .collect();
        Some((table, keys))
    }

    /// Starts a check of `keys`, asking `members`; returns its request id.
    pub fn begin(
        &mut self,
        table: TableName,
        keys: Vec<(Bytes, Hash)>,
        members: BTreeSet<NodeId>,
        deadline_ms: u64,
    ) -> u64 {
        self.next_request += 1;
        self.check = Some(Check {
            request: self.next_request,
            table,
            keys,
            waiting: members,
            refused: BTreeSet::new(),
            deadline_ms,
        });
        self.next_request
    }

    /// `from` answered check `request`, refusing the keys at `refused`.
    /// Once every member answered, returns the keys all of them accepted:
    /// the ones to collect.
    pub fn answered(
        &mut self,
        from: &NodeId,
        request: u64,
        refused: &[u32],
        now_ms: u64,
    ) -> Option<(TableName, Vec<(Bytes, Hash)>)> {
        let check = self.check.as_mut().filter(|c| c.request == request)?;
        if !check.waiting.remove(from) {
            return None;
        }
        let asked = check.keys.len();
        check.refused.extend(
            refused
                .iter()
                .filter_map(|&i| usize::try_from(i).ok())
                .filter(|&i| i < asked),
        );
        if !check.waiting.is_empty() {
            return None;
        }
        let check = self.check.take()?;
        let mut accepted = Vec::new();
        for (index, (key, item)) in check.keys.into_iter().enumerate() {
            if check.refused.contains(&index) {
                // Asked again once its grace passes anew.
                self.restart_grace(&check.table, &key, now_ms);
            } else {
                accepted.push((key, item));
            }
        }
        Some((check.table, accepted))
    }

    /// Forgets every tombstone and the check under way (this node lost a
    /// batch: what it vouched for may be gone); the start-up walk finds the
    /// tombstones again, each with a fresh grace period.
    pub fn forget(&mut self) {
        self.candidates.clear();
        self.check = None;
    }

    /// Abandons a check whose answers are overdue at `now_ms`: its keys
    /// wait another grace period.
    pub fn expire(&mut self, now_ms: u64) {
        if self.check.as_ref().is_none_or(|c| c.deadline_ms > now_ms) {
            return;
        }
        if let Some(check) = self.check.take() {
            self.checks_timed_out += 1;
            for (key, _) in &check.keys {
                self.restart_grace(&check.table, key, now_ms);
            }
        }
    }

    fn restart_grace(&mut self, table: &TableName, key: &Bytes, now_ms: u64) {
        if let Some(candidate) = self.candidates.get_mut(&(table.clone(), key.clone())) {
            candidate.since_ms = now_ms;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::causal::tests::dot;
    use crate::core::object::Version;

    fn table() -> TableName {
        TableName::new("t").expect("a valid name")
    }

    fn object(live: bool) -> Object {
        let dot = dot("a", 1, 1);
        let mut clock = crate::core::causal::CausalContext::new();
        clock.add(dot.clone());
        Object {
            clock,
            versions: vec![Version {
                dot,
                timestamp_ms: 1,
                value: live.then(|| Bytes::from_static(b"v")),
                content_type: String::new(),
            }],
        }
    }

    fn members(ids: &[&str]) -> BTreeSet<NodeId> {
        ids.iter()
            .map(|id| NodeId::new(id).expect("a valid id"))
            .collect()
    }

    #[test]
    fn only_tombstone_only_copies_wait_for_collection_and_only_after_the_grace() {
        let mut reaper = Reaper::default();
        reaper.observe(
            (&table(), 0),
            b"live",
            Some(&object(true)),
            Some([1; 32]),
            0,
        );
        reaper.observe(
            (&table(), 0),
            b"gone",
            Some(&object(false)),
            Some([2; 32]),
            0,
        );
        assert_eq!(reaper.pending(), 1);
        assert_eq!(reaper.ripe(999, 1_000, 10, |_, _| true), None);
        let (_, keys) = reaper.ripe(1_000, 1_000, 10, |_, _| true).expect("ripe");
        assert_eq!(keys, vec![(Bytes::from_static(b"gone"), [2; 32])]);
        assert_eq!(reaper.ripe(1_000, 1_000, 10, |_, _| false), None);
        // A new write over the tombstone takes it out of the running.
        reaper.observe(
            (&table(), 0),
            b"gone",
            Some(&object(true)),
            Some([3; 32]),
            5,
        );
        assert_eq!(reaper.pending(), 0);
    }

    #[test]
    fn a_changed_tombstone_waits_a_whole_grace_again() {
        let mut reaper = Reaper::default();
        reaper.observe((&table(), 0), b"k", Some(&object(false)), Some([2; 32]), 0);
        reaper.observe(
            (&table(), 0),
            b"k",
            Some(&object(false)),
            Some([2; 32]),
            900,
        );
        assert!(reaper.ripe(1_000, 1_000, 10, |_, _| true).is_some());
        reaper.observe(
            (&table(), 0),
            b"k",
            Some(&object(false)),
            Some([4; 32]),
            900,
        );
        assert_eq!(reaper.ripe(1_000, 1_000, 10, |_, _| true), None);
    }

    #[test]
    fn a_key_is_collected_only_when_every_member_accepted_it() {
        let mut reaper = Reaper::default();
        for key in [&b"a"[..], b"b"] {
            reaper.observe((&table(), 0), key, Some(&object(false)), Some([2; 32]), 0);
        }
        let (table, keys) = reaper.ripe(10, 0, 10, |_, _| true).expect("ripe");
        let request = reaper.begin(table, keys, members(&["x", "y"]), 100);
        let x = NodeId::new("x").expect("id");
        let y = NodeId::new("y").expect("id");
        assert_eq!(reaper.answered(&x, request, &[1], 20), None);
        // A repeated answer or one to another check changes nothing.
        assert_eq!(reaper.answered(&x, request, &[], 20), None);
        assert_eq!(reaper.answered(&y, request + 1, &[], 20), None);
        let (_, accepted) = reaper.answered(&y, request, &[], 20).expect("all answered");
        assert_eq!(accepted, vec![(Bytes::from_static(b"a"), [2; 32])]);
        assert!(!reaper.is_checking());
        // The refused key waits another grace from the answer.
        assert_eq!(
            reaper.ripe(20, 0, 10, |_, _| true).map(|r| r.1.len()),
            Some(2)
        );
        assert_eq!(
            reaper.ripe(20, 5, 10, |_, _| true).map(|r| r.1.len()),
            Some(1)
        );
    }

    #[test]
    fn a_check_some_member_never_answers_is_abandoned_at_its_deadline() {
        let mut reaper = Reaper::default();
        reaper.observe((&table(), 0), b"a", Some(&object(false)), Some([2; 32]), 0);
        let (table, keys) = reaper.ripe(10, 0, 10, |_, _| true).expect("ripe");
        reaper.begin(table, keys, members(&["x"]), 100);
        reaper.expire(99);
        assert!(reaper.is_checking());
        reaper.expire(100);
        assert!(!reaper.is_checking());
        assert_eq!(reaper.checks_timed_out, 1);
        assert_eq!(reaper.ripe(150, 100, 10, |_, _| true), None);
    }
}
