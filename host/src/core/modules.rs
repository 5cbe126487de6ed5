//! Plugin modules on this node: which it holds, which it is fetching from
//! peers, which uploads wait for the module to spread before they are
//! answered, and which merges wait for a module to arrive.
//!
//! Every node keeps the bytes of every live plugin, fetched from a peer (the
//! uploader first) and checked by sha256; this is the bookkeeping, the node
//! sends and stores.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use super::limits::MODULE_FETCH_RETRY_MS;
use super::msg::AdminReply;
use super::types::NodeId;

/// Lowercase hex sha256.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An upload's answer, waiting for the module to reach the other members.
pub struct UploadWait {
    /// The admin request to answer.
    pub admin_id: u64,
    /// The module uploaded.
    pub sha256: String,
    /// The answer, completed with how many members hold the module.
    pub reply: AdminReply,
    /// Members that said they store it.
    pub holders: HashSet<NodeId>,
    /// When it is answered whoever holds it.
    pub deadline_ms: u64,
}

/// The node's plugin-module bookkeeping.
#[derive(Default)]
pub struct Modules {
    /// Modules stored on this node.
    held: HashSet<String>,
    /// Modules asked from peers, with when to ask again.
    fetches: HashMap<String, u64>,
    /// Uploads taken here, answered once every member that is up holds the
    /// module (or after [`UPLOAD_SPREAD_WAIT_MS`](super::limits::UPLOAD_SPREAD_WAIT_MS)).
    uploads: Vec<UploadWait>,
    /// Merges waiting for their plugin's module to arrive from a peer: the
    /// jobs by sha256 (their inputs stay in the pending jobs; an expired job
    /// leaves the list at the next tick).
    awaiting: HashMap<String, Vec<u64>>,
}

impl Modules {
    /// Whether module `sha256` is stored here.
    pub fn holds(&self, sha256: &str) -> bool {
        self.held.contains(sha256)
    }

    /// Module `sha256` is stored here now; a fetch of it is over.
    pub fn hold(&mut self, sha256: &str) {
        self.fetches.remove(sha256);
        self.held.insert(sha256.to_owned());
    }

    /// Forgets the modules `stored` says are not in the store any more (a
    /// failed commit lost them), so they are fetched again; returns the
    /// uploads of modules no longer here, which can only fail now.
    pub fn forget_lost(&mut self, mut stored: impl FnMut(&str) -> bool) -> Vec<UploadWait> {
        self.held.retain(|sha256| stored(sha256));
        let (kept, failed) = std::mem::take(&mut self.uploads)
            .into_iter()
            .partition(|upload| self.held.contains(&upload.sha256));
        self.uploads = kept;
        failed
    }

    /// Whether a fetch of `sha256` may be sent at `now_ms`: never asked, or
    /// the last ask went unanswered for [`MODULE_FETCH_RETRY_MS`].
    pub fn fetch_due(&self, sha256: &str, now_ms: u64) -> bool {
        self.fetches
            .get(sha256)
            .is_none_or(|&again| again <= now_ms)
    }

    /// Whether `sha256` was asked for before (the uploader is asked first).
    pub fn asked_before(&self, sha256: &str) -> bool {
        self.fetches.contains_key(sha256)
    }

    /// A fetch of `sha256` went out (or found no peer) at `now_ms`.
    pub fn fetch_sent(&mut self, sha256: &str, now_ms: u64) {
        self.fetches
            .insert(sha256.to_owned(), now_ms + MODULE_FETCH_RETRY_MS);
    }

    /// Ask for `sha256` at the next chance, whenever it was last asked.
    pub fn fetch_now(&mut self, sha256: &str) {
        self.fetches.remove(sha256);
    }

    /// An upload waits for its module to spread.
    pub fn wait_for_spread(&mut self, upload: UploadWait) {
        self.uploads.push(upload);
    }

    /// Whether any upload waits.
    pub fn has_uploads(&self) -> bool {
        !self.uploads.is_empty()
    }

    /// `holder` stores module `sha256`.
    pub fn held_by(&mut self, sha256: &str, holder: &NodeId) {
        for upload in &mut self.uploads {
            if upload.sha256 == sha256 {
                upload.holders.insert(holder.clone());
            }
        }
    }

    /// The uploads to answer at `now_ms`: those every member in `up` holds,
    /// and those whose wait is over.
    pub fn uploads_ready(&mut self, now_ms: u64, up: &[NodeId]) -> Vec<UploadWait> {
        let (ready, waiting) =
            std::mem::take(&mut self.uploads)
                .into_iter()
                .partition(|u: &UploadWait| {
                    now_ms >= u.deadline_ms || up.iter().all(|id| u.holders.contains(id))
                });
        self.uploads = waiting;
        ready
    }

    /// Job `job` waits for module `sha256`; returns whether it is the first
    /// (only the first waiter asks at once, the rest wait for that fetch).
    pub fn await_module(&mut self, sha256: &str, job: u64) -> bool {
        let waiters = self.awaiting.entry(sha256.to_owned()).or_default();
        waiters.push(job);
        waiters.len() == 1
    }

    /// Module `sha256` arrived: the jobs that waited for it.
    pub fn waiters(&mut self, sha256: &str) -> Vec<u64> {
        self.awaiting.remove(sha256).unwrap_or_default()
    }

    /// Forgets waiting jobs that are no longer `pending` (they expired).
    pub fn forget_expired_waiters(&mut self, pending: impl Fn(u64) -> bool) {
        self.awaiting.retain(|_, jobs| {
            jobs.retain(|job| pending(*job));
            !jobs.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(sha256: &str, deadline_ms: u64) -> UploadWait {
        UploadWait {
            admin_id: 1,
            sha256: sha256.into(),
            reply: AdminReply::Accepted("stored"),
            holders: HashSet::new(),
            deadline_ms,
        }
    }

    #[test]
    fn a_fetch_is_asked_again_only_after_its_retry_interval() {
        let mut modules = Modules::default();
        assert!(modules.fetch_due("m", 0) && !modules.asked_before("m"));
        modules.fetch_sent("m", 100);
        assert!(!modules.fetch_due("m", 100 + MODULE_FETCH_RETRY_MS - 1));
        assert!(modules.fetch_due("m", 100 + MODULE_FETCH_RETRY_MS));
        modules.fetch_now("m");
        assert!(modules.fetch_due("m", 100));
        modules.fetch_sent("m", 100);
        modules.hold("m");
        assert!(modules.holds("m") && !modules.asked_before("m"));
    }

    #[test]
    fn an_upload_is_answered_once_every_up_member_holds_it_or_its_wait_is_over() {
        let mut modules = Modules::default();
        let b = NodeId::new("b").unwrap();
        modules.wait_for_spread(upload("m", 2_000));
        modules.wait_for_spread(upload("n", 1_000));
        assert!(modules
            .uploads_ready(0, std::slice::from_ref(&b))
            .is_empty());
        modules.held_by("m", &b);
        let ready = modules.uploads_ready(10, std::slice::from_ref(&b));
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].sha256, "m");
        assert_eq!(modules.uploads_ready(1_000, &[b]).len(), 1);
        assert!(!modules.has_uploads());
    }

    #[test]
    fn lost_modules_are_forgotten_and_their_uploads_handed_back() {
        let mut modules = Modules::default();
        modules.hold("kept");
        modules.hold("lost");
        modules.wait_for_spread(upload("kept", 10));
        modules.wait_for_spread(upload("lost", 10));
        let failed = modules.forget_lost(|sha| sha == "kept");
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].sha256, "lost");
        assert!(modules.holds("kept") && !modules.holds("lost"));
    }

    #[test]
    fn only_the_first_waiter_asks_and_expired_waiters_are_forgotten() {
        let mut modules = Modules::default();
        assert!(modules.await_module("m", 1));
        assert!(!modules.await_module("m", 2));
        modules.forget_expired_waiters(|job| job == 2);
        assert_eq!(modules.waiters("m"), vec![2]);
        assert!(modules.waiters("m").is_empty());
    }
}
