//! What operators see, from real processes: `/metrics` moving under a
//! scripted workload (a hint pending then delivered, a trapping plugin
//! counted and logged), request logs that carry a span and never a key,
//! and settings taken from flags over environment over a config file.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use cairn_tests::{cairn_bin, temp_dir, wait_until, wat_plugin, Cluster, NodeProcess};

use crate::handoff::{keys_with_primaries, status_of};
use crate::plugins::{concurrent_then_read, upload};

/// The value of the sample `series` in `node`'s `/metrics` (0 when absent,
/// as Prometheus reads a series not yet created).
fn metric(node: &NodeProcess, series: &str) -> f64 {
    let reply = node.call("GET", "/metrics", &[], b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply
        .text()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn sum(nodes: &[NodeProcess], series: &str) -> f64 {
    nodes.iter().map(|node| metric(node, series)).sum()
}

#[test]
fn metrics_show_a_hint_pending_then_delivered_and_a_trapping_plugin_counted() {
    let mut cluster = Cluster::start(
        "metrics",
        4,
        &["--partitions", "32", "--antientropy-every-ms", "0"],
    );
    cluster.create_table("events", r#"{"n":3,"r":2,"w":2,"merge":"siblings"}"#);
    let reply = cluster.nodes[0].call("GET", "/metrics", &[], b"");
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8"),
        "Prometheus text by default"
    );
    let open = cluster.nodes[0].call(
        "GET",
        "/metrics",
        &[(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )],
        b"",
    );
    assert_eq!(
        open.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(open.text().ends_with("# EOF\n"));
    assert_eq!(
        metric(&cluster.nodes[0], "cairn_members{status=\"up\"}"),
        4.0
    );
    assert!(reply.text().contains("cairn_build_info{version=\""));

    // node4 dies: writes to its keys leave hints on a stand-in.
    let keys = keys_with_primaries(&cluster.nodes[0], &["node4"], 20);
    assert_eq!(keys.len(), 20);
    cluster.nodes[3].crash();
    for node in &cluster.nodes[..3] {
        wait_until(Duration::from_secs(10), "node4 seen down", || {
            (status_of(node, "node4").as_deref() == Some("down")).then_some(())
        });
    }
    assert_eq!(
        metric(&cluster.nodes[0], "cairn_members{status=\"down\"}"),
        1.0
    );
    for key in &keys {
        let path = format!("/tables/events/keys/{key}");
        assert_eq!(cluster.nodes[0].call("PUT", &path, &[], b"v").status, 204);
    }
    let up = &cluster.nodes[..3];
    let pending = sum(up, "cairn_hints_pending");
    assert!(pending >= 20.0, "a hint per write pending: {pending}");
    assert_eq!(
        sum(up, "cairn_hints_pending_by_target{target=\"node4\"}"),
        pending
    );
    let created = sum(up, "cairn_hints_created_total");
    assert!(created >= pending, "{created} created, {pending} pending");
    assert_eq!(
        metric(
            &cluster.nodes[0],
            "cairn_http_requests_total{op=\"put\",table=\"events\",status=\"204\"}"
        ),
        20.0
    );
    assert_eq!(
        metric(
            &cluster.nodes[0],
            "cairn_http_request_duration_seconds_count{op=\"put\",table=\"events\"}"
        ),
        20.0
    );

    // node4 is back: the hints drain, and the counters say they were delivered.
    cluster.nodes[3].start_again();
    let up = &cluster.nodes[..3];
    wait_until(Duration::from_secs(30), "every hint delivered", || {
        (sum(up, "cairn_hints_pending") == 0.0).then_some(())
    });
    let delivered = sum(up, "cairn_hints_delivered_total");
    assert!(delivered >= pending, "{delivered} delivered of {pending}");
    assert!(metric(&cluster.nodes[3], "cairn_hints_received_total") >= pending);

    // A trapping plugin: its failure is counted by name and result, and
    // logged with its name, sha256 and the reason.
    let uploaded = upload(&cluster.nodes[0], "trapper", &wat_plugin("unreachable"));
    assert_eq!(uploaded.status, 201, "{}", uploaded.text());
    let sha256 = uploaded.json()["sha256"].as_str().unwrap().to_owned();
    cluster.create_table("trapper", r#"{"merge":"plugin","plugin":"trapper"}"#);
    let read = concurrent_then_read(&cluster, "trapper", "k", "one", "two", 2);
    assert_eq!(read.status, 300, "{}", read.text());
    let traps =
        "cairn_plugin_calls_total{plugin=\"trapper\",function=\"reconcile\",result=\"trap\"}";
    let counted = sum(&cluster.nodes, traps);
    assert!(counted >= 1.0, "the trap counted: {counted}");
    let logged = cluster.nodes.iter().any(|node| {
        std::fs::read_to_string(node.log_path()).is_ok_and(|log| {
            log.lines().any(|line| {
                line.contains("plugin call failed")
                    && line.contains("trapper")
                    && line.contains(&sha256)
                    && line.contains("trap")
            })
        })
    });
    assert!(
        logged,
        "a log line names the plugin, its sha256 and the reason"
    );
}

#[test]
fn request_logs_are_json_with_the_span_and_never_the_key_or_value() {
    let root = temp_dir("logs");
    let mut node = NodeProcess::start(
        "node1",
        &root.join("node1"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[],
        &["--log-format", "json"],
    );
    node.log_filter = Some("cairn=debug".into());
    node.restart();
    wait_until(Duration::from_secs(10), "the node to serve", || {
        (node.try_call("GET", "/health", &[], b"").ok()?.status == 200).then_some(())
    });
    let created = node.call("PUT", "/tables/t", &[], br#"{"n":1,"r":1,"w":1}"#);
    assert_eq!(created.status, 200, "{}", created.text());
    let path = "/tables/t/keys/secret-key-4417";
    let put = node.call(
        "PUT",
        path,
        &[("x-request-id", "req-42")],
        b"secret-value-9931",
    );
    assert_eq!(put.status, 204);
    assert_eq!(put.header("x-request-id"), Some("req-42"));
    let get = node.call("GET", path, &[], b"");
    assert!(get
        .header("x-request-id")
        .is_some_and(|id| id.starts_with("node1-")));
    let answered = wait_until(Duration::from_secs(5), "the request logged", || {
        let log = std::fs::read_to_string(node.log_path()).ok()?;
        log.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|line| {
                line["fields"]["message"] == "request answered" && line["span"]["id"] == "req-42"
            })
    });
    let span = &answered["span"];
    assert_eq!(span["node"], "node1", "{answered}");
    assert_eq!(span["table"], "t", "{answered}");
    // The key's tag: 16 hex digits, the same for every request on the key,
    // not its plain SHA-256 (which a guess could be tested against).
    let tag = span["key"].as_str().unwrap_or_default().to_owned();
    assert!(
        tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit()),
        "{answered}"
    );
    let plain = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(b"secret-key-4417");
        digest[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_ne!(tag, plain, "the key's tag is keyed");
    let tags: std::collections::BTreeSet<String> = std::fs::read_to_string(node.log_path())
        .unwrap()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["span"]["table"] == "t" && line["span"]["key"].is_string())
        .map(|line| line["span"]["key"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(tags.len(), 1, "one tag for the key's PUT and GET: {tags:?}");
    assert_eq!(answered["fields"]["status"], 204, "{answered}");
    let log = std::fs::read_to_string(node.log_path()).unwrap();
    assert!(!log.contains("secret-key-4417"), "the key reached the log");
    assert!(
        !log.contains("secret-value-9931"),
        "the value reached the log"
    );
}

/// What `cairn serve --print-config` says the node would start with.
fn printed_config(args: &[&str], env: &[(&str, &str)]) -> toml::Table {
    let mut command = Command::new(cairn_bin());
    command.arg("serve").args(args).arg("--print-config");
    for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("CAIRN_")) {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    let output = command.output().expect("run cairn");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().parse().unwrap()
}

#[test]
fn settings_come_from_a_flag_over_the_environment_over_the_config_file() {
    let root = temp_dir("config");
    std::fs::create_dir_all(&root).unwrap();
    let file = root.join("cairn.toml");
    std::fs::write(
        &file,
        format!(
            "node-id = \"filenode\"\ndata-dir = \"{}\"\nhttp = \"127.0.0.1:0\"\npeer = \"127.0.0.1:0\"\n\
             partitions = 64\nrequest-timeout-ms = 4000\nseed = [\"10.1.1.1:9080\"]\n",
            root.join("data").display()
        ),
    )
    .unwrap();
    let config = file.to_str().unwrap();
    let printed = printed_config(
        &["--config", config, "--request-timeout-ms", "3000"],
        &[
            ("CAIRN_REQUEST_TIMEOUT_MS", "3500"),
            ("CAIRN_PARTITIONS", "128"),
        ],
    );
    assert_eq!(
        printed["request-timeout-ms"].as_integer(),
        Some(3000),
        "flag wins"
    );
    assert_eq!(
        printed["partitions"].as_integer(),
        Some(128),
        "environment over file"
    );
    assert_eq!(
        printed["node-id"].as_str(),
        Some("filenode"),
        "file over default"
    );
    assert_eq!(printed["target-n"].as_integer(), Some(3), "default");
    let seeds = printed["seed"].as_array().unwrap();
    assert_eq!(seeds[0].as_str(), Some("10.1.1.1:9080"));
    // CAIRN_CONFIG names the file as well as --config does.
    let printed = printed_config(&[], &[("CAIRN_CONFIG", config)]);
    assert_eq!(printed["partitions"].as_integer(), Some(64));

    // A node started from the file alone (no seed in reach: a one-node
    // cluster of its own) serves with the file's settings and the
    // environment's over them.
    std::fs::write(
        &file,
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("seed = [\"10.1.1.1:9080\"]\n", ""),
    )
    .unwrap();
    let mut child = Command::new(cairn_bin())
        .args(["serve", "--config", config])
        .env("CAIRN_PARTITIONS", "32")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let http = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .unwrap_or_else(|| panic!("no listening line: {line:?}"))
        .to_owned();
    let status = wait_until(Duration::from_secs(10), "the node to serve", || {
        let reply =
            cairn_tests::try_call("GET", &format!("http://{http}/cluster"), &[], b"").ok()?;
        (reply.status == 200).then(|| reply.json())
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status["node"], "filenode", "{status}");
    assert_eq!(status["members"][0]["partitions"], 32, "{status}");

    // A setting the file misspells stops the node with its name.
    std::fs::write(&file, "node-idd = \"x\"\n").unwrap();
    let output = Command::new(cairn_bin())
        .args(["serve", "--config", config])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown setting \"node-idd\""));
}

/// Runs `cairn ARGS`; its exit status, stdout and stderr.
fn cairn(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(cairn_bin())
        .args(args)
        .env_remove("CAIRN_URL")
        .output()
        .expect("run cairn");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What a read of `key` answers: its status and sorted values.
fn read(node: &NodeProcess, key: &str) -> (u16, Vec<String>) {
    let reply = node.call("GET", &format!("/tables/events/keys/{key}"), &[], b"");
    let values = match reply.status {
        200 => vec![reply.text()],
        300 => reply.sibling_values(),
        _ => Vec::new(),
    };
    (reply.status, values)
}

#[test]
fn backup_then_restore_into_an_empty_cluster_gives_back_every_key_with_its_siblings() {
    // n = 2 of 3 members: no member holds every key, so the backup must
    // read them all.
    let source = Cluster::start("backup-from", 3, &["--partitions", "32"]);
    source.create_table("events", r#"{"n":2,"r":2,"w":2,"merge":"siblings"}"#);
    let put = |node: &NodeProcess, key: &str, value: &str| {
        let reply = node.call(
            "PUT",
            &format!("/tables/events/keys/{key}"),
            &[],
            value.as_bytes(),
        );
        assert_eq!(reply.status, 204, "{}", reply.text());
    };
    for i in 0..120 {
        put(&source.nodes[i % 3], &format!("plain{i}"), &format!("v{i}"));
    }
    // Two writes without a context: siblings.
    for i in 0..30 {
        put(&source.nodes[0], &format!("twins{i}"), &format!("left{i}"));
        put(&source.nodes[1], &format!("twins{i}"), &format!("right{i}"));
    }
    for i in 0..20 {
        let key = format!("gone{i}");
        put(&source.nodes[2], &key, "soon deleted");
        let deleted =
            source.nodes[2].call("DELETE", &format!("/tables/events/keys/{key}"), &[], b"");
        assert_eq!(deleted.status, 204);
    }
    let keys: Vec<String> = (0..120)
        .map(|i| format!("plain{i}"))
        .chain((0..30).map(|i| format!("twins{i}")))
        .chain((0..20).map(|i| format!("gone{i}")))
        .collect();
    let before: Vec<(u16, Vec<String>)> = keys.iter().map(|k| read(&source.nodes[0], k)).collect();
    assert_eq!(
        before[120].1.len(),
        2,
        "the twins are siblings: {:?}",
        before[120]
    );

    // The backup stops after two pages, then resumes where it stopped.
    let root = temp_dir("backup-file");
    std::fs::create_dir_all(&root).unwrap();
    let file = root.join("events.cairnbk");
    let file = file.to_str().unwrap();
    let from = source.nodes[0].url("");
    let (ok, _, err) = cairn(&[
        "backup",
        "events",
        file,
        "--url",
        &from,
        "--page-keys",
        "25",
        "--pages-max",
        "2",
    ]);
    assert!(
        !ok && err.contains("run the same command again to resume"),
        "{err}"
    );
    let (ok, out, err) = cairn(&[
        "backup",
        "events",
        file,
        "--url",
        &from,
        "--page-keys",
        "25",
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("resuming"), "{err}");
    assert!(out.contains("from 3 members"), "{out}");

    // `cairn table stats` shows each member's share and the siblings.
    let (ok, out, err) = cairn(&["table", "stats", "events", "--url", &from]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("node")).collect();
    assert_eq!(rows.len(), 3, "{out}");
    let with_two: u64 = rows
        .iter()
        .map(|row| {
            let siblings = row.split("   ").last().unwrap();
            siblings
                .split(" / ")
                .nth(1)
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(
        with_two, 60,
        "30 keys with 2 siblings on 2 replicas each: {out}"
    );

    // An empty cluster of another shape: the restore creates the table,
    // stops after one batch, resumes, and every key reads as before.
    let target = Cluster::start("backup-into", 3, &["--partitions", "64"]);
    let into = target.nodes[1].url("");
    let (ok, _, err) = cairn(&[
        "restore",
        "events",
        file,
        "--url",
        &into,
        "--batch-objects",
        "100",
        "--batches-max",
        "1",
    ]);
    assert!(
        !ok && err.contains("run the same command again to resume"),
        "{err}"
    );
    assert!(err.contains("created table events"), "{err}");
    let (ok, out, err) = cairn(&["restore", "events", file, "--url", &into]);
    assert!(ok, "{err}");
    assert!(out.contains("restored"), "{out}");
    for (key, expected) in keys.iter().zip(&before) {
        for node in &target.nodes {
            assert_eq!(&read(node, key), expected, "{key} on {}", node.id);
        }
    }
    // The deletes came back as tombstones (a 404 with a context), not as
    // keys never written.
    for i in 0..20 {
        let path = format!("/tables/events/keys/gone{i}");
        let reply = target.nodes[0].call("GET", &path, &[], b"");
        assert_eq!(reply.status, 404);
        assert!(
            reply.context().is_some(),
            "gone{i} restored without its tombstone"
        );
    }
    // A complete backup is not silently "resumed" into a stale copy.
    let (ok, _, err) = cairn(&["backup", "events", file, "--url", &from]);
    assert!(
        !ok && err.contains("already holds a complete backup"),
        "{err}"
    );
    // A context read after the restore supersedes the restored siblings.
    let siblings = target.nodes[0].call("GET", "/tables/events/keys/twins0", &[], b"");
    assert_eq!(siblings.status, 300);
    let context = siblings.context().unwrap().to_owned();
    let resolved = target.nodes[2].call(
        "PUT",
        "/tables/events/keys/twins0",
        &[("x-cairn-context", &context)],
        b"both",
    );
    assert_eq!(resolved.status, 204);
    assert_eq!(
        read(&target.nodes[0], "twins0"),
        (200, vec!["both".to_owned()])
    );

    // A file that is no backup is refused by name.
    let junk = root.join("junk");
    std::fs::write(&junk, b"hello").unwrap();
    let (ok, _, err) = cairn(&["restore", "events", junk.to_str().unwrap(), "--url", &into]);
    assert!(!ok && err.contains("not a Cairn backup"), "{err}");
}
