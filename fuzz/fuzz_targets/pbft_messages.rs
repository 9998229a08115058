//! Messages from peers to a PBFT replica (`pbft::fuzzing::check_messages`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pbft::fuzzing::check_messages(data);
});
