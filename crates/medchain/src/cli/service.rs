//! What `serve` and `node` share: logging, the application store, the HTTP server, and
//! stopping cleanly on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use medchain::app::custody::CUSTODY_KEY_FILE;
use medchain::app::flows::Flows;
use medchain::app::{AppDb, Clock, Custody};
use medchain::http::{AppState, Chain, Settings};
use node::NodeHandle;

/// Logs to stderr; `RUST_LOG` refines it (default: info). Never logs request bodies.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Opens the hospital's application store (`DIR/app.db`) and its custody (`DIR/custody.key`)
/// in the validator's folder `dir`.
pub fn open_app(dir: &Path) -> anyhow::Result<(Arc<AppDb>, Arc<Custody>)> {
    let path = dir.join("app.db");
    let app = AppDb::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let custody = Custody::open(&dir.join(CUSTODY_KEY_FILE), &app)
        .context("cannot open the custody of this hospital's people")?;
    Ok((Arc::new(app), Arc::new(custody)))
}

/// The hospital's workflows over `node`: binds the store to the chain, enrolls what is
/// missing (with `demo`, the seed's sample people, linked to every other validator when
/// `link_demo`), waits a little for those steps to apply, and keeps draining the outbox.
pub async fn start_flows(
    app: Arc<AppDb>,
    custody: Arc<Custody>,
    node: NodeHandle,
    clock: Clock,
    demo: bool,
    link_demo: bool,
) -> anyhow::Result<Arc<Flows>> {
    let flows = Arc::new(Flows::new(app, custody, node, clock));
    let report = flows
        .start(demo, link_demo)
        .await
        .context("cannot prepare this hospital's identities")?;
    if report.reset {
        tracing::warn!(
            "app.db belonged to another chain: its logins are enrolled again on this one"
        );
    }
    if !report.demo.is_empty() {
        eprintln!();
        eprintln!(
            "*** DEMO MODE: created the seed's sample accounts {} ***",
            report.demo.join(", ")
        );
        eprintln!(
            "*** with their well-known passwords and public person ids. Never use --demo with real patients. ***"
        );
        eprintln!();
    }
    if !report.enrolled.is_empty() {
        tracing::info!(logins = %report.enrolled.join(", "), "enrolling logins on chain");
    }
    match flows.settle_outbox(Duration::from_secs(10)).await {
        Ok(true) => {}
        Ok(false) => tracing::info!("some enrollments are still waiting for their block"),
        Err(e) => tracing::warn!(error = %e, "the outbox could not be drained yet"),
    }
    tokio::spawn(flows.clone().run_outbox());
    Ok(flows)
}

/// Resolves when the process is asked to stop (Ctrl-C, or SIGTERM from a service manager).
pub async fn stop_requested() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("stopping");
}

/// Binds `addr` and serves the API and web UI, going by `clock` (the validators'), until asked
/// to stop.
pub async fn serve_http(
    addr: SocketAddr,
    flows: Arc<Flows>,
    chain: Chain,
    clock: Clock,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} (is another medchain running? try --addr)")
    })?;
    let state = AppState::new(flows, chain, Settings::default(), clock);
    medchain::http::serve(listener, state, stop_requested())
        .await
        .context("the HTTP server failed")
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
