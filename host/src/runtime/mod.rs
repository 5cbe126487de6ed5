//! The node loop: the one place where the real clock, sockets and LMDB meet
//! the sans-IO [`Node`].
//!
//! Each turn it takes every event waiting (HTTP requests, peer frames, a
//! timer tick), feeds them to the node and carries out what is ready: requests
//! at once, answers once the batch they vouch for is durable (the node holds
//! them until then). What the turn staged is sealed into a numbered batch and
//! handed to a thread of its own (`commit::Committer`, group commit), so the
//! loop goes on serving while LMDB syncs — nothing is acknowledged early.

mod commit;
mod descriptors;
mod progress;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::core::antientropy::AntiEntropyConfig;
use crate::core::limits::{
    COMMIT_FAILURES_MAX, DROP_SWEEP_RECORDS, EVENTS_PER_TURN_MAX, EVENT_QUEUE_MAX,
    HTTP_BODY_BYTES_IN_FLIGHT_MAX, PLUGIN_CALLS_WAITING_MAX,
};
use crate::core::msg::{AdminOp, AdminReply, ClientOp, ClientReply, PluginFailure};
use crate::core::node::{Input, Node, NodeConfig, Now, Output};
use crate::core::store::StoreError;
use crate::core::token::TokenKey;
use crate::core::types::NodeId;
use crate::metrics::NodeMetrics;
use crate::net::{self, Outbound};
use crate::plugin::{CompiledPlugin, PluginRuntime, INSTANCES_MAX, INSTANCES_PER_PLUGIN_MAX};
use crate::storage::{DiskGauge, NodeStore};

/// How often unreferenced blob files are looked for.
const BLOB_SWEEP_INTERVAL_MS: u64 = 60_000;
/// How often a slice of a dropped table's records is deleted (`DROP_SWEEP_RECORDS` each):
/// collection goes on in the background without holding up requests.
const DROP_SWEEP_INTERVAL: Duration = Duration::from_millis(100);
const COMMIT_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How often the node is told time passed.
const TICK_MS: u64 = 20;
/// How often a node that no seed has admitted says so in its log.
const JOIN_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Something for the node loop to handle.
pub enum Event {
    /// A client key operation and where to send its answer.
    Client {
        /// The operation.
        op: ClientOp,
        /// Where the answer goes.
        reply: oneshot::Sender<ClientReply>,
    },
    /// An admin operation and where to send its answer.
    Admin {
        /// The operation.
        op: AdminOp,
        /// Where the answer goes.
        reply: oneshot::Sender<AdminReply>,
    },
    /// An input that needs no answer routed back (a peer's frame, a
    /// plugin call's outcome): the core's own [`Input`], which the
    /// simulator feeds alike.
    Input(Input),
}

/// Everything `cairn serve` is told.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Node id.
    pub id: NodeId,
    /// HTTP listen address (port 0 picks one).
    pub http: String,
    /// Peer listen address (port 0 picks one).
    pub peer: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// The HTTP address members are told (`None`: the bound one).
    pub advertise_http: Option<String>,
    /// The peer address members are told (`None`: the bound one).
    pub advertise_peer: Option<String>,
    /// Seeds' peer addresses.
    pub seeds: Vec<String>,
    /// Partitions of a new cluster.
    pub partitions: usize,
    /// target_n of a new cluster.
    pub target_n: u8,
    /// Client request timeout.
    pub request_timeout_ms: u64,
    /// Largest value accepted.
    pub value_bytes_max: usize,
    /// HTTP connections served at once (more are closed on accept).
    pub http_connections_max: usize,
    /// Free bytes kept on the data dir's disk (writes that would leave less get 507).
    pub disk_reserve_bytes: u64,
    /// Anti-entropy's period and throttle (`None`: it runs none).
    pub antientropy: Option<AntiEntropyConfig>,
    /// Bytes a second this node copies moving partitions at.
    pub transfer_bytes_per_s: u64,
    /// Milliseconds added to this node's wall clock: a skewed clock for
    /// fault tests (Linux cannot skew the real clock of one process). The
    /// monotonic clock is untouched; 0 everywhere else.
    pub clock_offset_ms: i64,
    /// Test-only slow and lossy peer links ([`net::faults`]); `None`
    /// everywhere else.
    pub link_faults_file: Option<std::path::PathBuf>,
    /// The secret every peer link proves (`None`: links are open to
    /// anyone who can reach the peer port).
    pub cluster_secret: Option<crate::core::peer_auth::ClusterSecret>,
    /// Whether HTTP requests need an API key (`--auth required`).
    pub auth_required: bool,
    /// A file holding the bootstrap admin key (read once at start; only a
    /// salted hash of it is kept).
    pub admin_key_file: Option<std::path::PathBuf>,
    /// TLS on the HTTP port (`None`: plain HTTP).
    pub tls: Option<crate::http::tls::TlsFiles>,
    /// Whether `/metrics` is served and the driver records into it.
    pub metrics: bool,
}

/// The addresses a started node listens on.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// HTTP.
    pub http: SocketAddr,
    /// Peer.
    pub peer: SocketAddr,
}

/// What HTTP handlers need to reach the node loop.
#[derive(Clone)]
pub struct NodeHandle {
    events: mpsc::Sender<Event>,
    /// Largest value accepted.
    pub value_bytes_max: usize,
    /// How long a handler waits for the node before answering 503.
    pub reply_timeout: Duration,
    /// The sandbox, for validating uploads off the node loop.
    pub plugins: Arc<PluginRuntime>,
    /// KiB of request bodies being read: a body is admitted against it
    /// before any of it is read.
    body_budget: Arc<Semaphore>,
    /// The cluster's context-token key, as the node loop last saw it.
    token_key: Arc<std::sync::RwLock<Option<TokenKey>>>,
    /// Free space on the data dir's disk and its reserve, for `/cluster`.
    pub disk: Arc<DiskGauge>,
    /// Whether peer links are authenticated and how many were refused, for `/cluster`.
    pub peers: Arc<net::handshake::PeerGuard>,
    /// Who may do what over HTTP.
    pub access: Arc<crate::http::auth::AccessControl>,
    /// This node's Prometheus registry and live instruments.
    pub metrics: Arc<NodeMetrics>,
    /// This node's id, for request spans.
    pub node_id: NodeId,
}

/// A request body's share of [`NodeHandle`]'s body budget, held while it is read.
pub type BodyAdmission = tokio::sync::OwnedSemaphorePermit;

/// Why a handler got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// The event queue is full.
    Overloaded,
    /// The node loop stopped or did not answer in time.
    Stopped,
}

impl NodeHandle {
    /// The key context tokens are issued and checked with (`None` until this
    /// node belongs to a cluster).
    pub fn token_key(&self) -> Option<TokenKey> {
        *self.token_key.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a request body of up to `bytes` before it is read: `None` when
    /// the node's queue is full or too many body bytes are being read
    /// already (the client gets 503 and retries), so memory never grows
    /// with requests the node could not take anyway.
    pub fn admit_body(&self, bytes: usize) -> Option<BodyAdmission> {
        if self.events.capacity() == 0 {
            return None;
        }
        let kib = u32::try_from(bytes.div_ceil(1024).max(1)).ok()?;
        self.body_budget.clone().try_acquire_many_owned(kib).ok()
    }

    /// Runs a client operation through the node loop.
    pub async fn client(&self, op: ClientOp) -> Result<ClientReply, Unanswered> {
        let (reply, answer) = oneshot::channel();
        self.submit(Event::Client { op, reply }, answer).await
    }

    /// Runs an admin operation through the node loop.
    pub async fn admin(&self, op: AdminOp) -> Result<AdminReply, Unanswered> {
        let (reply, answer) = oneshot::channel();
        self.submit(Event::Admin { op, reply }, answer).await
    }

    async fn submit<T>(&self, event: Event, answer: oneshot::Receiver<T>) -> Result<T, Unanswered> {
        self.events.try_send(event).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Unanswered::Overloaded,
            mpsc::error::TrySendError::Closed(_) => Unanswered::Stopped,
        })?;
        match tokio::time::timeout(self.reply_timeout, answer).await {
            Ok(Ok(value)) => Ok(value),
            _ => Err(Unanswered::Stopped),
        }
    }
}

/// Reloads the HTTP certificate and key on every SIGHUP; a bad pair is
/// logged and the old one stays. Without TLS a SIGHUP is logged and
/// ignored (never the default action, which would stop the node).
async fn reload_on_hangup(
    hangups: Option<tokio::signal::unix::Signal>,
    tls: Option<Arc<crate::http::tls::TlsReloader>>,
) {
    let Some(mut hangups) = hangups else {
        return;
    };
    while hangups.recv().await.is_some() {
        match tls.as_ref().map(|tls| tls.reload()) {
            None => tracing::info!("SIGHUP: nothing to reload (no TLS)"),
            Some(Ok(())) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "SIGHUP: TLS certificate not reloaded; the old one stays")
            }
        }
    }
}

/// How often the node loop tells the metrics which tables and plugins exist
/// (the only names their labels may carry).
const NAMES_PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Tells `metrics` the tables and plugins the cluster has now.
fn publish_names(node: &Node, metrics: &NodeMetrics) {
    let meta = node.meta();
    metrics.publish_names(
        meta.tables.keys().map(|t| t.as_str().to_owned()),
        meta.plugins
            .iter()
            .filter_map(|(name, entry)| Some((entry.sha256.clone()?, name.clone()))),
    );
}

/// How often the node loop looks for changed API keys.
const KEYS_PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// The node's HTTP access rules from its options (reads the admin key file).
fn access_control(options: &ServeOptions) -> anyhow::Result<crate::http::auth::AccessControl> {
    let file = || {
        options
            .admin_key_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let bootstrap = match &options.admin_key_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--admin-key-file {}: {e}", file()))?,
        ),
        None => None,
    };
    crate::http::auth::AccessControl::new(options.auth_required, bootstrap.as_deref())
        .map_err(|e| anyhow::anyhow!("--admin-key-file {}: {e}", file()))
}

/// Runs one node until `shutdown` completes (clean shutdown) or it fails.
/// `on_bound` learns the listen addresses once both sockets are bound.
pub async fn serve(
    options: ServeOptions,
    on_bound: impl FnOnce(Bound),
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Caught from the start: SIGHUP's default action would stop the node.
    let hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!(error = %e, "SIGHUP cannot be caught: the TLS certificate reloads only on restart");
            None
        }
    };
    let (mut store, persisted) = NodeStore::open(&options.data_dir, &options.id)?;
    store.reserve_disk(options.disk_reserve_bytes);
    let http_listener = TcpListener::bind(&options.http).await?;
    let peer_listener = TcpListener::bind(&options.peer).await?;
    let bound = Bound {
        http: http_listener.local_addr()?,
        peer: peer_listener.local_addr()?,
    };
    let clock = Clock::new(options.clock_offset_ms);
    for (flag, bound, advertised) in [
        ("http", bound.http, &options.advertise_http),
        ("peer", bound.peer, &options.advertise_peer),
    ] {
        if bound.ip().is_unspecified() && advertised.is_none() {
            tracing::warn!(
                %bound,
                "--{flag} binds every interface but no --advertise-{flag} is set: members are told {bound}, which they cannot dial"
            );
        }
    }
    let own_peer = options
        .advertise_peer
        .clone()
        .unwrap_or_else(|| bound.peer.to_string());
    let is_self = |seed: &String| *seed == own_peer || *seed == options.peer;
    let seeds = seeds_to_ask(&options.seeds, is_self, persisted.meta.is_some()).await;
    let config = NodeConfig {
        id: options.id.clone(),
        http: options
            .advertise_http
            .clone()
            .unwrap_or_else(|| bound.http.to_string()),
        peer: options
            .advertise_peer
            .clone()
            .unwrap_or_else(|| bound.peer.to_string()),
        seeds: seeds.clone(),
        partitions: options.partitions,
        target_n: options.target_n,
        request_timeout_ms: options.request_timeout_ms,
        entropy: os_random()?,
        cluster_secret: os_random_bytes()?,
        antientropy: options.antientropy,
        transfer_bytes_per_s: options.transfer_bytes_per_s,
    };
    let node = Node::new(config, persisted, clock.now(), &mut store)?;
    store.commit()?;
    let plugins = PluginRuntime::new()?;
    let uncompiled = compile_stored_modules(&node, &mut store, &plugins);
    tracing::info!(node = %options.id, epoch = node.epoch(), http = %bound.http, peer = %bound.peer, "node started");
    let (events, inbox) = mpsc::channel(EVENT_QUEUE_MAX);
    let handle = NodeHandle {
        events: events.clone(),
        value_bytes_max: options.value_bytes_max,
        reply_timeout: Duration::from_millis(options.request_timeout_ms + 2_000),
        plugins: plugins.clone(),
        body_budget: Arc::new(Semaphore::new(HTTP_BODY_BYTES_IN_FLIGHT_MAX / 1024)),
        token_key: Arc::new(std::sync::RwLock::new(node.meta().token_key)),
        disk: store.disk_gauge(),
        peers: Arc::new(net::handshake::PeerGuard::new(
            options.cluster_secret.clone(),
        )),
        access: Arc::new(access_control(&options)?),
        metrics: NodeMetrics::with_switch(options.id.as_str(), options.metrics),
        node_id: options.id.clone(),
    };
    let metrics = handle.metrics.clone();
    publish_names(&node, &metrics);
    handle.access.publish(&node.meta().api_keys);
    if !options.auth_required && !node.meta().api_keys.is_empty() {
        tracing::warn!(
            keys = node.meta().api_keys.len(),
            "this cluster has API keys but this node runs without --auth required: its HTTP port needs none"
        );
    }
    let access = handle.access.clone();
    let guard = handle.peers.clone();
    let published_key = handle.token_key.clone();
    plugins.set_merged_bytes_max(options.value_bytes_max);
    let call_timeout = Duration::from_millis(options.request_timeout_ms);
    let host = PluginHost::new(
        plugins,
        events.clone(),
        call_timeout,
        uncompiled,
        metrics.clone(),
    );
    let budget = descriptors::descriptor_budget(options.http_connections_max);
    if budget.http < options.http_connections_max {
        tracing::warn!(
            open_files_limit = budget.limit,
            http_connections_max = budget.http,
            peer_connections_max = budget.peers,
            "the open-files limit is low: connection caps lowered so storage keeps a quarter of it (raise it with ulimit -n)"
        );
    }
    let peers = tokio::spawn(net::serve(
        peer_listener,
        events.clone(),
        budget.peers,
        guard.clone(),
    ));
    let tls = match &options.tls {
        Some(files) => Some(Arc::new(
            crate::http::tls::TlsReloader::new(files.clone()).map_err(|e| anyhow::anyhow!(e))?,
        )),
        None => None,
    };
    let reload = tokio::spawn(reload_on_hangup(hangups, tls.clone()));
    let http = tokio::spawn(crate::http::serve(http_listener, handle, budget.http, tls));
    on_bound(bound);
    let mut outbound = Outbound::new(options.id.clone(), events.clone(), guard);
    if let Some(path) = &options.link_faults_file {
        let seed = options
            .id
            .as_str()
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        outbound = outbound.with_faults(net::faults::LinkFaults::new(path.clone(), seed));
    }
    let result = drive(
        node,
        store,
        inbox,
        outbound,
        host,
        clock,
        published_key,
        access,
        metrics,
        shutdown,
        seeds,
    )
    .await;
    peers.abort();
    http.abort();
    reload.abort();
    result
}

/// How long the first seed looks for another seed before it founds a cluster.
const FOUNDER_PROBE: Duration = Duration::from_secs(6);

/// The seeds a node asks to join, from the list it was given (which may
/// name itself, so one list serves every node): the others. The node the
/// list names first founds a cluster on its first start (no seed left to
/// ask) — unless another seed answers within [`FOUNDER_PROBE`]: then a
/// cluster exists (this node lost its data dir, or it joined late) and it
/// joins it, so a wiped first seed never founds a second cluster beside
/// the first. A node that is a member already uses its stored membership.
async fn seeds_to_ask(
    given: &[String],
    is_self: impl Fn(&String) -> bool,
    is_member_already: bool,
) -> Vec<String> {
    let others: Vec<String> = given.iter().filter(|s| !is_self(s)).cloned().collect();
    let first_is_self = given.first().is_some_and(&is_self);
    if !first_is_self || others.is_empty() || is_member_already {
        return others;
    }
    let deadline = Instant::now() + FOUNDER_PROBE;
    while Instant::now() < deadline {
        for seed in &others {
            let dial = tokio::net::TcpStream::connect(seed.as_str());
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), dial).await {
                tracing::info!(%seed, "another seed answers: joining its cluster instead of founding one");
                return others;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tracing::info!(
        seeds = ?others,
        "this node is the first seed and no other seed answers: founding a new cluster"
    );
    Vec::new()
}

/// The real clock, turned into the core's two clocks.
struct Clock {
    start: Instant,
    /// Added to the wall clock (see [`ServeOptions::clock_offset_ms`]).
    offset_ms: i64,
}

impl Clock {
    fn new(offset_ms: i64) -> Self {
        Clock {
            start: Instant::now(),
            offset_ms,
        }
    }

    fn now(&self) -> Now {
        let real_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let wall_ms = real_ms.saturating_add(self.offset_ms).max(0) as u64;
        Now {
            mono_ms: self.start.elapsed().as_millis() as u64,
            wall_ms,
        }
    }
}

struct Waiting {
    clients: HashMap<u64, oneshot::Sender<ClientReply>>,
    admins: HashMap<u64, oneshot::Sender<AdminReply>>,
    next_id: u64,
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    mut node: Node,
    mut store: NodeStore,
    mut inbox: mpsc::Receiver<Event>,
    mut outbound: Outbound,
    host: PluginHost,
    clock: Clock,
    published_key: Arc<std::sync::RwLock<Option<TokenKey>>>,
    access: Arc<crate::http::auth::AccessControl>,
    metrics: Arc<NodeMetrics>,
    shutdown: impl Future<Output = ()>,
    seeds: Vec<String>,
) -> anyhow::Result<()> {
    let mut next_names_check = Instant::now();
    let mut token_key = node.meta().token_key;
    let mut next_keys_check = Instant::now();
    let mut waiting = Waiting {
        clients: HashMap::new(),
        admins: HashMap::new(),
        next_id: 1,
    };
    let mut random =
        crate::core::rng::Rng::new(clock.now().wall_ms ^ u64::from(std::process::id()));
    let tick_every = Duration::from_millis(TICK_MS);
    let mut next_tick = Instant::now() + tick_every;
    let (committer, mut committed) =
        commit::Committer::start(node.id().as_str(), store.writer(), metrics.clone())?;

    let mut next_blob_sweep = Instant::now() + Duration::from_millis(BLOB_SWEEP_INTERVAL_MS);
    let mut next_drop_sweep = Instant::now();
    let mut dropped = DroppedSweep::default();
    let mut failures: VecDeque<Instant> = VecDeque::new();
    let mut next_join_warning = Instant::now() + JOIN_WARNING_INTERVAL;
    let mut disk_refusing = false;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            report = committed.recv() => {
                let Some((batch, outcome)) = report else {
                    anyhow::bail!("the committing thread stopped; stopping the node");
                };
                match outcome {
                    Ok(()) => {
                        store.durable_through(batch);
                        node.batch_durable(batch);
                    }
                    Err(e) => {
                        failures.push_back(Instant::now());
                        while failures.front().is_some_and(|t| t.elapsed() > COMMIT_FAILURE_WINDOW) {
                            failures.pop_front();
                        }
                        if failures.len() >= COMMIT_FAILURES_MAX {
                            anyhow::bail!(
                                "{} commits failed within {} s, the last: {e}; the storage is broken, stopping the node",
                                failures.len(),
                                COMMIT_FAILURE_WINDOW.as_secs()
                            );
                        }
                        let error = classify_commit_failure(&node, &mut store, e);
                        store.discard_pending();
                        node.batches_lost(&error, &mut store).map_err(anyhow::Error::msg)?;
                        committer.resume();
                    }
                }
            }
            event = inbox.recv() => match event {
                Some(event) => feed(&mut node, &mut store, &clock, &mut waiting, event),
                None => break,
            },
            () = tokio::time::sleep_until(next_tick.into()) => {}
        }
        for _ in 0..EVENTS_PER_TURN_MAX {
            match inbox.try_recv() {
                Ok(event) => feed(&mut node, &mut store, &clock, &mut waiting, event),
                Err(_) => break,
            }
        }
        // Checked every turn, not only when the inbox is empty: however long
        // the backlog, deadlines (503 after the request timeout), pings and
        // gossip still run on time.
        if Instant::now() >= next_tick {
            next_tick = Instant::now() + tick_every;
            watch_disk(&node, &mut store, &mut disk_refusing);
            if !node.is_member() && Instant::now() >= next_join_warning {
                next_join_warning = Instant::now() + JOIN_WARNING_INTERVAL;
                tracing::warn!(
                    node = %node.id(),
                    seeds = ?seeds,
                    "no seed has admitted this node yet; it keeps asking and refuses admin changes until then"
                );
            }
            if Instant::now() >= next_blob_sweep {
                next_blob_sweep = Instant::now() + Duration::from_millis(BLOB_SWEEP_INTERVAL_MS);
                sweep_blobs(&node, &mut store);
                // Records staged before a drop arrived may have landed since.
                dropped.empty.clear();
            }
            if Instant::now() >= next_drop_sweep {
                next_drop_sweep = Instant::now() + DROP_SWEEP_INTERVAL;
                collect_dropped_tables(&node, &mut store, &mut dropped);
            }
            let tick = Input::Tick {
                random: random.next_u64(),
            };
            handle_logged(&mut node, &mut store, &clock, tick);
        }
        let batch = node.seal_batch();
        match store.seal(batch) {
            Some(sealed) => committer.commit(batch, sealed),
            // Nothing staged or pending: the batch is as durable as the ones before it.
            None if !store.has_sealed() => node.batch_durable(batch),
            // Nothing staged: the (empty) batch is durable once the commits under way are.
            None => {}
        }
        if node.meta().token_key != token_key {
            // Before any answer of this turn leaves: its tokens use the new key.
            token_key = node.meta().token_key;
            *published_key.write().unwrap_or_else(|e| e.into_inner()) = token_key;
        }
        // Keys reach HTTP handlers within KEYS_PUBLISH_EVERY of arriving
        // (a revocation, too): comparing every turn would cost with many keys.
        if access.required() && Instant::now() >= next_keys_check {
            next_keys_check = Instant::now() + KEYS_PUBLISH_EVERY;
            if !access.holds(&node.meta().api_keys) {
                access.publish(&node.meta().api_keys);
            }
        }
        if Instant::now() >= next_names_check {
            next_names_check = Instant::now() + NAMES_PUBLISH_EVERY;
            publish_names(&node, &metrics);
        }
        while let Some(output) = node.poll_output() {
            if matches!(output, Output::AdminReply { .. }) {
                // Before the answer leaves: a table just created is labelled
                // by name from its first request.
                publish_names(&node, &metrics);
            }
            carry_out(output, &mut outbound, &mut waiting, &host)?;
        }
    }
    while store.has_sealed() {
        let (batch, outcome) = committed.recv().await.unwrap_or_else(stopped_committer);
        batch_committed(outcome, &mut store, batch)?;
    }
    drop(committer);
    if node.may_keep_epoch() {
        store.mark_clean_shutdown()?;
    } else {
        // Its collected tombstones' dots are remembered only in memory: the
        // next start takes a fresh epoch, as after a crash.
        store.commit()?;
    }
    tracing::info!(node = %node.id(), "node stopped cleanly");
    Ok(())
}

/// Which dropped tables were found empty (checked again after each blob
/// sweep), which of them the log has reported, and where each collection
/// pass stands.
#[derive(Default)]
struct DroppedSweep {
    empty: HashSet<crate::core::types::TableName>,
    reported: HashSet<crate::core::types::TableName>,
    cursors: HashMap<crate::core::types::TableName, Vec<u8>>,
}

/// Stages the deletion of the next slice of the first dropped table that
/// still has data; the deletions are committed with the node's next batch.
fn collect_dropped_tables(node: &Node, store: &mut NodeStore, sweep: &mut DroppedSweep) {
    let pending = node
        .meta()
        .dropped
        .keys()
        .find(|name| !sweep.empty.contains(*name))
        .cloned();
    let Some(table) = pending else {
        return;
    };
    let after = sweep.cursors.remove(&table);
    match store.collect_dropped(&table, after.as_deref(), DROP_SWEEP_RECORDS) {
        Ok((0, _)) if after.is_some() => {
            // End of a pass: the next one starts over, to find what was
            // written meanwhile, and ends the table's collection if empty.
        }
        Ok((0, _)) => {
            if sweep.reported.insert(table.clone()) {
                tracing::info!(node = %node.id(), %table, "the dropped table's data is collected");
            }
            sweep.empty.insert(table);
        }
        Ok((_, last)) => {
            if let Some(last) = last {
                sweep.cursors.insert(table, last);
            }
        }
        Err(e) => {
            tracing::warn!(node = %node.id(), %table, error = %e, "collecting a dropped table failed");
            sweep.empty.insert(table);
        }
    }
}

/// Samples free space and says in the log when writes start or stop being
/// refused for want of it.
fn watch_disk(node: &Node, store: &mut NodeStore, refusing: &mut bool) {
    if let Err(e) = store.sample_disk() {
        tracing::warn!(node = %node.id(), "{e}");
        return;
    }
    let gauge = store.disk_gauge();
    if gauge.refusing() != *refusing {
        *refusing = gauge.refusing();
        let (free, reserve) = (gauge.free_bytes(), gauge.reserve_bytes());
        if *refusing {
            tracing::warn!(
                node = %node.id(),
                free_bytes = free,
                reserve_bytes = reserve,
                "the data dir's disk is below its free-space reserve: writes are refused with 507 until space is freed; reads go on"
            );
        } else {
            tracing::info!(node = %node.id(), free_bytes = free, reserve_bytes = reserve, "free space is above the reserve again: writes are accepted");
        }
    }
}

/// Logs a failed commit and says whether it was for want of space (507 to
/// the clients whose writes it held) or another failure (503). The node goes
/// on: the lost writes were never acknowledged, and it takes a fresh epoch.
fn classify_commit_failure(node: &Node, store: &mut NodeStore, error: StoreError) -> StoreError {
    let _ = store.sample_disk();
    let gauge = store.disk_gauge();
    let free = gauge.free_bytes();
    let reason = error.reason().to_owned();
    let full = gauge.refusing() || reason.contains("No space left on device");
    tracing::error!(
        node = %node.id(),
        free_bytes = free,
        disk_full = full,
        "commit failed: {reason}; the writes it held and everything staged since are dropped and answered as failures; the node goes on under a fresh epoch"
    );
    if full {
        StoreError::Full(format!(
            "the data dir's disk is full ({free} bytes free): {reason}"
        ))
    } else {
        StoreError::Failed(format!("commit failed: {reason}"))
    }
}

/// What the loop makes of a closed report channel: the thread stopped.
fn stopped_committer() -> commit::Committed {
    (
        0,
        Err(StoreError::Failed("the committing thread stopped".into())),
    )
}

/// Takes in the outcome of a commit of the batches up to `batch`. A failed
/// commit stops the node: it counted those writes as stored and must not go
/// on as if they were; a restart takes a new epoch and resyncs.
fn batch_committed(
    outcome: Result<(), StoreError>,
    store: &mut NodeStore,
    batch: u64,
) -> anyhow::Result<()> {
    if let Err(e) = outcome {
        anyhow::bail!("commit failed, stopping the node: {e}");
    }
    store.durable_through(batch);
    Ok(())
}

fn feed(
    node: &mut Node,
    store: &mut NodeStore,
    clock: &Clock,
    waiting: &mut Waiting,
    event: Event,
) {
    let input = match event {
        Event::Client { op, reply } => {
            let id = waiting.next_id;
            waiting.next_id += 1;
            waiting.clients.insert(id, reply);
            Input::Client { id, op }
        }
        Event::Admin { op, reply } => {
            let id = waiting.next_id;
            waiting.next_id += 1;
            waiting.admins.insert(id, reply);
            Input::Admin { id, op }
        }
        Event::Input(input) => input,
    };
    handle_logged(node, store, clock, input);
}

/// Hands `input` to the node, inside its subsystem's span with what it
/// changed logged when that span is enabled ([`progress`]).
fn handle_logged(node: &mut Node, store: &mut NodeStore, clock: &Clock, input: Input) {
    match progress::span_of(&input, node.id()).filter(|span| !span.is_disabled()) {
        Some(span) => {
            let _entered = span.enter();
            let before = node.stats();
            node.handle(clock.now(), input, store);
            progress::log_progress(&before, &node.stats());
        }
        None => node.handle(clock.now(), input, store),
    }
}

fn carry_out(
    output: Output,
    outbound: &mut Outbound,
    waiting: &mut Waiting,
    host: &PluginHost,
) -> anyhow::Result<()> {
    match output {
        Output::Send { addr, message } => outbound.send(&addr, message),
        Output::Reply { id, reply } => {
            if let Some(client) = waiting.clients.remove(&id) {
                let _ = client.send(reply);
            }
        }
        Output::AdminReply { id, reply } => {
            if let Some(client) = waiting.admins.remove(&id) {
                let _ = client.send(reply);
            }
        }
        Output::Reconcile { job, sha256, input } => host.reconcile(job, &sha256, input),
        Output::SelectStorage { job, sha256, query } => host.select_storage(job, &sha256, query),
        Output::ModuleArrived { sha256, bytes } => host.compile(sha256, bytes),
        Output::Fatal(reason) => anyhow::bail!(reason),
    }
    Ok(())
}

/// One plugin's share of the host: at most [`INSTANCES_PER_PLUGIN_MAX`] calls
/// running and [`PLUGIN_CALLS_WAITING_MAX`] waiting, so a looping plugin can
/// neither hold every instance nor fill the queue others wait in.
struct PluginShare {
    slots: Arc<Semaphore>,
    waiting: Arc<std::sync::atomic::AtomicUsize>,
}

/// Runs plugin calls and compilations off the node loop, on blocking threads:
/// at most [`INSTANCES_MAX`] calls at once, each plugin its share; a call
/// whose request's deadline passed while it waited is not run.
struct PluginHost {
    runtime: Arc<PluginRuntime>,
    events: mpsc::Sender<Event>,
    slots: Arc<Semaphore>,
    shares: std::sync::Mutex<HashMap<String, PluginShare>>,
    /// Module bytes that reached this node and are not compiled yet, by
    /// sha256: a call finding its module not compiled (yet, or after a
    /// failed compile) compiles it first.
    arrived: Arc<std::sync::Mutex<HashMap<String, Arrived>>>,
    /// How long a call may wait and run: the request timeout.
    call_timeout: Duration,
    /// Where calls are counted and their failures logged.
    metrics: Arc<NodeMetrics>,
}

impl PluginHost {
    fn new(
        runtime: Arc<PluginRuntime>,
        events: mpsc::Sender<Event>,
        call_timeout: Duration,
        uncompiled: HashMap<String, bytes::Bytes>,
        metrics: Arc<NodeMetrics>,
    ) -> Self {
        let arrived = uncompiled
            .into_iter()
            .map(|(sha256, bytes)| (sha256, Arrived::new(bytes)))
            .collect();
        PluginHost {
            runtime,
            events,
            slots: Arc::new(Semaphore::new(INSTANCES_MAX as usize)),
            shares: std::sync::Mutex::new(HashMap::new()),
            arrived: Arc::new(std::sync::Mutex::new(arrived)),
            call_timeout,
            metrics,
        }
    }

    /// Queues `call` (given the compiled module) for a free instance of
    /// plugin `sha256`; `refused(reason)` is the event sent instead when it
    /// cannot run.
    fn submit(
        &self,
        sha256: &str,
        function: &'static str,
        call: impl FnOnce(Arc<CompiledPlugin>) -> Event + Send + 'static,
        refused: impl Fn(&str) -> Event + Send + 'static,
    ) {
        // A call that cannot run is counted (and logged) as unavailable.
        let metrics = self.metrics.clone();
        let sha = sha256.to_owned();
        let refused = move |reason: &str| {
            let failure = PluginFailure::Unavailable(reason.to_owned());
            metrics.plugin_call(&sha, function, Err(&failure), Duration::ZERO);
            refused(reason)
        };
        use std::sync::atomic::Ordering;
        let (share_slots, waiting) = {
            let mut shares = self.shares.lock().unwrap_or_else(|e| e.into_inner());
            let share = shares
                .entry(sha256.to_owned())
                .or_insert_with(|| PluginShare {
                    slots: Arc::new(Semaphore::new(INSTANCES_PER_PLUGIN_MAX as usize)),
                    waiting: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
                });
            (share.slots.clone(), share.waiting.clone())
        };
        if waiting.fetch_add(1, Ordering::Relaxed) >= PLUGIN_CALLS_WAITING_MAX {
            waiting.fetch_sub(1, Ordering::Relaxed);
            if self
                .events
                .try_send(refused("the plugin pool is full"))
                .is_err()
            {
                tracing::warn!("plugin answer dropped: the node's queue is full");
            }
            return;
        }
        let deadline = Instant::now() + self.call_timeout;
        let (slots, events, runtime, metrics) = (
            self.slots.clone(),
            self.events.clone(),
            self.runtime.clone(),
            self.metrics.clone(),
        );
        let arrived = self.arrived.clone();
        let sha256 = sha256.to_owned();
        tokio::spawn(async move {
            let share = share_slots.acquire_owned().await;
            let permit = slots.acquire_owned().await;
            waiting.fetch_sub(1, Ordering::Relaxed);
            if Instant::now() >= deadline {
                drop(permit);
                drop(share);
                let _ = events
                    .send(refused(
                        "the request's deadline passed while the call waited",
                    ))
                    .await;
                return;
            }
            tokio::task::spawn_blocking(move || {
                let span = tracing::debug_span!(
                    "plugin",
                    plugin = %metrics.plugin_label(&sha256),
                    %sha256,
                    function
                );
                let _entered = span.enter();
                let event = match compiled(&runtime, &arrived, &sha256) {
                    Ok(plugin) => call(plugin),
                    Err(reason) => refused(&reason),
                };
                drop(permit);
                drop(share);
                let _ = events.blocking_send(event);
            });
        });
    }

    fn reconcile(&self, job: u64, sha256: &str, input: cairn_sdk::ReconcileInput) {
        let refused = move |reason: &str| {
            Event::Input(Input::Reconciled {
                job,
                outcome: Err(PluginFailure::Unavailable(reason.to_owned())),
            })
        };
        let (runtime, metrics) = (self.runtime.clone(), self.metrics.clone());
        let call = move |plugin: Arc<CompiledPlugin>| {
            let started = Instant::now();
            let outcome = runtime
                .reconcile(&plugin, &input)
                .map_err(PluginFailure::from);
            let result = outcome.as_ref().map(|resolution| match resolution {
                cairn_sdk::Resolution::Merged { .. } => "merged",
                cairn_sdk::Resolution::KeepSiblings => "kept",
            });
            metrics.plugin_call(&plugin.info.sha256, "reconcile", result, started.elapsed());
            Event::Input(Input::Reconciled { job, outcome })
        };
        self.submit(sha256, "reconcile", call, refused);
    }

    fn select_storage(&self, job: u64, sha256: &str, query: cairn_sdk::StorageQuery) {
        let refused = move |reason: &str| {
            Event::Input(Input::StorageSelected {
                job,
                outcome: Err(PluginFailure::Unavailable(reason.to_owned())),
            })
        };
        let (runtime, metrics) = (self.runtime.clone(), self.metrics.clone());
        let call = move |plugin: Arc<CompiledPlugin>| {
            let started = Instant::now();
            let outcome = runtime
                .select_storage(&plugin, &query)
                .map_err(PluginFailure::from);
            let result = outcome.as_ref().map(|_| "selected");
            metrics.plugin_call(
                &plugin.info.sha256,
                "select_storage",
                result,
                started.elapsed(),
            );
            Event::Input(Input::StorageSelected { job, outcome })
        };
        self.submit(sha256, "select_storage", call, refused);
    }

    /// A module reached this node: compile it now (a call that comes first,
    /// or after a failure, compiles it itself).
    fn compile(&self, sha256: String, bytes: bytes::Bytes) {
        self.arrived
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sha256.clone(), Arrived::new(bytes));
        let (runtime, arrived) = (self.runtime.clone(), self.arrived.clone());
        tokio::task::spawn_blocking(move || {
            if let Err(reason) = compiled(&runtime, &arrived, &sha256) {
                tracing::warn!(%sha256, %reason, "a plugin module that arrived does not compile yet");
            }
        });
    }
}

/// A module that reached this node, not compiled yet.
struct Arrived {
    bytes: bytes::Bytes,
    /// When a compile of it last failed: calls do not try again for a while.
    failed_at: Option<Instant>,
}

impl Arrived {
    fn new(bytes: bytes::Bytes) -> Self {
        Arrived {
            bytes,
            failed_at: None,
        }
    }
}

/// How long after a failed compile calls answer at once instead of trying again.
const COMPILE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The compiled module `sha256`, compiling it from the bytes that arrived if
/// that has not happened (or failed more than a few seconds ago). The bytes
/// are dropped once it compiled.
fn compiled(
    runtime: &PluginRuntime,
    arrived: &std::sync::Mutex<HashMap<String, Arrived>>,
    sha256: &str,
) -> Result<Arc<CompiledPlugin>, String> {
    if let Some(plugin) = runtime.get(sha256) {
        return Ok(plugin);
    }
    let bytes = {
        let arrived = arrived.lock().unwrap_or_else(|e| e.into_inner());
        match arrived.get(sha256) {
            None => return Err("the plugin module is not on this node yet".into()),
            Some(a)
                if a.failed_at
                    .is_some_and(|t| t.elapsed() < COMPILE_RETRY_AFTER) =>
            {
                return Err("the plugin module did not compile here; retrying shortly".into());
            }
            Some(a) => a.bytes.clone(),
        }
    };
    match runtime.compile(&bytes) {
        Ok(plugin) => {
            runtime.insert(plugin.clone());
            arrived
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(sha256);
            Ok(plugin)
        }
        Err(e) => {
            if let Some(a) = arrived
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(sha256)
            {
                a.failed_at = Some(Instant::now());
            }
            Err(format!("the plugin module does not compile here: {e}"))
        }
    }
}

/// Compiles every live plugin module this node stores, before it serves;
/// returns those that did not compile, for calls to try again.
fn compile_stored_modules(
    node: &Node,
    store: &mut NodeStore,
    plugins: &PluginRuntime,
) -> HashMap<String, bytes::Bytes> {
    use crate::core::store::LocalStore as _;
    let mut uncompiled = HashMap::new();
    for (name, entry) in &node.meta().plugins {
        let Some(sha256) = &entry.sha256 else {
            continue;
        };
        match store.load_module(sha256) {
            Ok(Some(bytes)) => match plugins.compile(&bytes) {
                Ok(plugin) => plugins.insert(plugin),
                Err(e) => {
                    tracing::warn!(plugin = %name, error = %e, "stored plugin does not compile");
                    uncompiled.insert(sha256.clone(), bytes::Bytes::from(bytes));
                }
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(plugin = %name, error = %e, "cannot read a stored plugin"),
        }
    }
    uncompiled
}

/// Deletes blob files that no object of a blob table references any more.
fn sweep_blobs(node: &Node, store: &mut NodeStore) {
    let tables: Vec<_> = node
        .meta()
        .tables
        .iter()
        .filter(|(_, entry)| {
            use crate::core::table::StorageKind;
            matches!(
                entry.config.storage,
                StorageKind::Blob | StorageKind::Plugin
            )
        })
        .map(|(name, _)| name.clone())
        .collect();
    // Even with no blob table left: a dropped one's files go now.
    match store.collect_blobs(&tables) {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "unreferenced blobs collected"),
        Err(e) => tracing::warn!(error = %e, "blob collection failed"),
    }
}

/// 64 random bits from the operating system, for the nonces of this
/// process's epochs.
fn os_random() -> anyhow::Result<u64> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    Ok(u64::from_le_bytes(bytes))
}

/// 32 random bytes from the operating system: a cluster's token key.
fn os_random_bytes() -> anyhow::Result<[u8; 32]> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests;
