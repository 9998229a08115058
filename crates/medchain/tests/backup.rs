//! `medchain backup` and `medchain restore` against a running network (issue 12): a
//! consistent copy of a validator's stores taken under load, in one private file without the
//! incarnation marker or any secret in clear; the validator, killed later and restored from
//! that old copy (its keys.db too, with `--replace-keys`), recovers: it re-applies the erasure
//! committed since before it serves the record, catches up from its peers, and sends no commit
//! for any sequence number it may have voted on before (none in any block's certificate until
//! the others are past the bound of its recovery), then takes part again.
mod common_net;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common_net::{
    Ack, LOCAL_PASSWORD, Load, Net, consent, http, medchain, output_text, wait_committed, wait_for,
};
use ledger::Queries;

/// Time between two records of the steady load (each record also costs an Argon2id check).
const PAUSE: Duration = Duration::from_millis(150);
/// Deadline for anything the network must do while it has a quorum.
const PROGRESS: Duration = Duration::from_secs(30);
/// pbft's log window L (twice the checkpoint interval of 64): a recovering validator votes
/// only above the others' certified head, as it answered its query, plus L.
const LOG_WINDOW: u64 = 128;
/// The record erased after the backup was taken.
const DIAGNOSIS: &str = "Restorable sarcoma 41c2";

fn backup(net: &Net, i: usize, to: &Path) -> Output {
    medchain()
        .arg("backup")
        .arg("--config")
        .arg(&net.nodes[i].config)
        .arg("--to")
        .arg(to)
        .output()
        .expect("run medchain backup")
}

fn restore(net: &Net, i: usize, from: &Path, extra: &[&str]) -> Output {
    medchain()
        .arg("restore")
        .arg("--from")
        .arg(from)
        .arg("--config")
        .arg(&net.nodes[i].config)
        .args(extra)
        .output()
        .expect("run medchain restore")
}

/// The entries of a tar archive, by path.
fn entries(archive: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).expect("open"));
    let mut out = BTreeMap::new();
    for entry in tar.entries().expect("a tar archive") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read");
        out.insert(path, bytes);
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The status field `field` of node `i`.
fn status_of(net: &Net, i: usize, field: &str) -> Option<serde_json::Value> {
    net.status(i).map(|status| status[field].clone())
}

#[test]
fn a_validator_restored_from_an_old_backup_reapplies_the_erasure_and_votes_nowhere_it_may_have_voted()
 {
    let mut net = Net::setup(4);
    net.start_all();
    net.login_all();
    let load = Load::start(&net, vec![0, 1, 2, 3], "steady", PAUSE);
    wait_for(PROGRESS, "eight acknowledged records", || {
        (load.count() >= 8).then_some(())
    });
    wait_committed(&net, &load.acks(), PROGRESS, "the first records to commit");
    // The clinic: home of the doctor and the patient of a record whose key only it holds.
    let victim = 1;
    let name = net.nodes[victim].name.clone();
    let patient = net.login(victim, "patient", "pt1")["token"]
        .as_str()
        .expect("token")
        .to_string();
    let (_, code) = consent(
        net.nodes[victim].api,
        &net.tokens[victim],
        ("pt1", LOCAL_PASSWORD),
    );
    let record = common_net::record(
        net.nodes[victim].api,
        &net.tokens[victim],
        "pt1",
        &code,
        DIAGNOSIS,
    )
    .expect("the record to erase later");
    wait_for(PROGRESS, "the record to open at its home", || {
        let shown = history(&net, victim, &patient)?;
        (shown["state"] == "open" && shown.to_string().contains(DIAGNOSIS)).then_some(())
    });

    // The backup, taken while the validator runs under load.
    let file = net.root.path().join(format!("{name}.tar"));
    let out = backup(&net, victim, &file);
    assert!(out.status.success(), "backup: {}", output_text(&out));
    assert_eq!(
        std::fs::metadata(&file)
            .expect("the backup")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let archive = entries(&file);
    let mut expected: Vec<String> = ["chain.db", "node.db", "keys.db", "app.db"]
        .iter()
        .chain(&["node.key", "node.toml"])
        .map(|f| format!("{name}/{f}"))
        .collect();
    expected.extend([
        "medchain-backup.toml".to_string(),
        "genesis.toml".to_string(),
        format!("{name}/"),
    ]);
    expected.sort();
    assert_eq!(archive.keys().cloned().collect::<Vec<_>>(), expected);
    // Nothing secret in clear: not the operator key, not the validator's signing key.
    let key_file = ledger::master::dev_key_path(&net.key_dir(), &name);
    let operator_key_hex = std::fs::read_to_string(&key_file).expect("key file");
    let signing_key = ledger::master::read_node_key(
        &net.nodes[victim].dir.join("node.key"),
        &net.operator_key(victim),
        &name,
    )
    .expect("node.key");
    let all: Vec<u8> = std::fs::read(&file).expect("read");
    assert!(!contains(&all, DIAGNOSIS.as_bytes()), "a record in clear");
    assert_eq!(
        key_rows(
            &archive[&format!("{name}/keys.db")],
            &net.root.path().join("keys.copy"),
            &record
        ),
        1,
        "the backup holds the record's key (sealed)"
    );
    assert!(!contains(&all, operator_key_hex.trim().as_bytes()));
    assert!(!contains(&all, &signing_key.to_bytes()));
    assert!(!contains(
        &all,
        hex::encode(signing_key.to_bytes()).as_bytes()
    ));
    let backup_height: u64 = output_text(&out)
        .split("chain at height ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|h| h.parse().ok())
        .expect("the backup names its chain's height");

    // A backup never replaces a file; a restore never touches a running validator's stores.
    let again = backup(&net, victim, &file);
    assert!(!again.status.success(), "a backup replaced a file");
    let refused = restore(&net, victim, &file, &[]);
    assert!(
        !refused.status.success() && output_text(&refused).contains("stop the validator first"),
        "a restore under a running validator: {}",
        output_text(&refused)
    );

    // The validator goes on voting after its backup, then dies.
    let past_backup = wait_for(PROGRESS, "eight records after the backup", || {
        let acks = load.acks();
        (acks.len() >= 24).then_some(acks)
    });
    wait_committed(&net, &past_backup, PROGRESS, "records after the backup");
    // The record is erased after the backup, which still holds its key.
    let (status, asked) = http(
        net.nodes[victim].api,
        "POST",
        &format!("/api/records/{record}/erasure"),
        Some(&patient),
        Some(&serde_json::json!({})),
    )
    .expect("request the erasure");
    assert_eq!(status, 200, "{asked}");
    let request = asked["txId"].as_str().expect("txId");
    let out = medchain()
        .args([
            "erasure",
            "answer",
            "--erase",
            "--request",
            request,
            "--config",
        ])
        .arg(&net.nodes[victim].config)
        .arg("--key-dir")
        .arg(net.key_dir())
        .output()
        .expect("run medchain erasure answer");
    assert!(
        out.status.success() && output_text(&out).contains("erased in block"),
        "{}",
        output_text(&out)
    );
    let marker = net.nodes[victim].dir.join(node::MARKER_FILE);
    let marker_before = std::fs::read(&marker).expect("marker");
    net.kill(victim);

    // Its keys.db, newer than the backup's, would be kept: `--replace-keys` puts the old one
    // back, the erased record's key with it.
    let restored = restore(&net, victim, &file, &["--replace-keys"]);
    assert!(
        restored.status.success()
            && output_text(&restored).contains("restoring the backup's keys.db: --replace-keys"),
        "restore: {}",
        output_text(&restored)
    );
    let old_keys = std::fs::read(net.nodes[victim].dir.join("keys.db")).expect("keys.db");
    assert_eq!(
        key_rows(&old_keys, &net.root.path().join("keys.restored"), &record),
        1,
        "the backup's keys.db, holding the erased record's key, is in place"
    );
    assert_eq!(
        std::fs::read(&marker).expect("marker"),
        marker_before,
        "a restore never writes the incarnation marker"
    );
    let others: Vec<usize> = (0..4).filter(|&i| i != victim).collect();
    let head_before = others
        .iter()
        .map(|&i| {
            status_of(&net, i, "height")
                .and_then(|h| h.as_u64())
                .expect("height")
        })
        .max()
        .expect("others");
    assert!(
        head_before > backup_height,
        "the backup is not older than the chain"
    );

    // Restarted from the old copy, it recovers: it catches up while it sends no vote.
    net.start(victim);
    assert_eq!(
        status_of(&net, victim, "recovering"),
        Some(serde_json::Value::Bool(true)),
        "a validator restored from a backup starts recovering"
    );
    // Whatever it answers from its first moment, the erased record is never served again:
    // it applies the erasure (its old keys.db still holds the key) before it opens anything.
    let mut answers = 0;
    wait_for(
        PROGRESS * 2,
        "the restored validator to show the record erased",
        || {
            let answer = http(
                net.nodes[victim].api,
                "POST",
                "/api/patient_records",
                Some(&patient),
                Some(&serde_json::json!({})),
            );
            std::thread::sleep(Duration::from_millis(300));
            let (status, body) = answer.ok()?;
            answers += 1;
            assert!(
                !body.to_string().contains(DIAGNOSIS),
                "{name}, restored, served the erased record ({status}): {body}"
            );
            let shown = body["records"]
                .as_array()?
                .iter()
                .find(|r| r["tx_id"] == record.as_str())?
                .clone();
            (shown["state"] == "erased").then_some(())
        },
    );
    eprintln!("{name} answered {answers} reads before and once the erasure applied");
    wait_for(PROGRESS, "the restored validator to catch up", || {
        let height = status_of(&net, victim, "height")?.as_u64()?;
        (height >= head_before).then_some(())
    });
    // The others move past its recovery bound (a faster load); then it takes part again.
    let fast = Load::start(&net, others.clone(), "fast", Duration::from_millis(5));
    wait_for(
        Duration::from_secs(120),
        "the restored validator to finish its recovery",
        || (status_of(&net, victim, "recovering")? == serde_json::Value::Bool(false)).then_some(()),
    );
    let done_at = status_of(&net, victim, "height")
        .and_then(|h| h.as_u64())
        .expect("height");
    assert!(
        done_at >= head_before + LOG_WINDOW,
        "{name} left recovery at height {done_at}, within L of the head it came back to \
         ({head_before})"
    );
    let after = Load::start(&net, vec![victim], "after", PAUSE);
    wait_for(PROGRESS, "records through the restored validator", || {
        (after.count() >= 3).then_some(())
    });
    let mut acks: Vec<Ack> = Vec::new();
    let mut txs: Vec<String> = Vec::new();
    for load in [load, fast, after] {
        let (a, t) = load.finish();
        acks.extend(a);
        txs.extend(t);
    }
    wait_committed(&net, &acks, PROGRESS, "every acknowledged record");
    let head = net.wait_converged(PROGRESS);
    net.stop_all();

    // No store holds a commit of the victim for a height from its return up to L past it;
    // past its recovery, its commits are there again.
    let victim_id = victim as u32;
    let mut voted_again = false;
    for node in &net.nodes {
        let store = ledger::store::Reader::open(&node.dir.join("chain.db")).expect("store");
        for height in head_before + 1..=head.0 {
            let certificate = store
                .certificate(height)
                .expect("read")
                .expect("a certificate");
            let signed = certificate.signatures.iter().any(|(v, _)| *v == victim_id);
            assert!(
                !(signed && height <= head_before + LOG_WINDOW),
                "{}'s block {height} carries a commit of {name}, which was recovering",
                node.name
            );
            voted_again |= signed;
        }
    }
    assert!(voted_again, "{name} never voted again after its recovery");

    // Every acknowledged transaction is in every store exactly once, applied; verify passes.
    for i in 0..4 {
        let chain = net.store_transactions(i);
        for id in &txs {
            assert_eq!(
                chain.get(id),
                Some(&vec![None]),
                "{}: {id} is not committed exactly once",
                net.nodes[i].name
            );
        }
    }
    let out = net.verify();
    assert!(out.status.success(), "verify: {}", output_text(&out));
    let restored_keys = std::fs::read(net.nodes[victim].dir.join("keys.db")).expect("keys.db");
    assert_eq!(
        key_rows(&restored_keys, &net.root.path().join("keys.after"), &record),
        0,
        "{name} still holds the erased record's key"
    );
}

/// The rows of a copy of keys.db (`bytes`, written to `path`) that hold transaction `tx`'s key.
fn key_rows(bytes: &[u8], path: &Path, tx: &str) -> i64 {
    std::fs::write(path, bytes).expect("write the copy");
    rusqlite::Connection::open(path)
        .expect("keys.db")
        .query_row(
            "SELECT count(*) FROM data_keys WHERE tx = ?1",
            [hex::decode(tx).expect("hex")],
            |r| r.get(0),
        )
        .expect("query keys.db")
}

/// The record's entry in `token`'s patient's history at node `i`, if it answers.
fn history(net: &Net, i: usize, token: &str) -> Option<serde_json::Value> {
    let (status, body) = http(
        net.nodes[i].api,
        "POST",
        "/api/patient_records",
        Some(token),
        Some(&serde_json::json!({})),
    )
    .ok()?;
    (status == 200).then_some(())?;
    body["records"]
        .as_array()?
        .iter()
        .find(|r| r.to_string().contains(DIAGNOSIS))
        .cloned()
}
