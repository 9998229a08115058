//! A primary that writes an older view into its fresh proposals (`proposal.view`, which a
//! correct primary sets to its own view and a re-proposal from an O set keeps): backups accept
//! it (any view up to the pre-prepare's), so nothing may read `proposal.view` as proof that a
//! proposal was inherited. The first design of the inherited wait did, at a restart, and a
//! forged far-future proposal held restarted backups' timers for an hour (red team s35 F1;
//! `--planted-bug inherit-logged-proposals`).
use std::sync::Arc;

use pbft::PrePrepare;

use crate::crypto;

/// What the primary sends instead of `pp`: the same proposal claiming view 0, if it is its
/// own view's (an O set's re-proposal already names an older one).
pub fn rewrite(pp: PrePrepare) -> PrePrepare {
    if pp.proposal.view == 0 || pp.proposal.view != pp.view {
        return pp;
    }
    let mut p = (*pp.proposal).clone();
    p.view = 0;
    PrePrepare {
        view: pp.view,
        digest: crypto::digest(&p),
        proposal: Arc::new(p),
    }
}
