//! `cairn bench`: a YCSB-style load generator. Every client keeps one HTTP/1.1
//! connection, the clients spread over every node's URL (each node
//! coordinates), and latencies go into HDR histograms per operation.

mod keys;
mod report;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use tokio::net::TcpStream;

pub use keys::{Distribution, KeyChooser, Rng};
pub use report::Report;

/// Which mix of operations to run (YCSB's letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// 50% reads, 50% updates.
    A,
    /// 95% reads, 5% updates.
    B,
    /// Reads only.
    C,
    /// Read-modify-write: read, then write back with the context.
    F,
    /// Blind writes only.
    W,
}

/// `cairn bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Node URLs, comma separated; clients spread over them.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080,http://127.0.0.1:8081,http://127.0.0.1:8082"
    )]
    pub urls: Vec<String>,
    /// Table to use.
    #[arg(long, default_value = "bench")]
    pub table: String,
    /// Create (or change) the table first with this merge mode (n3 r2 w2, or fewer with fewer nodes).
    #[arg(long)]
    pub merge: Option<String>,
    /// Workload.
    #[arg(long, value_enum, default_value = "a")]
    pub workload: Workload,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Concurrent clients (one connection each).
    #[arg(long, default_value_t = 32)]
    pub clients: u64,
    /// Run for this many seconds...
    #[arg(long, default_value_t = 20)]
    pub duration_s: u64,
    /// ...or this many operations, whichever ends first.
    #[arg(long)]
    pub ops: Option<u64>,
    /// Key distribution.
    #[arg(long, value_enum, default_value = "uniform")]
    pub distribution: Distribution,
    /// Skip the load phase (the keys already exist).
    #[arg(long)]
    pub no_load: bool,
    /// Write each key this many times during the load, blind and through
    /// different nodes: siblings on siblings and plugin tables.
    #[arg(long, default_value_t = 1)]
    pub load_versions: u32,
    /// What the values are: random letters, or shopping carts (JSON the
    /// `shopping-cart` plugin merges; each load round writes another item).
    #[arg(long, value_enum, default_value = "random")]
    pub values: ValueKind,
    /// Seed of the key and operation choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What the benchmark writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ValueKind {
    /// Random letters.
    Random,
    /// Shopping carts of about `--value-bytes`.
    Cart,
}

/// A value of about `bytes` bytes for load round `round`.
fn make_value(kind: ValueKind, bytes: usize, round: u64, rng: &mut Rng) -> Bytes {
    match kind {
        ValueKind::Random => Bytes::from(
            (0..bytes)
                .map(|_| b'a' + (rng.next_u64() % 26) as u8)
                .collect::<Vec<u8>>(),
        ),
        ValueKind::Cart => {
            let mut items = Vec::new();
            let mut size = 2;
            let mut i = 0;
            while size < bytes || items.is_empty() {
                let item = format!(
                    r#""r{round}-item{i}":{{"qty":{},"price":"{}.50","updated_ms":{}}}"#,
                    i + 1,
                    i + 2,
                    round * 100 + i
                );
                size += item.len() + 1;
                items.push(item);
                i += 1;
            }
            Bytes::from(format!("{{{}}}", items.join(",")))
        }
    }
}

/// One operation's outcome class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// A GET.
    Read,
    /// A write (blind on lww tables, read-modify-write elsewhere).
    Update,
}

/// What one client measured.
pub struct ClientStats {
    /// Latency per operation, in microseconds.
    pub latency_us: BTreeMap<Op, Histogram<u64>>,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Reads that answered siblings (300).
    pub siblings_seen: u64,
    /// Reads that answered a plugin merge (`X-Cairn-Merged`).
    pub merged_seen: u64,
}

impl ClientStats {
    fn new() -> Self {
        ClientStats {
            latency_us: BTreeMap::new(),
            errors: BTreeMap::new(),
            siblings_seen: 0,
            merged_seen: 0,
        }
    }

    fn record(&mut self, op: Op, started: Instant) {
        let micros = started.elapsed().as_micros() as u64;
        let histogram = self.latency_us.entry(op).or_insert_with(|| {
            Histogram::new_with_bounds(1, 60_000_000, 3)
                .unwrap_or_else(|_| unreachable!("valid bounds"))
        });
        let _ = histogram.record(micros.max(1));
    }

    fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_insert(0) += 1;
    }

    fn absorb(&mut self, other: ClientStats) {
        for (op, histogram) in other.latency_us {
            match self.latency_us.get_mut(&op) {
                Some(mine) => {
                    let _ = mine.add(&histogram);
                }
                None => {
                    self.latency_us.insert(op, histogram);
                }
            }
        }
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_insert(0) += count;
        }
        self.siblings_seen += other.siblings_seen;
        self.merged_seen += other.merged_seen;
    }
}

/// One keep-alive HTTP/1.1 connection to a node (over TLS for https://).
struct Connection {
    address: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

/// The TLS client config https:// URLs use: `--ca-cert`'s CA, else the
/// public roots. Built once.
fn tls_connector() -> anyhow::Result<tokio_rustls::TlsConnector> {
    static CONFIG: std::sync::OnceLock<std::sync::Arc<rustls::ClientConfig>> =
        std::sync::OnceLock::new();
    if let Some(config) = CONFIG.get() {
        return Ok(tokio_rustls::TlsConnector::from(config.clone()));
    }
    let mut roots = rustls::RootCertStore::empty();
    match super::client::ca_certs()? {
        Some(certs) => {
            for cert in certs {
                roots.add(cert)?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let config = CONFIG.get_or_init(|| std::sync::Arc::new(config));
    Ok(tokio_rustls::TlsConnector::from(config.clone()))
}

/// What a request answered.
struct Answer {
    status: u16,
    context: Option<String>,
    merged: bool,
}

impl Connection {
    fn new(url: &str) -> anyhow::Result<Self> {
        let (tls, rest) = match url.strip_prefix("https://") {
            Some(rest) => (true, rest),
            None => (false, url.trim_start_matches("http://")),
        };
        let address = rest.trim_end_matches('/').to_owned();
        let tls = if tls {
            let host = address
                .rsplit_once(':')
                .map_or(address.as_str(), |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let name = rustls_pki_types::ServerName::try_from(host)
                .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
            Some((tls_connector()?, name))
        } else {
            None
        };
        Ok(Connection {
            address,
            tls,
            sender: None,
        })
    }

    async fn sender(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = TcpStream::connect(&self.address).await?;
            stream.set_nodelay(true)?;
            let sender = match &self.tls {
                None => {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
                    tokio::spawn(connection);
                    sender
                }
                Some((connector, name)) => {
                    let stream = connector.connect(name.clone(), stream).await?;
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
                    tokio::spawn(connection);
                    sender
                }
            };
            self.sender = Some(sender);
        }
        self.sender.as_mut().context("no connection")
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        context: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<Answer> {
        let address = self.address.clone();
        let sender = self.sender().await?;
        sender.ready().await?;
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", address);
        if let Some(context) = context {
            request = request.header("x-cairn-context", context);
        }
        if let Some(key) = super::client::api_key()? {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let response = match sender.send_request(request.body(Full::new(body))?).await {
            Ok(response) => response,
            Err(e) => {
                self.sender = None;
                return Err(e.into());
            }
        };
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let context = header("x-cairn-context");
        let merged = header("x-cairn-merged").is_some();
        response.into_body().collect().await?;
        Ok(Answer {
            status,
            context,
            merged,
        })
    }
}

/// Shared settings of one run.
struct Plan {
    table: String,
    workload: Workload,
    read_modify_write: bool,
    chooser: KeyChooser,
    value: Bytes,
    deadline: Instant,
    ops_left: Option<Arc<AtomicU64>>,
    done: Arc<AtomicU64>,
    sequence: AtomicU64,
}

fn classify(status: u16) -> Option<String> {
    match status {
        200 | 204 | 300 | 404 => None,
        other => Some(format!("HTTP {other}")),
    }
}

async fn read(
    connection: &mut Connection,
    plan: &Plan,
    key: u64,
    stats: &mut ClientStats,
) -> Option<String> {
    let path = format!("/tables/{}/keys/k{key}", plan.table);
    match connection.send("GET", &path, None, Bytes::new()).await {
        Ok(answer) => {
            if answer.status == 300 {
                stats.siblings_seen += 1;
            }
            if answer.merged {
                stats.merged_seen += 1;
            }
            if let Some(kind) = classify(answer.status) {
                stats.error(kind);
            }
            answer.context
        }
        Err(e) => {
            stats.error(format!(
                "connection: {}",
                e.to_string().chars().take(60).collect::<String>()
            ));
            None
        }
    }
}

async fn write(
    connection: &mut Connection,
    plan: &Plan,
    key: u64,
    context: Option<&str>,
    stats: &mut ClientStats,
) {
    let path = format!("/tables/{}/keys/k{key}", plan.table);
    match connection
        .send("PUT", &path, context, plan.value.clone())
        .await
    {
        Ok(answer) => {
            if let Some(kind) = classify(answer.status) {
                stats.error(kind);
            }
        }
        Err(e) => stats.error(format!(
            "connection: {}",
            e.to_string().chars().take(60).collect::<String>()
        )),
    }
}

async fn client(mut connection: Connection, plan: Arc<Plan>, index: u64, seed: u64) -> ClientStats {
    let mut stats = ClientStats::new();
    let mut rng = Rng::new(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    loop {
        if Instant::now() >= plan.deadline {
            break;
        }
        if let Some(left) = &plan.ops_left {
            if left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_err()
            {
                break;
            }
        }
        // One shared sequence, so a sequential pass reads every key once.
        let sequence = plan.sequence.fetch_add(1, Ordering::Relaxed);
        let key = plan.chooser.next(&mut rng, sequence);
        let update = match plan.workload {
            Workload::A => rng.next_u64().is_multiple_of(2),
            Workload::B => rng.next_u64().is_multiple_of(20),
            Workload::C => false,
            Workload::F | Workload::W => true,
        };
        let started = Instant::now();
        if !update {
            read(&mut connection, &plan, key, &mut stats).await;
            stats.record(Op::Read, started);
        } else if plan.workload == Workload::W || !plan.read_modify_write {
            write(&mut connection, &plan, key, None, &mut stats).await;
            stats.record(Op::Update, started);
        } else {
            let context = read(&mut connection, &plan, key, &mut stats).await;
            write(&mut connection, &plan, key, context.as_deref(), &mut stats).await;
            stats.record(Op::Update, started);
        }
        plan.done.fetch_add(1, Ordering::Relaxed);
    }
    stats
}

/// Runs the benchmark and prints its report.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if args.urls.is_empty() || args.clients == 0 {
        anyhow::bail!("need at least one URL and one client");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(bench(args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

async fn table_mode(args: &BenchArgs) -> anyhow::Result<String> {
    let base = args.urls[0].trim_end_matches('/').to_owned();
    if let Some(merge) = &args.merge {
        let n = args.urls.len().min(3);
        let body =
            serde_json::json!({ "n": n, "r": 2.min(n), "w": 2.min(n), "merge": merge }).to_string();
        let answer = super::client::exchange(
            "PUT",
            &format!("{base}/tables/{}", args.table),
            &[],
            Some(body.as_bytes()),
        )?;
        if answer.status != 200 {
            anyhow::bail!(
                "creating table {}: HTTP {} {}",
                args.table,
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        // Let the table reach every node.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    let answer =
        super::client::exchange("GET", &format!("{base}/tables/{}", args.table), &[], None)?;
    if answer.status != 200 {
        anyhow::bail!(
            "table {} not found (create it, or pass --merge lww|siblings)",
            args.table
        );
    }
    let config: serde_json::Value = serde_json::from_slice(&answer.body)?;
    Ok(config["merge"].as_str().unwrap_or("lww").to_owned())
}

/// Writes every key `load_versions` times (all keys once, then again...),
/// each round through another node; returns how long it took and the errors.
async fn load(args: &BenchArgs) -> anyhow::Result<(Duration, BTreeMap<String, u64>)> {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let keys = args.keys.max(1);
    let rounds = u64::from(args.load_versions.max(1));
    let total = keys * rounds;
    let mut rng = Rng::new(args.seed ^ 0x10AD);
    let values: Vec<Bytes> = (0..rounds)
        .map(|round| make_value(args.values, args.value_bytes, round, &mut rng))
        .collect();
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let next = next.clone();
        let urls = args.urls.clone();
        let table = args.table.clone();
        let values = values.clone();
        let mut connections: Vec<Connection> = urls
            .iter()
            .map(|u| Connection::new(u))
            .collect::<anyhow::Result<_>>()?;
        tasks.push(tokio::spawn(async move {
            let mut stats = ClientStats::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let (key, round) = (n % keys, n / keys);
                let target = ((key + round) % connections.len() as u64) as usize;
                let path = format!("/tables/{table}/keys/k{key}");
                match connections[target]
                    .send("PUT", &path, None, values[round as usize].clone())
                    .await
                {
                    Ok(answer) => {
                        if let Some(kind) = classify(answer.status) {
                            stats.error(kind);
                        }
                    }
                    Err(e) => stats.error(format!("connection: {e}")),
                }
            }
            stats.errors
        }));
    }
    let mut errors = BTreeMap::new();
    for task in tasks {
        for (kind, count) in task.await? {
            *errors.entry(kind).or_insert(0) += count;
        }
    }
    Ok((started.elapsed(), errors))
}

async fn bench(args: &BenchArgs) -> anyhow::Result<Report> {
    let mode = table_mode(args).await?;
    let mut rng = Rng::new(args.seed);
    let value = make_value(args.values, args.value_bytes, 1_000_000, &mut rng);
    let loaded = if args.no_load {
        None
    } else {
        Some(load(args).await?)
    };
    let done = Arc::new(AtomicU64::new(0));
    let plan = Arc::new(Plan {
        table: args.table.clone(),
        workload: args.workload,
        read_modify_write: mode != "lww",
        chooser: KeyChooser::new(args.keys, args.distribution),
        value,
        deadline: Instant::now() + Duration::from_secs(args.duration_s),
        ops_left: args.ops.map(|n| Arc::new(AtomicU64::new(n))),
        done: done.clone(),
        sequence: AtomicU64::new(0),
    });
    let started = Instant::now();
    let progress = tokio::spawn(progress(done.clone(), args.json));
    let mut tasks = Vec::new();
    for index in 0..args.clients {
        let connection = Connection::new(&args.urls[(index as usize) % args.urls.len()])?;
        tasks.push(tokio::spawn(client(
            connection,
            plan.clone(),
            index,
            args.seed,
        )));
    }
    let mut total = ClientStats::new();
    for task in tasks {
        total.absorb(task.await?);
    }
    let elapsed = started.elapsed();
    progress.abort();
    if !args.json {
        eprintln!();
    }
    Ok(Report::new(args, &mode, total, elapsed, loaded))
}

async fn progress(done: Arc<AtomicU64>, quiet: bool) {
    let started = Instant::now();
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = done.load(Ordering::Relaxed);
        if !quiet {
            eprint!(
                "\r{:>5.0} s  {:>10} ops  {:>8} ops/s",
                started.elapsed().as_secs_f64(),
                now,
                now - last
            );
        }
        last = now;
    }
}
