//! An equivocating primary: some backups get a second, validly signed proposal for the same
//! sequence number (its requests reversed, or none), the others the first.
use std::sync::Arc;

use pbft::PrePrepare;

use crate::crypto;

/// The second proposal for `pp`'s sequence number.
pub fn second(pp: &PrePrepare) -> PrePrepare {
    let mut p = (*pp.proposal).clone();
    if p.requests.len() > 1 {
        p.requests.reverse();
    } else {
        p.requests.clear();
    }
    PrePrepare {
        view: pp.view,
        digest: crypto::digest(&p),
        proposal: Arc::new(p),
    }
}
