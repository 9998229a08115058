//! Red team (s8b) against commit 7f23ba2f (`keys.db` schema 4: a held key's row says what the
//! chain says of its transaction, `data_keys.on_chain`, read at start instead of the chain),
//! on the embedded cluster. The lagging-holder attacks of commit 6ebe613a are unit tests in
//! `crates/node/src/keys/wanted.rs` and `exchange.rs`, `mod red_team_s8b`.
//!
//! Validators: 0 hospital, 1 clinic, 2 pharmacy, 3 insurance.

#[allow(dead_code)] // Helpers shared with the other cluster tests.
mod common;

use common::world::{HOSPITAL, HOUR_MS, INSURANCE, PHARMACY, World, wait_until};
use ledger::TxId;
use node::load::Person;
use node::{KeyReply, OpenState};
use pbft::ReplicaId;

/// `data_keys.on_chain` as `OnChain::to_bytes` writes it: sealer, patient's home, doctor's
/// home (little-endian u32 each), then 1 for a record.
fn on_chain_bytes(sealer: u32, patient_home: u32, doctor_home: u32, record: bool) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(13);
    for id in [sealer, patient_home, doctor_home] {
        bytes.extend_from_slice(&id.to_le_bytes());
    }
    bytes.push(u8::from(record));
    bytes
}

fn on_chain_of(w: &World, at: ReplicaId, tx: &TxId) -> Option<Vec<u8>> {
    rusqlite::Connection::open(w.keys_db(at))
        .unwrap()
        .query_row(
            "SELECT on_chain FROM data_keys WHERE tx = ?1",
            [tx.as_slice()],
            |row| row.get(0),
        )
        .unwrap()
}

/// `asker` asks `holder` for `tx` until the holder is no longer busy (a restarted holder
/// answers `Busy` until f+1 peers agree it has caught up): its reply.
fn settled_reply(
    w: &World,
    asker: ReplicaId,
    holder: ReplicaId,
    tx: TxId,
    first_id: u64,
) -> KeyReply {
    let mut id = first_id;
    let mut reply = KeyReply::Busy;
    wait_until("the holder to answer other than Busy", || {
        id += 1;
        reply = w.ask(asker, holder, id, vec![tx]).remove(0);
        if matches!(reply, KeyReply::Busy) {
            std::thread::sleep(std::time::Duration::from_millis(50));
            return false;
        }
        true
    });
    reply
}

/// Fixed (schema 5, docs/SECURITY.md §12.1 item 6). `data_keys.on_chain` was outside the row's
/// sealing (the AEAD binds the key to its transaction id only, §3.2) and trusted at start as
/// the transaction's parties: whoever can write the stopped validator's `keys.db` without the
/// operator key (a backup restored from an untrusted copy, a tampered disk) named any
/// validator a party of any held key, by writing 13 bytes or copying another row's, and the
/// validator handed the key to it on request. Here the home's own record (its patient, its
/// doctor: nobody else is entitled) would go to the insurer, which is refused before the edit.
/// Now the row's facts fail their tag: the start reads them from the chain, counts the row and
/// writes it back as the chain says.
#[test]
fn red_team_an_edited_on_chain_column_hands_a_key_to_a_non_party() {
    let mut w = World::new();
    let (_, _, record) = w.record_at_home("Glioblastoma");
    assert_eq!(
        on_chain_of(&w, HOSPITAL, &record),
        Some(on_chain_bytes(HOSPITAL, HOSPITAL, HOSPITAL, true)),
        "the row says what the chain says"
    );
    let before = settled_reply(&w, INSURANCE, HOSPITAL, record, 1_000);
    assert!(matches!(before, KeyReply::NotEntitled), "{before:?}");

    w.cluster.stop(HOSPITAL);
    rusqlite::Connection::open(w.keys_db(HOSPITAL))
        .unwrap()
        .execute(
            "UPDATE data_keys SET on_chain = ?1 WHERE tx = ?2",
            rusqlite::params![
                on_chain_bytes(HOSPITAL, HOSPITAL, INSURANCE, true),
                record.as_slice()
            ],
        )
        .unwrap();
    w.cluster.restart(HOSPITAL).unwrap();
    let after = settled_reply(&w, INSURANCE, HOSPITAL, record, 2_000);
    assert!(
        !matches!(after, KeyReply::Key(_)),
        "the home gave its own record's key to the insurer, named a party by keys.db alone"
    );
    wait_until("the row written back as the chain says", || {
        on_chain_of(&w, HOSPITAL, &record)
            == Some(on_chain_bytes(HOSPITAL, HOSPITAL, HOSPITAL, true))
    });
    assert_eq!(w.key_counters(HOSPITAL).keys_rows_refused, 1);
}

/// A row's facts as `keys.db` holds them: patient, `not_after_ms`, `on_chain`, `facts_tag`.
type RowFacts = (Vec<u8>, i64, Option<Vec<u8>>, Option<Vec<u8>>);

fn facts_of(w: &World, at: ReplicaId, tx: &TxId) -> RowFacts {
    rusqlite::Connection::open(w.keys_db(at))
        .unwrap()
        .query_row(
            "SELECT patient, not_after_ms, on_chain, facts_tag FROM data_keys WHERE tx = ?1",
            [tx.as_slice()],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .unwrap()
}

/// Each fact a start trusts is sealed with its transaction id (§12.1 item 6): a row whose
/// patient, deadline or `on_chain` was edited, or whose facts and tag were copied from another
/// transaction's row, is refused, counted, and read from the chain. A patient moved to another
/// patient with a live read grant would hand the record to that patient's grantee; facts
/// copied from the insurer's own record for the patient would name the insurer a party of the
/// home's record. After the restart every row is as it was, neither key leaves, and a second
/// start refuses nothing.
#[test]
fn a_start_refuses_facts_edited_or_copied_from_another_row() {
    let mut w = World::new();
    let patient = Person::patient(HOSPITAL);
    let other = Person::patient(HOSPITAL);
    let author = Person::doctor(HOSPITAL, "Oncology", "Dr Home");
    let insurer = Person::doctor(INSURANCE, "Claims", "Dr Claims");
    let reader = Person::doctor(PHARMACY, "Neurology", "Dr Reader");
    w.enroll(&[&patient, &other, &author, &insurer, &reader]);
    let copied_to = w.record(&author, &patient, "Glioblastoma");
    let moved = w.record(&author, &patient, "Meningioma");
    let deadline = w.record(&author, &patient, "Astrocytoma");
    let insurers = w.record(&insurer, &patient, "Claim");
    w.read_grant(&other, &reader, HOUR_MS);
    for record in [copied_to, moved, deadline, insurers] {
        w.wait_state(HOSPITAL, &record, OpenState::Open);
    }
    w.settle();
    let records = [copied_to, moved, deadline, insurers];
    let before: Vec<RowFacts> = records.iter().map(|r| facts_of(&w, HOSPITAL, r)).collect();
    assert!(
        before.iter().all(|facts| facts.3.is_some()),
        "every row is tagged"
    );

    w.cluster.stop(HOSPITAL);
    w.edit_keys_db(
        HOSPITAL,
        "UPDATE data_keys SET (patient, not_after_ms, on_chain, facts_tag) =
            (SELECT patient, not_after_ms, on_chain, facts_tag FROM data_keys WHERE tx = ?2)
         WHERE tx = ?1",
        rusqlite::params![copied_to.as_slice(), insurers.as_slice()],
    );
    w.edit_keys_db(
        HOSPITAL,
        "UPDATE data_keys SET patient = ?2 WHERE tx = ?1",
        rusqlite::params![moved.as_slice(), other.id.as_slice()],
    );
    w.edit_keys_db(
        HOSPITAL,
        "UPDATE data_keys SET not_after_ms = not_after_ms - 1 WHERE tx = ?1",
        [deadline.as_slice()],
    );
    w.cluster.restart(HOSPITAL).unwrap();
    let asked = settled_reply(&w, INSURANCE, HOSPITAL, copied_to, 1_000);
    assert!(!matches!(asked, KeyReply::Key(_)), "{asked:?}");
    let asked = settled_reply(&w, PHARMACY, HOSPITAL, moved, 2_000);
    assert!(!matches!(asked, KeyReply::Key(_)), "{asked:?}");
    // Every row is checked after the start, read or not (`Service::check_rows`).
    wait_until("the rows written back as the chain says", || {
        let after: Vec<RowFacts> = records.iter().map(|r| facts_of(&w, HOSPITAL, r)).collect();
        after == before
    });
    assert_eq!(w.key_counters(HOSPITAL).keys_rows_refused, 3);

    w.cluster.stop(HOSPITAL);
    w.cluster.restart(HOSPITAL).unwrap();
    settled_reply(&w, INSURANCE, HOSPITAL, copied_to, 3_000);
    assert_eq!(w.key_counters(HOSPITAL).keys_rows_refused, 0);
    assert_eq!(
        common::world::diagnosis(&w.wait_state(HOSPITAL, &moved, OpenState::Open)),
        "Meningioma"
    );
}

/// A seal not yet on chain whose row's deadline was edited fails its tag and is kept as it
/// says (a pending key is given to nobody; its deadline only decides when it is deleted), not
/// vouched for: it is refused again at the next start. The block that applies it writes the
/// chain's facts with their tag.
#[test]
fn a_pending_seals_edited_deadline_is_refused_until_its_block_writes_the_chains() {
    let mut w = World::new();
    let patient = Person::patient(HOSPITAL);
    let author = Person::doctor(HOSPITAL, "Oncology", "Dr Home");
    w.enroll(&[&patient, &author]);
    let grant = w.write_grant(&patient, &author);
    let sealed =
        w.rt.block_on(author.record(
            &w.node(HOSPITAL),
            &patient.id,
            grant,
            &common::note("Later"),
        ))
        .unwrap();
    let tx = sealed.id(&w.genesis_hash());
    let deadline = sealed.header.not_after_ms.min(i64::MAX as u64) as i64;
    let (_, not_after_ms, on_chain, _) = facts_of(&w, HOSPITAL, &tx);
    assert_eq!((not_after_ms, on_chain), (deadline, None));

    let edited = deadline - HOUR_MS as i64;
    for start in 0..2 {
        w.cluster.stop(HOSPITAL);
        if start == 0 {
            w.edit_keys_db(
                HOSPITAL,
                "UPDATE data_keys SET not_after_ms = ?2 WHERE tx = ?1",
                rusqlite::params![tx.as_slice(), edited],
            );
        }
        w.cluster.restart(HOSPITAL).unwrap();
        settled_reply(&w, INSURANCE, HOSPITAL, tx, 1_000 * (start + 1));
        assert_eq!(
            w.key_counters(HOSPITAL).keys_rows_refused,
            1,
            "start {start}"
        );
        assert_eq!(facts_of(&w, HOSPITAL, &tx).1, edited, "kept as it says");
    }

    w.applied(HOSPITAL, sealed);
    w.wait_state(HOSPITAL, &tx, OpenState::Open);
    wait_until("the applied seal's row to carry the chain's facts", || {
        let (_, not_after_ms, on_chain, _) = facts_of(&w, HOSPITAL, &tx);
        on_chain == Some(on_chain_bytes(HOSPITAL, HOSPITAL, HOSPITAL, true))
            && not_after_ms == deadline
    });
    w.cluster.stop(HOSPITAL);
    w.cluster.restart(HOSPITAL).unwrap();
    settled_reply(&w, INSURANCE, HOSPITAL, tx, 3_000);
    assert_eq!(w.key_counters(HOSPITAL).keys_rows_refused, 0);
}

/// A store of schema 4 is migrated with its rows untagged, never vouched for: what a tampered
/// schema 4 store says is read from the chain after the first start of schema 5 (every row is
/// checked then, a slice per timer), as a row whose tag fails is (not counted as refused: it
/// never had a tag), and written back with its tag.
#[test]
fn a_tampered_schema_4_store_is_not_laundered_by_its_migration() {
    let mut w = World::new();
    let (_, _, record) = w.record_at_home("Glioblastoma");
    let before = facts_of(&w, HOSPITAL, &record);

    w.cluster.stop(HOSPITAL);
    w.edit_keys_db(
        HOSPITAL,
        "UPDATE data_keys SET on_chain = ?2 WHERE tx = ?1",
        rusqlite::params![
            record.as_slice(),
            on_chain_bytes(HOSPITAL, HOSPITAL, INSURANCE, true)
        ],
    );
    rusqlite::Connection::open(w.keys_db(HOSPITAL))
        .unwrap()
        .execute_batch(
            "DROP TABLE key_runs;
             DROP TABLE key_filters;
             DROP INDEX data_keys_pending;
             DELETE FROM meta WHERE key = 'keys_held';
             ALTER TABLE data_keys DROP COLUMN facts_tag;
             PRAGMA user_version = 4;",
        )
        .unwrap();
    w.cluster.restart(HOSPITAL).unwrap();
    let asked = settled_reply(&w, INSURANCE, HOSPITAL, record, 1_000);
    assert!(!matches!(asked, KeyReply::Key(_)), "{asked:?}");
    assert_eq!(w.key_counters(HOSPITAL).keys_rows_refused, 0);
    wait_until(
        "the row read to be written back with the chain's facts",
        || facts_of(&w, HOSPITAL, &record) == before,
    );
    let untagged: i64 = rusqlite::Connection::open(w.keys_db(HOSPITAL))
        .unwrap()
        .query_row(
            "SELECT count(*) FROM data_keys WHERE facts_tag IS NULL",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(
        untagged, 0,
        "every row on chain is tagged after the first start"
    );
}

/// Held (§16.17 with schema 4): a validator's own seals have their row rewritten by the
/// block that applies them (`on_sealed` → `set_facts`, the row 13 bytes longer, pages
/// split across 24 rows); after a restart each sealed row is in the store's files once, every
/// row says what the chain says, and an erasure leaves the erased key's sealed bytes in no
/// file. The records still open after the restart, and a seal made after it is pending until
/// applied, then written.
#[test]
fn red_team_held_own_seals_rewritten_by_their_block_leave_one_copy() {
    let mut w = World::new();
    let patient = Person::patient(HOSPITAL);
    let author = Person::doctor(HOSPITAL, "Oncology", "Dr Home");
    w.enroll(&[&patient, &author]);
    let records: Vec<TxId> = (0..24)
        .map(|i| w.record(&author, &patient, &format!("Finding {i}")))
        .collect();
    for record in &records {
        w.wait_state(HOSPITAL, record, OpenState::Open);
    }
    w.settle();
    wait_until("every row to carry its facts", || {
        records
            .iter()
            .all(|record| on_chain_of(&w, HOSPITAL, record).is_some())
    });
    let rows: Vec<Vec<u8>> = records
        .iter()
        .map(|record| w.sealed_row(HOSPITAL, record).expect("a sealed row"))
        .collect();
    w.cluster.stop(HOSPITAL);
    w.cluster.restart(HOSPITAL).unwrap();
    for (record, row) in records.iter().zip(&rows) {
        assert_eq!(
            w.occurrences(HOSPITAL, row),
            1,
            "copies of {}'s sealed row after a restart",
            ledger::short_hex(record)
        );
        assert_eq!(
            on_chain_of(&w, HOSPITAL, record),
            Some(on_chain_bytes(HOSPITAL, HOSPITAL, HOSPITAL, true))
        );
    }
    assert_eq!(
        common::world::diagnosis(&w.wait_state(HOSPITAL, &records[5], OpenState::Open)),
        "Finding 5"
    );
    for i in [0, 12, 23] {
        w.erase(&patient, records[i], HOSPITAL);
        w.wait_state(HOSPITAL, &records[i], OpenState::Erased);
        assert_eq!(
            w.occurrences(HOSPITAL, &rows[i]),
            0,
            "the erased key's sealed row is still in a file of the store"
        );
    }
    let later = w.record(&author, &patient, "Later");
    w.wait_state(HOSPITAL, &later, OpenState::Open);
    wait_until("the later seal's row to carry its facts", || {
        on_chain_of(&w, HOSPITAL, &later).is_some()
    });
}

/// A clean stop vouches for `keys.db` as it leaves it (§12.1 item 8, `keys.db.checked`): the
/// next start checks no row again. A store edited while the validator was stopped, without
/// the operator key, is checked whole, and the edited row refused, as every start did before.
#[test]
fn a_clean_restart_checks_no_row_again_but_an_edited_store_every_row() {
    let mut w = World::new();
    let patient = Person::patient(HOSPITAL);
    let author = Person::doctor(HOSPITAL, "Oncology", "Dr Home");
    w.enroll(&[&patient, &author]);
    let records: Vec<TxId> = ["Glioblastoma", "Meningioma", "Astrocytoma"]
        .into_iter()
        .map(|diagnosis| w.record(&author, &patient, diagnosis))
        .collect();
    for record in &records {
        w.wait_state(HOSPITAL, record, OpenState::Open);
    }
    w.settle();
    let held = w.key_rows(HOSPITAL).len() as u64;
    assert!(held >= records.len() as u64, "{held} rows");

    w.cluster.stop(HOSPITAL);
    assert!(w.keys_db(HOSPITAL).with_extension("db.checked").exists());
    w.cluster.restart(HOSPITAL).unwrap();
    settled_reply(&w, INSURANCE, HOSPITAL, records[0], 1_000);
    // A check would have read every row at the first timer (250 ms).
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert_eq!(w.key_counters(HOSPITAL).keys_rows_checked, 0);

    w.cluster.stop(HOSPITAL);
    w.edit_keys_db(
        HOSPITAL,
        "UPDATE data_keys SET not_after_ms = not_after_ms - 1 WHERE tx = ?1",
        [records[1].as_slice()],
    );
    w.cluster.restart(HOSPITAL).unwrap();
    wait_until("every row checked", || {
        w.key_counters(HOSPITAL).keys_rows_checked >= held
    });
    assert_eq!(w.key_counters(HOSPITAL).keys_rows_refused, 1);
}
