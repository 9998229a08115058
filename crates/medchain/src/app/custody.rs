//! Custodial keys: the Ed25519 keys a home hospital holds for its people, so that a client
//! that signs nothing (the seed's HTTP contract, scripts, the in-person screen) is still served
//! by a signature of the person's (docs/SECURITY.md, issue 9, §5.0).
//!
//! Each secret is stored in `app.db` (`custody`) sealed with XChaCha20-Poly1305 under the
//! operator key's custody subkey ([`Purpose::Custody`], docs/SECURITY.md, "Confidential
//! records", §3.3), which is never stored: a copy of the data directory alone signs nothing.
//! The associated data binds a sealed secret to its chain, person and public key: a row moved
//! to another person or chain does not open. An operator key that does not open the rows of
//! its `app.db` stops the node at start. This is the place to plug a hospital's HSM.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ed25519_dalek::SigningKey;
use ledger::master::{MasterKey, Purpose};
use ledger::tx::{KeyKind, NewKey};
use ledger::{Hash, PersonId, PublicKey, SignedTx, Signer, TxHeader};
use rand::RngCore;
use rand::rngs::OsRng;
use rusqlite::{OptionalExtension, params};
use zeroize::Zeroizing;

use super::db::Cached;
use super::{AppDb, AppError, Here, to_sql_ms};

/// Associated data of every sealed secret: the format, then the chain, person and public key.
const SEAL_TAG: &[u8] = b"medchain/custody/v2";

/// Bytes of the random nonce before each sealed secret.
const NONCE_BYTES: usize = 24;

/// The label a custodial key is registered with on chain (user text, shown second).
pub const CUSTODIAL_LABEL: &str = "held by the home hospital";

/// The sealing key of one hospital's custody store.
pub struct Custody {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Custody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Custody(..)")
    }
}

fn associated_data(genesis_hash: &Hash, person: &PersonId, public_key: &PublicKey) -> Vec<u8> {
    let mut ad = Vec::with_capacity(SEAL_TAG.len() + 80);
    ad.extend_from_slice(SEAL_TAG);
    ad.extend_from_slice(genesis_hash);
    ad.extend_from_slice(person);
    ad.extend_from_slice(public_key);
    ad
}

impl Custody {
    /// Opens the custody of `app` under `operator_key`'s custody subkey. Every stored secret
    /// must open (under the chain `app` is bound to): an operator key that is not the one they
    /// were sealed under is refused.
    pub fn open(operator_key: &MasterKey, app: &AppDb) -> Result<Custody, AppError> {
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
        let subkey = operator_key.subkey(Purpose::Custody);
        let custody = Custody {
            cipher: XChaCha20Poly1305::new(subkey.as_ref().into()),
        };
        if rows.is_empty() {
            return Ok(custody);
        }
        let genesis_hash = app.bound_chain()?.ok_or_else(|| {
            AppError::Storage("app.db holds custodial keys but names no chain".into())
        })?;
        for (public_key, person, sealed) in rows {
            let (Ok(public_key), Ok(person)) = (
                PublicKey::try_from(public_key.as_slice()),
                PersonId::try_from(person.as_slice()),
            ) else {
                return Err(AppError::Storage("a custody row is malformed".into()));
            };
            if custody
                .open_secret(&genesis_hash, &public_key, &person, &sealed)
                .is_err()
            {
                return Err(AppError::Storage(
                    "this operator key does not open the custodial keys in app.db: it is not \
                     the key they were sealed under (give the validator's own key file or \
                     passphrase)"
                        .into(),
                ));
            }
        }
        Ok(custody)
    }

    fn seal(
        &self,
        genesis_hash: &Hash,
        secret: &SigningKey,
        person: &PersonId,
    ) -> Result<Vec<u8>, AppError> {
        let public_key = secret.verifying_key().to_bytes();
        let mut nonce = [0u8; NONCE_BYTES];
        OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: &associated_data(genesis_hash, person, &public_key),
                },
            )
            .map_err(|_| AppError::Storage("cannot seal a custodial key".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn open_secret(
        &self,
        genesis_hash: &Hash,
        public_key: &PublicKey,
        person: &PersonId,
        sealed: &[u8],
    ) -> Result<SigningKey, AppError> {
        let bad = || AppError::Storage("a custodial key does not open".into());
        if sealed.len() < NONCE_BYTES {
            return Err(bad());
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        let plain = Zeroizing::new(
            self.cipher
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: &associated_data(genesis_hash, person, public_key),
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
        tx: &rusqlite::Connection,
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
        let sealed = self.seal(&here.genesis_hash, &secret, person)?;
        tx.exec(
            "INSERT INTO custody(public_key, person, sealed_secret, created_ms)
             VALUES (?1, ?2, ?3, ?4)",
            params![&new_key.key[..], &person[..], sealed, to_sql_ms(now_ms)],
        )?;
        Ok((secret, new_key))
    }

    /// The public keys held for `person`, newest first.
    pub fn keys_of(&self, app: &AppDb, person: &PersonId) -> Result<Vec<PublicKey>, AppError> {
        app.db.read(|c| {
            let mut st = c.prepare_cached(
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

    /// The secret of custodial key `public_key` of `person` on the chain `genesis_hash`
    /// names, if this hospital holds it.
    fn secret(
        &self,
        app: &AppDb,
        genesis_hash: &Hash,
        person: &PersonId,
        public_key: &PublicKey,
    ) -> Result<Option<SigningKey>, AppError> {
        let sealed: Option<Vec<u8>> = app.db.read(|c| {
            Ok(c.row(
                "SELECT sealed_secret FROM custody WHERE public_key = ?1 AND person = ?2",
                params![&public_key[..], &person[..]],
                |r| r.get(0),
            )
            .optional()?)
        })?;
        sealed
            .map(|s| self.open_secret(genesis_hash, public_key, person, &s))
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
        let Some(secret) = self.secret(app, genesis_hash, person, public_key)? else {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::app::test_key;

    fn open(dir: &Path) -> AppDb {
        crate::app::test_db(&dir.join("app.db"))
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
    fn a_key_is_sealed_signs_and_needs_its_operator_key() {
        let dir = tempfile::tempdir().unwrap();
        let app = open(dir.path());
        let here = Here {
            genesis_hash: [9u8; 32],
            index: 2,
            validators: 4,
        };
        let genesis = here.genesis_hash;
        app.bind_chain(&genesis).unwrap();
        let custody = Custody::open(&test_key(1), &app).unwrap();
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
        // Another person's row does not sign; on another chain the row does not open.
        assert!(
            custody
                .sign(&app, &genesis, &[2; 16], &new_key.key, header(), vec![])
                .unwrap()
                .is_none()
        );
        assert!(
            custody
                .sign(&app, &[8; 32], &person, &new_key.key, header(), vec![])
                .is_err()
        );
        // Reopened with the same operator key: fine. With another: refused.
        assert!(Custody::open(&test_key(1), &app).is_ok());
        let error = Custody::open(&test_key(2), &app).unwrap_err().to_string();
        assert!(error.contains("does not open"), "{error}");
    }

    #[test]
    fn a_row_moved_to_another_person_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let app = open(dir.path());
        app.bind_chain(&[0; 32]).unwrap();
        let custody = Custody::open(&test_key(1), &app).unwrap();
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
        assert!(Custody::open(&test_key(1), &app).is_ok());
        app.db
            .write(|tx| {
                tx.execute("UPDATE custody SET person = ?1", [&[2u8; 16][..]])?;
                Ok::<_, AppError>(())
            })
            .unwrap();
        assert!(Custody::open(&test_key(1), &app).is_err());
    }
}
