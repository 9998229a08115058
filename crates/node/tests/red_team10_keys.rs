//! Red team of issue 10's key service (docs/SECURITY.md, "Confidential records"), played as one
//! dishonest validator on the embedded cluster: real replicas, SQLite files, signatures and
//! seals, a manual clock. The test speaks for the dishonest validator by withholding its key
//! frames and injecting its own (`MemoryNetwork::filter`, `inject`). `held_*` tests pin a
//! defence that held; `#[ignore = "BREAK N: .."]` tests fail on the code as it is (run them with
//! `--ignored`).
//!
//! Validators: 0 hospital, 1 clinic, 2 pharmacy, 3 insurance.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[allow(dead_code)] // Helpers shared with the other cluster tests.
mod common;

use common::{fast_timing, note, runtime};
use ledger::seal::DataKey;
use ledger::tx::{AddRecord, AnswerErasure, Decision, RecordBody};
use ledger::{Meta, Queries, SignedTx, TxId};
use node::load::{Person, enroll, header};
use node::transport::MemoryNetwork;
use node::{
    Clock, Cluster, ClusterOptions, Frame, KeyFrame, KeyReply, NodeHandle, OpenState, Opened,
    Verdict, Wire, WireKey,
};
use pbft::ReplicaId;

const WAIT: Duration = Duration::from_secs(20);
const HOSPITAL: ReplicaId = 0;
const CLINIC: ReplicaId = 1;
const PHARMACY: ReplicaId = 2;
const INSURANCE: ReplicaId = 3;
const HOUR_MS: u64 = 3_600_000;

/// Every key frame the network carries, and the ones a test withholds: `(from, to, frame)`.
type Seen = Arc<Mutex<Vec<(ReplicaId, ReplicaId, Frame)>>>;

struct World {
    dir: common::DataDir,
    cluster: Cluster,
    rt: tokio::runtime::Runtime,
    clock: Clock,
    seen: Seen,
}

impl World {
    fn new() -> Self {
        let rt = runtime();
        let dir = common::data_dir();
        let clock = Clock::manual(Clock::System.now_ms());
        let cluster = Cluster::start(ClusterOptions {
            clock: clock.clone(),
            ..ClusterOptions::new(dir.path(), fast_timing())
        })
        .unwrap();
        let seen: Seen = Arc::default();
        let log = seen.clone();
        cluster.network().observe(move |from, to, frame| {
            if matches!(**frame, Wire::Keys(_)) {
                log.lock().unwrap().push((from, to, frame.clone()));
            }
        });
        World {
            dir,
            cluster,
            rt,
            clock,
            seen,
        }
    }

    fn node(&self, id: ReplicaId) -> NodeHandle {
        self.cluster.handle(id).expect("the validator runs")
    }

    fn network(&self) -> &MemoryNetwork {
        self.cluster.network()
    }

    fn genesis_hash(&self) -> ledger::Hash {
        self.cluster.genesis().hash()
    }

    fn enroll(&self, people: &[&Person]) {
        self.rt
            .block_on(enroll(&self.cluster.handles(), people, WAIT))
            .expect("enrolled");
        self.settle();
    }

    fn settle(&self) {
        let handles = self.cluster.handles();
        let height = handles.iter().map(|h| h.status().height).max().unwrap_or(0);
        wait_until("every validator to apply the head", || {
            handles.iter().all(|h| h.status().height >= height)
        });
    }

    /// Submits `tx` at `at`, waits until every running validator applied it: its block height.
    fn applied_at(&self, at: ReplicaId, tx: SignedTx) -> u64 {
        let verdict = self
            .rt
            .block_on(self.node(at).submit_applied(tx, WAIT))
            .expect("submitted");
        let Verdict::Applied { height, .. } = verdict else {
            panic!("not applied: {verdict:?}");
        };
        let handles = self.cluster.handles();
        wait_until("every validator to apply it", || {
            handles.iter().all(|h| h.status().height >= height)
        });
        height
    }

    fn applied(&self, at: ReplicaId, tx: SignedTx) -> TxId {
        let id = tx.id(&self.genesis_hash());
        self.applied_at(at, tx);
        id
    }

    fn write_grant(&self, patient: &Person, doctor: &Person) -> TxId {
        let grant = self
            .rt
            .block_on(patient.write_grant(&self.node(patient.home), &doctor.id, "a visit"))
            .unwrap();
        self.applied(patient.home, grant)
    }

    /// A record sealed by its author's node (which stores the key) and committed.
    fn record(&self, doctor: &Person, patient: &Person, diagnosis: &str) -> TxId {
        let grant = self.write_grant(patient, doctor);
        let record = self
            .rt
            .block_on(doctor.record(
                &self.node(doctor.home),
                &patient.id,
                grant,
                &note(diagnosis),
            ))
            .unwrap();
        self.applied(doctor.home, record)
    }

    /// A record sealed by the test, playing its author's validator: the data key stays with
    /// the test (no node stores it), the author's node only submits it.
    fn record_keyed_here(
        &self,
        doctor: &Person,
        patient: &Person,
        diagnosis: &str,
    ) -> (TxId, DataKey) {
        let grant = self.write_grant(patient, doctor);
        let meta = Meta::AddRecord(AddRecord {
            patient: patient.id,
            doctor: doctor.id,
            department: doctor.department.clone().unwrap_or_default(),
            grant,
        });
        let mut sealed = header(meta, doctor.signer());
        let (key, body) = ledger::seal::seal(
            &self.genesis_hash(),
            &mut sealed,
            &note(diagnosis).to_bytes(),
        )
        .unwrap();
        let tx = doctor.sign_header(&self.genesis_hash(), sealed, body);
        (self.applied(doctor.home, tx), key)
    }

    fn read_grant(&self, patient: &Person, doctor: &Person, duration_ms: u64) -> TxId {
        let grant = self
            .rt
            .block_on(patient.read_grant(
                &self.node(patient.home),
                &doctor.id,
                duration_ms,
                "a second opinion",
            ))
            .unwrap();
        self.applied(patient.home, grant)
    }

    fn revoke(&self, patient: &Person, grant: TxId) {
        self.applied(patient.home, patient.revoke(&self.genesis_hash(), grant));
    }

    fn erase(&self, patient: &Person, tx: TxId, sealer: ReplicaId) -> u64 {
        let request = self.applied(
            patient.home,
            patient.request_erasure(&self.genesis_hash(), tx),
        );
        let meta = Meta::AnswerErasure(AnswerErasure {
            request,
            decision: Decision::Erase,
        });
        let node = self.node(sealer);
        let answer = node.sign_as_validator(
            header(meta, ledger::Signer::Validator { index: sealer }),
            Vec::new(),
        );
        self.applied_at(sealer, answer)
    }

    fn try_open(&self, at: ReplicaId, tx: &TxId) -> Option<Opened> {
        let node = self.node(at);
        let (height, committed) = node
            .read(|chain| Ok((chain.head()?.0, chain.transaction(tx)?)))
            .unwrap();
        let committed = committed?;
        self.rt
            .block_on(node.open(height, &[(committed.tx.header, committed.tx.body)]))
            .expect("opened")
            .pop()
    }

    fn wait_state(&self, at: ReplicaId, tx: &TxId, state: OpenState) -> Opened {
        let deadline = Instant::now() + WAIT;
        loop {
            let opened = self.try_open(at, tx);
            match opened {
                Some(opened) if opened.state == state => return opened,
                _ => assert!(
                    Instant::now() < deadline,
                    "validator {at} sees {:?}, not {state:?}",
                    opened.map(|o| o.state)
                ),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn keys_db(&self, at: ReplicaId) -> PathBuf {
        let name = &self.cluster.genesis().validators()[at as usize].name;
        self.dir.path().join(name).join("keys.db")
    }

    fn sealed_row(&self, at: ReplicaId, tx: &TxId) -> Option<Vec<u8>> {
        let conn = rusqlite::Connection::open(self.keys_db(at)).unwrap();
        conn.query_row(
            "SELECT sealed_key FROM data_keys WHERE tx = ?1",
            [tx.as_slice()],
            |row| row.get(0),
        )
        .ok()
    }

    /// The files of `at`'s key store in which `bytes` occur.
    fn files_holding(&self, at: ReplicaId, bytes: &[u8]) -> Vec<String> {
        ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| format!("{}{suffix}", self.keys_db(at).display()))
            .filter(|file| {
                std::fs::read(file)
                    .unwrap_or_default()
                    .windows(bytes.len())
                    .any(|window| window == bytes)
            })
            .collect()
    }

    /// `asker` (played by the test) asks `holder` for `txs` under request id `id`: the
    /// holder's replies.
    fn ask(&self, asker: ReplicaId, holder: ReplicaId, id: u64, txs: Vec<TxId>) -> Vec<KeyReply> {
        let frame = Frame::new(Wire::Keys(KeyFrame::Request { request: id, txs }));
        assert!(self.network().inject(asker, holder, frame));
        let mut replies = None;
        wait_until("the holder's answer", || {
            replies = self.answer_of(holder, asker, id);
            replies.is_some()
        });
        replies.unwrap()
    }

    fn answer_of(&self, from: ReplicaId, to: ReplicaId, id: u64) -> Option<Vec<KeyReply>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .find_map(|(f, t, frame)| match &**frame {
                Wire::Keys(KeyFrame::Answer {
                    request, replies, ..
                }) if *f == from && *t == to && *request == id => Some(replies.clone()),
                _ => None,
            })
    }

    /// The next request `victim` sends to `holder` asking for `tx`, seen after `after` frames.
    fn request_for(
        &self,
        victim: ReplicaId,
        holder: ReplicaId,
        tx: &TxId,
        after: usize,
    ) -> (u64, Vec<TxId>) {
        let mut found = None;
        wait_until("the victim to ask", || {
            found = self.seen.lock().unwrap()[after..]
                .iter()
                .find_map(|(f, t, frame)| match &**frame {
                    Wire::Keys(KeyFrame::Request { request, txs })
                        if *f == victim && *t == holder && txs.contains(tx) =>
                    {
                        Some((*request, txs.clone()))
                    }
                    _ => None,
                });
            found.is_some()
        });
        found.unwrap()
    }

    fn frames_seen(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn diagnosis(opened: &Opened) -> String {
    RecordBody::from_bytes(opened.plain.as_ref().expect("opened"))
        .unwrap()
        .diagnosis
}

fn answer(request: u64, replies: Vec<KeyReply>) -> Frame {
    Frame::new(Wire::Keys(KeyFrame::Answer {
        request,
        height: u64::MAX,
        replies,
    }))
}

/// The clinic, author of two records of a hospital patient, is dishonest toward the home: it
/// answers the home's request with each record's key swapped for the other's (real keys, of
/// another transaction), then answers correctly, then replays that answer, and answers a
/// request the home never made. The home stores only the right keys, once.
#[test]
fn held_1_swapped_replayed_and_unasked_answers_are_refused() {
    let w = World::new();
    let patient = Person::patient(HOSPITAL);
    let author = Person::doctor(CLINIC, "Oncology", "Dr Author");
    w.enroll(&[&patient, &author]);
    // The clinic's own key frames to the home are withheld: the test speaks for it.
    w.network().filter(|from, to, frame| {
        !(from == CLINIC && to == HOSPITAL && matches!(**frame, Wire::Keys(_)))
    });
    let start = w.frames_seen();
    let (first, first_key) = w.record_keyed_here(&author, &patient, "Ewing sarcoma");
    let (second, second_key) = w.record_keyed_here(&author, &patient, "Osteosarcoma");

    let (request, txs) = w.request_for(HOSPITAL, CLINIC, &second, start);
    let swapped = txs
        .iter()
        .map(|tx| {
            let key = if *tx == first {
                second_key.clone()
            } else {
                first_key.clone()
            };
            KeyReply::Key(WireKey(key))
        })
        .collect();
    assert!(
        w.network()
            .inject(CLINIC, HOSPITAL, answer(request, swapped))
    );
    wait_until("the swapped keys to be refused", || {
        w.node(HOSPITAL).key_status().counters.keys_refused_wrong >= txs.len() as u64
    });
    for tx in [&first, &second] {
        assert!(
            w.sealed_row(HOSPITAL, tx).is_none(),
            "a swapped key was stored"
        );
        assert!(matches!(
            w.try_open(HOSPITAL, tx).unwrap().state,
            OpenState::Waiting { from: CLINIC, .. }
        ));
    }

    // After the backoff the home asks again, and is answered right.
    let after = w.frames_seen();
    let (request, txs) = w.request_for(HOSPITAL, CLINIC, &first, after);
    let right: Vec<KeyReply> = txs
        .iter()
        .map(|tx| {
            KeyReply::Key(WireKey(if *tx == first {
                first_key.clone()
            } else {
                second_key.clone()
            }))
        })
        .collect();
    let right_answer = answer(request, right);
    assert!(w.network().inject(CLINIC, HOSPITAL, right_answer.clone()));
    assert_eq!(
        diagnosis(&w.wait_state(HOSPITAL, &first, OpenState::Open)),
        "Ewing sarcoma"
    );
    let received = w.node(HOSPITAL).key_status().counters.keys_received;
    let dropped = w.node(HOSPITAL).key_status().counters.keys_answers_dropped;
    // The replay, and an answer to a request never made, are dropped unread.
    assert!(w.network().inject(CLINIC, HOSPITAL, right_answer));
    assert!(w.network().inject(
        CLINIC,
        HOSPITAL,
        answer(request ^ 0x5555, vec![KeyReply::Key(WireKey(second_key))])
    ));
    wait_until("both to be dropped", || {
        w.node(HOSPITAL).key_status().counters.keys_answers_dropped >= dropped + 2
    });
    assert_eq!(
        w.node(HOSPITAL).key_status().counters.keys_received,
        received
    );
    w.network().clear_filter();
}

/// A dishonest former grantee (the pharmacy) asks the patient's home directly: the moment its
/// grant is revoked, and the moment a second grant ends by the clock with no block after it,
/// and for a record added after the revocation. The home answers `NotEntitled` each time,
/// deciding on its own chain and clock.
#[test]
fn held_2_a_grantee_asking_as_its_grant_ends_gets_nothing() {
    let w = World::new();
    let patient = Person::patient(HOSPITAL);
    let author = Person::doctor(HOSPITAL, "Oncology", "Dr Home");
    let reader = Person::doctor(PHARMACY, "Toxicology", "Dr Reader");
    w.enroll(&[&patient, &author, &reader]);
    let grant = w.read_grant(&patient, &reader, HOUR_MS);
    let before = w.record(&author, &patient, "Cholangiocarcinoma");
    w.wait_state(PHARMACY, &before, OpenState::Open);
    let replies = w.ask(PHARMACY, HOSPITAL, 7_001, vec![before]);
    assert!(
        matches!(replies.as_slice(), [KeyReply::Key(_)]),
        "a live grantee is answered: {replies:?}"
    );

    w.revoke(&patient, grant);
    assert_eq!(
        w.ask(PHARMACY, HOSPITAL, 7_002, vec![before]),
        vec![KeyReply::NotEntitled]
    );
    let after = w.record(&author, &patient, "Pancreatic carcinoma");
    assert_eq!(
        w.ask(PHARMACY, HOSPITAL, 7_003, vec![after, before]),
        vec![KeyReply::NotEntitled, KeyReply::NotEntitled]
    );

    // A one-minute grant, ended by the clock exactly at its expiry, with no block after it.
    let short = w.read_grant(&patient, &reader, 60_000);
    w.wait_state(PHARMACY, &after, OpenState::Open);
    let expires_ms = w
        .node(HOSPITAL)
        .read(|chain| chain.grant(&short))
        .unwrap()
        .expect("the grant")
        .expires_ms;
    w.clock.advance_ms(expires_ms - w.clock.now_ms());
    assert_eq!(
        w.ask(PHARMACY, HOSPITAL, 7_004, vec![after]),
        vec![KeyReply::NotEntitled]
    );
    w.wait_state(PHARMACY, &after, OpenState::Elsewhere { home: HOSPITAL });
    // A stranger asking is told no as well.
    assert_eq!(
        w.ask(INSURANCE, HOSPITAL, 7_005, vec![after]),
        vec![KeyReply::NotEntitled]
    );
}

/// BREAK 2. §5.4 says a correct grantee drops what it received when its grant ends, because
/// "keeping the keys would only give a thief of its disk more"; erasure (§7.2) empties the WAL
/// after deleting, a grant's end does not. The grantee's sealed row stays readable in
/// `keys.db-wal` after the revocation, until SQLite happens to overwrite it. Fixed: a grant's
/// end that deletes a key empties the WAL too (`feed.rs` `end_grant`, the timer).
#[test]
fn break_2_a_grant_end_leaves_the_dropped_key_in_the_wal() {
    let w = World::new();
    let patient = Person::patient(HOSPITAL);
    let author = Person::doctor(HOSPITAL, "Oncology", "Dr Home");
    let reader = Person::doctor(CLINIC, "Neurology", "Dr Reader");
    w.enroll(&[&patient, &author, &reader]);
    let grant = w.read_grant(&patient, &reader, HOUR_MS);
    let record = w.record(&author, &patient, "Astrocytoma");
    w.wait_state(CLINIC, &record, OpenState::Open);
    let row = w.sealed_row(CLINIC, &record).expect("the grantee's row");

    w.revoke(&patient, grant);
    w.wait_state(CLINIC, &record, OpenState::Elsewhere { home: HOSPITAL });
    assert!(w.sealed_row(CLINIC, &record).is_none());
    let holding = w.files_holding(CLINIC, &row);
    assert!(
        holding.is_empty(),
        "the dropped key's sealed row is still in {holding:?}"
    );
}

/// (c) keys.db behind chain.db: only the key store of a grantee is restored from a copy taken
/// before an erasure, its chain left current. At restart the key service processes the chain
/// from the copy's height before it answers any open or peer, deletes the erased key, and
/// empties the WAL: the old sealed row is in no file of its key store.
#[test]
fn held_3_a_key_store_restored_behind_its_chain_reapplies_the_erasure() {
    let mut w = World::new();
    let patient = Person::patient(HOSPITAL);
    let author = Person::doctor(CLINIC, "Oncology", "Dr Author");
    let reader = Person::doctor(PHARMACY, "Neurology", "Dr Reader");
    w.enroll(&[&patient, &author, &reader]);
    w.read_grant(&patient, &reader, HOUR_MS);
    let record = w.record(&author, &patient, "Medulloblastoma");
    w.wait_state(PHARMACY, &record, OpenState::Open);
    let row = w.sealed_row(PHARMACY, &record).unwrap();

    w.cluster.stop(PHARMACY);
    let keys_db = w.keys_db(PHARMACY);
    let copy = w.dir.path().join("pharmacy-keys-copy");
    std::fs::create_dir_all(&copy).unwrap();
    for suffix in ["", "-wal"] {
        let file = PathBuf::from(format!("{}{suffix}", keys_db.display()));
        if file.exists() {
            std::fs::copy(&file, copy.join(format!("keys.db{suffix}"))).unwrap();
        }
    }
    w.cluster.restart(PHARMACY).unwrap();
    let erased_at = w.erase(&patient, record, CLINIC);
    w.wait_state(PHARMACY, &record, OpenState::Erased);

    w.cluster.stop(PHARMACY);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", keys_db.display()));
        let saved = copy.join(format!("keys.db{suffix}"));
        if saved.exists() {
            std::fs::copy(saved, format!("{}{suffix}", keys_db.display())).unwrap();
        }
    }
    assert!(
        w.sealed_row(PHARMACY, &record).is_some(),
        "the copy holds it"
    );
    w.cluster.restart(PHARMACY).unwrap();
    // The first open, at the erasure's height, already finds it erased.
    let committed = w
        .node(HOSPITAL)
        .read(|chain| chain.transaction(&record))
        .unwrap()
        .unwrap();
    let opened =
        w.rt.block_on(
            w.node(PHARMACY)
                .open(erased_at, &[(committed.tx.header, committed.tx.body)]),
        )
        .unwrap();
    assert_eq!(opened[0].state, OpenState::Erased);
    assert!(w.sealed_row(PHARMACY, &record).is_none());
    assert_eq!(w.files_holding(PHARMACY, &row), Vec::<String>::new());
    // Asked by a party (the author), once it answers at all, it says erased.
    let mut id = 9_000;
    let replies = loop {
        id += 1;
        let replies = w.ask(CLINIC, PHARMACY, id, vec![record]);
        if replies != vec![KeyReply::Busy] {
            break replies;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(replies, vec![KeyReply::Erased]);
}
