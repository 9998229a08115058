//! The simulated world: n replicas in one thread, their nodes' edge (signatures and transactions
//! checked before a replica sees a message), clients, and the run's two phases. The network is
//! in `network.rs`, faults and healing in `faults.rs`, Byzantine replicas in `adversary/`, state
//! transfer in `transfer.rs`, and the invariants checked after every step in `invariants/`.
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use pbft::{
    Action, Committed, Config, Digest, Durable, Input, Message, PlantedBug, Replica, ReplicaId,
    Request, Restored, Signed,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::adversary::{self, Behavior, Memory, Plot};
use crate::client::{self, Transactions};
use crate::crypto::{self, GENESIS};
use crate::faults::{Clock, Event, Torn};
use crate::invariants::{Checkers, Failure, RaisedAlarm, SentVote};
use crate::network::{Network, Packet};
use crate::profile::Profile;
use crate::trace;

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
    /// Whether the application checks the size of each executed block's commit certificate
    /// (off: only the protocol's own agreement stands between a weakened quorum and a fork).
    pub certificate_check: bool,
    /// After healing, every request must be executed by every honest replica within this many
    /// ticks of its submission (or of healing, if submitted before): no censorship.
    pub censorship_bound_ticks: u64,
    /// During healing, clients submit one more request every this many ticks while older ones
    /// are outstanding.
    pub load_interval_ticks: u64,
}

/// Real time (ms) one tick of the world stands for. One ms keeps the slow profile's delays
/// (33-36 T, T = 40 ticks) below τ: a network slower than τ commits nothing by design (a
/// pre-prepare older than τ is withheld everywhere; pbft's crate docs, "Block time").
pub const MS_PER_TICK: u64 = 1;

/// Real time (ms since the Unix epoch) at tick 0: far enough from 0 that clocks an hour behind
/// stay positive.
pub const START_MS: u64 = 1_000_000_000;

/// The genesis's time: 10 s before the run starts.
pub const GENESIS_TIME_MS: u64 = START_MS - 10_000;

/// Real time (ms) at world tick `now`.
pub fn real_ms(now: u64) -> u64 {
    START_MS + now * MS_PER_TICK
}

/// How long a slow network (the `slow` profile) stays slow after healing: 750 T, time for the
/// doubled timeout to outgrow the delay; honest replicas must commit again before it ends.
pub const SLOW_HEALING_TICKS: u64 = 30_000;

/// Chaos ticks of `--long` runs: partitions last far longer than the capped view-change timeout.
pub const LONG_CHAOS_TICKS: u64 = 1_500;

/// The censorship bound before what skewed clocks add: time for the chaos phase's faults to
/// settle. The `censor` profile has no fault but its censors (f view changes and a client's
/// retries take a few hundred ticks), so its bound is tighter, tight enough that a view's
/// primary given a longer wait than the design's shows (`--planted-bug owed-wait-too-long`).
fn censorship_base_ticks(profile: Profile) -> u64 {
    match profile {
        Profile::Censor => 1_000,
        _ => 2_000,
    }
}

impl RunConfig {
    pub fn new(n: u32, profile: Profile, seed: u64) -> Self {
        // A slow network (finding 8) stays slow for `SLOW_HEALING_TICKS` into healing; the
        // bounds count from healing, so they grow by as much, and clients send less.
        let (slow, stretch) = if profile.slow_delay(1).is_some() {
            (SLOW_HEALING_TICKS, 40)
        } else {
            (0, 1)
        };
        RunConfig {
            n,
            profile,
            seed,
            trace: false,
            planted_bug: None,
            chaos_ticks: 300,
            healing_ticks: 4_000 + slow,
            certificate_check: true,
            censorship_bound_ticks: censorship_base_ticks(profile) + slow,
            load_interval_ticks: 8 * stretch,
        }
    }

    /// A run with a long chaos phase ([`LONG_CHAOS_TICKS`]).
    pub fn long(mut self) -> Self {
        self.chaos_ticks = LONG_CHAOS_TICKS;
        self
    }

    /// The command that replays this run with a trace.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!(
            "cargo run --release -p sim -- --profile {} --n {} --seed {} --trace",
            self.profile, self.n, self.seed
        );
        if self.chaos_ticks == LONG_CHAOS_TICKS {
            cmd.push_str(" --long");
        }
        if let Some((name, _)) = crate::PLANTED_BUGS
            .iter()
            .find(|(_, bug)| Some(*bug) == self.planted_bug)
        {
            cmd.push_str(" --planted-bug ");
            cmd.push_str(name);
        }
        if !self.certificate_check {
            cmd.push_str(" --no-certificate-check");
        }
        cmd
    }
}

/// How a run ended.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// A safety invariant broken (or a replica panicked).
    pub violation: Option<String>,
    /// Not every request committed everywhere within the bounds.
    pub liveness: Option<String>,
    pub stats: Stats,
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub ticks: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub bad_signatures: u64,
    /// Messages dropped at the edge for a request that is not a validly signed transaction.
    pub bad_requests: u64,
    /// Blocks from state transfer refused (certificate, chain, digest or transactions).
    pub bad_blocks: u64,
    pub protocol_errors: u64,
    pub executed_blocks: u64,
    pub state_transfers: u64,
    pub max_view: u64,
    pub requests: u64,
    /// Restarts of a replica that lost its state (recovering).
    pub amnesia_restarts: u64,
    /// ... while the others were in a view above 0 (recovery learns a higher view).
    pub amnesia_behind_view: u64,
    /// ... of the primary of the others' view.
    pub amnesia_of_primary: u64,
    /// Crashes of a replica while it was recovering from lost state.
    pub crashes_mid_recovery: u64,
    /// New primaries that crashed right after sending their new-view (finding 7).
    pub new_view_crashes: u64,
    /// Recovery answers a Byzantine replica rewrote with a lie (finding 2).
    pub recovery_lies: u64,
    /// New-views read back from their bytes, and those that did not read back (a Byzantine
    /// sender's: two batches under one digest), dropped ([`World::off_the_wire`]).
    pub new_views_read_back: u64,
    pub new_views_unreadable: u64,
    /// Stale view-changes and recovery queries honest replicas left unanswered, too soon after
    /// the last answer to their sender (`AnswerPace`).
    pub answers_paced: u64,
    /// Prepares honest replicas withheld for a block time more than τ from their clocks.
    pub withheld_prepares: u64,
    /// Pre-prepares honest replicas refused for a block time not later than the one before.
    pub block_time_refusals: u64,
    /// The longest a request waited after healing (or its submission) before every honest
    /// replica executed it, to within a check's period; compare `censorship_bound_ticks`.
    pub longest_wait_ticks: u64,
    /// The run's censorship bound (with what skewed clocks add).
    pub censorship_bound_ticks: u64,
    /// Amnesia struck right after a view-change that reached only `keep-lost-life` replicas
    /// (the rest were still in the victim's send queue).
    pub lost_life_view_changes: u64,
    /// New-views a `keep-lost-life` primary built on a view-change of a lost life.
    pub lost_life_new_views: u64,
    /// Crashes mid-step with committed blocks not applied yet (the node applies them last).
    pub crashes_before_applies: u64,
    /// ... that left the ledger behind the replica's own stable checkpoint (red team s27).
    pub crashes_behind_own_checkpoint: u64,
    /// Crashes as a view was entered, after the first of its two records (red team s37 F1).
    pub crashes_at_view_entry: u64,
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

    /// The last block at a multiple of `checkpoint_interval`, as `Restored`'s
    /// `executed_checkpoint`.
    pub fn last_checkpoint(&self, checkpoint_interval: u64) -> Option<(u64, Digest)> {
        self.blocks
            .iter()
            .rev()
            .find(|b| b.proposal.seq.is_multiple_of(checkpoint_interval))
            .map(|b| (b.proposal.seq, b.digest))
    }

    /// The block time of the head (the genesis's at 0).
    pub fn head_time_ms(&self) -> u64 {
        self.blocks
            .last()
            .map_or(GENESIS_TIME_MS, |b| b.proposal.time_ms)
    }

    /// Applies a committed block; `quorum` is the certificate size required (0: unchecked).
    pub fn apply(&mut self, c: Committed, n: u32, quorum: usize) {
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

/// The bound a recovering node waits for, once 2f+1 answers gave it (its last recovery record).
pub fn recovery_bound(node: &Node) -> Option<(pbft::View, pbft::SeqNo)> {
    node.durable
        .iter()
        .rev()
        .find_map(|r| match r {
            Durable::Recovery { bound } => Some(*bound),
            _ => None,
        })
        .flatten()
}

#[derive(Debug)]
pub struct Node {
    pub id: ReplicaId,
    pub replica: Option<Replica>,
    pub durable: Vec<Durable>,
    pub app: App,
    pub byzantine: Vec<Behavior>,
    pub adversary: Memory,
    /// Crash in the middle of a later step (a torn step).
    pub crash_after: Option<Torn>,
    /// How many times it lost its durable state and ledger (amnesia).
    pub amnesia: u32,
    /// State-transfer attempts, to rotate peers.
    pub fetch_round: u64,
    /// State transfers that applied blocks.
    pub transfers: u32,
    pub clock: Clock,
}

impl Node {
    pub fn is_honest(&self) -> bool {
        self.byzantine.is_empty()
    }
    pub fn is_up(&self) -> bool {
        self.replica.is_some()
    }
    /// Counts toward f now: Byzantine, down, or amnesiac (for the rest of the run).
    pub fn is_faulty(&self) -> bool {
        !self.is_honest() || self.amnesia > 0 || !self.is_up()
    }
}

#[derive(Clone, Debug)]
pub struct Submitted {
    pub request: Request,
    pub at: u64,
    last_try: u64,
}

/// A request not executed by f+1 honest replicas is re-sent to every replica after this long.
const RETRY_TICKS: u64 = 80;

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
    pub healed_at: u64,
    pub plot: Plot,
    /// The slow network's delay once it slowed down (kept into healing).
    pub(crate) slow: Option<(u64, u64)>,
    /// Blocks each replica had executed when healing began (to see commits while slow).
    pub executed_at_healing: Vec<usize>,
    /// The slow network just became fast again (checked once, then reset).
    pub slow_ended: bool,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) net: Network,
    pub(crate) events: BTreeMap<u64, Vec<Event>>,
    pub(crate) loopback: VecDeque<(ReplicaId, Signed<Message>)>,
    /// Votes honest replicas sent since the last check.
    pub(crate) sent_votes: Vec<SentVote>,
    /// Alarms honest replicas raised since the last check.
    pub(crate) alarms: Vec<RaisedAlarm>,
    txs: Transactions,
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
        let (behaviors, plot) = adversary::cast(cfg.profile, n, f, &mut rng);
        let skewed_primaries = behaviors
            .iter()
            .filter(|b| b.contains(&adversary::Behavior::SkewedClock))
            .count() as u64;
        // Honest clocks are off real time in the profiles that skew them (up to 400 ms);
        // elsewhere a wait is off by message delays only.
        let slack_ms = match cfg.profile.clock_skew() {
            true => crate::faults::MAX_HONEST_SKEW_MS,
            false => 100,
        };
        let owed = adversary::skewed_clock::owed_wait_ticks(
            plot.clock_skew_ms,
            skewed_primaries,
            slack_ms,
            &probe,
        );
        let mut cfg = cfg;
        cfg.censorship_bound_ticks += owed;
        cfg.healing_ticks += owed;
        let byzantine = behaviors.iter().filter(|b| !b.is_empty()).count();
        assert!(byzantine <= f, "more Byzantine replicas than f");
        let nodes = behaviors
            .into_iter()
            .enumerate()
            .map(|(id, byzantine)| {
                let id = id as ReplicaId;
                Node {
                    id,
                    // Started below, once the faults gave it its clock.
                    replica: None,
                    durable: Vec::new(),
                    app: App::default(),
                    byzantine,
                    adversary: Memory::default(),
                    crash_after: None,
                    amnesia: 0,
                    fetch_round: 0,
                    transfers: 0,
                    clock: Clock::default(),
                }
            })
            .collect();
        let mut w = World {
            n,
            f,
            quorum,
            now: 0,
            nodes,
            submitted: BTreeMap::new(),
            stats: Stats {
                censorship_bound_ticks: cfg.censorship_bound_ticks,
                ..Stats::default()
            },
            healing: false,
            healed_at: 0,
            plot,
            slow: None,
            executed_at_healing: Vec::new(),
            slow_ended: false,
            net: Network::new(n),
            events: BTreeMap::new(),
            loopback: VecDeque::new(),
            sent_votes: Vec::new(),
            alarms: Vec::new(),
            txs: Transactions::new(n),
            request_times: Vec::new(),
            checkers: Some(Checkers::new(n as usize)),
            rng: ChaCha8Rng::seed_from_u64(0),
            cfg,
        };
        w.plan_faults(&mut rng, f - byzantine);
        for id in 0..n {
            let restored = Restored::genesis(GENESIS, GENESIS_TIME_MS, w.clock_ms(id));
            w.nodes[id as usize].replica = Some(Replica::new(
                replica_config(id, n, w.cfg.planted_bug),
                restored,
            ));
        }
        let requests = rng.gen_range(15..=40);
        let chaos = w.cfg.chaos_ticks;
        let mut times: Vec<u64> = (0..requests)
            .map(|_| rng.gen_range(1..chaos.max(2)))
            .collect();
        times.sort_unstable();
        w.request_times = times;
        w.rng = rng;
        w.trace(|| {
            format!(
                "run n={} f={} profile={} seed={} byzantine={:?} plot={:?} loss={:.2} dup={:.2} delay={:?} clocks={:?}",
                n,
                f,
                w.cfg.profile,
                w.cfg.seed,
                w.nodes
                    .iter()
                    .filter(|x| !x.is_honest())
                    .map(|x| (x.id, x.byzantine.clone()))
                    .collect::<Vec<_>>(),
                w.plot,
                w.net.loss,
                w.net.duplicate,
                w.net.delay,
                w.nodes
                    .iter()
                    .map(|x| (x.clock.rate, x.clock.offset_ms()))
                    .collect::<Vec<_>>(),
            )
        });
        w
    }

    /// Replica `id`'s wall clock now (ms): real time plus its offset, and a skewed-clock
    /// replica's skew (`adversary::skewed_clock`).
    pub fn clock_ms(&self, id: ReplicaId) -> u64 {
        let node = &self.nodes[id as usize];
        let offset = node.clock.offset_ms() + self.clock_skew_ms(id);
        real_ms(self.now).saturating_add_signed(offset)
    }

    pub(crate) fn trace(&self, line: impl FnOnce() -> String) {
        if self.cfg.trace {
            eprintln!("[t={:>5}] {}", self.now, line());
        }
    }

    /// The certificate size the application requires (0: the check is off).
    pub(crate) fn certificate_quorum(&self) -> usize {
        if self.cfg.certificate_check {
            self.quorum
        } else {
            0
        }
    }

    // ----- running -----------------------------------------------------------------------

    /// Runs the chaos phase, then the healing phase; returns how it ended.
    pub fn run(mut self) -> Outcome {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let r = self.run_inner();
            self.stats.dropped = self.net.dropped;
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
            let result = self.tick();
            self.stats.ticks = self.now;
            match result {
                Err(Failure::Safety(v)) => return (Some(v), None),
                Err(Failure::Liveness(l)) => return (None, Some(l)),
                Ok(()) => {}
            }
            if self.healing && self.all_done() {
                return (None, None);
            }
        }
        (None, Some(self.missing()))
    }

    /// Every request submitted, and executed by every honest replica; no honest replica
    /// stranded in recovery.
    fn all_done(&self) -> bool {
        self.request_times.is_empty()
            && self.submitted.keys().all(|id| self.done(id))
            && self.stranded_in_recovery().is_empty()
    }

    /// Honest replicas still recovering from lost state (passive) although the others are in
    /// a view at least as high as the one they wait for: with load, the cluster then moves L
    /// past their execution and they must take part again. One whose earlier life asked alone
    /// for a view the others never reached waits for them there (pbft's crate docs), as that
    /// life would have: not counted. A replica still changing to a view (no new-view for it
    /// yet) has not reached it.
    fn stranded_in_recovery(&self) -> Vec<ReplicaId> {
        let others_view = |id: ReplicaId| {
            self.nodes
                .iter()
                .filter(|x| x.id != id && x.is_honest())
                .filter_map(|x| x.replica.as_ref())
                .filter(|r| !r.is_recovering() && !r.in_view_change())
                .map(Replica::view)
                .max()
                .unwrap_or(0)
        };
        self.nodes
            .iter()
            .filter(|x| x.is_honest())
            .filter(|x| x.replica.as_ref().is_some_and(Replica::is_recovering))
            .filter(|x| recovery_bound(x).is_none_or(|(view, _)| view <= others_view(x.id)))
            .map(|x| x.id)
            .collect()
    }

    /// Executed by every honest replica (up or not).
    pub fn done(&self, id: &Digest) -> bool {
        self.nodes
            .iter()
            .filter(|x| x.is_honest())
            .all(|x| x.is_up() && x.app.applied_set.contains(id))
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
        for id in self.stranded_in_recovery() {
            let node = &self.nodes[id as usize];
            parts.push(format!(
                "replica {id} is still recovering (bound {:?}, view {:?}, executed {})",
                recovery_bound(node),
                node.replica.as_ref().map(Replica::view),
                node.app.head().0,
            ));
        }
        format!(
            "after {} healing ticks: {}",
            self.cfg.healing_ticks,
            parts.join("; ")
        )
    }

    fn tick(&mut self) -> Result<(), Failure> {
        if let Some(events) = self.events.remove(&self.now) {
            for e in events {
                self.apply_event(e);
            }
        }
        self.client();
        while let Some(envelope) = self.net.pop_due(self.now) {
            self.deliver(envelope);
            self.check()?;
        }
        for id in 0..self.n {
            for _ in 0..self.nodes[id as usize].clock.advance() {
                let now_ms = self.clock_ms(id);
                self.step_node(id, Input::Tick { now_ms });
                self.drain_loopback();
            }
        }
        self.byzantine_tick();
        self.check()?;
        let mut c = self.checkers.take().expect("checkers");
        let r = c.check_liveness(self);
        self.checkers = Some(c);
        r
    }

    fn check(&mut self) -> Result<(), Failure> {
        let votes = std::mem::take(&mut self.sent_votes);
        let alarms = std::mem::take(&mut self.alarms);
        let mut c = self.checkers.take().expect("checkers");
        let r = c.check(self, &votes, &alarms);
        self.checkers = Some(c);
        r
    }

    // ----- clients -------------------------------------------------------------------------

    /// Clients submit requests during the chaos phase, each to one random replica, and during
    /// healing keep a background load while older requests are outstanding or an honest
    /// replica is recovering (the cluster must move L past its execution for it to vote
    /// again); a request not executed by f+1 honest replicas after a while is re-sent to every
    /// replica.
    fn client(&mut self) {
        while self.request_times.first().is_some_and(|t| *t <= self.now) {
            self.request_times.remove(0);
            self.submit();
        }
        if self.healing
            && self.now.is_multiple_of(self.cfg.load_interval_ticks)
            && self.now < self.healed_at + self.cfg.censorship_bound_ticks + RETRY_TICKS
            && (self
                .submitted
                .iter()
                .any(|(id, s)| s.at < self.healed_at && !self.done(id))
                || !self.stranded_in_recovery().is_empty())
        {
            self.submit();
        }
        let need = self.f + 1;
        let due: Vec<Request> = self
            .submitted
            .values()
            .filter(|s| self.now >= s.last_try + RETRY_TICKS)
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
                if self.admit_request(to, &request) {
                    self.step_node(to, Input::Request(request.clone()));
                    self.drain_loopback();
                }
            }
        }
    }

    fn submit(&mut self) {
        let i = self.submitted.len() as u64;
        let to = self.rng.gen_range(0..self.n);
        let (request, subject) = self.txs.request(i);
        if self.plot.censored_patient.as_deref() == Some(subject.as_str()) {
            self.plot.censored.insert(request.id);
        }
        self.submitted.insert(
            request.id,
            Submitted {
                request: request.clone(),
                at: self.now,
                last_try: self.now,
            },
        );
        self.stats.requests += 1;
        self.trace(|| format!("client submits request {i} ({subject}) to {to}"));
        if self.admit_request(to, &request) {
            self.step_node(to, Input::Request(request));
            self.drain_loopback();
            // Half the clients wait for their block (the node's `submit_applied`): the node asks
            // its primary for one at once (`Wire::Cut`, handed over here without the network).
            if self.rng.gen_bool(0.5) {
                self.cut(to);
            }
        }
    }

    /// An [`Input::Cut`] at the replica `via` takes for the primary.
    fn cut(&mut self, via: ReplicaId) {
        let Some(primary) = self.nodes[via as usize]
            .replica
            .as_ref()
            .map(|r| r.primary())
        else {
            return;
        };
        self.trace(|| format!("{via} asks primary {primary} for a block"));
        self.step_node(primary, Input::Cut);
        self.drain_loopback();
    }

    /// The node's edge check of a request: the exact bytes a client submitted (fast path), or a
    /// transaction that decodes and verifies.
    pub(crate) fn authentic(&self, r: &Request) -> bool {
        self.submitted
            .get(&r.id)
            .is_some_and(|s| client::same(&s.request, r))
            || self.txs.authentic(r)
    }

    // ----- one replica step ------------------------------------------------------------

    pub(crate) fn step_node(&mut self, id: ReplicaId, input: Input) {
        let node = &mut self.nodes[id as usize];
        let Some(replica) = node.replica.as_mut() else {
            return;
        };
        let mut actions = Vec::new();
        let label = self.cfg.trace.then(|| trace::input(&input));
        let before = replica.log_stats();
        let result = replica.step(input, &mut actions);
        // Before the actions: a replica that crashes mid-step was in this view all the same.
        let view = replica.view();
        let after = replica.log_stats();
        let alarms_counted = after.alarms - before.alarms;
        if node.is_honest() {
            self.stats.withheld_prepares += after.withheld_prepares - before.withheld_prepares;
            match result {
                Err(pbft::ProtocolError::BlockTimeNotIncreasing { .. }) => {
                    self.stats.block_time_refusals += 1;
                }
                Err(
                    pbft::ProtocolError::NewViewResentTooSoon
                    | pbft::ProtocolError::RecoveryQueryTooSoon,
                ) => self.stats.answers_paced += 1,
                _ => {}
            }
        }
        let raised = actions
            .iter()
            .filter(|a| matches!(a, Action::Alarm(_)))
            .count() as u64;
        if alarms_counted > raised && node.is_honest() {
            let what = format!(
                "{} counted while rejecting an input",
                alarms_counted - raised
            );
            self.alarms.push(RaisedAlarm {
                id,
                at: self.now,
                what,
            });
        }
        self.stats.max_view = self.stats.max_view.max(view);
        if let Err(e) = result {
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
        let honest = self.nodes[id as usize].is_honest();
        let actions = node_order(actions);
        let first_apply = actions.iter().position(|a| matches!(a, Action::Execute(_)));
        let view_entry = actions.iter().position(|a| {
            matches!(
                a,
                Action::Persist(Durable::View(_) | Durable::Inherited { .. })
            )
        });
        let node = &mut self.nodes[id as usize];
        let cut = match node.crash_after.take() {
            Some(Torn::After(k)) => Some(k),
            Some(Torn::BeforeApplies) if first_apply.is_some() => first_apply,
            Some(Torn::AtViewEntry { more, down_ticks }) if view_entry.is_some() => {
                let restart_at = self.now + down_ticks;
                self.schedule(restart_at, Event::Restart(id));
                view_entry.map(|k| k + 1 + more)
            }
            // Waits for a step that commits blocks, or enters a view.
            waiting @ Some(Torn::BeforeApplies | Torn::AtViewEntry { .. }) => {
                node.crash_after = waiting;
                None
            }
            None => None,
        };
        let count = actions.len();
        let last_apply = actions
            .iter()
            .rposition(|a| matches!(a, Action::Execute(_)));
        // The stable-checkpoint record of a block this step commits but has not applied.
        let behind_at = actions.iter().position(|a| match a {
            Action::Persist(Durable::StableCheckpoint { checkpoint, .. }) => actions
                .iter()
                .any(|b| matches!(b, Action::Execute(c) if c.proposal.seq <= checkpoint.seq)),
            _ => false,
        });
        // The first action a crash mid-step leaves undone.
        let mut crashed_before = cut;
        let mut reads = Vec::new();
        for (k, action) in actions.into_iter().enumerate() {
            if cut.is_some_and(|c| k >= c) {
                break;
            }
            self.trace(|| format!("replica {id} -> {}", trace::action(&action)));
            match action {
                Action::Persist(record) => {
                    let compact = matches!(record, Durable::StableCheckpoint { .. });
                    let node = &mut self.nodes[id as usize];
                    node.durable.push(record);
                    if compact {
                        Durable::compact(&mut node.durable);
                    }
                    if behind_at == Some(k) && honest && self.crash_behind_checkpoint(id) {
                        crashed_before = Some(k + 1);
                        break;
                    }
                }
                Action::Send { to, mut message } => {
                    if honest {
                        self.sent_votes.extend(SentVote::of(id, &message));
                    }
                    // The node's duty: a recovery answer claims the chain's head with its
                    // certificate (a Byzantine sender's lies are added in `send`).
                    if let Message::RecoveryAnswer(answer) = &mut message {
                        answer.prove_executed(self.nodes[id as usize].app.blocks.last());
                    }
                    self.send(id, to, message);
                }
                Action::Broadcast(message) => {
                    if honest {
                        self.sent_votes.extend(SentVote::of(id, &message));
                    }
                    let missed = match &message {
                        Message::NewView(_) if honest => self.crash_on_new_view(id),
                        _ => None,
                    };
                    for to in 0..self.n {
                        if to != id && !missed.as_ref().is_some_and(|m| m.contains(&to)) {
                            self.send(id, to, message.clone());
                        }
                    }
                    if missed.is_some() {
                        crashed_before = Some(k + 1);
                        break;
                    }
                    // A Byzantine replica's own view-change is the doctored one, so that its
                    // new-view carries it.
                    let own = match &message {
                        Message::ViewChange(_) if !honest => {
                            self.rewrite(id, id, message.clone()).unwrap_or(message)
                        }
                        _ => message,
                    };
                    self.loopback.push_back((id, crypto::sign(id, own)));
                }
                Action::Execute(committed) => {
                    self.stats.executed_blocks += 1;
                    let (n, q) = (self.n, self.certificate_quorum());
                    self.nodes[id as usize].app.apply(committed, n, q);
                }
                Action::FetchState { peers, .. } => self.request_state(id, peers),
                Action::ReadExecuted { seq } => reads.push(seq),
                Action::Alarm(alarm) => {
                    if honest {
                        self.alarms.push(RaisedAlarm {
                            id,
                            at: self.now,
                            what: alarm.to_string(),
                        });
                    }
                }
            }
        }
        if let Some(k) = crashed_before {
            self.trace(|| format!("replica {id} crashed mid-step ({k} of {count} actions)"));
            if view_entry.is_some_and(|entry| entry < k) {
                self.stats.crashes_at_view_entry += 1;
            }
            if last_apply.is_some_and(|last| last >= k) {
                self.stats.crashes_before_applies += 1;
                let node = &self.nodes[id as usize];
                let stable = node.durable.iter().filter_map(|r| match r {
                    Durable::StableCheckpoint { checkpoint, .. } => Some(checkpoint.seq),
                    _ => None,
                });
                if stable.max().is_some_and(|seq| seq > node.app.head().0) {
                    self.stats.crashes_behind_own_checkpoint += 1;
                }
            }
            self.crash(id);
            return;
        }
        // The node's answer from its chain (`Action::ReadExecuted`).
        for seq in reads {
            let digest = self.nodes[id as usize]
                .app
                .blocks
                .iter()
                .find(|b| b.proposal.seq == seq)
                .map(|b| b.digest);
            if let Some(digest) = digest {
                self.step_node(id, Input::Executed { seq, digest });
            }
        }
    }

    pub(crate) fn drain_loopback(&mut self) {
        let mut budget = 100_000;
        while let Some((id, m)) = self.loopback.pop_front() {
            budget -= 1;
            assert!(budget > 0, "loopback storm");
            self.deliver_message(id, m);
        }
    }

    fn deliver(&mut self, envelope: crate::network::Envelope) {
        let to = envelope.to;
        if !self.nodes[to as usize].is_up() {
            self.net.dropped += 1;
            return;
        }
        match envelope.packet {
            Packet::Pbft(m) => {
                if let Some(m) = self.off_the_wire(envelope.from, m) {
                    self.deliver_message(to, m);
                }
            }
            Packet::FetchBlocks { after } => self.serve_blocks(to, envelope.from, after),
            Packet::Blocks(blocks) => self.receive_blocks(to, envelope.from, blocks),
        }
    }

    /// A new-view as the transport hands it over: read back from its bytes (`pbft::NewView`'s
    /// encoding: each batch once, shared). What an honest validator sends always reads back,
    /// whole (else the run fails); what does not is dropped, as a node drops the connection it
    /// came on. Other messages are passed as they are.
    fn off_the_wire(&mut self, sender: ReplicaId, m: Signed<Message>) -> Option<Signed<Message>> {
        if !matches!(m.message, Message::NewView(_)) {
            return Some(m);
        }
        let bytes = borsh::to_vec(&m).expect("a message encodes");
        match borsh::from_slice::<Signed<Message>>(&bytes) {
            Ok(read) => {
                assert!(read == m, "a new-view reads back as it was sent");
                self.stats.new_views_read_back += 1;
                Some(read)
            }
            Err(error) => {
                assert!(
                    !self.nodes[sender as usize].is_honest(),
                    "an honest validator's new-view does not read back: {error}"
                );
                self.stats.new_views_unreadable += 1;
                self.net.dropped += 1;
                None
            }
        }
    }

    /// The node's edge, then the replica: signatures (outer and embedded), the transactions of
    /// pre-prepares and forwards; a Byzantine receiver's filter and reaction.
    fn deliver_message(&mut self, to: ReplicaId, m: Signed<Message>) {
        if !self.nodes[to as usize].is_up() {
            self.net.dropped += 1;
            return;
        }
        if !crypto::verify(&m, self.n) {
            self.stats.bad_signatures += 1;
            self.trace(|| format!("edge of {to} rejects a bad signature from {}", m.from));
            return;
        }
        let requests: &[Request] = match &m.message {
            Message::PrePrepare(pp) => &pp.proposal.requests,
            Message::Forward(requests) => requests,
            _ => &[],
        };
        if !requests.iter().all(|r| self.authentic(r)) {
            self.stats.bad_requests += 1;
            self.trace(|| format!("edge of {to} rejects a bad transaction from {}", m.from));
            return;
        }
        self.stats.delivered += 1;
        let m = if self.nodes[to as usize].is_honest() {
            m
        } else {
            let Some(m) = self.admit(to, m) else {
                return;
            };
            self.react(to, &m);
            m
        };
        self.step_node(to, Input::Message(m));
        self.drain_loopback();
    }

    /// Sends `message` from `from`; a Byzantine sender's messages are rewritten first.
    fn send(&mut self, from: ReplicaId, to: ReplicaId, message: Message) {
        if self.nodes[from as usize].is_honest() {
            let signed = crypto::sign(from, message);
            self.transmit(from, to, signed);
            return;
        }
        let Some(message) = self.rewrite(from, to, message) else {
            return;
        };
        let signed = self.byzantine_sign(from, message);
        self.transmit(from, to, signed);
    }

    pub(crate) fn transmit(&mut self, from: ReplicaId, to: ReplicaId, m: Signed<Message>) {
        let now = self.now;
        self.net.send(&mut self.rng, now, from, to, Packet::Pbft(m));
    }
}

/// A step's actions in the order the node carries them out (crates/node/src/runtime.rs,
/// `Runtime::execute`), so that a crash mid-step leaves what a killed process leaves: the
/// blocks committed in a step are applied at its end, after its messages went out (or before
/// what reads the chain: a recovery answer, a state fetch, a read of an executed block), and
/// the replica's own checkpoint votes wait for those applies (red team s27 F2).
pub(crate) fn node_order(actions: Vec<Action>) -> Vec<Action> {
    let mut ordered = Vec::with_capacity(actions.len());
    let mut held_blocks = Vec::new();
    let mut held_votes = Vec::new();
    for action in actions {
        match action {
            Action::Execute(_) => held_blocks.push(action),
            Action::Broadcast(Message::Checkpoint(_)) if !held_blocks.is_empty() => {
                held_votes.push(action)
            }
            Action::Send {
                message: Message::RecoveryAnswer(_),
                ..
            }
            | Action::FetchState { .. }
            | Action::ReadExecuted { .. } => {
                ordered.append(&mut held_blocks);
                ordered.push(action);
            }
            _ => ordered.push(action),
        }
    }
    ordered.append(&mut held_blocks);
    ordered.append(&mut held_votes);
    ordered
}
