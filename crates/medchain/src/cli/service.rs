//! What the commands that run or open a validator share: the operator key's arguments,
//! logging, the application store, the HTTP server, and stopping cleanly on Ctrl-C or SIGTERM.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ledger::master::{self, MasterKey};
use medchain::app::flows::Flows;
use medchain::app::{AppDb, Clock, Custody};
use medchain::http::{AppState, Chain, Settings};
use node::NodeHandle;
use zeroize::Zeroizing;

/// The environment variable a passphrase may come from (never a command-line argument, which
/// other users of the machine can read in the process list).
pub const PASSPHRASE_ENV: &str = "MEDCHAIN_PASSPHRASE";

/// How the operator supplies a validator's operator key (docs/SECURITY.md, "Confidential
/// records", §3.3): a key file, a passphrase, or a development network's key directory.
#[derive(Args, Debug, Clone, Default)]
pub struct KeyArgs {
    /// The operator key file: 32 random bytes in hex, owner-only, outside the data directory
    /// and on another volume (or where a secret manager or systemd's LoadCredential= puts it).
    /// Overrides node.toml's key_file.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["passphrase", "key_dir"])]
    pub key_file: Option<PathBuf>,
    /// Derive the operator key from a passphrase (12 characters or more) and the validator's
    /// master.salt: prompted on the terminal, or read from MEDCHAIN_PASSPHRASE.
    #[arg(long, conflicts_with = "key_dir")]
    pub passphrase: bool,
    /// A development network's key directory (made by `serve` and `testnet`, default DIR.keys
    /// beside the data directory), holding <name>.key per validator.
    #[arg(long, value_name = "DIR")]
    pub key_dir: Option<PathBuf>,
}

impl KeyArgs {
    /// The operator key of validator `name`, whose folder is `validator_dir`: from the flags,
    /// else from `configured` (node.toml's key_file), else from `default_key_dir` (a
    /// development network's). A key file is checked strictly (§16.10: refused on the data's
    /// filesystem or with a second hard link); a development key only warns.
    pub fn operator_key(
        &self,
        configured: Option<&Path>,
        default_key_dir: Option<&Path>,
        name: &str,
        validator_dir: &Path,
    ) -> anyhow::Result<MasterKey> {
        if self.passphrase {
            let passphrase = read_passphrase(false)?;
            return Ok(MasterKey::from_passphrase(
                &passphrase,
                &validator_dir.join(master::SALT_FILE),
            )?);
        }
        let (path, strict) = match (&self.key_file, &self.key_dir, configured, default_key_dir) {
            (Some(file), ..) => (file.clone(), true),
            (None, Some(dir), ..) => (master::dev_key_path(dir, name), false),
            (None, None, Some(file), _) => (file.to_path_buf(), true),
            (None, None, None, Some(dir)) => (master::dev_key_path(dir, name), false),
            (None, None, None, None) => anyhow::bail!(
                "no operator key: give --key-file FILE or --passphrase (or key_file in \
                 node.toml; a testnet's nodes take --key-dir DIR.keys)"
            ),
        };
        let (key, warning) = MasterKey::from_key_file(&path, validator_dir, strict)?;
        if let Some(warning) = warning {
            eprintln!("warning: {warning}");
        }
        Ok(key)
    }
}

/// The operator's passphrase: `MEDCHAIN_PASSPHRASE` if set, else prompted on the terminal
/// (twice with `confirm`, when it is being chosen).
pub fn read_passphrase(confirm: bool) -> anyhow::Result<Zeroizing<String>> {
    if let Ok(passphrase) = std::env::var(PASSPHRASE_ENV) {
        return Ok(Zeroizing::new(passphrase));
    }
    anyhow::ensure!(
        std::io::stdin().is_terminal(),
        "--passphrase needs a terminal to prompt on, or {PASSPHRASE_ENV} set"
    );
    let first = Zeroizing::new(rpassword::prompt_password("Operator passphrase: ")?);
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password("Repeat the passphrase: ")?);
        anyhow::ensure!(*first == *again, "the passphrases differ");
    }
    Ok(first)
}

/// The environment variable that carries `--log-format` to the validators a command starts.
pub const LOG_FORMAT_ENV: &str = "MEDCHAIN_LOG_FORMAT";

/// How a process logs ([`init_logging`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people; a committed block is not a line of its own (`RUST_LOG=info` shows them).
    Text,
    /// One JSON object a line, a line per committed block and per view change.
    Json,
}

impl LogFormat {
    fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// The format [`init_logging`] uses, from the command line (once, at start).
pub fn set_log_format(format: LogFormat) {
    let _ = LOG_FORMAT.set(format);
}

/// The format given, for a child validator's command (`MEDCHAIN_LOG_FORMAT`).
pub fn log_format_env() -> (&'static str, &'static str) {
    (
        LOG_FORMAT_ENV,
        LOG_FORMAT.get().copied().unwrap_or(LogFormat::Text).name(),
    )
}

/// Logs to stderr in the format given ([`set_log_format`]); `RUST_LOG` refines what (default:
/// info, and for text without a line per committed block). Never a request body, a secret or
/// medical content: what is logged is ids, counts, heights and times.
pub fn init_logging() {
    init_logging_to(std::io::stderr, true);
}

/// As [`init_logging`], to `writer`, in colour if `ansi` (the bench's own validators log to a
/// file, so that their lines do not cut through its progress bar and table).
pub fn init_logging_to<W>(writer: W, ansi: bool)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let format = LOG_FORMAT.get().copied().unwrap_or(LogFormat::Text);
    let default = match format {
        LogFormat::Text => "info,medchain::block=warn",
        LogFormat::Json => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Opens the hospital's application store (`DIR/app.db`) and its custody in the validator's
/// folder `dir`, their secrets derived from `operator_key`.
pub fn open_app(
    dir: &Path,
    operator_key: &MasterKey,
) -> anyhow::Result<(Arc<AppDb>, Arc<Custody>)> {
    let path = dir.join("app.db");
    let app = AppDb::open(&path, operator_key)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let custody = Custody::open(operator_key, &app)
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
        let accounts = report.demo.join(", ");
        if LOG_FORMAT.get() == Some(&LogFormat::Json) {
            tracing::warn!(
                %accounts,
                "demo mode: the seed's sample accounts, with their well-known passwords and \
                 public person ids; never use --demo with real patients"
            );
        } else {
            eprintln!();
            eprintln!("*** DEMO MODE: created the seed's sample accounts {accounts} ***");
            eprintln!(
                "*** with their well-known passwords and public person ids. Never use --demo with real patients. ***"
            );
            eprintln!();
        }
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

/// Binds `addr` and serves the API and web UI with `settings`, going by `clock` (the
/// validators'), until asked to stop.
pub async fn serve_http(
    addr: SocketAddr,
    settings: Settings,
    flows: Arc<Flows>,
    chain: Chain,
    clock: Clock,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} (is another medchain running? try --addr)")
    })?;
    let state = AppState::new(flows, chain, settings, clock);
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
