//! Validators as separate "processes" on loopback TCP: real keys from a real genesis, each
//! validator with its own tokio runtime, as it would have in its own process. Shared by
//! `tests/validator_channel.rs` and `tests/carried_budget.rs`; other test files compile it unused.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger::Genesis;
use ledger::crypto::SigningKey;
use ledger::master::MasterKey;
use node::transport::{TcpTransport, Transport, ValidatorIdentity};
use node::{Node, NodeHandle, NodeOptions, Timing, validator_dir};
use pbft::ReplicaId;

pub const NAMES: [&str; 4] = ["hospital", "clinic", "pharmacy", "insurance"];

/// Checkpoints every 8 sequence numbers (the log window L is 16), batches of at most 4, a
/// 10 ms batch window.
pub fn timing() -> Timing {
    Timing {
        batch_window: Duration::from_millis(10),
        view_change_timeout: Duration::from_millis(500),
        checkpoint_interval: 8,
        max_batch: 4,
        ..Timing::default()
    }
}

/// A listener on a free port, held until its validator first starts: a port chosen and let go
/// could meanwhile become another connection's ephemeral port (a bind failing now and then).
fn reserve_port() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap()
}

/// Binds `addr` again for a restarted validator, waiting out a moment in which the port is in
/// use (a connection's ephemeral port, taken while the validator was down, closes soon).
fn bind_again(addr: SocketAddr) -> std::net::TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(listener) => return listener,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(error) => panic!("cannot listen on {addr} again: {error}"),
        }
    }
}

/// One validator "process": its own runtime, its node, listening on its address.
pub struct Process {
    pub runtime: tokio::runtime::Runtime,
    node: Option<Node>,
}

impl Process {
    pub fn handle(&self) -> NodeHandle {
        self.node.as_ref().unwrap().handle().clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            node.stop();
        }
    }
}

/// A network of [`NAMES`] validators, none running until started.
pub struct Net {
    /// `ROOT/net` holds the network, `ROOT/keys` its operator keys.
    root: tempfile::TempDir,
    pub genesis: Arc<Genesis>,
    operator_keys: Vec<MasterKey>,
    /// Where each validator listens for its peers.
    pub listen: Vec<SocketAddr>,
    /// Each validator's listener until it first starts ([`reserve_port`]).
    reserved: std::sync::Mutex<Vec<Option<std::net::TcpListener>>>,
    /// What every validator started runs with.
    pub timing: Timing,
    /// Faults every validator started runs with (the `byzantine` feature's behaviours).
    #[cfg(feature = "byzantine")]
    pub behaviours: Option<node::byzantine::Behaviours>,
}

impl Net {
    pub fn new() -> Self {
        Self::with_timing(timing())
    }

    pub fn with_timing(timing: Timing) -> Self {
        Self::with_params(timing, Default::default())
    }

    /// A network whose genesis holds `params` (τ, the batch size).
    pub fn with_params(timing: Timing, params: ledger::ChainParams) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let root = tempfile::tempdir().unwrap();
        let (genesis, keys) = node::init_dev_network(
            &root.path().join("net"),
            &root.path().join("keys"),
            &NAMES,
            params,
        )
        .unwrap();
        let reserved: Vec<_> = NAMES.iter().map(|_| reserve_port()).collect();
        let listen = reserved.iter().map(|l| l.local_addr().unwrap()).collect();
        Self {
            root,
            genesis: Arc::new(genesis),
            operator_keys: keys.into_iter().map(|key| key.key).collect(),
            listen,
            reserved: std::sync::Mutex::new(reserved.into_iter().map(Some).collect()),
            timing,
            #[cfg(feature = "byzantine")]
            behaviours: None,
        }
    }

    /// Validator `id`'s node key, read from its directory.
    pub fn key(&self, id: ReplicaId) -> SigningKey {
        ledger::master::read_node_key(
            &self.dir(id).join("node.key"),
            &self.operator_keys[id as usize],
            NAMES[id as usize],
        )
        .unwrap()
    }

    pub fn dir(&self, id: ReplicaId) -> PathBuf {
        validator_dir(&self.root.path().join("net"), NAMES[id as usize])
    }

    /// Validator `id` as the channel knows it, holding `key` (its own, or an impostor's).
    pub fn identity(&self, id: ReplicaId, key: SigningKey) -> ValidatorIdentity {
        ValidatorIdentity {
            id,
            key,
            genesis_hash: self.genesis.hash(),
            validators: self.genesis.keys().into(),
        }
    }

    /// Starts validator `id`, which reaches peer `p` at `peers[p]` (its listening address
    /// unless a test puts something in between: a proxy, a relay).
    pub fn start_with(&self, id: ReplicaId, peers: &[SocketAddr]) -> Process {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let reserved = self.reserved.lock().unwrap()[id as usize].take();
        let listener = reserved.unwrap_or_else(|| bind_again(self.listen[id as usize]));
        listener.set_nonblocking(true).unwrap();
        let listener = runtime
            .block_on(async { tokio::net::TcpListener::from_std(listener) })
            .unwrap();
        let peers: BTreeMap<ReplicaId, SocketAddr> = (0..NAMES.len() as ReplicaId)
            .filter(|peer| *peer != id)
            .map(|peer| (peer, peers[peer as usize]))
            .collect();
        #[cfg_attr(not(feature = "byzantine"), allow(unused_mut))]
        let mut options = NodeOptions::new(
            self.dir(id),
            NAMES[id as usize],
            self.timing.clone(),
            self.operator_keys[id as usize].clone(),
        );
        #[cfg(feature = "byzantine")]
        {
            options.byzantine = self.behaviours.clone();
        }
        let entered = runtime.enter();
        let node = Node::start(options, self.genesis.clone(), move |wiring| {
            Ok(Box::new(TcpTransport::start(listener, peers, wiring)) as Box<dyn Transport>)
        })
        .unwrap();
        drop(entered);
        Process {
            runtime,
            node: Some(node),
        }
    }

    pub fn start(&self, id: ReplicaId) -> Process {
        self.start_with(id, &self.listen)
    }
}

pub fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
