//! A pure PBFT replica (Castro and Liskov, OSDI 1999; TOCS 2002).
//!
//! The replica is a state machine: [`Input`]s in (ticks, verified messages, client requests),
//! [`Action`]s out (send, broadcast, persist, execute, state transfer). It does no IO, reads no
//! clock and draws no random numbers; signatures are made and checked by the caller, so every
//! message handed to [`Replica::step`] has already been authenticated as coming from `from`.
//!
//! What the replicas agree on at each sequence number is a [`Proposal`]: a batch of opaque
//! requests chained to the proposal before it. Its digest is computed by the application's
//! [`DigestFn`] (the ledger makes it the block hash), so the 2f+1 commit signatures collected for
//! a sequence number are signatures over that block hash: the block's commit certificate.
//!
//! # The caller's contract
//!
//! ```text
//! let mut replica = Replica::new(config, restored);
//! loop {
//!     let input = next tick / verified message / request / cut / state transferred;
//!     let mut actions = Vec::new();
//!     match replica.step(input, &mut actions) { Err(e) => count(e), Ok(()) => {} }
//!     for action in actions { execute in order }
//! }
//! ```
//!
//! 1. **Verify before stepping.** Check the outer signature of every message and every
//!    signature embedded in it ([`Message::embedded_signatures`]: checkpoint proofs and
//!    prepares inside view-changes, view-changes inside new-views, a recovery answer's commit
//!    certificate and querier's message). Drop the message if any fails. The replica checks everything else (sender range, views, digests, watermarks,
//!    quorums, certificates, O sets).
//! 2. **Execute actions in order.** [`Action::Persist`] must be durable (fsync) before any
//!    later action of the same step is executed: the replica always emits the persist before
//!    the send that depends on it (a pre-prepare before it is sent or prepared, a prepared
//!    certificate before the commit, a view-change record before the view-change, the view
//!    record and O set before the new-view or its prepares, a stable checkpoint before
//!    anything that relies on the advanced watermark).
//! 3. **Loop back broadcasts.** For [`Action::Broadcast`], sign the message, send it to every
//!    other replica, and feed the signed message back into this replica as
//!    [`Input::Message`] (after the current step's actions). Its own prepares, commits,
//!    checkpoints and view-changes count only this way; its commit signature becomes part of
//!    the certificate. [`Action::Send`] is not looped back.
//! 4. **Execute** applies a block exactly once per sequence number, in order, with its commit
//!    certificate (`commit_view` and 2f+1 signatures over
//!    [`commit_signing_bytes`]`(Vote { view: commit_view, seq, digest })`). The sends and
//!    records that follow it need not wait for the apply (the node sends them first, so that a
//!    pre-prepare's block time does not age behind a slow apply). A stable-checkpoint record
//!    may so become durable before its block is applied: restarted after a crash in between,
//!    the replica finds its ledger behind its own stable checkpoint and fetches up to it
//!    (item 5). A [`Checkpoint`] broadcast is the exception: it says the block is in this
//!    replica's state (§4.3), so it waits for the applies before it, and a stable checkpoint
//!    still means that 2f+1 replicas hold its block.
//! 5. **State transfer.** On [`Action::FetchState`], fetch from `peers` (any of them, or
//!    others) the committed blocks after the ledger head up to at least `seq`, verify each
//!    block's certificate and `prev` link, apply them, then input
//!    [`Input::StateTransferred`] with the new head, its block time and the applied request
//!    ids. If it cannot be served, do nothing: the replica asks again.
//! 6. **Restart.** Hand [`Replica::new`] the ledger head (with its block time), the clock,
//!    and the durable records in the order they were persisted. Records may be pruned with [`Durable::compact`] (or the same rule
//!    in SQL: keep the last view record, the latest stable checkpoint, and pre-prepares of the
//!    last view and highest-view prepared certificates above it). Requests pending before the
//!    crash are lost from the replica; the node's mempool re-submits them. If the records may
//!    be incomplete (lost, deleted, restored from a backup), set [`Restored::recovering`];
//!    always pass a fresh random [`Restored::nonce`], and a [`Restored::incarnation`] higher
//!    than that of any earlier start whose records may be lost (the node counts its starts;
//!    see "Recovering from lost state").
//! 7. **Requests are deduplicated** by id (pending, in the log, or among the last
//!    `executed_window` executed); a request can still be ordered twice after a restart or a
//!    Byzantine primary, so the application must also skip ids it already applied.
//! 8. **Clients retry.** A request accepted by a replica that then crashes, or by a faulty
//!    primary that drops it, is lost: if it does not commit in time, submit it again, ideally
//!    to several replicas.
//! 9. **Alarms.** Log and count every [`Action::Alarm`] (also [`LogStats::alarms`]): each one
//!    means the fault model was exceeded or this replica's stores are damaged.
//! 10. **Prove recovery answers.** Before signing an [`Action::Send`] of a [`RecoveryAnswer`],
//!     set its `last_executed` to the height of the head of the executed chain and its
//!     `executed_proof` to that block's commit certificate ([`commit_votes`];
//!     [`RecoveryAnswer::prove_executed`] from a [`Committed`]), or 0 and no proof when the
//!     chain holds nothing but genesis. The replica keeps no certificates of what it executed (state transfer and
//!     restarts bring blocks it never saw commit), so it fills in its own last executed
//!     sequence number with no proof, which the querier refuses. The chain's head may lag the
//!     replica's or lead it: either is a true, certified claim.
//! 11. **Pass the clock.** Every [`Input::Tick`] carries the caller's clock (`now_ms`, ms since
//!     the Unix epoch); a caller whose turns can outlast τ also gives [`Input::Clock`] before
//!     each input; see "Block time" below.
//! 12. **Answer digest reads.** On [`Action::ReadExecuted`], input [`Input::Executed`] with the
//!     digest of the ledger's block at `seq` (nothing if it has none): a replica restarted, or
//!     moved by state transfer, past a checkpoint keeps no digest of it, and vouches for it
//!     only this way once f+1 others do (§4.3).
//! 13. **Send a new-view before the next input.** The primary that enters a view proposes
//!     nothing in the step that yields its [`Action::Broadcast`] of the [`NewView`], and
//!     proposes on its next input, stamped by that input's clock: perform the step's actions
//!     (persist, send) before stepping another, or its first batches carry the time from
//!     before a new-view that took seconds to persist and send (see "Block time").
//!
//! # Changes to the original message contract
//!
//! - [`PreparedCertificate::pre_prepare`] and [`NewView::pre_prepares`] are unsigned
//!   [`PrePrepare`]s (the 2f backup prepares prove the former; the new-view's signature covers
//!   the latter), because the core cannot sign the O set it builds.
//! - The signatures of a [`ViewChange`] and a [`NewView`] cover each pre-prepare inside as
//!   `(view, seq, digest)` ([`PrePrepare::vote`]), as a pre-prepare's own does, not its batch:
//!   the replica checks every batch a view-change carries against its digest and takes only the
//!   O set it computes itself. A [`NewView`] is written with each distinct batch once (its
//!   borsh encoding is a table of batches that its pre-prepares name).
//! - [`Input::StateTransferred`] carries the applied request ids and the head's block time.
//! - [`Proposal::time_ms`], the block time, and [`Input::Tick`]'s `now_ms` (below).
//! - [`Durable`] has `ViewChange`, `PrePrepare`, `Prepared` and `StableCheckpoint` records
//!   besides `View`.
//! - A [`Checkpoint`] message at a sequence number that is not a multiple of K is a status
//!   claim (sent by a stalled replica), used only to detect that a replica is behind.
//! - [`Action::ReadExecuted`] and [`Input::Executed`] (item 12).
//! - [`Durable::NewView`] (a primary's new-view, resent after a restart),
//!   [`Durable::Recovery`], [`Durable::Incarnation`] and [`Durable::Withheld`];
//!   [`Action::Alarm`]; [`RecoveryQuery`]
//!   and [`RecoveryAnswer`].
//! - [`ViewChange`] and [`NewView`] carry their sender's incarnation inside what it signs
//!   (TOCS'02 §4.3.2 refreshes keys instead, see "Recovering from lost state").
//!
//! # Deviations from the paper, and why
//!
//! - Proposals are chained (`prev`), so a backup accepts a pre-prepare only after the one
//!   before it, commits `s` only when everything up to `s` is prepared, and a new-view's O set
//!   ends at the first gap instead of filling it with null requests (see
//!   [`Replica`]'s `plan_new_view` docs and `docs/ARCHITECTURE.md`).
//! - The view-change timer starts once 2f+1 replicas ask for this view *or a higher one* (the
//!   paper: this view), and view-changes are kept per sender for up to
//!   [`VIEW_CHANGES_PER_SENDER`] views (not only the latest): both close liveness gaps the
//!   simulator found when a minority had timed out into the next view alone.
//! - The f+1 rule (join the smallest view f+1 others are in) counts any message carrying a
//!   view, not only view-changes; a primary that entered its view by a new-view resends it to
//!   a replica whose view-change shows it is behind, once per half `retransmit_ticks` per
//!   replica for as many answers as a laggard asks within four times the primary's view-change
//!   timer, then with the wait doubling to 16 intervals (`AnswerPace`: a new-view may carry a
//!   log window; a replayed view-change must not buy one each). A replica changing views
//!   retransmits its view-change even while state transfer moves its execution: that answer is
//!   its way back into the view.
//! - Backups also track the requests of pre-prepares they accept as pending, so they time out
//!   if those never execute and re-forward them to the next primary if a view change drops
//!   them.
//! - Stalled replicas retransmit (§5 leaves retransmission to the implementation).
//! - State transfer is the caller's: it fetches certified blocks, not a state snapshot. A slot
//!   whose pre-prepare no longer chains to the head a state transfer brought is *abandoned*,
//!   not cleared: it stays blocked until the next view change, so that a correct replica never
//!   sends two different prepares or commits for one (view, seq).
//! - Every batch (in a pre-prepare, a forward, a prepared certificate) is refused if it has
//!   more than `max_batch` requests or names one twice; a new-view's lists are bounded by n and
//!   L before they are checked. Only accepted messages count for the f+1 rule.
//! - What cannot happen with at most f faults (2f+1 commits for a proposal that does not follow
//!   the executed head, a stable checkpoint this replica executed differently, an O set that
//!   contradicts its execution) raises an [`Alarm`] and is recovered from where possible
//!   (state transfer, the next view), never a panic.
//! - Recovery from lost state replaces proactive recovery (TOCS'02 §4.3.2), see below.
//! - Each proposal carries a block time that backups check against their clocks before they
//!   prepare (below).
//!
//! # Block time
//!
//! The application judges expiries at the block's time, so every replica must see the same
//! one: the primary chooses it and the three phases make the replicas agree on it, as OSDI'99
//! §4.6 (non-determinism) does for a value only the primary can choose. There the replicas
//! must be able to judge a value by themselves; here a backup judges a block time, before it
//! prepares, by its own clock (the caller's, passed in every [`Input::Tick`] and
//! [`Input::Clock`]; the core reads none). τ is [`Config::block_time_tolerance_ms`].
//!
//! - **The primary** proposes `time_ms = max(clock, prev + 1)`, with `prev` the time of the
//!   proposal at `seq - 1`, and waits (proposes nothing yet) while `prev + 1 > clock + τ/2`.
//!   So its proposals are never more than τ/2 ahead of its clock: right after a faulty
//!   primary pushed `prev` towards +τ, the next correct one waits instead of proposing a time
//!   that backups with slower clocks would refuse (and replacing it).
//! - **A backup**, once it holds the proposal at `seq - 1` (or that is its executed head),
//!   refuses a pre-prepare whose time is not later than that one's
//!   ([`ProtocolError::BlockTimeNotIncreasing`]: no correct primary sends it). It keeps a
//!   pre-prepare whose time is more than τ from its clock but withholds its prepare
//!   ([`LogStats::withheld_prepares`]); if 2f other backups prepare anyway, it commits and
//!   executes with them. A time wrong for everyone commits nowhere, and the view changes. It
//!   judges a withheld one again as its clock moves, and its log tells the two apart
//!   ([`Durable::Withheld`]): restarted, it resends the prepares it sent, whatever its clock
//!   says by then, and judges the withheld ones again.
//! - **Timers**: while the latest block time a view inherited (the head's or the O set's when
//!   a replica entered it, or a head up to the view's start that state transfer brings later;
//!   persisted as `Durable::Inherited`) is more than τ/2 ahead of a backup's clock, less an
//!   allowance for a primary's slower clock (`Config::clock_skew_allowance_ms`, τ/4), a
//!   correct primary may still be waiting, so the backup's view-change timer runs out at the
//!   earliest a full timeout after that wait (else a timeout below τ/2 would replace every
//!   correct primary after a faulty one pushed the time ahead: with the f+1 rule of §4.5.2
//!   one correct backup that does not wait is enough). The view's own times never extend it: a faulty primary
//!   could renew them with every block. Each view's primary, faulty or not, can thus take
//!   about 3τ/4 more before it is replaced.
//! - **Restored slots**: a restart puts a slot's requests back in the log but waits on none of
//!   them; the caller resubmits those its chain does not hold
//!   ([`Replica::restored_requests`]), and they are waited on as an accepted pre-prepare's
//!   are, so that a slot every backup withholds still times out. A peer's forward of one is
//!   not trusted so: a faulty primary's replay of an executed request would time out a
//!   restarted backup alone. A timer stands still (it is not renewed) while every request
//!   waited on sits in a slot that f+1 replicas (or a stable checkpoint, or 2f+1 commits)
//!   vouch was executed, at or below the fetch target: only the state transfer is missing,
//!   not the primary's work. The vouch is for the sequence number, not for the pre-prepare
//!   this replica holds there, so the time waited outside such slots still counts: a faulty
//!   primary that plants the request at one correct backup behind after another holds at
//!   most f of them at once (red team s42 F1). The timer is renewed, not paused, when this
//!   replica's own pre-prepares hash-chain from the target's vouched digest down to every
//!   waited-on slot: those slots are the decided ones, and a backup behind its own decided
//!   slots (a crash between commit and apply, a slow transfer) no longer times out on a
//!   correct primary because fresh requests kept it outside them for a while (red team s45
//!   F1, s39 F3 again under the pause); a planted slot never chains to the decided digest.
//! - **Re-issued proposals** of a new-view's O set are not checked again: each carries 2f
//!   backup prepares of its own view, f+1 of them from correct replicas that checked it then
//!   (the O set has no null requests before its last entry, so no unchecked time enters).
//!
//! The bound this gives (n = 3f+1, correct clocks within ε of real time): a committed block
//! has its primary's pre-prepare and 2f backup prepares. If the primary is correct, the time
//! is within τ/2 of its clock; if not, at most f-1 preparing backups are faulty, so f+1 correct
//! ones each found it within τ of theirs. So **every committed block's time is within τ + ε of
//! a real instant at which a correct validator accepted or proposed it**, and later than the
//! block before. The error does not accumulate: each block is checked against clocks, not
//! against the block before. Liveness needs message delay plus clock skew below τ/2 between
//! the primary and 2f correct backups.
//!
//! # Recovering from lost state
//!
//! A replica whose durable records were lost (deleted, or restored from an older backup) may
//! have sent prepares, commits, pre-prepares, view-changes or a new-view it no longer
//! remembers; sending a different one for the same (view, seq) or view could fork the chain
//! when a faulty primary exploits it. The caller says so ([`Restored::recovering`]; a deleted
//! store looks like a first start, so the node must know it from elsewhere). The replica then
//! persists [`Durable::Recovery`] first thing (later restarts find it) and is *passive*: it
//! sends no pre-prepare, prepare, commit, view-change or new-view, starts no view change and
//! proposes nothing; it still accepts messages, executes what 2f+1 others commit, fetches
//! state, sends checkpoints of what it executed, status claims, forwards and recovery messages.
//!
//! 1. It broadcasts a [`RecoveryQuery`] with the caller's nonce and its incarnation (resent
//!    every `retransmit_ticks`). Every replica answers the querier alone, at most once per half
//!    `retransmit_ticks`, with a [`RecoveryAnswer`]: the nonce; its executed head with that
//!    block's commit certificate (filled in by its caller, contract item 10); and the
//!    querier's own signed message of the highest view it accepted from the querier (directly,
//!    or as a view-change inside a new-view it accepted), if any. Before answering, it
//!    persists the incarnation the query announces ([`Durable::Incarnation`]) if it is newer
//!    than the one it knew. The answer is signed like every message, the nonce and querier
//!    make an answer to another query useless (the querier's [`Replica::check_shape`] refuses
//!    it before any signature is checked), and the caller verifies every embedded signature
//!    (item 1).
//! 2. An answer must prove what it claims: a certificate of at least a quorum of distinct
//!    replicas' commits of one view and digest at the executed sequence number it names, and
//!    a message that the querier signed. Otherwise it is refused
//!    ([`ProtocolError::InvalidRecoveryAnswer`]) and does not count. With proven answers from
//!    2f+1 *other* replicas it takes V = the highest view among the querier's messages and
//!    the certificates, and H = the highest certified execution plus L, and persists the
//!    bound `(V, H)`. It reaches the cluster's view by the f+1 rule (§4.5.2), not by jumping
//!    to V, so that it is never alone in a view.
//! 3. It stays passive until it is in a view of at least V with a stable checkpoint of at
//!    least H (and, if it is changing to a view up to V that it leads, until the next view:
//!    it may have sent that view's new-view before), then takes part as usual (at the next
//!    tick it retransmits what it held back).
//!
//! Why it cannot contradict itself afterwards. Every prepare, commit or pre-prepare it sent
//! before was for a sequence number within its watermarks then, so at most `h + L` where `h`
//! was its stable checkpoint; 2f+1 replicas had sent checkpoints at `h`, so had executed
//! through it, and execution only moves forward. The 2f+1 answerers and those 2f+1 signers
//! (less the querier) share at least f+1 replicas, one of them correct even with f faulty
//! replicas besides the querier: it answers with its real head, at least `h`, and that block's
//! real certificate, so H >= h + L. After recovery its stable checkpoint is at least H, and it
//! never again sends a vote at or below it: whatever view it votes in, no vote of its lost
//! life is at the same sequence number. A view-change or new-view it sent that reached a
//! correct answerer is covered by V: the answerer shows the querier's message of the highest
//! view it accepted, so V is at least that view-change's view, and the replica does not leave
//! recovery below it (and does not lead it again, step 3). Its view-changes after recovery
//! carry a checkpoint at least H, so they cover everything it prepared before.
//!
//! Why a view-change of its lost life that reached only faulty replicas cannot be used against
//! it (TOCS'02 §4.3.2 refreshes the recovering replica's keys for this; here its incarnation
//! plays that part). Such a view-change, for a view v, promised (§4.4) that the replica takes
//! no part in views below v, which its new life, not knowing it, may break: a faulty primary
//! of v could build a new-view on it whose O set leaves out what the replica committed in a
//! lower view after recovery. Every view-change and new-view carries its sender's incarnation
//! inside what it signs. A *life* is a replica's own signed recovery query ([`Life`]): every
//! replica keeps, per sender, the newest life it knows ([`Durable::Incarnation`]), learned from
//! that sender's query, relayed by others ([`Message::Lives`]) or shown in a recovery answer,
//! never from a view-change or new-view; it refuses a view-change or new-view of an older
//! incarnation, alone or inside a new-view ([`ProtocolError::OlderIncarnation`]); the replica
//! refuses its own. For anything to be prepared in v, its primary and 2f backups must accept
//! that new-view; they share f+1 replicas with the 2f+1 answerers (which exclude the
//! recovered replica), so at least one correct one, which persisted the new incarnation before
//! it answered. If it checked the new-view after
//! answering, it refused it. If it had accepted the new-view before, it kept the lost life's
//! view-change as the querier's message of the highest view and showed it in its answer, so
//! V >= v and the replica never voted below v after recovery: the promise was kept.
//!
//! Why that knowledge survives the answerers' own amnesia. Each recovery answer carries the
//! newest life its answerer knows of every replica, and a recovering replica learns them
//! (persisting each) before it takes part, with no limit on how many (the limit below is for
//! replicas that take part): the newest it is shown wins, whichever answer or relay came
//! first, also when it restarts from an older backup. Let K be the correct replicas that know a life k of
//! X. When X recovers, its 2f+1 answerers persist k before answering; at most f - 1 of them are
//! faulty (X itself counts towards f while it recovers), so K holds at least f + 2 of them,
//! and X. When a member of K loses its state (it then counts towards f), the others of K are
//! at least f + 2 of the 3f other replicas, its 2f+1 answerers share at least 2 with them, and
//! a correct answerer shows k: it learns k again before it takes part. So K never drops below
//! f + 1 correct replicas that take part, and every new-view's 2f+1 acceptors include one.
//!
//! Why announcing new lives cannot halt the cluster. A faulty replica can send its view-change
//! to the primary and a query of a newer incarnation to the backups only, which would then
//! refuse the new-view built on that view-change: a veto. A replica that learns a new life,
//! from any source, relays it to every replica at once ([`Message::Lives`]; once learned it is
//! not new, so each replica relays it once), and a replica changing views relays every life it
//! knows with its view-change (and again as it retransmits), so what correct replicas know
//! converges instead of differing. A replica takes at most one new life per sender per
//! advance of its own stable checkpoint ([`ProtocolError::IncarnationRaisedTooSoon`]; it does
//! not answer such a query, so the arguments above are untouched), and records that
//! checkpoint with the life, so a restart does not renew it. The bound this gives: a faulty
//! replica that announces one life to some replicas and another to the rest at once keeps
//! them split until their stable checkpoints move (each relay arrives where the allowance is
//! spent), and vetoes each new-view of a primary in the older group; the first primary of the
//! newer group succeeds. So it costs at most one rotation of primaries (n view changes, with
//! their doubling timeouts) per checkpoint interval, and only when views change for another
//! reason (one replica cannot start a view change); the cluster then commits that interval
//! before the next. A recovering replica learns lives without that limit but keeps them in
//! memory (newest per sender), persisting and relaying them once as it leaves recovery, so a
//! faulty replica's flood of signed lives costs it neither writes nor messages. The price: a
//! correct replica that loses its state twice within one checkpoint interval stays in
//! recovery until the others reach the next checkpoint.
//!
//! Why no faulty answerer can strand it. H is a sequence number 2f+1 replicas committed, and
//! V a view the replica asked for itself or one in which 2f+1 replicas committed: a faulty
//! answerer can leave things out (the correct answers cover them), not make them up, since it
//! can forge neither the querier's signature nor a quorum's. Once the cluster commits L
//! sequence numbers past its highest execution, the replica takes part again. (If its lost
//! life had asked alone for a view the others never reached, it waits for them there, as
//! that life would have.)
//!
//! Limits. A recovering replica counts towards f (with n = 4, a faulty primary plus a
//! recovering replica is beyond the fault model: safety still holds by the arguments above,
//! liveness is not owed). The incarnation must grow across every life whose records may be
//! lost (the caller's duty, contract item 6). What an answerer shows of the querier is kept in
//! memory: a correct answerer that accepted such a new-view, then restarted, then answered
//! shows less (the narrow case the last argument leaves open). With n <= 2 there are not 2f+1
//! other replicas to ask: the flag is ignored. The rest of
//! §4.3.2 differs too: there a replica keeps its log, reboots from a trusted copy and
//! estimates its high watermark from 2f+1 answers in the same way; here the log itself is
//! lost, and the caller's nonce defeats replayed answers.

mod checkpoint;
mod config;
mod durable;
#[doc(hidden)]
pub mod fuzzing;
mod io;
mod message;
mod recovery;
mod replica;
mod types;
mod view_change;

#[cfg(feature = "planted-bugs")]
pub use config::PlantedBug;
pub use config::{
    Config, DEFAULT_BLOCK_TIME_TOLERANCE_MS, ProtocolError, Restored, max_faulty, quorum,
};
pub use durable::Durable;
pub use io::{Action, Alarm, Input};
pub use message::*;
pub use replica::{LogStats, Replica, VIEW_CHANGES_PER_SENDER};
pub use types::*;
