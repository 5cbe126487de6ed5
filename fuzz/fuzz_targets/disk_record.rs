//! `cargo fuzz run disk_record`: see `cairn::fuzz::disk_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cairn::fuzz::disk_record(data);
});
