//! Third red-team round on issue 10 (confidential records), on the code after W3, W4, the
//! bound key commitment and erasure end to end: attacks of a dishonest validator on the key
//! service (docs/SECURITY.md, "Confidential records", §5, §7, §16.13). `red_team_held_*` tests
//! pass: a defence that held; `#[ignore = "BREAK: .."]` tests fail on the code as it is (run
//! them with `--ignored`).
//!
//! The test plays the dishonest validator: it reads the keys its validator received from the
//! network's frame log (what that validator's operator holds), seals bodies by hand, and
//! answers for it by withholding its key frames and injecting its own (`MemoryNetwork`).
//!
//! Validators: 0 hospital, 1 clinic, 2 pharmacy, 3 insurance.

mod common;

use std::time::{Duration, Instant};

use common::enrollment;
use common::world::{
    CLINIC, HOSPITAL, HOUR_MS, INSURANCE, PHARMACY, WAIT, World, diagnosis, wait_until,
};
use ledger::seal::{DataKey, seal_with};
use ledger::tx::{AnswerErasure, Attested, Decision, Grant, PurposeBody, Scope};
use ledger::{Meta, Queries, Signer, TxId};
use node::load::{Person, header};
use node::{Frame, KeyFrame, KeyReply, NodeError, OpenState, Verdict, Wire, WireKey};
use pbft::ReplicaId;

/// The data key of `tx` that `holder` sent `asker` over the validators' channel, read from the
/// network's frame log: what the asker's operator holds once its key service stored it.
fn key_sent(w: &World, holder: ReplicaId, asker: ReplicaId, tx: &TxId) -> DataKey {
    let seen = w.seen.lock().unwrap();
    let asked = |id: u64| {
        seen.iter().find_map(|(from, to, frame)| match &**frame {
            Wire::Keys(KeyFrame::Request { request, txs })
                if (*from, *to, *request) == (asker, holder, id) =>
            {
                Some(txs.clone())
            }
            _ => None,
        })
    };
    seen.iter()
        .find_map(|(from, to, frame)| match &**frame {
            Wire::Keys(KeyFrame::Answer {
                request, replies, ..
            }) if (*from, *to) == (holder, asker) => {
                asked(*request)?
                    .iter()
                    .zip(replies)
                    .find_map(|(asked, reply)| match reply {
                        KeyReply::Key(WireKey(key)) if asked == tx => Some(key.clone()),
                        _ => None,
                    })
            }
            _ => None,
        })
        .expect("the holder sent the asker the key")
}

/// Was a BREAK (round 3, break 1: erasure of a broken copy erased the original). docs/SECURITY.md §16.13 stores no
/// key for the later of two transactions sealed under one key and marks it `broken`, keeping
/// its key's id "so that erasing a broken transaction still deletes the row of its key: an
/// accepted erasure of either transaction deletes every row of that key id"; §11 says a
/// dishonest validator cannot make a correct validator lose a key nor erase a record without
/// its patient's request. Together they let one dishonest validator V that ever held a record's
/// key (its author, the patient's home, or here a mere grantee, now or after its grant ended)
/// destroy that record at every correct holder, without its patient:
/// 1. the insurer V is a grantee of p, a hospital patient, and receives the key `k` of `a`,
///    a record a hospital doctor wrote (the hospital is its only other holder);
/// 2. V enrolls a patient `q` of its own and signs, with `q`'s custodial key, a write grant to
///    a hospital doctor, its purpose sealed by hand under `k` (so the hospital, as the doctor's
///    home, is a party and pulls the purpose's key from V, its sealer);
/// 3. V answers the hospital's pull with `k`: it matches the grant's commitment, the hospital
///    finds `k` held for the earlier `a` and marks the grant broken (the defence of §16.13);
/// 4. V requests, as `q`'s home, the erasure of its grant and answers `Erase` as its sealer;
/// 5. the hospital's key service erases the grant: `key_id_of` reads the broken mark's id and
///    `delete_key` deletes every row of that id, i.e. `a`'s key. `a` shows `waiting` at its
///    home for good (no `wanted` row is made again, and nobody correct holds it any more), its
///    patient asked for nothing, and the chain shows only the erasure of V's grant.
///
/// Fixed: an erasure deletes the erased transaction's own key row only; a broken transaction
/// has none, so its erasure deletes nothing (`node::keys::feed` `erase`).
#[test]
fn red_team_held_erasing_a_broken_copy_keeps_the_honest_record_it_copied() {
    let w = World::new();
    let patient = Person::patient(HOSPITAL);
    let author = Person::doctor(HOSPITAL, "Oncology", "Dr Home");
    let reader = Person::doctor(INSURANCE, "Claims", "Dr Insurer");
    let puppet = Person::patient(INSURANCE);
    w.enroll(&[&patient, &author, &reader, &puppet]);
    let record = w.record(&author, &patient, "Glioblastoma 7c1e");
    w.wait_state(HOSPITAL, &record, OpenState::Open);

    // 1. The insurer, a grantee, receives the record's key from the home.
    w.read_grant(&patient, &reader, HOUR_MS);
    w.wait_state(INSURANCE, &record, OpenState::Open);
    let key = key_sent(&w, HOSPITAL, INSURANCE, &record);

    // 2. Its own patient's write grant to the hospital's doctor, sealed under that key.
    w.network().filter(|from, to, frame| {
        !(from == INSURANCE && to == HOSPITAL && matches!(**frame, Wire::Keys(_)))
    });
    let genesis_hash = w.genesis_hash();
    let meta = Meta::Grant(Grant {
        patient: puppet.id,
        doctor: author.id,
        scope: Scope::Write,
        request: None,
        attested: Attested::InPerson,
    });
    let mut grant_header = header(meta, puppet.signer());
    let purpose = PurposeBody {
        purpose: "a visit".into(),
    };
    let body = seal_with(
        &genesis_hash,
        &mut grant_header,
        &purpose.to_bytes(),
        &key,
        rand::random(),
    )
    .unwrap();
    let mark = w.frames_seen();
    let copy = w.applied(
        INSURANCE,
        puppet.sign_header(&genesis_hash, grant_header, body),
    );

    // 3. The home pulls the grant's purpose key from its sealer; the insurer answers `k`.
    let (request, txs) = w.request_for(HOSPITAL, INSURANCE, &copy, mark);
    let replies = txs
        .iter()
        .map(|tx| match *tx == copy {
            true => KeyReply::Key(WireKey(key.clone())),
            false => KeyReply::NotHeld,
        })
        .collect();
    let answer = Frame::new(Wire::Keys(KeyFrame::Answer {
        request,
        height: u64::MAX,
        replies,
    }));
    assert!(w.network().inject(INSURANCE, HOSPITAL, answer));
    wait_until("the home to refuse the reused key", || {
        w.node(HOSPITAL).key_status().counters.keys_refused_reused == 1
    });
    w.network().clear_filter();
    assert_eq!(
        w.open(HOSPITAL, &copy).state,
        OpenState::Broken { sealer: INSURANCE }
    );
    assert_eq!(
        diagnosis(&w.open(HOSPITAL, &record)),
        "Glioblastoma 7c1e",
        "the defence of §16.13 held so far"
    );

    // 4. Its puppet asks for the copy's erasure; it answers `Erase` as the copy's sealer.
    w.erase(&puppet, copy, INSURANCE);
    w.wait_state(HOSPITAL, &copy, OpenState::Erased);

    // 5. The record's patient asked for nothing: it must still open at its home.
    let state = w.open(HOSPITAL, &record).state;
    assert!(
        w.key_rows(HOSPITAL).contains(&record),
        "the home deleted the key of {} (now {state:?}), erased by nobody",
        ledger::short_hex(&record)
    );
    assert_eq!(state, OpenState::Open);
}

/// WEAKNESS 2 (W3's window is the claims' freshness, 5 s, not "the last status interval").
/// §16.25 says a validator opens a purpose only once it is not behind the chain, and that what
/// remains is "a node that has not yet heard of an erasure committed in the last status
/// interval (1 s, plus a frame's delay) may still show that purpose once". A validator cut off
/// from every peer (a partition, or a network attacker dropping its frames) keeps its peers'
/// last claims for `CLAIM_FRESH` (5 s): for that long it takes itself for caught up at the head
/// it had. The patient's home is cut off; the request's sealer and the others commit the
/// purpose's erasure; 1.5 s later the home still passes `caught_up` and opens the erased
/// purpose. What leaks is a purpose to a party that was entitled to it until the erasure, for
/// under 5 s: low. Fix: count claims fresh for about two status intervals (2 s), or say 5 s.
#[test]
#[ignore = "WEAKNESS: a cut-off validator opens an erased purpose for up to 5 s, not 1 s"]
fn weakness_2_a_cut_off_home_opens_an_erased_purpose_seconds_after_the_erasure() {
    let w = World::new();
    let patient = Person::patient(PHARMACY);
    let doctor = Person::doctor(CLINIC, "Oncology", "Dr Asker");
    w.enroll(&[&patient, &doctor]);
    let genesis_hash = w.genesis_hash();
    let request = common::sealed_write_request(
        &w.rt,
        &w.node(CLINIC),
        &doctor,
        &patient,
        "Second opinion on the lymphoma",
    );
    let request = w.applied(CLINIC, request);
    w.wait_state(PHARMACY, &request, OpenState::Open);
    let home = w.node(PHARMACY);
    wait_until("the home to take itself for caught up", || {
        w.rt.block_on(home.caught_up(Duration::ZERO)).is_ok()
    });

    // The home is cut off; the others commit the erasure of the request's purpose.
    w.network()
        .filter(|from, to, _| from != PHARMACY && to != PHARMACY);
    let cut_at = Instant::now();
    let clinic = w.node(CLINIC);
    let submit = |tx| match w.rt.block_on(clinic.submit_applied(tx, WAIT)).unwrap() {
        Verdict::Applied { .. } => {}
        verdict => panic!("not applied: {verdict:?}"),
    };
    let erasure = patient.request_erasure(&genesis_hash, request);
    let erasure_id = erasure.id(&genesis_hash);
    submit(erasure);
    let answer = Meta::AnswerErasure(AnswerErasure {
        request: erasure_id,
        decision: Decision::Erase,
    });
    submit(clinic.sign_as_validator(
        header(answer, Signer::Validator { index: CLINIC }),
        Vec::new(),
    ));
    let committed_at = Instant::now();
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(
        cut_at.elapsed() < Duration::from_secs(4),
        "too slow to show the window: the claims went stale"
    );
    assert_eq!(
        w.try_open(CLINIC, &request).map(|o| o.state),
        Some(OpenState::Erased)
    );

    // 1.5 s after the erasure committed, the home is not behind by its own account.
    let shown = match w.rt.block_on(home.caught_up(Duration::ZERO)) {
        Err(NodeError::Behind) => None,
        Err(error) => panic!("{error}"),
        Ok(height) => {
            let committed = home
                .read(|chain| chain.transaction(&request))
                .unwrap()
                .unwrap();
            let opened =
                w.rt.block_on(home.open(height, &[(committed.tx.header, committed.tx.body)]))
                    .unwrap()
                    .pop()
                    .unwrap();
            opened
                .plain
                .map(|plain| PurposeBody::from_bytes(&plain).unwrap().purpose)
        }
    };
    w.network().clear_filter();
    assert_eq!(
        shown,
        None,
        "{:?} after the erasure committed, the cut-off home still opens the purpose",
        committed_at.elapsed()
    );
}

/// (c) A crash between a seal's durability and its signature: the home sealed a record's body
/// (its key durable in `keys.db`, §5.5) and stopped before the transaction was signed. The key
/// of a transaction that will never exist survives the restart as a pending row, and goes
/// once a block's time passes the header's `not_after_ms` (§5.4's last row): no key for
/// nothing stays, and the rows of committed records are untouched.
#[test]
fn red_team_held_a_seal_interrupted_before_its_signature_leaves_no_key_behind() {
    let mut w = World::new();
    let patient = Person::patient(HOSPITAL);
    let author = Person::doctor(HOSPITAL, "Oncology", "Dr Home");
    w.enroll(&[&patient, &author]);
    let kept = w.record(&author, &patient, "Retinoblastoma");
    let grant = w.write_grant(&patient, &author);
    let meta = Meta::AddRecord(ledger::tx::AddRecord {
        patient: patient.id,
        doctor: author.id,
        department: "Oncology".into(),
        grant,
    });
    let mut interrupted = header(meta, author.signer());
    interrupted.not_after_ms = w.clock.now_ms() + 1_000;
    let body = common::note("Never signed").to_bytes();
    let (sealed, _) =
        w.rt.block_on(w.node(HOSPITAL).seal(interrupted, &body))
            .unwrap();
    let orphan = sealed.id(&w.genesis_hash());
    assert!(
        w.key_rows(HOSPITAL).contains(&orphan),
        "durable before signing"
    );

    // The crash, and a restart: the pending row is still there, waiting for its deadline.
    w.cluster.stop(HOSPITAL);
    w.cluster.restart(HOSPITAL).unwrap();
    assert!(w.key_rows(HOSPITAL).contains(&orphan));
    w.clock.advance_ms(5_000);
    let hospital = w.node(HOSPITAL);
    wait_until("the orphan key to go", || {
        w.rt.block_on(hospital.submit_applied(enrollment(&hospital), WAIT))
            .unwrap();
        !w.key_rows(HOSPITAL).contains(&orphan)
    });
    assert!(w.key_rows(HOSPITAL).contains(&kept));
    assert_eq!(diagnosis(&w.open(HOSPITAL, &kept)), "Retinoblastoma");
}
