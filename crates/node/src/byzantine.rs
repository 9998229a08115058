//! A validator gone bad, for process-level tests of issues 8, 9 and 10 only: compiled with the
//! `byzantine` cargo feature, which nothing in a default or release build enables.
//!
//! It signs everything it sends with its own genesis key (it is a validator, not an outsider).
//! Most lies are made on the way out, by a [`Transport`] that rewrites outgoing frames, so the
//! rest of the node is untouched. The exceptions act on what its replica sees: the censor,
//! before the replica batches ([`censor`], called where the runtime steps the replica); the
//! forger, which hands the replica transactions past the edge check and admission
//! ([`spawn_forger`]); and the skewed clock ([`replica_clock_ms`]).
//!
//! Behaviours, chosen at run time (`medchain node --byzantine a,b,..`):
//! - `substitute-payloads`: in every view-change it sends, each request of its prepared
//!   certificates keeps its id, timestamp and the certificate's digest but carries other bytes:
//!   garbage, or a transaction whose signature is broken (finding 1). To have such a
//!   certificate, as primary it sends one pre-prepare per view (the first after
//!   [`HONEST_PROPOSALS`]) to only 2f backups and withholds its commit, so that the sequence
//!   number is prepared but not committed, and the view changes over it.
//! - `flood-pre-prepares`: as primary, after [`HONEST_PROPOSALS`], each pre-prepare carries a
//!   batch far larger than the maximum, full of copies of its requests, sent several times
//!   (finding 5).
//! - `forge-status`: status frames claim a huge height, sent often, and it never answers a
//!   state-transfer request (finding 4).
//! - `censor-patient=ID`: it never proposes (or even keeps) a transaction about the person
//!   whose id is `ID` (32 hex digits; the transaction's subject, `Meta::subject`) (finding 3).
//! - `exploit-amnesia`: as primary, it tries to make a backup that lost its stores vote twice
//!   (finding 2), against the *swing* backup (the highest, which the tests wipe); the other
//!   backups are side A (lower half) and side B (upper half). After [`TRAP_AFTER`] honest
//!   proposals of its view it sets a trap ([`ByzantineTransport::trap`]): from then on each
//!   sequence number has two batches, both validly signed ([`ByzantineTransport::alternative`]).
//!   Side A and the swing get the real one, whose commit it withholds, so that they prepare and
//!   commit what nobody can execute yet, and it hides its own progress (no status, checkpoint
//!   or blocks). Side B gets the other batch with its commit. The swing is probed every
//!   [`REPEAT_EVERY`] with a replay of the pre-prepares it accepted before the trap
//!   ([`ByzantineTransport::replay`]) and the other batches: while it remembers, it refuses
//!   them; restored from nothing, it may take them. A peer comes back with nothing when it asks
//!   to recover, claims a lower height than before, or votes against its own earlier vote
//!   ([`Seen`] watches what peers send); from then on it gets the other batches too. Side A
//!   gets the withheld commits ([`ByzantineTransport::release`]) when a returned peer commits
//!   against itself, or [`RELEASE_AFTER`] after the first return. A swing that votes as if new prepares the other batch
//!   with side B, which then executes it while side A executes the real one: a fork. A side-B
//!   replica still holding the swing's first vote refuses the second (one vote per sender and
//!   slot), so at n = 4 the fork also needs side B to lose what it received, by a crash (stores
//!   kept) while the trap is set; at n = 7 side B is too small to prepare anything. Every
//!   peer's second, different vote for one (view, seq) is logged ("voted twice").
//! - `forge-from=DIR` (issue 9): every file `DIR/*.tx` (a borsh `SignedTx`, taken in name
//!   order and deleted) is handed to its replica as if its own client had submitted it, past
//!   the edge check and mempool admission that a correct validator makes at its handle. The
//!   forgeries are made by the test with what this validator's operator holds (its `node.key`,
//!   its custody of its home people's keys, the public chain): records without a grant or
//!   after its revocation, signatures claimed for other hospitals' people, signatures that do
//!   not verify (docs/SECURITY.md, issue 9, §6). As primary it proposes them like any request.
//! - `clock-skew=+MS` (or `-MS`, issue 9): its replica goes by the validator's clock moved by
//!   `MS`, so as primary it proposes block times that far off, and as backup it judges others'
//!   by that clock (pbft's "Block time"); the rest of the node (admission, the application)
//!   keeps the real clock.
//! - `ask-keys` (issue 10): its key service asks every other validator for the key of every
//!   sealed transaction it applies and does not hold, a few times each, and keeps whatever key
//!   it is given that matches the body's commitment, entitled or not (docs/SECURITY.md,
//!   "Confidential records", §11: "ask any holder for any key"). A correct holder answers
//!   `NotEntitled` for a key it holds and counts it (`keys_requests_not_entitled`), and
//!   `NotHeld` for one it does not (`keys_requests_not_held`).
//! - `wrong-keys` (issue 10): its key service answers every key request, whatever it holds,
//!   with a fresh random key for each id asked. A correct requester checks each against the
//!   body's commitment, refuses it and counts it (`keys_refused_wrong`).
//! - `keep-keys` (issue 10): its key service ignores grant ends and accepted erasures: it keeps
//!   every key row it has (§7.2: "a dishonest validator may keep copies it already had").
//!
//! The key behaviours act inside the key service (`crate::keys`, its `byzantine` module), which
//! owns `keys.db`; the rest of the node is untouched.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ledger::crypto::SigningKey;
use ledger::{Hash, SignedTx};
use pbft::{
    Digest, Input, Message, PrePrepare, Proposal, ReplicaId, Request, SeqNo, Signed, View, Vote,
};

use crate::runtime::{Event, Submission};
use crate::transport::Transport;
use crate::wire::{Frame, Wire};

/// Pre-prepares sent honestly at the start of each view it leads, so that the network has
/// committed something (and the censor has something to hide behind) before the attacks.
pub const HONEST_PROPOSALS: usize = 3;
/// `exploit-amnesia`: pre-prepares sent honestly in its view before the trap is set, so that
/// the swing has accepted (and can be replayed) a few.
pub const TRAP_AFTER: usize = 5;
/// `exploit-amnesia`: side A gets the withheld commits as soon as a returned peer commits against
/// its earlier commit (side B, which gets that commit too, is then executing the other batch,
/// and has not told side A yet), or this long after the first return if none does.
pub const RELEASE_AFTER: Duration = Duration::from_secs(2);
/// The height a forged status claims.
pub const FORGED_HEIGHT: u64 = 1 << 40;
/// How often each peer gets a forged status and the other batches again (a thread does it), so
/// that a validator that restarts hears them first.
const REPEAT_EVERY: Duration = Duration::from_millis(100);
/// Alternative proposals repeated: the latest ones.
const REPEATED_PROPOSALS: usize = 32;
/// A flooded batch holds this many times the maximum batch ...
const FLOOD_FACTOR: usize = 50;
/// ... but no more requests than this, and is sent this many times.
const FLOOD_MAX_REQUESTS: usize = 2000;
const FLOOD_COPIES: usize = 3;
/// Sequence numbers whose treatment is remembered (and votes per peer and kind).
const REMEMBERED_SLOTS: usize = 256;
/// `forge-from`: how often the folder is looked at.
const FORGE_POLL: Duration = Duration::from_millis(50);

/// What a Byzantine validator does; see the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Behaviours {
    pub substitute_payloads: bool,
    pub flood_pre_prepares: bool,
    pub forge_status: bool,
    pub exploit_amnesia: bool,
    pub censor_patient: Option<String>,
    /// `forge-from`: the folder the forged transactions are taken from.
    pub forge_from: Option<PathBuf>,
    /// `clock-skew`: what is added to the clock its replica goes by, in ms.
    pub clock_skew_ms: i64,
    /// `ask-keys`: asks everyone for every sealed key, keeps any that matches.
    pub ask_keys: bool,
    /// `wrong-keys`: answers every key request with random keys.
    pub wrong_keys: bool,
    /// `keep-keys`: deletes no key at a grant's end or an erasure.
    pub keep_keys: bool,
    /// `slow-apply=MS`: sleeps this long before applying each block. Not dishonest: an honest
    /// validator on a loaded machine or a slow disk, whose turns outlast τ (BENCHMARKS.md, "a
    /// stall under load, explained").
    pub slow_apply_ms: u64,
}

impl FromStr for Behaviours {
    type Err = String;

    /// A comma-separated list: `substitute-payloads,flood-pre-prepares,forge-status,
    /// exploit-amnesia,censor-patient=ID,forge-from=DIR,clock-skew=+MS,ask-keys,wrong-keys,
    /// keep-keys,slow-apply=MS`.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut behaviours = Behaviours::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.split_once('=') {
                Some(("censor-patient", patient)) if !patient.is_empty() => {
                    behaviours.censor_patient = Some(patient.to_string());
                }
                Some(("forge-from", dir)) if !dir.is_empty() => {
                    behaviours.forge_from = Some(PathBuf::from(dir));
                }
                Some(("slow-apply", ms)) => {
                    behaviours.slow_apply_ms = ms
                        .parse()
                        .map_err(|_| format!("slow-apply wants a number of ms, not '{ms}'"))?;
                }
                Some(("clock-skew", skew)) => {
                    behaviours.clock_skew_ms = skew.parse().map_err(|_| {
                        format!("clock-skew wants a signed number of ms, not '{skew}'")
                    })?;
                }
                None if item == "substitute-payloads" => behaviours.substitute_payloads = true,
                None if item == "flood-pre-prepares" => behaviours.flood_pre_prepares = true,
                None if item == "forge-status" => behaviours.forge_status = true,
                None if item == "exploit-amnesia" => behaviours.exploit_amnesia = true,
                None if item == "ask-keys" => behaviours.ask_keys = true,
                None if item == "wrong-keys" => behaviours.wrong_keys = true,
                None if item == "keep-keys" => behaviours.keep_keys = true,
                _ => {
                    return Err(format!(
                        "unknown Byzantine behaviour '{item}' (known: substitute-payloads, \
                         flood-pre-prepares, forge-status, exploit-amnesia, censor-patient=ID, \
                         forge-from=DIR, clock-skew=+MS, ask-keys, wrong-keys, keep-keys, \
                         slow-apply=MS)"
                    ));
                }
            }
        }
        Ok(behaviours)
    }
}

/// The runtime's one hook before the replica sees an input: every request handed to the
/// replica passes here after the edge check and mempool admission (own clients' submissions,
/// peers' forwards), and so does every other input. A censor drops the censored person's
/// transactions from what it receives (forwards) or accepts, so it never batches them.
/// The forward's signature was checked already; the replica does not check it again.
pub(crate) fn censor(behaviours: Option<&Behaviours>, input: Input) -> Option<Input> {
    let Some(patient) = behaviours.and_then(|b| b.censor_patient.as_deref()) else {
        return Some(input);
    };
    let censored = |request: &Request| {
        SignedTx::from_bytes(&request.payload).is_ok_and(|tx| {
            tx.meta()
                .subject()
                .is_some_and(|s| hex::encode(s).eq_ignore_ascii_case(patient))
        })
    };
    match input {
        Input::Request(request) if censored(&request) => None,
        Input::Message(mut signed) => {
            if let Message::Forward(requests) = &mut signed.message {
                requests.retain(|request| !censored(request));
                if requests.is_empty() {
                    return None;
                }
            }
            Some(Input::Message(signed))
        }
        input => Some(input),
    }
}

/// `slow-apply`: the wait before each block is applied.
pub(crate) fn slow_apply(behaviours: Option<&Behaviours>) {
    if let Some(ms) = behaviours.map(|b| b.slow_apply_ms).filter(|ms| *ms > 0) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// `clock-skew`: the time its replica is told (at every input and a restart) for the
/// validator's clock reading `now_ms`.
pub(crate) fn replica_clock_ms(behaviours: Option<&Behaviours>, now_ms: u64) -> u64 {
    let skew_ms = behaviours.map_or(0, |b| b.clock_skew_ms);
    now_ms.saturating_add_signed(skew_ms)
}

/// `forge-from`: starts the thread that hands the forged transactions in the folder to the
/// validator's thread (`inbox`) as accepted submissions: the runtime stores each as pending
/// and steps it into the replica, exactly as one that passed the handle's edge check and
/// admission (which are skipped). Nothing without the behaviour.
pub(crate) fn spawn_forger(
    behaviours: Option<&Behaviours>,
    inbox: SyncSender<Event>,
    genesis_hash: Hash,
) {
    let Some(dir) = behaviours.and_then(|b| b.forge_from.clone()) else {
        return;
    };
    tracing::warn!(dir = %dir.display(), "byzantine: forged transactions are taken from here");
    let spawned = std::thread::Builder::new()
        .name("byzantine-forger".into())
        .spawn(move || {
            loop {
                std::thread::sleep(FORGE_POLL);
                for transaction in take_forged(&dir) {
                    if !hand_forged(&inbox, &genesis_hash, transaction) {
                        return; // the validator stopped
                    }
                }
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "byzantine: no forger thread; nothing is forged");
    }
}

/// The transactions in the files `dir/*.tx`, in file-name order; each file is deleted once read
/// (a file that does not decode is deleted and said).
fn take_forged(dir: &Path) -> Vec<SignedTx> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "tx"))
        .collect();
    files.sort();
    let mut forged = Vec::with_capacity(files.len());
    for path in files {
        let bytes = std::fs::read(&path);
        if let Err(error) = std::fs::remove_file(&path) {
            tracing::error!(%error, path = %path.display(), "byzantine: cannot take a forgery");
            continue;
        }
        match bytes.map(|bytes| SignedTx::from_bytes(&bytes)) {
            Ok(Ok(transaction)) => forged.push(transaction),
            Ok(Err(error)) => {
                tracing::error!(%error, path = %path.display(), "byzantine: not a transaction")
            }
            Err(error) => tracing::error!(%error, path = %path.display(), "byzantine: unreadable"),
        }
    }
    forged
}

/// Hands one forged transaction to the validator's thread and waits until it is stored as
/// pending (and in the replica). False once the validator has stopped.
fn hand_forged(inbox: &SyncSender<Event>, genesis_hash: &Hash, transaction: SignedTx) -> bool {
    let request = transaction.to_request(genesis_hash);
    let (id, kind) = (hex::encode(request.id), transaction.meta().kind());
    let (reply, answer) = tokio::sync::oneshot::channel();
    let submission = Submission {
        request,
        transaction,
        reply,
    };
    if inbox.send(Event::Submit(Box::new(submission))).is_err() {
        return false;
    }
    match answer.blocking_recv() {
        Ok(Ok(_)) => {
            tracing::warn!(
                id,
                kind,
                "byzantine: forged transaction handed to the replica"
            );
            true
        }
        Ok(Err(error)) => {
            tracing::error!(id, kind, %error, "byzantine: the runtime refused a forgery");
            true
        }
        Err(_) => false,
    }
}

/// What peers sent this validator, as far as `exploit-amnesia` cares.
#[derive(Default)]
pub(crate) struct Seen {
    /// The highest height each peer claimed in a status.
    heights: BTreeMap<ReplicaId, u64>,
    /// Peers that came back with nothing, and when they first did.
    returned: BTreeMap<ReplicaId, Instant>,
    /// Each peer's prepares (`false`) and commits (`true`): the digest of each (view, seq).
    votes: BTreeMap<(ReplicaId, bool), BTreeMap<(View, SeqNo), Digest>>,
    /// Peers seen committing twice for one (view, seq).
    double_committers: BTreeSet<ReplicaId>,
}

impl Seen {
    /// Notes what the frame `wire` from `from` says. The frame's sender was authenticated by
    /// the channel; a consensus message's signature is checked later by the runtime, so a vote
    /// counted here is only a vote if `signed.from` is the channel's peer.
    fn observe(&mut self, from: ReplicaId, wire: &Wire) {
        match wire {
            Wire::Status { height, .. } => {
                let highest = self.heights.entry(from).or_insert(0);
                let went_down = *height < *highest;
                *highest = (*highest).max(*height);
                if went_down {
                    self.came_back(from, "its status claims less than it did");
                }
            }
            Wire::Consensus(signed) if signed.from == from => match &signed.message {
                Message::RecoveryQuery(_) => self.came_back(from, "it asks to recover"),
                Message::Prepare(vote) => self.vote(from, false, vote),
                Message::Commit(vote) => self.vote(from, true, vote),
                _ => {}
            },
            _ => {}
        }
    }

    fn came_back(&mut self, peer: ReplicaId, why: &str) {
        if let std::collections::btree_map::Entry::Vacant(entry) = self.returned.entry(peer) {
            tracing::warn!(
                peer,
                why,
                "byzantine: a peer came back with nothing; exploiting its amnesia"
            );
            entry.insert(Instant::now());
        }
    }

    /// Remembers `peer`'s vote and says so loudly if it contradicts an earlier one: what a
    /// correct replica never does, and what an amnesiac one that votes as if new does.
    fn vote(&mut self, peer: ReplicaId, commit: bool, vote: &Vote) {
        let votes = self.votes.entry((peer, commit)).or_default();
        let first = *votes.entry((vote.view, vote.seq)).or_insert(vote.digest);
        while votes.len() > REMEMBERED_SLOTS {
            votes.pop_first();
        }
        if first != vote.digest {
            tracing::error!(
                peer,
                kind = if commit { "commit" } else { "prepare" },
                view = vote.view,
                seq = vote.seq,
                first = %hex::encode(&first[..4]),
                second = %hex::encode(&vote.digest[..4]),
                "byzantine observer: a peer voted twice for one (view, seq)"
            );
            if commit {
                self.double_committers.insert(peer);
            }
            self.came_back(peer, "it voted against its earlier vote");
        }
    }
}

/// With `exploit-amnesia`, the inbox the transport delivers to: a thread notes in the returned
/// [`Seen`] what each frame from a peer says and passes the event on to `inbox` unchanged.
/// Otherwise `inbox` itself.
pub(crate) fn observe_inbox(
    behaviours: Option<&Behaviours>,
    inbox: SyncSender<Event>,
    capacity: usize,
) -> (SyncSender<Event>, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    if !behaviours.is_some_and(|b| b.exploit_amnesia) {
        return (inbox, seen);
    }
    let (observed, events) = mpsc::sync_channel(capacity);
    let (noted, relay) = (seen.clone(), inbox.clone());
    let spawned = std::thread::Builder::new()
        .name("byzantine-observer".into())
        .spawn(move || {
            for event in events {
                if let Event::Network { from, frame, .. } = &event {
                    lock(&noted).observe(*from, frame);
                }
                if relay.send(event).is_err() {
                    break; // the validator stopped
                }
            }
        });
    match spawned {
        Ok(_) => (observed, seen),
        Err(error) => {
            tracing::error!(%error, "byzantine: no observer thread; peers are not watched");
            (inbox, seen)
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How this validator, as primary, treats one of its sequence numbers.
enum Treatment {
    Honest,
    /// The pre-prepare goes to these backups only, and its commit to nobody.
    Split(BTreeSet<ReplicaId>),
    /// This oversized pre-prepare goes instead.
    Flood(Frame),
    /// `exploit-amnesia`: side B and returned peers get this other batch and its commit
    /// instead of the real ones; while `trapped`, the real commit is withheld from everyone
    /// until the trap is released.
    Equivocate {
        pre_prepare: Frame,
        commit: Frame,
        trapped: bool,
    },
}

/// `exploit-amnesia`'s trap, once set.
struct Trap {
    /// Its own commits for trapped sequence numbers, withheld.
    withheld: BTreeMap<SeqNo, Frame>,
    released: bool,
}

#[derive(Default)]
struct State {
    treatments: BTreeMap<(View, SeqNo), Treatment>,
    /// The digest of the other batch at each sequence number, to chain the next one.
    equivocated: BTreeMap<SeqNo, Digest>,
    /// The honest pre-prepares it sent, to replay to a peer that forgot them.
    sent: BTreeMap<(View, SeqNo), Frame>,
    trap: Option<Trap>,
}

/// Wraps a validator's transport so that what it sends lies as `behaviours` says.
pub(crate) struct ByzantineTransport {
    inner: Box<dyn Transport>,
    behaviours: Behaviours,
    key: SigningKey,
    genesis_hash: [u8; 32],
    id: ReplicaId,
    n: usize,
    max_batch: usize,
    state: Mutex<State>,
    seen: Arc<Mutex<Seen>>,
}

impl ByzantineTransport {
    #[allow(clippy::too_many_arguments)]
    pub fn wrap(
        inner: Box<dyn Transport>,
        behaviours: Behaviours,
        key: SigningKey,
        genesis_hash: [u8; 32],
        id: ReplicaId,
        n: usize,
        max_batch: usize,
        seen: Arc<Mutex<Seen>>,
    ) -> Box<dyn Transport> {
        tracing::warn!(?behaviours, "this validator is BYZANTINE (test build)");
        let transport = Arc::new(Self {
            inner,
            behaviours,
            key,
            genesis_hash,
            id,
            n,
            max_batch,
            state: Mutex::new(State::default()),
            seen,
        });
        let weak = Arc::downgrade(&transport);
        if let Err(error) = std::thread::Builder::new()
            .name("byzantine-repeat".into())
            .spawn(move || repeat(weak))
        {
            tracing::error!(%error, "byzantine: nothing is repeated");
        }
        Box::new(transport)
    }

    fn frame(&self, wire: Wire) -> Frame {
        Frame::new(wire)
    }

    fn signed(&self, message: Message) -> Frame {
        let signature = ledger::crypto::sign_message(&self.key, &self.genesis_hash, &message);
        self.frame(Wire::Consensus(Signed {
            from: self.id,
            message,
            signature,
        }))
    }

    fn forged_status(&self) -> Frame {
        self.frame(Wire::Status {
            height: FORGED_HEIGHT,
            hash: [0xff; 32],
        })
    }

    /// The 2f backups with the lowest ids: enough to prepare, not enough to commit without us.
    fn split_group(&self) -> BTreeSet<ReplicaId> {
        let f = (self.n - 1) / 3;
        (0..self.n as ReplicaId)
            .filter(|&peer| peer != self.id)
            .take(2 * f)
            .collect()
    }

    /// Side B of `exploit-amnesia`: the upper half of the backups other than the swing (side
    /// A is the lower half).
    fn side_b(&self) -> BTreeSet<ReplicaId> {
        let others: Vec<ReplicaId> = (0..self.n as ReplicaId)
            .filter(|&peer| peer != self.id && peer != self.swing())
            .collect();
        others[others.len().div_ceil(2)..].iter().copied().collect()
    }

    /// Side A of `exploit-amnesia`: the backups that get the real proposals and, once released,
    /// the withheld commits.
    fn side_a(&self) -> BTreeSet<ReplicaId> {
        let side_b = self.side_b();
        (0..self.n as ReplicaId)
            .filter(|&peer| peer != self.id && peer != self.swing() && !side_b.contains(&peer))
            .collect()
    }

    /// The backup that first votes with side A and, restored from nothing, may vote again
    /// with side B.
    fn swing(&self) -> ReplicaId {
        (0..self.n as ReplicaId)
            .rev()
            .find(|&peer| peer != self.id)
            .unwrap_or(self.id)
    }

    /// Who gets the other batch of an equivocated sequence number: side B and every peer that
    /// came back with nothing.
    fn other_side(&self, returned: &BTreeMap<ReplicaId, Instant>) -> BTreeSet<ReplicaId> {
        let mut side = self.side_b();
        side.extend(returned.keys());
        side
    }

    /// What `to` gets every [`REPEAT_EVERY`]: a forged status; and once it equivocates, for
    /// side B and probed peers the latest other batches with their commits, for a probed peer
    /// after the replay. The swing is probed before anyone knows it came back: while it
    /// remembers, it refuses the other batches; once it forgot, it takes them.
    fn repeated(
        &self,
        state: &State,
        returned: &BTreeMap<ReplicaId, Instant>,
        to: ReplicaId,
    ) -> Vec<Frame> {
        let mut out = Vec::new();
        if self.behaviours.forge_status {
            out.push(self.forged_status());
        }
        let alternatives = self.alternatives(state);
        if alternatives.is_empty() {
            return out;
        }
        let probed = to == self.swing() || returned.contains_key(&to);
        if probed {
            out.extend(self.replay(state));
        }
        if probed || self.side_b().contains(&to) {
            out.extend(alternatives);
        }
        out
    }

    /// The honest pre-prepares it sent before it equivocated, oldest first: a returned peer
    /// accepted them before it lost its stores and, accepting them again, can accept the other
    /// batch that follows them without waiting for state transfer.
    fn replay(&self, state: &State) -> Vec<Frame> {
        state
            .sent
            .iter()
            .filter(|(slot, _)| matches!(state.treatments.get(slot), Some(Treatment::Honest)))
            .map(|(_, frame)| frame.clone())
            .collect()
    }

    /// The latest other batches with their commits, oldest first (each chains to the one
    /// before).
    fn alternatives(&self, state: &State) -> Vec<Frame> {
        let mut latest: Vec<Frame> = Vec::new();
        for treatment in state.treatments.values().rev().take(REPEATED_PROPOSALS) {
            if let Treatment::Equivocate {
                pre_prepare,
                commit,
                ..
            } = treatment
            {
                latest.extend([commit.clone(), pre_prepare.clone()]);
            }
        }
        latest.reverse();
        latest
    }

    /// `exploit-amnesia`: once `due` (see [`RELEASE_AFTER`]), side A gets the commits withheld
    /// for the trapped sequence numbers, which it can then execute, and the trap stops hiding
    /// this validator's progress.
    fn release(&self, state: &mut State, due: bool) -> Vec<(ReplicaId, Frame)> {
        let Some(trap) = state.trap.as_mut().filter(|trap| due && !trap.released) else {
            return Vec::new();
        };
        trap.released = true;
        tracing::warn!(
            commits = trap.withheld.len(),
            "byzantine trap released: side A gets the withheld commits"
        );
        let side_a = self.side_a();
        trap.withheld
            .values()
            .flat_map(|commit| side_a.iter().map(|&peer| (peer, commit.clone())))
            .collect()
    }

    /// Who came back with nothing, and whether the trap's release is due.
    fn returns(&self) -> (BTreeMap<ReplicaId, Instant>, bool) {
        let seen = lock(&self.seen);
        let due = !seen.double_committers.is_empty()
            || seen
                .returned
                .values()
                .min()
                .is_some_and(|first| first.elapsed() >= RELEASE_AFTER);
        (seen.returned.clone(), due)
    }

    /// What goes out every [`REPEAT_EVERY`] (see [`Self::repeated`]), and the release when due.
    fn tick(&self, state: &mut State) -> Vec<(ReplicaId, Frame)> {
        let (returned, due) = self.returns();
        let mut out = self.release(state, due);
        for peer in (0..self.n as ReplicaId).filter(|&peer| peer != self.id) {
            let repeated = self.repeated(state, &returned, peer);
            out.extend(repeated.into_iter().map(|frame| (peer, frame)));
        }
        out
    }

    /// Whether the trap hides this validator's own progress: while set and not released, its
    /// replica (which counts its own commit) executes what nobody else can, and a status,
    /// checkpoint or block would let the others fetch it.
    fn hides_progress(state: &State) -> bool {
        state.trap.as_ref().is_some_and(|trap| !trap.released)
    }

    /// What goes out to `to` instead of `frame`.
    fn rewrite(&self, state: &mut State, to: ReplicaId, frame: Frame) -> Vec<Frame> {
        let hidden = Self::hides_progress(state);
        match &*frame {
            Wire::Status { .. } | Wire::Blocks(_) if self.behaviours.forge_status || hidden => {
                Vec::new()
            }
            Wire::Consensus(signed) if signed.from == self.id => {
                if hidden && matches!(signed.message, Message::Checkpoint(_)) {
                    Vec::new()
                } else {
                    let (returned, _) = self.returns();
                    self.rewrite_consensus(state, &returned, to, &frame, &signed.message)
                }
            }
            _ => vec![frame.clone()],
        }
    }

    fn rewrite_consensus(
        &self,
        state: &mut State,
        returned: &BTreeMap<ReplicaId, Instant>,
        to: ReplicaId,
        frame: &Frame,
        message: &Message,
    ) -> Vec<Frame> {
        match message {
            Message::ViewChange(view_change) if self.behaviours.substitute_payloads => {
                let mut view_change = view_change.clone();
                for certificate in &mut view_change.prepared {
                    substitute_payloads(&mut certificate.pre_prepare);
                }
                tracing::info!(
                    new_view = view_change.new_view,
                    certificates = view_change.prepared.len(),
                    "byzantine view-change: payloads substituted"
                );
                vec![self.signed(Message::ViewChange(view_change))]
            }
            Message::PrePrepare(pre_prepare) if pre_prepare.proposal.proposer == self.id => {
                let slot = (pre_prepare.view, pre_prepare.proposal.seq);
                state.sent.entry(slot).or_insert_with(|| frame.clone());
                while state.sent.len() > REMEMBERED_SLOTS {
                    state.sent.pop_first();
                }
                let other_side = self.other_side(returned).contains(&to);
                match self.treatment(state, returned, pre_prepare) {
                    Treatment::Honest => vec![frame.clone()],
                    Treatment::Split(group) if group.contains(&to) => vec![frame.clone()],
                    Treatment::Split(_) => Vec::new(),
                    Treatment::Flood(flood) => vec![flood.clone(); FLOOD_COPIES],
                    Treatment::Equivocate { pre_prepare, .. } if other_side => {
                        vec![pre_prepare.clone()]
                    }
                    Treatment::Equivocate { .. } => vec![frame.clone()],
                }
            }
            Message::Commit(vote) => {
                let other_side = self.other_side(returned).contains(&to);
                match state.treatments.get(&(vote.view, vote.seq)) {
                    Some(Treatment::Split(_)) => Vec::new(),
                    Some(Treatment::Equivocate { commit, .. }) if other_side => {
                        vec![commit.clone()]
                    }
                    Some(Treatment::Equivocate { trapped: true, .. }) => {
                        match state.trap.as_mut().filter(|trap| !trap.released) {
                            Some(trap) => {
                                trap.withheld.insert(vote.seq, frame.clone());
                                Vec::new()
                            }
                            None => vec![frame.clone()],
                        }
                    }
                    _ => vec![frame.clone()],
                }
            }
            _ => vec![frame.clone()],
        }
    }

    /// Decides (once) how this primary treats the sequence number of `pre_prepare`.
    fn treatment<'a>(
        &self,
        state: &'a mut State,
        returned: &BTreeMap<ReplicaId, Instant>,
        pre_prepare: &PrePrepare,
    ) -> &'a Treatment {
        let slot = (pre_prepare.view, pre_prepare.proposal.seq);
        if !state.treatments.contains_key(&slot) {
            let earlier = state
                .treatments
                .keys()
                .filter(|(view, _)| *view == pre_prepare.view)
                .count();
            let behaviours = &self.behaviours;
            let treatment = if behaviours.exploit_amnesia {
                self.amnesia_treatment(state, returned, pre_prepare, earlier)
            } else if earlier < HONEST_PROPOSALS || pre_prepare.proposal.requests.is_empty() {
                Treatment::Honest
            } else if behaviours.substitute_payloads && earlier == HONEST_PROPOSALS {
                Treatment::Split(self.split_group())
            } else if behaviours.flood_pre_prepares {
                Treatment::Flood(self.flood(pre_prepare))
            } else {
                Treatment::Honest
            };
            let name = match &treatment {
                Treatment::Honest => "honest",
                Treatment::Split(_) => "split (prepared, not committed)",
                Treatment::Flood(_) => "flooded",
                Treatment::Equivocate { trapped: true, .. } => "trapped (commit withheld)",
                Treatment::Equivocate { .. } => "equivocated",
            };
            tracing::info!(
                view = slot.0,
                seq = slot.1,
                requests = pre_prepare.proposal.requests.len(),
                "byzantine pre-prepare: {name}"
            );
            state.treatments.insert(slot, treatment);
            while state.treatments.len() > REMEMBERED_SLOTS {
                state.treatments.pop_first();
            }
            while state.equivocated.len() > REMEMBERED_SLOTS {
                state.equivocated.pop_first();
            }
        }
        &state.treatments[&slot]
    }

    /// `exploit-amnesia`: honest until [`TRAP_AFTER`] proposals of the view; then trapped (see
    /// [`Self::trap`]) until a peer comes back with nothing; then equivocating.
    fn amnesia_treatment(
        &self,
        state: &mut State,
        returned: &BTreeMap<ReplicaId, Instant>,
        pre_prepare: &PrePrepare,
        earlier: usize,
    ) -> Treatment {
        let trapped = returned.is_empty();
        let set = state.trap.is_some();
        if trapped && !set && (earlier < TRAP_AFTER || pre_prepare.proposal.requests.is_empty()) {
            return Treatment::Honest;
        }
        if trapped && !set {
            self.trap(state, pre_prepare);
        }
        self.alternative(state, pre_prepare, trapped)
    }

    /// Sets the trap at the sequence number of `pre_prepare`: from here until a peer comes
    /// back, side A and the swing prepare and commit what this primary sends them, and cannot
    /// execute it (its commit is withheld, and nobody else votes).
    fn trap(&self, state: &mut State, pre_prepare: &PrePrepare) {
        tracing::warn!(
            view = pre_prepare.view,
            seq = pre_prepare.proposal.seq,
            swing = self.swing(),
            "byzantine trap set: side A and the swing vote for what nobody can execute yet"
        );
        state.trap = Some(Trap {
            withheld: BTreeMap::new(),
            released: false,
        });
    }

    fn flood(&self, pre_prepare: &PrePrepare) -> Frame {
        let honest = &pre_prepare.proposal;
        let size = (self.max_batch * FLOOD_FACTOR).min(FLOOD_MAX_REQUESTS);
        let proposal = Proposal {
            requests: honest.requests.iter().cycle().take(size).cloned().collect(),
            ..(**honest).clone()
        };
        self.pre_prepare(pre_prepare.view, proposal).0
    }

    /// The other batch for this sequence number (its requests but the first, validly signed
    /// like the real one), chained to the other batch before it if there is one, with its
    /// commit.
    fn alternative(&self, state: &mut State, pre_prepare: &PrePrepare, trapped: bool) -> Treatment {
        let honest = &pre_prepare.proposal;
        let prev = state
            .equivocated
            .get(&(honest.seq - 1))
            .copied()
            .unwrap_or(honest.prev);
        let proposal = Proposal {
            requests: honest.requests.iter().skip(1).cloned().collect(),
            prev,
            ..(**honest).clone()
        };
        let (view, seq) = (pre_prepare.view, proposal.seq);
        let (pre_prepare, digest) = self.pre_prepare(view, proposal);
        state.equivocated.insert(seq, digest);
        let commit = self.signed(Message::Commit(Vote { view, seq, digest }));
        Treatment::Equivocate {
            pre_prepare,
            commit,
            trapped,
        }
    }

    fn pre_prepare(&self, view: View, proposal: Proposal) -> (Frame, Digest) {
        let digest = ledger::proposal_digest(&proposal);
        let frame = self.signed(Message::PrePrepare(PrePrepare {
            view,
            digest,
            proposal: Arc::new(proposal),
        }));
        (frame, digest)
    }
}

/// Finding 1's attack: the certificate keeps every request's id and timestamp (and its digest)
/// but the bytes are garbage for even positions, and for odd ones a transaction that decodes
/// but whose signature does not verify.
fn substitute_payloads(pre_prepare: &mut PrePrepare) {
    let mut proposal = (*pre_prepare.proposal).clone();
    for (index, request) in proposal.requests.iter_mut().enumerate() {
        let forged = match SignedTx::from_bytes(&request.payload) {
            Ok(mut transaction) if index % 2 == 1 => {
                transaction.signature[0] ^= 0xff;
                transaction.to_bytes()
            }
            _ => {
                let mut garbage = b"byzantine garbage ".to_vec();
                garbage.extend_from_slice(&request.id);
                garbage
            }
        };
        request.payload = Arc::from(forged);
    }
    pre_prepare.proposal = Arc::new(proposal);
}

/// Sends happen with the state locked, so that what the repeating thread sends to a peer never
/// overtakes a frame a rewrite decided before it (a probe must not reach the swing before the
/// real pre-prepare it contradicts).
impl Transport for Arc<ByzantineTransport> {
    fn send(&self, to: ReplicaId, frame: Frame) {
        let mut state = lock(&self.state);
        for frame in self.rewrite(&mut state, to, frame) {
            self.inner.send(to, frame);
        }
    }

    fn broadcast(&self, to: &[ReplicaId], frame: Frame) {
        let mut state = lock(&self.state);
        for &peer in to {
            for frame in self.rewrite(&mut state, peer, frame.clone()) {
                self.inner.send(peer, frame);
            }
        }
    }
}

/// Every [`REPEAT_EVERY`], sends what is repeated and released, until the validator drops its
/// transport.
fn repeat(transport: std::sync::Weak<ByzantineTransport>) {
    loop {
        std::thread::sleep(REPEAT_EVERY);
        let Some(transport) = transport.upgrade() else {
            return;
        };
        let mut state = lock(&transport.state);
        for (to, frame) in transport.tick(&mut state) {
            transport.inner.send(to, frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaviours_parse_and_unknown_ones_are_named() {
        let parsed: Behaviours = "substitute-payloads, flood-pre-prepares,forge-status,\
                                  censor-patient=p002,exploit-amnesia"
            .parse()
            .unwrap();
        assert_eq!(
            parsed,
            Behaviours {
                substitute_payloads: true,
                flood_pre_prepares: true,
                forge_status: true,
                exploit_amnesia: true,
                censor_patient: Some("p002".into()),
                ..Behaviours::default()
            }
        );
        let error = "forge-status,teleport".parse::<Behaviours>().unwrap_err();
        assert!(error.contains("teleport"), "{error}");
        let issue_9: Behaviours = "forge-from=/tmp/forged,clock-skew=+3600000"
            .parse()
            .unwrap();
        assert_eq!(issue_9.forge_from, Some(PathBuf::from("/tmp/forged")));
        assert_eq!(issue_9.clock_skew_ms, 3_600_000);
        let behind: Behaviours = "clock-skew=-5000".parse().unwrap();
        assert_eq!(replica_clock_ms(Some(&behind), 1_000_000), 995_000);
        assert_eq!(replica_clock_ms(Some(&issue_9), 1_000), 3_601_000);
        assert_eq!(replica_clock_ms(None, 1_000), 1_000);
        let error = "clock-skew=soon".parse::<Behaviours>().unwrap_err();
        assert!(error.contains("soon"), "{error}");
        let issue_10: Behaviours = "ask-keys,wrong-keys,keep-keys".parse().unwrap();
        assert_eq!(
            issue_10,
            Behaviours {
                ask_keys: true,
                wrong_keys: true,
                keep_keys: true,
                ..Behaviours::default()
            }
        );
    }

    /// `forge-from`: the forged files are taken in name order and deleted, what does not decode
    /// is dropped, and each transaction reaches the validator's thread as an accepted submission
    /// with its own request (id over the signed bytes, whatever the signature).
    #[test]
    fn forged_files_reach_the_runtime_as_submissions_in_name_order() {
        let net = ledger::testkit::TestNet::new(4);
        let dir = tempfile::tempdir().unwrap();
        let first = net.sample_tx(1);
        let mut second = net.sample_tx(2);
        second.signature[0] ^= 0xff;
        std::fs::write(dir.path().join("02-second.tx"), second.to_bytes()).unwrap();
        std::fs::write(dir.path().join("01-first.tx"), first.to_bytes()).unwrap();
        std::fs::write(dir.path().join("03-garbage.tx"), b"garbage").unwrap();
        std::fs::write(dir.path().join("04-ignored.tmp"), first.to_bytes()).unwrap();
        let taken = take_forged(dir.path());
        assert_eq!(taken, vec![first.clone(), second.clone()]);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "only the .tmp file is left");

        let (inbox, events) = mpsc::sync_channel(4);
        let genesis_hash = net.genesis.hash();
        let runtime = std::thread::spawn(move || {
            let mut ids = Vec::new();
            for event in events {
                if let Event::Submit(submission) = event {
                    ids.push(submission.request.id);
                    let _ = submission.reply.send(Ok(submission.request.id));
                }
            }
            ids
        });
        for transaction in taken {
            assert!(hand_forged(&inbox, &genesis_hash, transaction));
        }
        drop(inbox);
        let ids = runtime.join().unwrap();
        assert_eq!(ids, vec![first.id(&genesis_hash), second.id(&genesis_hash)]);
    }

    fn transport(n: usize, behaviours: Behaviours) -> ByzantineTransport {
        ByzantineTransport {
            inner: Box::new(Sink),
            behaviours,
            key: ledger::crypto::generate_key(),
            genesis_hash: [0; 32],
            id: 0,
            n,
            max_batch: 10,
            state: Mutex::new(State::default()),
            seen: Arc::default(),
        }
    }

    #[test]
    fn groups_split_the_backups_as_the_attacks_need() {
        let four = transport(4, Behaviours::default());
        assert_eq!(four.split_group(), BTreeSet::from([1, 2]));
        assert_eq!(four.swing(), 3);
        assert_eq!(four.side_a(), BTreeSet::from([1]));
        assert_eq!(four.side_b(), BTreeSet::from([2]));
        let seven = transport(7, Behaviours::default());
        assert_eq!(seven.split_group(), BTreeSet::from([1, 2, 3, 4]));
        assert_eq!(seven.swing(), 6);
        assert_eq!(seven.side_a(), BTreeSet::from([1, 2, 3]));
        assert_eq!(seven.side_b(), BTreeSet::from([4, 5]));
    }

    #[test]
    fn a_peer_comes_back_with_a_lower_status_a_recovery_query_or_a_second_vote() {
        let mut seen = Seen::default();
        let status = |height| Wire::Status {
            height,
            hash: [0; 32],
        };
        let signed = |from, message| {
            Wire::Consensus(Signed {
                from,
                message,
                signature: pbft::Signature([0; 64]),
            })
        };
        let prepare = |digest| {
            Message::Prepare(Vote {
                view: 0,
                seq: 6,
                digest,
            })
        };
        seen.observe(1, &status(0));
        seen.observe(2, &status(5));
        seen.observe(3, &Wire::Cut);
        seen.observe(2, &signed(2, prepare([1; 32])));
        seen.observe(2, &signed(2, prepare([1; 32])));
        assert!(
            seen.returned.is_empty(),
            "a first start or a repeated vote is no return"
        );
        seen.observe(1, &status(7));
        seen.observe(1, &status(3));
        seen.observe(
            3,
            &signed(
                3,
                Message::RecoveryQuery(pbft::RecoveryQuery {
                    nonce: 9,
                    incarnation: 2,
                }),
            ),
        );
        seen.observe(2, &signed(2, prepare([2; 32])));
        assert_eq!(seen.returned.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    }

    /// With the trap set, side A and the swing get the real pre-prepare and side B the other
    /// batch; the real commit goes to nobody, the other one to side B; the swing is probed with
    /// the other batch. Once the swing came back, it gets the other batch in place of the real
    /// one, and side A still the real one.
    #[test]
    fn the_trap_withholds_and_equivocates_and_probes_the_swing() {
        let byzantine = transport(
            4,
            Behaviours {
                exploit_amnesia: true,
                ..Behaviours::default()
            },
        );
        let proposal = |seq, prev| Proposal {
            seq,
            view: 0,
            proposer: 0,
            prev,
            time_ms: seq,
            requests: Vec::new(),
        };
        let mut prev = [0; 32];
        for seq in 1..=TRAP_AFTER as SeqNo {
            let (frame, digest) = byzantine.pre_prepare(0, proposal(seq, prev));
            prev = digest;
            let sent = byzantine.rewrite(&mut lock(&byzantine.state), 2, frame);
            assert_eq!(sent.len(), 1, "honest at {seq}");
        }
        let seq = TRAP_AFTER as SeqNo + 1;
        let mut trapped = proposal(seq, prev);
        trapped.requests.push(Request {
            id: [1; 32],
            timestamp_ms: 0,
            payload: Arc::from(b"x".to_vec()),
        });
        let (frame, digest) = byzantine.pre_prepare(0, trapped);
        let commit = byzantine.signed(Message::Commit(Vote {
            view: 0,
            seq,
            digest,
        }));
        // What `peer` gets when `frame` is sent to it.
        let to = |peer: ReplicaId, frame: &Frame| -> Vec<Frame> {
            byzantine.rewrite(&mut lock(&byzantine.state), peer, frame.clone())
        };
        // What `peer` gets from the repeating thread's next turn.
        let repeated = |peer: ReplicaId| -> Vec<Frame> {
            let ticked = byzantine.tick(&mut lock(&byzantine.state));
            ticked
                .into_iter()
                .filter(|(to, _)| *to == peer)
                .map(|(_, frame)| frame)
                .collect()
        };
        // Whether `out` holds `frame` (what is repeated to a peer may come with it).
        let has = |out: &[Frame], frame: &Frame| out.iter().any(|out| Arc::ptr_eq(out, frame));
        // Of the frames `out`, the other batch's pre-prepares and commits at `seq`.
        let other = |out: &[Frame]| {
            out.iter()
                .filter(|out| match &***out {
                    Wire::Consensus(Signed {
                        message: Message::PrePrepare(pp),
                        ..
                    }) => pp.proposal.seq == seq && pp.digest != digest,
                    Wire::Consensus(Signed {
                        message: Message::Commit(vote),
                        ..
                    }) => vote.seq == seq && vote.digest != digest,
                    _ => false,
                })
                .count()
        };
        // Whether `peer` gets `frame` itself, and how many of the other batch's messages.
        let got = |peer: ReplicaId, frame: &Frame| {
            let out = to(peer, frame);
            (has(&out, frame), other(&out))
        };
        assert_eq!(got(1, &frame), (true, 0), "side A: the real batch");
        assert_eq!(got(3, &frame), (true, 0), "the swing too");
        assert_eq!(got(2, &frame), (false, 1), "side B: the other batch");
        assert_eq!(got(1, &commit), (false, 0), "the real commit withheld");
        assert_eq!(got(3, &commit), (false, 0), "from the swing too");
        assert_eq!(got(2, &commit), (false, 1), "side B: the other commit");
        let status = Frame::new(Wire::Status {
            height: seq,
            hash: [0; 32],
        });
        assert_eq!(got(1, &status), (false, 0), "progress hidden");

        assert!(other(&repeated(3)) >= 2, "the swing is probed");
        assert!(other(&repeated(2)) >= 2, "side B: the other batch again");
        assert_eq!(other(&repeated(1)), 0, "side A never");
        lock(&byzantine.seen).came_back(3, "test");
        assert_eq!(
            got(3, &frame),
            (false, 1),
            "the returned swing: the other batch"
        );
        assert_eq!(got(1, &frame), (true, 0), "side A: still the real one");
    }

    struct Sink;
    impl Transport for Sink {
        fn send(&self, _: ReplicaId, _: Frame) {}
    }
}
