//! Membership as this node sees it: when it last heard from each node,
//! whether each member is up, and the join it is making.
//!
//! The member records themselves live in the gossiped [`ClusterMeta`]; what
//! is here is this node's own view, which no other node shares: failure
//! detection is local, and a node that is merely unreachable is never
//! removed from the ring.
//!
//! [`ClusterMeta`]: super::meta::ClusterMeta

use std::collections::HashMap;

use super::limits::JOIN_GIVE_UP_MS;
use super::limits::{MEMBER_DOWN_AFTER_MS, PING_FANOUT, PING_INTERVAL_MS, STRANGER_HEARD_KEPT_MS};
use super::types::NodeId;

/// How a node looks from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Heard from within [`MEMBER_DOWN_AFTER_MS`] (this node is always up to itself).
    Up,
    /// Silent for longer, or a call to it failed since it was last heard
    /// from (a refused connection, a request it never answered).
    Down,
    /// This node, while no seed has admitted it yet; or a member that owns
    /// no partition yet while its share's data moves to it.
    Joining,
    /// A member being removed, while its partitions move away.
    Leaving,
}

impl Status {
    /// The word `/cluster` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Down => "down",
            Status::Joining => "joining",
            Status::Leaving => "leaving",
        }
    }
}

/// When this node last heard from each node (monotonic ms).
#[derive(Debug, Clone)]
pub struct Liveness {
    /// A member never heard from counts from the node's start.
    started_ms: u64,
    /// Silence after which a member counts as down: at least
    /// [`MEMBER_DOWN_AFTER_MS`], longer when pings reach each member less
    /// often than every second (see [`Liveness::set_peer_count`]).
    down_after_ms: u64,
    last_heard: HashMap<NodeId, u64>,
    /// When a call to each node last failed.
    failed: HashMap<NodeId, u64>,
}

impl Liveness {
    /// A view in which nobody has been heard from since `started_ms`.
    pub fn new(started_ms: u64) -> Self {
        Liveness {
            started_ms,
            down_after_ms: MEMBER_DOWN_AFTER_MS,
            last_heard: HashMap::new(),
            failed: HashMap::new(),
        }
    }

    /// How many other members there are: with more than
    /// [`PING_FANOUT`] each is pinged once every ⌈peers / fanout⌉ intervals,
    /// and counts as down only after three such cycles of silence.
    pub fn set_peer_count(&mut self, peers: usize) {
        let cycle = peers.div_ceil(PING_FANOUT).max(1) as u64;
        self.down_after_ms = MEMBER_DOWN_AFTER_MS.max(3 * cycle * PING_INTERVAL_MS);
    }

    /// The silence after which a member counts as down.
    pub fn down_after_ms(&self) -> u64 {
        self.down_after_ms
    }

    /// `from` spoke at `now_ms`.
    pub fn heard(&mut self, from: &NodeId, now_ms: u64) {
        self.last_heard.insert(from.clone(), now_ms);
    }

    /// A call to `node` made at `at_ms` failed: it counts as down until it
    /// is heard from again after that (a message it sent meanwhile clears
    /// nothing it was not yet answering).
    pub fn call_failed(&mut self, node: &NodeId, at_ms: u64) {
        let failed = self.failed.entry(node.clone()).or_insert(at_ms);
        *failed = (*failed).max(at_ms);
    }

    /// When `node` last spoke, if it did since this node started.
    pub fn last_heard(&self, node: &NodeId) -> Option<u64> {
        self.last_heard.get(node).copied()
    }

    /// Whether `node` (another node than this one) is up at `now_ms`.
    pub fn status(&self, node: &NodeId, now_ms: u64) -> Status {
        let heard = self.last_heard(node).unwrap_or(self.started_ms);
        let failed_since = self.failed.get(node).is_some_and(|&at| at >= heard);
        if failed_since || now_ms.saturating_sub(heard) > self.down_after_ms {
            Status::Down
        } else {
            Status::Up
        }
    }

    /// Forgets ids that are not members once they have been silent for
    /// [`STRANGER_HEARD_KEPT_MS`], so peers naming themselves at will cannot
    /// grow the map.
    pub fn forget_strangers(&mut self, now_ms: u64, is_member: impl Fn(&NodeId) -> bool) {
        self.last_heard.retain(|id, heard| {
            is_member(id) || now_ms.saturating_sub(*heard) <= STRANGER_HEARD_KEPT_MS
        });
        self.failed.retain(|id, _| is_member(id));
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.last_heard.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.last_heard.is_empty()
    }
}

/// The join this node is making: at start (with `--seed`, until a seed
/// admits it) or asked for at runtime (`POST /cluster/join`).
#[derive(Debug, Clone, Default)]
pub struct Join {
    /// The seed of a join asked for at runtime, while it is under way.
    runtime_seed: Option<String>,
    /// When that join began.
    started_ms: u64,
    /// The last runtime join that failed: (seed, reason), for `/cluster`.
    failed: Option<(String, String)>,
    /// Which seed is asked next (they are asked in turn).
    seed_cursor: usize,
}

impl Join {
    /// A runtime join toward `seed` begins at `now_ms`; an earlier failure is forgotten.
    pub fn begin(&mut self, seed: String, now_ms: u64) {
        self.runtime_seed = Some(seed);
        self.started_ms = now_ms;
        self.failed = None;
    }

    /// The seed of the runtime join under way.
    pub fn runtime_seed(&self) -> Option<&String> {
        self.runtime_seed.as_ref()
    }

    /// Whether a runtime join is under way.
    pub fn is_under_way(&self) -> bool {
        self.runtime_seed.is_some()
    }

    /// The last runtime join that failed, and why.
    pub fn failure(&self) -> Option<&(String, String)> {
        self.failed.as_ref()
    }

    /// The runtime join ended (accepted): nothing is under way any more.
    pub fn finish(&mut self) {
        self.runtime_seed = None;
    }

    /// The runtime join under way failed for `reason`; `false` when none was
    /// under way (the refusal is about the join at start).
    pub fn fail(&mut self, reason: impl FnOnce(&str) -> String) -> bool {
        match self.runtime_seed.take() {
            Some(seed) => {
                let reason = reason(&seed);
                self.failed = Some((seed, reason));
                true
            }
            None => false,
        }
    }

    /// Gives up the runtime join under way if it has gone unanswered for
    /// [`JOIN_GIVE_UP_MS`]; returns whether it did.
    pub fn give_up_if_silent(&mut self, now_ms: u64) -> bool {
        if self.runtime_seed.is_some() && now_ms.saturating_sub(self.started_ms) >= JOIN_GIVE_UP_MS
        {
            self.fail(|seed| format!("no answer from seed {seed} within 30 s"));
            true
        } else {
            false
        }
    }

    /// The seed to ask next: the runtime join's seed, or the start-up seeds in turn.
    pub fn next_seed(&mut self, start_seeds: &[String]) -> Option<String> {
        let seeds: &[String] = match &self.runtime_seed {
            Some(seed) => std::slice::from_ref(seed),
            None => start_seeds,
        };
        if seeds.is_empty() {
            return None;
        }
        let seed = seeds[self.seed_cursor % seeds.len()].clone();
        self.seed_cursor += 1;
        Some(seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    #[test]
    fn a_member_is_down_once_silent_for_longer_than_the_limit() {
        let mut liveness = Liveness::new(1_000);
        let b = id("b");
        // Never heard: counted from the start.
        assert_eq!(
            liveness.status(&b, 1_000 + MEMBER_DOWN_AFTER_MS),
            Status::Up
        );
        assert_eq!(
            liveness.status(&b, 1_001 + MEMBER_DOWN_AFTER_MS),
            Status::Down
        );
        liveness.heard(&b, 20_000);
        assert_eq!(
            liveness.status(&b, 20_000 + MEMBER_DOWN_AFTER_MS),
            Status::Up
        );
        assert_eq!(Status::Joining.as_str(), "joining");
    }

    #[test]
    fn a_failed_call_makes_a_member_down_until_it_is_heard_from_after_it() {
        let mut liveness = Liveness::new(0);
        let b = id("b");
        liveness.heard(&b, 100);
        liveness.call_failed(&b, 90);
        assert_eq!(liveness.status(&b, 200), Status::Up, "heard after the call");
        liveness.call_failed(&b, 150);
        assert_eq!(liveness.status(&b, 200), Status::Down);
        liveness.heard(&b, 300);
        assert_eq!(liveness.status(&b, 300), Status::Up);
    }

    #[test]
    fn strangers_are_forgotten_members_are_not() {
        let mut liveness = Liveness::new(0);
        liveness.heard(&id("member"), 0);
        liveness.heard(&id("stranger"), 0);
        liveness.forget_strangers(STRANGER_HEARD_KEPT_MS, |n| n.as_str() == "member");
        assert_eq!(liveness.len(), 2);
        liveness.forget_strangers(STRANGER_HEARD_KEPT_MS + 1, |n| n.as_str() == "member");
        assert_eq!(liveness.len(), 1);
        assert!(liveness.last_heard(&id("member")).is_some());
    }

    #[test]
    fn seeds_are_asked_in_turn_and_a_silent_runtime_join_gives_up() {
        let mut join = Join::default();
        let seeds = vec!["s1".to_owned(), "s2".to_owned()];
        assert_eq!(join.next_seed(&seeds).as_deref(), Some("s1"));
        assert_eq!(join.next_seed(&seeds).as_deref(), Some("s2"));
        assert_eq!(join.next_seed(&[]), None);
        join.begin("r".into(), 100);
        assert_eq!(join.next_seed(&seeds).as_deref(), Some("r"));
        assert!(!join.give_up_if_silent(100 + JOIN_GIVE_UP_MS - 1));
        assert!(join.give_up_if_silent(100 + JOIN_GIVE_UP_MS));
        assert!(!join.is_under_way());
        assert_eq!(join.failure().map(|f| f.0.as_str()), Some("r"));
        assert!(!join.fail(|_| String::new()), "nothing under way");
    }
}
