//! Test harness: the real router driven with `oneshot`, no socket.
#![allow(dead_code)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use medchain::app::{AppConfig, AppDb};
use medchain::http::{AppState, Chain, Clock, Settings};
use serde_json::Value;
use tower::ServiceExt;

pub const T0: u64 = 1_767_225_600_000; // 2026-01-01

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
        b = b.header("cookie", format!("medchain_session={c}"));
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

pub fn app_store(dir: &std::path::Path) -> Arc<AppDb> {
    let app = AppDb::open_with(&dir.join("app.db"), AppConfig::fast_hashing_for_tests()).unwrap();
    app.seed_demo(T0).unwrap();
    Arc::new(app)
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
    open_in(dir, timing, Clock::manual(T0)).await
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
    let chain = Chain::new(handles[0].clone(), handles, window);
    let state = AppState::new(
        app_store(dir.path()),
        chain,
        Settings::default(),
        clock.clone(),
    );
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

impl TestApp {
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
