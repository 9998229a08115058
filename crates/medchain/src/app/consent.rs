//! The local half of consent: the 6-digit codes of in-person write grants, and the
//! reservations of grants by records pending at this hospital. The grants themselves are on
//! chain, where the rules decide every use (docs/SECURITY.md, issue 9, §5.2 and §5.4).
//!
//! A code is drawn from the OS CSPRNG once its grant is applied on chain, shown once (on the
//! doctor's screen, in person), and stored only as `HMAC-SHA256(server secret, grant id ||
//! code)`: it selects a grant of this (patient, doctor) pair and never leaves this hospital. A
//! wrong code counts against every live code of the pair; after `max_attempts` (5) the pair's
//! codes are locked. A code is valid as long as its grant (5 minutes from the grant's block).
//!
//! A record pending here reserves its grant (`grant_uses`, one row per grant: the insert that
//! succeeds decides which of two concurrent records may use it); the reservation ends when the
//! record is applied (the chain then says the grant is used) or rejected, or at once if the
//! record could not be submitted.

use hmac::{Hmac, Mac};
use ledger::{PersonId, TxId};
use rand::Rng;
use rand::rngs::OsRng;
use rusqlite::{OptionalExtension, params};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::db::Cached;
use super::{AppDb, AppError, to_sql_ms};

type HmacSha256 = Hmac<Sha256>;

/// Why a code or a grant cannot be used. The messages are the seed's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("Invalid OTP")]
    InvalidCode,
    #[error("Consent already used")]
    AlreadyUsed,
    #[error("Expired or invalid consent")]
    ExpiredOrInvalid,
}

/// A code shown once, beside the grant it selects.
pub struct IssuedCode {
    pub grant: TxId,
    pub code: Zeroizing<String>,
    pub expires_ms: u64,
}

impl std::fmt::Debug for IssuedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCode")
            .field("grant", &hex::encode(self.grant))
            .field("code", &"******")
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}

/// How long after its expiry a code is still recognised, so that reuse says "already used"
/// rather than "invalid".
const RECOGNISE_MS: u64 = 24 * 3600 * 1000;

impl AppDb {
    fn mac(&self, grant: &TxId, code: &str) -> [u8; 32] {
        self.keyed_mac(b"medchain/code/v2\0", &[grant, code.as_bytes()])
    }

    /// HMAC-SHA256, under the operator key's [`ledger::master::Purpose::CodeMac`] subkey, of
    /// `label` (one per use, NUL-terminated, so that a MAC of one use is never valid for
    /// another) followed by `parts`: the in-person codes, and the login throttle's device
    /// cookies.
    pub(crate) fn keyed_mac(&self, label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let mut m = <HmacSha256 as Mac>::new_from_slice(self.consent_key.as_ref())
            .expect("HMAC takes any key length");
        m.update(label);
        for part in parts {
            m.update(part);
        }
        m.finalize().into_bytes().into()
    }

    /// Draws the code of the in-person write grant `grant` of `patient` to `doctor`, valid
    /// until `expires_ms` (the grant's own expiry), and keeps only its MAC.
    pub fn issue_code(
        &self,
        grant: &TxId,
        patient: &PersonId,
        doctor: &PersonId,
        expires_ms: u64,
        now_ms: u64,
    ) -> Result<IssuedCode, AppError> {
        let code = Zeroizing::new(format!("{:06}", OsRng.gen_range(0..1_000_000u32)));
        let mac = self.mac(grant, &code);
        self.db.write(|tx| {
            tx.exec(
                "INSERT INTO codes(grant_id, patient, doctor, code_mac, expires_ms, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    &grant[..],
                    &patient[..],
                    &doctor[..],
                    &mac[..],
                    to_sql_ms(expires_ms),
                    to_sql_ms(now_ms)
                ],
            )?;
            Ok::<_, AppError>(())
        })?;
        Ok(IssuedCode {
            grant: *grant,
            code,
            expires_ms,
        })
    }

    /// The grant that `code` selects among `patient`'s codes for `doctor`. A wrong code counts
    /// against every live code of the pair; a pair with 5 wrong codes is locked. Whether the
    /// grant may still be used is the chain's (and [`AppDb::reserve_grant`]'s) to say.
    pub fn grant_of_code(
        &self,
        patient: &PersonId,
        doctor: &PersonId,
        code: &str,
        now_ms: u64,
    ) -> Result<Result<TxId, CodeError>, AppError> {
        let max = self.config.max_attempts;
        let well_formed = code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit());
        // Committed whatever the answer: a wrong code's count must be kept.
        self.db.write(|tx| {
            let mut matched: Option<(TxId, u32, u64)> = None;
            if well_formed {
                let mut st = tx.prepare(
                    "SELECT grant_id, code_mac, tries, expires_ms FROM codes
                     WHERE patient = ?1 AND doctor = ?2 AND expires_ms > ?3
                     ORDER BY created_ms DESC LIMIT 1000",
                )?;
                let rows = st.query_map(
                    params![
                        &patient[..],
                        &doctor[..],
                        to_sql_ms(now_ms.saturating_sub(RECOGNISE_MS))
                    ],
                    |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            r.get::<_, Vec<u8>>(1)?,
                            r.get::<_, u32>(2)?,
                            r.get::<_, i64>(3)?,
                        ))
                    },
                )?;
                for row in rows {
                    let (grant, stored, tries, expires_ms) = row?;
                    let Ok(grant) = TxId::try_from(grant.as_slice()) else {
                        continue;
                    };
                    let mac = self.mac(&grant, code);
                    if bool::from(mac.as_slice().ct_eq(&stored)) && matched.is_none() {
                        matched = Some((grant, tries, super::from_sql_ms(expires_ms)));
                    }
                }
            }
            match matched {
                Some((_, tries, _)) if tries >= max => Ok(Err(CodeError::ExpiredOrInvalid)),
                Some((grant, _, _)) => Ok(Ok(grant)),
                None => {
                    let n = tx.exec(
                        "UPDATE codes SET tries = tries + 1
                         WHERE patient = ?1 AND doctor = ?2 AND expires_ms > ?3 AND tries < ?4",
                        params![&patient[..], &doctor[..], to_sql_ms(now_ms), max],
                    )?;
                    Ok(Err(if n == 0 {
                        CodeError::ExpiredOrInvalid
                    } else {
                        CodeError::InvalidCode
                    }))
                }
            }
        })
    }

    /// Reserves `grant` for the record `record` about to be submitted here. `Ok(false)` if
    /// another record already holds it.
    pub fn reserve_grant(
        &self,
        grant: &TxId,
        record: &TxId,
        now_ms: u64,
    ) -> Result<bool, AppError> {
        self.db.write(|tx| {
            Ok(tx.exec(
                "INSERT OR IGNORE INTO grant_uses(grant_id, tx, created_ms) VALUES (?1, ?2, ?3)",
                params![&grant[..], &record[..], to_sql_ms(now_ms)],
            )? == 1)
        })
    }

    /// The record that holds `grant`, if one does.
    pub fn grant_reservation(&self, grant: &TxId) -> Result<Option<TxId>, AppError> {
        let row: Option<Vec<u8>> = self.db.read(|c| {
            Ok(c.row(
                "SELECT tx FROM grant_uses WHERE grant_id = ?1",
                [&grant[..]],
                |r| r.get(0),
            )
            .optional()?)
        })?;
        Ok(row.and_then(|r| TxId::try_from(r.as_slice()).ok()))
    }

    /// Ends the reservation of `grant` by `record` (applied, rejected, or never submitted).
    /// Returns whether there was one.
    pub fn release_grant(&self, grant: &TxId, record: &TxId) -> Result<bool, AppError> {
        self.db.write(|tx| {
            Ok(tx.exec(
                "DELETE FROM grant_uses WHERE grant_id = ?1 AND tx = ?2",
                params![&grant[..], &record[..]],
            )? == 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::AppConfig;
    use std::sync::Arc;

    fn open_at(path: &std::path::Path) -> AppDb {
        crate::app::test_db(path)
    }

    fn open() -> (tempfile::TempDir, AppDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = open_at(&dir.path().join("app.db"));
        (dir, db)
    }

    fn wrong(code: &str) -> String {
        format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000)
    }

    const T0: u64 = 1_700_000_000_000;
    const P: PersonId = [1; 16];
    const D: PersonId = [2; 16];
    const D2: PersonId = [3; 16];

    fn grant(i: u8) -> TxId {
        [i; 32]
    }

    #[test]
    fn codes_are_six_digits_stored_only_as_mac_and_select_their_grant() {
        let (_dir, db) = open();
        let mut seen = std::collections::HashSet::new();
        for i in 0..50u8 {
            let c = db.issue_code(&grant(i), &P, &D, T0 + 300_000, T0).unwrap();
            assert_eq!(c.code.len(), 6);
            assert!(c.code.bytes().all(|b| b.is_ascii_digit()));
            seen.insert(c.code.to_string());
            let mac: Vec<u8> = db
                .db
                .read(|conn| {
                    Ok(conn.query_row(
                        "SELECT code_mac FROM codes WHERE grant_id = ?1",
                        [&c.grant[..]],
                        |r| r.get(0),
                    )?)
                })
                .unwrap();
            assert_eq!(mac.len(), 32);
            assert_eq!(
                db.grant_of_code(&P, &D, &c.code, T0 + 1).unwrap(),
                Ok(grant(i))
            );
        }
        assert!(seen.len() > 40, "codes should look random");
    }

    #[test]
    fn a_code_is_bound_to_its_patient_and_doctor() {
        let (_dir, db) = open();
        let c = db.issue_code(&grant(1), &P, &D, T0 + 300_000, T0).unwrap();
        assert!(db.grant_of_code(&D2, &D, &c.code, T0).unwrap().is_err());
        assert!(db.grant_of_code(&P, &D2, &c.code, T0).unwrap().is_err());
        assert_eq!(db.grant_of_code(&P, &D, &c.code, T0).unwrap(), Ok(grant(1)));
    }

    #[test]
    fn five_wrong_codes_lock_the_pair_and_four_do_not() {
        let (_dir, db) = open();
        let c = db.issue_code(&grant(1), &P, &D, T0 + 300_000, T0).unwrap();
        let bad = wrong(&c.code);
        for _ in 0..4 {
            assert_eq!(
                db.grant_of_code(&P, &D, &bad, T0).unwrap(),
                Err(CodeError::InvalidCode)
            );
        }
        assert_eq!(db.grant_of_code(&P, &D, &c.code, T0).unwrap(), Ok(grant(1)));
        assert_eq!(
            db.grant_of_code(&P, &D, "12ab", T0).unwrap(),
            Err(CodeError::InvalidCode)
        );
        assert_eq!(
            db.grant_of_code(&P, &D, &c.code, T0).unwrap(),
            Err(CodeError::ExpiredOrInvalid)
        );
        // Another doctor's wrong codes did not count against this pair.
        let other = db.issue_code(&grant(2), &P, &D2, T0 + 300_000, T0).unwrap();
        for _ in 0..10 {
            let _ = db.grant_of_code(&P, &D, &wrong(&other.code), T0);
        }
        assert_eq!(
            db.grant_of_code(&P, &D2, &other.code, T0).unwrap(),
            Ok(grant(2))
        );
    }

    #[test]
    fn a_code_past_its_grant_is_still_recognised_but_wrong_ones_find_nothing_live() {
        let (_dir, db) = open();
        let c = db.issue_code(&grant(1), &P, &D, T0 + 300_000, T0).unwrap();
        // Recognised (the chain then says expired or used).
        assert_eq!(
            db.grant_of_code(&P, &D, &c.code, T0 + 400_000).unwrap(),
            Ok(grant(1))
        );
        assert_eq!(
            db.grant_of_code(&P, &D, &wrong(&c.code), T0 + 400_000)
                .unwrap(),
            Err(CodeError::ExpiredOrInvalid)
        );
    }

    #[test]
    fn one_reservation_per_grant_released_by_its_record_only() {
        let (dir, db) = open();
        let db = Arc::new(db);
        let other = Arc::new(open_at(&dir.path().join("app.db")));
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8u8)
            .map(|i| {
                let db = if i % 2 == 0 {
                    db.clone()
                } else {
                    other.clone()
                };
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    db.reserve_grant(&grant(1), &[i; 32], T0).unwrap()
                })
            })
            .collect();
        let wins: Vec<bool> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
        let holder = db.grant_reservation(&grant(1)).unwrap().unwrap();
        assert!(!db.release_grant(&grant(1), &[99; 32]).unwrap());
        assert!(db.release_grant(&grant(1), &holder).unwrap());
        assert!(db.grant_reservation(&grant(1)).unwrap().is_none());
        assert!(db.reserve_grant(&grant(1), &[50; 32], T0).unwrap());
    }

    /// The code secret is the operator key's: the same across restarts, another operator
    /// key's elsewhere, and never in `app.db` (there is no copy to find beside the codes).
    #[test]
    fn codes_and_secret_survive_restart_and_differ_between_stores() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let (code, key) = {
            let db = open_at(&path);
            let c = db.issue_code(&grant(1), &P, &D, T0 + 300_000, T0).unwrap();
            for _ in 0..3 {
                let _ = db.grant_of_code(&P, &D, &wrong(&c.code), T0);
            }
            (c.code.to_string(), *db.consent_key)
        };
        let db = open_at(&path);
        assert_eq!(*db.consent_key, key, "the secret is kept");
        // Two more wrong codes lock the pair: the three before the restart counted.
        for _ in 0..2 {
            let _ = db.grant_of_code(&P, &D, &wrong(&code), T0);
        }
        assert_eq!(
            db.grant_of_code(&P, &D, &code, T0).unwrap(),
            Err(CodeError::ExpiredOrInvalid)
        );
        let other = tempfile::tempdir().unwrap();
        let b = AppDb::open_with(
            &other.path().join("app.db"),
            AppConfig::fast_hashing_for_tests(),
            &crate::app::test_key(2),
        )
        .unwrap();
        assert_ne!(*b.consent_key, key);
        assert_ne!(db.mac(&grant(1), "123456"), b.mac(&grant(1), "123456"));
    }
}
