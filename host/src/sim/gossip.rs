//! Gossip in the simulator: a change one node knows reaches every node in
//! O(log n) rounds with 3, 10, 50 and 200 nodes, and rounds between nodes
//! that agree cost a digest each, not the whole metadata.

use super::Sim;
use crate::core::meta::{MetaDigest, TableEntry};
use crate::core::msg::{MemberMessage, Message};
use crate::core::table::{TableConfig, TablePatch};
use crate::core::types::TableName;

/// The digest every running node holds, if they all hold the same.
fn agreed(sim: &Sim) -> Option<MetaDigest> {
    let digests: Vec<MetaDigest> = (0..sim.len())
        .filter_map(|i| sim.node(i))
        .map(|n| n.meta().digest())
        .collect();
    let first = *digests.first()?;
    digests.iter().all(|d| *d == first).then_some(first)
}

/// What spreading one change took: rounds (seconds: one round per node
/// per second), gossip messages and bytes in that time, and the bytes a
/// round costs once every node agrees.
#[derive(Debug)]
struct Spread {
    rounds: u64,
    messages: u64,
    bytes: u64,
    quiet_bytes_per_round: u64,
    whole_bytes: u64,
}

fn spread(nodes: usize, seed: u64) -> Spread {
    let mut sim = Sim::new(seed, nodes);
    let mut waited = 0;
    while agreed(&sim).is_none() {
        sim.run_for(1_000);
        waited += 1;
        assert!(waited < 120, "{nodes} nodes never agreed after forming");
    }
    // A table only node1 knows: merged from a peer's gossip, which a
    // node does not pass on by itself; only rounds spread it.
    let mut meta = sim.node(0).unwrap().meta().clone();
    let config = TableConfig::apply(None, &TablePatch::default()).unwrap();
    let origin = sim.node(1).unwrap().id().clone();
    meta.tables.insert(
        TableName::new("spread").unwrap(),
        TableEntry {
            config,
            stamp_ms: 1,
            origin,
        },
    );
    sim.inject(0, 1, Message::Member(MemberMessage::Gossip(Box::new(meta))));
    let (messages, bytes) = sim.gossip_sent;
    let mut rounds = 0;
    while agreed(&sim).is_none() {
        sim.run_for(1_000);
        rounds += 1;
        assert!(rounds < 100, "{nodes} nodes: no agreement after 100 rounds");
    }
    let (messages_after, bytes_after) = sim.gossip_sent;
    let whole = Message::Member(MemberMessage::Gossip(Box::new(
        sim.node(0).unwrap().meta().clone(),
    )));
    let whole_bytes = postcard::to_allocvec(&whole).map_or(0, |b| b.len() as u64);
    let quiet_start = sim.gossip_sent.1;
    sim.run_for(5_000);
    Spread {
        rounds,
        messages: messages_after - messages,
        bytes: bytes_after - bytes,
        quiet_bytes_per_round: (sim.gossip_sent.1 - quiet_start) / 5,
        whole_bytes,
    }
}

fn check(nodes: usize, seed: u64) {
    let spread = spread(nodes, seed);
    let log2 = (nodes as f64).log2().ceil() as u64;
    eprintln!(
        "gossip, {nodes} nodes: converged in {} rounds ({} messages, {} bytes, {} bytes a round); \
         agreed rounds cost {} bytes ({} per node; the whole metadata is {} bytes)",
        spread.rounds,
        spread.messages,
        spread.bytes,
        spread.bytes / spread.rounds.max(1),
        spread.quiet_bytes_per_round,
        spread.quiet_bytes_per_round / nodes as u64,
        spread.whole_bytes
    );
    assert!(
        spread.rounds <= 2 * log2 + 3,
        "{nodes} nodes took {} rounds (log2 n = {log2})",
        spread.rounds
    );
    assert!(
        spread.quiet_bytes_per_round / nodes as u64 <= 96,
        "an agreed round costs a digest, not the metadata: {spread:?}"
    );
}

#[test]
fn a_change_reaches_3_10_and_50_nodes_in_logarithmic_rounds() {
    for (nodes, seed) in [(3, 51), (10, 52), (50, 53)] {
        check(nodes, seed);
    }
}

#[test]
fn a_change_reaches_200_nodes_in_logarithmic_rounds() {
    check(200, 54);
}
