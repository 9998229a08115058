//! The schema of `chain.db`, as numbered migrations recorded in `PRAGMA user_version`.
//!
//! A migration is appended, never edited: a store written by version `k` is brought up to date
//! by running migrations `k+1..` in order, all in one transaction with the version bump, so a
//! crash leaves the store at `k`, never between. A new store passes through no version on disk
//! but 0 and [`VERSION`]: interrupted while created, it is still new, not a store of an older
//! format (red team of issue 10, break 11).
//!
//! The version also names the chain format. A migration can move rows, never re-sign a block: a
//! store whose version is below [`FORMAT_SINCE`] holds blocks hashed in an older format, and is
//! refused at open ([`Error::FormatTooOld`]) with what to do, rather than reported as tampered.
use rusqlite::{Connection, OptionalExtension};

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
    // 2: index hashes by their first 8 bytes instead of all 32.
    //
    // Transaction ids and consent hashes are uniformly random, so each block's inserts land on
    // random leaf pages of every index keyed by them: once an index outgrows the block, a
    // block dirties (and writes to the WAL, then checkpoints) about one page per transaction
    // per index. An 8-byte prefix (`substr(hash, 1, 8)`, an expression index) makes those
    // indexes about 2.5 times smaller, so far fewer pages are dirtied per block while the
    // store is young and the cache holds more of them later. The prefix is not unique: every
    // lookup also compares the whole hash (`... AND id = ?`), so a prefix collision only costs
    // one more row read. The state machine, not a UNIQUE constraint, decides that a consent
    // authorises one record (it always did: the constraint was a second guard).
    //
    // `records` becomes a rowid table keyed by its transaction row (appended in chain order),
    // with the patient in a small index, instead of a table ordered by (patient, tx) that
    // carried each 32-byte consent hash to a random page.
    // `consents` becomes a rowid table (rows appended in grant order, the hash indexed by its
    // prefix) for the same reason: its 32-byte primary key was another random B-tree.
    "
    DROP INDEX transactions_by_id;
    CREATE INDEX transactions_by_id_prefix ON transactions(substr(id, 1, 8));

    CREATE TABLE records_v2 (
        tx           INTEGER PRIMARY KEY,
        patient_id   TEXT NOT NULL,
        consent_hash BLOB NOT NULL
    );
    INSERT INTO records_v2 (tx, patient_id, consent_hash)
        SELECT tx, patient_id, consent_hash FROM records ORDER BY tx;
    DROP TABLE records;
    ALTER TABLE records_v2 RENAME TO records;
    CREATE INDEX records_by_patient ON records(patient_id);
    CREATE INDEX records_by_consent_prefix ON records(substr(consent_hash, 1, 8));

    CREATE TABLE consents_v2 (
        consent_hash BLOB NOT NULL,
        granted_tx   INTEGER,
        used_tx      INTEGER
    );
    INSERT INTO consents_v2 (consent_hash, granted_tx, used_tx)
        SELECT consent_hash, granted_tx, used_tx FROM consents
        ORDER BY coalesce(granted_tx, used_tx);
    DROP TABLE consents;
    ALTER TABLE consents_v2 RENAME TO consents;
    CREATE INDEX consents_by_prefix ON consents(substr(consent_hash, 1, 8));
    ",
    // 3: chain format 3 (issue 8, finding 1). A block's Merkle leaves are the hashes of its
    // entries' exact bytes (request id, timestamp and payload, signature included) instead of
    // the transaction ids, and an entry that carries no valid transaction is stored as it came
    // with `kind = 'invalid'` and its reason in `rejected`. The tables are unchanged; stores of
    // earlier versions are refused (see `FORMAT_SINCE`).
    "
    SELECT 1;
    ",
    // 4: chain format 4 (issue 9): transactions are envelopes signed by people's keys (tag
    // `medchain/tx/v2`), block times are the primary's, and the rules derive identities, keys,
    // links, asks, requests, grants, recoveries, records and accesses. Stores of earlier
    // versions are refused (see `FORMAT_SINCE`), so this migration only ever runs on a new,
    // empty file after migrations 1 to 3: it drops their derived tables and writes the new ones.
    //
    // Derived rows are keyed by `tx`, the row of the transaction that made them (appended in
    // chain order, so an insert touches the rightmost pages only), and found by transaction id
    // through `transactions_by_id_prefix`, the one index keyed by random ids. References to
    // other transactions (`used_tx`, `revoked_tx`, ...) are rows as well. The other indexes are
    // those the rules and the application's queries look up by: a person's keys, asks,
    // requests, grants, recoveries, records and accesses.
    "
    DROP TABLE records;
    DROP TABLE accesses;
    DROP TABLE consents;
    DROP TABLE transactions;

    -- One row per entry of a block, in block order; `kind` is the kind's name or 'invalid';
    -- `rejected` says why the rules did not apply it (NULL: applied).
    CREATE TABLE transactions (
        tx           INTEGER PRIMARY KEY,
        height       INTEGER NOT NULL,
        idx          INTEGER NOT NULL,
        id           BLOB NOT NULL,
        kind         TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        body         BLOB NOT NULL,
        rejected     TEXT
    );
    CREATE UNIQUE INDEX transactions_by_position ON transactions(height, idx);
    CREATE INDEX transactions_by_id_prefix ON transactions(substr(id, 1, 8));

    CREATE TABLE persons (
        person     BLOB PRIMARY KEY,
        tx         INTEGER NOT NULL,
        role       INTEGER NOT NULL,
        department TEXT,
        name       TEXT,
        home       INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE keys (
        key            BLOB PRIMARY KEY,
        tx             INTEGER NOT NULL,
        person         BLOB NOT NULL,
        kind           INTEGER NOT NULL,
        label          TEXT NOT NULL,
        origin         INTEGER NOT NULL,
        added_by       INTEGER NOT NULL,
        active_from_ms INTEGER NOT NULL,
        revoked_tx     INTEGER,
        recovery_tx    INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX keys_by_person ON keys(person);

    CREATE TABLE links (
        person    BLOB NOT NULL,
        validator INTEGER NOT NULL,
        tx        INTEGER NOT NULL,
        PRIMARY KEY (person, validator)
    ) WITHOUT ROWID;

    CREATE TABLE asks (
        tx          INTEGER PRIMARY KEY,
        person      BLOB NOT NULL,
        validator   INTEGER NOT NULL,
        what        BLOB NOT NULL,
        expires_ms  INTEGER NOT NULL,
        answered_tx INTEGER
    );
    CREATE INDEX asks_by_person ON asks(person, expires_ms);

    CREATE TABLE requests (
        tx            INTEGER PRIMARY KEY,
        patient       BLOB NOT NULL,
        doctor        BLOB NOT NULL,
        doctor_home   INTEGER NOT NULL,
        scope_read_ms INTEGER,
        created_ms    INTEGER NOT NULL,
        expires_ms    INTEGER NOT NULL,
        answered_tx   INTEGER,
        answer        INTEGER
    );
    CREATE INDEX requests_by_patient ON requests(patient, expires_ms);

    CREATE TABLE grants (
        tx            INTEGER PRIMARY KEY,
        patient       BLOB NOT NULL,
        doctor        BLOB NOT NULL,
        scope_read_ms INTEGER,
        attested      INTEGER NOT NULL,
        request_tx    INTEGER,
        granted_ms    INTEGER NOT NULL,
        expires_ms    INTEGER NOT NULL,
        used_tx       INTEGER,
        revoked_tx    INTEGER
    );
    CREATE INDEX grants_by_patient ON grants(patient);
    CREATE INDEX grants_by_doctor ON grants(doctor, expires_ms);

    CREATE TABLE recoveries (
        tx           INTEGER PRIMARY KEY,
        person       BLOB NOT NULL,
        key          BLOB NOT NULL,
        effective_ms INTEGER NOT NULL,
        cancelled_tx INTEGER
    );
    CREATE INDEX recoveries_by_person ON recoveries(person);

    CREATE TABLE records (
        tx       INTEGER PRIMARY KEY,
        patient  BLOB NOT NULL,
        doctor   BLOB NOT NULL,
        grant_tx INTEGER NOT NULL
    );
    CREATE INDEX records_by_patient ON records(patient);

    CREATE TABLE accesses (
        tx       INTEGER PRIMARY KEY,
        patient  BLOB NOT NULL,
        reader   BLOB NOT NULL,
        serving  INTEGER NOT NULL,
        grant_tx INTEGER
    );
    CREATE INDEX accesses_by_patient ON accesses(patient);
    ",
    // 5: chain format 5 (issue 10, docs/SECURITY.md "Confidential records", §13): bodies of
    // records, requests and grants are sealed, two kinds ask for and answer an erasure, a read
    // grant takes a key of the patient's home. Stores of earlier versions are refused (see
    // `FORMAT_SINCE`), so this migration only ever runs on a new, empty file after migrations
    // 1 to 4: it rewrites the tables that gain columns rather than altering them.
    //
    // `keys` gains when a key was added and until when it is young (§4.2); `grants` and
    // `records` the validator that sealed them (`requests` has it: `doctor_home`), so that an
    // erasure request reads one row to learn who answers it. `erasures` holds every request
    // and its answer; a transaction is erased iff an erasure of it was answered `Erase`
    // (`decision = 0`), so no `erased` column elsewhere can disagree with it.
    "
    DROP TABLE keys;
    CREATE TABLE keys (
        key            BLOB PRIMARY KEY,
        tx             INTEGER NOT NULL,
        person         BLOB NOT NULL,
        kind           INTEGER NOT NULL,
        label          TEXT NOT NULL,
        origin         INTEGER NOT NULL,
        added_by       INTEGER NOT NULL,
        added_ms       INTEGER NOT NULL,
        young_until_ms INTEGER NOT NULL,
        active_from_ms INTEGER NOT NULL,
        revoked_tx     INTEGER,
        recovery_tx    INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX keys_by_person ON keys(person);

    DROP TABLE grants;
    CREATE TABLE grants (
        tx            INTEGER PRIMARY KEY,
        patient       BLOB NOT NULL,
        doctor        BLOB NOT NULL,
        scope_read_ms INTEGER,
        attested      INTEGER NOT NULL,
        request_tx    INTEGER,
        granted_ms    INTEGER NOT NULL,
        expires_ms    INTEGER NOT NULL,
        sealer        INTEGER NOT NULL,
        used_tx       INTEGER,
        revoked_tx    INTEGER
    );
    CREATE INDEX grants_by_patient ON grants(patient);
    CREATE INDEX grants_by_doctor ON grants(doctor, expires_ms);

    DROP TABLE records;
    CREATE TABLE records (
        tx       INTEGER PRIMARY KEY,
        patient  BLOB NOT NULL,
        doctor   BLOB NOT NULL,
        grant_tx INTEGER NOT NULL,
        hospital INTEGER NOT NULL
    );
    CREATE INDEX records_by_patient ON records(patient);

    -- `decision`: NULL while pending, 0 erase, 1 refuse (with `reason` and `until_ms`).
    CREATE TABLE erasures (
        tx           INTEGER PRIMARY KEY,
        patient      BLOB NOT NULL,
        target_tx    INTEGER NOT NULL,
        hospital     INTEGER NOT NULL,
        requested_by INTEGER NOT NULL,
        requested_ms INTEGER NOT NULL,
        answered_tx  INTEGER,
        answered_ms  INTEGER,
        decision     INTEGER,
        reason       INTEGER,
        until_ms     INTEGER
    );
    CREATE INDEX erasures_by_patient ON erasures(patient);
    CREATE INDEX erasures_by_hospital ON erasures(hospital, answered_tx);
    CREATE INDEX erasures_by_target ON erasures(target_tx);
    ",
    // 6 (issue 11, docs/STORAGE.md): lookups by random key without random inserts (§1), and
    // each entry's bytes stored once (§3).
    //
    // The entries' payloads move to `bodies`, one row each, and `transactions.body_row` names
    // the row: a node stages the bodies of a proposal when it persists its pre-prepare
    // (`proposals`, the proposal without its payloads), and the block that commits it refers to
    // them instead of storing them again.
    //
    // Lookups by random key (§1). The
    // indexes keyed by transaction id and by person cost a leaf page per insert once larger
    // than a block; they are replaced by `seen_ids`, ordered by the signer's clock (the
    // duplicate check: honest signers stamp the present, so a block's rows go to the last
    // pages), and the epoch index's sorted runs (`store::index`). Both are derived state,
    // written in each block's transaction and compared by verification; `seen_ids` and the
    // runs of a store of version 5 are filled in by [`fill_version_6`] in this migration's
    // transaction. Blocks hash as before.
    "
    CREATE TABLE bodies (
        b    INTEGER PRIMARY KEY,
        body BLOB NOT NULL
    );
    INSERT INTO bodies (b, body) SELECT tx, body FROM transactions ORDER BY tx;
    -- `body_row`: the row of `bodies` holding the entry's payload.
    CREATE TABLE transactions_6 (
        tx           INTEGER PRIMARY KEY,
        height       INTEGER NOT NULL,
        idx          INTEGER NOT NULL,
        id           BLOB NOT NULL,
        kind         TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        body_row     INTEGER NOT NULL,
        rejected     TEXT
    );
    INSERT INTO transactions_6 (tx, height, idx, id, kind, timestamp_ms, body_row, rejected)
        SELECT tx, height, idx, id, kind, timestamp_ms, tx, rejected FROM transactions ORDER BY tx;
    DROP TABLE transactions;
    ALTER TABLE transactions_6 RENAME TO transactions;
    CREATE UNIQUE INDEX transactions_by_position ON transactions(height, idx);

    -- Proposals a node staged and no block has committed yet: the proposal without its
    -- payloads (`skeleton`, borsh), which are the `count` rows of `bodies` from `first_body`.
    CREATE TABLE proposals (
        digest     BLOB PRIMARY KEY,
        seq        INTEGER NOT NULL,
        first_body INTEGER NOT NULL,
        count      INTEGER NOT NULL,
        skeleton   BLOB NOT NULL
    );

    DROP INDEX records_by_patient;
    DROP INDEX accesses_by_patient;
    DROP INDEX grants_by_patient;
    DROP INDEX grants_by_doctor;
    DROP INDEX requests_by_patient;
    DROP INDEX asks_by_person;
    DROP INDEX recoveries_by_person;
    DROP INDEX erasures_by_patient;

    -- Every entry of `transactions`, by the `created_ms` of its signed header (-1 for an entry
    -- that carries no valid transaction) and the first 8 bytes of its id.
    CREATE TABLE seen_ids (
        created_ms INTEGER NOT NULL,
        id_prefix  INTEGER NOT NULL,
        tx         INTEGER NOT NULL,
        PRIMARY KEY (created_ms, id_prefix, tx)
    ) WITHOUT ROWID;

    -- The epoch index's runs: one per closed epoch, its entries sorted by key.
    CREATE TABLE index_runs (
        epoch INTEGER NOT NULL,
        key   INTEGER NOT NULL,
        tx    INTEGER NOT NULL,
        PRIMARY KEY (epoch, key, tx)
    ) WITHOUT ROWID;

    -- Each closed epoch: its last row (`tx`), the times of its first and last blocks, and the
    -- Bloom filter of the ids in its run (`store::index::IdFilter`).
    CREATE TABLE index_epochs (
        epoch    INTEGER PRIMARY KEY,
        tx       INTEGER NOT NULL,
        first_ms INTEGER NOT NULL,
        last_ms  INTEGER NOT NULL,
        ids      BLOB NOT NULL
    );
    ",
    // 7 (docs/STORAGE.md §1, "The caps of pending requests"): the requests not answered, so
    // that the rules count a patient's pending requests by those, not by every request of the
    // last `REQUEST_MS`. A row goes when its request is answered, or once it expired
    // `state::OPEN_KEPT_MS` before a block's time: the table holds the unanswered requests of
    // the last half hour, whatever the chain's length, and its index keyed by patient stays as
    // small. Derived state, compared by verification; filled from `requests` by
    // [`fill_version_7`].
    "
    CREATE TABLE open_requests (
        tx          INTEGER PRIMARY KEY,
        patient     BLOB NOT NULL,
        doctor      BLOB NOT NULL,
        doctor_home INTEGER NOT NULL,
        expires_ms  INTEGER NOT NULL
    );
    CREATE INDEX open_requests_by_patient ON open_requests(patient);
    CREATE INDEX open_requests_by_expiry ON open_requests(expires_ms);
    ",
    // 8 (docs/STORAGE.md §1): a closed epoch's run is written over the blocks after its close,
    // so a store may hold a run in parts. No table changes: the version keeps a medchain of
    // version 7, which would write such a run again whole (a primary key already there: every
    // block refused), from opening the store.
    "
    -- nothing to change
    ",
    // 9 (docs/STORAGE.md §2): the read grants not revoked, by expiry, so that a home's key
    // service finds those still live at start (`entitled::read_grants_of_home`) in the few
    // pages that hold them, not in a scan of every grant (624 MB at 17,900,000 transactions,
    // 17 s of a start with a cold cache). Keyed by time, not by a random key: rows go in near
    // the grants still live, and those expired are never read again.
    "
    CREATE INDEX IF NOT EXISTS grants_read_by_expiry ON grants(expires_ms)
        WHERE scope_read_ms IS NOT NULL AND revoked_tx IS NULL;
    ",
];

/// The derived tables, each with the order verification compares them in: what the rules
/// write and `medchain verify` derives again.
pub const DERIVED: &[(&str, &str)] = &[
    ("persons", "person"),
    ("keys", "key"),
    ("links", "person, validator"),
    ("asks", "tx"),
    ("requests", "tx"),
    ("open_requests", "tx"),
    ("grants", "tx"),
    ("recoveries", "tx"),
    ("records", "tx"),
    ("accesses", "tx"),
    ("erasures", "tx"),
    ("seen_ids", "created_ms, id_prefix, tx"),
    ("index_runs", "epoch, key, tx"),
    ("index_epochs", "epoch"),
];

/// The first schema version of the chain format this program reads: records, requests and
/// grants carry sealed bodies, erasures are on chain and read grants take a key of the
/// patient's home since version 5 (transactions are envelopes signed by people's keys, and
/// blocks carry the primary's time, since version 4).
pub const FORMAT_SINCE: i64 = 5;

/// The schema version this program writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Refuses a store whose schema `found` this program cannot read: one from a newer program, or
/// one of an older chain format. Version 0 is a new, empty file.
pub fn check_version(found: i64, path: &std::path::Path) -> Result<()> {
    if found > VERSION {
        return Err(Error::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: VERSION,
        });
    }
    if found != 0 && found < FORMAT_SINCE {
        return Err(Error::FormatTooOld {
            path: path.to_path_buf(),
            found,
            needed: FORMAT_SINCE,
        });
    }
    Ok(())
}

/// Brings the schema up to [`VERSION`], refusing a store [`check_version`] refuses, and gives
/// the connection the `rarray` table function the queries pass candidate rows with.
pub fn migrate(conn: &mut Connection, path: &std::path::Path) -> Result<()> {
    rusqlite::vtab::array::load_module(conn)?;
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    check_version(found, path)?;
    if found == VERSION {
        return Ok(());
    }
    let tx = conn.transaction()?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)?;
        if index + 1 == 6 {
            fill_version_6(&tx)?;
        }
        if index + 1 == 7 {
            fill_version_7(&tx)?;
        }
    }
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Migration 6's rows: `seen_ids` from every entry of `transactions` (the `created_ms` of its
/// header, read from its bytes) and the runs of every complete epoch.
fn fill_version_6(conn: &Connection) -> Result<()> {
    {
        let mut select = conn.prepare(
            "SELECT t.tx, t.id, t.kind, bd.body FROM transactions t
             JOIN bodies bd ON bd.b = t.body_row ORDER BY t.tx",
        )?;
        let mut insert =
            conn.prepare("INSERT INTO seen_ids (created_ms, id_prefix, tx) VALUES (?1, ?2, ?3)")?;
        let mut rows = select.query([])?;
        while let Some(row) = rows.next()? {
            let (tx, id, kind, body): (i64, Vec<u8>, String, Vec<u8>) =
                (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
            let created_ms = if kind == super::INVALID_KIND {
                None
            } else {
                Some(crate::SignedTx::from_bytes(&body)?.header.created_ms)
            };
            insert.execute(rusqlite::params![
                super::state::created_column(created_ms),
                super::state::id_prefix(&id),
                tx
            ])?;
        }
    }
    super::index::Index::default().close_epochs(conn)
}

/// Migration 7's rows: the requests not answered that the blocks so far would have kept
/// (`super::state::open_kept_above`), as the replay of the same blocks leaves them.
fn fill_version_7(conn: &Connection) -> Result<()> {
    let head_ms: Option<i64> = conn
        .query_row(
            "SELECT timestamp_ms FROM blocks ORDER BY height DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    conn.execute(
        "INSERT INTO open_requests (tx, patient, doctor, doctor_home, expires_ms)
         SELECT tx, patient, doctor, doctor_home, expires_ms FROM requests
         WHERE answered_tx IS NULL AND expires_ms > ?1 ORDER BY tx",
        [head_ms.map_or(i64::MIN, |ms| super::state::open_kept_above(ms as u64))],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Queries;

    /// A store of version 8 gets the index of live read grants at its next open (the start of
    /// a key service reads through it by name: with none, every start would fail).
    #[test]
    fn a_store_of_version_8_gets_the_index_of_read_grants() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.db");
        let net = crate::testkit::TestNet::new(4);
        drop(net.write_chain(&path, 3, 2).unwrap());
        let index_count = |conn: &Connection| -> i64 {
            conn.query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'grants_read_by_expiry'",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        let conn = Connection::open(&path).unwrap();
        assert_eq!(index_count(&conn), 1);
        conn.execute_batch("DROP INDEX grants_read_by_expiry; PRAGMA user_version = 8;")
            .unwrap();
        drop(conn);
        let store = crate::Store::open(&path, &net.genesis, Default::default()).unwrap();
        assert_eq!(index_count(store.connection()), 1);
        let version: i64 = store
            .connection()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, VERSION);
        assert!(
            crate::entitled::read_grants_of_home(&store, 0, 0)
                .unwrap()
                .is_empty()
        );
    }

    /// A store written by version 1 keeps its rows through migration 2 (the tables it rebuilds
    /// are copied, not emptied).
    #[test]
    fn migration_2_keeps_the_rows_of_a_version_1_store() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO transactions (tx, height, idx, id, kind, patient_id, timestamp_ms, body)
                 VALUES (1, 1, 0, x'0101010101010101aa', 'add_record', 'p1', 5, x'00');
             INSERT INTO records (patient_id, tx, consent_hash) VALUES ('p1', 1, x'0202');
             INSERT INTO consents (consent_hash, granted_tx, used_tx) VALUES (x'0303', 7, 9);",
        )
        .unwrap();
        // Version 1 is of an older chain format, which `migrate` refuses; the migration itself
        // is checked here.
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        let tx: i64 = conn
            .query_row(
                "SELECT tx FROM transactions WHERE substr(id, 1, 8) = x'0101010101010101'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tx, 1);
        let record: (i64, String, Vec<u8>) = conn
            .query_row(
                "SELECT tx, patient_id, consent_hash FROM records",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(record, (1, "p1".to_string(), vec![2, 2]));
        let consent: (Vec<u8>, i64, i64) = conn
            .query_row(
                "SELECT consent_hash, granted_tx, used_tx FROM consents",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(consent, (vec![3, 3], 7, 9));
    }
}
