//! Upload validation: the module compiles, speaks our ABI version, exports
//! what it declares, and imports nothing.

use sha2::{Digest, Sha256};
use wasmtime::{ExternType, Module, ValType};

use super::{exports, PluginError, MODULE_BYTES_MAX};

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

/// Checks the module's shape (everything but the ABI version, which needs a call).
pub(super) fn check_shape(module: &Module, bytes: &[u8]) -> Result<Vec<String>, PluginError> {
    if bytes.len() > MODULE_BYTES_MAX {
        return Err(PluginError::Invalid(format!(
            "module larger than {MODULE_BYTES_MAX} bytes"
        )));
    }
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
