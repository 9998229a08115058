//! `medchain testnet` as a new user runs it, to see PBFT survive a crash (issue 12): one
//! validator SIGKILLed under load is reported (name, signal, time), the other three keep
//! running and committing, and the dead one comes back, by `--restart` or by the command
//! testnet printed, and catches up.
mod common_net;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common_net::{Load, Net, medchain, wait_committed, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Time between two records of the load (each record also costs an Argon2id check).
const PAUSE: Duration = Duration::from_millis(150);
/// Deadline for anything the network must do while it has a quorum.
const PROGRESS: Duration = Duration::from_secs(30);

/// A running `medchain testnet` over the network `Net::setup` wrote, its stdout collected line
/// by line (the validators' logs go to a file beside the network).
struct Testnet {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// testnet's stderr: the validators' logs.
    log: std::path::PathBuf,
}

impl Testnet {
    fn start(net: &Net, extra: &[&str]) -> Testnet {
        let log_path = net.root.path().join("testnet.err.log");
        let log = std::fs::File::create(&log_path).expect("log");
        let mut child = medchain()
            .args(["testnet", "--nodes", "4", "--demo", "--dir"])
            .arg(net.path())
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("run medchain testnet");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout");
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("testnet| {line}");
                collected.lock().unwrap().push(line);
            }
        });
        Testnet {
            child,
            lines,
            log: log_path,
        }
    }

    /// Waits for a line that `wanted` accepts (from line `from` on); its index and text.
    fn wait_line(&self, from: usize, what: &str, wanted: impl Fn(&str) -> bool) -> (usize, String) {
        wait_for(PROGRESS, what, || {
            let lines = self.lines.lock().unwrap();
            lines
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, line)| wanted(line))
                .map(|(i, line)| (i, line.clone()))
        })
    }

    /// The pid testnet printed last for validator `name` (at start, or at a restart).
    fn pid_of(&self, name: &str) -> u32 {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .rev()
            .find_map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    [n, "pid", pid, ..] if *n == name => pid.parse().ok(),
                    [n, "restarted:", "pid", pid] if *n == name => pid.parse().ok(),
                    _ => None,
                }
            })
            .unwrap_or_else(|| panic!("testnet printed no pid for {name}"))
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Ctrl-C's equivalent (SIGTERM): testnet stops every validator and exits.
    fn stop(&mut self) -> std::process::ExitStatus {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
        wait_for(
            Duration::from_secs(40),
            "testnet to stop its validators",
            || self.child.try_wait().expect("wait"),
        )
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("----- the validators' logs (last 300 lines) -----");
            for line in &lines[lines.len().saturating_sub(300)..] {
                eprintln!("{line}");
            }
        }
        if self.running() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && self.running() {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The height node `i` reports.
fn height(net: &Net, i: usize) -> Option<u64> {
    net.status(i)?["height"].as_u64()
}

/// Starts testnet (with `extra` flags) on a fresh network under load, SIGKILLs one backup
/// validator and checks what must hold while it is dead: the death is reported with the
/// name, signal and time, testnet still runs, and the other three keep committing (their
/// height grows past records acknowledged after the kill). Returns the net, testnet, the load,
/// the victim and the index of the report's line.
fn kill_one_under_load(extra: &[&str], tag: &str) -> (Net, Testnet, Load, usize, usize) {
    let mut net = Net::setup(4);
    let mut testnet = Testnet::start(&net, extra);
    testnet.wait_line(0, "testnet to start", |l| l.starts_with("testnet running"));
    for i in 0..4 {
        net.wait_healthy(i);
    }
    net.login_all();
    let load = Load::start(&net, vec![0, 1, 2, 3], tag, PAUSE);
    wait_for(PROGRESS, "eight acknowledged records", || {
        (load.count() >= 8).then_some(())
    });
    wait_committed(&net, &load.acks(), PROGRESS, "the first records to commit");

    let primary = net.status(0).expect("status")["primary"]
        .as_str()
        .expect("primary")
        .to_string();
    let victim = (net.index_of(&primary) + 1) % 4;
    let name = net.nodes[victim].name.clone();
    let pid = testnet.pid_of(&name);
    let others: Vec<usize> = (0..4).filter(|&i| i != victim).collect();
    let heights_before: Vec<u64> = others
        .iter()
        .map(|&i| height(&net, i).expect("height"))
        .collect();
    let before = SystemTime::now();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("SIGKILL");
    let killed_at = Instant::now();

    let (report, line) = testnet.wait_line(0, "the death to be reported", |l| {
        l.starts_with(&format!("validator {name} (pid {pid}) died at "))
    });
    assert!(
        line.contains("killed by signal 9 (SIGKILL)") && line.contains("3 other validator(s)"),
        "the report names neither the signal nor the survivors: {line}"
    );
    // The time, in whole seconds: `2026-12-01T12:56:28Z`.
    let at = line
        .split(" died at ")
        .nth(1)
        .and_then(|rest| rest.get(..20))
        .expect("a time");
    let reported = humantime::parse_rfc3339(at).expect("an RFC 3339 time");
    assert!(
        reported >= before - Duration::from_secs(1) && reported <= SystemTime::now(),
        "the death is dated {at}, not when it happened"
    );
    assert!(testnet.running(), "testnet stopped with one validator dead");

    // The other three keep committing what they acknowledge after the kill.
    let after_kill = load.wait_acks(
        PROGRESS,
        "three records acknowledged after the kill",
        3,
        killed_at,
        |node| node != victim,
    );
    wait_committed(
        &net,
        &after_kill,
        PROGRESS,
        "records after the kill to commit",
    );
    for (k, &i) in others.iter().enumerate() {
        let now = height(&net, i).expect("height");
        assert!(
            now > heights_before[k],
            "{} did not commit after the kill ({} -> {now})",
            net.nodes[i].name,
            heights_before[k]
        );
    }
    assert!(testnet.running(), "testnet stopped with one validator dead");
    (net, testnet, load, victim, report)
}

/// The victim is back and caught up: its API answers, it reaches the others' head, and
/// records submitted through it commit.
fn caught_up(net: &mut Net, load: Load, victim: usize) {
    net.wait_healthy(victim);
    let back_at = Instant::now();
    let through_victim = load.wait_acks(
        PROGRESS,
        "records acknowledged by the victim",
        2,
        back_at,
        |node| node == victim,
    );
    wait_committed(
        net,
        &through_victim,
        PROGRESS,
        "the victim's records to commit",
    );
    let (acks, _) = load.finish();
    for ack in &acks {
        wait_for(PROGRESS, "every record committed at the victim", || {
            (net.tx_status(victim, &ack.tx_id).as_deref() == Some("committed")).then_some(())
        });
    }
    net.wait_converged_among(&[0, 1, 2, 3], PROGRESS);
}

#[test]
fn testnet_keeps_the_others_running_and_prints_the_command_that_restarts_the_dead_one() {
    let (mut net, mut testnet, load, victim, report) = kill_one_under_load(&[], "by hand");
    let name = net.nodes[victim].name.clone();
    let (hint, _) = testnet.wait_line(report, "the restart hint", |l| {
        l == format!("restart {name} by hand with:")
    });
    let (_, command) = testnet.wait_line(hint + 1, "the command", |_| true);
    assert!(
        command.contains(" node --config ") && command.contains("--key-dir"),
        "not a command that starts a node: {command}"
    );

    // The printed command, as a person pastes it (no argument here needs quoting).
    let words: Vec<&str> = command.split_whitespace().collect();
    let log = std::fs::File::create(net.root.path().join("by-hand.log")).expect("log");
    let mut by_hand = Command::new(words[0])
        .args(&words[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("run the printed command");
    caught_up(&mut net, load, victim);
    assert!(testnet.running());

    kill(Pid::from_raw(by_hand.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    assert!(by_hand.wait().expect("wait").success());
    assert!(testnet.stop().success(), "testnet's exit after SIGTERM");
}

#[test]
fn testnet_restart_brings_a_killed_validator_back_and_it_catches_up() {
    let (mut net, mut testnet, load, victim, report) =
        kill_one_under_load(&["--restart"], "restart");
    let name = net.nodes[victim].name.clone();
    // The killed pid, from the death report: by now testnet may have printed the new one.
    let death = testnet.lines.lock().unwrap()[report].clone();
    let old_pid: u32 = death
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in the death report: {death}"));
    let (_, line) = testnet.wait_line(report, "the restart to be announced", |l| {
        l.starts_with(&format!("restarting {name} in "))
    });
    assert!(
        line.contains("(restart 1 of at most 5 a minute)"),
        "the backoff and limit are not printed: {line}"
    );
    testnet.wait_line(report, "the restart", |l| {
        l.starts_with(&format!("{name} restarted: pid "))
    });
    assert_ne!(testnet.pid_of(&name), old_pid, "a new process");
    caught_up(&mut net, load, victim);
    assert!(testnet.stop().success(), "testnet's exit after SIGTERM");
    let lines = testnet.lines.lock().unwrap().clone();
    for n in &net.nodes {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{} stopped (exit status 0)", n.name))),
            "{} was not stopped cleanly: {lines:?}",
            n.name
        );
    }
}
