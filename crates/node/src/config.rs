//! Settings of one validator: the timing of consensus, and for a distributed node the file
//! `medchain node --config node.toml` reads.

use std::net::{IpAddr, SocketAddr};
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
    /// How the HTTP API treats its clients (the `[http]` table; every key optional).
    #[serde(default)]
    pub http: HttpConfig,
}

/// The `[http]` table of node.toml: the deployment of the API (behind a TLS proxy or not) and
/// its limits on slow or numerous clients. `medchain node`'s flags of the same names override
/// it (lists add to it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Served over HTTPS (by a TLS proxy): the session cookie gets `Secure`, and answers carry
    /// `Strict-Transport-Security`.
    pub secure_cookie: bool,
    /// Host names served besides the address a client connected to, `localhost`, `127.0.0.1`
    /// and `[::1]` with the API's port: `name` (any port) or `name:port`. A request naming
    /// another host is refused (421), against DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// Proxies whose `X-Forwarded-For` names the client (the rightmost address that is not a
    /// trusted proxy); from any other peer the header is ignored.
    pub trusted_proxies: Vec<IpAddr>,
    /// Longest a client may take to send a request's headers (and to start one on a new
    /// connection), like "10s".
    pub header_timeout: String,
    /// Longest a client may take to send a request's body.
    pub body_timeout: String,
    /// Longest a kept-alive connection may wait idle for its next request.
    pub idle_timeout: String,
    /// Connections served at once: at the cap, the one idle longest is closed for a newcomer;
    /// with none idle, more wait to be accepted.
    pub max_connections: usize,
    /// Connections served at once to one client (an IPv6 client by its /64); absent: an
    /// eighth of `max_connections`. A trusted proxy is not held to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_client: Option<usize>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        let limits = ConnectionLimits::default();
        let text = |d: Duration| humantime::format_duration(d).to_string();
        Self {
            secure_cookie: false,
            allowed_hosts: Vec::new(),
            trusted_proxies: Vec::new(),
            header_timeout: text(limits.header_timeout),
            body_timeout: text(limits.body_timeout),
            idle_timeout: text(limits.idle_timeout),
            max_connections: limits.max_connections,
            max_connections_per_client: limits.max_connections_per_client,
        }
    }
}

impl HttpConfig {
    /// The limits this table sets, checked.
    pub fn limits(&self) -> Result<ConnectionLimits, NodeError> {
        let duration = |key: &str, text: &str| {
            let value = parse_duration(text).map_err(NodeError::Config)?;
            if value.is_zero() {
                return Err(NodeError::Config(format!("http.{key} must be above zero")));
            }
            Ok(value)
        };
        ConnectionLimits {
            header_timeout: duration("header_timeout", &self.header_timeout)?,
            body_timeout: duration("body_timeout", &self.body_timeout)?,
            idle_timeout: duration("idle_timeout", &self.idle_timeout)?,
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
        }
        .checked()
    }
}

/// How long the API waits on a client, and how many it serves at once (slow clients must not
/// hold its connections).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From a connection's start, or a request's first byte, to the end of its headers.
    pub header_timeout: Duration,
    /// From the end of a request's headers to the end of its body.
    pub body_timeout: Duration,
    /// From the end of a response to the first byte of the next request.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections served at once to one client (an IPv6 client by its /64); `None`:
    /// [`Self::default_per_client`]. A trusted proxy is not held to it.
    pub max_connections_per_client: Option<usize>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_connections_per_client: None,
        }
    }
}

impl ConnectionLimits {
    /// Connections served at once, at most (a semaphore's permits; far above what one
    /// process's file descriptors allow anyway).
    pub const MAX_CONNECTIONS: usize = 1 << 20;

    /// Connections served at once to one client unless set: an eighth of `max_connections`
    /// (at least one), so that one client cannot hold every slot.
    pub fn default_per_client(max_connections: usize) -> usize {
        (max_connections / 8).max(1)
    }

    /// Connections served at once to one client.
    pub fn per_client(&self) -> usize {
        self.max_connections_per_client
            .unwrap_or(Self::default_per_client(self.max_connections))
    }

    /// These limits, or why they cannot be served.
    pub fn checked(self) -> Result<Self, NodeError> {
        if !(1..=Self::MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(NodeError::Config(format!(
                "max_connections must be between 1 and {}",
                Self::MAX_CONNECTIONS
            )));
        }
        if let Some(per_client) = self.max_connections_per_client
            && !(1..=self.max_connections).contains(&per_client)
        {
            return Err(NodeError::Config(format!(
                "max_connections_per_client must be between 1 and max_connections ({})",
                self.max_connections
            )));
        }
        Ok(self)
    }
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
        config.http.limits()?;
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
             # The HTTP API's deployment and its limits on clients (`medchain node --help`).\n\
             [http]\n\
             # Served over HTTPS by a TLS proxy: the session cookie gets Secure, answers HSTS.\n\
             secure_cookie = {secure_cookie}\n\
             # Host names served (\"name\" or \"name:port\") besides this API's own address,\n\
             # localhost, 127.0.0.1 and [::1] with its port; other Hosts are refused (421).\n\
             allowed_hosts = {allowed_hosts}\n\
             # Proxies whose X-Forwarded-For names the client (for the login throttle).\n\
             trusted_proxies = {trusted_proxies}\n\
             # Longest a client may take to send a request's headers, then its body.\n\
             header_timeout = {header_timeout}\n\
             body_timeout = {body_timeout}\n\
             # Longest a kept-alive connection may wait for its next request.\n\
             idle_timeout = {idle_timeout}\n\
             # Connections served at once: at the cap, the one idle longest is closed for a\n\
             # newcomer; with none idle, more wait to be accepted.\n\
             max_connections = {max_connections}\n\
             # Connections served at once to one client address (an IPv6 client by its /64);\n\
             # when its connections are all busy, another is refused (429). Unset: an eighth\n\
             # of max_connections. A trusted proxy is not held to it.\n\
             {max_connections_per_client}\n\
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
            secure_cookie = self.http.secure_cookie,
            allowed_hosts = toml_value(self.http.allowed_hosts.clone()),
            trusted_proxies = toml_value(
                self.http
                    .trusted_proxies
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            ),
            header_timeout = toml_value(self.http.header_timeout.as_str()),
            body_timeout = toml_value(self.http.body_timeout.as_str()),
            idle_timeout = toml_value(self.http.idle_timeout.as_str()),
            max_connections = self.http.max_connections,
            max_connections_per_client = match self.http.max_connections_per_client {
                Some(n) => format!("max_connections_per_client = {n}"),
                None => format!(
                    "# max_connections_per_client = {}",
                    ConnectionLimits::default_per_client(self.http.max_connections)
                ),
            },
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
            http: HttpConfig {
                secure_cookie: true,
                allowed_hosts: vec!["clinic.example.org".into(), "10.0.0.2:443".into()],
                trusted_proxies: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
                header_timeout: "5s".into(),
                max_connections: 64,
                max_connections_per_client: Some(4),
                ..HttpConfig::default()
            },
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
        assert_eq!(read.http, config.http);
        let limits = read.http.limits().unwrap();
        assert_eq!(limits.header_timeout, Duration::from_secs(5));
        assert_eq!(
            limits.idle_timeout,
            ConnectionLimits::default().idle_timeout
        );
        assert_eq!(limits.max_connections, 64);
        assert_eq!(limits.per_client(), 4);
        let mut unset = config.clone();
        unset.http.max_connections_per_client = None;
        std::fs::write(&path, unset.to_commented_toml()).unwrap();
        let read = NodeConfig::load(&path).unwrap();
        assert_eq!(read.http, unset.http);
        assert_eq!(read.http.limits().unwrap().per_client(), 8);
    }

    #[test]
    fn a_file_without_an_http_table_has_the_default_limits() {
        let text = "name = \"solo\"\ndata_dir = \"solo\"\ngenesis = \"genesis.toml\"\n\
                    peer_addr = \"127.0.0.1:7001\"\napi_addr = \"127.0.0.1:5001\"\n";
        let config = NodeConfig::parse(text, Path::new("node.toml")).unwrap();
        assert_eq!(config.http, HttpConfig::default());
        assert_eq!(config.http.limits().unwrap(), ConnectionLimits::default());
        assert!(!config.http.secure_cookie);
    }

    #[test]
    fn zero_timeouts_and_connections_are_refused() {
        let base = "name = \"solo\"\ndata_dir = \"solo\"\ngenesis = \"genesis.toml\"\n\
                    peer_addr = \"127.0.0.1:7001\"\napi_addr = \"127.0.0.1:5001\"\n";
        for (table, what) in [
            ("[http]\nbody_timeout = \"0s\"\n", "body_timeout"),
            ("[http]\nmax_connections = 0\n", "max_connections"),
            (
                "[http]\nmax_connections = 8\nmax_connections_per_client = 9\n",
                "max_connections_per_client",
            ),
            (
                "[http]\nmax_connections_per_client = 0\n",
                "max_connections_per_client",
            ),
            ("[http]\nsecure_cokie = true\n", "secure_cokie"),
        ] {
            let error = NodeConfig::parse(&format!("{base}{table}"), Path::new("node.toml"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(what), "{error}");
        }
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
