//! `medchain node`: one validator of a distributed network, in its own process.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use ledger::Genesis;
use ledger::master::MasterKey;
use medchain::app::Clock;
use medchain::http::Chain;
use node::{Node, NodeConfig, NodeOptions, transport::TcpTransport};

use super::service;
use super::serving::ServingArgs;

/// Runs one validator: its secrets open with the operator key (--key-file, --passphrase, or
/// key_file in node.toml; a key file on the data's filesystem is refused). It talks TCP to its peers over an encrypted channel on which each side
/// proves its genesis key (every consensus message also signed; reconnecting with backoff) and serves this hospital's web UI and API. Logs to
/// stderr (RUST_LOG=debug for more); stops cleanly on SIGTERM or Ctrl-C. A validator whose
/// chain fails verification refuses to start and names the bad block.
#[derive(Args, Debug)]
#[command(
    after_help = "`medchain testnet --setup-only` writes a commented node.toml for each validator."
)]
pub struct NodeArgs {
    /// The validator's configuration file (every setting is documented in it).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    #[command(flatten)]
    keys: service::KeyArgs,
    #[command(flatten)]
    serving: ServingArgs,
    /// Create the seed's sample accounts if missing, whatever the config says. Never in production.
    #[arg(long)]
    demo: bool,
    /// Make this validator Byzantine (test builds with the `byzantine` feature only), e.g.
    /// `substitute-payloads,flood-pre-prepares,forge-status,exploit-amnesia,censor-patient=ID,
    /// forge-from=DIR,clock-skew=+MS` (see node::byzantine).
    #[cfg(feature = "byzantine")]
    #[arg(long, value_name = "BEHAVIOURS")]
    byzantine: Option<node::byzantine::Behaviours>,
}

impl super::Run for NodeArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        service::init_logging();
        let config = NodeConfig::load(&self.config)?;
        let settings = self.serving.settings(&config.http)?;
        let operator_key = self.keys.operator_key(
            config.key_file.as_deref(),
            None,
            &config.name,
            &config.data_dir,
        )?;
        let runtime = service::runtime()?;
        let served = runtime.block_on(async {
            #[cfg(feature = "byzantine")]
            let node = start_validator_with(&config, operator_key.clone(), |options| {
                options.byzantine = self.byzantine.clone();
            })
            .await?;
            #[cfg(not(feature = "byzantine"))]
            let node = start_validator(&config, operator_key.clone()).await?;
            let handle = node.handle().clone();
            tracing::info!(
                validator = %config.name,
                peers = %config.peer_addr,
                api = %config.api_addr,
                "validator running"
            );
            // With --demo, validator 0 enrolls the four sample people and links them to every
            // other validator; the others map the same logins to the same ids.
            let demo = config.demo || self.demo;
            let served = async {
                let (app, custody) = service::open_app(&config.data_dir, &operator_key)?;
                let batch_window = config.timing()?.batch_window;
                let chain = Chain::new(handle.clone(), vec![handle.clone()], batch_window);
                let flows =
                    service::start_flows(app, custody, handle, Clock::System, demo, demo).await?;
                service::serve_http(config.api_addr, settings, flows, chain, Clock::System).await
            }
            .await;
            tokio::task::spawn_blocking(move || node.stop()).await.ok();
            served
        });
        served?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Starts the validator `config` describes, its secrets opened with `operator_key`, listening
/// for its peers. Must run inside the tokio runtime (the TCP transport's tasks live there).
pub async fn start_validator(config: &NodeConfig, operator_key: MasterKey) -> anyhow::Result<Node> {
    start_validator_with(config, operator_key, |_| {}).await
}

/// [`start_validator`], with `adjust` applied to the validator's options.
pub async fn start_validator_with(
    config: &NodeConfig,
    operator_key: MasterKey,
    adjust: impl FnOnce(&mut NodeOptions),
) -> anyhow::Result<Node> {
    let genesis = Arc::new(Genesis::load(&config.genesis)?);
    let mut peers = BTreeMap::new();
    for peer in &config.peers {
        let id = genesis.index_of(&peer.name).with_context(|| {
            format!(
                "peer '{}' in the config is not a validator of {}",
                peer.name,
                config.genesis.display()
            )
        })?;
        peers.insert(id, peer.addr);
    }
    let listener = tokio::net::TcpListener::bind(config.peer_addr)
        .await
        .with_context(|| format!("cannot listen for peers on {}", config.peer_addr))?;
    let mut options = NodeOptions::new(
        config.data_dir.clone(),
        config.name.clone(),
        config.timing()?,
        operator_key,
    );
    options.watts_per_core = config.watts_per_core;
    adjust(&mut options);
    let node = Node::start(options, genesis, move |wiring| {
        Ok(Box::new(TcpTransport::start(listener, peers, wiring))
            as Box<dyn node::transport::Transport>)
    })
    .with_context(|| format!("validator '{}' cannot start", config.name))?;
    Ok(node)
}
