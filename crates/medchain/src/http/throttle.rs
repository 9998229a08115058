//! The login throttle (issue 12, and its two red teams): wrong passwords are counted per (login
//! id, client address), so that an attacker is slowed from their address while the real person,
//! from theirs, signs in and reads their records; per (login id, device) for a device that
//! signed in before; and a doctor asking in person (the patient's password typed at the
//! doctor's desk) is not refused because of someone else's guesses.
//!
//! - An attempt is counted *before* it queues for the Argon2id hash, under one lock: a burst
//!   of concurrent guesses cannot have more judged than the limits below.
//! - **Per pair.** After [`FREE_ATTEMPTS`] wrong passwords, each further attempt of that pair
//!   waits a delay that doubles from [`FIRST_DELAY_MS`] up to [`MAX_DELAY_MS`]. A right
//!   password clears the pair; if another attempt of the pair came within [`FIRST_DELAY_MS`]
//!   before it (a burst: no person types a wrong password and then the right one that fast),
//!   the pair then waits [`FIRST_DELAY_MS`], so that a right password judged amid a burst frees
//!   no more of its guesses.
//! - **Per device** (OWASP's device cookies). A right password at login sets a device cookie
//!   naming the login id ([`super::device`]). An attempt that presents a valid one for the id
//!   it types is counted on that (login id, device) alone, under the pair's limits, and on no
//!   address or ceiling: guesses from the person's network (a neighbour on their /64, their
//!   NAT) do not lock their device out, and the device's own failures lock only that device.
//! - **Per login id, across addresses.** Attempts from clients the id never signed in from
//!   also count on the id: past [`ACCOUNT_FREE_ATTEMPTS`], each further one waits a doubling
//!   delay, from whichever address it comes, so that many addresses do not multiply guesses.
//!   The clients an id signed in from (its last [`KNOWN_PER_ACCOUNT`], each for [`KNOWN_FOR_MS`]
//!   after its last sign-in; bounded per login id only, so no one else's sign-ins push them
//!   out) are not slowed by it: the real person, where they sign in, is not locked out by
//!   others' guesses (from a new address during such an attack, they wait like everyone
//!   else). A right password takes back its own attempt only: the others' stay counted.
//! - **Per (patient, doctor) at a doctor's desk** ([`Asker::PatientAtDesk`]): in-person consent
//!   is counted on its own ceiling of [`ACCOUNT_FREE_ATTEMPTS`] per (patient, doctor), from
//!   whichever address the doctor's session calls, instead of the patient's: others' guesses
//!   do not refuse the patient in person, and one doctor's session gets no more guesses on a
//!   patient than the ceiling, however many addresses it calls from.
//! - **Bounded, a share per network.** A client network keeps at most [`MAX_TRACKED`] pairs:
//!   past it, its own pair with the fewest failures (the oldest of those) makes room, and its
//!   failures are kept on the network's count, so a flood slows only itself and pushing out
//!   one's own pair resets nothing. All networks together keep at most [`MAX_TRACKED_PAIRS`]:
//!   past it, a forgotten pair goes first, then the lightest of the network holding the most
//!   (dropped: no network is slowed for another's flood). Each other kind keeps at most
//!   [`MAX_TRACKED`] counts (the sign-in addresses excepted: bounded per login id), a
//!   forgotten one first, then the one with the fewest failures. A network's count weighs on
//!   every attempt from it as if it were the pair's (its delays apply to the whole address);
//!   it decays by one failure every [`CLIENT_DECAY_MS`] and is not renewed by attempts, and a
//!   right password takes back the wait its own attempt set on the address.
//! - Counts are forgotten [`FORGET_AFTER_MS`] after their last attempt (a network's count
//!   after its last failure kept); they are written to `app.db` in groups (at most
//!   [`FLUSH_DELAY_MS`] after a change, and when the server stops) and read back at start: a
//!   restart gives no fresh attempts. A crash loses at most the last group.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::app::{AppDb, AppError, CountKey, CountKind, LoginCount};

use super::ApiError;
use super::client::network_of;

/// Wrong passwords of one (login id, client) pair, or (login id, device), judged without
/// delay.
pub const FREE_ATTEMPTS: u32 = 5;
/// Wrong passwords of one login id, from all the clients it never signed in from (or of one
/// patient at one doctor's desk), judged without delay.
pub const ACCOUNT_FREE_ATTEMPTS: u32 = 4 * FREE_ATTEMPTS;
/// The delay after the free attempts; it doubles with each further one.
pub const FIRST_DELAY_MS: u64 = 1_000;
/// The longest delay between two judged attempts a count allows.
pub const MAX_DELAY_MS: u64 = 15 * 60 * 1000;
/// A count without an attempt for this long starts afresh.
pub const FORGET_AFTER_MS: u64 = 24 * 3600 * 1000;
/// A failure kept on a network's count (a pair of it pushed out) is forgotten after this long,
/// one at a time.
pub const CLIENT_DECAY_MS: u64 = MAX_DELAY_MS;
/// Clients remembered per login id as ones it signed in from.
pub const KNOWN_PER_ACCOUNT: usize = 8;
/// How long a client stays known to a login id after its last sign-in there.
pub const KNOWN_FOR_MS: u64 = 90 * 24 * 3600 * 1000;
/// Pairs of one client network tracked at most, and counts of each other kind (but the
/// sign-in addresses).
pub const MAX_TRACKED: usize = 10_000;
/// Pairs of all client networks tracked at most.
pub const MAX_TRACKED_PAIRS: usize = 5 * MAX_TRACKED;
/// How long after a change its group is written.
pub const FLUSH_DELAY_MS: u64 = 250;

/// The delay before the attempt that follows `failures` wrong passwords, where `free` are
/// judged without one.
pub fn delay_ms(failures: u32, free: u32) -> u64 {
    match failures.checked_sub(free) {
        None => 0,
        Some(doublings) => FIRST_DELAY_MS
            .saturating_mul(1u64 << doublings.min(32))
            .min(MAX_DELAY_MS),
    }
}

/// Who types a password, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Asker {
    /// A login or a password read: anyone, from anywhere; with the device its device cookie
    /// names, when that cookie is valid for the login id typed.
    Anyone { device: Option<String> },
    /// A patient at the desk of `doctor`, signed in here (in-person consent): counted per
    /// (patient, doctor), not on the patient's ceiling. The pair's limit (the desk's address)
    /// still holds.
    PatientAtDesk { doctor: String },
}

/// A (login id, client network) pair.
type PairKey = (String, IpAddr);
/// A (patient's login id, doctor's login id) pair; a (login id, device) pair.
type IdPair = (String, String);

/// A key of a count as the columns of its row (empty for a part a kind does not have), and
/// the group whose share of a table it takes.
trait Columns: Ord + Clone {
    type Group: Ord + Clone;
    fn group(&self) -> Self::Group;
    fn columns(&self) -> (String, String);
    fn parse(account: String, client: &str) -> Option<Self>;
}

impl Columns for PairKey {
    /// The client network.
    type Group = IpAddr;
    fn group(&self) -> IpAddr {
        self.1
    }
    fn columns(&self) -> (String, String) {
        (self.0.clone(), self.1.to_string())
    }
    fn parse(account: String, client: &str) -> Option<Self> {
        Some((account, client.parse().ok()?))
    }
}

impl Columns for IpAddr {
    type Group = ();
    fn group(&self) {}
    fn columns(&self) -> (String, String) {
        (String::new(), self.to_string())
    }
    fn parse(_: String, client: &str) -> Option<Self> {
        client.parse().ok()
    }
}

impl Columns for String {
    type Group = ();
    fn group(&self) {}
    fn columns(&self) -> (String, String) {
        (self.clone(), String::new())
    }
    fn parse(account: String, _: &str) -> Option<Self> {
        Some(account)
    }
}

impl Columns for IdPair {
    type Group = ();
    fn group(&self) {}
    fn columns(&self) -> (String, String) {
        self.clone()
    }
    fn parse(account: String, client: &str) -> Option<Self> {
        Some((account, client.to_string()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Count {
    failures: u32,
    next_ms: u64,
    last_ms: u64,
    /// Attempts counted since `burst_ms`, within [`FIRST_DELAY_MS`] of it (pairs and devices;
    /// kept in memory only: a restart takes longer than that).
    burst: u32,
    burst_ms: u64,
}

impl Count {
    fn fresh(now_ms: u64) -> Self {
        Count {
            failures: 0,
            next_ms: 0,
            last_ms: now_ms,
            burst: 0,
            burst_ms: now_ms,
        }
    }

    /// One more attempt now, as a failure until it is judged right; the next waits past `free`
    /// failures (with `more`, counted elsewhere, on top).
    fn count_attempt(&mut self, now_ms: u64, more: u32, free: u32) {
        if now_ms >= self.burst_ms.saturating_add(FIRST_DELAY_MS) {
            self.burst = 0;
            self.burst_ms = now_ms;
        }
        self.burst += 1;
        self.failures = self.failures.saturating_add(1);
        self.last_ms = now_ms;
        self.next_ms = now_ms.saturating_add(delay_ms(self.failures.saturating_add(more), free));
    }
}

/// How a table forgets a count.
#[derive(Clone, Copy)]
enum Forget {
    /// This long after its last attempt.
    After(u64),
    /// One failure every `one_per_ms` from its last change, all of them `after_ms` after it;
    /// never while its wait runs.
    Decay { one_per_ms: u64, after_ms: u64 },
}

/// Why a count was pushed out of a full table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pressure {
    /// Its group was past its share, by a count of its own.
    Own,
    /// The table was full.
    Full,
}

/// The counts of one kind, with their eviction order and what is not yet written.
struct Bounded<K: Columns> {
    kind: CountKind,
    counts: BTreeMap<K, Count>,
    /// The oldest first: forgotten counts go before any other.
    by_age: BTreeSet<(u64, K)>,
    /// Each group's counts, the fewest failures (then the oldest) first.
    groups: BTreeMap<K::Group, BTreeSet<(u32, u64, K)>>,
    /// The groups, the largest first (then the one whose first count goes first).
    by_size: BTreeSet<(Reverse<usize>, u32, u64, K::Group)>,
    /// Keys changed (or dropped) since the last write.
    dirty: BTreeSet<K>,
    /// Counts of one group at most.
    quota: usize,
    /// Counts at most.
    capacity: usize,
    forget: Forget,
}

impl<K: Columns> Bounded<K> {
    fn new(kind: CountKind, quota: usize, capacity: usize, forget: Forget) -> Self {
        Self {
            kind,
            counts: BTreeMap::new(),
            by_age: BTreeSet::new(),
            groups: BTreeMap::new(),
            by_size: BTreeSet::new(),
            dirty: BTreeSet::new(),
            quota: quota.max(1),
            capacity: capacity.max(1),
            forget,
        }
    }

    /// The failures of `count` still kept at `now_ms`.
    fn failures_at(&self, count: &Count, now_ms: u64) -> u32 {
        match self.forget {
            Forget::After(_) => count.failures,
            Forget::Decay { one_per_ms, .. } => {
                let decayed = now_ms.saturating_sub(count.last_ms) / one_per_ms.max(1);
                count
                    .failures
                    .saturating_sub(u32::try_from(decayed).unwrap_or(u32::MAX))
            }
        }
    }

    fn forgotten(&self, count: &Count, now_ms: u64) -> bool {
        match self.forget {
            Forget::After(after_ms) => now_ms >= count.last_ms.saturating_add(after_ms),
            Forget::Decay { after_ms, .. } => {
                count.next_ms <= now_ms
                    && (self.failures_at(count, now_ms) == 0
                        || now_ms >= count.last_ms.saturating_add(after_ms))
            }
        }
    }

    fn get(&self, key: &K, now_ms: u64) -> Option<Count> {
        self.counts
            .get(key)
            .copied()
            .filter(|count| !self.forgotten(count, now_ms))
    }

    /// Changes the counts of `group` with `change`, keeping `by_size` in step.
    fn regroup(&mut self, group: &K::Group, change: impl FnOnce(&mut BTreeSet<(u32, u64, K)>)) {
        let members = self.groups.entry(group.clone()).or_default();
        if let Some((failures, last_ms, _)) = members.first() {
            self.by_size
                .remove(&(Reverse(members.len()), *failures, *last_ms, group.clone()));
        }
        change(members);
        match members.first() {
            Some((failures, last_ms, _)) => {
                self.by_size
                    .insert((Reverse(members.len()), *failures, *last_ms, group.clone()));
            }
            None => {
                self.groups.remove(group);
            }
        }
    }

    /// The count of `group` that goes first, other than `keep`.
    fn first_of(&self, group: &K::Group, keep: &K) -> Option<K> {
        self.groups
            .get(group)?
            .iter()
            .map(|(_, _, key)| key)
            .find(|key| *key != keep)
            .cloned()
    }

    /// Stores `count` of `key`. When that takes its group past its share, or the table past
    /// its capacity, pushes out others (see the module's doc): returns those not yet
    /// forgotten, whose failures would be lost, and why. Never the key just counted: it would
    /// never get past one attempt.
    fn put(&mut self, key: K, count: Count, now_ms: u64) -> Vec<(K, Count, Pressure)> {
        let group = key.group();
        if let Some(old) = self.counts.insert(key.clone(), count) {
            self.by_age.remove(&(old.last_ms, key.clone()));
            self.regroup(&group, |members| {
                members.remove(&(old.failures, old.last_ms, key.clone()));
            });
        }
        self.by_age.insert((count.last_ms, key.clone()));
        self.regroup(&group, |members| {
            members.insert((count.failures, count.last_ms, key.clone()));
        });
        self.dirty.insert(key.clone());
        let mut pushed_out = Vec::new();
        while self.groups.get(&group).map_or(0, BTreeSet::len) > self.quota {
            let Some(victim) = self.first_of(&group, &key) else {
                break;
            };
            self.push_out(victim, Pressure::Own, now_ms, &mut pushed_out);
        }
        while self.counts.len() > self.capacity {
            let stale = self
                .by_age
                .first()
                .filter(|(_, stale)| {
                    self.counts
                        .get(stale)
                        .is_some_and(|count| self.forgotten(count, now_ms))
                })
                .map(|(_, stale)| stale.clone());
            let victim = stale.or_else(|| {
                self.by_size
                    .iter()
                    .find_map(|(_, _, _, largest)| self.first_of(largest, &key))
            });
            let Some(victim) = victim else {
                break;
            };
            self.push_out(victim, Pressure::Full, now_ms, &mut pushed_out);
        }
        pushed_out
    }

    fn push_out(
        &mut self,
        victim: K,
        pressure: Pressure,
        now_ms: u64,
        pushed_out: &mut Vec<(K, Count, Pressure)>,
    ) {
        if let Some(count) = self.remove(&victim)
            && !self.forgotten(&count, now_ms)
        {
            pushed_out.push((victim, count, pressure));
        }
    }

    fn remove(&mut self, key: &K) -> Option<Count> {
        let old = self.counts.remove(key)?;
        self.by_age.remove(&(old.last_ms, key.clone()));
        self.regroup(&key.group(), |members| {
            members.remove(&(old.failures, old.last_ms, key.clone()));
        });
        self.dirty.insert(key.clone());
        Some(old)
    }

    /// The right password for `key`'s attempt: it starts afresh (after [`FIRST_DELAY_MS`]
    /// amid a burst, so that the burst's later guesses are not judged).
    fn clear(&mut self, key: &K, now_ms: u64) {
        match self.get(key, now_ms) {
            Some(count)
                if count.burst > 1 && now_ms < count.burst_ms.saturating_add(FIRST_DELAY_MS) =>
            {
                let cleared = Count {
                    failures: 0,
                    next_ms: now_ms.saturating_add(FIRST_DELAY_MS),
                    last_ms: now_ms,
                    ..count
                };
                // Already tracked: nothing is pushed out.
                self.put(key.clone(), cleared, now_ms);
            }
            _ => {
                self.remove(key);
            }
        }
    }

    /// Takes back one failure from `key`'s count, if it has one.
    fn take_back(&mut self, key: &K, now_ms: u64) {
        if let Some(mut count) = self.get(key, now_ms) {
            count.failures = count.failures.saturating_sub(1);
            self.put(key.clone(), count, now_ms);
        }
    }

    /// Adds what to write to `changed` (the dirty counts) and `forgotten` (the dirty keys now
    /// gone).
    fn take_dirty(&mut self, changed: &mut Vec<LoginCount>, forgotten: &mut Vec<CountKey>) {
        for key in std::mem::take(&mut self.dirty) {
            let (account, client) = key.columns();
            match self.counts.get(&key) {
                Some(count) => changed.push(LoginCount {
                    kind: self.kind,
                    account,
                    client,
                    failures: count.failures,
                    next_ms: count.next_ms,
                    last_ms: count.last_ms,
                }),
                None => forgotten.push((self.kind, account, client)),
            }
        }
    }

    /// Marks the row `account`, `client` to be written again.
    fn mark_dirty(&mut self, account: &str, client: &str) {
        if let Some(key) = K::parse(account.to_string(), client) {
            self.dirty.insert(key);
        }
    }

    /// A count read from `app.db`: the key and count to keep, or `None` (a forgotten count is
    /// marked to be deleted).
    fn loaded(&mut self, row: LoginCount, now_ms: u64) -> Option<(K, Count)> {
        let key = K::parse(row.account, &row.client)?;
        let count = Count {
            failures: row.failures,
            next_ms: row.next_ms,
            last_ms: row.last_ms,
            ..Count::fresh(0)
        };
        if self.forgotten(&count, now_ms) {
            self.dirty.insert(key);
            return None;
        }
        Some((key, count))
    }

    /// Takes a count read from `app.db` as it was (nothing to write).
    fn keep_loaded(&mut self, row: LoginCount, now_ms: u64) {
        if let Some((key, count)) = self.loaded(row, now_ms) {
            self.put(key.clone(), count, now_ms);
            self.dirty.remove(&key);
        }
    }
}

/// Which limit refuses an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Limit {
    Pair,
    Client,
    Account,
    Desk,
    Device,
}

impl Limit {
    fn message(self, retry_after_s: u64) -> String {
        let what = match self {
            Limit::Pair => "for this account from your address",
            Limit::Client => "from your address",
            Limit::Account => "for this account",
            Limit::Desk => "for this patient at your desk",
            Limit::Device => "for this account from this device",
        };
        format!("Too many wrong passwords {what}; try again in {retry_after_s} s")
    }
}

/// The count an attempt is judged on first: its pair's, or its device's.
#[derive(Clone, Debug)]
enum Own {
    Pair(PairKey),
    Device(IdPair),
}

/// The ceiling an attempt is also counted on.
#[derive(Clone, Debug)]
enum Ceiling {
    /// The login id's, from a client it does not know.
    Account(String),
    /// The (patient, doctor) desk's.
    Desk(IdPair),
}

impl Ceiling {
    fn limit(&self) -> Limit {
        match self {
            Ceiling::Account(_) => Limit::Account,
            Ceiling::Desk(_) => Limit::Desk,
        }
    }
}

/// An attempt counted before its password is judged: what the throttle is told after.
pub(crate) struct Attempt {
    account: String,
    /// The client as it came (for the logs), and its network.
    client: IpAddr,
    network: IpAddr,
    own: Own,
    ceiling: Option<Ceiling>,
    /// The wait of the client's network before this attempt, and the one it set: a right
    /// password takes it back (if no other attempt set another since).
    client_wait: Option<(u64, u64)>,
}

/// Every count in memory.
struct Tables {
    pairs: Bounded<PairKey>,
    /// Failures of pairs pushed out by their own network's, per client network.
    clients: Bounded<IpAddr>,
    /// Failures per login id from clients it does not know.
    accounts: Bounded<String>,
    /// Failures per (patient, doctor) at the doctor's desk.
    desks: Bounded<IdPair>,
    /// Failures per (login id, device).
    devices: Bounded<IdPair>,
    /// The clients each login id signed in from.
    known: Bounded<PairKey>,
}

impl Tables {
    /// Tables of at most `tracked` pairs per network and counts of each other kind (and five
    /// times that many pairs in all).
    fn new(tracked: usize) -> Self {
        let all = usize::MAX;
        let after = Forget::After(FORGET_AFTER_MS);
        Self {
            pairs: Bounded::new(
                CountKind::Pair,
                tracked,
                tracked.saturating_mul(MAX_TRACKED_PAIRS / MAX_TRACKED),
                after,
            ),
            clients: Bounded::new(
                CountKind::Client,
                all,
                tracked,
                Forget::Decay {
                    one_per_ms: CLIENT_DECAY_MS,
                    after_ms: FORGET_AFTER_MS,
                },
            ),
            accounts: Bounded::new(CountKind::Account, all, tracked, after),
            desks: Bounded::new(CountKind::Desk, all, tracked, after),
            devices: Bounded::new(CountKind::Device, all, tracked, after),
            // Only a right password adds one, at most KNOWN_PER_ACCOUNT per login id.
            known: Bounded::new(CountKind::Known, all, all, Forget::After(KNOWN_FOR_MS)),
        }
    }

    /// Stores a pair's count; the failures of pairs of its network that it pushes out go to
    /// the network's count (those of other networks, pushed out of a full table, are dropped:
    /// the module's doc).
    fn put_pair(&mut self, pair: PairKey, count: Count, now_ms: u64) {
        for ((_, network), pushed, pressure) in self.pairs.put(pair, count, now_ms) {
            if pushed.failures == 0 || pressure != Pressure::Own {
                continue;
            }
            let mut client = self
                .clients
                .get(&network, now_ms)
                .unwrap_or_else(|| Count::fresh(now_ms));
            client.failures = self
                .clients
                .failures_at(&client, now_ms)
                .saturating_add(pushed.failures);
            client.next_ms = client.next_ms.max(pushed.next_ms);
            client.last_ms = now_ms;
            tracing::debug!(%network, failures = client.failures, "login failures kept per address");
            self.clients.put(network, client, now_ms);
        }
    }

    fn ceiling(&self, ceiling: &Ceiling, now_ms: u64) -> Count {
        match ceiling {
            Ceiling::Account(id) => self.accounts.get(id, now_ms),
            Ceiling::Desk(desk) => self.desks.get(desk, now_ms),
        }
        .unwrap_or_else(|| Count::fresh(now_ms))
    }

    fn put_ceiling(&mut self, ceiling: &Ceiling, count: Count, now_ms: u64) {
        // A ceiling pushed out is lost: the fewest failures go first.
        match ceiling {
            Ceiling::Account(id) => {
                self.accounts.put(id.clone(), count, now_ms);
            }
            Ceiling::Desk(desk) => {
                self.desks.put(desk.clone(), count, now_ms);
            }
        }
    }

    /// Counts an attempt of `account` from `client` by `asker` now, or says how long it must
    /// wait, and for which limit.
    fn attempt(
        &mut self,
        account: &str,
        client: IpAddr,
        asker: &Asker,
        now_ms: u64,
    ) -> Result<Attempt, (u64, Limit)> {
        let network = network_of(client);
        if let Asker::Anyone {
            device: Some(device),
        } = asker
        {
            let key = (account.to_string(), device.clone());
            let mut count = self
                .devices
                .get(&key, now_ms)
                .unwrap_or_else(|| Count::fresh(now_ms));
            if count.next_ms > now_ms {
                return Err((count.next_ms - now_ms, Limit::Device));
            }
            count.count_attempt(now_ms, 0, FREE_ATTEMPTS);
            self.devices.put(key.clone(), count, now_ms);
            return Ok(Attempt {
                account: account.to_string(),
                client,
                network,
                own: Own::Device(key),
                ceiling: None,
                client_wait: None,
            });
        }
        let pair_key = (account.to_string(), network);
        let mut pair = self
            .pairs
            .get(&pair_key, now_ms)
            .unwrap_or_else(|| Count::fresh(now_ms));
        let from_client = self.clients.get(&network, now_ms);
        let ceiling = match asker {
            Asker::Anyone { .. } => self
                .known
                .get(&pair_key, now_ms)
                .is_none()
                .then(|| Ceiling::Account(account.to_string())),
            Asker::PatientAtDesk { doctor } => {
                Some(Ceiling::Desk((account.to_string(), doctor.clone())))
            }
        };
        let ceiling_count = ceiling.as_ref().map(|c| self.ceiling(c, now_ms));
        let waits = [
            (Some(pair), Limit::Pair),
            (from_client, Limit::Client),
            (
                ceiling_count,
                ceiling.as_ref().map_or(Limit::Account, Ceiling::limit),
            ),
        ];
        if let Some((next_ms, limit)) = waits
            .into_iter()
            .filter_map(|(count, limit)| Some((count?.next_ms, limit)))
            .filter(|(next_ms, _)| *next_ms > now_ms)
            .max_by_key(|(next_ms, _)| *next_ms)
        {
            return Err((next_ms - now_ms, limit));
        }
        let of_client = from_client.map_or(0, |c| self.clients.failures_at(&c, now_ms));
        pair.count_attempt(now_ms, of_client, FREE_ATTEMPTS);
        let client_wait = from_client.map(|mut count| {
            // The address waits as this pair does, whichever id it tries next.
            let before = count.next_ms;
            count.next_ms = pair.next_ms;
            self.clients.put(network, count, now_ms);
            (before, pair.next_ms)
        });
        self.put_pair(pair_key.clone(), pair, now_ms);
        if let (Some(ceiling), Some(mut count)) = (&ceiling, ceiling_count) {
            count.count_attempt(now_ms, 0, ACCOUNT_FREE_ATTEMPTS);
            self.put_ceiling(ceiling, count, now_ms);
        }
        Ok(Attempt {
            account: account.to_string(),
            client,
            network,
            own: Own::Pair(pair_key),
            ceiling,
            client_wait,
        })
    }

    /// The right password for `attempt`: its pair or device starts afresh, its ceiling and its
    /// address take back what it added, and the client becomes known to the login id.
    fn succeeded(&mut self, attempt: &Attempt, now_ms: u64) {
        match &attempt.own {
            Own::Pair(pair) => self.pairs.clear(pair, now_ms),
            Own::Device(device) => self.devices.clear(device, now_ms),
        }
        match &attempt.ceiling {
            Some(Ceiling::Account(id)) => self.accounts.take_back(id, now_ms),
            Some(Ceiling::Desk(desk)) => self.desks.take_back(desk, now_ms),
            None => {}
        }
        if let Some((before, set)) = attempt.client_wait
            && let Some(mut count) = self.clients.get(&attempt.network, now_ms)
            && count.next_ms == set
        {
            count.next_ms = before;
            self.clients.put(attempt.network, count, now_ms);
        }
        let account = &attempt.account;
        self.known.put(
            (account.clone(), attempt.network),
            Count::fresh(now_ms),
            now_ms,
        );
        let mut known: Vec<(u64, IpAddr)> = self
            .known
            .counts
            .range(
                (account.clone(), IpAddr::V4(Ipv4Addr::UNSPECIFIED))
                    ..=(account.clone(), IpAddr::V6(Ipv6Addr::from(u128::MAX))),
            )
            .map(|((_, network), count)| (count.last_ms, *network))
            .collect();
        if known.len() > KNOWN_PER_ACCOUNT {
            known.sort_unstable();
            for (_, network) in &known[..known.len() - KNOWN_PER_ACCOUNT] {
                self.known.remove(&(account.clone(), *network));
            }
        }
    }

    /// Every count to write, and every key to delete.
    fn take_dirty(&mut self) -> (Vec<LoginCount>, Vec<CountKey>) {
        let mut changed = Vec::new();
        let mut forgotten = Vec::new();
        self.pairs.take_dirty(&mut changed, &mut forgotten);
        self.clients.take_dirty(&mut changed, &mut forgotten);
        self.accounts.take_dirty(&mut changed, &mut forgotten);
        self.desks.take_dirty(&mut changed, &mut forgotten);
        self.devices.take_dirty(&mut changed, &mut forgotten);
        self.known.take_dirty(&mut changed, &mut forgotten);
        (changed, forgotten)
    }

    fn mark_dirty(&mut self, kind: CountKind, account: &str, client: &str) {
        match kind {
            CountKind::Pair => self.pairs.mark_dirty(account, client),
            CountKind::Client => self.clients.mark_dirty(account, client),
            CountKind::Account => self.accounts.mark_dirty(account, client),
            CountKind::Known => self.known.mark_dirty(account, client),
            CountKind::Desk => self.desks.mark_dirty(account, client),
            CountKind::Device => self.devices.mark_dirty(account, client),
        }
    }

    /// Takes a count read from `app.db` (forgotten ones are marked to be deleted).
    fn load(&mut self, row: LoginCount, now_ms: u64) {
        match row.kind {
            CountKind::Pair => {
                if let Some((key, count)) = self.pairs.loaded(row, now_ms) {
                    self.put_pair(key.clone(), count, now_ms);
                    self.pairs.dirty.remove(&key);
                }
            }
            CountKind::Client => self.clients.keep_loaded(row, now_ms),
            CountKind::Account => self.accounts.keep_loaded(row, now_ms),
            CountKind::Known => self.known.keep_loaded(row, now_ms),
            CountKind::Desk => self.desks.keep_loaded(row, now_ms),
            CountKind::Device => self.devices.keep_loaded(row, now_ms),
        }
    }
}

/// The throttle of one hospital's logins and password reads.
pub(crate) struct LoginThrottle {
    tables: Mutex<Tables>,
    app: Arc<AppDb>,
    flush_scheduled: AtomicBool,
    /// Held while a group is taken and written, so that groups land in order.
    flushing: Mutex<()>,
}

impl LoginThrottle {
    /// The throttle of `app`, with the counts it holds (those not forgotten by `now_ms`).
    pub(crate) fn open(app: Arc<AppDb>, now_ms: u64) -> Self {
        Self::open_with(app, now_ms, MAX_TRACKED)
    }

    fn open_with(app: Arc<AppDb>, now_ms: u64, tracked: usize) -> Self {
        let mut tables = Tables::new(tracked);
        match app.login_counts() {
            Ok(rows) => {
                for row in rows {
                    tables.load(row, now_ms);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the login throttle's counts"),
        }
        Self {
            tables: Mutex::new(tables),
            app,
            flush_scheduled: AtomicBool::new(false),
            flushing: Mutex::new(()),
        }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an attempt of `account` from `client` by `asker` before its password is judged,
    /// or refuses it (429) while one of its limits must wait.
    pub(crate) fn attempt(
        self: &Arc<Self>,
        account: &str,
        client: IpAddr,
        asker: &Asker,
        now_ms: u64,
    ) -> Result<Attempt, ApiError> {
        let counted = self.tables().attempt(account, client, asker, now_ms);
        match counted {
            Ok(attempt) => {
                self.schedule_flush();
                Ok(attempt)
            }
            Err((wait_ms, limit)) => {
                tracing::debug!(account = ?account, %client, wait_ms, ?limit, "login attempt refused");
                let retry_after_s = wait_ms.div_ceil(1000).max(1);
                Err(ApiError::RateLimited {
                    message: limit.message(retry_after_s),
                    retry_after_s,
                })
            }
        }
    }

    /// `attempt` was a wrong password: logs it when a limit now slows it (a lockout), with the
    /// client's address.
    pub(crate) fn failed(&self, attempt: &Attempt, now_ms: u64) {
        let tables = self.tables();
        let slowed = |what: &str, failures: u32, next_ms: u64| {
            tracing::warn!(
                account = ?attempt.account,
                client = %attempt.client,
                failures,
                wait_ms = next_ms.saturating_sub(now_ms),
                "login slowed: {what}"
            );
        };
        match &attempt.own {
            Own::Pair(pair) => {
                let of_client = tables
                    .clients
                    .get(&attempt.network, now_ms)
                    .map_or(0, |c| tables.clients.failures_at(&c, now_ms));
                if let Some(count) = tables.pairs.get(pair, now_ms)
                    && count.failures.saturating_add(of_client) >= FREE_ATTEMPTS
                {
                    slowed(
                        "repeated wrong passwords from this address",
                        count.failures.saturating_add(of_client),
                        count.next_ms,
                    );
                }
            }
            Own::Device(device) => {
                if let Some(count) = tables.devices.get(device, now_ms)
                    && count.failures >= FREE_ATTEMPTS
                {
                    slowed(
                        "repeated wrong passwords from this device",
                        count.failures,
                        count.next_ms,
                    );
                }
            }
        }
        let ceiling = match &attempt.ceiling {
            Some(Ceiling::Account(id)) => tables
                .accounts
                .get(id, now_ms)
                .map(|c| ("for this account: wrong passwords from many addresses", c)),
            Some(Ceiling::Desk(desk)) => tables
                .desks
                .get(desk, now_ms)
                .map(|c| ("for this patient at this doctor's desk", c)),
            None => None,
        };
        if let Some((what, count)) = ceiling
            && count.failures >= ACCOUNT_FREE_ATTEMPTS
        {
            slowed(what, count.failures, count.next_ms);
        }
    }

    /// `attempt` had the right password.
    pub(crate) fn succeeded(self: &Arc<Self>, attempt: &Attempt, now_ms: u64) {
        self.tables().succeeded(attempt, now_ms);
        self.schedule_flush();
    }

    /// Writes the changed counts within [`FLUSH_DELAY_MS`], grouped with the changes made
    /// meanwhile (inline when there is no runtime to wait on).
    fn schedule_flush(self: &Arc<Self>) {
        if self.flush_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.flush_scheduled.store(false, Ordering::Release);
            self.flush_logged();
            return;
        };
        let this = self.clone();
        runtime.spawn(async move {
            tokio::time::sleep(Duration::from_millis(FLUSH_DELAY_MS)).await;
            this.flush_scheduled.store(false, Ordering::Release);
            let _ = tokio::task::spawn_blocking(move || this.flush_logged()).await;
        });
    }

    fn flush_logged(&self) {
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "cannot write the login throttle's counts");
        }
    }

    /// Writes every change not yet written (blocking: SQLite).
    pub(crate) fn flush(&self) -> Result<(), AppError> {
        let _order = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let (changed, forgotten) = self.tables().take_dirty();
        if changed.is_empty() && forgotten.is_empty() {
            return Ok(());
        }
        let written = self.app.save_login_counts(&changed, &forgotten);
        if written.is_err() {
            // Written next time.
            let mut tables = self.tables();
            for row in &changed {
                tables.mark_dirty(row.kind, &row.account, &row.client);
            }
            for (kind, account, client) in &forgotten {
                tables.mark_dirty(*kind, account, client);
            }
        }
        written
    }

    #[cfg(test)]
    fn tracked(&self, account: &str, client: IpAddr) -> bool {
        self.tables()
            .pairs
            .counts
            .contains_key(&(account.into(), network_of(client)))
    }

    #[cfg(test)]
    fn failures(&self, account: &str, client: IpAddr, now_ms: u64) -> u32 {
        let pair = (account.to_string(), network_of(client));
        self.tables()
            .pairs
            .get(&pair, now_ms)
            .map_or(0, |c| c.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn addr(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// The `i`th address of 10.0.0.0/8: one network each.
    fn nth(i: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32))
    }

    fn throttle(dir: &std::path::Path) -> Arc<LoginThrottle> {
        throttle_of(dir, MAX_TRACKED)
    }

    /// A throttle of `tracked` pairs per network (and counts of each other kind).
    fn throttle_of(dir: &std::path::Path, tracked: usize) -> Arc<LoginThrottle> {
        let app = Arc::new(crate::app::test_db(&dir.join("app.db")));
        Arc::new(LoginThrottle::open_with(app, T0, tracked))
    }

    impl LoginThrottle {
        /// An attempt from anyone without a device cookie (a login).
        fn try_login(
            self: &Arc<Self>,
            account: &str,
            client: IpAddr,
            now_ms: u64,
        ) -> Result<Attempt, ApiError> {
            self.attempt(account, client, &Asker::Anyone { device: None }, now_ms)
        }

        /// An attempt from `device`.
        fn try_device(
            self: &Arc<Self>,
            account: &str,
            device: &str,
            client: IpAddr,
            now_ms: u64,
        ) -> Result<Attempt, ApiError> {
            let asker = Asker::Anyone {
                device: Some(device.into()),
            };
            self.attempt(account, client, &asker, now_ms)
        }

        /// An attempt for `patient` at `doctor`'s desk.
        fn try_desk(
            self: &Arc<Self>,
            patient: &str,
            doctor: &str,
            client: IpAddr,
            now_ms: u64,
        ) -> Result<Attempt, ApiError> {
            let asker = Asker::PatientAtDesk {
                doctor: doctor.into(),
            };
            self.attempt(patient, client, &asker, now_ms)
        }

        /// A right password from anyone, counted and judged.
        fn signs_in(self: &Arc<Self>, account: &str, client: IpAddr, now_ms: u64) {
            let attempt = self.try_login(account, client, now_ms).unwrap();
            self.succeeded(&attempt, now_ms);
        }

        /// The failures kept on `client`'s network at `now_ms`.
        fn of_client(&self, client: IpAddr, now_ms: u64) -> u32 {
            let tables = self.tables();
            tables
                .clients
                .get(&network_of(client), now_ms)
                .map_or(0, |c| tables.clients.failures_at(&c, now_ms))
        }
    }

    fn refused_for(refused: Result<Attempt, ApiError>, what: &str) {
        match refused {
            Err(ApiError::RateLimited { message, .. }) => {
                assert!(message.contains(what), "{message}");
            }
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("judged, where {what:?} should refuse it"),
        }
    }

    #[test]
    fn the_delay_starts_after_the_free_attempts_doubles_and_is_capped() {
        assert_eq!(delay_ms(FREE_ATTEMPTS - 1, FREE_ATTEMPTS), 0);
        assert_eq!(delay_ms(FREE_ATTEMPTS, FREE_ATTEMPTS), FIRST_DELAY_MS);
        assert_eq!(
            delay_ms(FREE_ATTEMPTS + 3, FREE_ATTEMPTS),
            8 * FIRST_DELAY_MS
        );
        assert_eq!(delay_ms(FREE_ATTEMPTS + 40, FREE_ATTEMPTS), MAX_DELAY_MS);
        assert_eq!(delay_ms(u32::MAX, FREE_ATTEMPTS), MAX_DELAY_MS);
        assert_eq!(
            delay_ms(ACCOUNT_FREE_ATTEMPTS, ACCOUNT_FREE_ATTEMPTS),
            FIRST_DELAY_MS
        );
    }

    #[test]
    fn attempts_are_counted_before_judging_and_slowed_per_address() {
        let dir = tempfile::tempdir().unwrap();
        let t = throttle(dir.path());
        let attacker = addr("192.0.2.66");
        for _ in 0..FREE_ATTEMPTS {
            t.try_login("p001", attacker, T0).unwrap();
        }
        // Counted before any answer: the next one at the same instant waits.
        let refused = t.try_login("p001", attacker, T0).err().unwrap();
        assert!(matches!(
            refused,
            ApiError::RateLimited {
                retry_after_s: 1,
                ..
            }
        ));
        // Another address, and another account from the attacker's, are not slowed.
        t.try_login("p001", addr("198.51.100.1"), T0).unwrap();
        t.try_login("p002", attacker, T0).unwrap();
        // After the delay, one more; then twice the delay.
        t.try_login("p001", attacker, T0 + FIRST_DELAY_MS).unwrap();
        assert!(
            t.try_login("p001", attacker, T0 + FIRST_DELAY_MS + 1)
                .is_err()
        );
        // The right password, alone in its second, clears the pair.
        let now = T0 + 3 * FIRST_DELAY_MS;
        let attempt = t.try_login("p001", attacker, now).unwrap();
        t.succeeded(&attempt, now);
        assert!(!t.tracked("p001", attacker));
        // Amid a burst, it clears the count but the pair waits the first delay: the burst's
        // later guesses are not judged.
        t.try_login("p001", attacker, now).unwrap();
        t.signs_in("p001", attacker, now);
        assert_eq!(t.failures("p001", attacker, now), 0);
        assert!(t.try_login("p001", attacker, now).is_err());
        for _ in 0..FREE_ATTEMPTS {
            t.try_login("p001", attacker, now + FIRST_DELAY_MS).unwrap();
        }
        // A day later, a pair starts afresh.
        for _ in 0..FREE_ATTEMPTS + 5 {
            let _ = t.try_login("p002", attacker, T0);
        }
        assert!(t.try_login("p002", attacker, T0 + 1).is_err());
        t.try_login("p002", attacker, T0 + FORGET_AFTER_MS + 1)
            .unwrap();
        assert_eq!(t.failures("p002", attacker, T0 + FORGET_AFTER_MS + 1), 1);
    }

    #[test]
    fn an_ipv6_client_is_keyed_by_its_64_and_a_mapped_v4_as_v4() {
        let dir = tempfile::tempdir().unwrap();
        let t = throttle(dir.path());
        for i in 0..FREE_ATTEMPTS {
            t.try_login("p001", addr(&format!("2001:db8:1:2::{i}")), T0)
                .unwrap();
        }
        assert!(
            t.try_login("p001", addr("2001:db8:1:2:ffff::9"), T0)
                .is_err()
        );
        t.try_login("p001", addr("2001:db8:1:3::1"), T0).unwrap();
        for _ in 0..FREE_ATTEMPTS {
            t.try_login("p002", addr("192.0.2.1"), T0).unwrap();
        }
        assert!(t.try_login("p002", addr("::ffff:192.0.2.1"), T0).is_err());
    }

    /// The bug of issue 12: 10,000 made-up ids cleared the whole table, and with it every
    /// account's count. Then its red team: made-up ids pushed out the attacker's own pair,
    /// kept below the free attempts. Now a full table pushes out the lightest pairs of the
    /// network holding the most, and a pair pushed out by its own network's flood still
    /// weighs on its address.
    #[tokio::test]
    async fn a_flood_of_made_up_ids_resets_no_count() {
        let dir = tempfile::tempdir().unwrap();
        let t = throttle_of(dir.path(), 100);
        let all = 100 * (MAX_TRACKED_PAIRS / MAX_TRACKED);
        let attacker = addr("192.0.2.66");
        for _ in 0..FREE_ATTEMPTS - 1 {
            t.try_login("p001", attacker, T0).unwrap();
        }
        // From as many networks as the table holds pairs, and more: one pair each.
        let flood = all + 50;
        for i in 0..flood {
            t.try_login(&format!("fake{i}"), nth(i), T0 + 1 + i as u64)
                .unwrap();
        }
        let later = T0 + 1 + flood as u64;
        assert_eq!(t.failures("p001", attacker, later), FREE_ATTEMPTS - 1);
        assert_eq!(t.tables().pairs.counts.len(), all);
        // The oldest made-up ids went first; the newest are there; no address was charged.
        assert!(!t.tracked("fake0", nth(0)));
        assert!(t.tracked(&format!("fake{}", flood - 1), nth(flood - 1)));
        assert!(t.tables().clients.counts.is_empty());
        // The attacker's one free attempt is left, then it waits.
        t.try_login("p001", attacker, later).unwrap();
        assert!(t.try_login("p001", attacker, later).is_err());

        // When the attacker's own pair is pushed out by its own flood (every other pair of
        // its has more failures), its failures stay with its address: a fresh pair of it is
        // slowed at once, for any id; another address is not.
        let other = tempfile::tempdir().unwrap();
        let small = throttle_of(other.path(), 2);
        for _ in 0..FREE_ATTEMPTS - 1 {
            small.try_login("p001", attacker, T0).unwrap();
        }
        for _ in 0..FREE_ATTEMPTS {
            small.try_login("a", attacker, T0 + 1).unwrap();
        }
        small.try_login("b", attacker, T0 + 1).unwrap();
        assert!(!small.tracked("p001", attacker));
        assert_eq!(small.of_client(attacker, T0 + 1), FREE_ATTEMPTS - 1);
        let now = T0 + 2;
        small.try_login("p001", attacker, now).unwrap();
        refused_for(small.try_login("p001", attacker, now), "from your address");
        refused_for(small.try_login("p002", attacker, now), "from your address");
        let waited = now + FIRST_DELAY_MS;
        small.try_login("p002", attacker, waited).unwrap();
        assert!(small.try_login("p003", attacker, waited).is_err());
        small
            .try_login("p001", addr("203.0.113.1"), waited)
            .unwrap();
    }

    /// Issue 12's second red team: a flood from one address pushed a shared address's typos
    /// (each alone harmless) into that address's count, which then slowed every sign-in
    /// there. Now a network's flood pushes out only its own pairs, and slows only itself.
    #[test]
    fn a_flood_pushes_out_only_its_own_networks_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let t = throttle_of(dir.path(), 50);
        let hospital = addr("192.0.2.50");
        for i in 0..15 {
            t.try_login(&format!("typo{i}"), hospital, T0).unwrap();
        }
        let flooder = addr("203.0.113.66");
        let mut judged = 0;
        for i in 0..200 {
            judged += usize::from(t.try_login(&format!("fake{i}"), flooder, T0 + 1).is_ok());
        }
        // Its own share, then what it pushed out of it slows it.
        assert!((50..60).contains(&judged), "{judged}");
        assert!(t.of_client(flooder, T0 + 1) >= FREE_ATTEMPTS);
        for i in 0..15 {
            assert!(t.tracked(&format!("typo{i}"), hospital));
        }
        assert_eq!(t.of_client(hospital, T0 + 1), 0);
        for id in ["p001", "p002", "d001"] {
            t.signs_in(id, hospital, T0 + 2);
        }
    }

    /// A network's count (failures of its pairs its own flood pushed out) decays, one failure
    /// every [`CLIENT_DECAY_MS`], whatever attempts come meanwhile; and a right password from
    /// it takes back the wait its attempt set on the address, so that the next person there is
    /// not refused.
    #[test]
    fn an_address_count_decays_and_a_right_password_takes_back_its_wait() {
        let dir = tempfile::tempdir().unwrap();
        let t = throttle_of(dir.path(), 2);
        let nat = addr("192.0.2.7");
        let kept = 6;
        let count = Count {
            failures: kept,
            ..Count::fresh(T0)
        };
        t.tables().clients.put(nat, count, T0);
        // Each attempt from the address now waits (6 kept + its own past the free 5), but a
        // right password takes back the wait it set: the next sign-in is judged at once.
        let now = T0 + FIRST_DELAY_MS;
        t.signs_in("p001", nat, now);
        t.signs_in("p002", nat, now);
        // A wrong one holds the address.
        t.try_login("p003", nat, now).unwrap();
        refused_for(t.try_login("p001", nat, now), "from your address");
        // Attempts do not renew the count: it decays from its last failure kept.
        for step in 1..=kept {
            let at = T0 + u64::from(step) * CLIENT_DECAY_MS;
            assert_eq!(t.of_client(nat, at), kept - step);
            if step < kept {
                t.signs_in("p001", nat, at);
            }
        }
        let decayed = T0 + u64::from(kept) * CLIENT_DECAY_MS;
        assert!(t.tables().clients.get(&nat, decayed).is_none());
    }

    /// Many addresses, one id: past the ceiling every address not known to the id waits; the
    /// address the real person signed in from does not, however many other sign-ins come.
    #[test]
    fn an_account_is_slowed_across_addresses_except_where_its_person_signs_in() {
        let dir = tempfile::tempdir().unwrap();
        let t = throttle_of(dir.path(), 10);
        let home = addr("198.51.100.10");
        t.signs_in("p001", home, T0);
        // Others sign in, far more than any table's share: the home stays known.
        for i in 0..100 {
            t.signs_in(&format!("u{}", i / 4), nth(i), T0 + 1);
        }
        let mut judged = 0;
        for host in 0..40u32 {
            let from = IpAddr::V4(Ipv4Addr::from(0xcb00_7100 + host));
            for _ in 0..FREE_ATTEMPTS {
                if t.try_login("p001", from, T0).is_ok() {
                    judged += 1;
                }
            }
        }
        assert_eq!(judged, ACCOUNT_FREE_ATTEMPTS);
        refused_for(
            t.try_login("p001", addr("192.0.2.200"), T0),
            "for this account;",
        );
        // Other ids are not slowed by it.
        t.try_login("p002", addr("192.0.2.200"), T0).unwrap();
        // The real person from home is judged.
        t.signs_in("p001", home, T0);
        // The delay doubles with each attempt past the ceiling.
        let later = T0 + FIRST_DELAY_MS;
        t.try_login("p001", addr("192.0.2.201"), later).unwrap();
        assert!(
            t.try_login("p001", addr("192.0.2.202"), later + FIRST_DELAY_MS)
                .is_err()
        );
        t.try_login("p001", addr("192.0.2.202"), later + 2 * FIRST_DELAY_MS)
            .unwrap();
        // A right password from a new address takes back its own attempt, not the others'.
        let count = |t: &Arc<LoginThrottle>| {
            t.tables()
                .accounts
                .get(&"p001".to_string(), later)
                .unwrap()
                .failures
        };
        let before = count(&t);
        let much_later = later + MAX_DELAY_MS;
        t.signs_in("p001", addr("192.0.2.203"), much_later);
        assert_eq!(count(&t), before);
        // Only the last few addresses of one id stay known.
        for host in 0..KNOWN_PER_ACCOUNT as u32 + 2 {
            t.signs_in(
                "p003",
                IpAddr::V4(Ipv4Addr::from(0xc000_0200 + host)),
                T0 + u64::from(host),
            );
        }
        let known = |network: &str| {
            t.tables()
                .known
                .get(&("p003".into(), addr(network)), T0)
                .is_some()
        };
        assert!(!known("192.0.2.0"));
        assert!(known("192.0.2.2"));
    }

    /// In-person consent: the patient at a doctor's desk is counted per (patient, doctor),
    /// under the ceiling, from whichever address the doctor's session calls; not refused by
    /// others' guesses on the patient, nor by another doctor's.
    #[test]
    fn a_doctors_desk_has_its_own_ceiling_per_patient_from_every_address() {
        let dir = tempfile::tempdir().unwrap();
        let t = throttle(dir.path());
        let mut judged = 0;
        for host in 0..40 {
            for _ in 0..FREE_ATTEMPTS {
                judged += usize::from(t.try_desk("p001", "d001", nth(host), T0).is_ok());
            }
        }
        assert_eq!(judged, ACCOUNT_FREE_ATTEMPTS as usize);
        refused_for(
            t.try_desk("p001", "d001", addr("192.0.2.9"), T0),
            "at your desk",
        );
        // Another patient at that desk, and the patient at another doctor's, are judged.
        t.try_desk("p002", "d001", addr("192.0.2.9"), T0).unwrap();
        t.try_desk("p001", "d002", addr("192.0.2.9"), T0).unwrap();
        // Past the patient's own ceiling (guesses from everywhere), the desk still judges;
        // and the desk's guesses did not count on the patient's ceiling.
        assert!(t.tables().accounts.get(&"p001".into(), T0).is_none());
        for host in 100..140 {
            for _ in 0..FREE_ATTEMPTS {
                let _ = t.try_login("p001", nth(host), T0);
            }
        }
        refused_for(t.try_login("p001", nth(200), T0), "for this account;");
        let desk = addr("198.51.100.20");
        let attempt = t.try_desk("p001", "d003", desk, T0).unwrap();
        t.succeeded(&attempt, T0);
        // A right password there takes back its own attempt.
        assert_eq!(
            t.tables()
                .desks
                .get(&("p001".into(), "d003".into()), T0)
                .unwrap()
                .failures,
            0
        );
    }

    /// Device cookies: an attempt with one is counted on its (login id, device) alone, so a
    /// guesser on the person's network does not lock that device out; the device's own
    /// failures lock it out, and no one else.
    #[test]
    fn a_device_is_counted_on_its_own_and_locked_out_by_its_own_failures_only() {
        let dir = tempfile::tempdir().unwrap();
        let t = throttle_of(dir.path(), 2);
        let home = addr("2001:db8:5:6::1");
        let neighbour = addr("2001:db8:5:6::bad");
        t.signs_in("p001", home, T0);
        // The neighbour holds the pair, and floods its network's share into the address's
        // count.
        for i in 0..10 {
            let _ = t.try_login(&format!("fake{i}"), neighbour, T0);
        }
        for _ in 0..FREE_ATTEMPTS + 3 {
            let _ = t.try_login("p001", neighbour, T0);
        }
        assert!(t.try_login("p001", home, T0).is_err());
        // The person's device is judged, and signs in.
        let attempt = t.try_device("p001", "dev1", home, T0).unwrap();
        t.succeeded(&attempt, T0);
        // Its own failures lock it out, the pair's limits apart.
        let later = T0 + MAX_DELAY_MS;
        for _ in 0..FREE_ATTEMPTS {
            t.try_device("p001", "dev1", home, later).unwrap();
        }
        refused_for(
            t.try_device("p001", "dev1", home, later),
            "from this device",
        );
        // Another device of the person is not, nor the device for another login id.
        t.try_device("p001", "dev2", home, later).unwrap();
        t.try_device("p002", "dev1", home, later).unwrap();
        // Not counted on the login id's ceiling, nor its address.
        assert!(t.tables().accounts.get(&"p001".into(), later).is_none());
        assert_eq!(t.failures("p001", home, later), 0);
    }

    #[tokio::test]
    async fn counts_are_written_in_groups_and_read_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let t = throttle_of(dir.path(), 3);
        let attacker = addr("192.0.2.66");
        for _ in 0..FREE_ATTEMPTS {
            t.try_login("p001", attacker, T0).unwrap();
        }
        t.signs_in("p002", attacker, T0);
        // Two more pairs of its, with more failures, take the attacker's network past its
        // share: its p003 pair is pushed out, kept per address.
        t.try_login("p003", attacker, T0).unwrap();
        for id in ["a", "b"] {
            for _ in 0..3 {
                t.try_login(id, attacker, T0).unwrap();
            }
        }
        assert!(!t.tracked("p003", attacker));
        t.try_desk("p004", "d001", addr("198.51.100.4"), T0)
            .unwrap();
        t.try_device("p005", "dev", attacker, T0).unwrap();
        // Written within the group's delay, without being asked.
        tokio::time::sleep(Duration::from_millis(FLUSH_DELAY_MS * 4)).await;
        let rows = t.app.login_counts().unwrap();
        let row = |kind, account: &str| {
            rows.iter()
                .find(|r| r.kind == kind && r.account == account)
                .cloned()
        };
        assert_eq!(
            row(CountKind::Pair, "p001").unwrap().failures,
            FREE_ATTEMPTS
        );
        assert!(row(CountKind::Pair, "p002").is_none(), "{rows:?}");
        assert!(row(CountKind::Known, "p002").is_some(), "{rows:?}");
        assert_eq!(row(CountKind::Client, "").unwrap().failures, 1, "{rows:?}");
        assert_eq!(
            row(CountKind::Account, "a").unwrap().failures,
            3,
            "{rows:?}"
        );
        assert_eq!(row(CountKind::Desk, "p004").unwrap().client, "d001");
        assert_eq!(row(CountKind::Device, "p005").unwrap().client, "dev");
        drop(t);
        let again = throttle_of(dir.path(), 3);
        assert!(again.try_login("p001", attacker, T0 + 10).is_err());
        assert_eq!(again.failures("p001", attacker, T0 + 10), FREE_ATTEMPTS);
        assert_eq!(again.failures("p002", attacker, T0 + 10), 0);
        assert_eq!(again.of_client(attacker, T0 + 10), 1);
        let tables = again.tables();
        assert_eq!(
            tables
                .accounts
                .get(&"p001".to_string(), T0 + 10)
                .unwrap()
                .failures,
            FREE_ATTEMPTS
        );
        assert!(
            tables
                .known
                .get(&("p002".into(), attacker), T0 + 10)
                .is_some()
        );
        let desk = ("p004".to_string(), "d001".to_string());
        assert_eq!(tables.desks.get(&desk, T0 + 10).unwrap().failures, 1);
        let device = ("p005".to_string(), "dev".to_string());
        assert_eq!(tables.devices.get(&device, T0 + 10).unwrap().failures, 1);
    }
}
