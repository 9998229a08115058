//! Crash safety: a child process appends blocks in a loop and is killed with SIGKILL at a random
//! moment, 20 times. After every kill the store must open (which verifies the whole chain) and
//! every block must be whole: no block without its transactions, no transactions without their
//! block, no derived state without its transaction.
//!
//! The child is this test binary itself, re-run with `--exact crash_child` and an environment
//! variable naming the store, so the test needs no helper binary.
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ledger::testkit::TestNet;
use ledger::{OpenOptions, Queries, Store};
use rand::Rng;

const CHILD_ENV: &str = "LEDGER_CRASH_CHILD_STORE";
const TXS_PER_BLOCK: u64 = 40;

/// The child's loop: append the next block forever (until killed). Does nothing when run as an
/// ordinary test.
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let net = TestNet::new(4);
    // Unverified: the parent verifies after every kill; the child only needs the head.
    let mut store = Store::open(path.as_ref(), &net.genesis, OpenOptions::unverified())
        .expect("child opens the store");
    println!("child ready at height {}", store.head().0);
    loop {
        let (head, hash) = store.head();
        let txs = (0..TXS_PER_BLOCK)
            .map(|i| net.sample_tx(head * TXS_PER_BLOCK + i))
            .collect();
        let block = net.next_block((head, hash), txs);
        net.append(&mut store, &block).expect("child appends");
    }
}

#[test]
fn sigkill_at_random_moments_never_leaves_a_partial_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chain.db");
    let net = TestNet::new(4);
    drop(Store::open(&path, &net.genesis, OpenOptions::default()).expect("create"));
    let exe = std::env::current_exe().expect("own binary");
    let mut rng = rand::thread_rng();
    let mut heights = Vec::new();
    for round in 0..20 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        // Kill somewhere between start-up and a few dozen appends.
        let delay = Duration::from_millis(rng.gen_range(20..400));
        let started = Instant::now();
        while started.elapsed() < delay {
            if let Some(status) = child.try_wait().expect("poll child") {
                panic!("round {round}: the child exited by itself: {status}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix.
        child.wait().expect("reap");

        let store = Store::open(&path, &net.genesis, OpenOptions::default())
            .unwrap_or_else(|e| panic!("round {round}: reopening after SIGKILL: {e}"));
        let (head, _) = store.head();
        let reader = store.reader().expect("reader");
        assert_eq!(
            reader.transaction_count().expect("count"),
            head * TXS_PER_BLOCK,
            "round {round}: transactions of a partial block"
        );
        heights.push(head);
    }
    assert!(
        heights.windows(2).all(|w| w[0] <= w[1]),
        "a committed block disappeared: {heights:?}"
    );
    assert!(
        heights.last().copied().unwrap_or(0) > 0,
        "the child never appended a block: {heights:?}"
    );
    println!("heights after each kill: {heights:?}");
}
