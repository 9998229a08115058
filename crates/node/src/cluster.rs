//! The embedded deployment: every validator of a genesis in one process, each with its own key
//! and stores under one data directory and its operator key in a key directory beside it,
//! linked by the in-memory network, going by one clock.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ledger::Genesis;
use ledger::master::MasterKey;
use pbft::ReplicaId;
use tracing::warn;

use crate::clock::Clock;
use crate::config::Timing;
use crate::error::NodeError;
use crate::handle::NodeHandle;
use crate::node::{Node, NodeOptions, validator_dir};
use crate::transport::{MemoryNetwork, Transport};

/// The seed's four validators.
pub const EMBEDDED_VALIDATORS: [&str; 4] = ["hospital", "clinic", "pharmacy", "insurance"];

/// Where and how an embedded cluster runs.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The network's folder: genesis.toml and one folder per validator.
    pub data_dir: PathBuf,
    /// The validators' operator keys, `<name>.key`, made on first start (default: `DIR.keys`,
    /// beside the data directory; never inside it).
    pub key_dir: PathBuf,
    pub timing: Timing,
    /// Watts one busy core draws, for the energy estimate.
    pub watts_per_core: f64,
    /// The clock every validator goes by.
    pub clock: Clock,
}

impl ClusterOptions {
    /// A cluster in `data_dir` with its keys in `DIR.keys`, the default wattage and the
    /// system clock.
    pub fn new(data_dir: &Path, timing: Timing) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            key_dir: ledger::master::default_key_dir(data_dir),
            timing,
            watts_per_core: crate::node::DEFAULT_WATTS_PER_CORE,
            clock: Clock::System,
        }
    }
}

pub struct Cluster {
    data_dir: PathBuf,
    key_dir: PathBuf,
    genesis: Arc<Genesis>,
    /// Each validator's operator key, in genesis order.
    operator_keys: Vec<MasterKey>,
    timing: Timing,
    watts_per_core: f64,
    clock: Clock,
    network: MemoryNetwork,
    nodes: Vec<Option<Node>>,
}

impl Cluster {
    /// Opens the cluster in `data_dir`, creating its genesis, keys and stores on first use; the
    /// operator keys live in `DIR.keys`.
    pub fn open(data_dir: &Path, timing: Timing) -> Result<Self, NodeError> {
        Self::start(ClusterOptions::new(data_dir, timing))
    }

    /// As [`Cluster::open`], with the wattage per busy core of the energy estimate.
    pub fn open_with(
        data_dir: &Path,
        timing: Timing,
        watts_per_core: f64,
    ) -> Result<Self, NodeError> {
        Self::start(ClusterOptions {
            watts_per_core,
            ..ClusterOptions::new(data_dir, timing)
        })
    }

    /// As [`Cluster::open_with`], every validator going by `clock` (a test's manual clock),
    /// which [`Cluster::clock`] hands on to the HTTP layer. The clock must not read earlier than
    /// the genesis's time minus τ/2 (a new genesis takes the system clock's time): the first
    /// block's time must be later than the genesis's, and its primary waits for the clock.
    pub fn open_with_clock(
        data_dir: &Path,
        timing: Timing,
        watts_per_core: f64,
        clock: Clock,
    ) -> Result<Self, NodeError> {
        Self::start(ClusterOptions {
            watts_per_core,
            clock,
            ..ClusterOptions::new(data_dir, timing)
        })
    }

    /// Opens the cluster `options` describe. A new one (no genesis.toml yet) is a development
    /// network: every validator's operator key is made in the key directory, and logged with
    /// the reminder that it is to be backed up apart from the data; a key on the data's disk is
    /// a warning (docs/SECURITY.md, "Confidential records", §16.10).
    pub fn start(options: ClusterOptions) -> Result<Self, NodeError> {
        let ClusterOptions {
            data_dir,
            key_dir,
            timing,
            watts_per_core,
            clock,
        } = options;
        let genesis_path = data_dir.join("genesis.toml");
        if !genesis_path.exists() {
            let (_, keys) = crate::incarnation::init_dev_network(
                &data_dir,
                &key_dir,
                &EMBEDDED_VALIDATORS,
                timing.chain_params(),
            )?;
            for key in keys.iter().filter(|key| key.created) {
                warn!(
                    path = %key.path.display(),
                    "made an operator key: back it up apart from the data directory (without \
                     it nothing there opens)"
                );
            }
        }
        let genesis = Arc::new(Genesis::load(&genesis_path)?);
        let operator_keys = operator_keys(&genesis, &data_dir, &key_dir)?;
        let network = MemoryNetwork::new(genesis.len());
        let mut cluster = Self {
            data_dir,
            key_dir,
            genesis,
            operator_keys,
            timing,
            watts_per_core,
            clock,
            network,
            nodes: Vec::new(),
        };
        for id in 0..cluster.genesis.len() as ReplicaId {
            let node = cluster.start_node(id)?;
            cluster.nodes.push(Some(node));
        }
        Ok(cluster)
    }

    fn start_node(&self, id: ReplicaId) -> Result<Node, NodeError> {
        let name = self.genesis.validators()[id as usize].name.clone();
        let mut options = NodeOptions::new(
            validator_dir(&self.data_dir, &name),
            name,
            self.timing.clone(),
            self.operator_keys[id as usize].clone(),
        );
        options.watts_per_core = self.watts_per_core;
        options.clock = self.clock.clone();
        let network = self.network.clone();
        Node::start(options, self.genesis.clone(), move |wiring| {
            network.attach(id, wiring.inbox, wiring.keys);
            network.set_disconnected(id, false);
            Ok(Box::new(network.endpoint(id)) as Box<dyn Transport>)
        })
    }

    /// The operator key of validator `id` (its application store's secrets derive from it).
    pub fn operator_key(&self, id: ReplicaId) -> Option<&MasterKey> {
        self.operator_keys.get(id as usize)
    }

    /// The folder of the validators' operator keys.
    pub fn key_dir(&self) -> &Path {
        &self.key_dir
    }

    /// The in-memory network between the validators (tests observe what they send).
    pub fn network(&self) -> &MemoryNetwork {
        &self.network
    }

    /// The clock every validator of the cluster goes by, for the HTTP layer to share.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The running validators' handles.
    pub fn handles(&self) -> Vec<NodeHandle> {
        self.nodes
            .iter()
            .flatten()
            .map(|node| node.handle().clone())
            .collect()
    }

    /// The handle of validator `id`, if it runs.
    pub fn handle(&self, id: ReplicaId) -> Option<NodeHandle> {
        self.nodes
            .get(id as usize)?
            .as_ref()
            .map(|node| node.handle().clone())
    }

    /// Stops validator `id` (as a crash would, from the others' point of view).
    pub fn stop(&mut self, id: ReplicaId) {
        self.network.set_disconnected(id, true);
        if let Some(slot) = self.nodes.get_mut(id as usize)
            && let Some(node) = slot.take()
        {
            node.stop();
        }
    }

    /// Restarts a stopped validator from its stores.
    pub fn restart(&mut self, id: ReplicaId) -> Result<(), NodeError> {
        if self.nodes.get(id as usize).is_some_and(Option::is_none) {
            let node = self.start_node(id)?;
            self.nodes[id as usize] = Some(node);
        }
        Ok(())
    }

    /// Waits, at most `timeout`, until every running validator has executed as far as the
    /// furthest one, so that a clean stop leaves every store at one head (a quorum commits
    /// without the slowest validator, which may still be a block behind). Returns whether they
    /// got there.
    pub fn converge(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            // Heights as each store says, not as each status says: a status is published at the
            // end of its validator's turn, after a verdict may already have gone out.
            let heights: Vec<Option<u64>> = self
                .handles()
                .iter()
                .map(|h| h.read(|chain| chain.head()).ok().map(|(height, _)| height))
                .collect();
            let furthest = heights.iter().copied().max().flatten();
            if furthest.is_some() && heights.iter().all(|&height| height == furthest) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Stops every validator.
    pub fn shutdown(&mut self) {
        for id in 0..self.nodes.len() as ReplicaId {
            self.stop(id);
        }
    }
}

/// The operator keys of every validator of `genesis`, in genesis order, from the key directory
/// `key_dir` of the development network in `data_dir` (a key on the data's disk is a warning).
pub(crate) fn operator_keys(
    genesis: &Genesis,
    data_dir: &Path,
    key_dir: &Path,
) -> Result<Vec<MasterKey>, NodeError> {
    let mut keys = Vec::with_capacity(genesis.len());
    for validator in genesis.validators() {
        let path = ledger::master::dev_key_path(key_dir, &validator.name);
        let (key, warning) = MasterKey::from_key_file(&path, data_dir, false)?;
        if let Some(warning) = warning {
            warn!("{warning}");
        }
        keys.push(key);
    }
    Ok(keys)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}
