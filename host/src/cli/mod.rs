//! The `cairn` command line: `serve`, `dev`, and client commands that talk to
//! any node over HTTP.

mod backup;
mod bench;
mod client;
mod cluster;
pub mod config;
mod dev;
mod keys;
mod plugin;

use crate::core::peer_auth::ClusterSecret;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::core::antientropy::AntiEntropyConfig;
use crate::core::limits::{
    ANTIENTROPY_BYTES_PER_S_DEFAULT, ANTIENTROPY_EVERY_MS_DEFAULT, ANTIENTROPY_KEYS_PER_S_DEFAULT,
    OBJECT_LIVE_BYTES_MAX, PARTITIONS_DEFAULT, PARTITIONS_MAX, PARTITIONS_MIN,
    REQUEST_TIMEOUT_MS_DEFAULT, REQUEST_TIMEOUT_MS_MAX, REQUEST_TIMEOUT_MS_MIN,
    VALUE_BYTES_MAX_DEFAULT,
};
use crate::core::types::NodeId;
use crate::runtime::{self, ServeOptions};

/// Cairn: a Dynamo-style replicated key/value store.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// For https:// URLs: trust this CA certificate (PEM) instead of the
    /// public roots (a cluster's own CA).
    #[arg(long, global = true, env = "CAIRN_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// How log lines look on stderr: `pretty` for people, `json` (one
    /// object a line) for log shippers. What is logged is set by `RUST_LOG`
    /// (e.g. `info`, `cairn=debug`; default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty, env = "CAIRN_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object a line, with the span's fields.
    Json,
}

/// Every `cairn` command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one node.
    Serve(Box<ServeArgs>),
    /// Run a local cluster on 127.0.0.1 (HTTP ports 8080, 8081, ...) with the demo tables.
    Dev(dev::DevArgs),
    /// Write a value: `cairn put TABLE KEY VALUE` (`-` or no VALUE reads stdin).
    Put(client::PutArgs),
    /// Read a key: prints the value, or every sibling.
    Get(client::GetArgs),
    /// Delete a key (writes a tombstone).
    Delete(client::DeleteArgs),
    /// Create, show or list tables.
    #[command(subcommand)]
    Table(client::TableCommand),
    /// Cluster status and joins.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Load a cluster and measure throughput and latency (YCSB-style workloads).
    Bench(bench::BenchArgs),
    /// Upload and list WebAssembly plugins.
    #[command(subcommand)]
    Plugin(client::PluginCommand),
    /// Create, list and revoke API keys (admin only).
    #[command(subcommand)]
    Key(keys::KeyCommand),
    /// Write every member's copy of a table (siblings, tombstones and
    /// causal history kept) to a file; resumes an unfinished one.
    Backup(backup::BackupArgs),
    /// Merge a backup into a table (created if missing); resumes.
    Restore(backup::RestoreArgs),
}

/// Whether HTTP requests need an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No key needed (the default: a local or firewalled cluster).
    Off,
    /// Every request but `GET /health` needs one.
    Required,
}

/// A setting that is on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// `cairn serve`.
#[derive(Debug, Args, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServeArgs {
    /// A TOML file of settings (`node-id = "node1"`, `seed = ["10.0.0.2:9080"]`,
    /// any flag below by its long name): a flag given on the command line
    /// wins over its `CAIRN_*` environment variable, which wins over the file.
    #[arg(long, env = "CAIRN_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Print the settings this node would start with (after flags,
    /// environment and `--config` are combined) as TOML, and exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
    /// This node's id: [A-Za-z0-9_-]{1,32}, stable across restarts.
    #[arg(long, env = "CAIRN_NODE_ID")]
    pub node_id: String,
    /// HTTP listen address (port 0 picks a free port; the bound one is printed).
    #[arg(long, default_value = "127.0.0.1:8080", env = "CAIRN_HTTP")]
    pub http: String,
    /// Peer listen address, where other nodes connect.
    #[arg(long, default_value = "127.0.0.1:9080", env = "CAIRN_PEER")]
    pub peer: String,
    /// The HTTP address other members and clients are told to use for
    /// this node (default: the bound --http address). Needed when binding
    /// 0.0.0.0 or behind NAT, e.g. a pod's DNS name.
    #[arg(long, env = "CAIRN_ADVERTISE_HTTP")]
    pub advertise_http: Option<String>,
    /// The peer address other members dial for this node (default: the
    /// bound --peer address). A --seed equal to it is skipped, so every
    /// node can be given the same seed list: the first seed founds the
    /// cluster on its first start unless another seed answers.
    #[arg(long, env = "CAIRN_ADVERTISE_PEER")]
    pub advertise_peer: Option<String>,
    /// Data directory (created if missing).
    #[arg(long, env = "CAIRN_DATA_DIR")]
    pub data_dir: PathBuf,
    /// A member's peer address to join on first start (repeatable).
    #[arg(long = "seed", env = "CAIRN_SEED", value_delimiter = ',')]
    #[serde(rename = "seed")]
    pub seeds: Vec<String>,
    /// Partitions of a new cluster (a power of two); only the founding node uses it.
    #[arg(long, default_value_t = PARTITIONS_DEFAULT as usize, env = "CAIRN_PARTITIONS")]
    pub partitions: usize,
    /// The replica count the ring's claim aims for (Riak's target_n_val).
    #[arg(long, default_value_t = 3, env = "CAIRN_TARGET_N")]
    pub target_n: u8,
    /// How long a client request may wait for its quorum before 503.
    #[arg(long, default_value_t = REQUEST_TIMEOUT_MS_DEFAULT, env = "CAIRN_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: u64,
    /// Largest value accepted by PUT; larger is 413.
    #[arg(long, default_value_t = VALUE_BYTES_MAX_DEFAULT, env = "CAIRN_VALUE_BYTES_MAX")]
    pub value_bytes_max: usize,
    /// HTTP connections served at once; more are closed on accept.
    #[arg(long, default_value_t = crate::core::limits::HTTP_CONNECTIONS_MAX, env = "CAIRN_HTTP_CONNECTIONS_MAX")]
    pub http_connections_max: usize,
    /// Free bytes kept on the data dir's disk: a write that would leave less
    /// is refused with 507 (reads go on).
    #[arg(long, default_value_t = crate::core::limits::DISK_RESERVE_BYTES_DEFAULT, env = "CAIRN_DISK_RESERVE_BYTES")]
    pub disk_reserve_bytes: u64,
    /// How often anti-entropy runs a turn (compares partitions with other
    /// replicas and repairs what differs); 0 turns it off.
    #[arg(long, default_value_t = ANTIENTROPY_EVERY_MS_DEFAULT, env = "CAIRN_ANTIENTROPY_EVERY_MS")]
    pub antientropy_every_ms: u64,
    /// Anti-entropy's cap on keys read from the store a second (to build
    /// its trees at start and to send objects to other replicas).
    #[arg(long, default_value_t = ANTIENTROPY_KEYS_PER_S_DEFAULT, env = "CAIRN_ANTIENTROPY_KEYS_PER_S")]
    pub antientropy_keys_per_s: u64,
    /// Anti-entropy's cap on bytes of objects sent a second.
    #[arg(long, default_value_t = ANTIENTROPY_BYTES_PER_S_DEFAULT, env = "CAIRN_ANTIENTROPY_BYTES_PER_S")]
    pub antientropy_bytes_per_s: u64,
    /// Bytes a second this node copies moving partitions at, as their new
    /// replica after a join (the transfer's throttle).
    #[arg(long, default_value_t = crate::core::limits::TRANSFER_BYTES_PER_S_DEFAULT, env = "CAIRN_TRANSFER_BYTES_PER_S")]
    pub transfer_bytes_per_s: u64,
    /// How long a tombstone is kept at least after the first primary of its
    /// key stored it, before it is collected (once every primary holds it
    /// and no node keeps a hint for its key; collection runs with
    /// anti-entropy). At least twice --request-timeout-ms plus 1 s.
    #[arg(long, default_value_t = crate::core::limits::TOMBSTONE_GRACE_MS_DEFAULT, env = "CAIRN_TOMBSTONE_GRACE_MS")]
    pub tombstone_grace_ms: u64,
    /// A file holding the cluster secret (one line, at least 16
    /// characters; `cairn dev` writes one): every peer connection proves it
    /// before a frame counts, and every frame is sealed with it. Every
    /// member needs the same one. Without it the peer port trusts anyone who
    /// reaches it.
    #[arg(long, env = "CAIRN_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// `required`: every HTTP request but `GET /health` needs an API key
    /// (`Authorization: Bearer <key>`); `off`: none does.
    #[arg(long, value_enum, default_value_t = AuthMode::Off, env = "CAIRN_AUTH")]
    pub auth: AuthMode,
    /// A file holding the first admin key (one line, at least 16
    /// characters): with it an operator creates the other keys
    /// (`cairn key create`). Only a salted hash of it is kept in memory.
    #[arg(long, env = "CAIRN_ADMIN_KEY_FILE")]
    pub admin_key_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs
    /// --tls-key. SIGHUP reloads both without stopping the node.
    #[arg(long, env = "CAIRN_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// `off`: record no metrics and answer `GET /metrics` with 404 (to
    /// measure what they cost; the core's counters are kept either way).
    #[arg(long, value_enum, default_value_t = Switch::On, env = "CAIRN_METRICS")]
    pub metrics: Switch,
    /// The certificate's private key (PEM).
    #[arg(long, env = "CAIRN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// For fault tests only: milliseconds added to this node's wall clock
    /// (negative: behind), as a skewed clock would be.
    #[arg(long, default_value_t = 0, hide = true, allow_hyphen_values = true)]
    #[serde(skip)]
    pub clock_offset_ms: i64,
    /// For fault tests only: a file saying how this node's outgoing peer
    /// links lose, delay and duplicate frames (`loss L delay D duplicate P`),
    /// re-read while it runs. Kernels without `tc netem` have no other way.
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub test_link_faults_file: Option<std::path::PathBuf>,
}

impl ServeArgs {
    /// Checks the arguments and turns them into runtime options.
    pub fn options(&self) -> anyhow::Result<ServeOptions> {
        let id = NodeId::new(&self.node_id)?;
        if !self.partitions.is_power_of_two()
            || !(PARTITIONS_MIN as usize..=PARTITIONS_MAX as usize).contains(&self.partitions)
        {
            anyhow::bail!(
                "--partitions must be a power of two from {PARTITIONS_MIN} to {PARTITIONS_MAX}"
            );
        }
        if self.target_n == 0 {
            anyhow::bail!("--target-n must be at least 1");
        }
        for seed in &self.seeds {
            crate::core::types::validate_peer_address(seed)
                .map_err(|e| anyhow::anyhow!("--seed {seed:?}: {e}"))?;
        }
        if let Some(peer) = &self.advertise_peer {
            crate::core::types::validate_peer_address(peer)
                .map_err(|e| anyhow::anyhow!("--advertise-peer {peer:?}: {e}"))?;
        }
        if let Some(http) = &self.advertise_http {
            crate::core::types::validate_peer_address(http)
                .map_err(|e| anyhow::anyhow!("--advertise-http {http:?}: {e}"))?;
        }

        if !(REQUEST_TIMEOUT_MS_MIN..=REQUEST_TIMEOUT_MS_MAX).contains(&self.request_timeout_ms) {
            anyhow::bail!(
                "--request-timeout-ms must be between {REQUEST_TIMEOUT_MS_MIN} and {REQUEST_TIMEOUT_MS_MAX}"
            );
        }
        let grace_min = 2 * (self.request_timeout_ms + crate::core::limits::FORWARD_GRACE_MS);
        if self.tombstone_grace_ms < grace_min {
            anyhow::bail!(
                "--tombstone-grace-ms must be at least {grace_min} (twice --request-timeout-ms plus the forwarding grace): a request still under way must not outlive a collected tombstone"
            );
        }
        if !(1..=OBJECT_LIVE_BYTES_MAX).contains(&self.value_bytes_max) {
            anyhow::bail!(
                "--value-bytes-max must be between 1 and {OBJECT_LIVE_BYTES_MAX} (what one key may hold)"
            );
        }
        if self.http_connections_max == 0 {
            anyhow::bail!("--http-connections-max must be at least 1");
        }
        if self.antientropy_keys_per_s == 0 || self.antientropy_bytes_per_s == 0 {
            anyhow::bail!(
                "--antientropy-keys-per-s and --antientropy-bytes-per-s must be at least 1 (turn anti-entropy off with --antientropy-every-ms 0)"
            );
        }
        if self.transfer_bytes_per_s == 0 {
            anyhow::bail!("--transfer-bytes-per-s must be at least 1");
        }
        let antientropy = (self.antientropy_every_ms > 0).then_some(AntiEntropyConfig {
            every_ms: self.antientropy_every_ms,
            keys_per_s: self.antientropy_keys_per_s,
            bytes_per_s: self.antientropy_bytes_per_s,
            tombstone_grace_ms: self.tombstone_grace_ms,
        });
        Ok(ServeOptions {
            id,
            http: self.http.clone(),
            peer: self.peer.clone(),
            data_dir: self.data_dir.clone(),
            seeds: self.seeds.clone(),
            advertise_http: self.advertise_http.clone(),
            advertise_peer: self.advertise_peer.clone(),
            partitions: self.partitions,
            target_n: self.target_n,
            request_timeout_ms: self.request_timeout_ms,
            value_bytes_max: self.value_bytes_max,
            http_connections_max: self.http_connections_max,
            disk_reserve_bytes: self.disk_reserve_bytes,
            antientropy,
            transfer_bytes_per_s: self.transfer_bytes_per_s,
            clock_offset_ms: self.clock_offset_ms,
            link_faults_file: self.test_link_faults_file.clone(),
            cluster_secret: self.cluster_secret()?,
            auth_required: self.auth == AuthMode::Required,
            admin_key_file: self.admin_key_file.clone(),
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(crate::http::tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            metrics: self.metrics == Switch::On,
        })
    }

    /// The secret `--cluster-secret-file` holds; without one, a loud warning
    /// when the peer port is reachable from beyond this machine.
    fn cluster_secret(&self) -> anyhow::Result<Option<ClusterSecret>> {
        if self.admin_key_file.is_some() && self.auth == AuthMode::Off {
            tracing::warn!("--admin-key-file is ignored: --auth is off, so no request needs a key");
        }
        if let Some(path) = &self.admin_key_file {
            warn_if_readable_by_others(path, "--admin-key-file");
        }
        let Some(path) = &self.cluster_secret_file else {
            let loopback = self
                .peer
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| a.ip().is_loopback());
            // Keys mean nothing if a peer frame can add one.
            if self.auth == AuthMode::Required && !loopback {
                anyhow::bail!(
                    "--auth required needs --cluster-secret-file when the peer port ({}) is not loopback: without it anyone who reaches that port can add an admin key by gossip",
                    self.peer
                );
            }
            if !loopback {
                tracing::warn!(
                    peer = %self.peer,
                    "NO CLUSTER SECRET: anyone who can reach the peer port can rewrite the ring, tables, plugins, keys and data; start every node with --cluster-secret-file"
                );
            }
            return Ok(None);
        };
        warn_if_readable_by_others(path, "--cluster-secret-file");
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--cluster-secret-file {}: {e}", path.display()))?;
        let secret = ClusterSecret::from_text(&text)
            .map_err(|e| anyhow::anyhow!("--cluster-secret-file {}: {e}", path.display()))?;
        Ok(Some(secret))
    }
}

/// Warns when a secret's file may be read by users other than its owner.
fn warn_if_readable_by_others(path: &std::path::Path, flag: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{mode:o}"),
                "{flag}: the file is readable by other users; chmod 600 it"
            );
        }
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    client::set_ca_cert(cli.ca_cert.clone());
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Dev(args) => dev::run(&args),
        Command::Put(args) => client::put(&args),
        Command::Get(args) => client::get(&args),
        Command::Delete(args) => client::delete(&args),
        Command::Table(command) => client::table(&command),
        Command::Cluster(command) => cluster::run(&command),
        Command::Plugin(command) => client::plugin(&command),
        Command::Bench(args) => bench::run(&args),
        Command::Key(command) => keys::run(&command),
        Command::Backup(args) => backup::backup(&args),
        Command::Restore(args) => backup::restore(&args),
    }
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let options = args.options()?;
    if args.print_config {
        print!("{}", toml::to_string(args).context("settings as TOML")?);
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let id = options.id.clone();
    runtime.block_on(runtime::serve(
        options,
        move |bound| {
            println!(
                "cairn node {id} listening http={} peer={}",
                bound.http, bound.peer
            );
        },
        shutdown_signal(),
    ))
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` (`CAIRN_LOG` is read
/// when `RUST_LOG` is not set, as older builds did; default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG"))
        .unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
