//! The schema of `chain.db`, as numbered migrations recorded in `PRAGMA user_version`.
//!
//! A migration is appended, never edited: a store written by version `k` is brought up to date
//! by running migrations `k+1..` in order, each in the same transaction as its version bump.
use rusqlite::Connection;

use crate::{Error, Result};

/// Migration `i` (0-based) takes the schema from version `i` to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: blocks, transactions and the derived state.
    //
    // Block and transaction content is stored once, as the canonical borsh bytes that are
    // hashed and signed, so verification checks exactly what queries read. The derived tables
    // (records, consents, accesses) hold only keys and references to transactions: a record's
    // diagnosis is read from its verified transaction, never from a copy that could be edited
    // apart from it.
    "
    CREATE TABLE blocks (
        height       INTEGER PRIMARY KEY,
        hash         BLOB NOT NULL,
        header       BLOB NOT NULL,
        certificate  BLOB NOT NULL,
        tx_count     INTEGER NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        proposer     INTEGER NOT NULL,
        view         INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX blocks_by_hash ON blocks(hash);

    -- One row per transaction of a block, in block order; `rejected` says why the state machine
    -- did not apply it (NULL: applied).
    CREATE TABLE transactions (
        tx           INTEGER PRIMARY KEY,
        height       INTEGER NOT NULL,
        idx          INTEGER NOT NULL,
        id           BLOB NOT NULL,
        kind         TEXT NOT NULL,
        patient_id   TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        body         BLOB NOT NULL,
        rejected     TEXT
    );
    CREATE UNIQUE INDEX transactions_by_position ON transactions(height, idx);
    CREATE INDEX transactions_by_id ON transactions(id);

    -- Applied AddRecord transactions; one record per consent.
    CREATE TABLE records (
        patient_id   TEXT NOT NULL,
        tx           INTEGER NOT NULL,
        consent_hash BLOB NOT NULL UNIQUE,
        PRIMARY KEY (patient_id, tx)
    ) WITHOUT ROWID;

    -- Applied Access transactions.
    CREATE TABLE accesses (
        patient_id   TEXT NOT NULL,
        tx           INTEGER NOT NULL,
        PRIMARY KEY (patient_id, tx)
    ) WITHOUT ROWID;

    -- One row per consent hash: the transaction that granted it and the one that used it.
    CREATE TABLE consents (
        consent_hash BLOB PRIMARY KEY,
        granted_tx   INTEGER,
        used_tx      INTEGER
    ) WITHOUT ROWID;
    ",
];

/// The schema version this program writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the schema up to [`VERSION`], refusing a store from a newer program.
pub fn migrate(conn: &mut Connection, path: &std::path::Path) -> Result<()> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > VERSION {
        return Err(Error::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
