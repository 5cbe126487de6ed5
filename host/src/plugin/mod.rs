//! The WebAssembly plugin host: one wasmtime engine, modules compiled once per
//! sha256, a fresh sandboxed instance per call.
//!
//! A plugin gets no imports at all (no WASI, clock, filesystem or network), a
//! fuel budget per call (deterministic, so every replica and `cairn plugin
//! check` decide alike), an epoch deadline as a wall-clock backstop, a memory
//! cap and a bounded stack. Every pointer and length it hands back is checked
//! against its memory before a byte is read. Whatever goes wrong costs that
//! one call: it comes back as a [`PluginError`].

pub mod check;
mod runtime;
mod validate;

pub use runtime::{
    checked_resolution, reconcile_answer, storage_answer, CompiledPlugin, PluginRuntime,
};
pub use validate::{sha256_hex, PluginInfo};

use crate::core::msg::PluginFailure;

/// Largest module accepted for upload.
pub const MODULE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Functions one module may define (the example plugins define a few hundred).
pub const FUNCTIONS_MAX: u32 = 10_000;
/// Largest function body: compile time and memory grow faster than linearly
/// in one function's size, so this, not the module size, bounds a compile.
pub const FUNCTION_BODY_BYTES_MAX: usize = 256 * 1024;
/// Locals one function may declare.
pub const LOCALS_PER_FUNCTION_MAX: u32 = 4_096;
/// Modules compiled at once on a node (uploads, arrivals from peers and
/// starts): with the bounds above, this bounds the memory compiling takes.
pub const COMPILES_MAX: u32 = 2;
/// Fuel (roughly, wasm instructions) one call may spend.
pub const FUEL_PER_CALL: u64 = 200_000_000;
/// Wall-clock backstop for one call, in epoch ticks of [`EPOCH_TICK_MS`]: 10 s,
/// a last resort far above what the fuel budget takes on any node (about
/// 0.3 s here), so a call that fits its fuel is never stopped by the clock on
/// a loaded node while `cairn plugin check` passed it on an idle one.
pub const EPOCH_TICKS_PER_CALL: u64 = 1_000;
/// How often the epoch ticker advances.
pub const EPOCH_TICK_MS: u64 = 10;
/// Linear memory one instance may grow to.
pub const MEMORY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Native stack a plugin may use.
pub const STACK_BYTES_MAX: usize = 256 * 1024;
/// Largest answer a plugin may return (a merged value plus framing).
pub const OUTPUT_BYTES_MAX: usize = 9 * 1024 * 1024;
/// Calls that may run at once (the node's plugin host admits no more).
pub const INSTANCES_MAX: u32 = 8;
/// Pool slots kept for the one validation call of a compilation (uploads and
/// modules arriving from peers), so busy calls never make a valid module fail.
pub const COMPILE_INSTANCES_MAX: u32 = 2;
/// Calls one plugin may run at once on a node: a looping plugin leaves the
/// other slots to the others.
pub const INSTANCES_PER_PLUGIN_MAX: u32 = INSTANCES_MAX / 2;

/// Export names of the plugin ABI.
pub mod exports {
    /// ABI version, `() -> i32`.
    pub const ABI_VERSION: &str = "cairn_abi_version";
    /// Input buffer allocation, `(i32) -> i32`.
    pub const ALLOC: &str = "cairn_alloc";
    /// `reconcile`, `(i32, i32) -> i64`.
    pub const RECONCILE: &str = "cairn_reconcile";
    /// `select_storage`, `(i32, i32) -> i64`.
    pub const SELECT_STORAGE: &str = "cairn_select_storage";
    /// Sample generator, `(i64) -> i64`.
    pub const SAMPLES: &str = "cairn_samples";
    /// The guest's linear memory.
    pub const MEMORY: &str = "memory";
}

/// Why a plugin call or upload failed. The first word of `Display` is the
/// kind clients see in `X-Cairn-Plugin-Error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// The plugin trapped (a panic, unreachable, out-of-bounds access, stack overflow).
    #[error("trap: {0}")]
    Trap(String),
    /// It ran out of fuel or time.
    #[error("fuel: {0}")]
    Fuel(String),
    /// It needed more memory than allowed.
    #[error("memory: {0}")]
    Memory(String),
    /// Its answer was out of bounds, too large or undecodable.
    #[error("output: {0}")]
    Output(String),
    /// No call could be made (module missing on this node, pool full).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The module was refused at upload.
    #[error("{0}")]
    Invalid(String),
}

impl PluginError {
    /// `X-Cairn-Plugin-Error`: kind, then at most 200 printable ASCII characters of detail.
    pub fn header_value(&self) -> String {
        PluginFailure::from(self.clone()).header_value()
    }
}

/// What the core is told of a failed call; a module refused here (it did
/// not compile on this node) leaves the call unavailable.
impl From<PluginError> for PluginFailure {
    fn from(error: PluginError) -> Self {
        match error {
            PluginError::Trap(detail) => PluginFailure::Trap(detail),
            PluginError::Fuel(detail) => PluginFailure::Fuel(detail),
            PluginError::Memory(detail) => PluginFailure::Memory(detail),
            PluginError::Output(detail) => PluginFailure::Output(detail),
            PluginError::Unavailable(detail) | PluginError::Invalid(detail) => {
                PluginFailure::Unavailable(detail)
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
