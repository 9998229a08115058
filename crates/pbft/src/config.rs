//! The replica's configuration, what it restarts from, and its error values.

use crate::durable::Durable;
use crate::types::{Digest, DigestFn, ReplicaId, SeqNo, View};

/// A bug planted on purpose so that the simulator can show it catches it (test-only; compiled
/// with the `planted-bugs` feature, which only the `sim` crate enables).
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Committed-local after 2f matching commits instead of 2f+1 (§4.2's quorum weakened).
    CommitWithTwoF,
    /// View-changes carry no prepared certificates (§4.4's P set forgotten), so a new primary
    /// may re-assign sequence numbers that already committed.
    ForgetPreparedOnViewChange,
    /// Backups check no block time (crate docs, "Block time"): a faulty primary's times go
    /// into the chain, backwards or an hour ahead.
    IgnoreBlockTime,
    /// Backups give a view's primary a wait of up to τ (not τ/2) after a time pushed to the
    /// edge (crate docs, "Timers"): a faulty primary keeps a request waiting twice as long.
    OwedWaitTooLong,
    /// A restart inherits the block times of the logged pre-prepares of its view that claim an
    /// older `proposal.view` (as an O set's do), as a first design did: a faulty primary that
    /// writes an older view into a fresh far-future proposal holds every restarted backup's
    /// timer for as long (red team s35 F1).
    InheritLoggedProposals,
}

/// τ by default: 2 s, well above the skew of clocks kept by NTP and a LAN's message delay.
pub const DEFAULT_BLOCK_TIME_TOLERANCE_MS: u64 = 2_000;

/// Static parameters of one replica. Every replica of a cluster must use the same values except
/// `id` (and `planted_bug`).
#[derive(Clone, Debug)]
pub struct Config {
    /// This replica, in `0..n`.
    pub id: ReplicaId,
    /// Number of replicas, n = 3f+1 for the best resilience (any n >= 1 works; quorums are
    /// `(n + f) / 2 + 1`, which is 2f+1 when n = 3f+1).
    pub n: u32,
    /// K: a checkpoint is taken at every multiple of K (§4.3).
    pub checkpoint_interval: u64,
    /// L: sequence numbers accepted lie in (h, h + L] above the low watermark h (§4.3). A
    /// multiple of K, at least K (2K lets execution run past a checkpoint before it is stable).
    pub watermark_window: u64,
    /// At most this many requests per proposal.
    pub max_batch: usize,
    /// A primary proposes a non-full batch once its oldest unproposed request waited this long.
    pub batch_window_ticks: u64,
    /// At most this many sequence numbers pre-prepared but not executed at once (pipelining).
    pub max_in_flight: u64,
    /// An [`crate::Input::Cut`] proposes at once only while fewer than this many sequence
    /// numbers are in flight; otherwise it is honoured when one executes, and the requests
    /// that arrive meanwhile join its batch. Under load, batches grow with the round trip
    /// instead of one block per cut (the sliding-window batching of Castro and Liskov, TOCS
    /// 2002, §5.1.4); an idle pipeline still proposes at once. At least 1.
    pub cut_in_flight: u64,
    /// The view-change timer T (§4.4); doubled on each consecutive view change without an
    /// execution in between, without a cap (§4.5.2: the timeout must grow until it covers the
    /// network's real delay; it only saturates at `u64::MAX` ticks).
    pub view_change_timeout_ticks: u64,
    /// How often a stalled replica retransmits its view of the in-flight slots, its
    /// view-change, and its status claim (lost messages are otherwise never resent).
    pub retransmit_ticks: u64,
    /// Bound on requests received but not executed.
    pub max_pending: usize,
    /// How many recently executed request ids are remembered to reject duplicates.
    pub executed_window: usize,
    /// Bound, per sender, on buffered messages of a view this replica has not entered yet.
    pub future_buffer_per_sender: usize,
    /// τ, how far (ms) a backup lets a proposal's block time be from its own clock before it
    /// withholds its prepare; the primary keeps its proposals within τ/2 of its clock (crate
    /// docs, "Block time"). The same at every replica: the network's genesis fixes it.
    pub block_time_tolerance_ms: u64,
    /// The application's digest of a proposal (the ledger's block hash).
    pub digest: DigestFn,
    /// Digest of the genesis block: the `prev` of sequence number 1 and the checkpoint at 0.
    pub genesis: Digest,
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<PlantedBug>,
}

impl Config {
    /// How far behind a backup's clock a correct primary's may run while the backup still
    /// gives it the wait it is owed (crate docs, "Timers"): τ/4, half of the τ/2 that message
    /// delay plus clock skew must stay below for liveness.
    pub fn clock_skew_allowance_ms(&self) -> u64 {
        self.block_time_tolerance_ms / 4
    }

    /// Defaults suited to a real cluster with ticks of about 10 ms: K = 128, L = 256, batches
    /// of up to 256 requests or 5 ticks, 8 in flight (a cut at once only with none), T = 200 ticks, τ = 2 s.
    pub fn new(id: ReplicaId, n: u32, digest: DigestFn, genesis: Digest) -> Self {
        Config {
            id,
            n,
            checkpoint_interval: 128,
            watermark_window: 256,
            max_batch: 256,
            batch_window_ticks: 5,
            max_in_flight: 8,
            cut_in_flight: 1,
            view_change_timeout_ticks: 200,
            retransmit_ticks: 50,
            max_pending: 100_000,
            executed_window: 100_000,
            future_buffer_per_sender: 1024,
            block_time_tolerance_ms: DEFAULT_BLOCK_TIME_TOLERANCE_MS,
            digest,
            genesis,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }

    /// The number of faults tolerated, [`max_faulty`]`(n)`.
    pub fn f(&self) -> usize {
        max_faulty(self.n)
    }

    /// The size of a quorum, [`quorum`]`(n)`.
    pub fn quorum(&self) -> usize {
        quorum(self.n)
    }

    /// The primary of view `v` is `v mod n` (§4.1).
    pub fn primary(&self, view: View) -> ReplicaId {
        (view % u64::from(self.n)) as ReplicaId
    }

    pub(crate) fn check(&self) {
        assert!(self.n >= 1, "n must be at least 1");
        assert!(self.id < self.n, "id {} outside 0..{}", self.id, self.n);
        assert!(self.checkpoint_interval >= 1);
        assert!(
            self.watermark_window >= self.checkpoint_interval
                && self
                    .watermark_window
                    .is_multiple_of(self.checkpoint_interval),
            "L must be a positive multiple of K"
        );
        assert!(self.max_batch >= 1 && self.max_in_flight >= 1 && self.cut_in_flight >= 1);
        assert!(self.view_change_timeout_ticks >= 1 && self.retransmit_ticks >= 1);
        assert!(self.max_pending >= 1 && self.future_buffer_per_sender >= 1);
    }
}

/// The number of faulty replicas a cluster of `n` tolerates: f = floor((n - 1) / 3) (§3).
pub fn max_faulty(n: u32) -> usize {
    (n.saturating_sub(1) / 3) as usize
}

/// The size of a quorum of `n` replicas, the one rule of the whole project (prepared and
/// committed certificates, checkpoint proofs, view-changes in a new-view, a block's commit
/// certificate, the votes metrics report): `(n + f) / 2 + 1`, which is 2f+1 when n = 3f+1.
/// Any two quorums intersect in at least f+1 replicas, so in at least one correct one (§4.2),
/// and n - f correct replicas always form a quorum, so f faults cannot block progress.
pub fn quorum(n: u32) -> usize {
    (n as usize + max_faulty(n)) / 2 + 1
}

/// What a replica restarts from: the head of the application's executed chain and the durable
/// records it persisted, in order (possibly compacted with [`Durable::compact`]), and the
/// caller's clock.
#[derive(Clone, Debug)]
pub struct Restored {
    pub last_executed: (SeqNo, Digest),
    /// The last checkpoint the application executed (the highest multiple of K at or below
    /// `last_executed`) with its digest, the block hash there, if above the genesis. A replica
    /// sends its message again while it is not stable (§4.3): a restart may have come before
    /// the message went out, and when every replica's chain went past the watermarks outside
    /// the protocol (a chain built offline, stores put back from backups) nothing else would
    /// move them.
    pub executed_checkpoint: Option<(SeqNo, Digest)>,
    /// The block time of the block at `last_executed` (the genesis time at 0): the next
    /// proposal's time must be later.
    pub head_time_ms: u64,
    /// The caller's clock now (ms since the Unix epoch), so that the replica has a clock before
    /// its first [`crate::Input::Tick`].
    pub now_ms: u64,
    pub durable: Vec<Durable>,
    /// The durable records may be incomplete: they were lost, deleted, or restored from a
    /// backup, so the replica may have sent messages it does not remember. It then recovers
    /// before it votes again (crate docs, "Recovering from lost state"). A deleted store looks
    /// like a first start, so the caller must know this by other means (a marker written when
    /// the validator is created). Once the replica persisted [`Durable::Recovery`] (the first
    /// thing it persists), its records say it is recovering and later starts may pass `false`.
    pub recovering: bool,
    /// A number the caller draws at random at each start (the core has no randomness): it tags
    /// this start's recovery query, so that answers to an earlier one cannot be replayed.
    pub nonce: u64,
    /// This life of the replica: higher than that of every earlier life whose records it may
    /// not have (the node counts its starts beside its key; 0 on a first start). Signed into
    /// its view-changes and new-views and announced in its recovery query, so that messages of
    /// a life it forgot are refused (crate docs, "Recovering from lost state").
    pub incarnation: u64,
}

impl Restored {
    /// A replica starting for the first time, from a genesis of time `genesis_time_ms`, at
    /// `now_ms` by the caller's clock.
    pub fn genesis(genesis: Digest, genesis_time_ms: u64, now_ms: u64) -> Self {
        Restored {
            last_executed: (0, genesis),
            executed_checkpoint: None,
            head_time_ms: genesis_time_ms,
            now_ms,
            durable: Vec::new(),
            recovering: false,
            nonce: 0,
            incarnation: 0,
        }
    }
}

/// Why an input was rejected. Every variant is something a faulty or malicious peer (or an
/// unlucky network: duplicates, stale messages) can cause; the caller counts and drops it.
/// When `step` returns an error it has pushed no action.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("sender {0} is not a replica")]
    UnknownSender(ReplicaId),
    #[error("message of view {got} while in view {current}")]
    StaleView { got: View, current: View },
    #[error("replica {from} is not the primary of view {view}")]
    NotPrimary { from: ReplicaId, view: View },
    #[error("the digest does not match the proposal")]
    WrongDigest,
    #[error("sequence number {seq} outside the watermarks ({low}, {high}]")]
    OutsideWatermarks { seq: SeqNo, low: SeqNo, high: SeqNo },
    #[error("duplicate message")]
    Duplicate,
    #[error("conflicts with a message already accepted for the same slot")]
    Conflicting,
    #[error("the proposal does not chain to the accepted proposal before it")]
    ChainMismatch,
    /// A correct primary always proposes a later time than the block before (crate docs,
    /// "Block time").
    #[error("block time {time_ms} at {seq} is not later than {previous_ms}, the time before it")]
    BlockTimeNotIncreasing {
        seq: SeqNo,
        time_ms: u64,
        previous_ms: u64,
    },
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("invalid view-change: {0}")]
    InvalidViewChange(&'static str),
    #[error("invalid new-view: {0}")]
    InvalidNewView(&'static str),
    #[error("request already pending, in the log or recently executed")]
    DuplicateRequest,
    #[error("too many pending requests")]
    PendingFull,
    #[error("checkpoint at or below the stable checkpoint")]
    StaleCheckpoint,
    #[error("state transfer to {seq} is not beyond the executed head")]
    StaleStateTransfer { seq: SeqNo },
    #[error("recovery answer to no query of this replica (wrong nonce or querier)")]
    UnexpectedRecoveryAnswer,
    /// A recovery query within half of `retransmit_ticks` of the last answer to its sender
    /// (`AnswerPace`).
    #[error(
        "recovery query sooner after the last one answered for its sender than its pace allows"
    )]
    RecoveryQueryTooSoon,
    /// A stale view-change whose sender this primary handed its new-view sooner than its pace
    /// allows (`AnswerPace`): not answered again (not a stale view of its own).
    #[error(
        "stale view-change sooner after the new-view last resent to its sender than its pace allows"
    )]
    NewViewResentTooSoon,
    #[error("a message of incarnation {got} of replica {replica}, which is in {known} now")]
    OlderIncarnation {
        replica: ReplicaId,
        got: u64,
        known: u64,
    },
    #[error(
        "recovery query of replica {replica} announces a new incarnation before this replica's stable checkpoint moved on from the last one"
    )]
    IncarnationRaisedTooSoon { replica: ReplicaId },
    #[error("invalid recovery answer: {0}")]
    InvalidRecoveryAnswer(&'static str),
}

#[cfg(test)]
mod tests {
    use super::{max_faulty, quorum};

    #[test]
    fn quorums_intersect_in_f_plus_1_and_f_faults_cannot_block_one() {
        let expected = [
            (1, 1),
            (2, 2),
            (3, 2),
            (4, 3),
            (5, 4),
            (6, 4),
            (7, 5),
            (10, 7),
        ];
        for (n, q) in expected {
            assert_eq!(quorum(n), q, "n = {n}");
        }
        for n in 1..=100u32 {
            let (n_, f, q) = (n as usize, max_faulty(n), quorum(n));
            assert!(2 * q - n_ > f, "n = {n}: two quorums share f+1");
            assert!(q <= n_ - f, "n = {n}: n - f replicas form a quorum");
        }
    }
}
