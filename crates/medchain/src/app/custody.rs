//! Custodial keys: the Ed25519 keys a home hospital holds for its people, so that a client
//! that signs nothing (the seed's HTTP contract, scripts, the in-person screen) is still served
//! by a signature of the person's (docs/SECURITY.md, issue 9, §5.0).
//!
//! Each secret is stored in `app.db` (`custody`) sealed with ChaCha20-Poly1305 under the
//! 32-byte key in `DIR/<name>/custody.key` (mode 0600, never in `app.db`), so that a copy of
//! `app.db` alone signs nothing. The associated data binds a sealed secret to its public key
//! and person: a row moved to another person does not open. A `custody.key` that does not
//! open the rows of its `app.db` stops the node at start; a new one is made only while there
//! are no rows. This is the place to plug a hospital's HSM.

use std::io::Write;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use ed25519_dalek::SigningKey;
use ledger::tx::{KeyKind, NewKey};
use ledger::{Hash, PersonId, PublicKey, SignedTx, Signer, TxHeader};
use rand::RngCore;
use rand::rngs::OsRng;
use rusqlite::{OptionalExtension, Transaction, params};
use zeroize::Zeroizing;

use super::{AppDb, AppError, Here, to_sql_ms};

/// The file name of the sealing key, beside `node.key`.
pub const CUSTODY_KEY_FILE: &str = "custody.key";

/// Associated data of every sealed secret: the format, then the public key and person.
const SEAL_TAG: &[u8] = b"medchain/custody/v1";

/// The label a custodial key is registered with on chain (user text, shown second).
pub const CUSTODIAL_LABEL: &str = "held by the home hospital";

/// The sealing key of one hospital's custody store.
pub struct Custody {
    cipher: ChaCha20Poly1305,
    path: PathBuf,
}

impl std::fmt::Debug for Custody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Custody").field("path", &self.path).finish()
    }
}

fn associated_data(public_key: &PublicKey, person: &PersonId) -> Vec<u8> {
    let mut ad = Vec::with_capacity(SEAL_TAG.len() + 48);
    ad.extend_from_slice(SEAL_TAG);
    ad.extend_from_slice(public_key);
    ad.extend_from_slice(person);
    ad
}

impl Custody {
    /// Opens the custody of `app` with the key at `path`. A missing key file is created (32
    /// random bytes, mode 0600, fsynced) only while `app.db` holds no custodial secret; a key
    /// that does not open every stored secret is refused, naming the file.
    pub fn open(path: &Path, app: &AppDb) -> Result<Custody, AppError> {
        let rows = app.db.read(|c| {
            let mut st = c.prepare("SELECT public_key, person, sealed_secret FROM custody")?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        let key = match read_key(path)? {
            Some(key) => key,
            None if rows.is_empty() => create_key(path)?,
            None => {
                return Err(AppError::Storage(format!(
                    "{} is missing but app.db holds {} custodial key(s) sealed under it: restore \
                     it from your backup (a new one would open none of them)",
                    path.display(),
                    rows.len()
                )));
            }
        };
        let custody = Custody {
            cipher: ChaCha20Poly1305::new((&*key).into()),
            path: path.to_path_buf(),
        };
        for (public_key, person, sealed) in rows {
            let (Ok(public_key), Ok(person)) = (
                PublicKey::try_from(public_key.as_slice()),
                PersonId::try_from(person.as_slice()),
            ) else {
                return Err(AppError::Storage("a custody row is malformed".into()));
            };
            if custody.open_secret(&public_key, &person, &sealed).is_err() {
                return Err(AppError::Storage(format!(
                    "{} does not open the custodial keys in app.db: it is not the key they were \
                     sealed with (restore the right custody.key from your backup)",
                    path.display()
                )));
            }
        }
        Ok(custody)
    }

    /// Where the sealing key lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn seal(&self, secret: &SigningKey, person: &PersonId) -> Result<Vec<u8>, AppError> {
        let public_key = secret.verifying_key().to_bytes();
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: &associated_data(&public_key, person),
                },
            )
            .map_err(|_| AppError::Storage("cannot seal a custodial key".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn open_secret(
        &self,
        public_key: &PublicKey,
        person: &PersonId,
        sealed: &[u8],
    ) -> Result<SigningKey, AppError> {
        let bad = || AppError::Storage("a custodial key does not open".into());
        if sealed.len() < 12 {
            return Err(bad());
        }
        let (nonce, ciphertext) = sealed.split_at(12);
        let plain = Zeroizing::new(
            self.cipher
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: &associated_data(public_key, person),
                    },
                )
                .map_err(|_| bad())?,
        );
        let bytes: &[u8; 32] = plain.as_slice().try_into().map_err(|_| bad())?;
        let secret = SigningKey::from_bytes(bytes);
        if secret.verifying_key().to_bytes() != *public_key {
            return Err(bad());
        }
        Ok(secret)
    }

    /// Makes a new custodial key for `person` on the chain `here` names, with its proof of
    /// possession (of this validator's origin: the custody that holds it), and stores it sealed
    /// in the write transaction `tx` (so that the secret is kept exactly when the step that
    /// registers it is queued).
    pub(crate) fn create_in(
        &self,
        tx: &Transaction<'_>,
        here: &Here,
        person: &PersonId,
        now_ms: u64,
    ) -> Result<(SigningKey, NewKey), AppError> {
        let secret = SigningKey::generate(&mut OsRng);
        let new_key = NewKey::prove(
            &here.genesis_hash,
            person,
            KeyKind::Custodial,
            here.index,
            CUSTODIAL_LABEL,
            &secret,
        );
        let sealed = self.seal(&secret, person)?;
        tx.execute(
            "INSERT INTO custody(public_key, person, sealed_secret, created_ms)
             VALUES (?1, ?2, ?3, ?4)",
            params![&new_key.key[..], &person[..], sealed, to_sql_ms(now_ms)],
        )?;
        Ok((secret, new_key))
    }

    /// The public keys held for `person`, newest first.
    pub fn keys_of(&self, app: &AppDb, person: &PersonId) -> Result<Vec<PublicKey>, AppError> {
        app.db.read(|c| {
            let mut st = c.prepare(
                "SELECT public_key FROM custody WHERE person = ?1
                 ORDER BY created_ms DESC, rowid DESC",
            )?;
            let rows = st.query_map([&person[..]], |r| r.get::<_, Vec<u8>>(0))?;
            let mut keys = Vec::new();
            for row in rows {
                if let Ok(key) = PublicKey::try_from(row?.as_slice()) {
                    keys.push(key);
                }
            }
            Ok(keys)
        })
    }

    /// The secret of custodial key `public_key` of `person`, if this hospital holds it.
    fn secret(
        &self,
        app: &AppDb,
        person: &PersonId,
        public_key: &PublicKey,
    ) -> Result<Option<SigningKey>, AppError> {
        let sealed: Option<Vec<u8>> = app.db.read(|c| {
            Ok(c.query_row(
                "SELECT sealed_secret FROM custody WHERE public_key = ?1 AND person = ?2",
                params![&public_key[..], &person[..]],
                |r| r.get(0),
            )
            .optional()?)
        })?;
        sealed
            .map(|s| self.open_secret(public_key, person, &s))
            .transpose()
    }

    /// Signs `header` with `body` as `person`'s custodial key `public_key` (the signer is set
    /// here), on the chain `genesis_hash` names; `None` if this hospital does not hold it.
    pub fn sign(
        &self,
        app: &AppDb,
        genesis_hash: &Hash,
        person: &PersonId,
        public_key: &PublicKey,
        header: TxHeader,
        body: Vec<u8>,
    ) -> Result<Option<SignedTx>, AppError> {
        let Some(secret) = self.secret(app, person, public_key)? else {
            return Ok(None);
        };
        Ok(Some(sign_with(&secret, person, genesis_hash, header, body)))
    }
}

/// Signs `header` with `body` as `person`'s custodial key `secret`.
pub(crate) fn sign_with(
    secret: &SigningKey,
    person: &PersonId,
    genesis_hash: &Hash,
    mut header: TxHeader,
    body: Vec<u8>,
) -> SignedTx {
    header.signer = Signer::Custodial {
        person: *person,
        key: secret.verifying_key().to_bytes(),
    };
    SignedTx::sign(header, body, genesis_hash, secret)
}

fn read_key(path: &Path) -> Result<Option<Zeroizing<[u8; 32]>>, AppError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => Zeroizing::new(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(AppError::Storage(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), key.as_mut()).map_err(|_| {
        AppError::Storage(format!("{} does not hold 32 bytes of hex", path.display()))
    })?;
    Ok(Some(key))
}

fn create_key(path: &Path) -> Result<Zeroizing<[u8; 32]>, AppError> {
    let io = |e: std::io::Error| AppError::Storage(format!("cannot write {}: {e}", path.display()));
    let mut key = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(key.as_mut());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    let text = Zeroizing::new(format!("{}\n", hex::encode(key.as_ref())));
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    if let Some(dir) = path.parent()
        && let Ok(dir) = std::fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::AppConfig;

    fn open(dir: &Path) -> AppDb {
        AppDb::open_with(&dir.join("app.db"), AppConfig::fast_hashing_for_tests()).unwrap()
    }

    fn header() -> TxHeader {
        TxHeader {
            meta: ledger::Meta::Revoke(ledger::tx::Revoke {
                patient: [1; 16],
                target: [2; 32],
            }),
            signer: Signer::Validator { index: 0 },
            created_ms: 1,
            not_after_ms: 2,
            nonce: [3; 16],
            body_hash: [0; 32],
        }
    }

    #[test]
    fn a_key_is_sealed_signs_and_needs_its_custody_key() {
        let dir = tempfile::tempdir().unwrap();
        let app = open(dir.path());
        let key_path = dir.path().join(CUSTODY_KEY_FILE);
        let custody = Custody::open(&key_path, &app).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let here = Here {
            genesis_hash: [9u8; 32],
            index: 2,
            validators: 4,
        };
        let genesis = here.genesis_hash;
        let person = [1u8; 16];
        let (secret, new_key) = app
            .db
            .write(|tx| custody.create_in(tx, &here, &person, 5))
            .unwrap();
        assert_eq!(new_key.key, secret.verifying_key().to_bytes());
        assert_eq!((new_key.kind, new_key.origin), (KeyKind::Custodial, 2));
        assert!(ledger::crypto::verify_signature_bytes(
            &new_key.key,
            &new_key.pop_bytes(&genesis, &person),
            &new_key.pop
        ));
        // The secret is not in app.db in the clear.
        let stored: Vec<u8> = app
            .db
            .read(|c| Ok(c.query_row("SELECT sealed_secret FROM custody", [], |r| r.get(0))?))
            .unwrap();
        assert!(!stored.windows(32).any(|w| w == secret.as_bytes()));
        assert_eq!(custody.keys_of(&app, &person).unwrap(), vec![new_key.key]);
        let signed = custody
            .sign(&app, &genesis, &person, &new_key.key, header(), vec![7])
            .unwrap()
            .unwrap();
        assert_eq!(
            signed.header.signer,
            Signer::Custodial {
                person,
                key: new_key.key
            }
        );
        assert!(ledger::crypto::verify_signature_bytes(
            &new_key.key,
            &signed.signing_bytes(&genesis),
            &signed.signature
        ));
        // Another person's row does not sign.
        assert!(
            custody
                .sign(&app, &genesis, &[2; 16], &new_key.key, header(), vec![])
                .unwrap()
                .is_none()
        );
        // Reopened with the same key: fine. Without it: refused, never replaced.
        assert!(Custody::open(&key_path, &app).is_ok());
        std::fs::rename(&key_path, dir.path().join("kept")).unwrap();
        let error = Custody::open(&key_path, &app).unwrap_err().to_string();
        assert!(error.contains("is missing"), "{error}");
        assert!(!key_path.exists());
        // With another key: refused.
        create_key(&key_path).unwrap();
        let error = Custody::open(&key_path, &app).unwrap_err().to_string();
        assert!(error.contains("does not open"), "{error}");
    }

    #[test]
    fn a_row_moved_to_another_person_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let app = open(dir.path());
        let key_path = dir.path().join(CUSTODY_KEY_FILE);
        let custody = Custody::open(&key_path, &app).unwrap();
        app.db
            .write(|tx| {
                let here = Here {
                    genesis_hash: [0; 32],
                    index: 0,
                    validators: 4,
                };
                custody.create_in(tx, &here, &[1; 16], 5)
            })
            .unwrap();
        app.db
            .write(|tx| {
                tx.execute("UPDATE custody SET person = ?1", [&[2u8; 16][..]])?;
                Ok::<_, AppError>(())
            })
            .unwrap();
        assert!(Custody::open(&key_path, &app).is_err());
    }
}
