//! A faulty primary 0 censoring a request every correct backup holds (red teams s42, s45 and
//! s47): the rotating plant of red team s42 F1 on a cluster, and its lone-backup view.
use std::cell::RefCell;
use std::ops::Range;
use std::rc::Rc;

use pbft::*;

use super::*;

/// The censored request.
pub fn censored() -> Request {
    request(200)
}

/// Backup 1 of 4 alone (view-change timeout `timeout_ticks`, retransmit 50): the censored
/// request arrives at tick 30 (its deadline is 30 + `timeout_ticks`); returned at tick 80.
pub fn lone_backup_waiting(timeout_ticks: u64) -> Replica {
    let mut cfg = config(1, 4);
    cfg.view_change_timeout_ticks = timeout_ticks;
    cfg.retransmit_ticks = 50;
    let mut r = Replica::new(cfg, Restored::genesis(GENESIS, 0, 0));
    for _ in 0..30 {
        tick(&mut r);
    }
    step(&mut r, Input::Request(censored()));
    for _ in 0..50 {
        tick(&mut r);
    }
    r
}

/// One tick of a lone replica whose clock stands at 0.
pub fn tick(r: &mut Replica) -> Vec<Action> {
    step(r, Input::Tick { now_ms: 0 })
}

/// Peers' status claims `(from, seq, digest)` to `r`, each as a checkpoint message; a refused
/// one is dropped, as a node would.
pub fn claim(r: &mut Replica, claims: &[(ReplicaId, SeqNo, Digest)]) {
    for (from, seq, digest) in claims {
        let _ = r.step(checkpoint(*from, *seq, *digest), &mut Vec::new());
    }
}

/// A correct backup the faulty primary keeps behind in the current round.
#[derive(Clone, Copy, Debug)]
pub struct Plant {
    pub backup: ReplicaId,
    /// The backup's head + 1 when the round began: the slot the censored request is planted in.
    pub seq: SeqNo,
    /// The digest of the last pre-prepare the rewrite sent the backup this round (GENESIS
    /// before the first): the tip of a fork.
    pub tip: Digest,
}

/// A pre-prepare from the faulty primary to a backup it keeps behind, rewritten with that
/// backup's [`Plant`] (`None`: not sent).
pub type Rewrite = Box<dyn FnMut(PrePrepare, &mut Plant) -> Option<PrePrepare>>;

/// Red team s42's plant: the censored request alone at the plant's slot, chained to the block
/// the others decide before it; none of the round's other pre-prepares is sent.
pub fn plant_one_slot() -> Rewrite {
    Box::new(|pp, plant| {
        (pp.proposal.seq == plant.seq)
            .then(|| pre_prepare(plant.seq, pp.view, pp.proposal.prev, vec![censored()]))
    })
}

/// How a rotation runs: replica 0 is the faulty primary, `correct` the correct backups (each
/// holds the censored request from the start); any other replica follows the protocol but
/// never holds it.
pub struct Rotation {
    pub n: u32,
    pub correct: Range<ReplicaId>,
    pub timeout_ticks: u64,
    pub rounds: usize,
    /// Whether a round that keeps nobody behind also serves every correct backup's fetch, from
    /// the other correct backup with the highest head (as the node does once view 0 is over).
    pub serve_idle_fetches: bool,
}

/// Red team s42 F1's rotating plant: `rotation.rounds` rounds of four blocks committed by the
/// others (K = 4, retransmit 50; the clients' requests go to the primary alone). Replica 0
/// drops every forward of the censored request to it and, in round `k`, keeps the backups
/// `schedule(k, cluster)` behind: each pre-prepare it sends one of them is `rewrite`'s. The
/// backups kept behind see the round's checkpoint become stable, fetch it (awaited for at most
/// 200 ticks) and are served at once, from the first correct backup not kept behind; a round
/// that keeps nobody behind is 50 idle ticks. Returns the cluster and, per replica, the tick
/// at which it first left view 0 (if it did).
pub fn rotate_plants<Kept: IntoIterator<Item = ReplicaId>>(
    rotation: Rotation,
    mut schedule: impl FnMut(usize, &Cluster) -> Kept,
    mut rewrite: Rewrite,
) -> (Cluster, Vec<Option<u64>>) {
    let Rotation {
        n,
        correct,
        timeout_ticks,
        rounds,
        serve_idle_fetches,
    } = rotation;
    let mut c = Cluster::configured(n, |cfg| {
        cfg.view_change_timeout_ticks = timeout_ticks;
        cfg.retransmit_ticks = 50;
    });
    let plants: Rc<RefCell<Vec<Plant>>> = Rc::default();
    let planted = plants.clone();
    let censored_id = censored().id;
    c.filter = Box::new(move |from, to, m| match m {
        // The faulty primary ignores every forward of the censored request.
        Message::Forward(requests) if to == 0 && requests.iter().any(|x| x.id == censored_id) => {
            let rest: Vec<Request> = requests
                .into_iter()
                .filter(|x| x.id != censored_id)
                .collect();
            (!rest.is_empty()).then_some(Message::Forward(rest))
        }
        Message::PrePrepare(pp) if from == 0 && to != 0 => {
            match planted.borrow_mut().iter_mut().find(|p| p.backup == to) {
                Some(plant) => rewrite(pp, plant).map(Message::PrePrepare),
                None => Some(Message::PrePrepare(pp)),
            }
        }
        m => Some(m),
    });
    for b in correct.clone() {
        c.input(b, Input::Request(censored()));
    }
    c.run();
    let mut left = vec![None; n as usize];
    let mut filler = 1u8;
    for round in 0..rounds {
        let kept: Vec<ReplicaId> = schedule(round, &c).into_iter().collect();
        if !kept.is_empty() {
            *plants.borrow_mut() = kept
                .iter()
                .map(|&backup| Plant {
                    backup,
                    seq: c.replicas[backup as usize].last_executed().0 + 1,
                    tip: GENESIS,
                })
                .collect();
        }
        for _ in 0..4 {
            commit_block(&mut c, filler);
            filler = filler.wrapping_add(1).max(1);
            c.note_left_view_0(&mut left);
        }
        if kept.is_empty() {
            c.tick_all(50);
            if serve_idle_fetches {
                for b in correct.clone() {
                    let source = correct
                        .clone()
                        .filter(|s| *s != b)
                        .max_by_key(|s| c.replicas[*s as usize].last_executed().0)
                        .unwrap_or(1);
                    serve_fetches(&mut c, b, source);
                }
                c.run();
            }
        } else {
            // They ask for the state transfer after a retransmit interval.
            for _ in 0..200 {
                if kept.iter().all(|b| !c.fetches[*b as usize].is_empty()) {
                    break;
                }
                c.tick_all(1);
                c.note_left_view_0(&mut left);
            }
            plants.borrow_mut().clear();
            let source = correct.clone().find(|s| !kept.contains(s)).unwrap_or(1);
            for b in kept {
                serve_fetches(&mut c, b, source);
            }
            c.run();
        }
        c.note_left_view_0(&mut left);
    }
    (c, left)
}

/// The rotating plant at n = 7 (f = 2): replicas 0 (the primary) and 6 are Byzantine, 6
/// following the protocol but never holding the censored request; correct backups 1..=5 hold
/// it. Round `k` keeps the TWO correct backups `[[1, 2], [3, 4], [5, 1], [2, 3], [4, 5]][k %
/// 5]` behind at once (f of them: the quorum of 5 is 0, 6 and the other three) while both are
/// in view 0; rounds that keep nobody behind serve the fetches.
pub fn rotate_plants_two_of_seven(
    timeout_ticks: u64,
    rounds: usize,
    rewrite: Rewrite,
) -> (Cluster, Vec<Option<u64>>) {
    const PAIRS: [[ReplicaId; 2]; 5] = [[1, 2], [3, 4], [5, 1], [2, 3], [4, 5]];
    let rotation = Rotation {
        n: 7,
        correct: 1..6,
        timeout_ticks,
        rounds,
        serve_idle_fetches: true,
    };
    let schedule = |round: usize, c: &Cluster| {
        let pair = PAIRS[round % 5];
        let in_view_0 = pair.iter().all(|b| c.still_in_view_0(*b));
        in_view_0.then_some(pair).into_iter().flatten()
    };
    rotate_plants(rotation, schedule, rewrite)
}

/// A rotation's outcome, for assertion messages.
/// What a rotation over pairs of correct backups of seven ([`rotate_plants_two_of_seven`])
/// must still give: at least f+1 = 3 of the five correct backups time out within about two
/// timeouts, and every correct replica executes the censored request.
pub fn assert_two_of_seven_time_out_and_commit(
    c: &Cluster,
    left: &[Option<u64>],
    timeout_ticks: u64,
    report: &str,
) {
    let timed_out = left[1..6]
        .iter()
        .filter(|t| t.is_some_and(|t| t <= 2 * timeout_ticks + 150))
        .count();
    assert!(timed_out >= 3, "{report}");
    assert!(
        (1..6).all(|id| c.executed_ids(id).contains(&censored().id)),
        "{report}"
    );
}

pub fn rotation_report(c: &Cluster, left: &[Option<u64>]) -> String {
    let heads: Vec<SeqNo> = c.replicas.iter().map(|r| r.last_executed().0).collect();
    format!(
        "views {:?}, first left view 0 at {left:?}, heads {heads:?}, now {}",
        c.views(),
        c.now
    )
}
