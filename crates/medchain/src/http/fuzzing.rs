//! The check of the `api_json` fuzz target (`fuzz/`), which `cargo test` also runs on every
//! file of its committed corpus. Not part of the API.
use super::{auth, consent, identity, records};

/// `api_json`: a request body, parsed as every JSON body the API takes, each as its handler's
/// [`super::extract::ApiJson`] parses it. Whatever the bytes, each parse ends in a value or in
/// a refusal that is the client's error (4xx), never a panic or a 5xx. Accepted: some body type
/// took it.
pub fn check_api_json(bytes: &[u8]) -> bool {
    let parsed = [
        auth::parse_bodies(bytes),
        consent::parse_bodies(bytes),
        identity::parse_bodies(bytes),
        records::parse_bodies(bytes),
    ];
    let mut accepted = false;
    for result in parsed.into_iter().flatten() {
        match result {
            Ok(()) => accepted = true,
            Err(error) => assert!(
                error.status().is_client_error(),
                "a body refused with {}: {error:?}",
                error.status()
            ),
        }
    }
    accepted
}
