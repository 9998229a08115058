//! What a replica must remember across a restart so that it never contradicts itself.
use borsh::{BorshDeserialize, BorshSerialize};

use crate::types::View;

/// A record the caller must store durably (fsync) before sending anything that follows it.
/// On restart the caller hands the records back, in order, to [`crate::Replica::new`].
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Durable {
    /// The replica entered (or started changing to) this view.
    View(View),
}
