//! `merge: plugin`: the coordinator hands two or more live versions to the
//! table's plugin (run by the driver, off the node loop), answers the merge,
//! and writes it back as an ordinary version whose context is exactly the
//! merged versions. Any plugin failure answers the siblings and loses nothing.

use cairn_sdk::Sibling;

use super::*;

/// A merge waiting for its plugin.
pub(super) struct Job {
    /// Who waits for the read (`None`: a merge triggered by a crowded write).
    origin: Option<Origin>,
    table: TableName,
    key: Bytes,
    config: TableConfig,
    /// What the read merged causally.
    object: Object,
    /// The live versions given to the plugin, sorted by (timestamp_ms, dot).
    versions: Vec<Version>,
    /// When to give up on the plugin.
    pub(super) deadline_ms: u64,
}

/// A plugin merge's 200, waiting for its write-back to be minted so that it
/// can carry the write-back's context.
pub(super) struct MergedAnswer {
    origin: Origin,
    /// The merged value, as the one version answered.
    version: Version,
    /// How many versions were merged (`X-Cairn-Merged`).
    merged: u32,
    /// What the read saw: the context when no write-back is minted.
    pub(super) read_context: ClientContext,
}

impl Job {
    /// What the plugin is given: the live versions, oldest first.
    fn input(&self) -> ReconcileInput {
        ReconcileInput {
            table: self.table.to_string(),
            key: self.key.to_vec(),
            siblings: self
                .versions
                .iter()
                .map(|v| Sibling {
                    value: v.value.as_deref().unwrap_or_default().to_vec(),
                    content_type: v.content_type.clone(),
                    timestamp_ms: v.timestamp_ms,
                })
                .collect(),
        }
    }
}

impl MergedAnswer {
    /// The reply, carrying `context`, and who waits for it.
    pub(super) fn into_reply(self, context: ClientContext) -> (Origin, ClientReply) {
        let reply = ClientReply::Read {
            versions: vec![self.version],
            context: Some(context),
            merge: MergeMode::Plugin,
            merged: Some(self.merged),
            plugin_error: None,
        };
        (self.origin, reply)
    }
}

impl Node {
    /// Asks the driver to run the table plugin on `object`'s live versions.
    pub(super) fn start_reconcile(
        &mut self,
        origin: Option<Origin>,
        table: TableName,
        key: Bytes,
        config: TableConfig,
        object: Object,
        store: &mut dyn LocalStore,
    ) {
        let versions = live_sorted(&object);
        let deadline_ms = self.now.mono_ms + self.config.request_timeout_ms;
        let sha256 = config
            .plugin
            .as_deref()
            .and_then(|name| self.meta.plugin(name))
            .and_then(|p| p.sha256.clone());
        let job = Job {
            origin,
            table,
            key,
            config,
            object,
            versions,
            deadline_ms,
        };
        let Some(sha256) = sha256 else {
            let reason =
                PluginFailure::Unavailable("the table's plugin is not uploaded".to_owned());
            return self.finish_reconcile(job, Err(reason), store);
        };
        let input = job.input();
        let id = self.next_id();
        self.pending.insert(id, Pending::Reconcile(job));
        if !self.holds_module(&sha256, store) {
            // Just uploaded elsewhere: fetch it now and merge once it is here
            // (bounded by the request's deadline), rather than answer
            // "unavailable" to a user who just uploaded it. Only the first
            // waiter asks at once; the rest wait for that fetch.
            if self.modules.await_module(&sha256, id) {
                self.modules.fetch_now(&sha256);
                let random = self.pending.peek_next_id();
                self.fetch_missing_modules(random, store);
            }
            return;
        }
        self.emit(Output::Reconcile {
            job: id,
            sha256,
            input,
        });
    }

    /// Whether this node stores module `sha256` (learning it from the store
    /// if it arrived there without this node noticing).
    fn holds_module(&mut self, sha256: &str, store: &mut dyn LocalStore) -> bool {
        if self.modules.holds(sha256) {
            return true;
        }
        if let Ok(Some(_)) = store.load_module(sha256) {
            self.modules.hold(sha256);
            return true;
        }
        false
    }

    /// A module arrived: the merges waiting for it run now.
    pub(super) fn module_ready(&mut self, sha256: &str) {
        for job in self.modules.waiters(sha256) {
            if let Some(Pending::Reconcile(waiting)) = self.pending.get(&job) {
                let input = waiting.input();
                // After the module's own release (it leaves once stored), so
                // the driver has the bytes before the call.
                let call = Output::Reconcile {
                    job,
                    sha256: sha256.to_owned(),
                    input,
                };
                let release = Release::AfterBatch(self.outbox.open_batch());
                self.outbox.push(call, release);
            }
        }
    }

    /// Takes the plugin's answer: a merge is answered (200) and written back
    /// unless another write-back of the key is in flight; anything else
    /// answers the siblings (300), with the failure when there was one.
    pub(super) fn finish_reconcile(
        &mut self,
        job: Job,
        outcome: Result<Resolution, PluginFailure>,
        store: &mut dyn LocalStore,
    ) {
        let (value, content_type) = match outcome {
            Ok(Resolution::Merged {
                value,
                content_type,
            }) => (value, content_type),
            Ok(Resolution::KeepSiblings) => return self.answer_siblings(job, None),
            Err(failure) => return self.answer_siblings(job, Some(failure)),
        };
        let content_type = content_type
            .or_else(|| job.versions.first().map(|v| v.content_type.clone()))
            .unwrap_or_default();
        let timestamp_ms = job
            .versions
            .iter()
            .map(|v| v.timestamp_ms)
            .max()
            .unwrap_or(0);
        let slot = (job.table.clone(), job.key.clone());
        let answer = job.origin.clone().map(|origin| MergedAnswer {
            origin,
            version: Version {
                dot: Dot {
                    actor: Actor {
                        node: self.config.id.clone(),
                        epoch: self.epoch,
                    },
                    counter: 0,
                },
                timestamp_ms,
                value: Some(Bytes::from(value.clone())),
                content_type: content_type.clone(),
            },
            merged: job.versions.len() as u32,
            read_context: ClientContext::of_versions(&job.object.versions),
        });
        // A merged version superseded here meanwhile (a delete or a write
        // that covered it landed during the plugin call): writing the merge
        // back would bring its content back over that write.
        let superseded = store
            .load(&job.table, job.config.storage, &job.key)
            .ok()
            .flatten()
            .is_some_and(|local| {
                job.versions.iter().any(|v| {
                    local.clock.covers(&v.dot) && !local.versions.iter().any(|l| l.dot == v.dot)
                })
            });
        if !self.writebacks.contains(&slot) && !superseded {
            let mut merged_dots = CausalContext::new();
            for version in &job.versions {
                merged_dots.add(version.dot.clone());
            }
            let write = Write {
                table: job.table.clone(),
                key: job.key.clone(),
                value: Some(Bytes::from(value.clone())),
                content_type: content_type.clone(),
                context: merged_dots,
                seen_max_ms: timestamp_ms,
                timestamp_ms: Some(timestamp_ms),
                is_merge: true,
                // Answered once the write-back is minted (after the storage
                // plugin chose its engine, on `storage: plugin` tables).
                merged_answer: answer,
                read_first: false,
            };
            let primaries = self.replicas_for(&job.table, &job.key, &job.config);
            let deadline_ms = self.now.mono_ms + self.config.request_timeout_ms;
            let w = job.config.w;
            let _ = self.start_put(
                Origin::Background,
                write,
                &job.config,
                w,
                &primaries,
                deadline_ms,
                store,
            );
        } else if let Some(answer) = answer {
            // Another write-back of the key is in flight, or the merge is
            // outdated: answer the merge with what the read saw.
            let fallback = answer.read_context.clone();
            let (origin, reply) = answer.into_reply(fallback);
            self.reply(origin, reply);
        }
    }

    fn answer_siblings(&mut self, job: Job, plugin_error: Option<PluginFailure>) {
        let Some(origin) = job.origin else { return };
        let reply = ClientReply::Read {
            versions: job.versions,
            context: Some(ClientContext::of_versions(&job.object.versions)),
            merge: MergeMode::Plugin,
            merged: None,
            plugin_error,
        };
        self.reply(origin, reply);
    }
}
