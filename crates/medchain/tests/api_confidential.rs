//! Confidential records through the API (docs/SECURITY.md, "Confidential records (issue 10)",
//! §4, §6 and §14 task C), on one embedded cluster whose validators each serve their own API:
//! hospital (validator 0, home of the demo people, who are linked everywhere), clinic (1) and
//! insurance (3). Who learns what is decided by keys: each test asserts what an API answers
//! and what a validator's `keys.db` holds.

mod common;

use axum::http::StatusCode;
use common::records::{
    Secret, aged_home_key, approve, committed_at, cut, doctor_read, granted, history,
    insurer_and_a_record, key_rows, nothing_served, person_of, read_until_open, record_in,
    record_in_person, request, three_hospitals,
};
use common::{anon, eventually};
use serde_json::{Value, json};

const OK: StatusCode = StatusCode::OK;
const FORBIDDEN: StatusCode = StatusCode::FORBIDDEN;

/// The insurer's API, asked with every kind of session, serves no diagnosis of p001 (whose home
/// is the hospital), and its key store holds no key of p001's record: no session; its own
/// patient's; p001's linked session and password; its doctor without a grant, and with a
/// write grant (which entitles it to what its doctor writes, nothing else).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_insurer_serves_no_diagnosis_of_another_homes_patient_with_any_session() {
    let (hospital, _clinic, insurer) = three_hospitals().await;
    let d1 = hospital.login("d001").await;
    let p1_home = hospital.login("p001").await;
    let secret = Secret::new("insurer");
    let record = record_in_person(&hospital, &d1, "p001", &secret).await;
    // The home serves it.
    let (s, b) = history(&hospital, &p1_home, json!({})).await;
    assert_eq!(s, OK, "{b}");
    assert!(secret.leaked_in(&b), "the home opens it: {b}");

    let i_doc = insurer.new_doctor("i-doc", "Claims", "Ida Claims").await;
    insurer.enroll("i-pat", None).await;
    let i_pat = insurer.session("patient", "i-pat", "long-password").await;
    let p1_insurer = insurer.login("p001").await;
    committed_at(&insurer, &i_doc, &record).await;

    let mut answers: Vec<(String, StatusCode, Value)> = Vec::new();
    let mut ask = |what: &str, s: StatusCode, b: Value| answers.push((what.to_string(), s, b));

    // No session.
    let (s, b) = history(&insurer, &anon(), json!({"patientId": "p001"})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    ask("no session", s, b);
    // p001's password at the insurer (the seed's read): a linked login, served with notices.
    let (s, b) = history(
        &insurer,
        &anon(),
        json!({"patientId": "p001", "password": "patient123"}),
    )
    .await;
    assert_eq!(s, OK, "{b}");
    let shown = record_in(&b, &record);
    assert_eq!(shown["state"], "elsewhere", "{b}");
    assert_eq!(
        shown["diagnosis"], "readable at your home hospital, hospital",
        "{b}"
    );
    assert_eq!(shown["department"], "Cardiology", "metadata is public: {b}");
    ask("p001's password", s, b);
    // p001's session at the insurer, on every route a patient has.
    for path in [
        "/api/consents",
        "/api/consents/pending",
        "/api/access_log",
        "/api/identity",
    ] {
        let (s, b) = insurer.get(&p1_insurer, path).await;
        assert_eq!(s, OK, "{path}: {b}");
        ask(path, s, b);
    }
    let (s, b) = history(&insurer, &p1_insurer, json!({})).await;
    assert_eq!(s, OK, "{b}");
    ask("p001's session", s, b);
    // Its own patient: their own history only.
    let (s, b) = history(&insurer, &i_pat, json!({"patientId": "p001"})).await;
    assert_eq!(s, FORBIDDEN, "{b}");
    ask("its patient, p001's history", s, b);
    let (s, b) = history(&insurer, &i_pat, json!({})).await;
    assert_eq!((s, b["records"].clone()), (OK, json!([])), "{b}");
    ask("its patient, own history", s, b);
    // Its doctor, without a grant.
    for path in ["/api/doctor/patient_records", "/api/patient_records"] {
        let (s, b) = insurer
            .post(&i_doc, path, json!({"patientId": "p001"}))
            .await;
        assert_eq!(s, FORBIDDEN, "{path}: {b}");
        assert_eq!(b["message"], "no live read grant", "{b}");
        ask(path, s, b);
    }
    // Its doctor with a write grant, approved by p001 at home.
    let device = hospital.add_device(&p1_home).await;
    let home = (&hospital, &p1_home, &device);
    granted(&insurer, &i_doc, json!("write"), home).await;
    let (s, b) = doctor_read(&insurer, &i_doc).await;
    assert_eq!(s, FORBIDDEN, "{b}");
    ask("its doctor with a write grant", s, b);
    for path in [
        "/api/consents",
        "/api/consents/requested",
        "/api/blocks",
        &format!("/api/tx/{record}"),
    ] {
        let (s, b) = insurer.get(&i_doc, path).await;
        assert_eq!(s, OK, "{path}: {b}");
        ask(path, s, b);
    }

    // Key traffic is for this hospital's staff: a linked patient sees none of it (§16.14).
    let (s, b) = insurer.get(&p1_insurer, "/api/metrics").await;
    assert_eq!((s, b["keys"].clone()), (OK, Value::Null), "{b}");
    let (s, b) = insurer.get(&i_doc, "/api/metrics").await;
    assert_eq!(s, OK, "{b}");
    assert!(b["keys"]["processed_height"].as_u64().unwrap() > 0, "{b}");
    let (_, b) = insurer.get(&p1_insurer, "/api/status").await;
    assert!(!b.to_string().contains("keys"), "{b}");
    for (what, status, answer) in &answers {
        assert!(
            !secret.leaked_in(answer),
            "{what} ({status}) served p001's record: {answer}"
        );
    }
    // Decided by keys, not by a handler: the insurer holds no key of the record, nor waits
    // for one, while the home holds it.
    assert_eq!(key_rows(&hospital, "insurance", &[&record]), 0);
    assert_eq!(key_rows(&hospital, "hospital", &[&record]), 1);
}

/// A read grant signed with a device key made at the insurer's page (not a key of p001's
/// home) is refused: the insurer's API sends the patient home (403 `approve_at_home`), and a
/// dishonest insurer that signs it anyway with that key is refused by the chain's rule
/// (docs/SECURITY.md §4.2). The insurer never holds a key of p001's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_grant_signed_at_the_insurers_page_is_rejected() {
    let (hospital, insurer, i_doc, record, secret) = insurer_and_a_record("page").await;
    let p1_home = hospital.login("p001").await;
    let p1_insurer = insurer.login("p001").await;
    let person = person_of(&hospital, &p1_home).await;

    // A key made at the insurer's page, approved by p001's home key (an ask).
    let home_device = hospital.add_device(&p1_home).await;
    let (insurer_device, pop) = insurer.page_key(&person);
    let (s, b) = insurer
        .post(
            &p1_insurer,
            "/api/keys",
            json!({"publicKey": insurer_device.public_hex(), "pop": pop}),
        )
        .await;
    assert_eq!((s, b["status"].clone()), (OK, json!("asked")), "{b}");
    let code = b["code"].as_str().unwrap().to_string();
    eventually("the ask listed at the home", || async {
        let (_, b) = hospital.get(&p1_home, "/api/asks").await;
        b["asks"]
            .as_array()?
            .iter()
            .any(|a| a["code"] == code.as_str())
            .then_some(())
    })
    .await;
    let (s, b) = hospital
        .post_signed(
            &p1_home,
            &home_device,
            "/api/asks/approve",
            json!({"code": code}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    eventually("the insurer's page key live at the insurer", || async {
        let (_, b) = insurer.get(&p1_insurer, "/api/identity").await;
        b["keys"]
            .as_array()?
            .iter()
            .any(|k| k["publicKey"] == insurer_device.public_hex() && k["status"] == "live")
            .then_some(())
    })
    .await;

    // The insurer's doctor asks to read; the insurer's page cannot approve it.
    let read = request(
        &insurer,
        &i_doc,
        json!({"read": {"durationMs": 3_600_000}}),
        &hospital,
        &p1_home,
    )
    .await;
    let (s, b) = insurer
        .post_signed(
            &p1_insurer,
            &insurer_device,
            &format!("/api/consents/{read}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(s, FORBIDDEN, "{b}");
    assert_eq!(b["error_type"], "approve_at_home", "{b}");
    assert_eq!(b["home"], "hospital", "{b}");

    // A dishonest insurer signs the grant with that key anyway (its page's script holds it).
    let read_id: [u8; 32] = hex::decode(&read).unwrap().try_into().unwrap();
    let doctor = person_of(&insurer, &i_doc).await;
    let node = insurer.state.chain.local.clone();
    let now = insurer.clock.now_ms();
    let mut header = medchain::app::new_header(
        ledger::Meta::Grant(ledger::tx::Grant {
            patient: person,
            doctor,
            scope: ledger::tx::Scope::Read {
                duration_ms: 3_600_000,
            },
            request: Some(read_id),
            attested: ledger::tx::Attested::Device,
        }),
        now,
        now + 3_600_000,
    );
    header.signer = ledger::Signer::Device {
        person,
        key: insurer_device.secret.verifying_key().to_bytes(),
    };
    let purpose = ledger::tx::PurposeBody {
        purpose: "Approved request".into(),
    };
    let (header, body) = node.seal(header, &purpose.to_bytes()).await.unwrap();
    use ed25519_dalek::Signer as _;
    let signature = insurer_device
        .secret
        .sign(&header.signing_bytes(&node.genesis_hash()))
        .to_bytes();
    let forged = ledger::SignedTx {
        header,
        body,
        signature,
    };
    match node.submit(forged).await {
        Err(node::NodeError::Refused(why)) => {
            assert_eq!(why, ledger::rules::reason::READ_GRANT_NOT_HOME_KEY)
        }
        other => panic!("a read grant signed at the insurer's page: {other:?}"),
    }
    nothing_served(
        &insurer,
        &i_doc,
        &secret,
        (&hospital, "insurance", &[&record]),
    )
    .await;
}

/// Finding 2 of the red team, its exact sequence: the insurer's doctor asks to read p001's
/// history; p001's password at the home gets a key added custodially (no other key of theirs
/// approved it); that key's read grant to the insurer's doctor is rejected until its wait
/// ends, and the insurer's key store holds no row of p001's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_grant_from_a_key_added_on_a_password_waits() {
    let (hospital, insurer, i_doc, record, secret) = insurer_and_a_record("young").await;

    // Whoever holds p001's password signs in at the home, where the page's key is added
    // custodially: a young key.
    let thief = hospital.login("p001").await;
    let young = hospital.add_device(&thief).await;
    let read = request(
        &insurer,
        &i_doc,
        json!({"read": {"durationMs": 3_600_000}}),
        &hospital,
        &thief,
    )
    .await;
    let (s, b) = approve(&hospital, &thief, &young, &read).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["message"], ledger::rules::reason::YOUNG_KEY, "{b}");
    nothing_served(
        &insurer,
        &i_doc,
        &secret,
        (&hospital, "insurance", &[&record]),
    )
    .await;
}

/// A clinic doctor reads a hospital patient's history only under a live read grant: 403
/// before; every record open once the grant commits (and one added while it lives); after it
/// expires (by the manual clock), and after a revocation, nothing is served there, a record
/// added later never reaches the clinic, and the clinic drops the keys it received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinic_doctor_reads_a_hospital_patients_history_only_under_a_live_grant() {
    let (hospital, clinic) = common::two_hospitals().await;
    let device = aged_home_key(&hospital).await;
    let d1 = hospital.login("d001").await;
    let p1_home = hospital.login("p001").await;
    let c_doc = clinic.new_doctor("c-doc", "Neurology", "Alan Turing").await;
    let before = Secret::new("before");
    let first = record_in_person(&hospital, &d1, "p001", &before).await;
    committed_at(&clinic, &c_doc, &first).await;

    // Before any grant: 403, and no key at the clinic.
    nothing_served(&clinic, &c_doc, &before, (&hospital, "clinic", &[&first])).await;

    // A one-minute read grant, approved at home on p001's device.
    let home = (&hospital, &p1_home, &device);
    granted(
        &clinic,
        &c_doc,
        json!({"read": {"durationMs": 60_000}}),
        home,
    )
    .await;
    let b = read_until_open(&clinic, &c_doc, &[&first]).await;
    assert!(
        b.to_string().contains(&before.diagnosis),
        "the history arrives when the grant commits: {b}"
    );
    // A record added while the grant lives reaches the clinic.
    let during = Secret::new("during");
    let second = record_in_person(&hospital, &d1, "p001", &during).await;
    let b = read_until_open(&clinic, &c_doc, &[&first, &second]).await;
    assert!(b.to_string().contains(&during.notes), "{b}");

    // The grant expires by the clock; a record added after never reaches the clinic.
    hospital.advance(61_000).await;
    let after = Secret::new("after");
    let third = record_in_person(&hospital, &d1, "p001", &after).await;
    committed_at(&clinic, &c_doc, &third).await;
    let (s, b) = doctor_read(&clinic, &c_doc).await;
    assert_eq!(s, FORBIDDEN, "{b}");
    for secret in [&before, &during, &after] {
        assert!(!secret.leaked_in(&b), "{b}");
    }
    eventually("the clinic drops the keys at the grant's end", || async {
        (key_rows(&hospital, "clinic", &[&first, &second, &third]) == 0).then_some(())
    })
    .await;

    // A second grant, then revoked: the same.
    let p1_home = hospital.login("p001").await;
    let c_doc = clinic.session("doctor", "c-doc", "long-password").await;
    let home = (&hospital, &p1_home, &device);
    let hour = json!({"read": {"durationMs": 3_600_000}});
    let grant = granted(&clinic, &c_doc, hour, home).await;
    read_until_open(&clinic, &c_doc, &[&first, &second, &third]).await;
    let (s, b) = hospital
        .post_signed(
            &p1_home,
            &device,
            &format!("/api/grants/{grant}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    let revocation = b["txId"].as_str().unwrap().to_string();
    cut(&hospital, &d1).await;
    committed_at(&clinic, &c_doc, &revocation).await;
    let late = Secret::new("late");
    let fourth = record_in_person(&hospital, &d1, "p001", &late).await;
    committed_at(&clinic, &c_doc, &fourth).await;
    let (s, b) = doctor_read(&clinic, &c_doc).await;
    assert_eq!(s, FORBIDDEN, "{b}");
    assert!(!late.leaked_in(&b), "{b}");
    eventually("the clinic drops the keys at the revocation", || async {
        (key_rows(&hospital, "clinic", &[&first, &second, &third, &fourth]) == 0).then_some(())
    })
    .await;
}

/// At a linked hospital the patient sees what that hospital may open (a record its own doctor
/// wrote) and a notice for the rest, in the seed's fields too; a request whose purpose it
/// cannot open shows a notice, and approving it there sends the patient home. At home, both
/// records open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_node_shows_notices_for_what_it_cannot_open() {
    let (hospital, clinic) = common::two_hospitals().await;
    let d1 = hospital.login("d001").await;
    let p1_home = hospital.login("p001").await;
    let at_home = Secret::new("home");
    let home_record = record_in_person(&hospital, &d1, "p001", &at_home).await;

    // The clinic's doctor writes a record under a write grant p001 approved at home.
    let c_doc = clinic.new_doctor("c-doc", "Neurology", "Alan Turing").await;
    let device = hospital.add_device(&p1_home).await;
    let home = (&hospital, &p1_home, &device);
    let grant = granted(&clinic, &c_doc, json!("write"), home).await;
    let at_clinic = Secret::new("clinic");
    let (s, b) = clinic
        .post(
            &c_doc,
            "/api/add_record",
            json!({"patientId": "p001", "grantId": grant,
                   "medical_data": at_clinic.medical_data()}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    let clinic_record = b["txId"].as_str().unwrap().to_string();
    cut(&clinic, &c_doc).await;
    committed_at(&clinic, &c_doc, &home_record).await;

    // At the clinic: its own doctor's record opens, the home's shows its notice.
    let (s, b) = history(
        &clinic,
        &anon(),
        json!({"patientId": "p001", "password": "patient123"}),
    )
    .await;
    assert_eq!(s, OK, "{b}");
    let records = b["records"].as_array().unwrap();
    let of = |tx: &str| {
        records
            .iter()
            .find(|r| r["tx_id"] == tx)
            .cloned()
            .unwrap_or_else(|| panic!("{tx} listed: {b}"))
    };
    let home_shown = of(&home_record);
    assert_eq!(home_shown["state"], "elsewhere");
    assert_eq!(
        home_shown["notice"],
        "readable at your home hospital, hospital"
    );
    assert_eq!(home_shown["diagnosis"], home_shown["notice"]);
    assert_eq!(
        (&home_shown["prescription"], &home_shown["notes"]),
        (&json!(""), &json!(""))
    );
    assert_eq!(home_shown["doctor_id"], "d001", "{home_shown}");
    assert!(!at_home.leaked_in(&b), "{b}");
    let clinic_shown = of(&clinic_record);
    assert_eq!(clinic_shown["state"], "open", "{clinic_shown}");
    assert_eq!(clinic_shown["notice"], Value::Null);
    assert_eq!(clinic_shown["diagnosis"], at_clinic.diagnosis.as_str());
    assert_eq!(clinic_shown["notes"], at_clinic.notes.as_str());

    // A request of the hospital's doctor, listed at the clinic with a notice for its purpose;
    // approving it there sends p001 home.
    let (s, b) = hospital
        .post(
            &d1,
            "/api/consents/request",
            json!({"patientId": "p001", "purpose": "Echocardiogram review"}),
        )
        .await;
    assert_eq!(s, OK, "{b}");
    let asked = b["consent"]["id"].as_str().unwrap().to_string();
    cut(&hospital, &d1).await;
    let p1_clinic = clinic.login("p001").await;
    let listed = eventually("the request listed at the clinic", || async {
        let (_, b) = clinic.get(&p1_clinic, "/api/consents/pending").await;
        b["requests"]
            .as_array()?
            .iter()
            .find(|r| r["id"] == asked.as_str())
            .cloned()
    })
    .await;
    assert_eq!(listed["purpose_opens"], false, "{listed}");
    assert_eq!(
        listed["purpose"], "purpose readable at your home hospital, hospital",
        "{listed}"
    );
    let (s, b) = clinic
        .post(
            &p1_clinic,
            &format!("/api/consents/{asked}/approve"),
            json!({"devicePublicKey": "11".repeat(32)}),
        )
        .await;
    assert_eq!(s, FORBIDDEN, "{b}");
    assert_eq!(
        (b["error_type"].clone(), b["home"].clone()),
        (json!("approve_at_home"), json!("hospital"))
    );

    // At home, both open (the clinic's record once the home pulled its key).
    eventually("both records open at home", || async {
        let (s, b) = history(&hospital, &p1_home, json!({})).await;
        assert_eq!(s, OK, "{b}");
        (at_home.leaked_in(&b) && b.to_string().contains(&at_clinic.prescription)).then_some(())
    })
    .await;
}

/// A grant's key status (docs/SECURITY.md §5.4, §13): the clinic's doctor sees, beside their
/// live read grant, how many of p001's records the clinic holds keys for and how many wait for
/// the home. While the home withholds its answers the records wait, from the hospital and since
/// when; once it answers, every record is held and none waits. No record is opened to count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_grant_shows_how_the_patients_keys_stand() {
    let (hospital, clinic) = common::two_hospitals().await;
    let device = aged_home_key(&hospital).await;
    let d1 = hospital.login("d001").await;
    let p1 = hospital.login("p001").await;
    let records = [
        record_in_person(&hospital, &d1, "p001", &Secret::new("keys-1")).await,
        record_in_person(&hospital, &d1, "p001", &Secret::new("keys-2")).await,
    ];
    // The home's key answers to the clinic are withheld: the history waits.
    let network = hospital.cluster.as_ref().unwrap().network().clone();
    network.filter(|from, to, frame| {
        !(from == 0
            && to == 1
            && matches!(**frame, node::Wire::Keys(node::KeyFrame::Answer { .. })))
    });
    let c_doc = clinic.new_doctor("c-doc", "Neurology", "Alan Turing").await;
    let hour = json!({"read": {"durationMs": 3_600_000}});
    let grant = granted(&clinic, &c_doc, hour, (&hospital, &p1, &device)).await;
    let keys_of = |b: &Value| {
        b["consents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["id"] == grant.as_str())
            .map(|g| g["keys"].clone())
            .unwrap_or_else(|| panic!("the grant is listed: {b}"))
    };
    let waiting = eventually("the records to wait for the home", || async {
        let (s, b) = clinic.get(&c_doc, "/api/consents").await;
        assert_eq!(s, OK, "{b}");
        let keys = keys_of(&b);
        (keys["waiting"] == 2).then_some(keys)
    })
    .await;
    assert_eq!(waiting["held"], 0, "{waiting}");
    assert_eq!(waiting["from"], "hospital", "{waiting}");
    assert!(waiting["since_ms"].as_u64().unwrap() > 0, "{waiting}");
    // Nothing is said to the patient, nor to a doctor away from the grantee's home.
    let (_, b) = hospital.get(&p1, "/api/consents").await;
    assert!(
        b["consents"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g.get("keys").is_none()),
        "{b}"
    );

    network.clear_filter();
    let held = eventually("every record held", || async {
        let (_, b) = clinic.get(&c_doc, "/api/consents").await;
        let keys = keys_of(&b);
        (keys["held"] == records.len()).then_some(keys)
    })
    .await;
    assert_eq!(held["waiting"], 0, "{held}");
    assert_eq!(held["since_ms"], Value::Null, "{held}");
    assert_eq!(held["from"], "hospital", "{held}");
}
