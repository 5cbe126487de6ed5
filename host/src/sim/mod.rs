//! A seeded whole-cluster simulator over [`Node`]: virtual time, a lossy and
//! reordering network, crashes (losing what was staged but not committed),
//! wiped data dirs and restarts. The same seed replays the same run exactly.
//!
//! It drives nodes the way the real driver does: feed an input, send the
//! requests it produced, seal the staged writes into a batch and commit it
//! (taking 1–2 ms of virtual time, while the node goes on staging the next
//! batch), and release each answer once the batch it vouches for is durable.

#[cfg(test)]
mod check;
#[cfg(test)]
mod gossip;
#[cfg(test)]
mod handoff;
#[cfg(test)]
mod holes;
#[cfg(test)]
mod reap;
mod store;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod transfer;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use bytes::Bytes;

use cairn_sdk::{ReconcileInput, Resolution};

use crate::core::antientropy::AntiEntropyConfig;
use crate::core::msg::{
    AdminOp, AdminReply, ClientOp, ClientReply, MemberMessage, Message, PluginFailure,
};
use crate::core::node::{Input, Node, NodeConfig, Now, Output, Persisted};
use crate::core::ring::partition_of;
pub use crate::core::rng::Rng;
use crate::core::store::StoreError;
use crate::core::table::TablePatch;
use crate::core::token::ClientContext;
use crate::core::types::{NodeId, TableName};
pub use store::MemoryStore;

/// Wall clock at virtual time zero (a plausible Unix time in ms).
const WALL_EPOCH_MS: u64 = 1_790_000_000_000;
/// How often each node is ticked.
const TICK_MS: u64 = 20;

/// How hostile the network is.
#[derive(Debug, Clone, Copy)]
pub struct NetworkFaults {
    /// Messages lost, per mille.
    pub loss_per_mille: u64,
    /// Smallest delivery delay.
    pub delay_ms_min: u64,
    /// Largest delivery delay (random delays reorder messages).
    pub delay_ms_max: u64,
    /// Messages delivered twice, per mille (a retransmission after a lost ack).
    pub duplicate_per_mille: u64,
}

impl NetworkFaults {
    /// A perfect network with 1 ms delivery.
    pub fn none() -> Self {
        NetworkFaults {
            loss_per_mille: 0,
            delay_ms_min: 1,
            delay_ms_max: 1,
            duplicate_per_mille: 0,
        }
    }
}

enum Event {
    Deliver {
        to: usize,
        from: NodeId,
        message: Message,
    },
    Tick {
        node: usize,
    },
    /// An input for node `node` from outside the network (a plugin call's
    /// outcome): the core's own [`Input`], as the real loop feeds it.
    Input {
        node: usize,
        input: Input,
    },
    /// Node `node`'s sealed batches up to `batch` are durable (unless it crashed meanwhile).
    Committed {
        node: usize,
        incarnation: u64,
        batch: u64,
    },
}

/// A native stand-in for a table plugin (the simulator runs no WebAssembly).
pub type Reconciler = fn(&ReconcileInput) -> Result<Resolution, PluginFailure>;

fn no_plugins(_: &ReconcileInput) -> Result<Resolution, PluginFailure> {
    Err(PluginFailure::Unavailable(
        "the simulator runs no plugins".into(),
    ))
}

struct SimNode {
    config: NodeConfig,
    node: Option<Node>,
    store: MemoryStore,
    /// Counts starts, so a commit finishing after a crash is ignored.
    incarnation: u64,
    /// Whether a commit of sealed batches is under way.
    committing: bool,
    /// How long its commits take, fastest and slowest (ms of virtual time).
    commit_ms: (u64, u64),
    /// How far its wall clock is off the true time (skew; changing it is a jump).
    clock_offset_ms: i64,
    /// Plugin modules its driver has (uploaded here, arrived, or stored at
    /// start): a call of any other answers "unavailable", as the real one does.
    modules: std::collections::BTreeSet<String>,
    /// Stopped (SIGSTOP): it runs nothing, and what reaches it waits.
    paused: bool,
    /// Events that reached it while paused, in order.
    held_events: Vec<Event>,
    /// Inputs fed to it while paused (client requests), in order.
    held_inputs: Vec<Input>,
}

/// The simulated cluster.
pub struct Sim {
    /// The seed this run replays.
    pub seed: u64,
    rng: Rng,
    now_ms: u64,
    sequence: u64,
    events: BinaryHeap<Reverse<(u64, u64)>>,
    payloads: BTreeMap<u64, Event>,
    nodes: Vec<SimNode>,
    /// The network's faults; change them at any time.
    pub faults: NetworkFaults,

    cut: Vec<(usize, usize)>,
    /// (from, to): messages from `from` to `to` are dropped, not back.
    one_way: Vec<(usize, usize)>,
    next_client_id: u64,
    crash_at_commit: Option<usize>,
    /// A node whose next commit fails (a full disk, an I/O error).
    fail_commit_of: Option<usize>,
    replies: BTreeMap<u64, ClientReply>,
    /// When each reply came, in virtual time.
    replied_at: BTreeMap<u64, u64>,
    /// What plugin tables' `reconcile` does here.
    pub reconciler: Reconciler,
    admin_replies: BTreeMap<u64, AdminReply>,
    /// Anti-entropy for nodes added from now on (see [`Sim::with_antientropy`]).
    antientropy: Option<AntiEntropyConfig>,
    /// The transfer throttle of nodes added from now on.
    pub transfer_bytes_per_s: u64,
    /// Partitions of the cluster node1 founds.
    partitions: usize,
    /// Gossip messages sent (digests, deltas, whole metadata) and their
    /// encoded bytes, for convergence figures.
    pub gossip_sent: (u64, u64),
    /// The counters of node incarnations that ended (a node's counters
    /// start afresh with each start), so totals survive crashes.
    retired_stats: Vec<crate::core::stats::NodeStats>,
}

fn address(index: usize) -> String {
    format!("sim-node{}", index + 1)
}

/// The index of the node at `addr`, if it names one.
fn address_index(addr: &str) -> Option<usize> {
    addr.strip_prefix("sim-node")?
        .parse::<usize>()
        .ok()?
        .checked_sub(1)
}

impl Sim {
    /// A cluster of `count` nodes: node1 founds it and the others join through
    /// it over the (perfect, during setup) network.
    pub fn new(seed: u64, count: usize) -> Sim {
        Sim::build(seed, count, None)
    }

    /// A cluster whose nodes run an anti-entropy turn every `every_ms`
    /// (walking their stores into their trees at start), throttled as
    /// `cairn serve` is by default.
    pub fn with_antientropy(seed: u64, count: usize, every_ms: u64) -> Sim {
        Sim::build(
            seed,
            count,
            Some(AntiEntropyConfig {
                every_ms,
                ..AntiEntropyConfig::default()
            }),
        )
    }

    /// A cluster running anti-entropy every `every_ms` whose tombstones
    /// may be collected `grace_ms` after a node stored them.
    pub fn with_tombstone_grace(seed: u64, count: usize, every_ms: u64, grace_ms: u64) -> Sim {
        Sim::build(
            seed,
            count,
            Some(AntiEntropyConfig {
                every_ms,
                tombstone_grace_ms: grace_ms,
                ..AntiEntropyConfig::default()
            }),
        )
    }

    fn build(seed: u64, count: usize, antientropy: Option<AntiEntropyConfig>) -> Sim {
        let mut sim = Sim {
            seed,
            rng: Rng::new(seed),
            now_ms: 0,
            sequence: 0,
            events: BinaryHeap::new(),
            payloads: BTreeMap::new(),
            nodes: Vec::new(),
            faults: NetworkFaults::none(),
            cut: Vec::new(),
            one_way: Vec::new(),
            next_client_id: 1,
            crash_at_commit: None,
            fail_commit_of: None,
            replies: BTreeMap::new(),
            replied_at: BTreeMap::new(),
            reconciler: no_plugins,
            admin_replies: BTreeMap::new(),
            antientropy,
            transfer_bytes_per_s: crate::core::limits::TRANSFER_BYTES_PER_S_DEFAULT,
            partitions: if count > 64 { 256 } else { 64 },
            gossip_sent: (0, 0),
            retired_stats: Vec::new(),
        };
        for i in 0..count {
            let seeds = if i == 0 { Vec::new() } else { vec![address(0)] };
            sim.add_node(seeds);
        }
        sim.run_for(3_000);
        // From now on every node knows every other as a seed, as an operator
        // restarting a wiped founder would pass `--seed`.
        for i in 0..count {
            sim.nodes[i].config.seeds = (0..count).filter(|&j| j != i).map(address).collect();
        }
        sim
    }

    /// Node `index`'s clocks: virtual time, and its own (maybe skewed) wall clock.
    fn now(&self, index: usize) -> Now {
        let wall = (WALL_EPOCH_MS + self.now_ms) as i64 + self.nodes[index].clock_offset_ms;
        Now {
            mono_ms: self.now_ms,
            wall_ms: wall.max(0) as u64,
        }
    }

    /// Sets node `index`'s wall clock `offset_ms` away from the true time: a
    /// skew from now on, and a jump when it changes while the node runs.
    pub fn set_clock_offset(&mut self, index: usize, offset_ms: i64) {
        self.nodes[index].clock_offset_ms = offset_ms;
    }

    /// Stops node `index` cleanly (SIGTERM): what it staged is committed first.
    pub fn stop_cleanly(&mut self, index: usize) {
        let sim_node = &mut self.nodes[index];
        // What waited for a stopped process dies with it.
        sim_node.paused = false;
        sim_node.held_events.clear();
        sim_node.held_inputs.clear();
        if let Some(node) = sim_node.node.take() {
            self.retired_stats.push(node.stats());
            sim_node.store.shut_down_cleanly(node.may_keep_epoch());
            sim_node.incarnation += 1;
            sim_node.committing = false;
        }
    }

    fn schedule(&mut self, at_ms: u64, event: Event) {
        self.sequence += 1;
        self.events.push(Reverse((at_ms, self.sequence)));
        self.payloads.insert(self.sequence, event);
    }

    fn start(&mut self, index: usize) {
        let now = self.now(index);
        // Every process start draws fresh randomness, as the real one does.
        self.nodes[index].config.entropy = self.rng.next_u64();
        let mut secret = [0u8; 32];
        for chunk in secret.chunks_mut(8) {
            chunk.copy_from_slice(&self.rng.next_u64().to_le_bytes());
        }
        self.nodes[index].config.cluster_secret = secret;
        let sim_node = &mut self.nodes[index];
        let persisted: Persisted = sim_node.store.persisted();
        let node = Node::new(sim_node.config.clone(), persisted, now, &mut sim_node.store);
        let node = node.unwrap_or_else(|e| panic!("seed {}: node start failed: {e}", self.seed));
        // Like the real driver, it compiles the modules it stores before serving.
        sim_node.modules.clear();
        for sha256 in node
            .meta()
            .plugins
            .values()
            .filter_map(|p| p.sha256.clone())
        {
            use crate::core::store::LocalStore as _;
            if let Ok(Some(_)) = sim_node.store.load_module(&sha256) {
                sim_node.modules.insert(sha256);
            }
        }
        sim_node.node = Some(node);
        sim_node.store.commit();
        self.drain(index);
        self.schedule(self.now_ms + TICK_MS, Event::Tick { node: index });
    }

    /// Whether node `index` is running.
    pub fn is_up(&self, index: usize) -> bool {
        self.nodes[index].node.is_some()
    }

    /// Pauses node `index` (SIGSTOP): it runs nothing — no ticks, no
    /// commits — while messages, answers of its plugin calls and client
    /// requests for it wait, to be delivered on [`Sim::resume`].
    pub fn pause(&mut self, index: usize) {
        self.nodes[index].paused = true;
    }

    /// Resumes a paused node: everything that waited reaches it now, in order.
    pub fn resume(&mut self, index: usize) {
        let sim_node = &mut self.nodes[index];
        if !std::mem::take(&mut sim_node.paused) {
            return;
        }
        let events = std::mem::take(&mut sim_node.held_events);
        let inputs = std::mem::take(&mut sim_node.held_inputs);
        for event in events {
            self.schedule(self.now_ms, event);
        }
        for input in inputs {
            self.feed(index, input);
        }
    }

    /// Whether node `index` is paused.
    pub fn is_paused(&self, index: usize) -> bool {
        self.nodes[index].paused
    }

    /// Crashes node `index`: staged and sealed-but-uncommitted writes are
    /// lost, and so are the answers waiting for them.
    pub fn crash(&mut self, index: usize) {
        let sim_node = &mut self.nodes[index];
        sim_node.paused = false;
        sim_node.held_events.clear();
        sim_node.held_inputs.clear();
        if let Some(node) = sim_node.node.take() {
            self.retired_stats.push(node.stats());
        }
        sim_node.store.lose_staged();
        sim_node.incarnation += 1;
        sim_node.committing = false;
    }

    /// Crashes node `index` and wipes its data dir.
    pub fn wipe(&mut self, index: usize) {
        self.crash(index);
        self.nodes[index].store = MemoryStore::default();
    }

    /// Crashes node `index` in its next turn, after it sent its requests but
    /// before it committed: the kv679 window.
    pub fn crash_during_next_commit(&mut self, index: usize) {
        self.crash_at_commit = Some(index);
    }

    /// Makes node `index`'s next commit fail: the node drops what it staged
    /// since its last durable batch and goes on, as the driver does.
    pub fn fail_next_commit(&mut self, index: usize) {
        self.fail_commit_of = Some(index);
    }

    /// Starts a crashed node again (an unclean restart).
    pub fn restart(&mut self, index: usize) {
        if !self.is_up(index) {
            self.start(index);
        }
    }

    /// Makes node `index`'s commits take between `fastest` and `slowest` ms.
    pub fn set_commit_ms(&mut self, index: usize, fastest: u64, slowest: u64) {
        self.nodes[index].commit_ms = (fastest, slowest.max(fastest));
    }

    /// Drops every message between `a` and `b`, both ways, until [`Sim::heal`].
    pub fn partition(&mut self, a: usize, b: usize) {
        self.cut.push((a, b));
    }

    /// Drops every message from `from` to `to` (the other way still
    /// works) until [`Sim::heal`]: one side hears the other, which does not
    /// hear it.
    pub fn partition_one_way(&mut self, from: usize, to: usize) {
        self.one_way.push((from, to));
    }

    /// Cuts every node of `side` from every node not in it, both ways, until
    /// [`Sim::heal`]: the cluster in two halves.
    pub fn split(&mut self, side: &[usize]) {
        for a in side.iter().copied() {
            for b in (0..self.nodes.len()).filter(|b| !side.contains(b)) {
                self.cut.push((a, b));
            }
        }
    }

    /// Ends every partition, cancels a pending crash and restores a perfect network.
    pub fn heal(&mut self) {
        self.cut.clear();
        self.one_way.clear();
        self.crash_at_commit = None;
        self.fail_commit_of = None;
        self.faults = NetworkFaults::none();
    }

    /// Feeds one input to node `index` the way the driver does.
    fn feed(&mut self, index: usize, input: Input) {
        let now = self.now(index);
        let sim_node = &mut self.nodes[index];
        if sim_node.paused && sim_node.node.is_some() {
            sim_node.held_inputs.push(input);
            return;
        }
        let Some(node) = sim_node.node.as_mut() else {
            return;
        };
        node.handle(now, input, &mut sim_node.store);
        self.drain(index);
    }

    /// Carries out what node `index` has ready: requests at once, answers
    /// once the batch they vouch for is durable (the node holds them).
    fn release_outputs(&mut self, index: usize) {
        while let Some(output) = self.nodes[index].node.as_mut().and_then(Node::poll_output) {
            self.carry_out(index, output);
        }
    }

    /// Releases outputs, seals what was staged and hands it to the commit
    /// (which takes every batch sealed so far when it is free).
    fn drain(&mut self, index: usize) {
        self.release_outputs(index);
        if self.crash_at_commit == Some(index) {
            // The requests already left; the commit and the answers never happen.
            self.crash_at_commit = None;
            self.crash(index);
            return;
        }
        let sim_node = &mut self.nodes[index];
        let Some(node) = sim_node.node.as_mut() else {
            return;
        };
        if sim_node.store.has_staged() {
            let batch = node.seal_batch();
            sim_node.store.seal(batch);
            if !sim_node.committing {
                self.start_commit(index);
            }
        } else if !sim_node.store.has_sealed() {
            // Nothing staged or pending: the batch is as durable as the ones before it.
            let batch = node.seal_batch();
            self.batch_durable(index, batch);
        }
    }

    /// Node `index`'s commit takes every batch sealed so far.
    fn start_commit(&mut self, index: usize) {
        let sim_node = &mut self.nodes[index];
        let Some(through) = sim_node.store.last_sealed() else {
            return;
        };
        sim_node.committing = true;
        let incarnation = sim_node.incarnation;
        let (fastest, slowest) = sim_node.commit_ms;
        let at = self.now_ms + fastest + self.rng.below(slowest.saturating_sub(fastest) + 1);
        self.schedule(
            at,
            Event::Committed {
                node: index,
                incarnation,
                batch: through,
            },
        );
    }

    /// Tells node `index` that `batch` is durable and releases what waited for it.
    fn batch_durable(&mut self, index: usize, batch: u64) {
        if let Some(node) = self.nodes[index].node.as_mut() {
            node.batch_durable(batch);
        }
        self.release_outputs(index);
    }

    fn carry_out(&mut self, index: usize, output: Output) {
        match output {
            Output::Send { addr, message } => {
                if let Message::Member(
                    MemberMessage::Digest(_)
                    | MemberMessage::Delta { .. }
                    | MemberMessage::Gossip(_),
                ) = &message
                {
                    let bytes = postcard::to_allocvec(&message).map_or(0, |b| b.len() as u64);
                    self.gossip_sent.0 += 1;
                    self.gossip_sent.1 += bytes;
                }
                let Some(to) = address_index(&addr).filter(|&i| i < self.nodes.len()) else {
                    return;
                };
                let cut = self
                    .cut
                    .iter()
                    .any(|&(a, b)| (a, b) == (index, to) || (b, a) == (index, to))
                    || self.one_way.contains(&(index, to));
                if cut || self.rng.chance(self.faults.loss_per_mille) {
                    return;
                }
                let spread = self
                    .faults
                    .delay_ms_max
                    .saturating_sub(self.faults.delay_ms_min);
                let delay = self.faults.delay_ms_min + self.rng.below(spread + 1);
                let from = self.nodes[index].config.id.clone();
                if self.rng.chance(self.faults.duplicate_per_mille) {
                    let again = self.faults.delay_ms_min + self.rng.below(spread + 1);
                    let copy = Event::Deliver {
                        to,
                        from: from.clone(),
                        message: message.clone(),
                    };
                    self.schedule(self.now_ms + again, copy);
                }
                self.schedule(self.now_ms + delay, Event::Deliver { to, from, message });
            }
            Output::Reply { id, reply } => {
                self.replies.insert(id, reply);
                self.replied_at.insert(id, self.now_ms);
            }
            Output::AdminReply { id, reply } => {
                self.admin_replies.insert(id, reply);
            }
            Output::Reconcile { job, input, sha256 } => {
                let outcome = if self.nodes[index].modules.contains(&sha256) {
                    (self.reconciler)(&input)
                } else {
                    Err(PluginFailure::Unavailable(
                        "the plugin module is not on this node yet".into(),
                    ))
                };
                self.schedule(
                    self.now_ms + 1,
                    Event::Input {
                        node: index,
                        input: Input::Reconciled { job, outcome },
                    },
                );
            }
            Output::SelectStorage { job, sha256, .. } => {
                // The simulator keeps every object in its one store.
                let outcome = if self.nodes[index].modules.contains(&sha256) {
                    Ok(cairn_sdk::Storage::Lmdb)
                } else {
                    Err(PluginFailure::Unavailable(
                        "the storage plugin is not on this node yet".into(),
                    ))
                };
                self.schedule(
                    self.now_ms + 1,
                    Event::Input {
                        node: index,
                        input: Input::StorageSelected { job, outcome },
                    },
                );
            }
            Output::ModuleArrived { sha256, .. } => {
                self.nodes[index].modules.insert(sha256);
            }
            Output::Fatal(reason) => {
                // A refused node stops, as the real one exits.
                let _ = reason;
                self.crash(index);
            }
        }
    }

    /// Runs virtual time forward by `ms`.
    pub fn run_for(&mut self, ms: u64) {
        let until = self.now_ms + ms;
        while let Some(Reverse((at, sequence))) = self.events.peek().copied() {
            if at > until {
                break;
            }
            self.events.pop();
            self.now_ms = at;
            let Some(event) = self.payloads.remove(&sequence) else {
                continue;
            };
            let target = match &event {
                Event::Deliver { to, .. } => *to,
                Event::Input { node, .. }
                | Event::Committed { node, .. }
                | Event::Tick { node } => *node,
            };
            if self.nodes[target].paused && self.is_up(target) {
                match event {
                    // A stopped process does not tick; it ticks again once resumed.
                    Event::Tick { node } => {
                        self.schedule(self.now_ms + TICK_MS, Event::Tick { node })
                    }
                    other => self.nodes[target].held_events.push(other),
                }
                continue;
            }
            match event {
                Event::Deliver { to, from, message } => {
                    self.feed(to, Input::Peer { from, message })
                }
                Event::Input { node, input } => self.feed(node, input),
                Event::Committed {
                    node,
                    incarnation,
                    batch,
                } => {
                    let sim_node = &mut self.nodes[node];
                    if sim_node.incarnation == incarnation
                        && sim_node.committing
                        && self.fail_commit_of == Some(node)
                    {
                        self.fail_commit_of = None;
                        sim_node.committing = false;
                        sim_node.store.lose_pending();
                        let failure = StoreError::Failed("injected commit failure".into());
                        let recorded = match sim_node.node.as_mut() {
                            Some(core) => core.batches_lost(&failure, &mut sim_node.store),
                            None => Ok(()),
                        };
                        if recorded.is_err() {
                            // The driver stops a node that cannot record a new epoch.
                            self.crash(node);
                        } else {
                            self.drain(node);
                        }
                    } else if sim_node.incarnation == incarnation && sim_node.committing {
                        sim_node.store.commit_through(batch);
                        sim_node.committing = false;
                        // Batches sealed meanwhile go into the next commit at once.
                        self.start_commit(node);
                        self.batch_durable(node, batch);
                        self.drain(node);
                    }
                }
                Event::Tick { node } => {
                    if self.is_up(node) {
                        let random = self.rng.next_u64();
                        self.feed(node, Input::Tick { random });
                        self.schedule(self.now_ms + TICK_MS, Event::Tick { node });
                    }
                }
            }
        }
        self.now_ms = until;
    }

    /// Starts a client operation at node `index`; its answer appears in
    /// [`Sim::reply`] once the simulation has run far enough.
    pub fn submit(&mut self, index: usize, op: ClientOp) -> u64 {
        let id = self.next_client_id;
        self.next_client_id += 1;
        self.feed(index, Input::Client { id, op });
        id
    }

    /// When the answer to a submitted operation came (virtual time).
    pub fn replied_at(&self, id: u64) -> Option<u64> {
        self.replied_at.get(&id).copied()
    }

    /// The answer to a submitted operation, if it came.
    pub fn reply(&self, id: u64) -> Option<&ClientReply> {
        self.replies.get(&id)
    }

    /// Runs an operation to completion (or until `timeout_ms`).
    pub fn call(&mut self, index: usize, op: ClientOp, timeout_ms: u64) -> Option<ClientReply> {
        let id = self.submit(index, op);
        let mut waited = 0;
        while waited < timeout_ms && self.reply(id).is_none() {
            self.run_for(5);
            waited += 5;
        }
        self.replies.remove(&id)
    }

    /// Runs an admin operation at node `index` and returns its answer (once
    /// its metadata is committed).
    pub fn admin(&mut self, index: usize, op: AdminOp) -> Option<AdminReply> {
        let id = self.next_client_id;
        self.next_client_id += 1;
        self.feed(index, Input::Admin { id, op });
        // An upload waits up to 2 s for the module to spread.
        for _ in 0..600 {
            if let Some(reply) = self.admin_replies.remove(&id) {
                return Some(reply);
            }
            self.run_for(5);
        }
        None
    }

    /// Delivers `message` to node `to` as if node `from` sent it (a peer's
    /// frame, forged or replayed).
    pub fn inject(&mut self, to: usize, from: usize, message: Message) {
        let from = self.nodes[from].config.id.clone();
        self.feed(to, Input::Peer { from, message });
    }

    /// Delivers `message` to node `to` from a peer connection that named
    /// itself `from` (any id: a peer names itself at will).
    pub fn inject_as(&mut self, to: usize, from: NodeId, message: Message) {
        self.feed(to, Input::Peer { from, message });
    }

    /// Adds a node that founds a one-node cluster of its own (no seeds);
    /// returns its index.
    pub fn add_solo_node(&mut self) -> usize {
        self.add_node(Vec::new())
    }

    /// Adds a node that joins the cluster through node1 (its seed) at its
    /// first start; returns its index.
    pub fn add_joining_node(&mut self) -> usize {
        self.add_node(vec![address(0)])
    }

    /// Adds node `node{len+1}` with `seeds` and starts it; returns its index.
    fn add_node(&mut self, seeds: Vec<String>) -> usize {
        let i = self.nodes.len();
        let id =
            NodeId::new(&format!("node{}", i + 1)).unwrap_or_else(|_| unreachable!("valid id"));
        let config = NodeConfig {
            id,
            http: format!("http-{}", i + 1),
            peer: address(i),
            seeds,
            partitions: self.partitions,
            target_n: 3,
            request_timeout_ms: 2_000,
            // Drawn afresh at every start.
            entropy: 0,
            cluster_secret: [0; 32],
            antientropy: self.antientropy,
            transfer_bytes_per_s: self.transfer_bytes_per_s,
        };
        self.nodes.push(SimNode {
            config,
            node: None,
            store: MemoryStore::default(),
            incarnation: 0,
            committing: false,
            commit_ms: (1, 2),
            clock_offset_ms: 0,
            modules: Default::default(),
            paused: false,
            held_events: Vec::new(),
            held_inputs: Vec::new(),
        });
        self.start(i);
        i
    }

    /// The address node `index` listens on for peers.
    pub fn peer_address(index: usize) -> String {
        address(index)
    }

    /// Creates a table through node `index` and lets gossip spread it.
    pub fn create_table(&mut self, index: usize, name: &str, patch: TablePatch) {
        let id = self.next_client_id;
        self.next_client_id += 1;
        let table = TableName::new(name).unwrap_or_else(|e| panic!("{e}"));
        self.feed(
            index,
            Input::Admin {
                id,
                op: AdminOp::PutTable(table, patch),
            },
        );
        // The answer leaves once the new table's metadata is committed.
        self.run_for(5);
        assert!(
            matches!(self.admin_replies.remove(&id), Some(AdminReply::Table(..))),
            "seed {}: table not created",
            self.seed
        );
        self.run_for(500);
    }

    /// The object node `index` holds for a key (committed and staged).
    pub fn local_object(
        &mut self,
        index: usize,
        table: &str,
        key: &[u8],
    ) -> Option<crate::core::object::Object> {
        let table = TableName::new(table).ok()?;
        self.nodes[index].store.object(&table, key)
    }

    /// Virtual time now.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the simulation has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Uploads plugin `name` (version `version` of its stand-in bytes) to
    /// node `index`, as `PUT /plugins/{name}` does after validating it there;
    /// the other nodes fetch the module as real ones do. [`Sim::reconciler`]
    /// stands in for the module's code. Returns the module's sha256.
    pub fn upload_plugin(
        &mut self,
        index: usize,
        name: &str,
        exports: &[&str],
        version: u32,
    ) -> String {
        let bytes = Bytes::from(format!("sim-module:{name}:{version}"));
        let sha256 = crate::plugin::sha256_hex(&bytes);
        let op = AdminOp::PutPlugin {
            name: name.to_owned(),
            sha256: sha256.clone(),
            abi: cairn_sdk::ABI_VERSION,
            exports: exports.iter().map(|e| (*e).to_owned()).collect(),
            bytes,
        };
        self.nodes[index].modules.insert(sha256.clone());
        let reply = self.admin(index, op);
        assert!(
            matches!(reply, Some(AdminReply::Plugin { .. })),
            "seed {}: upload refused: {reply:?}",
            self.seed
        );
        sha256
    }

    /// The counters of every node incarnation of this run, ended ones
    /// included: sums over them count what happened across crashes.
    pub fn stats_of_every_incarnation(&self) -> Vec<crate::core::stats::NodeStats> {
        let running = self
            .nodes
            .iter()
            .filter_map(|n| n.node.as_ref())
            .map(|n| n.stats());
        self.retired_stats.iter().copied().chain(running).collect()
    }

    /// Node `index`'s protocol state, while it runs.
    pub fn node(&self, index: usize) -> Option<&Node> {
        self.nodes[index].node.as_ref()
    }

    /// The nodes that replicate `table`/`key` by the ring and the table's
    /// n as the first running node knows them (empty if none runs or the
    /// table is unknown).
    pub fn replicas_of(&self, table: &str, key: &str) -> Vec<usize> {
        let Some(node) = self.nodes.iter().find_map(|n| n.node.as_ref()) else {
            return Vec::new();
        };
        let meta = node.meta();
        let (Ok(table), Some(ring)) = (TableName::new(table), meta.ring.as_ref()) else {
            return Vec::new();
        };
        let Some(entry) = meta.tables.get(&table) else {
            return Vec::new();
        };
        let partition = partition_of(ring.partitions(), &table, key.as_bytes());
        ring.preference_list(partition)
            .into_iter()
            .take(usize::from(entry.config.n))
            .filter_map(|id| self.nodes.iter().position(|n| n.config.id == id))
            .collect()
    }

    /// The epoch node `index` runs under.
    pub fn epoch(&self, index: usize) -> Option<u64> {
        self.nodes[index].node.as_ref().map(Node::epoch)
    }
}

/// Shorthand for a GET.
pub fn get(table: &str, key: &str, r: Option<u8>) -> ClientOp {
    ClientOp::Get {
        table: table_name(table),
        key: Bytes::copy_from_slice(key.as_bytes()),
        r,
    }
}

/// Shorthand for a PUT.
pub fn put(table: &str, key: &str, value: &str, context: Option<ClientContext>) -> ClientOp {
    ClientOp::Put {
        table: table_name(table),
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        content_type: "text/plain".into(),
        context,
        w: None,
    }
}

/// Shorthand for a DELETE (a tombstone; without a context it covers what
/// an R-quorum read sees).
pub fn delete_op(table: &str, key: &str, context: Option<ClientContext>) -> ClientOp {
    ClientOp::Put {
        table: table_name(table),
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: None,
        content_type: String::new(),
        context,
        w: None,
    }
}

fn table_name(name: &str) -> TableName {
    TableName::new(name).unwrap_or_else(|e| panic!("{e}"))
}
