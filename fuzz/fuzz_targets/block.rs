//! A block from a peer or a file (`ledger::fuzzing::check_block`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ledger::fuzzing::check_block(data);
});
