//! The key service on the embedded cluster (docs/SECURITY.md, "Confidential records", §3.2,
//! §5, §6.1): real replicas, SQLite files, signatures and seals; each validator's `keys.db`
//! sealed under its own random key-store key; a manual clock where time matters. The test
//! plays a dishonest validator by withholding its frames and injecting its own
//! (`MemoryNetwork::filter`, `inject`).
//!
//! Validators: 0 hospital, 1 clinic, 2 pharmacy, 3 insurance.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

mod common;

use common::world::{
    CLINIC, HOSPITAL, HOUR_MS, INSURANCE, PHARMACY, WAIT, World, diagnosis, record_meta, wait_until,
};
use common::{copy_dir, enrollment, fast_timing, note};
use ledger::seal::{DataKey, seal_with};
use ledger::tx::{AddRecord, SIGNATURE_LIFE_MS};
use ledger::{Meta, SignedTx, TxId};
use node::load::{Person, header};
use node::transport::MemoryNetwork;
use node::{Frame, KeyFrame, KeyReply, OpenState, Timing, Verdict, Wire, WireKey};
use pbft::ReplicaId;

fn request(request: u64, txs: Vec<TxId>) -> Frame {
    Frame::new(Wire::Keys(KeyFrame::Request { request, txs }))
}

/// The test plays validator `author`'s key service toward `victim`: the author's own key
/// frames to the victim are withheld, and the victim's requests to it are handed to the test.
struct Impersonation {
    network: MemoryNetwork,
    author: ReplicaId,
    victim: ReplicaId,
    requests: mpsc::Receiver<(u64, Vec<TxId>)>,
}

impl Impersonation {
    fn new(network: &MemoryNetwork, author: ReplicaId, victim: ReplicaId) -> Self {
        network.filter(move |from, to, frame| {
            !(from == author && to == victim && matches!(**frame, Wire::Keys(_)))
        });
        let (sender, requests) = mpsc::channel();
        let sender = Mutex::new(sender);
        network.observe(move |from, to, frame| {
            if from == victim
                && to == author
                && let Wire::Keys(KeyFrame::Request { request, txs }) = &**frame
            {
                let _ = sender.lock().unwrap().send((*request, txs.clone()));
            }
        });
        Impersonation {
            network: network.clone(),
            author,
            victim,
            requests,
        }
    }

    /// Answers the victim's next request that asks for `tx`, each asked id with `reply`.
    fn answer(&self, tx: &TxId, reply: impl Fn(&TxId) -> KeyReply) {
        let deadline = Instant::now() + WAIT;
        loop {
            let (request, txs) = self
                .requests
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the victim asks the author");
            if txs.contains(tx) {
                let replies = txs.iter().map(reply).collect();
                let frame = Frame::new(Wire::Keys(KeyFrame::Answer {
                    request,
                    height: u64::MAX,
                    replies,
                }));
                assert!(self.network.inject(self.author, self.victim, frame));
                return;
            }
        }
    }

    fn end(self) {
        self.network.clear_filter();
    }
}

#[test]
fn the_author_delivers_a_record_key_to_the_home() {
    let w = World::new();
    let (patient, author, _) = w.cast(HOSPITAL, CLINIC, INSURANCE);
    let record = w.record(&author, &patient, "Lymphoma, stage II");

    let opened = w.wait_state(HOSPITAL, &record, OpenState::Open);
    assert_eq!(diagnosis(&opened), "Lymphoma, stage II");
    assert_eq!(w.open(CLINIC, &record).state, OpenState::Open, "the author");
    for other in [PHARMACY, INSURANCE] {
        assert_eq!(
            w.open(other, &record).state,
            OpenState::Elsewhere { home: HOSPITAL }
        );
        assert!(
            w.key_rows(other).is_empty(),
            "validator {other} holds a key"
        );
        assert_eq!(w.node(other).key_status().held, 0);
    }
    assert!(w.key_rows(HOSPITAL).contains(&record));
    assert!(w.node(CLINIC).key_status().counters.keys_served >= 1);
    assert!(w.node(HOSPITAL).key_status().counters.keys_received >= 1);
    // Nothing but ciphertext went into the blocks.
    for file in ["chain.db", "chain.db-wal"] {
        let bytes = std::fs::read(w.dir.path().join("insurance").join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(8).any(|window| window == b"Lymphoma"),
            "{file}"
        );
    }
}

#[test]
fn a_read_grant_brings_the_history_to_the_grantee() {
    let w = World::new();
    let patient = Person::patient(HOSPITAL);
    let home_doctor = Person::doctor(HOSPITAL, "Cardiology", "Dr Home");
    let other_author = Person::doctor(PHARMACY, "Oncology", "Dr Elsewhere");
    let reader = Person::doctor(CLINIC, "Neurology", "Dr Reader");
    w.enroll(&[&patient, &home_doctor, &other_author, &reader]);
    let written_home = w.record(&home_doctor, &patient, "Angina");
    let written_elsewhere = w.record(&other_author, &patient, "Lymphoma");
    for record in [&written_home, &written_elsewhere] {
        assert_eq!(
            w.open(CLINIC, record).state,
            OpenState::Elsewhere { home: HOSPITAL },
            "before the grant"
        );
    }

    let grant = w.read_grant(&patient, &reader, HOUR_MS);
    assert_eq!(
        diagnosis(&w.wait_state(CLINIC, &written_home, OpenState::Open)),
        "Angina"
    );
    assert_eq!(
        diagnosis(&w.wait_state(CLINIC, &written_elsewhere, OpenState::Open)),
        "Lymphoma"
    );
    // The grant's purpose too: the reader's hospital is a party to it.
    w.wait_state(CLINIC, &grant, OpenState::Open);
    // The home is the one distributor: the author gave the grantee nothing.
    assert_eq!(w.keys_sent(PHARMACY, CLINIC), 0);
    assert!(w.keys_sent(HOSPITAL, CLINIC) >= 2);
    assert_eq!(
        w.open(INSURANCE, &written_home).state,
        OpenState::Elsewhere { home: HOSPITAL }
    );
    assert!(w.key_rows(INSURANCE).is_empty());
}

#[test]
fn a_record_added_while_a_grant_lives_reaches_the_grantee() {
    let w = World::new();
    let (patient, author, reader) = w.cast(HOSPITAL, PHARMACY, CLINIC);
    w.read_grant(&patient, &reader, HOUR_MS);
    let record = w.record(&author, &patient, "Glioma");
    assert_eq!(
        diagnosis(&w.wait_state(CLINIC, &record, OpenState::Open)),
        "Glioma"
    );
    assert!(w.key_rows(CLINIC).contains(&record));
}

#[test]
fn revocation_and_expiry_stop_deliveries_and_drop_received_keys() {
    let w = World::new();
    let (patient, author, reader) = w.cast(HOSPITAL, HOSPITAL, CLINIC);

    // Revocation: the grantee drops what it received.
    let grant = w.read_grant(&patient, &reader, HOUR_MS);
    let first = w.record(&author, &patient, "Melanoma");
    w.wait_state(CLINIC, &first, OpenState::Open);
    w.revoke(&patient, grant);
    w.wait_state(CLINIC, &first, OpenState::Elsewhere { home: HOSPITAL });
    assert!(!w.key_rows(CLINIC).contains(&first));
    // Its hospital stays a party to the grant itself.
    w.wait_state(CLINIC, &grant, OpenState::Open);

    // Expiry by the clock, with no block after it: the same.
    w.read_grant(&patient, &reader, 60_000);
    let second = w.record(&author, &patient, "Sarcoma");
    w.wait_state(CLINIC, &first, OpenState::Open);
    w.wait_state(CLINIC, &second, OpenState::Open);
    w.clock.advance_ms(61_000);
    w.wait_state(CLINIC, &second, OpenState::Elsewhere { home: HOSPITAL });
    w.wait_state(CLINIC, &first, OpenState::Elsewhere { home: HOSPITAL });
    let rows = w.key_rows(CLINIC);
    assert!(
        !rows.contains(&first) && !rows.contains(&second),
        "{rows:?}"
    );
    // The home keeps every key of its patient.
    for record in [&first, &second] {
        assert_eq!(w.open(HOSPITAL, record).state, OpenState::Open);
    }
}

#[test]
fn a_record_added_after_the_grant_ends_never_reaches_the_grantee() {
    let w = World::new();
    let (patient, author, reader) = w.cast(HOSPITAL, PHARMACY, CLINIC);

    w.read_grant(&patient, &reader, 60_000);
    w.clock.advance_ms(61_000);
    let after_expiry = w.record(&author, &patient, "Leukaemia");
    let grant = w.read_grant(&patient, &reader, HOUR_MS);
    w.revoke(&patient, grant);
    let after_revocation = w.record(&author, &patient, "Myeloma");
    for record in [&after_expiry, &after_revocation] {
        w.wait_state(HOSPITAL, record, OpenState::Open);
    }
    // Time for a grantee's pull, had there been one.
    std::thread::sleep(Duration::from_millis(1_000));
    for record in [&after_expiry, &after_revocation] {
        assert_eq!(
            w.open(CLINIC, record).state,
            OpenState::Elsewhere { home: HOSPITAL }
        );
    }
    let rows = w.key_rows(CLINIC);
    assert!(!rows.contains(&after_expiry) && !rows.contains(&after_revocation));
    assert_eq!(w.keys_sent(PHARMACY, CLINIC), 0);
}

/// Red team finding 4: a home doctor's read grant at the patient's home, begun and ended while
/// the author withholds a record's key, must not turn the home's own wait into a grantee's
/// (asked of itself, dropped at the grant's end): once the author answers, the home opens it.
#[test]
fn a_read_grant_at_the_home_does_not_cost_the_home_a_waiting_key() {
    let w = World::new();
    let patient = Person::patient(HOSPITAL);
    let author = Person::doctor(CLINIC, "Oncology", "Dr Author");
    let home_doctor = Person::doctor(HOSPITAL, "Oncology", "Dr Home");
    w.enroll(&[&patient, &author, &home_doctor]);
    let withheld = Impersonation::new(w.network(), CLINIC, HOSPITAL);
    let record = w.record(&author, &patient, "Hodgkin lymphoma");
    assert_eq!(
        w.open(HOSPITAL, &record).state,
        OpenState::Waiting {
            from: CLINIC,
            since_ms: w.clock.now_ms()
        }
    );
    grant_ends_while_waiting(
        &w,
        &patient,
        &home_doctor,
        (HOSPITAL, CLINIC),
        &record,
        withheld,
    );
    assert_eq!(
        diagnosis(&w.wait_state(HOSPITAL, &record, OpenState::Open)),
        "Hodgkin lymphoma"
    );
}

/// While validator `at` waits for `record`'s key from `from` (withheld), a read grant of
/// `patient` to `doctor` begins and ends: the wait stays, and the withholding ends.
fn grant_ends_while_waiting(
    w: &World,
    patient: &Person,
    doctor: &Person,
    (at, from): (ReplicaId, ReplicaId),
    record: &TxId,
    withheld: Impersonation,
) {
    let grant = w.read_grant(patient, doctor, HOUR_MS);
    w.revoke(patient, grant);
    let state = w.open(at, record).state;
    assert!(
        matches!(state, OpenState::Waiting { from: source, .. } if source == from),
        "{state:?}"
    );
    withheld.end();
}

/// A record by a hospital doctor of a pharmacy patient, held by the patient's home; the
/// patient approves a clinic doctor's read grant on their device at their home, which then
/// goes down before the grant is applied: the patient, the record and the grant's height.
fn grant_while_the_home_is_down(w: &mut World) -> (Person, TxId, u64) {
    let (patient, author, reader) = w.cast(PHARMACY, HOSPITAL, CLINIC);
    let record = w.record(&author, &patient, "Mesothelioma");
    w.wait_state(PHARMACY, &record, OpenState::Open);
    let grant = w.sealed_read_grant(&patient, &reader, HOUR_MS);
    w.cluster.stop(PHARMACY);
    let granted_at = w.applied_at(CLINIC, grant);
    (patient, record, granted_at)
}

#[test]
fn while_the_home_is_down_the_grant_waits() {
    let mut w = World::new();
    let (patient, record, _) = grant_while_the_home_is_down(&mut w);
    let waiting = w.open(CLINIC, &record).state;
    assert!(
        matches!(waiting, OpenState::Waiting { from: PHARMACY, since_ms } if since_ms > 0),
        "{waiting:?}"
    );
    std::thread::sleep(Duration::from_millis(1_000));
    assert!(matches!(
        w.open(CLINIC, &record).state,
        OpenState::Waiting { from: PHARMACY, .. }
    ));
    assert!(w.node(CLINIC).key_status().waiting >= 1);
    // The grant's key status (§13): one record waits for the home, none held.
    let keys =
        w.rt.block_on(w.node(CLINIC).patient_keys(&patient.id))
            .unwrap();
    assert_eq!((keys.held, keys.waiting, keys.from), (0, 1, Some(PHARMACY)));
    assert!(keys.since_ms.is_some_and(|since| since > 0));
    // The author holds it, but gives a grantee nothing behind the home's back.
    assert!(!w.key_rows(CLINIC).contains(&record));

    w.cluster.restart(PHARMACY).unwrap();
    assert_eq!(
        diagnosis(&w.wait_state(CLINIC, &record, OpenState::Open)),
        "Mesothelioma"
    );
    let keys =
        w.rt.block_on(w.node(CLINIC).patient_keys(&patient.id))
            .unwrap();
    assert_eq!((keys.held, keys.waiting, keys.since_ms), (1, 0, None));
}

/// §5.3, "Keys held nowhere": a validator that wants a key it does not hold answers
/// `Fetching`, not `NotHeld`; once it holds the key it offers it to the askers it told so,
/// and gives it to a party.
#[test]
fn a_validator_still_fetching_a_key_says_so_and_offers_it_once_held() {
    let mut w = World::new();
    let (_, record, _) = grant_while_the_home_is_down(&mut w);
    assert!(matches!(
        w.open(CLINIC, &record).state,
        OpenState::Waiting { from: PHARMACY, .. }
    ));
    let unknown = ledger::sha256(b"wanted by nobody");
    // The author, a party, asks the grantee, which waits for the key from the home.
    let replies = w.ask(HOSPITAL, CLINIC, 921, vec![record, unknown]);
    assert_eq!(replies, vec![KeyReply::Fetching, KeyReply::NotHeld]);
    wait_until("the answer in the counters", || {
        let counters = w.node(CLINIC).key_status().counters;
        counters.keys_requests_fetching >= 1 && counters.keys_requests_not_held >= 1
    });
    w.cluster.restart(PHARMACY).unwrap();
    w.wait_state(CLINIC, &record, OpenState::Open);
    wait_until("the clinic's offer of the key to the hospital", || {
        w.offers(CLINIC, HOSPITAL).contains(&record)
    });
    assert!(
        !w.offers(CLINIC, HOSPITAL).contains(&unknown),
        "only what it said it fetched"
    );
    assert!(matches!(
        w.ask(HOSPITAL, CLINIC, 922, vec![record])[..],
        [KeyReply::Key(_)]
    ));
    // Restarted, it has forgotten whom it told `Fetching`: it says so (an empty offer) to
    // every peer at its start, and they drop the waits their refusals grew.
    let greeted = w.greetings(CLINIC, HOSPITAL);
    w.cluster.stop(CLINIC);
    w.cluster.restart(CLINIC).unwrap();
    // `Busy` until it knows it is caught up (§5.6).
    let mut id = 923;
    wait_until("the restarted clinic's answer with the key", || {
        id += 1;
        matches!(
            w.ask(HOSPITAL, CLINIC, id, vec![record])[..],
            [KeyReply::Key(_)]
        )
    });
    assert_eq!(w.greetings(CLINIC, HOSPITAL), greeted + 1);
}

/// Red team s12, BREAK, fixed: the greeting (an empty offer: "I restarted, I forgot whom I
/// told `Fetching`") went out only before the restarted service's first frame to a peer, not
/// at its start. A validator that told a peer `Fetching` and restarted sent that peer nothing
/// while it had nothing to ask it (a grantee asks the patient's home only): the peer's grown
/// wait (up to 5 minutes) was not dropped (worst 225 s after the key could be given:
/// `keys::wanted::red_team_s12::a_restarted_home_greets_its_grantee_only_when_asked_and_it_waits_5_minutes`).
/// Now every peer is greeted when the key service starts.
#[test]
fn a_restarted_validator_greets_a_peer_it_has_nothing_to_send() {
    let mut w = World::new();
    let (_, record, _) = grant_while_the_home_is_down(&mut w);
    // The grantee waits for the key from the home (down); a party asks it: `Fetching`.
    assert_eq!(
        w.ask(HOSPITAL, CLINIC, 931, vec![record]),
        vec![KeyReply::Fetching]
    );
    let greeted = w.greetings(CLINIC, HOSPITAL);
    w.cluster.stop(CLINIC);
    w.cluster.restart(CLINIC).unwrap();
    wait_until("the restarted grantee to want the key again", || {
        w.node(CLINIC).key_status().waiting >= 1
    });
    // Up, asking the home (down) for the key: its greeting of the asker it forgot.
    wait_until(
        "the restarted grantee's greeting of the party it told Fetching",
        || w.greetings(CLINIC, HOSPITAL) > greeted,
    );
}

/// §12.1: wanted keys are kept in memory only. A grantee restarted while it waits (the home
/// is down) wants them again at start, from the blocks since the lowest height it wanted,
/// although its processed height is past the grant, and gets them once the home is back.

#[test]
fn a_grantee_restarted_while_it_waits_wants_the_keys_again() {
    let mut w = World::new();
    let (patient, record, granted_at) = grant_while_the_home_is_down(&mut w);
    assert!(matches!(
        w.open(CLINIC, &record).state,
        OpenState::Waiting { from: PHARMACY, .. }
    ));
    // The processed height is written past the grant (by the timer) before the restart.
    wait_until("the grantee's keys.db to record the grant's height", || {
        node::KeyStoreFacts::read(&w.keys_db(CLINIC))
            .is_ok_and(|facts| facts.processed_height >= granted_at)
    });
    w.cluster.stop(CLINIC);
    // Written with the processed height: the start reads the blocks of the keys wanted (the
    // record's and the grant's), not every block from the lowest (§12.1).
    let (heights, with_processed) = w.wanted_heights(CLINIC);
    assert!(with_processed, "{heights:?}");
    assert!(
        (1..=2).contains(&heights.len()) && heights.iter().all(|h| *h <= granted_at),
        "{heights:?}"
    );
    w.cluster.restart(CLINIC).unwrap();
    assert!(w.node(CLINIC).key_status().resumed_from >= granted_at);
    let keys =
        w.rt.block_on(w.node(CLINIC).patient_keys(&patient.id))
            .unwrap();
    assert_eq!((keys.held, keys.waiting, keys.from), (0, 1, Some(PHARMACY)));
    // A store whose heights were not written with its processed height (an earlier build)
    // reads every block from the lowest wanted height instead: the same key wanted.
    w.cluster.stop(CLINIC);
    rusqlite::Connection::open(w.keys_db(CLINIC))
        .unwrap()
        .execute(
            "UPDATE meta SET value = zeroblob(8) WHERE key = 'wanted_heights_at'",
            [],
        )
        .unwrap();
    assert!(!w.wanted_heights(CLINIC).1);
    w.cluster.restart(CLINIC).unwrap();
    let keys =
        w.rt.block_on(w.node(CLINIC).patient_keys(&patient.id))
            .unwrap();
    assert_eq!((keys.held, keys.waiting, keys.from), (0, 1, Some(PHARMACY)));
    // And writes them at once, for the next start.
    assert_eq!(w.wanted_heights(CLINIC), (heights, true));
    assert!(matches!(
        w.open(CLINIC, &record).state,
        OpenState::Waiting { from: PHARMACY, .. }
    ));

    w.cluster.restart(PHARMACY).unwrap();
    assert_eq!(
        diagnosis(&w.wait_state(CLINIC, &record, OpenState::Open)),
        "Mesothelioma"
    );
}

#[test]
fn a_peer_that_is_not_entitled_gets_no_key() {
    let w = World::new();
    let (patient, author, reader) = w.cast(HOSPITAL, CLINIC, PHARMACY);
    let record = w.record(&author, &patient, "Carcinoma");
    w.read_grant(&patient, &reader, HOUR_MS);
    w.wait_state(PHARMACY, &record, OpenState::Open);

    let unknown = ledger::sha256(b"not on chain");
    let asks = [
        // The insurer, entitled to nothing, asks the home and the author.
        (INSURANCE, HOSPITAL, 901, record, KeyReply::NotEntitled),
        (INSURANCE, CLINIC, 902, record, KeyReply::NotEntitled),
        // A grantee asks the author: only the home hands records to grantees.
        (PHARMACY, CLINIC, 903, record, KeyReply::NotEntitled),
        // No key held for it: answered from memory, without looking at the chain (W4).
        (INSURANCE, HOSPITAL, 904, unknown, KeyReply::NotHeld),
    ];
    for (asker, holder, id, tx, expected) in asks {
        let replies = w.ask(asker, holder, id, vec![tx]);
        assert_eq!(replies, vec![expected], "{asker} to {holder}, request {id}");
    }
    assert!(w.key_rows(INSURANCE).is_empty());
    // Counters are published after the turn that answered (or dropped an answer).
    wait_until("the refusals in the counters", || {
        let counters = |v| w.node(v).key_status().counters;
        counters(HOSPITAL).keys_requests_not_entitled >= 1
            && counters(CLINIC).keys_requests_not_entitled >= 2
            // The answers reached validators that had asked nothing: dropped unread.
            && counters(INSURANCE).keys_answers_dropped >= 2
    });
}

/// §5.3 (red team of the code, W4): a holder answers ids it holds no key for, and held ones
/// the asker is not entitled to, from its in-memory index, without a chain read per id; only
/// the key of an id it holds for an asker the index finds entitled is read (§12.1).
#[test]
fn unknown_and_unentitled_ids_are_answered_from_memory() {
    let w = World::new();
    let (patient, author, _) = w.cast(HOSPITAL, CLINIC, INSURANCE);
    let record = w.record(&author, &patient, "Mesothelioma");
    w.wait_state(HOSPITAL, &record, OpenState::Open);
    let hospital = w.node(HOSPITAL);
    let before = hospital.key_status().counters;

    // The insurer asks the home for the record and 1,023 ids of nothing.
    let mut txs = vec![record];
    txs.extend((0..1023u32).map(|i| ledger::sha256(&i.to_le_bytes())));
    let replies = w.ask(INSURANCE, HOSPITAL, 911, txs);
    assert_eq!(replies.len(), 1024);
    assert_eq!(replies[0], KeyReply::NotEntitled);
    assert!(replies[1..].iter().all(|reply| *reply == KeyReply::NotHeld));
    // The author, a party, asks the home for it.
    assert!(matches!(
        w.ask(CLINIC, HOSPITAL, 912, vec![record])[..],
        [KeyReply::Key(_)]
    ));
    // The counters are published after the turn that sent the answer.
    wait_until("the served key in the counters", || {
        hospital.key_status().counters.keys_served > before.keys_served
    });
    let after = hospital.key_status().counters;
    // Only ids whose key left were looked up (the author's, and any key a peer pulled
    // meanwhile): none of the insurer's.
    let served = after.keys_served - before.keys_served;
    assert!(served >= 1);
    assert_eq!(
        after.keys_requests_checked - before.keys_requests_checked,
        served,
        "only the ids whose key was sent were looked up"
    );
    assert_eq!(
        after.keys_requests_not_entitled - before.keys_requests_not_entitled,
        1
    );
}

#[test]
fn a_wrong_key_is_refused_and_counted() {
    let w = World::new();
    let (patient, author, _) = w.cast(HOSPITAL, CLINIC, INSURANCE);
    let dishonest = Impersonation::new(w.network(), CLINIC, HOSPITAL);
    let record = w.record(&author, &patient, "Neuroblastoma");
    dishonest.answer(&record, |_| KeyReply::Key(WireKey(DataKey::generate())));
    wait_until("the wrong key to be counted", || {
        w.node(HOSPITAL).key_status().counters.keys_refused_wrong >= 1
    });
    assert!(matches!(
        w.open(HOSPITAL, &record).state,
        OpenState::Waiting { from: CLINIC, .. }
    ));
    assert!(!w.key_rows(HOSPITAL).contains(&record));
    // The honest answer, after the backoff, is taken.
    dishonest.end();
    w.wait_state(HOSPITAL, &record, OpenState::Open);
}

#[test]
fn a_restart_resumes_from_the_processed_height() {
    let mut w = World::new();
    let (patient, author, _) = w.cast(PHARMACY, HOSPITAL, INSURANCE);
    let first = w.record(&author, &patient, "Thymoma");
    w.wait_state(PHARMACY, &first, OpenState::Open);
    let grant =
        w.rt.block_on(patient.write_grant(&w.node(PHARMACY), &author.id, "while away"))
            .unwrap();
    let processed = w.node(PHARMACY).key_status().processed_height;
    assert!(processed > 0);
    w.cluster.stop(PHARMACY);

    // While it is down: a grant it sealed before, and a record under it.
    let grant = w.applied(HOSPITAL, grant);
    let record =
        w.rt.block_on(author.record(
            &w.node(HOSPITAL),
            &patient.id,
            grant,
            &note("Thymic carcinoma"),
        ))
        .unwrap();
    let second = w.applied(HOSPITAL, record);

    w.cluster.restart(PHARMACY).unwrap();
    let status = w.node(PHARMACY).key_status();
    assert!(
        status.resumed_from >= processed,
        "resumed from {} below {processed}",
        status.resumed_from
    );
    assert_eq!(
        diagnosis(&w.wait_state(PHARMACY, &second, OpenState::Open)),
        "Thymic carcinoma"
    );
    assert_eq!(w.open(PHARMACY, &first).state, OpenState::Open);
    assert_eq!(
        w.node(PHARMACY).key_status().counters.keys_received,
        1,
        "only the new record's key is fetched again"
    );
}

/// The in-memory index is rebuilt at start (§5.3, W4): a home restarted after a read grant
/// still hands its grantee the records added after, and still answers `Erased` for a record
/// erased before it stopped; neither is read from the chain per asked id.
#[test]
fn a_restarted_home_answers_from_its_rebuilt_index() {
    let mut w = World::new();
    let (patient, author, reader) = w.cast(HOSPITAL, CLINIC, PHARMACY);
    w.read_grant(&patient, &reader, HOUR_MS);
    let erased = w.record(&author, &patient, "Sarcoma");
    w.wait_state(HOSPITAL, &erased, OpenState::Open);
    w.erase(&patient, erased, CLINIC);

    w.cluster.stop(HOSPITAL);
    w.cluster.restart(HOSPITAL).unwrap();
    let later = w.record(&author, &patient, "Sarcoma, in remission");
    assert_eq!(
        diagnosis(&w.wait_state(PHARMACY, &later, OpenState::Open)),
        "Sarcoma, in remission"
    );
    assert_eq!(
        w.ask(CLINIC, HOSPITAL, 921, vec![erased]),
        vec![KeyReply::Erased]
    );
}

/// Rows of validator `at`'s key store whose transaction's facts are unknown (`on_chain` NULL).
fn rows_without_facts(w: &World, at: ReplicaId) -> i64 {
    rusqlite::Connection::open(w.keys_db(at))
        .unwrap()
        .query_row(
            "SELECT count(*) FROM data_keys WHERE on_chain IS NULL",
            [],
            |row| row.get(0),
        )
        .unwrap()
}

/// A start reads the index from `keys.db` alone (issue 11: minutes at 10,000,000 transactions
/// when each held key's transaction was looked up on the chain): each applied key's row says
/// what the chain says of it, seal and received key alike. Rows that do not (written by schema
/// 3) are looked up once and written, and the restarted home still serves from its index.
#[test]
fn a_start_reads_held_keys_facts_from_their_rows() {
    let mut w = World::new();
    let (patient, author, reader) = w.cast(HOSPITAL, CLINIC, PHARMACY);
    let before = w.record(&author, &patient, "Melanoma");
    w.wait_state(HOSPITAL, &before, OpenState::Open);
    w.settle();
    for at in [HOSPITAL, CLINIC] {
        assert!(w.key_rows(at).contains(&before));
        assert_eq!(rows_without_facts(&w, at), 0, "validator {at}");
    }
    w.cluster.stop(HOSPITAL);
    rusqlite::Connection::open(w.keys_db(HOSPITAL))
        .unwrap()
        .execute("UPDATE data_keys SET on_chain = NULL", [])
        .unwrap();
    assert!(rows_without_facts(&w, HOSPITAL) > 0);
    w.cluster.restart(HOSPITAL).unwrap();
    assert_eq!(rows_without_facts(&w, HOSPITAL), 0, "written at start");
    w.read_grant(&patient, &reader, HOUR_MS);
    assert_eq!(
        diagnosis(&w.wait_state(PHARMACY, &before, OpenState::Open)),
        "Melanoma"
    );
}

/// Red team finding 11: ids asked above a peer's rate are answered `Busy` without a lookup,
/// and a seal waits for no queued peer request.
#[test]
fn a_peer_above_its_rate_is_answered_busy_and_seals_go_first() {
    let w = World::new();
    let (patient, author, _) = w.cast(HOSPITAL, HOSPITAL, INSURANCE);
    let record = w.record(&author, &patient, "Chondrosarcoma");
    let (answered, busy, looked_up) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    {
        let (answered, busy, looked_up) = (answered.clone(), busy.clone(), looked_up.clone());
        w.network().observe(move |from, to, frame| {
            if from == HOSPITAL
                && to == INSURANCE
                && let Wire::Keys(KeyFrame::Answer { replies, .. }) = &**frame
            {
                for reply in replies {
                    match reply {
                        KeyReply::Busy => busy.fetch_add(1, Ordering::SeqCst),
                        _ => looked_up.fetch_add(1, Ordering::SeqCst),
                    };
                }
                answered.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    // Once the hospital looks ids up (it answers busy while it is not sure it has caught up).
    wait_until("the hospital to answer", || {
        let before = looked_up.load(Ordering::SeqCst);
        assert!(
            w.network()
                .inject(INSURANCE, HOSPITAL, request(6, vec![record]))
        );
        std::thread::sleep(Duration::from_millis(50));
        looked_up.load(Ordering::SeqCst) > before
    });
    let probes = answered.swap(0, Ordering::SeqCst);
    let busy_probes = busy.swap(0, Ordering::SeqCst);
    looked_up.store(0, Ordering::SeqCst);
    let full = || request(7, vec![record; node::MAX_KEY_REQUEST_IDS]);
    let started = Instant::now();
    // Four full requests queued (the most a peer may have waiting), then a seal.
    for _ in 0..4 {
        assert!(w.network().inject(INSURANCE, HOSPITAL, full()));
    }
    let meta = Meta::AddRecord(AddRecord {
        patient: patient.id,
        doctor: author.id,
        department: "Oncology".into(),
        grant: [0; 32],
    });
    w.rt.block_on(
        w.node(HOSPITAL)
            .seal(header(meta, author.signer()), &note("x").to_bytes()),
    )
    .unwrap();
    // The seal is done with requests still queued; that it is taken before them, whatever the
    // answers' speed, is `keys::tests::a_seal_queued_behind_peer_requests_is_taken_in_the_next_turn`
    // (counting answers here raced them: answered from memory, four can be done first).
    // Never more than four queued below: none is dropped.
    let dropped_before = w.node(HOSPITAL).key_status().counters.keys_requests_dropped;
    // More than the burst, a few requests at a time.
    let mut sent = 4;
    while sent < 24 {
        if sent - answered.load(Ordering::SeqCst) < 4 {
            assert!(w.network().inject(INSURANCE, HOSPITAL, full()));
            sent += 1;
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    wait_until("every answer", || answered.load(Ordering::SeqCst) == 24);
    let elapsed = started.elapsed().as_secs_f64();
    let (busy, looked_up) = (
        busy.load(Ordering::SeqCst),
        looked_up.load(Ordering::SeqCst),
    );
    assert_eq!(busy + looked_up, 24 * node::MAX_KEY_REQUEST_IDS as u64);
    assert!(busy > 0, "no id was answered busy in {elapsed:.2} s");
    let allowed = 8192.0 + 4096.0 * elapsed;
    assert!(
        (looked_up as f64) <= allowed + 1.0,
        "{looked_up} ids looked up in {elapsed:.2} s, above the rate"
    );
    // Published after the turn that answered the last request.
    wait_until("the busy answers in the counters", || {
        w.node(HOSPITAL).key_status().counters.keys_requests_busy >= busy + busy_probes
    });
    let counters = w.node(HOSPITAL).key_status().counters;
    assert_eq!(
        counters.keys_requests_busy,
        busy + busy_probes,
        "{probes} probes"
    );
    assert_eq!(counters.keys_requests_dropped, dropped_before);
}

#[test]
fn a_key_request_of_more_than_1024_ids_or_none_is_dropped_and_counted() {
    let w = World::new();
    let too_many = vec![[1; 32]; node::MAX_KEY_REQUEST_IDS + 1];
    assert!(w.network().inject(CLINIC, HOSPITAL, request(1, too_many)));
    assert!(w.network().inject(CLINIC, HOSPITAL, request(2, Vec::new())));
    wait_until("both requests dropped", || {
        w.node(HOSPITAL).key_status().counters.keys_requests_dropped == 2
    });
    assert!(w.answers().is_empty(), "a malformed request was answered");
}

#[test]
fn a_rejected_sealed_transaction_leaves_no_key() {
    // Nothing commits before a cut: both records under one grant wait in one batch.
    let w = World::with_timing(Timing {
        batch_window: Duration::from_secs(60),
        ..fast_timing()
    });
    let patient = Person::patient(CLINIC);
    let doctor = Person::doctor(CLINIC, "Cardiology", "Dr Twice");
    w.enroll(&[&patient, &doctor]);
    let clinic = w.node(CLINIC);
    let grant =
        w.rt.block_on(patient.write_grant(&clinic, &doctor.id, "one note"))
            .unwrap();
    let grant = w.applied(CLINIC, grant);
    let records: Vec<SignedTx> = ["first", "second"]
        .iter()
        .map(|text| {
            w.rt.block_on(doctor.record(&clinic, &patient.id, grant, &note(text)))
                .unwrap()
        })
        .collect();
    let ids: Vec<TxId> = records.iter().map(|r| r.id(&w.genesis_hash())).collect();
    assert!(
        ids.iter().all(|id| w.key_rows(CLINIC).contains(id)),
        "sealed, durable"
    );
    let verdicts = w.rt.block_on(async {
        for record in &records {
            clinic.submit(record.clone()).await.unwrap();
        }
        clinic.cut().await.unwrap();
        let mut verdicts = Vec::new();
        for id in &ids {
            verdicts.push(clinic.wait_applied(*id, WAIT).await.unwrap());
        }
        verdicts
    });
    let applied: Vec<bool> = verdicts
        .iter()
        .map(|v| matches!(v, Verdict::Applied { .. }))
        .collect();
    assert_eq!(applied.iter().filter(|a| **a).count(), 1, "{verdicts:?}");
    w.settle();
    wait_until("the rejected record's key to go", || {
        let rows = w.key_rows(CLINIC);
        ids.iter()
            .zip(&applied)
            .all(|(id, applied)| rows.contains(id) == *applied)
    });

    // A seal whose transaction is never submitted goes once its deadline passes.
    let mut unsent = header(record_meta(&patient, &doctor, grant), doctor.signer());
    unsent.not_after_ms = w.clock.now_ms() + 1_000;
    let (unsent, _) =
        w.rt.block_on(clinic.seal(unsent, &note("never sent").to_bytes()))
            .unwrap();
    let unsent = unsent.id(&w.genesis_hash());
    assert!(w.key_rows(CLINIC).contains(&unsent));
    w.clock.advance_ms(2_000);
    // The replicas read the clock at their next tick.
    std::thread::sleep(Duration::from_millis(300));
    w.applied(CLINIC, enrollment(&clinic));
    wait_until("the expired seal's key to go", || {
        !w.key_rows(CLINIC).contains(&unsent)
    });
}

/// The load generator's seals (`Person::sealed`, what `medchain bench` submits) carry a
/// deadline, [`SIGNATURE_LIFE_MS`] after the home's clock, as the HTTP flows' do: one the
/// cluster refused (busy) and that is never applied is deleted once it has passed, where a
/// seal without a deadline stayed pending, and was looked up on chain at every start, for good.
#[test]
fn a_load_seal_never_applied_goes_at_its_deadline() {
    let w = World::new();
    let patient = Person::patient(HOSPITAL);
    let doctor = Person::doctor(HOSPITAL, "Cardiology", "Dr Late");
    w.enroll(&[&patient, &doctor]);
    let hospital = w.node(HOSPITAL);
    let refused =
        w.rt.block_on(patient.write_grant(&hospital, &doctor.id, "refused as busy"))
            .unwrap();
    assert_eq!(
        refused.header.not_after_ms,
        w.clock.now_ms() + SIGNATURE_LIFE_MS
    );
    let refused = refused.id(&w.genesis_hash());
    assert!(w.key_rows(HOSPITAL).contains(&refused));
    w.clock.advance_ms(SIGNATURE_LIFE_MS + 1);
    // The replicas read the clock at their next tick.
    std::thread::sleep(Duration::from_millis(300));
    w.applied(HOSPITAL, enrollment(&hospital));
    wait_until("the refused seal's key to go", || {
        !w.key_rows(HOSPITAL).contains(&refused)
    });
}

/// §12.1 item 4: `keys.db` no longer marks a seal's row when its transaction is applied; at
/// start a held key is pending (a seal of this validator not yet on chain, deleted once its
/// deadline passes) iff its transaction is not applied on chain. A sealer restarted with an
/// applied record and a seal never sent, both with near deadlines: once they pass, the unsent
/// seal's key goes and the record's stays.
#[test]
fn after_a_restart_only_a_seal_not_on_chain_expires() {
    let mut w = World::new();
    let patient = Person::patient(CLINIC);
    let doctor = Person::doctor(CLINIC, "Cardiology", "Dr Soon");
    w.enroll(&[&patient, &doctor]);
    let meta = record_meta(&patient, &doctor, w.write_grant(&patient, &doctor));
    let mut sealed = Vec::new();
    for text in ["applied", "never sent"] {
        let mut near = header(meta.clone(), doctor.signer());
        near.not_after_ms = w.clock.now_ms() + 1_000;
        let (near, stored) =
            w.rt.block_on(w.node(CLINIC).seal(near, &note(text).to_bytes()))
                .unwrap();
        sealed.push(doctor.sign_header(&w.genesis_hash(), near, stored));
    }
    let unsent = sealed.pop().unwrap().id(&w.genesis_hash());
    let applied = w.applied(CLINIC, sealed.pop().unwrap());
    w.settle();
    w.cluster.stop(CLINIC);
    w.cluster.restart(CLINIC).unwrap();
    let rows = w.key_rows(CLINIC);
    assert!(rows.contains(&applied) && rows.contains(&unsent));

    w.clock.advance_ms(2_000);
    // The replicas read the clock at their next tick.
    std::thread::sleep(Duration::from_millis(300));
    let clinic = w.node(CLINIC);
    let later = w.applied_at(CLINIC, enrollment(&clinic));
    w.wait_state(CLINIC, &applied, OpenState::Open);
    wait_until("the expired seal's key to go", || {
        !w.key_rows(CLINIC).contains(&unsent)
    });
    assert!(clinic.key_status().processed_height >= later);
    assert!(
        w.key_rows(CLINIC).contains(&applied),
        "an applied record's key is not a pending seal's"
    );
}

/// §16.13 as amended: one key sealing two transactions (a dishonest author, finding 13) is
/// found by its id in each key store, and the LATER of the two in chain order is `broken`,
/// its key never stored, whichever key arrives first: when the later's arrives first and is
/// stored, the earlier's replaces it. Both arrival orders, each with its own pair of records.
#[test]
fn a_reused_key_is_broken_for_the_later_transaction() {
    let w = World::new();
    let patient = Person::patient(HOSPITAL);
    let author = Person::doctor(CLINIC, "Oncology", "Dr Reuse");
    w.enroll(&[&patient, &author]);
    let dishonest = Impersonation::new(w.network(), CLINIC, HOSPITAL);
    let genesis_hash = w.genesis_hash();
    // The author seals each record by hand, under `key`, and submits it: applied in turn, so
    // the first of a pair is the earlier in chain order.
    let record = |text: &str, key: &DataKey| {
        let meta = record_meta(&patient, &author, w.write_grant(&patient, &author));
        let mut header = header(meta, author.signer());
        let body = seal_with(
            &genesis_hash,
            &mut header,
            &note(text).to_bytes(),
            key,
            rand::random(),
        )
        .unwrap();
        w.applied(CLINIC, author.sign_header(&genesis_hash, header, body))
    };
    // Answers the home's next request that asks for `tx` with `key` for `tx` alone.
    let deliver = |tx: TxId, key: &DataKey| {
        dishonest.answer(&tx, |asked| {
            if *asked == tx {
                KeyReply::Key(WireKey(key.clone()))
            } else {
                KeyReply::NotHeld
            }
        })
    };
    let reused = |refused: u64| {
        wait_until("the reused key to be refused", || {
            w.node(HOSPITAL).key_status().counters.keys_refused_reused == refused
        })
    };

    // The earlier's key arrives first: the later's is refused.
    let key = DataKey::generate();
    let (earlier, later) = (record("Ependymoma", &key), record("copy", &key));
    deliver(earlier, &key);
    w.wait_state(HOSPITAL, &earlier, OpenState::Open);
    deliver(later, &key);
    reused(1);
    assert_eq!(
        w.open(HOSPITAL, &later).state,
        OpenState::Broken { sealer: CLINIC }
    );
    assert_eq!(w.open(HOSPITAL, &earlier).state, OpenState::Open);
    assert!(!w.key_rows(HOSPITAL).contains(&later));

    // The later's key arrives first and is stored; the earlier's replaces it, and the later
    // is broken from then on.
    let key = DataKey::generate();
    let (earlier, later) = (record("Medulloblastoma", &key), record("copy", &key));
    deliver(later, &key);
    w.wait_state(HOSPITAL, &later, OpenState::Open);
    deliver(earlier, &key);
    w.wait_state(HOSPITAL, &earlier, OpenState::Open);
    assert_eq!(diagnosis(&w.open(HOSPITAL, &earlier)), "Medulloblastoma");
    assert_eq!(
        w.open(HOSPITAL, &later).state,
        OpenState::Broken { sealer: CLINIC }
    );
    let rows = w.key_rows(HOSPITAL);
    assert!(
        rows.contains(&earlier) && !rows.contains(&later),
        "{rows:?}"
    );
    // Refused, not counted as received twice: the replacement is one key kept.
    assert_eq!(
        w.node(HOSPITAL).key_status().counters.keys_refused_reused,
        1
    );
    dishonest.end();
}

/// Red team finding 6: `keys.db` is copied while the node runs, consistently and still
/// sealed; a node whose store is lost is restored from the copy and opens what it held.
#[test]
fn backup_keys_copies_a_running_store() {
    let mut w = World::new();
    let (patient, author, _) = w.cast(PHARMACY, PHARMACY, INSURANCE);
    let record = w.record(&author, &patient, "Osteosarcoma");
    let backup = w.dir.path().join("pharmacy-keys.backup");
    w.rt.block_on(w.node(PHARMACY).backup_keys(&backup))
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let copied: Vec<Vec<u8>> = {
        let conn = rusqlite::Connection::open(&backup).unwrap();
        let mut stmt = conn.prepare("SELECT tx FROM data_keys").unwrap();
        stmt.query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert!(copied.contains(&record.to_vec()));
    assert!(
        w.rt.block_on(w.node(PHARMACY).backup_keys(&backup))
            .is_err(),
        "a backup overwrote a file"
    );

    // The store is lost; the copy is put back: the record opens, no key fetched.
    w.cluster.stop(PHARMACY);
    w.lose_keys_db(PHARMACY);
    std::fs::copy(&backup, w.keys_db(PHARMACY)).unwrap();
    w.cluster.restart(PHARMACY).unwrap();
    assert_eq!(
        diagnosis(&w.wait_state(PHARMACY, &record, OpenState::Open)),
        "Osteosarcoma"
    );
    assert_eq!(w.node(PHARMACY).key_status().counters.keys_received, 0);
}

/// Red team finding 4: a sealer that lost its key store gets its own records' keys back as a
/// party, and a read grant to one of its doctors, begun and ended while it waits, does not
/// make them a grantee's (dropped at the grant's end).
#[test]
fn a_sealer_that_lost_its_store_keeps_its_own_keys_after_a_grant_ends() {
    let mut w = World::new();
    let (patient, author, _) = w.cast(HOSPITAL, CLINIC, INSURANCE);
    let record = w.record(&author, &patient, "Retinoblastoma");
    w.wait_state(HOSPITAL, &record, OpenState::Open);

    w.cluster.stop(CLINIC);
    w.lose_keys_db(CLINIC);
    let withheld = Impersonation::new(w.network(), HOSPITAL, CLINIC);
    w.cluster.restart(CLINIC).unwrap();
    w.wait_state(
        CLINIC,
        &record,
        OpenState::Waiting {
            from: HOSPITAL,
            since_ms: w.clock.now_ms(),
        },
    );
    grant_ends_while_waiting(&w, &patient, &author, (CLINIC, HOSPITAL), &record, withheld);
    assert_eq!(
        diagnosis(&w.wait_state(CLINIC, &record, OpenState::Open)),
        "Retinoblastoma"
    );
}

/// Red team s12, BREAK: a home that lost its store (§5.6) asks every other validator in turn
/// for the keys of its own patients' records it sealed; the first in turn (the clinic) lies:
/// `Fetching` to every request, and an offer of the key right after each answer. Each offer
/// is taken (it did say `Fetching`), the liar is asked next (`offered_by`), says `Fetching`
/// again, and so on: the grantee holding the key (the insurer, asked in turn after it) is
/// never asked, and the home asks the liar 4 times a second. Once the liar answers `NotHeld`
/// instead, the grantee is asked and gives the key (the control, at the end).
/// (`keys::wanted::red_team_s12::
/// a_liar_saying_fetching_and_offering_at_once_keeps_a_key_the_home_holds_from_coming`.)
#[test]
fn a_liar_saying_fetching_and_offering_keeps_a_lost_stores_key_from_the_grantee() {
    let mut w = World::new();
    let (patient, author, reader) = w.cast(HOSPITAL, HOSPITAL, INSURANCE);
    let record = w.record(&author, &patient, "Ewing sarcoma");
    w.wait_state(HOSPITAL, &record, OpenState::Open);
    w.read_grant(&patient, &reader, HOUR_MS);
    w.wait_state(INSURANCE, &record, OpenState::Open);

    w.cluster.stop(HOSPITAL);
    w.lose_keys_db(HOSPITAL);
    let liar = Impersonation::new(w.network(), CLINIC, HOSPITAL);
    w.cluster.restart(HOSPITAL).unwrap();
    let got = || w.key_rows(HOSPITAL).contains(&record);
    let reply = |says: KeyReply, until: Instant| -> (bool, usize) {
        let mut asked = 0;
        while Instant::now() < until {
            if got() {
                return (true, asked);
            }
            let Ok((request, txs)) = liar.requests.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            asked += 1;
            let replies = txs.iter().map(|_| says.clone()).collect();
            let answer = Frame::new(Wire::Keys(KeyFrame::Answer {
                request,
                height: u64::MAX,
                replies,
            }));
            assert!(w.network().inject(CLINIC, HOSPITAL, answer));
            if txs.contains(&record) && matches!(says, KeyReply::Fetching) {
                let offer = Frame::new(Wire::Keys(KeyFrame::Offer { txs: vec![record] }));
                assert!(w.network().inject(CLINIC, HOSPITAL, offer));
            }
        }
        (got(), asked)
    };
    let (pinned_got, asked) = reply(KeyReply::Fetching, Instant::now() + WAIT);
    // The control: the liar now says `NotHeld`; the grantee is asked and gives it.
    let (control, _) = reply(KeyReply::NotHeld, Instant::now() + 2 * WAIT);
    assert!(
        control,
        "the grantee gives the key once the liar says NotHeld"
    );
    liar.end();
    assert!(
        pinned_got,
        "the lost store did not get the key from the grantee in {WAIT:?} of the liar's \
         Fetching + Offer ({asked} requests to the liar meanwhile)"
    );
}

/// Red team finding 12: a home restored from an old backup, in which a revoked grant is still
/// live, answers `Busy` to the former grantee while it is below the checkpoint the others
/// report, and `NotEntitled` once it has caught up: it never hands the key out.
#[test]
fn a_restored_home_answers_no_key_before_it_has_caught_up() {
    let mut w = World::new();
    let (patient, author, reader) = w.cast(PHARMACY, HOSPITAL, CLINIC);
    let grant = w.read_grant(&patient, &reader, HOUR_MS);
    let record = w.record(&author, &patient, "Wilms tumour");
    w.wait_state(CLINIC, &record, OpenState::Open);
    w.wait_state(PHARMACY, &record, OpenState::Open);

    // The pharmacy's folder is backed up, stopped.
    let (folder, backup) = copy_while_stopped(&mut w, PHARMACY);
    w.revoke(&patient, grant);
    w.wait_state(CLINIC, &record, OpenState::Elsewhere { home: PHARMACY });

    // Restored from the backup, it hears the others' checkpoints but gets no block.
    put_back_stopped(&mut w, PHARMACY, &folder, &backup);
    w.network()
        .filter(|_, to, frame| !(to == PHARMACY && matches!(**frame, Wire::Blocks(_))));
    w.cluster.restart(PHARMACY).unwrap();
    let pharmacy = w.node(PHARMACY);
    let hospital = w.node(HOSPITAL);
    wait_until("the pharmacy to learn it is behind", || {
        // A block, not awaited by the pharmacy, which cannot apply it.
        w.rt.block_on(hospital.submit_applied(enrollment(&hospital), WAIT))
            .unwrap();
        let status = pharmacy.status();
        status.recovering || status.reported_checkpoint > pharmacy.key_status().processed_height
    });
    let ask = |id: u64| w.ask(CLINIC, PHARMACY, id, vec![record]);
    assert_eq!(
        ask(501),
        vec![KeyReply::Busy],
        "a restored home answered before catching up"
    );

    w.network().clear_filter();
    let head = hospital.status().height;
    wait_until("the pharmacy to catch up", || {
        pharmacy.key_status().processed_height >= head && !pharmacy.status().recovering
    });
    // Caught up by its own count, it still answers busy until f+1 peers' fresh status claims
    // say so too (`NodeStatus::behind`): those come every few seconds.
    let mut id = 502;
    wait_until("the pharmacy to take itself for caught up", || {
        id += 1;
        ask(id) != vec![KeyReply::Busy]
    });
    assert_eq!(ask(id + 1), vec![KeyReply::NotEntitled]);
}

/// §5.6: a validator restored with an old `chain.db` and `node.db` but its own newer `keys.db`
/// (what `medchain restore` keeps) holds the keys of records sealed since, ahead of its chain.
/// It gives no key while its chain is behind the store (it cannot tell yet what they are), and
/// once the chain has caught up it serves them like any other: here the patient's home, which
/// lost its own store meanwhile, gets back a record whose only other holder is the restored
/// sealer, and an erasure applied in the store before the restore is answered `Erased`.
#[test]
fn a_key_store_ahead_of_its_chain_waits_for_the_chain_then_gives_its_keys() {
    let mut w = World::new();
    let (patient, author, _) = w.cast(PHARMACY, CLINIC, INSURANCE);
    let erased = w.record(&author, &patient, "Chondrosarcoma");
    w.wait_state(PHARMACY, &erased, OpenState::Open);

    // The clinic's chain.db and node.db, copied while it is stopped.
    let (folder, backup) = copy_while_stopped(&mut w, CLINIC);
    let backup_height = ledger::Reader::open(&backup.join("chain.db"))
        .unwrap()
        .head()
        .unwrap()
        .0;

    // After the copy: a record whose key the clinic seals, and an erasure.
    let record = w.record(&author, &patient, "Ewing sarcoma");
    w.wait_state(PHARMACY, &record, OpenState::Open);
    w.erase(&patient, erased, CLINIC);
    w.wait_state(CLINIC, &erased, OpenState::Erased);
    let head = w.node(HOSPITAL).status().height;

    // The clinic gets the old chain.db and node.db back, keeps its keys.db; the pharmacy loses
    // its keys.db, so that the clinic is the record's only holder.
    w.cluster.stop(CLINIC);
    for store in ["chain.db", "node.db"] {
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(folder.join(format!("{store}{suffix}")));
        }
        std::fs::copy(backup.join(store), folder.join(store)).unwrap();
    }
    let kept = node::KeyStoreFacts::read(&w.keys_db(CLINIC)).unwrap();
    assert!(kept.processed_height >= head && head > backup_height);
    w.cluster.stop(PHARMACY);
    w.lose_keys_db(PHARMACY);
    w.cluster.restart(PHARMACY).unwrap();

    // Restarted, its chain held back: it gives nothing.
    w.network()
        .filter(|_, to, frame| !(to == CLINIC && matches!(**frame, Wire::Blocks(_))));
    w.cluster.restart(CLINIC).unwrap();
    let clinic = w.node(CLINIC);
    assert_eq!(clinic.key_status().resumed_from, kept.processed_height);
    assert!(clinic.status().height < head);
    assert_eq!(
        w.ask(PHARMACY, CLINIC, 601, vec![record]),
        vec![KeyReply::Busy]
    );

    // The chain catches up (and the clinic ends its recovery): the pharmacy gets the key.
    w.network().clear_filter();
    let hospital = w.node(HOSPITAL);
    wait_until("the clinic to catch up", || {
        w.rt.block_on(hospital.submit_applied(enrollment(&hospital), WAIT))
            .unwrap();
        clinic.status().height >= head && !clinic.status().recovering
    });
    assert_eq!(
        diagnosis(&w.wait_state(PHARMACY, &record, OpenState::Open)),
        "Ewing sarcoma"
    );
    let replies = w.ask(PHARMACY, CLINIC, 602, vec![erased, record]);
    assert!(
        matches!(replies.as_slice(), [KeyReply::Erased, KeyReply::Key(_)]),
        "{replies:?}"
    );
    assert_eq!(
        diagnosis(&w.wait_state(CLINIC, &record, OpenState::Open)),
        "Ewing sarcoma"
    );
}

/// A validator cut off from every peer takes itself for behind once their last claims are a
/// few seconds old (docs/SECURITY.md §16.25): a partition does not leave it answering keys, or
/// opening purposes, from its old state as if it were current.
#[test]
fn a_validator_cut_off_from_its_peers_takes_itself_for_behind() {
    let w = World::new();
    let insurance = w.node(INSURANCE);
    let behind = || {
        let status = insurance.status();
        status.behind(status.height)
    };
    wait_until("the insurer to hear its peers", || !behind());
    w.network().filter(|_, to, _| to != INSURANCE);
    wait_until("the insurer, cut off, to take itself for behind", behind);
    w.network().clear_filter();
    wait_until("the insurer to hear its peers again", || !behind());
}

/// §12: every `keys.db` commit but a seal's is written without an fsync, so a crash of the
/// machine may lose a tail of them (never a seal: a seal's fsync makes every earlier commit
/// durable too). A grantee's `keys.db` put back as it was before a read grant, while its
/// `chain.db` keeps the blocks since (the tail it lost: the grant, the keys it received, an
/// erasure), re-derives all of it at start: it processes the blocks again from `chain.db`
/// before it opens anything, pulls the keys again, and the erased record stays erased.
#[test]
fn a_key_store_that_lost_its_applied_tail_derives_it_again_from_the_chain() {
    let mut w = World::new();
    let (patient, author, reader) = w.cast(HOSPITAL, CLINIC, PHARMACY);
    let history = w.record(&author, &patient, "Glioma");
    w.settle();
    // The store as a crash could leave it: before everything below.
    w.cluster.stop(PHARMACY);
    let kept = w.dir.path().join("pharmacy-keys-before");
    std::fs::create_dir_all(&kept).unwrap();
    for file in w.keys_db_files(PHARMACY) {
        if file.exists() {
            std::fs::copy(&file, kept.join(file.file_name().unwrap())).unwrap();
        }
    }
    w.cluster.restart(PHARMACY).unwrap();
    let lost_from = w.node(PHARMACY).key_status().processed_height;

    let grant = w.read_grant(&patient, &reader, HOUR_MS);
    let later = w.record(&author, &patient, "Glioma, grade II");
    let erased = w.record(&author, &patient, "Glioma, grade III");
    for tx in [&history, &later, &erased] {
        w.wait_state(PHARMACY, tx, OpenState::Open);
    }
    let erased_at = w.erase(&patient, erased, CLINIC);
    w.wait_state(PHARMACY, &erased, OpenState::Erased);

    w.cluster.stop(PHARMACY);
    for file in w.keys_db_files(PHARMACY) {
        let _ = std::fs::remove_file(&file);
        let before = kept.join(file.file_name().unwrap());
        if before.exists() {
            std::fs::copy(&before, &file).unwrap();
        }
    }
    assert!(!w.key_rows(PHARMACY).contains(&history), "the tail is lost");
    w.cluster.restart(PHARMACY).unwrap();
    let status = w.node(PHARMACY).key_status();
    assert_eq!(
        status.resumed_from, lost_from,
        "resumed from the kept store"
    );
    // A read at the erasure's height waits until the lost blocks are processed again.
    assert_eq!(
        w.open_at(PHARMACY, &erased, erased_at).state,
        OpenState::Erased
    );
    assert!(w.node(PHARMACY).key_status().processed_height >= erased_at);
    for (tx, text) in [(&history, "Glioma"), (&later, "Glioma, grade II")] {
        assert_eq!(
            diagnosis(&w.wait_state(PHARMACY, tx, OpenState::Open)),
            text
        );
    }
    w.wait_state(PHARMACY, &grant, OpenState::Open);
    assert_eq!(
        w.node(PHARMACY).key_status().counters.keys_received,
        3,
        "the grant's and the two records' keys are pulled again, the erased one's is not"
    );
    let rows = w.key_rows(PHARMACY);
    assert!(rows.contains(&history) && rows.contains(&later) && !rows.contains(&erased));
}

/// Stops `at`, copies its folder beside it (`<name>-backup`) and restarts it: the folder and
/// the copy.
fn copy_while_stopped(w: &mut World, at: ReplicaId) -> (PathBuf, PathBuf) {
    let folder = w.keys_db(at).parent().unwrap().to_path_buf();
    let backup = folder.with_file_name(format!(
        "{}-backup",
        folder.file_name().unwrap().to_string_lossy()
    ));
    w.cluster.stop(at);
    copy_dir(&folder, &backup);
    w.cluster.restart(at).unwrap();
    (folder, backup)
}

/// Stops `at` and puts the copy `backup` in place of its `folder` (left stopped).
fn put_back_stopped(w: &mut World, at: ReplicaId, folder: &Path, backup: &Path) {
    w.cluster.stop(at);
    std::fs::remove_dir_all(folder).unwrap();
    copy_dir(backup, folder);
}

/// §7.2 step 3: once the author's `Erase` is applied, every correct validator that held the
/// record's key deletes it, and its sealed row's bytes are in no file of its key store (secure
/// delete, and a truncated WAL); every validator shows the record erased and answers `Erased`.
#[test]
fn erasure_deletes_the_key_on_every_correct_validator() {
    let w = World::new();
    let (patient, author, reader) = w.cast(HOSPITAL, CLINIC, PHARMACY);
    w.read_grant(&patient, &reader, HOUR_MS);
    let record = w.record(&author, &patient, "Lymphoma, stage II");
    let holders = [HOSPITAL, CLINIC, PHARMACY];
    let mut rows = Vec::new();
    for at in holders {
        w.wait_state(at, &record, OpenState::Open);
        rows.push(w.sealed_row(at, &record).expect("a sealed row"));
    }

    w.erase(&patient, record, CLINIC);
    for at in [HOSPITAL, CLINIC, PHARMACY, INSURANCE] {
        let opened = w.wait_state(at, &record, OpenState::Erased);
        assert!(opened.plain.is_none());
    }
    for (at, row) in holders.into_iter().zip(&rows) {
        assert!(!w.key_rows(at).contains(&record));
        for suffix in ["", "-wal", "-shm"] {
            let file = format!("{}{suffix}", w.keys_db(at).display());
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(
                !bytes
                    .windows(row.len())
                    .any(|window| window == row.as_slice()),
                "validator {at}: the erased key's sealed row is still in {file}"
            );
        }
    }
    // A party asking for it now is told it is erased.
    assert_eq!(
        w.ask(CLINIC, HOSPITAL, 77, vec![record]),
        vec![KeyReply::Erased]
    );
    // The chain still verifies from genesis, without any key.
    for handle in w.cluster.handles() {
        handle
            .read(|chain| chain.verify(w.cluster.genesis(), &mut |_| {}))
            .unwrap();
    }
}

/// §7.2: a grantee that was down during the erasure catches up before it opens anything: a
/// read at the erasure's height (or later) waits until its key service has processed it, and
/// then finds the record erased, its key gone.
#[test]
fn a_validator_down_during_an_erasure_catches_up_before_it_serves() {
    let mut w = World::new();
    let (patient, author, reader) = w.cast(HOSPITAL, CLINIC, PHARMACY);
    w.read_grant(&patient, &reader, HOUR_MS);
    let record = w.record(&author, &patient, "Hepatoblastoma");
    w.wait_state(PHARMACY, &record, OpenState::Open);
    assert!(w.key_rows(PHARMACY).contains(&record));
    w.cluster.stop(PHARMACY);
    let erased_at = w.erase(&patient, record, CLINIC);

    w.cluster.restart(PHARMACY).unwrap();
    let opened = w.open_at(PHARMACY, &record, erased_at);
    assert_eq!(opened.state, OpenState::Erased);
    assert!(opened.plain.is_none());
    assert!(w.node(PHARMACY).key_status().processed_height >= erased_at);
    assert!(!w.key_rows(PHARMACY).contains(&record));
}

/// §7.2: a grantee restored from a backup taken before the erasure holds the key again; at
/// start it processes every block from the backup's processed height on, and deletes it.
#[test]
fn a_validator_restored_from_an_earlier_backup_reapplies_the_erasure() {
    let mut w = World::new();
    let (patient, author, reader) = w.cast(HOSPITAL, CLINIC, PHARMACY);
    w.read_grant(&patient, &reader, HOUR_MS);
    let record = w.record(&author, &patient, "Nephroblastoma");
    w.wait_state(PHARMACY, &record, OpenState::Open);
    let (folder, backup) = copy_while_stopped(&mut w, PHARMACY);
    let erased_at = w.erase(&patient, record, CLINIC);
    w.wait_state(PHARMACY, &record, OpenState::Erased);

    put_back_stopped(&mut w, PHARMACY, &folder, &backup);
    assert!(
        w.key_rows(PHARMACY).contains(&record),
        "the backup holds the key"
    );
    w.cluster.restart(PHARMACY).unwrap();
    w.settle_to(erased_at);
    w.wait_state(PHARMACY, &record, OpenState::Erased);
    assert!(!w.key_rows(PHARMACY).contains(&record));
}
