//! Entry points for fuzzers: every decoder of bytes that come from outside
//! — HTTP requests, peer streams, context tokens, plugin answers, on-disk
//! records — driven the way the node drives it. Each takes arbitrary bytes
//! and must return without panicking; a panic (or, for the live targets, a
//! node that stops answering) is a crash. `fuzz/` wraps them for `cargo
//! fuzz`; `tests/fuzz_smoke.rs` runs each over its seed corpus and
//! deterministic mutations of it in every test run.
//!
//! The live targets share one in-process node (a one-node cluster with a
//! `siblings` and an `lww` table) listening on loopback, started on first
//! use; the others are pure.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;

use crate::core::codec::{decode_disk, encode_frame};
use crate::core::meta::ClusterMeta;
use crate::core::msg::{Message, ReplicaMessage};
use crate::core::node::{Input, Node, NodeConfig, Now, Persisted};
use crate::core::object::Object;
use crate::core::token::{ClientContext, TokenKey};
use crate::core::types::{NodeId, TableName};
use crate::runtime::{serve, ServeOptions};
use crate::sim::MemoryStore;

/// Makes any panic abort the process after printing it: a panic on one of
/// the live node's threads would otherwise end only that task, unseen by
/// a fuzzer.
pub fn abort_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        std::process::abort();
    }));
}

/// The in-process node the live targets talk to.
pub struct LiveNode {
    /// Its HTTP address.
    pub http: SocketAddr,
    /// Its peer address.
    pub peer: SocketAddr,
}

static LIVE: OnceLock<LiveNode> = OnceLock::new();

/// The shared node, started on first use in a thread of its own (one
/// thread, as `cairn serve` runs it), with tables `s` (siblings) and `l`
/// (lww).
pub fn live_node() -> &'static LiveNode {
    LIVE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cairn-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let options = ServeOptions {
            metrics: true,
            advertise_http: None,
            advertise_peer: None,
            id: NodeId::new("fuzz").unwrap_or_else(|_| unreachable!("a valid id")),
            http: "127.0.0.1:0".into(),
            peer: "127.0.0.1:0".into(),
            data_dir: dir,
            seeds: Vec::new(),
            partitions: 16,
            target_n: 1,
            request_timeout_ms: 1_000,
            value_bytes_max: 1 << 20,
            http_connections_max: 256,
            disk_reserve_bytes: 0,
            antientropy: None,
            transfer_bytes_per_s: crate::core::limits::TRANSFER_BYTES_PER_S_DEFAULT,
            clock_offset_ms: 0,
            link_faults_file: None,
            cluster_secret: None,
            auth_required: false,
            admin_key_file: None,
            tls: None,
        };
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("fuzz node runtime: {e}"));
            let result = runtime.block_on(serve(
                options,
                move |bound| {
                    let _ = bound_tx.send(bound);
                },
                std::future::pending::<()>(),
            ));
            panic!("the fuzz node stopped: {result:?}");
        });
        let bound = bound_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the fuzz node did not start"));
        let node = LiveNode {
            http: bound.http,
            peer: bound.peer,
        };
        for (table, config) in [("s", r#"{"merge":"siblings"}"#), ("l", r#"{"merge":"lww"}"#)] {
            let request = format!(
                "PUT /tables/{table} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{config}",
                config.len()
            );
            let answer = exchange(node.http, request.as_bytes());
            assert!(
                answer.starts_with(b"HTTP/1.1 200"),
                "table {table} not created: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        node
    })
}

/// Writes `bytes` to `addr`, half-closes, and reads the answer (up to
/// 64 KiB, within 2 s).
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return Vec::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.take(64 << 10).read_to_end(&mut answer);
    answer
}

/// Whether the live node still answers `GET /health`.
pub fn live_node_answers() -> bool {
    let node = live_node();
    exchange(
        node.http,
        b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .starts_with(b"HTTP/1.1 200")
}

/// Sends `data` as one HTTP connection's bytes to the live node.
pub fn http_request(data: &[u8]) {
    exchange(live_node().http, data);
}

/// Sends `data` as one peer connection's bytes (frames: a 4-byte length
/// and a versioned body) to the live node.
pub fn peer_stream(data: &[u8]) {
    exchange(live_node().peer, data);
}

/// Decodes `data` as a context token for a key (the first byte picks the
/// key's length), and checks that a token that decodes encodes back to one
/// that decodes the same.
pub fn context_token(data: &[u8]) {
    let table = TableName::new("t").unwrap_or_else(|_| unreachable!("a valid name"));
    let secret = TokenKey([7; 32]);
    let (key, token) = match data.split_first() {
        Some((&n, rest)) => rest.split_at(usize::from(n).min(rest.len())),
        None => (&data[..0], data),
    };
    let token = String::from_utf8_lossy(token);
    if let Ok(context) = ClientContext::decode(&token, &table, key, &secret) {
        let again = context.encode(&table, key, &secret);
        let decoded = ClientContext::decode(&again, &table, key, &secret);
        assert_eq!(decoded.ok(), Some(context), "a token did not round-trip");
    }
}

/// Decodes `data` as a plugin's `reconcile` and `select_storage` answers,
/// as the host does with the bytes it copies out of the guest.
pub fn plugin_answer(data: &[u8]) {
    let _ = crate::plugin::reconcile_answer(data, 1 << 20);
    let _ = crate::plugin::storage_answer(data);
}

/// Decodes `data` as every kind of on-disk record (objects, every layout
/// of cluster metadata, epochs, hint keys, transfer checkpoints); cluster
/// metadata that decodes is given to a node starting up, which must come
/// up or refuse with an error, and then run a few turns.
pub fn disk_record(data: &[u8]) {
    let _ = decode_disk::<Object>(data);
    let _ = decode_disk::<u64>(data);
    let _ = crate::core::hints::parse_hint_key(data);
    let _ = postcard::from_bytes::<crate::core::transfer::Checkpoints>(data);
    crate::storage::decode_records(data);
    if let Some(meta) = crate::storage::decode_meta(data) {
        start_with(meta);
    }
}

/// Starts a node on `meta` from its disk and ticks it.
fn start_with(meta: ClusterMeta) {
    let config = NodeConfig {
        id: NodeId::new("node1").unwrap_or_else(|_| unreachable!("a valid id")),
        http: "http-1".into(),
        peer: "peer-1".into(),
        seeds: Vec::new(),
        partitions: 16,
        target_n: 3,
        request_timeout_ms: 1_000,
        entropy: 1,
        cluster_secret: [3; 32],
        antientropy: Some(Default::default()),
        transfer_bytes_per_s: 1 << 20,
    };
    let mut store = MemoryStore::default();
    let persisted = Persisted {
        epoch: Some(5),
        clean_shutdown: false,
        meta: Some(meta),
    };
    let now = Now {
        mono_ms: 0,
        wall_ms: 1_790_000_000_000,
    };
    let Ok(mut node) = Node::new(config, persisted, now, &mut store) else {
        return;
    };
    for turn in 1..=5u64 {
        let now = Now {
            mono_ms: turn * 1_000,
            wall_ms: 1_790_000_000_000 + turn * 1_000,
        };
        node.handle(now, Input::Tick { random: turn }, &mut store);
        while node.poll_output().is_some() {}
    }
}

/// Seeds for each target: valid inputs of every kind, which mutations
/// start from (`cargo xtask fuzz` writes them to `fuzz/corpus/`).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let table = TableName::new("s").unwrap_or_else(|_| unreachable!("a valid name"));
    match target {
        "http_request" => [
            "GET /health HTTP/1.1\r\nhost: x\r\n\r\n",
            "GET /cluster HTTP/1.1\r\nhost: x\r\n\r\n",
            "PUT /tables/s/keys/k%41?w=1 HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\nabc",
            "GET /tables/s/keys/k?r=1 HTTP/1.1\r\nhost: x\r\nx-cairn-context: AQID\r\n\r\n",
            "DELETE /tables/l/keys/k HTTP/1.1\r\nhost: x\r\n\r\n",
            "PUT /tables/t2 HTTP/1.1\r\nhost: x\r\ncontent-length: 40\r\n\r\n{\"n\":1,\"r\":1,\"w\":1,\"merge\":\"siblings\"}",
            "POST /cluster/remove HTTP/1.1\r\nhost: x\r\ncontent-length: 16\r\n\r\n{\"node\":\"other\"}",
            "POST /cluster/join HTTP/1.1\r\nhost: x\r\ncontent-length: 22\r\n\r\n{\"seed\":\"127.0.0.1:1\"}",
            "PUT /tables/s/keys/k HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            "OPTIONS /tables/s/keys/k HTTP/1.1\r\nhost: x\r\n\r\n",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect(),
        "peer_stream" => {
            let hello = Message::Hello {
                node: NodeId::new("peer").unwrap_or_else(|_| unreachable!("a valid id")),
            };
            let object = Object::default();
            let write = Message::Replica(ReplicaMessage::Repair {
                table: table.clone(),
                key: Bytes::from_static(b"k"),
                object,
            });
            let mut stream = Vec::new();
            for message in [&hello, &write] {
                let _ = encode_frame(message, &mut stream);
            }
            let mut just_hello = Vec::new();
            let _ = encode_frame(&hello, &mut just_hello);
            vec![stream, just_hello]
        }
        "context_token" => {
            let secret = TokenKey([7; 32]);
            let context = ClientContext::default();
            let token = context.encode(&TableName::new("t").unwrap_or_else(|_| unreachable!()), b"k", &secret);
            let mut seed = vec![1u8, b'k'];
            seed.extend(token.as_bytes());
            vec![seed]
        }
        "plugin_answer" => vec![
            postcard::to_allocvec(&cairn_sdk::Resolution::merged(b"[1]".to_vec())).unwrap_or_default(),
            postcard::to_allocvec(&cairn_sdk::Resolution::KeepSiblings).unwrap_or_default(),
            postcard::to_allocvec(&cairn_sdk::Storage::Blob).unwrap_or_default(),
        ],
        "disk_record" => {
            let mut seeds = vec![crate::core::codec::encode_disk(&Object::default()).unwrap_or_default()];
            let meta = ClusterMeta::empty();
            seeds.push(crate::core::codec::encode_disk(&meta).unwrap_or_default());
            seeds
        }
        _ => Vec::new(),
    }
}

/// Every target's name, as `fuzz/fuzz_targets/` names its files.
pub const TARGETS: [&str; 5] = [
    "http_request",
    "peer_stream",
    "context_token",
    "plugin_answer",
    "disk_record",
];

/// Runs target `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "http_request" => http_request(data),
        "peer_stream" => peer_stream(data),
        "context_token" => context_token(data),
        "plugin_answer" => plugin_answer(data),
        "disk_record" => disk_record(data),
        other => panic!("no fuzz target {other}"),
    }
}
