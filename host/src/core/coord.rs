//! One small state machine per client get or put that this node coordinates.
//! They hold the answers and decide; the node carries out what they decide.

use bytes::Bytes;

use super::msg::{ClientReply, ReplicaError};
use super::object::{Object, Version};
use super::quorum::QuorumTracker;
use super::table::TableConfig;
use super::token::ClientContext;
use super::types::{NodeId, TableName};

/// Who is waiting for the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A client of this node's HTTP API.
    Local(u64),
    /// Nobody: a plugin merge's write-back.
    Background,
    /// A node that forwarded the request, with its request id.
    Remote {
        /// The forwarder.
        node: NodeId,
        /// Its request id.
        request: u64,
    },
}

/// A write that begins with a quorum read.
#[derive(Debug, Clone)]
pub enum AfterRead {
    /// A delete without a context: after the read, a tombstone covering it.
    Delete {
        /// `?w=`.
        w: u8,
    },
    /// A write whose context names versions this coordinator does not hold:
    /// what the read found is merged into its copy first, so the write
    /// supersedes there too what the client saw superseded (a stale copy
    /// must not keep a deleted value next to the new one).
    Write {
        /// `?w=`.
        w: u8,
        /// The value, or `None` for a delete with a context.
        value: Option<Bytes>,
        /// Its media type.
        content_type: String,
        /// The client's context.
        context: ClientContext,
    },
}

/// A coordinated read.
#[derive(Debug)]
pub struct GetFsm {
    /// Who waits.
    pub origin: Origin,
    /// Table.
    pub table: TableName,
    /// Key.
    pub key: Bytes,
    /// The table's config when the read began.
    pub config: TableConfig,
    quorum: QuorumTracker,
    answers: Vec<(NodeId, Object)>,
    merged: Object,
    replied: bool,
    /// When the read gives up waiting.
    pub deadline_ms: u64,
    /// Set when this read is the first half of a write.
    pub then: Option<AfterRead>,
    /// The batch the local copy it loaded waits for (`None`: it was durable).
    pub local_batch: Option<u64>,
}

impl GetFsm {
    /// A read needing `r` answers from `asked` replicas.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        origin: Origin,
        table: TableName,
        key: Bytes,
        config: TableConfig,
        r: u8,
        asked: Vec<NodeId>,
        deadline_ms: u64,
        then: Option<AfterRead>,
    ) -> Self {
        GetFsm {
            origin,
            table,
            key,
            config,
            quorum: QuorumTracker::new(usize::from(r), asked),
            answers: Vec::new(),
            merged: Object::default(),
            replied: false,
            deadline_ms,
            then,
            local_batch: None,
        }
    }

    /// Takes one replica's answer ("not found" is a good answer).
    pub fn record(&mut self, from: &NodeId, outcome: Result<Option<Object>, ReplicaError>) {
        match outcome {
            Ok(found) => {
                let object = found.unwrap_or_default();
                self.merged.merge(&object, self.config.merge);
                self.answers.push((from.clone(), object));
                self.quorum.record_ok(from);
            }
            Err(_) => self.quorum.record_failure(from),
        }
    }

    /// The answer to send now, once: the merged read when R is met, 503 when R
    /// can no longer be met or the deadline passed.
    pub fn take_reply(&mut self, now_ms: u64) -> Option<Result<Object, ClientReply>> {
        if self.replied {
            return None;
        }
        if self.quorum.is_met() {
            self.replied = true;
            return Some(Ok(self.merged.clone()));
        }
        if self.quorum.is_impossible() || now_ms >= self.deadline_ms {
            self.replied = true;
            return Some(Err(self.quorum_failure()));
        }
        None
    }

    fn quorum_failure(&self) -> ClientReply {
        ClientReply::QuorumNotReached {
            needed: self.quorum.needed() as u8,
            acked: self.quorum.ok_count() as u8,
        }
    }

    /// Whether the client has had its answer (the FSM may still collect
    /// answers for read repair).
    pub fn has_replied(&self) -> bool {
        self.replied
    }

    /// Whether nothing more will come: every replica answered, or time is up.
    pub fn is_done(&self, now_ms: u64) -> bool {
        self.replied && (self.quorum.all_answered() || now_ms >= self.deadline_ms)
    }

    /// Read repair: the merged object and the replicas whose copy differs from it.
    pub fn repairs(&self) -> (Object, Vec<NodeId>) {
        let stale = self
            .answers
            .iter()
            .filter(|(_, object)| *object != self.merged)
            .map(|(node, _)| node.clone())
            .collect();
        (self.merged.clone(), stale)
    }
}

/// A coordinated write.
#[derive(Debug)]
pub struct PutFsm {
    /// Who waits.
    pub origin: Origin,
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
        w: u8,
        asked: Vec<NodeId>,
        context_out: ClientContext,
        deadline_ms: u64,
    ) -> Self {
        PutFsm {
            origin,
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

    /// Whether nothing more will come.
    pub fn is_done(&self, now_ms: u64) -> bool {
        self.replied && (self.quorum.all_answered() || now_ms >= self.deadline_ms)
    }
}

/// The live versions of a read, sorted by (timestamp_ms, dot) as clients and
/// plugins see them.
pub fn live_sorted(object: &Object) -> Vec<Version> {
    let mut live: Vec<Version> = object.live().cloned().collect();
    live.sort_by(|a, b| (a.timestamp_ms, &a.dot).cmp(&(b.timestamp_ms, &b.dot)));
    live
}
