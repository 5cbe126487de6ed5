//! Sloppy quorum and hinted handoff in the simulator: writes succeed with
//! primaries down, stand-ins keep them as hints and hand them to their
//! owners once reachable (anti-entropy off, so handoff alone is tested), a
//! strict table refuses instead, and a delivery interrupted by a crash
//! resumes with what is left.

use super::check::drained;
use super::tests::{siblings_table, written, TIMEOUT_MS};
use super::{put, Sim};
use crate::core::msg::{AdminOp, AdminReply, ClientReply};
use crate::core::table::{MergeMode, TablePatch};
use crate::core::types::TableName;

fn keys(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("k{i}")).collect()
}

/// Every primary of every key holds the key's value, in its own store.
fn on_every_primary(sim: &mut Sim, table: &str, keys: &[String]) -> Result<(), String> {
    for key in keys {
        for replica in sim.replicas_of(table, key) {
            let object = sim.local_object(replica, table, key.as_bytes());
            let held = object.is_some_and(|o| {
                o.versions
                    .iter()
                    .any(|v| v.value.as_deref() == Some(key.as_bytes()))
            });
            if !held {
                return Err(format!("{key} is not on node{}", replica + 1));
            }
        }
    }
    Ok(())
}

fn hints_kept(sim: &Sim) -> u64 {
    (0..sim.len())
        .filter_map(|i| sim.node(i))
        .map(|n| n.sizes().hints_pending)
        .sum()
}

#[test]
fn writes_succeed_with_two_primaries_down_and_reach_them_by_handoff() {
    let mut sim = Sim::new(31, 5);
    siblings_table(&mut sim);
    let keys = keys(60);
    sim.crash(3);
    sim.crash(4);
    // The others notice (silence, or a call that goes unanswered).
    sim.run_for(6_000);
    for key in &keys {
        written(&sim.call(0, put("ev", key, key, None), TIMEOUT_MS));
    }
    assert!(hints_kept(&sim) > 0, "stand-ins kept hints");
    assert!(on_every_primary(&mut sim, "ev", &keys).is_err());
    sim.restart(3);
    sim.restart(4);
    sim.run_for(30_000);
    if let Err(missing) = on_every_primary(&mut sim, "ev", &keys) {
        panic!("after handoff: {missing}");
    }
    assert_eq!(drained(&sim), Ok(()), "every hint delivered and removed");
    let delivered: u64 = (0..5)
        .filter_map(|i| sim.node(i))
        .map(|n| n.stats().handoff.hints_delivered)
        .sum();
    assert!(delivered > 0);
}

#[test]
fn a_strict_table_refuses_rather_than_use_stand_ins_and_the_preflist_says_who_stands_in() {
    let mut sim = Sim::new(32, 5);
    siblings_table(&mut sim);
    let strict = TablePatch {
        merge: Some(MergeMode::Siblings),
        sloppy: Some(false),
        ..Default::default()
    };
    sim.create_table(0, "strict", strict);
    let primaries = sim.replicas_of("strict", "k");
    let (up, down) = (primaries[0], [primaries[1], primaries[2]]);
    for node in down {
        sim.crash(node);
    }
    sim.run_for(6_000);
    let reply = sim.call(up, put("strict", "k", "v", None), TIMEOUT_MS);
    assert!(
        matches!(reply, Some(ClientReply::QuorumNotReached { .. })),
        "{reply:?}"
    );
    written(&sim.call(up, put("ev", "k", "v", None), TIMEOUT_MS));
    let preflist = |sim: &mut Sim, table: &str| match sim.admin(
        up,
        AdminOp::Preflist(TableName::new(table).unwrap(), "k".into()),
    ) {
        Some(AdminReply::Preflist {
            primaries,
            fallbacks,
        }) => (primaries.len(), fallbacks.len()),
        other => panic!("{other:?}"),
    };
    // "ev" and "strict" hash "k" to different partitions, but each has
    // three primaries; only the sloppy one names stand-ins, and only for
    // primaries it cannot reach.
    assert_eq!(preflist(&mut sim, "strict"), (3, 0));
    let (_, stand_ins) = preflist(&mut sim, "ev");
    let ev_down = sim
        .replicas_of("ev", "k")
        .iter()
        .filter(|n| down.contains(n))
        .count();
    assert_eq!(stand_ins, ev_down);
}

#[test]
fn a_delivery_interrupted_by_a_crash_of_the_stand_in_resumes_with_what_is_left() {
    let mut sim = Sim::new(33, 5);
    siblings_table(&mut sim);
    let keys = keys(2_400);
    sim.crash(4);
    sim.run_for(6_000);
    for key in &keys {
        written(&sim.call(0, put("ev", key, key, None), TIMEOUT_MS));
    }
    sim.run_for(1_000);
    let (stand_in, kept) = (0..4)
        .map(|i| (i, sim.node(i).map_or(0, |n| n.sizes().hints_pending)))
        .max_by_key(|(_, kept)| *kept)
        .unwrap();
    assert!(kept > 256, "more than one batch for one stand-in: {kept}");
    sim.restart(4);
    let mut waited = 0;
    while sim
        .node(stand_in)
        .is_some_and(|n| n.stats().handoff.hints_delivered == 0)
    {
        sim.run_for(5);
        waited += 5;
        assert!(waited < 20_000, "no batch delivered");
    }
    // Its removals become durable, then it crashes mid-delivery.
    sim.run_for(20);
    sim.crash(stand_in);
    sim.restart(stand_in);
    let left = sim.node(stand_in).map_or(0, |n| n.sizes().hints_pending);
    assert!(
        left < kept,
        "delivery resumes with what is left, not from scratch ({left} of {kept})"
    );
    sim.run_for(30_000);
    if let Err(missing) = on_every_primary(&mut sim, "ev", &keys) {
        panic!("after handoff: {missing}");
    }
    assert_eq!(drained(&sim), Ok(()));
}

#[test]
fn a_stand_in_without_a_hint_does_not_make_up_a_quorum_so_a_delete_cannot_miss_a_write() {
    let mut sim = Sim::new(34, 5);
    siblings_table(&mut sim);
    let primaries = sim.replicas_of("ev", "k");
    let (first, second, third) = (primaries[0], primaries[1], primaries[2]);
    // `first` is down while the write is taken: a stand-in keeps its hint.
    sim.crash(first);
    sim.run_for(6_000);
    written(&sim.call(second, put("ev", "k", "v1", None), TIMEOUT_MS));
    let holder = (0..5)
        .find(|&i| sim.node(i).is_some_and(|n| n.sizes().hints_pending > 0))
        .expect("a stand-in keeps the hint");
    // Before the hint is delivered, `first` is back and everything that
    // knows of the write is gone: the stand-in and the other primaries.
    for node in [holder, second, third] {
        sim.crash(node);
    }
    sim.restart(first);
    sim.run_for(6_000);
    // A delete without a context reads first; the only other node up is a
    // stand-in with no hint for the key, which must not count toward R.
    let reply = sim.call(first, crate::sim::delete_op("ev", "k", None), TIMEOUT_MS);
    assert!(
        matches!(reply, Some(ClientReply::QuorumNotReached { .. })),
        "{reply:?}"
    );
    let read = sim.call(first, crate::sim::get("ev", "k", Some(2)), TIMEOUT_MS);
    assert!(
        matches!(read, Some(ClientReply::QuorumNotReached { .. })),
        "{read:?}"
    );
    for node in [holder, second, third] {
        sim.restart(node);
    }
    sim.run_for(10_000);
    let read = sim.call(first, crate::sim::get("ev", "k", Some(3)), TIMEOUT_MS);
    assert_eq!(super::tests::values(&read), super::tests::set(&["v1"]));
}

#[test]
fn a_write_a_primary_missed_with_no_stand_in_is_compared_with_it_first_once_it_returns() {
    // Three nodes: every node is a primary of every key, so no stand-in
    // can keep a hint for the one that is down.
    let mut sim = Sim::with_antientropy(35, 3, 100);
    siblings_table(&mut sim);
    let primaries = sim.replicas_of("ev", "k");
    let missing = primaries[2];
    sim.crash(missing);
    sim.run_for(6_000);
    written(&sim.call(primaries[0], put("ev", "k", "v1", None), TIMEOUT_MS));
    // The coordinator notices the missing ack at the deadline and says so.
    sim.run_for(TIMEOUT_MS);
    let Some(AdminReply::Cluster(status)) = sim.admin(primaries[0], AdminOp::ClusterStatus) else {
        panic!("no cluster status");
    };
    let divergent = status.antientropy.map(|ae| ae.divergent);
    assert_eq!(
        divergent,
        Some(1),
        "the key's partition is known to diverge"
    );
    sim.restart(missing);
    // Well within one sweep: the marked partition goes first.
    sim.run_for(1_500);
    let held = sim.local_object(missing, "ev", b"k").is_some_and(|o| {
        o.versions
            .iter()
            .any(|v| v.value.as_deref() == Some(&b"v1"[..]))
    });
    assert!(
        held,
        "the returned primary got the write from anti-entropy first"
    );
}

#[test]
fn with_every_primary_down_a_node_coordinates_as_a_stand_in_and_handoff_delivers() {
    let mut sim = Sim::new(36, 5);
    siblings_table(&mut sim);
    let primaries = sim.replicas_of("ev", "k");
    let others: Vec<usize> = (0..5).filter(|i| !primaries.contains(i)).collect();
    for &p in &primaries {
        sim.crash(p);
    }
    sim.run_for(6_000);
    // Two writes through a node that owns nothing of the key: two dots of
    // its stand-in actor, never the same one.
    // (A write of another key in between: counters are per key.)
    let other_key = (0..1_000)
        .map(|i| format!("j{i}"))
        .find(|k| sim.replicas_of("ev", k) == primaries)
        .expect("another key of the same primaries");
    written(&sim.call(others[0], put("ev", "k", "v1", None), TIMEOUT_MS));
    written(&sim.call(others[0], put("ev", &other_key, "j", None), TIMEOUT_MS));
    written(&sim.call(others[0], put("ev", "k", "v2", None), TIMEOUT_MS));
    let coordinated: u64 = (0..5)
        .filter_map(|i| sim.node(i))
        .map(|n| n.stats().client.coordinated_as_stand_in)
        .sum();
    assert_eq!(coordinated, 3, "every write coordinated by a stand-in");
    assert!(hints_kept(&sim) >= 2);
    // Reads too: only hints count toward R, and both stand-ins hold them.
    let read = sim.call(others[1], crate::sim::get("ev", "k", Some(2)), TIMEOUT_MS);
    assert_eq!(
        super::tests::values(&read),
        super::tests::set(&["v1", "v2"])
    );
    // A key none of them holds a hint for is not "not found": 503.
    let unknown = (0..1_000)
        .map(|i| format!("u{i}"))
        .find(|k| sim.replicas_of("ev", k) == primaries)
        .expect("another key of the same primaries");
    let read = sim.call(
        others[1],
        crate::sim::get("ev", &unknown, Some(1)),
        TIMEOUT_MS,
    );
    assert!(
        matches!(read, Some(ClientReply::QuorumNotReached { .. })),
        "{read:?}"
    );
    // A stand-in that minted keeps no epoch across even a clean stop: it
    // starts above its stand-in epoch, so its own actor never takes it.
    let epoch = sim.epoch(others[0]);
    let stand_in = sim
        .node(others[0])
        .and_then(|n| n.stand_in_epoch())
        .expect("minted as a stand-in");
    assert_ne!(Some(stand_in), epoch);
    sim.stop_cleanly(others[0]);
    sim.restart(others[0]);
    assert!(sim.epoch(others[0]) > Some(stand_in));

    for &p in &primaries {
        sim.restart(p);
    }
    sim.run_for(30_000);
    let read = sim.call(
        primaries[0],
        crate::sim::get("ev", "k", Some(3)),
        TIMEOUT_MS,
    );
    assert_eq!(
        super::tests::values(&read),
        super::tests::set(&["v1", "v2"])
    );
    for &p in &primaries {
        let object = sim.local_object(p, "ev", b"k").expect("delivered");
        assert_eq!(object.live_count(), 2, "node{} holds both", p + 1);
        // The stand-in's dots for the key were consecutive: no loose dot.
        assert_eq!(object.clock.loose_len(), 0, "{:?}", object.clock);
    }
    assert_eq!(drained(&sim), Ok(()));
}
