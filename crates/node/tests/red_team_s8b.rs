//! Red team (s8b) against commit 7f23ba2f (`keys.db` schema 4: a held key's row says what the
//! chain says of its transaction, `data_keys.on_chain`, read at start instead of the chain),
//! on the embedded cluster. The lagging-holder attacks of commit 6ebe613a are unit tests in
//! `crates/node/src/keys/wanted.rs` and `exchange.rs`, `mod red_team_s8b`.
//!
//! Validators: 0 hospital, 1 clinic, 2 pharmacy, 3 insurance.

#[allow(dead_code)] // Helpers shared with the other cluster tests.
mod common;

use common::world::{HOSPITAL, INSURANCE, World, wait_until};
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

/// `data_keys.on_chain` is outside the row's sealing (the AEAD binds the key to its
/// transaction id only, §3.2) and is trusted at start as the transaction's parties: whoever
/// can write the stopped validator's `keys.db` without the operator key (a backup restored
/// from an untrusted copy, a tampered disk) names any validator a party of any held key, by
/// writing 13 bytes or copying another row's, and the validator hands the key to it on
/// request. Before schema 4 the parties came from `chain.db` at each start, whose blocks are
/// signed. Here the home's own record (its patient, its doctor: nobody else is entitled)
/// goes to the insurer, which is refused before the edit.
#[test]
#[ignore = "red team, accepted for now (docs/SECURITY.md §12.1 item 6): an edited data_keys.on_chain (unauthenticated, as the patient column) makes a holder hand a key to a validator that is no party"]
fn red_team_an_edited_on_chain_column_hands_a_key_to_a_non_party() {
    let mut w = World::new();
    let patient = Person::patient(HOSPITAL);
    let author = Person::doctor(HOSPITAL, "Oncology", "Dr Home");
    w.enroll(&[&patient, &author]);
    let record = w.record(&author, &patient, "Glioblastoma");
    w.wait_state(HOSPITAL, &record, OpenState::Open);
    w.settle();
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
}

/// Held (§16.17 with schema 4): a validator's own seals have their row rewritten by the
/// block that applies them (`on_sealed` → `set_on_chain`, the row 13 bytes longer, pages
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
