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

mod message;
mod types;

pub use message::*;
pub use types::*;
mod durable;
mod io;
pub use durable::Durable;
pub use io::{Action, Input};
