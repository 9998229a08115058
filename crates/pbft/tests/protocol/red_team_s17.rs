//! Red team s17: cuts after b2c71c85 ("a cut that finds the pipeline full waits instead of
//! being dropped; a held-back cut keeps the leftovers of a full batch").
//!
//! FINDING tests failed on the code under review (fixed since: a cut at the incoming primary
//! is kept for its view; an honoured cut no longer waits on behind the clock); ATTACK-FAILED
//! tests pin down an attack that did not work.
use crate::common;

/// A message held back in flight: from, to, what.
type Held = (ReplicaId, ReplicaId, Message);

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;

use common::*;
use pbft::*;

/// Every pre-prepare `id` sent, as (view, seq, request ids).
fn pre_prepares_of(c: &Cluster, id: ReplicaId) -> Vec<(View, SeqNo, Vec<Digest>)> {
    c.sent[id as usize]
        .iter()
        .filter_map(|m| match m {
            Message::PrePrepare(pp) => Some((
                pp.view,
                pp.proposal.seq,
                pp.proposal.requests.iter().map(|r| r.id).collect(),
            )),
            _ => None,
        })
        .collect()
}

/// n replicas with the test configuration, changed by `f`.
fn cluster_with(n: u32, f: impl Fn(Config) -> Config) -> Cluster {
    let mut c = Cluster::new(n);
    c.replicas = (0..n)
        .map(|i| Replica::new(f(config(i, n)), Restored::genesis(GENESIS, 0, 0)))
        .collect();
    c
}

/// A request with a 16-bit id (the common `request` has only 255).
fn req(i: u16) -> Request {
    let mut id = [0xAB; 32];
    id[..2].copy_from_slice(&i.to_be_bytes());
    Request {
        id,
        timestamp_ms: u64::from(i),
        payload: Arc::from(i.to_be_bytes().to_vec()),
    }
}

// ----- FINDING 1 -------------------------------------------------------------------------

/// FINDING (medium, liveness/latency). A cut that reaches the primary of view v+1 while it is
/// still changing to v+1 (status view-change) is dropped outright (`Input::Cut` is ignored
/// unless `status == Normal`), and nothing of it is remembered: once the new view starts, the
/// requests the cut was for wait out the whole batch window (the node's default is 6 s),
/// although the pipeline of the new view is empty. This is the very failure b2c71c85 fixed
/// for a full pipeline ("dropped, its requests would wait out the batch window however soon
/// the pipeline drains"), on another path. It is not a corner case for the node: during a
/// view change `Replica::is_primary()` already answers for the new view, so the node's
/// `propose_now` steps `Input::Cut` into the incoming primary itself, and every backup's node
/// sends its `Wire::Cut` frame there too: every cut issued during a view change is lost.
///
/// Scenario (n = 7, so that the incoming primary waits in view-change status for the quorum
/// of view-changes after it joined by the f+1 rule): the primary of view 0 is down; replicas
/// 2..6 time out on request 1 and move to view 1; replica 1 joins, but two view-changes are
/// slow to reach it. Meanwhile a client submits request 2 to replica 1's node and asks for a
/// block now (`/api/validate`: `Input::Cut`). The view-changes arrive, view 1 starts with an
/// empty pipeline, the backups forward request 1: nothing is proposed for the 1,000-tick
/// batch window. Expected: request 2 proposed as soon as view 1 starts.
#[test]
fn red_team_s17_a_cut_at_the_incoming_primary_during_a_view_change_is_kept_for_its_view() {
    // As the node configures it, the view-change timer outlasts the batch window.
    let mut c = cluster_with(7, |cfg| Config {
        max_batch: 8,
        batch_window_ticks: 1_000,
        view_change_timeout_ticks: 1_500,
        ..cfg
    });
    c.up[0] = false;
    let held: Rc<RefCell<Vec<Held>>> = Rc::default();
    let stash = held.clone();
    c.filter = Box::new(move |from, to, m| {
        if to == 1 && from >= 5 && matches!(m, Message::ViewChange(_)) {
            stash.borrow_mut().push((from, to, m));
            return None;
        }
        Some(m)
    });
    for id in 2..=6 {
        c.input(id, Input::Request(request(1)));
    }
    c.run();
    let mut ticks = 0;
    while !c.replicas[1].in_view_change() {
        c.tick_all(1);
        ticks += 1;
        assert!(ticks < 2_000, "no view change");
    }
    assert_eq!(c.replicas[1].view(), 1);
    assert!(
        c.replicas[1].is_primary(),
        "the primary of the view it changes to"
    );
    // A client of replica 1's node: a request, and a block now please.
    c.input(1, Input::Request(request(2)));
    c.input(1, Input::Cut);
    // The view change completes.
    c.filter = Box::new(|_, _, m| Some(m));
    for (from, to, m) in held.borrow_mut().drain(..) {
        c.queue.push_back((to, signed(from, m)));
    }
    c.run();
    assert!(!c.replicas[1].in_view_change() && c.replicas[1].view() == 1);
    // How long the requests then wait for their proposal.
    let mut waited = 0;
    while pre_prepares_of(&c, 1).is_empty() && waited < 2_000 {
        c.tick_all(1);
        waited += 1;
    }
    let pps = pre_prepares_of(&c, 1);
    eprintln!("view change after {ticks} ticks; proposal {waited} ticks after view 1: {pps:?}");
    // The cut was for what replica 1 held when it came (request 2). The new primary proposes
    // on its first input after the new-view (pbft's contract item 13): here a backup's
    // forward, which brings request 1 into the same batch.
    let (seq, view, ids) = &pps[0];
    assert_eq!((*seq, *view), (1, 1));
    assert_eq!(
        ids.first(),
        Some(&request(2).id),
        "the request the cut was for, at once"
    );
    assert!(
        waited <= 3,
        "the cut came while replica 1 was about to lead view 1: its requests must be proposed \
         as soon as view 1 starts (its pipeline is empty), not {waited} ticks later (the \
         1,000-tick batch window)"
    );
}

// ----- FINDING 2 -------------------------------------------------------------------------

/// Four replicas whose genesis block time is `genesis_time_ms` and whose clocks read
/// `clock_ms`; a batch window far longer than the test.
fn timed_cluster(genesis_time_ms: u64, clock_ms: u64) -> Cluster {
    let mut c = Cluster::new(4);
    c.replicas = (0..4)
        .map(|i| {
            let cfg = Config {
                batch_window_ticks: 1_000,
                view_change_timeout_ticks: 10_000,
                ..config(i, 4)
            };
            Replica::new(cfg, Restored::genesis(GENESIS, genesis_time_ms, clock_ms))
        })
        .collect();
    c.clocks_ms = vec![clock_ms; 4];
    c
}

/// FINDING (low, batching). A cut that was honoured at once, its batch not full (nothing left
/// over), is kept as a waiting cut when the next round of the same `try_propose` loop finds
/// the block time must wait for the clock (`proposal_time() == None`): that branch does
/// `cut_waiting |= cut` with the caller's `cut`, without the `!proposed` that b2c71c85 added
/// to the full-pipeline branch for exactly this reason. The phantom cut then proposes, at
/// once, a later request that no cut was made for, instead of letting it wait for its batch
/// window or a full batch: one extra small block per such cut, the thing `cut_in_flight`
/// exists to prevent. The control (the same sequence with a clock that allows the next block
/// time) shows the intended behaviour: the later request waits.
///
/// Setup: the genesis time is τ/2 - 1 ms ahead of every clock (a faulty primary pushed block
/// times to the edge, `block_time.rs`), so exactly one block can be proposed before the
/// clock moves.
#[test]
fn red_team_s17_an_honoured_cut_does_not_stay_waiting_when_the_clock_holds_the_next_block_back() {
    let clock = 100_000;
    let margin = DEFAULT_BLOCK_TIME_TOLERANCE_MS / 2;
    for (genesis_time, phantom_possible) in [(clock - 10, false), (clock + margin - 1, true)] {
        let mut c = timed_cluster(genesis_time, clock);
        c.input(0, Input::Request(request(1)));
        c.input(0, Input::Cut);
        assert_eq!(
            pre_prepares_of(&c, 0).len(),
            1,
            "an idle pipeline: the cut goes at once"
        );
        // A later request, for which no cut comes; block 1 executes; one tick (1 ms) later.
        c.input(0, Input::Request(request(2)));
        c.run();
        assert_eq!(c.executed_ids(0), vec![request(1).id]);
        c.ms_per_tick = 1;
        c.tick_all(1);
        let pps = pre_prepares_of(&c, 0);
        assert_eq!(
            pps.len(),
            1,
            "genesis time {genesis_time} (clock {clock}, so the clock held block 2 back: \
             {phantom_possible}): request 2 came after the only cut, which was honoured in \
             full; it must wait for its batch window (1,000 ticks) or a full batch, not go \
             alone one tick later as if cut: {pps:?}"
        );
    }
}

// ----- ATTACK FAILED (benign leak): stale cut state across view changes ------------------

/// ATTACK-FAILED (recorded; kept by design: a cut lives until honoured, `Replica::cut_waiting`).
/// `cut_waiting` is not cleared by a view change
/// (`start_view_change`/`enter_view` leave it alone): a cut held back in view 0 by replica 0
/// survives views 1..3 (which fail) and fires in view 4, when replica 0 leads again, long
/// before the batch window. What it fires for is the request it was for (still pending), so
/// it only honours, late, what the client asked: no proposal in a view replica 0 does not
/// lead, no request twice, no empty block, nothing above max_batch or max_in_flight.
#[test]
fn red_team_s17_attack_failed_a_held_cut_carried_across_view_changes_proposes_nothing_wrong() {
    let mut c = cluster_with(4, |cfg| Config {
        max_in_flight: 1,
        batch_window_ticks: 1_000,
        view_change_timeout_ticks: 20,
        ..cfg
    });
    // View 0 never commits; the new-views of views 1..3 are lost, so only view 4 (replica 0
    // leads again) starts.
    c.filter = Box::new(|from, _, m| match m {
        Message::Commit(v) if v.view == 0 => None,
        Message::NewView(_) if from != 0 => None,
        m => Some(m),
    });
    c.input(0, Input::Request(request(1)));
    c.input(0, Input::Cut);
    c.run();
    c.input(0, Input::Request(request(2)));
    c.input(0, Input::Cut); // held back: block 1 is in flight, and never executes in view 0
    c.run();
    assert_eq!(pre_prepares_of(&c, 0).len(), 1);
    for id in 1..4 {
        c.input(id, Input::Request(request(1)));
        c.input(id, Input::Request(request(2)));
    }
    c.run();
    let mut ticks = 0;
    while c.replicas[0].view() != 4 || c.replicas[0].in_view_change() {
        c.tick_all(1);
        ticks += 1;
        assert!(
            ticks < 900,
            "view 4 not reached: views {:?}",
            (0..4).map(|i| c.replicas[i].view()).collect::<Vec<_>>()
        );
    }
    c.run();
    let pps = pre_prepares_of(&c, 0);
    let executed = c.executed_ids(1);
    eprintln!(
        "reached view 4 after {ticks} ticks; replica 0 pre-prepared {pps:?}; executed {executed:?}"
    );
    let mut seen = BTreeSet::new();
    for (view, _, ids) in &pps {
        assert!(*view == 0 || *view == 4, "{pps:?}");
        assert!(!ids.is_empty() && ids.len() <= 2, "{pps:?}");
        if *view == 4 {
            for id in ids {
                assert!(
                    seen.insert(*id),
                    "request proposed twice in view 4: {pps:?}"
                );
            }
        }
    }
    for id in 1..4u32 {
        assert!(pre_prepares_of(&c, id).is_empty(), "a backup proposed");
    }
    assert_eq!(
        executed,
        vec![request(1).id, request(2).id],
        "each once, in order"
    );
    // The leak itself: request 2 executed in view 4 after ~{ticks} ticks, far less than the
    // 1,000-tick window, because the cut of view 0 was still waiting.
    assert!(ticks < 1_000);
}

// ----- ATTACK FAILED: a backup never acts on a cut -----------------------------------------

/// ATTACK-FAILED. A backup ignores cuts, however many, and does not remember them for a later
/// view in which it leads: replica 1's cuts in view 0 leave it proposing nothing in view 0.
#[test]
fn red_team_s17_attack_failed_a_backup_never_proposes_on_a_cut() {
    let mut r = Replica::new(
        Config {
            batch_window_ticks: 1_000,
            ..config(1, 4)
        },
        Restored::genesis(GENESIS, 0, 0),
    );
    step(&mut r, Input::Request(request(1)));
    for _ in 0..10 {
        let actions = step(&mut r, Input::Cut);
        assert!(actions.is_empty(), "{actions:?}");
    }
}

// ----- ATTACK FAILED: randomized interleavings of requests, cuts and partial delivery -----

/// A small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Checks, over everything replica 0 proposed: no empty block, none above `max_batch`, no
/// request in two blocks, consecutive sequence numbers.
fn check_proposals(c: &Cluster, max_batch: usize, ctx: &str) {
    let pps = pre_prepares_of(c, 0);
    let mut by_seq: BTreeMap<SeqNo, Vec<Digest>> = BTreeMap::new();
    for (view, seq, ids) in &pps {
        assert_eq!(*view, 0, "{ctx}");
        assert!(!ids.is_empty(), "{ctx}: an empty block at {seq}");
        assert!(
            ids.len() <= max_batch,
            "{ctx}: {} > max_batch at {seq}",
            ids.len()
        );
        if let Some(old) = by_seq.insert(*seq, ids.clone()) {
            assert_eq!(&old, ids, "{ctx}: two proposals at {seq}");
        }
    }
    let mut seen = BTreeSet::new();
    for ids in by_seq.values() {
        for id in ids {
            assert!(seen.insert(*id), "{ctx}: a request in two blocks");
        }
    }
    let seqs: Vec<SeqNo> = by_seq.keys().copied().collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{ctx}");
}

/// ATTACK-FAILED (a hostile client: floods of requests and cuts, interleaved with partial
/// delivery so that the pipeline and the watermark window fill). Over every combination of
/// max_batch, max_in_flight and cut_in_flight in 1..=3, with a batch window longer than the
/// test so that only cuts and full batches propose:
/// - the primary never proposes an empty block, one above max_batch, a request twice, or more
///   than max_in_flight sequence numbers ahead of its execution;
/// - after a cut and full delivery, every request that arrived before the cut has executed
///   (no request is stranded until the window, whatever interleaving came before).
#[test]
fn red_team_s17_attack_failed_random_cuts_and_floods_strand_nothing() {
    let (mut pipeline_full, mut window_full) = (0u64, 0u64);
    for max_batch in 1..=3usize {
        for max_in_flight in 1..=3u64 {
            for cut_in_flight in 1..=3u64 {
                for seed in 1..=12u64 {
                    let (full, window) = run_random(max_batch, max_in_flight, cut_in_flight, seed);
                    pipeline_full += full;
                    window_full += window;
                }
            }
        }
    }
    // The attack reached what it meant to: a full pipeline and a full window, with requests
    // waiting.
    assert!(
        pipeline_full > 100 && window_full > 10,
        "{pipeline_full} {window_full}"
    );
}

/// Returns how often a step ended with requests pending and the pipeline, or the window, full.
fn run_random(max_batch: usize, max_in_flight: u64, cut_in_flight: u64, seed: u64) -> (u64, u64) {
    let (mut pipeline_full, mut window_full) = (0, 0);
    let ctx =
        format!("batch {max_batch} in-flight {max_in_flight} cut {cut_in_flight} seed {seed}");
    let mut c = cluster_with(4, |cfg| Config {
        max_batch,
        max_in_flight,
        cut_in_flight,
        batch_window_ticks: 100_000,
        view_change_timeout_ticks: 1_000_000,
        max_pending: 10_000,
        executed_window: 10_000,
        ..cfg
    });
    // While `Some`, checkpoint messages are held back, so that the watermark window fills.
    let held: Rc<RefCell<Option<Vec<Held>>>> = Rc::default();
    let stash = held.clone();
    c.filter = Box::new(move |from, to, m| {
        if let Some(held) = stash.borrow_mut().as_mut()
            && matches!(m, Message::Checkpoint(_))
        {
            held.push((from, to, m));
            return None;
        }
        Some(m)
    });
    let release = |c: &mut Cluster| {
        if let Some(msgs) = held.borrow_mut().take() {
            for (from, to, m) in msgs {
                c.queue.push_back((to, signed(from, m)));
            }
        }
    };
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut next = 1u16;
    let mut accepted: Vec<Digest> = Vec::new();
    for _ in 0..150 {
        match rng.below(13) {
            10 => {
                if held.borrow().is_none() {
                    *held.borrow_mut() = Some(Vec::new());
                }
            }
            11 => release(&mut c),
            12 => {
                // The caller gives up on some pending request (not in the log: forgotten).
                if !accepted.is_empty() {
                    let i = rng.below(accepted.len() as u64) as usize;
                    let id = accepted[i];
                    c.input(0, Input::Withdraw(vec![id]));
                    if !c.replicas[0].knows_request(&id) {
                        accepted.remove(i);
                    }
                }
            }
            0..=3 => {
                let k = 1 + rng.below(4);
                for _ in 0..k {
                    c.input(0, Input::Request(req(next)));
                    accepted.push(req(next).id);
                    next += 1;
                }
            }
            4..=5 => c.input(0, Input::Cut),
            6..=7 => {
                // Deliver part of what is in flight.
                let k = rng.below(40);
                for _ in 0..k {
                    let Some((to, m)) = c.queue.pop_front() else {
                        break;
                    };
                    c.input(to, Input::Message(m));
                }
            }
            8 => c.run(),
            _ => {
                // A cut, then full delivery: everything before the cut must have executed.
                release(&mut c);
                let before = accepted.clone();
                c.input(0, Input::Cut);
                c.run();
                let done: BTreeSet<Digest> = c.executed_ids(0).into_iter().collect();
                let stranded = before.iter().filter(|id| !done.contains(*id)).count();
                assert_eq!(
                    stranded, 0,
                    "{ctx}: requests stranded after a cut and delivery"
                );
            }
        }
        let (exec, _) = c.replicas[0].last_executed();
        let proposed = pre_prepares_of(&c, 0)
            .iter()
            .map(|p| p.1)
            .max()
            .unwrap_or(0);
        assert!(
            proposed - exec.min(proposed) <= max_in_flight,
            "{ctx}: {proposed} proposed, {exec} executed"
        );
        check_proposals(&c, max_batch, &ctx);
        if c.replicas[0].pending_len() > 0 {
            pipeline_full += u64::from(proposed - exec.min(proposed) == max_in_flight);
            window_full += u64::from(proposed == c.replicas[0].stable_checkpoint().0 + 8);
        }
    }
    release(&mut c);
    c.input(0, Input::Cut);
    c.run();
    let done: BTreeSet<Digest> = c.executed_ids(1).into_iter().collect();
    assert_eq!(done.len(), accepted.len(), "{ctx}: not everything executed");
    (pipeline_full, window_full)
}
