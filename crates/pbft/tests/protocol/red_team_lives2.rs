//! Red team, round 10, against lives that answers carry, replicas relay and records keep with
//! the checkpoint they were learned at (commit 1f628b0; crate docs, "Recovering from lost
//! state" and the paragraphs after it). Five breaks were found (their tests say how); each
//! holds since a recovering replica takes the newest life it is shown with no per-checkpoint
//! limit, every newly learned life is relayed whatever its source, lives are relayed at each
//! view change, and `step` checks a `Lives` message's shape.
use crate::common;

use std::cell::Cell;
use std::rc::Rc;

use common::*;
use pbft::*;

/// Replica `r`'s own recovery query of `incarnation`, as it signed it (its life).
fn life_sent(c: &Cluster, r: ReplicaId, incarnation: u64) -> Life {
    c.sent[r as usize]
        .iter()
        .find_map(|m| match m {
            Message::RecoveryQuery(q) if q.incarnation == incarnation => Some(signed(r, *q)),
            _ => None,
        })
        .expect("the replica's query of that life")
}

/// How replicas 2, 3 and 4 come back from their own loss of state in `old_life_fork`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Rewind {
    /// Their recovery as the code intends: answers teach them 5's and 6's newest lives.
    Nothing,
    /// Before any answer, 1 (Byzantine) relays 5's and 6's *earlier* lives: real signed
    /// queries it kept. Newer than what the empty records know, so taken; the newest lives in
    /// the correct answers that follow are then refused as `IncarnationRaisedTooSoon` (one
    /// new life per sender per checkpoint, and the checkpoint is still 0).
    RelayOldLives,
    /// No Byzantine relay: the network delays to 0 only what is about 5's and 6's lives 2
    /// (their queries, and lives relayed with them), so 0, correct, knows their lives 1 and
    /// answers the recovering replica first (queue order): its stale lives win the one new
    /// life per checkpoint, and the other answers' lives 2 are refused.
    StaleCorrectAnswer,
}

/// Was a BREAK, now held (finding 2, safety; n = 7, f = 2; one Byzantine validator, 1, primary of view 1; at
/// every moment at most one other validator recovering, so within the fault model).
///
/// The argument "Why that knowledge survives the answerers' own amnesia" says a replica that
/// loses its state learns again, from a correct answerer, the newest life k of every replica
/// before it takes part. But it learns lives through `learn_life`, which takes one new life
/// per sender per advance of its stable checkpoint, and a replica restored from nothing is at
/// checkpoint 0: the *first* life of X it hears wins, and that can be an older life of X
/// that the Byzantine replica kept (every life is a signed query anyone may relay). The
/// correct answers' life k is then ignored, nothing relays it again in normal status, and
/// the replica accepts view-changes of X's life k - 1 for ever.
///
/// 1. 5 loses its stores and recovers (life 1). In life 1 it times out alone into view 1; its
///    view-change (incarnation 1) reaches only 1. It loses its stores again and recovers
///    (life 2); 1 hides that view-change in its answer. The same for 6. (Queries and relayed
///    lives to 0 are delayed until after the attack, as in round 9; 1 ignores new lives.)
/// 2. 2, 3 and 4 each lose their stores in turn; 1 relays 5's and 6's lives 1 to each before
///    the answers arrive. Each recovers knowing lives 1 of 5 and 6, not lives 2.
/// 3. In view 0, 0 proposes d at s; 2, 3, 5, 6 prepare and commit it, 5 executes it.
/// 4. View change to 1: 1's new-view holds the view-changes of 0, 1, 4 and the life-1 ones of
///    5 and 6 (none carries d); 0, 2, 3, 4 accept it and execute e at s: a fork.
#[test]
fn red_team_held_old_lives_relayed_to_a_recovering_answerer_do_not_fork() {
    old_life_fork(Rewind::RelayOldLives);
}

/// Control for the break above: the same schedule without the relayed old lives holds (2, 3
/// and 4 learn lives 2 from the answers and refuse 1's new-view).
/// Was a BREAK, now held: the same fork with no Byzantine relay: the stale lives come from a correct answerer
/// (0) that the network kept from hearing 5's and 6's lives 2, and whose answer is the first
/// the recovering replicas read. 1 still plays the Byzantine primary of view 1 that holds the
/// lost-life view-changes.
#[test]
fn red_team_held_stale_correct_answer_first_does_not_fork() {
    old_life_fork(Rewind::StaleCorrectAnswer);
}

#[test]
fn red_team_held_recovering_answerers_learn_the_newest_lives() {
    old_life_fork(Rewind::Nothing);
}

fn old_life_fork(rewind: Rewind) {
    let n = 7;
    let mut c = Cluster::new(n);
    commit_block(&mut c, 1);
    // Phases: 1 a doomed life's view-change, 2 recoveries, 3 block d, 4 view change.
    let phase = Rc::new(Cell::new(2u8));
    let lost_life = Rc::new(Cell::new(5 as ReplicaId));
    let s_cell = Rc::new(Cell::new(0u64));
    let (p, lost, s_at) = (phase.clone(), lost_life.clone(), s_cell.clone());
    let second_life = |from: ReplicaId, incarnation: u64| from >= 5 && incarnation >= 2;
    c.filter = Box::new(move |from, to, m| {
        let (phase, lost, s) = (p.get(), lost.get(), s_at.get());
        match m {
            Message::RecoveryQuery(q)
                if to == 0
                    && rewind == Rewind::StaleCorrectAnswer
                    && second_life(from, q.incarnation) =>
            {
                None
            }
            Message::Lives(lives)
                if to == 0
                    && rewind == Rewind::StaleCorrectAnswer
                    && lives
                        .iter()
                        .any(|l| second_life(l.from, l.message.incarnation)) =>
            {
                None
            }
            // Otherwise the network delays every recovery query to 0, and the lives relayed
            // to it.
            Message::RecoveryQuery(_) | Message::Lives(_)
                if to == 0 && rewind != Rewind::StaleCorrectAnswer =>
            {
                None
            }
            // 1, Byzantine, keeps the old view-changes: it ignores new lives, and leaves the
            // querier's messages out of its answers.
            Message::Lives(_) if to == 1 => None,
            Message::RecoveryQuery(q) if to == 1 => Some(Message::RecoveryQuery(RecoveryQuery {
                incarnation: 0,
                ..q
            })),
            Message::RecoveryAnswer(mut a) if from == 1 => {
                a.querier_message = None;
                Some(Message::RecoveryAnswer(a))
            }
            // Phase 1: the doomed life's forwards are lost (it times out alone) and its
            // view-change reaches only 1.
            Message::Forward(_) if phase == 1 && from == lost => None,
            Message::ViewChange(_) if phase == 1 && from == lost && to != 1 => None,
            // Phase 3: d reaches neither 1 nor 4 (nor its prepares 0); its commits only 5.
            Message::PrePrepare(pp) if phase >= 3 && pp.view == 0 && pp.proposal.seq == s => {
                (to != 1 && to != 4).then_some(Message::PrePrepare(pp))
            }
            Message::Prepare(v) if phase >= 3 && v.view == 0 && v.seq == s && to <= 1 => None,
            Message::Prepare(v) if phase >= 3 && v.view == 0 && v.seq == s && to == 4 => None,
            Message::Commit(v) if phase >= 3 && v.view == 0 && v.seq == s && to != 5 => None,
            // Phase 4: the backups' forwards to 0 are lost (they time out); 1 hears the
            // view-changes of 0 and 4 only (and holds 5's and 6's old ones).
            Message::Forward(_) if phase == 4 && to == 0 => None,
            Message::ViewChange(_) if phase == 4 && to == 1 && ![0, 4].contains(&from) => None,
            m => Some(m),
        }
    });

    let mut next = 10u8;
    let mut old_view_changes = Vec::new();
    let mut old_lives = Vec::new();
    for r in [5, 6] {
        lose_state(&mut c, r, 1);
        next = recover(&mut c, r, next);
        old_lives.push(life_sent(&c, r, 1));
        phase.set(1);
        lost_life.set(r);
        c.input(r, Input::Request(request(100 + r as u8)));
        c.run();
        c.tick_all(25);
        assert!(c.replicas[r as usize].in_view_change() && c.replicas[r as usize].view() == 1);
        let vc = view_change_sent(&c, r);
        assert_eq!(vc.incarnation, 1);
        old_view_changes.push(vc);
        phase.set(2);
        lose_state(&mut c, r, 2);
        next = recover(&mut c, r, next);
        assert_eq!(
            c.replicas[r as usize].view(),
            0,
            "{r} recovered into view 0"
        );
    }
    for a in [2, 3, 4] {
        assert!(knows(&c, a, 5, 2) && knows(&c, a, 6, 2));
        lose_state(&mut c, a, 1);
        if rewind == Rewind::RelayOldLives {
            c.input(a, msg(1, Message::Lives(old_lives.clone())));
            c.run();
        }
        next = recover(&mut c, a, next);
    }
    let rewound: Vec<ReplicaId> = [2, 3, 4]
        .into_iter()
        .filter(|a| !knows(&c, *a, 5, 2) || !knows(&c, *a, 6, 2))
        .collect();
    eprintln!("recovered knowing an old life of 5 or 6: {rewound:?}");

    // Phase 3: block d at s.
    let (s, d) = block_d_then_view_change(&mut c, n, &phase, &s_cell);
    let forked = forked_at(&c, s, d);
    let new_view_used_old = c.sent[1].iter().any(|m| match m {
        Message::NewView(nv) if nv.view == 1 => old_view_changes
            .iter()
            .all(|vc| nv.view_changes.iter().any(|s| &s.message == vc)),
        _ => false,
    });
    assert!(
        forked.is_empty(),
        "fork at {s}: 5 executed d (request 200, view 0); (replica, requests, view) of the \
         others: {forked:?}; 1's new-view used the life-1 view-changes: {new_view_used_old}; \
         recovered knowing old lives: {rewound:?}"
    );
}

/// Was a BREAK, now held (finding 2, liveness; the documented bound "the faulty replica gets at most about one
/// veto per checkpoint interval", crate docs, "Why announcing new lives cannot halt the
/// cluster"). The relay that closed round 9's adaptive vetoer happens only when a replica
/// learns a life from its sender's *query*: a life learned from a `Message::Lives` is taken
/// (one per sender per checkpoint) and never relayed. So the vetoer sends its own new life,
/// as a `Lives` message, to one backup only: that backup alone knows it and refuses every
/// new-view that carries the vetoer's older view-change, view after view, until it
/// retransmits its lives (only once stalled for `retransmit_ticks` in view-change status; the
/// crate docs say "with its view-change"). Round 9's vetoer, announcing by `Lives`: n = 4 and
/// n = 7 (one correct replica crashed), no checkpoint and no restart.
#[test]
fn red_team_held_lives_announced_by_relay_veto_once() {
    let mut too_many = Vec::new();
    for (n, byzantine, crashed) in [(4, 3, None), (7, 6, Some(5))] {
        let (refused, view, ticks) =
            veto_attack_with(n, byzantine, crashed, Announce::Lives, false, None);
        if refused.len() > 1 {
            too_many.push(format!(
                "n = {n}: refused new-views of views {refused:?} before the commit in view \
                 {view} (tick {ticks}, base timeout 20)"
            ));
        }
    }
    assert!(too_many.is_empty(), "{too_many:?}");
}

/// HELD with the node's timing (retransmit_ticks = a quarter of the base view-change
/// timeout, `crates/node/src/node.rs`): the backup that alone knows the new life relays it in
/// its first retransmission while changing views, before the next view's timeout, so the
/// vetoer by `Lives` gets no more than about one veto before the commit.
#[test]
fn red_team_held_lives_announced_by_relay_with_node_timing() {
    for (n, byzantine, crashed) in [(4, 3, None), (7, 6, Some(5))] {
        let (refused, view, ticks) =
            veto_attack_with(n, byzantine, crashed, Announce::Lives, false, Some(5));
        eprintln!("n = {n}: refused {refused:?}, commit in view {view} at tick {ticks}");
        assert!(
            refused.len() <= 1,
            "n = {n}: refused new-views of views {refused:?} before the commit in view {view} \
             (tick {ticks}, base timeout 20, retransmit 5)"
        );
    }
}

/// Was a BREAK, now held (finding 2, safety premise; no Byzantine replica needed): a replica restored from a
/// backup (which the issue and contract item 6 count as recovering) does not learn the newest
/// lives the answers carry when the backup already holds an older life of that replica learned
/// at the backup's own stable checkpoint: `learn_life` refuses the newer one as
/// `IncarnationRaisedTooSoon` (the backup's checkpoint has not advanced since). It leaves
/// recovery knowing the older life and accepts that life's view-changes: exactly what "Why
/// that knowledge survives the answerers' own amnesia" says cannot happen. (With a Byzantine
/// primary holding such a view-change this forks as in the break above; here the premise.)
///
/// n = 4: 3 loses its stores (life 1); 1 learns life 1 at checkpoint 0, and a backup of 1's
/// records is taken. 3 later loses its stores again (life 2), 1 learns it. 1's disk dies and
/// is restored from the backup; it recovers, answered by 0, 2 and 3, who all show life 2.
#[test]
fn red_team_held_restored_backup_learns_the_newest_life() {
    let mut c = Cluster::new(4);
    lose_state(&mut c, 3, 1);
    c.tick_all(1); // 3's query of life 1: 1 learns it at checkpoint 0
    assert!(knows(&c, 1, 3, 1));
    let backup = c.durable[1].clone();
    let mut next = recover(&mut c, 3, 10);
    lose_state(&mut c, 3, 2);
    next = recover(&mut c, 3, next);
    assert!(knows(&c, 1, 3, 2), "1 learned 3's life 2");

    // 1's disk dies: restored from the backup (recovering, its first new life).
    let head = c.replicas[1].last_executed();
    c.replicas[1] = Replica::new(
        config(1, 4),
        Restored {
            last_executed: head,
            executed_checkpoint: None,
            head_time_ms: c.head_time_ms(1),
            now_ms: c.clocks_ms[1],
            durable: backup.clone(),
            recovering: true,
            nonce: 0xb4c,
            incarnation: 1,
        },
    );
    c.durable[1] = backup;
    recover(&mut c, 1, next);
    let shown = |c: &Cluster| {
        c.sent[0].iter().any(|m| match m {
            Message::RecoveryAnswer(a) => {
                a.querier == 1
                    && a.lives
                        .iter()
                        .any(|l| l.from == 3 && l.message.incarnation == 2)
            }
            _ => false,
        })
    };
    assert!(shown(&c), "the answers showed 3's life 2");
    let forgotten = ViewChange {
        new_view: c.replicas[1].view() + 1,
        incarnation: 1,
        checkpoint: Checkpoint {
            seq: 0,
            digest: GENESIS,
        },
        checkpoint_proof: Vec::new(),
        prepared: Vec::new(),
    };
    let mut actions = Vec::new();
    let accepted = c.replicas[1].step(msg(3, Message::ViewChange(forgotten)), &mut actions);
    assert!(
        knows(&c, 1, 3, 2) && accepted.is_err(),
        "1 left recovery knowing 3's life 2: {}; a view-change of 3's life 1: {accepted:?}",
        knows(&c, 1, 3, 2)
    );
}

/// The `Message::Lives` each replica sent, and the lives in them.
fn lives_sent(c: &Cluster) -> (usize, usize) {
    let lives = c.sent.iter().flatten().filter_map(|m| match m {
        Message::Lives(lives) => Some(lives.len()),
        _ => None,
    });
    lives.fold((0, 0), |(messages, total), len| (messages + 1, total + len))
}

/// HELD (finding 2, resources): relays do not loop. A new life announced to one replica of
/// seven is relayed once by each replica that learns it (six relays of one life), and never
/// again. A flood of `Lives` from the Byzantine replica (its own lives 2..=1,000 and a life of
/// every other replica, in messages of n lives) makes each replica relay each life it did not
/// know once, and persist nothing more of the flooder before the next checkpoint.
#[test]
fn red_team_held_relayed_lives_do_not_loop_or_amplify() {
    let mut c = Cluster::new(7);
    commit_block(&mut c, 1);
    c.input(
        0,
        msg(
            6,
            Message::RecoveryQuery(RecoveryQuery {
                nonce: 1,
                incarnation: 1,
            }),
        ),
    );
    c.run();
    assert_eq!(
        lives_sent(&c),
        (6, 6),
        "one relay by each replica that learned the life"
    );
    for id in 0..6 {
        assert!(knows(&c, id, 6, 1), "{id} learned 6's life 1");
    }
    let sent_before: usize = c.sent.iter().map(Vec::len).sum();
    let records_before: usize = c.durable.iter().map(Vec::len).sum();
    for incarnation in 2..=1_000u64 {
        let mut lives = vec![life(6, incarnation)];
        lives.extend((0..6).map(|r| life(r, 1)));
        for to in 0..6 {
            c.input(to, msg(6, Message::Lives(lives.clone())));
        }
        c.run();
    }
    let sent_after: usize = c.sent.iter().map(Vec::len).sum();
    let records_after: usize = c.durable.iter().map(Vec::len).sum();
    // Each of 0..=5 relays, once, each life 1 of the five others it did not know.
    assert!(
        sent_after - sent_before <= 6 * 6,
        "a flood of lives made replicas send {} messages",
        sent_after - sent_before
    );
    // Each of 0..=5 may take one new life of each other replica (their lives 1 are new to it).
    assert!(
        records_after - records_before <= 6 * 6,
        "{} records for a flood",
        records_after - records_before
    );
    for id in 0..6 {
        assert!(
            !knows(&c, id, 6, 2),
            "{id} took a second life of 6 within one checkpoint"
        );
    }
}

/// HELD (finding 2, resources): relayed lives by `Lives` across many checkpoints: a replica
/// persists at most one new life of the Byzantine replica per advance of its stable
/// checkpoint, and compaction keeps one (round 9 checked the same for announcements by query).
#[test]
fn red_team_held_lives_by_relay_are_bounded_per_checkpoint() {
    let mut c = Cluster::new(4);
    let mut incarnation = 0;
    for i in 1..=40 {
        for _ in 0..3 {
            incarnation += 1;
            for to in 0..3 {
                c.input(to, msg(3, Message::Lives(vec![life(3, incarnation)])));
            }
        }
        commit_block(&mut c, i);
    }
    for id in 0..3 {
        let stable = c.replicas[id].stable_checkpoint().0;
        assert_eq!(stable, 40);
        let of_3 = |records: &[Durable]| {
            records
                .iter()
                .filter(|d| matches!(life_in(d), Some((3, _))))
                .count()
        };
        let taken = of_3(&c.durable[id]);
        assert!(
            taken as u64 <= stable / 4 + 1,
            "replica {id} persisted {taken} lives of 3 over {} checkpoints",
            stable / 4
        );
        let mut compacted = c.durable[id].clone();
        Durable::compact(&mut compacted);
        assert_eq!(of_3(&compacted), 1);
    }
}

/// HELD (finding 2, resources): while views change and nothing commits, each replica
/// retransmits its lives once per `retransmit_ticks` (bounded by n lives per message); relays
/// cause no relays. n = 4 with the primary of view 0 silent, over 20 retransmission intervals.
#[test]
fn red_team_held_lives_retransmitted_while_changing_views_stay_bounded() {
    let mut c = Cluster::new(4);
    for id in 0..4 {
        c.replicas[id] = {
            let mut config = config(id as ReplicaId, 4);
            config.retransmit_ticks = 10;
            Replica::new(config, Restored::genesis(GENESIS, 0, 0))
        };
    }
    for r in 0..4 {
        let query = RecoveryQuery {
            nonce: 1,
            incarnation: 1,
        };
        for to in 0..4 {
            c.input(to, msg(r, Message::RecoveryQuery(query)));
        }
        c.run();
    }
    // Every replica now knows 4 lives. Nothing will commit: the primaries of views 0 and 1
    // are down (beyond f: this is about what the others send meanwhile).
    c.up[0] = false;
    c.up[1] = false;
    c.input(2, Input::Request(request(9)));
    c.run();
    let (messages_before, lives_before) = lives_sent(&c);
    c.tick_all(200);
    let (messages, lives) = lives_sent(&c);
    let (messages, lives) = (messages - messages_before, lives - lives_before);
    eprintln!("{messages} Lives messages in 200 ticks ({lives} lives in them)");
    assert!(messages > 0, "they do retransmit their lives");
    assert!(lives <= 4 * messages, "at most n lives in each");
    assert!(
        messages <= 2 * (200 / 10 + 1),
        "{messages} Lives messages from 2 replicas in 20 retransmission intervals"
    );
}

/// HELD (finding 2, liveness; the price the crate docs name): a correct replica that loses its
/// state twice within one checkpoint interval is refused (`IncarnationRaisedTooSoon`, no
/// answer) until the others' stable checkpoint advances, and then recovers: n = 4, no
/// Byzantine replica, 3 loses its stores again one tick after its first query.
#[test]
fn red_team_held_twice_lost_state_recovers_once_the_cluster_commits() {
    let mut c = Cluster::new(4);
    commit_block(&mut c, 1);
    lose_state(&mut c, 3, 1);
    c.tick_all(1);
    lose_state(&mut c, 3, 2);
    c.tick_all(c.replicas[0].config().retransmit_ticks * 3);
    assert!(
        c.replicas[3].is_recovering(),
        "idle: no answer to life 2 yet"
    );
    let answers_to_life_2 = |c: &Cluster| {
        let nonce = 0x5eed + 3_002; // lose_state's nonce for 3's life 2
        let answers = c.sent.iter().flatten().filter(
            |m| matches!(m, Message::RecoveryAnswer(a) if a.querier == 3 && a.nonce == nonce),
        );
        answers.count()
    };
    assert_eq!(
        answers_to_life_2(&c),
        0,
        "life 2 was not answered while idle"
    );
    // The cluster commits two checkpoint intervals: the limit renews, and 3's next query (it
    // resends every retransmit_ticks) is answered; then it recovers as usual.
    for i in 10..18 {
        commit_block(&mut c, i);
    }
    c.tick_all(c.replicas[0].config().retransmit_ticks + 1);
    assert_eq!(
        answers_to_life_2(&c),
        3,
        "answered once the checkpoint advanced"
    );
    recover(&mut c, 3, 20);
    assert!(knows(&c, 0, 3, 2) && knows(&c, 1, 3, 2) && knows(&c, 2, 3, 2));
}

/// Was a BREAK, now held (robustness, the documented contract): `Replica::check_shape` says "[`Replica::step`]
/// checks the same again", but `step` takes a `Message::Lives` without `check_lives`: a Lives
/// of n + 1 lives, or two lives of one replica, is accepted (`Ok`) by `step` where
/// `check_shape` refuses it. Harmless with the node (it runs `check_shape` first), but a caller
/// that follows the contract's step 1 only ("verify before stepping") gets no error value for
/// malformed input, and a recovering replica's bound on work per message is gone.
#[test]
fn red_team_held_step_checks_lives_shape() {
    let mut r = replica(0);
    let malformed = Message::Lives(vec![
        life(3, 1),
        life(3, 2),
        life(2, 1),
        life(1, 1),
        life(0, 1),
    ]);
    assert!(r.check_shape(&malformed).is_err());
    let mut actions = Vec::new();
    let stepped = r.step(msg(3, malformed), &mut actions);
    assert!(
        stepped.is_err(),
        "step accepted what check_shape refuses: {stepped:?}, {actions:?}"
    );
}
