//! Abuse and accidents (issue 9): what a hostile or unlucky user or operator
//! does to a running node must not stop it, lose data or break the cluster.

use std::process::{Command, Stdio};
use std::time::Duration;

use cairn_tests::{cairn_bin, wait_until, Cluster};

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
    let status = wait_until(
        Duration::from_secs(20),
        "the second process to exit",
        || second.try_wait().ok().flatten(),
    );
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
