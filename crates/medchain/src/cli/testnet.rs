//! `medchain testnet`: a local network of validator processes in one command.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ledger::Genesis;
use node::{NodeConfig, PeerConfig};

use super::service;
use super::timing::TimingArgs;

/// Writes a genesis file, keys and a commented node.toml per validator under DIR (keeping any
/// that exist), starts one `medchain node` process per validator on 127.0.0.1, prints each
/// one's API and peer address, and stops them all on Ctrl-C or SIGTERM. Validator i listens
/// on its own loopback host 127.0.0.(i+1): one host per hospital, as a deployment needs.
#[derive(Args, Debug)]
#[command(
    after_help = "Example: medchain testnet --nodes 4 --dir ./net --demo --batch-window 200ms"
)]
pub struct TestnetArgs {
    /// Number of validators (4 tolerate one faulty validator).
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=100))]
    nodes: u16,
    /// Directory of the network (genesis.toml and one folder per validator).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Peer port of the first validator; the others take the next ones.
    #[arg(long, value_name = "PORT", default_value_t = 7101)]
    peer_port: u16,
    /// API port of the first validator; the others take the next ones.
    #[arg(long, value_name = "PORT", default_value_t = 5101)]
    api_port: u16,
    #[command(flatten)]
    timing: TimingArgs,
    /// Give every validator the seed's sample accounts. Never in production.
    #[arg(long)]
    demo: bool,
    /// Write the files and exit without starting the validators.
    #[arg(long)]
    setup_only: bool,
}

impl super::Run for TestnetArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        let configs = write_network(
            &self.dir,
            self.nodes as usize,
            self.peer_port,
            self.api_port,
            &self.timing,
            self.demo,
        )?;
        if self.setup_only {
            for (path, config) in &configs {
                println!(
                    "{:<12} {}  api http://{}  peers {}",
                    config.name,
                    path.display(),
                    config.api_addr,
                    config.peer_addr
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        let mut children = Vec::new();
        for (path, config) in &configs {
            let child = spawn_validator(path, None, self.demo)?;
            println!(
                "{:<12} pid {:<7} api http://{:<21} peers {}",
                config.name,
                child.id(),
                config.api_addr,
                config.peer_addr
            );
            children.push((config.name.clone(), child));
        }
        println!("testnet running; Ctrl-C stops every validator");
        let runtime = service::runtime()?;
        runtime.block_on(async {
            tokio::select! {
                () = service::stop_requested() => {},
                name = first_exit(&mut children) => eprintln!("validator {name} exited; stopping the others"),
            }
        });
        for (name, child) in &mut children {
            stop_child(child);
            let status = child
                .wait()
                .with_context(|| format!("waiting for {name}"))?;
            println!("{name} stopped ({status})");
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Waits until one child has exited and returns its name.
async fn first_exit(children: &mut [(String, Child)]) -> String {
    loop {
        for (name, child) in children.iter_mut() {
            if let Ok(Some(_)) = child.try_wait() {
                return name.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates what is missing of a local network in `dir` and returns each validator's config
/// file and contents.
pub fn write_network(
    dir: &Path,
    nodes: usize,
    peer_port: u16,
    api_port: u16,
    timing: &TimingArgs,
    demo: bool,
) -> anyhow::Result<Vec<(PathBuf, NodeConfig)>> {
    let genesis_path = dir.join("genesis.toml");
    if !genesis_path.exists() {
        let names = ledger::validator_names(nodes);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        node::init_network(dir, &refs, false, timing.timing().chain_params())
            .with_context(|| format!("cannot initialise {}", dir.display()))?;
    }
    let genesis = Genesis::load(&genesis_path)?;
    let port = |base: u16, i: usize| -> anyhow::Result<u16> {
        u16::try_from(usize::from(base) + i)
            .context("port numbers run past 65535; choose lower base ports")
    };
    let mut addresses = Vec::new();
    for i in 0..genesis.len() {
        addresses.push(SocketAddr::new(host_of(i)?, port(peer_port, i)?));
    }
    let mut configs = Vec::new();
    for (i, validator) in genesis.validators().iter().enumerate() {
        let path = node::validator_dir(dir, &validator.name).join("node.toml");
        if !path.exists() {
            let config = NodeConfig {
                name: validator.name.clone(),
                data_dir: ".".into(),
                genesis: "../genesis.toml".into(),
                peer_addr: addresses[i],
                api_addr: SocketAddr::new(host_of(i)?, port(api_port, i)?),
                peers: genesis
                    .validators()
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(j, peer)| PeerConfig {
                        name: peer.name.clone(),
                        addr: addresses[j],
                    })
                    .collect(),
                batch_window: humantime::format_duration(timing.batch_window).to_string(),
                max_batch: timing.max_batch as usize,
                view_change_timeout: humantime::format_duration(timing.view_change_timeout)
                    .to_string(),
                demo,
                watts_per_core: node::DEFAULT_WATTS_PER_CORE,
            };
            std::fs::write(&path, config.to_commented_toml())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        configs.push((path.clone(), NodeConfig::load(&path)?));
    }
    Ok(configs)
}

/// The loopback host of validator `i`: `127.0.0.(i + 1)`. Each hospital's page gets its own
/// host, so that cookies (scoped by host, not port) and browser storage (by origin) of one
/// hospital are never sent to another (docs/SECURITY.md, issue 9, §5.0).
pub fn host_of(i: usize) -> anyhow::Result<IpAddr> {
    let last = u8::try_from(i + 1)
        .ok()
        .filter(|b| *b < 255)
        .context("a local testnet gives each validator its own loopback host: at most 254")?;
    Ok(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

/// Starts `medchain node --config path [--demo]` (this same executable), its log to `log` or
/// inherited.
pub fn spawn_validator(config: &Path, log: Option<&Path>, demo: bool) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the medchain executable")?;
    let mut command = Command::new(exe);
    command
        .arg("node")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null());
    if demo {
        command.arg("--demo");
    }
    if let Some(log) = log {
        let file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        command.stdout(file.try_clone()?).stderr(file);
    }
    command
        .spawn()
        .with_context(|| format!("cannot start the validator of {}", config.display()))
}

/// Asks a validator process to stop cleanly (SIGTERM).
pub fn stop_child(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}
