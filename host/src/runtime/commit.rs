//! The committing thread: writes sealed batches durably while the node loop
//! goes on staging, so a node never stops reading requests and peer frames
//! while LMDB syncs. When it finishes a commit it takes every batch sealed
//! meanwhile into the next one at once, without waiting for the loop.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc as tokio_mpsc;

use crate::core::store::StoreError;
use crate::storage::{BatchWriter, SealedBatch};

/// Batches up to this number are durable, or the commit that held them failed.
pub type Committed = (u64, Result<(), StoreError>);

/// A thread that owns a [`BatchWriter`] and commits sealed batches in order.
pub struct Committer {
    batches: Option<mpsc::Sender<(u64, Arc<SealedBatch>)>>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts the thread, named after the node; it reports each commit on
    /// the returned channel, which closes if the thread stops.
    pub fn start(
        node: &str,
        writer: BatchWriter,
    ) -> std::io::Result<(Committer, tokio_mpsc::UnboundedReceiver<Committed>)> {
        let (batches, queue) = mpsc::channel::<(u64, Arc<SealedBatch>)>();
        let (done, committed) = tokio_mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name(format!("{node}-commit"))
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut taken = vec![first];
                    taken.extend(queue.try_iter());
                    let through = taken.last().map_or(0, |(number, _)| *number);
                    let batches: Vec<_> = taken.into_iter().map(|(_, batch)| batch).collect();
                    let outcome = writer.write(&batches);
                    let failed = outcome.is_err();
                    if done.send((through, outcome)).is_err() || failed {
                        return;
                    }
                }
            })?;
        Ok((
            Committer {
                batches: Some(batches),
                thread: Some(thread),
            },
            committed,
        ))
    }

    /// Hands batch `number` to the thread (numbers increase). A stopped
    /// thread has closed its report channel, which the loop notices.
    pub fn commit(&self, number: u64, batch: Arc<SealedBatch>) {
        if let Some(batches) = &self.batches {
            let _ = batches.send((number, batch));
        }
    }
}

impl Drop for Committer {
    /// Lets the thread finish what it was handed, then joins it.
    fn drop(&mut self) {
        self.batches.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
