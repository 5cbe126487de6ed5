//! Sloppy quorum and hinted handoff across a real network partition: each
//! node in a network namespace of its own, the cut made with blackhole
//! routes. The cut-off primaries keep running the whole time (no restart
//! hides anything), and nothing crosses the cut, so only handoff after the
//! heal can bring them the writes (anti-entropy is off). Needs root, as
//! `ip netns` does; without it the test says so and passes nothing.

use std::time::{Duration, Instant};

use cairn_tests::netns::Network;
use cairn_tests::{wait_until, Cluster};

use super::handoff::{
    hints_pending, keys_with_primaries, status_of, wait_hints_delivered, write_each,
};

const TABLE: &str = r#"{"n":3,"r":2,"w":2,"merge":"siblings"}"#;

#[test]
fn writes_with_two_of_three_primaries_partitioned_away_succeed_and_reach_them_by_handoff() {
    let mut network = match Network::create(5) {
        Ok(network) => network,
        Err(why) => {
            eprintln!("skipped: no network namespaces here ({why})");
            return;
        }
    };
    let cluster = Cluster::start_in(
        &network,
        "partition",
        5,
        &["--partitions", "32", "--antientropy-every-ms", "0"],
    );
    cluster.create_table("events", TABLE);
    let keys = keys_with_primaries(&cluster.nodes[0], &["node4", "node5"], 200);
    assert_eq!(keys.len(), 200, "enough keys in the range");
    let near = [0, 1, 2];
    let far = [3, 4];

    // node4 and node5 keep running on the far side of the cut.
    network.split(&near, &far);
    let sees_down = |from: &[usize], ids: &[&str]| {
        for &index in from {
            wait_until(Duration::from_secs(15), "the far side seen down", || {
                ids.iter()
                    .all(|id| status_of(&cluster.nodes[index], id).as_deref() == Some("down"))
                    .then_some(())
            });
        }
    };
    sees_down(&near, &["node4", "node5"]);
    write_each(&cluster.nodes[0], &keys);
    let kept: u64 = cluster.nodes[..3].iter().map(hints_pending).sum();
    assert!(kept >= 200, "at least one hint per write kept: {kept}");
    // The far side has none of it: it answers alone with nothing.
    let far_read = cluster.nodes[3].call(
        "GET",
        &format!("/tables/events/keys/{}?r=2", keys[0]),
        &[],
        b"",
    );
    assert_eq!(far_read.status, 404, "{}", far_read.text());

    // Healed: every hint is delivered within SPEC's 30 s.
    network.heal();
    let healed = Instant::now();
    wait_hints_delivered(&cluster.nodes[..3]);
    eprintln!(
        "{kept} hints delivered {} ms after the partition healed",
        healed.elapsed().as_millis()
    );

    // Cut again: node4 and node5 alone answer every read with what was written.
    network.split(&near, &far);
    sees_down(&far, &["node1", "node2", "node3"]);
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
