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
/// on its own loopback host 127.0.0.(i+1): one host per hospital, as a deployment needs. A
/// development network: every validator's operator key is made in one key directory
/// (DIR.keys by default); a real consortium uses `medchain keygen` and `init --validators`.
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
    /// Where the validators' operator keys live, made on first start; back them up apart from
    /// the data (default: DIR.keys, beside it).
    #[arg(long, value_name = "DIR")]
    key_dir: Option<PathBuf>,
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
        let key_dir = self
            .key_dir
            .clone()
            .unwrap_or_else(|| ledger::master::default_key_dir(&self.dir));
        let configs = write_network(
            &self.dir,
            &key_dir,
            self.nodes as usize,
            self.peer_port,
            self.api_port,
            &self.timing,
            self.demo,
        )?;
        println!(
            "development network in {}; operator keys in {} (back them up apart from the data: \
             without them nothing there opens)",
            self.dir.display(),
            key_dir.display()
        );
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
            let child = spawn_validator(path, &key_dir, None, self.demo)?;
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

/// Creates what is missing of a local network in `dir`, its operator keys in `key_dir`, and
/// returns each validator's config file and contents.
pub fn write_network(
    dir: &Path,
    key_dir: &Path,
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
        let (_, keys) = node::init_dev_network(dir, key_dir, &refs, timing.timing().chain_params())
            .with_context(|| format!("cannot initialise {}", dir.display()))?;
        if let Some(warning) = keys.first().and_then(|key| key.warning.as_ref()) {
            eprintln!("warning: {warning}");
        }
    }
    let genesis = Genesis::load(&genesis_path)?;
    for validator in genesis.validators() {
        let path = ledger::master::dev_key_path(key_dir, &validator.name);
        anyhow::ensure!(
            path.exists(),
            "{} is missing: the network in {} was made with another key directory (--key-dir)",
            path.display(),
            dir.display()
        );
    }
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
                key_file: None,
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
            ledger::files::write_private_file(&path, config.to_commented_toml().as_bytes())?;
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

/// Starts `medchain node --config path --key-dir key_dir [--demo]` (this same executable), its
/// log to the private file `log` or inherited.
pub fn spawn_validator(
    config: &Path,
    key_dir: &Path,
    log: Option<&Path>,
    demo: bool,
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the medchain executable")?;
    let mut command = Command::new(exe);
    command
        .arg("node")
        .arg("--config")
        .arg(config)
        .arg("--key-dir")
        .arg(key_dir)
        .stdin(Stdio::null());
    if demo {
        command.arg("--demo");
    }
    if let Some(log) = log {
        let file = ledger::files::private_log_file(log)?;
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
