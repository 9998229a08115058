//! The embedded cluster's network: each node's inbox, shared by reference counting (a
//! pre-prepare's batch is never copied). Every validator runs in this one process, so the
//! sender the endpoint names is the sender: nothing here needs a handshake.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, RwLock};

use pbft::ReplicaId;

use super::{InboundCredit, Transport, deliver};
use crate::runtime::Event;
use crate::wire::Frame;

#[derive(Default)]
struct Link {
    inbox: Option<SyncSender<Event>>,
    /// A disconnected node neither sends nor receives (used to take one down in tests).
    disconnected: AtomicBool,
}

/// Sees every frame the network carries: `(from, to, frame)`.
type Observer = Arc<dyn Fn(ReplicaId, ReplicaId, &Frame) + Send + Sync>;

/// In-process links between the validators of one embedded cluster.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    links: Arc<RwLock<Vec<Link>>>,
    observer: Arc<RwLock<Option<Observer>>>,
}

impl MemoryNetwork {
    pub fn new(n: usize) -> Self {
        let links = (0..n).map(|_| Link::default()).collect();
        Self {
            links: Arc::new(RwLock::new(links)),
            observer: Arc::default(),
        }
    }

    /// Calls `observer` with every frame delivered from now on, before it is delivered (tests
    /// check what a validator sends).
    pub fn observe(&self, observer: impl Fn(ReplicaId, ReplicaId, &Frame) + Send + Sync + 'static) {
        if let Ok(mut slot) = self.observer.write() {
            *slot = Some(Arc::new(observer));
        }
    }

    /// Connects node `id`'s inbox, replacing an earlier one (a restarted node).
    pub fn attach(&self, id: ReplicaId, inbox: SyncSender<Event>) {
        if let Ok(mut links) = self.links.write()
            && let Some(link) = links.get_mut(id as usize)
        {
            link.inbox = Some(inbox);
        }
    }

    /// Cuts node `id` off the network, or reconnects it.
    pub fn set_disconnected(&self, id: ReplicaId, disconnected: bool) {
        if let Ok(links) = self.links.read()
            && let Some(link) = links.get(id as usize)
        {
            link.disconnected.store(disconnected, Ordering::Relaxed);
        }
    }

    /// The sending side for node `from`.
    pub fn endpoint(&self, from: ReplicaId) -> MemoryEndpoint {
        MemoryEndpoint {
            network: self.clone(),
            from,
        }
    }
}

pub struct MemoryEndpoint {
    network: MemoryNetwork,
    from: ReplicaId,
}

impl Transport for MemoryEndpoint {
    fn send(&self, to: ReplicaId, frame: Frame) {
        let Ok(links) = self.network.links.read() else {
            return;
        };
        let cut = |id: ReplicaId| {
            links
                .get(id as usize)
                .is_none_or(|link| link.disconnected.load(Ordering::Relaxed))
        };
        if cut(self.from) || cut(to) {
            return;
        }
        if let Some(inbox) = links.get(to as usize).and_then(|link| link.inbox.as_ref()) {
            if let Ok(observer) = self.network.observer.read()
                && let Some(observer) = observer.as_ref()
            {
                observer(self.from, to, &frame);
            }
            deliver(inbox, self.from, frame, InboundCredit::default());
        }
    }
}
