//! The embedded deployment: every validator of a genesis in one process, each with its own key
//! and stores under one data directory, linked by the in-memory network, going by one clock.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ledger::Genesis;
use pbft::ReplicaId;

use crate::clock::Clock;
use crate::config::Timing;
use crate::error::NodeError;
use crate::handle::NodeHandle;
use crate::keys::KeystoreKey;
use crate::node::{Node, NodeOptions, validator_dir};
use crate::transport::{MemoryNetwork, Transport};

/// The seed's four validators.
pub const EMBEDDED_VALIDATORS: [&str; 4] = ["hospital", "clinic", "pharmacy", "insurance"];

pub struct Cluster {
    data_dir: PathBuf,
    genesis: Arc<Genesis>,
    timing: Timing,
    watts_per_core: f64,
    clock: Clock,
    network: MemoryNetwork,
    /// Each validator's key-store key (`None`: derived from its node key, development only).
    keystore_keys: Vec<Option<KeystoreKey>>,
    nodes: Vec<Option<Node>>,
}

impl Cluster {
    /// Opens the cluster in `data_dir`, creating its genesis, keys and stores on first use.
    pub fn open(data_dir: &Path, timing: Timing) -> Result<Self, NodeError> {
        Self::open_with(data_dir, timing, crate::node::DEFAULT_WATTS_PER_CORE)
    }

    /// As [`Cluster::open`], with the wattage per busy core of the energy estimate.
    pub fn open_with(
        data_dir: &Path,
        timing: Timing,
        watts_per_core: f64,
    ) -> Result<Self, NodeError> {
        Self::open_with_clock(data_dir, timing, watts_per_core, Clock::System)
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
        Self::open_with_keys(data_dir, timing, watts_per_core, clock, Vec::new())
    }

    /// As [`Cluster::open_with_clock`], validator `i` sealing its `keys.db` under
    /// `keystore_keys[i]` (the key derived from its operator key; missing ones are derived from
    /// the node key, for development). The keys are kept for [`Cluster::restart`].
    pub fn open_with_keys(
        data_dir: &Path,
        timing: Timing,
        watts_per_core: f64,
        clock: Clock,
        keystore_keys: Vec<KeystoreKey>,
    ) -> Result<Self, NodeError> {
        let genesis_path = data_dir.join("genesis.toml");
        if !genesis_path.exists() {
            crate::incarnation::init_network(
                data_dir,
                &EMBEDDED_VALIDATORS,
                false,
                timing.chain_params(),
            )?;
        }
        let genesis = Arc::new(Genesis::load(&genesis_path)?);
        let network = MemoryNetwork::new(genesis.len());
        let mut cluster = Self {
            data_dir: data_dir.to_path_buf(),
            genesis,
            timing,
            watts_per_core,
            clock,
            network,
            keystore_keys: keystore_keys.into_iter().map(Some).collect(),
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
        );
        options.watts_per_core = self.watts_per_core;
        options.clock = self.clock.clone();
        options.keystore_key = self.keystore_keys.get(id as usize).cloned().flatten();
        let network = self.network.clone();
        Node::start(options, self.genesis.clone(), move |wiring| {
            network.attach(id, wiring.inbox, wiring.keys);
            network.set_disconnected(id, false);
            Ok(Box::new(network.endpoint(id)) as Box<dyn Transport>)
        })
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

    /// Stops every validator.
    pub fn shutdown(&mut self) {
        for id in 0..self.nodes.len() as ReplicaId {
            self.stop(id);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}
