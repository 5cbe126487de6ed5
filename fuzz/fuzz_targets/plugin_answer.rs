//! `cargo fuzz run plugin_answer`: see `cairn::fuzz::plugin_answer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cairn::fuzz::plugin_answer(data);
});
