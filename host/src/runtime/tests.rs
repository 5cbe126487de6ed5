//! The node loop with real sockets: plugin calls on the worker pool, and
//! deadlines under a sustained backlog.

use super::*;

/// A module speaking the ABI whose `reconcile` runs `body`.
fn module(body: &str) -> Vec<u8> {
    crate::plugin::tests::module(1, body, "")
}

fn arrive(host: &PluginHost, bytes: Vec<u8>) -> String {
    let sha256 = crate::plugin::sha256_hex(&bytes);
    host.compile(sha256.clone(), bytes::Bytes::from(bytes));
    sha256
}

#[tokio::test]
async fn a_looping_plugin_leaves_instances_to_the_others_and_stale_calls_do_not_run() {
    let (events, mut answers) = mpsc::channel(64);
    let host = PluginHost::new(
        PluginRuntime::new().unwrap(),
        events,
        Duration::from_secs(30),
        HashMap::new(),
        NodeMetrics::new("node1"),
    );
    let looper = arrive(&host, module("(loop $l (br $l)) (i64.const 0)"));
    let good = arrive(&host, module(&crate::plugin::tests::packed(16, 1)));
    let input = cairn_sdk::ReconcileInput::for_test(&[b"[1]", b"[2]"]);
    for job in 0..12 {
        host.reconcile(job, &looper, input.clone());
    }
    host.reconcile(100, &good, input.clone());
    // The good plugin's call does not queue behind the looping ones: it
    // answers before more than the looper's share of them finished.
    let mut order = Vec::new();
    while let Some(Event::Input(Input::Reconciled { job, outcome })) = answers.recv().await {
        order.push(job);
        if job == 100 {
            assert!(
                matches!(outcome, Ok(cairn_sdk::Resolution::KeepSiblings)),
                "{outcome:?}"
            );
            break;
        }
    }
    assert!(
        order.len() <= INSTANCES_PER_PLUGIN_MAX as usize,
        "the good call waited for {} looping calls",
        order.len() - 1
    );

    // A call whose request's deadline passed while it waited is not run.
    let (events, mut answers) = mpsc::channel(64);
    let host = PluginHost::new(
        PluginRuntime::new().unwrap(),
        events,
        Duration::ZERO,
        HashMap::new(),
        NodeMetrics::new("node1"),
    );
    let good = arrive(&host, module(&crate::plugin::tests::packed(16, 1)));
    host.reconcile(7, &good, input);
    match answers.recv().await {
        Some(Event::Input(Input::Reconciled { job: 7, outcome })) => {
            let reason = outcome.unwrap_err();
            assert!(
                matches!(&reason, PluginFailure::Unavailable(detail) if detail.contains("deadline passed")),
                "{reason}"
            );
        }
        _ => panic!("no answer"),
    }
}

mod backlog {
    //! A node flooded by peers keeps its deadlines: 64 connections send
    //! pings without pause while a write waits for an ack that never comes,
    //! and the write gets the node's own "quorum not reached" at its
    //! deadline, not the HTTP layer's "the node did not answer" 2 s later.
    //!
    //! The loop checks its tick every turn, however many events wait. On
    //! the single-threaded runtime a node runs on, readers only queue events
    //! while the loop is yielded, so the inbox empties within 16 turns even
    //! at its cap; this test holds the loop to its deadlines whatever the
    //! runtime or the select order becomes.

    use std::io::{Read, Write};
    use std::net::{TcpListener as StdListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc as std_mpsc;

    use super::*;
    use crate::core::codec::{decode_frame_body, encode_frame, frame_body_len, FRAME_HEADER_BYTES};
    use crate::core::meta::Member;
    use crate::core::msg::{MemberMessage, Message, ReplicaMessage};

    const REQUEST_TIMEOUT_MS: u64 = 1_000;
    const FLOOD_CONNECTIONS: usize = 64;
    const PINGS_PER_WRITE: usize = 4_096;

    fn frame(message: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(message, &mut out).unwrap();
        out
    }

    /// One HTTP/1.1 exchange on a fresh connection; the whole response.
    fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "gave up waiting until {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A peer that reads every frame it is sent and never answers; it
    /// reports each replica write it swallowed.
    fn silent_peer(writes: std_mpsc::Sender<()>) -> SocketAddr {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let writes = writes.clone();
                std::thread::spawn(move || loop {
                    let mut header = [0u8; FRAME_HEADER_BYTES];
                    if stream.read_exact(&mut header).is_err() {
                        return;
                    }
                    let mut body = vec![0; frame_body_len(header).unwrap()];
                    if stream.read_exact(&mut body).is_err() {
                        return;
                    }
                    if let Ok(Message::Replica(ReplicaMessage::Write { .. })) =
                        decode_frame_body(&body)
                    {
                        let _ = writes.send(());
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn a_write_still_times_out_while_peer_frames_never_stop_arriving() {
        let dir = std::env::temp_dir().join(format!("cairn-backlog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let options = ServeOptions {
            metrics: true,
            advertise_http: None,
            advertise_peer: None,
            id: NodeId::new("a").unwrap(),
            http: "127.0.0.1:0".into(),
            peer: "127.0.0.1:0".into(),
            data_dir: dir.clone(),
            seeds: Vec::new(),
            partitions: 8,
            target_n: 2,
            request_timeout_ms: REQUEST_TIMEOUT_MS,
            value_bytes_max: 1 << 20,
            http_connections_max: 64,
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
        let (bound_tx, bound_rx) = std_mpsc::channel();
        let (stop_node, stopped) = oneshot::channel::<()>();
        // One thread, as `cairn serve` runs it: the peer readers and the
        // node loop take turns on it.
        let node = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(serve(
                options,
                move |bound| bound_tx.send(bound).unwrap(),
                async move {
                    let _ = stopped.await;
                },
            ))
        });
        let bound = bound_rx.recv_timeout(Duration::from_secs(20)).unwrap();

        // Node b joins and then never answers: every write waits for its ack.
        let (writes_tx, writes) = std_mpsc::channel();
        let b_addr = silent_peer(writes_tx);
        let mut as_b = TcpStream::connect(bound.peer).unwrap();
        as_b.write_all(&frame(&Message::Hello {
            node: NodeId::new("b").unwrap(),
        }))
        .unwrap();
        as_b.write_all(&frame(&Message::Member(MemberMessage::JoinRequest {
            member: Member {
                http: "127.0.0.1:9".into(),
                peer: b_addr.to_string(),
                epoch: 1,
                stamp: 1,
            },
            fresh: true,
            tables: Vec::new(),
        })))
        .unwrap();
        wait_until("b is a member", || {
            http(bound.http, "GET", "/cluster", "").contains(r#""id":"b""#)
        });
        let created = http(bound.http, "PUT", "/tables/t", r#"{"n":2,"w":2}"#);
        assert!(created.starts_with("HTTP/1.1 200"), "{created}");

        let put = std::thread::spawn(move || http(bound.http, "PUT", "/tables/t/keys/k?w=2", "v"));
        writes
            .recv_timeout(Duration::from_secs(20))
            .expect("the write reached b");

        // From now on pings arrive without pause on 64 connections.
        let flooding = Arc::new(AtomicBool::new(true));
        let flooders: Vec<_> = (0..FLOOD_CONNECTIONS)
            .map(|i| {
                let flooding = flooding.clone();
                std::thread::spawn(move || {
                    let mut stream = TcpStream::connect(bound.peer).unwrap();
                    let name = NodeId::new(&format!("flood{i}")).unwrap();
                    stream
                        .write_all(&frame(&Message::Hello { node: name }))
                        .unwrap();
                    let pings =
                        frame(&Message::Member(MemberMessage::Ping)).repeat(PINGS_PER_WRITE);
                    let mut sent = 0usize;
                    while flooding.load(Ordering::Relaxed) {
                        if stream.write_all(&pings).is_err() {
                            break;
                        }
                        sent += PINGS_PER_WRITE;
                    }
                    sent
                })
            })
            .collect();

        let answer = put.join().unwrap();
        flooding.store(false, Ordering::Relaxed);
        // Stopped first: its closed sockets release flooders blocked in a write.
        let _ = stop_node.send(());
        node.join().unwrap().unwrap();
        let pings: usize = flooders.into_iter().map(|f| f.join().unwrap()).sum();
        eprintln!("{pings} pings sent while the write waited");
        let _ = std::fs::remove_dir_all(&dir);

        assert!(
            pings > 2 * EVENT_QUEUE_MAX,
            "the flood was too small to prove anything: {pings} pings"
        );
        assert!(
            answer.starts_with("HTTP/1.1 503") && answer.contains("quorum not reached"),
            "the node's deadline did not fire under the backlog: {answer}"
        );
    }
}
