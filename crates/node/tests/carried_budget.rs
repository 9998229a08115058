//! The budget of carried signatures (`Authenticator::limit_carried`) and the penalty for a
//! forged one, in a real cluster: four validators on loopback TCP, each with its own runtime,
//! validator 3's messages to validator 0 (the victim, primary of view 0) joined by the test's
//! own, signed with validator 3's real key, on validator 3's one connection to it. The
//! authenticator's side is unit-tested in `src/verify.rs`; here, the runtime's: a message over
//! its sender's budget is deferred and read once the budget is full
//! (`Runtime::retry_deferred`), and a sender whose carried signature failed is refused
//! signature-carrying messages but still heard voting.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ledger::Genesis;
use ledger::crypto::{self, SigningKey};
use node::load::Person;
use node::transport::Channel;
use node::{FrameKind, FrameLimits, NodeHandle, Timing, Wire};
use pbft::{
    Checkpoint, Message, PrePrepare, PreparedCertificate, Proposal, ReplicaId, Signed, ViewChange,
    Vote,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

mod common;

use common::tcp::{self, NAMES, Net, Process, wait_until};

const VICTIM: ReplicaId = 0;
const SENDER: ReplicaId = 3;
/// The log window L: twice the checkpoint interval (`node::replica_config`).
const WINDOW: u64 = 16;
/// Signatures each of the test's view-changes carries: L certificates of three prepares, all
/// never carried before.
const CARRIED_PER_MESSAGE: u64 = 3 * WINDOW;

/// A sender's budget of carried signatures in this cluster.
fn burst() -> u64 {
    node::carried_burst(NAMES.len(), WINDOW)
}

/// The cluster's settings: checkpoints every L/2 sequence numbers (`node::replica_config`).
fn timing() -> Timing {
    Timing {
        checkpoint_interval: WINDOW / 2,
        ..tcp::timing()
    }
}

/// The connection from validator 3 to validator 0, held by the test: what the test hands
/// `send` goes to validator 0 as validator 3's, after what validator 3 itself sent before it
/// (when `relay_from` is given, validator 3 reaches validator 0 through it: the test stands
/// in the middle, with both validators' keys).
struct Injector {
    _runtime: tokio::runtime::Runtime,
    frames: Frames,
}

/// What the test sends as validator 3's, through an [`Injector`].
#[derive(Clone)]
struct Frames(mpsc::UnboundedSender<(FrameKind, Vec<u8>)>);

impl Frames {
    fn send(&self, message: Signed<Message>) {
        let wire = Wire::Consensus(message);
        let _ = self
            .0
            .send((FrameKind::of(&wire), borsh::to_vec(&wire).unwrap()));
    }
}

impl Injector {
    fn start(net: &Net, relay_from: Option<std::net::TcpListener>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (frames, mut queue) = mpsc::unbounded_channel::<(FrameKind, Vec<u8>)>();
        let (as_sender, victim) = (
            net.identity(SENDER, net.key(SENDER)),
            net.listen[VICTIM as usize],
        );
        runtime.spawn(async move {
            let mut unsent = None;
            loop {
                let channel = match TcpStream::connect(victim).await {
                    Ok(stream) => Channel::initiate(stream, &as_sender, VICTIM).await.ok(),
                    Err(_) => None,
                };
                let Some(mut channel) = channel else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                loop {
                    let frame = match unsent.take() {
                        Some(frame) => frame,
                        None => match queue.recv().await {
                            Some(frame) => frame,
                            None => return,
                        },
                    };
                    let (kind, bytes): &(FrameKind, Vec<u8>) = &frame;
                    if channel.feed(*kind, bytes).await.is_err() || channel.flush().await.is_err() {
                        unsent = Some(frame);
                        break;
                    }
                }
            }
        });
        if let Some(listener) = relay_from {
            let (as_victim, relayed) = (net.identity(VICTIM, net.key(VICTIM)), frames.clone());
            let limits = FrameLimits::for_timing(NAMES.len(), &net.timing);
            listener.set_nonblocking(true).unwrap();
            runtime.spawn(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((stream, _)) = listener.accept().await {
                    let (as_victim, relayed) = (as_victim.clone(), relayed.clone());
                    tokio::spawn(async move {
                        if let Ok(mut channel) = Channel::respond(stream, &as_victim).await {
                            while let Ok(Some(frame)) = channel.recv(&limits).await {
                                let _ = relayed.send(frame);
                            }
                        }
                    });
                }
            });
        }
        Self {
            _runtime: runtime,
            frames: Frames(frames),
        }
    }

    fn send(&self, message: Signed<Message>) {
        self.frames.send(message);
    }
}

/// Validator 3's view-change to `new_view`, well formed, from the genesis checkpoint: its L
/// prepared certificates (view `round`, empty batches) carry the prepares of that view's
/// three backups, signed with their real keys. Each round's votes are its own, so none was
/// verified before: all `CARRIED_PER_MESSAGE` cost the victim's budget.
fn view_change(chain: &Genesis, keys: &[SigningKey], new_view: u64, round: u64) -> Signed<Message> {
    assert!(round < new_view, "a certificate of an earlier view");
    let genesis = chain.hash();
    let primary = (round % NAMES.len() as u64) as ReplicaId;
    let prepared = (1..=WINDOW)
        .map(|seq| {
            let proposal = Proposal {
                seq,
                view: round,
                proposer: primary,
                prev: genesis,
                time_ms: chain.created_at_ms() + seq,
                requests: Vec::new(),
            };
            let digest = ledger::proposal_digest(&proposal);
            let vote = Vote {
                view: round,
                seq,
                digest,
            };
            let prepares = (0..NAMES.len() as ReplicaId)
                .filter(|backup| *backup != primary)
                .map(|backup| {
                    let signature = crypto::sign_message(
                        &keys[backup as usize],
                        &genesis,
                        &Message::Prepare(vote),
                    );
                    Signed {
                        from: backup,
                        message: vote,
                        signature,
                    }
                })
                .collect();
            PreparedCertificate {
                pre_prepare: PrePrepare {
                    view: round,
                    digest,
                    proposal: Arc::new(proposal),
                },
                prepares,
            }
        })
        .collect();
    let message = Message::ViewChange(ViewChange {
        new_view,
        incarnation: 1,
        checkpoint: Checkpoint {
            seq: 0,
            digest: genesis,
        },
        checkpoint_proof: Vec::new(),
        prepared,
    });
    let signature = crypto::sign_message(&keys[SENDER as usize], &genesis, &message);
    Signed {
        from: SENDER,
        message,
        signature,
    }
}

/// Submits `count` enrollments through `process`'s validator and waits for it to commit them.
fn commit(process: &Process, count: u64) {
    let handle = process.handle();
    let before = handle.shared().committed_transactions();
    process.runtime.block_on(async {
        for _ in 0..count {
            let patient = Person::patient(handle.id());
            let enrollment =
                handle.sign_as_validator(patient.enrollment(&handle.genesis_hash()), Vec::new());
            handle.submit(enrollment).await.unwrap();
        }
    });
    wait_until(Duration::from_secs(10), "the enrollments to commit", || {
        handle.shared().committed_transactions() >= before + count
    });
}

/// The view of validator 3's last message that validator 0 read (its own signature, and
/// what it carries, authentic).
fn senders_view(victim: &NodeHandle) -> Option<u64> {
    victim.status().peers[SENDER as usize].view
}

fn unauthentic(victim: &NodeHandle) -> u64 {
    let text = victim.shared().telemetry().encode();
    let prefix = "medchain_messages_rejected_total{reason=\"unauthentic\"} ";
    text.lines()
        .find_map(|line| line.strip_prefix(prefix))
        .unwrap()
        .parse()
        .unwrap()
}

/// A validator sends valid view-changes for views ahead, carrying honest-looking votes it never
/// carried before, about four times faster than its budget of carried signatures allows, then
/// a burst of them back to back. The honest three keep committing meanwhile; what is over the
/// budget is deferred, not lost: once the flood stops and the budget is full again, the last
/// view-change is read (the victim then knows the sender at that view).
#[test]
fn a_view_change_over_its_senders_budget_is_deferred_and_read_later() {
    let net = Net::with_timing(timing());
    let honest: Vec<Process> = (0..3).map(|id| net.start(id)).collect();
    let victim = honest[VICTIM as usize].handle();
    commit(&honest[VICTIM as usize], 2);

    let keys: Vec<SigningKey> = (0..NAMES.len() as ReplicaId)
        .map(|id| net.key(id))
        .collect();
    let injector = Injector::start(&net, None);
    // View-changes for views far ahead, each with votes of its own round: 50 a second (2,400
    // carried signatures a second against a refill of `burst()`, 544, a second) until told to stop.
    let first_view = 1_000;
    let flooding = Arc::new(AtomicBool::new(true));
    let flooder = {
        let (flooding, frames) = (flooding.clone(), injector.frames.clone());
        let (chain, keys) = (net.genesis.clone(), keys.clone());
        std::thread::spawn(move || {
            let mut round = 0;
            while flooding.load(Ordering::Relaxed) {
                round += 1;
                frames.send(view_change(&chain, &keys, first_view + round, round));
                std::thread::sleep(Duration::from_millis(20));
            }
            round
        })
    };
    let telemetry = victim.shared().telemetry();
    wait_until(
        Duration::from_secs(10),
        "a view-change to be deferred",
        || telemetry.deferred_messages() > 0,
    );
    // The honest three commit while validator 3 floods the primary.
    commit(&honest[VICTIM as usize], 8);
    flooding.store(false, Ordering::Relaxed);
    let paced = flooder.join().unwrap();
    // Then twice the budget back to back, built beforehand so that nothing but the wire
    // paces them: the last ones cannot fit. A victim slowed by a loaded machine may read a
    // whole burst as fast as its budget refills; then a burst twice as long, a few times.
    let mut round = paced;
    let mut burst_length = 2 * burst() / CARRIED_PER_MESSAGE + 1;
    for _ in 0..4 {
        let views: Vec<Signed<Message>> = (round + 1..=round + burst_length)
            .map(|round| view_change(&net.genesis, &keys, first_view + round, round))
            .collect();
        round += burst_length;
        for message in views {
            injector.send(message);
        }
        let last_view = first_view + round;
        wait_until(
            Duration::from_secs(10),
            "the last view-change, deferred, to be read once the budget is full",
            || senders_view(&victim) == Some(last_view),
        );
        if telemetry.deferred_messages_read() > 0 {
            break;
        }
        burst_length *= 2;
    }
    assert!(telemetry.deferred_messages() > 0);
    assert!(
        telemetry.deferred_messages_read() > 0,
        "no burst's last view-change was deferred and read later"
    );
    // Deferred ones replace each other: far fewer read than deferred.
    assert!(telemetry.deferred_messages_read() < telemetry.deferred_messages());
    drop(injector);
}

/// A validator whose view-change carries a forged vote is refused its signature-carrying
/// messages for a while (`CONTENTS_REFUSED_FOR`), valid ones too, but its own votes still
/// count: with another validator down, validator 0 commits only with validator 3's prepares
/// and commits.
#[test]
fn a_forged_carried_signature_silences_view_changes_not_votes() {
    let net = Net::with_timing(timing());
    // Validator 3 reaches validator 0 through the test, which adds its own frames.
    let relay = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut through_relay = net.listen.clone();
    through_relay[VICTIM as usize] = relay.local_addr().unwrap();
    let injector = Injector::start(&net, Some(relay));
    let mut processes: Vec<Process> = (0..3).map(|id| net.start(id)).collect();
    processes.push(net.start_with(SENDER, &through_relay));
    let victim = processes[VICTIM as usize].handle();
    commit(&processes[VICTIM as usize], 2);
    wait_until(Duration::from_secs(10), "validator 3's votes", || {
        senders_view(&victim) == Some(0)
    });
    // From now on validator 0 needs validator 3's prepares to prepare anything.
    drop(processes.remove(2));

    let keys: Vec<SigningKey> = (0..NAMES.len() as ReplicaId)
        .map(|id| net.key(id))
        .collect();
    let refused_before = unauthentic(&victim);
    // A valid one is read.
    injector.send(view_change(&net.genesis, &keys, 300, 1));
    wait_until(
        Duration::from_secs(10),
        "a valid view-change to be read",
        || senders_view(&victim) == Some(300),
    );
    // One vote forged among 48.
    let mut forged = view_change(&net.genesis, &keys, 301, 2);
    let Message::ViewChange(vc) = &mut forged.message else {
        unreachable!("a view-change")
    };
    vc.prepared[5].prepares[1].signature.0[7] ^= 1;
    forged.signature =
        crypto::sign_message(&keys[SENDER as usize], &net.genesis.hash(), &forged.message);
    injector.send(forged);
    wait_until(Duration::from_secs(10), "the forgery to be refused", || {
        unauthentic(&victim) == refused_before + 1
    });
    // A valid view-change after it is refused unread.
    injector.send(view_change(&net.genesis, &keys, 302, 3));
    wait_until(
        Duration::from_secs(10),
        "a valid view-change from the forger to be refused",
        || unauthentic(&victim) > refused_before + 1,
    );
    assert_ne!(senders_view(&victim), Some(302));
    // Its votes still count: validator 0 commits with validators 1 and 3 only.
    commit(&processes[VICTIM as usize], 4);
    assert_eq!(senders_view(&victim), Some(0), "its votes were read");
    drop(injector);
}
