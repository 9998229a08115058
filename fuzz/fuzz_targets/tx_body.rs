//! A transaction's body, stored or as content (`ledger::fuzzing::check_tx_body`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ledger::fuzzing::check_tx_body(data);
});
