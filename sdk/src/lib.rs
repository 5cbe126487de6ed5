//! `cairn-sdk`: write Cairn plugins in plain Rust.
//!
//! A Cairn table with `"merge": "plugin"` hands concurrent versions of a key to
//! its plugin's `reconcile`, on the coordinator's read path, sandboxed in
//! WebAssembly. A plugin is a `cdylib` crate built for `wasm32-unknown-unknown`
//! that writes ordinary functions and exports them with [`export_plugin!`]:
//!
//! ```
//! use cairn_sdk::{export_plugin, ReconcileInput, Resolution};
//!
//! /// Keeps the longest value: deterministic, commutative, associative, idempotent.
//! fn reconcile(input: ReconcileInput) -> Resolution {
//!     match input.siblings.iter().max_by(|a, b| (a.value.len(), &a.value).cmp(&(b.value.len(), &b.value))) {
//!         Some(longest) => Resolution::merged(longest.value.clone()),
//!         None => Resolution::KeepSiblings,
//!     }
//! }
//!
//! export_plugin! { reconcile = reconcile; }
//!
//! // Plugin logic is plain Rust, so it is unit-tested natively:
//! let input = ReconcileInput::for_test(&[b"ab", b"abc"]);
//! assert_eq!(reconcile(input), Resolution::merged(b"abc".to_vec()));
//! ```
//!
//! The ABI (version [`ABI_VERSION`]) is core WebAssembly with no imports: the
//! host writes a postcard-encoded input into memory the guest allocated with
//! `cairn_alloc`, calls an export with (pointer, length), and reads back a
//! postcard-encoded answer whose location comes back packed in an `i64`
//! (pointer in the high 32 bits, length in the low). Each call gets a fresh
//! instance, a fuel budget and a memory cap; a trap costs that call only.
//!
//! A merge must be deterministic, commutative, associative and idempotent:
//! replicas and retries must agree whatever order siblings arrive in.
//! `cairn plugin check FILE.wasm` will test those laws inside the sandbox.

use serde::{Deserialize, Serialize};

#[cfg(feature = "json")]
pub mod json;

#[doc(hidden)]
pub mod guest;

/// Version of the host ↔ plugin ABI. A host refuses plugins built for another.
pub const ABI_VERSION: u32 = 1;

/// One live concurrent version of a key, as a plugin sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling {
    /// The value bytes.
    pub value: Vec<u8>,
    /// Its media type.
    pub content_type: String,
    /// The coordinator's wall clock when the version was written.
    pub timestamp_ms: u64,
}

/// What `reconcile` is given: the key and its live siblings, sorted by
/// (timestamp_ms, version id) — never tombstones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileInput {
    /// The table.
    pub table: String,
    /// The key.
    pub key: Vec<u8>,
    /// Two or more live versions.
    pub siblings: Vec<Sibling>,
}

impl ReconcileInput {
    /// An input for unit tests: values with `application/json`, timestamps 1, 2, ...
    pub fn for_test(values: &[&[u8]]) -> Self {
        ReconcileInput {
            table: "test".into(),
            key: b"key".to_vec(),
            siblings: values
                .iter()
                .enumerate()
                .map(|(i, v)| Sibling {
                    value: v.to_vec(),
                    content_type: "application/json".into(),
                    timestamp_ms: i as u64 + 1,
                })
                .collect(),
        }
    }
}

/// What `reconcile` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resolution {
    /// One value replaces every sibling; without a content type the first
    /// sibling's is kept.
    Merged {
        /// The merged value.
        value: Vec<u8>,
        /// Its media type, if the plugin sets one.
        content_type: Option<String>,
    },
    /// Leave the siblings to the client (answered 300).
    KeepSiblings,
}

impl Resolution {
    /// A merged value keeping the siblings' content type.
    pub fn merged(value: Vec<u8>) -> Self {
        Resolution::Merged {
            value,
            content_type: None,
        }
    }
}

/// What `select_storage` is asked, once per object written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageQuery {
    /// The table.
    pub table: String,
    /// The key.
    pub key: Vec<u8>,
    /// Bytes of every live version of the object after the write.
    pub total_live_bytes: u64,
}

/// Where an object's value bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Storage {
    /// LMDB (the default).
    Lmdb,
    /// Process memory (volatile).
    Memory,
    /// Files named by sha256 (for large values).
    Blob,
}

/// Exports plain Rust functions as a Cairn plugin. Each entry is optional:
///
/// ```ignore
/// cairn_sdk::export_plugin! {
///     reconcile = my_reconcile;           // fn(ReconcileInput) -> Resolution
///     select_storage = my_select;         // fn(StorageQuery) -> Storage
///     samples = my_samples;               // fn(u64) -> Vec<Vec<u8>>: values for `cairn plugin check`
/// }
/// ```
///
/// The exports exist only in the `wasm32` build: natively a plugin crate is
/// an ordinary library whose `reconcile` tests and simulators call directly,
/// and several plugins link into one binary without clashing symbols.
#[macro_export]
macro_rules! export_plugin {
    (
        $(reconcile = $reconcile:path;)?
        $(select_storage = $select:path;)?
        $(samples = $samples:path;)?
    ) => {
        #[cfg(target_arch = "wasm32")]
        #[no_mangle]
        pub extern "C" fn cairn_abi_version() -> i32 {
            $crate::ABI_VERSION as i32
        }

        #[cfg(target_arch = "wasm32")]
        #[no_mangle]
        pub extern "C" fn cairn_alloc(len: i32) -> i32 {
            $crate::guest::alloc(len)
        }

        $(
            #[cfg(target_arch = "wasm32")]
            #[no_mangle]
            pub extern "C" fn cairn_reconcile(ptr: i32, len: i32) -> i64 {
                $crate::guest::call(ptr, len, $reconcile)
            }
        )?

        $(
            #[cfg(target_arch = "wasm32")]
            #[no_mangle]
            pub extern "C" fn cairn_select_storage(ptr: i32, len: i32) -> i64 {
                $crate::guest::call(ptr, len, $select)
            }
        )?

        $(
            #[cfg(target_arch = "wasm32")]
            #[no_mangle]
            pub extern "C" fn cairn_samples(seed: i64) -> i64 {
                $crate::guest::answer(&$samples(seed as u64))
            }
        )?
    };
}
