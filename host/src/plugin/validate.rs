//! Upload validation: the module compiles, speaks our ABI version, exports
//! what it declares, and imports nothing.

use sha2::{Digest, Sha256};
use wasmparser::{Parser, Payload};
use wasmtime::{ExternType, Module, ValType};

use super::{
    exports, PluginError, FUNCTIONS_MAX, FUNCTION_BODY_BYTES_MAX, LOCALS_PER_FUNCTION_MAX,
    MODULE_BYTES_MAX,
};

/// What validation learned about a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// sha256 of the bytes, hex.
    pub sha256: String,
    /// ABI version the module reports.
    pub abi: u32,
    /// Plugin functions it exports: `reconcile`, `select_storage`, `samples`.
    pub exports: Vec<String>,
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bounds what compiling `bytes` can cost before the compiler sees them:
/// compile time and memory grow with the size of each function and the
/// number of its locals, so a module within these limits compiles in bounded
/// time and memory however hostile its code (docs/decisions/0010).
pub(super) fn check_compile_bounds(bytes: &[u8]) -> Result<(), PluginError> {
    if bytes.len() > MODULE_BYTES_MAX {
        return Err(PluginError::Invalid(format!(
            "module of {} bytes exceeds {MODULE_BYTES_MAX}",
            bytes.len()
        )));
    }
    let invalid =
        |e: wasmparser::BinaryReaderError| PluginError::Invalid(format!("not a valid module: {e}"));
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            Payload::CodeSectionStart { count, .. } if count > FUNCTIONS_MAX => {
                return Err(PluginError::Invalid(format!(
                    "the module defines {count} functions; at most {FUNCTIONS_MAX} are accepted"
                )));
            }
            Payload::CodeSectionEntry(body) => {
                let size = body.range().len();
                if size > FUNCTION_BODY_BYTES_MAX {
                    return Err(PluginError::Invalid(format!(
                        "a function body of {size} bytes exceeds {FUNCTION_BODY_BYTES_MAX}"
                    )));
                }
                let mut locals = 0u64;
                for group in body.get_locals_reader().map_err(invalid)? {
                    let (count, _) = group.map_err(invalid)?;
                    locals += u64::from(count);
                }
                if locals > u64::from(LOCALS_PER_FUNCTION_MAX) {
                    return Err(PluginError::Invalid(format!(
                        "a function declares {locals} locals; at most {LOCALS_PER_FUNCTION_MAX} are accepted"
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks the module's shape (everything but the ABI version, which needs a call).
pub(super) fn check_shape(module: &Module) -> Result<Vec<String>, PluginError> {
    if let Some(import) = module.imports().next() {
        return Err(PluginError::Invalid(format!(
            "imports are not allowed (found {}::{}): plugins get no WASI, clock, filesystem or network",
            import.module(),
            import.name()
        )));
    }
    let func = |name: &str| -> Option<(Vec<ValType>, Vec<ValType>)> {
        match module.get_export(name)? {
            ExternType::Func(f) => Some((f.params().collect(), f.results().collect())),
            _ => None,
        }
    };
    let is_i32 = |t: &ValType| matches!(t, ValType::I32);
    let is_i64 = |t: &ValType| matches!(t, ValType::I64);
    let signature = |name: &str,
                     params: &[fn(&ValType) -> bool],
                     results: &[fn(&ValType) -> bool]|
     -> Result<bool, PluginError> {
        match func(name) {
            None => Ok(false),
            Some((p, r)) => {
                let ok = p.len() == params.len()
                    && r.len() == results.len()
                    && p.iter().zip(params).all(|(t, f)| f(t))
                    && r.iter().zip(results).all(|(t, f)| f(t));
                if ok {
                    Ok(true)
                } else {
                    Err(PluginError::Invalid(format!(
                        "export {name} has the wrong signature"
                    )))
                }
            }
        }
    };
    if !matches!(
        module.get_export(exports::MEMORY),
        Some(ExternType::Memory(_))
    ) {
        return Err(PluginError::Invalid(
            "the module must export its memory as \"memory\"".into(),
        ));
    }
    if !signature(exports::ABI_VERSION, &[], &[is_i32])? {
        return Err(PluginError::Invalid(format!(
            "missing export {} (build with cairn-sdk's export_plugin!)",
            exports::ABI_VERSION
        )));
    }
    if !signature(exports::ALLOC, &[is_i32], &[is_i32])? {
        return Err(PluginError::Invalid(format!(
            "missing export {}",
            exports::ALLOC
        )));
    }
    let mut found = Vec::new();
    if signature(exports::RECONCILE, &[is_i32, is_i32], &[is_i64])? {
        found.push("reconcile".to_owned());
    }
    if signature(exports::SELECT_STORAGE, &[is_i32, is_i32], &[is_i64])? {
        found.push("select_storage".to_owned());
    }
    if signature(exports::SAMPLES, &[is_i64], &[is_i64])? {
        found.push("samples".to_owned());
    }
    if !found
        .iter()
        .any(|e| e == "reconcile" || e == "select_storage")
    {
        return Err(PluginError::Invalid(
            "the module exports neither reconcile nor select_storage".into(),
        ));
    }
    Ok(found)
}
