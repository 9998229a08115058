//! Chains made without the protocol by one who holds every validator's key, as only a bench
//! does: the load's transactions (the same grants and records, signed and sealed the same way,
//! [`crate::load`]) in blocks certified by a quorum of the validators' real keys.
//!
//! Two uses. The ceiling ([`Ceiling`], `medchain bench --mode ceiling`): what the validators'
//! machine can commit with no consensus at all, each validator applying every block the way it
//! applies a committed block a peer sends it (`ledger::verify::check_block`: the certificate,
//! the Merkle root and every transaction signature, batched; then `Store::append_block`: the
//! rules and one durable SQLite transaction per block). Its transactions are sealed here and
//! their data keys stored in the `keys.db` of every home entitled to them between measured
//! spans ([`crate::keys::OfflineKeys`]), so that the chain it leaves is one the load would have
//! left once its key services had exchanged the keys: they learn the new blocks at their next
//! start, and have nothing to fetch. And the prefill ([`prefill`], `medchain
//! bench --prefill N`): a chain of N transactions made fast, before a measured run, so that a
//! big chain can be measured without hours of load first, made and its keys kept the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger::block::{Block, BlockHeader, Certificate};
use ledger::crypto::{SigningKey, VerifyingKey};
use ledger::master::Purpose;
use ledger::{Genesis, Hash, OpenOptions, SignedTx, Store};
use pbft::ReplicaId;

use crate::cluster::ClusterOptions;
use crate::error::NodeError;
use crate::handle::NodeHandle;
use crate::keys::{KeystoreKey, OfflineKeys, OfflineSeal};
use crate::load::{Person, Population};
use crate::node::validator_dir;

/// A block made here, with the transactions its entries carry (as a validator decodes them).
pub struct Made {
    pub block: Block,
    transactions: Vec<SignedTx>,
}

/// The validators of a development network, with every one's genesis key.
struct Holder {
    genesis: Arc<Genesis>,
    keys: Vec<SigningKey>,
    /// Each validator's key for its `keys.db`, from its operator key.
    keystore_keys: Vec<KeystoreKey>,
    dirs: Vec<PathBuf>,
}

impl Holder {
    /// The network in `data_dir` (made by `init_dev_network`), its operator keys in `key_dir`.
    fn open(data_dir: &Path, key_dir: &Path) -> Result<Holder, NodeError> {
        let genesis = Arc::new(Genesis::load(&data_dir.join("genesis.toml"))?);
        let operator_keys = crate::cluster::operator_keys(&genesis, data_dir, key_dir)?;
        let mut keys = Vec::with_capacity(genesis.len());
        let mut keystore_keys = Vec::with_capacity(genesis.len());
        let mut dirs = Vec::with_capacity(genesis.len());
        for (validator, operator_key) in genesis.validators().iter().zip(&operator_keys) {
            keystore_keys.push(KeystoreKey::new(operator_key.subkey(Purpose::Keystore)));
            let dir = validator_dir(data_dir, &validator.name);
            let key = ledger::master::read_node_key(
                &dir.join(ledger::master::NODE_KEY_FILE),
                operator_key,
                &validator.name,
            )?;
            keys.push(key);
            dirs.push(dir);
        }
        Ok(Holder {
            genesis,
            keys,
            keystore_keys,
            dirs,
        })
    }

    fn chain_path(&self, validator: usize) -> PathBuf {
        self.dirs[validator].join("chain.db")
    }

    /// Every validator's key store (none may be running).
    fn key_stores(&self) -> Result<Vec<OfflineKeys>, NodeError> {
        self.dirs
            .iter()
            .zip(&self.keystore_keys)
            .map(|(dir, key)| OfflineKeys::open(dir, self.genesis.hash(), key.clone()))
            .collect()
    }
}

/// Stores each of `seals`' keys at the validators that keep it, as their seals and their key
/// services' fetches would have.
fn keep_at_holders(key_stores: &[OfflineKeys], seals: &[OfflineSeal]) -> Result<(), NodeError> {
    for (validator, key_store) in key_stores.iter().enumerate() {
        key_store.keep(
            seals
                .iter()
                .filter(|seal| seal.holders.contains(&(validator as ReplicaId))),
        )?;
    }
    Ok(())
}

/// Makes the blocks: the load's population, its enrollment, then its grants and records.
struct Maker {
    holder: Holder,
    people: Population,
    /// The next record of the load (each is a grant and the record under it).
    next_record: u64,
    /// The last block made: height, hash, time.
    head: (u64, Hash, u64),
}

impl Maker {
    fn new(holder: Holder, store: &Store) -> Maker {
        let homes: Vec<ReplicaId> = (0..holder.keys.len() as ReplicaId).collect();
        let (height, hash) = store.head();
        Maker {
            holder,
            people: Population::new(&homes),
            next_record: 0,
            head: (height, hash, store.head_time_ms()),
        }
    }

    fn genesis_hash(&self) -> Hash {
        self.holder.genesis.hash()
    }

    /// The blocks enrolling the population, each by its home (signed with the home's key).
    fn enrollment(&mut self) -> Vec<Made> {
        let genesis_hash = self.genesis_hash();
        let transactions: Vec<SignedTx> = self
            .people
            .everyone()
            .into_iter()
            .map(|person: &Person| {
                SignedTx::sign(
                    person.enrollment(&genesis_hash),
                    Vec::new(),
                    &genesis_hash,
                    &self.holder.keys[person.home as usize],
                )
            })
            .collect();
        self.blocks_of(transactions)
    }

    /// The next blocks, holding `transactions` of the load (rounded up to whole records: a
    /// grant and the record under it, in the same block), made on every core; and their data
    /// keys, for their homes.
    fn records(&mut self, transactions: u64) -> Result<(Vec<Made>, Vec<OfflineSeal>), NodeError> {
        let records = transactions.div_ceil(2);
        let first = self.next_record;
        self.next_record += records;
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let per_worker = records.div_ceil(workers).max(1);
        let genesis_hash = self.genesis_hash();
        let people = &self.people;
        let parts: Vec<Result<Vec<(SignedTx, OfflineSeal)>, NodeError>> =
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..workers)
                    .map(|w| {
                        let from = first + w * per_worker;
                        let to = (from + per_worker).min(first + records);
                        scope.spawn(move || {
                            let mut made = Vec::with_capacity(2 * to.saturating_sub(from) as usize);
                            for i in from..to {
                                made.extend(people.offline_pair(i, &genesis_hash)?);
                            }
                            Ok(made)
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|worker| {
                        worker.join().unwrap_or_else(|_| {
                            Err(NodeError::Config("a block maker panicked".into()))
                        })
                    })
                    .collect()
            });
        let mut transactions = Vec::with_capacity(2 * records as usize);
        let mut seals = Vec::with_capacity(2 * records as usize);
        for part in parts {
            for (tx, seal) in part? {
                transactions.push(tx);
                seals.push(seal);
            }
        }
        Ok((self.blocks_of(transactions), seals))
    }

    /// `transactions` in blocks of at most the genesis's `max_batch` (a grant and its record
    /// never apart), each certified by a quorum.
    fn blocks_of(&mut self, transactions: Vec<SignedTx>) -> Vec<Made> {
        // Even, so that a grant and the record under it share a block.
        let per_block = (self.holder.genesis.max_batch() & !1).max(2);
        let mut made = Vec::new();
        let mut transactions = transactions.into_iter().peekable();
        while transactions.peek().is_some() {
            let chunk: Vec<SignedTx> = transactions.by_ref().take(per_block).collect();
            made.push(self.block(chunk));
        }
        made
    }

    /// The block after the head holding `transactions`, proposed in view 0 by its primary at
    /// the later of now and just after the head's time, with the commit signatures of the
    /// first 2f+1 validators.
    fn block(&mut self, transactions: Vec<SignedTx>) -> Made {
        let genesis_hash = self.genesis_hash();
        let (height, prev_hash, prev_time_ms) = self.head;
        let height = height + 1;
        let time_ms = crate::clock::system_now_ms().max(prev_time_ms + 1);
        let entries: Vec<pbft::Request> = transactions
            .iter()
            .map(|tx| tx.to_request(&genesis_hash))
            .collect();
        let view = 0;
        let header = BlockHeader::build(height, view, 0, prev_hash, time_ms, &entries);
        let hash = header.hash();
        let signatures = (0..self.holder.genesis.quorum())
            .map(|signer| {
                let signature = ledger::crypto::sign_commit(
                    &self.holder.keys[signer],
                    &genesis_hash,
                    view,
                    height,
                    &hash,
                );
                (signer as u32, signature)
            })
            .collect();
        self.head = (height, hash, time_ms);
        Made {
            block: Block {
                header,
                entries,
                certificate: Certificate { view, signatures },
            },
            transactions,
        }
    }
}

/// One block applied by every validator of a [`Ceiling`].
#[derive(Clone, Copy, Debug)]
pub struct BlockApplied {
    pub transactions: u64,
    /// From the start of [`Ceiling::apply`] to this block stored by the last validator.
    pub stored_at: Duration,
    /// The longest any validator took to check and store it.
    pub slowest: Duration,
}

/// The validators of a network applying blocks with no protocol: the ceiling of what the
/// consensus can commit on this machine (see the module's documentation).
pub struct Ceiling {
    maker: Maker,
    stores: Vec<Store>,
    /// Every validator's key store, for the keys of the records it is entitled to.
    key_stores: Vec<OfflineKeys>,
    keys: Vec<VerifyingKey>,
}

impl Ceiling {
    /// Opens every validator's chain of the network in `data_dir` (none may be running), its
    /// operator keys in `key_dir`, and enrolls the load's population.
    pub fn open(data_dir: &Path, key_dir: &Path) -> Result<Ceiling, NodeError> {
        let holder = Holder::open(data_dir, key_dir)?;
        let mut stores = Vec::with_capacity(holder.dirs.len());
        for validator in 0..holder.dirs.len() {
            // Made or verified when the validators ran; verifying a long chain again here
            // would only delay the measurement.
            stores.push(Store::open(
                &holder.chain_path(validator),
                &holder.genesis,
                OpenOptions::unverified(),
            )?);
        }
        let key_stores = holder.key_stores()?;
        let keys = holder.genesis.keys().to_vec();
        let maker = Maker::new(holder, &stores[0]);
        let mut ceiling = Ceiling {
            maker,
            stores,
            key_stores,
            keys,
        };
        let enrollment = ceiling.maker.enrollment();
        ceiling.apply(&enrollment)?;
        Ok(ceiling)
    }

    pub fn validators(&self) -> usize {
        self.stores.len()
    }

    /// The most transactions in a block (the genesis's).
    pub fn max_batch(&self) -> usize {
        self.maker.holder.genesis.max_batch()
    }

    /// The next blocks of the load, `transactions` of them (rounded up to whole records),
    /// their data keys stored at every home entitled to them, as the homes' seals and their
    /// key services' fetches would store them (not measured: a home's work before the client
    /// submits, and the key exchange, which the ceiling leaves out).
    pub fn make(&mut self, transactions: u64) -> Result<Vec<Made>, NodeError> {
        let (blocks, seals) = self.maker.records(transactions)?;
        keep_at_holders(&self.key_stores, &seals)?;
        Ok(blocks)
    }

    /// Every validator, in a thread of its own, checks and stores `blocks` in order as it
    /// would a committed block from a peer. Refuses a block a rule rejects a transaction of
    /// (the load's transactions all apply).
    pub fn apply(&mut self, blocks: &[Made]) -> Result<Vec<BlockApplied>, NodeError> {
        let started = Instant::now();
        let genesis_hash = self.maker.genesis_hash();
        let keys = &self.keys;
        let timings: Vec<Result<Vec<(Duration, Duration)>, NodeError>> =
            std::thread::scope(|scope| {
                let validators: Vec<_> = self
                    .stores
                    .iter_mut()
                    .map(|store| {
                        scope.spawn(move || {
                            let mut timings = Vec::with_capacity(blocks.len());
                            for made in blocks {
                                let begun = Instant::now();
                                let checked =
                                    ledger::verify::check_block(keys, &genesis_hash, &made.block)?;
                                let applied = store.append_block(&made.block, &checked)?;
                                if let Some((index, reason)) = applied.rejected.first() {
                                    return Err(NodeError::Corrupt(format!(
                                        "entry {index} of block {} was rejected: {reason}",
                                        made.block.header.height
                                    )));
                                }
                                timings.push((begun.elapsed(), started.elapsed()));
                            }
                            Ok(timings)
                        })
                    })
                    .collect();
                validators
                    .into_iter()
                    .map(|validator| {
                        validator.join().unwrap_or_else(|_| {
                            Err(NodeError::Config("a validator's thread panicked".into()))
                        })
                    })
                    .collect()
            });
        let mut applied: Vec<BlockApplied> = blocks
            .iter()
            .map(|made| BlockApplied {
                transactions: made.block.entries.len() as u64,
                stored_at: Duration::ZERO,
                slowest: Duration::ZERO,
            })
            .collect();
        for timing in timings {
            for (block, (took, stored_at)) in applied.iter_mut().zip(timing?) {
                block.slowest = block.slowest.max(took);
                block.stored_at = block.stored_at.max(stored_at);
            }
        }
        Ok(applied)
    }
}

/// The mean size of the transactions of `blocks` as the chain stores them.
pub fn mean_tx_bytes(blocks: &[Made]) -> f64 {
    let (entries, bytes) = blocks
        .iter()
        .flat_map(|made| &made.block.entries)
        .fold((0u64, 0u64), |(entries, bytes), entry| {
            (entries + 1, bytes + entry.payload.len() as u64)
        });
    if entries == 0 {
        0.0
    } else {
        bytes as f64 / entries as f64
    }
}

/// Transactions made and stored per round of the prefill (about 10 MB of blocks in memory).
const PREFILL_ROUND: u64 = 16_000;
/// The file the prefill builds its chain in, in the network's folder.
const PREFILL_FILE: &str = "prefill-chain.db";
/// How long the key services may fetch no key before the prefill stops waiting for them.
const KEYS_STALL: Duration = Duration::from_secs(60);

/// How a prefill goes, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub enum PrefillProgress {
    /// So many transactions on the chain being built.
    Stored(u64),
    /// The chain is in place; the key services, catching up, still wait for so many keys.
    KeysWaiting(u64),
}

/// What a prefill did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Prefilled {
    /// Transactions added to every validator's chain (the enrollment included).
    pub transactions: u64,
    /// Keys the key services were still waiting for when the prefill stopped waiting (they
    /// fetched none for [`KEYS_STALL`]); zero when every key was in place.
    pub keys_waiting: u64,
    /// Keys the key services fetched from each other once the chain was in place: none when
    /// every home kept its keys as it made the records.
    pub keys_fetched: u64,
}

/// Adds a chain of at least `transactions` of the load's transactions (the population's
/// enrollment, then its grants and records) to every validator of the embedded cluster
/// `options` describes, stopped, whose validators must all be at the same height.
///
/// Made as the ceiling makes its blocks: each transaction sealed and signed here as its home
/// would ([`crate::load::Person::sealed_offline`]), its data key stored in the `keys.db` of
/// every home that keeps it ([`OfflineKeys`]), and the blocks certified by a quorum's real
/// keys, appended to a copy of the first validator's chain with the verdicts made with them
/// (this made and signed them: checking them again would find the same). That chain is then
/// copied to every validator: the stores are byte for byte what applying the same blocks
/// would make, as every validator's chain is the same, and the key stores what the homes'
/// seals and their key services' fetches would have left. The validators are then started
/// once more, until their key services have processed the new blocks and want no key.
/// Before, the records were sealed through the running homes and the other party's key
/// fetched at that start: on a chain of 10 M, 1.8 M keys per validator, hours of key exchange
/// (BENCHMARKS.md, "thirty-sixth"). A prefill that fails or is stopped before its chain is
/// copied leaves the rows of the keys it made with no block: pending seals, loaded at every
/// start and deleted once a block's time passes their deadline, an hour after they were made
/// (red team s82 F3b; as for a ceiling stopped between its keys and its blocks).
pub fn prefill(
    options: ClusterOptions,
    transactions: u64,
    mut progress: impl FnMut(PrefillProgress),
) -> Result<Prefilled, NodeError> {
    let holder = Holder::open(&options.data_dir, &options.key_dir)?;
    let chains: Vec<PathBuf> = (0..holder.dirs.len())
        .map(|v| holder.chain_path(v))
        .collect();
    same_head(&chains, &holder.genesis)?;
    let building = options.data_dir.join(PREFILL_FILE);
    copy_chain(&chains[0], &building)?;
    let mut store = Store::open(&building, &holder.genesis, OpenOptions::unverified())?;
    let key_stores = holder.key_stores()?;
    let mut maker = Maker::new(holder, &store);
    let mut stored = 0;
    let mut blocks = maker.enrollment();
    loop {
        for made in blocks {
            let checked: Vec<ledger::Checked> = made.transactions.into_iter().map(Ok).collect();
            store.append_block(&made.block, &checked)?;
            stored += checked.len() as u64;
        }
        progress(PrefillProgress::Stored(stored));
        if stored >= transactions {
            break;
        }
        let seals;
        (blocks, seals) = maker.records((transactions - stored).min(PREFILL_ROUND))?;
        keep_at_holders(&key_stores, &seals)?;
    }
    drop(key_stores);
    drop(store);
    for chain in &chains {
        copy_chain(&building, chain)?;
    }
    remove_chain(&building)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (keys_waiting, keys_fetched) = runtime.block_on(keys_in_place(options, &mut progress))?;
    Ok(Prefilled {
        transactions: stored,
        keys_waiting,
        keys_fetched,
    })
}

/// The head every chain of `chains` is at, or an error if they differ.
fn same_head(chains: &[PathBuf], genesis: &Genesis) -> Result<(u64, Hash), NodeError> {
    let mut heads = Vec::with_capacity(chains.len());
    for chain in chains {
        heads.push(Store::open(chain, genesis, OpenOptions::unverified())?.head());
    }
    match heads.first() {
        Some(first) if heads.iter().all(|head| head == first) => Ok(*first),
        _ => Err(NodeError::Config(format!(
            "a prefill needs every validator at the same height: {:?}",
            heads.iter().map(|(height, _)| height).collect::<Vec<_>>()
        ))),
    }
}

/// Starts the cluster and waits until every key service has processed the chain and holds
/// every key it is entitled to, or has fetched none for [`KEYS_STALL`]; the keys still waited
/// for then, and those fetched.
async fn keys_in_place(
    options: ClusterOptions,
    progress: &mut impl FnMut(PrefillProgress),
) -> Result<(u64, u64), NodeError> {
    let cluster = crate::Cluster::start(options)?;
    let handles = cluster.handles();
    let head = handles[0].status().height;
    let (mut fewest, mut busy_behind, mut since) = (u64::MAX, 0, Instant::now());
    let waiting = loop {
        let statuses: Vec<_> = handles.iter().map(NodeHandle::key_status).collect();
        let waiting: u64 = statuses.iter().map(|status| status.waiting).sum();
        let processed = statuses
            .iter()
            .all(|status| status.processed_height >= head);
        // A holder still catching up answers every request `Busy`: no key comes meanwhile,
        // yet nothing is stuck (on a chain of 10 M, larger than the page cache, that took
        // several minutes and the prefill gave up on 7.4 M keys).
        let behind: u64 = statuses
            .iter()
            .map(|status| status.counters.keys_requests_busy_behind)
            .sum();
        progress(PrefillProgress::KeysWaiting(waiting));
        if processed && waiting == 0 {
            break 0;
        }
        if waiting < fewest || !processed || behind > busy_behind {
            (fewest, busy_behind, since) = (waiting.min(fewest), behind, Instant::now());
        } else if since.elapsed() > KEYS_STALL {
            break waiting;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let fetched = handles
        .iter()
        .map(|handle| handle.key_status().counters.keys_received)
        .sum();
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .ok();
    Ok((waiting, fetched))
}

/// Deletes the closed chain at `path` and its WAL.
fn remove_chain(path: &Path) -> Result<(), NodeError> {
    for file in [
        path.to_path_buf(),
        with_suffix(path, "-wal"),
        with_suffix(path, "-shm"),
    ] {
        if file.exists() {
            std::fs::remove_file(&file)?;
        }
    }
    Ok(())
}

/// `path` with `suffix` appended to its file name (SQLite's `-wal`, `-shm`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Replaces the chain at `to` (closed) with a copy of the chain at `from` (closed).
fn copy_chain(from: &Path, to: &Path) -> Result<(), NodeError> {
    remove_chain(to)?;
    std::fs::copy(from, to)?;
    let wal = with_suffix(from, "-wal");
    if wal.exists() {
        std::fs::copy(&wal, with_suffix(to, "-wal"))?;
    }
    std::fs::File::open(to)?.sync_all()?;
    Ok(())
}
