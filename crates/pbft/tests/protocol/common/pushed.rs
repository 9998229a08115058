//! The red teams' scenario of a time pushed to the edge (red teams s32-s38 of the inherited
//! wait, pbft's crate docs "Timers"), and their helpers for restarts and timers.
use std::cell::Cell;
use std::rc::Rc;

use pbft::*;

use super::*;

pub const TOLERANCE_MS: u64 = DEFAULT_BLOCK_TIME_TOLERANCE_MS;
pub const START_MS: u64 = 100_000;

pub fn view_changes_to(c: &Cluster, id: ReplicaId, view: View) -> bool {
    c.sent[id as usize]
        .iter()
        .any(|m| matches!(m, Message::ViewChange(vc) if vc.new_view == view))
}

/// The caller's state transfer of `source`'s executed blocks up to `seq` to `id` (a node may
/// fetch as soon as it sees the stable checkpoint; the core asks only after `retransmit_ticks`).
pub fn transfer(c: &mut Cluster, id: ReplicaId, source: ReplicaId, seq: SeqNo) {
    let have = c.replicas[id as usize].last_executed().0;
    let blocks: Vec<Committed> = c.executed[source as usize]
        .iter()
        .filter(|b| b.proposal.seq > have && b.proposal.seq <= seq)
        .cloned()
        .collect();
    let Some(last) = blocks.last() else { return };
    let (seq, digest, time_ms) = (last.proposal.seq, last.digest, last.proposal.time_ms);
    let request_ids = blocks
        .iter()
        .flat_map(|b| b.proposal.requests.iter().map(|r| r.id))
        .collect();
    c.executed[id as usize].extend(blocks);
    c.input(
        id,
        Input::StateTransferred {
            seq,
            digest,
            time_ms,
            request_ids,
        },
    );
    c.run();
}

/// Replica 0 is Byzantine: its clock runs τ - 10 ms ahead and it runs a view-change timeout of
/// one tick (a faulty replica may run any configuration: it asks for the next view as soon as
/// it has a request pending). As view 0's primary it pushes the times of blocks 1..=4 to the
/// edge; if `leave_out_3`, it sends their pre-prepares to replicas 1 and 2 only: 0, 1, 2
/// commit and execute them and checkpoint 4 becomes stable, while replica 3 (correct, only
/// left behind) executed nothing. Then replica 0 proposes nothing more; request 5 is pending
/// at every replica. The others' timeout is 2 ticks (200 ms, below τ/2 as in the simulator);
/// clocks run at 100 ms a tick from now on.
pub fn pushed_checkpoint(leave_out_3: bool) -> Cluster {
    let mut c = Cluster::configured(4, |cfg| cfg.view_change_timeout_ticks = 2);
    c.replicas[0] = Replica::new(
        Config {
            view_change_timeout_ticks: 1,
            ..config(0, 4)
        },
        Restored::genesis(GENESIS, 0, 0),
    );
    c.clocks_ms = vec![START_MS; 4];
    c.clocks_ms[0] += TOLERANCE_MS - 10;
    let primary_silent = Rc::new(Cell::new(false));
    let silent = primary_silent.clone();
    c.filter = Box::new(move |from, to, m| {
        let pre_prepare = matches!(m, Message::PrePrepare(ref pp) if pp.view == 0);
        let forward = matches!(m, Message::Forward(_));
        if from == 0 && pre_prepare && ((leave_out_3 && to == 3) || silent.get()) {
            return None;
        }
        if to == 0 && forward && silent.get() {
            return None;
        }
        Some(m)
    });
    c.tick_all(1);
    for i in 1..=4 {
        c.input(0, Input::Request(request(i)));
        c.input(0, Input::Cut);
        c.run();
    }
    for id in 0..3 {
        assert_eq!(c.executed[id].len(), 4, "replica {id}");
        assert_eq!(c.replicas[id].stable_checkpoint().0, 4, "replica {id}");
    }
    assert!(c.head_time_ms(1) > START_MS + TOLERANCE_MS - 20);
    assert_eq!(c.executed[3].is_empty(), leave_out_3);
    primary_silent.set(true);
    for id in 0..4 {
        c.input(id, Input::Request(request(5)));
    }
    c.run();
    c.ms_per_tick = 100;
    c
}

/// Backup 2 of 4 restarted from `durable` with its ledger head `head` (seq, digest, time), its
/// clock at `now_ms`.
pub fn restarted(durable: Vec<Durable>, head: (SeqNo, Digest, u64), now_ms: u64) -> Replica {
    Replica::new(
        config(2, 4),
        Restored {
            now_ms,
            last_executed: (head.0, head.1),
            head_time_ms: head.2,
            durable,
            incarnation: 1,
            ..Restored::genesis(GENESIS, 0, 0)
        },
    )
}

/// Request 9 arrives at `from_tick` (clock START + 100 ms a tick) and is never executed; the
/// (absolute) tick of the backup's first view-change, if any, up to `until_tick`.
pub fn censored_from(backup: &mut Replica, from_tick: u64, until_tick: u64) -> Option<u64> {
    step(
        backup,
        Input::Tick {
            now_ms: START_MS + from_tick * 100,
        },
    );
    step(backup, Input::Request(request(9)));
    first_view_change(backup, from_tick, until_tick)
}

pub fn first_view_change(backup: &mut Replica, from_tick: u64, until_tick: u64) -> Option<u64> {
    for tick in from_tick + 1..=until_tick {
        let now_ms = START_MS + tick * 100;
        let actions = step(backup, Input::Tick { now_ms });
        if !view_changes_broadcast(&actions).is_empty() {
            return Some(tick);
        }
    }
    None
}

pub fn persisted(actions: &[Action]) -> Vec<Durable> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Persist(d) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

pub fn inherited(view: View, time_ms: u64, seq: SeqNo) -> Durable {
    Durable::Inherited { view, time_ms, seq }
}

/// Whether view 1's correct primary (replica 1) kept its view and executed request 5 at
/// replicas 1..=3.
pub fn primary_kept_view_1(c: &Cluster) -> Result<(), String> {
    for id in 1..4 {
        if c.replicas[id].view() != 1 || !c.executed_ids(id as ReplicaId).contains(&request(5).id) {
            return Err(format!(
                "replica {id} in view {}: view 1's correct primary was replaced (replica 3 asked \
                 for view 2: {})",
                c.replicas[id].view(),
                view_changes_to(c, 3, 2)
            ));
        }
    }
    Ok(())
}

/// Red team s35 F3's run on [`pushed_checkpoint`]`(true)`: replica 3 (left behind) crashes
/// right after entering view 1 and restarts from `keep(its records)`; the state transfer of
/// block 4 comes after the restart, or (`transfer_first`) before the crash, its ledger then
/// restored with block 4 as its head. Then [`primary_kept_view_1`].
pub fn crash_after_entering_view_1(
    keep: impl Fn(Vec<Durable>) -> Vec<Durable>,
    transfer_first: bool,
) -> Result<(), String> {
    let mut c = pushed_checkpoint(true);
    let mut entered = false;
    for _ in 0..40u64 {
        c.tick_all(1);
        if !entered && c.replicas[3].view() == 1 && !c.replicas[3].in_view_change() {
            entered = true;
            if transfer_first {
                transfer(&mut c, 3, 1, 4);
            }
            let head = c.executed[3].last().map_or((0, GENESIS, 0), |b| {
                (b.proposal.seq, b.digest, b.proposal.time_ms)
            });
            c.replicas[3] = Replica::new(
                Config {
                    view_change_timeout_ticks: 2,
                    ..config(3, 4)
                },
                Restored {
                    now_ms: c.clocks_ms[3],
                    last_executed: (head.0, head.1),
                    head_time_ms: head.2,
                    durable: keep(c.durable[3].clone()),
                    incarnation: 1,
                    ..Restored::genesis(GENESIS, 0, 0)
                },
            );
            c.input(3, Input::Request(request(5)));
            c.run();
            if !transfer_first {
                transfer(&mut c, 3, 1, 4);
            }
        }
    }
    assert!(entered, "replica 3 entered view 1");
    assert!(
        c.replicas[3].last_executed().0 >= 4,
        "replica 3 fetched checkpoint 4"
    );
    primary_kept_view_1(&c)
}
