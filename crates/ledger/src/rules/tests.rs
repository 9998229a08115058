//! Unit tests of every rule: what it accepts, each reason it rejects for, and the block-time
//! edges (a grant is live at `T = expires - 1` and dead at `T = expires`; a recovered key waits
//! at `T = effective - 1` and signs at `T = effective`; a signature is good at
//! `T = not_after` and expired at `not_after + 1`).
//!
//! Every transaction goes through the store's own `write_block` (decide, then apply, over one
//! SQLite transaction per block), which in test builds reads through [`super::Declared`]: a rule
//! that reads what it does not declare fails these tests with `Error::UndeclaredRead`.
//! Tests named `attack_N_...` check the amendments of /work/design9-decisions.md that answer
//! finding N of the attack on the design.
use std::path::Path;

use ed25519_dalek::SigningKey;
use rusqlite::Connection;

use super::reason::*;
use super::*;
use crate::Hash;
use crate::store::{self, Queries, SqlState};
use crate::testkit::{self, TestNet, TestPerson, key_from, public};
use crate::tx::{Access, AddRecord, Enroll, Grant, Meta, SignedTx, Signer};

mod erasure;
mod red_team_s24;
mod red_team_s51;
mod red_team_s59;

const T0: u64 = testkit::GENESIS_TIME_MS + 10_000;
const HOUR: u64 = 3_600_000;

/// A chain in memory, appended block by block through the store's code.
struct Chain {
    net: TestNet,
    conn: Connection,
    index: store::Index,
    head: (u64, Hash),
    /// The time of the next block [`Chain::ok`] and [`Chain::now`] make.
    now: u64,
}

impl Queries for Chain {
    fn connection(&self) -> &Connection {
        &self.conn
    }

    fn index(&self) -> &store::Index {
        &self.index
    }
}

type Verdict = std::result::Result<(), &'static str>;

impl Chain {
    fn new() -> Chain {
        Chain::with_net(TestNet::new(4))
    }

    fn with_net(net: TestNet) -> Chain {
        let mut conn = Connection::open_in_memory().expect("memory");
        store::schema::migrate(&mut conn, Path::new(":memory:")).expect("schema");
        store::insert_block(&conn, net.genesis.block(), &net.genesis.hash()).expect("genesis");
        Chain {
            head: (0, net.genesis.hash()),
            net,
            conn,
            index: store::Index::default(),
            now: T0,
        }
    }

    /// A block at time `t` holding `txs`: each one's verdict.
    fn append(&mut self, t: u64, txs: &[&SignedTx]) -> Vec<Verdict> {
        let entries = txs.iter().map(|tx| self.net.request(tx)).collect();
        let block = self.net.block_at(self.head, t, entries);
        let checked = self.net.check(&block);
        let db = self.conn.transaction().expect("begin");
        let applied = store::write_block(
            &db,
            &self.index,
            &self.net.genesis,
            &block,
            &block.hash(),
            &checked,
        )
        .expect("the rules read only what they declare");
        db.commit().expect("commit");
        // Every grant the writer holds (`Index::grants`) reads as its row does, at its row.
        let rows = SqlState::snapshot(&self.conn, &self.index);
        for (id, (grant, row)) in self.index.grants.all() {
            assert_eq!(rows.grant(&id).expect("grant"), Some(grant), "held grant");
            assert_eq!(
                rows.tx_row(&id).expect("row"),
                Some(row),
                "held grant's row"
            );
        }
        self.head = (block.header.height, block.hash());
        self.now = self.now.max(t + 1_000);
        let mut verdicts = vec![Ok(()); txs.len()];
        for (i, reason) in applied.rejected {
            verdicts[i] = Err(reason);
        }
        verdicts
    }

    /// `tx` alone in a block at time `t`.
    fn at(&mut self, t: u64, tx: &SignedTx) -> Verdict {
        self.append(t, &[tx]).remove(0)
    }

    /// `tx` alone in the next block.
    fn now(&mut self, tx: &SignedTx) -> Verdict {
        let t = self.now;
        self.at(t, tx)
    }

    /// `tx` alone in the next block, which must apply it; its id.
    fn ok(&mut self, tx: &SignedTx) -> TxId {
        let meta = format!("{:?}", tx.meta());
        assert_eq!(self.now(tx), Ok(()), "{meta}");
        self.id(tx)
    }

    fn id(&self, tx: &SignedTx) -> TxId {
        self.net.id(tx)
    }

    fn view(&self) -> SqlState<'_> {
        self.state()
    }
}

/// Two hospitals' people: patient `p` and Dr `d` (Cardiology) at home 0, patient `q` and Dr `e`
/// (Oncology) at home 1, all enrolled.
struct World {
    c: Chain,
    p: TestPerson,
    q: TestPerson,
    d: TestPerson,
    e: TestPerson,
}

fn world() -> World {
    let mut c = Chain::new();
    let p = c.net.patient(1, 0);
    let q = c.net.patient(2, 1);
    let d = c.net.doctor(3, 0, "Cardiology");
    let e = c.net.doctor(4, 1, "Oncology");
    for person in [&p, &q, &d, &e] {
        let tx = c.net.enroll(person);
        c.ok(&tx);
    }
    World { c, p, q, d, e }
}

impl World {
    /// `p`'s device key added by the home (custodially, no ask): origin 0.
    fn p_device(&mut self) {
        let key = self
            .c
            .net
            .new_key(&self.p.id, KeyKind::Device, 0, &self.p.device);
        let tx = self.c.net.add_key(&self.p, key, None, &self.p.custodial());
        self.c.ok(&tx);
    }

    /// `p`'s device key added by the home custodially: young (docs/SECURITY.md, "Confidential
    /// records", §4.2) until the time returned.
    fn p_device_young(&mut self) -> u64 {
        let added_ms = self.c.now;
        self.p_device();
        added_ms + self.c.net.genesis.recovery_wait_ms()
    }

    /// `p`'s device key added by the home, and the clock past its wait: a key of the home that
    /// may share the history with any hospital.
    fn p_device_aged(&mut self) {
        let until = self.p_device_young();
        self.c.now = self.c.now.max(until);
    }

    /// A device key of `p` made at validator `origin`'s page (asked by `origin`, approved in
    /// person at the home): its secret.
    fn p_key_from(&mut self, origin: u32) -> SigningKey {
        let secret = key_from(&format!("p's key made at {origin}'s page"));
        let new = self
            .c
            .net
            .new_key(&self.p.id, KeyKind::Device, origin, &secret);
        let ask = self.c.net.ask_key(&self.p, origin, new.clone());
        let ask_id = self.c.ok(&ask);
        let add = self
            .c
            .net
            .add_key(&self.p, new, Some(ask_id), &self.p.custodial());
        self.c.ok(&add);
        secret
    }

    /// A write grant from `p` to `d`, in person; its id and its block's time.
    fn write_grant(&mut self) -> (TxId, u64) {
        let tx = self
            .c
            .net
            .grant(&self.p, &self.d.id, Scope::Write, None, &self.p.custodial());
        let t = self.c.now;
        (self.c.ok(&tx), t)
    }

    fn record(&self, grant: TxId) -> SignedTx {
        self.c
            .net
            .add_record(&self.d, &self.p.id, grant, &self.d.custodial())
    }
}

// ---------------------------------------------------------------------------------------------
// Checks common to every kind.

#[test]
fn a_transaction_applies_once() {
    let mut w = world();
    let (grant, _) = w.write_grant();
    let record = w.record(grant);
    let t = w.c.now;
    assert_eq!(w.c.append(t, &[&record, &record]), [Ok(()), Err(DUPLICATE)]);
    assert_eq!(w.c.now(&record), Err(DUPLICATE));
}

#[test]
fn a_signature_is_good_until_its_not_after() {
    let mut w = world();
    let make = |w: &World, not_after_ms: u64| {
        let mut header = w.c.net.header(
            Meta::Grant(Grant {
                patient: w.p.id,
                doctor: w.d.id,
                scope: Scope::Write,
                request: None,
                attested: Attested::InPerson,
            }),
            w.p.custodial().signer,
        );
        header.not_after_ms = not_after_ms;
        w.c.net.seal_and_sign(header, Vec::new(), &w.p.custodial)
    };
    let t = w.c.now;
    let late = make(&w, t - 1);
    assert_eq!(w.c.at(t, &late), Err(EXPIRED), "T = not_after + 1");
    let t = w.c.now;
    let on_time = make(&w, t);
    assert_eq!(w.c.at(t, &on_time), Ok(()), "T = not_after");
}

#[test]
fn each_kind_needs_its_kind_of_signer() {
    let mut w = world();
    // A grant signed by the patient's home validator, not by the patient's key.
    let meta = Meta::Grant(Grant {
        patient: w.p.id,
        doctor: w.d.id,
        scope: Scope::Write,
        request: None,
        attested: Attested::InPerson,
    });
    let tx = w.c.net.sign(meta, &w.c.net.validator(0), Vec::new());
    assert_eq!(w.c.now(&tx), Err(NEEDS_PERSON_KEY[7]));
    assert_eq!(
        NEEDS_PERSON_KEY[7],
        "grant must be signed by the person's key"
    );
    // An enrollment signed by a person's key.
    let r = w.c.net.patient(9, 0);
    let meta = Meta::Enroll(Enroll {
        person: r.id,
        nonce: r.nonce,
        role: Role::Patient,
        department: None,
        name: None,
        home: 0,
        keys: vec![w.c.net.new_key(&r.id, KeyKind::Custodial, 0, &r.custodial)],
    });
    let tx = w.c.net.sign(meta, &w.p.custodial(), Vec::new());
    assert_eq!(w.c.now(&tx), Err(NEEDS_VALIDATOR[0]));
    // An access claimed by a person.
    let meta = Meta::Access(Access {
        patient: w.p.id,
        reader: w.p.id,
        serving: 0,
        grant: None,
    });
    let tx = w.c.net.sign(meta, &w.p.custodial(), Vec::new());
    assert_eq!(w.c.now(&tx), Err(NEEDS_VALIDATOR[10]));
    assert_eq!(NEEDS_VALIDATOR[10], "access must be signed by a validator");
}

#[test]
fn the_signing_key_must_be_a_live_key_of_the_person_of_its_kind() {
    let mut w = world();
    let grant =
        |w: &World, by: &testkit::Signing| w.c.net.grant(&w.p, &w.d.id, Scope::Write, None, by);
    // A device key nobody registered.
    let tx = grant(&w, &w.p.device());
    assert_eq!(w.c.now(&tx), Err(SIGNER_KEY_NOT_OF_PERSON));
    // Another person's key, claimed as p's.
    let stolen = testkit::Signing {
        signer: Signer::Custodial {
            person: w.p.id,
            key: public(&w.q.custodial),
        },
        key: w.q.custodial.clone(),
    };
    let tx = grant(&w, &stolen);
    assert_eq!(w.c.now(&tx), Err(SIGNER_KEY_NOT_OF_PERSON));
    // p's custodial key presented as a device key.
    let as_device = w.p.device_with(&w.p.custodial);
    let tx = grant(&w, &as_device);
    assert_eq!(w.c.now(&tx), Err(SIGNER_KIND_MISMATCH));
    // A revoked key.
    w.p_device();
    let revoke =
        w.c.net
            .revoke_key(&w.p, public(&w.p.device), &w.p.custodial());
    w.c.ok(&revoke);
    let tx = grant(&w, &w.p.device());
    assert_eq!(w.c.now(&tx), Err(SIGNER_KEY_REVOKED));
    // q's key signing for p.
    let tx = grant(&w, &w.q.custodial());
    assert_eq!(w.c.now(&tx), Err(NOT_ACTING_PERSON));
}

#[test]
fn a_custodial_key_signs_only_while_its_holder_is_the_home() {
    let mut w = world();
    // The rules never let a custodial key in with another origin than the home; a store
    // edited to hold one must still not accept its signatures.
    w.c.conn
        .execute(
            "UPDATE keys SET origin = 2 WHERE key = ?1",
            [public(&w.p.custodial).as_slice()],
        )
        .expect("edit");
    let tx =
        w.c.net
            .grant(&w.p, &w.d.id, Scope::Write, None, &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(CUSTODIAL_NOT_HOME));
}

#[test]
fn a_new_keys_label_is_at_most_64_characters() {
    let mut w = world();
    let mut key = w.c.net.new_key(&w.p.id, KeyKind::Device, 0, &w.p.device);
    key.label = "é".repeat(65);
    let tx = w.c.net.add_key(&w.p, key.clone(), None, &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(LABEL_TOO_LONG));
    key.label = "é".repeat(64);
    let tx = w.c.net.add_key(&w.p, key, None, &w.p.custodial());
    assert_eq!(w.c.now(&tx), Ok(()));
}

// ---------------------------------------------------------------------------------------------
// Enroll.

#[test]
fn enroll_makes_a_person_with_keys_held_by_the_home() {
    let w = world();
    let person = w.c.person(&w.d.id).expect("q").expect("enrolled");
    assert_eq!(person.role, Role::Doctor);
    assert_eq!(person.department.as_deref(), Some("Cardiology"));
    assert_eq!(person.name.as_deref(), Some("Dr Test 3"));
    assert_eq!(person.home, 0);
    let keys = w.c.keys_of(&w.q.id).expect("q");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kind, KeyKind::Custodial);
    assert_eq!(keys[0].origin, 1);
    assert_eq!(keys[0].added_by, SignerKind::Validator);
    assert_eq!(keys[0].added, person_enrolled(&w.c, &w.q.id));
}

fn person_enrolled(c: &Chain, person: &PersonId) -> TxId {
    c.person(person).expect("q").expect("enrolled").enrolled
}

/// Builds an enrollment of `r` with `edit` applied to its metadata, signed by `signer`.
fn enroll_with(c: &Chain, r: &TestPerson, signer: u32, edit: impl FnOnce(&mut Enroll)) -> SignedTx {
    let mut meta = Enroll {
        person: r.id,
        nonce: r.nonce,
        role: r.role,
        department: r.department.clone(),
        name: r.name.clone(),
        home: r.home,
        keys: vec![
            c.net
                .new_key(&r.id, KeyKind::Custodial, r.home, &r.custodial),
        ],
    };
    edit(&mut meta);
    c.net
        .sign(Meta::Enroll(meta), &c.net.validator(signer), Vec::new())
}

#[test]
fn enroll_rejects_each_malformed_enrollment() {
    let mut w = world();
    let r = w.c.net.patient(20, 2);
    let doc = w.c.net.doctor(21, 2, "Surgery");
    let cases: Vec<(SignedTx, &str)> = vec![
        (enroll_with(&w.c, &r, 0, |_| {}), ENROLL_NOT_HOME),
        (
            enroll_with(&w.c, &r, 2, |m| m.nonce[0] ^= 1),
            PERSON_ID_NOT_DERIVED,
        ),
        (
            enroll_with(&w.c, &r, 2, |m| m.department = Some("Cardiology".into())),
            DEPARTMENT,
        ),
        (
            enroll_with(&w.c, &doc, 2, |m| m.department = None),
            DEPARTMENT,
        ),
        (
            enroll_with(&w.c, &doc, 2, |m| m.department = Some("x".repeat(65))),
            DEPARTMENT,
        ),
        (
            enroll_with(&w.c, &doc, 2, |m| {
                m.department = Some("Card\niology".into())
            }),
            DEPARTMENT,
        ),
        (
            enroll_with(&w.c, &doc, 2, |m| m.department = Some(String::new())),
            DEPARTMENT,
        ),
        (enroll_with(&w.c, &doc, 2, |m| m.name = None), DOCTOR_NAME),
        (
            enroll_with(&w.c, &r, 2, |m| m.name = Some("Alice".into())),
            DOCTOR_NAME,
        ),
        (enroll_with(&w.c, &r, 2, |m| m.keys.clear()), ENROLL_KEYS),
        (
            enroll_with(&w.c, &r, 2, |m| m.keys.push(m.keys[0].clone())),
            ENROLL_KEYS,
        ),
        (
            enroll_with(&w.c, &r, 2, |m| {
                for i in 0..8 {
                    let extra = key_from(&format!("extra {i}"));
                    m.keys.push(NewKey::prove(
                        &w.c.net.genesis.hash(),
                        &r.id,
                        KeyKind::Device,
                        2,
                        "",
                        &extra,
                    ));
                }
            }),
            ENROLL_KEYS,
        ),
        // p's custodial key, proven for r by its holder (the home of p).
        (
            enroll_with(&w.c, &r, 2, |m| {
                m.keys = vec![
                    w.c.net
                        .new_key(&r.id, KeyKind::Custodial, 2, &w.p.custodial),
                ]
            }),
            KEY_REGISTERED,
        ),
    ];
    for (tx, reason) in cases {
        let meta = format!("{:?}", tx.meta());
        assert_eq!(w.c.now(&tx), Err(reason), "{meta}");
    }
    assert!(w.c.person(&r.id).expect("q").is_none());
    let eight = enroll_with(&w.c, &r, 2, |m| {
        for i in 0..7 {
            let extra = key_from(&format!("extra {i}"));
            m.keys
                .push(w.c.net.new_key(&r.id, KeyKind::Device, 2, &extra));
        }
    });
    w.c.ok(&eight);
    assert_eq!(w.c.keys_of(&r.id).expect("q").len(), 8);
    // The same person again (another transaction with the same id and nonce).
    let again = enroll_with(&w.c, &r, 2, |m| m.keys[0].label = "again".into());
    assert_eq!(w.c.now(&again), Err(PERSON_ENROLLED));
}

/// Attack finding 3: another validator cannot enroll a person id first and become its home.
#[test]
fn attack_3_a_person_id_is_enrolled_only_by_its_home() {
    let mut w = world();
    let r = w.c.net.patient(30, 0);
    // Validator 2 enrolls r's id (derived for home 0) as its own.
    let squat = enroll_with(&w.c, &r, 2, |m| m.home = 2);
    assert_eq!(w.c.now(&squat), Err(PERSON_ID_NOT_DERIVED));
    let genuine = w.c.net.enroll(&r);
    w.c.ok(&genuine);
    assert_eq!(w.c.person(&r.id).expect("q").map(|p| p.home), Some(0));
}

/// Attack finding 4: nobody registers a key whose secret they do not hold (a proof of
/// possession is checked at the edge: such an entry is invalid, not merely rejected).
#[test]
fn attack_4_a_key_is_registered_only_with_its_proof_of_possession() {
    let mut w = world();
    let r = w.c.net.patient(31, 2);
    // Validator 2 squats p's future device key, which it saw in an ask; it cannot prove it.
    let squat = enroll_with(&w.c, &r, 2, |m| {
        let mut key = w.c.net.new_key(&r.id, KeyKind::Device, 2, &w.p.device);
        key.pop = w.c.net.new_key(&r.id, KeyKind::Device, 2, &r.device).pop;
        m.keys.push(key);
    });
    assert_eq!(w.c.now(&squat), Err(crate::Invalid::BadKeyProof.reason()));
    // A proof for another person does not carry over either.
    let squat = enroll_with(&w.c, &r, 2, |m| {
        let mut key = w.c.net.new_key(&w.p.id, KeyKind::Device, 2, &w.p.device);
        key.label = "copied from p's ask".into();
        m.keys.push(key);
    });
    assert_eq!(w.c.now(&squat), Err(crate::Invalid::BadKeyProof.reason()));
    w.p_device();
}

// ---------------------------------------------------------------------------------------------
// Ask and Link.

#[test]
fn a_link_answers_the_ask_of_the_validator_it_names() {
    let mut w = world();
    let ask = w.c.net.ask_link(&w.p, 2);
    let ask_id = w.c.ok(&ask);
    let row = w.c.ask(&ask_id).expect("q").expect("ask");
    assert_eq!(row.validator, 2);
    assert_eq!(row.expires_ms, w.c.now - 1_000 + ASK_MS);
    assert_eq!(w.c.pending_asks_for(&w.p.id, w.c.now).expect("q").len(), 1);
    let link = w.c.net.link(&w.p, 2, Some(ask_id), &w.p.custodial());
    let link_id = w.c.ok(&link);
    assert_eq!(
        w.c.ask(&ask_id).expect("q").expect("ask").answered,
        Some(link_id)
    );
    assert!(w.c.view().linked(&w.p.id, 2).expect("q"));
    assert_eq!(w.c.links_of(&w.p.id).expect("q")[0].tx, link_id);
    assert!(
        w.c.pending_asks_for(&w.p.id, w.c.now)
            .expect("q")
            .is_empty()
    );
    // Linked already: neither an ask nor a link again.
    let again = w.c.net.ask_link(&w.p, 2);
    assert_eq!(w.c.now(&again), Err(ALREADY_LINKED));
    let again = w.c.net.link(&w.p, 2, None, &w.p.custodial());
    assert_eq!(w.c.now(&again), Err(ALREADY_LINKED));
    // The answered ask answers nothing more.
    let other = w.c.net.link(&w.p, 3, Some(ask_id), &w.p.custodial());
    assert_eq!(w.c.now(&other), Err(ASK_NOT_PENDING));
}

#[test]
fn ask_rejects_asks_it_cannot_answer() {
    let mut w = world();
    let stranger = w.c.net.patient(40, 3);
    let tx = w.c.net.ask_link(&stranger, 2);
    assert_eq!(w.c.now(&tx), Err(UNKNOWN_PERSON));
    let tx = w.c.net.ask_link(&w.p, 0);
    assert_eq!(w.c.now(&tx), Err(VALIDATOR_IS_HOME));
    let taken = w.c.net.new_key(&w.p.id, KeyKind::Device, 2, &w.q.custodial);
    let tx = w.c.net.ask_key(&w.p, 2, taken);
    assert_eq!(w.c.now(&tx), Err(KEY_REGISTERED));
    let custodial =
        w.c.net
            .new_key(&w.p.id, KeyKind::Custodial, 0, &key_from("c"));
    let tx = w.c.net.ask_key(&w.p, 2, custodial.clone());
    assert_eq!(w.c.now(&tx), Err(CUSTODIAL_ASK_NOT_HOME));
    let tx = w.c.net.ask_key(&w.p, 0, custodial);
    assert_eq!(w.c.now(&tx), Ok(()), "the home offers a custodial key");
}

/// Attack finding 8: a doctor's keys are made at their home's page only.
#[test]
fn attack_8_a_doctors_key_is_asked_for_by_the_home_only() {
    let mut w = world();
    let key = w.c.net.new_key(&w.d.id, KeyKind::Device, 0, &w.d.device);
    let tx = w.c.net.ask_key(&w.d, 2, key.clone());
    assert_eq!(w.c.now(&tx), Err(DOCTOR_KEY_NOT_HOME));
    let tx = w.c.net.ask_key(&w.d, 0, key);
    assert_eq!(w.c.now(&tx), Ok(()));
}

#[test]
fn at_most_two_asks_per_validator_and_person_are_pending() {
    let mut w = world();
    let first = w.c.net.ask_link(&w.p, 2);
    let t1 = w.c.now;
    w.c.ok(&first);
    let key = w.c.net.new_key(&w.p.id, KeyKind::Device, 2, &w.p.device);
    let second = w.c.net.ask_key(&w.p, 2, key);
    w.c.ok(&second);
    let third = w.c.net.ask_link(&w.p, 2);
    assert_eq!(w.c.now(&third), Err(TOO_MANY_ASKS));
    // Another validator has its own share.
    let other = w.c.net.ask_link(&w.p, 3);
    w.c.ok(&other);
    // Once the first expires (T = its expiry), a new ask is pending in its place.
    let third = w.c.net.ask_link(&w.p, 2);
    assert_eq!(w.c.at(t1 + ASK_MS - 1, &third), Err(TOO_MANY_ASKS));
    let third = w.c.net.ask_link(&w.p, 2);
    assert_eq!(w.c.at(t1 + ASK_MS, &third), Ok(()));
}

#[test]
fn link_rejects_each_bad_link() {
    let mut w = world();
    let tx = w.c.net.link(&w.p, 9, None, &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(UNKNOWN_VALIDATOR));
    let tx = w.c.net.link(&w.p, 0, None, &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(VALIDATOR_IS_HOME));
    // An ask by validator 2, answered as if by 3; a key ask answered by a link; another
    // person's ask.
    let ask = w.c.net.ask_link(&w.p, 2);
    let ask_id = w.c.ok(&ask);
    let tx = w.c.net.link(&w.p, 3, Some(ask_id), &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(ASK_MISMATCH));
    let key = w.c.net.new_key(&w.p.id, KeyKind::Device, 3, &w.p.device);
    let key_ask = w.c.net.ask_key(&w.p, 3, key);
    let key_ask_id = w.c.ok(&key_ask);
    let tx = w.c.net.link(&w.p, 3, Some(key_ask_id), &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(ASK_MISMATCH));
    let q_ask = w.c.net.ask_link(&w.q, 2);
    let q_ask_id = w.c.ok(&q_ask);
    let tx = w.c.net.link(&w.p, 2, Some(q_ask_id), &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(ASK_MISMATCH));
    let tx = w.c.net.link(&w.p, 2, Some([7; 32]), &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(ASK_NOT_PENDING));
}

#[test]
fn an_ask_is_answered_until_its_expiry() {
    for (delay, verdict) in [(ASK_MS - 1, Ok(())), (ASK_MS, Err(ASK_NOT_PENDING))] {
        let mut w = world();
        let ask = w.c.net.ask_link(&w.p, 2);
        let t = w.c.now;
        let ask_id = w.c.ok(&ask);
        let link = w.c.net.link(&w.p, 2, Some(ask_id), &w.p.custodial());
        assert_eq!(w.c.at(t + delay, &link), verdict, "T = ask time + {delay}");
    }
}

// ---------------------------------------------------------------------------------------------
// AddKey.

#[test]
fn add_key_with_and_without_an_ask() {
    let mut w = world();
    // The home adds a device key made at its own page.
    w.p_device();
    let key = w.c.key(&public(&w.p.device)).expect("q").expect("added");
    assert_eq!(
        (key.kind, key.origin, key.added_by),
        (KeyKind::Device, 0, SignerKind::Custodial)
    );
    // A key made at validator 2's page, asked by 2, approved on p's device.
    let phone = key_from("p's phone at clinic 2");
    let new = w.c.net.new_key(&w.p.id, KeyKind::Device, 2, &phone);
    let ask = w.c.net.ask_key(&w.p, 2, new.clone());
    let ask_id = w.c.ok(&ask);
    let add = w.c.net.add_key(&w.p, new, Some(ask_id), &w.p.device());
    let add_id = w.c.ok(&add);
    let key = w.c.key(&public(&phone)).expect("q").expect("added");
    assert_eq!(
        (key.origin, key.added_by, key.added),
        (2, SignerKind::Device, add_id)
    );
    assert_eq!(
        w.c.ask(&ask_id).expect("q").expect("ask").answered,
        Some(add_id)
    );
    // The home offers a custodial key back; the person's device accepts it.
    let custody = key_from("p's second custodial key");
    let new = w.c.net.new_key(&w.p.id, KeyKind::Custodial, 0, &custody);
    let ask = w.c.net.ask_key(&w.p, 0, new.clone());
    let ask_id = w.c.ok(&ask);
    let add = w.c.net.add_key(&w.p, new, Some(ask_id), &w.p.device());
    w.c.ok(&add);
    assert_eq!(w.c.keys_of(&w.p.id).expect("q").len(), 4);
}

#[test]
fn add_key_rejects_each_bad_key() {
    let mut w = world();
    w.p_device();
    let phone = key_from("phone");
    let new = w.c.net.new_key(&w.p.id, KeyKind::Device, 0, &phone);
    // A device key added on a device without an ask from the page that made it.
    let tx = w.c.net.add_key(&w.p, new.clone(), None, &w.p.device());
    assert_eq!(w.c.now(&tx), Err(DEVICE_KEY_NEEDS_ASK));
    // A custodial key without an ask, or answering the home's ask custodially.
    let custody = key_from("custody 2");
    let new_custodial = w.c.net.new_key(&w.p.id, KeyKind::Custodial, 0, &custody);
    let tx =
        w.c.net
            .add_key(&w.p, new_custodial.clone(), None, &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(CUSTODIAL_KEY_NEEDS_HOME_ASK));
    let ask = w.c.net.ask_key(&w.p, 0, new_custodial.clone());
    let ask_id = w.c.ok(&ask);
    let tx =
        w.c.net
            .add_key(&w.p, new_custodial, Some(ask_id), &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(CUSTODIAL_KEY_NEEDS_HOME_ASK));
    // An ask for another key, or none at all.
    let other =
        w.c.net
            .new_key(&w.p.id, KeyKind::Device, 2, &key_from("other"));
    let ask = w.c.net.ask_key(&w.p, 2, other);
    let ask_id = w.c.ok(&ask);
    let tx =
        w.c.net
            .add_key(&w.p, new.clone(), Some(ask_id), &w.p.device());
    assert_eq!(w.c.now(&tx), Err(ASK_MISMATCH));
    let tx = w.c.net.add_key(&w.p, new, Some([3; 32]), &w.p.device());
    assert_eq!(w.c.now(&tx), Err(ASK_NOT_PENDING));
    // A key registered already (to anyone, revoked ones included).
    let taken = w.c.net.new_key(&w.p.id, KeyKind::Device, 0, &w.q.custodial);
    let tx = w.c.net.add_key(&w.p, taken, None, &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(KEY_REGISTERED));
}

#[test]
fn a_person_holds_at_most_eight_unrevoked_keys() {
    let mut w = world();
    for i in 0..7 {
        let new =
            w.c.net
                .new_key(&w.p.id, KeyKind::Device, 0, &key_from(&format!("k{i}")));
        let tx = w.c.net.add_key(&w.p, new, None, &w.p.custodial());
        w.c.ok(&tx);
    }
    let ninth =
        w.c.net
            .new_key(&w.p.id, KeyKind::Device, 0, &key_from("k9"));
    let tx = w.c.net.add_key(&w.p, ninth.clone(), None, &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(TOO_MANY_KEYS));
    let revoke =
        w.c.net
            .revoke_key(&w.p, public(&key_from("k0")), &w.p.custodial());
    w.c.ok(&revoke);
    let tx = w.c.net.add_key(&w.p, ninth, None, &w.p.custodial());
    assert_eq!(w.c.now(&tx), Ok(()));
}

// ---------------------------------------------------------------------------------------------
// RevokeKey and Recover.

#[test]
fn revoke_key_rejects_each_bad_revocation() {
    let mut w = world();
    let tx =
        w.c.net
            .revoke_key(&w.p, public(&w.q.custodial), &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(KEY_NOT_OF_PERSON));
    let tx =
        w.c.net
            .revoke_key(&w.p, public(&w.p.custodial), &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(WOULD_LEAVE_NO_KEY));
    w.p_device();
    let revoke =
        w.c.net
            .revoke_key(&w.p, public(&w.p.device), &w.p.custodial());
    let revoke_id = w.c.ok(&revoke);
    assert_eq!(
        w.c.key(&public(&w.p.device))
            .expect("q")
            .expect("key")
            .revoked,
        Some(revoke_id)
    );
    let again =
        w.c.net
            .revoke_key(&w.p, public(&w.p.device), &w.p.custodial());
    assert_eq!(w.c.now(&again), Err(KEY_ALREADY_REVOKED));
}

/// Attack finding 2: a key made at another hospital's page revokes only keys made there; it
/// cannot take the person away from their home's keys.
#[test]
fn attack_2_a_key_of_another_origin_cannot_revoke_the_homes_keys() {
    let mut w = world();
    w.p_device();
    let mut at_clinic = Vec::new();
    for name in ["clinic phone", "clinic laptop"] {
        let secret = key_from(name);
        let new = w.c.net.new_key(&w.p.id, KeyKind::Device, 2, &secret);
        let ask = w.c.net.ask_key(&w.p, 2, new.clone());
        let ask_id = w.c.ok(&ask);
        let add = w.c.net.add_key(&w.p, new, Some(ask_id), &w.p.device());
        w.c.ok(&add);
        at_clinic.push(secret);
    }
    let clinic = w.p.device_with(&at_clinic[0]);
    for target in [public(&w.p.custodial), public(&w.p.device)] {
        let tx = w.c.net.revoke_key(&w.p, target, &clinic);
        assert_eq!(w.c.now(&tx), Err(REVOKE_OTHER_ORIGIN));
    }
    // It may revoke a key of its own origin, itself included.
    let tx = w.c.net.revoke_key(&w.p, public(&at_clinic[1]), &clinic);
    assert_eq!(w.c.now(&tx), Ok(()));
    // A home-origin device key may revoke any key.
    let tx =
        w.c.net
            .revoke_key(&w.p, public(&at_clinic[0]), &w.p.device());
    assert_eq!(w.c.now(&tx), Ok(()));
}

/// Recovery: the key waits `recovery_wait_ms`; revoking it before then cancels the recovery
/// (attack finding 2 again: only a key of the home's origin may).
#[test]
fn a_recovered_key_signs_from_its_effective_time_unless_revoked_before() {
    for (revoke_at, cancels) in [(Some(-1i64), true), (Some(0), false), (None, false)] {
        let mut w = world();
        // Past its wait: a recovery revokes young keys, and a young key cancels no recovery.
        w.p_device_aged();
        let custody = key_from("recovered custody");
        let new = w.c.net.new_key(&w.p.id, KeyKind::Custodial, 0, &custody);
        let recover = w.c.net.recover(&w.p, new);
        let t = w.c.now;
        let recovery = w.c.ok(&recover);
        let wait = w.c.net.genesis.recovery_wait_ms();
        let effective = t + wait;
        let row = w.c.recoveries_of(&w.p.id).expect("q");
        assert_eq!((row[0].id, row[0].effective_ms), (recovery, effective));
        let key = w.c.key(&public(&custody)).expect("q").expect("key");
        assert_eq!(
            (key.active_from_ms, key.recovery, key.origin),
            (effective, Some(recovery), 0)
        );
        let recovered = testkit::Signing {
            signer: Signer::Custodial {
                person: w.p.id,
                key: public(&custody),
            },
            key: custody.clone(),
        };
        // A rejected transaction is seen: each attempt is a new transaction.
        let grant = |w: &World| w.c.net.grant(&w.p, &w.d.id, Scope::Write, None, &recovered);
        let early = grant(&w);
        assert_eq!(
            w.c.at(effective - 1_000, &early),
            Err(SIGNER_KEY_WAITING),
            "T = effective - 1 s"
        );
        let grant = grant(&w);
        if let Some(offset) = revoke_at {
            let revoke = w.c.net.revoke_key(&w.p, public(&custody), &w.p.device());
            let at = (effective as i64 + offset) as u64;
            assert_eq!(w.c.at(at, &revoke), Ok(()));
            let cancelled = w.c.recoveries_of(&w.p.id).expect("q")[0].cancelled;
            assert_eq!(
                cancelled.is_some(),
                cancels,
                "revoked at effective {offset:+}"
            );
            assert_eq!(w.c.at(effective + 1_000, &grant), Err(SIGNER_KEY_REVOKED));
        } else {
            assert_eq!(w.c.at(effective, &grant), Ok(()), "T = effective");
        }
    }
}

#[test]
fn recover_rejects_each_bad_recovery() {
    let mut w = world();
    let stranger = w.c.net.patient(50, 0);
    let new = |w: &World, person: &PersonId, seed: &str| {
        w.c.net
            .new_key(person, KeyKind::Custodial, 0, &key_from(seed))
    };
    let tx = w.c.net.recover(&stranger, new(&w, &stranger.id, "s"));
    assert_eq!(w.c.now(&tx), Err(UNKNOWN_PERSON));
    // Validator 1 recovering p, whose home is 0.
    let meta = Meta::Recover(crate::tx::Recover {
        person: w.p.id,
        key: new(&w, &w.p.id, "a"),
    });
    let tx = w.c.net.sign(meta, &w.c.net.validator(1), Vec::new());
    assert_eq!(w.c.now(&tx), Err(RECOVER_NOT_HOME));
    let device = w.c.net.new_key(&w.p.id, KeyKind::Device, 0, &key_from("d"));
    let tx = w.c.net.recover(&w.p, device);
    assert_eq!(w.c.now(&tx), Err(RECOVER_CUSTODIAL_ONLY));
    let taken =
        w.c.net
            .new_key(&w.p.id, KeyKind::Custodial, 0, &w.q.custodial);
    let tx = w.c.net.recover(&w.p, taken);
    assert_eq!(w.c.now(&tx), Err(KEY_REGISTERED));
    let first = w.c.net.recover(&w.p, new(&w, &w.p.id, "b"));
    let t = w.c.now;
    w.c.ok(&first);
    let effective = t + w.c.net.genesis.recovery_wait_ms();
    let second = w.c.net.recover(&w.p, new(&w, &w.p.id, "c"));
    assert_eq!(w.c.at(effective - 1, &second), Err(RECOVERY_PENDING));
    let second = w.c.net.recover(&w.p, new(&w, &w.p.id, "c"));
    assert_eq!(w.c.at(effective, &second), Ok(()));
}

/// A new key's origin, bound by its proof of possession (`key-pop/v2`), is the validator that
/// made it: the home for an enrollment, a recovery or a key the home adds without an ask; the
/// asking validator for a key asked for. The key's row keeps it.
#[test]
fn a_new_keys_origin_is_the_validator_that_made_it() {
    let mut w = world();
    let r = w.c.net.patient(60, 2);
    let tx = enroll_with(&w.c, &r, 2, |m| {
        m.keys = vec![w.c.net.new_key(&r.id, KeyKind::Custodial, 0, &r.custodial)]
    });
    assert_eq!(w.c.now(&tx), Err(KEY_ORIGIN), "enrolled by 2, made at 0");
    let phone = key_from("p's phone at clinic 2");
    let at = |w: &World, origin: u32| w.c.net.new_key(&w.p.id, KeyKind::Device, origin, &phone);
    let tx = w.c.net.ask_key(&w.p, 2, at(&w, 3));
    assert_eq!(w.c.now(&tx), Err(KEY_ORIGIN), "asked by 2, made at 3");
    let tx = w.c.net.add_key(&w.p, at(&w, 2), None, &w.p.custodial());
    assert_eq!(
        w.c.now(&tx),
        Err(KEY_ORIGIN),
        "added by the home, made at 2"
    );
    let custody =
        w.c.net
            .new_key(&w.p.id, KeyKind::Custodial, 1, &key_from("custody"));
    let tx = w.c.net.recover(&w.p, custody);
    assert_eq!(
        w.c.now(&tx),
        Err(KEY_ORIGIN),
        "recovered by the home, made at 1"
    );
    let ask = w.c.net.ask_key(&w.p, 2, at(&w, 2));
    let ask_id = w.c.ok(&ask);
    let add =
        w.c.net
            .add_key(&w.p, at(&w, 2), Some(ask_id), &w.p.custodial());
    w.c.ok(&add);
    let key = w.c.key(&public(&phone)).expect("q").expect("added");
    assert_eq!(key.origin, 2);
}

// ---------------------------------------------------------------------------------------------
// RequestGrant, Grant, Revoke.

fn read(duration_ms: u64) -> Scope {
    Scope::Read { duration_ms }
}

#[test]
fn a_request_is_answered_by_a_matching_grant() {
    let mut w = world();
    w.p_device_aged();
    let request =
        w.c.net
            .request_grant(&w.e, &w.p.id, read(2 * HOUR), &w.e.custodial());
    let t = w.c.now;
    let request_id = w.c.ok(&request);
    let row = w.c.request(&request_id).expect("q").expect("request");
    assert_eq!(
        (row.doctor_home, row.created_ms, row.expires_ms),
        (1, t, t + REQUEST_MS)
    );
    assert_eq!(
        w.c.pending_requests_of(&w.p.id, w.c.now).expect("q").len(),
        1
    );
    let grant =
        w.c.net
            .grant(&w.p, &w.e.id, read(HOUR), Some(request_id), &w.p.device());
    let t = w.c.now;
    let grant_id = w.c.ok(&grant);
    let row = w.c.grant(&grant_id).expect("q").expect("grant");
    assert_eq!(
        (row.attested, row.expires_ms, row.request),
        (Attested::Device, t + HOUR, Some(request_id))
    );
    assert_eq!(
        w.c.request(&request_id).expect("q").expect("r").answered,
        Some((grant_id, Answer::Granted))
    );
    assert!(
        w.c.pending_requests_of(&w.p.id, w.c.now)
            .expect("q")
            .is_empty()
    );
    assert_eq!(w.c.grants_of_doctor(&w.e.id, w.c.now).expect("q").len(), 1);
    assert_eq!(w.c.grants_of_patient(&w.p.id).expect("q")[0].id, grant_id);
}

#[test]
fn request_grant_rejects_each_bad_request() {
    let mut w = world();
    let tx =
        w.c.net
            .request_grant(&w.d, &w.e.id, Scope::Write, &w.d.custodial());
    assert_eq!(w.c.now(&tx), Err(NOT_A_PATIENT));
    let tx =
        w.c.net
            .request_grant(&w.q, &w.p.id, Scope::Write, &w.q.custodial());
    assert_eq!(w.c.now(&tx), Err(NOT_A_DOCTOR));
    for (duration, verdict) in [
        (READ_GRANT_MIN_MS - 1, Err(READ_DURATION)),
        (READ_GRANT_MAX_MS + 1, Err(READ_DURATION)),
        (READ_GRANT_MIN_MS, Ok(())),
        (READ_GRANT_MAX_MS, Ok(())),
    ] {
        let tx =
            w.c.net
                .request_grant(&w.d, &w.p.id, read(duration), &w.d.custodial());
        assert_eq!(w.c.now(&tx), verdict, "{duration} ms");
    }
}

#[test]
fn at_most_three_requests_per_doctor_are_pending_until_they_expire() {
    let mut w = world();
    let t = w.c.now;
    let make = |w: &World| {
        w.c.net
            .request_grant(&w.d, &w.p.id, Scope::Write, &w.d.custodial())
    };
    let first = make(&w);
    assert_eq!(w.c.at(t, &first), Ok(()));
    for _ in 0..2 {
        let tx = make(&w);
        w.c.ok(&tx);
    }
    let fourth = make(&w);
    assert_eq!(w.c.now(&fourth), Err(TOO_MANY_REQUESTS_DOCTOR));
    // The first is pending at T = expires - 1 and not at T = expires.
    let fourth = make(&w);
    assert_eq!(
        w.c.at(t + REQUEST_MS - 1, &fourth),
        Err(TOO_MANY_REQUESTS_DOCTOR)
    );
    let fourth = make(&w);
    assert_eq!(w.c.at(t + REQUEST_MS, &fourth), Ok(()));
}

/// Attack finding 11: a hospital's doctors share ten pending requests per patient, so a flood
/// of fake doctors fills only that hospital's share.
#[test]
fn attack_11_a_hospitals_doctors_share_ten_pending_requests_per_patient() {
    let mut w = world();
    for k in 0..4u64 {
        let doctor = w.c.net.doctor(200 + k, 0, "Cardiology");
        let tx = w.c.net.enroll(&doctor);
        w.c.ok(&tx);
        for _ in 0..(if k < 3 { 3 } else { 1 }) {
            let tx =
                w.c.net
                    .request_grant(&doctor, &w.p.id, Scope::Write, &doctor.custodial());
            w.c.ok(&tx);
        }
    }
    let tx =
        w.c.net
            .request_grant(&w.d, &w.p.id, Scope::Write, &w.d.custodial());
    assert_eq!(w.c.now(&tx), Err(TOO_MANY_REQUESTS_HOSPITAL));
    // Another hospital's doctor still reaches the patient.
    let tx =
        w.c.net
            .request_grant(&w.e, &w.p.id, Scope::Write, &w.e.custodial());
    assert_eq!(w.c.now(&tx), Ok(()));
    assert_eq!(
        w.c.pending_requests_of(&w.p.id, w.c.now).expect("q").len(),
        11
    );
}

/// The caps count the requests still open: answered ones (granted or denied) free their share,
/// open ones are never missed, at a block's time (the table of open requests) and at a time
/// long before the head (the requests themselves); the table keeps no request answered or long
/// expired.
#[test]
fn the_caps_count_open_requests_not_answered_ones() {
    let mut w = world();
    let make = |w: &World| {
        w.c.net
            .request_grant(&w.d, &w.p.id, Scope::Write, &w.d.custodial())
    };
    let open_rows = |w: &World| -> i64 {
        w.c.conn
            .query_row("SELECT count(*) FROM open_requests", [], |r| r.get(0))
            .expect("q")
    };
    let t = w.c.now;
    let requests: Vec<TxId> = (0..3)
        .map(|_| {
            let tx = make(&w);
            w.c.ok(&tx)
        })
        .collect();
    let tx = make(&w);
    assert_eq!(w.c.now(&tx), Err(TOO_MANY_REQUESTS_DOCTOR));
    let grant = w.c.net.grant(
        &w.p,
        &w.d.id,
        Scope::Write,
        Some(requests[0]),
        &w.p.custodial(),
    );
    w.c.ok(&grant);
    let deny = w.c.net.revoke(&w.p, requests[1], &w.p.custodial());
    w.c.ok(&deny);
    let counts = |w: &World, at: u64| {
        let view = w.c.view();
        (
            view.pending_requests(&w.d.id, &w.p.id, at).expect("q"),
            view.pending_requests_from_hospital_of(&w.d.id, &w.p.id, at)
                .expect("q"),
        )
    };
    assert_eq!(counts(&w, t), (1, 1));
    assert_eq!(open_rows(&w), 1);
    // Two more fit beside the one still open, not a third.
    for _ in 0..2 {
        let tx = make(&w);
        w.c.ok(&tx);
    }
    let tx = make(&w);
    assert_eq!(w.c.now(&tx), Err(TOO_MANY_REQUESTS_DOCTOR));
    assert_eq!(counts(&w, t), (3, 3));
    assert_eq!(open_rows(&w), 3);
    // Long after: the table has dropped the expired requests, and counts at times it no
    // longer covers read the requests: the three open then, none once they all expired.
    let last = w.c.now;
    let later = last + REQUEST_MS + store::state::OPEN_KEPT_MS + 1_000;
    assert_eq!(w.c.append(later, &[]), []);
    assert_eq!(open_rows(&w), 0);
    assert_eq!(counts(&w, later), (0, 0));
    assert_eq!(counts(&w, t), (3, 3));
    assert_eq!(counts(&w, last + REQUEST_MS), (0, 0));
    let tx = make(&w);
    assert_eq!(w.c.at(later, &tx), Ok(()));
    assert_eq!(open_rows(&w), 1);
}

/// Attack finding 7: the chain records how a grant was given, and a custodial signature is
/// accepted only as the home's statement that the patient was there.
#[test]
fn attack_7_a_grants_attestation_matches_its_signer() {
    let mut w = world();
    w.p_device();
    let make = |w: &World, attested: Attested, by: &testkit::Signing| {
        let meta = Meta::Grant(Grant {
            patient: w.p.id,
            doctor: w.d.id,
            scope: read(HOUR),
            request: None,
            attested,
        });
        w.c.net.sign(meta, by, Vec::new())
    };
    let tx = make(&w, Attested::Device, &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(ATTESTATION_MISMATCH));
    let tx = make(&w, Attested::InPerson, &w.p.device());
    assert_eq!(w.c.now(&tx), Err(ATTESTATION_MISMATCH));
    let tx = make(&w, Attested::InPerson, &w.p.custodial());
    let id = w.c.ok(&tx);
    assert_eq!(
        w.c.grant(&id).expect("q").expect("g").attested,
        Attested::InPerson
    );
}

#[test]
fn grant_rejects_each_bad_grant() {
    let mut w = world();
    // A doctor granting as a patient; a grant to a patient.
    let tx =
        w.c.net
            .grant(&w.d, &w.e.id, Scope::Write, None, &w.d.custodial());
    assert_eq!(w.c.now(&tx), Err(NOT_A_PATIENT));
    let tx =
        w.c.net
            .grant(&w.p, &w.q.id, Scope::Write, None, &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(NOT_A_DOCTOR));
    let tx = w.c.net.grant(
        &w.p,
        &w.d.id,
        read(READ_GRANT_MAX_MS + 1),
        None,
        &w.p.custodial(),
    );
    assert_eq!(w.c.now(&tx), Err(READ_DURATION));
    // Answers that do not match their request.
    let request =
        w.c.net
            .request_grant(&w.d, &w.p.id, read(HOUR), &w.d.custodial());
    let request_id = w.c.ok(&request);
    for (doctor, scope) in [
        (w.e.id, read(HOUR)),
        (w.d.id, Scope::Write),
        (w.d.id, read(HOUR + 1)),
    ] {
        let tx =
            w.c.net
                .grant(&w.p, &doctor, scope, Some(request_id), &w.p.custodial());
        assert_eq!(w.c.now(&tx), Err(GRANT_REQUEST_MISMATCH), "{scope:?}");
    }
    let tx =
        w.c.net
            .grant(&w.p, &w.d.id, read(HOUR), Some([1; 32]), &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(REQUEST_NOT_PENDING));
    let deny = w.c.net.revoke(&w.p, request_id, &w.p.custodial());
    let deny_id = w.c.ok(&deny);
    assert_eq!(
        w.c.request(&request_id).expect("q").expect("r").answered,
        Some((deny_id, Answer::Denied))
    );
    let tx = w.c.net.grant(
        &w.p,
        &w.d.id,
        read(HOUR),
        Some(request_id),
        &w.p.custodial(),
    );
    assert_eq!(w.c.now(&tx), Err(REQUEST_NOT_PENDING));
}

#[test]
fn a_request_is_answered_until_its_expiry() {
    for (delay, verdict) in [
        (REQUEST_MS - 1, Ok(())),
        (REQUEST_MS, Err(REQUEST_NOT_PENDING)),
    ] {
        let mut w = world();
        let request =
            w.c.net
                .request_grant(&w.d, &w.p.id, Scope::Write, &w.d.custodial());
        let t = w.c.now;
        let request_id = w.c.ok(&request);
        let grant = w.c.net.grant(
            &w.p,
            &w.d.id,
            Scope::Write,
            Some(request_id),
            &w.p.custodial(),
        );
        assert_eq!(w.c.at(t + delay, &grant), verdict, "T = request + {delay}");
    }
}

#[test]
fn revoke_rejects_each_bad_revocation() {
    let mut w = world();
    let (grant, t) = w.write_grant();
    // q cannot revoke p's grant; an unknown target is nothing.
    let tx = w.c.net.revoke(&w.q, grant, &w.q.custodial());
    assert_eq!(w.c.now(&tx), Err(NO_SUCH_TARGET));
    let tx = w.c.net.revoke(&w.p, [4; 32], &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(NO_SUCH_TARGET));
    let revoke = w.c.net.revoke(&w.p, grant, &w.p.custodial());
    assert_eq!(
        w.c.at(t + WRITE_GRANT_MS - 1, &revoke),
        Ok(()),
        "T = expires - 1"
    );
    let again = w.c.net.revoke(&w.p, grant, &w.p.custodial());
    assert_eq!(w.c.now(&again), Err(GRANT_REVOKED));
    // Used, or expired (T = expires).
    let (grant, t) = w.write_grant();
    let expired = w.c.net.revoke(&w.p, grant, &w.p.custodial());
    let record = w.record(grant);
    w.c.ok(&record);
    assert_eq!(w.c.now(&expired), Err(GRANT_USED));
    let (grant, t2) = w.write_grant();
    assert!(t2 > t);
    let revoke = w.c.net.revoke(&w.p, grant, &w.p.custodial());
    assert_eq!(w.c.at(t2 + WRITE_GRANT_MS, &revoke), Err(GRANT_EXPIRED));
    // A request answered already cannot be denied.
    let request =
        w.c.net
            .request_grant(&w.d, &w.p.id, Scope::Write, &w.d.custodial());
    let request_id = w.c.ok(&request);
    let grant = w.c.net.grant(
        &w.p,
        &w.d.id,
        Scope::Write,
        Some(request_id),
        &w.p.custodial(),
    );
    w.c.ok(&grant);
    let deny = w.c.net.revoke(&w.p, request_id, &w.p.custodial());
    assert_eq!(w.c.now(&deny), Err(NO_SUCH_TARGET));
}

/// docs/SECURITY.md, "Confidential records", §4.2: keys follow read grants, so a read grant is
/// signed with a key of the patient's home. A device key made at another hospital's page signs
/// write grants as before, not read grants.
#[test]
fn a_read_grant_needs_a_key_of_the_patients_home() {
    let mut w = world();
    w.p_device_aged();
    let elsewhere = w.p_key_from(2);
    let by_2 = w.p.device_with(&elsewhere);
    w.c.now += w.c.net.genesis.recovery_wait_ms();
    for doctor in [w.d.id, w.e.id] {
        let tx = w.c.net.grant(&w.p, &doctor, read(HOUR), None, &by_2);
        assert_eq!(w.c.now(&tx), Err(READ_GRANT_NOT_HOME_KEY));
    }
    let tx = w.c.net.grant(&w.p, &w.e.id, Scope::Write, None, &by_2);
    let write = w.c.ok(&tx);
    assert_eq!(w.c.grant(&write).expect("q").expect("g").sealer, 2);
    // The home's device key to any hospital's doctor; the home's custody to its own doctor.
    let tx =
        w.c.net
            .grant(&w.p, &w.e.id, read(HOUR), None, &w.p.device());
    let read_id = w.c.ok(&tx);
    assert_eq!(w.c.grant(&read_id).expect("q").expect("g").sealer, 0);
    let tx =
        w.c.net
            .grant(&w.p, &w.d.id, read(HOUR), None, &w.p.custodial());
    w.c.ok(&tx);
}

/// docs/SECURITY.md, "Confidential records", §4.2: the custodial key (the in-person screen,
/// also a password typed at the home) grants reads only to the home's own doctors, whose
/// hospital holds every key of the patient already.
#[test]
fn a_read_grant_in_person_is_for_a_home_doctor() {
    let mut w = world();
    let tx =
        w.c.net
            .grant(&w.p, &w.e.id, read(HOUR), None, &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(READ_GRANT_IN_PERSON_NOT_HOME_DOCTOR));
    // Answering the doctor's request changes nothing.
    let request =
        w.c.net
            .request_grant(&w.e, &w.p.id, read(HOUR), &w.e.custodial());
    let request_id = w.c.ok(&request);
    let tx = w.c.net.grant(
        &w.p,
        &w.e.id,
        read(HOUR),
        Some(request_id),
        &w.p.custodial(),
    );
    assert_eq!(w.c.now(&tx), Err(READ_GRANT_IN_PERSON_NOT_HOME_DOCTOR));
    assert!(
        w.c.request(&request_id)
            .expect("q")
            .expect("r")
            .pending_at(w.c.now)
    );
    let tx =
        w.c.net
            .grant(&w.p, &w.d.id, read(HOUR), None, &w.p.custodial());
    w.c.ok(&tx);
    let tx =
        w.c.net
            .grant(&w.p, &w.e.id, Scope::Write, None, &w.p.custodial());
    w.c.ok(&tx);
}

/// Finding 2 of the attack on "Confidential records" (§4.2): a key added on a password alone
/// (custodially, without an ask) shares nothing with another hospital before
/// `added_ms + recovery_wait_ms`: no read grant to another hospital's doctor (a home doctor's
/// is fine), no erasure request. A key approved by a key past its wait is not young.
#[test]
fn a_young_key_shares_nothing_with_another_hospital_before_its_wait() {
    let mut w = world();
    let until = w.p_device_young();
    let key = w.c.key(&public(&w.p.device)).expect("q").expect("key");
    assert_eq!(key.young_until_ms, until);
    assert_eq!(key.added_ms + w.c.net.genesis.recovery_wait_ms(), until);
    let to_e = |w: &World| {
        w.c.net
            .grant(&w.p, &w.e.id, read(HOUR), None, &w.p.device())
    };
    let tx =
        w.c.net
            .grant(&w.p, &w.d.id, read(HOUR), None, &w.p.device());
    assert_eq!(w.c.now(&tx), Ok(()), "a home doctor's read grant");
    let (write, _) = w.write_grant();
    let record = w.record(write);
    let record_id = w.c.ok(&record);
    let erase = w.c.net.request_erasure(&w.p, record_id, &w.p.device());
    assert_eq!(w.c.now(&erase), Err(YOUNG_KEY));
    let tx = to_e(&w);
    assert_eq!(w.c.at(until - 1, &tx), Err(YOUNG_KEY), "T = until - 1");
    let tx = to_e(&w);
    let t = w.c.now.max(until);
    assert_eq!(w.c.at(t, &tx), Ok(()), "T = until");
    let erase = w.c.net.request_erasure(&w.p, record_id, &w.p.device());
    assert_eq!(w.c.now(&erase), Ok(()));

    // A key the aged device key approves (answering the home's ask) shares at once.
    let phone = key_from("p's phone, approved on the aged device");
    let new = w.c.net.new_key(&w.p.id, KeyKind::Device, 0, &phone);
    let ask = w.c.net.ask_key(&w.p, 0, new.clone());
    let ask_id = w.c.ok(&ask);
    let add = w.c.net.add_key(&w.p, new, Some(ask_id), &w.p.device());
    w.c.ok(&add);
    assert_eq!(
        w.c.key(&public(&phone))
            .expect("q")
            .expect("key")
            .young_until_ms,
        0
    );
    let tx =
        w.c.net
            .grant(&w.p, &w.e.id, read(HOUR), None, &w.p.device_with(&phone));
    assert_eq!(w.c.now(&tx), Ok(()));
}

/// A young key cannot launder its wait by approving a second key: the key it approves is young
/// for its own full wait, hence at least as long (otherwise a password thief would add a key
/// custodially, approve the home's ask for a second key with it, and share the history at once).
#[test]
fn a_key_approved_by_a_young_key_waits_at_least_as_long() {
    let mut w = world();
    let first_until = w.p_device_young();
    let second = key_from("approved by the young key");
    let new = w.c.net.new_key(&w.p.id, KeyKind::Device, 0, &second);
    let ask = w.c.net.ask_key(&w.p, 0, new.clone());
    let ask_id = w.c.ok(&ask);
    let add = w.c.net.add_key(&w.p, new, Some(ask_id), &w.p.device());
    let added_ms = w.c.now;
    w.c.ok(&add);
    let until = added_ms + w.c.net.genesis.recovery_wait_ms();
    assert!(until > first_until);
    let row = w.c.key(&public(&second)).expect("q").expect("key");
    assert_eq!(
        (row.added_by, row.young_until_ms),
        (SignerKind::Device, until)
    );
    let by = w.p.device_with(&second);
    let tx = w.c.net.grant(&w.p, &w.e.id, read(HOUR), None, &by);
    assert_eq!(w.c.at(until - 1, &tx), Err(YOUNG_KEY));
    let tx = w.c.net.grant(&w.p, &w.e.id, read(HOUR), None, &by);
    assert_eq!(w.c.at(until, &tx), Ok(()));
}

/// Red team of the code, break 2 (§4.2): only a key that could itself share the history with
/// another hospital (a device key of the home's page past its wait) vouches for a key that is
/// not young. A key made at another hospital's page, past its wait, approving the home's ask,
/// and the custodial key approving another hospital's ask, both add a key that waits.
#[test]
fn only_a_key_that_shares_vouches_for_a_key_that_shares() {
    let mut w = world();
    let at_clinic = w.p_key_from(2);
    w.c.now += w.c.net.genesis.recovery_wait_ms();
    let wait = w.c.net.genesis.recovery_wait_ms();
    let clinic = w.c.key(&public(&at_clinic)).expect("q").expect("key");
    assert!(clinic.young_until_ms > 0, "approved in person");
    assert!(!clinic.young_at(w.c.now));
    let home_key = key_from("made at the home's page, approved at the clinic's");
    let new = w.c.net.new_key(&w.p.id, KeyKind::Device, 0, &home_key);
    let ask_id = w.c.ok(&w.c.net.ask_key(&w.p, 0, new.clone()));
    let added_ms = w.c.now;
    let add =
        w.c.net
            .add_key(&w.p, new, Some(ask_id), &w.p.device_with(&at_clinic));
    w.c.ok(&add);
    let row = w.c.key(&public(&home_key)).expect("q").expect("key");
    assert_eq!(row.young_until_ms, added_ms + wait);
    let tx =
        w.c.net
            .grant(&w.p, &w.e.id, read(HOUR), None, &w.p.device_with(&home_key));
    assert_eq!(w.c.now(&tx), Err(YOUNG_KEY));
}

/// Red team of the code, break 3 (§4.2): before its wait ends a young key revokes only itself
/// and other young keys: not the custodial key, not a key past its wait, not a recovering key
/// (so it cancels no recovery).
#[test]
fn a_young_key_revokes_only_itself_and_other_young_keys() {
    let mut w = world();
    let phone = key_from("p's phone, past its wait");
    let new = w.c.net.new_key(&w.p.id, KeyKind::Device, 0, &phone);
    w.c.ok(&w.c.net.add_key(&w.p, new, None, &w.p.custodial()));
    w.c.now += w.c.net.genesis.recovery_wait_ms();
    w.p_device_young();
    let other_young = key_from("another young key");
    let new = w.c.net.new_key(&w.p.id, KeyKind::Device, 0, &other_young);
    w.c.ok(&w.c.net.add_key(&w.p, new, None, &w.p.custodial()));
    for target in [public(&w.p.custodial), public(&phone)] {
        let tx = w.c.net.revoke_key(&w.p, target, &w.p.device());
        assert_eq!(w.c.now(&tx), Err(YOUNG_KEY_REVOKES_YOUNG_ONLY));
    }
    let tx =
        w.c.net
            .revoke_key(&w.p, public(&other_young), &w.p.device());
    assert_eq!(w.c.now(&tx), Ok(()), "another young key");
    let tx = w.c.net.revoke_key(&w.p, public(&w.p.device), &w.p.device());
    assert_eq!(w.c.now(&tx), Ok(()), "itself");
    // A recovering key is never young: a young key cannot cancel the recovery.
    let young = key_from("young while the home recovers");
    let new = w.c.net.new_key(&w.p.id, KeyKind::Device, 0, &young);
    let custody = key_from("recovering custody");
    let recovering = w.c.net.new_key(&w.p.id, KeyKind::Custodial, 0, &custody);
    let recover = w.c.net.recover(&w.p, recovering);
    let recovery = w.c.ok(&recover);
    w.c.ok(&w.c.net.add_key(&w.p, new, None, &w.p.custodial()));
    let tx =
        w.c.net
            .revoke_key(&w.p, public(&custody), &w.p.device_with(&young));
    assert_eq!(w.c.now(&tx), Err(YOUNG_KEY_REVOKES_YOUNG_ONLY));
    assert_eq!(w.c.recoveries_of(&w.p.id).expect("q")[0].id, recovery);
    assert_eq!(w.c.recoveries_of(&w.p.id).expect("q")[0].cancelled, None);
}

/// Red team of the code, break 3 and weakness W2 (§4.2): while a young key is live the person
/// keeps a live key of the home past its wait, which can revoke it. The custodial key (a
/// password at the home) does not revoke itself then, unless another such key stays; once the
/// young key is revoked or past its wait, it may.
#[test]
fn while_a_young_key_waits_the_last_key_that_cancels_it_stays() {
    let mut w = world();
    let until = w.p_device_young();
    let custodial = public(&w.p.custodial);
    let tx = w.c.net.revoke_key(&w.p, custodial, &w.p.custodial());
    assert_eq!(w.c.now(&tx), Err(KEEPS_KEY_THAT_CANCELS));
    let tx = w.c.net.revoke_key(&w.p, custodial, &w.p.custodial());
    assert_eq!(w.c.at(until, &tx), Ok(()), "T = until: no key is young");

    let mut w = world();
    let phone = key_from("p's phone, past its wait");
    let new = w.c.net.new_key(&w.p.id, KeyKind::Device, 0, &phone);
    w.c.ok(&w.c.net.add_key(&w.p, new, None, &w.p.custodial()));
    w.c.now += w.c.net.genesis.recovery_wait_ms();
    w.p_device_young();
    let tx = w.c.net.revoke_key(&w.p, custodial, &w.p.custodial());
    assert_eq!(w.c.now(&tx), Ok(()), "the phone stays");
    let tx =
        w.c.net
            .revoke_key(&w.p, public(&phone), &w.p.device_with(&phone));
    assert_eq!(w.c.now(&tx), Err(KEEPS_KEY_THAT_CANCELS));
    let tx =
        w.c.net
            .revoke_key(&w.p, public(&w.p.device), &w.p.device_with(&phone));
    assert_eq!(w.c.now(&tx), Ok(()), "the phone cancels the young key");
    let tx =
        w.c.net
            .revoke_key(&w.p, public(&phone), &w.p.device_with(&phone));
    assert_eq!(w.c.now(&tx), Err(WOULD_LEAVE_NO_KEY));
}

/// Red team of the code, break 3 (§4.2): a recovery revokes every young key of the person at
/// once, so a key added on a password, or approved by a key of another hospital's page, cannot
/// outwait the recovery that answers its theft; keys past their wait stay.
#[test]
fn a_recovery_revokes_the_young_keys() {
    let mut w = world();
    w.p_device_aged();
    let young = key_from("added on a password");
    let new = w.c.net.new_key(&w.p.id, KeyKind::Device, 0, &young);
    w.c.ok(&w.c.net.add_key(&w.p, new, None, &w.p.custodial()));
    let custody = key_from("recovered custody");
    let new = w.c.net.new_key(&w.p.id, KeyKind::Custodial, 0, &custody);
    let recovery = w.c.ok(&w.c.net.recover(&w.p, new));
    let revoked =
        |w: &World, key: &SigningKey| w.c.key(&public(key)).expect("q").expect("key").revoked;
    assert_eq!(revoked(&w, &young), Some(recovery));
    assert_eq!(revoked(&w, &w.p.device), None);
    assert_eq!(revoked(&w, &w.p.custodial), None);
}

// ---------------------------------------------------------------------------------------------
// AddRecord and Access.

#[test]
fn a_record_uses_a_live_write_grant_up() {
    let mut w = world();
    let (grant, t) = w.write_grant();
    let record = w.record(grant);
    assert_eq!(
        w.c.at(t + WRITE_GRANT_MS - 1, &record),
        Ok(()),
        "T = expires - 1"
    );
    let record_id = w.c.id(&record);
    assert_eq!(
        w.c.grant(&grant).expect("q").expect("g").used,
        Some(record_id)
    );
    let records = w.c.records_of(&w.p.id).expect("q");
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].grant, records[0].origin), (grant, Some(0)));
    let second = w.record(grant);
    assert_eq!(w.c.now(&second), Err(GRANT_USED));
}

#[test]
fn a_record_is_refused_at_its_grants_expiry() {
    let mut w = world();
    let (grant, t) = w.write_grant();
    let record = w.record(grant);
    assert_eq!(w.c.at(t + WRITE_GRANT_MS, &record), Err(GRANT_HAS_EXPIRED));
    assert!(w.c.records_of(&w.p.id).expect("q").is_empty());
}

#[test]
fn add_record_rejects_each_bad_record() {
    let mut w = world();
    let (grant, _) = w.write_grant();
    // A patient signing as a doctor; another department; no grant; another doctor's grant; a
    // read grant.
    let meta = Meta::AddRecord(AddRecord {
        patient: w.p.id,
        doctor: w.q.id,
        department: "Cardiology".into(),
        grant,
    });
    let tx = w.c.net.sign(meta, &w.q.custodial(), Vec::new());
    assert_eq!(w.c.now(&tx), Err(NOT_A_DOCTOR));
    let meta = Meta::AddRecord(AddRecord {
        patient: w.p.id,
        doctor: w.d.id,
        department: "Oncology".into(),
        grant,
    });
    let tx = w.c.net.sign(meta, &w.d.custodial(), Vec::new());
    assert_eq!(w.c.now(&tx), Err(NOT_OWN_DEPARTMENT));
    let tx = w.record([5; 32]);
    assert_eq!(w.c.now(&tx), Err(NO_SUCH_GRANT));
    let tx = w.c.net.add_record(&w.e, &w.p.id, grant, &w.e.custodial());
    assert_eq!(w.c.now(&tx), Err(NOT_A_WRITE_GRANT));
    let tx = w.c.net.add_record(&w.d, &w.q.id, grant, &w.d.custodial());
    assert_eq!(w.c.now(&tx), Err(NOT_A_WRITE_GRANT));
    let read_grant =
        w.c.net
            .grant(&w.p, &w.d.id, read(HOUR), None, &w.p.custodial());
    let read_id = w.c.ok(&read_grant);
    let tx = w.record(read_id);
    assert_eq!(w.c.now(&tx), Err(NOT_A_WRITE_GRANT));
    // The grant is still unused: every rejection left it alone.
    assert_eq!(w.c.grant(&grant).expect("q").expect("g").used, None);
}

/// Revocation and use are ordered by the chain: whichever comes first wins.
#[test]
fn revocation_and_use_are_ordered_by_the_chain() {
    let mut w = world();
    let (grant, _) = w.write_grant();
    let revoke = w.c.net.revoke(&w.p, grant, &w.p.custodial());
    let record = w.record(grant);
    let t = w.c.now;
    assert_eq!(
        w.c.append(t, &[&revoke, &record]),
        [Ok(()), Err(GRANT_WAS_REVOKED)]
    );
    let (grant, _) = w.write_grant();
    let revoke = w.c.net.revoke(&w.p, grant, &w.p.custodial());
    let record = w.record(grant);
    let t = w.c.now;
    assert_eq!(
        w.c.append(t, &[&record, &revoke]),
        [Ok(()), Err(GRANT_USED)]
    );
    assert_eq!(w.c.records_of(&w.p.id).expect("q").len(), 1);
}

/// A record signed on the doctor's device names the device and its origin.
#[test]
fn a_record_signed_on_the_doctors_device() {
    let mut w = world();
    let key = w.c.net.new_key(&w.d.id, KeyKind::Device, 0, &w.d.device);
    let tx = w.c.net.add_key(&w.d, key, None, &w.d.custodial());
    w.c.ok(&tx);
    let (grant, _) = w.write_grant();
    let record = w.c.net.add_record(&w.d, &w.p.id, grant, &w.d.device());
    w.c.ok(&record);
    let entry = &w.c.records_of(&w.p.id).expect("q")[0];
    assert_eq!(entry.signer, w.d.device().signer);
    assert_eq!(entry.origin, Some(0));
}

#[test]
fn own_reads_are_served_by_the_home_or_a_linked_validator() {
    let mut w = world();
    let tx = w.c.net.access(0, &w.p.id, &w.p.id, None);
    w.c.ok(&tx);
    let tx = w.c.net.access(2, &w.p.id, &w.p.id, None);
    assert_eq!(w.c.now(&tx), Err(NOT_SERVED_HERE));
    let link = w.c.net.link(&w.p, 2, None, &w.p.custodial());
    w.c.ok(&link);
    let tx = w.c.net.access(2, &w.p.id, &w.p.id, None);
    w.c.ok(&tx);
    let log = w.c.accesses_of(&w.p.id).expect("q");
    assert_eq!(
        log.iter().map(|a| a.serving).collect::<Vec<_>>(),
        [0, 2],
        "the log names the serving hospital"
    );
    // Someone else's read without a grant; a doctor's "own" read; a validator signing for
    // another.
    let tx = w.c.net.access(0, &w.p.id, &w.d.id, None);
    assert_eq!(w.c.now(&tx), Err(OWN_READ_ONLY));
    let tx = w.c.net.access(0, &w.d.id, &w.d.id, None);
    assert_eq!(w.c.now(&tx), Err(NOT_A_PATIENT));
    let mut forged = w.c.net.access(1, &w.p.id, &w.p.id, None);
    if let Meta::Access(a) = &mut forged.header.meta {
        a.serving = 0;
    }
    let forged =
        w.c.net
            .sign_header(forged.header, Vec::new(), &w.c.net.keys[1]);
    assert_eq!(w.c.now(&forged), Err(ACCESS_NOT_SERVING));
}

#[test]
fn a_doctors_read_needs_a_live_read_grant_at_their_home() {
    for (delay, verdict) in [(HOUR - 1, Ok(())), (HOUR, Err(GRANT_HAS_EXPIRED))] {
        let mut w = world();
        w.p_device_aged();
        let grant =
            w.c.net
                .grant(&w.p, &w.e.id, read(HOUR), None, &w.p.device());
        let t = w.c.now;
        let grant_id = w.c.ok(&grant);
        let tx = w.c.net.access(1, &w.p.id, &w.e.id, Some(grant_id));
        assert_eq!(w.c.at(t + delay, &tx), verdict, "T = grant + {delay}");
    }
    let mut w = world();
    w.p_device_aged();
    let grant =
        w.c.net
            .grant(&w.p, &w.e.id, read(HOUR), None, &w.p.device());
    let grant_id = w.c.ok(&grant);
    // At another hospital than the doctor's home; for another reader; as a patient.
    let tx = w.c.net.access(0, &w.p.id, &w.e.id, Some(grant_id));
    assert_eq!(w.c.now(&tx), Err(DOCTOR_READS_AT_HOME));
    let tx = w.c.net.access(0, &w.p.id, &w.d.id, Some(grant_id));
    assert_eq!(w.c.now(&tx), Err(NOT_A_READ_GRANT));
    let tx = w.c.net.access(1, &w.p.id, &w.q.id, Some(grant_id));
    assert_eq!(w.c.now(&tx), Err(NOT_A_DOCTOR));
    let tx = w.c.net.access(1, &w.p.id, &w.e.id, Some([6; 32]));
    assert_eq!(w.c.now(&tx), Err(NO_SUCH_GRANT));
    let (write, _) = w.write_grant();
    let tx = w.c.net.access(0, &w.p.id, &w.d.id, Some(write));
    assert_eq!(w.c.now(&tx), Err(NOT_A_READ_GRANT));
    // Many reads under one grant, until it is revoked.
    let tx = w.c.net.access(1, &w.p.id, &w.e.id, Some(grant_id));
    w.c.ok(&tx);
    let tx = w.c.net.access(1, &w.p.id, &w.e.id, Some(grant_id));
    w.c.ok(&tx);
    let revoke = w.c.net.revoke(&w.p, grant_id, &w.p.custodial());
    w.c.ok(&revoke);
    let tx = w.c.net.access(1, &w.p.id, &w.e.id, Some(grant_id));
    assert_eq!(w.c.now(&tx), Err(GRANT_WAS_REVOKED));
    let log = w.c.accesses_of(&w.p.id).expect("q");
    assert_eq!(log.len(), 2);
    assert!(
        log.iter()
            .all(|a| a.reader == w.e.id && a.grant == Some(grant_id))
    );
}

/// What a home's key service reads at start (`entitled::read_grants_of_home`, through the
/// index of schema 9): the read grants of the home's patients not revoked and ending after the
/// time asked, oldest first; not a write grant, not a revoked or ended one, not another home's.
#[test]
fn a_homes_live_read_grants_are_those_not_revoked_nor_ended() {
    let mut w = world();
    w.p_device_aged();
    let grant = |w: &mut World, patient: &TestPerson, doctor: &PersonId, scope| {
        let tx =
            w.c.net
                .grant(patient, doctor, scope, None, &patient.custodial());
        w.c.ok(&tx)
    };
    let (p, q, d, e) = (w.p.clone(), w.q.clone(), w.d.id, w.e.id);
    let ends_soon = grant(&mut w, &p, &d, read(HOUR));
    let revoked = grant(&mut w, &p, &d, read(4 * HOUR));
    let long = grant(&mut w, &p, &d, read(4 * HOUR));
    grant(&mut w, &p, &d, Scope::Write);
    let other_home = grant(&mut w, &q, &e, read(4 * HOUR));
    let revoke = w.c.net.revoke(&p, revoked, &p.custodial());
    w.c.ok(&revoke);
    w.c.now += 2 * HOUR;
    let late = grant(&mut w, &p, &d, read(HOUR));
    let ids = |home: u32, after_ms: u64| -> Vec<TxId> {
        crate::entitled::read_grants_of_home(&w.c, home, after_ms)
            .expect("read")
            .iter()
            .map(|g| g.id)
            .collect()
    };
    assert_eq!(ids(0, T0), [ends_soon, long, late]);
    assert_eq!(ids(0, w.c.now), [long, late]);
    assert_eq!(ids(1, w.c.now), [other_home]);
    assert!(ids(0, w.c.now + 4 * HOUR).is_empty());
}

// ---------------------------------------------------------------------------------------------
// The framework.

/// Every rule's reads are declared: a view that answers only the declared reads fails on any
/// other, and the tests above run every rule through it. Here it is shown to fail.
#[test]
fn an_undeclared_read_is_an_error() {
    let w = world();
    let tx = w.record([0; 32]);
    let ctx = Ctx::new(w.c.id(&tx), &tx.header, w.c.now, 99, &w.c.net.genesis);
    let view = w.c.view();
    let declared = Declared::new(&view, &ctx);
    assert!(declared.grant(&[0; 32]).is_ok());
    match declared.keys_of(&w.p.id) {
        Err(crate::Error::UndeclaredRead(read)) => assert!(read.contains("KeysOf")),
        other => panic!("expected an undeclared read, got {other:?}"),
    }
    assert!(declared.person(&w.q.id).is_err());
}

/// A precheck is the same rule over the committed state at `T = now`.
#[test]
fn a_precheck_decides_as_the_chain_will() {
    let mut w = world();
    let (grant, t) = w.write_grant();
    let record = w.record(grant);
    let decide_at =
        |c: &Chain, t: u64| precheck(&c.state(), &c.net.genesis, &record, t).expect("reads");
    assert!(decide_at(&w.c, t + 1).is_ok());
    assert_eq!(
        decide_at(&w.c, t + WRITE_GRANT_MS),
        Err(Reject(GRANT_HAS_EXPIRED))
    );
}

#[test]
fn reasons_are_distinct() {
    let mut seen = std::collections::BTreeSet::new();
    for reason in all() {
        assert!(seen.insert(reason), "{reason} twice");
    }
    for invalid in crate::Invalid::ALL {
        assert!(!seen.contains(&invalid.reason()));
    }
}

/// Red team s13, held: the signer's key row kept from the common checks (`Ctx::signer_row`)
/// gives the verdict the rule gives reading it again (a fresh context, nothing kept), applied
/// or rejected.
#[test]
fn the_kept_signer_row_decides_as_reading_it_again() {
    let mut w = world();
    let (grant, t) = w.write_grant();
    let record = w.record(grant);
    let view = w.c.view();
    for at in [t + 1, t + WRITE_GRANT_MS] {
        let ctx = Ctx::new(w.c.id(&record), &record.header, at, 99, &w.c.net.genesis);
        let kept = decide(&ctx, &view).expect("reads");
        let fresh = Ctx::new(w.c.id(&record), &record.header, at, 99, &w.c.net.genesis);
        let again = record
            .header
            .meta
            .rule()
            .decide(&fresh, &view)
            .expect("reads");
        assert_eq!(format!("{kept:?}"), format!("{again:?}"), "at {at}");
    }
}
