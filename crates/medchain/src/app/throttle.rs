//! The login throttle's memory in `app.db`: its counts (wrong passwords per (login id, client
//! address), per client address, per login id, per (patient, doctor's desk), per (login id,
//! device), and the addresses each login id signed in from), written in groups by the HTTP
//! layer's throttle and read back at start, so that a restart does not hand an attacker fresh
//! attempts.

use rusqlite::params;

use super::{AppDb, AppError, from_sql_ms, to_sql_ms};

/// What a [`LoginCount`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CountKind {
    /// Wrong passwords of one login id from one client.
    Pair,
    /// Wrong passwords of a client's pairs that were pushed out of a full table.
    Client,
    /// Wrong passwords of one login id from clients it never signed in from.
    Account,
    /// A client the login id signed in from (no failures: `last_ms` is the sign-in).
    Known,
    /// Wrong passwords of one patient typed at one doctor's desk (in-person consent): `client`
    /// is the doctor's login id.
    Desk,
    /// Wrong passwords of one login id from one device (its device cookie): `client` is the
    /// device's id.
    Device,
}

impl CountKind {
    fn as_str(self) -> &'static str {
        match self {
            CountKind::Pair => "pair",
            CountKind::Client => "client",
            CountKind::Account => "account",
            CountKind::Known => "known",
            CountKind::Desk => "desk",
            CountKind::Device => "device",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            CountKind::Pair,
            CountKind::Client,
            CountKind::Account,
            CountKind::Known,
            CountKind::Desk,
            CountKind::Device,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

/// Which count a row is: its kind, and its login id and client (empty when the kind has none).
pub type CountKey = (CountKind, String, String);

/// One count of the login throttle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginCount {
    pub kind: CountKind,
    /// The login id as typed (it need not exist: unknown ids are throttled alike); empty for
    /// a [`CountKind::Client`] count.
    pub account: String,
    /// The client's address as the throttle keys it (an IPv6 client by its /64); empty for a
    /// [`CountKind::Account`] count; the doctor's login id for a [`CountKind::Desk`] count, the
    /// device's id for a [`CountKind::Device`] count.
    pub client: String,
    pub failures: u32,
    /// No attempt this count slows is judged before this time.
    pub next_ms: u64,
    /// The last attempt (for [`CountKind::Known`], the last sign-in).
    pub last_ms: u64,
}

impl AppDb {
    /// Every count, oldest first.
    pub fn login_counts(&self) -> Result<Vec<LoginCount>, AppError> {
        self.db.read(|conn| {
            let mut statement = conn.prepare(
                "SELECT kind, account, client, failures, next_ms, last_ms FROM login_counts \
                 ORDER BY last_ms",
            )?;
            let rows = statement.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    LoginCount {
                        kind: CountKind::Pair,
                        account: r.get(1)?,
                        client: r.get(2)?,
                        failures: u32::try_from(r.get::<_, i64>(3)?).unwrap_or(u32::MAX),
                        next_ms: from_sql_ms(r.get(4)?),
                        last_ms: from_sql_ms(r.get(5)?),
                    },
                ))
            })?;
            let mut counts = Vec::new();
            for row in rows {
                let (kind, count) = row?;
                // The schema's CHECK admits no other kind.
                if let Some(kind) = CountKind::parse(&kind) {
                    counts.push(LoginCount { kind, ..count });
                }
            }
            Ok(counts)
        })
    }

    /// Writes `changed` counts and deletes `forgotten` ones, in one transaction.
    pub fn save_login_counts(
        &self,
        changed: &[LoginCount],
        forgotten: &[CountKey],
    ) -> Result<(), AppError> {
        self.db.write(|tx| {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO login_counts (kind, account, client, failures, next_ms, last_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (kind, account, client) DO UPDATE SET failures = ?4, next_ms = ?5, \
                 last_ms = ?6",
            )?;
            for row in changed {
                upsert.execute(params![
                    row.kind.as_str(),
                    row.account,
                    row.client,
                    i64::from(row.failures),
                    to_sql_ms(row.next_ms),
                    to_sql_ms(row.last_ms),
                ])?;
            }
            let mut delete = tx.prepare_cached(
                "DELETE FROM login_counts WHERE kind = ?1 AND account = ?2 AND client = ?3",
            )?;
            for (kind, account, client) in forgotten {
                delete.execute(params![kind.as_str(), account, client])?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_written_updated_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::test_db(&dir.path().join("app.db"));
        let row = |kind, account: &str, failures| LoginCount {
            kind,
            account: account.into(),
            client: "192.0.2.7".into(),
            failures,
            next_ms: 2_000,
            last_ms: 1_000 + u64::from(failures),
        };
        db.save_login_counts(
            &[
                row(CountKind::Pair, "p001", 5),
                row(CountKind::Pair, "ghost", 1),
                row(CountKind::Known, "p001", 0),
                row(CountKind::Desk, "p001", 2),
                row(CountKind::Device, "p001", 3),
            ],
            &[],
        )
        .unwrap();
        db.save_login_counts(
            &[row(CountKind::Pair, "p001", 6)],
            &[(CountKind::Pair, "ghost".into(), "192.0.2.7".into())],
        )
        .unwrap();
        assert_eq!(
            db.login_counts().unwrap(),
            vec![
                row(CountKind::Known, "p001", 0),
                row(CountKind::Desk, "p001", 2),
                row(CountKind::Device, "p001", 3),
                row(CountKind::Pair, "p001", 6)
            ]
        );
    }

    /// Counts of the schema before issue 12's red team (pairs only) are kept as pairs.
    #[test]
    fn counts_of_the_older_schema_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            for migration in &super::super::db::MIGRATIONS[..4] {
                conn.execute_batch(migration).unwrap();
            }
            conn.pragma_update(None, "user_version", 4).unwrap();
            conn.execute(
                "INSERT INTO login_failures VALUES ('p001', '192.0.2.7', 5, 2000, 1000)",
                [],
            )
            .unwrap();
        }
        let db = super::super::test_db(&path);
        assert_eq!(
            db.login_counts().unwrap(),
            vec![LoginCount {
                kind: CountKind::Pair,
                account: "p001".into(),
                client: "192.0.2.7".into(),
                failures: 5,
                next_ms: 2_000,
                last_ms: 1_000,
            }]
        );
    }
}
