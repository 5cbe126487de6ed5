//! The simulator's invariants, kept apart from the scenarios that drive it
//! so every scenario can ask the same questions: was an acknowledged write
//! lost, did anything grow past its bound or fail to drain, and do the
//! replicas of a key hold the same object. Each check answers with what it
//! found wrong rather than panicking, so the scenario names its seed.

use std::collections::{BTreeMap, BTreeSet};

use super::Sim;
use crate::core::limits::{CLIENT_REQUESTS_IN_FLIGHT_MAX, LOST_BATCH_RANGES_KEPT};

/// One write a client attempted, for the loss check.
pub(super) struct Attempt {
    pub key: String,
    /// The value written; `None` for a delete.
    pub value: Option<String>,
    pub acknowledged: bool,
    /// Values the write's context covered (what it was allowed to replace).
    pub supersedes: BTreeSet<String>,
    /// A delete without a context: it may remove whatever its read saw, i.e.
    /// any value of the key attempted before it.
    pub blind_delete: bool,
    /// Virtual time it was submitted at.
    pub submitted_ms: u64,
    /// Virtual time its acknowledgement came, if it was acknowledged.
    pub acknowledged_ms: Option<u64>,
}

/// The writes that certainly or possibly took effect: acknowledged ones,
/// ones found in the final reads, and (transitively) ones a write that took
/// effect superseded. Only those may excuse the absence of an acknowledged value.
pub(super) fn effective(
    attempts: &[Attempt],
    found: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<bool> {
    let none_found = BTreeSet::new();
    let mut took_effect: Vec<bool> = attempts
        .iter()
        .map(|a| {
            let found = found.get(&a.key).unwrap_or(&none_found);
            a.acknowledged
                || match &a.value {
                    Some(value) => found.contains(value),
                    // A tombstone cannot be seen; a delete that applied left
                    // none of the values its context covered. Whether a delete
                    // without context applied cannot be told at all.
                    None => {
                        a.blind_delete
                            || (!a.supersedes.is_empty() && a.supersedes.is_disjoint(found))
                    }
                }
        })
        .collect();
    loop {
        let mut changed = false;
        for i in 0..attempts.len() {
            if took_effect[i] {
                continue;
            }
            let Some(value) = &attempts[i].value else {
                continue;
            };
            let superseded = attempts.iter().enumerate().any(|(j, later)| {
                took_effect[j] && later.key == attempts[i].key && later.supersedes.contains(value)
            });
            if superseded {
                took_effect[i] = true;
                changed = true;
            }
        }
        if !changed {
            return took_effect;
        }
    }
}

/// No acknowledged write lost: the acknowledged writes whose value is missing
/// from the final reads (`found`, by key) although no write that took effect
/// replaced it — a write whose context covered it, or a delete without
/// context that may have seen it.
pub(super) fn lost_acknowledged<'a>(
    attempts: &'a [Attempt],
    found: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<&'a Attempt> {
    let took_effect = effective(attempts, found);
    let none_found = BTreeSet::new();
    attempts
        .iter()
        .filter(|attempt| attempt.acknowledged)
        .filter(|attempt| {
            let Some(value) = &attempt.value else {
                return false;
            };
            let excused = attempts.iter().zip(&took_effect).any(|(later, &effect)| {
                effect
                    && later.key == attempt.key
                    && (later.supersedes.contains(value)
                        // A delete without context covers what its read saw:
                        // anything written before it was acknowledged, or,
                        // unacknowledged, whenever it ran (a paused node
                        // runs it late).
                        || (later.blind_delete
                            && later
                                .acknowledged_ms
                                .is_none_or(|acked| attempt.submitted_ms <= acked)))
            });
            !excused
                && !found
                    .get(&attempt.key)
                    .unwrap_or(&none_found)
                    .contains(value)
        })
        .collect()
}

/// No deleted value back: the values found although an acknowledged
/// delete's context covered them (values are never written twice, so a
/// covered value found again came back from a stale copy, a late hint or
/// a tombstone collected too early).
pub(super) fn resurrected<'a>(
    attempts: &'a [Attempt],
    found: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<(&'a Attempt, &'a String)> {
    attempts
        .iter()
        .filter(|a| a.acknowledged && a.value.is_none())
        .flat_map(|delete| delete.supersedes.iter().map(move |value| (delete, value)))
        .filter(|(delete, value)| {
            found
                .get(&delete.key)
                .is_some_and(|values| values.contains(*value))
        })
        .collect()
}

/// Queues within their bounds on every running node, and the deadline index
/// holding exactly the requests in flight (one missing would never end; one
/// left over from an ended request would grow the index without bound).
/// Meant to run at any moment of a scenario.
pub(super) fn within_bounds(sim: &Sim) -> Result<(), String> {
    for index in 0..sim.len() {
        let Some(node) = sim.node(index) else {
            continue;
        };
        let sizes = node.sizes();
        let name = index + 1;
        if sizes.in_flight > CLIENT_REQUESTS_IN_FLIGHT_MAX {
            return Err(format!(
                "node{name}: {} requests in flight",
                sizes.in_flight
            ));
        }
        if sizes.deadlines_watched != sizes.in_flight {
            return Err(format!(
                "node{name}: {} requests in flight but {} deadlines watched",
                sizes.in_flight, sizes.deadlines_watched
            ));
        }
        if sizes.lost_batch_ranges > LOST_BATCH_RANGES_KEPT {
            return Err(format!(
                "node{name}: {} lost batch ranges kept",
                sizes.lost_batch_ranges
            ));
        }
        // The scenarios have no strangers: only members are remembered.
        if sizes.heard_from > sim.len() {
            return Err(format!(
                "node{name}: remembers {} ids in a cluster of {}",
                sizes.heard_from,
                sim.len()
            ));
        }
    }
    Ok(())
}

/// Everything drained on every running node: once clients are done and the
/// longest deadline has passed, nothing is in flight, queued, held or
/// watched. Meant to run after a quiet period.
pub(super) fn drained(sim: &Sim) -> Result<(), String> {
    for index in 0..sim.len() {
        let Some(node) = sim.node(index) else {
            continue;
        };
        let sizes = node.sizes();
        let left = [
            ("requests in flight", sizes.in_flight),
            ("deadlines watched", sizes.deadlines_watched),
            ("outputs queued", sizes.outputs_queued),
            ("answers held", sizes.outputs_held),
            ("coordinator copies waiting", sizes.local_copies_waiting),
            ("merges being written back", sizes.writebacks),
            ("hints kept", sizes.hints_pending as usize),
        ];
        if let Some((what, count)) = left.iter().find(|(_, count)| *count > 0) {
            return Err(format!(
                "node{}: {count} {what} after a quiet period",
                index + 1
            ));
        }
    }
    Ok(())
}

/// The replicas of `table`/`key` on `nodes` hold the same stored object,
/// compared directly in their stores (no client read, which would repair
/// what it compares). With read repair alone this holds only after reads;
/// anti-entropy will make it hold after healing alone.
pub(super) fn converged(
    sim: &mut Sim,
    table: &str,
    key: &str,
    nodes: impl IntoIterator<Item = usize>,
) -> Result<(), String> {
    let copies: Vec<(usize, _)> = nodes
        .into_iter()
        .map(|n| (n, sim.local_object(n, table, key.as_bytes())))
        .collect();
    match copies.windows(2).find(|w| w[0].1 != w[1].1) {
        None => Ok(()),
        Some(w) => Err(format!(
            "replicas of {table}/{key} differ: node{} holds {:?}, node{} holds {:?}",
            w[0].0 + 1,
            w[0].1,
            w[1].0 + 1,
            w[1].1
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::tests::{all_replicas, set, siblings_table, written, TIMEOUT_MS};
    use crate::sim::{get, put};

    fn attempt(value: &str, acknowledged: bool, supersedes: &[&str]) -> Attempt {
        Attempt {
            key: "k".into(),
            value: Some(value.into()),
            acknowledged,
            supersedes: set(supersedes),
            blind_delete: false,
            submitted_ms: 0,
            acknowledged_ms: None,
        }
    }

    #[test]
    fn the_loss_check_excuses_only_writes_that_took_effect() {
        // An acknowledged value is missing; the only write whose context covered
        // it was never acknowledged and is nowhere to be found: it proves nothing.
        let attempts = vec![
            attempt("x", true, &[]),
            attempt("y", false, &["x"]),
            attempt("z", false, &["y"]),
        ];
        let mut found = BTreeMap::new();
        found.insert("k".to_owned(), set(&[]));
        assert_eq!(effective(&attempts, &found), vec![true, false, false]);
        // Once z is found, z took effect, so y (which z superseded) did too.
        found.insert("k".to_owned(), set(&["z"]));
        assert_eq!(effective(&attempts, &found), vec![true, true, true]);
    }

    #[test]
    fn a_missing_acknowledged_value_is_lost_unless_a_write_that_took_effect_replaced_it() {
        let mut found = BTreeMap::new();
        found.insert("k".to_owned(), set(&["z"]));
        // x was replaced by y, which z (found) replaced: nothing lost.
        let replaced = [
            attempt("x", true, &[]),
            attempt("y", false, &["x"]),
            attempt("z", false, &["y"]),
        ];
        assert!(lost_acknowledged(&replaced, &found).is_empty());
        // w was acknowledged and nothing that took effect covered it.
        let missing = [attempt("w", true, &[]), attempt("z", true, &[])];
        let lost: Vec<_> = lost_acknowledged(&missing, &found)
            .iter()
            .map(|a| a.value.clone())
            .collect();
        assert_eq!(lost, vec![Some("w".to_owned())]);
    }

    #[test]
    fn a_request_still_in_flight_is_not_drained_until_its_deadline() {
        let mut sim = Sim::new(3, 3);
        siblings_table(&mut sim);
        sim.partition(0, 1);
        sim.partition(0, 2);
        sim.submit(0, all_replicas(put("ev", "k", "v", None)));
        sim.run_for(10);
        assert!(within_bounds(&sim).is_ok());
        let busy = drained(&sim).expect_err("a write waits for its replicas");
        assert!(busy.contains("requests in flight"), "{busy}");
        sim.run_for(TIMEOUT_MS);
        assert_eq!(drained(&sim), Ok(()));
    }

    #[test]
    fn replicas_that_missed_a_write_differ_until_a_read_repairs_them() {
        let mut sim = Sim::new(4, 3);
        siblings_table(&mut sim);
        sim.partition(0, 2);
        sim.partition(1, 2);
        written(&sim.call(0, put("ev", "k", "v", None), TIMEOUT_MS));
        sim.heal();
        let replicas = sim.replicas_of("ev", "k");
        assert_eq!(replicas.len(), 3);
        let diverged = converged(&mut sim, "ev", "k", replicas.clone());
        assert!(diverged.is_err(), "node3 missed the write");
        sim.call(0, get("ev", "k", Some(3)), TIMEOUT_MS);
        sim.run_for(100);
        assert_eq!(converged(&mut sim, "ev", "k", replicas), Ok(()));
    }
}

#[cfg(test)]
mod antientropy {
    use super::*;
    use crate::sim::put;
    use crate::sim::tests::{siblings_table, with_w, written, TIMEOUT_MS};

    /// Every key's replicas hold the same object, compared in their stores.
    fn all_converged(sim: &mut Sim, keys: &[String]) -> Result<(), String> {
        for key in keys {
            let replicas = sim.replicas_of("ev", key);
            converged(sim, "ev", key, replicas)?;
        }
        Ok(())
    }

    #[test]
    fn replicas_that_missed_writes_converge_without_any_client_read() {
        let mut sim = Sim::with_antientropy(21, 3, 100);
        siblings_table(&mut sim);
        sim.partition(0, 2);
        sim.partition(1, 2);
        let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        for key in &keys {
            written(&sim.call(0, with_w(put("ev", key, key, None), 2), TIMEOUT_MS));
        }
        sim.heal();
        assert!(
            all_converged(&mut sim, &keys).is_err(),
            "node3 missed every write"
        );
        let before = sim.node(2).expect("node3").stats().antientropy;
        sim.run_for(60_000);
        if let Err(diverged) = all_converged(&mut sim, &keys) {
            panic!("{diverged}");
        }
        let after = sim.node(2).expect("node3").stats().antientropy;
        assert!(
            after.objects_repaired > before.objects_repaired,
            "{after:?}"
        );
        assert_eq!(drained(&sim), Ok(()));
    }

    #[test]
    fn a_wiped_replica_is_refilled_without_any_client_read() {
        let mut sim = Sim::with_antientropy(22, 3, 100);
        siblings_table(&mut sim);
        // Enough keys that a partition's refill takes several exchanges
        // (each moves at most 256 objects).
        let keys: Vec<String> = (0..20_000).map(|i| format!("k{i}")).collect();
        for key in &keys {
            written(&sim.call(0, put("ev", key, key, None), TIMEOUT_MS));
        }
        sim.run_for(1_000);
        sim.crash(2);
        sim.wipe(2);
        // A seed refuses a wiped node whose id answered within the last 10 s.
        sim.run_for(11_000);
        sim.restart(2);
        sim.run_for(120_000);
        for key in &keys {
            assert!(
                sim.local_object(2, "ev", key.as_bytes()).is_some(),
                "{key} not back on the wiped node"
            );
        }
        if let Err(diverged) = all_converged(&mut sim, &keys) {
            panic!("{diverged}");
        }
    }
}
