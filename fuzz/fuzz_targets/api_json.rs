//! An HTTP request body, as every JSON body of the API (`medchain::http::fuzzing::check_api_json`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    medchain::http::fuzzing::check_api_json(data);
});
