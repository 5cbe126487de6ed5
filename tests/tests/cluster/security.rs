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

const SECRET: &str = "a cluster secret for these tests, long enough";

/// A scratch directory removed when the test passes (declared before the
/// nodes that use it, so it outlives them).
struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Scratch {
        Scratch(temp_dir(label))
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

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
    let secrets = Scratch::new("secrets");
    let good = secret_file(&secrets, "good", SECRET);
    let bad = secret_file(
        &secrets,
        "bad",
        "another cluster secret, just as long as that",
    );
    let good_arg = good.to_string_lossy().into_owned();
    let cluster = Cluster::start("peer-secret", 3, &["--cluster-secret-file", &good_arg]);
    cluster.create_table("kv", r#"{"n":3,"r":2,"w":2,"merge":"lww"}"#);
    let node1 = &cluster.nodes[0];
    assert_eq!(node1.cluster()["peer_links"]["authenticated"], true);
    assert_eq!(
        node1.call("PUT", "/tables/kv/keys/k", &[], b"v1").status,
        204
    );
    let before: Vec<_> = cluster.nodes.iter().map(state).collect();
    let refused_before: u64 = cluster.nodes.iter().map(refused).sum();

    let bad_arg = bad.to_string_lossy().into_owned();
    let seeds = vec![node1.peer.clone()];
    let root = Scratch::new("intruders");
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
        let members = intruder.cluster()["members"]
            .as_array()
            .cloned()
            .unwrap_or_default();
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
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
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
    let secrets = Scratch::new("secrets");
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
    let (mut replay, second_challenge, _) = handshake(&node.peer, &secret, nonce, Some(recorded));
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
    wait_until(
        Duration::from_secs(10),
        "the forged frame to be counted",
        || (refused(node) == start + 2).then_some(()),
    );
    // A plain hello, as a node without a secret sends it, is refused as well.
    let mut plain = TcpStream::connect(&node.peer).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut frame = Vec::new();
    encode_frame(&hello, &mut frame).unwrap();
    plain.write_all(&frame).unwrap();
    assert!(closed(&mut plain));
    wait_until(
        Duration::from_secs(10),
        "the plain hello to be counted",
        || (refused(node) == start + 3).then_some(()),
    );
    // The node serves on; a SIGHUP (a log rotation's, say) does not stop
    // a node without TLS.
    assert_eq!(node.call("GET", "/health", &[], b"").status, 200);
    let pid = node.pid().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    wait_until(Duration::from_secs(10), "the SIGHUP to be logged", || {
        std::fs::read_to_string(node.data_dir.with_extension("log"))
            .ok()?
            .contains("nothing to reload")
            .then_some(())
    });
    assert_eq!(node.call("GET", "/health", &[], b"").status, 200);
}

const ADMIN_KEY: &str = "an operator's admin key, long enough";

/// Creates a key through `node`; returns (id, key).
fn create_key(node: &NodeProcess, body: &str) -> (String, String) {
    let reply = node.call("POST", "/keys", &[], body.as_bytes());
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let created = reply.json();
    (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    )
}

fn with(key: &str) -> String {
    format!("Bearer {key}")
}

#[test]
fn api_keys_with_roles_guard_every_endpoint_and_revocations_reach_every_node() {
    let secrets = Scratch::new("keys");
    let admin_file = secret_file(&secrets, "admin", ADMIN_KEY);
    let admin_arg = admin_file.to_string_lossy().into_owned();
    let cluster = Cluster::start_with_key(
        "api-keys",
        3,
        &["--auth", "required", "--admin-key-file", &admin_arg],
        Some(ADMIN_KEY),
    );
    cluster.create_table("a", r#"{"n":3,"r":2,"w":2,"merge":"lww"}"#);
    cluster.create_table("b", r#"{"n":3,"r":2,"w":2,"merge":"lww"}"#);
    let (node1, node3) = (&cluster.nodes[0], &cluster.nodes[2]);
    let (ro_id, ro) = create_key(node1, r#"{"role":"read-only"}"#);
    let (rw_id, rw_a) = create_key(node1, r#"{"role":"read-write","tables":["a"]}"#);
    let url = |node: &NodeProcess, path: &str| node.url(path);
    let as_key = |node: &NodeProcess, key: Option<&str>, method: &str, path: &str, body: &[u8]| {
        let auth = key.map(with);
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        cairn_tests::call(method, &url(node, path), &headers, body)
    };

    // No key: 401 with a reason and a challenge; /health stays open.
    let open = as_key(node1, None, "GET", "/tables/a/keys/k", b"");
    assert_eq!(open.status, 401);
    assert_eq!(open.header("www-authenticate"), Some("Bearer"));
    assert!(open.json()["error"].as_str().unwrap().contains("API key"));
    assert_eq!(as_key(node1, None, "GET", "/health", b"").status, 200);
    for path in ["/cluster", "/tables", "/keys"] {
        assert_eq!(as_key(node1, None, "GET", path, b"").status, 401, "{path}");
    }
    // The dashboard's page is open (it holds no data) and asks for a key.
    let page = as_key(node1, None, "GET", "/", b"");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("requires an API key"));
    // A key made up, or a real id with another secret: 401 that never echoes it.
    let forged = format!("cairn_{ro_id}_not-the-secret");
    let refused = as_key(node1, Some(&forged), "GET", "/tables/a/keys/k", b"");
    assert_eq!(refused.status, 401);
    assert!(!refused.text().contains("not-the-secret"));

    // Keys created on node1 work on every node once gossip carried them.
    wait_until(Duration::from_secs(10), "the keys to reach node3", || {
        (as_key(node3, Some(&rw_a), "PUT", "/tables/a/keys/k", b"v").status == 204).then_some(())
    });
    // read-only: reads and sees the cluster; writes and admin are 403.
    let read = as_key(node3, Some(&ro), "GET", "/tables/a/keys/k", b"");
    assert_eq!((read.status, read.text()), (200, "v".to_owned()));
    for path in ["/", "/cluster", "/tables", "/tables/a", "/plugins"] {
        assert_eq!(
            as_key(node3, Some(&ro), "GET", path, b"").status,
            200,
            "{path}"
        );
    }
    let denied = as_key(node3, Some(&ro), "PUT", "/tables/a/keys/k", b"w");
    assert_eq!(denied.status, 403);
    assert!(denied.json()["error"]
        .as_str()
        .unwrap()
        .contains("read-only"));
    assert!(!denied.text().contains(&ro));
    assert_eq!(
        as_key(node3, Some(&ro), "DELETE", "/tables/a/keys/k", b"").status,
        403
    );
    // read-write limited to `a`: table b is 403 both ways; admin is 403.
    assert_eq!(
        as_key(node3, Some(&rw_a), "PUT", "/tables/b/keys/k", b"x").status,
        403
    );
    assert_eq!(
        as_key(node3, Some(&rw_a), "GET", "/tables/b/keys/k", b"").status,
        403
    );
    for (method, path, body) in [
        ("POST", "/keys", &br#"{"role":"admin"}"#[..]),
        ("GET", "/keys", b""),
        ("PUT", "/tables/c", b"{}"),
        ("DELETE", "/tables/b", b""),
        ("DELETE", "/plugins/p", b""),
        ("POST", "/cluster/remove", br#"{"node":"node2"}"#),
    ] {
        let reply = as_key(node3, Some(&rw_a), method, path, body);
        assert_eq!(reply.status, 403, "{method} {path}: {}", reply.text());
    }
    // Listing shows ids and roles, never keys or hashes.
    let list = node1.call("GET", "/keys", &[], b"");
    assert_eq!(list.status, 200);
    let text = list.text();
    assert!(text.contains(&ro_id) && text.contains("read-only") && text.contains(&rw_id));
    assert!(!text.contains(&ro) && !text.contains(&rw_a) && !text.contains("hash"));

    // Revoked on node1: refused on every node within the gossip bound.
    assert_eq!(
        node1
            .call("DELETE", &format!("/keys/{rw_id}"), &[], b"")
            .status,
        204
    );
    for node in &cluster.nodes {
        wait_until(
            Duration::from_secs(10),
            "the revocation to reach every node",
            || {
                (as_key(node, Some(&rw_a), "GET", "/tables/a/keys/k", b"").status == 401)
                    .then_some(())
            },
        );
    }
    assert_eq!(
        node1
            .call("DELETE", "/keys/ffffffffffffffff", &[], b"")
            .status,
        404
    );
    let listed = node1.call("GET", "/keys", &[], b"").json();
    let revoked = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == rw_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(revoked["revoked"], true);

    // Guessing at a key is throttled per client address and key id: past
    // ten failures in a minute (one was the forged key above), attempts are
    // refused unchecked (the right secret too, from this address), and the
    // connection is not kept.
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(as_key(node1, Some(&forged), "GET", "/tables/a/keys/k", b"").status);
    }
    assert_eq!(statuses[..9], [401; 9], "{statuses:?}");
    assert_eq!(statuses[9], 429, "{statuses:?}");
    let throttled = as_key(node1, Some(&ro), "GET", "/tables/a/keys/k", b"");
    assert_eq!(throttled.status, 429);
    assert!(throttled.header("retry-after").is_some());
    assert_eq!(throttled.header("connection"), Some("close"));
    // Other keys from this address, and this key on another node, are served.
    assert_eq!(node1.call("GET", "/tables/a/keys/k", &[], b"").status, 200);
    assert_eq!(
        as_key(node3, Some(&ro), "GET", "/tables/a/keys/k", b"").status,
        200
    );
}

#[test]
fn the_key_commands_and_client_commands_carry_the_key() {
    let secrets = Scratch::new("key-cli");
    let admin_file = secret_file(&secrets, "admin", ADMIN_KEY);
    let admin_arg = admin_file.to_string_lossy().into_owned();
    let cluster = Cluster::start_with_key(
        "key-cli",
        1,
        &["--auth", "required", "--admin-key-file", &admin_arg],
        Some(ADMIN_KEY),
    );
    cluster.create_table("kv", r#"{"n":1,"r":1,"w":1,"merge":"lww"}"#);
    let node = &cluster.nodes[0];
    let cairn = |key: Option<&str>, args: &[&str]| {
        let mut command = std::process::Command::new(cairn_tests::cairn_bin());
        command
            .args(args)
            .env("CAIRN_URL", node.url(""))
            .env_remove("CAIRN_API_KEY_FILE");
        match key {
            Some(key) => command.env("CAIRN_API_KEY", key),
            None => command.env_remove("CAIRN_API_KEY"),
        };
        command.output().unwrap()
    };
    let created = cairn(
        Some(ADMIN_KEY),
        &["key", "create", "--role", "read-write", "--table", "kv"],
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("cairn_"), "{key}");
    assert!(String::from_utf8_lossy(&created.stderr).contains("not shown again"));
    let put = cairn(Some(&key), &["put", "kv", "k", "hello"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let get = cairn(Some(&key), &["get", "kv", "k"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout), "hello");
    // Without a key the command fails with the node's reason.
    let denied = cairn(None, &["get", "kv", "k"]);
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let list = cairn(Some(ADMIN_KEY), &["key", "list"]);
    let listed: Value = serde_json::from_slice(&list.stdout).unwrap();
    let id = listed["keys"][0]["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with(&format!("cairn_{id}_")));
    // A read-write key cannot manage keys; the admin revokes it.
    assert!(!cairn(Some(&key), &["key", "list"]).status.success());
    assert!(cairn(Some(ADMIN_KEY), &["key", "revoke", &id])
        .status
        .success());
    assert!(!cairn(Some(&key), &["get", "kv", "k"]).status.success());
}

/// A CA and a certificate it signed for 127.0.0.1 and localhost, as PEM:
/// (ca, cert, key).
pub(crate) fn issue_certificate(ca_name: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn tls_serves_the_client_commands_and_bench_and_reloads_on_sighup() {
    let dir = Scratch::new("tls");
    let (ca1, cert1, key1) = issue_certificate("cairn test CA one");
    let (ca2, cert2, key2) = issue_certificate("cairn test CA two");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let (ca1, ca2) = (write("ca1.pem", &ca1), write("ca2.pem", &ca2));
    let cert = write("cert.pem", &cert1);
    let key = write("key.pem", &key1);
    let node = NodeProcess::start(
        "node1",
        &dir.join("node1"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[],
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    let url = format!("https://{}", node.http);
    let cairn = |ca: Option<&str>, args: &[&str]| {
        let mut command = std::process::Command::new(cairn_tests::cairn_bin());
        if let Some(ca) = ca {
            command.args(["--ca-cert", ca]);
        }
        command
            .args(args)
            .env("CAIRN_URL", &url)
            .env_remove("CAIRN_CA_CERT")
            .env_remove("CAIRN_API_KEY");
        command.output().unwrap()
    };
    let ok = |output: &std::process::Output| {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    wait_until(
        Duration::from_secs(20),
        "the node to take a table over TLS",
        || {
            cairn(
                Some(&ca1),
                &["table", "create", "kv", "--n", "1", "--r", "1", "--w", "1"],
            )
            .status
            .success()
            .then_some(())
        },
    );
    ok(&cairn(Some(&ca1), &["put", "kv", "k", "over tls"]));
    let got = cairn(Some(&ca1), &["get", "kv", "k"]);
    ok(&got);
    assert_eq!(String::from_utf8_lossy(&got.stdout), "over tls");
    // Not trusted without the CA; plain HTTP gets no answer on the TLS port.
    let untrusted = cairn(None, &["get", "kv", "k"]);
    assert!(!untrusted.status.success());
    assert!(
        cairn_tests::try_call("GET", &format!("http://{}/health", node.http), &[], b"").is_err()
    );
    // The bench speaks TLS too.
    let bench = cairn(
        Some(&ca1),
        &[
            "bench",
            "--urls",
            &url,
            "--table",
            "kv",
            "--keys",
            "50",
            "--clients",
            "2",
            "--ops",
            "200",
            "--json",
        ],
    );
    ok(&bench);

    // A renewed certificate from another CA, picked up on SIGHUP without a restart.
    let pid = node.pid().unwrap();
    std::fs::write(&cert, &cert2).unwrap();
    std::fs::write(&key, &key2).unwrap();
    let hup = || {
        assert!(std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success());
    };
    hup();
    wait_until(
        Duration::from_secs(10),
        "the new certificate to be served",
        || {
            cairn(Some(&ca2), &["get", "kv", "k"])
                .status
                .success()
                .then_some(())
        },
    );
    assert!(!cairn(Some(&ca1), &["get", "kv", "k"]).status.success());
    // A broken file on SIGHUP keeps the certificate in use.
    std::fs::write(&cert, "not a certificate").unwrap();
    hup();
    wait_until(
        Duration::from_secs(10),
        "the failed reload to be logged",
        || {
            std::fs::read_to_string(node.data_dir.with_extension("log"))
                .ok()?
                .contains("TLS certificate not reloaded")
                .then_some(())
        },
    );
    ok(&cairn(Some(&ca2), &["get", "kv", "k"]));
    assert_eq!(node.pid(), Some(pid));
}

#[test]
fn a_slowloris_connection_is_dropped_while_other_clients_are_served() {
    let cluster = Cluster::start("slowloris", 1, &[]);
    cluster.create_table("kv", r#"{"n":1,"r":1,"w":1,"merge":"lww"}"#);
    let node = &cluster.nodes[0];
    let started = std::time::Instant::now();
    let mut slow = TcpStream::connect(&node.http).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // A header line every 200 ms, never the end of the headers: the node
    // closes the connection once the header deadline (10 s) passes.
    let mut closed_after = None;
    let mut served = 0;
    while started.elapsed() < Duration::from_secs(30) {
        if slow.write_all(b"X-Slow: 1\r\n").is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        // Meanwhile everyone else is served as usual.
        let put = node.call("PUT", &format!("/tables/kv/keys/k{served}"), &[], b"v");
        assert_eq!(put.status, 204);
        served += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let closed_after = closed_after.expect("the slow connection was never closed");
    assert!(closed_after >= Duration::from_secs(9), "{closed_after:?}");
    assert!(served > 10);
}
