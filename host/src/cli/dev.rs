//! `cairn dev`: a local cluster in one process, one thread and runtime per node,
//! with the demo tables created and a few commands to try printed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use serde_json::{json, Value};

use super::client::exchange;
use crate::core::limits::{
    PARTITIONS_DEFAULT, REQUEST_TIMEOUT_MS_DEFAULT, VALUE_BYTES_MAX_DEFAULT,
};
use crate::core::peer_auth::ClusterSecret;
use crate::core::types::NodeId;
use crate::runtime::{self, ServeOptions};

/// `cairn dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// First HTTP port; node i listens on base+i, and on base+100+i for peers.
    #[arg(long, default_value_t = 8080)]
    pub base_port: u16,
    /// Where the nodes keep their data (kept between runs).
    #[arg(long, default_value = ".cairn-dev")]
    pub data_dir: PathBuf,
    /// A directory of plugin modules (`shopping_cart.wasm` is uploaded as
    /// `shopping-cart`); `cargo xtask dev` builds the examples there.
    #[arg(long)]
    pub plugins_dir: Option<PathBuf>,
}

/// A demo table of SPEC §2 that needs no plugin: (name, n, r, w, merge, storage).
const DEMO_TABLES: [(&str, u8, u8, u8, &str, &str); 4] = [
    ("sessions", 3, 2, 2, "lww", "lmdb"),
    ("catalog", 3, 1, 3, "lww", "lmdb"),
    ("cache", 1, 1, 1, "lww", "memory"),
    ("events", 3, 2, 2, "siblings", "lmdb"),
];

/// The dev cluster's secret, `DATA_DIR/cluster-secret`: drawn on the first
/// run (readable by its owner only) and kept, so a `cairn serve` started by
/// hand can join with `--cluster-secret-file` pointing at it.
fn dev_cluster_secret(data_dir: &std::path::Path) -> anyhow::Result<ClusterSecret> {
    let path = data_dir.join("cluster-secret");
    if !path.exists() {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut file = std::fs::OpenOptions::new();
        file.write(true).create_new(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
        let mut file = file
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        std::io::Write::write_all(&mut file, format!("{text}\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    ClusterSecret::from_text(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Runs the local cluster until Ctrl-C.
pub fn run(args: &DevArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > 9 {
        anyhow::bail!("--nodes must be between 1 and 9");
    }
    let secret = dev_cluster_secret(&args.data_dir)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let first_peer = format!("127.0.0.1:{}", args.base_port + 100);
    let mut threads = Vec::new();
    let mut urls = Vec::new();
    // Nodes that bound both their sockets: until all have, a cluster that
    // answers on these ports may be someone else's.
    let bound = Arc::new(AtomicUsize::new(0));
    // Every node thread reports here when it ends, with why.
    let (ended, mut endings) = tokio::sync::mpsc::unbounded_channel::<(NodeId, String)>();
    for i in 0..args.nodes {
        let id = NodeId::new(&format!("node{}", i + 1))?;
        let options = ServeOptions {
            metrics: true,
            advertise_http: None,
            advertise_peer: None,
            id: id.clone(),
            http: format!("127.0.0.1:{}", args.base_port + i),
            peer: format!("127.0.0.1:{}", args.base_port + 100 + i),
            data_dir: args.data_dir.join(id.as_str()),
            seeds: if i == 0 {
                Vec::new()
            } else {
                vec![first_peer.clone()]
            },
            partitions: PARTITIONS_DEFAULT as usize,
            target_n: 3,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            value_bytes_max: VALUE_BYTES_MAX_DEFAULT,
            http_connections_max: crate::core::limits::HTTP_CONNECTIONS_MAX,
            disk_reserve_bytes: crate::core::limits::DISK_RESERVE_BYTES_DEFAULT,
            antientropy: Some(crate::core::antientropy::AntiEntropyConfig::default()),
            transfer_bytes_per_s: crate::core::limits::TRANSFER_BYTES_PER_S_DEFAULT,
            clock_offset_ms: 0,
            link_faults_file: None,
            cluster_secret: Some(secret.clone()),
            auth_required: false,
            admin_key_file: None,
            tls: None,
        };
        urls.push(format!("http://{}", options.http));
        let mut stopped = stopped.clone();
        let bound = bound.clone();
        let ended = ended.clone();
        let node = id.clone();
        let thread = std::thread::Builder::new().name(id.to_string()).spawn(
            move || -> anyhow::Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let shutdown = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                let on_bound = move |_| {
                    bound.fetch_add(1, Ordering::SeqCst);
                };
                let outcome = runtime.block_on(runtime::serve(options, on_bound, shutdown));
                let why = match &outcome {
                    Ok(()) => "it stopped".to_owned(),
                    Err(e) => format!("{e:#}"),
                };
                let _ = ended.send((node, why));
                outcome
            },
        )?;
        threads.push(thread);
    }
    let ready = wait_for_cluster(&urls[0], usize::from(args.nodes), &bound, &threads);
    if let Err(e) = ready {
        let _ = stop.send(true);
        for thread in threads {
            let node = thread.thread().name().unwrap_or("a node").to_owned();
            if let Ok(Err(node_error)) = thread.join() {
                eprintln!("{node} failed: {node_error:#}");
            }
        }
        return Err(e);
    }
    let uploaded = match &args.plugins_dir {
        Some(dir) => upload_plugins(&urls[0], dir)?,
        None => Vec::new(),
    };
    create_demo_tables(&urls[0], args.nodes, &uploaded)?;
    print_welcome(&urls, &uploaded);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Until Ctrl-C, or until a node stops by itself: then the cluster is not
    // what was printed, so say which node stopped and why, and exit.
    let died = runtime.block_on(async {
        tokio::select! {
            () = super::shutdown_signal() => None,
            ending = endings.recv() => ending,
        }
    });
    match &died {
        None => println!("stopping..."),
        Some((node, why)) => eprintln!("{node} stopped: {why}; stopping the other nodes"),
    }
    let _ = stop.send(true);
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("node stopped with an error: {e:#}"),
            Err(_) => eprintln!("a node thread panicked"),
        }
    }
    match died {
        Some((node, _)) => anyhow::bail!("{node} stopped by itself"),
        None => Ok(()),
    }
}

fn wait_for_cluster(
    url: &str,
    nodes: usize,
    bound: &AtomicUsize,
    threads: &[std::thread::JoinHandle<anyhow::Result<()>>],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if threads.iter().any(|t| t.is_finished()) {
            anyhow::bail!("a node stopped while starting (is a port in use?)");
        }
        if bound.load(Ordering::SeqCst) < nodes {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        if let Ok(answer) = exchange("GET", &format!("{url}/cluster"), &[], None) {
            let status: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
            let members = status["members"].as_array().cloned().unwrap_or_default();
            let ready = members.len() == nodes
                && members
                    .iter()
                    .all(|m| m["status"] == "up" && m["partitions"].as_u64().unwrap_or(0) > 0);
            if ready {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("the cluster did not form within 30 s")
}

/// Uploads every `*.wasm` in `dir`; returns the plugin names.
fn upload_plugins(url: &str, dir: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    files.sort();
    for file in files {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let name = stem.replace('_', "-");
        let bytes = std::fs::read(&file)?;
        let answer = exchange("PUT", &format!("{url}/plugins/{name}"), &[], Some(&bytes))?;
        if !(200..300).contains(&answer.status) {
            anyhow::bail!(
                "uploading {}: HTTP {} {}",
                file.display(),
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        names.push(name);
    }
    Ok(names)
}

fn create_demo_tables(url: &str, nodes: u16, plugins: &[String]) -> anyhow::Result<()> {
    let cap = u8::try_from(nodes).unwrap_or(9);
    if plugins.iter().any(|p| p == "shopping-cart") {
        let n = 3.min(cap);
        let body = json!({ "n": n, "r": 2.min(n), "w": 2.min(n), "merge": "plugin", "plugin": "shopping-cart" }).to_string();
        let answer = exchange(
            "PUT",
            &format!("{url}/tables/carts"),
            &[],
            Some(body.as_bytes()),
        )?;
        if answer.status != 200 {
            anyhow::bail!(
                "creating table carts: HTTP {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
    }
    for (name, n, r, w, merge, storage) in DEMO_TABLES {
        let n = n.min(cap);
        let body =
            json!({ "n": n, "r": r.min(n), "w": w.min(n), "merge": merge, "storage": storage })
                .to_string();
        let answer = exchange(
            "PUT",
            &format!("{url}/tables/{name}"),
            &[],
            Some(body.as_bytes()),
        )
        .with_context(|| format!("creating table {name}"))?;
        if answer.status != 200 {
            anyhow::bail!(
                "creating table {name}: HTTP {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
    }
    Ok(())
}

fn print_welcome(urls: &[String], plugins: &[String]) {
    println!("Cairn dev cluster is up:");
    for (i, url) in urls.iter().enumerate() {
        println!("  node{}  {url}", i + 1);
    }
    println!(
        "Tables: sessions (lww), catalog (lww, r1 w3), cache (memory, n1), events (siblings)."
    );
    if plugins.is_empty() {
        println!(
            "No plugins uploaded (pass --plugins-dir, or run `cargo xtask dev`): no `carts` table."
        );
    } else {
        println!(
            "Plugins: {}. Table carts merges with shopping-cart.",
            plugins.join(", ")
        );
    }
    let first = &urls[0];
    let second = urls.get(1).unwrap_or(first);
    println!("Try:");
    println!("  curl -i -X PUT --data 'hello' -H 'content-type: text/plain' {first}/tables/sessions/keys/alice");
    println!("  curl -i {second}/tables/sessions/keys/alice");
    println!("  curl -i -X PUT --data 'one' {first}/tables/events/keys/e1; curl -i -X PUT --data 'two' {second}/tables/events/keys/e1");
    println!("  curl -i {first}/tables/events/keys/e1        # 300: both siblings");
    if plugins.iter().any(|p| p == "shopping-cart") {
        println!("  curl -X PUT -d '{{\"apple\":{{\"qty\":1,\"price\":\"0.50\",\"updated_ms\":1}}}}' {first}/tables/carts/keys/ann");
        println!("  curl -X PUT -d '{{\"tea\":{{\"qty\":2,\"price\":\"3.00\",\"updated_ms\":2}}}}' {second}/tables/carts/keys/ann");
        println!("  curl -i {first}/tables/carts/keys/ann        # 200, X-Cairn-Merged: 2: both carts merged server-side");
    }
    println!("  curl -s {first}/cluster");
    println!("Ctrl-C stops the cluster.");
}
