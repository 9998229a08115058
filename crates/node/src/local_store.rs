//! `node.db`: what one validator must not lose but that is not (yet) on chain: transactions it
//! acknowledged and has not seen committed, and the replica's durable protocol records.
//!
//! Writes are grouped by the caller: one SQLite transaction (one fsync) per batch of accepted
//! transactions or per step's protocol records, never one per transaction.

use std::path::Path;

use rusqlite::{Connection, params};

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
];

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
        Ok(Self { conn })
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

    /// Appends the replica's protocol records in one SQLite transaction (one fsync).
    pub fn append_durable(&mut self, records: &[Vec<u8>]) -> Result<(), NodeError> {
        if records.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO durable (record) VALUES (?1)")?;
            for record in records {
                insert.execute([record])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The replica's protocol records in the order they were written.
    pub fn durable(&self) -> Result<Vec<(i64, Vec<u8>)>, NodeError> {
        let mut select = self
            .conn
            .prepare("SELECT n, record FROM durable ORDER BY n")?;
        let rows = select.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replaces all protocol records by `records` (a compacted list), atomically.
    pub fn replace_durable(&mut self, records: &[Vec<u8>]) -> Result<(), NodeError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM durable", [])?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO durable (record) VALUES (?1)")?;
            for record in records {
                insert.execute([record])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_and_durable_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.db");
        {
            let mut store = LocalStore::open(&path).unwrap();
            store
                .add_pending([(&[1u8; 32], 5, &b"one"[..]), (&[2u8; 32], 3, &b"two"[..])])
                .unwrap();
            store
                .append_durable(&[b"a".to_vec(), b"b".to_vec()])
                .unwrap();
            store.remove_pending([&[1u8; 32]]).unwrap();
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
        let durable: Vec<Vec<u8>> = store
            .durable()
            .unwrap()
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        assert_eq!(durable, vec![b"a".to_vec(), b"b".to_vec()]);
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
