//! Session 23: the asides red team s46 left (/work/helpers/rt-s46.md), on the embedded
//! cluster. `data_keys` keeps no UNIQUE rule on `tx` (no index on a random key at every
//! commit, docs/SECURITY.md §12.1 item 4), so a transaction's row may be there twice: copied
//! on disk, or put back from an older copy of the store. Either opens with the operator key.
//! The unit tests are `node::keys::store`'s and `node::keys`' `s46_asides`.
//!
//! Validators: 0 hospital, 1 clinic, 2 pharmacy, 3 insurance.

#[allow(dead_code)] // Helpers shared with the other cluster tests.
mod common;

use common::world::{HOSPITAL, World, wait_until};
use ledger::TxId;
use node::OpenState;
use node::load::Person;

/// A hospital patient's record, held at the hospital (its sealer and the patient's home),
/// with the sealed key of its row.
fn held_record(w: &World) -> (Person, TxId, Vec<u8>) {
    let (patient, _, record) = w.record_at_home("Glioblastoma");
    let sealed = w
        .sealed_row(HOSPITAL, &record)
        .expect("the sealer holds the key");
    (patient, record, sealed)
}

/// Aside 3, break: the record's row copied on disk (under another `seq` and key id) before
/// its erasure. The erasure deleted the first row found by the transaction; the copy kept the
/// key in `keys.db` (given to nobody: the chain says erased) for good. Fixed: an erasure
/// deletes every row of its transaction.
#[test]
fn an_erasure_leaves_no_copy_of_its_key_in_the_file() {
    let mut w = World::new();
    let (patient, record, sealed) = held_record(&w);
    w.cluster.stop(HOSPITAL);
    w.put_row_back(HOSPITAL, &w.keys_db(HOSPITAL), &record, true);
    w.cluster.restart(HOSPITAL).unwrap();
    w.erase(&patient, record, HOSPITAL);
    w.wait_state(HOSPITAL, &record, OpenState::Erased);
    wait_until("the erased record's rows to go", || {
        !w.key_rows(HOSPITAL).contains(&record)
    });
    assert_eq!(
        w.occurrences(HOSPITAL, &sealed),
        0,
        "the erased key's bytes are still in keys.db"
    );
}

/// Aside 3, break: the record's row put back after its erasure, from a copy of `keys.db`
/// taken before it (a writer of the stopped validator's files). No erasure comes again to
/// delete it. Fixed: the check of rows after a start (every row: the file changed) deletes a
/// row whose transaction the chain erased.
#[test]
fn a_row_put_back_after_its_erasure_is_deleted_at_the_next_start() {
    let mut w = World::new();
    let (patient, record, sealed) = held_record(&w);
    w.cluster.stop(HOSPITAL);
    let old = w.keys_db(HOSPITAL).with_file_name("keys-before-erasure.db");
    std::fs::copy(w.keys_db(HOSPITAL), &old).unwrap();
    w.cluster.restart(HOSPITAL).unwrap();
    w.erase(&patient, record, HOSPITAL);
    w.wait_state(HOSPITAL, &record, OpenState::Erased);
    wait_until("the erased record's row to go", || {
        !w.key_rows(HOSPITAL).contains(&record)
    });
    w.cluster.stop(HOSPITAL);
    w.put_row_back(HOSPITAL, &old, &record, true);
    std::fs::remove_file(&old).unwrap();
    w.cluster.restart(HOSPITAL).unwrap();
    w.wait_state(HOSPITAL, &record, OpenState::Erased);
    wait_until("the row put back to go", || {
        !w.key_rows(HOSPITAL).contains(&record)
    });
    assert_eq!(w.occurrences(HOSPITAL, &sealed), 0);
    assert!(w.key_counters(HOSPITAL).keys_rows_refused >= 1);
}
