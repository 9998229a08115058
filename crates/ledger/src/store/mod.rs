//! The SQLite store of one replica's chain (`chain.db`).
//!
//! One [`Store`] owns the only writing connection; [`Reader`]s are separate read-only
//! connections (WAL mode lets them read a consistent snapshot while the writer appends).
//! [`Store::append_block`] writes a block, its transactions and the state they derive (records,
//! consents, access log) in one SQLite transaction with `synchronous=FULL`: after a crash at any
//! instant a block is wholly present or wholly absent, and once `append_block` returns it
//! survives a power cut.
//!
//! Opening a store verifies the whole chain against the genesis (unless explicitly told not to,
//! for benchmarks), and refuses a store that fails, naming the file, the first bad height and
//! the fault: a tampered chain is never served.
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::block::{Block, BlockHeader, Certificate};
use crate::genesis::Genesis;
use crate::tx::{Checked, SignedTransaction, Transaction};
use crate::{Error, Hash, Result};

mod schema;
pub(crate) mod state;

pub use state::{CONSENT_GRANTED, CONSENT_RECORDED, CONSENT_USED, DUPLICATE};

/// How to open a [`Store`].
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    /// Verify the whole chain before returning the store. On by default; turning it off is for
    /// benchmarks and tests that check verification separately.
    pub verify: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { verify: true }
    }
}

impl OpenOptions {
    /// Opens without verifying the chain: only for benchmarks and tests.
    pub fn unverified() -> Self {
        OpenOptions { verify: false }
    }
}

/// What [`Store::append_block`] decided for the block's transactions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// `(index in block, reason)` of every transaction the state machine rejected.
    pub rejected: Vec<(usize, &'static str)>,
}

/// The writer of one `chain.db`.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    head: (u64, Hash),
}

/// A read-only connection to a `chain.db`, for the API and for verification.
pub struct Reader {
    conn: Connection,
    path: PathBuf,
}

fn busy_timeout(conn: &Connection) -> Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(())
}

impl Store {
    /// Opens (creating if absent) the store at `path` for the chain of `genesis`: migrates the
    /// schema, writes the genesis block into a new store, refuses a store of another chain, and
    /// verifies the chain unless `options` says not to.
    pub fn open(path: &Path, genesis: &Genesis, options: OpenOptions) -> Result<Store> {
        let mut conn = Connection::open(path).map_err(|e| match e {
            rusqlite::Error::SqliteFailure(..) => Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            },
            other => Error::Sqlite(other),
        })?;
        busy_timeout(&conn)?;
        // WAL: readers never block the writer; FULL: a commit is on disk when it returns.
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(format!("cannot use WAL (journal mode {mode})")),
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "cache_size", -32_768)?;
        // Checkpoint every 4096 WAL pages (16 MiB) rather than SQLite's 1000: index pages that
        // every block dirties are then copied into the database once per several blocks
        // instead of about once per 1,000-transaction block. Measured on the 4-validator
        // cluster: ~3% less CPU per committed transaction, p99 at 1,000 tx/s unchanged.
        conn.pragma_update(None, "wal_autocheckpoint", 4096)?;
        conn.set_prepared_statement_cache_capacity(64);
        schema::migrate(&mut conn, path)?;

        let has_genesis: Option<Vec<u8>> = conn
            .query_row("SELECT hash FROM blocks WHERE height = 0", [], |r| r.get(0))
            .optional()?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            head: (0, genesis.hash()),
        };
        match has_genesis {
            None => store.write_genesis(genesis)?,
            Some(hash) if hash.as_slice() == genesis.hash() => {}
            Some(_) => {
                return Err(Error::Corrupt {
                    path: path.to_path_buf(),
                    height: 0,
                    fault: crate::Fault::Genesis,
                });
            }
        }
        store.head = query::head(&store.conn)?;
        if options.verify {
            crate::verify::verify_connection(&store.conn, &store.path, genesis, &mut |_| {})?;
        }
        Ok(store)
    }

    fn write_genesis(&mut self, genesis: &Genesis) -> Result<()> {
        let tx = self.conn.transaction()?;
        insert_block(&tx, genesis.block(), &genesis.hash())?;
        tx.commit()?;
        Ok(())
    }

    /// The file this store writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Height and hash of the last block (kept in memory; the store is its only writer).
    pub fn head(&self) -> (u64, Hash) {
        self.head
    }

    /// Appends the next block durably: the block, its entries and the state they derive, in
    /// one SQLite transaction. Refuses a block that does not extend the head or whose header
    /// is not the one its entries build ([`BlockHeader::rebuilt`]).
    ///
    /// `checked` is what each entry carries, in order: what [`crate::crypto::check_entries`]
    /// decides for `block.entries` (the node decides it with fewer checks for requests it
    /// checked as they arrived). The store trusts it, as it trusts that the certificate was
    /// checked ([`crate::verify::check_block`]); verification on opening derives both again from
    /// the stored bytes. An invalid entry is stored as it came, rejected with its
    /// [`crate::tx::Invalid::reason`], and changes nothing but the ids seen (its request was executed).
    pub fn append_block(&mut self, block: &Block, checked: &[Checked]) -> Result<Applied> {
        let (head, head_hash) = self.head;
        let h = block.header.height;
        let not_next = |reason: String| Error::NotNext { height: h, reason };
        if h != head + 1 {
            return Err(not_next(format!("the head is at height {head}")));
        }
        if block.header.prev_hash != head_hash {
            return Err(not_next(format!(
                "previous hash {} is not the head's hash {}",
                crate::short_hex(&block.header.prev_hash),
                crate::short_hex(&head_hash)
            )));
        }
        if block.header.seq != h {
            return Err(not_next(format!(
                "seq {} is not its height",
                block.header.seq
            )));
        }
        if checked.len() != block.entries.len() {
            return Err(not_next(format!(
                "{} verdicts for {} entries",
                checked.len(),
                block.entries.len()
            )));
        }
        if block.header.rebuilt(&block.entries) != block.header {
            return Err(not_next(
                "the merkle root or timestamp does not match its entries".into(),
            ));
        }

        let hash = block.hash();
        let ids: Vec<Hash> = block.ids().collect();
        let mut applied = Applied::default();
        let tx = self.conn.transaction()?;
        // The state machine's verdicts, decided in memory over what the chain already holds
        // (fetched in a few batched queries rather than a few thousand point queries).
        let mut state = prefetch_state(&tx, &ids, checked)?;
        insert_block(&tx, block, &hash)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO transactions (height, idx, id, kind, patient_id, timestamp_ms, body, rejected)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for (index, (entry, content)) in block.entries.iter().zip(checked).enumerate() {
                let rejected = state.apply(0, &entry.id, content);
                let (kind, patient_id) = indexed_columns(content);
                insert.execute(params![
                    h as i64,
                    index as i64,
                    entry.id.as_slice(),
                    kind,
                    patient_id,
                    entry.timestamp_ms as i64,
                    &entry.payload[..],
                    rejected,
                ])?;
                let row = tx.last_insert_rowid();
                match (rejected, content) {
                    (Some(reason), _) => applied.rejected.push((index, reason)),
                    (None, Ok(t)) => apply_effects(&tx, row, &t.body)?,
                    (None, Err(_)) => {}
                }
            }
        }
        tx.commit()?;
        self.head = (h, hash);
        Ok(applied)
    }

    /// A read-only connection to the same file.
    pub fn reader(&self) -> Result<Reader> {
        Reader::open(&self.path)
    }
}

fn insert_block(conn: &Connection, block: &Block, hash: &Hash) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO blocks (height, hash, header, certificate, tx_count, timestamp_ms, proposer, view)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let header = &block.header;
    stmt.execute(params![
        header.height as i64,
        hash.as_slice(),
        header.to_bytes(),
        block.certificate.to_bytes(),
        block.entries.len() as i64,
        header.timestamp_ms as i64,
        header.proposer,
        header.view as i64,
    ])?;
    Ok(())
}

fn apply_effects(conn: &Connection, row: i64, body: &Transaction) -> Result<()> {
    match body {
        Transaction::AddRecord {
            patient_id,
            consent_hash,
            ..
        } => {
            conn.prepare_cached(
                "INSERT INTO records (patient_id, tx, consent_hash) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![patient_id, row, consent_hash.as_slice()])?;
        }
        Transaction::ConsentGranted { consent_hash, .. } => {
            set_consent_tx(conn, "granted_tx", consent_hash, row)?;
        }
        Transaction::ConsentUsed { consent_hash, .. } => {
            set_consent_tx(conn, "used_tx", consent_hash, row)?;
        }
        Transaction::Access { patient_id, .. } => {
            conn.prepare_cached("INSERT INTO accesses (patient_id, tx) VALUES (?1, ?2)")?
                .execute(params![patient_id, row])?;
        }
    }
    Ok(())
}

/// Sets `column` (`granted_tx` or `used_tx`) of a consent's row to `row`. One row per consent
/// hash, without a unique index (see schema migration 2): update the row if there is one, else
/// add it.
fn set_consent_tx(
    conn: &Connection,
    column: &'static str,
    consent_hash: &Hash,
    row: i64,
) -> Result<()> {
    let updated = conn
        .prepare_cached(&format!(
            "UPDATE consents SET {column} = ?3
             WHERE substr(consent_hash, 1, 8) = ?1 AND consent_hash = ?2"
        ))?
        .execute(params![
            key_prefix(consent_hash),
            consent_hash.as_slice(),
            row
        ])?;
    if updated == 0 {
        conn.prepare_cached(&format!(
            "INSERT INTO consents (consent_hash, {column}) VALUES (?1, ?2)"
        ))?
        .execute(params![consent_hash.as_slice(), row])?;
    }
    Ok(())
}

/// Lookups per batched query: below SQLite's parameter limit, and one cached statement.
const LOOKUP_CHUNK: usize = 128;

/// The indexed prefix of a hash key (schema migration 2): `substr(key, 1, 8)` in SQL.
fn key_prefix(key: &Hash) -> &[u8] {
    &key[..8]
}

/// The rows a query `SELECT <key>, ... FROM <table> WHERE substr(<key>, 1, 8) IN (...)` finds
/// for the prefixes of `keys`, mapped by `row`: a superset of the keys' rows (a prefix may
/// collide), so the caller matches whole keys. The last chunk is padded by repeating its last
/// key, so every chunk uses the same cached statement.
fn lookup<T>(
    conn: &Connection,
    select: &str,
    keys: &[Hash],
    mut row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let placeholders = vec!["?"; LOOKUP_CHUNK].join(",");
    let sql = format!("{select} IN ({placeholders})");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut found = Vec::new();
    for chunk in keys.chunks(LOOKUP_CHUNK) {
        let Some(last) = chunk.last() else { continue };
        let params = rusqlite::params_from_iter(
            (0..LOOKUP_CHUNK).map(|i| key_prefix(chunk.get(i).unwrap_or(last))),
        );
        let mut rows = stmt.query(params)?;
        while let Some(r) = rows.next()? {
            found.push(row(r)?);
        }
    }
    Ok(found)
}

/// The `kind` and `patient_id` columns of an entry: its transaction's, or [`INVALID_KIND`] and
/// no patient for an invalid entry, whose content no validator vouches for.
pub(crate) fn indexed_columns(content: &Checked) -> (&str, &str) {
    match content {
        Ok(t) => (t.body.kind(), t.body.patient_id()),
        Err(_) => (INVALID_KIND, ""),
    }
}

/// The `kind` of an entry that carries no valid transaction ([`crate::tx::Invalid`]).
pub const INVALID_KIND: &str = "invalid";

/// The part of the chain's state that the entries with ids `ids` and verdicts `checked` can
/// touch: which ids were seen, which consents have a record, which were granted or used.
fn prefetch_state(conn: &Connection, ids: &[Hash], checked: &[Checked]) -> Result<state::Replay> {
    let mut state = state::Replay::default();
    let hash = |r: &rusqlite::Row<'_>, i| -> rusqlite::Result<Hash> {
        let bytes: Vec<u8> = r.get(i)?;
        Ok(bytes.try_into().unwrap_or([0; 32]))
    };
    // Rows whose key only shares the prefix land in the sets under their own (different)
    // hash, where no lookup of ours will match them.
    for id in lookup(
        conn,
        "SELECT id FROM transactions WHERE substr(id, 1, 8)",
        ids,
        |r| hash(r, 0),
    )? {
        state.seen.insert(id);
    }
    // An AddRecord is decided by whether its consent has a record, a grant or use by the
    // consent's row: each hash is looked up only where its transaction's rule looks.
    let mut record_consents = Vec::new();
    let mut consents = Vec::new();
    for t in checked.iter().flatten() {
        match &t.body {
            Transaction::AddRecord { consent_hash, .. } => record_consents.push(*consent_hash),
            Transaction::ConsentGranted { consent_hash, .. }
            | Transaction::ConsentUsed { consent_hash, .. } => consents.push(*consent_hash),
            Transaction::Access { .. } => {}
        }
    }
    for c in lookup(
        conn,
        "SELECT consent_hash FROM records WHERE substr(consent_hash, 1, 8)",
        &record_consents,
        |r| hash(r, 0),
    )? {
        state.record_consents.insert(c);
    }
    for (c, granted, used) in lookup(
        conn,
        "SELECT consent_hash, granted_tx, used_tx FROM consents WHERE substr(consent_hash, 1, 8)",
        &consents,
        |r| {
            Ok((
                hash(r, 0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        },
    )? {
        state.consents.insert(c, (granted, used));
    }
    Ok(state)
}

impl Reader {
    /// Opens `path` read-only. The store must exist (a [`Store`] created it).
    pub fn open(path: &Path) -> Result<Reader> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        busy_timeout(&conn)?;
        conn.set_prepared_statement_cache_capacity(64);
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        schema::check_version(version, path)?;
        if version != schema::VERSION {
            // A store not yet migrated by the program that writes it.
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(format!(
                    "schema version {version}, this program reads {}; open it with its node first",
                    schema::VERSION
                )),
            });
        }
        Ok(Reader {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Height and hash of the last block.
    pub fn head(&self) -> Result<(u64, Hash)> {
        query::head(&self.conn)
    }

    /// Verifies the whole chain against `genesis`; see [`crate::verify`].
    pub fn verify(
        &self,
        genesis: &Genesis,
        progress: &mut dyn FnMut(crate::verify::Progress),
    ) -> Result<crate::verify::Summary> {
        crate::verify::verify_connection(&self.conn, &self.path, genesis, progress)
    }
}

/// One block as the store holds it: a header and transactions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockSummary {
    pub height: u64,
    pub hash: Hash,
    pub timestamp_ms: u64,
    pub proposer: u32,
    pub view: u64,
    pub tx_count: u64,
}

/// Where a transaction is on chain, if it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxStatus {
    /// Committed in block `height` at `index`; `rejected` says why the state machine did not
    /// apply it, if it did not.
    Committed {
        height: u64,
        index: u64,
        rejected: Option<String>,
    },
    /// Not on chain (it may be pending at some node: that is the node's business).
    Unknown,
}

/// A committed transaction with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedTx {
    pub height: u64,
    pub index: u64,
    pub tx: SignedTransaction,
    pub rejected: Option<String>,
}

/// A medical record as the chain holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordRow {
    pub tx_id: Hash,
    pub height: u64,
    pub index: u64,
    pub timestamp_ms: u64,
    pub validator: u32,
    pub patient_id: String,
    pub doctor_id: String,
    pub department: String,
    pub diagnosis: String,
    pub prescription: String,
    pub notes: String,
    pub consent_hash: Hash,
}

/// One entry of a patient's access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRow {
    pub tx_id: Hash,
    pub height: u64,
    pub index: u64,
    pub timestamp_ms: u64,
    pub patient_id: String,
    pub reader_id: String,
    pub reader_role: String,
    pub consent_hash: Option<Hash>,
}

/// A consent's life on chain: its grant and its use, each if it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsentRow {
    pub consent_hash: Hash,
    pub granted: Option<CommittedTx>,
    pub used: Option<CommittedTx>,
}

/// The read queries, the same on the writer and on a reader.
macro_rules! read_queries {
    ($t:ty) => {
        impl $t {
            /// The block at `height`.
            pub fn block(&self, height: u64) -> Result<Option<Block>> {
                query::block(&self.conn, height)
            }

            /// The commit certificate of the block at `height` (without reading its entries).
            pub fn certificate(&self, height: u64) -> Result<Option<Certificate>> {
                let bytes: Option<Vec<u8>> = self
                    .conn
                    .prepare_cached("SELECT certificate FROM blocks WHERE height = ?1")?
                    .query_row([height as i64], |r| r.get(0))
                    .optional()?;
                bytes.map(|b| Certificate::from_bytes(&b)).transpose()
            }

            /// The block with hash `hash`.
            pub fn block_by_hash(&self, hash: &Hash) -> Result<Option<Block>> {
                let height: Option<i64> = self
                    .conn
                    .prepare_cached("SELECT height FROM blocks WHERE hash = ?1")?
                    .query_row([hash.as_slice()], |r| r.get(0))
                    .optional()?;
                match height {
                    Some(h) => query::block(&self.conn, h as u64),
                    None => Ok(None),
                }
            }

            /// Up to `limit` blocks from `from` upwards (for state transfer).
            pub fn blocks_from(&self, from: u64, limit: usize) -> Result<Vec<Block>> {
                let mut blocks = Vec::new();
                for h in from.. {
                    if blocks.len() >= limit {
                        break;
                    }
                    match query::block(&self.conn, h)? {
                        Some(b) => blocks.push(b),
                        None => break,
                    }
                }
                Ok(blocks)
            }

            /// Up to `limit` block summaries, newest first, below `before` (or from the head).
            pub fn blocks_page(
                &self,
                before: Option<u64>,
                limit: usize,
            ) -> Result<Vec<BlockSummary>> {
                let before = before.map_or(i64::MAX, |b| b as i64);
                let mut stmt = self.conn.prepare_cached(
                    "SELECT height, hash, timestamp_ms, proposer, view, tx_count FROM blocks
                     WHERE height < ?1 ORDER BY height DESC LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![before, limit as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, u32>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                })?;
                let mut page = Vec::new();
                for row in rows {
                    let (height, hash, ts, proposer, view, tx_count) = row?;
                    page.push(BlockSummary {
                        height: height as u64,
                        hash: query::hash(hash, "block hash")?,
                        timestamp_ms: ts as u64,
                        proposer,
                        view: view as u64,
                        tx_count: tx_count as u64,
                    });
                }
                Ok(page)
            }

            /// The first occurrence on chain of transaction `id` (an invalid entry under that
            /// id carries no transaction and is skipped; [`Self::tx_status`] names it).
            pub fn transaction(&self, id: &Hash) -> Result<Option<CommittedTx>> {
                query::tx_where(
                    &self.conn,
                    "substr(id, 1, 8) = ?1 AND id = ?2 AND kind != ?3",
                    &[&key_prefix(id), &id.as_slice(), &INVALID_KIND],
                )
            }

            /// Whether transaction `id` is on chain.
            pub fn contains_transaction(&self, id: &Hash) -> Result<bool> {
                Ok(self
                    .conn
                    .prepare_cached(
                        "SELECT 1 FROM transactions WHERE substr(id, 1, 8) = ?1 AND id = ?2
                         LIMIT 1",
                    )?
                    .exists([key_prefix(id), id.as_slice()])?)
            }

            /// The height of the block holding transaction `id`, if on chain.
            pub fn transaction_height(&self, id: &Hash) -> Result<Option<u64>> {
                Ok(self
                    .conn
                    .prepare_cached(
                        "SELECT height FROM transactions WHERE substr(id, 1, 8) = ?1 AND id = ?2
                         ORDER BY tx LIMIT 1",
                    )?
                    .query_row([key_prefix(id), id.as_slice()], |r| r.get::<_, i64>(0))
                    .optional()?
                    .map(|h| h as u64))
            }

            /// Committed at a height (and applied or not), or unknown: the first entry on
            /// chain under `id`, whatever it carries.
            pub fn tx_status(&self, id: &Hash) -> Result<TxStatus> {
                let row: Option<(i64, i64, Option<String>)> = self
                    .conn
                    .prepare_cached(
                        "SELECT height, idx, rejected FROM transactions
                         WHERE substr(id, 1, 8) = ?1 AND id = ?2 ORDER BY tx LIMIT 1",
                    )?
                    .query_row([key_prefix(id), id.as_slice()], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()?;
                Ok(match row {
                    Some((height, index, rejected)) => TxStatus::Committed {
                        height: height as u64,
                        index: index as u64,
                        rejected,
                    },
                    None => TxStatus::Unknown,
                })
            }

            /// A patient's records, oldest first.
            pub fn records_by_patient(&self, patient_id: &str) -> Result<Vec<RecordRow>> {
                let txs = query::txs_joined(
                    &self.conn,
                    "SELECT t.height, t.idx, t.body, t.rejected FROM records r
                     JOIN transactions t ON t.tx = r.tx WHERE r.patient_id = ?1 ORDER BY r.tx",
                    patient_id,
                )?;
                let mut rows = Vec::with_capacity(txs.len());
                for c in txs {
                    let tx_id = c.tx.id();
                    if let Transaction::AddRecord {
                        patient_id,
                        doctor_id,
                        department,
                        diagnosis,
                        prescription,
                        notes,
                        consent_hash,
                    } = c.tx.body
                    {
                        rows.push(RecordRow {
                            tx_id,
                            height: c.height,
                            index: c.index,
                            timestamp_ms: c.tx.timestamp_ms,
                            validator: c.tx.validator,
                            patient_id,
                            doctor_id,
                            department,
                            diagnosis,
                            prescription,
                            notes,
                            consent_hash,
                        });
                    }
                }
                Ok(rows)
            }

            /// Who read a patient's records, oldest first.
            pub fn accesses_by_patient(&self, patient_id: &str) -> Result<Vec<AccessRow>> {
                let txs = query::txs_joined(
                    &self.conn,
                    "SELECT t.height, t.idx, t.body, t.rejected FROM accesses a
                     JOIN transactions t ON t.tx = a.tx WHERE a.patient_id = ?1 ORDER BY a.tx",
                    patient_id,
                )?;
                let mut rows = Vec::with_capacity(txs.len());
                for c in txs {
                    let tx_id = c.tx.id();
                    if let Transaction::Access {
                        patient_id,
                        reader_id,
                        reader_role,
                        consent_hash,
                    } = c.tx.body
                    {
                        rows.push(AccessRow {
                            tx_id,
                            height: c.height,
                            index: c.index,
                            timestamp_ms: c.tx.timestamp_ms,
                            patient_id,
                            reader_id,
                            reader_role,
                            consent_hash,
                        });
                    }
                }
                Ok(rows)
            }

            /// A consent's grant and use, if the chain knows the hash.
            pub fn consent(&self, consent_hash: &Hash) -> Result<Option<ConsentRow>> {
                let refs: Option<(Option<i64>, Option<i64>)> = self
                    .conn
                    .prepare_cached(
                        "SELECT granted_tx, used_tx FROM consents
                         WHERE substr(consent_hash, 1, 8) = ?1 AND consent_hash = ?2",
                    )?
                    .query_row([key_prefix(consent_hash), consent_hash.as_slice()], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?;
                let Some((granted, used)) = refs else {
                    return Ok(None);
                };
                let by_row = |row: Option<i64>| -> Result<Option<CommittedTx>> {
                    match row {
                        Some(row) => query::tx_where(&self.conn, "tx = ?1", &[&row]),
                        None => Ok(None),
                    }
                };
                Ok(Some(ConsentRow {
                    consent_hash: *consent_hash,
                    granted: by_row(granted)?,
                    used: by_row(used)?,
                }))
            }

            /// The number of entries on chain (applied or not, valid or not).
            pub fn transaction_count(&self) -> Result<u64> {
                let n: i64 = self
                    .conn
                    .query_row("SELECT COUNT(*) FROM transactions", [], |r| r.get(0))?;
                Ok(n as u64)
            }
        }
    };
}

read_queries!(Store);
read_queries!(Reader);

/// Queries shared by the writer and the readers.
pub(crate) mod query {
    use super::*;

    pub fn hash(bytes: Vec<u8>, what: &'static str) -> Result<Hash> {
        bytes.try_into().map_err(|_| Error::Decode {
            what,
            source: std::io::Error::other("not 32 bytes"),
        })
    }

    pub fn head(conn: &Connection) -> Result<(u64, Hash)> {
        let (h, bytes): (i64, Vec<u8>) = conn
            .prepare_cached("SELECT height, hash FROM blocks ORDER BY height DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((h as u64, hash(bytes, "block hash")?))
    }

    pub fn block(conn: &Connection, height: u64) -> Result<Option<Block>> {
        let row: Option<(Vec<u8>, Vec<u8>)> = conn
            .prepare_cached("SELECT header, certificate FROM blocks WHERE height = ?1")?
            .query_row([height as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((header, certificate)) = row else {
            return Ok(None);
        };
        let mut stmt = conn.prepare_cached(
            "SELECT id, timestamp_ms, body FROM transactions WHERE height = ?1 ORDER BY idx",
        )?;
        let mut entries = Vec::new();
        let mut rows = stmt.query([height as i64])?;
        while let Some(row) = rows.next()? {
            let body: Vec<u8> = row.get(2)?;
            entries.push(pbft::Request {
                id: hash(row.get(0)?, "transaction id")?,
                timestamp_ms: row.get::<_, i64>(1)? as u64,
                payload: body.into(),
            });
        }
        Ok(Some(Block {
            header: BlockHeader::from_bytes(&header)?,
            entries,
            certificate: Certificate::from_bytes(&certificate)?,
        }))
    }

    pub fn tx_where(
        conn: &Connection,
        condition: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Option<CommittedTx>> {
        let sql = format!(
            "SELECT height, idx, body, rejected FROM transactions WHERE {condition} ORDER BY tx LIMIT 1"
        );
        let row = conn
            .prepare_cached(&sql)?
            .query_row(args, committed_row)
            .optional()?;
        row.map(decode_committed).transpose()
    }

    type RawCommitted = (i64, i64, Vec<u8>, Option<String>);

    fn committed_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawCommitted> {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    }

    fn decode_committed((height, idx, body, rejected): RawCommitted) -> Result<CommittedTx> {
        Ok(CommittedTx {
            height: height as u64,
            index: idx as u64,
            tx: SignedTransaction::from_bytes(&body)?,
            rejected,
        })
    }

    pub fn txs_joined(conn: &Connection, sql: &str, key: &str) -> Result<Vec<CommittedTx>> {
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map([key], committed_row)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(decode_committed(row?)?);
        }
        Ok(out)
    }
}
