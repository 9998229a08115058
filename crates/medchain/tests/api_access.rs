//! Authorisation of every endpoint against anonymous callers, each patient and each doctor,
//! with and without consent; doctor reads; the access log; blocks and transaction status.

mod common;

use axum::http::StatusCode;
use common::{Client, TestApp, anon};
use serde_json::{Value, json};

const U: StatusCode = StatusCode::UNAUTHORIZED;
const F: StatusCode = StatusCode::FORBIDDEN;
const OK: StatusCode = StatusCode::OK;
const BAD: StatusCode = StatusCode::BAD_REQUEST;

struct Who {
    anon: Client,
    p1: Client,
    p2: Client,
    d1: Client,
    d2: Client,
}

async fn everyone(t: &TestApp) -> Who {
    Who {
        anon: anon(),
        p1: t.login("p001").await,
        p2: t.login("p002").await,
        d1: t.login("d001").await,
        d2: t.login("d002").await,
    }
}

async fn code_for(t: &TestApp, doctor: &Client, patient: &str) -> String {
    let (s, b) = t
        .post(
            doctor,
            "/api/request_consent",
            json!({"patientId": patient, "password": common::password_of(patient)}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    b["otp"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn read_only_endpoints_need_a_session_of_any_role() {
    let t = common::start(common::manual_timing()).await;
    let w = everyone(&t).await;
    let tx = "00".repeat(32);
    for path in [
        "/api/metrics",
        "/api/status",
        "/api/blocks",
        "/api/validate_chain",
        "/api/me",
        "/api/consents",
        &format!("/api/tx/{tx}"),
    ] {
        assert_eq!(t.get(&w.anon, path).await.0, U, "{path} anonymous");
        for c in [&w.p1, &w.p2, &w.d1, &w.d2] {
            let (s, b) = t.get(c, path).await;
            assert_eq!(s, OK, "{path}: {b}");
        }
    }
    // Public: health, the UI, login, logout.
    assert_eq!(t.get(&w.anon, "/healthz").await.0, OK);
    assert_eq!(
        t.raw(common::request("GET", "/", None, None, None))
            .await
            .status(),
        OK
    );
    assert_eq!(t.post(&w.anon, "/api/logout", json!({})).await.0, OK);
    // A garbage or forged token is no session.
    assert_eq!(t.get(&Client::bearer("forged"), "/api/me").await.0, U);
    assert_eq!(t.get(&Client::cookie("forged"), "/api/status").await.0, U);
}

#[tokio::test]
async fn doctor_only_endpoints() {
    let t = common::start(common::manual_timing()).await;
    let w = everyone(&t).await;
    let consent = json!({"patientId": "p001", "password": "patient123"});
    let remote = json!({"patientId": "p001", "purpose": "x"});
    let rec = json!({"patientId": "p001", "otp": "123456", "medical_data": {"diagnosis": "x", "prescription": "y"}});
    let read = json!({"patientId": "p001", "otp": "123456"});
    for (path, body) in [
        ("/api/request_consent", &consent),
        ("/api/consents/request", &remote),
        ("/api/add_record", &rec),
        ("/api/validate", &json!({})),
        ("/api/doctor/patient_records", &read),
    ] {
        assert_eq!(
            t.post(&w.anon, path, body.clone()).await.0,
            U,
            "{path} anonymous"
        );
        assert_eq!(
            t.post(&w.p1, path, body.clone()).await.0,
            F,
            "{path} patient p001"
        );
        assert_eq!(
            t.post(&w.p2, path, body.clone()).await.0,
            F,
            "{path} patient p002"
        );
    }
    // Doctors, without consent: refused by the consent rules, not by role.
    for d in [&w.d1, &w.d2] {
        let (s, b) = t.post(d, "/api/add_record", rec.clone()).await;
        assert_eq!(
            (s, b["error_type"].clone()),
            (BAD, json!("blockchain_validation"))
        );
        let (s, b) = t.post(d, "/api/doctor/patient_records", read.clone()).await;
        assert_eq!(
            (s, b["error_type"].clone()),
            (BAD, json!("blockchain_validation"))
        );
        let (s, b) = t
            .post(d, "/api/patient_records", json!({"patientId": "p001"}))
            .await;
        assert_eq!(s, F, "{b}");
        assert_eq!(
            t.post(d, "/api/request_consent", consent.clone()).await.0,
            OK
        );
        assert_eq!(
            t.post(d, "/api/consents/request", remote.clone()).await.0,
            OK
        );
    }
    let (s, _) = t.post(&w.d1, "/api/validate", json!({})).await;
    assert_eq!(s, OK, "grants are pending, so a block is cut");
}

#[tokio::test]
async fn patient_only_endpoints_and_own_records_only() {
    let t = common::start(common::manual_timing()).await;
    let w = everyone(&t).await;
    for path in ["/api/consents/pending", "/api/access_log"] {
        assert_eq!(t.get(&w.anon, path).await.0, U, "{path}");
        assert_eq!(t.get(&w.d1, path).await.0, F, "{path}");
        assert_eq!(t.get(&w.d2, path).await.0, F, "{path}");
        assert_eq!(t.get(&w.p1, path).await.0, OK, "{path}");
        assert_eq!(t.get(&w.p2, path).await.0, OK, "{path}");
    }
    let (_, b) = t
        .post(
            &w.d1,
            "/api/consents/request",
            json!({"patientId": "p001", "purpose": "x"}),
        )
        .await;
    let id = b["consent"]["id"].as_str().unwrap().to_string();
    for action in ["approve", "deny"] {
        let path = format!("/api/consents/{id}/{action}");
        assert_eq!(t.post(&w.anon, &path, json!({})).await.0, U);
        assert_eq!(t.post(&w.d1, &path, json!({})).await.0, F);
        assert_eq!(t.post(&w.d2, &path, json!({})).await.0, F);
        assert_eq!(
            t.post(&w.p2, &path, json!({})).await.0,
            StatusCode::NOT_FOUND
        );
    }
    // Own records by session; never another patient's.
    assert_eq!(t.post(&w.p1, "/api/patient_records", json!({})).await.0, OK);
    assert_eq!(
        t.post(&w.p1, "/api/patient_records", json!({"patientId": "p001"}))
            .await
            .0,
        OK
    );
    assert_eq!(
        t.post(&w.p1, "/api/patient_records", json!({"patientId": "p002"}))
            .await
            .0,
        F
    );
    assert_eq!(
        t.post(&w.p2, "/api/patient_records", json!({"patientId": "p001"}))
            .await
            .0,
        F
    );
    assert_eq!(
        t.post(&w.anon, "/api/patient_records", json!({})).await.0,
        U
    );
    // The password path checks the password of the patient named, whatever the session.
    assert_eq!(
        t.post(
            &w.p2,
            "/api/patient_records",
            json!({"patientId": "p001", "password": "patient456"})
        )
        .await
        .0,
        U
    );
    assert_eq!(
        t.post(
            &w.d1,
            "/api/patient_records",
            json!({"patientId": "p001", "password": "doctor123"})
        )
        .await
        .0,
        U
    );
}

#[tokio::test]
async fn doctor_reads_under_consent_and_the_patient_sees_it() {
    let t = common::start(common::manual_timing()).await;
    let w = everyone(&t).await;
    let otp = code_for(&t, &w.d1, "p001").await;
    let (s, _) = t.post(&w.d1, "/api/add_record", json!({"patientId": "p001", "otp": otp, "medical_data": {"diagnosis": "Angina", "prescription": "Nitro"}})).await;
    assert_eq!(s, OK);
    t.post(&w.d1, "/api/validate", json!({})).await;

    // d002 with a code that p001 gave d001: refused.
    let code_d1 = code_for(&t, &w.d1, "p001").await;
    let (s, _) = t
        .post(
            &w.d2,
            "/api/doctor/patient_records",
            json!({"patientId": "p001", "otp": code_d1}),
        )
        .await;
    assert_eq!(s, BAD);
    // d001 with a code for p002: no p001 records.
    let code_p2 = code_for(&t, &w.d1, "p002").await;
    let (s, _) = t
        .post(
            &w.d1,
            "/api/doctor/patient_records",
            json!({"patientId": "p001", "otp": code_p2}),
        )
        .await;
    assert_eq!(s, BAD);

    // Remote consent: d002 asks, p001 approves, d002 reads.
    let (_, b) = t
        .post(
            &w.d2,
            "/api/consents/request",
            json!({"patientId": "p001", "purpose": "Oncology review"}),
        )
        .await;
    let id = b["consent"]["id"].as_str().unwrap().to_string();
    let (_, b) = t
        .post(&w.p1, &format!("/api/consents/{id}/approve"), json!({}))
        .await;
    let remote_code = b["otp"].as_str().unwrap().to_string();
    let remote_hash = b["consentHash"].as_str().unwrap().to_string();
    let (s, b) = t
        .post(
            &w.d2,
            "/api/doctor/patient_records",
            json!({"patientId": "p001", "otp": remote_code}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    assert_eq!(b["records"][0]["diagnosis"], "Angina");
    // One read per code.
    let (_, b) = t
        .post(
            &w.d2,
            "/api/doctor/patient_records",
            json!({"patientId": "p001", "otp": remote_code}),
        )
        .await;
    assert_eq!(b["message"], "Consent already used");
    // The seed path with a doctor's session and a code reads too.
    let (s, b) = t
        .post(
            &w.d1,
            "/api/patient_records",
            json!({"patientId": "p001", "otp": code_d1}),
        )
        .await;
    assert_eq!(s, OK, "{b}");

    t.post(&w.d1, "/api/validate", json!({})).await;
    let (s, b) = t.get(&w.p1, "/api/access_log").await;
    assert_eq!(s, OK);
    let entries = b["entries"].as_array().unwrap();
    let d2_read: Vec<&Value> = entries
        .iter()
        .filter(|e| e["reader_id"] == "d002")
        .collect();
    assert_eq!(d2_read.len(), 1, "{entries:?}");
    assert_eq!(d2_read[0]["reader_role"], "doctor");
    assert_eq!(d2_read[0]["consent_hash"], remote_hash.as_str());
    assert!(d2_read[0]["height"].as_u64().unwrap() >= 1);
    assert!(entries.iter().any(|e| e["reader_id"] == "d001"));
    // p002's log has nothing of p001's.
    let (_, b) = t.get(&w.p2, "/api/access_log").await;
    assert!(
        b["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["reader_id"] != "d002")
    );
    // The patient's own reads are logged too.
    t.post(&w.p1, "/api/patient_records", json!({})).await;
    t.post(&w.d1, "/api/validate", json!({})).await;
    let (_, b) = t.get(&w.p1, "/api/access_log").await;
    assert!(
        b["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reader_id"] == "p001"
                && e["reader_role"] == "patient"
                && e["consent_hash"].is_null())
    );
}

#[tokio::test]
async fn blocks_paging_status_and_tx_status() {
    let t = common::start(common::manual_timing()).await;
    let w = everyone(&t).await;
    for _ in 0..3 {
        code_for(&t, &w.d1, "p001").await;
        let (s, _) = t.post(&w.d1, "/api/validate", json!({})).await;
        assert_eq!(s, OK);
    }
    let (_, b) = t.get(&w.p1, "/api/blocks?limit=2").await;
    let blocks = b["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 2);
    let top = blocks[0]["height"].as_u64().unwrap();
    assert!(top >= 3);
    assert_eq!(blocks[1]["height"].as_u64().unwrap(), top - 1);
    assert!(blocks[0]["signers"].as_array().unwrap().len() >= 3);
    assert!(blocks[0]["tx_count"].as_u64().unwrap() >= 1);
    assert_eq!(blocks[0]["hash"].as_str().unwrap().len(), 64);
    let next = b["next_before"].as_u64().unwrap();
    let (_, b) = t
        .get(&w.p1, &format!("/api/blocks?limit=100&before={next}"))
        .await;
    let rest = b["blocks"].as_array().unwrap();
    assert_eq!(rest.last().unwrap()["height"], 0);
    assert!(b["next_before"].is_null());
    for bad in [
        "/api/blocks?limit=0",
        "/api/blocks?limit=1000",
        "/api/blocks?before=x",
    ] {
        let (s, b) = t.get(&w.p1, bad).await;
        assert_eq!(s, BAD, "{bad}: {b}");
    }
    let (s, _) = t.get(&w.p1, "/api/tx/nothex").await;
    assert_eq!(s, BAD);
    let (_, b) = t.get(&w.p1, &format!("/api/tx/{}", "ab".repeat(32))).await;
    assert_eq!(b["status"], "unknown");

    let (_, s) = t.get(&w.d1, "/api/status").await;
    let vs = s["validators"].as_array().unwrap();
    assert_eq!(vs.len(), 4);
    let names: Vec<&str> = vs.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["hospital", "clinic", "pharmacy", "insurance"]);
    assert_eq!(vs.iter().filter(|v| v["primary"] == true).count(), 1);
    assert!(vs.iter().all(|v| v["state"] == "up"), "{s}");
    assert!(s["metrics"]["tx_count"].as_u64().unwrap() >= 3);
    assert!(s["height"].as_u64().unwrap() >= 3);
    assert_eq!(s["batch_window_ms"], 600_000);
}
