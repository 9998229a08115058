//! Passwords, consent codes, tokens and medical data never reach the log, even at TRACE.

mod common;

use axum::http::StatusCode;
use common::anon;
use serde_json::json;

#[tokio::test]
async fn secrets_and_medical_data_are_not_logged() {
    let buffer = common::LogBuffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // Global, so that the validators' threads and the blocking pool are captured too.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let t = common::start(common::manual_timing()).await;
    let d1 = t.login("d001").await;
    let (_, b) = t
        .post(
            &d1,
            "/api/request_consent",
            json!({"patientId": "p001", "password": "patient123"}),
        )
        .await;
    let otp = b["otp"].as_str().unwrap().to_string();
    let diagnosis = "Very-Secret-Diagnosis-4711";
    let (s, _) = t
        .post(&d1, "/api/add_record", json!({"patientId": "p001", "otp": otp, "medical_data": {"diagnosis": diagnosis, "prescription": "Hidden-Prescription"}}))
        .await;
    assert_eq!(s, StatusCode::OK);
    t.post(&d1, "/api/validate", json!({})).await;
    t.post(
        &anon(),
        "/api/patient_records",
        json!({"patientId": "p001", "password": "patient123"}),
    )
    .await;
    t.post(
        &anon(),
        "/api/login",
        json!({"role": "patient", "patientId": "p002", "password": "wrong-password-x"}),
    )
    .await;

    let log = buffer.text();
    assert!(
        log.contains("/api/add_record"),
        "requests are logged: {log}"
    );
    let token = d1.bearer.unwrap();
    for secret in [
        "patient123",
        "doctor123",
        "wrong-password-x",
        &otp,
        diagnosis,
        "Hidden-Prescription",
        &token,
    ] {
        assert!(!log.contains(secret), "{secret} leaked into the log");
    }
}
