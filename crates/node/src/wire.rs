//! What validators say to each other. Consensus messages are signed by their sender; blocks
//! carry their own commit certificates; everything else is a hint that cannot do harm if forged.

use std::sync::Arc;

use borsh::{BorshDeserialize, BorshSerialize};
use pbft::{Message, ReplicaId, Signed};

#[derive(Clone, Debug, BorshSerialize, BorshDeserialize)]
pub enum Wire {
    Consensus(Signed<Message>),
    /// Asks for committed blocks from `from_height` on, at most `limit` of them.
    FetchBlocks {
        from_height: u64,
        limit: u32,
    },
    /// Committed blocks, consecutive, each with its certificate (answer to `FetchBlocks`).
    Blocks(Vec<ledger::Block>),
    /// Heartbeat with the sender's head, so that a validator that was away notices it is behind.
    Status {
        height: u64,
        hash: [u8; 32],
    },
    /// Asks the primary to propose what is pending now (the seed's `/api/validate`).
    Cut,
}

/// A frame between validators. `from` is authenticated only inside `Wire::Consensus`; for the
/// other kinds it only says whom to answer.
#[derive(Clone, Debug, BorshSerialize, BorshDeserialize)]
pub struct Envelope {
    pub from: ReplicaId,
    pub wire: Wire,
}

pub type Frame = Arc<Envelope>;
