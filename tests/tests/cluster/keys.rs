//! Key semantics, faults and membership over real `cairn serve` processes.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use cairn_tests::{wait_until, Cluster};

const KV: &str = r#"{"n":3,"r":2,"w":2,"merge":"lww"}"#;
const EVENTS: &str = r#"{"n":3,"r":2,"w":2,"merge":"siblings"}"#;
/// For one-node clusters: one replica, so quorums are met without the others.
const SOLO: &str = r#"{"n":1,"r":1,"w":1,"merge":"lww"}"#;

#[test]
fn keys_follow_the_spec_end_to_end() {
    let cluster = Cluster::start("semantics", 3, &["--value-bytes-max", "4096"]);
    let [a, b, c] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    cluster.create_table("kv", KV);

    // A write through one node is read through another, with its content type.
    let put = a.call(
        "PUT",
        "/tables/kv/keys/alice",
        &[("content-type", "text/plain")],
        b"hello",
    );
    assert_eq!(put.status, 204, "{}", put.text());
    assert!(put.context().is_some());
    let got = b.call("GET", "/tables/kv/keys/alice", &[], b"");
    assert_eq!((got.status, got.text().as_str()), (200, "hello"));
    assert_eq!(got.header("content-type"), Some("text/plain"));
    assert!(got.context().is_some());

    // Without a Content-Type a value is application/octet-stream.
    let raw = c.call("PUT", "/tables/kv/keys/raw", &[], b"\x00\x01");
    assert_eq!(raw.status, 204);
    let got = a.call("GET", "/tables/kv/keys/raw", &[], b"");
    assert_eq!(got.header("content-type"), Some("application/octet-stream"));

    // Keys are percent-decoded; a slash inside a key is fine.
    assert_eq!(
        a.call("PUT", "/tables/kv/keys/a%2Fb%20c", &[], b"x").status,
        204
    );
    assert_eq!(
        b.call("GET", "/tables/kv/keys/a%2Fb%20c", &[], b"").text(),
        "x"
    );

    // lww: a later concurrent write replaces the earlier one.
    assert_eq!(
        b.call("PUT", "/tables/kv/keys/alice", &[], b"second")
            .status,
        204
    );
    assert_eq!(
        c.call("GET", "/tables/kv/keys/alice", &[], b"").text(),
        "second"
    );

    // Deleting without a context removes what a quorum read sees.
    let deleted = c.call("DELETE", "/tables/kv/keys/alice", &[], b"");
    assert_eq!(deleted.status, 204);
    let gone = a.call("GET", "/tables/kv/keys/alice", &[], b"");
    assert_eq!(gone.status, 404);
    assert!(
        gone.context().is_some(),
        "a tombstone answers with a context"
    );
    assert_eq!(a.call("GET", "/tables/kv/keys/never", &[], b"").status, 404);

    // Errors.
    assert_eq!(a.call("GET", "/tables/nope/keys/k", &[], b"").status, 404);
    assert_eq!(
        a.call(
            "PUT",
            "/tables/kv/keys/k",
            &[("x-cairn-context", "garbage!")],
            b"v"
        )
        .status,
        400
    );
    // The context cap, exactly: 2,048 characters of valid base64url are read
    // (and refused for what they say), 2,050 are refused for their length.
    let at_cap = a.call(
        "PUT",
        "/tables/kv/keys/k",
        &[("x-cairn-context", &"A".repeat(2048))],
        b"v",
    );
    assert_eq!(at_cap.status, 400);
    let reason = at_cap.json()["error"].as_str().unwrap_or("").to_owned();
    assert!(reason.contains("token version"), "{reason}");
    let over_cap = a.call(
        "PUT",
        "/tables/kv/keys/k",
        &[("x-cairn-context", &"A".repeat(2050))],
        b"v",
    );
    assert_eq!(over_cap.status, 400);
    let reason = over_cap.json()["error"].as_str().unwrap_or("").to_owned();
    assert!(reason.contains("longer than 2048"), "{reason}");

    // A context is bound to its key: one read from another key is refused
    // and the key keeps its value.
    assert_eq!(
        b.call("PUT", "/tables/kv/keys/bob", &[], b"bob's").status,
        204
    );
    let other = a.call("GET", "/tables/kv/keys/a%2Fb%20c", &[], b"");
    let foreign = other.context().unwrap().to_owned();
    let refused = a.call(
        "PUT",
        "/tables/kv/keys/bob",
        &[("x-cairn-context", &foreign)],
        b"v",
    );
    assert_eq!(refused.status, 400);
    let reason = refused.json()["error"].as_str().unwrap_or("").to_owned();
    assert!(reason.contains("another table or key"), "{reason}");
    let refused = a.call(
        "DELETE",
        "/tables/kv/keys/bob",
        &[("x-cairn-context", &foreign)],
        b"",
    );
    assert_eq!(refused.status, 400);
    assert_eq!(
        c.call("GET", "/tables/kv/keys/bob", &[], b"").text(),
        "bob's"
    );

    // SPEC's longest key (1,024 bytes; LMDB's default limit is 511) is
    // stored on every replica, and every node stays up.
    let longest = format!("/tables/kv/keys/{}", "k".repeat(1024));
    assert_eq!(
        a.call("PUT", &format!("{longest}?w=3"), &[], b"long")
            .status,
        204
    );
    for node in [a, b, c] {
        assert_eq!(
            node.call("GET", &format!("{longest}?r=1"), &[], b"").text(),
            "long"
        );
        assert_eq!(node.call("GET", "/health", &[], b"").status, 200);
    }
    // The other boundaries: an empty key and 1,025 bytes are refused.
    assert_eq!(a.call("PUT", "/tables/kv/keys/", &[], b"v").status, 400);
    let too_long = format!("/tables/kv/keys/{}", "k".repeat(1025));
    assert_eq!(a.call("PUT", &too_long, &[], b"v").status, 400);
    // Removing a node that is no member: a clear 404; a body without the
    // node: 400.
    let remove = a.call("POST", "/cluster/remove", &[], br#"{"node":"x"}"#);
    assert_eq!(remove.status, 404);
    assert!(remove.json()["error"]
        .as_str()
        .unwrap_or("")
        .contains("no member x"));
    let shapeless = a.call("POST", "/cluster/remove", &[], br#"{"id":"x"}"#);
    assert_eq!(shapeless.status, 400);
    assert_eq!(
        a.call(
            "GET",
            &format!("/tables/kv/keys/{}", "k".repeat(1025)),
            &[],
            b""
        )
        .status,
        400
    );
    assert_eq!(a.call("GET", "/tables/kv/keys/k?r=0", &[], b"").status, 400);
    assert_eq!(a.call("GET", "/tables/kv/keys/k?r=4", &[], b"").status, 400);
    assert_eq!(
        a.call("PUT", "/tables/kv/keys/k?w=9", &[], b"v").status,
        400
    );
    assert_eq!(
        a.call("PUT", "/tables/kv/keys/k?w=3", &[], b"v").status,
        204
    );
    let too_big = a.call("PUT", "/tables/kv/keys/big", &[], &[7u8; 4097]);
    assert_eq!(too_big.status, 413);
    assert!(too_big.json()["error"].is_string());
    assert_eq!(
        a.call("GET", "/tables/kv/keys/big", &[], b"").status,
        404,
        "nothing stored"
    );

    // Tables.
    assert_eq!(a.call("PUT", "/tables/kv", &[], br#"{"n":5}"#).status, 409);
    assert_eq!(
        a.call("PUT", "/tables/bad", &[], br#"{"n":2,"r":3}"#)
            .status,
        400
    );
    assert_eq!(a.call("PUT", "/tables/bad", &[], b"{not json").status, 400);
    assert_eq!(a.call("PUT", "/tables/Bad", &[], b"{}").status, 400);
    let changed = a.call("PUT", "/tables/kv", &[], br#"{"r":1}"#).json();
    assert_eq!(
        (
            changed["n"].as_u64(),
            changed["r"].as_u64(),
            changed["w"].as_u64()
        ),
        (Some(3), Some(1), Some(2))
    );
    assert_eq!(b.call("GET", "/tables/missing", &[], b"").status, 404);
    let list = c.call("GET", "/tables", &[], b"").json();
    assert!(list["tables"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "kv"));

    // Preference lists, health, cluster view.
    let preflist = b.call("GET", "/tables/kv/preflist/alice", &[], b"").json();
    assert_eq!(preflist["primaries"].as_array().unwrap().len(), 3);
    assert_eq!(preflist["fallbacks"].as_array().unwrap().len(), 0);
    assert_eq!(a.call("GET", "/health", &[], b"").text(), "ok");
    let status = a.cluster();
    assert_eq!(status["node"], "node1");
    let partitions: u64 = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["partitions"].as_u64().unwrap())
        .sum();
    assert_eq!(partitions, 256);
}

#[test]
fn siblings_tables_keep_concurrent_writes_and_contexts_supersede_exactly() {
    let cluster = Cluster::start("siblings", 3, &[]);
    let [a, b, c] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    cluster.create_table("events", EVENTS);

    // Two blind writes through the same coordinator become siblings.
    let first = a.call("PUT", "/tables/events/keys/k", &[], b"one");
    assert_eq!(
        a.call("PUT", "/tables/events/keys/k", &[], b"two").status,
        204
    );
    let read = b.call("GET", "/tables/events/keys/k", &[], b"");
    assert_eq!(read.sibling_values(), vec!["one", "two"]);
    assert_eq!(read.json()["context"].as_str(), read.context());

    // A write with the context of "one" supersedes exactly "one".
    let first_context = first.context().unwrap().to_owned();
    let third = c.call(
        "PUT",
        "/tables/events/keys/k",
        &[("x-cairn-context", &first_context)],
        b"three",
    );
    assert_eq!(third.status, 204);
    assert_eq!(
        a.call("GET", "/tables/events/keys/k", &[], b"")
            .sibling_values(),
        vec!["three", "two"]
    );

    // The context a PUT returns covers only what it covered plus the new version:
    // writing it back supersedes "three" but not "two".
    let back = third.context().unwrap().to_owned();
    assert_eq!(
        b.call(
            "PUT",
            "/tables/events/keys/k",
            &[("x-cairn-context", &back)],
            b"four"
        )
        .status,
        204
    );
    assert_eq!(
        c.call("GET", "/tables/events/keys/k", &[], b"")
            .sibling_values(),
        vec!["four", "two"]
    );

    // Writing back the context of a 300 replaces every sibling.
    let read = a.call("GET", "/tables/events/keys/k", &[], b"");
    let all = read.context().unwrap().to_owned();
    assert_eq!(
        a.call(
            "PUT",
            "/tables/events/keys/k",
            &[("x-cairn-context", &all)],
            b"merged"
        )
        .status,
        204
    );
    let single = b.call("GET", "/tables/events/keys/k", &[], b"");
    assert_eq!((single.status, single.text().as_str()), (200, "merged"));

    // A delete concurrent with a new value: the value survives (add wins).
    let ctx = single.context().unwrap().to_owned();
    assert_eq!(
        a.call(
            "DELETE",
            "/tables/events/keys/k",
            &[("x-cairn-context", &ctx)],
            b""
        )
        .status,
        204
    );
    assert_eq!(
        b.call("PUT", "/tables/events/keys/k", &[], b"concurrent")
            .status,
        204
    );
    let after = c.call("GET", "/tables/events/keys/k", &[], b"");
    assert_eq!((after.status, after.text().as_str()), (200, "concurrent"));
}

#[test]
fn quorums_fail_with_503_while_two_nodes_are_paused_and_recover() {
    let cluster = Cluster::start("pause", 3, &["--request-timeout-ms", "1000"]);
    let [a, b, c] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    cluster.create_table("events", EVENTS);
    assert_eq!(
        a.call("PUT", "/tables/events/keys/k", &[], b"before")
            .status,
        204
    );

    b.pause();
    c.pause();
    let put = a.call("PUT", "/tables/events/keys/k", &[], b"during");
    assert_eq!(put.status, 503, "{}", put.text());
    let body = put.json();
    assert_eq!(
        (
            body["error"].as_str(),
            body["needed"].as_u64(),
            body["acked"].as_u64()
        ),
        (Some("quorum not reached"), Some(2), Some(1))
    );
    assert_eq!(a.call("GET", "/tables/events/keys/k", &[], b"").status, 503);
    assert_eq!(
        a.call("GET", "/tables/events/keys/k?r=1", &[], b"").status,
        300,
        "r=1 is met locally: before and during"
    );
    wait_until(
        Duration::from_secs(10),
        "paused nodes to be reported down",
        || {
            let members = a.cluster()["members"].as_array().unwrap().clone();
            (members.iter().filter(|m| m["status"] == "down").count() == 2).then_some(())
        },
    );

    b.resume();
    c.resume();
    wait_until(Duration::from_secs(10), "writes to succeed again", || {
        (a.call("PUT", "/tables/events/keys/after", &[], b"x").status == 204).then_some(())
    });
    // The write that got 503 may still exist, as in Dynamo: it was stored on node1.
    // (Read with a deadline: the resumed nodes first work through what they buffered.)
    let values = wait_until(Duration::from_secs(5), "an r=3 read after resume", || {
        let read = b.call("GET", "/tables/events/keys/k?r=3", &[], b"");
        (read.status == 300).then(|| read.sibling_values())
    });
    assert_eq!(values, vec!["before", "during"]);
}

#[test]
fn data_survives_kill_9_and_restart_of_every_node() {
    let mut cluster = Cluster::start("restart", 3, &[]);
    cluster.create_table("events", EVENTS);
    for i in 0..60 {
        let node = &cluster.nodes[i % 3];
        let reply = node.call(
            "PUT",
            &format!("/tables/events/keys/k{i}"),
            &[],
            format!("v{i}").as_bytes(),
        );
        assert_eq!(reply.status, 204);
    }
    let before = cluster.nodes[0].call("GET", "/tables/events/keys/k0", &[], b"");
    for node in &mut cluster.nodes {
        node.restart();
    }
    cluster.wait_formed();
    for i in 0..60 {
        let reply =
            cluster.nodes[(i + 1) % 3].call("GET", &format!("/tables/events/keys/k{i}"), &[], b"");
        assert_eq!(
            (reply.status, reply.text()),
            (200, format!("v{i}")),
            "key k{i}"
        );
    }
    // After an unclean restart the node mints under a new epoch: a blind write
    // through it is a sibling of what it wrote before, never a silent overwrite.
    assert_eq!(
        cluster.nodes[0]
            .call("PUT", "/tables/events/keys/k0", &[], b"again")
            .status,
        204
    );
    let values = cluster.nodes[1]
        .call("GET", "/tables/events/keys/k0", &[], b"")
        .sibling_values();
    assert_eq!(values, vec!["again", "v0"]);
    assert!(before.context().is_some());

    // One key written through many crashes (each a new epoch) keeps a small context.
    let mut context = String::new();
    for round in 0..8 {
        cluster.nodes[round % 3].restart();
        cluster.wait_formed();
        let headers: Vec<(&str, &str)> = if context.is_empty() {
            vec![]
        } else {
            vec![("x-cairn-context", &context)]
        };
        let reply = cluster.nodes[round % 3].call(
            "PUT",
            "/tables/events/keys/epochs",
            &headers,
            format!("r{round}").as_bytes(),
        );
        assert_eq!(reply.status, 204, "{}", reply.text());
        context = reply.context().unwrap().to_owned();
    }
    let last = cluster.nodes[0].call("GET", "/tables/events/keys/epochs", &[], b"");
    assert_eq!(last.text(), "r7");
    assert!(
        last.context().unwrap().len() < 400,
        "context of {} chars",
        last.context().unwrap().len()
    );
}

#[test]
fn requests_for_keys_a_node_does_not_own_are_forwarded() {
    let cluster = Cluster::start("forward", 3, &[]);
    cluster.create_table("single", r#"{"n":1,"r":1,"w":1}"#);
    for i in 0..12 {
        let key = format!("/tables/single/keys/k{i}");
        assert_eq!(
            cluster.nodes[i % 3].call("PUT", &key, &[], b"v").status,
            204
        );
        for node in &cluster.nodes {
            assert_eq!(node.call("GET", &key, &[], b"").text(), "v");
        }
    }
}

#[test]
fn garbage_on_the_peer_port_closes_that_connection_only() {
    let cluster = Cluster::start("garbage", 3, &[]);
    cluster.create_table("events", EVENTS);
    let target = &cluster.nodes[1];
    for payload in [
        &b"\xff\xff\xff\xffjunk"[..],
        b"\x00\x00\x00\x05\x01\xff\xff\xff\xff",
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(&target.peer).unwrap();
        stream.write_all(payload).unwrap();
    }
    assert_eq!(target.call("GET", "/health", &[], b"").text(), "ok");
    assert_eq!(
        target
            .call("PUT", "/tables/events/keys/k?w=3", &[], b"v")
            .status,
        204
    );
    assert_eq!(
        cluster.nodes[0]
            .call("GET", "/tables/events/keys/k?r=3", &[], b"")
            .text(),
        "v"
    );
}

#[test]
fn announced_frame_lengths_cost_no_memory_before_their_bytes_arrive() {
    use std::io::Read;
    let cluster = Cluster::start("announced", 3, &[]);
    cluster.create_table("events", EVENTS);
    let target = &cluster.nodes[1];
    let before = target.resident_kib().unwrap();
    // Sixteen connections each announce a 64 MiB first frame and send
    // nothing more: a hello is small, so each is refused at once.
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut stream = TcpStream::connect(&target.peer).unwrap();
        stream.write_all(&(64u32 << 20).to_be_bytes()).unwrap();
        stream.write_all(&[1]).unwrap();
        held.push(stream);
    }
    for stream in &mut held {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut byte = [0u8; 1];
        let read = stream.read(&mut byte);
        assert!(
            matches!(read, Ok(0))
                || read
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "the connection was kept open: {read:?}"
        );
    }
    let after = target.resident_kib().unwrap();
    assert!(
        after < before + 64 * 1024,
        "resident memory grew from {before} KiB to {after} KiB"
    );
    assert_eq!(
        target
            .call("PUT", "/tables/events/keys/k?w=3", &[], b"v")
            .status,
        204
    );
}

#[test]
fn a_connection_that_never_finishes_its_headers_is_closed() {
    use std::io::Read;
    let cluster = Cluster::start("slow-headers", 1, &[]);
    let node = &cluster.nodes[0];
    let mut stream = TcpStream::connect(&node.http).unwrap();
    // Half a request line, then nothing: it must not hold the slot forever.
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 512];
    let read = stream.read(&mut buf);
    assert!(
        read.is_ok() && started.elapsed() < Duration::from_secs(20),
        "the connection was kept open: {read:?}"
    );
    assert_eq!(node.call("GET", "/health", &[], b"").status, 200);
}

#[test]
fn connections_beyond_the_cap_are_closed_and_the_node_recovers() {
    use std::io::Read;
    // A small cap, so the test needs few descriptors.
    let cluster = Cluster::start("conn-cap", 1, &["--http-connections-max", "16"]);
    let node = &cluster.nodes[0];
    // 16 idle connections fill the node's HTTP connection cap.
    let idle: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(&node.http).unwrap())
        .collect();
    // One more is closed at once rather than held (descriptors stay for
    // storage and peers).
    wait_until(
        Duration::from_secs(10),
        "a connection over the cap to be closed",
        || {
            let mut extra = TcpStream::connect(&node.http).ok()?;
            extra
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let _ = extra.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut buf = [0u8; 64];
            match extra.read(&mut buf) {
                Ok(0) => Some(()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(()),
                _ => None,
            }
        },
    );
    drop(idle);
    wait_until(Duration::from_secs(15), "the node to serve again", || {
        let health = cairn_tests::try_call("GET", &node.url("/health"), &[], b"").ok()?;
        (health.status == 200).then_some(())
    });
}

#[test]
fn a_node_restarted_with_its_data_dir_keeps_its_membership() {
    let mut cluster = Cluster::start("membership", 2, &[]);
    cluster.create_table("events", EVENTS);
    let before = cluster.nodes[1].cluster();
    cluster.nodes[1].restart();
    cluster.wait_formed();
    let after = cluster.nodes[1].cluster();
    assert_eq!(
        before["members"].as_array().unwrap().len(),
        after["members"].as_array().unwrap().len()
    );
    assert_eq!(
        cluster.nodes[1]
            .call("GET", "/tables/events", &[], b"")
            .status,
        200,
        "tables persist"
    );
}

#[test]
fn a_wiped_node_is_refused_while_its_id_is_fresh_then_resumes_its_partitions() {
    let mut cluster = Cluster::start("wiped", 3, &[]);
    cluster.create_table("events", EVENTS);
    for i in 0..20 {
        let reply =
            cluster.nodes[0].call("PUT", &format!("/tables/events/keys/k{i}?w=3"), &[], b"v");
        assert_eq!(reply.status, 204);
    }
    let partitions = |cluster: &Cluster| {
        cluster.nodes[0].cluster()["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == "node3")
            .unwrap()["partitions"]
            .clone()
    };
    let before = partitions(&cluster);
    cluster.nodes[2].wipe();
    cluster.nodes[2].start_again();
    let status = wait_until(
        Duration::from_secs(10),
        "the wiped node to be refused",
        || cluster.nodes[2].exit_status(),
    );
    assert!(
        !status.success(),
        "a wiped node whose id answered within 10 s must not start"
    );
    // Once the id has been silent for 10 s, the wiped node resumes its membership.
    cluster.nodes[2].start_again_until_admitted(3);
    cluster.wait_formed();
    assert_eq!(partitions(&cluster), before, "same partitions");
    // Its data is back (through anti-entropy or, for what it has not reached yet, read repair).
    for i in 0..20 {
        let reply = cluster.nodes[2].call("GET", &format!("/tables/events/keys/k{i}"), &[], b"");
        assert_eq!((reply.status, reply.text().as_str()), (200, "v"));
    }
    // A write through the wiped node is a new version, not a reuse of an old dot.
    assert_eq!(
        cluster.nodes[2]
            .call("PUT", "/tables/events/keys/k0?w=3", &[], b"new")
            .status,
        204
    );
    let values = cluster.nodes[0]
        .call("GET", "/tables/events/keys/k0?r=3", &[], b"")
        .sibling_values();
    assert_eq!(values, vec!["new", "v"]);
}

#[test]
fn large_values_in_a_blob_table_survive_a_restart_of_every_node() {
    let mut cluster = Cluster::start("blobs", 3, &[]);
    cluster.create_table(
        "files",
        r#"{"n":3,"r":2,"w":2,"merge":"siblings","storage":"blob"}"#,
    );
    let large: Vec<u8> = (0..(2 << 20)).map(|i: u32| (i % 251) as u8).collect();
    assert_eq!(
        cluster.nodes[0]
            .call("PUT", "/tables/files/keys/big?w=3", &[], &large)
            .status,
        204
    );
    assert_eq!(
        cluster.nodes[1]
            .call("PUT", "/tables/files/keys/small", &[], b"tiny")
            .status,
        204
    );
    for node in &mut cluster.nodes {
        node.restart();
    }
    cluster.wait_formed();
    let read = cluster.nodes[2].call("GET", "/tables/files/keys/big", &[], b"");
    assert_eq!(read.status, 200);
    assert!(read.body == large, "the 2 MiB value came back intact");
    assert_eq!(
        cluster.nodes[0]
            .call("GET", "/tables/files/keys/small", &[], b"")
            .text(),
        "tiny"
    );
    let blobs = std::fs::read_dir(cluster.nodes[0].data_dir.join("blobs"))
        .unwrap()
        .count();
    assert!(blobs >= 1, "values live in blob files");
}

#[test]
fn a_join_to_a_wrong_seed_leaves_the_node_serving_and_a_joiner_keeps_the_clusters_tables() {
    let cluster = Cluster::start("joined", 3, &[]);
    cluster.create_table("events", EVENTS);
    let root = cairn_tests::temp_dir("solo");
    let node = &cairn_tests::NodeProcess::start(
        "solo",
        &root.join("solo"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[],
        &[],
    );
    // Its own `events`, created later: one replica, in memory.
    let created = node.call(
        "PUT",
        "/tables/events",
        &[],
        br#"{"n":1,"r":1,"w":1,"storage":"memory"}"#,
    );
    assert_eq!(created.status, 200, "{}", created.text());
    assert_eq!(
        node.call("PUT", "/tables/events/keys/k", &[], b"v").status,
        204
    );

    // Nothing listens at the seed: the node goes on serving its own cluster.
    let join = node.call("POST", "/cluster/join", &[], br#"{"seed":"127.0.0.1:1"}"#);
    assert_eq!(join.status, 202, "{}", join.text());
    let status = node.cluster();
    assert_eq!(status["join"]["state"], "joining", "{status}");
    assert_eq!(status["members"].as_array().map(Vec::len), Some(1));
    let read = node.call("GET", "/tables/events/keys/k", &[], b"");
    assert_eq!((read.status, read.text().as_str()), (200, "v"));

    // A join to the real cluster: the cluster's definition of `events` wins everywhere.
    let body = format!(r#"{{"seed":"{}"}}"#, cluster.nodes[0].peer);
    assert_eq!(
        node.call("POST", "/cluster/join", &[], body.as_bytes())
            .status,
        202
    );
    wait_until(Duration::from_secs(10), "the joiner to join", || {
        let members = node.cluster()["members"].as_array()?.len();
        (members == 4).then_some(())
    });
    for member in cluster.nodes.iter().chain([node]) {
        wait_until(Duration::from_secs(2), "the table config to settle", || {
            let config = member.call("GET", "/tables/events", &[], b"").json();
            (config["n"] == 3 && config["storage"] == "lmdb").then_some(())
        });
    }
}

#[test]
fn bodies_are_admitted_against_a_budget_before_reading_and_a_stalled_body_times_out() {
    // Values up to 64 MiB: eight announced bodies take the whole 512 MiB
    // budget for bodies in flight.
    let cluster = Cluster::start("body-budget", 1, &["--value-bytes-max", "67108864"]);
    cluster.create_table("kv", SOLO);
    let node = &cluster.nodes[0];
    let announce = |stream: &mut TcpStream, key: &str, len: usize| {
        let head = format!(
            "PUT /tables/kv/keys/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(b"only the first bytes").unwrap();
    };
    let mut stalled: Vec<TcpStream> = (0..8)
        .map(|i| {
            let mut stream = TcpStream::connect(&node.http).unwrap();
            announce(&mut stream, &format!("big{i}"), 64 * 1024 * 1024);
            stream
        })
        .collect();
    // Once they are admitted, a small body finds no room and is refused at
    // once, before the node reads it; other requests still work.
    let refused = wait_until(Duration::from_secs(10), "the budget to be taken", || {
        let put = node.call("PUT", "/tables/kv/keys/small", &[], b"v");
        (put.status == 503).then_some(put)
    });
    assert!(refused.text().contains("overloaded"), "{}", refused.text());
    assert_eq!(node.call("GET", "/health", &[], b"").status, 200);
    assert_eq!(
        node.call("GET", "/tables/kv/keys/small", &[], b"").status,
        404
    );
    // A body that stops arriving is answered 408 after 30 s, which gives
    // its share of the budget back.
    for stream in &mut stalled {
        let reply = cairn_tests::read_head(stream, Duration::from_secs(45));
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    }
    drop(stalled);
    let put = node.call("PUT", "/tables/kv/keys/small", &[], b"v");
    assert_eq!(put.status, 204, "{}", put.text());
    for i in 0..8 {
        let got = node.call("GET", &format!("/tables/kv/keys/big{i}"), &[], b"");
        assert_eq!(got.status, 404, "a partial body is never stored");
    }
}
