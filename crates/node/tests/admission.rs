//! Mempool admission of peers' forwards (docs/SECURITY.md, "Identities, keys and consent on
//! chain", §1): a primary a block behind the validator that admitted a record parks the record
//! (its grant is not on the primary's chain yet) and proposes it once it has caught up, instead
//! of dropping it and having that validator's timer replace it.

use std::time::Duration;

mod common;

use common::world::{CLINIC, HOSPITAL, World};
use common::{fast_timing, note};

use node::load::Person;
use node::{Timing, Verdict};

#[test]
fn a_primary_behind_parks_a_forwarded_record_until_it_holds_the_grant() {
    // A timer long enough that no view change comes while the primary is held back.
    let w = World::with_timing(Timing {
        view_change_timeout: Duration::from_secs(5),
        ..fast_timing()
    });
    let patient = Person::patient(CLINIC);
    let doctor = Person::doctor(CLINIC, "Oncology", "Dr Author");
    w.enroll(&[&patient, &doctor]);
    let clinic = w.node(CLINIC);
    let hospital = w.node(HOSPITAL);
    assert_eq!(hospital.status().primary, HOSPITAL);
    // The primary hears no commit: the others commit the grant's block without it.
    w.hold_back(HOSPITAL);
    let grant =
        w.rt.block_on(patient.write_grant(&clinic, &doctor.id, "a visit"))
            .unwrap();
    let verdict =
        w.rt.block_on(clinic.submit_applied(grant.clone(), Duration::from_secs(20)))
            .unwrap();
    assert!(matches!(verdict, Verdict::Applied { .. }), "{verdict:?}");
    let grant_id = grant.id(&w.genesis_hash());
    let record =
        w.rt.block_on(doctor.record(&clinic, &patient.id, grant_id, &note("seen")))
            .unwrap();
    let record_id = w.rt.block_on(clinic.submit(record)).unwrap();
    // The clinic forwards it to the primary, which does not hold the grant yet: parked, not
    // refused.
    std::thread::sleep(Duration::from_millis(300));
    assert!(hospital.status().height < clinic.status().height);
    assert_eq!(
        hospital.status().refused_forwards,
        0,
        "{:?}",
        hospital.status()
    );
    w.network().clear_filter();
    let verdict =
        w.rt.block_on(clinic.wait_applied(record_id, Duration::from_secs(20)))
            .unwrap();
    assert!(matches!(verdict, Verdict::Applied { .. }), "{verdict:?}");
    assert_eq!(clinic.status().view, 0, "no view change was needed");
}

/// A primary behind a backup that applied a block of grants parks more of that one backup's
/// records than a quarter of 4,096, its share before: the rest were refused, the oldest of them
/// waited for the backup's retransmission, and its age turned away every new submission there
/// meanwhile (issue 11: one-second stalls of the whole chain at 10,000,000 transactions, the
/// primary three blocks behind the validator all the clients used).
#[test]
fn a_primary_behind_parks_more_than_a_batch_of_one_backups_records() {
    // Timers long enough that nothing times out, or is turned away, while the primary is held
    // back and the records are sealed one by one.
    let w = World::with_timing(Timing {
        view_change_timeout: Duration::from_secs(120),
        ..fast_timing()
    });
    let patient = Person::patient(CLINIC);
    let doctor = Person::doctor(CLINIC, "Oncology", "Dr Author");
    w.enroll(&[&patient, &doctor]);
    let clinic = w.node(CLINIC);
    let hospital = w.node(HOSPITAL);
    assert_eq!(hospital.status().primary, HOSPITAL);
    let records = 4_096 / 4 + 76;
    assert!(records > Timing::default().max_batch);
    w.hold_back(HOSPITAL);
    let grants: Vec<_> = w.rt.block_on(async {
        let mut grants = Vec::new();
        for _ in 0..records {
            let grant = patient
                .write_grant(&clinic, &doctor.id, "a visit")
                .await
                .unwrap();
            grants.push(clinic.submit(grant).await.unwrap());
        }
        for grant in &grants {
            let verdict = clinic
                .wait_applied(*grant, Duration::from_secs(20))
                .await
                .unwrap();
            assert!(matches!(verdict, Verdict::Applied { .. }), "{verdict:?}");
        }
        grants
    });
    let submitted: Vec<_> = w.rt.block_on(async {
        let mut submitted = Vec::new();
        for grant in &grants {
            let record = doctor
                .record(&clinic, &patient.id, *grant, &note("seen"))
                .await
                .unwrap();
            submitted.push(clinic.submit(record).await.unwrap());
        }
        submitted
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(hospital.status().height < clinic.status().height);
    assert_eq!(
        hospital.status().refused_forwards,
        0,
        "{:?}",
        hospital.status()
    );
    w.network().clear_filter();
    w.rt.block_on(async {
        for record in submitted {
            let verdict = clinic
                .wait_applied(record, Duration::from_secs(20))
                .await
                .unwrap();
            assert!(matches!(verdict, Verdict::Applied { .. }), "{verdict:?}");
        }
    });
    assert_eq!(clinic.status().view, 0, "no view change was needed");
    assert_eq!(hospital.status().refused_forwards, 0);
}
