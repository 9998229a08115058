//! Erasure end to end through the API (docs/SECURITY.md, "Confidential records (issue 10)",
//! §7): the patient asks at their home, the hospital that wrote the record answers as
//! `medchain erasure answer` does (a step of its outbox, signed by its validator key), and
//! every reader, at the home and at a grantee, sees the record erased; no correct validator
//! keeps its key.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::records::{
    Secret, aged_home_key, answer_erasure as answer, committed_at, doctor_read, granted, history,
    key_rows, read_until_open, record_in, record_in_person, request,
};
use common::{TestApp, eventually};
use ledger::Meta;
use ledger::tx::{AnswerErasure, Decision, Refusal};
use medchain::app::flows::date_of;
use medchain::app::new_header;
use serde_json::{Value, json};

const OK: StatusCode = StatusCode::OK;

/// The patient's erasure request `id` once it is in `state` at `at`.
async fn erasure_in(at: &TestApp, patient: &common::Client, id: &str, state: &str) -> Value {
    eventually(&format!("erasure {id} {state}"), || async {
        let (s, b) = at.get(patient, "/api/erasures").await;
        assert_eq!(s, OK, "{b}");
        b["erasures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id && e["state"] == state)
            .cloned()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_end_to_end_over_the_api() {
    let (hospital, clinic) = common::two_hospitals().await;
    let device = aged_home_key(&hospital).await;
    let d1 = hospital.login("d001").await;
    let p1 = hospital.login("p001").await;
    let secret = Secret::new("erasure");
    let record = record_in_person(&hospital, &d1, "p001", &secret).await;

    // A grantee: the clinic's doctor reads it under a live read grant.
    let c_doc = clinic.new_doctor("c-doc", "Neurology", "Alan Turing").await;
    let hour = json!({"read": {"durationMs": 3_600_000}});
    granted(&clinic, &c_doc, hour, (&hospital, &p1, &device)).await;
    let b = read_until_open(&clinic, &c_doc, &[&record]).await;
    assert!(secret.leaked_in(&b), "the grantee reads it: {b}");

    // The request: only at the home (a key of the home signs it), in person here.
    let path = format!("/api/records/{record}/erasure");
    let p1_clinic = clinic.login("p001").await;
    let (s, b) = clinic.post(&p1_clinic, &path, json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(b["error_type"], "approve_at_home", "{b}");
    let (s, b) = hospital.post(&p1, &path, json!({})).await;
    assert_eq!(s, OK, "{b}");
    let first = b["txId"].as_str().unwrap().to_string();
    let pending = erasure_in(&hospital, &p1, &first, "pending").await;
    assert_eq!(pending["tx"], record.as_str());
    assert_eq!(pending["hospital"], "hospital");
    assert_eq!(pending["requestedBy"], "custodial");
    assert_eq!(pending["requestedHow"], "requested in person at hospital");
    assert_eq!(pending["department"], "Cardiology");
    assert_eq!(
        pending["notice"],
        format!(
            "waiting for hospital's answer since {}",
            date_of(pending["requestedMs"].as_u64().unwrap())
        )
    );
    // One request at a time.
    let (s, b) = hospital.post(&p1, &path, json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["message"], ledger::rules::reason::ERASURE_PENDING, "{b}");

    // Refused, with its reason shown; the record stays readable.
    let until_ms = 2_051_222_400_000; // 2035-01-01
    answer(
        &hospital,
        &first,
        Decision::Refuse {
            reason: Refusal::RetentionPeriod,
            until_ms: Some(until_ms),
        },
    );
    let refused = erasure_in(&hospital, &p1, &first, "refused").await;
    assert_eq!(refused["reason"], "retention_period");
    assert_eq!(refused["untilMs"], until_ms);
    assert_eq!(
        refused["notice"],
        format!(
            "refused by hospital on {}: a legal retention period, until 2035-01-01",
            date_of(refused["answeredMs"].as_u64().unwrap())
        )
    );
    let (s, b) = history(&hospital, &p1, json!({})).await;
    assert_eq!(s, OK, "{b}");
    assert!(secret.leaked_in(&b), "refused: still open at home: {b}");

    // Asked again, and erased.
    let (s, b) = hospital.post(&p1, &path, json!({})).await;
    assert_eq!(s, OK, "{b}");
    let second = b["txId"].as_str().unwrap().to_string();
    answer(&hospital, &second, Decision::Erase);
    let erased = erasure_in(&hospital, &p1, &second, "erased").await;
    let on = date_of(erased["answeredMs"].as_u64().unwrap());
    let notice = format!("erased at the patient's request on {on}");
    assert_eq!(erased["notice"], notice.as_str());
    // The first request stays refused in the list (newest first).
    let (_, b) = hospital.get(&p1, "/api/erasures").await;
    let states: Vec<&str> = b["erasures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["erased", "refused"], "{b}");

    // Shown erased at the home and at the grantee: the notice in the seed's fields, nothing
    // of the content; and neither holds its key any more.
    let erased_in = |b: &Value| {
        let r = record_in(b, &record);
        assert_eq!(r["state"], "erased", "{b}");
        assert_eq!(r["notice"], notice.as_str(), "{b}");
        assert_eq!(r["diagnosis"], notice.as_str(), "{b}");
        assert_eq!((&r["prescription"], &r["notes"]), (&json!(""), &json!("")));
        assert_eq!(r["department"], "Cardiology", "the metadata stays: {b}");
        assert!(!secret.leaked_in(b), "{b}");
    };
    let (s, b) = history(
        &hospital,
        &common::anon(),
        json!({"patientId": "p001", "password": "patient123"}),
    )
    .await;
    assert_eq!(s, OK, "{b}");
    erased_in(&b);
    committed_at(&clinic, &c_doc, &second).await;
    let b = eventually("the grantee shows it erased", || async {
        let (s, b) = doctor_read(&clinic, &c_doc).await;
        assert_eq!(s, OK, "{b}");
        b.to_string().contains("\"erased\"").then_some(b)
    })
    .await;
    erased_in(&b);
    for validator in ["hospital", "clinic"] {
        assert_eq!(
            key_rows(&hospital, validator, &[&record]),
            0,
            "{validator} keeps the key"
        );
    }
    // Nothing more to erase.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (s, b) = hospital.post(&p1, &path, json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["message"], ledger::rules::reason::ALREADY_ERASED, "{b}");
}

/// The doctor's pending request `id` in `/api/consents/requested` answer `b`.
fn made_request(b: &Value, id: &str) -> Option<Value> {
    b["requests"]
        .as_array()?
        .iter()
        .find(|r| r["id"] == id)
        .cloned()
}

/// A validator behind an erasure opens no purpose (red team of the code, W3; docs/SECURITY.md
/// §16.25): purposes are not read under an `Access` of their own, so a validator that has not
/// applied the erasure of a request, and knows the others are ahead, answers 503 instead of
/// the purpose; once caught up it shows the purpose erased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_behind_an_erasure_does_not_open_the_erased_purpose() {
    let (hospital, clinic) = common::two_hospitals().await;
    let p1 = hospital.login("p001").await;
    let c_doc = clinic.new_doctor("c-doc", "Neurology", "Alan Turing").await;
    // The clinic's doctor asks p001; the clinic sealed the purpose and opens it.
    let id = request(&clinic, &c_doc, json!("write"), &hospital, &p1).await;
    let (s, b) = clinic.get(&c_doc, "/api/consents/requested").await;
    assert_eq!(s, OK, "{b}");
    assert_eq!(made_request(&b, &id).unwrap()["purpose"], "Second opinion");

    // p001 asks, in person at home, for the request to be erased; the clinic sees it.
    let (s, b) = hospital
        .post(&p1, &format!("/api/records/{id}/erasure"), json!({}))
        .await;
    assert_eq!(s, OK, "{b}");
    let erasure: [u8; 32] = hex::decode(b["txId"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    committed_at(&clinic, &c_doc, &hex::encode(erasure)).await;

    // The clinic falls behind: blocks and votes to it are withheld, status frames pass.
    let network = hospital.cluster.as_ref().unwrap().network().clone();
    network.filter(|_, to, frame| {
        !(to == 1 && matches!(**frame, node::Wire::Consensus(_) | node::Wire::Blocks(_)))
    });
    // The clinic's validator answers Erase; the others commit it without the clinic.
    let meta = Meta::AnswerErasure(AnswerErasure {
        request: erasure,
        decision: Decision::Erase,
    });
    let clinic_node = clinic.state.flows.node().clone();
    let signed = clinic_node.sign_as_validator(
        new_header(meta, clinic.state.flows.now_ms(), u64::MAX),
        Vec::new(),
    );
    let hospital_node = hospital.state.flows.node().clone();
    let verdict = hospital_node
        .submit_applied(signed, Duration::from_secs(20))
        .await
        .unwrap();
    let node::Verdict::Applied { height, .. } = verdict else {
        panic!("the answer is applied: {verdict:?}");
    };
    // The clinic has not applied it, and hears that the others have.
    eventually("the clinic knows it is behind", || async {
        let status = clinic_node.status();
        (status.height < height && status.behind(status.height)).then_some(())
    })
    .await;
    let (s, b) = clinic.get(&c_doc, "/api/consents/requested").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(!b.to_string().contains("Second opinion"), "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("catching up"),
        "{b}"
    );

    // Caught up, it shows the purpose erased.
    network.clear_filter();
    let b = eventually("the clinic shows the purpose erased", || async {
        let (s, b) = clinic.get(&c_doc, "/api/consents/requested").await;
        (s == OK).then_some(b)
    })
    .await;
    let made = made_request(&b, &id).unwrap();
    assert!(
        made["purpose"]
            .as_str()
            .unwrap()
            .contains("erased at the patient's request"),
        "{b}"
    );
    assert!(!b.to_string().contains("Second opinion"), "{b}");
}
