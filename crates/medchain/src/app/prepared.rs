//! Envelopes waiting for a device signature (docs/SECURITY.md, issue 9, §5.0 "How a browser
//! signs"): the node builds the header and body of an action, the page checks and signs the
//! signing bytes, and `POST /api/sign/{id}` brings the signature back. An envelope is bound to
//! the login that asked for it and lives 10 minutes.

use borsh::BorshDeserialize;
use ledger::TxHeader;
use rand::RngCore;
use rand::rngs::OsRng;
use rusqlite::{OptionalExtension, params};

use super::db::Cached;
use super::{AppDb, AppError, from_sql_ms, to_sql_ms};

/// How long a prepared envelope waits for its signature.
pub const PREPARED_TTL_MS: u64 = 10 * 60 * 1000;

/// Unsigned envelopes one login may hold at once (docs/SECURITY.md §5.3): each sealed one
/// cost a `keys.db` row and an fsync at the key service, which serves seals before peers.
pub const MAX_PREPARED_PER_ACCOUNT: usize = 8;

/// An envelope waiting for a signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    pub id: String,
    /// The login that asked for it: only its session may sign it.
    pub account: String,
    /// What to do once signed (a flow's name).
    pub action: String,
    pub header: TxHeader,
    pub body: Vec<u8>,
    pub expires_ms: u64,
}

impl AppDb {
    /// Reserves a slot for an envelope of `account` (to do `action`), before anything is
    /// sealed for it: `None` when the login already holds [`MAX_PREPARED_PER_ACCOUNT`] live
    /// ones. Counted and reserved in one write, so concurrent requests cannot pass together.
    /// [`AppDb::fill_prepared`] then keeps the header and body; until then the slot is empty.
    pub fn reserve_prepared(
        &self,
        account: &str,
        action: &str,
        now_ms: u64,
    ) -> Result<Option<String>, AppError> {
        let mut raw = [0u8; 16];
        OsRng.fill_bytes(&mut raw);
        let id = hex::encode(raw);
        self.db.write(|tx| {
            tx.exec(
                "DELETE FROM prepared WHERE expires_ms <= ?1",
                [to_sql_ms(now_ms)],
            )?;
            let held: i64 = tx.row(
                "SELECT COUNT(*) FROM prepared WHERE account = ?1",
                [account],
                |r| r.get(0),
            )?;
            if held as usize >= MAX_PREPARED_PER_ACCOUNT {
                return Ok::<_, AppError>(None);
            }
            tx.exec(
                "INSERT INTO prepared(id, account, action, header, body, expires_ms)
                 VALUES (?1, ?2, ?3, x'', x'', ?4)",
                params![
                    id,
                    account,
                    action,
                    to_sql_ms(now_ms.saturating_add(PREPARED_TTL_MS))
                ],
            )?;
            Ok(Some(id.clone()))
        })
    }

    /// Keeps `header` and `body` in the slot `id` reserved by [`AppDb::reserve_prepared`],
    /// until signed (or its 10 minutes end).
    pub fn fill_prepared(&self, id: &str, header: &TxHeader, body: &[u8]) -> Result<(), AppError> {
        let header = borsh::to_vec(header)
            .map_err(|e| AppError::Storage(format!("cannot encode a header: {e}")))?;
        self.db.write(|tx| {
            tx.exec(
                "UPDATE prepared SET header = ?2, body = ?3 WHERE id = ?1",
                params![id, header, body],
            )?;
            Ok::<_, AppError>(())
        })
    }

    /// Keeps `header` and `body` for `account` until signed (or 10 minutes); returns its id,
    /// or `None` when the login holds [`MAX_PREPARED_PER_ACCOUNT`] envelopes already.
    pub fn prepare(
        &self,
        account: &str,
        action: &str,
        header: &TxHeader,
        body: &[u8],
        now_ms: u64,
    ) -> Result<Option<String>, AppError> {
        let Some(id) = self.reserve_prepared(account, action, now_ms)? else {
            return Ok(None);
        };
        self.fill_prepared(&id, header, body)?;
        Ok(Some(id))
    }

    /// The live envelope `id` of `account`; another login's, or an expired one, is `None`.
    pub fn prepared(
        &self,
        id: &str,
        account: &str,
        now_ms: u64,
    ) -> Result<Option<Prepared>, AppError> {
        let row = self.db.read(|c| {
            Ok(c.row(
                "SELECT action, header, body, expires_ms FROM prepared
                 WHERE id = ?1 AND account = ?2 AND expires_ms > ?3",
                params![id, account, to_sql_ms(now_ms)],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        from_sql_ms(r.get(3)?),
                    ))
                },
            )
            .optional()?)
        })?;
        let Some((action, header, body, expires_ms)) = row else {
            return Ok(None);
        };
        if header.is_empty() {
            // Reserved, not filled yet (or its sealing failed).
            return Ok(None);
        }
        let header = TxHeader::try_from_slice(&header)
            .map_err(|e| AppError::Storage(format!("a prepared header does not decode: {e}")))?;
        Ok(Some(Prepared {
            id: id.to_string(),
            account: account.to_string(),
            action,
            header,
            body,
            expires_ms,
        }))
    }

    /// Forgets envelope `id` (signed and submitted, or abandoned).
    pub fn drop_prepared(&self, id: &str) -> Result<(), AppError> {
        self.db.write(|tx| {
            tx.exec("DELETE FROM prepared WHERE id = ?1", [id])?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_is_kept_for_its_login_for_ten_minutes() {
        let dir = tempfile::tempdir().unwrap();
        let app = crate::app::test_db(&dir.path().join("app.db"));
        app.seed_demo(0).unwrap();
        let header = crate::app::new_header(
            ledger::Meta::Revoke(ledger::tx::Revoke {
                patient: [1; 16],
                target: [2; 32],
            }),
            5,
            99,
        );
        let id = app
            .prepare("p001", "revoke", &header, &[1, 2], 1_000)
            .unwrap()
            .unwrap();
        let got = app.prepared(&id, "p001", 2_000).unwrap().unwrap();
        assert_eq!(got.header, header);
        assert_eq!(got.body, vec![1, 2]);
        assert_eq!(got.action, "revoke");
        assert!(app.prepared(&id, "p002", 2_000).unwrap().is_none());
        assert!(
            app.prepared(&id, "p001", 1_000 + PREPARED_TTL_MS)
                .unwrap()
                .is_none()
        );
        app.drop_prepared(&id).unwrap();
        assert!(app.prepared(&id, "p001", 2_000).unwrap().is_none());
    }

    #[test]
    fn a_login_holds_at_most_eight_unsigned_envelopes() {
        let dir = tempfile::tempdir().unwrap();
        let app = crate::app::test_db(&dir.path().join("app.db"));
        app.seed_demo(0).unwrap();
        let mut slots = Vec::new();
        while let Some(id) = app.reserve_prepared("d001", "add_record", 1_000).unwrap() {
            slots.push(id);
            assert!(slots.len() <= MAX_PREPARED_PER_ACCOUNT);
        }
        assert_eq!(slots.len(), MAX_PREPARED_PER_ACCOUNT);
        assert!(
            app.prepared(&slots[0], "d001", 1_000).unwrap().is_none(),
            "empty slot"
        );
        assert!(
            app.reserve_prepared("d002", "add_record", 1_000)
                .unwrap()
                .is_some()
        );
        app.drop_prepared(&slots[0]).unwrap();
        assert!(
            app.reserve_prepared("d001", "add_record", 1_000)
                .unwrap()
                .is_some()
        );
        let later = 1_000 + PREPARED_TTL_MS;
        assert!(
            app.reserve_prepared("d001", "add_record", later)
                .unwrap()
                .is_some()
        );
    }
}
