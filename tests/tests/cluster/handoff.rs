//! Sloppy quorum and hinted handoff between real processes, with nodes
//! made unreachable by kill -9 (a paused node would still get its buffered
//! messages on resume and hide a missing handoff). Anti-entropy is off, so
//! only handoff can bring the writes to their owners.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cairn_tests::{wait_until, Cluster, NodeProcess};

const TABLE: &str = r#"{"n":3,"r":2,"w":2,"merge":"siblings"}"#;

pub(crate) fn primaries(node: &NodeProcess, key: &str) -> BTreeSet<String> {
    let reply = node.call("GET", &format!("/tables/events/preflist/{key}"), &[], b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["primaries"]
        .as_array()
        .expect("primaries")
        .iter()
        .map(|id| id.as_str().unwrap_or_default().to_owned())
        .collect()
}

pub(crate) fn status_of(node: &NodeProcess, id: &str) -> Option<String> {
    let cluster = cairn_tests::try_call("GET", &node.url("/cluster"), &[], b"")
        .ok()?
        .json();
    cluster["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == id)
        .and_then(|m| m["status"].as_str().map(str::to_owned))
}

pub(crate) fn hints_pending(node: &NodeProcess) -> u64 {
    node.cluster()["hints_pending"]
        .as_object()
        .map_or(0, |owners| owners.values().filter_map(|v| v.as_u64()).sum())
}

/// Up to `count` keys `k{i}` whose primaries (as `node` sees them) include
/// every one of `ids`.
pub(crate) fn keys_with_primaries(node: &NodeProcess, ids: &[&str], count: usize) -> Vec<String> {
    let wanted: BTreeSet<String> = ids.iter().map(|id| id.to_string()).collect();
    (0..4_000)
        .map(|i| format!("k{i}"))
        .filter(|key| primaries(node, key).is_superset(&wanted))
        .take(count)
        .collect()
}

/// Writes each key with itself as value through `node`: every write 204.
pub(crate) fn write_each(node: &NodeProcess, keys: &[String]) {
    for key in keys {
        let path = format!("/tables/events/keys/{key}");
        let reply = node.call("PUT", &path, &[], key.as_bytes());
        assert_eq!(reply.status, 204, "write {key}: {}", reply.text());
    }
}

/// Waits until none of `stand_ins` keeps a hint (SPEC: within 30 s).
pub(crate) fn wait_hints_delivered(stand_ins: &[NodeProcess]) {
    wait_until(Duration::from_secs(30), "every hint delivered", || {
        stand_ins
            .iter()
            .all(|node| hints_pending(node) == 0)
            .then_some(())
    });
}

#[test]
fn writes_with_two_of_three_primaries_killed_succeed_and_reach_them_by_handoff() {
    let mut cluster = Cluster::start(
        "handoff",
        5,
        &["--partitions", "32", "--antientropy-every-ms", "0"],
    );
    cluster.create_table("events", TABLE);
    // Keys whose primaries include node4 and node5: two of their three
    // primaries will be unreachable.
    let keys = keys_with_primaries(&cluster.nodes[0], &["node4", "node5"], 200);
    assert_eq!(keys.len(), 200, "enough keys in the range");
    cluster.nodes[3].crash();
    cluster.nodes[4].crash();
    for node in &cluster.nodes[..3] {
        wait_until(Duration::from_secs(10), "node4 and node5 seen down", || {
            (status_of(node, "node4").as_deref() == Some("down")
                && status_of(node, "node5").as_deref() == Some("down"))
            .then_some(())
        });
    }
    let fallbacks = cluster.nodes[0].call(
        "GET",
        &format!("/tables/events/preflist/{}", keys[0]),
        &[],
        b"",
    );
    assert_eq!(
        fallbacks.json()["fallbacks"].as_array().map(Vec::len),
        Some(2),
        "two stand-ins named: {}",
        fallbacks.text()
    );
    write_each(&cluster.nodes[0], &keys);
    let kept: u64 = cluster.nodes[..3].iter().map(hints_pending).sum();
    assert!(kept >= 200, "at least one hint per write kept: {kept}");
    let owners_down = cluster.nodes[0].cluster()["hints"].clone();
    assert!(
        owners_down
            .as_object()
            .is_some_and(|o| o.values().all(|h| h["state"] == "owner down")),
        "{owners_down}"
    );

    // The owners come back: every hint is delivered within SPEC's 30 s.
    cluster.nodes[3].start_again();
    cluster.nodes[4].start_again();
    let back = Instant::now();
    wait_hints_delivered(&cluster.nodes[..3]);
    eprintln!(
        "{kept} hints delivered {} ms after the owners started again",
        back.elapsed().as_millis()
    );

    // The stand-ins (and the third primary) go away: the returned
    // primaries alone answer every read with what was written.
    for node in &mut cluster.nodes[..3] {
        node.crash();
    }
    for key in &keys {
        let reply =
            cluster.nodes[3].call("GET", &format!("/tables/events/keys/{key}?r=2"), &[], b"");
        assert_eq!(
            (reply.status, reply.text()),
            (200, key.clone()),
            "{key} from node4 and node5 alone"
        );
    }
}

#[test]
fn with_all_three_primaries_killed_a_stand_in_coordinates_and_handoff_delivers() {
    let mut cluster = Cluster::start(
        "standin",
        5,
        &["--partitions", "32", "--antientropy-every-ms", "0"],
    );
    cluster.create_table("events", TABLE);
    let keys = keys_with_primaries(&cluster.nodes[0], &["node3", "node4", "node5"], 50);
    assert!(
        keys.len() >= 20,
        "enough keys owned by node3-5: {}",
        keys.len()
    );
    for node in &mut cluster.nodes[2..] {
        node.crash();
    }
    wait_until(Duration::from_secs(10), "node3-5 seen down", || {
        ["node3", "node4", "node5"]
            .iter()
            .all(|id| status_of(&cluster.nodes[0], id).as_deref() == Some("down"))
            .then_some(())
    });
    write_each(&cluster.nodes[0], &keys);
    for node in &mut cluster.nodes[2..] {
        node.start_again();
    }
    wait_hints_delivered(&cluster.nodes[..2]);
    // node1 and node2 go away: the primaries alone hold every write.
    for node in &mut cluster.nodes[..2] {
        node.crash();
    }
    for key in &keys {
        let reply =
            cluster.nodes[2].call("GET", &format!("/tables/events/keys/{key}?r=3"), &[], b"");
        assert_eq!((reply.status, reply.text()), (200, key.clone()), "{key}");
    }
}
