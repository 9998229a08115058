//! Red team s42 on 20e0eee4 + fee6015d + 523b6b1f (a view-change timer is pushed while every
//! request waited on sits in a slot above the head and at or below a vouched fetch target;
//! `restored_in_log`; a state transfer clears the log's ids at or below the new head).
mod common;

use std::cell::Cell;
use std::rc::Rc;

use common::*;
use pbft::*;

/// The censored request: every correct backup holds it from the start.
fn censored() -> Request {
    request(200)
}

/// n = 4, T = 200 ticks, retransmit 50, K = 4. Replica 0 (view 0's primary) is Byzantine: it
/// never proposes the censored request (the backups' forwards of it are dropped: a faulty
/// primary ignores them) and, if `plant`, in each round of four blocks it sends ONE correct
/// backup `b` (1, 2, 3 in turn) a pre-prepare of its own at `b`'s head + 1 that holds the
/// censored request instead of the block the others commit there (the other pre-prepares of
/// the round are not sent to `b`). The other two correct backups and the primary commit the
/// four blocks (a quorum of 3); checkpoint h + 4 becomes stable, `b` sees it and fetches it
/// (its state transfer is served as soon as it asks). The clients' requests of the blocks go
/// to the primary alone. Returns the cluster after `rounds` rounds.
fn rotating_plant(plant: bool, rounds: usize) -> Cluster {
    let mut c = Cluster::configured(4, |cfg| {
        cfg.view_change_timeout_ticks = 200;
        cfg.retransmit_ticks = 50;
    });
    // (backup kept behind this round, sequence number of its planted slot); 0 = none.
    let target: Rc<Cell<(ReplicaId, SeqNo)>> = Rc::new(Cell::new((0, 0)));
    let t = target.clone();
    let r = censored();
    c.filter = Box::new(move |from, to, m| match m {
        // The faulty primary ignores every forward of the censored request.
        Message::Forward(requests) if to == 0 && requests.iter().any(|x| x.id == r.id) => {
            let rest: Vec<Request> = requests.into_iter().filter(|x| x.id != r.id).collect();
            (!rest.is_empty()).then_some(Message::Forward(rest))
        }
        Message::PrePrepare(pp) if from == 0 && to != 0 && to == t.get().0 => {
            let (_, planted) = t.get();
            if pp.proposal.seq == planted {
                Some(Message::PrePrepare(pre_prepare(
                    planted,
                    pp.view,
                    pp.proposal.prev,
                    vec![r.clone()],
                )))
            } else {
                None
            }
        }
        m => Some(m),
    });
    for b in 1..4 {
        c.input(b, Input::Request(censored()));
    }
    c.run();
    let mut filler = 1u8;
    for round in 0..rounds {
        let b = (round % 3) as ReplicaId + 1;
        let head = c.replicas[b as usize].last_executed().0;
        if plant {
            target.set((b, head + 1));
        }
        for _ in 0..4 {
            commit_block(&mut c, filler);
            filler += 1;
        }
        if plant {
            // `b` waits for its state transfer; it asks after a retransmit interval.
            for _ in 0..200 {
                if !c.fetches[b as usize].is_empty() {
                    break;
                }
                c.tick_all(1);
            }
            target.set((0, 0));
            let source = if b == 1 { 2 } else { 1 };
            serve_fetches(&mut c, b, source);
            c.run();
        } else {
            c.tick_all(50);
        }
    }
    c
}

/// F1: a faulty primary censors a request every correct backup holds, for ever, while the
/// chain grows: each round it keeps one correct backup behind with the censored request in a
/// slot of its own making at a sequence number the others vouch they executed. That backup's
/// every waited-on request sits in a vouched slot, so its timer is pushed (a full T again at
/// every tick) until its state transfer; the other two wait less than T before their own turn.
/// No correct replica ever timed out: the push trusted that the slot's request executes with
/// the transfer, but the vouch is for the sequence number, not for the backup's pre-prepare.
/// Fixed: the timer now stands still in such a slot instead of being renewed, so the time
/// each backup waited outside one still counts and they time out (as in the control below).
#[test]
fn f1_a_faulty_primary_censors_for_ever_by_planting_the_request_at_one_backup_per_round() {
    let c = rotating_plant(true, 15);
    let ticks = c.now;
    assert!(
        ticks > 3 * 200,
        "the scenario must run several timeouts: {ticks} ticks"
    );
    let heads: Vec<SeqNo> = (0..4).map(|id| c.replicas[id].last_executed().0).collect();
    let executed = (0..4u32).any(|id| c.executed_ids(id).contains(&censored().id));
    assert!(
        executed || c.views().iter().any(|(v, changing)| *v > 0 || *changing),
        "the censored request never committed and no correct backup timed out in {ticks} \
         ticks (T = 200) while the chain grew to {heads:?}: views {:?}",
        c.views()
    );
}

/// Control: the same primary and rounds, with no backup kept behind: the correct backups time
/// out on the censored request and the view changes.
#[test]
fn control_without_the_plant_the_backups_time_out_on_the_censored_request() {
    let c = rotating_plant(false, 15);
    assert!(
        c.views().iter().skip(1).all(|(v, _)| *v > 0),
        "views {:?}",
        c.views()
    );
}
