//! The replica: state, the normal case (§4.2), requests and batching (§4.1, §5.1), and the
//! tick handler. Checkpoints (§4.3) live in `checkpoint.rs`, view changes (§4.4) in
//! `view_change.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::config::{Config, ProtocolError, Restored};
use crate::durable::Durable;
use crate::io::{Action, Alarm, Input};
use crate::message::{
    Checkpoint, Life, Message, NewView, PrePrepare, PreparedCertificate, Signed, ViewChange,
    ViewMessage, Vote,
};
use crate::recovery::Recovery;
use crate::types::{Committed, Digest, Proposal, ReplicaId, Request, SeqNo, View};

/// How many view-changes (of distinct views) are kept per sender.
pub const VIEW_CHANGES_PER_SENDER: usize = 4;
/// Checkpoints above the window a replica keeps a digest of to vouch for (§4.3 after a restart
/// or a state transfer past the window): the last it executed, and one more read back.
pub const VOUCHED_BEYOND_WINDOW: usize = 2;

/// Whether the replica takes part in its view's normal case or is changing views (§4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Normal,
    /// Sent a view-change for `self.view`; waits for a valid new-view.
    ViewChange,
}

/// One sequence number of the current view's log (§4.2).
#[derive(Clone, Debug, Default)]
pub(crate) struct Slot {
    /// The accepted (backup) or sent (primary) pre-prepare of the current view.
    pub(crate) pre_prepare: Option<PrePrepare>,
    /// Prepares of the current view, one per backup; counted when they match the digest.
    pub(crate) prepares: BTreeMap<ReplicaId, Signed<Vote>>,
    /// Commits of the current view, one per replica.
    pub(crate) commits: BTreeMap<ReplicaId, Signed<Vote>>,
    pub(crate) prepared: bool,
    pub(crate) commit_sent: bool,
    /// The pre-prepare cannot execute here in this view: it does not chain to the head a state
    /// transfer brought. The slot is kept (never cleared) so that this replica never accepts,
    /// prepares or commits another proposal at this (view, seq) (§4.2); a view change clears
    /// it with the rest of the log.
    pub(crate) abandoned: bool,
    /// This backup sent no prepare: the proposal's time was more than τ from its clock (or the
    /// time before it unknown) when it accepted the pre-prepare (crate docs, "Block time").
    pub(crate) withheld: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct PendingRequest {
    pub(crate) request: Request,
    /// The tick it arrived, for the batch window.
    pub(crate) since: u64,
    /// Its number in the order of arrivals (its entry in `Replica::arrivals`).
    pub(crate) arrival: u64,
}

/// The pending request an entry of `Replica::arrivals` stands for, if it is still pending
/// since that arrival (a request withdrawn and pending again holds its new place only).
fn live(
    pending: &BTreeMap<Digest, PendingRequest>,
    (id, arrival): (Digest, u64),
) -> Option<&PendingRequest> {
    pending.get(&id).filter(|p| p.arrival == arrival)
}

/// A checkpoint this replica knows it is behind (§4.3, state transfer).
#[derive(Clone, Debug)]
pub(crate) struct FetchTarget {
    pub(crate) seq: SeqNo,
    pub(crate) digest: Digest,
    /// A stable-checkpoint proof, when 2f+1 vouched for it (else f+1 did).
    pub(crate) proof: Option<Vec<Signed<Checkpoint>>>,
    pub(crate) peers: Vec<ReplicaId>,
    pub(crate) since: u64,
    pub(crate) requested_at: Option<u64>,
}

/// Sizes of everything the replica keeps, for status pages and the simulator's bounded-log
/// invariant. Each is bounded by the configuration (see the field docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Slots of the current view: at most L.
    pub slots: usize,
    /// Pre-prepares waiting for their predecessor: at most L.
    pub waiting: usize,
    /// Prepared certificates kept for view-changes: at most L.
    pub prepared_certificates: usize,
    /// Digests of executed sequence numbers above the stable checkpoint: at most L + 1.
    pub executed_digests: usize,
    /// At most `max_pending`.
    pub pending: usize,
    /// At most `executed_window`.
    pub executed_ids: usize,
    /// At most `n * future_buffer_per_sender`.
    pub future_buffered: usize,
    /// Checkpoint messages kept: at most `n * (L / K + 2)`.
    pub checkpoint_messages: usize,
    /// View-changes kept: at most `n * VIEW_CHANGES_PER_SENDER` (4).
    pub view_changes: usize,
    /// Alarms raised since start (see [`crate::Alarm`]): zero unless the fault model was
    /// exceeded or this replica's stores are damaged. Not a size: export it as a counter.
    pub alarms: u64,
    /// Prepares withheld since start because a proposal's block time was more than τ from
    /// this replica's clock (crate docs, "Block time"). A counter, like `alarms`: many mean a
    /// dishonest primary or this validator's clock is wrong.
    pub withheld_prepares: u64,
}

/// When this replica last sent each peer an answer that costs far more than the few bytes
/// that ask for it (a recovery answer, a resent new-view: up to a whole log window), and how
/// many it has sent it lately. A correct peer asks again every `retransmit_ticks` of its own
/// clock until answered. An answer is allowed every half of that on this one's clock, so that a
/// peer whose ticks run a little ahead is not refused every other time (red team of eb409e1c,
/// F1), for the first `at_full_pace` answers; after those the wait doubles with each answer, up
/// to [`ANSWER_WAIT_DOUBLINGS`], and each longest wait between two answers forgets one.
///
/// The new-views' pace starts again at each view change, with as many answers at full pace as a
/// laggard asks within a view-change timer four times this replica's: every answer may be lost,
/// and a laggard that times out into the next view alone is out until the next view change (red
/// team s64 F1: a laggard that went through two more view changes than this primary, its timer
/// four times as long, was shut out by a long outage; one that went through three more still
/// can be). A restarted replica does not know the backoff it entered its view with (not
/// persisted): it answers at full pace until its next view change (red team s65 F1). A faulty
/// peer replaying a stale view-change gets those answers and, past them, one new-view every 16
/// retransmission intervals instead of two an interval (note of the thirtieth session, item 1).
/// The allowance grows with the backoff and with the timer (the node's includes its batch
/// window). Recovery answers keep the full pace (`at_full_pace` unbounded): a querier
/// retransmits to every replica until it has enough answers, and doubling there delayed
/// restarts (red team s64 F3).
#[derive(Clone, Debug)]
pub(crate) struct AnswerPace {
    at_full_pace: u64,
    answered: BTreeMap<ReplicaId, Answered>,
}

/// The doublings of [`AnswerPace`]'s wait: half a retransmission interval doubled five times is
/// sixteen intervals.
pub(crate) const ANSWER_WAIT_DOUBLINGS: u64 = 5;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Answered {
    at: u64,
    /// Answers counted before this one: each longest wait between two answers forgets one.
    before: u64,
}

impl AnswerPace {
    /// A pace allowing `at_full_pace` answers to each peer before the wait doubles.
    pub(crate) fn new(at_full_pace: u64) -> AnswerPace {
        AnswerPace {
            at_full_pace,
            answered: BTreeMap::new(),
        }
    }

    /// The ticks to wait after an answer that followed `before` others: half an interval, then
    /// whole intervals doubled (`(R << d) / 2` rounded up: with an odd `R` the first doubled
    /// wait is `R`, not `R + 1`, which a peer asking every `R` would miss every other time; red
    /// team s64 F6).
    fn wait(&self, before: u64, retransmit_ticks: u64) -> u64 {
        let doublings = before
            .saturating_sub(self.at_full_pace)
            .min(ANSWER_WAIT_DOUBLINGS);
        retransmit_ticks.saturating_mul(1 << doublings).div_ceil(2)
    }

    /// Whether `to` was answered too recently to be answered again at `now`.
    pub(crate) fn too_soon(&self, to: ReplicaId, now: u64, retransmit_ticks: u64) -> bool {
        self.answered.get(&to).is_some_and(|last| {
            now < last
                .at
                .saturating_add(self.wait(last.before, retransmit_ticks))
        })
    }

    pub(crate) fn answered(&mut self, to: ReplicaId, now: u64, retransmit_ticks: u64) {
        let longest = self.wait(u64::MAX, retransmit_ticks);
        let before = self.answered.get(&to).map_or(0, |last| {
            let forgotten = now.saturating_sub(last.at) / longest;
            last.before.saturating_add(1).saturating_sub(forgotten)
        });
        self.answered.insert(to, Answered { at: now, before });
    }
}

/// A PBFT replica (Castro and Liskov, OSDI'99 §4 / TOCS'02 §4). See the crate docs for the
/// caller's contract.
#[derive(Debug)]
pub struct Replica {
    pub(crate) cfg: Config,
    pub(crate) now: u64,
    /// The caller's clock (ms) at the last tick, or at the start.
    pub(crate) clock_ms: u64,
    /// The block time of the executed head (`last_executed`).
    pub(crate) head_time_ms: u64,
    /// The latest block time this replica held when it entered its view (its head's, or the
    /// O set's): the only time that can make a correct primary of this view wait
    /// ([`Replica::primary_owed_wait`]). Persisted as [`Durable::Inherited`]: after a restart
    /// the log cannot tell the O set from the view's own proposals (a faulty primary sets
    /// `proposal.view`; red team s35 F1), nor the head whose view made it.
    pub(crate) inherited_time_ms: u64,
    /// The last sequence number this view inherited (its new-view's O set's last, or the
    /// checkpoint it started from): a block at or below it that state transfer brings is
    /// inherited too (red team s32 F1), one above it is the view's own.
    pub(crate) view_start_seq: SeqNo,
    /// Prepares withheld for a block time far from the clock ([`LogStats::withheld_prepares`]).
    pub(crate) withheld_prepares: u64,
    pub(crate) view: View,
    pub(crate) status: Status,
    /// Consecutive view changes without an execution: the timeout is T << backoff (§4.5.2).
    pub(crate) backoff: u32,
    /// Deadline of the view-change timer, if running. In normal status it runs while a request
    /// is pending and follows the oldest one (`timed_request`, §4.4); in view-change status it
    /// runs once 2f+1 view-changes arrived (§4.5.2).
    pub(crate) timer: Option<u64>,

    /// Low watermark h: the stable checkpoint, which this replica has executed through.
    pub(crate) low: SeqNo,
    pub(crate) low_digest: Digest,
    pub(crate) low_proof: Vec<Signed<Checkpoint>>,
    pub(crate) last_executed: (SeqNo, Digest),
    /// Digests of executed sequence numbers in [h, h + L].
    pub(crate) executed_digests: BTreeMap<SeqNo, Digest>,
    pub(crate) slots: BTreeMap<SeqNo, Slot>,
    /// Pre-prepares of the current view whose predecessor is not accepted yet (chaining).
    pub(crate) waiting: BTreeMap<SeqNo, PrePrepare>,
    /// Highest-view prepared certificate per sequence number above h (the P set, §4.4).
    pub(crate) prepared_certs: BTreeMap<SeqNo, PreparedCertificate>,

    /// Primary only: the next sequence number to assign and the digest it chains to.
    pub(crate) next_seq: SeqNo,
    pub(crate) last_proposed: Digest,
    /// Primary only: an [`Input::Cut`] came while the block time had to wait for the clock,
    /// while `cut_in_flight` sequence numbers were in flight, or during the view change to
    /// this replica's view; honoured once it can propose, in whichever later view it leads (the
    /// node does not send a cut again after a view change; its requests are still pending).
    pub(crate) cut_waiting: bool,
    /// This step sent this replica's new-view: it proposes nothing more in the step (contract
    /// item 13), whatever the input. Cleared at the start of every step.
    pub(crate) new_view_sent: bool,

    pub(crate) pending: BTreeMap<Digest, PendingRequest>,
    /// Arrival order of pending requests, for fair batching (lazily cleaned).
    pub(crate) queue: VecDeque<Digest>,
    /// Arrival order of pending requests, each with its arrival number (lazily cleaned: an
    /// entry is live while the request is pending since that arrival, so a request withdrawn
    /// and pending again holds its new place only): the first live one is the oldest request
    /// this replica waits on, which the view-change timer follows (§4.4).
    pub(crate) arrivals: VecDeque<(Digest, u64)>,
    /// The number the next arrival gets.
    pub(crate) arrivals_counted: u64,
    /// The request the running normal-status timer follows (§4.4, §4.5.2: the timer is not
    /// reset when *other* requests execute, so a primary cannot censor one request by
    /// committing others).
    pub(crate) timed_request: Option<Digest>,
    /// Request ids in accepted, not yet executed pre-prepares of the current view.
    ///
    /// `in_log` and `executed_ids` are hash tables: they are only probed, inserted into and
    /// removed from (several times per request, on up to `executed_window` 32-byte keys, where a
    /// B-tree's key comparisons were a visible share of a validator's CPU), never iterated, so
    /// their order cannot leak into the replica's behaviour. The standard hasher's per-process
    /// random keys change only memory layout, never an output, and keep a Byzantine validator
    /// from grinding request ids that all land in one bucket.
    pub(crate) in_log: HashMap<Digest, SeqNo>,
    pub(crate) executed_ids: HashSet<Digest>,
    pub(crate) executed_order: VecDeque<Digest>,

    /// Checkpoint messages at multiples of K above h, per sender (bounded per sender).
    pub(crate) checkpoints: BTreeMap<ReplicaId, BTreeMap<SeqNo, Signed<Checkpoint>>>,
    /// The highest checkpoint or status claim of each sender.
    pub(crate) claims: BTreeMap<ReplicaId, Checkpoint>,
    pub(crate) fetch: Option<FetchTarget>,
    /// Checkpoints above h that this replica executed without keeping their digest (before a
    /// restart, or by state transfer), whose digest it asked its caller for
    /// ([`Action::ReadExecuted`]); pruned as h advances.
    pub(crate) asked_executed: BTreeSet<SeqNo>,
    /// Checkpoints above h+L this replica executed and vouches for (the last before a restart,
    /// or one read back for peers' vouches): kept apart from `executed_digests`, which holds
    /// the window's; at most [`VOUCHED_BEYOND_WINDOW`], pruned as h advances.
    pub(crate) vouched: BTreeMap<SeqNo, Digest>,

    /// View-changes per sender and view, for views not below the current one; at most
    /// `VIEW_CHANGES_PER_SENDER` (the highest views) per sender. Several views are kept
    /// because a replica that timed out into v+1 must still count towards v's new-view.
    pub(crate) view_changes: BTreeMap<ReplicaId, BTreeMap<View, Signed<ViewChange>>>,
    /// The accepted message of the highest view from each sender, signed by it: its view
    /// drives the f+1 rule (§4.5.2), and a recovering sender is shown it as proof of a view it
    /// was in (`recovery.rs`). Of one view, a vote is kept rather than a view-change (smaller).
    pub(crate) highest_view_shown: BTreeMap<ReplicaId, Box<Signed<ViewMessage>>>,
    /// When this replica last answered each querier's recovery query.
    pub(crate) recovery_answered: AnswerPace,
    /// When this replica, as primary, last resent its new-view to each sender of a stale
    /// view-change (§4.5.2).
    pub(crate) new_view_resent: AnswerPace,
    /// This life's incarnation ([`Restored::incarnation`]).
    pub(crate) incarnation: u64,
    /// The newest life known of each replica (its own signed recovery query; this one's own
    /// too, for answers), with the stable checkpoint at which it was learned: view-changes and
    /// new-views of older incarnations are refused, and one new life per replica per
    /// checkpoint is taken (`recovery.rs`, crate docs).
    pub(crate) lives: BTreeMap<ReplicaId, (Life, SeqNo)>,
    /// The new-view this replica sent as primary of its current view, to resend to laggards.
    pub(crate) last_new_view: Option<NewView>,
    /// Messages of views not entered yet, per sender (bounded per sender).
    pub(crate) future: BTreeMap<ReplicaId, VecDeque<Signed<Message>>>,

    /// Alarms raised (see [`crate::Alarm`]).
    pub(crate) alarms: u64,
    /// The highest sequence number a `CheckpointMismatch` alarm was raised for (raised once).
    pub(crate) checkpoint_alarmed: SeqNo,

    pub(crate) last_progress: u64,
    pub(crate) last_retransmit: u64,
    /// Retransmit on the first tick after a restart.
    pub(crate) restarted: bool,
    /// Recovery from lost state, while it lasts (passive meanwhile; `recovery.rs`).
    pub(crate) recovery: Option<Recovery>,
}

impl Replica {
    /// A replica restarting from `restored` (or starting from genesis with
    /// [`Restored::genesis`]). Replays the durable records in order: the last view record
    /// wins, pre-prepares of that view above the watermark become the log, prepared
    /// certificates become the P set, the highest stable checkpoint becomes h.
    pub fn new(config: Config, restored: Restored) -> Self {
        config.check();
        let genesis = config.genesis;
        let mut r = Replica {
            now: 0,
            clock_ms: restored.now_ms,
            head_time_ms: restored.head_time_ms,
            inherited_time_ms: restored.head_time_ms,
            view_start_seq: 0,
            withheld_prepares: 0,
            view: 0,
            status: Status::Normal,
            backoff: 0,
            timer: None,
            low: 0,
            low_digest: genesis,
            low_proof: Vec::new(),
            last_executed: restored.last_executed,
            executed_digests: BTreeMap::new(),
            slots: BTreeMap::new(),
            waiting: BTreeMap::new(),
            prepared_certs: BTreeMap::new(),
            next_seq: 1,
            last_proposed: genesis,
            cut_waiting: false,
            new_view_sent: false,
            pending: BTreeMap::new(),
            queue: VecDeque::new(),
            arrivals: VecDeque::new(),
            arrivals_counted: 0,
            timed_request: None,
            in_log: HashMap::new(),
            executed_ids: HashSet::new(),
            executed_order: VecDeque::new(),
            checkpoints: BTreeMap::new(),
            claims: BTreeMap::new(),
            fetch: None,
            asked_executed: BTreeSet::new(),
            vouched: BTreeMap::new(),
            view_changes: BTreeMap::new(),
            highest_view_shown: BTreeMap::new(),
            recovery_answered: AnswerPace::new(u64::MAX),
            // The backoff this view was entered with is not persisted: after a restart the pace
            // is the old fixed one until the next view change (red team s65 F1).
            new_view_resent: AnswerPace::new(u64::MAX),
            incarnation: restored.incarnation,
            lives: BTreeMap::new(),
            last_new_view: None,
            future: BTreeMap::new(),
            alarms: 0,
            checkpoint_alarmed: 0,
            last_progress: 0,
            last_retransmit: 0,
            restarted: !restored.durable.is_empty() || restored.last_executed.0 > 0,
            recovery: None,
            cfg: config,
        };
        let mut pre_prepares = Vec::new();
        let mut sent_new_view = None;
        let mut inherited: BTreeMap<View, (u64, SeqNo)> = BTreeMap::new();
        let mut recovery_query_open = false;
        let mut recovery_bound: Option<(View, SeqNo)> = None;
        for record in restored.durable {
            match record {
                Durable::View(v) => {
                    if v >= r.view {
                        r.view = v;
                        r.status = Status::Normal;
                    }
                }
                Durable::ViewChange(v) => {
                    if v > r.view || (v == r.view && r.status == Status::ViewChange) {
                        r.view = v;
                        r.status = Status::ViewChange;
                    }
                }
                Durable::PrePrepare(pp) => pre_prepares.push((pp, false)),
                Durable::Withheld(pp) => pre_prepares.push((pp, true)),
                Durable::Prepared(cert) => r.remember_prepared(cert),
                Durable::StableCheckpoint { checkpoint, proof } => {
                    if checkpoint.seq > r.low {
                        r.low = checkpoint.seq;
                        r.low_digest = checkpoint.digest;
                        r.low_proof = proof;
                    }
                }
                Durable::NewView(nv) => sent_new_view = Some(nv),
                Durable::Inherited { view, time_ms, seq } => {
                    inherited.insert(view, (time_ms, seq));
                }
                Durable::Incarnation { life, at } => {
                    r.remember_life(life, at);
                }
                Durable::Recovery { bound } => {
                    recovery_query_open = bound.is_none();
                    if let Some((view, seq)) = bound {
                        let (v, s) = recovery_bound.unwrap_or((0, 0));
                        recovery_bound = Some((v.max(view), s.max(seq)));
                    }
                }
            }
        }
        // A primary keeps resending the new-view of its view to replicas that missed it.
        // What the view inherited, as recorded when it was entered (red team s35 F2, F3): the
        // restored view's last record, which compaction keeps (not a later view's, written
        // by a step cut before its `View` record: red team s38 F1); a head up to the view's
        // start is inherited, one above it the view's own. View 0 inherited only the genesis
        // block (red team s37 F2, s38 F2); a later view without the record (a log from before
        // it), the head's time.
        match inherited.get(&r.view) {
            Some(&(time_ms, seq)) => {
                r.inherited_time_ms = time_ms;
                if r.last_executed.0 <= seq {
                    r.inherited_time_ms = r.inherited_time_ms.max(r.head_time_ms);
                }
                r.view_start_seq = seq;
            }
            None if r.view == 0 && r.last_executed.0 > 0 => r.inherited_time_ms = 0,
            None => {}
        }
        if r.inherits_logged_proposals() {
            let forged = pre_prepares
                .iter()
                .filter(|(pp, _)| pp.view == r.view && pp.proposal.view < pp.view)
                .map(|(pp, _)| pp.proposal.time_ms);
            r.inherited_time_ms = r.inherited_time_ms.max(forged.max().unwrap_or(0));
        }
        r.last_new_view = sent_new_view.filter(|nv| {
            nv.view == r.view && r.status == Status::Normal && r.cfg.primary(nv.view) == r.cfg.id
        });
        let low = r.low;
        r.prepared_certs.retain(|seq, _| *seq > low);
        // At the head, the head's own digest stands for it.
        if let Some((seq, digest)) = restored.executed_checkpoint
            && seq > r.low
            && seq < r.last_executed.0
            && seq.is_multiple_of(r.cfg.checkpoint_interval)
        {
            r.keep_executed_checkpoint(seq, digest);
        }
        // The head's digest wins over a different one named for the same sequence number.
        r.executed_digests
            .insert(r.last_executed.0, r.last_executed.1);
        if r.low <= r.last_executed.0 {
            r.executed_digests.insert(r.low, r.low_digest);
        } else {
            // The ledger is behind its own stable checkpoint: fetch up to it.
            r.fetch = Some(FetchTarget {
                seq: r.low,
                digest: r.low_digest,
                proof: Some(r.low_proof.clone()),
                peers: r.low_proof.iter().map(|c| c.from).collect(),
                since: 0,
                requested_at: None,
            });
        }
        let high = r.high();
        if r.status == Status::Normal {
            // In record order: the `PrePrepare` written when a withheld prepare went out
            // comes after its `Withheld`.
            for (pp, withheld) in pre_prepares {
                let seq = pp.proposal.seq;
                if pp.view == r.view && seq > r.low && seq <= high {
                    let slot = r.slots.entry(seq).or_default();
                    slot.pre_prepare = Some(pp);
                    slot.withheld = withheld;
                }
            }
            let view = r.view;
            for (seq, cert) in &r.prepared_certs {
                if cert.pre_prepare.view == view
                    && let Some(slot) = r.slots.get_mut(seq)
                    && slot.pre_prepare.as_ref() == Some(&cert.pre_prepare)
                {
                    slot.prepared = true;
                }
            }
            let last = r.last_executed.0;
            for (seq, slot) in &r.slots {
                if *seq > last
                    && let Some(pp) = &slot.pre_prepare
                {
                    for req in &pp.proposal.requests {
                        r.in_log.insert(req.id, *seq);
                    }
                }
            }
            // A backup resends the prepares it sent, whatever its clock says now (it judged
            // their block times on receipt; red team s27 O1), and judges the withheld ones
            // again at its ticks (`reconsider_withheld`).
            r.abandon_unchained_slots();
        }
        // A primary continues after its last pre-prepare of this view (never reassigning one).
        let (seq, digest) = r
            .slots
            .iter()
            .rev()
            .find_map(|(s, slot)| slot.pre_prepare.as_ref().map(|pp| (*s, pp.digest)))
            .filter(|(s, _)| *s >= r.last_executed.0)
            .unwrap_or(if r.low > r.last_executed.0 {
                // Never below its own stable checkpoint (a ledger behind it, contract item 4):
                // those sequence numbers were assigned and committed (red team s28 F1).
                (r.low, r.low_digest)
            } else {
                r.last_executed
            });
        r.next_seq = seq + 1;
        r.last_proposed = digest;
        if r.can_recover() {
            let bound = recovery_bound.unwrap_or((0, 0));
            // Recovery's step 3 (crate docs): changing to a view up to V that it leads, it may
            // have sent that view's new-view in its lost life; a restart must not forget it.
            let may_have_led = recovery_bound.is_some()
                && r.status == Status::ViewChange
                && r.is_primary()
                && r.view <= bound.0;
            if restored.recovering || recovery_query_open {
                r.recovery = Some(Recovery::querying(
                    restored.nonce,
                    bound,
                    restored.recovering,
                ));
            } else if bound.0 > r.view || bound.1 > r.low || may_have_led {
                let mut recovery = Recovery::querying(0, bound, false);
                recovery.query = None;
                r.recovery = Some(recovery);
            }
        }
        r
    }

    // ----- accessors -------------------------------------------------------------------

    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn id(&self) -> ReplicaId {
        self.cfg.id
    }
    pub fn view(&self) -> View {
        self.view
    }
    /// The primary of the current view (the one being changed to, during a view change).
    pub fn primary(&self) -> ReplicaId {
        self.cfg.primary(self.view)
    }
    pub fn is_primary(&self) -> bool {
        self.primary() == self.cfg.id
    }
    pub fn in_view_change(&self) -> bool {
        self.status == Status::ViewChange
    }
    pub fn last_executed(&self) -> (SeqNo, Digest) {
        self.last_executed
    }
    /// The low watermark h and its digest.
    pub fn stable_checkpoint(&self) -> (SeqNo, Digest) {
        (self.low, self.low_digest)
    }
    /// Requests received and not executed yet.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
    /// The requests of slots restored from the log at a restart that nothing waits on: the
    /// node resubmits those its chain does not hold ([`Input::Request`]), so that a slot every
    /// backup withholds still times out (red team s30 F2, s39 F1). In slot order.
    pub fn restored_requests(&self) -> Vec<Request> {
        let first = self.last_executed.0 + 1;
        let mut seen = HashSet::new();
        self.slots
            .range(first..)
            .filter(|(_, slot)| !slot.abandoned)
            .filter_map(|(_, slot)| slot.pre_prepare.as_ref())
            .flat_map(|pp| pp.proposal.requests.iter())
            .filter(|r| self.restored_in_log(&r.id) && seen.insert(r.id))
            .cloned()
            .collect()
    }
    /// The requests this replica waits on that no slot of its log holds, oldest first (the
    /// order the view-change timer follows them in), each with the ticks it has waited. The
    /// node judges these again: one the rules now reject for good, no correct primary proposes,
    /// and waited on it would time out a correct primary ([`Input::Withdraw`]).
    pub fn waited_unproposed(&self) -> impl Iterator<Item = (&Request, u64)> + '_ {
        self.arrivals.iter().filter_map(|&entry| {
            let pending = live(&self.pending, entry)?;
            (!self.in_log.contains_key(&entry.0))
                .then(|| (&pending.request, self.now - pending.since))
        })
    }
    /// Whether this replica holds request `id` already: pending, in its log, or executed within
    /// its window (a second copy is refused as a duplicate).
    pub fn knows_request(&self, id: &Digest) -> bool {
        self.known_request(id)
    }
    /// Logical time: the number of ticks seen since start.
    pub fn now(&self) -> u64 {
        self.now
    }
    /// The caller's clock (ms) as of the last tick (or the start).
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }
    pub fn log_stats(&self) -> LogStats {
        LogStats {
            slots: self.slots.len(),
            waiting: self.waiting.len(),
            prepared_certificates: self.prepared_certs.len(),
            executed_digests: self.executed_digests.len(),
            pending: self.pending.len(),
            executed_ids: self.executed_ids.len(),
            future_buffered: self.future.values().map(VecDeque::len).sum(),
            checkpoint_messages: self.checkpoints.values().map(BTreeMap::len).sum(),
            view_changes: self.view_changes.values().map(BTreeMap::len).sum(),
            alarms: self.alarms,
            withheld_prepares: self.withheld_prepares,
        }
    }

    pub(crate) fn high(&self) -> SeqNo {
        self.low + self.cfg.watermark_window
    }
    pub(crate) fn quorum(&self) -> usize {
        self.cfg.quorum()
    }
    /// The new-view pace of a view entered with this replica's backoff ([`AnswerPace`]): as many
    /// answers at full pace as a laggard retransmits within a timer four times this one's.
    pub(crate) fn new_view_pace(&self) -> AnswerPace {
        AnswerPace::new(
            self.timeout()
                .saturating_mul(4)
                .div_ceil(self.cfg.retransmit_ticks),
        )
    }

    /// T << backoff (§4.5.2), saturating instead of overflowing.
    pub(crate) fn timeout(&self) -> u64 {
        let base = self.cfg.view_change_timeout_ticks;
        if self.backoff > base.leading_zeros() {
            u64::MAX
        } else {
            base << self.backoff
        }
    }

    // ----- step --------------------------------------------------------------------------

    /// Feeds one input; pushes the resulting actions, which the caller executes in order
    /// (see the crate docs). On `Err`, no action was pushed and the input was dropped.
    pub fn step(&mut self, input: Input, actions: &mut Vec<Action>) -> Result<(), ProtocolError> {
        if let Input::Clock { now_ms } = input {
            self.clock_ms = now_ms;
            return Ok(());
        }
        let mark = actions.len();
        self.new_view_sent = false;
        let result = match input {
            Input::Tick { now_ms } => {
                self.clock_ms = now_ms;
                self.on_tick(actions);
                Ok(())
            }
            // Handled above: a clock read changes nothing else.
            Input::Clock { .. } => Ok(()),
            Input::Message(m) => self.on_message(m, actions),
            Input::Request(r) => self.on_request(r, actions),
            Input::Withdraw(ids) => {
                self.withdraw(&ids);
                Ok(())
            }
            Input::Cut => {
                match self.status {
                    Status::Normal if self.is_primary() => self.try_propose(true, actions),
                    // The incoming primary keeps it for the view it is changing to: dropped,
                    // its requests would wait out the batch window once the view starts.
                    Status::ViewChange if self.is_primary() => self.cut_waiting = true,
                    _ => {}
                }
                Ok(())
            }
            Input::StateTransferred {
                seq,
                digest,
                time_ms,
                request_ids,
            } => self.on_state_transferred(seq, digest, time_ms, request_ids, actions),
            Input::Executed { seq, digest } => self.on_executed_digest(seq, digest, actions),
        };
        if result.is_err() {
            assert_eq!(
                actions.len(),
                mark,
                "an error must not leave actions behind"
            );
        } else {
            self.recovery_after_step(mark, actions);
        }
        result
    }

    fn on_message(
        &mut self,
        m: Signed<Message>,
        actions: &mut Vec<Action>,
    ) -> Result<(), ProtocolError> {
        let from = m.from;
        if from >= self.cfg.n {
            return Err(ProtocolError::UnknownSender(from));
        }
        // Only messages the replica accepts count for the f+1 rule (§4.5.2): a malformed one
        // must not change its state.
        let shown = m
            .message
            .view()
            .filter(|_| from != self.cfg.id)
            .and_then(|view| self.shows_more(from, view, &m.message))
            .map(|message| Signed {
                from,
                message,
                signature: m.signature,
            });
        let Signed {
            from,
            message,
            signature,
        } = m;
        let result = match message {
            Message::Forward(requests) => self.on_forward(from, requests, actions),
            Message::PrePrepare(pp) => {
                let signed = Signed {
                    from,
                    message: Message::PrePrepare(pp),
                    signature,
                };
                self.on_pre_prepare(signed, actions)
            }
            Message::Prepare(vote) => self.on_vote(
                Signed {
                    from,
                    message: vote,
                    signature,
                },
                false,
                actions,
            ),
            Message::Commit(vote) => self.on_vote(
                Signed {
                    from,
                    message: vote,
                    signature,
                },
                true,
                actions,
            ),
            Message::Checkpoint(c) => self.on_checkpoint(
                Signed {
                    from,
                    message: c,
                    signature,
                },
                actions,
            ),
            Message::ViewChange(vc) => self.on_view_change(
                Signed {
                    from,
                    message: vc,
                    signature,
                },
                actions,
            ),
            Message::NewView(nv) => self.on_new_view(from, nv, actions),
            Message::RecoveryQuery(q) => self.on_recovery_query(from, q, signature, actions),
            Message::Lives(lives) => self
                .check_lives(&lives)
                .map(|()| self.on_lives(lives, actions)),
            Message::RecoveryAnswer(a) => self.on_recovery_answer(from, a, actions),
        };
        if result.is_ok() {
            if let Some(shown) = shown {
                self.highest_view_shown.insert(from, Box::new(shown));
            }
            self.join_higher_view(actions);
        }
        result
    }

    /// Keeps a view-change found inside an accepted new-view as its sender's message of the
    /// highest view, if its view is higher than the one kept: a recovering sender is then
    /// shown it (`recovery.rs`) even if its view-change reached this replica only that way.
    pub(crate) fn show_view_change(&mut self, vc: &Signed<ViewChange>) {
        let kept = self.highest_view_shown.get(&vc.from);
        if vc.from == self.cfg.id || kept.is_some_and(|k| k.message.view() >= vc.message.new_view) {
            return;
        }
        let shown = Signed {
            from: vc.from,
            message: ViewMessage::ViewChange(vc.message.clone()),
            signature: vc.signature,
        };
        self.highest_view_shown.insert(vc.from, Box::new(shown));
    }

    /// `message` (of `view`, from `from`) as it is kept, if it is worth keeping over the one
    /// kept: a higher view, or a vote where a view-change or new-view of that view is kept.
    fn shows_more(&self, from: ReplicaId, view: View, message: &Message) -> Option<ViewMessage> {
        let kept = self.highest_view_shown.get(&from).map(|k| &k.message);
        if kept.is_some_and(|k| view < k.view() || (view == k.view() && k.is_vote())) {
            return None;
        }
        ViewMessage::of(message).filter(|new| kept.is_none_or(|k| view > k.view() || new.is_vote()))
    }

    // ----- time --------------------------------------------------------------------------

    fn on_tick(&mut self, actions: &mut Vec<Action>) {
        self.now += 1;
        if self.timer.is_some() && self.primary_owed_wait() {
            // A correct primary proposes nothing yet: its wait is no fault, and the timer runs
            // out at the earliest a full timeout after it (a timeout shorter than τ/2 would
            // replace every correct primary after a faulty one pushed the time ahead).
            self.timer = Some(self.now.saturating_add(self.timeout()));
        } else if let Some(lowest) = self.timer.and_then(|_| self.lowest_waited_vouched_slot()) {
            // A replica whose every waited-on request sits in a slot the others vouch they
            // executed lacks only the state transfer, not the primary's work (red team s33 F1,
            // s39 F3, s40 F1): its timer stands still, but is not renewed. The vouch is for the
            // sequence number, not for the pre-prepare this replica holds there, so a faulty
            // primary can plant a waited-on request at one correct backup behind after
            // another; renewed, no correct replica ever timed out (red team s42 F1). Paused,
            // the time each waited outside such a slot still counts, and the primary can hold
            // at most f correct replicas behind at once.
            // Renewed, though, while this replica's own pre-prepares chain from the vouched
            // target down to every waited-on slot: those slots are the decided ones, their
            // requests execute with the transfer, and the time waited before the vouch is no
            // fault of the primary (red team s45 F1: paused, a backup behind its own restored
            // slot timed out on a correct primary once fresh requests kept it out of the
            // vouched slots for a while, s39 F3 again). A planted slot never chains there.
            self.timer = if self.waited_slots_decided(lowest) {
                Some(self.now.saturating_add(self.timeout()))
            } else {
                self.timer.map(|deadline| deadline.saturating_add(1))
            };
        }
        if let Some(deadline) = self.timer
            && self.now >= deadline
        {
            // §4.4: the timer expired on a pending request (or, while changing views, on a
            // new-view that did not come): move on to the next view.
            self.start_view_change(self.view + 1, actions);
        }
        self.join_higher_view(actions);
        if self.status == Status::Normal && self.is_primary() {
            self.try_propose(false, actions);
        }
        self.reconsider_withheld(actions);
        self.retransmit(actions);
        self.maybe_fetch(actions);
        self.maybe_query(actions);
    }

    /// Retransmission (§5 assumes lost messages are resent): a replica that made no progress
    /// for `retransmit_ticks` resends what others may have missed.
    fn retransmit(&mut self, actions: &mut Vec<Action>) {
        let interval = self.cfg.retransmit_ticks;
        if self.now < self.last_retransmit + interval && !self.restarted {
            return;
        }
        self.last_retransmit = self.now;
        // A replica changing views always counts as stalled: blocks that state transfer brings
        // count as progress, but would keep it from ever resending the view-change that gets
        // it the primary's new-view (red team of eb409e1c, F2).
        let stalled = self.status == Status::ViewChange
            || self.now >= self.last_progress + interval
            || self.restarted;
        self.restarted = false;
        if !stalled {
            return;
        }
        match self.status {
            Status::ViewChange => {
                let vc = self.build_view_change();
                actions.push(Action::Broadcast(Message::ViewChange(vc)));
                self.relay_lives(actions);
            }
            Status::Normal => {
                self.send_commits(actions);
                let primary = self.is_primary();
                let view = self.view;
                let first = self.last_executed.0 + 1;
                for (seq, slot) in self.slots.range(first..) {
                    let Some(pp) = slot.pre_prepare.as_ref().filter(|_| !slot.abandoned) else {
                        continue;
                    };
                    if primary {
                        actions.push(Action::Broadcast(Message::PrePrepare(pp.clone())));
                    } else if !slot.withheld {
                        actions.push(Action::Broadcast(Message::Prepare(Vote {
                            view,
                            seq: *seq,
                            digest: pp.digest,
                        })));
                    }
                    if slot.commit_sent {
                        actions.push(Action::Broadcast(Message::Commit(Vote {
                            view,
                            seq: *seq,
                            digest: pp.digest,
                        })));
                    }
                }
                if !primary {
                    // Only what the primary should have proposed by now (it waited a batch
                    // window): the retransmission interval is shorter than a long window, and a
                    // forward costs the primary an admission check.
                    let window = self.cfg.batch_window_ticks;
                    let unproposed: Vec<Request> = self
                        .pending
                        .iter()
                        .filter(|(id, p)| {
                            !self.in_log.contains_key(*id) && self.now - p.since >= window
                        })
                        .map(|(_, p)| p.request.clone())
                        .collect();
                    self.forward(unproposed, actions);
                }
            }
        }
        // The last checkpoint executed and not stable yet, again (§4.3; `Restored`'s
        // `executed_checkpoint` says why).
        let checkpoint_interval = self.cfg.checkpoint_interval;
        let in_window = self
            .executed_digests
            .range(self.low + 1..)
            .rev()
            .find(|(seq, _)| seq.is_multiple_of(checkpoint_interval));
        let beyond = self.vouched.range(self.low + 1..).next_back();
        if let Some((&seq, &digest)) = in_window.max(beyond) {
            actions.push(Action::Broadcast(Message::Checkpoint(Checkpoint {
                seq,
                digest,
            })));
        }
        if self.last_executed.0 > 0 {
            // Status claim: lets a replica that missed everything learn it is behind.
            actions.push(Action::Broadcast(Message::Checkpoint(Checkpoint {
                seq: self.last_executed.0,
                digest: self.last_executed.1,
            })));
        }
    }

    /// §4.4: a backup waiting on a request starts its timer if it is not running; the timer
    /// follows the oldest request waited on.
    pub(crate) fn arm_timer(&mut self) {
        // A recovering replica follows the others' views; it does not start view changes.
        if self.status != Status::Normal || self.timer.is_some() || self.recovery.is_some() {
            return;
        }
        if let Some(oldest) = self.oldest_pending() {
            self.timed_request = Some(oldest);
            self.timer = Some(self.now.saturating_add(self.timeout()));
        }
    }

    fn oldest_pending(&mut self) -> Option<Digest> {
        while let Some(&entry) = self.arrivals.front() {
            if live(&self.pending, entry).is_some() {
                return Some(entry.0);
            }
            self.arrivals.pop_front();
        }
        None
    }

    /// Something executed. §4.4/§4.5.2: the timer stops only when the request it follows is
    /// no longer waited on, and then restarts (with a full timeout) for the oldest request
    /// still waited on; executing other requests leaves it running.
    pub(crate) fn progress(&mut self) {
        self.last_progress = self.now;
        if self.status == Status::Normal
            && self
                .timed_request
                .is_none_or(|id| !self.pending.contains_key(&id))
        {
            self.stop_timer();
            self.arm_timer();
        }
    }

    /// [`Input::Withdraw`]: forgets pending requests not in the log. The timer, if it followed
    /// one of them, follows the oldest request still waited on, due when that one has waited
    /// a full timeout, and never earlier than it was due. A withdrawal is no progress (§4.4
    /// restarts the timer only on an execution): restarted with a full timeout from now, the
    /// timer of a backup made to withdraw one request after another (a faulty primary's own
    /// transactions, forwarded and expiring in turn) never ran out, and a primary that
    /// proposed nothing was never replaced (red team s76). So the oldest request waited on
    /// times the primary out at the latest a full timeout after it came or after the last
    /// execution, whichever is later, however many others are withdrawn meanwhile (later ones
    /// wait their turn, as §4.4 has it: an execution of the oldest restarts the timer).
    fn withdraw(&mut self, ids: &[Digest]) {
        for id in ids {
            if !self.in_log.contains_key(id) {
                self.pending.remove(id);
            }
        }
        if self
            .timed_request
            .is_none_or(|id| self.pending.contains_key(&id))
        {
            return;
        }
        let due = self.timer;
        self.stop_timer();
        self.arm_timer();
        // Re-armed (normal status, not recovering): for the oldest request still waited on.
        let oldest_since = self
            .timed_request
            .and_then(|id| self.pending.get(&id))
            .map(|p| p.since);
        if let (Some(due), Some(since)) = (due, oldest_since) {
            self.timer = Some(due.max(since.saturating_add(self.timeout())));
        }
    }

    pub(crate) fn stop_timer(&mut self) {
        self.timer = None;
        self.timed_request = None;
    }

    // ----- requests (§4.1) -----------------------------------------------------------------

    /// In the log at a slot not executed yet, and neither waited on nor executed.
    fn restored_in_log(&self, id: &Digest) -> bool {
        self.in_log
            .get(id)
            .is_some_and(|seq| *seq > self.last_executed.0)
            && !self.pending.contains_key(id)
            && !self.executed_ids.contains(id)
    }

    fn known_request(&self, id: &Digest) -> bool {
        self.pending.contains_key(id)
            || self.in_log.contains_key(id)
            || self.executed_ids.contains(id)
    }

    fn add_pending(&mut self, request: Request) -> Result<(), ProtocolError> {
        if self.known_request(&request.id) {
            return Err(ProtocolError::DuplicateRequest);
        }
        if self.pending.len() >= self.cfg.max_pending {
            return Err(ProtocolError::PendingFull);
        }
        self.insert_pending(request);
        Ok(())
    }

    fn insert_pending(&mut self, request: Request) {
        self.queue.push_back(request.id);
        let arrival = self.arrivals_counted;
        self.arrivals_counted += 1;
        self.arrivals.push_back((request.id, arrival));
        self.pending.insert(
            request.id,
            PendingRequest {
                request,
                since: self.now,
                arrival,
            },
        );
    }

    fn on_request(
        &mut self,
        request: Request,
        actions: &mut Vec<Action>,
    ) -> Result<(), ProtocolError> {
        if self.restored_in_log(&request.id) {
            // A slot restored at a restart keeps its requests in the log but waits on none of
            // them (`Replica::new`); the caller's resubmission is waited on, as
            // `accept_pre_prepare` does for a pre-prepare's requests, so that a slot every
            // backup withholds still arms a timer (red team s30 F2). The caller submits only
            // what its chain does not hold, so this is no replay of an executed request (red
            // team s33 F2: a peer's forward is not trusted so).
            if self.pending.len() >= self.cfg.max_pending {
                return Err(ProtocolError::PendingFull);
            }
            self.insert_pending(request);
            self.arm_timer();
            return Ok(());
        }
        self.add_pending(request.clone())?;
        if self.status == Status::Normal {
            if self.is_primary() {
                self.try_propose(false, actions);
            } else {
                // §4.1: a backup relays the request to the primary and starts its timer.
                self.forward(vec![request], actions);
            }
        }
        self.arm_timer();
        Ok(())
    }

    fn on_forward(
        &mut self,
        from: ReplicaId,
        requests: Vec<Request>,
        actions: &mut Vec<Action>,
    ) -> Result<(), ProtocolError> {
        self.check_batch(&requests)?;
        let fresh: Vec<Request> = requests
            .into_iter()
            .filter(|r| self.add_pending(r.clone()).is_ok())
            .collect();
        if fresh.is_empty() {
            return Err(ProtocolError::DuplicateRequest);
        }
        if self.status == Status::Normal {
            if self.is_primary() {
                self.try_propose(false, actions);
            } else if from != self.primary() {
                self.forward(fresh, actions);
            }
        }
        self.arm_timer();
        Ok(())
    }

    pub(crate) fn forward(&mut self, requests: Vec<Request>, actions: &mut Vec<Action>) {
        let to = self.primary();
        for chunk in requests.chunks(self.cfg.max_batch) {
            actions.push(Action::Send {
                to,
                message: Message::Forward(chunk.to_vec()),
            });
        }
    }

    pub(crate) fn remember_executed(&mut self, id: Digest) {
        self.pending.remove(&id);
        self.in_log.remove(&id);
        if self.executed_ids.insert(id) {
            self.executed_order.push_back(id);
            while self.executed_order.len() > self.cfg.executed_window {
                if let Some(old) = self.executed_order.pop_front() {
                    self.executed_ids.remove(&old);
                }
            }
        }
        let bound = 2 * self.pending.len() + 64;
        let pending = &self.pending;
        if self.queue.len() > bound {
            self.queue.retain(|id| pending.contains_key(id));
        }
        if self.arrivals.len() > bound {
            self.arrivals
                .retain(|entry| live(pending, *entry).is_some());
        }
    }

    // ----- primary: batching and pre-prepare (§4.2, §5.1) ----------------------------------

    /// Proposes batches while the pipeline and the watermarks allow: a batch goes out when it
    /// is full, when its oldest request waited `batch_window_ticks`, or on [`Input::Cut`].
    pub(crate) fn try_propose(&mut self, cut: bool, actions: &mut Vec<Action>) {
        debug_assert!(self.status == Status::Normal && self.is_primary());
        if self.recovery.is_some() {
            return; // a recovering primary proposes nothing; the backups replace it
        }
        if self.new_view_sent {
            // Stamped now, a batch would leave after the new-view its caller has yet to
            // persist and send (contract item 13): the next input proposes.
            return;
        }
        let mut proposed = false;
        loop {
            let in_flight = self.next_seq.saturating_sub(self.last_executed.0 + 1);
            if in_flight >= self.cfg.max_in_flight || self.next_seq > self.high() {
                // A cut that finds the pipeline (or the window) full waits for an execution,
                // as one that finds fewer in flight does; dropped, its requests would wait
                // out the batch window however soon the pipeline drains.
                self.cut_waiting |= cut && !proposed;
                return;
            }
            if self.next_seq <= self.last_executed.0 {
                // Only after a state transfer past our own proposals: continue from the head.
                self.next_seq = self.last_executed.0 + 1;
                self.last_proposed = self.last_executed.1;
            }
            if self
                .slots
                .get(&(self.next_seq - 1))
                .is_some_and(|s| s.abandoned)
            {
                // Our own proposals were abandoned: their sequence numbers cannot be assigned
                // again in this view (§4.2), so nothing after them can execute; wait for the
                // view change.
                return;
            }
            let Some(time_ms) = self.proposal_time() else {
                // Waits for its clock (the τ/2 margin) or for the time before.
                self.cut_waiting |= cut && !proposed;
                return;
            };
            // A cut goes at once only into a short pipeline; otherwise it waits for the next
            // execution and gathers what arrives meanwhile (§5.1.4 of the TOCS paper).
            let wants_cut = cut || self.cut_waiting;
            let cut = wants_cut && in_flight < self.cfg.cut_in_flight;
            self.cut_waiting = wants_cut;
            while let Some(id) = self.queue.front() {
                if self.pending.contains_key(id) && !self.in_log.contains_key(id) {
                    break;
                }
                self.queue.pop_front();
            }
            let Some(oldest) = self.queue.front() else {
                self.cut_waiting = false; // nothing left that the cut was for
                return;
            };
            let waited = self.now - self.pending[oldest].since;
            // The queue holds every proposable request (and some stale ids): shorter than a
            // batch, no batch is full. Saves a scan of the queue per arriving request.
            if !(cut || waited >= self.cfg.batch_window_ticks)
                && self.queue.len() < self.cfg.max_batch
            {
                return;
            }
            let mut batch = Vec::new();
            let mut seen = BTreeSet::new();
            for id in &self.queue {
                if batch.len() == self.cfg.max_batch {
                    break;
                }
                if let Some(p) = self.pending.get(id)
                    && !self.in_log.contains_key(id)
                    && seen.insert(*id)
                {
                    batch.push(p.request.clone());
                }
            }
            if !(cut || batch.len() >= self.cfg.max_batch || waited >= self.cfg.batch_window_ticks)
            {
                return;
            }
            // A cut waits on for what a full batch left behind, whether it was honoured at
            // once or held back until now.
            self.cut_waiting = wants_cut && (!cut || batch.len() >= self.cfg.max_batch);
            self.propose(batch, time_ms, actions);
            proposed = true;
        }
    }

    /// The block time of the next proposal, `max(clock, prev + 1)` with `prev` the time of the
    /// proposal before it, or `None` while the primary must wait: while `prev + 1` is more than
    /// τ/2 ahead of its clock (after a faulty primary pushed `prev` towards +τ; proposing it now
    /// would be refused by backups whose clocks are behind, and replace this primary), or while
    /// the time before is unknown (a stable checkpoint above the executed head).
    fn proposal_time(&self) -> Option<u64> {
        let after = self.time_at(self.next_seq - 1)?.saturating_add(1);
        let margin = self.cfg.block_time_tolerance_ms / 2;
        (after <= self.clock_ms.saturating_add(margin)).then(|| after.max(self.clock_ms))
    }

    fn propose(&mut self, requests: Vec<Request>, time_ms: u64, actions: &mut Vec<Action>) {
        let seq = self.next_seq;
        let proposal = Proposal {
            seq,
            view: self.view,
            proposer: self.cfg.id,
            prev: self.last_proposed,
            time_ms,
            requests,
        };
        let digest = (self.cfg.digest)(&proposal);
        let pp = PrePrepare {
            view: self.view,
            digest,
            proposal: Arc::new(proposal),
        };
        self.next_seq += 1;
        self.last_proposed = digest;
        for r in &pp.proposal.requests {
            self.in_log.insert(r.id, seq);
        }
        self.slots.entry(seq).or_default().pre_prepare = Some(pp.clone());
        actions.push(Action::Persist(Durable::PrePrepare(pp.clone())));
        actions.push(Action::Broadcast(Message::PrePrepare(pp)));
        self.check_prepared(seq, actions);
    }

    /// Checks what a message's shape alone can tell, with no signature: batch sizes,
    /// view-change and new-view structure (sizes bounded by n and L, distinct signers,
    /// quorums, digests), and that a recovery answer answers this replica's open query, with a
    /// well-formed certificate and querier's message. The caller
    /// runs it before verifying the message's signatures, so a peer cannot make this validator
    /// verify more signatures than a valid message carries (issue 8, finding 5).
    /// [`Replica::step`] checks the same again.
    pub fn check_shape(&self, message: &Message) -> Result<(), ProtocolError> {
        match message {
            Message::Forward(requests) => self.check_batch(requests),
            Message::PrePrepare(pp) => self.check_batch(&pp.proposal.requests),
            Message::ViewChange(vc) => self.validate_view_change(vc),
            Message::NewView(nv) => self.validate_new_view(nv),
            Message::RecoveryAnswer(answer) => self.validate_recovery_answer(answer),
            Message::Lives(lives) => self.check_lives(lives),
            Message::Prepare(_)
            | Message::Commit(_)
            | Message::Checkpoint(_)
            | Message::RecoveryQuery(_) => Ok(()),
        }
    }

    /// Whether stepping `message` from `from` would use what it carries. A view-change or
    /// new-view for a view this replica has passed (or is in, normally), or a new-view from
    /// another than its view's primary, is dropped whatever it carries: a view-change then
    /// only tells that its sender is behind (answered with this replica's new-view, §4.5.2),
    /// and may be kept as the view its sender showed, which is shown to that sender alone
    /// (recovery), who takes from it only the view it signed. The caller skips the signatures such a message embeds, so that replaying honest votes
    /// in stale view-changes costs a dishonest validator's peers one signature each.
    pub fn uses_contents(&self, from: ReplicaId, message: &Message) -> bool {
        match message {
            Message::ViewChange(vc) => !self.is_stale_view(vc.new_view),
            Message::NewView(nv) => {
                from == self.cfg.primary(nv.view) && !self.is_stale_view(nv.view)
            }
            _ => true,
        }
    }

    /// Whether a view-change or new-view for `view` comes too late to matter here.
    pub(crate) fn is_stale_view(&self, view: View) -> bool {
        view < self.view || (view == self.view && self.status == Status::Normal)
    }

    /// A batch a correct primary could have built: at most `max_batch` requests, no id twice.
    /// Checked wherever a batch arrives (pre-prepares, forwards, prepared certificates), before
    /// anything is stored, so that no peer can make this replica hold more than that.
    pub(crate) fn check_batch(&self, requests: &[Request]) -> Result<(), ProtocolError> {
        if requests.len() > self.cfg.max_batch {
            return Err(ProtocolError::Malformed("batch larger than max_batch"));
        }
        let mut ids: Vec<&Digest> = requests.iter().map(|r| &r.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(ProtocolError::Malformed(
                "the same request twice in a batch",
            ));
        }
        Ok(())
    }

    // ----- backup: accepting a pre-prepare (§4.2) ------------------------------------------

    /// The digest this replica holds for `seq`, to check a successor's `prev` against.
    pub(crate) fn digest_at(&self, seq: SeqNo) -> Option<Digest> {
        if seq == self.last_executed.0 {
            return Some(self.last_executed.1);
        }
        if seq == self.low {
            return Some(self.low_digest);
        }
        if let Some(d) = self.executed_digests.get(&seq) {
            return Some(*d);
        }
        self.slots
            .get(&seq)
            .filter(|s| !s.abandoned)
            .and_then(|s| s.pre_prepare.as_ref())
            .map(|pp| pp.digest)
    }

    /// The block time this replica holds for `seq`: the executed head's, or that of the
    /// pre-prepare it holds there. `None` where it holds neither: below the head once the slot
    /// is gone (those blocks are executed), and at a stable checkpoint above the head.
    pub(crate) fn time_at(&self, seq: SeqNo) -> Option<u64> {
        if seq == self.last_executed.0 {
            return Some(self.head_time_ms);
        }
        self.slots
            .get(&seq)
            .filter(|s| !s.abandoned)
            .and_then(|s| s.pre_prepare.as_ref())
            .map(|pp| pp.proposal.time_ms)
    }

    /// Whether a correct primary may still be waiting before it proposes (crate docs, "Block
    /// time"): the time this view inherited is more than τ/2 ahead of this replica's clock.
    /// Only an inherited time counts: a correct primary never proposes more than τ/2 ahead of
    /// its own clock, so the times of its own view never make it wait, and counting them would
    /// let a faulty primary with a fast clock renew the wait with every block (red team s31).
    /// The primary waits by its own clock, which may run behind this one: the wait is given
    /// as the slowest clock within [`Config::clock_skew_allowance_ms`] would see it (red team
    /// s32 F3). Bounded: the inherited time was prepared by correct replicas within τ of their
    /// clocks, so the wait ends within about τ/2 plus that allowance of entering the view.
    fn primary_owed_wait(&self) -> bool {
        if self.status != Status::Normal || self.ignores_block_time() {
            return false;
        }
        let margin_ms = match self.owes_too_long_a_wait() {
            true => 0,
            false => self.cfg.block_time_tolerance_ms / 2,
        };
        self.inherited_time_ms.saturating_add(1)
            > (self.clock_ms.saturating_add(margin_ms))
                .saturating_sub(self.cfg.clock_skew_allowance_ms())
    }

    /// The lowest slot holding a waited-on request, if every request waited on sits in a slot
    /// above the head and at or below the fetch target, which f+1 replicas (one of them
    /// correct), a stable checkpoint's proof or 2f+1 commits vouch was executed: only the
    /// state transfer of that sequence number is missing. A faulty primary cannot forge that;
    /// its slots above the target still time out (a backup it keeps behind is not kept
    /// waiting), and so does a request no slot holds (a primary catching up still joins
    /// backups that gave up on it: red team s39 F2). One pass over `pending`: it runs at every
    /// tick while a timer and a fetch run, over up to L x max_batch ids (red team s47 P1).
    fn lowest_waited_vouched_slot(&self) -> Option<SeqNo> {
        let target = self.fetch.as_ref()?.seq;
        // Every request waited on, not only the oldest the timer follows: a primary behind its
        // own committed proposals must still time out on a request it cannot propose (red team
        // s40 F1). Only while a timer and a fetch run, over at most `max_pending` ids.
        // A normal-status timer follows a request; in view-change status it waits on a
        // new-view (nothing pending may be in the log then, and `all` of nothing holds).
        self.timed_request?;
        let head = self.last_executed.0;
        let mut lowest: Option<SeqNo> = None;
        for id in self.pending.keys() {
            let seq = *self
                .in_log
                .get(id)
                .filter(|s| **s > head && **s <= target)?;
            lowest = Some(lowest.map_or(seq, |l| l.min(seq)));
        }
        // `all` of nothing held: no waited slot, and nothing to chain down to.
        Some(lowest.unwrap_or(target))
    }

    /// This replica's pre-prepares hash-chain from the fetch target's vouched (seq, digest)
    /// down to the lowest slot holding a waited-on request (checked only while
    /// `lowest_waited_vouched_slot`, over at most a watermark window of slots).
    fn waited_slots_decided(&self, lowest: SeqNo) -> bool {
        let Some(target) = self.fetch.as_ref() else {
            return false;
        };
        if self.pending.is_empty() {
            return false;
        }
        let mut want = target.digest;
        for seq in (lowest..=target.seq).rev() {
            let Some(pp) = self
                .slots
                .get(&seq)
                .filter(|s| !s.abandoned)
                .and_then(|s| s.pre_prepare.as_ref())
            else {
                return false;
            };
            if pp.digest != want {
                return false;
            }
            want = pp.proposal.prev;
        }
        true
    }

    /// A backup's first check of a block time (crate docs, "Block time"): later than the time
    /// of the proposal before it, which a correct primary always proposes, so an earlier or
    /// equal one is Byzantine. Passes when that time is unknown ([`Replica::withholds_prepare`]
    /// then holds the prepare back).
    pub(crate) fn check_time_increases(&self, proposal: &Proposal) -> Result<(), ProtocolError> {
        if self.ignores_block_time() {
            return Ok(());
        }
        match self.time_at(proposal.seq - 1) {
            Some(previous_ms) if proposal.time_ms <= previous_ms => {
                Err(ProtocolError::BlockTimeNotIncreasing {
                    seq: proposal.seq,
                    time_ms: proposal.time_ms,
                    previous_ms,
                })
            }
            _ => Ok(()),
        }
    }

    /// A backup's second check (crate docs, "Block time"): it prepares a proposal only if its
    /// time is within τ of its own clock (and the time before it is known, so the first check
    /// was made). Otherwise it keeps the pre-prepare but sends no prepare; if 2f other backups
    /// prepare anyway, f+1 correct replicas found the time fine and it goes on to commit.
    pub(crate) fn withholds_prepare(&self, proposal: &Proposal) -> bool {
        if self.ignores_block_time() {
            return false;
        }
        self.time_at(proposal.seq - 1).is_none()
            || proposal.time_ms.abs_diff(self.clock_ms) > self.cfg.block_time_tolerance_ms
    }

    /// A backup's withheld prepares, checked again at each tick: a block time that was too far
    /// from its clock (or followed a time not known yet) may be fine now that the clock moved
    /// on (or the time before arrived); then it prepares, as it would have on receipt.
    fn reconsider_withheld(&mut self, actions: &mut Vec<Action>) {
        if self.status != Status::Normal || self.is_primary() {
            return;
        }
        let first = self.last_executed.0 + 1;
        let ready: Vec<PrePrepare> = self
            .slots
            .range(first..)
            .filter(|(_, slot)| slot.withheld && !slot.abandoned)
            .filter_map(|(_, slot)| slot.pre_prepare.as_ref())
            .filter(|pp| {
                !self.withholds_prepare(&pp.proposal)
                    && self.check_time_increases(&pp.proposal).is_ok()
            })
            .cloned()
            .collect();
        for pp in ready {
            let (seq, digest) = (pp.proposal.seq, pp.digest);
            if let Some(slot) = self.slots.get_mut(&seq) {
                slot.withheld = false;
            }
            // Noted before the prepare leaves: a restart resends it.
            actions.push(Action::Persist(Durable::PrePrepare(pp)));
            actions.push(Action::Broadcast(Message::Prepare(Vote {
                view: self.view,
                seq,
                digest,
            })));
            self.check_prepared(seq, actions);
        }
    }

    /// The planted bug that turns both block-time checks off (the simulator must catch it).
    fn ignores_block_time(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        if self.cfg.planted_bug == Some(crate::config::PlantedBug::IgnoreBlockTime) {
            return true;
        }
        false
    }

    /// The planted bug that gives a view's primary a wait of up to τ (the simulator must catch
    /// it).
    fn owes_too_long_a_wait(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        if self.cfg.planted_bug == Some(crate::config::PlantedBug::OwedWaitTooLong) {
            return true;
        }
        false
    }

    /// The planted bug that inherits the times of logged pre-prepares at a restart (the
    /// simulator must catch it).
    fn inherits_logged_proposals(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        if self.cfg.planted_bug == Some(crate::config::PlantedBug::InheritLoggedProposals) {
            return true;
        }
        false
    }

    /// Marks abandoned every slot above the executed head from the first whose pre-prepare
    /// does not chain to the head (after a state transfer, or a restart on a ledger that
    /// moved on): they can never execute here in this view, and their requests become
    /// proposable again. They are not cleared: a correct replica never sends two different
    /// prepares or commits for one (view, seq) (§4.2), so those sequence numbers stay blocked
    /// until a view change.
    pub(crate) fn abandon_unchained_slots(&mut self) {
        // A ledger behind this replica's own stable checkpoint (a restart after a crash
        // between its record and its block's apply, contract item 4) is fetched up to it: the
        // slots above chain to the checkpoint's certified digest (red team s27 F1).
        let (head, mut prev) = match self.low > self.last_executed.0 {
            true => (self.low, self.low_digest),
            false => self.last_executed,
        };
        let mut broken = false;
        for (seq, slot) in self.slots.range_mut(head + 1..) {
            let Some(pp) = &slot.pre_prepare else {
                continue;
            };
            broken |= slot.abandoned || pp.proposal.prev != prev;
            prev = pp.digest;
            if !broken {
                continue;
            }
            slot.abandoned = true;
            slot.prepared = false;
            for r in &pp.proposal.requests {
                if self.in_log.get(&r.id) == Some(seq) {
                    self.in_log.remove(&r.id);
                }
            }
        }
        if broken {
            self.waiting.clear();
        }
    }

    fn on_pre_prepare(
        &mut self,
        signed: Signed<Message>,
        actions: &mut Vec<Action>,
    ) -> Result<(), ProtocolError> {
        let from = signed.from;
        let Message::PrePrepare(pp) = &signed.message else {
            unreachable!("on_pre_prepare takes pre-prepares")
        };
        if from != self.cfg.primary(pp.view) {
            return Err(ProtocolError::NotPrimary {
                from,
                view: pp.view,
            });
        }
        if pp.view < self.view {
            return Err(ProtocolError::StaleView {
                got: pp.view,
                current: self.view,
            });
        }
        self.check_batch(&pp.proposal.requests)?;
        if pp.view > self.view || self.status == Status::ViewChange {
            return self.buffer_future(signed);
        }
        let Message::PrePrepare(pp) = signed.message else {
            unreachable!()
        };
        let seq = pp.proposal.seq;
        if seq <= self.low || seq > self.high() {
            return Err(ProtocolError::OutsideWatermarks {
                seq,
                low: self.low,
                high: self.high(),
            });
        }
        if pp.proposal.view > pp.view || pp.proposal.proposer >= self.cfg.n {
            return Err(ProtocolError::Malformed("proposal view or proposer"));
        }
        if (self.cfg.digest)(&pp.proposal) != pp.digest {
            return Err(ProtocolError::WrongDigest);
        }
        let held = self
            .slots
            .get(&seq)
            .and_then(|s| s.pre_prepare.as_ref())
            .or_else(|| self.waiting.get(&seq));
        if let Some(held) = held {
            if from == self.cfg.id && held.digest == pp.digest {
                return Ok(()); // our own pre-prepare, looped back
            }
            return Err(if held.digest == pp.digest {
                ProtocolError::Duplicate
            } else {
                ProtocolError::Conflicting
            });
        }
        if seq <= self.last_executed.0
            && let Some(d) = self.executed_digests.get(&seq)
            && *d != pp.digest
        {
            return Err(ProtocolError::Conflicting);
        }
        match self.digest_at(seq - 1) {
            Some(prev) if prev != pp.proposal.prev => Err(ProtocolError::ChainMismatch),
            Some(_) => {
                self.check_time_increases(&pp.proposal)?;
                self.accept_pre_prepare(pp, actions);
                Ok(())
            }
            None => {
                // Chaining: wait until the predecessor is accepted.
                self.waiting.insert(seq, pp);
                Ok(())
            }
        }
    }

    /// Records an accepted pre-prepare, persists it, and sends the prepare (§4.2) unless its
    /// block time is too far from this replica's clock; then accepts successors that were
    /// waiting for it (dropping one whose time is not later: Byzantine).
    pub(crate) fn accept_pre_prepare(&mut self, pp: PrePrepare, actions: &mut Vec<Action>) {
        let mut next = Some(pp);
        while let Some(pp) = next.take() {
            let seq = pp.proposal.seq;
            let digest = pp.digest;
            let withheld = !self.is_primary() && self.withholds_prepare(&pp.proposal);
            if seq > self.last_executed.0 {
                for r in &pp.proposal.requests {
                    self.in_log.insert(r.id, seq);
                    // A backup tracks the batch's requests as pending so that it times out if
                    // they never execute, and re-forwards them if a view change drops them.
                    if !self.pending.contains_key(&r.id)
                        && !self.executed_ids.contains(&r.id)
                        && self.pending.len() < self.cfg.max_pending
                    {
                        self.insert_pending(r.clone());
                    }
                }
            }
            let slot = self.slots.entry(seq).or_default();
            slot.pre_prepare = Some(pp.clone());
            slot.withheld = withheld;
            actions.push(Action::Persist(match withheld {
                true => Durable::Withheld(pp),
                false => Durable::PrePrepare(pp),
            }));
            if withheld {
                self.withheld_prepares += 1;
            } else if !self.is_primary() {
                actions.push(Action::Broadcast(Message::Prepare(Vote {
                    view: self.view,
                    seq,
                    digest,
                })));
            }
            self.arm_timer();
            self.check_prepared(seq, actions);
            if let Some(succ) = self.waiting.remove(&(seq + 1))
                && succ.proposal.prev == digest
                && self.check_time_increases(&succ.proposal).is_ok()
            {
                next = Some(succ);
            }
        }
    }

    // ----- prepare and commit (§4.2) -------------------------------------------------------

    fn on_vote(
        &mut self,
        vote: Signed<Vote>,
        commit: bool,
        actions: &mut Vec<Action>,
    ) -> Result<(), ProtocolError> {
        let v = vote.message;
        if !commit && vote.from == self.cfg.primary(v.view) {
            return Err(ProtocolError::Malformed("the primary does not prepare"));
        }
        if v.view < self.view {
            return Err(ProtocolError::StaleView {
                got: v.view,
                current: self.view,
            });
        }
        if v.view > self.view || self.status == Status::ViewChange {
            let message = if commit {
                Message::Commit(v)
            } else {
                Message::Prepare(v)
            };
            return self.buffer_future(Signed {
                from: vote.from,
                message,
                signature: vote.signature,
            });
        }
        if v.seq <= self.low || v.seq > self.high() {
            return Err(ProtocolError::OutsideWatermarks {
                seq: v.seq,
                low: self.low,
                high: self.high(),
            });
        }
        let slot = self.slots.entry(v.seq).or_default();
        let votes = if commit {
            &mut slot.commits
        } else {
            &mut slot.prepares
        };
        if let Some(old) = votes.get(&vote.from) {
            return Err(if old.message == v {
                ProtocolError::Duplicate
            } else {
                ProtocolError::Conflicting
            });
        }
        votes.insert(vote.from, vote);
        if commit {
            self.try_execute(actions);
        } else {
            self.check_prepared(v.seq, actions);
        }
        Ok(())
    }

    /// prepared(m, v, n, i) (§4.2): the pre-prepare and 2f matching prepares from distinct
    /// backups. The certificate is persisted before any commit that depends on it.
    pub(crate) fn check_prepared(&mut self, seq: SeqNo, actions: &mut Vec<Action>) {
        let needed = self.quorum() - 1;
        let Some(slot) = self.slots.get_mut(&seq) else {
            return;
        };
        if slot.prepared || slot.abandoned {
            return;
        }
        let Some(pp) = &slot.pre_prepare else { return };
        let matching: Vec<Signed<Vote>> = slot
            .prepares
            .values()
            .filter(|p| p.message.digest == pp.digest)
            .take(needed)
            .cloned()
            .collect();
        if matching.len() < needed {
            return;
        }
        slot.prepared = true;
        let cert = PreparedCertificate {
            pre_prepare: pp.clone(),
            prepares: matching,
        };
        self.remember_prepared(cert.clone());
        actions.push(Action::Persist(Durable::Prepared(cert)));
        self.send_commits(actions);
    }

    pub(crate) fn remember_prepared(&mut self, cert: PreparedCertificate) {
        let seq = cert.pre_prepare.proposal.seq;
        match self.prepared_certs.get(&seq) {
            Some(old) if old.pre_prepare.view > cert.pre_prepare.view => {}
            _ => {
                self.prepared_certs.insert(seq, cert);
            }
        }
    }

    /// Sends the commit of every prepared slot whose predecessors (down to the last executed
    /// sequence number) are all prepared too: a replica commits `s` only once every sequence
    /// number from its low watermark to `s` is prepared or executed (ARCHITECTURE.md), so a new
    /// primary's O set, truncated at the first gap, never drops a committed proposal.
    pub(crate) fn send_commits(&mut self, actions: &mut Vec<Action>) {
        let view = self.view;
        let last = self.last_executed.0;
        let mut to_send = Vec::new();
        if last > self.low {
            for (seq, slot) in self.slots.range(self.low + 1..=last) {
                if slot.prepared && !slot.commit_sent {
                    to_send.push(*seq);
                }
            }
        }
        let mut seq = last + 1;
        while let Some(slot) = self.slots.get(&seq) {
            if !slot.prepared {
                break;
            }
            if !slot.commit_sent {
                to_send.push(seq);
            }
            seq += 1;
        }
        for seq in to_send {
            let Some(slot) = self.slots.get_mut(&seq) else {
                continue;
            };
            let Some(pp) = &slot.pre_prepare else {
                continue;
            };
            slot.commit_sent = true;
            actions.push(Action::Broadcast(Message::Commit(Vote {
                view,
                seq,
                digest: pp.digest,
            })));
        }
        self.try_execute(actions);
    }

    fn commit_quorum(&self) -> usize {
        #[cfg(feature = "planted-bugs")]
        if self.cfg.planted_bug == Some(crate::config::PlantedBug::CommitWithTwoF) {
            return self.quorum() - 1;
        }
        self.quorum()
    }

    /// committed-local (§4.2): prepared, and 2f+1 matching commits of this view. Executes
    /// strictly in sequence order.
    pub(crate) fn try_execute(&mut self, actions: &mut Vec<Action>) {
        let needed = self.commit_quorum();
        let mut executed = false;
        loop {
            let seq = self.last_executed.0 + 1;
            let Some(slot) = self.slots.get(&seq) else {
                break;
            };
            let Some(pp) = &slot.pre_prepare else { break };
            if !slot.prepared || !slot.commit_sent {
                break;
            }
            let signatures: Vec<(ReplicaId, crate::Signature)> = slot
                .commits
                .values()
                .filter(|c| c.message.digest == pp.digest)
                .take(needed)
                .map(|c| (c.from, c.signature))
                .collect();
            if signatures.len() < needed {
                break;
            }
            if pp.proposal.prev != self.last_executed.1 {
                let digest = pp.digest;
                let peers = signatures
                    .iter()
                    .map(|(id, _)| *id)
                    .filter(|id| *id != self.cfg.id)
                    .collect();
                self.committed_off_chain(seq, digest, peers, actions);
                break;
            }
            let committed = Committed {
                proposal: pp.proposal.clone(),
                digest: pp.digest,
                commit_view: self.view,
                signatures,
            };
            self.execute(committed, actions);
            executed = true;
        }
        if executed && self.status == Status::Normal && self.is_primary() {
            self.try_propose(false, actions);
        }
    }

    /// 2f+1 replicas committed a proposal at `seq` that does not follow this replica's
    /// executed head: raise the alarm, never execute it here (the slot and those above are
    /// abandoned), and fetch what the committers executed.
    fn committed_off_chain(
        &mut self,
        seq: SeqNo,
        digest: Digest,
        committers: Vec<ReplicaId>,
        actions: &mut Vec<Action>,
    ) {
        let view = self.view;
        self.raise(Alarm::CommittedOffChain { seq, view }, actions);
        self.abandon_unchained_slots();
        if self.fetch.as_ref().is_none_or(|f| f.seq < seq) {
            self.fetch = Some(FetchTarget {
                seq,
                digest,
                proof: None,
                peers: committers,
                since: self.now,
                requested_at: None,
            });
        }
    }

    /// Reports an [`Alarm`] to the caller and counts it.
    pub(crate) fn raise(&mut self, alarm: Alarm, actions: &mut Vec<Action>) {
        self.alarms += 1;
        actions.push(Action::Alarm(alarm));
    }

    fn execute(&mut self, committed: Committed, actions: &mut Vec<Action>) {
        let seq = committed.proposal.seq;
        let digest = committed.digest;
        let ids: Vec<Digest> = committed.proposal.requests.iter().map(|r| r.id).collect();
        self.head_time_ms = committed.proposal.time_ms;
        actions.push(Action::Execute(committed));
        self.last_executed = (seq, digest);
        self.executed_digests.insert(seq, digest);
        for id in ids {
            self.remember_executed(id);
        }
        self.backoff = 0;
        self.progress();
        if self.fetch.as_ref().is_some_and(|f| f.seq <= seq) {
            self.fetch = None;
        }
        if seq.is_multiple_of(self.cfg.checkpoint_interval) {
            // §4.3: a checkpoint of the state after executing `seq`; its digest is the block
            // hash at `seq` (the chain is the state).
            actions.push(Action::Broadcast(Message::Checkpoint(Checkpoint {
                seq,
                digest,
            })));
        }
        self.check_stable_at(seq, actions);
    }

    // ----- buffering ---------------------------------------------------------------------

    /// Keeps a message of a view not entered yet, bounded per sender (oldest dropped).
    pub(crate) fn buffer_future(&mut self, m: Signed<Message>) -> Result<(), ProtocolError> {
        let cap = self.cfg.future_buffer_per_sender;
        let queue = self.future.entry(m.from).or_default();
        if queue.iter().any(|old| old.message == m.message) {
            return Err(ProtocolError::Duplicate);
        }
        while queue.len() >= cap {
            queue.pop_front();
        }
        queue.push_back(m);
        Ok(())
    }

    /// Re-feeds buffered messages of the view just entered; drops those of older views.
    pub(crate) fn replay_future(&mut self, actions: &mut Vec<Action>) {
        let view = self.view;
        let mut ready = Vec::new();
        for queue in self.future.values_mut() {
            let mut keep = VecDeque::new();
            for m in queue.drain(..) {
                match m.message.view() {
                    Some(v) if v == view => ready.push(m),
                    Some(v) if v > view => keep.push_back(m),
                    _ => {}
                }
            }
            *queue = keep;
        }
        self.future.retain(|_, q| !q.is_empty());
        for m in ready {
            // Errors here are the same the message would have caused on arrival.
            let _ = self.on_message(m, actions);
        }
    }
}
