//! A Byzantine new primary choosing its view-changes. The core builds its new-view from the
//! first 2f+1 view-changes it holds in sender order; this one lets through, for a view it
//! leads, only its colluders' view-changes and those that carry no prepared certificate, so its
//! O set loses whatever it can (if 2f+1 never come, its view times out like a silent primary's).
use std::collections::BTreeSet;

use pbft::{ReplicaId, ViewChange};

pub fn admits(
    id: ReplicaId,
    n: u32,
    from: ReplicaId,
    vc: &ViewChange,
    colluders: &BTreeSet<ReplicaId>,
) -> bool {
    let leads = vc.new_view % u64::from(n) == u64::from(id);
    !leads || colluders.contains(&from) || vc.prepared.is_empty()
}
