//! Patients and doctors, with Argon2id password hashes.

use std::io::{BufRead, IsTerminal};
use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Version};
use rand::rngs::OsRng;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{AppDb, AppError, to_sql_ms};

/// Who an account belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Patient,
    Doctor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Doctor => "doctor",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "patient" => Some(Role::Patient),
            "doctor" => Some(Role::Doctor),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An account as the rest of the application sees it (never with its hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Account {
    pub id: String,
    pub role: Role,
    /// A doctor's department; `None` for patients.
    pub department: Option<String>,
}

/// What `create_account` needs. The password is zeroized on drop.
pub struct NewAccount {
    pub id: String,
    pub role: Role,
    pub department: Option<String>,
    pub password: Zeroizing<String>,
}

/// The seed's sample accounts: (id, role, password, department).
pub const DEMO_ACCOUNTS: &[(&str, Role, &str, Option<&str>)] = &[
    ("p001", Role::Patient, "patient123", None),
    ("p002", Role::Patient, "patient456", None),
    ("d001", Role::Doctor, "doctor123", Some("Cardiology")),
    ("d002", Role::Doctor, "doctor456", Some("Oncology")),
];

/// An account id: 1 to 32 characters of `A-Z a-z 0-9 _ -`.
pub fn validate_account_id(id: &str) -> Result<(), AppError> {
    if id.is_empty() || id.len() > 32 {
        return Err(AppError::invalid("id", "must be 1 to 32 characters"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(AppError::invalid(
            "id",
            "may contain only letters, digits, '_' and '-'",
        ));
    }
    Ok(())
}

/// A department: 1 to 64 printable characters.
pub fn validate_department(department: &str) -> Result<(), AppError> {
    let trimmed = department.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 64 {
        return Err(AppError::invalid(
            "department",
            "must be 1 to 64 characters",
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(AppError::invalid(
            "department",
            "may not contain control characters",
        ));
    }
    Ok(())
}

/// A new password: 8 to 256 characters.
pub fn validate_password(password: &str) -> Result<(), AppError> {
    let n = password.chars().count();
    if !(8..=256).contains(&n) {
        return Err(AppError::invalid("password", "must be 8 to 256 characters"));
    }
    Ok(())
}

/// Reads a password for `medchain user add`: from the terminal without echo when stdin is a
/// terminal (asking twice), else the first line of stdin.
pub fn read_password(prompt: &str) -> std::io::Result<Zeroizing<String>> {
    if std::io::stdin().is_terminal() {
        let first = Zeroizing::new(rpassword::prompt_password(prompt)?);
        let again = Zeroizing::new(rpassword::prompt_password("Repeat the password: ")?);
        if *first != *again {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the passwords differ",
            ));
        }
        Ok(first)
    } else {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line)?;
        let trimmed = line.trim_end_matches(['\r', '\n']);
        Ok(Zeroizing::new(trimmed.to_string()))
    }
}

fn argon2(params: &argon2::Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

/// A hash that no password matches, verified when an account does not exist so that an unknown
/// id costs the same time as a wrong password.
fn dummy_hash(params: &argon2::Params) -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        argon2(params)
            .hash_password(b"medchain-no-such-account", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

impl AppDb {
    /// Hashes a password with Argon2id and a random salt (PHC string format).
    pub fn hash_password(&self, password: &str) -> Result<String, AppError> {
        let salt = SaltString::generate(&mut OsRng);
        argon2(&self.config.argon2)
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|_| AppError::Hash)
    }

    /// Creates an account; fails with `AccountExists` if the id is taken (by either role).
    pub fn create_account(&self, new: NewAccount, now_ms: u64) -> Result<Account, AppError> {
        validate_account_id(&new.id)?;
        validate_password(&new.password)?;
        let department = match (new.role, new.department) {
            (Role::Doctor, Some(d)) => {
                validate_department(&d)?;
                Some(d.trim().to_string())
            }
            (Role::Doctor, None) => {
                return Err(AppError::invalid(
                    "department",
                    "a doctor needs a department",
                ));
            }
            (Role::Patient, Some(_)) => {
                return Err(AppError::invalid(
                    "department",
                    "a patient has no department",
                ));
            }
            (Role::Patient, None) => None,
        };
        let hash = self.hash_password(&new.password)?;
        self.db.write(|tx| {
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO accounts(id, role, department, password_hash, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    new.id,
                    new.role.as_str(),
                    department,
                    hash,
                    to_sql_ms(now_ms)
                ],
            )?;
            if inserted == 0 {
                return Err(AppError::AccountExists(new.id.clone()));
            }
            Ok(Account {
                id: new.id.clone(),
                role: new.role,
                department: department.clone(),
            })
        })
    }

    /// Creates the seed's sample accounts that are missing; returns the ids it created.
    pub fn seed_demo(&self, now_ms: u64) -> Result<Vec<String>, AppError> {
        let mut created = Vec::new();
        for (id, role, password, department) in DEMO_ACCOUNTS {
            if self.account(id)?.is_some() {
                continue;
            }
            let result = self.create_account(
                NewAccount {
                    id: (*id).to_string(),
                    role: *role,
                    department: department.map(str::to_string),
                    password: Zeroizing::new((*password).to_string()),
                },
                now_ms,
            );
            match result {
                Ok(_) => created.push((*id).to_string()),
                Err(AppError::AccountExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(created)
    }

    /// Looks an account up by id.
    pub fn account(&self, id: &str) -> Result<Option<Account>, AppError> {
        self.db.read(|conn| {
            Ok(conn
                .query_row(
                    "SELECT id, role, department FROM accounts WHERE id = ?1",
                    [id],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, Option<String>>(2)?,
                        ))
                    },
                )
                .optional()?
                .and_then(|(id, role, department)| {
                    Some(Account {
                        id,
                        role: Role::parse(&role)?,
                        department,
                    })
                }))
        })
    }

    /// Checks a password. Returns the account only if it exists, has `role` (when given) and
    /// the password matches. Costs one Argon2id verification whatever the outcome.
    pub fn verify_password(
        &self,
        id: &str,
        role: Option<Role>,
        password: &str,
    ) -> Result<Option<Account>, AppError> {
        let row = self.db.read(|conn| {
            Ok(conn
                .query_row(
                    "SELECT role, department, password_hash FROM accounts WHERE id = ?1",
                    [id],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Option<String>>(1)?,
                            r.get::<_, String>(2)?,
                        ))
                    },
                )
                .optional()?)
        })?;
        let (account, hash) = match row {
            Some((role_s, department, hash)) => (
                Role::parse(&role_s).map(|role| Account {
                    id: id.to_string(),
                    role,
                    department,
                }),
                hash,
            ),
            None => (None, dummy_hash(&self.config.argon2).to_string()),
        };
        let matches = match PasswordHash::new(&hash) {
            Ok(parsed) => argon2(&self.config.argon2)
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
            Err(_) => false,
        };
        Ok(match account {
            Some(a) if matches && role.is_none_or(|r| r == a.role) => Some(a),
            _ => None,
        })
    }

    /// `medchain user add`: reads the password (prompt without echo, or the first line of
    /// stdin) and creates the account.
    pub fn add_user_interactive(
        &self,
        role: Role,
        id: &str,
        department: Option<&str>,
        now_ms: u64,
    ) -> Result<Account, AppError> {
        validate_account_id(id)?;
        if self.account(id)?.is_some() {
            return Err(AppError::AccountExists(id.to_string()));
        }
        let password = read_password(&format!("Password for {role} {id}: "))
            .map_err(|e| AppError::invalid("password", e.to_string()))?;
        self.create_account(
            NewAccount {
                id: id.to_string(),
                role,
                department: department.map(str::to_string),
                password,
            },
            now_ms,
        )
    }

    /// Replaces an account's password (and ends its sessions).
    pub fn set_password(&self, id: &str, password: &str) -> Result<(), AppError> {
        validate_password(password)?;
        let hash = self.hash_password(password)?;
        self.db.write(|tx| {
            let n = tx.execute(
                "UPDATE accounts SET password_hash = ?2 WHERE id = ?1",
                params![id, hash],
            )?;
            if n == 0 {
                return Err(AppError::NotFound);
            }
            tx.execute("DELETE FROM sessions WHERE account_id = ?1", [id])?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::AppConfig;

    fn open() -> (tempfile::TempDir, AppDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = AppDb::open_with(
            &dir.path().join("app.db"),
            AppConfig::fast_hashing_for_tests(),
        )
        .unwrap();
        (dir, db)
    }

    #[test]
    fn demo_accounts_are_created_once_and_verify() {
        let (_dir, db) = open();
        let created = db.seed_demo(1).unwrap();
        assert_eq!(created, vec!["p001", "p002", "d001", "d002"]);
        assert!(db.seed_demo(2).unwrap().is_empty());
        let d = db
            .verify_password("d001", Some(Role::Doctor), "doctor123")
            .unwrap()
            .unwrap();
        assert_eq!(d.department.as_deref(), Some("Cardiology"));
        assert!(
            db.verify_password("p001", Some(Role::Patient), "patient123")
                .unwrap()
                .is_some()
        );
        assert!(
            db.verify_password("p002", None, "patient456")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn wrong_password_wrong_role_unknown_id_fail() {
        let (_dir, db) = open();
        db.seed_demo(1).unwrap();
        assert!(
            db.verify_password("p001", None, "patient124")
                .unwrap()
                .is_none()
        );
        assert!(
            db.verify_password("p001", Some(Role::Doctor), "patient123")
                .unwrap()
                .is_none()
        );
        assert!(
            db.verify_password("nobody", None, "patient123")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn stored_hash_is_argon2id_not_the_password() {
        let (_dir, db) = open();
        db.seed_demo(1).unwrap();
        let hash: String = db
            .db
            .read(|c| {
                Ok(c.query_row(
                    "SELECT password_hash FROM accounts WHERE id='p001'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains("patient123"));
    }

    #[test]
    fn default_params_are_owasp_strength() {
        let p = AppConfig::default().argon2;
        assert!(p.m_cost() >= 19 * 1024 && p.t_cost() >= 2);
    }

    #[test]
    fn create_doctor_validates_and_rejects_duplicates() {
        let (_dir, db) = open();
        let new = |id: &str, role, dept: Option<&str>, pw: &str| NewAccount {
            id: id.into(),
            role,
            department: dept.map(Into::into),
            password: Zeroizing::new(pw.into()),
        };
        let d = db
            .create_account(
                new("d003", Role::Doctor, Some("Neurology"), "longenough"),
                5,
            )
            .unwrap();
        assert_eq!(d.department.as_deref(), Some("Neurology"));
        assert!(matches!(
            db.create_account(new("d003", Role::Patient, None, "longenough"), 5),
            Err(AppError::AccountExists(_))
        ));
        assert!(matches!(
            db.create_account(new("d004", Role::Doctor, None, "longenough"), 5),
            Err(AppError::Invalid {
                field: "department",
                ..
            })
        ));
        assert!(matches!(
            db.create_account(new("bad id!", Role::Patient, None, "longenough"), 5),
            Err(AppError::Invalid { field: "id", .. })
        ));
        assert!(matches!(
            db.create_account(new("p009", Role::Patient, None, "short"), 5),
            Err(AppError::Invalid {
                field: "password",
                ..
            })
        ));
        assert!(
            db.verify_password("d003", Some(Role::Doctor), "longenough")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn set_password_changes_it_and_ends_sessions() {
        let (_dir, db) = open();
        db.seed_demo(1).unwrap();
        let acc = db.account("p001").unwrap().unwrap();
        let (token, _) = db.create_session(&acc, 10).unwrap();
        db.set_password("p001", "a-new-password").unwrap();
        assert!(db.session(token.as_str(), 11).unwrap().is_none());
        assert!(
            db.verify_password("p001", None, "patient123")
                .unwrap()
                .is_none()
        );
        assert!(
            db.verify_password("p001", None, "a-new-password")
                .unwrap()
                .is_some()
        );
    }
}
