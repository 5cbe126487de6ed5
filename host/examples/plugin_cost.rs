//! What a merge costs in the sandbox: two ~1 KiB shopping carts reconciled by
//! the shopping-cart module versus the same Rust merge called natively, and the
//! instantiation every sandboxed call pays.
//!
//! `cargo xtask test` (or `cargo build --profile plugin --target wasm32-unknown-unknown
//! -p shopping-cart`) builds the module; then
//! `cargo run --release -p cairn --example plugin_cost`.

use std::time::Instant;

use cairn::plugin::PluginRuntime;
use cairn_sdk::{ReconcileInput, Sibling};

fn cart(offset: usize) -> Vec<u8> {
    let items: Vec<String> = (0..19)
        .map(|i| {
            format!(
                r#""item-{:02}":{{"qty":{},"price":"{}.{:02}","updated_ms":{}}}"#,
                i + offset,
                i + 1,
                i,
                i,
                1_000 + i
            )
        })
        .collect();
    format!("{{{}}}", items.join(",")).into_bytes()
}

fn median_micros(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

fn time<F: FnMut()>(rounds: usize, mut f: F) -> f64 {
    let samples = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    median_micros(samples)
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-unknown-unknown/plugin/shopping_cart.wasm");
    let bytes = std::fs::read(&root).expect("build the plugin first (see the module docs)");
    let (a, b) = (cart(0), cart(8));
    let input = ReconcileInput {
        table: "carts".into(),
        key: b"ann".to_vec(),
        siblings: vec![
            Sibling {
                value: a.clone(),
                content_type: "application/json".into(),
                timestamp_ms: 1,
            },
            Sibling {
                value: b.clone(),
                content_type: "application/json".into(),
                timestamp_ms: 2,
            },
        ],
    };
    let runtime = PluginRuntime::new().expect("engine");
    let start = Instant::now();
    let plugin = runtime.compile(&bytes).expect("module");
    let compile_ms = start.elapsed().as_secs_f64() * 1e3;
    let sandboxed = runtime.reconcile(&plugin, &input).expect("merge");
    assert_eq!(
        sandboxed,
        shopping_cart::reconcile(input.clone()),
        "the sandbox and native agree"
    );

    let rounds = 2_000;
    let native = time(rounds, || {
        std::hint::black_box(shopping_cart::reconcile(std::hint::black_box(
            input.clone(),
        )));
    });
    let wasm = time(rounds, || {
        std::hint::black_box(runtime.reconcile(&plugin, &input).expect("merge"));
    });
    let instantiate = time(rounds, || {
        runtime.instantiate_once(&plugin).expect("instance")
    });
    println!(
        "carts of {} and {} bytes, median of {rounds} calls each:",
        a.len(),
        b.len()
    );
    println!("  native merge:          {native:8.1} µs");
    println!(
        "  sandboxed merge:       {wasm:8.1} µs  ({:.1}x native)",
        wasm / native
    );
    println!("  of which instantiation:{instantiate:8.1} µs");
    println!("  compile once:          {compile_ms:8.1} ms");
}
