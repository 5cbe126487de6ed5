//! Which partition anti-entropy compares next, with which peer, and how
//! much it may spend doing so.
//!
//! Partitions known to diverge go first: one whose last exchange found
//! differing leaves (an exchange moves a bounded number of objects, so a
//! large difference takes several), or all of them on a node that lost its
//! disk. The rest are compared round robin, one sweep with one peer and the
//! next with another. Each comparison that got an answer is remembered, so
//! `/cluster` can say when the least recently compared partition was last
//! looked at (the sweep bound of SPEC §4).
//!
//! Two token buckets cap the I/O: keys (read from the store, by the
//! start-up walk or to be sent) and bytes (of objects sent).

use std::collections::{HashMap, HashSet, VecDeque};

use crate::core::throttle::TokenBucket;

/// How long an exchange keeps its partition from being compared again
/// unless its roots agreed: long enough for the objects it moved to arrive
/// and be staged on both sides.
pub const EXCHANGE_SETTLE_MS: u64 = 1_000;
use crate::core::types::{NodeId, TableName};

/// Anti-entropy's settings on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AntiEntropyConfig {
    /// How often a turn runs: walks a page of the store into the trees and
    /// starts the exchanges its share of a sweep needs.
    pub every_ms: u64,
    /// Keys read from the store a second, at most (walks and objects sent).
    pub keys_per_s: u64,
    /// Bytes of objects sent a second, at most.
    pub bytes_per_s: u64,
    /// How long a tombstone stays at least after it was stored here, before
    /// it may be collected (see [`crate::core::reaper`]).
    pub tombstone_grace_ms: u64,
}

impl Default for AntiEntropyConfig {
    /// The settings `cairn serve` runs with unless told otherwise.
    fn default() -> Self {
        use crate::core::limits::{
            ANTIENTROPY_BYTES_PER_S_DEFAULT, ANTIENTROPY_EVERY_MS_DEFAULT,
            ANTIENTROPY_KEYS_PER_S_DEFAULT, TOMBSTONE_GRACE_MS_DEFAULT,
        };
        AntiEntropyConfig {
            every_ms: ANTIENTROPY_EVERY_MS_DEFAULT,
            keys_per_s: ANTIENTROPY_KEYS_PER_S_DEFAULT,
            bytes_per_s: ANTIENTROPY_BYTES_PER_S_DEFAULT,
            tombstone_grace_ms: TOMBSTONE_GRACE_MS_DEFAULT,
        }
    }
}

/// One table's partition: what an exchange compares.
pub type Slot = (TableName, usize);

/// The schedule and the throttle.
#[derive(Debug, Clone)]
pub struct Plan {
    config: AntiEntropyConfig,
    /// Round-robin position over every slot this node replicates.
    cursor: u64,
    /// Slots known to diverge, oldest first, with the peer they differ from
    /// when known.
    divergent: VecDeque<(Slot, Option<NodeId>)>,
    queued: HashSet<Slot>,
    /// When each slot was last compared with a peer (wall ms).
    compared_ms: HashMap<Slot, u64>,
    /// Exchanges under way, by slot, with when they started (monotonic
    /// ms): a slot is not compared again until its exchange agreed or
    /// [`EXCHANGE_SETTLE_MS`] passed, so objects already on their way are
    /// not asked for and sent a second time.
    in_flight: HashMap<Slot, u64>,
    /// Keys read for anti-entropy.
    pub keys: TokenBucket,
    /// Bytes of objects sent.
    pub bytes: TokenBucket,
}

impl Plan {
    /// A plan with full buckets and nothing compared yet.
    pub fn new(config: AntiEntropyConfig) -> Plan {
        Plan {
            config,
            cursor: 0,
            divergent: VecDeque::new(),
            queued: HashSet::new(),
            compared_ms: HashMap::new(),
            in_flight: HashMap::new(),
            keys: TokenBucket::new(config.keys_per_s),
            bytes: TokenBucket::new(config.bytes_per_s),
        }
    }

    /// The settings.
    pub fn config(&self) -> AntiEntropyConfig {
        self.config
    }

    /// Refills both buckets; whether neither is in debt (work may start).
    pub fn may_work(&mut self, now_ms: u64) -> bool {
        self.keys.refill(now_ms);
        self.bytes.refill(now_ms);
        self.keys.available() > 0 && self.bytes.available() > 0
    }

    /// The next known divergent slot still replicated here (`replicated`
    /// says), and the peer it is known to differ from.
    /// Slots whose exchange is still under way at `now_ms` wait their turn.
    pub fn next_divergent(
        &mut self,
        now_ms: u64,
        replicated: impl Fn(&Slot) -> bool,
    ) -> Option<(Slot, Option<NodeId>)> {
        for _ in 0..self.divergent.len() {
            let Some((slot, peer)) = self.divergent.pop_front() else {
                break;
            };
            if !replicated(&slot) {
                self.queued.remove(&slot);
                continue;
            }
            if self.is_under_way(&slot, now_ms) {
                self.divergent.push_back((slot, peer));
                continue;
            }
            self.queued.remove(&slot);
            return Some((slot, peer));
        }
        None
    }

    /// Whether an exchange of `slot` started less than
    /// [`EXCHANGE_SETTLE_MS`] before `now_ms` and has not agreed since.
    pub fn is_under_way(&self, slot: &Slot, now_ms: u64) -> bool {
        self.in_flight
            .get(slot)
            .is_some_and(|&at| now_ms < at + EXCHANGE_SETTLE_MS)
    }

    /// An exchange of `slot` starts at `now_ms`.
    pub fn begin(&mut self, slot: Slot, now_ms: u64) {
        self.in_flight.insert(slot, now_ms);
    }

    /// `slot`'s roots agree: it may be compared again at once.
    pub fn agreed(&mut self, slot: &Slot) {
        self.in_flight.remove(slot);
    }

    /// The round robin's next slot among `count` replicated ones (`slot_at`
    /// maps an index to one).
    pub fn next_in_sweep(
        &mut self,
        count: u64,
        slot_at: impl Fn(u64) -> Option<Slot>,
    ) -> Option<Slot> {
        if count == 0 {
            return None;
        }
        let slot = slot_at(self.cursor % count);
        self.cursor = self.cursor.wrapping_add(1);
        slot
    }

    /// Which sweep the round robin is in (picks the peer of a slot without
    /// a known one, so successive sweeps compare with different replicas).
    pub fn sweep(&self, count: u64) -> u64 {
        self.cursor.saturating_sub(1) / count.max(1)
    }

    /// `slot` differs from `peer`'s copy: compare it again soon.
    pub fn diverged(&mut self, slot: Slot, peer: Option<NodeId>) {
        if self.queued.insert(slot.clone()) {
            self.divergent.push_back((slot, peer));
        }
    }

    /// `slot` was compared with a peer at `wall_ms`.
    pub fn compared(&mut self, slot: Slot, wall_ms: u64) {
        self.compared_ms.insert(slot, wall_ms);
    }

    /// When `slot` was last compared.
    pub fn compared_at(&self, slot: &Slot) -> Option<u64> {
        self.compared_ms.get(slot).copied()
    }

    /// The most recent comparison of any slot.
    pub fn last_compared_ms(&self) -> Option<u64> {
        self.compared_ms.values().copied().max()
    }

    /// Slots waiting as known divergent.
    pub fn divergent_count(&self) -> usize {
        self.divergent.len()
    }

    /// Forgets slots of tables no longer served.
    pub fn retain_tables(&mut self, serves: impl Fn(&TableName) -> bool) {
        self.compared_ms.retain(|(table, _), _| serves(table));
        self.in_flight.retain(|(table, _), _| serves(table));
        self.divergent.retain(|((table, _), _)| serves(table));
        self.queued.retain(|(table, _)| serves(table));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan::new(AntiEntropyConfig {
            every_ms: 100,
            keys_per_s: 10,
            bytes_per_s: 1_000,
            tombstone_grace_ms: 1_000,
        })
    }

    fn slot(p: u64) -> Slot {
        (TableName::new("t").unwrap(), p as usize)
    }

    #[test]
    fn divergent_slots_are_queued_once_in_order_and_the_sweep_goes_round() {
        let mut plan = plan();
        let b = NodeId::new("b").unwrap();
        plan.diverged(slot(3), Some(b.clone()));
        plan.diverged(slot(1), None);
        plan.diverged(slot(3), None);
        assert_eq!(plan.divergent_count(), 2);
        plan.begin(slot(3), 0);
        assert_eq!(
            plan.next_divergent(10, |_| true),
            Some((slot(1), None)),
            "3 is under way"
        );
        assert_eq!(plan.next_divergent(10, |_| true), None);
        assert_eq!(
            plan.next_divergent(EXCHANGE_SETTLE_MS, |_| true),
            Some((slot(3), Some(b)))
        );
        plan.begin(slot(1), 0);
        plan.agreed(&slot(1));
        assert!(!plan.is_under_way(&slot(1), 1));
        let sweep: Vec<Slot> = (0..5)
            .filter_map(|_| plan.next_in_sweep(4, |i| Some(slot(i))))
            .collect();
        assert_eq!(sweep, [0, 1, 2, 3, 0].map(slot));
        assert_eq!(plan.sweep(4), 1);
    }

    #[test]
    fn a_queued_slot_no_longer_replicated_is_skipped() {
        let mut plan = plan();
        plan.diverged(slot(9), None);
        plan.diverged(slot(1), None);
        assert_eq!(plan.next_divergent(0, |s| s.1 < 2), Some((slot(1), None)));
        assert_eq!(plan.next_in_sweep(0, |i| Some(slot(i))), None);
    }

    #[test]
    fn work_waits_while_a_bucket_is_in_debt() {
        let mut plan = plan();
        assert!(plan.may_work(0));
        plan.keys.spend(15);
        assert!(!plan.may_work(400), "5 in debt, 4 refilled");
        assert!(plan.may_work(700));
    }
}
