//! `cargo fuzz run context_token`: see `cairn::fuzz::context_token`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cairn::fuzz::context_token(data);
});
