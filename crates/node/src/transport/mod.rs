//! Moving frames between validators: in memory for the embedded cluster, TCP between processes.
//! Sending never blocks the replica's thread; a full queue drops the frame, which PBFT
//! tolerates (it is a lossy network to the protocol).

mod memory;
mod tcp;

use std::sync::mpsc::{SyncSender, TrySendError};

pub use memory::MemoryNetwork;
use pbft::ReplicaId;
pub use tcp::TcpTransport;

use crate::runtime::Event;
use crate::wire::Frame;

pub trait Transport: Send + Sync + 'static {
    /// Queues `frame` for `to`; drops it when that peer's queue is full or it is unreachable.
    fn send(&self, to: ReplicaId, frame: Frame);
}

/// Hands an arrived frame to a node's inbox; drops it when the inbox is full.
pub(crate) fn deliver(inbox: &SyncSender<Event>, frame: Frame) -> bool {
    match inbox.try_send(Event::Network(frame)) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
    }
}
