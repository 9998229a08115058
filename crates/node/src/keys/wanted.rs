//! The keys a validator waits for, and when to ask for each (docs/SECURITY.md, "Confidential
//! records", §5.2 and §12.1 item 7).
//!
//! A chain only grows, and a validator restored from an old backup may want millions of keys,
//! so a pull costs what it asks, never what is wanted:
//!
//! - Keys not yet asked, or asked and not answered, wait in a queue by the time of their next
//!   try. A pull takes at most [`DUE_PER_PULL`] of those that are due, in that order.
//! - A due key whose holder has its requests all open is parked behind that holder, in the
//!   order it came, and asked as soon as the holder has room again. A silent or slow holder so
//!   holds back its own keys only: the keys of other holders go on past it.
//! - A key due for, or parked behind, a holder that lags (it has left a request unanswered,
//!   or had keys parked behind it, for [`LAGGING_AFTER`]) counts the skip as a try and goes to
//!   the next holder `holder_for` gives, if there is one with room, so that a crashed or slow
//!   sealer does not keep the keys its patient's home would give behind its window.
//! - A key no holder gives is wanted for good (lost at its only holder): once every holder
//!   §5.2 asks for it ([`holders`]) has refused it in turn ([`WantedKeys::refused`]), the wait
//!   grows, round after round, up to [`REFUSED_BACKOFF_MAX`]. A silent holder refuses nothing,
//!   so a key it may give is never held back by the others' refusals. A holder that wants the
//!   key too refuses it (`Fetching`: so parties that all lost it back off together), and
//!   offers it once it holds it ([`WantedKeys::offered`]); and a holder heard from again after
//!   it lagged drops every grown wait back ([`WantedKeys::holder_back`]): it may have come
//!   back holding more (a store restored from a backup).
//! - The lowest height of a wanted transaction, written with the processed height so that a
//!   restart knows where to read blocks again (§12.1), is kept as counts per height.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use ledger::{PersonId, TxId};
use pbft::ReplicaId;

use crate::wire::MAX_KEY_REQUEST_IDS;

/// Tries of the sealer alone before the patient's home is asked too (§5.2).
const SEALER_TRIES: u32 = 3;
/// The backoff of a wanted key: 250 ms, doubling per try up to 10 s.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Whole rounds of refusals after which a key is asked at [`BACKOFF_MAX`] still; past them the
/// wait doubles per round up to [`REFUSED_BACKOFF_MAX`]. Asked every 10 s, 200,000 keys held
/// nowhere were 20,000 ids a second asked of the peers for ever, a third of a core of each
/// idle validator (issue 11, BENCHMARKS.md "the chain of 10,000,000 once swept").
const ROUNDS_AT_MAX: u32 = 3;
pub(super) const REFUSED_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Keys a pull chooses a holder for at most (due, or parked behind a lagging holder): the
/// rest wait for the next pull, so that one pull never holds the key service for long.
const DUE_PER_PULL: usize = 32 * MAX_KEY_REQUEST_IDS;
/// Keys parked behind a lagging holder a pull looks at at most (a grantee's cost no lookup).
const MOVED_PER_PULL: usize = 4 * DUE_PER_PULL;
/// A holder that has left a request unanswered this long, or had keys parked behind it this
/// long, lags: its keys go to another holder where there is one. Answers come within a pull
/// or two when a holder keeps up.
pub(super) const LAGGING_AFTER: Duration = Duration::from_secs(2);
/// How often the keys parked behind a lagging holder are walked at most. Pulls come several a
/// second under load (one a block), and a backlog that no holder takes (keys held nowhere, on a
/// restored chain) was popped and parked again at each: 12 % of a loaded machine's CPU with
/// 97,812 such keys (BENCHMARKS.md, "the key services' share on the chain of 1,000,000").
const MOVE_EVERY: Duration = Duration::from_millis(250);

/// The wait before the next try, after `tries` tries.
fn backoff(tries: u32) -> Duration {
    BACKOFF_MIN
        .saturating_mul(1 << tries.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
}

/// What a holder's answer without a key says ([`WantedKeys::refused`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// It holds no key for it (the next holder may).
    NotHeld,
    /// It says the key is none of its business (or not on chain) at its state: asked again
    /// after [`BACKOFF_MAX`].
    ToldToWait,
    /// It wants the key itself (`Fetching`), and offers it once it holds it.
    Fetching,
}

/// The wait before asking again a key refused by `rounds` whole rounds of its holders.
fn refused_backoff(rounds: u32) -> Duration {
    let doublings = rounds.saturating_sub(ROUNDS_AT_MAX).min(16);
    BACKOFF_MAX
        .saturating_mul(1 << doublings)
        .min(REFUSED_BACKOFF_MAX)
}

/// Every holder §5.2 asks for `wanted`, in the order it asks them in turn, `home` being the
/// patient's home: a grantee asks the home alone; a party, the sealer and the home; a sealer
/// that lost its store (§5.6), the home, then every other validator (a grantee or a doctor's
/// home may hold the key). A round of refusals is theirs ([`WantedKeys::refused`]).
pub(super) fn holders(
    wanted: &Wanted,
    me: ReplicaId,
    n: usize,
    home: Option<ReplicaId>,
) -> Vec<ReplicaId> {
    if wanted.as_grantee {
        return vec![wanted.source];
    }
    let home = home.filter(|home| *home != me && *home != wanted.source);
    let mut holders = Vec::with_capacity(2);
    if wanted.source != me {
        holders.push(wanted.source);
    }
    holders.extend(home);
    if wanted.source == me {
        let n = n as ReplicaId;
        holders.extend(
            (1..n)
                .map(|k| (me + k) % n)
                .filter(|other| Some(*other) != home),
        );
    }
    holders
}

/// The holder to ask for `wanted` now (§5.2): a holder that offered it (it answered
/// `Fetching`, then held it); else the sealer alone for its first
/// [`SEALER_TRIES`] tries unless it lags (§12.1 item 7), then its [`holders`] in turn by
/// tries, a lagging one included (it must still be asked to be heard from again; when it is
/// full, the pull skips it for the next, `WantedKeys::route`). `None`: nobody to ask.
pub(super) fn holder_for(
    wanted: &Wanted,
    me: ReplicaId,
    n: usize,
    home: Option<ReplicaId>,
    lagging: &dyn Fn(ReplicaId) -> bool,
) -> Option<ReplicaId> {
    if let Some(offerer) = wanted.talk().offered_by.first() {
        return Some(*offerer);
    }
    let sealer = !wanted.as_grantee && wanted.source != me;
    if sealer && wanted.tries < SEALER_TRIES && !lagging(wanted.source) {
        return Some(wanted.source);
    }
    let holders = holders(wanted, me, n, home);
    holders
        .get(wanted.tries as usize % holders.len().max(1))
        .copied()
}

/// A wanted key. Kept in memory only: what is wanted is a function of the chain and the keys
/// held, read again at start (§12.1).
#[derive(Clone, Debug)]
pub(super) struct Wanted {
    pub patient: PersonId,
    /// The height of the transaction's block.
    pub height: u64,
    /// The validator asked first (§5.2).
    pub source: u32,
    pub since_ms: u64,
    /// Requests that asked for it, and holders skipped while they lagged.
    pub tries: u32,
    /// Whole rounds of refusals since it was wanted, or since a holder came back.
    rounds: u32,
    /// What holders and askers said of it ([`Talk`]), apart: most keys hear nothing.
    talk: Option<Box<Talk>>,
    /// Entitled as a grantee only: asked of the patient's home only (§5.2).
    pub as_grantee: bool,
    /// An `AddRecord` (counted in a grant's key status, §13).
    pub record: bool,
    /// Not asked again before then (while not parked).
    next_try: Instant,
    /// Parked behind a holder whose requests were all open when the key was due.
    parked: Option<Parking>,
    /// While parked: moving it off its lagging holder found no other (not looked up again
    /// until it is asked).
    stays: bool,
}

/// What the holders and askers said of a wanted key: kept apart from [`Wanted`] (8 bytes a
/// key until something is said, where five vectors took 120 in the table).
#[derive(Clone, Debug, Default)]
struct Talk {
    /// The holders that refused it in the round under way ([`WantedKeys::refused`]).
    refused_by: Vec<ReplicaId>,
    /// The peers told it is fetched here (`Fetching`): offered it once it is held.
    askers: Vec<ReplicaId>,
    /// The holders that answered `Fetching`: the only ones whose offer of it is taken.
    offerers: Vec<ReplicaId>,
    /// Holders that offered it, in the order they did: asked next, each once, an ask that is
    /// not a try (the holders' turn goes on after it: red team s12).
    offered_by: Vec<ReplicaId>,
    /// Holders whose offer was taken in the round under way: a second offer of theirs waits
    /// for the next round (a liar answering `Fetching` and offering at once would otherwise
    /// be asked at every pull, and alone: red team s12).
    offers_taken: Vec<ReplicaId>,
}

/// Nothing said yet.
static SILENCE: Talk = Talk {
    refused_by: Vec::new(),
    askers: Vec::new(),
    offerers: Vec::new(),
    offered_by: Vec::new(),
    offers_taken: Vec::new(),
};

impl Talk {
    fn is_empty(&self) -> bool {
        self.refused_by.is_empty()
            && self.askers.is_empty()
            && self.offerers.is_empty()
            && self.offered_by.is_empty()
            && self.offers_taken.is_empty()
    }
}

/// Where a key is parked: the holder, and the stamp of its entry in that holder's queue (an
/// entry of an earlier parking of the same key is not this one's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Parking {
    holder: ReplicaId,
    stamp: u64,
}

impl Wanted {
    /// A key wanted from now, never asked yet.
    pub fn new(
        patient: PersonId,
        height: u64,
        source: u32,
        since_ms: u64,
        as_grantee: bool,
        record: bool,
        now: Instant,
    ) -> Wanted {
        Wanted {
            patient,
            height,
            source,
            since_ms,
            tries: 0,
            rounds: 0,
            talk: None,
            as_grantee,
            record,
            next_try: now,
            parked: None,
            stays: false,
        }
    }

    fn talk(&self) -> &Talk {
        self.talk.as_deref().unwrap_or(&SILENCE)
    }

    fn talk_mut(&mut self) -> &mut Talk {
        self.talk.get_or_insert_with(Box::default)
    }

    /// Drops what was said once nothing is left of it.
    fn tidy(&mut self) {
        if self.talk.as_ref().is_some_and(|talk| talk.is_empty()) {
            self.talk = None;
        }
    }

    /// The peers told it is fetched here (`Fetching`): offered it once it is held.
    pub fn into_askers(self) -> Vec<ReplicaId> {
        self.talk.map(|talk| talk.askers).unwrap_or_default()
    }
}

/// Keys parked behind one holder. An entry whose key is no longer parked there under its
/// stamp (received, dropped, drawn already, or parked again since) is skipped when drawn, and
/// swept once such entries outnumber the parked keys.
#[derive(Default)]
struct Parked {
    queue: Queues,
    live: usize,
    /// Since when keys have been parked here without a break.
    since: Option<Instant>,
    /// When the keys parked here were last walked to move them off a lagging holder.
    moved_at: Option<Instant>,
}

impl Parked {
    /// The memory of a drained backlog goes with it.
    fn shrink(&mut self) {
        for queue in [&mut self.queue.movable, &mut self.queue.staying] {
            if queue.capacity() > 4 * queue.len().max(1024) {
                queue.shrink_to(2 * queue.len());
            }
        }
    }
}

/// A holder's parked keys in two queues: those another holder may give, which a walk off the
/// lagging holder looks at, and those none other gives (a grantee's, or found so by a lookup),
/// which it does not. A backlog of keys held nowhere else is so not popped and parked again at
/// every walk (BENCHMARKS.md, "the key services' share on the chain of 1,000,000"). A key keeps
/// its stamp when a walk parks it again behind the same holder (at the back of a queue, so
/// stamps mostly but not always increase along one): drawn for a holder with room, the older
/// of the two fronts goes first, and a key a walk kept is not put behind the keys that came
/// after it (red team s15 F1), unless the walk's budget stopped it before the end of the
/// queue: then the keys it kept wait behind those it did not reach (a bounded wait, red team
/// s15b F2).
#[derive(Default)]
struct Queues {
    movable: VecDeque<(TxId, u64)>,
    staying: VecDeque<(TxId, u64)>,
}

impl Queues {
    fn len(&self) -> usize {
        self.movable.len() + self.staying.len()
    }

    fn is_empty(&self) -> bool {
        self.movable.is_empty() && self.staying.is_empty()
    }

    /// The oldest entry of both queues.
    fn pop_front(&mut self) -> Option<(TxId, u64)> {
        match (self.movable.front(), self.staying.front()) {
            (Some(m), Some(s)) if s.1 < m.1 => self.staying.pop_front(),
            (Some(_), _) => self.movable.pop_front(),
            (None, _) => self.staying.pop_front(),
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&(TxId, u64)) -> bool) {
        self.movable.retain(&mut keep);
        self.staying.retain(keep);
    }

    #[cfg(test)]
    fn iter(&self) -> impl Iterator<Item = &(TxId, u64)> {
        self.movable.iter().chain(&self.staying)
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.movable.capacity() + self.staying.capacity()
    }
}

/// Takes `wanted` out of its holder's parked keys, if it was parked there: whether it was.
/// Its queue entry stays, skipped when drawn.
fn unpark(parked: &mut BTreeMap<ReplicaId, Parked>, wanted: &mut Wanted) -> bool {
    let Some(parking) = wanted.parked.take() else {
        return false;
    };
    wanted.stays = false;
    if let Some(queue) = parked.get_mut(&parking.holder) {
        queue.live -= 1;
        if queue.live == 0 {
            queue.since = None;
            if queue.queue.is_empty() {
                parked.remove(&parking.holder);
            }
        }
    }
    true
}

/// The wanted keys, with their schedule.
#[derive(Default)]
pub(super) struct WantedKeys {
    keys: HashMap<TxId, Wanted>,
    /// The keys not parked, by their next try.
    due: BTreeSet<(Instant, TxId)>,
    parked: BTreeMap<ReplicaId, Parked>,
    next_stamp: u64,
    /// Keys a walk off a lagging holder has looked at, for the tests.
    #[cfg(test)]
    walked: u64,
    /// How many wanted keys each height has.
    heights: BTreeMap<u64, usize>,
    /// When each holder last dropped the grown waits back ([`WantedKeys::holder_back`]).
    backs: BTreeMap<ReplicaId, Instant>,
    /// The same for greetings ([`WantedKeys::holder_restarted`]).
    restarts: BTreeMap<ReplicaId, Instant>,
}

/// Whether `holder` may drop the grown waits now (at most once per [`REFUSED_BACKOFF_MAX`] in
/// `last`); if so, `now` is noted.
fn once_per_max(last: &mut BTreeMap<ReplicaId, Instant>, holder: ReplicaId, now: Instant) -> bool {
    if last
        .get(&holder)
        .is_some_and(|at| now.saturating_duration_since(*at) < REFUSED_BACKOFF_MAX)
    {
        return false;
    }
    last.insert(holder, now);
    true
}

/// What a pull asks of the holders: how many there are (validators `0..count`), how many more
/// requests one may have open, whether it has left a request unanswered for [`LAGGING_AFTER`],
/// and which holder to ask for a key now, given which lag (`None`: nobody now; an error stops
/// the pull, every key it had taken back where it was).
pub(super) trait Holders {
    type Error;
    fn count(&self) -> usize;
    fn room(&mut self, holder: ReplicaId) -> usize;
    fn lagging(&self, holder: ReplicaId) -> bool;
    fn holder_for(
        &mut self,
        wanted: &Wanted,
        lagging: &dyn Fn(ReplicaId) -> bool,
    ) -> Result<Option<ReplicaId>, Self::Error>;
}

/// A pull in progress: the room left per holder, the requests made, and the batch being filled
/// for each holder (its room already taken).
#[derive(Default)]
struct Pull {
    rooms: BTreeMap<ReplicaId, usize>,
    requests: Vec<(ReplicaId, Vec<TxId>)>,
    filling: BTreeMap<ReplicaId, Vec<TxId>>,
    /// Keys taken and not yet routed.
    in_hand: Vec<TxId>,
    /// Holder lookups so far.
    chosen: usize,
    /// Which holders lag, as of the pull's start: unanswered for [`LAGGING_AFTER`], or with
    /// keys parked behind them that long.
    lagging: Vec<bool>,
    /// The holder and stamp of the key in hand that a walk took off that holder: parked
    /// behind it again, it keeps its stamp and so its place among the keys parked after it.
    walked: Option<(ReplicaId, u64)>,
}

impl Pull {
    fn room<H: Holders>(&mut self, holders: &mut H, holder: ReplicaId) -> &mut usize {
        self.rooms
            .entry(holder)
            .or_insert_with(|| holders.room(holder))
    }

    /// Adds `tx` to a batch for `holder` if it has room: whether it did.
    fn add<H: Holders>(&mut self, holders: &mut H, holder: ReplicaId, tx: TxId) -> bool {
        let filling = self
            .filling
            .get(&holder)
            .is_some_and(|batch| !batch.is_empty());
        if !filling {
            let left = self.room(holders, holder);
            if *left == 0 {
                return false;
            }
            *left -= 1;
        }
        let batch = self.filling.entry(holder).or_default();
        batch.push(tx);
        if batch.len() == MAX_KEY_REQUEST_IDS {
            let batch = std::mem::take(batch);
            self.requests.push((holder, batch));
        }
        true
    }

    /// Every key taken: asked, batched, or in hand.
    fn taken(&self) -> Vec<TxId> {
        let asked = self.requests.iter().flat_map(|(_, txs)| txs);
        let batched = self.filling.values().flatten();
        asked.chain(batched).chain(&self.in_hand).copied().collect()
    }

    fn lags(&self, holder: ReplicaId) -> bool {
        self.lagging.get(holder as usize).copied().unwrap_or(false)
    }
}

impl WantedKeys {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn contains(&self, tx: &TxId) -> bool {
        self.keys.contains_key(tx)
    }

    pub fn get(&self, tx: &TxId) -> Option<&Wanted> {
        self.keys.get(tx)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&TxId, &Wanted)> + Clone {
        self.keys.iter()
    }

    /// The heights of the wanted keys' transactions, ascending.
    pub fn heights(&self) -> impl Iterator<Item = u64> + '_ {
        self.heights.keys().copied()
    }

    /// How many heights have wanted keys.
    pub fn height_count(&self) -> usize {
        self.heights.len()
    }

    /// The lowest height of a wanted key's transaction.
    pub fn lowest_height(&self) -> Option<u64> {
        self.heights.keys().next().copied()
    }

    /// Wants `tx`, due at its next try, unless it is wanted already (the existing entry is
    /// kept).
    pub fn insert(&mut self, tx: TxId, mut wanted: Wanted) {
        if self.keys.contains_key(&tx) {
            return;
        }
        *self.heights.entry(wanted.height).or_default() += 1;
        wanted.parked = None;
        wanted.stays = false;
        self.due.insert((wanted.next_try, tx));
        self.keys.insert(tx, wanted);
    }

    pub fn remove(&mut self, tx: &TxId) -> Option<Wanted> {
        let mut wanted = self.keys.remove(tx)?;
        if let Some(count) = self.heights.get_mut(&wanted.height) {
            *count -= 1;
            if *count == 0 {
                self.heights.remove(&wanted.height);
            }
        }
        if !unpark(&mut self.parked, &mut wanted) {
            self.due.remove(&(wanted.next_try, *tx));
        }
        // The memory of a backlog goes with it.
        if self.keys.capacity() > 4 * self.keys.len().max(1024) {
            self.keys.shrink_to(2 * self.keys.len());
        }
        Some(wanted)
    }

    /// Asks `tx` again no sooner than `at` (a holder at or past this node's state said no).
    pub fn retry_at(&mut self, tx: &TxId, at: Instant) {
        self.take(tx);
        if let Some(wanted) = self.keys.get_mut(tx) {
            wanted.next_try = at;
            self.due.insert((at, *tx));
        }
    }

    /// `holder`, at or past this node's state, gave no key for `tx`; `round` is every holder
    /// §5.2 asks for it. Once each of them has refused it (a silent one refuses nothing), the
    /// round is whole: asked again after [`refused_backoff`], later round after round.
    /// Otherwise after [`BACKOFF_MAX`] if told to wait, or on its schedule (the next holder
    /// may hold it). A holder fetching it may offer it later ([`WantedKeys::offered`]).
    pub fn refused(
        &mut self,
        tx: &TxId,
        holder: ReplicaId,
        round: &[ReplicaId],
        now: Instant,
        refusal: Refusal,
    ) {
        let Some(wanted) = self.keys.get_mut(tx) else {
            return;
        };
        let talk = wanted.talk_mut();
        if !talk.refused_by.contains(&holder) {
            talk.refused_by.push(holder);
        }
        if refusal == Refusal::Fetching && !talk.offerers.contains(&holder) {
            talk.offerers.push(holder);
        }
        let told_to_wait = refusal == Refusal::ToldToWait;
        let whole = !round.is_empty() && round.iter().all(|h| talk.refused_by.contains(h));
        let wait = if whole {
            talk.refused_by = Vec::new();
            talk.offers_taken = Vec::new();
            wanted.tidy();
            wanted.rounds = wanted.rounds.saturating_add(1);
            refused_backoff(wanted.rounds)
        } else if told_to_wait {
            BACKOFF_MAX
        } else {
            return;
        };
        self.retry_at(tx, now + wait);
    }

    /// `asker` was told `tx` is fetched here (`Fetching`): it is offered the key once held
    /// (the askers go with [`WantedKeys::remove`]).
    pub fn told_fetching(&mut self, tx: &TxId, asker: ReplicaId) {
        if let Some(wanted) = self.keys.get_mut(tx)
            && !wanted.talk().askers.contains(&asker)
        {
            wanted.talk_mut().askers.push(asker);
        }
    }

    /// `holder` offers `tx` (it holds it now): taken only from a holder that answered
    /// `Fetching` for it, once per such answer (a liar's offers of keys held nowhere would
    /// make them asked at every pull: red team s11b), and once per round (one answering
    /// `Fetching` and offering at once would be asked at every pull, and alone: red team s12).
    /// That holder is asked at once, after any earlier offerer and out of any holder's queue
    /// the key waited in; the ask is not a try, and the rounds stay as they are until the key
    /// comes.
    pub fn offered(&mut self, tx: &TxId, holder: ReplicaId, now: Instant) {
        let Some(wanted) = self.keys.get_mut(tx) else {
            return;
        };
        let Some(at) = wanted.talk().offerers.iter().position(|o| *o == holder) else {
            return;
        };
        if wanted.talk().offers_taken.contains(&holder) {
            return;
        }
        let talk = wanted.talk_mut();
        talk.offerers.swap_remove(at);
        talk.offers_taken.push(holder);
        if !talk.offered_by.contains(&holder) {
            talk.offered_by.push(holder);
        }
        if wanted.parked.is_some() || wanted.next_try > now {
            self.retry_at(tx, now);
        }
    }

    /// `holder` is heard from again after it lagged: it may hold keys it refused before (a
    /// store restored from a backup), so every wait that refusals grew drops back, at most
    /// once per [`REFUSED_BACKOFF_MAX`] per holder (a holder that lags on and off costs no more
    /// than asking every key at the slowest pace would).
    pub fn holder_back(&mut self, holder: ReplicaId, now: Instant) {
        if once_per_max(&mut self.backs, holder, now) {
            self.drop_grown_waits(now);
        }
    }

    /// `holder` says it (re)started (an empty offer): it forgot whom it told `Fetching`, so
    /// every wait that refusals grew drops back, at most once per [`REFUSED_BACKOFF_MAX`] per
    /// holder, counted apart from [`WantedKeys::holder_back`] (a lag-back just before would
    /// otherwise swallow the greeting: red team s12).
    pub fn holder_restarted(&mut self, holder: ReplicaId, now: Instant) {
        if once_per_max(&mut self.restarts, holder, now) {
            self.drop_grown_waits(now);
        }
    }

    fn drop_grown_waits(&mut self, now: Instant) {
        let grown: Vec<TxId> = self
            .keys
            .iter()
            .filter(|(_, w)| w.rounds > 0 || !w.talk().refused_by.is_empty())
            .map(|(tx, _)| *tx)
            .collect();
        for tx in grown {
            let Some(wanted) = self.keys.get_mut(&tx) else {
                continue;
            };
            wanted.rounds = 0;
            if let Some(talk) = wanted.talk.as_mut() {
                talk.refused_by = Vec::new();
                talk.offers_taken = Vec::new();
            }
            wanted.tidy();
            if wanted.parked.is_none() && wanted.next_try > now + BACKOFF_MAX {
                self.retry_at(&tx, now + BACKOFF_MAX);
            }
        }
    }

    /// Parks `tx` (out of `due`) behind `holder`, under `stamp` if it was parked there before
    /// (a walk's), else a new one.
    fn park(&mut self, holder: ReplicaId, tx: TxId, now: Instant, stamp: Option<u64>) {
        let Some(wanted) = self.keys.get_mut(&tx) else {
            return;
        };
        let stamp = stamp.unwrap_or_else(|| {
            self.next_stamp += 1;
            self.next_stamp - 1
        });
        wanted.parked = Some(Parking { holder, stamp });
        let staying = wanted.as_grantee || wanted.stays;
        let parked = self.parked.entry(holder).or_default();
        match staying {
            true => parked.queue.staying.push_back((tx, stamp)),
            false => parked.queue.movable.push_back((tx, stamp)),
        }
        parked.live += 1;
        parked.since.get_or_insert(now);
        if parked.queue.len() > 2 * parked.live + MAX_KEY_REQUEST_IDS {
            let keys = &self.keys;
            parked.queue.retain(|(tx, stamp)| {
                keys.get(tx).is_some_and(|w| {
                    w.parked
                        == Some(Parking {
                            holder,
                            stamp: *stamp,
                        })
                })
            });
            parked.shrink();
        }
    }

    /// Up to `count` keys parked behind `holder`, in the order they came, taken out of its
    /// queues (each still marked parked); with `movable_only`, only from those another holder
    /// may give.
    fn draw_parked(&mut self, holder: ReplicaId, count: usize, movable_only: bool) -> Vec<TxId> {
        let mut drawn = Vec::new();
        let Some(parked) = self.parked.get_mut(&holder) else {
            return drawn;
        };
        while drawn.len() < count
            && let Some((tx, stamp)) = match movable_only {
                true => parked.queue.movable.pop_front(),
                false => parked.queue.pop_front(),
            }
        {
            let live = self
                .keys
                .get(&tx)
                .is_some_and(|w| w.parked == Some(Parking { holder, stamp }));
            if live {
                drawn.push(tx);
            }
        }
        if parked.queue.is_empty() && parked.live == 0 {
            self.parked.remove(&holder);
        } else {
            parked.shrink();
        }
        drawn
    }

    /// A key taken by a pull: out of `due`, and out of its holder's parked keys if drawn from
    /// there.
    fn take(&mut self, tx: &TxId) {
        if let Some(wanted) = self.keys.get_mut(tx)
            && !unpark(&mut self.parked, wanted)
        {
            self.due.remove(&(wanted.next_try, *tx));
        }
    }

    /// A key asked of `holder` now: one more try (unless it was that holder's offer), due
    /// again after its backoff, or at once while other offerers wait to be asked (a liar's
    /// offer just before an honest one would otherwise hold the honest one back a backoff:
    /// red team s13).
    fn asked(&mut self, tx: TxId, holder: ReplicaId, now: Instant) {
        let Some(wanted) = self.keys.get_mut(&tx) else {
            return;
        };
        match wanted.talk().offered_by.iter().position(|o| *o == holder) {
            Some(at) => {
                wanted.talk_mut().offered_by.remove(at);
                wanted.tidy();
            }
            None => wanted.tries = wanted.tries.saturating_add(1),
        }
        wanted.next_try = match wanted.talk().offered_by.is_empty() {
            true => now + backoff(wanted.tries),
            false => now,
        };
        self.due.insert((wanted.next_try, tx));
    }

    /// Puts keys a failed pull had taken back in `due`, as they were.
    fn put_back(&mut self, txs: Vec<TxId>) {
        for tx in txs {
            if let Some(wanted) = self.keys.get(&tx) {
                self.due.insert((wanted.next_try, tx));
            }
        }
    }

    /// Sends `tx` (taken) to the holder `holders` gives, batched if it has room; otherwise,
    /// if that holder lags and another would take it, the skip counts as a try and the other
    /// is asked; otherwise parked behind the holder.
    ///
    /// Whether the key was asked of, or could have gone to, another holder than the one it
    /// was parked behind (`false`: no other holder may give it now).
    fn route<H: Holders>(
        &mut self,
        pull: &mut Pull,
        holders: &mut H,
        tx: TxId,
        now: Instant,
    ) -> Result<bool, H::Error> {
        let Some(wanted) = self.keys.get(&tx) else {
            return Ok(true);
        };
        pull.chosen += 1;
        let lagging = |holder: ReplicaId| pull.lags(holder);
        let Some(holder) = holders.holder_for(wanted, &lagging)? else {
            // Nobody to ask now: due again at the slowest pace.
            let at = now + BACKOFF_MAX;
            if let Some(wanted) = self.keys.get_mut(&tx) {
                wanted.next_try = at;
            }
            self.due.insert((at, tx));
            return Ok(true);
        };
        if pull.add(holders, holder, tx) {
            return Ok(true);
        }
        // Past lagging holders in §5.2's order, each skip a try, up to every other holder.
        let Some(tries) = self.keys.get(&tx).map(|w| w.tries) else {
            return Ok(true);
        };
        let (mut current, mut other) = (holder, false);
        for skips in 1..holders.count() as u32 {
            // Out of budget is not "no other holder": the key stays movable (red team F3).
            if pull.chosen >= DUE_PER_PULL {
                other = true;
                break;
            }
            if !pull.lags(current) {
                break;
            }
            pull.chosen += 1;
            let Some(wanted) = self.keys.get_mut(&tx) else {
                return Ok(true);
            };
            wanted.tries = tries.saturating_add(skips);
            let lagging = |holder: ReplicaId| pull.lags(holder);
            let next = holders.holder_for(wanted, &lagging);
            wanted.tries = tries;
            let Some(next) = next?.filter(|next| *next != holder) else {
                break;
            };
            other = true;
            if pull.add(holders, next, tx) {
                if let Some(wanted) = self.keys.get_mut(&tx) {
                    wanted.tries = tries.saturating_add(skips);
                }
                return Ok(true);
            }
            current = next;
        }
        let stamp = pull.walked.filter(|(h, _)| *h == holder).map(|(_, s)| s);
        self.park(holder, tx, now, stamp);
        Ok(other)
    }

    /// The requests to send now, each to one holder with at most [`MAX_KEY_REQUEST_IDS`] ids,
    /// and the keys they ask marked asked. Keys parked behind a holder with room go first;
    /// then keys parked behind a lagging holder, moved to another holder where there is one;
    /// then the due ones. On an error every key taken is put back in `due`.
    pub fn requests<H: Holders>(
        &mut self,
        now: Instant,
        holders: &mut H,
    ) -> Result<Vec<(ReplicaId, Vec<TxId>)>, H::Error> {
        let mut pull = Pull {
            lagging: (0..holders.count() as ReplicaId)
                .map(|holder| holders.lagging(holder) || self.backlogged(holder, now))
                .collect(),
            ..Pull::default()
        };
        if let Err(error) = self.route_all(&mut pull, holders, now) {
            self.put_back(pull.taken());
            return Err(error);
        }
        let Pull {
            mut requests,
            filling,
            ..
        } = pull;
        requests.extend(filling.into_iter().filter(|(_, txs)| !txs.is_empty()));
        for (holder, txs) in &requests {
            for tx in txs {
                self.asked(*tx, *holder, now);
            }
        }
        Ok(requests)
    }

    /// Whether keys have been parked behind `holder` for [`LAGGING_AFTER`] without a break: it
    /// takes less than it is asked (a holder answering just inside any timeout, so never
    /// unanswered that long, lags this way).
    fn backlogged(&self, holder: ReplicaId, now: Instant) -> bool {
        self.parked
            .get(&holder)
            .and_then(|parked| parked.since)
            .is_some_and(|since| now.saturating_duration_since(since) >= LAGGING_AFTER)
    }

    fn route_all<H: Holders>(
        &mut self,
        pull: &mut Pull,
        holders: &mut H,
        now: Instant,
    ) -> Result<(), H::Error> {
        let parked_behind: Vec<ReplicaId> = self.parked.keys().copied().collect();
        for &holder in &parked_behind {
            loop {
                let left = *pull.room(holders, holder);
                if left == 0 {
                    break;
                }
                let txs = self.draw_parked(holder, MAX_KEY_REQUEST_IDS, false);
                if txs.is_empty() {
                    break;
                }
                for tx in &txs {
                    self.take(tx);
                }
                *pull.room(holders, holder) -= 1;
                pull.requests.push((holder, txs));
            }
        }
        for &holder in &parked_behind {
            if pull.lags(holder) && pull.chosen < DUE_PER_PULL && self.move_due(holder, now) {
                self.move_off(pull, holders, holder, now)?;
                // A walk that emptied the queue made the holder's `Parked` anew (red team F1).
                if let Some(parked) = self.parked.get_mut(&holder) {
                    parked.moved_at = Some(now);
                }
            }
        }
        while pull.chosen < DUE_PER_PULL {
            let Some(&(at, tx)) = self.due.first() else {
                break;
            };
            if at > now {
                break;
            }
            self.due.pop_first();
            pull.in_hand.push(tx);
            self.route(pull, holders, tx, now)?;
            pull.in_hand.clear();
        }
        Ok(())
    }

    /// Whether the keys parked behind `holder` may be walked now ([`MOVE_EVERY`]); if so, the
    /// walk is noted.
    fn move_due(&mut self, holder: ReplicaId, now: Instant) -> bool {
        let Some(parked) = self.parked.get_mut(&holder) else {
            return false;
        };
        if parked
            .moved_at
            .is_some_and(|at| now.saturating_duration_since(at) < MOVE_EVERY)
        {
            return false;
        }
        parked.moved_at = Some(now);
        true
    }

    /// Moves the keys parked behind the lagging `holder` to another holder where there is one,
    /// in the order they came, once round its movable queue at most. A key no other holder may
    /// give (a grantee's: only the patient's home; or one a lookup found no other holder for)
    /// is parked in the holder's staying queue, which walks do not look at: the keys another
    /// holder would give are reached behind any number of them, each parked key costs one
    /// lookup at most while it stays parked, and a backlog held nowhere else costs nothing.
    fn move_off<H: Holders>(
        &mut self,
        pull: &mut Pull,
        holders: &mut H,
        holder: ReplicaId,
        now: Instant,
    ) -> Result<(), H::Error> {
        let waiting = self
            .parked
            .get(&holder)
            .map_or(0, |p| p.queue.movable.len());
        let mut seen = 0;
        while pull.chosen < DUE_PER_PULL && seen < waiting.min(MOVED_PER_PULL) {
            let count = MAX_KEY_REQUEST_IDS.min(waiting - seen);
            let txs = self.draw_parked(holder, count, true);
            if txs.is_empty() {
                break;
            }
            seen += txs.len();
            #[cfg(test)]
            {
                self.walked += txs.len() as u64;
            }
            let (stays, stamps): (Vec<bool>, Vec<Option<u64>>) = txs
                .iter()
                .map(|tx| {
                    let wanted = self.keys.get(tx);
                    (
                        wanted.is_some_and(|w| w.as_grantee || w.stays),
                        wanted.and_then(|w| w.parked).map(|p| p.stamp),
                    )
                })
                .unzip();
            for tx in &txs {
                self.take(tx);
            }
            // In hand last first, so that they are routed in the order they came.
            pull.in_hand = txs.into_iter().rev().collect();
            let mut stays = stays.into_iter().rev().collect::<Vec<_>>();
            let mut stamps = stamps.into_iter().rev().collect::<Vec<_>>();
            while let Some(tx) = pull.in_hand.last().copied() {
                let known = stays.pop().unwrap_or(false);
                let stamp = stamps.pop().flatten();
                pull.walked = stamp.map(|stamp| (holder, stamp));
                // Marked when a lookup found no other holder at all (one that was full
                // does not count: it may have room at the next pull).
                let no_other = if !known && pull.chosen < DUE_PER_PULL {
                    !self.route(pull, holders, tx, now)?
                } else {
                    self.park(holder, tx, now, stamp);
                    known
                };
                pull.walked = None;
                if no_other
                    && let Some(wanted) = self.keys.get_mut(&tx)
                    && let Some(parking) = wanted.parked.filter(|p| p.holder == holder)
                {
                    wanted.stays = true;
                    // Parked just now, as movable (taking it cleared `stays`): staying.
                    if let Some(queue) = self.parked.get_mut(&holder).map(|p| &mut p.queue)
                        && queue.movable.back() == Some(&(tx, parking.stamp))
                    {
                        queue.movable.pop_back();
                        queue.staying.push_back((tx, parking.stamp));
                    }
                }
                pull.in_hand.pop();
            }
        }
        Ok(())
    }
}

/// [`Holders`] from closures, for the tests: four holders; `holder_for` is told which lag.
#[cfg(test)]
pub(super) struct Closures<R, L, F, E> {
    pub room: R,
    pub lagging: L,
    pub holder_for: F,
    pub error: std::marker::PhantomData<E>,
}

#[cfg(test)]
impl<R, L, F, E> Holders for Closures<R, L, F, E>
where
    R: FnMut(ReplicaId) -> usize,
    L: Fn(ReplicaId) -> bool,
    F: FnMut(&Wanted, &dyn Fn(ReplicaId) -> bool) -> Result<Option<ReplicaId>, E>,
{
    type Error = E;

    fn count(&self) -> usize {
        4
    }

    fn room(&mut self, holder: ReplicaId) -> usize {
        (self.room)(holder)
    }

    fn lagging(&self, holder: ReplicaId) -> bool {
        (self.lagging)(holder)
    }

    fn holder_for(
        &mut self,
        wanted: &Wanted,
        lagging: &dyn Fn(ReplicaId) -> bool,
    ) -> Result<Option<ReplicaId>, E> {
        (self.holder_for)(wanted, lagging)
    }
}

#[cfg(test)]
impl WantedKeys {
    /// [`WantedKeys::requests`] with no holder unanswered, and a `holder_for` that needs not
    /// know which lag.
    pub fn requests_with<E>(
        &mut self,
        now: Instant,
        room: impl FnMut(ReplicaId) -> usize,
        mut holder_for: impl FnMut(&Wanted) -> Result<Option<ReplicaId>, E>,
    ) -> Result<Vec<(ReplicaId, Vec<TxId>)>, E> {
        let mut holders = Closures {
            room,
            lagging: |_| false,
            holder_for: |wanted: &Wanted, _: &dyn Fn(ReplicaId) -> bool| holder_for(wanted),
            error: std::marker::PhantomData,
        };
        self.requests(now, &mut holders)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    const OPEN_PER_HOLDER: usize = 4;
    const TIMEOUT: Duration = Duration::from_secs(5);

    fn tx(i: u32, holder: ReplicaId) -> TxId {
        let mut tx = [0; 32];
        tx[..4].copy_from_slice(&i.to_be_bytes());
        tx[4] = holder as u8;
        tx
    }

    fn wanted(source: ReplicaId, height: u64, now: Instant) -> Wanted {
        Wanted::new([1; 16], height, source, 0, false, true, now)
    }

    /// A holder that answers: every key it is asked for is received.
    /// A silent holder: its requests stay open until they time out.
    struct World {
        keys: WantedKeys,
        silent: ReplicaId,
        /// Open requests to the silent holder, by deadline.
        open_silent: Vec<Instant>,
        received: usize,
        asked_of_silent: usize,
    }

    impl World {
        fn pull(&mut self, now: Instant) {
            self.open_silent.retain(|deadline| *deadline > now);
            let open = self.open_silent.len();
            let silent = self.silent;
            let requests = self
                .keys
                .requests_with::<Infallible>(
                    now,
                    |holder| {
                        if holder == silent {
                            OPEN_PER_HOLDER - open
                        } else {
                            OPEN_PER_HOLDER
                        }
                    },
                    |wanted| Ok(Some(wanted.source)),
                )
                .unwrap();
            for (holder, txs) in requests {
                assert!(txs.len() <= MAX_KEY_REQUEST_IDS);
                if holder == silent {
                    self.open_silent.push(now + TIMEOUT);
                    self.asked_of_silent += txs.len();
                } else {
                    for tx in txs {
                        self.keys.remove(&tx);
                        self.received += 1;
                    }
                }
            }
        }
    }

    #[test]
    fn a_silent_holder_holds_back_none_of_the_keys_other_holders_give() {
        let start = Instant::now();
        let mut world = World {
            keys: WantedKeys::default(),
            silent: 1,
            open_silent: Vec::new(),
            received: 0,
            asked_of_silent: 0,
        };
        // Far more keys behind the silent holder than its window takes, and they came first.
        let behind_silent = 8 * OPEN_PER_HOLDER * MAX_KEY_REQUEST_IDS;
        for i in 0..behind_silent as u32 {
            world.keys.insert(tx(i, 1), wanted(1, 5, start));
        }
        let others = 3 * OPEN_PER_HOLDER * MAX_KEY_REQUEST_IDS;
        for i in 0..others as u32 {
            world.keys.insert(tx(i, 2), wanted(2, 7, start));
        }
        let mut now = start;
        let mut ticks = 0;
        while world.received < others {
            ticks += 1;
            assert!(ticks <= 20, "received {} of {others}", world.received);
            world.pull(now);
            now += Duration::from_millis(250);
        }
        assert_eq!(world.keys.len(), behind_silent);
        assert_eq!(world.keys.lowest_height(), Some(5));
        // The silent holder was asked for one window per timeout, no more.
        assert_eq!(world.asked_of_silent, OPEN_PER_HOLDER * MAX_KEY_REQUEST_IDS);
    }

    #[test]
    fn a_pull_costs_what_it_asks_not_what_is_wanted() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        let wanted_count = 3 * DUE_PER_PULL;
        for i in 0..wanted_count as u32 {
            keys.insert(tx(i, 1), wanted(1, 1, start));
        }
        let looked_up = std::cell::Cell::new(0);
        let pull = |keys: &mut WantedKeys, now, room| {
            keys.requests_with::<Infallible>(
                now,
                |_| room,
                |wanted| {
                    looked_up.set(looked_up.get() + 1);
                    Ok(Some(wanted.source))
                },
            )
            .unwrap()
        };
        // The holder is full: every due key is parked, at most the budget per pull.
        assert!(pull(&mut keys, start, 0).is_empty());
        assert_eq!(looked_up.get(), DUE_PER_PULL);
        for _ in 1..3 {
            pull(&mut keys, start, 0);
        }
        assert_eq!(looked_up.get(), wanted_count);
        // Nothing newly due: a pull with room asks parked keys and looks up no holder.
        let requests = pull(&mut keys, start, 2);
        assert_eq!(looked_up.get(), wanted_count);
        assert_eq!(requests.len(), 2);
        let first: Vec<TxId> = (0..MAX_KEY_REQUEST_IDS as u32).map(|i| tx(i, 1)).collect();
        assert_eq!(
            requests[0].1, first,
            "parked keys are asked in the order they came"
        );
        assert!(keys.get(&first[0]).is_some_and(|wanted| wanted.tries == 1));
        // Asked keys are due again after their backoff, and parked ones stay parked.
        assert!(pull(&mut keys, start + backoff(1) / 2, 0).is_empty());
        assert_eq!(looked_up.get(), wanted_count);
        pull(&mut keys, start + backoff(1), 0);
        assert_eq!(looked_up.get(), wanted_count + 2 * MAX_KEY_REQUEST_IDS);
    }

    /// A holder with a backlog parked behind it for LAGGING_AFTER lags; when its keys have no
    /// other holder (a sealer that is the patient's home), each is looked up once while it
    /// stays parked, within the pull's budget, and never again until it is asked.
    #[test]
    fn a_backlog_with_no_other_holder_is_looked_up_once() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        let count = 8 * MAX_KEY_REQUEST_IDS;
        for i in 0..count as u32 {
            keys.insert(tx(i, 1), wanted(1, 1, start));
        }
        let full = |keys: &mut WantedKeys, now| {
            let looked_up = std::cell::Cell::new(0);
            keys.requests_with::<Infallible>(
                now,
                |_| 0,
                |wanted| {
                    looked_up.set(looked_up.get() + 1);
                    Ok(Some(wanted.source))
                },
            )
            .unwrap();
            looked_up.get()
        };
        assert_eq!(full(&mut keys, start), count, "all parked");
        assert_eq!(full(&mut keys, start), 0, "not lagging yet");
        // Each key looked up twice (its holder, then the next after a skip: the same).
        let lagging = start + LAGGING_AFTER;
        assert_eq!(
            full(&mut keys, lagging),
            2 * count,
            "backlogged: each looked at"
        );
        assert!(keys.get(&tx(0, 1)).is_some_and(|w| w.stays));
        assert_eq!(
            full(&mut keys, lagging),
            0,
            "and not again while it stays parked"
        );
        assert_eq!(keys.len(), count);
    }

    #[test]
    fn a_key_removed_while_parked_is_not_asked_and_the_heights_follow() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        for i in 0..3 {
            keys.insert(tx(i, 1), wanted(1, 10 + u64::from(i), start));
        }
        let park = |keys: &mut WantedKeys| {
            keys.requests_with::<Infallible>(start, |_| 0, |w| Ok(Some(w.source)))
                .unwrap()
        };
        assert!(park(&mut keys).is_empty());
        assert_eq!(keys.lowest_height(), Some(10));
        assert!(keys.remove(&tx(0, 1)).is_some());
        assert_eq!(keys.lowest_height(), Some(11));
        let requests = keys
            .requests_with::<Infallible>(start, |_| 4, |w| Ok(Some(w.source)))
            .unwrap();
        assert_eq!(requests, vec![(1, vec![tx(1, 1), tx(2, 1)])]);
        keys.remove(&tx(1, 1));
        keys.remove(&tx(2, 1));
        assert_eq!(keys.lowest_height(), None);
        assert_eq!(keys.len(), 0);
    }

    #[test]
    fn a_key_told_to_wait_is_not_asked_before_then() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        keys.insert(tx(0, 1), wanted(1, 1, start));
        keys.retry_at(&tx(0, 1), start + BACKOFF_MAX);
        let ask = |keys: &mut WantedKeys, now| {
            keys.requests_with::<Infallible>(now, |_| 4, |w| Ok(Some(w.source)))
                .unwrap()
        };
        assert!(ask(&mut keys, start + BACKOFF_MAX / 2).is_empty());
        assert_eq!(ask(&mut keys, start + BACKOFF_MAX).len(), 1);
    }

    #[test]
    fn the_backoff_doubles_up_to_ten_seconds() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(7), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}

/// Red team (s8) against the wanted-key schedule of commit 00cc5b66 (`WantedKeys`): a pull
/// costs what it asks, a silent or dishonest holder holds back only its own keys, nothing
/// wanted is lost from the schedule, `lowest_height` is exact, memory is bounded.
///
/// The red team of 00cc5b66 (session 8). The tests under "Breaks" each failed on that commit
/// and pass since the fixes (stamped parkings, `retry_at` and errors that put keys back,
/// shrinking, lagging holders skipped); the others are guarantees that held.
#[cfg(test)]
mod red_team_s8 {
    use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
    use std::convert::Infallible;
    use std::time::{Duration, Instant};

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    pub(super) const OPEN_PER_HOLDER: usize = 4;
    pub(super) const TIMEOUT: Duration = Duration::from_secs(5);
    pub(super) const TICK: Duration = Duration::from_millis(250);
    /// The node the tests play.
    pub(super) const ME: ReplicaId = 0;

    /// A transaction id: `tag` first (orders ties in `due`: 0 is the lowest a dishonest
    /// validator can grind), then `n`.
    pub(super) fn id(tag: u8, n: u32) -> TxId {
        let mut tx = [0; 32];
        tx[0] = tag;
        tx[1..5].copy_from_slice(&n.to_be_bytes());
        tx
    }

    /// A patient whose home is `home` (its first byte, read by [`holder_for`]).
    pub(super) fn patient(home: ReplicaId) -> PersonId {
        let mut p = [7; 16];
        p[0] = home as u8;
        p
    }

    pub(super) fn party(source: ReplicaId, home: ReplicaId, height: u64, now: Instant) -> Wanted {
        Wanted::new(patient(home), height, source, 0, false, true, now)
    }

    pub(super) fn grantee(home: ReplicaId, height: u64, now: Instant) -> Wanted {
        Wanted::new(patient(home), height, home, 0, true, true, now)
    }

    /// `exchange::holder_for` without a directory, with no holder lagging.
    fn holder_for(wanted: &Wanted) -> ReplicaId {
        holder_for_lagging(wanted, &|_| false)
    }

    /// `exchange::holder_for` without a directory (the patient's home is its first byte).
    pub(super) fn holder_for_lagging(
        wanted: &Wanted,
        lagging: &dyn Fn(ReplicaId) -> bool,
    ) -> ReplicaId {
        let home = ReplicaId::from(wanted.patient[0]);
        super::holder_for(wanted, ME, 4, Some(home), lagging).unwrap_or(ME)
    }

    fn ask(keys: &mut WantedKeys, now: Instant, room: usize) -> Vec<(ReplicaId, Vec<TxId>)> {
        keys.requests_with::<Infallible>(now, |_| room, |w| Ok(Some(holder_for(w))))
            .unwrap()
    }

    fn has_duplicates(txs: &[TxId]) -> bool {
        txs.iter().collect::<HashSet<_>>().len() != txs.len()
    }

    /// Every invariant between `keys`, `due`, `parked` and `heights`.
    pub(super) fn check_invariants(keys: &WantedKeys) {
        let mut heights: BTreeMap<u64, usize> = BTreeMap::new();
        for wanted in keys.keys.values() {
            *heights.entry(wanted.height).or_default() += 1;
        }
        assert_eq!(heights, keys.heights, "counts per height");
        assert_eq!(
            keys.lowest_height(),
            keys.keys.values().map(|w| w.height).min(),
            "lowest_height is exact"
        );
        let due: BTreeSet<(Instant, TxId)> = keys
            .keys
            .iter()
            .filter(|(_, w)| w.parked.is_none())
            .map(|(tx, w)| (w.next_try, *tx))
            .collect();
        assert_eq!(due, keys.due, "due holds exactly the keys not parked");
        let queues: HashMap<ReplicaId, HashSet<(TxId, u64)>> = keys
            .parked
            .iter()
            .map(|(h, p)| (*h, p.queue.iter().copied().collect()))
            .collect();
        for (tx, wanted) in &keys.keys {
            if let Some(parking) = wanted.parked {
                let queue = queues.get(&parking.holder).expect("its holder's queue");
                assert!(
                    queue.contains(&(*tx, parking.stamp)),
                    "a parked key is in its holder's queue (else never asked again)"
                );
            }
        }
        for (holder, parked) in &keys.parked {
            let live = keys
                .keys
                .values()
                .filter(|w| w.parked.is_some_and(|p| p.holder == *holder))
                .count();
            assert_eq!(parked.live, live, "live of holder {holder}");
            // Each stamp once across both queues, so no key has two live entries (a walk
            // keeps stamps: red team s15b F1).
            let mut stamps = HashSet::new();
            let mut entries = 0;
            for (tx, stamp) in parked.queue.iter() {
                assert!(
                    stamps.insert(*stamp),
                    "stamp {stamp} twice in holder {holder}'s queues"
                );
                entries += usize::from(keys.keys.get(tx).is_some_and(|w| {
                    w.parked
                        == Some(Parking {
                            holder: *holder,
                            stamp: *stamp,
                        })
                }));
            }
            assert_eq!(entries, parked.live, "live entries of holder {holder}");
        }
    }

    /// The size of the largest parked queue, and the live count of that holder.
    fn queue_sizes(keys: &WantedKeys) -> Vec<(ReplicaId, usize, usize)> {
        keys.parked
            .iter()
            .map(|(h, p)| (*h, p.queue.len(), p.live))
            .collect()
    }

    // ---------------------------------------------------------------------------------------
    // Breaks
    // ---------------------------------------------------------------------------------------

    /// A grantee's keys parked behind the patient's home (its four requests open: slow, or
    /// silent), then the grant ends (`end_grant` removes them) and a new grant wants them again
    /// (`on_read_grant` → `want`) while the home is still full: the new entries are parked
    /// again behind the old ones, which were never swept, and are live again. The next request
    /// to the home asks every id twice, and each key's tries count 2 for one ask.
    #[test]
    fn a_key_wanted_again_while_parked_is_asked_twice_in_one_request() {
        let start = Instant::now();
        let home = 2;
        let mut keys = WantedKeys::default();
        for i in 0..10 {
            keys.insert(id(1, i), grantee(home, 5, start));
        }
        assert!(
            ask(&mut keys, start, 0).is_empty(),
            "parked behind the home"
        );
        for i in 0..10 {
            assert!(keys.remove(&id(1, i)).is_some(), "the grant ended");
        }
        for i in 0..10 {
            keys.insert(id(1, i), grantee(home, 5, start));
        }
        assert!(ask(&mut keys, start, 0).is_empty(), "parked again");
        check_invariants(&keys);
        let requests = ask(&mut keys, start, OPEN_PER_HOLDER);
        assert_eq!(requests.len(), 1);
        let (holder, txs) = &requests[0];
        assert_eq!(*holder, home);
        assert!(
            !has_duplicates(txs),
            "{} ids asked for 10 keys: every id twice in one request",
            txs.len()
        );
        assert!(
            keys.iter().all(|(_, w)| w.tries == 1),
            "one ask counted as {} tries",
            keys.get(&id(1, 0)).unwrap().tries
        );
    }

    /// The same, repeated: each time a parked key is removed and wanted again while its holder
    /// is full, one more live entry stays in the holder's queue. The sweep (`park`) keeps
    /// every entry whose key is parked there, duplicates included, so it never shrinks the
    /// queue: the queue grows by one per cycle for a single wanted key (memory not bounded by
    /// what is wanted), every later park behind that holder sweeps the whole queue (a pull
    /// then costs O(parks × queue), not what it asks), and one request asks the same id
    /// MAX_KEY_REQUEST_IDS times.
    #[test]
    fn duplicate_parked_entries_are_never_swept() {
        let start = Instant::now();
        let home = 2;
        let mut keys = WantedKeys::default();
        let tx = id(1, 0);
        let cycles = 3 * MAX_KEY_REQUEST_IDS;
        for _ in 0..cycles {
            keys.insert(tx, grantee(home, 5, start));
            assert!(ask(&mut keys, start, 0).is_empty());
            keys.remove(&tx);
        }
        keys.insert(tx, grantee(home, 5, start));
        assert!(ask(&mut keys, start, 0).is_empty());
        check_invariants(&keys);
        let (_, queue, live) = queue_sizes(&keys)[0];
        assert_eq!(keys.len(), 1);
        let requests = ask(&mut keys, start, 1);
        let asked = requests.first().map_or(0, |(_, txs)| txs.len());
        assert!(
            queue <= 2 * live + MAX_KEY_REQUEST_IDS + 1,
            "one wanted key, {queue} entries parked for it (live {live}); the next request \
             asked it {asked} times"
        );
    }

    /// `insert` of a `Wanted` that is parked (as `remove` returns it, or a clone of `get`):
    /// `park` runs before the key is in `keys`, so when the push triggers the sweep, the sweep
    /// drops the new entry itself. The key is then parked behind the holder but in no queue
    /// and not in `due`: never asked again, its height held in `lowest_height` for ever, and
    /// the holder's `live` count one too high for ever. No caller reinserts a removed `Wanted`
    /// today (latent: the `Some(holder)` arm of `insert` exists only for that).
    #[test]
    fn inserting_a_parked_wanted_can_lose_it() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        // One more stale entry than the sweep allows once the key is pushed.
        let stale = MAX_KEY_REQUEST_IDS as u32 + 2;
        for i in 0..stale {
            keys.insert(id(1, i), party(1, 2, 3, start));
        }
        assert!(ask(&mut keys, start, 0).is_empty());
        let removed: Vec<Wanted> = (0..stale)
            .map(|i| keys.remove(&id(1, i)).unwrap())
            .collect();
        // Wanted again as it was (parked behind holder 1).
        keys.insert(id(1, 0), removed[0].clone());
        let mut asked = false;
        let mut now = start;
        for _ in 0..200 {
            now += TICK;
            for (_, txs) in ask(&mut keys, now, OPEN_PER_HOLDER) {
                for tx in txs {
                    asked |= tx == id(1, 0);
                    keys.remove(&tx);
                }
            }
        }
        assert!(
            asked,
            "the key was never asked again in 50 s (still wanted: {}, lowest height {:?})",
            keys.contains(&id(1, 0)),
            keys.lowest_height()
        );
    }

    /// `requests` pops due keys and draws parked ones before it calls `holder_for` on the
    /// next; an `Err` from `holder_for` (`directory.home` reads `chain.db`) returns before the
    /// popped, drawn and batched keys are marked asked or put back: they stay in `keys` but
    /// are in neither `due` nor a parked queue, so they are never asked again. (The service
    /// stops on the error today, and a restart wants them again: low severity, but the
    /// schedule itself loses them.)
    #[test]
    fn an_error_from_holder_for_loses_the_keys_already_taken() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        // Five keys parked behind holder 1.
        for i in 0..5 {
            keys.insert(id(1, i), party(1, 3, 3, start));
        }
        assert!(ask(&mut keys, start, 0).is_empty());
        // Two due keys of holder 2, then one whose home cannot be read (height 99).
        keys.insert(id(2, 0), party(2, 3, 3, start));
        keys.insert(id(2, 1), party(2, 3, 3, start));
        keys.insert(id(9, 0), party(2, 3, 99, start));
        let failed = keys.requests_with::<&str>(
            start,
            |_| OPEN_PER_HOLDER,
            |w| {
                if w.height == 99 {
                    return Err("chain.db: disk I/O error");
                }
                Ok(Some(holder_for(w)))
            },
        );
        assert!(failed.is_err());
        let mut asked = HashSet::new();
        let mut now = start;
        for _ in 0..200 {
            now += TICK;
            for (_, txs) in ask(&mut keys, now, OPEN_PER_HOLDER) {
                asked.extend(txs);
            }
        }
        let lost: Vec<_> = keys
            .iter()
            .map(|(tx, _)| *tx)
            .filter(|tx| !asked.contains(tx))
            .collect();
        assert!(
            lost.is_empty(),
            "{} of {} wanted keys never asked again in 50 s after one failed lookup",
            lost.len(),
            keys.len()
        );
    }

    /// `retry_at` ("asks `tx` again no sooner than `at`": a holder at or past this node's
    /// state said `NotEntitled`/`NotOnChain`) on a parked key only sets `next_try`, which a
    /// parked key ignores: the answer that said no also freed a slot of that holder's window,
    /// so the key is asked again at the next pull instead of after BACKOFF_MAX (§5.3: "keeps
    /// retrying at the slowest pace").
    #[test]
    fn retry_at_on_a_parked_key_is_ignored() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        let tx = id(1, 0);
        keys.insert(tx, party(1, 1, 3, start));
        // Asked once; the holder is slow (its window fills with other requests meanwhile).
        assert_eq!(ask(&mut keys, start, OPEN_PER_HOLDER).len(), 1);
        let due = start + backoff(1);
        assert!(ask(&mut keys, due, 0).is_empty(), "due again, parked");
        // The holder (past this node's state) answers the first request: NotEntitled.
        let answered = due + Duration::from_millis(100);
        keys.retry_at(&tx, answered + BACKOFF_MAX);
        // That answer freed a slot: the next pull.
        let requests = ask(&mut keys, answered + TICK, 1);
        assert!(
            requests.is_empty(),
            "asked again {:?} after a NotEntitled that said wait {:?}",
            TICK,
            BACKOFF_MAX
        );
    }

    /// Holders that behave as the brief lists, simulated tick by tick as the service does
    /// (answers, expiry, then a pull; `room` = 4 - open).
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Behaviour {
        Honest,
        /// Never answers: its requests time out after 5 s.
        Silent,
        /// Answers at once, `Busy` to every id.
        BusyForever,
        /// Answers `NotHeld` to every id 4.9 s after the request (just under the timeout).
        SlowJustUnder,
        /// Answers at once, the key for half the ids (bit 3 of `n` clear), `NotHeld` for
        /// the others.
        SomeIds,
    }

    struct OpenRequest {
        answer_at: Option<Instant>,
        sent: Instant,
        deadline: Instant,
        txs: Vec<TxId>,
    }

    struct Sim {
        keys: WantedKeys,
        behaviours: BTreeMap<ReplicaId, Behaviour>,
        open: BTreeMap<ReplicaId, Vec<OpenRequest>>,
        received_at: HashMap<TxId, Instant>,
        received_from: HashMap<TxId, ReplicaId>,
        lookups_per_pull: Vec<usize>,
        /// As `exchange::Exchange`: when each holder's oldest unanswered request was sent.
        unanswered_since: HashMap<ReplicaId, Instant>,
    }

    impl Sim {
        fn new(behaviours: &[(ReplicaId, Behaviour)]) -> Sim {
            Sim {
                keys: WantedKeys::default(),
                behaviours: behaviours.iter().copied().collect(),
                open: behaviours.iter().map(|(h, _)| (*h, Vec::new())).collect(),
                received_at: HashMap::new(),
                received_from: HashMap::new(),
                lookups_per_pull: Vec::new(),
                unanswered_since: HashMap::new(),
            }
        }

        fn gives(behaviour: Behaviour, tx: &TxId) -> bool {
            match behaviour {
                Behaviour::Honest => true,
                Behaviour::SomeIds => (tx[4] >> 3).is_multiple_of(2),
                _ => false,
            }
        }

        fn tick(&mut self, now: Instant) {
            let mut answered = Vec::new();
            for (holder, opens) in &mut self.open {
                opens.retain(|open| match open.answer_at {
                    Some(at) if at <= now && at < open.deadline => {
                        answered.push((*holder, open.txs.clone()));
                        false
                    }
                    _ => open.deadline > now,
                });
            }
            for (holder, _) in &answered {
                match self.open[holder].iter().map(|open| open.sent).min() {
                    Some(oldest) => self.unanswered_since.insert(*holder, oldest),
                    None => self.unanswered_since.remove(holder),
                };
            }
            for (holder, txs) in answered {
                let behaviour = self.behaviours[&holder];
                for tx in txs {
                    if Self::gives(behaviour, &tx) && self.keys.remove(&tx).is_some() {
                        self.received_at.insert(tx, now);
                        self.received_from.insert(tx, holder);
                    }
                }
            }
            let open = &self.open;
            let since = &self.unanswered_since;
            let lagging = |holder: ReplicaId| {
                since
                    .get(&holder)
                    .is_some_and(|at| now.saturating_duration_since(*at) >= LAGGING_AFTER)
            };
            let lookups = std::cell::Cell::new(0);
            let mut holders = Closures {
                room: |holder| {
                    OPEN_PER_HOLDER.saturating_sub(open.get(&holder).map_or(0, Vec::len))
                },
                lagging,
                holder_for: |w: &Wanted, lagging: &dyn Fn(ReplicaId) -> bool| {
                    lookups.set(lookups.get() + 1);
                    Ok::<_, Infallible>(Some(holder_for_lagging(w, lagging)))
                },
                error: std::marker::PhantomData,
            };
            let requests = self.keys.requests(now, &mut holders).unwrap();
            self.lookups_per_pull.push(lookups.get());
            for (holder, txs) in requests {
                assert!(!txs.is_empty() && txs.len() <= MAX_KEY_REQUEST_IDS);
                let answer_at = match self.behaviours[&holder] {
                    Behaviour::Silent => None,
                    Behaviour::SlowJustUnder => Some(now + Duration::from_millis(4_900)),
                    _ => Some(now + Duration::from_millis(1)),
                };
                self.unanswered_since.entry(holder).or_insert(now);
                let opens = self.open.get_mut(&holder).unwrap();
                opens.push(OpenRequest {
                    answer_at,
                    sent: now,
                    deadline: now + TIMEOUT,
                    txs,
                });
                assert!(
                    opens.len() <= OPEN_PER_HOLDER,
                    "holder {holder} over its window"
                );
            }
        }
    }

    /// A sealer that is silent (or answers just under the timeout) keeps its window full: a
    /// key it sealed reaches the patient's home, which would give it at once, only after
    /// SEALER_TRIES asks of the sealer, and a try is counted only when the key is asked. So
    /// every such key must pass three times through the silent sealer's window of
    /// 4 × 1024 ids per 5 s (819 ids/s): 32,768 keys take ~117 s to reach an honest home that
    /// gives 4,096 per tick; a node wanting 1,000,000 keys of a crashed sealer waits ~61 min,
    /// 3,000,000 ~3 h. A single key alone takes 1.75 s. The same for a node that lost its
    /// store (sealer and home itself: every other validator in turn): every key's first try
    /// goes to `me + 1`, and if that one is silent, all of them wait for its window (~36 s for
    /// 32,768 keys, ~20 min for 1,000,000) although the next validator gives them at once.
    /// The silent holder held back keys another holder (§5.2) would give. (The O(wanted) pull
    /// before 00cc5b66 also counted a try only when sent.) Since: a holder that has left a
    /// request unanswered for `LAGGING_AFTER` lags, its keys count the skip as a try and go to
    /// the next holder; all three cases within 30 s.
    #[test]
    fn a_silent_sealer_gates_the_home_fallback() {
        let count = 8 * OPEN_PER_HOLDER * MAX_KEY_REQUEST_IDS;
        let cases = [
            ("silent sealer, honest home", Behaviour::Silent, 1, 2),
            (
                "sealer answering at 4.9 s, honest home",
                Behaviour::SlowJustUnder,
                1,
                2,
            ),
            (
                "lost store, validator me+1 silent",
                Behaviour::Silent,
                ME,
                ME,
            ),
        ];
        let mut took = Vec::new();
        for (case, first, source, home) in cases {
            let start = Instant::now();
            let mut sim = Sim::new(&[(1, first), (2, Behaviour::Honest), (3, Behaviour::Honest)]);
            for i in 0..count as u32 {
                sim.keys.insert(id(1, i), party(source, home, 3, start));
            }
            let mut now = start;
            let limit = start + Duration::from_secs(300);
            while sim.keys.len() > 0 && now < limit {
                sim.tick(now);
                now += TICK;
            }
            assert!(sim.received_from.values().all(|h| *h != 1));
            took.push((case, now - start, sim.keys.len()));
        }
        eprintln!("{took:?}");
        assert!(
            took.iter().all(|(_, t, _)| *t <= Duration::from_secs(30)),
            "{count} keys that honest holders give at once: {took:?}"
        );
    }

    /// The keys are a `HashMap` and each parked queue a `VecDeque` (before 00cc5b66: a
    /// `BTreeMap`, which frees its nodes as keys leave): neither ever shrinks, so the memory of
    /// the largest backlog stays with the service after every key came. A node restored from
    /// an old backup that wanted 3,000,000 keys keeps ~400 MB of empty table (and 96 MB of
    /// queue if they were parked) for the life of the process. Bounded by the peak, not by
    /// what is wanted now.
    #[test]
    fn the_memory_of_a_backlog_is_kept_after_every_key_came() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        let count = 50_000u32;
        for i in 0..count {
            keys.insert(id(1, i), party(1, 2, 3, start));
        }
        // The holder's window full: every key parked.
        while !keys.due.is_empty() {
            ask(&mut keys, start, 0);
        }
        let mut now = start;
        while keys.len() > 0 {
            now += TICK;
            for (_, txs) in ask(&mut keys, now, OPEN_PER_HOLDER) {
                for tx in txs {
                    keys.remove(&tx);
                }
            }
        }
        check_invariants(&keys);
        let table = keys.keys.capacity();
        let queue = keys
            .parked
            .values()
            .map(|p| p.queue.capacity())
            .sum::<usize>();
        assert!(
            table <= 4 * 1024 && queue <= 4 * 1024,
            "nothing wanted, room kept for {table} keys ({} bytes each) and {queue} parked ids",
            std::mem::size_of::<(TxId, Wanted)>()
        );
    }

    // ---------------------------------------------------------------------------------------
    // Guarantees that held
    // ---------------------------------------------------------------------------------------

    /// Keys of an honest holder come within a few ticks while dishonest holders (silent, busy
    /// for ever, slow just under the timeout, giving only some ids) have far more keys, all
    /// due first and with the lowest ids a grinder can get; each pull looks up at most
    /// DUE_PER_PULL holders; no holder's window is ever exceeded.
    #[test]
    fn dishonest_holders_hold_back_none_of_an_honest_holders_keys() {
        let start = Instant::now();
        let honest = 1;
        let dishonest = [
            (2, Behaviour::Silent),
            (3, Behaviour::BusyForever),
            (4, Behaviour::SlowJustUnder),
            (5, Behaviour::SomeIds),
        ];
        let mut all = vec![(honest, Behaviour::Honest)];
        all.extend(dishonest);
        let mut sim = Sim::new(&all);
        let per_dishonest = 10_000u32;
        for (holder, _) in dishonest {
            for i in 0..per_dishonest {
                // Homes dishonest too: the fallback does not help them.
                sim.keys
                    .insert(id(0, i * 8 + holder), party(holder, holder, 2, start));
            }
        }
        let honest_count = 3 * OPEN_PER_HOLDER as u32 * MAX_KEY_REQUEST_IDS as u32;
        let later = start + Duration::from_millis(1);
        for i in 0..honest_count {
            sim.keys
                .insert(id(0xff, i), party(honest, honest, 9, later));
        }
        let mut now = start;
        for _ in 0..40 {
            sim.tick(now);
            now += TICK;
        }
        let honest_left = (0..honest_count)
            .filter(|i| sim.keys.contains(&id(0xff, *i)))
            .count();
        assert_eq!(honest_left, 0, "honest keys still wanted after 10 s");
        let latest = (0..honest_count)
            .map(|i| sim.received_at[&id(0xff, i)] - start)
            .max()
            .unwrap();
        // 40,000 dishonest keys due first: 2 pulls to reach the honest ones, then 3 pulls.
        assert!(latest <= Duration::from_secs(3), "{latest:?}");
        assert!(sim.lookups_per_pull.iter().all(|n| *n <= DUE_PER_PULL));
        // Keep going for a minute: the dishonest keys cycle, still bounded.
        for _ in 0..240 {
            sim.tick(now);
            now += TICK;
        }
        assert!(sim.lookups_per_pull.iter().all(|n| *n <= DUE_PER_PULL));
        check_invariants(&sim.keys);
        // Some-ids holder gave its even ids; the rest of its keys are still wanted.
        let some_ids_given = sim.received_from.values().filter(|h| **h == 5).count();
        assert_eq!(some_ids_given, per_dishonest as usize / 2);
        // Stale entries are swept: no parked queue is far above its live count.
        for (holder, queue, live) in queue_sizes(&sim.keys) {
            assert!(
                queue <= 2 * live + MAX_KEY_REQUEST_IDS + 1,
                "{holder}: {queue} / {live}"
            );
        }
    }

    /// A sealer that answers `Busy` at once for ever (or gives only some ids): its keys pass
    /// SEALER_TRIES quickly and the honest home gives them (the fallback works when the
    /// sealer answers).
    #[test]
    fn keys_of_a_busy_sealer_come_from_the_home() {
        for sealer in [Behaviour::BusyForever, Behaviour::SomeIds] {
            let start = Instant::now();
            let (s, home) = (1, 2);
            let mut sim = Sim::new(&[(s, sealer), (home, Behaviour::Honest)]);
            for i in 0..20_000 {
                sim.keys.insert(id(1, i), party(s, home, 3, start));
            }
            let mut now = start;
            for _ in 0..200 {
                sim.tick(now);
                now += TICK;
                if sim.keys.len() == 0 {
                    break;
                }
            }
            assert_eq!(sim.keys.len(), 0, "{sealer:?}");
            assert!(
                now - start <= Duration::from_secs(30),
                "{sealer:?}: {:?}",
                now - start
            );
        }
    }

    /// A parked key keeps its tries: drawn from a sealer's queue at tries 2, it is asked of
    /// the sealer (its third try), then of the home (holder_for moves with the tries).
    #[test]
    fn a_parked_key_keeps_its_tries_and_moves_to_the_home_after_sealer_tries() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        let tx = id(1, 0);
        keys.insert(tx, party(1, 2, 3, start));
        let mut now = start;
        for tries in 0..2 {
            assert_eq!(ask(&mut keys, now, OPEN_PER_HOLDER), vec![(1, vec![tx])]);
            assert_eq!(keys.get(&tx).unwrap().tries, tries + 1);
            now += backoff(tries + 1);
        }
        assert!(
            ask(&mut keys, now, 0).is_empty(),
            "parked behind the sealer"
        );
        assert_eq!(keys.get(&tx).unwrap().tries, 2);
        now += Duration::from_secs(60);
        assert_eq!(
            ask(&mut keys, now, 1),
            vec![(1, vec![tx])],
            "asked of the sealer"
        );
        now += backoff(3);
        assert_eq!(
            ask(&mut keys, now, OPEN_PER_HOLDER),
            vec![(2, vec![tx])],
            "then the home"
        );
        check_invariants(&keys);
    }

    /// A key nobody can be asked for now (`holder_for` → `None`) is due again after
    /// BACKOFF_MAX with its tries unchanged, and asked once a holder exists.
    #[test]
    fn a_key_with_no_holder_comes_back() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        keys.insert(id(1, 0), party(1, 2, 3, start));
        let none = keys
            .requests_with::<Infallible>(start, |_| OPEN_PER_HOLDER, |_| Ok(None))
            .unwrap();
        assert!(none.is_empty());
        check_invariants(&keys);
        assert_eq!(keys.get(&id(1, 0)).unwrap().tries, 0);
        assert!(ask(&mut keys, start + BACKOFF_MAX / 2, OPEN_PER_HOLDER).is_empty());
        assert_eq!(
            ask(&mut keys, start + BACKOFF_MAX, OPEN_PER_HOLDER).len(),
            1
        );
    }

    /// A pull with 100,000 keys wanted looks up at most DUE_PER_PULL holders, parks once, and
    /// a pull with nothing newly due looks up none.
    #[test]
    fn a_pull_over_many_keys_costs_its_budget() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        let count = 100_000u32;
        for i in 0..count {
            keys.insert(
                id(1, i),
                party(1 + i % 3, 3, u64::from(i % 1000) + 1, start),
            );
        }
        let mut lookups = 0;
        let mut pulls = 0;
        let mut total = 0;
        loop {
            let before = lookups;
            keys.requests_with::<Infallible>(
                start,
                |_| 0,
                |w| {
                    lookups += 1;
                    Ok(Some(holder_for(w)))
                },
            )
            .unwrap();
            pulls += 1;
            assert!(lookups - before <= DUE_PER_PULL);
            if lookups == before {
                break;
            }
            total = lookups;
        }
        assert_eq!(
            total, count as usize,
            "each key looked up once, then parked"
        );
        assert_eq!(pulls, count as usize / DUE_PER_PULL + 2);
        check_invariants(&keys);
        assert_eq!(keys.lowest_height(), Some(1));
    }

    /// The parked keys, and all the keys.
    fn parked_and_all(keys: &WantedKeys) -> (Vec<TxId>, Vec<TxId>) {
        let parked = keys
            .keys
            .iter()
            .filter(|(_, w)| w.parked.is_some())
            .map(|(tx, _)| *tx)
            .collect();
        (parked, keys.iter().map(|(tx, _)| *tx).collect())
    }

    /// One random operation sequence: insert (fresh ids, or ids removed before when `reuse`),
    /// remove, retry_at, requests with random rooms and holders (some `None`), time moving on.
    /// After every step, the invariants; per request, at most MAX ids, none removed, the room
    /// respected, the holder the one `holder_for` gives, a due key not before its time. At the
    /// end, with every holder answering, every wanted key is asked and received.
    fn random_run(seed: u64, reuse: bool) -> usize {
        let mut rng = StdRng::seed_from_u64(seed);
        let start = Instant::now();
        let mut now = start;
        let mut keys = WantedKeys::default();
        let mut next_id = 0u32;
        let mut removed: Vec<TxId> = Vec::new();
        let mut peak_live: HashMap<ReplicaId, usize> = HashMap::new();
        let mut duplicates = 0;
        let (mut max_keys, mut max_parked) = (0, 0);
        // Holder 4 is sometimes unknown (no holder now).
        let lookup = |w: &Wanted| -> Option<ReplicaId> {
            let holder = holder_for(w);
            (holder != 4 || !w.tries.is_multiple_of(3)).then_some(holder)
        };
        for _ in 0..700 {
            match rng.gen_range(0..100) {
                0..=29 => {
                    // Mostly a few keys (a block), sometimes a burst (a grant's history).
                    let count = if rng.gen_bool(0.15) {
                        rng.gen_range(100..700)
                    } else {
                        rng.gen_range(1..12)
                    };
                    for _ in 0..count {
                        let tx = if reuse && !removed.is_empty() && rng.gen_bool(0.6) {
                            removed.swap_remove(rng.gen_range(0..removed.len()))
                        } else {
                            next_id += 1;
                            id(1, next_id)
                        };
                        let source = rng.gen_range(1..5);
                        let home = rng.gen_range(1..5);
                        let height = rng.gen_range(1..60);
                        let wanted = if rng.gen_bool(0.3) {
                            grantee(home, height, now)
                        } else {
                            party(source, home, height, now)
                        };
                        keys.insert(tx, wanted);
                    }
                }
                30..=49 => {
                    // Received, erased, or a grant ended: parked keys most often.
                    let (parked, all) = parked_and_all(&keys);
                    for _ in 0..rng.gen_range(0..200) {
                        let from = if !parked.is_empty() && rng.gen_bool(0.7) {
                            &parked
                        } else {
                            &all
                        };
                        if from.is_empty() {
                            break;
                        }
                        let tx = from[rng.gen_range(0..from.len())];
                        if keys.remove(&tx).is_some() {
                            removed.push(tx);
                        }
                    }
                }
                50..=59 => {
                    let (parked, all) = parked_and_all(&keys);
                    for from in [&parked, &all] {
                        if !from.is_empty() {
                            let tx = from[rng.gen_range(0..from.len())];
                            let wait = Duration::from_millis(rng.gen_range(0..12_000));
                            keys.retry_at(&tx, now + wait);
                        }
                    }
                    keys.retry_at(&id(2, rng.gen_range(0..100)), now);
                }
                60..=64 => now += Duration::from_millis(rng.gen_range(0..3_000)),
                _ => {
                    let before: HashMap<TxId, Wanted> =
                        keys.iter().map(|(tx, w)| (*tx, w.clone())).collect();
                    // Half the time a holder's window is full.
                    let rooms: HashMap<ReplicaId, usize> = (1..5)
                        .map(|h| {
                            let room = if rng.gen_bool(0.5) {
                                0
                            } else {
                                rng.gen_range(1..=OPEN_PER_HOLDER)
                            };
                            (h, room)
                        })
                        .collect();
                    let mut lookups = 0;
                    let requests = keys
                        .requests_with::<Infallible>(
                            now,
                            |h| rooms[&h],
                            |w| {
                                lookups += 1;
                                Ok(lookup(w))
                            },
                        )
                        .unwrap();
                    assert!(lookups <= DUE_PER_PULL);
                    let mut per_holder: HashMap<ReplicaId, usize> = HashMap::new();
                    let mut in_call = HashSet::new();
                    for (holder, txs) in &requests {
                        assert!(!txs.is_empty() && txs.len() <= MAX_KEY_REQUEST_IDS);
                        *per_holder.entry(*holder).or_default() += 1;
                        if has_duplicates(txs) {
                            duplicates += 1;
                        }
                        for tx in txs {
                            let was = before.get(tx).expect("a removed key is never asked");
                            // Or, past a holder whose keys have waited parked for
                            // LAGGING_AFTER, the next one (the skip counted as a try).
                            let asked_of = |skips: u32| {
                                let mut skipped = was.clone();
                                skipped.tries += skips;
                                lookup(&skipped) == Some(*holder)
                            };
                            assert!((0..4).any(asked_of), "asked of its holder");
                            if was.parked.is_none() {
                                assert!(was.next_try <= now, "a due key not before its time");
                            }
                            let first = in_call.insert(*tx);
                            assert!(
                                first || txs.iter().filter(|t| *t == tx).count() > 1,
                                "one key in two requests of one pull"
                            );
                        }
                    }
                    for (holder, n) in per_holder {
                        assert!(n <= rooms[&holder], "holder {holder}: {n} requests");
                    }
                    // Holders answer some requests: those keys are received.
                    for (_, txs) in requests {
                        if rng.gen_bool(0.3) {
                            for tx in txs {
                                if keys.remove(&tx).is_some() {
                                    removed.push(tx);
                                }
                            }
                        }
                    }
                }
            }
            check_invariants(&keys);
            max_keys = max_keys.max(keys.len());
            max_parked = max_parked.max(keys.parked.values().map(|p| p.live).sum());
            for (holder, queue, live) in queue_sizes(&keys) {
                let peak = peak_live.entry(holder).or_default();
                *peak = (*peak).max(live);
                assert!(
                    queue <= 2 * *peak + MAX_KEY_REQUEST_IDS + 1,
                    "holder {holder}: {queue} entries, peak live {peak}"
                );
            }
        }
        assert_eq!(duplicates, 0, "an id twice in one request (reuse: {reuse})");
        eprintln!(
            "seed {seed:#x}: at most {max_keys} keys wanted, {max_parked} parked; \
             {duplicates} requests with an id twice"
        );
        // Every holder answers from now on: every wanted key is asked and received.
        let wanted = keys.len();
        let mut ticks = 0;
        while keys.len() > 0 {
            ticks += 1;
            assert!(ticks < 2_000, "{} keys never asked again", keys.len());
            now += TICK;
            let requests = ask(&mut keys, now, OPEN_PER_HOLDER);
            for (_, txs) in requests {
                for tx in txs {
                    keys.remove(&tx);
                }
            }
            check_invariants(&keys);
        }
        assert!(wanted == 0 || ticks > 0);
        duplicates
    }

    #[test]
    fn random_operations_keep_the_invariants_with_fresh_ids() {
        for seed in 0..2 {
            random_run(0x5eed_0000 + seed, false);
        }
    }

    /// With ids wanted again after removal (a grant ended and given again, §5.4): every
    /// invariant holds, no id twice in one request included (each parking has its stamp).
    #[test]
    fn random_operations_keep_the_invariants_with_ids_wanted_again() {
        for seed in 0..2 {
            random_run(0x5eed_1000 + seed, true);
        }
    }
}

/// Red team (s8b) against commit 6ebe613a's lagging holders (`WantedKeys::requests`, `route`,
/// `route_all`, with `exchange::holder_for`'s rules copied as in `red_team_s8`): a silent or
/// slow holder holds back only the keys only it may give, a grantee's keys go to the patient's
/// home only, no key is lost from the schedule, a pull's cost is bounded, a merely slow honest
/// holder is not starved of its keys. The tests under "Breaks" each failed on 6ebe613a and pass
/// since the fixes (a holder with keys parked behind it for `LAGGING_AFTER` lags too; a failed
/// pull puts back the chunk in hand; a grantee's key is passed over without a lookup; the
/// second lookup of a skip counts); the others are guarantees that held.
#[cfg(test)]
mod red_team_s8b {
    use std::collections::{BTreeMap, HashMap, HashSet};
    use std::convert::Infallible;
    use std::time::{Duration, Instant};

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    use super::red_team_s8::{
        ME, OPEN_PER_HOLDER, TICK, TIMEOUT, check_invariants, grantee,
        holder_for_lagging as holder_for, id, party,
    };

    /// A holder as the tests play it: answers after `delay` (`None`: never), giving the keys
    /// `gives` says it holds (`NotHeld`/`Busy` for the others: nothing happens to them).
    #[derive(Clone, Copy)]
    struct Holder {
        delay: Option<Duration>,
        gives: fn(&TxId) -> bool,
    }

    fn everything(_: &TxId) -> bool {
        true
    }

    fn nothing(_: &TxId) -> bool {
        false
    }

    struct Open {
        sent: Instant,
        answer_at: Option<Instant>,
        txs: Vec<TxId>,
    }

    /// The service's loop, tick by tick: answers that arrived, requests expired (as
    /// `Exchange::answered` and `expire_requests`: an answer sets the holder unanswered since
    /// its oldest open request; an expiry leaves it), then a pull.
    struct Sim {
        keys: WantedKeys,
        holders: BTreeMap<ReplicaId, Holder>,
        open: BTreeMap<ReplicaId, Vec<Open>>,
        since: HashMap<ReplicaId, Instant>,
        received_at: HashMap<TxId, Instant>,
        asked: HashMap<TxId, Vec<ReplicaId>>,
        lookups_per_pull: Vec<usize>,
        /// Each tick lasts TICK plus up to this much (a loaded key service).
        jitter: Option<(StdRng, Duration)>,
    }

    impl Sim {
        fn new(holders: &[(ReplicaId, Holder)]) -> Sim {
            Sim {
                keys: WantedKeys::default(),
                holders: holders.iter().copied().collect(),
                open: holders.iter().map(|(h, _)| (*h, Vec::new())).collect(),
                since: HashMap::new(),
                received_at: HashMap::new(),
                asked: HashMap::new(),
                lookups_per_pull: Vec::new(),
                jitter: None,
            }
        }

        fn lagging(since: &HashMap<ReplicaId, Instant>, holder: ReplicaId, now: Instant) -> bool {
            since
                .get(&holder)
                .is_some_and(|at| now.saturating_duration_since(*at) >= LAGGING_AFTER)
        }

        fn tick(&mut self, now: Instant) {
            let mut answered = Vec::new();
            for (holder, opens) in &mut self.open {
                let before = opens.len();
                opens.retain(|open| match open.answer_at {
                    Some(at) if at <= now && at.saturating_duration_since(open.sent) < TIMEOUT => {
                        answered.push((*holder, open.txs.clone()));
                        false
                    }
                    _ => true,
                });
                if opens.len() < before {
                    match opens.iter().map(|o| o.sent).min() {
                        Some(oldest) => self.since.insert(*holder, oldest),
                        None => self.since.remove(holder),
                    };
                }
                opens.retain(|open| now.saturating_duration_since(open.sent) < TIMEOUT);
            }
            for (holder, txs) in answered {
                let gives = self.holders[&holder].gives;
                for tx in txs {
                    if gives(&tx) && self.keys.remove(&tx).is_some() {
                        self.received_at.insert(tx, now);
                    }
                }
            }
            let open = &self.open;
            let since = &self.since;
            let lagging = |holder: ReplicaId| Self::lagging(since, holder, now);
            let lookups = std::cell::Cell::new(0);
            let mut holders = Closures {
                room: |holder| {
                    OPEN_PER_HOLDER.saturating_sub(open.get(&holder).map_or(0, Vec::len))
                },
                lagging,
                holder_for: |w: &Wanted, lagging: &dyn Fn(ReplicaId) -> bool| {
                    lookups.set(lookups.get() + 1);
                    Ok::<_, Infallible>(Some(holder_for(w, lagging)))
                },
                error: std::marker::PhantomData,
            };
            let requests = self.keys.requests(now, &mut holders).unwrap();
            self.lookups_per_pull.push(lookups.get());
            for (holder, txs) in requests {
                assert!(!txs.is_empty() && txs.len() <= MAX_KEY_REQUEST_IDS);
                for tx in &txs {
                    self.asked.entry(*tx).or_default().push(holder);
                }
                let answer_at = self.holders[&holder].delay.map(|delay| now + delay);
                self.since.entry(holder).or_insert(now);
                let opens = self.open.get_mut(&holder).unwrap();
                opens.push(Open {
                    sent: now,
                    answer_at,
                    txs,
                });
                assert!(
                    opens.len() <= OPEN_PER_HOLDER,
                    "holder {holder} over its window"
                );
            }
        }

        /// Ticks until nothing is wanted or `limit` passed: the time it took.
        fn run(&mut self, start: Instant, limit: Duration) -> Duration {
            let mut now = start;
            while self.keys.len() > 0 && now - start < limit {
                self.tick(now);
                now += TICK;
                if let Some((rng, max)) = &mut self.jitter {
                    now += Duration::from_micros(rng.gen_range(0..=max.as_micros() as u64));
                }
            }
            now - start
        }
    }

    // ---------------------------------------------------------------------------------------
    // Breaks
    // ---------------------------------------------------------------------------------------

    /// A sealer that answers every request `NotHeld` (or `Busy`, or with no reply at all, which
    /// `Exchange::answered` takes as an answer before `on_answer` drops it) 1.9 s after it was
    /// sent never lags (`LAGGING_AFTER` is 2 s: its oldest open request is always younger),
    /// and its window is full all the time: each of its keys must pass SEALER_TRIES times
    /// through that window (4 x 1,024 ids per ~2 s) before the patient's home, which gives it
    /// at once, is asked. 16,384 keys: 23.5 s, where a silent sealer costs 3.25 s and one
    /// answering at 2.1 s 8.25 s (32,768: 47.5 s against 4.25 s); a million keys ~25 min. The "answers just inside the timeout lags too" of §12.1
    /// item 7 is only true of a timeout of 2 s: a dishonest sealer picks 1.9 s.
    #[test]
    fn a_sealer_answering_just_under_lagging_after_gates_the_home() {
        let count = 4 * OPEN_PER_HOLDER * MAX_KEY_REQUEST_IDS;
        let mut took = Vec::new();
        for delay in [None, Some(2_100), Some(1_900)] {
            let start = Instant::now();
            let sealer = Holder {
                delay: delay.map(Duration::from_millis),
                gives: nothing,
            };
            let home = Holder {
                delay: Some(Duration::from_millis(1)),
                gives: everything,
            };
            let mut sim = Sim::new(&[(1, sealer), (2, home)]);
            for i in 0..count as u32 {
                sim.keys.insert(id(1, i), party(1, 2, 3, start));
            }
            took.push((delay, sim.run(start, Duration::from_secs(300))));
        }
        eprintln!("{count} keys, sealer answering at (ms, None: silent) -> took: {took:?}");
        assert!(
            took.iter().all(|(_, t)| *t <= Duration::from_secs(12)),
            "{count} keys the home gives at once: {took:?}"
        );
    }

    /// A pull "chooses a holder for at most DUE_PER_PULL keys", but a key due for a lagging
    /// holder without room is looked up twice (`route`: `holder_for`, then again with the skip
    /// counted): when the next holder is full too (or is the same, as for a grantee or a
    /// sealer that is the patient's home), one pull makes 2 x DUE_PER_PULL lookups, each a
    /// possible `chain.db` read (`Directory::home`). Bounded, but twice the stated bound.
    #[test]
    fn a_pull_past_a_lagging_holder_looks_up_twice_its_budget() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        for i in 0..(2 * DUE_PER_PULL) as u32 {
            keys.insert(id(1, i), party(1, 2, 3, start));
        }
        let lookups = std::cell::Cell::new(0);
        let lagging = |h: ReplicaId| h == 1;
        let mut holders = Closures {
            room: |_| 0,
            lagging,
            holder_for: |w: &Wanted, lagging: &dyn Fn(ReplicaId) -> bool| {
                lookups.set(lookups.get() + 1);
                Ok::<_, Infallible>(Some(holder_for(w, lagging)))
            },
            error: std::marker::PhantomData,
        };
        assert!(keys.requests(start, &mut holders).unwrap().is_empty());
        check_invariants(&keys);
        assert!(
            lookups.get() <= DUE_PER_PULL,
            "{} holder lookups in one pull (DUE_PER_PULL {DUE_PER_PULL})",
            lookups.get()
        );
    }

    /// `route_all` moves keys parked behind a lagging holder: it draws a chunk from the
    /// holder's queue (`draw_parked`: out of the queue, each still marked parked), then
    /// `take`s and routes them one by one. An error from `holder_for` on one key of the chunk
    /// (the `Directory::home` read of `chain.db`) returns at once: `put_back` gives back the
    /// key in hand and those batched, but the rest of the chunk is in no queue and still marked
    /// parked, so never drawn again, never in `due`: lost from the schedule until a restart,
    /// with `live` counting it and `lowest_height` held at its height. The fix of
    /// `red_team_s8::an_error_from_holder_for_loses_the_keys_already_taken` misses this path.
    #[test]
    fn an_error_while_moving_keys_off_a_lagging_holder_loses_the_rest_of_the_chunk() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        for i in 0..10 {
            // Key 3's home cannot be read (height 99).
            let height = if i == 3 { 99 } else { 3 };
            keys.insert(id(1, i), party(1, 2, height, start));
        }
        // Holder 1 full (not lagging yet): every key parked behind it.
        assert!(
            keys.requests_with::<Infallible>(start, |_| 0, |w| Ok(Some(holder_for(w, &|_| false))))
                .unwrap()
                .is_empty()
        );
        check_invariants(&keys);
        // Holder 1 lags now; the home has room; key 3's lookup fails.
        let lagging = |h: ReplicaId| h == 1;
        let mut holders = Closures {
            room: |h| if h == 1 { 0 } else { OPEN_PER_HOLDER },
            lagging,
            holder_for: |w: &Wanted, lagging: &dyn Fn(ReplicaId) -> bool| {
                if w.height == 99 {
                    return Err("chain.db: disk I/O error");
                }
                Ok(Some(holder_for(w, lagging)))
            },
            error: std::marker::PhantomData,
        };
        assert!(keys.requests(start, &mut holders).is_err());
        // Every key is still wanted: each must be asked again once nothing fails.
        let mut asked = HashSet::new();
        let mut now = start;
        for _ in 0..200 {
            now += TICK;
            for (_, txs) in keys
                .requests_with::<Infallible>(
                    now,
                    |_| OPEN_PER_HOLDER,
                    |w| Ok(Some(holder_for(w, &|_| false))),
                )
                .unwrap()
            {
                for tx in txs {
                    asked.insert(tx);
                    keys.remove(&tx);
                }
            }
        }
        let lost: Vec<u32> = (0..10).filter(|i| !asked.contains(&id(1, *i))).collect();
        assert!(
            lost.is_empty(),
            "keys {lost:?} never asked again in 50 s after one failed lookup (still wanted: {}, \
             lowest height {:?})",
            keys.len(),
            keys.lowest_height()
        );
    }

    /// Keys only a silent holder may give (a grantee's, from the patient's home) parked behind
    /// it first, then keys it sealed for patients of another home, which that home gives at
    /// once: once the holder lags, `route_all` draws one chunk of its queue, moves none of it
    /// (the grantee's keys can go nowhere else) and stops ("while some of a chunk move"); the
    /// chunk goes to the back. The other home's keys wait until the queue has turned past
    /// every grantee key, a chunk a pull: with 100,000 grantee keys ahead, ~25 s (~4 min per
    /// million) for keys the other home gives in one tick. The silent holder holds back keys
    /// another holder may give, in proportion to the keys only it may give.
    #[test]
    fn keys_only_a_lagging_holder_gives_hold_back_the_others_behind_it() {
        let start = Instant::now();
        let silent = Holder {
            delay: None,
            gives: nothing,
        };
        let home = Holder {
            delay: Some(Duration::from_millis(1)),
            gives: everything,
        };
        let mut sim = Sim::new(&[(1, silent), (2, home)]);
        let grantee_keys = 100_000u32;
        for i in 0..grantee_keys {
            sim.keys.insert(id(1, i), grantee(1, 2, start));
        }
        // The silent holder sealed these; the patient's home (2) gives them.
        let later = start + Duration::from_millis(1);
        let others = 4 * MAX_KEY_REQUEST_IDS as u32;
        for i in 0..others {
            sim.keys.insert(id(2, i), party(1, 2, 3, later));
        }
        let mut now = start;
        while (0..others).any(|i| sim.keys.contains(&id(2, i)))
            && now - start < Duration::from_secs(120)
        {
            sim.tick(now);
            now += TICK;
        }
        let latest = (0..others)
            .filter_map(|i| sim.received_at.get(&id(2, i)))
            .max()
            .map(|at| *at - start);
        eprintln!("the other home's {others} keys came by {latest:?}");
        assert!(
            latest.is_some_and(|t| t <= Duration::from_secs(10)),
            "the other home's keys behind {grantee_keys} grantee keys of a silent home: {latest:?}"
        );
        check_invariants(&sim.keys);
    }

    // ---------------------------------------------------------------------------------------
    // Guarantees tried
    // ---------------------------------------------------------------------------------------

    /// A slow honest sealer (it answers with the keys 2.5 s after each request: it lags all
    /// the time, its window full) holds keys the patient's home does not (the home answers
    /// `NotHeld` at once): every key must still come from the sealer, at about its rate, not
    /// bounce to the home for ever. With and without jitter on the service's ticks.
    #[test]
    fn a_slow_honest_sealer_is_not_starved_by_a_home_answering_not_held() {
        for jitter in [None, Some(Duration::from_millis(40))] {
            let start = Instant::now();
            let sealer = Holder {
                delay: Some(Duration::from_millis(2_500)),
                gives: everything,
            };
            let home = Holder {
                delay: Some(Duration::from_millis(1)),
                gives: nothing,
            };
            let mut sim = Sim::new(&[(1, sealer), (2, home)]);
            sim.jitter = jitter.map(|j| (StdRng::seed_from_u64(7), j));
            let count = 20_000u32;
            for i in 0..count {
                sim.keys.insert(id(1, i), party(1, 2, 3, start));
            }
            let took = sim.run(start, Duration::from_secs(600));
            let bounced = sim
                .asked
                .values()
                .map(|holders| holders.iter().filter(|h| **h == 2).count())
                .max()
                .unwrap_or(0);
            // The sealer gives 4 x 1,024 keys per ~2.75 s: ~13 s for 20,000 at its best.
            eprintln!(
                "jitter {jitter:?}: {count} keys of a slow sealer in {took:?}, {} still \
                 wanted; a key asked of the home up to {bounced} times",
                sim.keys.len()
            );
            assert_eq!(
                sim.keys.len(),
                0,
                "starved after {took:?} (jitter {jitter:?})"
            );
            assert!(took <= Duration::from_secs(120), "{took:?}");
        }
    }

    /// A single key of a slow honest sealer whose window other keys (of another patient, also
    /// only the sealer's) keep full: the key is asked of the sealer within a bounded time.
    #[test]
    fn one_key_behind_a_busy_slow_sealer_comes() {
        let start = Instant::now();
        let sealer = Holder {
            delay: Some(Duration::from_millis(2_300)),
            gives: everything,
        };
        let home = Holder {
            delay: Some(Duration::from_millis(1)),
            gives: nothing,
        };
        let mut sim = Sim::new(&[(1, sealer), (2, home), (3, home)]);
        for i in 0..12_000 {
            sim.keys.insert(id(1, i), party(1, 2, 3, start));
        }
        let late = start + Duration::from_secs(3);
        let mut now = start;
        let mut inserted = false;
        while now - start < Duration::from_secs(120) && sim.keys.len() > 0 {
            if !inserted && now >= late {
                sim.keys.insert(id(9, 0), party(1, 3, 3, now));
                inserted = true;
            }
            sim.tick(now);
            now += TICK;
        }
        assert!(
            sim.received_at.contains_key(&id(9, 0)),
            "the late key never came (asked of {:?})",
            sim.asked.get(&id(9, 0))
        );
    }

    /// A grantee's keys go to the patient's home only, whether it lags, is full or both, and
    /// however many tries the skips count; a node that lost its store never asks itself.
    /// Random operations with random lagging and rooms; every invariant after each step; at
    /// the end, every holder answering, every key comes.
    #[test]
    fn random_lagging_keeps_the_invariants_and_grantee_keys_at_the_home() {
        for seed in 0..2u64 {
            let mut rng = StdRng::seed_from_u64(0x5eed_8b00 + seed);
            let start = Instant::now();
            let mut now = start;
            let mut keys = WantedKeys::default();
            let mut next = 0u32;
            let mut max_lookups = 0;
            for _ in 0..200 {
                match rng.gen_range(0..100) {
                    0..=29 => {
                        let count = if rng.gen_bool(0.1) {
                            rng.gen_range(200..1_500)
                        } else {
                            rng.gen_range(1..20)
                        };
                        for _ in 0..count {
                            next += 1;
                            let home = rng.gen_range(0..4);
                            let source = rng.gen_range(0..4);
                            let height = rng.gen_range(1..50);
                            let wanted = if home != ME && rng.gen_bool(0.3) {
                                grantee(home, height, now)
                            } else {
                                party(source, home, height, now)
                            };
                            keys.insert(id(1, next), wanted);
                        }
                    }
                    30..=44 => {
                        let all: Vec<TxId> = keys.iter().map(|(tx, _)| *tx).collect();
                        for _ in 0..rng.gen_range(0..300) {
                            if all.is_empty() {
                                break;
                            }
                            keys.remove(&all[rng.gen_range(0..all.len())]);
                        }
                    }
                    45..=52 => {
                        let all: Vec<TxId> = keys.iter().map(|(tx, _)| *tx).collect();
                        if !all.is_empty() {
                            let tx = all[rng.gen_range(0..all.len())];
                            keys.retry_at(
                                &tx,
                                now + Duration::from_millis(rng.gen_range(0..9_000)),
                            );
                        }
                    }
                    53..=59 => now += Duration::from_millis(rng.gen_range(0..3_000)),
                    _ => {
                        let before: HashMap<TxId, Wanted> =
                            keys.iter().map(|(tx, w)| (*tx, w.clone())).collect();
                        let lag: Vec<bool> = (0..4).map(|_| rng.gen_bool(0.4)).collect();
                        let rooms: Vec<usize> = (0..4)
                            .map(|_| {
                                if rng.gen_bool(0.5) {
                                    0
                                } else {
                                    rng.gen_range(1..=OPEN_PER_HOLDER)
                                }
                            })
                            .collect();
                        let lagging = |h: ReplicaId| lag[h as usize];
                        // As the pull sees them: unanswered, or with keys parked too long.
                        let backlog: Vec<bool> = (0..4).map(|h| keys.backlogged(h, now)).collect();
                        let lags = |h: ReplicaId| lag[h as usize] || backlog[h as usize];
                        let lookups = std::cell::Cell::new(0);
                        let mut holders = Closures {
                            room: |h: ReplicaId| rooms[h as usize],
                            lagging,
                            holder_for: |w: &Wanted, lagging: &dyn Fn(ReplicaId) -> bool| {
                                lookups.set(lookups.get() + 1);
                                Ok::<_, Infallible>(Some(holder_for(w, lagging)))
                            },
                            error: std::marker::PhantomData,
                        };
                        let requests = keys.requests(now, &mut holders).unwrap();
                        max_lookups = max_lookups.max(lookups.get());
                        assert!(lookups.get() <= 2 * DUE_PER_PULL);
                        let mut per_holder = [0usize; 4];
                        let mut seen = HashSet::new();
                        for (holder, txs) in &requests {
                            assert_ne!(*holder, ME, "asked itself");
                            assert!(!txs.is_empty() && txs.len() <= MAX_KEY_REQUEST_IDS);
                            per_holder[*holder as usize] += 1;
                            for tx in txs {
                                assert!(seen.insert(*tx), "one key twice in a pull");
                                let was = before.get(tx).expect("a removed key asked");
                                if was.as_grantee {
                                    assert_eq!(
                                        *holder, was.source,
                                        "a grantee's key asked of {holder}, not the home {}",
                                        was.source
                                    );
                                } else {
                                    // The holder it gives, or the next (a skip counted).
                                    let skipped = |skips: u32| {
                                        let mut skipped = was.clone();
                                        skipped.tries += skips;
                                        *holder == holder_for(&skipped, &lags)
                                    };
                                    // Or the one it was parked behind.
                                    assert!(
                                        (0..4).any(skipped)
                                            || was.parked.is_some_and(|p| p.holder == *holder),
                                        "asked of {holder}"
                                    );
                                }
                            }
                        }
                        for h in 0..4 {
                            assert!(per_holder[h] <= rooms[h], "holder {h} over its room");
                        }
                        for (_, txs) in requests {
                            if rng.gen_bool(0.3) {
                                for tx in txs {
                                    keys.remove(&tx);
                                }
                            }
                        }
                    }
                }
                check_invariants(&keys);
            }
            eprintln!(
                "seed {seed}: {} wanted at the end, at most {max_lookups} lookups a pull",
                keys.len()
            );
            let mut ticks = 0;
            while keys.len() > 0 {
                ticks += 1;
                assert!(ticks < 2_000, "{} keys never asked again", keys.len());
                now += TICK;
                for (_, txs) in keys
                    .requests_with::<Infallible>(
                        now,
                        |_| OPEN_PER_HOLDER,
                        |w| Ok(Some(holder_for(w, &|_| false))),
                    )
                    .unwrap()
                {
                    for tx in txs {
                        keys.remove(&tx);
                    }
                }
                check_invariants(&keys);
            }
        }
    }

    /// Grantee keys parked behind a lagging home cost a pull one chunk, not the whole queue,
    /// and stay parked there (never asked of anyone else).
    #[test]
    fn grantee_keys_behind_a_lagging_home_cost_a_chunk_a_pull() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        for i in 0..50_000 {
            keys.insert(id(1, i), grantee(2, 3, start));
        }
        while !keys.due.is_empty() {
            keys.requests_with::<Infallible>(start, |_| 0, |w| Ok(Some(holder_for(w, &|_| false))))
                .unwrap();
        }
        let lookups = std::cell::Cell::new(0);
        let lagging = |h: ReplicaId| h == 2;
        for _ in 0..5 {
            let mut holders = Closures {
                room: |_| 0,
                lagging,
                holder_for: |w: &Wanted, lagging: &dyn Fn(ReplicaId) -> bool| {
                    lookups.set(lookups.get() + 1);
                    Ok::<_, Infallible>(Some(holder_for(w, lagging)))
                },
                error: std::marker::PhantomData,
            };
            let requests = keys.requests(start, &mut holders).unwrap();
            assert!(requests.is_empty());
            assert!(
                keys.iter().all(|(_, w)| w.tries == 0),
                "a skip that went nowhere counted"
            );
        }
        assert!(
            lookups.get() <= 5 * 2 * MAX_KEY_REQUEST_IDS,
            "{}",
            lookups.get()
        );
        check_invariants(&keys);
    }

    /// Parks 5,000 keys made by `wanted` behind holder 2 (no holder has room), then pulls with
    /// holder 2 lagging at each of `after` past `LAGGING_AFTER`: the count of keys walked before
    /// the first pull and after each.
    fn walked_after_pulls(wanted: fn(Instant) -> Wanted, after: &[Duration]) -> Vec<u64> {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        for i in 0..5_000 {
            keys.insert(id(1, i), wanted(start));
        }
        while !keys.due.is_empty() {
            keys.requests_with::<Infallible>(start, |_| 0, |w| Ok(Some(holder_for(w, &|_| false))))
                .unwrap();
        }
        let mut stamps = vec![keys.walked];
        stamps.extend(after.iter().map(|after| {
            let mut holders = Closures {
                room: |_| 0,
                lagging: |h: ReplicaId| h == 2,
                holder_for: |w: &Wanted, lagging: &dyn Fn(ReplicaId) -> bool| {
                    Ok::<_, Infallible>(Some(holder_for(w, lagging)))
                },
                error: std::marker::PhantomData,
            };
            let now = start + LAGGING_AFTER + *after;
            assert!(keys.requests(now, &mut holders).unwrap().is_empty());
            keys.walked
        }));
        check_invariants(&keys);
        stamps
    }

    /// Keys parked behind a lagging holder that another (full) holder also gives are walked
    /// at most once per [`MOVE_EVERY`], however many pulls come in between (one a block under
    /// load): a walk pops and parks again every key it looks at.
    #[test]
    fn keys_behind_a_lagging_holder_are_walked_once_per_move_every() {
        let ms = Duration::from_millis;
        let stamps = walked_after_pulls(
            |now| party(2, 3, 3, now),
            &[ms(0), ms(1), ms(50), ms(249), MOVE_EVERY],
        );
        assert!(stamps[1] > stamps[0], "the first lagging pull walks");
        for (i, later) in [1, 50, 249].iter().enumerate() {
            assert_eq!(stamps[i + 2], stamps[1], "walked again {later} ms later");
        }
        assert!(stamps[5] > stamps[1], "never walked again");
    }

    /// Keys no other holder gives (a grantee's; or found so by a lookup) wait in the holder's
    /// staying queue, which walks do not look at: a backlog of them costs no walk at all
    /// (BENCHMARKS.md, "the key services' share on the chain of 1,000,000").
    #[test]
    fn keys_no_other_holder_gives_are_never_walked() {
        let after: Vec<Duration> = (0..20).map(|i| MOVE_EVERY * i).collect();
        let grantees = walked_after_pulls(|now| grantee(2, 3, now), &after);
        assert!(
            grantees.windows(2).all(|w| w[0] == w[1]),
            "grantees' keys walked: {grantees:?}"
        );
        // Holder 2 alone gives these: one walk finds it out, the next ones pass them by.
        let alone = walked_after_pulls(|now| party(2, 2, 3, now), &after);
        assert!(alone[1] > alone[0], "the first walk looks them up");
        assert!(
            alone[1..].windows(2).all(|w| w[0] == w[1]),
            "keys held by one holder walked again: {alone:?}"
        );
    }
}

/// Red team (s8c) of 169dfbbc (`move_off` stops after a chunk of lookups that moved none) and
/// c5a3b3fc (a node that lost its store asks every other validator in turn, a lagging one
/// included; a no no longer holds its own keys 10 s).
#[cfg(test)]
mod red_team_s8c {
    use std::collections::HashMap;
    use std::convert::Infallible;
    use std::time::{Duration, Instant};

    use super::*;

    use super::red_team_s8::{
        ME, OPEN_PER_HOLDER, TICK, TIMEOUT, check_invariants, holder_for_lagging, id, party,
    };

    /// How a holder plays: silent (down) until `up_at` (`None`: for ever), then answers at the
    /// next tick, giving the keys `gives` says it holds (a no for the others: nothing happens).
    #[derive(Clone, Copy)]
    struct Holder {
        up_at: Option<Duration>,
        gives: fn(&TxId) -> bool,
    }

    fn everything(_: &TxId) -> bool {
        true
    }

    fn nothing(_: &TxId) -> bool {
        false
    }

    const SILENT: Holder = Holder {
        up_at: None,
        gives: nothing,
    };
    const GIVES: Holder = Holder {
        up_at: Some(Duration::ZERO),
        gives: everything,
    };
    const SAYS_NO: Holder = Holder {
        up_at: Some(Duration::ZERO),
        gives: nothing,
    };

    struct Open {
        sent: Instant,
        txs: Vec<TxId>,
    }

    /// `Holders` for `n` validators, as `exchange::Holders` (room from the open requests,
    /// lagging from `unanswered_since`), `holder_for` given.
    struct Many<'a, F> {
        n: usize,
        open: &'a HashMap<ReplicaId, Vec<Open>>,
        since: &'a HashMap<ReplicaId, Instant>,
        now: Instant,
        holder_for: F,
        lookups: usize,
    }

    impl<F> Holders for Many<'_, F>
    where
        F: FnMut(&Wanted, &dyn Fn(ReplicaId) -> bool) -> ReplicaId,
    {
        type Error = Infallible;

        fn count(&self) -> usize {
            self.n
        }

        fn room(&mut self, holder: ReplicaId) -> usize {
            OPEN_PER_HOLDER.saturating_sub(self.open.get(&holder).map_or(0, Vec::len))
        }

        fn lagging(&self, holder: ReplicaId) -> bool {
            self.since
                .get(&holder)
                .is_some_and(|at| self.now.saturating_duration_since(*at) >= LAGGING_AFTER)
        }

        fn holder_for(
            &mut self,
            wanted: &Wanted,
            lagging: &dyn Fn(ReplicaId) -> bool,
        ) -> Result<Option<ReplicaId>, Infallible> {
            self.lookups += 1;
            Ok(Some((self.holder_for)(wanted, lagging)))
        }
    }

    /// The service's loop, a tick at a time (answers, expiry, pull), over `n` validators.
    struct Sim {
        n: usize,
        start: Instant,
        keys: WantedKeys,
        holders: HashMap<ReplicaId, Holder>,
        open: HashMap<ReplicaId, Vec<Open>>,
        since: HashMap<ReplicaId, Instant>,
        received_at: HashMap<TxId, Duration>,
        asked_of: HashMap<ReplicaId, usize>,
        /// Asks of each key, by holder, and when.
        asks: HashMap<TxId, Vec<(ReplicaId, Duration)>>,
        max_lookups: usize,
        holder_for: fn(usize, &Wanted, &dyn Fn(ReplicaId) -> bool) -> ReplicaId,
    }

    impl Sim {
        fn new(
            n: usize,
            holders: &[(ReplicaId, Holder)],
            holder_for: fn(usize, &Wanted, &dyn Fn(ReplicaId) -> bool) -> ReplicaId,
        ) -> Sim {
            Sim {
                n,
                start: Instant::now(),
                keys: WantedKeys::default(),
                holders: holders.iter().copied().collect(),
                open: holders.iter().map(|(h, _)| (*h, Vec::new())).collect(),
                since: HashMap::new(),
                received_at: HashMap::new(),
                asked_of: HashMap::new(),
                asks: HashMap::new(),
                max_lookups: 0,
                holder_for,
            }
        }

        fn up(&self, holder: ReplicaId, now: Instant) -> bool {
            self.holders[&holder]
                .up_at
                .is_some_and(|at| now >= self.start + at)
        }

        fn tick(&mut self, now: Instant, track: bool) {
            let mut answered = Vec::new();
            let holders: Vec<ReplicaId> = self.open.keys().copied().collect();
            for holder in holders {
                let up = self.up(holder, now);
                let opens = self.open.get_mut(&holder).unwrap();
                let before = opens.len();
                // An up holder answers what it was asked (sent a tick ago or more) in time.
                opens.retain(|open| {
                    if up && open.sent < now && now.saturating_duration_since(open.sent) < TIMEOUT {
                        answered.push((holder, open.txs.clone()));
                        false
                    } else {
                        true
                    }
                });
                if opens.len() < before {
                    match opens.iter().map(|o| o.sent).min() {
                        Some(oldest) => self.since.insert(holder, oldest),
                        None => self.since.remove(&holder),
                    };
                }
                opens.retain(|open| now.saturating_duration_since(open.sent) < TIMEOUT);
            }
            for (holder, txs) in answered {
                let gives = self.holders[&holder].gives;
                for tx in txs {
                    if gives(&tx) && self.keys.remove(&tx).is_some() {
                        self.received_at.insert(tx, now - self.start);
                    }
                }
            }
            let hf = self.holder_for;
            let n = self.n;
            let mut holders = Many {
                n,
                open: &self.open,
                since: &self.since,
                now,
                holder_for: |w: &Wanted, lagging: &dyn Fn(ReplicaId) -> bool| hf(n, w, lagging),
                lookups: 0,
            };
            let requests = self.keys.requests(now, &mut holders).unwrap();
            self.max_lookups = self.max_lookups.max(holders.lookups);
            for (holder, txs) in requests {
                assert!(!txs.is_empty() && txs.len() <= MAX_KEY_REQUEST_IDS);
                *self.asked_of.entry(holder).or_default() += txs.len();
                if track {
                    for tx in &txs {
                        self.asks
                            .entry(*tx)
                            .or_default()
                            .push((holder, now - self.start));
                    }
                }
                self.since.entry(holder).or_insert(now);
                let opens = self.open.get_mut(&holder).unwrap();
                opens.push(Open { sent: now, txs });
                assert!(
                    opens.len() <= OPEN_PER_HOLDER,
                    "holder {holder} over its window"
                );
            }
        }

        /// Ticks until `done` or `limit`: the time it took.
        fn run(&mut self, limit: Duration, track: bool, done: impl Fn(&Sim) -> bool) -> Duration {
            let mut now = self.start;
            while !done(self) && now - self.start < limit {
                self.tick(now, track);
                now += TICK;
            }
            now - self.start
        }
    }

    /// `exchange::holder_for` for four validators (the home is the patient's first byte).
    fn four(_: usize, w: &Wanted, lagging: &dyn Fn(ReplicaId) -> bool) -> ReplicaId {
        holder_for_lagging(w, lagging)
    }

    /// `exchange::holder_for` for `n` validators, keys this node sealed for its own patients
    /// (it lost its store): every other validator in turn by tries, a lagging one included.
    fn lost_store(n: usize, w: &Wanted, _: &dyn Fn(ReplicaId) -> bool) -> ReplicaId {
        assert_eq!((w.source, w.patient[0] as ReplicaId), (ME, ME));
        let n = n as u32;
        let others = n - 1;
        (ME + 1 + w.tries % others) % n
    }

    // ---------------------------------------------------------------------------------------
    // 169dfbbc: the stop rule
    // ---------------------------------------------------------------------------------------

    /// Keys of a silent sealer (1) parked behind it before it lagged: first `ahead` whose
    /// patient's home is this node (no other holder: `holder_for` gives only the sealer), then
    /// 4,096 the patient's home 2 gives at once. Each pull now looks at one chunk of the
    /// unmovable ones, puts it back at the end, and stops: the keys home 2 gives wait
    /// `ahead` / 1,024 pulls (less what the silent sealer's own window draws, 4 chunks per 5 s).
    /// Before 169dfbbc a pull looked at up to 16 chunks (its budget of 32,768 lookups, two a
    /// key), so they came 16 times sooner.
    fn keys_another_holder_gives_behind(ahead: u32, party_every: u32) -> (Duration, usize) {
        let mut sim = Sim::new(4, &[(1, SILENT), (2, GIVES), (3, SAYS_NO)], four);
        let start = sim.start;
        for i in 0..ahead {
            if i % party_every == 0 {
                sim.keys.insert(id(0, i), party(1, ME, 3, start));
            } else {
                sim.keys
                    .insert(id(0, i), super::red_team_s8::grantee(1, 3, start));
            }
        }
        let movable = 4 * MAX_KEY_REQUEST_IDS as u32;
        for i in 0..movable {
            sim.keys.insert(id(1, i), party(1, 2, 3, start));
        }
        let took = sim.run(Duration::from_secs(600), false, |sim| {
            (0..movable).all(|i| !sim.keys.contains(&id(1, i)))
        });
        check_invariants(&sim.keys);
        (took, sim.max_lookups)
    }

    #[test]
    fn keys_another_holder_gives_are_held_back_by_unmovable_keys_ahead() {
        // 2 s to lag; what is parked by then is up to 8 pulls of 32,768 keys.
        let ahead = 8 * DUE_PER_PULL as u32 - 4 * MAX_KEY_REQUEST_IDS as u32;
        let (took, lookups) = keys_another_holder_gives_behind(ahead, 1);
        eprintln!(
            "{ahead} unmovable keys ahead: the home's 4,096 keys in {took:?}, at most {lookups} lookups a pull"
        );
        assert!(
            took <= Duration::from_secs(10),
            "{ahead} unmovable keys ahead held 4,096 keys the home gives at once back {took:?}"
        );
    }

    /// The same with no unmovable keys ahead: the home's keys come at once (the control).
    #[test]
    fn keys_another_holder_gives_come_at_once_with_nothing_ahead() {
        let (took, _) = keys_another_holder_gives_behind(0, 1);
        assert!(took <= Duration::from_secs(4), "{took:?}");
    }

    /// Grantee keys ahead are passed over without a lookup (red_team_s8b), 128 chunks a pull:
    /// but one party key with no other holder in a chunk of grantee keys (a read grant to this
    /// node's doctor is such a key: sealed by the patient's home, which is the grantee keys'
    /// holder too) makes the chunk one "that moved none", and the pull stops there. So the
    /// pass-over goes at one chunk a pull again, as slow as the unmovable case above.
    #[test]
    fn a_party_key_a_chunk_stops_the_grantee_pass_over() {
        let ahead = 8 * DUE_PER_PULL as u32 - 4 * MAX_KEY_REQUEST_IDS as u32;
        let (took, _) = keys_another_holder_gives_behind(ahead, MAX_KEY_REQUEST_IDS as u32);
        eprintln!(
            "{ahead} grantee keys ahead, a party key a chunk: the home's 4,096 keys in {took:?}"
        );
        assert!(took <= Duration::from_secs(10), "{took:?}");
    }

    /// The control: grantee keys only ahead are passed over at 128 chunks a pull.
    #[test]
    fn grantee_keys_alone_ahead_are_passed_over() {
        let ahead = 8 * DUE_PER_PULL as u32 - 4 * MAX_KEY_REQUEST_IDS as u32;
        let (took, _) = keys_another_holder_gives_behind(ahead, u32::MAX);
        eprintln!("{ahead} grantee keys ahead: the home's 4,096 keys in {took:?}");
        assert!(took <= Duration::from_secs(10), "{took:?}");
    }

    // ---------------------------------------------------------------------------------------
    // c5a3b3fc: a node that lost its store
    // ---------------------------------------------------------------------------------------

    /// Seven validators (f = 2), this node lost its store: the keys it sealed for its own
    /// patients are asked of every other validator in turn from tries 0, so the first one
    /// (1) gets them all first. Validators 1 and 2 are down (within f). 1 lags and is full;
    /// `route`'s skip looks one step on only, to 2, which lags and is full too: the key parks
    /// behind 1, and `move_off` can move none of them (its chunk moves none: it stops). They
    /// leave only through the down validators' own windows (4 x 1,024 ids per 5 s timeout
    /// each; a key asked of 1 then skips 2 for 3): about 1,600 keys a second, 11 minutes a
    /// million, where one down costs 7.5 s for 65,536. Before c5a3b3fc `holder_for` skipped lagging ones (and starved one down at
    /// start); with one down only, the skip reaches 2 and they come at once (the control).
    fn lost_store_keys_with_down(down: &[ReplicaId], count: u32) -> Duration {
        // Only the grantee 4 holds them (sealer, patient's home and doctor's home are all
        // this node); the other validators up say no.
        let mut holders: Vec<(ReplicaId, Holder)> = (1..7).map(|h| (h, SAYS_NO)).collect();
        holders[3].1 = GIVES;
        for (h, b) in &mut holders {
            if down.contains(h) {
                *b = SILENT;
            }
        }
        let mut sim = Sim::new(7, &holders, lost_store);
        let start = sim.start;
        for i in 0..count {
            sim.keys.insert(id(0, i), party(ME, ME, 3, start));
        }
        let took = sim.run(Duration::from_secs(60), false, |sim| sim.keys.len() == 0);
        check_invariants(&sim.keys);
        let mut asked: Vec<_> = sim.asked_of.iter().map(|(h, c)| (*h, *c)).collect();
        asked.sort();
        eprintln!(
            "{count} keys with {down:?} down: {took:?}, {} left, asked {asked:?}",
            sim.keys.len()
        );
        took
    }

    #[test]
    fn a_lost_store_with_one_validator_down_gets_its_keys_at_once() {
        let took = lost_store_keys_with_down(&[1], 2 * DUE_PER_PULL as u32);
        assert!(took <= Duration::from_secs(15), "{took:?}");
    }

    #[test]
    #[ignore = "red team, left: a lost store with two validators down in turn (within f of 7) gets 65,536 keys in 50 s (7.5 s with one down): the walk past lagging holders reaches the grantee, but most asks go to validators that say no; to do: prefer the holders that gave keys lately"]
    fn a_lost_store_with_two_validators_down_in_turn_gets_its_keys_at_one_windows_pace() {
        let took = lost_store_keys_with_down(&[1, 2], 2 * DUE_PER_PULL as u32);
        assert!(
            took <= Duration::from_secs(15),
            "65,536 keys, their grantee up, took {took:?}"
        );
    }

    /// The one holder (a grantee, 1) was down at start (so it lags, full, until it answers):
    /// it is still asked, in turn, and its keys come once it is up; by then their tries have
    /// grown and they are asked at 10 s each, every other validator in turn, so they come
    /// within (n - 1) x 10 s of it coming up, not at once.
    #[test]
    fn a_lost_store_gets_its_keys_from_a_grantee_that_was_down() {
        let grantee = Holder {
            up_at: Some(Duration::from_secs(60)),
            gives: everything,
        };
        let mut sim = Sim::new(4, &[(1, grantee), (2, SAYS_NO), (3, SAYS_NO)], four);
        let start = sim.start;
        for i in 0..4096 {
            sim.keys.insert(id(0, i), party(ME, ME, 3, start));
        }
        let took = sim.run(Duration::from_secs(120), true, |sim| sim.keys.len() == 0);
        eprintln!("a grantee up at 60 s: every key by {took:?}");
        assert_eq!(sim.keys.len(), 0);
        assert!(took <= Duration::from_secs(60 + 31), "{took:?}");
        // No holder hammered: each key asked of each holder once per 3 tries, at 10 s a try
        // at most once its tries reached 7.
        for (tx, asks) in &sim.asks {
            for holder in [1, 2, 3] {
                let times: Vec<Duration> = asks
                    .iter()
                    .filter(|(h, _)| *h == holder)
                    .map(|(_, at)| *at)
                    .collect();
                for pair in times.windows(2).skip(2) {
                    assert!(
                        pair[1] - pair[0] >= Duration::from_secs(20),
                        "{:?} asked of {holder} at {times:?}",
                        &tx[..5]
                    );
                }
            }
            assert!(
                asks.len() <= 7 + (took.as_secs() as usize) / 10 + 1,
                "{asks:?}"
            );
        }
    }
}

/// Refusals counted per holder, by whole rounds (issue 11; docs/SECURITY.md §5.3, "Keys held
/// nowhere"). The red team s10b's cases, which broke the backoff counted per key of 2e608bbb
/// (reverted), are here as what this design must pass: a key some holder can give arrives
/// within the usual pace of that holder being able to give it. Each tick, as the service does:
/// a pull, and each request answered at once by its holder (the key, `Fetching`, a refusal at
/// or past this node's height, or nothing while it is down).
#[cfg(test)]
mod refusals {
    use std::collections::{BTreeMap, BTreeSet};
    use std::convert::Infallible;
    use std::time::{Duration, Instant};

    use super::red_team_s8::{ME, TICK, check_invariants, grantee, holder_for_lagging, id, party};
    use super::*;

    /// Every holder §5.2 asks for `w`, four validators (the patient's home is its first byte).
    fn round_of(w: &Wanted) -> Vec<ReplicaId> {
        holders(w, ME, 4, Some(ReplicaId::from(w.patient[0])))
    }

    /// A holder: silent before `up_at`; then the key from `gives_from` (never if `None`), and
    /// before, `Fetching` if it `fetches` the key itself (a refusal, and an offer of the key
    /// once it holds it), else `NotHeld`.
    #[derive(Clone, Copy)]
    struct Holder {
        up_at: Duration,
        gives_from: Option<Duration>,
        fetches: bool,
    }

    const HOLDS_NOTHING: Holder = Holder {
        up_at: Duration::ZERO,
        gives_from: None,
        fetches: false,
    };

    /// When the key `w` is received asking `holders` from time 0 (`None`: not by `limit`), and
    /// how many times it was asked.
    fn received_at(
        w: Wanted,
        holders: &BTreeMap<ReplicaId, Holder>,
        limit: Duration,
    ) -> (Option<Duration>, usize) {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        let tx = id(1, 1);
        let round = round_of(&w);
        keys.insert(tx, w);
        let (mut t, mut asked) = (Duration::ZERO, 0);
        let mut told_fetching = BTreeSet::new();
        while t <= limit {
            let now = start + t;
            told_fetching.retain(|holder: &ReplicaId| {
                let gives = holders[holder].gives_from.is_some_and(|from| from <= t);
                if gives {
                    keys.offered(&tx, *holder, now);
                }
                !gives
            });
            let requests = keys
                .requests_with::<Infallible>(
                    now,
                    |_| 4,
                    |w| Ok(Some(holder_for_lagging(w, &|_| false))),
                )
                .unwrap();
            for (holder, txs) in requests {
                asked += txs.len();
                let h = holders[&holder];
                if t < h.up_at {
                    continue;
                }
                for tx in txs {
                    if h.gives_from.is_some_and(|from| from <= t) {
                        return (Some(t), asked);
                    }
                    let refusal = if h.fetches {
                        told_fetching.insert(holder);
                        Refusal::Fetching
                    } else {
                        Refusal::NotHeld
                    };
                    keys.refused(&tx, holder, &round, now, refusal);
                }
            }
            check_invariants(&keys);
            t += TICK;
        }
        (None, asked)
    }

    /// The holders of a case, given the outage.
    type HoldersAfter = fn(Duration) -> BTreeMap<ReplicaId, Holder>;

    /// Over outages from 30 s to 15 minutes, how long after `can_give` (given the outage) the
    /// key came at worst: (case, outage, late).
    fn worst_late(
        cases: &[(&'static str, Wanted, HoldersAfter)],
    ) -> Vec<(&'static str, Duration, Duration)> {
        let mut worst = Vec::new();
        for (case, wanted, holders) in cases {
            let mut late = (Duration::ZERO, Duration::ZERO);
            for down in (30..=900).step_by(15).map(Duration::from_secs) {
                let (at, _) = received_at(wanted.clone(), &holders(down), 3 * down);
                let l = at.map_or(Duration::MAX, |at| at - down);
                if l > late.1 {
                    late = (down, l);
                }
            }
            worst.push((*case, late.0, late.1));
        }
        worst
    }

    /// (s10b a) A grantee asks the home, which waits for the key from a sealer that is down;
    /// the home answers `Fetching`, a refusal, so the grantee's wait grows. The same for a
    /// doctor's home asking the down sealer and the home in turn. Once the home holds the key
    /// it offers it, and the key arrives at once (2e608bbb: up to 5 minutes later).
    #[test]
    fn a_home_still_fetching_a_key_holds_back_none_of_its_askers() {
        let now = Instant::now();
        let worst = worst_late(&[
            ("grantee", grantee(1, 1, now), |down| {
                let home = Holder {
                    up_at: Duration::ZERO,
                    gives_from: Some(down),
                    fetches: true,
                };
                BTreeMap::from([(1, home)])
            }),
            ("doctor's home", party(1, 2, 1, now), |down| {
                let sealer = Holder {
                    up_at: down,
                    gives_from: Some(down),
                    fetches: false,
                };
                let home = Holder {
                    up_at: Duration::ZERO,
                    gives_from: Some(down),
                    fetches: true,
                };
                BTreeMap::from([(1, sealer), (2, home)])
            }),
        ]);
        assert!(
            worst.iter().all(|(_, _, l)| *l <= BACKOFF_MAX + TICK),
            "received this long after a holder could give it (case, outage, late): {worst:?}"
        );
    }

    /// (s10b b, c) A validator that lost its store asks the others in turn; the one that holds
    /// the key restarts for a while, the others say `NotHeld`. And a dishonest sealer answers
    /// `NotHeld` to everything while the honest home restarts. The silent holder refuses
    /// nothing, so no round is whole: back up, it is asked within the usual pace (2e608bbb:
    /// up to 166 s late).
    #[test]
    fn refusals_while_the_holder_is_down_never_hold_it_back_once_up() {
        let now = Instant::now();
        let worst = worst_late(&[
            ("lost store", party(ME, ME, 1, now), |down| {
                let holder = Holder {
                    up_at: down,
                    gives_from: Some(Duration::ZERO),
                    fetches: false,
                };
                BTreeMap::from([(1, HOLDS_NOTHING), (2, HOLDS_NOTHING), (3, holder)])
            }),
            ("lying sealer", party(1, 2, 1, now), |down| {
                let home = Holder {
                    up_at: down,
                    gives_from: Some(Duration::ZERO),
                    fetches: false,
                };
                BTreeMap::from([(1, HOLDS_NOTHING), (2, home)])
            }),
        ]);
        assert!(
            worst.iter().all(|(_, _, l)| *l <= 3 * BACKOFF_MAX + TICK),
            "received this long after its holder was back (case, outage, late): {worst:?}"
        );
    }

    /// A key every holder refuses, round after round (held nowhere), is asked at 10 s for three
    /// rounds, then twice as late each round, every 5 minutes at most: over an hour, a few
    /// dozen asks where the 10 s pace made hundreds.
    #[test]
    fn a_key_held_nowhere_is_asked_later_and_later() {
        assert_eq!(refused_backoff(1), BACKOFF_MAX);
        assert_eq!(refused_backoff(ROUNDS_AT_MAX), BACKOFF_MAX);
        assert_eq!(refused_backoff(ROUNDS_AT_MAX + 1), 2 * BACKOFF_MAX);
        assert_eq!(refused_backoff(ROUNDS_AT_MAX + 3), 8 * BACKOFF_MAX);
        assert_eq!(refused_backoff(u32::MAX), REFUSED_BACKOFF_MAX);
        let hour = Duration::from_secs(3600);
        let now = Instant::now();
        for (case, wanted, holders) in [
            ("grantee", grantee(1, 1, now), vec![1]),
            ("party", party(1, 2, 1, now), vec![1, 2]),
            ("lost store", party(ME, ME, 1, now), vec![1, 2, 3]),
        ] {
            let round = holders.len();
            let holders = holders.into_iter().map(|h| (h, HOLDS_NOTHING)).collect();
            let (at, asked) = received_at(wanted, &holders, hour);
            assert_eq!(at, None);
            // Three rounds at 10 s, then 20 + 40 + 80 + 160 s, then every 300 s: about 20
            // rounds, where the 10 s pace made 360.
            assert!(
                (10 * round..=25 * round).contains(&asked),
                "{case}: asked {asked} times in an hour, {round} holders a round"
            );
        }
    }

    /// A round is whole only once each of its holders has refused: the same holder refusing
    /// again does not make it. A `told_to_wait` refusal waits 10 s whatever the round.
    #[test]
    fn one_holder_refusing_again_and_again_makes_no_round() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        let tx = id(1, 1);
        keys.insert(tx, party(1, 2, 1, start));
        for _ in 0..100 {
            keys.refused(&tx, 1, &[1, 2], start, Refusal::NotHeld);
        }
        assert_eq!(keys.get(&tx).unwrap().rounds, 0);
        keys.refused(&tx, 2, &[1, 2], start, Refusal::ToldToWait);
        assert_eq!(keys.get(&tx).unwrap().rounds, 1);
        assert!(keys.get(&tx).unwrap().talk().refused_by.is_empty());
        keys.refused(&tx, 2, &[1, 2], start, Refusal::ToldToWait);
        assert_eq!(keys.get(&tx).unwrap().rounds, 1, "a new round began");
        assert_eq!(keys.get(&tx).unwrap().next_try, start + BACKOFF_MAX);
        check_invariants(&keys);
    }

    /// A holder back after it lagged drops every grown wait back to 10 s at most (it may hold
    /// more now, from a backup), once per 5 minutes per holder.
    #[test]
    fn a_holder_back_drops_grown_waits_back() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        let (far, near) = (id(1, 1), id(1, 2));
        keys.insert(far, grantee(1, 1, start));
        keys.insert(near, grantee(1, 1, start));
        for _ in 0..20 {
            keys.refused(&far, 1, &[1], start, Refusal::NotHeld);
        }
        assert_eq!(
            keys.get(&far).unwrap().next_try,
            start + REFUSED_BACKOFF_MAX
        );
        let t = start + Duration::from_secs(1);
        keys.holder_back(1, t);
        assert_eq!(keys.get(&far).unwrap().rounds, 0);
        assert_eq!(keys.get(&far).unwrap().next_try, t + BACKOFF_MAX);
        assert_eq!(
            keys.get(&near).unwrap().next_try,
            start,
            "never refused: as it was"
        );
        check_invariants(&keys);
        for _ in 0..20 {
            keys.refused(&far, 1, &[1], t, Refusal::NotHeld);
        }
        keys.holder_back(1, t + REFUSED_BACKOFF_MAX - TICK);
        assert_eq!(
            keys.get(&far).unwrap().next_try,
            t + REFUSED_BACKOFF_MAX,
            "once per 5 min"
        );
        keys.holder_back(2, t + TICK);
        assert_eq!(
            keys.get(&far).unwrap().rounds,
            0,
            "another holder's own 5 minutes"
        );
    }

    /// (s10b d) `refused` on a key parked behind a full holder takes it out of the parking and
    /// schedules it, every invariant kept; on a key no longer wanted it does nothing; the
    /// rounds saturate and the wait stays 5 minutes.
    #[test]
    fn refused_on_parked_removed_and_saturated_keys_keeps_the_invariants() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        let (a, b) = (id(1, 1), id(1, 2));
        keys.insert(a, party(1, 2, 1, start));
        keys.insert(b, party(1, 2, 1, start));
        let asked = keys
            .requests_with::<Infallible>(start, |_| 0, |w| Ok(Some(w.source)))
            .unwrap();
        assert!(asked.is_empty());
        assert!(keys.get(&a).unwrap().parked.is_some());
        keys.refused(&a, 1, &[1, 2], start, Refusal::ToldToWait);
        check_invariants(&keys);
        assert!(keys.get(&a).unwrap().parked.is_none());
        keys.remove(&b);
        keys.refused(&b, 1, &[1], start, Refusal::ToldToWait);
        check_invariants(&keys);
        keys.keys.get_mut(&a).unwrap().rounds = u32::MAX - 1;
        for _ in 0..3 {
            keys.refused(&a, 1, &[1], start, Refusal::NotHeld);
        }
        assert_eq!(keys.get(&a).unwrap().rounds, u32::MAX);
        assert_eq!(keys.get(&a).unwrap().next_try, start + REFUSED_BACKOFF_MAX);
        check_invariants(&keys);
        let ask = |keys: &mut WantedKeys, now| {
            keys.requests_with::<Infallible>(now, |_| 4, |w| Ok(Some(w.source)))
                .unwrap()
        };
        assert!(ask(&mut keys, start + REFUSED_BACKOFF_MAX - TICK).is_empty());
        assert_eq!(ask(&mut keys, start + REFUSED_BACKOFF_MAX), [(1, vec![a])]);
    }
}

/// Red team s11, against the refusals counted per holder by whole rounds (bea9ecda; docs/
/// SECURITY.md §5.3, "Keys held nowhere"). A simulator closer to the service than `refusals`'s:
/// `n` validators, `exchange::holder_for` and `holders_of` as they are (the patient's home is
/// its first byte), at most [`OPEN_PER_HOLDER`] requests open per holder, forgotten after
/// [`TIMEOUT`], and a holder lagging once a request to it has been unanswered for
/// [`LAGGING_AFTER`] (`Exchange::lagging`), heard from again through `holder_back` as
/// `Service::on_answer` does. Each tick: a pull, and each request answered at once (or never,
/// by a silent holder).
#[cfg(test)]
mod red_team_s11 {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::red_team_s8::{
        ME, OPEN_PER_HOLDER, TICK, TIMEOUT, check_invariants, grantee, id, party,
    };
    use super::*;

    /// [`super::holders`] for `n` validators (the patient's home is its first byte).
    fn holders_of(w: &Wanted, n: usize) -> Vec<ReplicaId> {
        super::holders(w, ME, n, Some(ReplicaId::from(w.patient[0])))
    }

    /// [`super::holder_for`] for `n` validators.
    fn holder_for(w: &Wanted, n: usize, lagging: &dyn Fn(ReplicaId) -> bool) -> Option<ReplicaId> {
        super::holder_for(w, ME, n, Some(ReplicaId::from(w.patient[0])), lagging)
    }

    /// What a holder answers (at a height at or past the asker's, `u64::MAX` for a dishonest
    /// one: every answer without a key is a refusal).
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Says {
        Silent,
        Key,
        Fetching,
        NotHeld,
        NotEntitled,
    }

    /// The exchange's side of the simulated asker: open requests and unanswered holders.
    struct Net {
        n: usize,
        now: Instant,
        open: Vec<(ReplicaId, Instant)>,
        unanswered_since: Vec<Option<Instant>>,
    }

    impl Net {
        fn lagging(&self, holder: ReplicaId) -> bool {
            self.unanswered_since[holder as usize]
                .is_some_and(|since| self.now.saturating_duration_since(since) >= LAGGING_AFTER)
        }
    }

    impl Holders for Net {
        type Error = std::convert::Infallible;

        fn count(&self) -> usize {
            self.n
        }

        fn room(&mut self, holder: ReplicaId) -> usize {
            let open = self.open.iter().filter(|(h, _)| *h == holder).count();
            OPEN_PER_HOLDER.saturating_sub(open)
        }

        fn lagging(&self, holder: ReplicaId) -> bool {
            Net::lagging(self, holder)
        }

        fn holder_for(
            &mut self,
            wanted: &Wanted,
            lagging: &dyn Fn(ReplicaId) -> bool,
        ) -> Result<Option<ReplicaId>, Self::Error> {
            Ok(holder_for(wanted, self.n, lagging))
        }
    }

    /// One run: when the key came (`None`: not by the limit), and how many times it was asked
    /// of each holder.
    struct Run {
        received: Option<Duration>,
        asked: BTreeMap<ReplicaId, usize>,
    }

    impl Run {
        fn asked(&self) -> usize {
            self.asked.values().sum()
        }
    }

    /// Asks for `w` among `n` validators from time 0 until `limit`, each holder answering
    /// `says(holder, t)`; `backs(t)` are the holders heard from again after a lag at `t` that
    /// the asker's other traffic saw (a backlog: `holder_back`, as `on_answer` calls it).
    fn run(
        n: usize,
        w: Wanted,
        says: &dyn Fn(ReplicaId, Duration) -> Says,
        backs: &dyn Fn(Duration) -> Vec<ReplicaId>,
        limit: Duration,
    ) -> Run {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        let tx = id(1, 1);
        let round = holders_of(&w, n);
        let told = w.source != ME;
        keys.insert(tx, w);
        let mut net = Net {
            n,
            now: start,
            open: Vec::new(),
            unanswered_since: vec![None; n],
        };
        let mut asked = BTreeMap::new();
        let mut t = Duration::ZERO;
        while t <= limit {
            let now = start + t;
            net.now = now;
            net.open
                .retain(|(_, sent)| now.saturating_duration_since(*sent) < TIMEOUT);
            for holder in backs(t) {
                keys.holder_back(holder, now);
            }
            let requests = keys.requests(now, &mut net).unwrap();
            for (holder, txs) in requests {
                *asked.entry(holder).or_default() += txs.len();
                net.open.push((holder, now));
                net.unanswered_since[holder as usize].get_or_insert(now);
                let says = says(holder, t);
                if says == Says::Silent {
                    continue;
                }
                let was_lagging = net.lagging(holder);
                if let Some(at) = net.open.iter().position(|o| *o == (holder, now)) {
                    net.open.remove(at);
                }
                net.unanswered_since[holder as usize] = net
                    .open
                    .iter()
                    .filter(|(h, _)| *h == holder)
                    .map(|(_, sent)| *sent)
                    .min();
                if was_lagging {
                    keys.holder_back(holder, now);
                }
                for tx in txs {
                    match says {
                        Says::Key => {
                            return Run {
                                received: Some(t),
                                asked,
                            };
                        }
                        Says::NotHeld => keys.refused(&tx, holder, &round, now, Refusal::NotHeld),
                        Says::NotEntitled => keys.refused(
                            &tx,
                            holder,
                            &round,
                            now,
                            if told {
                                Refusal::ToldToWait
                            } else {
                                Refusal::NotHeld
                            },
                        ),
                        // A refusal (and an offer once it holds it: these hold nothing).
                        Says::Fetching => keys.refused(&tx, holder, &round, now, Refusal::Fetching),
                        Says::Silent => {}
                    }
                }
            }
            check_invariants(&keys);
            t += TICK;
        }
        Run {
            received: None,
            asked,
        }
    }

    /// What each holder answers, at each time.
    type Answers = fn(ReplicaId, Duration) -> Says;

    fn no_backs(_: Duration) -> Vec<ReplicaId> {
        Vec::new()
    }

    const HOUR: Duration = Duration::from_secs(3600);

    /// BREAK, fixed: `Fetching` is now a refusal, and the holder offers the key once it holds
    /// it (`KeyFrame::Offer`), so the parties of a key held nowhere back off together.
    /// A key lost at its sealer S is wanted by S itself (it lost its store: source =
    /// itself, §5.6) and by every other party (the patient's home H, a doctor's home) and live
    /// grantee. Each of them that is asked answers `Fetching` (it wants the key too), which is
    /// no refusal, so no round is ever whole: every party asks it every 10 s for ever, the
    /// cost this commit was to remove. Only a key whose round has no party but the asker (a
    /// validator's own seal of its own patient, its own doctor, no grant) backs off. On
    /// net10m that is 13,712 records (and their grants) of the hospital's 199,158 wanted keys:
    /// the other 86 % were lost at another sealer, which wants them too (BENCHMARKS.md, "the
    /// chain of 10,000,000 once swept").
    ///
    /// Measured: 365 asks an hour in each case, as before the commit (the bound, as
    /// `refusals::a_key_held_nowhere_is_asked_later_and_later`'s: 25 a holder of the round).
    /// Fix: a `Fetching` holder is no proof the key exists. Count `Fetching` as a refusal when
    /// the answerer's own wait for it has grown (it answers `NotHeld` once its own rounds
    /// reach [`ROUNDS_AT_MAX`], so a cycle of askers backs off as soon as the first does), or
    /// carry in `Fetching` the holders it waits on, a refusal when they are all the asker or
    /// holders that refused it; and a holder that receives a key it answered `Fetching` for
    /// lets its askers know (their wait dropped back for that key).
    #[test]
    fn keys_held_nowhere_that_their_other_parties_want_too_are_asked_every_10_s_for_ever() {
        let now = Instant::now();
        let cases: [(&str, Wanted, Answers); 4] = [
            // This node sealed it and lost it; the patient's home (1) wants it from here.
            ("sealer, lost store", party(ME, 1, 1, now), |h, _| {
                if h == 1 {
                    Says::Fetching
                } else {
                    Says::NotHeld
                }
            }),
            // This node is the home; the sealer (1) lost it and wants it itself.
            ("patient's home", party(1, ME, 1, now), |_, _| {
                Says::Fetching
            }),
            // A grantee; the home (1) waits for it from the sealer, which lost it.
            ("grantee", grantee(1, 1, now), |_, _| Says::Fetching),
            // A doctor's home; the sealer (1) lost it, the home (2) wants it.
            ("doctor's home", party(1, 2, 1, now), |_, _| Says::Fetching),
        ];
        let mut measured = Vec::new();
        for (case, wanted, says) in cases {
            let round = holders_of(&wanted, 4).len();
            let run = run(4, wanted, &says, &no_backs, HOUR);
            assert_eq!(run.received, None);
            measured.push((case, run.asked(), 25 * round));
        }
        assert!(
            measured.iter().all(|(_, asked, bound)| asked <= bound),
            "asks in an hour of a key held nowhere (case, asked, bound): {measured:?}"
        );
    }

    /// BREAK, fixed: a sealer that lost its store now asks the home, then every other
    /// validator, in turn ([`super::holders`]). A validator
    /// that sealed a record and lost its store (§5.6) asks the others in turn for its first
    /// three tries only (those are its own holders: none), then the patient's home alone for
    /// good. A grantee or a doctor's home that still holds the key is never asked again, so
    /// that if the home cannot give it (one dishonest home answering `NotHeld`, or an honest
    /// home that lost its store too and answers `Fetching`) the key never comes, although an
    /// honest validator holds it and would give it to this party. With 4 validators: the
    /// holder restarting (silent) at the one moment it was asked; with 7 or 10: a holder past
    /// the third in turn, never asked at all. Measured: not received in an hour in each of the
    /// six cases (4, 7, 10 validators; the home `NotHeld` or `Fetching`); the holder asked
    /// once (4: while it was down) or never (7, 10).
    /// Fix: when the sealer is this node, `holders_of` is the home then every other validator
    /// (the home first, as §5.2 prefers it), in turn by tries, the round being all of them;
    /// the refusals' backoff keeps the cost of a key held nowhere low.
    #[test]
    fn a_sealer_that_lost_its_store_never_asks_again_the_grantee_that_holds_its_key() {
        let now = Instant::now();
        let mut missed = Vec::new();
        for (n, holder, holder_down) in [(4, 3, Duration::from_secs(30)), (7, 5, Duration::ZERO)]
            .into_iter()
            .chain([(10, 8, Duration::ZERO)])
        {
            for home_says in [Says::NotHeld, Says::Fetching] {
                let says = move |h: ReplicaId, t: Duration| match h {
                    _ if h == holder && t < holder_down => Says::Silent,
                    _ if h == holder => Says::Key,
                    1 => home_says,
                    _ => Says::NotHeld,
                };
                let run = run(n, party(ME, 1, 1, now), &says, &no_backs, HOUR);
                if run.received.is_none() {
                    missed.push((n, home_says, run.asked.get(&holder).copied()));
                }
            }
        }
        assert!(
            missed.is_empty(),
            "never received (validators, the home's answer, times the holder was asked): \
             {missed:?}"
        );
    }

    /// HELD. A validator that lost its store asks, for its own seal of its own patient, every
    /// other validator in turn, the round being all of them. One dishonest validator answers
    /// `NotHeld` at `u64::MAX` for everything, the honest non-holders `NotHeld`, and the one
    /// honest holder is down for a while (silent: it refuses nothing). With 4, 7 and 10
    /// validators the key comes within the round's pace once the holder is back ((n - 1) tries
    /// of 10 s, as before this commit: in turn, each holder is asked every (n - 1) tries).
    /// Measured, worst over outages of 30 s to 15 minutes: 20.75 s (4), 50.75 s (7 and 10).
    /// The liar answers `NotEntitled` (a lost store's key: not told to wait).
    #[test]
    fn a_lost_store_gets_its_key_at_the_pace_of_its_round_whatever_one_liar_says() {
        let now = Instant::now();
        for n in [4, 7, 10] {
            let holder = n as ReplicaId - 1;
            let mut worst = Duration::ZERO;
            for down in (30..=900).step_by(45).map(Duration::from_secs) {
                let says = move |h: ReplicaId, t: Duration| match h {
                    _ if h == holder && t < down => Says::Silent,
                    _ if h == holder => Says::Key,
                    1 => Says::NotEntitled,
                    _ => Says::NotHeld,
                };
                let run = run(n, party(ME, ME, 1, now), &says, &no_backs, 3 * down);
                let late = run.received.map_or(Duration::MAX, |at| at - down);
                worst = worst.max(late);
            }
            let pace = BACKOFF_MAX * (n as u32 - 1) + BACKOFF_MAX;
            assert!(
                worst <= pace,
                "{n} validators: received {worst:?} after the holder was back (pace {pace:?})"
            );
        }
    }

    /// HELD. One dishonest validator of a round goes silent for a moment every 5 minutes and
    /// answers again (as seen by the asker's other traffic: `holder_back`), so as to drop the
    /// grown waits of every key held nowhere back to 10 s again and again: the key is then
    /// asked more than with no lag, but no more than at the 10 s pace of before this commit.
    /// Measured (4 validators, a lost store's own seal held nowhere, an hour): 238 asks with
    /// the liar's lags every 5 minutes, 51 without, 360 before this commit (the bound): the
    /// liar takes back two thirds of the saving, as §5.3 allows ("within its allowance").
    #[test]
    fn a_holder_lagging_on_and_off_costs_no_more_than_the_10_s_pace() {
        let now = Instant::now();
        let says = |_: ReplicaId, _: Duration| Says::NotHeld;
        let quiet = run(4, party(ME, ME, 1, now), &says, &no_backs, HOUR);
        let every_5_min = |t: Duration| {
            if t.as_millis() % 300_000 == 125_000 {
                vec![1]
            } else {
                Vec::new()
            }
        };
        let lagging = run(4, party(ME, ME, 1, now), &says, &every_5_min, HOUR);
        // Before this commit: asked every 10 s, 360 times an hour.
        let before = (HOUR.as_secs() / BACKOFF_MAX.as_secs()) as usize;
        assert!(
            quiet.asked() < lagging.asked() && lagging.asked() <= before,
            "asked {} times an hour with a holder lagging every 5 minutes, {} without, {} before",
            lagging.asked(),
            quiet.asked(),
            before
        );
    }

    /// HELD. `refused` (from any holder, in the round or not, told to wait or not, on keys
    /// parked, due or gone) and `holder_back` (any holder, any time) mixed with inserts,
    /// removes and pulls keep every invariant of `WantedKeys`, never ask a key sooner than
    /// its schedule allowed, and never leave a wait beyond [`REFUSED_BACKOFF_MAX`].
    #[test]
    fn refusals_and_holders_back_in_any_order_keep_every_invariant() {
        let mut rng = StdRng::seed_from_u64(11);
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        let mut t = Duration::ZERO;
        for step in 0..20_000u32 {
            let now = start + t;
            let tx = id(1, rng.gen_range(0..64));
            match rng.gen_range(0..10) {
                0 => {
                    let home = rng.gen_range(0..4);
                    let w = if rng.gen_bool(0.3) {
                        grantee(home.max(1), u64::from(step % 7), now)
                    } else {
                        party(rng.gen_range(0..4), home, u64::from(step % 7), now)
                    };
                    keys.insert(tx, w);
                }
                1 => {
                    keys.remove(&tx);
                }
                2..=5 => {
                    let before = keys.get(&tx).map(|w| w.next_try);
                    let round: Vec<ReplicaId> = (1..4).filter(|_| rng.gen_bool(0.6)).collect();
                    let refusal = [Refusal::NotHeld, Refusal::ToldToWait, Refusal::Fetching]
                        [rng.gen_range(0..3)];
                    keys.refused(&tx, rng.gen_range(0..4), &round, now, refusal);
                    if let (Some(before), Some(w)) = (before, keys.get(&tx))
                        && w.parked.is_none()
                    {
                        assert!(
                            w.next_try >= before.min(now + BACKOFF_MAX),
                            "a refusal never asks a key sooner"
                        );
                        assert!(w.next_try <= now.max(before) + REFUSED_BACKOFF_MAX);
                    }
                }
                6 => keys.holder_back(rng.gen_range(0..4), now),
                _ => {
                    let room = rng.gen_range(0..3);
                    keys.requests_with::<std::convert::Infallible>(
                        now,
                        |_| room,
                        |w| Ok(Some(holder_for(w, 4, &|_| false).unwrap_or(1))),
                    )
                    .unwrap();
                }
            }
            check_invariants(&keys);
            for w in keys.keys.values() {
                assert!(
                    w.next_try <= now + REFUSED_BACKOFF_MAX,
                    "a wait past 5 minutes"
                );
            }
            t += Duration::from_millis(rng.gen_range(0..2_000));
        }
    }
}

/// Red team s11b, against `Fetching` as a refusal and `KeyFrame::Offer` (247b719e; docs/
/// SECURITY.md §5.3, "Keys held nowhere"). A simulator of the whole cluster, one
/// `WantedKeys` per validator, every one of them asking for the same key as the service does
/// (`wanted::holder_for`, at most [`OPEN_PER_HOLDER`] requests open per holder, forgotten
/// after [`TIMEOUT`], `holder_back` when a lagging holder answers again), and answering as
/// `Service::on_request` does: the key if held, `Fetching` (the asker recorded,
/// `told_fetching`) if wanted, else `NotHeld`; a validator that receives the key offers it to
/// its askers (`Service::receive`), at once. A validator that restarts comes back with a new
/// `WantedKeys` (askers and rounds are in memory only), wanting the key again unless it holds
/// it (it may come back holding it: a backup restored, §5.6). One tick is one pull (the
/// service's 250 ms timer).
#[cfg(test)]
mod red_team_s11b {
    use std::time::{Duration, Instant};

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::red_team_s8::{
        OPEN_PER_HOLDER, TICK, TIMEOUT, check_invariants, grantee, id, party,
    };
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    pub(super) fn home_of(w: &Wanted) -> ReplicaId {
        ReplicaId::from(w.patient[0])
    }

    /// One validator as the simulator sees it.
    struct Node {
        keys: WantedKeys,
        /// What it wants while it does not hold the key (`None`: no party, no grantee).
        wants: Option<Wanted>,
        holds: bool,
        up: bool,
        open: Vec<(ReplicaId, Instant)>,
        unanswered_since: Vec<Option<Instant>>,
        /// Ids it asked, per holder.
        asked: Vec<usize>,
        received: Option<Duration>,
    }

    impl Node {
        fn asked(&self) -> usize {
            self.asked.iter().sum()
        }
    }

    /// The exchange's side of one validator for a pull (red team s12's driver too).
    pub(super) struct View<'a> {
        pub me: ReplicaId,
        pub n: usize,
        pub now: Instant,
        pub open: &'a [(ReplicaId, Instant)],
        pub unanswered_since: &'a [Option<Instant>],
    }

    pub(super) fn lags(
        unanswered_since: &[Option<Instant>],
        holder: ReplicaId,
        now: Instant,
    ) -> bool {
        unanswered_since[holder as usize]
            .is_some_and(|since| now.saturating_duration_since(since) >= LAGGING_AFTER)
    }

    impl Holders for View<'_> {
        type Error = std::convert::Infallible;

        fn count(&self) -> usize {
            self.n
        }

        fn room(&mut self, holder: ReplicaId) -> usize {
            let open = self.open.iter().filter(|(h, _)| *h == holder).count();
            OPEN_PER_HOLDER.saturating_sub(open)
        }

        fn lagging(&self, holder: ReplicaId) -> bool {
            lags(self.unanswered_since, holder, self.now)
        }

        fn holder_for(
            &mut self,
            wanted: &Wanted,
            lagging: &dyn Fn(ReplicaId) -> bool,
        ) -> Result<Option<ReplicaId>, Self::Error> {
            Ok(super::holder_for(
                wanted,
                self.me,
                self.n,
                Some(home_of(wanted)),
                lagging,
            ))
        }
    }

    /// What a validator answers `asker` at `t`.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Says {
        /// As the service does (silent while down).
        Honest,
        /// The key (a dishonest holder choosing whom to give it to).
        Key,
        NotHeld,
        Fetching,
    }

    /// A scenario: `n` validators, each wanting the key (`wants`) or holding it (`holds`).
    struct Cluster<'a> {
        n: usize,
        wants: Vec<Option<Wanted>>,
        holds: Vec<bool>,
        /// Whether validator `k` is down at `t` (back up, it has restarted).
        down: &'a dyn Fn(ReplicaId, Duration) -> bool,
        /// Whether validator `k`, back up at `t`, holds the key (a backup restored).
        restored: &'a dyn Fn(ReplicaId, Duration) -> bool,
        /// What holder `h` answers asker `a` at `t`.
        says: &'a dyn Fn(ReplicaId, ReplicaId, Duration) -> Says,
        /// Validators that `k` offers the key to at `t` beyond its askers (a dishonest one).
        offers: &'a dyn Fn(ReplicaId, Duration) -> Vec<ReplicaId>,
    }

    fn never(_: ReplicaId, _: Duration) -> bool {
        false
    }

    fn honest(_: ReplicaId, _: ReplicaId, _: Duration) -> Says {
        Says::Honest
    }

    fn no_offers(_: ReplicaId, _: Duration) -> Vec<ReplicaId> {
        Vec::new()
    }

    impl Cluster<'_> {
        /// Runs until `limit` or until `done`: the validators as they ended.
        fn run(&self, limit: Duration, done: &dyn Fn(&[Node]) -> bool) -> Vec<Node> {
            let start = Instant::now();
            let tx = id(1, 1);
            let n = self.n;
            let mut nodes: Vec<Node> = (0..n)
                .map(|k| {
                    let mut keys = WantedKeys::default();
                    if let Some(w) = &self.wants[k]
                        && !self.holds[k]
                    {
                        keys.insert(tx, w.clone());
                    }
                    Node {
                        keys,
                        wants: self.wants[k].clone(),
                        holds: self.holds[k],
                        up: true,
                        open: Vec::new(),
                        unanswered_since: vec![None; n],
                        asked: vec![0; n],
                        received: None,
                    }
                })
                .collect();
            let mut t = Duration::ZERO;
            while t <= limit && !done(&nodes) {
                let now = start + t;
                let mut restarted = Vec::new();
                for (k, node) in nodes.iter_mut().enumerate() {
                    let down = (self.down)(k as ReplicaId, t);
                    if down {
                        node.up = false;
                    } else if !node.up {
                        // A restart: what was in memory is gone.
                        restarted.push(k as ReplicaId);
                        node.up = true;
                        node.holds |= (self.restored)(k as ReplicaId, t);
                        node.keys = WantedKeys::default();
                        if let Some(w) = &node.wants
                            && !node.holds
                        {
                            let mut w = w.clone();
                            w.next_try = now;
                            node.keys.insert(tx, w);
                        }
                        node.open.clear();
                        node.unanswered_since = vec![None; n];
                    }
                }
                // Its empty offer says so to every validator up (`Service::greet`).
                for r in restarted {
                    for node in nodes.iter_mut().filter(|node| node.up) {
                        node.keys.holder_back(r, now);
                    }
                }
                let mut offers: Vec<(ReplicaId, ReplicaId)> = Vec::new();
                for (k, node) in nodes.iter().enumerate() {
                    if node.up {
                        for to in (self.offers)(k as ReplicaId, t) {
                            offers.push((to, k as ReplicaId));
                        }
                    }
                }
                for k in 0..n {
                    deliver(&mut nodes, &mut offers, &tx, now);
                    let me = k as ReplicaId;
                    if !nodes[k].up || !nodes[k].keys.contains(&tx) {
                        continue;
                    }
                    let requests = {
                        let Node {
                            keys,
                            open,
                            unanswered_since,
                            ..
                        } = &mut nodes[k];
                        open.retain(|(_, sent)| now.saturating_duration_since(*sent) < TIMEOUT);
                        let mut view = View {
                            me,
                            n,
                            now,
                            open,
                            unanswered_since,
                        };
                        keys.requests(now, &mut view).unwrap()
                    };
                    for (holder, txs) in requests {
                        let h = holder as usize;
                        nodes[k].asked[h] += txs.len();
                        nodes[k].open.push((holder, now));
                        nodes[k].unanswered_since[h].get_or_insert(now);
                        if !nodes[h].up {
                            continue;
                        }
                        let says = match (self.says)(holder, me, t) {
                            Says::Honest if nodes[h].holds => Says::Key,
                            Says::Honest if nodes[h].keys.contains(&tx) => {
                                nodes[h].keys.told_fetching(&tx, me);
                                Says::Fetching
                            }
                            Says::Honest => Says::NotHeld,
                            says => says,
                        };
                        let node = &mut nodes[k];
                        let was_lagging = lags(&node.unanswered_since, holder, now);
                        if let Some(at) = node.open.iter().position(|o| *o == (holder, now)) {
                            node.open.remove(at);
                        }
                        node.unanswered_since[h] = node
                            .open
                            .iter()
                            .filter(|(o, _)| *o == holder)
                            .map(|(_, sent)| *sent)
                            .min();
                        if was_lagging {
                            node.keys.holder_back(holder, now);
                        }
                        if says == Says::Key {
                            node.holds = true;
                            node.received = Some(t);
                            if let Some(w) = node.keys.remove(&tx) {
                                offers.extend(w.talk().askers.iter().map(|a| (*a, me)));
                            }
                            break;
                        }
                        let Some(w) = node.keys.get(&tx) else {
                            break;
                        };
                        let round = super::holders(w, me, n, Some(home_of(w)));
                        let refusal = match says {
                            Says::Fetching => Refusal::Fetching,
                            _ => Refusal::NotHeld,
                        };
                        node.keys.refused(&tx, holder, &round, now, refusal);
                    }
                    check_invariants(&nodes[k].keys);
                }
                deliver(&mut nodes, &mut offers, &tx, now);
                t += TICK;
            }
            nodes
        }
    }

    /// Offers delivered at once to the validators up.
    fn deliver(
        nodes: &mut [Node],
        offers: &mut Vec<(ReplicaId, ReplicaId)>,
        tx: &TxId,
        now: Instant,
    ) {
        for (to, from) in offers.drain(..) {
            let node = &mut nodes[to as usize];
            if node.up {
                node.keys.offered(tx, from, now);
            }
        }
    }

    /// The four roles of a record: its sealer `s`, the patient's home `h`, a doctor's home,
    /// and grantees of `h` (every one wanting the key unless told to hold it).
    fn parties(n: usize, s: ReplicaId, h: ReplicaId, doctor: ReplicaId) -> Vec<Option<Wanted>> {
        let now = Instant::now();
        (0..n as ReplicaId)
            .map(|k| {
                if k == s || k == h || k == doctor {
                    Some(party(s, h, 1, now))
                } else if k < 7 {
                    Some(grantee(h, 1, now))
                } else {
                    // No party (validators 7.. of 10).
                    None
                }
            })
            .collect()
    }

    // -------------------------------------------------------------------------------------
    // Breaks
    // -------------------------------------------------------------------------------------

    /// BREAK, fixed: a restarted holder greets each peer with an empty offer before its first
    /// frame (`Exchange::send`), and they drop their grown waits (`holder_back`; the
    /// simulator delivers it at the restart). A holder that told an asker `Fetching` and restarts forgets the asker
    /// (`Wanted::askers` is in memory only), so when it gets the key it offers it to nobody,
    /// and an asker whose wait had grown waits it out: up to 5 minutes after an honest
    /// holder could give it. No dishonest validator needed.
    /// (a) A grantee (3) asks the patient's home (1), which waits for the key from the sealer
    ///     (2), down for maintenance: `Fetching`, round after round, the grantee's wait grows
    ///     to 5 minutes. The home restarts for 5 s a minute before the sealer is back (the
    ///     grantee does not ask it while it is down: no lag seen, no `holder_back`). The home
    ///     has the key within 10 s of the sealer's return; the grantee, much later.
    /// (b) The sealer (2) lost its store (§5.6): it, the home (1) and a grantee (3) all want
    ///     the key, `Fetching` every way, and back off together (as designed). The sealer then
    ///     restores a backup that holds the key (a restart of 20 s): it asked nobody to offer
    ///     to, the home and the grantee wait out their grown waits.
    /// Measured, worst over sealer outages of 10 to 30 minutes (30 s steps): (a) 210 s,
    /// (b) 270 s after the key could be given (without a restart the offers bring it within
    /// 7.25 s: `a_key_got_by_one_party_of_a_cycle_reaches_every_party_by_offers`).
    /// Fix: make an asker's wait on a `Fetching` holder survive the holder's restart: the
    /// holder keeps its askers in `keys.db` (a row per wanted key asked, dropped with it), or
    /// an asker caps the wait of a key refused with `Fetching` by any holder at the 10 s pace
    /// for [`ROUNDS_AT_MAX`] rounds only while that holder says it is fetching it (the cycle
    /// of §5.3 backs off all the same), or peers learn of a restart (a new session of the
    /// transport, or a boot counter in `Wire::Status`) and call `holder_back` for it.
    #[test]
    fn a_holder_that_restarts_forgets_its_askers_and_they_wait_5_minutes() {
        let now = Instant::now();
        let mut worst = Vec::new();
        for restored_case in [false, true] {
            let mut late = Duration::ZERO;
            for outage in (600..=1800).step_by(30).map(Duration::from_secs) {
                let (wants, holds) = if restored_case {
                    let wants = vec![
                        None,
                        Some(party(2, 1, 1, now)),
                        Some(party(2, 1, 1, now)),
                        Some(grantee(1, 1, now)),
                    ];
                    (wants, vec![false; 4])
                } else {
                    let wants = vec![
                        None,
                        Some(party(2, 1, 1, now)),
                        None,
                        Some(grantee(1, 1, now)),
                    ];
                    (wants, vec![false, false, true, false])
                };
                let down = move |k: ReplicaId, t: Duration| {
                    if restored_case {
                        k == 2 && t + Duration::from_secs(20) >= outage && t < outage
                    } else {
                        (k == 2 && t < outage)
                            || (k == 1 && t + MINUTE >= outage && t + MINUTE < outage + 5 * S)
                    }
                };
                let restored = move |k: ReplicaId, _: Duration| restored_case && k == 2;
                let cluster = Cluster {
                    n: 4,
                    wants,
                    holds,
                    down: &down,
                    restored: &restored,
                    says: &honest,
                    offers: &no_offers,
                };
                let nodes = cluster.run(outage + 2 * REFUSED_BACKOFF_MAX, &|nodes| {
                    nodes[3].received.is_some()
                });
                let at = nodes[3].received.map_or(Duration::MAX, |at| at - outage);
                late = late.max(at);
            }
            worst.push((if restored_case { "b" } else { "a" }, late));
        }
        assert!(
            worst.iter().all(|(_, late)| *late <= 2 * BACKOFF_MAX),
            "the grantee's key came this long after the sealer could give it (case, late): \
             {worst:?}"
        );
    }

    const S: Duration = Duration::from_secs(1);

    /// BREAK, fixed: an offer is taken only from a holder that answered `Fetching` for the
    /// key, once per answer, and leaves the rounds alone. Any peer's `Offer` reset a wanted key's rounds and made it due at once
    /// (`WantedKeys::offered`, from `Service::on_offer`, which checks neither that the peer
    /// answered `Fetching` for it nor how often it offers). A dishonest validator learns the
    /// ids held nowhere from the requests it gets (a validator that lost its store asks every
    /// validator in turn), and offers them to every validator at every tick: each key held
    /// nowhere is asked at every pull, of the honest holders in turn, for ever.
    /// Four validators; 0 lost its store (its own seal of its own patient: held nowhere); 3 is
    /// the liar (answers `NotHeld` and offers the key every 250 ms).
    /// Measured: 0 asks the key 14,401 times in an hour (9,601 of them of the honest
    /// validators), where it asked 51 without the offers and 360 at the 10 s pace of before
    /// the work (the bound: the asker's allowance of 4,096 ids a second per holder is no
    /// bound on a key's pace). With an offer every 10 s: 365 asks, the 10 s pace of before
    /// (the refusals' backoff never grows: the work undone for any key the liar names).
    /// Fix: take an offer only from a holder that answered `Fetching` for that key since it
    /// was last asked (remember it in `Wanted`, consumed by the offer), ask that holder (not
    /// the next in turn), and leave `rounds` as they were until a key comes: a holder that
    /// offers and then refuses is not taken at its word again for that key.
    #[test]
    fn a_liar_offering_keys_held_nowhere_makes_them_asked_at_every_pull() {
        let now = Instant::now();
        let mut wants = vec![None; 4];
        wants[0] = Some(party(0, 0, 1, now));
        let says = |h: ReplicaId, _: ReplicaId, _: Duration| {
            if h == 3 { Says::NotHeld } else { Says::Honest }
        };
        let mut measured = Vec::new();
        for every in [None, Some(TICK), Some(BACKOFF_MAX)] {
            let offers = move |k: ReplicaId, t: Duration| match every {
                Some(every) if k == 3 && t.as_millis().is_multiple_of(every.as_millis()) => vec![0],
                _ => Vec::new(),
            };
            let cluster = Cluster {
                n: 4,
                wants: wants.clone(),
                holds: vec![false; 4],
                down: &never,
                restored: &never,
                says: &says,
                offers: &offers,
            };
            let nodes = cluster.run(HOUR, &|_| false);
            assert_eq!(nodes[0].received, None);
            measured.push((
                every,
                nodes[0].asked(),
                nodes[0].asked[1] + nodes[0].asked[2],
            ));
        }
        let before = (HOUR.as_secs() / BACKOFF_MAX.as_secs()) as usize;
        assert!(
            measured.iter().all(|(_, asked, _)| *asked <= before),
            "asks of a key held nowhere in an hour (liar's offers every, asked, of the honest \
             ones), {before} at the 10 s pace: {measured:?}"
        );
    }

    /// BREAK, fixed: the offerer is asked next (`Wanted::offered_by`). An offer made the key due at once, but the pull asked the holder next in turn
    /// (`holder_for` by tries), not the one that offered it: of a validator that lost its
    /// store, whose turn goes round every other validator, the offerer is asked only when its
    /// turn comes, at 10 s a try. The dishonest patient's home (1) gives the key to a grantee
    /// (`n - 1`) after a while (it said `Fetching` before) and `NotHeld` to the sealer (0,
    /// store lost), which was told `Fetching` by the grantee: the grantee offers the key at
    /// once, the sealer asks the others first.
    /// Measured, worst over the moments the grantee gets it (1 to 10 minutes): 20.25 s (4
    /// validators), 50.25 s (7), 80.25 s (10) after the offer.
    /// Fix: `offered(tx, from)` marks `from` as the holder to ask next (`holder_for` returns
    /// it for the next try, before the turn), as `SEALER_TRIES` does for the sealer.
    #[test]
    fn an_offered_key_is_asked_of_the_offerer_at_once() {
        let now = Instant::now();
        let mut measured = Vec::new();
        for n in [4usize, 7, 10] {
            let grantee_id = n as ReplicaId - 1;
            let mut worst = Duration::ZERO;
            for gives in (60..=600).step_by(15).map(Duration::from_secs) {
                let mut wants = vec![None; n];
                wants[0] = Some(party(0, 1, 1, now));
                wants[grantee_id as usize] = Some(grantee(1, 1, now));
                let mut holds = vec![false; n];
                holds[1] = true;
                let says = move |h: ReplicaId, a: ReplicaId, t: Duration| match h {
                    1 if a == grantee_id && t >= gives => Says::Key,
                    1 if a == grantee_id => Says::Fetching,
                    1 => Says::NotHeld,
                    _ => Says::Honest,
                };
                // The liar wakes the grantee up when it decides to give.
                let offers = move |k: ReplicaId, t: Duration| {
                    if k == 1 && t == gives {
                        vec![grantee_id]
                    } else {
                        Vec::new()
                    }
                };
                let cluster = Cluster {
                    n,
                    wants,
                    holds,
                    down: &never,
                    restored: &never,
                    says: &says,
                    offers: &offers,
                };
                let nodes = cluster.run(gives + 2 * REFUSED_BACKOFF_MAX, &|nodes| {
                    nodes[0].received.is_some()
                });
                let offered = nodes[grantee_id as usize].received.expect("the grantee's");
                let late = nodes[0].received.map_or(Duration::MAX, |at| at - offered);
                worst = worst.max(late);
            }
            measured.push((n, worst));
        }
        assert!(
            measured.iter().all(|(_, late)| *late <= TICK),
            "the key came this long after the offer (validators, late): {measured:?}"
        );
    }

    /// BREAK, fixed: offers are no longer counted with requests in that bound. Offers shared the per-peer queue of requests (`KeyInbox::deliver`): an honest
    /// holder that has its [`OPEN_PER_HOLDER`] requests queued at the asker (it asks it for its
    /// own keys, within its bounds, while the asker's service is busy with a block) has its
    /// offer dropped, and the asker waits out its grown wait (up to 5 minutes: nothing sends
    /// the offer again).
    /// Fix: count offers apart from requests (one queued offer frame per peer, the next merged
    /// into it up to [`MAX_KEY_REQUEST_IDS`] ids; an offer is never worth dropping for a
    /// request), or have the holder send offers again until it is asked.
    #[test]
    fn an_offer_behind_its_holders_queued_requests_is_dropped() {
        use crate::transport::InboundCredit;
        use crate::wire::{Frame, KeyFrame, Wire};

        let inbox = super::super::KeyInbox::new();
        for request in 0..OPEN_PER_HOLDER as u64 {
            let frame = Frame::new(Wire::Keys(KeyFrame::Request {
                request,
                txs: vec![[7; 32]],
            }));
            assert!(inbox.deliver(1, frame, InboundCredit::default()));
        }
        let offer = Frame::new(Wire::Keys(KeyFrame::Offer {
            txs: vec![id(1, 1)],
        }));
        assert!(
            inbox.deliver(1, offer, InboundCredit::default()),
            "the offer of an honest holder with {OPEN_PER_HOLDER} requests open was dropped"
        );
    }

    // -------------------------------------------------------------------------------------
    // Held
    // -------------------------------------------------------------------------------------

    /// HELD, with a caveat. A key held nowhere that every party wants (the sealer lost its
    /// store, the patient's home, a doctor's home, and every grantee: `Fetching` every way)
    /// costs the cluster far less than the 10 s pace, with 4, 7 and 10 validators: no
    /// `Fetching` resets anybody's rounds, and no offer is sent since nobody receives it.
    /// Measured, the second hour (asks of all the validators; at the 10 s pace): 4: 82
    /// (1,440); 7: 142 (2,520); 10: 163 (2,520). The caveat: the sealer that lost its store
    /// asks every other validator in turn at 10 s each, and only the wait after a whole round
    /// grows: its own share is 36 (4), 60 (7), 81 (10) asks an hour, up to a quarter of the
    /// 10 s pace (9 ids every 80 + 300 s with 10 validators), where a party or a grantee asks
    /// about 1/30 of it. Fix if that matters: grow the wait between the holders of a round
    /// too once `rounds` passes [`ROUNDS_AT_MAX`] (the round's wait spread over its holders).
    #[test]
    fn a_key_every_party_wants_and_nobody_holds_backs_off_for_everyone() {
        let mut measured = Vec::new();
        for n in [4usize, 7, 10] {
            let wants = parties(n, 1, 2, 3);
            let wanting = wants.iter().filter(|w| w.is_some()).count();
            let cluster = Cluster {
                n,
                wants,
                holds: vec![false; n],
                down: &never,
                restored: &never,
                says: &honest,
                offers: &no_offers,
            };
            let first = cluster.run(HOUR, &|_| false);
            let both = cluster.run(2 * HOUR, &|_| false);
            assert!(both.iter().all(|node| node.received.is_none()));
            let total = |nodes: &[Node]| nodes.iter().map(Node::asked).sum::<usize>();
            let second_hour = total(&both) - total(&first);
            let sealer = both[1].asked() - first[1].asked();
            measured.push((n, second_hour, sealer, wanting * 360));
        }
        assert!(
            measured
                .iter()
                .all(|(_, asked, _, pace)| *asked * 10 <= *pace),
            "asks in the second hour (validators, all, the sealer's, at the 10 s pace): \
             {measured:?}"
        );
    }

    /// HELD. Once an honest validator of a cycle of `Fetching` parties gets the key (from a
    /// holder back up after a long outage, no restart of the others), every party gets it
    /// within a few ticks: the offers go round the askers.
    #[test]
    fn a_key_got_by_one_party_of_a_cycle_reaches_every_party_by_offers() {
        let now = Instant::now();
        let mut worst = Duration::ZERO;
        for outage in (600..=1800).step_by(60).map(Duration::from_secs) {
            // The sealer (1) holds it but is down; the home (2), a doctor's home (3) and a
            // grantee (0) want it and ask each other (`Fetching`).
            let wants = vec![
                Some(grantee(2, 1, now)),
                Some(party(1, 2, 1, now)),
                Some(party(1, 2, 1, now)),
                Some(party(1, 2, 1, now)),
            ];
            let down = move |k: ReplicaId, t: Duration| k == 1 && t < outage;
            let cluster = Cluster {
                n: 4,
                wants,
                holds: vec![false, true, false, false],
                down: &down,
                restored: &never,
                says: &honest,
                offers: &no_offers,
            };
            let nodes = cluster.run(outage + 2 * REFUSED_BACKOFF_MAX, &|nodes| {
                nodes.iter().all(|n| n.holds)
            });
            let last = nodes
                .iter()
                .filter_map(|node| node.received)
                .max()
                .expect("received");
            assert!(nodes.iter().all(|node| node.holds), "outage {outage:?}");
            worst = worst.max(last - outage);
        }
        assert!(
            worst <= 2 * BACKOFF_MAX,
            "the last party got it {worst:?} after the sealer was back"
        );
    }

    /// HELD. `offered` and `told_fetching` from anyone, for any key (wanted or not, parked,
    /// due, gone), mixed with inserts, removes, refusals, holders back and pulls: every
    /// invariant of `WantedKeys` holds, `askers` holds each validator at most once (at most
    /// `n` a key, whatever a peer repeats), an offer never delays a key, and an offer of a
    /// key not wanted wants nothing.
    #[test]
    fn offers_and_fetching_askers_from_anyone_keep_every_invariant_and_stay_bounded() {
        let mut rng = StdRng::seed_from_u64(0x11b);
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        let mut t = Duration::ZERO;
        let n = 10;
        for step in 0..30_000u32 {
            let now = start + t;
            let tx = id(1, rng.gen_range(0..64));
            match rng.gen_range(0..12) {
                0 => {
                    let home = rng.gen_range(1..n as ReplicaId);
                    let w = if rng.gen_bool(0.3) {
                        grantee(home, u64::from(step % 7), now)
                    } else {
                        party(rng.gen_range(0..n as ReplicaId), home, 1, now)
                    };
                    keys.insert(tx, w);
                }
                1 => {
                    keys.remove(&tx);
                }
                2 | 3 => {
                    let w = keys.get(&tx).cloned();
                    if let Some(w) = w {
                        let round = super::holders(&w, 0, n, Some(home_of(&w)));
                        let holder = rng.gen_range(0..n as ReplicaId);
                        let refusal = [Refusal::NotHeld, Refusal::ToldToWait, Refusal::Fetching]
                            [rng.gen_range(0..3)];
                        keys.refused(&tx, holder, &round, now, refusal);
                    }
                }
                4 | 5 => {
                    let before = keys.get(&tx).map(|w| (w.next_try, w.parked.is_some()));
                    let len = keys.len();
                    keys.offered(&tx, rng.gen_range(0..n as ReplicaId), now);
                    assert_eq!(keys.len(), len, "an offer wants nothing");
                    if let (Some((before, false)), Some(w)) = (before, keys.get(&tx)) {
                        assert!(w.next_try <= before, "an offer never delays a key");
                    }
                }
                6 | 7 => {
                    // Any peer, `u32::MAX` too (on_frame drops it; `told_fetching` must not
                    // care).
                    let asker = if rng.gen_bool(0.05) {
                        ReplicaId::MAX
                    } else {
                        rng.gen_range(0..n as ReplicaId)
                    };
                    let len = keys.len();
                    keys.told_fetching(&tx, asker);
                    assert_eq!(keys.len(), len);
                }
                8 => keys.holder_back(rng.gen_range(0..n as ReplicaId), now),
                _ => {
                    let room = rng.gen_range(0..3);
                    keys.requests_with::<std::convert::Infallible>(
                        now,
                        |_| room,
                        |w| Ok(super::holder_for(w, 0, n, Some(home_of(w)), &|_| false)),
                    )
                    .unwrap();
                }
            }
            check_invariants(&keys);
            for w in keys.keys.values() {
                let mut askers = w.talk().askers.clone();
                askers.sort_unstable();
                askers.dedup();
                assert_eq!(askers.len(), w.talk().askers.len(), "an asker once");
                assert!(w.talk().askers.len() <= n + 1);
            }
            t += Duration::from_millis(rng.gen_range(0..2_000));
        }
    }

    /// HELD. The wire: a full `Offer` (and an answer of 1,024 `Fetching`) fits
    /// `MAX_KEY_FRAME_BYTES` and decodes as sent; the new variants are appended (the tags of
    /// the frames and replies of before are unchanged); a frame that claims more ids than it
    /// carries, or an unknown tag, is an error and no panic (a frame of a peer at most
    /// `MAX_KEY_FRAME_BYTES` long is all `decode` reads).
    #[test]
    fn offers_and_fetching_on_the_wire_fit_their_bound_and_bad_ones_are_refused() {
        use crate::wire::{FrameKind, FrameLimits, KeyFrame, KeyReply, MAX_KEY_FRAME_BYTES, Wire};

        let full = Wire::Keys(KeyFrame::Offer {
            txs: vec![[9; 32]; MAX_KEY_REQUEST_IDS],
        });
        let fetching = Wire::Keys(KeyFrame::Answer {
            request: u64::MAX,
            height: u64::MAX,
            replies: vec![KeyReply::Fetching; MAX_KEY_REQUEST_IDS],
        });
        let limits = FrameLimits::new(4, 1, 2);
        for wire in [&full, &fetching] {
            let bytes = borsh::to_vec(wire).unwrap();
            assert!(bytes.len() <= limits.max_bytes(FrameKind::Keys));
            assert!(bytes.len() <= MAX_KEY_FRAME_BYTES);
            let Wire::Keys(decoded) = crate::wire::decode(FrameKind::Keys, &bytes).unwrap() else {
                panic!("not a key frame");
            };
            let Wire::Keys(sent) = wire else {
                unreachable!()
            };
            assert_eq!(&decoded, sent);
        }
        // Tags: Request 0, Answer 1, Offer 2; Fetching the last reply.
        let offer = borsh::to_vec(&KeyFrame::Offer { txs: vec![] }).unwrap();
        assert_eq!(offer, [2, 0, 0, 0, 0]);
        assert_eq!(borsh::to_vec(&KeyReply::NotHeld).unwrap(), [1]);
        assert_eq!(borsh::to_vec(&KeyReply::Fetching).unwrap(), [6]);
        // An offer that claims u32::MAX ids in a 64 KiB frame; an unknown frame or reply tag.
        let mut claims = borsh::to_vec(&full).unwrap();
        let at = claims.len() - MAX_KEY_REQUEST_IDS * 32 - 4;
        claims[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(crate::wire::decode(FrameKind::Keys, &claims).is_err());
        let mut tag = borsh::to_vec(&full).unwrap();
        let keys_tag = tag.len() - MAX_KEY_REQUEST_IDS * 32 - 5;
        assert_eq!(tag[keys_tag], 2, "the offer's tag");
        tag[keys_tag] = 3;
        assert!(crate::wire::decode(FrameKind::Keys, &tag).is_err());
        let mut reply = borsh::to_vec(&fetching).unwrap();
        let last = reply.len() - 1;
        reply[last] = 7;
        assert!(crate::wire::decode(FrameKind::Keys, &reply).is_err());
        // Named as another kind: refused.
        let bytes = borsh::to_vec(&full).unwrap();
        assert!(crate::wire::decode(FrameKind::Small, &bytes).is_err());
    }
}

/// Red team s12 against the backoff of keys held nowhere as amended after s11b (4abce756):
/// offers taken once per `Fetching` answer and asked of the offerer next
/// (`Wanted::offered_by`), offers apart from the per-peer request bound, and the greeting
/// (an empty offer) a restarted key service sends before its first frame to each peer.
/// One asker is played against scripted holders (answers at once, in the pull's tick).
#[cfg(test)]
mod red_team_s12 {
    use std::cell::{Cell, RefCell};
    use std::time::{Duration, Instant};

    use super::red_team_s8::{TICK, TIMEOUT, check_invariants, grantee, id, party};
    use super::red_team_s11b::{View, home_of, lags};
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    /// What a holder answers for one id (`Silent`: the request is left open).
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Says {
        Key,
        NotHeld,
        Fetching,
        Silent,
    }

    /// The asker: `me` of `n` validators, as `Service` drives its `WantedKeys`.
    struct Asker {
        me: ReplicaId,
        n: usize,
        start: Instant,
        keys: WantedKeys,
        open: Vec<(ReplicaId, Instant)>,
        unanswered_since: Vec<Option<Instant>>,
        /// Ids asked, per holder.
        asked: Vec<usize>,
        received: BTreeMap<TxId, Duration>,
    }

    impl Asker {
        fn new(me: ReplicaId, n: usize, start: Instant) -> Asker {
            Asker {
                me,
                n,
                start,
                keys: WantedKeys::default(),
                open: Vec::new(),
                unanswered_since: vec![None; n],
                asked: vec![0; n],
                received: BTreeMap::new(),
            }
        }

        fn asked(&self) -> usize {
            self.asked.iter().sum()
        }

        /// `Service::on_offer`.
        fn on_offer(&mut self, from: ReplicaId, txs: &[TxId], t: Duration) {
            let now = self.start + t;
            if txs.is_empty() {
                self.keys.holder_restarted(from, now);
                return;
            }
            if txs.len() > MAX_KEY_REQUEST_IDS {
                return;
            }
            for tx in txs {
                self.keys.offered(tx, from, now);
            }
        }

        /// One pull at `t` (`Service::pull`), each request answered at once as `says` says
        /// (`Service::on_answer`); what each holder was asked and answered goes to `heard`.
        fn pull(
            &mut self,
            t: Duration,
            says: &dyn Fn(ReplicaId, &TxId, Duration) -> Says,
            heard: &mut dyn FnMut(ReplicaId, &TxId, Says),
        ) {
            let now = self.start + t;
            self.open
                .retain(|(_, sent)| now.saturating_duration_since(*sent) < TIMEOUT);
            let requests = {
                let mut view = View {
                    me: self.me,
                    n: self.n,
                    now,
                    open: &self.open,
                    unanswered_since: &self.unanswered_since,
                };
                self.keys.requests(now, &mut view).unwrap()
            };
            for (holder, txs) in requests {
                let h = holder as usize;
                self.asked[h] += txs.len();
                self.open.push((holder, now));
                self.unanswered_since[h].get_or_insert(now);
                let replies: Vec<Says> = txs.iter().map(|tx| says(holder, tx, t)).collect();
                for (tx, reply) in txs.iter().zip(&replies) {
                    heard(holder, tx, *reply);
                }
                if replies.iter().all(|r| *r == Says::Silent) {
                    continue;
                }
                let was_lagging = lags(&self.unanswered_since, holder, now);
                if let Some(at) = self.open.iter().position(|o| *o == (holder, now)) {
                    self.open.remove(at);
                }
                self.unanswered_since[h] = self
                    .open
                    .iter()
                    .filter(|(o, _)| *o == holder)
                    .map(|(_, sent)| *sent)
                    .min();
                if was_lagging {
                    self.keys.holder_back(holder, now);
                }
                for (tx, reply) in txs.iter().zip(replies) {
                    let refusal = match reply {
                        Says::Key => {
                            if self.keys.remove(tx).is_some() {
                                self.received.insert(*tx, t);
                            }
                            continue;
                        }
                        Says::Silent => continue,
                        Says::NotHeld => Refusal::NotHeld,
                        Says::Fetching => Refusal::Fetching,
                    };
                    let Some(w) = self.keys.get(tx) else {
                        continue;
                    };
                    let round = super::holders(w, self.me, self.n, Some(home_of(w)));
                    self.keys.refused(tx, holder, &round, now, refusal);
                }
            }
            check_invariants(&self.keys);
        }
    }

    /// The doctor's home (0) of a record sealed by 2 (a sealer other than the doctor's home, as
    /// s11b's simulator has it), whose patient's home (1) holds the key;
    /// the sealer answers as `sealer` says and, if `offers`, offers the key after every
    /// `Fetching` it answered (it said it fetches it: the offer is taken). Asked for `limit`:
    /// when the key came, and the ids asked of the sealer and of the home.
    fn pinned(
        sealer: Says,
        offers: bool,
        home_holds: bool,
        limit: Duration,
    ) -> (Option<Duration>, usize, usize) {
        let start = Instant::now();
        let tx = id(1, 1);
        let mut asker = Asker::new(0, 4, start);
        asker.keys.insert(tx, party(2, 1, 1, start));
        let says = |h: ReplicaId, _: &TxId, _: Duration| match h {
            2 => sealer,
            1 if home_holds => Says::Key,
            _ => Says::NotHeld,
        };
        let told = Cell::new(false);
        let mut t = Duration::ZERO;
        while t <= limit && !asker.received.contains_key(&tx) {
            // The liar's offer: the tick after it said `Fetching`.
            if offers && told.replace(false) {
                asker.on_offer(2, &[tx], t);
            }
            asker.pull(t, &says, &mut |h, _, s| {
                if h == 2 && s == Says::Fetching {
                    told.set(true);
                }
            });
            t += TICK;
        }
        (
            asker.received.get(&tx).copied(),
            asker.asked[2],
            asker.asked[1],
        )
    }

    /// The same for a sealer (0) that lost its store (§5.6) and is the patient's home: it asks
    /// every other validator in turn, 1 first, which answers as `liar` says (offering after
    /// each `Fetching` if `offers`); a grantee (3) holds the key.
    fn pinned_lost_store(liar: Says, offers: bool, limit: Duration) -> (Option<Duration>, usize) {
        let start = Instant::now();
        let tx = id(1, 1);
        let mut asker = Asker::new(0, 4, start);
        // Its own patient (`feed::first_source` makes only such a key asked of every other
        // validator in turn: 1, 2, 3).
        asker.keys.insert(tx, party(0, 0, 1, start));
        let says = |h: ReplicaId, _: &TxId, _: Duration| match h {
            1 => liar,
            3 => Says::Key,
            _ => Says::NotHeld,
        };
        let told = Cell::new(false);
        let mut t = Duration::ZERO;
        while t <= limit && !asker.received.contains_key(&tx) {
            if offers && told.replace(false) {
                asker.on_offer(1, &[tx], t);
            }
            asker.pull(t, &says, &mut |h, _, s| {
                if h == 1 && s == Says::Fetching {
                    told.set(true);
                }
            });
            t += TICK;
        }
        (asker.received.get(&tx).copied(), asker.asked[3])
    }

    /// BREAK. A dishonest sealer answers `Fetching` each time it is asked and offers the key
    /// the tick after: the offer is taken (it did say `Fetching`), `offered_by` makes it the
    /// holder asked next, before the turn and whatever the tries, and the next answer is
    /// `Fetching` again. The patient's home, which holds the key and would give it ~1 s in,
    /// is never asked: the key never comes (and is asked of the liar 4 times a second, for
    /// ever: 14,400 asks an hour where the 10 s pace makes 360).
    /// Measured: never received in an hour; 0 asks of the home; 14,401 of the liar. The same
    /// for a sealer that lost its store (§5.6), home to the patient, whose turn asks the liar
    /// first: the grantee holding the key (asked in turn after it) is never asked (0 asks in
    /// an hour; 0.75 s with the liar saying `NotHeld`). (The first case needs a sealer other
    /// than the doctor's home, as s11b's simulator has; the second is any lost store.)
    /// Fix: an offer pins the next ask to the offerer only if that offerer has not already
    /// been asked next after an offer since the key was last refused by every other holder
    /// (or: at most once per round; or: an offerer that answers `Fetching` again right after
    /// its offer loses its place in `offerers` for that key until the round is whole), and
    /// an offer never schedules the key earlier than once per [`BACKOFF_MAX`] per offerer.
    #[test]
    fn a_liar_saying_fetching_and_offering_at_once_keeps_a_key_the_home_holds_from_coming() {
        // A sealer that lost its store, with a liar for the patient's home: the grantee that
        // holds the key is never asked either.
        let (lost_honest, _) = pinned_lost_store(Says::NotHeld, false, HOUR);
        let lost_honest = lost_honest.expect("the grantee gives it");
        let (lost_at, asked_of_grantee) = pinned_lost_store(Says::Fetching, true, HOUR);
        let (honest_at, _, _) = pinned(Says::NotHeld, false, true, HOUR);
        let honest_at = honest_at.expect("the home gives it");
        let (at, liar, home) = pinned(Says::Fetching, true, true, HOUR);
        assert!(
            lost_at.is_some_and(|at| at <= lost_honest + BACKOFF_MAX),
            "a lost store's key from the grantee: at {lost_honest:?} with the liar saying \
             NotHeld; with its Fetching + Offer: {lost_at:?} (the grantee asked \
             {asked_of_grantee} times in an hour)"
        );
        assert!(
            at.is_some_and(|at| at <= honest_at + BACKOFF_MAX),
            "with a sealer saying NotHeld the key comes at {honest_at:?}; with the liar's \
             Fetching + Offer: {at:?} (asked of the liar {liar}, of the home {home} in an hour)"
        );
    }

    /// BREAK. The same loop on a key held nowhere (the home refuses it, the liar says
    /// `Fetching` and offers): asked at every pull for ever, where refusals grow the wait to
    /// 5 minutes. What s11b's "once per `Fetching` answer" was to stop (a liar's offers of
    /// keys held nowhere made them asked at every pull): the liar only has to answer
    /// `Fetching` first. Over many keys the honest validator asks the liar as fast as its
    /// allowance for it allows (4,096 ids a second), for ever.
    /// Measured: 14,401 asks in an hour, all of the liar (38 without it, 360 at the 10 s
    /// pace).
    #[test]
    fn a_liar_saying_fetching_and_offering_at_once_makes_a_key_held_nowhere_asked_at_every_pull() {
        let (_, liar_quiet, home_quiet) = pinned(Says::NotHeld, false, false, HOUR);
        let (at, liar, home) = pinned(Says::Fetching, true, false, HOUR);
        assert_eq!(at, None);
        let pace = (HOUR.as_secs() / BACKOFF_MAX.as_secs()) as usize;
        assert!(
            liar + home <= pace,
            "asks of a key held nowhere in an hour: {} with the liar's loop (liar {liar}, \
             home {home}), {} without, {pace} at the 10 s pace",
            liar + home,
            liar_quiet + home_quiet
        );
    }

    /// HELD. A liar that says `Fetching`, offers, then goes silent (or answers `NotHeld`)
    /// pins the key for one ask only (`asked` clears `offered_by`): the home's key comes
    /// within the 10 s pace of when it came without the liar.
    #[test]
    fn a_liar_offering_once_then_silent_or_refusing_delays_a_key_the_home_holds_little() {
        let (honest_at, _, _) = pinned(Says::NotHeld, false, true, HOUR);
        let honest_at = honest_at.unwrap();
        let mut measured = Vec::new();
        for after in [Says::Silent, Says::NotHeld] {
            let start = Instant::now();
            let tx = id(1, 1);
            let mut asker = Asker::new(0, 4, start);
            asker.keys.insert(tx, party(2, 1, 1, start));
            let asked_of_liar = Cell::new(0u32);
            let says = |h: ReplicaId, _: &TxId, _: Duration| match h {
                2 if asked_of_liar.get() <= 1 => Says::Fetching,
                2 => after,
                _ => Says::Key,
            };
            let told = Cell::new(false);
            let mut t = Duration::ZERO;
            while t <= HOUR && !asker.received.contains_key(&tx) {
                if told.replace(false) {
                    asker.on_offer(2, &[tx], t);
                }
                asker.pull(t, &says, &mut |h, _, s| {
                    if h == 2 {
                        asked_of_liar.set(asked_of_liar.get() + 1);
                        told.set(s == Says::Fetching);
                    }
                });
                t += TICK;
            }
            measured.push((after, asker.received.get(&tx).copied()));
        }
        assert!(
            measured
                .iter()
                .all(|(_, at)| at.is_some_and(|at| at <= honest_at + BACKOFF_MAX)),
            "honest {honest_at:?}, with the liar: {measured:?}"
        );
    }

    /// HELD. Offer floods: a liar offers, every tick for 10 minutes, frames of 1,024 ids: the
    /// wanted keys it never said `Fetching` for, repeated, ids nobody wants, and frames over
    /// the bound. Nothing is taken: the asks are those without the flood, no per-key state
    /// grows (`offerers`, `offered_by` stay empty), and the cost is one map lookup per id.
    #[test]
    fn offer_floods_of_ids_never_said_fetching_change_nothing_and_grow_nothing() {
        let run = |flood: bool| {
            let start = Instant::now();
            let mut asker = Asker::new(0, 4, start);
            // Keys held nowhere: sealer 2 and home 1 refuse them.
            let wanted: Vec<TxId> = (0..1_100).map(|i| id(1, i)).collect();
            for tx in &wanted {
                asker.keys.insert(*tx, party(2, 1, 1, start));
            }
            let junk: Vec<TxId> = (0..MAX_KEY_REQUEST_IDS as u32).map(|i| id(9, i)).collect();
            let repeated = vec![wanted[0]; MAX_KEY_REQUEST_IDS];
            let over = vec![wanted[1]; MAX_KEY_REQUEST_IDS + 1];
            let says = |_: ReplicaId, _: &TxId, _: Duration| Says::NotHeld;
            let mut t = Duration::ZERO;
            while t <= 10 * MINUTE {
                if flood {
                    // The liar (3) is no holder of these keys; 2 is, and says NotHeld.
                    for from in [3, 2] {
                        for chunk in wanted.chunks(MAX_KEY_REQUEST_IDS) {
                            asker.on_offer(from, chunk, t);
                        }
                        asker.on_offer(from, &junk, t);
                        asker.on_offer(from, &repeated, t);
                        asker.on_offer(from, &over, t);
                    }
                }
                asker.pull(t, &says, &mut |_, _, _| {});
                t += TICK;
            }
            let grown = asker.keys.keys.values().all(|w| {
                w.talk().offerers.is_empty()
                    && w.talk().offered_by.is_empty()
                    && w.talk().askers.is_empty()
            });
            (asker.asked(), asker.keys.len(), grown)
        };
        let quiet = run(false);
        let flooded = run(true);
        assert_eq!(
            quiet, flooded,
            "(asks, wanted, no offer state) quiet vs flooded"
        );
        assert!(quiet.2);
    }

    /// HELD. Empty offers ("I restarted") from a liar every tick for an hour drop the grown
    /// waits once per 5 minutes, no more (`holder_back`'s limit holds), at the cost §5.3
    /// states: a key held nowhere asked 170 times an hour (38 without, 360 at the 10 s pace),
    /// and `holder_back`'s sweep of every wanted key 12 times an hour.
    #[test]
    fn empty_offers_every_tick_drop_grown_waits_once_per_5_minutes() {
        let run = |hello: bool| {
            let start = Instant::now();
            let tx = id(1, 1);
            let mut asker = Asker::new(0, 4, start);
            asker.keys.insert(tx, party(2, 1, 1, start));
            let says = |_: ReplicaId, _: &TxId, _: Duration| Says::NotHeld;
            let mut t = Duration::ZERO;
            while t <= HOUR {
                if hello {
                    asker.on_offer(3, &[], t);
                }
                asker.pull(t, &says, &mut |_, _, _| {});
                t += TICK;
            }
            (asker.asked(), asker.keys.restarts.len())
        };
        let (quiet, _) = run(false);
        let (hello, backs) = run(true);
        let pace = (HOUR.as_secs() / BACKOFF_MAX.as_secs()) as usize;
        assert!(
            hello <= 240 && hello < pace && quiet <= 60 && backs == 1,
            "asks an hour: {quiet} quiet, {hello} with empty offers every tick ({pace} at the \
             10 s pace); holders remembered: {backs}"
        );
    }

    /// How late, at worst, the grantee of a restarted home gets the key after the home could
    /// give it (see below); `eager`: the home greets it as soon as it is up.
    fn restarted_home_late(eager: bool) -> Duration {
        let mut worst = Duration::ZERO;
        for restart in (900..=1200).step_by(10).map(Duration::from_secs) {
            let up = restart + Duration::from_secs(5);
            let holds = up + MINUTE;
            let start = Instant::now();
            let tx = id(1, 1);
            let mut asker = Asker::new(3, 4, start);
            asker.keys.insert(tx, grantee(1, 1, start));
            // The home's memory: whether it was told to offer (an asker since its restart),
            // and whether it has greeted the grantee since.
            let askers = RefCell::new(false);
            let greeted = Cell::new(false);
            let says = |_: ReplicaId, _: &TxId, t: Duration| {
                if t >= restart && t < up {
                    Says::Silent
                } else if t >= holds {
                    Says::Key
                } else {
                    Says::Fetching
                }
            };
            let mut t = Duration::ZERO;
            let mut offered = false;
            while t <= holds + 2 * REFUSED_BACKOFF_MAX && !asker.received.contains_key(&tx) {
                if t >= holds && !offered && *askers.borrow() {
                    // The home offers the key to the askers it knows (since its restart).
                    offered = true;
                    if !greeted.replace(true) {
                        asker.on_offer(1, &[], t);
                    }
                    asker.on_offer(1, &[tx], t);
                }
                // Its greeting precedes its first frame to the grantee after its restart:
                // the answer to the grantee's next ask (delivered first, as in `send`).
                let will_answer = t >= up
                    && (eager || asker.keys.get(&tx).is_some_and(|w| w.next_try <= start + t));
                if will_answer && !greeted.replace(true) {
                    asker.on_offer(1, &[], t);
                }
                asker.pull(t, &says, &mut |_, _, s| {
                    if t >= up && s == Says::Fetching {
                        *askers.borrow_mut() = true;
                    }
                });
                t += TICK;
            }
            let at = asker.received.get(&tx).copied().unwrap_or(Duration::MAX);
            worst = worst.max(at.saturating_sub(holds));
        }
        worst
    }

    /// BREAK, fixed: the greeting was sent only before the restarted service's first frame to
    /// a peer (`Exchange::send`), not at start: a holder that told a grantee `Fetching` and
    /// restarted sent that grantee nothing until the grantee asked it again, so the grantee's
    /// grown wait was not dropped (tests/keys.rs
    /// `a_restarted_validator_greets_a_peer_it_has_nothing_to_send`). A grantee (3) asks the
    /// patient's home (1), which waits for the key from the sealer (down): `Fetching`, round
    /// after round, the wait grows to 5 minutes. The home restarts (5 s down) 15 to 20
    /// minutes in and has the key a minute later. Measured, worst over restarts 10 s apart:
    /// 225 s after the home could give it with the greeting sent lazily (the model
    /// `restarted_home_late(false)`), 0 s with the greeting at start, which `Exchange::new`
    /// now sends (`exchange::red_team_s12`).
    #[test]
    fn a_restarted_home_greets_its_grantee_only_when_asked_and_it_waits_5_minutes() {
        let eager = restarted_home_late(true);
        assert!(eager <= BACKOFF_MAX, "the greeting at start: {eager:?}");
        let lazy = restarted_home_late(false);
        assert!(
            lazy > BACKOFF_MAX,
            "the model of the lazy greeting no longer shows its wait ({lazy:?})"
        );
    }

    /// BREAK. `holder_back`'s limit (once per 5 minutes per holder, against a liar) also
    /// swallows an honest holder's greeting: the home (1) left one request of its grantee (3)
    /// unanswered (a busy moment), its next answer drops the grantee's waits
    /// (`holder_back` after a lag); the grantee's wait grows again (10, 10, 10, 20, 40, 80,
    /// 160 s); the home restarts within 5 minutes of that answer, and its greeting (here
    /// delivered as soon as it is up, as the fix of the break above would) is ignored. The home
    /// has forgotten the grantee it told `Fetching`, holds the key 5 s after its restart, and
    /// the grantee asks again only when its grown wait ends.
    /// Measured, worst over restarts 10 s apart within the 5 minutes: 145 s after the home
    /// could give it (10 s, the normal pace, were the greeting not limited with the lag-back).
    /// Fix: a greeting (a restart: the askers are forgotten for sure) is not rate-limited
    /// with lag-backs: limit it on its own (once per 5 minutes per holder), or let it drop
    /// only the waits grown by that holder's `Fetching`.
    #[test]
    fn a_holder_back_after_a_lag_swallows_the_same_holders_greeting_for_5_minutes() {
        let late = |limited: bool| {
            let mut worst = Duration::ZERO;
            for after in (10..300).step_by(10).map(Duration::from_secs) {
                // The grantee's one unanswered request is at `busy`; the next answer, a lag-back.
                let busy = 20 * MINUTE;
                let start = Instant::now();
                let tx = id(1, 1);
                let mut asker = Asker::new(3, 4, start);
                asker.keys.insert(tx, grantee(1, 1, start));
                let back = Cell::new(None::<Duration>);
                let silent_once = Cell::new(false);
                let restart = Cell::new(None::<Duration>);
                let askers = Cell::new(false);
                let says = |_: ReplicaId, _: &TxId, t: Duration| {
                    let up = restart.get().map(|r| r + Duration::from_secs(5));
                    let busy_now = t >= busy && !silent_once.get();
                    let down = restart.get().is_some_and(|r| t >= r) && up.is_some_and(|up| t < up);
                    if busy_now || down {
                        Says::Silent
                    } else if up.is_some_and(|up| t >= up) {
                        Says::Key
                    } else {
                        Says::Fetching
                    }
                };
                let mut t = Duration::ZERO;
                let mut holds = None;
                while t <= 2 * HOUR && !asker.received.contains_key(&tx) {
                    if let Some(b) = back.get()
                        && restart.get().is_none()
                        && t >= b + after
                    {
                        restart.set(Some(t));
                    }
                    if let Some(r) = restart.get() {
                        let up = r + Duration::from_secs(5);
                        if t == up {
                            // Up (holding the key), greeting the grantee at once.
                            holds = Some(t);
                            if !limited {
                                // The control: no earlier lag-back counted against it.
                                asker.keys.backs.clear();
                            }
                            asker.on_offer(1, &[], t);
                        }
                        if t >= up && askers.get() {
                            askers.set(false);
                            asker.on_offer(1, &[tx], t);
                        }
                    }
                    let backs_before = asker.keys.backs.get(&1).copied();
                    asker.pull(t, &says, &mut |_, _, s| {
                        if s == Says::Silent && t >= busy {
                            silent_once.set(true);
                        }
                        if s == Says::Fetching && restart.get().is_some_and(|r| t >= r) {
                            askers.set(true);
                        }
                    });
                    if back.get().is_none() && asker.keys.backs.get(&1).copied() != backs_before {
                        back.set(Some(t));
                    }
                    t += TICK;
                }
                let holds = holds.expect("restarted");
                let at = asker.received.get(&tx).copied().unwrap_or(Duration::MAX);
                worst = worst.max(at.saturating_sub(holds));
            }
            worst
        };
        let control = late(false);
        assert!(
            control <= BACKOFF_MAX,
            "a greeting not limited: {control:?}"
        );
        let worst = late(true);
        assert!(
            worst <= BACKOFF_MAX,
            "the grantee got the key {worst:?} after its greeting home could give it \
             ({control:?} were the greeting not limited with the lag-back)"
        );
    }

    /// BREAK. A liar's offer after an honest one takes its place (`offered_by` is one slot,
    /// and the honest offerer's turn in `offerers` is spent): s11b's third break again. A home
    /// and sealer (0) that lost its store asks every other validator in turn (1, the liar,
    /// first); the liar and an honest validator (9) both answered `Fetching`. The honest one
    /// gets the key at `gives` and offers it at once; the liar offers just after (in the same
    /// 250 ms: it must know when, e.g. from the frames it sees, or offer blindly after each
    /// `Fetching`, which is the loop above). The liar is asked next and says `NotHeld`; the
    /// honest offerer is asked only when its turn comes again.
    /// Measured, worst over `gives` of 5 to 15 minutes: 90 s after the grantee's offer with
    /// 10 validators (at once without the liar's offer).
    /// Fix: keep every offerer (a set, asked in the order they offered), or ask the offerer
    /// whose offer came first.
    #[test]
    fn a_liars_offer_after_an_honest_one_takes_its_place() {
        let n = 10usize;
        let grantee_id: ReplicaId = 9;
        let late = |liar_offers: bool| {
            let mut worst = Duration::ZERO;
            for gives in (300..=900).step_by(15).map(Duration::from_secs) {
                let start = Instant::now();
                let tx = id(1, 1);
                let mut asker = Asker::new(0, n, start);
                asker.keys.insert(tx, party(0, 0, 1, start));
                let says = |h: ReplicaId, _: &TxId, t: Duration| match h {
                    1 if t < gives => Says::Fetching,
                    h if h == grantee_id && t < gives => Says::Fetching,
                    h if h == grantee_id => Says::Key,
                    _ => Says::NotHeld,
                };
                let mut t = Duration::ZERO;
                while t <= gives + 2 * REFUSED_BACKOFF_MAX && !asker.received.contains_key(&tx) {
                    if t == gives {
                        asker.on_offer(grantee_id, &[tx], t);
                        if liar_offers {
                            asker.on_offer(1, &[tx], t);
                        }
                    }
                    asker.pull(t, &says, &mut |_, _, _| {});
                    t += TICK;
                }
                let at = asker.received.get(&tx).copied().unwrap_or(Duration::MAX);
                worst = worst.max(at.saturating_sub(gives));
            }
            worst
        };
        let honest = late(false);
        assert!(honest <= TICK, "without the liar's offer: {honest:?}");
        let lied = late(true);
        assert!(
            lied <= BACKOFF_MAX,
            "the key came {lied:?} after the honest offer ({honest:?} without the liar's)"
        );
    }

    /// How long after its offer a key validator 9 gives comes to a home and sealer that lost
    /// its store (0 of 10), while `backlog` keys held nowhere were asked just before it: the
    /// offered key is among those parked behind validator 1 (first in turn), whose 4 requests
    /// were full.
    fn offered_behind(backlog: u32) -> (Duration, bool) {
        let n = 10;
        let start = Instant::now();
        let mut asker = Asker::new(0, n, start);
        let offered = id(2, 0);
        for i in 0..backlog {
            asker.keys.insert(id(1, i), party(0, 0, 1, start));
        }
        asker.keys.insert(offered, party(0, 0, 1, start));
        // The grantee said `Fetching` for it earlier (its turn came in an earlier round).
        let w = asker.keys.get(&offered).unwrap();
        let round = super::holders(w, 0, n, Some(0));
        asker
            .keys
            .refused(&offered, 9, &round, start, Refusal::Fetching);
        let says = |h: ReplicaId, tx: &TxId, _: Duration| {
            if h == 9 && *tx == offered {
                Says::Key
            } else {
                Says::NotHeld
            }
        };
        let mut t = Duration::ZERO;
        let mut parked = false;
        while t <= HOUR && !asker.received.contains_key(&offered) {
            if t == TICK {
                parked = asker.keys.get(&offered).unwrap().parked.is_some();
                asker.on_offer(9, &[offered], t);
            }
            asker.pull(t, &says, &mut |_, _, _| {});
            t += TICK;
        }
        let late = asker
            .received
            .get(&offered)
            .map_or(Duration::MAX, |at| at.saturating_sub(TICK));
        (late, parked)
    }

    /// BREAK. An offer of a key parked behind another holder is spent on that holder: the
    /// offer sets `offered_by` but leaves the key parked (`offered` reschedules only a key not
    /// parked), and the next pull draws the parked keys of a holder with room first and asks
    /// them of it without `holder_for` (`route_all`), and `asked` clears `offered_by`. The
    /// offerer's turn in `offerers` is spent too: it is asked only when its turn comes round.
    /// A home and sealer that lost its store (0 of 10) asks every other validator in turn, 1
    /// first, for 5,000 keys held nowhere and the one validator 9 (which said `Fetching`
    /// before) now holds; 4,096 fill 1's requests, the rest park behind it. 9 offers its key:
    /// it is asked of 1.
    /// No dishonest validator needed.
    /// Measured: 35.75 s after the offer (at once with a backlog of 10); the offerer's turn
    /// comes up to 8 asks later with 10 validators.
    /// Fix: `offered` takes the key out of its parking (unpark, due now), or `route_all`
    /// routes a drawn key with an `offered_by` to its offerer.
    #[test]
    fn an_offer_of_a_key_parked_behind_another_holder_is_spent_on_that_holder() {
        let (control, _) = offered_behind(10);
        assert!(control <= TICK, "with a backlog of 10: {control:?}");
        let (late, parked) = offered_behind(5_000);
        assert!(parked, "parked behind the home when offered");
        assert!(
            late <= BACKOFF_MAX,
            "the offered key came {late:?} after the offer ({control:?} with a small backlog)"
        );
    }

    /// BREAK (minor), red team s13. A liar's offer just *before* an honest one delays the
    /// honest offer by a full backoff: offerers are asked in the order they offered, the liar
    /// first; its ask (not a try) still sets `next_try = now + backoff(tries)` (`asked`), so
    /// the honest offerer, next in `offered_by`, is asked only when that comes due (10 s)
    /// instead of at once. Measured: 10 s (0 without the liar's offer), with the liar
    /// answering `Fetching` or silent. Bounded by the 10 s pace (once per round per liar),
    /// but not "at once after an honest offer". Fix: after an offer's ask, a key with
    /// offerers left stays due now. A home and sealer (0 of 10) that lost
    /// its store wants `tx` and `backlog` keys held nowhere; the liar (1) answers `Fetching`
    /// for `tx`, leaves every other request open, and offers `tx` just before an honest
    /// validator does; the honest validator (9) said `Fetching` and offers the key at `gives`.
    /// Returns the worst delay after the honest offer.
    fn liar_offers_first(liar_offers: bool, silent_before: bool, backlog: u32) -> Duration {
        let n = 10usize;
        let honest: ReplicaId = 9;
        let mut worst = Duration::ZERO;
        for gives in (300..=900).step_by(45).map(Duration::from_secs) {
            let start = Instant::now();
            let tx = id(7, 7);
            let mut asker = Asker::new(0, n, start);
            asker.keys.insert(tx, party(0, 0, 1, start));
            for i in 0..backlog {
                asker.keys.insert(id(1, i), party(0, 0, 1, start));
            }
            let says = |h: ReplicaId, asked: &TxId, t: Duration| match h {
                1 if *asked == tx && !(silent_before && t + MINUTE >= gives) => Says::Fetching,
                1 => Says::Silent,
                h if h == honest && *asked == tx && t < gives => Says::Fetching,
                h if h == honest && *asked == tx => Says::Key,
                _ => Says::NotHeld,
            };
            let mut t = Duration::ZERO;
            while t <= gives + 2 * REFUSED_BACKOFF_MAX && !asker.received.contains_key(&tx) {
                if t == gives {
                    // The liar offers first (it sees the key come, or offers blindly).
                    if liar_offers {
                        asker.on_offer(1, &[tx], t);
                    }
                    asker.on_offer(honest, &[tx], t);
                }
                asker.pull(t, &says, &mut |_, _, _| {});
                t += TICK;
            }
            let at = asker.received.get(&tx).copied().unwrap_or(Duration::MAX);
            worst = worst.max(at.saturating_sub(gives));
        }
        worst
    }

    #[test]
    fn a_liars_offer_just_before_an_honest_one_delays_it_a_backoff() {
        let control = liar_offers_first(false, false, 100);
        assert!(control <= TICK, "without the liar's offers: {control:?}");
        let lied = liar_offers_first(true, false, 100);
        let silent = liar_offers_first(true, true, 100);
        assert!(
            lied.max(silent) <= TICK,
            "the key came {lied:?} after the honest offer ({silent:?} with the liar silent on it \
             the last minute; {control:?} without the liar's offer)"
        );
    }

    /// Red team s13, held. A key held nowhere is asked less and less (refusals grow its wait to
    /// [`REFUSED_BACKOFF_MAX`]); with the liar's `Fetching` + `Offer` loop (`pinned`) after
    /// each whole round (which clears `offers_taken`), the offer adds an ask per round but the
    /// grown wait still applies. Measured: 36 asks in the fourth hour with the loop, 24
    /// without.
    #[test]
    fn a_liars_offer_after_each_whole_round_does_not_undo_the_grown_wait() {
        let fourth_hour = |sealer: Says, offers: bool| {
            let (_, liar3, home3) = pinned(sealer, offers, false, 3 * HOUR);
            let (_, liar4, home4) = pinned(sealer, offers, false, 4 * HOUR);
            (liar4 - liar3) + (home4 - home3)
        };
        let quiet = fourth_hour(Says::NotHeld, false);
        let lied = fourth_hour(Says::Fetching, true);
        let slowest = (HOUR.as_secs() / REFUSED_BACKOFF_MAX.as_secs()) as usize;
        assert!(
            lied <= 2 * quiet.max(2 * slowest),
            "asks of a key held nowhere in its fourth hour: {lied} with the liar's loop, \
             {quiet} without ({slowest} rounds at the slowest pace)"
        );
    }
}

/// Red team (s14, helper) of 2e62edfa (a lagging holder's parked keys walked at most once per
/// [`MOVE_EVERY`], `move_due`, `Parked::moved_at`). F1-F3 failed on 2e62edfa and are fixed
/// (F3 was older: a key whose lookup met the end of the budget was marked as staying); the
/// others are guarantees that held.
#[cfg(test)]
mod red_team_s14_wanted {
    use std::collections::HashSet;
    use std::convert::Infallible;
    use std::time::{Duration, Instant};

    use super::*;

    use super::red_team_s8::{
        OPEN_PER_HOLDER, check_invariants, grantee, holder_for_lagging as holder_for, id, party,
    };

    /// One pull at `now`: `lagging` and `room` per holder, as the exchange would say.
    pub(super) fn pull(
        keys: &mut WantedKeys,
        now: Instant,
        lagging: impl Fn(ReplicaId) -> bool,
        room: impl Fn(ReplicaId) -> usize,
    ) -> Vec<(ReplicaId, Vec<TxId>)> {
        let mut holders = Closures {
            room: |h: ReplicaId| room(h),
            lagging,
            holder_for: |w: &Wanted, lagging: &dyn Fn(ReplicaId) -> bool| {
                Ok::<_, Infallible>(Some(holder_for(w, lagging)))
            },
            error: std::marker::PhantomData,
        };
        let requests = keys.requests(now, &mut holders).unwrap();
        check_invariants(keys);
        requests
    }

    /// Parks every due key (no holder has room, none lags).
    pub(super) fn park_all(keys: &mut WantedKeys, now: Instant) {
        while !keys.due.is_empty() {
            assert!(pull(keys, now, |_| false, |_| 0).is_empty());
        }
    }

    /// F1. A walk whose first chunk takes the whole queue (a backlog of up to 1,024 keys)
    /// empties it: the last `take` removes the holder's `Parked`, and parking the keys again
    /// makes a new one, `moved_at` (and `since`) `None`. The next pull walks again, 1 ms later:
    /// the bound of 2e62edfa does not hold for small backlogs (cost: 1,024 pops a pull at
    /// most, so low), and `since` restarting means a holder lagging by backlog alone stops
    /// lagging for 2 s after each such walk (as on 2e62edfa^).
    #[test]
    fn a_walk_that_takes_the_whole_queue_forgets_when_it_walked() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        // Holder 3 gives them too, but has no room: they stay behind 2, movable.
        for i in 0..500 {
            keys.insert(id(1, i), party(2, 3, 3, start));
        }
        park_all(&mut keys, start);
        let lagging = start + LAGGING_AFTER;
        let before = keys.walked;
        pull(&mut keys, lagging, |h| h == 2, |_| 0);
        let walked = keys.walked;
        assert!(walked > before, "the first lagging pull walks");
        pull(
            &mut keys,
            lagging + Duration::from_millis(1),
            |h| h == 2,
            |_| 0,
        );
        assert_eq!(
            keys.walked,
            walked,
            "walked again 1 ms later ({} keys popped and parked again)",
            keys.walked - walked
        );
    }

    /// F2. `move_due` notes the walk before `move_off` looks at the budget: a lagging holder
    /// whose turn comes after another lagging holder's walk spent the pull's lookups is noted
    /// as walked and not walked. On 2e62edfa^ its keys went to the other holder at the next
    /// pull (1 ms later here); now only after MOVE_EVERY. Holder 1 (lower id, walked first) has
    /// 16,384 keys only it gives (2 lookups each: the budget); holder 2's key would go to
    /// holder 3 at once. Bounded (250 ms per such pull), low.
    #[test]
    fn a_walk_noted_with_no_budget_left_holds_the_keys_back_move_every() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        for i in 0..(DUE_PER_PULL / 2) as u32 {
            keys.insert(id(1, i), party(1, 1, 3, start));
        }
        let key = id(2, 0);
        keys.insert(key, party(2, 3, 3, start));
        park_all(&mut keys, start);
        let lagging = |h: ReplicaId| h == 1 || h == 2;
        let room = |h: ReplicaId| if h == 3 { OPEN_PER_HOLDER } else { 0 };
        let t = start + LAGGING_AFTER;
        let first = pull(&mut keys, t, lagging, room);
        assert!(first.is_empty(), "holder 1's walk spends the budget");
        let next = pull(&mut keys, t + Duration::from_millis(1), lagging, room);
        let later = pull(&mut keys, t + MOVE_EVERY, lagging, room);
        assert_eq!(
            next,
            vec![(3, vec![key])],
            "the key holder 3 gives, behind the lagging holder 2, asked 1 ms later (as on \
             2e62edfa^); asked at t + MOVE_EVERY instead: {}",
            !later.is_empty()
        );
    }

    /// F3 (present on 2e62edfa^ too, since s8c). When the pull's budget runs out at a key's
    /// first lookup in `route`, the skip loop breaks before looking for another holder, so
    /// `route` answers "no other holder" and `move_off` marks the key `stays`: it is never
    /// looked up again while parked, and waits behind the lagging (silent) holder until that
    /// one has room, although the patient's home would give it at once. One key per walk that
    /// spends the budget at an odd count; here the 16,385th key of a silent sealer's backlog.
    #[test]
    fn the_key_at_the_budgets_edge_stays_behind_a_silent_sealer() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        // One key asked once already: its first lookup gives the home (1 lookup, the parity).
        let mut first = party(1, 2, 3, start);
        first.tries = 1;
        keys.insert(id(0, 0), first);
        let count = 20_000u32;
        for i in 0..count {
            keys.insert(id(1, i), party(1, 2, 3, start));
        }
        park_all(&mut keys, start);
        // Sealer 1 silent (its window full for good), home 2 full at the first walk.
        let silent = |h: ReplicaId| h == 1;
        let mut now = start + LAGGING_AFTER;
        pull(&mut keys, now, silent, |_| 0);
        let edge = id(1, (DUE_PER_PULL / 2 - 1) as u32);
        let stuck = keys.get(&edge).is_some_and(|w| w.stays);
        // Then the home answers whatever it is asked, 4 requests a pull.
        let mut asked = HashSet::new();
        for _ in 0..80 {
            now += MOVE_EVERY;
            for (holder, txs) in pull(&mut keys, now, silent, |h| {
                if h == 2 { OPEN_PER_HOLDER } else { 0 }
            }) {
                assert_eq!(holder, 2);
                for tx in txs {
                    asked.insert(tx);
                    keys.remove(&tx);
                }
            }
        }
        assert!(
            keys.len() == 0 && !stuck,
            "{} keys the home gives still behind the silent sealer after 20 s (the key at the \
             budget's edge marked stays: {stuck}; it is still wanted: {})",
            keys.len(),
            keys.contains(&edge)
        );
    }

    /// Held. A holder that lagged, was walked, came back (its queue drained by its answers)
    /// and lags again is walked at the first pull it lags at: nothing of the earlier episode
    /// holds its keys back (the `Parked` goes with the drained queue). And one that lags again
    /// with its queue not drained is walked at the first lagging pull MOVE_EVERY after the
    /// last walk, never later.
    #[test]
    fn a_holder_lagging_again_is_walked_at_its_first_lagging_pull() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        for i in 0..3_000 {
            keys.insert(id(1, i), party(2, 3, 3, start));
        }
        park_all(&mut keys, start);
        let t = start + LAGGING_AFTER;
        // Lagging, holder 3 full: walked (looked up, parked again behind 2).
        let before = keys.walked;
        assert!(pull(&mut keys, t, |h| h == 2, |_| 0).is_empty());
        assert!(keys.walked > before);
        // Back 10 ms later and answering: 2 requests asked of it, the rest still parked.
        let back = pull(
            &mut keys,
            t + Duration::from_millis(10),
            |_| false,
            |h| {
                if h == 2 { 2 } else { 0 }
            },
        );
        assert_eq!(back.iter().map(|(h, _)| *h).collect::<Vec<_>>(), vec![2, 2]);
        for (_, txs) in back {
            for tx in txs {
                keys.remove(&tx);
            }
        }
        // Lags again 100 ms after the walk: not walked yet; 250 ms after: walked, to 3.
        let room = |h: ReplicaId| if h == 3 { OPEN_PER_HOLDER } else { 0 };
        let early = pull(&mut keys, t + Duration::from_millis(100), |h| h == 2, room);
        assert!(early.is_empty());
        let due = pull(&mut keys, t + MOVE_EVERY, |h| h == 2, room);
        assert_eq!(
            due.iter().map(|(_, txs)| txs.len()).sum::<usize>(),
            3_000 - 2 * 1_024
        );
        assert!(due.iter().all(|(h, _)| *h == 3));
        // Drained: a new backlog behind 2 lagging much later is walked at its first pull.
        for (_, txs) in due {
            for tx in txs {
                keys.remove(&tx);
            }
        }
        assert!(!keys.parked.contains_key(&2));
        let u = t + Duration::from_secs(60);
        for i in 0..2_000 {
            keys.insert(id(2, i), party(2, 3, 3, u));
        }
        park_all(&mut keys, u);
        let lag = pull(&mut keys, u + Duration::from_millis(1), |h| h == 2, room);
        assert_eq!(lag.iter().map(|(_, txs)| txs.len()).sum::<usize>(), 2_000);
    }

    /// Held. Random keys, removals, retries, lagging and rooms, with pulls 0-300 ms apart (the
    /// walks gated by MOVE_EVERY); every invariant after each step, no key asked twice in a
    /// pull, and at the end, every holder answering, every key comes: nothing lost or stuck
    /// by a `moved_at`.
    #[test]
    fn dense_pulls_with_random_lagging_lose_no_key() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        for seed in 0..3u64 {
            let mut rng = StdRng::seed_from_u64(0x5eed_1400 + seed);
            let start = Instant::now();
            let mut now = start;
            let mut keys = WantedKeys::default();
            let mut next = 0u32;
            let mut lag = [false; 4];
            for _ in 0..400 {
                match rng.gen_range(0..100) {
                    0..=19 => {
                        for _ in 0..rng.gen_range(1..800) {
                            next += 1;
                            let home = rng.gen_range(1..4);
                            let source = rng.gen_range(0..4);
                            let wanted = if rng.gen_bool(0.3) {
                                grantee(home, 3, now)
                            } else {
                                party(source, home, 3, now)
                            };
                            keys.insert(id(1, next), wanted);
                        }
                    }
                    20..=27 => {
                        let all: Vec<TxId> = keys.iter().map(|(tx, _)| *tx).collect();
                        for _ in 0..rng.gen_range(0..200) {
                            if all.is_empty() {
                                break;
                            }
                            keys.remove(&all[rng.gen_range(0..all.len())]);
                        }
                    }
                    28..=31 => {
                        let all: Vec<TxId> = keys.iter().map(|(tx, _)| *tx).collect();
                        if !all.is_empty() {
                            let tx = all[rng.gen_range(0..all.len())];
                            keys.retry_at(&tx, now + Duration::from_millis(rng.gen_range(0..900)));
                        }
                    }
                    32..=39 => lag[rng.gen_range(0..4)] = rng.gen_bool(0.5),
                    _ => {
                        now += Duration::from_millis(rng.gen_range(0..300));
                        let rooms: Vec<usize> = (0..4)
                            .map(|_| rng.gen_range(0..=OPEN_PER_HOLDER) / 2)
                            .collect();
                        let requests =
                            pull(&mut keys, now, |h| lag[h as usize], |h| rooms[h as usize]);
                        let mut seen = HashSet::new();
                        for (holder, txs) in &requests {
                            assert_ne!(*holder, super::red_team_s8::ME);
                            for tx in txs {
                                assert!(seen.insert(*tx), "one key twice in a pull");
                            }
                        }
                        for (_, txs) in requests {
                            if rng.gen_bool(0.5) {
                                for tx in txs {
                                    keys.remove(&tx);
                                }
                            }
                        }
                    }
                }
            }
            let mut ticks = 0;
            while keys.len() > 0 {
                ticks += 1;
                assert!(ticks < 2_000, "{} keys never asked again", keys.len());
                now += Duration::from_millis(250);
                for (_, txs) in pull(&mut keys, now, |_| false, |_| OPEN_PER_HOLDER) {
                    for tx in txs {
                        keys.remove(&tx);
                    }
                }
            }
        }
    }
}

/// Red team s15 (helper-116) of f7210413 (a holder's parked keys in two queues, `movable` and
/// `staying`). F1 (a walk re-stamped movable keys behind staying keys that came after them) is
/// fixed: a walk keeps a key's stamp. P1 and P2 are older, open, and ignored.
#[cfg(test)]
mod red_team_s15_queues {
    use std::collections::{HashMap, HashSet};
    use std::convert::Infallible;
    use std::time::{Duration, Instant};

    use super::*;

    use super::red_team_s8::{
        OPEN_PER_HOLDER, check_invariants, grantee, holder_for_lagging as holder_for, id, party,
    };

    use super::red_team_s14_wanted::park_all;

    /// One pull at `now` (`red_team_s14_wanted::pull`), and the two queues checked.
    fn pull(
        keys: &mut WantedKeys,
        now: Instant,
        lagging: impl Fn(ReplicaId) -> bool,
        room: impl Fn(ReplicaId) -> usize,
    ) -> Vec<(ReplicaId, Vec<TxId>)> {
        let requests = super::red_team_s14_wanted::pull(keys, now, lagging, room);
        check_queues(keys);
        requests
    }

    /// What `check_invariants` does not look at: no stamp twice in a queue; a live entry in
    /// `staying` only for a key no other holder gives (`as_grantee || stays`), a live entry in
    /// `movable` only for one that another may give; no empty `Parked` left behind.
    fn check_queues(keys: &WantedKeys) {
        for (holder, parked) in &keys.parked {
            for (name, queue) in [
                ("movable", &parked.queue.movable),
                ("staying", &parked.queue.staying),
            ] {
                // Each entry's stamp once in its queue (a walk keeps a key's stamp, so stamps
                // need not increase along a queue).
                let stamps: HashSet<u64> = queue.iter().map(|e| e.1).collect();
                assert_eq!(stamps.len(), queue.len(), "holder {holder}'s {name} queue");
                for (tx, stamp) in queue {
                    let Some(wanted) = keys.keys.get(tx) else {
                        continue;
                    };
                    if wanted.parked
                        != Some(Parking {
                            holder: *holder,
                            stamp: *stamp,
                        })
                    {
                        continue;
                    }
                    let stays = wanted.as_grantee || wanted.stays;
                    assert_eq!(
                        stays,
                        name == "staying",
                        "a live key (grantee {}, stays {}) in holder {holder}'s {name} queue",
                        wanted.as_grantee,
                        wanted.stays
                    );
                }
            }
            assert!(
                parked.live > 0 || !parked.queue.is_empty(),
                "an empty Parked left for holder {holder}"
            );
        }
        for wanted in keys.keys.values() {
            assert!(
                !wanted.stays || wanted.parked.is_some(),
                "stays on a key not parked"
            );
        }
    }

    /// F1 (regression of f7210413, low-medium: liveness, order). A walk off a lagging holder
    /// parks every movable key it looks at again, with a new stamp, at the back of `movable`;
    /// it no longer parks the staying keys again. So a key another holder may give (its sealer
    /// 2 lagging, its home 3 full) that came *before* 2,048 grantee keys of holder 2's patients
    /// is, after one walk, *behind* all of them: when holder 2 has room for one request, the
    /// 1,024 oldest grantee keys are asked and it is not. On f7210413^ the walk parked the
    /// grantee keys again too, in order, so the key came first ("asked as soon as the holder has
    /// room again, in the order it came", module doc).
    #[test]
    fn a_walk_puts_a_movable_key_behind_staying_keys_that_came_after_it() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        let first = id(0, 0);
        keys.insert(first, party(2, 3, 3, start));
        for i in 0..2_048 {
            keys.insert(id(1, i), grantee(2, 3, start));
        }
        park_all(&mut keys, start);
        let t = start + LAGGING_AFTER;
        // Holder 2 lags (backlog), 3 full: the walk finds 3 full, the key stays behind 2.
        assert!(pull(&mut keys, t, |h| h == 2, |_| 0).is_empty());
        assert!(
            keys.get(&first)
                .is_some_and(|w| !w.stays && w.parked.is_some())
        );
        // Holder 2 has room for one request (1 ms later: no walk).
        let asked = pull(
            &mut keys,
            t + Duration::from_millis(1),
            |h| h == 2,
            |h| if h == 2 { 1 } else { 0 },
        );
        assert_eq!(asked.len(), 1);
        assert_eq!(
            asked[0].1.first(),
            Some(&first),
            "the key that came first is not asked first: at {:?} of the request",
            asked[0].1.iter().position(|tx| *tx == first)
        );
    }

    /// F1, its worst case: pulls every 125 ms (one a block under load), a holder serving one
    /// request of 1,024 keys per 250 ms while 512 grantee keys of its patients come per pull (a
    /// steady backlog of ~2,048: each grantee key is asked within ~500 ms). The key it sealed
    /// for a patient of holder 3, whose window stays full (busy, or a dishonest home keeping it
    /// full on purpose), is walked every 250 ms (holder 2 lags by backlog) and so parked again
    /// behind every key parked since the last walk: never asked, for as long as the load lasts
    /// (here 30 s). On f7210413^ the walk parked the grantee keys again too, in order, and it
    /// was asked at the first pull holder 2 had room.
    #[test]
    fn a_movable_key_starves_behind_a_steady_load_of_staying_keys() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        let sealed = id(0, 0);
        keys.insert(sealed, party(2, 3, 3, start));
        let mut next = 0u32;
        for _ in 0..2_048 {
            keys.insert(id(1, next), grantee(2, 3, start));
            next += 1;
        }
        park_all(&mut keys, start);
        let mut now = start + LAGGING_AFTER;
        assert!(pull(&mut keys, now, |h| h == 2, |_| 0).is_empty());
        let mut grantees_asked = 0;
        let mut asked_at = None;
        for tick in 1..=240 {
            now += MOVE_EVERY / 2;
            let room = if tick % 2 == 0 { 1 } else { 0 };
            for (holder, txs) in pull(
                &mut keys,
                now,
                |h| h == 2,
                |h| if h == 2 { room } else { 0 },
            ) {
                assert_eq!(holder, 2);
                for tx in txs {
                    if tx == sealed {
                        asked_at.get_or_insert(tick);
                    } else {
                        grantees_asked += 1;
                    }
                    keys.remove(&tx);
                }
            }
            for _ in 0..512 {
                keys.insert(id(1, next), grantee(2, 3, now));
                next += 1;
            }
        }
        assert!(
            grantees_asked >= 100_000,
            "the grantee keys are served: {grantees_asked}"
        );
        assert!(
            asked_at.is_some(),
            "the key holder 2 sealed never asked of it in 30 s ({grantees_asked} grantee keys \
             asked meanwhile, each within ~500 ms)"
        );
    }

    /// Held. Keys parked behind a holder that is not walked (it does not lag) are asked in the
    /// order they came whatever their queue: grantee keys, keys found to stay (sealed by the
    /// patient's home, walked once), and keys another holder gives, interleaved.
    #[test]
    fn a_holder_with_room_asks_both_queues_in_the_order_the_keys_were_parked() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        for i in 0..3_000u32 {
            let wanted = match i % 3 {
                0 => grantee(2, 3, start),
                1 => party(2, 2, 3, start),
                _ => party(2, 3, 3, start),
            };
            keys.insert(id(1, i), wanted);
        }
        park_all(&mut keys, start);
        // One walk while 2 lags and 3 is full: the keys 2 alone gives go to `staying`; then the
        // rest of the queue order is the walk's.
        let t = start + LAGGING_AFTER;
        assert!(pull(&mut keys, t, |h| h == 2, |_| 0).is_empty());
        let staying = keys.parked[&2].queue.staying.len();
        assert_eq!(staying, 2_000, "grantee keys and those 2 alone gives stay");
        let mut order: Vec<u64> = Vec::new();
        let mut now = t;
        while keys.len() > 0 {
            now += Duration::from_millis(1);
            for (holder, txs) in pull(&mut keys, now, |_| false, |h| if h == 2 { 1 } else { 0 }) {
                assert_eq!(holder, 2);
                for tx in txs {
                    order.push(u32::from_be_bytes(tx[1..5].try_into().unwrap()) as u64);
                    keys.remove(&tx);
                }
            }
        }
        assert_eq!(order.len(), 3_000);
        // Each kind in id order: grantees' (never walked), those the walk kept movable, and
        // those it found to stay (moved to the back of `staying` under their stamps, so after
        // the grantees' keys there: a bounded wait, never behind keys parked later).
        for kind in 0..3 {
            let of_kind: Vec<u64> = order.iter().copied().filter(|i| i % 3 == kind).collect();
            assert!(
                of_kind.windows(2).all(|w| w[0] < w[1]),
                "keys of kind {kind} keep their order"
            );
        }
        // A walk keeps a movable key's place: it is asked before the grantee's key parked
        // right after it (red team s15 F1).
        let position: HashMap<u64, usize> =
            order.iter().enumerate().map(|(at, i)| (*i, at)).collect();
        for i in (2..2_997u64).step_by(3) {
            assert!(
                position[&i] < position[&(i + 1)],
                "key {i} asked after key {}",
                i + 1
            );
        }
    }

    /// Held. Random keys (grantees', parties' with another holder or not, lost-store ones),
    /// removals, retries, offers, lagging, rooms and `holder_for` errors mid-walk, pulls 0-300
    /// ms apart: after each step every invariant, and those of the two queues (stamp order,
    /// each live key in the right queue, `stays` only on a parked key); at the end, every
    /// holder answering, every key comes.
    #[test]
    fn random_walks_with_errors_keep_both_queues_right() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        for seed in 0..4u64 {
            let mut rng = StdRng::seed_from_u64(0x5eed_1500 + seed);
            let start = Instant::now();
            let mut now = start;
            let mut keys = WantedKeys::default();
            let mut next = 0u32;
            let mut lag = [false; 4];
            let (mut errors, mut walk_errors, mut stays_seen) = (0, 0, 0);
            for _ in 0..500 {
                match rng.gen_range(0..100) {
                    0..=19 => {
                        for _ in 0..rng.gen_range(1..1_500) {
                            next += 1;
                            let home = rng.gen_range(1..4);
                            let wanted = match rng.gen_range(0..4) {
                                0 => grantee(home, 3, now),
                                1 => party(home, home, 3, now),
                                2 => party(super::red_team_s8::ME, home, 3, now),
                                _ => party(rng.gen_range(1..4), home, 3, now),
                            };
                            keys.insert(id(1, next), wanted);
                        }
                    }
                    20..=26 => {
                        let all: Vec<TxId> = keys.iter().map(|(tx, _)| *tx).collect();
                        for _ in 0..rng.gen_range(0..300) {
                            if all.is_empty() {
                                break;
                            }
                            keys.remove(&all[rng.gen_range(0..all.len())]);
                        }
                    }
                    27..=30 => {
                        let all: Vec<TxId> = keys.iter().map(|(tx, _)| *tx).collect();
                        for _ in 0..rng.gen_range(0..50) {
                            if all.is_empty() {
                                break;
                            }
                            let tx = all[rng.gen_range(0..all.len())];
                            let holder = rng.gen_range(1..4);
                            keys.refused(&tx, holder, &[holder], now, Refusal::Fetching);
                            keys.offered(&tx, holder, now);
                        }
                    }
                    31..=33 => {
                        let all: Vec<TxId> = keys.iter().map(|(tx, _)| *tx).collect();
                        if !all.is_empty() {
                            let tx = all[rng.gen_range(0..all.len())];
                            keys.retry_at(&tx, now + Duration::from_millis(rng.gen_range(0..900)));
                        }
                    }
                    34..=43 => lag[rng.gen_range(0..4)] = rng.gen_bool(0.6),
                    _ => {
                        now += Duration::from_millis(rng.gen_range(0..300));
                        let rooms: Vec<usize> = (0..4)
                            .map(|_| rng.gen_range(0..=OPEN_PER_HOLDER) / 3)
                            .collect();
                        // Fails at the `fail`-th lookup of the pull, if any (mid-walk often).
                        let fail = rng.gen_bool(0.2).then(|| rng.gen_range(0..3_000u32));
                        let lookups = std::cell::Cell::new(0u32);
                        let mut holders = Closures {
                            room: |h: ReplicaId| rooms[h as usize],
                            lagging: |h: ReplicaId| lag[h as usize],
                            holder_for: |w: &Wanted, lagging: &dyn Fn(ReplicaId) -> bool| {
                                lookups.set(lookups.get() + 1);
                                if fail == Some(lookups.get()) {
                                    return Err("chain.db: disk I/O error");
                                }
                                Ok(Some(holder_for(w, lagging)))
                            },
                            error: std::marker::PhantomData,
                        };
                        let walking =
                            (0..4).any(|h| lag[h as usize] && keys.parked.contains_key(&h));
                        let result = keys.requests(now, &mut holders);
                        errors += result.is_err() as usize;
                        walk_errors += (result.is_err() && walking) as usize;
                        stays_seen += keys.keys.values().filter(|w| w.stays).count();
                        check_invariants(&keys);
                        check_queues(&keys);
                        if let Ok(requests) = result {
                            let mut seen = HashSet::new();
                            for (holder, txs) in &requests {
                                assert_ne!(*holder, super::red_team_s8::ME);
                                for tx in txs {
                                    assert!(seen.insert(*tx), "one key twice in a pull");
                                }
                            }
                            for (_, txs) in requests {
                                if rng.gen_bool(0.5) {
                                    for tx in txs {
                                        keys.remove(&tx);
                                    }
                                }
                            }
                            check_invariants(&keys);
                            check_queues(&keys);
                        }
                    }
                }
            }
            assert!(
                errors > 5 && walk_errors > 0 && stays_seen > 0,
                "{errors} {walk_errors} {stays_seen}"
            );
            let mut ticks = 0;
            while keys.len() > 0 {
                ticks += 1;
                assert!(ticks < 4_000, "{} keys never asked again", keys.len());
                now += Duration::from_millis(250);
                for (_, txs) in pull(&mut keys, now, |_| false, |_| OPEN_PER_HOLDER) {
                    for tx in txs {
                        keys.remove(&tx);
                    }
                }
            }
        }
    }

    /// P1 (pre-existing: the same on f7210413^, whose walk counted the whole queue; low,
    /// CPU). `move_off` walks "once round" as many entries as the movable queue holds
    /// (`waiting`), but counts only the live keys it draws (`seen`): stale entries (keys
    /// received or retried while parked; swept only past 2 × live + 1,024) make it draw the keys
    /// it parked again in this very walk, and look each up again. One live key behind 1,200
    /// stale entries is looked up ~1,200 times per walk (twice each: the holder, then the
    /// full other), every MOVE_EVERY, where the doc says one lookup per walk.
    #[test]
    #[ignore = "red team s15 P1 (pre-existing): a walk looks a key up again per stale entry"]
    fn a_walk_looks_a_key_up_once_whatever_the_stale_entries() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        for i in 0..1_201 {
            keys.insert(id(1, i), party(2, 3, 3, start));
        }
        park_all(&mut keys, start);
        for i in 1..1_201 {
            keys.remove(&id(1, i));
        }
        let lookups = std::cell::Cell::new(0);
        let mut holders = Closures {
            room: |_| 0,
            lagging: |h: ReplicaId| h == 2,
            holder_for: |w: &Wanted, lagging: &dyn Fn(ReplicaId) -> bool| {
                lookups.set(lookups.get() + 1);
                Ok::<_, Infallible>(Some(holder_for(w, lagging)))
            },
            error: std::marker::PhantomData,
        };
        assert!(
            keys.requests(start + LAGGING_AFTER, &mut holders)
                .unwrap()
                .is_empty()
        );
        check_invariants(&keys);
        assert!(
            lookups.get() <= 2,
            "{} lookups in one walk for the one key parked behind holder 2",
            lookups.get()
        );
    }

    /// P2 (pre-existing: the same on f7210413^; medium-low, liveness, a dishonest holder's
    /// gain). An offer makes `holder_for` give the offerer first whatever the tries, so once a
    /// dishonest home (3) has answered `Fetching` and offered a key its honest sealer (2) gives,
    /// and keeps its window full, the key is parked behind 3 (route's skip loop finds only 3
    /// again: "no other"), marked `stays` at 3's first walk, and (now) put in 3's `staying` queue,
    /// behind 3's backlog, which 3 drains at its own pace (here: it leaves its 4 requests
    /// unanswered, so they free up every 5 s, and a backlog of 24,000 keys of its patients).
    /// Holder 2 has room all along and is never asked: not in 60 s. Neither queue is ever
    /// looked at again for another holder while the offer waits.
    #[test]
    #[ignore = "red team s15 P2 (pre-existing): an offer from a full dishonest holder parks the key behind it, staying"]
    fn an_offer_from_a_full_holder_holds_a_key_its_sealer_would_give() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        let key = id(0, 0);
        keys.insert(key, party(2, 3, 3, start));
        for i in 0..24_000 {
            keys.insert(id(1, i), grantee(3, 3, start));
        }
        // 3 full, lagging: its patients' keys parked behind it; the key asked of 2 (tries 1).
        let t = start;
        let asked = pull(&mut keys, t, |h| h == 3, |h| if h == 2 { 1 } else { 0 });
        assert!(asked.iter().any(|(h, txs)| *h == 2 && txs.contains(&key)));
        while !keys.due.is_empty() {
            pull(&mut keys, t, |h| h == 3, |_| 0);
        }
        // 3 says `Fetching` for it (asked of it by a lookup), then offers it at once.
        keys.refused(&key, 3, &[2, 3], t, Refusal::Fetching);
        keys.offered(&key, 3, t);
        let mut now = t;
        let mut asked_of = Vec::new();
        for tick in 1..=240 {
            now += MOVE_EVERY;
            // 3's four requests time out every 5 s; 2 has room always.
            let room3 = if tick % 20 == 0 { OPEN_PER_HOLDER } else { 0 };
            for (holder, txs) in pull(
                &mut keys,
                now,
                |h| h == 3,
                |h| match h {
                    2 => OPEN_PER_HOLDER,
                    3 => room3,
                    _ => 0,
                },
            ) {
                if txs.contains(&key) {
                    asked_of.push((tick, holder));
                }
            }
        }
        assert!(
            asked_of.iter().any(|(_, h)| *h == 2),
            "the key its sealer 2 gives not asked of 2 in 60 s (asked: {asked_of:?}; stays: {})",
            keys.get(&key).is_some_and(|w| w.stays)
        );
    }
}

/// Red team s15b of 5044748e (a walk that parks a key again behind the same holder keeps its
/// stamp, `Pull::walked`, `park(.., stamp)`): can an entry be live twice, can the merge of two
/// unsorted queues starve a key, and does `check_invariants` still see what it should. F1 is
/// fixed (`check_invariants` counts live entries across both queues); F2 stays, documented.
#[cfg(test)]
mod red_team_s15b {
    use std::convert::Infallible;
    use std::time::{Duration, Instant};

    use super::*;

    use super::red_team_s8::{
        OPEN_PER_HOLDER, check_invariants, grantee, holder_for_lagging as holder_for, id, party,
    };
    use super::red_team_s14_wanted::{park_all, pull};

    /// F1 (low: the tests' oracle). `check_invariants` collects a holder's queue entries into a
    /// `HashSet` (red_team_s8, "a parked key is in its holder's queue") and counts `live` from
    /// the keys, never from the entries: a key with two live entries (the same (tx, stamp) twice,
    /// which kept stamps make possible in principle where fresh stamps made it impossible by
    /// construction) passes it, although the next draw asks that key twice in one request and
    /// leaves `live` one too high. `red_team_s15_queues::check_queues` looks for a stamp twice
    /// within one queue only, not across `movable` and `staying` (what the stays-move at
    /// `move_off` touches). The state is made by hand: no sequence found makes it (see the
    /// held list); this pins the oracle, not the code.
    #[test]
    fn check_invariants_sees_a_live_entry_twice() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        keys.insert(id(1, 0), party(2, 3, 3, start));
        park_all(&mut keys, start);
        let parking = keys.keys[&id(1, 0)].parked.unwrap();
        // The same entry in `staying` too, as a stays-move that failed to pop it would leave.
        keys.parked
            .get_mut(&2)
            .unwrap()
            .queue
            .staying
            .push_back((id(1, 0), parking.stamp));
        // What it does: the key asked twice in one request.
        let asked: Vec<TxId> = {
            let mut copy = WantedKeys::default();
            copy.insert(id(1, 0), party(2, 3, 3, start));
            park_all(&mut copy, start);
            let stamp = copy.keys[&id(1, 0)].parked.unwrap().stamp;
            copy.parked
                .get_mut(&2)
                .unwrap()
                .queue
                .staying
                .push_back((id(1, 0), stamp));
            let mut holders = Closures {
                room: |_| 1,
                lagging: |_| false,
                holder_for: |w: &Wanted, l: &dyn Fn(ReplicaId) -> bool| {
                    Ok::<_, Infallible>(Some(holder_for(w, l)))
                },
                error: std::marker::PhantomData,
            };
            copy.requests(start, &mut holders)
                .unwrap()
                .into_iter()
                .flat_map(|(_, txs)| txs)
                .collect()
        };
        assert_eq!(
            asked,
            vec![id(1, 0), id(1, 0)],
            "a live entry twice is asked twice"
        );
        let caught =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check_invariants(&keys)))
                .is_err();
        assert!(
            caught,
            "check_invariants passes a key with two live entries"
        );
    }
    /// F2 (low: order; s15 F1 again past the walk's budget, but a bounded wait). A walk looks up
    /// at most `DUE_PER_PULL` keys per pull (two lookups a key here: holder 2, then the full 3):
    /// with more movable keys than that behind a lagging holder the walk stops part way, and
    /// the keys it walked go to the back of `movable`, under their old stamps, *behind* the
    /// movable keys it did not reach, which came after them. `Queues::pop_front` compares the
    /// fronts only: the front of `movable` is now a key parked after the grantee keys, so
    /// every grantee key goes before the key that came first. Here: one key sealed by 2 for a
    /// patient of 3 (3 full), then 2,048 grantee keys of 2's patients, then 17,000 keys like
    /// the first: after one walk, holder 2 with room for one request asks 1,024 grantee keys,
    /// not the first key. The module's doc ("a key a walk kept is not put behind the keys that
    /// came after it") holds only for walks that reach the end of the queue. Bounded: under a
    /// steady load (256 such keys and 256 grantee keys a pull, pulls every 125 ms, room for one
    /// request every other pull, 17,000 movable keys behind 2) no key starved in 30 s, the
    /// longest wait 70 pulls, that of a FIFO over the backlog (explored, not kept: 20 s).
    #[test]
    #[ignore = "red team s15b F2 (low): a walk cut by its budget puts kept keys behind later ones"]
    fn a_walk_cut_by_its_budget_puts_a_kept_key_behind_keys_that_came_after_it() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        let first = id(0, 0);
        keys.insert(first, party(2, 3, 3, start));
        park_all(&mut keys, start);
        for i in 0..2_048 {
            keys.insert(id(1, i), grantee(2, 3, start));
        }
        park_all(&mut keys, start);
        for i in 0..17_000 {
            keys.insert(id(2, i), party(2, 3, 3, start));
        }
        park_all(&mut keys, start);
        let t = start + LAGGING_AFTER;
        assert!(pull(&mut keys, t, |h| h == 2, |_| 0).is_empty());
        check_invariants(&keys);
        let movable = &keys.parked[&2].queue.movable;
        let at = movable.iter().position(|e| e.0 == first).unwrap();
        let asked = pull(
            &mut keys,
            t + Duration::from_millis(1),
            |h| h == 2,
            |h| if h == 2 { 1 } else { 0 },
        );
        assert_eq!(asked.len(), 1);
        let grantees = asked[0].1.iter().filter(|tx| tx[0] == 1).count();
        assert_eq!(
            asked[0].1.first(),
            Some(&first),
            "the key that came first is not asked first: {at} movable entries ahead of it after \
             the walk, {grantees} grantee keys (parked after it) asked before it"
        );
    }
    /// Held. Within one pull, a key walked off lagging holder 1 is routed to lagging, full
    /// holder 2 (parked there under a new stamp: `Pull::walked` names holder 1), walked off 2 in
    /// the same pull and routed back to 1 (a new stamp again, not its old one behind 1: the
    /// walk's stamp is 2's), while holder 3, drawn with room first, is walked in the same pull
    /// too. Each time one live entry, `live` right; the key is asked once when 1 has room.
    #[test]
    fn a_key_walked_off_a_holder_and_back_in_one_pull_is_live_once() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        let key = id(0, 0);
        keys.insert(key, party(1, 2, 3, start));
        for i in 0..3 {
            keys.insert(id(2, i), party(2, 1, 3, start));
        }
        // More than one request behind 3: drawn with room, then walked, in the same pull.
        for i in 0..1_100 {
            keys.insert(id(3, i), party(3, 1, 3, start));
        }
        park_all(&mut keys, start);
        let old = keys.keys[&key].parked.unwrap();
        assert_eq!(old.holder, 1);
        let calls = std::cell::Cell::new(0);
        let mut holders = Closures {
            room: |h: ReplicaId| if h == 3 { 1 } else { 0 },
            lagging: |h: ReplicaId| h != 0,
            holder_for: |w: &Wanted, _: &dyn Fn(ReplicaId) -> bool| {
                if w.patient[0] == 2 && w.source == 1 {
                    // The key: 2 at the walk off 1 (twice: first, then the skip), 1 at the
                    // walk off 2 (twice).
                    calls.set(calls.get() + 1);
                    return Ok::<_, Infallible>(Some(if calls.get() <= 2 { 2 } else { 1 }));
                }
                Ok(Some(w.source as ReplicaId))
            },
            error: std::marker::PhantomData,
        };
        let asked = keys.requests(start + LAGGING_AFTER, &mut holders).unwrap();
        check_invariants(&keys);
        check_invariants(&keys);
        assert_eq!(calls.get(), 4, "walked off 1, then off 2");
        assert!(asked.iter().all(|(h, txs)| *h == 3 && !txs.contains(&key)));
        assert_eq!(asked.iter().map(|(_, txs)| txs.len()).sum::<usize>(), 1_024);
        // 3's other 76 keys walked (its sealer: parked behind 3 again, under their stamps).
        assert_eq!(keys.parked[&3].live, 76);
        let new = keys.keys[&key].parked.unwrap();
        assert_eq!(new.holder, 1);
        assert!(
            new.stamp > old.stamp,
            "a new stamp behind 1: {new:?} {old:?}"
        );
        let entries = keys.parked[&1].queue.iter().filter(|e| e.0 == key).count();
        assert_eq!(entries, 1);
        let asked = pull(
            &mut keys,
            start + LAGGING_AFTER + Duration::from_millis(1),
            |_| false,
            |h| {
                if h == 1 { OPEN_PER_HOLDER } else { 0 }
            },
        );
        let times = asked
            .iter()
            .flat_map(|(_, txs)| txs)
            .filter(|tx| **tx == key)
            .count();
        assert_eq!(times, 1);
        check_invariants(&keys);
    }
}
