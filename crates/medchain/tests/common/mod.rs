//! Test harness: the real router over a real embedded four-validator cluster, driven with
//! `oneshot` (no socket) or served on a loopback socket; the seed's people enrolled on chain
//! (`--demo`) before the first request.
#![allow(dead_code)]

pub mod records;
pub mod secrets;
pub mod seed;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use ledger::master::MasterKey;
use medchain::app::flows::Flows;
use medchain::app::{AppConfig, AppDb, Custody};
use medchain::http::{AppState, Chain, Clock, Settings};
use serde_json::Value;
use tower::ServiceExt;

/// The cookie of validator 0 (hospital), where the embedded API runs.
pub const COOKIE: &str = "medchain_hospital";

pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub clock: Clock,
    pub cluster: Option<node::Cluster>,
    pub dir: tempfile::TempDir,
}

/// A `tracing` writer into a buffer a test reads (`.with_writer(move || buffer.clone())`).
#[derive(Clone, Default)]
pub struct LogBuffer(pub Arc<std::sync::Mutex<Vec<u8>>>);

impl LogBuffer {
    /// What was logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How a request authenticates.
#[derive(Clone, Default)]
pub struct Client {
    pub bearer: Option<String>,
    pub cookie: Option<String>,
}

impl Client {
    pub fn bearer(t: &str) -> Self {
        Client {
            bearer: Some(t.into()),
            cookie: None,
        }
    }
    pub fn cookie(t: &str) -> Self {
        Client {
            bearer: None,
            cookie: Some(t.into()),
        }
    }
}

pub fn anon() -> Client {
    Client::default()
}

pub fn password_of(id: &str) -> &'static str {
    match id {
        "p001" => "patient123",
        "p002" => "patient456",
        "d001" => "doctor123",
        "d002" => "doctor456",
        _ => panic!("no demo account {id}"),
    }
}

pub fn request(
    method: &str,
    path: &str,
    body: Option<Value>,
    bearer: Option<&str>,
    cookie: Option<&str>,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(t) = bearer {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    if let Some(c) = cookie {
        b = b.header("cookie", format!("{COOKIE}={c}"));
    }
    match body {
        Some(v) => b
            .header("content-type", "application/json")
            .body(Body::from(v.to_string()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    }
}

pub async fn body_of(res: Response<Body>) -> (StatusCode, Value) {
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 16 << 20)
        .await
        .unwrap();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, v)
}

/// The hospital's application store and custody in `dir` (fast password hashing), their
/// secrets derived from `operator_key`.
pub fn app_store(dir: &std::path::Path, operator_key: &MasterKey) -> (Arc<AppDb>, Arc<Custody>) {
    let app = AppDb::open_with(
        &dir.join("app.db"),
        AppConfig::fast_hashing_for_tests(),
        operator_key,
    )
    .unwrap();
    let custody = Custody::open(operator_key, &app).unwrap();
    (Arc::new(app), Arc::new(custody))
}

/// The workflows of validator 0 of `cluster` with the seed's people enrolled on chain (as
/// `serve --demo`), and the outbox drained in the background.
pub async fn demo_flows(
    dir: &std::path::Path,
    cluster: &node::Cluster,
    clock: Clock,
) -> Arc<Flows> {
    let node = cluster.handle(0).unwrap();
    hospital_flows(dir, node, cluster.operator_key(0).unwrap(), clock, false).await
}

/// The workflows of `node`'s hospital with the demo logins: at validator 0 the seed's people
/// enrolled (and, with `links`, linked to every other validator); elsewhere, linked logins.
pub async fn hospital_flows(
    dir: &std::path::Path,
    node: node::NodeHandle,
    operator_key: &MasterKey,
    clock: Clock,
    links: bool,
) -> Arc<Flows> {
    let (app, custody) = app_store(dir, operator_key);
    let flows = Arc::new(Flows::new(app, custody, node, clock));
    flows.start(true, links).await.unwrap();
    if !flows.settle_outbox(Duration::from_secs(30)).await.unwrap() {
        let rows: Vec<String> = flows
            .app()
            .outbox()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} {} {:?} {:?}",
                    r.kind,
                    r.state.as_str(),
                    r.reason,
                    r.account
                )
            })
            .collect();
        panic!(
            "the demo people were not enrolled in time: {rows:#?}, validator: {:?}",
            flows.node().status().failed
        );
    }
    tokio::spawn(flows.clone().run_outbox());
    flows
}

/// The clock of a test: manual, shared by the cluster's validators (block times) and the
/// application (its checks), starting at the real time (a new genesis takes the system's).
pub fn test_clock() -> Clock {
    Clock::manual(medchain::app::now_ms())
}

/// Timing of test clusters: blocks are cut by `/api/validate` (the window is long), so that
/// tests decide when a block happens.
pub fn manual_timing() -> node::Timing {
    node::Timing {
        batch_window: std::time::Duration::from_secs(600),
        ..node::Timing::default()
    }
}

/// The real router over a real embedded four-validator cluster in a temp dir.
pub async fn start(timing: node::Timing) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    open_in(dir, timing, test_clock()).await
}

/// Two hospitals of one embedded cluster, each with its own `app.db` and custody: validator 0
/// (hospital, home of the demo people, linked to every other validator) and validator 1
/// (clinic, with the demo logins linked). Returns hospital's app and clinic's.
pub async fn two_hospitals() -> (TestApp, TestApp) {
    two_hospitals_in(tempfile::tempdir().unwrap()).await
}

/// [`two_hospitals`] with the cluster (`DIR/chain`, its keys in `DIR/chain.keys`) and the
/// hospital's `app.db` in `dir`.
pub async fn two_hospitals_in(dir: tempfile::TempDir) -> (TestApp, TestApp) {
    let clock = test_clock();
    let hospital = open_with(dir, manual_timing(), clock.clone(), true).await;
    let clinic = hospital.hospital(1).await;
    // The links are on chain (at clinic's validator too) once its demo logins can sign in.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (s, b) = clinic
            .post(
                &anon(),
                "/api/login",
                serde_json::json!({"role": "patient", "patientId": "p002", "password": "patient456"}),
            )
            .await;
        if s == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "p002 at clinic: {s} {b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (hospital, clinic)
}

/// Opens (or reopens, after a "restart") the service in `dir`.
pub async fn open_in(dir: tempfile::TempDir, timing: node::Timing, clock: Clock) -> TestApp {
    open_with(dir, timing, clock, false).await
}

async fn open_with(
    dir: tempfile::TempDir,
    timing: node::Timing,
    clock: Clock,
    links: bool,
) -> TestApp {
    let window = timing.batch_window;
    let path = dir.path().to_path_buf();
    let cluster = tokio::task::spawn_blocking({
        let clock = clock.clone();
        move || {
            node::Cluster::open_with_clock(
                &path.join("chain"),
                timing,
                node::DEFAULT_WATTS_PER_CORE,
                clock,
            )
        }
    })
    .await
    .unwrap()
    .unwrap();
    let handles = cluster.handles();
    let operator_key = cluster.operator_key(0).unwrap();
    let flows = hospital_flows(
        dir.path(),
        handles[0].clone(),
        operator_key,
        clock.clone(),
        links,
    )
    .await;
    let chain = Chain::new(handles[0].clone(), handles, window);
    let state = AppState::new(flows, chain, Settings::default(), clock.clone());
    TestApp {
        router: medchain::http::router(state.clone()),
        state,
        clock,
        cluster: Some(cluster),
        dir,
    }
}

/// Polls `f` until it answers `Some` (at most 20 s, else the test fails naming `what`).
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The tests of sessions and consents use the same harness: a cluster is cheap.
pub async fn app_only() -> TestApp {
    start(manual_timing()).await
}

/// A device key held by a test, as a browser holds one.
pub struct Device {
    pub secret: ed25519_dalek::SigningKey,
}

impl Device {
    pub fn public_hex(&self) -> String {
        hex::encode(self.secret.verifying_key().to_bytes())
    }
}

/// The API served on a loopback socket until dropped.
pub struct Served {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TestApp {
    /// The API of validator `i` of this app's cluster, with its own application store (in a
    /// new directory) and the demo logins linked, sharing this app's clock.
    pub async fn hospital(&self, i: u32) -> TestApp {
        let cluster = self.cluster.as_ref().expect("a running cluster");
        let node = cluster.handle(i).expect("a validator");
        let dir = tempfile::tempdir().unwrap();
        let operator_key = cluster.operator_key(i).expect("an operator key");
        let flows = hospital_flows(
            dir.path(),
            node.clone(),
            operator_key,
            self.clock.clone(),
            false,
        )
        .await;
        let chain = Chain::new(node, cluster.handles(), self.state.chain.batch_window);
        let state = AppState::new(flows, chain, Settings::default(), self.clock.clone());
        TestApp {
            router: medchain::http::router(state.clone()),
            state,
            clock: self.clock.clone(),
            cluster: None,
            dir,
        }
    }

    /// Moves the shared clock `ms` forward, then lets every validator tick once: a replica
    /// proposes and checks block times by the clock of its last tick, and a backup whose last
    /// tick predates the jump would withhold its prepare for a proposal made after it.
    pub async fn advance(&self, ms: u64) {
        self.clock.advance_ms(ms);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// The cookie of this app's hospital.
    pub fn cookie_name(&self) -> String {
        self.state.cookie.to_string()
    }

    /// Serves this app's router on `127.0.0.1:0`, for clients that speak HTTP.
    pub async fn listen(&self) -> Served {
        self.listen_on("127.0.0.1").await
    }

    /// Serves this app's router on `host:0` (hospital i on `127.0.0.(i+1)`: one host per
    /// hospital, as their cookies and pages need).
    pub async fn listen_on(&self, host: &str) -> Served {
        self.serve_with(host, self.state.clone()).await.0
    }

    /// Serves this app on `127.0.0.1:0` with `settings`; the server's task ends once the
    /// [`Served`] is dropped and its connections have ended.
    pub async fn listen_with(
        &self,
        settings: Settings,
    ) -> (Served, tokio::task::JoinHandle<std::io::Result<()>>) {
        self.serve_with("127.0.0.1", self.with_settings(settings))
            .await
    }

    async fn serve_with(
        &self,
        host: &str,
        state: AppState,
    ) -> (Served, tokio::task::JoinHandle<std::io::Result<()>>) {
        let listener = tokio::net::TcpListener::bind((host, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(medchain::http::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        (
            Served {
                addr,
                stop: Some(stop),
            },
            server,
        )
    }

    /// This app's state with other HTTP settings (the same stores and throttles).
    pub fn with_settings(&self, settings: Settings) -> AppState {
        let mut state = self.state.clone();
        state.settings = Arc::new(settings);
        state
    }

    /// A request as the router sees it from a socket whose peer is `from` (an IP address).
    pub async fn call_from(
        &self,
        from: &str,
        c: &Client,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = request(method, path, body, c.bearer.as_deref(), c.cookie.as_deref());
        let peer = std::net::SocketAddr::new(from.parse().unwrap(), 40_000);
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        body_of(self.raw(req).await).await
    }

    /// Stops everything and opens it again from the same files.
    pub async fn restart(mut self) -> TestApp {
        let clock = self.clock.clone();
        if let Some(mut c) = self.cluster.take() {
            tokio::task::spawn_blocking(move || c.shutdown())
                .await
                .unwrap();
        }
        let TestApp {
            dir, state, router, ..
        } = self;
        // As `serve` does when it stops.
        state.write_pending().await.unwrap();
        drop(router);
        drop(state);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        open_in(dir, manual_timing(), clock).await
    }

    /// A device key made for the signed-in person of `c` and added on chain at this hospital
    /// (their home: custodially, origin here).
    pub async fn add_device(&self, c: &Client) -> Device {
        let (s, b) = self.get(c, "/api/identity").await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let person: [u8; 16] = hex::decode(b["personId"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let (device, pop) = self.page_key(&person);
        let (s, b) = self
            .post(
                c,
                "/api/keys",
                serde_json::json!({
                    "publicKey": device.public_hex(), "pop": pop,
                    "label": "web browser",
                }),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "add key: {b}");
        assert_eq!(b["status"], "added", "{b}");
        device
    }

    /// A fresh device key for `person` as this hospital's page makes it (kind device, origin
    /// here), with its proof of possession in hex.
    pub fn page_key(&self, person: &[u8; 16]) -> (Device, String) {
        let secret = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let public = secret.verifying_key().to_bytes();
        let here = self.state.flows.here();
        use ed25519_dalek::Signer as _;
        let pop = secret.sign(&ledger::key_pop_bytes(
            &here.genesis_hash,
            person,
            &public,
            ledger::tx::KeyKind::Device,
            here.index,
        ));
        (Device { secret }, hex::encode(pop.to_bytes()))
    }

    /// Calls `path` with the device's public key in the body, checks the envelope it is asked
    /// to sign (the tag, this chain, the device as signer), signs it and posts the signature:
    /// the action's answer.
    pub async fn post_signed(
        &self,
        c: &Client,
        device: &Device,
        path: &str,
        mut body: Value,
    ) -> (StatusCode, Value) {
        body["devicePublicKey"] = Value::String(device.public_hex());
        let (s, b) = self.post(c, path, body).await;
        if s != StatusCode::ACCEPTED {
            return (s, b);
        }
        assert_eq!(b["signatureNeeded"], true, "{b}");
        assert!(
            b["tx"]["kind"].is_string() && b["tx"]["meta"].is_object(),
            "{b}"
        );
        assert!(b["tx"]["body"].is_string(), "{b}");
        let bytes = hex::decode(b["signingBytes"].as_str().unwrap()).unwrap();
        let genesis = self.state.flows.here().genesis_hash;
        assert!(bytes.starts_with(b"medchain/tx/v2"), "the tag");
        assert_eq!(&bytes[14..46], &genesis[..], "this chain");
        use ed25519_dalek::Signer as _;
        let signature = device.secret.sign(&bytes);
        let id = b["preparedId"].as_str().unwrap();
        self.post(
            c,
            &format!("/api/sign/{id}"),
            serde_json::json!({"signature": hex::encode(signature.to_bytes())}),
        )
        .await
    }

    pub async fn raw(&self, req: Request<Body>) -> Response<Body> {
        self.router.clone().oneshot(req).await.unwrap()
    }

    pub async fn raw_text(
        &self,
        method: &str,
        path: &str,
        body: &str,
        content_type: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        body_of(
            self.raw(b.body(Body::from(body.to_string())).unwrap())
                .await,
        )
        .await
    }

    pub async fn call(
        &self,
        c: &Client,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        body_of(
            self.raw(request(
                method,
                path,
                body,
                c.bearer.as_deref(),
                c.cookie.as_deref(),
            ))
            .await,
        )
        .await
    }

    pub async fn get(&self, c: &Client, path: &str) -> (StatusCode, Value) {
        self.call(c, "GET", path, None).await
    }

    pub async fn post(&self, c: &Client, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(c, "POST", path, Some(body)).await
    }

    /// An in-person write grant's code (the grant is on chain when it returns).
    pub async fn in_person_code(&self, doctor: &Client, patient: &str) -> String {
        let (s, b) = self
            .post(
                doctor,
                "/api/request_consent",
                serde_json::json!({"patientId": patient, "password": password_of(patient)}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["otp"].as_str().unwrap().to_string()
    }

    /// Enrolls `id` here (its home), as `medchain user add` does, with the password
    /// `long-password`, and waits for it on chain.
    pub async fn enroll(&self, id: &str, doctor: Option<(&str, &str)>) {
        let new = medchain::app::NewAccount {
            id: id.into(),
            role: if doctor.is_some() {
                medchain::app::Role::Doctor
            } else {
                medchain::app::Role::Patient
            },
            department: doctor.map(|d| d.0.to_string()),
            name: doctor.map(|d| d.1.to_string()),
            password: zeroize::Zeroizing::new("long-password".into()),
        };
        self.state.flows.enroll(new).await.unwrap();
        assert!(
            self.state
                .flows
                .settle_outbox(Duration::from_secs(20))
                .await
                .unwrap()
        );
    }

    /// A doctor enrolled here (their home) in `department` as `name`, signed in.
    pub async fn new_doctor(&self, id: &str, department: &str, name: &str) -> Client {
        self.enroll(id, Some((department, name))).await;
        self.session("doctor", id, "long-password").await
    }

    /// Logs `id` in here with `password`; a bearer client.
    pub async fn session(&self, role: &str, id: &str, password: &str) -> Client {
        let key = if role == "doctor" {
            "doctorId"
        } else {
            "patientId"
        };
        let (s, b) = self
            .post(
                &anon(),
                "/api/login",
                serde_json::json!({"role": role, key: id, "password": password}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "login {id}: {b}");
        Client::bearer(b["token"].as_str().unwrap())
    }

    /// Logs a demo account in; returns a bearer client.
    pub async fn login(&self, id: &str) -> Client {
        let role = if id.starts_with('d') {
            "doctor"
        } else {
            "patient"
        };
        self.session(role, id, password_of(id)).await
    }
}
