//! The simulated world: n replicas in one thread, a seeded fault-injecting network, clients,
//! crashes and restarts, Byzantine rewriting of what faulty replicas send, state transfer
//! served from peers' executed chains, and the invariant checks after every step.
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::sync::Arc;

use pbft::{
    Action, Committed, Config, Digest, Durable, Input, Message, PlantedBug, Proposal, Replica,
    ReplicaId, Request, Restored, Signature, Signed,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::crypto::{self, GENESIS};
use crate::invariants::Checkers;
use crate::profile::{Behavior, Profile};

/// What one run is.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub n: u32,
    pub profile: Profile,
    pub seed: u64,
    pub trace: bool,
    pub planted_bug: Option<PlantedBug>,
    /// Ticks of the chaos phase.
    pub chaos_ticks: u64,
    /// Ticks the healing phase may take before it is a liveness failure.
    pub healing_ticks: u64,
}

impl RunConfig {
    pub fn new(n: u32, profile: Profile, seed: u64) -> Self {
        RunConfig {
            n,
            profile,
            seed,
            trace: false,
            planted_bug: None,
            chaos_ticks: 300,
            healing_ticks: 4_000,
        }
    }

    /// The command that replays this run with a trace.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run --release -p sim -- --profile {} --n {} --seed {} --trace",
            self.profile, self.n, self.seed
        )
    }
}

/// How a run ended.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// A safety invariant broken (or a replica panicked).
    pub violation: Option<String>,
    /// Not every request committed everywhere within the healing bound.
    pub liveness: Option<String>,
    pub stats: Stats,
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub ticks: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub bad_signatures: u64,
    pub protocol_errors: u64,
    pub executed_blocks: u64,
    pub state_transfers: u64,
    pub max_view: u64,
    pub requests: u64,
}

/// The sim's replica configuration: small K and L so checkpoints and watermarks matter.
pub fn replica_config(id: ReplicaId, n: u32, bug: Option<PlantedBug>) -> Config {
    let mut c = Config::new(id, n, crypto::digest, GENESIS);
    c.checkpoint_interval = 4;
    c.watermark_window = 8;
    c.max_batch = 3;
    c.batch_window_ticks = 2;
    c.max_in_flight = 4;
    c.view_change_timeout_ticks = 40;
    c.retransmit_ticks = 10;
    c.max_pending = 256;
    c.executed_window = 4_096;
    c.future_buffer_per_sender = 64;
    c.planted_bug = bug;
    c
}

/// The application: the executed chain, with request dedup by id like the ledger's.
#[derive(Clone, Debug, Default)]
pub struct App {
    pub blocks: Vec<Committed>,
    /// Request ids applied, in order (each once: a duplicate in a later block is skipped).
    pub applied: Vec<Digest>,
    pub applied_set: BTreeSet<Digest>,
    /// Blocks whose certificate the app could not verify (must stay empty).
    pub bad_certificates: Vec<u64>,
}

impl App {
    pub fn head(&self) -> (u64, Digest) {
        self.blocks
            .last()
            .map_or((0, GENESIS), |b| (b.proposal.seq, b.digest))
    }

    fn apply(&mut self, c: Committed, n: u32, quorum: usize) {
        if !crypto::verify_certificate(&c, n, quorum) {
            self.bad_certificates.push(c.proposal.seq);
        }
        for r in &c.proposal.requests {
            if self.applied_set.insert(r.id) {
                self.applied.push(r.id);
            }
        }
        self.blocks.push(c);
    }
}

#[derive(Debug)]
pub struct Node {
    pub id: ReplicaId,
    pub replica: Option<Replica>,
    pub durable: Vec<Durable>,
    pub app: App,
    pub byzantine: Vec<Behavior>,
    /// Crash after this many actions of the next step (a torn step).
    pub crash_after: Option<usize>,
    /// Messages seen (for replay), bounded.
    seen: VecDeque<Signed<Message>>,
    /// A state transfer in progress: served at this tick from this peer.
    transfer: Option<(u64, Vec<ReplicaId>)>,
}

impl Node {
    pub fn is_honest(&self) -> bool {
        self.byzantine.is_empty()
    }
    pub fn is_up(&self) -> bool {
        self.replica.is_some()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Open,
    /// Messages are dropped.
    Cut,
    /// Messages are held until the link is restored.
    Clogged,
}

#[derive(Debug)]
struct Envelope {
    at: u64,
    order: u64,
    to: ReplicaId,
    message: Signed<Message>,
}

impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Envelope {}
impl PartialOrd for Envelope {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Envelope {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

#[derive(Clone, Debug)]
enum Event {
    Crash { id: ReplicaId, torn: Option<usize> },
    Restart(ReplicaId),
    SetLinks(Vec<(ReplicaId, ReplicaId, Link)>),
}

#[derive(Clone, Debug)]
pub struct Submitted {
    pub request: Request,
    pub at: u64,
    last_try: u64,
}

pub struct World {
    pub cfg: RunConfig,
    pub n: u32,
    pub f: usize,
    pub quorum: usize,
    pub now: u64,
    pub nodes: Vec<Node>,
    pub submitted: BTreeMap<Digest, Submitted>,
    pub stats: Stats,
    pub healing: bool,
    rng: ChaCha8Rng,
    heap: BinaryHeap<Reverse<Envelope>>,
    order: u64,
    links: Vec<Vec<Link>>,
    held: Vec<(ReplicaId, ReplicaId, Signed<Message>)>,
    loopback: VecDeque<(ReplicaId, Signed<Message>)>,
    loss: f64,
    duplicate: f64,
    delay: (u64, u64),
    events: BTreeMap<u64, Vec<Event>>,
    requests_total: u64,
    request_times: Vec<u64>,
    checkers: Option<Checkers>,
}

impl World {
    pub fn new(cfg: RunConfig) -> World {
        let n = cfg.n;
        let probe = replica_config(0, n, None);
        let f = probe.f();
        let quorum = probe.quorum();
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ (u64::from(n) << 56));
        let mut w = World {
            n,
            f,
            quorum,
            now: 0,
            nodes: Vec::new(),
            submitted: BTreeMap::new(),
            stats: Stats::default(),
            healing: false,
            heap: BinaryHeap::new(),
            order: 0,
            links: vec![vec![Link::Open; n as usize]; n as usize],
            held: Vec::new(),
            loopback: VecDeque::new(),
            loss: 0.0,
            duplicate: 0.0,
            delay: (1, 3),
            events: BTreeMap::new(),
            requests_total: 0,
            request_times: Vec::new(),
            checkers: Some(Checkers::new(n as usize)),
            rng: ChaCha8Rng::seed_from_u64(0),
            cfg,
        };
        // Faulty replicas (Byzantine ones count against f together with crashes).
        let profile = w.cfg.profile;
        let byzantine_count = if profile == Profile::Byzantine {
            f
        } else if profile == Profile::Mixed {
            rng.gen_range(0..=f)
        } else {
            0
        };
        let mut ids: Vec<ReplicaId> = (0..n).collect();
        ids.shuffle(&mut rng);
        // Make the first primary Byzantine often: that is where equivocation bites.
        if byzantine_count > 0 && rng.gen_bool(0.5) {
            let pos = ids.iter().position(|i| *i == 0).unwrap_or(0);
            ids.swap(0, pos);
        }
        let byzantine: BTreeSet<ReplicaId> = ids[..byzantine_count].iter().copied().collect();
        for id in 0..n {
            let mut behaviors = Vec::new();
            if byzantine.contains(&id) {
                let count = rng.gen_range(1..=3);
                for _ in 0..count {
                    let b = *Behavior::ALL.choose(&mut rng).unwrap_or(&Behavior::Silent);
                    if !behaviors.contains(&b) {
                        behaviors.push(b);
                    }
                }
                behaviors.sort();
            }
            w.nodes.push(Node {
                id,
                replica: Some(Replica::new(
                    replica_config(id, n, w.cfg.planted_bug),
                    Restored::genesis(GENESIS),
                )),
                durable: Vec::new(),
                app: App::default(),
                byzantine: behaviors,
                crash_after: None,
                seen: VecDeque::new(),
                transfer: None,
            });
        }
        let crash_budget = f - byzantine_count;
        w.plan_faults(&mut rng, crash_budget);
        w.requests_total = rng.gen_range(15..=40);
        let chaos = w.cfg.chaos_ticks;
        let mut times: Vec<u64> = (0..w.requests_total)
            .map(|_| rng.gen_range(1..chaos.max(2)))
            .collect();
        times.sort_unstable();
        w.request_times = times;
        w.rng = rng;
        w.trace(|| {
            format!(
                "run n={} f={} profile={} seed={} byzantine={:?} loss={:.2} dup={:.2} delay={:?}",
                n,
                f,
                profile,
                w.cfg.seed,
                w.nodes
                    .iter()
                    .filter(|x| !x.is_honest())
                    .map(|x| (x.id, x.byzantine.clone()))
                    .collect::<Vec<_>>(),
                w.loss,
                w.duplicate,
                w.delay
            )
        });
        w
    }

    fn trace(&self, line: impl FnOnce() -> String) {
        if self.cfg.trace {
            eprintln!("[t={:>5}] {}", self.now, line());
        }
    }

    fn plan_faults(&mut self, rng: &mut ChaCha8Rng, crash_budget: usize) {
        let profile = self.cfg.profile;
        let chaos = self.cfg.chaos_ticks;
        let n = self.n;
        if profile.network_faults() {
            self.loss = rng.gen_range(0.0..0.2);
            self.duplicate = rng.gen_range(0.0..0.1);
            self.delay = (1, rng.gen_range(2..=12));
        } else if profile != Profile::Calm {
            self.delay = (1, rng.gen_range(2..=4));
        }
        if profile.partitions() {
            let episodes = rng.gen_range(1..=3);
            for _ in 0..episodes {
                let start = rng.gen_range(1..chaos);
                let length = rng.gen_range(20..=150);
                let end = (start + length).min(chaos);
                match rng.gen_range(0..3) {
                    0 => {
                        // Isolate one replica.
                        let r = rng.gen_range(0..n);
                        let cut: Vec<_> = (0..n)
                            .filter(|o| *o != r)
                            .flat_map(|o| [(r, o), (o, r)])
                            .collect();
                        self.schedule(start, Event::SetLinks(with(&cut, Link::Cut)));
                        self.schedule(end, Event::SetLinks(with(&cut, Link::Open)));
                    }
                    1 => {
                        // Split in two.
                        let mut ids: Vec<ReplicaId> = (0..n).collect();
                        ids.shuffle(rng);
                        let k = rng.gen_range(1..n);
                        let (a, b) = ids.split_at(k as usize);
                        let cut: Vec<_> = a
                            .iter()
                            .flat_map(|x| b.iter().flat_map(move |y| [(*x, *y), (*y, *x)]))
                            .collect();
                        self.schedule(start, Event::SetLinks(with(&cut, Link::Cut)));
                        self.schedule(end, Event::SetLinks(with(&cut, Link::Open)));
                    }
                    _ => {
                        // Clog random links, restore them one by one in random order.
                        let mut links: Vec<(ReplicaId, ReplicaId)> = (0..n)
                            .flat_map(|x| (0..n).filter(move |y| *y != x).map(move |y| (x, y)))
                            .filter(|_| rng.gen_bool(0.4))
                            .collect();
                        self.schedule(start, Event::SetLinks(with(&links, Link::Clogged)));
                        links.shuffle(rng);
                        for (i, l) in links.iter().enumerate() {
                            let at = (end + i as u64 * rng.gen_range(0..=5)).min(chaos);
                            self.schedule(at, Event::SetLinks(vec![(l.0, l.1, Link::Open)]));
                        }
                    }
                }
            }
        }
        if profile.crashes() && crash_budget > 0 {
            // Up to `crash_budget` replicas down at once.
            let episodes = rng.gen_range(1..=4);
            let honest: Vec<ReplicaId> = (0..n)
                .filter(|i| self.nodes[*i as usize].is_honest())
                .collect();
            let mut down_until: Vec<(ReplicaId, u64)> = Vec::new();
            for _ in 0..episodes {
                let start = rng.gen_range(1..chaos);
                down_until.retain(|(_, end)| *end > start);
                if down_until.len() >= crash_budget {
                    continue;
                }
                let candidates: Vec<ReplicaId> = honest
                    .iter()
                    .copied()
                    .filter(|i| !down_until.iter().any(|(d, _)| d == i))
                    .collect();
                let Some(&id) = candidates.choose(rng) else {
                    continue;
                };
                let end = (start + rng.gen_range(5..=120)).min(chaos);
                let torn = rng.gen_bool(0.5).then(|| rng.gen_range(0..4));
                self.schedule(start, Event::Crash { id, torn });
                self.schedule(end.max(start + 1), Event::Restart(id));
                down_until.push((id, end.max(start + 1)));
            }
        }
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.events.entry(at).or_default().push(event);
    }

    // ----- running -----------------------------------------------------------------------

    /// Runs the chaos phase, then the healing phase; returns how it ended.
    pub fn run(mut self) -> Outcome {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let r = self.run_inner();
            (r, self.stats.clone())
        }));
        match result {
            Ok(((violation, liveness), stats)) => Outcome {
                violation,
                liveness,
                stats,
            },
            Err(panic) => {
                let text = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Outcome {
                    violation: Some(format!("panic: {text}")),
                    liveness: None,
                    stats: Stats::default(),
                }
            }
        }
    }

    fn run_inner(&mut self) -> (Option<String>, Option<String>) {
        let chaos = self.cfg.chaos_ticks;
        let end = chaos + self.cfg.healing_ticks;
        while self.now < end {
            self.now += 1;
            if self.now == chaos {
                self.heal();
            }
            if let Err(v) = self.tick() {
                self.stats.ticks = self.now;
                return (Some(v), None);
            }
            if self.healing && self.all_done() {
                self.stats.ticks = self.now;
                return (None, None);
            }
        }
        self.stats.ticks = self.now;
        (None, Some(self.missing()))
    }

    fn all_done(&self) -> bool {
        self.submitted.len() as u64 == self.requests_total
            && self.nodes.iter().filter(|x| x.is_honest()).all(|x| {
                x.is_up()
                    && self
                        .submitted
                        .keys()
                        .all(|id| x.app.applied_set.contains(id))
            })
    }

    fn missing(&self) -> String {
        let mut parts = Vec::new();
        for node in self.nodes.iter().filter(|x| x.is_honest()) {
            let missing = self
                .submitted
                .keys()
                .filter(|id| !node.app.applied_set.contains(*id))
                .count();
            if missing > 0 {
                let r = node.replica.as_ref();
                parts.push(format!(
                    "replica {} misses {missing} request(s) (executed {}, view {:?}, view change {:?})",
                    node.id,
                    node.app.head().0,
                    r.map(|r| r.view()),
                    r.map(|r| r.in_view_change()),
                ));
            }
        }
        format!(
            "after {} healing ticks: {}",
            self.cfg.healing_ticks,
            parts.join("; ")
        )
    }

    /// Healing: every fault stops except Byzantine replicas.
    fn heal(&mut self) {
        self.trace(|| "healing: faults removed".into());
        self.healing = true;
        self.loss = 0.0;
        self.duplicate = 0.0;
        self.delay = (1, 3);
        self.events.clear();
        for row in &mut self.links {
            row.iter_mut().for_each(|l| *l = Link::Open);
        }
        for (from, to, m) in std::mem::take(&mut self.held) {
            self.enqueue(from, to, m);
        }
        for id in 0..self.n {
            if !self.nodes[id as usize].is_up() {
                self.restart(id);
            }
        }
    }

    fn tick(&mut self) -> Result<(), String> {
        if let Some(events) = self.events.remove(&self.now) {
            for e in events {
                self.apply_event(e);
            }
        }
        self.client();
        self.serve_transfers();
        // Deliver everything due.
        while let Some(Reverse(top)) = self.heap.peek() {
            if top.at > self.now {
                break;
            }
            let Some(Reverse(env)) = self.heap.pop() else {
                break;
            };
            self.deliver(env.to, env.message);
            self.check()?;
        }
        for id in 0..self.n {
            self.step_node(id, Input::Tick);
            self.drain_loopback();
        }
        self.byzantine_replay();
        self.check()
    }

    fn check(&mut self) -> Result<(), String> {
        let mut c = self.checkers.take().expect("checkers");
        let r = c.check(self);
        self.checkers = Some(c);
        r
    }

    fn apply_event(&mut self, e: Event) {
        match e {
            Event::Crash { id, torn } => {
                if !self.nodes[id as usize].is_up() {
                    return;
                }
                match torn {
                    Some(k) => {
                        self.trace(|| format!("replica {id} will crash after {k} actions"));
                        self.nodes[id as usize].crash_after = Some(k);
                    }
                    None => self.crash(id),
                }
            }
            Event::Restart(id) => {
                if !self.nodes[id as usize].is_up() {
                    self.restart(id);
                } else {
                    self.nodes[id as usize].crash_after = None;
                }
            }
            Event::SetLinks(changes) => {
                for (from, to, link) in changes {
                    self.links[from as usize][to as usize] = link;
                }
                let held = std::mem::take(&mut self.held);
                for (from, to, m) in held {
                    if self.links[from as usize][to as usize] == Link::Clogged {
                        self.held.push((from, to, m));
                    } else {
                        self.enqueue(from, to, m);
                    }
                }
            }
        }
    }

    fn crash(&mut self, id: ReplicaId) {
        self.trace(|| format!("replica {id} crashes"));
        let node = &mut self.nodes[id as usize];
        node.replica = None;
        node.crash_after = None;
        node.transfer = None;
        self.loopback.retain(|(to, _)| *to != id);
    }

    fn restart(&mut self, id: ReplicaId) {
        let node = &mut self.nodes[id as usize];
        let restored = Restored {
            last_executed: node.app.head(),
            durable: node.durable.clone(),
            recovering: false,
            nonce: 0,
        };
        node.replica = Some(Replica::new(
            replica_config(id, self.n, self.cfg.planted_bug),
            restored,
        ));
        self.trace(|| format!("replica {id} restarts"));
    }

    /// Clients submit requests during the chaos phase, each to one random replica; a request
    /// not executed by f+1 honest replicas after a while is re-sent to every replica.
    fn client(&mut self) {
        while self.request_times.first().is_some_and(|t| *t <= self.now) {
            self.request_times.remove(0);
            let i = self.submitted.len();
            let payload = format!("request {i} of seed {}", self.cfg.seed).into_bytes();
            let request = Request {
                id: crypto::sha256(&payload),
                timestamp_ms: self.now,
                payload: Arc::from(payload),
            };
            self.submitted.insert(
                request.id,
                Submitted {
                    request: request.clone(),
                    at: self.now,
                    last_try: self.now,
                },
            );
            self.stats.requests += 1;
            let to = self.rng.gen_range(0..self.n);
            self.trace(|| format!("client submits request {i} to {to}"));
            self.step_node(to, Input::Request(request));
            self.drain_loopback();
        }
        let retry = 80;
        let need = self.f + 1;
        let due: Vec<Request> = self
            .submitted
            .values()
            .filter(|s| self.now >= s.last_try + retry)
            .filter(|s| {
                self.nodes
                    .iter()
                    .filter(|x| x.is_honest() && x.app.applied_set.contains(&s.request.id))
                    .count()
                    < need
            })
            .map(|s| s.request.clone())
            .collect();
        for request in due {
            if let Some(s) = self.submitted.get_mut(&request.id) {
                s.last_try = self.now;
            }
            for to in 0..self.n {
                self.step_node(to, Input::Request(request.clone()));
                self.drain_loopback();
            }
        }
    }

    // ----- one replica step ------------------------------------------------------------

    fn step_node(&mut self, id: ReplicaId, input: Input) {
        let node = &mut self.nodes[id as usize];
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        let mut actions = Vec::new();
        let trace = self.cfg.trace;
        let label = if trace {
            Some(describe_input(&input))
        } else {
            None
        };
        if let Err(e) = replica.step(input, &mut actions) {
            self.stats.protocol_errors += 1;
            if let Some(label) = label {
                self.trace(|| format!("replica {id} rejects {label}: {e}"));
            }
            return;
        }
        if let Some(label) = label
            && !actions.is_empty()
        {
            self.trace(|| format!("replica {id} <- {label}"));
        }
        let cut = self.nodes[id as usize].crash_after.take();
        let count = actions.len();
        for (k, action) in actions.into_iter().enumerate() {
            if cut.is_some_and(|c| k >= c) {
                break;
            }
            self.trace(|| format!("replica {id} -> {}", describe_action(&action)));
            match action {
                Action::Persist(record) => {
                    let compact = matches!(record, Durable::StableCheckpoint { .. });
                    let node = &mut self.nodes[id as usize];
                    node.durable.push(record);
                    if compact {
                        Durable::compact(&mut node.durable);
                    }
                }
                Action::Send { to, message } => self.send(id, to, message),
                Action::Broadcast(message) => {
                    for to in 0..self.n {
                        if to != id {
                            self.send(id, to, message.clone());
                        }
                    }
                    self.loopback.push_back((id, crypto::sign(id, message)));
                }
                Action::Execute(committed) => {
                    self.stats.executed_blocks += 1;
                    let (n, q) = (self.n, self.quorum);
                    self.nodes[id as usize].app.apply(committed, n, q);
                }
                Action::FetchState { peers, .. } => {
                    let at = self.now + self.rng.gen_range(1..=5);
                    self.nodes[id as usize].transfer = Some((at, peers));
                }
                // Traced above; the replica counts it in its log stats.
                Action::Alarm(_) => {}
            }
        }
        if cut.is_some() {
            self.trace(|| format!("replica {id} crashed mid-step ({cut:?} of {count} actions)"));
            self.crash(id);
        }
        if let Some(r) = &self.nodes[id as usize].replica {
            self.stats.max_view = self.stats.max_view.max(r.view());
        }
    }

    fn drain_loopback(&mut self) {
        let mut budget = 100_000;
        while let Some((id, m)) = self.loopback.pop_front() {
            budget -= 1;
            assert!(budget > 0, "loopback storm");
            self.deliver(id, m);
        }
    }

    fn deliver(&mut self, to: ReplicaId, m: Signed<Message>) {
        if !self.nodes[to as usize].is_up() {
            self.stats.dropped += 1;
            return;
        }
        if !crypto::verify(&m, self.n) {
            self.stats.bad_signatures += 1;
            self.trace(|| format!("edge of {to} rejects a bad signature from {}", m.from));
            return;
        }
        self.stats.delivered += 1;
        let node = &mut self.nodes[to as usize];
        if node.byzantine.contains(&Behavior::Replay) && m.from != to {
            node.seen.push_back(m.clone());
            if node.seen.len() > 256 {
                node.seen.pop_front();
            }
        }
        self.step_node(to, Input::Message(m));
        self.drain_loopback();
    }

    // ----- network -------------------------------------------------------------------------

    /// Sends `message` from `from`; a Byzantine sender's messages are rewritten first.
    fn send(&mut self, from: ReplicaId, to: ReplicaId, message: Message) {
        let behaviors = self.nodes[from as usize].byzantine.clone();
        if behaviors.is_empty() {
            let signed = crypto::sign(from, message);
            self.enqueue(from, to, signed);
            return;
        }
        if behaviors.contains(&Behavior::Silent) {
            return;
        }
        let mut message = message;
        for b in &behaviors {
            message = match (b, message) {
                (Behavior::Equivocate, Message::PrePrepare(pp)) if to % 2 == 1 => {
                    let mut p: Proposal = (*pp.proposal).clone();
                    if p.requests.len() > 1 {
                        p.requests.reverse();
                    } else {
                        p.requests.clear();
                    }
                    let proposal = Arc::new(p);
                    Message::PrePrepare(pbft::PrePrepare {
                        view: pp.view,
                        digest: crypto::digest(&proposal),
                        proposal,
                    })
                }
                (Behavior::WrongDigest, Message::Prepare(mut v)) if self.rng.gen_bool(0.5) => {
                    v.digest = self.rng.r#gen();
                    Message::Prepare(v)
                }
                (Behavior::WrongDigest, Message::Commit(mut v)) if self.rng.gen_bool(0.5) => {
                    v.digest = self.rng.r#gen();
                    Message::Commit(v)
                }
                (Behavior::WrongDigest, Message::Checkpoint(mut c)) if self.rng.gen_bool(0.5) => {
                    c.digest = self.rng.r#gen();
                    Message::Checkpoint(c)
                }
                (Behavior::StaleView, Message::Prepare(mut v)) if v.view > 0 => {
                    v.view -= 1;
                    Message::Prepare(v)
                }
                (Behavior::StaleView, Message::Commit(mut v)) if v.view > 0 => {
                    v.view -= 1;
                    Message::Commit(v)
                }
                (Behavior::StaleView, Message::ViewChange(mut vc)) if vc.new_view > 1 => {
                    vc.new_view -= 1;
                    Message::ViewChange(vc)
                }
                (Behavior::HidePrepared, Message::ViewChange(mut vc)) => {
                    vc.prepared.clear();
                    Message::ViewChange(vc)
                }
                (_, m) => m,
            };
        }
        let mut signed = crypto::sign(from, message);
        if behaviors.contains(&Behavior::ForgeSignature) && self.rng.gen_bool(0.5) {
            match self.rng.gen_range(0..3) {
                0 => signed.signature = Signature([0; 64]),
                1 => signed.signature = Signature([self.rng.r#gen(); 64]),
                _ => signed.from = (from + 1) % self.n, // impersonation with its own key
            }
        }
        self.enqueue(from, to, signed);
    }

    fn byzantine_replay(&mut self) {
        for id in 0..self.n {
            let node = &mut self.nodes[id as usize];
            if !node.byzantine.contains(&Behavior::Replay) || node.seen.is_empty() {
                continue;
            }
            if !self.rng.gen_bool(0.3) {
                continue;
            }
            let i = self.rng.gen_range(0..node.seen.len());
            let m = node.seen[i].clone();
            let to = self.rng.gen_range(0..self.n);
            if to != id {
                self.enqueue(id, to, m);
            }
        }
    }

    fn enqueue(&mut self, from: ReplicaId, to: ReplicaId, message: Signed<Message>) {
        match self.links[from as usize][to as usize] {
            Link::Cut => {
                self.stats.dropped += 1;
                return;
            }
            Link::Clogged => {
                self.held.push((from, to, message));
                return;
            }
            Link::Open => {}
        }
        if self.loss > 0.0 && self.rng.gen_bool(self.loss) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.duplicate > 0.0 && self.rng.gen_bool(self.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = self.now + self.rng.gen_range(self.delay.0..=self.delay.1);
            self.order += 1;
            self.heap.push(Reverse(Envelope {
                at,
                order: self.order,
                to,
                message: message.clone(),
            }));
        }
    }

    // ----- state transfer ----------------------------------------------------------------

    /// Serves due state transfers from a peer's executed chain: every block is checked (commit
    /// certificate, digest, `prev` link) before it is applied, as the node does.
    fn serve_transfers(&mut self) {
        for id in 0..self.n as usize {
            let Some((at, peers)) = self.nodes[id].transfer.clone() else {
                continue;
            };
            if at > self.now {
                continue;
            }
            self.nodes[id].transfer = None;
            let head = self.nodes[id].app.head();
            let mut candidates: Vec<usize> = peers.iter().map(|p| *p as usize).collect();
            candidates.extend(0..self.n as usize);
            let Some(peer) = candidates.into_iter().find(|p| {
                *p != id && self.nodes[*p].is_up() && self.nodes[*p].app.head().0 > head.0
            }) else {
                continue;
            };
            let blocks: Vec<Committed> = self.nodes[peer].app.blocks[head.0 as usize..].to_vec();
            let mut prev = head.1;
            let mut ids = Vec::new();
            let mut last = head;
            for b in blocks {
                if !crypto::verify_certificate(&b, self.n, self.quorum) || b.proposal.prev != prev {
                    break;
                }
                prev = b.digest;
                last = (b.proposal.seq, b.digest);
                ids.extend(b.proposal.requests.iter().map(|r| r.id));
                let (n, q) = (self.n, self.quorum);
                self.nodes[id].app.apply(b, n, q);
            }
            if last.0 > head.0 {
                self.stats.state_transfers += 1;
                self.trace(|| {
                    format!(
                        "replica {id} state-transferred {} -> {} from {peer}",
                        head.0, last.0
                    )
                });
                self.step_node(
                    id as ReplicaId,
                    Input::StateTransferred {
                        seq: last.0,
                        digest: last.1,
                        request_ids: ids,
                    },
                );
                self.drain_loopback();
            }
        }
    }
}

fn with(links: &[(ReplicaId, ReplicaId)], state: Link) -> Vec<(ReplicaId, ReplicaId, Link)> {
    links.iter().map(|(a, b)| (*a, *b, state)).collect()
}

fn short(d: &Digest) -> String {
    format!("{:02x}{:02x}", d[0], d[1])
}

fn describe_message(m: &Message) -> String {
    match m {
        Message::Forward(r) => format!("Forward({} requests)", r.len()),
        Message::PrePrepare(pp) => format!(
            "PrePrepare(v{} s{} {} prev {} {} reqs)",
            pp.view,
            pp.proposal.seq,
            short(&pp.digest),
            short(&pp.proposal.prev),
            pp.proposal.requests.len()
        ),
        Message::Prepare(v) => format!("Prepare(v{} s{} {})", v.view, v.seq, short(&v.digest)),
        Message::Commit(v) => format!("Commit(v{} s{} {})", v.view, v.seq, short(&v.digest)),
        Message::Checkpoint(c) => format!("Checkpoint(s{} {})", c.seq, short(&c.digest)),
        Message::ViewChange(vc) => format!(
            "ViewChange(v{} ck s{} {} certs)",
            vc.new_view,
            vc.checkpoint.seq,
            vc.prepared.len()
        ),
        Message::NewView(nv) => format!(
            "NewView(v{} {} vcs, O = {:?})",
            nv.view,
            nv.view_changes.len(),
            nv.pre_prepares
                .iter()
                .map(|pp| (pp.proposal.seq, short(&pp.digest)))
                .collect::<Vec<_>>()
        ),
        Message::RecoveryQuery(q) => format!("RecoveryQuery({:x})", q.nonce),
        Message::RecoveryAnswer(a) => format!(
            "RecoveryAnswer(v{} seen v{} s{})",
            a.view, a.querier_view, a.last_executed
        ),
    }
}

fn describe_input(i: &Input) -> String {
    match i {
        Input::Tick => "Tick".into(),
        Input::Message(m) => format!("{} from {}", describe_message(&m.message), m.from),
        Input::Request(r) => format!("Request({})", short(&r.id)),
        Input::Cut => "Cut".into(),
        Input::StateTransferred { seq, digest, .. } => {
            format!("StateTransferred(s{seq} {})", short(digest))
        }
    }
}

fn describe_action(a: &Action) -> String {
    match a {
        Action::Send { to, message } => format!("send to {to}: {}", describe_message(message)),
        Action::Broadcast(m) => format!("broadcast {}", describe_message(m)),
        Action::Persist(d) => format!(
            "persist {:?}",
            d.seq().map_or("view".to_string(), |s| format!("s{s}"))
        ),
        Action::Execute(c) => format!(
            "EXECUTE s{} {} (view {}, {} reqs)",
            c.proposal.seq,
            short(&c.digest),
            c.commit_view,
            c.proposal.requests.len()
        ),
        Action::FetchState { seq, peers, .. } => format!("fetch state to s{seq} from {peers:?}"),
        Action::Alarm(alarm) => format!("ALARM {alarm}"),
    }
}
