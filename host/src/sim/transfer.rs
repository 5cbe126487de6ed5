//! Partition transfer in the simulator: a node joining a loaded cluster
//! copies its share of the data before it owns it, while writes go on, the
//! receiver and a source crash mid-transfer and the receiver is cut off
//! from a node for a while; nothing acknowledged is lost, the walk resumes
//! from its checkpoint, and every node ends with the same ring. Removes
//! and replaces move data the same way.

use super::check::drained;
use super::tests::{siblings_table, values, with_w, written, TIMEOUT_MS};
use super::{get, put, Sim};
use crate::core::msg::{AdminOp, AdminReply, ClientReply, ClusterStatus, MemberMessage, Message};
use crate::core::ring::Ring;
use crate::core::types::NodeId;

fn status(sim: &mut Sim, index: usize) -> ClusterStatus {
    match sim.admin(index, AdminOp::ClusterStatus) {
        Some(AdminReply::Cluster(status)) => *status,
        other => panic!("no cluster status from node{}: {other:?}", index + 1),
    }
}

/// The ring every running node holds, if they all hold the same one with
/// no move under way.
fn settled_ring(sim: &Sim) -> Option<Ring> {
    let rings: Vec<Ring> = (0..sim.len())
        .filter_map(|i| sim.node(i))
        .filter(|n| n.is_member())
        .map(|n| n.meta().ring.clone())
        .collect::<Option<Vec<_>>>()?;
    let first = rings.first()?.clone();
    (first.next.is_none() && rings.iter().all(|r| *r == first)).then_some(first)
}

/// Runs until `done` holds, in 100 ms steps, for at most `limit_ms`.
fn run_until(sim: &mut Sim, limit_ms: u64, mut done: impl FnMut(&mut Sim) -> bool) -> bool {
    let deadline = sim.now_ms() + limit_ms;
    while sim.now_ms() < deadline {
        if done(sim) {
            return true;
        }
        sim.run_for(100);
    }
    done(sim)
}

/// Keys of writes submitted now, to be counted once answered.
struct Writer {
    submitted: Vec<(u64, String)>,
    next: usize,
}

impl Writer {
    fn write_some(&mut self, sim: &mut Sim, count: usize) {
        for _ in 0..count {
            let key = format!("during{}", self.next);
            self.next += 1;
            let coordinator = self.next % 3;
            let id = sim.submit(coordinator, put("ev", &key, &key, None));
            self.submitted.push((id, key));
        }
    }

    fn acknowledged(&self, sim: &Sim) -> Vec<String> {
        self.submitted
            .iter()
            .filter(|(id, _)| matches!(sim.reply(*id), Some(ClientReply::Written { .. })))
            .map(|(_, key)| key.clone())
            .collect()
    }
}

#[test]
fn a_joining_node_copies_its_share_and_resumes_after_crashes_on_either_side() {
    let mut sim = Sim::with_antientropy(41, 3, 200);
    siblings_table(&mut sim);
    let mut acknowledged: Vec<String> = Vec::new();
    for i in 0..400 {
        let key = format!("k{i}");
        written(&sim.call(i % 3, put("ev", &key, &key, None), TIMEOUT_MS));
        acknowledged.push(key);
    }
    // Slow enough that the copy takes many pages.
    sim.transfer_bytes_per_s = 3_000;
    let joiner = sim.add_joining_node();
    let mut writer = Writer {
        submitted: Vec::new(),
        next: 0,
    };
    let started = run_until(&mut sim, 60_000, |sim| {
        writer.write_some(sim, 1);
        status(sim, joiner).transfer.is_some_and(|t| t.keys >= 60)
    });
    assert!(started, "the joiner copies keys");
    let moving = status(&mut sim, 0).ring_move.expect("a move is under way");
    assert!(moving.partitions_moving > 0 && moving.copies_done < moving.copies_total);
    let before_crash = status(&mut sim, joiner).transfer.expect("copying").keys;

    // The receiver crashes mid-transfer and resumes from its checkpoint.
    sim.crash(joiner);
    sim.run_for(500);
    sim.restart(joiner);
    let resumed = status(&mut sim, joiner).transfer.expect("still copying");
    assert!(
        resumed.resumed_keys > 0 && resumed.resumed_keys <= before_crash,
        "resumed from {} keys (had {before_crash} before the crash)",
        resumed.resumed_keys
    );

    // Then the source it copies from crashes; the walk goes on elsewhere.
    let source = run_until(&mut sim, 10_000, |sim| {
        writer.write_some(sim, 1);
        status(sim, joiner)
            .transfer
            .and_then(|t| t.source)
            .is_some()
    });
    assert!(source);
    let source = status(&mut sim, joiner)
        .transfer
        .and_then(|t| t.source)
        .unwrap();
    let source = (0..3)
        .find(|&i| sim.node(i).is_some_and(|n| *n.id() == source))
        .unwrap();
    sim.crash(source);
    run_until(&mut sim, 3_000, |sim| {
        writer.write_some(sim, 1);
        false
    });
    sim.restart(source);
    // Then the joiner is cut off from node1 for a while.
    sim.partition(joiner, 0);
    run_until(&mut sim, 3_000, |sim| {
        writer.write_some(sim, 1);
        false
    });
    sim.heal();

    let settled = run_until(&mut sim, 600_000, |sim| {
        writer.write_some(sim, 1);
        settled_ring(sim).is_some()
    });
    let stuck = status(&mut sim, joiner);
    assert!(
        settled,
        "the move completes: {:?} {:?}",
        stuck.ring_move, stuck.transfer
    );
    sim.run_for(TIMEOUT_MS);
    acknowledged.extend(writer.acknowledged(&sim));
    let ring = settled_ring(&sim).expect("still settled");
    let share = ring.owned_by(sim.node(joiner).unwrap().id());
    assert!((15..=17).contains(&share), "the joiner owns {share} of 64");
    let keys = ring.partitions();
    assert_eq!(keys, 64);

    // Without any read: anti-entropy among the new replicas finishes what
    // crashes cut off, and every replica holds every acknowledged key.
    let converged = run_until(&mut sim, 120_000, |sim| {
        acknowledged.iter().all(|key| {
            sim.replicas_of("ev", key).into_iter().all(|r| {
                sim.local_object(r, "ev", key.as_bytes()).is_some_and(|o| {
                    o.versions
                        .iter()
                        .any(|v| v.value.as_deref() == Some(key.as_bytes()))
                })
            })
        })
    });
    assert!(converged, "replicas converge without reads");
    // The former replicas handed their copies over: no node but a key's
    // replicas holds it, and every hint made of them was delivered.
    let handed_over = run_until(&mut sim, 120_000, |sim| {
        no_leftovers(sim, &acknowledged) && drained(sim).is_ok()
    });
    assert!(handed_over, "leftovers: {:?}", drained(&sim));
    let handed: u64 = (0..4)
        .filter_map(|i| sim.node(i))
        .map(|n| n.stats().transfer.leftovers_handed_over)
        .sum();
    assert!(handed > 0, "the former replicas handed copies over");
    let on_joiner = acknowledged
        .iter()
        .filter(|key| sim.replicas_of("ev", key).contains(&joiner))
        .count();
    assert!(on_joiner > 200, "the joiner replicates {on_joiner} keys");
    for key in &acknowledged {
        let read = sim.call(joiner, get("ev", key, Some(3)), TIMEOUT_MS);
        assert_eq!(values(&read), [key.clone()].into(), "{key}");
    }
}

#[test]
fn a_join_into_a_cluster_without_tables_completes_at_once() {
    let mut sim = Sim::new(42, 3);
    let joiner = sim.add_joining_node();
    assert!(run_until(&mut sim, 10_000, |sim| settled_ring(sim)
        .is_some_and(
            |r| r.owned_by(sim.node(joiner).unwrap().id()) == 16
        )));
}

/// Every replica (by the settled ring) of every key holds its value, in its
/// own store: no read has repaired anything.
fn on_every_replica(sim: &mut Sim, keys: &[String]) -> bool {
    keys.iter().all(|key| {
        sim.replicas_of("ev", key).into_iter().all(|r| {
            sim.local_object(r, "ev", key.as_bytes()).is_some_and(|o| {
                o.versions
                    .iter()
                    .any(|v| v.value.as_deref() == Some(key.as_bytes()))
            })
        })
    })
}

/// No node but a key's replicas holds a plain copy of it.
fn no_leftovers(sim: &mut Sim, keys: &[String]) -> bool {
    keys.iter().all(|key| {
        let replicas = sim.replicas_of("ev", key);
        let others: Vec<usize> = (0..sim.len())
            .filter(|i| !replicas.contains(i) && sim.is_up(*i))
            .collect();
        others
            .into_iter()
            .all(|i| sim.local_object(i, "ev", key.as_bytes()).is_none())
    })
}

fn loaded(sim: &mut Sim, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let key = format!("k{i}");
            written(&sim.call(i % 3, put("ev", &key, &key, None), TIMEOUT_MS));
            key
        })
        .collect()
}

fn members_everywhere_but(sim: &Sim, gone: &NodeId, skip: usize) -> bool {
    (0..sim.len())
        .filter(|&i| i != skip)
        .filter_map(|i| sim.node(i))
        .all(|n| !n.meta().members.contains_key(gone) && n.meta().removed.contains_key(gone))
}

#[test]
fn a_removed_member_hands_its_partitions_over_with_their_data_and_never_comes_back() {
    let mut sim = Sim::with_antientropy(43, 4, 200);
    siblings_table(&mut sim);
    let mut keys = loaded(&mut sim, 300);
    let leaving = sim.node(3).unwrap().id().clone();
    let before = sim.node(0).unwrap().meta().ring.clone().unwrap();
    assert_eq!(
        sim.admin(
            0,
            AdminOp::Remove {
                node: leaving.clone(),
                force: false
            }
        ),
        Some(AdminReply::Accepted("leaving"))
    );
    assert_eq!(
        status(&mut sim, 1)
            .members
            .iter()
            .find(|m| m.id == leaving)
            .map(|m| m.status),
        Some("leaving")
    );
    let mut writer = Writer {
        submitted: Vec::new(),
        next: 0,
    };
    let gone = run_until(&mut sim, 300_000, |sim| {
        writer.write_some(sim, 1);
        settled_ring(sim).is_some() && members_everywhere_but(sim, &leaving, 3)
    });
    assert!(gone, "node4 left once its partitions moved");
    sim.run_for(TIMEOUT_MS);
    keys.extend(writer.acknowledged(&sim));
    let ring = settled_ring(&sim).unwrap();
    assert_eq!(ring.owned_by(&leaving), 0);
    let moved = (0..64)
        .filter(|&p| before.owners[p] != ring.owners[p])
        .count();
    let had = before.owned_by(&leaving);
    // node4's partitions, and a swap or two that keeps windows distinct.
    assert!(
        (had..=had + 4).contains(&moved),
        "{moved} partitions moved for node4's {had}"
    );
    for i in 0..3 {
        let share = ring.owned_by(sim.node(i).unwrap().id());
        assert!(
            (21..=22).contains(&share),
            "node{} owns {share} of 64",
            i + 1
        );
    }
    assert!(
        run_until(&mut sim, 120_000, |sim| on_every_replica(sim, &keys)),
        "the remaining replicas hold every acknowledged key"
    );
    assert!(
        run_until(&mut sim, 120_000, |sim| no_leftovers(sim, &keys)),
        "former replicas among the remaining nodes handed their copies over"
    );
    // A stale gossip naming node4 a member changes nothing.
    let mut stale = before_meta_with(&sim, &leaving);
    stale.members.get_mut(&leaving).unwrap().stamp += 100;
    sim.inject(
        0,
        3,
        Message::Member(MemberMessage::Gossip(Box::new(stale))),
    );
    sim.run_for(2_000);
    assert!(members_everywhere_but(&sim, &leaving, 3));
    // Nor does anything it sends count: a stale copy it delivers is not
    // stored (it could bring back a collected delete).
    let ghost = sim
        .local_object(1, "ev", b"k1")
        .expect("k1 on node2")
        .clone();
    sim.inject_as(
        0,
        leaving.clone(),
        Message::Handoff(crate::core::msg::HandoffMessage::Deliver {
            request: 1,
            hints: vec![(
                crate::core::types::TableName::new("ev").unwrap(),
                bytes::Bytes::from_static(b"ghost"),
                ghost,
            )],
        }),
    );
    sim.run_for(1_000);
    assert!(sim.local_object(0, "ev", b"ghost").is_none());
    for i in 0..3 {
        assert_eq!(
            sim.node(i).unwrap().sizes().hints_pending,
            0,
            "node{}",
            i + 1
        );
    }
    // Nor can it join again under its id.
    sim.crash(3);
    sim.wipe(3);
    sim.restart(3);
    sim.run_for(5_000);
    assert!(members_everywhere_but(&sim, &leaving, 3));
    for key in &keys {
        let read = sim.call(0, get("ev", key, Some(3)), TIMEOUT_MS);
        assert_eq!(values(&read), [key.clone()].into(), "{key}");
    }
}

/// Node 0's metadata with `member` put back as a member (what a node that
/// missed the removal would gossip).
fn before_meta_with(sim: &Sim, member: &NodeId) -> crate::core::meta::ClusterMeta {
    let mut meta = sim.node(0).unwrap().meta().clone();
    let record = sim
        .node(1)
        .unwrap()
        .meta()
        .members
        .values()
        .next()
        .unwrap()
        .clone();
    meta.removed.clear();
    meta.members.insert(member.clone(), record);
    meta
}

#[test]
fn a_dead_member_is_replaced_exactly_and_its_data_comes_from_the_other_replicas() {
    let mut sim = Sim::with_antientropy(44, 4, 200);
    siblings_table(&mut sim);
    let keys = loaded(&mut sim, 300);
    let dead = sim.node(3).unwrap().id().clone();
    let before = sim.node(0).unwrap().meta().ring.clone().unwrap();
    sim.crash(3);
    let new = NodeId::new("node5").unwrap();
    assert_eq!(
        sim.admin(
            0,
            AdminOp::Replace {
                old: dead.clone(),
                new: new.clone(),
                force: true
            }
        ),
        Some(AdminReply::Accepted("replacing"))
    );
    sim.run_for(2_000);
    let joiner = sim.add_joining_node();
    assert_eq!(sim.node(joiner).unwrap().id(), &new);
    let done = run_until(&mut sim, 300_000, |sim| {
        settled_ring(sim).is_some() && members_everywhere_but(sim, &dead, 3)
    });
    assert!(done, "node5 took over and node4 was removed");
    let ring = settled_ring(&sim).unwrap();
    for p in 0..64 {
        let expected = if before.owners[p] == dead {
            new.clone()
        } else {
            before.owners[p].clone()
        };
        assert_eq!(
            ring.owners[p], expected,
            "partition {p}: only node4's moved, to node5"
        );
    }
    assert!(
        run_until(&mut sim, 120_000, |sim| on_every_replica(sim, &keys)),
        "node5 holds node4's keys"
    );
}

#[test]
fn a_dead_member_is_removed_only_when_forced_and_hints_kept_for_it_go_to_the_new_replicas() {
    let mut sim = Sim::with_antientropy(45, 4, 200);
    siblings_table(&mut sim);
    let keys = loaded(&mut sim, 200);
    let dead = sim.node(3).unwrap().id().clone();
    sim.crash(3);
    sim.run_for(6_000);
    // Writes while it is down leave hints for it on the stand-ins.
    let mut more = Vec::new();
    for i in 0..200 {
        let key = format!("late{i}");
        written(&sim.call(i % 3, put("ev", &key, &key, None), TIMEOUT_MS));
        more.push(key);
    }
    let remove = |force| AdminOp::Remove {
        node: dead.clone(),
        force,
    };
    assert_eq!(
        sim.admin(0, remove(false)),
        Some(AdminReply::Accepted("leaving"))
    );
    // Its partitions move from the other replicas, but it never reports
    // that it handed over what it held: it stays a member, leaving.
    assert!(run_until(&mut sim, 120_000, |sim| settled_ring(sim).is_some()));
    sim.run_for(10_000);
    assert!(sim.node(0).unwrap().meta().leaving.contains_key(&dead));
    assert_eq!(
        sim.admin(0, remove(true)),
        Some(AdminReply::Accepted("leaving"))
    );
    assert!(run_until(&mut sim, 30_000, |sim| members_everywhere_but(
        sim, &dead, 3
    )));
    // The hints kept for it went to the keys' replicas instead.
    let mut every = keys;
    every.extend(more);
    assert!(
        run_until(&mut sim, 120_000, |sim| on_every_replica(sim, &every)
            && drained(sim).is_ok()),
        "{:?}",
        drained(&sim)
    );
}

#[test]
fn a_forced_removal_does_not_wait_for_data_only_the_dead_member_held() {
    // A table with n = 1 has partitions whose only copy is on the dead
    // member: a forced removal writes those off (lost with it) instead of
    // waiting for it forever, and the n = 3 table still moves whole.
    let mut sim = Sim::with_antientropy(46, 4, 200);
    siblings_table(&mut sim);
    let single = crate::core::table::TablePatch {
        n: Some(1),
        r: Some(1),
        w: Some(1),
        ..Default::default()
    };
    sim.create_table(0, "one", single);
    let pair = crate::core::table::TablePatch {
        n: Some(2),
        r: Some(1),
        w: Some(1),
        ..Default::default()
    };
    sim.create_table(0, "two", pair);
    sim.run_for(2_000);
    let keys = loaded(&mut sim, 200);
    let mut singles = Vec::new();
    for i in 0..100 {
        let key = format!("s{i}");
        written(&sim.call(i % 3, put("one", &key, &key, None), TIMEOUT_MS));
        singles.push(key);
    }
    let mut pairs = Vec::new();
    for i in 0..100 {
        let key = format!("t{i}");
        written(&sim.call(i % 3, with_w(put("two", &key, &key, None), 2), TIMEOUT_MS));
        pairs.push(key);
    }
    let dead = sim.node(3).unwrap().id().clone();
    let held_only_by_dead: Vec<&String> = singles
        .iter()
        .filter(|k| sim.replicas_of("one", k) == vec![3])
        .collect();
    assert!(
        !held_only_by_dead.is_empty(),
        "the dead member owns n = 1 partitions"
    );
    sim.crash(3);
    sim.run_for(6_000);
    assert_eq!(
        sim.admin(
            0,
            AdminOp::Remove {
                node: dead.clone(),
                force: true
            }
        ),
        Some(AdminReply::Accepted("leaving"))
    );
    assert!(
        run_until(&mut sim, 120_000, |sim| members_everywhere_but(
            sim, &dead, 3
        )),
        "the forced removal completed"
    );
    assert!(run_until(&mut sim, 120_000, |sim| on_every_replica(
        sim, &keys
    )));
    // Every n = 2 key had a copy on a survivor: each of its replicas now
    // holds it, in its own store (no read repaired anything).
    for key in &pairs {
        for replica in sim.replicas_of("two", key) {
            assert!(
                sim.local_object(replica, "two", key.as_bytes()).is_some(),
                "{key} missing on node{}",
                replica + 1
            );
        }
    }
    // The n = 1 keys the survivors held still read back.
    for key in singles.iter().filter(|k| !held_only_by_dead.contains(k)) {
        assert_eq!(
            values(&sim.call(0, get("one", key, None), TIMEOUT_MS)),
            [key.clone()].into_iter().collect()
        );
    }
}
