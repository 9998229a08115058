//! Red team s38 of 271e64b9: `enter_view` persists `Durable::Inherited { view, .. }` BEFORE
//! `Durable::View(view)` (a crash between them restores the state before: the `Inherited` of a
//! view not entered is to be ignored), and `Replica::new` gives a restart in view 0 without an
//! `Inherited` record no inheritance at all (`inherited_time_ms = 0`).
//!
//! F1 and F2 failed on 271e64b9 and are fixed (the restored view's own last record; view 0
//! keeps the genesis time at height 0); the other tests are guards. Report:
//! /work/helpers/rt-s38.md.
use crate::common;

use common::*;
use pbft::*;

const TOLERANCE_MS: u64 = DEFAULT_BLOCK_TIME_TOLERANCE_MS;
const START_MS: u64 = 100_000;
const HOUR_MS: u64 = 3_600_000;
/// A block time τ - 50 ms ahead of the correct clocks (a faulty primary's push, or a genesis).
const PUSHED_MS: u64 = START_MS + TOLERANCE_MS - 50;

/// As red team s37 measured: an inherited time τ - 50 ms ahead is waited out through tick 14,
/// the timer (T = 20) runs out at tick 34. No wait: tick 20.
const OWED: Option<u64> = Some(34);
const NOT_OWED: Option<u64> = Some(20);

fn new_view(view: View, from: &[ReplicaId]) -> NewView {
    NewView {
        view,
        incarnation: 0,
        view_changes: from
            .iter()
            .map(|f| signed(*f, view_change(view, vec![])))
            .collect(),
        pre_prepares: vec![],
    }
}

// ----- F1: a torn entry of a LATER view, from normal status -------------------------------

/// F1 (LOW: a documented invariant; no liveness impact shown). A backup in normal status in
/// view 1 (entered with a pushed inheritance) takes a valid new-view for view 3 straight away
/// (`on_new_view` -> `enter_view`, no `ViewChange(3)` record first) and its caller crashes
/// right after the first record of that step, `Inherited(3)` (the torn step the new order is
/// meant for). `Replica::new` keeps the LAST `Inherited` record of the whole log (view 3's)
/// and drops it (not the restored view 1): view 1 restarts with no inheritance (the head's time,
/// start 0), as s37 F1 did, from the other side of the cut. `Durable::kept` keeps the last
/// `Inherited` *of the restored view* (view 1's), so the compacted log restores view 1 WITH
/// its inheritance: "restoring from the compacted list gives the same replica state as
/// restoring from the full one" (`Durable::compact`'s docs) fails, and which state a restart
/// gets depends on whether a checkpoint compacted the log in between.
#[test]
fn f1_a_torn_entry_of_the_next_view_restores_like_its_compacted_log() {
    let log = vec![
        Durable::ViewChange(1),
        inherited(1, PUSHED_MS, 0),
        Durable::View(1),
        // The torn step: `enter_view(3)` from normal status, cut after its first record.
        inherited(3, 0, 0),
    ];
    let mut compacted = log.clone();
    Durable::compact(&mut compacted);
    let mut whole = restarted(log.clone(), (0, GENESIS, 0), START_MS);
    let mut small = restarted(compacted.clone(), (0, GENESIS, 0), START_MS);
    assert_eq!((whole.view(), whole.in_view_change()), (1, false));
    assert_eq!((small.view(), small.in_view_change()), (1, false));
    let (w, s) = (
        censored_from(&mut whole, 0, 80),
        censored_from(&mut small, 0, 80),
    );
    assert_eq!(
        (w, s),
        (OWED, OWED),
        "whole log {log:?} -> {w:?}, compacted {compacted:?} -> {s:?} (view 1's inheritance is \
         the recorded one: OWED = {OWED:?})"
    );
}

/// Guard (reachability of F1's log): a backup in normal status in view 1 that gets view 3's
/// new-view enters it in one step whose first record is `Inherited(3)`, with no `ViewChange(3)`
/// before it; the previous records are `.., Inherited(1), View(1)`.
#[test]
fn guard_f1s_log_is_what_a_direct_entry_writes() {
    let mut r = restarted(vec![], (0, GENESIS, 0), START_MS);
    step(&mut r, Input::Tick { now_ms: START_MS });
    let mut log = Vec::new();
    let mut actions = Vec::new();
    r.step(
        msg(1, Message::NewView(new_view(1, &[0, 1, 3]))),
        &mut actions,
    )
    .unwrap();
    log.extend(persisted(&actions));
    assert_eq!((r.view(), r.in_view_change()), (1, false));
    let mut actions = Vec::new();
    r.step(
        msg(3, Message::NewView(new_view(3, &[0, 1, 3]))),
        &mut actions,
    )
    .unwrap();
    assert_eq!((r.view(), r.in_view_change()), (3, false));
    let step3 = persisted(&actions);
    assert!(
        matches!(step3.first(), Some(Durable::Inherited { view: 3, .. })),
        "{step3:?}"
    );
    assert!(!step3.contains(&Durable::ViewChange(3)), "{step3:?}");
    assert!(
        matches!(
            &log[..],
            [Durable::Inherited { view: 1, .. }, Durable::View(1), ..]
        ),
        "{log:?}"
    );
}

// ----- F2: the genesis time is inherited by view 0 ----------------------------------------

/// F2 (LOW, regression of 271e64b9's view-0 branch; liveness once per chain launch): "view 0
/// inherited nothing" is not so at height 0: the genesis block's time is view 0's inheritance
/// (a correct primary proposes after it, `proposal_time`, and waits while it is more than τ/2
/// ahead of its clock). `Replica::new` with no records is also the FIRST start
/// (`Restored::genesis`), so now no backup owes view 0's correct primary that wait: with a
/// genesis `created_at_ms` τ - 50 ms ahead of the validators' clocks (the machine that made
/// genesis.toml ran ahead, and the chain starts at once), primary 0 waits ~τ/2 while every
/// backup's timer runs out at T: view 0's correct primary is replaced (on dd9d761a,
/// `inherited_time_ms = head_time_ms` = the genesis time: tick 34).
#[test]
fn f2_view_0_inherits_the_genesis_time() {
    // The correct primary of view 0 waits: nothing proposed at START.
    let mut primary = Replica::new(
        config(0, 4),
        Restored::genesis(GENESIS, PUSHED_MS, START_MS),
    );
    step(&mut primary, Input::Tick { now_ms: START_MS });
    step(&mut primary, Input::Request(request(9)));
    let actions = step(&mut primary, Input::Cut);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Broadcast(Message::PrePrepare(_)))),
        "primary 0 proposed before the genesis time allows: {actions:?}"
    );
    let mut backup = Replica::new(
        config(2, 4),
        Restored::genesis(GENESIS, PUSHED_MS, START_MS),
    );
    assert_eq!(censored_from(&mut backup, 0, 80), OWED, "first start");
    let mut backup = restarted(vec![], (0, GENESIS, PUSHED_MS), START_MS);
    assert_eq!(
        censored_from(&mut backup, 0, 80),
        OWED,
        "restart at height 0"
    );
}

/// Guard (s37 F2's fix held): at a height above 0, view 0's own head (pushed) is not inherited.
#[test]
fn guard_view_0_above_genesis_inherits_nothing() {
    let mut r = restarted(vec![], (3, [3; 32], PUSHED_MS), START_MS);
    assert_eq!(censored_from(&mut r, 0, 80), NOT_OWED);
}

// ----- a restored `Inherited(v)` without `View(v)` ------------------------------------------

/// Guard: restarted changing to view 1 with a crashed entry's `Inherited(1)` an hour ahead,
/// then view 1's new-view (empty O set): the new entry records and applies its own inheritance
/// (genesis: no wait), the old one is neither applied nor kept by compaction.
#[test]
fn guard_a_crashed_entrys_inheritance_is_replaced_by_the_next_entry() {
    let mut log = vec![Durable::ViewChange(1), inherited(1, START_MS + HOUR_MS, 10)];
    let mut r = restarted(log.clone(), (0, GENESIS, 0), START_MS);
    assert_eq!((r.view(), r.in_view_change()), (1, true));
    step(&mut r, Input::Tick { now_ms: START_MS });
    let mut actions = Vec::new();
    r.step(
        msg(1, Message::NewView(new_view(1, &[0, 1, 3]))),
        &mut actions,
    )
    .unwrap();
    let step = persisted(&actions);
    assert_eq!(
        &step[..2],
        &[inherited(1, 0, 0), Durable::View(1)],
        "{step:?}"
    );
    log.extend(step);
    assert_eq!(censored_from(&mut r, 0, 80), NOT_OWED, "live");
    let mut whole = restarted(log.clone(), (0, GENESIS, 0), START_MS);
    assert_eq!(censored_from(&mut whole, 0, 80), NOT_OWED, "whole {log:?}");
    let mut compacted = log.clone();
    Durable::compact(&mut compacted);
    assert!(
        !compacted.contains(&inherited(1, START_MS + HOUR_MS, 10)),
        "{compacted:?}"
    );
    let mut small = restarted(compacted.clone(), (0, GENESIS, 0), START_MS);
    assert_eq!(censored_from(&mut small, 0, 80), NOT_OWED, "{compacted:?}");
}

/// Guard: while changing views, a crashed entry's `Inherited` (an hour ahead) extends nothing:
/// the new-view timer (started by 2f+1 view-changes) runs out at the same tick as without it,
/// also after a state transfer up to its recorded start.
#[test]
fn guard_a_crashed_entrys_inheritance_extends_no_view_change_timer() {
    let mut ticks = Vec::new();
    for log in [
        vec![Durable::ViewChange(1)],
        vec![Durable::ViewChange(1), inherited(1, START_MS + HOUR_MS, 10)],
    ] {
        let mut r = restarted(log, (0, GENESIS, 0), START_MS);
        step(&mut r, Input::Tick { now_ms: START_MS });
        step(&mut r, transferred_to(4));
        for from in [0u32, 1, 3] {
            step(
                &mut r,
                msg(from, Message::ViewChange(view_change(1, vec![]))),
            );
        }
        ticks.push(first_view_change(&mut r, 0, 400));
    }
    assert!(ticks[0].is_some(), "{ticks:?}");
    assert_eq!(ticks[0], ticks[1]);
}

/// Guard: a primary whose entry was cut after `Inherited(1)` restarts changing views, builds
/// the new-view again, and, once in, resends it to a stale view-change; after a restart from
/// the full entry's records it resends it too (`last_new_view` is read from the `NewView`
/// record, which still follows `View`).
#[test]
fn guard_a_primary_cut_after_the_inheritance_leads_its_view_again() {
    let primary = |durable: Vec<Durable>| {
        Replica::new(
            config(1, 4),
            Restored {
                now_ms: START_MS,
                durable,
                incarnation: 1,
                ..Restored::genesis(GENESIS, 0, 0)
            },
        )
    };
    let mut r = primary(vec![
        Durable::ViewChange(1),
        inherited(1, START_MS + HOUR_MS, 0),
    ]);
    assert!(r.in_view_change());
    step(&mut r, Input::Tick { now_ms: START_MS });
    let mut log = vec![Durable::ViewChange(1), inherited(1, START_MS + HOUR_MS, 0)];
    let mut sent_new_view = false;
    for from in [0u32, 2, 3] {
        let actions = step(
            &mut r,
            msg(from, Message::ViewChange(view_change(1, vec![]))),
        );
        sent_new_view |= actions
            .iter()
            .any(|a| matches!(a, Action::Broadcast(Message::NewView(nv)) if nv.view == 1));
        log.extend(persisted(&actions));
    }
    assert!(
        sent_new_view && !r.in_view_change() && r.view() == 1,
        "{log:?}"
    );
    for mut leader in [r, primary(log.clone()), {
        let mut c = log.clone();
        Durable::compact(&mut c);
        primary(c)
    }] {
        assert!(!leader.in_view_change());
        step(
            &mut leader,
            Input::Tick {
                now_ms: START_MS + 100,
            },
        );
        let mut actions = Vec::new();
        let _ = leader.step(
            msg(3, Message::ViewChange(view_change(1, vec![]))),
            &mut actions,
        );
        assert!(
            actions.iter().any(|a| matches!(
                a,
                Action::Send { to: 3, message: Message::NewView(nv) } if nv.view == 1
            )),
            "{log:?}: {actions:?}"
        );
    }
}

// ----- amnesia: into a later view only through enter_view ----------------------------------

/// Guard: a replica that lost its records restarts in view 0 (no inheritance) while the cluster
/// is in view 1, and reaches view 1 in normal status only through `enter_view`: its records
/// then hold `Inherited(1)` right before `View(1)`.
#[test]
fn guard_amnesia_reaches_a_later_view_through_enter_view() {
    let mut c = Cluster::new(4);
    let silent = std::rc::Rc::new(std::cell::Cell::new(false));
    let s = silent.clone();
    c.filter = Box::new(move |from, _, m| {
        if s.get() && from == 0 && matches!(m, Message::PrePrepare(_)) {
            return None;
        }
        Some(m)
    });
    c.tick_all(1);
    commit_block(&mut c, 1);
    silent.set(true);
    for id in 0..4 {
        c.input(id, Input::Request(request(2)));
    }
    c.run();
    for _ in 0..200 {
        c.tick_all(1);
        if (0..4).all(|id| c.replicas[id].view() >= 1 && !c.replicas[id].in_view_change()) {
            break;
        }
    }
    let view = c.replicas[3].view();
    assert!(view >= 1 && !c.replicas[3].in_view_change());
    silent.set(false);
    lose_state(&mut c, 3, 1);
    assert_eq!(c.replicas[3].view(), 0);
    recover(&mut c, 3, 10);
    let mut entered = false;
    for _ in 0..200 {
        if c.replicas[3].view() == c.replicas[0].view() && !c.replicas[3].in_view_change() {
            entered = true;
            break;
        }
        commit_block(&mut c, 50);
        c.tick_all(3);
    }
    assert!(entered, "replica 3 in view {}", c.replicas[3].view());
    let d = &c.durable[3];
    let v = c.replicas[3].view();
    let at = d
        .iter()
        .rposition(|r| *r == Durable::View(v))
        .unwrap_or_else(|| panic!("no View({v}) in {d:?}"));
    assert!(
        at > 0 && matches!(d[at - 1], Durable::Inherited { view, .. } if view == v),
        "{d:?}"
    );
}
