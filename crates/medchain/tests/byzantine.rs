//! Issue 8 at the process level: real `medchain node` processes on loopback TCP, one of them a
//! Byzantine validator (`medchain node --byzantine ..`, built only with the `byzantine` feature;
//! see `crates/node/src/byzantine.rs` for what each behaviour does). It signs what it sends
//! with its own genesis key: a validator gone bad, not an outsider.
//!
//! Run with `cargo test -p medchain --features byzantine --test byzantine` (scripts/test.sh
//! does); without the feature this target is skipped.
mod common_net;

use std::time::{Duration, Instant};

use common_net::{Load, Net, output_text, wait_committed, wait_for};

/// Time between two records of a load (each record also costs an Argon2id check).
const PAUSE: Duration = Duration::from_millis(150);
/// Deadline for anything the correct validators must do while they have a quorum.
const PROGRESS: Duration = Duration::from_secs(30);
/// The Byzantine validator: the primary of view 0, so that it leads first.
const BYZANTINE: usize = 0;
/// The patient whose transactions the Byzantine primary censors (a demo account).
const CENSORED: (&str, &str) = ("p002", "patient456");

/// Makes validator `i` Byzantine with `behaviours` (the value of `--byzantine`).
fn make_byzantine(net: &mut Net, i: usize, behaviours: &str) {
    net.nodes[i].args = vec!["--byzantine".into(), behaviours.into()];
}

/// Panics unless every node of `nodes` is running and reports its validator up.
fn assert_up(net: &mut Net, nodes: &[usize]) {
    for &i in nodes {
        let name = net.nodes[i].name.clone();
        assert!(net.alive(i), "{name}'s process stopped");
        if let Some(status) = net.status(i) {
            let state = &status["validators"][i]["state"];
            assert_ne!(state, "failed", "{name}'s validator stopped: {status}");
        }
    }
}

/// Prints each node's view, primary and height, for the record of a run.
fn print_views(net: &Net, nodes: &[usize]) {
    for &i in nodes {
        if let Some(status) = net.status(i) {
            eprintln!(
                "{}: view {}, primary {}, height {}",
                net.nodes[i].name, status["view"], status["primary"], status["height"]
            );
        }
    }
}

/// Four validators, the primary of view 0 Byzantine with every behaviour (payload substitution
/// in its view-changes, oversized pre-prepares, forged status frames, censorship of one
/// patient), records of two patients submitted under load through the three correct ones: they
/// never stop, every transaction they acknowledged commits (the censored patient's too), they
/// end at the same head holding each acknowledged transaction exactly once, and `medchain
/// verify` passes on their stores.
#[test]
fn byzantine_primary_cannot_halt_fork_or_censor() {
    let mut net = Net::setup(4);
    // A small maximum batch, so that a flooded pre-prepare is 50 times too large.
    net.set_setting("max_batch", "10");
    make_byzantine(
        &mut net,
        BYZANTINE,
        &format!(
            "substitute-payloads,flood-pre-prepares,forge-status,censor-patient={}",
            CENSORED.0
        ),
    );
    net.start_all();
    net.login_all();
    let correct = [1, 2, 3];
    let open = Load::start(&net, correct.to_vec(), "open", PAUSE);
    let censored = Load::start_for(&net, vec![2, 3, 1], "censored", PAUSE, CENSORED);

    let under_load_until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < under_load_until {
        assert_up(&mut net, &correct);
        std::thread::sleep(Duration::from_millis(500));
    }
    let (mut acks, mut txs) = open.finish();
    let (censored_acks, censored_txs) = censored.finish();
    assert!(
        acks.len() >= 10 && censored_acks.len() >= 10,
        "the correct validators acknowledged only {} + {} records in 20 s",
        acks.len(),
        censored_acks.len()
    );
    acks.extend(censored_acks);
    txs.extend(censored_txs);
    wait_committed(
        &net,
        &acks,
        PROGRESS,
        "every acknowledged record, the censored patient's included, to commit",
    );
    assert_up(&mut net, &correct);
    let head = net.wait_converged_among(&correct, PROGRESS);
    print_views(&net, &correct);
    eprintln!(
        "{} records committed; the correct validators at height {}",
        acks.len(),
        head.0
    );

    net.kill(BYZANTINE);
    net.stop_all();
    let heads = net.store_heads();
    for &i in &correct {
        assert_eq!(
            (heads[i].0, hex::encode(heads[i].1)),
            head,
            "{}'s store ends elsewhere",
            net.nodes[i].name
        );
        let chain = net.store_transactions(i);
        for id in &txs {
            let seen = chain.get(id).cloned().unwrap_or_default();
            assert!(
                seen == [None],
                "{}: acknowledged transaction {id} is not committed exactly once and applied: \
                 in the chain {} times, rejected as {:?}",
                net.nodes[i].name,
                seen.len(),
                seen.iter()
                    .flatten()
                    .collect::<std::collections::BTreeSet<_>>()
            );
        }
    }
    // `medchain verify` checks every store of the directory and that they agree: the
    // Byzantine validator's store is not one whose integrity is claimed.
    let byzantine_dir = net.nodes[BYZANTINE].dir.clone();
    std::fs::rename(&byzantine_dir, net.path().join("byzantine-store")).expect("move away");
    let out = net.verify();
    assert!(out.status.success(), "verify: {}", output_text(&out));
}

/// The primary equivocates (the upper half of its backups other than the highest get an empty
/// proposal for every sequence number, with its commit, again every second) and forges status
/// frames; the highest backup voted with the honest side, then its stores are deleted and it
/// restarts knowing nothing. It must not vote with the other side: the correct stores never
/// disagree on a block. With `commits_go_on` (n = 7, f = 2: a Byzantine primary and a
/// recovering replica are within the fault model), records acknowledged after the restart
/// commit too.
fn amnesiac_replica_rejoins_without_fork(n: u16, commits_go_on: bool) {
    let mut net = Net::setup(n);
    make_byzantine(&mut net, BYZANTINE, "equivocate,forge-status");
    net.start_all();
    net.login_all();
    let n = n as usize;
    let amnesiac = n - 1;
    // The backups that get the honest proposals (see byzantine.rs: the lower half).
    let honest: Vec<usize> = (1..=(n - 2).div_ceil(2)).collect();
    let load = Load::start(&net, honest.clone(), "before", PAUSE);
    wait_for(PROGRESS, "four records acknowledged", || {
        (load.count() >= 4).then_some(())
    });
    let (before, _) = load.finish();
    wait_committed(
        &net,
        &before,
        PROGRESS,
        "the records before the amnesia to commit",
    );

    eprintln!("before the amnesia:");
    print_views(&net, &(1..n).collect::<Vec<_>>());
    // The amnesiac's stores are deleted (the key and app.db stay), then it restarts.
    let status = net.stop(amnesiac);
    assert!(status.success(), "stop: {status}");
    let node_dir = net.nodes[amnesiac].dir.clone();
    for entry in std::fs::read_dir(&node_dir).expect("node dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("chain.db") || name.starts_with("node.db") {
            std::fs::remove_file(&path).expect("delete");
        }
    }
    net.start(amnesiac);
    let restarted_at = Instant::now();
    let load = Load::start(&net, honest.clone(), "after", PAUSE);
    if commits_go_on {
        let after = wait_for(
            PROGRESS,
            "four records acknowledged after the restart",
            || {
                let acks: Vec<_> = load
                    .acks()
                    .into_iter()
                    .filter(|ack| ack.at > restarted_at)
                    .collect();
                (acks.len() >= 4).then_some(acks)
            },
        );
        wait_committed(
            &net,
            &after,
            PROGRESS,
            "records acknowledged after the amnesiac restarted to commit",
        );
    } else {
        // Only safety is owed: give the equivocation time to reach the amnesiac.
        std::thread::sleep(Duration::from_secs(10));
    }
    load.finish();
    let correct: Vec<usize> = (0..n).filter(|&i| i != BYZANTINE).collect();
    assert_up(&mut net, &correct);
    print_views(&net, &correct);

    net.kill(BYZANTINE);
    net.stop_all();
    let heads = net.assert_no_fork(&correct);
    eprintln!("no fork; the correct stores' heights: {heads:?}");
}

#[test]
fn amnesiac_replica_rejoins_without_fork_n4() {
    amnesiac_replica_rejoins_without_fork(4, false);
}

#[test]
fn amnesiac_replica_rejoins_without_fork_n7() {
    amnesiac_replica_rejoins_without_fork(7, true);
}
