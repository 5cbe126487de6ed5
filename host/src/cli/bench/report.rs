//! The benchmark's report: throughput, latency percentiles per operation,
//! errors by kind, siblings and merges seen — as text or JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::{BenchArgs, ClientStats, Op};

/// Everything one run measured.
pub struct Report {
    settings: Value,
    stats: ClientStats,
    elapsed: Duration,
    load: Option<(Duration, BTreeMap<String, u64>)>,
    ops: u64,
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Read => "read",
        Op::Update => "update",
    }
}

impl Report {
    /// Gathers a run's numbers.
    pub fn new(
        args: &BenchArgs,
        mode: &str,
        stats: ClientStats,
        elapsed: Duration,
        load: Option<(Duration, BTreeMap<String, u64>)>,
    ) -> Self {
        let ops = stats.latency_us.values().map(|h| h.len()).sum();
        let settings = json!({
            "workload": format!("{:?}", args.workload),
            "table": args.table,
            "merge": mode,
            "nodes": args.urls.len(),
            "clients": args.clients,
            "keys": args.keys,
            "value_bytes": args.value_bytes,
            "distribution": format!("{:?}", args.distribution).to_lowercase(),
            "load_versions": args.load_versions,
        });
        Report {
            settings,
            stats,
            elapsed,
            load,
            ops,
        }
    }

    /// Operations per second over the measured phase.
    pub fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        let latency: serde_json::Map<String, Value> = self
            .stats
            .latency_us
            .iter()
            .map(|(op, h)| {
                let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
                (
                    op_name(*op).to_owned(),
                    json!({
                        "count": h.len(),
                        "p50_ms": ms(0.50), "p95_ms": ms(0.95), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
                        "max_ms": h.max() as f64 / 1000.0,
                    }),
                )
            })
            .collect();
        json!({
            "settings": self.settings,
            "ops": self.ops,
            "seconds": self.elapsed.as_secs_f64(),
            "ops_per_s": self.ops_per_s(),
            "latency": latency,
            "errors": self.stats.errors,
            "siblings_seen": self.stats.siblings_seen,
            "merged_seen": self.stats.merged_seen,
            "load": self.load.as_ref().map(|(d, errors)| json!({ "seconds": d.as_secs_f64(), "errors": errors })),
        })
    }

    /// The report as a table.
    pub fn to_text(&self) -> String {
        let s = &self.settings;
        let mut out = format!(
            "workload {} on table {} ({}), {} nodes, {} clients, {} B values, {} keys ({})\n",
            s["workload"].as_str().unwrap_or("?"),
            s["table"].as_str().unwrap_or("?"),
            s["merge"].as_str().unwrap_or("?"),
            s["nodes"],
            s["clients"],
            s["value_bytes"],
            s["keys"],
            s["distribution"].as_str().unwrap_or("?"),
        );
        if let Some((took, errors)) = &self.load {
            out += &format!("load: {:.1} s, errors {:?}\n", took.as_secs_f64(), errors);
        }
        out += &format!(
            "{} ops in {:.1} s = {:.0} ops/s\n",
            self.ops,
            self.elapsed.as_secs_f64(),
            self.ops_per_s()
        );
        out += "op          count    p50 ms    p95 ms    p99 ms  p99.9 ms    max ms\n";
        for (op, h) in &self.stats.latency_us {
            let ms = |v: u64| v as f64 / 1000.0;
            out += &format!(
                "{:<8} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
                op_name(*op),
                h.len(),
                ms(h.value_at_quantile(0.50)),
                ms(h.value_at_quantile(0.95)),
                ms(h.value_at_quantile(0.99)),
                ms(h.value_at_quantile(0.999)),
                ms(h.max()),
            );
        }
        out += &format!("errors: {:?}\n", self.stats.errors);
        out += &format!(
            "siblings seen: {}, plugin merges seen: {}\n",
            self.stats.siblings_seen, self.stats.merged_seen
        );
        out
    }
}
