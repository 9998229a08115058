//! Red team (red7) against `Action::ReadExecuted` / `Input::Executed` (commit 44950a94).
//! K = 4, L = 8 (`common::config`), n = 4, f = 1. A replica restored at head 18 with no
//! digest kept for the checkpoints 4..16 below it.
use crate::common;

use common::*;
use pbft::*;

/// One dishonest replica (f = 1) alone, vouching for every checkpoint at or below the head,
/// with any digest, as often as it likes: no read. An honest replica's vouch for another
/// digest does not pair with it either. Two matching vouches (one honest) ask once per seq;
/// the answer is vouched for as the node read it (its own chain), once; an unasked or repeated
/// answer is refused.
#[test]
fn red_team_one_dishonest_replica_alone_triggers_no_read_and_reads_are_once_per_seq() {
    let mut r = restored_at(18, None);
    let mut actions = Vec::new();
    for round in 0..3u8 {
        for seq in [4, 8, 12, 16, 20, 24] {
            let _ = r.step(checkpoint(3, seq, [0xE0 + round; 32]), &mut actions);
        }
    }
    assert_eq!(
        reads(&actions),
        Vec::<SeqNo>::new(),
        "f vouches alone asked a read"
    );
    // The dishonest one's first vouch at 12 is [0xE0; 32] (later ones conflict and are
    // refused). An honest vouch for the true digest does not pair with it.
    actions.clear();
    let _ = r.step(checkpoint(1, 12, [12; 32]), &mut actions);
    assert!(reads(&actions).is_empty());
    // A second honest vouch: f+1 match, one read.
    actions.clear();
    let _ = r.step(checkpoint(2, 12, [12; 32]), &mut actions);
    assert_eq!(reads(&actions), vec![12]);
    // Replays and the dishonest one's copy of the honest digest ask nothing more.
    actions.clear();
    let _ = r.step(checkpoint(2, 12, [12; 32]), &mut actions);
    let _ = r.step(checkpoint(3, 12, [12; 32]), &mut actions);
    assert!(reads(&actions).is_empty());
    // Unasked answers (16 was never vouched for by f+1, 4 neither) are refused.
    let mut none = Vec::new();
    assert!(
        r.step(
            Input::Executed {
                seq: 16,
                digest: [16; 32]
            },
            &mut none
        )
        .is_err()
    );
    assert!(none.is_empty());
    // The node's chain differs from the vouched digest: the replica vouches for its own.
    let mut answered = Vec::new();
    r.step(
        Input::Executed {
            seq: 12,
            digest: [0x12; 32],
        },
        &mut answered,
    )
    .expect("asked");
    assert_eq!(
        vouches(&answered),
        vec![Checkpoint {
            seq: 12,
            digest: [0x12; 32]
        }]
    );
    // Answered once only.
    let mut again = Vec::new();
    assert!(
        r.step(
            Input::Executed {
                seq: 12,
                digest: [12; 32]
            },
            &mut again
        )
        .is_err()
    );
    // Its own vouch looped back, then a third vouch for the other digest: 2f+1 for [12; 32]
    // are not there (its own differs), so 12 does not become stable; an alarm instead.
    let mut after = Vec::new();
    let _ = r.step(checkpoint(0, 12, [0x12; 32]), &mut after);
    let _ = r.step(checkpoint(3, 12, [12; 32]), &mut after);
    assert_eq!(r.stable_checkpoint().0, 0);
}

/// The vouches for 16 arrive while this replica is at 14; it then moves to 18 by state
/// transfer, which keeps no digest at 16. It asks for its own block there at once (it used to
/// wait for a re-send, which was refused as a duplicate before the read was considered), and
/// with its answer 16 becomes stable.
#[test]
fn vouches_that_came_before_a_state_transfer_past_their_checkpoint_are_read_after_it() {
    let mut r = restored_at(14, Some(12));
    let mut actions = Vec::new();
    for from in [1, 2] {
        let _ = r.step(checkpoint(from, 16, [16; 32]), &mut actions);
        let _ = r.step(checkpoint(from, 18, [18; 32]), &mut actions);
    }
    assert!(
        reads(&actions).is_empty(),
        "above the head: nothing to read yet"
    );
    actions.clear();
    r.step(
        Input::StateTransferred {
            seq: 18,
            digest: [18; 32],
            time_ms: 18,
            request_ids: Vec::new(),
        },
        &mut actions,
    )
    .expect("transferred");
    assert_eq!(reads(&actions), vec![16]);
    let mut answered = Vec::new();
    r.step(
        Input::Executed {
            seq: 16,
            digest: [16; 32],
        },
        &mut answered,
    )
    .expect("asked");
    assert_eq!(
        vouches(&answered),
        vec![Checkpoint {
            seq: 16,
            digest: [16; 32]
        }]
    );
    let _ = r.step(checkpoint(0, 16, [16; 32]), &mut answered);
    assert_eq!(r.stable_checkpoint().0, 16);
}
