//! Enrollment: a login, the person id it maps to, the person's custodial key and the `Enroll`
//! step that puts them on chain, written in one SQLite transaction (docs/SECURITY.md, issue 9,
//! §5.1), and the seed's sample people for `--demo` (§7).

use ledger::tx::{Ask, AskWhat, Enroll, Link, Recover};
use ledger::{Hash, Meta, PersonId, SignedTx, TxHeader, TxId};
use rusqlite::OptionalExtension;
use sha2::{Digest, Sha256};

use super::accounts::{DEMO_ACCOUNTS, NewAccount, PersonOf, ValidAccount};
use super::custody::{Custody, sign_with};
use super::db::Cached;
use super::{Account, AppDb, AppError, Role, new_header};

/// This hospital's place on its chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Here {
    /// The chain's identity.
    pub genesis_hash: Hash,
    /// This validator's index in the genesis.
    pub index: u32,
    /// How many validators the genesis lists.
    pub validators: u32,
}

/// Signs a header and body as this hospital's validator (its `node.key`): the running node's
/// handle, or the key file read by a command.
pub type SignAsValidator<'a> = &'a (dyn Fn(TxHeader, Vec<u8>) -> SignedTx + Sync + 'a);

/// What enrolling at this hospital takes: its custody (the new person's custodial key), its
/// place on the chain, and its validator key (the `Enroll` is the home's statement).
#[derive(Clone, Copy)]
pub struct Enroller<'a> {
    pub custody: &'a Custody,
    pub here: &'a Here,
    pub sign: SignAsValidator<'a>,
}

/// Domain tag of the demo people's nonces.
const DEMO_NONCE_TAG: &[u8] = b"medchain/demo-person/v1";

/// The enroll nonce of demo login `login`: `SHA-256("medchain/demo-person/v1" || genesis_hash
/// || login)[0..16]`. Every node computes the same ids; only validator 0 can enroll them.
pub fn demo_nonce(genesis_hash: &Hash, login: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(DEMO_NONCE_TAG);
    h.update(genesis_hash);
    h.update(login.as_bytes());
    let digest = h.finalize();
    let mut nonce = [0u8; 16];
    nonce.copy_from_slice(&digest[..16]);
    nonce
}

/// The person id of demo login `login` on the chain `genesis_hash` names (home 0).
pub fn demo_person(genesis_hash: &Hash, login: &str) -> PersonId {
    ledger::person_id(DEMO_HOME, &demo_nonce(genesis_hash, login))
}

/// The home of the demo people.
pub const DEMO_HOME: u32 = 0;

/// The `meta` key of the chain this store belongs to (its genesis hash).
pub const GENESIS_KEY: &str = "genesis_hash";

/// The short code of an ask: `u32_le(SHA-256("medchain/ask-code/v1" || ask id)[0..4]) mod
/// 1 000 000`, six digits. Derived from a public id: a selector, not a secret.
pub fn ask_code(ask: &TxId) -> String {
    let mut h = Sha256::new();
    h.update(b"medchain/ask-code/v1");
    h.update(ask);
    let digest = h.finalize();
    let n = u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]);
    format!("{:06}", n % 1_000_000)
}

fn random_nonce() -> [u8; 16] {
    use rand::RngCore;
    let mut nonce = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    nonce
}

impl AppDb {
    /// The chain this store is bound to, if it was ever bound.
    pub(crate) fn bound_chain(&self) -> Result<Option<Hash>, AppError> {
        let stored: Option<Vec<u8>> = self.db.read(|c| {
            Ok(c.row(
                "SELECT value FROM meta WHERE key = ?1",
                [GENESIS_KEY],
                |r| r.get(0),
            )
            .optional()?)
        })?;
        stored
            .map(|bytes| {
                Hash::try_from(bytes.as_slice())
                    .map_err(|_| AppError::Storage("app.db names a malformed chain".into()))
            })
            .transpose()
    }

    /// Binds this store to the chain `genesis_hash` names. A store bound to another chain
    /// (a new genesis) forgets what belonged to the old one: every login's person, the
    /// custodial keys, the outbox, codes, reservations and prepared envelopes; its logins are
    /// enrolled again at start. Returns whether it did.
    pub fn bind_chain(&self, genesis_hash: &Hash) -> Result<bool, AppError> {
        self.db.write(|tx| {
            let stored: Option<Vec<u8>> = tx
                .row(
                    "SELECT value FROM meta WHERE key = ?1",
                    [GENESIS_KEY],
                    |r| r.get(0),
                )
                .optional()?;
            let reset = stored.is_some_and(|s| s.as_slice() != genesis_hash);
            if reset {
                tx.execute_batch(
                    "UPDATE accounts SET person = NULL, home = NULL, nonce = NULL;
                     DELETE FROM custody; DELETE FROM outbox; DELETE FROM codes;
                     DELETE FROM grant_uses; DELETE FROM prepared;",
                )?;
            }
            tx.exec(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)",
                rusqlite::params![GENESIS_KEY, &genesis_hash[..]],
            )?;
            Ok(reset)
        })
    }

    /// In the write transaction `tx`: a custodial key for `account` (enrolled here, with its
    /// nonce) and the outbox row of its `Enroll`, then a `Link` to each of `links` signed with
    /// that key (the home approves), waiting for the enrollment. Returns the enrollment's id.
    fn queue_enrollment(
        tx: &rusqlite::Connection,
        by: &Enroller<'_>,
        account: &Account,
        nonce: [u8; 16],
        links: &[u32],
        now_ms: u64,
    ) -> Result<TxId, AppError> {
        let Enroller {
            custody,
            here,
            sign,
        } = *by;
        let person = ledger::person_id(here.index, &nonce);
        let (secret, key) = custody.create_in(tx, here, &person, now_ms)?;
        let name = match account.role {
            Role::Doctor => Some(account.name.clone().unwrap_or_else(|| account.id.clone())),
            Role::Patient => None,
        };
        let enroll = Meta::Enroll(Enroll {
            person,
            nonce,
            role: account.chain_role(),
            department: account.department.clone(),
            name,
            home: here.index,
            keys: vec![key],
        });
        let signed = sign(new_header(enroll, now_ms, u64::MAX), Vec::new());
        let id = signed.id(&here.genesis_hash);
        let row = Self::queue_in(
            tx,
            &here.genesis_hash,
            &signed,
            Some(&account.id),
            None,
            now_ms,
        )?;
        for validator in links.iter().filter(|v| **v != here.index) {
            let link = Meta::Link(Link {
                person,
                validator: *validator,
                ask: None,
            });
            let header = new_header(link, now_ms, u64::MAX);
            let signed = sign_with(&secret, &person, &here.genesis_hash, header, Vec::new());
            Self::queue_in(
                tx,
                &here.genesis_hash,
                &signed,
                Some(&account.id),
                Some(row),
                now_ms,
            )?;
        }
        Ok(id)
    }

    /// `medchain user add`: a login enrolled here (`nonce` random unless given), its custodial
    /// key (sealed) and its `Enroll` step, in one transaction. Returns the account and the id
    /// of its enrollment.
    pub fn add_enrolled(
        &self,
        by: &Enroller<'_>,
        new: NewAccount,
        nonce: Option<[u8; 16]>,
        links: &[u32],
        now_ms: u64,
    ) -> Result<(Account, TxId), AppError> {
        let here = by.here;
        let valid: ValidAccount = self.validate_account(new)?;
        let nonce = nonce.unwrap_or_else(random_nonce);
        self.db.write(|tx| {
            let person = PersonOf::Enrolled {
                home: here.index,
                nonce,
            };
            let account = Self::insert_account(tx, &valid, person, now_ms)?;
            let id = Self::queue_enrollment(tx, by, &account, nonce, links, now_ms)?;
            Ok((account, id))
        })
    }

    /// Enrolls an existing login that maps to no person yet, here.
    fn enroll_existing(
        &self,
        by: &Enroller<'_>,
        account: &Account,
        nonce: [u8; 16],
        links: &[u32],
        now_ms: u64,
    ) -> Result<TxId, AppError> {
        let here = by.here;
        self.db.write(|tx| {
            let person = PersonOf::Enrolled {
                home: here.index,
                nonce,
            };
            Self::assign_person(tx, &account.id, person)?;
            let account = Account {
                person: Some(ledger::person_id(here.index, &nonce)),
                home: Some(here.index),
                name: match account.role {
                    Role::Doctor => Some(account.name.clone().unwrap_or(account.id.clone())),
                    Role::Patient => None,
                },
                ..account.clone()
            };
            Self::queue_enrollment(tx, by, &account, nonce, links, now_ms)
        })
    }

    /// Enrolls here every login that maps to no person (made before identities were on chain,
    /// or of an earlier chain). Returns the logins enrolled.
    pub fn enroll_unassigned(
        &self,
        by: &Enroller<'_>,
        now_ms: u64,
    ) -> Result<Vec<String>, AppError> {
        let mut enrolled = Vec::new();
        for account in self.unassigned_accounts()? {
            self.enroll_existing(by, &account, random_nonce(), &[], now_ms)?;
            enrolled.push(account.id);
        }
        Ok(enrolled)
    }

    /// `medchain user link`: a login here for `person`, whose home is `home`, and this
    /// hospital's `Ask` to serve them (signed with its validator key), in one transaction.
    /// The person approves the ask's code with a key they hold. Returns the account and the
    /// ask's id.
    pub fn add_linked(
        &self,
        by: &Enroller<'_>,
        new: NewAccount,
        person: PersonId,
        home: u32,
        now_ms: u64,
    ) -> Result<(Account, TxId), AppError> {
        let valid = self.validate_account(new)?;
        self.db.write(|tx| {
            let account =
                Self::insert_account(tx, &valid, PersonOf::Linked { person, home }, now_ms)?;
            let ask = Meta::Ask(Ask {
                person,
                what: AskWhat::Link,
            });
            let signed = (by.sign)(new_header(ask, now_ms, u64::MAX), Vec::new());
            let id = signed.id(&by.here.genesis_hash);
            Self::queue_in(
                tx,
                &by.here.genesis_hash,
                &signed,
                Some(&account.id),
                None,
                now_ms,
            )?;
            Ok((account, id))
        })
    }

    /// `medchain user recover`: a new custodial key for a person enrolled here (sealed) and
    /// this hospital's `Recover`, in one transaction. The key signs once the chain's waiting
    /// period is over, unless one of the person's keys revokes it first. Returns its id.
    pub fn start_recovery(
        &self,
        by: &Enroller<'_>,
        login: &str,
        now_ms: u64,
    ) -> Result<TxId, AppError> {
        let account = self.account(login)?.ok_or(AppError::NotFound)?;
        let person = match (account.person, account.home) {
            (Some(person), Some(home)) if home == by.here.index => person,
            _ => {
                return Err(AppError::invalid(
                    "id",
                    "only the home hospital recovers a person's identity",
                ));
            }
        };
        self.db.write(|tx| {
            let (_, key) = by.custody.create_in(tx, by.here, &person, now_ms)?;
            let recover = Meta::Recover(Recover { person, key });
            let signed = (by.sign)(new_header(recover, now_ms, u64::MAX), Vec::new());
            let id = signed.id(&by.here.genesis_hash);
            Self::queue_in(
                tx,
                &by.here.genesis_hash,
                &signed,
                Some(login),
                None,
                now_ms,
            )?;
            Ok(id)
        })
    }

    /// `--demo`: the seed's four sample logins, mapped to the four demo people (home 0). At
    /// validator 0 they are enrolled (custodial keys, `Enroll`, and a `Link` to each of
    /// `links`); elsewhere the logins are linked logins that work once the chain shows the
    /// link. Idempotent. Returns the logins it created.
    pub fn setup_demo(
        &self,
        by: &Enroller<'_>,
        links: &[u32],
        now_ms: u64,
    ) -> Result<Vec<String>, AppError> {
        let here = by.here;
        let mut created = Vec::new();
        for demo in DEMO_ACCOUNTS {
            let nonce = demo_nonce(&here.genesis_hash, demo.id);
            let person = ledger::person_id(DEMO_HOME, &nonce);
            let existing = self.account(demo.id)?;
            if here.index == DEMO_HOME {
                match existing {
                    None => {
                        self.add_enrolled(by, demo.new_account(), Some(nonce), links, now_ms)?;
                        created.push(demo.id.to_string());
                    }
                    Some(account) if account.person.is_none() => {
                        self.enroll_existing(by, &account, nonce, links, now_ms)?;
                    }
                    Some(_) => {}
                }
            } else {
                let linked = PersonOf::Linked {
                    person,
                    home: DEMO_HOME,
                };
                match existing {
                    None => {
                        self.create_account_as(demo.new_account(), linked, now_ms)?;
                        created.push(demo.id.to_string());
                    }
                    Some(account) if account.person.is_none() => {
                        self.db
                            .write(|tx| Self::assign_person(tx, &account.id, linked))?;
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::outbox::OutboxState;
    use ed25519_dalek::SigningKey;
    use ledger::Signer;

    const GENESIS: Hash = [4; 32];

    fn here(index: u32) -> Here {
        Here {
            genesis_hash: GENESIS,
            index,
            validators: 4,
        }
    }

    fn open(dir: &std::path::Path) -> (AppDb, Custody) {
        let app = crate::app::test_db(&dir.join("app.db"));
        let custody = Custody::open(&crate::app::test_key(1), &app).unwrap();
        (app, custody)
    }

    #[test]
    fn demo_ids_are_derived_from_the_genesis_and_the_login() {
        let a = demo_person(&GENESIS, "p001");
        assert_eq!(a, ledger::person_id(0, &demo_nonce(&GENESIS, "p001")));
        assert_ne!(a, demo_person(&GENESIS, "p002"));
        assert_ne!(a, demo_person(&[5; 32], "p001"));
        let mut h = Sha256::new();
        h.update(b"medchain/demo-person/v1");
        h.update(GENESIS);
        h.update(b"p001");
        assert_eq!(demo_nonce(&GENESIS, "p001")[..], h.finalize()[..16]);
    }

    #[test]
    fn the_demo_at_home_enrolls_each_person_once_with_links_after_the_enrollment() {
        let dir = tempfile::tempdir().unwrap();
        let (app, custody) = open(dir.path());
        let validator = SigningKey::from_bytes(&[8; 32]);
        let sign = |h: TxHeader, b: Vec<u8>| {
            let mut h = h;
            h.signer = Signer::Validator { index: 0 };
            SignedTx::sign(h, b, &GENESIS, &validator)
        };
        let here0 = here(0);
        let by = Enroller {
            custody: &custody,
            here: &here0,
            sign: &sign,
        };
        let created = app.setup_demo(&by, &[1, 2, 3], 10).unwrap();
        assert_eq!(created, vec!["p001", "p002", "d001", "d002"]);
        // Again: nothing new.
        assert!(app.setup_demo(&by, &[1, 2, 3], 11).unwrap().is_empty());
        let rows = app.outbox().unwrap();
        assert_eq!(rows.len(), 4 * 4);
        let d001 = app.account("d001").unwrap().unwrap();
        assert_eq!(d001.person, Some(demo_person(&GENESIS, "d001")));
        assert_eq!(d001.home, Some(0));
        let mine: Vec<_> = rows
            .iter()
            .filter(|r| r.account.as_deref() == Some("d001"))
            .collect();
        let Meta::Enroll(enroll) = mine[0].tx.meta() else {
            panic!("first step is the enrollment")
        };
        assert_eq!(enroll.person, demo_person(&GENESIS, "d001"));
        assert_eq!(enroll.department.as_deref(), Some("Cardiology"));
        assert_eq!(enroll.name.as_deref(), Some("Ada Byron"));
        assert_eq!(mine[0].tx.header.not_after_ms, u64::MAX);
        assert_eq!(mine[0].tx.header.signer, Signer::Validator { index: 0 });
        assert_eq!(
            custody.keys_of(&app, &enroll.person).unwrap(),
            vec![enroll.keys[0].key]
        );
        for link in &mine[1..] {
            assert_eq!(link.after, Some(mine[0].id));
            assert!(matches!(link.tx.meta(), Meta::Link(l) if l.person == enroll.person));
            assert_eq!(
                link.tx.header.signer,
                Signer::Custodial {
                    person: enroll.person,
                    key: enroll.keys[0].key
                }
            );
        }
        // Only enrollments are due until they are done.
        let due = app.outbox_due().unwrap();
        assert_eq!(due.len(), 4);
        assert!(due.iter().all(|r| r.kind == "enroll"));
        app.outbox_mark(mine[0].id, OutboxState::Done, None, Some(1), 12)
            .unwrap();
        assert_eq!(app.outbox_due().unwrap().len(), 3 + 3);
        // A failed enrollment fails its links.
        let p001 = rows
            .iter()
            .find(|r| r.account.as_deref() == Some("p001"))
            .unwrap();
        app.outbox_mark(p001.id, OutboxState::Failed, Some("no"), Some(1), 12)
            .unwrap();
        let failed = app
            .outbox()
            .unwrap()
            .into_iter()
            .filter(|r| r.state == OutboxState::Failed)
            .count();
        assert_eq!(failed, 4);
    }

    #[test]
    fn elsewhere_the_demo_logins_are_linked_to_the_same_people() {
        let dir = tempfile::tempdir().unwrap();
        let (app, custody) = open(dir.path());
        let sign = |_: TxHeader, _: Vec<u8>| -> SignedTx { panic!("nothing to sign") };
        let here2 = here(2);
        let by = Enroller {
            custody: &custody,
            here: &here2,
            sign: &sign,
        };
        app.setup_demo(&by, &[], 10).unwrap();
        let p001 = app.account("p001").unwrap().unwrap();
        assert_eq!(p001.person, Some(demo_person(&GENESIS, "p001")));
        assert_eq!(p001.home, Some(0));
        assert!(app.outbox().unwrap().is_empty());
        assert!(
            custody
                .keys_of(&app, &demo_person(&GENESIS, "p001"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_recovery_and_a_link_are_queued_with_what_they_need_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let (app, custody) = open(dir.path());
        let validator = SigningKey::from_bytes(&[8; 32]);
        let sign = |mut h: TxHeader, b: Vec<u8>| {
            h.signer = Signer::Validator { index: 0 };
            SignedTx::sign(h, b, &GENESIS, &validator)
        };
        let here0 = here(0);
        let by = Enroller {
            custody: &custody,
            here: &here0,
            sign: &sign,
        };
        app.setup_demo(&by, &[], 10).unwrap();
        let person = demo_person(&GENESIS, "p001");
        let recovery = app.start_recovery(&by, "p001", 20).unwrap();
        let row = app.outbox_row_of(&recovery).unwrap().unwrap();
        let Meta::Recover(recover) = row.tx.meta() else {
            panic!("a recovery")
        };
        assert_eq!(recover.person, person);
        assert_eq!(row.tx.header.signer, Signer::Validator { index: 0 });
        // The new custodial key is held (sealed), newest first.
        assert_eq!(custody.keys_of(&app, &person).unwrap()[0], recover.key.key);
        // Only the home recovers.
        let here2 = here(2);
        let elsewhere = Enroller { here: &here2, ..by };
        assert!(app.start_recovery(&elsewhere, "p002", 20).is_err());
        // A linked login and its ask, signed by this validator.
        let mut new = DEMO_ACCOUNTS[0].new_account();
        new.id = "c-0042".into();
        let (account, ask) = app.add_linked(&elsewhere, new, person, 0, 30).unwrap();
        assert_eq!(account.person, Some(person));
        assert_eq!(account.home, Some(0));
        let row = app.outbox_row_of(&ask).unwrap().unwrap();
        assert_eq!(row.account.as_deref(), Some("c-0042"));
        assert!(matches!(row.tx.meta(), Meta::Ask(a) if a.person == person
            && a.what == AskWhat::Link));
        assert_eq!(ask_code(&ask).len(), 6);
    }

    #[test]
    fn a_new_genesis_forgets_the_old_chain_and_logins_are_enrolled_again() {
        let dir = tempfile::tempdir().unwrap();
        let (app, custody) = open(dir.path());
        let validator = SigningKey::from_bytes(&[8; 32]);
        let sign = |h: TxHeader, b: Vec<u8>| SignedTx::sign(h, b, &GENESIS, &validator);
        let here0 = here(0);
        let by = Enroller {
            custody: &custody,
            here: &here0,
            sign: &sign,
        };
        assert!(!app.bind_chain(&GENESIS).unwrap());
        app.setup_demo(&by, &[], 10).unwrap();
        assert!(!app.bind_chain(&GENESIS).unwrap());
        assert!(app.bind_chain(&[6; 32]).unwrap());
        assert!(app.outbox().unwrap().is_empty());
        assert_eq!(app.unassigned_accounts().unwrap().len(), 4);
        let enrolled = app.enroll_unassigned(&by, 20).unwrap();
        assert_eq!(enrolled.len(), 4);
        assert!(app.unassigned_accounts().unwrap().is_empty());
        assert_eq!(app.outbox().unwrap().len(), 4);
    }
}
