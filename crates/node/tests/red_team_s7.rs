//! Red team (s7) against `Runtime::resume_pending` (commit 26f15aa4): on restart, an
//! acknowledged transaction the chain rejects for a reason not in
//! `ledger::rules::reason::may_pass_later` is withdrawn at once, never handed to the replica.
//!
//! The case: a validator restarted while behind its peers, holding an acknowledged transaction
//! that its own (stale) chain rejects for a count rule, `TOO_MANY_REQUESTS_DOCTOR` (not in
//! `may_pass_later`), while its peers' chain, a block further, admits it (one of the pending
//! requests was answered there).
//!
//! The story: the clinic (1) acknowledged a doctor's fourth access request while only two were
//! pending on its chain; a third, submitted elsewhere, was ordered first; the primary (on the
//! chain with three pending) dropped the clinic's forward; the clinic applied the third and
//! crashed before its lost-race check (`withdraw_lost_races`, half a resend interval later).
//! While it was down, the patient answered the first request at the hospital. The test writes
//! the acknowledged row into the clinic's node.db while it is stopped (the only way to stop
//! it at that exact moment), as an older medchain would have: the start takes it over.

use std::time::{Duration, Instant};

mod common;

use common::{acknowledge_offline, fast_timing, runtime, sealed_write_request};
use ledger::tx::{Attested, Grant, PurposeBody, Scope};
use ledger::{Meta, Queries, SignedTx, TxId};
use node::load::{Person, enroll};
use node::{Cluster, NodeHandle, Verdict, validator_dir};

const WAIT: Duration = Duration::from_secs(20);
const HOSPITAL: pbft::ReplicaId = 0;
const CLINIC: pbft::ReplicaId = 1;

/// What `handle`'s committed chain says of `tx` at `T = now` (mempool admission's rules).
fn judged(handle: &NodeHandle, tx: &SignedTx) -> Result<(), &'static str> {
    let genesis = handle.genesis().clone();
    handle
        .read(|chain| {
            Ok(
                ledger::rules::precheck(&chain.state(), &genesis, tx, common::now_ms())?
                    .map(|_| ())
                    .map_err(|reject| reject.0),
            )
        })
        .unwrap()
}

fn on_chain(handle: &NodeHandle, id: &TxId) -> bool {
    handle.read(|chain| chain.contains_transaction(id)).unwrap()
}

struct Behind {
    dir: common::DataDir,
    cluster: Cluster,
    rt: tokio::runtime::Runtime,
    /// The fourth request, acknowledged by the clinic only.
    fourth: SignedTx,
    genesis: ledger::Hash,
}

/// Three requests from a doctor to a patient pending everywhere; the clinic stopped; the first
/// answered by a grant at the hospital (so two are pending there); the fourth request
/// acknowledged in the clinic's node.db. The clinic is still stopped.
fn clinic_behind_with_an_acknowledged_fourth_request() -> Behind {
    let dir = common::data_dir();
    let mut cluster = Cluster::open(dir.path(), fast_timing()).unwrap();
    let rt = runtime();
    let hospital = cluster.handle(HOSPITAL).unwrap();
    let clinic = cluster.handle(CLINIC).unwrap();
    let genesis = hospital.genesis_hash();
    let patient = Person::patient(HOSPITAL);
    let doctor = Person::doctor(HOSPITAL, "Cardiology", "Dr Race");
    rt.block_on(enroll(&cluster.handles(), &[&patient, &doctor], WAIT))
        .unwrap();
    let mut requests = Vec::new();
    for _ in 0..3 {
        let tx = sealed_write_request(&rt, &hospital, &doctor, &patient, "a second opinion");
        requests.push(tx.id(&genesis));
        let verdict = rt.block_on(hospital.submit_applied(tx, WAIT)).unwrap();
        assert!(matches!(verdict, Verdict::Applied { .. }), "{verdict:?}");
    }
    assert!(cluster.converge(WAIT));
    let fourth = sealed_write_request(&rt, &hospital, &doctor, &patient, "a second opinion");
    assert_eq!(
        judged(&clinic, &fourth),
        Err(ledger::rules::reason::TOO_MANY_REQUESTS_DOCTOR)
    );
    assert!(!ledger::rules::reason::may_pass_later(
        ledger::rules::reason::TOO_MANY_REQUESTS_DOCTOR
    ));
    cluster.stop(CLINIC);

    // The patient answers the first request at the hospital: two pending there.
    let grant = rt
        .block_on(
            patient.sealed(
                &hospital,
                Meta::Grant(Grant {
                    patient: patient.id,
                    doctor: doctor.id,
                    scope: Scope::Write,
                    request: Some(requests[0]),
                    attested: Attested::InPerson,
                }),
                &PurposeBody {
                    purpose: "a visit".into(),
                }
                .to_bytes(),
                false,
            ),
        )
        .unwrap();
    let verdict = rt.block_on(hospital.submit_applied(grant, WAIT)).unwrap();
    assert!(matches!(verdict, Verdict::Applied { .. }), "{verdict:?}");
    assert_eq!(
        judged(&hospital, &fourth),
        Ok(()),
        "admitted a block further"
    );

    let name = cluster.genesis().validators()[CLINIC as usize].name.clone();
    acknowledge_offline(validator_dir(dir.path(), &name), &fourth, &genesis);
    Behind {
        dir,
        cluster,
        rt,
        fourth,
        genesis,
    }
}

/// The clinic restarts behind (its chain has three requests pending, the hospital's two): its
/// acknowledged fourth request, which the peers' chain admits and which only the clinic holds,
/// must reach consensus and commit. It is withdrawn at once instead (never handed to the
/// replica, never resent) and waits for its `not_after` (here: never) without committing.
/// Before 26f15aa4 it went to the replica, was forwarded to the primary, and committed.
#[test]
fn red_team_s7_acknowledged_transaction_that_passes_on_the_peers_chain_commits_after_restart() {
    let mut behind = clinic_behind_with_an_acknowledged_fourth_request();
    let id = behind.fourth.id(&behind.genesis);
    behind.cluster.restart(CLINIC).unwrap();
    let clinic = behind.cluster.handle(CLINIC).unwrap();
    let hospital = behind.cluster.handle(HOSPITAL).unwrap();
    assert!(clinic.shared().is_pending(&id), "resumed as acknowledged");
    // The client, seeing no verdict, submits it again at the clinic: acknowledged at once
    // (it is pending there), which hands nothing to the replica either.
    let again = behind
        .rt
        .block_on(clinic.submit(behind.fourth.clone()))
        .unwrap();
    assert_eq!(again, id);
    let deadline = Instant::now() + Duration::from_secs(8);
    while !on_chain(&hospital, &id) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        on_chain(&hospital, &id),
        "acknowledged, admissible on the caught-up chain, never committed (clinic pending {}, \
         waiting {})",
        clinic.status().pending,
        clinic.shared().waiting().0,
    );
    behind.rt.block_on(async {
        let verdict = clinic.wait_applied(id, WAIT).await.unwrap();
        assert!(matches!(verdict, Verdict::Applied { .. }), "{verdict:?}");
    });
}

/// The same withdrawn transaction, when another validator orders it (here: the patient's
/// doctor resubmits it at the hospital while the clinic is down): it commits once, and it
/// leaves the clinic's pending set and node.db once the clinic catches up (the busy gate and
/// the expiry of withdrawn ones are covered by `cluster.rs`
/// `transactions_that_lost_a_race_are_withdrawn_again_on_restart`).
#[test]
fn red_team_s7_a_withdrawn_transaction_another_validator_commits_leaves_the_pending_set() {
    let mut behind = clinic_behind_with_an_acknowledged_fourth_request();
    let id = behind.fourth.id(&behind.genesis);
    let hospital = behind.cluster.handle(HOSPITAL).unwrap();
    let verdict = behind
        .rt
        .block_on(hospital.submit_applied(behind.fourth.clone(), WAIT))
        .unwrap();
    assert!(matches!(verdict, Verdict::Applied { .. }), "{verdict:?}");
    behind.cluster.restart(CLINIC).unwrap();
    let clinic = behind.cluster.handle(CLINIC).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (clinic.status().pending > 0 || !on_chain(&clinic, &id)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(on_chain(&clinic, &id), "the clinic caught up");
    assert_eq!(
        clinic.status().pending,
        0,
        "committed elsewhere, still pending"
    );
    let ids = hospital
        .read(|chain| chain.blocks_from(1, usize::MAX))
        .unwrap()
        .iter()
        .flat_map(|block| block.ids().collect::<Vec<_>>())
        .filter(|committed| *committed == id)
        .count();
    assert_eq!(ids, 1, "committed once");
    // Nor is it resumed again: the journal of acknowledged transactions no longer holds it.
    behind.cluster.stop(CLINIC);
    let name = behind.cluster.genesis().validators()[CLINIC as usize]
        .name
        .clone();
    let journal = validator_dir(behind.dir.path(), &name).join(node::ACKNOWLEDGED_DIR);
    let rows = node::read_pending(&journal).unwrap();
    assert!(
        rows.iter().all(|row| row.id != id),
        "the journal still holds the committed transaction"
    );
}
