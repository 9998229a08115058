//! Red team (s8) against the wanted-key schedule of commit 00cc5b66 (`keys/wanted.rs`), on the
//! embedded cluster: a silent patient's home holds back none of the keys another home gives,
//! and `wanted_from` (the lowest wanted height, where a restart reads blocks again) is exact
//! when a lower key comes while a higher one still waits. The schedule's own attacks are unit
//! tests in `crates/node/src/keys/wanted.rs`, `mod red_team_s8`.
//!
//! Validators: 0 hospital, 1 clinic, 2 pharmacy, 3 insurance.

use std::time::{Duration, Instant};

#[allow(dead_code)] // Helpers shared with the other cluster tests.
mod common;

use common::world::{CLINIC, HOSPITAL, HOUR_MS, INSURANCE, PHARMACY, World, diagnosis, wait_until};
use ledger::{Queries, TxId};
use node::load::Person;
use node::{OpenState, Wire};

/// The height of `tx`'s block on `w`'s hospital chain.
fn height_of(w: &World, tx: &TxId) -> u64 {
    w.node(HOSPITAL)
        .read(|chain| chain.transaction(tx))
        .unwrap()
        .expect("on chain")
        .height
}

/// `wanted_from` as validator `at`'s `keys.db` holds it (meta, little-endian u64).
fn wanted_from(w: &World, at: pbft::ReplicaId) -> Option<u64> {
    let conn = rusqlite::Connection::open_with_flags(
        w.keys_db(at),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    let bytes: Vec<u8> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'wanted_from'",
            [],
            |row| row.get(0),
        )
        .ok()?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// The patient's home keeps silent toward the grantee (its key frames to the clinic are
/// withheld: its requests stay open until they time out, its window full): the keys of
/// another patient, whose home answers, still come, and keep coming after the silent home's
/// window has filled and timed out; the silent home's keys wait, asked of it only, and come
/// once it answers.
#[test]
fn held_a_silent_home_holds_back_none_of_the_keys_another_home_gives() {
    let w = World::new();
    let silent_patient = Person::patient(PHARMACY);
    let other_patient = Person::patient(INSURANCE);
    let author = Person::doctor(HOSPITAL, "Oncology", "Dr Author");
    let reader = Person::doctor(CLINIC, "Neurology", "Dr Reader");
    w.enroll(&[&silent_patient, &other_patient, &author, &reader]);
    let held_back: Vec<TxId> = (0..3)
        .map(|i| w.record(&author, &silent_patient, &format!("Withheld {i}")))
        .collect();
    for record in &held_back {
        w.wait_state(PHARMACY, record, OpenState::Open);
    }
    let first = w.record(&author, &other_patient, "Angina");
    w.network().filter(|from, to, frame| {
        !(from == PHARMACY && to == CLINIC && matches!(**frame, Wire::Keys(_)))
    });
    w.read_grant(&silent_patient, &reader, HOUR_MS);
    w.read_grant(&other_patient, &reader, HOUR_MS);
    assert_eq!(
        diagnosis(&w.wait_state(CLINIC, &first, OpenState::Open)),
        "Angina"
    );
    // Long enough for the clinic's four requests to the silent home to be open, time out and
    // be sent again.
    std::thread::sleep(Duration::from_secs(7));
    for record in &held_back {
        assert!(
            matches!(
                w.open(CLINIC, record).state,
                OpenState::Waiting { from: PHARMACY, .. }
            ),
            "waits for the silent home"
        );
    }
    let later = w.record(&author, &other_patient, "Pleurisy");
    let asked = Instant::now();
    assert_eq!(
        diagnosis(&w.wait_state(CLINIC, &later, OpenState::Open)),
        "Pleurisy"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "a key the other home gives took {:?}",
        asked.elapsed()
    );
    // The author gave the grantee nothing behind the silent home's back.
    assert_eq!(w.keys_sent(HOSPITAL, CLINIC), 0);
    w.network().clear_filter();
    for record in &held_back {
        w.wait_state(CLINIC, record, OpenState::Open);
    }
}

/// Two keys wanted by a grantee: a lower one (its home answers) and a higher one (its home is
/// down). When the lower one comes, `wanted_from` moves up to the higher one's height exactly,
/// never past it: a restart then wants the higher one again, and gets it once its home is back.
#[test]
fn held_wanted_from_follows_the_lowest_key_still_wanted_across_a_restart() {
    let mut w = World::new();
    let down_patient = Person::patient(PHARMACY);
    let up_patient = Person::patient(INSURANCE);
    let author = Person::doctor(HOSPITAL, "Oncology", "Dr Author");
    let reader = Person::doctor(CLINIC, "Neurology", "Dr Reader");
    w.enroll(&[&down_patient, &up_patient, &author, &reader]);
    let lower = w.record(&author, &up_patient, "Angina");
    let higher = w.record(&author, &down_patient, "Mesothelioma");
    w.wait_state(PHARMACY, &higher, OpenState::Open);
    let (lower_at, higher_at) = (height_of(&w, &lower), height_of(&w, &higher));
    assert!(lower_at < higher_at);
    // The down patient's grant, approved at their home, which then goes down.
    let down_grant = w.sealed_read_grant(&down_patient, &reader, HOUR_MS);
    w.cluster.stop(PHARMACY);
    w.applied_at(CLINIC, down_grant);
    // The lower key is wanted (held back by its home a moment) while the higher one waits.
    w.network().filter(|from, to, frame| {
        !(from == INSURANCE && to == CLINIC && matches!(**frame, Wire::Keys(_)))
    });
    let up_grant = w.sealed_read_grant(&up_patient, &reader, HOUR_MS);
    let granted_at = w.applied_at(CLINIC, up_grant);
    wait_until("both keys wanted", || {
        w.node(CLINIC).key_status().waiting >= 2
    });
    wait_until("keys.db to record the lower key's height", || {
        wanted_from(&w, CLINIC).is_some_and(|from| from <= lower_at)
    });
    w.network().clear_filter();
    assert_eq!(
        diagnosis(&w.wait_state(CLINIC, &lower, OpenState::Open)),
        "Angina"
    );
    // A block after the lower key came, so that a commit writes the processed height and
    // `wanted_from` again.
    w.applied_at(HOSPITAL, common::enrollment(&w.node(HOSPITAL)));
    wait_until("keys.db to move wanted_from past the lower key", || {
        node::KeyStoreFacts::read(&w.keys_db(CLINIC))
            .is_ok_and(|facts| facts.processed_height >= granted_at)
            && wanted_from(&w, CLINIC).is_some_and(|from| from > lower_at)
    });
    assert_eq!(
        wanted_from(&w, CLINIC),
        Some(higher_at),
        "wanted_from is the lowest height still wanted"
    );
    w.cluster.stop(CLINIC);
    w.cluster.restart(CLINIC).unwrap();
    assert!(matches!(
        w.open(CLINIC, &higher).state,
        OpenState::Waiting { from: PHARMACY, .. }
    ));
    w.cluster.restart(PHARMACY).unwrap();
    assert_eq!(
        diagnosis(&w.wait_state(CLINIC, &higher, OpenState::Open)),
        "Mesothelioma"
    );
}
