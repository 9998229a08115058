//! The SQLite file `app.db`: one writer connection behind a mutex, read-only connections for
//! readers, WAL, `synchronous=FULL`, schema migrations numbered by `PRAGMA user_version`.
//!
//! Writes are committed in groups: a write that finds others waiting for the writer leaves its
//! transaction open for them, and the last of a group commits for all (one fsync), each in
//! its own savepoint so that one's error undoes only its own changes. Every caller returns
//! after the commit that holds its write, as before: durable when it returns.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use ledger::pool::Pool;
use rusqlite::{Connection, OpenFlags, Params, Row, TransactionBehavior};

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

/// Statements each connection keeps compiled: every statement of the application store (a
/// request runs a few of them; SQLite's parser cost more than most of them ran).
const STATEMENT_CACHE: usize = 96;

/// `execute` and `query_row` through the connection's statement cache: the same statement is
/// parsed once per connection, not at each call.
pub(super) trait Cached {
    fn exec<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row<T, P: Params, F: FnOnce(&Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P: Params, F: FnOnce(&Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// Runs one statement without results (`BEGIN`, `COMMIT`, a savepoint) from the cache.
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.raw_execute().map(drop)
}

/// The connections to one `app.db`.
pub struct Db {
    path: PathBuf,
    writer: Mutex<Writer>,
    /// Callers of [`Db::write`] waiting for the writer: while there are some, a write leaves
    /// the transaction open for them to join.
    waiting: AtomicUsize,
    /// Notified when a group's commit ends.
    committed: Condvar,
    readers: Pool<Connection>,
}

struct Writer {
    conn: Connection,
    /// The group whose transaction is open, if one is.
    open: Option<Arc<Group>>,
    /// Groups committed (or failed) since the store was opened.
    commits: u64,
}

/// The most writes one commit holds: under a steady stream of writers a group would otherwise
/// never end, and its first write would wait for ever.
const MAX_GROUP_WRITES: usize = 32;

/// The writes of one transaction: how many, and how its commit ended (set under the writer's
/// lock).
#[derive(Default)]
struct Group {
    writes: AtomicUsize,
    outcome: OnceLock<Result<(), String>>,
}

/// The most read-only connections to one `app.db`.
const MAX_READERS: usize = 8;

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
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        migrate(&mut conn)?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Mutex::new(Writer {
                conn,
                open: None,
                commits: 0,
            }),
            waiting: AtomicUsize::new(0),
            committed: Condvar::new(),
            readers: Pool::new(MAX_READERS),
        })
    }

    /// Runs `f` in an immediate write transaction on the single writer connection and returns
    /// once it is committed, if `f` returns `Ok`; an `Err` (or a panic) undoes `f`'s changes
    /// only. The transaction may hold the writes of other callers that ran meanwhile (each in
    /// its own savepoint): one commit, one fsync for all of them.
    pub fn write<T, E>(&self, f: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E>
    where
        E: From<AppError>,
    {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let group = match &writer.open {
            Some(group) => group.clone(),
            None => {
                control(&writer.conn, "BEGIN IMMEDIATE").map_err(AppError::from)?;
                let group = Arc::new(Group::default());
                writer.open = Some(group.clone());
                group
            }
        };
        let ran = Self::in_savepoint(&writer.conn, f);
        let writes = group.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if self.waiting.load(Ordering::SeqCst) == 0 || writes >= MAX_GROUP_WRITES {
            // Nobody to join: commit the group (this write and those that waited on it).
            let committed = control(&writer.conn, "COMMIT").map_err(|e| {
                let _ = writer.conn.execute_batch("ROLLBACK");
                e.to_string()
            });
            let _ = group.outcome.set(committed);
            writer.open = None;
            writer.commits += 1;
            self.committed.notify_all();
        } else {
            // The next caller joins this transaction; the group's last commits it.
            while group.outcome.get().is_none() {
                writer = self
                    .committed
                    .wait(writer)
                    .unwrap_or_else(|p| p.into_inner());
            }
        }
        drop(writer);
        let out = match ran {
            Ok(out) => out,
            Err(panic) => resume_unwind(panic),
        };
        match group.outcome.get() {
            Some(Err(why)) if out.is_ok() => {
                Err(AppError::Storage(format!("commit failed: {why}")).into())
            }
            _ => out,
        }
    }

    /// Runs `f` in a savepoint of the open transaction, released if `f` returns `Ok`, rolled
    /// back otherwise (also if it panics: the panic is returned for the caller to resume once
    /// the group is settled).
    #[allow(clippy::type_complexity)]
    fn in_savepoint<T, E>(
        conn: &Connection,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> std::thread::Result<Result<T, E>>
    where
        E: From<AppError>,
    {
        if conn.is_autocommit() {
            // SQLite rolled the group's transaction back by itself (an I/O error, a full disk):
            // a savepoint now would begin a transaction of its own, committed by its release,
            // while the group's commit fails and this write is told so.
            return Ok(Err(AppError::Storage(
                "the group's transaction was rolled back".into(),
            )
            .into()));
        }
        if let Err(e) = control(conn, "SAVEPOINT write") {
            return Ok(Err(AppError::from(e).into()));
        }
        let ran = catch_unwind(AssertUnwindSafe(|| f(conn)));
        let end = match &ran {
            Ok(Ok(_)) => control(conn, "RELEASE write"),
            _ => conn.execute_batch("ROLLBACK TO write; RELEASE write"),
        };
        match (end, ran) {
            (Ok(()), ran) => ran,
            (Err(e), Ok(_)) => Ok(Err(AppError::from(e).into())),
            (Err(_), Err(panic)) => Err(panic),
        }
    }

    /// Commits since the store was opened (each holding one write or more).
    #[cfg(test)]
    pub fn commits(&self) -> u64 {
        self.writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .commits
    }

    /// Runs `f` on a read-only connection (WAL readers never block the writer): one of at
    /// most [`MAX_READERS`], kept open (a connection opened and closed per read would read
    /// its pages again each time); a caller beyond them waits for one.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, AppError>,
    ) -> Result<T, AppError> {
        let open = || -> Result<Connection, AppError> {
            let c = Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            c.busy_timeout(Duration::from_secs(10))?;
            c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            Ok(c)
        };
        self.readers.with(open, |conn| f(conn))?
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

#[cfg(test)]
mod tests {
    use super::*;

    fn table(dir: &tempfile::TempDir) -> Db {
        let db = Db::open(&dir.path().join("app.db")).unwrap();
        db.write(|c| {
            c.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY)")
                .map_err(AppError::from)
        })
        .unwrap();
        db
    }

    fn rows(path: &Path) -> Vec<i64> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT n FROM t ORDER BY n").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn writes_at_once_share_commits_and_a_failed_one_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(table(&dir));
        let before = db.commits();
        let threads: Vec<_> = (0..24i64)
            .map(|n| {
                let db = db.clone();
                std::thread::spawn(move || {
                    db.write(|c| {
                        c.execute("INSERT INTO t (n) VALUES (?1)", [n])
                            .map_err(AppError::from)?;
                        // Long enough for the others to queue behind this write.
                        std::thread::sleep(Duration::from_millis(2));
                        if n % 4 == 3 {
                            return Err(AppError::invalid("n", "refused"));
                        }
                        Ok(())
                    })
                    .is_ok()
                })
            })
            .collect();
        let answered: Vec<bool> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        // Once a write is answered, another connection (a restart) sees it: durable.
        let kept: Vec<i64> = (0..24).filter(|n| n % 4 != 3).collect();
        assert_eq!(rows(&dir.path().join("app.db")), kept);
        assert_eq!(answered.iter().filter(|ok| **ok).count(), kept.len());
        let commits = db.commits() - before;
        assert!(commits < 24, "{commits} commits for 24 writes");
    }

    /// A write that ends the group's transaction (as SQLite does by itself on an I/O error or a
    /// full disk; here the write rolls back) fails, and so does every write of that group: what
    /// is on disk is exactly what was answered Ok.
    #[test]
    fn a_group_whose_transaction_is_rolled_back_answers_ok_only_for_what_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(table(&dir));
        let threads: Vec<_> = (0..24i64)
            .map(|n| {
                let db = db.clone();
                std::thread::spawn(move || {
                    let answered = db.write(|c| -> Result<(), AppError> {
                        c.execute("INSERT INTO t (n) VALUES (?1)", [n])
                            .map_err(AppError::from)?;
                        std::thread::sleep(Duration::from_millis(2));
                        if n % 6 == 5 {
                            c.execute_batch("ROLLBACK").map_err(AppError::from)?;
                        }
                        Ok(())
                    });
                    (n, answered.is_ok())
                })
            })
            .collect();
        let ok: Vec<i64> = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|(_, ok)| *ok)
            .map(|(n, _)| n)
            .collect();
        let mut ok = ok;
        ok.sort_unstable();
        assert_eq!(rows(&dir.path().join("app.db")), ok);
    }

    #[test]
    fn a_panicking_write_leaves_nothing_and_the_next_commits() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(table(&dir));
        let panicked = {
            let db = db.clone();
            std::thread::spawn(move || {
                db.write(|c| -> Result<(), AppError> {
                    c.execute("INSERT INTO t (n) VALUES (1)", [])?;
                    panic!("the write fails half way")
                })
            })
            .join()
        };
        assert!(panicked.is_err());
        db.write(|c| {
            c.execute("INSERT INTO t (n) VALUES (2)", [])
                .map_err(AppError::from)
        })
        .unwrap();
        assert_eq!(rows(&dir.path().join("app.db")), vec![2]);
    }
}
