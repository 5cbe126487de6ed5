//! `GET /metrics`: one Prometheus registry per node.
//!
//! Two kinds of figures meet here. What only the driver sees — HTTP requests
//! and their latency, siblings and sizes of what clients read and write,
//! plugin calls and their time, commits — is counted as it happens in the
//! live instruments of [`NodeMetrics`]. What the sans-IO core counts (hints,
//! anti-entropy, gossip, transfers, tombstones, members) is read at scrape
//! time as one [`NodeReport`] and encoded by [`report::ReportCollector`]: the
//! core stays free of any metrics crate, and the simulator reads the same
//! counters.
//!
//! Each node owns its [`NodeMetrics`] (no global registry), so several nodes
//! in one test process never mix their figures. No label ever carries a key
//! or a value; table and plugin labels name only tables and plugins the
//! cluster has, so a client naming random tables cannot grow the registry.

mod report;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::core::msg::{NodeReport, PluginFailure};

pub use report::ReportCollector;

/// The exposition formats `/metrics` answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4 (the default).
    Prometheus,
    /// OpenMetrics text, for a scraper whose `Accept` asks for it.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format an `Accept` header asks for.
    pub fn accepted(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }
}

/// The label a table gets when the cluster has no table of that name (or
/// the request named none): bounded, whatever clients send.
pub const OTHER_TABLE: &str = "";

/// Labels of an HTTP request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `get`, `put`, `delete` on keys; `admin`, `observe`, `other` elsewhere.
    pub op: &'static str,
    /// The table, for key operations on a table the cluster has.
    pub table: String,
    /// The HTTP status answered.
    pub status: u16,
}

/// Labels of an HTTP latency histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestTimeLabels {
    /// As in [`RequestLabels`].
    pub op: &'static str,
    /// As in [`RequestLabels`].
    pub table: String,
}

/// Labels of an object size histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SizeLabels {
    /// `get` (each live value read) or `put` (each value written).
    pub op: &'static str,
}

/// Labels of a plugin call counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginCallLabels {
    /// The plugin's name (or `sha256:<first 12 hex>` for a module no live
    /// plugin name holds any more).
    pub plugin: String,
    /// `reconcile` or `select_storage`.
    pub function: &'static str,
    /// `merged`, `kept`, `selected`, `trap`, `fuel`, `memory`, `output` or
    /// `unavailable`.
    pub result: &'static str,
}

/// Labels of a plugin call duration histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginTimeLabels {
    /// As in [`PluginCallLabels`].
    pub plugin: String,
    /// As in [`PluginCallLabels`].
    pub function: &'static str,
}

type HistogramMaker = fn() -> Histogram;

fn request_seconds() -> Histogram {
    // 100 µs to about 6.5 s.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 17))
}

fn object_bytes() -> Histogram {
    // 64 bytes to 16 MiB.
    Histogram::new(exponential_buckets(64.0, 4.0, 10))
}

fn plugin_seconds() -> Histogram {
    // 10 µs to about 5 s.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 20))
}

/// The names labels may carry, published by the node loop as its metadata
/// changes.
#[derive(Debug, Default)]
struct Known {
    tables: HashSet<String>,
    /// Plugin name by module sha256.
    plugins: HashMap<String, String>,
}

/// One node's registry and the instruments the driver updates as it works.
#[derive(Debug)]
pub struct NodeMetrics {
    /// `false` with `--metrics off`: nothing is recorded, `/metrics` is 404.
    enabled: bool,
    registry: Registry,
    report: Arc<ReportCollector>,
    known: RwLock<Known>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RequestTimeLabels, Histogram, HistogramMaker>,
    read_siblings: Histogram,
    object_bytes: Family<SizeLabels, Histogram, HistogramMaker>,
    plugin_calls: Family<PluginCallLabels, Counter>,
    plugin_seconds: Family<PluginTimeLabels, Histogram, HistogramMaker>,
    commit_records: Histogram,
    commit_seconds: Histogram,
    /// Plugin failures logged, by sha256: when each was last logged and how
    /// many were not since (one line a second per module at most).
    failure_log: Mutex<HashMap<String, (std::time::Instant, u64)>>,
}

impl NodeMetrics {
    /// A registry for node `node` with every instrument registered.
    pub fn new(node: &str) -> Arc<NodeMetrics> {
        NodeMetrics::with_switch(node, true)
    }

    /// As [`NodeMetrics::new`], recording nothing when `enabled` is false
    /// (`--metrics off`, for measuring what metrics cost).
    pub fn with_switch(node: &str, enabled: bool) -> Arc<NodeMetrics> {
        let mut registry = Registry::with_prefix("cairn");
        let metrics = NodeMetrics {
            enabled,
            report: Arc::new(ReportCollector::default()),
            known: RwLock::new(Known::default()),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(request_seconds),
            read_siblings: Histogram::new([1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0]),
            object_bytes: Family::new_with_constructor(object_bytes),
            plugin_calls: Family::default(),
            plugin_seconds: Family::new_with_constructor(plugin_seconds),
            commit_records: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            failure_log: Mutex::new(HashMap::new()),
            registry: Registry::default(),
        };
        registry.register(
            "build",
            "The running build: its version and node id",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
                ("node", node.to_owned()),
            ]),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by operation, table and status",
            metrics.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's head to its answer, by operation and table",
            metrics.request_seconds.clone(),
        );
        registry.register(
            "read_siblings",
            "Live versions per read that found the key (after any plugin merge)",
            metrics.read_siblings.clone(),
        );
        registry.register(
            "object_size_bytes",
            "Sizes of values read (each live version) and written",
            metrics.object_bytes.clone(),
        );
        registry.register(
            "plugin_calls",
            "Plugin calls by plugin, function and result",
            metrics.plugin_calls.clone(),
        );
        registry.register(
            "plugin_call_duration_seconds",
            "Time plugin calls ran (waiting for an instance not included)",
            metrics.plugin_seconds.clone(),
        );
        registry.register(
            "commit_batch_records",
            "Object records written per storage commit",
            metrics.commit_records.clone(),
        );
        registry.register(
            "commit_duration_seconds",
            "Time each storage commit took to become durable",
            metrics.commit_seconds.clone(),
        );
        registry.register_collector(Box::new(metrics.report.clone()));
        let metrics = NodeMetrics {
            registry,
            ..metrics
        };
        Arc::new(metrics)
    }

    /// Whether this node records metrics.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The registry in the OpenMetrics text format, with `report` (read
    /// from the node loop just before) as the core's figures.
    pub fn encode(&self, report: NodeReport, peer_links_refused: u64) -> String {
        self.encode_as(report, peer_links_refused, Format::OpenMetrics)
    }

    /// As [`NodeMetrics::encode`], in `format`.
    pub fn encode_as(&self, report: NodeReport, peer_links_refused: u64, format: Format) -> String {
        self.report.set(report, peer_links_refused);
        let mut text = String::with_capacity(32 * 1024);
        // Writing to a String cannot fail.
        let _ = match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.registry)
            }
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            }
        };
        text
    }

    /// Replaces the table and plugin names labels may carry.
    pub fn publish_names(
        &self,
        tables: impl Iterator<Item = String>,
        plugins: impl Iterator<Item = (String, String)>,
    ) {
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        known.tables = tables.collect();
        known.plugins = plugins.collect();
    }

    /// The label for table `table`: its name if the cluster has it.
    pub fn table_label(&self, table: Option<&str>) -> String {
        if !self.enabled {
            return String::new();
        }
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        match table {
            Some(name) if known.tables.contains(name) => name.to_owned(),
            _ => OTHER_TABLE.to_owned(),
        }
    }

    /// The label for the plugin whose module is `sha256`.
    pub fn plugin_label(&self, sha256: &str) -> String {
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        match known.plugins.get(sha256) {
            Some(name) => name.clone(),
            None => format!("sha256:{}", sha256.get(..12).unwrap_or(sha256)),
        }
    }

    /// Counts an HTTP request answered.
    pub fn request(&self, op: &'static str, table: String, status: u16, took: Duration) {
        if !self.enabled {
            return;
        }
        self.requests
            .get_or_create(&RequestLabels {
                op,
                table: table.clone(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&RequestTimeLabels { op, table })
            .observe(took.as_secs_f64());
    }

    /// Counts a read that found the key: its live versions and their sizes.
    pub fn read(&self, sizes: &[usize]) {
        if !self.enabled {
            return;
        }
        if sizes.is_empty() {
            return;
        }
        self.read_siblings.observe(sizes.len() as f64);
        let histogram = self.object_bytes.get_or_create(&SizeLabels { op: "get" });
        for size in sizes {
            histogram.observe(*size as f64);
        }
    }

    /// Counts a value written.
    pub fn write(&self, size: usize) {
        if !self.enabled {
            return;
        }
        self.object_bytes
            .get_or_create(&SizeLabels { op: "put" })
            .observe(size as f64);
    }

    /// Counts a plugin call, logging a failure (at most once a second per
    /// module, with how many were not logged).
    pub fn plugin_call(
        &self,
        sha256: &str,
        function: &'static str,
        outcome: Result<&'static str, &PluginFailure>,
        took: Duration,
    ) {
        let plugin = self.plugin_label(sha256);
        let result = match outcome {
            Ok(result) => result,
            Err(failure) => {
                self.log_failure(&plugin, sha256, function, failure);
                failure_label(failure)
            }
        };
        if !self.enabled {
            return;
        }
        self.plugin_calls
            .get_or_create(&PluginCallLabels {
                plugin: plugin.clone(),
                function,
                result,
            })
            .inc();
        self.plugin_seconds
            .get_or_create(&PluginTimeLabels { plugin, function })
            .observe(took.as_secs_f64());
    }

    fn log_failure(&self, plugin: &str, sha256: &str, function: &str, failure: &PluginFailure) {
        let now = std::time::Instant::now();
        let mut log = self.failure_log.lock().unwrap_or_else(|e| e.into_inner());
        let entry = log
            .entry(sha256.to_owned())
            .or_insert((now - Duration::from_secs(2), 0));
        if now.duration_since(entry.0) < Duration::from_secs(1) {
            entry.1 += 1;
            return;
        }
        let suppressed = std::mem::take(&mut entry.1);
        entry.0 = now;
        drop(log);
        tracing::warn!(
            plugin,
            sha256,
            function,
            reason = %failure,
            not_logged_since = suppressed,
            "plugin call failed"
        );
    }

    /// Counts a storage commit of `records` object records.
    pub fn commit(&self, records: usize, took: Duration) {
        if !self.enabled {
            return;
        }
        self.commit_records.observe(records as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }
}

/// The `result` label of a failed plugin call.
pub fn failure_label(failure: &PluginFailure) -> &'static str {
    match failure {
        PluginFailure::Trap(_) => "trap",
        PluginFailure::Fuel(_) => "fuel",
        PluginFailure::Memory(_) => "memory",
        PluginFailure::Output(_) => "output",
        PluginFailure::Unavailable(_) => "unavailable",
    }
}

#[cfg(test)]
mod tests;
