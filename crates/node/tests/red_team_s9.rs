//! Red team (s9) against commits 1203283f and 385bbac5 (`keys.db`'s epoch index: a held key's
//! row found through runs and filters, its facts read and checked on demand, every row checked
//! a slice per timer after a start), on the embedded cluster. The index's own attacks are unit
//! tests in `crates/node/src/keys/store.rs` and `runs.rs`, `mod red_team_s9`.
//!
//! Validators: 0 hospital, 1 clinic, 2 pharmacy, 3 insurance.

#[allow(dead_code)] // Helpers shared with the other cluster tests.
mod common;

use std::time::Duration;

use common::enrollment;
use common::world::{CLINIC, HOSPITAL, HOUR_MS, World, wait_until};
use ledger::TxId;
use node::OpenState;
use node::load::Person;
use pbft::ReplicaId;

fn patient_of(w: &World, at: ReplicaId, tx: &TxId) -> Option<Vec<u8>> {
    w.key_patient(at, tx)
}

/// Break: a grant's end finds the grantee's keys to drop by the rows' `patient` column
/// (`Rows::held_of`), before any check of the row's facts tag. A writer of the stopped grantee's
/// `keys.db` without the operator key moves a received record's row to another patient; the
/// grant's time runs out while the grantee is down. At its first timer the key service ends
/// the grant by the clock (`end_grants_by_clock`, before `check_rows` in `on_timer`) and finds
/// no row of the patient to drop; its sweep writes the chain's patient back a moment later,
/// but the grant has ended by then: the grantee keeps the key for good. (A revocation while
/// it is down does not show it: the grantee's chain gets the block after its sweep.) Before the epoch index the start read
/// every row and put the chain's patient in place of a failed tag's before processing a block
/// (SECURITY §12.1 item 6: "what the chain says (patient, ...) replaces it"), and the row was
/// dropped. The untampered control record is dropped either way.
#[test]
fn red_team_s9_a_moved_patient_keeps_a_key_past_its_grants_end() {
    let mut w = World::new();
    let (patient, control, moved) = w.stopped_grantee_with_a_moved_row();
    w.clock.advance_ms(61_000);
    w.cluster.restart(CLINIC).unwrap();
    w.wait_state(CLINIC, &control, OpenState::Elsewhere { home: HOSPITAL });
    wait_until(
        "the clinic's sweep to write the chain's patient back",
        || patient_of(&w, CLINIC, &moved).is_none_or(|p| p == patient.id.to_vec()),
    );
    assert!(
        !w.key_rows(CLINIC).contains(&control),
        "the control record's key was dropped"
    );
    assert!(
        !w.key_rows(CLINIC).contains(&moved),
        "the grantee keeps an ended grant's key: its row's patient was moved on disk"
    );
}

/// Held: the same revocation while the grantee is down, no row tampered: every key it
/// received through the grant is dropped at start, and the erasure of the home's record while
/// it is down leaves no row and no copy of the sealed key in its files.
#[test]
fn red_team_s9_a_grant_ended_and_an_erasure_while_down_leave_no_row() {
    let mut w = World::new();
    let (patient, author, reader) = w.cast(HOSPITAL, HOSPITAL, CLINIC);
    let grant = w.read_grant(&patient, &reader, HOUR_MS);
    let records: Vec<TxId> = (0..3)
        .map(|i| w.record(&author, &patient, &format!("Finding {i}")))
        .collect();
    for record in &records {
        w.wait_state(CLINIC, record, OpenState::Open);
    }
    w.settle();
    let sealed = w.sealed_row(HOSPITAL, &records[0]).unwrap();
    w.cluster.stop(CLINIC);
    w.revoke(&patient, grant);
    w.erase(&patient, records[0], HOSPITAL);
    w.wait_state(HOSPITAL, &records[0], OpenState::Erased);
    let head = w.node(HOSPITAL).status().height;
    w.cluster.restart(CLINIC).unwrap();
    let clinic = w.node(CLINIC);
    wait_until("the clinic to process the revocation", || {
        clinic.key_status().processed_height >= head
    });
    let rows = w.key_rows(CLINIC);
    assert!(records.iter().all(|r| !rows.contains(r)), "{rows:?}");
    assert_eq!(clinic.key_status().held, rows.len() as u64);
    assert!(!w.key_rows(HOSPITAL).contains(&records[0]));
    assert_eq!(
        w.occurrences(HOSPITAL, &sealed),
        0,
        "a copy of the erased key"
    );
}

/// Break: a pending seal (this validator's, not applied yet) whose row's `on_chain` was
/// written on disk, without the operator key, to say it is applied is not read at start
/// (`Rows::unplaced` selects `on_chain IS NULL` only), so it is never in `Service::pending`:
/// its deadline passes and its key is never deleted (and, applied, its block would not write
/// the chain's facts: `on_sealed` asks `pending`). SECURITY §12.1 item 6 says such a row is
/// "kept as it says ... its deadline only decides when it is deleted"; before the epoch index
/// every row was read at start, its tag failed, the chain lacked the transaction, and it was
/// pending.
#[test]
fn red_team_s9_a_pending_seal_forged_applied_is_still_deleted_at_its_deadline() {
    let mut w = World::new();
    let patient = Person::patient(HOSPITAL);
    let doctor = Person::doctor(HOSPITAL, "Cardiology", "Dr Soon");
    w.enroll(&[&patient, &doctor]);
    let [forged, control] = w.unsent_seals(&patient, &doctor);

    w.cluster.stop(HOSPITAL);
    rusqlite::Connection::open(w.keys_db(HOSPITAL))
        .unwrap()
        .execute(
            "UPDATE data_keys SET on_chain = ?2 WHERE tx = ?1",
            rusqlite::params![forged.as_slice(), vec![0u8; 13]],
        )
        .unwrap();
    w.cluster.restart(HOSPITAL).unwrap();
    let rows = w.key_rows(HOSPITAL);
    assert!(rows.contains(&forged) && rows.contains(&control));

    w.clock.advance_ms(2_000);
    // The replicas read the clock at their next tick.
    std::thread::sleep(Duration::from_millis(300));
    let hospital = w.node(HOSPITAL);
    let later = w.applied_at(HOSPITAL, enrollment(&hospital));
    wait_until("the control seal's key to go at its deadline", || {
        !w.key_rows(HOSPITAL).contains(&control)
    });
    assert!(hospital.key_status().processed_height >= later);
    assert!(
        !w.key_rows(HOSPITAL).contains(&forged),
        "a seal's key kept past its deadline: its row's on_chain was forged on disk"
    );
}

/// Held: a hostile peer asking for ids that share the index's 7-byte key with a held record
/// (its tail changed) gets `NotHeld` for each, and the record itself `NotEntitled`, from a
/// home whose rows are in a closed run or the open epoch alike; the entitled party gets it.
#[test]
fn red_team_s9_ids_sharing_a_held_records_prefix_give_nothing() {
    use common::world::INSURANCE;
    use node::KeyReply;
    let w = World::new();
    let (patient, author, _) = w.cast(HOSPITAL, CLINIC, HOSPITAL);
    let record = w.record(&author, &patient, "Glioma");
    w.wait_state(HOSPITAL, &record, OpenState::Open);
    w.settle();
    let mut asked = vec![record];
    for i in 0..64u8 {
        let mut id = record;
        id[7 + (i as usize % 25)] ^= i | 1;
        asked.push(id);
    }
    let replies = w.ask(INSURANCE, HOSPITAL, 7_000, asked.clone());
    assert_eq!(replies[0], KeyReply::NotEntitled, "{:?}", replies[0]);
    assert!(
        replies[1..].iter().all(|r| *r == KeyReply::NotHeld),
        "{replies:?}"
    );
    let replies = w.ask(CLINIC, HOSPITAL, 7_001, asked);
    assert!(matches!(replies[0], KeyReply::Key(_)), "{:?}", replies[0]);
    assert!(
        replies[1..].iter().all(|r| *r == KeyReply::NotHeld),
        "{replies:?}"
    );
}
