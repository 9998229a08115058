//! The embedded cluster of the key tests (docs/SECURITY.md, "Confidential records"): four
//! validators going by one manual clock, each with its own operator key, and what the tests do
//! on it (enroll, grant, record, erase, open, read a key store's files). Shared by
//! `tests/keys.rs` and `tests/red_team10_keys.rs`; other test files compile it unused.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledger::tx::{AddRecord, AnswerErasure, Decision, RecordBody};
use ledger::{Meta, Queries, SignedTx, TxId};
use node::load::{Person, enroll, header};
use node::transport::MemoryNetwork;
use node::{
    Clock, Cluster, ClusterOptions, Frame, KeyFrame, KeyReply, NodeHandle, OpenState, Opened,
    Timing, Verdict, Wire,
};
use pbft::ReplicaId;

use super::{DataDir, data_dir, fast_timing, note, runtime};

pub const WAIT: Duration = Duration::from_secs(20);
pub const HOSPITAL: ReplicaId = 0;
pub const CLINIC: ReplicaId = 1;
pub const PHARMACY: ReplicaId = 2;
pub const INSURANCE: ReplicaId = 3;
pub const HOUR_MS: u64 = 3_600_000;

/// Every key frame the network carried, as the test saw it: `(from, to, frame)`.
pub type Seen = Arc<Mutex<Vec<(ReplicaId, ReplicaId, Frame)>>>;

/// Four validators going by one manual clock, each with its own operator key (hence key-store
/// key).
pub struct World {
    pub dir: DataDir,
    pub cluster: Cluster,
    pub rt: tokio::runtime::Runtime,
    pub clock: Clock,
    /// Every key frame the network carried: `(from, to, frame)`.
    pub seen: Seen,
}

impl World {
    pub fn new() -> Self {
        Self::with_timing(fast_timing())
    }

    pub fn with_timing(timing: Timing) -> Self {
        let rt = runtime();
        let dir = data_dir();
        let clock = Clock::manual(Clock::System.now_ms());
        let cluster = Cluster::start(ClusterOptions {
            clock: clock.clone(),
            ..ClusterOptions::new(dir.path(), timing)
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

    pub fn node(&self, id: ReplicaId) -> NodeHandle {
        self.cluster.handle(id).expect("the validator runs")
    }

    pub fn network(&self) -> &MemoryNetwork {
        self.cluster.network()
    }

    pub fn genesis_hash(&self) -> ledger::Hash {
        self.cluster.genesis().hash()
    }

    /// From now on `primary` hears no commit: the others commit its proposals and apply them
    /// without it, and it stays behind them.
    pub fn hold_back(&self, primary: ReplicaId) {
        self.network().filter(move |_, to, frame| {
            !(to == primary
                && matches!(&**frame, Wire::Consensus(signed)
                    if matches!(signed.message, pbft::Message::Commit(_))))
        });
    }

    /// Validator `id`'s node key (its folder `name`), to sign messages as it, or as a dishonest
    /// validator in its place.
    pub fn node_key(&self, id: ReplicaId, name: &str) -> ed25519_dalek::SigningKey {
        ledger::master::read_node_key(
            &self.dir.path().join(format!("{name}/node.key")),
            self.cluster.operator_key(id).unwrap(),
            name,
        )
        .unwrap()
    }

    /// A patient, an oncologist who writes in their history and a neurologist who may read
    /// it, each enrolled at the home given.
    pub fn cast(
        &self,
        patient: ReplicaId,
        author: ReplicaId,
        reader: ReplicaId,
    ) -> (Person, Person, Person) {
        let patient = Person::patient(patient);
        let author = Person::doctor(author, "Oncology", "Dr Author");
        let reader = Person::doctor(reader, "Neurology", "Dr Reader");
        self.enroll(&[&patient, &author, &reader]);
        (patient, author, reader)
    }

    /// A hospital patient's two records (`control`, `moved`) held by a clinic neurologist's
    /// home through a read grant of a minute; the clinic stopped, and the `moved` row's patient
    /// changed on disk to another patient's (a writer of `keys.db` without the operator key,
    /// docs/SECURITY.md §12.1 item 8). Answers the patient, `control` and `moved`.
    pub fn stopped_grantee_with_a_moved_row(&mut self) -> (Person, TxId, TxId) {
        let (patient, author, reader) = self.cast(HOSPITAL, HOSPITAL, CLINIC);
        let other = Person::patient(HOSPITAL);
        self.enroll(&[&other]);
        self.read_grant(&patient, &reader, 60_000);
        let control = self.record(&author, &patient, "Melanoma");
        let moved = self.record(&author, &patient, "Sarcoma");
        for record in [&control, &moved] {
            self.wait_state(CLINIC, record, OpenState::Open);
        }
        self.settle();
        assert_eq!(self.key_patient(CLINIC, &moved), Some(patient.id.to_vec()));
        self.cluster.stop(CLINIC);
        rusqlite::Connection::open(self.keys_db(CLINIC))
            .unwrap()
            .execute(
                "UPDATE data_keys SET patient = ?2 WHERE tx = ?1",
                rusqlite::params![moved.as_slice(), other.id.as_slice()],
            )
            .unwrap();
        (patient, control, moved)
    }

    pub fn enroll(&self, people: &[&Person]) {
        self.rt
            .block_on(enroll(&self.cluster.handles(), people, WAIT))
            .expect("enrolled");
        self.settle();
    }

    /// Waits until every running validator has applied what the furthest one has.
    pub fn settle(&self) {
        let height = self
            .cluster
            .handles()
            .iter()
            .map(|h| h.status().height)
            .max()
            .unwrap_or(0);
        self.settle_to(height);
    }

    /// Waits until every running validator has applied `height`.
    pub fn settle_to(&self, height: u64) {
        let handles = self.cluster.handles();
        wait_until("every validator to apply the head", || {
            handles.iter().all(|h| h.status().height >= height)
        });
    }

    /// Submits `tx` at validator `at` and waits until it is applied everywhere.
    pub fn applied(&self, at: ReplicaId, tx: SignedTx) -> TxId {
        let id = tx.id(&self.genesis_hash());
        self.applied_at(at, tx);
        id
    }

    /// [`World::applied`], answering the height of the block that applied it.
    pub fn applied_at(&self, at: ReplicaId, tx: SignedTx) -> u64 {
        let verdict = self
            .rt
            .block_on(self.node(at).submit_applied(tx, WAIT))
            .expect("submitted");
        let Verdict::Applied { height, .. } = verdict else {
            panic!("not applied: {verdict:?}");
        };
        self.settle_to(height);
        height
    }

    /// `patient` asks, on their device at their home, for `tx` to be erased, and its sealer
    /// `sealer` answers `Erase`: the height of the answer's block.
    pub fn erase(&self, patient: &Person, tx: TxId, sealer: ReplicaId) -> u64 {
        let request = self.applied(
            patient.home,
            patient.request_erasure(&self.genesis_hash(), tx),
        );
        let node = self.node(sealer);
        let meta = Meta::AnswerErasure(AnswerErasure {
            request,
            decision: Decision::Erase,
        });
        let answer = node.sign_as_validator(
            header(meta, ledger::Signer::Validator { index: sealer }),
            Vec::new(),
        );
        self.applied_at(sealer, answer)
    }

    /// The `patient` column of `tx`'s row in `at`'s `keys.db`, if it holds the key.
    pub fn key_patient(&self, at: ReplicaId, tx: &TxId) -> Option<Vec<u8>> {
        use rusqlite::OptionalExtension;
        rusqlite::Connection::open(self.keys_db(at))
            .unwrap()
            .query_row(
                "SELECT patient FROM data_keys WHERE tx = ?1",
                [tx.as_slice()],
                |row| row.get(0),
            )
            .optional()
            .unwrap()
    }

    /// The sealed key column of `tx`'s row in validator `at`'s `keys.db`.
    pub fn sealed_row(&self, at: ReplicaId, tx: &TxId) -> Option<Vec<u8>> {
        let conn = rusqlite::Connection::open(self.keys_db(at)).unwrap();
        conn.query_row(
            "SELECT sealed_key FROM data_keys WHERE tx = ?1",
            [tx.as_slice()],
            |row| row.get(0),
        )
        .ok()
    }

    /// A record by `doctor` in `patient`'s history: the patient's write grant sealed and
    /// submitted at their home, the record sealed and submitted at the doctor's.
    pub fn record(&self, doctor: &Person, patient: &Person, diagnosis: &str) -> TxId {
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

    /// `patient`'s write grant to `doctor`, sealed at the patient's home and applied.
    pub fn write_grant(&self, patient: &Person, doctor: &Person) -> TxId {
        let grant = self
            .rt
            .block_on(patient.write_grant(&self.node(patient.home), &doctor.id, "a visit"))
            .unwrap();
        self.applied(patient.home, grant)
    }

    /// `patient`'s read grant to `doctor` for `duration_ms`, on the patient's device.
    pub fn sealed_read_grant(
        &self,
        patient: &Person,
        doctor: &Person,
        duration_ms: u64,
    ) -> SignedTx {
        self.rt
            .block_on(patient.read_grant(
                &self.node(patient.home),
                &doctor.id,
                duration_ms,
                "a second opinion",
            ))
            .unwrap()
    }

    pub fn read_grant(&self, patient: &Person, doctor: &Person, duration_ms: u64) -> TxId {
        let grant = self.sealed_read_grant(patient, doctor, duration_ms);
        self.applied(patient.home, grant)
    }

    pub fn revoke(&self, patient: &Person, grant: TxId) {
        let revoke = patient.revoke(&self.genesis_hash(), grant);
        self.applied(patient.home, revoke);
    }

    /// `tx` as validator `at` opens it now, from its chain's head (`None`: not on its chain).
    pub fn try_open(&self, at: ReplicaId, tx: &TxId) -> Option<Opened> {
        let node = self.node(at);
        let (height, committed) = node
            .read(|chain| Ok((chain.head()?.0, chain.transaction(tx)?)))
            .unwrap();
        let committed = committed?;
        let mut opened = self
            .rt
            .block_on(node.open(height, &[(committed.tx.header, committed.tx.body)]))
            .expect("opened");
        opened.pop()
    }

    /// `tx` as validator `at` opens it at `height` (waiting until its key service has
    /// processed that height), its header and body read from the first validator whose chain
    /// has it.
    pub fn open_at(&self, at: ReplicaId, tx: &TxId, height: u64) -> Opened {
        let committed = self
            .cluster
            .handles()
            .iter()
            .find_map(|node| node.read(|chain| chain.transaction(tx)).unwrap())
            .expect("the transaction is on a chain");
        self.rt
            .block_on(
                self.node(at)
                    .open(height, &[(committed.tx.header, committed.tx.body)]),
            )
            .expect("opened")
            .pop()
            .expect("one answer")
    }

    pub fn open(&self, at: ReplicaId, tx: &TxId) -> Opened {
        self.try_open(at, tx)
            .expect("the transaction is on this validator's chain")
    }

    /// Waits until validator `at` has `tx` on its chain and sees it in `state`.
    pub fn wait_state(&self, at: ReplicaId, tx: &TxId, state: OpenState) -> Opened {
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

    /// The transactions whose keys validator `at`'s `keys.db` holds, read from the file.
    pub fn key_rows(&self, at: ReplicaId) -> Vec<TxId> {
        let conn = rusqlite::Connection::open(self.keys_db(at)).unwrap();
        let mut stmt = conn.prepare("SELECT tx FROM data_keys").unwrap();
        stmt.query_map([], |row| row.get::<_, Vec<u8>>(0))
            .unwrap()
            .map(|tx| tx.unwrap().try_into().unwrap())
            .collect()
    }

    /// The wanted heights validator `at`'s `keys.db` holds, and whether they were written with
    /// its processed height (so that a start reads those blocks only).
    pub fn wanted_heights(&self, at: ReplicaId) -> (Vec<u64>, bool) {
        use rusqlite::OptionalExtension;
        let conn = rusqlite::Connection::open(self.keys_db(at)).unwrap();
        let meta = |key: &str| -> Option<Vec<u8>> {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
                .unwrap()
        };
        let with_processed = meta("wanted_heights_at").is_some()
            && meta("wanted_heights_at") == meta("processed_height");
        let mut stmt = conn
            .prepare("SELECT height FROM wanted_heights ORDER BY height")
            .unwrap();
        let heights = stmt
            .query_map([], |row| row.get::<_, i64>(0))
            .unwrap()
            .map(|height| height.unwrap() as u64)
            .collect();
        (heights, with_processed)
    }

    pub fn keys_db(&self, at: ReplicaId) -> PathBuf {
        let name = &self.cluster.genesis().validators()[at as usize].name;
        self.dir.path().join(name).join("keys.db")
    }

    /// How many times `needle` occurs in validator `at`'s key store files (database, WAL, shm).
    pub fn occurrences(&self, at: ReplicaId, needle: &[u8]) -> usize {
        self.keys_db_files(at)
            .iter()
            .map(|file| {
                let bytes = std::fs::read(file).unwrap_or_default();
                bytes
                    .windows(needle.len())
                    .filter(|window| *window == needle)
                    .count()
            })
            .sum()
    }

    /// The files of validator `at`'s key store: the database, its WAL and shared memory.
    pub fn keys_db_files(&self, at: ReplicaId) -> Vec<PathBuf> {
        ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| PathBuf::from(format!("{}{suffix}", self.keys_db(at).display())))
            .collect()
    }

    /// Two records of `doctor` for `patient` (under a new write grant) sealed at the hospital,
    /// their keys stored there, due in a second, neither submitted: their ids.
    pub fn unsent_seals(&self, patient: &Person, doctor: &Person) -> [TxId; 2] {
        let meta = record_meta(patient, doctor, self.write_grant(patient, doctor));
        ["forged applied", "control"].map(|text| {
            let mut near = header(meta.clone(), doctor.signer());
            near.not_after_ms = self.clock.now_ms() + 1_000;
            let (near, stored) = self
                .rt
                .block_on(self.node(HOSPITAL).seal(near, &note(text).to_bytes()))
                .unwrap();
            doctor
                .sign_header(&self.genesis_hash(), near, stored)
                .id(&self.genesis_hash())
        })
    }

    /// Validator `at`'s key service's counters (since its last start).
    pub fn key_counters(&self, at: ReplicaId) -> node::KeyCounters {
        self.node(at).key_status().counters
    }

    /// A hospital patient's record by a hospital doctor, the hospital its sealer and the
    /// patient's home, open there and settled: `(patient, author, record)`.
    pub fn record_at_home(&self, diagnosis: &str) -> (Person, Person, TxId) {
        let patient = Person::patient(HOSPITAL);
        let author = Person::doctor(HOSPITAL, "Oncology", "Dr Home");
        self.enroll(&[&patient, &author]);
        let record = self.record(&author, &patient, diagnosis);
        self.wait_state(HOSPITAL, &record, OpenState::Open);
        self.settle();
        (patient, author, record)
    }

    /// Runs `sql` on the stopped validator `at`'s `keys.db`, as whoever can write the file
    /// without the operator key.
    pub fn edit_keys_db(&self, at: ReplicaId, sql: &str, params: impl rusqlite::Params) {
        rusqlite::Connection::open(self.keys_db(at))
            .unwrap()
            .execute(sql, params)
            .unwrap();
    }

    /// Appends to the stopped validator `at`'s `keys.db`, under the next `seq`, the row of `tx`
    /// that `from` (a copy of a `keys.db`) holds: a writer of the disk putting a row back from
    /// an older copy of the file, or, `new_key_id`, copying one under a random key id.
    pub fn put_row_back(&self, at: ReplicaId, from: &std::path::Path, tx: &TxId, new_key_id: bool) {
        let conn = rusqlite::Connection::open(self.keys_db(at)).unwrap();
        conn.execute("ATTACH ?1 AS old", [from.to_str().unwrap()])
            .unwrap();
        let key_id = if new_key_id {
            "randomblob(32)"
        } else {
            "key_id"
        };
        let copied = conn
            .execute(
                &format!(
                    "INSERT INTO main.data_keys
                        (seq, tx, patient, key_id, not_after_ms, sealed_key, on_chain, facts_tag)
                     SELECT (SELECT coalesce(max(seq), 0) + 1 FROM main.data_keys), tx, patient,
                        {key_id}, not_after_ms, sealed_key, on_chain, facts_tag
                     FROM old.data_keys WHERE tx = ?1"
                ),
                [tx.as_slice()],
            )
            .unwrap();
        assert_eq!(copied, 1);
    }

    /// Copies `at`'s `chain.db` and `node.db` (stopped, then restarted): the copy's folder.
    pub fn copy_chain_while_stopped(&mut self, at: ReplicaId) -> PathBuf {
        let folder = self.keys_db(at).parent().unwrap().to_path_buf();
        let backup = folder.with_file_name("chain-backup");
        std::fs::create_dir_all(&backup).unwrap();
        self.cluster.stop(at);
        for store in ["chain.db", "node.db"] {
            for suffix in ["", "-wal"] {
                let file = format!("{store}{suffix}");
                if folder.join(&file).exists() {
                    std::fs::copy(folder.join(&file), backup.join(&file)).unwrap();
                }
            }
        }
        self.cluster.restart(at).unwrap();
        backup
    }

    /// Stops `at` (if it runs) and puts the copied `chain.db` and `node.db` back in its folder,
    /// keeping its `keys.db` (what `medchain restore` does with a newer key store, §5.6; or a
    /// writer of the folder putting an old backup's chain in place).
    pub fn restore_chain_keep_keys(&mut self, at: ReplicaId, backup: &std::path::Path) {
        self.cluster.stop(at);
        let folder = self.keys_db(at).parent().unwrap().to_path_buf();
        for store in ["chain.db", "node.db"] {
            for suffix in ["", "-wal", "-shm"] {
                let file = format!("{store}{suffix}");
                let _ = std::fs::remove_file(folder.join(&file));
                if backup.join(&file).exists() {
                    std::fs::copy(backup.join(&file), folder.join(&file)).unwrap();
                }
            }
        }
    }

    /// Validator `at`, stopped, loses its key store.
    pub fn lose_keys_db(&self, at: ReplicaId) {
        for file in self.keys_db_files(at) {
            let _ = std::fs::remove_file(file);
        }
    }
    /// `asker` (played by the test) asks `holder` for `txs` under request id `id`: the
    /// holder's replies.
    pub fn ask(
        &self,
        asker: ReplicaId,
        holder: ReplicaId,
        id: u64,
        txs: Vec<TxId>,
    ) -> Vec<KeyReply> {
        let frame = Frame::new(Wire::Keys(KeyFrame::Request { request: id, txs }));
        assert!(self.network().inject(asker, holder, frame));
        let mut replies = None;
        wait_until("the holder's answer", || {
            replies = self.answer_of(holder, asker, id);
            replies.is_some()
        });
        replies.unwrap()
    }

    /// `from`'s answer to `to`'s request `id`, once the network carried it.
    pub fn answer_of(&self, from: ReplicaId, to: ReplicaId, id: u64) -> Option<Vec<KeyReply>> {
        self.answers()
            .into_iter()
            .find(|(f, t, request, _)| (*f, *t, *request) == (from, to, id))
            .map(|(_, _, _, replies)| replies)
    }

    /// The next request `victim` sends to `holder` asking for `tx`, seen after `after` frames.
    pub fn request_for(
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

    /// Key frames the network carried so far (a mark for [`World::request_for`]).
    pub fn frames_seen(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Keys `from` sent `to` in its answers so far.
    pub fn keys_sent(&self, from: ReplicaId, to: ReplicaId) -> usize {
        self.answers()
            .iter()
            .filter(|(f, t, _, _)| (*f, *t) == (from, to))
            .flat_map(|(_, _, _, replies)| replies)
            .filter(|reply| matches!(reply, KeyReply::Key(_)))
            .count()
    }

    /// The empty offers `from` sent `to` so far: one per start of its key service that
    /// reached `to` (a greeting before its first frame).
    pub fn greetings(&self, from: ReplicaId, to: ReplicaId) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(f, t, frame)| {
                (*f, *t) == (from, to)
                    && matches!(&**frame, Wire::Keys(KeyFrame::Offer { txs }) if txs.is_empty())
            })
            .count()
    }

    /// The ids `from` offered `to` so far (`KeyFrame::Offer`).
    pub fn offers(&self, from: ReplicaId, to: ReplicaId) -> Vec<TxId> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(f, t, _)| (*f, *t) == (from, to))
            .filter_map(|(_, _, frame)| match &**frame {
                Wire::Keys(KeyFrame::Offer { txs }) => Some(txs.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Every key answer the network carried so far: `(from, to, request, replies)`.
    pub fn answers(&self) -> Vec<(ReplicaId, ReplicaId, u64, Vec<KeyReply>)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(from, to, frame)| match &**frame {
                Wire::Keys(KeyFrame::Answer {
                    request, replies, ..
                }) => Some((*from, *to, *request, replies.clone())),
                _ => None,
            })
            .collect()
    }
}

/// The metadata of a record by `doctor` (in their department) in `patient`'s history, under
/// the write grant `grant`: for tests that seal a record by hand.
pub fn record_meta(patient: &Person, doctor: &Person, grant: TxId) -> Meta {
    Meta::AddRecord(AddRecord {
        patient: patient.id,
        doctor: doctor.id,
        department: doctor.department.clone().unwrap_or_default(),
        grant,
    })
}

pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn diagnosis(opened: &Opened) -> String {
    let plain = opened.plain.as_ref().expect("opened");
    RecordBody::from_bytes(plain).unwrap().diagnosis
}
