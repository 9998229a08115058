//! Authorisation of every endpoint against anonymous callers, each patient and each doctor,
//! with and without grants; doctors' reads under read grants (in person, and remote approved
//! on the patient's device); revocation; the access log; blocks and transaction status.

mod common;

use axum::http::StatusCode;
use common::{Client, TestApp, anon};
use serde_json::json;

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
        "/api/identity",
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
    // Doctors, without a grant: refused by the consent rules, not by role.
    for d in [&w.d1, &w.d2] {
        let (s, b) = t.post(d, "/api/add_record", rec.clone()).await;
        assert_eq!(
            (s, b["error_type"].clone(), b["message"].clone()),
            (
                BAD,
                json!("blockchain_validation"),
                json!("Expired or invalid consent")
            ),
            "{b}"
        );
        let (s, b) = t.post(d, "/api/doctor/patient_records", read.clone()).await;
        assert_eq!((s, b["message"].clone()), (F, json!("no live read grant")));
        let (s, b) = t
            .post(d, "/api/patient_records", json!({"patientId": "p001"}))
            .await;
        assert_eq!((s, b["message"].clone()), (F, json!("no live read grant")));
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
    assert_eq!(s, OK, "requests are pending, so a block is cut");
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
    // A password read under another person's session names no clear reader: refused, even
    // with the right password; without a session, the password is checked.
    for c in [&w.p2, &w.d1] {
        let (s, b) = t
            .post(
                c,
                "/api/patient_records",
                json!({"patientId": "p001", "password": "patient123"}),
            )
            .await;
        assert_eq!(s, F, "{b}");
        assert_eq!(
            b["message"],
            "A password read must be made without another person's session: sign out first"
        );
    }
    assert_eq!(
        t.post(
            &w.anon,
            "/api/patient_records",
            json!({"patientId": "p001", "password": "patient456"})
        )
        .await
        .0,
        U
    );
    let (s, b) = t
        .post(
            &w.p1,
            "/api/patient_records",
            json!({"patientId": "p001", "password": "patient123"}),
        )
        .await;
    assert_eq!(s, OK, "under one's own session: {b}");
}

#[tokio::test]
async fn doctors_read_under_read_grants_and_the_patient_sees_each_read() {
    let t = common::start(common::manual_timing()).await;
    let w = everyone(&t).await;
    let otp = t.in_person_code(&w.d1, "p001").await;
    let (s, _) = t.post(&w.d1, "/api/add_record", json!({"patientId": "p001", "otp": otp, "medical_data": {"diagnosis": "Angina", "prescription": "Nitro"}})).await;
    assert_eq!(s, OK);
    t.post(&w.d1, "/api/validate", json!({})).await;

    // A write grant is no read grant; nobody reads without one.
    for d in [&w.d1, &w.d2] {
        let (s, b) = t
            .post(
                d,
                "/api/doctor/patient_records",
                json!({"patientId": "p001"}),
            )
            .await;
        assert_eq!((s, b["message"].clone()), (F, json!("no live read grant")));
    }

    // In person, a read grant (no code): d001 reads, d002 still does not.
    let (s, b) = t
        .post(
            &w.d1,
            "/api/request_consent",
            json!({"patientId": "p001", "password": "patient123",
                   "scope": {"read": {"durationMs": 600_000}}}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    assert!(b["otp"].is_null(), "a read grant has no code: {b}");
    assert_eq!(b["expiry"], 600);
    let in_person_grant = b["grantTxId"].as_str().unwrap().to_string();
    let (s, b) = t
        .post(
            &w.d1,
            "/api/doctor/patient_records",
            json!({"patientId": "p001"}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    assert_eq!(b["records"][0]["diagnosis"], "Angina");
    let d1_access = b["accessTxId"].as_str().unwrap().to_string();
    // The seed's path with a doctor's session reads under the grant too.
    let (s, b) = t
        .post(&w.d1, "/api/patient_records", json!({"patientId": "p001"}))
        .await;
    assert_eq!(s, OK, "{b}");
    let (s, _) = t
        .post(
            &w.d2,
            "/api/doctor/patient_records",
            json!({"patientId": "p001"}),
        )
        .await;
    assert_eq!(s, F);

    // Remote: d002 asks for a read grant; approving needs p001's device key.
    let (s, b) = t
        .post(
            &w.d2,
            "/api/consents/request",
            json!({"patientId": "p001", "purpose": "Oncology review",
                   "scope": {"read": {"durationMs": 3_600_000}}}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    assert_eq!(b["consent"]["state"], "requested");
    let request = b["consent"]["id"].as_str().unwrap().to_string();
    t.post(&w.d2, "/api/validate", json!({})).await;
    // The doctor sees their request waiting; a patient cannot ask for that list.
    let (s, b) = t.get(&w.d2, "/api/consents/requested").await;
    assert_eq!(s, OK, "{b}");
    assert_eq!(b["requests"].as_array().unwrap().len(), 1, "{b}");
    assert_eq!(b["requests"][0]["id"], request.as_str());
    assert_eq!(b["requests"][0]["patient_id"], "p001");
    assert_eq!(b["requests"][0]["purpose"], "Oncology review");
    assert_eq!(t.get(&w.p1, "/api/consents/requested").await.0, F);
    let (s, b) = t
        .post(
            &w.p1,
            &format!("/api/consents/{request}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(s, F, "{b}");
    assert_eq!(b["error_type"], "approve_on_device");
    assert_eq!(b["home"], "hospital");
    assert_eq!(
        b["message"],
        "approve on your device, or in person at hospital"
    );
    let device = t.add_device(&w.p1).await;
    let (s, b) = t
        .post_signed(
            &w.p1,
            &device,
            &format!("/api/consents/{request}/approve"),
            json!({"durationMs": 1_800_000}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    let remote_grant = b["grantTxId"].as_str().unwrap().to_string();
    let (_, b) = t.get(&w.d2, "/api/consents/requested").await;
    assert_eq!(b["requests"], json!([]), "answered: no longer waiting");
    let (s, b) = t
        .post(
            &w.d2,
            "/api/doctor/patient_records",
            json!({"patientId": "p001"}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    assert_eq!(b["records"][0]["diagnosis"], "Angina");
    let d2_access = b["accessTxId"].as_str().unwrap().to_string();

    // The patient's dashboard shows both grants, as given.
    let (_, b) = t.get(&w.p1, "/api/consents").await;
    let grants = b["consents"].as_array().unwrap();
    let find = |id: &str| grants.iter().find(|g| g["id"] == id).unwrap().clone();
    assert_eq!(find(&in_person_grant)["attested"], "in_person");
    assert_eq!(find(&remote_grant)["attested"], "device");
    assert_eq!(
        find(&remote_grant)["duration_ms"],
        1_800_000,
        "the patient's choice"
    );
    assert_eq!(find(&remote_grant)["request"], request.as_str());
    assert_eq!(find(&remote_grant)["doctor_id"], "d002");

    // Revoked (custodially, at the home): the next read is refused, no data.
    let (s, b) = t
        .post(
            &w.p1,
            &format!("/api/grants/{remote_grant}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    t.post(&w.d1, "/api/validate", json!({})).await;
    let (s, b) = t
        .post(
            &w.d2,
            "/api/doctor/patient_records",
            json!({"patientId": "p001"}),
        )
        .await;
    assert_eq!(s, F, "{b}");
    assert!(b.get("records").is_none());
    let (_, b) = t.get(&w.p1, "/api/consents").await;
    let revoked = b["consents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == remote_grant.as_str())
        .unwrap()
        .clone();
    assert_eq!(revoked["state"], "revoked");

    // The access log: each read, its reader, its grant and the hospital that served it.
    t.post(&w.p1, "/api/patient_records", json!({})).await;
    t.post(&w.d1, "/api/validate", json!({})).await;
    let (s, b) = t.get(&w.p1, "/api/access_log").await;
    assert_eq!(s, OK);
    let entries = b["entries"].as_array().unwrap();
    let entry = |id: &str| {
        entries
            .iter()
            .find(|e| e["tx_id"] == id)
            .unwrap_or_else(|| panic!("{id} in {entries:?}"))
            .clone()
    };
    let d2_read = entry(&d2_access);
    assert_eq!(d2_read["reader_id"], "d002");
    assert_eq!(d2_read["reader_role"], "doctor");
    assert_eq!(d2_read["readerName"], "Grace Hopper");
    assert_eq!(d2_read["consent_hash"], remote_grant.as_str());
    assert_eq!(d2_read["servedBy"], "hospital");
    assert_eq!(entry(&d1_access)["consent_hash"], in_person_grant.as_str());
    assert!(entries.iter().any(|e| e["reader_id"] == "p001"
        && e["reader_role"] == "patient"
        && e["consent_hash"].is_null()));
    // Newest first.
    let heights: Vec<u64> = entries
        .iter()
        .map(|e| e["height"].as_u64().unwrap())
        .collect();
    assert!(heights.windows(2).all(|w| w[0] >= w[1]), "{heights:?}");
    // p002's log has nothing of p001's.
    let (_, b) = t.get(&w.p2, "/api/access_log").await;
    assert!(b["entries"].as_array().unwrap().is_empty(), "{b}");
}

#[tokio::test]
async fn blocks_paging_status_and_tx_status() {
    let t = common::start(common::manual_timing()).await;
    let w = everyone(&t).await;
    // Each in-person grant commits its own block.
    for _ in 0..3 {
        t.in_person_code(&w.d1, "p001").await;
        let (s, b) = t.post(&w.d1, "/api/validate", json!({})).await;
        assert_eq!(
            (s, b["message"].clone()),
            (BAD, json!("No pending records to validate"))
        );
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
    // A `before` past every height pages from the newest, however large (schemathesis sent
    // 2^63, which SQLite was given as a negative height: an empty page).
    for before in [top + 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
        let (s, b) = t
            .get(&w.p1, &format!("/api/blocks?limit=1&before={before}"))
            .await;
        assert_eq!(s, OK, "{before}: {b}");
        assert_eq!(b["blocks"][0]["height"], top, "before={before}: {b}");
    }
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

/// A doctor's device key signs a record (two steps: the envelope, then its signature): the
/// chain shows it signed on the doctor's device, with the key's origin.
#[tokio::test]
async fn a_doctors_device_key_signs_a_record() {
    let t = common::start(common::manual_timing()).await;
    let w = everyone(&t).await;
    let device = t.add_device(&w.d1).await;
    let otp = t.in_person_code(&w.d1, "p001").await;
    let body = json!({"patientId": "p001", "otp": otp,
        "medical_data": {"diagnosis": "Signed on a device", "prescription": "Rest"}});
    // Another login cannot sign the doctor's envelope.
    let mut with_key = body.clone();
    with_key["devicePublicKey"] = json!(device.public_hex());
    let (s, b) = t.post(&w.d1, "/api/add_record", with_key).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["tx"]["kind"], "add_record");
    let prepared = b["preparedId"].as_str().unwrap().to_string();
    let (s, _) = t
        .post(
            &w.d2,
            &format!("/api/sign/{prepared}"),
            json!({"signature": "00".repeat(64)}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A signature by another key does not verify.
    let (s, b) = t
        .post(
            &w.d1,
            &format!("/api/sign/{prepared}"),
            json!({"signature": "00".repeat(64)}),
        )
        .await;
    assert_eq!(s, BAD, "{b}");
    // The device signs.
    let (s, b) = t.post_signed(&w.d1, &device, "/api/add_record", body).await;
    assert_eq!(s, OK, "{b}");
    assert_eq!(b["message"], "Record added to batch");
    t.post(&w.d1, "/api/validate", json!({})).await;
    let (_, b) = t.post(&w.p1, "/api/patient_records", json!({})).await;
    let record = b["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["diagnosis"] == "Signed on a device")
        .unwrap_or_else(|| panic!("{b}"))
        .clone();
    assert_eq!(record["signerKind"], "device");
    assert_eq!(record["origin"], "hospital");
    assert_eq!(record["doctor_id"], "d001");

    // A remote request signed on the device answers as the unsigned one does.
    let (s, b) = t
        .post_signed(
            &w.d1,
            &device,
            "/api/consents/request",
            json!({"patientId": "p001", "purpose": "Follow-up"}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    assert_eq!(b["consent"]["kind"], "request", "{b}");
    assert_eq!(b["consent"]["state"], "requested");
    let id = b["consent"]["id"].as_str().unwrap().to_string();
    t.post(&w.d1, "/api/validate", json!({})).await;
    let (_, b) = t.get(&w.d1, "/api/consents/requested").await;
    assert!(
        b["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == id.as_str()),
        "{b}"
    );
}
