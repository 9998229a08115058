//! A client of the seed's HTTP contract (`shared/SEED_API.md`), as the seed's page was: plain
//! HTTP/1.1, JSON bodies, one cookie jar (the cookie `/api/login` sets, kept as a browser
//! keeps it), no signing and no header the seed's page did not send. It makes exactly the
//! seed's calls, and [`seed_flow`] runs the seed's flow with it, asserting every field of
//! every answer (docs/SECURITY.md, issue 9, §7).
//!
//! Blocking (std only), so that process-level tests use it as they are; async tests call it
//! from `spawn_blocking`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{Value, json};

/// One HTTP answer.
pub struct Answer {
    pub status: u16,
    /// The `Set-Cookie` headers, as sent.
    pub set_cookies: Vec<String>,
    /// The JSON body (`Null` if empty, a string if not JSON).
    pub body: Value,
}

/// The bytes of an HTTP/1.1 request to `addr` with `headers` (and a JSON `body`); with
/// `close`, `Connection: close`.
pub fn request_bytes<V: AsRef<str>>(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, V)],
    body: Option<&Value>,
    close: bool,
) -> Vec<u8> {
    let text = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    if close {
        request.push_str("Connection: close\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {}\r\n", value.as_ref()));
    }
    if body.is_some() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{text}", text.len()));
    request.into_bytes()
}

/// One HTTP/1.1 exchange (`Connection: close`) with `headers` added.
pub fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<&Value>,
) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(&request_bytes(addr, method, path, headers, body, true))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let bad = |what: &str| std::io::Error::other(format!("{what} from {addr}{path}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut payload = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let mut set_cookies = Vec::new();
    let mut chunked = false;
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "set-cookie" => set_cookies.push(value.trim().to_string()),
            "transfer-encoding" => chunked |= value.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    if chunked {
        payload = dechunk(&payload).ok_or_else(|| bad("bad chunked body"))?;
    }
    let body = if payload.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&payload)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&payload).into()))
    };
    Ok(Answer {
        status,
        set_cookies,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// The seed's client: one server, one cookie jar.
pub struct SeedClient {
    pub addr: SocketAddr,
    jar: BTreeMap<String, String>,
}

impl SeedClient {
    pub fn new(addr: SocketAddr) -> Self {
        SeedClient {
            addr,
            jar: BTreeMap::new(),
        }
    }

    /// The cookies held, by name.
    pub fn cookies(&self) -> &BTreeMap<String, String> {
        &self.jar
    }

    fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut headers = Vec::new();
        if !self.jar.is_empty() {
            let cookie = self
                .jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            headers.push(("Cookie", cookie));
        }
        let answer = exchange(self.addr, method, path, &headers, body.as_ref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        for set in &answer.set_cookies {
            let pair = set.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                let expired = set.to_ascii_lowercase().contains("max-age=0");
                if value.is_empty() || expired {
                    self.jar.remove(name.trim());
                } else {
                    self.jar.insert(name.trim().to_string(), value.to_string());
                }
            }
        }
        (answer.status, answer.body)
    }

    /// `POST /api/login`.
    pub fn login(&mut self, role: &str, id: &str, password: &str) -> (u16, Value) {
        let key = if role == "doctor" {
            "doctorId"
        } else {
            "patientId"
        };
        self.call(
            "POST",
            "/api/login",
            Some(json!({"role": role, key: id, "password": password})),
        )
    }

    /// `POST /api/request_consent`: the patient types their password in person.
    pub fn request_consent(&mut self, patient: &str, password: &str) -> (u16, Value) {
        self.call(
            "POST",
            "/api/request_consent",
            Some(json!({"patientId": patient, "password": password})),
        )
    }

    /// `POST /api/add_record`.
    pub fn add_record(
        &mut self,
        patient: &str,
        doctor: &str,
        otp: &str,
        department: Option<&str>,
        medical_data: Value,
    ) -> (u16, Value) {
        let mut body = json!({
            "patientId": patient, "doctorId": doctor, "otp": otp, "medical_data": medical_data,
        });
        if let Some(department) = department {
            body["department"] = json!(department);
        }
        self.call("POST", "/api/add_record", Some(body))
    }

    /// `POST /api/validate`, with the empty body the seed's page sent.
    pub fn validate(&mut self) -> (u16, Value) {
        self.call("POST", "/api/validate", None)
    }

    /// `POST /api/patient_records`.
    pub fn patient_records(&mut self, patient: &str, password: &str) -> (u16, Value) {
        self.call(
            "POST",
            "/api/patient_records",
            Some(json!({"patientId": patient, "password": password})),
        )
    }

    /// `GET /api/metrics`.
    pub fn metrics(&mut self) -> (u16, Value) {
        self.call("GET", "/api/metrics", None)
    }

    /// `GET /api/validate_chain`.
    pub fn validate_chain(&mut self) -> (u16, Value) {
        self.call("GET", "/api/validate_chain", None)
    }
}

/// What the seed flow leaves for the caller to check further.
pub struct SeedFlow {
    pub otp: String,
    /// The record as `patient_records` answered it.
    pub record: Value,
    /// The whole `patient_records` answer.
    pub records: Value,
}

/// The seed's flow, with one cookie jar: login d001 → request_consent p001 (password) →
/// add_record → validate → metrics, validate_chain → login p001 → patient_records p001
/// (password). `validators` is the network's size; `diagnosis` marks this run's record, which
/// must be the only new one in the patient's history.
pub fn seed_flow(client: &mut SeedClient, validators: usize, diagnosis: &str) -> SeedFlow {
    // login d001
    let (status, b) = client.login("doctor", "d001", "doctor123");
    assert_eq!(status, 200, "login d001: {b}");
    assert_eq!(b["success"], true);
    assert_eq!(b["userType"], "doctor");
    assert_eq!(b["doctorId"], "d001");
    assert!(b.get("patientId").is_none(), "{b}");
    // One session cookie, and the login throttle's device cookie (docs/API.md).
    assert_eq!(
        client
            .cookies()
            .keys()
            .filter(|n| !n.ends_with("_device"))
            .count(),
        1,
        "one session cookie: {:?}",
        client.cookies()
    );

    // request_consent p001 with the patient's password: the code once the grant is on chain.
    let (status, b) = client.request_consent("p001", "patient123");
    assert_eq!(status, 200, "request_consent: {b}");
    assert_eq!(b["success"], true);
    assert_eq!(b["expiry"], 300);
    let otp = b["otp"].as_str().expect("otp").to_string();
    let grant = b["grantTxId"].clone();
    assert_eq!(b["consentId"], grant, "{b}");
    assert!(b["expiresAt"].as_u64().unwrap() > 1_600_000_000_000, "{b}");
    assert_eq!(otp.len(), 6);
    assert!(otp.bytes().all(|c| c.is_ascii_digit()), "{otp}");

    // add_record under that code.
    let data = json!({"diagnosis": diagnosis, "prescription": "Rest", "notes": "Seen today"});
    let (status, b) = client.add_record("p001", "d001", &otp, None, data);
    assert_eq!(status, 200, "add_record: {b}");
    assert_eq!(b["success"], true);
    assert_eq!(b["message"], "Record added to batch");

    // validate: the record's block (the grant committed its own).
    let (status, b) = client.validate();
    assert_eq!(status, 200, "validate: {b}");
    assert_eq!(b["success"], true);
    let message = b["message"].as_str().expect("message");
    let parts: Vec<&str> = message.split(" | ").collect();
    assert_eq!(parts.len(), 3, "{message}");
    let block = parts[0]
        .strip_prefix("Block ")
        .and_then(|p| p.strip_suffix(" committed"))
        .unwrap_or_else(|| panic!("{message}"));
    assert_eq!(block.len(), 8, "{message}");
    assert!(block.bytes().all(|c| c.is_ascii_hexdigit()), "{message}");
    let votes = parts[1]
        .strip_suffix(" validators approved")
        .unwrap_or_else(|| panic!("{message}"));
    let (yes, of) = votes.split_once('/').unwrap_or_else(|| panic!("{message}"));
    assert_eq!(of.parse::<usize>().unwrap(), validators, "{message}");
    let quorum = validators - (validators - 1) / 3;
    let yes: usize = yes.parse().unwrap();
    assert!((quorum..=validators).contains(&yes), "{message}");
    assert_eq!(parts[2], "1 transactions", "{message}");

    // metrics: the last blocks, each with the seed's fields.
    let (status, b) = client.metrics();
    assert_eq!(status, 200, "metrics: {b}");
    assert_eq!(b["success"], true);
    let metrics = b["metrics"].as_array().expect("metrics");
    assert!(!metrics.is_empty() && metrics.len() <= 100, "{b}");
    assert_eq!(b["count"], metrics.len());
    assert_eq!(b["latest"], metrics[metrics.len() - 1]);
    for m in metrics {
        for field in ["timestamp", "latency", "tps", "energy", "success_rate"] {
            assert!(m[field].is_number(), "{field}: {m}");
        }
        for field in ["attempted_blocks", "success_blocks", "tx_count"] {
            assert!(m[field].is_u64(), "{field}: {m}");
        }
        assert_eq!(m["consensus"]["validator_count"], validators, "{m}");
        assert_eq!(m["consensus"]["required_votes"], quorum, "{m}");
        assert!(
            m["consensus"]["votes"].as_u64().unwrap() >= quorum as u64,
            "{m}"
        );
    }

    // validate_chain: the ledger's verification.
    let (status, b) = client.validate_chain();
    assert_eq!(status, 200, "validate_chain: {b}");
    assert_eq!(b["valid"], true, "{b}");
    assert!(
        b["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Chain valid")),
        "{b}"
    );
    assert!(b["block_count"].as_u64().unwrap() >= 3, "{b}");

    // login p001: the jar now holds the patient's session.
    let (status, b) = client.login("patient", "p001", "patient123");
    assert_eq!(status, 200, "login p001: {b}");
    assert_eq!(b["success"], true);
    assert_eq!(b["userType"], "patient");
    assert_eq!(b["patientId"], "p001");
    assert!(b.get("doctorId").is_none(), "{b}");

    // patient_records with the password: committed records only.
    let (status, records) = client.patient_records("p001", "patient123");
    assert_eq!(status, 200, "patient_records: {records}");
    assert_eq!(records["success"], true);
    let list = records["records"].as_array().expect("records");
    let mine: Vec<&Value> = list
        .iter()
        .filter(|r| r["diagnosis"] == diagnosis)
        .collect();
    assert_eq!(mine.len(), 1, "{records}");
    let record = mine[0].clone();
    assert!(record["timestamp"].as_f64().unwrap() > 1.6e9, "{record}");
    assert_eq!(record["doctor_id"], "d001");
    assert_eq!(record["department"], "Cardiology");
    assert_eq!(record["diagnosis"], diagnosis);
    assert_eq!(record["prescription"], "Rest");
    assert_eq!(record["notes"], "Seen today");
    assert_eq!(
        record["consent_hash"], grant,
        "the record used the grant: {record}"
    );
    SeedFlow {
        otp,
        record,
        records,
    }
}
