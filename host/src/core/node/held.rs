//! Answers waiting for the batch they vouch for to become durable.
//!
//! Drivers commit batches in order and tell the node which are durable; the
//! node keeps here the answers that may not leave yet.

use super::{Output, Release};

/// Outputs held until their batch is durable, in the order they were produced.
#[derive(Default)]
pub struct HeldOutputs {
    /// Every batch up to and including this one is durable.
    durable: Option<u64>,
    held: Vec<(u64, Output)>,
}

impl HeldOutputs {
    /// The newest batch known durable (every earlier one is too).
    pub fn durable(&self) -> Option<u64> {
        self.durable
    }

    /// Whether batch `batch` (and so every earlier one) is durable.
    pub fn is_durable(&self, batch: u64) -> bool {
        self.durable.is_some_and(|d| batch <= d)
    }

    /// Returns `output` if it may be carried out now, or keeps it until its
    /// batch is durable.
    pub fn release_or_hold(&mut self, output: Output, release: Release) -> Option<Output> {
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
    pub fn durable_through(&mut self, batch: u64) -> Vec<Output> {
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
    pub fn take_all(&mut self) -> Vec<Output> {
        self.held.drain(..).map(|(_, output)| output).collect()
    }

    /// How many outputs wait.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether no output waits.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::msg::ClientReply;

    fn reply(id: u64) -> Output {
        Output::Reply {
            id,
            reply: ClientReply::UnknownTable,
        }
    }

    fn ids(outputs: Vec<Output>) -> Vec<u64> {
        outputs
            .into_iter()
            .map(|o| match o {
                Output::Reply { id, .. } => id,
                _ => unreachable!("only replies here"),
            })
            .collect()
    }

    #[test]
    fn answers_leave_only_once_their_batch_is_durable_and_in_order() {
        let mut held = HeldOutputs::default();
        assert!(held.release_or_hold(reply(1), Release::Now).is_some());
        assert!(held
            .release_or_hold(reply(2), Release::AfterBatch(0))
            .is_none());
        assert!(held
            .release_or_hold(reply(3), Release::AfterBatch(1))
            .is_none());
        assert!(held
            .release_or_hold(reply(4), Release::AfterBatch(0))
            .is_none());
        assert_eq!(ids(held.durable_through(0)), vec![2, 4]);
        assert_eq!(held.len(), 1);
        // An answer for a batch already durable leaves at once.
        assert!(held
            .release_or_hold(reply(5), Release::AfterBatch(0))
            .is_some());
        assert!(held
            .release_or_hold(reply(6), Release::AfterBatch(2))
            .is_none());
        assert_eq!(ids(held.durable_through(2)), vec![3, 6]);
        assert!(held.is_empty());
        // Hearing about an older batch again releases nothing and moves nothing back.
        assert!(held.durable_through(1).is_empty());
        assert!(held.is_durable(2));
    }
}
