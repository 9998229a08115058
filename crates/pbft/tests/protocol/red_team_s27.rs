//! Red team s27 on 06ada8d1/94112868/e4d0fd79: a pass's blocks are applied after its sends and
//! records, so a crash can leave a stable-checkpoint record durable with the ledger behind it
//! (pbft's contract, item 4: "restarted ... the replica finds its ledger behind its own stable
//! checkpoint and fetches up to it").
//!
//! F1: in the same pass, the pre-prepares that follow the checkpoint are persisted too (that is
//! the point of 06ada8d1: the primary proposes `s + 1` on executing `s`, before `s` is
//! applied; a backup accepts it before it applies `s`). Restarted from that image,
//! `Replica::new` restores only the slots above the stable checkpoint `s` and then
//! `abandon_unchained_slots` compares the first of them (`s + 1`, whose `prev` is the digest of
//! `s`) with the ledger's head `s - 1`: it is marked abandoned, and so is every slot after it.
//! The state transfer up to `s` that item 4 promises does not undo it (`on_state_transferred`
//! only ever abandons more). So the restarted replica never prepares, commits or executes
//! `s + 1`.. in this view, and a restarted primary refuses to propose ("our own proposals were
//! abandoned ... wait for the view change"): until a view change, or until a state transfer
//! past them from peers that committed them without it. The same image with block `s` applied
//! (the order before 06ada8d1) executes `s + 1` at once.
use crate::common;

use common::*;
use pbft::*;

/// Replica `id` restarted from its records (`PrePrepare` 4 and 5, checkpoint 4 stable by the
/// other three) with its ledger's head at `head` (3: the crash came between the records and
/// the apply of block 4; 4: after it).
fn restarted(id: ReplicaId, pps: &[PrePrepare], head: u64) -> Replica {
    let records = vec![
        Durable::PrePrepare(pps[3].clone()),
        Durable::PrePrepare(pps[4].clone()),
    ];
    restarted_with(id, pps, head, records)
}

/// The other replicas' prepares and commits for sequence number 5: what `id` executes with.
fn votes_for_5(r: &mut Replica, id: ReplicaId, pps: &[PrePrepare]) -> Vec<Action> {
    let v = vote(0, 5, pps[4].digest);
    let mut actions = Vec::new();
    for from in (1..4).filter(|f| *f != id) {
        let mut out = Vec::new();
        let _ = r.step(msg(from, Message::Prepare(v)), &mut out);
        actions.extend(out);
    }
    for from in (0..4).filter(|f| *f != id) {
        let mut out = Vec::new();
        let _ = r.step(msg(from, Message::Commit(v)), &mut out);
        actions.extend(out);
    }
    actions
}

fn executes_5(actions: &[Action]) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Execute(c) if c.proposal.seq == 5))
}

/// Control: the same records with block 4 applied (a crash after the apply, or the order
/// before 06ada8d1): the backup executes 5 with the others' votes.
#[test]
fn control_a_backup_restarted_with_block_4_applied_executes_5() {
    let pps = chain(5);
    let mut r = restarted(3, &pps, 4);
    assert!(executes_5(&votes_for_5(&mut r, 3, &pps)));
}

#[test]
fn a_backup_restarted_behind_its_own_stable_checkpoint_executes_what_follows_it() {
    let pps = chain(5);
    let mut r = restarted(3, &pps, 3);
    fetch_block_4(&mut r, &pps);
    assert_eq!(r.last_executed().0, 4);
    let actions = votes_for_5(&mut r, 3, &pps);
    assert!(
        executes_5(&actions),
        "block 5 (accepted and prepared before the crash, prev = block 4) is never executed: \
         {actions:?}"
    );
}

#[test]
fn a_primary_restarted_behind_its_own_stable_checkpoint_goes_on_proposing() {
    let pps = chain(5);
    let mut r = restarted(0, &pps, 3);
    fetch_block_4(&mut r, &pps);
    let executed = executes_5(&votes_for_5(&mut r, 0, &pps));
    step(&mut r, Input::Request(request(6)));
    let actions = step(&mut r, Input::Cut);
    let proposed: Vec<SeqNo> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast(Message::PrePrepare(pp)) => Some(pp.proposal.seq),
            _ => None,
        })
        .collect();
    assert!(
        executed && proposed == vec![6],
        "executed 5: {executed}, proposed {proposed:?} (want 5 executed and 6 proposed)"
    );
}

/// Control for the primary: with block 4 applied it executes 5 and proposes 6.
#[test]
fn control_a_primary_restarted_with_block_4_applied_goes_on_proposing() {
    let pps = chain(5);
    let mut r = restarted(0, &pps, 4);
    assert!(executes_5(&votes_for_5(&mut r, 0, &pps)));
    step(&mut r, Input::Request(request(6)));
    let actions = step(&mut r, Input::Cut);
    assert!(
        actions.iter().any(
            |a| matches!(a, Action::Broadcast(Message::PrePrepare(pp)) if pp.proposal.seq == 6)
        )
    );
}
