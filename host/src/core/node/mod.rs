//! The node: one state machine fed [`Input`]s and drained of [`Output`]s.
//!
//! It coordinates client gets and puts, serves replica reads and writes,
//! forwards requests it cannot coordinate, gossips metadata, admits joiners
//! and watches its peers. It never touches a socket or a clock: the driver in
//! `runtime/` (or the simulator in `sim/`) does that.

use std::collections::HashSet;

use cairn_sdk::{ReconcileInput, Resolution, Storage, StorageQuery};

use bytes::Bytes;

use super::causal::{Actor, CausalContext, Dot};
use super::coord::{live_sorted, AfterRead, Expires, GetFsm, GetStep, InFlight, Origin, PutFsm};
use super::durability::Outbox;
pub use super::durability::Release;
use super::limits::{
    CLIENT_REQUESTS_IN_FLIGHT_MAX, CONTENT_TYPE_BYTES_MAX, CONTEXT_EPOCH_AHEAD_MAX_S,
    FORWARD_GRACE_MS, GOSSIP_INTERVAL_MS, JOIN_RETRY_MS, OBJECT_LIVE_BYTES_MAX, PING_INTERVAL_MS,
    RECONCILE_ON_WRITE_FROM, REJOIN_QUIET_MS, SIBLINGS_MAX, UPLOAD_SPREAD_WAIT_MS,
};
use super::members::{Join, Liveness, Status};
use super::meta::{ClusterMeta, Member, TableEntry};
use super::msg::{
    AdminOp, AdminReply, ClientOp, ClientReply, ClusterStatus, ForwardMessage, JoinStatus,
    MemberMessage, MemberStatus, Message, ModuleMessage, ReplicaError, ReplicaMessage,
};
use super::object::{Object, Version};
use super::ring::{partition_of, Ring};
use super::rng::Rng;
use super::store::{CopyState, LocalStore, StoreError};
use super::table::{ConfigError, TableConfig};
use super::table::{MergeMode, StorageKind};
use super::timers::{Timer, TimerTable};
use super::token::{ClientContext, TokenKey};
use super::types::{NodeId, TableName};

mod admin;
mod modules;
mod placement;
mod reconcile;

use super::modules::{sha256_hex, Modules, UploadWait};

/// Static facts about this node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Identity.
    pub id: NodeId,
    /// HTTP address, announced to the cluster.
    pub http: String,
    /// Peer address, announced to the cluster.
    pub peer: String,
    /// Seeds' peer addresses, used to join on first start.
    pub seeds: Vec<String>,
    /// Partitions of a cluster this node founds.
    pub partitions: usize,
    /// target_n of a cluster this node founds.
    pub target_n: u8,
    /// How long a client request may take before 503.
    pub request_timeout_ms: u64,
    /// Random bits from the driver (the operating system's randomness in
    /// production, the seed in the simulator): the nonces of fresh epochs.
    pub entropy: u64,
    /// Random bytes from the driver: the context-token key of a cluster this
    /// node founds (or of one that has none yet).
    pub cluster_secret: [u8; 32],
}

/// What a node persisted, read back at start.
#[derive(Debug, Clone, Default)]
pub struct Persisted {
    /// The epoch it last used.
    pub epoch: Option<u64>,
    /// Whether it shut down cleanly after that.
    pub clean_shutdown: bool,
    /// Its cluster metadata.
    pub meta: Option<ClusterMeta>,
}

/// The two clocks the core is given: monotonic for deadlines, wall for stamps.
#[derive(Debug, Clone, Copy, Default)]
pub struct Now {
    /// Monotonic milliseconds.
    pub mono_ms: u64,
    /// Wall-clock milliseconds since the Unix epoch.
    pub wall_ms: u64,
}

/// Everything that can happen to a node.
#[derive(Debug)]
pub enum Input {
    /// Time passed; `random` seeds this tick's choices (gossip target).
    Tick {
        /// A random number from the driver's seeded source.
        random: u64,
    },
    /// A client key operation, answered by `Output::Reply` with the same id.
    Client {
        /// Driver's id for the waiting client.
        id: u64,
        /// The operation.
        op: ClientOp,
    },
    /// A cluster or table operation, answered by `Output::AdminReply`.
    Admin {
        /// Driver's id for the waiting client.
        id: u64,
        /// The operation.
        op: AdminOp,
    },
    /// A message from a peer.
    Peer {
        /// The sender, from its connection's hello.
        from: NodeId,
        /// The message.
        message: Message,
    },
    /// A `select_storage` call asked for by `Output::SelectStorage` finished.
    StorageSelected {
        /// The job id from the output.
        job: u64,
        /// The engine, or why there is none (the write then goes to LMDB).
        outcome: Result<Storage, String>,
    },
    /// A plugin call asked for by `Output::Reconcile` finished.
    Reconciled {
        /// The job id from the output.
        job: u64,
        /// The plugin's answer, or the `X-Cairn-Plugin-Error` value.
        outcome: Result<Resolution, String>,
    },
}

/// Everything a node asks its driver to do.
#[derive(Debug)]
pub enum Output {
    /// Send a message to the node listening on `addr`.
    Send {
        /// Peer address.
        addr: String,
        /// The message.
        message: Message,
    },
    /// Answer a client key operation.
    Reply {
        /// The id from `Input::Client`.
        id: u64,
        /// The answer.
        reply: ClientReply,
    },
    /// Answer an admin operation.
    AdminReply {
        /// The id from `Input::Admin`.
        id: u64,
        /// The answer.
        reply: AdminReply,
    },
    /// Run the table plugin's `reconcile` off the node loop and answer with
    /// `Input::Reconciled`.
    Reconcile {
        /// Job id.
        job: u64,
        /// The module to run.
        sha256: String,
        /// Its input.
        input: ReconcileInput,
    },
    /// Run the table's `select_storage` off the node loop and answer with
    /// `Input::StorageSelected`.
    SelectStorage {
        /// Job id.
        job: u64,
        /// The module to run.
        sha256: String,
        /// Its input.
        query: StorageQuery,
    },
    /// A plugin module is stored here now: compile it.
    ModuleArrived {
        /// Its sha256.
        sha256: String,
        /// Its bytes.
        bytes: Bytes,
    },
    /// The node cannot go on (a seed refused it): the driver stops it.
    Fatal(String),
}

impl Output {
    /// Whether this output may only be released after the staged writes it
    /// follows are durable: every answer (acks, replies), never a request. The node
    /// releases some answers earlier when it knows what they depend on is
    /// already durable ([`Release`]).
    pub fn after_commit(&self) -> bool {
        match self {
            Output::Send { message, .. } => message.is_answer(),
            Output::Reconcile { .. } | Output::SelectStorage { .. } => false,
            Output::Reply { .. }
            | Output::AdminReply { .. }
            | Output::ModuleArrived { .. }
            | Output::Fatal(_) => true,
        }
    }
}

impl Expires for Pending {
    fn deadline_ms(&self) -> u64 {
        match self {
            Pending::Get(fsm) => fsm.deadline_ms,
            Pending::Put(fsm, _) => fsm.deadline_ms,
            Pending::Reconcile(job) => job.deadline_ms,
            Pending::Placement(placement) => placement.deadline_ms,
            Pending::Forward { deadline_ms, .. } => *deadline_ms,
        }
    }
}

/// What a request in flight waits for.
enum Pending {
    Get(Box<GetFsm>),
    /// A write; a plugin write-back also names the key it holds in `writebacks`.
    Put(PutFsm, Option<(TableName, Bytes)>),
    /// A read (or a write past 8 siblings) waiting for its plugin.
    Reconcile(reconcile::Job),
    /// A write waiting for its table's plugin to choose the storage engine.
    Placement(Box<placement::Placement>),
    Forward {
        client: u64,
        deadline_ms: u64,
        needed: u8,
    },
}

/// One Cairn node's protocol state.
pub struct Node {
    config: NodeConfig,
    epoch: u64,
    /// Draws the nonces of fresh epochs.
    rng: Rng,
    meta: ClusterMeta,
    now: Now,
    /// When this node last heard from each node: its own failure detection.
    liveness: Liveness,
    /// The join this node is making, if any.
    join: Join,
    /// Pings, gossip and join retries.
    timers: TimerTable,
    /// Requests in flight (coordinated, forwarded, waiting for a plugin),
    /// with their deadlines.
    pending: InFlight<Pending>,
    /// Every output on its way out, the batches, and what waits for them.
    outbox: Outbox,
    /// Whether this process started on an empty data dir (a seed refuses a
    /// fresh node whose id answered within the last 10 s).
    fresh_data_dir: bool,
    /// Keys with a plugin merge being written back: concurrent readers do not
    /// mint another.
    writebacks: HashSet<(TableName, Bytes)>,
    /// Plugin modules held, fetched, spreading and awaited.
    modules: Modules,
}

impl Node {
    /// Starts a node from what it persisted, taking a fresh epoch (durable before
    /// use) when it did not shut down cleanly or has no state at all.
    pub fn new(
        config: NodeConfig,
        persisted: Persisted,
        now: Now,
        store: &mut dyn LocalStore,
    ) -> Result<Node, StoreError> {
        // No metadata: it never finished founding or joining, so it holds no history.
        let fresh_data_dir = persisted.meta.is_none();
        // Objects in memory are gone after any stop, and with them the dots
        // they carried: a node keeping any in memory never reuses its epoch.
        let forgets_objects = persisted.meta.as_ref().is_some_and(|meta| {
            meta.tables
                .values()
                .any(|t| matches!(t.config.storage, StorageKind::Memory | StorageKind::Plugin))
        });
        let exhausted = |e: EpochExhausted| StoreError::Failed(e.to_string());
        let mut rng = Rng::new(config.entropy);
        let epoch = match persisted.epoch {
            Some(e) if persisted.clean_shutdown && !forgets_objects => e,
            Some(e) => fresh_epoch(e, now, &mut rng).map_err(exhausted)?,
            None => fresh_epoch(0, now, &mut rng).map_err(exhausted)?,
        };
        store.persist_epoch_now(epoch)?;
        let meta = match persisted.meta {
            Some(meta) => meta,
            None if config.seeds.is_empty() => {
                let mut meta = ClusterMeta::empty();
                meta.ring = Some(Ring::single(&config.id, config.partitions, config.target_n));
                meta.token_key = Some(TokenKey(config.cluster_secret));
                meta
            }
            None => ClusterMeta::empty(),
        };
        let mut node = Node {
            now,
            epoch,
            rng,
            meta,
            liveness: Liveness::new(now.mono_ms),
            join: Join::default(),
            timers: TimerTable::default(),
            pending: InFlight::new(now.wall_ms << 16),
            outbox: Outbox::default(),
            fresh_data_dir,
            writebacks: HashSet::new(),
            modules: Modules::default(),
            config,
        };
        for timer in [Timer::Ping, Timer::Gossip, Timer::Join] {
            node.timers.set(timer, now.mono_ms);
        }
        if node.meta.ring.is_some() {
            node.refresh_own_record(store);
        }
        for sha256 in node.meta.plugins.values().filter_map(|p| p.sha256.clone()) {
            if store.load_module(&sha256)?.is_some() {
                node.modules.hold(&sha256);
            }
        }
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.config.id
    }

    /// How many ids this node remembers hearing from (members and recent
    /// strangers): bounded however many ids peers name themselves.
    pub fn heard_from(&self) -> usize {
        self.liveness.len()
    }

    /// The epoch this node mints dots under.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The cluster metadata as this node knows it.
    pub fn meta(&self) -> &ClusterMeta {
        &self.meta
    }

    /// Whether this node is a member of a cluster (founded or joined).
    pub fn is_member(&self) -> bool {
        self.meta.members.contains_key(&self.config.id)
    }

    /// Next output to carry out now. Answers whose batch is not durable yet
    /// are held back until [`Node::batch_durable`] covers it.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outbox.poll()
    }

    /// The driver sealed everything staged so far into one batch for its
    /// storage to commit; what is staged from now on belongs to the next batch.
    /// Returns the sealed batch's number, which [`Release::AfterBatch`] names.
    pub fn seal_batch(&mut self) -> u64 {
        self.outbox.seal()
    }

    /// The driver made batch `batch` (and every earlier one) durable: the
    /// answers held for it become ready, and the coordinator's own copies
    /// staged in it now count toward their writes' quorums. A write is
    /// answered once any W replicas have it durably, so a coordinator with a
    /// slow disk does not hold up a write two others stored.
    pub fn batch_durable(&mut self, batch: u64) {
        for request in self.outbox.durable_through(batch) {
            if let Some(Pending::Put(fsm, _)) = self.pending.get_mut(&request) {
                fsm.record(&self.config.id, Ok(()));
                self.progress_put(request);
            }
        }
    }

    /// The driver could not make the batches after the last durable one
    /// durable (a full disk, an I/O error, no file descriptor left) and
    /// dropped them with everything staged since: those writes are gone here.
    /// Every answer that vouched for them fails instead (`error` says why) —
    /// those queued or held now and those a pending read will produce later —
    /// the coordinator's own copies count as failed replicas, uploads whose
    /// module was lost fail, and the node takes a fresh epoch, because other
    /// replicas may hold versions whose dots it minted for the lost writes and
    /// it must never mint them again. `Err` when the new epoch cannot be
    /// recorded: the driver must then stop before it handles anything else.
    pub fn batches_lost(
        &mut self,
        error: &StoreError,
        store: &mut dyn LocalStore,
    ) -> Result<(), String> {
        let reason = format!(
            "{error}; nothing of it was stored on node {}",
            self.config.id
        );
        let (lost, copies) = self.outbox.lose(error, reason);
        // Reads that met a local copy a lost batch held end here, without an
        // answer or read repair built from it (that would spread a write
        // which may exist nowhere else).
        let reads: Vec<u64> = self
            .pending
            .iter()
            .filter_map(|(id, pending)| match pending {
                Pending::Get(fsm) if fsm.local_batch.is_some_and(|b| lost.covers(b)) => Some(*id),
                _ => None,
            })
            .collect();
        for request in reads {
            if let Some(Pending::Get(fsm)) = self.pending.remove(&request) {
                if !fsm.has_replied() {
                    self.reply_when(fsm.origin.clone(), lost.client_failure(), Release::Now);
                }
            }
        }
        for request in copies {
            if let Some(Pending::Put(fsm, _)) = self.pending.get_mut(&request) {
                fsm.record(
                    &self.config.id,
                    Err(ReplicaError::Storage(lost.reason.clone())),
                );
                self.progress_put(request);
            }
        }
        // Modules staged in the lost batches are fetched again from peers,
        // and an upload whose module is nowhere here any more fails.
        let failed = self
            .modules
            .forget_lost(|sha256| matches!(store.load_module(sha256), Ok(Some(_))));
        for upload in failed {
            let reply = AdminReply::Unavailable(lost.reason.clone());
            self.outbox.push(
                Output::AdminReply {
                    id: upload.admin_id,
                    reply,
                },
                Release::Now,
            );
        }
        // The new epoch's record also stages the cluster metadata again, in
        // case its last change was in a lost batch.
        self.take_fresh_epoch(self.epoch, store)
            .map_err(|e| format!("storage failed and a new epoch cannot be recorded: {e}"))
    }

    /// When an answer built from a local copy in `state` may leave.
    fn release_for(&self, state: CopyState) -> Release {
        self.outbox.release_for(state)
    }

    fn emit(&mut self, output: Output) {
        self.outbox.emit(output);
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Now, input: Input, store: &mut dyn LocalStore) {
        self.now = now;
        match input {
            Input::Tick { random } => self.on_tick(random, store),
            Input::Client { id, op } => self.on_client(Origin::Local(id), op, store),
            Input::Admin { id, op } => {
                let reply = self.on_admin(op, store);
                self.answer_admin(id, reply);
            }
            Input::Peer { from, message } => self.on_peer(from, message, store),
            Input::StorageSelected { job, outcome } => {
                if let Some(Pending::Placement(placement)) = self.pending.remove(&job) {
                    self.finish_placement(*placement, outcome, store);
                }
            }
            Input::Reconciled { job, outcome } => {
                if let Some(Pending::Reconcile(job)) = self.pending.remove(&job) {
                    self.finish_reconcile(job, outcome, store);
                }
            }
        }
    }

    // ---- time -------------------------------------------------------------

    fn on_tick(&mut self, random: u64, store: &mut dyn LocalStore) {
        let now = self.now.mono_ms;
        self.expire(now, store);
        let members = &self.meta.members;
        self.liveness
            .forget_strangers(now, |id| members.contains_key(id));
        if !self.is_member() {
            if self.timers.fire(Timer::Join, now, JOIN_RETRY_MS) {
                self.ask_to_join();
            }
            return;
        }
        self.answer_uploads();
        if self.join.is_under_way()
            && self.timers.fire(Timer::Join, now, JOIN_RETRY_MS)
            && !self.join.give_up_if_silent(now)
        {
            self.ask_to_join();
        }
        if self.meta.token_key.is_none() {
            // A cluster from before token keys: the smallest drawn key wins.
            self.meta.token_key = Some(TokenKey(self.config.cluster_secret));
            self.meta_changed(store);
        }
        self.claim_if_empty(store);
        self.fetch_missing_modules(random, store);
        if self.timers.fire(Timer::Ping, now, PING_INTERVAL_MS) {
            for addr in self.peer_addrs() {
                self.emit(Output::Send {
                    addr,
                    message: Message::Member(MemberMessage::Ping),
                });
            }
        }
        if self.timers.fire(Timer::Gossip, now, GOSSIP_INTERVAL_MS) {
            let addrs = self.peer_addrs();
            if !addrs.is_empty() {
                let addr = addrs[(random % addrs.len() as u64) as usize].clone();
                self.emit(Output::Send {
                    addr,
                    message: Message::Member(MemberMessage::Gossip(Box::new(self.meta.clone()))),
                });
            }
        }
    }

    fn expire(&mut self, now: u64, store: &mut dyn LocalStore) {
        let pending = &self.pending;
        self.modules
            .forget_expired_waiters(|job| pending.contains_key(&job));
        let due = self.pending.take_due(now);
        for &id in &due {
            match self.pending.remove(&id) {
                Some(Pending::Forward { client, needed, .. }) => {
                    self.reply(
                        Origin::Local(client),
                        ClientReply::QuorumNotReached { needed, acked: 0 },
                    );
                }
                Some(Pending::Get(fsm)) => {
                    self.pending.insert(id, Pending::Get(fsm));
                    self.progress_get(id, store);
                }
                Some(Pending::Put(fsm, writeback)) => {
                    self.pending.insert(id, Pending::Put(fsm, writeback));
                    self.progress_put(id);
                }
                Some(Pending::Placement(placement)) => {
                    let failed = Err("the storage plugin did not answer in time".to_owned());
                    self.finish_placement(*placement, failed, store);
                }
                Some(Pending::Reconcile(job)) => {
                    let failed =
                        Err("unavailable: the plugin call did not finish in time".to_owned());
                    self.finish_reconcile(job, failed, store);
                }
                None => {}
            }
        }
        self.pending.keep_watching(&due);
    }

    // ---- membership ---------------------------------------------------------

    fn peer_addrs(&self) -> Vec<String> {
        self.meta
            .members
            .iter()
            .filter(|(id, _)| **id != self.config.id)
            .map(|(_, m)| m.peer.clone())
            .collect()
    }

    fn own_record(&self, stamp: u64) -> Member {
        Member {
            http: self.config.http.clone(),
            peer: self.config.peer.clone(),
            epoch: self.epoch,
            stamp,
        }
    }

    /// Gossip brought a record of this node's id that this process did not
    /// announce (another process started with the id and a copy of its data
    /// dir, at other addresses): the node announces its own addresses again
    /// with a larger stamp, so peers do not keep sending to an address that
    /// is not this node's once the other process is gone, and moves above an
    /// epoch the other process may have used, so their dots never collide.
    fn defend_own_record(&mut self, store: &mut dyn LocalStore) {
        let Some(record) = self.meta.members.get(&self.config.id) else {
            return;
        };
        let foreign = record.http != self.config.http || record.peer != self.config.peer;
        if !foreign && record.epoch <= self.epoch {
            return;
        }
        if record.epoch > self.epoch {
            if let Err(e) = self.take_fresh_epoch(record.epoch, store) {
                self.emit(Output::Fatal(format!("cannot take a new epoch: {e}")));
                return;
            }
        }
        self.refresh_own_record(store);
    }

    /// Announces this node's addresses and epoch when they differ from the record.
    fn refresh_own_record(&mut self, store: &mut dyn LocalStore) {
        let current = self.meta.members.get(&self.config.id).cloned();
        let stale = match &current {
            Some(m) => {
                m.http != self.config.http || m.peer != self.config.peer || m.epoch != self.epoch
            }
            None => true,
        };
        if stale {
            let stamp = current.map_or(1, |m| m.stamp + 1);
            self.meta
                .members
                .insert(self.config.id.clone(), self.own_record(stamp));
            self.meta_changed(store);
        }
    }

    fn ask_to_join(&mut self) {
        let Some(addr) = self.join.next_seed(&self.config.seeds) else {
            return;
        };
        let member = self.own_record(1);
        self.emit(Output::Send {
            addr,
            message: Message::Member(MemberMessage::JoinRequest {
                member,
                fresh: self.fresh_data_dir,
                tables: self.meta.tables.keys().cloned().collect(),
            }),
        });
    }

    fn claim_if_empty(&mut self, store: &mut dyn LocalStore) {
        let Some(ring) = &self.meta.ring else { return };
        if ring.owned_by(&self.config.id) > 0 || self.meta.members.len() > ring.partitions() {
            return;
        }
        let claimed = ring.claim_for(&self.config.id, &self.meta.member_ids());
        self.meta.ring = Some(claimed);
        self.meta_changed(store);
    }

    fn meta_changed(&mut self, store: &mut dyn LocalStore) {
        // A failed stage shows up as a failed commit in the driver; gossip still spreads it.
        let _ = store.stage_meta(&self.meta);
        let gossip = Message::Member(MemberMessage::Gossip(Box::new(self.meta.clone())));
        for addr in self.peer_addrs() {
            self.emit(Output::Send {
                addr,
                message: gossip.clone(),
            });
        }
    }

    fn status_of(&self, node: &NodeId) -> Status {
        if *node == self.config.id {
            return Status::Up;
        }
        self.liveness.status(node, self.now.mono_ms)
    }

    fn on_join_request(
        &mut self,
        from: NodeId,
        member: Member,
        fresh: bool,
        tables: &[TableName],
        store: &mut dyn LocalStore,
    ) {
        let reply_to = member.peer.clone();
        let refuse = |reason: String| Output::Send {
            addr: reply_to.clone(),
            message: Message::Member(MemberMessage::JoinRefused { reason }),
        };
        let Some(ring) = self.meta.ring.clone() else {
            self.emit(refuse("the seed has not joined a cluster itself".into()));
            return;
        };
        // The joiner's tables the cluster lacks would join too: refused
        // beyond the limits, so none is left behind on the joiner unserved.
        let brought = tables
            .iter()
            .filter(|t| !self.meta.tables.contains_key(*t) && !self.meta.dropped.contains_key(*t))
            .count();
        if let Err(full) = self.meta.room_for_tables(brought) {
            self.emit(refuse(format!(
                "joining would bring {brought} tables: {full}; drop tables on the joining node first"
            )));
            return;
        }
        if let Some(known) = self.meta.members.get(&from).cloned() {
            let heard = self.liveness.last_heard(&from);
            if fresh
                && from != self.config.id
                && heard.is_some_and(|t| self.now.mono_ms.saturating_sub(t) < REJOIN_QUIET_MS)
            {
                self.emit(refuse(format!(
                    "node id {from} is already a member and answered within the last 10 s"
                )));
                return;
            }
            let record = Member {
                epoch: member.epoch.max(known.epoch),
                stamp: known.stamp + 1,
                ..member
            };
            self.meta.members.insert(from.clone(), record);
        } else {
            if self.meta.members.len() >= ring.partitions() {
                self.emit(refuse(
                    "the cluster has as many members as partitions".into(),
                ));
                return;
            }
            self.meta.members.insert(from.clone(), member);
            let claimed = ring.claim_for(&from, &self.meta.member_ids());
            self.meta.ring = Some(claimed);
        }
        self.meta_changed(store);
        self.emit(Output::Send {
            addr: reply_to,
            message: Message::Member(MemberMessage::JoinAccepted(Box::new(self.meta.clone()))),
        });
    }

    fn on_join_accepted(&mut self, meta: ClusterMeta, store: &mut dyn LocalStore) {
        if !meta.ring.as_ref().is_some_and(Ring::is_valid) {
            return;
        }
        // Only a join this node asked for: a member is never moved into
        // another cluster by a message it did not ask for.
        if self.is_member() && !self.join.is_under_way() {
            return;
        }
        let mut adopted = meta;
        // The cluster's definition of a table wins: a joiner's own config of
        // the same name (another n, another engine) never replaces it, nor
        // brings back a table the cluster dropped. The joiner's other tables
        // join too while the cluster's table limits allow (in name order);
        // the rest stay behind, unserved.
        // Its own drops come along where the cluster does not use the name,
        // so its data there is still collected and the name stays taken.
        for (name, dropped) in std::mem::take(&mut self.meta.dropped) {
            if !adopted.tables.contains_key(&name) {
                adopted.dropped.entry(name).or_insert(dropped);
            }
        }
        for (name, entry) in std::mem::take(&mut self.meta.tables) {
            if adopted.tables.contains_key(&name)
                || adopted.dropped.contains_key(&name)
                || adopted.room_for_tables(1).is_err()
            {
                continue;
            }
            adopted.tables.insert(name, entry);
        }
        if let Some(record) = adopted.members.get(&self.config.id) {
            if record.epoch >= self.epoch {
                let persisted = fresh_epoch(record.epoch, self.now, &mut self.rng)
                    .map_err(|e| e.to_string())
                    .and_then(|epoch| {
                        store
                            .persist_epoch_now(epoch)
                            .map(|()| epoch)
                            .map_err(|e| e.to_string())
                    });
                match persisted {
                    Ok(epoch) => self.epoch = epoch,
                    Err(e) => {
                        self.emit(Output::Fatal(format!("cannot take a new epoch: {e}")));
                        return;
                    }
                }
            }
        }
        adopted.keep_plugins_tables_use();
        self.meta = adopted;
        self.join.finish();
        self.refresh_own_record(store);
        self.meta_changed(store);
    }

    // ---- peers ----------------------------------------------------------------

    fn on_peer(&mut self, from: NodeId, message: Message, store: &mut dyn LocalStore) {
        if !matches!(message, Message::Member(MemberMessage::JoinRequest { .. })) {
            self.liveness.heard(&from, self.now.mono_ms);
        }
        match message {
            Message::Hello { .. } | Message::Member(MemberMessage::Pong) => {}
            Message::Member(MemberMessage::Ping) => {
                if let Some(addr) = self.addr_of(&from) {
                    self.emit(Output::Send {
                        addr,
                        message: Message::Member(MemberMessage::Pong),
                    });
                }
            }
            Message::Member(MemberMessage::Gossip(meta)) => {
                // A node joining another cluster takes that cluster's state
                // whole from its acceptance, never piecemeal from gossip.
                if self.is_member() && !self.join.is_under_way() && self.meta.merge(&meta) {
                    let _ = store.stage_meta(&self.meta);
                    self.defend_own_record(store);
                }
            }
            Message::Member(MemberMessage::JoinRequest {
                member,
                fresh,
                tables,
            }) => self.on_join_request(from, member, fresh, &tables, store),
            Message::Member(MemberMessage::JoinAccepted(meta)) => {
                self.on_join_accepted(*meta, store)
            }
            Message::Member(MemberMessage::JoinRefused { reason }) => {
                // A runtime join fails and the node goes on serving as before.
                let runtime = self
                    .join
                    .fail(|_| format!("the seed refused the join: {reason}"));
                if !runtime && !self.is_member() {
                    self.emit(Output::Fatal(format!(
                        "the seed refused the join: {reason}"
                    )));
                }
            }
            Message::Replica(ReplicaMessage::Write {
                request,
                table,
                key,
                object,
                engine,
            }) => {
                let outcome = self.store_replica(&table, &key, &object, engine, store);
                if let Some(addr) = self.addr_of(&from) {
                    self.emit(Output::Send {
                        addr,
                        message: Message::Replica(ReplicaMessage::WriteAck { request, outcome }),
                    });
                }
            }
            Message::Replica(ReplicaMessage::Repair { table, key, object }) => {
                let _ = self.store_replica(&table, &key, &object, None, store);
            }
            Message::Replica(ReplicaMessage::Read {
                request,
                table,
                key,
            }) => {
                let outcome = match self.meta.tables.get(&table) {
                    None => Err(ReplicaError::UnknownTable),
                    Some(entry) => store
                        .load(&table, entry.config.storage, &key)
                        .map_err(|e| ReplicaError::Storage(e.to_string())),
                };
                let release = self.release_for(store.copy_state(&table, &key));
                if let Some(addr) = self.addr_of(&from) {
                    let message = Message::Replica(ReplicaMessage::ReadReply { request, outcome });
                    self.outbox.push(Output::Send { addr, message }, release);
                }
            }
            Message::Replica(ReplicaMessage::WriteAck { request, outcome }) => {
                if let Some(Pending::Put(fsm, _)) = self.pending.get_mut(&request) {
                    fsm.record(&from, outcome);
                    self.progress_put(request);
                }
            }
            Message::Replica(ReplicaMessage::ReadReply { request, outcome }) => {
                if let Some(Pending::Get(fsm)) = self.pending.get_mut(&request) {
                    fsm.record(&from, outcome);
                    self.progress_get(request, store);
                }
            }
            Message::Module(ModuleMessage::Fetch { sha256 }) => {
                self.send_module(&from, sha256, store)
            }
            Message::Module(ModuleMessage::Bytes { sha256, bytes }) => {
                self.receive_module(sha256, bytes, store)
            }
            Message::Module(ModuleMessage::Stored { sha256 }) => {
                self.modules.held_by(&sha256, &from);
                self.answer_uploads();
            }
            Message::Forward(ForwardMessage::Request { request, op }) => {
                self.on_client(
                    Origin::Remote {
                        node: from,
                        request,
                    },
                    op,
                    store,
                );
            }
            Message::Forward(ForwardMessage::Reply { request, reply }) => {
                if let Some(Pending::Forward { client, .. }) = self.pending.remove(&request) {
                    // The coordinator answered after its own commit: nothing here to wait for.
                    self.reply_when(Origin::Local(client), reply, Release::Now);
                }
            }
        }
    }

    /// Sends a fresh `message()` to every replica in `primaries` but this node.
    fn send_to_other_replicas(&mut self, primaries: &[NodeId], message: impl Fn() -> Message) {
        for node in primaries.iter().filter(|p| **p != self.config.id) {
            if let Some(addr) = self.addr_of(node) {
                self.outbox.push(
                    Output::Send {
                        addr,
                        message: message(),
                    },
                    Release::Now,
                );
            }
        }
    }

    fn addr_of(&self, node: &NodeId) -> Option<String> {
        self.meta.members.get(node).map(|m| m.peer.clone())
    }

    /// Replica side of a write, repair or (later) handoff: merge the whole object in.
    fn store_replica(
        &mut self,
        table: &TableName,
        key: &[u8],
        incoming: &Object,
        engine: Option<StorageKind>,
        store: &mut dyn LocalStore,
    ) -> Result<(), ReplicaError> {
        let entry = self
            .meta
            .tables
            .get(table)
            .ok_or(ReplicaError::UnknownTable)?;
        let (storage, mode) = (entry.config.storage, entry.config.merge);
        let mut object = store
            .load(table, storage, key)
            .map_err(|e| ReplicaError::Storage(e.to_string()))?
            .unwrap_or_default();
        let before = object.clone();
        object.merge(incoming, mode);
        if object != before {
            store
                .stage(table, engine.unwrap_or(storage), key, &object)
                .map_err(|e| ReplicaError::Storage(e.to_string()))?;
        }
        Ok(())
    }

    // ---- clients --------------------------------------------------------------

    fn reply(&mut self, origin: Origin, reply: ClientReply) {
        self.reply_when(origin, reply, Release::AfterBatch(self.outbox.open_batch()));
    }

    /// Answers a client once the batch `release` names is durable.
    fn reply_when(&mut self, origin: Origin, reply: ClientReply, release: Release) {
        let output = match origin {
            Origin::Local(id) => Output::Reply { id, reply },
            Origin::Background => return,
            Origin::Remote { node, request } => match self.addr_of(&node) {
                Some(addr) => Output::Send {
                    addr,
                    message: Message::Forward(ForwardMessage::Reply { request, reply }),
                },
                None => return,
            },
        };
        self.outbox.push(output, release);
    }

    fn on_client(&mut self, origin: Origin, op: ClientOp, store: &mut dyn LocalStore) {
        if self.pending.len() >= CLIENT_REQUESTS_IN_FLIGHT_MAX {
            return self.reply(origin, ClientReply::Overloaded);
        }
        if self.meta.ring.is_none() {
            let reason = "this node has not joined a cluster yet";
            return self.reply(origin, ClientReply::Unavailable(reason.into()));
        }
        if let ClientOp::Put {
            context: Some(context),
            ..
        } = &op
        {
            let limit = self.now.wall_ms / 1000 + CONTEXT_EPOCH_AHEAD_MAX_S;
            if context
                .seen
                .actors()
                .any(|a| epoch_generation(a.epoch) > limit)
            {
                let reason = "context token names an epoch no node has reached";
                return self.reply(origin, ClientReply::BadRequest(reason.into()));
            }
        }
        if let ClientOp::Put { content_type, .. } = &op {
            // The HTTP layer refuses these too; a peer's forwarded write is
            // held to the same bound, so every admitted object fits a frame.
            if content_type.len() > CONTENT_TYPE_BYTES_MAX {
                let reason = format!("Content-Type longer than {CONTENT_TYPE_BYTES_MAX} bytes");
                return self.reply(origin, ClientReply::BadRequest(reason));
            }
        }
        let Some(entry) = self.meta.tables.get(op.table()) else {
            return self.reply(origin, ClientReply::UnknownTable);
        };
        let config = entry.config.clone();
        let Some(ring) = &self.meta.ring else { return };
        let (needed, override_value) = match &op {
            ClientOp::Get { r, .. } => (config.r, *r),
            ClientOp::Put { w, .. } => (config.w, *w),
        };
        let needed = match override_value {
            Some(k) if k < 1 || k > config.n => {
                return self.reply(
                    origin,
                    ClientReply::BadRequest(format!(
                        "quorum must be between 1 and n ({})",
                        config.n
                    )),
                );
            }
            Some(k) => k,
            None => needed,
        };
        let partition = partition_of(ring.partitions(), op.table(), op.key());
        let primaries: Vec<NodeId> = ring
            .preference_list(partition)
            .into_iter()
            .take(usize::from(config.n))
            .collect();
        if !primaries.contains(&self.config.id) {
            return self.forward(origin, op, &primaries, needed);
        }
        if primaries.len() < usize::from(needed) {
            return self.reply(origin, ClientReply::QuorumNotReached { needed, acked: 0 });
        }
        let deadline_ms = self.now.mono_ms + self.config.request_timeout_ms;
        match op {
            ClientOp::Get { table, key, .. } => {
                let fsm = GetFsm::new(
                    origin,
                    table,
                    key,
                    config,
                    needed,
                    primaries.clone(),
                    deadline_ms,
                    None,
                );
                self.start_get(fsm, &primaries, store);
            }
            ClientOp::Put {
                table,
                key,
                value: None,
                context: None,
                ..
            } => {
                let r = config.r;
                let fsm = GetFsm::new(
                    origin,
                    table,
                    key,
                    config,
                    r,
                    primaries.clone(),
                    deadline_ms,
                    Some(AfterRead::Delete { w: needed }),
                );
                self.start_get(fsm, &primaries, store);
            }
            ClientOp::Put {
                table,
                key,
                value,
                content_type,
                context,
                ..
            } => {
                let write =
                    Write::client(table, key, value, content_type, context.unwrap_or_default());
                let _ = self.start_put(
                    origin,
                    write,
                    &config,
                    needed,
                    &primaries,
                    deadline_ms,
                    store,
                );
            }
        }
    }

    fn forward(&mut self, origin: Origin, op: ClientOp, primaries: &[NodeId], needed: u8) {
        let Origin::Local(client) = origin else {
            // A forwarded request reached a node that no longer replicates the key.
            return self.reply(
                origin,
                ClientReply::Unavailable("this node is not a replica of the key".into()),
            );
        };
        let target = primaries
            .iter()
            .find(|p| self.status_of(p) == Status::Up)
            .and_then(|p| self.addr_of(p));
        let Some(addr) = target else {
            return self.reply(origin, ClientReply::QuorumNotReached { needed, acked: 0 });
        };
        let request = self.next_id();
        let deadline_ms = self.now.mono_ms + self.config.request_timeout_ms + FORWARD_GRACE_MS;
        self.pending.insert(
            request,
            Pending::Forward {
                client,
                deadline_ms,
                needed,
            },
        );
        self.emit(Output::Send {
            addr,
            message: Message::Forward(ForwardMessage::Request { request, op }),
        });
    }

    fn next_id(&mut self) -> u64 {
        self.pending.next_id()
    }

    fn start_get(&mut self, mut fsm: GetFsm, primaries: &[NodeId], store: &mut dyn LocalStore) {
        fsm.local_batch = match self.release_for(store.copy_state(&fsm.table, &fsm.key)) {
            Release::Now => None,
            Release::AfterBatch(batch) => Some(batch),
        };
        let request = self.next_id();
        let local = store
            .load(&fsm.table, fsm.config.storage, &fsm.key)
            .map_err(|e| ReplicaError::Storage(e.to_string()));
        fsm.record(&self.config.id.clone(), local);
        self.send_to_other_replicas(primaries, || {
            Message::Replica(ReplicaMessage::Read {
                request,
                table: fsm.table.clone(),
                key: fsm.key.clone(),
            })
        });
        self.pending.insert(request, Pending::Get(Box::new(fsm)));
        self.progress_get(request, store);
    }

    fn progress_get(&mut self, request: u64, store: &mut dyn LocalStore) {
        let now = self.now.mono_ms;
        let Some(Pending::Get(fsm)) = self.pending.get_mut(&request) else {
            return;
        };
        let step = fsm.step(now);
        let done = fsm.is_done(now);
        let origin = fsm.origin.clone();
        let release = fsm.local_batch.map_or(Release::Now, Release::AfterBatch);
        let read_deadline_ms = fsm.deadline_ms;
        let (table, key, config) = (fsm.table.clone(), fsm.key.clone(), fsm.config.clone());
        match step {
            GetStep::Write {
                merged,
                w,
                value,
                content_type,
                context,
            } => {
                if let Some(merged) = merged {
                    // Dots of this node's own actor that its copy lacks, in
                    // the read or in the context: it may have forgotten dots
                    // it issued, and takes a fresh epoch before it mints
                    // (merging first would hide that).
                    let before = store
                        .load(&table, config.storage, &key)
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    let current = Actor {
                        node: self.config.id.clone(),
                        epoch: self.epoch,
                    };
                    let forgot = merged.clock.max_counter(&current)
                        > before.clock.max_counter(&current)
                        || self.may_have_forgotten(&before, &context.seen);
                    if forgot {
                        let floor = self
                            .epoch
                            .max(context.seen.max_epoch_of(&self.config.id).unwrap_or(0));
                        if let Err(e) = self.take_fresh_epoch(floor, store) {
                            self.reply(origin, ClientReply::Unavailable(e));
                            return self.finish_get(request, done, store);
                        }
                    }
                    // A failed merge leaves the local copy as it was; the
                    // write then goes on as it would have without the read.
                    let _ = self.store_replica(&table, &key, &merged, None, store);
                }
                // Without a quorum read the write still goes on, as it would
                // have; within the request's one deadline.
                let primaries = self.primaries_of(&table, &key, config.n);
                let deadline_ms = read_deadline_ms;
                let mut write =
                    Write::client(table.clone(), key.clone(), value, content_type, context);
                write.read_first = false;
                let _ = self.start_put(origin, write, &config, w, &primaries, deadline_ms, store);
            }
            GetStep::Delete { merged, w } => {
                let primaries = self.primaries_of(&table, &key, config.n);
                let deadline_ms = now + self.config.request_timeout_ms;
                // The tombstone supersedes everything the read merged and is
                // stamped after all of it, even versions this node lacks.
                let seen = ClientContext {
                    seen: merged.clock.clone(),
                    max_timestamp_ms: ClientContext::of_versions(&merged.versions).max_timestamp_ms,
                };
                let mut write =
                    Write::client(table.clone(), key.clone(), None, String::new(), seen);
                write.read_first = false;
                let _ = self.start_put(origin, write, &config, w, &primaries, deadline_ms, store);
            }
            GetStep::Reconcile(merged) => {
                self.start_reconcile(Some(origin), table, key, config, merged, store);
            }
            GetStep::Answer(read) => self.reply_when(origin, read, release),
            GetStep::Fail(failure) => self.reply(origin, failure),
            GetStep::Wait => {}
        }
        self.finish_get(request, done, store);
    }

    /// Once a read is done, it repairs the replicas that differed.
    fn finish_get(&mut self, request: u64, done: bool, store: &mut dyn LocalStore) {
        if done {
            if let Some(Pending::Get(fsm)) = self.pending.remove(&request) {
                self.read_repair(&fsm, store);
            }
        }
    }

    /// Takes a fresh epoch above `floor`, durable before it is used.
    fn take_fresh_epoch(&mut self, floor: u64, store: &mut dyn LocalStore) -> Result<(), String> {
        let epoch = fresh_epoch(floor, self.now, &mut self.rng).map_err(|e| e.to_string())?;
        store.persist_epoch_now(epoch).map_err(|e| e.to_string())?;
        self.epoch = epoch;
        self.refresh_own_record(store);
        Ok(())
    }

    fn read_repair(&mut self, fsm: &GetFsm, store: &mut dyn LocalStore) {
        let (merged, stale) = fsm.repairs();
        for node in stale {
            if node == self.config.id {
                // Merge, never overwrite: the local copy may have moved on since the read.
                let _ = self.store_replica(&fsm.table, &fsm.key, &merged, None, store);
            } else if let Some(addr) = self.addr_of(&node) {
                let message = Message::Replica(ReplicaMessage::Repair {
                    table: fsm.table.clone(),
                    key: fsm.key.clone(),
                    object: merged.clone(),
                });
                self.emit(Output::Send { addr, message });
            }
        }
    }

    fn primaries_of(&self, table: &TableName, key: &[u8], n: u8) -> Vec<NodeId> {
        let Some(ring) = &self.meta.ring else {
            return Vec::new();
        };
        let partition = partition_of(ring.partitions(), table, key);
        ring.preference_list(partition)
            .into_iter()
            .take(usize::from(n))
            .collect()
    }

    /// The coordinator's half of a write: mint the dot, apply it to the local
    /// object, stage it, and send the whole object to the other primaries.
    #[allow(clippy::too_many_arguments)]
    fn start_put(
        &mut self,
        origin: Origin,
        write: Write,
        config: &TableConfig,
        w: u8,
        primaries: &[NodeId],
        deadline_ms: u64,
        store: &mut dyn LocalStore,
    ) -> Option<ClientContext> {
        if write.is_merge {
            // Held from before the storage plugin runs, so no concurrent read
            // mints a second write-back of the key meanwhile.
            self.writebacks
                .insert((write.table.clone(), write.key.clone()));
        }
        if config.storage == StorageKind::Plugin {
            return self.start_placement(origin, write, config, w, primaries, deadline_ms, store);
        }
        self.put_placed(
            origin,
            write,
            config,
            w,
            primaries,
            deadline_ms,
            config.storage,
            store,
        )
    }

    /// [`Node::start_put`] once the engine is known.
    #[allow(clippy::too_many_arguments)]
    fn put_placed(
        &mut self,
        origin: Origin,
        write: Write,
        config: &TableConfig,
        w: u8,
        primaries: &[NodeId],
        deadline_ms: u64,
        engine: StorageKind,
        store: &mut dyn LocalStore,
    ) -> Option<ClientContext> {
        let mut write = write;
        let merged_answer = write.merged_answer.take();
        let local = match store.load(&write.table, config.storage, &write.key) {
            Ok(found) => found.unwrap_or_default(),
            Err(e) => {
                let failure = ClientReply::Unavailable(e.to_string());
                self.abandon_write(origin, &write, merged_answer, failure);
                return None;
            }
        };
        if write.read_first && !local.clock.descends(&write.context) {
            // The client saw versions this copy lacks (it read them from
            // other replicas): read the key at R and merge first, so the
            // write supersedes here too what the client saw superseded.
            let then = AfterRead::Write {
                w,
                value: write.value,
                content_type: write.content_type,
                context: ClientContext {
                    seen: write.context,
                    max_timestamp_ms: write.seen_max_ms,
                },
            };
            let fsm = GetFsm::new(
                origin,
                write.table,
                write.key,
                config.clone(),
                config.r,
                primaries.to_vec(),
                deadline_ms,
                Some(then),
            );
            self.start_get(fsm, primaries, store);
            return None;
        }
        let current = Actor {
            node: self.config.id.clone(),
            epoch: self.epoch,
        };
        // Counters exhausted under this epoch (a clock from a peer may say
        // so): a fresh epoch starts them again, never a wrapped counter.
        let exhausted = local.clock.max_counter(&current) == u64::MAX;
        if exhausted || self.may_have_forgotten(&local, &write.context) {
            let floor = self
                .epoch
                .max(write.context.max_epoch_of(&self.config.id).unwrap_or(0));
            if let Err(e) = self.take_fresh_epoch(floor, store) {
                let failure = ClientReply::Unavailable(e);
                self.abandon_write(origin, &write, merged_answer, failure);
                return None;
            }
        }
        let actor = Actor {
            node: self.config.id.clone(),
            epoch: self.epoch,
        };
        let Some(counter) = local.clock.max_counter(&actor).checked_add(1) else {
            let failure = ClientReply::Unavailable("no counter left for this key's writes".into());
            self.abandon_write(origin, &write, merged_answer, failure);
            return None;
        };
        let dot = Dot { counter, actor };
        // A descendant is stamped after every ancestor it supersedes: those
        // held here and those the client saw elsewhere (clock skew must not
        // let an ancestor outrank it under lww).
        let timestamp_ms = write.timestamp_ms.unwrap_or_else(|| {
            let ancestors = local
                .max_timestamp_covered(&write.context)
                .max(write.seen_max_ms);
            self.now.wall_ms.max(ancestors.saturating_add(1))
        });
        let content_type = if write.value.is_some() && write.content_type.is_empty() {
            "application/octet-stream".to_owned()
        } else {
            write.content_type.clone()
        };
        let version = Version {
            dot: dot.clone(),
            timestamp_ms,
            value: write.value.clone(),
            content_type,
        };
        let mut object = local;
        object.apply_write(&write.context, version, config.merge);
        let live = object.live_count();
        if live > SIBLINGS_MAX || object.live_bytes() > OBJECT_LIVE_BYTES_MAX {
            let failure = ClientReply::TooManySiblings { siblings: live };
            self.abandon_write(origin, &write, merged_answer, failure);
            return None;
        }
        if let Err(e) = store.stage(&write.table, engine, &write.key, &object) {
            let failure = match e {
                StoreError::Full(reason) => ClientReply::InsufficientStorage(reason),
                StoreError::Failed(_) => ClientReply::Unavailable(e.to_string()),
            };
            self.abandon_write(origin, &write, merged_answer, failure);
            return None;
        }
        // The new version's clock covers everything the request's context
        // covered, so naming the new version alone supersedes all of it: the
        // token stays one dot long however long a chain of writes gets.
        let mut written = CausalContext::new();
        written.add(dot);
        let context_out = ClientContext {
            seen: written,
            max_timestamp_ms: timestamp_ms,
        };
        let returned = context_out.clone();
        let request = self.next_id();
        let fsm = PutFsm::new(origin, w, primaries.to_vec(), context_out, deadline_ms);
        self.outbox.local_copy_staged(request);
        let placed = (config.storage == StorageKind::Plugin).then_some(engine);
        self.send_to_other_replicas(primaries, || {
            Message::Replica(ReplicaMessage::Write {
                request,
                table: write.table.clone(),
                key: write.key.clone(),
                object: object.clone(),
                engine: placed,
            })
        });
        let writeback = write
            .is_merge
            .then(|| (write.table.clone(), write.key.clone()));
        if let Some(key) = &writeback {
            self.writebacks.insert(key.clone());
        }
        if let Some(answer) = merged_answer {
            // The merged read is answered with the write-back's context, so
            // a client writing with it supersedes the write-back too.
            let (origin, reply) = answer.into_reply(returned.clone());
            self.reply(origin, reply);
        }
        self.pending.insert(request, Pending::Put(fsm, writeback));
        self.progress_put(request);
        let crowded = config.merge == MergeMode::Plugin && live >= RECONCILE_ON_WRITE_FROM;
        if crowded
            && !write.is_merge
            && !self
                .writebacks
                .contains(&(write.table.clone(), write.key.clone()))
        {
            self.start_reconcile(None, write.table, write.key, config.clone(), object, store);
        }
        Some(returned)
    }

    /// A write that stopped before it was minted: its client (or the reader
    /// waiting for a merge's write-back) gets `failure` (the merge itself,
    /// with the read's context), and a write-back no longer holds its key.
    fn abandon_write(
        &mut self,
        origin: Origin,
        write: &Write,
        merged_answer: Option<reconcile::MergedAnswer>,
        failure: ClientReply,
    ) {
        if write.is_merge {
            self.writebacks
                .remove(&(write.table.clone(), write.key.clone()));
        }
        match merged_answer {
            Some(answer) => {
                let fallback = answer.read_context.clone();
                let (origin, reply) = answer.into_reply(fallback);
                self.reply(origin, reply);
            }
            None => self.reply(origin, failure),
        }
    }

    /// Whether the client's context shows dots of this node that its local copy
    /// lacks: then it may have forgotten dots it issued and must not reuse them.
    fn may_have_forgotten(&self, local: &Object, context: &CausalContext) -> bool {
        let actor = Actor {
            node: self.config.id.clone(),
            epoch: self.epoch,
        };
        context.max_counter(&actor) > local.clock.max_counter(&actor)
            || context
                .max_epoch_of(&self.config.id)
                .is_some_and(|e| e > self.epoch)
    }

    fn progress_put(&mut self, request: u64) {
        let now = self.now.mono_ms;
        let Some(Pending::Put(fsm, writeback)) = self.pending.get_mut(&request) else {
            return;
        };
        let answer = fsm.take_reply(now);
        let done = fsm.is_done(now);
        let origin = fsm.origin.clone();
        // A write-back stops blocking other merges of its key once it is answered.
        let released = if answer.is_some() || done {
            writeback.take()
        } else {
            None
        };
        if let Some(key) = released {
            self.writebacks.remove(&key);
        }
        // Every ack it counts is durable: remote ones are sent after their
        // commit, the local one is counted at `batch_durable`.
        if let Some(reply) = answer {
            self.reply_when(origin, reply, Release::Now);
        }
        if done {
            self.pending.remove(&request);
        }
    }
}

/// A client write on its way to the coordinator's local object.
struct Write {
    table: TableName,
    key: Bytes,
    value: Option<Bytes>,
    content_type: String,
    /// The dots this write supersedes.
    context: CausalContext,
    /// The largest timestamp among the versions the client saw: the write is
    /// stamped after it.
    seen_max_ms: u64,
    /// A plugin merge is stamped with the largest timestamp it merged.
    timestamp_ms: Option<u64>,
    /// Whether this is a plugin merge's write-back.
    is_merge: bool,
    /// A merge's write-back: the read waiting to be answered once it is minted.
    merged_answer: Option<reconcile::MergedAnswer>,
    /// Whether a coordinator lacking versions the context names reads the
    /// key first (client writes; not the write that follows such a read).
    read_first: bool,
}

impl Write {
    /// A client's write (or delete, with no value), stamped by the coordinator's clock.
    fn client(
        table: TableName,
        key: Bytes,
        value: Option<Bytes>,
        content_type: String,
        context: ClientContext,
    ) -> Write {
        Write {
            table,
            key,
            value,
            content_type,
            context: context.seen,
            seen_max_ms: context.max_timestamp_ms,
            timestamp_ms: None,
            is_merge: false,
            merged_answer: None,
            read_first: true,
        }
    }
}

/// A new epoch above `floor`: its generation (high 32 bits) is above
/// `floor`'s and at least the wall clock in seconds, and its low 32 bits are
/// random. The generation alone cannot keep a node whose last epoch bump never
/// reached its peers before its disk was wiped, and whose clock now runs
/// behind, from taking a generation it used before; the nonce makes a repeat
/// of a whole epoch (and so of its dots) vanishingly unlikely. Exhaustion of
/// generations is an error, never a repeat.
pub fn fresh_epoch(floor: u64, now: Now, rng: &mut Rng) -> Result<u64, EpochExhausted> {
    let seconds = u32::try_from(now.wall_ms / 1000).map_err(|_| EpochExhausted)?;
    let above = u32::try_from((floor >> 32) + 1).map_err(|_| EpochExhausted)?;
    let generation = u64::from(above.max(seconds));
    let nonce = rng.next_u64() & u64::from(u32::MAX);
    Ok(generation << 32 | nonce)
}

/// The generation of an epoch: when (in wall-clock seconds, at the latest) it was taken.
pub fn epoch_generation(epoch: u64) -> u64 {
    epoch >> 32
}

/// No epoch is left above the last one (or the clock is past 2106): the node
/// cannot mint dots that are certainly new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no fresh epoch is left for this node (epochs are exhausted); it cannot take writes")]
pub struct EpochExhausted;
