//! Concurrent writers adding to `set-union` keys while nodes are killed
//! (kill -9), paused, cut off by a network partition (each node in a
//! network namespace of its own, where the machine allows: root) and
//! restarted at random: once the faults stop and the
//! cluster has healed itself (handoff, anti-entropy; no read repair is
//! needed), every element whose write was acknowledged is in its key's set.
//! The fault schedule comes from a fixed seed, so a failure replays.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_tests::netns::Network;
use cairn_tests::{plugin_wasm, try_call, wait_until, Cluster};

const KEYS: usize = 4;
const WRITERS: usize = 4;
const CHAOS: Duration = Duration::from_secs(20);

/// A small deterministic generator (xorshift64*), seeded.
struct Dice(u64);

impl Dice {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % below.max(1)
    }
}

/// What the nemesis does to a node for a second.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// kill -9, then start again.
    Kill,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// Cut from every other node (blackhole routes), then healed.
    Partition,
}

fn set_of(body: &[u8]) -> BTreeSet<String> {
    serde_json::from_slice::<Vec<String>>(body)
        .map(|v| v.into_iter().collect())
        .unwrap_or_default()
}

/// One read-modify-write adding `element` to `key` through `url`: true
/// when the write was acknowledged.
fn add(url: &str, key: usize, element: &str) -> bool {
    let path = format!("{url}/tables/sets/keys/s{key}");
    let Ok(read) = try_call("GET", &path, &[], b"") else {
        return false;
    };
    let mut set = match read.status {
        200 => set_of(&read.body),
        404 => BTreeSet::new(),
        _ => return false,
    };
    set.insert(element.to_owned());
    let body = serde_json::to_vec(&set).unwrap_or_default();
    let mut headers = vec![("content-type", "application/json")];
    let context = read.context().map(str::to_owned);
    if let Some(context) = &context {
        headers.push(("x-cairn-context", context));
    }
    try_call("PUT", &path, &headers, &body).is_ok_and(|r| r.status == 204)
}

#[test]
fn no_acknowledged_element_is_lost_while_nodes_are_killed_paused_and_partitioned_at_random() {
    let args = ["--partitions", "32"];
    let mut network = Network::create(5)
        .map_err(|why| eprintln!("no network namespaces here, so no partitions ({why})"))
        .ok();
    let mut cluster = match &network {
        Some(network) => Cluster::start_in(network, "chaos", 5, &args),
        None => Cluster::start("chaos", 5, &args),
    };
    let upload = cluster.nodes[0].call("PUT", "/plugins/union", &[], &plugin_wasm("set-union"));
    assert_eq!(upload.status, 201, "{}", upload.text());
    cluster.create_table(
        "sets",
        r#"{"n":3,"r":2,"w":2,"merge":"plugin","plugin":"union"}"#,
    );
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url("")).collect();
    let down: Arc<Mutex<BTreeSet<usize>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged: Arc<Mutex<BTreeMap<usize, BTreeSet<String>>>> = Arc::default();

    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (urls, down, stop, acknowledged) = (
                urls.clone(),
                down.clone(),
                stop.clone(),
                acknowledged.clone(),
            );
            std::thread::spawn(move || {
                let mut dice = Dice(0x9E37_79B9 + writer as u64);
                let mut attempts = 0;
                while !stop.load(Ordering::Relaxed) {
                    attempts += 1;
                    let key = dice.next(KEYS as u64) as usize;
                    let node = dice.next(urls.len() as u64) as usize;
                    if down.lock().unwrap().contains(&node) {
                        continue;
                    }
                    let element = format!("w{writer}-{attempts}");
                    if add(&urls[node], key, &element) {
                        acknowledged
                            .lock()
                            .unwrap()
                            .entry(key)
                            .or_default()
                            .insert(element);
                    }
                }
            })
        })
        .collect();

    // The nemesis: every 1.5 s one node is killed, paused or cut off from
    // every other node (a client can still reach it), and brought back 1 s
    // later; at most two are out at once.
    let mut dice = Dice(0xC0FF_EE11);
    let started = Instant::now();
    let mut faults = Vec::new();
    while started.elapsed() < CHAOS {
        let victim = dice.next(cluster.nodes.len() as u64) as usize;
        let fault = match dice.next(3) {
            0 => Fault::Kill,
            1 => Fault::Pause,
            _ if network.is_some() => Fault::Partition,
            _ => Fault::Pause,
        };
        if down.lock().unwrap().len() < 2 && !down.lock().unwrap().contains(&victim) {
            let others: Vec<usize> = (0..cluster.nodes.len()).filter(|&i| i != victim).collect();
            match (fault, network.as_mut()) {
                (Fault::Kill, _) => {
                    down.lock().unwrap().insert(victim);
                    cluster.nodes[victim].crash();
                }
                (Fault::Pause, _) => {
                    down.lock().unwrap().insert(victim);
                    cluster.nodes[victim].pause();
                }
                (Fault::Partition, Some(network)) => network.split(&[victim], &others),
                (Fault::Partition, None) => unreachable!("partitions only with namespaces"),
            }
            faults.push((victim, fault));
            std::thread::sleep(Duration::from_millis(1_000));
            match (fault, network.as_mut()) {
                (Fault::Kill, _) => cluster.nodes[victim].start_again(),
                (Fault::Pause, _) => cluster.nodes[victim].resume(),
                (Fault::Partition, Some(network)) => network.heal(),
                (Fault::Partition, None) => {}
            }
            down.lock().unwrap().remove(&victim);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("writer");
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let total: usize = acknowledged.values().map(BTreeSet::len).sum();
    assert!(total > 50, "the writers got writes through: {total}");
    assert!(faults.len() >= 5, "faults injected: {faults:?}");
    if network.is_some() {
        assert!(
            faults.iter().any(|(_, f)| matches!(f, Fault::Partition)),
            "a partition among the faults: {faults:?}"
        );
    }

    // Healed: the hints drain and every replica converges by itself (a
    // whole anti-entropy sweep after healing, nothing left known
    // divergent); then each primary of each key, read alone (r=1, every
    // other node paused), holds every acknowledged element.
    cluster.wait_formed();
    let healed_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    wait_until(
        Duration::from_secs(60),
        "hints delivered and a whole sweep",
        || {
            cluster
                .nodes
                .iter()
                .all(|n| {
                    let status = n.cluster();
                    let ae = &status["antientropy"];
                    status["hints_pending"]
                        .as_object()
                        .is_some_and(|o| o.is_empty())
                        && ae["oldest_exchange_ms"].as_u64() > Some(healed_ms)
                        && ae["divergent"] == 0
                })
                .then_some(())
        },
    );
    eprintln!(
        "{total} elements acknowledged in {} keys; faults (node, fault): {faults:?}",
        acknowledged.len()
    );
    for (key, elements) in &acknowledged {
        let preflist =
            cluster.nodes[0].call("GET", &format!("/tables/sets/preflist/s{key}"), &[], b"");
        let primaries: Vec<usize> = preflist.json()["primaries"]
            .as_array()
            .expect("primaries")
            .iter()
            .filter_map(|id| id.as_str()?.strip_prefix("node")?.parse::<usize>().ok())
            .map(|n| n - 1)
            .collect();
        assert_eq!(primaries.len(), 3);
        for primary in primaries {
            let others: Vec<usize> = (0..cluster.nodes.len()).filter(|i| *i != primary).collect();
            for &i in &others {
                cluster.nodes[i].pause();
            }
            let read = cluster.nodes[primary].call(
                "GET",
                &format!("/tables/sets/keys/s{key}?r=1"),
                &[],
                b"",
            );
            for &i in &others {
                cluster.nodes[i].resume();
            }
            assert_eq!(
                read.status,
                200,
                "s{key} on node{}: {}",
                primary + 1,
                read.text()
            );
            let found = set_of(&read.body);
            let lost: Vec<&String> = elements.difference(&found).collect();
            assert!(
                lost.is_empty(),
                "s{key} on node{}: {} of {} acknowledged elements missing, e.g. {:?} (faults {faults:?})",
                primary + 1,
                lost.len(),
                elements.len(),
                &lost[..lost.len().min(5)]
            );
        }
    }
}
