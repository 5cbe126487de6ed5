//! `cairn dev`: a local cluster in one process, one thread and runtime per node,
//! with the demo tables created and a few commands to try printed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use serde_json::{json, Value};

use super::client::exchange;
use crate::core::limits::{
    PARTITIONS_DEFAULT, REQUEST_TIMEOUT_MS_DEFAULT, VALUE_BYTES_MAX_DEFAULT,
};
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
}

/// A demo table of SPEC §2 that needs no plugin: (name, n, r, w, merge, storage).
const DEMO_TABLES: [(&str, u8, u8, u8, &str, &str); 4] = [
    ("sessions", 3, 2, 2, "lww", "lmdb"),
    ("catalog", 3, 1, 3, "lww", "lmdb"),
    ("cache", 1, 1, 1, "lww", "memory"),
    ("events", 3, 2, 2, "siblings", "lmdb"),
];

/// Runs the local cluster until Ctrl-C.
pub fn run(args: &DevArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > 9 {
        anyhow::bail!("--nodes must be between 1 and 9");
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let first_peer = format!("127.0.0.1:{}", args.base_port + 100);
    let mut threads = Vec::new();
    let mut urls = Vec::new();
    for i in 0..args.nodes {
        let id = NodeId::new(&format!("node{}", i + 1))?;
        let options = ServeOptions {
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
        };
        urls.push(format!("http://{}", options.http));
        let mut stopped = stopped.clone();
        let thread = std::thread::Builder::new().name(id.to_string()).spawn(
            move || -> anyhow::Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let shutdown = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                runtime.block_on(runtime::serve(options, |_| {}, shutdown))
            },
        )?;
        threads.push(thread);
    }
    let ready = wait_for_cluster(&urls[0], usize::from(args.nodes), &threads);
    if let Err(e) = ready {
        let _ = stop.send(true);
        for thread in threads {
            if let Ok(Err(node_error)) = thread.join() {
                eprintln!("node failed: {node_error:#}");
            }
        }
        return Err(e);
    }
    create_demo_tables(&urls[0], args.nodes)?;
    print_welcome(&urls);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(super::shutdown_signal());
    println!("stopping...");
    let _ = stop.send(true);
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("node stopped with an error: {e:#}"),
            Err(_) => eprintln!("a node thread panicked"),
        }
    }
    Ok(())
}

fn wait_for_cluster(
    url: &str,
    nodes: usize,
    threads: &[std::thread::JoinHandle<anyhow::Result<()>>],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if threads.iter().any(|t| t.is_finished()) {
            anyhow::bail!("a node stopped while starting (is a port in use?)");
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

fn create_demo_tables(url: &str, nodes: u16) -> anyhow::Result<()> {
    let cap = u8::try_from(nodes).unwrap_or(9);
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

fn print_welcome(urls: &[String]) {
    println!("Cairn dev cluster is up:");
    for (i, url) in urls.iter().enumerate() {
        println!("  node{}  {url}", i + 1);
    }
    println!(
        "Tables: sessions (lww), catalog (lww, r1 w3), cache (memory, n1), events (siblings)."
    );
    println!("(The plugin table `carts` arrives with WebAssembly plugins, which this version does not have yet.)");
    let first = &urls[0];
    let second = urls.get(1).unwrap_or(first);
    println!("Try:");
    println!("  curl -i -X PUT --data 'hello' -H 'content-type: text/plain' {first}/tables/sessions/keys/alice");
    println!("  curl -i {second}/tables/sessions/keys/alice");
    println!("  curl -i -X PUT --data 'one' {first}/tables/events/keys/e1; curl -i -X PUT --data 'two' {second}/tables/events/keys/e1");
    println!("  curl -i {first}/tables/events/keys/e1        # 300: both siblings");
    println!("  curl -s {first}/cluster");
    println!("Ctrl-C stops the cluster.");
}
