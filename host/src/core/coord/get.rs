//! A coordinated read: collects replicas' copies until R answered, then says
//! what the node does next ([`GetStep`]), and which replicas to repair.

use bytes::Bytes;

use super::{live_sorted, AfterRead, Expires, Origin};
use crate::core::msg::{ClientReply, ReplicaError};
use crate::core::object::Object;
use crate::core::quorum::QuorumTracker;
use crate::core::table::{MergeMode, TableConfig};
use crate::core::token::ClientContext;
use crate::core::types::{NodeId, TableName};

/// What a coordinated read asks the node to do next.
#[derive(Debug)]
pub enum GetStep {
    /// Nothing yet: more answers may come.
    Wait,
    /// Answer the client with the read (R replicas answered).
    Answer(ClientReply),
    /// The read failed (R cannot be met, or the deadline passed).
    Fail(ClientReply),
    /// A plugin table's read found concurrent versions: they are merged by
    /// the plugin before the client is answered.
    Reconcile(Object),
    /// The read was the first half of a write: what it found (`None` when
    /// R was not met; the write goes on without it) is merged into the
    /// coordinator's copy, then the write is made.
    Write {
        /// The merged read, when R answered.
        merged: Option<Object>,
        /// `?w=`.
        w: u8,
        /// The value, or `None` for a delete with a context.
        value: Option<Bytes>,
        /// Its media type.
        content_type: String,
        /// The client's context.
        context: ClientContext,
    },
    /// The read was the first half of a delete without a context: a
    /// tombstone superseding everything it found is written.
    Delete {
        /// The merged read.
        merged: Object,
        /// `?w=`.
        w: u8,
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

    /// The replicas asked that have not answered.
    pub fn unanswered(&self) -> Vec<NodeId> {
        self.quorum.unanswered()
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
    fn take_reply(&mut self, now_ms: u64) -> Option<Result<Object, ClientReply>> {
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

    /// What the node does next, decided once when the read is answered:
    /// answer, fail, merge by plugin, or go on with the write it began.
    pub fn step(&mut self, now_ms: u64) -> GetStep {
        let Some(answer) = self.take_reply(now_ms) else {
            return GetStep::Wait;
        };
        match (answer, self.then.take()) {
            (
                answer,
                Some(AfterRead::Write {
                    w,
                    value,
                    content_type,
                    context,
                }),
            ) => GetStep::Write {
                merged: answer.ok(),
                w,
                value,
                content_type,
                context,
            },
            (Ok(merged), Some(AfterRead::Delete { w })) => GetStep::Delete { merged, w },
            (Ok(merged), None)
                if self.config.merge == MergeMode::Plugin && merged.live_count() >= 2 =>
            {
                GetStep::Reconcile(merged)
            }
            (Ok(merged), None) => {
                let context = (!merged.versions.is_empty())
                    .then(|| ClientContext::of_versions(&merged.versions));
                GetStep::Answer(ClientReply::Read {
                    versions: live_sorted(&merged),
                    context,
                    merge: self.config.merge,
                    merged: None,
                    plugin_error: None,
                })
            }
            (Err(failure), _) => GetStep::Fail(failure),
        }
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

impl Expires for GetFsm {
    fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }
}
