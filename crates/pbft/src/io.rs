//! What goes into a replica and what comes out.

use crate::message::{Message, Signed};
use crate::types::{Committed, Digest, ReplicaId, Request, SeqNo, View};

/// One input to [`crate::Replica::step`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// One unit of logical time; every timeout is counted in ticks. `now_ms` is the caller's
    /// clock (ms since the Unix epoch): the replica keeps it as its clock, to choose and check
    /// block times (crate docs, "Block time"), and never reads one itself.
    Tick { now_ms: u64 },
    /// The caller's clock read again between ticks (ms since the Unix epoch): it becomes the
    /// replica's clock, as a tick's does, and no logical time passes. A caller whose turns can
    /// take longer than τ (applying blocks on a loaded machine) gives it before each input, so
    /// that a proposal is stamped, and a pre-prepare judged, at the time it is handled rather
    /// than at the last tick's (crate docs, "Block time").
    Clock { now_ms: u64 },
    /// A message whose signature — and every signature embedded in it, see
    /// [`Message::embedded_signatures`] — the caller has checked. The caller also loops every
    /// message this replica broadcasts back to it, signed, so that its own votes count like
    /// anyone's (and its commit signature enters the certificate).
    Message(Signed<Message>),
    /// A client request accepted by this replica's node, which submits only what its chain
    /// does not hold (a request of a slot restored from the log is then waited on again:
    /// [`crate::Replica::restored_requests`]).
    Request(Request),
    /// The caller gave up on these pending requests: they can no longer apply (its state
    /// machine would reject them now, e.g. a transaction that lost a race to a conflicting
    /// one), so a primary that leaves them out is not to be replaced for it. Requests already
    /// in the log stay (they are ordered and will execute); unknown ids are ignored.
    Withdraw(Vec<Digest>),
    /// Propose what is pending now instead of waiting for the batch window (the seed's
    /// `/api/validate`): at once into an idle pipeline, else when the next block executes
    /// ([`crate::Config::cut_in_flight`]). Ignored by a backup.
    Cut,
    /// The caller fetched, verified and applied the committed blocks up to `seq` (at least the
    /// `seq` of the [`Action::FetchState`], possibly further) and `digest` is the digest of the
    /// block at `seq`, whose block time is `time_ms`. `request_ids` are the ids of the requests
    /// in the applied blocks, so that the replica stops waiting for them (it never saw those
    /// blocks' pre-prepares).
    StateTransferred {
        seq: SeqNo,
        digest: Digest,
        time_ms: u64,
        request_ids: Vec<Digest>,
    },
    /// The answer to [`Action::ReadExecuted`]: `digest` is the digest of the block this
    /// replica's ledger holds at `seq`.
    Executed { seq: SeqNo, digest: Digest },
}

/// One output of [`crate::Replica::step`], to be executed by the caller in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Sign `message` and send it to one replica (never looped back).
    Send { to: ReplicaId, message: Message },
    /// Sign `message` and send it to every other replica, and loop it back to this one.
    Broadcast(Message),
    /// Make this record durable (fsync) before executing any later action of the same step.
    Persist(crate::durable::Durable),
    /// Apply a committed proposal; emitted exactly once per sequence number, in order
    /// (sequence numbers reached by state transfer are never emitted).
    Execute(Committed),
    /// This replica is behind a checkpoint that f+1 replicas (or a stable-checkpoint proof)
    /// vouch for and that it cannot reach from its log: fetch the committed blocks from the
    /// last executed one up to at least `seq` (whose digest is `digest`) from `peers`, verify
    /// each block's commit certificate and `prev` chain, apply them, then input
    /// [`Input::StateTransferred`]. Re-emitted periodically while still behind.
    FetchState {
        seq: SeqNo,
        digest: Digest,
        peers: Vec<ReplicaId>,
    },
    /// Read the digest of the block the ledger holds at `seq` (executed before a restart, or
    /// reached by state transfer: the replica keeps no digest of it) and input it as
    /// [`Input::Executed`]. f+1 replicas vouch for a checkpoint at `seq`, and one more vouch
    /// may make it stable (§4.3). If the ledger has no block there, do nothing.
    ReadExecuted { seq: SeqNo },
    /// Log and count this (see [`Alarm`]); nothing else to do.
    Alarm(Alarm),
}

/// Something that cannot happen with at most f faulty replicas and a consistent caller (its
/// stores intact), seen by this replica. The replica reports it and goes on (it recovers what
/// it can by state transfer or a view change) instead of stopping; the caller logs it and
/// counts it in its metrics, because it means the fault model was exceeded or this replica's
/// stores are damaged. [`crate::LogStats::alarms`] counts every alarm, including those raised
/// while rejecting an input (which carries no action).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Alarm {
    /// 2f+1 replicas committed a proposal at `seq` whose `prev` is not this replica's executed
    /// head: its chain and the quorum's differ. The slot is abandoned (never executed here)
    /// and the committed blocks are fetched by state transfer from the committers.
    #[error("committed proposal at {seq} (view {view}) does not chain to the executed head")]
    CommittedOffChain { seq: SeqNo, view: View },
    /// 2f+1 checkpoint messages vouch for a digest at `seq` other than the one this replica
    /// executed there; it does not take it as its own stable checkpoint.
    #[error("2f+1 replicas vouch for a checkpoint at {seq} that this replica did not execute")]
    CheckpointMismatch { seq: SeqNo },
    /// As the primary of `view`, the O set its 2f+1 view-changes yield conflicts with a
    /// proposal this replica executed at `seq`: it cannot send that new-view without
    /// contradicting its own execution, so it moves on to the next view (whose primary may
    /// hold other view-changes) instead of stalling silently.
    #[error("the new-view for view {view} conflicts with the proposal executed at {seq}")]
    NewViewConflictsWithExecuted { view: View, seq: SeqNo },
}
