//! The signatures met along a walk of the chain, checked in batches: on worker threads while the
//! walk goes on ([`Pool`], verification's way), or held and timed alone ([`Timed`], the measure
//! of `medchain verify --measure`). Either way the bad signature named is the first in chain
//! order, whichever batch finishes first: every batch is numbered in the walk's order and holds
//! its signatures in that order, and a verdict counts by its batch's number, not its arrival.
//!
//! The workers also judge the strength of every transaction's keys ([`crypto::is_strong_key`]:
//! point decompression, as costly as a fifth of the walk): the walk replays a transaction as if
//! its keys were strong, and a weak one fails its signature's place as a bad signature would,
//! so it is named at its block, in chain order, like any bad signature.
use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::Scope;
use std::time::{Duration, Instant};

use crate::crypto::{self, SignatureBatch, SignatureCheck};
use crate::{CertError, Fault};

/// Signatures checked per batch: large enough to amortise, small enough to stay in cache.
pub(super) const BATCH: usize = 1024;

/// Batches waiting for a worker, per worker: enough to keep each busy while the walk reads,
/// few enough that memory stays bounded (a batch is about 0.5 MB) whatever the chain's length.
const QUEUED_PER_WORKER: usize = 2;

/// Batches each thread of [`Timed`] checks per timed round.
const TIMED_PER_THREAD: usize = 32;

/// Whose a signature is, within its block.
#[derive(Clone, Copy, Debug)]
pub(super) enum Owner {
    Transaction(usize),
    Certificate(u32),
}

/// A signature's place in the chain: its block's height and its owner there.
type Place = (u64, Owner);

/// Signatures waiting for a batch check, with their places, in the order met.
#[derive(Default)]
pub(super) struct Pending {
    checks: Vec<SignatureCheck>,
    places: Vec<Place>,
}

impl Pending {
    pub(super) fn push(&mut self, height: u64, owner: Owner, check: SignatureCheck) {
        self.checks.push(check);
        self.places.push((height, owner));
    }

    pub(super) fn len(&self) -> usize {
        self.checks.len()
    }

    /// Checks everything pending on this thread; on failure, the first bad signature's height
    /// and fault.
    pub(super) fn settle(&mut self) -> Result<(), (u64, Fault)> {
        let failure = self.first_failure();
        let place = failure.map(|f| (self.places[f.position], f.weak_key));
        self.checks.clear();
        self.places.clear();
        place.map_or(Ok(()), |(place, weak_key)| Err(fault_at(place, weak_key)))
    }

    /// The first signature that breaks the rule or, a transaction's, is under a weak key.
    fn first_failure(&self) -> Option<Failure> {
        let weak = self
            .checks
            .iter()
            .zip(&self.places)
            .position(|((key, _, _), (_, owner))| {
                matches!(owner, Owner::Transaction(_)) && !crypto::is_strong_key(key)
            });
        // Only the signatures before a weak key can fail before it.
        let checked = &self.checks[..weak.unwrap_or(self.checks.len())];
        match first_bad_signature(checked) {
            Some(position) => Some(Failure::signature(position)),
            None => weak.map(|position| Failure {
                position,
                weak_key: true,
            }),
        }
    }
}

/// Where a batch failed first: the position of the signature, and whether its key is weak
/// (the signature itself may verify) rather than the signature bad.
#[derive(Clone, Copy, Debug)]
struct Failure {
    position: usize,
    weak_key: bool,
}

impl Failure {
    fn signature(position: usize) -> Failure {
        Failure {
            position,
            weak_key: false,
        }
    }
}

/// The position of the first signature of `checks` that breaks the rule, checked as one batch
/// (then singly, only if the batch fails).
fn first_bad_signature(checks: &[SignatureCheck]) -> Option<usize> {
    let mut batch = SignatureBatch::default();
    for (key, message, signature) in checks {
        batch.push_bytes(key, message, signature);
    }
    batch.failures().first().copied()
}

/// The fault of a bad signature at `place`, or of one under a weak key.
fn fault_at((height, owner): Place, weak_key: bool) -> (u64, Fault) {
    let fault = match owner {
        Owner::Transaction(index) if weak_key => Fault::Transaction {
            index,
            reason: "stored as a valid transaction, but it is signed by or adds a weak key \
                     (of small order: it verifies forgeries)"
                .into(),
        },
        Owner::Transaction(index) => Fault::Transaction {
            index,
            reason: "stored as a valid transaction, but a signature of it does not verify".into(),
        },
        Owner::Certificate(signer) => Fault::Certificate(CertError::BadSignature(signer)),
    };
    (height, fault)
}

/// Where a walk sends its batches.
pub(super) trait Checker {
    /// Takes the batch `pending` holds (leaving it empty) to be checked.
    fn check(&mut self, pending: &mut Pending);
    /// Whether a batch already checked holds a bad signature: the walk may stop there.
    fn failed(&self) -> bool;
    /// Waits for every batch taken: the first bad signature of all, in the order taken.
    fn finish(&mut self) -> Result<(), (u64, Fault)>;
}

/// The verdicts of numbered batches, put back in order: the first bad signature, by the number
/// of its batch (whichever finished first), and the places of the batches not yet answered.
#[derive(Default)]
struct Verdicts {
    waiting: BTreeMap<u64, Vec<Place>>,
    /// The number of the batch, the place and whether by a weak key.
    first_bad: Option<(u64, Place, bool)>,
    taken: u64,
}

impl Verdicts {
    /// Numbers a batch with `places`.
    fn take(&mut self, places: Vec<Place>) -> u64 {
        let number = self.taken;
        self.taken += 1;
        self.waiting.insert(number, places);
        number
    }

    /// Batch `number` verified, or its signature at position `failure` was the first bad.
    fn answer(&mut self, number: u64, failure: Option<usize>) {
        self.answer_failure(number, failure.map(Failure::signature));
    }

    /// Batch `number` verified, or failed first at `failure`.
    fn answer_failure(&mut self, number: u64, failure: Option<Failure>) {
        let places = self.waiting.remove(&number);
        if let (Some(f), Some(places)) = (failure, places)
            && self.first_bad.is_none_or(|(first, _, _)| number < first)
        {
            self.first_bad = places
                .get(f.position)
                .map(|&place| (number, place, f.weak_key));
        }
    }

    fn result(&self) -> Result<(), (u64, Fault)> {
        match (self.first_bad, self.waiting.first_key_value()) {
            (Some((_, place, weak_key)), _) => Err(fault_at(place, weak_key)),
            // Only if a worker died (its panic is raised again when the scope ends): never
            // an unchecked batch passed as good.
            (None, Some((_, places))) => Err((
                places.first().map_or(0, |(height, _)| *height),
                Fault::BatchSignature("a batch was left unchecked".into()),
            )),
            (None, None) => Ok(()),
        }
    }
}

/// A batch for a worker: its number and its signatures.
type Job = (u64, Pending);

/// Batches checked on `workers` threads while the walk goes on, through a bounded queue.
pub(super) struct Pool {
    jobs: Option<SyncSender<Job>>,
    answers: Receiver<(u64, Option<Failure>)>,
    verdicts: Verdicts,
}

impl Pool {
    /// Starts the workers in `scope`; they end when the pool is dropped.
    pub(super) fn start<'scope>(scope: &'scope Scope<'scope, '_>, workers: usize) -> Pool {
        let (jobs, queue) = mpsc::sync_channel::<Job>(workers * QUEUED_PER_WORKER);
        let (answer, answers) = mpsc::channel();
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..workers {
            let (queue, answer) = (Arc::clone(&queue), answer.clone());
            scope.spawn(move || {
                loop {
                    // The lock is held while waiting for a job, not while checking one.
                    let job = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    let Ok((number, pending)) = job else { return };
                    if answer.send((number, pending.first_failure())).is_err() {
                        return;
                    }
                }
            });
        }
        Pool {
            jobs: Some(jobs),
            answers,
            verdicts: Verdicts::default(),
        }
    }

    /// The number of threads a pool should have: one per core.
    pub(super) fn workers() -> usize {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

impl Checker for Pool {
    fn check(&mut self, pending: &mut Pending) {
        if pending.checks.is_empty() {
            return;
        }
        let pending = std::mem::take(pending);
        let number = self.verdicts.take(pending.places.clone());
        let sent = match &self.jobs {
            Some(jobs) => jobs.send((number, pending)).map_err(|e| e.0.1),
            None => Err(pending),
        };
        // No worker left (one died: its panic is raised when the scope ends): check here.
        if let Err(pending) = sent {
            self.verdicts
                .answer_failure(number, pending.first_failure());
        }
        while let Ok((number, failure)) = self.answers.try_recv() {
            self.verdicts.answer_failure(number, failure);
        }
    }

    fn failed(&self) -> bool {
        self.verdicts.first_bad.is_some()
    }

    fn finish(&mut self) -> Result<(), (u64, Fault)> {
        // The workers end once the queue is empty.
        self.jobs = None;
        while !self.verdicts.waiting.is_empty() {
            match self.answers.recv() {
                Ok((number, failure)) => self.verdicts.answer_failure(number, failure),
                Err(_) => break,
            }
        }
        self.verdicts.result()
    }
}

/// Batches held until each of `threads` threads has [`TIMED_PER_THREAD`] of them, then checked
/// on those threads while the walk waits, timing the checks alone: the rate of batch signature
/// verification by itself, over the same signatures in the same batches as verification's
/// (the keys' strength, which the workers also judge, is not part of it).
pub(super) struct Timed {
    threads: usize,
    held: Vec<(u64, Vec<SignatureCheck>)>,
    verdicts: Verdicts,
    /// Signatures checked.
    pub(super) signatures: u64,
    /// Time spent checking them, on all threads together (wall clock).
    pub(super) checking: Duration,
}

impl Timed {
    pub(super) fn new(threads: usize) -> Timed {
        Timed {
            threads: threads.max(1),
            held: Vec::new(),
            verdicts: Verdicts::default(),
            signatures: 0,
            checking: Duration::ZERO,
        }
    }

    fn run(&mut self) {
        let held = std::mem::take(&mut self.held);
        let per_thread = held.len().div_ceil(self.threads).max(1);
        let started = Instant::now();
        let answers: Vec<(u64, Option<usize>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = held
                .chunks(per_thread)
                .map(|jobs| {
                    scope.spawn(move || {
                        jobs.iter()
                            .map(|(number, checks)| (*number, first_bad_signature(checks)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        self.checking += started.elapsed();
        for (number, failure) in answers {
            self.verdicts.answer(number, failure);
        }
    }
}

impl Checker for Timed {
    fn check(&mut self, pending: &mut Pending) {
        if pending.checks.is_empty() {
            return;
        }
        let Pending { checks, places } = std::mem::take(pending);
        self.signatures += checks.len() as u64;
        let number = self.verdicts.take(places);
        self.held.push((number, checks));
        if self.held.len() >= self.threads * TIMED_PER_THREAD {
            self.run();
        }
    }

    fn failed(&self) -> bool {
        self.verdicts.first_bad.is_some()
    }

    fn finish(&mut self) -> Result<(), (u64, Fault)> {
        self.run();
        self.verdicts.result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn places(height: u64, n: usize) -> Vec<Place> {
        (0..n).map(|i| (height, Owner::Transaction(i))).collect()
    }

    /// Verdicts arrive in any order; the first bad signature is the one of the lowest-numbered
    /// failing batch, even when a later batch's failure arrived first.
    #[test]
    fn the_first_failing_batch_in_the_walks_order_is_named() {
        let mut verdicts = Verdicts::default();
        let numbers: Vec<u64> = (0..5).map(|b| verdicts.take(places(10 * b, 3))).collect();
        verdicts.answer(numbers[3], Some(0));
        verdicts.answer(numbers[0], None);
        assert!(matches!(verdicts.result(), Err((30, _))));
        verdicts.answer(numbers[2], None);
        verdicts.answer(numbers[1], Some(2));
        verdicts.answer(numbers[4], Some(1));
        match verdicts.result() {
            Err((10, Fault::Transaction { index: 2, .. })) => {}
            other => panic!("expected batch 1's third signature, got {other:?}"),
        }
        assert!(verdicts.waiting.is_empty());
    }

    /// A batch never answered is never taken for good.
    #[test]
    fn an_unanswered_batch_is_a_failure() {
        let mut verdicts = Verdicts::default();
        let first = verdicts.take(places(7, 1));
        verdicts.take(places(8, 1));
        verdicts.answer(first, None);
        assert!(matches!(
            verdicts.result(),
            Err((8, Fault::BatchSignature(_)))
        ));
    }
}
