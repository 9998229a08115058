//! The handle through which the application talks to one validator, the same for an embedded
//! node and a distributed one.
//!
//! Transactions come signed (by a person's key, or by this validator's with
//! [`NodeHandle::sign_as_validator`]); the handle checks each as every validator's edge will
//! ([`crate::verify::check_submission`], its signatures batched with others submitted
//! meanwhile) and runs mempool admission on the committed chain ([`crate::admission`]) in the
//! submitter's thread, then hands it to the validator's thread, which stores it durably before
//! answering.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

use ledger::crypto::SigningKey;
use ledger::pool::Pool;
use ledger::rules::reason;
use ledger::{Genesis, Hash, PersonId, Queries, Reader, SignedTx, Signer, TxHeader, TxId};
use pbft::ReplicaId;
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::error::NodeError;
use crate::keys::{
    KeyInbox, KeyStatus, LocalQuery, Lookup, LookupItem, OpenRequest, OpenState, Opened,
    PatientKeys, SealRequest,
};
use crate::runtime::{CutOutcome, Event, Submission};
use crate::status::{NodeStatus, Shared};

/// Where a transaction stands, as the validator that accepted it sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxStatus {
    Pending,
    Committed { height: u64 },
    Unknown,
}

/// What the chain decided for a transaction, once the block holding it is applied at this
/// validator (appended to its `chain.db`, fsynced, its effects visible to
/// [`NodeHandle::read`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The rules applied it in the block at `height`, whose time is `block_time_ms`.
    Applied { height: u64, block_time_ms: u64 },
    /// It is in the block at `height`, rejected by a rule (or by the edge check, if more than
    /// f validators let an invalid entry through) for `reason`; it changed nothing else.
    Rejected { height: u64, reason: String },
}

/// The verdict on chain for the first entry with id `id`, if there is one.
pub(crate) fn verdict_on_chain(
    chain: &impl Queries,
    id: &TxId,
) -> Result<Option<Verdict>, ledger::Error> {
    let ledger::TxStatus::Committed {
        height, rejected, ..
    } = chain.tx_status(id)?
    else {
        return Ok(None);
    };
    Ok(Some(match rejected {
        Some(reason) => Verdict::Rejected { height, reason },
        None => {
            let block_time_ms = chain
                .blocks_page(Some(height + 1), 1)?
                .first()
                .map_or(0, |block| block.timestamp_ms);
            Verdict::Applied {
                height,
                block_time_ms,
            }
        }
    }))
}

/// The most read-only connections to `chain.db` a validator's handle opens: enough for two
/// cores, and a bound on their memory whatever the number of clients (a caller beyond it waits
/// for a connection to be given back).
pub const MAX_CHAIN_READERS: usize = 8;

/// How often [`NodeHandle::caught_up`] looks at the status again.
const CAUGHT_UP_POLL: Duration = Duration::from_millis(20);

struct Inner {
    id: ReplicaId,
    name: String,
    /// This validator's genesis key (`node.key`), for the transactions it signs itself.
    key: SigningKey,
    inbox: SyncSender<Event>,
    shared: Arc<Shared>,
    genesis: Arc<Genesis>,
    chain_path: PathBuf,
    /// The validator's clock: admission judges the rules at its `now`.
    clock: Clock,
    /// Read-only connections to chain.db, reused across requests: at most
    /// [`MAX_CHAIN_READERS`], however many requests read at once (each holds a page cache).
    readers: Pool<Reader>,
    /// The key service: seals, opens, its status.
    keys: KeyInbox,
    /// The signature checks of submissions, batched.
    edge: crate::verify::EdgeChecks,
}

#[derive(Clone)]
pub struct NodeHandle {
    inner: Arc<Inner>,
}

impl NodeHandle {
    // Called once, by `Node::start`, with what the handle shares with the runtime.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: ReplicaId,
        name: String,
        key: SigningKey,
        inbox: SyncSender<Event>,
        shared: Arc<Shared>,
        genesis: Arc<Genesis>,
        chain_path: PathBuf,
        clock: Clock,
        keys: KeyInbox,
        edge: crate::verify::EdgeChecks,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                id,
                name,
                key,
                inbox,
                shared,
                genesis,
                chain_path,
                clock,
                readers: Pool::new(MAX_CHAIN_READERS),
                keys,
                edge,
            }),
        }
    }

    /// This validator's index in the genesis.
    pub fn id(&self) -> ReplicaId {
        self.inner.id
    }

    /// The time by this validator's clock, which its admission and its blocks go by.
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn genesis(&self) -> &Genesis {
        &self.inner.genesis
    }

    /// The chain's identity: what every signature of this chain covers.
    pub fn genesis_hash(&self) -> Hash {
        self.inner.genesis.hash()
    }

    /// Signs `header` with `body` as this validator (its genesis key, `node.key`): the
    /// hospital's own statements (an enrollment, an ask, a recovery, "I served this read").
    /// The header's signer is set to `Signer::Validator` with this validator's index and its
    /// `body_hash` to the body's hash; everything else is signed as given.
    pub fn sign_as_validator(&self, mut header: TxHeader, body: Vec<u8>) -> SignedTx {
        header.signer = Signer::Validator {
            index: self.inner.id,
        };
        SignedTx::sign(header, body, &self.genesis_hash(), &self.inner.key)
    }

    fn send(&self, event: Event) -> Result<(), NodeError> {
        match self.inner.inbox.try_send(event) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(NodeError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(NodeError::Stopped),
        }
    }

    /// Submits a signed transaction, in three steps, unless this validator turns new
    /// submissions away ([`Shared::turning_away`]: it is behind), which refuses one not pending
    /// here as [`NodeError::Busy`] before any check:
    /// 1. the edge check every validator makes (a failure is [`NodeError::Invalid`]; too large
    ///    a transaction or body, [`NodeError::TooLarge`]);
    /// 2. mempool admission: an id already pending here is accepted again as it is (it is
    ///    durable already); an id on chain, or a transaction a rule rejects at `T = now` on
    ///    this validator's committed chain, is refused with the rule's reason
    ///    ([`NodeError::Refused`]); nothing is stored then;
    /// 3. durable at this validator: `Ok(id)` is answered once the transaction is written in
    ///    this validator's `node.db` and fsynced. From then on this validator hands it to
    ///    consensus, broadcasts it again to every validator while its block is slow to come,
    ///    and resubmits it when it restarts, until a block holding its id is on its chain:
    ///    unless this validator's disk is lost, the transaction is ordered exactly once (a
    ///    later entry under the same id is rejected as a duplicate). Durable is not applied:
    ///    the rules decide again at its place in the chain, on a state admission did not see,
    ///    and may reject it there ([`NodeHandle::submit_applied`] waits for that verdict).
    pub async fn submit(&self, transaction: SignedTx) -> Result<TxId, NodeError> {
        // A validator turning new submissions away refuses before it checks anything (one
        // already pending here is answered as ever).
        let shared = &self.inner.shared;
        if shared.turning_away() && !shared.is_pending(&transaction.id(&self.genesis_hash())) {
            return Err(NodeError::Busy);
        }
        let (request, decoded) =
            crate::verify::check_submission(&self.inner.edge, self.genesis(), &transaction).await?;
        let id = request.id;
        if !self.inner.shared.is_pending(&id) {
            let admitted = self.read(|reader| {
                crate::admission::admit(
                    &reader.state(),
                    self.genesis(),
                    &decoded,
                    self.inner.clock.now_ms(),
                )
            })?;
            if let Err(reject) = admitted {
                return Err(NodeError::Refused(reject.0.to_string()));
            }
        }
        let (reply, answer) = oneshot::channel();
        self.send(Event::Submit(Box::new(Submission {
            request,
            transaction: decoded,
            reply,
        })))?;
        answer.await.map_err(|_| NodeError::Stopped)?
    }

    /// Submits a transaction ([`NodeHandle::submit`]), asks the primary for a block at once,
    /// and waits (at most `timeout`) until the block holding it is applied at this validator:
    /// the chain's [`Verdict`]. A transaction already on chain is answered with its verdict
    /// there. [`NodeError::Timeout`] leaves the transaction durable and pending: it may still
    /// be applied later ([`NodeHandle::wait_applied`], [`NodeHandle::tx_status`]).
    pub async fn submit_applied(
        &self,
        transaction: SignedTx,
        timeout: Duration,
    ) -> Result<Verdict, NodeError> {
        let id = transaction.id(&self.genesis_hash());
        match self.submit(transaction).await {
            Ok(_) => {}
            // On chain already: its verdict there.
            Err(NodeError::Refused(why)) if why == reason::DUPLICATE => {}
            Err(error) => return Err(error),
        }
        self.watch(id, true, timeout).await
    }

    /// Waits (at most `timeout`) until a block holding transaction `id` is applied at this
    /// validator, and answers the chain's verdict (at once if it is on chain already). It asks
    /// for no block: the batch window, or another's cut, brings it.
    pub async fn wait_applied(&self, id: TxId, timeout: Duration) -> Result<Verdict, NodeError> {
        self.watch(id, false, timeout).await
    }

    async fn watch(&self, id: TxId, cut: bool, timeout: Duration) -> Result<Verdict, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.send(Event::Watch { id, cut, reply })?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(_)) => Err(NodeError::Stopped),
            Err(_) => Err(NodeError::Timeout("the transaction's block")),
        }
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

    /// Runs `query` on a read-only connection to this validator's chain, in one read
    /// transaction ([`Queries::snapshot`]): everything it reads comes from one state.
    pub fn read<T>(
        &self,
        query: impl FnOnce(&Reader) -> Result<T, ledger::Error>,
    ) -> Result<T, NodeError> {
        let result = self.inner.readers.with(
            || Reader::open(&self.inner.chain_path),
            |reader| reader.snapshot(query),
        )?;
        Ok(result?)
    }

    /// The most read-only connections to chain.db that this handle had open at once (never
    /// more than [`MAX_CHAIN_READERS`]).
    pub fn chain_readers_peak(&self) -> usize {
        self.inner.readers.peak_open()
    }

    /// Runs a long `query` (a whole chain's verification) on a connection of its own, closed
    /// after: one of the pool's would be held for the whole run, and a few such runs at once
    /// would leave none for the short reads of every request.
    pub fn read_apart<T>(
        &self,
        query: impl FnOnce(&Reader) -> Result<T, ledger::Error>,
    ) -> Result<T, NodeError> {
        let reader = Reader::open(&self.inner.chain_path)?;
        Ok(query(&reader)?)
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

    /// Seals `content` (borsh of a record or purpose) for `header`, whose every field but
    /// `body_hash` is final, the signer included (docs/SECURITY.md §1.1): draws the data key,
    /// encrypts, and stores the key in this validator's key store, durably (fsync; the rows of
    /// concurrent calls share one commit), before it returns the header with its `body_hash`
    /// and the stored body (§5.5). Only then may the transaction be signed and submitted: a
    /// transaction that commits always has its key at its sealer. [`NodeError::Busy`] while
    /// this validator turns new submissions away ([`Shared::turning_away`]): its transaction
    /// would be refused, and its key kept for nothing until its `not_after_ms`.
    pub async fn seal(
        &self,
        mut header: TxHeader,
        content: &[u8],
    ) -> Result<(TxHeader, Vec<u8>), NodeError> {
        if self.inner.shared.turning_away() {
            return Err(NodeError::Busy);
        }
        if !ledger::seal::is_sealed_kind(&header.meta) {
            return Err(NodeError::Seal(format!(
                "a {} carries no content",
                header.meta.kind()
            )));
        }
        let Some(patient) = header.meta.subject().copied() else {
            return Err(NodeError::Seal(format!(
                "a {} names no patient",
                header.meta.kind()
            )));
        };
        let (key, stored) = ledger::seal::seal(&self.genesis_hash(), &mut header, content)
            .map_err(|error| NodeError::Seal(error.to_string()))?;
        let (reply, stored_key) = oneshot::channel();
        self.inner.keys.seal(SealRequest {
            tx: header.id(&self.genesis_hash()),
            patient,
            not_after_ms: header.not_after_ms,
            key,
            reply,
        })?;
        stored_key.await.map_err(|_| NodeError::Stopped)??;
        Ok((header, stored))
    }

    /// Opens sealed transactions read from the chain snapshot at `at_height` (§6.1, §16.19):
    /// waits until the key service has processed that height (so every erasure committed
    /// before it is applied here), at most [`crate::keys::OPEN_WAIT`], else
    /// [`NodeError::KeysCatchingUp`]; then answers each transaction's state (§6.2), in order,
    /// with its content when it opens. The bodies are opened in the caller's thread.
    pub async fn open(
        &self,
        at_height: u64,
        sealed: &[(TxHeader, Vec<u8>)],
    ) -> Result<Vec<Opened>, NodeError> {
        let genesis_hash = self.genesis_hash();
        let items = sealed
            .iter()
            .map(|(header, stored)| LookupItem {
                tx: header.id(&genesis_hash),
                header: header.clone(),
                key_commit: ledger::seal::key_commitment(stored).ok(),
            })
            .collect::<Vec<_>>();
        let ids: Vec<TxId> = items.iter().map(|item| item.tx).collect();
        let (reply, answer) = oneshot::channel();
        self.inner.keys.open(OpenRequest {
            at_height,
            items,
            reply,
        })?;
        let lookups =
            match tokio::time::timeout(crate::keys::OPEN_WAIT + Duration::from_secs(1), answer)
                .await
            {
                Ok(Ok(lookups)) => lookups?,
                Ok(Err(_)) => return Err(NodeError::Stopped),
                Err(_) => return Err(NodeError::KeysCatchingUp),
            };
        Ok(sealed
            .iter()
            .zip(ids)
            .zip(lookups)
            .map(|(((header, stored), tx), lookup)| match lookup {
                Lookup::Held { key, sealer } => {
                    match ledger::seal::open(&genesis_hash, header, stored, &key) {
                        Ok(plain) => Opened {
                            tx,
                            state: OpenState::Open,
                            plain: Some(plain),
                        },
                        Err(_) => Opened {
                            tx,
                            state: OpenState::Broken { sealer },
                            plain: None,
                        },
                    }
                }
                Lookup::State(state) => Opened {
                    tx,
                    state,
                    plain: None,
                },
            })
            .collect())
    }

    /// Waits (at most `timeout`) until this validator is not behind the chain
    /// ([`NodeStatus::behind`]: it has applied the head f+1 peers claimed lately, and neither
    /// recovers nor lies below a reported checkpoint), and answers the height it has applied
    /// then: a snapshot read after this holds every block committed a few seconds before the
    /// call, hence every erasure (docs/SECURITY.md, issue 10, §16.25). Still behind at the
    /// deadline: [`NodeError::Behind`].
    pub async fn caught_up(&self, timeout: Duration) -> Result<u64, NodeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.status();
            if !status.behind(status.height) {
                return Ok(status.height);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::Behind);
            }
            tokio::time::sleep(CAUGHT_UP_POLL).await;
        }
    }

    /// Writes a consistent copy of this validator's key store to `dest`, a new file, while it
    /// runs (`medchain backup --keys`, docs/SECURITY.md §5.6): still sealed under the operator
    /// key, readable by its owner only, without the freed pages of erased keys.
    pub async fn backup_keys(&self, dest: &std::path::Path) -> Result<(), NodeError> {
        let (reply, done) = oneshot::channel();
        self.inner.keys.query(LocalQuery::Backup {
            dest: dest.to_path_buf(),
            reply,
        })?;
        done.await.map_err(|_| NodeError::Stopped)?
    }

    /// How the keys of `patient`'s records stand at this validator (docs/SECURITY.md §13: a
    /// read grant's key status): how many it holds, how many it waits for, from whom and since
    /// when. Counted from the key service's memory; nothing is opened.
    pub async fn patient_keys(&self, patient: &PersonId) -> Result<PatientKeys, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.inner.keys.query(LocalQuery::PatientKeys {
            patient: *patient,
            reply,
        })?;
        answer.await.map_err(|_| NodeError::Stopped)
    }

    /// The key service's processed height, waiting keys and counters.
    pub fn key_status(&self) -> KeyStatus {
        self.inner.keys.status()
    }

    /// Stops the validator's thread after the current turn.
    pub fn shutdown(&self) {
        let _ = self.inner.inbox.try_send(Event::Shutdown);
    }
}
