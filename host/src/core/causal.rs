//! Causality: actors, dots and causal contexts (a version vector plus loose dots),
//! and the opaque context token clients carry between a read and a write.
//!
//! Every version of a key is named by a [`Dot`] minted once by its coordinator.
//! A [`CausalContext`] is the set of dots something has seen. Being a set (not
//! only a vector) lets a PUT's returned context cover exactly what the request
//! covered plus the new dot, never siblings the client has not seen.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::limits::{CONTEXT_ACTORS_MAX, CONTEXT_CHARS_MAX};
use super::types::NodeId;

/// Who mints dots: a node in one epoch of its life. A node takes a fresh epoch
/// whenever it might have forgotten dots it issued, so no dot is ever minted twice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// The minting node.
    pub node: NodeId,
    /// The node's epoch when it minted: a generation (high 32 bits: at least
    /// the wall clock's seconds when it was taken, above every earlier one
    /// the node knew of) and a random nonce (low 32 bits), so that a node that
    /// lost its disk and whose clock runs behind still never repeats one.
    pub epoch: u64,
}

/// One event: the `counter`-th version minted by `actor`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The minting actor.
    pub actor: Actor,
    /// Its sequence number, from 1.
    pub counter: u64,
}

/// A set of dots, kept as a version vector (every counter 1..=k per actor) plus
/// the loose dots beyond it. Normalised: a loose dot is never covered by, nor
/// adjacent to, its actor's vector entry, so equal sets compare equal.
///
/// Decoding normalises too (a peer's frame, a disk record or a token may
/// carry any set in any form), so the form holds for every context in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ContextParts")]
pub struct CausalContext {
    vector: BTreeMap<Actor, u64>,
    loose: BTreeSet<Dot>,
}

/// A context as encoded: the same fields, in any form, normalised on the way in.
#[derive(Deserialize)]
struct ContextParts {
    vector: BTreeMap<Actor, u64>,
    loose: BTreeSet<Dot>,
}

impl From<ContextParts> for CausalContext {
    fn from(parts: ContextParts) -> Self {
        let as_sent = CausalContext {
            vector: parts.vector,
            loose: parts.loose,
        };
        // What this build encodes is normal already: kept as decoded.
        if as_sent.is_normalised() {
            return as_sent;
        }
        let mut context = CausalContext::new();
        for (actor, counter) in as_sent.vector {
            if counter > 0 {
                context.raise(&actor, counter);
            }
        }
        for dot in as_sent.loose {
            context.add(dot);
        }
        debug_assert!(context.is_normalised());
        context
    }
}

impl CausalContext {
    /// The empty context: sees nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing is covered.
    pub fn is_empty(&self) -> bool {
        self.vector.is_empty() && self.loose.is_empty()
    }

    /// Whether `dot` is in the set.
    pub fn covers(&self, dot: &Dot) -> bool {
        self.vector
            .get(&dot.actor)
            .is_some_and(|&c| dot.counter <= c)
            || self.loose.contains(dot)
    }

    /// Adds one dot, keeping the set normalised.
    pub fn add(&mut self, dot: Dot) {
        if dot.counter == 0 || self.covers(&dot) {
            return;
        }
        let base = self.vector.get(&dot.actor).copied().unwrap_or(0);
        if dot.counter == base + 1 {
            self.raise(&dot.actor, dot.counter);
        } else {
            self.loose.insert(dot);
        }
    }

    /// Covers every dot of `actor` from 1 to `counter`: a coordinator whose
    /// counters for a key jump past the mint floor marks the gap as seen,
    /// so its clock keeps one vector entry instead of a loose dot per write.
    /// The gap holds no dot of the key that could still be live: the actor
    /// never minted those counters for it, or they belonged to a collected
    /// tombstone.
    pub fn cover_through(&mut self, actor: &Actor, counter: u64) {
        if counter > self.vector.get(actor).copied().unwrap_or(0) {
            self.raise(actor, counter);
        }
    }

    /// Dots kept apart from the vector: a clock that grows one per write
    /// would show here.
    pub fn loose_len(&self) -> usize {
        self.loose.len()
    }

    /// Set union: everything either has seen.
    pub fn join(&mut self, other: &CausalContext) {
        for (actor, &counter) in &other.vector {
            if counter > self.vector.get(actor).copied().unwrap_or(0) {
                self.raise(actor, counter);
            }
        }
        for dot in &other.loose {
            self.add(dot.clone());
        }
        debug_assert!(self.is_normalised());
    }

    /// Whether the set is in its normal form: no vector entry of 0, and no
    /// loose dot of counter 0, covered by its actor's vector entry, or next
    /// to it (it would have been folded in). Equal sets then compare equal.
    pub fn is_normalised(&self) -> bool {
        self.vector.values().all(|&counter| counter > 0)
            && self.loose.iter().all(|dot| {
                let base = self.vector.get(&dot.actor).copied().unwrap_or(0);
                dot.counter > base + 1
            })
    }

    /// Sets `actor`'s vector entry to `counter`, dropping the loose dots it now
    /// covers and folding in those that became adjacent.
    fn raise(&mut self, actor: &Actor, counter: u64) {
        let low = Dot {
            actor: actor.clone(),
            counter: 0,
        };
        let high = Dot {
            actor: actor.clone(),
            counter,
        };
        let covered: Vec<Dot> = self.loose.range(low..=high).cloned().collect();
        for dot in covered {
            self.loose.remove(&dot);
        }
        let mut top = counter;
        while let Some(next) = top.checked_add(1) {
            let folded = self.loose.remove(&Dot {
                actor: actor.clone(),
                counter: next,
            });
            if !folded {
                break;
            }
            top = next;
        }
        self.vector.insert(actor.clone(), top);
    }

    /// Whether every dot `other` covers is covered here (a partial order).
    pub fn descends(&self, other: &CausalContext) -> bool {
        other
            .vector
            .iter()
            .all(|(actor, &c)| self.vector.get(actor).is_some_and(|&mine| mine >= c))
            && other.loose.iter().all(|dot| self.covers(dot))
    }

    /// The largest counter covered for `actor` (0 when none): a coordinator mints
    /// the next dot above it.
    pub fn max_counter(&self, actor: &Actor) -> u64 {
        let vector = self.vector.get(actor).copied().unwrap_or(0);
        let loose = self
            .loose
            .range(
                Dot {
                    actor: actor.clone(),
                    counter: 0,
                }..=Dot {
                    actor: actor.clone(),
                    counter: u64::MAX,
                },
            )
            .next_back()
            .map_or(0, |d| d.counter);
        vector.max(loose)
    }

    /// The largest counter any epoch of `node` has in this set, with its epoch:
    /// used to notice that a node may have forgotten dots it issued.
    pub fn max_epoch_of(&self, node: &NodeId) -> Option<u64> {
        self.vector
            .keys()
            .chain(self.loose.iter().map(|d| &d.actor))
            .filter(|a| &a.node == node)
            .map(|a| a.epoch)
            .max()
    }

    /// Number of actors named, a measure of token size.
    pub fn actor_count(&self) -> usize {
        let mut actors: BTreeSet<&Actor> = self.vector.keys().collect();
        actors.extend(self.loose.iter().map(|d| &d.actor));
        actors.len()
    }

    /// The wire form tokens carry: node ids once, then (node index, epoch,
    /// counter) for the vector and the loose dots.
    pub(crate) fn to_wire(&self) -> ClockWire {
        let mut nodes: Vec<&NodeId> = self.vector.keys().map(|a| &a.node).collect();
        nodes.extend(self.loose.iter().map(|d| &d.actor.node));
        nodes.sort();
        nodes.dedup();
        let index = |n: &NodeId| nodes.binary_search(&n).unwrap_or(0) as u32;
        ClockWire {
            nodes: nodes.iter().map(|n| n.as_str().to_owned()).collect(),
            vector: self
                .vector
                .iter()
                .map(|(a, &c)| (index(&a.node), a.epoch, c))
                .collect(),
            loose: self
                .loose
                .iter()
                .map(|d| (index(&d.actor.node), d.actor.epoch, d.counter))
                .collect(),
        }
    }

    /// Rebuilds a context from a client's wire form, refusing anything that
    /// could not have come from [`CausalContext::to_wire`].
    pub(crate) fn from_wire(wire: ClockWire) -> Result<CausalContext, ContextError> {
        if wire.nodes.len() > CONTEXT_ACTORS_MAX
            || wire.vector.len() + wire.loose.len() > CONTEXT_ACTORS_MAX * 4
        {
            return Err(ContextError::Malformed("too many actors"));
        }
        let nodes = wire
            .nodes
            .iter()
            .map(|n| NodeId::new(n).map_err(|_| ContextError::Malformed("bad node id")))
            .collect::<Result<Vec<_>, _>>()?;
        let actor = |idx: u32, epoch: u64| -> Result<Actor, ContextError> {
            let node = nodes
                .get(idx as usize)
                .ok_or(ContextError::Malformed("bad actor index"))?;
            Ok(Actor {
                node: node.clone(),
                epoch,
            })
        };
        let mut context = CausalContext::new();
        for (idx, epoch, counter) in wire.vector {
            let actor = actor(idx, epoch)?;
            if counter == 0 || context.vector.contains_key(&actor) {
                return Err(ContextError::Malformed("bad vector entry"));
            }
            context.raise(&actor, counter);
        }
        for (idx, epoch, counter) in wire.loose {
            if counter == 0 {
                return Err(ContextError::Malformed("bad dot"));
            }
            context.add(Dot {
                actor: actor(idx, epoch)?,
                counter,
            });
        }
        Ok(context)
    }

    /// Iterates every actor with its largest counter (vector and loose).
    pub fn actors(&self) -> impl Iterator<Item = &Actor> {
        self.vector
            .keys()
            .chain(self.loose.iter().map(|d| &d.actor))
    }
}

/// A context's wire form: node ids once, then (node index, epoch, counter).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ClockWire {
    nodes: Vec<String>,
    vector: Vec<(u32, u64, u64)>,
    loose: Vec<(u32, u64, u64)>,
}

/// Why a context token was refused (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    /// Longer than the cap.
    #[error("context token longer than {CONTEXT_CHARS_MAX} characters")]
    TooLong,
    /// Not a token this node can read.
    #[error("malformed context token: {0}")]
    Malformed(&'static str),
    /// A token read from another table or key (or another cluster, or
    /// altered): using it would supersede versions the client never saw.
    #[error("context token belongs to another table or key (or was not issued by this cluster); read this key for its context")]
    OtherKey,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn actor(node: &str, epoch: u64) -> Actor {
        Actor {
            node: NodeId::new(node).unwrap(),
            epoch,
        }
    }

    pub fn dot(node: &str, epoch: u64, counter: u64) -> Dot {
        Dot {
            actor: actor(node, epoch),
            counter,
        }
    }

    #[test]
    fn a_context_with_the_largest_counter_decodes_and_joins_without_overflow() {
        let mut top = CausalContext::new();
        top.join(&context_at(u64::MAX));
        let bytes = postcard::to_allocvec(&top).unwrap();
        let decoded: CausalContext = postcard::from_bytes(&bytes).unwrap();
        assert!(decoded.covers(&dot("a", 1, u64::MAX)));
        assert_eq!(decoded, top);
    }

    /// A context whose vector names counter `counter` of actor a.
    fn context_at(counter: u64) -> CausalContext {
        #[derive(Serialize)]
        struct Raw {
            vector: BTreeMap<Actor, u64>,
            loose: BTreeSet<Dot>,
        }
        let raw = Raw {
            vector: [(actor("a", 1), counter)].into_iter().collect(),
            loose: BTreeSet::new(),
        };
        postcard::from_bytes(&postcard::to_allocvec(&raw).unwrap()).unwrap()
    }

    #[test]
    fn a_context_decoded_in_any_form_is_normalised() {
        #[derive(Serialize)]
        struct Raw {
            vector: BTreeMap<Actor, u64>,
            loose: BTreeSet<Dot>,
        }
        let raw = Raw {
            vector: [(actor("a", 1), 2), (actor("b", 1), 0)]
                .into_iter()
                .collect(),
            loose: [
                dot("a", 1, 1),
                dot("a", 1, 3),
                dot("a", 1, 5),
                dot("c", 1, 0),
            ]
            .into_iter()
            .collect(),
        };
        let bytes = postcard::to_allocvec(&raw).unwrap();
        let decoded: CausalContext = postcard::from_bytes(&bytes).unwrap();
        assert!(decoded.is_normalised());
        let mut expected = CausalContext::new();
        for counter in [1, 2, 3, 5] {
            expected.add(dot("a", 1, counter));
        }
        assert_eq!(decoded, expected, "the same set, in its one form");
    }

    fn context_of(dots: &[(u8, u8, u8)]) -> CausalContext {
        let mut c = CausalContext::new();
        for &(n, e, k) in dots {
            c.add(dot(
                ["a", "b", "c"][n as usize % 3],
                u64::from(e % 2),
                u64::from(k % 6) + 1,
            ));
        }
        c
    }

    pub fn contexts() -> impl Strategy<Value = CausalContext> {
        prop::collection::vec((0u8..3, 0u8..2, 0u8..6), 0..12).prop_map(|d| context_of(&d))
    }

    fn joined(a: &CausalContext, b: &CausalContext) -> CausalContext {
        let mut j = a.clone();
        j.join(b);
        j
    }

    #[test]
    fn adjacent_dots_fold_into_the_vector() {
        let mut c = CausalContext::new();
        c.add(dot("a", 0, 2));
        assert!(!c.covers(&dot("a", 0, 1)));
        c.add(dot("a", 0, 1));
        assert_eq!(c, context_of(&[(0, 0, 0), (0, 0, 1)]));
        assert!(c.loose.is_empty());
        assert_eq!(c.max_counter(&actor("a", 0)), 2);
    }

    proptest! {
        #[test]
        fn join_is_commutative_associative_idempotent(a in contexts(), b in contexts(), c in contexts()) {
            prop_assert_eq!(joined(&a, &b), joined(&b, &a));
            prop_assert_eq!(joined(&joined(&a, &b), &c), joined(&a, &joined(&b, &c)));
            prop_assert_eq!(joined(&a, &a), a.clone());
        }

        #[test]
        fn join_is_the_least_upper_bound(a in contexts(), b in contexts()) {
            let j = joined(&a, &b);
            prop_assert!(j.descends(&a) && j.descends(&b));
        }

        #[test]
        fn descends_is_a_partial_order(a in contexts(), b in contexts(), c in contexts()) {
            prop_assert!(a.descends(&a));
            if a.descends(&b) && b.descends(&a) { prop_assert_eq!(&a, &b); }
            if a.descends(&b) && b.descends(&c) { prop_assert!(a.descends(&c)); }
        }

        #[test]
        fn descends_matches_covering_every_dot(a in contexts(), b in contexts()) {
            let all = (0..3).flat_map(|n| (0..2).flat_map(move |e| (1..=6).map(move |k| dot(["a","b","c"][n], e, k))));
            let by_dots = all.clone().filter(|d| b.covers(d)).all(|d| a.covers(&d));
            prop_assert_eq!(a.descends(&b), by_dots);
        }
    }
}
