//! `medchain testnet`: a local network of validator processes in one command, and the process
//! management it shares with `medchain soak` ([`Fleet`]).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::Args;
use ledger::Genesis;
use node::{NodeConfig, PeerConfig};

use super::service;
use super::timing::TimingArgs;

/// Writes a genesis file, keys and a commented node.toml per validator under DIR (keeping any
/// that exist), starts one `medchain node` process per validator on 127.0.0.1, prints each
/// one's API and peer address, and stops them all on Ctrl-C or SIGTERM. A validator that dies
/// is reported (name, exit status or signal, time) while the others keep running; it is
/// restarted with --restart, else the command that restarts it is printed. Validator i listens
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
    /// Restart a validator that crashes, after a short backoff (1 s, doubling; at most 5
    /// restarts a minute). Without it, a crash is reported with the command to restart it.
    #[arg(long, conflicts_with = "setup_only")]
    restart: bool,
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
        let mut fleet = Fleet::new(&configs, &key_dir, self.demo, false)?;
        for (i, (_, config)) in configs.iter().enumerate() {
            let pid = fleet.start(i)?;
            println!(
                "{:<12} pid {:<7} api http://{:<21} peers {}",
                config.name, pid, config.api_addr, config.peer_addr
            );
        }
        let policy = self.restart.then_some(RestartPolicy::TESTNET);
        match &policy {
            Some(policy) => println!(
                "testnet running; a validator that crashes is restarted after {} (doubling, at \
                 most {} restarts a minute each); Ctrl-C stops every validator",
                humantime::format_duration(policy.backoff),
                policy.per_minute
            ),
            None => println!(
                "testnet running; a validator that crashes is reported and the others keep \
                 running (--restart restarts it); Ctrl-C stops every validator"
            ),
        }
        let mut supervisor = Supervisor::new(fleet.len(), policy);
        let runtime = service::runtime()?;
        let crashed = runtime.block_on(async {
            let stop = service::stop_requested();
            tokio::pin!(stop);
            let mut tick = tokio::time::interval(SUPERVISION_TICK);
            loop {
                tokio::select! {
                    () = &mut stop => return false,
                    _ = tick.tick() => {
                        if !supervisor.tick(&mut fleet) {
                            println!("no validator is running or due to restart; testnet stops");
                            return true;
                        }
                    }
                }
            }
        });
        for (name, status) in fleet.stop_all() {
            match status {
                Ok(status) => println!("{name} stopped ({})", describe_status(&status)),
                Err(error) => println!("{name}: {error:#}"),
            }
        }
        Ok(if crashed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// How often testnet looks for validators that died, and for restarts that are due.
const SUPERVISION_TICK: Duration = Duration::from_millis(200);

/// When testnet restarts a validator that crashed (`--restart`): after a backoff that doubles
/// with each restart in the last minute, and at most `per_minute` times a minute, so that a
/// validator that cannot start (a corrupt store, a port taken) is not restarted in a loop.
#[derive(Clone, Copy, Debug)]
pub struct RestartPolicy {
    pub backoff: Duration,
    pub per_minute: usize,
}

impl RestartPolicy {
    pub const TESTNET: RestartPolicy = RestartPolicy {
        backoff: Duration::from_secs(1),
        per_minute: 5,
    };
    const WINDOW: Duration = Duration::from_secs(60);
}

/// One validator's automatic restarts: those of the last minute, and the one that is due.
#[derive(Debug, Default)]
struct Restarts {
    recent: VecDeque<Instant>,
    due: Option<Instant>,
}

impl Restarts {
    /// Schedules a restart after a crash at `now`: its delay and its number within the last
    /// minute, or `None` when the limit is reached.
    fn schedule(&mut self, now: Instant, policy: &RestartPolicy) -> Option<(Duration, usize)> {
        while self
            .recent
            .front()
            .is_some_and(|at| now.duration_since(*at) >= RestartPolicy::WINDOW)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= policy.per_minute {
            return None;
        }
        let doublings = u32::try_from(self.recent.len()).unwrap_or(u32::MAX).min(16);
        let delay = policy.backoff.saturating_mul(1 << doublings);
        self.recent.push_back(now + delay);
        self.due = Some(now + delay);
        Some((delay, self.recent.len()))
    }
}

/// Watches a [`Fleet`] for testnet: reports every validator that dies (name, pid, exit status
/// or signal, time), keeps the others running, and restarts the dead one by `policy` or prints
/// the command that restarts it by hand.
struct Supervisor {
    policy: Option<RestartPolicy>,
    restarts: Vec<Restarts>,
}

impl Supervisor {
    fn new(members: usize, policy: Option<RestartPolicy>) -> Self {
        Supervisor {
            policy,
            restarts: (0..members).map(|_| Restarts::default()).collect(),
        }
    }

    /// Reports deaths and runs the restarts that are due; false once no validator runs and
    /// none is due to restart.
    fn tick(&mut self, fleet: &mut Fleet) -> bool {
        let now = Instant::now();
        for death in fleet.reap() {
            let i = death.index;
            let name = fleet.name(i).to_string();
            println!(
                "{death}; {} other validator(s) keep running",
                fleet.running()
            );
            let by_hand = fleet.command_line(i);
            if death.status.success() {
                println!(
                    "{name} stopped cleanly (asked to): not restarting it; start it again with:\n  {by_hand}"
                );
                continue;
            }
            let Some(policy) = &self.policy else {
                println!("restart {name} by hand with:\n  {by_hand}");
                continue;
            };
            match self.restarts[i].schedule(now, policy) {
                Some((delay, count)) => println!(
                    "restarting {name} in {} (restart {count} of at most {} a minute)",
                    humantime::format_duration(delay),
                    policy.per_minute
                ),
                None => println!(
                    "{name} crashed {} times within a minute: not restarting it again; restart \
                     it by hand with:\n  {by_hand}",
                    policy.per_minute
                ),
            }
        }
        for i in 0..self.restarts.len() {
            if self.restarts[i].due.is_some_and(|due| due <= now) {
                self.restarts[i].due = None;
                match fleet.start(i) {
                    Ok(pid) => println!("{} restarted: pid {pid}", fleet.name(i)),
                    Err(error) => println!("{} could not be restarted: {error:#}", fleet.name(i)),
                }
            }
        }
        fleet.running() > 0 || self.restarts.iter().any(|r| r.due.is_some())
    }
}

/// The validator processes of a local network, started, watched, killed and stopped by one
/// piece of code for `testnet` and `soak`: each is `medchain node --config FILE --key-dir DIR
/// [--demo]` (this same executable), its output inherited or written to a numbered log file
/// per start.
pub struct Fleet {
    members: Vec<Member>,
    key_dir: PathBuf,
    demo: bool,
    /// Whether each start writes `<folder>/node-<start>.log` (else the output is inherited).
    logs: bool,
}

struct Member {
    name: String,
    config: PathBuf,
    folder: PathBuf,
    child: Option<Child>,
    /// Starts so far (numbers the log files).
    starts: u32,
}

/// A validator process that ended.
#[derive(Debug)]
pub struct Death {
    pub index: usize,
    pub name: String,
    pub pid: u32,
    pub status: ExitStatus,
    pub at: SystemTime,
}

impl std::fmt::Display for Death {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "validator {} (pid {}) died at {}: {}",
            self.name,
            self.pid,
            humantime::format_rfc3339_seconds(self.at),
            describe_status(&self.status)
        )
    }
}

/// An exit status as a person reads it: `exit status 1`, `killed by signal 9 (SIGKILL)`.
pub fn describe_status(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => match nix::sys::signal::Signal::try_from(signal) {
            Ok(name) => format!("killed by signal {signal} ({name})"),
            Err(_) => format!("killed by signal {signal}"),
        },
        (None, None) => status.to_string(),
    }
}

/// How long a validator has to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

impl Fleet {
    /// The validators of `configs` (none started yet); with `logs`, each start writes
    /// `<folder>/node-<start>.log`.
    pub fn new(
        configs: &[(PathBuf, NodeConfig)],
        key_dir: &Path,
        demo: bool,
        logs: bool,
    ) -> anyhow::Result<Fleet> {
        let absolute = |path: &Path| {
            std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
        };
        let mut members = Vec::new();
        for (path, config) in configs {
            let config_path = absolute(path)?;
            members.push(Member {
                name: config.name.clone(),
                folder: config_path
                    .parent()
                    .map_or_else(|| config.data_dir.clone(), Path::to_path_buf),
                config: config_path,
                child: None,
                starts: 0,
            });
        }
        Ok(Fleet {
            members,
            key_dir: absolute(key_dir)?,
            demo,
            logs,
        })
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// The process id of validator `i`, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// How many validators run (as last reaped).
    pub fn running(&self) -> usize {
        self.members.iter().filter(|m| m.child.is_some()).count()
    }

    /// The log file of validator `i`'s latest start (with logs).
    pub fn log_path(&self, i: usize) -> Option<PathBuf> {
        let member = &self.members[i];
        (self.logs && member.starts > 0)
            .then(|| member.folder.join(format!("node-{}.log", member.starts)))
    }

    /// Starts validator `i`; its pid.
    pub fn start(&mut self, i: usize) -> anyhow::Result<u32> {
        let log = {
            let member = &self.members[i];
            anyhow::ensure!(member.child.is_none(), "{} is already running", member.name);
            self.logs.then(|| {
                member
                    .folder
                    .join(format!("node-{}.log", member.starts + 1))
            })
        };
        let member = &mut self.members[i];
        let child = spawn_validator(&member.config, &self.key_dir, log.as_deref(), self.demo)?;
        member.starts += 1;
        let pid = child.id();
        member.child = Some(child);
        Ok(pid)
    }

    /// SIGKILLs validator `i` and reaps it: a crash, as power loss would make it.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<ExitStatus> {
        let member = &mut self.members[i];
        let mut child = member
            .child
            .take()
            .with_context(|| format!("{} is not running", member.name))?;
        child.kill()?;
        Ok(child.wait()?)
    }

    /// The validators that exited since the last call (they are no longer running).
    pub fn reap(&mut self) -> Vec<Death> {
        let mut deaths = Vec::new();
        for (index, member) in self.members.iter_mut().enumerate() {
            let Some(child) = member.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                deaths.push(Death {
                    index,
                    name: member.name.clone(),
                    pid: child.id(),
                    status,
                    at: SystemTime::now(),
                });
                member.child = None;
            }
        }
        deaths
    }

    /// Asks every running validator to stop (SIGTERM), then waits for each (killing one that
    /// takes longer than 20 s); each one's name and exit status.
    pub fn stop_all(&mut self) -> Vec<(String, anyhow::Result<ExitStatus>)> {
        for member in &self.members {
            if let Some(child) = &member.child {
                stop_child(child);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        let mut stopped = Vec::new();
        for member in &mut self.members {
            let Some(mut child) = member.child.take() else {
                continue;
            };
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Ok(status),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Ok(None) => {
                        let _ = child.kill();
                        break child
                            .wait()
                            .map_err(anyhow::Error::from)
                            .and_then(|status| {
                                anyhow::bail!(
                                    "did not stop within {} of SIGTERM: killed ({})",
                                    humantime::format_duration(STOP_GRACE),
                                    describe_status(&status)
                                )
                            });
                    }
                    Err(error) => break Err(error.into()),
                }
            };
            stopped.push((member.name.clone(), status));
        }
        stopped
    }

    /// The command that starts validator `i` by hand, as a shell reads it.
    pub fn command_line(&self, i: usize) -> String {
        let exe = std::env::current_exe().map_or_else(
            |_| "medchain".to_string(),
            |p| shell_word(&p.to_string_lossy()),
        );
        let member = &self.members[i];
        let mut line = format!(
            "{exe} node --config {} --key-dir {}",
            shell_word(&member.config.to_string_lossy()),
            shell_word(&self.key_dir.to_string_lossy())
        );
        if self.demo {
            line.push_str(" --demo");
        }
        line
    }
}

impl Drop for Fleet {
    /// A validator is never left running behind a fleet that is gone (an error, a panic).
    fn drop(&mut self) {
        if self.members.iter().any(|m| m.child.is_some()) {
            self.stop_all();
        }
    }
}

/// `word` as one shell word: as it is if it needs no quoting, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
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
                http: node::HttpConfig::default(),
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
fn spawn_validator(
    config: &Path,
    key_dir: &Path,
    log: Option<&Path>,
    demo: bool,
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the medchain executable")?;
    let log_format = super::service::log_format_env();
    let mut command = Command::new(exe);
    command
        .arg("node")
        .arg("--config")
        .arg(config)
        .arg("--key-dir")
        .arg(key_dir)
        .env(log_format.0, log_format.1)
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
fn stop_child(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_doubling_and_stop_at_the_limit_of_a_minute() {
        let policy = RestartPolicy::TESTNET;
        let mut restarts = Restarts::default();
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let scheduled: Vec<_> = (0..5)
            .map(|k| restarts.schedule(t0 + secs(k), &policy))
            .collect();
        assert_eq!(
            scheduled,
            [1, 2, 4, 8, 16]
                .iter()
                .zip(1..)
                .map(|(delay, count)| Some((secs(*delay), count)))
                .collect::<Vec<_>>()
        );
        assert_eq!(restarts.due, Some(t0 + secs(4 + 16)));
        assert_eq!(restarts.schedule(t0 + secs(30), &policy), None);
        // The restarts of 0+1, 1+2 and 2+4 s are more than a minute old at 70 s.
        assert_eq!(
            restarts.schedule(t0 + secs(70), &policy),
            Some((secs(4), 3))
        );
    }

    #[test]
    fn a_printed_command_reads_back_as_its_words() {
        assert_eq!(
            shell_word("/srv/net/clinic/node.toml"),
            "/srv/net/clinic/node.toml"
        );
        assert_eq!(shell_word("/my net/it's"), r"'/my net/it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
