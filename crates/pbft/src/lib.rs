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
//!    prepares inside view-changes, view-changes inside new-views). Drop the message if any
//!    fails. The replica checks everything else (sender range, views, digests, watermarks,
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
//!    [`commit_signing_bytes`]`(Vote { view: commit_view, seq, digest })`). Apply the block
//!    before persisting later records of the same step (the stable-checkpoint record that may
//!    follow assumes the block is applied).
//! 5. **State transfer.** On [`Action::FetchState`], fetch from `peers` (any of them, or
//!    others) the committed blocks after the ledger head up to at least `seq`, verify each
//!    block's certificate and `prev` link, apply them, then input
//!    [`Input::StateTransferred`] with the new head and the applied request ids. If it cannot
//!    be served, do nothing: the replica asks again.
//! 6. **Restart.** Hand [`Replica::new`] the ledger head and the durable records in the order
//!    they were persisted. Records may be pruned with [`Durable::compact`] (or the same rule
//!    in SQL: keep the last view record, the latest stable checkpoint, and pre-prepares of the
//!    last view and highest-view prepared certificates above it). Requests pending before the
//!    crash are lost from the replica; the node's mempool re-submits them.
//! 7. **Requests are deduplicated** by id (pending, in the log, or among the last
//!    `executed_window` executed); a request can still be ordered twice after a restart or a
//!    Byzantine primary, so the application must also skip ids it already applied.
//! 8. **Clients retry.** A request accepted by a replica that then crashes, or by a faulty
//!    primary that drops it, is lost: if it does not commit in time, submit it again, ideally
//!    to several replicas.
//!
//! # Changes to the original message contract
//!
//! - [`PreparedCertificate::pre_prepare`] and [`NewView::pre_prepares`] are unsigned
//!   [`PrePrepare`]s (the 2f backup prepares prove the former; the new-view's signature covers
//!   the latter), because the core cannot sign the O set it builds.
//! - [`Input::StateTransferred`] carries the applied request ids.
//! - [`Durable`] has `ViewChange`, `PrePrepare`, `Prepared` and `StableCheckpoint` records
//!   besides `View`.
//! - A [`Checkpoint`] message at a sequence number that is not a multiple of K is a status
//!   claim (sent by a stalled replica), used only to detect that a replica is behind.
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
//!   a replica whose view-change shows it is behind.
//! - Backups also track the requests of pre-prepares they accept as pending, so they time out
//!   if those never execute and re-forward them to the next primary if a view change drops
//!   them.
//! - Stalled replicas retransmit (§5 leaves retransmission to the implementation).
//! - State transfer is the caller's: it fetches certified blocks, not a state snapshot.

mod checkpoint;
mod config;
mod durable;
mod io;
mod message;
mod replica;
mod types;
mod view_change;

#[cfg(feature = "planted-bugs")]
pub use config::PlantedBug;
pub use config::{Config, ProtocolError, Restored, max_faulty, quorum};
pub use durable::Durable;
pub use io::{Action, Alarm, Input};
pub use message::*;
pub use replica::{LogStats, Replica, VIEW_CHANGES_PER_SENDER};
pub use types::*;
