use std::time::Duration;

use super::*;
use crate::core::msg::{ClusterStatus, HintStatus, MemberStatus, TombstoneStatus};
use crate::core::stats::{NodeSizes, NodeStats};
use crate::core::types::NodeId;

fn report() -> NodeReport {
    let mut stats = NodeStats::default();
    stats.handoff.hints_stored = 7;
    stats.handoff.hints_delivered = 5;
    stats.client.gets = 3;
    stats.client.answered_quorum_not_reached = 2;
    let sizes = NodeSizes {
        hints_pending: 2,
        tombstones_pending: 4,
        ..NodeSizes::default()
    };
    let member = |id: &str, status: &'static str, partitions: usize| MemberStatus {
        id: NodeId::new(id).unwrap(),
        http: String::new(),
        peer: String::new(),
        status,
        partitions,
        partitions_next: partitions,
    };
    NodeReport {
        stats,
        sizes,
        cluster: ClusterStatus {
            node: NodeId::new("node1").unwrap(),
            members: vec![member("node1", "up", 43), member("node2", "down", 42)],
            join: None,
            antientropy: None,
            hints: vec![HintStatus {
                owner: NodeId::new("node2").unwrap(),
                pending: 2,
                delivered: 5,
                state: "owner down".into(),
                error: None,
            }],
            hints_refused_full: 1,
            tombstones: TombstoneStatus {
                pending: 4,
                collected: 0,
                checks_timed_out: 0,
                grace_ms: None,
            },
            ring_move: None,
            transfer: None,
            ring_owners: Vec::new(),
        },
    }
}

/// The value of the sample line starting with `series ` in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[test]
fn the_core_figures_are_encoded_with_prometheus_names() {
    let metrics = NodeMetrics::new("node1");
    let text = metrics.encode(report(), 3);
    assert_eq!(sample(&text, "cairn_hints_created_total"), Some(7.0));
    assert_eq!(sample(&text, "cairn_hints_delivered_total"), Some(5.0));
    assert_eq!(sample(&text, "cairn_hints_dropped_total"), Some(1.0));
    assert_eq!(sample(&text, "cairn_hints_pending"), Some(2.0));
    assert_eq!(
        sample(&text, "cairn_hints_pending_by_target{target=\"node2\"}"),
        Some(2.0)
    );
    assert_eq!(sample(&text, "cairn_tombstones_pending"), Some(4.0));
    assert_eq!(sample(&text, "cairn_quorum_failures_total"), Some(2.0));
    assert_eq!(
        sample(&text, "cairn_client_operations_total{op=\"get\"}"),
        Some(3.0)
    );
    assert_eq!(sample(&text, "cairn_members{status=\"up\"}"), Some(1.0));
    assert_eq!(sample(&text, "cairn_members{status=\"down\"}"), Some(1.0));
    assert_eq!(
        sample(&text, "cairn_partitions_owned{member=\"node2\"}"),
        Some(42.0)
    );
    assert_eq!(sample(&text, "cairn_peer_links_refused_total"), Some(3.0));
    assert!(text.contains("cairn_build_info{version=\""), "{text}");
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn requests_count_by_op_table_and_status_and_unknown_tables_share_one_label() {
    let metrics = NodeMetrics::new("node1");
    metrics.publish_names(std::iter::once("carts".to_owned()), std::iter::empty());
    let took = Duration::from_millis(3);
    metrics.request("get", metrics.table_label(Some("carts")), 200, took);
    metrics.request("get", metrics.table_label(Some("carts")), 200, took);
    for i in 0..50 {
        let name = format!("random{i}");
        metrics.request("get", metrics.table_label(Some(&name)), 404, took);
    }
    let text = metrics.encode(report(), 0);
    assert_eq!(
        sample(
            &text,
            "cairn_http_requests_total{op=\"get\",table=\"carts\",status=\"200\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "cairn_http_requests_total{op=\"get\",table=\"\",status=\"404\"}"
        ),
        Some(50.0)
    );
    assert!(
        !text.contains("random"),
        "a table no one created became a label"
    );
    assert_eq!(
        sample(
            &text,
            "cairn_http_request_duration_seconds_count{op=\"get\",table=\"carts\"}"
        ),
        Some(2.0)
    );
}

#[test]
fn plugin_calls_count_by_name_and_result() {
    let metrics = NodeMetrics::new("node1");
    let sha = "ab".repeat(32);
    metrics.publish_names(
        std::iter::empty(),
        std::iter::once((sha.clone(), "cart".into())),
    );
    let took = Duration::from_micros(40);
    metrics.plugin_call(&sha, "reconcile", Ok("merged"), took);
    let trap = PluginFailure::Trap("unreachable".into());
    metrics.plugin_call(&sha, "reconcile", Err(&trap), took);
    metrics.plugin_call(&"cd".repeat(32), "reconcile", Err(&trap), took);
    let text = metrics.encode(report(), 0);
    let calls = |plugin: &str, result: &str| {
        sample(
            &text,
            &format!(
                "cairn_plugin_calls_total{{plugin=\"{plugin}\",function=\"reconcile\",result=\"{result}\"}}"
            ),
        )
    };
    assert_eq!(calls("cart", "merged"), Some(1.0));
    assert_eq!(calls("cart", "trap"), Some(1.0));
    assert_eq!(calls("sha256:cdcdcdcdcdcd", "trap"), Some(1.0));
}

#[test]
fn reads_count_siblings_and_sizes() {
    let metrics = NodeMetrics::new("node1");
    metrics.read(&[10, 2_000, 70]);
    metrics.read(&[]);
    metrics.write(100);
    let text = metrics.encode(report(), 0);
    assert_eq!(sample(&text, "cairn_read_siblings_count"), Some(1.0));
    assert_eq!(sample(&text, "cairn_read_siblings_sum"), Some(3.0));
    assert_eq!(
        sample(&text, "cairn_object_size_bytes_count{op=\"get\"}"),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "cairn_object_size_bytes_count{op=\"put\"}"),
        Some(1.0)
    );
}

#[test]
fn two_nodes_in_one_process_keep_their_own_figures() {
    let (one, two) = (NodeMetrics::new("node1"), NodeMetrics::new("node2"));
    one.write(10);
    let text = two.encode(report(), 0);
    assert_eq!(
        sample(&text, "cairn_object_size_bytes_count{op=\"put\"}"),
        None
    );
}

#[test]
fn switched_off_nothing_is_recorded() {
    let metrics = NodeMetrics::with_switch("node1", false);
    metrics.write(10);
    metrics.request("get", "t".into(), 200, Duration::from_millis(1));
    let text = metrics.encode(report(), 0);
    assert_eq!(
        sample(&text, "cairn_object_size_bytes_count{op=\"put\"}"),
        None
    );
    assert!(!text.contains("cairn_http_requests_total{"));
}

#[test]
fn every_metric_the_grafana_dashboard_queries_exists() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../../deploy/grafana/cairn.json")).unwrap();
    let metrics = NodeMetrics::new("node1");
    // A sample in every live family (an empty family is not encoded).
    let took = Duration::from_millis(1);
    metrics.request("get", String::new(), 200, took);
    metrics.read(&[1, 2]);
    metrics.write(3);
    metrics.plugin_call(&"ab".repeat(32), "reconcile", Ok("merged"), took);
    metrics.commit(4, took);
    let text = metrics.encode(report(), 0);
    let families: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .collect();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (at, _) in expr.match_indices("cairn_") {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let family = ["_bucket", "_count", "_sum", "_total"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(&name);
                // The anti-entropy gauges appear only on a node that runs it.
                if family.starts_with("cairn_antientropy_partitions") {
                    continue;
                }
                assert!(
                    families.contains(&family),
                    "{name} in {expr:?} is no metric"
                );
                queried += 1;
            }
        }
    }
    assert!(queried > 20, "{queried}");
}

#[test]
fn help_lines_end_with_one_period() {
    let metrics = NodeMetrics::new("node1");
    metrics.write(1);
    let text = metrics.encode_as(report(), 0, Format::Prometheus);
    let helps: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP")).collect();
    assert!(helps.len() > 30, "{}", helps.len());
    for help in helps {
        assert!(help.ends_with('.') && !help.ends_with(".."), "{help}");
    }
}
