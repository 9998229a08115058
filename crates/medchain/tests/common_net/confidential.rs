//! Confidential records over HTTP on a process testnet (docs/SECURITY.md, "Confidential records
//! (issue 10)"): the demo patient p001 (home: node 0, linked at every node), a device key of
//! theirs made at their home's page, a write grant requested by another node's doctor and
//! approved on that device at home, records, erasure through `medchain erasure answer`, and
//! what each node's `keys.db` holds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::Signer as _;
use serde_json::{Value, json};

use super::secrets::Secret;
use super::{Net, http, medchain, output_text, wait_for};

/// The demo patient whose home is node 0 (`testnet --demo`), and their password.
pub const P001: (&str, &str) = ("p001", "patient123");
/// What the network must do within this while it has a quorum.
pub const WAIT: Duration = Duration::from_secs(30);

/// A signed-in session: its bearer token and the person's id (32 hex digits).
pub struct Session {
    pub token: String,
    pub person: String,
}

/// Signs `(id, password)` in as a patient at node `i`, waiting while the login or its link is
/// not on chain there yet.
pub fn patient_session(net: &Net, i: usize, (id, password): (&str, &str)) -> Session {
    let body = json!({"role": "patient", "patientId": id, "password": password});
    let answer = wait_for(WAIT, &format!("{id}'s login at node {i}"), || {
        match http(net.nodes[i].api, "POST", "/api/login", None, Some(&body)) {
            Ok((200, answer)) => Some(answer),
            Ok((403 | 503, _)) | Err(_) => None,
            Ok((status, answer)) => panic!("login {id} at node {i}: {status} {answer}"),
        }
    });
    Session {
        token: answer["token"].as_str().expect("token").to_string(),
        person: answer["personId"].as_str().expect("personId").to_string(),
    }
}

/// A device key held by the test, as a browser holds one.
pub struct Device {
    secret: ed25519_dalek::SigningKey,
}

impl Device {
    pub fn public_hex(&self) -> String {
        hex::encode(self.secret.verifying_key().to_bytes())
    }
}

/// A device key of the person of `session`, made at node `i`'s page (their home) and added on
/// chain there.
pub fn add_device(net: &Net, i: usize, session: &Session) -> Device {
    let secret = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let public = secret.verifying_key().to_bytes();
    let person: [u8; 16] = hex::decode(&session.person)
        .expect("hex")
        .try_into()
        .expect("16 bytes");
    let pop = secret.sign(&ledger::key_pop_bytes(
        &net.genesis().hash(),
        &person,
        &public,
        ledger::tx::KeyKind::Device,
        i as u32,
    ));
    let body = json!({"publicKey": hex::encode(public), "pop": hex::encode(pop.to_bytes()),
                      "label": "web browser"});
    let (status, answer) = http(
        net.nodes[i].api,
        "POST",
        "/api/keys",
        Some(&session.token),
        Some(&body),
    )
    .expect("add a key");
    assert_eq!(
        (status, &answer["status"]),
        (200, &json!("added")),
        "{answer}"
    );
    Device { secret }
}

/// Calls `path` at node `i` with the device's key: the 202 envelope it answers (its `tx.plain`
/// included), before anything is signed.
pub fn prepare(
    net: &Net,
    i: usize,
    token: &str,
    device: &Device,
    path: &str,
    mut body: Value,
) -> Value {
    body["devicePublicKey"] = Value::String(device.public_hex());
    let (status, answer) =
        http(net.nodes[i].api, "POST", path, Some(token), Some(&body)).expect("prepare");
    assert_eq!(status, 202, "{path}: {answer}");
    answer
}

/// Signs a prepared envelope (`prepare`'s answer) on `device` and posts the signature: the
/// action's answer.
pub fn sign(net: &Net, i: usize, token: &str, device: &Device, prepared: &Value) -> (u16, Value) {
    let bytes = hex::decode(prepared["signingBytes"].as_str().expect("signingBytes")).expect("hex");
    let signature = device.secret.sign(&bytes);
    let id = prepared["preparedId"].as_str().expect("preparedId");
    http(
        net.nodes[i].api,
        "POST",
        &format!("/api/sign/{id}"),
        Some(token),
        Some(&json!({"signature": hex::encode(signature.to_bytes())})),
    )
    .expect("sign")
}

/// A write grant of p001's (`p1` at home, node 0, with `device`) to node `i`'s doctor: asked at
/// node `i` for `purpose`, approved on the device at home once the purpose opens there. The
/// grant's transaction id, once committed at node `i`.
pub fn write_grant(
    net: &Net,
    i: usize,
    (p1, device): (&Session, &Device),
    purpose: &str,
) -> String {
    let request = request_write(net, i, purpose);
    wait_for(WAIT, "the request's purpose open at p001's home", || {
        pending_purpose(net, p1, &request).filter(|(opens, _)| *opens)
    });
    let prepared = prepare(
        net,
        0,
        &p1.token,
        device,
        &format!("/api/consents/{request}/approve"),
        json!({}),
    );
    let (status, answer) = sign(net, 0, &p1.token, device, &prepared);
    assert_eq!(status, 200, "approve: {answer}");
    let grant = answer["grantTxId"].as_str().expect("grantTxId").to_string();
    committed_at(net, i, &grant);
    grant
}

/// A remote write request of node `i`'s doctor to p001 for `purpose`: its id.
pub fn request_write(net: &Net, i: usize, purpose: &str) -> String {
    let (status, answer) = http(
        net.nodes[i].api,
        "POST",
        "/api/consents/request",
        Some(&net.tokens[i]),
        Some(&json!({"patientId": P001.0, "purpose": purpose, "scope": "write"})),
    )
    .expect("request");
    assert_eq!(status, 200, "request: {answer}");
    answer["consent"]["id"].as_str().expect("id").to_string()
}

/// Request `id` as p001's home lists it: whether its purpose opens there, and the purpose (or
/// its notice). `None` while it is not listed.
pub fn pending_purpose(net: &Net, p1: &Session, id: &str) -> Option<(bool, String)> {
    let (_, answer) = http(
        net.nodes[0].api,
        "GET",
        "/api/consents/pending",
        Some(&p1.token),
        None,
    )
    .ok()?;
    let request = answer["requests"]
        .as_array()?
        .iter()
        .find(|r| r["id"] == id)?
        .clone();
    Some((
        request["purpose_opens"] == true,
        request["purpose"].as_str().unwrap_or_default().to_string(),
    ))
}

/// A record of p001's by node `i`'s doctor with `secret`, under the write grant `grant`: its
/// transaction id, once committed at node `i`.
pub fn record_under(net: &Net, i: usize, grant: &str, secret: &Secret) -> String {
    add_record(
        net,
        i,
        json!({"patientId": P001.0, "grantId": grant,
                              "medical_data": secret.medical_data()}),
    )
}

/// A record of p001's by node 0's doctor (their home's) with `secret`, in person: its
/// transaction id, once committed at node 0.
pub fn record_in_person(net: &Net, secret: &Secret) -> String {
    let (_, otp) = super::consent(net.nodes[0].api, &net.tokens[0], P001);
    add_record(
        net,
        0,
        json!({"patientId": P001.0, "otp": otp,
                              "medical_data": secret.medical_data()}),
    )
}

fn add_record(net: &Net, i: usize, body: Value) -> String {
    let (status, answer) = http(
        net.nodes[i].api,
        "POST",
        "/api/add_record",
        Some(&net.tokens[i]),
        Some(&body),
    )
    .expect("add_record");
    assert_eq!(status, 200, "add_record: {answer}");
    let tx = answer["txId"].as_str().expect("txId").to_string();
    committed_at(net, i, &tx);
    tx
}

/// Waits until `tx` is committed at node `i`.
pub fn committed_at(net: &Net, i: usize, tx: &str) {
    wait_for(WAIT, &format!("{tx} committed at node {i}"), || {
        (net.tx_status(i, tx).as_deref() == Some("committed")).then_some(())
    });
}

/// p001's history as `session` reads it at node `i` (`None` while the node cannot serve it).
pub fn history(net: &Net, i: usize, session: &Session) -> Option<Value> {
    match http(
        net.nodes[i].api,
        "POST",
        "/api/patient_records",
        Some(&session.token),
        Some(&json!({})),
    ) {
        Ok((200, answer)) => Some(answer),
        _ => None,
    }
}

/// Record `tx` in a history answer.
pub fn record_in(history: &Value, tx: &str) -> Option<Value> {
    history["records"]
        .as_array()?
        .iter()
        .find(|r| r["tx_id"] == tx)
        .cloned()
}

/// Waits until `session` at node `i` is served record `tx` in `state`: the history.
pub fn served_in_state(net: &Net, i: usize, session: &Session, tx: &str, state: &str) -> Value {
    wait_for(WAIT, &format!("{tx} {state} at node {i}"), || {
        let history = history(net, i, session)?;
        (record_in(&history, tx)?["state"] == state).then_some(history)
    })
}

/// The key service's counters at node `i` (`/api/metrics`, to its own doctor).
pub fn key_metrics(net: &Net, i: usize) -> Value {
    let (status, answer) = http(
        net.nodes[i].api,
        "GET",
        "/api/metrics",
        Some(&net.tokens[i]),
        None,
    )
    .expect("metrics");
    assert_eq!(status, 200, "{answer}");
    answer["keys"].clone()
}

/// Node `i`'s key store.
pub fn keys_db(net: &Net, i: usize) -> PathBuf {
    net.nodes[i].dir.join("keys.db")
}

/// The files of node `i`'s key store: the database, its WAL and shared memory.
pub fn keys_db_files(net: &Net, i: usize) -> Vec<PathBuf> {
    key_store_files(&net.nodes[i].dir)
}

/// The files of the key store in the validator folder `dir`.
pub fn key_store_files(dir: &Path) -> Vec<PathBuf> {
    ["keys.db", "keys.db-wal", "keys.db-shm"]
        .iter()
        .map(|name| dir.join(name))
        .collect()
}

/// Rows of node `i`'s key store (held keys: wanted ones are kept in memory, docs/SECURITY.md
/// §12.1) for transaction `tx`.
pub fn key_rows(net: &Net, i: usize, tx: &str) -> usize {
    let conn = rusqlite::Connection::open_with_flags(
        keys_db(net, i),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open keys.db");
    let id = hex::decode(tx).expect("hex");
    conn.query_row("SELECT COUNT(*) FROM data_keys WHERE tx = ?1", [&id], |r| {
        r.get::<_, i64>(0)
    })
    .expect("count") as usize
}

/// The sealed key column of `tx`'s row in node `i`'s key store, if it holds the key.
pub fn sealed_row(net: &Net, i: usize, tx: &str) -> Option<Vec<u8>> {
    let conn = rusqlite::Connection::open_with_flags(
        keys_db(net, i),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open keys.db");
    conn.query_row(
        "SELECT sealed_key FROM data_keys WHERE tx = ?1",
        [hex::decode(tx).expect("hex")],
        |r| r.get(0),
    )
    .ok()
}

/// Which of `files` hold `bytes`.
pub fn holding(files: &[PathBuf], bytes: &[u8]) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|file| {
            std::fs::read(file).is_ok_and(|content| super::secrets::contains(&content, bytes))
        })
        .cloned()
        .collect()
}

/// The patient of `token`, at their home (node `home`), asks for `tx` to be erased: the
/// request's id, once applied there.
pub fn request_erasure(net: &Net, home: usize, token: &str, tx: &str) -> String {
    let (status, answer) = http(
        net.nodes[home].api,
        "POST",
        &format!("/api/records/{tx}/erasure"),
        Some(token),
        Some(&json!({})),
    )
    .expect("request an erasure");
    assert_eq!(status, 200, "{answer}");
    answer["txId"].as_str().expect("txId").to_string()
}

/// `medchain erasure ARGS --config <node i> --key-dir <the testnet's>`: whether it succeeded,
/// and what it printed.
pub fn erasure_cli(net: &Net, i: usize, args: &[&str]) -> (bool, String) {
    let out = medchain()
        .arg("erasure")
        .args(args)
        .arg("--config")
        .arg(&net.nodes[i].config)
        .arg("--key-dir")
        .arg(net.key_dir())
        .output()
        .expect("run medchain erasure");
    (out.status.success(), output_text(&out))
}

/// Node `i`'s hospital erases `tx` answering `request` (`medchain erasure answer --erase`,
/// through its running validator).
pub fn erase(net: &Net, i: usize, request: &str) {
    let (ok, answered) = erasure_cli(net, i, &["answer", "--request", request, "--erase"]);
    assert!(ok && answered.contains("erased in block"), "{answered}");
}

/// Copies the regular files of the folder `from` into `to` (made if need be), except those
/// `skip` refuses.
pub fn copy_files(from: &Path, to: &Path, skip: impl Fn(&str) -> bool) {
    std::fs::create_dir_all(to).expect("make the copy's folder");
    for entry in std::fs::read_dir(from).expect("read the folder") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().is_ok_and(|kind| kind.is_file()) && !skip(&name) {
            std::fs::copy(entry.path(), to.join(&name)).expect("copy");
        }
    }
}

/// Restores node `i` (stopped) from `backup`, a copy of its folder, as issue 8's README says:
/// its stores and their side files come back; its incarnation marker does not (nor its logs,
/// which are this run's record).
pub fn restore(net: &Net, i: usize, backup: &Path) {
    const STORES: [&str; 4] = ["chain.db", "node.db", "keys.db", "app.db"];
    let dir = &net.nodes[i].dir;
    for store in STORES {
        for side in ["", "-wal", "-shm"] {
            let file = dir.join(format!("{store}{side}"));
            if file.exists() {
                std::fs::remove_file(&file).expect("remove a store");
            }
        }
    }
    let store = |name: &str| STORES.iter().any(|db| name.starts_with(db));
    copy_files(backup, dir, |name| !store(name));
}
