//! `cargo xtask torture [--quick] [--seeds N] [--minutes M] [--workload W]
//! [--fault F] [--out DIR]`: runs the torture matrix and writes
//! `report.json` and `report.md` to DIR (default `target/torture`). Exits
//! non-zero if any run broke a guarantee.

use std::path::PathBuf;
use std::process::exit;
use std::time::Duration;

use cairn_tests::torture::schedule::Family;
use cairn_tests::torture::{run_processes, run_simulation, Options, Workload};

fn usage() -> ! {
    eprintln!(
        "usage: torture [--quick] [--processes | --processes-only] [--schedule FILE] [--seeds N] [--base-seed S] [--minutes M] [--fault-ms MS] \
         [--workload NAME]... [--fault NAME]... [--out DIR]\n\
         workloads: {}\nfaults: {}",
        Workload::ALL.map(Workload::name).join(", "),
        Family::ALL.map(Family::name).join(", ")
    );
    exit(2);
}

fn main() {
    let mut args = std::env::args().skip(1);
    // The random part of the quick slice: a different seed each run,
    // printed so a failure replays.
    let random_seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64 % 1_000_000)
        .unwrap_or(0);
    let mut options = Options {
        seeds: 20,
        base_seed: 1,
        fault_ms: 6_000,
        budget: None,
        workloads: Vec::new(),
        families: Vec::new(),
    };
    let mut quick = false;
    let mut processes = false;
    let mut simulation = true;
    let mut out = PathBuf::from("target/torture");
    let mut replay: Option<PathBuf> = None;
    let number = |value: Option<String>| -> u64 {
        value
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| usage())
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--processes" => processes = true,
            "--processes-only" => {
                processes = true;
                simulation = false;
            }
            "--seeds" => options.seeds = number(args.next()),
            "--base-seed" => options.base_seed = number(args.next()),
            "--minutes" => {
                options.budget = Some(Duration::from_secs(number(args.next()) * 60));
            }
            "--fault-ms" => options.fault_ms = number(args.next()),
            "--workload" => {
                let name = args.next().unwrap_or_else(|| usage());
                let found = Workload::ALL.into_iter().find(|w| w.name() == name);
                options.workloads.push(found.unwrap_or_else(|| usage()));
            }
            "--fault" => {
                let name = args.next().unwrap_or_else(|| usage());
                options
                    .families
                    .push(Family::named(&name).unwrap_or_else(|| usage()));
            }
            "--out" => out = PathBuf::from(args.next().unwrap_or_else(|| usage())),
            "--schedule" => replay = Some(PathBuf::from(args.next().unwrap_or_else(|| usage()))),
            _ => usage(),
        }
    }
    if let Some(path) = replay {
        replay_schedule(&path, &options, processes);
        return;
    }
    let mut runs = vec![];
    if quick {
        // A fixed seed, then a random one: every cell, short fault phases.
        let mut fixed = Options::quick(7);
        fixed.workloads = options.workloads.clone();
        fixed.families = options.families.clone();
        let mut random = fixed.clone();
        random.base_seed = random_seed;
        eprintln!("torture --quick: seeds 7 and {random_seed}");
        runs.push(fixed);
        runs.push(random);
    } else {
        runs.push(options.clone());
    }
    let mut report = cairn_tests::torture::report::Report::default();
    if simulation {
        for run in &runs {
            let part = run_simulation(run, |line| eprintln!("{line}"));
            merge(&mut report, part);
        }
    }
    if processes || quick {
        let mut process_options = options.clone();
        if quick {
            // One short process-level scenario: the set under a partition
            // (as root) or kill -9 and restart (otherwise).
            process_options.seeds = 1;
            process_options.base_seed = random_seed;
            process_options.fault_ms = 8_000;
            process_options.workloads = vec![Workload::Set];
            let partition = Family::Isolate;
            process_options.families =
                vec![if cairn_tests::torture::process_run::playable(partition) {
                    partition
                } else {
                    Family::Kill
                }];
        }
        let part = run_processes(&process_options, |line| eprintln!("{line}"));
        report.cells.extend(part.cells);
        report.seconds += part.seconds;
    }
    // The latest fuzzing results, when `cargo xtask fuzz` left them here.
    report.fuzz = std::fs::read(out.join("fuzz.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let command: Vec<String> = std::env::args().skip(1).collect();
    let title = format!(
        "`cargo xtask torture {}`: {} ms of faults per run (virtual in the simulator, real against processes), then the liveness phase.",
        command.join(" "),
        runs[0].fault_ms
    );
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("torture: cannot create {}: {e}", out.display());
        exit(1);
    }
    let json = serde_json::to_string_pretty(&report.to_json()).unwrap_or_default();
    let written = std::fs::write(out.join("report.json"), json)
        .and_then(|()| std::fs::write(out.join("report.md"), report.to_markdown(&title)));
    if let Err(e) = written {
        eprintln!("torture: cannot write the report: {e}");
        exit(1);
    }
    println!("{}", report.to_markdown(&title));
    if report.failures() > 0 {
        eprintln!("torture: {} failures", report.failures());
        exit(1);
    }
}

/// Adds `part`'s cells to `report`'s (the same cells, in the same order).
fn merge(
    report: &mut cairn_tests::torture::report::Report,
    part: cairn_tests::torture::report::Report,
) {
    if report.cells.is_empty() {
        *report = part;
        return;
    }
    for (cell, more) in report.cells.iter_mut().zip(part.cells) {
        cell.seeds.extend(more.seeds);
        cell.tally.add(&more.tally);
        cell.convergence_ms.extend(more.convergence_ms);
        cell.hints_created += more.hints_created;
        cell.hints_delivered += more.hints_delivered;
        cell.keys_repaired += more.keys_repaired;
        cell.failures.extend(more.failures);
    }
    report.seconds += part.seconds;
}

/// Replays the schedule in `path` (as a failing run printed it) for each
/// chosen workload with `--base-seed`, in the simulator or against
/// processes, and prints what broke.
fn replay_schedule(path: &std::path::Path, options: &Options, processes: bool) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        eprintln!("torture: {}: {e}", path.display());
        exit(2)
    });
    let schedule: cairn_tests::torture::schedule::Schedule = text.parse().unwrap_or_else(|e| {
        eprintln!("torture: {}: {e}", path.display());
        exit(2)
    });
    let mut failed = false;
    for workload in options.chosen_workloads() {
        let seed = options.base_seed;
        let result = if processes {
            cairn_tests::torture::process_run::run_schedule(
                workload,
                &schedule,
                seed,
                options.fault_ms,
            )
        } else {
            cairn_tests::torture::sim_run::run_schedule(workload, &schedule, seed, options.fault_ms)
        };
        println!(
            "{} seed {seed}: {} acknowledged, {} lost, {} unknown; {}",
            workload.name(),
            result.tally.acknowledged,
            result.tally.lost,
            result.tally.unknown,
            if result.broken.is_empty() {
                "nothing broke".to_string()
            } else {
                failed = true;
                result.broken.join("; ")
            }
        );
    }
    if failed {
        exit(1);
    }
}
