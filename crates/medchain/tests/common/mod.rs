//! Test harness: the real router over a real embedded four-validator cluster, driven with
//! `oneshot` (no socket) or served on a loopback socket; the seed's people enrolled on chain
//! (`--demo`) before the first request.
#![allow(dead_code)]

pub mod seed;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use medchain::app::custody::CUSTODY_KEY_FILE;
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

/// The hospital's application store and custody in `dir` (fast password hashing).
pub fn app_store(dir: &std::path::Path) -> (Arc<AppDb>, Arc<Custody>) {
    let app = AppDb::open_with(&dir.join("app.db"), AppConfig::fast_hashing_for_tests()).unwrap();
    let custody = Custody::open(&dir.join(CUSTODY_KEY_FILE), &app).unwrap();
    (Arc::new(app), Arc::new(custody))
}

/// The workflows of validator 0 with the seed's people enrolled on chain (as `serve --demo`),
/// and the outbox drained in the background.
pub async fn demo_flows(dir: &std::path::Path, node: node::NodeHandle, clock: Clock) -> Arc<Flows> {
    let (app, custody) = app_store(dir);
    let flows = Arc::new(Flows::new(app, custody, node, clock));
    flows.start(true, false).await.unwrap();
    if !flows.settle_outbox(Duration::from_secs(30)).await.unwrap() {
        let rows: Vec<String> = flows
            .app()
            .outbox()
            .unwrap()
            .iter()
            .map(|r| format!("{} {} {:?} {:?}", r.kind, r.state.as_str(), r.reason, r.account))
            .collect();
        panic!(
            "the demo people were not enrolled in time: {rows:#?}, validator: {:?}",
            flows.node().status().failed
        );
    }
    tokio::spawn(flows.clone().run_outbox());
    flows
}

/// The application's clock in tests: the real time (block times come from it too), moved
/// ahead when a test advances it.
pub fn test_clock() -> Clock {
    Clock::ahead()
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

/// Opens (or reopens, after a "restart") the service in `dir`.
pub async fn open_in(dir: tempfile::TempDir, timing: node::Timing, clock: Clock) -> TestApp {
    let window = timing.batch_window;
    let path = dir.path().to_path_buf();
    let cluster =
        tokio::task::spawn_blocking(move || node::Cluster::open(&path.join("chain"), timing))
            .await
            .unwrap()
            .unwrap();
    let handles = cluster.handles();
    let flows = demo_flows(dir.path(), handles[0].clone(), clock.clone()).await;
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

/// The tests of sessions and consents use the same harness: a cluster is cheap.
pub async fn app_only() -> TestApp {
    start(manual_timing()).await
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
    /// Serves this app's router on `127.0.0.1:0`, for clients that speak HTTP.
    pub async fn listen(&self) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(medchain::http::serve(listener, self.state.clone(), async move {
            let _ = stopped.await;
        }));
        Served {
            addr,
            stop: Some(stop),
        }
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
        drop(router);
        drop(state);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        open_in(dir, manual_timing(), clock).await
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

    /// Logs a demo account in; returns a bearer client.
    pub async fn login(&self, id: &str) -> Client {
        let role = if id.starts_with('d') {
            "doctor"
        } else {
            "patient"
        };
        let key = if role == "doctor" {
            "doctorId"
        } else {
            "patientId"
        };
        let (s, b) = self
            .post(
                &anon(),
                "/api/login",
                serde_json::json!({"role": role, key: id, "password": password_of(id)}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "login {id}: {b}");
        Client::bearer(b["token"].as_str().unwrap())
    }
}
