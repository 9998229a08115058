//! The SQLite file `app.db`: one writer connection behind a mutex, read-only connections for
//! readers, WAL, `synchronous=FULL`, schema migrations numbered by `PRAGMA user_version`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use super::AppError;

/// Each entry moves the schema from version `i` to `i + 1`. Never edit a shipped entry: append.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: accounts, sessions, consents, and the server's secrets.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );
    CREATE TABLE accounts (
        id            TEXT PRIMARY KEY,
        role          TEXT NOT NULL CHECK (role IN ('patient', 'doctor')),
        department    TEXT,
        password_hash TEXT NOT NULL,
        created_ms    INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        token_hash   BLOB PRIMARY KEY,
        account_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        created_ms   INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        expires_ms   INTEGER NOT NULL
    );
    CREATE INDEX sessions_by_expiry ON sessions(expires_ms);
    CREATE TABLE consents (
        id                 TEXT PRIMARY KEY,
        patient_id         TEXT NOT NULL,
        doctor_id          TEXT NOT NULL,
        department         TEXT NOT NULL,
        purpose            TEXT NOT NULL,
        channel            TEXT NOT NULL CHECK (channel IN ('in_person', 'remote')),
        status             TEXT NOT NULL CHECK (status IN ('requested', 'active', 'denied')),
        code_mac           BLOB,
        requested_ms       INTEGER NOT NULL,
        request_expires_ms INTEGER NOT NULL,
        decided_ms         INTEGER,
        expires_ms         INTEGER,
        attempts           INTEGER NOT NULL DEFAULT 0,
        used               INTEGER NOT NULL DEFAULT 0,
        used_ms            INTEGER,
        used_for           TEXT
    );
    CREATE INDEX consents_by_patient ON consents(patient_id, status);
    CREATE INDEX consents_by_pair ON consents(patient_id, doctor_id, status);
    "#,
    // 2: identities, grants and records on chain (issue 9). A login maps to a person id; the
    // home holds its people's custodial keys (sealed); chain steps queued by commands wait in
    // the outbox as signed bytes; envelopes wait for a device signature in `prepared`. Grants
    // and requests now live on chain: `consents` gives way to the in-person write codes
    // (`codes`, keyed by the grant's id) and the reservations of grants by records pending
    // here (`grant_uses`).
    r#"
    ALTER TABLE accounts ADD COLUMN person BLOB;
    ALTER TABLE accounts ADD COLUMN home INTEGER;
    ALTER TABLE accounts ADD COLUMN nonce BLOB;
    ALTER TABLE accounts ADD COLUMN name TEXT;
    CREATE INDEX accounts_by_person ON accounts(person);
    DROP TABLE consents;
    CREATE TABLE codes (
        grant_id   BLOB PRIMARY KEY,
        patient    BLOB NOT NULL,
        doctor     BLOB NOT NULL,
        code_mac   BLOB NOT NULL,
        tries      INTEGER NOT NULL DEFAULT 0,
        expires_ms INTEGER NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX codes_by_pair ON codes(patient, doctor, expires_ms);
    CREATE TABLE grant_uses (
        grant_id   BLOB PRIMARY KEY,
        tx         BLOB NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE custody (
        public_key    BLOB PRIMARY KEY,
        person        BLOB NOT NULL,
        sealed_secret BLOB NOT NULL,
        created_ms    INTEGER NOT NULL
    );
    CREATE INDEX custody_by_person ON custody(person, created_ms);
    CREATE TABLE outbox (
        id           INTEGER PRIMARY KEY,
        tx_id        BLOB NOT NULL UNIQUE,
        kind         TEXT NOT NULL,
        account      TEXT,
        signed       BLOB NOT NULL,
        after        INTEGER REFERENCES outbox(id),
        state        TEXT NOT NULL CHECK (state IN ('queued', 'submitted', 'done', 'failed')),
        reason       TEXT,
        height       INTEGER,
        created_ms   INTEGER NOT NULL,
        submitted_ms INTEGER
    );
    CREATE INDEX outbox_by_state ON outbox(state, id);
    CREATE TABLE prepared (
        id         TEXT PRIMARY KEY,
        account    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        action     TEXT NOT NULL,
        header     BLOB NOT NULL,
        body       BLOB NOT NULL,
        expires_ms INTEGER NOT NULL
    );
    "#,
    // 3: the in-person codes' HMAC key is derived from the operator key, never stored beside
    // the codes (docs/SECURITY.md, "Confidential records", §3.3); an older copy is deleted
    // (`secure_delete` overwrites its page).
    r#"
    DELETE FROM meta WHERE key = 'consent_hmac_key';
    "#,
    // 4: the login throttle's wrong-password counts per (login id, client address), so that
    // a restart does not give an attacker fresh attempts (issue 12).
    r#"
    CREATE TABLE login_failures (
        account  TEXT NOT NULL,
        client   TEXT NOT NULL,
        failures INTEGER NOT NULL,
        next_ms  INTEGER NOT NULL,
        last_ms  INTEGER NOT NULL,
        PRIMARY KEY (account, client)
    ) WITHOUT ROWID;
    "#,
    // 5: the login throttle keeps more than pairs (issue 12's red team): failures of pairs
    // pushed out of a full table, per client; failures per login id across clients; and the
    // clients each login id signed in from. An empty `account` or `client` is a kind without it.
    r#"
    CREATE TABLE login_counts (
        kind     TEXT NOT NULL CHECK (kind IN ('pair', 'client', 'account', 'known')),
        account  TEXT NOT NULL,
        client   TEXT NOT NULL,
        failures INTEGER NOT NULL,
        next_ms  INTEGER NOT NULL,
        last_ms  INTEGER NOT NULL,
        PRIMARY KEY (kind, account, client)
    ) WITHOUT ROWID;
    INSERT INTO login_counts (kind, account, client, failures, next_ms, last_ms)
        SELECT 'pair', account, client, failures, next_ms, last_ms FROM login_failures;
    DROP TABLE login_failures;
    "#,
    // 6: two more kinds of counts (issue 12's second red team): a patient's wrong passwords at
    // one doctor's desk, and a login id's at one device (its device cookie).
    r#"
    CREATE TABLE login_counts_6 (
        kind     TEXT NOT NULL
                 CHECK (kind IN ('pair', 'client', 'account', 'known', 'desk', 'device')),
        account  TEXT NOT NULL,
        client   TEXT NOT NULL,
        failures INTEGER NOT NULL,
        next_ms  INTEGER NOT NULL,
        last_ms  INTEGER NOT NULL,
        PRIMARY KEY (kind, account, client)
    ) WITHOUT ROWID;
    INSERT INTO login_counts_6 SELECT kind, account, client, failures, next_ms, last_ms
        FROM login_counts;
    DROP TABLE login_counts;
    ALTER TABLE login_counts_6 RENAME TO login_counts;
    "#,
];

/// The connections to one `app.db`.
pub struct Db {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

const MAX_IDLE_READERS: usize = 8;

impl Db {
    /// Opens (creating if needed, 0600: it holds password and session hashes and sealed
    /// custodial keys) the file and brings its schema up to date. Deleted rows are overwritten
    /// (`secure_delete`): a session, code or custodial key that is gone leaves no copy in a
    /// free page.
    pub fn open(path: &Path) -> Result<Self, AppError> {
        ledger::files::prepare_sqlite_file(path).map_err(|e| AppError::Storage(e.to_string()))?;
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(AppError::Storage(format!(
                "journal_mode is {mode}, not WAL"
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// Runs `f` in an immediate write transaction on the single writer connection and commits
    /// when it returns `Ok`.
    pub fn write<T, E>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<AppError>,
    {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(AppError::from)?;
        let out = f(&tx)?;
        tx.commit().map_err(AppError::from)?;
        Ok(out)
    }

    /// Runs `f` on a read-only connection (WAL readers never block the writer).
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, AppError>,
    ) -> Result<T, AppError> {
        let conn = {
            let mut idle = self.readers.lock().unwrap_or_else(|p| p.into_inner());
            idle.pop()
        };
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(Duration::from_secs(10))?;
                c
            }
        };
        let out = f(&conn);
        let mut idle = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        out
    }
}

fn migrate(conn: &mut Connection) -> Result<(), AppError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let version = usize::try_from(version)
        .map_err(|_| AppError::Storage(format!("bad schema version {version}")))?;
    if version > MIGRATIONS.len() {
        return Err(AppError::Storage(format!(
            "app.db has schema version {version}, newer than this binary ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
