//! Stale and doctored prepared certificates in its view-changes: for each sequence number the
//! lowest-view certificate it has seen (its own older ones, or others' from their view-changes)
//! instead of its newest, certificates for sequence numbers it never prepared, and now and then
//! a broken one (a prepare duplicated or dropped) that a correct replica must reject.
use pbft::{SeqNo, ViewChange};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::Memory;

/// Sequence numbers remembered (the oldest are forgotten first).
const REMEMBERED: usize = 64;

pub fn remember(memory: &mut Memory, vc: &ViewChange) {
    for cert in &vc.prepared {
        memory
            .certificates
            .entry(cert.pre_prepare.proposal.seq)
            .or_default()
            .entry(cert.pre_prepare.view)
            .or_insert_with(|| cert.clone());
    }
    while memory.certificates.len() > REMEMBERED {
        memory.certificates.pop_first();
    }
}

pub fn rewrite(
    memory: &Memory,
    mut vc: ViewChange,
    window: u64,
    rng: &mut ChaCha8Rng,
) -> ViewChange {
    let low = vc.checkpoint.seq;
    let range = low + 1..=low + window;
    let mut by_seq: std::collections::BTreeMap<SeqNo, _> = vc
        .prepared
        .drain(..)
        .map(|c| (c.pre_prepare.proposal.seq, c))
        .collect();
    for (seq, views) in memory.certificates.range(range) {
        // The stalest one this view-change may carry.
        if let Some((_, cert)) = views.range(..vc.new_view).next() {
            by_seq.insert(*seq, cert.clone());
        }
    }
    vc.prepared = by_seq.into_values().collect();
    if rng.gen_bool(0.2)
        && let Some(cert) = vc.prepared.first_mut()
    {
        if rng.gen_bool(0.5) || cert.prepares.len() < 2 {
            cert.prepares.pop();
        } else {
            let first = cert.prepares[0].clone();
            cert.prepares[1] = first;
        }
    }
    vc
}
