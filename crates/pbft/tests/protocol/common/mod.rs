//! Helpers shared by the unit tests: a 4-replica configuration with small K and L, fake
//! signatures (the core never checks them), and a tiny in-memory cluster that delivers every
//! broadcast (with loopback) to drive multi-replica scenarios.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use pbft::*;

pub mod behind;
pub mod censorship;
pub mod pushed;
// Each test binary uses only some of these (nothing here does).
#[allow(unused_imports)]
pub use behind::*;
#[allow(unused_imports)]
pub use censorship::*;
pub use pushed::*;

/// The small configuration (K = 4, L = 8, batches of 2) the fuzz target uses too.
pub use pbft::fuzzing::{GENESIS, config, digest};

pub fn replica(id: ReplicaId) -> Replica {
    Replica::new(config(id, 4), Restored::genesis(GENESIS, 0, 0))
}

pub fn sig(from: ReplicaId) -> Signature {
    Signature([from as u8; 64])
}

pub fn signed<M>(from: ReplicaId, message: M) -> Signed<M> {
    Signed {
        from,
        message,
        signature: sig(from),
    }
}

pub fn msg(from: ReplicaId, message: Message) -> Input {
    Input::Message(signed(from, message))
}

pub fn request(i: u8) -> Request {
    Request {
        id: [i; 32],
        timestamp_ms: u64::from(i),
        payload: Arc::from(vec![i]),
    }
}

pub fn proposal(seq: SeqNo, view: View, prev: Digest, requests: Vec<Request>) -> Arc<Proposal> {
    Arc::new(Proposal {
        seq,
        view,
        proposer: (view % 4) as ReplicaId,
        prev,
        // What a primary whose clock reads 0 proposes on a chain of such proposals.
        time_ms: seq,
        requests,
    })
}

pub fn pre_prepare(seq: SeqNo, view: View, prev: Digest, requests: Vec<Request>) -> PrePrepare {
    let proposal = proposal(seq, view, prev, requests);
    PrePrepare {
        view,
        digest: digest(&proposal),
        proposal,
    }
}

pub fn vote(view: View, seq: SeqNo, digest: Digest) -> Vote {
    Vote { view, seq, digest }
}

/// Steps and returns the actions; panics on a protocol error.
pub fn step(r: &mut Replica, input: Input) -> Vec<Action> {
    let mut actions = Vec::new();
    r.step(input, &mut actions).expect("step");
    actions
}

/// Replica 0 of 4 restored from its stores (no protocol records) with its head at `last` and
/// its last executed checkpoint at `checkpoint`; the digest of sequence number `s` is `[s; 32]`.
pub fn restored_at(last: SeqNo, checkpoint: Option<SeqNo>) -> Replica {
    Replica::new(
        config(0, 4),
        Restored {
            last_executed: (last, [last as u8; 32]),
            executed_checkpoint: checkpoint.map(|s| (s, [s as u8; 32])),
            head_time_ms: last,
            now_ms: 0,
            durable: Vec::new(),
            recovering: false,
            nonce: 0,
            incarnation: 0,
        },
    )
}

/// A checkpoint message (a vouch, §4.3) from `from`.
pub fn checkpoint(from: ReplicaId, seq: SeqNo, digest: Digest) -> Input {
    msg(from, Message::Checkpoint(Checkpoint { seq, digest }))
}

/// The sequence numbers `actions` ask the node to read (`Action::ReadExecuted`).
pub fn reads(actions: &[Action]) -> Vec<SeqNo> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ReadExecuted { seq } => Some(*seq),
            _ => None,
        })
        .collect()
}

/// The checkpoints `actions` broadcast (this replica's vouches).
pub fn vouches(actions: &[Action]) -> Vec<Checkpoint> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast(Message::Checkpoint(c)) => Some(*c),
            _ => None,
        })
        .collect()
}

pub fn step_err(r: &mut Replica, input: Input) -> ProtocolError {
    let mut actions = Vec::new();
    let e = r.step(input, &mut actions).expect_err("must be rejected");
    assert!(actions.is_empty());
    e
}

/// Rewrites (or, returning `None`, drops) a message from one replica to another: partitions
/// and Byzantine behaviour in tests.
pub type Filter = Box<dyn FnMut(ReplicaId, ReplicaId, Message) -> Option<Message>>;

/// Four (or n) replicas wired together: broadcasts go to everyone (including the sender),
/// sends to one, in FIFO order. Records executions and persisted records per replica.
/// Messages between distinct replicas pass `filter` and take `latency_ticks` ticks to arrive.
pub struct Cluster {
    pub replicas: Vec<Replica>,
    pub up: Vec<bool>,
    pub queue: VecDeque<(ReplicaId, Signed<Message>)>,
    pub executed: Vec<Vec<Committed>>,
    pub durable: Vec<Vec<Durable>>,
    pub fetches: Vec<Vec<Action>>,
    pub alarms: Vec<Vec<Alarm>>,
    /// Every message each replica sent (before the filter), across restarts.
    pub sent: Vec<Vec<Message>>,
    pub filter: Filter,
    pub latency_ticks: u64,
    /// Ticks seen by `tick_all`.
    pub now: u64,
    /// Each replica's clock (ms), passed in its ticks; `tick_all` advances every clock by
    /// `ms_per_tick` per tick (0: clocks stand still).
    pub clocks_ms: Vec<u64>,
    pub ms_per_tick: u64,
    /// Messages in flight: (arrival tick, recipient, message).
    pub delayed: VecDeque<(u64, ReplicaId, Signed<Message>)>,
}

impl Cluster {
    /// Each replica's view, and whether it is changing views.
    pub fn views(&self) -> Vec<(View, bool)> {
        self.replicas
            .iter()
            .map(|replica| (replica.view(), replica.in_view_change()))
            .collect()
    }

    /// Whether replica `id` is still in view 0 (and not changing views).
    pub fn still_in_view_0(&self, id: ReplicaId) -> bool {
        let replica = &self.replicas[id as usize];
        replica.view() == 0 && !replica.in_view_change()
    }

    /// Notes in `left` the tick each replica first left view 0 (moved on, or changing views),
    /// for the replicas that had not yet.
    pub fn note_left_view_0(&self, left: &mut [Option<u64>]) {
        for (i, (view, changing)) in self.views().into_iter().enumerate() {
            if left[i].is_none() && (view > 0 || changing) {
                left[i] = Some(self.now);
            }
        }
    }

    pub fn new(n: u32) -> Self {
        Cluster {
            replicas: (0..n)
                .map(|i| Replica::new(config(i, n), Restored::genesis(GENESIS, 0, 0)))
                .collect(),
            up: vec![true; n as usize],
            queue: VecDeque::new(),
            executed: vec![Vec::new(); n as usize],
            durable: vec![Vec::new(); n as usize],
            fetches: vec![Vec::new(); n as usize],
            alarms: vec![Vec::new(); n as usize],
            sent: vec![Vec::new(); n as usize],
            filter: Box::new(|_, _, m| Some(m)),
            latency_ticks: 0,
            now: 0,
            clocks_ms: vec![0; n as usize],
            ms_per_tick: 0,
            delayed: VecDeque::new(),
        }
    }

    /// `n` replicas whose configurations `edit` changed.
    pub fn configured(n: u32, edit: impl Fn(&mut Config)) -> Self {
        let mut c = Cluster::new(n);
        c.replicas = (0..n)
            .map(|id| {
                let mut cfg = config(id, n);
                edit(&mut cfg);
                Replica::new(cfg, Restored::genesis(GENESIS, 0, 0))
            })
            .collect();
        c
    }

    /// Sends `message` from `from` to `to` through the filter and the latency.
    pub fn send(&mut self, from: ReplicaId, to: ReplicaId, message: Message) {
        if from == to {
            self.queue.push_back((to, signed(from, message)));
            return;
        }
        let Some(message) = (self.filter)(from, to, message) else {
            return;
        };
        if self.latency_ticks == 0 {
            self.queue.push_back((to, signed(from, message)));
        } else {
            let at = self.now + self.latency_ticks;
            self.delayed.push_back((at, to, signed(from, message)));
        }
    }

    /// Executed request ids of replica `id`, in order.
    pub fn executed_ids(&self, id: ReplicaId) -> Vec<Digest> {
        self.executed[id as usize]
            .iter()
            .flat_map(|c| c.proposal.requests.iter().map(|r| r.id))
            .collect()
    }

    pub fn input(&mut self, id: ReplicaId, input: Input) {
        if !self.up[id as usize] {
            return;
        }
        let mut actions = Vec::new();
        let _ = self.replicas[id as usize].step(input, &mut actions);
        let mut reads = Vec::new();
        for a in actions {
            match a {
                Action::Send { to, message } => {
                    let message = self.prove_execution(id, message);
                    self.sent[id as usize].push(message.clone());
                    self.send(id, to, message);
                }
                Action::Broadcast(message) => {
                    self.sent[id as usize].push(message.clone());
                    for to in 0..self.replicas.len() as ReplicaId {
                        self.send(id, to, message.clone());
                    }
                }
                Action::Persist(d) => self.durable[id as usize].push(d),
                Action::Execute(c) => self.executed[id as usize].push(c),
                f @ Action::FetchState { .. } => self.fetches[id as usize].push(f),
                Action::ReadExecuted { seq } => reads.push(seq),
                Action::Alarm(alarm) => self.alarms[id as usize].push(alarm),
            }
        }
        // The node's answer from its chain.
        for seq in reads {
            let digest = self.executed[id as usize]
                .iter()
                .find(|b| b.proposal.seq == seq)
                .map(|b| b.digest);
            if let Some(digest) = digest {
                self.input(id, Input::Executed { seq, digest });
            }
        }
    }

    /// The caller's duty for a recovery answer: the head of what `id` executed, with its
    /// commit certificate (nothing if it executed nothing here, e.g. only by state transfer).
    pub fn prove_execution(&self, id: ReplicaId, message: Message) -> Message {
        let Message::RecoveryAnswer(mut answer) = message else {
            return message;
        };
        answer.prove_executed(self.executed[id as usize].last());
        Message::RecoveryAnswer(answer)
    }

    /// Delivers messages until none is left (bounded).
    pub fn run(&mut self) {
        for _ in 0..100_000 {
            let Some((to, m)) = self.queue.pop_front() else {
                return;
            };
            self.input(to, Input::Message(m));
        }
        panic!("message storm");
    }

    /// The block time of the head `id` executed (0 for none).
    pub fn head_time_ms(&self, id: ReplicaId) -> u64 {
        self.executed[id as usize]
            .last()
            .map_or(0, |block| block.proposal.time_ms)
    }

    pub fn tick_all(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.now += 1;
            let now = self.now;
            while self.delayed.front().is_some_and(|(at, _, _)| *at <= now) {
                if let Some((_, to, m)) = self.delayed.pop_front() {
                    self.queue.push_back((to, m));
                }
            }
            for id in 0..self.replicas.len() as ReplicaId {
                self.clocks_ms[id as usize] += self.ms_per_tick;
                let now_ms = self.clocks_ms[id as usize];
                self.input(id, Input::Tick { now_ms });
            }
            self.run();
        }
    }
}

/// `from`'s life `incarnation`, as its recovery query with nonce 0 (fake signature).
pub fn life(from: ReplicaId, incarnation: u64) -> Life {
    signed(
        from,
        RecoveryQuery {
            nonce: 0,
            incarnation,
        },
    )
}

/// The `(replica, incarnation)` a [`Durable::Incarnation`] record is about.
pub fn life_in(record: &Durable) -> Option<(ReplicaId, u64)> {
    match record {
        Durable::Incarnation { life, .. } => Some((life.from, life.message.incarnation)),
        _ => None,
    }
}

/// Replica `id` loses every durable record (its chain survives) and starts a new life.
pub fn lose_state(c: &mut Cluster, id: ReplicaId, incarnation: u64) {
    let n = c.replicas.len() as u32;
    let head = c.replicas[id as usize].last_executed();
    c.replicas[id as usize] = Replica::new(
        config(id, n),
        Restored {
            last_executed: head,
            executed_checkpoint: None,
            head_time_ms: c.head_time_ms(id),
            now_ms: c.clocks_ms[id as usize],
            durable: Vec::new(),
            recovering: true,
            nonce: 0x5eed + u64::from(id) * 1_000 + incarnation,
            incarnation,
        },
    );
    c.durable[id as usize].clear();
}

/// Replica 3 of four, restarted with nothing and asking (nonce 9): its first tick sent its
/// recovery query.
pub fn querier() -> Replica {
    let mut q = Replica::new(
        config(3, 4),
        Restored {
            recovering: true,
            nonce: 9,
            ..Restored::genesis(GENESIS, 0, 0)
        },
    );
    step(&mut q, Input::Tick { now_ms: 0 });
    q
}

/// The primary of the current view (replica 0's idea of it) commits one block of request `i`.
pub fn commit_block(c: &mut Cluster, i: u8) {
    let primary = c.replicas[0].primary();
    c.input(primary, Input::Request(request(i)));
    c.input(primary, Input::Cut);
    c.run();
    c.tick_all(1);
}

/// The caller's state transfer for `id`: blocks from replica `source`'s executed chain.
pub fn serve_fetches(c: &mut Cluster, id: ReplicaId, source: ReplicaId) {
    let fetches = std::mem::take(&mut c.fetches[id as usize]);
    if let Some(Action::FetchState { seq, .. }) = fetches.last() {
        transfer(c, id, source, *seq);
    }
}

/// A state transfer to `seq` of a made-up chain (digest and time derived from `seq`), with no
/// requests: for tests of a lone replica whose fetched blocks do not matter.
pub fn transferred_to(seq: u64) -> Input {
    Input::StateTransferred {
        seq,
        digest: [seq as u8; 32],
        time_ms: seq,
        request_ids: vec![],
    }
}

/// Replica `id` of `c` restarted from its records, with its configuration, and with its ledger
/// cut back to `head` (the blocks above it not applied: a crash before the applies).
pub fn restart_behind(c: &mut Cluster, id: ReplicaId, head: usize, durable: Vec<Durable>) {
    c.executed[id as usize].truncate(head);
    let at = &c.executed[id as usize][head - 1];
    let restored = Restored {
        last_executed: (at.proposal.seq, at.digest),
        executed_checkpoint: None,
        head_time_ms: at.proposal.time_ms,
        now_ms: c.clocks_ms[id as usize],
        durable,
        recovering: false,
        nonce: 0,
        incarnation: 1,
    };
    let config = c.replicas[id as usize].config().clone();
    c.replicas[id as usize] = Replica::new(config, restored);
}

/// What the node does at a restart (`Runtime::resume_pending`): it resubmits, each once, the
/// requests of the slots restored from its log and those it `acknowledged`, that its chain
/// (here the replica's executed blocks) does not hold.
pub fn resume(c: &mut Cluster, id: ReplicaId, acknowledged: &[Request]) {
    let on_chain: BTreeSet<Digest> = c.executed_ids(id).into_iter().collect();
    let mut seen = BTreeSet::new();
    let restored = c.replicas[id as usize].restored_requests();
    for r in restored.into_iter().chain(acknowledged.iter().cloned()) {
        if !on_chain.contains(&r.id) && seen.insert(r.id) {
            c.input(id, Input::Request(r));
        }
    }
}

/// Slot 1 pre-prepared with request 1, every backup's prepare sent and lost.
pub fn slot_pre_prepared_prepares_lost() -> Cluster {
    let mut c = Cluster::new(4);
    c.filter = Box::new(|_, _, m| match m {
        Message::Prepare(_) => None,
        m => Some(m),
    });
    c.input(0, Input::Request(request(1)));
    c.input(0, Input::Cut);
    c.run();
    c
}

/// Red team s30 F2's scenario, as an upgrade to node.db's migration v5 makes it (slot 1
/// pre-prepared, every backup's prepare sent, prepares lost; every validator upgraded, its
/// records rewritten as `Withheld`, every clock τ + 1 later) where only the validators in
/// `acknowledging` acknowledged request 1 to its client. Every node resubmits its restored
/// slots' requests at the restart, and what it acknowledged (`resume`). Returns the cluster
/// after `ticks` ticks.
pub fn upgraded_with_pending_slot(acknowledging: &[ReplicaId], ticks: u64) -> Cluster {
    let mut c = slot_pre_prepared_prepares_lost();
    for id in 1..4 {
        assert!(
            c.durable[id]
                .iter()
                .any(|d| matches!(d, Durable::PrePrepare(pp) if pp.proposal.seq == 1)),
            "backup {id} did not accept slot 1"
        );
    }
    c.filter = Box::new(|_, _, m| Some(m));
    let tau = c.replicas[0].config().block_time_tolerance_ms;
    for id in 0..4u32 {
        let durable: Vec<Durable> = c.durable[id as usize]
            .iter()
            .cloned()
            .map(|d| match d {
                Durable::PrePrepare(pp) => Durable::Withheld(pp),
                d => d,
            })
            .collect();
        c.clocks_ms[id as usize] += tau + 1;
        c.replicas[id as usize] = Replica::new(
            config(id, 4),
            Restored {
                now_ms: c.clocks_ms[id as usize],
                durable,
                incarnation: 1,
                ..Restored::genesis(GENESIS, 0, 0)
            },
        );
    }
    for id in 0..4u32 {
        let acknowledged = match acknowledging.contains(&id) {
            true => vec![request(1)],
            false => vec![],
        };
        resume(&mut c, id, &acknowledged);
    }
    c.run();
    c.ms_per_tick = 1;
    c.tick_all(ticks);
    c
}

/// Commits blocks (ids from `next`) until `id` has left recovery; returns the next free id.
pub fn recover(c: &mut Cluster, id: ReplicaId, mut next: u8) -> u8 {
    c.tick_all(1);
    for _ in 0..40 {
        if !c.replicas[id as usize].is_recovering() {
            return next;
        }
        commit_block(c, next);
        next += 1;
        if c.replicas[id as usize].last_executed() != c.replicas[0].last_executed() {
            // Behind (its window starts at 0 again): the state transfer after its wait.
            c.tick_all(c.replicas[0].config().retransmit_ticks + 1);
            serve_fetches(c, id, 0);
        }
    }
    panic!(
        "replica {id} never left recovery: {:?}, view {}, low {:?}",
        c.durable[id as usize]
            .iter()
            .filter(|d| matches!(d, Durable::Recovery { .. }))
            .collect::<Vec<_>>(),
        c.replicas[id as usize].view(),
        c.replicas[id as usize].stable_checkpoint()
    );
}

/// The view-change to view 1 that `id` sent last.
pub fn view_change_sent(c: &Cluster, id: ReplicaId) -> ViewChange {
    c.sent[id as usize]
        .iter()
        .rev()
        .find_map(|m| match m {
            Message::ViewChange(vc) if vc.new_view == 1 => Some(vc.clone()),
            _ => None,
        })
        .expect("a view-change to view 1")
}

/// What the Byzantine replica knows and has decided in the veto attack.
pub struct Vetoer {
    n: u32,
    byzantine: ReplicaId,
    crashed: Option<ReplicaId>,
    /// The incarnation of the Byzantine replica each replica knows (it announced them all).
    known: Vec<u64>,
    /// Replicas it has announced a new life to (each takes one per stable checkpoint).
    raised: Vec<bool>,
    /// The view in which each was told of a new life (until it restarts).
    raised_in: Vec<Option<View>>,
    /// Per view: (the backup that will refuse the new-view, whether it must hear a new life
    /// first, the correct replica whose view-change the network delays to the primary).
    plans: BTreeMap<View, Option<(ReplicaId, bool, ReplicaId)>>,
}

impl Vetoer {
    fn correct(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        (0..self.n).filter(|id| *id != self.byzantine && Some(*id) != self.crashed)
    }

    /// The plan for `view` (decided once): a correct backup that already knows a newer life
    /// than the primary (free), else one not yet raised, raised above every other.
    fn plan(&mut self, view: View) -> Option<(ReplicaId, bool, ReplicaId)> {
        if let Some(plan) = self.plans.get(&view) {
            return *plan;
        }
        let primary = (view % u64::from(self.n)) as ReplicaId;
        let plan = if primary == self.byzantine || Some(primary) == self.crashed {
            None
        } else {
            let backups: Vec<ReplicaId> = self.correct().filter(|id| *id != primary).collect();
            let known_p = self.known[primary as usize];
            let free = backups
                .iter()
                .copied()
                .find(|q| self.known[*q as usize] > known_p);
            let chosen = free.map(|q| (q, false)).or_else(|| {
                let q = backups
                    .iter()
                    .copied()
                    .find(|q| !self.raised[*q as usize])?;
                let top = self.known.iter().copied().max().unwrap_or(0);
                self.known[q as usize] = top + 1;
                self.raised[q as usize] = true;
                self.raised_in[q as usize] = Some(view);
                Some((q, true))
            });
            chosen.and_then(|(q, raise)| {
                let delayed = backups.iter().copied().find(|r| *r != q)?;
                Some((q, raise, delayed))
            })
        };
        self.plans.insert(view, plan);
        plan
    }
}

/// One Byzantine replica vetoes as many view changes as it can with incarnations: it sends the
/// new primary its view-change of the life that primary knows, and a backup that knows a newer
/// life of it (or, the first time, that it tells of a newer one by a recovery query in place
/// of its view-change) refuses the new-view; the network delays one other correct
/// view-change to the primary, so the primary takes the Byzantine one. It never votes and
/// never leads. With `announce` false it announces nothing (the baseline). Returns the views
/// whose new-view a correct primary sent before the one in which the request committed, that
/// view, and the ticks it took.
pub fn veto_attack(
    n: u32,
    byzantine: ReplicaId,
    crashed: Option<ReplicaId>,
    announce: bool,
) -> (Vec<View>, View, u64) {
    let announce = if announce {
        Announce::Query
    } else {
        Announce::Nothing
    };
    veto_attack_with(n, byzantine, crashed, announce, false, None)
}

/// How the vetoer tells a backup of a new life of its own.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Announce {
    /// It announces nothing (the baseline).
    Nothing,
    /// A recovery query of the new life, sent to that backup only.
    Query,
    /// The new life (its own signed query) relayed in a `Message::Lives` to that backup only.
    Lives,
}

/// `veto_attack`, announcing new lives as `announce` says; with `restart_raised`, each correct
/// replica told of a new life restarts (records intact, as a node does after a crash or an
/// upgrade) once it left that view; with `retransmit_ticks`, the replicas retransmit at that
/// interval instead of the test configuration's (1,000 ticks, where the base view-change
/// timeout is 20).
pub fn veto_attack_with(
    n: u32,
    byzantine: ReplicaId,
    crashed: Option<ReplicaId>,
    announce: Announce,
    restart_raised: bool,
    retransmit_ticks: Option<u64>,
) -> (Vec<View>, View, u64) {
    let configured = move |id: ReplicaId| {
        let mut config = config(id, n);
        if let Some(ticks) = retransmit_ticks {
            config.retransmit_ticks = ticks;
        }
        config
    };
    let mut c = Cluster::new(n);
    c.replicas = (0..n)
        .map(|id| Replica::new(configured(id), Restored::genesis(GENESIS, 0, 0)))
        .collect();
    commit_block(&mut c, 1);
    if let Some(down) = crashed {
        c.up[down as usize] = false;
    }
    let b = Rc::new(RefCell::new(Vetoer {
        n,
        byzantine,
        crashed,
        known: vec![0; n as usize],
        raised: vec![announce == Announce::Nothing; n as usize],
        raised_in: vec![None; n as usize],
        plans: BTreeMap::new(),
    }));
    let vetoer = b.clone();
    c.filter = Box::new(move |from, to, m| {
        let mut b = vetoer.borrow_mut();
        match m {
            // The network: the first primary's proposals are lost, so the backups time out.
            Message::PrePrepare(pp) if from == 0 && pp.view == 0 => None,
            Message::ViewChange(vc) if from == byzantine => {
                let view = vc.new_view;
                let primary = (view % u64::from(n)) as ReplicaId;
                let plan = b.plan(view);
                if to == primary {
                    return Some(Message::ViewChange(ViewChange {
                        incarnation: b.known[primary as usize],
                        ..vc
                    }));
                }
                match plan {
                    Some((q, true, _)) if to == q => {
                        let query = RecoveryQuery {
                            nonce: view,
                            incarnation: b.known[q as usize],
                        };
                        Some(match announce {
                            Announce::Lives => Message::Lives(vec![signed(byzantine, query)]),
                            _ => Message::RecoveryQuery(query),
                        })
                    }
                    _ => None,
                }
            }
            Message::Prepare(_)
            | Message::Commit(_)
            | Message::NewView(_)
            | Message::PrePrepare(_)
            | Message::RecoveryAnswer(_)
                if from == byzantine =>
            {
                None
            }
            Message::ViewChange(vc) if to == (vc.new_view % u64::from(n)) as ReplicaId => {
                match b.plan(vc.new_view) {
                    Some((_, _, delayed)) if delayed == from => None,
                    _ => Some(Message::ViewChange(vc)),
                }
            }
            m => Some(m),
        }
    });
    let correct: Vec<ReplicaId> = b.borrow().correct().collect();
    for id in &correct {
        c.input(*id, Input::Request(request(2)));
    }
    c.run();
    let mut starts = vec![0u64; n as usize];
    for _ in 0..400_000 {
        c.tick_all(1);
        if correct
            .iter()
            .all(|id| c.executed_ids(*id).contains(&[2; 32]))
        {
            break;
        }
        if c.replicas[correct[0] as usize].view() > 16 {
            break; // 20 << 16 ticks: stopped for good
        }
        for q in correct.iter().map(|q| *q as usize) {
            let left = b.borrow().raised_in[q].is_some_and(|v| c.replicas[q].view() > v);
            if restart_raised && left {
                starts[q] += 1;
                c.replicas[q] = Replica::new(
                    configured(q as ReplicaId),
                    Restored {
                        last_executed: c.replicas[q].last_executed(),
                        executed_checkpoint: None,
                        head_time_ms: c.head_time_ms(q as ReplicaId),
                        now_ms: c.clocks_ms[q],
                        durable: c.durable[q].clone(),
                        recovering: false,
                        nonce: starts[q],
                        incarnation: starts[q],
                    },
                );
                let mut b = b.borrow_mut();
                b.raised[q] = false;
                b.raised_in[q] = None;
            }
        }
    }
    for id in &correct {
        assert!(
            c.executed_ids(*id).contains(&[2; 32]),
            "replica {id} never committed the request (view {}, tick {}); new lives of {byzantine} \
             each correct replica took: {:?}",
            c.replicas[*id as usize].view(),
            c.now,
            correct
                .iter()
                .map(|id| c.durable[*id as usize]
                    .iter()
                    .filter(|d| matches!(d, Durable::Incarnation { .. }))
                    .count())
                .collect::<Vec<_>>()
        );
    }
    let view = c.replicas[correct[0] as usize].view();
    let refused = new_views_before(&c, &correct, view);
    (refused, view, c.now)
}

/// The views below `view` whose new-views the replicas `correct` sent (each once, ascending):
/// in the veto attacks, the new-views refused before the one that took.
pub fn new_views_before(c: &Cluster, correct: &[ReplicaId], view: View) -> Vec<View> {
    let mut views: Vec<View> = correct
        .iter()
        .flat_map(|id| &c.sent[*id as usize])
        .filter_map(|m| match m {
            Message::NewView(nv) if nv.view < view => Some(nv.view),
            _ => None,
        })
        .collect();
    views.sort_unstable();
    views.dedup();
    views
}

/// Phases 3 and 4 of the n = 7 lost-life fork scenarios (`red_team_lives*.rs`), whose filter
/// reads `phase` and `s_cell`: 0 proposes block d (request 200) at the next sequence number s;
/// Byzantine 1 adds its prepare (to 2, 3, 5, 6) and its commit (to 5), and 5 executes d; then
/// the view change to 1, until 0, 2, 3 and 4 executed s (300 ticks at most). Returns (s, d).
pub fn block_d_then_view_change(
    c: &mut Cluster,
    n: u32,
    phase: &std::cell::Cell<u8>,
    s_cell: &std::cell::Cell<SeqNo>,
) -> (SeqNo, Digest) {
    phase.set(3);
    let s = c.replicas[0].last_executed().0 + 1;
    s_cell.set(s);
    c.input(0, Input::Request(request(200)));
    c.input(0, Input::Cut);
    c.run();
    let d = c.sent[0]
        .iter()
        .rev()
        .find_map(|m| match m {
            Message::PrePrepare(pp) if pp.proposal.seq == s => Some(pp.digest),
            _ => None,
        })
        .expect("0 proposed d");
    // 1 adds its prepare (to 2, 3, 5, 6) and its commit (to 5) for d.
    for id in [2, 3, 5, 6] {
        c.input(id, msg(1, Message::Prepare(vote(0, s, d))));
    }
    c.run();
    c.input(5, msg(1, Message::Commit(vote(0, s, d))));
    c.run();
    assert_eq!(c.replicas[5].last_executed(), (s, d), "5 executed d at s");

    // Phase 4: the view change to 1.
    phase.set(4);
    c.input(1, Input::Request(request(250))); // what 1 will put at s
    for id in 2..n {
        c.input(id, Input::Request(request(201)));
    }
    c.run();
    for _ in 0..300 {
        c.tick_all(1);
        if [0, 2, 3, 4]
            .iter()
            .all(|id| c.replicas[*id].last_executed().0 >= s)
        {
            break;
        }
    }
    (s, d)
}

/// The replicas among 0, 2, 3 and 4 that executed something else than `d` at `s`: (replica,
/// the first byte of each request id, commit view).
pub fn forked_at(c: &Cluster, s: SeqNo, d: Digest) -> Vec<(usize, Vec<u8>, View)> {
    let mut forked = Vec::new();
    for id in [0, 2, 3, 4] {
        let Some(at_s) = c.executed[id].iter().find(|b| b.proposal.seq == s) else {
            continue;
        };
        if at_s.digest != d {
            let requests: Vec<u8> = at_s.proposal.requests.iter().map(|r| r.id[0]).collect();
            forked.push((id, requests, at_s.commit_view));
        }
    }
    forked
}

/// Whether replica `id`'s records hold life `incarnation` of `of`.
pub fn knows(c: &Cluster, id: ReplicaId, of: ReplicaId, incarnation: u64) -> bool {
    c.durable[id as usize]
        .iter()
        .any(|d| life_in(d) == Some((of, incarnation)))
}

/// A view-change to `to` from the genesis checkpoint, carrying `prepared`.
pub fn view_change(to: View, prepared: Vec<PreparedCertificate>) -> ViewChange {
    ViewChange {
        new_view: to,
        incarnation: 0,
        checkpoint: Checkpoint {
            seq: 0,
            digest: GENESIS,
        },
        checkpoint_proof: vec![],
        prepared,
    }
}

/// The view-changes `actions` broadcast.
pub fn view_changes_broadcast(actions: &[Action]) -> Vec<ViewChange> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast(Message::ViewChange(vc)) => Some(vc.clone()),
            _ => None,
        })
        .collect()
}

/// The defaults' ratio of timeout to retransmission (T = 200 ticks, retransmission every 50)
/// with the small K and L of the other tests (whose retransmission interval, 1000, is above
/// the timeout).
pub fn retransmitting_config(id: ReplicaId) -> Config {
    Config {
        view_change_timeout_ticks: 200,
        retransmit_ticks: 50,
        ..config(id, 4)
    }
}

/// Pre-prepares of view 0 for 1..=len, each chained to the one before, one request each.
pub fn chain(len: u64) -> Vec<PrePrepare> {
    let mut prev = GENESIS;
    (1..=len)
        .map(|s| {
            let pp = pre_prepare(s, 0, prev, vec![request(s as u8)]);
            prev = pp.digest;
            pp
        })
        .collect()
}

/// A pre-prepare of view 0 by replica 0 at `seq` with block time `time_ms`.
pub fn timed(seq: SeqNo, prev: Digest, time_ms: u64, requests: Vec<Request>) -> PrePrepare {
    let proposal = Arc::new(Proposal {
        seq,
        view: 0,
        proposer: 0,
        prev,
        time_ms,
        requests,
    });
    PrePrepare {
        view: 0,
        digest: digest(&proposal),
        proposal,
    }
}

/// Replica `id` restarted from `records` plus checkpoint 4 stable (vouched by the other three)
/// with its ledger's head at `head` (3: the crash came between the stable-checkpoint record and
/// the apply of block 4).
pub fn restarted_with(
    id: ReplicaId,
    pps: &[PrePrepare],
    head: u64,
    records: Vec<Durable>,
) -> Replica {
    let stable = Checkpoint {
        seq: 4,
        digest: pps[3].digest,
    };
    let proof = (0..4)
        .filter(|from| *from != id)
        .map(|from| signed(from, stable))
        .collect();
    let at = &pps[head as usize - 1];
    let mut durable = records;
    durable.push(Durable::StableCheckpoint {
        checkpoint: stable,
        proof,
    });
    Replica::new(
        config(id, 4),
        Restored {
            last_executed: (head, at.digest),
            executed_checkpoint: None,
            head_time_ms: at.proposal.time_ms,
            now_ms: 0,
            durable,
            recovering: false,
            nonce: 0,
            incarnation: 1,
        },
    )
}

/// What the node does after the restart of a ledger behind its stable checkpoint (contract
/// item 5): block 4 of `pps` fetched and applied.
pub fn fetch_block_4(r: &mut Replica, pps: &[PrePrepare]) -> Vec<Action> {
    step(
        r,
        Input::StateTransferred {
            seq: 4,
            digest: pps[3].digest,
            time_ms: pps[3].proposal.time_ms,
            request_ids: vec![request(4).id],
        },
    )
}
