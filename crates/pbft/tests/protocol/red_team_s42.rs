//! Red team s42 on 20e0eee4 + fee6015d + 523b6b1f (a view-change timer is pushed while every
//! request waited on sits in a slot above the head and at or below a vouched fetch target;
//! `restored_in_log`; a state transfer clears the log's ids at or below the new head).
use crate::common;

use common::*;
use pbft::*;

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
    let rotation = Rotation {
        n: 4,
        correct: 1..4,
        timeout_ticks: 200,
        rounds,
        serve_idle_fetches: false,
    };
    let schedule = |round: usize, _: &Cluster| plant.then_some((round % 3) as ReplicaId + 1);
    rotate_plants(rotation, schedule, plant_one_slot()).0
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
