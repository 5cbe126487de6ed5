//! Abuse and accidents (issue 9): what a hostile or unlucky user or operator
//! does to a running node must not stop it, lose data or break the cluster.

use std::process::{Command, Stdio};
use std::time::Duration;

use cairn_tests::{cairn_bin, Cluster};

/// One replica: these tests run one-node clusters.
const SOLO: &str = r#"{"n":1,"r":1,"w":1,"merge":"lww"}"#;

#[test]
fn a_second_process_on_a_data_dir_in_use_refuses_to_start_and_names_the_holder() {
    let cluster = Cluster::start("second-process", 1, &[]);
    cluster.create_table("kv", SOLO);
    let node = &cluster.nodes[0];
    assert_eq!(node.call("PUT", "/tables/kv/keys/k", &[], b"v").status, 204);
    let mut second = Command::new(cairn_bin())
        .args(["serve", "--node-id", &node.id, "--http", "127.0.0.1:0"])
        .args(["--peer", "127.0.0.1:0", "--data-dir"])
        .arg(&node.data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_until_or_kill(&mut second, Duration::from_secs(20))
        .expect("the second process kept running");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    let holder = node.pid().unwrap();
    assert!(
        stderr.contains(&format!("is in use by process {holder}")),
        "{stderr}"
    );
    // The running node did not notice: same members, same data.
    let members = node.cluster()["members"].as_array().unwrap().clone();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["http"], node.http.as_str());
    let got = node.call("GET", "/tables/kv/keys/k", &[], b"");
    assert_eq!((got.status, got.text().as_str()), (200, "v"));
}

/// Waits up to `timeout` for `child` to exit; kills it if it does not (so
/// a failing test leaves no process behind) and returns `None`.
fn wait_until_or_kill(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Sends `request` as written (for what an HTTP client library would not
/// send) and returns the answer's status line and headers.
fn raw_exchange(http: &str, request: &str) -> String {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(http).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    cairn_tests::read_head(&mut stream, Duration::from_secs(15))
}

#[test]
fn requests_that_cannot_be_taken_as_meant_are_refused_with_the_reason() {
    let cluster = Cluster::start("strict-http", 1, &[]);
    cluster.create_table("kv", SOLO);
    let node = &cluster.nodes[0];
    // Unknown paths are 404; known ones name their methods.
    assert_eq!(node.call("GET", "/tables/kv/nope", &[], b"").status, 404);
    let wrong = node.call("DELETE", "/health", &[], b"");
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("allow"), Some("GET, HEAD, OPTIONS"));
    let options = node.call("OPTIONS", "/tables/kv/keys/k", &[], b"");
    assert_eq!(options.status, 204);
    assert_eq!(
        options.header("allow"),
        Some("GET, HEAD, PUT, DELETE, OPTIONS")
    );
    assert_eq!(node.call("PUT", "/tables/kv/keys/k", &[], b"v").status, 204);
    let head = node.call("HEAD", "/tables/kv/keys/k", &[], b"");
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert!(head.context().is_some());

    // A malformed percent-escape names no key: refused, not taken literally.
    let escaped = node.call("PUT", "/tables/kv/keys/a%zz", &[], b"v");
    assert_eq!(escaped.status, 400);
    assert!(
        escaped.text().contains("percent-escape"),
        "{}",
        escaped.text()
    );
    assert_eq!(
        node.call("GET", "/tables/kv/keys/a%25zz", &[], b"").status,
        404
    );
    // Quorum parameters are percent-decoded, and given at most once.
    assert_eq!(
        node.call("PUT", "/tables/kv/keys/q?%77=%31", &[], b"v")
            .status,
        204
    );
    let twice = node.call("PUT", "/tables/kv/keys/q?w=1&w=1", &[], b"v");
    assert_eq!(twice.status, 400);
    assert!(twice.text().contains("more than once"), "{}", twice.text());

    // Two contexts: the node cannot know which one the write descends from.
    let context = head.context().unwrap().to_owned();
    let two = node.call(
        "PUT",
        "/tables/kv/keys/k",
        &[("x-cairn-context", &context), ("x-cairn-context", &context)],
        b"w",
    );
    assert_eq!(two.status, 400);
    assert!(two.text().contains("more than one"), "{}", two.text());

    // Content types: at most 256 bytes of ASCII, one header.
    let long_type = "t".repeat(257);
    let long = node.call(
        "PUT",
        "/tables/kv/keys/c",
        &[("content-type", &long_type)],
        b"v",
    );
    assert_eq!(long.status, 400);
    assert!(long.text().contains("256"), "{}", long.text());
    let fits = "t".repeat(256);
    assert_eq!(
        node.call("PUT", "/tables/kv/keys/c", &[("content-type", &fits)], b"v")
            .status,
        204
    );
    let got = node.call("GET", "/tables/kv/keys/c", &[], b"");
    assert_eq!(got.header("content-type"), Some(fits.as_str()));

    // Encoded bodies would be stored as the wrong bytes: refused.
    let gzip = node.call(
        "PUT",
        "/tables/kv/keys/z",
        &[("content-encoding", "gzip")],
        b"\x1f\x8b",
    );
    assert_eq!(gzip.status, 415);
    let coded = raw_exchange(
        &node.http,
        "PUT /tables/kv/keys/z HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1\r\nv\r\n0\r\n\r\n",
    );
    assert!(coded.starts_with("HTTP/1.1 501"), "{coded}");
    assert_eq!(node.call("GET", "/tables/kv/keys/z", &[], b"").status, 404);
    assert_eq!(node.call("GET", "/health", &[], b"").status, 200);
}

#[test]
fn a_bad_seed_is_refused_and_a_node_waiting_to_join_says_so() {
    // A seed that is no HOST:PORT stops `serve` with the reason.
    let dir = cairn_tests::temp_dir("bad-seed");
    let mut serve = Command::new(cairn_bin())
        .args(["serve", "--node-id", "x", "--http", "127.0.0.1:0"])
        .args(["--peer", "127.0.0.1:0", "--seed", "nonsense", "--data-dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_until_or_kill(&mut serve, Duration::from_secs(20));
    assert!(exited.is_some_and(|s| !s.success()), "serve kept running");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut serve.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("nonsense"), "{stderr}");

    // A seed nobody answers at: the node serves, says it is joining, and
    // refuses admin changes it could not share.
    let silent = format!("127.0.0.1:{}", cairn_tests::free_port(1));
    let node = cairn_tests::NodeProcess::start(
        "lonely",
        &cairn_tests::temp_dir("lonely"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        std::slice::from_ref(&silent),
        &[],
    );
    let cluster = node.cluster();
    let members = cluster["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{cluster}");
    assert_eq!(members[0]["status"], "joining", "{cluster}");
    assert_eq!(cluster["join"]["seed"], silent.as_str(), "{cluster}");
    let create = node.call("PUT", "/tables/kv", &[], SOLO.as_bytes());
    assert_eq!(create.status, 503);
    assert!(create.text().contains("join"), "{}", create.text());
    let join = node.call("POST", "/cluster/join", &[], br#"{"seed":"no port"}"#);
    assert_eq!(join.status, 400);
}

#[test]
fn the_cli_moves_values_byte_exact_and_shows_the_nodes_reasons() {
    let cluster = Cluster::start("cli", 1, &["--value-bytes-max", "1024"]);
    cluster.create_table("kv", SOLO);
    let node = &cluster.nodes[0];
    let url = format!("http://{}", node.http);
    let cli = |args: &[&str], stdin: Option<&std::path::Path>| {
        let mut command = Command::new(cairn_bin());
        command.args(args).args(["--url", &url]);
        if let Some(path) = stdin {
            command.stdin(std::fs::File::open(path).unwrap());
        }
        command.output().unwrap()
    };
    // A binary value without a trailing newline comes back exactly.
    let value: Vec<u8> = (0u8..=255).collect();
    let file = cluster.root.join("value.bin");
    std::fs::write(&file, &value).unwrap();
    let put = cli(&["put", "kv", "bin"], Some(&file));
    assert!(put.status.success(), "{put:?}");
    let got = cli(&["get", "kv", "bin"], None);
    assert!(got.status.success(), "{got:?}");
    assert_eq!(got.stdout, value);
    // A value over the node's limit is refused with its reason, and a
    // missing key says so.
    std::fs::write(&file, vec![b'x'; 4096]).unwrap();
    let big = cli(&["put", "kv", "big"], Some(&file));
    assert!(!big.status.success());
    let stderr = String::from_utf8_lossy(&big.stderr);
    assert!(
        stderr.contains("413") && stderr.contains("1024"),
        "{stderr}"
    );
    let missing = cli(&["get", "kv", "big"], None);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("404") && stderr.contains("not found"),
        "{stderr}"
    );
}

/// A small tmpfs, unmounted when dropped: a disk that fills up for real.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(label: &str, mib: u32) -> SmallDisk {
        let path = cairn_tests::temp_dir(label);
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount");
        assert!(
            status.success(),
            "mounting a {mib} MiB tmpfs at {} failed: this test needs root (CI runs as root)",
            path.display()
        );
        SmallDisk { path }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn a_full_disk_refuses_writes_with_507_keeps_serving_reads_and_recovers() {
    let disk = SmallDisk::mount("full-disk", 48);
    let reserve = 8 * 1024 * 1024;
    let node = cairn_tests::NodeProcess::start(
        "full",
        &disk.path.join("node"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[],
        &["--disk-reserve-bytes", &reserve.to_string()],
    );
    for (name, config) in [
        ("kv", SOLO),
        (
            "files",
            r#"{"n":1,"r":1,"w":1,"merge":"lww","storage":"blob"}"#,
        ),
    ] {
        let created = node.call("PUT", &format!("/tables/{name}"), &[], config.as_bytes());
        assert_eq!(created.status, 200, "{}", created.text());
    }
    // 1 MiB values until the disk has no room above the reserve: every write
    // before is stored, the one that does not fit is answered 507.
    let value = |i: usize| vec![b'a' + (i % 26) as u8; 1024 * 1024];
    let mut stored = 0;
    let refused = loop {
        assert!(stored < 48, "48 MiB of values fit a 48 MiB disk");
        let put = node.call(
            "PUT",
            &format!("/tables/kv/keys/k{stored}"),
            &[],
            &value(stored),
        );
        if put.status != 204 {
            break put;
        }
        stored += 1;
    };
    assert_eq!(refused.status, 507, "{}", refused.text());
    assert_eq!(refused.json()["error"], "insufficient storage");
    assert!(refused.text().contains("reserve"), "{}", refused.text());
    assert!(stored >= 20, "only {stored} MiB fit above an 8 MiB reserve");
    // Reads go on, and the node is up.
    for i in [0, stored - 1] {
        let got = node.call("GET", &format!("/tables/kv/keys/k{i}"), &[], b"");
        assert_eq!((got.status, got.body == value(i)), (200, true), "k{i}");
    }

    // Another process fills the disk below the reserve: every write is
    // refused early, blob files included, and /cluster says why.
    let free = node.cluster()["disk"]["free_bytes"].as_u64().unwrap();
    let filler = disk.path.join("filler");
    std::fs::write(&filler, vec![0u8; (free - 2 * 1024 * 1024) as usize]).unwrap();
    let cluster = cairn_tests::wait_until(
        Duration::from_secs(10),
        "/cluster to say writes are refused",
        || {
            let cluster = node.cluster();
            (cluster["disk"]["writes"] == "refused").then_some(cluster)
        },
    );
    assert_eq!(cluster["disk"]["reserve_bytes"], reserve, "{cluster}");
    assert_eq!(
        node.call("PUT", "/tables/kv/keys/small", &[], b"v").status,
        507
    );
    let blob = node.call("PUT", "/tables/files/keys/f", &[], &value(1));
    assert_eq!(blob.status, 507, "{}", blob.text());
    let blobs = disk.path.join("node").join("blobs");
    let leftovers: Vec<_> = std::fs::read_dir(&blobs).unwrap().flatten().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(node.call("GET", "/health", &[], b"").status, 200);

    // Space freed: writes are accepted again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    cairn_tests::wait_until(
        Duration::from_secs(10),
        "writes to be accepted again",
        || {
            let put = node.call("PUT", "/tables/files/keys/f", &[], &value(1));
            (put.status == 204).then_some(())
        },
    );
    assert_eq!(node.cluster()["disk"]["writes"], "accepted");
    let got = node.call("GET", "/tables/files/keys/f", &[], b"");
    assert_eq!((got.status, got.body == value(1)), (200, true));
    drop(node);
}

/// The lowest descriptor number `pid` does not use: with its open-files
/// limit set to it, the process can open nothing more.
fn lowest_free_descriptor(pid: u32) -> u64 {
    let used: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|fd| !used.contains(fd)).unwrap()
}

fn set_open_files_limit(pid: u32, limit: &str) {
    let status = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={limit}")])
        .status()
        .expect("prlimit");
    assert!(status.success(), "prlimit --nofile={limit} failed");
}

#[test]
fn a_replica_that_cannot_open_a_blob_file_fails_that_write_and_keeps_running() {
    let mut cluster = Cluster::start("no-descriptors", 3, &[]);
    cluster.create_table(
        "files",
        r#"{"n":3,"r":2,"w":2,"merge":"lww","storage":"blob"}"#,
    );
    let stored = cluster.nodes[0].call("PUT", "/tables/files/keys/before?w=3", &[], b"first");
    assert_eq!(stored.status, 204, "{}", stored.text());
    // Node 3 can open no file: its next blob write fails at commit.
    let pid = cluster.nodes[2].pid().unwrap();
    let limit = lowest_free_descriptor(pid);
    set_open_files_limit(pid, &format!("{limit}:"));
    let put = cluster.nodes[0].call("PUT", "/tables/files/keys/during?w=3", &[], b"second");
    assert_eq!(put.status, 503, "{}", put.text());
    assert_eq!(put.json()["error"], "quorum not reached", "{}", put.text());
    // It failed that write only: it is still running, and w=2 writes go on.
    assert!(cluster.nodes[2].exit_status().is_none(), "node 3 stopped");
    let put = cluster.nodes[0].call("PUT", "/tables/files/keys/during", &[], b"second");
    assert_eq!(put.status, 204, "{}", put.text());
    // With descriptors again it takes writes, and kept what it had.
    set_open_files_limit(pid, "4096:");
    let put = cluster.nodes[0].call("PUT", "/tables/files/keys/after?w=3", &[], b"third");
    assert_eq!(put.status, 204, "{}", put.text());
    for (key, value) in [("before", "first"), ("after", "third")] {
        let got = cluster.nodes[2].call("GET", &format!("/tables/files/keys/{key}?r=3"), &[], b"");
        assert_eq!((got.status, got.text().as_str()), (200, value), "{key}");
    }
    let log = std::fs::read_to_string(cluster.nodes[2].data_dir.with_extension("log")).unwrap();
    assert!(log.contains("commit failed"), "{log}");
    assert!(cluster.nodes[2].exit_status().is_none());
}

#[test]
fn idle_connections_beyond_a_low_open_files_limit_leave_descriptors_for_storage() {
    let mut cluster = Cluster::start("ulimit", 3, &[]);
    cluster.create_table(
        "files",
        r#"{"n":3,"r":2,"w":2,"merge":"lww","storage":"blob"}"#,
    );
    // Node 3 runs under `ulimit -n 1024`, and 1,100 idle clients connect.
    cluster.nodes[2].crash();
    cluster.nodes[2].open_files_limit = Some(1_024);
    cluster.nodes[2].start_again();
    cluster.wait_formed();
    let node3 = cluster.nodes[2].http.clone();
    let idle: Vec<std::net::TcpStream> = (0..1_100)
        .filter_map(|_| std::net::TcpStream::connect(&node3).ok())
        .collect();
    assert!(idle.len() > 512, "only {} connected", idle.len());
    // A write that needs node 3 to create a blob file still succeeds.
    let put = cluster.nodes[0].call("PUT", "/tables/files/keys/k?w=3", &[], b"blob");
    assert_eq!(put.status, 204, "{}", put.text());
    drop(idle);
    cairn_tests::wait_until(Duration::from_secs(15), "node 3 to serve again", || {
        let got = cairn_tests::try_call(
            "GET",
            &cluster.nodes[2].url("/tables/files/keys/k?r=3"),
            &[],
            b"",
        )
        .ok()?;
        (got.status == 200 && got.body == b"blob").then_some(())
    });
    assert!(cluster.nodes[2].exit_status().is_none());
}

#[test]
fn a_dropped_table_is_gone_on_every_node_for_good_and_its_data_is_collected() {
    let mut cluster = Cluster::start("drop-table", 3, &[]);
    let kv = r#"{"n":3,"r":2,"w":2,"merge":"lww"}"#;
    cluster.create_table("gone", kv);
    cluster.create_table("kept", kv);
    for key in ["a", "b", "c"] {
        for table in ["gone", "kept"] {
            let put = cluster.nodes[0].call(
                "PUT",
                &format!("/tables/{table}/keys/{key}?w=3"),
                &[],
                key.as_bytes(),
            );
            assert_eq!(put.status, 204, "{}", put.text());
        }
    }
    let dropped = cluster.nodes[1].call("DELETE", "/tables/gone", &[], b"");
    assert_eq!(dropped.status, 204, "{}", dropped.text());
    for node in &cluster.nodes {
        cairn_tests::wait_until(
            Duration::from_secs(2),
            "the drop to reach every node",
            || (node.call("GET", "/tables/gone", &[], b"").status == 404).then_some(()),
        );
        assert_eq!(
            node.call("GET", "/tables/gone/keys/a", &[], b"").status,
            404
        );
        assert_eq!(
            node.call("PUT", "/tables/gone/keys/a", &[], b"x").status,
            404
        );
        let tables = node.call("GET", "/tables", &[], b"").json();
        let names: Vec<_> = tables["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].clone())
            .collect();
        assert_eq!(names, ["kept"], "{tables}");
    }
    // Permanent: the name is not reused, a second drop is answered as done,
    // and a table that never existed is 404.
    let again = cluster.nodes[2].call("PUT", "/tables/gone", &[], kv.as_bytes());
    assert_eq!(again.status, 409, "{}", again.text());
    assert!(again.text().contains("dropped"), "{}", again.text());
    assert_eq!(
        cluster.nodes[0]
            .call("DELETE", "/tables/gone", &[], b"")
            .status,
        204
    );
    assert_eq!(
        cluster.nodes[0]
            .call("DELETE", "/tables/never", &[], b"")
            .status,
        404
    );
    // Each node collects the table's records in the background.
    for node in &cluster.nodes {
        cairn_tests::wait_until(Duration::from_secs(10), "the data to be collected", || {
            let log = std::fs::read_to_string(node.data_dir.with_extension("log")).ok()?;
            log.contains("the dropped table's data is collected")
                .then_some(())
        });
    }
    // A node that restarts from its data dir still knows the drop; the
    // other table is untouched.
    cluster.nodes[2].crash();
    cluster.nodes[2].start_again();
    cluster.wait_formed();
    let node = &cluster.nodes[2];
    assert_eq!(node.call("GET", "/tables/gone", &[], b"").status, 404);
    let got = node.call("GET", "/tables/kept/keys/b?r=3", &[], b"");
    assert_eq!((got.status, got.text().as_str()), (200, "b"));
}

#[test]
fn a_join_keeps_the_table_cap() {
    let cluster = Cluster::start("cap-cluster", 1, &[]);
    let root = cairn_tests::temp_dir("cap-joiner");
    let joiner = cairn_tests::NodeProcess::start(
        "joiner",
        &root.join("joiner"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[],
        &[],
    );
    // Each side holds 400 tables, the most a cluster may hold.
    for (node, prefix) in [(&cluster.nodes[0], "c"), (&joiner, "j")] {
        for i in 0..400 {
            let created = node.call(
                "PUT",
                &format!("/tables/{prefix}{i:03}"),
                &[],
                SOLO.as_bytes(),
            );
            assert_eq!(created.status, 200, "{}", created.text());
        }
        let over = node.call("PUT", &format!("/tables/{prefix}400"), &[], SOLO.as_bytes());
        assert_eq!(over.status, 400, "{}", over.text());
    }
    let body = format!(r#"{{"seed":"{}"}}"#, cluster.nodes[0].peer);
    assert_eq!(
        joiner
            .call("POST", "/cluster/join", &[], body.as_bytes())
            .status,
        202
    );
    // The seed refuses: 800 tables would not fit. Both go on as they were.
    let status = cairn_tests::wait_until(Duration::from_secs(10), "the join to fail", || {
        let status = joiner.cluster();
        (status["join"]["state"] == "failed").then_some(status)
    });
    let reason = status["join"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("at most 400 tables"), "{status}");
    for (node, prefix) in [(&cluster.nodes[0], 'c'), (&joiner, 'j')] {
        assert_eq!(node.cluster()["members"].as_array().map(Vec::len), Some(1));
        let tables = node.call("GET", "/tables", &[], b"").json();
        let list = tables["tables"].as_array().unwrap();
        assert_eq!(list.len(), 400);
        assert!(list
            .iter()
            .all(|t| t["name"].as_str().is_some_and(|n| n.starts_with(prefix))));
    }
}

#[test]
fn a_tombstone_grace_shorter_than_a_request_can_last_is_refused_with_the_floor() {
    let dir = cairn_tests::temp_dir("short-grace");
    let output = Command::new(cairn_bin())
        .args(["serve", "--node-id", "solo", "--http", "127.0.0.1:0"])
        .args(["--peer", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("solo"))
        .args([
            "--request-timeout-ms",
            "5000",
            "--tombstone-grace-ms",
            "10999",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--tombstone-grace-ms must be at least 11000"),
        "{stderr}"
    );
}
