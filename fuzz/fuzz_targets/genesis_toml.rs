//! A genesis file (`ledger::fuzzing::check_genesis_toml`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ledger::fuzzing::check_genesis_toml(data);
});
