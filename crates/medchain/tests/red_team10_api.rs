//! Red team of issue 10 through the API (docs/SECURITY.md, "Confidential records"), as a
//! hostile client with sessions of each kind, on one embedded cluster whose validators serve
//! their own APIs: hospital (validator 0, home of the demo people) and clinic (1). `held_*`
//! tests pin a defence that held; `#[ignore = "BREAK N: .."]` tests fail on the code as it is
//! (run them with `--ignored`).

mod common;

use axum::http::StatusCode;
use common::records::{
    Secret, aged_home_key, committed_at, granted, key_rows, keys_db, read_until_open,
    record_in_person,
};
use serde_json::json;

const OK: StatusCode = StatusCode::OK;

/// BREAK 1. §5.3 (red team finding 11): "the application keeps at most 8 unsigned prepared
/// seals per session". No such bound exists: every `add_record` with a `devicePublicKey` seals
/// a body and stores its key durably (a pending `keys.db` row and an fsync, served before any
/// peer) and an envelope in `app.db`, for as long as the session likes. One doctor's session
/// asks 12 times under one in-person code; every ask is accepted, and the home's key store
/// keeps 12 pending keys for transactions that will never exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_1_a_session_prepares_unbounded_sealed_envelopes() {
    let (hospital, _clinic) = common::two_hospitals().await;
    let d1 = hospital.login("d001").await;
    let device = hospital.add_device(&d1).await;
    let code = hospital.in_person_code(&d1, "p001").await;
    let pending_before = pending_keys(&hospital);
    let mut accepted = 0;
    for i in 0..12 {
        let secret = Secret::new(&format!("prepared {i}"));
        let (s, b) = hospital
            .post(
                &d1,
                "/api/add_record",
                json!({"patientId": "p001", "otp": code, "medical_data": secret.medical_data(),
                       "devicePublicKey": device.public_hex()}),
            )
            .await;
        if s == StatusCode::ACCEPTED {
            assert_eq!(b["signatureNeeded"], true, "{b}");
            accepted += 1;
        }
    }
    let pending = pending_keys(&hospital) - pending_before;
    assert!(
        accepted <= 8 && pending <= 8,
        "one session holds {accepted} unsigned sealed envelopes, {pending} pending keys"
    );
}

/// Keys sealed at the hospital and not on chain yet: its key rows whose transactions its
/// chain does not hold (`keys.db` keeps no flag for them, docs/SECURITY.md §12.1 item 4).
fn pending_keys(hospital: &common::TestApp) -> i64 {
    use ledger::Queries;
    let keys = keys_db(hospital, "hospital");
    let conn =
        rusqlite::Connection::open_with_flags(&keys, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let chain = ledger::Reader::open(&keys.with_file_name("chain.db")).unwrap();
    let mut stmt = conn.prepare("SELECT tx FROM data_keys").unwrap();
    let txs = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap();
    let mut pending = 0;
    for tx in txs {
        let tx: ledger::TxId = tx.unwrap().try_into().unwrap();
        if chain.transaction(&tx).unwrap().is_none() {
            pending += 1;
        }
    }
    pending
}

/// The clinic holds p001's keys because one of its doctors has a live read grant: a colleague
/// at the clinic without a grant, another patient's session there, and p001's own password at
/// the clinic from under the colleague's session are each refused or served only what the
/// rules allow. The `Access` rule, per person, stands between the clinic's keys and its other
/// users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_4_a_grantees_colleagues_read_nothing_of_its_keys() {
    let (hospital, clinic) = common::two_hospitals().await;
    let device = aged_home_key(&hospital).await;
    let d1 = hospital.login("d001").await;
    let p1_home = hospital.login("p001").await;
    let c_doc = clinic.new_doctor("c-doc", "Neurology", "Alan Turing").await;
    let colleague = clinic
        .new_doctor("c-two", "Radiology", "Grace Hopper")
        .await;
    let secret = Secret::new("colleague");
    let record = record_in_person(&hospital, &d1, "p001", &secret).await;
    committed_at(&clinic, &c_doc, &record).await;
    let home = (&hospital, &p1_home, &device);
    granted(
        &clinic,
        &c_doc,
        json!({"read": {"durationMs": 3_600_000}}),
        home,
    )
    .await;
    read_until_open(&clinic, &c_doc, &[&record]).await;
    assert_eq!(
        key_rows(&hospital, "clinic", &[&record]),
        1,
        "the clinic holds it"
    );

    for path in ["/api/doctor/patient_records", "/api/patient_records"] {
        let (s, b) = clinic
            .post(&colleague, path, json!({"patientId": "p001"}))
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {b}");
        assert!(!secret.leaked_in(&b), "{path}: {b}");
    }
    // The colleague's session with p001's id in the patient's own form.
    let (s, b) = clinic
        .post(
            &colleague,
            "/api/patient_records",
            json!({"patientId": "p001", "password": "patient123"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(!secret.leaked_in(&b), "{b}");
    // Another patient linked at the clinic reads only their own history.
    let p2 = clinic.login("p002").await;
    let (s, b) = clinic
        .post(&p2, "/api/patient_records", json!({"patientId": "p001"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let (s, b) = clinic.post(&p2, "/api/patient_records", json!({})).await;
    assert_eq!(s, OK, "{b}");
    assert!(!secret.leaked_in(&b), "{b}");
}
