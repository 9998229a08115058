//! Harness for process-level network tests: a four-validator network written by
//! `medchain testnet --setup-only` in a temporary directory, each validator a real
//! `medchain node` process on 127.0.0.1 that a test can SIGKILL, stop (SIGTERM) and restart,
//! a tiny blocking HTTP client for the API, and a steady load of records.
//!
//! On a panic, every node's log (stdout and stderr of every start) is printed and every
//! process still running is killed.
#![allow(dead_code)]

pub mod confidential;
pub mod forge;
#[path = "../common/secrets.rs"]
pub mod secrets;
#[path = "../common/seed.rs"]
pub mod seed;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};

/// The batch window and view-change timeout of the networks `Net::setup` writes: a backup
/// that waits on a request this long (the sum) asks for a view change.
pub const BATCH_WINDOW_MS: u64 = 50;
pub const VIEW_CHANGE_TIMEOUT_MS: u64 = 1_000;

/// The password of the people each node enrolls for these tests.
pub const LOCAL_PASSWORD: &str = "local-password-1";

/// The doctor whose home is node `i` (enrolled by `Net::setup` with `medchain user add`):
/// records go through every node, each through its own home doctor (a doctor acts only at
/// their home, and in-person consent is given at the patient's home).
pub fn local_doctor(i: usize) -> String {
    format!("dr{i}")
}

/// The patient whose home is node `i`.
pub fn local_patient(i: usize) -> String {
    format!("pt{i}")
}

/// Polls `probe` every 100 ms until it returns `Some`, or panics naming `what` after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until each of `acks` is committed, asking the node that acknowledged it.
pub fn wait_committed(net: &Net, acks: &[Ack], limit: Duration, what: &str) {
    let mut left: Vec<&Ack> = acks.iter().collect();
    wait_for(limit, what, || {
        left.retain(|ack| net.tx_status(ack.node, &ack.tx_id).as_deref() != Some("committed"));
        left.is_empty().then_some(())
    });
}

/// A plain HTTP/1.1 GET of `path` with `Host: host`, read to the end of the connection: the
/// head in lower case and the body (for answers the JSON client does not show: headers, a
/// refused host, the Prometheus text).
pub fn raw_get(addr: SocketAddr, path: &str, host: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    (head.to_lowercase(), body.to_string())
}

/// One HTTP/1.1 request (`Connection: close`) with a bearer token; the status and the JSON
/// body (`Null` if empty).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let headers: Vec<(&str, String)> = token
        .map(|t| ("Authorization", format!("Bearer {t}")))
        .into_iter()
        .collect();
    let answer = seed::exchange(addr, method, path, &headers, body)?;
    Ok((answer.status, answer.body))
}

/// Ports handed out in this test process, so parallel tests never pick the same ones.
static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A base port such that `base..base + 2n` are free now: peer ports `base..base + n`, API
/// ports `base + n..base + 2n`. Below Linux's ephemeral range (32768+), so outgoing
/// connections do not take them in the meantime.
fn free_ports(n: u16) -> u16 {
    let mut rng = rand::thread_rng();
    for _ in 0..200 {
        let base: u16 = rng.gen_range(20_000..32_000 - 2 * n);
        let mut taken = TAKEN.lock().unwrap();
        if (base..base + 2 * n).any(|p| taken.contains(&p)) {
            continue;
        }
        let all_free =
            (base..base + 2 * n).all(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok());
        if all_free {
            taken.extend(base..base + 2 * n);
            return base;
        }
    }
    panic!("no run of {} free ports found", 2 * n);
}

/// One validator process.
pub struct NodeProc {
    pub name: String,
    pub config: PathBuf,
    pub dir: PathBuf,
    pub api: SocketAddr,
    /// Extra arguments of `medchain node` (e.g. `--byzantine ..`).
    pub args: Vec<String>,
    child: Option<Child>,
    starts: usize,
}

impl NodeProc {
    fn out_log(&self, start: usize) -> PathBuf {
        self.dir.join(format!("node-{start}.out.log"))
    }
    fn err_log(&self, start: usize) -> PathBuf {
        self.dir.join(format!("node-{start}.err.log"))
    }
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

pub struct Net {
    /// `ROOT/net` holds the network, `ROOT/net.keys` its operator keys (testnet's default).
    pub root: tempfile::TempDir,
    pub nodes: Vec<NodeProc>,
    /// The doctor's bearer token at each node (sessions live in each node's app.db).
    pub tokens: Vec<String>,
    /// The person id (32 hex digits) of each login `Net::setup` enrolled, by login.
    pub people: BTreeMap<String, String>,
}

/// `medchain serve --demo --batch-window 10ms` on `dir` and `addr` with `extra` arguments, its
/// output appended to `log`.
pub fn serve_process(
    dir: &std::path::Path,
    addr: SocketAddr,
    log: &std::path::Path,
    extra: &[&str],
) -> Child {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    medchain()
        .args(["serve", "--demo", "--batch-window", "10ms"])
        .args(extra)
        .arg("--data-dir")
        .arg(dir)
        .arg("--addr")
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .spawn()
        .expect("run medchain serve")
}

pub fn medchain() -> Command {
    Command::new(env!("CARGO_BIN_EXE_medchain"))
}

pub fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

impl Net {
    /// Writes a network of `n` validators (`medchain testnet --setup-only --demo`) with a short
    /// batch window and view-change timeout.
    pub fn setup(n: u16) -> Net {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("net");
        let base = free_ports(n);
        let out = medchain()
            .args(["testnet", "--setup-only", "--demo", "--nodes"])
            .arg(n.to_string())
            .arg("--dir")
            .arg(&dir)
            .args(["--peer-port", &base.to_string()])
            .args(["--api-port", &(base + n).to_string()])
            .arg("--batch-window")
            .arg(format!("{BATCH_WINDOW_MS}ms"))
            .arg("--view-change-timeout")
            .arg(format!("{VIEW_CHANGE_TIMEOUT_MS}ms"))
            .output()
            .expect("run medchain testnet");
        assert!(out.status.success(), "testnet: {}", output_text(&out));
        let nodes = ledger::validator_names(n as usize)
            .into_iter()
            .map(|name| {
                let node_dir = dir.join(&name);
                let config = node_dir.join("node.toml");
                let api = node::NodeConfig::load(&config)
                    .expect("node.toml written")
                    .api_addr;
                NodeProc {
                    name,
                    config,
                    dir: node_dir,
                    api,
                    args: Vec::new(),
                    child: None,
                    starts: 0,
                }
            })
            .collect();
        let mut net = Net {
            root,
            nodes,
            tokens: Vec::new(),
            people: BTreeMap::new(),
        };
        for i in 0..net.nodes.len() {
            for (login, doctor) in [
                (local_doctor(i), Some(("Cardiology", format!("Doctor {i}")))),
                (local_patient(i), None),
            ] {
                let doctor = doctor.as_ref().map(|(d, name)| (*d, name.as_str()));
                let person = net.user_add(i, &login, doctor);
                net.people.insert(login, person);
            }
        }
        net
    }

    /// The person id (32 hex digits) of login `login`, enrolled by `Net::setup`.
    pub fn person(&self, login: &str) -> &str {
        self.people
            .get(login)
            .unwrap_or_else(|| panic!("no person {login}"))
    }

    /// `medchain user add --no-wait` at node `i` (the node need not run): a login whose person
    /// node `i` enrolls, a doctor with `(department, name)`. Returns the person id it prints.
    pub fn user_add(&self, i: usize, id: &str, doctor: Option<(&str, &str)>) -> String {
        let mut command = medchain();
        command
            .args(["user", "add", "--no-wait", "--id", id, "--config"])
            .arg(&self.nodes[i].config)
            .arg("--key-dir")
            .arg(self.key_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match doctor {
            Some((department, name)) => command.args([
                "--role",
                "doctor",
                "--department",
                department,
                "--name",
                name,
            ]),
            None => command.args(["--role", "patient"]),
        };
        let mut child = command.spawn().expect("run medchain user add");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{LOCAL_PASSWORD}\n").as_bytes())
            .expect("password");
        let out = child.wait_with_output().expect("user add");
        assert!(out.status.success(), "user add {id}: {}", output_text(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        let person = text
            .split("(person ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .unwrap_or_else(|| panic!("user add {id} printed no person id: {text}"));
        person.to_string()
    }

    /// Sets `key = value` in every node.toml (the line `key = ..` that testnet wrote).
    pub fn set_setting(&self, key: &str, value: &str) {
        for node in &self.nodes {
            let text = std::fs::read_to_string(&node.config).expect("read node.toml");
            let prefix = format!("{key} = ");
            assert!(
                text.lines().any(|line| line.starts_with(&prefix)),
                "node.toml has no {key}"
            );
            let text: Vec<String> = text
                .lines()
                .map(|line| {
                    if line.starts_with(&prefix) {
                        format!("{prefix}{value}")
                    } else {
                        line.to_string()
                    }
                })
                .collect();
            std::fs::write(&node.config, text.join("\n") + "\n").expect("write node.toml");
        }
    }

    /// The network's genesis, as node 0's configuration names it.
    pub fn genesis(&self) -> ledger::Genesis {
        let config = node::NodeConfig::load(&self.nodes[0].config).expect("node.toml");
        ledger::Genesis::load(&config.genesis).expect("genesis")
    }

    /// The network's directory.
    pub fn path(&self) -> PathBuf {
        self.root.path().join("net")
    }

    /// The operator keys of the network's validators (`medchain testnet`'s `DIR.keys`).
    pub fn key_dir(&self) -> PathBuf {
        self.root.path().join("net.keys")
    }

    /// Validator `i`'s operator key.
    pub fn operator_key(&self, i: usize) -> ledger::master::MasterKey {
        let path = ledger::master::dev_key_path(&self.key_dir(), &self.nodes[i].name);
        ledger::master::MasterKey::from_key_file(&path, &self.path(), false)
            .expect("the operator key testnet made")
            .0
    }

    pub fn apis(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.api).collect()
    }

    pub fn index_of(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no validator named {name}"))
    }

    /// Spawns `medchain node --config DIR/<name>/node.toml --key-dir DIR.keys --demo`, its output to a fresh pair of
    /// log files.
    pub fn spawn(&mut self, i: usize) {
        let key_dir = self.key_dir();
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "{} is already running", node.name);
        node.starts += 1;
        let out = std::fs::File::create(node.out_log(node.starts)).expect("log file");
        let err = std::fs::File::create(node.err_log(node.starts)).expect("log file");
        let child = medchain()
            .arg("node")
            .arg("--config")
            .arg(&node.config)
            .arg("--key-dir")
            .arg(key_dir)
            .arg("--demo")
            .args(&node.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn medchain node");
        node.child = Some(child);
    }

    /// Spawns node `i` and waits until its API answers.
    pub fn start(&mut self, i: usize) {
        self.spawn(i);
        self.wait_healthy(i);
    }

    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.spawn(i);
        }
        for i in 0..self.nodes.len() {
            self.wait_healthy(i);
        }
    }

    pub fn wait_healthy(&mut self, i: usize) {
        let api = self.nodes[i].api;
        let name = self.nodes[i].name.clone();
        wait_for(Duration::from_secs(30), &format!("{name}'s API"), || {
            if let Some(child) = self.nodes[i].child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("{name} exited at start: {status}");
            }
            match http(api, "GET", "/healthz", None, None) {
                Ok((200, _)) => Some(()),
                _ => None,
            }
        });
    }

    /// Logs each node's own doctor in at that node (waiting while their enrollment, queued
    /// before the node started, is not on chain yet: 503).
    pub fn login_all(&mut self) {
        self.tokens = (0..self.nodes.len())
            .map(|i| {
                let answer = self.login(i, "doctor", &local_doctor(i));
                answer["token"].as_str().expect("token").to_string()
            })
            .collect();
    }

    /// Signs `login` (role `role`) in at node `i` with [`LOCAL_PASSWORD`], waiting while the
    /// person is not on chain yet (503); the login's answer (`token`, `personId`, ...).
    pub fn login(&self, i: usize, role: &str, login: &str) -> Value {
        let field = if role == "doctor" {
            "doctorId"
        } else {
            "patientId"
        };
        let body = json!({"role": role, field: login, "password": LOCAL_PASSWORD});
        let api = self.nodes[i].api;
        wait_for(
            Duration::from_secs(30),
            &format!("{login}'s login at node {i}"),
            || match http(api, "POST", "/api/login", None, Some(&body)) {
                Ok((200, answer)) => Some(answer),
                Ok((503, _)) | Err(_) => None,
                Ok((status, answer)) => panic!("login {login} at {api}: {status} {answer}"),
            },
        )
    }

    /// Whether node `i`'s process is still running (it was started and has not exited).
    pub fn alive(&mut self, i: usize) -> bool {
        self.nodes[i]
            .child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().expect("node running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    /// SIGTERM, then waits (at most 20 s) for the process to exit; returns its status.
    pub fn stop(&mut self, i: usize) -> ExitStatus {
        let name = self.nodes[i].name.clone();
        let mut child = self.nodes[i].child.take().expect("node running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{name} did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops every running node cleanly; each must exit with status 0.
    pub fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].running() {
                let status = self.stop(i);
                assert!(
                    status.success(),
                    "{} exited with {status} after SIGTERM",
                    self.nodes[i].name
                );
            }
        }
    }

    /// Waits (at most `limit`) for node `i`'s process to exit by itself; its status and stderr.
    pub fn wait_exit(&mut self, i: usize, limit: Duration) -> (ExitStatus, String) {
        let name = self.nodes[i].name.clone();
        let status = {
            let child = self.nodes[i].child.as_mut().expect("node running");
            wait_for(limit, &format!("{name} to exit"), || {
                child.try_wait().expect("wait")
            })
        };
        self.nodes[i].child = None;
        let node = &self.nodes[i];
        let stderr = std::fs::read_to_string(node.err_log(node.starts)).unwrap_or_default();
        (status, stderr)
    }

    /// `GET /api/status` at node `i`.
    pub fn status(&self, i: usize) -> Option<Value> {
        match http(
            self.nodes[i].api,
            "GET",
            "/api/status",
            Some(&self.tokens[i]),
            None,
        ) {
            Ok((200, body)) => Some(body),
            _ => None,
        }
    }

    /// `GET /api/tx/{id}` at node `i`: "pending", "committed", "rejected" or "unknown".
    pub fn tx_status(&self, i: usize, id: &str) -> Option<String> {
        self.tx_verdict(i, id).map(|(status, _)| status)
    }

    /// `GET /api/tx/{id}` at node `i`: its status and, for a rejected one, the rule's reason.
    pub fn tx_verdict(&self, i: usize, id: &str) -> Option<(String, Option<String>)> {
        match http(
            self.nodes[i].api,
            "GET",
            &format!("/api/tx/{id}"),
            Some(&self.tokens[i]),
            None,
        ) {
            Ok((200, body)) => Some((
                body["status"].as_str()?.to_string(),
                body["reason"].as_str().map(str::to_string),
            )),
            _ => None,
        }
    }

    /// Waits until every running node reports the same head and nothing pending, twice in a
    /// row 300 ms apart; returns that head (height, hash hex).
    pub fn wait_converged(&self, limit: Duration) -> (u64, String) {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].running())
            .collect();
        self.wait_converged_among(&running, limit)
    }

    /// [`Net::wait_converged`] for the nodes `running` only.
    pub fn wait_converged_among(&self, running: &[usize], limit: Duration) -> (u64, String) {
        let mut last: Option<(u64, String)> = None;
        wait_for(limit, "every node to reach the same head", || {
            let mut heads = BTreeSet::new();
            for &i in running {
                let status = self.status(i)?;
                if status["pending"].as_u64() != Some(0) {
                    return None;
                }
                heads.insert((
                    status["height"].as_u64()?,
                    status["head_hash"].as_str()?.to_string(),
                ));
            }
            let head = (heads.len() == 1).then(|| heads.pop_first().expect("one"))?;
            if last.as_ref() == Some(&head) {
                return Some(head);
            }
            last = Some(head);
            std::thread::sleep(Duration::from_millis(300));
            None
        })
    }

    /// Runs `medchain verify --data-dir DIR`.
    pub fn verify(&self) -> Output {
        medchain()
            .arg("verify")
            .arg("--data-dir")
            .arg(self.path())
            .output()
            .expect("run medchain verify")
    }

    /// Every node's chain head, read from its stopped store.
    pub fn store_heads(&self) -> Vec<(u64, [u8; 32])> {
        self.nodes
            .iter()
            .map(|node| {
                ledger::store::Reader::open(&node.dir.join("chain.db"))
                    .expect("open chain.db")
                    .head()
                    .expect("head")
            })
            .collect()
    }

    /// Panics if two of the stopped stores of `nodes` hold different blocks at a height they
    /// both have (a fork); returns each one's head height.
    pub fn assert_no_fork(&self, nodes: &[usize]) -> Vec<u64> {
        let readers: Vec<_> = nodes
            .iter()
            .map(|&i| {
                ledger::store::Reader::open(&self.nodes[i].dir.join("chain.db"))
                    .expect("open chain.db")
            })
            .collect();
        let heads: Vec<u64> = readers
            .iter()
            .map(|reader| reader.head().expect("head").0)
            .collect();
        let shared = heads.iter().copied().min().unwrap_or(0);
        for height in 1..=shared {
            let hashes: Vec<_> = readers
                .iter()
                .map(|reader| {
                    ledger::Queries::block(reader, height)
                        .expect("read block")
                        .map(|block| hex::encode(block.hash()))
                })
                .collect();
            assert!(
                hashes.windows(2).all(|w| w[0] == w[1]),
                "FORK at height {height}: the stores of {:?} hold {hashes:?}",
                nodes
                    .iter()
                    .map(|&i| self.nodes[i].name.as_str())
                    .collect::<Vec<_>>()
            );
        }
        heads
    }

    /// The ids (hex) of every record applied in node `i`'s stopped store, in chain order (a
    /// record's content is sealed: the store shows which records exist, not what they say).
    pub fn store_records(&self, i: usize) -> Vec<String> {
        let conn = rusqlite::Connection::open_with_flags(
            self.nodes[i].dir.join("chain.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open chain.db");
        let mut statement = conn
            .prepare("SELECT t.id FROM records r JOIN transactions t ON t.tx = r.tx ORDER BY r.tx")
            .expect("prepare");
        let rows = statement
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .expect("query");
        rows.map(|row| hex::encode(row.expect("row"))).collect()
    }

    /// Every transaction in node `i`'s stopped store: id (hex) to the rejection reason (`None`:
    /// applied) of each of its occurrences, in chain order.
    pub fn store_transactions(&self, i: usize) -> BTreeMap<String, Vec<Option<String>>> {
        let conn = rusqlite::Connection::open_with_flags(
            self.nodes[i].dir.join("chain.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open chain.db");
        let mut statement = conn
            .prepare("SELECT id, rejected FROM transactions ORDER BY tx")
            .expect("prepare");
        let rows = statement
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Option<String>>(1)?))
            })
            .expect("query");
        let mut out: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
        for row in rows {
            let (id, rejected) = row.expect("row");
            out.entry(hex::encode(id)).or_default().push(rejected);
        }
        out
    }

    /// Everything node `i` logged so far (stdout and stderr of every start), colours removed.
    pub fn log(&self, i: usize) -> String {
        let node = &self.nodes[i];
        let mut text = String::new();
        for start in 1..=node.starts {
            for path in [node.out_log(start), node.err_log(start)] {
                text.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
        strip_ansi(&text)
    }

    fn print_logs(&self) {
        for node in &self.nodes {
            for start in 1..=node.starts {
                for path in [node.out_log(start), node.err_log(start)] {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    let from = lines.len().saturating_sub(200);
                    eprintln!(
                        "----- {} (start {start}) {} ({} lines, last {}) -----",
                        node.name,
                        path.file_name().unwrap_or_default().to_string_lossy(),
                        lines.len(),
                        lines.len() - from
                    );
                    for line in &lines[from..] {
                        eprintln!("{line}");
                    }
                }
            }
        }
    }
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`), as tracing colours its fields.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for Net {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            self.print_logs();
        }
    }
}

/// A record whose `add_record` answered 200.
#[derive(Clone, Debug)]
pub struct Ack {
    pub diagnosis: String,
    pub tx_id: String,
    /// The transaction of the consent the record used, if request_consent acknowledged it
    /// (`grantTxId` is null when the grant could not be submitted).
    pub grant_tx_id: Option<String>,
    pub node: usize,
    pub at: Instant,
}

/// A steady load: one record at a time through the seed's flow (request_consent with the
/// patient's password, then add_record with the code), the nodes taken in turn, each with its
/// own home doctor and patient.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub acks: Arc<Mutex<Vec<Ack>>>,
    /// Consent grants acknowledged whose record was not (the node died in between).
    pub lone_grants: Arc<Mutex<Vec<String>>>,
    pub failures: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    /// Starts submitting to the nodes `targets`, pausing `pause` between records.
    pub fn start(net: &Net, targets: Vec<usize>, tag: &str, pause: Duration) -> Load {
        Load::start_for(net, targets, tag, pause, None)
    }

    /// [`Load::start`] with records of `patient` (id, password) at every node, instead of
    /// each node's own patient.
    pub fn start_for(
        net: &Net,
        targets: Vec<usize>,
        tag: &str,
        pause: Duration,
        patient: Option<(&'static str, &'static str)>,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let lone_grants = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(AtomicUsize::new(0));
        let apis = net.apis();
        let tokens = net.tokens.clone();
        let tag = tag.to_string();
        let thread = {
            let (stop, acks, failures) = (stop.clone(), acks.clone(), failures.clone());
            let lone_grants = lone_grants.clone();
            std::thread::spawn(move || {
                let mut n = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let node = targets[n % targets.len()];
                    let diagnosis = format!("{tag} record {n}");
                    n += 1;
                    let local = local_patient(node);
                    let patient = patient.unwrap_or((local.as_str(), LOCAL_PASSWORD));
                    match add_record_for(apis[node], &tokens[node], patient, &diagnosis) {
                        (Some(grant_tx_id), Some(tx_id)) => acks.lock().unwrap().push(Ack {
                            diagnosis,
                            tx_id,
                            grant_tx_id,
                            node,
                            at: Instant::now(),
                        }),
                        (grant, _) => {
                            lone_grants.lock().unwrap().extend(grant.flatten());
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    std::thread::sleep(pause);
                }
            })
        };
        Load {
            stop,
            acks,
            lone_grants,
            failures,
            thread: Some(thread),
        }
    }

    pub fn acks(&self) -> Vec<Ack> {
        self.acks.lock().unwrap().clone()
    }

    /// Waits (at most `limit`) until `count` records acknowledged after `since` by nodes that
    /// `by` accepts are in; all of those so far.
    pub fn wait_acks(
        &self,
        limit: Duration,
        what: &str,
        count: usize,
        since: Instant,
        by: impl Fn(usize) -> bool,
    ) -> Vec<Ack> {
        wait_for(limit, what, || {
            let acks: Vec<Ack> = self
                .acks()
                .into_iter()
                .filter(|ack| ack.at > since && by(ack.node))
                .collect();
            (acks.len() >= count).then_some(acks)
        })
    }

    /// Acknowledged records so far.
    pub fn count(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    /// Stops submitting and returns every acknowledged record, and every acknowledged
    /// transaction id (grants and records).
    pub fn finish(mut self) -> (Vec<Ack>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("load thread");
        }
        let acks = self.acks();
        let mut txs: Vec<String> = self.lone_grants.lock().unwrap().clone();
        for ack in &acks {
            txs.extend(ack.grant_tx_id.clone());
            txs.push(ack.tx_id.clone());
        }
        (acks, txs)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// `request_consent` for `patient` (id, password) by the doctor of `token` at `api`, once the
/// grant is applied: its transaction id and the in-person code.
pub fn consent(
    api: SocketAddr,
    token: &str,
    (patient, password): (&str, &str),
) -> (String, String) {
    let (status, answer) = http(
        api,
        "POST",
        "/api/request_consent",
        Some(token),
        Some(&json!({"patientId": patient, "password": password})),
    )
    .expect("request_consent");
    assert_eq!(status, 200, "request_consent for {patient}: {answer}");
    (
        answer["grantTxId"].as_str().expect("grantTxId").to_string(),
        answer["otp"].as_str().expect("otp").to_string(),
    )
}

/// One record of `patient` (id, password) through the seed's flow at `api`: whether
/// request_consent answered 200 (with the grant's transaction id), and the record's
/// transaction id if add_record answered 200.
pub fn add_record_for(
    api: SocketAddr,
    token: &str,
    (patient, password): (&str, &str),
    diagnosis: &str,
) -> (Option<Option<String>>, Option<String>) {
    let Ok((200, consent)) = http(
        api,
        "POST",
        "/api/request_consent",
        Some(token),
        Some(&json!({"patientId": patient, "password": password})),
    ) else {
        return (None, None);
    };
    let grant = consent["grantTxId"].as_str().map(str::to_string);
    let otp = consent["otp"].as_str().expect("otp");
    (Some(grant), record(api, token, patient, otp, diagnosis))
}

/// `add_record` of `patient` with the in-person code `otp` by the doctor of `token` at `api`:
/// the record's transaction id if it answered 200.
pub fn record(
    api: SocketAddr,
    token: &str,
    patient: &str,
    otp: &str,
    diagnosis: &str,
) -> Option<String> {
    let (status, body) = http(
        api,
        "POST",
        "/api/add_record",
        Some(token),
        Some(&json!({
            "patientId": patient,
            "otp": otp,
            "medical_data": {"diagnosis": diagnosis, "prescription": "rest"},
        })),
    )
    .ok()?;
    if status != 200 {
        return None;
    }
    assert_eq!(body["success"], true, "add_record: {body}");
    Some(body["txId"].as_str().expect("txId").to_string())
}
