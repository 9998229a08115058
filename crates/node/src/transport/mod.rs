//! Moving frames between validators: in memory for the embedded cluster, over an authenticated
//! and encrypted channel on TCP between processes (`channel`, `tcp`).
//! Sending never blocks the replica's thread; a full queue drops the frame, which PBFT
//! tolerates (it is a lossy network to the protocol).
//!
//! Every frame reaches the runtime with the validator it came from, as the transport knows it:
//! the authenticated peer of the TCP channel, or the sending endpoint in memory.

pub(crate) mod channel;
mod memory;
mod tcp;

use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};

pub use channel::{Channel, HANDSHAKE_TIMEOUT};
use ledger::Hash;
use ledger::crypto::{SigningKey, VerifyingKey};
pub use memory::MemoryNetwork;
use pbft::ReplicaId;
pub use tcp::TcpTransport;
use tokio::sync::OwnedSemaphorePermit;

use crate::keys::KeyInbox;
use crate::runtime::Event;
use crate::wire::{Frame, FrameLimits, Wire};

pub trait Transport: Send + Sync + 'static {
    /// Queues `frame` for `to`; drops it when that peer's queue is full or it is unreachable.
    fn send(&self, to: ReplicaId, frame: Frame);

    /// Queues `frame` for every peer in `to`.
    fn broadcast(&self, to: &[ReplicaId], frame: Frame) {
        for peer in to {
            self.send(*peer, frame.clone());
        }
    }
}

/// Counts what a validator's code sends (runtime and key service alike) in its telemetry,
/// then hands it to the transport that carries it.
pub(crate) struct Counted {
    pub inner: Box<dyn Transport>,
    pub shared: Arc<crate::status::Shared>,
}

impl Transport for Counted {
    fn send(&self, to: ReplicaId, frame: Frame) {
        self.shared.telemetry().sent(&frame, 1);
        self.inner.send(to, frame);
    }

    fn broadcast(&self, to: &[ReplicaId], frame: Frame) {
        self.shared.telemetry().sent(&frame, to.len() as u64);
        self.inner.broadcast(to, frame);
    }
}

/// Who this validator is to the others, and who they are: what the channel's handshake proves
/// and checks (every key comes from the genesis file).
#[derive(Clone)]
pub struct ValidatorIdentity {
    pub id: ReplicaId,
    pub key: SigningKey,
    pub genesis_hash: Hash,
    /// Every validator's key, by replica id.
    pub validators: Arc<[VerifyingKey]>,
}

#[cfg(test)]
impl ValidatorIdentity {
    /// The identities of `n` validators with fresh keys, of one made-up genesis.
    pub(crate) fn for_tests(n: usize) -> Vec<ValidatorIdentity> {
        let keys: Vec<_> = (0..n).map(|_| ledger::crypto::generate_key()).collect();
        let validators: Arc<[_]> = keys.iter().map(|key| key.verifying_key()).collect();
        keys.into_iter()
            .enumerate()
            .map(|(id, key)| ValidatorIdentity {
                id: id as ReplicaId,
                key,
                genesis_hash: [9; 32],
                validators: validators.clone(),
            })
            .collect()
    }
}

/// What `Node::start` gives the transport it builds.
pub struct Wiring {
    /// Where frames for this validator go.
    pub inbox: SyncSender<Event>,
    /// Where its key frames go: the key service's inbox, not the runtime's.
    pub keys: KeyInbox,
    pub identity: ValidatorIdentity,
    /// How large each kind of frame from a peer may be.
    pub limits: FrameLimits,
}

/// Holds a share of one peer's inbound budget while its frame waits in the inbox; dropping the
/// event returns it, so a peer that sends faster than the validator handles has its connection
/// paused instead of filling memory.
#[derive(Default)]
pub struct InboundCredit {
    _permit: Option<OwnedSemaphorePermit>,
}

impl InboundCredit {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        Self {
            _permit: Some(permit),
        }
    }
}

/// Hands an arrived frame to a node's inbox (a key frame to its key service's), holding the
/// frame's share of its sender's budget until it is handled; drops it when the inbox is full.
/// `received`: when it came off the wire, before it waited for that budget (the validator's
/// own backlog, not the sender's delay: red team s60 F2).
pub(crate) fn deliver(
    inbox: &SyncSender<Event>,
    keys: &KeyInbox,
    from: ReplicaId,
    frame: Frame,
    credit: InboundCredit,
    received: std::time::Instant,
) -> bool {
    if let Wire::Keys(_) = &*frame {
        return keys.deliver(from, frame, credit);
    }
    match inbox.try_send(Event::Network {
        from,
        frame,
        credit,
        received,
    }) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
    }
}
