//! Announcing new lives (issue 8, finding 2; the red team's veto): at every view change this
//! replica sends its view-change to the new primary, and to each backup a newer incarnation:
//! the same view-change of a newer life, or (every other view) a recovery query announcing one.
//! A backup that learned the newer life would refuse the primary's new-view, which holds the
//! older view-change. Correct replicas learn incarnations only from queries, and at most one
//! new one per sender per stable checkpoint, so the vetoes run out.
use pbft::{Message, RecoveryQuery, View, ViewChange};

/// What goes to `to` instead of `m`, with `primary` the primary of a view.
pub fn rewrite(m: Message, to: u32, primary: impl Fn(View) -> u32) -> Message {
    match m {
        Message::ViewChange(vc) if to != primary(vc.new_view) => {
            let incarnation = vc.incarnation + vc.new_view;
            if vc.new_view % 2 == 0 {
                Message::ViewChange(ViewChange { incarnation, ..vc })
            } else {
                Message::RecoveryQuery(RecoveryQuery {
                    nonce: vc.new_view,
                    incarnation,
                })
            }
        }
        m => m,
    }
}
