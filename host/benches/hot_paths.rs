//! Micro-benchmarks of the hot pieces, so regressions show: ring lookup, causal
//! context merge and token codec, object merge, peer frame codec, the peer
//! handshake and frame seal, what metrics record per request, and an LMDB
//! group commit. `cargo bench -p cairn --bench hot_paths`.

use std::hint::black_box;

use bytes::Bytes;
use cairn::core::causal::{Actor, CausalContext, Dot};
use cairn::core::codec::{decode_frame_body, encode_frame};
use cairn::core::msg::{Message, ReplicaMessage};
use cairn::core::object::{Object, Version};
use cairn::core::peer_auth::ClusterSecret;
use cairn::core::ring::{partition_of, Ring};
use cairn::core::store::LocalStore;
use cairn::core::table::{MergeMode, StorageKind};
use cairn::core::token::ClientContext;
use cairn::core::types::{NodeId, TableName};
use cairn::net::handshake::PeerGuard;
use cairn::storage::NodeStore;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

fn node(i: usize) -> NodeId {
    NodeId::new(&format!("node{i}")).expect("valid id")
}

fn dot(i: usize, counter: u64) -> Dot {
    Dot {
        actor: Actor {
            node: node(i % 3),
            epoch: (1_790_000_000 + (i / 3) as u64) << 32,
        },
        counter,
    }
}

fn context(actors: usize, loose: usize) -> CausalContext {
    let mut c = CausalContext::new();
    for i in 0..actors {
        for k in 1..=20 {
            c.add(dot(i, k));
        }
    }
    for k in 0..loose {
        c.add(dot(k, 30 + k as u64));
    }
    c
}

fn object(versions: usize, first: u64) -> Object {
    let mut o = Object::default();
    for i in 0..versions {
        let v = Version {
            dot: dot(i, first + i as u64),
            timestamp_ms: 1_000 + i as u64,
            value: Some(Bytes::from(vec![b'v'; 100])),
            content_type: "application/octet-stream".into(),
        };
        o.apply_write(&CausalContext::new(), v, MergeMode::Siblings);
    }
    o
}

fn ring(c: &mut Criterion) {
    let nodes: Vec<NodeId> = (0..3).map(node).collect();
    let mut ring = Ring::single(&nodes[0], 256, 3);
    ring = ring.claim_for(&nodes[1], &nodes[..2]);
    ring = ring.claim_for(&nodes[2], &nodes);
    let table = TableName::new("bench").expect("valid table");
    c.bench_function("ring: partition and preference list of a key", |b| {
        b.iter(|| {
            let p = partition_of(ring.partitions(), &table, black_box(b"user:123456"));
            black_box(ring.preference_list(p))
        })
    });
}

fn causal(c: &mut Criterion) {
    let (a, b) = (context(6, 2), context(6, 3));
    c.bench_function("causal: join two contexts of 6 actors", |bench| {
        bench.iter(|| {
            let mut joined = a.clone();
            joined.join(black_box(&b));
            joined
        })
    });
    let table = TableName::new("bench").expect("valid table");
    let seen = ClientContext {
        seen: a.clone(),
        max_timestamp_ms: 1_700_000_000_000,
    };
    let secret = cairn::core::token::TokenKey([7; 32]);
    let token = seen.encode(&table, b"user:1", &secret);
    c.bench_function("causal: encode a context token", |bench| {
        bench.iter(|| black_box(&seen).encode(&table, b"user:1", &secret))
    });
    c.bench_function("causal: decode a context token", |bench| {
        bench.iter(|| {
            ClientContext::decode(black_box(&token), &table, b"user:1", &secret)
                .expect("valid token")
        })
    });
}

fn objects(c: &mut Criterion) {
    let (a, b) = (object(3, 1), object(3, 2));
    c.bench_function("object: merge two replicas with 3 siblings", |bench| {
        bench.iter(|| {
            let mut merged = a.clone();
            merged.merge(black_box(&b), MergeMode::Siblings);
            merged
        })
    });
}

fn frames(c: &mut Criterion) {
    let message = Message::Replica(ReplicaMessage::Write {
        request: 42,
        table: TableName::new("bench").expect("valid table"),
        key: Bytes::from_static(b"user:123456"),
        object: object(1, 1),
        engine: None,
        hint_for: None,
    });
    let mut frame = Vec::new();
    encode_frame(&message, &mut frame).expect("encodes");
    c.bench_function("frame: encode a replica write of 100 B", |bench| {
        let mut buf = Vec::with_capacity(512);
        bench.iter(|| {
            buf.clear();
            encode_frame(black_box(&message), &mut buf).expect("encodes");
        })
    });
    c.bench_function("frame: decode a replica write of 100 B", |bench| {
        bench.iter(|| decode_frame_body(black_box(&frame[4..])).expect("decodes"))
    });
}

/// What authenticated peer links cost: a whole handshake (both sides, over
/// an in-memory pipe, nonces from the OS) per new connection, and the seal
/// and its check per frame.
fn peer_auth(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let secret = ClusterSecret::from_text("a cluster secret for the benchmark, long enough")
        .expect("secret");
    let dialer = PeerGuard::new(Some(secret.clone()));
    let acceptor = PeerGuard::new(Some(secret.clone()));
    c.bench_function("peer link: handshake (both sides)", |bench| {
        bench.iter(|| {
            runtime.block_on(async {
                let (mut a, mut b) = tokio::io::duplex(1024);
                let (dialed, accepted) = tokio::join!(dialer.dial(&mut a), acceptor.accept(&mut b));
                dialed.expect("dialed").expect("sealed");
                accepted.expect("accepted").expect("sealed");
            })
        })
    });
    let frame = vec![7u8; 1024];
    c.bench_function("peer link: seal and check a 1 KiB frame", |bench| {
        let mut sender = secret.session(&[1; 32], &[2; 32]);
        let mut receiver = secret.session(&[1; 32], &[2; 32]);
        bench.iter(|| {
            let tag = sender.seal(&[black_box(&frame)]);
            assert!(receiver.open(&[&frame], &tag));
        })
    });
}

/// What the driver records per key request with metrics on: the table
/// label, the request counter and latency histogram, and a read's siblings
/// and sizes (compare with a request's whole cost in `cairn bench`).
fn metrics(c: &mut Criterion) {
    use cairn::metrics::NodeMetrics;
    let metrics = NodeMetrics::new("node1");
    metrics.publish_names(
        ["carts", "events", "sessions"]
            .iter()
            .map(|t| t.to_string()),
        std::iter::empty(),
    );
    c.bench_function("metrics: record one read request", |bench| {
        bench.iter(|| {
            let table = metrics.table_label(Some(black_box("events")));
            metrics.request("get", table, 200, std::time::Duration::from_micros(900));
            metrics.read(black_box(&[100]));
        })
    });
}

fn group_commit(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("cairn-bench-commit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut store, _) = NodeStore::open(&dir, &node(0)).expect("store");
    let table = TableName::new("bench").expect("valid table");
    let value = object(1, 1);
    let mut key = 0u64;
    c.bench_function("lmdb: stage 16 objects and commit durably", |bench| {
        bench.iter_batched(
            || (),
            |()| {
                for _ in 0..16 {
                    key += 1;
                    store
                        .stage(&table, StorageKind::Lmdb, &key.to_be_bytes(), &value)
                        .expect("stage");
                }
                store.commit().expect("commit")
            },
            BatchSize::PerIteration,
        )
    });
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(
    benches,
    ring,
    causal,
    objects,
    frames,
    peer_auth,
    metrics,
    group_commit
);
criterion_main!(benches);
