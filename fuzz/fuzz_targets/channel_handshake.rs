//! What an unauthenticated peer sends on the validator channel (`node::fuzzing::check_handshake`).
#![no_main]

use ledger::fuzzing::net;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    node::fuzzing::check_handshake(&net().genesis, &net().keys, data);
});
