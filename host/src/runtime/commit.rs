//! The committing thread: writes each sealed batch durably while the node
//! loop goes on staging the next one, so a node never stops reading requests
//! and peer frames while LMDB syncs.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::core::store::StoreError;
use crate::storage::{BatchWriter, SealedBatch};

struct Job {
    batch: Arc<SealedBatch>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// A thread that owns a [`BatchWriter`] and commits one batch at a time.
pub struct Committer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts the thread, named after the node.
    pub fn start(node: &str, writer: BatchWriter) -> std::io::Result<Committer> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name(format!("{node}-commit"))
            .spawn(move || {
                for job in queue {
                    let _ = job.done.send(writer.write(&job.batch));
                }
            })?;
        Ok(Committer {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Hands `batch` to the thread; the answer says when it is durable (or why
    /// it is not). A stopped thread answers with an error.
    pub fn commit(&self, batch: Arc<SealedBatch>) -> oneshot::Receiver<Result<(), StoreError>> {
        let (done, answer) = oneshot::channel();
        let job = Job { batch, done };
        if let Some(jobs) = &self.jobs {
            if let Err(mpsc::SendError(job)) = jobs.send(job) {
                let _ = job
                    .done
                    .send(Err(StoreError("the committing thread stopped".into())));
            }
        }
        answer
    }
}

impl Drop for Committer {
    /// Lets the thread finish the batch it is writing, then joins it.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
