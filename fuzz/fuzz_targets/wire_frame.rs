//! A frame from an authenticated peer (`node::fuzzing::check_frame`).
#![no_main]

use ledger::fuzzing::net;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    node::fuzzing::check_frame(&net().genesis, data);
});
