//! Red team (s9b) against commit 923515e5 (the fixes of red team s9: schema 6, grants ended
//! during the sweep drop their patient's keys again after it, a row failing its tag and not
//! applied is pending, a rollback undone from a log), on the embedded cluster. Unit tests of
//! the undo log are in `crates/node/src/keys/runs.rs`, `mod red_team_s9b`.
//!
//! Validators: 0 hospital, 1 clinic, 2 pharmacy, 3 insurance.

#[allow(dead_code)] // Helpers shared with the other cluster tests.
mod common;

use std::time::{Duration, Instant};

use common::world::{CLINIC, HOSPITAL, World, wait_until};
use ledger::TxId;
use node::OpenState;
use pbft::ReplicaId;

fn patient_of(w: &World, at: ReplicaId, tx: &TxId) -> Option<Vec<u8>> {
    w.key_patient(at, tx)
}

fn holds(w: &World, at: ReplicaId, tx: &TxId) -> bool {
    patient_of(w, at, tx).is_some()
}

/// Rows of junk after every real row: ids on no chain, `on_chain` set and no tag, so that the
/// sweep after a start looks each up on the chain (`Service::trusted`), as it does every row
/// of a large store just migrated, or a store of millions of rows (minutes of sweep). The
/// `seq` of the first.
fn add_junk(w: &World, at: ReplicaId, rows: u64) -> i64 {
    let mut conn = rusqlite::Connection::open(w.keys_db(at)).unwrap();
    let tx = conn.transaction().unwrap();
    let first: i64 = tx
        .query_row("SELECT coalesce(max(seq), 0) + 1 FROM data_keys", [], |r| {
            r.get(0)
        })
        .unwrap();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO data_keys (seq, tx, patient, key_id, not_after_ms, sealed_key,
                    on_chain, facts_tag) VALUES (?1, ?2, ?3, ?4, ?5, x'00', ?6, NULL)",
            )
            .unwrap();
        for i in 0..rows {
            let mut id = [0xA5u8; 32];
            id[..8].copy_from_slice(&i.to_le_bytes());
            let mut key_id = [0x5Au8; 32];
            key_id[..8].copy_from_slice(&i.to_le_bytes());
            insert
                .execute(rusqlite::params![
                    first + i as i64,
                    id.as_slice(),
                    [0xEEu8; 16].as_slice(),
                    key_id.as_slice(),
                    i64::MAX,
                    vec![0u8; 13],
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    first
}

/// Fixed (f03945e: a row read again from the chain is judged again by it, its key deleted if this validator is no party and no live grantee). Was: the patients of grants that ended during the sweep (`Service::ended_while_checking`,
/// the fix of red team s9's second break) are kept in memory only, while the grant's
/// `read_grants` row is deleted in the commit that ends it. A writer of the stopped grantee's
/// `keys.db` without the operator key moves a received record's row to another patient (as in
/// s9's test) and the grant's time runs out while the grantee is down. At its first timer the
/// grant ends by the clock, finds no row of the patient (the moved one is hidden), and its
/// patient waits in `ended_while_checking` for the sweep's end; the sweep corrects the moved
/// row's patient in its first slice. The grantee restarts before the sweep is done (a sweep
/// of a large store takes minutes: here, junk rows the sweep looks up on the chain): the set is
/// gone, the grant is gone from `keys.db`, and nothing ever drops the corrected row. The
/// grantee keeps the key of an ended grant for good, its row now the chain's and tagged.
/// Expected: the patients to drop again kept in `keys.db` with the grant's end (or the grant's
/// row kept until the sweep is done).
#[test]
fn red_team_s9b_a_restart_during_the_sweep_keeps_an_ended_grants_key() {
    let mut w = World::new();
    let (patient, control, moved) = w.stopped_grantee_with_a_moved_row();
    let junk = add_junk(&w, CLINIC, 400_000);
    w.clock.advance_ms(61_000);
    w.cluster.restart(CLINIC).unwrap();
    let restarted = Instant::now();
    wait_until("the grant's end to drop the control record", || {
        !holds(&w, CLINIC, &control)
    });
    wait_until(
        "the clinic's sweep to write the chain's patient back",
        || patient_of(&w, CLINIC, &moved).is_none_or(|p| p == patient.id.to_vec()),
    );
    // The sweep is still looking up junk rows (400,000, a chain lookup each, 25 ms a 250 ms
    // timer): the grantee restarts.
    w.cluster.stop(CLINIC);
    eprintln!("stopped {:?} after the restart", restarted.elapsed());
    rusqlite::Connection::open(w.keys_db(CLINIC))
        .unwrap()
        .execute("DELETE FROM data_keys WHERE seq >= ?1", [junk])
        .unwrap();
    w.cluster.restart(CLINIC).unwrap();
    w.wait_state(CLINIC, &control, OpenState::Elsewhere { home: HOSPITAL });
    // Several timers: the sweep of the few real rows is done in the first.
    std::thread::sleep(Duration::from_millis(1_500));
    // Corrected, or (f03945e) deleted as soon as the sweep read it back from the chain.
    assert!(
        patient_of(&w, CLINIC, &moved).is_none_or(|p| p == patient.id.to_vec()),
        "the row is the chain's again"
    );
    assert!(
        !holds(&w, CLINIC, &moved),
        "the grantee keeps an ended grant's key: it restarted during the sweep"
    );
}
