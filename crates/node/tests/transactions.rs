//! Transactions through a validator's handle, on the embedded cluster (real replicas, SQLite
//! files and signatures): the edge check and mempool admission of a submission, the chain's
//! verdict once applied, and admission of what peers forward.

use std::time::Duration;

mod common;

use common::{enrollment, fast_timing, note, runtime};
use ledger::rules::reason;
use ledger::{Queries, TxId};
use node::load::{Person, enroll};
use node::transport::Transport;
use node::{Cluster, Frame, NodeError, NodeHandle, Timing, TxStatus, Verdict, Wire};

const WAIT: Duration = Duration::from_secs(20);

/// A forward of `tx` from the clinic (validator 1) as its runtime signs one, its signature
/// broken if `forge`.
fn clinic_forward(
    dir: &std::path::Path,
    cluster: &Cluster,
) -> impl Fn(&ledger::SignedTx, bool) -> Frame {
    let genesis_hash = cluster.handle(1).unwrap().genesis_hash();
    let clinic_key = ledger::master::read_node_key(
        &dir.join("clinic/node.key"),
        cluster.operator_key(1).unwrap(),
        "clinic",
    )
    .unwrap();
    move |tx, forge| {
        let message = pbft::Message::Forward(vec![tx.to_request(&genesis_hash)]);
        let mut signature = ledger::crypto::sign_message(&clinic_key, &genesis_hash, &message);
        if forge {
            signature.0[5] ^= 0x10;
        }
        Frame::new(Wire::Consensus(pbft::Signed {
            from: 1,
            message,
            signature,
        }))
    }
}

/// Waits until `handle`'s validator applied `height`.
fn wait_height(handle: &NodeHandle, height: u64) {
    let deadline = std::time::Instant::now() + WAIT;
    while handle.status().height < height {
        assert!(
            std::time::Instant::now() < deadline,
            "{} did not reach height {height}",
            handle.name()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A patient and a cardiologist whose home is `handle`'s validator, enrolled.
fn people(rt: &tokio::runtime::Runtime, handle: &NodeHandle) -> (Person, Person) {
    let patient = Person::patient(handle.id());
    let doctor = Person::doctor(handle.id(), "Cardiology", "Dr Ada Byron");
    rt.block_on(enroll(
        std::slice::from_ref(handle),
        &[&patient, &doctor],
        WAIT,
    ))
    .expect("enrolled");
    (patient, doctor)
}

/// Two records of `doctor` in `patient`'s history under the one write grant `grant`, sealed at
/// `home`.
fn two_records(
    rt: &tokio::runtime::Runtime,
    home: &NodeHandle,
    doctor: &Person,
    patient: &Person,
    grant: TxId,
) -> (ledger::SignedTx, ledger::SignedTx) {
    let record = |text| {
        rt.block_on(doctor.record(home, &patient.id, grant, &note(text)))
            .unwrap()
    };
    (record("first"), record("second"))
}

#[test]
fn admission_refuses_a_record_without_a_grant_with_the_rules_reason() {
    let dir = common::data_dir();
    let cluster = Cluster::open(dir.path(), fast_timing()).unwrap();
    let hospital = cluster.handle(0).unwrap();
    let rt = runtime();
    let (patient, doctor) = people(&rt, &hospital);
    let genesis_hash = hospital.genesis_hash();

    // A record under a grant that was never given: refused, nothing stored.
    let made_up: TxId = ledger::sha256(b"no such grant");
    let record = rt
        .block_on(doctor.record(&hospital, &patient.id, made_up, &note("angina")))
        .unwrap();
    let id = record.id(&genesis_hash);
    match rt.block_on(hospital.submit(record)) {
        Err(NodeError::Refused(why)) => assert_eq!(why, reason::NO_SUCH_GRANT),
        other => panic!("a record without a grant was not refused: {other:?}"),
    }
    assert_eq!(hospital.tx_status(&id).unwrap(), TxStatus::Unknown);
    assert_eq!(hospital.status().pending, 0);

    // Under a real grant, in another department than the doctor's: the rule's reason too.
    let grant = rt
        .block_on(patient.write_grant(&hospital, &doctor.id, "visit"))
        .unwrap();
    let grant_id = grant.id(&genesis_hash);
    let applied = rt.block_on(hospital.submit_applied(grant, WAIT)).unwrap();
    assert!(matches!(applied, Verdict::Applied { .. }), "{applied:?}");
    let mut elsewhere = doctor.clone();
    elsewhere.department = Some("Oncology".into());
    let record = rt
        .block_on(elsewhere.record(&hospital, &patient.id, grant_id, &note("angina")))
        .unwrap();
    match rt.block_on(hospital.submit(record)) {
        Err(NodeError::Refused(why)) => assert_eq!(why, reason::NOT_OWN_DEPARTMENT),
        other => panic!("a record in another department was not refused: {other:?}"),
    }

    // The edge refuses a signature that does not verify before admission looks.
    let mut forged = rt
        .block_on(doctor.record(&hospital, &patient.id, grant_id, &note("angina")))
        .unwrap();
    forged.signature[3] ^= 1;
    assert!(matches!(
        rt.block_on(hospital.submit(forged)),
        Err(NodeError::Invalid(ledger::Invalid::BadSignature))
    ));

    // The lawful record is admitted and applied.
    let record = rt
        .block_on(doctor.record(&hospital, &patient.id, grant_id, &note("angina")))
        .unwrap();
    let verdict = rt.block_on(hospital.submit_applied(record, WAIT)).unwrap();
    assert!(matches!(verdict, Verdict::Applied { .. }), "{verdict:?}");
    let records = hospital.read(|r| r.records_of(&patient.id)).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].grant, grant_id);
}

/// Admission sees the committed chain only: two records under one grant, submitted back to
/// back, both pass it, and the chain orders them. The first uses the grant up; the second is
/// in the same block, rejected with the rule's reason, and `submit_applied` says so.
#[test]
fn submit_applied_reports_a_rejection_at_commit() {
    let dir = common::data_dir();
    // Nothing commits before a cut: both records wait in one batch.
    let timing = Timing {
        batch_window: Duration::from_secs(60),
        ..fast_timing()
    };
    let cluster = Cluster::open(dir.path(), timing).unwrap();
    // The primary of view 0: its batch keeps the order of submission.
    let hospital = cluster.handle(0).unwrap();
    let rt = runtime();
    let (patient, doctor) = people(&rt, &hospital);
    let genesis_hash = hospital.genesis_hash();
    let grant = rt
        .block_on(patient.write_grant(&hospital, &doctor.id, "two notes, one grant"))
        .unwrap();
    let grant_id = grant.id(&genesis_hash);
    let Verdict::Applied {
        height: granted_at,
        block_time_ms,
    } = rt.block_on(hospital.submit_applied(grant, WAIT)).unwrap()
    else {
        panic!("the grant was not applied");
    };
    assert!(block_time_ms > 0);

    let (first, second) = two_records(&rt, &hospital, &doctor, &patient, grant_id);
    let (first_id, second_id) = (first.id(&genesis_hash), second.id(&genesis_hash));
    let (first_verdict, second_verdict) = rt.block_on(async {
        let id = hospital.submit(first.clone()).await.unwrap();
        assert_eq!(id, first_id);
        let second_verdict = hospital.submit_applied(second.clone(), WAIT).await.unwrap();
        let first_verdict = hospital.wait_applied(first_id, WAIT).await.unwrap();
        (first_verdict, second_verdict)
    });
    let Verdict::Applied { height, .. } = first_verdict else {
        panic!("the first record was not applied: {first_verdict:?}");
    };
    assert!(height > granted_at);
    assert_eq!(
        second_verdict,
        Verdict::Rejected {
            height,
            reason: reason::GRANT_USED.into()
        }
    );
    let records = hospital.read(|r| r.records_of(&patient.id)).unwrap();
    assert_eq!(records.len(), 1, "a rejected record never shows");
    assert_eq!(records[0].tx_id, first_id);

    // Asked again, the verdicts come from the chain; a submission of an id on chain is refused.
    rt.block_on(async {
        assert_eq!(
            hospital.submit_applied(second, WAIT).await.unwrap(),
            second_verdict
        );
        assert_eq!(
            hospital.wait_applied(second_id, WAIT).await.unwrap(),
            second_verdict
        );
        match hospital.submit(first).await {
            Err(NodeError::Refused(why)) => assert_eq!(why, reason::DUPLICATE),
            other => panic!("a transaction on chain was submitted again: {other:?}"),
        }
    });
}

/// A transaction submitted twice while it waits for its block is stored once: the second
/// submission is answered with the same id, and one entry commits.
#[test]
fn a_pending_transaction_submitted_again_is_stored_once() {
    let dir = common::data_dir();
    let timing = Timing {
        batch_window: Duration::from_secs(60),
        ..fast_timing()
    };
    let cluster = Cluster::open(dir.path(), timing).unwrap();
    let clinic = cluster.handle(1).unwrap();
    let rt = runtime();
    let tx = enrollment(&clinic);
    let (a, b, c) = rt.block_on(async {
        // Two at once (most likely in one batch of the validator's thread), then one more.
        let (a, b) = tokio::join!(clinic.submit(tx.clone()), clinic.submit(tx.clone()));
        let c = clinic.submit(tx.clone()).await.unwrap();
        (a.unwrap(), b.unwrap(), c)
    });
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(clinic.status().pending, 1);
    let outcome = rt.block_on(clinic.cut()).unwrap();
    assert_eq!(outcome.tx_count, 1);
    let verdict = rt.block_on(clinic.wait_applied(a, WAIT)).unwrap();
    assert!(matches!(verdict, Verdict::Applied { .. }), "{verdict:?}");
}

/// However many requests read the chain at once (an HTTP server's blocking pool runs
/// hundreds), a validator's handle keeps at most `MAX_CHAIN_READERS` connections, each with its
/// page cache: the rest wait for one. A long read runs on a connection of its own.
#[test]
fn reads_at_once_share_a_bounded_set_of_connections() {
    let dir = common::data_dir();
    let cluster = Cluster::open(dir.path(), fast_timing()).unwrap();
    let clinic = cluster.handle(1).unwrap();
    let readers = node::MAX_CHAIN_READERS * 4;
    let barrier = std::sync::Barrier::new(readers);
    std::thread::scope(|scope| {
        for _ in 0..readers {
            scope.spawn(|| {
                barrier.wait();
                for _ in 0..5 {
                    let head = clinic
                        .read(|reader| {
                            std::thread::sleep(Duration::from_millis(2));
                            reader.head()
                        })
                        .unwrap();
                    assert_eq!(head.0, 0);
                }
            });
        }
    });
    assert_eq!(clinic.chain_readers_peak(), 8);
    let summary = clinic
        .read_apart(|reader| reader.verify(clinic.genesis(), &mut |_| {}))
        .unwrap();
    assert_eq!(summary.blocks, 1);
    assert_eq!(clinic.chain_readers_peak(), 8);
}

/// Mempool admission of a peer's forward: a record without a grant, well signed by the
/// doctor's key and forwarded by a validator, never reaches the primary's replica: parked
/// (its grant may be in a block the primary has not applied yet), then dropped and counted
/// when a backup's timer would have run out; an admissible transaction forwarded next commits.
#[test]
fn a_forwarded_transaction_that_breaks_a_rule_is_dropped_and_counted() {
    let dir = common::data_dir();
    let cluster = Cluster::open(dir.path(), fast_timing()).unwrap();
    let hospital = cluster.handle(0).unwrap();
    let clinic = cluster.handle(1).unwrap();
    let rt = runtime();
    let (patient, doctor) = people(&rt, &hospital);
    let genesis_hash = hospital.genesis_hash();
    // What the clinic forwards to the primary, signed with its key as its runtime signs it.
    let signed_forward = clinic_forward(dir.path(), &cluster);
    let forward = |tx: &ledger::SignedTx| {
        cluster
            .network()
            .endpoint(1)
            .send(0, signed_forward(tx, false));
    };
    assert_eq!(hospital.status().refused_forwards, 0);

    let unlawful = rt
        .block_on(doctor.record(
            &hospital,
            &patient.id,
            ledger::sha256(b"no grant"),
            &note("forged"),
        ))
        .unwrap();
    forward(&unlawful);
    let lawful = enrollment(&clinic);
    forward(&lawful);
    let verdict = rt
        .block_on(hospital.wait_applied(lawful.id(&genesis_hash), WAIT))
        .unwrap();
    assert!(matches!(verdict, Verdict::Applied { .. }), "{verdict:?}");
    let deadline = std::time::Instant::now() + WAIT;
    while hospital.status().refused_forwards == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(hospital.status().refused_forwards, 1);
    assert_eq!(
        hospital.tx_status(&unlawful.id(&genesis_hash)).unwrap(),
        TxStatus::Unknown
    );
}

/// How many messages `handle`'s validator rejected for `reason` (its metrics' label).
fn rejected(handle: &NodeHandle, reason: &str) -> f64 {
    let label = format!("\"{reason}\"");
    let text = handle.shared().telemetry().encode();
    text.lines()
        .find(|line| line.contains("messages_rejected") && line.contains(&label))
        .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// A turn's consensus messages are checked in one batch (`Authenticator::verify_batch`): among
/// forwards that reach the primary together, the one with a forged signature is dropped and
/// counted as unauthentic, and the others commit. The verdicts line up with the frames they
/// were computed for: frames left out of the batch between batched ones (a cut, a message whose
/// claimed sender is not the connection's peer) shift nothing, and the one posing as another
/// validator is dropped for that.
#[test]
fn a_forged_signature_among_forwards_costs_only_its_own_message() {
    let dir = common::data_dir();
    let cluster = Cluster::open(dir.path(), fast_timing()).unwrap();
    let hospital = cluster.handle(0).unwrap();
    let clinic = cluster.handle(1).unwrap();
    let rt = runtime();
    let genesis_hash = hospital.genesis_hash();
    let forward = clinic_forward(dir.path(), &cluster);
    let lawful: Vec<ledger::SignedTx> = (0..4).map(|_| enrollment(&clinic)).collect();
    let forged = enrollment(&clinic);
    let posing = enrollment(&clinic);
    let Wire::Consensus(signed) = &*forward(&posing, false) else {
        unreachable!("a forward is a consensus frame")
    };
    let posing_as_pharmacy = Frame::new(Wire::Consensus(pbft::Signed {
        from: 2,
        ..signed.clone()
    }));
    assert_eq!(rejected(&hospital, "unauthentic"), 0.0);
    let endpoint = cluster.network().endpoint(1);
    endpoint.send(0, forward(&lawful[0], false));
    endpoint.send(0, Frame::new(Wire::Cut));
    endpoint.send(0, posing_as_pharmacy);
    endpoint.send(0, forward(&lawful[1], false));
    endpoint.send(0, forward(&forged, true));
    endpoint.send(0, forward(&lawful[2], false));
    endpoint.send(0, Frame::new(Wire::Cut));
    endpoint.send(0, forward(&lawful[3], false));
    for tx in &lawful {
        let verdict = rt
            .block_on(hospital.wait_applied(tx.id(&genesis_hash), WAIT))
            .unwrap();
        assert!(matches!(verdict, Verdict::Applied { .. }), "{verdict:?}");
    }
    assert_eq!(rejected(&hospital, "unauthentic"), 1.0);
    assert_eq!(rejected(&hospital, "wrong_sender"), 1.0);
    for dropped in [&forged, &posing] {
        assert_eq!(
            hospital.tx_status(&dropped.id(&genesis_hash)).unwrap(),
            TxStatus::Unknown
        );
    }
}

/// A new-view for view `view` signed by validator `from` of `cluster`, carrying view-changes
/// from validators 0, 2 and 3 (nothing prepared, from the genesis checkpoint), the last one's
/// signature broken.
fn new_view_with_a_forged_view_change(
    dir: &std::path::Path,
    cluster: &Cluster,
    from: pbft::ReplicaId,
    view: pbft::View,
) -> Frame {
    let genesis = cluster.genesis();
    let key = |id: pbft::ReplicaId| {
        let name = &genesis.validators()[id as usize].name;
        ledger::master::read_node_key(
            &dir.join(name).join("node.key"),
            cluster.operator_key(id).unwrap(),
            name,
        )
        .unwrap()
    };
    let sign = |id, message: &pbft::Message| {
        ledger::crypto::sign_message(&key(id), &genesis.hash(), message)
    };
    let mut view_changes: Vec<pbft::Signed<pbft::ViewChange>> = [0, 2, 3]
        .into_iter()
        .map(|id| {
            let vc = pbft::ViewChange {
                new_view: view,
                incarnation: 1,
                checkpoint: pbft::Checkpoint {
                    seq: 0,
                    digest: genesis.hash(),
                },
                checkpoint_proof: vec![],
                prepared: vec![],
            };
            let signature = sign(id, &pbft::Message::ViewChange(vc.clone()));
            pbft::Signed {
                from: id,
                message: vc,
                signature,
            }
        })
        .collect();
    view_changes[2].signature.0[9] ^= 1;
    let message = pbft::Message::NewView(pbft::NewView {
        view,
        incarnation: 1,
        view_changes,
        pre_prepares: vec![],
    });
    let signature = sign(from, &message);
    Frame::new(Wire::Consensus(pbft::Signed {
        from,
        message,
        signature,
    }))
}

/// What a message carries is verified only when the replica would use it: a new-view from
/// another than its view's primary is refused by the replica whatever it carries, so its
/// embedded signatures are not checked (a dishonest validator replaying honest votes in such
/// messages costs its peers one signature each). The same new-view sent as its view's primary
/// is checked through, and its forged view-change found.
#[test]
fn what_a_message_carries_is_verified_only_when_the_replica_uses_it() {
    let dir = common::data_dir();
    let cluster = Cluster::open(dir.path(), fast_timing()).unwrap();
    let hospital = cluster.handle(0).unwrap();
    let endpoint = cluster.network().endpoint(1);
    let before = [
        rejected(&hospital, "protocol"),
        rejected(&hospital, "unauthentic"),
    ];
    // View 6's primary is validator 2: from the clinic, the replica refuses it unread.
    endpoint.send(
        0,
        new_view_with_a_forged_view_change(dir.path(), &cluster, 1, 6),
    );
    // View 5's primary is the clinic: it is read, and the forged view-change refused.
    endpoint.send(
        0,
        new_view_with_a_forged_view_change(dir.path(), &cluster, 1, 5),
    );
    let deadline = std::time::Instant::now() + WAIT;
    let rejections = || {
        [
            rejected(&hospital, "protocol") - before[0],
            rejected(&hospital, "unauthentic") - before[1],
        ]
    };
    while rejections().iter().sum::<f64>() < 2.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the new-views were not handled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(rejections(), [1.0, 1.0], "[protocol, unauthentic]");
    assert_eq!(hospital.status().view, 0);
}

/// A transaction that loses a race while its validator is cut off: the clinic accepts a record
/// whose grant another record, submitted at the hospital, uses first. Back on the network, the
/// clinic learns the chain; the primary refuses its forward at admission (the grant is used),
/// so the record can never commit. The clinic withdraws it from its replica instead of timing
/// out and asking, alone, for a view change against a correct primary.
#[test]
fn an_own_transaction_that_lost_a_race_does_not_time_out_a_correct_primary() {
    let dir = common::data_dir();
    let timing = Timing {
        view_change_timeout: Duration::from_secs(4),
        ..fast_timing()
    };
    let cluster = Cluster::open(dir.path(), timing).unwrap();
    let hospital = cluster.handle(0).unwrap();
    let clinic = cluster.handle(1).unwrap();
    let rt = runtime();
    let (patient, doctor) = people(&rt, &hospital);
    // The clinic admits the grant against its own chain: it must know the people first.
    wait_height(&clinic, hospital.status().height);
    let genesis_hash = hospital.genesis_hash();
    let grant = rt
        .block_on(patient.write_grant(&hospital, &doctor.id, "one note"))
        .unwrap();
    let grant_id = grant.id(&genesis_hash);
    let applied = rt.block_on(clinic.submit_applied(grant, WAIT)).unwrap();
    let Verdict::Applied {
        height: granted_at, ..
    } = applied
    else {
        panic!("the grant was not applied: {applied:?}");
    };
    wait_height(&hospital, granted_at);
    let (first, second) = two_records(&rt, &hospital, &doctor, &patient, grant_id);

    cluster.network().set_disconnected(1, true);
    let verdict = rt.block_on(hospital.submit_applied(first, WAIT)).unwrap();
    let Verdict::Applied { height, .. } = verdict else {
        panic!("the first record was not applied: {verdict:?}");
    };
    rt.block_on(clinic.submit(second.clone()))
        .expect("the clinic, behind, admits the second record");
    cluster.network().set_disconnected(1, false);
    wait_height(&clinic, height);
    // Twice the clinic's view-change timeout after it accepted the record.
    std::thread::sleep(Duration::from_secs(8));
    let status = clinic.status();
    assert!(
        status.view == 0 && !status.view_changing,
        "the clinic asked for a view change against a correct primary: {status:?}"
    );
    assert_eq!(
        hospital.tx_status(&second.id(&genesis_hash)).unwrap(),
        TxStatus::Unknown
    );
}
