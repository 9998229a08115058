//! Issue 8, finding 1: a committed entry that carries no valid transaction (garbage bytes, a
//! wrong signature, another id or timestamp than its request) is rejected deterministically by
//! the state machine and stored as it came; it never stops a replica, and `verify` accepts the
//! block while still catching any edit of the stored bytes. And a store of an older chain
//! format is refused with advice, not reported as tampered.
use std::path::Path;
use std::sync::Arc;

use ledger::testkit::TestNet;
use ledger::tx::{Meta, Scope, Signer};
use ledger::verify::verify_store;
use ledger::{
    Block, Error, Invalid, OpenOptions, Queries, Reader, Store, TxStatus, proposal_digest,
};
use rusqlite::{Connection, params};

/// The block at height 2 of a chain whose block 1 holds samples 0..4: a valid transaction, then
/// one entry of each kind of invalid, then a valid one under the id of the garbage entry.
struct Scenario {
    net: TestNet,
    block: Block,
}

/// Entry indices of the scenario's block.
const VALID: usize = 0;
const GARBAGE: usize = 1;
const BAD_SIGNATURE: usize = 2;
const WRONG_TIMESTAMP: usize = 3;
const FOREIGN_ID: usize = 4;
const UNKNOWN_VALIDATOR: usize = 5;
const UNDER_GARBAGE_ID: usize = 6;
const BODY_MISMATCH: usize = 7;
const BAD_KEY_PROOF: usize = 8;

fn scenario(store: &mut Store) -> Scenario {
    let net = TestNet::new(4);
    let first = net.next_block(store.head(), (0..4).map(|i| net.sample_tx(i)).collect());
    net.append(store, &first).expect("block 1");
    let request = |t: &ledger::SignedTx| net.request(t);

    let valid = request(&net.sample_tx(10));
    let mut garbage = request(&net.sample_tx(11));
    garbage.payload = Arc::from(&b"not a transaction at all"[..]);
    // Decodes, but the signature is not the signer's: the substituted payload of issue 8.
    let mut bad_signature = request(&net.sample_tx(12));
    let mut bytes = bad_signature.payload.to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x20;
    bad_signature.payload = Arc::from(bytes);
    let mut wrong_timestamp = request(&net.sample_tx(5));
    wrong_timestamp.timestamp_ms += 1;
    let mut foreign_id = request(&net.sample_tx(6));
    foreign_id.id = net.id(&net.sample_tx(7));
    // An own read of patient 0 claimed by a validator outside the genesis.
    let patient = net.sample_patient(0);
    let mut outsider = net.access(0, &patient.id, &patient.id, None);
    outsider.header.signer = Signer::Validator { index: 7 };
    if let Meta::Access(a) = &mut outsider.header.meta {
        a.serving = 7;
    }
    let unknown_validator = request(&outsider);
    // A valid transaction whose id the garbage entry already claimed: pbft executed that request
    // id, so the rules call this one a duplicate, on every replica alike.
    let mut under_garbage_id = request(&net.sample_tx(11));
    under_garbage_id.id = garbage.id;
    // A well-signed grant carrying another body than the one it signed.
    let doctor = net.sample_doctor(0);
    let mut swapped = net.grant(
        &patient,
        &doctor.id,
        Scope::Write,
        None,
        &patient.custodial(),
    );
    swapped.body = b"another purpose".to_vec();
    let body_mismatch = request(&swapped);
    // A well-signed enrollment of a key whose proof of possession is someone else's.
    let squatter = net.patient(50, 0);
    let mut enroll = net.enroll(&squatter);
    if let Meta::Enroll(e) = &mut enroll.header.meta {
        e.keys[0].pop = net
            .new_key(
                &squatter.id,
                e.keys[0].kind,
                e.keys[0].origin,
                &squatter.device,
            )
            .pop;
    }
    let enroll = net.sign_header(enroll.header, Vec::new(), &net.keys[0]);
    let bad_key_proof = request(&enroll);

    let entries = vec![
        valid,
        garbage,
        bad_signature,
        wrong_timestamp,
        foreign_id,
        unknown_validator,
        under_garbage_id,
        body_mismatch,
        bad_key_proof,
    ];
    // The block as a committed proposal becomes it, as a node applies it.
    let proposal = pbft::Proposal {
        seq: 2,
        view: 0,
        proposer: 0,
        prev: store.head().1,
        time_ms: first.header.timestamp_ms + 1,
        requests: entries,
    };
    let digest = proposal_digest(&proposal);
    let mut block = Block::from_committed(pbft::Committed {
        proposal: Arc::new(proposal),
        digest,
        commit_view: 0,
        signatures: vec![],
    })
    .expect("a committed proposal always becomes a block");
    // The kit's chains are one second a block; the proposal does not carry its time yet.
    block.header.timestamp_ms = ledger::testkit::block_time(2);
    block.certificate = net.certify(&block.header, 0);
    Scenario { net, block }
}

fn open(path: &Path, net: &TestNet) -> Store {
    Store::open(path, &net.genesis, OpenOptions::default()).expect("open")
}

#[test]
fn finding_1_committed_garbage_payload_is_rejected_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chain.db");
    let net = TestNet::new(4);
    let mut store = open(&path, &net);
    let Scenario { net, block } = scenario(&mut store);

    let applied = net.append(&mut store, &block).expect("the block is stored");
    let expected = [
        (GARBAGE, Invalid::Undecodable.reason()),
        (BAD_SIGNATURE, Invalid::BadSignature.reason()),
        (WRONG_TIMESTAMP, Invalid::TimestampMismatch.reason()),
        (FOREIGN_ID, Invalid::IdMismatch.reason()),
        (UNKNOWN_VALIDATOR, Invalid::UnknownValidator.reason()),
        (UNDER_GARBAGE_ID, ledger::store::DUPLICATE),
        (BODY_MISMATCH, Invalid::BodyMismatch.reason()),
        (BAD_KEY_PROOF, Invalid::BadKeyProof.reason()),
    ];
    assert_eq!(applied.rejected, expected, "entry {VALID} alone is applied");
    assert_eq!(store.head(), (2, block.hash()));

    // Stored exactly as it came, and the chain goes on after it.
    assert_eq!(store.block(2).expect("query"), Some(block.clone()));
    let next = net.next_block(store.head(), vec![net.sample_tx(4)]);
    net.append(&mut store, &next).expect("block 3");

    // The invalid entries changed no state: the outsider's access was not applied, nor the
    // enrollment with a borrowed key proof.
    let status = store.tx_status(&block.entries[GARBAGE].id).expect("status");
    assert_eq!(
        status,
        TxStatus::Committed {
            height: 2,
            index: GARBAGE as u64,
            rejected: Some(Invalid::Undecodable.reason().to_string()),
        }
    );
    assert!(
        store
            .transaction(&block.entries[FOREIGN_ID].id)
            .expect("query")
            .is_none(),
        "an invalid entry is no transaction"
    );
    let patient = net.sample_patient(0);
    let accesses = store.accesses_of(&patient.id).expect("accesses");
    assert!(
        accesses.is_empty(),
        "the unknown validator's access was applied: {accesses:?}"
    );
    assert!(store.person(&net.patient(50, 0).id).expect("q").is_none());
    assert!(store.person(&net.sample_doctor(0).id).expect("q").is_some());
    drop(store);

    // Reopening verifies the whole chain: the verdicts are derived again from the bytes.
    let summary = verify_store(&path, &net.genesis, &mut |_| {}).expect("verifies");
    assert_eq!(summary.head_height, 3);
    assert_eq!(summary.transactions, 4 + 9 + 1);
    open(&path, &net);
}

/// Flips bit 0 of byte `offset` of the body of entry `index` at height 2.
fn flip_body(path: &Path, index: usize, offset: usize) {
    let conn = Connection::open(path).expect("open with plain SQLite");
    let (row, mut body): (i64, Vec<u8>) = conn
        .query_row(
            "SELECT bd.b, bd.body FROM transactions t JOIN bodies bd ON bd.b = t.body_row
             WHERE t.height = 2 AND t.idx = ?1",
            [index as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("row");
    body[offset] ^= 1;
    conn.execute(
        "UPDATE bodies SET body = ?1 WHERE b = ?2",
        params![body, row],
    )
    .expect("update");
}

fn assert_names_block_2(path: &Path, net: &TestNet, what: &str) {
    match verify_store(path, &net.genesis, &mut |_| {}) {
        Err(Error::Corrupt { height: 2, .. }) => {}
        Err(e) => panic!("{what}: expected block 2 named, got: {e}"),
        Ok(_) => panic!("{what}: tampering went unnoticed"),
    }
}

#[test]
fn finding_1_tampering_with_an_invalid_entry_is_still_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chain.db");
    let net = TestNet::new(4);
    let mut store = open(&path, &net);
    let Scenario { net, block } = scenario(&mut store);
    net.append(&mut store, &block).expect("stored");
    drop(store);
    let conn = Connection::open(&path).expect("open");
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE;")
        .expect("checkpoint");
    drop(conn);
    let pristine = std::fs::read(&path).expect("read");
    let restore = || std::fs::write(&path, &pristine).expect("restore");

    // Every byte of every invalid entry's body is covered by the block hash.
    for index in [
        GARBAGE,
        BAD_SIGNATURE,
        FOREIGN_ID,
        BODY_MISMATCH,
        BAD_KEY_PROOF,
    ] {
        let len = block.entries[index].payload.len();
        for offset in 0..len {
            flip_body(&path, index, offset);
            assert_names_block_2(&path, &net, &format!("entry {index} byte {offset}"));
            restore();
        }
    }
    // Verdicts cannot be edited: not turned valid, not given another reason, not hidden.
    let edits = [
        "UPDATE transactions SET rejected = NULL WHERE height = 2 AND idx = 2",
        "UPDATE transactions SET rejected = 'invalid: payload does not decode as a signed \
         transaction' WHERE height = 2 AND idx = 2",
        "UPDATE transactions SET rejected = 'duplicate of an earlier transaction' \
         WHERE height = 2 AND idx = 1",
        "UPDATE transactions SET rejected = 'invalid: signature does not verify' \
         WHERE height = 2 AND idx = 0",
        "UPDATE transactions SET kind = 'enroll' WHERE height = 2 AND idx = 2",
        "UPDATE transactions SET rejected = 'invalid: signature does not verify' \
         WHERE height = 2 AND idx = 8",
        "UPDATE transactions SET rejected = NULL WHERE height = 2 AND idx = 7",
        "UPDATE transactions SET timestamp_ms = timestamp_ms - 1 WHERE height = 2 AND idx = 3",
        "UPDATE transactions SET id = zeroblob(32) WHERE height = 2 AND idx = 1",
    ];
    for sql in edits {
        Connection::open(&path)
            .expect("open")
            .execute_batch(sql)
            .expect(sql);
        assert_names_block_2(&path, &net, sql);
        restore();
    }
    verify_store(&path, &net.genesis, &mut |_| {}).expect("the pristine store verifies");
}

#[test]
fn finding_1_transferred_block_with_invalid_entries_is_accepted_with_verdicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = TestNet::new(4);
    let mut store = open(&dir.path().join("chain.db"), &net);
    let Scenario { net, block } = scenario(&mut store);
    // A certified block from a peer proves itself; its invalid entries are the state
    // machine's to reject, exactly as where it was committed.
    let checked = ledger::verify::check_block(net.genesis.keys(), &net.genesis.hash(), &block)
        .expect("a certified block is accepted");
    assert_eq!(checked, net.check(&block));
    assert!(checked[VALID].is_ok());
    assert_eq!(checked[GARBAGE], Err(Invalid::Undecodable));
    assert_eq!(checked[BAD_SIGNATURE], Err(Invalid::BadSignature));
    assert_eq!(checked[BAD_KEY_PROOF], Err(Invalid::BadKeyProof));
    store.append_block(&block, &checked).expect("stored");

    // The certificate still has to hold.
    let mut forged = block.clone();
    forged.certificate = net.certify_by(&block.header, 0, &[0, 1]);
    assert!(ledger::verify::check_block(net.genesis.keys(), &net.genesis.hash(), &forged).is_err());
}

#[test]
fn finding_1_old_store_format_is_refused_with_advice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chain.db");
    let net = TestNet::new(4);
    net.write_chain(&path, 3, 2).expect("write");
    // A store written by the previous format (schema 4, whose bodies were in plaintext): its
    // rows are intact, its format is older.
    Connection::open(&path)
        .expect("open")
        .pragma_update(None, "user_version", 4)
        .expect("set version");

    let advice = |message: String, what: &str| {
        assert!(
            message.contains("chain.db")
                && message.contains("format 4 is older than this program's 5")
                && message.contains("medchain init --force"),
            "{what}: {message}"
        );
        assert!(
            !message.contains(": block "),
            "{what} reads as tampering: {message}"
        );
    };
    match Store::open(&path, &net.genesis, OpenOptions::default()) {
        Ok(_) => panic!("a store of an older format was opened"),
        Err(e) => advice(e.to_string(), "open"),
    }
    match verify_store(&path, &net.genesis, &mut |_| {}) {
        Ok(_) => panic!("a store of an older format verified"),
        Err(e) => advice(e.to_string(), "verify"),
    }
    match Reader::open(&path) {
        Ok(_) => panic!("a reader opened a store of an older format"),
        Err(e) => advice(e.to_string(), "reader"),
    }
    // Refused, not changed: the file still says format 4.
    let version: i64 = Connection::open(&path)
        .expect("open")
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, 4);
}
