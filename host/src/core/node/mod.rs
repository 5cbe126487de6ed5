//! The node: one state machine fed [`Input`]s and drained of [`Output`]s.
//!
//! It coordinates client gets and puts, serves replica reads and writes,
//! forwards requests it cannot coordinate, gossips metadata, admits joiners
//! and watches its peers. It never touches a socket or a clock: the driver in
//! `runtime/` (or the simulator in `sim/`) does that.

use std::collections::HashSet;

use cairn_sdk::{ReconcileInput, Resolution, Storage, StorageQuery};

use bytes::Bytes;

use super::antientropy::{AntiEntropy, AntiEntropyConfig, Plan};
use super::causal::{Actor, CausalContext, Dot};
use super::coord::{
    live_sorted, AfterRead, Expires, GetFsm, GetStep, InFlight, Origin, PutFsm, SeenForwards,
};
use super::durability::Outbox;
pub use super::durability::Release;
use super::hints::HintBook;
use super::limits::{
    CLIENT_REQUESTS_IN_FLIGHT_MAX, CONTENT_TYPE_BYTES_MAX, CONTEXT_EPOCH_AHEAD_MAX_S,
    FORWARDS_REMEMBERED, FORWARD_GRACE_MS, GOSSIP_INTERVAL_MS, HANDOFF_EVERY_MS,
    HANDOFF_KEYS_PER_S, JOIN_RETRY_MS, OBJECT_LIVE_BYTES_MAX, PING_INTERVAL_MS, REAP_EVERY_MS,
    RECONCILE_ON_WRITE_FROM, REJOIN_QUIET_MS, SIBLINGS_MAX, TRANSFER_EVERY_MS,
    UPLOAD_SPREAD_WAIT_MS,
};
use super::members::{Join, Liveness, Status};
use super::meta::{ClusterMeta, Member, TableEntry};
use super::msg::{
    AdminOp, AdminReply, ClientOp, ClientReply, ClusterStatus, ForwardMessage, JoinStatus,
    MemberMessage, MemberStatus, Message, ModuleMessage, PluginFailure, ReplicaError,
    ReplicaMessage, SyncMessage,
};
use super::object::{Object, Version};
use super::reaper::Reaper;
use super::ring::{partition_of, Ring};
use super::rng::Rng;
use super::stats::{NodeSizes, NodeStats};
use super::store::{CopyState, LocalStore, StoreError};
use super::table::{ConfigError, TableConfig};
use super::table::{MergeMode, StorageKind};
use super::timers::{Timer, TimerTable};
use super::token::{ClientContext, TokenKey};
use super::transfer::Incoming;
use super::types::{NodeId, TableName};

mod admin;
mod antientropy;
mod coordinate;
mod handoff;
mod leftover;
mod membership;
mod modules;
mod placement;
mod reaper;
mod reconcile;
mod replica;
mod standin;
mod transfer;

use coordinate::Write;

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
    /// Anti-entropy's period and throttle; `None` runs none (and answers
    /// no peer's exchange: it keeps no trees).
    pub antientropy: Option<AntiEntropyConfig>,
    /// Bytes a second this node copies moving partitions at, as their receiver.
    pub transfer_bytes_per_s: u64,
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
    /// A connection to the peer at `addr` could not be made (refused, or
    /// no answer within the connect timeout): the member there counts as
    /// down until it is heard from again.
    Unreachable {
        /// The peer address dialled.
        addr: String,
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
        outcome: Result<Storage, PluginFailure>,
    },
    /// A plugin call asked for by `Output::Reconcile` finished.
    Reconciled {
        /// The job id from the output.
        job: u64,
        /// The plugin's answer, or why there is none.
        outcome: Result<Resolution, PluginFailure>,
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
    /// What the node has counted so far.
    stats: NodeStats,
    /// Anti-entropy's trees.
    antientropy: AntiEntropy,
    /// Anti-entropy's schedule and throttle (`None`: it runs none).
    sync_plan: Option<Plan>,
    /// Hints kept for unreachable primaries, and their delivery.
    hints: HintBook,
    /// This node lost its disk and resumed its membership: once its trees
    /// are built, every partition it replicates is known to diverge.
    resumed_membership: bool,
    /// Forwarded requests taken lately (a duplicate is not coordinated twice).
    forwards_seen: SeenForwards,
    /// Tombstones awaiting collection and the check under way.
    reaper: Reaper,
    /// (epoch, counter): the largest counter of that epoch's actor among
    /// the tombstones collected here; minting starts above it.
    mint_floor: (u64, u64),
    /// (epoch, last counter) of the actor this node mints under when it
    /// coordinates a write as a stand-in (see `standin.rs`).
    stand_in_actor: Option<standin::StandInActor>,
    /// The partitions this node copies as a new replica of a ring move.
    incoming: Incoming,
    /// The move ([`Ring::plan_id`]) the fetch under way was asked for.
    fetch_plan: u64,
    /// (batch, move, partitions): walks completed by a page in that batch,
    /// marked moved once it is durable.
    marks_waiting: Vec<(u64, u64, Vec<u32>)>,
    /// The metadata changed outside a turn that could stage it (a batch
    /// became durable): staged at the next tick.
    meta_unstaged: bool,
    /// Where the next ping round starts among the other members.
    ping_cursor: usize,
    /// The sweep for copies of keys this node no longer replicates.
    leftovers: leftover::LeftoverSweep,
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
        // Metadata read back from disk is held to what gossip holds a
        // peer's to: a malformed ring (a version at the top of its range
        // could not be raised by the next change) stops the start with a
        // reason instead of a panic later.
        if persisted
            .meta
            .as_ref()
            .and_then(|m| m.ring.as_ref())
            .is_some_and(|ring| !ring.is_valid())
        {
            return Err(StoreError::Failed(
                "the stored cluster metadata holds a malformed ring: restore the data dir from a backup, or wipe it and start the node again (it resumes its membership from its seeds)".into(),
            ));
        }
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
            stats: NodeStats::default(),
            antientropy: AntiEntropy::default(),
            sync_plan: config.antientropy.map(Plan::new),
            resumed_membership: false,
            hints: HintBook::new(HANDOFF_KEYS_PER_S),
            forwards_seen: SeenForwards::new(FORWARDS_REMEMBERED),
            reaper: Reaper::default(),
            mint_floor: (0, 0),
            stand_in_actor: None,
            incoming: Incoming::new(
                transfer::load_checkpoints(store),
                config.transfer_bytes_per_s,
            ),
            fetch_plan: 0,
            marks_waiting: Vec::new(),
            meta_unstaged: false,
            ping_cursor: 0,
            leftovers: leftover::LeftoverSweep::default(),
            config,
        };
        node.count_hints(store);
        for timer in [
            Timer::Ping,
            Timer::Gossip,
            Timer::Join,
            Timer::Handoff,
            Timer::Transfer,
        ] {
            node.timers.set(timer, now.mono_ms);
        }
        if node.sync_plan.is_some() {
            node.timers.set(Timer::AntiEntropy, now.mono_ms);
            node.timers.set(Timer::Reap, now.mono_ms);
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

    /// What this node has counted since it started: requests, answers,
    /// replica work, peer messages and batches.
    pub fn stats(&self) -> NodeStats {
        let mut stats = self.stats;
        stats.reap.checks_timed_out = self.reaper.checks_timed_out;
        stats
    }

    /// What this node holds right now, for checks that nothing grows
    /// without bound and everything drains.
    pub fn sizes(&self) -> NodeSizes {
        NodeSizes {
            in_flight: self.pending.len(),
            deadlines_watched: self.pending.watched(),
            outputs_queued: self.outbox.queued_len(),
            outputs_held: self.outbox.held_len(),
            local_copies_waiting: self.outbox.local_copies_len(),
            lost_batch_ranges: self.outbox.lost_len(),
            heard_from: self.liveness.len(),
            writebacks: self.writebacks.len(),
            hints_pending: self.hints.total_pending(),
            tombstones_pending: self.reaper.pending(),
        }
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
        let output = self.outbox.poll()?;
        match &output {
            Output::Reply { reply, .. }
            | Output::Send {
                message: Message::Forward(ForwardMessage::Reply { reply, .. }),
                ..
            } => self.stats.client.count_answer(reply),
            _ => {}
        }
        Some(output)
    }

    /// The driver sealed everything staged so far into one batch for its
    /// storage to commit; what is staged from now on belongs to the next batch.
    /// Returns the sealed batch's number, which [`Release::AfterBatch`] names.
    pub fn seal_batch(&mut self) -> u64 {
        self.stats.batches.sealed += 1;
        self.outbox.seal()
    }

    /// The driver made batch `batch` (and every earlier one) durable: the
    /// answers held for it become ready, and the coordinator's own copies
    /// staged in it now count toward their writes' quorums. A write is
    /// answered once any W replicas have it durably, so a coordinator with a
    /// slow disk does not hold up a write two others stored.
    pub fn batch_durable(&mut self, batch: u64) {
        let stats = &mut self.stats.batches;
        stats.durable_through = stats.durable_through.max(batch);
        for request in self.outbox.durable_through(batch) {
            if let Some(Pending::Put(fsm, _)) = self.pending.get_mut(&request) {
                fsm.record(&self.config.id, Ok(()));
                self.progress_put(request);
            }
        }
        self.marks_durable(batch);
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
        self.stats.batches.losses += 1;
        self.antientropy.forget_trees();
        // What the lost batches held is unknown: the check under way may
        // rest on a copy that is gone, and the walk that rebuilds the trees
        // finds the tombstones again.
        self.reaper.forget();
        // A transfer's checkpoint may be ahead of what is durable: back to
        // the stored one (pages after it are asked for again), and walks
        // completed in the lost batches are not marked.
        self.marks_waiting.clear();
        self.incoming = Incoming::new(
            transfer::load_checkpoints(store),
            self.config.transfer_bytes_per_s,
        );
        // Hints counted as stored or removed may not be: counted again.
        self.hints.forget_owners();
        self.count_hints(store);
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
            Input::Client { id, op } => {
                self.stats.client.count_request(&op);
                self.on_client(Origin::Local(id), op, store)
            }
            Input::Admin { id, op } => {
                let reply = self.on_admin(op, store);
                self.answer_admin(id, reply);
            }
            Input::Peer { from, message } => self.on_peer(from, message, store),
            Input::Unreachable { addr } => self.on_unreachable(&addr),
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
        if std::mem::take(&mut self.meta_unstaged) {
            // A failed stage shows up as a failed commit in the driver.
            let _ = store.stage_meta(&self.meta);
        }
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
            self.ping_round();
        }
        if self.timers.fire(Timer::Gossip, now, GOSSIP_INTERVAL_MS) {
            self.gossip_round(random);
        }
        if self.timers.fire(Timer::Handoff, now, HANDOFF_EVERY_MS) {
            self.handoff_turn(store);
        }
        if self.timers.fire(Timer::Transfer, now, TRANSFER_EVERY_MS) {
            self.transfer_turn(store);
            self.leftover_turn(store);
        }
        if let Some(every) = self.config.antientropy.map(|c| c.every_ms) {
            if self.timers.fire(Timer::AntiEntropy, now, every) {
                self.antientropy_turn(store);
            }
            if self.timers.fire(Timer::Reap, now, REAP_EVERY_MS) {
                self.reap_turn(store);
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
                    let asked_at = fsm
                        .deadline_ms
                        .saturating_sub(self.config.request_timeout_ms);
                    for node in fsm.unanswered() {
                        self.liveness.call_failed(&node, asked_at);
                    }
                    self.pending.insert(id, Pending::Get(fsm));
                    self.progress_get(id, store);
                }
                Some(Pending::Put(fsm, writeback)) => {
                    let asked_at = fsm
                        .deadline_ms
                        .saturating_sub(self.config.request_timeout_ms);
                    for node in fsm.unanswered() {
                        self.liveness.call_failed(&node, asked_at);
                        let (table, key) = &fsm.slot;
                        self.write_missed(table, key, &node, &fsm.asked);
                    }
                    self.pending.insert(id, Pending::Put(fsm, writeback));
                    self.progress_put(id);
                }
                Some(Pending::Placement(placement)) => {
                    let failed = Err(PluginFailure::Unavailable(
                        "the storage plugin did not answer in time".to_owned(),
                    ));
                    self.finish_placement(*placement, failed, store);
                }
                Some(Pending::Reconcile(job)) => {
                    let failed = Err(PluginFailure::Unavailable(
                        "the plugin call did not finish in time".to_owned(),
                    ));
                    self.finish_reconcile(job, failed, store);
                }
                None => {}
            }
        }
        self.pending.keep_watching(&due);
    }

    // ---- peers ----------------------------------------------------------------

    fn on_peer(&mut self, from: NodeId, message: Message, store: &mut dyn LocalStore) {
        if self.meta.removed.contains_key(&from)
            && !matches!(message, Message::Member(MemberMessage::Ping))
        {
            // A removed node that has not heard of its removal may still
            // hold stale copies and hints: nothing it says is taken (its
            // ping is answered with the metadata that tells it).
            return;
        }
        if !matches!(message, Message::Member(MemberMessage::JoinRequest { .. })) {
            self.liveness.heard(&from, self.now.mono_ms);
        }
        self.stats.peer.count(&message);
        match message {
            Message::Hello { .. } => {}
            Message::Member(message) => self.on_member(from, message, store),
            Message::Replica(message) => self.on_replica(from, message, store),
            Message::Module(message) => self.on_module(from, message, store),
            Message::Forward(message) => self.on_forward(from, message, store),
            Message::Sync(message) => self.on_sync(from, message, store),
            Message::Handoff(message) => self.on_handoff(from, message, store),
            Message::Reap(message) => self.on_reap(from, message, store),
            Message::Transfer(message) => self.on_transfer(from, message, store),
        }
    }

    fn on_unreachable(&mut self, addr: &str) {
        let now = self.now.mono_ms;
        let at = self
            .meta
            .members
            .iter()
            .filter(|(id, m)| m.peer == addr && **id != self.config.id)
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>();
        for id in at {
            self.liveness.call_failed(&id, now);
        }
    }

    fn addr_of(&self, node: &NodeId) -> Option<String> {
        self.meta.members.get(node).map(|m| m.peer.clone())
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
