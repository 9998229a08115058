//! Red team against issue 9's ledger promises (docs/SECURITY.md, "Identities, keys and consent
//! on chain", §3 and §6): what one dishonest validator can make every validator apply with
//! well-signed transactions, and what its operator can hide from `medchain verify`.
//!
//! The attacker is validator 1 (`V`): it holds its `node.key`, the custodial keys of its own
//! home people (patient `Q`, doctor `E`) and the public chain. The victims are validator 0's
//! people (patient `P`, doctor `D`). Each attack goes through a real store (`append_block`,
//! the same rules and apply code as every validator). Attacks that held are
//! `red_team_held_*`; one that breaks is `#[ignore = "BREAK: ..."]`; run them with
//! `cargo test -p ledger --test red_team9 -- --ignored`.

use std::path::PathBuf;

use ed25519_dalek::SigningKey;
use ledger::rules::reason as why;
use ledger::testkit::{GENESIS_TIME_MS, TestNet, TestPerson, key_from, public};
use ledger::tx::{KeyKind, NewKey, Scope};
use ledger::verify::verify_store;
use ledger::{OpenOptions, Queries, SignedTx, StateView, Store, TxId};
use rusqlite::Connection;

const V: u32 = 1;
const MINUTE: u64 = 60_000;

/// A store on a four-validator chain, with the block time under the test's control.
struct Chain {
    net: TestNet,
    store: Store,
    path: PathBuf,
    _dir: tempfile::TempDir,
    time_ms: u64,
    /// Validator 0's patient and doctor (the victims), validator 1's patient and doctor.
    p: TestPerson,
    d: TestPerson,
    q: TestPerson,
    e: TestPerson,
}

impl Chain {
    /// Enrolls P, D (home 0) and Q, E (home 1) in block 1.
    fn new() -> Chain {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        let store = Store::open(&path, &net.genesis, OpenOptions::default()).expect("open");
        let p = net.patient(1, 0);
        let d = net.doctor(2, 0, "Cardiology");
        let q = net.patient(3, V);
        let e = net.doctor(4, V, "Cardiology");
        let mut chain = Chain {
            store,
            path,
            _dir: dir,
            time_ms: GENESIS_TIME_MS,
            p,
            d,
            q,
            e,
            net,
        };
        let enrolls = [&chain.p, &chain.d, &chain.q, &chain.e].map(|x| chain.net.enroll(x));
        let verdicts = chain.block(&enrolls.iter().collect::<Vec<_>>());
        assert_eq!(verdicts, vec![None; 4], "enrollments");
        chain
    }

    /// Appends a block one second after the last holding `txs`; each one's verdict (`None`:
    /// applied).
    fn block(&mut self, txs: &[&SignedTx]) -> Vec<Option<&'static str>> {
        self.block_at(self.time_ms + 1_000, txs)
    }

    /// Appends a block with time `time_ms` holding `txs`.
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

    fn id(&self, tx: &SignedTx) -> TxId {
        self.net.id(tx)
    }

    /// An in-person write grant from P to D (attested by P's home, validator 0), applied.
    fn write_grant_p_to_d(&mut self) -> (SignedTx, TxId) {
        let g = self
            .net
            .grant(&self.p, &self.d.id, Scope::Write, None, &self.p.custodial());
        assert_eq!(self.one(&g), None, "the honest grant applies");
        let id = self.id(&g);
        (g, id)
    }

    /// The block time of the transaction `id` (its block's header time).
    fn block_time_of(&self, id: &TxId) -> u64 {
        let reader = self.store.reader().expect("reader");
        match reader.tx_status(id).expect("status") {
            ledger::TxStatus::Committed { height, .. } => {
                reader
                    .block(height)
                    .expect("block")
                    .expect("present")
                    .header
                    .timestamp_ms
            }
            other => panic!("not committed: {other:?}"),
        }
    }

    fn verify(&self) -> ledger::Result<ledger::verify::Summary> {
        verify_store(&self.path, &self.net.genesis, &mut |_| {})
    }
}

/// (1) A record "by" another hospital's doctor. V signs an `AddRecord` naming D (home 0) with
/// the custodial key it holds for its own doctor E, then with a fresh key of its own claimed as
/// D's device or custodial key; and it tries to get a key of D's onto the chain through its own
/// `Ask`. Every one is rejected, and P's history stays empty.
#[test]
fn red_team_held_record_by_another_hospitals_doctor() {
    let mut c = Chain::new();
    let (_, grant) = c.write_grant_p_to_d();
    let forged_key = key_from("V's own key");
    // E's custodial key, claimed as D's.
    let as_d_with_e_key = ledger::testkit::Signing {
        signer: ledger::Signer::Custodial {
            person: c.d.id,
            key: public(&c.e.custodial),
        },
        key: c.e.custodial.clone(),
    };
    let r1 = c.net.add_record(&c.d, &c.p.id, grant, &as_d_with_e_key);
    assert_eq!(c.one(&r1), Some(why::SIGNER_KEY_NOT_OF_PERSON));
    // A key V made, claimed as D's device key.
    let r2 = c
        .net
        .add_record(&c.d, &c.p.id, grant, &c.d.device_with(&forged_key));
    assert_eq!(c.one(&r2), Some(why::SIGNER_KEY_NOT_OF_PERSON));
    // V asks to add its key to D (a doctor's keys come from the home's page only).
    let new = c.net.new_key(&c.d.id, KeyKind::Device, V, &forged_key);
    let ask = c.net.ask_key(&c.d, V, new);
    assert_eq!(c.one(&ask), Some(why::DOCTOR_KEY_NOT_HOME));
    // E (V's own doctor, same department) uses D's grant.
    let r3 = c.net.add_record(&c.e, &c.p.id, grant, &c.e.custodial());
    assert_eq!(c.one(&r3), Some(why::NOT_A_WRITE_GRANT));
    let reader = c.store.reader().unwrap();
    assert!(reader.records_of(&c.p.id).unwrap().is_empty());
    c.verify().expect("verify passes");
}

/// (2) A grant for another hospital's patient. V signs an in-person grant for P (home 0) to
/// its doctor E: with Q's custodial key claimed as P's, with a key of its own, and claiming a
/// device attestation with a key that is not P's; and it tries a custodial key of P's through
/// an `Ask` (only the home may offer one) and a `Recover` (only the home may start one).
#[test]
fn red_team_held_grant_for_another_hospitals_patient() {
    let mut c = Chain::new();
    let as_p_with_q_key = ledger::testkit::Signing {
        signer: ledger::Signer::Custodial {
            person: c.p.id,
            key: public(&c.q.custodial),
        },
        key: c.q.custodial.clone(),
    };
    let g1 = c
        .net
        .grant(&c.p, &c.e.id, Scope::Write, None, &as_p_with_q_key);
    assert_eq!(c.one(&g1), Some(why::SIGNER_KEY_NOT_OF_PERSON));
    let forged = key_from("V's device for P");
    let g2 = c
        .net
        .grant(&c.p, &c.e.id, Scope::Write, None, &c.p.device_with(&forged));
    assert_eq!(c.one(&g2), Some(why::SIGNER_KEY_NOT_OF_PERSON));
    // Q's custodial key claimed as a device key of Q, granting for P: the signer is not P.
    let g3 = c
        .net
        .grant(&c.p, &c.e.id, Scope::Write, None, &c.q.custodial());
    assert_eq!(c.one(&g3), Some(why::NOT_ACTING_PERSON));
    let custodial_for_p = c.net.new_key(&c.p.id, KeyKind::Custodial, V, &forged);
    let ask = c.net.ask_key(&c.p, V, custodial_for_p.clone());
    assert_eq!(c.one(&ask), Some(why::CUSTODIAL_ASK_NOT_HOME));
    let recover = c.net.sign(
        ledger::Meta::Recover(ledger::tx::Recover {
            person: c.p.id,
            key: custodial_for_p,
        }),
        &c.net.validator(V),
        Vec::new(),
    );
    assert_eq!(c.one(&recover), Some(why::RECOVER_NOT_HOME));
    let reader = c.store.reader().unwrap();
    assert!(reader.grants_of_patient(&c.p.id).unwrap().is_empty());
}

/// (3) A write grant used twice, or used for a read; a read grant used for a record; a
/// revocation and a use in one block, in both orders (the order in the block decides, on
/// every validator).
#[test]
fn red_team_held_grants_are_used_once_and_revocation_races_are_ordered() {
    let mut c = Chain::new();
    let (_, grant) = c.write_grant_p_to_d();
    let r1 = c.net.add_record(&c.d, &c.p.id, grant, &c.d.custodial());
    let r2 = c.net.add_record(&c.d, &c.p.id, grant, &c.d.custodial());
    let read = c.net.access(0, &c.p.id, &c.d.id, Some(grant));
    assert_eq!(
        c.block(&[&r1, &r2, &read]),
        vec![None, Some(why::GRANT_USED), Some(why::NOT_A_READ_GRANT)]
    );
    // Revocation first: the use is rejected.
    let (_, g2) = c.write_grant_p_to_d();
    let revoke = c.net.revoke(&c.p, g2, &c.p.custodial());
    let use2 = c.net.add_record(&c.d, &c.p.id, g2, &c.d.custodial());
    assert_eq!(
        c.block(&[&revoke, &use2]),
        vec![None, Some(why::GRANT_WAS_REVOKED)]
    );
    // Use first: the revocation is rejected.
    let (_, g3) = c.write_grant_p_to_d();
    let use3 = c.net.add_record(&c.d, &c.p.id, g3, &c.d.custodial());
    let revoke3 = c.net.revoke(&c.p, g3, &c.p.custodial());
    assert_eq!(
        c.block(&[&use3, &revoke3]),
        vec![None, Some(why::GRANT_USED)]
    );
    // A read grant does not write.
    let rg = c.net.grant(
        &c.p,
        &c.d.id,
        Scope::Read {
            duration_ms: 60 * MINUTE,
        },
        None,
        &c.p.custodial(),
    );
    assert_eq!(c.one(&rg), None);
    let w = c.net.add_record(&c.d, &c.p.id, c.id(&rg), &c.d.custodial());
    assert_eq!(c.one(&w), Some(why::NOT_A_WRITE_GRANT));
    // The same signed record again (a replay): a duplicate.
    assert_eq!(c.one(&r1), Some(why::DUPLICATE));
    assert_eq!(
        c.store.reader().unwrap().records_of(&c.p.id).unwrap().len(),
        2
    );
    c.verify().expect("verify passes");
}

/// (4) Expiry at the block time's edges: a write grant at `T = expires - 1` is live, at
/// `T = expires` dead; likewise a read grant for an access entry, and `not_after`.
#[test]
fn red_team_held_expiry_edges() {
    let mut c = Chain::new();
    let (_, g1) = c.write_grant_p_to_d();
    let expires = c.block_time_of(&g1) + ledger::rules::WRITE_GRANT_MS;
    let (_, g2) = c.write_grant_p_to_d();
    let expires2 = c.block_time_of(&g2) + ledger::rules::WRITE_GRANT_MS;
    let live = c.net.add_record(&c.d, &c.p.id, g1, &c.d.custodial());
    assert_eq!(c.block_at(expires - 1, &[&live]), vec![None]);
    assert_eq!(expires2, expires + 1_000);
    let dead = c.net.add_record(&c.d, &c.p.id, g2, &c.d.custodial());
    assert_eq!(
        c.block_at(expires2, &[&dead]),
        vec![Some(why::GRANT_HAS_EXPIRED)]
    );
    // A revocation of the expired grant is refused too (nothing left to revoke).
    let rv = c.net.revoke(&c.p, g2, &c.p.custodial());
    assert_eq!(c.one(&rv), Some(why::GRANT_EXPIRED));
    // Read grant: an access entry at its last millisecond applies, at its end it does not.
    let rg = c.net.grant(
        &c.p,
        &c.d.id,
        Scope::Read {
            duration_ms: MINUTE,
        },
        None,
        &c.p.custodial(),
    );
    assert_eq!(c.one(&rg), None);
    let rg_end = c.block_time_of(&c.id(&rg)) + MINUTE;
    let a1 = c.net.access(0, &c.p.id, &c.d.id, Some(c.id(&rg)));
    let a2 = c.net.access(0, &c.p.id, &c.d.id, Some(c.id(&rg)));
    assert_eq!(c.block_at(rg_end - 1, &[&a1]), vec![None]);
    assert_eq!(
        c.block_at(rg_end, &[&a2]),
        vec![Some(why::GRANT_HAS_EXPIRED)]
    );
    // not_after: one millisecond after it, rejected.
    let (_, g3) = c.write_grant_p_to_d();
    let t = c.time_ms;
    let mut h = c.net.header(
        ledger::Meta::AddRecord(ledger::tx::AddRecord {
            patient: c.p.id,
            doctor: c.d.id,
            department: "Cardiology".into(),
            grant: g3,
        }),
        c.d.custodial().signer,
    );
    h.not_after_ms = t + 1_000;
    let late = c.net.seal_and_sign(h, Vec::new(), &c.d.custodial);
    assert_eq!(c.block_at(t + 1_001, &[&late]), vec![Some(why::EXPIRED)]);
    c.verify().expect("verify passes");
}

/// (5) A read without a live read grant: V logs a read by its own doctor E of P's records with
/// D's grant, with a write grant, with no grant, and as served by validator 0; all rejected.
#[test]
fn red_team_held_reads_need_a_live_read_grant_for_that_reader() {
    let mut c = Chain::new();
    let rg = c.net.grant(
        &c.p,
        &c.d.id,
        Scope::Read {
            duration_ms: 60 * MINUTE,
        },
        None,
        &c.p.custodial(),
    );
    assert_eq!(c.one(&rg), None);
    let rg = c.id(&rg);
    let (_, wg) = c.write_grant_p_to_d();
    let with_ds_grant = c.net.access(V, &c.p.id, &c.e.id, Some(rg));
    let with_write = c.net.access(0, &c.p.id, &c.d.id, Some(wg));
    let no_grant = c.net.access(V, &c.p.id, &c.e.id, None);
    let own_elsewhere = c.net.access(V, &c.p.id, &c.p.id, None);
    // V signs an entry claiming validator 0 served it.
    let as_zero = c.net.sign(
        ledger::Meta::Access(ledger::tx::Access {
            patient: c.p.id,
            reader: c.d.id,
            serving: 0,
            grant: Some(rg),
        }),
        &c.net.validator(V),
        Vec::new(),
    );
    assert_eq!(
        c.block(&[
            &with_ds_grant,
            &with_write,
            &no_grant,
            &own_elsewhere,
            &as_zero
        ]),
        vec![
            Some(why::NOT_A_READ_GRANT),
            Some(why::NOT_A_READ_GRANT),
            Some(why::OWN_READ_ONLY),
            Some(why::NOT_SERVED_HERE),
            Some(why::ACCESS_NOT_SERVING),
        ]
    );
    // After the patient revokes it, D's own home cannot log a read under it.
    let revoke = c.net.revoke(&c.p, rg, &c.p.custodial());
    let after = c.net.access(0, &c.p.id, &c.d.id, Some(rg));
    assert_eq!(
        c.block(&[&revoke, &after]),
        vec![None, Some(why::GRANT_WAS_REVOKED)]
    );
    assert!(
        c.store
            .reader()
            .unwrap()
            .accesses_of(&c.p.id)
            .unwrap()
            .is_empty()
    );
}

/// (6) Keys and links for someone else: V links P to itself, and adds or revokes a key of P's,
/// without P's key; with a device key of V's origin (which V's page script controls, if P
/// used V's page) it cannot revoke P's custodial key nor cancel a recovery.
#[test]
fn red_team_held_keys_and_links_for_someone_else() {
    let mut c = Chain::new();
    // Validator-signed link and key: the person's key is needed.
    let link = c.net.link(&c.p, V, None, &c.net.validator(V));
    assert_eq!(c.one(&link), Some(why::NEEDS_PERSON_KEY[2]));
    // Q's key (V's own patient) signing a link for P.
    let as_p = ledger::testkit::Signing {
        signer: ledger::Signer::Device {
            person: c.p.id,
            key: public(&c.q.custodial),
        },
        key: c.q.custodial.clone(),
    };
    let link2 = c.net.link(&c.p, V, None, &as_p);
    assert_eq!(c.one(&link2), Some(why::SIGNER_KEY_NOT_OF_PERSON));
    let link3 = c.net.link(&c.p, V, None, &c.q.custodial());
    assert_eq!(c.one(&link3), Some(why::NOT_ACTING_PERSON));
    // An ask's answer must be signed by P: V answers its own ask.
    let ask = c.net.ask_link(&c.p, V);
    assert_eq!(c.one(&ask), None);
    let answer = c.net.link(&c.p, V, Some(c.id(&ask)), &c.net.validator(V));
    assert_eq!(c.one(&answer), Some(why::NEEDS_PERSON_KEY[2]));
    // P approves a device key made at V's page (P used V's page once).
    let v_device: SigningKey = key_from("P's device at V's page");
    let new = c.net.new_key(&c.p.id, KeyKind::Device, V, &v_device);
    let ask = c.net.ask_key(&c.p, V, new.clone());
    assert_eq!(c.one(&ask), None);
    let add = c.net.add_key(&c.p, new, Some(c.id(&ask)), &c.p.custodial());
    assert_eq!(c.one(&add), None);
    // With it, V revokes P's custodial key (origin 0): refused by the origin rule.
    let rv = c
        .net
        .revoke_key(&c.p, public(&c.p.custodial), &c.p.device_with(&v_device));
    assert_eq!(c.one(&rv), Some(why::REVOKE_OTHER_ORIGIN));
    // The home starts a recovery; V's device key cannot cancel it (past its wait: a recovery
    // revokes young keys, docs/SECURITY.md "Confidential records" §4.2).
    c.time_ms += c.net.genesis.params().recovery_wait_ms;
    let fresh = key_from("P's recovered key");
    let recover = c
        .net
        .recover(&c.p, c.net.new_key(&c.p.id, KeyKind::Custodial, 0, &fresh));
    assert_eq!(c.one(&recover), None);
    let cancel = c
        .net
        .revoke_key(&c.p, public(&fresh), &c.p.device_with(&v_device));
    assert_eq!(c.one(&cancel), Some(why::REVOKE_OTHER_ORIGIN));
    // ... and cannot add a key of another origin to P without an ask.
    let other = key_from("another key");
    let add2 = c.net.add_key(
        &c.p,
        c.net.new_key(&c.p.id, KeyKind::Device, 0, &other),
        None,
        &c.p.device_with(&v_device),
    );
    assert_eq!(c.one(&add2), Some(why::DEVICE_KEY_NEEDS_ASK));
}

/// (7) A recovery that skips its waiting period: the recovered key signs nothing at
/// `T = effective - 1` (not even the addition of a device key), and signs at `T = effective`.
#[test]
fn red_team_held_recovery_waits_to_the_millisecond() {
    let mut c = Chain::new();
    let fresh = key_from("P's recovered key");
    let recover = c
        .net
        .recover(&c.p, c.net.new_key(&c.p.id, KeyKind::Custodial, 0, &fresh));
    assert_eq!(c.one(&recover), None);
    let effective = c.block_time_of(&c.id(&recover)) + c.net.genesis.params().recovery_wait_ms;
    let by_fresh = ledger::testkit::Signing {
        signer: ledger::Signer::Custodial {
            person: c.p.id,
            key: public(&fresh),
        },
        key: fresh.clone(),
    };
    let dev = key_from("a device");
    let early = c.net.add_key(
        &c.p,
        c.net.new_key(&c.p.id, KeyKind::Device, 0, &dev),
        None,
        &by_fresh,
    );
    let grant_early = c.net.grant(&c.p, &c.d.id, Scope::Write, None, &by_fresh);
    assert_eq!(
        c.block_at(effective - 1, &[&early, &grant_early]),
        vec![Some(why::SIGNER_KEY_WAITING), Some(why::SIGNER_KEY_WAITING)]
    );
    let grant_on_time = c.net.grant(&c.p, &c.d.id, Scope::Write, None, &by_fresh);
    assert_eq!(c.block_at(effective, &[&grant_on_time]), vec![None]);
}

/// (8) Replay across chains and kinds: a grant signed for another chain (another genesis) is
/// invalid here at the edge; a key's proof of possession is not a transaction signature.
#[test]
fn red_team_held_no_replay_across_chains_or_domains() {
    let c = Chain::new();
    let other = TestNet::with_seed(4, 7);
    let foreign = other.grant(&c.p, &c.d.id, Scope::Write, None, &c.p.custodial());
    // Carried to this chain with this chain's id: the signature covers the other genesis.
    let request = c.net.request(&foreign);
    let checked = ledger::crypto::check_entries(
        c.net.genesis.keys(),
        &c.net.genesis.hash(),
        std::iter::once(&request),
    );
    assert_eq!(
        checked[0].as_ref().err(),
        Some(&ledger::Invalid::BadSignature)
    );
    // A key proof (signed by the key over "medchain/key-pop/v2" || ...) as a transaction
    // signature by that key: the tags differ, so it never verifies.
    let new = c.net.new_key(&c.p.id, KeyKind::Device, 0, &c.p.device);
    let mut tx = c
        .net
        .grant(&c.p, &c.d.id, Scope::Write, None, &c.p.device());
    tx.signature = new.pop;
    let request = c.net.request(&tx);
    let checked = ledger::crypto::check_entries(
        c.net.genesis.keys(),
        &c.net.genesis.hash(),
        std::iter::once(&request),
    );
    assert_eq!(
        checked[0].as_ref().err(),
        Some(&ledger::Invalid::BadSignature)
    );
}

/// (9) The 8-key cap: `AddKey` refuses a ninth unrevoked key. Was a BREAK: `Recover` did not
/// check the cap at all, so a home could give a person any number of unrevoked keys (one per
/// waiting period). Now a recovery may exceed the cap by one (a person who lost every key
/// must still be recoverable, and then revokes the lost ones with the new key), never more.
#[test]
fn red_team_held_recover_exceeds_the_key_cap_by_one_at_most() {
    let mut c = Chain::new();
    // Seven device keys added at the home: eight unrevoked keys with the custodial one.
    for i in 0..7 {
        let k = key_from(&format!("device {i}"));
        let add = c.net.add_key(
            &c.p,
            c.net.new_key(&c.p.id, KeyKind::Device, 0, &k),
            None,
            &c.p.custodial(),
        );
        assert_eq!(c.one(&add), None, "key {i}");
    }
    let ninth = key_from("ninth");
    let add = c.net.add_key(
        &c.p,
        c.net.new_key(&c.p.id, KeyKind::Device, 0, &ninth),
        None,
        &c.p.custodial(),
    );
    assert_eq!(c.one(&add), Some(why::TOO_MANY_KEYS));
    let unrevoked = |c: &Chain| {
        c.store
            .reader()
            .unwrap()
            .state()
            .keys_of(&c.p.id)
            .unwrap()
            .iter()
            .filter(|k| k.revoked.is_none())
            .count()
    };
    // Past the keys' wait: a recovery revokes young keys (docs/SECURITY.md, "Confidential
    // records", §4.2), which would bring the count under the cap.
    c.time_ms += c.net.genesis.params().recovery_wait_ms;
    let recover = c
        .net
        .recover(&c.p, c.net.new_key(&c.p.id, KeyKind::Custodial, 0, &ninth));
    assert_eq!(c.one(&recover), None, "recoverable with every key lost");
    assert_eq!(unrevoked(&c), ledger::rules::MAX_KEYS + 1);
    let effective = c.block_time_of(&c.id(&recover)) + c.net.genesis.params().recovery_wait_ms;
    let tenth = key_from("tenth");
    let again = c
        .net
        .recover(&c.p, c.net.new_key(&c.p.id, KeyKind::Custodial, 0, &tenth));
    assert_eq!(
        c.block_at(effective, &[&again]),
        vec![Some(why::TOO_MANY_KEYS)],
        "a second recovery past the cap"
    );
    assert_eq!(unrevoked(&c), ledger::rules::MAX_KEYS + 1);
}

/// (10) "Nobody can register a key they do not hold, so a validator that sees a key go by
/// cannot squat it" (§1, proof of possession). Was a BREAK: the proof (`key-pop/v1`) bound
/// chain, person and key, but not the key's kind nor its origin, so P's home could copy the
/// proof out of another hospital's public `Ask` (a device key made at that hospital's page,
/// whose secret the home never held) into its own `Recover` as a custodial key, or its own
/// `AddKey`, registering it first: the other hospital's `AddKey` then failed `key already
/// registered`. Now the proof (`key-pop/v2`) binds the kind and the origin validator, and the
/// rules check the origin against the transaction: a copied proof verifies only as a device
/// key made at V's page, which only V may ask for.
#[test]
fn red_team_held_was_break_home_cannot_squat_a_key_seen_in_another_hospitals_ask() {
    let mut c = Chain::new();
    // P (home 0) makes a device key at V's page (validator 1); V asks for it, publicly.
    let at_v: SigningKey = key_from("P's key at V's page");
    let new = c.net.new_key(&c.p.id, KeyKind::Device, V, &at_v);
    let ask = c.net.ask_key(&c.p, V, new.clone());
    assert_eq!(c.one(&ask), None);
    let bad_proof = Some(ledger::Invalid::BadKeyProof.reason());
    // The home copies the public key and proof into a Recover, as a custodial key, of V's
    // origin or of its own: the proof no longer verifies.
    for origin in [V, 0] {
        let squat = NewKey {
            kind: KeyKind::Custodial,
            origin,
            ..new.clone()
        };
        let recover = c.net.recover(&c.p, squat);
        assert_eq!(
            c.one(&recover),
            bad_proof,
            "recover as custodial of {origin}"
        );
    }
    // As it is (a device key of V's origin): a recovery re-enrolls only a custodial key, and
    // the home adds only keys of its own origin.
    let recover = c.net.recover(&c.p, new.clone());
    assert_eq!(c.one(&recover), Some(why::RECOVER_CUSTODIAL_ONLY));
    let add = c.net.add_key(&c.p, new.clone(), None, &c.p.custodial());
    assert_eq!(c.one(&add), Some(why::KEY_ORIGIN));
    let as_home = NewKey {
        origin: 0,
        ..new.clone()
    };
    let add = c.net.add_key(&c.p, as_home, None, &c.p.custodial());
    assert_eq!(c.one(&add), bad_proof);
    // Another validator asks for the same key: it was not made at its page.
    let ask_2 = c.net.ask_key(&c.p, 2, new.clone());
    assert_eq!(c.one(&ask_2), Some(why::KEY_ORIGIN));
    // P approves V's ask: the key is P's device key, of V's origin.
    let add = c.net.add_key(&c.p, new, Some(c.id(&ask)), &c.p.custodial());
    assert_eq!(c.one(&add), None, "P's approval of the page's key");
    let reader = c.store.reader().unwrap();
    let row = reader.key(&public(&at_v)).unwrap().expect("registered");
    assert_eq!((row.kind, row.origin), (KeyKind::Device, V));
}

/// (11) `medchain verify` against its own operator: a store whose operator renumbers two rows
/// of `transactions` (the `tx` column, which every derived table refers to, is neither covered
/// by the Merkle root nor compared with the replay) shows a rejected record, the forged
/// diagnosis V's doctor wrote, as one of P's records; verify and open must refuse it.
#[test]
fn red_team_held_was_break_verify_misses_renumbered_transaction_rows() {
    let mut c = Chain::new();
    let (_, grant) = c.write_grant_p_to_d();
    let honest = c.net.add_record(&c.d, &c.p.id, grant, &c.d.custodial());
    assert_eq!(c.one(&honest), None);
    // A second record under the used grant, with another diagnosis: rejected.
    let mut h = c.net.header(
        ledger::Meta::AddRecord(ledger::tx::AddRecord {
            patient: c.p.id,
            doctor: c.d.id,
            department: "Cardiology".into(),
            grant,
        }),
        c.d.custodial().signer,
    );
    h.not_after_ms = u64::MAX;
    let forged_body = ledger::tx::RecordBody {
        diagnosis: "FORGED: terminal illness".into(),
        prescription: "none".into(),
        notes: String::new(),
    };
    let forged = c
        .net
        .seal_and_sign(h, forged_body.to_bytes(), &c.d.custodial);
    assert_eq!(c.one(&forged), Some(why::GRANT_USED));
    let (honest_id, forged_id) = (c.id(&honest), c.id(&forged));
    let patient = c.p.id;
    let path = c.path.clone();
    let genesis = c.net.genesis.clone();
    drop(c.store);
    // The operator swaps the two rows' numbers.
    {
        let conn = Connection::open(&path).unwrap();
        let row = |id: &TxId| -> i64 {
            conn.query_row(
                "SELECT tx FROM transactions WHERE id = ?1",
                [id.as_slice()],
                |r| r.get(0),
            )
            .unwrap()
        };
        let (a, b) = (row(&honest_id), row(&forged_id));
        conn.execute_batch(&format!(
            "BEGIN;
             UPDATE transactions SET tx = -1 WHERE tx = {a};
             UPDATE transactions SET tx = {a} WHERE tx = {b};
             UPDATE transactions SET tx = {b} WHERE tx = -1;
             COMMIT;"
        ))
        .unwrap();
    }
    let shown = ledger::Reader::open(&path)
        .unwrap()
        .records_of(&patient)
        .unwrap();
    assert_eq!(shown.len(), 1);
    let opened = c.net.open(&shown[0].header, &shown[0].body).unwrap();
    assert_eq!(
        ledger::tx::RecordBody::from_bytes(&opened)
            .unwrap()
            .diagnosis,
        "FORGED: terminal illness",
        "the tampered store shows the rejected record as P's"
    );
    let verified = verify_store(&path, &genesis, &mut |_| {});
    let opened = Store::open(&path, &genesis, OpenOptions::full());
    assert!(
        verified.is_err() && opened.is_err(),
        "verify passed a store that shows a rejected record as applied: {:?}",
        verified.map(|s| s.head_height)
    );
}

/// (12) A key nobody holds, which everybody can use. The all-zero public key is a point of
/// order 4; ZIP-215 verification (cofactored, small-order keys allowed) accepts the all-zero
/// signature under it for every message. So its "proof of possession" is 64 zero bytes, the
/// edge check passes, and once it is P's device key (added at P's home, or approved at some
/// page), any validator, here validator 2 that has nothing to do with P, signs a
/// device-attested grant for P to its own doctor, and a record under it, shown as "approved on
/// P's device". The pop, edge and key rules must refuse small-order (weak) keys.
#[test]
fn red_team_held_was_break_a_small_order_key_lets_anyone_sign() {
    let mut c = Chain::new();
    let weak = ledger::tx::NewKey {
        key: [0; 32],
        kind: KeyKind::Device,
        origin: 0,
        label: "weak".into(),
        pop: [0; 64],
    };
    let add = c.net.add_key(&c.p, weak, None, &c.p.custodial());
    let registered = c.block(&[&add])[0];
    let w_doctor = c.net.doctor(9, 2, "Oncology");
    assert_eq!(c.one(&c.net.enroll(&w_doctor)), None);
    // Validator 2 signs as P's device with a signature it computed without any secret.
    let header = c.net.header(
        ledger::Meta::Grant(ledger::tx::Grant {
            patient: c.p.id,
            doctor: w_doctor.id,
            scope: Scope::Write,
            attested: ledger::tx::Attested::Device,
            request: None,
        }),
        ledger::Signer::Device {
            person: c.p.id,
            key: [0; 32],
        },
    );
    let mut forged = c.net.seal_and_sign(header, Vec::new(), &key_from("unused"));
    forged.signature = [0; 64];
    let request = c.net.request(&forged);
    let edge = ledger::crypto::check_entries(
        c.net.genesis.keys(),
        &c.net.genesis.hash(),
        std::iter::once(&request),
    );
    let verdict = if edge[0].is_ok() {
        c.one(&forged)
    } else {
        Some("invalid at the edge")
    };
    assert!(
        registered.is_some() || verdict.is_some(),
        "a key nobody holds was registered ({registered:?}) and validator 2 forged P's device \
         grant with it ({verdict:?})"
    );
}
