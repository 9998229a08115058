//! The keys a validator waits for, and when to ask for each (docs/SECURITY.md, "Confidential
//! records", §5.2).
//!
//! A chain only grows, and a validator restored from an old backup may want millions of keys,
//! so a pull costs what it asks, never what is wanted:
//!
//! - Keys not yet asked, or asked and not answered, wait in a queue by the time of their next
//!   try. A pull takes at most [`DUE_PER_PULL`] of those that are due, in that order.
//! - A due key whose holder has its [`crate::wire::MAX_KEY_REQUEST_IDS`]-id requests all open
//!   is parked behind that holder, in the order it came, with its tries unchanged, and asked as
//!   soon as the holder has room again. A silent or slow holder so holds back its own keys only:
//!   the keys of other holders go on past it (a due key never waits behind another holder's).
//! - The lowest height of a wanted transaction, written with the processed height so that a
//!   restart knows where to read blocks again (§12.1), is kept as counts per height.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use ledger::{PersonId, TxId};
use pbft::ReplicaId;

use crate::wire::MAX_KEY_REQUEST_IDS;

/// The backoff of a wanted key: 250 ms, doubling per try up to 10 s.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Due keys a pull takes from the queue at most: the rest wait for the next pull, so that one
/// pull never holds the key service for long.
const DUE_PER_PULL: usize = 32 * MAX_KEY_REQUEST_IDS;

/// The wait before the next try, after `tries` tries.
fn backoff(tries: u32) -> Duration {
    BACKOFF_MIN
        .saturating_mul(1 << tries.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
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
    /// Requests that asked for it.
    pub tries: u32,
    /// Entitled as a grantee only: asked of the patient's home only (§5.2).
    pub as_grantee: bool,
    /// An `AddRecord` (counted in a grant's key status, §13).
    pub record: bool,
    /// Not asked again before then (while not parked).
    next_try: Instant,
    /// Parked behind this holder, whose requests were all open when the key was due.
    parked: Option<ReplicaId>,
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
            as_grantee,
            record,
            next_try: now,
            parked: None,
        }
    }
}

/// Keys parked behind one holder. An entry whose key is no longer parked there (received,
/// dropped, or drawn already) is skipped when drawn, and swept once such entries outnumber
/// the parked keys.
#[derive(Default)]
struct Parked {
    queue: VecDeque<TxId>,
    live: usize,
}

/// The wanted keys, with their schedule.
#[derive(Default)]
pub(super) struct WantedKeys {
    keys: HashMap<TxId, Wanted>,
    /// The keys not parked, by their next try.
    due: BTreeSet<(Instant, TxId)>,
    parked: BTreeMap<ReplicaId, Parked>,
    /// How many wanted keys each height has.
    heights: BTreeMap<u64, usize>,
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

    /// The lowest height of a wanted key's transaction.
    pub fn lowest_height(&self) -> Option<u64> {
        self.heights.keys().next().copied()
    }

    /// Wants `tx`, unless it is wanted already (the existing entry is kept).
    pub fn insert(&mut self, tx: TxId, wanted: Wanted) {
        if self.keys.contains_key(&tx) {
            return;
        }
        *self.heights.entry(wanted.height).or_default() += 1;
        match wanted.parked {
            Some(holder) => self.park(holder, tx),
            None => {
                self.due.insert((wanted.next_try, tx));
            }
        }
        self.keys.insert(tx, wanted);
    }

    pub fn remove(&mut self, tx: &TxId) -> Option<Wanted> {
        let wanted = self.keys.remove(tx)?;
        if let Some(count) = self.heights.get_mut(&wanted.height) {
            *count -= 1;
            if *count == 0 {
                self.heights.remove(&wanted.height);
            }
        }
        match wanted.parked {
            Some(holder) => {
                if let Some(parked) = self.parked.get_mut(&holder) {
                    parked.live -= 1;
                }
            }
            None => {
                self.due.remove(&(wanted.next_try, *tx));
            }
        }
        Some(wanted)
    }

    /// Asks `tx` again no sooner than `at` (a holder at or past this node's state said no).
    pub fn retry_at(&mut self, tx: &TxId, at: Instant) {
        let Some(wanted) = self.keys.get_mut(tx) else {
            return;
        };
        if wanted.parked.is_none() {
            self.due.remove(&(wanted.next_try, *tx));
            self.due.insert((at, *tx));
        }
        wanted.next_try = at;
    }

    fn park(&mut self, holder: ReplicaId, tx: TxId) {
        let parked = self.parked.entry(holder).or_default();
        parked.queue.push_back(tx);
        parked.live += 1;
        if parked.queue.len() > 2 * parked.live + MAX_KEY_REQUEST_IDS {
            let keys = &self.keys;
            parked
                .queue
                .retain(|tx| keys.get(tx).is_some_and(|w| w.parked == Some(holder)));
        }
    }

    /// A key asked now: one more try, due again after its backoff.
    fn asked(&mut self, tx: TxId, now: Instant) {
        let Some(wanted) = self.keys.get_mut(&tx) else {
            return;
        };
        match wanted.parked.take() {
            Some(holder) => {
                if let Some(parked) = self.parked.get_mut(&holder) {
                    parked.live -= 1;
                }
            }
            None => {
                self.due.remove(&(wanted.next_try, tx));
            }
        }
        wanted.tries = wanted.tries.saturating_add(1);
        wanted.next_try = now + backoff(wanted.tries);
        self.due.insert((wanted.next_try, tx));
    }

    /// Up to [`MAX_KEY_REQUEST_IDS`] keys parked behind `holder`, drawn in the order they came.
    fn draw_parked(&mut self, holder: ReplicaId) -> Vec<TxId> {
        let mut drawn = Vec::new();
        let Some(parked) = self.parked.get_mut(&holder) else {
            return drawn;
        };
        while drawn.len() < MAX_KEY_REQUEST_IDS
            && let Some(tx) = parked.queue.pop_front()
        {
            if self
                .keys
                .get(&tx)
                .is_some_and(|wanted| wanted.parked == Some(holder))
            {
                drawn.push(tx);
            }
        }
        drawn
    }

    /// The requests to send now, each to one holder with at most [`MAX_KEY_REQUEST_IDS`] ids,
    /// and the keys they ask marked asked. `room` says how many more requests a holder may have
    /// open; `holder_for`, which holder to ask for a due key (`None`: nobody now). Keys parked
    /// behind a holder with room go first, then the due ones.
    pub fn requests<E>(
        &mut self,
        now: Instant,
        mut room: impl FnMut(ReplicaId) -> usize,
        mut holder_for: impl FnMut(&Wanted) -> Result<Option<ReplicaId>, E>,
    ) -> Result<Vec<(ReplicaId, Vec<TxId>)>, E> {
        let mut rooms: BTreeMap<ReplicaId, usize> = BTreeMap::new();
        let mut requests = Vec::new();
        let holders: Vec<ReplicaId> = self.parked.keys().copied().collect();
        for holder in holders {
            let left = rooms.entry(holder).or_insert_with(|| room(holder));
            while *left > 0 {
                let txs = self.draw_parked(holder);
                if txs.is_empty() {
                    break;
                }
                *left -= 1;
                requests.push((holder, txs));
            }
        }
        // The batch being filled for each holder (its room already taken).
        let mut filling: BTreeMap<ReplicaId, Vec<TxId>> = BTreeMap::new();
        for _ in 0..DUE_PER_PULL {
            let Some(&(at, tx)) = self.due.first() else {
                break;
            };
            if at > now {
                break;
            }
            self.due.pop_first();
            let holder = match self.keys.get(&tx) {
                Some(wanted) => holder_for(wanted)?,
                None => continue,
            };
            let Some(holder) = holder else {
                // Nobody to ask now: due again at the slowest pace.
                let at = now + BACKOFF_MAX;
                if let Some(wanted) = self.keys.get_mut(&tx) {
                    wanted.next_try = at;
                }
                self.due.insert((at, tx));
                continue;
            };
            let left = rooms.entry(holder).or_insert_with(|| room(holder));
            let batch = filling.entry(holder).or_default();
            if batch.is_empty() {
                if *left == 0 {
                    if let Some(wanted) = self.keys.get_mut(&tx) {
                        wanted.parked = Some(holder);
                    }
                    self.park(holder, tx);
                    continue;
                }
                *left -= 1;
            }
            batch.push(tx);
            if batch.len() == MAX_KEY_REQUEST_IDS {
                requests.push((holder, std::mem::take(batch)));
            }
        }
        requests.extend(filling.into_iter().filter(|(_, txs)| !txs.is_empty()));
        for (_, txs) in &requests {
            for tx in txs {
                self.asked(*tx, now);
            }
        }
        Ok(requests)
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
                .requests::<Infallible>(
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
        let behind_silent = 50 * OPEN_PER_HOLDER * MAX_KEY_REQUEST_IDS;
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
        let wanted_count = 10 * DUE_PER_PULL;
        for i in 0..wanted_count as u32 {
            keys.insert(tx(i, 1), wanted(1, 1, start));
        }
        let looked_up = std::cell::Cell::new(0);
        let pull = |keys: &mut WantedKeys, now, room| {
            keys.requests::<Infallible>(
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
        for _ in 1..10 {
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

    #[test]
    fn a_key_removed_while_parked_is_not_asked_and_the_heights_follow() {
        let start = Instant::now();
        let mut keys = WantedKeys::default();
        for i in 0..3 {
            keys.insert(tx(i, 1), wanted(1, 10 + u64::from(i), start));
        }
        let park = |keys: &mut WantedKeys| {
            keys.requests::<Infallible>(start, |_| 0, |w| Ok(Some(w.source)))
                .unwrap()
        };
        assert!(park(&mut keys).is_empty());
        assert_eq!(keys.lowest_height(), Some(10));
        assert!(keys.remove(&tx(0, 1)).is_some());
        assert_eq!(keys.lowest_height(), Some(11));
        let requests = keys
            .requests::<Infallible>(start, |_| 4, |w| Ok(Some(w.source)))
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
            keys.requests::<Infallible>(now, |_| 4, |w| Ok(Some(w.source)))
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
