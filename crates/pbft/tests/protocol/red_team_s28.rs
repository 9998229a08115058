//! Red team s28 on eef432c3 (a replica restarted with its ledger behind its own stable
//! checkpoint chains the slots above it to the checkpoint's certified digest). F1 (a primary
//! restarted so, with no slot above its checkpoint, proposed at or below it) is fixed in
//! `Replica::new`; the observation on O1 is fixed with O1 (`pbft::Durable::Withheld`). The sim
//! reaches these restarts (`checkpoint_crashes` in its plot; it found F1 too).
use crate::common;

use common::*;
use pbft::*;

fn proposals(actions: &[Action]) -> Vec<PrePrepare> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast(Message::PrePrepare(pp)) => Some(pp.clone()),
            _ => None,
        })
        .collect()
}

/// F1 (fixed). The primary crashed between its stable-checkpoint record of 4 and the apply of block 4,
/// before it proposed anything above 4 (no request was pending then; the pass that executed 4
/// also made it stable with the other three's votes). Restarted on a ledger at 3, it sets
/// `next_seq` from its ledger head (`Replica::new`: the last pre-prepare at or above
/// `last_executed`, else `last_executed`), not from its stable checkpoint, so the first request
/// the mempool re-submits is proposed at sequence number 4 — below its own low watermark,
/// chained to block 3: a second, different pre-prepare from this correct primary for (view 0,
/// seq 4), which it already assigned and 2f+1 committed. Every backup refuses it (outside the
/// watermarks, or conflicting), and after the fetch of block 4 the primary keeps chaining its
/// proposals to that refused one (`on_state_transferred` resets `next_seq` only if it is at
/// or below the transferred head): nothing commits until the view changes (red team s27 F1,
/// for the primary without a slot above its checkpoint).
#[test]
fn a_primary_restarted_behind_its_own_stable_checkpoint_never_proposes_at_or_below_it() {
    let pps = chain(4);
    let mut r = restarted_with(0, &pps, 3, vec![Durable::PrePrepare(pps[3].clone())]);
    step(&mut r, Input::Request(request(6)));
    let before_fetch = proposals(&step(&mut r, Input::Cut));
    let mut after_fetch = proposals(&fetch_block_4(&mut r, &pps));
    step(&mut r, Input::Request(request(7)));
    after_fetch.extend(proposals(&step(&mut r, Input::Cut)));
    for t in 0..20 {
        after_fetch.extend(proposals(&step(&mut r, Input::Tick { now_ms: t })));
    }
    let all: Vec<(SeqNo, bool)> = before_fetch
        .iter()
        .chain(&after_fetch)
        .map(|pp| (pp.proposal.seq, pp.proposal.prev == pps[3].digest))
        .collect();
    assert!(
        before_fetch.iter().all(|pp| pp.proposal.seq > 4),
        "the restarted primary proposed at or below its own stable checkpoint 4 \
         (seq, chains to block 4): {all:?}"
    );
    assert!(
        after_fetch
            .first()
            .is_some_and(|pp| pp.proposal.seq == 5 && pp.proposal.prev == pps[3].digest),
        "after the fetch of block 4 the primary's next proposal is not 5 on block 4 \
         (seq, chains to block 4): {all:?}"
    );
}

/// F1, the cluster's view: a backup that executed 4 refuses the restarted primary's second
/// pre-prepare for (0, 4), and its proposal at 5 (chained to that) too.
#[test]
fn a_backup_refuses_what_the_restarted_primary_proposes() {
    let pps = chain(4);
    let mut r = restarted_with(0, &pps, 3, vec![Durable::PrePrepare(pps[3].clone())]);
    step(&mut r, Input::Request(request(6)));
    let first = proposals(&step(&mut r, Input::Cut));
    let mut second = proposals(&fetch_block_4(&mut r, &pps));
    step(&mut r, Input::Request(request(7)));
    second.extend(proposals(&step(&mut r, Input::Cut)));
    // A backup that executed 1..=4 (block 4 committed, checkpoint 4 not stable yet).
    let mut b = replica(1);
    for pp in &pps {
        step(&mut b, msg(0, Message::PrePrepare(pp.clone())));
        let v = vote(0, pp.proposal.seq, pp.digest);
        for from in 1..4 {
            let _ = b.step(msg(from, Message::Prepare(v)), &mut Vec::new());
        }
        for from in 0..4 {
            let _ = b.step(msg(from, Message::Commit(v)), &mut Vec::new());
        }
    }
    assert_eq!(b.last_executed(), (4, pps[3].digest));
    let mut accepted = Vec::new();
    for pp in first.iter().chain(&second) {
        let mut out = Vec::new();
        let result = b.step(msg(0, Message::PrePrepare(pp.clone())), &mut out);
        let prepared = out
            .iter()
            .any(|a| matches!(a, Action::Broadcast(Message::Prepare(_))));
        accepted.push((
            pp.proposal.seq,
            result.map_err(|e| format!("{e:?}")),
            prepared,
        ));
    }
    assert!(
        accepted.iter().any(|(_, _, prepared)| *prepared),
        "the backup prepares none of the restarted primary's proposals: {accepted:?}"
    );
}

fn prepares_for(actions: &[Action], seq: SeqNo) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Broadcast(Message::Prepare(v)) if v.seq == seq))
        .count()
}

/// O1 widened (observation, fixed with O1: its log says it sent that prepare): a backup restarted at once (its clock at the
/// block time of 5) still marks its kept slot 5 withheld, because the time before it (block 4's)
/// is unknown while its ledger is behind (`Replica::new` -> `withholds_prepare`: `time_at(4)` is
/// `None`). It is reconsidered only once the fetch of block 4 lands (after `retransmit_ticks`
/// and the fetch itself); if that comes more than τ after block 5's time, the prepare it sent
/// before the crash (and that the network may have dropped) is never sent again, although the
/// restart itself was immediate. Red team s27 O1 is "restarted more than τ after"; here it is
/// "fetched more than τ after".
#[test]
fn a_backup_restarted_at_once_sends_its_prepare_for_the_slot_above_the_checkpoint_again() {
    let pps = chain(5);
    let mut r = restarted_with(
        3,
        &pps,
        3,
        vec![
            Durable::PrePrepare(pps[3].clone()),
            Durable::PrePrepare(pps[4].clone()),
        ],
    );
    let tau = r.config().block_time_tolerance_ms;
    let mut sent = 0;
    // Retransmissions right after the restart (its clock still at block 5's time).
    for _ in 0..3 {
        sent += prepares_for(&step(&mut r, Input::Tick { now_ms: 5 }), 5);
    }
    // The fetch of block 4 lands later than τ after block 5's time.
    let late = 5 + tau + 1;
    step(&mut r, Input::Clock { now_ms: late });
    sent += prepares_for(&fetch_block_4(&mut r, &pps), 5);
    for _ in 0..2_100 {
        sent += prepares_for(&step(&mut r, Input::Tick { now_ms: late }), 5);
    }
    assert!(
        sent > 0,
        "the backup never sends its prepare for 5 again after an immediate restart"
    );
}
