//! Checkers: pure functions from a workload's recorded history to a tally
//! of what happened and a list of what broke a guarantee. They know nothing
//! of how the history was made, so the simulator and the process nemesis
//! share them.
//!
//! A write's outcome is `Acknowledged` (the node answered 2xx), `Failed` (a
//! refusal that stored nothing: 400/404/409) or `Unknown` (a timeout, a
//! 503, a connection lost): an unknown write may or may not have taken
//! effect, so it is never counted lost, and it may excuse what it could
//! have replaced.

use std::collections::{BTreeMap, BTreeSet};

/// How a write ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The node acknowledged it: it is durable on W replicas.
    Acknowledged,
    /// It was refused and stored nothing.
    Failed,
    /// No answer, or one that leaves its effect open.
    Unknown,
}

/// What a run of one workload under one fault came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Writes (adds, increments, updates) attempted.
    pub attempted: u64,
    /// Of those, acknowledged.
    pub acknowledged: u64,
    /// Refused, storing nothing.
    pub failed: u64,
    /// Outcome unknown.
    pub unknown: u64,
    /// Acknowledged and missing at the end without a write that may have
    /// replaced them.
    pub lost: u64,
    /// Found but never attempted (or, for the counter, read above the
    /// attempted sum).
    pub unexpected: u64,
    /// Reads during the run.
    pub reads: u64,
    /// Reads that missed something acknowledged before they began (a
    /// sloppy quorum may answer from replicas that missed it: measured).
    pub stale_reads: u64,
    /// The most live versions one read returned.
    pub max_siblings: u64,
}

/// A write that adds one unique element to a set (the set and register
/// workloads, and the cart's adds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    /// The element, unique in the run.
    pub element: String,
    /// How it ended.
    pub outcome: WriteOutcome,
    /// When the client sent it (ms).
    pub invoked_ms: u64,
    /// When the answer came, if it came.
    pub completed_ms: Option<u64>,
}

/// A read of a set: what it found, and when it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetRead {
    /// When the client sent it.
    pub invoked_ms: u64,
    /// The elements it found.
    pub found: BTreeSet<String>,
    /// Live versions it returned.
    pub versions: u64,
}

fn count_outcomes<'a>(outcomes: impl Iterator<Item = &'a WriteOutcome>, tally: &mut Tally) {
    for outcome in outcomes {
        tally.attempted += 1;
        match outcome {
            WriteOutcome::Acknowledged => tally.acknowledged += 1,
            WriteOutcome::Failed => tally.failed += 1,
            WriteOutcome::Unknown => tally.unknown += 1,
        }
    }
}

/// Reads that missed an element acknowledged before they were sent.
fn stale_set_reads(adds: &[Add], reads: &[SetRead]) -> u64 {
    reads
        .iter()
        .filter(|read| {
            adds.iter().any(|a| {
                a.outcome == WriteOutcome::Acknowledged
                    && a.completed_ms.is_some_and(|done| done < read.invoked_ms)
                    && !read.found.contains(&a.element)
            })
        })
        .count() as u64
}

/// The set check (Jepsen's *set*): every acknowledged element is in the
/// final read; every element found was attempted. Returns the tally and
/// the acknowledged elements lost (a loss is a broken guarantee for a
/// `set-union` table, and the measured cost of an `lww` one).
pub fn check_set(
    adds: &[Add],
    reads: &[SetRead],
    final_found: &BTreeSet<String>,
) -> (Tally, Vec<String>) {
    let mut tally = Tally::default();
    count_outcomes(adds.iter().map(|a| &a.outcome), &mut tally);
    let attempted: BTreeSet<&String> = adds.iter().map(|a| &a.element).collect();
    let lost: Vec<String> = adds
        .iter()
        .filter(|a| a.outcome == WriteOutcome::Acknowledged && !final_found.contains(&a.element))
        .map(|a| a.element.clone())
        .collect();
    tally.lost = lost.len() as u64;
    tally.unexpected = final_found
        .iter()
        .chain(reads.iter().flat_map(|r| &r.found))
        .filter(|e| !attempted.contains(e))
        .collect::<BTreeSet<_>>()
        .len() as u64;
    tally.reads = reads.len() as u64;
    tally.stale_reads = stale_set_reads(adds, reads);
    tally.max_siblings = reads.iter().map(|r| r.versions).max().unwrap_or(0);
    (tally, lost)
}

/// One increment of a G-counter: the client's actor's running total after
/// it. Totals of one actor only grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Increment {
    /// The client's actor.
    pub actor: String,
    /// By how much.
    pub delta: u64,
    /// The actor's total the write carried.
    pub total: u64,
    /// How it ended.
    pub outcome: WriteOutcome,
    /// When sent.
    pub invoked_ms: u64,
    /// When answered.
    pub completed_ms: Option<u64>,
}

/// A read of the counter: the per-actor map it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterRead {
    /// When sent.
    pub invoked_ms: u64,
    /// When answered.
    pub completed_ms: u64,
    /// actor → total.
    pub found: BTreeMap<String, u64>,
    /// Live versions it returned.
    pub versions: u64,
}

/// The counter check: no read exceeds the sum of what was attempted before
/// it returned (unexpected); a read below what was acknowledged before it
/// was sent is stale (measured); the final read holds every acknowledged
/// increment — per actor, at least the largest acknowledged total. Lost
/// increments are those acknowledged above the final total of their actor.
pub fn check_counter(
    increments: &[Increment],
    reads: &[CounterRead],
    final_found: &BTreeMap<String, u64>,
) -> (Tally, Vec<String>) {
    let mut tally = Tally::default();
    count_outcomes(increments.iter().map(|i| &i.outcome), &mut tally);
    // Per actor, the largest total acknowledged by `ms` and attempted by `ms`.
    let bound = |ms: u64, acknowledged_only: bool| -> u64 {
        let mut per_actor: BTreeMap<&str, u64> = BTreeMap::new();
        for inc in increments {
            let counts = if acknowledged_only {
                inc.outcome == WriteOutcome::Acknowledged
                    && inc.completed_ms.is_some_and(|done| done < ms)
            } else {
                inc.invoked_ms <= ms
            };
            if counts {
                let entry = per_actor.entry(&inc.actor).or_insert(0);
                *entry = (*entry).max(inc.total);
            }
        }
        per_actor.values().sum()
    };
    let sum = |map: &BTreeMap<String, u64>| map.values().sum::<u64>();
    let mut broken = Vec::new();
    for read in reads {
        let value = sum(&read.found);
        if value > bound(read.completed_ms, false) {
            tally.unexpected += 1;
            broken.push(format!(
                "read {value} at {} ms exceeds the {} attempted",
                read.completed_ms,
                bound(read.completed_ms, false)
            ));
        } else if value < bound(read.invoked_ms, true) {
            tally.stale_reads += 1;
        }
    }
    let attempted_total: BTreeMap<&str, u64> =
        increments.iter().fold(BTreeMap::new(), |mut m, inc| {
            let entry = m.entry(inc.actor.as_str()).or_insert(0);
            *entry = (*entry).max(inc.total);
            m
        });
    for (actor, &total) in final_found {
        if total > attempted_total.get(actor.as_str()).copied().unwrap_or(0) {
            tally.unexpected += 1;
            broken.push(format!(
                "final total {total} of {actor} was never attempted"
            ));
        }
    }
    for inc in increments {
        let held = final_found.get(&inc.actor).copied().unwrap_or(0);
        if inc.outcome == WriteOutcome::Acknowledged && inc.total > held {
            tally.lost += 1;
            broken.push(format!(
                "acknowledged total {} of {} lost: the final read holds {held}",
                inc.total, inc.actor
            ));
        }
    }
    tally.reads = reads.len() as u64;
    tally.max_siblings = reads.iter().map(|r| r.versions).max().unwrap_or(0);
    (tally, broken)
}

/// A removal from the cart: the item, and how the write ended. The write
/// carried the context of a read that showed the item, so it covered the
/// add that put it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The item removed.
    pub item: String,
    /// How it ended.
    pub outcome: WriteOutcome,
}

/// The cart check: every acknowledged item is in the final cart or was
/// removed by a write that may have taken effect (acknowledged or unknown)
/// and whose context covered it; every item found was added at some point.
pub fn check_cart(
    adds: &[Add],
    removals: &[Removal],
    reads: &[SetRead],
    final_items: &BTreeSet<String>,
) -> (Tally, Vec<String>) {
    let (mut tally, missing) = check_set(adds, reads, final_items);
    count_outcomes(removals.iter().map(|r| &r.outcome), &mut tally);
    let excused: BTreeSet<&String> = removals
        .iter()
        .filter(|r| r.outcome != WriteOutcome::Failed)
        .map(|r| &r.item)
        .collect();
    let lost: Vec<String> = missing
        .into_iter()
        .filter(|item| !excused.contains(item))
        .collect();
    tally.lost = lost.len() as u64;
    // A removed item is not stale when absent: count only reads that miss
    // an acknowledged item never removed.
    tally.stale_reads = reads
        .iter()
        .filter(|read| {
            adds.iter().any(|a| {
                a.outcome == WriteOutcome::Acknowledged
                    && a.completed_ms.is_some_and(|done| done < read.invoked_ms)
                    && !read.found.contains(&a.element)
                    && !removals.iter().any(|r| r.item == a.element)
            })
        })
        .count() as u64;
    (tally, lost)
}

/// One read-modify-write of the siblings-bound workload: the value written
/// and the values its read saw (what its context covers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The client that wrote it.
    pub writer: usize,
    /// The value, unique in the run.
    pub value: String,
    /// The values the read before it returned.
    pub saw: BTreeSet<String>,
    /// How it ended.
    pub outcome: WriteOutcome,
}

/// The siblings-bound check (riak_test's sibling_explosion): with
/// `writers` clients each writing with the context of its own last read,
/// a read returns at most `writers` live versions, plus each version in it
/// that its writer could not have covered: one whose write's outcome was
/// unknown, or one its writer wrote over later without having seen it (its
/// read came from replicas that missed it). Also: no acknowledged value is
/// missing at the end unless a write that may have taken effect saw it.
pub fn check_siblings(
    updates: &[Update],
    reads: &[SetRead],
    writers: u64,
    final_found: &BTreeSet<String>,
) -> (Tally, Vec<String>) {
    let mut tally = Tally::default();
    count_outcomes(updates.iter().map(|u| &u.outcome), &mut tally);
    let mut broken = Vec::new();
    tally.reads = reads.len() as u64;
    tally.max_siblings = reads.iter().map(|r| r.versions).max().unwrap_or(0);
    let by_value: std::collections::BTreeMap<&String, (usize, &Update)> = updates
        .iter()
        .enumerate()
        .map(|(i, u)| (&u.value, (i, u)))
        .collect();
    // A version its writer could not cover.
    let uncovered = |value: &String| -> bool {
        let Some(&(i, update)) = by_value.get(value) else {
            return false;
        };
        update.outcome == WriteOutcome::Unknown
            || updates[i + 1..]
                .iter()
                .any(|later| later.writer == update.writer && !later.saw.contains(value))
    };
    for read in reads {
        let bound = writers + read.found.iter().filter(|v| uncovered(v)).count() as u64;
        if read.versions > bound {
            broken.push(format!(
                "a read returned {} siblings; its bound is {bound} ({writers} writers, the rest versions their writers could not cover)",
                read.versions
            ));
        }
    }
    let written: BTreeSet<&String> = updates.iter().map(|u| &u.value).collect();
    tally.unexpected = final_found.iter().filter(|v| !written.contains(v)).count() as u64;
    for update in updates {
        if update.outcome != WriteOutcome::Acknowledged || final_found.contains(&update.value) {
            continue;
        }
        let covered = updates.iter().any(|later| {
            later.outcome != WriteOutcome::Failed && later.saw.contains(&update.value)
        });
        if !covered {
            tally.lost += 1;
            broken.push(format!(
                "acknowledged {} lost: no write saw it",
                update.value
            ));
        }
    }
    if tally.unexpected > 0 {
        broken.push(format!(
            "{} values found were never written",
            tally.unexpected
        ));
    }
    (tally, broken)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(element: &str, outcome: WriteOutcome, done: Option<u64>) -> Add {
        Add {
            element: element.into(),
            outcome,
            invoked_ms: 0,
            completed_ms: done,
        }
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_set_check_counts_a_missing_acknowledged_element_lost_and_an_unknown_one_not() {
        let adds = [
            add("a", WriteOutcome::Acknowledged, Some(5)),
            add("b", WriteOutcome::Unknown, None),
            add("c", WriteOutcome::Acknowledged, Some(6)),
        ];
        let reads = [SetRead {
            invoked_ms: 10,
            found: set(&["a"]),
            versions: 2,
        }];
        let (tally, lost) = check_set(&adds, &reads, &set(&["a", "z"]));
        assert_eq!(lost, vec!["c".to_string()]);
        assert_eq!(
            (
                tally.attempted,
                tally.acknowledged,
                tally.unknown,
                tally.lost
            ),
            (3, 2, 1, 1)
        );
        assert_eq!(tally.unexpected, 1, "z was never attempted");
        assert_eq!(
            tally.stale_reads, 1,
            "the read missed c, acknowledged before it"
        );
        assert_eq!(tally.max_siblings, 2);
    }

    #[test]
    fn the_counter_check_bounds_every_read_between_acknowledged_and_attempted() {
        let inc = |total, outcome, at, done| Increment {
            actor: "c1".into(),
            delta: 1,
            total,
            outcome,
            invoked_ms: at,
            completed_ms: done,
        };
        let increments = [
            inc(1, WriteOutcome::Acknowledged, 0, Some(2)),
            inc(2, WriteOutcome::Unknown, 3, None),
            inc(3, WriteOutcome::Acknowledged, 10, Some(12)),
        ];
        let read = |at, done, total| CounterRead {
            invoked_ms: at,
            completed_ms: done,
            found: [("c1".to_string(), total)].into_iter().collect(),
            versions: 1,
        };
        let reads = [read(4, 5, 2), read(4, 5, 0), read(4, 5, 3)];
        let final_found = [("c1".to_string(), 3)].into_iter().collect();
        let (tally, broken) = check_counter(&increments, &reads, &final_found);
        assert_eq!(tally.stale_reads, 1, "0 is below the acknowledged 1");
        assert_eq!(tally.unexpected, 1, "3 was not attempted by 5 ms");
        assert_eq!(tally.lost, 0);
        assert_eq!(broken.len(), 1);
        let short = [("c1".to_string(), 2)].into_iter().collect();
        let (tally, _) = check_counter(&increments, &[], &short);
        assert_eq!(tally.lost, 1, "the acknowledged total 3 is missing");
    }

    #[test]
    fn the_cart_check_excuses_an_item_a_covering_removal_may_have_taken() {
        let adds = [
            add("x", WriteOutcome::Acknowledged, Some(1)),
            add("y", WriteOutcome::Acknowledged, Some(1)),
            add("w", WriteOutcome::Acknowledged, Some(1)),
        ];
        let removals = [
            Removal {
                item: "x".into(),
                outcome: WriteOutcome::Unknown,
            },
            Removal {
                item: "w".into(),
                outcome: WriteOutcome::Failed,
            },
        ];
        let (tally, lost) = check_cart(&adds, &removals, &[], &set(&["y"]));
        assert_eq!(
            lost,
            vec!["w".to_string()],
            "a refused removal excuses nothing"
        );
        assert_eq!(tally.lost, 1);
        assert_eq!(tally.attempted, 5);
    }

    #[test]
    fn the_siblings_check_holds_reads_to_one_version_per_writer_plus_what_they_could_not_cover() {
        let update = |writer, value: &str, saw: &[&str], outcome| Update {
            writer,
            value: value.into(),
            saw: set(saw),
            outcome,
        };
        let updates = [
            update(0, "a1", &[], WriteOutcome::Acknowledged),
            update(1, "b1", &[], WriteOutcome::Acknowledged),
            update(0, "a2", &["a1", "b1"], WriteOutcome::Acknowledged),
            update(1, "b2", &[], WriteOutcome::Unknown),
            update(1, "b3", &["a2"], WriteOutcome::Acknowledged),
        ];
        let read = |found: &[&str]| SetRead {
            invoked_ms: 0,
            found: set(found),
            versions: found.len() as u64,
        };
        let (_, broken) = check_siblings(&updates, &[read(&["a2", "b1"])], 2, &set(&["a2", "b3"]));
        assert!(broken.is_empty(), "{broken:?}");
        // b1 was written over by b3 whose read missed it, and b2's outcome
        // is unknown: both count above the bound of two writers.
        let (_, broken) = check_siblings(
            &updates,
            &[read(&["a2", "b1", "b2", "b3"])],
            2,
            &set(&["a2", "b3"]),
        );
        assert!(broken.is_empty(), "{broken:?}");
        // Three versions whose writers covered what they saw: too many.
        let covered = [
            update(0, "a1", &[], WriteOutcome::Acknowledged),
            update(1, "b1", &[], WriteOutcome::Acknowledged),
            update(2, "c1", &[], WriteOutcome::Acknowledged),
        ];
        let (_, broken) = check_siblings(
            &covered,
            &[read(&["a1", "b1", "c1"])],
            2,
            &set(&["a1", "b1", "c1"]),
        );
        assert_eq!(
            broken.len(),
            1,
            "three siblings from two writers: {broken:?}"
        );
        let (tally, broken) = check_siblings(&updates[..2], &[], 2, &set(&["b1"]));
        assert_eq!(tally.lost, 1, "a1 was acknowledged and no write saw it");
        assert_eq!(broken.len(), 1);
    }
}
