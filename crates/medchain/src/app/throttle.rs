//! The login throttle's memory in `app.db`: wrong-password counts per (login id, client
//! address), written in groups by the HTTP layer's throttle and read back at start, so that a
//! restart does not hand an attacker fresh attempts.

use rusqlite::params;

use super::{AppDb, AppError, from_sql_ms, to_sql_ms};

/// One (login id, client) pair's wrong passwords.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureRow {
    /// The login id as typed (it need not exist: unknown ids are throttled alike).
    pub account: String,
    /// The client's address as the throttle keys it (an IPv6 client by its /64).
    pub client: String,
    pub failures: u32,
    /// No attempt of this pair is judged before this time.
    pub next_ms: u64,
    /// The last attempt.
    pub last_ms: u64,
}

impl AppDb {
    /// Every pair's count.
    pub fn login_failures(&self) -> Result<Vec<FailureRow>, AppError> {
        self.db.read(|conn| {
            let mut statement = conn.prepare(
                "SELECT account, client, failures, next_ms, last_ms FROM login_failures \
                 ORDER BY last_ms",
            )?;
            let rows = statement.query_map([], |r| {
                Ok(FailureRow {
                    account: r.get(0)?,
                    client: r.get(1)?,
                    failures: u32::try_from(r.get::<_, i64>(2)?).unwrap_or(u32::MAX),
                    next_ms: from_sql_ms(r.get(3)?),
                    last_ms: from_sql_ms(r.get(4)?),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Writes `changed` pairs and deletes `forgotten` ones, in one transaction.
    pub fn save_login_failures(
        &self,
        changed: &[FailureRow],
        forgotten: &[(String, String)],
    ) -> Result<(), AppError> {
        self.db.write(|tx| {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO login_failures (account, client, failures, next_ms, last_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (account, client) DO UPDATE SET failures = ?3, next_ms = ?4, \
                 last_ms = ?5",
            )?;
            for row in changed {
                upsert.execute(params![
                    row.account,
                    row.client,
                    i64::from(row.failures),
                    to_sql_ms(row.next_ms),
                    to_sql_ms(row.last_ms),
                ])?;
            }
            let mut delete =
                tx.prepare_cached("DELETE FROM login_failures WHERE account = ?1 AND client = ?2")?;
            for (account, client) in forgotten {
                delete.execute(params![account, client])?;
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
        let row = |account: &str, failures| FailureRow {
            account: account.into(),
            client: "192.0.2.7".into(),
            failures,
            next_ms: 2_000,
            last_ms: 1_000 + u64::from(failures),
        };
        db.save_login_failures(&[row("p001", 5), row("ghost", 1)], &[])
            .unwrap();
        db.save_login_failures(&[row("p001", 6)], &[("ghost".into(), "192.0.2.7".into())])
            .unwrap();
        assert_eq!(db.login_failures().unwrap(), vec![row("p001", 6)]);
    }
}
