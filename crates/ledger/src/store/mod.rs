//! The SQLite store of one replica's chain (`chain.db`).
//!
//! One [`Store`] owns the only writing connection; [`Reader`]s are separate read-only
//! connections (WAL mode lets them read a consistent snapshot while the writer appends). Both
//! answer the read queries of [`Queries`].
//! [`Store::append_block`] writes a block, its entries and the state the rules derive from them
//! (persons, keys, links, asks, requests, grants, recoveries, records, accesses, erasures) in one
//! SQLite transaction with `synchronous=FULL`: after a crash at any instant a block is wholly
//! present or wholly absent, and once `append_block` returns it survives a power cut. The rules
//! read the state through that same transaction ([`state::SqlState`]), so each transaction of a
//! block sees the effects of the ones before it.
//!
//! Opening a store checks the blocks of its last [`index::EPOCH_ROWS`] transactions as
//! verification checks blocks (bounded work, whatever the chain's length; [`OpenCheck`]), and
//! refuses a store that fails, naming the file, the first bad height and the fault. The whole
//! chain, replayed and compared with the derived state, is checked by `medchain verify` (or at
//! open with [`OpenOptions::full`]): docs/STORAGE.md §2.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::block::{Block, BlockHeader, Certificate, ToAppend};
use crate::genesis::Genesis;
use crate::rules::{
    self, AskRow, Ctx, ErasureRow, GrantRow, KeyRow, LinkRow, PersonRow, RecoveryRow, RequestRow,
    SealedRow, StateView,
};
use crate::tx::{Checked, Meta, PersonId, PublicKey, SignedTx, Signer, TxHeader, TxId};
use crate::{Error, Hash, Result};
use index::Tag;

mod apply;
pub mod index;
pub(crate) mod schema;
pub mod state;

pub use crate::rules::reason::DUPLICATE;
pub use index::Index;
pub use schema::{DERIVED, FORMAT_SINCE};
pub use state::SqlState;

/// How to open a [`Store`].
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    /// What is checked before the store is returned.
    pub check: OpenCheck,
}

/// The checks of a store at open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenCheck {
    /// None: only for benchmarks and tests that check verification separately.
    Nothing,
    /// The blocks of the last [`index::EPOCH_ROWS`] transactions (at least the head block), as
    /// verification checks blocks, without the replay ([`crate::verify`]): bounded work
    /// whatever the chain's length. The default; `medchain verify` checks everything.
    Tail,
    /// The whole chain, replayed (as `medchain verify`).
    Full,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            check: OpenCheck::Tail,
        }
    }
}

impl OpenOptions {
    /// Opens without verifying the chain: only for benchmarks and tests.
    pub fn unverified() -> Self {
        OpenOptions {
            check: OpenCheck::Nothing,
        }
    }

    /// Opens after verifying the whole chain.
    pub fn full() -> Self {
        OpenOptions {
            check: OpenCheck::Full,
        }
    }
}

/// What [`Store::append_block`] decided for the block's transactions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// `(index in block, reason)` of every transaction the rules rejected.
    pub rejected: Vec<(usize, &'static str)>,
}

/// The writer of one `chain.db`.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    genesis: Genesis,
    /// The last block's header and hash, kept in memory (the store is its only writer).
    head: BlockHeader,
    head_hash: Hash,
    /// The lookups by random key, shared with the readers of this file in this process.
    index: Arc<Index>,
}

/// A read-only connection to a `chain.db`, for the API and for verification.
pub struct Reader {
    conn: Connection,
    path: PathBuf,
    index: Arc<Index>,
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
        crate::files::prepare_sqlite_file(path)?;
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
        // 8 MiB of page cache for the writer (readers keep SQLite's 2 MiB): a page it misses is
        // read from the kernel's cache, not the disk. 32 MiB cost each validator 15-30 MiB of
        // resident memory on the chain of 1,000,000 for no measurable gain in CPU per
        // transaction (BENCHMARKS.md, "allocators' options").
        conn.pragma_update(None, "cache_size", -8_192)?;
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
            genesis: genesis.clone(),
            head: genesis.block().header,
            head_hash: genesis.hash(),
            index: Index::for_path(path),
        };
        // A writer's held rows are its own: those of a writer before it in this process (which
        // may have panicked inside a block, with no truncate) are not trusted.
        store.index.forget_held();
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
        (store.head, store.head_hash) = query::head(&store.conn)?;
        match options.check {
            OpenCheck::Nothing => {}
            OpenCheck::Tail => {
                let from = store.tail_start()?;
                crate::verify::verify_tail(&store.conn, &store.path, genesis, from)?;
            }
            OpenCheck::Full => {
                crate::verify::verify_connection(&store.conn, &store.path, genesis, &mut |_| {})?;
            }
        }
        Ok(store)
    }

    /// The first height [`OpenCheck::Tail`] checks: that of the block holding the first of the
    /// last [`index::EPOCH_ROWS`] transactions, or the head's if it holds none.
    fn tail_start(&self) -> Result<u64> {
        let first: Option<i64> = self
            .conn
            .query_row(
                "SELECT height FROM transactions
                 WHERE tx = max(1, (SELECT max(tx) FROM transactions) - ?1 + 1)",
                [index::EPOCH_ROWS],
                |r| r.get(0),
            )
            .optional()?;
        Ok(match first {
            // The tail reaches the first transaction: the genesis block is checked too.
            Some(height) if height <= 1 => 0,
            Some(height) => (height as u64).min(self.head.height),
            None => self.head.height,
        })
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
        (self.head.height, self.head_hash)
    }

    /// The time of the last block: the next block's must be later.
    pub fn head_time_ms(&self) -> u64 {
        self.head.timestamp_ms
    }

    /// The genesis this store holds the chain of.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// Appends the next block durably: the block, its entries and the state the rules derive
    /// from them, in one SQLite transaction. Refuses a block that does not extend the head,
    /// whose time is not after the head's, or whose header is not the one its entries build
    /// ([`BlockHeader::rebuilt`]). The rules judge every transaction at the block's time
    /// (`block.header.timestamp_ms`).
    ///
    /// `checked` is what each entry carries, in order: what [`crate::crypto::check_entries`]
    /// decides for `block.entries` (the node decides it with fewer checks for requests it
    /// checked as they arrived). The store trusts it, as it trusts that the certificate was
    /// checked ([`crate::verify::check_block`]); verification on opening derives both again from
    /// the stored bytes. An invalid entry is stored as it came, rejected with its
    /// [`crate::tx::Invalid::reason`], and changes nothing but the ids seen (its request was
    /// executed).
    ///
    /// A [`crate::Built`] block's header is not built again from its entries: it was.
    pub fn append_block(&mut self, block: &impl ToAppend, checked: &[Checked]) -> Result<Applied> {
        let built = block.built();
        let block = block.block();
        let h = block.header.height;
        let not_next = |reason: String| Error::NotNext { height: h, reason };
        block
            .header
            .check_follows(&self.head)
            .and_then(|()| {
                if built {
                    Ok(())
                } else {
                    block.header.check_entries(&block.entries)
                }
            })
            .map_err(|fault| not_next(fault.to_string()))?;
        if checked.len() != block.entries.len() {
            return Err(not_next(format!(
                "{} verdicts for {} entries",
                checked.len(),
                block.entries.len()
            )));
        }
        let hash = block.hash();
        self.index.catch_up(&self.conn)?;
        let mark = self.index.mark();
        let written = (|| -> Result<Applied> {
            let tx = self.conn.transaction()?;
            let applied = write_block(&tx, &self.index, &self.genesis, block, &hash, checked)?;
            tx.commit()?;
            Ok(applied)
        })();
        // The entries of a block that is not on disk are taken back from memory.
        let applied = written.inspect_err(|_| self.index.truncate(mark))?;
        self.head = block.header;
        self.head_hash = hash;
        Ok(applied)
    }

    /// Stages `proposal` durably (one SQLite transaction with `synchronous=FULL`): its entries'
    /// payloads as rows of `bodies`, the rest in `proposals` under `digest`, its digest (the
    /// hash of the block it becomes) as the replica checked or made it. The block that commits
    /// it refers to those rows ([`Store::append_block`] finds them by its hash), so a node that
    /// persists a pre-prepare here before it records it in `node.db` writes each entry's bytes
    /// once (docs/STORAGE.md §3). Staging a proposal staged or committed already does nothing.
    ///
    /// The digest is not computed again here (a hash of every entry's bytes, 2 % of a
    /// validator's thread): a proposal staged under another digest is never taken for that
    /// digest's. [`Store::proposal`] hashes what it reads back, and the block with that hash
    /// takes the staged rows only if they are its entries' bytes, else stores its own.
    pub fn stage_proposal(&mut self, digest: &Hash, proposal: &pbft::Proposal) -> Result<()> {
        let tx = self.conn.transaction()?;
        let known = tx
            .prepare_cached(
                "SELECT 1 FROM proposals WHERE digest = ?1
                 UNION ALL SELECT 1 FROM blocks WHERE hash = ?1",
            )?
            .exists([digest.as_slice()])?;
        if known {
            return Ok(());
        }
        let mut first = None;
        {
            let mut insert = tx.prepare_cached("INSERT INTO bodies (body) VALUES (?1)")?;
            for request in &proposal.requests {
                insert.execute([&request.payload[..]])?;
                first.get_or_insert(tx.last_insert_rowid());
            }
        }
        let skeleton = pbft::Proposal {
            requests: proposal
                .requests
                .iter()
                .map(|r| pbft::Request {
                    payload: Arc::from(&[][..]),
                    ..r.clone()
                })
                .collect(),
            ..proposal.clone()
        };
        tx.prepare_cached(
            "INSERT INTO proposals (digest, seq, first_body, count, skeleton)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            digest.as_slice(),
            proposal.seq as i64,
            first.unwrap_or(0),
            proposal.requests.len() as i64,
            borsh::to_vec(&skeleton).map_err(|source| Error::Decode {
                what: "proposal",
                source,
            })?,
        ])?;
        tx.commit()?;
        Ok(())
    }

    /// The proposal with digest `digest`: staged ([`Store::stage_proposal`]) or committed (the
    /// block with that hash, which it became). A staged one whose bytes no longer hash to
    /// `digest` is `None`, as a lost one.
    pub fn proposal(&self, digest: &Hash) -> Result<Option<pbft::Proposal>> {
        let staged: Option<(i64, i64, Vec<u8>)> = self
            .conn
            .prepare_cached("SELECT first_body, count, skeleton FROM proposals WHERE digest = ?1")?
            .query_row([digest.as_slice()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        if let Some((first, count, skeleton)) = staged {
            let mut proposal: pbft::Proposal =
                borsh::from_slice(&skeleton).map_err(|source| Error::Decode {
                    what: "staged proposal",
                    source,
                })?;
            let mut stmt = self
                .conn
                .prepare_cached("SELECT body FROM bodies WHERE b >= ?1 AND b < ?2 ORDER BY b")?;
            let bodies = stmt
                .query_map([first, first + count], |r| r.get::<_, Vec<u8>>(0))?
                .collect::<rusqlite::Result<Vec<Vec<u8>>>>()?;
            if bodies.len() != proposal.requests.len() {
                return Err(Error::State(format!(
                    "staged proposal {} lacks bodies",
                    proposal.seq
                )));
            }
            for (request, body) in proposal.requests.iter_mut().zip(bodies) {
                request.payload = body.into();
            }
            // A staged copy changed on disk is not the proposal of `digest`: as lost (the node
            // then recovers, docs/STORAGE.md §3).
            if crate::proposal_digest(&proposal) != *digest {
                return Ok(None);
            }
            return Ok(Some(proposal));
        }
        let Some(block) = self.block_by_hash(digest)? else {
            return Ok(None);
        };
        Ok(Some(pbft::Proposal {
            seq: block.header.height,
            view: block.header.view,
            proposer: block.header.proposer,
            prev: block.header.prev_hash,
            time_ms: block.header.timestamp_ms,
            requests: block.entries,
        }))
    }

    /// Deletes the staged proposals of sequence numbers up to `seq` that no block committed,
    /// with their bodies (the node's protocol records no longer name them).
    pub fn drop_proposals_through(&mut self, seq: u64) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.prepare_cached(
            "DELETE FROM bodies WHERE b IN (
                 SELECT bd.b FROM proposals p JOIN bodies bd
                     ON bd.b >= p.first_body AND bd.b < p.first_body + p.count
                 WHERE p.seq <= ?1)",
        )?
        .execute([seq as i64])?;
        tx.prepare_cached("DELETE FROM proposals WHERE seq <= ?1")?
            .execute([seq as i64])?;
        tx.commit()?;
        Ok(())
    }

    /// A read-only connection to the same file.
    pub fn reader(&self) -> Result<Reader> {
        Reader::open(&self.path)
    }
}

/// Writes `block` (with hash `hash`) and its entries through `conn`, deciding and applying each
/// transaction in order: the one code path of a block's effects, shared by
/// [`Store::append_block`] and the replay of [`crate::verify`]. `conn` is inside the caller's
/// transaction.
///
/// `index` must cover every row before the block's ([`Index::catch_up`]); it is given the
/// block's entries as they are written, and the runs of the epochs the block completes are
/// written with it ([`Index::close_epochs`]).
pub(crate) fn write_block(
    conn: &Connection,
    index: &Index,
    genesis: &Genesis,
    block: &Block,
    hash: &Hash,
    checked: &[Checked],
) -> Result<Applied> {
    write_block_with(conn, index, genesis, block, hash, checked, Payloads::Keep)
}

/// Whether [`write_block_with`] stores the entries' payloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Payloads {
    /// In `bodies` (or staged there already), named by each row's `body_row`: a store.
    Keep,
    /// Not at all, every `body_row` 0: the replay of [`crate::verify`], which compares derived
    /// state only (payloads are not derived, the rules never read them, and verification reads
    /// them from the store it checks), and saves writing the chain's largest table a second time.
    Omit,
}

/// [`write_block`], keeping or omitting the payloads.
pub(crate) fn write_block_with(
    conn: &Connection,
    index: &Index,
    genesis: &Genesis,
    block: &Block,
    hash: &Hash,
    checked: &[Checked],
    payloads: Payloads,
) -> Result<Applied> {
    insert_block(conn, block, hash)?;
    state::prune_open_requests(conn, block.header.timestamp_ms)?;
    let mut applied = Applied::default();
    let height = block.header.height;
    let mut insert = conn.prepare_cached(
        "INSERT INTO transactions (height, idx, id, kind, timestamp_ms, body_row, rejected)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut insert_body = conn.prepare_cached("INSERT INTO bodies (body) VALUES (?1)")?;
    // The bodies of a proposal staged by the node are there already: the block names them.
    let staged: Option<(i64, i64)> = conn
        .prepare_cached("SELECT first_body, count FROM proposals WHERE digest = ?1")?
        .query_row([hash.as_slice()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if staged.is_some() {
        conn.prepare_cached("DELETE FROM proposals WHERE digest = ?1")?
            .execute([hash.as_slice()])?;
    }
    // Only if they are the block's bytes (what was certified and is executed now): a staged
    // copy changed on disk since, or staged under a digest not its own, is dropped, and the
    // block stores its own.
    let staged = match staged {
        Some((first, count))
            if count != block.entries.len() as i64
                || !staged_bodies_are(conn, first, &block.entries)? =>
        {
            conn.prepare_cached("DELETE FROM bodies WHERE b >= ?1 AND b < ?2")?
                .execute([first, first + count])?;
            None
        }
        staged => staged,
    };
    let mut seen = conn
        .prepare_cached("INSERT INTO seen_ids (created_ms, id_prefix, tx) VALUES (?1, ?2, ?3)")?;
    // Asked once a block, inside its transaction, and kept up to date as the block adds
    // entries: each transaction's duplicate check then makes one probe where it made two.
    let mut invalid_seen = state::invalid_seen(conn)?;
    index.knows_invalid_seen(invalid_seen);
    for (position, (entry, content)) in block.entries.iter().zip(checked).enumerate() {
        // One view decides the transaction and writes its effects: what its rules found by id,
        // its effects name again.
        let writer = SqlState::writer(conn, index).knowing_invalid_seen(invalid_seen);
        let outcome = match content {
            Ok(t) => {
                let ctx = Ctx::new(
                    entry.id,
                    &t.header,
                    block.header.timestamp_ms,
                    height,
                    genesis,
                );
                // Under test, every rule reads through a view that fails on a read the rule
                // does not declare next to it.
                #[cfg(test)]
                let declared = rules::Declared::new(&writer, &ctx);
                #[cfg(test)]
                let state: &dyn rules::StateView = &declared;
                #[cfg(not(test))]
                let state: &dyn rules::StateView = &writer;
                rules::decide(&ctx, state)?.map_err(|r| r.0)
            }
            // Its request was executed: the id is seen, nothing else changes.
            Err(invalid) => Err(invalid.reason()),
        };
        let body_row = match (payloads, staged) {
            (Payloads::Omit, _) => 0,
            (Payloads::Keep, Some((first, _))) => first + position as i64,
            (Payloads::Keep, None) => {
                insert_body.execute([&entry.payload[..]])?;
                conn.last_insert_rowid()
            }
        };
        insert.execute(params![
            height as i64,
            position as i64,
            entry.id.as_slice(),
            kind_column(content),
            entry.timestamp_ms as i64,
            body_row,
            outcome.as_ref().err(),
        ])?;
        let tx = conn.last_insert_rowid();
        let created_ms = content.as_ref().ok().map(|t| t.header.created_ms);
        if created_ms.is_none() {
            // Known to readers before the entry can be.
            index.knows_invalid_seen(true);
            invalid_seen = true;
        }
        seen.execute(params![
            state::created_column(created_ms),
            state::id_prefix(&entry.id),
            tx
        ])?;
        let mut values = vec![(index::Tag::Id, entry.id.as_slice())];
        match &outcome {
            Ok(effects) => {
                apply::apply(&writer, tx, effects)?;
                values.extend(effects.iter().flat_map(apply::indexed));
            }
            Err(reason) => applied.rejected.push((position, reason)),
        }
        index.add_row(tx, values);
    }
    index.close_epochs(conn)?;
    Ok(applied)
}

/// Whether the rows of `bodies` from `first` hold exactly the payloads of `entries`, in order.
fn staged_bodies_are(conn: &Connection, first: i64, entries: &[crate::Entry]) -> Result<bool> {
    let mut stmt =
        conn.prepare_cached("SELECT body FROM bodies WHERE b >= ?1 AND b < ?2 ORDER BY b")?;
    let mut rows = stmt.query([first, first + entries.len() as i64])?;
    let mut entries = entries.iter();
    while let Some(row) = rows.next()? {
        let body = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
        if entries
            .next()
            .is_none_or(|entry| body != &entry.payload[..])
        {
            return Ok(false);
        }
    }
    Ok(entries.next().is_none())
}

pub(crate) fn insert_block(conn: &Connection, block: &Block, hash: &Hash) -> Result<()> {
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

/// The `kind` column of an entry: its transaction's kind, or [`INVALID_KIND`] for an entry
/// that carries none (no signer vouches for its content).
pub(crate) fn kind_column(content: &Checked) -> &'static str {
    match content {
        Ok(t) => t.meta().kind(),
        Err(_) => INVALID_KIND,
    }
}

/// The `kind` of an entry that carries no valid transaction ([`crate::tx::Invalid`]).
pub const INVALID_KIND: &str = "invalid";

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
        rusqlite::vtab::array::load_module(&conn)?;
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
            index: Index::for_path(path),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Height and hash of the last block.
    pub fn head(&self) -> Result<(u64, Hash)> {
        let (head, hash) = query::head(&self.conn)?;
        Ok((head.height, hash))
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
    pub id: TxId,
    pub height: u64,
    pub index: u64,
    /// The time of its block: the time the rules judged it at.
    pub block_time_ms: u64,
    pub tx: SignedTx,
    /// Why the rules did not apply it, if they did not.
    pub rejected: Option<String>,
}

/// A medical record as the chain holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordEntry {
    pub tx_id: TxId,
    pub height: u64,
    pub index: u64,
    /// The time of its block.
    pub block_time_ms: u64,
    pub patient: PersonId,
    pub doctor: PersonId,
    pub department: String,
    /// The write grant it used.
    pub grant: TxId,
    /// Who signed it: the doctor's device key, or the custodial key their home holds.
    pub signer: Signer,
    /// The signing key's origin (the validator whose page made a device key, or the home).
    pub origin: Option<u32>,
    /// The hospital that sealed it (the doctor's home): the one that answers an erasure of it.
    pub hospital: u32,
    /// Its header, whose associated data its sealed body opens under ([`crate::seal::open`]).
    pub header: TxHeader,
    /// The body as stored: a sealed body ([`crate::seal::SealedBody`]) of the borsh of a
    /// [`crate::tx::RecordBody`].
    pub body: Vec<u8>,
    /// The erasure that erased it, if one did: it shows as erased at the patient's request on
    /// the answer's block date, and no correct validator holds its key since.
    pub erased: Option<Erased>,
}

/// When and by which transactions a sealed transaction was erased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Erased {
    /// The patient's `RequestErasure`.
    pub request: TxId,
    /// The sealer's `AnswerErasure` that erased it.
    pub answer: TxId,
    /// The answer's block time.
    pub block_time_ms: u64,
}

/// One entry of a patient's access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessEntry {
    pub tx_id: TxId,
    pub height: u64,
    pub index: u64,
    /// The time of its block.
    pub block_time_ms: u64,
    pub patient: PersonId,
    /// The authenticated reader: the patient, or a doctor under `grant`.
    pub reader: PersonId,
    /// The validator (hospital) that served the read.
    pub serving: u32,
    pub grant: Option<TxId>,
}

/// The read queries, the same on the writer and on a reader: every method is provided over
/// the connection, as raft-rs's `Storage`. Import the trait to call them.
pub trait Queries {
    /// The connection the queries read through.
    #[doc(hidden)]
    fn connection(&self) -> &Connection;

    /// The lookups by random key of the file read.
    #[doc(hidden)]
    fn index(&self) -> &Index;

    /// Runs `read` in one read transaction, so that everything it reads comes from one state of
    /// the chain (a holder decides "applied, not erased, grant live" from one state, §16.19),
    /// and the WAL's read lock is taken once (each statement outside a transaction takes and
    /// drops it in shared-memory locks: a third of a precheck's time through a reader). Inside
    /// a transaction of the caller's, it reads in that one.
    fn snapshot<T>(&self, read: impl FnOnce(&Self) -> Result<T>) -> Result<T>
    where
        Self: Sized,
    {
        let conn = self.connection();
        if !conn.is_autocommit() {
            return read(self);
        }
        // Prepared once per connection, not parsed again at every precheck (`execute_batch`,
        // which parses, was 5 % of the submitting threads' time with the statements' own work).
        conn.prepare_cached("BEGIN DEFERRED")?.execute([])?;
        let result = read(self);
        // A read transaction changes nothing: ending it cannot lose anything.
        let ended = conn
            .prepare_cached("COMMIT")
            .and_then(|mut commit| commit.execute([]));
        let value = result?;
        ended?;
        Ok(value)
    }

    /// The rules' view of the committed state, for a precheck (`rules::decide` at `T = now`):
    /// it may answer persons and keys from memory a little fresher than the snapshot
    /// ([`SqlState::reader`]), which the block's rules decide again. Never for a query.
    fn state(&self) -> SqlState<'_> {
        SqlState::reader(self.connection(), self.index())
    }

    /// The view the queries read through: the snapshot's rows only.
    #[doc(hidden)]
    fn view(&self) -> SqlState<'_> {
        SqlState::snapshot(self.connection(), self.index())
    }

    /// The block at `height`.
    fn block(&self, height: u64) -> Result<Option<Block>> {
        query::block(self.connection(), height)
    }

    /// The commit certificate of the block at `height` (without reading its entries).
    fn certificate(&self, height: u64) -> Result<Option<Certificate>> {
        let bytes: Option<Vec<u8>> = self
            .connection()
            .prepare_cached("SELECT certificate FROM blocks WHERE height = ?1")?
            .query_row([height as i64], |r| r.get(0))
            .optional()?;
        bytes.map(|b| Certificate::from_bytes(&b)).transpose()
    }

    /// The hash of the block at `height`, from its header (not the stored hash column).
    fn block_hash(&self, height: u64) -> Result<Option<Hash>> {
        let header: Option<Vec<u8>> = self
            .connection()
            .prepare_cached("SELECT header FROM blocks WHERE height = ?1")?
            .query_row([height as i64], |r| r.get(0))
            .optional()?;
        header
            .map(|bytes| Ok(BlockHeader::from_bytes(&bytes)?.hash()))
            .transpose()
    }

    /// The block with hash `hash`.
    fn block_by_hash(&self, hash: &Hash) -> Result<Option<Block>> {
        let height: Option<i64> = self
            .connection()
            .prepare_cached("SELECT height FROM blocks WHERE hash = ?1")?
            .query_row([hash.as_slice()], |r| r.get(0))
            .optional()?;
        match height {
            Some(h) => query::block(self.connection(), h as u64),
            None => Ok(None),
        }
    }

    /// Up to `limit` blocks from `from` upwards (for state transfer).
    fn blocks_from(&self, from: u64, limit: usize) -> Result<Vec<Block>> {
        let mut blocks = Vec::new();
        for h in from.. {
            if blocks.len() >= limit {
                break;
            }
            match query::block(self.connection(), h)? {
                Some(b) => blocks.push(b),
                None => break,
            }
        }
        Ok(blocks)
    }

    /// Up to `limit` block summaries, newest first, below `before` (or from the head).
    fn blocks_page(&self, before: Option<u64>, limit: usize) -> Result<Vec<BlockSummary>> {
        // SQLite's integers are i64: a bound past every height is the newest page, never a
        // negative height (`as` wrapped 2^63 and above to an empty page).
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let mut stmt = self.connection().prepare_cached(
            "SELECT height, hash, timestamp_ms, proposer, view, tx_count FROM blocks
             WHERE height < ?1 ORDER BY height DESC LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![before, limit as i64])?;
        let mut page = Vec::new();
        while let Some(r) = rows.next()? {
            page.push(BlockSummary {
                height: r.get::<_, i64>(0)? as u64,
                hash: state::fixed(r.get(1)?, "block hash")?,
                timestamp_ms: r.get::<_, i64>(2)? as u64,
                proposer: r.get(3)?,
                view: r.get::<_, i64>(4)? as u64,
                tx_count: r.get::<_, i64>(5)? as u64,
            });
        }
        Ok(page)
    }

    /// The first occurrence on chain of transaction `id` (an invalid entry under that id
    /// carries no transaction and is skipped; [`Queries::tx_status`] names it).
    fn transaction(&self, id: &TxId) -> Result<Option<CommittedTx>> {
        query::tx_where(
            self.connection(),
            "t.tx IN rarray(?1) AND t.id = ?2 AND t.kind != ?3",
            &[&self.view().id_rows(id)?, &id.as_slice(), &INVALID_KIND],
        )
    }

    /// Whether an entry with id `id` is on chain.
    fn contains_transaction(&self, id: &TxId) -> Result<bool> {
        Ok(self.tx_status(id)? != TxStatus::Unknown)
    }

    /// The height of the block holding transaction `id`, if on chain.
    fn transaction_height(&self, id: &TxId) -> Result<Option<u64>> {
        Ok(match self.tx_status(id)? {
            TxStatus::Committed { height, .. } => Some(height),
            TxStatus::Unknown => None,
        })
    }

    /// Committed at a height (and applied or not, with the reason), or unknown: the first
    /// entry on chain under `id`, whatever it carries.
    fn tx_status(&self, id: &TxId) -> Result<TxStatus> {
        let row: Option<(i64, i64, Option<String>)> = self
            .connection()
            .prepare_cached(
                "SELECT height, idx, rejected FROM transactions
                 WHERE tx IN rarray(?1) AND id = ?2 ORDER BY tx LIMIT 1",
            )?
            .query_row(params![self.view().id_rows(id)?, id.as_slice()], |r| {
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

    /// The number of entries on chain (applied or not, valid or not).
    fn transaction_count(&self) -> Result<u64> {
        let n: i64 = self
            .connection()
            .query_row("SELECT COUNT(*) FROM transactions", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// An enrolled person, as the snapshot shows it.
    fn person(&self, person: &PersonId) -> Result<Option<PersonRow>> {
        self.view().person(person)
    }

    /// A registered key (live, waiting or revoked), as the snapshot shows it.
    fn key(&self, key: &PublicKey) -> Result<Option<KeyRow>> {
        self.view().key(key)
    }

    /// Every key of a person, oldest first.
    fn keys_of(&self, person: &PersonId) -> Result<Vec<KeyRow>> {
        self.view().keys_of(person)
    }

    /// The validators a person is linked at (besides their home), oldest first.
    fn links_of(&self, person: &PersonId) -> Result<Vec<LinkRow>> {
        state::rows(
            self.connection(),
            "SELECT l.person, l.validator, t.id FROM links l JOIN transactions t ON t.tx = l.tx",
            "l.person = ?1 ORDER BY l.tx",
            &[&person.as_slice()],
            |r| {
                Ok(LinkRow {
                    person: state::fixed(r.get(0)?, "person id")?,
                    validator: r.get(1)?,
                    tx: state::fixed(r.get(2)?, "transaction id")?,
                })
            },
        )
    }

    fn ask(&self, id: &TxId) -> Result<Option<AskRow>> {
        self.view().ask(id)
    }

    /// Asks for a person pending at `at_ms`, newest first.
    fn pending_asks_for(&self, person: &PersonId, at_ms: u64) -> Result<Vec<AskRow>> {
        state::rows(
            self.connection(),
            state::ASK_SELECT,
            "a.tx IN rarray(?3) AND a.person = ?1 AND a.expires_ms > ?2
             AND a.answered_tx IS NULL ORDER BY a.tx DESC",
            &[
                &person.as_slice(),
                &(at_ms as i64),
                &self.view().candidates(
                    Tag::AskPerson,
                    person,
                    state::since(at_ms, rules::ASK_MS),
                )?,
            ],
            state::ask_row,
        )
    }

    fn request(&self, id: &TxId) -> Result<Option<RequestRow>> {
        self.view().request(id)
    }

    /// Requests to a patient pending at `at_ms`, newest first.
    fn pending_requests_of(&self, patient: &PersonId, at_ms: u64) -> Result<Vec<RequestRow>> {
        state::rows(
            self.connection(),
            state::REQUEST_SELECT,
            "q.tx IN rarray(?3) AND q.patient = ?1 AND q.expires_ms > ?2
             AND q.answered_tx IS NULL ORDER BY q.tx DESC",
            &[
                &patient.as_slice(),
                &(at_ms as i64),
                &self.view().candidates(
                    Tag::RequestPatient,
                    patient,
                    state::since(at_ms, rules::REQUEST_MS),
                )?,
            ],
            state::request_row,
        )
    }

    /// Requests a doctor made that are pending at `at_ms`, newest first.
    fn pending_requests_by(&self, doctor: &PersonId, at_ms: u64) -> Result<Vec<RequestRow>> {
        state::rows(
            self.connection(),
            state::REQUEST_SELECT,
            "q.tx IN rarray(?3) AND q.doctor = ?1 AND q.expires_ms > ?2
             AND q.answered_tx IS NULL ORDER BY q.tx DESC",
            &[
                &doctor.as_slice(),
                &(at_ms as i64),
                &self.view().candidates(
                    Tag::RequestDoctor,
                    doctor,
                    state::since(at_ms, rules::REQUEST_MS),
                )?,
            ],
            state::request_row,
        )
    }

    fn grant(&self, id: &TxId) -> Result<Option<GrantRow>> {
        self.view().grant(id)
    }

    /// Every grant a patient gave, newest first.
    fn grants_of_patient(&self, patient: &PersonId) -> Result<Vec<GrantRow>> {
        state::rows(
            self.connection(),
            state::GRANT_SELECT,
            "g.tx IN rarray(?2) AND g.patient = ?1 ORDER BY g.tx DESC",
            &[
                &patient.as_slice(),
                &self.view().candidates(Tag::GrantPatient, patient, None)?,
            ],
            state::grant_row,
        )
    }

    /// Grants to a doctor that expire after `after_ms` (0: all), newest first.
    fn grants_of_doctor(&self, doctor: &PersonId, after_ms: u64) -> Result<Vec<GrantRow>> {
        state::rows(
            self.connection(),
            state::GRANT_SELECT,
            "g.tx IN rarray(?3) AND g.doctor = ?1 AND g.expires_ms > ?2 ORDER BY g.tx DESC",
            &[
                &doctor.as_slice(),
                &(after_ms as i64),
                &self.view().candidates(
                    Tag::GrantDoctor,
                    doctor,
                    // No grant lives longer than the longest read grant.
                    state::since(
                        after_ms,
                        rules::READ_GRANT_MAX_MS.max(rules::WRITE_GRANT_MS),
                    ),
                )?,
            ],
            state::grant_row,
        )
    }

    /// Every recovery of a person, newest first.
    fn recoveries_of(&self, person: &PersonId) -> Result<Vec<RecoveryRow>> {
        state::rows(
            self.connection(),
            state::RECOVERY_SELECT,
            "v.tx IN rarray(?2) AND v.person = ?1 ORDER BY v.tx DESC",
            &[
                &person.as_slice(),
                &self.view().candidates(Tag::RecoveryPerson, person, None)?,
            ],
            state::recovery_row,
        )
    }

    /// A patient's records, oldest first, with who signed each and how, and whether each was
    /// erased.
    fn records_of(&self, patient: &PersonId) -> Result<Vec<RecordEntry>> {
        let conn = self.connection();
        // At most one erasure of a transaction erases it (the rule refuses any request after).
        let mut stmt = conn.prepare_cached(
            "SELECT t.id, t.height, t.idx, b.timestamp_ms, bd.body, g.id, r.hospital,
                    er.id, ea.id, e.answered_ms
             FROM records r JOIN transactions t ON t.tx = r.tx
             JOIN bodies bd ON bd.b = t.body_row
             JOIN blocks b ON b.height = t.height
             JOIN transactions g ON g.tx = r.grant_tx
             LEFT JOIN erasures e ON e.target_tx = r.tx AND e.decision = 0
             LEFT JOIN transactions er ON er.tx = e.tx
             LEFT JOIN transactions ea ON ea.tx = e.answered_tx
             WHERE r.tx IN rarray(?2) AND r.patient = ?1 ORDER BY r.tx",
        )?;
        let candidates = self.view().candidates(Tag::RecordPatient, patient, None)?;
        let mut rows = stmt.query(params![patient.as_slice(), candidates])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let payload: Vec<u8> = r.get(4)?;
            let SignedTx { header, body, .. } = SignedTx::from_bytes(&payload)?;
            let Meta::AddRecord(meta) = header.meta.clone() else {
                return Err(Error::State(
                    "a record row names a transaction of another kind".into(),
                ));
            };
            let origin = match header.signer.person_key() {
                Some((_, key)) => self.view().key(key)?.map(|k| k.origin),
                None => None,
            };
            out.push(RecordEntry {
                tx_id: state::fixed(r.get(0)?, "transaction id")?,
                height: r.get::<_, i64>(1)? as u64,
                index: r.get::<_, i64>(2)? as u64,
                block_time_ms: r.get::<_, i64>(3)? as u64,
                patient: meta.patient,
                doctor: meta.doctor,
                department: meta.department,
                grant: state::fixed(r.get(5)?, "transaction id")?,
                signer: header.signer,
                origin,
                hospital: r.get(6)?,
                header,
                body,
                erased: match (
                    r.get::<_, Option<Vec<u8>>>(7)?,
                    r.get::<_, Option<Vec<u8>>>(8)?,
                ) {
                    (Some(request), Some(answer)) => Some(Erased {
                        request: state::fixed(request, "transaction id")?,
                        answer: state::fixed(answer, "transaction id")?,
                        block_time_ms: r.get::<_, i64>(9)? as u64,
                    }),
                    _ => None,
                },
            });
        }
        Ok(out)
    }

    /// The applied transaction `id`, if it is of a sealed kind (a record, a request or a
    /// grant), with its patient and sealer.
    fn sealed(&self, id: &TxId) -> Result<Option<SealedRow>> {
        self.view().sealed(id)
    }

    /// The erasure request `id`, with its answer if it has one.
    fn erasure(&self, id: &TxId) -> Result<Option<ErasureRow>> {
        self.view().erasure(id)
    }

    /// The latest erasure request of the sealed transaction `target`: pending, refused, or the
    /// one that erased it (after which no request is accepted).
    fn erasure_of(&self, target: &TxId) -> Result<Option<ErasureRow>> {
        self.view().erasure_of(target)
    }

    /// Whether transaction `tx` was erased (an erasure of it was answered `Erase`).
    fn is_erased(&self, tx: &TxId) -> Result<bool> {
        Ok(self.erasure_of(tx)?.is_some_and(|e| e.erased().is_some()))
    }

    /// Every erasure request a patient made, newest first.
    fn erasures_of_patient(&self, patient: &PersonId) -> Result<Vec<ErasureRow>> {
        state::rows(
            self.connection(),
            state::ERASURE_SELECT,
            "e.tx IN rarray(?2) AND e.patient = ?1 ORDER BY e.tx DESC",
            &[
                &patient.as_slice(),
                &self.view().candidates(Tag::ErasurePatient, patient, None)?,
            ],
            state::erasure_row,
        )
    }

    /// The erasure requests validator `hospital` has to answer (of transactions it sealed),
    /// oldest first.
    fn pending_erasures_for(&self, hospital: u32) -> Result<Vec<ErasureRow>> {
        state::rows(
            self.connection(),
            state::ERASURE_SELECT,
            "e.hospital = ?1 AND e.answered_tx IS NULL ORDER BY e.tx",
            &[&hospital],
            state::erasure_row,
        )
    }

    /// Who read a patient's records, and at which hospital, oldest first.
    fn accesses_of(&self, patient: &PersonId) -> Result<Vec<AccessEntry>> {
        state::rows(
            self.connection(),
            "SELECT t.id, t.height, t.idx, b.timestamp_ms, a.patient, a.reader, a.serving, g.id
             FROM accesses a JOIN transactions t ON t.tx = a.tx
             JOIN blocks b ON b.height = t.height
             LEFT JOIN transactions g ON g.tx = a.grant_tx",
            "a.tx IN rarray(?2) AND a.patient = ?1 ORDER BY a.tx",
            &[
                &patient.as_slice(),
                &self.view().candidates(Tag::AccessPatient, patient, None)?,
            ],
            |r| {
                Ok(AccessEntry {
                    tx_id: state::fixed(r.get(0)?, "transaction id")?,
                    height: r.get::<_, i64>(1)? as u64,
                    index: r.get::<_, i64>(2)? as u64,
                    block_time_ms: r.get::<_, i64>(3)? as u64,
                    patient: state::fixed(r.get(4)?, "person id")?,
                    reader: state::fixed(r.get(5)?, "person id")?,
                    serving: r.get(6)?,
                    grant: r
                        .get::<_, Option<Vec<u8>>>(7)?
                        .map(|g| state::fixed(g, "transaction id"))
                        .transpose()?,
                })
            },
        )
    }
}

impl Queries for Store {
    fn connection(&self) -> &Connection {
        &self.conn
    }

    fn index(&self) -> &Index {
        &self.index
    }
}

impl Queries for Reader {
    fn connection(&self) -> &Connection {
        &self.conn
    }

    fn index(&self) -> &Index {
        &self.index
    }
}

/// Queries shared by the writer, the readers and verification.
pub(crate) mod query {
    use super::*;

    /// The last block's header and hash.
    pub fn head(conn: &Connection) -> Result<(BlockHeader, Hash)> {
        let (header, hash): (Vec<u8>, Vec<u8>) = conn
            .prepare_cached("SELECT header, hash FROM blocks ORDER BY height DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((
            BlockHeader::from_bytes(&header)?,
            state::fixed(hash, "block hash")?,
        ))
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
            "SELECT t.id, t.timestamp_ms, bd.body FROM transactions t
             JOIN bodies bd ON bd.b = t.body_row WHERE t.height = ?1 ORDER BY t.idx",
        )?;
        let mut entries = Vec::new();
        let mut rows = stmt.query([height as i64])?;
        while let Some(row) = rows.next()? {
            let body: Vec<u8> = row.get(2)?;
            entries.push(pbft::Request {
                id: state::fixed(row.get(0)?, "transaction id")?,
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
        let found = state::rows(
            conn,
            "SELECT t.id, t.height, t.idx, b.timestamp_ms, bd.body, t.rejected
             FROM transactions t JOIN blocks b ON b.height = t.height
             JOIN bodies bd ON bd.b = t.body_row",
            &format!("{condition} ORDER BY t.tx LIMIT 1"),
            args,
            |r| {
                let body: Vec<u8> = r.get(4)?;
                Ok(CommittedTx {
                    id: state::fixed(r.get(0)?, "transaction id")?,
                    height: r.get::<_, i64>(1)? as u64,
                    index: r.get::<_, i64>(2)? as u64,
                    block_time_ms: r.get::<_, i64>(3)? as u64,
                    tx: SignedTx::from_bytes(&body)?,
                    rejected: r.get(5)?,
                })
            },
        )?;
        Ok(found.into_iter().next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TestNet;

    /// The proposal a node would have persisted for `block`.
    fn proposal_of(block: &Block) -> pbft::Proposal {
        pbft::Proposal {
            seq: block.header.height,
            view: block.header.view,
            proposer: block.header.proposer,
            prev: block.header.prev_hash,
            time_ms: block.header.timestamp_ms,
            requests: block.entries.clone(),
        }
    }

    fn count(store: &Store, table: &str) -> i64 {
        store
            .conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    /// SQLite is built without `ENABLE_MEMORY_MANAGEMENT` (`.cargo/config.toml`): with it every
    /// connection of a process shares one page cache's LRU and budget, and the connections of
    /// keys.db and of the API's readers emptied the block writer's cache on the accepting
    /// validator (helper-162: its writer read chain.db 15 to 90 times as often as a backup's).
    #[test]
    fn each_connection_has_its_own_page_cache() {
        let conn = Connection::open_in_memory().unwrap();
        let shared: i64 = conn
            .query_row(
                "SELECT count(*) FROM pragma_compile_options \
                 WHERE compile_options = 'ENABLE_MEMORY_MANAGEMENT'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            shared, 0,
            "built with ENABLE_MEMORY_MANAGEMENT: see .cargo/config.toml"
        );
    }

    /// A snapshot sees one state of the chain, whatever the writer appends meanwhile; one
    /// inside another reads in the outer one.
    #[test]
    fn a_snapshot_reads_one_state_of_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        let mut store = net.write_chain(&path, 3, 4).unwrap();
        let reader = store.reader().unwrap();
        let (before, after) = reader
            .snapshot(|r| {
                let before = r.head()?;
                let txs = (12..14).map(|i| net.sample_tx(i)).collect();
                let block = net.next_block(store.head(), txs);
                net.append(&mut store, &block).expect("appended");
                Ok((before, r.snapshot(|inner| inner.head())?))
            })
            .unwrap();
        assert_eq!(before, after, "one state for the whole query");
        assert_eq!(reader.head().unwrap().0, before.0 + 1);
        assert!(reader.conn.is_autocommit());
    }

    /// Red team s13, held: a snapshot whose read fails ends its transaction (the connection is
    /// back in autocommit and the next snapshot sees the writer's later blocks), and a panic
    /// in a read leaves a connection that `Pool` drops, not one lent inside a transaction.
    #[test]
    fn a_failed_snapshot_ends_its_read_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        let mut store = net.write_chain(&path, 3, 4).unwrap();
        let reader = store.reader().unwrap();
        let failed: Result<()> = reader.snapshot(|r| {
            r.head()?;
            Err(Error::State("the read failed".into()))
        });
        assert!(failed.is_err());
        assert!(reader.conn.is_autocommit(), "no transaction left open");
        let (before, _) = reader.head().unwrap();
        let block = net.next_block(store.head(), vec![net.sample_tx(20)]);
        net.append(&mut store, &block).expect("appended");
        assert_eq!(reader.snapshot(|r| r.head()).unwrap().0, before + 1);
    }

    /// docs/STORAGE.md §3: a staged proposal survives a restart, and the block it becomes
    /// names its bodies instead of storing them again; the chain reads and verifies as one
    /// appended without staging.
    #[test]
    fn a_staged_proposal_becomes_its_block_without_a_second_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        let mut store = net.write_chain(&path, 3, 4).unwrap();
        let txs = (12..17).map(|i| net.sample_tx(i)).collect();
        let block = net.next_block(store.head(), txs);
        let digest = block.hash();
        let proposal = proposal_of(&block);
        assert_eq!(crate::proposal_digest(&proposal), digest);
        store.stage_proposal(&digest, &proposal).unwrap();
        store.stage_proposal(&digest, &proposal).unwrap();
        assert_eq!(count(&store, "bodies"), 12 + 5);
        drop(store);

        let mut store = Store::open(&path, &net.genesis, OpenOptions::default()).unwrap();
        assert_eq!(store.proposal(&digest).unwrap(), Some(proposal.clone()));
        net.append(&mut store, &block).unwrap();
        assert_eq!(count(&store, "bodies"), 12 + 5, "no second copy");
        assert_eq!(count(&store, "proposals"), 0);
        assert_eq!(store.block(4).unwrap(), Some(block));
        assert_eq!(store.proposal(&digest).unwrap(), Some(proposal));
        crate::verify::verify_store(&path, &net.genesis, &mut |_| {}).expect("verifies");
    }

    /// Staged proposals no block committed are deleted with their bodies once the node's
    /// records no longer name them; a committed one's bodies stay.
    #[test]
    fn dropping_staged_proposals_keeps_the_bodies_blocks_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        let mut store = net.write_chain(&path, 3, 4).unwrap();
        let txs: Vec<SignedTx> = (12..17).map(|i| net.sample_tx(i)).collect();
        let committed = net.next_block(store.head(), txs.clone());
        // Another proposal for the same height (a later view's, say), never committed.
        let entries = txs[..2].iter().map(|t| net.request(t)).collect();
        let other = net.block_at(store.head(), crate::testkit::block_time(4) + 7, entries);
        for block in [&committed, &other] {
            store
                .stage_proposal(&block.hash(), &proposal_of(block))
                .unwrap();
        }
        assert_eq!(count(&store, "bodies"), 12 + 5 + 2);
        net.append(&mut store, &committed).unwrap();
        store.drop_proposals_through(4).unwrap();
        assert_eq!(count(&store, "bodies"), 12 + 5);
        assert_eq!(count(&store, "proposals"), 0);
        assert_eq!(store.proposal(&other.hash()).unwrap(), None);
        assert!(store.proposal(&committed.hash()).unwrap().is_some());
        crate::verify::verify_store(&path, &net.genesis, &mut |_| {}).expect("verifies");
    }

    /// Staging does not hash the proposal again: one staged under a digest not its own (a
    /// later time, an entry more, an entry's bytes changed) is never read back as that
    /// digest's, and the block with that hash stores its own bodies, the staged ones dropped.
    #[test]
    fn a_proposal_staged_under_another_digest_is_never_taken_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        let store = net.write_chain(&path, 2, 2).unwrap();
        let bodies_before = count(&store, "bodies");
        let block = net.next_block(store.head(), vec![net.sample_tx(4), net.sample_tx(5)]);
        let digest = block.hash();
        drop(store);
        let later = pbft::Proposal {
            time_ms: block.header.timestamp_ms + 1,
            ..proposal_of(&block)
        };
        let mut longer = proposal_of(&block);
        longer.requests.push(net.request(&net.sample_tx(6)));
        let mut changed = proposal_of(&block);
        changed.requests[1].payload = Arc::from(&b"not the signed bytes"[..]);
        for (case, wrong) in [("later", later), ("longer", longer), ("changed", changed)] {
            let mut store = Store::open(&path, &net.genesis, OpenOptions::default()).unwrap();
            store.stage_proposal(&digest, &wrong).unwrap();
            assert_eq!(store.proposal(&digest).unwrap(), None, "{case}");
            drop(store);
            let copy = dir.path().join(format!("{case}.db"));
            std::fs::copy(&path, &copy).unwrap();
            let mut store = Store::open(&copy, &net.genesis, OpenOptions::default()).unwrap();
            net.append(&mut store, &block).unwrap();
            assert_eq!(store.block(3).unwrap().as_ref(), Some(&block), "{case}");
            assert_eq!(store.proposal(&digest).unwrap(), Some(proposal_of(&block)));
            assert_eq!(count(&store, "proposals"), 0, "{case}");
            assert_eq!(count(&store, "bodies"), bodies_before + 2, "{case}");
            drop(store);
            crate::verify::verify_store(&copy, &net.genesis, &mut |_| {}).expect("verifies");
            let mut store = Store::open(&path, &net.genesis, OpenOptions::default()).unwrap();
            store.drop_proposals_through(3).unwrap();
        }
    }
}
