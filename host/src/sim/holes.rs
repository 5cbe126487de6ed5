//! Scenarios for the holes a review of the core found (one long key stopping
//! replicas, contexts from elsewhere, epochs, clock skew, tombstones, joins,
//! plugin write-backs). Each failed on the commit the review read.

use bytes::Bytes;

use super::tests::{
    all_replicas, merged_reply, read_context, set, siblings_table, union, values, written,
    TIMEOUT_MS,
};
use super::{delete_op, get, put, Sim};
use crate::core::causal::{Actor, CausalContext, Dot};
use crate::core::msg::{AdminOp, AdminReply, ClientReply, MemberMessage, Message, ReplicaMessage};
use crate::core::node::{fresh_epoch, Now};
use crate::core::object::{Object, Version};
use crate::core::rng::Rng;
use crate::core::table::{MergeMode, StorageKind, TablePatch};
use crate::core::token::ClientContext;
use crate::core::types::{NodeId, TableName};

fn table(sim: &mut Sim, name: &str, patch: TablePatch) {
    sim.create_table(0, name, patch);
}

fn lww(sim: &mut Sim) {
    let patch = TablePatch {
        merge: Some(MergeMode::Lww),
        ..Default::default()
    };
    table(sim, "reg", patch);
}

#[test]
fn an_lww_write_descending_a_version_from_a_fast_clock_wins_at_a_coordinator_lacking_it() {
    let mut sim = Sim::new(51, 3);
    lww(&mut sim);
    // node2's clock runs a minute fast; node1 misses the write it coordinates.
    sim.set_clock_offset(1, 60_000);
    sim.partition(0, 1);
    sim.partition(0, 2);
    written(&sim.call(1, put("reg", "k", "x", None), TIMEOUT_MS));
    let read = sim.call(1, get("reg", "k", Some(2)), TIMEOUT_MS);
    assert_eq!(values(&read), set(&["x"]));
    sim.heal();
    // The client writes what it read's successor through node1, which lacks x.
    written(&sim.call(0, put("reg", "k", "y", read_context(&read)), TIMEOUT_MS));
    sim.run_for(200);
    let after = sim.call(2, get("reg", "k", Some(3)), TIMEOUT_MS);
    assert_eq!(
        values(&after),
        set(&["y"]),
        "the descendant lost to its ancestor"
    );

    // A delete without context, coordinated by node1 while it lacks the
    // fast clock's newest version, removes it too.
    sim.partition(0, 1);
    sim.partition(0, 2);
    written(&sim.call(1, put("reg", "k", "z", None), TIMEOUT_MS));
    sim.heal();
    written(&sim.call(0, delete_op("reg", "k", None), TIMEOUT_MS));
    sim.run_for(200);
    let after = sim.call(2, get("reg", "k", Some(3)), TIMEOUT_MS);
    assert_eq!(values(&after), set(&[]), "the delete did nothing");
}

#[test]
fn a_memory_table_node_restarted_cleanly_takes_a_fresh_epoch() {
    let mut sim = Sim::new(52, 3);
    let patch = TablePatch {
        merge: Some(MergeMode::Siblings),
        storage: Some(StorageKind::Memory),
        ..Default::default()
    };
    table(&mut sim, "cache", patch);
    written(&sim.call(
        0,
        all_replicas(put("cache", "k", "before", None)),
        TIMEOUT_MS,
    ));
    let epoch = sim.epoch(0);
    sim.stop_cleanly(0);
    sim.restart(0);
    sim.run_for(1_000);
    assert_ne!(sim.epoch(0), epoch, "its memory forgot dots it issued");
    // Its copy is gone; a new blind write must not reuse the forgotten dot.
    written(&sim.call(
        0,
        all_replicas(put("cache", "k", "after", None)),
        TIMEOUT_MS,
    ));
    let read = sim.call(1, get("cache", "k", Some(3)), TIMEOUT_MS);
    assert_eq!(values(&read), set(&["before", "after"]));
}

#[test]
fn a_clean_restart_without_memory_tables_keeps_the_epoch() {
    let mut sim = Sim::new(53, 3);
    siblings_table(&mut sim);
    written(&sim.call(0, put("ev", "k", "v", None), TIMEOUT_MS));
    let epoch = sim.epoch(0);
    sim.stop_cleanly(0);
    sim.restart(0);
    sim.run_for(1_000);
    assert_eq!(sim.epoch(0), epoch);
    // An unclean stop does change it.
    sim.crash(0);
    sim.restart(0);
    assert_ne!(sim.epoch(0), epoch);
}

#[test]
fn a_context_naming_an_epoch_no_node_reached_is_refused() {
    let mut sim = Sim::new(54, 3);
    siblings_table(&mut sim);
    written(&sim.call(0, put("ev", "k", "v", None), TIMEOUT_MS));
    let epoch = sim.epoch(0);
    for forged in [u64::MAX, u64::from(u32::MAX) << 32] {
        let mut seen = CausalContext::new();
        seen.add(Dot {
            actor: Actor {
                node: NodeId::new("node1").unwrap(),
                epoch: forged,
            },
            counter: 1,
        });
        let context = ClientContext {
            seen,
            max_timestamp_ms: 0,
        };
        let reply = sim.call(0, put("ev", "k", "w", Some(context)), TIMEOUT_MS);
        assert!(
            matches!(reply, Some(ClientReply::BadRequest(_))),
            "{reply:?}"
        );
        assert_eq!(sim.epoch(0), epoch, "the node's epoch moved");
    }
    let read = sim.call(1, get("ev", "k", Some(3)), TIMEOUT_MS);
    assert_eq!(values(&read), set(&["v"]));
}

#[test]
fn fresh_epochs_grow_and_exhaustion_is_an_error_not_a_repeat() {
    let now = Now {
        mono_ms: 0,
        wall_ms: 1_790_000_000_000,
    };
    let mut rng = Rng::new(1);
    let first = fresh_epoch(0, now, &mut rng).unwrap();
    assert_eq!(
        first >> 32,
        1_790_000_000,
        "at least the wall clock's seconds"
    );
    let second = fresh_epoch(first, now, &mut rng).unwrap();
    assert!(second > first && second >> 32 == (first >> 32) + 1);
    // A floor ahead of the clock is still exceeded.
    let ahead = 2_000_000_000u64 << 32;
    assert_eq!(
        fresh_epoch(ahead, now, &mut rng).unwrap() >> 32,
        2_000_000_001
    );
    // No generation left: an error, where saturation once repeated the epoch.
    assert!(fresh_epoch(u64::MAX, now, &mut rng).is_err());
    assert!(fresh_epoch(u64::from(u32::MAX) << 32, now, &mut rng).is_err());
    let late = Now {
        mono_ms: 0,
        wall_ms: (u64::from(u32::MAX) + 1) * 1000,
    };
    assert!(fresh_epoch(0, late, &mut rng).is_err());
}

#[test]
fn deletes_with_stale_contexts_leave_few_tombstones_and_the_value_they_never_saw() {
    let mut sim = Sim::new(55, 3);
    siblings_table(&mut sim);
    written(&sim.call(0, put("ev", "k", "v", None), TIMEOUT_MS));
    // Contexts that cover nothing: every delete is concurrent with the value.
    for i in 0..300 {
        let stale = Some(ClientContext::default());
        written(&sim.call(i % 3, delete_op("ev", "k", stale), TIMEOUT_MS));
    }
    sim.run_for(500);
    let read = sim.call(0, get("ev", "k", Some(3)), TIMEOUT_MS);
    assert_eq!(
        values(&read),
        set(&["v"]),
        "add wins over deletes that never saw it"
    );
    for node in 0..3 {
        let object = sim.local_object(node, "ev", b"k").unwrap();
        let tombstones = object.versions.iter().filter(|v| !v.is_live()).count();
        assert!(tombstones <= 3, "node{}: {tombstones} tombstones", node + 1);
    }
}

#[test]
fn a_runtime_join_to_a_silent_seed_leaves_the_node_serving() {
    let mut sim = Sim::new(56, 1);
    let patch = TablePatch {
        n: Some(1),
        r: Some(1),
        w: Some(1),
        merge: Some(MergeMode::Siblings),
        ..Default::default()
    };
    table(&mut sim, "ev", patch);
    let join = sim.admin(0, AdminOp::Join("sim-node9".into()));
    assert_eq!(join, Some(AdminReply::Accepted("joining")));
    // Still serving while it waits, and after it gives up.
    written(&sim.call(0, put("ev", "k", "during", None), TIMEOUT_MS));
    sim.run_for(31_000);
    written(&sim.call(0, put("ev", "k", "after", None), TIMEOUT_MS));
    let Some(AdminReply::Cluster(status)) = sim.admin(0, AdminOp::ClusterStatus) else {
        panic!("no cluster status");
    };
    let join = status.join.expect("the failed join is reported");
    assert_eq!(join.seed, "sim-node9");
    assert!(join.failure.unwrap().contains("no answer"));
    assert_eq!(status.members.len(), 1);
}

#[test]
fn a_refused_runtime_join_leaves_the_node_serving_with_the_reason() {
    let mut sim = Sim::new(57, 3);
    let solo = sim.add_solo_node();
    let patch = TablePatch {
        n: Some(1),
        r: Some(1),
        w: Some(1),
        ..Default::default()
    };
    sim.create_table(solo, "mine", patch);
    let join = sim.admin(solo, AdminOp::Join(Sim::peer_address(0)));
    assert_eq!(join, Some(AdminReply::Accepted("joining")));
    // The seed's refusal arrives before its acceptance could.
    let reason = "the cluster has as many members as partitions".to_owned();
    sim.inject(
        solo,
        0,
        Message::Member(MemberMessage::JoinRefused { reason }),
    );
    assert!(
        sim.is_up(solo),
        "a refused runtime join stopped the process"
    );
    written(&sim.call(solo, put("mine", "k", "v", None), TIMEOUT_MS));
    let Some(AdminReply::Cluster(status)) = sim.admin(solo, AdminOp::ClusterStatus) else {
        panic!("no cluster status");
    };
    assert!(status.join.unwrap().failure.unwrap().contains("partitions"));
}

#[test]
fn a_joiner_never_overrides_the_clusters_table_configs() {
    let mut sim = Sim::new(58, 3);
    siblings_table(&mut sim);
    written(&sim.call(0, all_replicas(put("ev", "k", "kept", None)), TIMEOUT_MS));
    let solo = sim.add_solo_node();
    sim.run_for(1_000);
    // The joiner's own `ev`, defined later (a larger stamp): n1 in memory.
    let patch = TablePatch {
        n: Some(1),
        r: Some(1),
        w: Some(1),
        storage: Some(StorageKind::Memory),
        ..Default::default()
    };
    sim.create_table(solo, "ev", patch);
    let join = sim.admin(solo, AdminOp::Join(Sim::peer_address(0)));
    assert_eq!(join, Some(AdminReply::Accepted("joining")));
    sim.run_for(5_000);
    for node in 0..4 {
        let config = &sim.node(node).unwrap().meta().tables[&TableName::new("ev").unwrap()].config;
        assert_eq!(
            (config.n, config.storage),
            (3, StorageKind::Lmdb),
            "node{}",
            node + 1
        );
    }
    let read = sim.call(1, get("ev", "k", Some(2)), TIMEOUT_MS);
    assert!(values(&read).contains("kept"));
}

#[test]
fn a_peer_write_with_a_key_the_store_cannot_take_fails_only_itself() {
    let mut sim = Sim::new(59, 3);
    siblings_table(&mut sim);
    // SPEC's longest key works end to end.
    let longest = "k".repeat(crate::core::limits::KEY_BYTES_MAX);
    written(&sim.call(
        0,
        all_replicas(put("ev", &longest, "long", None)),
        TIMEOUT_MS,
    ));
    let read = sim.call(2, get("ev", &longest, Some(3)), TIMEOUT_MS);
    assert_eq!(values(&read), set(&["long"]));
    // A peer's frame with a key no store takes is refused; the node stays up.
    let mut object = Object::default();
    let version = Version {
        dot: Dot {
            actor: Actor {
                node: NodeId::new("node1").unwrap(),
                epoch: 1,
            },
            counter: 1,
        },
        timestamp_ms: 1,
        value: Some(Bytes::from_static(b"x")),
        content_type: String::new(),
    };
    object.apply_write(&CausalContext::new(), version, MergeMode::Siblings);
    let huge = Message::Replica(ReplicaMessage::Write {
        request: 1,
        table: TableName::new("ev").unwrap(),
        key: Bytes::from(vec![b'k'; 4096]),
        object,
        engine: None,
        hint_for: None,
    });
    sim.inject(1, 0, huge);
    sim.run_for(100);
    assert!(sim.is_up(1));
    written(&sim.call(1, all_replicas(put("ev", "k", "fine", None)), TIMEOUT_MS));
}

fn storage_plugin_table(sim: &mut Sim) {
    super::tests::plugin_table_storing(sim, true);
}

#[test]
fn a_coordinator_lacking_a_freshly_uploaded_module_fetches_it_before_merging() {
    let mut sim = Sim::new(62, 3);
    sim.reconciler = union;
    super::tests::plugin_table(&mut sim);
    written(&sim.call(0, put("carts", "k", "a", None), TIMEOUT_MS));
    written(&sim.call(1, put("carts", "k", "b", None), TIMEOUT_MS));
    // A new version replaces the module; node3 hears of it by gossip at once
    // but has not fetched the bytes when a read reaches it.
    sim.upload_plugin(0, "union", &["reconcile"], 2);
    sim.run_for(3);
    let read = sim.call(2, get("carts", "k", Some(3)), TIMEOUT_MS);
    assert_eq!(merged_reply(&read), ("a,b".to_owned(), Some(2)));
}

#[test]
fn a_merged_answer_of_a_storage_plugin_table_carries_the_write_backs_context() {
    let mut sim = Sim::new(60, 3);
    sim.reconciler = union;
    storage_plugin_table(&mut sim);
    written(&sim.call(0, put("carts", "k", "a", None), TIMEOUT_MS));
    written(&sim.call(1, put("carts", "k", "b", None), TIMEOUT_MS));
    let read = sim.call(2, get("carts", "k", Some(3)), TIMEOUT_MS);
    assert_eq!(merged_reply(&read), ("a,b".to_owned(), Some(2)));
    sim.run_for(200);
    // Writing with the merge's context supersedes the write-back as well.
    let context = read_context(&read);
    written(&sim.call(2, all_replicas(put("carts", "k", "x", context)), TIMEOUT_MS));
    let after = sim.call(0, get("carts", "k", Some(3)), TIMEOUT_MS);
    assert_eq!(merged_reply(&after), ("x".to_owned(), None));
}

#[test]
fn concurrent_readers_of_a_storage_plugin_table_mint_one_merge() {
    let mut sim = Sim::new(61, 3);
    sim.reconciler = union;
    storage_plugin_table(&mut sim);
    written(&sim.call(0, put("carts", "k", "a", None), TIMEOUT_MS));
    written(&sim.call(1, put("carts", "k", "b", None), TIMEOUT_MS));
    let first = sim.submit(2, get("carts", "k", Some(3)));
    let second = sim.submit(2, get("carts", "k", Some(3)));
    sim.run_for(500);
    for id in [first, second] {
        assert_eq!(merged_reply(&sim.reply(id).cloned()).0, "a,b");
    }
    sim.run_for(500);
    for node in 0..3 {
        let object = sim.local_object(node, "carts", b"k").unwrap();
        assert_eq!(object.live_count(), 1, "node{}: two write-backs", node + 1);
    }
}

#[test]
fn a_coordinator_lacking_what_a_context_saw_reads_before_writing() {
    let mut sim = Sim::new(63, 3);
    siblings_table(&mut sim);
    written(&sim.call(0, all_replicas(put("ev", "k", "v0", None)), TIMEOUT_MS));
    // node3 misses the delete of v0.
    sim.partition(2, 0);
    sim.partition(2, 1);
    let before = sim.call(0, get("ev", "k", Some(2)), TIMEOUT_MS);
    written(&sim.call(0, delete_op("ev", "k", read_context(&before)), TIMEOUT_MS));
    let after_delete = sim.call(0, get("ev", "k", Some(2)), TIMEOUT_MS);
    assert_eq!(values(&after_delete), set(&[]));
    sim.heal();
    // A write descending the delete, coordinated by node3, which still holds v0.
    written(&sim.call(
        2,
        put("ev", "k", "v2", read_context(&after_delete)),
        TIMEOUT_MS,
    ));
    // node3's own copy never shows the deleted value next to the new one.
    let own = sim.local_object(2, "ev", b"k").unwrap();
    let live: Vec<_> = own
        .live()
        .map(|v| String::from_utf8_lossy(v.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(live, vec!["v2"]);
    let read = sim.call(2, get("ev", "k", Some(1)), TIMEOUT_MS);
    assert_eq!(values(&read), set(&["v2"]));
}

#[test]
fn an_upload_is_answered_once_every_member_holds_the_module() {
    let mut sim = Sim::new(64, 3);
    let bytes_name = "spread";
    let op = AdminOp::PutPlugin {
        name: bytes_name.into(),
        sha256: crate::plugin::sha256_hex(b"sim-module:spread"),
        abi: cairn_sdk::ABI_VERSION,
        exports: vec!["reconcile".into()],
        bytes: Bytes::from_static(b"sim-module:spread"),
    };
    match sim.admin(0, op) {
        Some(AdminReply::Plugin { spread, .. }) => assert_eq!(spread, Some((3, 3))),
        other => panic!("{other:?}"),
    }
    // With a member down, the answer comes after the wait and says so.
    sim.crash(2);
    sim.run_for(6_000);
    let op = AdminOp::PutPlugin {
        name: "later".into(),
        sha256: crate::plugin::sha256_hex(b"sim-module:later"),
        abi: cairn_sdk::ABI_VERSION,
        exports: vec!["reconcile".into()],
        bytes: Bytes::from_static(b"sim-module:later"),
    };
    match sim.admin(0, op) {
        Some(AdminReply::Plugin { spread, .. }) => assert_eq!(spread, Some((2, 3))),
        other => panic!("{other:?}"),
    }
}

/// A plugin change made on one side of a partition while the other side
/// creates a table using the plugin: once healed, every node keeps a module
/// that serves the table (the change is undone), never a table naming a
/// plugin that is gone or lacks the function it uses.
#[test]
fn a_plugin_change_racing_a_table_create_that_uses_it_is_undone_everywhere() {
    for deleted in [true, false] {
        let mut sim = Sim::new(61, 3);
        sim.upload_plugin(0, "union", &["reconcile"], 1);
        sim.run_for(1_000);
        sim.partition(0, 1);
        sim.partition(0, 2);
        if deleted {
            let reply = sim.admin(0, AdminOp::DeletePlugin("union".into()));
            assert_eq!(reply, Some(AdminReply::Deleted));
        } else {
            // A re-upload that drops `reconcile`: allowed where no table uses it.
            sim.upload_plugin(0, "union", &["select_storage"], 2);
        }
        let patch = TablePatch {
            merge: Some(MergeMode::Plugin),
            plugin: Some("union".into()),
            ..Default::default()
        };
        sim.create_table(1, "carts", patch);
        sim.heal();
        sim.run_for(5_000);
        for node in 0..3 {
            let plugin = sim.admin(node, AdminOp::GetPlugin("union".into()));
            match plugin {
                Some(AdminReply::Plugin { entry, .. }) => {
                    assert!(
                        entry.exports("reconcile"),
                        "deleted {deleted}: node{node}: {entry:?}"
                    )
                }
                other => panic!("deleted {deleted}: node{node}: {other:?}"),
            }
            let table = sim.admin(node, AdminOp::GetTable(TableName::new("carts").unwrap()));
            assert!(
                matches!(table, Some(AdminReply::Table(..))),
                "node{node}: {table:?}"
            );
        }
    }
}

/// Another process announces this node's id at other addresses (a copy of
/// its data dir started elsewhere): the node announces its own again, with
/// an epoch above the other's, and every member ends up with its addresses.
#[test]
fn a_node_reclaims_its_record_from_another_process_announcing_its_id() {
    let mut sim = Sim::new(71, 3);
    sim.run_for(2_000);
    let id = NodeId::new("node1").unwrap();
    let mut forged = sim.node(1).unwrap().meta().clone();
    let real = forged.members[&id].clone();
    let record = forged.members.get_mut(&id).unwrap();
    record.http = "127.0.0.1:1".into();
    record.peer = "127.0.0.1:2".into();
    record.stamp += 10;
    record.epoch += 1 << 32;
    let impostor_epoch = record.epoch;
    sim.inject(
        1,
        2,
        Message::Member(MemberMessage::Gossip(Box::new(forged.clone()))),
    );
    sim.inject(
        0,
        2,
        Message::Member(MemberMessage::Gossip(Box::new(forged))),
    );
    sim.run_for(3_000);
    assert!(sim.epoch(0).unwrap() > impostor_epoch);
    for node in 0..3 {
        let member = &sim.node(node).unwrap().meta().members[&id];
        assert_eq!(
            (&member.http, &member.peer),
            (&real.http, &real.peer),
            "node{}",
            node + 1
        );
    }
}

/// Peers may name themselves anything: what a node remembers of ids it
/// heard from stays within its members plus the last few seconds' strangers.
#[test]
fn ids_peers_name_themselves_do_not_pile_up() {
    let mut sim = Sim::new(81, 3);
    siblings_table(&mut sim);
    sim.run_for(2_000);
    for i in 0..1_000 {
        let stranger = NodeId::new(&format!("stranger{i}")).unwrap();
        sim.inject_as(0, stranger, Message::Member(MemberMessage::Ping));
    }
    assert!(sim.node(0).unwrap().sizes().heard_from >= 1_000);
    sim.run_for(crate::core::limits::STRANGER_HEARD_KEPT_MS + 1_000);
    assert!(sim.node(0).unwrap().sizes().heard_from <= 3);
    // The members it keeps hearing from are still up.
    written(&sim.call(0, all_replicas(put("ev", "k", "v", None)), TIMEOUT_MS));
}
