//! The embedded cluster's network: each node's inbox, shared by reference counting (a
//! pre-prepare's batch is never copied). Every validator runs in this one process, so the
//! sender the endpoint names is the sender: nothing here needs a handshake.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, RwLock};

use pbft::ReplicaId;

use super::{InboundCredit, Transport, deliver};
use crate::keys::KeyInbox;
use crate::runtime::Event;
use crate::wire::Frame;

#[derive(Default)]
struct Link {
    inbox: Option<(SyncSender<Event>, KeyInbox)>,
    /// A disconnected node neither sends nor receives (used to take one down in tests).
    disconnected: AtomicBool,
}

/// Sees every frame the network carries: `(from, to, frame)`.
type Observer = Arc<dyn Fn(ReplicaId, ReplicaId, &Frame) + Send + Sync>;

/// Decides whether a frame is delivered: `(from, to, frame)`, true to deliver.
type Filter = Arc<dyn Fn(ReplicaId, ReplicaId, &Frame) -> bool + Send + Sync>;

/// In-process links between the validators of one embedded cluster.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    links: Arc<RwLock<Vec<Link>>>,
    observers: Arc<RwLock<Vec<Observer>>>,
    filter: Arc<RwLock<Option<Filter>>>,
}

impl MemoryNetwork {
    pub fn new(n: usize) -> Self {
        let links = (0..n).map(|_| Link::default()).collect();
        Self {
            links: Arc::new(RwLock::new(links)),
            observers: Arc::default(),
            filter: Arc::default(),
        }
    }

    /// Delivers from now on only the frames `filter` lets through (tests withhold what a
    /// validator sends, as a dishonest one would); [`MemoryNetwork::clear_filter`] ends it.
    pub fn filter(
        &self,
        filter: impl Fn(ReplicaId, ReplicaId, &Frame) -> bool + Send + Sync + 'static,
    ) {
        if let Ok(mut slot) = self.filter.write() {
            *slot = Some(Arc::new(filter));
        }
    }

    pub fn clear_filter(&self) {
        if let Ok(mut slot) = self.filter.write() {
            *slot = None;
        }
    }

    /// Delivers `frame` to `to` as if validator `from` had sent it, past the filter and
    /// whether `from` runs or not: a test playing a dishonest `from`. Whether it was taken.
    pub fn inject(&self, from: ReplicaId, to: ReplicaId, frame: Frame) -> bool {
        let Ok(links) = self.links.read() else {
            return false;
        };
        match links.get(to as usize).and_then(|link| link.inbox.as_ref()) {
            Some((inbox, keys)) => deliver(
                inbox,
                keys,
                from,
                frame,
                InboundCredit::default(),
                std::time::Instant::now(),
            ),
            None => false,
        }
    }

    /// Calls `observer` with every frame delivered from now on, before it is delivered (tests
    /// check what a validator sends), besides the observers given before.
    pub fn observe(&self, observer: impl Fn(ReplicaId, ReplicaId, &Frame) + Send + Sync + 'static) {
        if let Ok(mut observers) = self.observers.write() {
            observers.push(Arc::new(observer));
        }
    }

    /// Connects node `id`'s inboxes (its runtime's and its key service's), replacing earlier
    /// ones (a restarted node).
    pub fn attach(&self, id: ReplicaId, inbox: SyncSender<Event>, keys: KeyInbox) {
        if let Ok(mut links) = self.links.write()
            && let Some(link) = links.get_mut(id as usize)
        {
            link.inbox = Some((inbox, keys));
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
        if let Ok(filter) = self.network.filter.read()
            && let Some(filter) = filter.as_ref()
            && !filter(self.from, to, &frame)
        {
            return;
        }
        if let Some((inbox, keys)) = links.get(to as usize).and_then(|link| link.inbox.as_ref()) {
            if let Ok(observers) = self.network.observers.read() {
                for observer in observers.iter() {
                    observer(self.from, to, &frame);
                }
            }
            deliver(
                inbox,
                keys,
                self.from,
                frame,
                InboundCredit::default(),
                std::time::Instant::now(),
            );
        }
    }
}
