//! Plays one workload under one fault schedule in the seeded simulator:
//! five nodes, clients issuing operations concurrently while the schedule's
//! faults land, then a liveness phase (heal, resume and restart, let the
//! ring move finish, wait for anti-entropy to make every replica identical
//! without any client read), final reads, and the workload's checker.

use std::collections::BTreeMap;

use cairn::core::msg::{AdminOp, ClientOp, ClientReply, PluginFailure};
use cairn::core::table::{MergeMode, TablePatch};
use cairn::core::token::ClientContext;
use cairn::core::types::NodeId;
use cairn::sim::{get, put, NetworkFaults, Rng, Sim};
use cairn_sdk::{ReconcileInput, Resolution};

use super::check::{Add, CounterRead, Increment, Removal, SetRead, Tally, Update, WriteOutcome};
use super::history::{check_key, decode_values, History, Seen};
use super::schedule::{Action, Family, Schedule};
use super::Workload;

/// Nodes a simulated run starts with.
pub const NODES: usize = 5;
/// Clients issuing operations at once.
const CLIENTS: usize = 4;
/// A client gives up on an answer after this long: the outcome is unknown.
const CLIENT_DEADLINE_MS: u64 = 2_500;
/// The longest the liveness phase waits for replicas to agree.
const CONVERGENCE_LIMIT_MS: u64 = 120_000;

/// What one run came to.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    /// The checker's tally, summed over keys.
    pub tally: Tally,
    /// What broke a guarantee (empty when nothing did). For the register
    /// workload, losses are by design and not listed here.
    pub broken: Vec<String>,
    /// Virtual ms from healing until every replica of every key agreed.
    pub convergence_ms: Option<u64>,
    /// Hints stored, over every node incarnation.
    pub hints_created: u64,
    /// Hints delivered to their owners.
    pub hints_delivered: u64,
    /// Objects anti-entropy repaired.
    pub keys_repaired: u64,
    /// The members at the end, as the node that read last sees them.
    pub members: Vec<String>,
}

fn set_union(input: &ReconcileInput) -> Result<Resolution, PluginFailure> {
    Ok(set_union::reconcile(input.clone()))
}

fn counter(input: &ReconcileInput) -> Result<Resolution, PluginFailure> {
    Ok(counter::reconcile(input.clone()))
}

fn shopping_cart(input: &ReconcileInput) -> Result<Resolution, PluginFailure> {
    Ok(shopping_cart::reconcile(input.clone()))
}

/// A plugin uploaded by someone hostile: it traps on every call.
fn hostile(_: &ReconcileInput) -> Result<Resolution, PluginFailure> {
    Err(PluginFailure::Trap(
        "unreachable executed (hostile plugin)".into(),
    ))
}

impl Workload {
    /// The native code behind the workload's plugin, if it has one.
    fn reconciler(self) -> Option<(&'static str, cairn::sim::Reconciler)> {
        let code: cairn::sim::Reconciler = match self {
            Workload::Set => set_union,
            Workload::Counter => counter,
            Workload::Cart => shopping_cart,
            Workload::Register | Workload::Siblings => return None,
        };
        self.plugin().map(|name| (name, code))
    }

    fn create_table(self, sim: &mut Sim) {
        let patch = match self.reconciler() {
            Some((plugin, code)) => {
                sim.reconciler = code;
                sim.upload_plugin(0, plugin, &["reconcile"], 1);
                sim.run_for(1_000);
                TablePatch {
                    merge: Some(MergeMode::Plugin),
                    plugin: Some(plugin.into()),
                    ..Default::default()
                }
            }
            None => TablePatch {
                merge: Some(if self == Workload::Register {
                    MergeMode::Lww
                } else {
                    MergeMode::Siblings
                }),
                ..Default::default()
            },
        };
        sim.create_table(0, self.table(), patch);
    }
}

/// A client's next step after a read.
#[derive(Debug, Clone)]
enum Intent {
    /// Add this element (set, register) or item (cart).
    Add(String),
    /// Remove an item the read shows (cart).
    RemoveSome,
    /// Write a new value over what the read saw (siblings bound).
    Update(String),
    /// Only observe (counter).
    Observe,
}

/// Which history record a write fills in when it ends.
#[derive(Debug, Clone, Copy)]
enum Record {
    Add(usize),
    Removal(usize),
    Increment(usize),
    Update(usize),
}

#[derive(Debug, Clone)]
enum Pending {
    Read {
        id: u64,
        key: &'static str,
        invoked_ms: u64,
        intent: Intent,
    },
    Write {
        id: u64,
        key: &'static str,
        invoked_ms: u64,
        record: Record,
    },
}

/// Decodes a read's live values (and keeps its context); a value the
/// workload never writes is an error, a reply that is no read is `None`.
fn seen(
    workload: Workload,
    reply: &ClientReply,
) -> Option<Result<(Seen, Option<ClientContext>), String>> {
    let ClientReply::Read {
        versions, context, ..
    } = reply
    else {
        return None;
    };
    let values: Vec<&[u8]> = versions.iter().filter_map(|v| v.value.as_deref()).collect();
    Some(decode_values(workload, &values).map(|mut seen| {
        // Tombstones count among the versions a read returned.
        seen.versions = versions.len() as u64;
        (seen, context.clone())
    }))
}

fn write_outcome(reply: Option<&ClientReply>) -> WriteOutcome {
    match reply {
        Some(ClientReply::Written { .. }) => WriteOutcome::Acknowledged,
        Some(
            ClientReply::TooManySiblings { .. }
            | ClientReply::BadRequest(_)
            | ClientReply::UnknownTable,
        ) => WriteOutcome::Failed,
        _ => WriteOutcome::Unknown,
    }
}

fn node_id(number: usize) -> Option<NodeId> {
    NodeId::new(&format!("node{number}")).ok()
}

/// Applies one schedule action to the simulator (node numbers from 1).
fn apply(sim: &mut Sim, action: &Action, workload: Workload) {
    let index = |n: usize| n.checked_sub(1).filter(|&i| i < sim.len());
    let cut = |sim: &mut Sim, left: &[usize], right: &[usize]| {
        for &a in left {
            for &b in right {
                if a != b && a <= sim.len() && b <= sim.len() {
                    sim.partition(a - 1, b - 1);
                }
            }
        }
    };
    match action {
        Action::Heal => {
            sim.heal();
            sim.faults = NetworkFaults::none();
        }
        Action::Halves(left, right) => cut(sim, left, right),
        Action::Bridge { left, right, .. } => cut(sim, left, right),
        Action::Isolate(n) => {
            let others: Vec<usize> = (1..=sim.len()).filter(|m| m != n).collect();
            cut(sim, &[*n], &others);
        }
        Action::OneWay(from, to) => {
            if let (Some(a), Some(b)) = (index(*from), index(*to)) {
                sim.partition_one_way(a, b);
            }
        }
        Action::Pause(n) => {
            if let Some(i) = index(*n).filter(|&i| sim.is_up(i)) {
                sim.pause(i);
            }
        }
        Action::Resume(n) => {
            if let Some(i) = index(*n) {
                sim.resume(i);
            }
        }
        Action::Kill(n) => {
            if let Some(i) = index(*n) {
                sim.crash(i);
            }
        }
        Action::Restart(n) => {
            if let Some(i) = index(*n) {
                sim.restart(i);
            }
        }
        Action::Wipe(n) => {
            if let Some(i) = index(*n) {
                sim.wipe(i);
            }
        }
        Action::Clock(n, offset) => {
            if let Some(i) = index(*n) {
                sim.set_clock_offset(i, *offset);
            }
        }
        Action::Join => {
            sim.add_joining_node();
        }
        Action::Remove(n) => {
            if let Some(node) = node_id(*n) {
                // Through the first node that runs; refused or unanswered
                // is fine (the schedule asked, as an operator would).
                if let Some(via) = (0..sim.len()).find(|&i| sim.is_up(i) && !sim.is_paused(i)) {
                    sim.admin(via, AdminOp::Remove { node, force: false });
                }
            }
        }
        Action::Replace(n) => {
            // By the node the next join starts.
            if let (Some(old), Some(new)) = (node_id(*n), node_id(sim.len() + 1)) {
                if let Some(via) = (0..sim.len()).find(|&i| sim.is_up(i) && !sim.is_paused(i)) {
                    sim.admin(
                        via,
                        AdminOp::Replace {
                            old,
                            new,
                            force: false,
                        },
                    );
                }
            }
        }
        Action::Links {
            loss_per_mille,
            delay_ms_max,
            duplicate_per_mille,
        } => {
            sim.faults = NetworkFaults {
                loss_per_mille: *loss_per_mille,
                delay_ms_min: 1,
                delay_ms_max: (*delay_ms_max).max(1),
                duplicate_per_mille: *duplicate_per_mille,
            };
        }
        Action::HostilePlugin => {
            if workload.reconciler().is_some() {
                sim.reconciler = hostile;
            }
        }
        Action::PluginRestored => {
            if let Some((_, code)) = workload.reconciler() {
                sim.reconciler = code;
            }
        }
    }
}

/// The driver's state: clients, their histories, and what broke.
struct Driver {
    workload: Workload,
    rng: Rng,
    clients: Vec<Option<Pending>>,
    /// Each counter client's running total per key.
    totals: Vec<BTreeMap<&'static str, u64>>,
    histories: BTreeMap<&'static str, History>,
    next_element: u64,
    broken: Vec<String>,
}

impl Driver {
    fn new(workload: Workload, seed: u64) -> Driver {
        Driver {
            workload,
            rng: Rng::new(seed ^ 0x636c_6965_6e74),
            clients: vec![None; CLIENTS],
            totals: vec![BTreeMap::new(); CLIENTS],
            histories: workload
                .keys()
                .iter()
                .map(|k| (*k, History::default()))
                .collect(),
            next_element: 0,
            broken: Vec::new(),
        }
    }

    /// A node to send a request to: any that runs (paused ones too: the
    /// request waits, as it would at a stopped process).
    fn coordinator(&mut self, sim: &Sim) -> Option<usize> {
        let up: Vec<usize> = (0..sim.len()).filter(|&i| sim.is_up(i)).collect();
        (!up.is_empty()).then(|| up[self.rng.below(up.len() as u64) as usize])
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.next_element += 1;
        format!("{prefix}{}", self.next_element)
    }

    /// Starts client `c`'s next operation.
    fn start(&mut self, sim: &mut Sim, c: usize) {
        let Some(node) = self.coordinator(sim) else {
            return;
        };
        let keys = self.workload.keys();
        let key = keys[self.rng.below(keys.len() as u64) as usize];
        let table = self.workload.table();
        let now = sim.now_ms();
        let read = |sim: &mut Sim, intent: Intent| Pending::Read {
            id: sim.submit(node, get(table, key, None)),
            key,
            invoked_ms: now,
            intent,
        };
        let pending = match self.workload {
            Workload::Set if self.rng.chance(500) => {
                // A blind add: siblings the plugin merges.
                let element = self.fresh("e");
                let value = serde_json::json!([element]).to_string();
                let history = self.histories.entry(key).or_default();
                history.adds.push(Add {
                    element,
                    outcome: WriteOutcome::Unknown,
                    invoked_ms: now,
                    completed_ms: None,
                });
                Pending::Write {
                    id: sim.submit(node, put(table, key, &value, None)),
                    key,
                    invoked_ms: now,
                    record: Record::Add(history.adds.len() - 1),
                }
            }
            Workload::Set | Workload::Register => {
                let element = self.fresh("e");
                read(sim, Intent::Add(element))
            }
            Workload::Cart if self.rng.chance(300) => read(sim, Intent::RemoveSome),
            Workload::Cart => {
                let item = self.fresh("item");
                read(sim, Intent::Add(item))
            }
            Workload::Counter if self.rng.chance(300) => read(sim, Intent::Observe),
            Workload::Counter => {
                let delta = 1 + self.rng.below(5);
                let total = self.totals[c].entry(key).or_insert(0);
                *total += delta;
                let total = *total;
                let actor = format!("c{c}");
                let value = serde_json::json!({ actor.clone(): total }).to_string();
                let history = self.histories.entry(key).or_default();
                history.increments.push(Increment {
                    actor,
                    delta,
                    total,
                    outcome: WriteOutcome::Unknown,
                    invoked_ms: now,
                    completed_ms: None,
                });
                Pending::Write {
                    id: sim.submit(node, put(table, key, &value, None)),
                    key,
                    invoked_ms: now,
                    record: Record::Increment(history.increments.len() - 1),
                }
            }
            Workload::Siblings => {
                let value = self.fresh(&format!("w{c}-"));
                read(sim, Intent::Update(value))
            }
        };
        self.clients[c] = Some(pending);
    }

    /// A read for client `c` answered: record it, and write if it meant to.
    fn after_read(
        &mut self,
        sim: &mut Sim,
        c: usize,
        key: &'static str,
        invoked_ms: u64,
        intent: Intent,
        reply: ClientReply,
    ) {
        let (seen, context) = match seen(self.workload, &reply) {
            Some(Ok(seen)) => seen,
            Some(Err(bad)) => {
                self.broken.push(format!("read of {key}: {bad}"));
                return;
            }
            // A failed read: the client moves on.
            None => return,
        };
        let now = sim.now_ms();
        let coordinator = self.coordinator(sim);
        let fresh_item = self.rng.below(u64::MAX);
        let history = self.histories.entry(key).or_default();
        match self.workload {
            Workload::Counter => history.counter_reads.push(CounterRead {
                invoked_ms,
                completed_ms: now,
                found: seen.counter.clone(),
                versions: seen.versions,
            }),
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
        let Some(node) = coordinator else {
            return;
        };
        let table = self.workload.table();
        let (value, record) = match intent {
            Intent::Observe => return,
            Intent::Add(element) => {
                let value = if self.workload == Workload::Cart {
                    let mut cart = seen.cart.clone();
                    cart.insert(
                        element.clone(),
                        serde_json::json!({"qty": 1, "price": "1.00", "updated_ms": now}),
                    );
                    serde_json::to_string(&cart).unwrap_or_default()
                } else {
                    let mut elements = seen.elements.clone();
                    elements.insert(element.clone());
                    serde_json::to_string(&elements).unwrap_or_default()
                };
                history.adds.push(Add {
                    element,
                    outcome: WriteOutcome::Unknown,
                    invoked_ms: now,
                    completed_ms: None,
                });
                (value, Record::Add(history.adds.len() - 1))
            }
            Intent::RemoveSome => {
                let items: Vec<&String> = seen.cart.keys().collect();
                if items.is_empty() {
                    return;
                }
                let item = items[(fresh_item % items.len() as u64) as usize].clone();
                let mut cart = seen.cart.clone();
                cart.remove(&item);
                history.removals.push(Removal {
                    item,
                    outcome: WriteOutcome::Unknown,
                });
                (
                    serde_json::to_string(&cart).unwrap_or_default(),
                    Record::Removal(history.removals.len() - 1),
                )
            }
            Intent::Update(value) => {
                history.updates.push(Update {
                    writer: c,
                    value: value.clone(),
                    saw: seen.values.clone(),
                    outcome: WriteOutcome::Unknown,
                });
                (value, Record::Update(history.updates.len() - 1))
            }
        };
        let op: ClientOp = put(table, key, &value, context);
        self.clients[c] = Some(Pending::Write {
            id: sim.submit(node, op),
            key,
            invoked_ms: now,
            record,
        });
    }

    fn after_write(
        &mut self,
        key: &'static str,
        record: Record,
        reply: Option<&ClientReply>,
        at: Option<u64>,
    ) {
        let outcome = write_outcome(reply);
        let completed = at.filter(|_| outcome == WriteOutcome::Acknowledged);
        let history = self.histories.entry(key).or_default();
        match record {
            Record::Add(i) => {
                history.adds[i].outcome = outcome;
                history.adds[i].completed_ms = completed;
            }
            Record::Removal(i) => history.removals[i].outcome = outcome,
            Record::Increment(i) => {
                history.increments[i].outcome = outcome;
                history.increments[i].completed_ms = completed;
            }
            Record::Update(i) => history.updates[i].outcome = outcome,
        }
    }

    /// Moves every client on: answers that came (or deadlines that passed)
    /// end their operation; idle clients start one now and then if `issue`.
    fn turn(&mut self, sim: &mut Sim, issue: bool) {
        let now = sim.now_ms();
        for c in 0..CLIENTS {
            match self.clients[c].clone() {
                Some(Pending::Read {
                    id,
                    key,
                    invoked_ms,
                    intent,
                }) => {
                    if let Some(reply) = sim.reply(id).cloned() {
                        self.clients[c] = None;
                        if issue {
                            self.after_read(sim, c, key, invoked_ms, intent, reply);
                        }
                    } else if now > invoked_ms + CLIENT_DEADLINE_MS {
                        self.clients[c] = None;
                    }
                }
                Some(Pending::Write {
                    id,
                    key,
                    invoked_ms,
                    record,
                }) => {
                    let reply = sim.reply(id).cloned();
                    if reply.is_some() || now > invoked_ms + CLIENT_DEADLINE_MS {
                        self.after_write(key, record, reply.as_ref(), sim.replied_at(id));
                        self.clients[c] = None;
                    }
                }
                None => {
                    if issue && self.rng.chance(400) {
                        self.start(sim, c);
                    }
                }
            }
        }
    }
}

/// Whether every replica of every key holds the same object, and no node
/// keeps a hint (a write only stand-ins hold is not converged yet).
fn converged(sim: &mut Sim, workload: Workload) -> bool {
    let hints_pending = (0..sim.len())
        .filter_map(|i| sim.node(i))
        .any(|n| n.sizes().hints_pending > 0);
    !hints_pending
        && workload.keys().iter().all(|key| {
            let replicas = sim.replicas_of(workload.table(), key);
            let copies: Vec<_> = replicas
                .into_iter()
                .map(|r| sim.local_object(r, workload.table(), key.as_bytes()))
                .collect();
            !copies.is_empty() && copies.windows(2).all(|w| w[0] == w[1])
        })
}

/// Prints what each node holds of `key` (for replaying a failing seed).
fn debug_key(sim: &mut Sim, workload: Workload, key: &str, final_seen: &Seen) {
    eprintln!(
        "{key}: final read found {} elements in {} versions; replicas {:?}",
        final_seen.elements.len(),
        final_seen.versions,
        sim.replicas_of(workload.table(), key)
    );
    for i in 0..sim.len() {
        let object = sim.local_object(i, workload.table(), key.as_bytes());
        let summary = object.map(|o| {
            o.versions
                .iter()
                .map(|v| v.value.as_ref().map_or(0, |b| b.len()))
                .collect::<Vec<_>>()
        });
        if std::env::var("CAIRN_TORTURE_DEBUG").as_deref() == Ok("full") {
            eprintln!(
                "    {:?}",
                sim.local_object(i, workload.table(), key.as_bytes())
            );
        }
        let ring = sim.node(i).and_then(|n| n.meta().ring.clone());
        eprintln!(
            "  node{} up={} owns={:?} value bytes per version {:?}",
            i + 1,
            sim.is_up(i),
            ring.map(|r| (r.version, r.next.is_some())),
            summary
        );
    }
}

/// Whether every running node's ring has finished its move.
fn settled(sim: &Sim) -> bool {
    (0..sim.len())
        .filter_map(|i| sim.node(i))
        .all(|n| n.meta().ring.as_ref().is_none_or(|r| r.next.is_none()))
}

/// Runs `workload` under `schedule` (drawn for `family`) with `seed`.
pub fn run(workload: Workload, family: Family, seed: u64, fault_ms: u64) -> RunResult {
    let schedule = Schedule::generate(family, seed, NODES, fault_ms);
    run_schedule(workload, &schedule, seed, fault_ms)
}

/// Runs `workload` under an explicit schedule: how a failing run is
/// replayed from its printed schedule.
pub fn run_schedule(
    workload: Workload,
    schedule: &Schedule,
    seed: u64,
    fault_ms: u64,
) -> RunResult {
    run_with(workload, schedule, seed, fault_ms, None)
}

/// [`run_schedule`], with the workload's plugin code replaced by `code`
/// (to show the checkers catch a plugin that loses data).
fn run_with(
    workload: Workload,
    schedule: &Schedule,
    seed: u64,
    fault_ms: u64,
    code: Option<cairn::sim::Reconciler>,
) -> RunResult {
    let mut sim = Sim::with_antientropy(seed, NODES, 100);
    workload.create_table(&mut sim);
    let reconciler = code.or(workload.reconciler().map(|(_, code)| code));
    if let Some(code) = reconciler {
        sim.reconciler = code;
    }
    let mut driver = Driver::new(workload, seed);
    let start = sim.now_ms();
    let mut steps = schedule.steps.iter().peekable();
    // The fault phase: clients work while the schedule plays.
    while sim.now_ms() < start + fault_ms {
        while let Some(step) = steps.next_if(|s| start + s.at_ms <= sim.now_ms()) {
            apply(&mut sim, &step.action, workload);
        }
        driver.turn(&mut sim, true);
        sim.run_for(10);
    }
    // Liveness: heal, stop faults, let clients' last answers come.
    let healed_at = sim.now_ms();
    sim.heal();
    sim.faults = NetworkFaults::none();
    if let Some(code) = reconciler {
        sim.reconciler = code;
    }
    for i in 0..sim.len() {
        sim.resume(i);
        sim.restart(i);
    }
    let mut result = RunResult::default();
    // Until replicas agree: clients finish what they sent; a supervisor
    // starts any node that stopped (a wiped node its seeds refused for
    // 10 s, a node told it was removed stays out of the ring anyway).
    let mut converged_at = None;
    while sim.now_ms() < healed_at + CONVERGENCE_LIMIT_MS {
        driver.turn(&mut sim, false);
        sim.run_for(100);
        if (sim.now_ms() - healed_at).is_multiple_of(1_000) {
            for i in 0..sim.len() {
                sim.restart(i);
            }
        }
        let idle = driver.clients.iter().all(Option::is_none);
        if idle && settled(&sim) && converged(&mut sim, workload) {
            converged_at = Some(sim.now_ms());
            break;
        }
    }
    result.convergence_ms = converged_at.map(|at| at - healed_at);
    if converged_at.is_none() {
        if !settled(&sim) {
            result.broken.push("the ring move did not complete".into());
        }
        result.broken.push(format!(
            "replicas did not agree within {} s of healing",
            CONVERGENCE_LIMIT_MS / 1_000
        ));
    }
    // Final reads through a running node, from every replica (r = 3).
    let reader = (0..sim.len()).find(|&i| sim.is_up(i)).unwrap_or(0);
    let mut total = Tally::default();
    for key in workload.keys() {
        let reply = sim.call(reader, get(workload.table(), key, Some(3)), 5_000);
        let final_seen = match reply.as_ref().and_then(|r| seen(workload, r)) {
            Some(Ok((seen, _))) => seen,
            Some(Err(bad)) => {
                result.broken.push(format!("final read of {key}: {bad}"));
                continue;
            }
            None => {
                result
                    .broken
                    .push(format!("final read of {key} failed: {reply:?}"));
                continue;
            }
        };
        if std::env::var("CAIRN_TORTURE_DEBUG").is_ok() {
            debug_key(&mut sim, workload, key, &final_seen);
        }
        let history = driver.histories.remove(key).unwrap_or_default();
        let (tally, broken) = check_key(
            workload,
            key,
            &history,
            &final_seen,
            CLIENTS as u64,
            schedule.steps.is_empty(),
        );
        total.add(&tally);
        result.broken.extend(broken);
    }
    result.broken.append(&mut driver.broken);
    result.tally = total;
    if let Some(node) = sim.node(reader) {
        result.members = node
            .meta()
            .member_ids()
            .iter()
            .map(|id| id.to_string())
            .collect();
    }
    for stats in sim.stats_of_every_incarnation() {
        result.hints_created += stats.handoff.hints_stored;
        result.hints_delivered += stats.handoff.hints_delivered;
        result.keys_repaired += stats.antientropy.objects_repaired;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A broken merge: keeps the first sibling, drops the rest.
    fn first_sibling_only(input: &ReconcileInput) -> Result<Resolution, PluginFailure> {
        let first = input
            .siblings
            .first()
            .map(|s| s.value.clone())
            .unwrap_or_default();
        Ok(Resolution::merged(first))
    }

    #[test]
    fn a_plugin_that_drops_siblings_is_caught_losing_acknowledged_adds() {
        let schedule = Schedule::default();
        let result = run_with(Workload::Set, &schedule, 3, 2_000, Some(first_sibling_only));
        assert!(result.tally.acknowledged > 50, "{:?}", result.tally);
        assert!(result.tally.lost > 0, "{:?}", result.tally);
        assert!(
            result.broken.iter().any(|b| b.contains("lost")),
            "{:?}",
            result.broken
        );
    }

    /// Found by `torture --workload set --fault mixed --base-seed 1006`:
    /// node1 handed its copy of a key over when a join moved the key
    /// away, forgetting the dots it had minted for it; when the key came
    /// back it minted counter 1 again, which the replicas' clocks already
    /// covered, and they dropped every element that write carried.
    #[test]
    fn regression_a_former_replica_never_mints_a_dot_it_handed_over() {
        let schedule: Schedule = "at 537 pause 3
            at 1002 resume 3
            at 1653 halves 2,3,4,5 | 1
            at 2346 heal
            at 2800 one-way 4 -> 2
            at 3148 heal
            at 3300 join
            at 4216 isolate 1
            at 5184 heal
            at 5838 remove 4"
            .parse()
            .unwrap();
        let result = run_schedule(Workload::Set, &schedule, 1006, 6_000);
        assert!(result.broken.is_empty(), "{:?}", result.broken);
        assert!(result.tally.acknowledged > 100, "{:?}", result.tally);
    }

    #[test]
    fn a_replaced_member_leaves_and_the_node_replacing_it_stays_under_load() {
        let schedule: Schedule = "at 300 join
            at 1500 replace 3
            at 3000 join"
            .parse()
            .unwrap();
        let result = run_schedule(Workload::Cart, &schedule, 77, 6_000);
        assert!(result.broken.is_empty(), "{:?}", result.broken);
        assert!(result.tally.acknowledged > 100, "{:?}", result.tally);
        assert_eq!(
            result.members,
            ["node1", "node2", "node4", "node5", "node6", "node7"],
            "node7 replaced node3"
        );
    }

    #[test]
    fn the_real_plugins_lose_nothing_without_faults_and_replicas_agree() {
        for workload in [
            Workload::Set,
            Workload::Counter,
            Workload::Cart,
            Workload::Siblings,
        ] {
            let result = run(workload, Family::None, 5, 2_000);
            assert!(
                result.broken.is_empty(),
                "{}: {:?}",
                workload.name(),
                result.broken
            );
            assert!(
                result.tally.acknowledged > 50,
                "{}: {:?}",
                workload.name(),
                result.tally
            );
            assert!(result.convergence_ms.is_some());
        }
    }
}
