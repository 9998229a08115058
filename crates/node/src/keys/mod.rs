//! The key service (docs/SECURITY.md, "Confidential records", §3.2 and §5): each validator keeps
//! the data keys of the sealed transactions it is entitled to in its own key store
//! (`keys.db`), outside the chain, and pulls the ones it lacks from the validators that hold
//! them, over the validators' authenticated, encrypted channel.
//!
//! The service runs on its own thread and owns the only connection to `keys.db`. Its inputs:
//! applied blocks from the runtime (in height order, through a bounded queue; missed ones are
//! read from `chain.db`), key frames from peers (routed here by the transport), seals and opens
//! from the application (through [`crate::NodeHandle`], served before any peer), and a timer.

#[cfg(feature = "byzantine")]
mod byzantine;
mod checked;
mod exchange;
mod feed;
mod index;
mod pending;
#[cfg(test)]
mod red_team_s66;
mod runs;
mod store;
mod wanted;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ledger::entitled::{AppliedBlock, AppliedEntry, EntryVerdict, Parties};
use ledger::seal::DataKey;
use ledger::{
    Applied, Block, Checked, Genesis, Hash, PersonId, PublicKey, Queries, Reader, TxHeader, TxId,
};
use pbft::ReplicaId;
use tokio::sync::oneshot;
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::error::NodeError;
use crate::status::Shared;
use crate::transport::{InboundCredit, Transport};
use crate::wire::{Frame, KeyFrame, Wire};
use exchange::Exchange;
use index::{HeldTx, Index, OnChain};
pub use store::KeyStoreFacts;
use store::{Durability, Facts, KeyStore, Tag};
use wanted::{Wanted, WantedKeys};

/// The 32-byte key that seals the rows of `keys.db` at rest, derived from the operator key
/// (§3.3). Never printed, zeroed when dropped.
#[derive(Clone)]
pub struct KeystoreKey(Zeroizing<[u8; 32]>);

impl KeystoreKey {
    pub fn new(bytes: Zeroizing<[u8; 32]>) -> Self {
        KeystoreKey(bytes)
    }

    /// A fresh random key (tests, and embedded clusters that do not outlive their process).
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        KeystoreKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl From<Zeroizing<[u8; 32]>> for KeystoreKey {
    fn from(bytes: Zeroizing<[u8; 32]>) -> Self {
        KeystoreKey(bytes)
    }
}

impl std::fmt::Debug for KeystoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeystoreKey(..)")
    }
}

/// How one sealed transaction stands at this validator (§6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenState {
    /// This validator holds the key and the body opened: [`Opened::plain`] holds the content.
    Open,
    /// An accepted erasure removed its key.
    Erased,
    /// This validator is entitled to the key and waits for it from validator `from`, since
    /// `since_ms` (0: not asked yet).
    Waiting { from: u32, since_ms: u64 },
    /// This validator is not entitled: the patient's home, `home`, can open it.
    Elsewhere { home: u32 },
    /// The key does not match the body's commitment, the body does not open under its key, or
    /// its key also sealed an earlier transaction (§16.13): its sealer, `sealer`, sealed it
    /// wrongly.
    Broken { sealer: u32 },
}

/// One sealed transaction as [`crate::NodeHandle::open`] answers it.
pub struct Opened {
    pub tx: TxId,
    pub state: OpenState,
    /// The content (borsh of a record or purpose) when [`OpenState::Open`].
    pub plain: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("tx", &ledger::short_hex(&self.tx))
            .field("state", &self.state)
            .field("plain_bytes", &self.plain.as_ref().map(|p| p.len()))
            .finish()
    }
}

/// What the key service counts, since start (shown on `/api/metrics`, never `/api/status`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyCounters {
    /// Keys received from peers and stored.
    pub keys_received: u64,
    /// Keys sent to peers.
    pub keys_served: u64,
    /// Keys from peers that did not match their body's commitment: dropped.
    pub keys_refused_wrong: u64,
    /// Keys from peers that also sealed an earlier transaction (§16.13): never stored.
    pub keys_refused_reused: u64,
    /// Keys from peers this validator is not (or no longer) entitled to: dropped.
    pub keys_refused_unentitled: u64,
    /// Peer requests dropped: more than 4 queued from one peer, or malformed (no id, or more
    /// than 1,024).
    pub keys_requests_dropped: u64,
    /// Asked ids answered `Busy` (above the peer's rate, or while catching up).
    pub keys_requests_busy: u64,
    /// Of those, the ids answered `Busy` because this validator was catching up (§5.6).
    pub keys_requests_busy_behind: u64,
    /// Asked ids answered `NotEntitled`.
    pub keys_requests_not_entitled: u64,
    /// Asked ids answered `NotHeld`: no key held for them here (told from memory, §5.3).
    pub keys_requests_not_held: u64,
    /// Asked ids answered `Fetching`: not held here, but wanted (§5.3).
    pub keys_requests_fetching: u64,
    /// Asked ids the in-memory index found held for an entitled asker, whose keys were read
    /// to be sent (§5.3, §12.1); every other id is answered from memory alone.
    pub keys_requests_checked: u64,
    /// Answers to no open request of this validator: dropped unread.
    pub keys_answers_dropped: u64,
    /// Answers taken after their requests timed out (a holder slower than 5 s).
    pub keys_answers_late: u64,
    /// `keys.db` rows whose facts failed their tag when the index was loaded (the file was
    /// changed without the operator key, or damaged): not trusted, their transactions looked up
    /// on the chain (docs/SECURITY.md §12.1 item 6). Counted at each load (a start, and again
    /// when a chain that was behind the store catches up, for a row still not on chain).
    pub keys_rows_refused: u64,
    /// `keys.db` rows checked against their tag by the check after a start
    /// (`Service::check_rows`): none after a clean stop that had checked every row, and left
    /// the file as the next start finds it (§12.1 item 8).
    pub keys_rows_checked: u64,
}

impl KeyCounters {
    /// Adds `other`'s counts to these (a sum over validators).
    pub fn add(&mut self, other: &KeyCounters) {
        self.keys_received += other.keys_received;
        self.keys_served += other.keys_served;
        self.keys_refused_wrong += other.keys_refused_wrong;
        self.keys_refused_reused += other.keys_refused_reused;
        self.keys_refused_unentitled += other.keys_refused_unentitled;
        self.keys_requests_dropped += other.keys_requests_dropped;
        self.keys_requests_busy += other.keys_requests_busy;
        self.keys_requests_busy_behind += other.keys_requests_busy_behind;
        self.keys_requests_not_entitled += other.keys_requests_not_entitled;
        self.keys_requests_not_held += other.keys_requests_not_held;
        self.keys_requests_fetching += other.keys_requests_fetching;
        self.keys_requests_checked += other.keys_requests_checked;
        self.keys_answers_dropped += other.keys_answers_dropped;
        self.keys_answers_late += other.keys_answers_late;
        self.keys_rows_refused += other.keys_rows_refused;
        self.keys_rows_checked += other.keys_rows_checked;
    }
}

/// The key service's state, for the application and the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyStatus {
    /// Every applied block up to here has been processed (§5.4).
    pub processed_height: u64,
    /// The processed height `keys.db` held when this start began: a restart resumes from it.
    pub resumed_from: u64,
    /// Keys this validator is entitled to and waits for (wanted, in memory).
    pub waiting: u64,
    /// Keys held (`data_keys` rows, pending seals included).
    pub held: u64,
    pub counters: KeyCounters,
}

/// Applied blocks queued for the service; beyond, it is marked behind and reads the blocks it
/// missed from `chain.db`.
const FEED_BLOCKS: usize = 256;
/// Untrusted unplaced rows a start looks up in one read transaction of `chain.db`
/// ([`Service::load`]): the headers of their transactions are held in memory together (a few
/// hundred bytes each).
#[cfg(not(test))]
const UNPLACED_PER_SNAPSHOT: usize = 1_024;
/// Small in unit tests, so that a start reads several chunks.
#[cfg(test)]
const UNPLACED_PER_SNAPSHOT: usize = 2;
/// Seals and opens queued at most; beyond, the application is told the validator is busy.
const LOCAL_REQUESTS: usize = 65_536;
/// Key requests from one peer queued at most (§5.3); more are dropped and counted.
pub(crate) const PEER_REQUESTS_QUEUED: usize = 4;
/// How long `open` waits for the key service to reach the height it needs (§6.1).
pub const OPEN_WAIT: Duration = Duration::from_secs(10);
/// The service's timer: retries, and grants ended by the clock (§5.1).
const TIMER: Duration = Duration::from_millis(250);
/// The time a timer gives to checking rows' facts after a start ([`Service::check_rows`]).
const CHECK_BUDGET: Duration = Duration::from_millis(25);
/// Facts relearned while the chain is behind held at most ([`Service::write_relearned`]).
const RELEARNED_WAITING_MAX: usize = 65_536;

/// A seal's key, to be stored durably before the seal returns.
pub(crate) struct SealRequest {
    pub tx: TxId,
    pub patient: PersonId,
    pub not_after_ms: u64,
    pub key: DataKey,
    pub reply: oneshot::Sender<Result<(), NodeError>>,
}

/// A data key sealed with no key service running ([`crate::load::Person::sealed_offline`]):
/// the bench's ceiling and prefill make their blocks while the validators are stopped.
pub(crate) struct OfflineSeal {
    /// The validators that keep it: those entitled to it other than as grantees
    /// ([`ledger::entitled::Parties`]), the sealer's home first. The load's grants are write
    /// grants, so the parties of its records and grants are a patient's home and a doctor's
    /// (the same validator twice when they share one). Kept at each as a seal, so that no key
    /// service has keys of the ceiling's records to fetch at its next start: they slowed the
    /// next run (BENCHMARKS.md, twenty-fourth).
    pub holders: [ReplicaId; 2],
    pub tx: TxId,
    pub patient: PersonId,
    pub not_after_ms: u64,
    pub key: DataKey,
}

/// A stopped validator's key store, for the keys of [`OfflineSeal`]s: each is stored as the
/// service stores a seal ([`Service::store_seals`]), a pending seal whose facts the service
/// learns from the chain when it next starts and processes the block, as after a crash between
/// a seal and its block (at a party other than the sealer, as a key it fetched, with the
/// same row). Without them the ceiling's records had keys held nowhere, and every
/// later start of the network wanted them from every peer for good (BENCHMARKS.md, session of
/// 2026-12-05).
pub(crate) struct OfflineKeys(KeyStore);

impl OfflineKeys {
    /// Opens `keys.db` in the stopped validator folder `dir`.
    pub fn open(
        dir: &std::path::Path,
        genesis_hash: Hash,
        key: KeystoreKey,
    ) -> Result<Self, NodeError> {
        Ok(OfflineKeys(KeyStore::open(
            &dir.join("keys.db"),
            genesis_hash,
            key,
        )?))
    }

    /// Stores `seals`' keys, in one synced transaction. A key already held for its
    /// transaction is left; a key that seals another transaction too is refused, as a seal's.
    pub fn keep<'a>(
        &self,
        seals: impl IntoIterator<Item = &'a OfflineSeal>,
    ) -> Result<(), NodeError> {
        self.0.begin(Durability::Synced)?;
        let stored = seals.into_iter().try_for_each(|seal| {
            let held = HeldTx {
                patient: seal.patient,
                on_chain: None,
            };
            let facts = row_facts(&held, seal.not_after_ms);
            match self.0.rows().insert_key(&seal.tx, &facts, &seal.key)? {
                store::Inserted::KeyTaken { .. } => Err(NodeError::Seal(
                    "the data key already sealed another transaction".into(),
                )),
                store::Inserted::Stored { .. } | store::Inserted::Held => Ok(()),
            }
        });
        match stored {
            Ok(()) => self.0.commit(),
            Err(error) => {
                self.0.rollback();
                Err(error)
            }
        }
    }
}

impl Drop for OfflineKeys {
    /// Vouches for the store as the open found it, and for the keys kept since: written
    /// here, with the operator key (§12.1 item 8), so that the next start does not check
    /// every row again for them.
    fn drop(&mut self) {
        if let Err(error) = self.0.close_checked(self.0.sweep_from()) {
            warn!(%error, "could not record how far keys.db's rows were checked");
        }
    }
}

/// What the service knows of one sealed transaction an `open` asks about.
pub(crate) enum Lookup {
    Held { key: DataKey, sealer: u32 },
    State(OpenState),
}

/// One sealed transaction an `open` asks about.
pub(crate) struct LookupItem {
    pub tx: TxId,
    pub header: TxHeader,
    /// The body's key commitment, `None` if the body is not a sealed body.
    pub key_commit: Option<Hash>,
}

pub(crate) struct OpenRequest {
    pub at_height: u64,
    pub items: Vec<LookupItem>,
    pub reply: oneshot::Sender<Result<Vec<Lookup>, NodeError>>,
}

/// A question of the application, answered in the service's turn after the seals, blocks and
/// opens it took.
pub(crate) enum LocalQuery {
    /// An online copy of `keys.db` to write at `dest` (still sealed under the key-store key).
    Backup {
        dest: std::path::PathBuf,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    /// How the keys of `patient`'s records stand here (§13).
    PatientKeys {
        patient: PersonId,
        reply: oneshot::Sender<PatientKeys>,
    },
}

/// How the keys of one patient's records stand at this validator, at its processed height
/// (docs/SECURITY.md, "Confidential records", §5.4, §13): counted from the key service's
/// memory, no record opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PatientKeys {
    /// Records of the patient on chain whose keys this validator holds.
    pub held: u64,
    /// Records of the patient this validator is entitled to and waits for.
    pub waiting: u64,
    /// The validator asked for the record that has waited longest.
    pub from: Option<u32>,
    /// Since when (ms, by this validator's clock) that record has waited.
    pub since_ms: Option<u64>,
}

/// A key frame from a peer, with its share of the peer's inbound budget.
struct PeerFrame {
    from: ReplicaId,
    frame: Frame,
    _credit: InboundCredit,
}

#[derive(Default)]
struct Queues {
    seals: Vec<SealRequest>,
    blocks: VecDeque<AppliedBlock>,
    /// A block did not fit in `blocks`: read what is missing from `chain.db`.
    behind: bool,
    opens: Vec<OpenRequest>,
    queries: Vec<LocalQuery>,
    peers: VecDeque<PeerFrame>,
    /// Requests queued per peer.
    queued_requests: HashMap<ReplicaId, usize>,
    dropped_requests: u64,
    stopped: bool,
}

/// What the service takes from its queues in one turn: every local input, and at most one
/// peer frame (local work first, §5.3).
struct Turn {
    seals: Vec<SealRequest>,
    blocks: Vec<AppliedBlock>,
    behind: bool,
    opens: Vec<OpenRequest>,
    queries: Vec<LocalQuery>,
    peer: Option<PeerFrame>,
    dropped_requests: u64,
    stopped: bool,
}

struct Inbox {
    queues: Mutex<Queues>,
    ready: Condvar,
    status: Mutex<KeyStatus>,
}

/// The way into a validator's key service, shared by the runtime (applied blocks), the
/// transport (key frames) and the handle (seals and opens).
#[derive(Clone)]
pub struct KeyInbox {
    inner: Arc<Inbox>,
}

impl KeyInbox {
    pub(crate) fn new() -> Self {
        KeyInbox {
            inner: Arc::new(Inbox {
                queues: Mutex::new(Queues::default()),
                ready: Condvar::new(),
                status: Mutex::new(KeyStatus::default()),
            }),
        }
    }

    fn queues(&self) -> Option<MutexGuard<'_, Queues>> {
        self.inner.queues.lock().ok()
    }

    fn push_local(&self, push: impl FnOnce(&mut Queues) -> bool) -> Result<(), NodeError> {
        let mut queues = self.queues().ok_or(NodeError::Stopped)?;
        if queues.stopped {
            return Err(NodeError::Stopped);
        }
        if queues.seals.len() + queues.opens.len() + queues.queries.len() >= LOCAL_REQUESTS {
            return Err(NodeError::Busy);
        }
        if push(&mut queues) {
            self.inner.ready.notify_one();
        }
        Ok(())
    }

    pub(crate) fn seal(&self, request: SealRequest) -> Result<(), NodeError> {
        self.push_local(|queues| {
            queues.seals.push(request);
            true
        })
    }

    pub(crate) fn open(&self, request: OpenRequest) -> Result<(), NodeError> {
        self.push_local(|queues| {
            queues.opens.push(request);
            true
        })
    }

    pub(crate) fn query(&self, query: LocalQuery) -> Result<(), NodeError> {
        self.push_local(|queues| {
            queues.queries.push(query);
            true
        })
    }

    /// Hands an applied block (its decoded entries and verdicts, no second decode) to the
    /// service; when its queue is full, marks it behind instead (it reads the block from
    /// `chain.db`). Never blocks the runtime.
    pub(crate) fn applied(&self, block: &Block, contents: &[Checked], applied: &Applied) {
        let Some(mut queues) = self.queues() else {
            return;
        };
        if queues.stopped {
            return;
        }
        if queues.blocks.len() >= FEED_BLOCKS || queues.behind {
            queues.behind = true;
        } else {
            queues
                .blocks
                .push_back(applied_block(block, contents, applied));
        }
        self.inner.ready.notify_one();
    }

    /// A key frame from `from`, as the transport authenticated it. At most
    /// [`PEER_REQUESTS_QUEUED`] requests of one peer wait; more are dropped and counted
    /// (answers and offers are not: an offer dropped behind requests would never come again,
    /// red team s11b).
    pub(crate) fn deliver(&self, from: ReplicaId, frame: Frame, credit: InboundCredit) -> bool {
        let Some(mut queues) = self.queues() else {
            return false;
        };
        if queues.stopped {
            return false;
        }
        if let Wire::Keys(KeyFrame::Request { .. }) = &*frame {
            let queued = queues.queued_requests.entry(from).or_default();
            if *queued >= PEER_REQUESTS_QUEUED {
                queues.dropped_requests += 1;
                return false;
            }
            *queued += 1;
        }
        queues.peers.push_back(PeerFrame {
            from,
            frame,
            _credit: credit,
        });
        self.inner.ready.notify_one();
        true
    }

    /// Waits (at most `timeout`) for work, and takes it.
    fn take(&self, timeout: Duration) -> Turn {
        let stopped = Turn {
            seals: Vec::new(),
            blocks: Vec::new(),
            behind: false,
            opens: Vec::new(),
            queries: Vec::new(),
            peer: None,
            dropped_requests: 0,
            stopped: true,
        };
        let Some(mut queues) = self.queues() else {
            return stopped;
        };
        let idle = |q: &Queues| {
            !q.stopped
                && q.seals.is_empty()
                && q.blocks.is_empty()
                && !q.behind
                && q.opens.is_empty()
                && q.queries.is_empty()
                && q.peers.is_empty()
        };
        if idle(&queues) {
            queues = match self.inner.ready.wait_timeout(queues, timeout) {
                Ok((queues, _)) => queues,
                Err(_) => return stopped,
            };
        }
        let peer = queues.peers.pop_front();
        if let Some(PeerFrame { from, frame, .. }) = &peer
            && let Wire::Keys(KeyFrame::Request { .. }) = &**frame
            && let Some(queued) = queues.queued_requests.get_mut(from)
        {
            *queued = queued.saturating_sub(1);
        }
        Turn {
            seals: std::mem::take(&mut queues.seals),
            blocks: queues.blocks.drain(..).collect(),
            behind: std::mem::take(&mut queues.behind),
            opens: std::mem::take(&mut queues.opens),
            queries: std::mem::take(&mut queues.queries),
            peer,
            dropped_requests: std::mem::take(&mut queues.dropped_requests),
            stopped: queues.stopped,
        }
    }

    /// Local and peer work waits. Whether any does (the service then skips its sleep).
    fn has_work(&self) -> bool {
        self.queues().is_some_and(|q| {
            !q.seals.is_empty()
                || !q.blocks.is_empty()
                || q.behind
                || !q.opens.is_empty()
                || !q.queries.is_empty()
                || !q.peers.is_empty()
        })
    }

    pub(crate) fn stop(&self) {
        if let Some(mut queues) = self.queues() {
            queues.stopped = true;
            for seal in queues.seals.drain(..) {
                let _ = seal.reply.send(Err(NodeError::Stopped));
            }
            queues.opens.clear();
            queues.queries.clear();
            queues.peers.clear();
        }
        self.inner.ready.notify_all();
    }

    pub(crate) fn status(&self) -> KeyStatus {
        self.inner
            .status
            .lock()
            .map(|status| status.clone())
            .unwrap_or_default()
    }

    fn publish(&self, status: KeyStatus) {
        if let Ok(mut slot) = self.inner.status.lock() {
            *slot = status;
        }
    }
}

/// The key service's view of an applied block: entries with their headers and verdicts.
fn applied_block(block: &Block, contents: &[Checked], applied: &Applied) -> AppliedBlock {
    let entries = block
        .entries
        .iter()
        .zip(contents)
        .enumerate()
        .map(|(index, (entry, content))| {
            let rejected = applied
                .rejected
                .iter()
                .find(|(i, _)| *i == index)
                .map(|(_, reason)| *reason);
            AppliedEntry {
                id: entry.id,
                header: content.as_ref().ok().map(|tx| tx.header.clone()),
                verdict: EntryVerdict::of(rejected),
            }
        })
        .collect();
    AppliedBlock {
        height: block.header.height,
        time_ms: block.header.timestamp_ms,
        entries,
    }
}

/// What a running key service needs from its node.
pub(crate) struct KeyServiceConfig {
    pub id: ReplicaId,
    pub n: usize,
    pub dir: std::path::PathBuf,
    pub genesis: Arc<Genesis>,
    pub key: KeystoreKey,
    pub clock: Clock,
    /// The node's status: whether the replica recovers or is behind (§5.6).
    pub shared: Arc<Shared>,
    /// What a Byzantine validator's key service does (tests only; see `crate::byzantine`).
    #[cfg(feature = "byzantine")]
    pub byzantine: Option<crate::byzantine::Behaviours>,
}

/// A running key service: its thread, stopped and joined when dropped.
pub(crate) struct KeyService {
    inbox: KeyInbox,
    thread: Option<JoinHandle<()>>,
}

impl KeyService {
    /// Opens `keys.db` (refusing a wrong key or another chain's store) and starts the service's
    /// thread, which first processes every block applied since its processed height, then
    /// serves. `transport` carries its frames to peers.
    pub fn start(
        config: KeyServiceConfig,
        inbox: KeyInbox,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, NodeError> {
        let store = KeyStore::open(
            &config.dir.join("keys.db"),
            config.genesis.hash(),
            config.key.clone(),
        )?;
        let chain = Reader::open(&config.dir.join("chain.db"))?;
        let service = Service::new(config, store, chain, inbox.clone(), transport)?;
        let thread = std::thread::Builder::new()
            .name(format!("keys-{}", service.me))
            .spawn(move || service.run())?;
        Ok(KeyService {
            inbox,
            thread: Some(thread),
        })
    }

    pub fn stop(&mut self) {
        self.inbox.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for KeyService {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What keeping a key did (§16.13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kept {
    /// In row `seq` of `keys.db`.
    Stored { seq: i64 },
    /// Held already for this transaction.
    Held,
    /// The transaction is broken: its key sealed an earlier one too. Nothing stored.
    Broken,
}

/// What never changes once on chain, kept in memory once read: a person's home, a key's
/// origin.
#[derive(Default)]
struct Directory {
    homes: HashMap<PersonId, u32>,
    origins: HashMap<PublicKey, u32>,
}

/// `cache`'s value for `key`, read by `read` and kept if it is not there.
fn cached<K: Copy + Eq + std::hash::Hash>(
    cache: &mut HashMap<K, u32>,
    key: &K,
    read: impl FnOnce(&K) -> Result<Option<u32>, ledger::Error>,
) -> Result<Option<u32>, ledger::Error> {
    if let Some(value) = cache.get(key) {
        return Ok(Some(*value));
    }
    let value = read(key)?;
    if let Some(value) = value {
        cache.insert(*key, value);
    }
    Ok(value)
}

impl Directory {
    fn home(&mut self, chain: &Reader, person: &PersonId) -> Result<Option<u32>, NodeError> {
        Ok(cached(&mut self.homes, person, |person| {
            Ok(chain.person(person)?.map(|row| row.home))
        })?)
    }

    fn parties(&mut self, chain: &Reader, header: &TxHeader) -> Result<Option<Parties>, NodeError> {
        let Directory { homes, origins } = self;
        Ok(ledger::entitled::parties_with(
            header,
            &mut |person| {
                cached(homes, person, |person| {
                    Ok(chain.person(person)?.map(|row| row.home))
                })
            },
            &mut |key| {
                cached(origins, key, |key| {
                    Ok(chain.key(key)?.map(|row| row.origin))
                })
            },
        )?)
    }
}

/// What `held`'s row says of its transaction, whose deadline is `not_after_ms`.
fn row_facts(held: &HeldTx, not_after_ms: u64) -> Facts {
    Facts {
        patient: held.patient,
        not_after_ms,
        on_chain: held.on_chain.map(|on_chain| on_chain.to_bytes().to_vec()),
    }
}

/// The key service: one thread, owning `keys.db`'s connection and a read connection to the
/// chain.
struct Service {
    me: ReplicaId,
    n: usize,
    genesis_hash: Hash,
    clock: Clock,
    shared: Arc<Shared>,
    store: KeyStore,
    chain: Reader,
    inbox: KeyInbox,
    exchange: Exchange,
    directory: Directory,
    processed: u64,
    /// The processed height `keys.db` held when this start began.
    resumed_from: u64,
    /// The processed height `keys.db` holds.
    processed_saved: u64,
    /// The wanted heights as `keys.db` holds them (`None`: unknown, written whole next time).
    saved_heights: Option<BTreeSet<u64>>,
    /// The chain is behind the processed height (a `keys.db` kept newer than a restored
    /// `chain.db`, §5.6): no key is given until it has reached it.
    waits_for_chain: bool,
    /// The time of the last processed block: `T` of "live now" (§4.1).
    block_time_ms: u64,
    /// Own seals not yet seen on chain, with their `not_after_ms`.
    pending: pending::Pending,
    /// Facts of held rows that failed their tag (or had none), read from the chain, to be
    /// written with their tag ([`Service::held`]).
    relearned: HashMap<TxId, store::Facts>,
    /// The row after which [`Service::check_rows`] goes on; `None` once every row is checked.
    checked_to: Option<i64>,
    /// A row whose facts failed their tag was left as it is ([`Service::trusted`]): the next
    /// start checks every row, whatever this one checked (§12.1 item 8).
    left_refused: bool,
    /// Live read grants of patients to this validator's doctors.
    read_grants: BTreeMap<TxId, store::ReadGrantRow>,
    wanted: WantedKeys,
    /// Opens waiting for the processed height they need, with their deadlines.
    waiting_opens: Vec<(OpenRequest, Instant)>,
    /// The held keys' transactions and the home's live read grants, in memory (§5.3).
    index: Index,
    counters: KeyCounters,
    next_timer: Instant,
    /// A Byzantine validator's behaviours (tests only; see `crate::byzantine`).
    #[cfg(feature = "byzantine")]
    lies: byzantine::Lies,
}

impl Service {
    fn new(
        config: KeyServiceConfig,
        store: KeyStore,
        chain: Reader,
        inbox: KeyInbox,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, NodeError> {
        let processed = store.processed_height()?;
        let mut service = Service {
            me: config.id,
            n: config.n,
            genesis_hash: config.genesis.hash(),
            clock: config.clock,
            shared: config.shared,
            store,
            chain,
            inbox,
            exchange: Exchange::new(config.id, config.n, transport),
            directory: Directory::default(),
            processed,
            resumed_from: processed,
            processed_saved: processed,
            saved_heights: None,
            waits_for_chain: false,
            block_time_ms: 0,
            pending: pending::Pending::default(),
            relearned: HashMap::new(),
            checked_to: Some(0),
            left_refused: false,
            read_grants: BTreeMap::new(),
            wanted: WantedKeys::default(),
            waiting_opens: Vec::new(),
            index: Index::default(),
            counters: KeyCounters::default(),
            next_timer: Instant::now(),
            #[cfg(feature = "byzantine")]
            lies: byzantine::Lies::new(config.byzantine),
        };
        service.load()?;
        service.publish();
        Ok(service)
    }

    /// Reads what the service keeps in memory from `keys.db` and the chain: its own seals not
    /// yet on chain, its doctors' read grants, the index (§5.3), and its wanted keys (read
    /// again from the blocks since the lowest height wanted when the store was written,
    /// §12.1). A chain
    /// behind the processed height (a `keys.db` kept newer than a restored `chain.db`, §5.6)
    /// cannot say yet what the latest held keys' transactions are, which grants were revoked
    /// or what was erased since: the service then waits for it, giving no key, and loads again
    /// once it has reached the processed height ([`Service::rejoin_chain`]).
    fn load(&mut self) -> Result<(), NodeError> {
        let rows = self.store.rows();
        self.read_grants = rows
            .read_grants()?
            .into_iter()
            .map(|grant| (grant.grant, grant))
            .collect();
        let unplaced = rows.unplaced()?;
        // A store written before the height was kept: every block is read again.
        let wanted_from = self.store.wanted_from()?.unwrap_or(1);
        let (head, _) = self.chain.head()?;
        self.waits_for_chain = head < self.processed;
        self.block_time_ms =
            ledger::entitled::applied_block(&self.chain, self.processed.min(head))?
                .map_or(0, |block| block.time_ms);
        // A row says what the chain says of its transaction once it is applied, with a tag
        // (§12.1 item 6; a row's facts are checked as they are read, [`Service::held`]). A row
        // whose tag holds and says nothing yet is a seal of this validator not applied by the
        // processed height: its key was drawn here before its transaction existed, stored before
        // the seal was answered (§5.5), and the block that applies it writes its facts in the
        // commit of that height (`Service::process_blocks`). It is pending, with no lookup
        // (each walked every closed epoch's filter of `chain.db`: most of a start on a chain of
        // millions, BENCHMARKS.md "twenty-eighth"); a block after the processed height that
        // applies it places it as the feed reads it again (`Service::on_sealed`). A row whose
        // tag fails, or a row of schema 3, says nothing that can be trusted: it is looked up
        // on the chain, and what the chain says is written with its tag; its transaction not
        // applied there, it is a seal of this validator that is not yet (§5.5). A pending seal
        // whose tag fails is kept as it says, not rewritten: a pending key is given to nobody
        // (`NotOnChain`), its deadline only decides when it is deleted, and the block that
        // applies it writes the chain's facts ([`Service::on_sealed`]).
        self.index = Index::default();
        self.pending = pending::Pending::default();
        // Not emptied: what was relearned while the chain was behind is written, and judged,
        // once it has caught up ([`Service::write_relearned`]).
        self.checked_to = self.store.sweep_from();
        let (mut learned, mut refused, mut untagged, mut twice) = (Vec::new(), 0u64, 0u64, 0u64);
        let mut untrusted = Vec::new();
        for row in unplaced {
            match row.tag {
                Tag::Valid => {
                    twice += u64::from(self.pending.insert_read(
                        row.tx,
                        row.facts.not_after_ms,
                        row.seq,
                    ))
                }
                Tag::Absent => {
                    untagged += 1;
                    untrusted.push(row);
                }
                Tag::Invalid => {
                    refused += 1;
                    untrusted.push(row);
                }
            }
        }
        for rows in untrusted.chunks(UNPLACED_PER_SNAPSHOT) {
            // One read transaction a chunk (each lookup alone took and dropped the WAL's read
            // lock: a third of a start after a stop with the feed hundreds of blocks behind,
            // BENCHMARKS.md "twenty-seventh"), keeping the headers of those applied only (a
            // record's body is up to 64 KiB).
            let applied = self.chain.snapshot(|chain| {
                rows.iter()
                    .map(|row| {
                        Ok(chain
                            .transaction(&row.tx)?
                            .filter(|committed| committed.rejected.is_none())
                            .map(|committed| committed.tx.header))
                    })
                    .collect::<Result<Vec<_>, ledger::Error>>()
            })?;
            for (row, header) in rows.iter().zip(applied) {
                match &header {
                    Some(header) if let Some(patient) = header.meta.subject() => {
                        let held = HeldTx {
                            patient: *patient,
                            on_chain: self.on_chain_of(header)?,
                        };
                        if held.on_chain.is_some() {
                            learned.push((row.tx, row_facts(&held, header.not_after_ms)));
                        }
                    }
                    _ => {
                        twice += u64::from(self.pending.insert_read(
                            row.tx,
                            row.facts.not_after_ms,
                            row.seq,
                        ));
                    }
                }
            }
        }
        if twice > 0 {
            warn!(
                validator = self.me,
                rows = twice,
                "keys.db: a pending seal's row met again (a copy written in the file): its block \
                 writes the chain's facts in the row lookups find"
            );
        }
        self.counters.keys_rows_refused += refused;
        if refused > 0 {
            warn!(
                validator = self.me,
                rows = refused,
                "keys.db: rows whose facts fail their tag (changed without the operator key, or \
                 damaged): not trusted, read from the chain"
            );
        }
        if untagged > 0 {
            info!(
                validator = self.me,
                rows = untagged,
                "keys.db: rows without a tag (written before schema 5): read from the chain"
            );
        }
        if !learned.is_empty() {
            self.in_write(Durability::Deferred, |service| {
                let rows = service.store.rows();
                learned
                    .iter()
                    .try_for_each(|(tx, facts)| rows.set_facts(tx, facts))
            })?;
            // The rows rewritten have their older pages in the file until a checkpoint: as at
            // open, the store holds one copy of each sealed row once started (§16.17).
            self.store.truncate_wal()?;
        }
        for tx in ledger::entitled::erased_transactions(&self.chain)? {
            self.index.erase(tx);
        }
        for grant in
            ledger::entitled::read_grants_of_home(&self.chain, self.me, self.block_time_ms)?
        {
            self.home_grant(&grant.patient, grant.id, &grant.doctor, grant.expires_ms)?;
        }
        self.wanted = WantedKeys::default();
        if self.waits_for_chain {
            // The blocks up to the chain's head predate erasures and revocations the store
            // applied already: read from them, it would want again a key it erased (red team
            // round 4, break 1). Wanted keys are read again once the chain has caught up.
            return Ok(());
        }
        // The heights written with the processed height, or every one from the lowest wanted
        // (a store of an earlier build, or written without them).
        match self.store.wanted_heights()? {
            Some(heights) => {
                let upto = heights.partition_point(|height| *height <= self.processed);
                self.saved_heights = Some(heights.iter().copied().collect());
                self.want_again(heights[..upto].iter().copied())
            }
            None => {
                self.saved_heights = None;
                self.want_again(wanted_from..=self.processed)?;
                // Written now, so that the next start reads only those blocks even if no block
                // comes before it.
                let processed = self.processed;
                self.in_write(Durability::Deferred, |service| {
                    service.write_processed(processed)
                })
            }
        }
    }

    /// The lowest height of a wanted transaction, or the block after `processed` if none is
    /// wanted: where a restart starts reading blocks again to want what is still missing
    /// (§12.1).
    fn wanted_from(&self, processed: u64) -> u64 {
        self.wanted.lowest_height().unwrap_or(processed + 1)
    }

    /// Loads again what the chain said nothing of at start ([`Service::load`]) once a chain
    /// that was behind the processed height has reached it; until then, blocks at or below
    /// the processed height change nothing here (`keys.db` processed them before).
    fn rejoin_chain(&mut self) -> Result<(), NodeError> {
        if !self.waits_for_chain || self.chain.head()?.0 < self.processed {
            return Ok(());
        }
        self.load()?;
        info!(
            validator = self.me,
            processed = self.processed,
            "the chain has reached the key store's processed height: keys are given again"
        );
        // Grants the clock ended while the chain was behind end again, now that every held
        // key's transaction can be read (see [`Service::end_grant`]).
        self.end_grants_by_clock()
    }

    /// What `header` says for the index: its parties and whether it is a record.
    fn on_chain_of(&mut self, header: &TxHeader) -> Result<Option<OnChain>, NodeError> {
        Ok(self.parties(header)?.map(|parties| OnChain {
            parties,
            record: matches!(header.meta, ledger::Meta::AddRecord(_)),
        }))
    }

    /// Keeps in the index a read grant of `patient` to `doctor` until `expires_ms`, if this
    /// validator is the patient's home (it then answers the doctor's home for the records).
    fn home_grant(
        &mut self,
        patient: &PersonId,
        grant: TxId,
        doctor: &PersonId,
        expires_ms: u64,
    ) -> Result<(), NodeError> {
        if self.directory.home(&self.chain, patient)? != Some(self.me) {
            return Ok(());
        }
        if let Some(grantee) = self.directory.home(&self.chain, doctor)? {
            self.index
                .add_home_grant(*patient, grant, grantee, expires_ms);
        }
        Ok(())
    }

    fn run(mut self) {
        let resumed_from = self.resumed_from;
        if self.waits_for_chain {
            info!(
                validator = self.me,
                processed = self.processed,
                "the key store is ahead of the chain (restored?): no key is given until the \
                 chain reaches its processed height"
            );
        }
        // Every block applied since the processed height, before anything is answered (§5.6).
        if let Err(error) = self.catch_up() {
            warn!(%error, "key service stopping: cannot process the chain");
            self.shared.set_failed(format!("key service: {error}"));
            return;
        }
        info!(
            validator = self.me,
            processed = self.processed,
            resumed_from,
            wanted = self.wanted.len(),
            pending_seals = self.pending.len(),
            "key service ready"
        );
        self.publish();
        let clean = loop {
            let timeout = self.next_timer.saturating_duration_since(Instant::now());
            let turn = self.inbox.take(timeout);
            if turn.stopped {
                break true;
            }
            if let Err(error) = self.turn(turn) {
                warn!(%error, "key service stopping after a storage error");
                self.shared.set_failed(format!("key service: {error}"));
                break false;
            }
            self.publish();
        };
        for (open, _) in self.waiting_opens.drain(..) {
            let _ = open.reply.send(Err(NodeError::Stopped));
        }
        if let Err(error) = self.save_processed() {
            warn!(%error, "could not write the processed height at shutdown");
        } else if clean && let Err(error) = self.close() {
            warn!(%error, "could not record how far keys.db's rows were checked");
        }
    }

    /// A clean stop's last writes: the rows relearned from the chain, then the record of how
    /// far the check of rows got, for the next start (§12.1 item 8). Not after a storage
    /// error: the next start then checks every row.
    fn close(&mut self) -> Result<(), NodeError> {
        self.write_relearned()?;
        if self.left_refused {
            return Ok(());
        }
        self.store.close_checked(self.checked_to)
    }

    fn turn(&mut self, turn: Turn) -> Result<(), NodeError> {
        self.counters.keys_requests_dropped += turn.dropped_requests;
        self.rejoin_chain()?;
        if !turn.seals.is_empty() {
            self.store_seals(turn.seals)?;
        }
        if !turn.blocks.is_empty() || turn.behind {
            self.process_blocks(turn.blocks)?;
            if turn.behind {
                self.catch_up()?;
            }
            self.pull()?;
        }
        if Instant::now() >= self.next_timer {
            self.next_timer = Instant::now() + TIMER;
            self.on_timer()?;
        }
        // What an answered open's caller reads next must already show the height it waited for.
        self.publish();
        let deadline = Instant::now() + OPEN_WAIT;
        self.waiting_opens
            .extend(turn.opens.into_iter().map(|open| (open, deadline)));
        self.answer_opens()?;
        for query in turn.queries {
            match query {
                LocalQuery::Backup { dest, reply } => {
                    let _ = reply.send(self.store.backup(&dest));
                }
                LocalQuery::PatientKeys { patient, reply } => {
                    let _ = reply.send(self.patient_keys(&patient));
                }
            }
        }
        if let Some(peer) = turn.peer {
            self.on_frame(peer.from, &peer.frame)?;
        }
        Ok(())
    }

    /// How the keys of `patient`'s records stand here: held ones from the index, waiting ones
    /// from the wanted rows, the oldest with its source.
    fn patient_keys(&self, patient: &PersonId) -> PatientKeys {
        let waiting = self
            .wanted
            .iter()
            .map(|(_, wanted)| wanted)
            .filter(|wanted| wanted.patient == *patient && wanted.record);
        let oldest = waiting.clone().min_by_key(|wanted| wanted.since_ms);
        let records = |rows: Vec<store::HeldRow>| {
            rows.iter()
                .filter(|row| row.tag == Tag::Valid)
                .filter(|row| HeldTx::from(&row.facts).on_chain.is_some_and(|c| c.record))
                .count() as u64
        };
        PatientKeys {
            // A status, not a decision: a store that cannot be read shows none held.
            held: self.store.rows().held_of(patient).map_or(0, records),
            waiting: waiting.count() as u64,
            from: oldest.map(|wanted| wanted.source),
            since_ms: oldest.map(|wanted| wanted.since_ms),
        }
    }

    fn publish(&self) {
        self.inbox.publish(KeyStatus {
            processed_height: self.processed,
            resumed_from: self.resumed_from,
            waiting: self.wanted.len() as u64,
            held: self.store.rows().held_count().unwrap_or(0),
            counters: self.counters.clone(),
        });
    }

    /// Runs `write` in one `keys.db` transaction, durable as `durability` says, rolled back if
    /// it fails (the service then stops: its memory may be ahead of the file).
    fn in_write<T>(
        &mut self,
        durability: Durability,
        write: impl FnOnce(&mut Self) -> Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        self.store.begin(durability)?;
        match write(self) {
            Ok(value) => {
                self.store.commit()?;
                Ok(value)
            }
            Err(error) => {
                self.store.rollback();
                Err(error)
            }
        }
    }

    /// The timer: grants ended by the clock, blocks the feed did not bring (the chain is the
    /// source), expired requests, retries.
    fn on_timer(&mut self) -> Result<(), NodeError> {
        self.end_grants_by_clock()?;
        self.check_rows()?;
        self.write_relearned()?;
        if !self.inbox.has_work() {
            self.catch_up()?;
            self.save_processed()?;
        }
        self.exchange.expire_requests(Instant::now());
        self.pull()
    }

    /// Ends the read grants whose `expires_ms` the clock has passed (§5.4).
    fn end_grants_by_clock(&mut self) -> Result<(), NodeError> {
        let now_ms = self.clock.now_ms();
        let ended: Vec<_> = self
            .read_grants
            .values()
            .filter(|grant| now_ms >= grant.expires_ms)
            .map(|grant| grant.grant)
            .collect();
        if !ended.is_empty() {
            // Lost in a crash, the grants end again by the clock after the restart.
            let deleted = self.in_write(Durability::Deferred, |service| {
                let mut deleted = false;
                for grant in &ended {
                    deleted |= service.end_grant(grant)?;
                }
                Ok(deleted)
            })?;
            // No WAL frame keeps a dropped key (as after an erasure).
            if deleted {
                self.store.truncate_wal()?;
            }
        }
        Ok(())
    }

    /// Stores the keys of concurrent seals in one SQLite transaction (one fsync: nothing else
    /// could give a seal's key back), then answers each (§5.5). A seal whose key is held
    /// already is refused: it would be the later of the two (§16.13).
    fn store_seals(&mut self, seals: Vec<SealRequest>) -> Result<(), NodeError> {
        let written = self.in_write(Durability::Synced, |service| {
            let mut kept = Vec::with_capacity(seals.len());
            for seal in &seals {
                let held = HeldTx {
                    patient: seal.patient,
                    on_chain: None,
                };
                let outcome =
                    service.keep_key(&seal.tx, held, &seal.key, None, seal.not_after_ms)?;
                if let Kept::Stored { seq } = outcome {
                    service
                        .pending
                        .insert(seal.tx, seal.not_after_ms, Some(seq));
                }
                kept.push(outcome);
            }
            Ok(kept)
        });
        let failed = written.as_ref().err().map(ToString::to_string);
        for (i, seal) in seals.into_iter().enumerate() {
            let answer = match (&failed, &written) {
                (Some(error), _) => Err(NodeError::Corrupt(format!("keys.db: {error}"))),
                (None, Ok(kept)) if kept[i] == Kept::Broken => Err(NodeError::Seal(
                    "the data key already sealed another transaction".into(),
                )),
                (None, _) => Ok(()),
            };
            let _ = seal.reply.send(answer);
        }
        written.map(|_| ())
    }

    /// What `tx`'s held key's row says of it, if its key is held: its facts if they hold their
    /// tag; else what the chain says (§12.1 item 6), the row to be written with the chain's
    /// facts and their tag at the next timer ([`Service::write_relearned`]), or, its
    /// transaction not applied, a pending seal of this validator.
    /// With the row's `seq`.
    fn held(&mut self, tx: &TxId) -> Result<Option<(i64, HeldTx)>, NodeError> {
        match self.store.rows().held(tx)? {
            Some(row) => Ok(Some((row.seq, self.trusted(&row)?))),
            None => Ok(None),
        }
    }

    /// What `row` says of its transaction, as far as its facts hold their tag (§12.1 item 6);
    /// else what the chain says, to be written in the row ([`Service::held`]).
    fn trusted(&mut self, row: &store::HeldRow) -> Result<HeldTx, NodeError> {
        let tx = &row.tx;
        if row.tag == Tag::Valid {
            return Ok(HeldTx::from(&row.facts));
        }
        if let Some(facts) = self.relearned.get(tx) {
            return Ok(HeldTx::from(facts));
        }
        // Not applied (or not applicable): a pending seal, given to nobody (`NotOnChain`).
        let pending = HeldTx {
            patient: row.facts.patient,
            on_chain: None,
        };
        // Left as it says, it is refused again at the next start, which must read it: no clean
        // stop vouches for the file (red team s46: its deadline, kept in memory only, was lost).
        let Some(committed) = self.chain.transaction(tx)?.filter(|c| c.rejected.is_none()) else {
            // Its deadline deletes it, as any pending seal's, whatever its row says it is.
            self.pending
                .insert_if_absent(*tx, row.facts.not_after_ms, row.seq);
            self.left_refused = true;
            return Ok(pending);
        };
        let header = &committed.tx.header;
        let Some(patient) = header.meta.subject() else {
            self.left_refused = true;
            return Ok(pending);
        };
        let held = HeldTx {
            patient: *patient,
            on_chain: self.on_chain_of(header)?,
        };
        if row.tag == Tag::Invalid {
            self.counters.keys_rows_refused += 1;
            warn!(
                validator = self.me,
                tx = %ledger::short_hex(tx),
                "keys.db: a row whose facts fail their tag (changed without the operator key, \
                 or damaged): not trusted, read from the chain"
            );
        }
        self.relearned
            .insert(*tx, row_facts(&held, header.not_after_ms));
        Ok(held)
    }

    /// Checks the facts of the next rows of `keys.db` against their tag, from where the last
    /// call stopped, for at most [`CHECK_BUDGET`] a timer: every row is checked once after a
    /// start, so that the start reads none (§12.1 item 8; a row read before is checked as it is
    /// read). A row whose facts fail, or that has no tag (schema 4), is read from the chain
    /// and written back ([`Service::trusted`]): about 20 µs a row at 10,000,000 transactions,
    /// so a store migrated from schema 4 takes minutes of these slices, and the service
    /// answers its peers in between.
    fn check_rows(&mut self) -> Result<(), NodeError> {
        const ROWS_PER_READ: usize = 256;
        let started = Instant::now();
        // Patients with a live read grant to a doctor here (red team s49): a row whose tag
        // holds is judged for entitlement too, as a relearned one is
        // ([`Service::write_relearned`]), so that a row put back after its grant's end, or
        // whose grant's row was deleted on disk, is not kept. Not while the chain is behind:
        // grants cannot be judged then. One set a call, a lookup a row that names no party.
        let granted: std::collections::HashSet<PersonId> =
            self.live_grants().map(|grant| grant.patient).collect();
        let broken = match self.checked_to {
            Some(_) => self.store.rows().broken_txs()?,
            None => Default::default(),
        };
        while let Some(after) = self.checked_to
            && started.elapsed() < CHECK_BUDGET
        {
            let rows = self.store.rows().checked_after(after, ROWS_PER_READ)?;
            self.counters.keys_rows_checked += rows.len() as u64;
            let mut unindexed = Vec::new();
            let mut erased = Vec::new();
            for (row, not_in_run) in &rows {
                if *not_in_run {
                    unindexed.push(row.seq);
                }
                // A key whose erasure the chain holds has no row: this one was put back on
                // disk (an old copy's row, or a copy its erasure did not find).
                // Nor has a broken transaction's (§16.13): its key is an earlier one's, which
                // an erasure of that one must leave nowhere (red team s49).
                if self.index.is_erased(&row.tx) || broken.contains(&row.tx) {
                    erased.push(row.tx);
                // A row the chain has said nothing of was read at start ([`Service::load`]).
                } else if row.facts.on_chain.is_some() {
                    let held = self.trusted(row)?;
                    if row.tag == Tag::Valid
                        && !self.waits_for_chain
                        && !self.entitled_by(&held, |patient| granted.contains(patient))
                    {
                        erased.push(row.tx);
                    }
                }
            }
            if !unindexed.is_empty() {
                // Its `seq` changed on disk: the tag binds the transaction, not the number, so
                // only its run tells (§12.1 item 8). Found by its values again.
                self.counters.keys_rows_refused += unindexed.len() as u64;
                warn!(
                    validator = self.me,
                    rows = unindexed.len(),
                    "keys.db: rows not in their epoch's run (numbers changed without the \
                     operator key, or damaged): indexed again"
                );
                self.in_write(Durability::Deferred, |service| {
                    unindexed
                        .iter()
                        .try_for_each(|seq| service.store.rows().reindex(*seq).map(|_| ()))
                })?;
            }
            // After the reindex: a row not in its run is found by its transaction only then.
            if !erased.is_empty() {
                self.counters.keys_rows_refused += erased.len() as u64;
                warn!(
                    validator = self.me,
                    rows = erased.len(),
                    "keys.db: rows of erased transactions, or of keys this validator is not \
                     entitled to (put back without the operator key): deleted"
                );
                self.in_write(Durability::Deferred, |service| {
                    erased
                        .iter()
                        .try_for_each(|tx| service.store.rows().delete_key(tx).map(|_| ()))
                })?;
                // As after an erasure: no WAL frame keeps the deleted key (§7.2).
                self.store.truncate_wal()?;
            }
            self.checked_to = match rows.last() {
                Some((row, _)) if rows.len() == ROWS_PER_READ => Some(row.seq),
                _ => {
                    self.store.rows().end_scrub();
                    info!(
                        validator = self.me,
                        refused = self.counters.keys_rows_refused,
                        "keys.db: every row checked against its tag since the start"
                    );
                    None
                }
            };
        }
        Ok(())
    }

    /// Writes the facts [`Service::held`] read from the chain in their rows, with their tag,
    /// and deletes the keys they no longer entitle this validator to. Not while the chain is
    /// behind the processed height: entitlement cannot be judged then, and a tag written
    /// without it would vouch for the row at every later start, none of which judges a row
    /// whose tag holds (a grant whose end the store recorded while the row named another
    /// patient is never ended again). The facts wait in memory, and no stop vouches for the
    /// file ([`Service::close`]) until they are written, judged, once the chain has caught up.
    fn write_relearned(&mut self) -> Result<(), NodeError> {
        if self.relearned.is_empty() {
            return Ok(());
        }
        if self.waits_for_chain {
            self.left_refused = true;
            // Bounded (red team s49): a store of untagged rows (schema 4) or a tampered one
            // would hold a row's facts each until the chain has caught up. Let go past the
            // bound: the check of rows starts again from where the open said once the chain
            // has caught up ([`Service::load`]), and reads them again, judged then; no stop
            // vouches for the file meanwhile.
            if self.relearned.len() > RELEARNED_WAITING_MAX {
                self.relearned = HashMap::new();
            }
            return Ok(());
        }
        let relearned = std::mem::take(&mut self.relearned);
        self.in_write(Durability::Deferred, |service| {
            for (tx, facts) in &relearned {
                service.store.rows().set_facts(tx, facts)?;
                // Judged again by what the chain says: a row whose patient was changed on disk
                // escaped the end of the true patient's grant to this validator (§12.1 item 8),
                // whenever that was, restarts included.
                let held = HeldTx::from(facts);
                if !service.entitled_by(&held, |patient| service.grantee_of(patient)) {
                    service.store.rows().delete_key(tx)?;
                }
            }
            Ok(())
        })
    }

    /// Stores `tx`'s key unless `tx` is broken, and keeps `held` in the index. `position` is
    /// its height and index on chain; `None` for a seal not on chain yet, which comes after
    /// everything on chain. When the
    /// same key is held for another transaction, the later of the two in chain order is
    /// broken and its key never stored, whichever arrived first (§16.13): a held row of the
    /// later makes way for the earlier, so erasing the earlier leaves no key that opens the
    /// later. Inside the caller's `keys.db` transaction.
    fn keep_key(
        &mut self,
        tx: &TxId,
        held: HeldTx,
        key: &DataKey,
        position: Option<(u64, u64)>,
        not_after_ms: u64,
    ) -> Result<Kept, NodeError> {
        let rows = self.store.rows();
        if rows.is_broken(tx)? {
            return Ok(Kept::Broken);
        }
        let facts = row_facts(&held, not_after_ms);
        let holder = match rows.insert_key(tx, &facts, key)? {
            store::Inserted::Stored { seq } => return Ok(Kept::Stored { seq }),
            store::Inserted::Held => return Ok(Kept::Held),
            store::Inserted::KeyTaken { holder } => holder,
        };
        let id = ledger::seal::key_id(key);
        let holder_position = self
            .chain
            .transaction(&holder)?
            .map(|committed| (committed.height, committed.index));
        let order = |position: Option<(u64, u64)>| position.unwrap_or((u64::MAX, u64::MAX));
        let holder_is_later = order(position) < order(holder_position);
        let broken = if holder_is_later { holder } else { *tx };
        warn!(
            broken = %ledger::short_hex(&broken),
            "one data key sealed two transactions: the later is broken"
        );
        if !holder_is_later {
            rows.mark_broken(tx, &id)?;
            return Ok(Kept::Broken);
        }
        rows.delete_key(&holder)?;
        rows.mark_broken(&holder, &id)?;
        self.pending.remove(&holder);
        // Its holder's row gone, the key is nobody's: stored (a third holder would refuse it).
        Ok(match rows.insert_key(tx, &facts, key)? {
            store::Inserted::Stored { seq } => Kept::Stored { seq },
            store::Inserted::Held => Kept::Held,
            store::Inserted::KeyTaken { .. } => Kept::Broken,
        })
    }

    fn parties(&mut self, header: &TxHeader) -> Result<Option<Parties>, NodeError> {
        self.directory.parties(&self.chain, header)
    }

    /// Whether a read grant of `patient` to a doctor here is live now (§4.1).
    fn grantee_of(&self, patient: &PersonId) -> bool {
        self.live_grants().any(|grant| grant.patient == *patient)
    }

    /// The read grants to doctors here that are live by the chain's time and by the clock.
    fn live_grants(&self) -> impl Iterator<Item = &store::ReadGrantRow> {
        let now_ms = self.clock.now_ms();
        self.read_grants
            .values()
            .filter(move |grant| self.block_time_ms < grant.expires_ms && now_ms < grant.expires_ms)
    }

    /// Whether what the chain says of a held key (`held`, on chain) entitles this validator
    /// to it: a party, or a live grantee of the record's patient (`grantee`).
    fn entitled_by(&self, held: &HeldTx, grantee: impl Fn(&PersonId) -> bool) -> bool {
        held.on_chain.as_ref().is_none_or(|on_chain| {
            on_chain.parties.includes(self.me) || (on_chain.record && grantee(&held.patient))
        })
    }

    /// Whether this validator is entitled to `header`'s key now, at its own state: a party,
    /// or a grantee of an `AddRecord` (§4.1).
    fn entitled(&mut self, header: &TxHeader) -> Result<Option<(Parties, bool)>, NodeError> {
        let Some(parties) = self.parties(header)? else {
            return Ok(None);
        };
        if parties.includes(self.me) {
            return Ok(Some((parties, false)));
        }
        let grantee = match &header.meta {
            ledger::Meta::AddRecord(record) => self.grantee_of(&record.patient),
            _ => false,
        };
        Ok(grantee.then_some((parties, true)))
    }

    /// Answers the opens whose height is processed; the others wait, at most [`OPEN_WAIT`].
    fn answer_opens(&mut self) -> Result<(), NodeError> {
        let now = Instant::now();
        let mut still = Vec::new();
        for (open, deadline) in std::mem::take(&mut self.waiting_opens) {
            if open.reply.is_closed() {
                continue;
            }
            if open.at_height <= self.processed {
                let answer = self.lookup(&open.items);
                let _ = open.reply.send(answer);
            } else if now >= deadline {
                let _ = open.reply.send(Err(NodeError::KeysCatchingUp));
            } else {
                still.push((open, deadline));
            }
        }
        self.waiting_opens = still;
        Ok(())
    }

    /// What this validator holds or knows of each item (§6.2); the caller opens the bodies.
    fn lookup(&mut self, items: &[LookupItem]) -> Result<Vec<Lookup>, NodeError> {
        let mut answers = Vec::with_capacity(items.len());
        for item in items {
            let parties = self.parties(&item.header)?;
            let sealer = match (parties, item.header.signer) {
                (Some(parties), _) => parties.sealer,
                (None, ledger::Signer::Validator { index }) => index,
                (None, _) => u32::MAX,
            };
            // The chain's erasure first: a key held for an erased transaction (a store that
            // lost the erasure, or is ahead of its restored chain, §5.6) opens nothing.
            if self.chain.is_erased(&item.tx)? {
                answers.push(Lookup::State(OpenState::Erased));
                continue;
            }
            // A broken transaction's row (put back on disk) opens nothing either (§16.13).
            if self.store.rows().is_broken(&item.tx)? {
                answers.push(Lookup::State(OpenState::Broken { sealer }));
                continue;
            }
            if let Some(key) = self.store.rows().key(&item.tx)? {
                answers.push(Lookup::Held { key, sealer });
                continue;
            }
            let state = match (parties, item.key_commit) {
                (None, _) | (_, None) => OpenState::Broken { sealer },
                (Some(parties), Some(_)) => {
                    if self.store.rows().is_broken(&item.tx)? {
                        OpenState::Broken { sealer }
                    } else if let Some((_, as_grantee)) = self.entitled(&item.header)? {
                        match self.wanted.get(&item.tx) {
                            Some(wanted) => OpenState::Waiting {
                                from: wanted.source,
                                since_ms: wanted.since_ms,
                            },
                            None => OpenState::Waiting {
                                from: feed::first_source(&parties, as_grantee, self.me),
                                since_ms: 0,
                            },
                        }
                    } else {
                        OpenState::Elsewhere {
                            home: parties.patient_home,
                        }
                    }
                }
            };
            answers.push(Lookup::State(state));
        }
        Ok(answers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(request: u64) -> Frame {
        Frame::new(Wire::Keys(KeyFrame::Request {
            request,
            txs: vec![[7; 32]],
        }))
    }

    /// Local work first (§5.3): a seal that arrives behind a peer's queued requests is taken in
    /// the next turn, beside at most one of them, whatever the speed of the answers.
    #[test]
    fn a_seal_queued_behind_peer_requests_is_taken_in_the_next_turn() {
        let inbox = KeyInbox::new();
        for id in 0..PEER_REQUESTS_QUEUED as u64 {
            assert!(inbox.deliver(2, request(id), InboundCredit::default()));
        }
        assert!(
            !inbox.deliver(2, request(99), InboundCredit::default()),
            "a fifth queued request of one peer is dropped"
        );
        let (reply, _answer) = oneshot::channel();
        inbox
            .seal(SealRequest {
                tx: [1; 32],
                patient: [3; 16],
                not_after_ms: 0,
                key: DataKey::generate(),
                reply,
            })
            .unwrap();
        let first = inbox.take(Duration::ZERO);
        assert_eq!(first.seals.len(), 1);
        assert!(first.peer.is_some());
        assert_eq!(first.dropped_requests, 1);
        let second = inbox.take(Duration::ZERO);
        assert!(second.seals.is_empty());
        assert!(second.peer.is_some(), "the other requests wait their turn");
        assert!(inbox.deliver(2, request(5), InboundCredit::default()));
    }
}

/// The asides red team s46 left (session 23), on a key service the test drives
/// ([`feed::tests::service`]: validator 0 of a new chain).
#[cfg(test)]
mod s46_asides {
    use super::*;

    /// What the chain says of a held record of patient `[1; 16]` whose parties are validators
    /// 1, 2 and 3: validator 0 is entitled to its key only as a live grantee of the patient.
    pub(super) fn elsewhere() -> Facts {
        let on_chain = OnChain {
            parties: Parties {
                sealer: 1,
                patient_home: 2,
                doctor_home: 3,
            },
            record: true,
        };
        Facts {
            patient: [1; 16],
            not_after_ms: u64::MAX,
            on_chain: Some(on_chain.to_bytes().to_vec()),
        }
    }

    /// Stores a new key for `tx` with the facts of [`elsewhere`].
    pub(super) fn hold_elsewhere(service: &Service, tx: &TxId) {
        service
            .store
            .rows()
            .insert_key(tx, &elsewhere(), &DataKey::generate())
            .unwrap();
    }

    /// A live read grant of patient `[1; 16]` to a doctor of validator 0.
    pub(super) fn grant_live(service: &mut Service) {
        let grant = store::ReadGrantRow {
            grant: [9; 32],
            patient: [1; 16],
            expires_ms: u64::MAX,
        };
        service.read_grants.insert(grant.grant, grant);
    }

    /// The test service's `keys.db`, opened beside it.
    pub(super) fn keys_db(dir: &std::path::Path) -> rusqlite::Connection {
        rusqlite::Connection::open(dir.join("a").join("keys.db")).unwrap()
    }

    /// Aside 2: a row read again from the chain while the chain is behind the processed height
    /// (a `keys.db` kept newer than a restored `chain.db`, §5.6) was written with its tag and
    /// not judged (no grant can be judged then), and nothing judged it later: no start judges a
    /// row whose tag holds. A grantee whose row's patient was moved on disk, and whose store
    /// recorded the true patient's grant's end while the row named another, kept the key for
    /// good once a start with the chain behind had tagged it. Now it is written, and judged,
    /// once the chain has caught up.
    #[test]
    fn a_row_relearned_while_the_chain_is_behind_is_judged_once_it_has_caught_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut service = feed::tests::service(dir.path());
        let tx = [5; 32];
        hold_elsewhere(&service, &tx);
        // Its patient moved on disk; the true patient's grant ended (and was removed from the
        // store) while the row named the other: no live grant is left.
        keys_db(dir.path())
            .execute("UPDATE data_keys SET patient = ?1", [[9u8; 16].as_slice()])
            .unwrap();
        let row = service.store.rows().held(&tx).unwrap().unwrap();
        assert_eq!(row.tag, Tag::Invalid);
        // The chain behind: the sweep reads the row, the chain answers its facts
        // (`Service::trusted`, here as it leaves them), the timer writes what was relearned.
        service.waits_for_chain = true;
        service.relearned.insert(tx, elsewhere());
        service.write_relearned().unwrap();
        let vouches = !service.left_refused;
        // The chain has caught up (`Service::rejoin_chain`): loaded again, a sweep from the
        // first row (as after the open of an edited store), the timer's writes.
        service.load().unwrap();
        assert!(!service.waits_for_chain);
        service.checked_to = Some(0);
        service.check_rows().unwrap();
        service.write_relearned().unwrap();
        assert!(
            service.store.rows().key(&tx).unwrap().is_none(),
            "a grantee keeps an ended grant's key: its row, moved on disk, was tagged while the \
             chain was behind, and never judged after (tag {:?})",
            service.store.rows().held(&tx).unwrap().map(|row| row.tag)
        );
        assert!(
            !vouches,
            "a stop with the chain behind, the facts not yet written, vouches for the file"
        );
    }

    /// Aside 3: a row of a transaction the chain erased is put back on disk (a copy the
    /// erasure did not find, or an old backup's row: it opens with the operator key). The key
    /// was given to nobody (an erased transaction is answered `Erased`), but its bytes stayed
    /// in `keys.db` for good. The sweep after a start deletes it.
    #[test]
    fn the_sweep_deletes_a_row_of_an_erased_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut service = feed::tests::service(dir.path());
        let (erased, kept) = ([5; 32], [6; 32]);
        for tx in [erased, kept] {
            hold_elsewhere(&service, &tx);
        }
        // Validator 0 holds both as a live grantee of their patient (red team s49: the sweep
        // judges entitlement too).
        grant_live(&mut service);
        // Its erasure, as `Service::load` reads it from the chain.
        service.index.erase(erased);
        service.checked_to = Some(0);
        service.check_rows().unwrap();
        let rows = service.store.rows();
        assert_eq!(
            (
                rows.key(&erased).unwrap().is_some(),
                rows.key(&kept).unwrap().is_some()
            ),
            (false, true),
            "the row of an erased transaction outlives the sweep"
        );
        assert_eq!(service.counters.keys_rows_refused, 1);
    }
}

/// Red team s49 (session 23's change: a row relearned with the chain behind waits to be
/// judged; the sweep deletes rows of erased transactions). The sweep after a start judges a
/// row whose tag holds for its erasure only, never for this validator's entitlement.
#[cfg(test)]
mod red_team_s49 {
    use super::s46_asides::{elsewhere, grant_live, hold_elsewhere, keys_db};
    use super::*;

    type Row = (
        i64,
        Vec<u8>,
        Vec<u8>,
        Vec<u8>,
        i64,
        Vec<u8>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
    );

    /// The row of `tx` as `keys.db` holds it, every column.
    fn saved_row(dir: &std::path::Path, tx: &TxId) -> Row {
        keys_db(dir)
            .query_row(
                "SELECT seq, tx, patient, key_id, not_after_ms, sealed_key, on_chain, facts_tag
                 FROM data_keys WHERE tx = ?1",
                [tx.as_slice()],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                    ))
                },
            )
            .unwrap()
    }

    /// Puts `row` back in `keys.db`, byte for byte (a writer of the disk with an older copy).
    fn put_back(dir: &std::path::Path, row: &Row) {
        keys_db(dir)
            .execute(
                "INSERT INTO data_keys
                    (seq, tx, patient, key_id, not_after_ms, sealed_key, on_chain, facts_tag)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                rusqlite::params![row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7],
            )
            .unwrap();
    }

    /// A grantee's row of a record, held while the grant was live. The grant ends (the row
    /// is deleted, as `end_grant` does); a writer of the stopped validator's disk puts the row
    /// back, byte for byte, from an older copy of `keys.db` (it opens with the operator key,
    /// and its tag holds: the tag binds the chain and the transaction, not the time). The
    /// sweep after the next start reads every row (the file changed) and deletes a put-back
    /// row of an *erased* transaction (session 23), but trusts this one: nothing judges a row
    /// whose tag holds for entitlement, so the key of an ended grant is kept for good (and
    /// opens at this validator: `lookup` answers `Held` for any held key not erased).
    #[test]
    fn red_team_s49_a_row_put_back_after_its_grants_end_outlives_the_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let mut service = feed::tests::service(dir.path());
        let tx = [5; 32];
        hold_elsewhere(&service, &tx);
        let saved = saved_row(dir.path(), &tx);
        // The grant's end: no grant of the patient is live, the key goes.
        assert!(!service.grantee_of(&[1; 16]));
        assert!(service.store.rows().delete_key(&tx).unwrap());
        // Put back on disk, as it was.
        put_back(dir.path(), &saved);
        // The sweep of every row after a start (the file changed), then the timer's writes.
        service.checked_to = Some(0);
        service.check_rows().unwrap();
        service.write_relearned().unwrap();
        assert_eq!(service.checked_to, None, "the sweep is done");
        // It read the row, found it valid and indexed it again.
        assert_eq!(
            service.store.rows().held(&tx).unwrap().map(|row| row.tag),
            None,
            "a row put back after its grant's end outlives the sweep, its tag valid"
        );
        assert!(
            service.store.rows().key(&tx).unwrap().is_none(),
            "a row put back after its grant's end outlives the sweep: the key of an ended \
             grant is kept (and opens here) for good"
        );
    }

    /// Control: the same row with the grant still live is kept by the sweep (what a fix that
    /// judges entitlement in the sweep must not delete).
    #[test]
    fn red_team_s49_control_a_live_grantees_row_is_kept_by_the_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let mut service = feed::tests::service(dir.path());
        let tx = [5; 32];
        hold_elsewhere(&service, &tx);
        grant_live(&mut service);
        assert!(service.grantee_of(&[1; 16]));
        service.checked_to = Some(0);
        service.check_rows().unwrap();
        service.write_relearned().unwrap();
        assert!(service.store.rows().key(&tx).unwrap().is_some());
    }

    /// The author's aside: `read_grants` rows are not authenticated. A writer of the stopped
    /// grantee's disk deletes the grant's row: the grant is then not in memory, its end (by
    /// the clock, or a revocation) finds nothing to end (`end_grant` returns early), and the
    /// key stays; the sweep does not judge it either. Here the grant's row is absent from the
    /// start (what the service reads after the deletion) and its time has passed.
    #[test]
    fn red_team_s49_a_deleted_grant_row_keeps_its_keys_past_the_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let mut service = feed::tests::service(dir.path());
        let tx = [5; 32];
        hold_elsewhere(&service, &tx);
        // The grant expired (its row was deleted on disk before): nothing ends it.
        service.end_grants_by_clock().unwrap();
        service.checked_to = Some(0);
        service.check_rows().unwrap();
        service.write_relearned().unwrap();
        assert!(
            service.store.rows().key(&tx).unwrap().is_none(),
            "a grantee whose grant row was deleted on disk keeps the patient's keys past the \
             grant's end and the sweep"
        );
    }

    /// §16.13 with an erasure: B was sealed with the data key of A (one key, two
    /// transactions). B's row came first; when A, earlier on chain, arrived, B's row made way
    /// (deleted, B marked broken) and A's was stored; then A was erased, and no row held the
    /// key. A writer of the stopped validator's disk puts B's row back from an older copy of
    /// `keys.db`: its tag holds, B is not erased, this validator is a party of B: the sweep
    /// trusts it (it deletes put-back rows of erased transactions only, not of broken ones),
    /// and A's erased key is in `keys.db` again for good (§7.2: no copy left), B opening with
    /// it (`lookup` answers `Held` before it asks whether B is broken).
    #[test]
    fn red_team_s49_a_broken_rows_copy_of_an_erased_key_outlives_the_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let mut service = feed::tests::service(dir.path());
        let mine = Facts {
            on_chain: Some(
                OnChain {
                    parties: Parties {
                        sealer: 0,
                        patient_home: 2,
                        doctor_home: 3,
                    },
                    record: true,
                }
                .to_bytes()
                .to_vec(),
            ),
            ..elsewhere()
        };
        let (earlier, later) = ([5; 32], [6; 32]);
        let key = DataKey::generate();
        let id = ledger::seal::key_id(&key);
        {
            let rows = service.store.rows();
            rows.insert_key(&later, &mine, &key).unwrap();
        }
        let saved = saved_row(dir.path(), &later);
        {
            let rows = service.store.rows();
            // What `keep_key` does when the earlier arrives: the later makes way.
            rows.delete_key(&later).unwrap();
            rows.mark_broken(&later, &id).unwrap();
            rows.insert_key(&earlier, &mine, &key).unwrap();
            // The earlier's erasure.
            assert!(rows.delete_key(&earlier).unwrap());
        }
        service.index.erase(earlier);
        // The later's row put back on disk.
        put_back(dir.path(), &saved);
        service.checked_to = Some(0);
        service.check_rows().unwrap();
        service.write_relearned().unwrap();
        assert_eq!(service.checked_to, None, "the sweep is done");
        let copies: i64 = keys_db(dir.path())
            .query_row(
                "SELECT count(*) FROM data_keys WHERE key_id = ?1",
                [id.as_slice()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            (copies, service.store.rows().key(&later).unwrap().is_some()),
            (0, false),
            "the erased transaction's key outlives the sweep in a broken transaction's row put \
             back"
        );
    }

    /// Relearned facts wait in memory while the chain is behind (session 23): every row the
    /// sweep finds untagged or refused (a store migrated from schema 4 holds only such rows)
    /// adds one entry, and none is written until the chain has caught up. Before, each
    /// timer's slice was written at that timer. Modelled as the sweep leaves them
    /// (`Service::trusted` inserts the chain's facts, a timer's slice of 256 rows at a time):
    /// memory grows with the store, about 120 bytes a row (1.2 GB at 10,000,000 rows). The
    /// bound asserted, 65,536, is what a fix may hold (rt-s49-waiting-memory.patch).
    #[test]
    fn red_team_s49_relearned_facts_held_while_waiting_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut service = feed::tests::service(dir.path());
        service.waits_for_chain = true;
        for i in 0..200_000u32 {
            let mut tx = [0; 32];
            tx[..4].copy_from_slice(&i.to_le_bytes());
            service.relearned.insert(tx, elsewhere());
            if i % 256 == 255 {
                service.write_relearned().unwrap();
            }
        }
        assert!(
            service.relearned.len() <= 65_536,
            "{} facts held in memory while the chain is behind",
            service.relearned.len()
        );
        assert!(service.left_refused, "a stop vouches for the file");
    }
}
