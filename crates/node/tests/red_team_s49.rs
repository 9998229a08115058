//! Red team s49: session 23's change to `keys.db` (a store without its chain refused at open;
//! facts relearned with the chain behind judged once caught up; an erasure and the sweep
//! after a start leave no row of an erased transaction). The sweep deletes a row put back
//! after its *erasure*; a row put back after its *grant's end* (revoked or expired) is not
//! judged by anything, and its key opens at the grantee again. Unit tests:
//! `node::keys`' `red_team_s49`. Findings: /work/helpers/rt-s49.md.
//!
//! Validators: 0 hospital, 1 clinic, 2 pharmacy, 3 insurance.

#[allow(dead_code)] // Helpers shared with the other cluster tests.
mod common;

use common::world::{CLINIC, HOSPITAL, HOUR_MS, World, wait_until};
use node::OpenState;

/// A clinic neurologist's read grant of a hospital patient's record; the clinic (the
/// grantee's home) receives the key; the grant is revoked and the clinic drops the key (as
/// `keys.rs`' `revocation_and_expiry_stop_deliveries_and_drop_received_keys`). A writer of
/// the stopped clinic's disk then puts the row back from a copy of `keys.db` taken while the
/// grant was live. Its tag holds (it binds the chain and the transaction), the transaction is
/// not erased: the sweep after the restart trusts it, and no grant's end comes again. The
/// clinic holds the key for good and opens the record (`Open`, where it answered `Elsewhere`).
#[test]
fn red_team_s49_a_row_put_back_after_its_grants_revocation_is_dropped_at_the_next_start() {
    let mut w = World::new();
    let (patient, author, reader) = w.cast(HOSPITAL, HOSPITAL, CLINIC);
    let grant = w.read_grant(&patient, &reader, HOUR_MS);
    let record = w.record(&author, &patient, "Melanoma");
    w.wait_state(CLINIC, &record, OpenState::Open);
    w.settle();
    w.cluster.stop(CLINIC);
    let old = w
        .keys_db(CLINIC)
        .with_file_name("keys-before-revocation.db");
    std::fs::copy(w.keys_db(CLINIC), &old).unwrap();
    w.cluster.restart(CLINIC).unwrap();
    w.revoke(&patient, grant);
    w.wait_state(CLINIC, &record, OpenState::Elsewhere { home: HOSPITAL });
    wait_until("the revoked grant's key to go", || {
        !w.key_rows(CLINIC).contains(&record)
    });
    w.settle();
    w.cluster.stop(CLINIC);
    w.put_row_back(CLINIC, &old, &record, false);
    std::fs::remove_file(&old).unwrap();
    w.cluster.restart(CLINIC).unwrap();
    w.settle();
    // The sweep after the start reads every row (the file changed): the key should go, and
    // the record answer `Elsewhere` again (it opens: the row put back is `Held`).
    w.wait_state(CLINIC, &record, OpenState::Elsewhere { home: HOSPITAL });
    wait_until("the row put back after the revocation to go", || {
        !w.key_rows(CLINIC).contains(&record)
    });
}
