//! What a validator measures about consensus, per committed block and over a sliding window.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger::Block;
use pbft::SeqNo;

use crate::status::Shared;
use crate::telemetry::Sample;

/// Blocks kept for `/api/metrics` (the seed showed the last 100).
pub const KEPT_BLOCKS: usize = 100;
/// Throughput is committed transactions over this window.
pub const TPS_WINDOW: Duration = Duration::from_secs(10);
/// Transaction latencies kept for percentiles.
const KEPT_LATENCIES: usize = 100_000;
/// Proposals remembered while they await their commit (bounded by the watermark window
/// in practice; this only guards against a faulty primary flooding sequence numbers).
const KEPT_PROPOSALS: usize = 4096;

/// One committed block as the metrics endpoint shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockMetric {
    pub height: u64,
    pub timestamp_ms: u64,
    /// From the proposal (pre-prepare sent or first seen here) to the block on disk.
    pub latency: Duration,
    /// Committed transactions per second over the last `TPS_WINDOW`.
    pub tps: f64,
    /// Joules: CPU time this validator's consensus thread used since the previous block,
    /// times the configured watts per busy core.
    pub energy_joules: f64,
    pub attempted_blocks: u64,
    pub success_blocks: u64,
    pub tx_count: usize,
    pub votes: usize,
    pub required_votes: usize,
    pub validators: usize,
}

/// The second being sampled for the dashboard ([`Sample`]).
struct Second {
    started: Instant,
    committed_tx: u64,
    latency_sum: Duration,
    latency_max: Duration,
    latencies: u32,
}

impl Second {
    fn new(committed_tx: u64) -> Self {
        Self {
            started: Instant::now(),
            committed_tx,
            latency_sum: Duration::ZERO,
            latency_max: Duration::ZERO,
            latencies: 0,
        }
    }
}

/// Kept by the validator's thread: what needs memory between blocks. The counts themselves
/// are the telemetry's ([`crate::telemetry::Telemetry`]), read by `/metrics` and
/// `/api/metrics` alike.
pub struct Metrics {
    watts_per_core: f64,
    cpu_since_block: Duration,
    proposals: BTreeMap<SeqNo, Instant>,
    window: VecDeque<(Instant, usize)>,
    second: Second,
    shared: Arc<Shared>,
}

impl Metrics {
    pub fn new(shared: Arc<Shared>, watts_per_core: f64) -> Self {
        Self {
            watts_per_core,
            cpu_since_block: Duration::ZERO,
            proposals: BTreeMap::new(),
            window: VecDeque::new(),
            second: Second::new(shared.telemetry().committed_transactions()),
            shared,
        }
    }

    pub fn add_cpu(&mut self, cpu: Duration) {
        self.cpu_since_block += cpu;
    }

    /// A pre-prepare for `seq` was sent or first seen.
    pub fn proposed(&mut self, seq: SeqNo) {
        if !self.proposals.contains_key(&seq) {
            self.shared.telemetry().proposed();
            self.proposals.insert(seq, Instant::now());
            while self.proposals.len() > KEPT_PROPOSALS {
                self.proposals.pop_first();
            }
        }
    }

    pub fn committed(
        &mut self,
        block: &Block,
        votes: usize,
        validators: usize,
        latencies: &[Duration],
    ) {
        let now = Instant::now();
        let height = block.header.height;
        let proposed = self.proposals.remove(&height);
        // Everything below a committed sequence number is settled.
        self.proposals = self.proposals.split_off(&height);
        let latency = proposed.map(|at| now.duration_since(at));
        let telemetry = self.shared.telemetry();
        telemetry.committed(block.entries.len() as u64, latency);
        // A block learned by state transfer was never proposed here: count it attempted too.
        telemetry.settle_proposed();
        if let Some(latency) = latency {
            self.second.latency_sum += latency;
            self.second.latency_max = self.second.latency_max.max(latency);
            self.second.latencies += 1;
        }
        self.window.push_back((now, block.entries.len()));
        while self
            .window
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > TPS_WINDOW)
        {
            self.window.pop_front();
        }
        let in_window: usize = self.window.iter().map(|(_, count)| count).sum();
        let span = self
            .window
            .front()
            .map(|(first, _)| now.duration_since(*first))
            .unwrap_or_default()
            .max(Duration::from_millis(100))
            .min(TPS_WINDOW);
        let metric = BlockMetric {
            height,
            timestamp_ms: crate::clock::system_now_ms(),
            latency: latency.unwrap_or_default(),
            tps: in_window as f64 / span.as_secs_f64(),
            energy_joules: self.cpu_since_block.as_secs_f64() * self.watts_per_core,
            attempted_blocks: telemetry.proposed_blocks(),
            success_blocks: telemetry.committed_blocks(),
            tx_count: block.entries.len(),
            votes,
            required_votes: pbft::quorum(u32::try_from(validators).unwrap_or(u32::MAX)),
            validators,
        };
        self.cpu_since_block = Duration::ZERO;
        self.shared
            .record_block(metric, latencies, KEPT_BLOCKS, KEPT_LATENCIES);
    }

    /// Closes the second being sampled once it is over (called every turn): one [`Sample`]
    /// for the dashboard, however long the turn took.
    pub fn sample(&mut self, height: u64, view: u64) {
        let elapsed = self.second.started.elapsed();
        if elapsed < Duration::from_secs(1) {
            return;
        }
        let committed = self.shared.telemetry().committed_transactions();
        let second = std::mem::replace(&mut self.second, Second::new(committed));
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        self.shared.telemetry().push_sample(Sample {
            t_ms: crate::clock::system_now_ms(),
            committed_tx_per_s: committed.saturating_sub(second.committed_tx) as f64
                / elapsed.as_secs_f64(),
            latency_mean_ms: (second.latencies > 0)
                .then(|| ms(second.latency_sum) / f64::from(second.latencies)),
            latency_max_ms: (second.latencies > 0).then(|| ms(second.latency_max)),
            height,
            view,
        });
    }
}
