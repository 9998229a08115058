//! Red team s74, on 3b5dabaf (the replica remembers the last 50,000 executed request ids, not
//! `max_pending`'s 200,000). The commit's argument: what is on chain, mempool admission refuses
//! at every way into the replica, so the replica's memory need only cover what executed and is
//! not applied yet. One way in is not admission's: a pre-prepare. `Replica::accept_pre_prepare`
//! (crates/pbft/src/replica.rs) makes every request of an accepted batch pending at a backup,
//! waited on by its view-change timer, unless it is pending already or among the executed ids
//! it remembers; a pre-prepare is judged by the stateless edge check alone, so a dishonest
//! primary may put any well-signed transaction in one, one on chain long ago included.
//!
//! F1: a dishonest primary sends one honest backup alone a pre-prepare that holds a transaction
//! applied more than `executed_window` requests ago (here: before that backup's last restart,
//! which empties the memory as 50,000 later executions do; no test hook lowers the window).
//! The slot never prepares and the view changes away from the dishonest primary, but the
//! request stays pending at the backup, out of every log. The backup forwards it to each
//! honest primary after, whose admission refuses it as a duplicate, and nothing withdraws it
//! (`Runtime::withdraw_lost_races` judges only the validator's own acknowledged transactions):
//! the backup's timer runs out against the honest primary. With the dishonest validator's own
//! view-change that is f+1, and the honest primary is replaced; with it silent (as here), the
//! backup alone leaves the view and the two others, short of a quorum, commit nothing until
//! their own timers replace the honest primary anyway (measured: the next transaction waited a
//! timer, the view changed to 2, and the backup left view 2 as well). It goes on until the
//! backup is primary itself and proposes the request (applied as a duplicate: the ledger's
//! `seen` check). The dishonest primary can plant such a request at every backup in each of
//! its views; planted at two backups, they are f+1 honest replicas timing out together.
//!
//! Not new in 3b5dabaf: a restart has always emptied the replica's memory, and with the window
//! at 200,000 any transaction older than that served. But the commit's argument ("admission
//! refuses what is on chain at every way in") does not hold for this way in, and the window now
//! spans a few seconds of a saturated chain: any transaction older than that will do, with no
//! restart.

//!
//! Red team s75 (in this file since both share one scenario), on 7dc3a586 (`Runtime::send_forwards`: a backup withdraws from its replica,
//! instead of forwarding, a pending request that is not its own client's and that the chain
//! holds). The commit fixes red team s74 F1 for one kind of request only: one a correct primary
//! refuses because the chain holds it. s74 F1's root is wider. `Replica::accept_pre_prepare`
//! (crates/pbft/src/replica.rs) makes every request of an accepted batch pending at a backup,
//! and a pre-prepare is judged by the stateless edge check alone (decoding and signatures,
//! `verify::check_requests`); a correct primary proposes only what its mempool admission
//! admits (the rules at `T = now` on the committed state). Whatever a dishonest primary puts
//! in a pre-prepare that admission refuses for good serves as well as a replay of an applied
//! transaction, and needs neither an old transaction nor a restart.
//!
//! F1: a dishonest primary signs, with its own validator key, an enrollment whose `not_after_ms`
//! has passed (any transaction the rules reject for good would do) and sends one honest backup
//! alone a pre-prepare of it, in a slot that never commits. The chain does not hold it, so
//! `send_forwards` forwards it to each honest primary after the view change, whose admission
//! refuses it as expired, and nothing withdraws it (`withdraw_lost_races` judges only the
//! validator's own acknowledged transactions): the backup's timer runs out on the honest
//! primary, as in s74 F1. Planted at two backups (two different pre-prepares at one sequence
//! number, so that neither prepares), they are f+1 honest replicas that time out together on
//! every honest primary until each of them is primary itself.
//!
//! Fixed (s77): a backup withdraws whatever its admission refuses instead of forwarding it
//! (`Runtime::send_forwards`), now that a withdrawal no longer restarts the replica's timer
//! (red team s76: restarted, a faulty primary's own transactions expiring in turn, forwarded,
//! renewed every backup's timer for ever; `pbft::Replica`'s withdraw, its tests in
//! crates/pbft/tests/protocol/normal_case.rs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::world::{CLINIC, HOSPITAL, INSURANCE, PHARMACY, World};
use common::{enrollment, fast_timing};

use ledger::SignedTx;
use node::load::Person;
use node::{Frame, NodeHandle, Timing, Wire};
use pbft::{Message, PrePrepare, Proposal, ReplicaId, Signed};

/// A backup's timer of about a second.
fn timing() -> Timing {
    Timing {
        view_change_timeout: Duration::from_secs(1),
        ..fast_timing()
    }
}

/// A pre-prepare of `from` (view 0's primary) at `seq` after `prev`, holding `txs`, signed
/// with its node key, as a dishonest primary signs one.
fn pre_prepare_from(
    w: &World,
    from: ReplicaId,
    name: &str,
    seq: u64,
    prev: [u8; 32],
    time_ms: u64,
    txs: &[SignedTx],
) -> Frame {
    let proposal = Proposal {
        seq,
        view: 0,
        proposer: from,
        prev,
        time_ms,
        requests: requests(w, txs),
    };
    let digest = ledger::proposal_digest(&proposal);
    signed_by(
        w,
        from,
        name,
        Message::PrePrepare(PrePrepare {
            view: 0,
            digest,
            proposal: proposal.into(),
        }),
    )
}

fn requests(w: &World, txs: &[SignedTx]) -> Vec<pbft::Request> {
    let genesis_hash = w.genesis_hash();
    txs.iter().map(|tx| tx.to_request(&genesis_hash)).collect()
}

/// `message` signed with validator `from`'s node key (its folder `name`).
fn signed_by(w: &World, from: ReplicaId, name: &str, message: Message) -> Frame {
    let signature =
        ledger::crypto::sign_message(&w.node_key(from, name), &w.genesis_hash(), &message);
    Frame::new(Wire::Consensus(Signed {
        from,
        message,
        signature,
    }))
}

/// From now on the hospital hears no forward (of `from`) that holds a request `lost` picks.
fn lose_forwards_to_the_hospital(
    w: &World,
    lost: impl Fn(ReplicaId, &pbft::Request) -> bool + Send + Sync + 'static,
) {
    w.network().filter(move |from, to, frame| {
        !(to == HOSPITAL
            && matches!(&**frame, Wire::Consensus(signed)
                if matches!(&signed.message, Message::Forward(requests)
                    if requests.iter().any(|r| lost(from, r)))))
    });
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// F1. The hospital (view 0's primary) is the dishonest validator. An enrollment is applied
/// everywhere; the clinic and the insurance restart (their replicas remember no executed id,
/// as after 50,000 more executions). The hospital, gone silent, sends the insurance alone a
/// pre-prepare of the applied enrollment at its next sequence number. The clinic's and the
/// pharmacy's clients submit fresh enrollments; the view changes to 1 (the clinic, honest),
/// which commits them. From then on the clinic is an honest primary with nothing left to
/// propose, yet the insurance times out on it: it waits on the replayed enrollment, which the
/// clinic's admission refuses as on chain.
#[test]
fn f1_a_replayed_executed_request_in_a_pre_prepare_times_a_backup_out_on_an_honest_primary() {
    let mut w = World::with_timing(timing());
    let replayed = enrollment(&w.node(PHARMACY));
    let applied_at = w.applied_at(PHARMACY, replayed.clone());
    // Both forget they executed it, as 50,000 later executions make them forget: the clinic's
    // admission, not its replica's memory, then refuses it.
    for id in [CLINIC, INSURANCE] {
        w.cluster.stop(id);
        w.cluster.restart(id).unwrap();
    }
    w.settle();
    let what =
        format!("the transaction replayed, applied at height {applied_at}, refused as on chain");
    planted_times_no_backup_out(&mut w, replayed, &what);
}

/// s75 F1. The hospital (view 0's primary) is the dishonest validator. It signs an enrollment of
/// its own that expired long ago, goes silent, and sends the insurance alone a pre-prepare of
/// it at the next sequence number. The clinic's and the pharmacy's clients submit fresh
/// enrollments; the view changes to 1 (the clinic, honest), which commits them. From then on
/// the clinic is an honest primary with nothing left to propose, yet the insurance times out
/// on it: it waits on the expired enrollment, which the clinic's admission refuses, and which
/// `send_forwards` does not withdraw because the chain does not hold it.
#[test]
fn f1_a_planted_request_admission_refuses_for_good_times_a_backup_out_on_an_honest_primary() {
    let mut w = World::with_timing(timing());
    w.applied_at(PHARMACY, enrollment(&w.node(PHARMACY)));
    w.settle();
    let hospital = w.node(HOSPITAL);
    let mut header = Person::patient(HOSPITAL).enrollment(&w.genesis_hash());
    header.not_after_ms = 1;
    let expired = hospital.sign_as_validator(header, Vec::new());
    planted_times_no_backup_out(
        &mut w,
        expired,
        "an enrollment expired long ago, refused by the rules",
    );
}

/// s76 F2. The insurance's own enrollment lost a race (a second enrollment of the same person,
/// kept from the primary, acknowledged before the first committed): the insurance withdrew it
/// from its replica, but keeps it acknowledged for some resend intervals. The dishonest
/// hospital plants it at the insurance in a pre-prepare; the honest clinic's admission refuses
/// it (the person is enrolled), and the insurance must not wait on it because it is its own.
#[test]
fn f2_an_own_transaction_that_lost_a_race_planted_times_no_backup_out() {
    let mut w = World::with_timing(timing());
    let insurance = w.node(INSURANCE);
    let person = Person::patient(INSURANCE);
    let first = insurance.sign_as_validator(person.enrollment(&w.genesis_hash()), Vec::new());
    let mut header = person.enrollment(&w.genesis_hash());
    header.not_after_ms -= 1;
    let loser = insurance.sign_as_validator(header, Vec::new());
    let loser_id = loser.to_request(&w.genesis_hash()).id;
    lose_forwards_to_the_hospital(&w, move |_, request| request.id == loser_id);
    w.rt.block_on(insurance.submit(loser.clone())).unwrap();
    w.applied_at(INSURANCE, first);
    wait_for(
        "the insurance to withdraw the loser",
        Duration::from_secs(5),
        || insurance.status().replica_pending == 0,
    );
    planted_times_no_backup_out(
        &mut w,
        loser,
        "an own enrollment withdrawn for a lost race, refused by the rules",
    );
}

/// Red team s77 F1. The pharmacy (a backup) is the dishonest validator. It forwards to the
/// insurance an enrollment of its own about to expire; the insurance admits it and forwards it
/// to the honest primary (the hospital), which never admits it (here the forward is lost; an
/// honest primary whose clock runs a little ahead refuses it as expired). Blocks keep coming
/// from the clinic's clients, so the insurance is never stalled and never forwards it again:
/// it must still judge it again, and withdraw it, before its timer runs out on the hospital.
#[test]
fn f1_s77_a_forward_about_to_expire_times_no_backup_out_while_blocks_come() {
    let w = a_settled_world(timing());
    let insurance = w.node(INSURANCE);
    let mut header = Person::patient(PHARMACY).enrollment(&w.genesis_hash());
    header.not_after_ms = w.clock.now_ms() + 500;
    let expiring = w.node(PHARMACY).sign_as_validator(header, Vec::new());
    let expiring_id = expiring.to_request(&w.genesis_hash()).id;
    lose_forwards_to_the_hospital(&w, move |_, request| request.id == expiring_id);
    let forward = signed_by(
        &w,
        PHARMACY,
        "pharmacy",
        Message::Forward(requests(&w, &[expiring])),
    );
    assert!(w.network().inject(PHARMACY, INSURANCE, forward));
    wait_for(
        "the insurance to take the forward",
        Duration::from_secs(5),
        || insurance.status().replica_pending == 1,
    );
    w.clock.advance_ms(1_000);
    blocks_come_and_the_insurance_stays(&w, "a forward that expired");
}

/// Red team s77 F2. A hostile client submits to the insurance five batches of transactions
/// about to expire, which the honest primary never admits (here their forwards are lost; an
/// honest primary whose clock runs a little ahead refuses them as expired). The insurance
/// judged a batch of its own a pass, in id order: two passes before its timer, so its timer
/// ran out on the hospital. It must withdraw them all in time.
#[test]
fn f2_s77_a_burst_of_own_transactions_about_to_expire_times_no_backup_out() {
    let w = a_burst_at_the_insurance(|w, insurance| {
        (0..5 * 4)
            .map(|_| {
                let mut header = Person::patient(INSURANCE).enrollment(&w.genesis_hash());
                header.not_after_ms = w.clock.now_ms() + 500;
                insurance.sign_as_validator(header, Vec::new())
            })
            .collect()
    });
    w.clock.advance_ms(1_000);
    blocks_come_and_the_insurance_stays(&w, "a burst of own transactions that expired");
}

/// Red team s78 F1. As s77 F2, with losers the rules reject for another reason than their
/// expiry (a second enrollment of a person), more of them than a pass judged (four batches).
#[test]
fn s78_f1_more_losers_than_a_pass_judged_time_no_backup_out() {
    let person = Person::patient(INSURANCE);
    let w = a_burst_at_the_insurance(|w, insurance| {
        (0..16 * 4)
            .map(|i| {
                let mut header = person.enrollment(&w.genesis_hash());
                header.not_after_ms -= 1 + i;
                insurance.sign_as_validator(header, Vec::new())
            })
            .collect()
    });
    let insurance = w.node(INSURANCE);
    let first = insurance.sign_as_validator(person.enrollment(&w.genesis_hash()), Vec::new());
    w.applied_at(INSURANCE, first);
    blocks_come_and_the_insurance_stays(&w, "more losers than a pass judged");
}

/// A cluster of batches of four whose insurance waits on the transactions `make` signs,
/// submitted there, their forwards to the hospital lost.
fn a_burst_at_the_insurance(make: impl FnOnce(&World, &NodeHandle) -> Vec<SignedTx>) -> World {
    let w = a_settled_world(Timing {
        max_batch: 4,
        ..timing()
    });
    let insurance = w.node(INSURANCE);
    let burst = make(&w, &insurance);
    let ids: std::collections::HashSet<[u8; 32]> = requests(&w, &burst)
        .iter()
        .map(|request| request.id)
        .collect();
    lose_forwards_to_the_hospital(&w, move |_, request| ids.contains(&request.id));
    let count = burst.len();
    for tx in burst {
        w.rt.block_on(insurance.submit(tx)).unwrap();
    }
    wait_for(
        "the insurance to wait on the burst",
        Duration::from_secs(5),
        || insurance.status().replica_pending == count,
    );
    w
}

/// Red team s78 F2. The insurance's forward of an own transaction is lost on the way to the
/// honest primary once (a refusal there for a moment only ends the same: a rule that admits
/// from a time on, a park share full). Blocks keep coming, so the replica forwards nothing
/// again: the insurance must, and the transaction commit before the insurance's timer runs
/// out on the hospital.
#[test]
fn s78_f2_a_forward_lost_once_is_sent_again_while_blocks_come() {
    a_forward_lost_while_blocks_come(1);
}

/// Red team s80 F1. As s78 F2, the forward again lost too: a backup forwards again at half its
/// timer and at three quarters.
#[test]
fn s80_f1_a_forward_lost_twice_is_sent_again_while_blocks_come() {
    a_forward_lost_while_blocks_come(2);
}

/// Red team s81 F1. As s80 F1, at every phase of the request's arrival against the insurance's
/// passes: with the passes a quarter of a timer apart by the wall clock, a little more than the
/// marks' quarter in ticks, both marks fell in one pass for some phases, or the second at the
/// timer's last tick (about one attempt in sixteen timed the insurance out). Each attempt
/// submits one enrollment at the insurance, its first two forwards to the hospital lost, while
/// blocks come from the clinic; the blocks' own latency spreads the attempts' phases.
#[test]
fn s81_f1_a_forward_lost_twice_is_sent_again_in_time_at_every_phase() {
    const ATTEMPTS: usize = 40;
    let w = a_settled_world(timing());
    let timer = timing().batch_window + timing().view_change_timeout;
    let (insurance, clinic) = (w.node(INSURANCE), w.node(CLINIC));
    // Per attempt's request, its forwards to the hospital so far: the first two are lost.
    let forwards: Arc<Mutex<HashMap<pbft::Digest, usize>>> = Arc::default();
    let counted = forwards.clone();
    lose_forwards_to_the_hospital(&w, move |from, request| {
        from == INSURANCE
            && counted
                .lock()
                .unwrap()
                .get_mut(&request.id)
                .is_some_and(|sent| {
                    *sent += 1;
                    *sent <= 2
                })
    });
    let (started, mut next_attempt, mut advanced_ms) = (Instant::now(), Instant::now(), 0);
    let mut ids = Vec::new();
    while ids.len() < ATTEMPTS || Instant::now() < next_attempt {
        if ids.len() < ATTEMPTS && Instant::now() >= next_attempt {
            let tx = enrollment(&insurance);
            let id = requests(&w, std::slice::from_ref(&tx))[0].id;
            forwards.lock().unwrap().insert(id, 0);
            ids.push(w.rt.block_on(insurance.submit(tx)).unwrap());
            // The attempt before has committed by then: no forward holds two attempts.
            next_attempt = Instant::now() + timer + Duration::from_millis(120);
        }
        w.rt.block_on(clinic.submit_applied(enrollment(&clinic), Duration::from_secs(5)))
            .unwrap();
        let s = insurance.status();
        assert!(
            (s.view, s.view_changing) == (0, false),
            "the insurance left view 0 (view {}, changing {}) {:?} in, at attempt {}, with \
             blocks coming: a request whose first two forwards were lost was not forwarded \
             again in time ({} request(s) held)",
            s.view,
            s.view_changing,
            started.elapsed(),
            ids.len(),
            s.replica_pending,
        );
        // The manual clock follows real time.
        let real_ms = started.elapsed().as_millis() as u64;
        w.clock.advance_ms(real_ms - advanced_ms);
        advanced_ms = real_ms;
        std::thread::sleep(Duration::from_millis(3));
    }
    for id in ids {
        assert_applied_at_the_insurance(&w, id);
    }
}

fn a_forward_lost_while_blocks_come(lost: usize) {
    let w = a_settled_world(timing());
    let id = submit_at_the_insurance(&w, lost);
    blocks_come_and_the_insurance_stays(&w, "an own transaction whose forward was lost");
    assert_applied_at_the_insurance(&w, id);
}

/// Red team s79 F1. As s78 F2 in a quiet cluster: nothing else is submitted, and the batch
/// window is three times the view-change timeout (the default's ratio, 6 s and 2 s, scaled to
/// 1.2 s and 0.4 s). The primary's window starts when a request reaches it: forwarded again
/// after half the insurance's timer, the transaction waited there past the insurance's timer.
/// The control: with no forward lost, it commits in time.
#[test]
fn s79_f1_a_forward_lost_once_in_a_quiet_cluster_times_no_backup_out() {
    a_quiet_cluster(true);
}

#[test]
fn s79_control_a_quiet_cluster_commits_an_own_transaction_in_time() {
    a_quiet_cluster(false);
}

fn a_quiet_cluster(lose_once: bool) {
    let quiet = Timing {
        batch_window: Duration::from_millis(1_200),
        view_change_timeout: Duration::from_millis(400),
        ..fast_timing()
    };
    let w = a_settled_world(quiet.clone());
    let insurance = w.node(INSURANCE);
    let submitted = Instant::now();
    let id = submit_at_the_insurance(&w, usize::from(lose_once));
    while submitted.elapsed() < 4 * (quiet.batch_window + quiet.view_change_timeout) {
        let s = insurance.status();
        assert!(
            (s.view, s.view_changing) == (0, false),
            "the insurance left view 0 (view {}, changing {}) {:?} after it submitted one \
             transaction in a quiet cluster ({} request(s) held, height {})",
            s.view,
            s.view_changing,
            submitted.elapsed(),
            s.replica_pending,
            s.height
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_applied_at_the_insurance(&w, id);
}

fn assert_applied_at_the_insurance(w: &World, id: ledger::TxId) {
    let verdict =
        w.rt.block_on(w.node(INSURANCE).wait_applied(id, Duration::from_secs(1)))
            .unwrap();
    assert!(
        matches!(verdict, node::Verdict::Applied { .. }),
        "{verdict:?}"
    );
}

/// A cluster of `timing` with a block applied everywhere.
fn a_settled_world(timing: Timing) -> World {
    let w = World::with_timing(timing);
    w.applied_at(CLINIC, enrollment(&w.node(CLINIC)));
    w.settle();
    w
}

/// An enrollment submitted at the insurance, its first `lost` forwards to the hospital lost.
fn submit_at_the_insurance(w: &World, lost: usize) -> ledger::TxId {
    let insurance = w.node(INSURANCE);
    let tx = enrollment(&insurance);
    let id = requests(w, std::slice::from_ref(&tx))[0].id;
    let forwards = std::sync::atomic::AtomicUsize::new(0);
    lose_forwards_to_the_hospital(w, move |_, request| {
        request.id == id && forwards.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < lost
    });
    w.rt.block_on(insurance.submit(tx)).unwrap()
}

/// Submits at the clinic and waits for each to apply, for four of the insurance's timers,
/// while the insurance must stay in view 0 and withdraw what it held (`what`).
fn blocks_come_and_the_insurance_stays(w: &World, what: &str) {
    let insurance = w.node(INSURANCE);
    let clinic = w.node(CLINIC);
    let watch = Instant::now();
    let mut committed = 0;
    while watch.elapsed() < 4 * (timing().view_change_timeout + timing().batch_window) {
        let tx = enrollment(&clinic);
        w.rt.block_on(clinic.submit_applied(tx, Duration::from_secs(5)))
            .unwrap();
        committed += 1;
        let s = insurance.status();
        assert!(
            (s.view, s.view_changing) == (0, false),
            "the insurance left view 0 (view {}, changing {}) {:?} after it took {what}, with \
             {committed} blocks committed meanwhile: it waited on it ({} request(s) held) and \
             timed out on the honest primary",
            s.view,
            s.view_changing,
            watch.elapsed(),
            s.replica_pending,
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(insurance.status().replica_pending, 0, "withdrawn");
}

/// The scenario of both findings, once `w` holds what the dishonest primary plants: the
/// hospital (view 0's primary) goes silent but for a pre-prepare of `planted` to the insurance
/// alone at its next sequence number; the clinic's and the pharmacy's clients submit fresh
/// enrollments, and the view changes to 1 (the clinic, honest), which commits them. From then
/// on the clinic has nothing to propose, and the insurance must stay in view 1 (`what` says
/// what was planted, for the failure message).
fn planted_times_no_backup_out(w: &mut World, planted: SignedTx, what: &str) {
    let clinic = w.node(CLINIC);
    let insurance = w.node(INSURANCE);
    let head = insurance.status();
    assert_eq!((head.view, head.replica_pending), (0, 0));
    // The dishonest primary from now on: silent, but for its pre-prepare to the insurance.
    w.cluster.stop(HOSPITAL);
    w.clock.advance_ms(1_000);
    let plant = pre_prepare_from(
        w,
        HOSPITAL,
        "hospital",
        head.height + 1,
        head.head_hash,
        w.clock.now_ms(),
        std::slice::from_ref(&planted),
    );
    assert!(w.network().inject(HOSPITAL, INSURANCE, plant));
    wait_for(
        "the insurance to take the planted request",
        Duration::from_secs(5),
        || insurance.status().replica_pending == 1,
    );
    // Fresh transactions at the clinic and the pharmacy: both time out on the silent primary
    // (f+1 honest replicas, whatever the insurance does), the view changes to the clinic, which
    // commits them.
    let pharmacy = w.node(PHARMACY);
    let fresh = w.rt.block_on(async {
        [
            (clinic.submit(enrollment(&clinic)).await.unwrap(), &clinic),
            (
                pharmacy.submit(enrollment(&pharmacy)).await.unwrap(),
                &pharmacy,
            ),
        ]
    });
    for (id, at) in fresh {
        let verdict =
            w.rt.block_on(at.wait_applied(id, Duration::from_secs(20)))
                .unwrap();
        assert!(
            matches!(verdict, node::Verdict::Applied { .. }),
            "{verdict:?}"
        );
    }
    wait_for(
        "the insurance to install view 1",
        Duration::from_secs(10),
        || {
            let s = insurance.status();
            (s.view, s.view_changing) == (1, false)
        },
    );
    assert_eq!(clinic.status().primary, CLINIC);
    // Eight of the insurance's timers (four at the backoff it may have entered the view with)
    // under an honest primary with nothing to propose.
    let watch = Instant::now();
    while watch.elapsed() < 8 * (timing().view_change_timeout + timing().batch_window) {
        let s = insurance.status();
        assert!(
            (s.view, s.view_changing) == (1, false),
            "the insurance left view 1 (view {}, changing {}) {:?} after the view's honest \
             primary (the clinic) was installed: its timer ran out on the request the \
             dishonest primary planted in a pre-prepare ({what}; {} refused forwards at the \
             clinic); it still holds {} request(s). The clinic's view commits nothing more \
             without it (quorum 3, the hospital silent) until the others' timers replace the \
             clinic too",
            s.view,
            s.view_changing,
            watch.elapsed(),
            clinic.status().refused_forwards,
            s.replica_pending,
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
