//! Red team s60, on facbe378 (contract item 13: the primary that sends a new-view proposes
//! nothing in that step; its next input proposes, stamped by that input's clock).
use std::cell::RefCell;
use std::rc::Rc;

use crate::common;

use common::*;
use pbft::*;

const TOLERANCE_MS: u64 = DEFAULT_BLOCK_TIME_TOLERANCE_MS;
/// What the node took, in the incident, to persist and send a new-view of 45 full batches
/// plus the backups' check of it: more than τ.
const NEW_VIEW_DELAY_MS: u64 = 3 * TOLERANCE_MS / 2;
const START_MS: u64 = 1_000_000;

/// The fresh pre-prepares (not re-issued: proposed in `view` itself) among `messages`.
fn fresh(messages: &[Message], view: View) -> Vec<PrePrepare> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::PrePrepare(pp) if pp.view == view && pp.proposal.view == view => {
                Some(pp.clone())
            }
            _ => None,
        })
        .collect()
}

/// The messages a filter kept back, by sender.
type Held = Rc<RefCell<Vec<(ReplicaId, Message)>>>;

/// As in the incident (BENCHMARKS.md, "twenty-ninth"): view 0 committed and executed three
/// full batches (seq 1-3) above the stable checkpoint (genesis; the next is at 4), so every
/// view-change carries them, prepared, and the next new-view re-issues them; two more
/// requests wait at the backups, which primary 0 never hears of (their forwards to it are
/// lost). View 0 times out and replica 1 enters view 1 with an O set of the three. What
/// replica 1 sends from then on is held (see `release`), as its node persisting and sending a
/// large new-view holds it: nothing of view 1 from replica 1 reached anyone yet, and replica 1
/// stepped no input of its own after the step that built its new-view.
fn entered_view_1_with_an_o_set() -> (Cluster, Held) {
    let mut c = Cluster::new(4);
    c.clocks_ms = vec![START_MS; 4];
    c.ms_per_tick = 10;
    let held: Held = Rc::default();
    let holding = Rc::new(RefCell::new(false));
    {
        let (held, holding) = (held.clone(), holding.clone());
        c.filter = Box::new(move |from, to, m| {
            if to == 0 && matches!(&m, Message::Forward(_)) {
                return None;
            }
            if from == 1 && *holding.borrow() {
                held.borrow_mut().push((to, m));
                return None;
            }
            Some(m)
        });
    }
    for i in 1..=6 {
        for id in 0..4 {
            c.input(id, Input::Request(request(i)));
        }
        c.run();
    }
    for id in 0..4 {
        let seqs: Vec<SeqNo> = c.executed[id].iter().map(|b| b.proposal.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3], "view 0 executed three batches at {id}");
    }
    for i in 7..=8 {
        for id in 1..4 {
            c.input(id, Input::Request(request(i)));
        }
        c.run();
    }
    *holding.borrow_mut() = true;
    let mut ticks = 0;
    while c.replicas[1].view() != 1 || c.replicas[1].in_view_change() {
        c.tick_all(1);
        ticks += 1;
        assert!(ticks < 500, "no view 1");
    }
    *holding.borrow_mut() = false;
    (c, held)
}

/// The new-view replica 1 built, from what it holds back.
fn held_new_view(held: &Rc<RefCell<Vec<(ReplicaId, Message)>>>) -> NewView {
    held.borrow()
        .iter()
        .find_map(|(_, m)| match m {
            Message::NewView(nv) => Some(nv.clone()),
            _ => None,
        })
        .expect("replica 1 broadcast a new-view")
}

/// Every clock moves on by `ms` (a node's persist and send of the new-view, the network):
/// replica 1's next inputs (the backups' forwards, its tick) are stepped at its clock then.
fn clocks_move_on(c: &mut Cluster, ms: u64) {
    for id in 0..4u32 {
        c.clocks_ms[id as usize] += ms;
        let now_ms = c.clocks_ms[id as usize];
        // The node reads its clock before each input it steps (`Runtime::step`).
        c.input(id, Input::Clock { now_ms });
    }
}

/// Delivers what replica 1 held back, in order, ahead of anything it sends from now on.
fn release(c: &mut Cluster, held: &Rc<RefCell<Vec<(ReplicaId, Message)>>>) {
    for (to, m) in held.borrow_mut().drain(..) {
        c.queue.push_back((to, signed(1, m)));
    }
}

/// Attack 1/3 at the protocol level: a view change with an O set of three full batches; the
/// new-view reaches the backups `NEW_VIEW_DELAY_MS` (> τ) after the new primary built it
/// (persisted, sent, read). The first fresh batch, proposed on the primary's next input, is
/// stamped then, every backup prepares it, and it commits in view 1. Fails on facbe378^: the
/// batch was proposed in the new-view's own step, stamped > τ before the backups judge it,
/// and every backup withholds its prepare.
#[test]
fn red_team_s60_first_batch_after_a_large_o_set_is_prepared_by_backups_whose_clocks_moved_on() {
    let (mut c, held) = entered_view_1_with_an_o_set();
    let nv = held_new_view(&held);
    assert_eq!(
        nv.pre_prepares.len(),
        3,
        "the O set: the three prepared batches"
    );
    let built_ms = c.clocks_ms[1];
    clocks_move_on(&mut c, NEW_VIEW_DELAY_MS);
    // The backups read the new-view and forward their requests to the new primary, whose
    // next inputs (those forwards, then a tick) come after its node performed the new-view's
    // actions (`send_new_view_first`): each is stepped at its clock then.
    release(&mut c, &held);
    c.run();
    c.input(
        1,
        Input::Tick {
            now_ms: c.clocks_ms[1],
        },
    );
    c.run();
    let first = fresh(&c.sent[1], 1);
    assert!(!first.is_empty(), "the new primary proposed");
    assert_eq!(first[0].proposal.seq, 4, "after the O set");
    for b in [0, 2, 3] {
        assert_eq!(
            c.replicas[b as usize].log_stats().withheld_prepares,
            0,
            "backup {b} withheld a prepare"
        );
    }
    assert!(
        first[0].proposal.time_ms >= built_ms + NEW_VIEW_DELAY_MS,
        "stamped after the new-view went out: {} (built at {built_ms})",
        first[0].proposal.time_ms
    );
    c.tick_all(5);
    for id in 0..4 {
        let seqs: Vec<SeqNo> = c.executed[id].iter().map(|b| b.proposal.seq).collect();
        assert_eq!(
            seqs,
            vec![1, 2, 3, 4],
            "replica {id} executed the O set and the batch"
        );
    }
    assert!(c.views().iter().all(|v| *v == (1, false)), "view 1 held");
}

/// Attack 1: nothing else arrives at the new primary after its new-view (no request, no
/// message, its stores slow) but ticks: the first tick proposes, cut or not, and a kept cut
/// (`cut_waiting`) is honoured by it even when the primary's first input after the new-view
/// is one that proposes nothing (a clock read, a withdrawal of nothing).
#[test]
fn red_team_s60_a_new_primary_whose_next_inputs_propose_nothing_still_proposes_at_its_tick() {
    let mut cfg = config(1, 4);
    cfg.batch_window_ticks = 1_000; // only a cut (or a full batch) proposes
    let mut r = Replica::new(cfg, Restored::genesis(GENESIS, 1_000, 5_000));
    step(&mut r, Input::Request(request(9)));
    let vc = |from| msg(from, Message::ViewChange(view_change(1, vec![])));
    step(&mut r, vc(2));
    step(&mut r, vc(3));
    assert!(r.in_view_change());
    assert!(step(&mut r, Input::Cut).is_empty(), "kept for view 1");
    let entered = step(&mut r, vc(1));
    assert!(r.is_primary() && !r.in_view_change());
    assert!(
        entered
            .iter()
            .all(|a| !matches!(a, Action::Broadcast(Message::PrePrepare(_))))
    );
    let later_ms = 5_000 + 2 * TOLERANCE_MS;
    assert!(step(&mut r, Input::Clock { now_ms: later_ms }).is_empty());
    let nothing = step(&mut r, Input::Withdraw(vec![[77; 32]]));
    assert!(
        nothing
            .iter()
            .all(|a| !matches!(a, Action::Broadcast(Message::PrePrepare(_)))),
        "a withdrawal proposes nothing"
    );
    // A 4th view-change (stale) is answered with the new-view, still nothing proposed.
    let answered = step(&mut r, vc(0));
    assert!(answered.iter().any(|a| matches!(
        a,
        Action::Send {
            to: 0,
            message: Message::NewView(_)
        }
    )));
    assert!(
        answered
            .iter()
            .all(|a| !matches!(a, Action::Broadcast(Message::PrePrepare(_))))
    );
    let tick = step(&mut r, Input::Tick { now_ms: later_ms });
    let pps: Vec<&PrePrepare> = tick
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast(Message::PrePrepare(pp)) => Some(pp),
            _ => None,
        })
        .collect();
    assert_eq!(pps.len(), 1, "the kept cut, at the first tick");
    assert_eq!(pps[0].proposal.requests, vec![request(9)]);
    assert_eq!(pps[0].proposal.time_ms, later_ms);
}

/// Attack 1, restart: the new primary persisted its new-view (and the O set) and crashed
/// before sending it. Restored from its records it is primary of view 1 in normal status; its
/// first tick resends the O set's pre-prepares (not the new-view), and each backup's
/// view-change for view 1 is answered with the persisted new-view. Once the O set executes,
/// the restored primary proposes after it (never reassigning one of its sequence numbers),
/// stamped by its clock then, and every replica executes it in view 1.
#[test]
fn red_team_s60_a_primary_restarted_after_persisting_its_new_view_proposes_after_the_o_set() {
    let (mut c, held) = entered_view_1_with_an_o_set();
    let nv = held_new_view(&held);
    assert!(
        fresh(&c.sent[1], 1).is_empty(),
        "nothing proposed in the new-view's step"
    );
    held.borrow_mut().clear(); // lost with the crash
    let restart_ms = c.clocks_ms[1] + NEW_VIEW_DELAY_MS;
    c.replicas[1] = Replica::new(
        config(1, 4),
        Restored {
            last_executed: (3, c.executed[1][2].digest),
            executed_checkpoint: None,
            head_time_ms: c.executed[1][2].proposal.time_ms,
            now_ms: restart_ms,
            durable: c.durable[1].clone(),
            recovering: false,
            nonce: 0,
            incarnation: 0,
        },
    );
    assert_eq!(c.replicas[1].view(), 1);
    assert!(c.replicas[1].is_primary() && !c.replicas[1].in_view_change());
    clocks_move_on(&mut c, NEW_VIEW_DELAY_MS);
    // Its node resubmits the requests it acknowledged and its chain lacks (`Runtime::resume`).
    for i in 7..=8 {
        c.input(1, Input::Request(request(i)));
    }
    let sent_before = c.sent[1].len();
    c.input(
        1,
        Input::Tick {
            now_ms: c.clocks_ms[1],
        },
    );
    assert!(
        c.sent[1][sent_before..]
            .iter()
            .all(|m| !matches!(m, Message::NewView(_))),
        "no new-view broadcast at a restart: only in answer to view-changes"
    );
    c.run();
    for b in [0u32, 2, 3] {
        assert!(
            c.replicas[b as usize].in_view_change(),
            "backup {b} has no new-view"
        );
        let vc = c.sent[b as usize]
            .iter()
            .rev()
            .find_map(|m| match m {
                Message::ViewChange(vc) if vc.new_view == 1 => Some(vc.clone()),
                _ => None,
            })
            .expect("its view-change");
        let before = c.sent[1].len();
        c.input(1, msg(b, Message::ViewChange(vc)));
        assert!(
            c.sent[1][before..]
                .iter()
                .any(|m| matches!(m, Message::NewView(sent) if *sent == nv)),
            "the persisted new-view, to backup {b}"
        );
        c.run();
    }
    c.tick_all(5);
    let first = fresh(&c.sent[1], 1);
    assert!(!first.is_empty(), "the restored primary proposes");
    assert_eq!(first[0].proposal.seq, 4, "after the O set");
    assert_eq!(first[0].proposal.prev, nv.pre_prepares[2].digest);
    assert!(first[0].proposal.time_ms >= restart_ms);
    for id in 0..4 {
        let seqs: Vec<SeqNo> = c.executed[id].iter().map(|b| b.proposal.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4], "replica {id}");
    }
    for b in [0, 2, 3] {
        assert_eq!(c.replicas[b].log_stats().withheld_prepares, 0);
    }
}

/// Attack 4, sizes: a new-view carries its O set and, inside its 2f+1 view-changes, every
/// prepared batch again: with all three view-changes prepared over the same batches, the
/// new-view is four times its O set (plus votes). At the defaults (n = 4, L = 128, batches
/// of 1,000, transactions of ~571 bytes, requests ~615 bytes) a new-view tops 300 MB.
#[test]
fn red_team_s60_a_new_view_weighs_its_o_set_times_2f_plus_2() {
    let (_c, held) = entered_view_1_with_an_o_set();
    let nv = held_new_view(&held);
    let o_set: usize = nv
        .pre_prepares
        .iter()
        .map(|pp| borsh::to_vec(pp).unwrap().len())
        .sum();
    let carried: usize = nv
        .view_changes
        .iter()
        .flat_map(|vc| vc.message.prepared.iter())
        .map(|cert| borsh::to_vec(&cert.pre_prepare).unwrap().len())
        .sum();
    let whole = borsh::to_vec(&Message::NewView(nv.clone())).unwrap().len();
    assert_eq!(nv.view_changes.len(), 3);
    assert_eq!(
        carried,
        3 * o_set,
        "each view-change carries the whole O set again"
    );
    assert!(whole >= 4 * o_set, "{whole} bytes for an O set of {o_set}");
}
