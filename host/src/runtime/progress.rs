//! Logs of what the background subsystems did: each peer message of
//! hinted handoff, anti-entropy, gossip and partition transfer — and each
//! timer tick, where they start their work — is handled inside a span
//! naming the subsystem and the peer, and what the handling changed in the
//! node's counters is logged in it. The core stays free of logging: these
//! lines are read off the same counters `/metrics` shows.

use crate::core::msg::Message;
use crate::core::node::Input;
use crate::core::stats::NodeStats;
use crate::core::types::NodeId;

/// The span an input is handled in, or `None` for client, replica and
/// forwarding traffic (requests have their own spans; the data path is
/// not slowed by more). Peer messages' spans are at `info`, so finished
/// work is logged at the default level; ticks' at `debug`.
pub fn span_of(input: &Input, node: &NodeId) -> Option<tracing::Span> {
    let (subsystem, from) = match input {
        Input::Tick { .. } => ("tick", None),
        Input::Peer { from, message } => {
            let subsystem = match message {
                Message::Handoff(_) => "handoff",
                Message::Sync(_) => "antientropy",
                Message::Member(_) => "gossip",
                Message::Transfer(_) => "transfer",
                Message::Reap(_) => "tombstones",
                _ => return None,
            };
            (subsystem, Some(from))
        }
        _ => return None,
    };
    Some(match from {
        Some(peer) => tracing::info_span!("background", %node, subsystem, %peer),
        None => tracing::debug_span!("background", %node, subsystem),
    })
}

/// Logs what changed between `before` and `after`: finished work at
/// `info` (hints delivered, objects repaired, partitions copied,
/// tombstones collected), the steps toward it at `debug`.
pub fn log_progress(before: &NodeStats, after: &NodeStats) {
    let delta = |a: u64, b: u64| b.saturating_sub(a);
    let (h0, h1) = (&before.handoff, &after.handoff);
    let delivered = delta(h0.hints_delivered, h1.hints_delivered);
    if delivered > 0 {
        tracing::info!(hints = delivered, "hints delivered to their owner");
    }
    let received = delta(h0.hints_received, h1.hints_received);
    if received > 0 {
        tracing::debug!(hints = received, "hints received as their owner");
    }
    let batches = delta(h0.batches_sent, h1.batches_sent);
    if batches > 0 {
        tracing::debug!(batches, "hint batches sent");
    }
    let (a0, a1) = (&before.antientropy, &after.antientropy);
    let repaired = delta(a0.objects_repaired, a1.objects_repaired);
    if repaired > 0 {
        tracing::info!(objects = repaired, "anti-entropy repaired objects here");
    }
    let sent = delta(a0.objects_sent, a1.objects_sent);
    if sent > 0 {
        tracing::debug!(
            objects = sent,
            bytes = delta(a0.bytes_sent, a1.bytes_sent),
            "anti-entropy sent objects"
        );
    }
    let exchanges = delta(a0.exchanges, a1.exchanges);
    if exchanges > 0 {
        tracing::trace!(exchanges, "anti-entropy exchanges started");
    }
    let (t0, t1) = (&before.transfer, &after.transfer);
    let completed = delta(t0.partitions_completed, t1.partitions_completed);
    if completed > 0 {
        tracing::info!(
            partitions = completed,
            "partitions copied for the ring move"
        );
    }
    let keys = delta(t0.keys_received, t1.keys_received);
    if keys > 0 {
        tracing::debug!(
            keys,
            bytes = delta(t0.bytes_received, t1.bytes_received),
            "transfer page received"
        );
    }
    let served = delta(t0.keys_sent, t1.keys_sent);
    if served > 0 {
        tracing::debug!(keys = served, "transfer page served");
    }
    let handed = delta(t0.leftovers_handed_over, t1.leftovers_handed_over);
    if handed > 0 {
        tracing::info!(keys = handed, "keys no longer replicated here handed over");
    }
    let collected = delta(before.reap.collected, after.reap.collected);
    if collected > 0 {
        tracing::debug!(tombstones = collected, "tombstones collected");
    }
    let deltas = delta(before.gossip.deltas_sent, after.gossip.deltas_sent);
    if deltas > 0 {
        tracing::debug!(sections = deltas, "gossip sent what a peer lacked");
    }
}
