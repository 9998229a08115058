//! The login throttle (issue 12, and its red team): wrong passwords are counted per (login id,
//! client address), so that an attacker is slowed from their address while the real person,
//! from theirs, signs in and reads their records, and a doctor asking in person (the patient's
//! password typed at the doctor's desk) is not refused because of someone else's guesses.
//!
//! - An attempt is counted *before* it queues for the Argon2id hash, under one lock: a burst
//!   of concurrent guesses cannot have more judged than the limits below.
//! - **Per pair.** After [`FREE_ATTEMPTS`] wrong passwords, each further attempt of that pair
//!   waits a delay that doubles from [`FIRST_DELAY_MS`] up to [`MAX_DELAY_MS`]. A right
//!   password clears the pair; if another attempt of the pair came within [`FIRST_DELAY_MS`]
//!   before it (a burst: no person types a wrong password and then the right one that fast),
//!   the pair then waits [`FIRST_DELAY_MS`], so that a right password judged amid a burst frees
//!   no more of its guesses.
//! - **Per login id, across addresses.** Attempts from clients the id never signed in from
//!   also count on the id: past [`ACCOUNT_FREE_ATTEMPTS`], each further one waits a doubling
//!   delay, from whichever address it comes, so that many addresses do not multiply guesses.
//!   The clients an id signed in from (its last [`KNOWN_PER_ACCOUNT`], each for [`KNOWN_FOR_MS`]
//!   after its last sign-in) and a patient at a signed-in doctor's desk ([`Asker`]) are not
//!   slowed by it: the real person, where they sign in, is not locked out by others' guesses
//!   (from a new address during such an attack, they wait like everyone else). A right password
//!   takes back its own attempt only: the others' stay counted.
//! - **Bounded.** At most [`MAX_TRACKED`] counts of each kind are kept. When a table is full, a
//!   count already forgotten goes first, then the one with the fewest failures (the oldest of
//!   those), never the one being counted: a flood of made-up ids pushes out other made-up ids
//!   before anyone's repeated guesses. A pair pushed out adds its failures to its client's
//!   count, and a client's count weighs on every attempt from it as if it were the pair's (its
//!   delays apply to the whole address): pushing out one's own pair resets nothing.
//! - Counts are forgotten [`FORGET_AFTER_MS`] after their last attempt; they are written to
//!   `app.db` in groups (at most [`FLUSH_DELAY_MS`] after a change, and when the server stops)
//!   and read back at start: a restart gives no fresh attempts. A crash loses at most the last
//!   group.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::app::{AppDb, AppError, CountKey, CountKind, LoginCount};

use super::ApiError;
use super::client::network_of;

/// Wrong passwords of one (login id, client) pair judged without delay.
pub const FREE_ATTEMPTS: u32 = 5;
/// Wrong passwords of one login id, from all the clients it never signed in from, judged
/// without delay.
pub const ACCOUNT_FREE_ATTEMPTS: u32 = 4 * FREE_ATTEMPTS;
/// The delay after the free attempts; it doubles with each further one.
pub const FIRST_DELAY_MS: u64 = 1_000;
/// The longest delay between two judged attempts a count allows.
pub const MAX_DELAY_MS: u64 = 15 * 60 * 1000;
/// A count without an attempt for this long starts afresh.
pub const FORGET_AFTER_MS: u64 = 24 * 3600 * 1000;
/// Clients remembered per login id as ones it signed in from.
pub const KNOWN_PER_ACCOUNT: usize = 8;
/// How long a client stays known to a login id after its last sign-in there.
pub const KNOWN_FOR_MS: u64 = 90 * 24 * 3600 * 1000;
/// Counts of each kind tracked at most.
pub const MAX_TRACKED: usize = 10_000;
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

/// Who types a password, as far as the login id's ceiling across addresses is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Asker {
    /// A login or a password read: anyone, from anywhere.
    Anyone,
    /// A patient at the desk of a doctor signed in here (in-person consent): the ceiling,
    /// against guesses from everywhere, does not refuse the patient in person. The pair's
    /// limit (the desk's address) still holds.
    PatientAtDoctorsDesk,
}

/// A (login id, client network) pair.
type PairKey = (String, IpAddr);

/// A key of a count as the columns of its row (empty for a part a kind does not have).
trait Columns: Ord + Clone {
    fn columns(&self) -> (String, String);
    fn parse(account: String, client: &str) -> Option<Self>;
}

impl Columns for PairKey {
    fn columns(&self) -> (String, String) {
        (self.0.clone(), self.1.to_string())
    }
    fn parse(account: String, client: &str) -> Option<Self> {
        Some((account, client.parse().ok()?))
    }
}

impl Columns for IpAddr {
    fn columns(&self) -> (String, String) {
        (String::new(), self.to_string())
    }
    fn parse(_: String, client: &str) -> Option<Self> {
        client.parse().ok()
    }
}

impl Columns for String {
    fn columns(&self) -> (String, String) {
        (self.clone(), String::new())
    }
    fn parse(account: String, _: &str) -> Option<Self> {
        Some(account)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Count {
    failures: u32,
    next_ms: u64,
    last_ms: u64,
    /// Attempts counted since `burst_ms`, within [`FIRST_DELAY_MS`] of it (pairs only; kept in
    /// memory only: a restart takes longer than that).
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
}

/// The counts of one kind, with their eviction order and what is not yet written.
struct Bounded<K> {
    kind: CountKind,
    counts: BTreeMap<K, Count>,
    /// Who goes first when full: the fewest failures, then the oldest.
    by_rank: BTreeSet<(u32, u64, K)>,
    /// The oldest first: forgotten counts go before any other.
    by_age: BTreeSet<(u64, K)>,
    /// Keys changed (or dropped) since the last write.
    dirty: BTreeSet<K>,
    capacity: usize,
    forget_after_ms: u64,
}

impl<K: Columns> Bounded<K> {
    fn new(kind: CountKind, capacity: usize, forget_after_ms: u64) -> Self {
        Self {
            kind,
            counts: BTreeMap::new(),
            by_rank: BTreeSet::new(),
            by_age: BTreeSet::new(),
            dirty: BTreeSet::new(),
            capacity: capacity.max(1),
            forget_after_ms,
        }
    }

    fn forgotten(&self, count: &Count, now_ms: u64) -> bool {
        now_ms >= count.last_ms.saturating_add(self.forget_after_ms)
    }

    fn get(&self, key: &K, now_ms: u64) -> Option<Count> {
        self.counts
            .get(key)
            .copied()
            .filter(|count| !self.forgotten(count, now_ms))
    }

    /// Stores `count` of `key`. When that overfills the table, pushes out others (see the
    /// module's doc): returns those not yet forgotten, whose failures would be lost.
    fn put(&mut self, key: K, count: Count, now_ms: u64) -> Vec<(K, Count)> {
        if let Some(old) = self.counts.insert(key.clone(), count) {
            self.by_rank
                .remove(&(old.failures, old.last_ms, key.clone()));
            self.by_age.remove(&(old.last_ms, key.clone()));
        }
        self.by_rank
            .insert((count.failures, count.last_ms, key.clone()));
        self.by_age.insert((count.last_ms, key.clone()));
        self.dirty.insert(key.clone());
        let mut pushed_out = Vec::new();
        while self.counts.len() > self.capacity {
            let stale = self
                .by_age
                .first()
                .filter(|(last_ms, _)| now_ms >= last_ms.saturating_add(self.forget_after_ms))
                .map(|(_, stale)| stale.clone());
            // Never the key just counted: it would never get past one attempt.
            let victim = stale.clone().or_else(|| {
                self.by_rank
                    .iter()
                    .find(|(_, _, other)| *other != key)
                    .map(|(_, _, other)| other.clone())
            });
            let Some(victim) = victim else {
                break;
            };
            if let Some(count) = self.remove(&victim)
                && stale.is_none()
            {
                pushed_out.push((victim, count));
            }
        }
        pushed_out
    }

    fn remove(&mut self, key: &K) -> Option<Count> {
        let old = self.counts.remove(key)?;
        self.by_rank
            .remove(&(old.failures, old.last_ms, key.clone()));
        self.by_age.remove(&(old.last_ms, key.clone()));
        self.dirty.insert(key.clone());
        Some(old)
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
}

/// Which limit refuses an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Limit {
    Pair,
    Client,
    Account,
}

impl Limit {
    fn message(self, retry_after_s: u64) -> String {
        let what = match self {
            Limit::Pair => "for this account from your address",
            Limit::Client => "from your address",
            Limit::Account => "for this account",
        };
        format!("Too many wrong passwords {what}; try again in {retry_after_s} s")
    }
}

/// An attempt counted before its password is judged: what the throttle is told after.
pub(crate) struct Attempt {
    account: String,
    /// The client as it came (for the logs).
    client: IpAddr,
    pair: PairKey,
    /// Counted on the login id's ceiling (a client it does not know, not at a doctor's desk).
    on_account: bool,
}

/// Every count in memory.
struct Tables {
    pairs: Bounded<PairKey>,
    /// Failures of pairs pushed out, per client network.
    clients: Bounded<IpAddr>,
    /// Failures per login id from clients it does not know.
    accounts: Bounded<String>,
    /// The clients each login id signed in from.
    known: Bounded<PairKey>,
}

impl Tables {
    fn new(capacity: usize) -> Self {
        Self {
            pairs: Bounded::new(CountKind::Pair, capacity, FORGET_AFTER_MS),
            clients: Bounded::new(CountKind::Client, capacity, FORGET_AFTER_MS),
            accounts: Bounded::new(CountKind::Account, capacity, FORGET_AFTER_MS),
            known: Bounded::new(CountKind::Known, capacity, KNOWN_FOR_MS),
        }
    }

    /// Stores a pair's count; the failures of pairs it pushes out go to their clients' counts
    /// (those the client table pushes out in turn are lost: the module's doc).
    fn put_pair(&mut self, pair: PairKey, count: Count, now_ms: u64) {
        for ((_, network), pushed) in self.pairs.put(pair, count, now_ms) {
            if pushed.failures == 0 {
                continue;
            }
            let mut client = self
                .clients
                .get(&network, now_ms)
                .unwrap_or_else(|| Count::fresh(pushed.last_ms));
            client.failures = client.failures.saturating_add(pushed.failures);
            client.next_ms = client.next_ms.max(pushed.next_ms);
            client.last_ms = client.last_ms.max(pushed.last_ms);
            tracing::debug!(%network, failures = client.failures, "login failures kept per address");
            self.clients.put(network, client, now_ms);
        }
    }

    /// Counts an attempt of `account` from `client` now, or says how long it must wait, and
    /// for which limit.
    fn attempt(
        &mut self,
        account: &str,
        client: IpAddr,
        asker: Asker,
        now_ms: u64,
    ) -> Result<Attempt, (u64, Limit)> {
        let network = network_of(client);
        let pair_key = (account.to_string(), network);
        let mut pair = self
            .pairs
            .get(&pair_key, now_ms)
            .unwrap_or_else(|| Count::fresh(now_ms));
        let from_client = self.clients.get(&network, now_ms);
        let on_account = asker == Asker::Anyone && self.known.get(&pair_key, now_ms).is_none();
        let on_account_count = on_account.then(|| {
            self.accounts
                .get(&pair_key.0, now_ms)
                .unwrap_or_else(|| Count::fresh(now_ms))
        });
        let waits = [
            (Some(pair), Limit::Pair),
            (from_client, Limit::Client),
            (on_account_count, Limit::Account),
        ];
        if let Some((next_ms, limit)) = waits
            .into_iter()
            .filter_map(|(count, limit)| Some((count?.next_ms, limit)))
            .filter(|(next_ms, _)| *next_ms > now_ms)
            .max_by_key(|(next_ms, _)| *next_ms)
        {
            return Err((next_ms - now_ms, limit));
        }
        if now_ms >= pair.burst_ms.saturating_add(FIRST_DELAY_MS) {
            pair.burst = 0;
            pair.burst_ms = now_ms;
        }
        pair.burst += 1;
        pair.failures = pair.failures.saturating_add(1);
        pair.last_ms = now_ms;
        let weight = pair
            .failures
            .saturating_add(from_client.map_or(0, |c| c.failures));
        pair.next_ms = now_ms.saturating_add(delay_ms(weight, FREE_ATTEMPTS));
        if let Some(mut from_client) = from_client {
            // The address waits as this pair does, whichever id it tries next.
            from_client.last_ms = now_ms;
            from_client.next_ms = pair.next_ms;
            self.clients.put(network, from_client, now_ms);
        }
        self.put_pair(pair_key.clone(), pair, now_ms);
        if let Some(mut count) = on_account_count {
            count.failures = count.failures.saturating_add(1);
            count.last_ms = now_ms;
            count.next_ms = now_ms.saturating_add(delay_ms(count.failures, ACCOUNT_FREE_ATTEMPTS));
            self.accounts.put(pair_key.0.clone(), count, now_ms);
        }
        Ok(Attempt {
            account: account.to_string(),
            client,
            pair: pair_key,
            on_account,
        })
    }

    /// The right password for `attempt`: the pair starts afresh (after [`FIRST_DELAY_MS`] amid
    /// a burst), the login id takes back this attempt, and the client becomes known to it.
    fn succeeded(&mut self, attempt: &Attempt, now_ms: u64) {
        match self.pairs.get(&attempt.pair, now_ms) {
            Some(count)
                if count.burst > 1 && now_ms < count.burst_ms.saturating_add(FIRST_DELAY_MS) =>
            {
                let cleared = Count {
                    failures: 0,
                    next_ms: now_ms.saturating_add(FIRST_DELAY_MS),
                    last_ms: now_ms,
                    ..count
                };
                self.put_pair(attempt.pair.clone(), cleared, now_ms);
            }
            _ => {
                self.pairs.remove(&attempt.pair);
            }
        }
        if attempt.on_account
            && let Some(mut count) = self.accounts.get(&attempt.account, now_ms)
        {
            count.failures = count.failures.saturating_sub(1);
            self.accounts.put(attempt.account.clone(), count, now_ms);
        }
        self.known
            .put(attempt.pair.clone(), Count::fresh(now_ms), now_ms);
        let account = &attempt.pair.0;
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
        self.known.take_dirty(&mut changed, &mut forgotten);
        (changed, forgotten)
    }

    fn mark_dirty(&mut self, kind: CountKind, account: &str, client: &str) {
        match kind {
            CountKind::Pair => self.pairs.mark_dirty(account, client),
            CountKind::Client => self.clients.mark_dirty(account, client),
            CountKind::Account => self.accounts.mark_dirty(account, client),
            CountKind::Known => self.known.mark_dirty(account, client),
        }
    }

    /// Takes a count read from `app.db` (forgotten ones are marked to be deleted).
    fn load(&mut self, row: LoginCount, now_ms: u64) {
        fn keep<K: Columns>(table: &mut Bounded<K>, key: K, count: Count, now_ms: u64) {
            table.put(key.clone(), count, now_ms);
            table.dirty.remove(&key);
        }
        match row.kind {
            CountKind::Pair => {
                if let Some((key, count)) = self.pairs.loaded(row, now_ms) {
                    self.put_pair(key.clone(), count, now_ms);
                    self.pairs.dirty.remove(&key);
                }
            }
            CountKind::Client => {
                if let Some((key, count)) = self.clients.loaded(row, now_ms) {
                    keep(&mut self.clients, key, count, now_ms);
                }
            }
            CountKind::Account => {
                if let Some((key, count)) = self.accounts.loaded(row, now_ms) {
                    keep(&mut self.accounts, key, count, now_ms);
                }
            }
            CountKind::Known => {
                if let Some((key, count)) = self.known.loaded(row, now_ms) {
                    keep(&mut self.known, key, count, now_ms);
                }
            }
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

    fn open_with(app: Arc<AppDb>, now_ms: u64, capacity: usize) -> Self {
        let mut tables = Tables::new(capacity);
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

    /// Counts an attempt of `account` from `client` before its password is judged, or refuses
    /// it (429) while one of its limits must wait.
    pub(crate) fn attempt(
        self: &Arc<Self>,
        account: &str,
        client: IpAddr,
        asker: Asker,
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
        let from_client = tables
            .clients
            .get(&attempt.pair.1, now_ms)
            .map_or(0, |c| c.failures);
        if let Some(count) = tables.pairs.get(&attempt.pair, now_ms)
            && count.failures.saturating_add(from_client) >= FREE_ATTEMPTS
        {
            tracing::warn!(
                account = ?attempt.account,
                client = %attempt.client,
                failures = count.failures,
                failures_of_the_address = from_client,
                wait_ms = count.next_ms.saturating_sub(now_ms),
                "login slowed: repeated wrong passwords from this address"
            );
        }
        if attempt.on_account
            && let Some(count) = tables.accounts.get(&attempt.account, now_ms)
            && count.failures >= ACCOUNT_FREE_ATTEMPTS
        {
            tracing::warn!(
                account = ?attempt.account,
                client = %attempt.client,
                failures = count.failures,
                wait_ms = count.next_ms.saturating_sub(now_ms),
                "login slowed for this account: wrong passwords from many addresses"
            );
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

    fn throttle(dir: &std::path::Path) -> Arc<LoginThrottle> {
        throttle_of(dir, MAX_TRACKED)
    }

    fn throttle_of(dir: &std::path::Path, capacity: usize) -> Arc<LoginThrottle> {
        let app = Arc::new(crate::app::test_db(&dir.join("app.db")));
        Arc::new(LoginThrottle::open_with(app, T0, capacity))
    }

    impl LoginThrottle {
        /// An attempt from anyone (a login).
        fn try_login(
            self: &Arc<Self>,
            account: &str,
            client: IpAddr,
            now_ms: u64,
        ) -> Result<Attempt, ApiError> {
            self.attempt(account, client, Asker::Anyone, now_ms)
        }

        /// A right password from anyone, counted and judged.
        fn signs_in(self: &Arc<Self>, account: &str, client: IpAddr, now_ms: u64) {
            let attempt = self.try_login(account, client, now_ms).unwrap();
            self.succeeded(&attempt, now_ms);
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
    /// kept below the free attempts. Now a flood pushes out the pairs with fewest failures,
    /// and a pair pushed out still weighs on its address.
    #[tokio::test]
    async fn a_flood_of_made_up_ids_resets_no_count() {
        let dir = tempfile::tempdir().unwrap();
        let t = throttle(dir.path());
        let attacker = addr("192.0.2.66");
        for _ in 0..FREE_ATTEMPTS - 1 {
            t.try_login("p001", attacker, T0).unwrap();
        }
        for i in 0..MAX_TRACKED + 5_000 {
            let flooder = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32));
            t.try_login(&format!("fake{i}"), flooder, T0 + 1 + i as u64)
                .unwrap();
        }
        let later = T0 + 1 + (MAX_TRACKED + 5_000) as u64;
        assert_eq!(t.failures("p001", attacker, later), FREE_ATTEMPTS - 1);
        assert_eq!(t.tables().pairs.counts.len(), MAX_TRACKED);
        // The oldest made-up ids went first; the newest are there.
        assert!(!t.tracked("fake0", addr("10.0.0.0")));
        assert!(t.tracked(
            &format!("fake{}", MAX_TRACKED + 4_999),
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (MAX_TRACKED + 4_999) as u32))
        ));
        // The attacker's one free attempt is left, then it waits.
        t.try_login("p001", attacker, later).unwrap();
        assert!(t.try_login("p001", attacker, later).is_err());

        // When the attacker's own pair is pushed out (every other pair has more failures), its
        // failures stay with its address: a fresh pair of it is slowed at once, for any id.
        let other = tempfile::tempdir().unwrap();
        let small = throttle_of(other.path(), 2);
        for _ in 0..FREE_ATTEMPTS - 1 {
            small.try_login("p001", attacker, T0).unwrap();
        }
        for (i, id) in ["a", "b"].iter().enumerate() {
            let flooder = addr(&format!("198.51.100.{i}"));
            for _ in 0..FREE_ATTEMPTS {
                small.try_login(id, flooder, T0 + 1).unwrap();
            }
        }
        assert!(!small.tracked("p001", attacker));
        assert_eq!(small.tables().pairs.counts.len(), 2);
        let now = T0 + 2;
        small.try_login("p001", attacker, now).unwrap();
        assert!(small.try_login("p001", attacker, now).is_err());
        assert!(small.try_login("p002", attacker, now).is_err());
        let waited = now + FIRST_DELAY_MS;
        small.try_login("p002", attacker, waited).unwrap();
        assert!(small.try_login("p003", attacker, waited).is_err());
        // Another address is not slowed by it.
        small
            .try_login("p001", addr("203.0.113.1"), waited)
            .unwrap();
    }

    /// Many addresses, one id: past the ceiling every address not known to the id waits; the
    /// address the real person signed in from, and the doctor's desk, do not.
    #[test]
    fn an_account_is_slowed_across_addresses_except_where_its_person_signs_in() {
        let dir = tempfile::tempdir().unwrap();
        let t = throttle(dir.path());
        let home = addr("198.51.100.10");
        t.signs_in("p001", home, T0);
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
        let refused = t.try_login("p001", addr("192.0.2.200"), T0).err().unwrap();
        assert!(
            matches!(&refused, ApiError::RateLimited { message, .. } if message.contains("for this account;")),
            "{refused:?}"
        );
        // Other ids are not slowed by it.
        t.try_login("p002", addr("192.0.2.200"), T0).unwrap();
        // The real person from home, and a patient at a doctor's desk, are judged.
        t.signs_in("p001", home, T0);
        let desk = addr("198.51.100.20");
        let attempt = t
            .attempt("p001", desk, Asker::PatientAtDoctorsDesk, T0)
            .unwrap();
        t.succeeded(&attempt, T0);
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
        // Only the last few addresses stay known.
        for host in 0..KNOWN_PER_ACCOUNT as u32 + 2 {
            t.signs_in(
                "p003",
                IpAddr::V4(Ipv4Addr::from(0xc000_0200 + host)),
                T0 + u64::from(host),
            );
        }
        assert!(
            t.tables()
                .known
                .get(&("p003".into(), addr("192.0.2.0")), T0)
                .is_none()
        );
        assert!(
            t.tables()
                .known
                .get(&("p003".into(), addr("192.0.2.2")), T0)
                .is_some()
        );
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
        // Two pairs with more failures push out the attacker's p003 pair: kept per address.
        t.try_login("p003", attacker, T0).unwrap();
        for id in ["a", "b"] {
            for _ in 0..3 {
                t.try_login(id, addr("198.51.100.1"), T0).unwrap();
            }
        }
        assert!(!t.tracked("p003", attacker));
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
        drop(t);
        let again = throttle_of(dir.path(), 3);
        assert!(again.try_login("p001", attacker, T0 + 10).is_err());
        assert_eq!(again.failures("p001", attacker, T0 + 10), FREE_ATTEMPTS);
        assert_eq!(again.failures("p002", attacker, T0 + 10), 0);
        let tables = again.tables();
        assert_eq!(tables.clients.get(&attacker, T0 + 10).unwrap().failures, 1);
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
    }
}
