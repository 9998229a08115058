//! What a validator's thread publishes for others to read: its status, its peers' last
//! contact, and its metrics. Written by the one thread, read by the HTTP layer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pbft::{ReplicaId, Request, View};

use crate::metrics::BlockMetric;
use crate::telemetry::Telemetry;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: ReplicaId,
    pub name: String,
    pub view: View,
    pub primary: ReplicaId,
    pub height: u64,
    pub head_hash: [u8; 32],
    /// Transactions this validator acknowledged that are not yet committed.
    pub pending: usize,
    /// Requests the replica holds, including those forwarded by others.
    pub replica_pending: usize,
    pub view_changing: bool,
    /// The replica lost durable state and sends no vote until it cannot contradict one it may
    /// have sent before (issue 8, finding 2; `incarnation.rs`).
    pub recovering: bool,
    /// The highest stable checkpoint this validator knows of, its own or one f+1 others
    /// reported: a key service processed below it is catching up and gives no key.
    pub reported_checkpoint: u64,
    /// The highest head f+1 peers claimed in their status frames in the last few seconds
    /// (`None`: fewer than f+1 have said lately): the chain is at least that long.
    pub peers_head: Option<u64>,
    /// Consensus alarms since start: each means the fault model was exceeded or this
    /// validator's stores are damaged (`pbft::Alarm`).
    pub alarms: u64,
    pub rejected_messages: u64,
    /// Transactions in peers' forwards that mempool admission refused: a rule rejected them
    /// on this validator's committed chain, or they were on chain already.
    pub refused_forwards: u64,
    /// Set when the validator stopped on an error it cannot recover from.
    pub failed: Option<String>,
    /// What each validator last claimed to this one (by replica id; this one's own slot is
    /// empty): the head in its status frame, the view of its last authentic consensus
    /// message. Claims, for the dashboard: a faulty peer may claim anything.
    pub peers: Vec<PeerClaim>,
}

/// What a peer last told this validator of its state ([`NodeStatus::peers`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerClaim {
    pub height: Option<u64>,
    pub view: Option<View>,
}

impl NodeStatus {
    /// Whether a state at `height` may lack blocks the validators committed: the replica
    /// recovers, or `height` is below the highest stable checkpoint f+1 validators reported,
    /// or below the head f+1 peers claimed lately, or fewer than f+1 peers have said lately
    /// (a validator restored from an old backup, or cut off, must not take itself for caught
    /// up). A validator behind may miss an erasure: it gives no key (docs/SECURITY.md, issue
    /// 10, §5.6) and opens no purpose (§16.25).
    pub fn behind(&self, height: u64) -> bool {
        self.recovering
            || height < self.reported_checkpoint
            || self.peers_head.is_none_or(|head| height < head)
    }
}

struct PendingTx {
    accepted: Instant,
    /// When it was last handed to the replicas (accepted, or broadcast again since).
    last_sent: Instant,
    /// When it was withdrawn from the replica: the rules reject it on the committed chain now
    /// (it lost a race), so it is not resent (`Runtime::withdraw_refused`).
    withdrawn: Option<Instant>,
    request: Request,
}

#[derive(Default)]
struct MetricsLog {
    blocks: VecDeque<BlockMetric>,
    latencies: VecDeque<Duration>,
    /// Latencies recorded since start, kept or not (what [`Shared::latencies_since`] counts by).
    recorded_latencies: u64,
}

pub struct Shared {
    pub max_pending: usize,
    status: Mutex<NodeStatus>,
    peers: Mutex<Vec<Option<Instant>>>,
    metrics: Mutex<MetricsLog>,
    /// Transactions this validator acknowledged and has not seen committed.
    pending: Mutex<BTreeMap<[u8; 32], PendingTx>>,
    /// This validator's counters (`GET /metrics`), which `/api/metrics` reads too.
    telemetry: Telemetry,
    /// Whether new submissions are turned away as busy (the runtime judges it: `accept`).
    turning_away: AtomicBool,
}

impl Shared {
    pub fn new(id: ReplicaId, name: String, n: usize, max_pending: usize) -> Self {
        Self {
            max_pending,
            status: Mutex::new(NodeStatus {
                id,
                name,
                ..NodeStatus::default()
            }),
            peers: Mutex::new(vec![None; n]),
            metrics: Mutex::new(MetricsLog::default()),
            pending: Mutex::new(BTreeMap::new()),
            telemetry: Telemetry::new(),
            turning_away: AtomicBool::new(false),
        }
    }

    /// Whether this validator turns new submissions away as busy, as its runtime last judged
    /// (a few milliseconds ago at most): a submission is then refused before it is checked.
    pub fn turning_away(&self) -> bool {
        self.turning_away.load(Ordering::Relaxed)
    }

    pub(crate) fn set_turning_away(&self, turning_away: bool) {
        self.turning_away.store(turning_away, Ordering::Relaxed);
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    pub fn status(&self) -> NodeStatus {
        let mut status = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        status.pending = self.pending_len();
        status
    }

    pub(crate) fn update(&self, change: impl FnOnce(&mut NodeStatus)) {
        if let Ok(mut status) = self.status.lock() {
            change(&mut status);
        }
    }

    pub(crate) fn add_pending(&self, requests: impl IntoIterator<Item = Request>) {
        let now = Instant::now();
        if let Ok(mut pending) = self.pending.lock() {
            pending.extend(requests.into_iter().map(|request| {
                (
                    request.id,
                    PendingTx {
                        accepted: now,
                        last_sent: now,
                        withdrawn: None,
                        request,
                    },
                )
            }));
            self.telemetry.set_pending(pending.len());
        }
    }

    /// At most `limit` requests not sent for `older_than`; marks them sent.
    pub(crate) fn due_for_resend(&self, older_than: Duration, limit: usize) -> Vec<Request> {
        let Ok(mut pending) = self.pending.lock() else {
            return Vec::new();
        };
        let now = Instant::now();
        pending
            .values_mut()
            .filter(|tx| tx.withdrawn.is_none() && now.duration_since(tx.last_sent) >= older_than)
            .take(limit)
            .map(|tx| {
                tx.last_sent = now;
                tx.request.clone()
            })
            .collect()
    }

    /// Marks `ids` withdrawn from the replica (kept pending until they commit, expire or have
    /// been withdrawn long enough: `Runtime::withdraw_refused`).
    pub(crate) fn mark_withdrawn(&self, ids: &[[u8; 32]]) {
        let now = Instant::now();
        if let Ok(mut pending) = self.pending.lock() {
            for id in ids {
                if let Some(tx) = pending.get_mut(id) {
                    tx.withdrawn.get_or_insert(now);
                }
            }
        }
    }

    /// The withdrawn requests, each with how long ago it was withdrawn (to drop those that
    /// expired, or were kept long enough).
    pub(crate) fn withdrawn(&self) -> Vec<(Request, Duration)> {
        self.pending
            .lock()
            .map(|pending| {
                pending
                    .values()
                    .filter_map(|tx| Some((tx.request.clone(), tx.withdrawn?.elapsed())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The acknowledged, uncommitted transactions that still wait for a block (withdrawn ones
    /// only wait to be dropped): how many, and how long the oldest has waited.
    pub fn waiting(&self) -> (usize, Option<Duration>) {
        let Ok(pending) = self.pending.lock() else {
            return (0, None);
        };
        let (count, oldest) = pending.values().filter(|tx| tx.withdrawn.is_none()).fold(
            (0, None),
            |(count, oldest), tx| {
                let accepted = tx.accepted;
                (
                    count + 1,
                    Some(oldest.map_or(accepted, |o: Instant| o.min(accepted))),
                )
            },
        );
        // One clock read a call: the runtime judges this every few milliseconds.
        (count, oldest.map(|oldest| oldest.elapsed()))
    }

    /// Removes committed transactions; returns how long each of ours waited.
    pub(crate) fn take_pending(&self, ids: &[[u8; 32]]) -> Vec<Duration> {
        let Ok(mut pending) = self.pending.lock() else {
            return Vec::new();
        };
        let waited = ids
            .iter()
            .filter_map(|id| pending.remove(id))
            .map(|tx| tx.accepted.elapsed())
            .collect();
        self.telemetry.set_pending(pending.len());
        waited
    }

    /// Which of `requests` are this validator's own acknowledged ones that it still waits on
    /// (not withdrawn for a lost race), under one lock.
    pub(crate) fn waits_on(&self, requests: &[Request]) -> Vec<bool> {
        let Ok(pending) = self.pending.lock() else {
            return vec![false; requests.len()];
        };
        requests
            .iter()
            .map(|request| {
                pending
                    .get(&request.id)
                    .is_some_and(|tx| tx.withdrawn.is_none())
            })
            .collect()
    }

    pub fn is_pending(&self, id: &[u8; 32]) -> bool {
        self.pending
            .lock()
            .is_ok_and(|pending| pending.contains_key(id))
    }

    pub fn pending_ids(&self) -> BTreeSet<[u8; 32]> {
        self.pending
            .lock()
            .map(|pending| pending.keys().copied().collect())
            .unwrap_or_default()
    }

    pub fn pending_len(&self) -> usize {
        self.pending
            .lock()
            .map(|pending| pending.len())
            .unwrap_or(0)
    }

    pub(crate) fn set_failed(&self, reason: String) {
        self.update(|status| status.failed = Some(reason));
    }

    pub(crate) fn touch_peer(&self, peer: ReplicaId) {
        if let Ok(mut peers) = self.peers.lock()
            && let Some(slot) = peers.get_mut(peer as usize)
        {
            *slot = Some(Instant::now());
        }
    }

    /// How long ago each validator was last heard from (`None`: never, or this one).
    pub fn peer_last_contact(&self) -> Vec<Option<Duration>> {
        self.peers
            .lock()
            .map(|peers| peers.iter().map(|at| at.map(|at| at.elapsed())).collect())
            .unwrap_or_default()
    }

    pub(crate) fn record_block(
        &self,
        metric: BlockMetric,
        latencies: &[Duration],
        kept_blocks: usize,
        kept_latencies: usize,
    ) {
        if let Ok(mut log) = self.metrics.lock() {
            log.blocks.push_back(metric);
            while log.blocks.len() > kept_blocks {
                log.blocks.pop_front();
            }
            log.latencies.extend(latencies.iter().copied());
            log.recorded_latencies += latencies.len() as u64;
            while log.latencies.len() > kept_latencies {
                log.latencies.pop_front();
            }
        }
    }

    /// The last committed blocks' metrics, oldest first.
    pub fn block_metrics(&self) -> Vec<BlockMetric> {
        self.metrics
            .lock()
            .map(|log| log.blocks.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Transactions committed since start.
    pub fn committed_transactions(&self) -> u64 {
        self.telemetry.committed_transactions()
    }

    /// Latencies from acknowledgement to commit of this validator's own transactions, over the
    /// kept window, in commit order.
    pub fn latencies(&self) -> Vec<Duration> {
        self.metrics
            .lock()
            .map(|log| log.latencies.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The latencies recorded after the first `seen` since start (as many as are still kept),
    /// in commit order, and how many have been recorded since start: a reader that passes back
    /// that count each time gets every latency once (the bench's per-second series).
    pub fn latencies_since(&self, seen: u64) -> (Vec<Duration>, u64) {
        self.metrics
            .lock()
            .map(|log| {
                let new = log.recorded_latencies.saturating_sub(seen);
                let kept = usize::try_from(new)
                    .map_or(log.latencies.len(), |new| new.min(log.latencies.len()));
                let skip = log.latencies.len() - kept;
                (
                    log.latencies.iter().skip(skip).copied().collect(),
                    log.recorded_latencies,
                )
            })
            .unwrap_or_default()
    }

    pub fn reset_latencies(&self) {
        if let Ok(mut log) = self.metrics.lock() {
            log.latencies.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(tx_count: usize) -> BlockMetric {
        BlockMetric {
            height: 1,
            timestamp_ms: 0,
            latency: Duration::ZERO,
            tps: 0.0,
            energy_joules: 0.0,
            attempted_blocks: 1,
            success_blocks: 1,
            tx_count,
            votes: 3,
            required_votes: 3,
            validators: 4,
        }
    }

    #[test]
    fn a_reader_of_latencies_since_gets_each_once_even_past_the_window() {
        let shared = Shared::new(0, "hospital".into(), 4, 10);
        let ms = Duration::from_millis;
        shared.record_block(block(2), &[ms(1), ms(2)], 10, 3);
        let (first, seen) = shared.latencies_since(0);
        assert_eq!((first, seen), (vec![ms(1), ms(2)], 2));
        assert_eq!(shared.latencies_since(seen), (vec![], 2));
        // Four more, one of which falls out of a window of three before it is read.
        shared.record_block(block(4), &[ms(3), ms(4), ms(5), ms(6)], 10, 3);
        assert_eq!(shared.latencies_since(seen), (vec![ms(4), ms(5), ms(6)], 6));
    }
}
