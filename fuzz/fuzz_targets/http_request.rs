//! `cargo fuzz run http_request`: see `cairn::fuzz::http_request`. A panic on the live
//! node's own threads aborts the process, so the fuzzer sees it; a node
//! that stops answering is a crash too.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: {
        cairn::fuzz::abort_on_panic();
    },
    |data: &[u8]| {
        cairn::fuzz::http_request(data);
        assert!(cairn::fuzz::live_node_answers(), "the node stopped answering");
    }
);
