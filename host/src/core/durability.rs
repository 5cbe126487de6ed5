//! Durability bookkeeping: which batch writes are staged into, which answers
//! wait for their batch to be durable, which coordinator copies count toward
//! a quorum once durable, and which batches a failed commit lost.
//!
//! Every output the node produces passes through the [`Outbox`] with the
//! [`Release`] it needs, so no answer leaves before what it vouches for is
//! durable, and an answer that vouched for a lost batch leaves as a failure.

use std::collections::VecDeque;

use super::limits::LOST_BATCH_RANGES_KEPT;
use super::msg::{AdminReply, ClientReply, ForwardMessage, Message, ReplicaError, ReplicaMessage};
use super::node::Output;
use super::store::{CopyState, StoreError};

/// When the driver may carry out an output.
///
/// Writes are staged into numbered batches: the driver seals the open batch
/// ([`Node::seal_batch`](super::node::Node::seal_batch)), commits it
/// (possibly while the node goes on staging the next one) and learns when it
/// is durable. An answer names the batch whose durability it vouches for, so
/// it leaves no earlier than that and no later than needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// At once: requests, and answers that depend on nothing staged here.
    Now,
    /// Once batch `n` and every batch before it are durable.
    AfterBatch(u64),
}

/// Batches a failed commit lost, and why.
#[derive(Debug, Clone)]
pub struct LostBatches {
    from: u64,
    through: u64,
    error: StoreError,
    /// What clients and coordinators are told.
    pub reason: String,
}

impl LostBatches {
    /// Whether batch `batch` was lost.
    pub fn covers(&self, batch: u64) -> bool {
        (self.from..=self.through).contains(&batch)
    }

    /// What a client whose request the loss spoiled is told: 507 when the
    /// disk was full, 503 otherwise.
    pub fn client_failure(&self) -> ClientReply {
        match self.error {
            StoreError::Full(_) => ClientReply::InsufficientStorage(self.reason.clone()),
            StoreError::Failed(_) => ClientReply::Unavailable(self.reason.clone()),
        }
    }

    /// What an answer that vouched for a lost batch becomes: a failure of the
    /// same request, so nobody waits for its timeout; `None` for answers
    /// whose asker retries by itself (joins, module transfers).
    fn fail(&self, output: Output) -> Option<Output> {
        let client_failure = || self.client_failure();
        let replica_failure = || ReplicaError::Storage(self.reason.clone());
        Some(match output {
            Output::Reply { id, .. } => Output::Reply {
                id,
                reply: client_failure(),
            },
            Output::AdminReply { id, .. } => Output::AdminReply {
                id,
                reply: AdminReply::Unavailable(self.reason.clone()),
            },
            Output::Send { addr, message } => {
                let message = match message {
                    Message::Replica(ReplicaMessage::WriteAck { request, .. }) => {
                        Message::Replica(ReplicaMessage::WriteAck {
                            request,
                            outcome: Err(replica_failure()),
                        })
                    }
                    Message::Replica(ReplicaMessage::ReadReply { request, .. }) => {
                        Message::Replica(ReplicaMessage::ReadReply {
                            request,
                            outcome: Err(replica_failure()),
                        })
                    }
                    Message::Forward(ForwardMessage::Reply { request, .. }) => {
                        Message::Forward(ForwardMessage::Reply {
                            request,
                            reply: client_failure(),
                        })
                    }
                    _ => return None,
                };
                Output::Send { addr, message }
            }
            Output::ModuleArrived { .. } => return None,
            kept @ (Output::Fatal(_) | Output::Reconcile { .. } | Output::SelectStorage { .. }) => {
                kept
            }
        })
    }
}

/// Outputs held until their batch is durable, in the order they were produced.
#[derive(Default)]
struct HeldOutputs {
    /// Every batch up to and including this one is durable.
    durable: Option<u64>,
    held: Vec<(u64, Output)>,
}

impl HeldOutputs {
    /// Whether batch `batch` (and so every earlier one) is durable.
    fn is_durable(&self, batch: u64) -> bool {
        self.durable.is_some_and(|d| batch <= d)
    }

    /// Returns `output` if it may be carried out now, or keeps it until its
    /// batch is durable.
    fn release_or_hold(&mut self, output: Output, release: Release) -> Option<Output> {
        match release {
            Release::Now => Some(output),
            Release::AfterBatch(batch) if self.is_durable(batch) => Some(output),
            Release::AfterBatch(batch) => {
                self.held.push((batch, output));
                None
            }
        }
    }

    /// Batch `batch` and every earlier one are durable: the outputs that waited
    /// for them, in the order they were produced.
    fn durable_through(&mut self, batch: u64) -> Vec<Output> {
        if self.is_durable(batch) {
            return Vec::new();
        }
        self.durable = Some(batch);
        let (ready, waiting): (Vec<_>, Vec<_>) =
            self.held.drain(..).partition(|(b, _)| *b <= batch);
        self.held = waiting;
        ready.into_iter().map(|(_, output)| output).collect()
    }

    /// Every output still waiting, in order: the batches they waited for
    /// will never be durable.
    fn take_all(&mut self) -> Vec<Output> {
        self.held.drain(..).map(|(_, output)| output).collect()
    }
}

/// The node's one way out: every output with its [`Release`], the batches,
/// and what waits for them.
#[derive(Default)]
pub struct Outbox {
    /// The batch writes are staged into now (batches sealed so far).
    open_batch: u64,
    /// Outputs in the order produced, with when each may leave.
    queued: VecDeque<(Output, Release)>,
    /// Answers waiting for their batch to be durable.
    held: HeldOutputs,
    /// Writes this node coordinates whose own copy counts toward W once its
    /// batch is durable: (batch, request), in batch order.
    local_copies: VecDeque<(u64, u64)>,
    /// Batches failed commits lost, newest last.
    lost: Vec<LostBatches>,
}

impl Outbox {
    /// The batch writes are staged into now.
    pub fn open_batch(&self) -> u64 {
        self.open_batch
    }

    /// Outputs queued to leave (some will be held once polled).
    pub fn queued_len(&self) -> usize {
        self.queued.len()
    }

    /// Answers held until their batch is durable.
    pub fn held_len(&self) -> usize {
        self.held.held.len()
    }

    /// Coordinator copies waiting for their batch to count toward W.
    pub fn local_copies_len(&self) -> usize {
        self.local_copies.len()
    }

    /// Ranges of lost batches remembered (at most [`LOST_BATCH_RANGES_KEPT`]).
    pub fn lost_len(&self) -> usize {
        self.lost.len()
    }

    /// Queues `output`, to leave as `release` says.
    pub fn push(&mut self, output: Output, release: Release) {
        self.queued.push_back((output, release));
    }

    /// Queues `output`: an answer waits for the open batch, a request leaves at once.
    pub fn emit(&mut self, output: Output) {
        let release = if output.after_commit() {
            Release::AfterBatch(self.open_batch)
        } else {
            Release::Now
        };
        self.push(output, release);
    }

    /// When an answer built from a local copy in `state` may leave.
    pub fn release_for(&self, state: CopyState) -> Release {
        match state {
            CopyState::Durable => Release::Now,
            CopyState::Sealed(batch) => Release::AfterBatch(batch),
            CopyState::Staged => Release::AfterBatch(self.open_batch),
        }
    }

    /// The coordinator's own copy for `request` was staged in the open batch.
    pub fn local_copy_staged(&mut self, request: u64) {
        self.local_copies.push_back((self.open_batch, request));
    }

    /// Next output to carry out now; answers whose batch is not durable yet
    /// are held back, and answers for a lost batch leave as failures.
    pub fn poll(&mut self) -> Option<Output> {
        loop {
            let (output, release) = self.queued.pop_front()?;
            // An answer a pending read built from a copy a failed commit lost.
            if let Release::AfterBatch(batch) = release {
                if let Some(lost) = self.lost.iter().find(|l| l.covers(batch)) {
                    match lost.fail(output) {
                        Some(failed) => return Some(failed),
                        None => continue,
                    }
                }
            }
            if let Some(output) = self.held.release_or_hold(output, release) {
                return Some(output);
            }
        }
    }

    /// Seals the open batch and returns its number.
    pub fn seal(&mut self) -> u64 {
        self.open_batch += 1;
        self.open_batch - 1
    }

    /// Batch `batch` and every earlier one are durable: held answers become
    /// ready; returns the requests whose coordinator copy is now durable.
    pub fn durable_through(&mut self, batch: u64) -> Vec<u64> {
        for output in self.held.durable_through(batch) {
            self.queued.push_back((output, Release::Now));
        }
        let mut requests = Vec::new();
        while let Some(&(staged_in, request)) = self.local_copies.front() {
            if staged_in > batch {
                break;
            }
            self.local_copies.pop_front();
            requests.push(request);
        }
        requests
    }

    /// Every batch after the last durable one was lost (`error`, told as
    /// `reason`): answers queued or held for them become failures, a new
    /// batch is opened, and the loss is remembered for answers still to
    /// come. Returns the loss and the requests whose coordinator copy was lost.
    pub fn lose(&mut self, error: &StoreError, reason: String) -> (LostBatches, Vec<u64>) {
        let lost = LostBatches {
            from: self.held.durable.map_or(0, |d| d + 1),
            through: self.open_batch,
            error: error.clone(),
            reason,
        };
        // Work from now on gets new numbers, so nothing new is mistaken for
        // what was lost.
        self.open_batch += 1;
        let queued: Vec<_> = self.queued.drain(..).collect();
        for (output, release) in queued {
            match release {
                Release::AfterBatch(batch) if lost.covers(batch) => {
                    if let Some(failed) = lost.fail(output) {
                        self.queued.push_back((failed, Release::Now));
                    }
                }
                kept => self.queued.push_back((output, kept)),
            }
        }
        for output in self.held.take_all() {
            if let Some(failed) = lost.fail(output) {
                self.queued.push_back((failed, Release::Now));
            }
        }
        let copies = self.local_copies.drain(..).map(|(_, r)| r).collect();
        self.lost.push(lost.clone());
        if self.lost.len() > LOST_BATCH_RANGES_KEPT {
            self.lost.remove(0);
        }
        (lost, copies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(id: u64) -> Output {
        Output::Reply {
            id,
            reply: ClientReply::UnknownTable,
        }
    }

    fn ids(outbox: &mut Outbox) -> Vec<u64> {
        std::iter::from_fn(|| outbox.poll())
            .map(|o| match o {
                Output::Reply { id, .. } => id,
                _ => unreachable!("only replies here"),
            })
            .collect()
    }

    #[test]
    fn answers_leave_only_once_their_batch_is_durable_and_in_order() {
        let mut outbox = Outbox::default();
        outbox.push(reply(1), Release::Now);
        outbox.push(reply(2), Release::AfterBatch(0));
        outbox.push(reply(3), Release::AfterBatch(1));
        outbox.push(reply(4), Release::AfterBatch(0));
        assert_eq!(ids(&mut outbox), vec![1]);
        outbox.durable_through(0);
        assert_eq!(ids(&mut outbox), vec![2, 4]);
        // An answer for a batch already durable leaves at once.
        outbox.push(reply(5), Release::AfterBatch(0));
        outbox.push(reply(6), Release::AfterBatch(2));
        assert_eq!(ids(&mut outbox), vec![5]);
        outbox.durable_through(2);
        assert_eq!(ids(&mut outbox), vec![3, 6]);
        // Hearing about an older batch again releases nothing and moves nothing back.
        outbox.durable_through(1);
        assert!(outbox.poll().is_none());
        assert!(outbox.held.is_durable(2));
    }

    #[test]
    fn answers_for_lost_batches_leave_as_failures_and_local_copies_are_handed_back() {
        let mut outbox = Outbox::default();
        outbox.local_copy_staged(7);
        outbox.push(reply(1), Release::AfterBatch(0));
        assert_eq!(outbox.seal(), 0);
        assert!(outbox.poll().is_none(), "held for batch 0");
        outbox.push(reply(2), Release::AfterBatch(1));
        let error = StoreError::Failed("disk gone".into());
        let (lost, copies) = outbox.lose(&error, "disk gone here".into());
        assert!(lost.covers(0) && lost.covers(1) && !lost.covers(2));
        assert_eq!(copies, vec![7]);
        // A read built from the lost batch later also leaves as a failure.
        outbox.push(reply(3), Release::AfterBatch(1));
        let failed: Vec<_> = std::iter::from_fn(|| outbox.poll()).collect();
        assert_eq!(failed.len(), 3);
        assert!(failed.iter().all(|o| matches!(
            o,
            Output::Reply {
                reply: ClientReply::Unavailable(reason),
                ..
            } if reason == "disk gone here"
        )));
        assert_eq!(outbox.open_batch(), 2);
    }
}
