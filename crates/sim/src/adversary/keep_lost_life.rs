//! Keeping a recovered replica's lost life (issue 8, finding 2; the red team's fork): this
//! replica never learns that a peer came back in a new incarnation. Its replica sees each
//! recovery query with the incarnation it first knew of the querier, and no view-change or
//! new-view of a newer one, nor any relayed life (dropped), so it keeps the view-changes the peer sent before it lost
//! its state and, as primary, builds its new-views on them. Correct replicas must refuse those
//! new-views: the old view-change promised that its sender takes no part in lower views, which
//! its new life, not knowing it, may have broken.
use std::collections::BTreeMap;

use pbft::{Message, NewView, RecoveryQuery, ReplicaId, Signed};

/// What its replica may see of `m` (`None`: dropped). `known` holds the first incarnation it
/// saw of each replica.
pub fn admit(known: &mut BTreeMap<ReplicaId, u64>, m: Signed<Message>) -> Option<Signed<Message>> {
    let mut first = |replica, incarnation| *known.entry(replica).or_insert(incarnation);
    let newer = match &m.message {
        Message::RecoveryQuery(q) => {
            let incarnation = first(m.from, q.incarnation);
            let message = Message::RecoveryQuery(RecoveryQuery { incarnation, ..*q });
            return Some(Signed { message, ..m });
        }
        // Relayed lives would teach it what it ignores.
        Message::Lives(_) => true,
        Message::ViewChange(vc) => vc.incarnation > first(m.from, vc.incarnation),
        Message::NewView(nv) => {
            nv.incarnation > first(m.from, nv.incarnation)
                || nv
                    .view_changes
                    .iter()
                    .any(|vc| vc.message.incarnation > first(vc.from, vc.message.incarnation))
        }
        _ => false,
    };
    (!newer).then_some(m)
}

/// Whether `nv` carries a view-change of a life its sender has lost since (`incarnation` gives
/// each replica's current one).
pub fn reuses_lost_life(nv: &NewView, incarnation: impl Fn(ReplicaId) -> u64) -> bool {
    nv.view_changes
        .iter()
        .any(|vc| vc.message.incarnation < incarnation(vc.from))
}
