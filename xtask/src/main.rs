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
        _ => {
            eprintln!("usage: cargo xtask dev [cairn dev options] | cargo xtask test [cargo test filters] | cargo xtask torture [--quick] [--seeds N] [--minutes M] ...");
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

fn test(filters: &[String]) -> Result<(), String> {
    ensure_wasm_target()?;
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
        // fixed seed and a random one.
        torture(&["--quick".to_owned()])?;
    }
    Ok(())
}

/// Runs the torture matrix (`tests/src/bin/torture.rs`), which writes
/// `target/torture/report.json` and `report.md` and fails on any loss.
fn torture(options: &[String]) -> Result<(), String> {
    // The process runs start `target/debug/cairn` and upload the plugins.
    ensure_wasm_target()?;
    build_plugins()?;
    run("cargo", &["build", "-p", "cairn"])?;
    let mut args = vec!["run", "-p", "cairn-tests", "--bin", "torture", "--"];
    args.extend(options.iter().map(String::as_str));
    run("cargo", &args)
}
