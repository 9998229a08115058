//! The seed's HTTP contract for a client that signs nothing (docs/SECURITY.md, issue 9, §7):
//! `common::seed`'s client makes exactly the calls of SEED_API.md, over HTTP with one cookie
//! jar, against the embedded cluster (the testnet run is in `network.rs`). Behind the seed's
//! answers, the chain holds what the issue asks: a grant signed by the patient's custodial key
//! and attested in person at the home, a record signed by the doctor's custodial key under it,
//! and an access entry naming the hospital that served the read.

mod common;

use axum::http::StatusCode;
use common::seed::{SeedClient, seed_flow};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_flow_works_for_a_client_that_signs_nothing() {
    let t = common::start(common::manual_timing()).await;
    let served = t.listen().await;
    let addr = served.addr;
    let flow = tokio::task::spawn_blocking(move || {
        let mut client = SeedClient::new(addr);
        let flow = seed_flow(&mut client, 4, "Hypertension");
        let device = format!("{}_device", common::COOKIE);
        assert_eq!(
            client.cookies().keys().collect::<Vec<_>>(),
            vec![common::COOKIE, &device],
            "this hospital's session and device cookies"
        );
        flow
    })
    .await
    .unwrap();

    // What medchain adds to the seed's answers: who signed, how, and where it was read.
    let record = &flow.record;
    assert_eq!(record["signerKind"], "custodial", "{record}");
    assert_eq!(record["origin"], "hospital", "{record}");
    assert_eq!(record["attested"], "in_person", "{record}");
    assert_eq!(record["doctorName"], "Ada Byron", "{record}");
    assert_eq!(flow.records["servedBy"], "hospital");
    let access = flow.records["accessTxId"].as_str().unwrap().to_string();

    // The grant is on chain, attested in person and used by the record; the read is logged.
    let p1 = t.login("p001").await;
    let (s, b) = t.get(&p1, "/api/consents").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let grants = b["consents"].as_array().unwrap();
    assert_eq!(grants.len(), 1, "{b}");
    assert_eq!(grants[0]["id"], record["consent_hash"]);
    assert_eq!(grants[0]["attested"], "in_person");
    assert_eq!(grants[0]["scope"], "write");
    assert_eq!(grants[0]["state"], "used");
    assert_eq!(grants[0]["doctor_id"], "d001");
    assert_eq!(grants[0]["used_by"], record["tx_id"]);
    t.post(&t.login("d001").await, "/api/validate", json!({}))
        .await;
    let (_, b) = t.get(&p1, "/api/access_log").await;
    let entries = b["entries"].as_array().unwrap();
    let read = entries
        .iter()
        .find(|e| e["tx_id"] == access.as_str())
        .unwrap_or_else(|| panic!("the read is logged: {b}"));
    assert_eq!(read["reader_id"], "p001");
    assert_eq!(read["servedBy"], "hospital");
    assert_eq!(read["consent_hash"], serde_json::Value::Null);
}
