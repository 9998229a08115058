//! Starting one validator: open and verify its stores, restore its replica, start its thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use ledger::master::{self, MasterKey, Purpose};
use ledger::{Genesis, OpenOptions, Queries, Store};
use pbft::{Durable, ReplicaId};
use rand::RngCore;
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::acknowledged::{self, ACKNOWLEDGED_DIR};
use crate::clock::Clock;
use crate::config::Timing;
use crate::error::NodeError;
use crate::handle::NodeHandle;
use crate::incarnation;
use crate::keys::{KeyInbox, KeyService, KeyServiceConfig, KeystoreKey};
use crate::local_store::LocalStore;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::status::Shared;
use crate::transport::{Transport, ValidatorIdentity, Wiring};
use crate::verify::Authenticator;
use crate::wire::FrameLimits;

/// The energy estimate's default draw of one busy core: a mid-range server core under load.
pub const DEFAULT_WATTS_PER_CORE: f64 = 15.0;

/// Events queued for a validator's thread before submitters are told it is busy.
const INBOX_EVENTS: usize = 65_536;

/// Everything one validator needs to start.
#[derive(Clone)]
pub struct NodeOptions {
    /// The validator's folder: node.key, node.incarnation, chain.db, node.db, keys.db.
    pub dir: PathBuf,
    pub name: String,
    /// The operator key (docs/SECURITY.md, "Confidential records", §3.3): it opens node.key.
    pub operator_key: MasterKey,
    /// The operator key's [`Purpose::Keystore`] subkey, which seals the rows of keys.db.
    pub keystore_key: Zeroizing<[u8; 32]>,
    pub timing: Timing,
    /// Watts one busy core draws, for the energy estimate of `/api/metrics`.
    pub watts_per_core: f64,
    /// Requests the replica may hold before new submissions are refused as busy.
    pub max_pending: usize,
    /// The clock the validator goes by (the system clock, or a test's manual clock).
    pub clock: Clock,
    /// Makes this validator Byzantine (tests of issue 8 only).
    #[cfg(feature = "byzantine")]
    pub byzantine: Option<crate::byzantine::Behaviours>,
}

impl std::fmt::Debug for NodeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys are left out: their bytes must never reach a log.
        f.debug_struct("NodeOptions")
            .field("dir", &self.dir)
            .field("name", &self.name)
            .field("timing", &self.timing)
            .field("watts_per_core", &self.watts_per_core)
            .field("max_pending", &self.max_pending)
            .finish_non_exhaustive()
    }
}

impl NodeOptions {
    /// The options of validator `name` in folder `dir`, its secrets opened with
    /// `operator_key`.
    pub fn new(
        dir: impl Into<PathBuf>,
        name: impl Into<String>,
        timing: Timing,
        operator_key: MasterKey,
    ) -> Self {
        Self {
            dir: dir.into(),
            name: name.into(),
            keystore_key: operator_key.subkey(Purpose::Keystore),
            operator_key,
            timing,
            watts_per_core: DEFAULT_WATTS_PER_CORE,
            max_pending: 200_000,
            clock: Clock::System,
            #[cfg(feature = "byzantine")]
            byzantine: None,
        }
    }
}

/// A running validator.
pub struct Node {
    handle: NodeHandle,
    thread: Option<JoinHandle<()>>,
    keys: Option<KeyService>,
}

impl Node {
    /// Opens the validator's stores (verifying its chain; a tampered store is refused, naming
    /// the bad block), restores its replica and starts its thread. `transport` is given the
    /// inbox that frames from peers must be delivered to, the identity its channels prove and
    /// check, and the bounds of what peers may send.
    pub fn start(
        mut options: NodeOptions,
        genesis: Arc<Genesis>,
        transport: impl FnOnce(Wiring) -> Result<Box<dyn Transport>, NodeError>,
    ) -> Result<Self, NodeError> {
        // The batch size is the network's (a backup refuses a larger one): the genesis's.
        if options.timing.max_batch != genesis.max_batch() {
            info!(
                configured = options.timing.max_batch,
                genesis = genesis.max_batch(),
                "max_batch comes from the genesis file"
            );
            options.timing.max_batch = genesis.max_batch();
        }
        let id = genesis.index_of(&options.name).ok_or_else(|| {
            NodeError::Config(format!(
                "validator '{}' is not in the genesis file",
                options.name
            ))
        })?;
        // Whatever an older medchain or a hand left looser than 0700/0600 is tightened first.
        ledger::files::tighten(&options.dir)?;
        let key_path = options.dir.join(master::NODE_KEY_FILE);
        let key = master::read_node_key(&key_path, &options.operator_key, &options.name)?;
        if key.verifying_key() != genesis.keys()[id as usize] {
            return Err(NodeError::Config(format!(
                "{}: node.key does not match this validator's entry in genesis.toml ('{}')",
                key_path.display(),
                options.name
            )));
        }
        let chain_path = options.dir.join("chain.db");
        let mut chain = Store::open(&chain_path, &genesis, OpenOptions::default())?;
        let mut local = LocalStore::open(&options.dir.join("node.db"))?;
        let (acknowledged, stored) = acknowledged::open_taking_over(
            &options.dir.join(ACKNOWLEDGED_DIR),
            &mut local,
            &|id| Ok(chain.contains_transaction(id)?),
        )?;
        // Before anything is sent: whether this replica may have voted in a state its node.db
        // no longer holds (deleted, or restored from a backup), recorded durably.
        let mut start = incarnation::begin(&options.dir, &genesis.hash(), &mut local)?;
        let (height, hash) = chain.head();
        let restored = local.durable_with(&chain, height)?;
        let mut durable = restored.records;
        if let Some(seq) = restored.lost_votes {
            // Records it may have voted by name proposals chain.db no longer holds (a chain.db
            // older than node.db, or deleted): it recovers as one that lost its node.db, and
            // records so, durably, before anything is sent.
            let recovery = Durable::Recovery { bound: None };
            local.append_durable(std::slice::from_ref(&recovery), &mut chain)?;
            durable.push(recovery);
            start.recovering.get_or_insert(format!(
                "chain.db lacks the proposal of a protocol record at sequence number {seq} \
                 (older than node.db, or deleted): its votes there are forgotten"
            ));
        }
        // The last checkpoint executed, for the replica to vouch for again (`pbft::Restored`).
        let checkpoint_seq = height - height % options.timing.checkpoint_interval.max(1);
        let executed_checkpoint = match checkpoint_seq {
            0 => None,
            seq => chain.block(seq)?.map(|block| (seq, block.hash())),
        };
        let head_time_ms = chain
            .block(height)?
            .map(|block| block.header.timestamp_ms)
            .ok_or_else(|| {
                NodeError::Corrupt(format!("chain.db has no block at its head {height}"))
            })?;
        info!(validator = %options.name, height, incarnation = start.incarnation, "chain verified");

        // The clock the replica goes by (a Byzantine `clock-skew` moves it; see the runtime).
        let now_ms = options.clock.now_ms();
        #[cfg(feature = "byzantine")]
        let now_ms = crate::byzantine::replica_clock_ms(options.byzantine.as_ref(), now_ms);
        let n = genesis.len();
        let mut config =
            replica_config(id, n, &options.timing, genesis.hash(), options.max_pending);
        // τ is the network's too (every validator must judge block times alike).
        config.block_time_tolerance_ms = genesis.block_time_tolerance_ms();
        let replica = pbft::Replica::new(
            config,
            pbft::Restored {
                last_executed: (height, hash),
                executed_checkpoint,
                head_time_ms,
                now_ms,
                durable,
                recovering: start.recovering.is_some(),
                // Tags this start's recovery query, so that answers to an earlier one (which
                // an attacker may have kept) cannot be replayed.
                nonce: rand::rngs::OsRng.next_u64(),
                // Every start counts one more (the marker): a life that forgot its records
                // signs its view-changes with a higher incarnation than the one it forgot.
                incarnation: start.incarnation,
            },
        );
        match (&start.recovering, replica.is_recovering()) {
            (Some(reason), true) => warn!(
                validator = %options.name,
                %reason,
                "starting recovering: no prepare, commit or view-change until the others show \
                 this validator can no longer contradict a vote it may have sent"
            ),
            (None, true) => warn!(
                validator = %options.name,
                "resuming the recovery of an earlier start (its records say it is not done)"
            ),
            (Some(reason), false) => warn!(
                validator = %options.name,
                %reason,
                "this validator may have lost its votes, but a network of {n} cannot recover it \
                 (it needs 2f+1 other validators); it takes part at once"
            ),
            (None, false) => {}
        }
        let shared = Arc::new(Shared::new(
            id,
            options.name.clone(),
            n,
            options.max_pending,
        ));
        let keys_inbox = KeyInbox::new();
        let (inbox_sender, inbox) = mpsc::sync_channel(INBOX_EVENTS);
        // A Byzantine validator may watch what its peers send (byzantine.rs, `Seen`).
        #[cfg(feature = "byzantine")]
        let (peer_inbox, seen) = crate::byzantine::observe_inbox(
            options.byzantine.as_ref(),
            inbox_sender.clone(),
            INBOX_EVENTS,
        );
        #[cfg(not(feature = "byzantine"))]
        let peer_inbox = inbox_sender.clone();
        let transport = transport(Wiring {
            inbox: peer_inbox,
            keys: keys_inbox.clone(),
            identity: ValidatorIdentity {
                id,
                key: key.clone(),
                genesis_hash: genesis.hash(),
                validators: genesis.keys().into(),
            },
            limits: FrameLimits::for_timing(n, &options.timing),
        })?;
        #[cfg(feature = "byzantine")]
        let transport = match options.byzantine.clone() {
            Some(behaviours) => crate::byzantine::ByzantineTransport::wrap(
                transport,
                behaviours,
                key.clone(),
                genesis.hash(),
                id,
                n,
                options.timing.max_batch,
                seen,
            ),
            None => transport,
        };
        let transport: Arc<dyn Transport> = Arc::new(crate::transport::Counted {
            inner: transport,
            shared: shared.clone(),
        });
        let keystore_key = KeystoreKey::new(options.keystore_key.clone());
        let recovering = replica.is_recovering();
        shared.update(|status| status.recovering = recovering);
        let metrics = Metrics::new(shared.clone(), options.watts_per_core);
        // Before the runtime applies a block: the service processes everything from its
        // processed height on, from chain.db, and then what the runtime hands it.
        let keys = KeyService::start(
            KeyServiceConfig {
                id,
                n,
                dir: options.dir.clone(),
                genesis: genesis.clone(),
                key: keystore_key,
                clock: options.clock.clone(),
                shared: shared.clone(),
                #[cfg(feature = "byzantine")]
                byzantine: options.byzantine.clone(),
            },
            keys_inbox.clone(),
            transport.clone(),
        )?;
        let mut runtime = Runtime::new(
            id,
            n,
            key.clone(),
            genesis.clone(),
            Authenticator::new(&genesis),
            replica,
            chain,
            local,
            acknowledged,
            transport,
            keys_inbox.clone(),
            inbox,
            &options.timing,
            options.clock.clone(),
            shared.clone(),
            metrics,
        );
        #[cfg(feature = "byzantine")]
        {
            runtime.byzantine = options.byzantine.clone();
        }
        runtime.resume_pending(stored)?;
        // A Byzantine validator may hand its replica forged transactions (byzantine.rs).
        #[cfg(feature = "byzantine")]
        crate::byzantine::spawn_forger(
            options.byzantine.as_ref(),
            inbox_sender.clone(),
            genesis.hash(),
        );
        let edge = crate::verify::EdgeChecks::start(&genesis, &options.name)?;
        let handle = NodeHandle::new(
            id,
            options.name.clone(),
            key,
            inbox_sender,
            shared,
            genesis,
            chain_path,
            options.clock.clone(),
            keys_inbox,
            edge,
        );
        let thread = std::thread::Builder::new()
            .name(format!("validator-{}", options.name))
            .spawn(move || runtime.run())?;
        Ok(Self {
            handle,
            thread: Some(thread),
            keys: Some(keys),
        })
    }

    pub fn handle(&self) -> &NodeHandle {
        &self.handle
    }

    pub fn id(&self) -> ReplicaId {
        self.handle.id()
    }

    /// Stops the validator and waits for its thread.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.handle.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(mut keys) = self.keys.take() {
            keys.stop();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Executed request ids the replica remembers, to refuse one that comes again before its block
/// is applied: what is on chain, admission refuses at every way in (a client's submission, a
/// peer's forward, a resubmission after a restart), and a backup withdraws a pre-prepare's
/// request left pending that the chain holds (`Runtime::send_forwards`). Several seconds of a
/// saturated chain, and under half of the 131,072 slots of their hash table, which then never
/// doubles: 6 MB. It was `max_pending` (200,000): 26 MB, the largest single item of a
/// validator's heap (issue 11).
const EXECUTED_IDS_KEPT: usize = 50_000;

/// The replica's settings: the validator's timing in ticks.
pub(crate) fn replica_config(
    id: ReplicaId,
    n: usize,
    timing: &Timing,
    genesis_hash: [u8; 32],
    max_pending: usize,
) -> pbft::Config {
    let mut config = pbft::Config::new(id, n as u32, ledger::proposal_digest, genesis_hash);
    config.checkpoint_interval = timing.checkpoint_interval;
    config.watermark_window = timing.checkpoint_interval * 2;
    config.max_batch = timing.max_batch;
    config.batch_window_ticks = timing.ticks(timing.batch_window);
    config.max_in_flight = timing.max_in_flight;
    // A backup's timer runs while the primary legitimately waits out its batch window.
    config.view_change_timeout_ticks =
        timing.ticks(timing.batch_window + timing.view_change_timeout);
    // Resend lost protocol messages a few times per view-change timeout, not per batch window:
    // a pre-prepare lost to backups that were down waits for no batch window (with a window of
    // 600 s its resend came after 150 s, and the block with it).
    config.retransmit_ticks = (timing.ticks(timing.view_change_timeout) / 4).max(1);
    config.max_pending = max_pending;
    config.executed_window = EXECUTED_IDS_KEPT;
    config
}

/// The folder of validator `name` under a data directory.
pub fn validator_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(name)
}

#[cfg(test)]
mod red_team {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::cluster::Cluster;

    /// A transaction every validator admits and applies, signed by `handle`'s validator: the
    /// enrollment of a new patient whose home it is.
    fn enrollment(handle: &NodeHandle) -> ledger::SignedTx {
        let patient = crate::load::Person::patient(handle.id());
        handle.sign_as_validator(patient.enrollment(&handle.genesis_hash()), Vec::new())
    }

    /// Issue 8, finding 2 at the process level: the documented recovery ("delete a validator's
    /// stores and let it fetch the chain") must restart the replica *recovering*, so that it
    /// cannot vote twice. The first record a recovering replica persists is
    /// `Durable::Recovery { bound: None }`. The node passes `recovering: false` unconditionally
    /// (node.rs, `Restored { recovering: false, nonce: 0 }`): there is no marker, so a validator
    /// whose stores were deleted votes at once, exactly as before the fix.
    #[test]
    fn red_team_deleted_stores_restart_without_recovery() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("data");
        let timing = Timing {
            batch_window: Duration::from_millis(10),
            view_change_timeout: Duration::from_millis(500),
            checkpoint_interval: 8,
            ..Timing::default()
        };
        let mut cluster = Cluster::open(&dir, timing).expect("cluster");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let hospital = cluster.handle(0).expect("hospital");
        rt.block_on(async {
            for _ in 0..5 {
                hospital
                    .submit(enrollment(&hospital))
                    .await
                    .expect("submit");
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while cluster.handle(3).expect("insurance").status().height < 1 {
            assert!(Instant::now() < deadline, "nothing committed");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Insurance has voted. Its stores are deleted (the documented recovery).
        cluster.stop(3);
        let insurance = validator_dir(&dir, "insurance");
        for entry in std::fs::read_dir(&insurance).expect("dir").flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("chain.db") || name.starts_with("node.db") {
                std::fs::remove_file(entry.path()).expect("delete");
            }
        }
        cluster.restart(3).expect("restart");
        rt.block_on(async {
            for _ in 5..10 {
                hospital
                    .submit(enrollment(&hospital))
                    .await
                    .expect("submit");
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while cluster.handle(3).expect("insurance").status().height < 2 {
            assert!(Instant::now() < deadline, "insurance did not catch up");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        cluster.stop(3);
        let local = LocalStore::open(&insurance.join("node.db")).expect("node.db");
        let chain = Store::open(
            &insurance.join("chain.db"),
            cluster.genesis(),
            Default::default(),
        )
        .expect("chain.db");
        let records = local
            .durable_with(&chain, chain.head().0)
            .expect("records")
            .records;
        // Its first record but the incarnation's (a compaction once the recovery is over puts
        // the incarnation first, and the recovery's bound known).
        assert!(
            matches!(
                records
                    .iter()
                    .find(|r| !matches!(r, Durable::Incarnation { .. })),
                Some(Durable::Recovery { .. })
            ),
            "a validator restored from nothing must start recovering; its records: {records:?}"
        );
        assert!(
            !records.iter().any(|r| matches!(r, Durable::Prepared(_))),
            "it prepared (and so voted) at once: {records:?}"
        );
    }

    /// Issue 11: a backup measures each block's commit latency from the pre-prepare it
    /// receives (before, only the primary noted proposals: every backup reported 0 s in
    /// `/api/metrics` and would have observed nothing in the histogram), and every counter of
    /// a commit moves on every validator.
    #[test]
    fn every_validator_measures_the_latency_of_every_block_it_commits() {
        let root = tempfile::tempdir().expect("tempdir");
        let timing = Timing {
            batch_window: Duration::from_millis(10),
            view_change_timeout: Duration::from_millis(2000),
            ..Timing::default()
        };
        let cluster = Cluster::open(&root.path().join("data"), timing).expect("cluster");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let hospital = cluster.handle(0).expect("hospital");
        rt.block_on(async {
            for _ in 0..6 {
                hospital
                    .submit_applied(enrollment(&hospital), Duration::from_secs(20))
                    .await
                    .expect("committed");
            }
        });
        // Until every validator has the same head, and nothing more commits for a while.
        let deadline = Instant::now() + Duration::from_secs(20);
        let heads = || -> Vec<u64> {
            (0..4)
                .map(|i| cluster.handle(i).expect("validator").status().height)
                .collect()
        };
        let height = loop {
            let before = heads();
            std::thread::sleep(Duration::from_millis(300));
            let after = heads();
            if before == after && after.iter().all(|h| *h == after[0]) {
                break after[0];
            }
            assert!(Instant::now() < deadline, "the validators do not converge");
        };
        for i in 0..4 {
            let handle = cluster.handle(i).expect("validator");
            let telemetry = handle.shared().telemetry();
            let blocks = telemetry.committed_blocks();
            assert_eq!(blocks, height, "validator {i}");
            let first = cluster.handle(0).expect("hospital");
            let transactions = first.shared().telemetry().committed_transactions();
            assert!(transactions > 0);
            assert_eq!(
                telemetry.committed_transactions(),
                transactions,
                "validator {i}"
            );
            let text = telemetry.encode();
            let count = text
                .lines()
                .find_map(|l| l.strip_prefix("medchain_commit_latency_seconds_count "))
                .and_then(|v| v.parse::<u64>().ok());
            assert_eq!(count, Some(blocks), "validator {i}: one latency per block");
            let last = handle
                .shared()
                .block_metrics()
                .pop()
                .expect("a block metric");
            assert!(!last.latency.is_zero(), "validator {i}: a latency of 0");
            assert_eq!(
                last.success_blocks, blocks,
                "/api/metrics reads the counter"
            );
        }
    }

    /// docs/STORAGE.md §3: the proposals a validator's protocol records name are staged in
    /// chain.db. A validator whose chain.db was deleted (or is older than its node.db) lost
    /// the proposals of votes it may have cast: it starts anyway, recovering as one that lost
    /// those records, and catches up (before, such records made its start fail).
    #[test]
    fn a_chain_db_lost_under_its_node_db_restarts_recovering() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("data");
        let timing = Timing {
            batch_window: Duration::from_millis(10),
            view_change_timeout: Duration::from_millis(500),
            checkpoint_interval: 64,
            ..Timing::default()
        };
        let mut cluster = Cluster::open(&dir, timing).expect("cluster");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let hospital = cluster.handle(0).expect("hospital");
        let submit = |range: std::ops::Range<u32>| {
            rt.block_on(async {
                for _ in range {
                    hospital
                        .submit(enrollment(&hospital))
                        .await
                        .expect("submit");
                }
            })
        };
        let wait_for = |cluster: &Cluster, height: u64| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while cluster.handle(3).expect("insurance").status().height < height {
                assert!(Instant::now() < deadline, "insurance is not at {height}");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        submit(0..5);
        wait_for(&cluster, 1);
        cluster.stop(3);
        let insurance = validator_dir(&dir, "insurance");
        for entry in std::fs::read_dir(&insurance).expect("dir").flatten() {
            if entry.file_name().to_string_lossy().starts_with("chain.db") {
                std::fs::remove_file(entry.path()).expect("delete");
            }
        }
        cluster
            .restart(3)
            .expect("a lost chain.db does not stop the validator");
        submit(5..10);
        wait_for(&cluster, 2);
        cluster.stop(3);
        let local = LocalStore::open(&insurance.join("node.db")).expect("node.db");
        let chain = Store::open(
            &insurance.join("chain.db"),
            cluster.genesis(),
            Default::default(),
        )
        .expect("chain.db");
        let records = local
            .durable_with(&chain, chain.head().0)
            .expect("records")
            .records;
        assert!(
            records.contains(&Durable::Recovery { bound: None }),
            "it must have recovered: {records:?}"
        );
    }

    /// Four validators (view-change timeout 500 ms) that committed one enrollment.
    fn enrolled_cluster() -> (tempfile::TempDir, PathBuf, Cluster, tokio::runtime::Runtime) {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("data");
        let timing = Timing {
            batch_window: Duration::from_millis(10),
            view_change_timeout: Duration::from_millis(500),
            ..Timing::default()
        };
        let cluster = Cluster::open(&dir, timing).expect("cluster");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let hospital = cluster.handle(0).expect("hospital");
        rt.block_on(hospital.submit_applied(enrollment(&hospital), Duration::from_secs(20)))
            .expect("committed");
        let deadline = Instant::now() + Duration::from_secs(20);
        while (0..4).any(|i| cluster.handle(i).expect("validator").status().height < 1) {
            assert!(Instant::now() < deadline, "the validators do not converge");
            std::thread::sleep(Duration::from_millis(20));
        }
        (root, dir, cluster, rt)
    }

    /// Writes in the stopped validator `name`'s node.db a pre-prepare of `transaction` at the
    /// slot after its head, in `view`, which it accepted and withholds (a block time ten
    /// minutes ahead of every clock).
    fn plant_withheld_slot(
        dir: &Path,
        genesis: &Genesis,
        name: &str,
        view: u64,
        transaction: &ledger::SignedTx,
    ) {
        let at = validator_dir(dir, name);
        let mut chain =
            Store::open(&at.join("chain.db"), genesis, Default::default()).expect("chain.db");
        let mut local = LocalStore::open(&at.join("node.db")).expect("node.db");
        let (height, head) = chain.head();
        let proposal = pbft::Proposal {
            seq: height + 1,
            view,
            proposer: (view % 4) as ReplicaId,
            prev: head,
            time_ms: Clock::System.now_ms() + 600_000,
            requests: vec![transaction.to_request(&genesis.hash())],
        };
        let pre_prepare = pbft::PrePrepare {
            view,
            digest: ledger::proposal_digest(&proposal),
            proposal: Arc::new(proposal),
        };
        local
            .append_durable(&[Durable::Withheld(pre_prepare)], &mut chain)
            .expect("append");
    }

    /// Red team s30 F2 and s39 F1 end to end: every validator restarts with a slot in its log
    /// whose prepare it withholds (a block time far from every clock) and whose transaction no
    /// validator acknowledged to a client. Each node hands the slot's request back to its
    /// replica (`Runtime::resume_pending`), so every replica waits on it, the view changes and
    /// the transaction commits. Before, nothing waited on the slot: the cluster sat in its view
    /// until some other transaction came.
    #[test]
    fn a_slot_every_validator_withholds_across_a_restart_of_all_commits() {
        let (_root, dir, mut cluster, _rt) = enrolled_cluster();
        let hospital = cluster.handle(0).expect("hospital");
        let view = hospital.status().view;
        let withheld = enrollment(&hospital);
        let id = withheld.id(&hospital.genesis_hash());
        let genesis = cluster.genesis().clone();
        for i in 0..4 {
            cluster.stop(i);
        }
        for validator in genesis.validators() {
            plant_withheld_slot(&dir, &genesis, &validator.name, view, &withheld);
        }
        for i in 0..4 {
            cluster.restart(i).expect("restart");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let on_every_chain = |cluster: &Cluster| {
            (0..4).all(|i| {
                cluster
                    .handle(i)
                    .expect("validator")
                    .read(|r| r.transaction_height(&id))
                    .ok()
                    .flatten()
                    .is_some()
            })
        };
        while !on_every_chain(&cluster) {
            assert!(
                Instant::now() < deadline,
                "the withheld slot's transaction never committed: {:?}",
                (0..4)
                    .map(|i| cluster.handle(i).expect("validator").status())
                    .map(|s| (s.view, s.height, s.view_changing))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(cluster.handle(0).expect("hospital").status().view > view);
    }

    /// Red team s42 F2: `NodeHandle::submit` answers `Ok` only once the transaction is in this
    /// validator's node.db (its step 3: "durable at this validator ... resubmits it when it
    /// restarts"). Since 20e0eee4, `Runtime::resume_pending` puts a restored slot's request,
    /// which node.db does not hold, into the shared pending set, and `accept` answers a
    /// submission of a pending id at once ("it is durable already") without writing it. A
    /// client retrying at an honest validator a transaction a faulty one acknowledged and
    /// planted in a slot is then acknowledged without a durable copy: if the slot does not
    /// survive a view change and the validator restarts, nothing resubmits it. Fixed: the
    /// restored requests are written to the journal before they are pending.
    #[test]
    fn s42_f2_an_acknowledged_restored_slots_transaction_is_in_the_journal() {
        let (_root, dir, mut cluster, rt) = enrolled_cluster();
        let hospital = cluster.handle(0).expect("hospital");
        let view = hospital.status().view;
        let planted = enrollment(&hospital);
        let id = planted.id(&hospital.genesis_hash());
        let genesis = cluster.genesis().clone();
        for i in 0..4 {
            cluster.stop(i);
        }
        // Validator 1 alone holds a slot of the planted transaction in its log (a pre-prepare
        // it accepted and withheld); its node.db never acknowledged the transaction.
        let at = validator_dir(&dir, &genesis.validators()[1].name);
        plant_withheld_slot(
            &dir,
            &genesis,
            &genesis.validators()[1].name,
            view,
            &planted,
        );
        assert!(
            acknowledged::read_pending(&at.join(ACKNOWLEDGED_DIR))
                .expect("journal")
                .is_empty()
        );
        cluster.restart(1).expect("restart");
        let backup = cluster.handle(1).expect("backup");
        let acknowledged = rt
            .block_on(backup.submit(planted.clone()))
            .expect("acknowledged");
        assert_eq!(acknowledged, id);
        cluster.stop(1);
        let durable: Vec<[u8; 32]> = acknowledged::read_pending(&at.join(ACKNOWLEDGED_DIR))
            .expect("journal")
            .into_iter()
            .map(|row| row.id)
            .collect();
        assert!(
            durable.contains(&id),
            "acknowledged (Ok) but not in the journal: a restart after the slot is dropped forgets it"
        );
    }
}
