//! Red team s14: cut coalescing (`Config::cut_in_flight`).
use crate::common;

use common::*;
use pbft::*;

fn pre_prepares(c: &Cluster) -> Vec<Vec<Digest>> {
    c.sent[0]
        .iter()
        .filter_map(|m| match m {
            Message::PrePrepare(pp) => Some(pp.proposal.requests.iter().map(|r| r.id).collect()),
            _ => None,
        })
        .collect()
}

/// Four replicas whose batch window (1,000 ticks) is far longer than the tests run, so that
/// only a cut or a full batch proposes; `max_in_flight` as given, or the test default.
fn slow_window_cluster(max_in_flight: Option<u64>) -> Cluster {
    let mut c = Cluster::new(4);
    c.replicas = (0..4)
        .map(|i| {
            let default = config(i, 4);
            let cfg = Config {
                max_in_flight: max_in_flight.unwrap_or(default.max_in_flight),
                batch_window_ticks: 1_000,
                view_change_timeout_ticks: 10_000,
                ..default
            };
            Replica::new(cfg, Restored::genesis(GENESIS, 0, 0))
        })
        .collect();
    c
}

/// A cut that comes while the pipeline is full (`max_in_flight` sequence numbers in flight)
/// must wait for an execution like one that comes while fewer are in flight, not be dropped:
/// otherwise its request waits out the whole batch window although the pipeline went idle
/// (`Config::cut_in_flight`: "otherwise it is honoured when one executes"). With
/// `max_in_flight = 1`, every cut that comes while a block is in flight was lost.
#[test]
fn red_team_s14_a_cut_that_finds_the_pipeline_full_is_honoured_when_it_drains() {
    let mut c = slow_window_cluster(Some(1));
    c.input(0, Input::Request(request(1)));
    c.input(0, Input::Cut);
    assert_eq!(pre_prepares(&c).len(), 1, "an idle pipeline: at once");
    c.input(0, Input::Request(request(2)));
    c.input(0, Input::Cut);
    assert_eq!(
        pre_prepares(&c).len(),
        1,
        "block 1 is in flight: the cut waits"
    );
    c.run();
    assert_eq!(c.executed_ids(1), vec![request(1).id, request(2).id]);
    assert_eq!(
        pre_prepares(&c),
        vec![vec![request(1).id], vec![request(2).id]],
        "block 1 executed: the cut that waited must propose request 2 now, not after the \
         batch window"
    );
}

/// The same with the default pipeline depth of the test configuration (3): two full batches
/// behind the cut's block fill it; a cut that comes then is honoured once the pipeline drains.
#[test]
fn red_team_s14_a_cut_behind_full_batches_is_honoured_when_the_pipeline_drains() {
    let mut c = slow_window_cluster(None);
    c.input(0, Input::Request(request(1)));
    c.input(0, Input::Cut);
    for i in 2..=5 {
        c.input(0, Input::Request(request(i))); // two full batches (max_batch = 2)
    }
    assert_eq!(
        pre_prepares(&c).len(),
        3,
        "max_in_flight = 3: the pipeline is full"
    );
    c.input(0, Input::Request(request(6)));
    c.input(0, Input::Cut);
    c.run();
    assert_eq!(c.executed[1].len(), 4, "{:?}", pre_prepares(&c));
    assert_eq!(c.executed_ids(1).last(), Some(&request(6).id));
}

/// A cut held back until now and honoured with a full batch keeps waiting for what that
/// batch left behind, as a cut honoured at once does (`try_propose`: "A cut waits on for what
/// a full batch left behind"). Here the cut waits behind a block in flight and then behind the
/// watermark window (checkpoints held back); when the window moves, the first batch is full,
/// and the request left over must go after the next execution, not after the batch window.
#[test]
fn red_team_s14_a_held_back_cut_honoured_with_a_full_batch_keeps_its_leftovers() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let mut c = slow_window_cluster(None);
    let held: Rc<RefCell<Vec<(ReplicaId, ReplicaId, Message)>>> = Rc::default();
    let stash = held.clone();
    c.filter = Box::new(move |from, to, m| {
        if matches!(m, Message::Checkpoint(_)) {
            stash.borrow_mut().push((from, to, m));
            return None;
        }
        Some(m)
    });
    // Blocks 1..=6, full batches of two (max_batch = 2).
    for i in 0..6u8 {
        c.input(0, Input::Request(request(2 * i + 1)));
        c.input(0, Input::Request(request(2 * i + 2)));
        c.run();
    }
    assert_eq!(c.executed[1].len(), 6);
    c.input(0, Input::Request(request(13)));
    c.input(0, Input::Cut); // idle: block 7 at once
    c.input(0, Input::Request(request(14)));
    c.input(0, Input::Cut); // block 7 in flight: held back
    c.input(0, Input::Request(request(15))); // a full batch: block 8
    for i in 16..=18 {
        c.input(0, Input::Request(request(i))); // the window (L = 8) is full
    }
    c.run();
    assert_eq!(c.executed[1].len(), 8);
    // The checkpoints at 4 and 8 arrive: the window moves and the held-back cut goes.
    for (from, to, m) in held.borrow_mut().drain(..) {
        c.queue.push_back((to, signed(from, m)));
    }
    c.filter = Box::new(|_, _, m| Some(m));
    c.run();
    assert_eq!(
        c.executed_ids(1)[15..],
        [request(16).id, request(17).id, request(18).id],
        "request 18, left over from the full batch of the cut, must follow block 9"
    );
}
