//! A transaction's bytes, from a client or a peer (`ledger::fuzzing::check_signed_tx`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ledger::fuzzing::check_signed_tx(data);
});
