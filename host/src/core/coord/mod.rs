//! Coordination: one small state machine per client get or put this node
//! coordinates ([`get`], [`put`]), and the table of requests in flight with
//! their deadlines ([`InFlight`]). The state machines hold the answers and
//! decide; the node carries out what they decide.

use std::collections::HashMap;

use bytes::Bytes;

use super::object::{Object, Version};
use super::timers::Deadlines;
use super::token::ClientContext;
use super::types::NodeId;

pub mod get;
pub mod put;
pub mod seen;
pub mod targets;

pub use get::{GetFsm, GetStep};
pub use put::PutFsm;
pub use seen::SeenForwards;

/// Who is waiting for the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A client of this node's HTTP API.
    Local(u64),
    /// Nobody: a plugin merge's write-back.
    Background,
    /// A node that forwarded the request, with its request id.
    Remote {
        /// The forwarder.
        node: NodeId,
        /// Its request id.
        request: u64,
    },
}

/// A write that begins with a quorum read.
#[derive(Debug, Clone)]
pub enum AfterRead {
    /// A delete without a context: after the read, a tombstone covering it.
    Delete {
        /// `?w=`.
        w: u8,
    },
    /// A write whose context names versions this coordinator does not hold:
    /// what the read found is merged into its copy first, so the write
    /// supersedes there too what the client saw superseded (a stale copy
    /// must not keep a deleted value next to the new one).
    Write {
        /// `?w=`.
        w: u8,
        /// The value, or `None` for a delete with a context.
        value: Option<Bytes>,
        /// Its media type.
        content_type: String,
        /// The client's context.
        context: ClientContext,
    },
}

/// Something in flight that ends by its deadline at the latest.
pub trait Expires {
    /// Monotonic ms after which it is answered with what it has (or 503).
    fn deadline_ms(&self) -> u64;
}

/// The requests this node has in flight, by id, with their deadlines
/// indexed so a tick touches only those that are due.
pub struct InFlight<P> {
    entries: HashMap<u64, P>,
    deadlines: Deadlines,
    next_id: u64,
}

impl<P: Expires> InFlight<P> {
    /// An empty table whose ids start at `first_id`. Ids must not repeat
    /// across restarts (a late answer to the previous process's request would
    /// count toward a new one), so the node starts them from its wall clock.
    pub fn new(first_id: u64) -> Self {
        InFlight {
            entries: HashMap::new(),
            deadlines: Deadlines::default(),
            next_id: first_id,
        }
    }

    /// A fresh request id.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The id [`InFlight::next_id`] hands out next (a cheap varying number).
    pub fn peek_next_id(&self) -> u64 {
        self.next_id
    }

    /// Adds (or replaces) request `id`, watched until its deadline.
    pub fn insert(&mut self, id: u64, entry: P) {
        self.deadlines.insert(entry.deadline_ms(), id);
        if let Some(replaced) = self.entries.insert(id, entry) {
            if replaced.deadline_ms() != self.entries[&id].deadline_ms() {
                self.deadlines.remove(replaced.deadline_ms(), id);
            }
        }
    }

    /// Request `id`.
    pub fn get(&self, id: &u64) -> Option<&P> {
        self.entries.get(id)
    }

    /// Request `id`, to record an answer.
    pub fn get_mut(&mut self, id: &u64) -> Option<&mut P> {
        self.entries.get_mut(id)
    }

    /// Ends request `id`, and stops watching its deadline: the index holds
    /// only requests in flight, so it is bounded by the same cap.
    pub fn remove(&mut self, id: &u64) -> Option<P> {
        let entry = self.entries.remove(id)?;
        self.deadlines.remove(entry.deadline_ms(), *id);
        Some(entry)
    }

    /// Whether request `id` is in flight.
    pub fn contains_key(&self, id: &u64) -> bool {
        self.entries.contains_key(id)
    }

    /// How many requests are in flight.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every request in flight, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &P)> {
        self.entries.iter()
    }

    /// The requests in flight whose deadline is at or before `now_ms`,
    /// earliest deadline first (ties by id): replays expire them in the same order.
    pub fn take_due(&mut self, now_ms: u64) -> Vec<u64> {
        let mut due = self.deadlines.take_due(now_ms);
        due.retain(|id| {
            self.entries
                .get(id)
                .is_some_and(|entry| entry.deadline_ms() <= now_ms)
        });
        due.dedup();
        due
    }

    /// Requests among `ids` still in flight are watched again, so a request
    /// that outlives its deadline comes due at every tick until it ends.
    pub fn keep_watching(&mut self, ids: &[u64]) {
        for id in ids {
            if let Some(entry) = self.entries.get(id) {
                self.deadlines.insert(entry.deadline_ms(), *id);
            }
        }
    }

    /// Entries in the deadline index: one per request in flight.
    pub fn watched(&self) -> usize {
        self.deadlines.len()
    }
}

/// The live versions of a read, sorted by (timestamp_ms, dot) as clients and
/// plugins see them.
pub fn live_sorted(object: &Object) -> Vec<Version> {
    let mut live: Vec<Version> = object.live().cloned().collect();
    live.sort_by(|a, b| (a.timestamp_ms, &a.dot).cmp(&(b.timestamp_ms, &b.dot)));
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Entry(u64);

    impl Expires for Entry {
        fn deadline_ms(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn only_requests_still_in_flight_come_due_and_overdue_ones_again_until_they_end() {
        let mut in_flight = InFlight::new(100);
        let (a, b, c) = (
            in_flight.next_id(),
            in_flight.next_id(),
            in_flight.next_id(),
        );
        assert_eq!((a, b, c), (100, 101, 102));
        in_flight.insert(a, Entry(50));
        in_flight.insert(b, Entry(10));
        in_flight.insert(c, Entry(10));
        in_flight.remove(&c);
        assert_eq!(in_flight.watched(), 2, "an ended request is not watched");
        assert!(in_flight.take_due(9).is_empty());
        assert_eq!(in_flight.take_due(60), vec![b, a]);
        assert!(in_flight.take_due(60).is_empty(), "each comes due once");
        in_flight.remove(&a);
        in_flight.keep_watching(&[a, b]);
        assert_eq!(in_flight.take_due(61), vec![b], "b outlived its deadline");
        assert_eq!(in_flight.watched(), 0);
    }
}
