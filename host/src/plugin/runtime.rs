//! The engine, the module registry and the per-call sandbox.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use cairn_sdk::{ReconcileInput, Resolution, Storage, StorageQuery};
use serde::de::DeserializeOwned;
use serde::Serialize;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap,
};

use super::validate::{check_compile_bounds, check_shape, sha256_hex, PluginInfo};
use super::{
    exports, PluginError, COMPILES_MAX, COMPILE_INSTANCES_MAX, EPOCH_TICKS_PER_CALL, EPOCH_TICK_MS,
    FUEL_PER_CALL, INSTANCES_MAX, MEMORY_BYTES_MAX, OUTPUT_BYTES_MAX, STACK_BYTES_MAX,
};

/// What one call's store carries: its resource limits, and whether they
/// refused a memory growth (so the failure is classified by what happened,
/// not by the words of an error message).
struct CallState {
    limits: StoreLimits,
    memory_refused: bool,
}

impl ResourceLimiter for CallState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let decided = self.limits.memory_growing(current, desired, maximum);
        if !matches!(decided, Ok(true)) {
            self.memory_refused = true;
        }
        decided
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// Lets at most `max` threads through at once, the others wait: used for
/// compiles (their memory) and for the validation calls of compilations (the
/// pool slots kept for them).
struct CompileGate {
    max: u32,
    running: Mutex<u32>,
    freed: Condvar,
}

impl CompileGate {
    fn new(max: u32) -> Self {
        CompileGate {
            max,
            running: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    fn enter(&self) -> CompileTurn<'_> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= self.max {
            running = self.freed.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
        CompileTurn(self)
    }
}

struct CompileTurn<'a>(&'a CompileGate);

impl Drop for CompileTurn<'_> {
    fn drop(&mut self) {
        let mut running = self.0.running.lock().unwrap_or_else(|e| e.into_inner());
        *running -= 1;
        self.0.freed.notify_one();
    }
}

/// A validated, compiled module, ready to instantiate.
pub struct CompiledPlugin {
    /// sha256, ABI and exports.
    pub info: PluginInfo,
    pre: InstancePre<CallState>,
}

/// One engine for the node and its compiled modules, by sha256.
pub struct PluginRuntime {
    engine: Engine,
    modules: RwLock<HashMap<String, Arc<CompiledPlugin>>>,
    compiling: CompileGate,
    /// Compiles under way, at most [`COMPILES_MAX`].
    compiles: CompileGate,
    /// Largest merged value a plugin may answer (the node's `--value-bytes-max`).
    merged_bytes_max: AtomicUsize,
}

impl PluginRuntime {
    /// Builds the engine (deterministic float and SIMD semantics, fuel, epoch
    /// deadlines, a small instance pool) and starts its epoch ticker.
    pub fn new() -> Result<Arc<PluginRuntime>, PluginError> {
        let mut pool = PoolingAllocationConfig::default();
        let slots = INSTANCES_MAX + COMPILE_INSTANCES_MAX;
        pool.total_core_instances(slots)
            .total_memories(slots)
            .total_tables(slots)
            .max_memory_size(MEMORY_BYTES_MAX);
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(STACK_BYTES_MAX)
            .cranelift_nan_canonicalization(true)
            .relaxed_simd_deterministic(true)
            .memory_init_cow(true)
            .memory_reservation(MEMORY_BYTES_MAX as u64)
            .memory_guard_size(64 * 1024)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)
            .map_err(|e| PluginError::Unavailable(format!("wasm engine: {e}")))?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("cairn-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(EPOCH_TICK_MS));
                match ticker.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            })
            .map_err(|e| PluginError::Unavailable(format!("epoch ticker: {e}")))?;
        Ok(Arc::new(PluginRuntime {
            engine,
            modules: RwLock::new(HashMap::new()),
            compiling: CompileGate::new(COMPILE_INSTANCES_MAX),
            compiles: CompileGate::new(COMPILES_MAX),
            merged_bytes_max: AtomicUsize::new(crate::core::limits::VALUE_BYTES_MAX_DEFAULT),
        }))
    }

    /// Caps merged values at the node's `--value-bytes-max`.
    pub fn set_merged_bytes_max(&self, bytes: usize) {
        self.merged_bytes_max.store(bytes, Ordering::Relaxed);
    }

    /// Validates and compiles `bytes` (never a precompiled artifact: always
    /// from the wasm), checking its ABI version with one sandboxed call.
    pub fn compile(&self, bytes: &[u8]) -> Result<Arc<CompiledPlugin>, PluginError> {
        check_compile_bounds(bytes)?;
        let sha256 = sha256_hex(bytes);
        if let Some(known) = self.get(&sha256) {
            return Ok(known);
        }
        let turn = self.compiles.enter();
        let module = Module::new(&self.engine, bytes)
            .map_err(|e| PluginError::Invalid(format!("not a valid module: {e}")))?;
        drop(turn);
        let found = check_shape(&module)?;
        let linker: Linker<CallState> = Linker::new(&self.engine);
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| PluginError::Invalid(format!("cannot instantiate: {e}")))?;
        let mut plugin = CompiledPlugin {
            info: PluginInfo {
                sha256,
                abi: 0,
                exports: found,
            },
            pre,
        };
        let turn = self.compiling.enter();
        let abi = self.abi_version(&plugin);
        drop(turn);
        let abi = abi
            .map_err(|e| PluginError::Invalid(format!("calling {}: {e}", exports::ABI_VERSION)))?;
        if abi != cairn_sdk::ABI_VERSION {
            return Err(PluginError::Invalid(format!(
                "plugin ABI version {abi}; this Cairn speaks {}",
                cairn_sdk::ABI_VERSION
            )));
        }
        plugin.info.abi = abi;
        Ok(Arc::new(plugin))
    }

    /// Makes a compiled module callable by its sha256.
    pub fn insert(&self, plugin: Arc<CompiledPlugin>) {
        if let Ok(mut modules) = self.modules.write() {
            modules.insert(plugin.info.sha256.clone(), plugin);
        }
    }

    /// The compiled module with this sha256, if this node has it.
    pub fn get(&self, sha256: &str) -> Option<Arc<CompiledPlugin>> {
        self.modules.read().ok()?.get(sha256).cloned()
    }

    /// Runs `reconcile`.
    pub fn reconcile(
        &self,
        plugin: &CompiledPlugin,
        input: &ReconcileInput,
    ) -> Result<Resolution, PluginError> {
        let resolution: Resolution = self.call(plugin, exports::RECONCILE, input)?;
        checked_resolution(resolution, self.merged_bytes_max.load(Ordering::Relaxed))
    }

    /// Runs `select_storage`.
    pub fn select_storage(
        &self,
        plugin: &CompiledPlugin,
        query: &StorageQuery,
    ) -> Result<Storage, PluginError> {
        self.call(plugin, exports::SELECT_STORAGE, query)
    }

    /// Runs the sample generator.
    pub fn samples(&self, plugin: &CompiledPlugin, seed: u64) -> Result<Vec<Vec<u8>>, PluginError> {
        let (mut store, instance) = self.instantiate(plugin)?;
        let func = instance
            .get_typed_func::<i64, i64>(&mut store, exports::SAMPLES)
            .map_err(|_| PluginError::Unavailable("the plugin has no sample generator".into()))?;
        let packed = func
            .call(&mut store, seed as i64)
            .map_err(|e| classify(e, &store))?;
        let bytes = read_output(&mut store, &instance, packed)?;
        decode(&bytes)
    }

    /// A live instance of `plugin`, held until dropped: what a running call
    /// holds, for tests of the pool.
    #[cfg(test)]
    pub(crate) fn hold_instance(&self, plugin: &CompiledPlugin) -> Result<impl Drop, PluginError> {
        self.instantiate(plugin).map(|(store, _)| store)
    }

    /// Creates one sandboxed instance and drops it: the setup every call pays,
    /// for benchmarks.
    pub fn instantiate_once(&self, plugin: &CompiledPlugin) -> Result<(), PluginError> {
        self.instantiate(plugin).map(|_| ())
    }

    fn abi_version(&self, plugin: &CompiledPlugin) -> Result<u32, PluginError> {
        let (mut store, instance) = self.instantiate(plugin)?;
        let func = instance
            .get_typed_func::<(), i32>(&mut store, exports::ABI_VERSION)
            .map_err(|e| PluginError::Invalid(e.to_string()))?;
        func.call(&mut store, ())
            .map(|v| v as u32)
            .map_err(|e| classify(e, &store))
    }

    fn instantiate(
        &self,
        plugin: &CompiledPlugin,
    ) -> Result<(Store<CallState>, wasmtime::Instance), PluginError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(MEMORY_BYTES_MAX)
            .instances(1)
            .trap_on_grow_failure(true)
            .build();
        let state = CallState {
            limits,
            memory_refused: false,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| state);
        store
            .set_fuel(FUEL_PER_CALL)
            .map_err(|e| PluginError::Unavailable(e.to_string()))?;
        store.set_epoch_deadline(EPOCH_TICKS_PER_CALL);
        let instance = plugin
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(e, &store))?;
        Ok((store, instance))
    }

    /// One call: encode the input, copy it into a fresh instance, call the
    /// export, copy the answer out after checking its bounds, decode it.
    fn call<I: Serialize, O: DeserializeOwned>(
        &self,
        plugin: &CompiledPlugin,
        export: &str,
        input: &I,
    ) -> Result<O, PluginError> {
        let encoded = postcard::to_allocvec(input)
            .map_err(|e| PluginError::Unavailable(format!("encoding the input: {e}")))?;
        let len = i32::try_from(encoded.len())
            .map_err(|_| PluginError::Unavailable("input too large".into()))?;
        let (mut store, instance) = self.instantiate(plugin)?;
        let memory = instance
            .get_memory(&mut store, exports::MEMORY)
            .ok_or_else(|| PluginError::Output("no memory export".into()))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, exports::ALLOC)
            .map_err(|e| PluginError::Unavailable(e.to_string()))?;
        let ptr = alloc
            .call(&mut store, len)
            .map_err(|e| classify(e, &store))?;
        let start = usize::try_from(ptr as u32).unwrap_or(usize::MAX);
        let fits = start
            .checked_add(encoded.len())
            .is_some_and(|end| end <= memory.data_size(&store));
        if !fits {
            return Err(PluginError::Output(format!(
                "{} returned a buffer outside memory",
                exports::ALLOC
            )));
        }
        memory
            .write(&mut store, start, &encoded)
            .map_err(|e| PluginError::Output(e.to_string()))?;
        let func = instance
            .get_typed_func::<(i32, i32), i64>(&mut store, export)
            .map_err(|_| {
                PluginError::Unavailable(format!("the plugin does not export {export}"))
            })?;
        let packed = func
            .call(&mut store, (ptr, len))
            .map_err(|e| classify(e, &store))?;
        let bytes = read_output(&mut store, &instance, packed)?;
        decode(&bytes)
    }
}

/// Copies the answer at the packed (ptr << 32 | len) out of guest memory,
/// refusing anything outside it or over the output cap.
fn read_output(
    store: &mut Store<CallState>,
    instance: &wasmtime::Instance,
    packed: i64,
) -> Result<Vec<u8>, PluginError> {
    let packed = packed as u64;
    let (ptr, len) = ((packed >> 32) as usize, (packed & 0xFFFF_FFFF) as usize);
    if len > OUTPUT_BYTES_MAX {
        return Err(PluginError::Output(format!(
            "answer of {len} bytes exceeds {OUTPUT_BYTES_MAX}"
        )));
    }
    let memory = instance
        .get_memory(&mut *store, exports::MEMORY)
        .ok_or_else(|| PluginError::Output("no memory export".into()))?;
    let data = memory.data(&*store);
    let end = ptr.checked_add(len).filter(|&end| end <= data.len());
    match end {
        Some(end) => Ok(data[ptr..end].to_vec()),
        None => Err(PluginError::Output(format!(
            "answer at {ptr}+{len} lies outside memory of {} bytes",
            data.len()
        ))),
    }
}

/// Refuses a merge the node must not store: a value over `merged_bytes_max`
/// or a content type that is not 1-256 printable ASCII characters.
pub fn checked_resolution(
    resolution: Resolution,
    merged_bytes_max: usize,
) -> Result<Resolution, PluginError> {
    if let Resolution::Merged {
        value,
        content_type,
    } = &resolution
    {
        if value.len() > merged_bytes_max {
            return Err(PluginError::Output(format!(
                "merged value of {} bytes",
                value.len()
            )));
        }
        if let Some(ct) = content_type {
            if ct.is_empty()
                || ct.len() > 256
                || !ct.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            {
                return Err(PluginError::Output(
                    "content type is not printable ASCII of 1-256 characters".into(),
                ));
            }
        }
    }
    Ok(resolution)
}

/// What a plugin's `reconcile` answer bytes (as copied out of its memory)
/// come to on the host: decoded, then checked as [`checked_resolution`]
/// does. The path every guest answer takes; fuzzed as such.
pub fn reconcile_answer(bytes: &[u8], merged_bytes_max: usize) -> Result<Resolution, PluginError> {
    checked_resolution(decode(bytes)?, merged_bytes_max)
}

/// What a plugin's `select_storage` answer bytes come to on the host.
pub fn storage_answer(bytes: &[u8]) -> Result<Storage, PluginError> {
    decode(bytes)
}

fn decode<O: DeserializeOwned>(bytes: &[u8]) -> Result<O, PluginError> {
    let (value, rest) = postcard::take_from_bytes(bytes)
        .map_err(|e| PluginError::Output(format!("undecodable answer: {e}")))?;
    if !rest.is_empty() {
        return Err(PluginError::Output(format!(
            "{} trailing bytes after the answer",
            rest.len()
        )));
    }
    Ok(value)
}

/// Sorts a wasmtime failure into the kinds clients see, by what happened (a
/// trap code, the limiter refusing memory, no pool slot), with the cause
/// first in the detail so the plugin's own names never crowd it out.
fn classify(error: wasmtime::Error, store: &Store<CallState>) -> PluginError {
    if store.data().memory_refused {
        return PluginError::Memory(format!(
            "the call needed more than {MEMORY_BYTES_MAX} bytes of memory"
        ));
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => PluginError::Fuel("fuel budget exhausted".into()),
            Trap::Interrupt => PluginError::Fuel("wall-clock backstop passed".into()),
            other => PluginError::Trap(other.to_string()),
        };
    }
    if error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return PluginError::Unavailable("no free sandbox instance".into());
    }
    PluginError::Trap(error.root_cause().to_string())
}
