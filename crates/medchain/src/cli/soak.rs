//! `medchain soak`: four validator processes under steady load through their APIs, up to f of
//! them SIGKILLed at random moments and restarted, then the checks that nothing acknowledged
//! was lost or doubled (issue 12). The processes are testnet's ([`Fleet`]).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use ledger::{Queries, TxId};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::testnet::{Fleet, describe_status, write_network};
use super::timing::TimingArgs;

/// Runs a fresh four-validator network (one `medchain node` process each, as testnet starts
/// them) under steady load: at every validator, its own doctor records for its own patient
/// through the API (in-person consent, then the record). At random moments it SIGKILLs up to f
/// validators, keeps them down a little, restarts them and waits until they caught up; the
/// others must keep committing meanwhile. At the end, every transaction the APIs acknowledged
/// is committed exactly once at every validator, all heads agree, and `medchain verify` passes
/// on every store. Exits 1 on any failure, keeping the network's directory and logs.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  medchain soak --duration 2m        # what the test command runs\n  medchain soak --duration 1h --seed 7"
)]
pub struct SoakArgs {
    /// How long the load and the kills go on (the checks follow).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = node::parse_duration)]
    duration: Duration,
    /// Where to create the network (default: a temporary directory, removed if all is well).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Seed of the kill schedule (default: random, printed).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Peer port of the first validator; the others take the next ones.
    #[arg(long, value_name = "PORT", default_value_t = 7301)]
    peer_port: u16,
    /// API port of the first validator; the others take the next ones.
    #[arg(long, value_name = "PORT", default_value_t = 5301)]
    api_port: u16,
    /// Longest a transaction waits before the primary proposes a block.
    #[arg(long, value_name = "DURATION", default_value = "50ms", value_parser = node::parse_duration)]
    batch_window: Duration,
    /// How long backups wait on a stalled primary before replacing it.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = node::parse_duration)]
    view_change_timeout: Duration,
}

/// Validators of the soak's network.
const VALIDATORS: usize = 4;
/// The password of the soak's people (a test network's, never a real one).
const PASSWORD: &str = "soak-password-1";
/// Pause between two records at one validator.
const PAUSE: Duration = Duration::from_millis(100);
/// Between kills, and how long the killed stay down.
const CALM_MS: std::ops::Range<u64> = 2_000..6_000;
const DOWN_MS: std::ops::Range<u64> = 500..4_000;
/// Deadline for anything the network must do with a quorum up (commit, catch up, converge).
const PROGRESS: Duration = Duration::from_secs(60);

/// One validator as the load sees it.
#[derive(Clone, Debug)]
struct Site {
    name: String,
    api: SocketAddr,
    doctor: String,
    patient: String,
}

/// A transaction an API acknowledged: a consent grant or a record.
#[derive(Clone, Debug)]
struct Ack {
    site: usize,
    tx: String,
}

impl super::Run for SoakArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        let seed = self.seed.unwrap_or_else(rand::random);
        let mut rng = StdRng::seed_from_u64(seed);
        let temp = tempfile::tempdir().context("cannot create a temporary directory")?;
        let dir = self.dir.clone().unwrap_or_else(|| temp.path().join("net"));
        println!(
            "soak: {VALIDATORS} validator processes for {}, seed {seed} (medchain soak --duration \
             {} --seed {seed} replays the kill schedule), network in {}",
            humantime::format_duration(self.duration),
            humantime::format_duration(self.duration),
            dir.display()
        );
        let (mut fleet, sites) = self.setup(&dir)?;
        let mut soak = Soak {
            fleet: &mut fleet,
            sites: &sites,
            problems: Vec::new(),
            kills: BTreeMap::new(),
            rounds: 0,
            slowest_catch_up: Duration::ZERO,
            tokens: Vec::new(),
        };
        soak.login()?;
        let load = Load::start(&sites, &soak.tokens);
        let started = Instant::now();
        soak.chaos(self.duration, &mut rng);
        let (acks, failed) = load.finish();
        println!(
            "load stopped after {:.0} s: {} transactions acknowledged, {failed} requests failed \
             (most while a validator was down)",
            started.elapsed().as_secs_f64(),
            acks.len()
        );
        let head = soak.settle(&acks);
        for (name, status) in soak.fleet.stop_all() {
            match status {
                Ok(status) if status.success() => {}
                Ok(status) => soak.problem(format!(
                    "{name} did not stop cleanly: {}",
                    describe_status(&status)
                )),
                Err(error) => soak.problem(format!("{name}: {error:#}")),
            }
        }
        soak.check_stores(&dir, &acks);
        soak.verify(&dir);

        let kills: Vec<String> = soak
            .kills
            .iter()
            .map(|(name, count)| format!("{name} {count}"))
            .collect();
        println!(
            "{} rounds, {} kills ({}); the slowest restart caught up in {:.1} s",
            soak.rounds,
            soak.kills.values().sum::<usize>(),
            kills.join(", "),
            soak.slowest_catch_up.as_secs_f64()
        );
        if let Some((height, hash)) = head {
            println!("the {VALIDATORS} heads agree at height {height} ({hash})");
        }
        if soak.problems.is_empty() {
            println!(
                "soak passed: all {} acknowledged transactions committed exactly once at every \
                 validator; medchain verify passes",
                acks.len()
            );
            return Ok(ExitCode::SUCCESS);
        }
        for problem in &soak.problems {
            println!("FAILED: {problem}");
        }
        let kept = if self.dir.is_none() {
            temp.keep()
        } else {
            dir.clone()
        };
        println!(
            "soak failed; the network and each start's log (<validator>/node-<start>.log) are in \
             {} (replay: --seed {seed})",
            kept.display()
        );
        Ok(ExitCode::FAILURE)
    }
}

impl SoakArgs {
    /// Writes the network, enrolls a doctor and a patient at each validator (`medchain user
    /// add`, queued until it runs) and starts the validators.
    fn setup(&self, dir: &Path) -> anyhow::Result<(Fleet, Vec<Site>)> {
        if dir.join("genesis.toml").exists() {
            bail!(
                "{} holds a network already: soak makes a fresh one",
                dir.display()
            );
        }
        let key_dir = ledger::master::default_key_dir(dir);
        let timing = TimingArgs {
            batch_window: self.batch_window,
            max_batch: 1000,
            view_change_timeout: self.view_change_timeout,
        };
        let configs = write_network(
            dir,
            &key_dir,
            VALIDATORS,
            self.peer_port,
            self.api_port,
            &timing,
            false,
        )?;
        let mut sites = Vec::new();
        for (i, (path, config)) in configs.iter().enumerate() {
            let site = Site {
                name: config.name.clone(),
                api: config.api_addr,
                doctor: format!("soak-dr{i}"),
                patient: format!("soak-pt{i}"),
            };
            enroll(path, &key_dir, &site.doctor, Some(&config.name))?;
            enroll(path, &key_dir, &site.patient, None)?;
            sites.push(site);
        }
        let mut fleet = Fleet::new(&configs, &key_dir, false, true)?;
        for i in 0..fleet.len() {
            fleet.start(i)?;
        }
        Ok((fleet, sites))
    }
}

/// `medchain user add --no-wait` of a doctor (of `department`) or a patient at the validator
/// of `config`.
fn enroll(config: &Path, key_dir: &Path, id: &str, doctor: Option<&str>) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the medchain executable")?;
    let mut command = Command::new(exe);
    command
        .args(["user", "add", "--no-wait", "--id", id, "--config"])
        .arg(config)
        .arg("--key-dir")
        .arg(key_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match doctor {
        Some(name) => command.args([
            "--role",
            "doctor",
            "--department",
            "Cardiology",
            "--name",
            &format!("Soak doctor at {name}"),
        ]),
        None => command.args(["--role", "patient"]),
    };
    let mut child = command.spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(format!("{PASSWORD}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "user add {id}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The run: its processes, and what went wrong.
struct Soak<'a> {
    fleet: &'a mut Fleet,
    sites: &'a [Site],
    problems: Vec<String>,
    /// Kills per validator.
    kills: BTreeMap<String, usize>,
    rounds: usize,
    slowest_catch_up: Duration,
    /// Each validator's doctor's session (status and transactions are read with it).
    tokens: Vec<String>,
}

impl Soak<'_> {
    fn problem(&mut self, text: String) {
        println!("problem: {text}");
        self.problems.push(text);
    }

    /// Logs each validator's doctor in, once their enrollment is on chain.
    fn login(&mut self) -> anyhow::Result<()> {
        for site in self.sites {
            let body = json!({"role": "doctor", "doctorId": site.doctor, "password": PASSWORD});
            let token = wait_for(PROGRESS, || {
                match call(site.api, "POST", "/api/login", None, Some(&body)) {
                    Ok((200, answer)) => answer["token"].as_str().map(str::to_string),
                    _ => None,
                }
            })
            .with_context(|| format!("{}'s doctor could not log in", site.name))?;
            self.tokens.push(token);
        }
        Ok(())
    }

    /// Kill rounds until `duration` is over: up to f validators SIGKILLed, down for a while
    /// (the others must commit meanwhile), restarted, and waited for until they caught up.
    fn chaos(&mut self, duration: Duration, rng: &mut StdRng) {
        let faulty = ledger::crypto::max_faulty(self.fleet.len());
        let end = Instant::now() + duration;
        let started = Instant::now();
        loop {
            let calm = Duration::from_millis(rng.gen_range(CALM_MS));
            if Instant::now() + calm >= end {
                std::thread::sleep(end.saturating_duration_since(Instant::now()));
                self.reap_unexpected();
                return;
            }
            std::thread::sleep(calm);
            self.reap_unexpected();
            self.rounds += 1;
            let count = rng.gen_range(1..=faulty);
            let mut all: Vec<usize> = (0..self.fleet.len()).collect();
            all.shuffle(rng);
            let victims = &all[..count];
            let survivors = &all[count..];
            let before = self.max_height(survivors);
            for &v in victims {
                let pid = self.fleet.pid(v).unwrap_or(0);
                match self.fleet.kill(v) {
                    Ok(status) => println!(
                        "[{:>6.1} s] round {}: {} (pid {pid}) {}",
                        started.elapsed().as_secs_f64(),
                        self.rounds,
                        self.sites[v].name,
                        describe_status(&status)
                    ),
                    Err(error) => {
                        self.problem(format!("cannot kill {}: {error:#}", self.sites[v].name))
                    }
                }
                *self.kills.entry(self.sites[v].name.clone()).or_default() += 1;
            }
            std::thread::sleep(Duration::from_millis(rng.gen_range(DOWN_MS)));
            // With at most f down, the others commit what they are given.
            if wait_for(PROGRESS, || {
                (self.max_height(survivors) > before).then_some(())
            })
            .is_none()
            {
                self.problem(format!(
                    "round {}: the {} running validators committed nothing in {} after the kill",
                    self.rounds,
                    survivors.len(),
                    humantime::format_duration(PROGRESS)
                ));
            }
            let restarted = Instant::now();
            for &v in victims {
                if let Err(error) = self.fleet.start(v) {
                    self.problem(format!("cannot restart {}: {error:#}", self.sites[v].name));
                }
            }
            let target = self.max_height(survivors);
            for &v in victims {
                let caught_up = wait_for(PROGRESS, || (self.height(v)? >= target).then_some(()));
                if caught_up.is_none() {
                    self.problem(format!(
                        "round {}: {} did not catch up to height {target} within {}",
                        self.rounds,
                        self.sites[v].name,
                        humantime::format_duration(PROGRESS)
                    ));
                }
            }
            println!(
                "[{:>6.1} s] round {}: restarted, caught up to height {target} in {:.1} s",
                started.elapsed().as_secs_f64(),
                self.rounds,
                restarted.elapsed().as_secs_f64()
            );
            self.slowest_catch_up = self.slowest_catch_up.max(restarted.elapsed());
        }
    }

    /// A validator that died without being killed is a failure (it is restarted, so that the
    /// soak still checks the rest).
    fn reap_unexpected(&mut self) {
        for death in self.fleet.reap() {
            let log = self
                .fleet
                .log_path(death.index)
                .map_or_else(String::new, |p| format!(" (log: {})", p.display()));
            self.problem(format!("{death}, unasked{log}"));
            if let Err(error) = self.fleet.start(death.index) {
                self.problem(format!("cannot restart {}: {error:#}", death.name));
            }
        }
    }

    /// `GET /api/status` of validator `i`.
    fn status(&self, i: usize) -> Option<Value> {
        match call(
            self.sites[i].api,
            "GET",
            "/api/status",
            Some(&self.tokens[i]),
            None,
        ) {
            Ok((200, status)) => Some(status),
            _ => None,
        }
    }

    fn height(&self, i: usize) -> Option<u64> {
        self.status(i)?["height"].as_u64()
    }

    /// The highest height the validators `of` report (0 if none answers).
    fn max_height(&self, of: &[usize]) -> u64 {
        of.iter().filter_map(|&i| self.height(i)).max().unwrap_or(0)
    }

    /// Waits until every acknowledged transaction is committed (asking the validator that
    /// acknowledged it) and all heads agree with nothing pending; that head.
    fn settle(&mut self, acks: &[Ack]) -> Option<(u64, String)> {
        let mut left: Vec<&Ack> = acks.iter().collect();
        let committed = wait_for(PROGRESS * 2, || {
            left.retain(|ack| {
                let path = format!("/api/tx/{}", ack.tx);
                let answer = call(
                    self.sites[ack.site].api,
                    "GET",
                    &path,
                    Some(&self.tokens[ack.site]),
                    None,
                );
                !matches!(answer, Ok((200, body)) if body["status"] == "committed")
            });
            left.is_empty().then_some(())
        });
        if committed.is_none() {
            let sample: Vec<&str> = left.iter().take(5).map(|a| a.tx.as_str()).collect();
            self.problem(format!(
                "{} acknowledged transactions are not committed (e.g. {sample:?})",
                left.len()
            ));
        }
        let mut last = None;
        let head = wait_for(PROGRESS, || {
            let mut heads = Vec::new();
            for i in 0..self.sites.len() {
                let status = self.status(i)?;
                if status["pending"].as_u64() != Some(0) {
                    return None;
                }
                heads.push((
                    status["height"].as_u64()?,
                    status["head_hash"].as_str()?.to_string(),
                ));
            }
            heads.dedup();
            let head = (heads.len() == 1).then(|| heads.remove(0))?;
            if last.as_ref() == Some(&head) {
                return Some(head);
            }
            last = Some(head);
            std::thread::sleep(Duration::from_millis(300));
            None
        });
        if head.is_none() {
            self.problem("the validators' heads did not converge".to_string());
        }
        head
    }

    /// Every stopped store: the same head, no entry twice, and every acknowledged transaction
    /// exactly once and applied.
    fn check_stores(&mut self, dir: &Path, acks: &[Ack]) {
        let mut heads = Vec::new();
        for site in self.sites {
            let path = node::validator_dir(dir, &site.name).join("chain.db");
            match audit(&path, acks) {
                Ok((head, problems)) => {
                    heads.push(head);
                    for problem in problems {
                        self.problem(format!("{}: {problem}", site.name));
                    }
                }
                Err(error) => self.problem(format!("{}: {error:#}", path.display())),
            }
        }
        heads.dedup();
        if heads.len() > 1 {
            self.problem(format!("the stores end at different heads: {heads:?}"));
        }
    }

    /// `medchain verify` on every store.
    fn verify(&mut self, dir: &Path) {
        let out = std::env::current_exe().and_then(|exe| {
            Command::new(exe)
                .arg("verify")
                .arg("--data-dir")
                .arg(dir)
                .stdin(Stdio::null())
                .output()
        });
        match out {
            Ok(out) if out.status.success() => {
                print!("{}", String::from_utf8_lossy(&out.stdout));
            }
            Ok(out) => self.problem(format!(
                "medchain verify failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(error) => self.problem(format!("cannot run medchain verify: {error}")),
        }
    }
}

/// Checks the stopped store `path`: no entry id twice in the chain, and each of `acks`
/// committed exactly once and applied. Its head (height, hash hex) and what is wrong.
fn audit(path: &Path, acks: &[Ack]) -> anyhow::Result<((u64, String), Vec<String>)> {
    let store = ledger::store::Reader::open(path)?;
    let (height, hash) = store.head()?;
    let mut seen: BTreeMap<TxId, usize> = BTreeMap::new();
    let mut from = 1;
    while from <= height {
        let blocks = store.blocks_from(from, 256)?;
        if blocks.is_empty() {
            bail!("no block at height {from}, below the head {height}");
        }
        for block in &blocks {
            for entry in &block.entries {
                *seen.entry(entry.id).or_default() += 1;
            }
        }
        from += blocks.len() as u64;
    }
    let mut problems: Vec<String> = seen
        .iter()
        .filter(|(_, count)| **count > 1)
        .map(|(id, count)| format!("{} is in the chain {count} times", hex::encode(id)))
        .collect();
    for ack in acks {
        let Some(id) = hex::decode(&ack.tx)
            .ok()
            .and_then(|b| TxId::try_from(b).ok())
        else {
            problems.push(format!(
                "the API acknowledged {:?}, not a transaction id",
                ack.tx
            ));
            continue;
        };
        match (seen.get(&id), store.tx_status(&id)?) {
            (Some(1), ledger::TxStatus::Committed { rejected: None, .. }) => {}
            (None, _) => problems.push(format!("acknowledged {} is not in the chain", ack.tx)),
            (
                _,
                ledger::TxStatus::Committed {
                    rejected: Some(reason),
                    ..
                },
            ) => problems.push(format!("acknowledged {} was rejected: {reason}", ack.tx)),
            (Some(count), _) => problems.push(format!(
                "acknowledged {} is in the chain {count} times",
                ack.tx
            )),
        }
    }
    Ok(((height, hex::encode(hash)), problems))
}

/// The load: one thread per validator, its doctor adding records for its patient.
struct Load {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(sites: &[Site], tokens: &[String]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(AtomicU64::new(0));
        let threads = sites
            .iter()
            .zip(tokens)
            .enumerate()
            .map(|(i, (site, token))| {
                let (site, token) = (site.clone(), token.clone());
                let (stop, acks, failed) = (stop.clone(), acks.clone(), failed.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        let done = one_record(&site, &token, n);
                        let complete = done.len() == 2;
                        acks.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .extend(done.into_iter().map(|tx| Ack { site: i, tx }));
                        if !complete {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                        std::thread::sleep(PAUSE);
                    }
                })
            })
            .collect();
        Load {
            stop,
            acks,
            failed,
            threads,
        }
    }

    /// Stops the load; every acknowledged transaction, and how many records failed.
    fn finish(self) -> (Vec<Ack>, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            let _ = thread.join();
        }
        let acks = self
            .acks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        (acks, self.failed.load(Ordering::SeqCst))
    }
}

/// One record through the seed's flow at `site`: in-person consent (the patient's password),
/// then the record with the code. The transaction ids acknowledged: the grant's, then the
/// record's (fewer if a step failed).
fn one_record(site: &Site, token: &str, n: u64) -> Vec<String> {
    let mut acknowledged = Vec::new();
    let consent = json!({"patientId": site.patient, "password": PASSWORD});
    let Ok((200, answer)) = call(
        site.api,
        "POST",
        "/api/request_consent",
        Some(token),
        Some(&consent),
    ) else {
        return acknowledged;
    };
    acknowledged.extend(answer["grantTxId"].as_str().map(str::to_string));
    let Some(otp) = answer["otp"].as_str() else {
        return acknowledged;
    };
    let record = json!({
        "patientId": site.patient,
        "otp": otp,
        "medical_data": {"diagnosis": format!("soak {} {n}", site.name), "prescription": "rest"},
    });
    if let Ok((200, answer)) = call(
        site.api,
        "POST",
        "/api/add_record",
        Some(token),
        Some(&record),
    ) {
        acknowledged.extend(answer["txId"].as_str().map(str::to_string));
    }
    acknowledged
}

/// Polls `probe` every 100 ms until it returns `Some`, or `None` after `limit`.
fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP/1.1 request to the API (`Connection: close`, JSON both ways): the status and the
/// body (`Null` when empty or not JSON).
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let payload = body.map(Value::to_string).unwrap_or_default();
    let authorization =
        token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{authorization}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
        payload.len()
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let malformed = || std::io::Error::other(format!("a malformed answer from {addr}{path}"));
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(malformed)?;
    let head = String::from_utf8_lossy(&answer[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(malformed)?;
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    let raw = &answer[end + 4..];
    let content = if chunked {
        unchunk(raw).ok_or_else(malformed)?
    } else {
        raw.to_vec()
    };
    Ok((
        status,
        serde_json::from_slice(&content).unwrap_or(Value::Null),
    ))
}

/// The body of a chunked transfer encoding.
fn unchunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = raw.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&raw[..line]).ok()?.split(';').next()?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(raw.get(line + 2..line + 2 + size)?);
        raw = raw.get(line + 2 + size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use ledger::store::{OpenOptions, Store};
    use ledger::testkit::TestNet;

    use super::*;

    /// The audit finds what a soak must never see: an entry twice in the chain, and an
    /// acknowledged transaction lost, doubled or rejected.
    #[test]
    fn the_audit_names_lost_doubled_and_rejected_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        let mut store = Store::open(&path, &net.genesis, OpenOptions::default()).unwrap();
        // Samples 0-12 enroll people, 13 is a write grant, 14 the record that uses it.
        let tx = |i| net.sample_tx(i);
        let mut first: Vec<_> = (0..13).map(tx).collect();
        first.push(tx(14)); // before its grant: rejected
        let mut prev = (0, net.genesis.hash());
        for transactions in [first, vec![tx(13)], vec![tx(13)]] {
            let block = net.next_block(prev, transactions);
            net.append(&mut store, &block).unwrap();
            prev = (block.header.height, block.hash());
        }
        drop(store);
        let id = |i| hex::encode(net.id(&tx(i)));
        let ack = |i| Ack { site: 0, tx: id(i) };

        let (head, problems) = audit(&path, &[ack(0)]).unwrap();
        assert_eq!(head, (3, hex::encode(prev.1)));
        assert_eq!(
            problems,
            vec![format!("{} is in the chain 2 times", id(13))]
        );
        let (_, problems) = audit(&path, &[ack(13), ack(14), ack(20)]).unwrap();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.contains(&format!("acknowledged {} is in the chain 2 times", id(13))));
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&format!("acknowledged {} was rejected: ", id(14))))
        );
        assert!(problems.contains(&format!("acknowledged {} is not in the chain", id(20))));
    }
}
