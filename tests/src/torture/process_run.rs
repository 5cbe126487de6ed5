//! The nemesis for real processes: the same workloads and schedules as the
//! simulator, played against `cairn serve` processes — each in a network
//! namespace of its own when run as root (partitions are blackhole routes,
//! on loopback otherwise (then the partition families are skipped). Slow
//! and lossy links are the nodes' own test-only fault proxy on their peer
//! links (`--test-link-faults-file`, one file every node follows): this
//! kernel has no `tc netem`. Clients are threads
//! speaking HTTP; pauses are SIGSTOP/SIGCONT, kills are kill -9, a wipe
//! deletes the data dir, a clock skew restarts the node with
//! `--clock-offset-ms`, a hostile plugin is a trapping module uploaded
//! under the table's plugin name. Every run ends with the liveness phase:
//! heal, resume, reset clocks, restart, then wait (no client reads
//! meanwhile) until on every member the ring move is done, no hint is
//! pending, and anti-entropy compared every partition after the heal with
//! none divergent and then once more with nothing repaired between; then
//! a final read of every key at r=3 and the checker.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use cairn::sim::Rng;
use serde_json::Value;

use super::check::{Add, CounterRead, Increment, Removal, SetRead, Tally, Update, WriteOutcome};
use super::history::{check_key, decode_values, History, Seen};
use super::schedule::{Action, Family, Schedule};
use super::sim_run::RunResult;
use super::Workload;
use crate::netns::Network;
use crate::{plugin_wasm, temp_dir, wat_plugin, NodeProcess, Reply};

/// Nodes a process run starts with (two more namespaces are kept for the
/// membership family's joins: one plain, one replacing a member).
pub const NODES: usize = 5;
/// Namespaces made per run.
const NAMESPACES: usize = NODES + 2;
/// Client threads.
const CLIENTS: usize = 4;
/// A client's request gives up after this long: the outcome is unknown.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest the liveness phase waits for replicas to agree.
const CONVERGENCE_LIMIT: Duration = Duration::from_secs(120);

/// Whether this process may make network namespaces (root).
pub fn can_partition() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Whether `family` can be played here: partitions need root.
pub fn playable(family: Family) -> bool {
    match family {
        Family::Halves | Family::Isolate | Family::OneWay | Family::Bridge | Family::Mixed => {
            can_partition()
        }
        _ => true,
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(CLIENT_TIMEOUT))
        .build()
        .into()
}

/// One exchange; `None` when no answer came in time.
fn exchange(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<Reply> {
    send(agent, method, url, headers, body).ok()
}

/// Why an exchange has no answer: the request never left (the connection
/// was refused, so nothing can have been stored), or it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoAnswer {
    NotSent,
    Unknown,
}

/// One exchange, saying why there is no answer.
fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply, NoAnswer> {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(body.to_vec()).map_err(|_| NoAnswer::NotSent)?;
    let mut response = agent.run(request).map_err(|e| match e {
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            NoAnswer::NotSent
        }
        _ => NoAnswer::Unknown,
    })?;
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(16 << 20)
        .read_to_vec()
        .map_err(|_| NoAnswer::Unknown)?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// The live values of a read: one (200), the siblings (300) or none (404).
fn read_values(reply: &Reply) -> Option<Vec<Vec<u8>>> {
    match reply.status {
        200 => Some(vec![reply.body.clone()]),
        404 => Some(Vec::new()),
        300 => {
            let json: Value = serde_json::from_slice(&reply.body).ok()?;
            json["siblings"]
                .as_array()?
                .iter()
                .map(|s| {
                    base64::engine::general_purpose::STANDARD
                        .decode(s["value"].as_str()?)
                        .ok()
                })
                .collect()
        }
        _ => None,
    }
}

/// Decodes a read (and keeps its context); a value the workload never
/// writes is an error, a reply that is no read is `None`.
fn decode(workload: Workload, reply: &Reply) -> Option<Result<(Seen, Option<String>), String>> {
    let values = read_values(reply)?;
    let slices: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    Some(decode_values(workload, &slices).map(|seen| (seen, reply.context().map(str::to_owned))))
}

fn write_outcome(reply: &Result<Reply, NoAnswer>) -> WriteOutcome {
    match reply.as_ref().map(|r| r.status) {
        Ok(200..=299) => WriteOutcome::Acknowledged,
        Ok(400 | 404 | 409 | 413) | Err(NoAnswer::NotSent) => WriteOutcome::Failed,
        _ => WriteOutcome::Unknown,
    }
}

/// A client thread: operations against random nodes until `stop`.
fn client(
    workload: Workload,
    c: usize,
    seed: u64,
    urls: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    start: Instant,
) -> BTreeMap<&'static str, History> {
    let agent = agent();
    let mut rng = Rng::new(seed ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9));
    let mut histories: BTreeMap<&'static str, History> = BTreeMap::new();
    let keys = workload.keys();
    let table = workload.table();
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    let mut serial = 0u64;
    let now = || start.elapsed().as_millis() as u64;
    while !stop.load(Ordering::Relaxed) {
        let url = {
            let urls = urls.lock().unwrap_or_else(|e| e.into_inner());
            urls[rng.below(urls.len() as u64) as usize].clone()
        };
        let key = keys[rng.below(keys.len() as u64) as usize];
        let path = format!("{url}/tables/{table}/keys/{key}");
        serial += 1;
        let history = histories.entry(key).or_default();
        // Blind writes: counter increments, and half the set's adds.
        let blind_counter = workload == Workload::Counter && !rng.chance(300);
        let blind_set = workload == Workload::Set && rng.chance(500);
        if blind_counter || blind_set {
            let invoked_ms = now();
            let (body, record) = if blind_counter {
                let delta = 1 + rng.below(5);
                let total = totals.entry(key).or_insert(0);
                *total += delta;
                let actor = format!("c{c}");
                history.increments.push(Increment {
                    actor: actor.clone(),
                    delta,
                    total: *total,
                    outcome: WriteOutcome::Unknown,
                    invoked_ms,
                    completed_ms: None,
                });
                (serde_json::json!({ actor: *total }).to_string(), 0)
            } else {
                let element = format!("c{c}e{serial}");
                history.adds.push(Add {
                    element: element.clone(),
                    outcome: WriteOutcome::Unknown,
                    invoked_ms,
                    completed_ms: None,
                });
                (serde_json::json!([element]).to_string(), 1)
            };
            let reply = send(&agent, "PUT", &path, &[], body.as_bytes());
            let outcome = write_outcome(&reply);
            let completed = (outcome == WriteOutcome::Acknowledged).then(now);
            if record == 0 {
                if let Some(last) = history.increments.last_mut() {
                    last.outcome = outcome;
                    last.completed_ms = completed;
                }
            } else if let Some(last) = history.adds.last_mut() {
                last.outcome = outcome;
                last.completed_ms = completed;
            }
            continue;
        }
        // Read, then (but for the counter's observations) write over it.
        let invoked_ms = now();
        let Some(reply) = exchange(&agent, "GET", &path, &[], b"") else {
            continue;
        };
        let (seen, context) = match decode(workload, &reply) {
            Some(Ok(seen)) => seen,
            Some(Err(bad)) => {
                history.broken.push(format!("read of {key}: {bad}"));
                continue;
            }
            None => continue,
        };
        let completed_ms = now();
        match workload {
            Workload::Counter => {
                history.counter_reads.push(CounterRead {
                    invoked_ms,
                    completed_ms,
                    found: seen.counter.clone(),
                    versions: seen.versions,
                });
                continue;
            }
            Workload::Siblings => history.set_reads.push(SetRead {
                invoked_ms,
                found: seen.values.clone(),
                versions: seen.versions,
            }),
            _ => history.set_reads.push(SetRead {
                invoked_ms,
                found: seen.elements.clone(),
                versions: seen.versions,
            }),
        }
        let invoked_ms = now();
        // Which record the write fills in when it ends.
        enum Target {
            Add,
            Removal,
            Update,
        }
        let (body, target) = match workload {
            Workload::Cart if rng.chance(300) && !seen.cart.is_empty() => {
                let items: Vec<&String> = seen.cart.keys().collect();
                let item = items[rng.below(items.len() as u64) as usize].clone();
                let mut cart = seen.cart.clone();
                cart.remove(&item);
                history.removals.push(Removal {
                    item,
                    outcome: WriteOutcome::Unknown,
                });
                (
                    serde_json::to_string(&cart).unwrap_or_default(),
                    Target::Removal,
                )
            }
            Workload::Cart => {
                let item = format!("c{c}i{serial}");
                let mut cart = seen.cart.clone();
                cart.insert(
                    item.clone(),
                    serde_json::json!({"qty": 1, "price": "1.00", "updated_ms": wall_ms()}),
                );
                history.adds.push(Add {
                    element: item,
                    outcome: WriteOutcome::Unknown,
                    invoked_ms,
                    completed_ms: None,
                });
                (
                    serde_json::to_string(&cart).unwrap_or_default(),
                    Target::Add,
                )
            }
            Workload::Siblings => {
                let value = format!("w{c}-{serial}");
                history.updates.push(Update {
                    writer: c,
                    value: value.clone(),
                    saw: seen.values.clone(),
                    outcome: WriteOutcome::Unknown,
                });
                (value, Target::Update)
            }
            _ => {
                let element = format!("c{c}e{serial}");
                let mut elements = seen.elements.clone();
                elements.insert(element.clone());
                history.adds.push(Add {
                    element,
                    outcome: WriteOutcome::Unknown,
                    invoked_ms,
                    completed_ms: None,
                });
                (
                    serde_json::to_string(&elements).unwrap_or_default(),
                    Target::Add,
                )
            }
        };
        let headers: Vec<(&str, &str)> = context
            .as_deref()
            .map(|c| vec![("x-cairn-context", c)])
            .unwrap_or_default();
        let reply = send(&agent, "PUT", &path, &headers, body.as_bytes());
        let outcome = write_outcome(&reply);
        let completed = (outcome == WriteOutcome::Acknowledged).then(now);
        match target {
            Target::Add => {
                if let Some(last) = history.adds.last_mut() {
                    last.outcome = outcome;
                    last.completed_ms = completed;
                }
            }
            Target::Removal => {
                if let Some(last) = history.removals.last_mut() {
                    last.outcome = outcome;
                }
            }
            Target::Update => {
                if let Some(last) = history.updates.last_mut() {
                    last.outcome = outcome;
                }
            }
        }
    }
    histories
}

/// The cluster under test and what the nemesis has done to it.
struct Nemesis {
    network: Option<Network>,
    nodes: Vec<NodeProcess>,
    /// Whether each node should be running (a killed node is not until its
    /// restart; a paused one is, stopped).
    wanted_up: Vec<bool>,
    paused: Vec<bool>,
    clock_offsets: Vec<i64>,
    /// Faults that did not land as asked (a refused upload): failures.
    problems: Vec<String>,
    cuts: BTreeSet<(usize, usize)>,
    root: PathBuf,
    extra: Vec<String>,
    urls: Arc<Mutex<Vec<String>>>,
}

impl Nemesis {
    fn start(label: &str) -> Result<Nemesis, String> {
        let network = if can_partition() {
            Some(Network::create(NAMESPACES)?)
        } else {
            None
        };
        let root = temp_dir(label);
        let links = root.join("links");
        // Peer links prove a cluster secret, as a deployment's do.
        let secret = root.join("cluster-secret");
        std::fs::write(&secret, "torture cluster secret, not a real one\n")
            .map_err(|e| format!("{}: {e}", secret.display()))?;
        let extra: Vec<String> = [
            "--partitions",
            "32",
            "--request-timeout-ms",
            "1000",
            "--antientropy-every-ms",
            "100",
            "--test-link-faults-file",
            &links.to_string_lossy(),
            "--cluster-secret-file",
            &secret.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut nemesis = Nemesis {
            network,
            nodes: Vec::new(),
            wanted_up: Vec::new(),
            paused: Vec::new(),
            clock_offsets: Vec::new(),
            problems: Vec::new(),
            cuts: BTreeSet::new(),
            root,
            extra,
            urls: Arc::new(Mutex::new(Vec::new())),
        };
        for _ in 0..NODES {
            nemesis.add_node();
        }
        nemesis.wait_formed(NODES)?;
        // From now on every node knows the others as seeds, as an operator
        // restarting a wiped founder would pass `--seed`: a wiped node1
        // rejoins instead of founding a cluster of its own.
        nemesis.reseed();
        Ok(nemesis)
    }

    /// Starts the next node (node1 founds; the others join through it).
    fn add_node(&mut self) {
        let index = self.nodes.len();
        let id = format!("node{}", index + 1);
        let seeds: Vec<String> = self
            .nodes
            .first()
            .map(|n| n.peer.clone())
            .into_iter()
            .collect();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let node = match &self.network {
            Some(network) if index < NAMESPACES => {
                let addr = network.addr(index);
                NodeProcess::start_in(
                    &network.namespace(index),
                    &id,
                    &self.root.join(&id),
                    (&format!("{addr}:7080"), &format!("{addr}:7081")),
                    &seeds,
                    &extra,
                )
            }
            _ => NodeProcess::start(
                &id,
                &self.root.join(&id),
                "127.0.0.1:0",
                "127.0.0.1:0",
                &seeds,
                &extra,
            ),
        };
        self.urls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(node.url(""));
        self.nodes.push(node);
        self.wanted_up.push(true);
        self.paused.push(false);
        self.clock_offsets.push(0);
    }

    fn reseed(&mut self) {
        let peers: Vec<String> = self.nodes.iter().map(|n| n.peer.clone()).collect();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let others: Vec<String> = peers
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| p.clone())
                .collect();
            node.set_seeds(&others);
        }
    }

    fn wait_formed(&self, count: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let agent = agent();
        loop {
            let formed = self.nodes.iter().all(|node| {
                exchange(&agent, "GET", &node.url("/cluster"), &[], b"")
                    .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
                    .and_then(|s| s["members"].as_array().cloned())
                    .is_some_and(|m| {
                        m.len() == count
                            && m.iter()
                                .all(|m| m["status"] == "up" && m["partitions"].as_u64() > Some(0))
                    })
            });
            if formed {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("the cluster did not form within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn cut(&mut self, a: usize, b: usize) {
        let pair = (a.min(b), a.max(b));
        if a == b || a >= self.nodes.len() || b >= self.nodes.len() || !self.cuts.insert(pair) {
            return;
        }
        if let Some(network) = &mut self.network {
            network.cut(a, b);
        }
    }

    /// Sets node `i`'s clock offset: a restart with the new flag.
    fn set_clock(&mut self, i: usize, offset: i64) {
        self.clock_offsets[i] = offset;
        let node = &mut self.nodes[i];
        node.crash();
        let mut extra: Vec<String> = self.extra.clone();
        extra.extend(["--clock-offset-ms".to_string(), offset.to_string()]);
        node.set_extra(&extra);
        if self.wanted_up[i] {
            node.start_again_or_exit();
        }
    }

    fn apply(&mut self, action: &Action, workload: Workload) {
        let index = |n: usize| n.checked_sub(1);
        let others = |n: usize, len: usize| (0..len).filter(move |&m| m != n);
        match action {
            Action::Heal => self.heal(),
            Action::Halves(left, right) | Action::Bridge { left, right, .. } => {
                for &a in left {
                    for &b in right {
                        if let (Some(a), Some(b)) = (index(a), index(b)) {
                            self.cut(a, b);
                        }
                    }
                }
            }
            Action::Isolate(n) => {
                if let Some(n) = index(*n) {
                    for m in others(n, self.nodes.len()).collect::<Vec<_>>() {
                        self.cut(n, m);
                    }
                }
            }
            Action::OneWay(from, to) => {
                if let (Some(a), Some(b)) = (index(*from), index(*to)) {
                    // Tracked with the cuts, so no route is added twice.
                    if a != b
                        && a < self.nodes.len()
                        && b < self.nodes.len()
                        && self.cuts.insert((a.min(b), a.max(b)))
                    {
                        if let Some(network) = &mut self.network {
                            network.cut_one_way(a, b);
                        }
                    }
                }
            }
            Action::Pause(n) => {
                if let Some(i) = index(*n).filter(|&i| i < self.nodes.len()) {
                    if self.nodes[i].pid().is_some() && !self.paused[i] {
                        self.nodes[i].pause();
                        self.paused[i] = true;
                    }
                }
            }
            Action::Resume(n) => {
                if let Some(i) = index(*n).filter(|&i| i < self.nodes.len()) {
                    self.resume(i);
                }
            }
            Action::Kill(n) => {
                if let Some(i) = index(*n).filter(|&i| i < self.nodes.len()) {
                    self.resume(i);
                    self.nodes[i].crash();
                    self.wanted_up[i] = false;
                }
            }
            Action::Wipe(n) => {
                if let Some(i) = index(*n).filter(|&i| i < self.nodes.len()) {
                    self.resume(i);
                    self.nodes[i].crash();
                    let _ = std::fs::remove_dir_all(&self.nodes[i].data_dir);
                    self.wanted_up[i] = false;
                }
            }
            Action::Restart(n) => {
                if let Some(i) = index(*n).filter(|&i| i < self.nodes.len()) {
                    self.wanted_up[i] = true;
                    if self.nodes[i].pid().is_none() {
                        self.nodes[i].start_again_or_exit();
                    }
                }
            }
            Action::Clock(n, offset) => {
                if let Some(i) = index(*n).filter(|&i| i < self.nodes.len()) {
                    self.resume(i);
                    self.set_clock(i, *offset);
                }
            }
            Action::Join => {
                if self.nodes.len() < NAMESPACES {
                    self.add_node();
                }
            }
            Action::Remove(n) => {
                let body = format!(r#"{{"node":"node{n}"}}"#);
                self.leave("/cluster/remove", &body);
            }
            Action::Replace(n) => {
                // By the node the next join starts.
                let new = self.nodes.len() + 1;
                let body = format!(r#"{{"old":"node{n}","new":"node{new}"}}"#);
                self.leave("/cluster/replace", &body);
            }
            Action::Links {
                loss_per_mille,
                delay_ms_max,
                duplicate_per_mille,
            } => {
                let links = format!(
                    "loss {loss_per_mille} delay {delay_ms_max} duplicate {duplicate_per_mille}"
                );
                if let Err(e) = std::fs::write(self.links_file(), links) {
                    self.problems.push(format!("links unchanged: {e}"));
                }
            }
            Action::HostilePlugin => {
                if let Some(plugin) = workload.plugin() {
                    self.upload(plugin, &wat_plugin("unreachable"));
                }
            }
            Action::PluginRestored => {
                if let Some(plugin) = workload.plugin() {
                    self.upload(plugin, &plugin_wasm(plugin));
                }
            }
        }
    }

    /// Uploads `bytes` as plugin `plugin` through the first node that
    /// takes it; a refusal everywhere is recorded (the fault did not land).
    fn upload(&mut self, plugin: &str, bytes: &[u8]) {
        let agent = agent();
        for node in &self.nodes {
            let url = node.url(&format!("/plugins/{plugin}"));
            if exchange(&agent, "PUT", &url, &[], bytes).is_some_and(|r| r.status < 300) {
                return;
            }
        }
        self.problems
            .push(format!("no node took the upload of plugin {plugin}"));
    }

    fn resume(&mut self, i: usize) {
        if self.paused[i] {
            if self.nodes[i].pid().is_some() {
                self.nodes[i].resume();
            }
            self.paused[i] = false;
        }
    }

    fn heal(&mut self) {
        if let Some(network) = &mut self.network {
            network.heal();
        }
        if let Err(e) = std::fs::write(self.links_file(), "") {
            self.problems.push(format!("links not healed: {e}"));
        }
        self.cuts.clear();
    }

    /// Asks the first node that takes it to remove or replace a member
    /// (refused or unanswered everywhere is fine: the schedule asked, as an
    /// operator would). A member on its way out exits once it is out, and
    /// the supervisor starts it again only while it is still a member.
    fn leave(&self, path: &str, body: &str) {
        let agent = agent();
        for node in &self.nodes {
            if exchange(&agent, "POST", &node.url(path), &[], body.as_bytes())
                .is_some_and(|r| r.status < 300)
            {
                return;
            }
        }
    }

    /// The file every node's link-fault proxy follows.
    fn links_file(&self) -> PathBuf {
        self.root.join("links")
    }

    /// A supervisor's round: a node that should run but stopped by itself
    /// (a wiped node its seeds refused) is started again.
    fn supervise(&mut self) {
        for i in 0..self.nodes.len() {
            let exited = self.nodes[i].exit_status().is_some() || self.nodes[i].pid().is_none();
            // A removed node exits once told; it is started again only
            // while it is still a member (its data moves from it).
            if self.wanted_up[i] && exited && self.still_member(i) {
                self.nodes[i].start_again_or_exit();
            }
        }
    }

    /// Whether any running node still lists node `i` as a member.
    fn still_member(&self, i: usize) -> bool {
        let id = format!("node{}", i + 1);
        (0..self.nodes.len())
            .filter(|&j| j != i && self.nodes[j].pid().is_some() && !self.paused[j])
            .find_map(|j| self.status(j))
            .and_then(|s| s["members"].as_array().cloned())
            .is_none_or(|members| members.iter().any(|m| m["id"] == id.as_str()))
    }

    fn status(&self, i: usize) -> Option<Value> {
        exchange(&agent(), "GET", &self.nodes[i].url("/cluster"), &[], b"")
            .filter(|r| r.status == 200)
            .and_then(|r| serde_json::from_slice(&r.body).ok())
    }
}

impl Drop for Nemesis {
    fn drop(&mut self) {
        // Processes first (their drop kills them), then their data, unless
        // asked to keep it for a post-mortem.
        self.nodes.clear();
        if std::env::var("CAIRN_TORTURE_KEEP").is_err() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Runs `workload` under `schedule` against real processes.
pub fn run_schedule(
    workload: Workload,
    schedule: &Schedule,
    seed: u64,
    fault_ms: u64,
) -> RunResult {
    let mut result = RunResult::default();
    let mut nemesis = match Nemesis::start(&format!("torture-{}", workload.name())) {
        Ok(nemesis) => nemesis,
        Err(e) => {
            result.broken.push(format!("setup: {e}"));
            return result;
        }
    };
    let table = workload.table();
    if let Some(plugin) = workload.plugin() {
        nemesis.upload(plugin, &plugin_wasm(plugin));
    }
    let config = match workload.plugin() {
        Some(plugin) => format!(r#"{{"merge":"plugin","plugin":"{plugin}"}}"#),
        None if workload == Workload::Register => r#"{"merge":"lww"}"#.to_string(),
        None => r#"{"merge":"siblings"}"#.to_string(),
    };
    let agent = agent();
    let created = exchange(
        &agent,
        "PUT",
        &nemesis.nodes[0].url(&format!("/tables/{table}")),
        &[],
        config.as_bytes(),
    );
    if created.is_none_or(|r| r.status != 200) {
        result
            .broken
            .push("setup: the table was not created".into());
        return result;
    }
    std::thread::sleep(Duration::from_millis(500));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let urls = nemesis.urls.clone();
            let stop = stop.clone();
            std::thread::spawn(move || client(workload, c, seed, urls, stop, start))
        })
        .collect();
    for step in &schedule.steps {
        let due = start + Duration::from_millis(step.at_ms);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        nemesis.apply(&step.action, workload);
        nemesis.supervise();
    }
    if let Some(rest) =
        (start + Duration::from_millis(fault_ms)).checked_duration_since(Instant::now())
    {
        std::thread::sleep(rest);
    }
    // Liveness: clients stop, faults stop, everything comes back.
    stop.store(true, Ordering::Relaxed);
    let mut histories: BTreeMap<&'static str, History> = BTreeMap::new();
    for (c, handle) in clients.into_iter().enumerate() {
        match handle.join() {
            Ok(client_histories) => {
                for (key, history) in client_histories {
                    histories.entry(key).or_default().append(history);
                }
            }
            Err(_) => result
                .broken
                .push(format!("client {c} panicked: its history went unchecked")),
        }
    }
    nemesis.heal();
    for i in 0..nemesis.nodes.len() {
        nemesis.resume(i);
        nemesis.wanted_up[i] = true;
        // Anti-entropy's report is stamped by the node's own clock: the
        // liveness phase runs on true time.
        if nemesis.clock_offsets[i] != 0 {
            nemesis.set_clock(i, 0);
        }
    }
    if let Some(plugin) = workload.plugin() {
        nemesis.upload(plugin, &plugin_wasm(plugin));
    }
    let healed = Instant::now();
    // Replicas agree once, on every member: the ring move is done, no hint
    // is pending, and anti-entropy compared every partition since `mark`
    // with none divergent. Once that holds, a second full sweep must
    // follow that repairs nothing (a comparison counts on the node that
    // answered it too, so one sweep alone could pass while a third replica
    // still differs).
    let mut mark = wall_ms();
    let mut first: Option<u64> = None;
    let mut converged = None;
    while healed.elapsed() < CONVERGENCE_LIMIT {
        nemesis.supervise();
        let statuses: Vec<Option<Value>> = (0..nemesis.nodes.len())
            .map(|i| nemesis.status(i))
            .collect();
        let members: Vec<bool> = (0..nemesis.nodes.len())
            .map(|i| nemesis.still_member(i))
            .collect();
        let swept = statuses.iter().zip(&members).all(|(status, member)| {
            // A removed node that is out holds nothing the others need.
            !member
                || status.as_ref().is_some_and(|s| {
                    s["ring_move"].is_null()
                        && s["hints_pending"]
                            .as_object()
                            .is_none_or(|h| h.values().all(|v| v.as_u64() == Some(0)))
                        && s["antientropy"]["divergent"].as_u64() == Some(0)
                        && s["antientropy"]["oldest_exchange_ms"]
                            .as_u64()
                            .is_some_and(|t| t > mark)
                })
        });
        let repaired: u64 = statuses
            .iter()
            .flatten()
            .map(|s| s["antientropy"]["keys_repaired"].as_u64().unwrap_or(0))
            .sum();
        if swept {
            match first {
                Some(before) if before == repaired => {
                    converged = Some(healed.elapsed().as_millis() as u64);
                    break;
                }
                _ => {
                    // Another sweep from now, which must repair nothing.
                    first = Some(repaired);
                    mark = wall_ms();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    result.convergence_ms = converged;
    if converged.is_none() {
        result.broken.push(format!(
            "replicas did not agree within {} s of healing",
            CONVERGENCE_LIMIT.as_secs()
        ));
    }
    for i in 0..nemesis.nodes.len() {
        if let Some(status) = nemesis.status(i) {
            result.keys_repaired += status["antientropy"]["keys_repaired"].as_u64().unwrap_or(0);
            if let Some(hints) = status["hints"].as_object() {
                for h in hints.values() {
                    let delivered = h["delivered"].as_u64().unwrap_or(0);
                    result.hints_delivered += delivered;
                    result.hints_created += delivered + h["pending"].as_u64().unwrap_or(0);
                }
            }
        }
    }
    // Final reads from every replica.
    let mut total = Tally::default();
    let reader = (0..nemesis.nodes.len())
        .find(|&i| nemesis.nodes[i].pid().is_some() && nemesis.still_member(i))
        .unwrap_or(0);
    for (key, history) in histories.iter() {
        let reader = nemesis.nodes[reader].url(&format!("/tables/{table}/keys/{key}?r=3"));
        let reply = exchange(&agent, "GET", &reader, &[], b"");
        let seen = match reply.as_ref().and_then(|r| decode(workload, r)) {
            Some(Ok((seen, _))) => seen,
            other => {
                let what = match other {
                    Some(Err(bad)) => bad,
                    _ => format!("{:?}", reply.map(|r| (r.status, r.text()))),
                };
                result.broken.push(format!("final read of {key}: {what}"));
                continue;
            }
        };
        let (tally, broken) = check_key(
            workload,
            key,
            history,
            &seen,
            CLIENTS as u64,
            schedule.steps.is_empty(),
        );
        total.add(&tally);
        result.broken.extend(broken);
    }
    result.tally = total;
    result.broken.append(&mut nemesis.problems);
    if let Some(status) = nemesis.status(reader) {
        result.members = status["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["id"].as_str().map(str::to_owned))
            .collect();
    }
    result
}

/// Runs `workload` under `family`'s schedule for `seed`.
pub fn run(workload: Workload, family: Family, seed: u64, fault_ms: u64) -> RunResult {
    let schedule = Schedule::generate(family, seed, NODES, fault_ms);
    run_schedule(workload, &schedule, seed, fault_ms)
}
