//! Records through the API for the tests of confidential records and erasure (docs/SECURITY.md,
//! "Confidential records (issue 10)"): unique record contents, records and requests cut into
//! blocks, and what a validator's `keys.db` holds.

use std::path::PathBuf;

use axum::http::StatusCode;
use ledger::tx::Decision;
use medchain::app::flows::erasure::queue_answer;
use serde_json::{Value, json};

pub use super::secrets::Secret;
use super::{Client, Device, TestApp, anon, eventually};

const OK: StatusCode = StatusCode::OK;

/// Hospital and clinic of one cluster (`super::two_hospitals`) and the insurer's API, each
/// serving the demo logins (p001 linked at clinic and insurance).
pub async fn three_hospitals() -> (TestApp, TestApp, TestApp) {
    let (hospital, clinic) = super::two_hospitals().await;
    let insurer = hospital.hospital(3).await;
    eventually("p001's link to the insurer on chain", || async {
        let (s, _) = insurer
            .post(
                &anon(),
                "/api/login",
                json!({"role": "patient", "patientId": "p001", "password": "patient123"}),
            )
            .await;
        (s == OK).then_some(())
    })
    .await;
    (hospital, clinic, insurer)
}

/// Cuts a block at `at` now (as a doctor there).
pub async fn cut(at: &TestApp, doctor: &Client) {
    let (s, b) = at.post(doctor, "/api/validate", json!({})).await;
    assert!(
        s == OK || b["message"] == "No pending records to validate",
        "{s} {b}"
    );
}

/// A record by `doctor` (at `at`, the patient's home and the doctor's) for `patient`, under an
/// in-person code, cut into a block: its transaction id.
pub async fn record_in_person(
    at: &TestApp,
    doctor: &Client,
    patient: &str,
    secret: &Secret,
) -> String {
    let code = at.in_person_code(doctor, patient).await;
    let (s, b) = at
        .post(
            doctor,
            "/api/add_record",
            json!({"patientId": patient, "otp": code, "medical_data": secret.medical_data()}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    let tx = b["txId"].as_str().unwrap().to_string();
    cut(at, doctor).await;
    tx
}

/// Waits until transaction `tx` is committed at `at`'s validator.
pub async fn committed_at(at: &TestApp, who: &Client, tx: &str) {
    eventually(
        &format!("{tx} committed at {}", at.cookie_name()),
        || async {
            let (_, b) = at.get(who, &format!("/api/tx/{tx}")).await;
            (b["status"] == "committed").then_some(())
        },
    )
    .await;
}

/// A remote request of `doctor` (at `at`, their home) to p001, cut into a block there and
/// listed at p001's home with its purpose open: its id.
pub async fn request(
    at: &TestApp,
    doctor: &Client,
    scope: Value,
    home: &TestApp,
    p1_home: &Client,
) -> String {
    let (s, b) = at
        .post(
            doctor,
            "/api/consents/request",
            json!({"patientId": "p001", "purpose": "Second opinion", "scope": scope}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    let id = b["consent"]["id"].as_str().unwrap().to_string();
    cut(at, doctor).await;
    eventually(
        "the request listed at the home, its purpose open",
        || async {
            let (_, b) = home.get(p1_home, "/api/consents/pending").await;
            b["requests"]
                .as_array()?
                .iter()
                .find(|r| r["id"] == id.as_str() && r["purpose_opens"] == true)
                .map(|r| assert_eq!(r["purpose"], "Second opinion", "{b}"))
        },
    )
    .await;
    id
}

/// p001's history as `who` reads it at `at` (`/api/patient_records`, `body`).
pub async fn history(at: &TestApp, who: &Client, body: Value) -> (StatusCode, Value) {
    at.post(who, "/api/patient_records", body).await
}

/// A doctor's read of p001's history at `at`, repeated until every record opens (the keys
/// travel after the grant commits): the records.
pub async fn read_until_open(at: &TestApp, doctor: &Client, records: &[&str]) -> Value {
    eventually("every record open at the grantee", || async {
        let (s, b) = doctor_read(at, doctor).await;
        assert_eq!(s, OK, "{b}");
        let all = b["records"].as_array().unwrap();
        let open = records.iter().all(|id| {
            all.iter()
                .any(|r| r["tx_id"] == *id && r["state"] == "open")
        });
        open.then_some(b)
    })
    .await
}

/// `validator`'s `keys.db` in the cluster `owner` runs.
pub fn keys_db(owner: &TestApp, validator: &str) -> PathBuf {
    owner
        .dir
        .path()
        .join("chain")
        .join(validator)
        .join("keys.db")
}

/// Rows of `validator`'s key store (held keys: wanted ones are kept in memory, docs/SECURITY.md
/// §12.1) for the transactions `txs`.
pub fn key_rows(owner: &TestApp, validator: &str, txs: &[&str]) -> usize {
    let conn = rusqlite::Connection::open_with_flags(
        keys_db(owner, validator),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open keys.db");
    let mut rows = 0;
    for tx in txs {
        let id = hex::decode(tx).unwrap();
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM data_keys WHERE tx = ?1", [&id], |r| {
                r.get(0)
            })
            .expect("count");
        rows += n as usize;
    }
    rows
}

/// The person id (hex) of the signed-in person of `who` at `at`.
pub async fn person_of(at: &TestApp, who: &Client) -> [u8; 16] {
    let (s, b) = at.get(who, "/api/identity").await;
    assert_eq!(s, OK, "{b}");
    hex::decode(b["personId"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

/// `doctor`'s read of p001's history at `at` (`/api/doctor/patient_records`).
pub async fn doctor_read(at: &TestApp, doctor: &Client) -> (StatusCode, Value) {
    at.post(
        doctor,
        "/api/doctor/patient_records",
        json!({"patientId": "p001"}),
    )
    .await
}

/// p001's approval at their home (`home`, session `p1`) of request `id`, signed on `device`.
pub async fn approve(
    home: &TestApp,
    p1: &Client,
    device: &Device,
    id: &str,
) -> (StatusCode, Value) {
    home.post_signed(
        p1,
        device,
        &format!("/api/consents/{id}/approve"),
        json!({}),
    )
    .await
}

/// A grant of p001's to `doctor` of `at`: requested there with `scope`, approved at the home on
/// `device` and committed at `at`. Its id.
pub async fn granted(
    at: &TestApp,
    doctor: &Client,
    scope: Value,
    (home, p1, device): (&TestApp, &Client, &Device),
) -> String {
    let id = request(at, doctor, scope, home, p1).await;
    let (s, b) = approve(home, p1, device, &id).await;
    assert_eq!(s, OK, "{b}");
    let grant = b["grantTxId"].as_str().unwrap().to_string();
    committed_at(at, doctor, &grant).await;
    grant
}

/// A device key of p001's made at their home's page and older than the wait of a key added on
/// a password (docs/SECURITY.md §4.2): the shared clock is moved past the wait, so sessions
/// made before have ended.
pub async fn aged_home_key(home: &TestApp) -> Device {
    let device = home.add_device(&home.login("p001").await).await;
    let wait_ms = home.state.flows.node().genesis().recovery_wait_ms();
    home.advance(wait_ms + 60_000).await;
    device
}

/// `doctor` of `at` is refused p001's history, sees nothing of `secret`, and `at`'s validator
/// (`validator` of the cluster `owner` runs) holds no key of `records`.
pub async fn nothing_served(
    at: &TestApp,
    doctor: &Client,
    secret: &Secret,
    (owner, validator, records): (&TestApp, &str, &[&str]),
) {
    let (s, b) = doctor_read(at, doctor).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(!secret.leaked_in(&b), "{b}");
    assert_eq!(key_rows(owner, validator, records), 0);
}

/// Record `tx` as history answer `b` lists it.
pub fn record_in(b: &Value, tx: &str) -> Value {
    b["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tx_id"] == tx)
        .cloned()
        .unwrap_or_else(|| panic!("record {tx} is listed: {b}"))
}

/// The insurer's cast (`three_hospitals`): the hospital, the insurer, the insurer's doctor
/// `i-doc`, and p001's record written at the hospital (its id, its unique content).
pub async fn insurer_and_a_record(tag: &str) -> (TestApp, TestApp, Client, String, Secret) {
    let (hospital, _clinic, insurer) = three_hospitals().await;
    let d1 = hospital.login("d001").await;
    let secret = Secret::new(tag);
    let record = record_in_person(&hospital, &d1, "p001", &secret).await;
    let i_doc = insurer.new_doctor("i-doc", "Claims", "Ida Claims").await;
    (hospital, insurer, i_doc, record, secret)
}

/// `at`'s hospital answers erasure request `request` (hex) with `decision`, as `medchain
/// erasure answer` does: queued in its outbox, signed by its validator key, submitted by the
/// running validator (the test app runs its outbox).
pub fn answer_erasure(at: &TestApp, request: &str, decision: Decision) {
    let flows = &at.state.flows;
    let node = flows.node().clone();
    let request: [u8; 32] = hex::decode(request).unwrap().try_into().unwrap();
    let chain = ledger::Reader::open(
        &at.dir
            .path()
            .join("chain")
            .join(node.name())
            .join("chain.db"),
    )
    .unwrap();
    let sign = |header, body| node.sign_as_validator(header, body);
    queue_answer(
        flows.app(),
        &chain,
        flows.here(),
        &sign,
        request,
        decision,
        flows.now_ms(),
    )
    .unwrap();
}
