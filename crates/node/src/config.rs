//! Settings of one validator: the timing of consensus, and for a distributed node the file
//! `medchain node --config node.toml` reads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::NodeError;

/// How a validator batches and times consensus. The same for embedded and distributed nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Longest a transaction waits before the primary proposes it (the seed's 6 s).
    pub batch_window: Duration,
    /// Transactions per block; the primary proposes at once when this many are pending.
    pub max_batch: usize,
    /// How long a backup waits for a pending request before it starts a view change. Doubles
    /// on consecutive view changes (§4.4).
    pub view_change_timeout: Duration,
    /// Sequence numbers between checkpoints (the paper's K).
    pub checkpoint_interval: u64,
    /// Sequence numbers the primary may have pre-prepared but not yet executed.
    pub max_in_flight: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            batch_window: Duration::from_secs(6),
            max_batch: 1000,
            view_change_timeout: Duration::from_secs(2),
            checkpoint_interval: 64,
            max_in_flight: 8,
        }
    }
}

impl Timing {
    /// The parameters of a new chain run with this timing: its batch size, the rest default
    /// (the genesis carries what every validator must agree on).
    pub fn chain_params(&self) -> ledger::ChainParams {
        ledger::ChainParams {
            max_batch: u32::try_from(self.max_batch).unwrap_or(u32::MAX),
            ..ledger::ChainParams::default()
        }
    }

    /// The real time one replica tick stands for: fine enough to honour a 10 ms batch window,
    /// coarse enough that an idle validator does not spin.
    pub fn tick(&self) -> Duration {
        (self.batch_window / 10).clamp(Duration::from_millis(1), Duration::from_millis(50))
    }

    /// `duration` in ticks, at least one.
    pub fn ticks(&self, duration: Duration) -> u64 {
        let tick = self.tick().as_micros().max(1);
        (duration.as_micros().div_ceil(tick) as u64).max(1)
    }
}

/// Parses durations written like `6s`, `10ms` or `1m 30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|error| format!("'{text}' is not a duration like 6s or 10ms: {error}"))
}

/// The configuration file of a distributed validator (`medchain node --config node.toml`).
/// `medchain testnet` writes one per node, commented; this is its documented shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This validator's name in the genesis file.
    pub name: String,
    /// Folder with this validator's sealed key (node.key) and stores (chain.db, node.db,
    /// app.db, keys.db).
    pub data_dir: PathBuf,
    /// The operator key file (32 random bytes in hex, owner-only), outside `data_dir` and on
    /// another filesystem (docs/SECURITY.md, "Confidential records", §3.3); or none, and the
    /// operator gives `--key-file` or `--passphrase` at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The network's genesis file, the same at every validator.
    pub genesis: PathBuf,
    /// Where the other validators connect to this one.
    pub peer_addr: SocketAddr,
    /// Where the HTTP API and web UI listen.
    pub api_addr: SocketAddr,
    /// Each other validator's name (as in the genesis file) and peer address; none in a
    /// network of one (the commented file then lists no `[[peers]]`).
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Longest a transaction waits before it is proposed, like "6s" or "10ms".
    #[serde(default = "default_batch_window")]
    pub batch_window: String,
    /// Transactions per block at most.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long a backup waits on a stalled primary before it votes to replace it.
    #[serde(default = "default_view_change_timeout")]
    pub view_change_timeout: String,
    /// Create the seed's sample accounts if missing (never in production).
    #[serde(default)]
    pub demo: bool,
    /// Watts one busy core draws, for the energy estimate of `/api/metrics`.
    #[serde(default = "default_watts_per_core")]
    pub watts_per_core: f64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub name: String,
    pub addr: SocketAddr,
}

fn default_batch_window() -> String {
    "6s".into()
}
fn default_max_batch() -> usize {
    1000
}
fn default_watts_per_core() -> f64 {
    crate::node::DEFAULT_WATTS_PER_CORE
}
fn default_view_change_timeout() -> String {
    "2s".into()
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            NodeError::Config(format!("cannot read {}: {error}", path.display()))
        })?;
        Self::parse(&text, path)
    }

    /// The text of the file at `path`, as [`NodeConfig::load`] reads it.
    pub fn parse(text: &str, path: &Path) -> Result<Self, NodeError> {
        let mut config: NodeConfig = toml::from_str(text)
            .map_err(|error| NodeError::Config(format!("{}: {error}", path.display())))?;
        // Relative paths are relative to the config file, so a node folder can be moved whole.
        let base = path.parent().unwrap_or(Path::new("."));
        config.data_dir = base.join(&config.data_dir);
        config.genesis = base.join(&config.genesis);
        config.key_file = config.key_file.map(|key_file| base.join(key_file));
        config.timing()?;
        Ok(config)
    }

    pub fn timing(&self) -> Result<Timing, NodeError> {
        if self.max_batch == 0 {
            return Err(NodeError::Config("max_batch must be at least 1".into()));
        }
        Ok(Timing {
            batch_window: parse_duration(&self.batch_window).map_err(NodeError::Config)?,
            max_batch: self.max_batch,
            view_change_timeout: parse_duration(&self.view_change_timeout)
                .map_err(NodeError::Config)?,
            ..Timing::default()
        })
    }

    /// The file's text with a comment before every setting.
    pub fn to_commented_toml(&self) -> String {
        let peers: String = self
            .peers
            .iter()
            .map(|peer| {
                format!(
                    "\n[[peers]]\nname = {}\naddr = \"{}\"\n",
                    toml_value(peer.name.as_str()),
                    peer.addr
                )
            })
            .collect();
        format!(
            "# medchain validator configuration. Relative paths are relative to this file.\n\
             \n\
             # This validator's name in the genesis file.\n\
             name = {name}\n\
             # Folder with this validator's sealed key (node.key) and stores (chain.db, node.db,\n\
             # app.db, keys.db).\n\
             data_dir = {data_dir}\n\
             # The operator key file (32 random bytes in hex, owner-only), kept outside data_dir on\n\
             # another volume, or where a secret manager or systemd's LoadCredential= puts it.\n\
             # Without it, give --key-file or --passphrase to `medchain node`.\n\
             {key_file}\n\
             # The network's genesis file, identical at every validator.\n\
             genesis = {genesis}\n\
             # Where the other validators connect to this one.\n\
             peer_addr = \"{peer_addr}\"\n\
             # Where the HTTP API and the web UI listen.\n\
             api_addr = \"{api_addr}\"\n\
             # Longest a transaction waits before the primary proposes it (e.g. \"6s\", \"10ms\").\n\
             batch_window = {batch_window}\n\
             # Most transactions in one block; a full batch is proposed at once.\n\
             max_batch = {max_batch}\n\
             # How long backups wait on a stalled primary before replacing it (doubles each time).\n\
             view_change_timeout = {view_change_timeout}\n\
             # Create the seed's sample accounts if missing. Never in production.\n\
             demo = {demo}\n\
             # Watts one busy core draws, for the energy estimate of /api/metrics.\n\
             watts_per_core = {watts_per_core}\n\
             \n\
             # Every other validator, by its genesis name.{peers}",
            name = toml_value(self.name.as_str()),
            data_dir = toml_value(self.data_dir.display().to_string()),
            key_file = match &self.key_file {
                Some(path) => format!("key_file = {}", toml_value(path.display().to_string())),
                None => "# key_file = \"/etc/medchain/operator.key\"".into(),
            },
            genesis = toml_value(self.genesis.display().to_string()),
            peer_addr = self.peer_addr,
            api_addr = self.api_addr,
            batch_window = toml_value(self.batch_window.as_str()),
            max_batch = self.max_batch,
            view_change_timeout = toml_value(self.view_change_timeout.as_str()),
            demo = self.demo,
            watts_per_core = toml_value(self.watts_per_core),
        )
    }
}

/// `value` as TOML writes it: a string quoted and escaped the TOML way (Rust's `{:?}` escapes
/// control characters as `\u{1}`, which TOML refuses), a float as TOML spells it (`nan`).
fn toml_value(value: impl Into<toml::Value>) -> String {
    value.into().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commented_file_reads_back_the_same() {
        let config = NodeConfig {
            name: "clinic".into(),
            data_dir: "clinic".into(),
            key_file: Some("../keys/clinic.key".into()),
            genesis: "genesis.toml".into(),
            peer_addr: "127.0.0.1:7002".parse().unwrap(),
            api_addr: "127.0.0.1:5002".parse().unwrap(),
            peers: vec![PeerConfig {
                name: "hospital".into(),
                addr: "127.0.0.1:7001".parse().unwrap(),
            }],
            batch_window: "10ms".into(),
            max_batch: 500,
            view_change_timeout: "1s".into(),
            demo: true,
            watts_per_core: 12.5,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, config.to_commented_toml()).unwrap();
        let read = NodeConfig::load(&path).unwrap();
        assert_eq!(read.name, "clinic");
        assert_eq!(read.data_dir, dir.path().join("clinic"));
        assert_eq!(read.key_file, Some(dir.path().join("../keys/clinic.key")));
        let mut without = config.clone();
        without.key_file = None;
        std::fs::write(&path, without.to_commented_toml()).unwrap();
        assert_eq!(NodeConfig::load(&path).unwrap().key_file, None);
        assert_eq!(read.peers, config.peers);
        assert_eq!(
            read.timing().unwrap().batch_window,
            Duration::from_millis(10)
        );
        assert_eq!(read.timing().unwrap().max_batch, 500);
    }

    /// Found by the `node_toml` fuzz target: a validator with no peers (a network of one)
    /// read its file, but the file it wrote had no `peers` key and did not read back.
    #[test]
    fn a_configuration_without_peers_writes_a_file_that_reads_back() {
        let text = "name = \"solo\"\ndata_dir = \"solo\"\ngenesis = \"genesis.toml\"\n\
                    peer_addr = \"127.0.0.1:7001\"\napi_addr = \"127.0.0.1:5001\"\npeers = []\n";
        let path = Path::new("node.toml");
        let config = NodeConfig::parse(text, path).unwrap();
        let again = NodeConfig::parse(&config.to_commented_toml(), path).unwrap();
        assert_eq!(again, config);
    }

    /// Found by the `node_toml` fuzz target: the file was written with Rust's escapes, so a
    /// name with a control character (or a `nan` wattage) wrote a file that did not read back.
    #[test]
    fn a_configuration_with_a_control_character_or_nan_reads_back() {
        let text = "name = \"a\\u0001b\"\ndata_dir = \"d\\\"ir\"\ngenesis = \"g.toml\"\n\
                    peer_addr = \"127.0.0.1:7001\"\napi_addr = \"127.0.0.1:5001\"\n\
                    watts_per_core = nan\n";
        let path = Path::new("node.toml");
        let config = NodeConfig::parse(text, path).unwrap();
        assert_eq!(config.name, "a\u{1}b");
        let again = NodeConfig::parse(&config.to_commented_toml(), path).unwrap();
        assert_eq!(again.name, config.name);
        assert_eq!(again.data_dir, config.data_dir);
        assert!(again.watts_per_core.is_nan());
    }

    #[test]
    fn bad_duration_names_the_value() {
        let error = parse_duration("6 parsecs").unwrap_err();
        assert!(error.contains("6 parsecs"), "{error}");
    }

    #[test]
    fn ticks_honour_a_short_window() {
        let timing = Timing {
            batch_window: Duration::from_millis(10),
            ..Timing::default()
        };
        assert_eq!(timing.tick(), Duration::from_millis(1));
        assert_eq!(timing.ticks(Duration::from_millis(10)), 10);
        assert_eq!(Timing::default().tick(), Duration::from_millis(50));
    }
}
