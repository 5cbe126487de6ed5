//! A coordinated write: counts durable acks until W, then answers.

use super::{Expires, Origin};
use crate::core::msg::{ClientReply, ReplicaError};
use crate::core::quorum::QuorumTracker;
use crate::core::token::ClientContext;
use crate::core::types::{NodeId, TableName};

use bytes::Bytes;

/// A coordinated write.
#[derive(Debug)]
pub struct PutFsm {
    /// Who waits.
    pub origin: Origin,
    /// The key written: a replica that misses the write marks its
    /// partition as known to diverge.
    pub slot: (TableName, Bytes),
    /// The nodes asked (primaries and stand-ins), in the order asked.
    pub asked: Vec<NodeId>,
    quorum: QuorumTracker,
    context_out: ClientContext,
    replied: bool,
    /// When the write gives up waiting.
    pub deadline_ms: u64,
}

impl PutFsm {
    /// A write needing `w` durable acks from `asked` replicas; `context_out` is
    /// what the client gets back on success.
    pub fn new(
        origin: Origin,
        slot: (TableName, Bytes),
        w: u8,
        asked: Vec<NodeId>,
        context_out: ClientContext,
        deadline_ms: u64,
    ) -> Self {
        PutFsm {
            origin,
            slot,
            asked: asked.clone(),
            quorum: QuorumTracker::new(usize::from(w), asked),
            context_out,
            replied: false,
            deadline_ms,
        }
    }

    /// Takes one replica's durable ack.
    pub fn record(&mut self, from: &NodeId, outcome: Result<(), ReplicaError>) {
        match outcome {
            Ok(()) => self.quorum.record_ok(from),
            Err(_) => self.quorum.record_failure(from),
        }
    }

    /// The answer to send now, once.
    pub fn take_reply(&mut self, now_ms: u64) -> Option<ClientReply> {
        if self.replied {
            return None;
        }
        if self.quorum.is_met() {
            self.replied = true;
            return Some(ClientReply::Written {
                context: self.context_out.clone(),
            });
        }
        if self.quorum.is_impossible() || now_ms >= self.deadline_ms {
            self.replied = true;
            return Some(ClientReply::QuorumNotReached {
                needed: self.quorum.needed() as u8,
                acked: self.quorum.ok_count() as u8,
            });
        }
        None
    }

    /// The replicas asked that have not answered.
    pub fn unanswered(&self) -> Vec<NodeId> {
        self.quorum.unanswered()
    }

    /// Whether nothing more will come.
    pub fn is_done(&self, now_ms: u64) -> bool {
        self.replied && (self.quorum.all_answered() || now_ms >= self.deadline_ms)
    }
}

impl Expires for PutFsm {
    fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }
}
