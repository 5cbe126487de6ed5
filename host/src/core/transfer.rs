//! Partition transfer's bookkeeping on a receiver: the node a ring move
//! makes a new replica of some partitions pulls their data from a current
//! replica, page by page, throttled, remembering after each page where the
//! walk stands (a checkpoint committed in the same batch as the page's
//! objects), so a crash of either side resumes the walk, never restarts it.
//!
//! Free of I/O: the node sends the fetches, stores the pages and persists
//! [`Checkpoints`]; this decides what to fetch next, from whom, and what a
//! page completes. Partitions whose walks stand at the same position and
//! come from the same source are walked together, so one pass over the
//! source's keys serves them all.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::msg::WalkPosition;
use super::throttle::TokenBucket;
use super::types::NodeId;

/// What a page costs against the throttle at least, at high rates: pages
/// that carry little (few keys of the walked partitions among those
/// examined) still cost the source a walk, so they are paced too — at
/// most 20 a second, or one per 256 KiB of the rate.
pub const PAGE_CHARGE_MIN_BYTES: u64 = 256 * 1024;

/// The name the receiver's checkpoints are stored under (a local record).
pub const CHECKPOINTS_RECORD: &str = "transfer-checkpoints";

/// What a receiver has copied of the move under way, durable with the
/// objects it accounts for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoints {
    /// Per partition still being copied: where its walk stands, and how
    /// many keys that walk has brought so far.
    pub walks: BTreeMap<u32, Checkpoint>,
    /// Keys copied for the move so far, over every partition.
    pub keys: u64,
    /// Bytes of objects copied for the move so far.
    pub bytes: u64,
    /// The move they are for ([`crate::core::ring::Ring::plan_id`]): the
    /// walks of another move start again (its tables may differ).
    pub plan: u64,
}

/// One partition's walk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Everything up to here is copied.
    pub after: WalkPosition,
    /// Keys the walk brought so far.
    pub walk_keys: u64,
}

/// A fetch on its way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// Its request id.
    pub request: u64,
    /// The node asked.
    pub source: NodeId,
    /// The partitions walked together.
    pub partitions: Vec<u32>,
    /// Where their walk stands.
    pub after: WalkPosition,
    /// Bytes of objects the page may carry: what the throttle allows now.
    pub max_bytes: u32,
    /// When to stop waiting for the page (monotonic ms).
    pub deadline_ms: u64,
}

/// What a page did to the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageOutcome {
    /// Not the page of the fetch under way (late, or a duplicate): ignored.
    Stale,
    /// The walk moved on; these partitions are not complete yet.
    Advanced,
    /// The walk is complete for these partitions: they may be marked moved
    /// once this page's objects are durable.
    Completed(Vec<u32>),
}

/// The receiver's side of the transfers of one move.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Persisted progress.
    pub checkpoints: Checkpoints,
    /// Keys already copied when this process started (a resumed transfer
    /// shows it did not start again from zero).
    pub resumed_keys: u64,
    /// The fetch under way.
    pub in_flight: Option<Fetch>,
    /// Bytes a second the pages may bring.
    bucket: TokenBucket,
    /// When this process's copying began, and what it copied since (the rate).
    since_ms: Option<u64>,
    copied_bytes_here: u64,
    copied_keys_here: u64,
    /// The source's estimate of the keys of the walk under way.
    pub walk_estimate: u64,
    /// Keys the walk under way has brought (as of its last page).
    walk_done: u64,
    /// The source of the last fetch.
    pub last_source: Option<NodeId>,
}

impl Incoming {
    /// A receiver resuming from `checkpoints`, pulling at most `bytes_per_s`.
    pub fn new(checkpoints: Checkpoints, bytes_per_s: u64) -> Incoming {
        Incoming {
            resumed_keys: checkpoints.keys,
            checkpoints,
            in_flight: None,
            bucket: TokenBucket::new(bytes_per_s),
            since_ms: None,
            copied_bytes_here: 0,
            copied_keys_here: 0,
            walk_estimate: 0,
            walk_done: 0,
            last_source: None,
        }
    }

    /// Keeps the walks of the partitions still to copy (`incoming`) and
    /// forgets the others (completed, or no longer this node's to copy);
    /// with nothing left to copy the counts start again for the next move.
    /// `true` when anything was forgotten (the record should be staged).
    pub fn retain(&mut self, incoming: &[u32]) -> bool {
        let before = self.checkpoints.clone();
        self.checkpoints
            .walks
            .retain(|p, _| incoming.binary_search(p).is_ok());
        if incoming.is_empty() {
            self.checkpoints = Checkpoints::default();
            self.resumed_keys = 0;
            self.since_ms = None;
            self.copied_bytes_here = 0;
            self.copied_keys_here = 0;
        }
        if let Some(fetch) = &self.in_flight {
            if fetch
                .partitions
                .iter()
                .any(|p| incoming.binary_search(p).is_err())
            {
                self.in_flight = None;
            }
        }
        self.checkpoints != before
    }

    /// Starts the walks again for the move `plan` when the checkpoints are
    /// for another one; `true` when it did (the record should be staged).
    pub fn for_plan(&mut self, plan: u64) -> bool {
        if self.checkpoints.plan == plan {
            return false;
        }
        self.checkpoints.walks.clear();
        self.checkpoints.plan = plan;
        self.in_flight = None;
        true
    }

    /// The next fetch, if none is under way and the throttle allows: the
    /// first partition in `incoming` with a source, together with every
    /// other partition of the same source whose walk stands at the same
    /// position. `source_of` names the up replica to copy a partition from.
    pub fn next_fetch(
        &mut self,
        incoming: &[u32],
        source_of: impl Fn(u32) -> Option<NodeId>,
        request: u64,
        now_ms: u64,
        (answer_ms, page_bytes): (u64, usize),
    ) -> Option<Fetch> {
        if self.in_flight.is_some() {
            return None;
        }
        self.bucket.refill(now_ms);
        let allowed = self.bucket.available();
        if allowed == 0 {
            return None;
        }
        let position = |p: &u32| {
            self.checkpoints
                .walks
                .get(p)
                .map(|c| c.after.clone())
                .unwrap_or_default()
        };
        let (first, source) = incoming
            .iter()
            .find_map(|&p| source_of(p).map(|s| (p, s)))?;
        let after = position(&first);
        let partitions: Vec<u32> = incoming
            .iter()
            .copied()
            .filter(|p| position(p) == after && source_of(*p).as_ref() == Some(&source))
            .collect();
        self.since_ms.get_or_insert(now_ms);
        self.last_source = Some(source.clone());
        let fetch = Fetch {
            request,
            source,
            partitions,
            after,
            max_bytes: u32::try_from(allowed.min(page_bytes as u64)).unwrap_or(u32::MAX),
            deadline_ms: now_ms + answer_ms,
        };
        self.in_flight = Some(fetch.clone());
        Some(fetch)
    }

    /// A page for `request` arrived with `keys` objects of `bytes` bytes,
    /// the walk now standing at `next`.
    pub fn on_page(
        &mut self,
        request: u64,
        keys: u64,
        bytes: u64,
        next: WalkPosition,
        estimate: u64,
    ) -> PageOutcome {
        let Some(fetch) = self.in_flight.take_if(|f| f.request == request) else {
            return PageOutcome::Stale;
        };
        // A page costs at least a floor, however little it carried: the
        // source examined keys for it on its node loop.
        let floor = PAGE_CHARGE_MIN_BYTES.min(self.bucket.per_s() / 20);
        self.bucket.spend(bytes.max(floor));
        self.checkpoints.keys += keys;
        self.checkpoints.bytes += bytes;
        self.copied_keys_here += keys;
        self.copied_bytes_here += bytes;
        self.walk_estimate = estimate;
        let walk_keys = fetch
            .partitions
            .first()
            .and_then(|p| self.checkpoints.walks.get(p))
            .map_or(0, |c| c.walk_keys)
            + keys;
        self.walk_done = walk_keys;
        match next {
            None => {
                for p in &fetch.partitions {
                    self.checkpoints.walks.remove(p);
                }
                PageOutcome::Completed(fetch.partitions)
            }
            Some(position) => {
                for &p in &fetch.partitions {
                    self.checkpoints.walks.insert(
                        p,
                        Checkpoint {
                            after: Some(position.clone()),
                            walk_keys,
                        },
                    );
                }
                PageOutcome::Advanced
            }
        }
    }

    /// The fetch `request` failed (refused, or its source is down): it is
    /// asked again, maybe elsewhere. `true` if it was the fetch under way.
    pub fn failed(&mut self, request: u64) -> bool {
        self.in_flight.take_if(|f| f.request == request).is_some()
    }

    /// The fetch under way if its answer is overdue at `now_ms` (it is
    /// given up and asked again).
    pub fn overdue(&mut self, now_ms: u64) -> Option<Fetch> {
        self.in_flight.take_if(|f| now_ms >= f.deadline_ms)
    }

    /// Bytes a second copied by this process since it began copying.
    pub fn rate_bytes_per_s(&self, now_ms: u64) -> u64 {
        let elapsed = self.since_ms.map_or(0, |s| now_ms.saturating_sub(s));
        if elapsed == 0 {
            return 0;
        }
        self.copied_bytes_here.saturating_mul(1000) / elapsed
    }

    /// Keys a second copied by this process since it began copying.
    pub fn rate_keys_per_s(&self, now_ms: u64) -> u64 {
        let elapsed = self.since_ms.map_or(0, |s| now_ms.saturating_sub(s));
        if elapsed == 0 {
            return 0;
        }
        self.copied_keys_here.saturating_mul(1000) / elapsed
    }

    /// Seconds until the walk under way completes at the current key rate,
    /// from the source's estimate of its keys (`None` before any estimate).
    pub fn eta_s(&self, now_ms: u64) -> Option<u64> {
        let rate = self.rate_keys_per_s(now_ms);
        if rate == 0 || self.walk_estimate == 0 {
            return None;
        }
        Some(self.walk_estimate.saturating_sub(self.walk_done) / rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::TableName;
    use bytes::Bytes;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn at(key: &str) -> WalkPosition {
        Some((TableName::new("t").unwrap(), Bytes::from(key.to_owned())))
    }

    #[test]
    fn partitions_at_one_position_from_one_source_are_walked_together() {
        let mut incoming = Incoming::new(Checkpoints::default(), 1 << 20);
        let source = |p: u32| Some(if p < 4 { id("a") } else { id("b") });
        let fetch = incoming
            .next_fetch(&[1, 2, 5, 6], source, 7, 0, (1_000, 1 << 20))
            .unwrap();
        assert_eq!(fetch.source, id("a"));
        assert_eq!(fetch.partitions, vec![1, 2]);
        assert_eq!(fetch.after, None);
        assert!(
            incoming
                .next_fetch(&[1, 2, 5, 6], source, 8, 0, (1_000, 1 << 20))
                .is_none(),
            "one fetch at a time"
        );
        assert_eq!(
            incoming.on_page(7, 10, 100, at("k9"), 40),
            PageOutcome::Advanced
        );
        assert_eq!(incoming.checkpoints.walks[&2].after, at("k9"));
        assert_eq!(incoming.checkpoints.walks[&2].walk_keys, 10);
        // Partitions 5 and 6 have not started: a different position.
        let next = incoming
            .next_fetch(&[1, 2, 5, 6], source, 9, 10, (1_000, 1 << 20))
            .unwrap();
        assert_eq!(
            (next.partitions.clone(), next.after.clone()),
            (vec![1, 2], at("k9"))
        );
        assert_eq!(
            incoming.on_page(9, 5, 50, None, 40),
            PageOutcome::Completed(vec![1, 2])
        );
        assert!(!incoming.checkpoints.walks.contains_key(&1));
        assert_eq!(
            (incoming.checkpoints.keys, incoming.checkpoints.bytes),
            (15, 150)
        );
    }

    #[test]
    fn a_restart_resumes_from_the_checkpoint_not_from_zero() {
        let mut first = Incoming::new(Checkpoints::default(), 1 << 20);
        let source = |_| Some(id("a"));
        let fetch = first
            .next_fetch(&[3], source, 1, 0, (1_000, 1 << 20))
            .unwrap();
        first.on_page(fetch.request, 100, 1_000, at("m"), 300);
        // What was persisted with the page is what the next process starts from.
        let mut second = Incoming::new(first.checkpoints.clone(), 1 << 20);
        assert_eq!(second.resumed_keys, 100);
        let resumed = second
            .next_fetch(&[3], source, 2, 0, (1_000, 1 << 20))
            .unwrap();
        assert_eq!(resumed.after, at("m"));
    }

    #[test]
    fn a_lost_or_refused_fetch_is_asked_again_from_another_source() {
        let mut incoming = Incoming::new(Checkpoints::default(), 1 << 20);
        let fetch = incoming
            .next_fetch(&[0], |_| Some(id("a")), 1, 0, (1_000, 1 << 20))
            .unwrap();
        assert!(incoming.overdue(999).is_none());
        assert_eq!(incoming.overdue(1_000).map(|f| f.request), Some(1));
        assert_eq!(
            incoming.on_page(fetch.request, 1, 1, None, 0),
            PageOutcome::Stale,
            "a late page of a given-up fetch changes nothing"
        );
        let again = incoming
            .next_fetch(&[0], |_| Some(id("b")), 2, 1_000, (1_000, 1 << 20))
            .unwrap();
        assert_eq!(again.source, id("b"));
        assert!(incoming.failed(2));
        assert!(!incoming.failed(2));
    }

    #[test]
    fn the_throttle_holds_fetches_until_the_bytes_are_paid_back() {
        let mut incoming = Incoming::new(Checkpoints::default(), 1_000);
        let source = |_| Some(id("a"));
        incoming
            .next_fetch(&[0], source, 1, 0, (10_000, 1 << 20))
            .unwrap();
        incoming.on_page(1, 1, 3_000, at("a"), 0);
        assert!(incoming
            .next_fetch(&[0], source, 2, 1_000, (10_000, 1 << 20))
            .is_none());
        assert!(incoming
            .next_fetch(&[0], source, 3, 2_001, (10_000, 1 << 20))
            .is_some());
    }

    #[test]
    fn walks_no_longer_needed_are_forgotten_and_a_finished_move_starts_counts_again() {
        let mut incoming = Incoming::new(Checkpoints::default(), 1 << 20);
        incoming.next_fetch(&[1, 2], |_| Some(id("a")), 1, 0, (1_000, 1 << 20));
        incoming.on_page(1, 4, 40, at("x"), 0);
        assert!(incoming.retain(&[2]));
        assert_eq!(incoming.checkpoints.walks.len(), 1);
        assert!(incoming.retain(&[]));
        assert_eq!(incoming.checkpoints, Checkpoints::default());
        assert!(!incoming.retain(&[]));
    }
}
