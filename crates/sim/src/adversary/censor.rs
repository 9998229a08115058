//! Censorship (finding 3): drops one patient's transactions wherever they reach it (from a
//! client, in a forward, in what it forwards), so as primary it never proposes them while it
//! keeps committing everything else.
use std::collections::BTreeSet;

use pbft::{Digest, Request};

pub fn censored(r: &Request, censored: &BTreeSet<Digest>) -> bool {
    censored.contains(&r.id)
}

pub fn strip(requests: Vec<Request>, ids: &BTreeSet<Digest>) -> Vec<Request> {
    requests.into_iter().filter(|r| !censored(r, ids)).collect()
}
