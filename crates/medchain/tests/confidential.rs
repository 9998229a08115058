//! The issue's first test on the embedded cluster (docs/SECURITY.md, "Confidential records
//! (issue 10)", §14 task E): what is added through the API is in no file under the cluster's
//! data directory and key directory: chains, node stores, application stores, key stores,
//! every WAL and shared-memory file, the log this process writes there (at debug level), and
//! a backup (a copy of each stopped validator's folder), searched byte by byte for each
//! secret and its hex, while the validators run and after they stopped. Beside every negative
//! search, a positive control: the same content is served through the API at the patient's
//! home (and to a grantee), and a text stored in clear (the department, public metadata) is
//! found by the same search.

mod common;

use std::sync::Mutex;

use axum::http::StatusCode;
use common::records::{
    Secret, aged_home_key, approve, committed_at, cut, granted, history, key_rows, keys_db,
    read_until_open, record_in, record_in_person,
};
use common::secrets::{assert_nowhere, copy_tree, files_under, search};
use common::{TestApp, eventually};
use ed25519_dalek::Signer as _;
use serde_json::{Value, json};

const OK: StatusCode = StatusCode::OK;

/// What a search must have covered, by file name.
const EXPECTED_FILES: [&str; 8] = [
    "chain.db",
    "chain.db-wal",
    "node.db",
    "keys.db",
    "app.db",
    "app.db-wal",
    "genesis.toml",
    LOG,
];

/// The log this test process writes in the cluster's directory.
const LOG: &str = "medchain.log";

/// Every event of this process (debug level) goes to `path`.
fn log_to(path: &std::path::Path) {
    let file = ledger::files::private_log_file(path).expect("a log file");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(Mutex::new(file))
        .with_ansi(false)
        .try_init();
}

/// p001 at home reads their history: every record of `secrets` is served there, in full.
async fn served_at_home(hospital: &TestApp, p1: &common::Client, secrets: &[&Secret]) -> Value {
    eventually("every record open at p001's home", || async {
        let (s, b) = history(hospital, p1, json!({})).await;
        assert_eq!(s, OK, "{b}");
        secrets.iter().all(|secret| secret.all_in(&b)).then_some(b)
    })
    .await
}

/// A unique diagnosis, prescription and note of three records (written in person; written
/// while a read grant to the clinic lives, so that its key travels there; signed on the
/// doctor's device, searched while its envelope waits unsigned: red team finding 3), and the
/// read request's purpose, are in no file of the embedded cluster, running or stopped, a
/// backup included; the home serves them all and the clinic's grantee the first two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_in_no_file_of_the_embedded_cluster_running_stopped_or_backed_up() {
    let dir = tempfile::tempdir().unwrap();
    log_to(&dir.path().join(LOG));
    let (mut hospital, clinic) = common::two_hospitals_in(dir).await;
    let device = aged_home_key(&hospital).await;
    let department = format!("Oncology {}", hex::encode(rand::random::<[u8; 4]>()));
    let doctor = hospital.new_doctor("d-onc", &department, "Ada Onc").await;
    let p1 = hospital.login("p001").await;

    let in_person = Secret::new("in person");
    let r1 = record_in_person(&hospital, &doctor, "p001", &in_person).await;

    // A read grant to the clinic's doctor, for a purpose of its own (sealed too).
    let c_doc = clinic.new_doctor("c-doc", "Neurology", "Alan Turing").await;
    let purpose = format!("Second opinion {}", hex::encode(rand::random::<[u8; 6]>()));
    let (s, b) = clinic
        .post(
            &c_doc,
            "/api/consents/request",
            json!({"patientId": "p001", "purpose": purpose,
                   "scope": {"read": {"durationMs": 3_600_000}}}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    let request = b["consent"]["id"].as_str().unwrap().to_string();
    cut(&clinic, &c_doc).await;
    eventually("the purpose open at p001's home", || async {
        let (_, b) = hospital.get(&p1, "/api/consents/pending").await;
        b["requests"]
            .as_array()?
            .iter()
            .find(|r| r["id"] == request.as_str() && r["purpose"] == purpose.as_str())
            .map(|_| ())
    })
    .await;
    let (s, b) = approve(&hospital, &p1, &device, &request).await;
    assert_eq!(s, OK, "{b}");
    committed_at(&clinic, &c_doc, b["grantTxId"].as_str().unwrap()).await;
    let read = read_until_open(&clinic, &c_doc, &[&r1]).await;
    assert!(in_person.all_in(&read), "the grantee reads it: {read}");
    let during = Secret::new("during a grant");
    let r2 = record_in_person(&hospital, &doctor, "p001", &during).await;
    let read = read_until_open(&clinic, &c_doc, &[&r1, &r2]).await;
    assert!(during.all_in(&read), "the grantee reads it: {read}");

    // Signed on the doctor's device: the envelope waits, what was typed in its answer only.
    let doctor_device = hospital.add_device(&doctor).await;
    let on_device = Secret::new("on device");
    let code = hospital.in_person_code(&doctor, "p001").await;
    let (s, prepared) = hospital
        .post(
            &doctor,
            "/api/add_record",
            json!({"patientId": "p001", "otp": code, "medical_data": on_device.medical_data(),
                   "devicePublicKey": doctor_device.public_hex()}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{prepared}");
    assert!(
        on_device.all_in(&prepared["tx"]["plain"]),
        "the answer echoes what was typed: {prepared}"
    );

    let secrets: Vec<&str> = [&in_person, &during, &on_device]
        .iter()
        .flat_map(|secret| secret.texts())
        .chain([purpose.as_str()])
        .collect();
    let roots = [hospital.dir.path(), clinic.dir.path()];
    assert_nowhere(
        "running, an envelope unsigned",
        &roots,
        &secrets,
        &department,
        &EXPECTED_FILES,
    );

    let signing_bytes = hex::decode(prepared["signingBytes"].as_str().unwrap()).unwrap();
    let signature = doctor_device.secret.sign(&signing_bytes);
    let (s, b) = hospital
        .post(
            &doctor,
            &format!("/api/sign/{}", prepared["preparedId"].as_str().unwrap()),
            json!({"signature": hex::encode(signature.to_bytes())}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    cut(&hospital, &doctor).await;
    served_at_home(&hospital, &p1, &[&in_person, &during, &on_device]).await;
    assert_nowhere(
        "running, every record signed and read",
        &roots,
        &secrets,
        &department,
        &EXPECTED_FILES,
    );

    // Stopped; and a backup: a copy of each stopped validator's folder, beside them.
    let mut cluster = hospital.cluster.take().expect("the cluster");
    let data_dir = cluster.data_dir().to_path_buf();
    tokio::task::spawn_blocking(move || cluster.shutdown())
        .await
        .unwrap();
    let backup = hospital.dir.path().join("backup");
    for name in node::EMBEDDED_VALIDATORS {
        copy_tree(&data_dir.join(name), &backup.join(name));
    }
    let files = assert_nowhere(
        "stopped, with a backup",
        &roots,
        &secrets,
        &department,
        &EXPECTED_FILES,
    );
    assert!(
        files.iter().filter(|f| f.starts_with(&backup)).count() >= 4 * 3,
        "the backup was searched: {files:?}"
    );
    let log = files_under(&[hospital.dir.path()])
        .into_iter()
        .filter(|file| file.ends_with(LOG))
        .collect::<Vec<_>>();
    assert_eq!(
        search(&log, &["key service ready"]).len(),
        1,
        "the log searched is this cluster's"
    );
}

/// A home that lost its key store (docs/SECURITY.md, "Confidential records", §5.2, §5.6): for
/// a record its own doctor wrote, every party is itself, so it asks every other validator in
/// turn, and gets the key back from a grantee that holds it (the pharmacy, whose doctor reads
/// under a live read grant). Before the fix it asked the next validator (the clinic, which is
/// not entitled) and nobody else, forever, and showed the record waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_that_lost_its_key_store_gets_its_records_back_from_a_grantee() {
    let (mut hospital, clinic) = common::two_hospitals().await;
    let device = aged_home_key(&hospital).await;
    let d1 = hospital.login("d001").await;
    let p1 = hospital.login("p001").await;
    let secret = Secret::new("lost store");
    let record = record_in_person(&hospital, &d1, "p001", &secret).await;
    let pharmacy = hospital.hospital(2).await;
    let reader = pharmacy
        .new_doctor("ph-doc", "Pharmacology", "Paul Ehrlich")
        .await;
    let hour = json!({"read": {"durationMs": 3_600_000}});
    granted(&pharmacy, &reader, hour, (&hospital, &p1, &device)).await;
    read_until_open(&pharmacy, &reader, &[&record]).await;
    drop((pharmacy, clinic));

    // Every validator stops; the hospital's key store is lost; they start again.
    let clock = hospital.clock.clone();
    let mut cluster = hospital.cluster.take().expect("the cluster");
    let keys_db = keys_db(&hospital, "hospital");
    tokio::task::spawn_blocking(move || cluster.shutdown())
        .await
        .unwrap();
    let TestApp { dir, .. } = hospital;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", keys_db.display()));
    }
    let hospital = common::open_in(dir, common::manual_timing(), clock).await;
    assert_eq!(
        key_rows(&hospital, "pharmacy", &[&record]),
        1,
        "the grantee holds it"
    );
    let p1 = hospital.login("p001").await;
    let b = eventually("the record open at its home again", || async {
        let (s, b) = history(&hospital, &p1, json!({})).await;
        // Each read is an access entry, 20 at once then one every 3 s: a slow machine polls
        // past that while the key travels.
        if s == StatusCode::TOO_MANY_REQUESTS {
            return None;
        }
        assert_eq!(s, OK, "{b}");
        (record_in(&b, &record)["state"] == "open").then_some(b)
    })
    .await;
    assert!(secret.all_in(&b), "{b}");
    assert_eq!(
        key_rows(&hospital, "hospital", &[&record]),
        1,
        "wanted again at start, pulled again"
    );
}
