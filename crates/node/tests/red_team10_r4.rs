//! Fourth red-team round on issue 10 (confidential records), on the key service after
//! docs/SECURITY.md §12.1's fallbacks (NORMAL commits, wanted keys in memory, holders answering
//! from their index, `keys.db` schema 3) and §5.6's key store kept ahead of a restored chain.
//! `red_team_held_*` tests pass: a defence that held; `#[ignore = "BREAK: .."]` and
//! `#[ignore = "WEAKNESS: .."]` tests assert the promise and fail on the code as it is (run them
//! with `--ignored`).
//!
//! The test plays the dishonest validator: it withholds that validator's key frames and injects
//! its own (`MemoryNetwork`), and seals bodies by hand under keys it chose (what that
//! validator's operator holds).
//!
//! Both breaks are held since (renamed `red_team_held_*`); the two weaknesses are accepted
//! (docs/SECURITY.md §16).
//!
//! Validators: 0 hospital, 1 clinic, 2 pharmacy, 3 insurance.

mod common;

use std::sync::{Arc, Mutex};

use common::enrollment;
use common::world::{
    CLINIC, HOSPITAL, HOUR_MS, INSURANCE, PHARMACY, WAIT, World, diagnosis, record_meta, wait_until,
};
use ledger::seal::{DataKey, seal_with};
use ledger::{Queries, TxId};
use node::load::{Person, header};
use node::{Frame, KeyFrame, KeyReply, OpenState, Wire, WireKey};
use pbft::ReplicaId;

/// A record by `author` in `patient`'s history, sealed by hand under `key` (the test plays the
/// author's hospital, its sealer: the hospital's key service never sees the key) and applied
/// everywhere.
fn record_sealed_by_hand(
    w: &World,
    author: &Person,
    patient: &Person,
    key: &DataKey,
    diagnosis: &str,
) -> TxId {
    let grant = w.write_grant(patient, author);
    let genesis_hash = w.genesis_hash();
    let mut record_header = header(record_meta(patient, author, grant), author.signer());
    let body = seal_with(
        &genesis_hash,
        &mut record_header,
        &common::note(diagnosis).to_bytes(),
        key,
        rand::random(),
    )
    .unwrap();
    w.applied(
        author.home,
        author.sign_header(&genesis_hash, record_header, body),
    )
}

/// The height and `wanted_from` that validator `at`'s `keys.db` holds (read from the file).
fn stored_heights(w: &World, at: ReplicaId) -> (u64, Option<u64>) {
    let conn = rusqlite::Connection::open(w.keys_db(at)).unwrap();
    let height = |key: &str| -> Option<u64> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
            r.get::<_, Vec<u8>>(0)
        })
        .ok()
        .map(|bytes| u64::from_le_bytes(bytes.try_into().unwrap()))
    };
    (
        height("processed_height").unwrap_or(0),
        height("wanted_from"),
    )
}

/// Requests `victim` sent `holder` so far: `(request, txs)`, read from the frame log.
fn requests(
    w: &World,
    victim: ReplicaId,
    holder: ReplicaId,
    after: usize,
) -> Vec<(u64, Vec<TxId>)> {
    w.seen.lock().unwrap()[after..]
        .iter()
        .filter_map(|(from, to, frame)| match &**frame {
            Wire::Keys(KeyFrame::Request { request, txs }) if (*from, *to) == (victim, holder) => {
                Some((*request, txs.clone()))
            }
            _ => None,
        })
        .collect()
}

/// The test, playing `holder`, answers `victim`'s first request for `tx` after `after` key
/// frames with `key` (every other id `NotHeld`).
fn answer_with_key(
    w: &World,
    (holder, victim): (ReplicaId, ReplicaId),
    after: usize,
    tx: &TxId,
    key: &DataKey,
) {
    let mut found = None;
    wait_until("the victim to ask for the key", || {
        found = requests(w, victim, holder, after)
            .into_iter()
            .find(|(_, txs)| txs.contains(tx));
        found.is_some()
    });
    let (request, txs) = found.unwrap();
    let replies = txs
        .iter()
        .map(|asked| match asked == tx {
            true => KeyReply::Key(WireKey(key.clone())),
            false => KeyReply::NotHeld,
        })
        .collect();
    let answer = Frame::new(Wire::Keys(KeyFrame::Answer {
        request,
        height: 0,
        replies,
    }));
    assert!(w.network().inject(holder, victim, answer));
}

/// BREAK 1: an erasure a key store has applied is undone when its chain is restored from a
/// backup taken before it, and a dishonest party plants the erased key back.
///
/// §5.6 (after round 3's break 3): `medchain restore` keeps a `keys.db` newer than the backup's
/// `chain.db`; the store "has applied every erasure up to its height already", and the key
/// service gives no key until the chain has caught up. But while the chain is behind, the
/// service still wants and stores keys: at start `want_again` reads the blocks from
/// `wanted_from` (any key still waited for, older than the erased record, puts it below) up to
/// the restored chain's head, on which the erasure is not yet, so the erased record is wanted
/// again; `receive` checks erasure on that same old chain. Its author (a dishonest party that
/// kept the key, as §7.2 allows) answers with the key, which matches the commitment: the
/// patient's home stores it. The erasure's block is at or below the store's processed height,
/// so it is never processed again: the key stays for good, and `lookup` returns a held key
/// before it looks at erasure, so the home opens the erased record to every reader.
/// §11 says V cannot "make a correct validator keep a key, serve an erased record after the
/// erasure's block, or store a key a lagging peer still offers".
///
/// Held since: while the chain is behind the store the service wants, asks for and stores no
/// key; wanted keys are read again once it has caught up (with the erasure), and `lookup`
/// checks the chain's erasure before it returns a held key (§5.6).
#[test]
fn red_team_held_an_erased_key_does_not_come_back_into_a_store_ahead_of_its_restored_chain() {
    let mut w = World::new();
    let patient = Person::patient(HOSPITAL);
    let author = Person::doctor(CLINIC, "Oncology", "Dr Author");
    w.enroll(&[&patient, &author]);

    // The clinic (played by the test) gives the home no key: an older record stays wanted.
    let withheld: Arc<Mutex<bool>> = Arc::new(Mutex::new(false));
    let hold_blocks = withheld.clone();
    w.network().filter(move |from, to, frame| {
        let keys_to_home = from == CLINIC && to == HOSPITAL && matches!(**frame, Wire::Keys(_));
        let blocks_to_home =
            to == HOSPITAL && matches!(**frame, Wire::Blocks(_)) && *hold_blocks.lock().unwrap();
        !keys_to_home && !blocks_to_home
    });
    let older = w.record(&author, &patient, "Awaited");
    let key = DataKey::generate();
    let erased = record_sealed_by_hand(&w, &author, &patient, &key, "Kaposi sarcoma 9f3d");
    assert!(matches!(
        w.open(HOSPITAL, &older).state,
        OpenState::Waiting { from: CLINIC, .. }
    ));
    // The home's chain is backed up; then the record is erased everywhere.
    let backup = w.copy_chain_while_stopped(HOSPITAL);
    let erased_at = w.erase(&patient, erased, CLINIC);
    w.wait_state(HOSPITAL, &erased, OpenState::Erased);
    wait_until("the home's keys.db to record the erasure's height", || {
        stored_heights(&w, HOSPITAL).0 >= erased_at
    });
    let (processed, wanted_from) = stored_heights(&w, HOSPITAL);
    assert!(wanted_from.is_some_and(|from| from <= erased_at));
    assert!(!w.key_rows(HOSPITAL).contains(&erased));

    // Restored: the chain from before the erasure, the newer keys.db kept; blocks held back.
    w.restore_chain_keep_keys(HOSPITAL, &backup);
    *withheld.lock().unwrap() = true;
    let mark = w.frames_seen();
    w.cluster.restart(HOSPITAL).unwrap();
    assert_eq!(w.node(HOSPITAL).key_status().resumed_from, processed);
    assert!(w.node(HOSPITAL).status().height < erased_at);

    // The dishonest author waits to be asked for the erased record's key: while its chain is
    // behind its key store the home wants nothing, so asks for nothing (a few timer turns),
    // and an answer it did not ask for is dropped.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(requests(&w, HOSPITAL, CLINIC, mark), []);
    let unasked = Frame::new(Wire::Keys(KeyFrame::Answer {
        request: 0,
        height: 0,
        replies: vec![KeyReply::Key(WireKey(key.clone()))],
    }));
    assert!(w.network().inject(CLINIC, HOSPITAL, unasked));
    wait_until("the home to drop the answer", || {
        w.node(HOSPITAL).key_status().counters.keys_answers_dropped >= 1
    });
    assert_eq!(w.node(HOSPITAL).key_status().counters.keys_received, 0);

    // The chain catches up.
    *withheld.lock().unwrap() = false;
    let hospital = w.node(HOSPITAL);
    let clinic = w.node(CLINIC);
    wait_until("the home to catch up", || {
        w.rt.block_on(clinic.submit_applied(enrollment(&clinic), WAIT))
            .unwrap();
        hospital.status().height > processed && !hospital.status().recovering
    });
    // Caught up, the home wants the older record's key again (not the erased one's): the
    // author, answering that request with the erased record's key, is refused.
    answer_with_key(&w, (CLINIC, HOSPITAL), mark, &older, &key);
    w.network().clear_filter();
    assert_eq!(
        diagnosis(&w.wait_state(HOSPITAL, &older, OpenState::Open)),
        "Awaited"
    );
    assert!(
        requests(&w, HOSPITAL, CLINIC, mark)
            .iter()
            .all(|(_, txs)| !txs.contains(&erased))
    );
    let opened = w.open(HOSPITAL, &erased);
    let shown = opened.plain.as_ref().map(|_| diagnosis(&opened));
    let held = w.key_rows(HOSPITAL).contains(&erased);
    assert!(
        !held && opened.state == OpenState::Erased,
        "the home holds the erased record's key again ({held}) and opens it as {:?}: {shown:?}",
        opened.state
    );
}

/// Puts the stopped validator `at`'s `keys.db` back in schema 2 as main before §12.1 wrote
/// it (`data_keys` keyed by transaction, `key_id UNIQUE`, indexed by patient, `on_chain`, a
/// `wanted` table; no epoch index), then vacuums it so that each row's bytes are in the file once.
fn to_schema_2(w: &World, at: ReplicaId) {
    let conn = rusqlite::Connection::open(w.keys_db(at)).unwrap();
    conn.execute_batch(
        "DROP TABLE key_runs;
        DROP TABLE key_filters;
        DELETE FROM meta WHERE key = 'keys_held';
        CREATE TABLE data_keys_2 (
            tx BLOB PRIMARY KEY, patient BLOB NOT NULL, key_id BLOB NOT NULL UNIQUE,
            on_chain INTEGER NOT NULL, not_after_ms INTEGER NOT NULL, sealed_key BLOB NOT NULL
        ) WITHOUT ROWID;
        INSERT INTO data_keys_2
            SELECT tx, patient, key_id, 1, not_after_ms, sealed_key FROM data_keys;
        DROP TABLE data_keys;
        ALTER TABLE data_keys_2 RENAME TO data_keys;
        CREATE INDEX data_keys_by_patient ON data_keys(patient);
        CREATE TABLE wanted (
            tx BLOB PRIMARY KEY, patient BLOB NOT NULL, source INTEGER NOT NULL,
            since_ms INTEGER NOT NULL, tries INTEGER NOT NULL, next_try_ms INTEGER NOT NULL
        ) WITHOUT ROWID;
        DELETE FROM meta WHERE key = 'wanted_from';
        PRAGMA user_version = 2;",
    )
    .unwrap();
    conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
}

/// Held: a schema 2 `keys.db` migrated at open (§12.1 item 4) keeps every key and leaves no
/// second copy of any row: the old B-trees' pages are zeroed as they are dropped
/// (`secure_delete`) and the WAL is emptied at open. An erasure after the migration then
/// leaves the erased key's sealed bytes in no file of the store, and the wanted keys of the
/// dropped `wanted` table are wanted again (no `wanted_from`: every block is read again).
#[test]
fn red_team_held_a_migrated_schema_2_store_keeps_its_keys_and_leaves_no_copy() {
    let mut w = World::new();
    let patient = Person::patient(HOSPITAL);
    let author = Person::doctor(CLINIC, "Oncology", "Dr Author");
    w.enroll(&[&patient, &author]);
    let records: Vec<TxId> = (0..24)
        .map(|i| w.record(&author, &patient, &format!("Finding {i}")))
        .collect();
    for record in &records {
        w.wait_state(HOSPITAL, record, OpenState::Open);
    }
    // One more record whose key the clinic withholds: wanted across the migration.
    w.network().filter(|from, to, frame| {
        !(from == CLINIC && to == HOSPITAL && matches!(**frame, Wire::Keys(_)))
    });
    let awaited = w.record(&author, &patient, "Awaited");
    w.cluster.stop(HOSPITAL);
    to_schema_2(&w, HOSPITAL);
    let rows: Vec<Vec<u8>> = records
        .iter()
        .map(|record| w.sealed_row(HOSPITAL, record).expect("a sealed row"))
        .collect();
    // Schema 2's B-tree keyed by random ids leaves stale copies of rows where pages split.
    let before: usize = rows.iter().map(|row| w.occurrences(HOSPITAL, row)).sum();
    eprintln!(
        "copies of {} rows in the schema 2 file: {before}",
        rows.len()
    );

    w.cluster.restart(HOSPITAL).unwrap();
    let mut held = w.key_rows(HOSPITAL);
    held.sort();
    let mut expected = records.clone();
    expected.sort();
    assert!(expected.iter().all(|record| held.contains(record)));
    for (record, row) in records.iter().zip(&rows) {
        assert_eq!(
            w.occurrences(HOSPITAL, row),
            1,
            "a second copy of {}'s row after the migration",
            ledger::short_hex(record)
        );
    }
    assert!(matches!(
        w.open(HOSPITAL, &awaited).state,
        OpenState::Waiting { from: CLINIC, .. }
    ));
    assert!(w.node(HOSPITAL).key_status().waiting >= 1);
    w.network().clear_filter();

    for i in [0, 11, 23] {
        w.erase(&patient, records[i], CLINIC);
        w.wait_state(HOSPITAL, &records[i], OpenState::Erased);
        assert_eq!(
            w.occurrences(HOSPITAL, &rows[i]),
            0,
            "the erased key's sealed row is still in a file of the store"
        );
    }
    assert_eq!(
        diagnosis(&w.wait_state(HOSPITAL, &awaited, OpenState::Open)),
        "Awaited"
    );
}

/// Every answer `from` sent `to` under one of the request ids `ids`: `(height, replies)`.
fn answers_to(
    w: &World,
    from: ReplicaId,
    to: ReplicaId,
    ids: &std::ops::Range<u64>,
) -> Vec<(u64, Vec<KeyReply>)> {
    w.seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(f, t, frame)| match &**frame {
            Wire::Keys(KeyFrame::Answer {
                request,
                height,
                replies,
            }) if (*f, *t) == (from, to) && ids.contains(request) => {
                Some((*height, replies.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Held: a revoked grantee racing its revocation against the home's in-memory index
/// (§12.1 item 3). The insurer, a grantee, asks the home for a record's key every few
/// milliseconds while the revocation commits. Every key it gets comes in an answer whose
/// processed height is below the revocation's (the index is one state, the chain's at that
/// height: a key it could have asked for a block earlier); once the home's key service has
/// processed the revocation it answers `NotEntitled`, and a record added after the revocation
/// is never given, however fast it asks.
#[test]
fn red_team_held_a_grantee_racing_its_revocation_gets_nothing_past_it() {
    let w = World::new();
    let patient = Person::patient(HOSPITAL);
    let author = Person::doctor(HOSPITAL, "Oncology", "Dr Home");
    let reader = Person::doctor(INSURANCE, "Claims", "Dr Insurer");
    w.enroll(&[&patient, &author, &reader]);
    let before = w.record(&author, &patient, "Myeloma");
    let grant = w.read_grant(&patient, &reader, HOUR_MS);
    w.wait_state(INSURANCE, &before, OpenState::Open);

    let home = w.node(HOSPITAL);
    let revoke = patient.revoke(&w.genesis_hash(), grant);
    let submitted = w.rt.spawn({
        let home = home.clone();
        async move { home.submit_applied(revoke, WAIT).await }
    });
    let ids = 9_000_000..9_100_000;
    let mut id = ids.start;
    let mut ask = |txs: Vec<TxId>| {
        let frame = Frame::new(Wire::Keys(KeyFrame::Request { request: id, txs }));
        // A full inbox drops a frame, as it would a flood's (a loaded machine fills it): the
        // asker sends it again, so that every request counted below is one the home read.
        while !w.network().inject(INSURANCE, HOSPITAL, frame.clone()) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        id += 1;
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    while !submitted.is_finished() {
        ask(vec![before]);
    }
    let revoked_at = match w.rt.block_on(submitted).unwrap().unwrap() {
        node::Verdict::Applied { height, .. } => height,
        verdict => panic!("not applied: {verdict:?}"),
    };
    let after = w.record(&author, &patient, "Myeloma, relapse");
    for _ in 0..50 {
        ask(vec![before, after]);
    }
    wait_until("the home to answer every request", || {
        answers_to(&w, HOSPITAL, INSURANCE, &ids).len() as u64 == id - ids.start
    });
    let answers = answers_to(&w, HOSPITAL, INSURANCE, &ids);
    for (height, replies) in &answers {
        if replies
            .iter()
            .any(|reply| matches!(reply, KeyReply::Key(_)))
        {
            assert!(*height < revoked_at, "a key past the revocation: {height}");
        }
        if *height >= revoked_at {
            assert!(
                replies.iter().all(|r| *r == KeyReply::NotEntitled),
                "{replies:?}"
            );
        }
        if replies.len() == 2 {
            assert!(!matches!(replies[1], KeyReply::Key(_)), "a record after it");
        }
    }
    assert!(answers.iter().any(|(height, _)| *height >= revoked_at));
    assert!(
        answers
            .iter()
            .any(|(_, replies)| matches!(replies[0], KeyReply::Key(_))),
        "the race began while the grant lived"
    );
}

/// Held: a crash between an erasure's block in `chain.db` and `keys.db`'s NORMAL commit (the
/// key store put back as before the erasure, as a power loss can leave it). At start the index
/// reads the erasure from the chain and the service processes the lost blocks again before it
/// takes any frame: a party asking the instant the validator is back gets `Erased` (or `Busy`),
/// never the key, and a read at the erasure's height finds it erased and its row gone.
#[test]
fn red_team_held_an_erasure_lost_in_a_crash_is_applied_before_any_answer() {
    let mut w = World::new();
    let (patient, author, reader) = w.cast(HOSPITAL, CLINIC, PHARMACY);
    w.read_grant(&patient, &reader, HOUR_MS);
    let record = w.record(&author, &patient, "Ependymoma");
    w.wait_state(PHARMACY, &record, OpenState::Open);
    w.cluster.stop(PHARMACY);
    let kept = w.dir.path().join("pharmacy-keys-before-erasure");
    std::fs::create_dir_all(&kept).unwrap();
    for file in w.keys_db_files(PHARMACY) {
        if file.exists() {
            std::fs::copy(&file, kept.join(file.file_name().unwrap())).unwrap();
        }
    }
    w.cluster.restart(PHARMACY).unwrap();
    let erased_at = w.erase(&patient, record, CLINIC);
    w.wait_state(PHARMACY, &record, OpenState::Erased);

    w.cluster.stop(PHARMACY);
    for file in w.keys_db_files(PHARMACY) {
        let _ = std::fs::remove_file(&file);
        let before = kept.join(file.file_name().unwrap());
        if before.exists() {
            std::fs::copy(&before, &file).unwrap();
        }
    }
    assert!(
        w.key_rows(PHARMACY).contains(&record),
        "the erasure is lost"
    );
    w.cluster.restart(PHARMACY).unwrap();
    // The author, a party, asks at once.
    let replies = w.ask(CLINIC, PHARMACY, 4242, vec![record]);
    assert!(
        matches!(replies.as_slice(), [KeyReply::Erased | KeyReply::Busy]),
        "{replies:?}"
    );
    assert_eq!(
        w.open_at(PHARMACY, &record, erased_at).state,
        OpenState::Erased
    );
    assert!(!w.key_rows(PHARMACY).contains(&record));
}

/// WEAKNESS 2: `secure_delete` does not reach every copy of a row. §7.2 step 3 says an
/// erasure deletes the key's row "(secure delete: the freed bytes are zeroed in the file)",
/// then empties the WAL, and `tests/keys.rs` `erasure_deletes_the_key_on_every_correct_validator`
/// checks that the sealed row is in no file. SQLite zeroes a deleted cell and a freed page, but
/// when a delete leaves a leaf page under a third full, `balance_nonroot` moves cells between
/// siblings and, when it cannot edit a page in place, rebuilds it (`rebuildPage`) without
/// clearing the gap between its cell pointers and its new content: the moved cells' old bytes
/// stay there, a copy of a live row outside any row. When that row is erased later, its cell is
/// zeroed and the stale copy is not. Schema 3's `data_keys` (a rowid table, appended to, §12.1
/// item 4) is not spared: deletions come in bunches at a grant's end, then an erasure.
///
/// Shown on SQLite directly (the product's bundled SQLite, `keys.db`'s pragmas and
/// `data_keys`'s columns; the store itself is private to `node`), deterministically: a grantee
/// holds 150 keys, a grant's end drops two in three, then the patient erases the records whose
/// rows were moved (a second copy is in the file),
/// each followed by `wal_checkpoint(TRUNCATE)`. For 3 of the 40 seeds (1, 14, 18) erased rows'
/// sealed bytes are still in the file. What is left is sealed under the key-store key (a thief also
/// needs the operator key, or obtains it later: §15 q4), hence low severity. Fix: after
/// deleting keys, rewrite the store (`VACUUM`, which the WAL truncation then makes durable) or
/// copy it (`VACUUM INTO` a new file, fsync, rename), or seal rows under a key-store key
/// rotated at each erasure batch, so that stale bytes no longer open.
#[test]
#[ignore = "WEAKNESS: SQLite's page rebuilds leave stale copies of key rows that secure_delete never zeroes"]
fn weakness_2_an_erased_keys_row_can_survive_in_a_rebuilt_page() {
    use rand::{Rng, RngCore, SeedableRng};
    let mut survivors = Vec::new();
    for seed in 0..40u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        conn.pragma_update(None, "secure_delete", "ON").unwrap();
        conn.execute_batch(
            "CREATE TABLE data_keys (
                seq INTEGER PRIMARY KEY, tx BLOB NOT NULL, patient BLOB NOT NULL,
                key_id BLOB NOT NULL, not_after_ms INTEGER NOT NULL, sealed_key BLOB NOT NULL
            );",
        )
        .unwrap();
        let truncate = |conn: &rusqlite::Connection| {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut rows = Vec::new();
        // Keys received one commit at a time.
        for _ in 0..150 {
            let mut bytes = [0u8; 32 + 32 + 72];
            rng.fill_bytes(&mut bytes);
            let (tx, rest) = bytes.split_at(32);
            let (key_id, sealed) = rest.split_at(32);
            let dropped_at_grant_end = rng.gen_range(0..3) != 0;
            conn.execute(
                "INSERT INTO data_keys (tx, patient, key_id, not_after_ms, sealed_key)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![tx, [dropped_at_grant_end as u8; 16], key_id, 0, sealed],
            )
            .unwrap();
            rows.push((
                conn.last_insert_rowid(),
                dropped_at_grant_end,
                sealed.to_vec(),
            ));
        }
        // The grant's end: its keys deleted in one commit.
        conn.execute_batch("BEGIN").unwrap();
        for (seq, dropped, _) in &rows {
            if *dropped {
                conn.execute("DELETE FROM data_keys WHERE seq = ?1", [seq])
                    .unwrap();
            }
        }
        conn.execute_batch("COMMIT").unwrap();
        truncate(&conn);
        // The patient erases, one at a time, the records whose rows were moved.
        let in_file = |sealed: &[u8]| {
            let mut file = std::fs::read(&path).unwrap();
            file.extend(std::fs::read(dir.path().join("keys.db-wal")).unwrap_or_default());
            file.windows(sealed.len())
                .filter(|window| *window == sealed)
                .count()
        };
        let moved: Vec<_> = rows
            .iter()
            .filter(|(_, dropped, sealed)| !dropped && in_file(sealed) > 1)
            .collect();
        for (seq, _, sealed) in moved {
            conn.execute("DELETE FROM data_keys WHERE seq = ?1", [seq])
                .unwrap();
            truncate(&conn);
            if in_file(sealed) > 0 {
                survivors.push((seed, *seq));
            }
        }
    }
    assert!(
        survivors.is_empty(),
        "erased rows whose sealed key is still in keys.db (seed, row): {survivors:?}"
    );
}

/// WEAKNESS 3: one key that never comes pins `wanted_from` for good, and every start of its
/// party then reads the chain from that key's block, before the validator runs at all.
/// §12.1 item 2 keeps wanted keys in memory only; each commit writes `wanted_from`, the lowest
/// height of a key still wanted, and a start reads every block from there again
/// (`Service::want_again`, inside `Service::new`, so `Node::start` waits for it before its
/// runtime exists). The price stated is "a grantee whose patient's home has been down for a
/// week reads a week of blocks". But a key may never come: a dishonest sealer that keeps its
/// record's key (§11: "the record shows 'waiting for its key from V' at the home, forever"), or
/// an honest one that lost its `keys.db` (§10, "a crash of one disk"). The patient's home then
/// wants it for ever; its `wanted_from` never passes that block, and each of its restarts reads
/// and decodes every block since, a cost that grows with the chain (BENCHMARKS.md's prefill:
/// 1,000,000 transactions), chosen by one other validator. Fix: keep a key wanted longer than
/// a few minutes (or tried more than a few times) as a row of a small `keys.db` table, so that
/// `wanted_from` covers only the recently wanted; or write `wanted_from` per source, skipping
/// a source that has not answered for long.
#[test]
#[ignore = "WEAKNESS: a key withheld for good makes every restart of its party re-read the chain from its block"]
fn weakness_3_a_withheld_key_pins_every_restart_to_its_block() {
    let mut w = World::new();
    let patient = Person::patient(HOSPITAL);
    let author = Person::doctor(CLINIC, "Oncology", "Dr Keeps");
    w.enroll(&[&patient, &author]);
    w.network().filter(|from, to, frame| {
        !(from == CLINIC && to == HOSPITAL && matches!(**frame, Wire::Keys(_)))
    });
    let withheld = w.record(&author, &patient, "Never delivered");
    let withheld_at = w
        .node(HOSPITAL)
        .read(|chain| chain.transaction(&withheld))
        .unwrap()
        .unwrap()
        .height;
    let hospital = w.node(HOSPITAL);
    for _ in 0..30 {
        w.rt.block_on(hospital.submit_applied(enrollment(&hospital), WAIT))
            .unwrap();
    }
    let head = hospital.status().height;
    wait_until("the home's keys.db to record the head", || {
        stored_heights(&w, HOSPITAL).0 >= head
    });
    w.cluster.stop(HOSPITAL);
    w.cluster.restart(HOSPITAL).unwrap();
    assert!(matches!(
        w.open(HOSPITAL, &withheld).state,
        OpenState::Waiting { from: CLINIC, .. }
    ));
    let (processed, wanted_from) = stored_heights(&w, HOSPITAL);
    let wanted_from = wanted_from.unwrap();
    assert!(
        wanted_from > withheld_at,
        "{} blocks after the withheld key, every start still reads from its block {wanted_from} \
         (processed {processed})",
        head - withheld_at
    );
}

/// BREAK 2: a grant that ends by the clock while the grantee's key store is ahead of its
/// restored chain leaves the keys of the records its chain does not have yet, for good.
///
/// §5.4: at a grant's end "a correct grantee drops what it received" (§10: "correct, it
/// deletes the keys at the end"). `end_grant` skips every held key whose transaction is not on
/// this validator's chain ("sealed here and not on chain yet: this validator is its sealer").
/// With `keys.db` kept newer than a restored `chain.db` (§5.6), the keys received for records
/// applied after the chain's backup are such keys: while the chain catches up, the timer ends
/// the grant by the clock, removes its `read_grants` row and skips them. Nothing ends that
/// grant again once the chain is back, so the grantee keeps keys it is no longer entitled to
/// (at rest, and served to any party that asks). Fix: while the chain is behind the store
/// (`waits_for_chain`), end no grant (the timer waits for `rejoin_chain`), or decide "sealed
/// here" from the index's pending seals (`pending`), not from the chain's silence.
///
/// Held since: a grant ended while the chain is behind drops the keys it can decide and keeps
/// its `read_grants` row; it ends again, whole, once the chain has caught up (§5.6).
#[test]
fn red_team_held_a_grant_ending_while_the_chain_catches_up_leaves_no_key_behind() {
    let mut w = World::new();
    let (patient, author, reader) = w.cast(HOSPITAL, CLINIC, PHARMACY);
    let duration_ms = 10 * 60_000;
    w.read_grant(&patient, &reader, duration_ms);
    let first = w.record(&author, &patient, "Sarcoidosis");
    w.wait_state(PHARMACY, &first, OpenState::Open);
    let backup = w.copy_chain_while_stopped(PHARMACY);
    let second = w.record(&author, &patient, "Sarcoidosis, stage III");
    w.wait_state(PHARMACY, &second, OpenState::Open);
    let head = w.node(HOSPITAL).status().height;
    wait_until("the grantee's keys.db to record the head", || {
        stored_heights(&w, PHARMACY).0 >= head
    });

    // The grantee's chain restored from before the second record, its keys.db kept; its chain
    // held back while the grant ends by the clock.
    w.restore_chain_keep_keys(PHARMACY, &backup);
    w.network()
        .filter(|_, to, frame| !(to == PHARMACY && matches!(**frame, Wire::Blocks(_))));
    w.cluster.restart(PHARMACY).unwrap();
    assert!(w.node(PHARMACY).status().height < head);
    w.clock.advance_ms(duration_ms + 1_000);
    wait_until("the grantee to drop the first record's key", || {
        !w.key_rows(PHARMACY).contains(&first)
    });

    // The chain catches up.
    w.network().clear_filter();
    let hospital = w.node(HOSPITAL);
    let pharmacy = w.node(PHARMACY);
    wait_until("the grantee to catch up", || {
        w.rt.block_on(hospital.submit_applied(enrollment(&hospital), WAIT))
            .unwrap();
        pharmacy.status().height > head && pharmacy.key_status().processed_height > head
    });
    let state = w.open(PHARMACY, &second).state;
    let held = w.key_rows(PHARMACY).contains(&second);
    assert!(
        !held && state == OpenState::Elsewhere { home: HOSPITAL },
        "after its grant ended the former grantee holds the key of {} ({held}) and sees it \
         {state:?}",
        ledger::short_hex(&second)
    );
}

/// Held: a crash right after a seal was acknowledged, before its transaction is on chain
/// (§5.5, §12.1 item 1). The clinic seals a record (its key committed with
/// `synchronous=FULL`), its `keys.db` is put back as it was at that moment (every later commit
/// lost) and it is down while the others commit the record. Restarted, it takes the key for a
/// pending seal until its chain brings the record, keeps it (the block's time is within the
/// header's `not_after_ms`), and the patient's home pulls it: nothing acknowledged is lost.
#[test]
fn red_team_held_a_seal_acknowledged_before_a_crash_is_kept_and_delivered() {
    let mut w = World::new();
    let patient = Person::patient(HOSPITAL);
    let author = Person::doctor(CLINIC, "Oncology", "Dr Author");
    w.enroll(&[&patient, &author]);
    let grant = w.write_grant(&patient, &author);
    let record =
        w.rt.block_on(author.record(
            &w.node(CLINIC),
            &patient.id,
            grant,
            &common::note("Mycosis fungoides"),
        ))
        .unwrap();
    let id = record.id(&w.genesis_hash());
    // The key store as the seal's acknowledgement left it.
    let at_ack = w.dir.path().join("clinic-keys-at-ack");
    std::fs::create_dir_all(&at_ack).unwrap();
    for file in w.keys_db_files(CLINIC) {
        if file.exists() {
            std::fs::copy(&file, at_ack.join(file.file_name().unwrap())).unwrap();
        }
    }
    w.cluster.stop(CLINIC);
    for file in w.keys_db_files(CLINIC) {
        let _ = std::fs::remove_file(&file);
        let copy = at_ack.join(file.file_name().unwrap());
        if copy.exists() {
            std::fs::copy(&copy, &file).unwrap();
        }
    }
    let hospital = w.node(HOSPITAL);
    match w
        .rt
        .block_on(hospital.submit_applied(record, WAIT))
        .unwrap()
    {
        node::Verdict::Applied { .. } => {}
        verdict => panic!("not applied: {verdict:?}"),
    }
    w.clock.advance_ms(30_000);
    w.cluster.restart(CLINIC).unwrap();
    assert!(w.key_rows(CLINIC).contains(&id), "the acknowledged key");
    assert_eq!(
        diagnosis(&w.wait_state(HOSPITAL, &id, OpenState::Open)),
        "Mycosis fungoides"
    );
    assert_eq!(
        diagnosis(&w.wait_state(CLINIC, &id, OpenState::Open)),
        "Mycosis fungoides"
    );
}
