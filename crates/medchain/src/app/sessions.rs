//! Login sessions: a random 32-byte token given to the client (cookie or bearer), of which only
//! the SHA-256 is stored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use rand::rngs::OsRng;
use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::accounts::{ACCOUNT_COLUMNS, account_from_row};
use super::db::Cached;
use super::{Account, AppDb, AppError, from_sql_ms, to_sql_ms};

/// A session token as handed to the client: 43 characters of base64url.
pub struct SessionToken(Zeroizing<String>);

impl SessionToken {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(..)")
    }
}

/// A live session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub account: Account,
    pub expires_ms: u64,
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Skip the write that extends an idle session when the last one is this recent.
const TOUCH_GRANULARITY_MS: u64 = 60_000;

impl AppDb {
    /// Starts a session for `account`.
    pub fn create_session(
        &self,
        account: &Account,
        now_ms: u64,
    ) -> Result<(SessionToken, Session), AppError> {
        let mut raw = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(raw.as_mut());
        let token = Zeroizing::new(URL_SAFE_NO_PAD.encode(raw.as_ref()));
        let expires_ms = now_ms.saturating_add(self.config.session_idle_ms);
        let hash = token_hash(&token);
        self.db.write(|tx| {
            // Opportunistic clean-up of ended sessions.
            tx.exec(
                "DELETE FROM sessions WHERE expires_ms <= ?1 OR created_ms < ?2",
                params![
                    to_sql_ms(now_ms),
                    to_sql_ms(now_ms.saturating_sub(self.config.session_absolute_ms))
                ],
            )?;
            tx.exec(
                "INSERT INTO sessions(token_hash, account_id, created_ms, last_seen_ms, expires_ms)
                 VALUES (?1, ?2, ?3, ?3, ?4)",
                params![
                    &hash[..],
                    account.id,
                    to_sql_ms(now_ms),
                    to_sql_ms(expires_ms)
                ],
            )?;
            Ok::<_, AppError>(())
        })?;
        Ok((
            SessionToken(token),
            Session {
                account: account.clone(),
                expires_ms,
            },
        ))
    }

    /// The live session of `token`, extending its idle expiry; `None` if unknown or ended.
    pub fn session(&self, token: &str, now_ms: u64) -> Result<Option<Session>, AppError> {
        if token.is_empty() || token.len() > 128 {
            return Ok(None);
        }
        let hash = token_hash(token);
        let absolute_ms = self.config.session_absolute_ms;
        let found = self.db.read(|conn| {
            Ok(conn
                .row(
                    &format!(
                        "SELECT {ACCOUNT_COLUMNS}, s.created_ms, s.last_seen_ms, s.expires_ms
                         FROM sessions s JOIN accounts a ON a.id = s.account_id
                         WHERE s.token_hash = ?1"
                    ),
                    [&hash[..]],
                    |r| {
                        Ok((
                            account_from_row(r, 0)?,
                            from_sql_ms(r.get(6)?),
                            from_sql_ms(r.get(7)?),
                            from_sql_ms(r.get(8)?),
                        ))
                    },
                )
                .optional()?)
        })?;
        let Some((account, created_ms, last_seen_ms, expires_ms)) = found else {
            return Ok(None);
        };
        let Some(account) = account else {
            return Ok(None);
        };
        let hard_end = created_ms.saturating_add(absolute_ms);
        if now_ms >= expires_ms || now_ms >= hard_end {
            return Ok(None);
        }
        let mut expires_ms = expires_ms;
        if now_ms.saturating_sub(last_seen_ms) >= TOUCH_GRANULARITY_MS {
            expires_ms = now_ms
                .saturating_add(self.config.session_idle_ms)
                .min(hard_end);
            self.db.write(|tx| {
                tx.exec(
                    "UPDATE sessions SET last_seen_ms = ?2, expires_ms = ?3 WHERE token_hash = ?1",
                    params![&hash[..], to_sql_ms(now_ms), to_sql_ms(expires_ms)],
                )?;
                Ok::<_, AppError>(())
            })?;
        }
        Ok(Some(Session {
            account,
            expires_ms,
        }))
    }

    /// Ends the session of `token`; returns whether there was one.
    pub fn logout(&self, token: &str) -> Result<bool, AppError> {
        let hash = token_hash(token);
        self.db
            .write(|tx| Ok(tx.exec("DELETE FROM sessions WHERE token_hash = ?1", [&hash[..]])? > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, AppDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::app::test_db(&dir.path().join("app.db"));
        db.seed_demo(0).unwrap();
        (dir, db)
    }

    const HOUR: u64 = 3600 * 1000;

    #[test]
    fn token_is_random_and_only_its_hash_is_stored() {
        let (_dir, db) = open();
        let acc = db.account("d001").unwrap().unwrap();
        let (t1, s) = db.create_session(&acc, 1000).unwrap();
        let (t2, _) = db.create_session(&acc, 1000).unwrap();
        assert_ne!(t1.as_str(), t2.as_str());
        assert_eq!(t1.as_str().len(), 43);
        assert_eq!(s.account, acc);
        let stored: Vec<Vec<u8>> = db
            .db
            .read(|c| {
                let mut st = c.prepare("SELECT token_hash FROM sessions")?;
                let rows = st.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .unwrap();
        assert_eq!(stored.len(), 2);
        for h in stored {
            assert_eq!(h.len(), 32);
            assert_ne!(h, t1.as_str().as_bytes());
        }
        let got = db.session(t1.as_str(), 2000).unwrap().unwrap();
        assert_eq!(got.account.department.as_deref(), Some("Cardiology"));
    }

    #[test]
    fn idle_expiry_and_touch() {
        let (_dir, db) = open();
        let acc = db.account("p001").unwrap().unwrap();
        let (t, s) = db.create_session(&acc, 0).unwrap();
        assert_eq!(s.expires_ms, 12 * HOUR);
        // Used after 11 h: extended to 23 h.
        let s = db.session(t.as_str(), 11 * HOUR).unwrap().unwrap();
        assert_eq!(s.expires_ms, 23 * HOUR);
        assert!(db.session(t.as_str(), 22 * HOUR).unwrap().is_some());
        // Idle for 12 h: gone.
        assert!(db.session(t.as_str(), 34 * HOUR + 1).unwrap().is_none());
    }

    #[test]
    fn absolute_expiry() {
        let (_dir, db) = open();
        let acc = db.account("p001").unwrap().unwrap();
        let (t, _) = db.create_session(&acc, 0).unwrap();
        let mut now = 0;
        while now + 10 * HOUR < 7 * 24 * HOUR {
            now += 10 * HOUR;
            assert!(db.session(t.as_str(), now).unwrap().is_some(), "at {now}");
        }
        assert!(db.session(t.as_str(), 7 * 24 * HOUR).unwrap().is_none());
    }

    #[test]
    fn logout_ends_only_that_session() {
        let (_dir, db) = open();
        let acc = db.account("p001").unwrap().unwrap();
        let (t1, _) = db.create_session(&acc, 0).unwrap();
        let (t2, _) = db.create_session(&acc, 0).unwrap();
        assert!(db.logout(t1.as_str()).unwrap());
        assert!(!db.logout(t1.as_str()).unwrap());
        assert!(db.session(t1.as_str(), 1).unwrap().is_none());
        assert!(db.session(t2.as_str(), 1).unwrap().is_some());
        assert!(db.session("garbage", 1).unwrap().is_none());
        assert!(db.session("", 1).unwrap().is_none());
    }

    #[test]
    fn sessions_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let token = {
            let db = crate::app::test_db(&path);
            db.seed_demo(0).unwrap();
            let acc = db.account("d002").unwrap().unwrap();
            db.create_session(&acc, 0).unwrap().0
        };
        let db = crate::app::test_db(&path);
        let s = db.session(token.as_str(), 5).unwrap().unwrap();
        assert_eq!(s.account.id, "d002");
    }
}
