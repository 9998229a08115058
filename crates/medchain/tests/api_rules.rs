//! The status rules the issue adds to the seed's contract (docs/SECURITY.md, issue 9, §7), on
//! two hospitals of one embedded cluster (each its own `app.db` and custody): a doctor acts only
//! at their home (403 `wrong_hospital`), in-person consent only at the patient's home (403
//! `consent_elsewhere`), a login not on chain yet (503) or not linked here (403 `not_linked`),
//! a remote approval without a device key (403 `approve_on_device`), caps of pending requests
//! (429), a rule the chain enforces (409), and `request_consent`'s code only once the grant is
//! applied (else 503).

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{TestApp, anon};
use medchain::app::{NewAccount, PersonOf, Role};
use serde_json::{Value, json};
use zeroize::Zeroizing;

const F: StatusCode = StatusCode::FORBIDDEN;
const OK: StatusCode = StatusCode::OK;

async fn login_as(at: &TestApp, role: &str, id: &str, password: &str) -> (StatusCode, Value) {
    let key = if role == "doctor" {
        "doctorId"
    } else {
        "patientId"
    };
    at.post(
        &anon(),
        "/api/login",
        json!({"role": role, key: id, "password": password}),
    )
    .await
}

#[tokio::test]
async fn a_doctor_signs_in_anywhere_but_acts_only_through_their_home() {
    let (hospital, clinic) = common::two_hospitals().await;
    let (s, b) = login_as(&clinic, "doctor", "d001", "doctor123").await;
    assert_eq!(s, OK, "{b}");
    assert_eq!(b["homeHere"], false);
    assert_eq!(b["home"], "hospital");
    assert_eq!(b["personId"].as_str().unwrap().len(), 32);
    let d1 = common::Client::bearer(b["token"].as_str().unwrap());
    // The explorer and status pages work.
    assert_eq!(clinic.get(&d1, "/api/status").await.0, OK);
    for (path, body) in [
        (
            "/api/request_consent",
            json!({"patientId": "p001", "password": "patient123"}),
        ),
        (
            "/api/consents/request",
            json!({"patientId": "p001", "purpose": "x"}),
        ),
        (
            "/api/add_record",
            json!({"patientId": "p001", "otp": "123456",
                   "medical_data": {"diagnosis": "x", "prescription": "y"}}),
        ),
        ("/api/doctor/patient_records", json!({"patientId": "p001"})),
    ] {
        let (s, b) = clinic.post(&d1, path, body).await;
        assert_eq!(s, F, "{path}: {b}");
        assert_eq!(b["error_type"], "wrong_hospital", "{path}: {b}");
        assert_eq!(b["home"], "hospital");
        assert_eq!(b["message"], "d001 works through hospital's node");
    }
    // At home: all of it.
    let (s, b) = login_as(&hospital, "doctor", "d001", "doctor123").await;
    assert_eq!((s, b["homeHere"].clone()), (OK, json!(true)));
}

#[tokio::test]
async fn a_patient_reads_where_linked_and_the_log_names_the_hospital_that_served() {
    let (hospital, clinic) = common::two_hospitals().await;
    let (s, b) = login_as(&clinic, "patient", "p001", "patient123").await;
    assert_eq!(s, OK, "{b}");
    assert_eq!(b["homeHere"], false);
    assert_eq!(b["home"], "hospital");
    let (s, b) = clinic
        .post(
            &anon(),
            "/api/patient_records",
            json!({"patientId": "p001", "password": "patient123"}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    assert_eq!(b["servedBy"], "clinic");
    let access = b["accessTxId"].as_str().unwrap().to_string();
    // Applied at the clinic before the records were answered (docs/SECURITY.md, issue 10,
    // §6.1): nothing is left for a block to carry.
    let d1_at_clinic = clinic.session("doctor", "d001", "doctor123").await;
    let (s, b) = clinic
        .get(&d1_at_clinic, &format!("/api/tx/{access}"))
        .await;
    assert_eq!((s, b["status"].clone()), (OK, json!("committed")), "{b}");
    let p1 = hospital.login("p001").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let entry = loop {
        let (_, b) = hospital.get(&p1, "/api/access_log").await;
        if let Some(entry) = b["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["tx_id"] == access.as_str())
        {
            break entry.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the read at clinic is in the hospital's log: {b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(entry["servedBy"], "clinic");
    assert_eq!(entry["reader_id"], "p001");
    // The identity shows the link.
    let (_, b) = hospital.get(&p1, "/api/identity").await;
    assert_eq!(b["links"], json!(["clinic", "pharmacy", "insurance"]));
    assert_eq!(b["keys"][0]["kind"], "custodial");
    assert_eq!(b["keys"][0]["origin"], "hospital");
}

#[tokio::test]
async fn in_person_consent_is_given_at_the_patients_home_and_elsewhere_a_remote_request() {
    let (hospital, clinic) = common::two_hospitals().await;
    clinic
        .enroll("c-doc", Some(("Neurology", "Alan Turing")))
        .await;
    let doc = clinic.session("doctor", "c-doc", "long-password").await;
    let (s, b) = clinic
        .post(
            &doc,
            "/api/request_consent",
            json!({"patientId": "p001", "password": "patient123"}),
        )
        .await;
    assert_eq!(s, F, "{b}");
    assert_eq!(b["error_type"], "consent_elsewhere");
    assert_eq!(b["field"], "patientId");
    assert_eq!(b["home"], "hospital");
    assert_eq!(
        b["message"],
        "p001's in-person consent is given at hospital or approved on their device: send a \
         remote request"
    );
    assert!(b.get("otp").is_none());
    // The remote request: the patient sees it at home, grouped under the asking hospital.
    let (s, b) = clinic
        .post(
            &doc,
            "/api/consents/request",
            json!({"patientId": "p001", "purpose": "Headaches"}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    clinic.post(&doc, "/api/validate", json!({})).await;
    let p1 = hospital.login("p001").await;
    // Once the block is applied at the hospital's validator too, and the hospital holds the
    // key of its sealed purpose (pulled from the clinic, which sealed it).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let b = loop {
        let (_, b) = hospital.get(&p1, "/api/consents/pending").await;
        if b["groups"][0]["requests"][0]["purpose_opens"] == true {
            break b;
        }
        assert!(std::time::Instant::now() < deadline, "{b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(b["groups"][0]["hospital"], "clinic", "{b}");
    let request = &b["groups"][0]["requests"][0];
    assert_eq!(request["doctor_name"], "Alan Turing");
    assert_eq!(request["department"], "Neurology");
    assert_eq!(request["purpose"], "Headaches");
    // No login of that doctor at the hospital: named by person id.
    assert_eq!(request["doctor_id"].as_str().unwrap().len(), 32);
}

#[tokio::test]
async fn a_login_not_on_chain_yet_is_503_and_one_not_linked_here_is_403() {
    let (hospital, clinic) = common::two_hospitals().await;
    // Mapped to a person whose enrollment was never submitted.
    let new = NewAccount {
        id: "ghost".into(),
        role: Role::Patient,
        department: None,
        name: None,
        password: Zeroizing::new("long-password".into()),
    };
    clinic
        .state
        .app
        .create_account_as(
            new,
            PersonOf::Enrolled {
                home: 1,
                nonce: [9; 16],
            },
            0,
        )
        .unwrap();
    let (s, b) = login_as(&clinic, "patient", "ghost", "long-password").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .starts_with("not on chain yet"),
        "{b}"
    );
    // Enrolled at the hospital, never linked to the clinic.
    hospital.enroll("p-home", None).await;
    let person = hospital
        .state
        .app
        .account("p-home")
        .unwrap()
        .unwrap()
        .person
        .unwrap();
    let new = NewAccount {
        id: "p-home".into(),
        role: Role::Patient,
        department: None,
        name: None,
        password: Zeroizing::new("long-password".into()),
    };
    clinic
        .state
        .app
        .create_account_as(new, PersonOf::Linked { person, home: 0 }, 0)
        .unwrap();
    let (s, b) = login_as(&clinic, "patient", "p-home", "long-password").await;
    assert_eq!(s, F, "{b}");
    assert_eq!(b["error_type"], "not_linked");
    assert_eq!(b["home"], "hospital");
    // At home it signs in.
    assert_eq!(
        login_as(&hospital, "patient", "p-home", "long-password")
            .await
            .0,
        OK
    );
}

/// Ten pending requests per (requesting hospital, patient): a hospital's doctors crowd only
/// their own hospital's share of the patient's list.
#[tokio::test]
async fn pending_requests_are_capped_per_hospital_and_patient() {
    let (hospital, clinic) = common::two_hospitals().await;
    hospital
        .enroll("d003", Some(("Cardiology", "Doctor Three")))
        .await;
    hospital
        .enroll("d004", Some(("Cardiology", "Doctor Four")))
        .await;
    clinic
        .enroll("c-doc", Some(("Neurology", "Alan Turing")))
        .await;
    let mut doctors = vec![hospital.login("d001").await, hospital.login("d002").await];
    for id in ["d003", "d004"] {
        doctors.push(hospital.session("doctor", id, "long-password").await);
    }
    let ask = json!({"patientId": "p001", "purpose": "x"});
    for d in &doctors[..3] {
        for _ in 0..3 {
            let (s, b) = hospital.post(d, "/api/consents/request", ask.clone()).await;
            assert_eq!(s, OK, "{b}");
        }
    }
    let (s, b) = hospital
        .post(&doctors[3], "/api/consents/request", ask.clone())
        .await;
    assert_eq!(s, OK, "the tenth: {b}");
    hospital.post(&doctors[0], "/api/validate", json!({})).await;
    let (s, b) = hospital
        .post(&doctors[3], "/api/consents/request", ask.clone())
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    assert_eq!(
        b["message"],
        "too many pending requests from this hospital to this patient"
    );
    // Another hospital's doctor still reaches the patient.
    let doc = clinic.session("doctor", "c-doc", "long-password").await;
    let (s, b) = clinic.post(&doc, "/api/consents/request", ask).await;
    assert_eq!(s, OK, "{b}");
}

/// What admission refuses on the committed chain is refused with the rule's reason (409):
/// revoking a grant that a record used.
#[tokio::test]
async fn a_rule_of_the_chain_is_409_with_its_reason() {
    let t = common::start(common::manual_timing()).await;
    let d1 = t.login("d001").await;
    let (_, b) = t
        .post(
            &d1,
            "/api/request_consent",
            json!({"patientId": "p001", "password": "patient123"}),
        )
        .await;
    let (otp, grant) = (
        b["otp"].clone(),
        b["grantTxId"].as_str().unwrap().to_string(),
    );
    let (s, _) = t
        .post(
            &d1,
            "/api/add_record",
            json!({"patientId": "p001", "otp": otp,
                   "medical_data": {"diagnosis": "x", "prescription": "y"}}),
        )
        .await;
    assert_eq!(s, OK);
    t.post(&d1, "/api/validate", json!({})).await;
    let p1 = t.login("p001").await;
    let (s, b) = t
        .post(&p1, &format!("/api/grants/{grant}/revoke"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["message"], "grant already used");
}

/// A record is refused when less than 10 s of its grant are left by this node's clock: a
/// record acknowledged is not lost to the grant's expiry.
#[tokio::test]
async fn a_grant_with_less_than_ten_seconds_left_takes_no_record() {
    let t = common::start(common::manual_timing()).await;
    let d1 = t.login("d001").await;
    let (_, b) = t
        .post(
            &d1,
            "/api/request_consent",
            json!({"patientId": "p001", "password": "patient123"}),
        )
        .await;
    let otp = b["otp"].clone();
    let left = b["expiresAt"].as_u64().unwrap() - t.clock.now_ms();
    t.advance(left - 9_000).await;
    let (s, b) = t
        .post(
            &d1,
            "/api/add_record",
            json!({"patientId": "p001", "otp": otp,
                   "medical_data": {"diagnosis": "x", "prescription": "y"}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["error_type"], "blockchain_validation");
    assert_eq!(b["message"], "Expired or invalid consent");
}

/// `request_consent` answers a code only once its grant is applied on chain (the seed's
/// answered 200 with a code even when its grant could not be recorded): without a quorum, 503,
/// and no code is drawn (a wrong code then finds no live code of the pair at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_consent_answers_a_code_only_once_its_grant_is_applied() {
    let mut t = common::start(common::manual_timing()).await;
    let d1 = t.login("d001").await;
    let cluster = t.cluster.as_mut().unwrap();
    for i in 1..4 {
        cluster.stop(i);
    }
    let (s, b) = t
        .post(
            &d1,
            "/api/request_consent",
            json!({"patientId": "p001", "password": "patient123"}),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(b.get("otp").is_none(), "{b}");
    let (s, b) = t
        .post(
            &d1,
            "/api/add_record",
            json!({"patientId": "p001", "otp": "123456",
                   "medical_data": {"diagnosis": "x", "prescription": "y"}}),
        )
        .await;
    assert_eq!(
        (s, b["message"].clone()),
        (StatusCode::BAD_REQUEST, json!("Expired or invalid consent")),
        "no code was stored for the pair"
    );
}

/// Expiry is judged at the block's time, on the clock the validators share with the
/// application: a record acknowledged with 15 s of its grant left, whose block comes after the
/// grant's end, is rejected on chain (`grant expired`, shown by `/api/tx`) and never appears in
/// the history.
#[tokio::test]
async fn a_record_whose_block_comes_after_its_grant_is_rejected_on_chain() {
    let t = common::start(common::manual_timing()).await;
    let d1 = t.login("d001").await;
    let (_, b) = t
        .post(
            &d1,
            "/api/request_consent",
            json!({"patientId": "p001", "password": "patient123"}),
        )
        .await;
    let otp = b["otp"].clone();
    let left = b["expiresAt"].as_u64().unwrap() - t.clock.now_ms();
    t.advance(left - 15_000).await;
    let (s, b) = t
        .post(
            &d1,
            "/api/add_record",
            json!({"patientId": "p001", "otp": otp,
                   "medical_data": {"diagnosis": "Too late", "prescription": "y"}}),
        )
        .await;
    assert_eq!(s, OK, "acknowledged with 15 s left: {b}");
    let tx = b["txId"].as_str().unwrap().to_string();
    t.advance(20_000).await;
    let (s, b) = t.post(&d1, "/api/validate", json!({})).await;
    assert_eq!(s, OK, "{b}");
    let (_, b) = t.get(&d1, &format!("/api/tx/{tx}")).await;
    assert_eq!(b["status"], "rejected", "{b}");
    assert_eq!(b["reason"], "grant expired");
    let (_, b) = t
        .post(
            &anon(),
            "/api/patient_records",
            json!({"patientId": "p001", "password": "patient123"}),
        )
        .await;
    assert!(
        b["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["diagnosis"] != "Too late"),
        "{b}"
    );
}
