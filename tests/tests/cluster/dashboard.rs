//! The dashboard at `GET /`, loaded in headless Chromium against a live
//! 4-node cluster: it shows the members, the ring, tables and plugins,
//! and — refreshing by itself, in one page session — a paused node turning
//! `down`, a pending hint appearing, then draining once the node is back,
//! and the live request rate. Saves a screenshot to
//! `target/screenshots/dashboard.png` (and to `docs/dashboard.png` with
//! `CAIRN_SCREENSHOT_DOCS=1`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_tests::browser::Browser;
use cairn_tests::{plugin_wasm, Cluster};

use crate::handoff::keys_with_primaries;
use crate::plugins::upload;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn the_dashboard_shows_a_node_going_down_a_hint_pending_and_draining_and_the_request_rate() {
    let cluster = Cluster::start("dashboard", 4, &["--partitions", "64"]);
    cluster.create_table("events", r#"{"n":3,"r":2,"w":2,"merge":"siblings"}"#);
    let uploaded = upload(
        &cluster.nodes[0],
        "shopping-cart",
        &plugin_wasm("shopping-cart"),
    );
    assert_eq!(uploaded.status, 201, "{}", uploaded.text());
    let sha256 = uploaded.json()["sha256"].as_str().unwrap().to_owned();
    cluster.create_table(
        "carts",
        r#"{"n":3,"r":2,"w":2,"merge":"plugin","plugin":"shopping-cart"}"#,
    );
    let browser = Browser::start(1400, 1000);
    browser.goto(&cluster.nodes[0].url("/"));
    browser.wait_for(
        WAIT,
        "the first refresh",
        "return Number(document.body.dataset.refreshes) >= 1 || null",
    );
    assert_eq!(
        browser.eval("return document.getElementById('node').textContent"),
        "node1"
    );
    let statuses = browser.eval(
        "return [...document.querySelectorAll('tr[data-member]')].map(r => r.dataset.member + '=' + r.dataset.status)",
    );
    assert_eq!(
        statuses,
        serde_json::json!(["node1=up", "node2=up", "node3=up", "node4=up"])
    );
    // The ring as a picture: an arc per partition, every member owning some.
    let arcs = browser.eval("return document.querySelectorAll('#ring path[data-owner]').length");
    assert_eq!(arcs, 64);
    let owners = browser.eval(
        "return [...new Set([...document.querySelectorAll('#ring path')].map(p => p.dataset.owner))].sort()",
    );
    assert_eq!(
        owners,
        serde_json::json!(["node1", "node2", "node3", "node4"])
    );
    let carts = browser.eval(
        "return [...document.querySelectorAll('tr[data-table=carts] td')].map(td => td.textContent)",
    );
    assert_eq!(
        carts,
        serde_json::json!(["carts", "3", "2", "2", "plugin", "shopping-cart", "lmdb"])
    );
    let plugin_title = browser
        .eval("return document.querySelector('tr[data-plugin=\"shopping-cart\"] code').title");
    assert_eq!(plugin_title, sha256.as_str());

    // Load on node1: the page's rate and p99 come alive.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, url) = (stop.clone(), cluster.nodes[0].url("/tables/events/keys/"));
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("load{}", i % 50);
                let _ = cairn_tests::try_call("PUT", &format!("{url}{key}"), &[], b"x");
                let _ = cairn_tests::try_call("GET", &format!("{url}{key}"), &[], b"");
                i += 1;
            }
        })
    };
    browser.wait_for(
        WAIT,
        "a request rate above zero and a p99",
        "const r = parseFloat(document.getElementById('rate').textContent); \
         return r > 0 && document.getElementById('p99').textContent.startsWith('≤') ? r : null",
    );
    let refreshes_before = browser.eval("return Number(document.body.dataset.refreshes)");

    // node4 pauses: the same page, refreshing by itself, shows it down.
    cluster.nodes[3].pause();
    browser.wait_for(
        WAIT,
        "node4 shown down",
        "const r = document.querySelector('tr[data-member=node4]'); return r && r.dataset.status === 'down' || null",
    );
    let refreshes_after = browser.eval("return Number(document.body.dataset.refreshes)");
    assert!(
        refreshes_after.as_u64() > refreshes_before.as_u64(),
        "the page refreshed by itself: {refreshes_before} then {refreshes_after}"
    );

    // Writes for node4's keys through node1: node1 keeps hints for node4
    // when it is their stand-in; keys it would stand in for are chosen.
    let keys: Vec<String> = keys_with_primaries(&cluster.nodes[0], &["node4"], 400)
        .into_iter()
        .filter(|key| {
            let preflist =
                cluster.nodes[0].call("GET", &format!("/tables/events/preflist/{key}"), &[], b"");
            preflist.json()["fallbacks"]
                .as_array()
                .is_some_and(|f| f.iter().any(|n| n == "node1"))
        })
        .take(10)
        .collect();
    assert!(!keys.is_empty(), "some key node1 stands in for");
    for key in &keys {
        let reply = cluster.nodes[0].call("PUT", &format!("/tables/events/keys/{key}"), &[], b"v");
        assert_eq!(reply.status, 204, "{}", reply.text());
    }
    let pending = browser.wait_for(
        WAIT,
        "a pending hint for node4",
        "const r = document.querySelector('tr[data-hint-target=node4]'); \
         return r && Number(r.dataset.pending) > 0 ? Number(r.dataset.pending) : null",
    );
    eprintln!("the dashboard shows {pending} hints pending for node4");
    let screenshot =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots/dashboard.png");
    browser.screenshot(&screenshot);
    if std::env::var_os("CAIRN_SCREENSHOT_DOCS").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png");
        std::fs::copy(&screenshot, docs).expect("copy the screenshot into docs/");
    }

    // node4 resumes: the hints drain, on the same page.
    cluster.nodes[3].resume();
    browser.wait_for(
        WAIT,
        "node4 shown up again",
        "const r = document.querySelector('tr[data-member=node4]'); return r && r.dataset.status === 'up' || null",
    );
    browser.wait_for(
        WAIT,
        "the hints for node4 drained",
        "const r = document.querySelector('tr[data-hint-target=node4]'); \
         return (!r || Number(r.dataset.pending) === 0) || null",
    );
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
}
