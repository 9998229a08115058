//! Red team, round 9, against incarnations learned only from recovery queries, one new one per
//! sender per stable checkpoint (commit a800353). Four breaks were found; each test below
//! failed then and holds now that lives are signed queries that answers carry, replicas relay
//! and records keep with the checkpoint they were learned at (crate docs, "Recovering from
//! lost state").
use crate::common;

use std::cell::Cell;
use std::rc::Rc;

use common::*;
use pbft::*;

/// Was a BREAK, now held (finding 2, safety; n = 7, f = 2; one Byzantine validator, 1, primary
/// of view 1; at every moment at most one other validator is recovering, so within the fault
/// model). Now every answer carries the lives its answerer knows, and a recovering replica
/// learns them before it takes part: 2, 3 and 4 come back knowing 5's and 6's new lives, and
/// refuse 1's new-view. The break, as found:
///
/// What a replica knows of a peer's incarnation lives in its own durable records only, and
/// since a800353 it is learned only from that peer's own recovery query. The answerers of a
/// recovered replica are the whole defence against its lost life's view-change; when they
/// later lose their own stores (each recovering in turn, as documented), that knowledge is
/// gone from the cluster, and nothing brings it back: their recovery answers carry no
/// incarnations, and the recovered replica's later view-changes (of its new incarnation)
/// teach nothing any more.
///
/// 1. 5 times out alone into view 1; its view-change reaches only 1; 5 loses its stores and
///    recovers (incarnation 1), answered by 1, 2, 3, 4, 6 (its query to 0 is delayed; 1 hides
///    5's view-change in its answer and ignores the incarnation). The same for 6.
/// 2. 2, 3 and 4 each lose their stores in turn and recover: none of 0, 2, 3, 4 knows of 5's
///    or 6's new life any more.
/// 3. In view 0, 0 proposes d at s; 2, 3, 5, 6 prepare and commit it, 5 executes it (with 1's
///    commit). Neither 0, 1 nor 4 is prepared for d.
/// 4. View change to 1: 1 builds its new-view from the view-changes of 0, itself, 4 and the
///    *lost-life* ones of 5 and 6 (none carries d). 0, 2, 3, 4 accept it (the incarnation
///    check passes: they know incarnation 0 of 5 and 6), 1 proposes e at s, and 0, 2, 3, 4
///    execute e: a fork at s between correct replicas 5 (d) and 0, 2, 3, 4 (e).
///
/// Here 5's and 6's view-changes of their new lives reach 0, 2, 3, 4 before 1's new-view: before
/// a800353 they taught those replicas the new incarnation (and this schedule held); now they
/// teach nothing.
#[test]
fn red_team_held_answerers_amnesia_does_not_revive_lost_view_changes() {
    answerers_amnesia_fork(false);
}

/// The same with the new lives' view-changes delayed by the network until after the fork: the
/// schedule that forks with the code before a800353 too (learning from view-changes only
/// narrowed the hole).
#[test]
fn red_team_held_answerers_amnesia_with_new_lives_delayed() {
    answerers_amnesia_fork(true);
}

fn answerers_amnesia_fork(delay_new_lives: bool) {
    let n = 7;
    let mut c = Cluster::new(n);
    commit_block(&mut c, 1);
    // Phases: 1 lost lives, 2 recoveries, 3 block d, 4 view change.
    let phase = Rc::new(Cell::new(1u8));
    let lost_life = Rc::new(Cell::new(5 as ReplicaId));
    let s_cell = Rc::new(Cell::new(0u64));
    let (p, lost, s_at) = (phase.clone(), lost_life.clone(), s_cell.clone());
    c.filter = Box::new(move |from, to, m| {
        let (phase, lost, s) = (p.get(), lost.get(), s_at.get());
        match m {
            // The network delays every recovery query to 0 (until after the attack), and the
            // lives relayed to it.
            Message::RecoveryQuery(_) | Message::Lives(_) if to == 0 => None,
            // 1, Byzantine, ignores relayed lives too.
            Message::Lives(_) if to == 1 => None,
            // 1, Byzantine: ignores announced lives (keeps the old view-changes to use) and
            // leaves the querier's messages out of its answers.
            Message::RecoveryQuery(q) if to == 1 => Some(Message::RecoveryQuery(RecoveryQuery {
                incarnation: 0,
                ..q
            })),
            Message::RecoveryAnswer(mut a) if from == 1 => {
                a.querier_message = None;
                Some(Message::RecoveryAnswer(a))
            }
            // Phase 1: the doomed life's forwards are lost (it times out alone) and its
            // view-change reaches only 1 before it loses its stores.
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
            Message::ViewChange(_) if phase == 4 && delay_new_lives && from >= 5 => None,
            m => Some(m),
        }
    });

    // Phase 1 and 2 for 5, then for 6.
    let mut next = 10u8;
    let mut old = Vec::new();
    for r in [5, 6] {
        phase.set(1);
        lost_life.set(r);
        c.input(r, Input::Request(request(100 + r as u8)));
        c.run();
        c.tick_all(25);
        assert!(c.replicas[r as usize].in_view_change() && c.replicas[r as usize].view() == 1);
        old.push(view_change_sent(&c, r));
        phase.set(2);
        lose_state(&mut c, r, 1);
        next = recover(&mut c, r, next);
        assert_eq!(
            c.replicas[r as usize].view(),
            0,
            "{r} recovered into view 0"
        );
    }
    let knows_new_life = |c: &Cluster, id: usize| {
        c.durable[id]
            .iter()
            .any(|d| matches!(life_in(d), Some((5 | 6, 1))))
    };
    assert!(knows_new_life(&c, 2) && knows_new_life(&c, 3) && knows_new_life(&c, 4));
    for a in [2, 3, 4] {
        lose_state(&mut c, a, 1);
        next = recover(&mut c, a, next);
    }
    // Before the fix, answers carried no lives: 2, 3 and 4 came back knowing neither new life.
    assert!(
        [2, 3, 4].iter().all(|id| knows_new_life(&c, *id)),
        "the answerers learned 5's and 6's new lives again as they recovered"
    );

    // Phase 3: block d at s.
    let (s, d) = block_d_then_view_change(&mut c, n, &phase, &s_cell);
    let new_view = c.sent[1]
        .iter()
        .find_map(|m| match m {
            Message::NewView(nv) if nv.view == 1 => Some(nv.clone()),
            _ => None,
        })
        .expect("1 sent a new-view for view 1");
    for vc in &old {
        assert!(
            new_view.view_changes.iter().any(|s| &s.message == vc),
            "1's new-view carries the lost-life view-changes"
        );
    }
    let forked = forked_at(&c, s, d);
    assert!(
        forked.is_empty(),
        "fork at {s}: 5 executed d (request 200, view 0); (replica, requests, view) of the others: \
         {forked:?}"
    );
}

/// HELD (finding 2, liveness): the adaptive vetoer does not stop the cluster for ever (n = 4,
/// n = 7 with one correct replica crashed): with no checkpoint reached, each correct replica
/// takes one new life of it, and once the primary knows the newest life no backup can refuse
/// its new-view. Without announcing (the baseline), the first new-view succeeds.
#[test]
fn red_team_held_adaptive_vetoes_end() {
    for (n, byzantine, crashed) in [(4, 3, None), (7, 6, Some(5))] {
        let (refused, view, _) = veto_attack(n, byzantine, crashed, false);
        assert!(
            refused.is_empty() && view == 1,
            "baseline n = {n}: {refused:?}, view {view}"
        );
        let (refused, view, ticks) = veto_attack(n, byzantine, crashed, true);
        eprintln!(
            "n = {n}: refused new-views of views {refused:?}; committed in view {view} at tick {ticks}"
        );
    }
}

/// Was a BREAK (now held: a new life heard by one replica is relayed to all, so what they know
/// no longer differs) of the documented bound (docs/SECURITY.md: "Delay one view change per checkpoint
/// interval ... so the next view change succeeds"; crate docs, "Why announcing new lives
/// cannot halt the cluster"). The limit is one new life per sender *per answering replica*:
/// the vetoer raises a different correct backup each time, and the differences between what
/// they know give it more vetoes for free (a backup that knows a newer life than the primary
/// refuses without any new announcement). n = 4: the new-views of views 1, 2, 4 and 5 are
/// refused, the request commits in view 6 (timeout 2^5 times the base); n = 7 with one
/// correct replica crashed: 8 refused new-views, commit in view 11 at about 2,000 times the
/// base timeout. Within one checkpoint interval and with no restart.
#[test]
fn red_team_held_adaptive_vetoes_stay_within_one_per_checkpoint() {
    for (n, byzantine, crashed) in [(4, 3, None), (7, 6, Some(5))] {
        let (refused, view, ticks) = veto_attack(n, byzantine, crashed, true);
        assert!(
            refused.len() <= 1,
            "n = {n}: refused new-views of views {refused:?} before the commit in view {view} \
             (tick {ticks}, base timeout 20)"
        );
    }
}

/// Was a BREAK (now held: `Durable::Incarnation` keeps the checkpoint a life was learned at,
/// and a restart replays it) (finding 2, liveness, needs restarts of correct replicas): which new lives a replica
/// took since its stable checkpoint (`incarnation_raised_at`) is kept in memory only, so each
/// restart of a correct replica (records intact: a crash, an upgrade) gives the vetoer one
/// more announcement there. If the correct replica it raised restarts once after each view
/// change, it refuses every new-view: n = 4, no commit by view 16 (timeout 2^16 times the
/// base), where the baseline commits in view 1. Restarts are not the vetoer's to cause, so
/// this needs an outside reason for them; persisting the checkpoint with
/// `Durable::Incarnation` (and replaying it) would close it.
#[test]
fn red_team_held_restarts_do_not_renew_the_veto() {
    veto_attack_with(4, 3, None, Announce::Query, true, None);
}

/// HELD (finding 2, resources): a Byzantine replica (3) announces a newer life in a recovery
/// query three times per block (each past the answer interval) while the cluster commits 40
/// blocks (10 checkpoint intervals). Each correct replica persists at most one `Durable::Incarnation` per advance of its stable
/// checkpoint (plus the first), and compaction keeps only the newest.
#[test]
fn red_team_held_announced_lives_are_bounded_per_checkpoint() {
    let mut c = Cluster::new(4);
    let mut incarnation = 0;
    for i in 1..=40 {
        // Past the answer interval each time, so only the checkpoint limit applies.
        for _ in 0..3 {
            incarnation += 1;
            for to in 0..3 {
                c.input(
                    to,
                    msg(
                        3,
                        Message::RecoveryQuery(RecoveryQuery {
                            nonce: incarnation,
                            incarnation,
                        }),
                    ),
                );
            }
            c.tick_all(c.replicas[0].config().retransmit_ticks + 1);
        }
        let primary = c.replicas[0].primary();
        c.input(primary, Input::Request(request(i)));
        c.input(primary, Input::Cut);
        c.run();
    }
    for id in 0..3 {
        let stable = c.replicas[id].stable_checkpoint().0;
        assert_eq!(stable, 40);
        let lives = |records: &[Durable]| {
            records
                .iter()
                .filter(|d| matches!(life_in(d), Some((3, _))))
                .count()
        };
        let taken = lives(&c.durable[id]);
        assert!(taken >= 2, "the limit renews at checkpoints ({taken})");
        assert!(
            taken as u64 <= stable / 4 + 1,
            "replica {id} persisted {taken} new lives of 3 over {} checkpoints",
            stable / 4
        );
        let mut compacted = c.durable[id].clone();
        Durable::compact(&mut compacted);
        assert_eq!(lives(&compacted), 1);
    }
}
