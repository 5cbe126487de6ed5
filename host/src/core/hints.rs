//! Hinted handoff's bookkeeping on a stand-in: how many hints it keeps for
//! each owner, the batch on its way to each, and why delivery to an owner
//! is not progressing. Free of I/O: the node reads and removes the hints
//! (a local store per owner, [`TableName::hints_for`]) and sends the
//! batches; this decides what is due and remembers what was sent.
//!
//! A hint is removed only after its owner answered that it stored the
//! batch durably, and only if the hint did not change meanwhile (a newer
//! write for the same key stays, to go with a later batch). A crash of
//! either side loses nothing: the hints stay in the store until then, and
//! delivery resumes with what is left, never from scratch.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::object::Object;
use super::throttle::TokenBucket;
use super::types::{NodeId, TableName};

/// A hint's key in its owner's hint store: the table's name, a zero byte,
/// the key (table names hold no zero byte, so it splits back unambiguously).
pub fn hint_key(table: &TableName, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(table.as_str().len() + 1 + key.len());
    out.extend_from_slice(table.as_str().as_bytes());
    out.push(0);
    out.extend_from_slice(key);
    out
}

/// The table and key of a hint key (`None` for bytes no hint key has).
pub fn parse_hint_key(raw: &[u8]) -> Option<(TableName, Bytes)> {
    let split = raw.iter().position(|&b| b == 0)?;
    let table = std::str::from_utf8(&raw[..split]).ok()?;
    let table = TableName::new(table).ok()?;
    Some((table, Bytes::copy_from_slice(&raw[split + 1..])))
}

/// A batch on its way to an owner.
#[derive(Debug, Clone)]
pub struct InFlight {
    /// Its request id (the owner's answer names it).
    pub request: u64,
    /// Each hint sent: its key in the hint store and the object sent.
    pub sent: Vec<(Bytes, Object)>,
    /// When to stop waiting for the answer (monotonic ms).
    pub deadline_ms: u64,
}

/// Why delivery to an owner is not progressing (or that it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Nothing to deliver.
    Idle,
    /// The owner is not reachable from here.
    OwnerDown,
    /// The throttle's tokens ran out; the next batch waits for them.
    Throttled,
    /// A batch is on its way.
    Delivering,
    /// The last batch failed, with this error; delivery retries.
    Failing(String),
}

impl Progress {
    /// The word `/cluster` shows.
    pub fn as_str(&self) -> &str {
        match self {
            Progress::Idle => "idle",
            Progress::OwnerDown => "owner down",
            Progress::Throttled => "throttled",
            Progress::Delivering => "delivering",
            Progress::Failing(_) => "failing",
        }
    }
}

/// What this node keeps for one owner.
#[derive(Debug, Clone, Default)]
pub struct OwnerHints {
    /// Hints in the store.
    pub pending: u64,
    /// The batch on its way.
    pub in_flight: Option<InFlight>,
    /// Where the next batch starts in the hint store (after the last hint
    /// sent), so hints the owner refused do not hold the rest back.
    pub cursor: Option<Bytes>,
    /// The last failure, cleared by a batch that succeeds.
    pub last_error: Option<String>,
    /// Whether the last attempt found the throttle empty.
    pub throttled: bool,
    /// Hints delivered and removed since start.
    pub delivered: u64,
}

/// Every owner's hints, and the delivery throttle.
#[derive(Debug, Clone)]
pub struct HintBook {
    owners: BTreeMap<NodeId, OwnerHints>,
    /// Hints delivered a second, at most (all owners together).
    pub throttle: TokenBucket,
    /// Hints refused because the store held [`crate::core::limits::HINTS_MAX`].
    pub refused_full: u64,
}

impl HintBook {
    /// An empty book delivering at most `keys_per_s` hints a second.
    pub fn new(keys_per_s: u64) -> HintBook {
        HintBook {
            owners: BTreeMap::new(),
            throttle: TokenBucket::new(keys_per_s),
            refused_full: 0,
        }
    }

    /// `owner`'s entry, created empty.
    pub fn owner_mut(&mut self, owner: &NodeId) -> &mut OwnerHints {
        self.owners.entry(owner.clone()).or_default()
    }

    /// `owner`'s entry, if any.
    pub fn owner(&self, owner: &NodeId) -> Option<&OwnerHints> {
        self.owners.get(owner)
    }

    /// Every owner with hints or a batch under way.
    pub fn owners(&self) -> impl Iterator<Item = (&NodeId, &OwnerHints)> {
        self.owners
            .iter()
            .filter(|(_, h)| h.pending > 0 || h.in_flight.is_some())
    }

    /// Hints held for every owner together.
    pub fn total_pending(&self) -> u64 {
        self.owners.values().map(|h| h.pending).sum()
    }

    /// A new hint key was stored for `owner`.
    pub fn added(&mut self, owner: &NodeId) {
        self.owner_mut(owner).pending += 1;
    }

    /// The owner whose batch is `request`, taking the batch out.
    pub fn take_in_flight(&mut self, from: &NodeId, request: u64) -> Option<InFlight> {
        let hints = self.owners.get_mut(from)?;
        if hints.in_flight.as_ref()?.request != request {
            return None;
        }
        hints.in_flight.take()
    }

    /// Batches whose answer is overdue at `now_ms`: forgotten (their hints
    /// stay and go again), each owner marked failing.
    pub fn expire(&mut self, now_ms: u64) {
        for hints in self.owners.values_mut() {
            if hints
                .in_flight
                .as_ref()
                .is_some_and(|f| f.deadline_ms <= now_ms)
            {
                hints.in_flight = None;
                // Its hints go again with the next batch, not after a pass
                // over every other hint.
                hints.cursor = None;
                hints.last_error = Some("the owner did not answer the last batch in time".into());
            }
        }
    }

    /// Why delivery to `owner` is where it is, given whether it is up.
    pub fn progress(&self, owner: &NodeId, owner_up: bool) -> Progress {
        let Some(hints) = self.owners.get(owner) else {
            return Progress::Idle;
        };
        if hints.pending == 0 && hints.in_flight.is_none() {
            return Progress::Idle;
        }
        if !owner_up {
            return Progress::OwnerDown;
        }
        if hints.in_flight.is_some() {
            return Progress::Delivering;
        }
        if let Some(error) = &hints.last_error {
            return Progress::Failing(error.clone());
        }
        if hints.throttled {
            return Progress::Throttled;
        }
        Progress::Delivering
    }

    /// Forgets every owner's count and batch (a failed commit: the store
    /// is counted again; a batch's answer is then ignored and its hints go
    /// again).
    pub fn forget_owners(&mut self) {
        self.owners.clear();
    }

    /// Forgets owners for which nothing is held or under way.
    pub fn forget_idle(&mut self) {
        self.owners
            .retain(|_, h| h.pending > 0 || h.in_flight.is_some() || h.delivered > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeId {
        NodeId::new(id).unwrap()
    }

    #[test]
    fn hint_keys_split_back_into_table_and_key_whatever_the_key_holds() {
        let table = TableName::new("carts").unwrap();
        for key in [&b"k"[..], b"", b"with\0zero", &[0xff; 300]] {
            let raw = hint_key(&table, key);
            assert_eq!(
                parse_hint_key(&raw),
                Some((table.clone(), Bytes::copy_from_slice(key)))
            );
        }
        assert_eq!(parse_hint_key(b"no zero byte"), None);
        assert_eq!(parse_hint_key(b"Bad Name\0k"), None);
    }

    #[test]
    fn an_answer_counts_only_for_the_batch_under_way_to_that_owner() {
        let mut book = HintBook::new(100);
        let (b, c) = (node("b"), node("c"));
        book.added(&b);
        book.owner_mut(&b).in_flight = Some(InFlight {
            request: 7,
            sent: Vec::new(),
            deadline_ms: 1_000,
        });
        assert!(book.take_in_flight(&c, 7).is_none(), "another owner");
        assert!(book.take_in_flight(&b, 8).is_none(), "another batch");
        assert!(book.take_in_flight(&b, 7).is_some());
        assert!(book.take_in_flight(&b, 7).is_none(), "once");
    }

    #[test]
    fn progress_says_why_nothing_moves() {
        let mut book = HintBook::new(100);
        let b = node("b");
        assert_eq!(book.progress(&b, true), Progress::Idle);
        book.added(&b);
        assert_eq!(book.progress(&b, false), Progress::OwnerDown);
        book.owner_mut(&b).throttled = true;
        assert_eq!(book.progress(&b, true), Progress::Throttled);
        book.owner_mut(&b).in_flight = Some(InFlight {
            request: 1,
            sent: Vec::new(),
            deadline_ms: 50,
        });
        assert_eq!(book.progress(&b, true), Progress::Delivering);
        book.expire(50);
        assert!(matches!(book.progress(&b, true), Progress::Failing(_)));
        assert_eq!(book.total_pending(), 1);
    }
}
