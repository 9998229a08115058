//! `node.db`: what one validator must not lose but that is not (yet) on chain: transactions it
//! acknowledged and has not seen committed, and the replica's durable protocol records.
//!
//! Writes are grouped by the caller: one SQLite transaction (one fsync) per batch of accepted
//! transactions or per step's protocol records, never one per transaction.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use borsh::{BorshDeserialize, BorshSerialize};
use pbft::{Digest, Durable, PrePrepare, PreparedCertificate, Proposal, SeqNo, Signed, View, Vote};
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::NodeError;

const MIGRATIONS: &[&str] = &[
    // v1
    "CREATE TABLE pending (
         id BLOB PRIMARY KEY,
         accepted_ms INTEGER NOT NULL,
         body BLOB NOT NULL
     );
     CREATE TABLE durable (
         n INTEGER PRIMARY KEY AUTOINCREMENT,
         record BLOB NOT NULL
     );",
    // v2: protocol records name their proposal by digest; each proposal body is stored once.
    // `format` 1 is a whole `pbft::Durable` (rows written by v1), 2 is a [`Record`].
    "ALTER TABLE durable ADD COLUMN format INTEGER NOT NULL DEFAULT 1;
     CREATE TABLE proposals (
         digest BLOB PRIMARY KEY,
         seq INTEGER NOT NULL,
         body BLOB NOT NULL
     );",
    // v3: the validator's incarnation, the copy of its marker's counter (`incarnation.rs`).
    "CREATE TABLE incarnation (
         one INTEGER PRIMARY KEY CHECK (one = 1),
         incarnation INTEGER NOT NULL
     );",
    // v4: view-changes and new-views carry their sender's incarnation (issue 8, finding 2), so
    // a `Durable::NewView` written before (tag 5, whole: `Record::Whole` is tag 0) cannot be
    // read. It only lets a restarted primary resend its new-view (liveness, never safety):
    // dropped. No other record holds a view-change or new-view.
    "DELETE FROM durable
     WHERE (format = 2 AND substr(record, 1, 2) = x'0005')
        OR (format = 1 AND substr(record, 1, 1) = x'05');",
];

/// `durable.format` of a row holding a borsh [`Record`].
const FORMAT_RECORD: i64 = 2;

/// A protocol record as node.db stores it. A pre-prepare and the prepared certificate of the
/// same sequence number carry the same proposal (about 0.5 MB for a 1,000-transaction block):
/// storing it inside both records wrote it twice per block and made compaction decode every
/// block in the log. Here the records name the proposal by digest, and the body is written once
/// to `proposals`, in the same SQLite transaction as the first record that names it (so a
/// record is never durable without its proposal), and joined back on restore.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
enum Record {
    /// Every other record (`View`, `ViewChange`, `StableCheckpoint` and `Recovery` carry no
    /// proposal; `NewView`, written once per view change of a primary, keeps its O set inside).
    Whole(Durable),
    PrePrepare {
        view: View,
        seq: SeqNo,
        digest: Digest,
    },
    Prepared {
        view: View,
        seq: SeqNo,
        digest: Digest,
        prepares: Vec<Signed<Vote>>,
    },
}

impl Record {
    /// The record, and the proposal it names (to be stored beside it) if any.
    fn split(durable: &Durable) -> (Record, Option<&Arc<Proposal>>) {
        match durable {
            Durable::PrePrepare(pp) => (
                Record::PrePrepare {
                    view: pp.view,
                    seq: pp.proposal.seq,
                    digest: pp.digest,
                },
                Some(&pp.proposal),
            ),
            Durable::Prepared(cert) => (
                Record::Prepared {
                    view: cert.pre_prepare.view,
                    seq: cert.pre_prepare.proposal.seq,
                    digest: cert.pre_prepare.digest,
                    prepares: cert.prepares.clone(),
                },
                Some(&cert.pre_prepare.proposal),
            ),
            other => (Record::Whole(other.clone()), None),
        }
    }

    /// The whole record, with `proposal` the body this record names (ignored if it names none).
    fn join(
        self,
        proposal: impl FnOnce(&Digest, SeqNo) -> Result<Arc<Proposal>, NodeError>,
    ) -> Result<Durable, NodeError> {
        Ok(match self {
            Record::Whole(durable) => durable,
            Record::PrePrepare { view, seq, digest } => Durable::PrePrepare(PrePrepare {
                view,
                digest,
                proposal: proposal(&digest, seq)?,
            }),
            Record::Prepared {
                view,
                seq,
                digest,
                prepares,
            } => Durable::Prepared(PreparedCertificate {
                pre_prepare: PrePrepare {
                    view,
                    digest,
                    proposal: proposal(&digest, seq)?,
                },
                prepares,
            }),
        })
    }
}

/// A stand-in proposal with only the sequence number: enough for `Durable::compact`, which
/// decides by sequence number, view and digest and never reads a proposal's requests.
fn placeholder(_: &Digest, seq: SeqNo) -> Result<Arc<Proposal>, NodeError> {
    Ok(Arc::new(Proposal {
        seq,
        view: 0,
        proposer: 0,
        prev: [0; 32],
        time_ms: 0,
        requests: Vec::new(),
    }))
}

/// An acknowledged transaction as stored: its id, when it was accepted, its encoded bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct PendingRow {
    pub id: [u8; 32],
    pub accepted_ms: u64,
    pub body: Vec<u8>,
}

pub struct LocalStore {
    conn: Connection,
}

impl LocalStore {
    pub fn open(path: &Path) -> Result<Self, NodeError> {
        ledger::files::prepare_sqlite_file(path)?;
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version: usize = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > MIGRATIONS.len() {
            return Err(NodeError::Config(format!(
                "{} has schema version {version}, newer than this medchain ({}); upgrade medchain",
                path.display(),
                MIGRATIONS.len()
            )));
        }
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(migration)?;
            tx.pragma_update(None, "user_version", index + 1)?;
            tx.commit()?;
        }
        let mut store = Self { conn };
        store.upgrade_v1_records()?;
        Ok(store)
    }

    /// The incarnation recorded by the last start (`None`: node.db never started a validator).
    pub fn incarnation(&self) -> Result<Option<u64>, NodeError> {
        let stored: Option<i64> = self
            .conn
            .query_row("SELECT incarnation FROM incarnation", [], |row| row.get(0))
            .optional()?;
        Ok(stored.map(|n| n as u64))
    }

    /// Records this start's incarnation and, if the replica starts recovering, the
    /// `Durable::Recovery` record that makes every later start recover too until it is done, in
    /// one SQLite transaction (one fsync).
    pub fn begin_incarnation(
        &mut self,
        incarnation: u64,
        recovering: bool,
    ) -> Result<(), NodeError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO incarnation (one, incarnation) VALUES (1, ?1)",
            [incarnation as i64],
        )?;
        if recovering {
            insert_records(&tx, &[Durable::Recovery { bound: None }])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Durably records accepted transactions (encoded), in one SQLite transaction.
    pub fn add_pending<'a>(
        &mut self,
        transactions: impl IntoIterator<Item = (&'a [u8; 32], u64, &'a [u8])>,
    ) -> Result<(), NodeError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO pending (id, accepted_ms, body) VALUES (?1, ?2, ?3)",
            )?;
            for (id, accepted_ms, body) in transactions {
                insert.execute(params![&id[..], accepted_ms as i64, body])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets transactions that are now on chain. Not synced on its own account: a crash
    /// that loses this only leaves ids that the next start finds committed and drops again.
    pub fn remove_pending<'a>(
        &mut self,
        ids: impl IntoIterator<Item = &'a [u8; 32]>,
    ) -> Result<(), NodeError> {
        let tx = self.conn.transaction()?;
        {
            let mut delete = tx.prepare_cached("DELETE FROM pending WHERE id = ?1")?;
            for id in ids {
                delete.execute([&id[..]])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every acknowledged, not yet removed transaction, oldest first.
    pub fn pending(&self) -> Result<Vec<PendingRow>, NodeError> {
        let mut select = self
            .conn
            .prepare("SELECT id, accepted_ms, body FROM pending ORDER BY accepted_ms, id")?;
        let rows = select.query_map([], |row| {
            let id: Vec<u8> = row.get(0)?;
            let accepted_ms: i64 = row.get(1)?;
            let body: Vec<u8> = row.get(2)?;
            Ok((id, accepted_ms, body))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, accepted_ms, body) = row?;
            let id: [u8; 32] = id.try_into().map_err(|_| {
                NodeError::Corrupt("a pending transaction id is not 32 bytes".into())
            })?;
            out.push(PendingRow {
                id,
                accepted_ms: accepted_ms as u64,
                body,
            });
        }
        Ok(out)
    }

    #[cfg(test)]
    pub fn pending_count(&self) -> Result<u64, NodeError> {
        let count: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM pending", [], |row| row.get(0))?;
        Ok(count as u64)
    }

    /// Appends the replica's protocol records in one SQLite transaction (one fsync), with the
    /// body of each proposal they name that is not stored yet.
    pub fn append_durable(&mut self, records: &[Durable]) -> Result<(), NodeError> {
        if records.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        insert_records(&tx, records)?;
        tx.commit()?;
        Ok(())
    }

    /// The replica's protocol records in the order they were written, with their proposals.
    pub fn durable(&self) -> Result<Vec<Durable>, NodeError> {
        let mut proposals: HashMap<Digest, Arc<Proposal>> = HashMap::new();
        let mut select = self
            .conn
            .prepare_cached("SELECT seq, body FROM proposals WHERE digest = ?1")?;
        let mut load = |digest: &Digest, seq: SeqNo| -> Result<Arc<Proposal>, NodeError> {
            if let Some(p) = proposals.get(digest) {
                return Ok(p.clone());
            }
            let row: Option<(i64, Vec<u8>)> = select
                .query_row([&digest[..]], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((stored_seq, body)) = row else {
                return Err(NodeError::Corrupt(format!(
                    "node.db: the proposal of a protocol record at sequence number {seq} is missing"
                )));
            };
            let proposal = Proposal::try_from_slice(&body).map_err(|error| {
                NodeError::Corrupt(format!("node.db: proposal {seq} is unreadable: {error}"))
            })?;
            if stored_seq as u64 != seq || proposal.seq != seq {
                return Err(NodeError::Corrupt(format!(
                    "node.db: the proposal stored for sequence number {seq} is another one's"
                )));
            }
            let proposal = Arc::new(proposal);
            proposals.insert(*digest, proposal.clone());
            Ok(proposal)
        };
        self.records()?
            .into_iter()
            .map(|(_, record)| record.join(&mut load))
            .collect()
    }

    /// The stored records without their proposals' bodies.
    fn records(&self) -> Result<Vec<(i64, Record)>, NodeError> {
        let mut select = self
            .conn
            .prepare("SELECT n, format, record FROM durable ORDER BY n")?;
        let rows = select.query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (n, format, bytes) = row?;
            let unreadable = |error: std::io::Error| {
                NodeError::Corrupt(format!(
                    "node.db: protocol record {n} is unreadable: {error}"
                ))
            };
            if format != FORMAT_RECORD {
                return Err(NodeError::Corrupt(format!(
                    "node.db: protocol record {n} has unknown format {format}"
                )));
            }
            out.push((n, Record::try_from_slice(&bytes).map_err(unreadable)?));
        }
        Ok(out)
    }

    /// Keeps the protocol log bounded: drops every record a later one makes useless
    /// (`Durable::compact`, applied to the records without their proposals) and the proposals
    /// at or below the stable checkpoint, atomically.
    pub fn compact_durable(&mut self) -> Result<(), NodeError> {
        let stored = self.records()?;
        let mut records = stored
            .iter()
            .map(|(_, record)| record.clone().join(placeholder))
            .collect::<Result<Vec<_>, _>>()?;
        let before = records.len();
        Durable::compact(&mut records);
        let stable = records
            .iter()
            .filter_map(|r| match r {
                Durable::StableCheckpoint { checkpoint, .. } => Some(checkpoint.seq),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let tx = self.conn.transaction()?;
        if records.len() < before {
            let kept: Vec<Record> = records.iter().map(|r| Record::split(r).0).collect();
            tx.execute("DELETE FROM durable", [])?;
            let mut insert =
                tx.prepare_cached("INSERT INTO durable (record, format) VALUES (?1, ?2)")?;
            for record in &kept {
                insert.execute(params![borsh::to_vec(record)?, FORMAT_RECORD])?;
            }
        }
        tx.execute("DELETE FROM proposals WHERE seq <= ?1", [stable as i64])?;
        tx.commit()?;
        Ok(())
    }

    /// Rewrites the records written by v1 (a whole `Durable` each, proposal inside) in the v2
    /// form, once, atomically.
    fn upgrade_v1_records(&mut self) -> Result<(), NodeError> {
        let legacy = self
            .conn
            .prepare("SELECT 1 FROM durable WHERE format != ?1 LIMIT 1")?
            .exists([FORMAT_RECORD])?;
        if !legacy {
            return Ok(());
        }
        let rows: Vec<(i64, i64, Vec<u8>)> = self
            .conn
            .prepare("SELECT n, format, record FROM durable ORDER BY n")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        let mut records = Vec::with_capacity(rows.len());
        for (n, format, bytes) in rows {
            if format == FORMAT_RECORD {
                return Err(NodeError::Corrupt(format!(
                    "node.db: protocol record {n} is newer than the v1 records before it"
                )));
            }
            records.push(Durable::try_from_slice(&bytes).map_err(|error| {
                NodeError::Corrupt(format!(
                    "node.db: protocol record {n} is unreadable: {error}"
                ))
            })?);
        }
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM durable", [])?;
        insert_records(&tx, &records)?;
        tx.commit()?;
        Ok(())
    }
}

fn insert_records(tx: &rusqlite::Transaction<'_>, records: &[Durable]) -> Result<(), NodeError> {
    let mut insert = tx.prepare_cached("INSERT INTO durable (record, format) VALUES (?1, ?2)")?;
    let mut stored = tx.prepare_cached("SELECT 1 FROM proposals WHERE digest = ?1")?;
    let mut insert_proposal =
        tx.prepare_cached("INSERT INTO proposals (digest, seq, body) VALUES (?1, ?2, ?3)")?;
    for durable in records {
        let (record, proposal) = Record::split(durable);
        if let Some(proposal) = proposal {
            let digest = match &record {
                Record::PrePrepare { digest, .. } | Record::Prepared { digest, .. } => digest,
                Record::Whole(_) => unreachable!("only pre-prepares and certificates name one"),
            };
            if !stored.exists([&digest[..]])? {
                insert_proposal.execute(params![
                    &digest[..],
                    proposal.seq as i64,
                    borsh::to_vec(proposal.as_ref())?
                ])?;
            }
        }
        insert.execute(params![borsh::to_vec(&record)?, FORMAT_RECORD])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal(seq: SeqNo) -> Arc<Proposal> {
        Arc::new(Proposal {
            seq,
            view: 0,
            proposer: 0,
            prev: [seq as u8; 32],
            time_ms: seq,
            requests: vec![pbft::Request {
                id: [seq as u8 + 100; 32],
                timestamp_ms: seq,
                payload: Arc::from(&b"payload"[..]),
            }],
        })
    }

    fn pre_prepare(seq: SeqNo) -> PrePrepare {
        PrePrepare {
            view: 0,
            digest: [seq as u8; 32],
            proposal: proposal(seq),
        }
    }

    fn prepared(seq: SeqNo) -> Durable {
        Durable::Prepared(PreparedCertificate {
            pre_prepare: pre_prepare(seq),
            prepares: vec![Signed {
                from: 1,
                message: Vote {
                    view: 0,
                    seq,
                    digest: [seq as u8; 32],
                },
                signature: pbft::Signature([7; 64]),
            }],
        })
    }

    fn stable(seq: SeqNo) -> Durable {
        Durable::StableCheckpoint {
            checkpoint: pbft::Checkpoint {
                seq,
                digest: [seq as u8; 32],
            },
            proof: Vec::new(),
        }
    }

    fn proposal_rows(store: &LocalStore) -> i64 {
        store
            .conn
            .query_row("SELECT COUNT(*) FROM proposals", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn pending_and_durable_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.db");
        let records = vec![
            Durable::View(0),
            Durable::PrePrepare(pre_prepare(1)),
            prepared(1),
            Durable::PrePrepare(pre_prepare(2)),
        ];
        {
            let mut store = LocalStore::open(&path).unwrap();
            store
                .add_pending([(&[1u8; 32], 5, &b"one"[..]), (&[2u8; 32], 3, &b"two"[..])])
                .unwrap();
            store.append_durable(&records[..2]).unwrap();
            store.append_durable(&records[2..]).unwrap();
            store.remove_pending([&[1u8; 32]]).unwrap();
            // The pre-prepare and the certificate of 1 share one stored proposal.
            assert_eq!(proposal_rows(&store), 2);
        }
        let store = LocalStore::open(&path).unwrap();
        let pending = store.pending().unwrap();
        assert_eq!(
            pending,
            vec![PendingRow {
                id: [2u8; 32],
                accepted_ms: 3,
                body: b"two".to_vec()
            }]
        );
        assert_eq!(store.durable().unwrap(), records);
    }

    #[test]
    fn compaction_drops_records_and_proposals_below_the_stable_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LocalStore::open(&dir.path().join("node.db")).unwrap();
        let mut records = vec![Durable::View(0)];
        for seq in 1..=3 {
            records.push(Durable::PrePrepare(pre_prepare(seq)));
            records.push(prepared(seq));
        }
        records.push(stable(2));
        store.append_durable(&records).unwrap();
        store.compact_durable().unwrap();
        let mut expected = records.clone();
        Durable::compact(&mut expected);
        assert_eq!(store.durable().unwrap(), expected);
        assert_eq!(proposal_rows(&store), 1);
    }

    #[test]
    fn records_written_by_v1_are_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.db");
        let records = vec![
            Durable::View(0),
            Durable::PrePrepare(pre_prepare(1)),
            prepared(1),
        ];
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            for record in &records {
                conn.execute(
                    "INSERT INTO durable (record) VALUES (?1)",
                    [borsh::to_vec(record).unwrap()],
                )
                .unwrap();
            }
        }
        let store = LocalStore::open(&path).unwrap();
        assert_eq!(store.durable().unwrap(), records);
        assert_eq!(proposal_rows(&store), 1);
    }

    /// A primary's new-view record of v3 (before view-changes and new-views carried the
    /// sender's incarnation) would be unreadable: the upgrade drops it and keeps the others.
    #[test]
    fn new_view_records_before_incarnations_are_dropped_on_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.db");
        let kept = vec![Durable::View(1), Durable::PrePrepare(pre_prepare(1))];
        {
            let mut store = LocalStore::open(&path).unwrap();
            store.append_durable(&kept[..1]).unwrap();
            // Record::Whole(Durable::NewView(NewView { view: 1, view_changes: [], pre_prepares:
            // [] })) as v3 wrote it: no incarnation after the view.
            let mut old_new_view = vec![0u8, 5];
            old_new_view.extend_from_slice(&1u64.to_le_bytes());
            old_new_view.extend_from_slice(&[0; 8]);
            store
                .conn
                .execute(
                    "INSERT INTO durable (record, format) VALUES (?1, ?2)",
                    params![old_new_view, FORMAT_RECORD],
                )
                .unwrap();
            store.append_durable(&kept[1..]).unwrap();
            assert!(matches!(store.durable(), Err(NodeError::Corrupt(_))));
            store.conn.pragma_update(None, "user_version", 3).unwrap();
        }
        let store = LocalStore::open(&path).unwrap();
        assert_eq!(store.durable().unwrap(), kept);
    }

    #[test]
    fn a_record_without_its_proposal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LocalStore::open(&dir.path().join("node.db")).unwrap();
        store.append_durable(&[prepared(1)]).unwrap();
        store.conn.execute("DELETE FROM proposals", []).unwrap();
        assert!(matches!(store.durable(), Err(NodeError::Corrupt(_))));
    }

    #[test]
    fn adding_the_same_transaction_twice_keeps_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LocalStore::open(&dir.path().join("node.db")).unwrap();
        store.add_pending([(&[7u8; 32], 1, &b"x"[..])]).unwrap();
        store.add_pending([(&[7u8; 32], 2, &b"x"[..])]).unwrap();
        assert_eq!(store.pending_count().unwrap(), 1);
    }
}
