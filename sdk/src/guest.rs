//! Glue between the host's (pointer, length) calls and plain Rust functions.
//! Used through [`crate::export_plugin!`]; not meant to be called directly.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Reserves `len` bytes the host will fill with a call's input.
pub fn alloc(len: i32) -> i32 {
    let mut buffer = Vec::<u8>::with_capacity(len.max(0) as usize);
    let ptr = buffer.as_mut_ptr();
    // The host owns the buffer now; the instance is discarded after the call.
    std::mem::forget(buffer);
    ptr as usize as i32
}

/// Decodes the input at (ptr, len), runs `f`, and returns where its encoded
/// answer lies. An undecodable input traps: the host reports it as such.
pub fn call<I: DeserializeOwned, O: Serialize>(ptr: i32, len: i32, f: fn(I) -> O) -> i64 {
    // SAFETY: the host wrote `len` bytes at `ptr`, inside a buffer it got from `alloc`.
    let bytes =
        unsafe { std::slice::from_raw_parts(ptr as usize as *const u8, len.max(0) as usize) };
    let input: I = match postcard::from_bytes(bytes) {
        Ok(input) => input,
        Err(_) => panic!("cairn: undecodable input"),
    };
    answer(&f(input))
}

/// Encodes `value` and returns its location packed as (ptr << 32 | len).
pub fn answer<O: Serialize>(value: &O) -> i64 {
    let encoded = match postcard::to_allocvec(value) {
        Ok(encoded) => encoded,
        Err(_) => panic!("cairn: unencodable answer"),
    };
    let len = encoded.len() as u64;
    let ptr = encoded.as_ptr() as usize as u64;
    std::mem::forget(encoded);
    ((ptr << 32) | len) as i64
}
