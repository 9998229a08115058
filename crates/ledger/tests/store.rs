//! The store: what goes in comes out, the state machine's verdicts, and refusals.
use ledger::store::{CONSENT_GRANTED, CONSENT_RECORDED, CONSENT_USED, DUPLICATE};
use ledger::testkit::TestNet;
use ledger::{Error, OpenOptions, Reader, Store, Transaction, TxStatus, sha256};

fn net() -> TestNet {
    TestNet::new(4)
}

#[test]
fn blocks_and_queries_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chain.db");
    let net = net();
    let blocks = net.chain(12, 8);
    {
        let mut store = Store::open(&path, &net.genesis, OpenOptions::default()).expect("open");
        assert_eq!(store.head(), (0, net.genesis.hash()));
        for b in &blocks {
            let applied = net.append(&mut store, b).expect("append");
            assert!(applied.rejected.is_empty(), "{applied:?}");
        }
        assert_eq!(store.head(), (12, blocks[11].hash()));
    }
    let store = Store::open(&path, &net.genesis, OpenOptions::default()).expect("reopen verifies");
    assert_eq!(store.head(), (12, blocks[11].hash()));
    let reader = Reader::open(&path).expect("reader");
    assert_eq!(reader.head().expect("head"), (12, blocks[11].hash()));
    for b in &blocks {
        assert_eq!(reader.block(b.height()).expect("query").as_ref(), Some(b));
        assert_eq!(
            reader.block_by_hash(&b.hash()).expect("query").as_ref(),
            Some(b)
        );
    }
    assert_eq!(
        reader.block(0).expect("query").as_ref(),
        Some(net.genesis.block())
    );
    assert!(reader.block(13).expect("query").is_none());
    assert_eq!(
        store.blocks_from(11, 5).expect("query"),
        blocks[10..].to_vec()
    );

    let page = reader.blocks_page(None, 5).expect("page");
    assert_eq!(
        page.iter().map(|s| s.height).collect::<Vec<_>>(),
        [12, 11, 10, 9, 8]
    );
    assert_eq!(page[0].hash, blocks[11].hash());
    assert_eq!(page[0].tx_count, 8);
    let older = reader.blocks_page(Some(3), 10).expect("page");
    assert_eq!(
        older.iter().map(|s| s.height).collect::<Vec<_>>(),
        [2, 1, 0]
    );

    assert_eq!(reader.transaction_count().expect("count"), 96);
    let t = &net.sample_tx(4 * 8 + 3);
    assert_eq!(
        reader.tx_status(&t.id()).expect("status"),
        TxStatus::Committed {
            height: 5,
            index: 3,
            rejected: None
        }
    );
    assert_eq!(reader.transaction_height(&t.id()).expect("h"), Some(5));
    assert!(reader.contains_transaction(&t.id()).expect("c"));
    assert_eq!(
        reader.tx_status(&[0; 32]).expect("status"),
        TxStatus::Unknown
    );
    assert_eq!(
        reader.transaction(&t.id()).expect("tx").map(|c| c.tx),
        Some(t.clone())
    );

    // Records of p001: sample transactions 0, 20, 40, 60, 80 are its AddRecords (i % 10 == 0,
    // i % 4 == 0).
    let records = reader.records_by_patient("p001").expect("records");
    assert_eq!(records.len(), 5);
    let first = &net.sample_tx(0);
    assert_eq!(records[0].tx_id, first.id());
    assert_eq!(records[0].height, 1);
    assert_eq!(records[0].timestamp_ms, first.timestamp_ms);
    match &first.body {
        Transaction::AddRecord {
            diagnosis,
            consent_hash,
            doctor_id,
            ..
        } => {
            assert_eq!(&records[0].diagnosis, diagnosis);
            assert_eq!(&records[0].consent_hash, consent_hash);
            assert_eq!(&records[0].doctor_id, doctor_id);
        }
        other => panic!("sample 0 is a record, got {other:?}"),
    }
    assert!(reader.records_by_patient("nobody").expect("q").is_empty());

    let accesses = reader.accesses_by_patient("p004").expect("accesses");
    assert!(!accesses.is_empty());
    assert!(accesses.iter().all(|a| a.patient_id == "p004"));

    let granted = sha256(b"consent 1");
    let consent = reader.consent(&granted).expect("consent").expect("known");
    assert_eq!(consent.granted.as_ref().map(|c| c.height), Some(1));
    assert_eq!(consent.used.as_ref().map(|c| c.index), Some(2));
    assert!(reader.consent(&[9; 32]).expect("q").is_none());
}

#[test]
fn the_state_machine_rejects_replays_and_reused_consents_deterministically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chain.db");
    let net = net();
    let mut store = Store::open(&path, &net.genesis, OpenOptions::default()).expect("open");

    let consent = sha256(b"otp consent");
    let record = |n: u8| {
        net.sign_tx(
            Transaction::AddRecord {
                patient_id: "p001".into(),
                doctor_id: "d001".into(),
                department: "Cardiology".into(),
                diagnosis: format!("d{n}"),
                prescription: "rx".into(),
                notes: String::new(),
                consent_hash: consent,
            },
            1,
            100 + n as u64,
            [n; 16],
        )
    };
    let grant = |n: u8| {
        net.sign_tx(
            Transaction::ConsentGranted {
                patient_id: "p001".into(),
                doctor_id: "d001".into(),
                department: "Cardiology".into(),
                purpose: "add_record".into(),
                consent_hash: consent,
                expires_at_ms: 1_000,
            },
            2,
            90,
            [n; 16],
        )
    };
    let used = |n: u8| {
        net.sign_tx(
            Transaction::ConsentUsed {
                patient_id: "p001".into(),
                doctor_id: "d001".into(),
                consent_hash: consent,
            },
            0,
            95,
            [n; 16],
        )
    };

    let b1 = net.next_block(
        store.head(),
        vec![grant(1), used(1), record(1), record(1), record(2)],
    );
    let applied = net.append(&mut store, &b1).expect("append");
    assert_eq!(
        applied.rejected,
        vec![(3, DUPLICATE), (4, CONSENT_RECORDED)]
    );

    let b2 = net.next_block(store.head(), vec![record(1), grant(2), used(2), record(3)]);
    let applied = net.append(&mut store, &b2).expect("append");
    assert_eq!(
        applied.rejected,
        vec![
            (0, DUPLICATE),
            (1, CONSENT_GRANTED),
            (2, CONSENT_USED),
            (3, CONSENT_RECORDED)
        ]
    );
    let reader = store.reader().expect("reader");
    assert_eq!(reader.records_by_patient("p001").expect("q").len(), 1);
    assert_eq!(
        reader.tx_status(&record(2).id()).expect("status"),
        TxStatus::Committed {
            height: 1,
            index: 4,
            rejected: Some(CONSENT_RECORDED.into())
        }
    );
    // The first occurrence of a replayed transaction is the one reported.
    assert_eq!(
        reader.tx_status(&record(1).id()).expect("status"),
        TxStatus::Committed {
            height: 1,
            index: 2,
            rejected: None
        }
    );
    drop(store);
    // Replaying the state machine during verification agrees with what was stored.
    Store::open(&path, &net.genesis, OpenOptions::default()).expect("verifies");
}

#[test]
fn append_refuses_blocks_that_do_not_extend_the_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = net();
    let mut store = Store::open(
        &dir.path().join("chain.db"),
        &net.genesis,
        OpenOptions::default(),
    )
    .expect("open");
    let blocks = net.chain(3, 2);
    assert!(matches!(
        net.append(&mut store, &blocks[1]),
        Err(Error::NotNext { height: 2, .. })
    ));
    let mut wrong_prev = blocks[0].clone();
    wrong_prev.header.prev_hash = [1; 32];
    assert!(matches!(
        net.append(&mut store, &wrong_prev),
        Err(Error::NotNext { height: 1, .. })
    ));
    let mut wrong_root = blocks[0].clone();
    wrong_root.entries.pop();
    assert!(matches!(
        net.append(&mut store, &wrong_root),
        Err(Error::NotNext { height: 1, .. })
    ));
    net.append(&mut store, &blocks[0]).expect("the right block");
    assert!(matches!(
        net.append(&mut store, &blocks[0]),
        Err(Error::NotNext { height: 1, .. })
    ));
    assert_eq!(store.head().0, 1);
}

#[test]
fn a_store_of_another_chain_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chain.db");
    net().write_chain(&path, 2, 2).expect("write");
    let other = TestNet::with_seed(4, 1);
    match Store::open(&path, &other.genesis, OpenOptions::default()) {
        Err(Error::Corrupt { height: 0, .. }) => {}
        Err(e) => panic!("expected height 0 named, got {e}"),
        Ok(_) => panic!("a store of another chain was opened"),
    }
}

#[test]
fn reader_refuses_a_missing_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nothing.db");
    assert!(Reader::open(&missing).is_err());
    assert!(!missing.exists(), "a reader never creates a store");
}

#[test]
fn replays_are_found_in_large_blocks_across_lookup_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = net();
    let mut store = Store::open(
        &dir.path().join("chain.db"),
        &net.genesis,
        OpenOptions::default(),
    )
    .expect("open");
    let first = net.next_block(store.head(), (0..300).map(|i| net.sample_tx(i)).collect());
    net.append(&mut store, &first).expect("append");
    // 300 new transactions, with replays of earlier ones at positions in the 1st, 2nd and 3rd
    // lookup chunk, and a replay of one of this block's own.
    let mut txs: Vec<_> = (1000..1300).map(|i| net.sample_tx(i)).collect();
    txs[5] = net.sample_tx(7);
    txs[200] = net.sample_tx(299);
    txs[290] = net.sample_tx(0);
    txs[299] = net.sample_tx(1010);
    let second = net.next_block(store.head(), txs);
    let applied = net.append(&mut store, &second).expect("append");
    assert_eq!(
        applied.rejected,
        vec![
            (5, DUPLICATE),
            (200, DUPLICATE),
            (290, DUPLICATE),
            (299, DUPLICATE)
        ]
    );
}
