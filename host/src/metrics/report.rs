//! The core's figures as Prometheus metrics: encoded at each scrape from
//! the [`NodeReport`] the node loop answered just before, so they are as
//! fresh as the scrape and never copied into a second set of counters.

use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::core::msg::NodeReport;

/// Holds the report of the scrape under way.
#[derive(Debug, Default)]
pub struct ReportCollector {
    current: Mutex<Option<(NodeReport, u64)>>,
}

impl ReportCollector {
    /// The report (and peer links refused, which the transport counts) the
    /// next encoding shows.
    pub fn set(&self, report: NodeReport, peer_links_refused: u64) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((report, peer_links_refused));
    }
}

/// Writes metrics of one family: counters or gauges, each with its labels.
struct Writer<'a> {
    encoder: DescriptorEncoder<'a>,
}

impl Writer<'_> {
    fn counter(&mut self, name: &str, help: &str, value: u64) -> std::fmt::Result {
        let metric = ConstCounter::new(value);
        let encoder = self
            .encoder
            .encode_descriptor(name, help, None, metric.metric_type())?;
        metric.encode(encoder)
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) -> std::fmt::Result {
        let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
        let encoder = self
            .encoder
            .encode_descriptor(name, help, None, metric.metric_type())?;
        metric.encode(encoder)
    }

    /// A counter family: one series per `(label value, count)`.
    fn counters(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        series: &[(&str, u64)],
    ) -> std::fmt::Result {
        let mut encoder = self.encoder.encode_descriptor(
            name,
            help,
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (value, count) in series {
            let labels = [(label, *value)];
            ConstCounter::new(*count).encode(encoder.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A gauge family: one series per `(label value, value)`.
    fn gauges(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        series: &[(&str, u64)],
    ) -> std::fmt::Result {
        let mut encoder = self.encoder.encode_descriptor(
            name,
            help,
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for (value, count) in series {
            let labels = [(label, *value)];
            let gauge = ConstGauge::new(i64::try_from(*count).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

impl Collector for ReportCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let Some((report, refused)) = current.as_ref() else {
            return Ok(());
        };
        let mut w = Writer { encoder };
        encode_report(&mut w, report, *refused)
    }
}

fn encode_report(w: &mut Writer, report: &NodeReport, peer_links_refused: u64) -> std::fmt::Result {
    let (stats, sizes, cluster) = (&report.stats, &report.sizes, &report.cluster);
    let client = &stats.client;
    w.counters(
        "client_operations",
        "Key operations received (from local clients or forwarded by peers), by operation.",
        "op",
        &[
            ("get", client.gets),
            ("put", client.puts),
            ("delete", client.deletes),
        ],
    )?;
    w.counters(
        "client_answers",
        "Answers to key operations that left this node, by outcome.",
        "outcome",
        &[
            ("ok", client.answered_ok),
            ("quorum_not_reached", client.answered_quorum_not_reached),
            ("refused", client.answered_refused),
            ("unavailable", client.answered_unavailable),
        ],
    )?;
    w.counter(
        "quorum_failures",
        "Key operations answered 503 because fewer than R or W replicas answered before the request timeout.",
        client.answered_quorum_not_reached,
    )?;
    w.counter(
        "client_forwarded",
        "Key operations handed to a replica of the key to coordinate.",
        client.forwarded,
    )?;
    w.counter(
        "stand_in_coordinations",
        "Writes coordinated here as a stand-in, no primary of the key being reachable.",
        client.coordinated_as_stand_in,
    )?;
    w.counters(
        "replica_writes",
        "Coordinators' writes this node handled as a replica, by outcome.",
        "outcome",
        &[
            ("stored", stats.replica.writes_stored),
            ("refused", stats.replica.writes_refused),
        ],
    )?;
    w.counter(
        "replica_reads",
        "Replica reads served for coordinators.",
        stats.replica.reads_served,
    )?;
    w.counter(
        "read_repairs",
        "Read repairs sent to stale replicas by this node as coordinator.",
        stats.replica.repairs_sent,
    )?;
    let peer = &stats.peer;
    w.counters(
        "peer_messages_received",
        "Peer messages received, by subsystem.",
        "subsystem",
        &[
            ("membership", peer.member),
            ("replica", peer.replica),
            ("module", peer.module),
            ("forward", peer.forward),
            ("antientropy", peer.sync),
            ("handoff", peer.handoff),
            ("reap", peer.reap),
            ("transfer", peer.transfer),
        ],
    )?;
    w.counter(
        "peer_links_refused",
        "Peer connections refused for failing the cluster-secret handshake.",
        peer_links_refused,
    )?;
    w.counter(
        "commit_batches_sealed",
        "Write batches sealed for the committing thread.",
        stats.batches.sealed,
    )?;
    w.counter(
        "commit_losses",
        "Times a commit failed and the batches after the last durable one were dropped.",
        stats.batches.losses,
    )?;
    let ae = &stats.antientropy;
    w.counter(
        "antientropy_exchanges",
        "Anti-entropy exchanges this node started.",
        ae.exchanges,
    )?;
    w.counter(
        "antientropy_exchanges_differing",
        "Anti-entropy exchanges whose Merkle roots differed.",
        ae.differing,
    )?;
    w.counter(
        "antientropy_objects_sent",
        "Objects sent to other replicas by anti-entropy.",
        ae.objects_sent,
    )?;
    w.counter(
        "antientropy_keys_repaired",
        "Objects received by anti-entropy that changed what this node stored.",
        ae.objects_repaired,
    )?;
    w.counter(
        "antientropy_sent_bytes",
        "Live bytes of the objects anti-entropy sent.",
        ae.bytes_sent,
    )?;
    w.counter(
        "antientropy_message_bytes",
        "Encoded bytes of every anti-entropy message sent.",
        ae.message_bytes,
    )?;
    w.counter(
        "antientropy_throttled_turns",
        "Anti-entropy turns cut short by the throttle.",
        ae.throttled_turns,
    )?;
    if let Some(status) = &cluster.antientropy {
        w.gauge(
            "antientropy_partitions_divergent",
            "Partitions waiting to be compared again as known divergent.",
            status.divergent,
        )?;
        w.gauge(
            "antientropy_partitions_never_compared",
            "(table, partition) pairs this node replicates and never compared yet.",
            status.never_compared,
        )?;
        let oldest_s = status.oldest_exchange_ms.map_or(0, |ms| ms / 1_000);
        w.gauge(
            "antientropy_oldest_exchange_timestamp_seconds",
            "When the least recently compared partition was compared (Unix seconds; 0: some never was).",
            oldest_s,
        )?;
        w.gauge(
            "antientropy_keys_held",
            "Keys this node holds objects for, by its Merkle trees.",
            status.keys_held,
        )?;
    }
    let handoff = &stats.handoff;
    w.counter(
        "hints_created",
        "Writes kept as hints for an unreachable primary.",
        handoff.hints_stored,
    )?;
    w.counter(
        "hints_delivered",
        "Hints removed after their owner stored them durably.",
        handoff.hints_delivered,
    )?;
    w.counter(
        "hints_received",
        "Hints received and stored as the owner.",
        handoff.hints_received,
    )?;
    w.counter(
        "hints_dropped",
        "Writes refused as hints because this node kept the most it may (their partitions are marked for anti-entropy).",
        cluster.hints_refused_full,
    )?;
    w.gauge(
        "hints_pending",
        "Hints this node keeps for other nodes.",
        sizes.hints_pending,
    )?;
    let targets: Vec<(&str, u64)> = cluster
        .hints
        .iter()
        .map(|h| (h.owner.as_str(), h.pending))
        .collect();
    w.gauges(
        "hints_pending_by_target",
        "Hints this node keeps, by the node they are for.",
        "target",
        &targets,
    )?;
    w.counter(
        "tombstones_collected",
        "Tombstones removed here.",
        stats.reap.collected,
    )?;
    w.gauge(
        "tombstones_pending",
        "Keys holding tombstones only, awaiting collection.",
        sizes.tombstones_pending,
    )?;
    w.counter(
        "gossip_rounds",
        "Gossip rounds started.",
        stats.gossip.rounds,
    )?;
    w.counter(
        "gossip_deltas_sent",
        "Gossip sections sent because a peer's digest differed.",
        stats.gossip.deltas_sent,
    )?;
    let mut by_status: Vec<(&str, u64)> = ["up", "down", "joining", "leaving"]
        .iter()
        .map(|s| (*s, 0))
        .collect();
    for member in &cluster.members {
        match by_status.iter_mut().find(|(s, _)| *s == member.status) {
            Some(entry) => entry.1 += 1,
            None => by_status.push((member.status, 1)),
        }
    }
    w.gauges(
        "members",
        "Members by status, as this node sees them.",
        "status",
        &by_status,
    )?;
    let owned: Vec<(&str, u64)> = cluster
        .members
        .iter()
        .map(|m| (m.id.as_str(), m.partitions as u64))
        .collect();
    w.gauges(
        "partitions_owned",
        "Ring partitions each member owns.",
        "member",
        &owned,
    )?;
    let transfer = &stats.transfer;
    w.counter(
        "transfer_received_keys",
        "Keys received by partition transfer.",
        transfer.keys_received,
    )?;
    w.counter(
        "transfer_received_bytes",
        "Bytes of objects received by partition transfer.",
        transfer.bytes_received,
    )?;
    w.counter(
        "transfer_sent_keys",
        "Keys sent to receivers of partition transfer.",
        transfer.keys_sent,
    )?;
    w.counter(
        "transfer_partitions_completed",
        "Partitions this node copied completely and marked moved.",
        transfer.partitions_completed,
    )?;
    w.counter(
        "transfer_leftovers_handed_over",
        "Keys this node no longer replicates, handed to their replicas as hints.",
        transfer.leftovers_handed_over,
    )?;
    let (moving, copies_total, copies_done) = cluster.ring_move.as_ref().map_or((0, 0, 0), |m| {
        (
            u64::from(m.partitions_moving),
            u64::from(m.copies_total),
            u64::from(m.copies_done),
        )
    });
    w.gauge(
        "ring_move_partitions",
        "Partitions whose owner changes in the ring move under way.",
        moving,
    )?;
    w.gauge(
        "ring_move_copies",
        "Copies the ring move under way needs.",
        copies_total,
    )?;
    w.gauge(
        "ring_move_copies_done",
        "Copies of the ring move under way durable at their new replica.",
        copies_done,
    )?;
    let left = cluster
        .transfer
        .as_ref()
        .map_or(0, |t| u64::from(t.partitions_left));
    w.gauge(
        "transfer_partitions_left",
        "Partitions this node must still copy for the ring move.",
        left,
    )?;
    w.gauge(
        "requests_in_flight",
        "Requests in flight in the node (client, forwarded, background, plugin jobs).",
        sizes.in_flight as u64,
    )?;
    Ok(())
}
