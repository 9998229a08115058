//! What goes into a replica and what comes out.

use crate::message::{Message, Signed};
use crate::types::{Committed, Digest, ReplicaId, Request, SeqNo};

/// One input to [`crate::Replica::step`].
#[derive(Clone, Debug)]
pub enum Input {
    /// One unit of logical time; every timeout is counted in ticks.
    Tick,
    /// A message whose signature the caller has checked. The caller also loops every message
    /// this replica sends back to it, signed, so that its own votes count like anyone's.
    Message(Signed<Message>),
    /// A client request accepted by this replica's node.
    Request(Request),
    /// Propose what is pending now instead of waiting for the batch window (the seed's
    /// `/api/validate`). Ignored by a backup.
    Cut,
    /// The caller fetched, verified and applied the committed blocks up to `seq` after a
    /// [`Action::FetchState`]; the replica resumes from there.
    StateTransferred { seq: SeqNo, digest: Digest },
}

/// One output of [`crate::Replica::step`], to be executed by the caller in order.
#[derive(Clone, Debug)]
pub enum Action {
    /// Sign `message` and send it to one replica.
    Send { to: ReplicaId, message: Message },
    /// Sign `message` and send it to every other replica (and loop it back to this one).
    Broadcast(Message),
    /// Make this record durable before executing any later action of the same step.
    Persist(crate::durable::Durable),
    /// Apply a committed proposal; emitted exactly once per sequence number, in order.
    Execute(Committed),
    /// This replica is behind a stable checkpoint it cannot reach from its log: fetch the
    /// committed blocks up to `seq` (whose digest is `digest`) from `peers`, verify their
    /// certificates, apply them, then input [`Input::StateTransferred`].
    FetchState {
        seq: SeqNo,
        digest: Digest,
        peers: Vec<ReplicaId>,
    },
}
