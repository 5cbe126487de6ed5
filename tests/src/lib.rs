//! Harness for process-level cluster tests: starts real `cairn serve`
//! processes on loopback, pauses, kills and restarts them, and talks to them
//! over HTTP.
//!
//! Ports come from [`free_port`], below the kernel's ephemeral range: a node
//! restarted on its old port never finds it taken by a connection or a
//! `bind(0)` of a test running in parallel.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod browser;
pub mod netns;
pub mod torture;

/// Ports handed out so far by [`free_port`] in this process.
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A loopback port no one listens on, from 20000–31999 (below the ephemeral
/// range 32768–60999, so the kernel never hands it to anyone else); each
/// call returns another. `step` ports from it are free too (`cairn dev`
/// takes `base..base+n` and `base+100..`).
pub fn free_port(step: u16) -> u16 {
    let start = 20_000 + (std::process::id() % 40) * 300;
    loop {
        let offset = NEXT_PORT.fetch_add(u32::from(step.max(1)), Ordering::Relaxed);
        let port = 20_000 + (start - 20_000 + offset) % 12_000;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if (0..step.max(1)).all(|i| free(port + i)) {
            return port;
        }
    }
}

/// The `cairn` binary under test: `$CAIRN_BIN`, else the workspace's debug build.
pub fn cairn_bin() -> PathBuf {
    if let Ok(path) = std::env::var("CAIRN_BIN") {
        return PathBuf::from(path);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let path = root.join("target/debug/cairn");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p cairn` (cargo xtask test does)",
        path.display()
    );
    path
}

/// An example plugin module built by `cargo xtask test` (`shopping-cart` →
/// `target/wasm32-unknown-unknown/plugin/shopping_cart.wasm`).
pub fn plugin_wasm(name: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let path = root
        .join("target/wasm32-unknown-unknown/plugin")
        .join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run `cargo xtask test`, which builds the plugins",
            path.display()
        )
    })
}

/// A minimal module speaking the plugin ABI whose `reconcile` runs `body`
/// (WAT); bytes 16.. hold KeepSiblings, 32.. hold Merged("hi").
pub fn wat_plugin(body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            (memory (export "memory") 1)
            (global $bump (mut i32) (i32.const 1024))
            (data (i32.const 16) "\01")
            (data (i32.const 32) "\00\02hi\00")
            (func (export "cairn_abi_version") (result i32) (i32.const 1))
            (func (export "cairn_alloc") (param $len i32) (result i32)
                (local $p i32)
                (local.set $p (global.get $bump))
                (global.set $bump (i32.add (global.get $bump) (local.get $len)))
                (local.get $p))
            (func (export "cairn_reconcile") (param $ptr i32) (param $len i32) (result i64) {body}))"#
    ))
    .expect("valid WAT")
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(label: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("cairn-test-{}-{label}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `cairn serve` process.
pub struct NodeProcess {
    /// Node id.
    pub id: String,
    /// HTTP address.
    pub http: String,
    /// Peer address.
    pub peer: String,
    /// Data dir.
    pub data_dir: PathBuf,
    seeds: Vec<String>,
    extra: Vec<String>,
    /// Starts the process with this open-files limit (soft and hard), as
    /// `ulimit -n` would.
    pub open_files_limit: Option<u64>,
    /// The network namespace it runs in (see [`netns`]); `None`: the host's.
    pub netns: Option<String>,
    /// The API key [`NodeProcess::call`] sends (nodes run with `--auth required`).
    pub api_key: Option<String>,
    /// `RUST_LOG` from the next start on (`None`: `CAIRN_TEST_LOG`, else `info`).
    pub log_filter: Option<String>,
    child: Option<Child>,
}

impl NodeProcess {
    /// The node's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The node process's resident memory in KiB (Linux), while it runs.
    pub fn resident_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Starts a node; `http`/`peer` may use port 0.
    pub fn start(
        id: &str,
        data_dir: &Path,
        http: &str,
        peer: &str,
        seeds: &[String],
        extra: &[&str],
    ) -> NodeProcess {
        let port_or_free = |addr: &str| match addr.strip_suffix(":0") {
            Some(host) => format!("{host}:{}", free_port(1)),
            None => addr.to_owned(),
        };
        let mut node = NodeProcess {
            id: id.to_owned(),
            http: port_or_free(http),
            peer: port_or_free(peer),
            data_dir: data_dir.to_owned(),
            seeds: seeds.to_vec(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            open_files_limit: None,
            netns: None,
            api_key: None,
            log_filter: None,
        };
        node.spawn();
        node
    }

    /// Starts a node inside network namespace `netns` (addresses with
    /// explicit ports: every namespace has all of its own).
    pub fn start_in(
        netns: &str,
        id: &str,
        data_dir: &Path,
        (http, peer): (&str, &str),
        seeds: &[String],
        extra: &[&str],
    ) -> NodeProcess {
        let mut node = NodeProcess {
            id: id.to_owned(),
            http: http.to_owned(),
            peer: peer.to_owned(),
            data_dir: data_dir.to_owned(),
            seeds: seeds.to_vec(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            open_files_limit: None,
            netns: Some(netns.to_owned()),
            api_key: None,
            log_filter: None,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.with_extension("log"))
            .expect("log file");
        let mut command = match (self.open_files_limit, &self.netns) {
            (Some(limit), _) => {
                let mut prlimit = Command::new("prlimit");
                prlimit.arg(format!("--nofile={limit}:{limit}")).arg("--");
                prlimit.arg(cairn_bin());
                prlimit
            }
            // `ip netns exec` execs the binary: the pid is cairn's own.
            (None, Some(ns)) => {
                let mut ip = Command::new("ip");
                ip.args(["netns", "exec", ns]).arg(cairn_bin());
                ip
            }
            (None, None) => Command::new(cairn_bin()),
        };
        command
            .args([
                "serve",
                "--node-id",
                &self.id,
                "--http",
                &self.http,
                "--peer",
                &self.peer,
                "--data-dir",
            ])
            .arg(&self.data_dir)
            .args(&self.extra)
            .env(
                "RUST_LOG",
                self.log_filter.clone().unwrap_or_else(|| {
                    std::env::var("CAIRN_TEST_LOG").unwrap_or_else(|_| "info".into())
                }),
            )
            .stdout(Stdio::piped())
            .stderr(log);
        for seed in &self.seeds {
            command.args(["--seed", seed]);
        }
        let mut child = command.spawn().expect("spawn cairn serve");
        let stdout = child.stdout.take().expect("stdout");
        // The listening line, within a deadline: a node stuck before binding
        // fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "node {} printed no listening line within 30 s (see {})",
                    self.id,
                    self.data_dir.with_extension("log").display()
                )
            });
        // "cairn node ID listening http=ADDR peer=ADDR"
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| {
                    panic!(
                        "node {} did not start: {line:?} (see {})",
                        self.id,
                        self.data_dir.with_extension("log").display()
                    )
                })
                .to_owned()
        };
        self.http = field("http=");
        self.peer = field("peer=");
        self.child = Some(child);
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().expect("running").to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Freezes the process (SIGSTOP): it keeps its sockets but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused process.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// kill -9, no chance to clean up.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// kill -9, then deletes the data dir: the node lost its disk.
    pub fn wipe(&mut self) {
        self.crash();
        std::fs::remove_dir_all(&self.data_dir).expect("wipe data dir");
    }

    /// Starts a stopped node again on the same ports.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
    }

    /// The exit status, once the process has ended by itself.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Starts a wiped node again until a seed admits it (a seed refuses
    /// its id until it has been silent for 10 s): it exits refused, or
    /// lists `members` members once admitted.
    pub fn start_again_until_admitted(&mut self, members: usize) {
        wait_until(
            Duration::from_secs(30),
            "the wiped node to be admitted",
            || {
                if self.child.is_none() {
                    self.start_again();
                }
                let deadline = std::time::Instant::now() + Duration::from_secs(2);
                while std::time::Instant::now() < deadline {
                    if self.exit_status().is_some() {
                        return None;
                    }
                    let joined = try_call("GET", &self.url("/cluster"), &[], b"").is_ok_and(|r| {
                        r.json()["members"]
                            .as_array()
                            .is_some_and(|m| m.len() == members)
                    });
                    if joined {
                        return Some(());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                None
            },
        );
    }

    /// Replaces the seeds used from the next start on.
    pub fn set_seeds(&mut self, seeds: &[String]) {
        self.seeds = seeds.to_vec();
    }

    /// Replaces the extra `serve` arguments used from the next start on.
    pub fn set_extra(&mut self, extra: &[String]) {
        self.extra = extra.to_vec();
    }

    /// Starts the node again if it is not running (it may stop by itself
    /// soon after, e.g. a wiped node its seeds refuse: see
    /// [`NodeProcess::exit_status`]).
    pub fn start_again_or_exit(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    /// Starts again on the same ports and data dir.
    pub fn restart(&mut self) {
        self.crash();
        self.spawn();
    }

    /// The node's log file (its stderr).
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }

    /// The URL of a path on this node.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// One HTTP exchange.
    pub fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let url = self.url(path);
        self.try_call(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
    }

    /// One exchange with this node, with its [`NodeProcess::api_key`] if
    /// any; `Err` when it cannot be reached or times out.
    pub fn try_call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply, String> {
        let auth = self.api_key.as_ref().map(|k| format!("Bearer {k}"));
        let mut all = headers.to_vec();
        if let Some(auth) = &auth {
            all.push(("authorization", auth));
        }
        try_call(method, &self.url(path), &all, body)
    }

    /// `GET /cluster` as JSON.
    pub fn cluster(&self) -> Value {
        self.call("GET", "/cluster", &[], b"").json()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.crash();
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, lowercased names.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The context token header.
    pub fn context(&self) -> Option<&str> {
        self.header("x-cairn-context")
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The sibling values of a 300 answer, decoded and sorted.
    pub fn sibling_values(&self) -> Vec<String> {
        use base64::Engine as _;
        assert_eq!(
            self.status,
            300,
            "expected siblings: {} {}",
            self.status,
            self.text()
        );
        let mut values: Vec<String> = self.json()["siblings"]
            .as_array()
            .expect("siblings")
            .iter()
            .map(|s| {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(s["value"].as_str().expect("value"))
                    .expect("base64");
                String::from_utf8(raw).expect("utf8")
            })
            .collect();
        values.sort();
        values
    }
}

/// Reads what arrives on `stream` until an HTTP head is complete, the peer
/// closes it or `timeout` passes, as text: for requests written by hand.
pub fn read_head(stream: &mut std::net::TcpStream, timeout: Duration) -> String {
    use std::io::Read;
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// One HTTP exchange with any URL; connection failures panic.
pub fn call(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    try_call(method, url, headers, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// One HTTP exchange; `Err` when the node cannot be reached or times out.
pub fn try_call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(15)))
        .build()
        .into();
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(body.to_vec()).map_err(|e| e.to_string())?;
    let mut response = agent.run(request).map_err(|e| e.to_string())?;
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .map_err(|e| e.to_string())?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// A cluster of `cairn serve` processes.
pub struct Cluster {
    /// The nodes; the first founded the cluster.
    pub nodes: Vec<NodeProcess>,
    /// Root of the data dirs.
    pub root: PathBuf,
}

impl Cluster {
    /// Starts `count` nodes (node1 founds, the rest join it) and waits until every
    /// node sees every member up with partitions. `extra` goes to every `serve`.
    pub fn start(label: &str, count: usize, extra: &[&str]) -> Cluster {
        Cluster::start_with_key(label, count, extra, None)
    }

    /// As [`Cluster::start`], every node's requests carrying `api_key`
    /// (for nodes started with `--auth required`).
    pub fn start_with_key(
        label: &str,
        count: usize,
        extra: &[&str],
        api_key: Option<&str>,
    ) -> Cluster {
        let root = temp_dir(label);
        let mut nodes = Vec::new();
        let first = NodeProcess::start(
            "node1",
            &root.join("node1"),
            "127.0.0.1:0",
            "127.0.0.1:0",
            &[],
            extra,
        );
        let seeds = vec![first.peer.clone()];
        nodes.push(first);
        for i in 2..=count {
            let id = format!("node{i}");
            nodes.push(NodeProcess::start(
                &id,
                &root.join(&id),
                "127.0.0.1:0",
                "127.0.0.1:0",
                &seeds,
                extra,
            ));
        }
        for node in &mut nodes {
            node.api_key = api_key.map(str::to_owned);
        }
        let cluster = Cluster { nodes, root };
        cluster.wait_formed();
        cluster
    }

    /// Starts `count` nodes, node `i` in `network`'s namespace `i` (node1
    /// founds, the rest join it), and waits until the cluster is formed.
    pub fn start_in(
        network: &netns::Network,
        label: &str,
        count: usize,
        extra: &[&str],
    ) -> Cluster {
        let root = temp_dir(label);
        let mut nodes: Vec<NodeProcess> = Vec::new();
        let mut seeds = Vec::new();
        for index in 0..count {
            let id = format!("node{}", index + 1);
            let addr = network.addr(index);
            let node = NodeProcess::start_in(
                &network.namespace(index),
                &id,
                &root.join(&id),
                (&format!("{addr}:7080"), &format!("{addr}:7081")),
                &seeds,
                extra,
            );
            if index == 0 {
                seeds.push(node.peer.clone());
            }
            nodes.push(node);
        }
        let cluster = Cluster { nodes, root };
        cluster.wait_formed();
        cluster
    }

    /// Waits until every node lists every member as up with partitions.
    pub fn wait_formed(&self) {
        for node in &self.nodes {
            wait_until(Duration::from_secs(20), "the cluster to form", || {
                let status = node.try_call("GET", "/cluster", &[], b"").ok()?.json();
                let members = status["members"].as_array()?.clone();
                let ok = members.len() == self.nodes.len()
                    && members
                        .iter()
                        .all(|m| m["status"] == "up" && m["partitions"].as_u64() > Some(0));
                ok.then_some(())
            });
        }
    }

    /// Creates a table through node1 and waits until every node serves it.
    pub fn create_table(&self, name: &str, config: &str) {
        let reply = self.nodes[0].call("PUT", &format!("/tables/{name}"), &[], config.as_bytes());
        assert_eq!(reply.status, 200, "create {name}: {}", reply.text());
        for node in &self.nodes {
            wait_until(
                Duration::from_secs(2),
                "the table to reach every node",
                || {
                    (node
                        .try_call("GET", &format!("/tables/{name}"), &[], b"")
                        .ok()?
                        .status
                        == 200)
                        .then_some(())
                },
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.nodes.clear();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}
