//! `merge: plugin` through real clusters: the seed's shopping cart, hot swaps,
//! hostile plugins, and the upload rules.

use std::time::Duration;

use cairn_tests::{plugin_wasm, wait_until, wat_plugin, Cluster, NodeProcess};

/// Writes two concurrent values to a fresh key through two nodes, then reads it
/// through `reader` until the plugin is available there.
pub(crate) fn concurrent_then_read(
    cluster: &Cluster,
    table: &str,
    label: &str,
    a: &str,
    b: &str,
    reader: usize,
) -> cairn_tests::Reply {
    let mut attempt = 0;
    wait_until(
        Duration::from_secs(2),
        "the plugin to be available on the reader",
        || {
            attempt += 1;
            let path = format!("/tables/{table}/keys/{label}-{attempt}");
            assert_eq!(
                cluster.nodes[0]
                    .call("PUT", &path, &[], a.as_bytes())
                    .status,
                204
            );
            assert_eq!(
                cluster.nodes[1]
                    .call("PUT", &path, &[], b.as_bytes())
                    .status,
                204
            );
            let read = cluster.nodes[reader].call("GET", &path, &[], b"");
            let unavailable = read
                .header("x-cairn-plugin-error")
                .is_some_and(|e| e.starts_with("unavailable"));
            (!unavailable).then_some(read)
        },
    )
}

pub(crate) fn upload(node: &NodeProcess, name: &str, bytes: &[u8]) -> cairn_tests::Reply {
    node.call("PUT", &format!("/plugins/{name}"), &[], bytes)
}

#[test]
fn concurrent_carts_merge_server_side_and_a_reupload_reaches_every_node() {
    let cluster = Cluster::start("carts", 3, &[]);
    let created = upload(
        &cluster.nodes[0],
        "shopping-cart",
        &plugin_wasm("shopping-cart"),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["exports"], serde_json::json!(["reconcile"]));
    // Answered once every member holds the module: usable anywhere at once.
    assert_eq!(
        created.json()["nodes"],
        serde_json::json!({"holding": 3, "members": 3})
    );
    cluster.create_table(
        "carts",
        r#"{"n":3,"r":2,"w":2,"merge":"plugin","plugin":"shopping-cart"}"#,
    );

    let a = r#"{"apple":{"qty":1,"price":"0.50","updated_ms":10}}"#;
    let b = r#"{"apple":{"qty":2,"price":"0.45","updated_ms":20},"tea":{"qty":1,"price":"3.00","updated_ms":5}}"#;
    let merged = r#"{"apple":{"qty":2,"price":"0.45","updated_ms":20},"tea":{"qty":1,"price":"3.00","updated_ms":5}}"#;
    for reader in 0..3 {
        let read = concurrent_then_read(&cluster, "carts", &format!("cart{reader}"), a, b, reader);
        assert_eq!(read.status, 200, "{}", read.text());
        assert_eq!(read.header("x-cairn-merged"), Some("2"));
        assert_eq!(read.header("content-type"), Some("application/json"));
        assert_eq!(read.text(), merged);
    }
    // The merge was written back: every replica now holds the one merged version.
    let path = "/tables/carts/keys/written-back";
    assert_eq!(
        cluster.nodes[0].call("PUT", path, &[], a.as_bytes()).status,
        204
    );
    assert_eq!(
        cluster.nodes[1].call("PUT", path, &[], b.as_bytes()).status,
        204
    );
    let first = wait_until(Duration::from_secs(2), "a merge", || {
        let r = cluster.nodes[0].call("GET", path, &[], b"");
        (r.status == 200).then_some(r)
    });
    assert_eq!(first.header("x-cairn-merged"), Some("2"));
    let context = first.context().unwrap().to_owned();
    let again = wait_until(
        Duration::from_secs(5),
        "the write-back on every replica",
        || {
            let r = cluster.nodes[2].call("GET", &format!("{path}?r=3"), &[], b"");
            (r.status == 200 && r.header("x-cairn-merged").is_none()).then_some(r)
        },
    );
    assert_eq!(again.text(), merged);
    // Writing with the merge's context replaces it.
    let update = r#"{"apple":{"qty":5,"price":"0.45","updated_ms":30}}"#;
    assert_eq!(
        cluster.nodes[1]
            .call(
                "PUT",
                path,
                &[("x-cairn-context", &context)],
                update.as_bytes()
            )
            .status,
        204
    );
    assert_eq!(
        cluster.nodes[2]
            .call("GET", &format!("{path}?r=3"), &[], b"")
            .text(),
        update
    );

    // A re-upload under the same name replaces the plugin for the table, on every node.
    let swapped = upload(
        &cluster.nodes[1],
        "shopping-cart",
        &wat_plugin("(i64.const 137438953477)"),
    );
    assert_eq!(swapped.status, 200, "{}", swapped.text());
    for reader in 0..3 {
        wait_until(
            Duration::from_secs(2),
            "the new plugin on every node",
            || {
                let read =
                    concurrent_then_read(&cluster, "carts", &format!("swap{reader}"), a, b, reader);
                (read.status == 200 && read.text() == "hi").then_some(())
            },
        );
    }
}

#[test]
fn a_failing_plugin_answers_the_siblings_and_loses_nothing() {
    let cluster = Cluster::start("hostile", 3, &[]);
    for (name, body) in [
        ("trapper", "unreachable"),
        ("looper", "(loop $l (br $l)) (i64.const 0)"),
        ("liar", "(i64.const 0x7fffffff00000010)"),
    ] {
        assert_eq!(
            upload(&cluster.nodes[0], name, &wat_plugin(body)).status,
            201
        );
        cluster.create_table(name, &format!(r#"{{"merge":"plugin","plugin":"{name}"}}"#));
    }
    for (table, kind) in [("trapper", "trap"), ("looper", "fuel"), ("liar", "output")] {
        let read = concurrent_then_read(&cluster, table, "k", "one", "two", 2);
        assert_eq!(read.status, 300, "{table}: {}", read.text());
        let error = read
            .header("x-cairn-plugin-error")
            .unwrap_or_default()
            .to_owned();
        assert!(error.starts_with(kind), "{table}: {error}");
        assert_eq!(read.sibling_values(), vec!["one", "two"]);
        assert_eq!(
            cluster.nodes[2].call("GET", "/health", &[], b"").text(),
            "ok"
        );
    }
}

#[test]
fn uploads_are_validated_and_plugins_in_use_are_protected() {
    let cluster = Cluster::start("uploads", 1, &[]);
    let node = &cluster.nodes[0];
    let garbage = upload(node, "bad", b"not a wasm module");
    assert_eq!(garbage.status, 400);
    assert!(garbage.json()["error"]
        .as_str()
        .unwrap()
        .contains("invalid plugin"));
    let wasi = wat::parse_str(r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))) (memory (export "memory") 1))"#).unwrap();
    assert_eq!(upload(node, "wasi", &wasi).status, 400);
    assert_eq!(
        upload(node, "Bad-Name", &plugin_wasm("set-union")).status,
        400
    );
    assert_eq!(
        node.call(
            "PUT",
            "/tables/t",
            &[],
            br#"{"n":1,"r":1,"w":1,"merge":"plugin","plugin":"missing"}"#
        )
        .status,
        400
    );

    assert_eq!(upload(node, "union", &plugin_wasm("set-union")).status, 201);
    assert_eq!(
        node.call(
            "PUT",
            "/tables/t",
            &[],
            br#"{"n":1,"r":1,"w":1,"merge":"plugin","plugin":"union"}"#
        )
        .status,
        200
    );
    // size-router exports select_storage only: the table needs reconcile.
    assert_eq!(
        upload(node, "union", &plugin_wasm("size-router")).status,
        409
    );
    assert_eq!(node.call("DELETE", "/plugins/union", &[], b"").status, 409);
    assert_eq!(
        node.call("GET", "/plugins/union", &[], b"").json()["name"],
        "union"
    );
    assert_eq!(
        node.call("GET", "/plugins", &[], b"").json()["plugins"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    assert_eq!(upload(node, "spare", &plugin_wasm("counter")).status, 201);
    assert_eq!(node.call("DELETE", "/plugins/spare", &[], b"").status, 204);
    assert_eq!(node.call("GET", "/plugins/spare", &[], b"").status, 404);
    assert_eq!(node.call("DELETE", "/plugins/spare", &[], b"").status, 404);
}

#[test]
fn a_storage_plugin_sends_large_objects_to_blobs_and_small_ones_to_lmdb() {
    let mut cluster = Cluster::start("router", 3, &[]);
    assert_eq!(
        upload(
            &cluster.nodes[0],
            "size-router",
            &plugin_wasm("size-router")
        )
        .status,
        201
    );
    let bad = cluster.nodes[0].call(
        "PUT",
        "/tables/docs",
        &[],
        br#"{"storage":"plugin","storage_plugin":"nope"}"#,
    );
    assert_eq!(bad.status, 400);
    cluster.create_table(
        "docs",
        r#"{"merge":"siblings","storage":"plugin","storage_plugin":"size-router"}"#,
    );
    let blob_files = |cluster: &Cluster| -> Vec<usize> {
        cluster
            .nodes
            .iter()
            .map(|n| {
                std::fs::read_dir(n.data_dir.join("blobs"))
                    .map(|d| d.count())
                    .unwrap_or(0)
            })
            .collect()
    };
    let small = vec![b's'; 100];
    let large: Vec<u8> = (0..100 * 1024).map(|i: u32| (i % 253) as u8).collect();
    assert_eq!(
        cluster.nodes[1]
            .call("PUT", "/tables/docs/keys/small?w=3", &[], &small)
            .status,
        204
    );
    let mut attempt = 0;
    wait_until(
        Duration::from_secs(2),
        "the storage plugin on the coordinator",
        || {
            attempt += 1;
            let path = format!("/tables/docs/keys/probe-{attempt}?w=3");
            assert_eq!(cluster.nodes[1].call("PUT", &path, &[], &large).status, 204);
            (blob_files(&cluster) == vec![1, 1, 1]).then_some(())
        },
    );
    let put = cluster.nodes[0].call("PUT", "/tables/docs/keys/large?w=3", &[], &large);
    assert_eq!(put.status, 204);
    assert_eq!(
        blob_files(&cluster),
        vec![1, 1, 1],
        "equal values share one blob file"
    );
    assert_eq!(
        cluster.nodes[0]
            .call("DELETE", "/plugins/size-router", &[], b"")
            .status,
        409
    );
    // Shrinking the object moves it back to LMDB.
    let context = put.context().unwrap().to_owned();
    assert_eq!(
        cluster.nodes[2]
            .call(
                "PUT",
                "/tables/docs/keys/large?w=3",
                &[("x-cairn-context", &context)],
                &small
            )
            .status,
        204
    );
    for node in &mut cluster.nodes {
        node.restart();
    }
    cluster.wait_formed();
    let read = |node: usize, key: &str| {
        cluster.nodes[node].call("GET", &format!("/tables/docs/keys/{key}"), &[], b"")
    };
    let probe = read(2, &format!("probe-{attempt}"));
    assert!(
        probe.status == 200 && probe.body == large,
        "the large value came back from its blob"
    );
    let shrunk = read(1, "large");
    assert!(
        shrunk.status == 200 && shrunk.body == small,
        "the shrunk value came back from LMDB"
    );
    let kept = read(0, "small");
    assert!(kept.status == 200 && kept.body == small);
}
