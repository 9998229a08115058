//! Red team against issue 10's ledger promises (docs/SECURITY.md, "Confidential records", §1,
//! §4.2, §7, §9, §11 and §16): what one dishonest validator, a client holding a patient's
//! password, or both, can make every validator apply, and what `medchain verify` reports.
//!
//! The patient `P` and Dr `D` have home 0 (`H`, correct). The attacker is validator 1 (`V`, the
//! insurer or any hospital): it holds its `node.key`, the custodial keys of its own people (Dr
//! `E`), runs the page at its origin (so it holds every device key made there) and can be the
//! primary (it orders what it has, and picks block times within the tolerance). Every attack
//! goes through a real store (`append_block`: the rules and apply code of every validator).
//!
//! `break_*` tests assert what the design promises and fail on the code as it is: they are
//! `#[ignore = "BREAK: ..."]` so the suite stays green until the lead fixes them; run them with
//! `cargo test -p ledger --test red_team10 -- --ignored`. `held_*` tests pin defences that held.

use std::path::PathBuf;

use ed25519_dalek::SigningKey;
use ledger::rules::reason as why;
use ledger::seal::{self, SealError, SealedBody};
use ledger::testkit::{GENESIS_TIME_MS, TestNet, TestPerson, key_from, public};
use ledger::tx::{KeyKind, RecordBody, RequestGrant, Scope};
use ledger::verify::verify_store;
use ledger::{
    Decision, Error, Fault, Invalid, Meta, OpenOptions, Queries, Refusal, SignedTx, Store, TxId,
};
use rusqlite::Connection;

const H: u32 = 0;
const V: u32 = 1;
const HOUR_MS: u64 = 3_600_000;
const READ: Scope = Scope::Read {
    duration_ms: HOUR_MS,
};

/// A store on a four-validator chain whose block times the test chooses.
struct Chain {
    net: TestNet,
    store: Store,
    path: PathBuf,
    _dir: tempfile::TempDir,
    time_ms: u64,
    /// Patient and doctor of H; a doctor of V.
    p: TestPerson,
    d: TestPerson,
    e: TestPerson,
}

impl Chain {
    /// P and D (home H) and E (home V) enrolled in block 1.
    fn new() -> Chain {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        let store = Store::open(&path, &net.genesis, OpenOptions::default()).expect("open");
        let (p, d, e) = (
            net.patient(1, H),
            net.doctor(2, H, "Cardiology"),
            net.doctor(4, V, "Oncology"),
        );
        let mut c = Chain {
            store,
            path,
            _dir: dir,
            time_ms: GENESIS_TIME_MS,
            p,
            d,
            e,
            net,
        };
        let enrolls = [&c.p, &c.d, &c.e].map(|x| c.net.enroll(x));
        assert_eq!(c.block(&enrolls.iter().collect::<Vec<_>>()), [None; 3]);
        c
    }

    /// Appends a block one second after the last, holding `txs` in this order (the primary's
    /// choice); each one's verdict (`None`: applied).
    fn block(&mut self, txs: &[&SignedTx]) -> Vec<Option<&'static str>> {
        self.block_at(self.time_ms + 1_000, txs)
    }

    fn block_at(&mut self, time_ms: u64, txs: &[&SignedTx]) -> Vec<Option<&'static str>> {
        let entries = txs.iter().map(|t| self.net.request(t)).collect();
        let block = self.net.block_at(self.store.head(), time_ms, entries);
        let applied = self.net.append(&mut self.store, &block).expect("append");
        self.time_ms = time_ms;
        let mut verdicts = vec![None; txs.len()];
        for (index, reason) in applied.rejected {
            verdicts[index] = Some(reason);
        }
        verdicts
    }

    /// One transaction in its own block: its verdict.
    fn one(&mut self, tx: &SignedTx) -> Option<&'static str> {
        self.block(&[tx])[0]
    }

    /// One transaction that must apply: its id.
    fn ok(&mut self, tx: &SignedTx) -> TxId {
        assert_eq!(self.one(tx), None, "{:?}", tx.meta());
        self.net.id(tx)
    }

    /// Lets the young-key and recovery wait pass.
    fn wait(&mut self) {
        self.time_ms += self.net.genesis.recovery_wait_ms() + 1_000;
    }

    /// A device key of P made at `origin`'s page, added: through `origin`'s ask approved by
    /// `approver`, or custodially without an ask at the home.
    fn add_device(&mut self, secret: &SigningKey, origin: u32) {
        let new = self
            .net
            .new_key(&self.p.id, KeyKind::Device, origin, secret);
        let add = if origin == H {
            self.net.add_key(&self.p, new, None, &self.p.custodial())
        } else {
            let ask = self.net.ask_key(&self.p, origin, new.clone());
            let ask = self.ok(&ask);
            self.net
                .add_key(&self.p, new, Some(ask), &self.p.custodial())
        };
        self.ok(&add);
    }

    /// A write grant from P to `doctor` in person at the home, then `doctor`'s record: its id.
    fn record_by(&mut self, doctor: &TestPerson) -> (SignedTx, TxId) {
        let grant = self
            .net
            .grant(&self.p, &doctor.id, Scope::Write, None, &self.p.custodial());
        let grant = self.ok(&grant);
        let record = self
            .net
            .add_record(doctor, &self.p.id, grant, &doctor.custodial());
        let id = self.ok(&record);
        (record, id)
    }

    fn verify(&self) -> ledger::Result<ledger::verify::Summary> {
        verify_store(&self.path, &self.net.genesis, &mut |_| {})
    }
}

/// (1) §1.3 and §11 ("V cannot put an unsealed or malformed body, or a body on a kind without
/// one, into a block past correct validators: `BodyFormat` at every edge"). `Invalid::BodyFormat`
/// existed and `seal::check_body_format` was written, but nothing called it:
/// `SignedTx::from_request` (the edge check shared by every validator, batches and `medchain
/// verify`) checked the body's hash only, so a record whose diagnosis is in clear, and an
/// access entry carrying free text, applied on every validator and stayed in the chain for
/// ever, unerasable. Fixed: `from_request` checks the framing after the body's hash.
#[test]
fn break_1_unsealed_and_stray_bodies_pass_the_edge() {
    let mut c = Chain::new();
    let grant = c
        .net
        .grant(&c.p, &c.d.id, Scope::Write, None, &c.p.custodial());
    let grant = c.ok(&grant);
    let meta = Meta::AddRecord(ledger::tx::AddRecord {
        patient: c.p.id,
        doctor: c.d.id,
        department: "Cardiology".into(),
        grant,
    });
    let plain = RecordBody {
        diagnosis: "Lymphoma".into(),
        prescription: "R-CHOP".into(),
        notes: String::new(),
    };
    let header = c.net.header(meta, c.d.custodial().signer);
    let unsealed = c.net.sign_header(header, plain.to_bytes(), &c.d.custodial);
    let access = c.net.access(H, &c.p.id, &c.p.id, None);
    let header = access.header.clone();
    let chatty = c.net.sign_header(
        header,
        b"Lymphoma, R-CHOP".to_vec(),
        &c.net.keys[H as usize],
    );
    let verdicts = c.block(&[&unsealed, &chatty]);
    let stored = c.store.reader().expect("reader");
    assert_eq!(
        verdicts,
        [Some(Invalid::BodyFormat.reason()); 2],
        "applied: {} record(s) of P in the chain, one with its diagnosis in clear",
        stored.records_of(&c.p.id).expect("q").len()
    );
}

/// (2) §4.2, §10 (insurer row) and §11 ("V cannot become entitled through a device key made at
/// its own page"). An `AddKey` answering an ask is "not young" whatever key approves it, so a
/// key made at V's page, once past its wait, approves the home's ask for a key the attacker
/// made at the home's page, and that key is at once a non-young key of the home: it signs a
/// read grant to V's doctor, and the correct home ships P's whole history to V.
///
/// What the attacker needs: P's home password (to open the home's page as P; §5.8 has the home
/// ask, rather than add custodially, whenever P's custodial key is not live, and with the
/// password the custodial key may revoke itself while another key remains) and a key of P
/// made at V's page more than the wait ago (P once used V's page). No 72 h wait, no notice.
#[test]
fn break_2_a_key_made_at_the_insurers_page_approves_a_home_key_that_shares_at_once() {
    let mut c = Chain::new();
    let (_, _record) = c.record_by(&c.d.clone());
    // P used V's page once, long ago.
    let at_v = key_from("P's key made at V's page");
    c.add_device(&at_v, V);
    c.wait();
    // The attacker, signed in at the home's page with P's password, makes a key there; the
    // home asks for it; V approves the ask with the key its page holds.
    let attacker = key_from("made at the home's page in the attacker's browser");
    let new = c.net.new_key(&c.p.id, KeyKind::Device, H, &attacker);
    let ask = c.net.ask_key(&c.p, H, new.clone());
    let ask = c.ok(&ask);
    let approve = c.net.add_key(&c.p, new, Some(ask), &c.p.device_with(&at_v));
    let approved = c.one(&approve);
    let row = c.store.key(&public(&attacker)).expect("q");
    let read = c
        .net
        .grant(&c.p, &c.e.id, READ, None, &c.p.device_with(&attacker));
    let verdict = c.one(&read);
    assert!(
        verdict.is_some(),
        "a read grant to V's doctor applied seconds after the key was made, without the wait \
         (V's approval: {approved:?}; the key: {:?})",
        row.map(|r| (r.origin, r.young_until_ms))
    );
}

/// (3) §4.2: "the wait is visible and cancellable: ... any live key of the patient revokes it".
/// A young key is home-origin, and the origin rule lets a home-origin key revoke any key: so
/// the key a password thief adds at the home revokes P's custodial key and P's devices right
/// away, and later cancels the home's recovery by revoking the recovering key. Nothing P or
/// the home can do then stops it, and past its wait it signs a read grant to another
/// hospital's doctor.
#[test]
fn break_3_a_young_key_revokes_every_other_key_and_outwaits_the_patient() {
    let mut c = Chain::new();
    let (_, _record) = c.record_by(&c.d.clone());
    // P's own phone, made at the home's page long ago.
    let phone = key_from("P's phone");
    c.add_device(&phone, H);
    c.wait();
    // The thief signs in at the home with P's password: the custodial key adds the thief's key.
    let thief = key_from("the thief's browser at the home's page");
    c.add_device(&thief, H);
    let by_thief = c.p.device_with(&thief);
    let strike = [
        c.net.revoke_key(&c.p, public(&c.p.custodial), &by_thief),
        c.net.revoke_key(&c.p, public(&phone), &by_thief),
    ];
    let strike_verdicts = c.block(&strike.iter().collect::<Vec<_>>());
    // P sees the notice and cancels the key, on the phone and in person at the home.
    let cancel_on_phone = c
        .net
        .revoke_key(&c.p, public(&thief), &c.p.device_with(&phone));
    let cancel_in_person = c.net.revoke_key(&c.p, public(&thief), &c.p.custodial());
    let cancels = [c.one(&cancel_on_phone), c.one(&cancel_in_person)];
    // The home starts a recovery; the thief's key revokes the recovering key.
    let recovered = key_from("P's recovered custodial key");
    let recover = c.net.recover(
        &c.p,
        c.net.new_key(&c.p.id, KeyKind::Custodial, H, &recovered),
    );
    let recover_verdict = c.one(&recover);
    let cancel_recovery = c.net.revoke_key(&c.p, public(&recovered), &by_thief);
    let cancel_recovery_verdict = c.one(&cancel_recovery);
    c.wait();
    let read = c.net.grant(&c.p, &c.e.id, READ, None, &by_thief);
    let verdict = c.one(&read);
    assert!(
        verdict.is_some(),
        "the thief's key shared P's history with V after its wait: its strike {strike_verdicts:?}, \
         P's cancels {cancels:?}, recovery {recover_verdict:?}, its cancel of the recovery \
         {cancel_recovery_verdict:?}"
    );
}

/// (4) §16 item 13 and `Finding::DuplicateKeyCommitment` ("a correct sealer draws a fresh key
/// for every body, so `sealer` reused one: key stores keep the first's key only and show
/// `second` as broken"). A key commitment is in clear in the body; V, as primary, sees a
/// correct hospital's record before it orders it, copies its commitment into a sealed body of
/// its own (a `RequestGrant` by its doctor: any enrolled doctor may send one to any patient)
/// and orders its copy first. `medchain verify` then named the correct record as the one that
/// reused a key and its correct sealer as the culprit; and by §16.13 every key store kept the
/// copy's place and showed the correct record `broken`, its key never stored: V could destroy
/// any record it saw pending.
///
/// Fixed at the root: the commitment is bound to its transaction (`SHA-256("medchain/seal-key/
/// v2" || seal_ad(genesis_hash, header) || key)`), so the copy names no key: the record's key
/// neither matches nor opens it, the record's key still matches and opens the record, and the
/// key's id in a key store (unbound, `seal::key_id`) belongs to the record alone. Verify has no
/// duplicate finding any more; the chain is valid.
#[test]
fn break_4_a_copied_key_commitment_opens_nothing_and_collides_with_nothing() {
    let mut c = Chain::new();
    let grant = c
        .net
        .grant(&c.p, &c.d.id, Scope::Write, None, &c.p.custodial());
    let grant = c.ok(&grant);
    let honest = c.net.add_record(&c.d, &c.p.id, grant, &c.d.custodial());
    let commitment = seal::key_commitment(&honest.body).expect("sealed");
    let copy = SealedBody {
        version: seal::SEAL_VERSION,
        key_commit: commitment,
        nonce: [7; 24],
        ciphertext: vec![0; seal::PAD_UNIT_BYTES + seal::TAG_BYTES],
    };
    let meta = Meta::RequestGrant(RequestGrant {
        patient: c.p.id,
        doctor: c.e.id,
        scope: READ,
    });
    let header = c.net.header(meta, c.e.custodial().signer);
    let front_run = c.net.sign_header(header, copy.to_bytes(), &c.e.custodial);
    assert_eq!(c.block(&[&front_run, &honest]), [None, None]);
    let g = c.net.genesis.hash();
    let key = c.net.data_key(&honest.header);
    assert_eq!(
        seal::open(&g, &front_run.header, &front_run.body, &key),
        Err(SealError::WrongKey),
        "the record's key is refused by the copy's commitment before any decryption"
    );
    assert_eq!(
        seal::check_key(&g, &front_run.header, &front_run.body, &key),
        Err(SealError::WrongKey)
    );
    assert_ne!(key.commitment(&g, &front_run.header), commitment);
    assert_eq!(
        seal::check_key(&g, &honest.header, &honest.body, &key),
        Ok(())
    );
    assert!(seal::open(&g, &honest.header, &honest.body, &key).is_ok());
    // The one key whose id a key store keys the record by: no other transaction's key (the
    // copy has none that matches) can claim it.
    let other = c.net.data_key(&front_run.header);
    assert_ne!(seal::key_id(&key), seal::key_id(&other));
    assert_eq!(
        seal::check_key(&g, &front_run.header, &front_run.body, &other),
        Err(SealError::WrongKey)
    );
    c.verify().expect("a valid chain");
}

/// (5) `ledger::entitled::erased` ("whether transaction `tx` is erased on chain, and at which
/// height") is still the schema-4 stub that answers `None`, now that schema 5 has erasures:
/// a key service that asks it keeps, fetches and serves the keys of erased records. (No caller
/// yet: the node's key service is still to be built on `ledger::entitled`.)
#[test]
fn break_5_entitled_erased_does_not_see_erasures() {
    let mut c = Chain::new();
    let (_, record) = c.record_by(&c.e.clone());
    let request = c.net.request_erasure(&c.p, record, &c.p.custodial());
    let request = c.ok(&request);
    let answer = c.net.answer_erasure(V, request, Decision::Erase);
    let answer = c.ok(&answer);
    let reader = c.store.reader().expect("reader");
    assert!(reader.is_erased(&record).expect("q"));
    let height = reader.transaction_height(&answer).expect("q");
    assert_eq!(
        ledger::entitled::erased(&reader, &record).expect("q"),
        height
    );
}

/// (6) Held: a non-young key of P's home cannot be made by V alone. V cannot ask for a key of
/// the home's origin, add a key without an ask, recover P, or use a key of its own origin (past
/// its wait) or a link to sign a read grant or an erasure request; a key a young key approves
/// waits as long, and P's custodial key (a password at the home) grants reads to home doctors
/// only.
#[test]
fn held_6_v_alone_mints_no_key_that_shares_the_history() {
    let mut c = Chain::new();
    let (_, record) = c.record_by(&c.d.clone());
    let at_v = key_from("P's key made at V's page");
    c.add_device(&at_v, V);
    let link = c.net.link(&c.p, V, None, &c.p.device_with(&at_v));
    c.ok(&link);
    c.wait();
    let by_v_key = c.p.device_with(&at_v);
    let forged = key_from("V's forged home key");
    let as_home = c.net.new_key(&c.p.id, KeyKind::Device, H, &forged);
    assert_eq!(
        c.one(&c.net.ask_key(&c.p, V, as_home.clone())),
        Some(why::KEY_ORIGIN)
    );
    assert_eq!(
        c.one(&c.net.add_key(&c.p, as_home.clone(), None, &by_v_key)),
        Some(why::DEVICE_KEY_NEEDS_ASK)
    );
    let custodial = c.net.new_key(&c.p.id, KeyKind::Custodial, V, &forged);
    let recover = c.net.sign(
        Meta::Recover(ledger::tx::Recover {
            person: c.p.id,
            key: custodial,
        }),
        &c.net.validator(V),
        Vec::new(),
    );
    assert_eq!(c.one(&recover), Some(why::RECOVER_NOT_HOME));
    assert_eq!(
        c.one(&c.net.grant(&c.p, &c.e.id, READ, None, &by_v_key)),
        Some(why::READ_GRANT_NOT_HOME_KEY)
    );
    assert_eq!(
        c.one(&c.net.request_erasure(&c.p, record, &by_v_key)),
        Some(why::ERASURE_NOT_HOME_KEY)
    );
    assert_eq!(
        c.one(&c.net.grant(&c.p, &c.e.id, READ, None, &c.p.custodial())),
        Some(why::READ_GRANT_IN_PERSON_NOT_HOME_DOCTOR)
    );
    // A password at the home: the key it adds, and a key that one approves, both wait.
    let young = key_from("added on a password");
    c.add_device(&young, H);
    let second = key_from("approved by the young key");
    let new = c.net.new_key(&c.p.id, KeyKind::Device, H, &second);
    let ask = c.ok(&c.net.ask_key(&c.p, H, new.clone()));
    c.ok(&c
        .net
        .add_key(&c.p, new, Some(ask), &c.p.device_with(&young)));
    for key in [&young, &second] {
        assert_eq!(
            c.one(
                &c.net
                    .grant(&c.p, &c.e.id, READ, None, &c.p.device_with(key))
            ),
            Some(why::YOUNG_KEY)
        );
    }
    assert!(
        c.store
            .grants_of_patient(&c.p.id)
            .expect("q")
            .iter()
            .all(|g| g.scope == Scope::Write)
    );
    c.verify().expect("verifies");
}

/// (7) Held: erasure by the wrong party, twice, or of the wrong thing. V (neither P's home nor
/// the record's author) cannot answer for H's record; the author's two answers ordered in one
/// block by V as primary count once; a request for a transaction that is not sealed, or that
/// is another patient's, is refused; a replay of the request and the answer in a later block
/// are duplicates; and `medchain verify`'s replay derives the same erasure state.
#[test]
fn held_7_erasure_by_the_wrong_party_twice_or_of_the_wrong_thing() {
    let mut c = Chain::new();
    let (_, record) = c.record_by(&c.d.clone());
    let q = c.net.patient(9, V);
    c.ok(&c.net.enroll(&q));
    let access = c.ok(&c.net.access(H, &c.p.id, &c.p.id, None));
    assert_eq!(
        c.one(&c.net.request_erasure(&c.p, access, &c.p.custodial())),
        Some(why::NO_SUCH_SEALED)
    );
    assert_eq!(
        c.one(&c.net.request_erasure(&q, record, &q.custodial())),
        Some(why::NO_SUCH_SEALED)
    );
    let request = c.net.request_erasure(&c.p, record, &c.p.custodial());
    let request_id = c.ok(&request);
    assert_eq!(
        c.one(&c.net.answer_erasure(V, request_id, Decision::Erase)),
        Some(why::ERASURE_NOT_SEALER)
    );
    let refuse = c.net.answer_erasure(
        H,
        request_id,
        Decision::Refuse {
            reason: Refusal::LegalClaims,
            until_ms: None,
        },
    );
    let erase = c.net.answer_erasure(H, request_id, Decision::Erase);
    assert_eq!(
        c.block(&[&erase, &refuse]),
        [None, Some(why::ERASURE_NOT_PENDING)]
    );
    assert_eq!(
        c.block(&[&request, &erase]),
        [Some(why::DUPLICATE), Some(why::DUPLICATE)]
    );
    let reader = c.store.reader().expect("reader");
    assert!(reader.is_erased(&record).expect("q"));
    let row = reader.erasure(&request_id).expect("q").expect("row");
    assert_eq!(row.answer.map(|a| a.decision), Some(Decision::Erase));
    assert_eq!(reader.erasures_of_patient(&c.p.id).expect("q").len(), 1);
    c.verify().expect("the replay derives the same erasures");
}

/// (8) Held: an operator that edits its own store to change who answers an erasure (the
/// record's or grant's sealer, the request's hospital) or to age a young key is found by
/// `medchain verify` and refused by `Store::open`.
#[test]
fn held_8_edited_sealers_and_young_keys_are_found_by_verify() {
    let mut c = Chain::new();
    let (_, record) = c.record_by(&c.e.clone());
    c.ok(&c.net.request_erasure(&c.p, record, &c.p.custodial()));
    let young = key_from("added on a password");
    c.add_device(&young, H);
    let path = c.path.clone();
    drop(c.store);
    for edit in [
        "UPDATE records SET hospital = 0",
        "UPDATE grants SET sealer = 1",
        "UPDATE erasures SET hospital = 0",
        "UPDATE keys SET young_until_ms = 0",
    ] {
        let copy = c._dir.path().join(format!("edited-{}.db", edit.len()));
        std::fs::copy(&path, &copy).expect("copy");
        let conn = Connection::open(&copy).expect("open");
        assert!(conn.execute(edit, []).expect(edit) > 0, "{edit}");
        drop(conn);
        match verify_store(&copy, &c.net.genesis, &mut |_| {}) {
            Err(Error::Corrupt {
                fault: Fault::State(_),
                ..
            }) => {}
            other => panic!("{edit}: expected a state fault, got {other:?}"),
        }
        assert!(Store::open(&copy, &c.net.genesis, OpenOptions::full()).is_err());
        std::fs::remove_file(&copy).expect("rm");
    }
}

/// (9) Held: a sealed body bound to its transaction. The body of H's record, copied by its
/// sealer into another sealed transaction (a request by the same doctor to the same patient),
/// does not open there: under the record's key it is refused by the commitment, which is bound
/// to the record's header (since break 4; before, by the associated data), and so is the key of
/// that header; the record replayed in a later block is a duplicate, not a second record.
#[test]
fn held_9_a_sealed_body_opens_only_in_its_own_transaction() {
    let mut c = Chain::new();
    let (record, _) = c.record_by(&c.d.clone());
    let key = c.net.data_key(&record.header);
    let g = c.net.genesis.hash();
    assert!(seal::open(&g, &record.header, &record.body, &key).is_ok());
    let meta = Meta::RequestGrant(RequestGrant {
        patient: c.p.id,
        doctor: c.d.id,
        scope: Scope::Write,
    });
    let mut header = record.header.clone();
    header.meta = meta;
    let moved = c
        .net
        .sign_header(header, record.body.clone(), &c.d.custodial);
    assert_eq!(c.one(&moved), None, "a well-framed body of its sealer's");
    assert_eq!(
        seal::open(&g, &moved.header, &moved.body, &key),
        Err(SealError::WrongKey)
    );
    assert_eq!(
        seal::open(
            &g,
            &moved.header,
            &moved.body,
            &c.net.data_key(&moved.header)
        ),
        Err(SealError::WrongKey)
    );
    assert_eq!(c.one(&record), Some(why::DUPLICATE));
    assert_eq!(c.store.records_of(&c.p.id).expect("q").len(), 1);
}

/// (10) Held: a chain holding what the rules cannot refuse in bodies (a body carrying another
/// body's commitment, and a well-framed body of garbage) is a valid chain: `Store::open`, which
/// verifies it, opens it. (Since break 4 a copied commitment is no finding: bound to its
/// transaction, it names no key in another.)
#[test]
fn held_10_duplicate_commitments_and_garbage_bodies_do_not_stop_a_store() {
    let mut c = Chain::new();
    let (record, _) = c.record_by(&c.d.clone());
    let garbage = SealedBody {
        version: seal::SEAL_VERSION,
        key_commit: seal::key_commitment(&record.body).expect("sealed"),
        nonce: [1; 24],
        ciphertext: vec![0xee; 3 * seal::PAD_UNIT_BYTES + seal::TAG_BYTES],
    };
    let meta = Meta::RequestGrant(RequestGrant {
        patient: c.p.id,
        doctor: c.e.id,
        scope: READ,
    });
    let header = c.net.header(meta, c.e.custodial().signer);
    let copy = c
        .net
        .sign_header(header, garbage.to_bytes(), &c.e.custodial);
    c.ok(&copy);
    let path = c.path.clone();
    drop(c.store);
    let store = Store::open(&path, &c.net.genesis, OpenOptions::default()).expect("opens");
    assert_eq!(store.records_of(&c.p.id).expect("q").len(), 1);
    verify_store(&path, &c.net.genesis, &mut |_| {}).expect("valid");
}

/// (11) A crash while a new `chain.db` is being created (`medchain init`, a node's first
/// start). `schema::migrate` ran each migration in its own SQLite transaction, so a store
/// created from nothing passed through versions 1 to 4 on disk; killed after migration 4
/// committed and before 5 did, it held `user_version = 4` and no block, and every later open
/// refused it for good as a chain of format 4 ("run `medchain init --force`", which removes the
/// validator's whole folder, §16.7), instead of finishing its creation. The crash is stood in
/// for by making migration 5 fail (a stray `erasures` table in the new file). Fixed: the
/// migrations run in one transaction, so what is on disk afterwards is the new file as it was
/// (version 0, no table of the schema), and the next open creates the store.
#[test]
fn break_11_a_store_interrupted_while_created_is_refused_as_an_old_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chain.db");
    let net = TestNet::new(4);
    let conn = Connection::open(&path).expect("new file");
    conn.execute_batch("CREATE TABLE erasures (x)")
        .expect("stray");
    drop(conn);
    assert!(
        Store::open(&path, &net.genesis, OpenOptions::default()).is_err(),
        "migration 5 fails: the crash"
    );
    let conn = Connection::open(&path).expect("reopen");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .expect("sql")
        .query_map([], |r| r.get(0))
        .expect("tables")
        .collect::<Result<_, _>>()
        .expect("names");
    assert_eq!(
        (version, tables),
        (0, vec!["erasures".to_string()]),
        "nothing of the interrupted creation on disk"
    );
    conn.execute_batch("DROP TABLE erasures")
        .expect("the stray table gone");
    drop(conn);
    match Store::open(&path, &net.genesis, OpenOptions::default()) {
        Ok(store) => assert_eq!(store.head().0, 0),
        Err(e) => panic!("a store that never held a block is refused: {e}"),
    }
}
