//! Consents: one-time 6-digit codes by which a patient lets one doctor add one record or read
//! their records once.
//!
//! A code is drawn from the OS CSPRNG and stored only as `HMAC-SHA256(server secret, id || code)`;
//! it is shown once (to the patient on approval, or on the doctor's screen in person), is valid
//! `consent_ttl_ms` (300 s), is used at most once (one `UPDATE ... WHERE used = 0` decides, so
//! concurrent uses cannot both win), and dies after `max_attempts` (5) wrong codes. A patient
//! may hold many consents at once; none replaces another. What goes on chain is
//! [`consent_hash`], `SHA-256(mac || id)`, which cannot be turned back into the code without the
//! server secret and the id.

use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{AppDb, AppError, from_sql_ms, to_sql_ms};

type HmacSha256 = Hmac<Sha256>;

/// What a consent was used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UseKind {
    AddRecord,
    ReadRecords,
}

impl UseKind {
    fn as_str(self) -> &'static str {
        match self {
            UseKind::AddRecord => "add_record",
            UseKind::ReadRecords => "read_records",
        }
    }
}

/// Where a consent stands at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentState {
    /// A remote request waiting for the patient.
    Requested,
    /// The patient did not answer a remote request in time.
    RequestExpired,
    /// The patient refused.
    Denied,
    /// The code was shown and can be used.
    Active,
    /// The code was used.
    Used,
    /// The code was not used in time.
    Expired,
    /// Too many wrong codes.
    Locked,
}

/// A consent as shown to its patient or doctor (never with its code or MAC).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConsentView {
    pub id: String,
    pub patient_id: String,
    pub doctor_id: String,
    pub department: String,
    pub purpose: String,
    /// `in_person` or `remote`.
    pub channel: String,
    pub state: ConsentState,
    pub requested_ms: u64,
    /// When a remote request stops waiting for an answer.
    pub request_expires_ms: u64,
    pub decided_ms: Option<u64>,
    /// When the code stops being valid (once there is one).
    pub expires_ms: Option<u64>,
    pub used_ms: Option<u64>,
    pub attempts: u32,
    /// Milliseconds left to answer (requested) or to use the code (active); 0 otherwise.
    pub time_left_ms: u64,
}

/// A freshly issued code: shown once, then only its MAC remains.
pub struct IssuedCode {
    pub consent_id: String,
    pub code: Zeroizing<String>,
    pub expires_ms: u64,
    /// What the chain records for this consent (see [`consent_hash`]).
    pub consent_hash: [u8; 32],
}

impl std::fmt::Debug for IssuedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCode")
            .field("consent_id", &self.consent_id)
            .field("code", &"******")
            .field("expires_ms", &self.expires_ms)
            .field("consent_hash", &hex::encode(self.consent_hash))
            .finish()
    }
}

/// A consent that was just used: what the chain transaction needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsedConsent {
    pub consent_id: String,
    pub patient_id: String,
    pub doctor_id: String,
    pub department: String,
    pub purpose: String,
    pub consent_hash: [u8; 32],
}

/// Why a consent operation failed. The first three carry the seed's messages.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    #[error("Invalid OTP")]
    InvalidCode,
    #[error("Consent already used")]
    AlreadyUsed,
    #[error("Expired or invalid consent")]
    ExpiredOrInvalid,
    #[error("No such consent request")]
    NotFound,
    #[error("This consent request is no longer pending")]
    NotPending,
    #[error(transparent)]
    Store(#[from] AppError),
}

impl From<rusqlite::Error> for ConsentError {
    fn from(e: rusqlite::Error) -> Self {
        ConsentError::Store(AppError::Db(e))
    }
}

/// The hash put on chain for a consent: `SHA-256(mac || id)`.
pub fn consent_hash(mac: &[u8], consent_id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(mac);
    h.update(consent_id.as_bytes());
    h.finalize().into()
}

/// Free-text fields of a consent request: 1 to `max` characters, no control characters.
fn check_text(field: &'static str, value: &str, max: usize) -> Result<String, AppError> {
    let t = value.trim();
    if t.is_empty() || t.chars().count() > max {
        return Err(AppError::invalid(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    if t.chars().any(char::is_control) {
        return Err(AppError::invalid(
            field,
            "may not contain control characters",
        ));
    }
    Ok(t.to_string())
}

const COLUMNS: &str = "id, patient_id, doctor_id, department, purpose, channel, status, \
     requested_ms, request_expires_ms, decided_ms, expires_ms, attempts, used, used_ms";

/// How long after its expiry a used or dead consent is still recognised by its code, so that
/// reuse says "already used" rather than "invalid".
const RECOGNISE_MS: u64 = 24 * 3600 * 1000;

impl AppDb {
    fn mac(&self, consent_id: &str, code: &str) -> [u8; 32] {
        let mut m = <HmacSha256 as Mac>::new_from_slice(self.consent_key.as_ref())
            .expect("HMAC takes any key length");
        m.update(b"medchain/consent/v1\0");
        m.update(consent_id.as_bytes());
        m.update(b"\0");
        m.update(code.as_bytes());
        m.finalize().into_bytes().into()
    }

    fn new_code(&self, consent_id: String, now_ms: u64) -> (IssuedCode, [u8; 32]) {
        let code = Zeroizing::new(format!("{:06}", OsRng.gen_range(0..1_000_000u32)));
        let mac = self.mac(&consent_id, &code);
        (
            IssuedCode {
                consent_hash: consent_hash(&mac, &consent_id),
                consent_id,
                code,
                expires_ms: now_ms.saturating_add(self.config.consent_ttl_ms),
            },
            mac,
        )
    }

    fn view(&self, r: &Row<'_>, now_ms: u64) -> rusqlite::Result<ConsentView> {
        let status: String = r.get(6)?;
        let request_expires_ms = from_sql_ms(r.get(8)?);
        let expires_ms: Option<u64> = r.get::<_, Option<i64>>(10)?.map(from_sql_ms);
        let attempts: u32 = r.get(11)?;
        let used: bool = r.get(12)?;
        let (state, time_left_ms) = match status.as_str() {
            "requested" if now_ms < request_expires_ms => {
                (ConsentState::Requested, request_expires_ms - now_ms)
            }
            "requested" => (ConsentState::RequestExpired, 0),
            "denied" => (ConsentState::Denied, 0),
            _ if used => (ConsentState::Used, 0),
            _ if attempts >= self.config.max_attempts => (ConsentState::Locked, 0),
            _ => match expires_ms {
                Some(e) if now_ms < e => (ConsentState::Active, e - now_ms),
                _ => (ConsentState::Expired, 0),
            },
        };
        Ok(ConsentView {
            id: r.get(0)?,
            patient_id: r.get(1)?,
            doctor_id: r.get(2)?,
            department: r.get(3)?,
            purpose: r.get(4)?,
            channel: r.get(5)?,
            state,
            requested_ms: from_sql_ms(r.get(7)?),
            request_expires_ms,
            decided_ms: r.get::<_, Option<i64>>(9)?.map(from_sql_ms),
            expires_ms,
            used_ms: r.get::<_, Option<i64>>(13)?.map(from_sql_ms),
            attempts,
            time_left_ms,
        })
    }

    /// In person: the patient has typed their password on the doctor's screen (the caller
    /// checked it); a code valid for `doctor_id` is issued at once.
    pub fn grant_in_person(
        &self,
        patient_id: &str,
        doctor_id: &str,
        department: &str,
        purpose: &str,
        now_ms: u64,
    ) -> Result<IssuedCode, AppError> {
        let department = check_text("department", department, 64)?;
        let purpose = check_text("purpose", purpose, 200)?;
        let (issued, mac) = self.new_code(new_id(), now_ms);
        self.db.write(|tx| {
            tx.execute(
                "INSERT INTO consents(id, patient_id, doctor_id, department, purpose, channel,
                     status, code_mac, requested_ms, request_expires_ms, decided_ms, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'in_person', 'active', ?6, ?7, ?7, ?7, ?8)",
                params![
                    issued.consent_id,
                    patient_id,
                    doctor_id,
                    department,
                    purpose,
                    &mac[..],
                    to_sql_ms(now_ms),
                    to_sql_ms(issued.expires_ms)
                ],
            )?;
            Ok::<_, AppError>(())
        })?;
        Ok(issued)
    }

    /// Remotely: the doctor asks; the request waits for the patient's answer.
    pub fn request_remote(
        &self,
        patient_id: &str,
        doctor_id: &str,
        department: &str,
        purpose: &str,
        now_ms: u64,
    ) -> Result<ConsentView, AppError> {
        let department = check_text("department", department, 64)?;
        let purpose = check_text("purpose", purpose, 200)?;
        let id = new_id();
        let until = now_ms.saturating_add(self.config.request_ttl_ms);
        self.db.write(|tx| {
            tx.execute(
                "INSERT INTO consents(id, patient_id, doctor_id, department, purpose, channel,
                     status, requested_ms, request_expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'remote', 'requested', ?6, ?7)",
                params![
                    id,
                    patient_id,
                    doctor_id,
                    department,
                    purpose,
                    to_sql_ms(now_ms),
                    to_sql_ms(until)
                ],
            )?;
            Ok::<_, AppError>(())
        })?;
        self.consent(&id, now_ms)?.ok_or(AppError::NotFound)
    }

    /// One consent by id.
    pub fn consent(&self, id: &str, now_ms: u64) -> Result<Option<ConsentView>, AppError> {
        self.db.read(|c| {
            Ok(c.query_row(
                &format!("SELECT {COLUMNS} FROM consents WHERE id = ?1"),
                [id],
                |r| self.view(r, now_ms),
            )
            .optional()?)
        })
    }

    /// The patient's remote requests still waiting for an answer, oldest first.
    pub fn pending_for_patient(
        &self,
        patient_id: &str,
        now_ms: u64,
    ) -> Result<Vec<ConsentView>, AppError> {
        self.query_views(
            &format!(
                "SELECT {COLUMNS} FROM consents
                 WHERE patient_id = ?1 AND status = 'requested' AND request_expires_ms > ?2
                 ORDER BY requested_ms, rowid LIMIT 100"
            ),
            params![patient_id, to_sql_ms(now_ms)],
            now_ms,
        )
    }

    /// The patient's consents of the last `since_ms`, newest first (at most `limit`).
    pub fn consents_for_patient(
        &self,
        patient_id: &str,
        now_ms: u64,
        limit: u32,
    ) -> Result<Vec<ConsentView>, AppError> {
        self.query_views(
            &format!(
                "SELECT {COLUMNS} FROM consents WHERE patient_id = ?1
                 ORDER BY requested_ms DESC, rowid DESC LIMIT ?2"
            ),
            params![patient_id, limit.min(500)],
            now_ms,
        )
    }

    /// The consents a doctor asked for or was granted, newest first (at most `limit`).
    pub fn consents_for_doctor(
        &self,
        doctor_id: &str,
        now_ms: u64,
        limit: u32,
    ) -> Result<Vec<ConsentView>, AppError> {
        self.query_views(
            &format!(
                "SELECT {COLUMNS} FROM consents WHERE doctor_id = ?1
                 ORDER BY requested_ms DESC, rowid DESC LIMIT ?2"
            ),
            params![doctor_id, limit.min(500)],
            now_ms,
        )
    }

    fn query_views(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        now_ms: u64,
    ) -> Result<Vec<ConsentView>, AppError> {
        self.db.read(|c| {
            let mut st = c.prepare(sql)?;
            let rows = st.query_map(params, |r| self.view(r, now_ms))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The patient approves their pending request `id`: the code is issued and returned once.
    pub fn approve(
        &self,
        patient_id: &str,
        id: &str,
        now_ms: u64,
    ) -> Result<IssuedCode, ConsentError> {
        let (issued, mac) = self.new_code(id.to_string(), now_ms);
        self.db.write(|tx| {
            let n = tx.execute(
                "UPDATE consents SET status = 'active', code_mac = ?3, decided_ms = ?4,
                     expires_ms = ?5
                 WHERE id = ?1 AND patient_id = ?2 AND status = 'requested'
                     AND request_expires_ms > ?4",
                params![
                    id,
                    patient_id,
                    &mac[..],
                    to_sql_ms(now_ms),
                    to_sql_ms(issued.expires_ms)
                ],
            )?;
            if n == 1 {
                Ok(())
            } else {
                Err(not_pending(tx, patient_id, id)?)
            }
        })?;
        Ok(issued)
    }

    /// The patient denies their pending request `id`.
    pub fn deny(&self, patient_id: &str, id: &str, now_ms: u64) -> Result<(), ConsentError> {
        self.db.write(|tx| {
            let n = tx.execute(
                "UPDATE consents SET status = 'denied', decided_ms = ?3
                 WHERE id = ?1 AND patient_id = ?2 AND status = 'requested'
                     AND request_expires_ms > ?3",
                params![id, patient_id, to_sql_ms(now_ms)],
            )?;
            if n == 1 {
                Ok(())
            } else {
                Err(not_pending(tx, patient_id, id)?)
            }
        })
    }

    /// Uses a code that `patient_id` gave `doctor_id`. Exactly one caller can win a given
    /// consent; a wrong code counts against every live consent of the pair.
    pub fn use_code(
        &self,
        patient_id: &str,
        doctor_id: &str,
        code: &str,
        kind: UseKind,
        now_ms: u64,
    ) -> Result<UsedConsent, ConsentError> {
        let max = self.config.max_attempts;
        let well_formed = code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit());
        // The outer `Ok` commits: a wrong code's attempt count must be kept.
        self.db.write(
            |tx| -> Result<Result<UsedConsent, ConsentError>, ConsentError> {
                let mut matched: Option<(String, Vec<u8>)> = None;
                if well_formed {
                    let mut st = tx.prepare(
                        "SELECT id, code_mac FROM consents
                     WHERE patient_id = ?1 AND doctor_id = ?2 AND code_mac IS NOT NULL
                         AND expires_ms > ?3
                     ORDER BY requested_ms DESC LIMIT 1000",
                    )?;
                    let rows = st.query_map(
                        params![
                            patient_id,
                            doctor_id,
                            to_sql_ms(now_ms.saturating_sub(RECOGNISE_MS))
                        ],
                        |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)),
                    )?;
                    for row in rows {
                        let (id, stored) = row?;
                        let mac = self.mac(&id, code);
                        if bool::from(mac.as_slice().ct_eq(&stored)) && matched.is_none() {
                            matched = Some((id, stored));
                        }
                    }
                }
                let live = "status = 'active' AND used = 0 AND expires_ms > ?2 AND attempts < ?3";
                match matched {
                    Some((id, mac)) => {
                        // The one statement that decides who uses the consent.
                        let n = tx.execute(
                            &format!(
                                "UPDATE consents SET used = 1, used_ms = ?2, used_for = ?4
                             WHERE id = ?1 AND {live}"
                            ),
                            params![id, to_sql_ms(now_ms), max, kind.as_str()],
                        )?;
                        if n == 1 {
                            let (department, purpose): (String, String) = tx.query_row(
                                "SELECT department, purpose FROM consents WHERE id = ?1",
                                [&id],
                                |r| Ok((r.get(0)?, r.get(1)?)),
                            )?;
                            return Ok(Ok(UsedConsent {
                                consent_hash: consent_hash(&mac, &id),
                                consent_id: id,
                                patient_id: patient_id.to_string(),
                                doctor_id: doctor_id.to_string(),
                                department,
                                purpose,
                            }));
                        }
                        let used: bool =
                            tx.query_row("SELECT used FROM consents WHERE id = ?1", [&id], |r| {
                                r.get(0)
                            })?;
                        Ok(Err(if used {
                            ConsentError::AlreadyUsed
                        } else {
                            ConsentError::ExpiredOrInvalid
                        }))
                    }
                    None => {
                        let n = tx.execute(
                            &format!(
                                "UPDATE consents SET attempts = attempts + 1
                             WHERE patient_id = ?1 AND doctor_id = ?4 AND {live}"
                            ),
                            params![patient_id, to_sql_ms(now_ms), max, doctor_id],
                        )?;
                        Ok(Err(if n == 0 {
                            ConsentError::ExpiredOrInvalid
                        } else {
                            ConsentError::InvalidCode
                        }))
                    }
                }
            },
        )?
    }

    /// Gives a used consent back, for when the transaction it was used for was refused before
    /// the chain accepted it (so the patient need not consent again). Returns whether it did.
    pub fn release_use(&self, consent_id: &str) -> Result<bool, AppError> {
        self.db.write(|tx| {
            Ok(tx.execute(
                "UPDATE consents SET used = 0, used_ms = NULL, used_for = NULL
                 WHERE id = ?1 AND used = 1",
                [consent_id],
            )? == 1)
        })
    }
}

fn not_pending(
    tx: &rusqlite::Transaction<'_>,
    patient_id: &str,
    id: &str,
) -> Result<ConsentError, ConsentError> {
    let exists: bool = tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM consents WHERE id = ?1 AND patient_id = ?2)",
        params![id, patient_id],
        |r| r.get(0),
    )?;
    Ok(if exists {
        ConsentError::NotPending
    } else {
        ConsentError::NotFound
    })
}

fn new_id() -> String {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::AppConfig;
    use std::sync::Arc;

    fn open_at(path: &std::path::Path) -> AppDb {
        AppDb::open_with(path, AppConfig::fast_hashing_for_tests()).unwrap()
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

    #[test]
    fn codes_are_six_digits_and_stored_only_as_mac() {
        let (_dir, db) = open();
        let mut seen = std::collections::HashSet::new();
        for i in 0..50 {
            let c = db
                .grant_in_person("p001", "d001", "Cardiology", "check-up", T0 + i)
                .unwrap();
            assert_eq!(c.code.len(), 6);
            assert!(c.code.bytes().all(|b| b.is_ascii_digit()));
            assert_eq!(c.expires_ms, T0 + i + 300_000);
            seen.insert(c.code.to_string());
            let (mac, status): (Vec<u8>, String) = db
                .db
                .read(|conn| {
                    Ok(conn.query_row(
                        "SELECT code_mac, status FROM consents WHERE id = ?1",
                        [&c.consent_id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?)
                })
                .unwrap();
            assert_eq!(mac.len(), 32);
            assert_eq!(status, "active");
            assert!(!format!("{mac:?}").contains(c.code.as_str()));
        }
        assert!(seen.len() > 40, "codes should look random");
    }

    #[test]
    fn code_works_once_and_gives_the_chain_hash() {
        let (_dir, db) = open();
        let c = db
            .grant_in_person("p001", "d001", "Cardiology", "check-up", T0)
            .unwrap();
        let used = db
            .use_code("p001", "d001", &c.code, UseKind::AddRecord, T0 + 1000)
            .unwrap();
        assert_eq!(used.consent_id, c.consent_id);
        assert_eq!(used.department, "Cardiology");
        assert_eq!(
            used.consent_hash,
            consent_hash(&db.mac(&c.consent_id, &c.code), &c.consent_id)
        );
        assert_eq!(used.consent_hash, c.consent_hash);
        assert!(matches!(
            db.use_code("p001", "d001", &c.code, UseKind::AddRecord, T0 + 2000),
            Err(ConsentError::AlreadyUsed)
        ));
        assert_eq!(
            db.consent(&c.consent_id, T0 + 2000).unwrap().unwrap().state,
            ConsentState::Used
        );
    }

    #[test]
    fn code_is_bound_to_patient_and_doctor() {
        let (_dir, db) = open();
        let c = db
            .grant_in_person("p001", "d001", "Cardiology", "check-up", T0)
            .unwrap();
        assert!(
            db.use_code("p002", "d001", &c.code, UseKind::AddRecord, T0)
                .is_err()
        );
        assert!(
            db.use_code("p001", "d002", &c.code, UseKind::AddRecord, T0)
                .is_err()
        );
        assert!(
            db.use_code("p001", "d001", &c.code, UseKind::AddRecord, T0)
                .is_ok()
        );
    }

    #[test]
    fn code_expires_after_300_s() {
        let (_dir, db) = open();
        let c = db
            .grant_in_person("p001", "d001", "Cardiology", "x", T0)
            .unwrap();
        let c2 = db
            .grant_in_person("p001", "d001", "Cardiology", "x", T0)
            .unwrap();
        assert!(matches!(
            db.use_code("p001", "d001", &c.code, UseKind::AddRecord, T0 + 300_000),
            Err(ConsentError::ExpiredOrInvalid)
        ));
        assert_eq!(
            db.consent(&c.consent_id, T0 + 300_000)
                .unwrap()
                .unwrap()
                .state,
            ConsentState::Expired
        );
        assert!(
            db.use_code("p001", "d001", &c2.code, UseKind::AddRecord, T0 + 299_999)
                .is_ok()
        );
    }

    #[test]
    fn five_wrong_codes_lock_the_consent() {
        let (_dir, db) = open();
        let c = db
            .grant_in_person("p001", "d001", "Cardiology", "x", T0)
            .unwrap();
        let bad = wrong(&c.code);
        for _ in 0..4 {
            assert!(matches!(
                db.use_code("p001", "d001", &bad, UseKind::AddRecord, T0),
                Err(ConsentError::InvalidCode)
            ));
        }
        assert!(matches!(
            db.use_code("p001", "d001", "12ab", UseKind::AddRecord, T0),
            Err(ConsentError::InvalidCode)
        ));
        assert_eq!(
            db.consent(&c.consent_id, T0).unwrap().unwrap().state,
            ConsentState::Locked
        );
        assert!(matches!(
            db.use_code("p001", "d001", &c.code, UseKind::AddRecord, T0),
            Err(ConsentError::ExpiredOrInvalid)
        ));
    }

    #[test]
    fn four_wrong_codes_still_allow_the_right_one() {
        let (_dir, db) = open();
        let c = db
            .grant_in_person("p001", "d001", "Cardiology", "x", T0)
            .unwrap();
        for _ in 0..4 {
            let _ = db.use_code("p001", "d001", &wrong(&c.code), UseKind::AddRecord, T0);
        }
        assert!(
            db.use_code("p001", "d001", &c.code, UseKind::AddRecord, T0)
                .is_ok()
        );
    }

    #[test]
    fn wrong_codes_of_another_doctor_do_not_lock() {
        let (_dir, db) = open();
        let c = db
            .grant_in_person("p001", "d001", "Cardiology", "x", T0)
            .unwrap();
        for _ in 0..10 {
            let _ = db.use_code("p001", "d002", &wrong(&c.code), UseKind::AddRecord, T0);
        }
        assert!(
            db.use_code("p001", "d001", &c.code, UseKind::AddRecord, T0)
                .is_ok()
        );
    }

    #[test]
    fn several_pending_none_replaces_another() {
        let (_dir, db) = open();
        let a = db
            .grant_in_person("p001", "d001", "Cardiology", "a", T0)
            .unwrap();
        let r1 = db
            .request_remote("p001", "d001", "Cardiology", "b", T0)
            .unwrap();
        let r2 = db
            .request_remote("p001", "d002", "Oncology", "c", T0 + 1)
            .unwrap();
        let b = db
            .grant_in_person("p001", "d001", "Cardiology", "d", T0 + 2)
            .unwrap();
        let pending = db.pending_for_patient("p001", T0 + 3).unwrap();
        assert_eq!(
            pending.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            vec![r1.id.as_str(), r2.id.as_str()]
        );
        assert_eq!(pending[1].department, "Oncology");
        assert_eq!(pending[1].purpose, "c");
        assert_eq!(pending[0].time_left_ms, 15 * 60 * 1000 - 3);
        let c1 = db.approve("p001", &r1.id, T0 + 10).unwrap();
        let c2 = db.approve("p001", &r2.id, T0 + 10).unwrap();
        // All four codes work, each once.
        for (doctor, code) in [
            ("d001", &a.code),
            ("d001", &b.code),
            ("d001", &c1.code),
            ("d002", &c2.code),
        ] {
            db.use_code("p001", doctor, code, UseKind::AddRecord, T0 + 20)
                .unwrap();
        }
        assert!(db.pending_for_patient("p001", T0 + 30).unwrap().is_empty());
        assert_eq!(db.consents_for_patient("p001", T0, 10).unwrap().len(), 4);
        assert_eq!(db.consents_for_doctor("d002", T0, 10).unwrap().len(), 1);
    }

    #[test]
    fn remote_request_approve_and_deny() {
        let (_dir, db) = open();
        let r = db
            .request_remote("p001", "d001", "Cardiology", "follow-up", T0)
            .unwrap();
        assert_eq!(r.state, ConsentState::Requested);
        assert_eq!(r.channel, "remote");
        // Nothing usable before approval.
        assert!(
            db.use_code("p001", "d001", "000000", UseKind::AddRecord, T0)
                .is_err()
        );
        // Only the patient concerned can answer.
        assert!(matches!(
            db.approve("p002", &r.id, T0),
            Err(ConsentError::NotFound)
        ));
        let code = db.approve("p001", &r.id, T0 + 5_000).unwrap();
        assert_eq!(code.expires_ms, T0 + 5_000 + 300_000);
        assert!(matches!(
            db.approve("p001", &r.id, T0 + 6_000),
            Err(ConsentError::NotPending)
        ));
        assert!(matches!(
            db.deny("p001", &r.id, T0 + 6_000),
            Err(ConsentError::NotPending)
        ));
        let v = db.consent(&r.id, T0 + 6_000).unwrap().unwrap();
        assert_eq!(v.state, ConsentState::Active);
        db.use_code("p001", "d001", &code.code, UseKind::ReadRecords, T0 + 7_000)
            .unwrap();

        let r2 = db
            .request_remote("p001", "d001", "Cardiology", "again", T0)
            .unwrap();
        db.deny("p001", &r2.id, T0 + 1).unwrap();
        assert_eq!(
            db.consent(&r2.id, T0 + 2).unwrap().unwrap().state,
            ConsentState::Denied
        );
        assert!(matches!(
            db.approve("p001", &r2.id, T0 + 3),
            Err(ConsentError::NotPending)
        ));
        assert!(matches!(
            db.deny("p001", "nope", T0 + 3),
            Err(ConsentError::NotFound)
        ));
    }

    #[test]
    fn unanswered_request_expires() {
        let (_dir, db) = open();
        let r = db
            .request_remote("p001", "d001", "Cardiology", "x", T0)
            .unwrap();
        let late = T0 + 15 * 60 * 1000;
        assert!(db.pending_for_patient("p001", late).unwrap().is_empty());
        assert_eq!(
            db.consent(&r.id, late).unwrap().unwrap().state,
            ConsentState::RequestExpired
        );
        assert!(matches!(
            db.approve("p001", &r.id, late),
            Err(ConsentError::NotPending)
        ));
    }

    #[test]
    fn rejects_bad_text() {
        let (_dir, db) = open();
        assert!(db.request_remote("p001", "d001", "", "x", T0).is_err());
        assert!(
            db.request_remote("p001", "d001", "C", &"x".repeat(201), T0)
                .is_err()
        );
        assert!(
            db.request_remote("p001", "d001", "C", "a\u{7}b", T0)
                .is_err()
        );
    }

    #[test]
    fn concurrent_use_from_threads_has_one_winner() {
        let (dir, db) = open();
        let db = Arc::new(db);
        // A second handle on the same file, as a second process would have.
        let other = Arc::new(open_at(&dir.path().join("app.db")));
        for round in 0..5 {
            let c = db
                .grant_in_person("p001", "d001", "Cardiology", "x", T0 + round)
                .unwrap();
            let code = Arc::new(c.code.to_string());
            let barrier = Arc::new(std::sync::Barrier::new(8));
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let db = if i % 2 == 0 {
                        db.clone()
                    } else {
                        other.clone()
                    };
                    let code = code.clone();
                    let barrier = barrier.clone();
                    std::thread::spawn(move || {
                        barrier.wait();
                        db.use_code("p001", "d001", &code, UseKind::AddRecord, T0 + 100)
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let wins = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(wins, 1, "round {round}: {results:?}");
            assert!(
                results
                    .iter()
                    .filter_map(|r| r.as_ref().err())
                    .all(|e| matches!(e, ConsentError::AlreadyUsed))
            );
        }
    }

    #[test]
    fn concurrent_wrong_guesses_never_exceed_five() {
        let (_dir, db) = open();
        let db = Arc::new(db);
        let c = db.grant_in_person("p001", "d001", "C", "x", T0).unwrap();
        let bad = Arc::new(wrong(&c.code));
        let handles: Vec<_> = (0..20)
            .map(|_| {
                let db = db.clone();
                let bad = bad.clone();
                std::thread::spawn(move || {
                    db.use_code("p001", "d001", &bad, UseKind::AddRecord, T0)
                })
            })
            .collect();
        let invalid = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|r| matches!(r, Err(ConsentError::InvalidCode)))
            .count();
        assert_eq!(invalid, 5);
        assert_eq!(db.consent(&c.consent_id, T0).unwrap().unwrap().attempts, 5);
        assert!(
            db.use_code("p001", "d001", &c.code, UseKind::AddRecord, T0)
                .is_err()
        );
    }

    #[test]
    fn consents_and_secret_survive_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let (code, used_code, pending_id, key) = {
            let db = open_at(&path);
            let c = db.grant_in_person("p001", "d001", "C", "x", T0).unwrap();
            let u = db.grant_in_person("p001", "d001", "C", "y", T0).unwrap();
            db.use_code("p001", "d001", &u.code, UseKind::AddRecord, T0)
                .unwrap();
            let r = db
                .request_remote("p002", "d002", "Oncology", "z", T0)
                .unwrap();
            for _ in 0..3 {
                let _ = db.use_code("p001", "d001", &wrong(&c.code), UseKind::AddRecord, T0);
            }
            (c, u, r.id, *db.consent_key)
        };
        let db = open_at(&path);
        assert_eq!(*db.consent_key, key, "the secret is kept");
        assert_eq!(
            db.pending_for_patient("p002", T0 + 1).unwrap()[0].id,
            pending_id
        );
        assert_eq!(
            db.consent(&code.consent_id, T0).unwrap().unwrap().attempts,
            3
        );
        assert!(matches!(
            db.use_code("p001", "d001", &used_code.code, UseKind::AddRecord, T0 + 1),
            Err(ConsentError::AlreadyUsed)
        ));
        db.use_code("p001", "d001", &code.code, UseKind::AddRecord, T0 + 1)
            .unwrap();
        let approved = db.approve("p002", &pending_id, T0 + 2).unwrap();
        db.use_code("p002", "d002", &approved.code, UseKind::ReadRecords, T0 + 3)
            .unwrap();
    }

    #[test]
    fn release_use_gives_the_consent_back() {
        let (_dir, db) = open();
        let c = db.grant_in_person("p001", "d001", "C", "x", T0).unwrap();
        let u = db
            .use_code("p001", "d001", &c.code, UseKind::AddRecord, T0)
            .unwrap();
        assert!(db.release_use(&u.consent_id).unwrap());
        assert!(!db.release_use(&u.consent_id).unwrap());
        db.use_code("p001", "d001", &c.code, UseKind::AddRecord, T0)
            .unwrap();
    }

    #[test]
    fn secrets_differ_between_stores() {
        let (_d1, a) = open();
        let (_d2, b) = open();
        assert_ne!(*a.consent_key, *b.consent_key);
        assert_ne!(a.mac("id", "123456"), b.mac("id", "123456"));
    }
}
