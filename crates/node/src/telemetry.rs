//! One validator's counters for `GET /metrics` (Prometheus text), in one registry per validator:
//! several validators run in one process (the embedded cluster, `medchain testnet`, the bench),
//! so nothing here is global. `/api/metrics` and `/api/status` read the same counters.
//!
//! Counts only: no label carries an id, a name, a key or anything a transaction holds. Labels
//! take a fixed set of values (message kinds, rejection reasons, store writes, HTTP route
//! templates and status codes), so the exposition stays small whatever peers or clients send.
//!
//! Cheap where it is hot: every counter a validator's thread bumps per message or per block is
//! made once here and bumped with one atomic add (no map lookup, no lock); the histograms take
//! a short lock per block or store write, never per transaction.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use pbft::Message;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::wire::{KeyFrame, Wire};

/// Per-second samples kept for the dashboard's charts: ten minutes.
pub const KEPT_SAMPLES: usize = 600;

/// The kind of a frame between validators, as `/metrics` labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    Forward,
    PrePrepare,
    Prepare,
    Commit,
    Checkpoint,
    ViewChange,
    NewView,
    RecoveryQuery,
    RecoveryAnswer,
    Lives,
    Status,
    FetchBlocks,
    Blocks,
    KeyRequest,
    KeyAnswer,
    KeyOffer,
    Cut,
}

impl MessageKind {
    const ALL: [MessageKind; 17] = [
        MessageKind::Forward,
        MessageKind::PrePrepare,
        MessageKind::Prepare,
        MessageKind::Commit,
        MessageKind::Checkpoint,
        MessageKind::ViewChange,
        MessageKind::NewView,
        MessageKind::RecoveryQuery,
        MessageKind::RecoveryAnswer,
        MessageKind::Lives,
        MessageKind::Status,
        MessageKind::FetchBlocks,
        MessageKind::Blocks,
        MessageKind::KeyRequest,
        MessageKind::KeyAnswer,
        MessageKind::KeyOffer,
        MessageKind::Cut,
    ];

    pub fn of(wire: &Wire) -> Self {
        match wire {
            Wire::Consensus(signed) => match &signed.message {
                Message::Forward(_) => MessageKind::Forward,
                Message::PrePrepare(_) => MessageKind::PrePrepare,
                Message::Prepare(_) => MessageKind::Prepare,
                Message::Commit(_) => MessageKind::Commit,
                Message::Checkpoint(_) => MessageKind::Checkpoint,
                Message::ViewChange(_) => MessageKind::ViewChange,
                Message::NewView(_) => MessageKind::NewView,
                Message::RecoveryQuery(_) => MessageKind::RecoveryQuery,
                Message::RecoveryAnswer(_) => MessageKind::RecoveryAnswer,
                Message::Lives(_) => MessageKind::Lives,
            },
            Wire::Status { .. } => MessageKind::Status,
            Wire::FetchBlocks { .. } => MessageKind::FetchBlocks,
            Wire::Blocks(_) => MessageKind::Blocks,
            Wire::Keys(KeyFrame::Request { .. }) => MessageKind::KeyRequest,
            Wire::Keys(KeyFrame::Answer { .. }) => MessageKind::KeyAnswer,
            Wire::Keys(KeyFrame::Offer { .. }) => MessageKind::KeyOffer,
            Wire::Cut => MessageKind::Cut,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            MessageKind::Forward => "forward",
            MessageKind::PrePrepare => "pre_prepare",
            MessageKind::Prepare => "prepare",
            MessageKind::Commit => "commit",
            MessageKind::Checkpoint => "checkpoint",
            MessageKind::ViewChange => "view_change",
            MessageKind::NewView => "new_view",
            MessageKind::RecoveryQuery => "recovery_query",
            MessageKind::RecoveryAnswer => "recovery_answer",
            MessageKind::Lives => "lives",
            MessageKind::Status => "status",
            MessageKind::FetchBlocks => "fetch_blocks",
            MessageKind::Blocks => "blocks",
            MessageKind::KeyRequest => "key_request",
            MessageKind::KeyAnswer => "key_answer",
            MessageKind::KeyOffer => "key_offer",
            MessageKind::Cut => "cut",
        }
    }
}

/// Why a validator dropped a message from a peer (each is also a `debug!` line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// The channel's peer is no validator of the network, or is this one.
    UnknownSender,
    /// A consensus message signed in another validator's name than its channel's.
    WrongSender,
    /// Its shape cannot be valid, or a signature in it does not verify.
    Unauthentic,
    /// A frame handed to the wrong part of the validator (a key frame to the runtime).
    Misrouted,
    /// A block sent by state transfer without a valid certificate or entries.
    InvalidBlock,
    /// The replica refused it (`pbft::ProtocolError`): out of the window, a stale view, ...
    Protocol,
}

impl RejectReason {
    const ALL: [RejectReason; 6] = [
        RejectReason::UnknownSender,
        RejectReason::WrongSender,
        RejectReason::Unauthentic,
        RejectReason::Misrouted,
        RejectReason::InvalidBlock,
        RejectReason::Protocol,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RejectReason::UnknownSender => "unknown_sender",
            RejectReason::WrongSender => "wrong_sender",
            RejectReason::Unauthentic => "unauthentic",
            RejectReason::Misrouted => "misrouted",
            RejectReason::InvalidBlock => "invalid_block",
            RejectReason::Protocol => "protocol",
        }
    }
}

/// A durable write of the validator (each ends in an fsync).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreWrite {
    /// A committed block appended to chain.db.
    Block,
    /// The replica's protocol records to node.db, after staging the proposals they name in
    /// chain.db.
    Protocol,
    /// Acknowledged transactions to node.db (the mempool), before they are answered.
    Acknowledged,
}

impl StoreWrite {
    const ALL: [StoreWrite; 3] = [
        StoreWrite::Block,
        StoreWrite::Protocol,
        StoreWrite::Acknowledged,
    ];

    pub fn label(self) -> &'static str {
        match self {
            StoreWrite::Block => "block",
            StoreWrite::Protocol => "protocol",
            StoreWrite::Acknowledged => "acknowledged",
        }
    }
}

/// One second of the validator's life, for the dashboard's charts.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Sample {
    /// The end of the second, wall clock (ms since the Unix epoch).
    pub t_ms: u64,
    pub committed_tx_per_s: f64,
    /// Proposal-to-commit latency of the blocks committed in that second: mean and max
    /// (`None`: no block proposed in sight of this validator committed then).
    pub latency_mean_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    pub height: u64,
    pub view: u64,
}

type RouteLabels = [(&'static str, String); 2];

/// One validator's registry and the handles its code bumps.
pub struct Telemetry {
    registry: Registry,
    committed_transactions: Counter,
    committed_blocks: Counter,
    proposed_blocks: Counter,
    pending_transactions: Gauge,
    height: Gauge,
    view: Gauge,
    commit_latency: Histogram,
    view_changes: Counter,
    sent: Vec<Counter>,
    received: Vec<Counter>,
    rejected: Vec<Counter>,
    refused_forwards: Counter,
    deferred_messages: Counter,
    deferred_messages_read: Counter,
    store_write_time: Vec<Histogram>,
    store_written_bytes: Vec<Counter>,
    state_transfers: Counter,
    transferred_blocks: Counter,
    http_requests: Family<RouteLabels, Counter>,
    samples: Mutex<VecDeque<Sample>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

/// A family whose label values are known up front, made once so that bumping one is an atomic
/// add: its counters in the order of `values`.
fn labelled<M>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    key: &'static str,
    values: impl Iterator<Item = &'static str>,
    make: fn() -> M,
) -> Vec<M>
where
    M: prometheus_client::encoding::EncodeMetric
        + prometheus_client::metrics::TypedMetric
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let family =
        Family::<[(&'static str, &'static str); 1], M, fn() -> M>::new_with_constructor(make);
    let handles = values
        .map(|value| family.get_or_create(&[(key, value)]).clone())
        .collect();
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, family),
        None => registry.register(name, help, family),
    }
    handles
}

/// Registers `metric` under `name` and hands it back, to be updated through its clone.
fn registered<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn write_histogram() -> Histogram {
    // 50 us to about 1.6 s: an fsync on a good disk to one on a loaded one.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("medchain");
        let committed_transactions = registered(
            &mut registry,
            "committed_transactions",
            "Transactions in blocks this validator committed (rejected entries included)",
            Counter::default(),
        );
        let committed_blocks = registered(
            &mut registry,
            "committed_blocks",
            "Blocks this validator committed, by agreement or by state transfer",
            Counter::default(),
        );
        let proposed_blocks = registered(
            &mut registry,
            "proposed_blocks",
            "Sequence numbers proposed in sight of this validator (pre-prepares sent or first \
             seen), and blocks learned by state transfer",
            Counter::default(),
        );
        let pending_transactions = registered(
            &mut registry,
            "pending_transactions",
            "Transactions this validator acknowledged that are not yet committed",
            Gauge::default(),
        );
        let height = registered(
            &mut registry,
            "height",
            "Height of this validator's chain",
            Gauge::default(),
        );
        let view = registered(
            &mut registry,
            "view",
            "The PBFT view this validator is in",
            Gauge::default(),
        );
        let commit_latency = latency_histogram();
        registry.register_with_unit(
            "commit_latency",
            "From a block's pre-prepare (sent or first seen here) to the block on disk",
            Unit::Seconds,
            commit_latency.clone(),
        );
        let view_changes = registered(
            &mut registry,
            "view_changes",
            "View changes this validator started (PBFT section 4.4)",
            Counter::default(),
        );
        let kinds = || MessageKind::ALL.iter().map(|kind| kind.label());
        let sent = labelled(
            &mut registry,
            "messages_sent",
            "Frames queued for peers, by kind (a broadcast counts once per peer)",
            None,
            "kind",
            kinds(),
            Counter::default,
        );
        let received = labelled(
            &mut registry,
            "messages_received",
            "Frames that arrived from peers, by kind",
            None,
            "kind",
            kinds(),
            Counter::default,
        );
        let rejected = labelled(
            &mut registry,
            "messages_rejected",
            "Messages from peers dropped, by reason",
            None,
            "reason",
            RejectReason::ALL.iter().map(|reason| reason.label()),
            Counter::default,
        );
        let refused_forwards = registered(
            &mut registry,
            "refused_forwards",
            "Transactions in peers' forwards that mempool admission refused",
            Counter::default(),
        );
        let deferred_messages = registered(
            &mut registry,
            "deferred_messages",
            "Messages from peers set aside unread for their sender's budget of carried \
             signatures (a newer one of the same kind from the same sender replaces one)",
            Counter::default(),
        );
        let deferred_messages_read = registered(
            &mut registry,
            "deferred_messages_read",
            "Deferred messages read again once their sender's budget was full",
            Counter::default(),
        );
        let writes = || StoreWrite::ALL.iter().map(|write| write.label());
        let store_write_time = labelled(
            &mut registry,
            "store_write",
            "Durable writes (each ends in an fsync), by what they write",
            Some(Unit::Seconds),
            "write",
            writes(),
            write_histogram,
        );
        let store_written_bytes = labelled(
            &mut registry,
            "store_written",
            "Encoded bytes handed to the stores, by what they are (SQLite's pages, indexes \
             and WAL add to what reaches the disk)",
            Some(Unit::Bytes),
            "write",
            writes(),
            Counter::default,
        );
        let state_transfers = registered(
            &mut registry,
            "state_transfers",
            "Answers to this validator's fetches that brought it new blocks",
            Counter::default(),
        );
        let transferred_blocks = registered(
            &mut registry,
            "state_transfer_blocks",
            "Blocks this validator applied from state transfer",
            Counter::default(),
        );
        let http_requests = registered(
            &mut registry,
            "http_requests",
            "HTTP requests answered, by route template and status",
            Family::<RouteLabels, Counter>::default(),
        );
        Self {
            registry,
            committed_transactions,
            committed_blocks,
            proposed_blocks,
            pending_transactions,
            height,
            view,
            commit_latency,
            view_changes,
            sent,
            received,
            rejected,
            refused_forwards,
            deferred_messages,
            deferred_messages_read,
            store_write_time,
            store_written_bytes,
            state_transfers,
            transferred_blocks,
            http_requests,
            samples: Mutex::new(VecDeque::with_capacity(KEPT_SAMPLES)),
        }
    }

    /// The registry in Prometheus' (OpenMetrics) text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    pub(crate) fn committed(&self, transactions: u64, latency: Option<Duration>) {
        self.committed_blocks.inc();
        self.committed_transactions.inc_by(transactions);
        if let Some(latency) = latency {
            self.commit_latency.observe(latency.as_secs_f64());
        }
    }

    pub(crate) fn proposed(&self) {
        self.proposed_blocks.inc();
    }

    /// Counts blocks learned without a proposal seen (state transfer) as proposed too, so that
    /// proposed never falls below committed.
    pub(crate) fn settle_proposed(&self) {
        let (proposed, committed) = (self.proposed_blocks.get(), self.committed_blocks.get());
        if committed > proposed {
            self.proposed_blocks.inc_by(committed - proposed);
        }
    }

    pub fn committed_transactions(&self) -> u64 {
        self.committed_transactions.get()
    }

    pub fn committed_blocks(&self) -> u64 {
        self.committed_blocks.get()
    }

    pub fn proposed_blocks(&self) -> u64 {
        self.proposed_blocks.get()
    }

    pub(crate) fn set_pending(&self, pending: usize) {
        self.pending_transactions
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    pub(crate) fn set_head(&self, height: u64, view: u64) {
        self.height.set(i64::try_from(height).unwrap_or(i64::MAX));
        self.view.set(i64::try_from(view).unwrap_or(i64::MAX));
    }

    pub(crate) fn view_change_started(&self) {
        self.view_changes.inc();
    }

    pub fn view_changes(&self) -> u64 {
        self.view_changes.get()
    }

    pub(crate) fn sent(&self, wire: &Wire, peers: u64) {
        self.sent[Self::kind_index(wire)].inc_by(peers);
    }

    pub(crate) fn received(&self, wire: &Wire) {
        self.received[Self::kind_index(wire)].inc();
    }

    fn kind_index(wire: &Wire) -> usize {
        MessageKind::of(wire) as usize
    }

    pub(crate) fn rejected(&self, reason: RejectReason) {
        if let Some(counter) = self.rejected.get(reason as usize) {
            counter.inc();
        }
    }

    /// Messages from peers dropped since start, for every reason.
    pub fn rejected_messages(&self) -> u64 {
        self.rejected.iter().map(Counter::get).sum()
    }

    pub(crate) fn refused_forwards(&self, refused: u64) {
        self.refused_forwards.inc_by(refused);
    }

    pub fn refused_forwards_total(&self) -> u64 {
        self.refused_forwards.get()
    }

    pub(crate) fn deferred(&self) {
        self.deferred_messages.inc();
    }

    pub(crate) fn deferred_read(&self) {
        self.deferred_messages_read.inc();
    }

    /// Messages deferred for their sender's budget of carried signatures since start.
    pub fn deferred_messages(&self) -> u64 {
        self.deferred_messages.get()
    }

    /// Deferred messages read again since start.
    pub fn deferred_messages_read(&self) -> u64 {
        self.deferred_messages_read.get()
    }

    pub(crate) fn stored(&self, write: StoreWrite, took: Duration, bytes: u64) {
        let index = write as usize;
        if let (Some(time), Some(written)) = (
            self.store_write_time.get(index),
            self.store_written_bytes.get(index),
        ) {
            time.observe(took.as_secs_f64());
            written.inc_by(bytes);
        }
    }

    pub(crate) fn state_transferred(&self, blocks: u32) {
        let blocks = u64::from(blocks);
        self.state_transfers.inc();
        self.transferred_blocks.inc_by(blocks);
    }

    /// An HTTP request answered: `route` must be a route template (bounded), never a raw path.
    pub fn http_request(&self, route: &str, status: u16) {
        self.http_requests
            .get_or_create(&[("route", route.to_string()), ("status", status.to_string())])
            .inc();
    }

    pub(crate) fn push_sample(&self, sample: Sample) {
        if let Ok(mut samples) = self.samples.lock() {
            if samples.len() == KEPT_SAMPLES {
                samples.pop_front();
            }
            samples.push_back(sample);
        }
    }

    /// The per-second samples kept (at most [`KEPT_SAMPLES`]), oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .map(|samples| samples.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix} in\n{text}"))
    }

    #[test]
    fn counters_show_in_the_exposition_with_their_labels() {
        let telemetry = Telemetry::new();
        telemetry.committed(5, Some(Duration::from_millis(3)));
        telemetry.committed(2, None);
        telemetry.sent(&Wire::Cut, 3);
        telemetry.received(&Wire::Status {
            height: 1,
            hash: [0; 32],
        });
        telemetry.rejected(RejectReason::Protocol);
        telemetry.rejected(RejectReason::Protocol);
        telemetry.stored(StoreWrite::Block, Duration::from_millis(2), 700);
        telemetry.http_request("/api/status", 200);
        telemetry.deferred();
        telemetry.deferred();
        telemetry.deferred_read();
        let text = telemetry.encode();
        assert_eq!(
            line(&text, "medchain_committed_transactions_total "),
            "medchain_committed_transactions_total 7"
        );
        assert_eq!(
            line(&text, "medchain_committed_blocks_total "),
            "medchain_committed_blocks_total 2"
        );
        // Only the block whose proposal was seen has a latency.
        assert_eq!(
            line(&text, "medchain_commit_latency_seconds_count "),
            "medchain_commit_latency_seconds_count 1"
        );
        assert_eq!(
            line(&text, "medchain_messages_sent_total{kind=\"cut\"}"),
            "medchain_messages_sent_total{kind=\"cut\"} 3"
        );
        assert_eq!(
            line(&text, "medchain_messages_received_total{kind=\"status\"}"),
            "medchain_messages_received_total{kind=\"status\"} 1"
        );
        assert_eq!(
            line(&text, "medchain_messages_received_total{kind=\"commit\"}"),
            "medchain_messages_received_total{kind=\"commit\"} 0"
        );
        assert_eq!(
            line(
                &text,
                "medchain_messages_rejected_total{reason=\"protocol\"}"
            ),
            "medchain_messages_rejected_total{reason=\"protocol\"} 2"
        );
        assert_eq!(
            line(&text, "medchain_store_written_bytes_total{write=\"block\"}"),
            "medchain_store_written_bytes_total{write=\"block\"} 700"
        );
        assert_eq!(
            line(&text, "medchain_store_write_seconds_count{write=\"block\"}"),
            "medchain_store_write_seconds_count{write=\"block\"} 1"
        );
        assert_eq!(
            line(
                &text,
                "medchain_http_requests_total{route=\"/api/status\",status=\"200\"}"
            ),
            "medchain_http_requests_total{route=\"/api/status\",status=\"200\"} 1"
        );
        assert_eq!(
            line(&text, "medchain_deferred_messages_total "),
            "medchain_deferred_messages_total 2"
        );
        assert_eq!(
            line(&text, "medchain_deferred_messages_read_total "),
            "medchain_deferred_messages_read_total 1"
        );
        assert_eq!(telemetry.rejected_messages(), 2);
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn every_kind_and_reason_has_its_own_counter() {
        // The handles are indexed by the enums' discriminants.
        for (index, kind) in MessageKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, index);
        }
        for (index, reason) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index);
        }
        for (index, write) in StoreWrite::ALL.iter().enumerate() {
            assert_eq!(*write as usize, index);
        }
        let labels: std::collections::BTreeSet<_> =
            MessageKind::ALL.iter().map(|kind| kind.label()).collect();
        assert_eq!(labels.len(), MessageKind::ALL.len());
    }

    #[test]
    fn samples_are_bounded() {
        let telemetry = Telemetry::new();
        for t_ms in 0..(KEPT_SAMPLES as u64 + 10) {
            telemetry.push_sample(Sample {
                t_ms,
                committed_tx_per_s: 1.0,
                latency_mean_ms: None,
                latency_max_ms: None,
                height: t_ms,
                view: 0,
            });
        }
        let samples = telemetry.samples();
        assert_eq!(samples.len(), KEPT_SAMPLES);
        assert_eq!(samples.first().map(|s| s.t_ms), Some(10));
    }
}
