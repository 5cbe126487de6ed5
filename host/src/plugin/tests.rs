//! Hostile and well-behaved modules, written as WAT, against the sandbox.

use cairn_sdk::{ReconcileInput, Resolution};

use super::{PluginError, PluginRuntime};

/// A module speaking the ABI with a bump allocator; `reconcile` runs `body`.
pub(crate) fn module(abi: i32, body: &str, extra: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
            (memory (export "memory") 1)
            (global $bump (mut i32) (i32.const 1024))
            (data (i32.const 16) "\01")
            (data (i32.const 32) "\00\02hi\00")
            (data (i32.const 48) "\07\07\07")
            (func (export "cairn_abi_version") (result i32) (i32.const {abi}))
            (func (export "cairn_alloc") (param $len i32) (result i32)
                (local $p i32)
                (local.set $p (global.get $bump))
                (global.set $bump (i32.add (global.get $bump) (local.get $len)))
                (local.get $p))
            (func $deep (param i32) (result i32) (call $deep (i32.add (local.get 0) (i32.const 1))))
            (func (export "cairn_reconcile") (param $ptr i32) (param $len i32) (result i64) {body})
            {extra}
        )"#
    );
    wat::parse_str(text).expect("valid WAT")
}

pub(crate) fn packed(ptr: u64, len: u64) -> String {
    format!("(i64.const {})", (ptr << 32) | len)
}

/// Whether an error is the kind a case expects.
type ExpectedError = fn(&PluginError) -> bool;

fn input() -> ReconcileInput {
    ReconcileInput::for_test(&[b"[1]", b"[2]"])
}

fn run(runtime: &PluginRuntime, bytes: &[u8]) -> Result<Resolution, PluginError> {
    let plugin = runtime.compile(bytes)?;
    runtime.reconcile(&plugin, &input())
}

#[test]
fn well_behaved_modules_answer() {
    let runtime = PluginRuntime::new().unwrap();
    assert_eq!(
        run(&runtime, &module(1, &packed(16, 1), "")),
        Ok(Resolution::KeepSiblings)
    );
    assert_eq!(
        run(&runtime, &module(1, &packed(32, 5), "")),
        Ok(Resolution::merged(b"hi".to_vec()))
    );
    let plugin = runtime.compile(&module(1, &packed(16, 1), "")).unwrap();
    assert_eq!(plugin.info.exports, vec!["reconcile"]);
    assert_eq!(plugin.info.sha256.len(), 64);
}

#[test]
fn hostile_modules_cost_one_call_and_the_sandbox_keeps_working() {
    let runtime = PluginRuntime::new().unwrap();
    let cases: Vec<(&str, Vec<u8>, ExpectedError)> = vec![
        (
            "infinite loop",
            module(1, "(loop $l (br $l)) (i64.const 0)", ""),
            |e| matches!(e, PluginError::Fuel(_)),
        ),
        (
            "memory bomb",
            module(
                1,
                "(loop $l (drop (memory.grow (i32.const 16))) (br $l)) (i64.const 0)",
                "",
            ),
            |e| matches!(e, PluginError::Memory(_)),
        ),
        (
            "deep recursion",
            module(1, "(i64.extend_i32_u (call $deep (i32.const 0)))", ""),
            |e| matches!(e, PluginError::Trap(_)),
        ),
        ("panic", module(1, "unreachable", ""), |e| {
            matches!(e, PluginError::Trap(_))
        }),
        ("garbage output", module(1, &packed(48, 3), ""), |e| {
            matches!(e, PluginError::Output(_))
        }),
        (
            "oversized output",
            module(1, &packed(16, 0xFFFF_FFF0), ""),
            |e| matches!(e, PluginError::Output(_)),
        ),
        (
            "output outside memory",
            module(1, &packed(0x0010_0000, 4), ""),
            |e| matches!(e, PluginError::Output(_)),
        ),
        ("trailing output", module(1, &packed(16, 2), ""), |e| {
            matches!(e, PluginError::Output(_))
        }),
    ];
    for (name, bytes, expected) in cases {
        let outcome = run(&runtime, &bytes);
        match &outcome {
            Err(e) if expected(e) => {}
            other => panic!("{name}: unexpected {other:?}"),
        }
        // The same engine still runs a good module right after.
        assert_eq!(
            run(&runtime, &module(1, &packed(16, 1), "")),
            Ok(Resolution::KeepSiblings),
            "after {name}"
        );
    }
}

#[test]
fn modules_with_imports_or_another_abi_are_refused_at_upload() {
    let runtime = PluginRuntime::new().unwrap();
    let wasi = r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#;
    let with_import = |import: &str| {
        wat::parse_str(format!(
            r#"(module {import}
                (memory (export "memory") 1)
                (func (export "cairn_abi_version") (result i32) (i32.const 1))
                (func (export "cairn_alloc") (param i32) (result i32) (i32.const 1024))
                (func (export "cairn_reconcile") (param i32 i32) (result i64) (i64.const 1)))"#
        ))
        .unwrap()
    };
    for (name, bytes) in [
        ("wasi", with_import(wasi)),
        (
            "unknown import",
            with_import(r#"(import "env" "now" (func (result i64)))"#),
        ),
        ("wrong abi", module(99, &packed(16, 1), "")),
        ("not wasm", b"\0asm garbage".to_vec()),
        (
            "no exports",
            wat::parse_str("(module (memory (export \"memory\") 1))").unwrap(),
        ),
    ] {
        match runtime.compile(&bytes) {
            Err(PluginError::Invalid(reason)) => assert!(!reason.is_empty(), "{name}"),
            Err(other) => panic!("{name}: refused for the wrong reason: {other:?}"),
            Ok(_) => panic!("{name}: accepted"),
        }
    }
}

#[test]
fn an_allocator_pointing_outside_memory_is_an_output_error() {
    let runtime = PluginRuntime::new().unwrap();
    let bytes = wat::parse_str(
        r#"(module
            (memory (export "memory") 1)
            (func (export "cairn_abi_version") (result i32) (i32.const 1))
            (func (export "cairn_alloc") (param i32) (result i32) (i32.const 0x7fff0000))
            (func (export "cairn_reconcile") (param i32 i32) (result i64) (i64.const 1)))"#,
    )
    .unwrap();
    assert!(matches!(run(&runtime, &bytes), Err(PluginError::Output(_))));
}

#[test]
fn header_values_name_the_kind_and_stay_short() {
    let e = PluginError::Trap(format!("wasm trap: unreachable\n{}", "x".repeat(500)));
    let header = e.header_value();
    assert!(header.starts_with("trap: "));
    assert!(header.len() <= 206);
    assert!(header.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
    assert_eq!(
        PluginError::Unavailable("pool full".into()).header_value(),
        "unavailable: pool full"
    );
}

#[test]
fn a_module_compiles_while_every_call_slot_is_busy() {
    // Eight calls in flight (a looping plugin filling the node's call slots)
    // once made a valid upload fail: "maximum concurrent limit ... reached".
    let runtime = PluginRuntime::new().unwrap();
    let busy = runtime.compile(&module(1, &packed(16, 1), "")).unwrap();
    let held: Vec<_> = (0..super::INSTANCES_MAX)
        .map(|_| runtime.hold_instance(&busy).unwrap())
        .collect();
    let fresh = runtime.compile(&module(1, &packed(32, 5), ""));
    assert!(fresh.is_ok(), "{:?}", fresh.err());
    drop(held);
}

#[test]
fn a_merge_larger_than_the_nodes_value_limit_is_an_output_error() {
    let runtime = PluginRuntime::new().unwrap();
    runtime.set_merged_bytes_max(1);
    let result = run(&runtime, &module(1, &packed(32, 5), ""));
    assert!(matches!(result, Err(PluginError::Output(_))), "{result:?}");
    runtime.set_merged_bytes_max(2);
    assert_eq!(
        run(&runtime, &module(1, &packed(32, 5), "")),
        Ok(Resolution::merged(b"hi".to_vec()))
    );
}

/// A function of `statements` additions over `locals` locals, each reading
/// two locals far apart and writing a third, so many values stay live: what
/// costs the register allocator most per byte.
fn busy_function(locals: u32, statements: u32) -> String {
    let mut text = String::from("(func (result i32)");
    for _ in 0..locals {
        text.push_str(" (local i32)");
    }
    let mut x: u32 = 1;
    for _ in 0..statements {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let (a, b, c) = (x % locals, (x >> 8) % locals, (x >> 16) % locals);
        text.push_str(&format!(
            " (local.set {c} (i32.add (local.get {a}) (local.get {b})))"
        ));
    }
    text.push_str(" (local.get 0))");
    text
}

#[test]
fn modules_beyond_the_compile_bounds_are_refused_before_compiling() {
    use super::{FUNCTIONS_MAX, FUNCTION_BODY_BYTES_MAX, LOCALS_PER_FUNCTION_MAX};
    let runtime = PluginRuntime::new().unwrap();
    let refused = |bytes: &[u8], words: &str| match runtime.compile(bytes) {
        Err(PluginError::Invalid(reason)) => assert!(reason.contains(words), "{reason}"),
        other => panic!(
            "expected a refusal naming {words:?}, got {:?}",
            other.map(|_| ())
        ),
    };
    // One local too many.
    let locals = module(
        1,
        &packed(16, 1),
        &busy_function(LOCALS_PER_FUNCTION_MAX + 1, 1),
    );
    refused(&locals, "locals");
    // A body over the limit (each statement takes at most 10 bytes here).
    let statements = (FUNCTION_BODY_BYTES_MAX / 8) as u32;
    let big = module(1, &packed(16, 1), &busy_function(1_000, statements));
    refused(&big, "function body");
    // One function too many.
    let many: String = (0..FUNCTIONS_MAX).map(|_| "(func)").collect();
    refused(&module(1, &packed(16, 1), &many), "functions");
    // Within every bound, the same shapes compile.
    let fits = module(
        1,
        &packed(16, 1),
        &busy_function(LOCALS_PER_FUNCTION_MAX, 1_000),
    );
    assert!(runtime.compile(&fits).is_ok());
}

/// How long the worst modules within the bounds take to compile; on demand:
/// `cargo test -p cairn --release --lib compile_time_at_the_bounds -- --ignored --nocapture`.
#[test]
#[ignore]
fn compile_time_at_the_bounds() {
    use super::{FUNCTION_BODY_BYTES_MAX, LOCALS_PER_FUNCTION_MAX, MODULE_BYTES_MAX};
    let runtime = PluginRuntime::new().unwrap();
    for locals in [64, 1_024, LOCALS_PER_FUNCTION_MAX] {
        let statements = (FUNCTION_BODY_BYTES_MAX / 11) as u32;
        let one = busy_function(locals, statements);
        let bytes = module(1, &packed(16, 1), &one);
        let started = std::time::Instant::now();
        runtime.compile(&bytes).unwrap();
        let single = started.elapsed();
        let copies = MODULE_BYTES_MAX / bytes.len();
        let whole = module(1, &packed(16, 1), &one.repeat(copies));
        let started = std::time::Instant::now();
        runtime.compile(&whole).unwrap();
        println!(
            "{locals} locals: one function of {} bytes {single:?}; a {}-byte module of {copies} {:?}",
            bytes.len(),
            whole.len(),
            started.elapsed()
        );
    }
}

/// Security (issue 14), restated: a plugin is given the table, the key and
/// the live versions' values, content types and timestamps — never an API
/// key, the cluster secret, a client's identity or address — and it can call
/// nothing outside its sandbox (no imports are linked:
/// `modules_with_imports_or_another_abi_are_refused_at_upload`). The input
/// is destructured in full, so a field added to the ABI fails to compile
/// here until someone has checked what it exposes.
#[test]
fn a_plugin_sees_only_the_table_key_and_versions() {
    let ReconcileInput {
        table,
        key,
        siblings,
    } = cairn_sdk::ReconcileInput::for_test(&[b"a", b"b"]);
    assert_eq!((table.as_str(), key.as_slice()), ("test", &b"key"[..]));
    for cairn_sdk::Sibling {
        value,
        content_type,
        timestamp_ms,
    } in siblings
    {
        assert_eq!(value.len(), 1);
        assert_eq!(content_type, "application/json");
        assert!(timestamp_ms > 0);
    }
}
