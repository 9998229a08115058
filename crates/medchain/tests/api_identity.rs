//! Identities across hospitals (docs/SECURITY.md, issue 9, §5.7-5.9), on two hospitals of one
//! embedded cluster: a login linked at another hospital by a code the person approves at home;
//! a key made at another hospital's page, approved by code from a device at home; a key
//! revoked; the keys' origins and who added them, from the chain.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{Client, TestApp, anon};
use medchain::app::{NewAccount, Role};
use serde_json::{Value, json};
use zeroize::Zeroizing;

const OK: StatusCode = StatusCode::OK;

async fn login(at: &TestApp, id: &str, password: &str) -> (StatusCode, Value) {
    at.post(
        &anon(),
        "/api/login",
        json!({"role": "patient", "patientId": id, "password": password}),
    )
    .await
}

async fn settle(at: &TestApp) {
    assert!(
        at.state
            .flows
            .settle_outbox(Duration::from_secs(20))
            .await
            .unwrap()
    );
}

fn patient(id: &str) -> NewAccount {
    NewAccount {
        id: id.into(),
        role: Role::Patient,
        department: None,
        name: None,
        password: Zeroizing::new("long-password".into()),
    }
}

#[tokio::test]
async fn a_login_at_another_hospital_is_linked_by_a_code_approved_at_home() {
    let (hospital, clinic) = common::two_hospitals().await;
    let (account, _) = hospital.state.flows.enroll(patient("ann")).await.unwrap();
    settle(&hospital).await;
    let person = account.person.unwrap();
    let (_, ask) = clinic
        .state
        .flows
        .link_login(patient("c-0042"), person)
        .await
        .unwrap();
    settle(&clinic).await;
    let code = medchain::app::ask_code(&ask);

    // Until the person approves: 403, naming the code and the home.
    let (s, b) = login(&clinic, "c-0042", "long-password").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(b["error_type"], "not_linked");
    assert_eq!(
        b["message"],
        format!("login not linked yet: approve code {code} on your device or at hospital")
    );

    // At home, the person sees the ask and approves its code (no device: the home signs).
    let (s, b) = login(&hospital, "ann", "long-password").await;
    assert_eq!(s, OK, "{b}");
    let ann = Client::bearer(b["token"].as_str().unwrap());
    let (_, b) = hospital.get(&ann, "/api/asks").await;
    let asks = b["asks"].as_array().unwrap();
    assert_eq!(asks.len(), 1, "{b}");
    assert_eq!(asks[0]["code"], code.as_str());
    assert_eq!(asks[0]["hospital"], "clinic");
    assert_eq!(asks[0]["what"], "link");
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    let (s, _) = hospital
        .post(&ann, "/api/asks/approve", json!({"code": wrong}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = hospital
        .post(&ann, "/api/asks/approve", json!({"code": code}))
        .await;
    assert_eq!(s, OK, "{b}");

    // Applied (at the hospital's validator, then at the clinic's): the clinic serves them, and
    // the identity lists the link.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let b = loop {
        let (s, b) = login(&clinic, "c-0042", "long-password").await;
        if s == OK {
            break b;
        }
        assert!(std::time::Instant::now() < deadline, "{s} {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(b["personId"], hex::encode(person));
    let (_, b) = hospital.get(&ann, "/api/identity").await;
    assert_eq!(b["links"], json!(["clinic"]));
    let (_, b) = hospital.get(&ann, "/api/asks").await;
    assert!(b["asks"].as_array().unwrap().is_empty(), "answered: {b}");
}

#[tokio::test]
async fn a_key_made_at_another_hospitals_page_is_approved_from_a_device_at_home() {
    let (hospital, clinic) = common::two_hospitals().await;
    let p1 = hospital.login("p001").await;
    let home_device = hospital.add_device(&p1).await;

    // At the clinic's page, a new key for p001: the clinic asks.
    let (s, b) = login(&clinic, "p001", "patient123").await;
    assert_eq!(s, OK, "{b}");
    let p1_clinic = Client::bearer(b["token"].as_str().unwrap());
    let person: [u8; 16] = hex::decode(b["personId"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    // Made at the clinic's page: a device key of the clinic's origin.
    let (made_here, pop) = clinic.page_key(&person);
    let public = made_here.secret.verifying_key().to_bytes();
    // A label is on chain in clear: only the generic one is accepted (§16.14).
    let (s, b) = clinic
        .post(
            &p1_clinic,
            "/api/keys",
            json!({"publicKey": hex::encode(public), "pop": pop,
                   "label": "Jane Doe's phone"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["field"], "label", "{b}");
    assert!(!b["message"].as_str().unwrap().contains("Jane"), "{b}");
    let (s, b) = clinic
        .post(
            &p1_clinic,
            "/api/keys",
            json!({"publicKey": hex::encode(public), "pop": pop,
                   "label": "web browser"}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    assert_eq!(b["status"], "asked");
    let code = b["code"].as_str().unwrap().to_string();

    // A pop for another key is refused.
    let (s, _) = clinic
        .post(
            &p1_clinic,
            "/api/keys",
            json!({"publicKey": hex::encode([7u8; 32]), "pop": pop}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // So is a pop that says the key was made at another hospital's page (here, the home's).
    let (other, elsewhere) = hospital.page_key(&person);
    let (s, _) = clinic
        .post(
            &p1_clinic,
            "/api/keys",
            json!({"publicKey": other.public_hex(), "pop": elsewhere}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // At home, once the ask's block is applied there too, the device approves the code.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, b) = hospital.get(&p1, "/api/asks").await;
        if b["asks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["code"] == code.as_str())
        {
            assert_eq!(b["asks"][0]["what"], "key");
            assert_eq!(b["asks"][0]["hospital"], "clinic");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, b) = hospital
        .post_signed(
            &p1,
            &home_device,
            "/api/asks/approve",
            json!({"code": code}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    let (_, b) = hospital.get(&p1, "/api/identity").await;
    let keys = b["keys"].as_array().unwrap();
    let key = |public: &str| {
        keys.iter()
            .find(|k| k["publicKey"] == public)
            .unwrap_or_else(|| panic!("{public} in {keys:?}"))
            .clone()
    };
    let made_at_clinic = key(&hex::encode(public));
    assert_eq!(made_at_clinic["kind"], "device");
    assert_eq!(made_at_clinic["origin"], "clinic");
    assert_eq!(made_at_clinic["addedBy"], "device");
    assert_eq!(made_at_clinic["status"], "live");
    assert_eq!(made_at_clinic["label"], "web browser");
    let made_at_home = key(&home_device.public_hex());
    assert_eq!(made_at_home["origin"], "hospital");
    assert_eq!(made_at_home["addedBy"], "custodial", "added by the home");

    // The person revokes the clinic's key at home: it signs nothing any more.
    let (s, b) = hospital
        .post(
            &p1,
            &format!("/api/keys/{}/revoke", hex::encode(public)),
            json!({}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    let (_, b) = hospital.get(&p1, "/api/identity").await;
    let revoked = b["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["publicKey"] == hex::encode(public))
        .unwrap()
        .clone();
    assert_eq!(revoked["status"], "revoked");
}

/// A doctor's keys are made at their home's page only.
#[tokio::test]
async fn a_doctors_key_is_made_at_home_only() {
    let (_hospital, clinic) = common::two_hospitals().await;
    let (s, b) = clinic
        .post(
            &anon(),
            "/api/login",
            json!({"role": "doctor", "doctorId": "d001", "password": "doctor123"}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    let d1 = Client::bearer(b["token"].as_str().unwrap());
    let (s, b) = clinic
        .post(
            &d1,
            "/api/keys",
            json!({"publicKey": hex::encode([1u8; 32]), "pop": hex::encode([2u8; 64])}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(b["error_type"], "wrong_hospital");
}

/// Loss and recovery (§5.9): the home hospital starts a recovery (`medchain user recover`'s
/// flow); the person sees it and its waiting key on their identity, and a device key they
/// still hold cancels it by revoking that key. A second recovery, not cancelled, makes its key
/// live once the waiting period (72 hours) has passed on the chain's clock.
#[tokio::test]
async fn a_recovery_waits_and_the_persons_device_can_cancel_it() {
    let (hospital, _clinic) = common::two_hospitals().await;
    let p1 = hospital.login("p001").await;
    let device = hospital.add_device(&p1).await;
    // Added on the password (custodially), the device key is young for 72 h: a young key
    // cancels no recovery, and a recovery revokes it (docs/SECURITY.md, "Confidential records",
    // §4.2, red team of the code, break 3). Past its wait it does both as in §5.9.
    hospital.advance(72 * 3_600_000 + 1_000).await;
    let p1 = hospital.login("p001").await;
    let recovery = |b: &Value, i: usize| b["recoveries"][i].clone();
    let key_status = |b: &Value, key: &Value| {
        b["keys"]
            .as_array()
            .unwrap_or_else(|| panic!("keys in {b}"))
            .iter()
            .find(|k| k["publicKey"] == *key)
            .unwrap_or_else(|| panic!("{key} in {b}"))["status"]
            .clone()
    };

    let recover = || async {
        hospital
            .state
            .flows
            .start_recovery("p001".into())
            .await
            .unwrap();
        settle(&hospital).await;
        hospital.get(&p1, "/api/identity").await
    };

    let (s, b) = recover().await;
    assert_eq!(s, OK, "{b}");
    let first = recovery(&b, 0);
    assert_eq!(first["cancelled"], false, "{b}");
    assert_eq!(key_status(&b, &first["publicKey"]), "waiting");

    let (s, b) = hospital
        .post_signed(
            &p1,
            &device,
            &format!("/api/keys/{}/revoke", first["publicKey"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    let (_, b) = hospital.get(&p1, "/api/identity").await;
    assert_eq!(recovery(&b, 0)["cancelled"], true, "{b}");
    assert_eq!(key_status(&b, &first["publicKey"]), "revoked");

    let (_, b) = recover().await;
    let second = b["recoveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["publicKey"] != first["publicKey"])
        .unwrap_or_else(|| panic!("a second recovery in {b}"))
        .clone();
    assert_eq!(key_status(&b, &second["publicKey"]), "waiting");
    hospital.advance(72 * 3_600_000 + 1_000).await;
    let p1 = hospital.login("p001").await; // the session did not last three days
    let (_, b) = hospital.get(&p1, "/api/identity").await;
    assert_eq!(key_status(&b, &second["publicKey"]), "live", "{b}");
    assert_eq!(key_status(&b, &Value::String(device.public_hex())), "live");
}
