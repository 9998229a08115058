//! The HTTP API and the web UI on one router. [`router`] is built apart from `main` so that tests
//! drive it with `tower::ServiceExt::oneshot` and no socket. Each area owns its routes.

mod auth;
mod chain;
mod consent;
mod erasure;
pub mod error;
pub mod extract;
#[doc(hidden)]
pub mod fuzzing;
mod identity;
pub mod openapi;
mod records;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use node::NodeHandle;
use tokio::sync::Semaphore;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::app::AppDb;
pub use crate::app::Clock;
use crate::app::flows::Flows;
pub(crate) use error::node_error;
pub use error::{ApiError, ApiResult};

/// The Content Security Policy of every response.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'";

/// Options of the HTTP layer.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Add `Secure` to the session cookie (set when served over HTTPS, e.g. behind a proxy).
    pub secure_cookie: bool,
}

/// The chain side: the validator this hospital submits to and reads from, and every validator
/// whose state the status page shows (all four in embedded mode, only the local one otherwise).
#[derive(Clone)]
pub struct Chain {
    pub local: NodeHandle,
    pub validators: Vec<NodeHandle>,
    /// The longest a transaction waits before it is proposed, for the UI's countdown.
    pub batch_window: Duration,
}

impl Chain {
    pub fn new(local: NodeHandle, validators: Vec<NodeHandle>, batch_window: Duration) -> Self {
        Self {
            local,
            validators,
            batch_window,
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub app: Arc<AppDb>,
    /// The workflows: every chain step goes through them.
    pub flows: Arc<Flows>,
    pub chain: Chain,
    pub settings: Arc<Settings>,
    pub clock: Clock,
    /// The session cookie's name, `medchain_<validator name>`: one per hospital, so that two
    /// sessions on one host do not overwrite each other.
    pub cookie: Arc<str>,
    /// Argon2id runs at most this many at once, so that a burst of logins cannot starve the
    /// validators of CPU.
    pub(crate) hashing: Arc<Semaphore>,
    pub(crate) failures: Arc<Failures>,
}

/// Wrong passwords per account id before that id is refused for the rest of the window.
pub const MAX_PASSWORD_FAILURES: u32 = 10;
/// The window over which wrong passwords are counted.
pub const FAILURE_WINDOW_MS: u64 = 15 * 60 * 1000;
/// Ids tracked at most (the oldest windows are dropped first).
const MAX_TRACKED_IDS: usize = 10_000;

/// Wrong-password counts per account id: (failures, start of the window).
#[derive(Default)]
pub(crate) struct Failures(Mutex<std::collections::HashMap<String, (u32, u64)>>);

impl Failures {
    fn blocked(&self, id: &str, now: u64) -> bool {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id).is_some_and(|(n, since)| {
            *n >= MAX_PASSWORD_FAILURES && now < since.saturating_add(FAILURE_WINDOW_MS)
        })
    }

    fn record(&self, id: String, now: u64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED_IDS {
            map.retain(|_, (_, since)| now < since.saturating_add(FAILURE_WINDOW_MS));
            if map.len() >= MAX_TRACKED_IDS {
                map.clear();
            }
        }
        let entry = map.entry(id).or_insert((0, now));
        if now >= entry.1.saturating_add(FAILURE_WINDOW_MS) {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    fn clear(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

impl AppState {
    /// The state of the API of `flows`' hospital, whose status page shows `chain`.
    pub fn new(flows: Arc<Flows>, chain: Chain, settings: Settings, clock: Clock) -> Self {
        Self {
            app: flows.app().clone(),
            cookie: Arc::from(format!("medchain_{}", chain.local.name())),
            flows,
            chain,
            settings: Arc::new(settings),
            clock,
            hashing: Arc::new(Semaphore::new(2)),
            failures: Arc::new(Failures::default()),
        }
    }

    /// Runs a read query on the local validator's chain off the async threads.
    pub(crate) async fn read_chain<T: Send + 'static>(
        &self,
        query: impl FnOnce(&ledger::Reader) -> Result<T, ledger::Error> + Send + 'static,
    ) -> ApiResult<T> {
        let node = self.chain.local.clone();
        tokio::task::spawn_blocking(move || node.read(query))
            .await?
            .map_err(|e| node_error("read", e))
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Checks a password off the async threads, at most two at a time. After
    /// [`MAX_PASSWORD_FAILURES`] wrong passwords for one id within [`FAILURE_WINDOW_MS`], that id
    /// is refused (429) until the window ends, so guessing is slow even beyond Argon2id's cost.
    pub(crate) async fn verify_password(
        &self,
        id: String,
        role: Option<crate::app::Role>,
        password: zeroize::Zeroizing<String>,
    ) -> ApiResult<Option<crate::app::Account>> {
        let now = self.now_ms();
        if self.failures.blocked(&id, now) {
            return Err(ApiError::TooManyAttempts);
        }
        let _permit = self
            .hashing
            .clone()
            .acquire_owned()
            .await
            .map_err(ApiError::internal)?;
        let app = self.app.clone();
        let key = id.clone();
        let account =
            tokio::task::spawn_blocking(move || app.verify_password(&id, role, &password))
                .await??;
        match &account {
            Some(_) => self.failures.clear(&key),
            None => self.failures.record(key, now),
        }
        Ok(account)
    }

    /// Runs a blocking application-store call off the async threads.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&AppDb, u64) -> Result<T, ApiError> + Send + 'static,
    ) -> ApiResult<T> {
        let app = self.app.clone();
        let now = self.now_ms();
        tokio::task::spawn_blocking(move || f(&app, now)).await?
    }
}

/// The whole service: API, health check, UI, security headers, body limit, request log.
pub fn router(state: AppState) -> Router {
    let docs = openapi::router(&state.cookie);
    let api = Router::new()
        .merge(auth::router())
        .merge(consent::router())
        .merge(erasure::router())
        .merge(identity::router())
        .merge(records::router())
        .merge(chain::router())
        .route("/healthz", get(healthz))
        .merge(docs)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    Router::new()
        .merge(crate::web::router())
        .merge(api)
        .layer(middleware::from_fn(no_store_for_api))
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(header_layer(header::CONTENT_SECURITY_POLICY, CSP))
        .layer(header_layer(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header_layer(header::X_FRAME_OPTIONS, "DENY"))
        .layer(header_layer(header::REFERRER_POLICY, "no-referrer"))
        .layer(header_layer(
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ))
        .layer(header_layer(
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ))
        .layer(header_layer(
            HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=(), payment=()",
        ))
        .layer(middleware::from_fn(same_origin_writes))
        .layer(middleware::from_fn(log_request))
}

/// Serves the router on `listener` until `shutdown` resolves, then finishes the requests in
/// flight. `main` binds the listener (127.0.0.1:5000 by default).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

fn header_layer(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
}

#[utoipa::path(
    get, path = "/healthz", tag = "service",
    security(()),
    responses((status = 200, description = "The service answers", body = openapi::answers::Health)),
)]
async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"success": true, "status": "ok"}))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("No such endpoint".into())
}

async fn method_not_allowed() -> Response {
    let mut res =
        ApiError::BadRequest("Method not allowed on this endpoint".into()).into_response();
    *res.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    res
}

/// Refuses a state-changing request whose `Origin` is not this server. The session cookie is
/// `SameSite=Strict`, but "same site" spans every port of the host: a page served by another
/// program on 127.0.0.1 could otherwise post with the doctor's cookie. Browsers send `Origin` on
/// such requests; clients without it (curl, the seed's scripts) are unaffected.
async fn same_origin_writes(req: Request, next: Next) -> Response {
    let safe = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if !safe && let Some(origin) = req.headers().get(header::ORIGIN) {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, rest)| rest.trim_end_matches('/'));
        if host.is_none() || origin_host != host {
            return ApiError::Forbidden("Cross-origin request refused".into()).into_response();
        }
    }
    next.run(req).await
}

/// API answers are never cached (they carry medical data and codes).
async fn no_store_for_api(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let mut res = next.run(req).await;
    if api {
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// Logs method, route template, status and time: never bodies, queries or headers, which may
/// carry passwords, codes, tokens or medical data.
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "(static or unmatched)".to_string());
    let started = Instant::now();
    let res = next.run(req).await;
    tracing::info!(
        target: "medchain::http",
        %method,
        route,
        status = res.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
    );
    res
}
