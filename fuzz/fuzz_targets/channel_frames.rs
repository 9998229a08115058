//! What an authenticated peer sends on the validator channel (`node::fuzzing::check_channel_frames`).
#![no_main]

use ledger::fuzzing::net;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    node::fuzzing::check_channel_frames(&net().genesis, &net().keys, data);
});
