//! Flipping one byte of a stored block or transaction through plain SQL must make verification
//! fail, naming exactly that block; so must editing the derived state behind the ledger's back.
use std::path::Path;

use ledger::testkit::TestNet;
use ledger::verify::{verify_replicas, verify_store};
use ledger::{CertError, Error, Fault, OpenOptions, Store};
use rusqlite::{Connection, params};

const BLOCKS: u64 = 10;
const TXS: u64 = 6;

fn chain(dir: &Path) -> (TestNet, std::path::PathBuf) {
    let net = TestNet::new(4);
    let path = dir.join("chain.db");
    net.write_chain(&path, BLOCKS, TXS).expect("write");
    (net, path)
}

/// Flips bit 0 of byte `offset` of a blob column of the row `key = value`.
fn flip(path: &Path, table: &str, column: &str, key: &str, value: i64, offset: usize) {
    let conn = Connection::open(path).expect("open with plain SQLite");
    let mut blob: Vec<u8> = conn
        .query_row(
            &format!("SELECT {column} FROM {table} WHERE {key} = ?1"),
            [value],
            |r| r.get(0),
        )
        .expect("row");
    blob[offset] ^= 1;
    conn.execute(
        &format!("UPDATE {table} SET {column} = ?1 WHERE {key} = ?2"),
        params![blob, value],
    )
    .expect("update");
}

/// The row of `bodies` that holds the payload of transaction row `tx`.
fn body_row(path: &Path, tx: i64) -> i64 {
    let conn = Connection::open(path).expect("open");
    conn.query_row(
        "SELECT body_row FROM transactions WHERE tx = ?1",
        [tx],
        |r| r.get(0),
    )
    .expect("row")
}

fn blob_len(path: &Path, table: &str, column: &str, key: &str, value: i64) -> usize {
    let conn = Connection::open(path).expect("open");
    conn.query_row(
        &format!("SELECT length({column}) FROM {table} WHERE {key} = ?1"),
        [value],
        |r| r.get::<_, i64>(0),
    )
    .expect("row") as usize
}

/// Verification (offline, and on opening with the full check) fails naming `height`.
fn assert_names(path: &Path, net: &TestNet, height: u64, what: &str) {
    match verify_store(path, &net.genesis, &mut |_| {}) {
        Err(Error::Corrupt {
            height: h,
            ref path,
            ..
        }) if h == height => {
            assert!(path.ends_with("chain.db"));
        }
        Err(e) => panic!("{what}: expected block {height} named, got: {e}"),
        Ok(_) => panic!("{what}: tampering went unnoticed"),
    }
    match Store::open(path, &net.genesis, OpenOptions::full()) {
        Err(e @ Error::Corrupt { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("chain.db") && message.contains(&format!("block {height}:")),
                "{what}: {message}"
            );
        }
        Err(e) => panic!("{what}: expected the store refused, got {e}"),
        Ok(_) => panic!("{what}: a tampered store was opened"),
    }
}

fn restore(path: &Path, pristine: &[u8]) {
    for side in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", path.display()));
    }
    std::fs::write(path, pristine).expect("restore");
}

/// Checkpoints the WAL into the main file and returns the file's bytes.
fn snapshot(path: &Path) -> Vec<u8> {
    let conn = Connection::open(path).expect("open");
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE;")
        .expect("checkpoint");
    drop(conn);
    std::fs::read(path).expect("read")
}

#[test]
fn every_byte_of_a_header_is_covered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (net, path) = chain(dir.path());
    let pristine = snapshot(&path);
    verify_store(&path, &net.genesis, &mut |_| {}).expect("untampered verifies");
    for height in [0u64, 1, 6, BLOCKS] {
        let len = blob_len(&path, "blocks", "header", "height", height as i64);
        for offset in 0..len {
            flip(&path, "blocks", "header", "height", height as i64, offset);
            assert_names(
                &path,
                &net,
                height,
                &format!("header {height} byte {offset}"),
            );
            restore(&path, &pristine);
        }
    }
}

#[test]
fn every_byte_of_a_transaction_is_covered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (net, path) = chain(dir.path());
    let pristine = snapshot(&path);
    // Row 20 is transaction 2 of block 4; the last row is in the head block.
    for (row, height) in [(20, 4u64), ((BLOCKS * TXS) as i64, BLOCKS)] {
        let body = body_row(&path, row);
        let len = blob_len(&path, "bodies", "body", "b", body);
        for offset in 0..len {
            flip(&path, "bodies", "body", "b", body, offset);
            assert_names(&path, &net, height, &format!("tx row {row} byte {offset}"));
            restore(&path, &pristine);
        }
    }
}

#[test]
fn every_byte_of_a_certificate_is_covered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (net, path) = chain(dir.path());
    let pristine = snapshot(&path);
    for height in [3u64, BLOCKS] {
        let len = blob_len(&path, "blocks", "certificate", "height", height as i64);
        for offset in 0..len {
            flip(
                &path,
                "blocks",
                "certificate",
                "height",
                height as i64,
                offset,
            );
            assert_names(
                &path,
                &net,
                height,
                &format!("certificate {height} byte {offset}"),
            );
            restore(&path, &pristine);
        }
    }
}

#[test]
fn edits_to_columns_and_derived_state_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (net, path) = chain(dir.path());
    let pristine = snapshot(&path);
    // Rows: samples 0 to 12 enroll (rows 1 to 13), then from row 14 a grant, its record and an
    // own read in turn; six rows per block.
    let edits: &[(&str, u64)] = &[
        ("UPDATE blocks SET hash = zeroblob(32) WHERE height = 5", 5),
        ("UPDATE blocks SET tx_count = 7 WHERE height = 2", 2),
        ("UPDATE blocks SET proposer = 2 WHERE height = 8", 8),
        (
            "UPDATE blocks SET timestamp_ms = timestamp_ms + 1 WHERE height = 6",
            6,
        ),
        ("DELETE FROM transactions WHERE height = 7 AND idx = 5", 7),
        ("DELETE FROM transactions WHERE height = 3 AND idx = 0", 3),
        ("UPDATE transactions SET id = zeroblob(32) WHERE tx = 13", 3),
        ("UPDATE transactions SET kind = 'access' WHERE tx = 14", 3),
        ("UPDATE transactions SET rejected = 'no' WHERE tx = 33", 6),
        // The entry's timestamp is under the block hash (its Merkle leaf), like its id and body.
        (
            "UPDATE transactions SET timestamp_ms = timestamp_ms + 1 WHERE tx = 15",
            3,
        ),
        // A valid transaction cannot be passed off as an invalid entry, nor the reverse.
        (
            "UPDATE transactions SET kind = 'invalid',
             rejected = 'invalid: signature does not verify' WHERE tx = 40",
            7,
        ),
        (
            "UPDATE transactions SET rejected = 'invalid: payload does not decode as a signed \
             transaction' WHERE tx = 45",
            8,
        ),
        // Row 15 (block 3) is the first record: move it to another patient.
        ("UPDATE records SET patient = x'00' WHERE tx = 15", 3),
        ("DELETE FROM records WHERE tx = 24", 4),
        ("DELETE FROM accesses WHERE tx = 22", 4),
        ("UPDATE accesses SET serving = 3 WHERE tx = 22", 4),
        ("UPDATE grants SET used_tx = NULL WHERE tx = 14", 3),
        (
            "UPDATE grants SET expires_ms = expires_ms + 1 WHERE tx = 17",
            3,
        ),
        ("UPDATE persons SET home = 3 WHERE tx = 2", 1),
        ("UPDATE keys SET revoked_tx = 5 WHERE tx = 7", 2),
        (
            "INSERT INTO links (person, validator, tx) VALUES (x'01', 2, 30)",
            5,
        ),
        ("DELETE FROM blocks WHERE height = 4", 4),
    ];
    for (sql, height) in edits {
        Connection::open(&path)
            .expect("open")
            .execute_batch(sql)
            .expect(sql);
        assert_names(&path, &net, *height, sql);
        restore(&path, &pristine);
    }
}

#[test]
fn a_certificate_from_too_few_or_foreign_signers_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = TestNet::new(4);
    let path = dir.path().join("chain.db");
    let mut store = Store::open(&path, &net.genesis, OpenOptions::default()).expect("open");
    for b in net.chain(3, 2) {
        net.append(&mut store, &b).expect("append");
    }
    // Block 4 certified by only two validators: the store takes it (certificates are the
    // node's to check), verification does not.
    let mut block = net.next_block(store.head(), vec![net.sample_tx(100)]);
    block.certificate = net.certify_by(&block.header, 0, &[1, 3]);
    net.append(&mut store, &block).expect("append");
    drop(store);
    assert_names(&path, &net, 4, "two signers");
}

#[test]
fn replicas_must_agree_block_by_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = TestNet::new(4);
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    let c = dir.path().join("c.db");
    net.write_chain(&a, 6, 3).expect("a");
    net.write_chain(&b, 4, 3).expect("b lags behind");
    verify_replicas(&[a.clone(), b.clone()], &net.genesis, &mut |_, _| {}).expect("agree");

    // c forks at height 3: same first two blocks, then other transactions.
    let mut store = Store::open(&c, &net.genesis, OpenOptions::default()).expect("c");
    for block in net.chain(2, 3) {
        net.append(&mut store, &block).expect("append");
    }
    let fork = net.next_block(store.head(), vec![net.sample_tx(1000)]);
    net.append(&mut store, &fork).expect("append");
    drop(store);
    match verify_replicas(&[a.clone(), b, c.clone()], &net.genesis, &mut |_, _| {}) {
        Err(Error::Disagree { height: 3, b, .. }) => assert_eq!(b, c),
        other => panic!("expected disagreement at 3, got {other:?}"),
    }
}

/// docs/STORAGE.md §2: a store opens after a check of its tail, as verification checks blocks
/// (every byte of the tail's blocks and entries is covered), not of the state derived from
/// them: an edited derived row is left to `medchain verify` (and to [`OpenOptions::full`]).
#[test]
fn a_default_open_checks_the_blocks_of_the_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (net, path) = chain(dir.path());
    let pristine = snapshot(&path);
    let opened = |path: &Path| Store::open(path, &net.genesis, OpenOptions::default());
    let last = body_row(&path, (BLOCKS * TXS) as i64);
    for offset in [0, 40, blob_len(&path, "bodies", "body", "b", last) - 1] {
        flip(&path, "bodies", "body", "b", last, offset);
        match opened(&path) {
            Err(Error::Corrupt { height, .. }) => assert_eq!(height, BLOCKS),
            Err(other) => panic!("byte {offset} of the head's last entry: {other}"),
            Ok(_) => panic!("byte {offset} of the head's last entry: opened"),
        }
        restore(&path, &pristine);
    }
    let conn = Connection::open(&path).expect("open");
    conn.execute("UPDATE records SET doctor = patient", [])
        .expect("edit");
    drop(conn);
    opened(&path).expect("the derived state is not checked at open");
    assert!(matches!(
        verify_store(&path, &net.genesis, &mut |_| {}),
        Err(Error::Corrupt { .. })
    ));
}

/// Blocks of the long chain below, and its transactions per block: 11 signatures a block
/// (8 transactions, 3 certificate signers), about 93 blocks to a batch of 1,024, so the chain
/// spans seven batches checked on worker threads while the walk goes on.
const LONG_BLOCKS: u64 = 600;
const LONG_TXS: u64 = 8;
/// The block holding a transaction whose signature does not verify, stored as applied, and its
/// index there.
const BAD_TX_BLOCK: u64 = 250;
const BAD_TX_INDEX: usize = 5;

/// A chain of [`LONG_BLOCKS`] whose block [`BAD_TX_BLOCK`] holds, at [`BAD_TX_INDEX`], an entry
/// that decodes but whose signature is not its signer's, written as if it had verified (a
/// store edited behind the node's back, or a node that skipped the check): its Merkle root and
/// certificate are right, so only the signature check can find it.
fn chain_with_a_bad_signature(dir: &Path) -> (TestNet, std::path::PathBuf) {
    chain_with(dir, &[(BAD_TX_BLOCK, BAD_TX_INDEX, Spoiled::BadSignature)])
}

/// How an entry of [`chain_with`]'s chain is spoiled; either way it is stored with the verdict
/// of its content alone, as if its signatures had been checked and had verified.
#[derive(Clone, Copy, Debug)]
enum Spoiled {
    /// Its envelope's signature flipped by a bit.
    BadSignature,
    /// Replaced by a patient's addition of a weak key (the all-zero key, a point of order 4, with
    /// the all-zero proof, which ZIP-215 verifies: only the key's strength tells it apart).
    WeakKey,
}

/// A chain of [`LONG_BLOCKS`] of [`LONG_TXS`] sample transactions whose entry `index` of block
/// `height` is spoiled as said, for each `(height, index, how)` of `spoiled`.
fn chain_with(dir: &Path, spoiled: &[(u64, usize, Spoiled)]) -> (TestNet, std::path::PathBuf) {
    let net = TestNet::new(4);
    let path = dir.join("chain.db");
    let mut store = Store::open(&path, &net.genesis, OpenOptions::default()).expect("open");
    for height in 1..=LONG_BLOCKS {
        let txs: Vec<_> = (0..LONG_TXS)
            .map(|i| net.sample_tx(height * LONG_TXS + i))
            .collect();
        let good = net.next_block(store.head(), txs);
        let mut verdicts = net.check(&good);
        let mut entries = good.entries.clone();
        for &(_, index, how) in spoiled.iter().filter(|s| s.0 == height) {
            match how {
                Spoiled::BadSignature => {
                    let mut payload = entries[index].payload.to_vec();
                    // The payload ends with the envelope's signature.
                    let last = payload.len() - 1;
                    payload[last] ^= 0x20;
                    entries[index].payload = payload.into();
                }
                Spoiled::WeakKey => {
                    let p = net.sample_patient(1);
                    let weak = ledger::tx::NewKey {
                        key: [0; 32],
                        kind: ledger::tx::KeyKind::Device,
                        origin: p.home,
                        label: "weak".into(),
                        pop: [0; 64],
                    };
                    entries[index] = net.request(&net.add_key(&p, weak, None, &p.custodial()));
                    verdicts[index] =
                        ledger::SignedTx::from_request(&entries[index], &net.genesis.hash());
                    assert!(verdicts[index].is_ok(), "the weak key's entry decodes");
                }
            }
        }
        let block = net.block_of_entries(store.head(), entries);
        store.append_block(&block, &verdicts).expect("append");
    }
    drop(store);
    (net, path)
}

/// Flips a byte of the last signature of block `height`'s certificate (its Merkle root and hash
/// stay right: only the signature check can find it).
fn spoil_certificate(path: &Path, height: u64) {
    let len = blob_len(path, "blocks", "certificate", "height", height as i64);
    flip(
        path,
        "blocks",
        "certificate",
        "height",
        height as i64,
        len - 2,
    );
}

/// Signatures are checked in batches on worker threads while the walk goes on; a batch that
/// holds a later fault may finish first. The fault named is still the first in chain order, as
/// when everything ran on one thread: a bad transaction signature deep in the chain before a
/// bad certificate signature and a column edited further on, a bad certificate signature
/// before the bad transaction, and in one block the certificate before its transactions.
#[test]
fn a_bad_signature_deep_in_the_chain_is_named_at_its_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (net, path) = chain_with_a_bad_signature(dir.path());
    let pristine = snapshot(&path);
    let bad_tx = |fault: &Fault| {
        matches!(fault, Fault::Transaction { index, reason }
            if *index == BAD_TX_INDEX && reason.contains("signature"))
    };
    let bad_certificate =
        |fault: &Fault| matches!(fault, Fault::Certificate(CertError::BadSignature(_)));
    let named = |path: &Path| match verify_store(path, &net.genesis, &mut |_| {}) {
        Err(Error::Corrupt { height, fault, .. }) => (height, fault),
        other => panic!("expected a block named, got {other:?}"),
    };

    let (height, fault) = named(&path);
    assert!(
        height == BAD_TX_BLOCK && bad_tx(&fault),
        "{height}: {fault}"
    );

    // Later faults, in later batches, one of them found by the walk itself.
    spoil_certificate(&path, 520);
    Connection::open(&path)
        .expect("open")
        .execute_batch("UPDATE blocks SET proposer = 2 WHERE height = 590")
        .expect("edit");
    let (height, fault) = named(&path);
    assert!(
        height == BAD_TX_BLOCK && bad_tx(&fault),
        "{height}: {fault}"
    );
    restore(&path, &pristine);

    // An earlier bad certificate signature, two batches before, is named first.
    spoil_certificate(&path, 60);
    let (height, fault) = named(&path);
    assert!(height == 60 && bad_certificate(&fault), "{height}: {fault}");
    restore(&path, &pristine);

    // In one block, the certificate's signatures are checked before its transactions'.
    spoil_certificate(&path, BAD_TX_BLOCK);
    let (height, fault) = named(&path);
    assert!(
        height == BAD_TX_BLOCK && bad_certificate(&fault),
        "{height}: {fault}"
    );
    restore(&path, &pristine);

    // A fault the walk finds before the bad signature's block is named, not the signature.
    Connection::open(&path)
        .expect("open")
        .execute_batch("UPDATE blocks SET tx_count = 9 WHERE height = 240")
        .expect("edit");
    let (height, fault) = named(&path);
    assert!(
        height == 240 && matches!(fault, Fault::Column(_)),
        "{height}: {fault}"
    );
    restore(&path, &pristine);

    // The store's own full check at open names the same block.
    match Store::open(&path, &net.genesis, OpenOptions::full()) {
        Err(Error::Corrupt { height, fault, .. }) => {
            assert!(
                height == BAD_TX_BLOCK && bad_tx(&fault),
                "{height}: {fault}"
            )
        }
        Err(e) => panic!("expected the store refused at block {BAD_TX_BLOCK}, got {e}"),
        Ok(_) => panic!("a store with a bad signature was opened"),
    }
}

/// A transaction's keys must be strong ([`ledger::crypto::is_strong_key`]); verification judges
/// that on its signature workers while the replay goes on, and still names the first bad
/// block in chain order, and in a block the first bad entry: a weak key stored as applied, and
/// it before or after a bad signature, in the same batch of signatures or the same block.
#[test]
fn a_weak_key_is_named_at_its_block_in_chain_order() {
    use Spoiled::{BadSignature, WeakKey};
    let named = |spoiled: &[(u64, usize, Spoiled)]| {
        let dir = tempfile::tempdir().expect("tempdir");
        let (net, path) = chain_with(dir.path(), spoiled);
        let verified = match verify_store(&path, &net.genesis, &mut |_| {}) {
            Err(Error::Corrupt {
                height,
                fault: Fault::Transaction { index, reason },
                ..
            }) => (height, index, reason),
            other => panic!("{spoiled:?}: expected an entry named, got {other:?}"),
        };
        match Store::open(&path, &net.genesis, OpenOptions::full()) {
            Err(Error::Corrupt { height, .. }) => assert_eq!(height, verified.0, "{spoiled:?}"),
            Err(e) => panic!("{spoiled:?}: expected the store refused, got {e}"),
            Ok(_) => panic!("{spoiled:?}: a spoiled store was opened"),
        }
        verified
    };
    let weak = |reason: &str| reason.contains("weak key");

    // Alone: its block and entry.
    let (height, index, reason) = named(&[(250, 3, WeakKey)]);
    assert!(
        (height, index) == (250, 3) && weak(&reason),
        "{height} {index}: {reason}"
    );
    // Before a bad signature six blocks on (the same batch of about 93 blocks).
    let (height, index, reason) = named(&[(250, 5, WeakKey), (256, 1, BadSignature)]);
    assert!(
        (height, index) == (250, 5) && weak(&reason),
        "{height} {index}: {reason}"
    );
    // After one.
    let (height, index, reason) = named(&[(250, 5, BadSignature), (256, 1, WeakKey)]);
    assert!(
        (height, index) == (250, 5) && !weak(&reason),
        "{height} {index}: {reason}"
    );
    // In one block, the first entry of the two.
    let (height, index, reason) = named(&[(250, 2, WeakKey), (250, 6, BadSignature)]);
    assert!(
        (height, index) == (250, 2) && weak(&reason),
        "{height} {index}: {reason}"
    );
    let (height, index, reason) = named(&[(250, 2, BadSignature), (250, 6, WeakKey)]);
    assert!(
        (height, index) == (250, 2) && !weak(&reason),
        "{height} {index}: {reason}"
    );
}

/// A weak key stored as the rules reject it (a bad key proof: what every node's check gives)
/// is no fault: verification agrees with the stored verdict.
#[test]
fn a_weak_key_stored_as_rejected_verifies() {
    let net = TestNet::new(4);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chain.db");
    let mut store = net.write_chain(&path, 3, 4).expect("chain");
    let p = net.sample_patient(1);
    let weak = ledger::tx::NewKey {
        key: [0; 32],
        kind: ledger::tx::KeyKind::Device,
        origin: p.home,
        label: "weak".into(),
        pop: [0; 64],
    };
    let block = net.next_block(
        store.head(),
        vec![net.add_key(&p, weak, None, &p.custodial())],
    );
    let applied = net.append(&mut store, &block).expect("append");
    assert_eq!(
        applied.rejected,
        [(0, ledger::Invalid::BadKeyProof.reason())]
    );
    drop(store);
    let summary = verify_store(&path, &net.genesis, &mut |_| {}).expect("verifies");
    assert_eq!(summary.head_height, 4);
}

/// The replay runs on a thread of its own, some blocks behind the walk that reads and checks
/// them: a fault only the replay finds (a stored verdict that is not the rules') is still named
/// before a later one the walk finds first, and after an earlier bad signature; in the bad
/// signature's own block, the replay's is named, as when everything ran on one thread.
#[test]
fn a_fault_the_replay_finds_is_named_in_chain_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (net, path) = chain_with_a_bad_signature(dir.path());
    let pristine = snapshot(&path);
    let named = |edits: &str| {
        Connection::open(&path)
            .expect("open")
            .execute_batch(edits)
            .expect("edit");
        let outcome = match verify_store(&path, &net.genesis, &mut |_| {}) {
            Err(Error::Corrupt { height, fault, .. }) => (height, fault),
            other => panic!("{edits}: expected a block named, got {other:?}"),
        };
        restore(&path, &pristine);
        outcome
    };
    let unlike_the_rules = |height: u64| {
        format!("UPDATE transactions SET rejected = 'edited' WHERE height = {height} AND idx = 1;")
    };

    let (height, fault) =
        named(&(unlike_the_rules(240) + "UPDATE blocks SET proposer = 2 WHERE height = 245;"));
    assert!(
        height == 240 && matches!(fault, Fault::State(_)),
        "{height}: {fault}"
    );
    let (height, fault) = named(&unlike_the_rules(260));
    assert!(
        height == BAD_TX_BLOCK
            && matches!(
                fault,
                Fault::Transaction {
                    index: BAD_TX_INDEX,
                    ..
                }
            ),
        "{height}: {fault}"
    );
    let (height, fault) = named(&unlike_the_rules(BAD_TX_BLOCK));
    assert!(
        height == BAD_TX_BLOCK && matches!(fault, Fault::State(_)),
        "{height}: {fault}"
    );
}
