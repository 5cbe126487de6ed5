//! Plugin authoring on the command line: `cairn plugin new`, `check`.

use std::process::Command;

use cairn_tests::{cairn_bin, temp_dir, wait_until};
use std::time::Duration;

fn check(file: &std::path::Path, samples: Option<&std::path::Path>) -> (i32, String) {
    let mut command = Command::new(cairn_bin());
    command.args(["plugin", "check"]).arg(file);
    if let Some(samples) = samples {
        command.arg("--samples").arg(samples);
    }
    let output = command.output().expect("run cairn plugin check");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn example(name: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    root.join("target/wasm32-unknown-unknown/plugin")
        .join(format!("{}.wasm", name.replace('-', "_")))
}

#[test]
fn plugin_check_passes_the_examples_and_catches_a_non_commutative_merge() {
    for name in ["shopping-cart", "set-union", "counter", "size-router"] {
        let (code, out) = check(&example(name), None);
        assert_eq!(code, 0, "{name}: {out}");
        assert!(out.contains("PASS"), "{name}: {out}");
    }
    // "First sibling wins": answers Merged([first byte of the first sibling]).
    let dir = temp_dir("check");
    let first_wins = cairn_tests::wat_plugin(
        "(i32.store8 (i32.const 60000) (i32.const 0))
         (i32.store8 (i32.const 60001) (i32.const 1))
         (i32.store8 (i32.const 60002) (i32.load8_u (i32.add (local.get $ptr) (i32.const 10))))
         (i32.store8 (i32.const 60003) (i32.const 0))
         (i64.or (i64.shl (i64.const 60000) (i64.const 32)) (i64.const 4))",
    );
    let module = dir.join("first_wins.wasm");
    std::fs::write(&module, first_wins).unwrap();
    let samples = dir.join("samples.json");
    std::fs::write(&samples, "[1, 2, 3]").unwrap();
    let (code, out) = check(&module, Some(&samples));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("VIOLATION of commutativity"), "{out}");
    assert!(
        out.contains("sibling 1: 1") && out.contains("sibling 2: 2"),
        "minimal counterexample: {out}"
    );
    // Samples a JSON plugin cannot parse prove nothing.
    let (code, out) = check(&example("shopping-cart"), Some(&samples));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("INCONCLUSIVE"), "{out}");
}

#[test]
fn plugin_new_scaffolds_a_crate_that_builds_and_passes_check() {
    let dir = temp_dir("scaffold");
    let status = Command::new(cairn_bin())
        .args(["plugin", "new", "my-merge", "--dir"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    let crate_dir = dir.join("my-merge");
    // Its own target dir: the workspace's is locked by the running `cargo test`.
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("target/scaffold");
    let build = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "--quiet",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&crate_dir)
        .status()
        .unwrap();
    assert!(
        build.success(),
        "the generated crate must build as generated"
    );
    let module = target.join("wasm32-unknown-unknown/release/my_merge.wasm");
    let (code, out) = check(&module, None);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn cairn_bench_loads_runs_a_workload_and_reports_json() {
    let cluster = cairn_tests::Cluster::start("bench", 3, &[]);
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url("")).collect();
    let output = Command::new(cairn_bin())
        .args([
            "bench",
            "--urls",
            &urls.join(","),
            "--merge",
            "siblings",
            "--workload",
            "a",
        ])
        .args(["--keys", "50", "--clients", "4", "--ops", "300", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ops"], 300);
    assert_eq!(report["errors"], serde_json::json!({}));
    assert_eq!(report["load"]["errors"], serde_json::json!({}));
    let reads = report["latency"]["read"]["count"].as_u64().unwrap();
    let updates = report["latency"]["update"]["count"].as_u64().unwrap();
    assert_eq!(reads + updates, 300);
    assert!(
        reads > 50 && updates > 50,
        "workload A is about half and half: {reads}/{updates}"
    );
    assert!(report["latency"]["read"]["p99_ms"].as_f64().unwrap() > 0.0);
    // Every loaded key is there (as siblings when two clients updated it
    // concurrently: four clients share 50 keys).
    for key in [0, 25, 49] {
        let read = cluster.nodes[0].call("GET", &format!("/tables/bench/keys/k{key}"), &[], b"");
        let values = match read.status {
            200 => vec![read.text()],
            300 => read.sibling_values(),
            other => panic!("k{key}: {other} {}", read.text()),
        };
        assert!(
            !values.is_empty() && values.iter().all(|v| v.len() == 100),
            "k{key}: {values:?}"
        );
    }
}

#[test]
fn cairn_dev_refuses_ports_in_use_instead_of_adopting_another_cluster() {
    // Something else answers on the port node1 would take, like a formed
    // one-node cluster would.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let impostor = taken.try_clone().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let body = r#"{"members":[{"id":"node1","status":"up","partitions":64}]}"#;
        for mut stream in impostor.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let dir = temp_dir("dev-port-taken");
    let mut child = Command::new(cairn_bin())
        .args(["dev", "--nodes", "1", "--base-port", &port.to_string()])
        .arg("--data-dir")
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("cairn dev kept running on ports another server holds");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("port in use"), "{stderr}");
    drop(taken);
}

#[test]
fn cairn_dev_reports_a_node_that_cannot_start_and_exits() {
    let port = cairn_tests::free_port(101);
    let dir = temp_dir("dev-node-dies");
    // node2's data dir belongs to another node: it cannot start, and the
    // cluster printed would not be the one running.
    std::fs::create_dir_all(&dir).unwrap();
    // A serve whose HTTP port is taken claims its data dir, then exits.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = Command::new(cairn_bin())
        .args(["serve", "--node-id", "other", "--peer", "127.0.0.1:0"])
        .args(["--http", &taken.local_addr().unwrap().to_string()])
        .arg("--data-dir")
        .arg(dir.join("node2"))
        .output()
        .unwrap();
    assert!(!other.status.success());
    drop(taken);
    let mut dev = Command::new(cairn_bin())
        .args(["dev", "--nodes", "2", "--base-port", &port.to_string()])
        .arg("--data-dir")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_until(Duration::from_secs(30), "cairn dev to exit", || {
        dev.try_wait().unwrap()
    });
    assert!(!status.success(), "cairn dev exited 0 with a node gone");
    let mut stderr = String::new();
    use std::io::Read as _;
    dev.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("node2 failed"), "{stderr}");
    assert!(stderr.contains("belongs to node other"), "{stderr}");
}
