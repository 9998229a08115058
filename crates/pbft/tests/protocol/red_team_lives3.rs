//! Red team, round 11, against the newest lives (commits 1f628b0 and c2ee1b7): a recovering
//! replica takes every newer life it is shown with no per-checkpoint limit, every newly learned
//! life is relayed to all, every replica relays all it knows at each view change, and a
//! replica that takes part takes at most one new life per sender per advance of its stable
//! checkpoint, recorded with the life (crate docs, "Recovering from lost state" and the
//! paragraphs after it; docs/SECURITY.md, "Delay about one view change per checkpoint
//! interval"). Two breaks: a flood of lives at a recovering replica (fixed: kept in memory,
//! persisted and relayed once as it leaves recovery), and lives split between two groups,
//! which cost up to one rotation of primaries per checkpoint interval (now the documented
//! bound, which the test checks).
use crate::common;

use std::collections::BTreeMap;

use common::*;
use pbft::*;

/// The `Durable::Incarnation` records of `of` in `records`.
fn lives_of(records: &[Durable], of: ReplicaId) -> usize {
    records
        .iter()
        .filter(|d| matches!(life_in(d), Some((r, _)) if r == of))
        .count()
}

/// The split vetoer. Within one checkpoint interval the Byzantine replica announces two of
/// its lives at once: life 2 to the correct replicas in `newest`, life 1 to the others, each
/// directly (a recovery query), so each hears its own first. Each takes the first (its one new
/// life of the vetoer for this checkpoint) and relays it; the relays then arrive where the
/// allowance is spent and are refused (`IncarnationRaisedTooSoon`), and so are the relays at
/// every view change. What correct replicas know stays split until the stable checkpoint
/// advances, which it cannot while every new-view is refused.
///
/// Then the attack of round 9 on every view whose primary knows life 1: the vetoer sends that
/// primary its view-change of life 1 and the network delays the view-changes of the `newest`
/// replicas to it (they are not needed for 2f+1), so the new-view holds the life-1
/// view-change and every replica that knows life 2 refuses it (`OlderIncarnation`). The first
/// new-view of the view 0 primary's pre-prepares are lost (the backups time out). With
/// `crashed`, that correct replica is down from the start. Returns the views whose new-view a
/// correct primary sent before the one in which the request committed, that view, and the
/// ticks it took. With `retransmit_ticks`, the replicas retransmit (and relay all their lives
/// while changing views) at that interval instead of the test configuration's 1,000 ticks.
fn split_veto(
    n: u32,
    byzantine: ReplicaId,
    crashed: Option<ReplicaId>,
    newest: &[ReplicaId],
    retransmit_ticks: Option<u64>,
) -> (Vec<View>, View, u64) {
    let mut c = Cluster::new(n);
    if let Some(ticks) = retransmit_ticks {
        for id in 0..n {
            let mut config = config(id, n);
            config.retransmit_ticks = ticks;
            c.replicas[id as usize] = Replica::new(config, Restored::genesis(GENESIS, 0, 0));
        }
    }
    commit_block(&mut c, 1);
    if let Some(down) = crashed {
        c.up[down as usize] = false;
    }
    let correct: Vec<ReplicaId> = (0..n)
        .filter(|id| *id != byzantine && Some(*id) != crashed)
        .collect();
    let known: BTreeMap<ReplicaId, u64> = correct
        .iter()
        .map(|id| (*id, if newest.contains(id) { 2 } else { 1 }))
        .collect();
    // The announcements, each delivered before any relay (one step each, then the queue).
    for (id, incarnation) in &known {
        let query = RecoveryQuery {
            nonce: *incarnation,
            incarnation: *incarnation,
        };
        c.input(*id, msg(byzantine, Message::RecoveryQuery(query)));
    }
    c.run();
    for (id, incarnation) in &known {
        assert!(
            knows(&c, *id, byzantine, *incarnation) && !knows(&c, *id, byzantine, 3 - incarnation),
            "{id} knows life {incarnation} of the vetoer only (relays refused as too soon)"
        );
    }
    let newest_set = newest.to_vec();
    let known_by = known.clone();
    c.filter = Box::new(move |from, to, m| {
        let primary_of = |view: View| (view % u64::from(n)) as ReplicaId;
        match m {
            // The network: the first primary's proposals are lost, so the backups time out.
            Message::PrePrepare(pp) if from == 0 && pp.view == 0 => None,
            Message::ViewChange(vc) if from == byzantine => {
                let primary = primary_of(vc.new_view);
                let incarnation = known_by.get(&to).copied()?;
                (to == primary).then_some(Message::ViewChange(ViewChange { incarnation, ..vc }))
            }
            // The vetoer takes no other part (it never votes, never leads).
            _ if from == byzantine => None,
            // The network delays the view-changes of the replicas that know life 2 to a
            // primary that knows life 1 (2f+1 arrive without them).
            Message::ViewChange(vc)
                if to == primary_of(vc.new_view)
                    && newest_set.contains(&from)
                    && !newest_set.contains(&to) =>
            {
                None
            }
            m => Some(m),
        }
    });
    for id in &correct {
        c.input(*id, Input::Request(request(2)));
    }
    c.run();
    for _ in 0..400_000 {
        c.tick_all(1);
        if correct
            .iter()
            .all(|id| c.executed_ids(*id).contains(&[2; 32]))
        {
            break;
        }
        if c.replicas[correct[0] as usize].view() > 16 {
            break;
        }
    }
    for id in &correct {
        assert!(
            c.executed_ids(*id).contains(&[2; 32]),
            "replica {id} never committed the request (view {})",
            c.replicas[*id as usize].view()
        );
    }
    let view = c.replicas[correct[0] as usize].view();
    let refused = new_views_before(&c, &correct, view);
    // Still split at the end of the interval: the relays at every view change were refused.
    for (id, incarnation) in &known {
        assert!(!knows(&c, *id, byzantine, 3 - incarnation) || *incarnation == 2);
    }
    (refused, view, c.now)
}

/// Was a BREAK of the bound documented then, now the documented bound (crate docs, "Why
/// announcing new lives cannot halt the cluster": at most one rotation of primaries per
/// checkpoint interval, and the test checks it). Found as: (finding 2, liveness; the
/// documented bound "the faulty replica gets at most about one veto per checkpoint interval", crate docs "Why announcing new lives cannot halt the
/// cluster", and docs/SECURITY.md "correct validators know the same lives"). No restart, no
/// recovery, no crash at n = 4; one Byzantine validator and the scheduler only.
///
/// The per-checkpoint allowance that bounds the vetoer is also what keeps correct replicas
/// from converging: the vetoer announces life 1 to some and life 2 to others *at once*; each
/// takes the one it hears first, and the relay of the other arrives where the allowance is
/// spent, so it is refused, at once and again at every view change. Then every view whose
/// primary knows life 1 is vetoed by the replicas that know life 2, until a primary that
/// knows life 2 comes up in the rotation (the vetoer picks the split so that it comes last).
/// n = 4 (vetoer 3, replica 0 alone knows life 2): the new-views of views 1 and 2 are
/// refused, view 3 is the vetoer's, the request commits in view 4 (timeout 2^3 times the
/// base). n = 7 (vetoer 6, replicas 0 and 5 know life 2): views 1 to 4 refused, commit in view
/// 5. n = 7 with correct replica 5 crashed (within f = 2) and 0 alone knowing life 2: views 1
/// to 4 refused, 5 and 6 dead, commit in view 7 (2^6 times the base). The baseline (round 9's
/// vetoer) gets at most one. The vetoer does it again in every checkpoint interval that sees
/// a view change.
#[test]
fn red_team_held_split_lives_cost_at_most_one_rotation_of_primaries() {
    let mut too_many = Vec::new();
    for (n, byzantine, crashed, newest, retransmit) in [
        (4, 3, None, vec![0], None),
        (7, 6, None, vec![0, 5], None),
        (7, 6, Some(5), vec![0], None),
        // The node's timing: relays every quarter timeout change nothing (all refused).
        (4, 3, None, vec![0], Some(5)),
        (7, 6, None, vec![0, 5], Some(5)),
    ] {
        let (refused, view, ticks) = split_veto(n, byzantine, crashed, &newest, retransmit);
        eprintln!(
            "n = {n}, crashed {crashed:?}, retransmit {retransmit:?}: refused {refused:?}, \
             commit in view {view} at tick {ticks}"
        );
        if view > u64::from(n) {
            too_many.push(format!(
                "n = {n} (crashed {crashed:?}, retransmit {retransmit:?}): refused new-views of views {refused:?} before \
                 the commit in view {view} (tick {ticks}, base timeout 20)"
            ));
        }
    }
    assert!(too_many.is_empty(), "{too_many:?}");
}

/// HELD, the control for the break above: the same schedule with every correct replica told
/// life 1 (no split) is not vetoed at all (the vetoer's view-change is of the life everyone
/// knows), at n = 4 and n = 7.
#[test]
fn red_team_held_unsplit_lives_do_not_veto() {
    for (n, byzantine) in [(4, 3), (7, 6)] {
        let (refused, view, _) = split_veto(n, byzantine, None, &[], None);
        assert!(
            refused.is_empty() && view == 1,
            "n = {n}: {refused:?}, view {view}"
        );
    }
}

/// Was a BREAK, now held (a recovering replica keeps the newest life per sender in memory and
/// persists and relays them once, as it leaves recovery). Found as: (finding 2 and 5, resources; docs/SECURITY.md: "The same limit bounds what its queries
/// add to node.db: one `Incarnation` record per sender per checkpoint"; issue 8: "Bound every
/// input and every queue, per peer"). n = 7, f = 2: correct replica 5 lost its stores and is
/// recovering (it counts towards f with the Byzantine 6). A recovering replica takes *every*
/// newer life it is shown, with no limit, persists each (`Durable::Incarnation`, an fsync at
/// the node) and relays each to every replica (`Message::Lives`, signed, to n - 1 peers, each
/// of which checks two signatures). The Byzantine replica signs its own lives at will: 1,000
/// `Lives` messages of one life each cost the recovering replica 1,000 durable records and
/// 1,000 broadcasts. The cluster is idle, so the recovering replica stays recovering (it
/// needs the others to commit L past its head), and nothing compacts its records (the node
/// compacts at stable checkpoints): the flood has no end while the chain is idle.
#[test]
fn red_team_held_recovering_replica_does_not_persist_or_relay_every_flooded_life() {
    let mut c = Cluster::new(7);
    commit_block(&mut c, 1);
    lose_state(&mut c, 5, 1);
    c.tick_all(1); // its query is answered by all
    assert!(c.replicas[5].is_recovering(), "recovering: idle chain");
    let sent_before = c.sent[5].len();
    let records_before = c.durable[5].len();
    let flood = 1_000u64;
    for incarnation in 1..=flood {
        c.input(5, msg(6, Message::Lives(vec![life(6, incarnation)])));
        c.run();
    }
    c.tick_all(3 * c.replicas[0].config().retransmit_ticks);
    assert!(
        c.replicas[5].is_recovering(),
        "still recovering on an idle chain"
    );
    let records = c.durable[5].len() - records_before;
    let relays = c.sent[5][sent_before..]
        .iter()
        .filter(|m| matches!(m, Message::Lives(_)))
        .count();
    eprintln!(
        "{flood} Lives messages from 6: 5 persisted {records} records and broadcast {relays} Lives"
    );
    let of_6 = lives_of(&c.durable[5], 6);
    assert!(
        of_6 <= 2 && relays <= 2,
        "a recovering replica took {of_6} lives of the Byzantine replica (persisted {records} \
         records) and broadcast {relays} Lives messages to 6 peers, for {flood} messages"
    );
}

/// HELD (finding 2, resources and liveness): after a recovery from nothing (during which its
/// low was 0, and every life it learned was recorded at 0), the recovered replica's allowance
/// is one new life of the flooder, not more, until its stable checkpoint advances; a restart
/// from its compacted records does not renew it (the `at` kept by `Durable::compact` is the
/// checkpoint it took it at).
#[test]
fn red_team_held_recovered_replica_takes_one_life_per_checkpoint_after_recovery() {
    let mut c = Cluster::new(4);
    commit_block(&mut c, 1);
    lose_state(&mut c, 2, 1);
    // While it recovers, the flooder shows it lives 1 to 5 (taken, newest wins).
    c.tick_all(1);
    for incarnation in 1..=5 {
        c.input(2, msg(3, Message::Lives(vec![life(3, incarnation)])));
    }
    c.run();
    recover(&mut c, 2, 10);
    assert!(
        knows(&c, 2, 3, 5),
        "persisted as it left recovery: the newest it was shown"
    );
    let low = c.replicas[2].stable_checkpoint().0;
    assert!(low > 0);
    // After recovery: one more (6) is free, 7 and later are refused until the checkpoint moves.
    for incarnation in 6..=20 {
        c.input(2, msg(3, Message::Lives(vec![life(3, incarnation)])));
        c.run();
    }
    assert_eq!(
        c.replicas[2].stable_checkpoint().0,
        low,
        "no commit meanwhile"
    );
    assert!(knows(&c, 2, 3, 6) && !knows(&c, 2, 3, 7));
    // A restart from compacted records keeps the allowance spent.
    let mut records = c.durable[2].clone();
    Durable::compact(&mut records);
    assert_eq!(lives_of(&records, 3), 1);
    let head = c.replicas[2].last_executed();
    c.replicas[2] = Replica::new(
        config(2, 4),
        Restored {
            last_executed: head,
            executed_checkpoint: None,
            head_time_ms: c.head_time_ms(2),
            now_ms: c.clocks_ms[2],
            durable: records.clone(),
            recovering: false,
            nonce: 7,
            incarnation: 2,
        },
    );
    c.durable[2] = records;
    assert!(!c.replicas[2].is_recovering());
    c.input(2, msg(3, Message::Lives(vec![life(3, 21)])));
    c.run();
    assert!(
        !knows(&c, 2, 3, 21),
        "a restart from compacted records renewed the allowance"
    );
}
