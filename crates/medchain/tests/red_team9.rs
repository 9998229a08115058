//! Red team against issue 9's HTTP layer (docs/API.md; docs/SECURITY.md, issue 9, §5): a
//! hostile client, logged in as one person or as no one, tries to act for another person
//! (another's consent, grant, prepared envelope or key), to read without a live read grant,
//! and to get a 500 from bad input. Attacks that held are `red_team_held_*`.

mod common;

use axum::http::StatusCode;
use common::{TestApp, anon};
use serde_json::{Value, json};

/// An in-person write grant from `patient` to `doctor`'s session: its id.
async fn grant_id(app: &TestApp, doctor: &common::Client, patient: &str) -> String {
    let (s, b) = app
        .post(
            doctor,
            "/api/request_consent",
            json!({"patientId": patient, "password": common::password_of(patient)}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["grantTxId"].as_str().unwrap().to_string()
}

/// The state of grant `id` as its patient sees it.
async fn grant_state(app: &TestApp, patient: &common::Client, id: &str) -> String {
    let (s, b) = app.get(patient, &format!("/api/consents/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["consent"]["state"].as_str().unwrap().to_string()
}

/// p002 (and d002) act on p001's grant, envelope and key: every attempt is refused, and p001's
/// grant, envelope and key are untouched.
#[tokio::test]
async fn red_team_held_no_acting_for_another_person() {
    let app = common::app_only().await;
    let d1 = app.login("d001").await;
    let p1 = app.login("p001").await;
    let p2 = app.login("p002").await;
    let d2 = app.login("d002").await;
    let grant = grant_id(&app, &d1, "p001").await;

    // Another patient, another doctor: the consent is not theirs to see or revoke.
    for who in [&p2, &d2] {
        let (s, b) = app.get(who, &format!("/api/consents/{grant}")).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    }
    let (s, b) = app
        .post(&p2, &format!("/api/grants/{grant}/revoke"), json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    let (s, b) = app
        .post(&d2, &format!("/api/grants/{grant}/revoke"), json!({}))
        .await;
    assert!(
        s == StatusCode::FORBIDDEN || s == StatusCode::UNAUTHORIZED,
        "{s} {b}"
    );
    let (s, b) = app
        .post(&anon(), &format!("/api/grants/{grant}/revoke"), json!({}))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");

    // p001 prepares a device-signed revocation; p002 and d002 try to complete it.
    let device = app.add_device(&p1).await;
    let (s, b) = app
        .post(
            &p1,
            &format!("/api/grants/{grant}/revoke"),
            json!({"devicePublicKey": device.public_hex()}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let prepared = b["preparedId"].as_str().unwrap().to_string();
    let bytes = hex::decode(b["signingBytes"].as_str().unwrap()).unwrap();
    use ed25519_dalek::Signer as _;
    // Even with p001's valid signature in hand (say, replayed from p001's page), another
    // session cannot submit p001's envelope.
    let signature = hex::encode(device.secret.sign(&bytes).to_bytes());
    for who in [&p2, &d2, &anon()] {
        let (s, b) = app
            .post(
                who,
                &format!("/api/sign/{prepared}"),
                json!({"signature": signature}),
            )
            .await;
        assert!(
            s == StatusCode::NOT_FOUND || s == StatusCode::UNAUTHORIZED,
            "{s} {b}"
        );
    }
    assert_eq!(grant_state(&app, &p1, &grant).await, "active");

    // p002 names p001's device key as its own, to sign its actions, or to revoke it.
    let (s, b) = app
        .post(
            &p2,
            "/api/consents/request",
            json!({"patientId": "p001", "purpose": "x", "devicePublicKey": device.public_hex()}),
        )
        .await;
    assert!(s.is_client_error(), "{s} {b}");
    let (s, b) = app
        .post(
            &p2,
            &format!("/api/keys/{}/revoke", device.public_hex()),
            json!({}),
        )
        .await;
    assert!(
        s == StatusCode::CONFLICT || s == StatusCode::NOT_FOUND,
        "{s} {b}"
    );
    let (s, b) = app
        .post(
            &p2,
            &format!("/api/keys/{}/revoke", device.public_hex()),
            json!({"devicePublicKey": device.public_hex()}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let (s, b) = app.get(&p1, "/api/identity").await;
    assert_eq!(s, StatusCode::OK);
    let keys = b["keys"].as_array().unwrap();
    assert!(
        keys.iter()
            .any(|k| k["publicKey"] == device.public_hex().as_str() && k["status"] == "live"),
        "{b}"
    );

    // p001's own session completes it.
    let (s, b) = app
        .post(
            &p1,
            &format!("/api/sign/{prepared}"),
            json!({"signature": signature}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // ... once: the envelope is gone.
    let (s, _) = app
        .post(
            &p1,
            &format!("/api/sign/{prepared}"),
            json!({"signature": signature}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A doctor reads a patient's records only under a live read grant: not with a write grant,
/// not with another doctor's read grant, not after the patient revoked it, not after it
/// expired; each refusal serves no records.
#[tokio::test]
async fn red_team_held_no_read_without_a_live_read_grant() {
    let app = common::app_only().await;
    let d1 = app.login("d001").await;
    let d2 = app.login("d002").await;
    let p1 = app.login("p001").await;
    let read = |who: common::Client| {
        let app = &app;
        async move {
            app.post(
                &who,
                "/api/doctor/patient_records",
                json!({"patientId": "p001"}),
            )
            .await
        }
    };
    let _write = grant_id(&app, &d1, "p001").await;
    let (s, b) = read(d1.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "write grant only: {b}");
    assert!(b.get("records").is_none(), "{b}");
    // A one-minute read grant for d001, attested in person.
    let (s, b) = app
        .post(
            &d1,
            "/api/request_consent",
            json!({"patientId": "p001", "password": "patient123",
                   "scope": {"read": {"durationMs": 60_000}}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let rg = b["grantTxId"].as_str().unwrap().to_string();
    assert_eq!(read(d1.clone()).await.0, StatusCode::OK);
    let (s, b) = read(d2.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "another doctor's grant: {b}");
    // Expired by the shared clock (the chain's block time too).
    app.advance(61_000).await;
    let (s, b) = read(d1.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "expired: {b}");
    // A second grant, revoked by the patient.
    let (s, b) = app
        .post(
            &d1,
            "/api/request_consent",
            json!({"patientId": "p001", "password": "patient123",
                   "scope": {"read": {"durationMs": 600_000}}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let rg2 = b["grantTxId"].as_str().unwrap().to_string();
    assert_ne!(rg, rg2);
    let (s, b) = app
        .post(&p1, &format!("/api/grants/{rg2}/revoke"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // The revocation is durable at once; the read waits for its own entry to apply, which is
    // ordered after the revocation.
    let (s, b) = read(d1.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "revoked: {b}");
}

/// Bad input from any client answers 4xx, never 500: out-of-range durations, malformed ids,
/// keys, signatures, proofs and codes, and wrong JSON types.
#[tokio::test]
async fn red_team_held_bad_input_is_a_client_error() {
    let app = common::app_only().await;
    let d1 = app.login("d001").await;
    let p1 = app.login("p001").await;
    let grant = grant_id(&app, &d1, "p001").await;
    let zeros = "0".repeat(64);
    let cases: Vec<(&common::Client, String, Value)> = vec![
        (
            &d1,
            "/api/request_consent".to_string(),
            json!({"patientId": "p001", "password": "patient123",
                   "scope": {"read": {"durationMs": u64::MAX}}}),
        ),
        (
            &d1,
            "/api/request_consent".to_string(),
            json!({"patientId": "p001", "password": "patient123",
                   "scope": {"read": {"durationMs": 0}}}),
        ),
        (
            &d1,
            "/api/request_consent".to_string(),
            json!({"patientId": "p001", "password": "patient123", "scope": {"read": {"durationMs": -1}}}),
        ),
        (
            &d1,
            "/api/consents/request".to_string(),
            json!({"patientId": "p001", "purpose": "x", "scope": {"read": {"durationMs": u64::MAX}}}),
        ),
        (
            &d1,
            "/api/consents/request".to_string(),
            json!({"patientId": "ffffffffffffffffffffffffffffffff", "purpose": "x"}),
        ),
        (
            &p1,
            format!("/api/consents/{zeros}/approve"),
            json!({"durationMs": u64::MAX}),
        ),
        (&p1, "/api/consents/zz/approve".to_string(), json!({})),
        (&p1, format!("/api/grants/{zeros}/revoke"), json!({})),
        (&p1, "/api/grants/%ff%fe/revoke".to_string(), json!({})),
        (
            &p1,
            format!("/api/sign/{zeros}"),
            json!({"signature": "00".repeat(64)}),
        ),
        (&p1, "/api/sign/x".to_string(), json!({"signature": "zz"})),
        (
            &p1,
            "/api/sign/x".to_string(),
            json!({"signature": "é".repeat(64)}),
        ),
        (
            &p1,
            "/api/keys".to_string(),
            json!({"publicKey": zeros, "pop": "11".repeat(64)}),
        ),
        (
            &p1,
            "/api/keys".to_string(),
            json!({"publicKey": "é".repeat(32), "pop": "00"}),
        ),
        (
            &p1,
            "/api/keys".to_string(),
            json!({"publicKey": zeros, "pop": "00".repeat(64), "label": "é".repeat(65)}),
        ),
        (&p1, format!("/api/keys/{zeros}/revoke"), json!({})),
        (
            &p1,
            "/api/asks/approve".to_string(),
            json!({"code": "999999"}),
        ),
        (&p1, "/api/asks/approve".to_string(), json!({"code": 12})),
        (
            &d1,
            "/api/add_record".to_string(),
            json!({"patientId": "p001", "grantId": grant, "medical_data":
                   {"diagnosis": "a", "prescription": "b"}, "devicePublicKey": zeros}),
        ),
        (
            &d1,
            "/api/add_record".to_string(),
            json!({"patientId": "p001", "grantId": zeros, "medical_data":
                   {"diagnosis": "a", "prescription": "b"}}),
        ),
        (
            &d1,
            "/api/doctor/patient_records".to_string(),
            json!({"patientId": "ffffffffffffffffffffffffffffffff"}),
        ),
    ];
    for (who, path, body) in cases {
        let (s, b) = app.post(who, &path, body.clone()).await;
        assert!(
            s.is_client_error() || s == StatusCode::ACCEPTED,
            "{path} {body}: {s} {b}"
        );
    }
    for path in [
        "/api/consents/zz".to_string(),
        format!("/api/consents/{zeros}"),
        "/api/tx/zz".to_string(),
    ] {
        let (s, b) = app.get(&p1, &path).await;
        assert!(s.is_client_error(), "{path}: {s} {b}");
    }
    // The grant those attempts touched is still usable.
    assert_eq!(grant_state(&app, &p1, &grant).await, "active");
}

/// A small-order public key (here the all-zero encoding, a point of order 4) with an all-zero
/// "proof of possession": ZIP-215 verification accepts `(R, s) = (0, 0)` under it for every
/// message, so the proof proves nothing and the node registers, custodially at the home, a
/// device key that *everyone* holds. From then on any validator (or anyone) signs as that
/// person's device: device-attested grants, records by a doctor who registered one, each
/// labelled "signed on <person>'s device". `POST /api/keys` must refuse it (400).
#[tokio::test]
async fn red_team_held_was_break_a_key_nobody_holds_is_registered() {
    let app = common::app_only().await;
    let d1 = app.login("d001").await;
    let zeros = "0".repeat(64);
    let (s, b) = app
        .post(
            &d1,
            "/api/keys",
            json!({"publicKey": zeros, "pop": "00".repeat(64), "label": "web browser"}),
        )
        .await;
    assert!(
        s.is_client_error(),
        "d001 registered a key anyone can sign with: {s} {b}"
    );
}
