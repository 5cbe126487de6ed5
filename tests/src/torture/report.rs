//! The torture report: one cell per workload × fault family, summed over
//! seeds, written as JSON (one object per cell) and Markdown.

use serde_json::{json, Value};

use super::check::Tally;
use super::schedule::Family;
use super::sim_run::RunResult;
use super::Workload;

impl Tally {
    /// Adds another run's (or key's) tally to this one.
    pub fn add(&mut self, other: &Tally) {
        self.attempted += other.attempted;
        self.acknowledged += other.acknowledged;
        self.failed += other.failed;
        self.unknown += other.unknown;
        self.lost += other.lost;
        self.unexpected += other.unexpected;
        self.reads += other.reads;
        self.stale_reads += other.stale_reads;
        self.max_siblings = self.max_siblings.max(other.max_siblings);
    }
}

/// One workload under one fault family, over every seed run.
#[derive(Debug, Clone)]
pub struct Cell {
    /// The workload.
    pub workload: Workload,
    /// The fault family.
    pub family: Family,
    /// `simulation` or `processes`.
    pub runner: &'static str,
    /// Seeds run.
    pub seeds: Vec<u64>,
    /// Summed tallies.
    pub tally: Tally,
    /// Convergence times after healing, one per run that converged (ms).
    pub convergence_ms: Vec<u64>,
    /// Hints stored and delivered, objects repaired by anti-entropy.
    pub hints_created: u64,
    /// Hints delivered.
    pub hints_delivered: u64,
    /// Objects anti-entropy repaired.
    pub keys_repaired: u64,
    /// Failures: (seed, what broke).
    pub failures: Vec<(u64, String)>,
}

impl Cell {
    /// An empty cell.
    pub fn new(workload: Workload, family: Family, runner: &'static str) -> Cell {
        Cell {
            workload,
            family,
            runner,
            seeds: Vec::new(),
            tally: Tally::default(),
            convergence_ms: Vec::new(),
            hints_created: 0,
            hints_delivered: 0,
            keys_repaired: 0,
            failures: Vec::new(),
        }
    }

    /// Adds one run.
    pub fn add(&mut self, seed: u64, result: &RunResult) {
        self.seeds.push(seed);
        self.tally.add(&result.tally);
        self.convergence_ms.extend(result.convergence_ms);
        self.hints_created += result.hints_created;
        self.hints_delivered += result.hints_delivered;
        self.keys_repaired += result.keys_repaired;
        for broken in &result.broken {
            self.failures.push((seed, broken.clone()));
        }
    }

    /// The convergence time at quantile `q` (0..=1), if any run converged.
    pub fn convergence_quantile(&self, q: f64) -> Option<u64> {
        let mut sorted = self.convergence_ms.clone();
        sorted.sort_unstable();
        let last = sorted.len().checked_sub(1)?;
        let rank = ((last as f64) * q).round() as usize;
        sorted.get(rank.min(last)).copied()
    }

    /// The cell as a JSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "workload": self.workload.name(),
            "fault": self.family.name(),
            "runner": self.runner,
            "seeds": self.seeds.len(),
            "attempted": self.tally.attempted,
            "acknowledged": self.tally.acknowledged,
            "failed": self.tally.failed,
            "unknown": self.tally.unknown,
            "lost": self.tally.lost,
            "lost_by_design": self.workload.loses_by_design(),
            "unexpected": self.tally.unexpected,
            "reads": self.tally.reads,
            "stale_reads": self.tally.stale_reads,
            "max_siblings": self.tally.max_siblings,
            "convergence_ms": {
                "p50": self.convergence_quantile(0.5),
                "p99": self.convergence_quantile(0.99),
                "max": self.convergence_ms.iter().max(),
                "not_converged": self.seeds.len() - self.convergence_ms.len(),
            },
            "hints_created": self.hints_created,
            "hints_delivered": self.hints_delivered,
            "keys_repaired": self.keys_repaired,
            "failures": self.failures.iter().map(|(seed, what)| json!({"seed": seed, "broken": what})).collect::<Vec<_>>(),
        })
    }
}

/// Every cell of a torture run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The cells, workload-major.
    pub cells: Vec<Cell>,
    /// Wall-clock seconds the run took.
    pub seconds: f64,
    /// The latest `cargo xtask fuzz` results (`fuzz.json`): per target,
    /// seconds, execs and crashes.
    pub fuzz: Option<Value>,
}

impl Report {
    /// Failures over every cell.
    pub fn failures(&self) -> usize {
        self.cells.iter().map(|c| c.failures.len()).sum()
    }

    /// Seeds run over every cell.
    pub fn runs(&self) -> usize {
        self.cells.iter().map(|c| c.seeds.len()).sum()
    }

    /// The report as JSON: `{"runs", "seconds", "cells": [..]}`.
    pub fn to_json(&self) -> Value {
        json!({
            "runs": self.runs(),
            "seconds": self.seconds,
            "failures": self.failures(),
            "cells": self.cells.iter().map(Cell::to_json).collect::<Vec<_>>(),
            "fuzz": self.fuzz,
        })
    }

    /// The report as a Markdown table, headed by `title` (the command, the
    /// date, the machine).
    pub fn to_markdown(&self, title: &str) -> String {
        let mut out = format!(
            "# Cairn torture report\n\n{title}\n\n{} runs in {:.0} s, {} failures.\n\n",
            self.runs(),
            self.seconds,
            self.failures()
        );
        out.push_str("| runner | workload | fault | seeds | attempted | acknowledged | lost | unknown | unexpected | stale reads | converge p50/p99/max ms | hints created/delivered | AE repaired | max siblings |\n");
        out.push_str("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
        let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        for cell in &self.cells {
            let lost = if cell.workload.loses_by_design() {
                format!("{} (lww)", cell.tally.lost)
            } else {
                cell.tally.lost.to_string()
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{}/{} | {}/{} | {} | {} |\n",
                cell.runner,
                cell.workload.name(),
                cell.family.name(),
                cell.seeds.len(),
                cell.tally.attempted,
                cell.tally.acknowledged,
                lost,
                cell.tally.unknown,
                cell.tally.unexpected,
                cell.tally.stale_reads,
                ms(cell.convergence_quantile(0.5)),
                ms(cell.convergence_quantile(0.99)),
                ms(cell.convergence_ms.iter().max().copied()),
                cell.hints_created,
                cell.hints_delivered,
                cell.keys_repaired,
                cell.tally.max_siblings,
            ));
        }
        if let Some(fuzz) = self.fuzz.as_ref().and_then(Value::as_array) {
            out.push_str("\n## Fuzzing (the latest `cargo xtask fuzz`)\n\n| target | seconds | execs | crashes |\n|---|--:|--:|--:|\n");
            for target in fuzz {
                out.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    target["target"].as_str().unwrap_or("?"),
                    target["seconds"],
                    target["execs"],
                    target["crashes"]
                ));
            }
        }
        let failures: Vec<String> = self
            .cells
            .iter()
            .flat_map(|c| {
                c.failures.iter().map(move |(seed, what)| {
                    format!(
                        "- {} {} × {} seed {seed}: {what}",
                        c.runner,
                        c.workload.name(),
                        c.family.name()
                    )
                })
            })
            .collect();
        if !failures.is_empty() {
            out.push_str("\n## Failures\n\n");
            out.push_str(&failures.join("\n"));
            out.push('\n');
        }
        out
    }
}
