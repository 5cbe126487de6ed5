//! Counters the node keeps as it works, read through
//! [`Node::stats`](crate::core::node::Node::stats): what it was asked, what it answered,
//! what it stored for others and how its batches fared. They live inside the
//! protocol state, not in the driver, so the simulator and the real loop
//! count the same things, and so a later `/metrics` endpoint only reads them.
//!
//! Counters only grow (wrapping is out of reach at one increment per event),
//! and nothing here changes what the node does.

use super::msg::{ClientOp, ClientReply, Message};

/// What the node holds right now, read through `Node::sizes`: the
/// simulator checks these against their bounds while it runs and checks that
/// they drain once the cluster is quiet, so a leak shows up as a failure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeSizes {
    /// Requests in flight (client, forwarded, background, plugin jobs).
    pub in_flight: usize,
    /// Entries in the deadline index (one per request in flight).
    pub deadlines_watched: usize,
    /// Outputs queued to leave.
    pub outputs_queued: usize,
    /// Answers held until their batch is durable.
    pub outputs_held: usize,
    /// Coordinator copies waiting for their batch to count toward W.
    pub local_copies_waiting: usize,
    /// Ranges of lost batches remembered.
    pub lost_batch_ranges: usize,
    /// Ids this node remembers hearing from.
    pub heard_from: usize,
    /// Keys with a plugin merge being written back.
    pub writebacks: usize,
    /// Hints kept for other nodes (delivered once their owners are reachable).
    pub hints_pending: u64,
    /// Tombstones awaiting collection.
    pub tombstones_pending: u64,
}

/// Everything the node counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Client operations received and answers sent.
    pub client: ClientStats,
    /// Work done as a replica for coordinators.
    pub replica: ReplicaStats,
    /// Peer messages received, by subsystem.
    pub peer: PeerStats,
    /// Write batches sealed, made durable and lost.
    pub batches: BatchStats,
    /// Anti-entropy exchanges.
    pub antientropy: AntiEntropyStats,
    /// Hinted handoff, as stand-in and as owner.
    pub handoff: HandoffStats,
    /// Tombstone collection.
    pub reap: ReapStats,
    /// Partition transfer, as receiver and source.
    pub transfer: TransferStats,
    /// Gossip rounds and what they sent.
    pub gossip: GossipStats,
}

/// Gossip's work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// Rounds started (a digest sent to a random member).
    pub rounds: u64,
    /// Deltas sent: sections that differed from a peer's digest.
    pub deltas_sent: u64,
}

/// Partition transfer's work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Keys received and merged in as a new replica.
    pub keys_received: u64,
    /// Bytes of objects received.
    pub bytes_received: u64,
    /// Pages served to receivers as a source.
    pub pages_served: u64,
    /// Keys sent to receivers as a source.
    pub keys_sent: u64,
    /// Partitions this node copied completely and marked moved.
    pub partitions_completed: u64,
    /// Keys this node no longer replicates, turned into hints for their
    /// replicas (and their plain copies removed).
    pub leftovers_handed_over: u64,
}

/// Tombstone collection's work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReapStats {
    /// Tombstones removed here (as the deciding primary or told by it).
    pub collected: u64,
    /// Checks this node started that some member did not answer in time.
    pub checks_timed_out: u64,
}

/// Hinted handoff's work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandoffStats {
    /// Writes kept as hints for an unreachable primary.
    pub hints_stored: u64,
    /// Batches of hints sent to their owners.
    pub batches_sent: u64,
    /// Hints removed after their owner stored them durably.
    pub hints_delivered: u64,
    /// Hints received and stored as the owner.
    pub hints_received: u64,
}

/// Anti-entropy's work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AntiEntropyStats {
    /// Exchanges this node started (roots sent).
    pub exchanges: u64,
    /// Exchanges whose roots differed (leaves received).
    pub differing: u64,
    /// Objects sent to other replicas.
    pub objects_sent: u64,
    /// Objects received that changed what this node stored.
    pub objects_repaired: u64,
    /// Live bytes of the objects sent.
    pub bytes_sent: u64,
    /// Encoded bytes of every anti-entropy message sent (roots, leaves,
    /// items, pulls and objects).
    pub message_bytes: u64,
    /// Turns that stopped early because the throttle's tokens ran out.
    pub throttled_turns: u64,
}

/// Client operations, counted where they are coordinated or forwarded from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// GETs received (from a local client or forwarded by a peer).
    pub gets: u64,
    /// PUTs received.
    pub puts: u64,
    /// DELETEs received.
    pub deletes: u64,
    /// Restored objects received (`cairn restore`).
    pub restores: u64,
    /// Operations this node handed to a replica of the key to coordinate.
    pub forwarded: u64,
    /// Writes coordinated here as a stand-in, no primary of the key being
    /// reachable.
    pub coordinated_as_stand_in: u64,
    /// Answers that left this node saying the operation succeeded (a read,
    /// found or not, or a write).
    pub answered_ok: u64,
    /// Answers that left saying too few replicas answered in time.
    pub answered_quorum_not_reached: u64,
    /// Answers that left refusing the request as the client's mistake (bad
    /// input, an unknown table, too many siblings).
    pub answered_refused: u64,
    /// Answers that left saying the node could not serve it now (overloaded,
    /// unavailable, out of storage).
    pub answered_unavailable: u64,
}

/// A replica's share of the work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    /// Coordinators' writes this node stored (or already had).
    pub writes_stored: u64,
    /// Coordinators' writes this node could not store.
    pub writes_refused: u64,
    /// Replica reads this node served.
    pub reads_served: u64,
    /// Read repairs this node sent to stale replicas as a coordinator.
    pub repairs_sent: u64,
}

/// Peer messages received, by the subsystem they belong to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Membership: pings, gossip, joins.
    pub member: u64,
    /// Replica traffic: writes, reads, repairs and their answers.
    pub replica: u64,
    /// Plugin module spreading.
    pub module: u64,
    /// Forwarded client operations and their answers.
    pub forward: u64,
    /// Anti-entropy.
    pub sync: u64,
    /// Hinted handoff.
    pub handoff: u64,
    /// Tombstone collection.
    pub reap: u64,
    /// Partition transfer.
    pub transfer: u64,
}

/// Write batches: the unit in which staged writes become durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Batches sealed for the driver to commit.
    pub sealed: u64,
    /// The newest batch the driver reported durable (every earlier one is too).
    pub durable_through: u64,
    /// Times the driver reported the batches after the last durable one lost.
    pub losses: u64,
}

impl ClientStats {
    /// Counts an operation received.
    pub fn count_request(&mut self, op: &ClientOp) {
        match op {
            ClientOp::Get { .. } => self.gets += 1,
            ClientOp::Put { value: Some(_), .. } => self.puts += 1,
            ClientOp::Put { value: None, .. } => self.deletes += 1,
            ClientOp::Restore { .. } => self.restores += 1,
        }
    }

    /// Counts an answer leaving the node, by what it says.
    pub fn count_answer(&mut self, reply: &ClientReply) {
        let counter = match reply {
            ClientReply::Read { .. } | ClientReply::Written { .. } => &mut self.answered_ok,
            ClientReply::QuorumNotReached { .. } => &mut self.answered_quorum_not_reached,
            ClientReply::UnknownTable
            | ClientReply::TooManySiblings { .. }
            | ClientReply::BadRequest(_) => &mut self.answered_refused,
            ClientReply::Overloaded
            | ClientReply::Unavailable(_)
            | ClientReply::InsufficientStorage(_) => &mut self.answered_unavailable,
        };
        *counter += 1;
    }

    /// All answers that left, whatever they said.
    pub fn answers(&self) -> u64 {
        self.answered_ok
            + self.answered_quorum_not_reached
            + self.answered_refused
            + self.answered_unavailable
    }
}

impl PeerStats {
    /// Counts a message received from a peer.
    pub fn count(&mut self, message: &Message) {
        match message {
            Message::Hello { .. } => {}
            Message::Member(_) => self.member += 1,
            Message::Replica(_) => self.replica += 1,
            Message::Module(_) => self.module += 1,
            Message::Forward(_) => self.forward += 1,
            Message::Sync(_) => self.sync += 1,
            Message::Handoff(_) => self.handoff += 1,
            Message::Reap(_) => self.reap += 1,
            Message::Transfer(_) => self.transfer += 1,
        }
    }
}
