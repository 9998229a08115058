//! The embedded deployment (`medchain serve`, four validators in one process) SIGKILLed at
//! random moments during HTTP load, 20 times (issue 12): after each restart, every consent
//! grant and record the API acknowledged before is committed, and is in the chain exactly once.
mod common_net;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common_net::{http, medchain, output_text, wait_for};
use rand::{Rng, SeedableRng};
use serde_json::json;

const KILLS: usize = 20;
/// Deadline for a start, and for what was acknowledged to commit after it.
const PROGRESS: Duration = Duration::from_secs(30);
/// The demo's doctors and their patients (all at the hospital, the one API `serve` has).
const PAIRS: [(&str, &str, &str, &str); 2] = [
    ("d001", "doctor123", "p001", "patient123"),
    ("d002", "doctor456", "p002", "patient456"),
];

/// `medchain serve --demo` on `dir`, its output appended to `log`.
fn serve(dir: &Path, addr: SocketAddr, log: &Path) -> Child {
    common_net::serve_process(dir, addr, log, &["--view-change-timeout", "1s"])
}

/// A doctor's bearer token (sessions live in app.db: they outlive a crash, but a login that
/// was answered just before the kill may not be durable, so each start logs in again).
fn login(addr: SocketAddr, doctor: &str, password: &str) -> String {
    let body = json!({"role": "doctor", "doctorId": doctor, "password": password});
    wait_for(PROGRESS, &format!("{doctor}'s login"), || {
        match http(addr, "POST", "/api/login", None, Some(&body)) {
            Ok((200, answer)) => answer["token"].as_str().map(str::to_string),
            _ => None,
        }
    })
}

/// Every acknowledged transaction id, with what it was (for messages).
type Acks = Arc<Mutex<BTreeMap<String, String>>>;

/// One load thread: `doctor` records for `patient` through the seed's flow until `stop`.
fn load(
    addr: SocketAddr,
    token: String,
    (patient, password): (&'static str, &'static str),
    start: usize,
    stop: Arc<AtomicBool>,
    acks: Acks,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            std::thread::sleep(Duration::from_millis(20));
            let consent = json!({"patientId": patient, "password": password});
            let Ok((200, answer)) = http(
                addr,
                "POST",
                "/api/request_consent",
                Some(&token),
                Some(&consent),
            ) else {
                continue;
            };
            if let Some(grant) = answer["grantTxId"].as_str() {
                let what = format!("grant {start}.{n} of {patient}");
                acks.lock().unwrap().insert(grant.to_string(), what);
            }
            let Some(otp) = answer["otp"].as_str() else {
                continue;
            };
            let record = json!({
                "patientId": patient,
                "otp": otp,
                "medical_data": {"diagnosis": format!("start {start} record {n}"), "prescription": "rest"},
            });
            if let Ok((200, answer)) =
                http(addr, "POST", "/api/add_record", Some(&token), Some(&record))
                && let Some(id) = answer["txId"].as_str()
            {
                let what = format!("record {start}.{n} of {patient}");
                acks.lock().unwrap().insert(id.to_string(), what);
            }
        }
    })
}

/// Each validator's chain: every entry id (hex) with how often it is there and whether its
/// first occurrence applied. Read while `serve` runs (SQLite readers do not block it).
fn chain_entries(store: &Path) -> BTreeMap<String, (usize, bool)> {
    let conn =
        rusqlite::Connection::open_with_flags(store, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open chain.db");
    let mut statement = conn
        .prepare("SELECT id, rejected FROM transactions ORDER BY tx")
        .expect("prepare");
    let mut out: BTreeMap<String, (usize, bool)> = BTreeMap::new();
    let rows = statement
        .query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Option<String>>(1)?))
        })
        .expect("query");
    for row in rows {
        let (id, rejected) = row.expect("row");
        let entry = out
            .entry(hex::encode(id))
            .or_insert((0, rejected.is_none()));
        entry.0 += 1;
    }
    out
}

/// Every acknowledged transaction is committed (the API says so), and in `store` exactly once,
/// applied.
fn assert_acknowledged_once(addr: SocketAddr, token: &str, store: &Path, acks: &Acks, when: &str) {
    let acks = acks.lock().unwrap().clone();
    let mut left: Vec<&String> = acks.keys().collect();
    wait_for(
        PROGRESS,
        &format!("the acknowledged to commit {when}"),
        || {
            left.retain(|id| {
                let answer = http(addr, "GET", &format!("/api/tx/{id}"), Some(token), None);
                !matches!(answer, Ok((200, body)) if body["status"] == "committed")
            });
            left.is_empty().then_some(())
        },
    );
    let chain = chain_entries(store);
    for (id, what) in &acks {
        assert_eq!(
            chain.get(id),
            Some(&(1, true)),
            "{when}: {what} ({id}), acknowledged, is not in {} exactly once and applied",
            store.display()
        );
    }
}

fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("addr")
}

#[test]
fn serve_killed_twenty_times_under_load_keeps_every_acknowledged_record_once() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("data");
    let log = root.path().join("serve.log");
    let addr = free_addr();
    let store: PathBuf = dir.join("hospital").join("chain.db");
    let seed: u64 = rand::random();
    eprintln!("kill schedule seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let acks: Acks = Arc::new(Mutex::new(BTreeMap::new()));
    let began = Instant::now();
    let print_log = |child: Option<&mut Child>| {
        if let Some(child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for line in &lines[lines.len().saturating_sub(200)..] {
            eprintln!("{line}");
        }
    };

    for start in 0..=KILLS {
        let mut child = serve(&dir, addr, &log);
        wait_for(PROGRESS, "serve to answer", || {
            if let Ok(Some(status)) = child.try_wait() {
                print_log(None);
                panic!("serve exited at start {start}: {status}");
            }
            matches!(http(addr, "GET", "/healthz", None, None), Ok((200, _))).then_some(())
        });
        let tokens: Vec<String> = PAIRS
            .iter()
            .map(|(doctor, password, _, _)| login(addr, doctor, password))
            .collect();
        // What was acknowledged before the kill is there, once.
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert_acknowledged_once(
                addr,
                &tokens[0],
                &store,
                &acks,
                &format!("after start {start}"),
            );
        }));
        if let Err(panic) = checked {
            print_log(Some(&mut child));
            std::panic::resume_unwind(panic);
        }
        if start == KILLS {
            // Stopped cleanly at last: every replica holds them, and verifies.
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .expect("SIGTERM");
            assert!(child.wait().expect("wait").success(), "serve's exit");
            break;
        }

        // Load, then SIGKILL at a random moment of it.
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = PAIRS
            .iter()
            .zip(&tokens)
            .map(|((_, _, patient, password), token)| {
                load(
                    addr,
                    token.clone(),
                    (patient, password),
                    start,
                    stop.clone(),
                    acks.clone(),
                )
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.gen_range(300..2_000)));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        stop.store(true, Ordering::SeqCst);
        for thread in threads {
            thread.join().expect("load thread");
        }
        eprintln!(
            "[{:>5.1} s] kill {}: {} transactions acknowledged so far",
            began.elapsed().as_secs_f64(),
            start + 1,
            acks.lock().unwrap().len()
        );
    }

    let acks = acks.lock().unwrap().clone();
    assert!(
        acks.len() >= 2 * KILLS,
        "too little load to mean anything: {} acknowledged",
        acks.len()
    );
    for name in ["hospital", "clinic", "pharmacy", "insurance"] {
        let chain = chain_entries(&dir.join(name).join("chain.db"));
        for (id, what) in &acks {
            assert_eq!(chain.get(id), Some(&(1, true)), "{name}: {what} ({id})");
        }
        let twice: Vec<_> = chain.iter().filter(|(_, (n, _))| *n > 1).collect();
        assert!(twice.is_empty(), "{name} holds entries twice: {twice:?}");
    }
    let out = medchain()
        .arg("verify")
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .expect("verify");
    assert!(out.status.success(), "verify: {}", output_text(&out));
}
