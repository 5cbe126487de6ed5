//! Security (issue 14): who may reach what. Peers prove the cluster secret
//! before any frame counts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn::core::codec::encode_frame;
use cairn::core::msg::Message;
use cairn::core::peer_auth::{ClusterSecret, AUTH_MAGIC, FRAME_TAG_BYTES, NONCE_BYTES};
use cairn::core::types::NodeId;
use cairn_tests::{temp_dir, wait_until, Cluster, NodeProcess};
use serde_json::Value;

const SECRET: &str = "a cluster secret for these tests";

fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n")).unwrap();
    path
}

/// What a node knows of the cluster that an intruder would change: the
/// members with their status and partitions, and the tables.
fn state(node: &NodeProcess) -> (Vec<(String, String, u64)>, Value) {
    let status = node.cluster();
    let members = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["status"].as_str().unwrap().to_owned(),
                m["partitions"].as_u64().unwrap(),
            )
        })
        .collect();
    (members, node.call("GET", "/tables", &[], b"").json())
}

fn refused(node: &NodeProcess) -> u64 {
    node.cluster()["peer_links"]["refused"].as_u64().unwrap()
}

#[test]
fn nodes_without_the_secret_or_with_another_cannot_join_gossip_or_write() {
    let secrets = temp_dir("secrets");
    let good = secret_file(&secrets, "good", SECRET);
    let bad = secret_file(&secrets, "bad", "another secret, just as long");
    let good_arg = good.to_string_lossy().into_owned();
    let cluster = Cluster::start("peer-secret", 3, &["--cluster-secret-file", &good_arg]);
    cluster.create_table("kv", r#"{"n":3,"r":2,"w":2,"merge":"lww"}"#);
    let node1 = &cluster.nodes[0];
    assert_eq!(node1.cluster()["peer_links"]["authenticated"], true);
    assert_eq!(node1.call("PUT", "/tables/kv/keys/k", &[], b"v1").status, 204);
    let before: Vec<_> = cluster.nodes.iter().map(state).collect();
    let refused_before: u64 = cluster.nodes.iter().map(refused).sum();

    let bad_arg = bad.to_string_lossy().into_owned();
    let seeds = vec![node1.peer.clone()];
    let root = temp_dir("intruders");
    let open = NodeProcess::start(
        "intruder",
        &root.join("intruder"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &seeds,
        &[],
    );
    let wrong = NodeProcess::start(
        "wrong",
        &root.join("wrong"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &seeds,
        &["--cluster-secret-file", &bad_arg],
    );
    // Both keep trying to join; each attempt is refused and counted.
    wait_until(
        Duration::from_secs(20),
        "the members to refuse both intruders",
        || (cluster.nodes.iter().map(refused).sum::<u64>() >= refused_before + 4).then_some(()),
    );
    wait_until(
        Duration::from_secs(20),
        "the node with another secret to refuse the members' proof",
        || (refused(&wrong) > 0).then_some(()),
    );
    // Neither got in: the members' view, tables and data are as before,
    // and neither intruder learnt of the cluster.
    let after: Vec<_> = cluster.nodes.iter().map(state).collect();
    assert_eq!(before, after);
    for intruder in [&open, &wrong] {
        let members = intruder.cluster()["members"].as_array().cloned().unwrap_or_default();
        assert!(
            members.iter().all(|m| m["id"] == intruder.id.as_str()),
            "{} sees {members:?}",
            intruder.id
        );
    }
    let read = node1.call("GET", "/tables/kv/keys/k", &[], b"");
    assert_eq!((read.status, read.text()), (200, "v1".to_owned()));
    // The logs name the refusal, never the secret.
    let log = std::fs::read_to_string(node1.data_dir.with_extension("log")).unwrap();
    assert!(log.contains("refused"), "{log}");
    assert!(!log.contains(SECRET));
}

/// Runs the dialer's side of a handshake by hand, with `proof` in place
/// of the right one when given; returns the stream, the nonces and the
/// proof sent.
fn handshake(
    peer: &str,
    secret: &ClusterSecret,
    mine: [u8; NONCE_BYTES],
    proof: Option<[u8; 32]>,
) -> (TcpStream, [u8; NONCE_BYTES], [u8; 32]) {
    let mut stream = TcpStream::connect(peer).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(&AUTH_MAGIC).unwrap();
    stream.write_all(&mine).unwrap();
    let mut answer = [0u8; 64];
    stream.read_exact(&mut answer).unwrap();
    let theirs: [u8; NONCE_BYTES] = answer[..32].try_into().unwrap();
    assert!(secret.acceptor_proof_matches(&mine, &theirs, &answer[32..]));
    let proof = proof.unwrap_or_else(|| secret.dialer_proof(&mine, &theirs));
    stream.write_all(&proof).unwrap();
    (stream, theirs, proof)
}

/// Whether the node closed `stream` (the read ends or is reset) within
/// its 10 s read timeout.
fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn replayed_handshakes_and_altered_frames_are_refused() {
    let secrets = temp_dir("secrets");
    let good = secret_file(&secrets, "good", SECRET);
    let good_arg = good.to_string_lossy().into_owned();
    let cluster = Cluster::start("peer-replay", 1, &["--cluster-secret-file", &good_arg]);
    let node = &cluster.nodes[0];
    let secret = ClusterSecret::from_text(SECRET).unwrap();
    let start = refused(node);

    // An honest handshake, recorded.
    let nonce = [7u8; NONCE_BYTES];
    let (honest, first_challenge, recorded) = handshake(&node.peer, &secret, nonce, None);
    drop(honest);
    // Replayed: the same opening and the recorded proof meet a new challenge.
    let (mut replay, second_challenge, _) =
        handshake(&node.peer, &secret, nonce, Some(recorded));
    assert_ne!(first_challenge, second_challenge);
    assert!(closed(&mut replay), "the replay was not closed");
    wait_until(Duration::from_secs(10), "the replay to be counted", || {
        (refused(node) == start + 1).then_some(())
    });

    // An authenticated link whose frame's tag is wrong is closed too.
    let (mut link, _, _) = handshake(&node.peer, &secret, [9u8; NONCE_BYTES], None);
    let mut frame = Vec::new();
    let hello = Message::Hello {
        node: NodeId::new("forger").unwrap(),
    };
    encode_frame(&hello, &mut frame).unwrap();
    frame.extend_from_slice(&[0u8; FRAME_TAG_BYTES]);
    link.write_all(&frame).unwrap();
    assert!(closed(&mut link), "the forged frame's link was not closed");
    wait_until(Duration::from_secs(10), "the forged frame to be counted", || {
        (refused(node) == start + 2).then_some(())
    });
    // A plain hello, as a node without a secret sends it, is refused as well.
    let mut plain = TcpStream::connect(&node.peer).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut frame = Vec::new();
    encode_frame(&hello, &mut frame).unwrap();
    plain.write_all(&frame).unwrap();
    assert!(closed(&mut plain));
    wait_until(Duration::from_secs(10), "the plain hello to be counted", || {
        (refused(node) == start + 3).then_some(())
    });
    // The node serves on.
    assert_eq!(node.call("GET", "/health", &[], b"").status, 200);
}
