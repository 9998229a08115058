//! Oversized and duplicate batches (finding 5): as primary, each pre-prepare it sends carries its
//! requests many times over, far past the maximum batch, under the digest of the padded proposal.
use std::sync::Arc;

use pbft::PrePrepare;

use crate::crypto;

/// Copies per maximum batch.
const TIMES: usize = 20;

pub fn pad(pp: &PrePrepare, max_batch: usize) -> PrePrepare {
    let mut p = (*pp.proposal).clone();
    if p.requests.is_empty() {
        return pp.clone();
    }
    let originals = p.requests.clone();
    while p.requests.len() < TIMES * max_batch {
        p.requests.extend(originals.iter().cloned());
    }
    PrePrepare {
        view: pp.view,
        digest: crypto::digest(&p),
        proposal: Arc::new(p),
    }
}
