//! Red team s22 (of 322665f4: a replica changing views retransmits its view-change even while
//! state transfer moves it). Held: that is no storm: it retransmits exactly as often as a
//! replica changing views that is stalled did before (one broadcast per `retransmit_ticks`,
//! and one per view it enters), whatever state transfer brings, even one transfer a tick.
use crate::common;

use common::*;
use pbft::*;

/// Replica 3 changing to view 1 (by the f+1 rule), no new-view ever coming; `transfer_every`:
/// a state transfer each that many ticks (0: none). Returns its view-change broadcasts in
/// `ticks` ticks and the view it ends in.
fn run(ticks: u64, transfer_every: u64) -> (usize, View) {
    let mut b = Replica::new(retransmitting_config(3), Restored::genesis(GENESIS, 0, 0));
    let mut sent = 0;
    for from in [0, 2] {
        sent += view_changes_broadcast(&step(
            &mut b,
            msg(from, Message::ViewChange(view_change(1, vec![]))),
        ))
        .len();
    }
    assert!(b.in_view_change() && b.view() == 1);
    let mut seq = 0;
    for k in 1..=ticks {
        if transfer_every > 0 && k % transfer_every == 0 {
            seq += 1;
            step(&mut b, transferred_to(seq));
        }
        sent += view_changes_broadcast(&step(&mut b, Input::Tick { now_ms: 0 })).len();
    }
    assert_eq!(
        b.last_executed().0,
        seq,
        "each transfer was taken (progress)"
    );
    (sent, b.view())
}

#[test]
fn red_team_s22_view_change_retransmission_under_state_transfer_is_paced_as_when_stalled() {
    let ticks = 2_000;
    let (stalled, stalled_view) = run(ticks, 0);
    for every in [1, 7, 49, 50, 51] {
        let (moving, view) = run(ticks, every);
        eprintln!(
            "state transfer every {every} ticks: {moving} view-changes in {ticks} ticks \
             (stalled: {stalled}), view {view} ({stalled_view})"
        );
        assert!(
            moving <= stalled,
            "{moving} view-change broadcasts with a transfer every {every} ticks, {stalled} stalled"
        );
        assert!(moving as u64 <= ticks / 50 + view + 1);
    }
}
