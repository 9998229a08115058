//! Red team of eb409e1c (`AnswerPace`: a primary resends its new-view to a stale view-change's
//! sender paced by `retransmit_ticks`, measured in the primary's own ticks).
//!
//! - Finding 1 (fixed): the pace was one answer per `retransmit_ticks` of the *answerer's*
//!   ticks while a correct laggard retransmits every `retransmit_ticks` of *its own*: when the
//!   primary's tick count ran even slightly slower (a busy node skips ticks: `runtime.rs`
//!   replays at most 10 missed ticks a turn) or a retransmission arrived a tick earlier than the
//!   one answered, every other retransmission was refused. An answer is now allowed every half
//!   interval (tests 1 and 2).
//! - Finding 2 (fixed, older than eb409e1c): a laggard catching up by state transfer counted
//!   each transfer as progress and never retransmitted its view-change, so never got the
//!   new-view (test 3).
//! - What a faulty replica can still buy with small messages, per retransmission interval: a
//!   new-view (whatever stale view or contents it names) and a recovery answer (whatever nonce),
//!   from separate paces (test 4). Since the thirty-first session the new-view's pace doubles
//!   its wait after as many answers as a laggard may ask for within four times the primary's
//!   view-change timer, up to 16 intervals (note of the thirtieth session, item 1; red teams
//!   s64 and s65: the tests after test 4).
use crate::common;

use common::*;
use pbft::*;

fn node(id: ReplicaId) -> Replica {
    Replica::new(retransmitting_config(id), Restored::genesis(GENESIS, 0, 0))
}

fn new_views_to(actions: &[Action], to: ReplicaId) -> Vec<NewView> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                to: t,
                message: Message::NewView(nv),
            } if *t == to => Some(nv.clone()),
            _ => None,
        })
        .collect()
}

/// Primary 1 in view 1 (entered by its own new-view from the view-changes of 0, 1, 2), and
/// replica 3 changing to view 1 (it joined by the f+1 rule) but without the new-view; returns
/// them and 3's view-change.
fn laggard_setup() -> (Replica, Replica, ViewChange) {
    let mut p = node(1);
    for from in [0, 2, 1] {
        step(
            &mut p,
            msg(from, Message::ViewChange(view_change(1, vec![]))),
        );
    }
    assert!(p.is_primary() && !p.in_view_change() && p.view() == 1);
    let mut b = node(3);
    let mut sent = Vec::new();
    for from in [0, 2] {
        sent.extend(step(
            &mut b,
            msg(from, Message::ViewChange(view_change(1, vec![]))),
        ));
    }
    let vc = view_changes_broadcast(&sent)
        .pop()
        .expect("3 joins view 1 by f+1");
    // Its own view-change, looped back: 3 of 4 are changing, its timer runs.
    step(&mut b, msg(3, Message::ViewChange(vc.clone())));
    assert!(b.in_view_change() && b.view() == 1);
    (p, b, vc)
}

/// Runs `b_ticks` of the laggard 3's ticks; the primary ticks on every one of them except each
/// `skip_every`-th (0: never skips). Each view-change 3 (re)transmits reaches the primary at
/// once; each new-view the primary answers is lost if `lose` says so, else delivered. Returns
/// the laggard ticks at which it was answered, and the tick it rejoined view 1 (if it did).
fn run_laggard(
    p: &mut Replica,
    b: &mut Replica,
    b_ticks: u64,
    skip_every: u64,
    mut lose: impl FnMut(u64) -> bool,
) -> (Vec<u64>, Option<u64>) {
    let mut answered = Vec::new();
    for k in 1..=b_ticks {
        if skip_every == 0 || k % skip_every != 0 {
            step(p, Input::Tick { now_ms: 0 });
        }
        let out = step(b, Input::Tick { now_ms: 0 });
        for vc in view_changes_broadcast(&out) {
            let mut answer = Vec::new();
            let _ = p.step(msg(3, Message::ViewChange(vc)), &mut answer);
            for nv in new_views_to(&answer, 3) {
                answered.push(k);
                if !lose(k) {
                    step(b, msg(1, Message::NewView(nv)));
                }
            }
        }
        if !b.in_view_change() && b.view() == 1 {
            return (answered, Some(k));
        }
    }
    (answered, None)
}

/// Finding 1 (fixed): the primary's first answer is lost, and the primary's tick count runs
/// one tick in 50 slower than the laggard's (a busy validator skips ticks). The laggard's first
/// retransmission, 50 of its ticks later, arrives 49 of the primary's ticks after the answer:
/// it was refused, and the laggard rejoined an interval late. Now it is answered.
#[test]
fn red_team_pace_a_retransmission_one_tick_early_is_answered() {
    let (mut p, mut b, vc) = laggard_setup();
    // Its first view-change reaches the primary, which answers; the answer is lost.
    assert_eq!(
        new_views_to(&step(&mut p, msg(3, Message::ViewChange(vc))), 3).len(),
        1
    );
    let (answered, joined) = run_laggard(&mut p, &mut b, 1_000, 50, |_| false);
    assert_eq!(answered, vec![50], "49 primary ticks after the lost answer");
    assert_eq!(joined, Some(50));
}

/// Finding 1, the cost it had: within its view-change timer (T << 1 = 400 ticks), the laggard
/// retransmits 7 times; with the primary one tick in 50 slower only 4 were answered, and if
/// those were lost it timed out into view 2, which the others (in view 1, normal) never join.
/// Every answer is lost here to count the chances: all 7 are answered now.
#[test]
fn red_team_pace_a_slower_primary_answers_every_retransmission_before_the_laggard_times_out() {
    let (mut p, mut b, _) = laggard_setup();
    let (answered, joined) = run_laggard(&mut p, &mut b, 399, 50, |_| true);
    assert_eq!(joined, None);
    assert_eq!(answered, vec![50, 100, 150, 200, 250, 300, 350]);
    // What is left after the timer: its view-change for view 2 is not stale for the primary,
    // so no new-view comes any more; it waits for the next view change.
    step(&mut p, Input::Tick { now_ms: 0 });
    step(&mut b, Input::Tick { now_ms: 0 });
    assert!(b.in_view_change() && b.view() == 2, "timed out into view 2");
    let vc2 = b_view_change(&mut b);
    assert!(vc2.new_view == 2);
    let mut out = Vec::new();
    let _ = p.step(msg(3, Message::ViewChange(vc2)), &mut out);
    assert!(new_views_to(&out, 3).is_empty());
}

/// The view-change `b` retransmits next.
fn b_view_change(b: &mut Replica) -> ViewChange {
    for _ in 0..1_000 {
        if let Some(vc) = view_changes_broadcast(&step(b, Input::Tick { now_ms: 0 })).pop() {
            return vc;
        }
    }
    panic!("no retransmission");
}

/// Attack 2 (failed): a faulty replica cannot buy more than one new-view per half interval by
/// naming other stale views, changing its view-change's contents, or by mixing in recovery
/// queries of fresh nonces; the recovery answer is paced separately, so per half interval it
/// gets one of each.
#[test]
fn red_team_pace_stale_views_contents_and_nonces_buy_one_new_view_and_one_recovery_answer_a_half_interval()
 {
    // Primary 1 of view 5, entered by its new-view.
    let mut p = node(1);
    for from in [0, 2, 1] {
        step(
            &mut p,
            msg(from, Message::ViewChange(view_change(5, vec![]))),
        );
    }
    assert!(p.is_primary() && !p.in_view_change() && p.view() == 5);
    let mut new_views = 0;
    let mut answers = 0;
    let mut count = |actions: &[Action]| {
        for a in actions {
            match a {
                Action::Send {
                    to: 3,
                    message: Message::NewView(_),
                } => new_views += 1,
                Action::Send {
                    to: 3,
                    message: Message::RecoveryAnswer(_),
                } => answers += 1,
                Action::Send { .. } => panic!("unexpected send {a:?}"),
                _ => {}
            }
        }
    };
    for round in 0..6u64 {
        for view in 1..=5 {
            for incarnation in 0..3 {
                let mut vc = view_change(view, vec![]);
                vc.incarnation = incarnation;
                let mut out = Vec::new();
                let _ = p.step(msg(3, Message::ViewChange(vc)), &mut out);
                count(&out);
            }
        }
        for nonce in 0..20 {
            let mut out = Vec::new();
            let _ = p.step(
                msg(
                    3,
                    Message::RecoveryQuery(RecoveryQuery {
                        nonce: nonce + 100 * round,
                        incarnation: 0,
                    }),
                ),
                &mut out,
            );
            count(&out);
        }
        for _ in 0..25 {
            step(&mut p, Input::Tick { now_ms: 0 });
        }
    }
    assert_eq!(
        (new_views, answers),
        (6, 6),
        "one of each per half interval"
    );
}

/// Finding 2 (pre-existing, not from eb409e1c; medium): state transfer silences the laggard's
/// only way back. A replica changing to view v whose new-view was lost rejoins v only through
/// the primary's resent new-view (the f+1 rule goes to higher views only; state transfer
/// moves its execution, never its view), which answers its *retransmitted* view-change. But
/// it retransmits only when "stalled" (`now >= last_progress + retransmit_ticks`,
/// replica.rs `retransmit`), and every state transfer calls `progress()` (checkpoint.rs
/// `on_state_transferred`): with the cluster committing, a laggard fetching blocks at least
/// once per interval never resends its view-change, gets no new-view, and its timer moves it
/// to view v+1, which the others (normal in v) never join: it is out until the next view
/// change, while looking healthy (it executes by state transfer).
///
/// Fixed: a replica changing views counts as stalled for retransmission (`retransmit`).
#[test]
fn red_team_pace_a_laggard_catching_up_by_state_transfer_rejoins_the_view() {
    let (mut p, mut b, vc) = laggard_setup();
    // The primary's first answer is lost.
    assert_eq!(
        new_views_to(&step(&mut p, msg(3, Message::ViewChange(vc))), 3).len(),
        1
    );
    let mut seq = 0;
    for k in 1..=399u64 {
        step(&mut p, Input::Tick { now_ms: 0 });
        if k % 40 == 0 {
            // The cluster moved on; the laggard fetched its blocks.
            seq += 4;
            step(&mut b, transferred_to(seq));
        }
        let out = step(&mut b, Input::Tick { now_ms: 0 });
        for vc in view_changes_broadcast(&out) {
            let mut answer = Vec::new();
            let _ = p.step(msg(3, Message::ViewChange(vc)), &mut answer);
            for nv in new_views_to(&answer, 3) {
                step(&mut b, msg(1, Message::NewView(nv)));
            }
        }
    }
    assert_eq!(b.last_executed().0, 36, "it executes by state transfer");
    // Failed before the fix: no retransmission in 399 ticks, still changing to view 1 (and
    // its timer took it to view 2 at 400, where no one follows).
    assert!(
        !b.in_view_change() && b.view() == 1,
        "rejoined view 1: view {}, changing {}",
        b.view(),
        b.in_view_change()
    );
}

/// The ticks, of `ticks` on `p`, at which `to` is answered when it sends `ask` at every one.
fn answered_at(
    p: &mut Replica,
    ticks: u64,
    to: ReplicaId,
    mut ask: impl FnMut(u64) -> Message,
) -> Vec<u64> {
    let mut at = Vec::new();
    for k in 0..ticks {
        let mut out = Vec::new();
        let _ = p.step(msg(to, ask(k)), &mut out);
        let answers = out
            .iter()
            .filter(|a| matches!(a, Action::Send { to: t, message: Message::NewView(_) | Message::RecoveryAnswer(_) } if *t == to))
            .count();
        at.extend(std::iter::repeat_n(k, answers));
        step(p, Input::Tick { now_ms: 0 });
    }
    at
}

/// Primary 1 entering view `view` (`view % 4 == 1`) by its own new-view.
fn primary_enters(p: &mut Replica, view: View) {
    for from in [0, 2, 1] {
        step(p, msg(from, Message::ViewChange(view_change(view, vec![]))));
    }
    assert!(p.is_primary() && !p.in_view_change() && p.view() == view);
}

/// Note of the thirtieth session, item 1: a faulty replica replaying a stale view-change bought
/// the primary's whole new-view (46 MB at 72 full batches) every half interval, for as long as
/// it liked. Now it gets the answers a laggard may ask for within four times the primary's
/// view-change timer (`T << 1` here: 4 * 400 / 50 = 32, every one of which may be lost), then
/// waits twice as long after each, up to 16 intervals: 48 new-views in 200 intervals where it
/// had 400. The count starts again with the next view's new-view, and each longest wait between
/// two answers forgets one. Recovery queries keep the full pace (red team s64 F3).
#[test]
fn red_team_pace_a_replayed_view_change_waits_longer_each_time() {
    let mut p = node(1);
    primary_enters(&mut p, 5);
    let config = retransmitting_config(1);
    let half = config.retransmit_ticks / 2;
    let free = 4 * (config.view_change_timeout_ticks << 1) / config.retransmit_ticks;
    assert_eq!(free, 32);
    let longest = 32 * half;
    let stale = |_| Message::ViewChange(view_change(4, vec![]));
    let at = answered_at(&mut p, 200 * 2 * half, 3, stale);
    // The first answer, and `free` more after it at full pace.
    let fast: Vec<u64> = (0..=free + 1).map(|k| k * half).collect();
    assert_eq!(at[..fast.len()], fast, "a laggard's answers, at full pace");
    let gaps: Vec<u64> = at
        .windows(2)
        .skip(fast.len() - 1)
        .map(|w| w[1] - w[0])
        .collect();
    let doubling = [2 * half, 4 * half, 8 * half, 16 * half, longest];
    assert_eq!(gaps[..5], doubling, "{at:?}");
    assert!(gaps[5..].iter().all(|gap| *gap == longest), "{gaps:?}");
    assert_eq!(at.len(), 48, "{at:?}");

    // Quiet for the longest wait: answered at once, then after the longest wait again.
    for _ in 0..longest {
        step(&mut p, Input::Tick { now_ms: 0 });
    }
    assert_eq!(answered_at(&mut p, 2 * longest, 3, stale), [0, longest]);
    // Quiet for as many longest waits as answers were counted: at full pace again.
    for _ in 0..40 * longest {
        step(&mut p, Input::Tick { now_ms: 0 });
    }
    assert_eq!(answered_at(&mut p, 10 * half, 3, stale).len(), 10);

    // Another sender is paced apart; the next view's new-view is answered at full pace again.
    assert_eq!(answered_at(&mut p, 2 * half, 2, stale).len(), 2);
    primary_enters(&mut p, 9);
    let stale = |_| Message::ViewChange(view_change(8, vec![]));
    assert_eq!(answered_at(&mut p, 10 * half, 3, stale).len(), 10);

    // Recovery queries, fresh nonces each time: one a half interval, as before.
    let query = |k| {
        Message::RecoveryQuery(RecoveryQuery {
            nonce: k,
            incarnation: 0,
        })
    };
    assert_eq!(answered_at(&mut p, 200 * 2 * half, 3, query).len(), 400);
}

/// Red team s64 F1: replica 3 followed the others through views 3, 4 and 5 without executing
/// (two primaries replaced in a row: backoff 3, its timer `8T` = 1,600 ticks), while the primary
/// 1 of view 5 entered it with one view change (backoff 1). Its new-view is lost to 3, whose link
/// from the primary is down for `outage` ticks, then heals. With the allowance sized for `2T`
/// (the first cut), the answers ran out after 800 ticks and the retransmissions after an outage
/// of 1,300 were refused: 3 timed out into view 6 alone. Sized for four times the primary's
/// timer, it rejoins view 5 after any outage its timer outlasts.
#[test]
fn red_team_pace_a_laggard_of_more_view_changes_than_the_primary_rejoins_after_an_outage() {
    for outage in [1_000, 1_300, 1_550] {
        let (view, changing, answered) = laggard_after_outage(outage);
        assert!(
            view == 5 && !changing,
            "outage {outage}: in view {view}, changing {changing}; answered at {answered:?}"
        );
    }
}

/// Returns the laggard's view and whether it is still changing views after its timer, and the
/// ticks at which the primary answered it (`red_team_pace_a_laggard_of_more_view_changes_...`).
fn laggard_after_outage(outage: u64) -> (View, bool, Vec<u64>) {
    let mut p = node(1);
    primary_enters(&mut p, 5);
    laggard_after_outage_of(p, outage)
}

/// As [`laggard_after_outage`], with primary `p` of view 5.
fn laggard_after_outage_of(mut p: Replica, outage: u64) -> (View, bool, Vec<u64>) {
    let mut b = node(3);
    let mut own = None;
    for view in 3..=5 {
        let mut sent = Vec::new();
        for from in [0, 2] {
            sent.extend(step(
                &mut b,
                msg(from, Message::ViewChange(view_change(view, vec![]))),
            ));
        }
        own = view_changes_broadcast(&sent).pop();
    }
    step(
        &mut b,
        msg(3, Message::ViewChange(own.expect("joined view 5"))),
    );
    assert!(b.in_view_change() && b.view() == 5);
    let mut answered = Vec::new();
    for k in 1..=1_700u64 {
        step(&mut p, Input::Tick { now_ms: 0 });
        let out = step(&mut b, Input::Tick { now_ms: 0 });
        for vc in view_changes_broadcast(&out) {
            let mut answer = Vec::new();
            let _ = p.step(msg(3, Message::ViewChange(vc)), &mut answer);
            for nv in new_views_to(&answer, 3) {
                answered.push(k);
                if k >= outage {
                    step(&mut b, msg(1, Message::NewView(nv)));
                }
            }
        }
        if !b.in_view_change() {
            break;
        }
    }
    (b.view(), b.in_view_change(), answered)
}

/// Red team s64 F6: with an odd `retransmit_ticks` the first doubled wait was `2 * ceil(R / 2)
/// = R + 1`, so a peer asking every `R` was refused every other time; it is `R`.
#[test]
fn red_team_pace_an_odd_interval_doubles_to_whole_intervals() {
    let config = Config {
        view_change_timeout_ticks: 250,
        retransmit_ticks: 125,
        ..config(1, 4)
    };
    let mut p = Replica::new(config.clone(), Restored::genesis(GENESIS, 0, 0));
    primary_enters(&mut p, 5);
    let free = 4 * (config.view_change_timeout_ticks << 1) / config.retransmit_ticks;
    // Asked every R: answered every time through the allowance and the first doubling.
    let mut at = Vec::new();
    for k in 0..(free + 3) * 125 {
        if k % 125 == 0 {
            let mut out = Vec::new();
            let _ = p.step(
                msg(3, Message::ViewChange(view_change(4, vec![]))),
                &mut out,
            );
            if !new_views_to(&out, 3).is_empty() {
                at.push(k);
            }
        }
        step(&mut p, Input::Tick { now_ms: 0 });
    }
    // Every ask: the last, after the first doubled wait, is the one `R + 1` refused.
    let expected: Vec<u64> = (0..free + 3).map(|k| k * 125).collect();
    assert_eq!(at, expected);
}

/// Red team s65 F1: primary 1 went through views 3, 4 and 5 as the laggard did (both backoff 3,
/// timer `8T`), and restarted after entering view 5 (or while collecting its view-changes): the
/// backoff is not persisted, and a pace sized from the restarted backoff of 0 shut the laggard
/// out after an outage of 1,300 ticks. A restarted primary answers at full pace until its next
/// view change.
#[test]
fn red_team_pace_a_restarted_primary_still_answers_a_laggard_of_its_own_history() {
    let mut p = node(1);
    let mut durable = Vec::new();
    let keep = |durable: &mut Vec<Durable>, actions: Vec<Action>| {
        durable.extend(actions.into_iter().filter_map(|a| match a {
            Action::Persist(d) => Some(d),
            _ => None,
        }))
    };
    for view in 3..=5 {
        for from in [0, 2] {
            let out = step(
                &mut p,
                msg(from, Message::ViewChange(view_change(view, vec![]))),
            );
            keep(&mut durable, out);
        }
    }
    let mid_view_change = durable.clone();
    let out = step(&mut p, msg(1, Message::ViewChange(view_change(5, vec![]))));
    keep(&mut durable, out);
    assert!(p.is_primary() && !p.in_view_change() && p.view() == 5);
    let restart = |durable: Vec<Durable>| {
        Replica::new(
            retransmitting_config(1),
            Restored {
                durable,
                ..Restored::genesis(GENESIS, 0, 0)
            },
        )
    };
    let (view, changing, answered) = laggard_after_outage_of(restart(durable), 1_300);
    assert!(view == 5 && !changing, "restarted in view 5: {answered:?}");

    let mut p = restart(mid_view_change);
    assert!(p.in_view_change() && p.view() == 5);
    for from in [0, 2, 1] {
        let _ = p.step(
            msg(from, Message::ViewChange(view_change(5, vec![]))),
            &mut Vec::new(),
        );
    }
    assert!(p.is_primary() && !p.in_view_change() && p.view() == 5);
    let (view, changing, answered) = laggard_after_outage_of(p, 1_300);
    assert!(
        view == 5 && !changing,
        "restarted changing views: {answered:?}"
    );
}
