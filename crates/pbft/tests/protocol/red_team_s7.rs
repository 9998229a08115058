//! Red team (s7) against the read after a state transfer (commit cc905664,
//! `Replica::on_state_transferred` and `read_executed_if_vouched` in checkpoint.rs).
//! K = 4, L = 8 (`common::config`), n = 4, f = 1; replica 3 is the dishonest one.
use crate::common;

use common::*;
use pbft::*;

fn transferred(seq: SeqNo) -> Input {
    Input::StateTransferred {
        seq,
        digest: [seq as u8; 32],
        time_ms: seq,
        request_ids: Vec::new(),
    }
}

/// Loops every own checkpoint broadcast back (as the node does), collecting what follows.
fn loop_back(r: &mut Replica, actions: &[Action]) -> Vec<Action> {
    let mut out = Vec::new();
    for c in vouches(actions) {
        let _ = r.step(checkpoint(0, c.seq, c.digest), &mut out);
    }
    out
}

/// A replica far behind (head 2, window up to 10) moves by state transfer to 12, beyond its
/// window: `on_state_transferred` keeps no digest of its own head there (only `seq <= high`),
/// yet broadcasts its checkpoint, which loops back into its own table.
/// `read_executed_if_vouched` counts that own entry among "f+1 others": one dishonest vouch
/// at 12 then asks the node for a read (and the answer makes it broadcast its vouch again).
#[test]
fn red_team_s7_one_dishonest_vouch_plus_own_head_triggers_no_read() {
    let mut r = restored_at(2, None);
    let moved = step(&mut r, transferred(12));
    assert_eq!(
        vouches(&moved),
        vec![Checkpoint {
            seq: 12,
            digest: [12; 32]
        }],
        "vouches for its transferred head"
    );
    let mut actions = loop_back(&mut r, &moved);
    assert!(reads(&actions).is_empty(), "own vouch alone reads nothing");
    let _ = r.step(checkpoint(3, 12, [12; 32]), &mut actions);
    assert_eq!(
        reads(&actions),
        Vec::<SeqNo>::new(),
        "one dishonest vouch (with the replica's own looped-back one) asked a read"
    );
}

/// The same dishonest vouch cannot make anything stable (2f+1 are needed), and a head within
/// the window asks nothing: the read above is a wasted round trip and a duplicate broadcast,
/// not a safety break.
#[test]
fn red_team_s7_dishonest_vouch_at_transferred_head_makes_nothing_stable() {
    let mut r = restored_at(2, None);
    let moved = step(&mut r, transferred(12));
    let mut actions = loop_back(&mut r, &moved);
    let _ = r.step(checkpoint(3, 12, [12; 32]), &mut actions);
    for seq in reads(&actions) {
        let mut answered = Vec::new();
        let _ = r.step(
            Input::Executed {
                seq,
                digest: [seq as u8; 32],
            },
            &mut answered,
        );
        let _ = loop_back(&mut r, &answered);
    }
    assert_eq!(r.stable_checkpoint().0, 0, "own + one dishonest < 2f+1");

    // Within the window (head 8 <= high 10): its digest is kept, no read at all.
    let mut r = restored_at(2, None);
    let moved = step(&mut r, transferred(8));
    let mut actions = loop_back(&mut r, &moved);
    let _ = r.step(checkpoint(3, 8, [8; 32]), &mut actions);
    let _ = r.step(checkpoint(1, 8, [8; 32]), &mut actions);
    assert!(reads(&actions).is_empty(), "kept digest: nothing to read");
    assert_eq!(r.stable_checkpoint().0, 8, "own + 2 others");
}

/// A dishonest replica vouching for every checkpoint below the head (any digest) before the
/// transfer, then again after it, and across a second transfer: no read. Two vouches (one
/// honest) that arrived before the transfer ask once per seq, never again on a second
/// transfer, a replay, or the dishonest one's copy.
#[test]
fn red_team_s7_reads_after_transfers_need_f_plus_1_others_and_happen_once() {
    let mut r = restored_at(2, None);
    let mut actions = Vec::new();
    for seq in [4, 8, 12, 16, 20] {
        let _ = r.step(checkpoint(3, seq, [seq as u8; 32]), &mut actions);
    }
    let _ = r.step(transferred(9), &mut actions);
    for seq in [4, 8] {
        let _ = r.step(checkpoint(3, seq, [seq as u8; 32]), &mut actions);
    }
    assert!(reads(&actions).is_empty(), "f vouches alone asked a read");

    // One honest vouch at 12 and 16 (while below them): with the dishonest one, f+1.
    for seq in [12, 16] {
        let _ = r.step(checkpoint(1, seq, [seq as u8; 32]), &mut actions);
    }
    assert!(
        reads(&actions).is_empty(),
        "above the head: nothing to read"
    );
    actions.clear();
    let _ = r.step(transferred(17), &mut actions);
    assert_eq!(reads(&actions), vec![12, 16]);
    actions.clear();
    let _ = r.step(transferred(19), &mut actions);
    for seq in [12, 16] {
        let _ = r.step(checkpoint(1, seq, [seq as u8; 32]), &mut actions);
        let _ = r.step(checkpoint(3, seq, [seq as u8; 32]), &mut actions);
    }
    assert!(reads(&actions).is_empty(), "asked twice: {actions:?}");
}

/// Vouches for 4, 8 and 12 (f+1 each, 2f+1 at 12) came while the replica was at 2; a
/// transfer to 13 makes 12 stable. Reads at or below the new stable checkpoint may still be
/// asked in that same step (candidates are handled in ascending order), but their answers are
/// refused and nothing is vouched at or below it; the memory of what was asked is pruned.
#[test]
fn red_team_s7_no_vouch_at_or_below_the_stable_checkpoint_after_a_transfer() {
    let mut r = restored_at(2, None);
    let mut actions = Vec::new();
    for seq in [4, 8, 12] {
        for from in [1, 3] {
            let _ = r.step(checkpoint(from, seq, [seq as u8; 32]), &mut actions);
        }
    }
    let _ = r.step(checkpoint(2, 12, [12; 32]), &mut actions);
    actions.clear();
    let _ = r.step(transferred(13), &mut actions);
    assert_eq!(r.stable_checkpoint().0, 12, "2f+1 others vouch for 12");
    let asked = reads(&actions);
    assert!(asked.len() <= 3, "{asked:?}");
    for seq in asked {
        let mut answered = Vec::new();
        assert!(
            r.step(
                Input::Executed {
                    seq,
                    digest: [seq as u8; 32]
                },
                &mut answered
            )
            .is_err(),
            "answer at {seq} <= stable 12 accepted"
        );
        assert!(vouches(&answered).is_empty());
    }
    // Vouches below the stable checkpoint ask nothing.
    let mut late = Vec::new();
    for from in [1, 2, 3] {
        let _ = r.step(checkpoint(from, 8, [8; 32]), &mut late);
    }
    assert!(reads(&late).is_empty());
}

/// The checkpoint tables and the reads stay bounded: a dishonest replica sending vouches at
/// thousands of sequence numbers, with transfers in between, keeps at most a window's worth
/// of its messages, and asks nothing.
#[test]
fn red_team_s7_flooding_vouches_across_transfers_stays_bounded() {
    let mut r = restored_at(2, None);
    let mut actions = Vec::new();
    let mut head = 2;
    for round in 0..50u64 {
        for k in 1..=100u64 {
            let _ = r.step(
                checkpoint(3, 4 * (round * 100 + k), [k as u8; 32]),
                &mut actions,
            );
        }
        head += 3;
        let _ = r.step(transferred(head), &mut actions);
        actions.retain(|a| matches!(a, Action::ReadExecuted { .. }));
    }
    assert!(reads(&actions).is_empty(), "{:?}", reads(&actions));
    let stats = r.log_stats();
    assert!(
        stats.checkpoint_messages <= 8 / 4 + 2 + 2,
        "checkpoint messages kept: {}",
        stats.checkpoint_messages
    );
}
