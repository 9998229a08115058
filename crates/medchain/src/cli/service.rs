//! What `serve` and `node` share: logging, the application store, the HTTP server, and
//! stopping cleanly on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use medchain::app::AppDb;
use medchain::http::{AppState, Chain, Clock, Settings};

/// Logs to stderr; `RUST_LOG` refines it (default: info). Never logs request bodies.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Opens the hospital's application store; with `demo`, creates the seed's sample accounts
/// that are missing and says so loudly.
pub fn open_app(path: &Path, demo: bool) -> anyhow::Result<Arc<AppDb>> {
    let app = AppDb::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    if demo {
        let created = app
            .seed_demo(medchain::app::now_ms())
            .context("cannot create the demo accounts")?;
        if !created.is_empty() {
            eprintln!();
            eprintln!(
                "*** DEMO MODE: created the seed's sample accounts {} ***",
                created.join(", ")
            );
            eprintln!(
                "*** with their well-known passwords. Never use --demo with real patients. ***"
            );
            eprintln!();
        }
    }
    Ok(Arc::new(app))
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

/// Binds `addr` and serves the API and web UI until asked to stop.
pub async fn serve_http(addr: SocketAddr, app: Arc<AppDb>, chain: Chain) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} (is another medchain running? try --addr)")
    })?;
    let state = AppState::new(app, chain, Settings::default(), Clock::System);
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
