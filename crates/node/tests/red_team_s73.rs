//! Red team s73, on parked forwards (docs/SECURITY.md, "parked forwards"; commit 76a914a2):
//! a pass judges at most a batch of each sender's parked requests, oldest first. The oldest a
//! pass judges are the same every pass while they keep failing for a reason that "may pass
//! later", so a sender's newer parked requests, which would pass now, are not judged until
//! those oldest run out (`resend_after`: batch window + view-change timeout, 8 s at the default
//! timing, four times a backup's 2 s timer). Before 76a914a2 every parked request was judged
//! at every pass. Under load (blocks keep coming) nothing else rescues them: a backup
//! retransmits its unproposed requests (a fresh forward is judged at once) only once it has
//! seen no progress for a quarter of its timer. Judging the requests a pass left unjudged
//! before those it judged already (a rotation within each sender's queue) keeps the budget
//! and passes every test here.
//!
//! F1: an honest backup's queue, its oldest a patient's denials of a request that expired
//! meanwhile: the backup's records wait behind them.
//! F2: a dishonest validator that forwards an honest backup's request first parks it behind a
//! batch of its own that never pass, and the honest copy is "parked once" (dropped).
//! G1: a guard: a dishonest sender's never-passing batch does not hold an honest sender's.

use std::time::{Duration, Instant};

mod common;

use common::world::{CLINIC, HOSPITAL, INSURANCE, PHARMACY, World};
use common::{enrollment, fast_timing, note, sealed_write_request};

use ledger::{SignedTx, TxId};
use node::load::Person;
use node::{Frame, NodeHandle, Timing, Verdict, Wire};

/// A batch of 8 (a hostile client's batch of never-passing requests is 8, not 1,000) and a
/// timer of 10 s, long enough that no view change comes while the primary is held back:
/// `resend_after` is about 10 s.
fn timing() -> Timing {
    Timing {
        max_batch: 8,
        view_change_timeout: Duration::from_secs(10),
        ..fast_timing()
    }
}

/// How long the records may take, from the primary's release, to be applied: half of
/// `resend_after`. Judged at the first pass after the catch-up they take about 2.3 s here (the
/// primary's catch-up); held until a batch parked just before them runs out, about 9.4 s.
fn promptly() -> Duration {
    timing().view_change_timeout / 2
}

/// `count` write grants of `patient` to `doctor`, applied at the clinic (not at the primary
/// while it is held back), and a record under each, submitted at the clinic.
fn records_under_new_grants(
    w: &World,
    clinic: &NodeHandle,
    patient: &Person,
    doctor: &Person,
    count: usize,
) -> Vec<SignedTx> {
    w.rt.block_on(async {
        let mut grants = Vec::new();
        for _ in 0..count {
            let grant = patient
                .write_grant(clinic, &doctor.id, "a visit")
                .await
                .unwrap();
            grants.push(clinic.submit(grant).await.unwrap());
        }
        let mut records = Vec::new();
        for grant in grants {
            let verdict = clinic
                .wait_applied(grant, Duration::from_secs(20))
                .await
                .unwrap();
            assert!(matches!(verdict, Verdict::Applied { .. }), "{verdict:?}");
            records.push(
                doctor
                    .record(clinic, &patient.id, grant, &note("seen"))
                    .await
                    .unwrap(),
            );
        }
        records
    })
}

/// Releases the primary and answers how long until every one of `ids` was applied (at the
/// clinic), each applied. Meanwhile the pharmacy's clients enroll a patient every 50 ms: the
/// chain makes progress, as under load, so no backup calls itself stalled and retransmits its
/// pending requests (a fresh forward of a record is judged at once, parked or not).
fn release_and_time(w: &World, clinic: &NodeHandle, ids: &[TxId]) -> Duration {
    w.network().clear_filter();
    let released = Instant::now();
    let pharmacy = w.node(PHARMACY);
    let load = w.rt.spawn(async move {
        loop {
            let _ = pharmacy.submit(enrollment(&pharmacy)).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let applied = w.rt.block_on(async {
        for id in ids {
            let verdict = clinic.wait_applied(*id, Duration::from_secs(30)).await;
            assert!(
                matches!(verdict, Ok(Verdict::Applied { .. })),
                "{verdict:?}"
            );
        }
        released.elapsed()
    });
    load.abort();
    applied
}

/// A forward of `txs` signed by `from` with its node key, as a dishonest validator signs one.
fn forward_from(w: &World, from: pbft::ReplicaId, name: &str, txs: &[SignedTx]) -> Frame {
    let genesis_hash = w.genesis_hash();
    let key = w.node_key(from, name);
    let message =
        pbft::Message::Forward(txs.iter().map(|tx| tx.to_request(&genesis_hash)).collect());
    let signature = ledger::crypto::sign_message(&key, &genesis_hash, &message);
    Frame::new(Wire::Consensus(pbft::Signed {
        from,
        message,
        signature,
    }))
}

/// `count` denials by `patient` (its own device) of targets that do not exist: refused with
/// "no such grant or pending request of this patient", which may pass later, for ever.
fn never_passing(w: &World, patient: &Person, count: usize) -> Vec<SignedTx> {
    (0..count)
        .map(|i| {
            let mut target = [0x5a; 32];
            target[..8].copy_from_slice(&(i as u64).to_be_bytes());
            patient.revoke(&w.genesis_hash(), target)
        })
        .collect()
}

/// F1. A patient of the clinic denies, a batch of times, a doctor's request the primary (held
/// back) has not applied: the clinic admitted each (the request was pending there), the
/// primary parks each. The request expires (15 minutes pass): the denials never pass again,
/// but "no such ... pending request" may pass later, so they stay parked until `resend_after`.
/// The clinic's next records, whose grants the primary has not applied either, are parked
/// behind them. Once the primary catches up the records pass, but every pass judges the same
/// oldest batch of the clinic's (the denials) and the records wait until the denials run out:
/// about `resend_after` after they were parked, past the clinic's timer for them. Before
/// 76a914a2 every parked request was judged at each pass.
#[test]
fn an_honest_backups_parked_records_do_not_wait_behind_a_batch_of_its_own_that_never_pass() {
    let w = World::with_timing(timing());
    let batch = timing().max_batch;
    let patient = Person::patient(CLINIC);
    let doctor = Person::doctor(CLINIC, "Oncology", "Dr Author");
    w.enroll(&[&patient, &doctor]);
    let clinic = w.node(CLINIC);
    let hospital = w.node(HOSPITAL);
    assert_eq!(hospital.status().primary, HOSPITAL);
    w.hold_back(HOSPITAL);
    let request = sealed_write_request(&w.rt, &clinic, &doctor, &patient, "a visit");
    let request_id = request.id(&w.genesis_hash());
    let verdict =
        w.rt.block_on(clinic.submit_applied(request, Duration::from_secs(20)))
            .unwrap();
    assert!(matches!(verdict, Verdict::Applied { .. }), "{verdict:?}");
    // A batch of denials of the one request (a hostile patient, or the same click on many
    // devices): each passes at the clinic, where the request is pending.
    w.rt.block_on(async {
        for _ in 0..batch {
            clinic
                .submit(patient.revoke(&w.genesis_hash(), request_id))
                .await
                .unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        hospital.status().refused_forwards,
        0,
        "the denials are parked"
    );
    // The request expires: no denial of it passes any more, anywhere.
    w.clock.advance_ms(ledger::rules::REQUEST_MS + 60_000);
    let records = records_under_new_grants(&w, &clinic, &patient, &doctor, 4);
    let ids: Vec<TxId> = w.rt.block_on(async {
        let mut ids = Vec::new();
        for record in records {
            ids.push(clinic.submit(record).await.unwrap());
        }
        ids
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(hospital.status().height < clinic.status().height);
    assert_eq!(
        hospital.status().refused_forwards,
        0,
        "the records are parked"
    );
    let took = release_and_time(&w, &clinic, &ids);
    assert!(
        took < promptly(),
        "the clinic's records, which pass once the primary caught up, took {took:?} (the \
         primary judged only its oldest batch of the clinic's parked requests, the denials, \
         each pass, until they ran out); view {}",
        clinic.status().view
    );
    assert_eq!(clinic.status().view, 0, "no view change was needed");
}

/// F2. A dishonest validator (the insurance) parks a batch of requests at the primary that
/// never pass, then forwards an honest backup's record (the clinic's) before the clinic does
/// (it heard it first: a resend broadcast, a client that submits to two validators). The
/// record is parked at the back of the insurance's queue; the clinic's own forward of it is
/// "parked once", i.e. dropped. Once the primary holds the record's grant, every pass judges
/// the insurance's oldest batch and never the record, until the insurance's batch runs out:
/// about `resend_after`, past the clinic's timer.
#[test]
fn a_dishonest_validator_forwarding_an_honest_record_first_does_not_hold_it_behind_its_own() {
    let w = World::with_timing(timing());
    let batch = timing().max_batch;
    let patient = Person::patient(CLINIC);
    let doctor = Person::doctor(CLINIC, "Oncology", "Dr Author");
    let stranger = Person::patient(INSURANCE);
    w.enroll(&[&patient, &doctor, &stranger]);
    let clinic = w.node(CLINIC);
    let hospital = w.node(HOSPITAL);
    assert_eq!(hospital.status().primary, HOSPITAL);
    w.hold_back(HOSPITAL);
    let record = records_under_new_grants(&w, &clinic, &patient, &doctor, 1).remove(0);
    let junk = never_passing(&w, &stranger, batch);
    assert!(w.network().inject(
        INSURANCE,
        HOSPITAL,
        forward_from(&w, INSURANCE, "insurance", &junk)
    ));
    assert!(w.network().inject(
        INSURANCE,
        HOSPITAL,
        forward_from(&w, INSURANCE, "insurance", std::slice::from_ref(&record))
    ));
    std::thread::sleep(Duration::from_millis(300));
    let id = w.rt.block_on(clinic.submit(record)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(hospital.status().height < clinic.status().height);
    assert_eq!(hospital.status().refused_forwards, 0, "all parked");
    let took = release_and_time(&w, &clinic, &[id]);
    assert!(
        took < promptly(),
        "the clinic's record took {took:?}: parked once, in the insurance's queue, behind a \
         batch of the insurance's that never pass; view {}",
        clinic.status().view
    );
    assert_eq!(clinic.status().view, 0, "no view change was needed");
}

/// G1 (a guard of the claim, passes on 76a914a2). A dishonest validator's batch of parked
/// requests that never pass does not hold back the honest backup's parked records: each
/// sender's batch of a pass is its own.
#[test]
fn a_dishonest_senders_never_passing_batch_does_not_hold_an_honest_senders_records() {
    let w = World::with_timing(timing());
    let batch = timing().max_batch;
    let patient = Person::patient(CLINIC);
    let doctor = Person::doctor(CLINIC, "Oncology", "Dr Author");
    let stranger = Person::patient(INSURANCE);
    w.enroll(&[&patient, &doctor, &stranger]);
    let clinic = w.node(CLINIC);
    let hospital = w.node(HOSPITAL);
    assert_eq!(hospital.status().primary, HOSPITAL);
    w.hold_back(HOSPITAL);
    // Four batches of the insurance's, more than a pass judges of it.
    for chunk in never_passing(&w, &stranger, 4 * batch).chunks(batch) {
        assert!(w.network().inject(
            INSURANCE,
            HOSPITAL,
            forward_from(&w, INSURANCE, "insurance", chunk)
        ));
    }
    std::thread::sleep(Duration::from_millis(300));
    let records = records_under_new_grants(&w, &clinic, &patient, &doctor, 2 * batch);
    let ids: Vec<TxId> = w.rt.block_on(async {
        let mut ids = Vec::new();
        for record in records {
            ids.push(clinic.submit(record).await.unwrap());
        }
        ids
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(hospital.status().height < clinic.status().height);
    assert_eq!(hospital.status().refused_forwards, 0, "all parked");
    let took = release_and_time(&w, &clinic, &ids);
    assert!(
        took < promptly(),
        "the clinic's records took {took:?} behind the insurance's parked requests; view {}",
        clinic.status().view
    );
    assert_eq!(clinic.status().view, 0, "no view change was needed");
}
