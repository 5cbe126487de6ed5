//! Whole-cluster scenarios under the simulator. A failure names its seed;
//! `CAIRN_SIM_SEED=<seed>` replays just that seed.

use std::collections::{BTreeMap, BTreeSet};

use super::check::{self, Attempt};
use super::{delete_op, get, put, NetworkFaults, Rng, Sim};
use crate::core::causal::ContextError;
use crate::core::msg::{ClientOp, ClientReply, PluginFailure};
use crate::core::table::{MergeMode, TablePatch};
use crate::core::token::ClientContext;
use crate::core::types::TableName;

pub(super) const TIMEOUT_MS: u64 = 5_000;

pub(super) fn siblings_table(sim: &mut Sim) {
    let patch = TablePatch {
        merge: Some(MergeMode::Siblings),
        ..Default::default()
    };
    sim.create_table(0, "ev", patch);
}

pub(super) fn values(reply: &Option<ClientReply>) -> BTreeSet<String> {
    match reply {
        Some(ClientReply::Read { versions, .. }) => versions
            .iter()
            .map(|v| String::from_utf8_lossy(v.value.as_deref().unwrap_or_default()).into_owned())
            .collect(),
        other => panic!("not a read: {other:?}"),
    }
}

pub(super) fn read_context(reply: &Option<ClientReply>) -> Option<ClientContext> {
    match reply {
        Some(ClientReply::Read { context, .. }) => context.clone(),
        other => panic!("not a read: {other:?}"),
    }
}

pub(super) fn written(reply: &Option<ClientReply>) -> ClientContext {
    match reply {
        Some(ClientReply::Written { context }) => context.clone(),
        other => panic!("not written: {other:?}"),
    }
}

/// The same write, acknowledged only once every replica has it.
pub(super) fn all_replicas(op: ClientOp) -> ClientOp {
    with_w(op, 3)
}

/// The same write with `?w=quorum`; other operations unchanged.
pub(super) fn with_w(mut op: ClientOp, quorum: u8) -> ClientOp {
    if let ClientOp::Put { w, .. } = &mut op {
        *w = Some(quorum);
    }
    op
}

pub(super) fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Seeds to run: `CAIRN_SIM_SEED` alone, else `count` seeds from `base`.
fn seeds(base: u64, count: u64) -> Vec<u64> {
    match std::env::var("CAIRN_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => vec![seed],
        // `CAIRN_SIM_SEEDS=N` runs N seeds instead of the CI count (long sweeps).
        None => {
            let count = std::env::var("CAIRN_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(count);
            (base..base + count).collect()
        }
    }
}

fn for_each_seed(base: u64, count: u64, scenario: impl Fn(u64) + std::panic::RefUnwindSafe) {
    for seed in seeds(base, count) {
        if std::panic::catch_unwind(|| scenario(seed)).is_err() {
            panic!("simulation failed; replay with CAIRN_SIM_SEED={seed}");
        }
    }
}

fn reordering(sim: &mut Sim) {
    sim.faults = NetworkFaults {
        loss_per_mille: 0,
        delay_ms_min: 1,
        delay_ms_max: 30,
        duplicate_per_mille: 0,
    };
}

#[test]
fn blind_writes_through_one_coordinator_become_siblings() {
    for_each_seed(100, 10, |seed| {
        let mut sim = Sim::new(seed, 3);
        siblings_table(&mut sim);
        reordering(&mut sim);
        let first = sim.submit(1, put("ev", "k", "one", None));
        let second = sim.submit(1, put("ev", "k", "two", None));
        sim.run_for(200);
        assert!(matches!(
            sim.reply(first),
            Some(ClientReply::Written { .. })
        ));
        assert!(matches!(
            sim.reply(second),
            Some(ClientReply::Written { .. })
        ));
        let read = sim.call(2, get("ev", "k", Some(3)), TIMEOUT_MS);
        assert_eq!(values(&read), set(&["one", "two"]), "seed {seed}");
    });
}

#[test]
fn a_context_write_supersedes_exactly_what_it_saw() {
    for_each_seed(200, 10, |seed| {
        let mut sim = Sim::new(seed, 3);
        siblings_table(&mut sim);
        reordering(&mut sim);
        let one = sim.call(0, put("ev", "k", "one", None), TIMEOUT_MS);
        let seen = written(&one);
        sim.call(1, put("ev", "k", "two", None), TIMEOUT_MS);
        let three = sim.call(2, put("ev", "k", "three", Some(seen)), TIMEOUT_MS);
        sim.run_for(100);
        let read = sim.call(0, get("ev", "k", Some(3)), TIMEOUT_MS);
        assert_eq!(values(&read), set(&["three", "two"]), "seed {seed}");

        // The returned context covers the request's context plus the new version only.
        let back = written(&three);
        sim.call(1, put("ev", "k", "four", Some(back)), TIMEOUT_MS);
        sim.run_for(100);
        let read = sim.call(2, get("ev", "k", Some(3)), TIMEOUT_MS);
        assert_eq!(values(&read), set(&["four", "two"]), "seed {seed}");

        // A read's context covers every sibling.
        let all = read_context(&read);
        sim.call(0, put("ev", "k", "merged", all), TIMEOUT_MS);
        sim.run_for(100);
        assert_eq!(
            values(&sim.call(1, get("ev", "k", Some(3)), TIMEOUT_MS)),
            set(&["merged"])
        );
    });
}

#[test]
fn a_wiped_node_never_reuses_a_dot() {
    let mut sim = Sim::new(7, 3);
    siblings_table(&mut sim);
    let op = |v: &str| all_replicas(put("ev", "k", v, None));
    written(&sim.call(0, op("before"), TIMEOUT_MS));
    let old_epoch = sim.epoch(0);
    sim.wipe(0);
    // A seed refuses an id it heard from within 10 s.
    sim.run_for(11_000);
    sim.restart(0);
    sim.run_for(3_000);
    assert!(sim.epoch(0) > old_epoch, "a wiped node takes a fresh epoch");
    written(&sim.call(0, op("after"), TIMEOUT_MS));
    let read = sim.call(1, get("ev", "k", Some(3)), TIMEOUT_MS);
    assert_eq!(values(&read), set(&["after", "before"]));
}

#[test]
fn a_node_that_crashed_before_its_commit_never_reuses_a_dot() {
    let mut sim = Sim::new(8, 3);
    siblings_table(&mut sim);
    let op = |v: &str| all_replicas(put("ev", "k", v, None));
    sim.crash_during_next_commit(0);
    sim.submit(0, op("sent-then-crashed"));
    sim.run_for(100);
    assert!(!sim.is_up(0));
    assert!(
        sim.local_object(1, "ev", b"k").is_some(),
        "the replicas stored it"
    );
    sim.restart(0);
    sim.run_for(2_000);
    written(&sim.call(0, op("after-restart"), TIMEOUT_MS));
    let read = sim.call(1, get("ev", "k", Some(3)), TIMEOUT_MS);
    assert_eq!(values(&read), set(&["after-restart", "sent-then-crashed"]));
}

#[test]
fn a_node_whose_commit_fails_answers_with_the_failure_goes_on_and_never_reuses_a_dot() {
    let mut sim = Sim::new(8, 3);
    siblings_table(&mut sim);
    let op = |v: &str| all_replicas(put("ev", "k", v, None));
    let epoch = sim.epoch(0);
    sim.fail_next_commit(0);
    let reply = sim.call(0, op("lost-here"), TIMEOUT_MS);
    // W=3 needed the coordinator's own copy: the write fails, at once.
    assert!(
        matches!(reply, Some(ClientReply::QuorumNotReached { .. })),
        "{reply:?}"
    );
    assert!(sim.is_up(0), "the node went on");
    assert!(sim.epoch(0) > epoch, "a fresh epoch");
    assert!(
        sim.local_object(1, "ev", b"k").is_some(),
        "the other replicas stored it"
    );
    // The next write through it mints a dot the replicas have not seen: both
    // values stay (a reused dot would make them drop the new one).
    written(&sim.call(0, op("after-failure"), TIMEOUT_MS));
    let read = sim.call(1, get("ev", "k", Some(3)), TIMEOUT_MS);
    assert_eq!(values(&read), set(&["after-failure", "lost-here"]));
}

#[test]
fn a_read_of_a_copy_a_failed_commit_lost_fails_instead_of_answering_it() {
    let mut sim = Sim::new(11, 3);
    siblings_table(&mut sim);
    sim.set_commit_ms(0, 50, 50);
    // Node 1 takes a write the others never hear of: it exists nowhere else.
    sim.partition(0, 1);
    sim.partition(0, 2);
    let write = sim.submit(0, with_w(put("ev", "k", "lost", None), 1));
    sim.heal();
    sim.fail_next_commit(0);
    // A read there meets its own copy at once and the others' answers only
    // after the commit failed (slow links): it must not answer the lost value.
    sim.faults = NetworkFaults {
        loss_per_mille: 0,
        delay_ms_min: 100,
        delay_ms_max: 100,
        duplicate_per_mille: 0,
    };
    let read = sim.submit(0, get("ev", "k", Some(2)));
    sim.run_for(TIMEOUT_MS + 500);
    assert!(
        matches!(sim.reply(read), Some(ClientReply::Unavailable(_))),
        "{:?}",
        sim.reply(read)
    );
    assert!(
        matches!(
            sim.reply(write),
            Some(ClientReply::QuorumNotReached { acked: 0, .. })
        ),
        "{:?}",
        sim.reply(write)
    );
    let again = sim.call(0, get("ev", "k", Some(3)), TIMEOUT_MS);
    assert!(values(&again).is_empty(), "{again:?}");
}

#[test]
fn a_context_naming_dots_a_crashed_coordinator_forgot_supersedes_only_them() {
    let mut sim = Sim::new(9, 3);
    siblings_table(&mut sim);
    // node1 coordinates a write, reaches the replicas, and crashes before its commit.
    sim.crash_during_next_commit(0);
    sim.submit(0, put("ev", "k", "forgotten", None));
    sim.run_for(100);
    let read = sim.call(1, get("ev", "k", Some(2)), TIMEOUT_MS);
    let context = read_context(&read);
    let forgotten_epoch = context
        .as_ref()
        .and_then(|c| {
            c.seen
                .max_epoch_of(&crate::core::types::NodeId::new("node1").unwrap())
        })
        .expect("the read saw node1's dot");
    sim.restart(0);
    sim.run_for(2_000);
    // The client writes through node1 with a context naming node1's forgotten dot.
    let reply = sim.call(0, put("ev", "k", "new", context), TIMEOUT_MS);
    let minted = written(&reply);
    assert!(
        minted
            .seen
            .max_epoch_of(&crate::core::types::NodeId::new("node1").unwrap())
            > Some(forgotten_epoch),
        "the new version was minted under the epoch of the forgotten one"
    );
    sim.run_for(100);
    let read = sim.call(2, get("ev", "k", Some(3)), TIMEOUT_MS);
    assert_eq!(
        values(&read),
        set(&["new"]),
        "the context superseded the forgotten version, nothing else"
    );
}

#[test]
fn a_context_naming_counters_of_the_current_epoch_above_the_local_copy_forces_a_new_epoch() {
    let mut sim = Sim::new(10, 3);
    siblings_table(&mut sim);
    written(&sim.call(0, put("ev", "k", "v", None), TIMEOUT_MS));
    let epoch = sim.epoch(0).unwrap();
    // A context (say, from a backup restored under the node) naming a
    // counter of node1's current actor that node1's copy never reached.
    let mut seen = crate::core::causal::CausalContext::new();
    seen.add(crate::core::causal::Dot {
        actor: crate::core::causal::Actor {
            node: crate::core::types::NodeId::new("node1").unwrap(),
            epoch,
        },
        counter: 1_000,
    });
    let context = ClientContext {
        seen,
        max_timestamp_ms: 0,
    };
    written(&sim.call(0, put("ev", "k", "w", Some(context)), TIMEOUT_MS));
    assert!(
        sim.epoch(0).unwrap() > epoch,
        "the coordinator kept its epoch"
    );
    let read = sim.call(1, get("ev", "k", Some(3)), TIMEOUT_MS);
    assert_eq!(values(&read), set(&["v", "w"]));
}

#[test]
fn answers_wait_for_the_batch_they_vouch_for_and_are_lost_with_it() {
    let mut sim = Sim::new(10, 3);
    siblings_table(&mut sim);
    // Slow disks: a commit takes 50 ms while messages take 1 ms.
    for node in 0..3 {
        sim.set_commit_ms(node, 50, 50);
    }
    let id = sim.submit(0, put("ev", "k", "slow", None));
    sim.run_for(10);
    assert!(
        (0..3).all(|n| sim.local_object(n, "ev", b"k").is_some()),
        "every replica staged the write"
    );
    assert!(sim.reply(id).is_none(), "no ack before the commits finish");
    // A read of the not yet durable copy waits for it too.
    let read = sim.submit(0, get("ev", "k", Some(1)));
    sim.run_for(10);
    assert!(sim.reply(read).is_none(), "no read of an uncommitted copy");
    // Every replica crashes while its batch is being committed: the write is
    // gone, and it was never acknowledged.
    for node in 0..3 {
        sim.crash(node);
    }
    for node in 0..3 {
        sim.set_commit_ms(node, 1, 2);
        sim.restart(node);
    }
    sim.run_for(3_000);
    assert!(
        sim.reply(id).is_none(),
        "the lost write was never acknowledged"
    );
    assert!(sim.reply(read).is_none(), "the lost copy was never read");
    let after = sim.call(1, get("ev", "k", Some(3)), TIMEOUT_MS);
    assert_eq!(values(&after), BTreeSet::new());

    // Without the crash the same write is acknowledged once two commits are done.
    for node in 0..3 {
        sim.set_commit_ms(node, 50, 50);
    }
    let id = sim.submit(0, put("ev", "k", "slow", None));
    sim.run_for(45);
    assert!(sim.reply(id).is_none(), "no ack before the commits finish");
    sim.run_for(60);
    written(&sim.reply(id).cloned());

    // A read of a copy already durable does not wait for other keys' commits.
    sim.run_for(200);
    sim.submit(0, put("ev", "other", "slow", None));
    sim.run_for(2);
    let read = sim.submit(0, get("ev", "k", Some(2)));
    sim.run_for(5);
    assert_eq!(values(&sim.reply(read).cloned()), set(&["slow"]));
}

#[test]
fn a_write_is_answered_once_any_two_replicas_have_it_durably() {
    let mut sim = Sim::new(11, 3);
    siblings_table(&mut sim);
    // The coordinator's disk is slow; the other two are fast.
    sim.set_commit_ms(0, 200, 200);
    let id = sim.submit(0, put("ev", "k", "quick", None));
    sim.run_for(20);
    let context = written(&sim.reply(id).cloned());
    assert!(!context.is_empty());
    // With w=3 it waits for the slow disk too.
    let id = sim.submit(0, all_replicas(put("ev", "k", "all", None)));
    sim.run_for(20);
    assert!(
        sim.reply(id).is_none(),
        "w=3 needs the coordinator's own commit"
    );
    sim.run_for(400);
    written(&sim.reply(id).cloned());
}

/// How often each node of the fault test starts an anti-entropy exchange.
const ANTIENTROPY_EVERY_MS: u64 = 100;
/// How long the fault test lets anti-entropy run after healing before it
/// compares replicas without reads.
const ANTIENTROPY_SETTLE_MS: u64 = 30_000;

/// Seeds the fault test runs in CI (every one replays with `CAIRN_SIM_SEED`).
const FAULT_SEEDS: u64 = 200;
/// The fault sweep's tombstone grace: the least `cairn serve` accepts with
/// the simulator's 2 s request timeout, so collection runs within the run
/// (after the fault phase, mostly: faults run about as long).
const TOMBSTONE_GRACE_MS: u64 = 5_000;

static SEEDS_WITH_ACKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static CART_WORDS_CHECKED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static TOMBSTONES_COLLECTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn hostile_network() -> NetworkFaults {
    NetworkFaults {
        loss_per_mille: 30,
        delay_ms_min: 1,
        delay_ms_max: 40,
        duplicate_per_mille: 20,
    }
}

/// A client's token as it travels over HTTP: encoded for the key it was read
/// from, decoded (or refused) for the key it is sent with.
fn through_http(
    context: Option<ClientContext>,
    read_key: &str,
    write_key: &str,
) -> Result<Option<ClientContext>, ContextError> {
    let table = TableName::new("ev").unwrap();
    let secret = crate::core::token::TokenKey([9; 32]);
    context
        .map(|c| {
            let token = c.encode(&table, read_key.as_bytes(), &secret);
            ClientContext::decode(&token, &table, write_key.as_bytes(), &secret)
        })
        .transpose()
}

/// The Jepsen-style set check: under loss, duplication, reordering, crashes,
/// clean restarts, partitions (pairs, one-way, halves), clock skew and
/// jumps, tombstone collection, with deletes and
/// foreign contexts in the mix, every acknowledged write to a siblings table
/// is found after healing, unless a write that took effect and whose context
/// covered it (or a delete without context issued after it) replaced it; and
/// read repair leaves every replica of a key identical.
#[test]
fn acknowledged_writes_to_siblings_tables_survive_faults() {
    for_each_seed(1_000, FAULT_SEEDS, |seed| {
        let mut rng = Rng::new(seed ^ 0x5EED);
        let count = 3 + rng.below(3) as usize;
        // A short grace, so tombstones are collected while faults go on.
        let mut sim =
            Sim::with_tombstone_grace(seed, count, ANTIENTROPY_EVERY_MS, TOMBSTONE_GRACE_MS);
        siblings_table(&mut sim);
        // A set-union plugin table (nothing acknowledged may go missing from
        // the merged set) and an lww table (loss by design; replicas converge).
        sim.reconciler = union;
        plugin_table(&mut sim);
        let lww = TablePatch {
            merge: Some(MergeMode::Lww),
            ..Default::default()
        };
        sim.create_table(0, "reg", lww);
        let mut cart_attempts: Vec<(u64, &str, String)> = Vec::new();
        sim.faults = hostile_network();
        // Commits slow enough that crashes often land while a batch is in flight.
        for node in 0..count {
            sim.set_commit_ms(node, 1, 15);
            sim.set_clock_offset(node, rng.below(60_000) as i64 - 30_000);
        }
        // Deletes go to two keys of their own: whether a delete that was not
        // acknowledged applied cannot be told from outside, so only there may
        // one excuse a missing value; on the others every loss is a failure.
        let keys = ["a", "b", "c", "d", "x", "y"];
        let deletable = |key: &str| key == "x" || key == "y";
        let mut attempts: Vec<(u64, Attempt)> = Vec::new();
        let mut wiped = false;
        for step in 0..200 {
            sim.run_for(rng.below(25));
            if let Err(broken) = check::within_bounds(&sim) {
                panic!("seed {seed}: step {step}: {broken}");
            }
            let roll = rng.below(100);
            let node = rng.below(count as u64) as usize;
            if std::env::var("CAIRN_SIM_DEBUG").is_ok() && roll < 20 {
                let epochs: Vec<_> = (0..count).map(|n| sim.epoch(n)).collect();
                eprintln!(
                    "step {step}: roll {roll} node{} epochs {epochs:?}",
                    node + 1
                );
            }
            if roll < 1 && !wiped {
                // Fewer than W copies of any write may lose their data dir.
                sim.wipe(node);
                wiped = true;
            } else if roll < 4 {
                sim.crash(node);
            } else if roll < 5 {
                sim.crash_during_next_commit(node);
            } else if roll < 6 {
                sim.fail_next_commit(node);
            } else if roll < 7 {
                sim.stop_cleanly(node);
            } else if roll < 14 {
                sim.restart(node);
            } else if roll < 15 {
                let other = rng.below(count as u64) as usize;
                sim.partition(node, other);
            } else if roll < 16 {
                // One way: `other` stops hearing `node`, which still hears it.
                let other = rng.below(count as u64) as usize;
                sim.partition_one_way(node, other);
            } else if roll < 17 {
                // Halves: a random side of one or two nodes against the rest.
                let mut side = vec![node];
                let other = rng.below(count as u64) as usize;
                if other != node && rng.chance(500) {
                    side.push(other);
                }
                sim.split(&side);
            } else if roll < 18 {
                sim.heal();
                sim.faults = hostile_network();
            } else if roll < 19 {
                // A clock jump, forward or back.
                sim.set_clock_offset(node, rng.below(120_000) as i64 - 60_000);
            } else if roll < 20 {
                // SIGSTOP, or SIGCONT when it is stopped already.
                if sim.is_paused(node) {
                    sim.resume(node);
                } else {
                    sim.pause(node);
                }
            } else if sim.is_up(node) && rng.chance(100) {
                // Read the set, add a word, write it back with the context.
                let key = ["p", "q"][rng.below(2) as usize];
                let word = format!("{key}{step}");
                let read = sim.call(node, get("carts", key, None), TIMEOUT_MS);
                let (mut words, context) = match &read {
                    Some(ClientReply::Read { context, .. }) => (words_of(&read), context.clone()),
                    _ => (BTreeSet::new(), None),
                };
                words.insert(word.clone());
                if !sim.is_up(node) {
                    continue;
                }
                let value: Vec<String> = words.into_iter().collect();
                let id = sim.submit(node, put("carts", key, &value.join(","), context));
                cart_attempts.push((id, key, word));
            } else if sim.is_up(node) && rng.chance(100) {
                let value = format!("r{step}");
                sim.submit(node, put("reg", "r", &value, None));
            } else if sim.is_up(node) {
                let key = keys[rng.below(keys.len() as u64) as usize].to_owned();
                let delete = deletable(&key) && rng.chance(300);
                let (context, supersedes) = if rng.chance(500) {
                    // Now and then the client sends a context read from another key.
                    let read_key = if rng.chance(100) {
                        keys[rng.below(keys.len() as u64) as usize].to_owned()
                    } else {
                        key.clone()
                    };
                    let read = sim.call(node, get("ev", &read_key, None), TIMEOUT_MS);
                    match &read {
                        Some(ClientReply::Read { .. }) => {
                            match through_http(read_context(&read), &read_key, &key) {
                                Ok(context) => (context, values(&read)),
                                Err(refused) => {
                                    assert_ne!(
                                        read_key, key,
                                        "seed {seed}: own token refused: {refused}"
                                    );
                                    continue;
                                }
                            }
                        }
                        _ => (None, BTreeSet::new()),
                    }
                } else {
                    (None, BTreeSet::new())
                };
                if !sim.is_up(node) {
                    continue;
                }
                let blind_delete = delete && context.is_none();
                let (value, op) = if delete {
                    (None, delete_op("ev", &key, context))
                } else {
                    let value = format!("{key}-{step}");
                    let op = put("ev", &key, &value, context);
                    (Some(value), op)
                };
                let id = sim.submit(node, op);
                if std::env::var("CAIRN_SIM_DEBUG").is_ok() {
                    eprintln!(
                        "step {step}: {key} {value:?} via node{} epoch {:?}",
                        node + 1,
                        sim.epoch(node)
                    );
                }
                attempts.push((
                    id,
                    Attempt {
                        key,
                        value,
                        acknowledged: false,
                        supersedes,
                        blind_delete,
                        submitted_ms: sim.now_ms(),
                        acknowledged_ms: None,
                    },
                ));
            }
        }
        // Liveness phase: heal everything, resume what is stopped, and let
        // requests finish. A node may stop by itself on resuming (a wiped
        // node refused by its seed): like a supervisor, start it again.
        sim.heal();
        for node in 0..count {
            sim.resume(node);
        }
        sim.run_for(100);
        if wiped {
            // A seed refuses a wiped node whose id it heard within 10 s.
            sim.run_for(11_000);
        }
        for _ in 0..3 {
            for node in 0..count {
                sim.restart(node);
            }
            sim.run_for(6_000);
        }
        // Anti-entropy alone, before any client read: every replica of
        // every key, in every table, holds the same object.
        sim.run_for(ANTIENTROPY_SETTLE_MS);
        let every_key = ["a", "b", "c", "d", "x", "y"]
            .map(|k| ("ev", k))
            .into_iter()
            .chain([("carts", "p"), ("carts", "q"), ("reg", "r")]);
        for (table, key) in every_key {
            let replicas = sim.replicas_of(table, key);
            if let Err(diverged) = check::converged(&mut sim, table, key, replicas) {
                panic!("seed {seed}: without reads: {diverged}");
            }
        }
        for (id, attempt) in &mut attempts {
            attempt.acknowledged = matches!(sim.reply(*id), Some(ClientReply::Written { .. }));
            attempt.acknowledged_ms = sim.replied_at(*id).filter(|_| attempt.acknowledged);
        }
        let acknowledged = attempts.iter().filter(|(_, a)| a.acknowledged).count();
        if acknowledged > 0 {
            SEEDS_WITH_ACKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for key in keys {
            let read = sim.call(0, get("ev", key, Some(3)), TIMEOUT_MS);
            found.insert(
                key.to_owned(),
                match &read {
                    Some(ClientReply::Read { .. }) => values(&read),
                    other => panic!("seed {seed}: final read of {key} failed: {other:?}"),
                },
            );
        }
        let attempts: Vec<Attempt> = attempts.into_iter().map(|(_, a)| a).collect();
        if let Some(lost) = check::lost_acknowledged(&attempts, &found).first() {
            if std::env::var("CAIRN_SIM_DEBUG").is_ok() {
                for n in 0..count {
                    eprintln!(
                        "node{} holds {:?}",
                        n + 1,
                        sim.local_object(n, "ev", lost.key.as_bytes())
                    );
                }
                for a in attempts.iter().filter(|a| a.key == lost.key) {
                    eprintln!(
                        "{:?} acked={} supersedes={:?} blind_delete={}",
                        a.value, a.acknowledged, a.supersedes, a.blind_delete
                    );
                }
            }
            panic!(
                "seed {seed}: acknowledged {:?} lost from {}: found {:?}",
                lost.value, lost.key, found[&lost.key]
            );
        }
        if let Some((delete, value)) = check::resurrected(&attempts, &found).first() {
            if std::env::var("CAIRN_SIM_DEBUG").is_ok() {
                for n in 0..count {
                    eprintln!(
                        "node{} holds {:?}",
                        n + 1,
                        sim.local_object(n, "ev", delete.key.as_bytes())
                    );
                }
                for a in attempts.iter().filter(|a| a.key == delete.key) {
                    eprintln!(
                        "{:?} acked={} supersedes={:?} blind_delete={} at {} acked at {:?}",
                        a.value,
                        a.acknowledged,
                        a.supersedes,
                        a.blind_delete,
                        a.submitted_ms,
                        a.acknowledged_ms
                    );
                }
            }
            panic!(
                "seed {seed}: {value} came back to {} after an acknowledged delete covered it",
                delete.key
            );
        }
        // The set-union table: every acknowledged word is in the merged set.
        for key in ["p", "q"] {
            let read = sim.call(0, get("carts", key, Some(3)), TIMEOUT_MS);
            let words = match &read {
                Some(ClientReply::Read { .. }) => words_of(&read),
                other => panic!("seed {seed}: final read of cart {key} failed: {other:?}"),
            };
            for (id, _, word) in cart_attempts.iter().filter(|(_, k, _)| *k == key) {
                if matches!(sim.reply(*id), Some(ClientReply::Written { .. })) {
                    CART_WORDS_CHECKED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    assert!(
                        words.contains(word),
                        "seed {seed}: acknowledged {word} lost from cart {key}: {words:?}"
                    );
                }
            }
        }
        // Read repair as well: reads through every
        // node leave every replica of a key identical, in every table.
        let all_keys: Vec<(&str, &str)> = keys
            .iter()
            .map(|k| ("ev", *k))
            .chain([("carts", "p"), ("carts", "q"), ("reg", "r")])
            .collect();
        for (table, key) in &all_keys {
            for node in 0..count {
                sim.call(node, get(table, key, Some(3)), TIMEOUT_MS);
            }
        }
        sim.run_for(1_000);
        for (table, key) in &all_keys {
            let replicas = sim.replicas_of(table, key);
            assert_eq!(
                replicas.len(),
                3.min(count),
                "seed {seed}: replicas of {key}"
            );
            let result = if *table == "ev" && found[*key].is_empty() {
                // Never written or deleted: a replica may hold a tombstone
                // or nothing at all, so only the copies held must agree.
                let holding: Vec<usize> = (0..count)
                    .filter(|&n| sim.local_object(n, table, key.as_bytes()).is_some())
                    .collect();
                check::converged(&mut sim, table, key, holding)
            } else {
                check::converged(&mut sim, table, key, replicas)
            };
            if let Err(diverged) = result {
                panic!("seed {seed}: {diverged}");
            }
        }
        // Nothing leaks: once clients are done and every deadline has
        // passed, nothing is left in flight, queued or held.
        sim.run_for(2 * TIMEOUT_MS);
        let collected: u64 = (0..count)
            .filter_map(|n| sim.node(n))
            .map(|n| n.stats().reap.collected)
            .sum();
        TOMBSTONES_COLLECTED.fetch_add(collected, std::sync::atomic::Ordering::Relaxed);
        if let Err(leak) = check::drained(&sim) {
            panic!("seed {seed}: {leak}");
        }
    });
    let runs = seeds(1_000, FAULT_SEEDS).len() as u64;
    let with_acks = SEEDS_WITH_ACKS.load(std::sync::atomic::Ordering::Relaxed);
    assert!(with_acks * 10 >= runs * 9, "only {with_acks} of {runs} runs acknowledged anything: the faults are too harsh to test much");
    let collected = TOMBSTONES_COLLECTED.load(std::sync::atomic::Ordering::Relaxed);
    // Counted after the liveness phase's restarts only (stats start afresh
    // with each incarnation), so this undercounts.
    assert!(
        collected * 2 >= runs,
        "only {collected} tombstones collected in {runs} runs: collection is barely tested"
    );
    let carts = CART_WORDS_CHECKED.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        carts >= runs,
        "only {carts} acknowledged cart words in {runs} runs"
    );
}

/// The words of every version a read returned (comma-separated sets).
fn words_of(reply: &Option<ClientReply>) -> BTreeSet<String> {
    values(reply)
        .iter()
        .flat_map(|v| v.split(',').map(str::to_owned).collect::<Vec<_>>())
        .filter(|w| !w.is_empty())
        .collect()
}

/// A native stand-in for set-union: comma-separated words, merged sorted.
pub(super) fn union(
    input: &cairn_sdk::ReconcileInput,
) -> Result<cairn_sdk::Resolution, PluginFailure> {
    let mut words: Vec<String> = input
        .siblings
        .iter()
        .flat_map(|s| {
            String::from_utf8_lossy(&s.value)
                .split(',')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    words.sort();
    words.dedup();
    Ok(cairn_sdk::Resolution::merged(words.join(",").into_bytes()))
}

pub(super) fn plugin_table(sim: &mut Sim) {
    plugin_table_storing(sim, false);
}

/// Table `carts` merged by plugin `union`, which also chooses each object's
/// engine when `storage_plugin` is set. The simulator's reconciler stands in
/// for the module's code.
pub(super) fn plugin_table_storing(sim: &mut Sim, storage_plugin: bool) {
    let exports: &[&str] = if storage_plugin {
        &["reconcile", "select_storage"]
    } else {
        &["reconcile"]
    };
    sim.upload_plugin(0, "union", exports, 1);
    sim.run_for(1_000);
    let mut patch = TablePatch {
        merge: Some(MergeMode::Plugin),
        plugin: Some("union".into()),
        ..Default::default()
    };
    if storage_plugin {
        patch.storage = Some(crate::core::table::StorageKind::Plugin);
        patch.storage_plugin = Some("union".into());
    }
    sim.create_table(0, "carts", patch);
}

pub(super) fn merged_reply(reply: &Option<ClientReply>) -> (String, Option<u32>) {
    match reply {
        Some(ClientReply::Read {
            versions, merged, ..
        }) if versions.len() == 1 => (
            String::from_utf8_lossy(versions[0].value.as_deref().unwrap_or_default()).into_owned(),
            *merged,
        ),
        other => panic!("not a single value: {other:?}"),
    }
}

#[test]
fn concurrent_readers_of_one_key_mint_one_merge() {
    let mut sim = Sim::new(31, 3);
    sim.reconciler = union;
    plugin_table(&mut sim);
    written(&sim.call(0, put("carts", "k", "a", None), TIMEOUT_MS));
    written(&sim.call(1, put("carts", "k", "b", None), TIMEOUT_MS));
    let first = sim.submit(2, get("carts", "k", Some(3)));
    let second = sim.submit(2, get("carts", "k", Some(3)));
    sim.run_for(500);
    for id in [first, second] {
        assert_eq!(
            merged_reply(&sim.reply(id).cloned()),
            ("a,b".to_owned(), Some(2))
        );
    }
    sim.run_for(500);
    for node in 0..3 {
        let object = sim.local_object(node, "carts", b"k").unwrap();
        assert_eq!(
            object.live_count(),
            1,
            "node {node}: one merge, not two concurrent ones"
        );
    }
}

#[test]
fn a_write_concurrent_with_a_merge_survives_it() {
    let mut sim = Sim::new(32, 3);
    sim.reconciler = union;
    plugin_table(&mut sim);
    written(&sim.call(0, put("carts", "k", "a", None), TIMEOUT_MS));
    written(&sim.call(1, put("carts", "k", "b", None), TIMEOUT_MS));
    let read = sim.submit(2, get("carts", "k", Some(3)));
    // Lands while the merge is being computed and written back.
    sim.submit(0, all_replicas(put("carts", "k", "c", None)));
    sim.run_for(500);
    assert!(sim.reply(read).is_some());
    let after = sim.call(1, get("carts", "k", Some(3)), TIMEOUT_MS);
    assert_eq!(
        merged_reply(&after).0,
        "a,b,c",
        "the merge superseded exactly what it merged"
    );
}

#[test]
fn a_failing_plugin_answers_siblings_and_discards_nothing() {
    let mut sim = Sim::new(33, 3);
    plugin_table(&mut sim); // the default reconciler fails: "unavailable"
    written(&sim.call(0, put("carts", "k", "a", None), TIMEOUT_MS));
    written(&sim.call(1, put("carts", "k", "b", None), TIMEOUT_MS));
    let read = sim.call(2, get("carts", "k", Some(3)), TIMEOUT_MS);
    match &read {
        Some(ClientReply::Read {
            plugin_error: Some(error),
            versions,
            ..
        }) => {
            assert!(matches!(error, PluginFailure::Unavailable(_)), "{error}");
            assert_eq!(versions.len(), 2);
        }
        other => panic!("expected siblings with an error: {other:?}"),
    }
    assert_eq!(values(&read), set(&["a", "b"]));
}

#[test]
fn a_write_past_64_live_versions_is_refused_and_stores_nothing() {
    let mut sim = Sim::new(41, 3);
    siblings_table(&mut sim);
    for i in 0..64 {
        written(&sim.call(i % 3, put("ev", "k", &format!("v{i}"), None), TIMEOUT_MS));
    }
    match sim.call(0, put("ev", "k", "one-too-many", None), TIMEOUT_MS) {
        Some(ClientReply::TooManySiblings { siblings }) => assert_eq!(siblings, 65),
        other => panic!("expected 409: {other:?}"),
    }
    let read = sim.call(1, get("ev", "k", Some(3)), TIMEOUT_MS);
    assert_eq!(values(&read).len(), 64);
    assert!(!values(&read).contains("one-too-many"));
    // A write whose context covers the siblings is accepted and replaces them.
    let context = read_context(&read);
    written(&sim.call(2, put("ev", "k", "merged", context), TIMEOUT_MS));
    assert_eq!(
        values(&sim.call(0, get("ev", "k", Some(3)), TIMEOUT_MS)),
        set(&["merged"])
    );
}

#[test]
fn a_write_leaving_eight_live_versions_triggers_a_merge() {
    let mut sim = Sim::new(34, 3);
    sim.reconciler = union;
    plugin_table(&mut sim);
    for i in 0..7 {
        written(&sim.call(i % 3, put("carts", "k", &format!("w{i}"), None), TIMEOUT_MS));
    }
    assert_eq!(
        sim.local_object(0, "carts", b"k").unwrap().live_count(),
        7,
        "no merge below 8"
    );
    written(&sim.call(0, put("carts", "k", "w7", None), TIMEOUT_MS));
    sim.run_for(500);
    let object = sim.local_object(0, "carts", b"k").unwrap();
    assert_eq!(
        object.live_count(),
        1,
        "the coordinator merged the crowded key"
    );
    let merged = object.live().next().unwrap().value.clone().unwrap();
    assert_eq!(&merged[..], b"w0,w1,w2,w3,w4,w5,w6,w7");
}

#[test]
fn a_node_counts_what_it_was_asked_what_it_answered_and_what_it_stored_for_others() {
    let mut sim = Sim::new(7, 3);
    siblings_table(&mut sim);
    for word in ["one", "two"] {
        written(&sim.call(0, all_replicas(put("ev", word, word, None)), TIMEOUT_MS));
    }
    written(&sim.call(0, all_replicas(delete_op("ev", "one", None)), TIMEOUT_MS));
    let read = sim.call(0, get("ev", "two", Some(3)), TIMEOUT_MS);
    assert_eq!(values(&read), set(&["two"]));
    sim.partition(0, 1);
    sim.partition(0, 2);
    let cut_off = sim.call(0, all_replicas(put("ev", "three", "3", None)), TIMEOUT_MS);
    assert!(
        matches!(cut_off, Some(ClientReply::QuorumNotReached { .. })),
        "{cut_off:?}"
    );

    let coordinator = sim.node(0).expect("node 0").stats();
    assert_eq!(
        (coordinator.client.puts, coordinator.client.deletes),
        (3, 1)
    );
    // The delete reads the key first: its own get is not a client's.
    assert_eq!(coordinator.client.gets, 1);
    assert_eq!(coordinator.client.answered_ok, 4);
    assert_eq!(coordinator.client.answered_quorum_not_reached, 1);
    assert_eq!(coordinator.client.answers(), 5);
    assert_eq!(coordinator.client.forwarded, 0);
    assert!(coordinator.peer.replica >= 8, "{coordinator:?}");
    assert!(coordinator.batches.durable_through >= 4, "{coordinator:?}");
    assert!(coordinator.batches.sealed >= coordinator.batches.durable_through);
    assert_eq!(coordinator.batches.losses, 0);
    for replica in [1, 2] {
        let stats = sim.node(replica).expect("replica").stats();
        // Two puts and a delete reached it; the cut-off put did not.
        assert_eq!(stats.replica.writes_stored, 3, "node {replica}: {stats:?}");
        assert_eq!(stats.replica.writes_refused, 0);
        assert!(stats.replica.reads_served >= 1, "node {replica}: {stats:?}");
        assert_eq!(
            stats.client.answers(),
            0,
            "node {replica} answered no client"
        );
    }
}
