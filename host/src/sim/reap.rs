//! Tombstone collection in the simulator: a tombstone goes once every
//! replica holds it, never while a primary lacks it or a stand-in keeps a
//! hint for its key (the hint would bring the old value back), and a key
//! deleted and collected never gets a dot it had before.

use super::check::drained;
use super::tests::{read_context, siblings_table, values, written, TIMEOUT_MS};
use super::{delete_op, get, put, Sim};

/// Twice the simulator's request timeout plus the forwarding grace, the
/// least `cairn serve` accepts.
const GRACE_MS: u64 = 5_000;

/// Whether any node (running) holds a copy of `ev`/`key`.
fn holders(sim: &mut Sim, key: &str) -> Vec<usize> {
    (0..sim.len())
        .filter(|&n| sim.local_object(n, "ev", key.as_bytes()).is_some())
        .collect()
}

fn pending(sim: &Sim) -> u64 {
    (0..sim.len())
        .filter_map(|i| sim.node(i))
        .map(|n| n.sizes().tombstones_pending)
        .sum()
}

fn collected(sim: &Sim) -> u64 {
    (0..sim.len())
        .filter_map(|i| sim.node(i))
        .map(|n| n.stats().reap.collected)
        .sum()
}

#[test]
fn a_tombstone_every_replica_holds_is_collected_everywhere_after_the_grace() {
    let mut sim = Sim::with_tombstone_grace(41, 3, 100, GRACE_MS);
    siblings_table(&mut sim);
    let context = written(&sim.call(0, put("ev", "k", "v1", None), TIMEOUT_MS));
    written(&sim.call(1, delete_op("ev", "k", Some(context)), TIMEOUT_MS));
    sim.run_for(500);
    assert_eq!(
        holders(&mut sim, "k").len(),
        3,
        "every replica holds the tombstone"
    );
    assert_eq!(pending(&sim), 3);
    sim.run_for(GRACE_MS + 3_000);
    assert_eq!(holders(&mut sim, "k"), Vec::<usize>::new());
    assert_eq!(pending(&sim), 0);
    assert_eq!(collected(&sim), 3);
    let read = sim.call(2, get("ev", "k", Some(3)), TIMEOUT_MS);
    assert!(values(&read).is_empty(), "{read:?}");
    assert_eq!(drained(&sim), Ok(()));
}

#[test]
fn no_tombstone_is_collected_while_a_primary_lacks_it_and_the_delete_holds_after() {
    // Anti-entropy turns far apart, so nothing brings the primary that
    // missed the delete its tombstone; collection keeps its own timer.
    let mut sim = Sim::with_tombstone_grace(42, 3, 10_000_000, GRACE_MS);
    siblings_table(&mut sim);
    let primaries = sim.replicas_of("ev", "k");
    let put_all = super::tests::all_replicas(put("ev", "k", "v1", None));
    let context = written(&sim.call(primaries[0], put_all, TIMEOUT_MS));
    // The third primary is up but misses the delete.
    let missing = primaries[2];
    sim.partition(missing, primaries[0]);
    sim.partition(missing, primaries[1]);
    written(&sim.call(
        primaries[0],
        delete_op("ev", "k", Some(context)),
        TIMEOUT_MS,
    ));
    sim.heal();
    sim.run_for(GRACE_MS * 4);
    assert_eq!(collected(&sim), 0, "the primary holding v1 refused");
    assert_eq!(holders(&mut sim, "k").len(), 3);
    let stale = sim.local_object(missing, "ev", b"k").expect("a copy");
    assert_eq!(stale.live_count(), 1, "it still holds v1: {stale:?}");
    // A read repairs it; then the tombstone goes everywhere.
    let read = sim.call(primaries[0], get("ev", "k", Some(3)), TIMEOUT_MS);
    assert!(values(&read).is_empty(), "{read:?}");
    // The repaired primary vouches only once it has held the tombstone
    // for the grace itself (a read it began before must be over), though
    // the deciding primary's grace passed long ago.
    sim.run_for(GRACE_MS / 2);
    assert_eq!(collected(&sim), 0, "vouched for a tombstone just received");
    sim.run_for(GRACE_MS * 3);
    assert_eq!(holders(&mut sim, "k"), Vec::<usize>::new());
    let read = sim.call(missing, get("ev", "k", Some(1)), TIMEOUT_MS);
    assert!(values(&read).is_empty(), "v1 came back: {read:?}");
}

#[test]
fn no_tombstone_is_collected_while_a_stand_in_keeps_a_hint_for_its_key() {
    let mut sim = Sim::with_tombstone_grace(43, 5, 100, GRACE_MS);
    siblings_table(&mut sim);
    let primaries = sim.replicas_of("ev", "k");
    let owner = primaries[2];
    // v1 is written while `owner` is down: a stand-in keeps it as a hint.
    sim.crash(owner);
    sim.run_for(6_000);
    let context = written(&sim.call(primaries[0], put("ev", "k", "v1", None), TIMEOUT_MS));
    let stand_in = (0..5)
        .find(|&i| sim.node(i).is_some_and(|n| n.sizes().hints_pending > 0))
        .expect("a stand-in keeps the hint");
    // The owner is back, but the stand-in cannot reach it to deliver.
    sim.partition(stand_in, owner);
    sim.restart(owner);
    sim.run_for(6_000);
    let delete = delete_op("ev", "k", Some(context));
    written(&sim.call(primaries[0], super::tests::all_replicas(delete), TIMEOUT_MS));
    sim.run_for(GRACE_MS * 5);
    assert_eq!(collected(&sim), 0, "the stand-in refused while it kept v1");
    assert!(sim
        .node(stand_in)
        .is_some_and(|n| n.sizes().hints_pending > 0));
    // Healed: the hint lands on the tombstone (superseded), then it goes.
    sim.heal();
    sim.run_for(30_000);
    assert_eq!(holders(&mut sim, "k"), Vec::<usize>::new());
    for node in primaries {
        let read = sim.call(node, get("ev", "k", Some(1)), TIMEOUT_MS);
        assert!(values(&read).is_empty(), "v1 came back: {read:?}");
    }
    sim.run_for(2 * TIMEOUT_MS);
    assert_eq!(drained(&sim), Ok(()));
}

#[test]
fn a_collected_key_never_gets_a_dot_it_had_so_an_old_context_cannot_discard_a_new_write() {
    let mut sim = Sim::with_tombstone_grace(44, 3, 100, GRACE_MS);
    siblings_table(&mut sim);
    let coordinator = sim.replicas_of("ev", "k")[0];
    written(&sim.call(coordinator, put("ev", "k", "v1", None), TIMEOUT_MS));
    let old = read_context(&sim.call(coordinator, get("ev", "k", None), TIMEOUT_MS));
    written(&sim.call(coordinator, delete_op("ev", "k", old.clone()), TIMEOUT_MS));
    sim.run_for(GRACE_MS + 3_000);
    assert_eq!(holders(&mut sim, "k"), Vec::<usize>::new(), "collected");
    // A new write after collection, then one with the context read before
    // the delete: it covers v1's dot, which v2 must not have been given.
    written(&sim.call(coordinator, put("ev", "k", "v2", None), TIMEOUT_MS));
    written(&sim.call(coordinator, put("ev", "k", "v3", old), TIMEOUT_MS));
    let read = sim.call(coordinator, get("ev", "k", Some(3)), TIMEOUT_MS);
    assert_eq!(values(&read), super::tests::set(&["v2", "v3"]));
    // Counters past the floor do not leave a loose dot per write behind.
    let context = read_context(&read);
    written(&sim.call(coordinator, put("ev", "k", "v4", context), TIMEOUT_MS));
    for value in ["v5", "v6", "v7"] {
        written(&sim.call(coordinator, put("ev", "k", value, None), TIMEOUT_MS));
    }
    sim.run_for(500);
    let stored = sim
        .local_object(coordinator, "ev", b"k")
        .expect("the key is stored");
    assert_eq!(stored.clock.loose_len(), 0, "{:?}", stored.clock);
    // What collection forgot is in memory only: a clean stop takes a fresh epoch.
    let epoch = sim.epoch(coordinator);
    sim.stop_cleanly(coordinator);
    sim.restart(coordinator);
    assert_ne!(sim.epoch(coordinator), epoch);
}
