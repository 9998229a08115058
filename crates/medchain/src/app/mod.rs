//! Application-local state of one hospital, kept in `app.db`: logins (each mapped to a person
//! on chain), sessions, the custodial keys it holds for its home people, the outbox of chain
//! steps queued by commands, envelopes waiting for a device signature, in-person write codes
//! and grant reservations; and [`flows`], the workflows that pair each local step with its
//! transaction (docs/SECURITY.md, issue 9, §8).
//!
//! Every function that depends on time takes `now_ms` (milliseconds since the Unix epoch) so
//! that tests control the clock. Every function may block (SQLite, Argon2id): async callers run
//! them in `tokio::task::spawn_blocking`.

mod accounts;
mod clock;
mod consent;
pub mod custody;
mod db;
mod enroll;
pub mod flows;
mod outbox;
mod prepared;
mod sessions;
mod throttle;

use std::path::Path;

use ledger::master::{MasterKey, Purpose};
use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

pub use accounts::{
    Account, DEMO_ACCOUNTS, DemoAccount, NewAccount, PersonOf, Role, read_password,
    validate_account_id, validate_department, validate_name, validate_password,
};
pub use clock::Clock;
pub use consent::{CodeError, IssuedCode};
pub use custody::Custody;
pub use enroll::{
    DEMO_HOME, Enroller, GENESIS_KEY, Here, SignAsValidator, ask_code, demo_nonce, demo_person,
};
pub use outbox::{OutboxRow, OutboxState};
pub use prepared::{PREPARED_TTL_MS, Prepared};
pub use sessions::{Session, SessionToken};
pub use throttle::{CountKey, CountKind, LoginCount};

/// What went wrong in the application store. The HTTP layer maps these to status codes and
/// never shows the `Storage`/`Db` text to a client.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("account {0} already exists")]
    AccountExists(String),
    #[error("not found")]
    NotFound,
    #[error("password hashing failed")]
    Hash,
}

impl AppError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// Tunables of the application store.
#[derive(Clone, Debug)]
pub struct AppConfig {
    /// Argon2id parameters for new password hashes (verification reads them from the hash).
    pub argon2: argon2::Params,
    /// A session ends after this long without a request.
    pub session_idle_ms: u64,
    /// A session ends this long after login, whatever its use.
    pub session_absolute_ms: u64,
    /// A pair's in-person codes are locked after this many wrong codes.
    pub max_attempts: u32,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            // OWASP's recommended Argon2id minimum: 19 MiB, 2 passes, 1 lane.
            argon2: argon2::Params::new(19 * 1024, 2, 1, None).expect("valid argon2 params"),
            session_idle_ms: 12 * 3600 * 1000,
            session_absolute_ms: 7 * 24 * 3600 * 1000,
            max_attempts: 5,
        }
    }
}

impl AppConfig {
    /// Same rules, but cheap Argon2id parameters: for tests only, where hundreds of logins run.
    pub fn fast_hashing_for_tests() -> Self {
        Self {
            argon2: argon2::Params::new(256, 1, 1, None).expect("valid argon2 params"),
            ..Self::default()
        }
    }
}

/// The application store of one hospital. Cheap to share behind an `Arc`; all methods take
/// `&self` and are safe to call from many threads.
pub struct AppDb {
    db: db::Db,
    config: AppConfig,
    /// The HMAC key of the in-person codes and the device cookies (each MAC with its own
    /// label: [`AppDb::keyed_mac`]): the operator key's [`Purpose::CodeMac`] subkey, never
    /// stored (the codes' MACs are in `app.db`; their key is not beside them).
    consent_key: Zeroizing<[u8; 32]>,
    /// The memories Argon2id runs in (19 MiB each), kept for reuse: at most
    /// [`MAX_CONCURRENT_HASHES`], so that a burst of sign-ins (or of wrong passwords) costs
    /// time, not memory.
    hashing: ledger::pool::Pool<Vec<argon2::Block>>,
}

/// The most Argon2id hashes or verifications an application store runs at once: one a core
/// keeps both cores busy; more would only add their 19 MiB each.
pub const MAX_CONCURRENT_HASHES: usize = 2;

impl AppDb {
    /// Opens `path` with the default configuration; its secrets derive from `operator_key`.
    pub fn open(path: &Path, operator_key: &MasterKey) -> Result<Self, AppError> {
        Self::open_with(path, AppConfig::default(), operator_key)
    }

    /// Opens (creating on first start) `path`, 0600, with `secure_delete` on; the code HMAC key
    /// is derived from `operator_key` (docs/SECURITY.md, "Confidential records", §3.3).
    pub fn open_with(
        path: &Path,
        config: AppConfig,
        operator_key: &MasterKey,
    ) -> Result<Self, AppError> {
        Ok(Self {
            db: db::Db::open(path)?,
            config,
            consent_key: operator_key.subkey(Purpose::CodeMac),
            hashing: ledger::pool::Pool::new(MAX_CONCURRENT_HASHES),
        })
    }

    pub fn config(&self) -> &AppConfig {
        &self.config
    }
}

/// A fixed operator key `[n; 32]` for unit tests.
#[cfg(test)]
pub(crate) fn test_key(n: u8) -> MasterKey {
    MasterKey::from_bytes(Zeroizing::new([n; 32]))
}

/// The application store at `path` for unit tests: cheap password hashing, operator key
/// [`test_key`]`(1)`.
#[cfg(test)]
pub(crate) fn test_db(path: &Path) -> AppDb {
    AppDb::open_with(path, AppConfig::fast_hashing_for_tests(), &test_key(1)).expect("app.db")
}

/// A new header for `meta`, stamped `now_ms`, valid until `not_after_ms`, with a fresh random
/// nonce (two identical actions are two transactions). The signer and body hash are set when
/// it is signed.
pub fn new_header(meta: ledger::Meta, now_ms: u64, not_after_ms: u64) -> ledger::TxHeader {
    let mut nonce = [0u8; 16];
    OsRng.fill_bytes(&mut nonce);
    ledger::TxHeader {
        meta,
        signer: ledger::Signer::Validator { index: 0 },
        created_ms: now_ms,
        not_after_ms,
        nonce,
        body_hash: [0; 32],
    }
}

/// Milliseconds since the Unix epoch, for callers that use the real clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn to_sql_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

pub(crate) fn from_sql_ms(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}
