//! A validator's node.toml (`node::fuzzing::check_node_toml`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    node::fuzzing::check_node_toml(data);
});
