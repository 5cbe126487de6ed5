//! Anti-entropy between real processes: replicas that missed writes, and a
//! node that lost its disk, get every key back without any client read.
//! Each check reads from the repaired node alone, with every other node
//! paused, so nothing but what it holds can answer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_tests::{wait_until, Cluster, NodeProcess};
use serde_json::Value;

const TABLE: &str = r#"{"n":3,"r":2,"w":2,"merge":"siblings"}"#;

/// Writes `count` keys `k{i}` = `v{i}` through `node` with `w`, from a
/// few clients at once.
fn write_keys(node: &NodeProcess, count: usize, w: u8) {
    std::thread::scope(|scope| {
        for client in 0..4 {
            scope.spawn(move || {
                for i in (client..count).step_by(4) {
                    let reply = node.call(
                        "PUT",
                        &format!("/tables/events/keys/k{i}?w={w}"),
                        &[],
                        format!("v{i}").as_bytes(),
                    );
                    assert_eq!(reply.status, 204, "write k{i}: {}", reply.text());
                }
            });
        }
    });
}

/// The node's anti-entropy report.
fn antientropy(node: &NodeProcess) -> Value {
    node.cluster()["antientropy"].clone()
}

/// Waits until `cluster.nodes[index]` holds `keys` keys (by its
/// anti-entropy trees; no client reads anywhere meanwhile).
fn wait_held(cluster: &Cluster, index: usize, keys: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let report = antientropy(&cluster.nodes[index]);
        if report["trees_built"] == true && report["keys_held"].as_u64() == Some(keys) {
            return;
        }
        if std::time::Instant::now() > deadline {
            let all: Vec<Value> = cluster.nodes.iter().map(antientropy).collect();
            panic!("node{} holds too few keys after 60 s: {all:#?}", index + 1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads every key from `cluster.nodes[index]` alone (r=1, every other
/// node paused): each must hold its value.
fn assert_holds_every_key(cluster: &Cluster, index: usize, count: usize) {
    let others: Vec<&NodeProcess> = cluster
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, node)| node)
        .collect();
    for node in &others {
        node.pause();
    }
    let node = &cluster.nodes[index];
    let missing: Vec<usize> = (0..count)
        .filter(|i| {
            let reply = node.call("GET", &format!("/tables/events/keys/k{i}?r=1"), &[], b"");
            reply.status != 200 || reply.text() != format!("v{i}")
        })
        .collect();
    for node in &others {
        node.resume();
    }
    assert!(
        missing.is_empty(),
        "{} of {count} keys missing on {}, e.g. {:?}",
        missing.len(),
        node.id,
        &missing[..missing.len().min(5)]
    );
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[test]
fn a_replica_that_missed_writes_converges_without_any_client_read() {
    let mut cluster = Cluster::start("ae-missed", 3, &["--partitions", "32"]);
    cluster.create_table("events", TABLE);
    cluster.nodes[2].crash();
    write_keys(&cluster.nodes[0], 600, 2);
    cluster.nodes[2].start_again();
    cluster.wait_formed();
    wait_held(&cluster, 2, 600);
    assert_holds_every_key(&cluster, 2, 600);

    // Every partition is compared within the sweep bound, and the report
    // says what it cost.
    for node in &cluster.nodes {
        let report = wait_until(Duration::from_secs(20), "a whole sweep", || {
            let report = antientropy(node);
            report["oldest_exchange_ms"].as_u64()?;
            Some(report)
        });
        assert_eq!(report["trees_built"], true);
        assert_eq!(report["partitions"], 32, "n3 on 3 nodes: every partition");
        assert_eq!(report["never_compared"], 0);
        let age = wall_ms().saturating_sub(report["oldest_exchange_ms"].as_u64().unwrap());
        assert!(
            age < 60_000,
            "oldest comparison {age} ms ago on {}",
            node.id
        );
    }
    let sent: u64 = cluster.nodes[..2]
        .iter()
        .map(|n| antientropy(n)["bytes_sent"].as_u64().unwrap())
        .sum();
    assert!(sent > 0, "the repairs were sent by the other replicas");
}

#[test]
fn a_wiped_node_is_refilled_by_antientropy_without_any_client_read() {
    let mut cluster = Cluster::start("ae-wiped", 3, &["--partitions", "32"]);
    cluster.create_table("events", TABLE);
    write_keys(&cluster.nodes[0], 2_000, 3);
    cluster.nodes[2].wipe();
    cluster.nodes[2].start_again_until_admitted(3);
    cluster.wait_formed();
    wait_held(&cluster, 2, 2_000);
    let report = antientropy(&cluster.nodes[2]);
    assert!(
        report["keys_repaired"].as_u64() >= Some(2_000),
        "every key came back through anti-entropy: {report}"
    );
    assert_holds_every_key(&cluster, 2, 2_000);
    // It minted no dot it had used before the wipe: a write through it is
    // a new version beside the old one.
    let reply = cluster.nodes[2].call("PUT", "/tables/events/keys/k0?w=3", &[], b"new");
    assert_eq!(reply.status, 204);
    let values = cluster.nodes[0]
        .call("GET", "/tables/events/keys/k0?r=3", &[], b"")
        .sibling_values();
    assert_eq!(values, vec!["new", "v0"]);
}

#[test]
fn a_key_deleted_while_a_replica_was_down_stays_deleted_once_it_returns() {
    let args = [
        "--partitions",
        "32",
        "--request-timeout-ms",
        "1000",
        "--tombstone-grace-ms",
        "3000",
    ];
    let mut cluster = Cluster::start("ae-deleted", 3, &args);
    cluster.create_table("events", TABLE);
    write_keys(&cluster.nodes[0], 100, 3);
    cluster.nodes[2].crash();
    for i in 0..100 {
        let reply = cluster.nodes[0].call("DELETE", &format!("/tables/events/keys/k{i}"), &[], b"");
        assert_eq!(reply.status, 204, "delete k{i}: {}", reply.text());
    }
    cluster.nodes[2].start_again();
    cluster.wait_formed();
    // Anti-entropy brings it the tombstones (no client read anywhere).
    wait_until(
        Duration::from_secs(60),
        "the tombstones to reach the returned replica",
        || (antientropy(&cluster.nodes[2])["keys_repaired"].as_u64()? >= 100).then_some(()),
    );
    // Read from it alone: every key is deleted there too.
    assert_deleted_on_node3_alone(&cluster, "before collection");
    // Nor did its old copies bring them back anywhere.
    assert_deleted_everywhere(&cluster);
    // Every replica holds every tombstone now: after the grace they are
    // collected on every node, and the keys stay deleted.
    wait_until(
        Duration::from_secs(60),
        "every tombstone to be collected",
        || {
            let reports: Vec<Value> = cluster.nodes.iter().map(|n| n.cluster()).collect();
            let pending: u64 = reports
                .iter()
                .map(|r| r["tombstones_pending"].as_u64())
                .sum::<Option<u64>>()?;
            let collected: u64 = reports
                .iter()
                .map(|r| r["tombstones"]["collected"].as_u64())
                .sum::<Option<u64>>()?;
            (pending == 0 && collected >= 300).then_some(())
        },
    );
    assert_deleted_on_node3_alone(&cluster, "after collection");
    assert_deleted_everywhere(&cluster);
}

/// Reads k0..k99 from node3 alone (r=1, the others paused): all 404.
fn assert_deleted_on_node3_alone(cluster: &Cluster, when: &str) {
    for node in &cluster.nodes[..2] {
        node.pause();
    }
    let back: Vec<usize> = (0..100)
        .filter(|i| {
            cluster.nodes[2]
                .call("GET", &format!("/tables/events/keys/k{i}?r=1"), &[], b"")
                .status
                != 404
        })
        .collect();
    for node in &cluster.nodes[..2] {
        node.resume();
    }
    assert!(
        back.is_empty(),
        "{when}: deleted keys came back on node3: {back:?}"
    );
}

/// Reads k0..k99 with r=3: all 404.
fn assert_deleted_everywhere(cluster: &Cluster) {
    for i in 0..100 {
        let reply =
            cluster.nodes[0].call("GET", &format!("/tables/events/keys/k{i}?r=3"), &[], b"");
        assert_eq!(reply.status, 404, "k{i}: {}", reply.text());
    }
}
