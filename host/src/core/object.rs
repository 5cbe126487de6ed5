//! A stored object: the versions of one key that are still current, plus the
//! causal context of everything the object has seen.
//!
//! Merging two objects is a join (commutative, associative, idempotent), so
//! replicas converge whatever order writes, repairs and handoffs arrive in.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::causal::{CausalContext, Dot};
use super::table::MergeMode;

/// One version of a key: a value or a tombstone, named by its dot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Minted once, by the write's coordinator.
    pub dot: Dot,
    /// The coordinator's wall clock when it accepted the write.
    pub timestamp_ms: u64,
    /// The value; `None` is a tombstone (a delete), kept for causality.
    pub value: Option<Bytes>,
    /// The value's media type (empty for a tombstone).
    pub content_type: String,
}

impl Version {
    /// Whether this is a live value rather than a tombstone.
    pub fn is_live(&self) -> bool {
        self.value.is_some()
    }

    /// Bytes a live version holds, its content type included (0 for a
    /// tombstone): every byte counts against the object's limit, so whatever
    /// a coordinator admits fits in a frame to its replicas.
    pub fn live_bytes(&self) -> usize {
        self.value
            .as_ref()
            .map_or(0, |value| value.len() + self.content_type.len())
    }

    /// The last-write-wins order: (timestamp_ms, node id, epoch, counter).
    fn rank(&self) -> (u64, &str, u64, u64) {
        (
            self.timestamp_ms,
            self.dot.actor.node.as_str(),
            self.dot.actor.epoch,
            self.dot.counter,
        )
    }
}

/// What one replica holds for a key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    /// Every dot this object has seen, superseded ones included.
    pub clock: CausalContext,
    /// The current versions, sorted by dot; never two with one dot.
    pub versions: Vec<Version>,
}

impl Object {
    /// Whether the key has never been seen here.
    pub fn is_empty(&self) -> bool {
        self.clock.is_empty() && self.versions.is_empty()
    }

    /// The current live versions (tombstones left out).
    pub fn live(&self) -> impl Iterator<Item = &Version> {
        self.versions.iter().filter(|v| v.is_live())
    }

    /// Number of live versions.
    pub fn live_count(&self) -> usize {
        self.live().count()
    }

    /// Total live value bytes.
    pub fn live_bytes(&self) -> usize {
        self.versions.iter().map(Version::live_bytes).sum()
    }

    /// Largest timestamp among the versions `context` covers, so that a write
    /// that descends them can be stamped after them (see [`Object::apply_write`]).
    pub fn max_timestamp_covered(&self, context: &CausalContext) -> u64 {
        self.versions
            .iter()
            .filter(|v| context.covers(&v.dot))
            .map(|v| v.timestamp_ms)
            .max()
            .unwrap_or(0)
    }

    /// A client write at its coordinator: the versions `context` covers are
    /// superseded, and so are the tombstones held here (a delete already
    /// happened; superseding it loses nothing, and so repeated deletes with
    /// stale contexts leave one tombstone, not one each); `version` is added
    /// and the clock learns both. This only widens what the new dot is known
    /// to descend, so merges stay a join. Under `lww` a held tombstone stays:
    /// its timestamp may outrank the new write's, and the ranking decides.
    pub fn apply_write(&mut self, context: &CausalContext, version: Version, mode: MergeMode) {
        let keep_tombstones = mode == MergeMode::Lww;
        self.versions
            .retain(|v| (v.is_live() || keep_tombstones) && !context.covers(&v.dot));
        self.clock.join(context);
        self.clock.add(version.dot.clone());
        self.versions.push(version);
        self.normalise(mode);
    }

    /// Joins another replica's object into this one: a version survives if both
    /// hold it or if the other side has not seen it; the clocks are united.
    /// Under `lww` only the winner is kept. O(V log V) in the versions held.
    pub fn merge(&mut self, other: &Object, mode: MergeMode) {
        if mode == MergeMode::Lww {
            self.versions.extend(other.versions.iter().cloned());
        } else {
            // Objects are kept sorted by dot; one from a peer may not be.
            let mut theirs: Vec<&Version> = other.versions.iter().collect();
            theirs.sort_by(|a, b| a.dot.cmp(&b.dot));
            let held_there = |dot: &Dot| theirs.binary_search_by(|o| o.dot.cmp(dot)).is_ok();
            self.versions
                .retain(|v| !other.clock.covers(&v.dot) || held_there(&v.dot));
            self.versions.sort_by(|a, b| a.dot.cmp(&b.dot));
            let unseen: Vec<Version> = theirs
                .iter()
                .filter(|o| {
                    !self.clock.covers(&o.dot)
                        && self
                            .versions
                            .binary_search_by(|v| v.dot.cmp(&o.dot))
                            .is_err()
                })
                .map(|o| (*o).clone())
                .collect();
            self.versions.extend(unseen);
        }
        self.clock.join(&other.clock);
        self.normalise(mode);
    }

    /// Sorts by dot, and under `lww` keeps only the largest-ranked version. A
    /// coordinator stamps a write later than what it supersedes, so a
    /// descendant always outranks its ancestors and "max rank" is a join.
    fn normalise(&mut self, mode: MergeMode) {
        self.versions.sort_by(|a, b| a.dot.cmp(&b.dot));
        self.versions.dedup_by(|a, b| a.dot == b.dot);
        if mode == MergeMode::Lww && self.versions.len() > 1 {
            let winner = self
                .versions
                .iter()
                .max_by(|a, b| a.rank().cmp(&b.rank()))
                .cloned();
            self.versions = winner.into_iter().collect();
        }
        debug_assert!(self.is_normalised(mode));
    }

    /// Whether the object is in the form every merge leaves it in: versions
    /// sorted by dot without repeats, at most one under `lww`, and a
    /// normalised clock.
    pub fn is_normalised(&self, mode: MergeMode) -> bool {
        self.versions.windows(2).all(|w| w[0].dot < w[1].dot)
            && (mode != MergeMode::Lww || self.versions.len() <= 1)
            && self.clock.is_normalised()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::causal::tests::dot;
    use proptest::prelude::*;

    fn version(node: &str, counter: u64, ts: u64, value: Option<&str>) -> Version {
        Version {
            dot: dot(node, 1, counter),
            timestamp_ms: ts,
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            content_type: "text/plain".into(),
        }
    }

    fn write(obj: &mut Object, ctx: &CausalContext, v: Version, mode: MergeMode) {
        obj.apply_write(ctx, v, mode);
    }

    #[test]
    fn blind_writes_become_siblings() {
        let mut o = Object::default();
        write(
            &mut o,
            &CausalContext::new(),
            version("a", 1, 10, Some("x")),
            MergeMode::Siblings,
        );
        write(
            &mut o,
            &CausalContext::new(),
            version("a", 2, 11, Some("y")),
            MergeMode::Siblings,
        );
        assert_eq!(o.live_count(), 2);
    }

    #[test]
    fn a_context_write_supersedes_exactly_what_it_saw() {
        let mut o = Object::default();
        write(
            &mut o,
            &CausalContext::new(),
            version("a", 1, 10, Some("x")),
            MergeMode::Siblings,
        );
        let seen = o.clock.clone();
        write(
            &mut o,
            &CausalContext::new(),
            version("b", 1, 11, Some("y")),
            MergeMode::Siblings,
        );
        write(
            &mut o,
            &seen,
            version("a", 2, 12, Some("z")),
            MergeMode::Siblings,
        );
        let values: Vec<_> = o.live().map(|v| v.value.clone().unwrap()).collect();
        assert_eq!(values, vec![Bytes::from("z"), Bytes::from("y")]);
    }

    #[test]
    fn a_live_version_concurrent_with_a_tombstone_survives() {
        let mut a = Object::default();
        write(
            &mut a,
            &CausalContext::new(),
            version("a", 1, 10, Some("x")),
            MergeMode::Siblings,
        );
        let mut b = a.clone();
        let ctx = a.clock.clone();
        write(&mut a, &ctx, version("a", 2, 11, None), MergeMode::Siblings);
        write(
            &mut b,
            &CausalContext::new(),
            version("b", 1, 12, Some("y")),
            MergeMode::Siblings,
        );
        a.merge(&b, MergeMode::Siblings);
        let live: Vec<_> = a.live().map(|v| v.dot.clone()).collect();
        assert_eq!(live, vec![dot("b", 1, 1)]);
        assert_eq!(a.versions.len(), 2, "the tombstone is kept for causality");
    }

    #[test]
    fn lww_keeps_the_largest_timestamp_then_node() {
        let mut o = Object::default();
        write(
            &mut o,
            &CausalContext::new(),
            version("b", 1, 10, Some("x")),
            MergeMode::Lww,
        );
        write(
            &mut o,
            &CausalContext::new(),
            version("a", 1, 10, Some("y")),
            MergeMode::Lww,
        );
        assert_eq!(o.versions.len(), 1);
        assert_eq!(o.versions[0].dot, dot("b", 1, 1));
        write(
            &mut o,
            &CausalContext::new(),
            version("a", 2, 9, Some("old")),
            MergeMode::Lww,
        );
        assert_eq!(o.versions[0].dot, dot("b", 1, 1));
        assert!(o.clock.covers(&dot("a", 1, 2)), "the loser is still seen");
    }

    #[test]
    fn blind_deletes_fold_into_one_tombstone() {
        // Each DELETE without a context is concurrent with the others; they
        // once piled up as siblings (one key stalled its nodes at ~10^5).
        let mut a = Object::default();
        let mut b = Object::default();
        for i in 1..=20_000u64 {
            let side = if i % 2 == 0 { &mut a } else { &mut b };
            let node = if i % 2 == 0 { "a" } else { "b" };
            side.apply_write(
                &CausalContext::new(),
                version(node, i, i, None),
                MergeMode::Siblings,
            );
        }
        assert_eq!(a.versions.len(), 1, "one tombstone per coordinator");
        a.merge(&b, MergeMode::Siblings);
        assert_eq!(a.versions.len(), 2, "concurrent coordinators' tombstones");
        a.apply_write(
            &CausalContext::new(),
            version("a", 20_001, 20_001, None),
            MergeMode::Siblings,
        );
        assert_eq!(a.versions.len(), 1, "the next delete folds them");
        assert!(
            a.clock.covers(&dot("b", 1, 19_999)),
            "every delete is still seen"
        );
        // A value written blind afterwards is concurrent with the tombstone and survives.
        let mut c = Object::default();
        c.apply_write(
            &CausalContext::new(),
            version("c", 1, 1, Some("back")),
            MergeMode::Siblings,
        );
        a.merge(&c, MergeMode::Siblings);
        assert_eq!(a.live_count(), 1);
    }

    #[test]
    fn merging_many_siblings_accepts_unsorted_peers() {
        let mut a = Object::default();
        for i in 1..=64u64 {
            a.apply_write(
                &CausalContext::new(),
                version("a", i, i, Some("v")),
                MergeMode::Siblings,
            );
        }
        let mut b = a.clone();
        b.versions.reverse();
        let mut m = a.clone();
        m.merge(&b, MergeMode::Siblings);
        assert_eq!(m, a);
    }

    fn objects(mode: MergeMode) -> impl Strategy<Value = Object> {
        // Writes drawn from a fixed universe so one dot always names one version.
        prop::collection::vec(
            (0usize..3, 1u64..5, prop::collection::vec(0usize..12, 0..4)),
            0..6,
        )
        .prop_map(move |writes| {
            let mut o = Object::default();
            for (node, counter, seen) in writes {
                let live = !(counter + node as u64).is_multiple_of(3);
                let name = ["a", "b", "c"][node];
                let ts = (counter * 7 + node as u64 * 3) % 11;
                let mut ctx = CausalContext::new();
                for s in seen {
                    ctx.add(dot(["a", "b", "c"][s % 3], 1, (s / 3) as u64 + 1));
                }
                let v = version(name, counter, ts, live.then_some("v"));
                let mut single = Object::default();
                single.apply_write(&ctx, v, mode);
                o.merge(&single, mode);
            }
            o
        })
    }

    fn merged(a: &Object, b: &Object, mode: MergeMode) -> Object {
        let mut m = a.clone();
        m.merge(b, mode);
        m
    }

    proptest! {
        #[test]
        fn sibling_merge_is_a_join(a in objects(MergeMode::Siblings), b in objects(MergeMode::Siblings), c in objects(MergeMode::Siblings)) {
            let m = MergeMode::Siblings;
            prop_assert_eq!(merged(&a, &b, m), merged(&b, &a, m));
            prop_assert_eq!(merged(&merged(&a, &b, m), &c, m), merged(&a, &merged(&b, &c, m), m));
            prop_assert_eq!(merged(&a, &a, m), a.clone());
        }

        #[test]
        fn a_new_dot_dominates_what_its_context_covers(base in objects(MergeMode::Siblings), seen in prop::collection::vec(0usize..12, 0..6)) {
            // The context may name the minting actor too (a client that saw
            // earlier writes of this coordinator): the dot is minted above both.
            let mut context = CausalContext::new();
            for s in seen {
                context.add(dot(["a", "b", "z"][s % 3], 1, (s / 3) as u64 + 1));
            }
            let mut after = base.clone();
            let z = dot("z", 1, 1).actor;
            let new_dot = dot("z", 1, after.clock.max_counter(&z).max(context.max_counter(&z)) + 1);
            after.apply_write(&context, Version { dot: new_dot.clone(), timestamp_ms: 99, value: Some(Bytes::from("n")), content_type: String::new() }, MergeMode::Siblings);
            prop_assert!(after.clock.descends(&context) && after.clock.descends(&base.clock));
            prop_assert!(!context.covers(&new_dot));
            for v in &base.versions {
                let kept = after.versions.iter().any(|a| a.dot == v.dot);
                let superseded = context.covers(&v.dot) || !v.is_live();
                prop_assert_eq!(kept, !superseded, "exactly the covered versions and the tombstones are superseded");
            }
            // Merging the new object into any replica's copy keeps the new version.
            let mut replica = base.clone();
            replica.merge(&after, MergeMode::Siblings);
            prop_assert!(replica.versions.iter().any(|v| v.dot == new_dot));
        }

        #[test]
        fn lww_merge_is_a_join(a in objects(MergeMode::Lww), b in objects(MergeMode::Lww), c in objects(MergeMode::Lww)) {
            let m = MergeMode::Lww;
            prop_assert_eq!(merged(&a, &b, m), merged(&b, &a, m));
            prop_assert_eq!(merged(&merged(&a, &b, m), &c, m), merged(&a, &merged(&b, &c, m), m));
            prop_assert_eq!(merged(&a, &a, m), a.clone());
        }
    }
}
