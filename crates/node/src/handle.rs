//! The handle through which the application talks to one validator, the same for an embedded
//! node and a distributed one.

use std::path::PathBuf;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use ledger::{Genesis, Hash, Reader, Transaction};
use pbft::ReplicaId;
use tokio::sync::oneshot;

use crate::error::NodeError;
use crate::runtime::{CutOutcome, Event};
use crate::status::{NodeStatus, Shared};

/// Where a transaction stands, as the validator that accepted it sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxStatus {
    Pending,
    Committed { height: u64 },
    Unknown,
}

struct Inner {
    id: ReplicaId,
    name: String,
    inbox: SyncSender<Event>,
    shared: Arc<Shared>,
    genesis: Arc<Genesis>,
    chain_path: PathBuf,
    /// Idle read-only connections to chain.db, reused across requests.
    readers: Mutex<Vec<Reader>>,
}

#[derive(Clone)]
pub struct NodeHandle {
    inner: Arc<Inner>,
}

impl NodeHandle {
    pub(crate) fn new(
        id: ReplicaId,
        name: String,
        inbox: SyncSender<Event>,
        shared: Arc<Shared>,
        genesis: Arc<Genesis>,
        chain_path: PathBuf,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                id,
                name,
                inbox,
                shared,
                genesis,
                chain_path,
                readers: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn id(&self) -> ReplicaId {
        self.inner.id
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn genesis(&self) -> &Genesis {
        &self.inner.genesis
    }

    fn send(&self, event: Event) -> Result<(), NodeError> {
        match self.inner.inbox.try_send(event) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(NodeError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(NodeError::Stopped),
        }
    }

    /// Submits a transaction. Returns its id once it is durably stored at this validator: from
    /// then on it will be committed exactly once, whatever crashes in between.
    pub async fn submit(&self, transaction: Transaction) -> Result<Hash, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.send(Event::Submit { transaction, reply })?;
        answer.await.map_err(|_| NodeError::Stopped)?
    }

    /// Asks for a block now and waits until everything pending here when asked is committed.
    pub async fn cut(&self) -> Result<CutOutcome, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.send(Event::Cut { reply })?;
        answer.await.map_err(|_| NodeError::Stopped)?
    }

    pub fn status(&self) -> NodeStatus {
        self.inner.shared.status()
    }

    /// Metrics, peers' last contact and latency percentiles.
    pub fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Runs `query` on a read-only connection to this validator's chain.
    pub fn read<T>(
        &self,
        query: impl FnOnce(&Reader) -> Result<T, ledger::Error>,
    ) -> Result<T, NodeError> {
        let pooled = self
            .inner
            .readers
            .lock()
            .ok()
            .and_then(|mut idle| idle.pop());
        let reader = match pooled {
            Some(reader) => reader,
            None => Reader::open(&self.inner.chain_path)?,
        };
        let result = query(&reader);
        if let Ok(mut idle) = self.inner.readers.lock() {
            idle.push(reader);
        }
        Ok(result?)
    }

    pub fn tx_status(&self, id: &Hash) -> Result<TxStatus, NodeError> {
        if let Some(height) = self.read(|reader| reader.transaction_height(id))? {
            return Ok(TxStatus::Committed { height });
        }
        if self.inner.shared.is_pending(id) {
            return Ok(TxStatus::Pending);
        }
        Ok(TxStatus::Unknown)
    }

    /// Stops the validator's thread after the current turn.
    pub fn shutdown(&self) {
        let _ = self.inner.inbox.try_send(Event::Shutdown);
    }
}
