//! The epoch index: the chain's lookups by random key (a transaction by its id, a person's
//! records, grants, requests...) without a B-tree that every block inserts into at random
//! (docs/STORAGE.md §1).
//!
//! A key is a [`Tag`] (what is looked up) and the first 7 bytes of a 32-byte value; an entry maps
//! a key to the row of `transactions` (`tx`) whose derived row holds that value. The rows are cut
//! into epochs of [`EPOCH_ROWS`]. The entries of the current epoch and of the last closed one
//! are kept in memory ([`Index`], one per file and process, shared by the writer and the
//! readers). When an epoch's last row is written, the same block writes the epoch's entries,
//! read back from the derived rows and sorted, as one run of `index_runs (epoch, key, tx)`: keys
//! that only grow within a new epoch number, so each page of the run is written once. A lookup
//! takes the candidates from memory and from the runs of the older epochs, one seek each;
//! callers compare the whole value on the row, so a prefix shared by two values costs a row
//! read, never a wrong answer.
//!
//! Memory is a cache of rows: an instance covers every row up to [`Recent::covered`] and catches
//! up from the derived tables ([`Index::catch_up`]), which is also how a store is opened (at
//! most two epochs of rows read). The writer adds a block's entries as it writes them
//! ([`Index::add_row`]) and takes them back if the block's transaction fails
//! ([`Index::truncate`]). The runs are derived state: verification writes them again with the
//! same code and compares.
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};

use foldhash::{HashMap, HashMapExt};
use rusqlite::{Connection, OptionalExtension, params};

use crate::Result;
use crate::rules::{GrantRow, KeyRow, PersonRow};
use crate::tx::{PersonId, PublicKey, TxId};

/// Rows of `transactions` per epoch.
#[cfg(not(test))]
pub const EPOCH_ROWS: i64 = 1 << 16;
/// Small in this crate's unit tests, so that they close epochs.
#[cfg(test)]
pub const EPOCH_ROWS: i64 = 8;

/// What a key looks up: the value's column, by the table it is read from ([`SOURCES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Tag {
    /// Every entry of `transactions`, by id (applied, rejected or invalid).
    Id = 0,
    RecordPatient = 1,
    AccessPatient = 2,
    GrantPatient = 3,
    GrantDoctor = 4,
    RequestPatient = 5,
    RequestDoctor = 6,
    AskPerson = 7,
    RecoveryPerson = 8,
    ErasurePatient = 9,
}

/// Where each tag's values are: `(tag, table, column)`, every table keyed by `tx`.
const SOURCES: [(Tag, &str, &str); 10] = [
    (Tag::Id, "transactions", "id"),
    (Tag::RecordPatient, "records", "patient"),
    (Tag::AccessPatient, "accesses", "patient"),
    (Tag::GrantPatient, "grants", "patient"),
    (Tag::GrantDoctor, "grants", "doctor"),
    (Tag::RequestPatient, "requests", "patient"),
    (Tag::RequestDoctor, "requests", "doctor"),
    (Tag::AskPerson, "asks", "person"),
    (Tag::RecoveryPerson, "recoveries", "person"),
    (Tag::ErasurePatient, "erasures", "patient"),
];

/// The key of `value` under `tag`: the tag in the top byte, the value's first 7 bytes below
/// (never negative: tags are below 128).
pub fn key(tag: Tag, value: &[u8]) -> i64 {
    tagged_key(tag as u8, value)
}

/// The key of `value` under the tag byte `tag` (below 128): what [`key`] computes, for an epoch
/// index of another file (`keys.db`'s, in the node).
pub fn tagged_key(tag: u8, value: &[u8]) -> i64 {
    let mut bytes = [0u8; 8];
    bytes[0] = tag & 0x7f;
    let n = value.len().min(7);
    bytes[1..1 + n].copy_from_slice(&value[..n]);
    i64::from_be_bytes(bytes)
}

/// The epoch of row `tx` (rows are numbered from 1).
fn epoch_of(tx: i64) -> i64 {
    (tx - 1).max(0) / EPOCH_ROWS
}

/// A closed epoch's Bloom filter of the ids in its run (bits per id and hashes: about 1 % false
/// positives): a lookup by id reads the run of an epoch only if its filter may hold the id, so
/// an id looked up far back (or on chain nowhere) costs a filter check per epoch and about one
/// seek, not a seek per epoch. Built from the run, stored with the epoch (`index_epochs.ids`),
/// kept in memory (10 bits per transaction: 12.5 MB at 10,000,000).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdFilter {
    bits: Vec<u64>,
}

/// Bits of an [`IdFilter`] per id.
const FILTER_BITS_PER_ID: usize = 10;
/// Bit positions an id sets in an [`IdFilter`].
const FILTER_HASHES: u64 = 7;

impl IdFilter {
    /// The filter of `keys` (keys of [`Tag::Id`]).
    fn of(keys: &[i64]) -> IdFilter {
        let words = (keys.len() * FILTER_BITS_PER_ID).div_ceil(64).max(1);
        let mut filter = IdFilter {
            bits: vec![0; words],
        };
        for key in keys {
            for bit in filter.positions(*key) {
                filter.bits[bit / 64] |= 1 << (bit % 64);
            }
        }
        filter
    }

    /// The bits `key` sets: double hashing over two mixes of the key (a random id's prefix).
    fn positions(&self, key: i64) -> impl Iterator<Item = usize> + use<> {
        let m = (self.bits.len() * 64) as u64;
        let (a, b) = (mix(key as u64), mix(!(key as u64)) | 1);
        (0..FILTER_HASHES).map(move |i| (a.wrapping_add(i.wrapping_mul(b)) % m) as usize)
    }

    /// Whether `key` may be in the filter's run (a filter with no bits, stored wrong, says yes:
    /// the run is read).
    fn may_hold(&self, key: i64) -> bool {
        self.bits.is_empty()
            || self
                .positions(key)
                .all(|bit| self.bits[bit / 64] & (1 << (bit % 64)) != 0)
    }

    fn to_bytes(&self) -> Vec<u8> {
        self.bits.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn from_bytes(bytes: &[u8]) -> IdFilter {
        IdFilter {
            bits: bytes
                .chunks(8)
                .map(|c| {
                    let mut w = [0u8; 8];
                    w[..c.len()].copy_from_slice(c);
                    u64::from_le_bytes(w)
                })
                .collect(),
        }
    }
}

/// SplitMix64's finalizer.
pub fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What memory keeps of a closed epoch.
#[derive(Clone, Debug)]
struct RunInfo {
    /// The time of its last block.
    last_ms: i64,
    ids: IdFilter,
}

/// The rows of one key in one epoch: most keys (ids) hold one.
#[derive(Clone, Debug)]
enum Slot {
    One(i64),
    Many(Vec<i64>),
}

impl Slot {
    fn push(&mut self, tx: i64) {
        match self {
            Slot::One(first) => *self = Slot::Many(vec![*first, tx]),
            Slot::Many(rows) => rows.push(tx),
        }
    }

    fn rows(&self) -> &[i64] {
        match self {
            Slot::One(tx) => std::slice::from_ref(tx),
            Slot::Many(rows) => rows,
        }
    }
}

/// A run's entries, `(key, tx)`, sorted.
type Entries = Arc<Vec<(i64, i64)>>;

/// The entries kept in memory and what the runs hold.
#[derive(Debug, Default)]
struct Recent {
    /// The epochs held, oldest first, each a map from key to rows.
    epochs: VecDeque<(i64, HashMap<i64, Slot>)>,
    /// Every row up to this one has its entries in memory or in a run.
    covered: i64,
    /// Each epoch that has a run (epochs 0 to `len - 1`).
    runs: Vec<RunInfo>,
    /// The entries of the closed epoch whose run is being written, sorted (read from memory
    /// once, at its first part: [`Index::close_epochs`]).
    closing: Option<(i64, Entries)>,
}

impl Recent {
    /// The first epoch memory answers for: the last one with a run (kept for readers that
    /// looked before its run was committed) and every later one.
    fn low(&self) -> i64 {
        (self.runs.len() as i64 - 1).max(0)
    }

    fn insert(&mut self, key: i64, tx: i64) {
        let epoch = epoch_of(tx);
        let position = match self.epochs.iter().position(|(e, _)| *e == epoch) {
            Some(position) => position,
            None => {
                self.epochs.push_back((epoch, HashMap::new()));
                self.epochs.make_contiguous().sort_by_key(|(e, _)| *e);
                self.epochs
                    .iter()
                    .position(|(e, _)| *e == epoch)
                    .unwrap_or_default()
            }
        };
        let map = &mut self.epochs[position].1;
        match map.get_mut(&key) {
            Some(slot) => slot.push(tx),
            None => {
                map.insert(key, Slot::One(tx));
            }
        }
    }

    /// Notes that epochs `0..count` have runs (`runs`: the later ones) and drops the epochs
    /// memory no longer answers for.
    fn runs_written(&mut self, count: usize, runs: impl IntoIterator<Item = RunInfo>) {
        if count <= self.runs.len() {
            return;
        }
        self.runs.extend(runs);
        self.runs.truncate(count);
        let low = self.low();
        self.epochs.retain(|(epoch, _)| *epoch >= low);
        self.covered = self.covered.max(low * EPOCH_ROWS);
    }
}

/// Where the writer's additions begin, to take them back ([`Index::truncate`]).
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    covered: i64,
    runs: usize,
}

/// The epoch index of one `chain.db` (see the module's documentation).
#[derive(Debug, Default)]
pub struct Index {
    recent: Mutex<Recent>,
    /// Enrolled persons the writer read, by id: a person's row never changes once written.
    pub(crate) persons: Held<PersonId, PersonRow>,
    /// Enrolled persons readers read, by id: committed (a reader's snapshot holds only
    /// committed rows), and a committed person is never changed nor deleted, so every reader
    /// may use them (one whose snapshot is older sees a person a little early, as a newer
    /// snapshot would).
    pub(crate) committed_persons: Held<PersonId, PersonRow>,
    /// Keys the writer read, by key: a key's row changes only when it is revoked
    /// ([`Held::forget`]).
    pub(crate) keys: Held<PublicKey, KeyRow>,
    /// Set by the writer when the state it writes on holds no entry seen with no valid
    /// transaction (`created_ms` -1 in `seen_ids`), cleared before it adds one: readers'
    /// duplicate checks then make one probe, not two. Unset (two probes) until a writer knows.
    pub(crate) no_invalid_seen: std::sync::atomic::AtomicBool,
    /// Grants the writer wrote, by id, with their row: a grant's record reads it a second
    /// later (a walk of the index and a query of four tables, 5 % of the machine with the
    /// prechecks). A grant's row changes only when it is used or revoked ([`Held::forget`]).
    pub(crate) grants: Held<TxId, (GrantRow, i64), HELD_GRANTS>,
}

/// Rows of the derived tables read, by their key, held in memory (at most [`HELD_ROWS`] of each
/// kind, a few hundred bytes a row). A transaction's rules read several persons and keys (its
/// signer's key and person, its patient, its doctor): 15 % of a validator's replica thread in
/// SQLite, and a tenth of the accepting validator's admission. What the writer read is its view
/// only (it may be its current block's, and a reader's snapshot may be older); readers hold
/// persons apart ([`Index::committed_persons`]), never keys (a committed key is revoked later).
/// Dropped with a failed block's entries ([`Index::truncate`]), whose rows they may be. Two
/// generations of at most `ROWS` rows each: when the newer is full, the older is dropped, so
/// that the last `ROWS` rows kept are always held (dropping all at once lost the rows kept just
/// before, which a grant's record reads about a second later).
#[derive(Debug)]
pub(crate) struct Held<K, V, const ROWS: usize = HELD_ROWS> {
    rows: Mutex<Generations<K, V>>,
}

#[derive(Debug)]
struct Generations<K, V> {
    newer: HashMap<K, V>,
    older: HashMap<K, V>,
}

/// Rows [`Held`] holds at most in each generation.
const HELD_ROWS: usize = 4_096;

/// Grants [`Index::grants`] holds at most in each generation: about two seconds of grants at
/// saturation, when a grant's record comes about a second after it (under 5 MiB).
pub(crate) const HELD_GRANTS: usize = 8_192;

impl<K, V, const ROWS: usize> Default for Held<K, V, ROWS> {
    fn default() -> Self {
        Held {
            rows: Mutex::new(Generations {
                newer: HashMap::new(),
                older: HashMap::new(),
            }),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone, const ROWS: usize> Held<K, V, ROWS> {
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        let rows = self.rows();
        rows.newer.get(key).or_else(|| rows.older.get(key)).cloned()
    }

    /// Holds `row`, which the writer read (committed, or written by its current block).
    pub(crate) fn keep(&self, key: &K, row: &V) {
        let mut rows = self.rows();
        if rows.newer.len() >= ROWS {
            rows.older = std::mem::take(&mut rows.newer);
        }
        rows.older.remove(key);
        rows.newer.insert(key.clone(), row.clone());
    }

    /// Forgets the row of `key`, which the writer is changing.
    pub(crate) fn forget(&self, key: &K) {
        let mut rows = self.rows();
        rows.newer.remove(key);
        rows.older.remove(key);
    }

    fn clear(&self) {
        let mut rows = self.rows();
        rows.newer.clear();
        rows.older.clear();
    }

    /// Every row held, newer generation first.
    #[cfg(test)]
    pub(crate) fn all(&self) -> Vec<(K, V)> {
        let rows = self.rows();
        rows.newer
            .iter()
            .chain(&rows.older)
            .map(|(key, row)| (key.clone(), row.clone()))
            .collect()
    }

    fn rows(&self) -> MutexGuard<'_, Generations<K, V>> {
        // A panic while the lock was held leaves whole rows or none.
        self.rows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What tells one file from another: its path and, on Unix, its device and inode. A
/// `chain.db` deleted and made again at the same path is another file, whose rows the old
/// one's memory does not describe (its inode cannot be reused while a handle holding that
/// memory keeps the old file open).
type FileKey = (PathBuf, u64, u64);

fn file_key(path: &Path) -> FileKey {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    #[cfg(unix)]
    let (device, inode) = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&path).map_or((0, 0), |m| (m.dev(), m.ino()))
    };
    #[cfg(not(unix))]
    let (device, inode) = (0, 0);
    (path, device, inode)
}

/// One instance per file in this process, shared by the writer and its readers.
static OPEN: LazyLock<Mutex<HashMap<FileKey, Weak<Index>>>> = LazyLock::new(Default::default);

impl Index {
    /// The instance of the store at `path`, shared by every connection to that file in this
    /// process (the file, not the path: see [`FileKey`]).
    pub fn for_path(path: &Path) -> Arc<Index> {
        let key = file_key(path);
        let mut open = OPEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        open.retain(|_, index| index.strong_count() > 0);
        if let Some(index) = open.get(&key).and_then(Weak::upgrade) {
            return index;
        }
        let index = Arc::new(Index::default());
        open.insert(key, Arc::downgrade(&index));
        index
    }

    /// What the writer knows, inside its block, of entries seen with no valid transaction
    /// ([`Index::no_invalid_seen`]): whether the state holds one.
    pub(crate) fn knows_invalid_seen(&self, any: bool) {
        self.no_invalid_seen
            .store(!any, std::sync::atomic::Ordering::SeqCst);
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        // A panic while the lock was held can leave entries of rows it did not cover: only
        // candidates, which callers check against the rows.
        self.recent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads what memory lacks from the committed state `conn` sees: the runs written since,
    /// and the entries of the rows past [`Recent::covered`].
    pub fn catch_up(&self, conn: &Connection) -> Result<()> {
        let head: i64 = conn
            .prepare_cached("SELECT coalesce(max(tx), 0) FROM transactions")?
            .query_row([], |r| r.get(0))?;
        // The rows of the epochs memory lacks, one seek when there are none: a count of the
        // table walked every page of its filters at each lookup by id (6 % of a machine's
        // time at 10 M transactions, BENCHMARKS.md "twenty-eighth").
        let mut recent = self.recent();
        let from = recent.runs.len();
        let rows = conn
            .prepare_cached(
                "SELECT epoch, last_ms, ids FROM index_epochs WHERE epoch >= ?1 ORDER BY epoch",
            )?
            .query_map([from as i64], |r| {
                let info = RunInfo {
                    last_ms: r.get(1)?,
                    ids: IdFilter::from_bytes(&r.get::<_, Vec<u8>>(2)?),
                };
                Ok((r.get::<_, i64>(0)?, info))
            })?
            .collect::<rusqlite::Result<Vec<(i64, RunInfo)>>>()?;
        let mut infos = Vec::with_capacity(rows.len());
        for (due, (epoch, info)) in (from as i64..).zip(rows) {
            // Epochs are written from 0 with no gap: one is missing (red team s57), and memory
            // would take each later run for the one before it.
            if epoch != due {
                return Err(crate::Error::State(format!(
                    "index_epochs holds epoch {epoch} where {due} is due: chain.db was edited \
                     or damaged (medchain verify says where)"
                )));
            }
            infos.push(info);
        }
        if !infos.is_empty() {
            recent.runs_written(from + infos.len(), infos);
        }
        if head <= recent.covered {
            return Ok(());
        }
        // Rows this process's writer did not add (another writer's, or a file edited by hand):
        // what the writer held may be out of date.
        self.forget_held();
        let from = recent.covered;
        for (tag, table, column) in SOURCES {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT tx, {column} FROM {table} WHERE tx > ?1 AND tx <= ?2"
            ))?;
            let mut rows = stmt.query(params![from, head])?;
            while let Some(row) = rows.next()? {
                let tx: i64 = row.get(0)?;
                let value: Vec<u8> = row.get(1)?;
                recent.insert(key(tag, &value), tx);
            }
        }
        recent.covered = head;
        Ok(())
    }

    /// Where the writer's next additions begin.
    pub fn mark(&self) -> Mark {
        let recent = self.recent();
        Mark {
            covered: recent.covered,
            runs: recent.runs.len(),
        }
    }

    /// Adds the entries of row `tx`, just written (the rows before it are covered).
    pub fn add_row<'v>(&self, tx: i64, entries: impl IntoIterator<Item = (Tag, &'v [u8])>) {
        let mut recent = self.recent();
        for (tag, value) in entries {
            recent.insert(key(tag, value), tx);
        }
        recent.covered = recent.covered.max(tx);
    }

    /// Forgets the rows the writer held ([`Held`]).
    pub(crate) fn forget_held(&self) {
        self.persons.clear();
        self.committed_persons.clear();
        self.keys.clear();
        self.grants.clear();
        // Another writer's rows may hold an entry seen with no valid transaction (red team s71).
        self.knows_invalid_seen(true);
    }

    /// Takes back every entry added after `mark` (its block's transaction failed).
    pub fn truncate(&self, mark: Mark) {
        self.forget_held();
        let mut recent = self.recent();
        // The failed block may have closed the epoch whose entries these are.
        recent.closing = None;
        if recent.runs.len() > mark.runs {
            // It finished runs that are not on disk, and memory dropped epochs for them: memory
            // is read again from the rows (the next block, or reader, catches up first).
            recent.runs.truncate(mark.runs);
            recent.epochs.clear();
            recent.covered = recent.low() * EPOCH_ROWS;
            return;
        }
        let first = epoch_of(mark.covered + 1);
        for (epoch, map) in recent.epochs.iter_mut() {
            if *epoch < first {
                continue;
            }
            map.retain(|_, slot| {
                let kept: Vec<i64> = slot
                    .rows()
                    .iter()
                    .copied()
                    .filter(|tx| *tx <= mark.covered)
                    .collect();
                match kept.as_slice() {
                    [] => false,
                    [one] => {
                        *slot = Slot::One(*one);
                        true
                    }
                    _ => {
                        *slot = Slot::Many(kept);
                        true
                    }
                }
            });
        }
        recent.covered = recent.covered.min(mark.covered);
    }

    /// The rows whose `tag` column may hold `value`, ascending: memory's, and the runs' of the
    /// older epochs whose last block is at `since_ms` or later (all of them with `None`).
    /// Candidates only: the caller compares the whole value on the row.
    pub fn rows(
        &self,
        conn: &Connection,
        tag: Tag,
        value: &[u8],
        since_ms: Option<u64>,
    ) -> Result<Vec<i64>> {
        self.rows_until(conn, tag, value, since_ms, |_| Ok(false))
    }

    /// [`Index::rows`], looked up newest first (memory, then the runs from the newest epoch
    /// down), stopping as soon as `enough` says the candidates found so far hold what the
    /// caller looks for: a lookup of a recent row reads no run.
    pub fn rows_until(
        &self,
        conn: &Connection,
        tag: Tag,
        value: &[u8],
        since_ms: Option<u64>,
        mut enough: impl FnMut(&[i64]) -> Result<bool>,
    ) -> Result<Vec<i64>> {
        let key = key(tag, value);
        let (mut found, low) = {
            let recent = self.recent();
            let found: Vec<i64> = recent
                .epochs
                .iter()
                .filter_map(|(_, map)| map.get(&key))
                .flat_map(|slot| slot.rows().iter().copied())
                .collect();
            (found, recent.low())
        };
        found.sort_unstable();
        found.dedup();
        // What memory holds answers first: a recent row found probes no older epoch's filter
        // (a probe of every one, dozens of cache misses at millions of transactions, was 6 %
        // of a validator's time). Runs are only ever added, so the epochs below `low` are the
        // same when the lock is taken again.
        if low == 0 || (!found.is_empty() && enough(&found)?) {
            return Ok(found);
        }
        let since = since_ms.map_or(i64::MIN, |ms| ms.min(i64::MAX as u64) as i64);
        let runs: Vec<i64> = {
            let recent = self.recent();
            // A failed block may have taken runs back in between (`Index::truncate`).
            (0..low.min(recent.low()))
                .rev()
                .filter(|epoch| {
                    let run = &recent.runs[*epoch as usize];
                    run.last_ms >= since && (tag != Tag::Id || run.ids.may_hold(key))
                })
                .collect()
        };
        if runs.is_empty() {
            return Ok(found);
        }
        let mut stmt =
            conn.prepare_cached("SELECT tx FROM index_runs WHERE epoch = ?1 AND key = ?2")?;
        for epoch in runs {
            let before = found.len();
            let mut rows = stmt.query(params![epoch, key])?;
            while let Some(row) = rows.next()? {
                found.push(row.get(0)?);
            }
            if found.len() > before {
                found.sort_unstable();
                found.dedup();
                if enough(&found)? {
                    break;
                }
            }
        }
        Ok(found)
    }

    /// Writes this block's part of the run of every epoch whose last row is written (`conn` is
    /// inside the block's transaction, after its rows), and drops from memory what the
    /// finished runs now answer.
    ///
    /// A run is written [`RUN_ENTRIES_PER_BLOCK`] entries a block from the block that closes its
    /// epoch (the whole run in that block, about 160,000 entries, was a stall of 200 ms in
    /// the commit path on a chain of millions), its filter and `index_epochs` row with its last
    /// part; all of it at once when a later epoch is closed too. How much is written by a
    /// height depends on the chain alone, so a replay (`medchain verify`), a migration and a
    /// validator that crashed in between hold the same rows. Until its row is written the
    /// epoch is answered from memory, and lookups read no run of it.
    pub fn close_epochs(&self, conn: &Connection) -> Result<()> {
        self.write_runs(conn, false)
    }

    /// Writes the rest of every closed epoch's run: what a store of schema 7 held (each run
    /// written whole at its close), for verification to compare with one.
    pub fn finish_runs(&self, conn: &Connection) -> Result<()> {
        self.write_runs(conn, true)
    }

    /// [`Index::close_epochs`]; with `whole`, every closed epoch's run written to its end.
    fn write_runs(&self, conn: &Connection, whole: bool) -> Result<()> {
        let head: i64 = conn
            .prepare_cached("SELECT coalesce(max(tx), 0) FROM transactions")?
            .query_row([], |r| r.get(0))?;
        // Epochs are numbered from 0 with no gap: the last one's, a seek (a count walks every
        // page of the filters, at every block).
        let mut runs: i64 = conn
            .prepare_cached("SELECT coalesce(max(epoch) + 1, 0) FROM index_epochs")?
            .query_row([], |r| r.get(0))?;
        if runs > head / EPOCH_ROWS {
            // More runs than closed epochs (red team s57: a junk row's epoch overflowed the
            // arithmetic below).
            return Err(crate::Error::State(format!(
                "index_epochs holds epoch {} of {head} transactions: chain.db was edited or \
                 damaged (medchain verify says where)",
                runs - 1
            )));
        }
        let first_new = runs;
        let mut written = Vec::new();
        while (runs + 1) * EPOCH_ROWS <= head {
            let parts = if whole || (runs + 2) * EPOCH_ROWS <= head {
                None
            } else {
                Some(height_of(conn, head)? - height_of(conn, (runs + 1) * EPOCH_ROWS)? + 1)
            };
            let started = std::time::Instant::now();
            let finished = self.write_run_part(conn, runs, parts)?;
            // Rare (a few blocks every EPOCH_ROWS transactions) and in a block's commit path.
            tracing::debug!(
                target: "medchain::index",
                epoch = runs,
                finished = finished.is_some(),
                ms = started.elapsed().as_millis() as u64,
                "wrote part of a closed epoch's run of chain.db's index"
            );
            match finished {
                Some(info) => written.push(info),
                None => break,
            }
            runs += 1;
        }
        if runs > first_new {
            self.recent().runs_written(runs as usize, written);
        }
        Ok(())
    }

    /// Writes the run of closed epoch `epoch` up to its first `parts` parts (all of it with
    /// `None`), after the entries written already; with its last entry, its times and filter
    /// too, and then what memory keeps of it.
    fn write_run_part(
        &self,
        conn: &Connection,
        epoch: i64,
        parts: Option<i64>,
    ) -> Result<Option<RunInfo>> {
        let entries = self.closed_entries(conn, epoch)?;
        let last: Option<(i64, i64)> = conn
            .prepare_cached(
                "SELECT key, tx FROM index_runs WHERE epoch = ?1
                 ORDER BY key DESC, tx DESC LIMIT 1",
            )?
            .query_row([epoch], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let from = match last.map(|last| entries.binary_search(&last)) {
            None => 0,
            Some(Ok(position)) => position + 1,
            Some(Err(_)) => {
                // Its last entry is none of the epoch's (a file edited by hand): written again.
                conn.prepare_cached("DELETE FROM index_runs WHERE epoch = ?1")?
                    .execute([epoch])?;
                0
            }
        };
        let to = match parts {
            Some(parts) => (parts.max(0) as usize)
                .saturating_mul(RUN_ENTRIES_PER_BLOCK)
                .min(entries.len()),
            None => entries.len(),
        };
        insert_run(conn, epoch, entries.get(from..to).unwrap_or_default())?;
        if to < entries.len() {
            return Ok(None);
        }
        let info = finish_run(conn, epoch, &entries)?;
        self.recent().closing = None;
        Ok(Some(info))
    }

    /// The entries of closed epoch `epoch`, sorted: from memory when it holds all of them (the
    /// writer, which added each as it wrote its row), else from the derived rows.
    fn closed_entries(&self, conn: &Connection, epoch: i64) -> Result<Entries> {
        let mut recent = self.recent();
        if let Some((closing, entries)) = &recent.closing
            && *closing == epoch
        {
            return Ok(entries.clone());
        }
        let held = recent.covered >= (epoch + 1) * EPOCH_ROWS && recent.low() <= epoch;
        let mut entries: Vec<(i64, i64)> = match recent.epochs.iter().find(|(e, _)| *e == epoch) {
            Some((_, map)) if held => {
                // A row a key, nearly always: sized first, not grown by doubling.
                let mut entries = Vec::with_capacity(map.len());
                entries.extend(
                    map.iter()
                        .flat_map(|(key, slot)| slot.rows().iter().map(|tx| (*key, *tx))),
                );
                entries
            }
            _ => {
                drop(recent);
                let entries = entries_of_rows(conn, epoch)?;
                recent = self.recent();
                entries
            }
        };
        entries.sort_unstable();
        entries.dedup();
        let entries = Arc::new(entries);
        recent.closing = Some((epoch, entries.clone()));
        Ok(entries)
    }

    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let recent = self.recent();
        let entries = recent
            .epochs
            .iter()
            .map(|(_, map)| map.values().map(|slot| slot.rows().len()).sum::<usize>())
            .sum();
        (recent.epochs.len(), entries)
    }
}

/// Entries of a closed epoch's run written by a block ([`Index::close_epochs`]): about 5 ms
/// of SQLite, a run in about 20 blocks.
#[cfg(not(test))]
const RUN_ENTRIES_PER_BLOCK: usize = 8_192;
/// Small in this crate's unit tests, so that their runs take several blocks.
#[cfg(test)]
const RUN_ENTRIES_PER_BLOCK: usize = 7;

/// Rows of a run written by one `INSERT` statement (three parameters each, far below SQLite's
/// limit of 32,766).
#[cfg(not(test))]
const RUN_ROWS_PER_INSERT: usize = 128;
/// Small in this crate's unit tests, whose runs are short, so that they write both kinds of
/// statement.
#[cfg(test)]
const RUN_ROWS_PER_INSERT: usize = 5;

/// The block height of row `tx` of `transactions`.
fn height_of(conn: &Connection, tx: i64) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT height FROM transactions WHERE tx = ?1")?
        .query_row([tx], |r| r.get(0))?)
}

/// The entries of epoch `epoch` (its rows are all written), read from the derived rows.
fn entries_of_rows(conn: &Connection, epoch: i64) -> Result<Vec<(i64, i64)>> {
    let (first, last) = (epoch * EPOCH_ROWS + 1, (epoch + 1) * EPOCH_ROWS);
    let mut entries: Vec<(i64, i64)> = Vec::new();
    for (tag, table, column) in SOURCES {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT tx, {column} FROM {table} WHERE tx >= ?1 AND tx <= ?2"
        ))?;
        let mut rows = stmt.query(params![first, last])?;
        while let Some(row) = rows.next()? {
            let tx: i64 = row.get(0)?;
            let value: Vec<u8> = row.get(1)?;
            entries.push((key(tag, &value), tx));
        }
    }
    Ok(entries)
}

/// Appends `entries` (sorted, after the run's last) to epoch `epoch`'s run.
fn insert_run(conn: &Connection, epoch: i64, entries: &[(i64, i64)]) -> Result<()> {
    // Many rows a statement: one execute per row was most of an epoch's close (4 % of a
    // validator's replica thread, amortized over the epoch).
    let insert = |rows: usize| {
        let values = vec!["(?, ?, ?)"; rows].join(", ");
        format!("INSERT INTO index_runs (epoch, key, tx) VALUES {values}")
    };
    let full = insert(RUN_ROWS_PER_INSERT);
    for chunk in entries.chunks(RUN_ROWS_PER_INSERT) {
        let args = rusqlite::params_from_iter(chunk.iter().flat_map(|&(key, tx)| [epoch, key, tx]));
        if chunk.len() == RUN_ROWS_PER_INSERT {
            conn.prepare_cached(&full)?.execute(args)?;
        } else {
            // A shorter chunk: a statement used once, not cached.
            conn.prepare(&insert(chunk.len()))?.execute(args)?;
        }
    }
    Ok(())
}

/// Writes the times and the filter of ids of epoch `epoch`, whose run holds `entries`.
fn finish_run(conn: &Connection, epoch: i64, entries: &[(i64, i64)]) -> Result<RunInfo> {
    let (first, last) = (epoch * EPOCH_ROWS + 1, (epoch + 1) * EPOCH_ROWS);
    let id_keys: Vec<i64> = entries
        .iter()
        .map(|(key, _)| *key)
        .filter(|key| (*key >> 56) == Tag::Id as i64)
        .collect();
    let ids = IdFilter::of(&id_keys);
    let time_of = |tx: i64| -> Result<i64> {
        Ok(conn
            .prepare_cached(
                "SELECT b.timestamp_ms FROM transactions t JOIN blocks b ON b.height = t.height
                 WHERE t.tx = ?1",
            )?
            .query_row([tx], |r| r.get(0))?)
    };
    let (first_ms, last_ms) = (time_of(first)?, time_of(last)?);
    conn.prepare_cached(
        "INSERT INTO index_epochs (epoch, tx, first_ms, last_ms, ids)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![epoch, last, first_ms, last_ms, ids.to_bytes()])?;
    Ok(RunInfo { last_ms, ids })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{OpenOptions, Queries, Store};
    use crate::testkit::{SAMPLE_DOCTORS, SAMPLE_PATIENTS, TestNet};

    /// Every `(tag, value)` the derived tables hold, with its rows: what a lookup must find.
    fn truth(conn: &Connection) -> Vec<(Tag, Vec<u8>, Vec<i64>)> {
        let mut out = Vec::new();
        for (tag, table, column) in SOURCES {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {column}, group_concat(tx) FROM
                     (SELECT {column}, tx FROM {table} ORDER BY tx) GROUP BY {column}"
                ))
                .unwrap();
            let rows = stmt
                .query_map([], |r| {
                    let value: Vec<u8> = r.get(0)?;
                    let rows: String = r.get(1)?;
                    Ok((value, rows))
                })
                .unwrap();
            for row in rows {
                let (value, rows) = row.unwrap();
                let rows = rows.split(',').map(|tx| tx.parse().unwrap()).collect();
                out.push((tag, value, rows));
            }
        }
        out
    }

    /// Asserts that `index`, caught up, finds exactly the rows of every value (the sample
    /// chain's values share no 7-byte prefix).
    pub(super) fn answers_as_the_rows(index: &Index, conn: &Connection) {
        index.catch_up(conn).unwrap();
        let truth = truth(conn);
        assert!(truth.len() > 20, "{} values", truth.len());
        for (tag, value, rows) in truth {
            assert_eq!(
                index.rows(conn, tag, &value, None).unwrap(),
                rows,
                "{tag:?} {}",
                hex::encode(&value[..4])
            );
        }
    }

    pub(super) fn runs(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM index_epochs", [], |r| r.get(0))
            .unwrap()
    }

    /// The writer's memory, an instance caught up from the rows alone (a store opened after a
    /// crash, or a reader in another process), and the store reopened all answer as the derived
    /// rows say; memory holds two epochs at most, the runs the rest.
    #[test]
    fn an_index_caught_up_from_the_rows_answers_as_the_writers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        let store = net.write_chain(&path, 20, 5).unwrap();
        let conn = store.connection();
        // 100 rows: twelve epochs of 8 closed, their runs written (the last may be in parts).
        assert!(super::rt_s52::assert_runs_on_schedule(conn) >= 11);
        answers_as_the_rows(store.index(), conn);
        // The last epoch with a run, one whose run is being written, and the open one.
        let (epochs, entries) = store.index().held();
        assert!(
            epochs <= 3 && entries <= 3 * 3 * EPOCH_ROWS as usize,
            "{epochs} {entries}"
        );

        let fresh = Index::default();
        fresh.catch_up(conn).unwrap();
        answers_as_the_rows(&fresh, conn);
        assert_eq!(fresh.held().0, epochs);
        drop(store);

        let reopened = Store::open(&path, &net.genesis, OpenOptions::default()).unwrap();
        answers_as_the_rows(reopened.index(), reopened.connection());
    }

    /// An epoch's filter holds every id of its run, a stored copy reads back equal, and about
    /// 1 % of other ids pass it (the seeks a lookup wastes).
    #[test]
    fn an_id_filter_holds_its_ids_and_few_others() {
        let ids: Vec<[u8; 32]> = (0..20_000u32)
            .map(|i| crate::sha256(&i.to_le_bytes()))
            .collect();
        let keys: Vec<i64> = ids[..10_000].iter().map(|id| key(Tag::Id, id)).collect();
        let filter = IdFilter::of(&keys);
        assert_eq!(IdFilter::from_bytes(&filter.to_bytes()), filter);
        assert!(keys.iter().all(|k| filter.may_hold(*k)));
        let passed = ids[10_000..]
            .iter()
            .filter(|id| filter.may_hold(key(Tag::Id, *id)))
            .count();
        assert!(passed < 250, "{passed} of 10,000 passed");
    }

    /// A lookup by id reads the runs from the newest down and stops at the id's first
    /// occurrence: a duplicate in memory does not hide the applied transaction in an old run.
    #[test]
    fn a_recent_duplicate_does_not_hide_the_first_occurrence() {
        let dir = tempfile::tempdir().unwrap();
        let net = TestNet::new(4);
        let mut store = net
            .write_chain(&dir.path().join("chain.db"), 20, 5)
            .unwrap();
        let old = net.sample_tx(3);
        let id = net.id(&old);
        // The first grant of the samples, again.
        let grant = net.sample_tx(SAMPLE_PATIENTS + SAMPLE_DOCTORS);
        let grant_id = net.id(&grant);
        let block = net.next_block(store.head(), vec![old.clone(), grant, net.sample_tx(100)]);
        let applied = net.append(&mut store, &block).unwrap();
        assert_eq!(
            applied.rejected,
            [(0, crate::store::DUPLICATE), (1, crate::store::DUPLICATE)]
        );
        let found = crate::rules::StateView::grant(&store.state(), &grant_id).unwrap();
        assert_eq!(found.map(|row| row.id), Some(grant_id));
        assert!(runs(store.connection()) > 5);
        match store.tx_status(&id).unwrap() {
            crate::store::TxStatus::Committed { height, index, .. } => {
                assert_eq!((height, index), (1, 3))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(store.transaction(&id).unwrap().unwrap().height, 1);
        let row = store.state().tx_row(&id).unwrap();
        assert_eq!(row, Some(4));
    }

    /// `block` written into `store` in a transaction then rolled back, as when its commit fails.
    pub(super) fn written_then_rolled_back(
        store: &mut Store,
        net: &TestNet,
        block: &crate::Block,
    ) -> crate::store::Applied {
        let tx = store.conn.transaction().unwrap();
        written_in(&tx, &store.index, net, block)
    }

    /// `block` written through `conn` (inside the caller's transaction), with `index`.
    fn written_in(
        conn: &Connection,
        index: &Index,
        net: &TestNet,
        block: &crate::Block,
    ) -> crate::store::Applied {
        let verdicts = net.check(block);
        super::super::write_block(conn, index, &net.genesis, block, &block.hash(), &verdicts)
            .unwrap()
    }

    /// A block whose transaction fails leaves no entry behind: memory answers as the rows
    /// after [`Index::truncate`], and the same block appended again is found.
    #[test]
    fn a_failed_block_is_taken_back_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let net = TestNet::new(4);
        let chain = net.chain(12, 5);
        let mut store = net
            .write_chain(&dir.path().join("chain.db"), 11, 5)
            .unwrap();
        let block = &chain[11];
        let mark = store.index.mark();
        written_then_rolled_back(&mut store, &net, block);
        store.index.truncate(mark);
        answers_as_the_rows(&store.index, &store.conn);
        for entry in &block.entries {
            let found = store.index.rows(&store.conn, Tag::Id, &entry.id, None);
            assert_eq!(found.unwrap(), Vec::<i64>::new());
        }
        net.append(&mut store, block).unwrap();
        answers_as_the_rows(&store.index, &store.conn);
    }

    /// A block whose transaction fails at any point of a run's writing (the block that closes
    /// its epoch, a part, its last part) leaves the runs as if it had not been tried: appended
    /// again, it writes them on schedule, memory answers as the rows, and the store verifies.
    #[test]
    fn a_failed_block_at_any_part_of_a_run_leaves_it_on_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        let mut store = net.write_chain(&path, 0, 7).unwrap();
        for block in &net.chain(24, 7) {
            let mark = store.index.mark();
            written_then_rolled_back(&mut store, &net, block);
            store.index.truncate(mark);
            net.append(&mut store, block).unwrap();
            super::rt_s52::assert_runs_on_schedule(&store.conn);
        }
        assert!(runs(&store.conn) >= 20);
        answers_as_the_rows(&store.index, &store.conn);
        drop(store);
        crate::verify::verify_store(&path, &net.genesis, &mut |_| {}).expect("verifies");
    }

    /// A store of the genesis block only, and the next block: the sample persons enrolled,
    /// then grants and records that read them.
    fn enrolling_block(dir: &Path) -> (TestNet, crate::Block, Store) {
        let net = TestNet::new(4);
        let block = net.chain(1, SAMPLE_PATIENTS + SAMPLE_DOCTORS + 6).remove(0);
        let store = net.write_chain(&dir.join("chain.db"), 0, 1).unwrap();
        (net, block, store)
    }

    /// The persons a failed block's rules read (enrolled by that block) are not held after
    /// it: the writer would find persons no committed block enrolled.
    #[test]
    fn a_failed_block_leaves_no_person_held() {
        use crate::rules::StateView;
        let dir = tempfile::tempdir().unwrap();
        let (net, block, mut store) = enrolling_block(dir.path());
        let block = &block;
        let patient = net.sample_patient(0).id;
        let mark = store.index.mark();
        let applied = written_then_rolled_back(&mut store, &net, block);
        assert!(applied.rejected.is_empty(), "{:?}", applied.rejected);
        assert!(
            store.index.persons.get(&patient).is_some(),
            "its rules read the patient"
        );
        store.index.truncate(mark);
        for k in 0..SAMPLE_PATIENTS {
            assert_eq!(store.index.persons.get(&net.sample_patient(k).id), None);
        }
        for k in 0..SAMPLE_DOCTORS {
            assert_eq!(store.index.persons.get(&net.sample_doctor(k).id), None);
        }
        net.append(&mut store, block).unwrap();
        let enrolled = store.state().person(&patient).unwrap();
        assert_eq!(enrolled.map(|row| row.person), Some(patient));
    }

    /// A reader holds only persons its snapshot shows, which are committed: one enrolled by the
    /// writer's block in flight, or by a block that failed, is neither found nor held; once
    /// the block commits, readers find it and hold it for each other. A reader holds no key
    /// (one its snapshot shows live may be revoked since); a precheck reads the writer's. A
    /// query reads neither: only its snapshot.
    #[test]
    fn a_reader_holds_only_committed_persons() {
        use crate::rules::StateView;
        let dir = tempfile::tempdir().unwrap();
        let (net, block, mut store) = enrolling_block(dir.path());
        let block = &block;
        let reader = store.reader().unwrap();
        let patient = net.sample_patient(0);
        let mark = store.index.mark();
        let in_flight = store.conn.transaction().unwrap();
        written_in(&in_flight, &store.index, &net, block);
        assert!(
            store.index.persons.get(&patient.id).is_some(),
            "the writer read it"
        );
        assert_eq!(reader.state().person(&patient.id).unwrap(), None);
        drop(in_flight);
        store.index.truncate(mark);
        assert_eq!(reader.state().person(&patient.id).unwrap(), None);
        assert_eq!(store.index.committed_persons.get(&patient.id), None);
        net.append(&mut store, block).unwrap();
        let enrolled = reader.state().person(&patient.id).unwrap();
        assert_eq!(enrolled.as_ref().map(|row| row.person), Some(patient.id));
        assert_eq!(store.index.committed_persons.get(&patient.id), enrolled);
        let other = store.reader().unwrap();
        assert_eq!(other.state().person(&patient.id).unwrap(), enrolled);
        store.index.forget_held();
        let key = patient.custodial.verifying_key().to_bytes();
        let live = reader.state().key(&key).unwrap().expect("enrolled");
        assert_eq!(store.index.keys.get(&key), None);

        // A precheck answers from the writer's keys and the readers' persons; a query reads
        // its snapshot only. Rows planted in memory tell which answered.
        let revoked = KeyRow {
            revoked: Some([7; 32]),
            ..live.clone()
        };
        store.index.keys.keep(&key, &revoked);
        let moved = PersonRow {
            home: 3,
            ..enrolled.clone().unwrap()
        };
        store.index.committed_persons.keep(&patient.id, &moved);
        assert_eq!(reader.state().key(&key).unwrap(), Some(revoked));
        assert_eq!(reader.state().person(&patient.id).unwrap(), Some(moved));
        assert_eq!(Queries::key(&reader, &key).unwrap(), Some(live));
        assert_eq!(Queries::person(&reader, &patient.id).unwrap(), enrolled);
    }

    /// A store of schema 5 (the indexes by id and by person, no runs) is migrated: `seen_ids`
    /// and the runs are filled from its rows, and verification, which derives them again,
    /// agrees.
    #[test]
    fn a_store_of_version_5_gets_its_runs_and_seen_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        drop(net.write_chain(&path, 10, 5).unwrap());
        let conn = Connection::open(&path).unwrap();
        // Schema 5's layout: each payload in its transaction's row.
        conn.execute_batch(
            "CREATE TABLE transactions_5 (
                 tx INTEGER PRIMARY KEY, height INTEGER NOT NULL, idx INTEGER NOT NULL,
                 id BLOB NOT NULL, kind TEXT NOT NULL, timestamp_ms INTEGER NOT NULL,
                 body BLOB NOT NULL, rejected TEXT);
             INSERT INTO transactions_5
                 SELECT t.tx, t.height, t.idx, t.id, t.kind, t.timestamp_ms, bd.body, t.rejected
                 FROM transactions t JOIN bodies bd ON bd.b = t.body_row;
             DROP TABLE transactions; DROP TABLE bodies; DROP TABLE proposals;
             ALTER TABLE transactions_5 RENAME TO transactions;
             CREATE UNIQUE INDEX transactions_by_position ON transactions(height, idx);
             DROP TABLE seen_ids; DROP TABLE index_runs; DROP TABLE index_epochs;
             DROP TABLE open_requests;
             CREATE INDEX transactions_by_id_prefix ON transactions(substr(id, 1, 8));
             CREATE INDEX records_by_patient ON records(patient);
             CREATE INDEX accesses_by_patient ON accesses(patient);
             CREATE INDEX grants_by_patient ON grants(patient);
             CREATE INDEX grants_by_doctor ON grants(doctor, expires_ms);
             CREATE INDEX requests_by_patient ON requests(patient, expires_ms);
             CREATE INDEX asks_by_person ON asks(person, expires_ms);
             CREATE INDEX recoveries_by_person ON recoveries(person);
             CREATE INDEX erasures_by_patient ON erasures(patient);
             PRAGMA user_version = 5;",
        )
        .unwrap();
        drop(conn);
        let store = Store::open(&path, &net.genesis, OpenOptions::default()).unwrap();
        // Six epochs closed: the migration writes the runs as the blocks would have.
        assert!(super::rt_s52::assert_runs_on_schedule(store.connection()) >= 5);
        answers_as_the_rows(store.index(), store.connection());
        let seen: i64 = store
            .connection()
            .query_row("SELECT count(*) FROM seen_ids", [], |r| r.get(0))
            .unwrap();
        assert_eq!(seen, 50);
        // Migrated while epoch 5's run is in parts (red team s54): it verifies, and the blocks
        // after go on writing the runs on schedule.
        drop(store);
        crate::verify::verify_store(&path, &net.genesis, &mut |_| {}).expect("verifies");
        let store = net.write_chain(&path, 25, 5).unwrap();
        super::rt_s52::assert_runs_on_schedule(store.connection());
        answers_as_the_rows(store.index(), store.connection());
        drop(store);
        crate::verify::verify_store(&path, &net.genesis, &mut |_| {}).expect("verifies");
    }

    /// The runs are derived state: one edited behind the store's back is found by
    /// verification, at the block that wrote the row it names.
    #[test]
    fn an_edited_run_fails_verification() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        drop(net.write_chain(&path, 10, 5).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute("DELETE FROM index_runs WHERE epoch = 3 AND tx = 30", [])
            .unwrap();
        drop(conn);
        match crate::verify::verify_store(&path, &net.genesis, &mut |_| {}) {
            Err(crate::Error::Corrupt {
                height: 6,
                fault: crate::Fault::State(what),
                ..
            }) => assert!(what.contains("index_runs"), "{what}"),
            other => panic!("expected the run's block named, got {other:?}"),
        }
    }
}

/// docs/STORAGE.md §2: opening checks the blocks of the last [`EPOCH_ROWS`] transactions, not
/// the older ones (bounded work on a long chain): a byte flipped in an old block is found by
/// the full check, one in the tail at open.
#[cfg(test)]
mod open_tests {
    use super::EPOCH_ROWS;
    use crate::store::{OpenOptions, Store};
    use crate::testkit::TestNet;
    use rusqlite::Connection;

    fn flip_header(path: &std::path::Path, height: i64) {
        let conn = Connection::open(path).unwrap();
        let mut header: Vec<u8> = conn
            .query_row(
                "SELECT header FROM blocks WHERE height = ?1",
                [height],
                |r| r.get(0),
            )
            .unwrap();
        header[10] ^= 1;
        conn.execute(
            "UPDATE blocks SET header = ?1 WHERE height = ?2",
            rusqlite::params![header, height],
        )
        .unwrap();
    }

    #[test]
    fn open_checks_the_blocks_of_the_last_epoch_of_rows() {
        let dir = tempfile::tempdir().unwrap();
        let net = TestNet::new(4);
        let (blocks, per_block): (u64, u64) = (20, 5);
        let old = dir.path().join("old.db");
        drop(net.write_chain(&old, blocks, per_block).unwrap());
        let tail = dir.path().join("tail.db");
        std::fs::copy(&old, &tail).unwrap();
        // Block 2 holds rows 6 to 10, far below the last EPOCH_ROWS of 100.
        assert!(2 * per_block as i64 <= (blocks * per_block) as i64 - EPOCH_ROWS);
        flip_header(&old, 2);
        Store::open(&old, &net.genesis, OpenOptions::default()).expect("the tail is intact");
        assert!(Store::open(&old, &net.genesis, OpenOptions::full()).is_err());
        flip_header(&tail, blocks as i64 - 1);
        assert!(Store::open(&tail, &net.genesis, OpenOptions::default()).is_err());
    }
}

/// Red team of issue 11: the epoch index was shared by path ([`Index::for_path`]), so a
/// `chain.db` replaced under a live handle (a reader of the API's pool, the key service) left
/// the new file's writer with the old file's memory (its runs' filters and what it covers):
/// lookups by id then missed the new file's transactions. Now shared by file ([`FileKey`]).
#[cfg(test)]
mod red_team11 {
    use crate::store::{OpenOptions, Queries, Store};
    use crate::testkit::TestNet;

    fn remove_store(path: &std::path::Path) {
        for suffix in ["", "-wal", "-shm"] {
            let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
            if file.exists() {
                std::fs::remove_file(file).unwrap();
            }
        }
    }

    /// A validator whose chain.db was deleted restarts in the same process (the embedded
    /// cluster, `a_chain_db_lost_under_its_node_db_restarts_recovering`) while a reader of the
    /// old file is still held: the new store must answer from its own rows.
    #[test]
    fn a_replaced_chain_db_does_not_inherit_the_old_files_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let old = TestNet::with_seed(4, 1);
        let store = old.write_chain(&path, 20, 5).unwrap();
        let held = store.reader().unwrap();
        drop(store);
        remove_store(&path);

        let net = TestNet::with_seed(4, 2);
        let blocks = net.chain(30, 5);
        let mut store = Store::open(&path, &net.genesis, OpenOptions::default()).unwrap();
        for block in &blocks {
            net.append(&mut store, block).unwrap();
        }
        let missed: Vec<u64> = blocks
            .iter()
            .flat_map(|block| {
                block
                    .entries
                    .iter()
                    .map(move |e| (block.header.height, e.id))
            })
            .filter(|(_, id)| store.transaction(id).unwrap().is_none())
            .map(|(height, _)| height)
            .collect();
        drop(held);
        let verified = crate::verify::verify_store(&path, &net.genesis, &mut |_| {});
        assert!(
            verified.is_ok(),
            "the writer decided unlike the replay: {verified:?}"
        );
        assert!(
            missed.is_empty(),
            "transactions on chain that the store does not find, at heights {missed:?}"
        );
    }
}

/// Red team s51: a lookup by id ([`super::state::SqlState`]'s `applied_by_id`: `tx_row`,
/// `sealed`, `grant`) answers what the rows alone say, through the writer's memory and through a
/// reader, with duplicates in old and new epochs, invalid entries under an id before its valid
/// one, an id first rejected by a rule then resubmitted, and invalid entries whose ids share a
/// 7-byte prefix (one key) with applied ones.
#[cfg(test)]
mod red_team_s51 {
    use std::sync::Arc;

    use rusqlite::{Connection, OptionalExtension};

    use super::super::state::SqlState;
    use crate::rules::StateView;
    use crate::store::{Queries, Store};
    use crate::testkit::TestNet;
    use crate::tx::TxId;

    fn truth_tx_row(conn: &Connection, id: &TxId) -> Option<i64> {
        conn.query_row(
            "SELECT tx FROM transactions WHERE id = ?1 AND rejected IS NULL ORDER BY tx LIMIT 1",
            [id.as_slice()],
            |r| r.get(0),
        )
        .optional()
        .unwrap()
    }

    fn truth_of(conn: &Connection, table: &str, id: &TxId) -> Option<Vec<u8>> {
        conn.query_row(
            &format!(
                "SELECT t.id FROM {table} x JOIN transactions t ON t.tx = x.tx WHERE t.id = ?1"
            ),
            [id.as_slice()],
            |r| r.get(0),
        )
        .optional()
        .unwrap()
    }

    fn check_all(store: &Store) {
        let conn = store.connection();
        let ids: Vec<Vec<u8>> = conn
            .prepare("SELECT DISTINCT id FROM transactions")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert!(ids.len() > 90, "{}", ids.len());
        for raw in ids {
            let id: TxId = raw.as_slice().try_into().unwrap();
            let want_row = truth_tx_row(conn, &id);
            let want_grant = truth_of(conn, "grants", &id);
            let want_sealed = want_grant
                .clone()
                .or_else(|| truth_of(conn, "records", &id))
                .or_else(|| truth_of(conn, "requests", &id));
            // As `Store::append_block` does before a block's rules run.
            store.index().catch_up(conn).unwrap();
            let writer = SqlState::writer(conn, store.index());
            let reader = store.state();
            for (name, view) in [("writer", &writer), ("reader", &reader)] {
                let what = format!("{name} {}", hex::encode(&id[..8]));
                assert_eq!(view.tx_row(&id).unwrap(), want_row, "tx_row {what}");
                assert_eq!(
                    view.grant(&id).unwrap().map(|g| g.id.to_vec()),
                    want_grant,
                    "grant {what}"
                );
                assert_eq!(
                    view.sealed(&id).unwrap().map(|s| s.id.to_vec()),
                    want_sealed,
                    "sealed {what}"
                );
            }
        }
    }

    /// An entry that carries no valid transaction, under `id`.
    fn invalid(id: TxId) -> crate::Entry {
        pbft::Request {
            id,
            timestamp_ms: 1,
            payload: Arc::from(&b"not a transaction"[..]),
        }
    }

    #[test]
    fn a_lookup_by_id_answers_as_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let net = TestNet::new(4);
        let mut store = net
            .write_chain(&dir.path().join("chain.db"), 20, 5)
            .unwrap();
        // Samples from 13: grant, record (of that grant), access, in turn.
        let grant_a = net.sample_tx(100);
        let record_of_b = net.sample_tx(104);
        let grant_b = net.sample_tx(103);
        let old_grant = net.sample_tx(13);
        let old_record = net.sample_tx(14);
        // An invalid entry under the id of a grant not yet applied: the grant is a duplicate.
        let mut corrupt = net.request(&grant_a);
        corrupt.payload = Arc::from(&b"garbage"[..]);
        // Invalid entries whose ids share the first 7 bytes (the index's key) with applied
        // transactions', and differ after.
        let near = |tx: &crate::SignedTx| {
            let mut id = net.id(tx);
            id[20] ^= 0xff;
            invalid(id)
        };
        let block = net.block_of_entries(
            store.head(),
            vec![
                corrupt,
                net.request(&grant_a),
                net.request(&record_of_b),
                net.request(&grant_b),
                net.request(&record_of_b),
                net.request(&old_grant),
                near(&old_grant),
                near(&old_record),
            ],
        );
        let applied = net.append(&mut store, &block).unwrap();
        assert_eq!(applied.rejected.len(), 7, "{:?}", applied.rejected);
        // More epochs on top, then the same again: every kind of occurrence in old runs.
        let mut prev_samples = 110;
        for round in 0..3 {
            for _ in 0..6 {
                let txs: Vec<_> = (prev_samples..prev_samples + 5)
                    .map(|i| net.sample_tx(i))
                    .collect();
                prev_samples += 5;
                let block = net.next_block(store.head(), txs);
                net.append(&mut store, &block).unwrap();
            }
            let block = net.block_of_entries(
                store.head(),
                vec![
                    net.request(&grant_a),
                    net.request(&grant_b),
                    net.request(&record_of_b),
                    net.request(&net.sample_tx(112 + round)),
                    near(&net.sample_tx(113 + round)),
                    near(&grant_b),
                    invalid(net.id(&net.sample_tx(500 + round))),
                ],
            );
            net.append(&mut store, &block).unwrap();
            check_all(&store);
        }
        // A grant whose first occurrence was invalid, resubmitted later valid, is never applied.
        let a = net.id(&grant_a);
        assert_eq!(store.state().tx_row(&a).unwrap(), None);
        let later = net.sample_tx(500);
        let block = net.next_block(store.head(), vec![later]);
        let applied = net.append(&mut store, &block).unwrap();
        assert_eq!(applied.rejected.len(), 1, "{:?}", applied.rejected);
        check_all(&store);
        // A fresh process: memory caught up from the rows.
        let path = store.path().to_path_buf();
        drop(store);
        let reopened = Store::open(&path, &net.genesis, crate::OpenOptions::default()).unwrap();
        check_all(&reopened);
    }

    /// An entry that carries no valid transaction under a grant's id makes the grant, valid, a
    /// duplicate: later in its block (the writer learns of the entry as it adds it), in a later
    /// block (it asks at each block whether the state holds such an entry, and then probes for
    /// one) and after a reopen.
    #[test]
    fn an_id_first_seen_invalid_makes_its_transaction_a_duplicate_ever_after() {
        let dir = tempfile::tempdir().unwrap();
        let net = TestNet::new(4);
        let path = dir.path().join("chain.db");
        let mut store = net.write_chain(&path, 10, 5).unwrap();
        let reason_at = |applied: &crate::store::Applied, position: usize| {
            applied
                .rejected
                .iter()
                .find(|(at, _)| *at == position)
                .map(|(_, reason)| *reason)
        };
        let duplicate = Some(crate::rules::reason::DUPLICATE);
        // Samples from 13: grant, record, access, in turn.
        let (grant_a, grant_b, grant_c) =
            (net.sample_tx(100), net.sample_tx(103), net.sample_tx(106));
        let block = net.block_of_entries(
            store.head(),
            vec![
                net.garbage(&grant_a),
                net.request(&grant_a),
                net.garbage(&grant_b),
            ],
        );
        let applied = net.append(&mut store, &block).unwrap();
        assert_eq!(reason_at(&applied, 1), duplicate, "{applied:?}");
        // A precheck through a reader says so as soon as the block is committed (beside the
        // writer, which learnt of the first such entry in that block), and after it is gone.
        let prechecked = |tx: &crate::SignedTx, now: u64| {
            let reader = crate::store::Reader::open(&path).unwrap();
            crate::rules::precheck(&reader.state(), &net.genesis, tx, now)
                .unwrap()
                .err()
                .map(|reject| reject.0)
        };
        let now = store.head_time_ms() + 1;
        assert_eq!(prechecked(&grant_b, now), duplicate);
        let block = net.block_of_entries(store.head(), vec![net.garbage(&grant_c)]);
        net.append(&mut store, &block).unwrap();
        let block = net.next_block(store.head(), vec![grant_b]);
        let applied = net.append(&mut store, &block).unwrap();
        assert_eq!(reason_at(&applied, 0), duplicate, "{applied:?}");
        let now = store.head_time_ms() + 1;
        drop(store);
        assert_eq!(prechecked(&grant_c, now), duplicate);
        let mut store = Store::open(&path, &net.genesis, crate::OpenOptions::default()).unwrap();
        let block = net.next_block(store.head(), vec![grant_c, net.sample_tx(109)]);
        let applied = net.append(&mut store, &block).unwrap();
        assert_eq!(reason_at(&applied, 0), duplicate, "{applied:?}");
        // A grant never seen before is applied: the check is not of every grant.
        assert_eq!(reason_at(&applied, 1), None, "{applied:?}");
    }
}

/// Red team of session 52 (rt-s52): the runs written many rows a statement, and the persons
/// readers hold ([`Index::committed_persons`]).
#[cfg(test)]
mod rt_s52 {
    use super::*;
    use crate::rules::StateView;
    use crate::store::{OpenOptions, Queries, Store};
    use crate::testkit::TestNet;

    /// The tables `write_run` reads, with only the columns it reads.
    fn bare_run_tables() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE blocks (height INTEGER PRIMARY KEY, timestamp_ms INTEGER NOT NULL);
             CREATE TABLE transactions (tx INTEGER PRIMARY KEY, height INTEGER NOT NULL,
                 id BLOB NOT NULL);
             CREATE TABLE records (tx INTEGER PRIMARY KEY, patient BLOB NOT NULL);
             CREATE TABLE accesses (tx INTEGER PRIMARY KEY, patient BLOB NOT NULL);
             CREATE TABLE grants (tx INTEGER PRIMARY KEY, patient BLOB NOT NULL,
                 doctor BLOB NOT NULL);
             CREATE TABLE requests (tx INTEGER PRIMARY KEY, patient BLOB NOT NULL,
                 doctor BLOB NOT NULL);
             CREATE TABLE asks (tx INTEGER PRIMARY KEY, person BLOB NOT NULL);
             CREATE TABLE recoveries (tx INTEGER PRIMARY KEY, person BLOB NOT NULL);
             CREATE TABLE erasures (tx INTEGER PRIMARY KEY, patient BLOB NOT NULL);
             CREATE TABLE index_runs (epoch INTEGER NOT NULL, key INTEGER NOT NULL,
                 tx INTEGER NOT NULL, PRIMARY KEY (epoch, key, tx)) WITHOUT ROWID;
             CREATE TABLE index_epochs (epoch INTEGER PRIMARY KEY, tx INTEGER NOT NULL,
                 first_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL, ids BLOB NOT NULL);
             INSERT INTO blocks VALUES (1, 1000);",
        )
        .unwrap();
        conn
    }

    /// Every `(key, tx)` the derived tables give the rows of `epoch`, sorted: what its run
    /// must hold (computed apart from `write_run`, one row at a time).
    pub(super) fn expected_run(conn: &Connection, epoch: i64) -> Vec<(i64, i64)> {
        let (first, last) = (epoch * EPOCH_ROWS + 1, (epoch + 1) * EPOCH_ROWS);
        let mut out = Vec::new();
        for (tag, table, column) in SOURCES {
            let mut stmt = conn
                .prepare(&format!("SELECT tx, {column} FROM {table}"))
                .unwrap();
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
                .unwrap();
            for row in rows {
                let (tx, value) = row.unwrap();
                if (first..=last).contains(&tx) {
                    out.push((key(tag, &value), tx));
                }
            }
        }
        out.sort_unstable();
        out
    }

    pub(super) fn stored_run(conn: &Connection, epoch: i64) -> Vec<(i64, i64)> {
        let mut stmt = conn
            .prepare("SELECT key, tx FROM index_runs WHERE epoch = ?1 ORDER BY key, tx")
            .unwrap();
        stmt.query_map([epoch], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    /// Asserts that every closed epoch's run is what its rows make, whole, but the last one
    /// closed, which may still be written: then its first parts (`RUN_ENTRIES_PER_BLOCK` a
    /// block from the block that closed it) and no `index_epochs` row. Returns the runs
    /// finished.
    pub(super) fn assert_runs_on_schedule(conn: &Connection) -> i64 {
        let head: i64 = conn
            .query_row("SELECT coalesce(max(tx), 0) FROM transactions", [], |r| {
                r.get(0)
            })
            .unwrap();
        let closed = head / EPOCH_ROWS;
        let finished = super::tests::runs(conn);
        assert!(
            finished == closed || finished + 1 == closed,
            "{finished} runs finished of {closed} closed epochs"
        );
        for epoch in 0..finished {
            assert_eq!(
                stored_run(conn, epoch),
                expected_run(conn, epoch),
                "epoch {epoch}"
            );
        }
        if finished < closed {
            let want = expected_run(conn, finished);
            let parts = height_of(conn, head).unwrap()
                - height_of(conn, (finished + 1) * EPOCH_ROWS).unwrap()
                + 1;
            let written = (parts as usize * RUN_ENTRIES_PER_BLOCK).min(want.len());
            assert!(written < want.len(), "a whole run without its row");
            assert_eq!(
                stored_run(conn, finished),
                want[..written],
                "epoch {finished}"
            );
        }
        let beyond: i64 = conn
            .query_row(
                "SELECT count(*) FROM index_runs WHERE epoch >= ?1",
                [closed],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(beyond, 0, "a run of an epoch not closed");
        finished
    }

    /// A run written `RUN_ROWS_PER_INSERT` rows a statement holds exactly the rows, for every
    /// length around the chunk boundaries (one short of a chunk, a whole chunk, one past it,
    /// several chunks, a last short chunk), in epochs 0 and 1 of one file (the epoch of each
    /// row bound right in every chunk), with the same filter and times.
    #[test]
    fn a_run_holds_every_row_at_every_chunk_boundary() {
        assert_eq!(EPOCH_ROWS, 8);
        // Rows past the Id rows, added one table after another (grants and requests add two
        // entries a row).
        let extra: [(&str, &str, usize); 7] = [
            ("records", "(?1, ?2)", 1),
            ("accesses", "(?1, ?2)", 1),
            ("grants", "(?1, ?2, ?3)", 2),
            ("requests", "(?1, ?2, ?3)", 2),
            ("asks", "(?1, ?2)", 1),
            ("recoveries", "(?1, ?2)", 1),
            ("erasures", "(?1, ?2)", 1),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for ids in [2usize, 3, 4, 5, 6, 8] {
            for extras in 0..=(7 * 8) {
                let conn = bare_run_tables();
                for epoch in 0..2i64 {
                    let base = epoch * EPOCH_ROWS;
                    // The first and last row of the epoch always (their blocks' times), and
                    // `ids` rows in all.
                    let mut txs: Vec<i64> = vec![base + 1, base + EPOCH_ROWS];
                    txs.extend((2..EPOCH_ROWS).map(|i| base + i).take(ids - 2));
                    for tx in &txs {
                        let id = crate::sha256(&[epoch as u8, *tx as u8, 1]);
                        conn.execute(
                            "INSERT INTO transactions VALUES (?1, 1, ?2)",
                            params![tx, id.as_slice()],
                        )
                        .unwrap();
                    }
                    let mut left = extras;
                    'tables: for (table, values, _) in extra {
                        for i in 1..=EPOCH_ROWS {
                            if left == 0 {
                                break 'tables;
                            }
                            let tx = base + i;
                            let a = crate::sha256(&[epoch as u8, tx as u8, 2, table.len() as u8]);
                            let b = crate::sha256(&[epoch as u8, tx as u8, 3, table.len() as u8]);
                            let sql = format!("INSERT INTO {table} VALUES {values}");
                            let done = if values.contains("?3") {
                                conn.execute(&sql, params![tx, a.as_slice(), b.as_slice()])
                            } else {
                                conn.execute(&sql, params![tx, a.as_slice()])
                            };
                            done.unwrap();
                            left -= 1;
                        }
                    }
                    let info = Index::default()
                        .write_run_part(&conn, epoch, None)
                        .unwrap()
                        .unwrap();
                    let want = expected_run(&conn, epoch);
                    seen.insert(want.len());
                    assert_eq!(
                        stored_run(&conn, epoch),
                        want,
                        "epoch {epoch}, {ids} ids, {extras} extra rows"
                    );
                    let id_keys: Vec<i64> = want
                        .iter()
                        .map(|(k, _)| *k)
                        .filter(|k| (*k >> 56) == Tag::Id as i64)
                        .collect();
                    assert_eq!(info.ids, IdFilter::of(&id_keys));
                    assert_eq!(info.last_ms, 1000);
                }
                // Epoch 0's rows are not touched by epoch 1's statements.
                assert_eq!(stored_run(&conn, 0), expected_run(&conn, 0));
            }
        }
        // Every length from one entry short of a chunk to several chunks was written.
        for len in [4, 5, 6, 9, 10, 11, 14, 15, 16, 20, 25, 26] {
            assert!(seen.contains(&len), "no run of {len} rows: {seen:?}");
        }
    }

    /// On a chain of the store's own writing, every epoch's run is what one row a statement
    /// would write, and verification (which writes the runs again) agrees.
    #[test]
    fn a_chains_runs_are_its_rows_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        let store = net.write_chain(&path, 23, 7).unwrap();
        let conn = store.connection();
        let epochs = assert_runs_on_schedule(conn);
        assert!(epochs >= 23 * 7 / EPOCH_ROWS - 1);
        let lengths: Vec<usize> = (0..epochs).map(|e| expected_run(conn, e).len()).collect();
        assert!(
            lengths.iter().any(|n| n % RUN_ROWS_PER_INSERT != 0),
            "{lengths:?}"
        );
        drop(store);
        crate::verify::verify_store(&path, &net.genesis, &mut |_| {}).expect("verifies");
    }

    /// Readers hold at most `HELD_ROWS` persons in each of two generations (a hostile client
    /// that makes admission read many persons cannot grow memory), and always the last
    /// `HELD_ROWS` kept.
    #[test]
    fn held_rows_are_bounded_and_the_last_kept_are_held() {
        let held: Held<u64, u64> = Held::default();
        for i in 0..(3 * HELD_ROWS as u64 + 7) {
            held.keep(&i, &i);
            assert!(held.all().len() <= 2 * HELD_ROWS);
            let last = i.saturating_sub(HELD_ROWS as u64 - 1);
            assert_eq!(held.get(&last), Some(last));
        }
        assert_eq!(held.get(&0), None);
        // A row kept again is held once, at its newest value.
        held.keep(&(3 * HELD_ROWS as u64), &1);
        let again: Vec<_> = held
            .all()
            .into_iter()
            .filter(|(k, _)| *k == 3 * HELD_ROWS as u64)
            .collect();
        assert_eq!(again, vec![(3 * HELD_ROWS as u64, 1)]);
        held.forget(&(3 * HELD_ROWS as u64));
        assert_eq!(held.get(&(3 * HELD_ROWS as u64)), None);
    }

    /// A chain.db deleted and made again at the same path (a validator wiped and restarted in
    /// one process, e.g. an amnesia test), while a reader of the old file is still open: the
    /// new file has its own memory, so a person the old readers held is not found in it.
    #[test]
    fn a_recreated_chain_db_does_not_see_the_old_files_persons() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        let store = net.write_chain(&path, 2, 20).unwrap();
        let patient = net.sample_patient(0).id;
        let old_reader = store.reader().unwrap();
        assert!(old_reader.state().person(&patient).unwrap().is_some());
        assert!(store.index().committed_persons.get(&patient).is_some());
        drop(store);
        for file in ["chain.db", "chain.db-wal", "chain.db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(file));
        }
        // The same chain (same genesis), its blocks not transferred yet.
        let store = Store::open(&path, &net.genesis, OpenOptions::default()).unwrap();
        assert_eq!(store.head().0, 0);
        let reader = store.reader().unwrap();
        assert_eq!(reader.state().person(&patient).unwrap(), None);
        assert_eq!(store.state().person(&patient).unwrap(), None);
        // The old reader still reads the old file, which did enroll them.
        assert!(old_reader.state().person(&patient).unwrap().is_some());
        assert_eq!(reader.state().person(&patient).unwrap(), None);
        drop(old_reader);
        let again = store.reader().unwrap();
        assert_eq!(again.state().person(&patient).unwrap(), None);
    }

    /// A block whose commit fails after a reader looked: the reader found nothing, held
    /// nothing, and another writer's uncommitted rows (a second connection in a transaction)
    /// are never held either.
    #[test]
    fn an_uncommitted_person_of_another_connection_is_never_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        let store = net.write_chain(&path, 2, 20).unwrap();
        let reader = store.reader().unwrap();
        let ghost: PersonId = [7; 16];
        let other = Connection::open(&path).unwrap();
        other
            .execute_batch(&format!(
                "BEGIN IMMEDIATE;
                 INSERT INTO persons (person, tx, role, department, name, home)
                 VALUES (x'{}', 1, 0, NULL, NULL, 0);",
                hex::encode(ghost)
            ))
            .unwrap();
        assert_eq!(reader.state().person(&ghost).unwrap(), None);
        assert_eq!(store.state().person(&ghost).unwrap(), None);
        assert_eq!(store.index().committed_persons.get(&ghost), None);
        other.execute_batch("ROLLBACK").unwrap();
        assert_eq!(reader.state().person(&ghost).unwrap(), None);
    }

    /// A chain of one block, then the block that adds sample patient 0's device key: the
    /// store, a reader of it, the patient and the key.
    fn with_a_device_key_added(
        dir: &Path,
    ) -> (
        TestNet,
        Store,
        crate::store::Reader,
        crate::testkit::TestPerson,
        crate::tx::PublicKey,
    ) {
        use crate::tx::KeyKind;
        let net = TestNet::new(4);
        let mut store = net.write_chain(&dir.join("chain.db"), 1, 20).unwrap();
        let reader = store.reader().unwrap();
        let p = net.sample_patient(0);
        let device = p.device.verifying_key().to_bytes();
        let add = net.add_key(
            &p,
            net.new_key(&p.id, KeyKind::Device, p.home, &p.device),
            None,
            &p.custodial(),
        );
        let block = net.next_block(store.head(), vec![add]);
        let applied = net.append(&mut store, &block).unwrap();
        assert!(applied.rejected.is_empty(), "{:?}", applied.rejected);
        (net, store, reader, p, device)
    }

    /// Readers never hold keys: a key a reader read live, and the writer held live, is
    /// seen revoked by both as soon as the block that revokes it commits.
    #[test]
    fn a_key_read_live_is_seen_revoked_after_its_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let (net, mut store, reader, p, device) = with_a_device_key_added(dir.path());
        let live = reader.state().key(&device).unwrap().expect("added");
        assert_eq!(live.revoked, None);
        assert_eq!(store.state().key(&device).unwrap().unwrap().revoked, None);
        // Admission and the HTTP API read persons too: held by now.
        assert!(reader.state().person(&p.id).unwrap().is_some());
        assert!(store.index().committed_persons.get(&p.id).is_some());
        let revoke = net.revoke_key(&p, device, &p.custodial());
        let block = net.next_block(store.head(), vec![revoke]);
        let applied = net.append(&mut store, &block).unwrap();
        assert!(applied.rejected.is_empty(), "{:?}", applied.rejected);
        assert!(
            reader
                .state()
                .key(&device)
                .unwrap()
                .unwrap()
                .revoked
                .is_some()
        );
        assert!(
            store
                .state()
                .key(&device)
                .unwrap()
                .unwrap()
                .revoked
                .is_some()
        );
        let other = store.reader().unwrap();
        assert!(
            other
                .state()
                .key(&device)
                .unwrap()
                .unwrap()
                .revoked
                .is_some()
        );
    }

    /// Why readers hold no keys: a reader whose snapshot began before a key's revocation
    /// reads it live after the revocation commits (and after the writer forgot it). Were it
    /// held, the writer's rules would take a revoked key for a live one. Checked through the
    /// writer's own view and a transaction the revoked key signs.
    #[test]
    fn an_old_snapshots_live_key_never_reaches_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (net, mut store, reader, p, device) = with_a_device_key_added(dir.path());
        // The writer reads (and holds) the live key, as its rules would.
        let writer = crate::store::state::SqlState::writer(&store.conn, &store.index);
        assert_eq!(writer.key(&device).unwrap().unwrap().revoked, None);
        let revoke = net.revoke_key(&p, device, &p.custodial());
        let revoking = net.next_block(store.head(), vec![revoke]);
        let seen_live = reader
            .snapshot(|r| {
                r.head()?; // the snapshot begins: before the revocation
                assert!(
                    net.append(&mut store, &revoking)
                        .unwrap()
                        .rejected
                        .is_empty()
                );
                r.state().key(&device)
            })
            .unwrap()
            .unwrap();
        assert_eq!(seen_live.revoked, None, "the old snapshot shows it live");
        let writer = crate::store::state::SqlState::writer(&store.conn, &store.index);
        assert!(writer.key(&device).unwrap().unwrap().revoked.is_some());
        // A transaction the revoked key signs is rejected by the next block.
        let other = net.sample_patient(1);
        let signed_by_revoked = net.add_key(
            &p,
            net.new_key(&p.id, crate::tx::KeyKind::Device, p.home, &other.device),
            None,
            &p.device(),
        );
        let block = net.next_block(store.head(), vec![signed_by_revoked]);
        let applied = net.append(&mut store, &block).unwrap();
        assert_eq!(
            applied.rejected.len(),
            1,
            "a revoked key signed: {applied:?}"
        );
        assert!(
            applied.rejected[0].1.contains("revoked"),
            "{:?}",
            applied.rejected
        );
    }

    /// A chain.db overwritten in place (same inode) with an older copy while a reader of this
    /// process was open: once its node opens it (`Store::open`), no reader finds a person the
    /// older copy does not enroll (`forget_held` clears what readers held).
    #[test]
    fn opening_a_store_forgets_the_persons_readers_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let older = dir.path().join("older.db");
        let net = TestNet::new(4);
        drop(Store::open(&older, &net.genesis, OpenOptions::default()).unwrap());
        let store = net.write_chain(&path, 2, 20).unwrap();
        let patient = net.sample_patient(0).id;
        let live = store.reader().unwrap();
        assert!(live.state().person(&patient).unwrap().is_some());
        store
            .connection()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        drop(store);
        std::fs::copy(&older, &path).unwrap();
        let store = Store::open(&path, &net.genesis, OpenOptions::default()).unwrap();
        assert_eq!(store.head().0, 0);
        let fresh = store.reader().unwrap();
        assert_eq!(fresh.state().person(&patient).unwrap(), None);
        assert_eq!(store.state().person(&patient).unwrap(), None);
        drop(live);
    }
}

/// Red team s53: a precheck reads the writer's held keys before anything catches the index up
/// with rows another writer committed (`rules::decide` reads `seen`, then the signer's key:
/// neither catches up), so a key revoked by a foreign writer (another process, a file
/// replaced in place) is answered live from memory.
#[cfg(test)]
mod red_team_s53 {
    use rusqlite::Connection;

    use super::*;
    use crate::rules::StateView;
    use crate::store::Queries;
    use crate::store::state::SqlState;
    use crate::testkit::{TestNet, block_time};
    use crate::tx::KeyKind;

    #[test]
    fn a_precheck_never_admits_with_a_key_a_foreign_writer_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        let mut store = net.write_chain(&path, 1, 20).unwrap();
        let reader = store.reader().unwrap();
        let p = net.sample_patient(0);
        let add = net.add_key(
            &p,
            net.new_key(&p.id, KeyKind::Device, p.home, &p.device),
            None,
            &p.custodial(),
        );
        let block = net.next_block(store.head(), vec![add]);
        assert!(net.append(&mut store, &block).unwrap().rejected.is_empty());
        let device = p.device.verifying_key().to_bytes();
        // The writer reads (and holds) the live key, as its rules would.
        let writer = SqlState::writer(&store.conn, &store.index);
        assert_eq!(writer.key(&device).unwrap().unwrap().revoked, None);

        // Another writer of the file (its own index, as another process has) commits the
        // block that revokes the key.
        let revoke = net.revoke_key(&p, device, &p.custodial());
        let revoking = net.next_block(store.head(), vec![revoke]);
        let mut conn = Connection::open(&path).unwrap();
        rusqlite::vtab::array::load_module(&conn).unwrap();
        let foreign = Index::default();
        let db = conn.transaction().unwrap();
        foreign.catch_up(&db).unwrap();
        let verdicts = net.check(&revoking);
        let applied = crate::store::write_block(
            &db,
            &foreign,
            &net.genesis,
            &revoking,
            &revoking.hash(),
            &verdicts,
        )
        .unwrap();
        assert!(applied.rejected.is_empty(), "{:?}", applied.rejected);
        db.commit().unwrap();
        drop(conn);

        // Committed: revoked (the snapshot says so).
        assert!(
            Queries::key(&reader, &device)
                .unwrap()
                .unwrap()
                .revoked
                .is_some()
        );
        // A transaction the revoked key signs, prechecked as admission does.
        // (The device key revokes itself: every other check passes on the committed state.)
        let signed_by_revoked = net.revoke_key(&p, device, &p.device());
        let now = block_time(revoking.header.height + 1);
        // The rules on the committed state alone reject it (an index that holds nothing).
        let fresh = Index::default();
        assert_eq!(
            crate::rules::precheck(
                &SqlState::reader(reader.connection(), &fresh),
                &net.genesis,
                &signed_by_revoked,
                now
            )
            .unwrap(),
            Err(crate::rules::Reject(
                crate::rules::reason::SIGNER_KEY_REVOKED
            ))
        );
        let verdict =
            crate::rules::precheck(&reader.state(), &net.genesis, &signed_by_revoked, now).unwrap();
        assert!(
            verdict.is_err(),
            "a precheck admitted a transaction signed by a key committed revoked"
        );
    }

    /// A query answers from held rows: `Queries::records_of` reads each record's signer key
    /// through `Queries::state()` (the precheck view), so the writer's held key row, not the
    /// snapshot, gives `RecordEntry::origin`. A row planted in memory tells which answered.
    #[test]
    fn records_of_reads_its_snapshot_only() {
        let dir = tempfile::tempdir().unwrap();
        let net = TestNet::new(4);
        let store = net
            .write_chain(&dir.path().join("chain.db"), 2, 20)
            .unwrap();
        let reader = store.reader().unwrap();
        let patient = net.sample_patient(0);
        let doctor = net.sample_doctor(0);
        let key = doctor.custodial.verifying_key().to_bytes();
        let records = reader.records_of(&patient.id).unwrap();
        assert_eq!(records.len(), 1);
        let origin = records[0].origin;
        assert!(origin.is_some());
        let live = Queries::key(&reader, &key).unwrap().expect("enrolled");
        store.index.keys.keep(&key, &KeyRow { origin: 99, ..live });
        assert_eq!(reader.records_of(&patient.id).unwrap()[0].origin, origin);
    }
}

/// Red team s54 (helper-152, /work/helpers/rt-s54.md): the run written in parts (dbd6f7e9).
/// Its findings 1-4 are fixed (verification compares every part, a failed block that finished
/// runs is read again from the rows); the validator trusts its own finished runs, as before.
#[cfg(test)]
mod rt_s54 {
    use rusqlite::Connection;

    use super::rt_s52::{assert_runs_on_schedule, stored_run};
    use super::tests::{answers_as_the_rows, runs, written_then_rolled_back};
    use super::*;
    use crate::store::{OpenOptions, Queries, Store};
    use crate::testkit::TestNet;

    fn verifies(path: &Path, net: &TestNet) -> bool {
        crate::verify::verify_store(path, &net.genesis, &mut |_| {}).is_ok()
    }

    /// The row of `transactions` whose id has the largest key among rows `first..=last`.
    fn largest_id_row(conn: &Connection, first: i64, last: i64) -> (i64, crate::tx::TxId) {
        let mut stmt = conn
            .prepare("SELECT tx, id FROM transactions WHERE tx >= ?1 AND tx <= ?2")
            .unwrap();
        let rows: Vec<(i64, Vec<u8>)> = stmt
            .query_map([first, last], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let (tx, id) = rows
            .into_iter()
            .max_by_key(|(_, id)| key(Tag::Id, id))
            .unwrap();
        (tx, id.try_into().unwrap())
    }

    /// One junk row of `index_runs` in an epoch not closed yet (key i64::MAX): verification
    /// finds it (it compared only the epochs both sides finished), and when the epoch closes
    /// its run is written again from its first entry (it resumed after the junk, its largest
    /// stored entry, so the run was never written and a transaction of the epoch read as never
    /// applied once memory dropped it).
    #[test]
    fn a_junk_row_in_a_future_epochs_run_fails_verify_and_is_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        drop(net.write_chain(&path, 10, 5).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO index_runs (epoch, key, tx) VALUES (7, ?1, 0)",
            [i64::MAX],
        )
        .unwrap();
        drop(conn);
        assert!(
            !verifies(&path, &net),
            "the tampered store passes verify_store"
        );
        let store = net.write_chain(&path, 30, 5).unwrap();
        // Epoch 7 is rows 57..=64: sample_tx(59) is row 60.
        let id = net.id(&net.sample_tx(59));
        assert_eq!(
            store.state().tx_row(&id).unwrap(),
            Some(60),
            "row 60's id, applied, is not found; epoch 7's run: {:?}",
            stored_run(store.connection(), 7)
        );
    }

    /// A fake `index_epochs` row for the epoch whose run is being written: the store has one
    /// more than the replay, which verification finishes and compares whole (it compared
    /// epochs below the replay's count only). A validator trusts its own finished runs, as it
    /// did before runs were written in parts; verification finds an edited one.
    #[test]
    fn a_fake_index_epochs_row_for_the_pending_epoch_fails_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        let store = net.write_chain(&path, 10, 5).unwrap();
        // 50 rows: epochs 0..=5 closed, 5's run in parts (closed by block 10).
        assert_eq!(assert_runs_on_schedule(store.connection()), 5);
        drop(store);
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO index_epochs (epoch, tx, first_ms, last_ms, ids)
             SELECT 5, 48, first_ms, last_ms, x'ffffffffffffffff' FROM index_epochs WHERE epoch = 4",
            [],
        )
        .unwrap();
        drop(conn);
        assert!(!verifies(&path, &net));
    }

    /// An entry deleted from the partial run of the pending epoch (both sides' counts equal,
    /// the epoch was not compared): verification compares the parts too. Writing resumes after
    /// the run's largest entry, so a validator whose file is edited so answers wrong, as one
    /// whose finished run is edited does; verification finds both.
    #[test]
    fn an_entry_deleted_from_the_pending_run_fails_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        drop(net.write_chain(&path, 10, 5).unwrap());
        let conn = Connection::open(&path).unwrap();
        let (k, tx): (i64, i64) = conn
            .query_row(
                "SELECT key, tx FROM index_runs WHERE epoch = 5 ORDER BY key, tx LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        conn.execute(
            "DELETE FROM index_runs WHERE epoch = 5 AND key = ?1 AND tx = ?2",
            [k, tx],
        )
        .unwrap();
        drop(conn);
        assert!(!verifies(&path, &net), "({k}, {tx}) deleted");
    }

    /// Differential: a store reopened (a fresh Index caught up from the rows) before every
    /// block writes the same runs as one written by a single writer, and verifies.
    #[test]
    fn reopened_before_every_block_writes_the_same_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
        let net = TestNet::new(4);
        let chain = net.chain(30, 3);
        let mut one = Store::open(&a, &net.genesis, OpenOptions::default()).unwrap();
        for block in &chain {
            net.append(&mut one, block).unwrap();
            let mut fresh = Store::open(&b, &net.genesis, OpenOptions::default()).unwrap();
            net.append(&mut fresh, block).unwrap();
            drop(fresh);
            let fresh = Connection::open(&b).unwrap();
            assert_runs_on_schedule(&fresh);
            for epoch in 0..=runs(&fresh) {
                assert_eq!(
                    stored_run(&fresh, epoch),
                    stored_run(one.connection(), epoch)
                );
            }
        }
        assert!(verifies(&a, &net) && verifies(&b, &net));
    }

    /// A failed block that is not the block then appended at its height (here: one that
    /// closes two epochs, so it finishes the pending run at once and notes two runs in memory
    /// that the rollback does not take back), then the real chain.
    #[test]
    fn a_failed_other_block_then_the_chain_answers_as_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        let chain = net.chain(30, 5);
        let mut store = net.write_chain(&path, 8, 5).unwrap();
        // 40 rows: epoch 4 (rows 33..=40) closed by block 8, its run in parts.
        assert_eq!(assert_runs_on_schedule(&store.conn), 4);
        let other = net.next_block(
            store.head(),
            (0..20).map(|i| net.sample_tx(500 + i)).collect(),
        );
        let mark = store.index.mark();
        written_then_rolled_back(&mut store, &net, &other);
        store.index.truncate(mark);
        for block in &chain[8..] {
            net.append(&mut store, block).unwrap();
            assert_runs_on_schedule(&store.conn);
            answers_as_the_rows(&store.index, &store.conn);
        }
    }

    /// The same block failed once then appended again judges its transactions unlike a
    /// validator where it did not fail: the failed try closed two epochs, finished the pending
    /// run of epoch 4 and noted runs 4 and 5 in memory (dropping epoch 4's entries), which
    /// `truncate` does not take back; the retry's rules then find epoch 4 neither in memory nor
    /// in its run on disk (partial). Needs a block of more than EPOCH_ROWS entries.
    #[test]
    fn the_same_block_failed_once_judges_unlike_a_validator_where_it_did_not() {
        let dir = tempfile::tempdir().unwrap();
        let net = TestNet::new(4);
        let mut failed = net.write_chain(&dir.path().join("x.db"), 8, 5).unwrap();
        let mut clean = net.write_chain(&dir.path().join("y.db"), 8, 5).unwrap();
        // 40 rows: epoch 4 (rows 33..=40) closed by block 8, its run in parts.
        assert_eq!(assert_runs_on_schedule(&failed.conn), 4);
        // The id of epoch 4 past its run's first part (ids sort first), again; then 19 new
        // ones: rows 41..=60.
        let (row, _) = largest_id_row(&failed.conn, 33, 40);
        let mut txs = vec![net.sample_tx(row as u64 - 1)];
        txs.extend((0..19).map(|i| net.sample_tx(500 + i)));
        let block = net.next_block(failed.head(), txs);
        let mark = failed.index.mark();
        written_then_rolled_back(&mut failed, &net, &block);
        failed.index.truncate(mark);
        // What the retry's rules read: the id of row `row`, applied.
        let id = net.id(&net.sample_tx(row as u64 - 1));
        let (x, y) = (
            failed.state().tx_row(&id).unwrap(),
            clean.state().tx_row(&id).unwrap(),
        );
        assert_eq!(x, y, "row {row}'s id after a failed try, and without");
        let a = net.append(&mut failed, &block).unwrap().rejected;
        let b = net.append(&mut clean, &block).unwrap().rejected;
        assert_eq!(a, b, "verdicts after a failed try, and without");
    }

    /// Differential: blocks of every size (empty ones too) mixing new transactions,
    /// duplicates (of old rows and within the block), entries that carry no valid transaction
    /// and torsion signatures; after each block the runs are on schedule against the rows (a
    /// run from memory equals one from the rows), lookups answer as the rows, and at the end
    /// a reopened store and `verify_store` agree.
    #[test]
    fn mixed_blocks_write_memory_runs_equal_to_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        let mut store = net.write_chain(&path, 0, 1).unwrap();
        let mut next = 0u64;
        for b in 0..40u64 {
            let size = (b * 7) % 11;
            let mut entries = Vec::new();
            for j in 0..size {
                let entry = match (b + j) % 6 {
                    0 if next > 3 => net.request(&net.sample_tx(next / 2)),
                    1 => {
                        let mut r = net.request(&net.sample_tx(next));
                        let mut payload = r.payload.to_vec();
                        let n = payload.len();
                        payload[n / 2] ^= 0x55;
                        r.payload = payload.into();
                        r
                    }
                    2 if next > 20 => net.request(&net.torsion_tx(next + 1000)),
                    _ => {
                        next += 1;
                        net.request(&net.sample_tx(next - 1))
                    }
                };
                if j == 3 {
                    entries.push(entry.clone());
                }
                entries.push(entry);
            }
            let block = net.block_of_entries(store.head(), entries);
            let mark = store.index.mark();
            if b % 3 == 0 {
                written_then_rolled_back(&mut store, &net, &block);
                store.index.truncate(mark);
            }
            net.append(&mut store, &block).unwrap();
            assert_runs_on_schedule(&store.conn);
            if b >= 12 {
                answers_as_the_rows(&store.index, &store.conn);
            }
        }
        assert!(runs(&store.conn) >= 10, "{}", runs(&store.conn));
        let kinds: Vec<(String, i64)> = store
            .conn
            .prepare("SELECT coalesce(rejected, 'applied'), count(*) FROM transactions GROUP BY 1")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert!(kinds.len() >= 3, "{kinds:?}");
        drop(store);
        let store = Store::open(&path, &net.genesis, OpenOptions::default()).unwrap();
        answers_as_the_rows(store.index(), store.connection());
        drop(store);
        assert!(verifies(&path, &net));
    }

    /// A store of the previous binary (every closed epoch's run whole, written by the block
    /// that closed it; emulated by finishing the pending run at once) verifies and goes on.
    #[test]
    fn a_store_with_whole_runs_verifies_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        drop(net.write_chain(&path, 10, 5).unwrap());
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        Index::default().finish_runs(&tx).unwrap();
        tx.commit().unwrap();
        assert_eq!(runs(&conn), 6, "epoch 5's run finished");
        drop(conn);
        assert!(
            verifies(&path, &net),
            "a store of whole runs does not verify"
        );
        let store = net.write_chain(&path, 25, 5).unwrap();
        assert_runs_on_schedule(store.connection());
        answers_as_the_rows(store.index(), store.connection());
        drop(store);
        assert!(verifies(&path, &net));
    }

    /// The previous binary (whole runs, plain INSERT) on a store left mid-run by this one would
    /// write the pending epoch's run whole over its parts, which fails on the primary key at
    /// every block: the store's schema is one it refuses.
    #[test]
    fn the_previous_binary_refuses_a_store_mid_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        let store = net.write_chain(&path, 10, 5).unwrap();
        assert_eq!(assert_runs_on_schedule(store.connection()), 5);
        let version: i64 = store
            .connection()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert!(version > 7, "schema {version}");
        assert!(crate::store::schema::check_version(version, &path).is_ok());
    }
}

/// Red team s57: `catch_up` reads `epoch >= runs.len()` and `write_runs` takes
/// `max(epoch) + 1` (b2156425) instead of a count of `index_epochs`.
#[cfg(test)]
mod rt_s57 {
    use rusqlite::Connection;

    use crate::store::Queries;

    use super::tests::answers_as_the_rows;
    use crate::testkit::TestNet;

    fn verifies(path: &std::path::Path, net: &TestNet) -> bool {
        crate::verify::verify_store(path, &net.genesis, &mut |_| {}).is_ok()
    }

    /// A damaged store (one `index_epochs` row of the middle deleted): the count made the
    /// writer write an epoch that has its row again, a primary key refused at every block (the
    /// validator stops); `max + 1` goes on, and memory's runs are off by one (`runs[2]` is
    /// epoch 3's filter), so once memory drops epoch 2 its ids are not found: a duplicate of
    /// one is admitted by this validator alone. Either refusing to go on or answering as the
    /// rows is fine; going on and answering wrong is not.
    #[test]
    fn a_deleted_middle_epoch_row_stops_the_writer_or_is_answered_right() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        drop(net.write_chain(&path, 10, 5).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute("DELETE FROM index_epochs WHERE epoch = 2", [])
            .unwrap();
        drop(conn);
        assert!(!verifies(&path, &net), "verify misses the deleted row");
        match net.write_chain(&path, 30, 5) {
            Err(e) => assert!(e.to_string().contains("index_epochs"), "{e}"),
            Ok(store) => {
                let epochs: Vec<i64> = store
                    .connection()
                    .prepare("SELECT epoch FROM index_epochs ORDER BY epoch")
                    .unwrap()
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect();
                eprintln!("the writer went on; index_epochs: {epochs:?}");
                // Row 20 (epoch 2) is sample_tx(19).
                let id = net.id(&net.sample_tx(19));
                let truth: Option<i64> = store
                    .connection()
                    .query_row(
                        "SELECT tx FROM transactions WHERE id = ?1 AND rejected IS NULL
                         ORDER BY tx LIMIT 1",
                        [id.as_slice()],
                        |r| r.get(0),
                    )
                    .ok();
                assert_eq!(
                    store.state().tx_row(&id).unwrap(),
                    truth,
                    "the writer went on with index_epochs {epochs:?} and misses epoch 2's id"
                );
                answers_as_the_rows(store.index(), store.connection());
            }
        }
    }

    /// A chain of 10 blocks of 5 with a junk `index_epochs` row at `epoch` (epoch 4's copied).
    fn with_junk_epoch(epoch: i64) -> (tempfile::TempDir, std::path::PathBuf, TestNet) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        drop(net.write_chain(&path, 10, 5).unwrap());
        Connection::open(&path)
            .unwrap()
            .execute(
                "INSERT INTO index_epochs (epoch, tx, first_ms, last_ms, ids)
                 SELECT ?1, tx, first_ms, last_ms, ids FROM index_epochs WHERE epoch = 4",
                [epoch],
            )
            .unwrap();
        (dir, path, net)
    }

    /// A junk `index_epochs` row with a huge epoch: `max(epoch) + 1` is taken as the number of
    /// runs, and `(runs + 1) * EPOCH_ROWS` overflows (a panic with overflow checks, as in the
    /// tests; wrapped in release). The count could not be that large.
    #[test]
    fn a_junk_row_with_a_huge_epoch_does_not_panic() {
        let (_dir, path, net) = with_junk_epoch(i64::MAX / super::EPOCH_ROWS);
        assert!(!verifies(&path, &net), "verify misses the junk row");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            net.write_chain(&path, 30, 5).map(drop)
        }));
        assert!(result.is_ok(), "a junk epoch number panics the writer");
        eprintln!("writer: {:?}", result.unwrap().err());
    }

    /// A junk row at epoch i64::MAX: `max + 1` is a REAL in SQLite; an error, no panic.
    #[test]
    fn a_junk_row_at_the_last_epoch_does_not_panic() {
        let (_dir, path, net) = with_junk_epoch(i64::MAX);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            net.write_chain(&path, 30, 5).map(drop)
        }));
        assert!(result.is_ok(), "epoch i64::MAX panics the writer");
        eprintln!("writer: {:?}", result.unwrap().err());
    }

    /// A junk row past a gap (epoch 1000): reopening, lookups and more blocks never panic, and
    /// verification finds it; the writer refuses to go on, or answers as the rows.
    #[test]
    fn a_junk_row_past_a_gap_does_not_panic_and_fails_verify() {
        let (_dir, path, net) = with_junk_epoch(1000);
        assert!(!verifies(&path, &net));
        match net.write_chain(&path, 30, 5) {
            Err(e) => assert!(e.to_string().contains("index_epochs"), "{e}"),
            Ok(store) => answers_as_the_rows(store.index(), store.connection()),
        }
    }

    /// With a gap (a junk row at epoch 1000), each catch-up reads the rows at or past
    /// `runs.len()` again: the junk row is appended to memory's runs at every call (every
    /// admission lookup by id), `low` climbs past the epochs that have runs and memory drops
    /// their entries. The count made it idempotent (count <= len: nothing read). Now the gap is
    /// refused, each time, and memory is left as it was.
    #[test]
    fn catch_up_is_idempotent_on_a_store_with_a_gap() {
        use crate::store::{OpenOptions, Store};
        let (_dir, path, net) = with_junk_epoch(1000);
        let store = match Store::open(&path, &net.genesis, OpenOptions::unverified()) {
            Err(e) => return assert!(e.to_string().contains("index_epochs"), "{e}"),
            Ok(store) => store,
        };
        let index = store.index();
        let first = index
            .catch_up(store.connection())
            .map_err(|e| e.to_string());
        let after_one = index.recent().runs.len();
        for _ in 0..3 {
            let again = index
                .catch_up(store.connection())
                .map_err(|e| e.to_string());
            assert_eq!(again, first);
        }
        assert_eq!(
            index.recent().runs.len(),
            after_one,
            "each catch-up appended the junk run again"
        );
    }
}
