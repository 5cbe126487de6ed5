//! Spreading plugin modules: the node sends and stores what the bookkeeping
//! in [`crate::core::modules`] decides (fetches, uploads waiting to spread).

use super::*;

impl Node {
    /// Module messages: a peer asking for a module, sending one, or saying it
    /// stored one this node is spreading.
    pub(super) fn on_module(
        &mut self,
        from: NodeId,
        message: ModuleMessage,
        store: &mut dyn LocalStore,
    ) {
        match message {
            ModuleMessage::Fetch { sha256 } => self.send_module(&from, sha256, store),
            ModuleMessage::Bytes { sha256, bytes } => self.receive_module(sha256, bytes, store),
            ModuleMessage::Stored { sha256 } => {
                self.modules.held_by(&sha256, &from);
                self.answer_uploads();
            }
        }
    }

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
                self.modules.wait_for_spread(UploadWait {
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
        if !self.modules.has_uploads() {
            return;
        }
        let up = self.other_members_up();
        let members = self.meta.members.len();
        for upload in self.modules.uploads_ready(self.now.mono_ms, &up) {
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
            .filter(|(sha, _)| !self.modules.holds(sha))
            .collect();
        for (sha256, origin) in wanted {
            if !self.modules.fetch_due(&sha256, now) {
                continue;
            }
            if let Ok(Some(_)) = store.load_module(&sha256) {
                self.modules.hold(&sha256);
                continue;
            }
            let others = self.other_members_up();
            let asked_before = self.modules.asked_before(&sha256);
            let peer = if !asked_before && others.contains(&origin) {
                Some(origin)
            } else if others.is_empty() {
                None
            } else {
                Some(others[(random % others.len() as u64) as usize].clone())
            };
            self.modules.fetch_sent(&sha256, now);
            if let Some(addr) = peer.and_then(|p| self.addr_of(&p)) {
                self.emit(Output::Send {
                    addr,
                    message: Message::Module(ModuleMessage::Fetch { sha256 }),
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
            let message = Message::Module(ModuleMessage::Bytes {
                sha256,
                bytes: Bytes::from(bytes),
            });
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
        if self.modules.holds(&sha256) || sha256_hex(&bytes) != sha256 {
            return;
        }
        if store.stage_module(&sha256, &bytes).is_err() {
            return;
        }
        self.modules.hold(&sha256);
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
                let message = Message::Module(ModuleMessage::Stored {
                    sha256: sha256.clone(),
                });
                self.emit(Output::Send { addr, message });
            }
        }
    }
}
