//! `cairn-sdk`: what Cairn plugin authors depend on.
//!
//! This crate will carry the ABI shared between the Cairn host and WebAssembly
//! plugins. For now it holds the ABI version and the value types both sides
//! agree on; the plugin runtime and export macro arrive with plugin support.
#![no_std]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Version of the host ↔ plugin ABI. A host refuses plugins built for another.
pub const ABI_VERSION: u32 = 1;

/// One concurrent version of a key, as a plugin will see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling {
    /// The value bytes.
    pub value: Vec<u8>,
    /// Its media type.
    pub content_type: String,
    /// The coordinator's wall clock when the version was written.
    pub timestamp_ms: u64,
}
