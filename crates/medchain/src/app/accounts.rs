//! Patients and doctors, with Argon2id password hashes.

use std::io::{BufRead, IsTerminal};
use std::sync::OnceLock;

use argon2::password_hash::{
    self, Output, ParamsString, PasswordHash, PasswordHasher, Salt, SaltString,
};
use argon2::{Algorithm, Argon2, Version};
use ledger::PersonId;
use rand::rngs::OsRng;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::db::Cached;
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub role: Role,
    /// A doctor's department; `None` for patients.
    pub department: Option<String>,
    /// The person this login maps to on chain; `None` until one is assigned (an account made
    /// before identities were on chain, or of another chain: the outbox enrolls it at start).
    pub person: Option<PersonId>,
    /// The person's home validator (the one that enrolled them).
    pub home: Option<u32>,
    /// A doctor's public professional name, as enrolled.
    pub name: Option<String>,
}

impl Account {
    /// The role as the chain writes it.
    pub fn chain_role(&self) -> ledger::tx::Role {
        match self.role {
            Role::Patient => ledger::tx::Role::Patient,
            Role::Doctor => ledger::tx::Role::Doctor,
        }
    }
}

/// What `create_account` needs. The password is zeroized on drop.
pub struct NewAccount {
    pub id: String,
    pub role: Role,
    pub department: Option<String>,
    /// A doctor's public professional name (1 to 64 characters), enrolled on chain.
    pub name: Option<String>,
    pub password: Zeroizing<String>,
}

/// One of the seed's sample accounts.
pub struct DemoAccount {
    pub id: &'static str,
    pub role: Role,
    pub password: &'static str,
    pub department: Option<&'static str>,
    /// The public name a demo doctor is enrolled with.
    pub name: Option<&'static str>,
}

/// The seed's sample accounts.
pub const DEMO_ACCOUNTS: &[DemoAccount] = &[
    DemoAccount {
        id: "p001",
        role: Role::Patient,
        password: "patient123",
        department: None,
        name: None,
    },
    DemoAccount {
        id: "p002",
        role: Role::Patient,
        password: "patient456",
        department: None,
        name: None,
    },
    DemoAccount {
        id: "d001",
        role: Role::Doctor,
        password: "doctor123",
        department: Some("Cardiology"),
        name: Some("Ada Byron"),
    },
    DemoAccount {
        id: "d002",
        role: Role::Doctor,
        password: "doctor456",
        department: Some("Oncology"),
        name: Some("Grace Hopper"),
    },
];

impl DemoAccount {
    pub fn new_account(&self) -> NewAccount {
        NewAccount {
            id: self.id.to_string(),
            role: self.role,
            department: self.department.map(str::to_string),
            name: self.name.map(str::to_string),
            password: Zeroizing::new(self.password.to_string()),
        }
    }
}

/// The columns an [`Account`] is read from (table alias `a`), in [`account_from_row`]'s order.
pub(crate) const ACCOUNT_COLUMNS: &str = "a.id, a.role, a.department, a.person, a.home, a.name";

/// An account from the [`ACCOUNT_COLUMNS`] starting at column `at`; `None` for a row whose
/// role or person id is not one this program writes.
pub(crate) fn account_from_row(
    r: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<Option<Account>> {
    let role: String = r.get(at + 1)?;
    let person: Option<Vec<u8>> = r.get(at + 3)?;
    let person = match person {
        None => None,
        Some(bytes) => match PersonId::try_from(bytes.as_slice()) {
            Ok(p) => Some(p),
            Err(_) => return Ok(None),
        },
    };
    Ok(Role::parse(&role).map(|role| Account {
        id: r.get::<_, String>(at).unwrap_or_default(),
        role,
        department: r.get(at + 2).unwrap_or(None),
        person,
        home: r.get(at + 4).unwrap_or(None),
        name: r.get(at + 5).unwrap_or(None),
    }))
}

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

/// Argon2id of `password` under `salt` as a PHC string, computed in `memory` (grown to the
/// parameters' size, reused across calls): what [`PasswordHasher::hash_password`] computes,
/// without allocating its memory each time.
fn phc_hash<'a>(
    argon2: &Argon2<'_>,
    password: &[u8],
    salt: Salt<'a>,
    memory: &mut Vec<argon2::Block>,
) -> password_hash::Result<PasswordHash<'a>> {
    let params = argon2.params();
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), argon2::Block::default());
    }
    let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
    let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
    let output_len = params
        .output_len()
        .unwrap_or(argon2::Params::DEFAULT_OUTPUT_LEN);
    let output = Output::init_with(output_len, |out| {
        argon2
            .hash_password_into_with_memory(password, salt_bytes, out, &mut memory[..])
            .map_err(Into::into)
    })?;
    Ok(PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params)?,
        salt: Some(salt),
        hash: Some(output),
    })
}

/// Whether `password` matches the stored `hash` (an Argon2id PHC string of any parameters):
/// what [`PasswordVerifier::verify_password`] checks, in `memory`. The outputs are compared in
/// constant time ([`Output`]'s equality).
fn verify_phc(
    password: &[u8],
    hash: &PasswordHash<'_>,
    memory: &mut Vec<argon2::Block>,
) -> password_hash::Result<()> {
    let (Some(salt), Some(expected)) = (hash.salt, &hash.hash) else {
        return Err(password_hash::Error::Password);
    };
    if Algorithm::try_from(hash.algorithm)? != Algorithm::Argon2id {
        return Err(password_hash::Error::Algorithm);
    }
    let version = hash.version.map(Version::try_from).transpose()?;
    if version.is_some_and(|v| v != Version::V0x13) {
        return Err(password_hash::Error::Version);
    }
    let stored = argon2::Params::try_from(hash)?;
    let params = argon2::Params::new(
        stored.m_cost(),
        stored.t_cost(),
        stored.p_cost(),
        Some(expected.len()),
    )?;
    let computed = phc_hash(&argon2(&params), password, salt, memory)?;
    match computed.hash {
        Some(output) if output == *expected => Ok(()),
        _ => Err(password_hash::Error::Password),
    }
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

/// An account checked and with its password hashed, ready to be inserted (Argon2id runs
/// before the write transaction, never inside it).
pub(crate) struct ValidAccount {
    pub id: String,
    pub role: Role,
    pub department: Option<String>,
    pub name: Option<String>,
    hash: String,
}

/// The person a login maps to when it is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PersonOf {
    /// None yet (enrolled later by the outbox).
    Unassigned,
    /// Enrolled here: `home` is this validator and the person id derives from `nonce`.
    Enrolled { home: u32, nonce: [u8; 16] },
    /// An identity of another home, linked to this login.
    Linked { person: PersonId, home: u32 },
}

impl PersonOf {
    fn columns(&self) -> (Option<PersonId>, Option<u32>, Option<[u8; 16]>) {
        match *self {
            PersonOf::Unassigned => (None, None, None),
            PersonOf::Enrolled { home, nonce } => (
                Some(ledger::person_id(home, &nonce)),
                Some(home),
                Some(nonce),
            ),
            PersonOf::Linked { person, home } => (Some(person), Some(home), None),
        }
    }
}

/// A doctor's public name: 1 to 64 printable characters.
pub fn validate_name(name: &str) -> Result<(), AppError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 64 {
        return Err(AppError::invalid("name", "must be 1 to 64 characters"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(AppError::invalid(
            "name",
            "may not contain control characters",
        ));
    }
    Ok(())
}

impl AppDb {
    /// Hashes a password with Argon2id and a random salt (PHC string format).
    pub fn hash_password(&self, password: &str) -> Result<String, AppError> {
        let salt = SaltString::generate(&mut OsRng);
        self.one_hash_at_a_time(|memory| {
            phc_hash(
                &argon2(&self.config.argon2),
                password.as_bytes(),
                salt.as_salt(),
                memory,
            )
            .map(|h| h.to_string())
            .map_err(|_| AppError::Hash)
        })
    }

    /// Runs one Argon2id in a memory of this store's pool: at most
    /// [`super::MAX_CONCURRENT_HASHES`] at once, each in a memory kept for the next (a memory
    /// of 19 MiB allocated and freed at each sign-in stays resident in the allocator's
    /// per-thread arenas: about 1 GB per validator after a few hundred sign-ins).
    fn one_hash_at_a_time<T>(&self, hash: impl FnOnce(&mut Vec<argon2::Block>) -> T) -> T {
        match self
            .hashing
            .with(|| Ok::<_, std::convert::Infallible>(Vec::new()), hash)
        {
            Ok(out) => out,
            Err(never) => match never {},
        }
    }

    /// The most Argon2id computations that ran at once in this store.
    pub fn peak_concurrent_hashes(&self) -> usize {
        self.hashing.peak_open()
    }

    /// Checks `new` and hashes its password.
    pub(crate) fn validate_account(&self, new: NewAccount) -> Result<ValidAccount, AppError> {
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
        let name = match (new.role, new.name) {
            (Role::Doctor, Some(n)) => {
                validate_name(&n)?;
                Some(n.trim().to_string())
            }
            (Role::Doctor, None) => None,
            (Role::Patient, Some(_)) => {
                return Err(AppError::invalid(
                    "name",
                    "a patient's name is not enrolled",
                ));
            }
            (Role::Patient, None) => None,
        };
        let hash = self.hash_password(&new.password)?;
        Ok(ValidAccount {
            id: new.id,
            role: new.role,
            department,
            name,
            hash,
        })
    }

    /// Inserts `account` mapped to `person` in the write transaction `tx`; `AccountExists` if
    /// the id is taken (by either role).
    pub(crate) fn insert_account(
        tx: &rusqlite::Connection,
        account: &ValidAccount,
        person: PersonOf,
        now_ms: u64,
    ) -> Result<Account, AppError> {
        let (person_id, home, nonce) = person.columns();
        let inserted = tx.exec(
            "INSERT OR IGNORE INTO accounts(id, role, department, password_hash, created_ms,
                 person, home, nonce, name)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                account.id,
                account.role.as_str(),
                account.department,
                account.hash,
                to_sql_ms(now_ms),
                person_id.map(|p| p.to_vec()),
                home,
                nonce.map(|n| n.to_vec()),
                account.name,
            ],
        )?;
        if inserted == 0 {
            return Err(AppError::AccountExists(account.id.clone()));
        }
        Ok(Account {
            id: account.id.clone(),
            role: account.role,
            department: account.department.clone(),
            person: person_id,
            home,
            name: account.name.clone(),
        })
    }

    /// Maps an existing login to `person` (in the write transaction `tx`), and gives a doctor
    /// without a public name its login id as one.
    pub(crate) fn assign_person(
        tx: &rusqlite::Connection,
        id: &str,
        person: PersonOf,
    ) -> Result<(), AppError> {
        let (person_id, home, nonce) = person.columns();
        let n = tx.exec(
            "UPDATE accounts SET person = ?2, home = ?3, nonce = ?4,
                 name = CASE WHEN role = 'doctor' THEN COALESCE(name, id) ELSE NULL END
             WHERE id = ?1",
            params![
                id,
                person_id.map(|p| p.to_vec()),
                home,
                nonce.map(|n| n.to_vec())
            ],
        )?;
        if n == 0 {
            return Err(AppError::NotFound);
        }
        Ok(())
    }

    /// Creates a login mapped to no person yet; `AccountExists` if the id is taken.
    pub fn create_account(&self, new: NewAccount, now_ms: u64) -> Result<Account, AppError> {
        self.create_account_as(new, PersonOf::Unassigned, now_ms)
    }

    /// Creates a login mapped to `person` (without any chain step).
    pub fn create_account_as(
        &self,
        new: NewAccount,
        person: PersonOf,
        now_ms: u64,
    ) -> Result<Account, AppError> {
        let valid = self.validate_account(new)?;
        self.db
            .write(|tx| Self::insert_account(tx, &valid, person, now_ms))
    }

    /// Looks an account up by id.
    pub fn account(&self, id: &str) -> Result<Option<Account>, AppError> {
        self.db.read(|conn| {
            Ok(conn
                .row(
                    &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.id = ?1"),
                    [id],
                    |r| account_from_row(r, 0),
                )
                .optional()?
                .flatten())
        })
    }

    /// The login at this hospital mapped to `person`, if any (the first made).
    pub fn account_of_person(&self, person: &PersonId) -> Result<Option<Account>, AppError> {
        self.db.read(|conn| {
            Ok(conn
                .row(
                    &format!(
                        "SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.person = ?1
                         ORDER BY a.created_ms, a.rowid LIMIT 1"
                    ),
                    [&person[..]],
                    |r| account_from_row(r, 0),
                )
                .optional()?
                .flatten())
        })
    }

    /// Every account, by id (for `medchain user list`).
    pub fn accounts(&self) -> Result<Vec<Account>, AppError> {
        self.db.read(|conn| {
            let mut st = conn.prepare(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts a ORDER BY a.id"
            ))?;
            let rows = st.query_map([], |r| account_from_row(r, 0))?;
            let mut out = Vec::new();
            for row in rows {
                out.extend(row?);
            }
            Ok(out)
        })
    }

    /// Accounts mapped to no person yet.
    pub fn unassigned_accounts(&self) -> Result<Vec<Account>, AppError> {
        Ok(self
            .accounts()?
            .into_iter()
            .filter(|a| a.person.is_none())
            .collect())
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
                .row(
                    &format!(
                        "SELECT {ACCOUNT_COLUMNS}, a.password_hash FROM accounts a WHERE a.id = ?1"
                    ),
                    [id],
                    |r| Ok((account_from_row(r, 0)?, r.get::<_, String>(6)?)),
                )
                .optional()?)
        })?;
        let (account, hash) = match row {
            Some((account, hash)) => (account, hash),
            None => (None, dummy_hash(&self.config.argon2).to_string()),
        };
        let matches = match PasswordHash::new(&hash) {
            Ok(parsed) => self.one_hash_at_a_time(|memory| {
                verify_phc(password.as_bytes(), &parsed, memory).is_ok()
            }),
            Err(_) => false,
        };
        Ok(match account {
            Some(a) if matches && role.is_none_or(|r| r == a.role) => Some(a),
            _ => None,
        })
    }

    /// What a device cookie of login `id` is bound to besides its id (`http::device`): its
    /// password hash, new at every password change (salted) and for an id made anew, so that
    /// either ends every device cookie minted before (red team of issue 12, round 3). `None`
    /// for an unknown id.
    pub fn device_binding(&self, id: &str) -> Result<Option<String>, AppError> {
        self.db.read(|conn| {
            Ok(conn
                .row(
                    "SELECT password_hash FROM accounts WHERE id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .optional()?)
        })
    }

    /// Replaces an account's password (and ends its sessions and device cookies).
    pub fn set_password(&self, id: &str, password: &str) -> Result<(), AppError> {
        validate_password(password)?;
        let hash = self.hash_password(password)?;
        self.db.write(|tx| {
            let n = tx.exec(
                "UPDATE accounts SET password_hash = ?2 WHERE id = ?1",
                params![id, hash],
            )?;
            if n == 0 {
                return Err(AppError::NotFound);
            }
            tx.exec("DELETE FROM sessions WHERE account_id = ?1", [id])?;
            Ok(())
        })
    }
}

#[cfg(test)]
impl AppDb {
    /// The seed's sample logins, mapped to no person: for the tests of this module's neighbours.
    pub(crate) fn seed_demo(&self, now_ms: u64) -> Result<Vec<String>, AppError> {
        let mut created = Vec::new();
        for demo in DEMO_ACCOUNTS {
            match self.create_account(demo.new_account(), now_ms) {
                Ok(_) => created.push(demo.id.to_string()),
                Err(AppError::AccountExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::AppConfig;

    fn open() -> (tempfile::TempDir, AppDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::app::test_db(&dir.path().join("app.db"));
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
    fn hashing_in_a_kept_memory_is_the_crates_argon2id() {
        use argon2::password_hash::PasswordVerifier;
        let params = argon2::Params::new(64, 1, 1, None).unwrap();
        let salt = SaltString::generate(&mut OsRng);
        let standard = argon2(&params).hash_password(b"pw", &salt).unwrap();
        // A memory of another size first: it is grown, and the memory reused.
        let mut memory = vec![argon2::Block::default(); 8];
        let ours = phc_hash(&argon2(&params), b"pw", salt.as_salt(), &mut memory).unwrap();
        assert_eq!(ours.to_string(), standard.to_string());
        assert!(argon2(&params).verify_password(b"pw", &ours).is_ok());
        // Verifying in the same memory, under the stored hash's parameters (not the store's).
        let stored = PasswordHash::new(&ours.to_string()).unwrap().to_string();
        let stored = PasswordHash::new(&stored).unwrap();
        assert!(verify_phc(b"pw", &stored, &mut memory).is_ok());
        assert!(verify_phc(b"pW", &stored, &mut memory).is_err());
        let older = argon2(&argon2::Params::new(128, 2, 1, Some(24)).unwrap())
            .hash_password(b"pw", &salt)
            .unwrap();
        assert!(verify_phc(b"pw", &older, &mut memory).is_ok());
        assert!(verify_phc(b"px", &older, &mut memory).is_err());
    }

    #[test]
    fn sign_ins_at_once_run_no_more_argon2id_than_the_bound() {
        // Each Argon2id holds 19 MiB at the default strength: 160 sign-ins at once took 3 GB
        // before the bound. Four times the bound of callers, each verifying twice.
        let (_dir, db) = open();
        db.seed_demo(1).unwrap();
        let db = std::sync::Arc::new(db);
        let callers: Vec<_> = (0..super::super::MAX_CONCURRENT_HASHES * 4)
            .map(|i| {
                let db = db.clone();
                std::thread::spawn(move || {
                    let password = if i % 2 == 0 {
                        "patient123"
                    } else {
                        "wrong-one"
                    };
                    for _ in 0..2 {
                        let found = db.verify_password("p001", None, password).unwrap();
                        assert_eq!(found.is_some(), i % 2 == 0);
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.join().unwrap();
        }
        let peak = db.peak_concurrent_hashes();
        assert!(
            (1..=super::super::MAX_CONCURRENT_HASHES).contains(&peak),
            "{peak} Argon2id at once"
        );
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
            name: None,
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
    fn a_login_maps_to_its_person_and_is_found_by_it() {
        let (_dir, db) = open();
        let nonce = [7u8; 16];
        let person = ledger::person_id(2, &nonce);
        let mut new = DEMO_ACCOUNTS[2].new_account();
        new.id = "d009".into();
        let created = db
            .create_account_as(new, PersonOf::Enrolled { home: 2, nonce }, 5)
            .unwrap();
        assert_eq!(created.person, Some(person));
        assert_eq!(created.home, Some(2));
        assert_eq!(created.name.as_deref(), Some("Ada Byron"));
        assert_eq!(db.account("d009").unwrap().unwrap(), created);
        assert_eq!(db.account_of_person(&person).unwrap().unwrap(), created);
        assert!(db.account_of_person(&[0; 16]).unwrap().is_none());
        let linked = db
            .create_account_as(
                DEMO_ACCOUNTS[0].new_account(),
                PersonOf::Linked {
                    person: [5; 16],
                    home: 0,
                },
                5,
            )
            .unwrap();
        assert_eq!(linked.person, Some([5; 16]));
        assert_eq!(
            db.verify_password("p001", None, "patient123").unwrap(),
            Some(linked)
        );
        db.create_account(DEMO_ACCOUNTS[1].new_account(), 5)
            .unwrap();
        let unassigned: Vec<String> = db
            .unassigned_accounts()
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(unassigned, vec!["p002"]);
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
