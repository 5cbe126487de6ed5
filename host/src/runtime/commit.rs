//! The committing thread: writes sealed batches durably while the node loop
//! goes on staging, so a node never stops reading requests and peer frames
//! while LMDB syncs. When it finishes a commit it takes every batch sealed
//! meanwhile into the next one at once, without waiting for the loop.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc as tokio_mpsc;

use crate::core::store::StoreError;
use crate::metrics::NodeMetrics;
use crate::storage::{BatchWriter, SealedBatch};

/// Batches up to this number are durable, or the commit that held them failed.
pub type Committed = (u64, Result<(), StoreError>);

/// What the node loop hands the thread.
enum Job {
    /// Write batch `number`.
    Commit(u64, Arc<SealedBatch>),
    /// The loop has taken in a failed commit and dropped every batch it had
    /// sealed until then: the thread may write again.
    Resume,
}

/// A thread that owns a [`BatchWriter`] and commits sealed batches in order.
pub struct Committer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts the thread, named after the node; it reports each commit on
    /// the returned channel, which closes if the thread stops. After a failed
    /// commit it drops every batch handed to it until [`Committer::resume`]:
    /// those batches were staged over the lost ones, and the loop drops them
    /// too.
    pub fn start(
        node: &str,
        writer: BatchWriter,
        metrics: Arc<NodeMetrics>,
    ) -> std::io::Result<(Committer, tokio_mpsc::UnboundedReceiver<Committed>)> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (done, committed) = tokio_mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name(format!("{node}-commit"))
            .spawn(move || {
                while let Ok(job) = queue.recv() {
                    let Job::Commit(first, batch) = job else {
                        continue;
                    };
                    let mut through = first;
                    let mut batches = vec![batch];
                    for job in queue.try_iter() {
                        if let Job::Commit(number, batch) = job {
                            through = number;
                            batches.push(batch);
                        }
                    }
                    let started = std::time::Instant::now();
                    let outcome = writer.write(&batches);
                    if outcome.is_ok() {
                        let records = batches.iter().map(|b| b.records()).sum();
                        metrics.commit(records, started.elapsed());
                    }
                    let failed = outcome.is_err();
                    if done.send((through, outcome)).is_err() {
                        return;
                    }
                    if failed {
                        // Until the loop has dropped what it staged meanwhile.
                        while let Ok(job) = queue.recv() {
                            if matches!(job, Job::Resume) {
                                break;
                            }
                        }
                    }
                }
            })?;
        Ok((
            Committer {
                jobs: Some(jobs),
                thread: Some(thread),
            },
            committed,
        ))
    }

    /// Hands batch `number` to the thread (numbers increase). A stopped
    /// thread has closed its report channel, which the loop notices.
    pub fn commit(&self, number: u64, batch: Arc<SealedBatch>) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Job::Commit(number, batch));
        }
    }

    /// After a failed commit: every batch handed over before this call is
    /// dropped, every one after it is written.
    pub fn resume(&self) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Job::Resume);
        }
    }
}

impl Drop for Committer {
    /// Lets the thread finish what it was handed, then joins it.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
