//! The thread that runs one validator: it turns wall time into ticks, authenticates what
//! arrives, steps the replica, and executes the replica's actions in order: persist (fsync)
//! before sending what depends on it, apply committed blocks, answer the clients that wait.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use ledger::crypto::SigningKey;
use ledger::{Applied, Block, Checked, Genesis, Hash, Queries, SignedTx, Store, ToAppend, TxId};
use pbft::{Action, Durable, Input, Message, ReplicaId, Request, Signed};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::acknowledged::{Acknowledged, PendingRow};
use crate::clock::Clock;
use crate::config::Timing;
use crate::error::NodeError;
use crate::handle::{Verdict, verdict_on_chain};
use crate::keys::KeyInbox;
use crate::local_store::LocalStore;
use crate::metrics::Metrics;
use crate::state_transfer::{Answer, FetchRequest, Served, StateTransfer};
use crate::status::PeerClaim;
use crate::status::Shared;
use crate::telemetry::{RejectReason, StoreWrite};
use crate::transport::{InboundCredit, Transport};
use crate::verify::{Authenticator, Contents};
use crate::wire::{FETCH_REPLY_BYTES, Frame, Wire};

/// What a node's thread is asked to do.
pub enum Event {
    /// A frame from validator `from`, as the transport authenticated it. `credit` holds the
    /// frame's share of its sender's inbound budget until the frame is handled; `received` is
    /// when it arrived (a pre-prepare's block time is judged by the clock of then).
    Network {
        from: ReplicaId,
        frame: Frame,
        credit: InboundCredit,
        received: Instant,
    },
    /// A client's transaction: stored, then answered.
    Submit(Box<Submission>),
    /// Answer the verdict on transaction `id` once its block is applied here (at once if it
    /// is on chain); with `cut`, ask the primary for a block now.
    Watch {
        id: TxId,
        cut: bool,
        reply: oneshot::Sender<Result<Verdict, NodeError>>,
    },
    Cut {
        reply: oneshot::Sender<Result<CutOutcome, NodeError>>,
    },
    Shutdown,
}

/// A client's transaction that passed the edge check and admission at the handle.
pub struct Submission {
    /// The request that orders it.
    pub request: Request,
    /// The transaction, decoded from the request's bytes.
    pub transaction: SignedTx,
    pub reply: oneshot::Sender<Result<TxId, NodeError>>,
}

/// What `/api/validate` reports: the block that committed what was pending when it was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CutOutcome {
    pub height: u64,
    pub hash: Hash,
    /// Validators whose commit signatures are in the block's certificate.
    pub votes: usize,
    pub validators: usize,
    /// Transactions in the blocks that committed the pending transactions.
    pub tx_count: usize,
}

/// Events handled per loop turn at most, so that ticks and persistence keep their pace.
const MAX_EVENTS_PER_TURN: usize = 4096;
/// Forwarded requests that admission parked (their rule may pass once this validator catches
/// up), at most; a sender's share is this over the validator count, or [`PARKED_BATCHES`]
/// batches when that is more.
const PARKED_MAX: usize = 4096;
/// A sender's share of parked requests, in batches, at least: a backup that applied blocks
/// before this primary forwards up to a batch of records per block of its lead (the grants
/// each block applied), and a record refused here waits for the backup's retransmission while
/// its age turns every new submission away there (issue 11: one-second stalls of the whole
/// chain at 10,000,000 transactions, a primary about three blocks behind).
const PARKED_BATCHES: usize = 4;
/// Bytes of parked requests at most; a sender's share is this over the validator count.
const PARKED_BYTES: usize = 64 << 20;
/// Waiting transactions below which a validator never refuses as busy: a few slow blocks (a
/// debug build, a loaded machine) with little pending are not a queue worth refusing for.
const BUSY_FLOOR: usize = 64;
/// How often whether new submissions are turned away (`Runtime::judge_turning_away`) is
/// judged in a turn that accepts none: a judgement reads every pending transaction, and a
/// busy validator is busy for far longer than this.
const TURNING_AWAY_EVERY: Duration = Duration::from_millis(5);
/// Whether `Runtime::withdraw_refused` judges a request again, and forwards it again, when
/// its wait reaches `eighths` eighths of a timer: at half a timer, then at each further
/// quarter. Its passes come every eighth, by the replica's ticks, after a turn's ticks (10 at
/// most), so that no two marks fall in one pass and each is acted on at most an eighth and a
/// turn late: two chances before the timer runs out (red team s80 F1), the second by seven
/// eighths and a turn (s81 F1: passes a quarter apart by the wall clock acted on both
/// marks in one pass, or on the second at the timer's last tick; s82 F1: not so with turns
/// longer than half an eighth, on a short timer).
/// Past the timer every quarter still, for a request whose timer starts late: it became the
/// oldest when the one before it executed, and has two chances in its own timer too.
fn judged_at_eighth(eighths: u64) -> bool {
    eighths >= 4 && eighths.is_multiple_of(2)
}

/// Whether a pass judges a request that has waited `waited` ticks, `since_last` of them since
/// the last pass, with marks every `eighth_timer` ticks: it crossed a mark meanwhile.
fn judged_now(waited: u64, since_last: u64, eighth_timer: u64) -> bool {
    let before = waited
        .checked_sub(since_last)
        .map_or(0, |before| before / eighth_timer + 1);
    (before..=waited / eighth_timer).any(judged_at_eighth)
}

/// Ticks a turn steps at most; those missed beyond are skipped (a long pause is not replayed).
const MAX_TICKS_PER_TURN: u32 = 10;

/// How many resend intervals an own transaction that lost a race stays acknowledged at most
/// (`Runtime::withdraw_refused`); long enough for a block that still orders it to come.
const WITHDRAWN_KEPT_RESENDS: u32 = 10;
/// Blocks asked for in one state-transfer request (the answer also stops at
/// [`FETCH_REPLY_BYTES`]).
const FETCH_BLOCKS: u32 = 256;
/// How long a state-transfer request may go unanswered before another peer is asked: twice the
/// view-change timeout (an answer of `FETCH_REPLY_BYTES` has time to arrive), within these.
const FETCH_TIMEOUT_MIN: Duration = Duration::from_secs(1);
const FETCH_TIMEOUT_MAX: Duration = Duration::from_secs(10);
/// How often a node tells its peers its head.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// A peer's claimed head counts toward `peers_head` for this long after it arrived (five
/// status intervals): a validator cut off from its peers stops taking itself for caught up
/// (docs/SECURITY.md, issue 10, §16.25).
const CLAIM_FRESH: Duration = Duration::from_secs(5);
/// How long a cut waits for its block before giving up.
const CUT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a peer's messages are checked one by one after one of its signatures failed in a
/// batch: a failed batch is checked again signature by signature, so a peer that signs badly
/// on purpose would otherwise double the cost of everyone's messages.
const UNBATCHED_AFTER_FAILURE: Duration = Duration::from_secs(60);
/// How often the budgets of senders with deferred messages (`Runtime::retry_deferred`) are
/// looked at.
const RETRY_DEFERRED_AFTER: Duration = Duration::from_millis(250);

struct CutWaiter {
    waiting_for: BTreeSet<Hash>,
    /// The last block that committed some of `waiting_for`, with the transactions of every
    /// such block counted.
    committed: Option<CutOutcome>,
    deadline: Instant,
    reply: oneshot::Sender<Result<CutOutcome, NodeError>>,
}

pub(crate) struct Runtime {
    pub id: ReplicaId,
    pub n: usize,
    pub key: SigningKey,
    pub genesis: Arc<Genesis>,
    pub auth: Authenticator,
    pub replica: pbft::Replica,
    pub chain: Store,
    pub local: LocalStore,
    /// The acknowledged transactions not yet seen committed.
    pub acknowledged: Acknowledged,
    pub transport: Arc<dyn Transport>,
    /// The key service, handed every applied block.
    pub keys: KeyInbox,
    pub inbox: Receiver<Event>,
    pub tick: Duration,
    /// Read at every tick (the replica's clock) and for accepted transactions' timestamps.
    pub clock: Clock,
    pub shared: Arc<Shared>,
    pub metrics: Metrics,
    cut_waiters: Vec<CutWaiter>,
    /// Who waits for the verdict on which transaction ([`Event::Watch`]).
    verdict_waiters: HashMap<TxId, Vec<oneshot::Sender<Result<Verdict, NodeError>>>>,
    /// Inputs produced while executing actions (our own broadcasts looped back).
    loopback: VecDeque<Input>,
    /// Whom state transfer asks for blocks, and until when it waits.
    transfer: StateTransfer,
    /// What each peer may still be served of blocks it asks for.
    served: Served,
    last_status_sent: Instant,
    /// How long an acknowledged transaction may wait for its block before it is broadcast to
    /// every validator.
    resend_after: Duration,
    /// New submissions are refused as busy while at least [`BUSY_FLOOR`] acknowledged
    /// transactions wait for their block and the oldest has waited `busy_after`: the validators
    /// are behind, and a queue that grows further would outlast the backups' view-change timers
    /// (which would replace a primary that is merely slow, and slow everything further).
    busy_after: Duration,
    /// When `Runtime::judge_turning_away` last ran.
    turning_away_judged: Instant,
    max_batch: usize,
    last_resend_check: Instant,
    /// The replica's tick at the last judgement of `withdraw_refused`: a request is judged
    /// again when its wait crossed a mark since ([`judged_at_eighth`]).
    last_judged_tick: u64,
    /// The replica's tick at which `withdraw_refused` runs next.
    next_judge_tick: u64,
    last_commit_at: Instant,
    /// Makes this validator Byzantine (tests of issue 8 only; see `byzantine.rs`).
    #[cfg(feature = "byzantine")]
    pub byzantine: Option<crate::byzantine::Behaviours>,
    /// The replica was recovering from lost state at the end of the last turn.
    recovering: bool,
    /// The view, and whether a view change was under way, at the end of the last turn.
    view_logged: (u64, bool),
    /// The highest checkpoint the replica was told is stable by others (`Action::FetchState`).
    reported_checkpoint: u64,
    /// The head each peer last claimed in its status, and when it arrived (a hint: f+1 of
    /// them bound what is committed, as one of any f+1 is correct).
    peer_heads: Vec<Option<(u64, Instant)>>,
    /// The view of each peer's last authentic consensus message (for the dashboard only).
    peer_views: Vec<Option<u64>>,
    /// Until when each peer's messages are left out of the turn's batch check.
    unbatched_until: Vec<Option<Instant>>,
    /// Messages whose own signature verified and whose carried signatures were over their
    /// sender's budget (`Authenticator::limit_carried`): the latest of each kind per sender,
    /// read again once that budget is full. A newer one of the same kind replaces it, so a
    /// sender that sends faster than its budget costs the work of its budget, and its last
    /// word is still heard.
    deferred: HashMap<(ReplicaId, std::mem::Discriminant<Message>), Signed<Message>>,
    /// When the deferred messages were last tried ([`RETRY_DEFERRED_AFTER`]).
    deferred_tried: Instant,
    /// Forwarded requests refused by admission for something not on this chain yet
    /// (`ledger::rules::reason::may_pass_later`), each a forward of one request as its sender
    /// signed it, with when it was parked: judged again after each new block, dropped after
    /// `resend_after` (a backup's timer has run out by then). A primary a block behind the
    /// validator that admitted a record would otherwise drop it, and that validator's timer
    /// would replace the primary for it.
    parked: VecDeque<(Signed<Message>, Instant)>,
    /// Per sender, its requests parked and their bytes.
    parked_per_sender: Vec<(usize, usize)>,
    /// The ids parked: a forward's resends are parked once.
    parked_ids: HashSet<[u8; 32]>,
    /// The height the parked requests were last judged at.
    parked_judged_at: u64,
}

impl Runtime {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: ReplicaId,
        n: usize,
        key: SigningKey,
        genesis: Arc<Genesis>,
        auth: Authenticator,
        replica: pbft::Replica,
        chain: Store,
        local: LocalStore,
        acknowledged: Acknowledged,
        transport: Arc<dyn Transport>,
        keys: KeyInbox,
        inbox: Receiver<Event>,
        timing: &Timing,
        clock: Clock,
        shared: Arc<Shared>,
        metrics: Metrics,
    ) -> Self {
        let replica_recovering = replica.is_recovering();
        let view_logged = (replica.view(), replica.in_view_change());
        let mut auth = auth;
        auth.limit_carried(crate::verify::carried_burst(
            n,
            replica.config().watermark_window,
        ));
        Self {
            id,
            n,
            key,
            genesis,
            auth,
            replica,
            chain,
            local,
            acknowledged,
            transport,
            keys,
            inbox,
            tick: timing.tick(),
            clock,
            shared,
            metrics,
            cut_waiters: Vec::new(),
            verdict_waiters: HashMap::new(),
            loopback: VecDeque::new(),
            transfer: StateTransfer::new(
                id,
                n,
                (timing.view_change_timeout * 2).clamp(FETCH_TIMEOUT_MIN, FETCH_TIMEOUT_MAX),
            )
            .waiting_out(timing.max_in_flight, 2 * STATUS_EVERY),
            served: Served::new(n, Instant::now()),
            // The first turn tells the peers this validator's head: they learn at once that
            // it is back (and its key service, that f+1 of them are not ahead of it).
            last_status_sent: Instant::now()
                .checked_sub(STATUS_EVERY)
                .unwrap_or_else(Instant::now),
            resend_after: timing.batch_window + timing.view_change_timeout,
            busy_after: timing.batch_window + timing.view_change_timeout / 4,
            turning_away_judged: Instant::now(),
            max_batch: timing.max_batch,
            last_resend_check: Instant::now(),
            last_judged_tick: 0,
            next_judge_tick: 0,
            last_commit_at: Instant::now(),
            #[cfg(feature = "byzantine")]
            byzantine: None,
            recovering: replica_recovering,
            view_logged,
            reported_checkpoint: 0,
            peer_heads: vec![None; n],
            peer_views: vec![None; n],
            unbatched_until: vec![None; n],
            deferred: HashMap::new(),
            deferred_tried: Instant::now(),
            parked: VecDeque::new(),
            parked_per_sender: vec![(0, 0); n],
            parked_ids: HashSet::new(),
            parked_judged_at: 0,
        }
    }

    /// Hands the transactions acknowledged before a restart back to the replica, and the
    /// requests of the slots it restored from its log ([`pbft::Replica::restored_requests`]):
    /// every restarted replica waits on a slot its chain does not hold, as it did when it
    /// accepted the slot's pre-prepare, so that a slot every backup withholds still times out
    /// (red team s30 F2, s39 F1). What the chain holds is not handed on: a faulty primary's
    /// replay of an executed request into a slot is never waited on (s33 F2).
    pub fn resume_pending(&mut self, stored: Vec<PendingRow>) -> Result<(), NodeError> {
        let mut resumed = Vec::with_capacity(stored.len());
        for row in stored {
            resumed.push((row.id, SignedTx::from_bytes(&row.body)?));
        }
        let mut restored_rows = Vec::new();
        for request in self.replica.restored_requests() {
            // Checked when its pre-prepare was accepted; one that no longer decodes as the
            // request it is (a store written by another build) is left to the slot's fate.
            match SignedTx::from_bytes(&request.payload) {
                Ok(tx) if tx.to_request(self.auth.genesis_hash()) == request => {
                    restored_rows.push(request.clone());
                    resumed.push((request.id, tx))
                }
                _ => warn!(
                    id = %ledger::short_hex(&request.id),
                    "a restored slot's request does not decode: not waited on"
                ),
            }
        }
        let now = self.clock.now_ms();
        // Written to the journal before `shared` pending holds them: `accept` acknowledges a
        // submission of a pending id at once, promising it survives a restart (red team s42
        // F2: a client's retry of a transaction a faulty primary put in a slot was
        // acknowledged with no durable copy, and lost with the slot at the next view change).
        // Those already on chain are removed again below with the stored ones.
        self.acknowledged.append(
            restored_rows
                .iter()
                .map(|request| (&request.id, now, &request.payload[..])),
        )?;
        let mut handed = HashSet::new();
        let mut committed = Vec::new();
        let mut lost = Vec::new();
        let mut actions = Vec::new();
        for (id, transaction) in resumed {
            if !handed.insert(id) {
                continue;
            }
            if self.chain.contains_transaction(&id)? {
                committed.push(id);
                continue;
            }
            // Checked and admitted when it was accepted, so the rules judge it in its block.
            // One expired while the validator was down can never commit: it is withdrawn at
            // once, not handed to the replica, where it would count as waiting (and make this
            // validator refuse submissions as busy) until withdrawn anew. Any other refusal
            // may be this validator's stale chain (a count rule a later block relieves): those
            // are handed on, and `withdraw_refused` judges them once it had time to catch up.
            let request = transaction.to_request(self.auth.genesis_hash());
            let lost_race =
                crate::admission::admit(&self.chain.state(), &self.genesis, &transaction, now)?
                    .is_err_and(|reject| reject.0 == ledger::rules::reason::EXPIRED);
            self.auth.remember(request.id, transaction.signature);
            self.auth.keep_decoded(&request, transaction);
            self.shared.add_pending([request.clone()]);
            if lost_race {
                lost.push(request.id);
            } else {
                self.step(Input::Request(request), &mut actions);
            }
        }
        self.shared.mark_withdrawn(&lost);
        self.acknowledged.remove(committed.iter());
        if self.shared.pending_len() > 0 {
            info!(
                count = self.shared.pending_len(),
                "resubmitted acknowledged transactions after restart"
            );
        }
        self.execute(actions)
    }

    /// Runs until shut down or the inbox closes.
    pub fn run(mut self) {
        let mut next_tick = Instant::now() + self.tick;
        loop {
            let mut events = Vec::new();
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.inbox.recv_timeout(wait) {
                Ok(event) => events.push(event),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while events.len() < MAX_EVENTS_PER_TURN {
                match self.inbox.try_recv() {
                    Ok(event) => events.push(event),
                    Err(_) => break,
                }
            }
            let shutdown = events.iter().any(|event| matches!(event, Event::Shutdown));
            let mut ticks = 0;
            let now = Instant::now();
            while next_tick <= now && ticks < MAX_TICKS_PER_TURN {
                ticks += 1;
                next_tick += self.tick;
            }
            if next_tick <= now {
                // Far behind (a long pause): skip the missed ticks rather than replay them all.
                next_tick = now + self.tick;
            }
            if let Err(error) = self.turn(events, ticks) {
                // Storage failing under us: stop rather than risk contradicting ourselves.
                warn!(%error, "validator stopping after a storage error");
                self.shared.set_failed(error.to_string());
                break;
            }
            if shutdown {
                info!("validator stopped");
                break;
            }
        }
        for waiter in self.cut_waiters.drain(..) {
            let _ = waiter.reply.send(Err(NodeError::Stopped));
        }
        // Nothing judges the flag once this runtime is gone: a handle must find it stopped
        // (`NodeError::Stopped`), not busy for ever.
        self.shared.set_turning_away(false);
    }

    fn turn(&mut self, events: Vec<Event>, ticks: u32) -> Result<(), NodeError> {
        let started = cpu_time::ThreadTime::now();
        let mut actions = Vec::new();
        let mut submits = Vec::new();
        let mut cut = false;
        let outer = self.verify_frames(&events);
        for (event, outer) in events.into_iter().zip(outer) {
            match event {
                Event::Network {
                    from,
                    frame,
                    received,
                    ..
                } => self.on_frame(from, frame, outer, received, &mut actions)?,
                Event::Submit(submission) => submits.push(*submission),
                Event::Watch {
                    id,
                    cut: now,
                    reply,
                } => cut |= self.on_watch(id, now, reply)?,
                Event::Cut { reply } => self.on_cut(reply, &mut actions),
                Event::Shutdown => {}
            }
        }
        if !self.deferred.is_empty() && self.deferred_tried.elapsed() >= RETRY_DEFERRED_AFTER {
            self.retry_deferred(&mut actions)?;
        }
        if !submits.is_empty() {
            self.accept(submits, &mut actions)?;
        }
        if cut {
            // After what this turn accepted is handed to the replica (and forwarded).
            self.execute(std::mem::take(&mut actions))?;
            self.propose_now(&mut actions);
        }
        for _ in 0..ticks {
            let now_ms = self.replica_now_ms();
            let before = actions.len();
            self.step(Input::Tick { now_ms }, &mut actions);
            self.send_new_view_first(before, &mut actions)?;
        }
        self.execute(std::mem::take(&mut actions))?;
        let (head, _) = self.chain.head();
        if head != self.parked_judged_at {
            self.parked_judged_at = head;
            self.admit_parked(&mut actions)?;
            self.execute(std::mem::take(&mut actions))?;
        }
        let retry = self.transfer.poll(head, Instant::now());
        self.fetch(retry);
        // Judged without submissions too: the handles refuse every one while it lasts.
        if self.turning_away_judged.elapsed() >= TURNING_AWAY_EVERY {
            self.judge_turning_away();
        }
        if self.replica.now() >= self.next_judge_tick {
            self.next_judge_tick = self.replica.now() + self.eighth_timer_ticks();
            self.withdraw_refused(&mut actions)?;
            self.execute(std::mem::take(&mut actions))?;
        }
        if self.last_resend_check.elapsed() >= self.resend_after / 4 {
            self.last_resend_check = Instant::now();
            self.resend_stalled(&mut actions);
            // Parked forwards run out even while no block comes.
            self.admit_parked(&mut actions)?;
            self.execute(std::mem::take(&mut actions))?;
        }
        if self.last_status_sent.elapsed() >= STATUS_EVERY {
            self.last_status_sent = Instant::now();
            let (height, hash) = self.chain.head();
            self.broadcast_frame(Wire::Status { height, hash });
            self.expire_cut_waiters();
            self.verdict_waiters.retain(|_, waiters| {
                waiters.retain(|reply| !reply.is_closed());
                !waiters.is_empty()
            });
        }
        self.metrics.add_cpu(started.elapsed());
        self.note_recovery_end();
        self.note_view_change();
        self.publish_status();
        self.metrics
            .sample(self.chain.head().0, self.replica.view());
        Ok(())
    }

    /// One line when a view change starts and one when a view is installed (§4.4), for the
    /// operators' logs (`--log-format json`).
    fn note_view_change(&mut self) {
        let now = (self.replica.view(), self.replica.in_view_change());
        if now == self.view_logged {
            return;
        }
        let (view, changing) = now;
        if changing {
            self.shared.telemetry().view_change_started();
            info!(target: "medchain::view", validator = self.id, view, "view change started");
        } else {
            info!(
                target: "medchain::view",
                validator = self.id,
                view,
                primary = self.replica.primary(),
                "view installed"
            );
        }
        self.view_logged = now;
    }

    /// Whether new submissions are turned away as busy: at least [`BUSY_FLOOR`] acknowledged
    /// transactions wait for their block and the oldest has waited `busy_after`. Published
    /// for the handles, which then refuse a submission before they check it (a busy validator
    /// spends nothing on what it would refuse here).
    fn judge_turning_away(&mut self) -> bool {
        self.turning_away_judged = Instant::now();
        let behind = match self.shared.waiting() {
            (count, Some(oldest)) => count >= BUSY_FLOOR && oldest >= self.busy_after,
            (_, None) => false,
        };
        self.shared.set_turning_away(behind);
        behind
    }

    /// Persist, then acknowledge: writes the submitted transactions (checked and admitted at
    /// the handle) in one SQLite transaction (one fsync), then answers and hands them to the
    /// replica. One already pending here is answered at once: it is durable already. New ones
    /// are refused as busy while this validator is behind (`busy_after`, [`BUSY_FLOOR`]) or its
    /// mempool is full.
    fn accept(
        &mut self,
        submits: Vec<Submission>,
        actions: &mut Vec<Action>,
    ) -> Result<(), NodeError> {
        let accepted_ms = self.clock.now_ms();
        let mut accepted: Vec<Request> = Vec::with_capacity(submits.len());
        let mut replies = Vec::with_capacity(submits.len());
        // Submitted twice in this batch: answered once the first copy is durable.
        let mut again = Vec::new();
        let mut ids = HashSet::with_capacity(submits.len());
        let behind = self.judge_turning_away();
        for Submission {
            request,
            transaction,
            reply,
        } in submits
        {
            if self.shared.is_pending(&request.id) {
                let _ = reply.send(Ok(request.id));
                continue;
            }
            if !ids.insert(request.id) {
                again.push((request.id, reply));
                continue;
            }
            if behind || self.replica.pending_len() + accepted.len() >= self.shared.max_pending {
                ids.remove(&request.id);
                let _ = reply.send(Err(NodeError::Busy));
                continue;
            }
            self.auth.remember(request.id, transaction.signature);
            self.auth.keep_decoded(&request, transaction);
            accepted.push(request);
            replies.push(reply);
        }
        let started = Instant::now();
        self.acknowledged.append(
            accepted
                .iter()
                .map(|request| (&request.id, accepted_ms, &request.payload[..])),
        )?;
        if !accepted.is_empty() {
            let bytes = accepted.iter().map(|r| r.payload.len() as u64).sum();
            self.shared
                .telemetry()
                .stored(StoreWrite::Acknowledged, started.elapsed(), bytes);
        }
        self.shared.add_pending(accepted.iter().cloned());
        for (id, reply) in again {
            let answer = if ids.contains(&id) {
                Ok(id)
            } else {
                Err(NodeError::Busy)
            };
            let _ = reply.send(answer);
        }
        for (request, reply) in accepted.into_iter().zip(replies) {
            let _ = reply.send(Ok(request.id));
            self.step(Input::Request(request), actions);
        }
        Ok(())
    }

    /// Mempool admission of a peer's forward ([`crate::admission`]): the requests whose
    /// transactions the rules reject at `T = now` on the committed chain, or that are on chain
    /// already, are dropped (and counted) before the replica sees them; those rejected for
    /// something not on this chain yet are parked (see `parked`). The edge checked every
    /// request of the message before, so each is decoded here already.
    fn admit_forwarded(&mut self, forward: &mut Signed<Message>) -> Result<(), NodeError> {
        let Message::Forward(requests) = &mut forward.message else {
            return Ok(());
        };
        let now = self.clock.now_ms();
        let mut refused = 0;
        let mut kept = Vec::with_capacity(requests.len());
        let mut parked = Vec::new();
        // One read transaction for the whole forward (`Queries::snapshot`).
        self.chain.snapshot(|chain| {
            let state = chain.state();
            for request in requests.drain(..) {
                if self.replica.knows_request(&request.id) {
                    // A resend of what the replica holds: nothing to judge again.
                    continue;
                }
                match self.admit_request(&state, &request, now)? {
                    Ok(()) => kept.push(request),
                    Err(reject) if ledger::rules::reason::may_pass_later(reject.0) => {
                        parked.push(request)
                    }
                    Err(reject) => {
                        refused += 1;
                        debug!(
                            id = %ledger::short_hex(&request.id),
                            %reject,
                            "refused a forwarded transaction"
                        );
                    }
                }
            }
            Ok(())
        })?;
        *requests = kept;
        let from = forward.from;
        for request in parked {
            if !self.park(from, request, forward.signature) {
                refused += 1;
            }
        }
        self.shared.telemetry().refused_forwards(refused);
        Ok(())
    }

    /// Admission's verdict ([`crate::admission`]) on a peer's `request`, which the edge checked
    /// and decoded, on `state` at `now_ms`: one that does not decode is refused.
    fn admit_request(
        &self,
        state: &dyn ledger::StateView,
        request: &Request,
        now_ms: u64,
    ) -> Result<Result<(), ledger::rules::Reject>, ledger::Error> {
        match self.decode(request) {
            Some(tx) => crate::admission::admit(state, &self.genesis, &tx, now_ms),
            None => Ok(Err(ledger::rules::Reject("does not decode"))),
        }
    }

    /// Parks `request` from `from` unless its sender's share ([`PARKED_MAX`],
    /// [`PARKED_BATCHES`], [`PARKED_BYTES`]) is full (then it is refused); one parked already
    /// is kept once.
    fn park(&mut self, from: ReplicaId, request: Request, signature: pbft::Signature) -> bool {
        if self.parked_ids.contains(&request.id) {
            return true;
        }
        let n = self.n.max(1);
        let share = (PARKED_MAX / n).max(PARKED_BATCHES * self.max_batch);
        let Some((count, bytes)) = self.parked_per_sender.get_mut(from as usize) else {
            return false;
        };
        if *count >= share || *bytes + request.payload.len() > PARKED_BYTES / n {
            return false;
        }
        *count += 1;
        *bytes += request.payload.len();
        self.parked_ids.insert(request.id);
        let forward = Signed {
            from,
            message: Message::Forward(vec![request]),
            signature,
        };
        self.parked.push_back((forward, Instant::now()));
        true
    }

    /// Judges the parked requests again on the chain as it is now: those admitted go to the
    /// replica as their sender forwarded them, those still waiting for something stay until
    /// `resend_after`, the rest are refused. At most a batch of each sender's is judged a pass
    /// (no more pass in a block): a sender's share is several batches, and parked requests that
    /// never pass would otherwise cost that many rule checks per block. Those a pass skipped
    /// come first at the next, before those it judged and kept: each of a sender's parked
    /// requests is judged within a few passes, however many of its own (or, for an id another
    /// sender parked first, of that sender's) never pass (red team s73).
    fn admit_parked(&mut self, actions: &mut Vec<Action>) -> Result<(), NodeError> {
        let now = self.clock.now_ms();
        let mut refused = 0;
        let mut judged = vec![0; self.n];
        let mut kept = VecDeque::new();
        for (forward, parked_at) in std::mem::take(&mut self.parked) {
            let Message::Forward(requests) = &forward.message else {
                continue;
            };
            let Some(request) = requests.first() else {
                continue;
            };
            let waited_out = parked_at.elapsed() >= self.resend_after;
            let verdict = if self.replica.knows_request(&request.id) {
                Parked::Held
            } else if !within_batch(&mut judged, forward.from, self.max_batch) {
                if !waited_out {
                    self.parked.push_back((forward, parked_at));
                    continue;
                }
                Parked::Refused
            } else {
                match self.admit_request(&self.chain.state(), request, now)? {
                    Ok(()) => Parked::Admitted,
                    Err(reject)
                        if ledger::rules::reason::may_pass_later(reject.0) && !waited_out =>
                    {
                        kept.push_back((forward, parked_at));
                        continue;
                    }
                    Err(_) => Parked::Refused,
                }
            };
            match verdict {
                Parked::Held => {}
                Parked::Admitted => self.step(Input::Message(forward.clone()), actions),
                Parked::Refused => refused += 1,
            }
            self.parked_ids.remove(&request.id);
            if let Some((count, bytes)) = self.parked_per_sender.get_mut(forward.from as usize) {
                *count = count.saturating_sub(1);
                *bytes = bytes.saturating_sub(request.payload.len());
            }
        }
        self.parked.append(&mut kept);
        self.shared.telemetry().refused_forwards(refused);
        Ok(())
    }

    /// An eighth of the resend interval (the backup's timer), in the replica's ticks, rounded
    /// down: marks fall early, never late.
    fn eighth_timer_ticks(&self) -> u64 {
        ((self.resend_after / 8).as_micros() / self.tick.as_micros().max(1)).max(1) as u64
    }

    /// Requests the replica waited on for half its timer that no slot holds, judged again on
    /// the chain as it is now, oldest first (the order its timer follows them in). Those the
    /// rules reject are withdrawn from the replica (pbft's `Input::Withdraw`) before that timer
    /// runs out on a correct primary, which refuses them at admission; a backup forwards the
    /// others to the primary again (§4.1's retransmission: the replica resends only when no
    /// block comes), for a refusal or a loss there may have been for a moment only (a rule
    /// that admits from a time on, a clock a little behind, a park share full, a lost frame:
    /// red team s78 F2). Every one is judged, and forwarded again, when its wait reaches half
    /// a timer, then each further quarter ([`judged_at_eighth`]), not at every pass (red team
    /// s79 F2: a backlog that drains over many passes was judged, and forwarded, at each):
    /// each cost an admission when it came. Runs every eighth of a timer.
    ///
    /// Own transactions that lost a race (acknowledged, admitted on the chain as it was then,
    /// rejected now: a record whose grant another record used first, one that expired) are no
    /// longer resent either. They stay acknowledged until their `not_after_ms` has passed (no
    /// block can apply them then), in case a block still orders them, but no longer than
    /// [`WITHDRAWN_KEPT_RESENDS`] resend intervals: a client may set no expiry, and losers kept
    /// for ever would fill the mempool and the journal of acknowledged transactions (a hostile
    /// doctor makes them at will). Another's request a primary's pre-prepare or a peer's
    /// forward left here waits on the same terms (red team s77 F1: a peer forwarded one about
    /// to expire, which the correct primary refused and this backup, judging forwards only as
    /// it sends them, waited on for a whole timer while blocks came; s77 F2 and s78 F1: a
    /// burst of more than a pass's share of a client's losers, judged a share a pass).
    fn withdraw_refused(&mut self, actions: &mut Vec<Action>) -> Result<(), NodeError> {
        let now = self.clock.now_ms();
        if !self.replica.in_view_change() {
            let eighth_timer = self.eighth_timer_ticks();
            let since_last = self.replica.now() - self.last_judged_tick;
            self.last_judged_tick = self.replica.now();
            let waited: Vec<Request> = self
                .replica
                .waited_unproposed()
                .take_while(|(_, waited)| *waited >= 4 * eighth_timer)
                .filter(|(_, waited)| judged_now(*waited, since_last, eighth_timer))
                .map(|(request, _)| request.clone())
                .collect();
            let own = self.shared.waits_on(&waited);
            let mut refused = Vec::new();
            let mut lost = Vec::new();
            let mut admitted = Vec::new();
            self.chain.snapshot(|chain| {
                let state = chain.state();
                for (request, own) in waited.into_iter().zip(own) {
                    match self.admit_request(&state, &request, now)? {
                        Ok(()) => admitted.push(request),
                        Err(reject) => {
                            refused.push(request.id);
                            if own {
                                info!(
                                    id = %ledger::short_hex(&request.id),
                                    %reject,
                                    "withdrew an own transaction the chain now rejects"
                                );
                                lost.push(request.id);
                            }
                        }
                    }
                }
                Ok(())
            })?;
            if !refused.is_empty() {
                debug!(
                    count = refused.len(),
                    own = lost.len(),
                    "withdrew waited-on requests the chain now rejects"
                );
                self.shared.mark_withdrawn(&lost);
                self.step(Input::Withdraw(refused), actions);
            }
            if !admitted.is_empty() && !self.replica.is_primary() {
                // With a cut: the primary's batch window starts when a request reaches it, and
                // a window longer than the rest of the timer would time this backup out yet
                // (red team s79 F1: a quiet cluster, where no other batch is cut meanwhile).
                let primary = self.replica.primary();
                self.send_forward(primary, &admitted);
                self.send_frame(primary, Wire::Cut);
            }
        }
        let kept_longest = self.resend_after * WITHDRAWN_KEPT_RESENDS;
        let expired: Vec<[u8; 32]> = self
            .shared
            .withdrawn()
            .iter()
            .filter(|(request, withdrawn_for)| {
                *withdrawn_for >= kept_longest
                    || self
                        .decode(request)
                        .is_none_or(|tx| tx.header.not_after_ms < now)
            })
            .map(|(request, _)| request.id)
            .collect();
        if !expired.is_empty() {
            self.shared.take_pending(&expired);
            self.acknowledged.withdraw(expired.iter());
        }
        Ok(())
    }

    /// A request's transaction, from the edge check's memory or (evicted from it since)
    /// decoded again; `None` if it does not decode.
    fn decode<'a>(&'a self, request: &Request) -> Option<Cow<'a, SignedTx>> {
        match self.auth.decoded(request) {
            Some(tx) => Some(Cow::Borrowed(tx)),
            None => SignedTx::from_bytes(&request.payload).ok().map(Cow::Owned),
        }
    }

    /// §4.1: a client that gets no reply in time broadcasts its request to every replica, so
    /// that all backups (not only the one it first reached) start the timer that replaces a
    /// faulty primary. The node is its transactions' client.
    /// Only when the cluster looks stuck (no block for a while) or a transaction waited far
    /// longer than a slow block explains: a loaded cluster must not be loaded further by resends.
    fn resend_stalled(&mut self, actions: &mut Vec<Action>) {
        let no_progress = self.last_commit_at.elapsed() >= self.resend_after;
        let starved = self
            .shared
            .waiting()
            .1
            .is_some_and(|age| age >= self.resend_after * 4);
        if !(no_progress || starved) {
            return;
        }
        let stalled = self
            .shared
            .due_for_resend(self.resend_after, self.max_batch);
        if stalled.is_empty() {
            return;
        }
        debug!(
            count = stalled.len(),
            "broadcasting stalled transactions to every validator"
        );
        for chunk in stalled.chunks(self.max_batch) {
            actions.push(Action::Broadcast(Message::Forward(chunk.to_vec())));
        }
    }

    fn on_cut(
        &mut self,
        reply: oneshot::Sender<Result<CutOutcome, NodeError>>,
        actions: &mut Vec<Action>,
    ) {
        let waiting_for = self.shared.pending_ids();
        if waiting_for.is_empty() {
            let _ = reply.send(Err(NodeError::NothingPending));
            return;
        }
        self.cut_waiters.push(CutWaiter {
            waiting_for,
            committed: None,
            deadline: Instant::now() + CUT_TIMEOUT,
            reply,
        });
        self.propose_now(actions);
    }

    /// Asks the primary (this replica, or by a `Cut` frame) to propose what is pending now.
    fn propose_now(&mut self, actions: &mut Vec<Action>) {
        if self.replica.is_primary() {
            self.step(Input::Cut, actions);
        } else {
            let primary = self.replica.primary();
            self.send_frame(primary, Wire::Cut);
        }
    }

    /// Registers `reply` for the verdict on `id`, or answers it now if `id` is on chain.
    /// Whether the caller should ask for a block now.
    fn on_watch(
        &mut self,
        id: TxId,
        cut: bool,
        reply: oneshot::Sender<Result<Verdict, NodeError>>,
    ) -> Result<bool, NodeError> {
        // Acknowledged here and not yet in an applied block (both change on this thread): no
        // need to look on the chain.
        if !self.shared.is_pending(&id)
            && let Some(verdict) = verdict_on_chain(&self.chain, &id)?
        {
            let _ = reply.send(Ok(verdict));
            return Ok(false);
        }
        self.verdict_waiters.entry(id).or_default().push(reply);
        Ok(cut)
    }

    fn expire_cut_waiters(&mut self) {
        let now = Instant::now();
        let (expired, waiting): (Vec<_>, Vec<_>) = self
            .cut_waiters
            .drain(..)
            .partition(|waiter| waiter.deadline <= now);
        self.cut_waiters = waiting;
        for waiter in expired {
            let _ = waiter
                .reply
                .send(Err(NodeError::Timeout("the block to commit")));
        }
    }

    /// The signatures of this turn's consensus messages checked in one batch: for each event,
    /// `Some(verdict)` if its message's own signature was checked here. Only messages whose
    /// shape check is stateless and cheap are batched (it runs again, first, in
    /// [`Self::on_frame`]), and none from a peer whose signature failed lately.
    fn verify_frames(&mut self, events: &[Event]) -> Vec<Option<bool>> {
        let now = Instant::now();
        let mut positions = Vec::new();
        let mut messages = Vec::new();
        for (position, event) in events.iter().enumerate() {
            if let Event::Network { from, frame, .. } = event
                && let Wire::Consensus(signed) = &**frame
                && signed.from == *from
                && *from != self.id
                && self
                    .unbatched_until
                    .get(*from as usize)
                    .is_some_and(|until| until.is_none_or(|until| until <= now))
                && batchable(&signed.message)
                && self.replica.check_shape(&signed.message).is_ok()
            {
                positions.push(position);
                messages.push(signed);
            }
        }
        let mut outer = vec![None; events.len()];
        if messages.len() < 2 {
            return outer; // one is checked alone in `on_frame`, as before
        }
        for ((position, signed), verified) in positions
            .into_iter()
            .zip(&messages)
            .zip(self.auth.verify_batch(&messages))
        {
            if !verified {
                self.unbatched_until[signed.from as usize] = Some(now + UNBATCHED_AFTER_FAILURE);
            }
            outer[position] = Some(verified);
        }
        outer
    }

    /// A frame from `from`, authenticated by the transport (the channel's proven peer);
    /// `outer`: the verdict on its consensus message's own signature, if already checked
    /// ([`Self::verify_frames`]).
    fn on_frame(
        &mut self,
        from: ReplicaId,
        frame: Frame,
        outer: Option<bool>,
        received: Instant,
        actions: &mut Vec<Action>,
    ) -> Result<(), NodeError> {
        let telemetry = self.shared.telemetry();
        telemetry.received(&frame);
        if from as usize >= self.n || from == self.id {
            telemetry.rejected(RejectReason::UnknownSender);
            return Ok(());
        }
        self.shared.touch_peer(from);
        match &*frame {
            Wire::Consensus(signed) => {
                if signed.from != from {
                    telemetry.rejected(RejectReason::WrongSender);
                    return Ok(());
                }
                // Shape before signatures: a message that cannot be valid costs no
                // signature verification, whatever it repeats; nor does what a message
                // carries when the replica will not use it.
                let checked = match (self.replica.check_shape(&signed.message), outer) {
                    (Err(error), _) => Err(error.into()),
                    (Ok(()), Some(false)) => {
                        Err(ledger::Error::BadMessageSignature { from: signed.from }.into())
                    }
                    (Ok(()), outer) => match outer {
                        Some(true) => Ok(()),
                        _ => self.auth.authenticate_signature(signed),
                    },
                };
                match checked {
                    Ok(()) => self.on_signed(from, signed, received, actions)?,
                    Err(error) => {
                        self.shared.telemetry().rejected(RejectReason::Unauthentic);
                        debug!(from, %error, "dropped an unauthentic message");
                    }
                }
            }
            // The transport hands key frames to the key service, never here.
            Wire::Keys(_) => telemetry.rejected(RejectReason::Misrouted),
            Wire::Cut => {
                if self.replica.is_primary() {
                    self.step(Input::Cut, actions);
                }
            }
            Wire::Status { height, .. } => {
                if let Some(claim) = self.peer_heads.get_mut(from as usize) {
                    *claim = Some((*height, Instant::now()));
                }
                let (head, _) = self.chain.head();
                let request = self.transfer.on_claim(from, *height, head, Instant::now());
                self.fetch(request);
            }
            Wire::FetchBlocks { from_height, limit } => {
                self.serve_blocks(from, *from_height, *limit)?
            }
            Wire::Blocks(blocks) => {
                // Unasked-for blocks are not even verified: checking certificates costs CPU.
                if self.transfer.awaits(from) {
                    self.on_blocks(from, blocks, actions)?;
                }
            }
        }
        Ok(())
    }

    /// A consensus message from `from` whose own signature verified: what it carries checked
    /// (if the replica would use it), then stepped. One over its sender's budget of carried
    /// signatures is deferred ([`Runtime::retry_deferred`]).
    fn on_signed(
        &mut self,
        from: ReplicaId,
        signed: &Signed<Message>,
        received: Instant,
        actions: &mut Vec<Action>,
    ) -> Result<(), NodeError> {
        if self.replica.uses_contents(from, &signed.message) {
            match self.auth.authenticate_contents(signed) {
                Ok(Contents::Authentic) => {}
                Ok(Contents::OverBudget) => {
                    let kind = std::mem::discriminant(&signed.message);
                    self.shared.telemetry().deferred();
                    self.deferred.insert((from, kind), signed.clone());
                    return Ok(());
                }
                Err(error) => {
                    self.shared.telemetry().rejected(RejectReason::Unauthentic);
                    debug!(from, %error, "dropped an unauthentic message");
                    return Ok(());
                }
            }
        }
        if let Some(view) = signed.message.view() {
            self.peer_views[from as usize] = Some(view);
        }
        // A backup's latency runs from the pre-prepare it first sees (one of its current
        // view: a stale one is refused by the replica).
        if signed.message.view() == Some(self.replica.view()) {
            self.note_proposal(signed);
        }
        let mut signed = signed.clone();
        if matches!(signed.message, Message::Forward(_)) {
            // The replica does not check the forward's signature again.
            self.admit_forwarded(&mut signed)?;
            if matches!(&signed.message, Message::Forward(r) if r.is_empty()) {
                return Ok(());
            }
        }
        // A backup judges a pre-prepare's block time by its clock when the pre-prepare came,
        // not after the turns it waited in the inbox (its own slowness, not the primary's):
        // that instant is one at which a correct validator held it (docs/SECURITY.md §4).
        let clock_ms = match signed.message {
            Message::PrePrepare(_) => self
                .replica_now_ms()
                .saturating_sub(u64::try_from(received.elapsed().as_millis()).unwrap_or(u64::MAX)),
            _ => self.replica_now_ms(),
        };
        let before = actions.len();
        self.step_at(Input::Message(signed), clock_ms, actions);
        // A message read from a frame or read again once deferred (red team s60 F1).
        self.send_new_view_first(before, actions)
    }

    /// Reads again the messages deferred for their senders' budgets of carried signatures:
    /// one a sender whose budget is full; those the replica no longer would use are stepped
    /// unread, as they would be on arrival.
    fn retry_deferred(&mut self, actions: &mut Vec<Action>) -> Result<(), NodeError> {
        self.deferred_tried = Instant::now();
        let mut read = HashSet::new();
        for ((from, kind), signed) in std::mem::take(&mut self.deferred) {
            // Until its sender's budget is full, it waits unread (red teams s19, s20); one a
            // sender per full budget, which it always fits, so none is read twice for nothing.
            if self.auth.budget_full(from) && read.insert(from) {
                self.shared.telemetry().deferred_read();
                self.on_signed(from, &signed, Instant::now(), actions)?;
            } else {
                self.deferred.insert((from, kind), signed);
            }
        }
        Ok(())
    }

    fn fetch(&mut self, request: Option<FetchRequest>) {
        if let Some(FetchRequest { peer, from_height }) = request {
            self.send_frame(
                peer,
                Wire::FetchBlocks {
                    from_height,
                    limit: FETCH_BLOCKS,
                },
            );
        }
    }

    /// Answers a `FetchBlocks`, always (with no blocks when it has none from there, or while
    /// the asker is in debt for what it was served: [`Served`]), so that the asker moves on
    /// without waiting out its timeout; at most [`FETCH_REPLY_BYTES`] of blocks, or one block if
    /// that is larger.
    fn serve_blocks(
        &mut self,
        to: ReplicaId,
        from_height: u64,
        limit: u32,
    ) -> Result<(), NodeError> {
        let heights = from_height..from_height.saturating_add(u64::from(limit.min(FETCH_BLOCKS)));
        let chain = &self.chain;
        // One block at a time, so a request never loads more than the reply may carry.
        let blocks = self.served.blocks(to, heights, Instant::now(), |height| {
            Ok::<_, NodeError>(chain.blocks_from(height, 1)?.pop().map(|block| {
                let size = borsh::object_length(&block).unwrap_or(usize::MAX);
                (block, size)
            }))
        })?;
        self.send_frame(to, Wire::Blocks(blocks));
        Ok(())
    }

    /// State transfer: blocks from a peer are applied only if each extends our head and carries
    /// a valid certificate; a peer cannot make us apply what 2f+1 validators did not commit.
    fn on_blocks(
        &mut self,
        from: ReplicaId,
        blocks: &[Block],
        actions: &mut Vec<Action>,
    ) -> Result<(), NodeError> {
        let mut applied = 0;
        let (mut applied_bytes, mut largest_bytes) = (0, 0);
        let mut request_ids = Vec::new();
        let mut head_time_ms = 0;
        for block in blocks {
            let (head, head_hash) = self.chain.head();
            if block.header.height <= head {
                continue;
            }
            if block.header.height != head + 1 || block.header.prev_hash != head_hash {
                break;
            }
            let contents = match self.auth.check_block(block) {
                Ok(contents) => contents,
                Err(error) => {
                    warn!(from, height = block.header.height, %error, "refused a transferred block");
                    self.shared.telemetry().rejected(RejectReason::InvalidBlock);
                    let (head, _) = self.chain.head();
                    let retry =
                        self.transfer
                            .on_answer(from, Answer::Invalid, head, Instant::now());
                    self.fetch(retry);
                    return Ok(());
                }
            };
            let decided = self.append_block(block, &contents)?;
            self.note_invalid(block, &contents);
            request_ids.extend(self.on_committed_block(block, &contents, &decided));
            head_time_ms = block.header.timestamp_ms;
            applied += 1;
            let bytes = borsh::object_length(block).unwrap_or(usize::MAX);
            applied_bytes = bytes.saturating_add(applied_bytes);
            largest_bytes = largest_bytes.max(bytes);
        }
        let (head, hash) = self.chain.head();
        if applied > 0 {
            self.shared.telemetry().state_transferred(applied);
            info!(from, head, "caught up by state transfer");
            self.step(
                Input::StateTransferred {
                    seq: head,
                    digest: hash,
                    time_ms: head_time_ms,
                    request_ids,
                },
                actions,
            );
        }
        let answer = if applied > 0 {
            // Full: as many new blocks as `serve_blocks` sends at most, or so many bytes that
            // another block as large as the largest would not have fitted. A peer that sends
            // less (one block per deadline, say) is not asked first again.
            Answer::Applied {
                full: applied >= FETCH_BLOCKS
                    || applied_bytes.saturating_add(largest_bytes) > FETCH_REPLY_BYTES,
            }
        } else {
            Answer::Nothing
        };
        let next = self.transfer.on_answer(from, answer, head, Instant::now());
        self.fetch(next);
        Ok(())
    }

    /// The clock the replica goes by: the validator's (a Byzantine `clock-skew` moves it).
    fn replica_now_ms(&self) -> u64 {
        let now_ms = self.clock.now_ms();
        #[cfg(feature = "byzantine")]
        let now_ms = crate::byzantine::replica_clock_ms(self.byzantine.as_ref(), now_ms);
        now_ms
    }

    /// Steps `input` with the replica's clock read now.
    fn step(&mut self, input: Input, actions: &mut Vec<Action>) {
        let now_ms = self.replica_now_ms();
        self.step_at(input, now_ms, actions);
    }

    /// Steps `input` with the replica's clock at `clock_ms`. A clock given before every input,
    /// not only at ticks: after a turn of seconds (applying blocks on a loaded machine) a
    /// proposal stamped, or a pre-prepare judged, by the last tick's clock was more than τ off
    /// at every backup, which withheld its prepare, view after view (BENCHMARKS.md, "a stall
    /// under load, explained").
    fn step_at(&mut self, input: Input, clock_ms: u64, actions: &mut Vec<Action>) {
        #[cfg(feature = "byzantine")]
        let Some(input) = crate::byzantine::censor(self.byzantine.as_ref(), input) else {
            return;
        };
        let _ = self
            .replica
            .step(Input::Clock { now_ms: clock_ms }, actions);
        if let Err(error) = self.replica.step(input, actions) {
            self.shared.telemetry().rejected(RejectReason::Protocol);
            debug!(%error, "replica rejected an input");
        }
    }

    /// The caller's duty for a recovery answer (pbft's contract, item 10): claim the chain's
    /// head with its stored commit certificate, which the querier's edge verifies, or nothing
    /// (0, no proof) at genesis or if the certificate cannot be read.
    fn prove_execution(&self, message: Message) -> Message {
        let Message::RecoveryAnswer(mut answer) = message else {
            return message;
        };
        let (height, hash) = self.chain.head();
        let certificate = match self.chain.certificate(height) {
            Ok(certificate) => certificate.filter(|_| height > 0),
            Err(error) => {
                warn!(%error, height, "cannot read the head's certificate for a recovery answer");
                None
            }
        };
        answer.last_executed = certificate.as_ref().map_or(0, |_| height);
        answer.executed_proof = certificate
            .map(|certificate| certificate.commit_votes(height, &hash))
            .unwrap_or_default();
        Message::RecoveryAnswer(answer)
    }

    /// Executes actions in order. Protocol records are written (one fsync) before the first
    /// send that follows them; sends before them may go first, which is always safe.
    fn execute(&mut self, mut actions: Vec<Action>) -> Result<(), NodeError> {
        let mut compact = false;
        // Forwarded requests are hints with no order to keep: one message per peer and pass,
        // not one per request, saves a signature and a verification per request. Those the
        // actions hold already go out first: the primary's queue waits for them, and applying
        // the blocks before them can take a while (BENCHMARKS.md, "stalls under load").
        let mut forwards: BTreeMap<ReplicaId, Vec<pbft::Request>> = BTreeMap::new();
        actions.retain_mut(|action| match action {
            Action::Send {
                to,
                message: Message::Forward(requests),
            } => {
                forwards.entry(*to).or_default().append(requests);
                false
            }
            _ => true,
        });
        self.send_forwards(&mut forwards)?;
        // Blocks committed in a pass are applied at its end, after its messages went out: a
        // pre-prepare the primary proposed on executing a block must not wait for that block's
        // apply (seconds on a loaded machine) with its block time ticking away at the backups
        // (BENCHMARKS.md, "a stall under load, explained"). What reads the chain applies them
        // first. A stable checkpoint's record may so be durable before its block is applied: a
        // crash between them leaves the ledger behind its own stable checkpoint, which the
        // replica fetches on restart (pbft's contract, item 4); the compaction that drops the
        // checkpoint's proposals runs after every held block is applied. This validator's own
        // checkpoint votes wait for the apply, so a stable checkpoint still means 2f+1
        // validators hold its block (red team s26).
        let mut committed_blocks = Vec::new();
        let mut held_votes = Vec::new();
        loop {
            let mut records = Vec::new();
            for action in actions.drain(..) {
                match action {
                    Action::Persist(record) => {
                        compact |= matches!(record, Durable::StableCheckpoint { .. });
                        records.push(record);
                    }
                    Action::Send {
                        to,
                        message: Message::Forward(requests),
                    } => forwards.entry(to).or_default().extend(requests),
                    Action::Send { to, message } => {
                        self.flush_records(&mut records)?;
                        if matches!(message, Message::RecoveryAnswer(_)) {
                            self.apply_all(&mut records, &mut committed_blocks)?;
                        }
                        let message = self.prove_execution(message);
                        let signed = self.auth.sign(&self.key, self.id, message);
                        self.send_frame(to, Wire::Consensus(signed));
                    }
                    // A checkpoint vote says its block is in this validator's chain (PBFT
                    // §4.3): it leaves once the blocks held before it are applied.
                    Action::Broadcast(message @ Message::Checkpoint(_))
                        if !committed_blocks.is_empty() =>
                    {
                        held_votes.push(message)
                    }
                    Action::Broadcast(message) => {
                        self.flush_records(&mut records)?;
                        self.broadcast(message);
                    }
                    Action::Execute(committed) => committed_blocks.push(committed),
                    Action::FetchState { seq, peers, .. } => {
                        self.apply_all(&mut records, &mut committed_blocks)?;
                        // f+1 validators reported a stable checkpoint at `seq`: below it, the
                        // key service gives no key (§5.6 of docs/SECURITY.md, issue 10).
                        self.reported_checkpoint = self.reported_checkpoint.max(seq);
                        let (head, _) = self.chain.head();
                        let request = self.transfer.on_claims(&peers, seq, head, Instant::now());
                        self.fetch(request);
                    }
                    Action::ReadExecuted { seq } => {
                        self.apply_all(&mut records, &mut committed_blocks)?;
                        if let Some(digest) = self.chain.block_hash(seq)? {
                            self.loopback.push_back(Input::Executed { seq, digest });
                        }
                    }
                    // Counted by the replica (`log_stats().alarms`) for the metrics.
                    Action::Alarm(alarm) => warn!(%alarm, "consensus alarm"),
                }
            }
            self.flush_records(&mut records)?;
            self.send_forwards(&mut forwards)?;
            self.apply_all(&mut records, &mut committed_blocks)?;
            for vote in held_votes.drain(..) {
                self.broadcast(vote);
            }
            let Some(input) = self.loopback.pop_front() else {
                break;
            };
            self.step(input, &mut actions);
        }
        if compact {
            self.compact_durable()?;
        }
        Ok(())
    }

    /// Signs `message`, sends it to every peer and gives it to this replica too.
    fn broadcast(&mut self, message: Message) {
        let signed = self.auth.sign(&self.key, self.id, message);
        self.note_proposal(&signed);
        self.loopback.push_back(Input::Message(signed.clone()));
        self.broadcast_frame(Wire::Consensus(signed));
    }

    /// Applies the committed blocks held back, in order, after the records before them.
    fn apply_all(
        &mut self,
        records: &mut Vec<Durable>,
        committed_blocks: &mut Vec<pbft::Committed>,
    ) -> Result<(), NodeError> {
        if committed_blocks.is_empty() {
            return Ok(());
        }
        self.flush_records(records)?;
        for committed in committed_blocks.drain(..) {
            self.apply(committed)?;
        }
        Ok(())
    }

    /// pbft's contract item 13: when the step's actions (`actions[from..]`) hold our new-view,
    /// every action is performed now, so that what this turn steps after it (whose batches the
    /// primary stamps then) follows it out. A new-view of full batches takes seconds to persist
    /// and send. Only the step's own actions are looked at: a turn steps thousands of messages.
    fn send_new_view_first(
        &mut self,
        from: usize,
        actions: &mut Vec<Action>,
    ) -> Result<(), NodeError> {
        if actions[from.min(actions.len())..]
            .iter()
            .any(|action| matches!(action, Action::Broadcast(Message::NewView(_))))
        {
            self.execute(std::mem::take(actions))?;
        }
        Ok(())
    }

    /// Sends `forwards`, each peer's requests in messages of at most a batch. A request that
    /// is not an own one this validator still waits on (a pre-prepare's, left pending when its
    /// slot did not commit, or a peer's client's) and that admission refuses on the chain as it
    /// is now, for any reason, is withdrawn from the replica instead: every correct primary
    /// refuses it too, and a faulty primary that planted one (a transaction on chain long ago,
    /// an expired one, a record under a grant that never comes, an own transaction withdrawn
    /// for a lost race) in a slot that never commits would otherwise have this backup wait on
    /// it and time out on every correct primary (red teams s74 F1, s75 F1, s76 F2). A
    /// withdrawal leaves the timer due as it was (`pbft::Replica`'s withdraw, red team s76).
    /// A peer's client's request this backup refuses only for now (its grant not applied here
    /// yet) is its validator's to resend (`resend_stalled`), once this backup caught up.
    fn send_forwards(
        &mut self,
        forwards: &mut BTreeMap<ReplicaId, Vec<pbft::Request>>,
    ) -> Result<(), NodeError> {
        let now = self.clock.now_ms();
        let mut refused = Vec::new();
        for requests in forwards.values_mut() {
            let own = self.shared.waits_on(requests);
            if own.iter().all(|own| *own) {
                continue;
            }
            let mut kept = Vec::with_capacity(requests.len());
            // One read transaction for the peer's requests (`Queries::snapshot`).
            self.chain.snapshot(|chain| {
                let state = chain.state();
                for (request, own) in requests.drain(..).zip(own) {
                    if own || self.admit_request(&state, &request, now)?.is_ok() {
                        kept.push(request);
                    } else {
                        refused.push(request.id);
                    }
                }
                Ok(())
            })?;
            *requests = kept;
        }
        if !refused.is_empty() {
            refused.sort_unstable();
            refused.dedup();
            debug!(
                count = refused.len(),
                "withdrew pending requests that admission refuses instead of forwarding them"
            );
            self.step(Input::Withdraw(refused), &mut Vec::new());
        }
        for (to, requests) in std::mem::take(forwards) {
            self.send_forward(to, &requests);
        }
        Ok(())
    }

    /// `requests` to `to`, in forwards of at most a batch.
    fn send_forward(&mut self, to: ReplicaId, requests: &[Request]) {
        for chunk in requests.chunks(self.max_batch) {
            let signed = self
                .auth
                .sign(&self.key, self.id, Message::Forward(chunk.to_vec()));
            self.send_frame(to, Wire::Consensus(signed));
        }
    }

    /// Keeps node.db's protocol log bounded: after a checkpoint becomes stable, everything it
    /// makes useless is dropped (`Durable::compact`, see `LocalStore::compact_durable`).
    fn compact_durable(&mut self) -> Result<(), NodeError> {
        self.local.compact_durable(&mut self.chain)
    }

    /// Writes `records`, the proposals they name staged in chain.db first (each entry's bytes
    /// stored once: the block it becomes names them, docs/STORAGE.md §3).
    fn flush_records(&mut self, records: &mut Vec<Durable>) -> Result<(), NodeError> {
        if !records.is_empty() {
            let started = Instant::now();
            self.local.append_durable(records, &mut self.chain)?;
            let bytes = records
                .iter()
                .map(|record| borsh::object_length(record).unwrap_or_default() as u64)
                .sum();
            self.shared
                .telemetry()
                .stored(StoreWrite::Protocol, started.elapsed(), bytes);
            records.clear();
        }
        Ok(())
    }

    fn note_proposal(&mut self, signed: &Signed<Message>) {
        if let Message::PrePrepare(pre_prepare) = &signed.message {
            self.metrics.proposed(pre_prepare.proposal.seq);
        }
    }

    /// Stores a committed block. Its entries were checked as they arrived (or are checked
    /// now, see [`Authenticator::block_of`]); one that carries no valid transaction is stored
    /// and rejected by the state machine like a duplicate: only storage failing stops us.
    fn apply(&mut self, committed: pbft::Committed) -> Result<(), NodeError> {
        #[cfg(feature = "byzantine")]
        crate::byzantine::slow_apply(self.byzantine.as_ref());
        let seq = committed.proposal.seq;
        let (head, _) = self.chain.head();
        if seq <= head {
            // Already applied through state transfer.
            return Ok(());
        }
        let (built, contents) = self.auth.block_of(committed)?;
        let applied = self.append_block(&built, &contents)?;
        let block = built.block();
        self.note_invalid(block, &contents);
        self.on_committed_block(block, &contents, &applied);
        Ok(())
    }

    /// Appends a committed block to chain.db, timed and counted.
    fn append_block(
        &mut self,
        block: &impl ToAppend,
        contents: &[Checked],
    ) -> Result<Applied, NodeError> {
        let started = Instant::now();
        let applied = self.chain.append_block(block, contents)?;
        let bytes = borsh::object_length(block.block()).unwrap_or_default() as u64;
        self.shared
            .telemetry()
            .stored(StoreWrite::Block, started.elapsed(), bytes);
        Ok(applied)
    }

    /// Invalid entries commit only when more than f validators misbehave: say so loudly.
    fn note_invalid(&self, block: &Block, contents: &[Checked]) {
        for (index, content) in contents.iter().enumerate() {
            if let Err(invalid) = content {
                warn!(
                    height = block.header.height,
                    index,
                    %invalid,
                    "a committed entry carries no valid transaction; rejected"
                );
            }
        }
    }

    /// Bookkeeping after a block is on disk (`applied`: what the rules decided): acknowledged
    /// transactions leave the mempool, waiting cuts and verdicts are answered, metrics are
    /// recorded, and the key service is handed the block (`contents`: its decoded entries).
    /// Returns the block's transaction ids, in order.
    fn on_committed_block(
        &mut self,
        block: &Block,
        contents: &[Checked],
        applied: &Applied,
    ) -> Vec<Hash> {
        self.keys.applied(block, contents, applied);
        let ids: Vec<Hash> = block.ids().collect();
        self.answer_verdicts(block, &ids, applied);
        let latencies = self.shared.take_pending(&ids);
        self.acknowledged.remove(ids.iter());
        let votes = block.certificate.signatures.len();
        self.metrics.committed(block, votes, self.n, &latencies);
        // Ids, counts and times only: a block's entries are never logged (nor their purposes).
        info!(
            target: "medchain::block",
            validator = self.id,
            height = block.header.height,
            view = block.header.view,
            txs = block.entries.len(),
            votes,
            hash = %ledger::short_hex(&block.hash()),
            "committed block"
        );
        let outcome = CutOutcome {
            height: block.header.height,
            hash: block.hash(),
            votes,
            validators: self.n,
            tx_count: block.entries.len(),
        };
        let mut still_waiting = Vec::new();
        for mut waiter in self.cut_waiters.drain(..) {
            let before = waiter.waiting_for.len();
            for id in &ids {
                waiter.waiting_for.remove(id);
            }
            if waiter.waiting_for.len() < before {
                let earlier = waiter.committed.as_ref().map_or(0, |c| c.tx_count);
                waiter.committed = Some(CutOutcome {
                    tx_count: earlier + outcome.tx_count,
                    ..outcome.clone()
                });
            }
            match waiter.committed.take() {
                Some(result) if waiter.waiting_for.is_empty() => {
                    let _ = waiter.reply.send(Ok(result));
                }
                committed => {
                    waiter.committed = committed;
                    still_waiting.push(waiter);
                }
            }
        }
        self.cut_waiters = still_waiting;
        ids
    }

    /// Answers whoever waits for the verdict on a transaction of `block` (ids `ids`).
    fn answer_verdicts(&mut self, block: &Block, ids: &[Hash], applied: &Applied) {
        if self.verdict_waiters.is_empty() {
            return;
        }
        let height = block.header.height;
        for (index, id) in ids.iter().enumerate() {
            let Some(waiters) = self.verdict_waiters.remove(id) else {
                continue;
            };
            let verdict = match applied.rejected.iter().find(|(i, _)| *i == index) {
                Some((_, reason)) => Verdict::Rejected {
                    height,
                    reason: reason.to_string(),
                },
                None => Verdict::Applied {
                    height,
                    block_time_ms: block.header.timestamp_ms,
                },
            };
            for reply in waiters {
                let _ = reply.send(Ok(verdict.clone()));
            }
        }
    }

    fn send_frame(&self, to: ReplicaId, wire: Wire) {
        self.transport.send(to, Frame::new(wire));
    }

    fn broadcast_frame(&self, wire: Wire) {
        let peers: Vec<ReplicaId> = (0..self.n as ReplicaId)
            .filter(|peer| *peer != self.id)
            .collect();
        self.transport.broadcast(&peers, Frame::new(wire));
    }

    /// Says once when a recovery from lost state ends (it started with a warning in
    /// `Node::start`).
    fn note_recovery_end(&mut self) {
        let recovering = self.replica.is_recovering();
        if self.recovering && !recovering {
            let (height, _) = self.chain.head();
            info!(
                view = self.replica.view(),
                height, "recovery finished: this validator votes again"
            );
        }
        self.recovering = recovering;
    }

    /// The (f+1)-th highest head the peers claimed in the last [`CLAIM_FRESH`]: at least one
    /// correct validator has it, so the chain has it (`None` while fewer than f+1 peers have
    /// said lately). A lone validator's own head is the chain's.
    fn peers_head(&self) -> Option<u64> {
        if self.n == 1 {
            return Some(self.chain.head().0);
        }
        let mut claims: Vec<u64> = self
            .peer_heads
            .iter()
            .flatten()
            .filter(|(_, at)| at.elapsed() < CLAIM_FRESH)
            .map(|(height, _)| *height)
            .collect();
        claims.sort_unstable_by(|a, b| b.cmp(a));
        let f = self.n.saturating_sub(1) / 3;
        claims.get(f).copied()
    }

    fn publish_status(&self) {
        let (height, hash) = self.chain.head();
        let alarms = self.replica.log_stats().alarms;
        let telemetry = self.shared.telemetry();
        telemetry.set_head(height, self.replica.view());
        let peers = self
            .peer_heads
            .iter()
            .zip(&self.peer_views)
            .map(|(head, view)| PeerClaim {
                height: head.map(|(height, _)| height),
                view: *view,
            })
            .collect();
        self.shared.update(|status| {
            status.view = self.replica.view();
            status.primary = self.replica.primary();
            status.height = height;
            status.head_hash = hash;
            status.replica_pending = self.replica.pending_len();
            status.view_changing = self.replica.in_view_change();
            status.recovering = self.recovering;
            status.reported_checkpoint = self
                .reported_checkpoint
                .max(self.replica.stable_checkpoint().0);
            status.peers_head = self.peers_head();
            status.alarms = alarms;
            status.rejected_messages = telemetry.rejected_messages();
            status.refused_forwards = telemetry.refused_forwards_total();
            status.peers = peers;
        });
    }
}

/// What became of a parked request at a pass of `Runtime::admit_parked` (one kept parked
/// stays where it is).
enum Parked {
    /// The replica holds it already.
    Held,
    /// The rules admit it now: handed to the replica.
    Admitted,
    /// The rules refuse it for good, or it waited out `resend_after`.
    Refused,
}

/// Counts one more of `from`'s parked requests judged this pass; whether it is within a batch
/// of them (`judged` holds a count per sender).
fn within_batch(judged: &mut [usize], from: ReplicaId, max_batch: usize) -> bool {
    judged.get_mut(from as usize).is_some_and(|judged| {
        *judged += 1;
        *judged <= max_batch
    })
}

/// Whether a message's signature may be checked in the turn's batch: those of the normal case,
/// whose shape check is stateless and cheap. View changes, new views and recovery messages
/// (rare, and validated against the replica's state) are checked alone.
fn batchable(message: &Message) -> bool {
    matches!(
        message,
        Message::PrePrepare(_)
            | Message::Prepare(_)
            | Message::Commit(_)
            | Message::Checkpoint(_)
            | Message::Forward(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The passes as `Runtime::run` and `turn` make them, one after each turn's ticks and the
    /// next an eighth later: a request is judged, and forwarded again, at least twice before
    /// its timer runs out, by half an eighth at least, whatever its arrival, while turns step
    /// at most half an eighth of ticks: always with the default timer (an eighth of 20 ticks,
    /// turns of 10 at most). Longer turns on a short timer can leave one chance (red team s82
    /// F1, docs/SECURITY.md).
    #[test]
    fn each_request_is_judged_twice_before_its_timer_whatever_the_turns() {
        for eighth in 1..=25u64 {
            let timer = 8 * eighth;
            for turn in 1..=(eighth / 2).clamp(1, MAX_TICKS_PER_TURN.into()) {
                for arrival in 0..2 * timer {
                    let (mut now, mut next_pass, mut last_pass) = (0, 0, 0);
                    let mut judged = Vec::new();
                    while now < arrival + timer {
                        now += turn;
                        if now >= next_pass {
                            next_pass = now + eighth;
                            if now >= arrival && judged_now(now - arrival, now - last_pass, eighth)
                            {
                                judged.push(now - arrival);
                            }
                            last_pass = now;
                        }
                    }
                    let in_time = judged
                        .iter()
                        .filter(|waited| **waited + eighth / 2 <= timer)
                        .count();
                    assert!(
                        in_time >= 2,
                        "turns of {turn} ticks, an eighth of {eighth}, arrival at {arrival}: \
                         judged at waits of {judged:?} of a timer of {timer}"
                    );
                }
            }
        }
    }
}
