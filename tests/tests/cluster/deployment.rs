//! The deployment files, checked as far as this machine can (no container
//! engine runs here): the Kubernetes manifests and the compose file parse,
//! have the shape a StatefulSet deployment needs, and the binary starts
//! with exactly the settings they pass (only mounted files and bound ports
//! moved to this machine's temp dir and free ports). And one seed list for
//! every node, with advertised host names, forms one cluster.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cairn_tests::{cairn_bin, free_port, temp_dir, try_call, wait_until, NodeProcess};
use serde_yaml_ng::Value;

use crate::security::issue_certificate;

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn yaml_documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo_file(path)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|doc: &Value| !doc.is_null())
        .collect()
}

/// Replaces `$(NAME)` references as Kubernetes does.
fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = value.to_owned();
    for (name, known) in env {
        out = out.replace(&format!("$({name})"), known);
    }
    out
}

/// A node started from `env` alone (plus `serve`), its stdout's listening
/// line read; killed on drop.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_with_env(env: &BTreeMap<String, String>, log: &Path) -> (Started, String) {
    let mut command = Command::new(cairn_bin());
    command.arg("serve");
    for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("CAIRN_") || k == "RUST_LOG") {
        command.env_remove(name);
    }
    let log = std::fs::File::create(log).unwrap();
    let mut child = command
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn cairn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening"), "no listening line: {line:?}");
    (Started(child), line)
}

#[test]
fn the_statefulset_has_its_parts_and_a_pod_starts_with_exactly_its_settings() {
    let docs = yaml_documents("deploy/kubernetes/cairn.yaml");
    let kind = |k: &'static str| docs.iter().filter(move |d| d["kind"] == k);
    let headless = kind("Service")
        .find(|s| s["spec"]["clusterIP"] == "None")
        .expect("a headless Service");
    let set = kind("StatefulSet").next().expect("a StatefulSet");
    assert_eq!(set["spec"]["serviceName"], headless["metadata"]["name"]);
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    assert_eq!(
        set["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"][0], "ReadWriteOnce",
        "one volume per pod"
    );
    let pdb = kind("PodDisruptionBudget")
        .next()
        .expect("a PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let pod = &set["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/health");
    let secrets: Vec<&str> = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .collect();
    assert_eq!(
        secrets,
        ["cairn-cluster-secret", "cairn-admin-key", "cairn-tls"],
        "the cluster secret, the admin key and TLS come from Secrets"
    );

    // The environment pod cairn-0 gets, its mounted files written here.
    let scratch = temp_dir("k8s-pod");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut env = BTreeMap::new();
    for var in container["env"].as_sequence().unwrap() {
        let name = var["name"].as_str().unwrap().to_owned();
        let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => "cairn-0".to_owned(),
            Some(other) => panic!("unexpected fieldRef {other}"),
            None => expand(var["value"].as_str().unwrap(), &env),
        };
        env.insert(name, value);
    }
    assert_eq!(
        env["CAIRN_NODE_ID"], "cairn-0",
        "the node id is the pod name"
    );
    assert_eq!(env["CAIRN_ADVERTISE_PEER"], "cairn-0.cairn:9080");
    assert_eq!(
        env["CAIRN_SEED"], "cairn-0.cairn:9080,cairn-1.cairn:9080,cairn-2.cairn:9080",
        "every pod gets every pod as a seed"
    );
    let (_, cert, key) = issue_certificate("cairn k8s test CA");
    let mounted = |path: &str, text: &str| {
        let local = scratch.join(path.trim_start_matches('/').replace('/', "_"));
        std::fs::write(&local, text).unwrap();
        local.to_string_lossy().into_owned()
    };
    let admin_key = "k8s-admin-key-0123456789abcdef0123456789";
    for (name, text) in [
        (
            "CAIRN_CLUSTER_SECRET_FILE",
            "k8s-cluster-secret-0123456789abcdef012345",
        ),
        ("CAIRN_ADMIN_KEY_FILE", admin_key),
        ("CAIRN_TLS_CERT", cert.as_str()),
        ("CAIRN_TLS_KEY", key.as_str()),
    ] {
        let path = env[name].clone();
        assert!(
            path.starts_with("/etc/cairn/"),
            "{name} is mounted from a Secret: {path}"
        );
        env.insert(name.to_owned(), mounted(&path, text));
    }
    env.insert(
        "CAIRN_DATA_DIR".into(),
        scratch.join("data").to_string_lossy().into_owned(),
    );
    // The bound ports move to free ones; the addresses stay 0.0.0.0.
    let (http, peer) = (free_port(1), free_port(1));
    assert_eq!(env["CAIRN_HTTP"], "0.0.0.0:8080");
    assert_eq!(env["CAIRN_PEER"], "0.0.0.0:9080");
    env.insert("CAIRN_HTTP".into(), format!("0.0.0.0:{http}"));
    env.insert("CAIRN_PEER".into(), format!("0.0.0.0:{peer}"));
    let (_node, line) = start_with_env(&env, &scratch.join("cairn-0.log"));
    assert!(line.contains("cairn node cairn-0"), "{line}");
    // Its probe's path answers over HTTPS; data needs the key.
    let agent = |path: &str, key: Option<&str>| {
        let mut command = Command::new("curl");
        command.args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"]);
        if let Some(key) = key {
            command.args(["-H", &format!("authorization: Bearer {key}")]);
        }
        let out = command
            .arg(format!("https://127.0.0.1:{http}{path}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_until(
        Duration::from_secs(10),
        "the readiness path over HTTPS",
        || (agent("/health", None) == "200").then_some(()),
    );
    assert_eq!(agent("/cluster", None), "401", "auth required");
    let status = Command::new("curl")
        .args(["-sk", "-H", &format!("authorization: Bearer {admin_key}")])
        .arg(format!("https://127.0.0.1:{http}/cluster"))
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    // cairn-0 is the first seed and no other seed answers here: it founded
    // the cluster, telling members its advertised names.
    assert_eq!(status["node"], "cairn-0", "{status}");
    assert_eq!(
        status["members"][0]["peer"], "cairn-0.cairn:9080",
        "{status}"
    );
    assert_eq!(
        status["members"][0]["http"], "cairn-0.cairn:8080",
        "{status}"
    );
    assert_eq!(status["peer_links"]["authenticated"], true, "{status}");
    assert!(
        status["members"][0]["partitions"].as_u64() > Some(0),
        "{status}"
    );
}

#[test]
fn every_compose_service_starts_with_its_settings_and_the_image_environment() {
    let compose = &yaml_documents("docker-compose.yml")[0];
    let services = compose["services"].as_mapping().unwrap();
    assert_eq!(services.len(), 3);
    // The image's ENV lines, as the Dockerfile sets them.
    let dockerfile = std::fs::read_to_string(repo_file("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("USER 65532"),
        "the image runs as non-root"
    );
    let mut image_env = BTreeMap::new();
    let env_block = dockerfile
        .split("\nENV ")
        .nth(1)
        .expect("an ENV instruction")
        .split("\nEXPOSE")
        .next()
        .unwrap();
    for pair in env_block.split_whitespace().filter(|w| w.contains('=')) {
        let (k, v) = pair.split_once('=').unwrap();
        image_env.insert(k.to_owned(), v.to_owned());
    }
    assert_eq!(image_env["CAIRN_HTTP"], "0.0.0.0:8080");
    let scratch = temp_dir("compose");
    std::fs::create_dir_all(&scratch).unwrap();
    let secret = scratch.join("cluster-secret");
    std::fs::write(&secret, "compose-cluster-secret-0123456789abcdef01").unwrap();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        let mut env = image_env.clone();
        for (k, v) in service["environment"].as_mapping().unwrap() {
            env.insert(k.as_str().unwrap().into(), v.as_str().unwrap().into());
        }
        assert_eq!(env["CAIRN_NODE_ID"], name);
        assert_eq!(env["CAIRN_ADVERTISE_PEER"], format!("{name}:9080"));
        assert_eq!(
            env["CAIRN_CLUSTER_SECRET_FILE"],
            "/run/secrets/cluster_secret"
        );
        env.insert(
            "CAIRN_CLUSTER_SECRET_FILE".into(),
            secret.to_string_lossy().into_owned(),
        );
        env.insert(
            "CAIRN_DATA_DIR".into(),
            scratch.join(name).to_string_lossy().into_owned(),
        );
        // Check, not run: the cluster's other members are not reachable by
        // these names here.
        let mut command = Command::new(cairn_bin());
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("CAIRN_")) {
            command.env_remove(k);
        }
        let out = command
            .args(["serve", "--print-config"])
            .envs(&env)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: toml::Table = String::from_utf8_lossy(&out.stdout).parse().unwrap();
        assert_eq!(printed["node-id"].as_str(), Some(name));
        assert_eq!(printed["http"].as_str(), Some("0.0.0.0:8080"));
        let seeds: Vec<&str> = printed["seed"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s.as_str())
            .collect();
        assert_eq!(seeds, ["cairn1:9080", "cairn2:9080", "cairn3:9080"]);
        assert_eq!(
            printed["advertise-http"].as_str(),
            Some(format!("{name}:8080").as_str())
        );
    }
}

#[test]
fn one_seed_list_for_every_node_forms_one_cluster_and_a_wiped_first_seed_rejoins_it() {
    let root = temp_dir("advertise");
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(1), free_port(1))).collect();
    let seeds: Vec<String> = ports
        .iter()
        .map(|(_, peer)| format!("localhost:{peer}"))
        .collect();
    let mut nodes: Vec<NodeProcess> = ports
        .iter()
        .enumerate()
        .map(|(i, (http, peer))| {
            let id = format!("node{}", i + 1);
            let advertise_http = format!("localhost:{http}");
            let advertise_peer = format!("localhost:{peer}");
            NodeProcess::start(
                &id,
                &root.join(&id),
                &format!("127.0.0.1:{http}"),
                &format!("127.0.0.1:{peer}"),
                &seeds,
                &[
                    "--advertise-http",
                    &advertise_http,
                    "--advertise-peer",
                    &advertise_peer,
                    "--partitions",
                    "32",
                ],
            )
        })
        .collect();
    for node in &nodes {
        wait_until(Duration::from_secs(20), "one cluster of three", || {
            let status = try_call("GET", &node.url("/cluster"), &[], b"")
                .ok()?
                .json();
            let members = status["members"].as_array()?.clone();
            let formed = members.len() == 3
                && members.iter().all(|m| {
                    m["status"] == "up"
                        && m["peer"]
                            .as_str()
                            .is_some_and(|p| p.starts_with("localhost:"))
                        && m["partitions"].as_u64() > Some(0)
                });
            formed.then_some(())
        });
    }
    // node1, the first seed, loses its data dir: another seed answers, so
    // it rejoins the cluster instead of founding a second one beside it.
    let founded = "no other seed answers: founding a new cluster";
    let log = |node: &NodeProcess| std::fs::read_to_string(node.log_path()).unwrap_or_default();
    assert_eq!(
        log(&nodes[0]).matches(founded).count(),
        1,
        "node1 founded the cluster"
    );
    nodes[0].wipe();
    nodes[0].start_again_until_admitted(3);
    assert_eq!(
        log(&nodes[0]).matches(founded).count(),
        1,
        "the wiped first seed founded a second cluster"
    );
    assert!(log(&nodes[0]).contains("another seed answers"));
}
