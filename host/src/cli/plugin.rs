//! `cairn plugin check` and `cairn plugin new`: plugin authoring on the author's machine.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cairn_sdk::StorageQuery;

use crate::plugin::check::{check_input, check_laws, Verdict, CHECK_KEY, CHECK_TABLE};
use crate::plugin::PluginRuntime;

/// Checks a module's laws in the sandbox; the process exit code says the verdict
/// (0 pass, 1 violation, 2 inconclusive).
pub fn check(file: &Path, samples_file: Option<&Path>) -> anyhow::Result<i32> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let runtime = PluginRuntime::new()?;
    let plugin = runtime
        .compile(&bytes)
        .map_err(|e| anyhow::anyhow!("invalid plugin: {e}"))?;
    let exports = &plugin.info.exports;
    println!(
        "{}: sha256 {}, ABI {}, exports {}",
        file.display(),
        plugin.info.sha256,
        plugin.info.abi,
        exports.join(", ")
    );
    if !exports.iter().any(|e| e == "reconcile") {
        return check_select_storage(&runtime, &plugin);
    }
    let samples = match samples_file {
        Some(path) => read_samples(path)?,
        None if exports.iter().any(|e| e == "samples") => {
            let mut all = runtime
                .samples(&plugin, 1)
                .map_err(|e| anyhow::anyhow!("the sample generator failed: {e}"))?;
            all.extend(runtime.samples(&plugin, 2).unwrap_or_default());
            all
        }
        None => anyhow::bail!(
            "no samples: pass --samples FILE (a JSON array of values) or export a sample generator"
        ),
    };
    let mut samples = samples;
    samples.sort();
    samples.dedup();
    if samples.len() < 3 {
        anyhow::bail!("need at least 3 distinct samples, got {}", samples.len());
    }
    let call = |siblings: &[cairn_sdk::Sibling]| runtime.reconcile(&plugin, &check_input(siblings));
    match check_laws(&call, &samples, "application/json") {
        Verdict::Pass { calls } => {
            println!("PASS: determinism, commutativity, associativity and idempotence held ({calls} sandboxed calls)");
            Ok(0)
        }
        Verdict::Violation(v) => {
            println!("VIOLATION of {}. Smallest counterexample:", v.law);
            for (i, input) in v.inputs.iter().enumerate() {
                println!("  sibling {}: {}", i + 1, String::from_utf8_lossy(input));
            }
            println!("  one side:   {}", v.left);
            println!("  other side: {}", v.right);
            Ok(1)
        }
        Verdict::Inconclusive {
            failed,
            calls,
            example,
        } => {
            println!("INCONCLUSIVE: {failed} of {calls} calls failed or kept the siblings (e.g. {example}); give samples the plugin merges");
            Ok(2)
        }
    }
}

fn check_select_storage(
    runtime: &PluginRuntime,
    plugin: &crate::plugin::CompiledPlugin,
) -> anyhow::Result<i32> {
    let mut calls = 0;
    for size in [0u64, 1, 1_023, 65_535, 65_536, 1 << 20, 8 << 20] {
        let query = StorageQuery {
            table: CHECK_TABLE.into(),
            key: CHECK_KEY.to_vec(),
            total_live_bytes: size,
        };
        let first = runtime.select_storage(plugin, &query);
        let second = runtime.select_storage(plugin, &query);
        calls += 2;
        match (&first, &second) {
            (Ok(a), Ok(b)) if a == b => {}
            _ => {
                println!("VIOLATION of determinism: select_storage({size} bytes) gave {first:?}, then {second:?}");
                return Ok(1);
            }
        }
    }
    println!("PASS: select_storage is deterministic ({calls} sandboxed calls)");
    Ok(0)
}

/// A samples file: a JSON array; each element, written as JSON, is one value.
fn read_samples(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let values: Vec<serde_json::Value> = serde_json::from_slice(&text)
        .with_context(|| format!("{} must be a JSON array of values", path.display()))?;
    Ok(values.iter().map(|v| v.to_string().into_bytes()).collect())
}

/// Scaffolds a plugin crate that builds to `.wasm` as generated.
pub fn new(name: &str, dir: &Path, sdk: Option<&Path>) -> anyhow::Result<PathBuf> {
    crate::core::types::validate_plugin_name(name).map_err(anyhow::Error::msg)?;
    let root = dir.join(name);
    if root.exists() {
        anyhow::bail!("{} already exists", root.display());
    }
    let sdk = match sdk {
        Some(path) => path.to_path_buf(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk"),
    };
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("cairn-sdk not found at {} (pass --sdk PATH)", sdk.display()))?;
    std::fs::create_dir_all(root.join("src"))?;
    std::fs::write(root.join("Cargo.toml"), cargo_toml(name, &sdk))?;
    std::fs::write(root.join("src/lib.rs"), LIB_RS)?;
    std::fs::write(root.join("README.md"), readme(name))?;
    Ok(root)
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
cairn-sdk = {{ path = "{}" }}
serde_json = "1"

[profile.release]
opt-level = "s"
lto = true
strip = true
panic = "abort"

# A plugin is its own workspace, wherever it is generated.
[workspace]
"#,
        sdk.display()
    )
}

fn readme(name: &str) -> String {
    let file = name.replace('-', "_");
    format!(
        "# {name}\n\nA Cairn merge plugin.\n\n```sh\ncargo test                                           # the merge, natively\n\
cargo build --release --target wasm32-unknown-unknown\n\
cairn plugin check target/wasm32-unknown-unknown/release/{file}.wasm\n\
cairn plugin upload {name} target/wasm32-unknown-unknown/release/{file}.wasm\n\
curl -X PUT localhost:8080/tables/mine -d '{{\"merge\":\"plugin\",\"plugin\":\"{name}\"}}'\n```\n"
    )
}

const LIB_RS: &str = r##"//! A Cairn merge plugin: values are JSON objects of counters; concurrent
//! versions merge by taking each field's largest value. Replace `merge` with
//! your own logic; keep it deterministic, commutative, associative and idempotent.

use std::collections::BTreeMap;

use cairn_sdk::{export_plugin, json, ReconcileInput, Resolution};

type Fields = BTreeMap<String, u64>;

/// The merge itself: plain Rust, unit-tested natively.
pub fn merge(versions: &[Fields]) -> Fields {
    let mut merged = Fields::new();
    for version in versions {
        for (field, &value) in version {
            let entry = merged.entry(field.clone()).or_insert(0);
            *entry = (*entry).max(value);
        }
    }
    merged
}

/// Called by Cairn with two or more concurrent versions of a key.
pub fn reconcile(input: ReconcileInput) -> Resolution {
    match json::parse_all::<Fields>(&input.siblings) {
        Some(versions) => Resolution::Merged {
            value: json::to_bytes(&merge(&versions)),
            content_type: Some("application/json".into()),
        },
        // Not our format: leave the versions to the client.
        None => Resolution::KeepSiblings,
    }
}

/// Values for `cairn plugin check`.
pub fn samples(seed: u64) -> Vec<Vec<u8>> {
    (0..8u64)
        .map(|i| {
            let fields: Fields = [("a", (seed + i) % 5), ("b", (seed * 3 + i) % 4)]
                .into_iter()
                .filter(|(_, v)| *v > 0)
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            json::to_bytes(&fields)
        })
        .collect()
}

export_plugin! {
    reconcile = reconcile;
    samples = samples;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_versions_keep_each_fields_largest_value() {
        let input = ReconcileInput::for_test(&[br#"{"a":3}"#, br#"{"a":1,"b":2}"#]);
        let expected = Resolution::Merged { value: br#"{"a":3,"b":2}"#.to_vec(), content_type: Some("application/json".into()) };
        assert_eq!(reconcile(input), expected);
    }
}
"##;
