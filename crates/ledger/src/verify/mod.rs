//! Chain verification: everything that makes a stored chain trustworthy, checked from the bytes.
//!
//! For each block in height order: the stored bytes decode; the header's hash is the stored hash;
//! heights are consecutive and `seq` equals the height; each block's `prev_hash` is the hash of
//! the block before and its time is later than that block's; the genesis block is exactly the
//! one `genesis.toml` derives; the Merkle root matches the entries (so every byte of an entry's
//! id, timestamp and payload is covered by the block hash); the commit certificate holds a
//! quorum (2f+1 when n = 3f+1) of distinct genesis validators' valid signatures over the block
//! hash. And every block is replayed, with the same rules and the same apply code as the store
//! ([`crate::store`]'s `write_block`), into a private temporary SQLite database: each entry's
//! verdict must be the stored one, and at the end every derived table (persons, keys, links,
//! asks, requests, grants, recoveries, records, accesses, erasures) must equal the store's row
//! for row.
//! The replay derives each entry's content from its bytes again: an entry stored as a
//! transaction must decode as its request's and its signatures (the envelope's and every new
//! key's proof) must verify; an entry stored as invalid must be invalid for the stored reason.
//!
//! Signatures are checked in batches that span blocks (much faster than one by one), by the
//! one rule ([`crypto::verify_signature`]), whose batch and single verdicts agree; when a batch
//! fails, the signatures are checked singly to name the first bad one, and any pending batch is
//! settled before a later fault is reported, so the height named is always the first bad one.
//! The replay runs on a thread of its own, a few blocks behind the walk that reads and checks
//! them: a fault it finds is earlier than any the walk found meanwhile, and is compared with the
//! signatures' by height the same way.
//!
//! Verification holds no data key and opens no body (docs/SECURITY.md, "Confidential records",
//! §9): the rules read metadata only, so the replay, erasures included, needs none. Nor can it
//! see from the chain that one key sealed two transactions: a body's key commitment is bound to
//! its own transaction, so equal keys have unequal commitments (each key store finds reuse by
//! the key's id, §16 item 13).
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};

use ed25519_dalek::VerifyingKey;
use rusqlite::Connection;
use rusqlite::types::{Value, ValueRef};

use crate::block::{BlockHeader, Certificate, Entry};
use crate::crypto;
use crate::genesis::Genesis;
use crate::store::{self, DERIVED, Queries};
use crate::tx::{Checked, Invalid, SignedTx};
use crate::{Block, Error, Fault, Hash, Result, short_hex};

mod signatures;

use signatures::{BATCH, Checker, Owner, Pending, Pool, Timed};

/// How far verification has come, for a progress bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The height just verified.
    pub height: u64,
    /// The height of the last block in the store.
    pub head: u64,
}

/// What a verified store holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub path: PathBuf,
    /// Blocks including genesis (`head + 1`).
    pub blocks: u64,
    pub transactions: u64,
    pub head_height: u64,
    pub head_hash: Hash,
}

/// The checks of one non-genesis block that need no other block: `seq` and Merkle root
/// ([`BlockHeader::check_entries`]), proposer, certificate signers; the certificate's signatures
/// are queued on `pending`.
fn check_contents(
    keys: &[VerifyingKey],
    genesis_hash: &Hash,
    header: &BlockHeader,
    entries: &[Entry],
    certificate: &Certificate,
    pending: &mut Pending,
) -> Result<(), Fault> {
    let height = header.height;
    header.check_entries(entries)?;
    if header.proposer as usize >= keys.len() {
        return Err(Fault::UnknownProposer(header.proposer));
    }
    let signers = crypto::certificate_signers(keys, certificate).map_err(Fault::Certificate)?;
    let message =
        crypto::certificate_signing_bytes(genesis_hash, certificate.view, height, &header.hash());
    for ((signer, signature), key) in certificate.signatures.iter().zip(signers) {
        pending.push(
            height,
            Owner::Certificate(*signer),
            (key.to_bytes(), message.clone(), *signature),
        );
    }
    Ok(())
}

/// Checks a block received from a peer (state transfer) on its own: Merkle root and commit
/// certificate; returns what each entry carries, for [`crate::Store::append_block`] (an invalid
/// entry is the rules' to reject, not a reason to refuse a certified block). Whether it extends
/// the chain (its height, `prev_hash` and time against the head's) is checked on append.
pub fn check_block(
    keys: &[VerifyingKey],
    genesis_hash: &Hash,
    block: &Block,
) -> Result<Vec<Checked>> {
    let height = block.header.height;
    let invalid = |fault| Error::InvalidBlock { height, fault };
    if height == 0 {
        return Err(invalid(Fault::Genesis));
    }
    let mut pending = Pending::default();
    check_contents(
        keys,
        genesis_hash,
        &block.header,
        &block.entries,
        &block.certificate,
        &mut pending,
    )
    .map_err(invalid)?;
    pending.settle().map_err(|(_, fault)| invalid(fault))?;
    Ok(crypto::check_entries(keys, genesis_hash, &block.entries))
}

/// Verifies the chain in the store at `path` against `genesis`, read-only.
pub fn verify_store(
    path: &Path,
    genesis: &Genesis,
    progress: &mut dyn FnMut(Progress),
) -> Result<Summary> {
    crate::store::Reader::open(path)?.verify(genesis, progress)
}

/// Verifies every store in `paths` and that they agree block by block: at every height that two
/// replicas both hold, they hold the same block (a replica may be behind, never different).
pub fn verify_replicas(
    paths: &[PathBuf],
    genesis: &Genesis,
    progress: &mut dyn FnMut(&Path, Progress),
) -> Result<Vec<Summary>> {
    let mut summaries = Vec::with_capacity(paths.len());
    for path in paths {
        summaries.push(verify_store(path, genesis, &mut |p| progress(path, p))?);
    }
    let Some(first) = paths.first() else {
        return Ok(summaries);
    };
    let reference = block_hashes(first)?;
    for path in &paths[1..] {
        let hashes = block_hashes(path)?;
        if let Some(height) = reference.iter().zip(&hashes).position(|(a, b)| a != b) {
            return Err(Error::Disagree {
                a: first.clone(),
                b: path.clone(),
                height: height as u64,
                what: format!(
                    "block hash {} vs {}",
                    short_hex(&reference[height]),
                    short_hex(&hashes[height])
                ),
            });
        }
    }
    Ok(summaries)
}

/// The stored hash of every block in height order (already checked against the headers).
fn block_hashes(path: &Path) -> Result<Vec<Hash>> {
    let reader = crate::store::Reader::open(path)?;
    let (head, _) = reader.head()?;
    let mut hashes = Vec::with_capacity(head as usize + 1);
    for page_start in (0..=head).step_by(4096) {
        for summary in reader
            .blocks_page(Some(page_start + 4096), 4096)?
            .into_iter()
            .rev()
            .filter(|s| s.height >= page_start)
        {
            hashes.push(summary.hash);
        }
    }
    Ok(hashes)
}

/// One transaction row as stored.
struct TxRow {
    height: i64,
    idx: i64,
    id: Vec<u8>,
    kind: String,
    timestamp_ms: i64,
    /// `None`: the row names no body (a fault of its block).
    body: Option<Vec<u8>>,
    rejected: Option<String>,
}

/// One block row as stored.
struct RawBlock {
    height: i64,
    hash: Vec<u8>,
    header: Vec<u8>,
    certificate: Vec<u8>,
    /// tx_count, timestamp_ms, proposer, view: copies of header fields for queries.
    columns: (i64, i64, i64, i64),
}

/// Why the walk stopped: a fault in the chain, or the store could not be read.
enum Stop {
    Fault(Fault),
    Error(Error),
}

impl From<Fault> for Stop {
    fn from(f: Fault) -> Self {
        Stop::Fault(f)
    }
}

impl From<rusqlite::Error> for Stop {
    fn from(e: rusqlite::Error) -> Self {
        Stop::Error(e.into())
    }
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Error(e)
    }
}

/// A private temporary database (SQLite's empty file name: held in the page cache while small,
/// spilled to a temporary file that is deleted on close when large, so a long chain's replay
/// does not have to fit in memory) holding the genesis block, with the store's schema, for the
/// replay. Nothing in it needs to survive, so it is written without syncing, in one transaction
/// that is never committed.
fn replay_database(genesis: &Genesis) -> Result<Connection> {
    let mut conn = Connection::open("")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "journal_mode", "MEMORY")?;
    store::schema::migrate(&mut conn, Path::new("(replay)"))?;
    conn.execute_batch("BEGIN")?;
    store::insert_block(&conn, genesis.block(), &genesis.hash())?;
    Ok(conn)
}

/// Blocks decoded and waiting for the replay: enough to keep it busy while the walk reads a
/// block, few enough that memory stays bounded (a block of 1,000 entries, decoded, is about
/// 2 MB) whatever the chain's length.
const QUEUED_FOR_REPLAY: usize = 4;

/// A block the walk has checked, for the replay: its entries' contents and stored verdicts.
struct ToReplay {
    block: Block,
    hash: Hash,
    contents: Vec<Checked>,
    /// Each entry's stored `rejected` column.
    rejected: Vec<Option<String>>,
}

/// The chain replayed so far, with the store's rules and apply code, and the replay's lookups
/// by random key (its own, never the store's).
struct Replay {
    conn: Connection,
    index: store::Index,
}

impl Replay {
    fn new(genesis: &Genesis) -> Result<Replay> {
        Ok(Replay {
            conn: replay_database(genesis)?,
            index: store::Index::default(),
        })
    }

    /// Replays `b`, whose verdicts must be the stored ones.
    fn block(&self, genesis: &Genesis, b: &ToReplay) -> Result<(), Stop> {
        let applied = store::write_block_with(
            &self.conn,
            &self.index,
            genesis,
            &b.block,
            &b.hash,
            &b.contents,
            store::Payloads::Omit,
        )?;
        let mut verdicts: Vec<Option<&str>> = vec![None; b.block.entries.len()];
        for (index, reason) in &applied.rejected {
            verdicts[*index] = Some(reason);
        }
        for (index, (rejected, verdict)) in b.rejected.iter().zip(verdicts).enumerate() {
            if rejected.as_deref() != verdict {
                return Err(Fault::State(format!(
                    "transaction {index} is stored as {}, the rules say {}",
                    rejected.as_deref().unwrap_or("applied"),
                    verdict.unwrap_or("applied")
                ))
                .into());
            }
        }
        Ok(())
    }

    /// Replays the blocks that come through `blocks`, in order, until they stop (then the
    /// replay, to compare) or one fails (its height and why). Run on a thread of its own: the
    /// replay is the longest stage of verification, and everything before it (reading,
    /// decoding, hashes, Merkle roots, the signatures' messages) goes on beside it.
    fn run(self, genesis: &Genesis, blocks: Receiver<ToReplay>) -> Result<Replay, (u64, Stop)> {
        for b in blocks {
            self.block(genesis, &b)
                .map_err(|stop| (b.block.header.height, stop))?;
        }
        Ok(self)
    }
}

/// The state of a walk along the chain.
struct Walk<'g> {
    genesis: &'g Genesis,
    pending: Pending,
    /// Whether the blocks are replayed: not when only the blocks of a tail are checked
    /// ([`verify_tail`]).
    replay: bool,
    /// The height the next block must have.
    expected: u64,
    /// The header of the block before it.
    prev: Option<BlockHeader>,
    transactions: u64,
}

impl Walk<'_> {
    /// Checks the block at `self.expected`, consuming its transaction rows; the block to
    /// replay, if the walk replays and it is not genesis (compared whole).
    fn block(
        &mut self,
        raw: RawBlock,
        tx_rows: &mut std::iter::Peekable<impl Iterator<Item = rusqlite::Result<TxRow>>>,
    ) -> Result<Option<ToReplay>, Stop> {
        let expected = self.expected;
        if raw.height as u64 != expected {
            return Err(Fault::Height {
                expected,
                found: raw.height as u64,
            }
            .into());
        }
        let header =
            BlockHeader::from_bytes(&raw.header).map_err(|e| Fault::Undecodable(e.to_string()))?;
        let certificate = Certificate::from_bytes(&raw.certificate)
            .map_err(|e| Fault::Undecodable(e.to_string()))?;
        let hash = header.hash();
        if raw.hash.as_slice() != hash {
            return Err(Fault::StoredHash {
                stored: hex::encode(&raw.hash[..raw.hash.len().min(4)]),
                computed: short_hex(&hash),
            }
            .into());
        }
        match &self.prev {
            // The genesis block is compared whole below.
            None if header.height != expected => {
                return Err(Fault::Height {
                    expected,
                    found: header.height,
                }
                .into());
            }
            None => {}
            Some(prev) => header.check_follows(prev)?,
        }

        // This block's transaction rows, in order; a stray row is a fault of this block.
        let mut entries = Vec::new();
        let mut stored = Vec::new();
        loop {
            match tx_rows.peek() {
                Some(Ok(r)) if r.height <= expected as i64 => {}
                Some(Ok(_)) | None => break,
                Some(Err(_)) => {}
            }
            let Some(r) = tx_rows.next().transpose()? else {
                break;
            };
            let index = entries.len();
            if r.height < expected as i64 || r.idx != index as i64 {
                return Err(Fault::Transaction {
                    index,
                    reason: format!("stray row at height {} index {}", r.height, r.idx),
                }
                .into());
            }
            // A wrong id, timestamp or body changes the entry hash: the Merkle root names it.
            let id: Hash = r.id.as_slice().try_into().map_err(|_| Fault::Transaction {
                index,
                reason: Fault::Column("id").to_string(),
            })?;
            let body = r.body.ok_or_else(|| Fault::Transaction {
                index,
                reason: Fault::Column("body_row").to_string(),
            })?;
            entries.push(Entry {
                id,
                timestamp_ms: r.timestamp_ms as u64,
                payload: body.into(),
            });
            stored.push((r.kind, r.rejected));
        }
        let columns = (
            entries.len() as i64,
            header.timestamp_ms as i64,
            header.proposer as i64,
            header.view as i64,
        );
        if raw.columns != columns {
            return Err(Fault::Column("tx_count/timestamp_ms/proposer/view").into());
        }

        let mut replay = None;
        if expected == 0 {
            let g = self.genesis.block();
            if header != g.header || !entries.is_empty() || certificate != g.certificate {
                return Err(Fault::Genesis.into());
            }
        } else {
            check_contents(
                self.genesis.keys(),
                &self.genesis.hash(),
                &header,
                &entries,
                &certificate,
                &mut self.pending,
            )?;
            let mut contents = Vec::with_capacity(entries.len());
            for (index, (entry, (kind, rejected))) in entries.iter().zip(&stored).enumerate() {
                let content = self.content(expected, index, entry, rejected.as_deref());
                if kind.as_str() != store::kind_column(&content) {
                    return Err(Fault::Transaction {
                        index,
                        reason: Fault::Column("kind").to_string(),
                    }
                    .into());
                }
                contents.push(content);
            }
            self.transactions += entries.len() as u64;
            if self.replay {
                replay = Some(ToReplay {
                    block: Block {
                        header,
                        entries,
                        certificate,
                    },
                    hash,
                    contents,
                    rejected: stored.into_iter().map(|(_, rejected)| rejected).collect(),
                });
            }
        }
        self.prev = Some(header);
        Ok(replay)
    }

    /// What entry `index` of the block at `height` carries, derived from its bytes. Signatures
    /// are checked in batches that span blocks, so the stored verdict decides which way each is
    /// confirmed: an entry stored as a bad signature or key proof is checked now (and must
    /// fail so); any other is queued and must verify under strong keys, or the batch names it.
    fn content(
        &mut self,
        height: u64,
        index: usize,
        entry: &Entry,
        rejected: Option<&str>,
    ) -> Checked {
        let genesis_hash = self.genesis.hash();
        let t = SignedTx::from_request(entry, &genesis_hash)?;
        let stored_bad = matches!(
            rejected.and_then(Invalid::from_reason),
            Some(Invalid::BadSignature | Invalid::BadKeyProof)
        );
        if stored_bad {
            let signatures = crypto::tx_signatures(self.genesis.keys(), &genesis_hash, &t)?;
            let failed: Vec<usize> = signatures
                .iter()
                .enumerate()
                .filter(|(_, (key, message, signature))| {
                    !crypto::verify_signature_bytes(key, message, signature)
                })
                .map(|(i, _)| i)
                .collect();
            if let Some(invalid) = crypto::signature_verdict(&failed) {
                return Err(invalid);
            }
        } else {
            // The keys' strength is judged with the signatures, on the workers.
            let signatures = crypto::tx_signature_checks(self.genesis.keys(), &genesis_hash, &t)?;
            for check in signatures {
                self.pending.push(height, Owner::Transaction(index), check);
            }
        }
        Ok(t)
    }
}

/// Verifies the chain through `conn` (the writer's at open, or a reader's).
pub(crate) fn verify_connection(
    conn: &Connection,
    path: &Path,
    genesis: &Genesis,
    progress: &mut dyn FnMut(Progress),
) -> Result<Summary> {
    with_pool(|pool| walk_chain(conn, path, genesis, 0, true, progress, pool))
}

/// Checks the blocks from height `from` to the head as verification does (decoding, stored
/// hashes, the chain of `prev_hash` and times from the block before `from`, Merkle roots,
/// certificates, every signature, the stored kind of every entry), without replaying them: the
/// bounded check of a store at open (docs/STORAGE.md §2). The derived state and the blocks
/// below `from` are `medchain verify`'s to check.
pub(crate) fn verify_tail(
    conn: &Connection,
    path: &Path,
    genesis: &Genesis,
    from: u64,
) -> Result<Summary> {
    with_pool(|pool| walk_chain(conn, path, genesis, from, false, &mut |_| {}, pool))
}

/// Runs `walk` with a [`Pool`] of one worker per core, ended before this returns.
fn with_pool<T>(walk: impl FnOnce(&mut Pool) -> T) -> T {
    std::thread::scope(|scope| walk(&mut Pool::start(scope, Pool::workers())))
}

/// How fast a chain's signatures verify by themselves: see [`time_signatures`].
#[derive(Clone, Debug, PartialEq)]
pub struct SignatureTiming {
    /// The transactions of the chain (genesis has none).
    pub transactions: u64,
    /// The signatures verification checks: every certificate's and every transaction's.
    pub signatures: u64,
    /// The threads the batches were checked on.
    pub threads: usize,
    /// Wall-clock time spent checking the batches, reading and decoding the chain excluded.
    pub checking_s: f64,
}

impl SignatureTiming {
    /// Transactions per second that batch signature verification alone sustains.
    pub fn transactions_per_s(&self) -> f64 {
        self.transactions as f64 / self.checking_s.max(f64::MIN_POSITIVE)
    }
}

/// Times batch signature verification alone over the signatures verification checks in the
/// store at `path` (the same signatures in the same batches), on `threads` threads: the chain is
/// read and decoded untimed, a round of batches is held, then checked on the threads while the
/// clock runs. The yardstick of `medchain verify --measure`. Fails as verification would on a
/// bad signature or a bad block (the derived state is not replayed).
pub fn time_signatures(path: &Path, genesis: &Genesis, threads: usize) -> Result<SignatureTiming> {
    let reader = crate::store::Reader::open(path)?;
    let mut timed = Timed::new(threads);
    let summary = walk_chain(
        reader.connection(),
        path,
        genesis,
        0,
        false,
        &mut |_| {},
        &mut timed,
    )?;
    Ok(SignatureTiming {
        transactions: summary.transactions,
        signatures: timed.signatures,
        threads: threads.max(1),
        checking_s: timed.checking.as_secs_f64(),
    })
}

/// Walks the chain from height `from` (0: the genesis block compared whole first); with
/// `replay` (from 0 only), every block is replayed and the derived state compared.
fn walk_chain(
    conn: &Connection,
    path: &Path,
    genesis: &Genesis,
    from: u64,
    replay: bool,
    progress: &mut dyn FnMut(Progress),
    checker: &mut dyn Checker,
) -> Result<Summary> {
    let corrupt = |(height, fault): (u64, Fault)| Error::Corrupt {
        path: path.to_path_buf(),
        height,
        fault,
    };
    // One read transaction: the whole verification sees one snapshot (the caller's, if it
    // reads in one already: `Queries::snapshot`).
    let _transaction = match conn.is_autocommit() {
        true => Some(conn.unchecked_transaction()?),
        false => None,
    };
    let snapshot = conn;
    let head: Option<i64> =
        snapshot.query_row("SELECT MAX(height) FROM blocks", [], |r| r.get(0))?;
    let Some(head) = head else {
        return Err(corrupt((
            0,
            Fault::Undecodable("the store holds no block".into()),
        )));
    };
    let head = head as u64;

    let from = from.min(head);
    // The tail's first block follows the stored header before it.
    let prev = if from == 0 {
        None
    } else {
        let header: Vec<u8> = snapshot.query_row(
            "SELECT header FROM blocks WHERE height = ?1",
            [from as i64 - 1],
            |r| r.get(0),
        )?;
        Some(
            BlockHeader::from_bytes(&header)
                .map_err(|e| corrupt((from - 1, Fault::Undecodable(e.to_string()))))?,
        )
    };
    let mut blocks = snapshot.prepare(
        "SELECT height, hash, header, certificate, tx_count, timestamp_ms, proposer, view
         FROM blocks WHERE height >= ?1 ORDER BY height",
    )?;
    let mut tx_stmt = snapshot.prepare(
        "SELECT t.height, t.idx, t.id, t.kind, t.timestamp_ms, bd.body, t.rejected
         FROM transactions t LEFT JOIN bodies bd ON bd.b = t.body_row
         WHERE t.height >= ?1 ORDER BY t.height, t.idx",
    )?;
    let mut tx_rows = tx_stmt
        .query_map([from as i64], |r| {
            Ok(TxRow {
                height: r.get(0)?,
                idx: r.get(1)?,
                id: r.get(2)?,
                kind: r.get(3)?,
                timestamp_ms: r.get(4)?,
                body: r.get(5)?,
                rejected: r.get(6)?,
            })
        })?
        .peekable();

    let replay = if replay && from == 0 {
        Some(Replay::new(genesis)?)
    } else {
        None
    };
    let mut walk = Walk {
        genesis,
        pending: Pending::default(),
        replay: replay.is_some(),
        expected: from,
        prev,
        transactions: 0,
    };
    let mut rows = blocks.query([from as i64])?;
    let (walked, replayed) = std::thread::scope(|scope| {
        let (to_replay, replaying) = match replay {
            Some(replay) => {
                let (sender, blocks) = mpsc::sync_channel(QUEUED_FOR_REPLAY);
                let replaying = scope.spawn(move || replay.run(genesis, blocks));
                (Some(sender), Some(replaying))
            }
            None => (None, None),
        };
        let walked = walk_blocks(
            &mut walk,
            &mut rows,
            &mut tx_rows,
            to_replay,
            head,
            progress,
            checker,
        );
        // The walk has dropped its sender: the replay ends once it has replayed what it was
        // sent.
        let replayed = replaying.map(|r| r.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        (walked, replayed)
    });
    let walked = walked?;
    let replay = match replayed {
        Some(Ok(replay)) => Some(replay),
        Some(Err((_, Stop::Error(e)))) => return Err(e),
        // The replay is behind the walk: the fault it found is before any the walk found.
        Some(Err((height, Stop::Fault(fault)))) => {
            return Err(first_fault(
                checker,
                &mut walk.pending,
                (height, fault),
                corrupt,
            ));
        }
        None => None,
    };
    if let Some(fault) = walked {
        return Err(first_fault(checker, &mut walk.pending, fault, corrupt));
    }
    let Walk {
        mut pending,
        prev,
        transactions,
        ..
    } = walk;
    checker.check(&mut pending);
    checker.finish().map_err(corrupt)?;
    if let Some(r) = tx_rows.next().transpose()? {
        return Err(corrupt((
            r.height as u64,
            Fault::Transaction {
                index: r.idx as usize,
                reason: "row for a block that does not exist".into(),
            },
        )));
    }
    if let Some(replay) = &replay {
        // A closed epoch's run is written over the blocks after its close, and the same rows
        // at every height; a store of an earlier medchain (schema 7) wrote it whole at its
        // close: with one run more than the replay finished, it is compared with the replay's
        // runs finished too.
        let finished = |conn: &Connection| -> Result<i64, rusqlite::Error> {
            conn.query_row("SELECT count(*) FROM index_epochs", [], |r| r.get(0))
        };
        let state = |e: rusqlite::Error| corrupt((0, Fault::State(e.to_string())));
        if finished(snapshot).map_err(state)? == finished(&replay.conn).map_err(state)? + 1 {
            replay.index.finish_runs(&replay.conn)?;
        }
        check_derived(snapshot, &replay.conn).map_err(corrupt)?;
    }
    drop(tx_rows);
    Ok(Summary {
        path: path.to_path_buf(),
        blocks: head + 1,
        transactions,
        head_height: head,
        head_hash: prev.map_or([0; 32], |h| h.hash()),
    })
}

/// Walks the blocks `rows` and `tx_rows` hold, sending each to the replay (if `to_replay`),
/// until the last, or a fault in one (returned with its height), or the replay stops (on a
/// fault: it reports it), or a batch of signatures fails. Batches of `pending` signatures go to
/// `checker` as they fill.
fn walk_blocks(
    walk: &mut Walk<'_>,
    rows: &mut rusqlite::Rows<'_>,
    tx_rows: &mut std::iter::Peekable<impl Iterator<Item = rusqlite::Result<TxRow>>>,
    to_replay: Option<SyncSender<ToReplay>>,
    head: u64,
    progress: &mut dyn FnMut(Progress),
    checker: &mut dyn Checker,
) -> Result<Option<(u64, Fault)>> {
    while let Some(row) = rows.next()? {
        let raw = RawBlock {
            height: row.get(0)?,
            hash: row.get(1)?,
            header: row.get(2)?,
            certificate: row.get(3)?,
            columns: (row.get(4)?, row.get(5)?, row.get(6)?, row.get(7)?),
        };
        match walk.block(raw, tx_rows) {
            Ok(replay) => {
                if let (Some(to_replay), Some(replay)) = (&to_replay, replay)
                    && to_replay.send(replay).is_err()
                {
                    return Ok(None);
                }
            }
            Err(Stop::Error(e)) => return Err(e),
            Err(Stop::Fault(fault)) => return Ok(Some((walk.expected, fault))),
        }
        // Batches are cut between blocks, so a bad signature in a batch sent is always below
        // the block the walk is at.
        if walk.pending.len() >= BATCH {
            checker.check(&mut walk.pending);
            if checker.failed() {
                return Ok(None);
            }
        }
        progress(Progress {
            height: walk.expected,
            head,
        });
        walk.expected += 1;
    }
    Ok(None)
}

/// The first of `fault`, which the walk or the replay found, and the bad signatures of the
/// batches before it (checked meanwhile, or now with what is `pending`): a signature's fault
/// in an earlier block comes first; in the same block, the walk's, as when the signatures
/// were checked one by one along the walk.
fn first_fault(
    checker: &mut dyn Checker,
    pending: &mut Pending,
    fault: (u64, Fault),
    corrupt: impl Fn((u64, Fault)) -> Error,
) -> Error {
    checker.check(pending);
    match checker.finish() {
        Err(earlier) if earlier.0 < fault.0 => corrupt(earlier),
        _ => corrupt(fault),
    }
}

/// Compares every derived table of the store with the replay's, row for row; a difference is
/// reported at the height of the transaction that made the differing row. Both sides are read
/// in step, one row at a time: memory does not grow with the chain.
fn check_derived(stored: &Connection, replay: &Connection) -> Result<(), (u64, Fault)> {
    let sql = |e: rusqlite::Error| (0, Fault::State(e.to_string()));
    let height_of = |conn: &Connection, row: i64| -> u64 {
        conn.query_row(
            "SELECT height FROM transactions WHERE tx = ?1",
            [row],
            |r| r.get::<_, i64>(0),
        )
        .map(|h| h as u64)
        .unwrap_or(0)
    };
    // The derived tables name transactions by their row number: it must be the replay's too
    // (with the verdict), or a swap of two rows' numbers would move a rejected transaction's
    // payload under an applied one's derived row.
    let numbering = "SELECT tx, height, idx, rejected FROM transactions ORDER BY tx";
    if let Some((have, want)) = first_difference(stored, replay, numbering).map_err(sql)? {
        let height = have.or(want).map_or(0, |row| match row.get(1) {
            Some(Value::Integer(height)) => *height as u64,
            _ => 0,
        });
        return Err((
            height,
            Fault::State("transactions are numbered unlike the replay".into()),
        ));
    }
    for (table, order) in DERIVED {
        let query = format!("SELECT * FROM {table} ORDER BY {order}");
        let Some((have, want)) = first_difference(stored, replay, &query).map_err(sql)? else {
            continue;
        };
        let tx_column = stored
            .prepare(&query)
            .and_then(|stmt| stmt.column_index("tx"))
            .map_err(sql)?;
        let tx_of = |row: &Vec<Value>| match row.get(tx_column) {
            Some(Value::Integer(tx)) => *tx,
            _ => 0,
        };
        // The earlier of the two differing rows names the block: a row missing from the store
        // is named by the replay's, an extra one by the store's.
        let height = match (have, want) {
            (Some(a), Some(b)) => height_of(stored, tx_of(&a)).min(height_of(replay, tx_of(&b))),
            (Some(a), None) => height_of(stored, tx_of(&a)),
            (None, Some(b)) => height_of(replay, tx_of(&b)),
            (None, None) => 0,
        };
        return Err((
            height,
            Fault::State(format!("{table} table differs from the replay")),
        ));
    }
    Ok(())
}

/// A row as a list of values.
type RowValues = Vec<Value>;

/// The first rows in which `query` answers differently on `stored` and on `replay`, read in
/// step (`None` on a side that has no more rows), or `None` if the answers are equal. Cells
/// are compared as SQLite holds them (type and bytes): a tampered store may hold text that is
/// not UTF-8, which is a difference to report, not an error.
fn first_difference(
    stored: &Connection,
    replay: &Connection,
    query: &str,
) -> rusqlite::Result<Option<(Option<RowValues>, Option<RowValues>)>> {
    let (mut a, mut b) = (stored.prepare(query)?, replay.prepare(query)?);
    let n = a.column_count();
    let (mut have, mut want) = (a.query([])?, b.query([])?);
    let same = |x: &rusqlite::Row<'_>, y: &rusqlite::Row<'_>| -> rusqlite::Result<bool> {
        for i in 0..n {
            if x.get_ref(i)? != y.get_ref(i)? {
                return Ok(false);
            }
        }
        Ok(true)
    };
    let owned = |row: Option<&rusqlite::Row<'_>>| -> rusqlite::Result<Option<RowValues>> {
        row.map(|r| (0..n).map(|i| r.get_ref(i).map(owned_cell)).collect())
            .transpose()
    };
    loop {
        match (have.next()?, want.next()?) {
            (None, None) => return Ok(None),
            (Some(x), Some(y)) if same(x, y)? => {}
            (x, y) => return Ok(Some((owned(x)?, owned(y)?))),
        }
    }
}

/// A cell for the report of a difference; text that is not UTF-8 becomes its bytes.
fn owned_cell(cell: ValueRef<'_>) -> Value {
    match cell {
        ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => Value::Text(text.to_owned()),
            Err(_) => Value::Blob(bytes.to_vec()),
        },
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{OpenOptions, Store};
    use crate::testkit::{self, TestNet};
    use crate::tx::{Decision, Scope, TxId};

    /// A store at `path` with patient `p` (home 0) and Dr `e` (Oncology, home 1) enrolled,
    /// appended to one transaction a block.
    struct Written {
        net: TestNet,
        store: Store,
        p: testkit::TestPerson,
        e: testkit::TestPerson,
    }

    impl Written {
        fn new(path: &Path) -> Written {
            let net = TestNet::new(4);
            let store = Store::open(path, &net.genesis, OpenOptions::default()).expect("store");
            let (p, e) = (net.patient(1, 0), net.doctor(2, 1, "Oncology"));
            let mut w = Written { net, store, p, e };
            for person in [w.p.clone(), w.e.clone()] {
                let tx = w.net.enroll(&person);
                w.ok(&tx);
            }
            w
        }

        /// `tx` alone in the next block, which must apply it; its id.
        fn ok(&mut self, tx: &SignedTx) -> TxId {
            let block = self.net.next_block(self.store.head(), vec![tx.clone()]);
            let applied = self.net.append(&mut self.store, &block).expect("appended");
            assert_eq!(applied.rejected, [], "{:?}", tx.meta());
            self.net.id(tx)
        }
    }

    /// docs/SECURITY.md, "Confidential records", §9: the replay covers erasures (the rules read
    /// metadata only, so it needs no data key), and an erasure edited in the store is found.
    #[test]
    fn verify_replays_erasures_without_any_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chain.db");
        let mut w = Written::new(&path);
        let (p, e) = (w.p.clone(), w.e.clone());
        let grant = w.net.grant(&p, &e.id, Scope::Write, None, &p.custodial());
        let grant_id = w.ok(&grant);
        let record = w.net.add_record(&e, &p.id, grant_id, &e.custodial());
        let record_id = w.ok(&record);
        let request = w.net.request_erasure(&p, record_id, &p.custodial());
        let request_id = w.ok(&request);
        let answer = w.net.answer_erasure(1, request_id, Decision::Erase);
        w.ok(&answer);
        assert!(w.store.is_erased(&record_id).expect("q"));
        let summary = verify_store(&path, &w.net.genesis, &mut |_| {}).expect("verifies");
        assert_eq!(summary.head_height, 6);
        drop(w.store);

        // The erasure turned into a refusal, or removed, behind the rules' back.
        for edit in [
            "UPDATE erasures SET decision = 1, reason = 0",
            "DELETE FROM erasures",
        ] {
            let copy = dir.path().join("edited.db");
            std::fs::copy(&path, &copy).expect("copy");
            let conn = Connection::open(&copy).expect("open");
            conn.execute_batch(edit).expect("edit");
            assert!(
                !crate::Reader::open(&copy)
                    .expect("reader")
                    .is_erased(&record_id)
                    .expect("q")
            );
            drop(conn);
            match verify_store(&copy, &w.net.genesis, &mut |_| {}) {
                Err(Error::Corrupt {
                    height: 5,
                    fault: Fault::State(what),
                    ..
                }) => assert!(what.contains("erasures"), "{edit}: {what}"),
                other => panic!("{edit}: expected the erasure's block named, got {other:?}"),
            }
        }

        // Text that is not UTF-8 where the replay has a number (red team s24): a difference
        // named at its block, not a panic of the comparison.
        let copy = dir.path().join("not-utf8.db");
        std::fs::copy(&path, &copy).expect("copy");
        Connection::open(&copy)
            .expect("open")
            .execute_batch("UPDATE erasures SET decision = CAST(x'ff' AS TEXT)")
            .expect("edit");
        match verify_store(&copy, &w.net.genesis, &mut |_| {}) {
            Err(Error::Corrupt {
                height: 5,
                fault: Fault::State(what),
                ..
            }) => assert!(what.contains("erasures"), "{what}"),
            other => panic!("expected the erasure's block named, got {other:?}"),
        }
    }

    /// The open requests the caps count (schema 7) are derived state: a store reopened counts
    /// as before, a store of schema 6 gets at migration the rows the replay makes, and a row
    /// removed behind the store's back fails verification at its request's block.
    #[test]
    fn open_requests_outlive_a_reopen_and_a_migration_and_are_verified() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chain.db");
        let mut w = Written::new(&path);
        let (p, e) = (w.p.clone(), w.e.clone());
        let ids: Vec<TxId> = (0..2)
            .map(|_| {
                let tx = w.net.request_grant(&e, &p.id, Scope::Write, &e.custodial());
                w.ok(&tx)
            })
            .collect();
        let grant = w
            .net
            .grant(&p, &e.id, Scope::Write, Some(ids[0]), &p.custodial());
        w.ok(&grant);
        let at = testkit::block_time(w.store.head().0);
        let counts = |store: &Store| {
            use crate::rules::StateView;
            let state = store.state();
            (
                state.pending_requests(&e.id, &p.id, at).expect("q"),
                state
                    .pending_requests_from_hospital_of(&e.id, &p.id, at)
                    .expect("q"),
            )
        };
        assert_eq!(counts(&w.store), (1, 1));
        verify_store(&path, &w.net.genesis, &mut |_| {}).expect("verifies");
        drop(w.store);

        let reopened = Store::open(&path, &w.net.genesis, OpenOptions::default()).expect("open");
        assert_eq!(counts(&reopened), (1, 1));
        drop(reopened);

        // Schema 6, as a store written before the table was.
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch("DROP TABLE open_requests; PRAGMA user_version = 6;")
            .expect("downgrade");
        drop(conn);
        let migrated = Store::open(&path, &w.net.genesis, OpenOptions::default()).expect("open");
        assert_eq!(counts(&migrated), (1, 1));
        drop(migrated);
        verify_store(&path, &w.net.genesis, &mut |_| {}).expect("verifies");

        let conn = Connection::open(&path).expect("open");
        conn.execute_batch("DELETE FROM open_requests")
            .expect("edit");
        drop(conn);
        match verify_store(&path, &w.net.genesis, &mut |_| {}) {
            Err(Error::Corrupt {
                height: 4,
                fault: Fault::State(what),
                ..
            }) => assert!(what.contains("open_requests"), "{what}"),
            other => panic!("expected the open request's block named, got {other:?}"),
        }
    }

    /// A certified block whose time is not after its predecessor's is refused on append, and a
    /// store that holds one anyway (written behind the store's back) fails verification there.
    #[test]
    fn block_times_must_increase() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chain.db");
        let net = TestNet::new(4);
        let mut store = net.write_chain(&path, 2, 3).expect("chain");
        let stale = net.block_at(store.head(), testkit::block_time(2), vec![]);
        assert!(matches!(
            net.append(&mut store, &stale),
            Err(Error::NotNext { height: 3, .. })
        ));
        drop(store);
        let mut conn = Connection::open(&path).expect("open");
        let db = conn.transaction().expect("begin");
        store::write_block(
            &db,
            &store::Index::default(),
            &net.genesis,
            &stale,
            &stale.hash(),
            &[],
        )
        .expect("written");
        db.commit().expect("commit");
        match verify_store(&path, &net.genesis, &mut |_| {}) {
            Err(Error::Corrupt {
                height: 3,
                fault: Fault::BlockTime { previous, found },
                ..
            }) => assert_eq!(
                (previous, found),
                (testkit::block_time(2), testkit::block_time(2))
            ),
            other => panic!("expected block 3's time named, got {other:?}"),
        }
        assert!(Store::open(&path, &net.genesis, OpenOptions::default()).is_err());
    }
}
