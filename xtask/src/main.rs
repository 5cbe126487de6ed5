//! Project automation, so the README's two commands work on a fresh machine:
//! `cargo xtask dev` (a local cluster) and `cargo xtask test` (every check CI
//! runs); `cargo xtask torture` runs the fault matrix on demand.

use std::process::{exit, Command};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("dev") => dev(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("torture") => torture(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask dev [cairn dev options] | cargo xtask test [cargo test filters] | cargo xtask torture [--quick] [--seeds N] [--minutes M] ... | cargo xtask fuzz [--seconds S] [TARGET]...");
            exit(2);
        }
    };
    if let Err(message) = result {
        eprintln!("xtask: {message}");
        exit(1);
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    eprintln!("+ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .status()
        .map_err(|e| format!("{program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} {} failed ({status})", args.join(" ")))
    }
}

/// The WebAssembly target plugins are built for; not on a new machine.
fn ensure_wasm_target() -> Result<(), String> {
    run("rustup", &["target", "add", "wasm32-unknown-unknown"])
}

/// The example plugins, built to `target/wasm32-unknown-unknown/plugin/*.wasm`.
const PLUGINS: [&str; 4] = ["shopping-cart", "set-union", "counter", "size-router"];

fn build_plugins() -> Result<(), String> {
    let mut args = vec![
        "build",
        "--profile",
        "plugin",
        "--target",
        "wasm32-unknown-unknown",
    ];
    for plugin in PLUGINS {
        args.extend(["-p", plugin]);
    }
    run("cargo", &args)
}

fn dev(extra: &[String]) -> Result<(), String> {
    ensure_wasm_target()?;
    build_plugins()?;
    run("cargo", &["build", "--release", "-p", "cairn"])?;
    let mut args = vec![
        "dev",
        "--plugins-dir",
        "target/wasm32-unknown-unknown/plugin",
    ];
    args.extend(extra.iter().map(String::as_str));
    run("target/release/cairn", &args)
}

/// Chromium and chromedriver for the dashboard's browser test (Debian's
/// packages; not on a new machine).
fn ensure_chromium() -> Result<(), String> {
    let present = |path: &str| std::path::Path::new(path).exists();
    if present("/usr/bin/chromium") && present("/usr/bin/chromedriver") {
        return Ok(());
    }
    let install = ["install", "-y", "-q", "chromium", "chromium-driver"];
    if run("apt-get", &install).is_err() {
        // A machine whose package lists are stale or missing.
        run("apt-get", &["update", "-q"])?;
        run("apt-get", &install)?;
    }
    Ok(())
}

fn test(filters: &[String]) -> Result<(), String> {
    ensure_wasm_target()?;
    ensure_chromium()?;
    run("cargo", &["fmt", "--all", "--", "--check"])?;
    run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // The cluster tests spawn the cairn binary and upload these plugins. Build
    // with the same package and target selection as the test run below, so
    // the features unify alike and the tests reuse every compiled dependency.
    run("cargo", &["build", "--workspace", "--all-targets"])?;
    build_plugins()?;
    let mut args = vec!["test", "--workspace"];
    if !filters.is_empty() {
        args.push("--");
        args.extend(filters.iter().map(String::as_str));
    }
    run("cargo", &args)?;
    if filters.is_empty() {
        // The bounded torture slice: every workload under every fault, a
        // fixed seed and a random one; everything it needs is built above.
        run_torture(&["--quick".to_owned()])?;
    }
    Ok(())
}

/// Runs the torture matrix (`tests/src/bin/torture.rs`), which writes
/// `target/torture/report.json` and `report.md` and fails on any loss.
fn torture(options: &[String]) -> Result<(), String> {
    // The process runs start `target/debug/cairn` and upload the plugins;
    // built as `cargo xtask test` builds them, so neither rebuilds the other.
    ensure_wasm_target()?;
    build_plugins()?;
    run("cargo", &["build", "--workspace", "--all-targets"])?;
    run_torture(options)
}

/// Runs the torture binary with `options`.
/// Runs the torture binary the workspace build made (not `cargo run`, which
/// would select one package and may unify features differently, rebuilding).
fn run_torture(options: &[String]) -> Result<(), String> {
    let args: Vec<&str> = options.iter().map(String::as_str).collect();
    run("target/debug/torture", &args)
}

/// The fuzz targets (`fuzz/fuzz_targets/`, `cairn::fuzz::TARGETS`).
const FUZZ_TARGETS: [&str; 5] = [
    "http_request",
    "peer_stream",
    "context_token",
    "plugin_answer",
    "disk_record",
];

/// `cargo xtask fuzz [--seconds S] [TARGET]...`: coverage-guided runs with
/// cargo fuzz (installed if missing; `-s none`, so the pinned stable
/// toolchain builds it), each target for S seconds (default 60) from the
/// committed seeds in `fuzz/corpus/` plus what earlier runs found
/// (`target/fuzz-corpus/`). Writes `target/torture/fuzz.json` (execs and
/// crashes per target), which the torture report includes; fails on any
/// crash (its input is in `fuzz/artifacts/TARGET/`).
fn fuzz(options: &[String]) -> Result<(), String> {
    let mut seconds = 60u64;
    let mut targets: Vec<String> = Vec::new();
    let mut args = options.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--seconds takes a number")?;
            }
            "--minutes" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or("--minutes takes a number")?
                    * 60;
            }
            name if FUZZ_TARGETS.contains(&name) => targets.push(name.to_owned()),
            other => {
                return Err(format!(
                    "unknown fuzz option or target {other:?} (targets: {})",
                    FUZZ_TARGETS.join(", ")
                ))
            }
        }
    }
    if targets.is_empty() {
        targets = FUZZ_TARGETS.iter().map(|t| t.to_string()).collect();
    }
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        run("cargo", &["install", "cargo-fuzz", "--locked"])?;
    }
    let mut results = Vec::new();
    let mut crashed = Vec::new();
    for target in &targets {
        // Built first, so a build failure is reported as one, not as a crash.
        run("cargo", &["fuzz", "build", "-s", "none", target])
            .map_err(|e| format!("fuzz target {target} did not build: {e}"))?;
        let scratch = format!("target/fuzz-corpus/{target}");
        std::fs::create_dir_all(&scratch).map_err(|e| format!("{scratch}: {e}"))?;
        let seeds = format!("fuzz/corpus/{target}");
        let time = format!("-max_total_time={seconds}");
        let args = [
            "fuzz",
            "run",
            "-s",
            "none",
            target,
            &scratch,
            &seeds,
            "--",
            &time,
            "-print_final_stats=1",
        ];
        eprintln!("+ cargo {}", args.join(" "));
        let output = Command::new("cargo")
            .args(args)
            .output()
            .map_err(|e| format!("cargo fuzz: {e}"))?;
        let log = String::from_utf8_lossy(&output.stderr);
        let execs = log
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let crash = !output.status.success();
        if crash {
            eprintln!("{log}");
            crashed.push(target.clone());
        }
        eprintln!(
            "{target}: {execs} execs in {seconds} s, {}",
            if crash { "CRASHED" } else { "no crash" }
        );
        results.push(format!(
            "{{\"target\":\"{target}\",\"seconds\":{seconds},\"execs\":{execs},\"crashes\":{}}}",
            u8::from(crash)
        ));
    }
    std::fs::create_dir_all("target/torture").map_err(|e| e.to_string())?;
    std::fs::write(
        "target/torture/fuzz.json",
        format!("[{}]\n", results.join(",")),
    )
    .map_err(|e| format!("target/torture/fuzz.json: {e}"))?;
    if crashed.is_empty() {
        Ok(())
    } else {
        Err(format!("fuzz targets crashed: {}", crashed.join(", ")))
    }
}
