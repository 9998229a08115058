//! A distributed network as it runs for real: four `medchain node` processes on loopback TCP,
//! records submitted through the HTTP API, validators killed with SIGKILL (one, or all at once)
//! and restarted, a store deleted and restored from peers, a tampered store refused.
//!
//! Each test writes its own network (`medchain testnet --setup-only`) on its own free ports, so
//! the tests run in parallel. Deadlines are generous: they bound progress, they do not time it.
mod common_net;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common_net::confidential::{erasure_cli, request_erasure};
use common_net::seed::{SeedClient, seed_flow};
use common_net::{Ack, Load, Net, http, output_text, wait_committed, wait_for};
use ledger::Queries;
use serde_json::json;

/// Time between two records of the load (each record also costs an Argon2id check).
const PAUSE: Duration = Duration::from_millis(150);
/// Deadline for anything the network must do while it has a quorum.
const PROGRESS: Duration = Duration::from_secs(30);

/// The primary every running node reports, and its view, once they agree (a node that has
/// just restarted may take a moment to learn the view: it must, while the others have a quorum).
fn current_primary(net: &Net) -> (usize, u64) {
    let deadline = Instant::now() + PROGRESS;
    loop {
        let reports: Vec<(String, u64)> = (0..net.nodes.len())
            .filter(|&i| net.nodes[i].running())
            .map(|i| {
                let status = net.status(i).expect("status");
                (
                    status["primary"].as_str().expect("primary").to_string(),
                    status["view"].as_u64().expect("view"),
                )
            })
            .collect();
        if reports.windows(2).all(|w| w[0] == w[1]) {
            let (name, view) = &reports[0];
            return (net.index_of(name), *view);
        }
        assert!(
            Instant::now() < deadline,
            "the nodes disagree on the primary: {reports:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// After the network is stopped: every store has the head `head`; at every node, every
/// acknowledged transaction (`txs`) is in the chain exactly once and applied, no transaction is
/// in the chain twice, and every acknowledged record (`acks`) is among the patient's records
/// exactly once; and `medchain verify` passes.
fn assert_final_state(net: &Net, head: &(u64, String), acks: &[Ack], txs: &[String]) {
    for (i, (height, hash)) in net.store_heads().into_iter().enumerate() {
        assert_eq!(
            (height, hex::encode(hash)),
            *head,
            "{}'s store ends elsewhere",
            net.nodes[i].name
        );
    }
    for i in 0..net.nodes.len() {
        let name = &net.nodes[i].name;
        let chain = net.store_transactions(i);
        let repeated: Vec<_> = chain.iter().filter(|(_, seen)| seen.len() > 1).collect();
        assert!(
            repeated.is_empty(),
            "{name}'s chain holds transactions more than once: {repeated:?}"
        );
        for id in txs {
            assert_eq!(
                chain.get(id),
                Some(&vec![None]),
                "{name}: acknowledged transaction {id} is not committed exactly once and applied"
            );
        }
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for record in net.store_records(i) {
            *counts.entry(record).or_default() += 1;
        }
        let twice: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
        assert!(
            twice.is_empty(),
            "{} committed records more than once: {twice:?}",
            net.nodes[i].name
        );
        let lost: Vec<&str> = acks
            .iter()
            .filter(|ack| !counts.contains_key(&ack.tx_id))
            .map(|ack| ack.diagnosis.as_str())
            .collect();
        assert!(
            lost.is_empty(),
            "{} lacks {} of {} acknowledged records: {lost:?}",
            net.nodes[i].name,
            lost.len(),
            acks.len()
        );
    }
    let out = net.verify();
    assert!(out.status.success(), "verify: {}", output_text(&out));
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Victim {
    Primary,
    Backup,
}

/// One round under `load`: `victim` is SIGKILLed right after a burst of records it
/// acknowledged, the other three keep committing, then the victim restarts, catches up and
/// commits records submitted through it. Returns the burst's records and transactions.
fn kill_round(net: &mut Net, load: &Load, victim: Victim, round: usize) -> (Vec<Ack>, Vec<String>) {
    let (primary, view_before) = current_primary(net);
    let victim_id = match victim {
        Victim::Primary => primary,
        Victim::Backup => (primary + 1) % net.nodes.len(),
    };
    let victim_name = net.nodes[victim_id].name.clone();
    // A burst at the victim, killed right after its third acknowledgement: what it acknowledged
    // last may exist nowhere but in its node.db.
    let burst = Load::start(
        net,
        vec![victim_id],
        &format!("burst {round}"),
        Duration::from_millis(10),
    );
    wait_for(PROGRESS, "records acknowledged by the victim", || {
        (burst.count() >= 3).then_some(())
    });
    net.kill(victim_id);
    let killed_at = Instant::now();
    let (burst_acks, burst_txs) = burst.finish();
    eprintln!(
        "round {round}: killed {victim_name} ({victim:?} of view {view_before}) after {} + {} \
         acknowledged records",
        load.count(),
        burst_acks.len()
    );

    // The other three keep committing what they acknowledge after the kill.
    let after_kill = load.wait_acks(
        PROGRESS,
        "three records acknowledged after the kill",
        3,
        killed_at,
        |_| true,
    );
    assert!(after_kill.iter().all(|ack| ack.node != victim_id));
    wait_committed(
        net,
        &after_kill,
        PROGRESS,
        "records acknowledged after the kill to commit",
    );
    eprintln!(
        "round {round}: {} records acknowledged after the kill committed within {:?}",
        after_kill.len(),
        killed_at.elapsed()
    );
    if victim == Victim::Primary {
        let (new_primary, view) = current_primary(net);
        assert!(
            view > view_before && new_primary != victim_id,
            "committing without {victim_name} (primary of view {view_before}) needs a new view; \
             the survivors report view {view}, primary {}",
            net.nodes[new_primary].name
        );
    }

    // The victim restarts, catches up and takes records again.
    net.start(victim_id);
    let restarted_at = Instant::now();
    let at_victim = load.wait_acks(
        PROGRESS,
        "two records acknowledged by the restarted node",
        2,
        restarted_at,
        |node| node == victim_id,
    );
    wait_committed(
        net,
        &at_victim,
        PROGRESS,
        "records acknowledged by the restarted node to commit",
    );
    (burst_acks, burst_txs)
}

/// Four nodes under a steady load spread over all of them; `rounds` times, a `victim` is
/// SIGKILLed and restarted (see [`kill_round`]). At the end all four hold the same chain, with
/// every acknowledged transaction exactly once, and `medchain verify` passes.
fn kill_and_restart(victim: Victim, rounds: usize) {
    let mut net = Net::setup(4);
    net.start_all();
    net.login_all();
    let load = Load::start(&net, vec![0, 1, 2, 3], &format!("{victim:?}"), PAUSE);

    // Steady state: records from every node committed.
    wait_for(PROGRESS, "eight acknowledged records", || {
        (load.count() >= 8).then_some(())
    });
    wait_committed(&net, &load.acks(), PROGRESS, "the first records to commit");

    let mut burst_acks = Vec::new();
    let mut burst_txs = Vec::new();
    for round in 1..=rounds {
        let (acks, txs) = kill_round(&mut net, &load, victim, round);
        burst_acks.extend(acks);
        burst_txs.extend(txs);
    }

    // A few seconds of load with all four up again.
    std::thread::sleep(Duration::from_secs(2));
    let (mut acks, mut txs) = load.finish();
    acks.extend(burst_acks);
    txs.extend(burst_txs);
    wait_committed(&net, &acks, PROGRESS, "every acknowledged record to commit");
    let head = net.wait_converged(PROGRESS);
    eprintln!(
        "{} records acknowledged; all four at height {}",
        acks.len(),
        head.0
    );
    net.stop_all();
    assert_final_state(&net, &head, &acks, &txs);
}

/// Twice: the second time the primary killed is the one elected without the first victim, so
/// the restarted first victim must take part in the view change (three of four are needed).
#[test]
fn primary_killed_the_others_change_view_and_it_catches_up() {
    kill_and_restart(Victim::Primary, 2);
}

#[test]
fn backup_killed_the_others_go_on_and_it_catches_up() {
    kill_and_restart(Victim::Backup, 1);
}

/// Accept, persist, then acknowledge: every validator SIGKILLed at once under load loses
/// nothing it acknowledged, and commits none of it twice after the restart.
#[test]
fn every_validator_killed_at_once_loses_nothing_acknowledged() {
    let mut net = Net::setup(4);
    net.start_all();
    net.login_all();
    let first = Load::start(&net, vec![0, 1, 2, 3], "first", Duration::from_millis(5));
    let second = Load::start(&net, vec![3, 2, 1, 0], "second", Duration::from_millis(5));
    wait_for(PROGRESS, "records acknowledged", || {
        (first.count() + second.count() >= 10).then_some(())
    });
    for i in 0..net.nodes.len() {
        net.kill(i);
    }
    let (mut acks, mut txs) = first.finish();
    let (more, more_txs) = second.finish();
    acks.extend(more);
    txs.extend(more_txs);
    eprintln!("killed all four after {} acknowledged records", acks.len());

    net.start_all();
    let after = Load::start(&net, vec![0, 1, 2, 3], "after", PAUSE);
    wait_for(PROGRESS, "records acknowledged after the restart", || {
        (after.count() >= 4).then_some(())
    });
    let (more, more_txs) = after.finish();
    acks.extend(more);
    txs.extend(more_txs);
    wait_committed(&net, &acks, PROGRESS, "every acknowledged record to commit");
    let head = net.wait_converged(PROGRESS);
    net.stop_all();
    assert_final_state(&net, &head, &acks, &txs);
}

/// Starts a network and commits `records` records submitted to every node in turn.
fn network_with_records(tag: &str, records: usize) -> (Net, Vec<Ack>, Vec<String>, (u64, String)) {
    let mut net = Net::setup(4);
    net.start_all();
    net.login_all();
    let load = Load::start(&net, vec![0, 1, 2, 3], tag, PAUSE);
    wait_for(PROGRESS, "records acknowledged", || {
        (load.count() >= records).then_some(())
    });
    let (acks, txs) = load.finish();
    wait_committed(&net, &acks, PROGRESS, "the records to commit");
    let head = net.wait_converged(PROGRESS);
    (net, acks, txs, head)
}

#[test]
fn a_deleted_store_is_restored_from_peers() {
    let (mut net, mut acks, mut txs, head) = network_with_records("restore", 8);
    // The primary: it comes back knowing nothing, not even that it was the primary.
    let (victim, _) = current_primary(&net);
    let status = net.stop(victim);
    assert!(status.success(), "stop: {status}");

    // Copy the store away, then delete it (the key and app.db stay).
    let saved = tempfile::tempdir().expect("tempdir");
    let node_dir = net.nodes[victim].dir.clone();
    let mut moved = 0;
    for entry in std::fs::read_dir(&node_dir).expect("node dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("chain.db") || name.starts_with("node.db") {
            std::fs::copy(&path, saved.path().join(&name)).expect("copy");
            std::fs::remove_file(&path).expect("delete");
            moved += 1;
        }
    }
    assert!(moved >= 2, "chain.db and node.db moved away");
    assert!(node_dir.join("node.key").exists() && node_dir.join("app.db").exists());

    net.start(victim);
    wait_for(PROGRESS, "the restored node to reach the head", || {
        let status = net.status(victim)?;
        (status["height"].as_u64()? >= head.0).then_some(())
    });
    // It may have voted before and no longer knows how (issue 8, finding 2): it recovers, and
    // sends no vote until the others are past every vote it could have cast.
    assert_eq!(
        net.status(victim).map(|s| s["recovering"].clone()),
        Some(serde_json::Value::Bool(true)),
        "a validator restored from its peers starts recovering"
    );

    // It takes part again: records submitted through it and the others commit.
    let load = Load::start(&net, vec![victim, 0, 2, 3], "restored", PAUSE);
    wait_for(PROGRESS, "records acknowledged after the restore", || {
        (load.count() >= 4).then_some(())
    });
    let (more, more_txs) = load.finish();
    wait_committed(&net, &more, PROGRESS, "records after the restore to commit");
    acks.extend(more);
    txs.extend(more_txs);
    let final_head = net.wait_converged(PROGRESS);
    net.stop_all();

    // The restored chain holds the very blocks the deleted one held.
    let copy = ledger::store::Reader::open(&saved.path().join("chain.db")).expect("copy");
    let (old_height, old_hash) = copy.head().expect("head");
    assert_eq!((old_height, hex::encode(old_hash)), head);
    let restored = ledger::store::Reader::open(&node_dir.join("chain.db")).expect("restored store");
    for height in 1..=old_height {
        assert_eq!(
            Queries::block(&restored, height)
                .expect("read")
                .map(|b| b.hash()),
            Queries::block(&copy, height)
                .expect("read")
                .map(|b| b.hash()),
            "block {height} differs from the deleted store's"
        );
    }
    assert_final_state(&net, &final_head, &acks, &txs);
}

#[test]
fn a_tampered_store_is_refused_naming_the_block() {
    let (mut net, acks, _, _) = network_with_records("tamper", 6);
    let victim = 3;
    let status = net.stop(victim);
    assert!(status.success(), "stop: {status}");

    // Flip one byte of the body of a committed record's transaction, with plain SQL.
    let chain = net.nodes[victim].dir.join("chain.db");
    let id = hex::decode(&acks[2].tx_id).expect("hex id");
    let conn = rusqlite::Connection::open(&chain).expect("open chain.db with SQLite");
    let (row, height, mut body): (i64, i64, Vec<u8>) = conn
        .query_row(
            "SELECT bd.b, t.height, bd.body FROM transactions t
             JOIN bodies bd ON bd.b = t.body_row WHERE t.id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("the record's transaction is stored");
    let offset = body.len() / 2;
    body[offset] ^= 1;
    conn.execute(
        "UPDATE bodies SET body = ?1 WHERE b = ?2",
        rusqlite::params![body, row],
    )
    .expect("update");
    drop(conn);

    net.spawn(victim);
    let (status, stderr) = net.wait_exit(victim, PROGRESS);
    assert!(!status.success(), "a tampered store was accepted: {stderr}");
    assert!(
        stderr.contains(&format!("block {height}:")) && stderr.contains("chain.db"),
        "stderr does not name block {height}: {stderr}"
    );
    net.stop_all();
    let out = net.verify();
    assert!(!out.status.success(), "verify passed a tampered store");
    assert!(
        output_text(&out).contains(&format!("block {height}")),
        "verify: {}",
        output_text(&out)
    );
}

/// The seed's contract on a testnet (`--demo`, issue 9 §7): every node computes the four demo
/// ids, validator 0 enrolls them and links them to every other validator. The seed-contract
/// client (no signing, one cookie jar) runs the whole seed flow against validator 0; p001 then
/// reads their records at another node, with that node's own cookie, and the access log names
/// the hospital that served each read. Each node listens on its own loopback host.
#[test]
fn the_seed_flow_works_against_a_testnet() {
    let mut net = Net::setup(4);
    // Blocks only when asked, so that `validate` finds the record pending as in the seed.
    net.set_setting("batch_window", "\"60s\"");
    net.start_all();
    for (i, node) in net.nodes.iter().enumerate() {
        assert_eq!(
            node.api.ip().to_string(),
            format!("127.0.0.{}", i + 1),
            "one loopback host per hospital"
        );
    }
    let login = |i: usize, role: &str, id: &str, password: &str| {
        let key = if role == "doctor" {
            "doctorId"
        } else {
            "patientId"
        };
        http(
            net.nodes[i].api,
            "POST",
            "/api/login",
            None,
            Some(&json!({"role": role, key: id, "password": password})),
        )
    };
    wait_for(PROGRESS, "the demo people on chain", || {
        matches!(login(0, "doctor", "d001", "doctor123"), Ok((200, _))).then_some(())
    });

    let mut client = SeedClient::new(net.nodes[0].api);
    let flow = seed_flow(&mut client, 4, "Testnet hypertension");
    assert_eq!(flow.records["servedBy"], "hospital");
    assert_eq!(
        client.cookies().keys().collect::<Vec<_>>(),
        vec!["medchain_hospital", "medchain_hospital_device"],
        "this hospital's session and device cookies"
    );

    // p001 at pharmacy: a linked login, the same person.
    wait_for(PROGRESS, "p001's link to pharmacy on chain", || {
        matches!(login(2, "patient", "p001", "patient123"), Ok((200, _))).then_some(())
    });
    let mut elsewhere = SeedClient::new(net.nodes[2].api);
    let (status, b) = elsewhere.login("patient", "p001", "patient123");
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["homeHere"], false);
    assert_eq!(b["home"], "hospital");
    assert_eq!(
        elsewhere.cookies().keys().collect::<Vec<_>>(),
        vec!["medchain_pharmacy", "medchain_pharmacy_device"],
        "this hospital's session and device cookies"
    );
    // Pharmacy holds no key of p001's records (a link entitles nothing): the record is
    // shown with its notice, in the seed's fields too, and never its content.
    let (status, b) = elsewhere.patient_records("p001", "patient123");
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["servedBy"], "pharmacy");
    let records = b["records"].as_array().unwrap();
    let record = records
        .iter()
        .find(|r| r["tx_id"] == flow.record["tx_id"])
        .unwrap_or_else(|| panic!("the record is listed at pharmacy: {b}"));
    assert_eq!(record["state"], "elsewhere", "{b}");
    assert_eq!(
        record["diagnosis"], "readable at your home hospital, hospital",
        "{b}"
    );
    assert_eq!(record["notice"], record["diagnosis"], "{b}");
    assert_eq!(record["prescription"], "", "{b}");
    assert!(!b.to_string().contains("Testnet hypertension"), "{b}");
    // A doctor signs in at pharmacy but acts only at home.
    let (status, b) = elsewhere.login("doctor", "d001", "doctor123");
    assert_eq!(status, 200, "{b}");
    let (status, b) = elsewhere.request_consent("p001", "patient123");
    assert_eq!(status, 403, "{b}");
    assert_eq!(b["error_type"], "wrong_hospital");
    net.stop_all();
    let out = net.verify();
    assert!(out.status.success(), "verify: {}", output_text(&out));
}

/// Erasure with the command line of the hospital that wrote the record (docs/SECURITY.md,
/// issue 10, §7.2): the patient asks through the API at their home; `medchain erasure list`
/// shows the request with the record's metadata and never its content; another hospital
/// cannot answer it; `medchain erasure answer` refuses it (the patient sees the reason), then,
/// asked again, erases it, each through the running validator's outbox; the record shows
/// erased, and the chain still verifies offline.
#[test]
fn erasure_is_answered_with_the_command_line_of_the_hospital_that_wrote_it() {
    let mut net = Net::setup(4);
    net.start_all();
    net.login_all();
    let api = net.nodes[1].api;
    let diagnosis = "Erasable lymphoma 7f3c";
    let (_, code) = common_net::consent(api, &net.tokens[1], ("pt1", common_net::LOCAL_PASSWORD));
    let record =
        common_net::record(api, &net.tokens[1], "pt1", &code, diagnosis).expect("pt1's record");
    wait_for(PROGRESS, "the record on chain", || {
        (net.tx_status(1, &record).as_deref() == Some("committed")).then_some(())
    });
    let patient = net.login(1, "patient", "pt1")["token"]
        .as_str()
        .expect("token")
        .to_string();
    let ask = |net: &Net| request_erasure(net, 1, &patient, &record);
    let erasure_cli = |i: usize, args: &[&str]| erasure_cli(&net, i, args);
    let erasures = |net: &Net| {
        let (status, answer) = http(
            net.nodes[1].api,
            "GET",
            "/api/erasures",
            Some(&patient),
            None,
        )
        .expect("erasures");
        assert_eq!(status, 200, "{answer}");
        answer["erasures"].clone()
    };

    let first = ask(&net);
    let (ok, listed) = erasure_cli(1, &["list"]);
    assert!(ok, "{listed}");
    let line = listed
        .lines()
        .find(|l| l.starts_with(&first))
        .unwrap_or_else(|| panic!("the request is listed: {listed}"));
    assert!(
        line.contains("add_record") && line.contains("Cardiology") && line.contains("Doctor 1"),
        "{line}"
    );
    assert!(!listed.contains(diagnosis), "{listed}");
    // Not another hospital's to answer.
    let (ok, refused) = erasure_cli(2, &["answer", "--request", &first, "--erase"]);
    assert!(!ok, "{refused}");
    assert!(
        refused.contains(ledger::rules::reason::ERASURE_NOT_SEALER),
        "{refused}"
    );

    let (ok, answered) = erasure_cli(
        1,
        &[
            "answer",
            "--request",
            &first,
            "--refuse",
            "retention-period",
            "--until",
            "2035-01-01",
        ],
    );
    assert!(ok && answered.contains("refused in block"), "{answered}");
    let shown = erasures(&net);
    assert_eq!(shown[0]["state"], "refused", "{shown}");
    assert_eq!(shown[0]["reason"], "retention_period", "{shown}");
    assert!(
        shown[0]["notice"]
            .as_str()
            .is_some_and(|n| n.ends_with("a legal retention period, until 2035-01-01")),
        "{shown}"
    );

    let second = ask(&net);
    let (ok, answered) = erasure_cli(1, &["answer", "--request", &second, "--erase"]);
    assert!(ok && answered.contains("erased in block"), "{answered}");
    let (ok, listed) = erasure_cli(1, &["list"]);
    assert!(
        ok && listed.contains("no erasure request waits"),
        "{listed}"
    );
    let (status, history) = http(
        api,
        "POST",
        "/api/patient_records",
        Some(&patient),
        Some(&json!({})),
    )
    .expect("history");
    assert_eq!(status, 200, "{history}");
    let shown = history["records"]
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["tx_id"] == record.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("the record is listed: {history}"));
    assert_eq!(shown["state"], "erased", "{history}");
    assert!(!history.to_string().contains(diagnosis), "{history}");

    net.stop_all();
    let out = net.verify();
    assert!(out.status.success(), "verify: {}", output_text(&out));
}
