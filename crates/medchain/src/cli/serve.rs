//! `medchain serve`: the embedded deployment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use medchain::http::Chain;
use tracing::warn;

use super::service;
use super::serving::ServingArgs;
use super::timing::TimingArgs;

/// How long a clean stop waits for every validator to reach the furthest one's height.
const SHUTDOWN_CONVERGE: Duration = Duration::from_secs(5);

/// Runs the four validators (hospital, clinic, pharmacy, insurance) in this process, each with
/// its own key and SQLite files under DATA_DIR, agreeing on every block by PBFT, and serves the
/// web UI and the API on one port. Stops cleanly on Ctrl-C or SIGTERM. A development network:
/// one operator holds every validator's operator key (in DATA_DIR.keys by default; a real
/// consortium uses `medchain keygen` and `medchain init --validators`).
#[derive(Args, Debug)]
#[command(
    after_help = "Example: medchain serve --demo   (then open http://127.0.0.1:5000 and log in as d001 / doctor123)"
)]
pub struct ServeArgs {
    /// Where the validators' sealed keys and stores live; created with fresh keys on first start.
    #[arg(long, value_name = "DIR", default_value = "medchain-data")]
    data_dir: PathBuf,
    /// Where the validators' operator keys live, made on first start; back them up apart from
    /// the data (default: DATA_DIR.keys, beside it).
    #[arg(long, value_name = "DIR")]
    key_dir: Option<PathBuf>,
    /// Address of the web UI and the API. Loopback by default: expose it through a TLS proxy.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5000")]
    addr: SocketAddr,
    #[command(flatten)]
    timing: TimingArgs,
    #[command(flatten)]
    serving: ServingArgs,
    /// Watts one busy core draws, for the energy estimate of /api/metrics.
    #[arg(long, value_name = "WATTS", default_value_t = node::DEFAULT_WATTS_PER_CORE)]
    watts_per_core: f64,
    /// Enroll the seed's sample people (p001, p002, d001, d002) if missing, at the hospital
    /// (validator 0), with well-known passwords. Never in production.
    #[arg(long)]
    demo: bool,
}

impl super::Run for ServeArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        service::init_logging();
        let settings = self.serving.settings(&node::HttpConfig::default())?;
        let mut options = node::ClusterOptions::new(&self.data_dir, self.timing.timing());
        options.watts_per_core = self.watts_per_core;
        if let Some(key_dir) = &self.key_dir {
            options.key_dir = key_dir.clone();
        }
        let mut cluster = node::Cluster::start(options).with_context(|| {
            format!("cannot start the validators in {}", self.data_dir.display())
        })?;
        let handles = cluster.handles();
        let local = handles
            .first()
            .cloned()
            .context("the genesis file lists no validator")?;
        let operator_key = cluster
            .operator_key(local.id())
            .context("validator 0 has no operator key")?;
        let (app, custody) = service::open_app(
            &node::validator_dir(&self.data_dir, local.name()),
            operator_key,
        )?;
        let names: Vec<&str> = handles.iter().map(|h| h.name()).collect();
        println!(
            "medchain: {} validators ({}) in {}",
            handles.len(),
            names.join(", "),
            self.data_dir.display()
        );
        println!(
            "medchain: development network; operator keys in {} (back them up apart from {}: \
             without them nothing there opens)",
            cluster.key_dir().display(),
            self.data_dir.display()
        );
        println!("medchain: open http://{} in a browser", self.addr);
        if self.demo {
            println!("medchain: demo logins: doctor d001 / doctor123, patient p001 / patient123");
        }
        let chain = Chain::new(local.clone(), handles.clone(), self.timing.batch_window);
        let clock = cluster.clock().clone();
        let served = service::runtime()?.block_on(async {
            // One API, on validator 0: the demo people are its own, and need no links.
            let flows =
                service::start_flows(app, custody, local, clock.clone(), self.demo, false).await?;
            service::serve_http(self.addr, settings, flows, chain, clock).await
        });
        // A clean stop leaves the four stores at one head (a lagging one would only catch up
        // at the next start).
        if !cluster.converge(SHUTDOWN_CONVERGE) {
            warn!(
                "stopping with the validators at different heights: the ones behind catch up at \
                 the next start"
            );
        }
        cluster.shutdown();
        served?;
        Ok(ExitCode::SUCCESS)
    }
}
