//! Spreading plugin modules: every node keeps the bytes of every live plugin,
//! fetching what it lacks from a peer (the uploader first), checked by sha256.

use sha2::{Digest, Sha256};

use super::*;

/// How long to wait for a module before asking another peer.
const MODULE_FETCH_RETRY_MS: u64 = 1_000;

/// Lowercase hex sha256.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How long an upload waits for the other members to hold its module before
/// it is answered with how many do (SPEC: a plugin reaches every up node
/// within 2 s).
pub(super) const UPLOAD_SPREAD_WAIT_MS: u64 = 2_000;

/// An upload's answer, waiting for the module to reach the other members.
pub(super) struct UploadWait {
    pub(super) admin_id: u64,
    pub(super) sha256: String,
    reply: AdminReply,
    pub(super) holders: HashSet<NodeId>,
    deadline_ms: u64,
}

impl Node {
    /// Answers an admin operation; an upload waits (bounded) until every
    /// member that is up holds the module, so its answer can say where it is.
    pub(super) fn answer_admin(&mut self, id: u64, reply: AdminReply) {
        let sha256 = match &reply {
            AdminReply::Plugin {
                entry,
                spread: None,
                ..
            } => entry.sha256.clone(),
            _ => None,
        };
        match sha256 {
            Some(sha256) => {
                self.uploads.push(UploadWait {
                    admin_id: id,
                    sha256,
                    reply,
                    holders: HashSet::new(),
                    deadline_ms: self.now.mono_ms + UPLOAD_SPREAD_WAIT_MS,
                });
                self.answer_uploads();
            }
            None => self.emit(Output::AdminReply { id, reply }),
        }
    }

    /// Answers the uploads every up member holds, or whose wait is over.
    pub(super) fn answer_uploads(&mut self) {
        if self.uploads.is_empty() {
            return;
        }
        let now = self.now.mono_ms;
        let up = self.other_members_up();
        let members = self.meta.members.len();
        let (ready, waiting): (Vec<UploadWait>, Vec<UploadWait>) =
            std::mem::take(&mut self.uploads)
                .into_iter()
                .partition(|u| now >= u.deadline_ms || up.iter().all(|id| u.holders.contains(id)));
        self.uploads = waiting;
        for upload in ready {
            let holding = 1 + upload.holders.len();
            let reply = match upload.reply {
                AdminReply::Plugin {
                    name,
                    entry,
                    created,
                    ..
                } => AdminReply::Plugin {
                    name,
                    entry,
                    created,
                    spread: Some((holding, members)),
                },
                other => other,
            };
            self.emit(Output::AdminReply {
                id: upload.admin_id,
                reply,
            });
        }
    }

    /// The members other than this node that it considers up.
    fn other_members_up(&self) -> Vec<NodeId> {
        self.meta
            .members
            .keys()
            .filter(|id| **id != self.config.id && self.status_of(id) == Status::Up)
            .cloned()
            .collect()
    }

    /// Asks a peer for every live plugin module this node does not hold.
    pub(super) fn fetch_missing_modules(&mut self, random: u64, store: &mut dyn LocalStore) {
        let now = self.now.mono_ms;
        let wanted: Vec<(String, NodeId)> = self
            .meta
            .plugins
            .values()
            .filter_map(|e| e.sha256.clone().map(|sha| (sha, e.origin.clone())))
            .filter(|(sha, _)| !self.modules_held.contains(sha))
            .collect();
        for (sha256, origin) in wanted {
            if self
                .module_fetches
                .get(&sha256)
                .is_some_and(|&again| again > now)
            {
                continue;
            }
            if let Ok(Some(_)) = store.load_module(&sha256) {
                self.modules_held.insert(sha256);
                continue;
            }
            let others = self.other_members_up();
            let asked_before = self.module_fetches.contains_key(&sha256);
            let peer = if !asked_before && others.contains(&origin) {
                Some(origin)
            } else if others.is_empty() {
                None
            } else {
                Some(others[(random % others.len() as u64) as usize].clone())
            };
            self.module_fetches
                .insert(sha256.clone(), now + MODULE_FETCH_RETRY_MS);
            if let Some(addr) = peer.and_then(|p| self.addr_of(&p)) {
                self.emit(Output::Send {
                    addr,
                    message: Message::FetchModule { sha256 },
                });
            }
        }
    }

    /// Answers a peer's fetch with the module, when this node has it.
    pub(super) fn send_module(&mut self, to: &NodeId, sha256: String, store: &mut dyn LocalStore) {
        let Ok(Some(bytes)) = store.load_module(&sha256) else {
            return;
        };
        if let Some(addr) = self.addr_of(to) {
            let message = Message::Module {
                sha256,
                bytes: Bytes::from(bytes),
            };
            self.emit(Output::Send { addr, message });
        }
    }

    /// Stores a module a peer sent, if its bytes match the sha256 it claims.
    pub(super) fn receive_module(
        &mut self,
        sha256: String,
        bytes: Bytes,
        store: &mut dyn LocalStore,
    ) {
        if self.modules_held.contains(&sha256) || sha256_hex(&bytes) != sha256 {
            return;
        }
        if store.stage_module(&sha256, &bytes).is_err() {
            return;
        }
        self.module_fetches.remove(&sha256);
        self.modules_held.insert(sha256.clone());
        self.emit(Output::ModuleArrived {
            sha256: sha256.clone(),
            bytes,
        });
        self.module_ready(&sha256);
        // The node that took the upload answers it once every member holds it.
        let origins: Vec<NodeId> = self
            .meta
            .plugins
            .values()
            .filter(|p| p.sha256.as_deref() == Some(sha256.as_str()) && p.origin != self.config.id)
            .map(|p| p.origin.clone())
            .collect();
        for origin in origins {
            if let Some(addr) = self.addr_of(&origin) {
                let message = Message::ModuleStored {
                    sha256: sha256.clone(),
                };
                self.emit(Output::Send { addr, message });
            }
        }
    }
}
