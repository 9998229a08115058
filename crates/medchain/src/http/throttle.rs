//! The login throttle (issue 12): wrong passwords are counted per (login id, client address),
//! so that an attacker is slowed from their address while the real person, from theirs, signs
//! in and reads their records, and a doctor asking in person (the patient's password typed at
//! the doctor's desk) is not refused because of someone else's guesses.
//!
//! - An attempt is counted *before* it queues for the Argon2id hash, under one lock: a burst
//!   of concurrent guesses cannot have more judged than [`FREE_ATTEMPTS`].
//! - After [`FREE_ATTEMPTS`] wrong passwords, each further attempt of that pair waits a delay
//!   that doubles from [`FIRST_DELAY_MS`] up to [`MAX_DELAY_MS`]. A right password clears the
//!   pair; if another attempt of the pair came within [`FIRST_DELAY_MS`] before it (a burst:
//!   no person types a wrong password and then the right one that fast), the pair then waits
//!   [`FIRST_DELAY_MS`], so that a right password judged amid a burst frees no more of its
//!   guesses. A pair is forgotten [`FORGET_AFTER_MS`] after its last attempt.
//! - At most [`MAX_TRACKED`] pairs are tracked. When full, the oldest other pair that is not
//!   being slowed is dropped (if none, the oldest of all): never the whole table, so a flood of
//!   made-up ids resets no one's count, and a new pair is always counted.
//! - Counts are written to `app.db` in groups (at most [`FLUSH_DELAY_MS`] after a change, and
//!   when the server stops) and read back at start: a restart gives no fresh attempts. A crash
//!   loses at most the last group.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::app::{AppDb, AppError, FailureRow};

use super::ApiError;

/// Wrong passwords of one (login id, client) pair judged without delay.
pub const FREE_ATTEMPTS: u32 = 5;
/// The delay after [`FREE_ATTEMPTS`] wrong passwords; it doubles with each further one.
pub const FIRST_DELAY_MS: u64 = 1_000;
/// The longest delay between two judged attempts of one pair.
pub const MAX_DELAY_MS: u64 = 15 * 60 * 1000;
/// A pair without an attempt for this long starts afresh.
pub const FORGET_AFTER_MS: u64 = 24 * 3600 * 1000;
/// Pairs tracked at most.
pub const MAX_TRACKED: usize = 10_000;
/// How long after a change its group is written.
pub const FLUSH_DELAY_MS: u64 = 250;

/// The delay before the attempt that follows `failures` wrong passwords.
pub fn delay_ms(failures: u32) -> u64 {
    match failures.checked_sub(FREE_ATTEMPTS) {
        None => 0,
        Some(doublings) => FIRST_DELAY_MS
            .saturating_mul(1u64 << doublings.min(32))
            .min(MAX_DELAY_MS),
    }
}

/// Who is throttled: the login id as typed, and the client's network. An IPv6 client is keyed
/// by its /64, which one subscriber usually holds whole (its other addresses are free to it).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Pair {
    account: String,
    client: IpAddr,
}

fn network_of(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let segments = v6.segments();
                IpAddr::V6(Ipv6Addr::new(
                    segments[0],
                    segments[1],
                    segments[2],
                    segments[3],
                    0,
                    0,
                    0,
                    0,
                ))
            }
        },
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Count {
    failures: u32,
    next_ms: u64,
    last_ms: u64,
    /// Attempts counted since `burst_ms`, within [`FIRST_DELAY_MS`] of it (kept in memory
    /// only: a restart takes longer than that).
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

impl Count {
    /// The eviction order: pairs not being slowed first, then the oldest.
    fn rank(&self) -> (bool, u64) {
        (self.failures >= FREE_ATTEMPTS, self.last_ms)
    }

    fn forgotten(&self, now_ms: u64) -> bool {
        now_ms >= self.last_ms.saturating_add(FORGET_AFTER_MS)
    }
}

/// The counts in memory, with their eviction order and what is not yet written.
struct Table {
    counts: HashMap<Pair, Count>,
    by_rank: BTreeSet<((bool, u64), Pair)>,
    /// Pairs changed (or dropped) since the last write.
    dirty: HashSet<Pair>,
    capacity: usize,
}

impl Table {
    fn new(capacity: usize) -> Self {
        Self {
            counts: HashMap::new(),
            by_rank: BTreeSet::new(),
            dirty: HashSet::new(),
            capacity: capacity.max(1),
        }
    }

    fn get(&self, pair: &Pair, now_ms: u64) -> Option<Count> {
        self.counts
            .get(pair)
            .copied()
            .filter(|count| !count.forgotten(now_ms))
    }

    fn put(&mut self, pair: Pair, count: Count) {
        if let Some(old) = self.counts.insert(pair.clone(), count) {
            self.by_rank.remove(&(old.rank(), pair.clone()));
        }
        self.by_rank.insert((count.rank(), pair.clone()));
        while self.counts.len() > self.capacity {
            // Never the pair just counted: it would never get past one attempt.
            let Some(evicted) = self
                .by_rank
                .iter()
                .find(|(_, other)| *other != pair)
                .cloned()
            else {
                break;
            };
            self.by_rank.remove(&evicted);
            self.counts.remove(&evicted.1);
            self.dirty.insert(evicted.1);
        }
        self.dirty.insert(pair);
    }

    fn remove(&mut self, pair: &Pair) {
        if let Some(old) = self.counts.remove(pair) {
            self.by_rank.remove(&(old.rank(), pair.clone()));
            self.dirty.insert(pair.clone());
        }
    }

    /// Counts an attempt of `pair` now, or says how long it must wait. Returns the failures
    /// counted, this one included.
    fn attempt(&mut self, pair: &Pair, now_ms: u64) -> Result<u32, u64> {
        let mut count = self
            .get(pair, now_ms)
            .unwrap_or_else(|| Count::fresh(now_ms));
        if now_ms < count.next_ms {
            return Err(count.next_ms - now_ms);
        }
        if now_ms >= count.burst_ms.saturating_add(FIRST_DELAY_MS) {
            count.burst = 0;
            count.burst_ms = now_ms;
        }
        count.burst += 1;
        count.failures = count.failures.saturating_add(1);
        count.last_ms = now_ms;
        count.next_ms = now_ms.saturating_add(delay_ms(count.failures));
        self.put(pair.clone(), count);
        Ok(count.failures)
    }

    /// The right password for `pair`, whose attempt was counted.
    fn succeeded(&mut self, pair: &Pair, now_ms: u64) {
        match self.get(pair, now_ms) {
            Some(count)
                if count.burst > 1 && now_ms < count.burst_ms.saturating_add(FIRST_DELAY_MS) =>
            {
                self.put(
                    pair.clone(),
                    Count {
                        failures: 0,
                        next_ms: now_ms.saturating_add(FIRST_DELAY_MS),
                        last_ms: now_ms,
                        ..count
                    },
                )
            }
            _ => self.remove(pair),
        }
    }

    /// What to write: every dirty pair's count, and the dirty pairs now gone.
    fn take_dirty(&mut self) -> (Vec<FailureRow>, Vec<(String, String)>) {
        let mut changed = Vec::new();
        let mut forgotten = Vec::new();
        for pair in self.dirty.drain() {
            match self.counts.get(&pair) {
                Some(count) => changed.push(FailureRow {
                    account: pair.account,
                    client: pair.client.to_string(),
                    failures: count.failures,
                    next_ms: count.next_ms,
                    last_ms: count.last_ms,
                }),
                None => forgotten.push((pair.account, pair.client.to_string())),
            }
        }
        (changed, forgotten)
    }
}

/// The throttle of one hospital's logins and password reads.
pub(crate) struct LoginThrottle {
    table: Mutex<Table>,
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
        let mut table = Table::new(capacity);
        match app.login_failures() {
            Ok(rows) => {
                for row in rows {
                    let Ok(client) = row.client.parse::<IpAddr>() else {
                        continue;
                    };
                    let count = Count {
                        failures: row.failures,
                        next_ms: row.next_ms,
                        last_ms: row.last_ms,
                        ..Count::fresh(0)
                    };
                    let pair = Pair {
                        account: row.account,
                        client,
                    };
                    if count.forgotten(now_ms) {
                        table.dirty.insert(pair);
                    } else {
                        table.put(pair.clone(), count);
                        table.dirty.remove(&pair);
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the login throttle's counts"),
        }
        Self {
            table: Mutex::new(table),
            app,
            flush_scheduled: AtomicBool::new(false),
            flushing: Mutex::new(()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an attempt of `account` from `client` before its password is judged, or refuses
    /// it (429) while the pair must wait.
    pub(crate) fn attempt(
        self: &Arc<Self>,
        account: &str,
        client: IpAddr,
        now_ms: u64,
    ) -> Result<(), ApiError> {
        let pair = Pair {
            account: account.to_string(),
            client: network_of(client),
        };
        let counted = self.table().attempt(&pair, now_ms);
        match counted {
            Ok(_) => {
                self.schedule_flush();
                Ok(())
            }
            Err(wait_ms) => {
                tracing::debug!(account = ?account, %client, wait_ms, "login attempt refused");
                let retry_after_s = wait_ms.div_ceil(1000).max(1);
                Err(ApiError::RateLimited {
                    message: format!(
                        "Too many wrong passwords for this account from your address; try \
                         again in {retry_after_s} s"
                    ),
                    retry_after_s,
                })
            }
        }
    }

    /// The attempt counted for `account` from `client` was a wrong password: logs it when the
    /// pair is now slowed (a lockout), with the client's address.
    pub(crate) fn failed(&self, account: &str, client: IpAddr, now_ms: u64) {
        let pair = Pair {
            account: account.to_string(),
            client: network_of(client),
        };
        if let Some(count) = self.table().get(&pair, now_ms)
            && count.failures >= FREE_ATTEMPTS
        {
            tracing::warn!(
                account = ?account,
                %client,
                failures = count.failures,
                wait_ms = count.next_ms.saturating_sub(now_ms),
                "login slowed: repeated wrong passwords from this address"
            );
        }
    }

    /// The right password: the pair starts afresh (after [`FIRST_DELAY_MS`] if other
    /// attempts were counted).
    pub(crate) fn succeeded(self: &Arc<Self>, account: &str, client: IpAddr, now_ms: u64) {
        let pair = Pair {
            account: account.to_string(),
            client: network_of(client),
        };
        self.table().succeeded(&pair, now_ms);
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
        let (changed, forgotten) = self.table().take_dirty();
        if changed.is_empty() && forgotten.is_empty() {
            return Ok(());
        }
        let written = self.app.save_login_failures(&changed, &forgotten);
        if written.is_err() {
            // Written next time.
            let mut table = self.table();
            for row in &changed {
                if let Ok(client) = row.client.parse() {
                    table.dirty.insert(Pair {
                        account: row.account.clone(),
                        client,
                    });
                }
            }
        }
        written
    }

    #[cfg(test)]
    fn tracked(&self, account: &str, client: IpAddr) -> bool {
        self.table().counts.contains_key(&Pair {
            account: account.into(),
            client: network_of(client),
        })
    }

    #[cfg(test)]
    fn failures(&self, account: &str, client: IpAddr, now_ms: u64) -> u32 {
        let pair = Pair {
            account: account.into(),
            client: network_of(client),
        };
        self.table().get(&pair, now_ms).map_or(0, |c| c.failures)
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

    #[test]
    fn the_delay_starts_after_the_free_attempts_doubles_and_is_capped() {
        assert_eq!(delay_ms(FREE_ATTEMPTS - 1), 0);
        assert_eq!(delay_ms(FREE_ATTEMPTS), FIRST_DELAY_MS);
        assert_eq!(delay_ms(FREE_ATTEMPTS + 3), 8 * FIRST_DELAY_MS);
        assert_eq!(delay_ms(FREE_ATTEMPTS + 40), MAX_DELAY_MS);
        assert_eq!(delay_ms(u32::MAX), MAX_DELAY_MS);
    }

    #[test]
    fn attempts_are_counted_before_judging_and_slowed_per_address() {
        let dir = tempfile::tempdir().unwrap();
        let t = throttle(dir.path());
        let attacker = addr("192.0.2.66");
        for _ in 0..FREE_ATTEMPTS {
            t.attempt("p001", attacker, T0).unwrap();
        }
        // Counted before any answer: the next one at the same instant waits.
        let refused = t.attempt("p001", attacker, T0).unwrap_err();
        assert!(matches!(
            refused,
            ApiError::RateLimited {
                retry_after_s: 1,
                ..
            }
        ));
        // Another address, and another account from the attacker's, are not slowed.
        t.attempt("p001", addr("198.51.100.1"), T0).unwrap();
        t.attempt("p002", attacker, T0).unwrap();
        // After the delay, one more; then twice the delay.
        t.attempt("p001", attacker, T0 + FIRST_DELAY_MS).unwrap();
        assert!(
            t.attempt("p001", attacker, T0 + FIRST_DELAY_MS + 1)
                .is_err()
        );
        t.attempt("p001", attacker, T0 + 3 * FIRST_DELAY_MS)
            .unwrap();
        // The right password, alone in its second, clears the pair.
        let now = T0 + 3 * FIRST_DELAY_MS;
        t.succeeded("p001", attacker, now);
        assert!(!t.tracked("p001", attacker));
        // Amid a burst, it clears the count but the pair waits the first delay: the burst's
        // later guesses are not judged.
        t.attempt("p001", attacker, now).unwrap();
        t.attempt("p001", attacker, now).unwrap();
        t.succeeded("p001", attacker, now);
        assert_eq!(t.failures("p001", attacker, now), 0);
        assert!(t.attempt("p001", attacker, now).is_err());
        for _ in 0..FREE_ATTEMPTS {
            t.attempt("p001", attacker, now + FIRST_DELAY_MS).unwrap();
        }
        // A day later, a pair starts afresh.
        for _ in 0..FREE_ATTEMPTS + 5 {
            let _ = t.attempt("p002", attacker, T0);
        }
        assert!(t.attempt("p002", attacker, T0 + 1).is_err());
        t.attempt("p002", attacker, T0 + FORGET_AFTER_MS + 1)
            .unwrap();
        assert_eq!(t.failures("p002", attacker, T0 + FORGET_AFTER_MS + 1), 1);
    }

    #[test]
    fn an_ipv6_client_is_keyed_by_its_64_and_a_mapped_v4_as_v4() {
        let dir = tempfile::tempdir().unwrap();
        let t = throttle(dir.path());
        for i in 0..FREE_ATTEMPTS {
            t.attempt("p001", addr(&format!("2001:db8:1:2::{i}")), T0)
                .unwrap();
        }
        assert!(t.attempt("p001", addr("2001:db8:1:2:ffff::9"), T0).is_err());
        t.attempt("p001", addr("2001:db8:1:3::1"), T0).unwrap();
        for _ in 0..FREE_ATTEMPTS {
            t.attempt("p002", addr("192.0.2.1"), T0).unwrap();
        }
        assert!(t.attempt("p002", addr("::ffff:192.0.2.1"), T0).is_err());
    }

    /// The bug of issue 12: 10,000 made-up ids cleared the whole table, and with it every
    /// account's count. Now a flood only pushes out other unslowed pairs, oldest first.
    #[tokio::test]
    async fn a_flood_of_made_up_ids_resets_no_real_count() {
        let dir = tempfile::tempdir().unwrap();
        let t = throttle(dir.path());
        let attacker = addr("192.0.2.66");
        for _ in 0..FREE_ATTEMPTS {
            t.attempt("p001", attacker, T0).unwrap();
        }
        for i in 0..MAX_TRACKED + 5_000 {
            t.attempt(&format!("fake{i}"), attacker, T0 + 1 + i as u64)
                .unwrap();
        }
        let later = T0 + 1 + (MAX_TRACKED + 5_000) as u64;
        assert_eq!(t.failures("p001", attacker, later), FREE_ATTEMPTS);
        assert_eq!(t.table().counts.len(), MAX_TRACKED);
        // The oldest made-up ids went first; the newest are there.
        assert_eq!(t.failures("fake0", attacker, later), 0);
        assert_eq!(
            t.failures(&format!("fake{}", MAX_TRACKED + 4_999), attacker, later),
            1
        );
        // When every pair is slowed, the oldest of all goes (never the whole table).
        let other = tempfile::tempdir().unwrap();
        let small = throttle_of(other.path(), 2);
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            for _ in 0..FREE_ATTEMPTS {
                small.attempt(id, attacker, T0 + i as u64).unwrap();
            }
        }
        assert_eq!(small.failures("a", attacker, T0 + 3), 0);
        assert_eq!(small.failures("b", attacker, T0 + 3), FREE_ATTEMPTS);
        assert_eq!(small.failures("c", attacker, T0 + 3), FREE_ATTEMPTS);
        assert_eq!(small.table().counts.len(), 2);
    }

    #[tokio::test]
    async fn counts_are_written_in_groups_and_read_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let t = throttle(dir.path());
        let attacker = addr("192.0.2.66");
        for _ in 0..FREE_ATTEMPTS {
            t.attempt("p001", attacker, T0).unwrap();
        }
        t.attempt("p002", attacker, T0).unwrap();
        t.succeeded("p002", attacker, T0);
        // Written within the group's delay, without being asked.
        tokio::time::sleep(Duration::from_millis(FLUSH_DELAY_MS * 4)).await;
        let rows = t.app.login_failures().unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].account, "p001");
        assert_eq!(rows[0].failures, FREE_ATTEMPTS);
        drop(t);
        let again = throttle(dir.path());
        assert!(again.attempt("p001", attacker, T0 + 10).is_err());
        assert_eq!(again.failures("p001", attacker, T0 + 10), FREE_ATTEMPTS);
        assert_eq!(again.failures("p002", attacker, T0 + 10), 0);
    }
}
