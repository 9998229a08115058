//! The HTTP API and the web UI on one router. [`router`] is built apart from `main` so that tests
//! drive it with `tower::ServiceExt::oneshot` and no socket. Each area owns its routes.

mod auth;
mod chain;
pub mod client;
mod consent;
mod device;
mod erasure;
pub mod error;
pub mod extract;
#[doc(hidden)]
pub mod fuzzing;
mod identity;
pub mod openapi;
pub mod read_limit;
mod records;
pub mod server;
pub mod throttle;

use std::net::IpAddr;
use std::sync::Arc;
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

/// `Strict-Transport-Security` when served over HTTPS: a year, this host only (other hosts
/// of the domain may not speak HTTPS).
pub const HSTS: &str = "max-age=31536000";

/// Options of the HTTP layer (`medchain serve`'s and `node`'s flags, node.toml's `[http]`).
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Served over HTTPS (e.g. by a TLS proxy): the session cookie gets `Secure`, and every
    /// answer `Strict-Transport-Security`.
    pub secure_cookie: bool,
    /// Host names served besides the connection's own address and the loopback names with
    /// its port ([`client::host_served`]); any other Host is refused (421).
    pub allowed_hosts: Vec<String>,
    /// Proxies whose `X-Forwarded-For` names the client ([`client::ClientAddr`]).
    pub trusted_proxies: Vec<IpAddr>,
    /// Timeouts and the cap on connections ([`server`]).
    pub limits: node::ConnectionLimits,
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
    /// The device cookie's name, `medchain_<validator name>_device` ([`device`]).
    pub device_cookie: Arc<str>,
    /// Argon2id runs at most this many at once, so that a burst of logins cannot starve the
    /// validators of CPU.
    pub(crate) hashing: Arc<Semaphore>,
    /// Wrong passwords per (login id, client address), per device, per address, per login id
    /// and per (patient, doctor's desk).
    pub(crate) logins: Arc<throttle::LoginThrottle>,
    /// Record reads per account.
    pub(crate) reads: Arc<read_limit::ReadLimiter>,
}

impl AppState {
    /// The state of the API of `flows`' hospital, whose status page shows `chain`.
    pub fn new(flows: Arc<Flows>, chain: Chain, settings: Settings, clock: Clock) -> Self {
        let logins = throttle::LoginThrottle::open(flows.app().clone(), clock.now_ms());
        Self {
            app: flows.app().clone(),
            cookie: Arc::from(format!("medchain_{}", chain.local.name())),
            device_cookie: Arc::from(format!("medchain_{}_device", chain.local.name())),
            flows,
            chain,
            settings: Arc::new(settings),
            clock,
            hashing: Arc::new(Semaphore::new(2)),
            logins: Arc::new(logins),
            reads: Arc::new(read_limit::ReadLimiter::default()),
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

    /// What ends each cookie this API sets: `; Secure` when served over HTTPS.
    pub(crate) fn cookie_secure(&self) -> &'static str {
        if self.settings.secure_cookie {
            "; Secure"
        } else {
            ""
        }
    }

    /// Checks a password of `id` typed at `client` by `asker`, off the async threads, at most
    /// two at a time. The attempt is counted by the [`throttle`] before it queues for the
    /// hash, so a burst has no more judged than the throttle allows (429 beyond).
    pub(crate) async fn verify_password(
        &self,
        client: client::ClientAddr,
        asker: &throttle::Asker,
        id: String,
        role: Option<crate::app::Role>,
        password: zeroize::Zeroizing<String>,
    ) -> ApiResult<Option<crate::app::Account>> {
        let attempt = self.logins.attempt(&id, client.0, asker, self.now_ms())?;
        let _permit = self
            .hashing
            .clone()
            .acquire_owned()
            .await
            .map_err(ApiError::internal)?;
        let app = self.app.clone();
        let account =
            tokio::task::spawn_blocking(move || app.verify_password(&id, role, &password))
                .await??;
        match &account {
            Some(_) => self.logins.succeeded(&attempt, self.now_ms()),
            None => self.logins.failed(&attempt, self.now_ms()),
        }
        Ok(account)
    }

    /// Writes what is kept in memory for a while (the login throttle's last counts): when the
    /// server stops.
    pub async fn write_pending(&self) -> ApiResult<()> {
        let logins = self.logins.clone();
        tokio::task::spawn_blocking(move || logins.flush()).await??;
        Ok(())
    }

    /// Takes one record read of `account` ([`read_limit`]: 429 beyond the rate).
    pub(crate) fn spend_read(&self, account: &crate::app::Account) -> ApiResult<()> {
        self.reads.spend(&account.id, self.now_ms())
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

/// The whole service: API, health check, UI, security headers, Host check, body limit and
/// timeout, request log.
pub fn router(state: AppState) -> Router {
    let docs = openapi::router(&state.cookie);
    let settings = state.settings.clone();
    let local = state.chain.local.clone();
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
    let mut app = Router::new()
        .merge(crate::web::router())
        .merge(api)
        .layer(middleware::from_fn_with_state(
            settings.limits,
            server::read_body_in_time,
        ))
        // Before the body is read.
        .layer(middleware::from_fn_with_state(
            settings.clone(),
            client::check_host,
        ))
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
        .layer(middleware::from_fn(same_origin_writes));
    if settings.secure_cookie {
        app = app.layer(header_layer(header::STRICT_TRANSPORT_SECURITY, HSTS));
    }
    app.layer(middleware::from_fn_with_state(local, log_request))
}

pub use server::serve;

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
/// carry passwords, codes, tokens or medical data. Counts the request in the local validator's
/// telemetry by the same route template (never the raw path: the labels stay few).
async fn log_request(
    axum::extract::State(local): axum::extract::State<NodeHandle>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "(static or unmatched)".to_string());
    let started = Instant::now();
    let res = next.run(req).await;
    local
        .shared()
        .telemetry()
        .http_request(&route, res.status().as_u16());
    tracing::info!(
        target: "medchain::http",
        %method,
        route,
        status = res.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
    );
    res
}
