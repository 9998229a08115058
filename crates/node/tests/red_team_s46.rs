//! Red team (s46) against commit 015629ad (`keys.db.checked`: a clean stop vouches for
//! `keys.db`, and the next start skips the check of the rows it vouched for, docs/SECURITY.md
//! §12.1 item 8), on the embedded cluster. Attacks on the open itself are unit tests in
//! `crates/node/src/keys/store.rs`, `mod red_team_s46`.
//!
//! Every break below is fixed (7d422258): a store skips the check only if it holds no row (not
//! when the open took it for a new one), and a start that leaves a refused row as it is writes
//! no record at its stop. (The controls, which removed the record, tested the same path once
//! fixed, and are gone.)
//!
//! Validators: 0 hospital, 1 clinic, 2 pharmacy, 3 insurance.

#[allow(dead_code)] // Helpers shared with the other cluster tests.
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::enrollment;
use common::world::{CLINIC, HOSPITAL, World, wait_until};
use ledger::TxId;
use node::load::Person;
use node::{OpenState, Wire};

/// Break: a `keys.db` whose `meta.genesis_hash` row was deleted on disk is taken by
/// `KeyStore::open` for a store made by this open, and a made store has "no row to check":
/// the start checks none of the rows, tampered ones included (here a record's deadline edited,
/// which item 6 refuses), and its clean stop vouches for them for every start after.
/// SECURITY §12.1 item 8: "whoever writes the stopped validator's files without the operator
/// key changes the digest ... and the start checks every row".
#[test]
fn red_team_s46_a_deleted_genesis_hash_skips_the_check_of_an_edited_store() {
    let mut w = World::new();
    let patient = Person::patient(HOSPITAL);
    let author = Person::doctor(HOSPITAL, "Oncology", "Dr Home");
    w.enroll(&[&patient, &author]);
    let records: Vec<TxId> = ["Glioblastoma", "Meningioma"]
        .into_iter()
        .map(|diagnosis| w.record(&author, &patient, diagnosis))
        .collect();
    for record in &records {
        w.wait_state(HOSPITAL, record, OpenState::Open);
    }
    w.settle();

    w.cluster.stop(HOSPITAL);
    w.edit_keys_db(
        HOSPITAL,
        "UPDATE data_keys SET not_after_ms = not_after_ms - 1 WHERE tx = ?1",
        [records[1].as_slice()],
    );
    w.edit_keys_db(HOSPITAL, "DELETE FROM meta WHERE key = 'genesis_hash'", []);
    // Fixed first by checking every row (7d422258); since session 23 the store is refused.
    refused_for_its_lost_chain(&mut w, HOSPITAL);
}

/// Session 23 (aside 1 of this red team): a `keys.db` that holds keys and records no chain is
/// refused at start, with what to do, not taken for a new store.
fn refused_for_its_lost_chain(w: &mut World, at: pbft::ReplicaId) {
    let started = w.cluster.restart(at);
    assert!(
        matches!(&started, Err(node::NodeError::Corrupt(why)) if why.contains("genesis_hash")),
        "a key store whose chain was deleted on disk: {started:?}"
    );
}

/// Break (s9's fix undone by a vouched start): a pending seal's row whose `on_chain` was forged
/// on disk (its transaction never applied) is made pending only when the sweep after a start
/// reads it (`Service::trusted`: `pending` lives in memory). After one start that checked
/// every row, the clean stop vouches for the file (the row is not rewritten: a pending seal
/// whose tag fails is kept as it says), and the next start neither reads it at load
/// (`unplaced` selects `on_chain IS NULL`) nor sweeps it: it is never pending again, its
/// deadline passes, its key is never deleted. Before 015629ad every start's sweep made it
/// pending again. The control seal's key goes at its deadline.
#[test]
fn red_team_s46_a_forged_applied_seal_outlives_its_deadline_after_a_vouched_restart() {
    forged_applied_seal_across_two_starts();
}

fn forged_applied_seal_across_two_starts() {
    let mut w = World::new();
    let patient = Person::patient(HOSPITAL);
    let doctor = Person::doctor(HOSPITAL, "Cardiology", "Dr Soon");
    w.enroll(&[&patient, &doctor]);
    let [forged, control] = w.unsent_seals(&patient, &doctor);
    let held = w.key_rows(HOSPITAL).len() as u64;

    w.cluster.stop(HOSPITAL);
    w.edit_keys_db(
        HOSPITAL,
        "UPDATE data_keys SET on_chain = ?2 WHERE tx = ?1",
        rusqlite::params![forged.as_slice(), vec![0u8; 13]],
    );
    // The first start checks every row (no record matches), the forged row among them.
    w.cluster.restart(HOSPITAL).unwrap();
    wait_until("every row checked", || {
        w.key_counters(HOSPITAL).keys_rows_checked >= held
    });
    // Past the timer that ends the sweep.
    std::thread::sleep(Duration::from_millis(600));
    w.cluster.stop(HOSPITAL);
    // Fixed (7d422258): a start that left a refused row as it is writes no record, so the
    // next one reads that row again.
    assert!(
        !w.keys_db(HOSPITAL).with_extension("db.checked").exists(),
        "a stop that left a refused row vouches for nothing"
    );
    w.cluster.restart(HOSPITAL).unwrap();
    let rows = w.key_rows(HOSPITAL);
    assert!(rows.contains(&forged) && rows.contains(&control));

    w.clock.advance_ms(2_000);
    std::thread::sleep(Duration::from_millis(300));
    let hospital = w.node(HOSPITAL);
    let later = w.applied_at(HOSPITAL, enrollment(&hospital));
    wait_until("the control seal's key to go at its deadline", || {
        !w.key_rows(HOSPITAL).contains(&control)
    });
    assert!(hospital.key_status().processed_height >= later);
    assert!(
        w.key_counters(HOSPITAL).keys_rows_checked > 0,
        "a start without a record checks rows"
    );
    assert!(
        !w.key_rows(HOSPITAL).contains(&forged),
        "a seal's key kept past its deadline: its row's on_chain was forged on disk, and a \
         vouched restart forgot it was pending"
    );
}

/// Break (laundering through a chain behind the store): s9's moved patient (a grantee's row
/// of a received record moved to another patient on disk), with the grantee's `chain.db`
/// put back from before the records (a writer of the folder, or a restore, §5.6: `keys.db`
/// kept newer). The first start checks every row (no record matches), but the chain cannot
/// say anything of the moved row's transaction yet: `Service::trusted` takes it for a pending
/// seal (in memory) and writes nothing back. Its sweep ends; a clean stop before the chain has
/// caught up vouches that every row was checked. The next start skips the check; the grant
/// ends by the clock; the row, still under the wrong patient with a failing tag, is not found
/// by the grant's patient: the grantee keeps the key for good. Before 015629ad every start
/// swept it again and, the chain now caught up, wrote the chain's patient back and dropped it.
#[test]
fn red_team_s46_a_sweep_with_the_chain_behind_vouches_for_a_moved_row() {
    moved_row_with_the_chain_behind();
}

fn moved_row_with_the_chain_behind() {
    let mut w = World::new();
    let (patient, author, reader) = w.cast(HOSPITAL, HOSPITAL, CLINIC);
    let other = Person::patient(HOSPITAL);
    w.enroll(&[&other]);
    w.read_grant(&patient, &reader, 60_000);
    w.settle();
    let backup = w.copy_chain_while_stopped(CLINIC);
    let control = w.record(&author, &patient, "Melanoma");
    let moved = w.record(&author, &patient, "Sarcoma");
    for record in [&control, &moved] {
        w.wait_state(CLINIC, record, OpenState::Open);
    }
    w.settle();
    let held = w.key_rows(CLINIC).len() as u64;
    w.cluster.stop(CLINIC);
    w.edit_keys_db(
        CLINIC,
        "UPDATE data_keys SET patient = ?2 WHERE tx = ?1",
        rusqlite::params![moved.as_slice(), other.id.as_slice()],
    );
    w.restore_chain_keep_keys(CLINIC, &backup);

    // No block reaches the clinic during its first start: its chain stays behind.
    let withheld = Arc::new(Mutex::new(true));
    let hold = withheld.clone();
    w.network().filter(move |_, to, frame| {
        !(to == CLINIC && matches!(**frame, Wire::Blocks(_)) && *hold.lock().unwrap())
    });
    w.cluster.restart(CLINIC).unwrap();
    wait_until("every row checked", || {
        w.key_counters(CLINIC).keys_rows_checked >= held
    });
    std::thread::sleep(Duration::from_millis(600));
    assert!(w.node(CLINIC).status().height < w.node(HOSPITAL).status().height);
    w.cluster.stop(CLINIC);
    // Fixed (7d422258): a start that left a refused row as it is writes no record, so the
    // next one reads that row again.
    assert!(
        !w.keys_db(CLINIC).with_extension("db.checked").exists(),
        "a stop that left a refused row vouches for nothing"
    );

    // The grant's time runs out; the clinic starts again and catches up.
    *withheld.lock().unwrap() = false;
    w.clock.advance_ms(61_000);
    w.cluster.restart(CLINIC).unwrap();
    w.settle();
    w.wait_state(CLINIC, &control, OpenState::Elsewhere { home: HOSPITAL });
    wait_until("the control record's key to be dropped", || {
        !w.key_rows(CLINIC).contains(&control)
    });
    // Several timers: a check of rows, had one run, would have reached the row.
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(
        !w.key_rows(CLINIC).contains(&moved),
        "the grantee keeps an ended grant's key: its row's patient was moved on disk and a \
         sweep with the chain behind vouched for it (rows checked at this start: {})",
        w.key_counters(CLINIC).keys_rows_checked
    );
}

/// Break (consequence of the deleted `genesis_hash`): s9's moved patient at a grantee, with the
/// `meta.genesis_hash` row deleted too. The start checks no row (a store "made by this open"),
/// the grant ends by the clock while no check has corrected the row's patient, and the
/// grantee keeps the key; its clean stop vouches for the file, so no later start checks it
/// either. The same edit without the deletion is s9's held case (the sweep writes the chain's
/// patient back and the key is dropped).
#[test]
fn red_team_s46_a_deleted_genesis_hash_lets_a_grantee_keep_a_moved_rows_key() {
    let mut w = World::new();
    w.stopped_grantee_with_a_moved_row();
    w.edit_keys_db(CLINIC, "DELETE FROM meta WHERE key = 'genesis_hash'", []);
    w.clock.advance_ms(61_000);
    // Fixed first by checking every row (7d422258); since session 23 the store is refused.
    refused_for_its_lost_chain(&mut w, CLINIC);
}
