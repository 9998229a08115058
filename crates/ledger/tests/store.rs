//! The store: what goes in comes out, the rules' verdicts, and refusals.
use ledger::rules::reason::{DUPLICATE, GRANT_USED};
use ledger::testkit::{self, TestNet};
use ledger::tx::{RecordBody, Scope, Signer};
use ledger::{Error, OpenOptions, Queries, Reader, Store, TxStatus};

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
    assert_eq!(
        reader.transaction_count().expect("count"),
        (net.genesis.block().entries.len() + 12 * 8) as u64
    );
    for b in &blocks {
        assert_eq!(reader.block(b.height()).expect("query").as_ref(), Some(b));
        assert_eq!(
            reader.block_by_hash(&b.hash()).expect("query").as_ref(),
            Some(b)
        );
        assert_eq!(
            reader.block_hash(b.height()).expect("query"),
            Some(b.hash())
        );
    }
    assert!(reader.block_hash(13).expect("query").is_none());
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
    let id = net.id(t);
    assert_eq!(
        reader.tx_status(&id).expect("status"),
        TxStatus::Committed {
            height: 5,
            index: 3,
            rejected: None
        }
    );
    assert_eq!(reader.transaction_height(&id).expect("h"), Some(5));
    assert!(reader.contains_transaction(&id).expect("c"));
    assert_eq!(
        reader.tx_status(&[0; 32]).expect("status"),
        TxStatus::Unknown
    );
    let committed = reader.transaction(&id).expect("tx").expect("on chain");
    assert_eq!(committed.tx, t.clone());
    assert_eq!(committed.id, id);
    assert_eq!(committed.block_time_ms, testkit::block_time(5));

    // The sample patient 0's records: samples 14, 44 and 74 (rounds 0, 10 and 20).
    let patient = net.sample_patient(0);
    let doctor = net.sample_doctor(0);
    let records = reader.records_of(&patient.id).expect("records");
    assert_eq!(records.len(), 3);
    let first = &net.sample_tx(14);
    assert_eq!(records[0].tx_id, net.id(first));
    assert_eq!(records[0].height, 2);
    assert_eq!(records[0].block_time_ms, testkit::block_time(2));
    assert_eq!(records[0].doctor, doctor.id);
    assert_eq!(records[0].department, "Cardiology");
    assert_eq!(records[0].grant, net.id(&net.sample_tx(13)));
    assert_eq!(records[0].signer, doctor.custodial().signer);
    assert!(matches!(records[0].signer, Signer::Custodial { .. }));
    assert_eq!(records[0].origin, Some(doctor.home));
    // The body is sealed: it opens with its data key, under its own header.
    assert_eq!(records[0].header, first.header);
    assert_eq!(records[0].body, first.body);
    assert_eq!(records[0].hospital, doctor.home);
    assert_eq!(records[0].erased, None);
    let content = net
        .open(&records[0].header, &records[0].body)
        .expect("opens");
    assert_eq!(
        RecordBody::from_bytes(&content).expect("body"),
        testkit::sample_record(14)
    );
    assert!(
        RecordBody::from_bytes(&records[0].body).is_err(),
        "no plaintext on chain"
    );
    assert!(reader.records_of(&[9; 16]).expect("q").is_empty());

    let accesses = reader.accesses_of(&patient.id).expect("accesses");
    assert_eq!(accesses.len(), 3);
    assert!(
        accesses
            .iter()
            .all(|a| a.reader == patient.id && a.serving == patient.home && a.grant.is_none())
    );

    let person = reader.person(&doctor.id).expect("q").expect("enrolled");
    assert_eq!(person.department.as_deref(), Some("Cardiology"));
    assert_eq!(person.enrolled, net.id(&net.sample_tx(10)));
    let keys = reader.keys_of(&doctor.id).expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].key, testkit::public(&doctor.custodial));
    let grants = reader.grants_of_patient(&patient.id).expect("grants");
    assert_eq!(grants.len(), 3);
    assert!(
        grants
            .iter()
            .all(|g| g.used.is_some() && g.scope == Scope::Write)
    );
    assert_eq!(grants[2].used, Some(net.id(first)), "newest first");
    assert_eq!(
        reader.grants_of_doctor(&doctor.id, 0).expect("q").len(),
        (27 / 3 + 1)
    );
}

#[test]
fn the_rules_reject_replays_and_reused_grants_deterministically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chain.db");
    let net = net();
    let mut store = Store::open(&path, &net.genesis, OpenOptions::default()).expect("open");
    let patient = net.patient(1, 0);
    let doctor = net.doctor(2, 1, "Cardiology");
    let grant = net.grant(
        &patient,
        &doctor.id,
        Scope::Write,
        None,
        &patient.custodial(),
    );
    let grant_id = net.id(&grant);
    let record = || net.add_record(&doctor, &patient.id, grant_id, &doctor.custodial());
    let (r1, r2, r3) = (record(), record(), record());

    let b1 = net.next_block(
        store.head(),
        vec![
            net.enroll(&patient),
            net.enroll(&doctor),
            grant.clone(),
            r1.clone(),
            r1.clone(),
            r2.clone(),
        ],
    );
    let applied = net.append(&mut store, &b1).expect("append");
    assert_eq!(applied.rejected, vec![(4, DUPLICATE), (5, GRANT_USED)]);

    let b2 = net.next_block(store.head(), vec![r1.clone(), grant, r3]);
    let applied = net.append(&mut store, &b2).expect("append");
    assert_eq!(
        applied.rejected,
        vec![(0, DUPLICATE), (1, DUPLICATE), (2, GRANT_USED)]
    );
    let reader = store.reader().expect("reader");
    assert_eq!(reader.records_of(&patient.id).expect("q").len(), 1);
    assert_eq!(
        reader.tx_status(&net.id(&r2)).expect("status"),
        TxStatus::Committed {
            height: 1,
            index: 5,
            rejected: Some(GRANT_USED.into())
        }
    );
    // The first occurrence of a replayed transaction is the one reported.
    assert_eq!(
        reader.tx_status(&net.id(&r1)).expect("status"),
        TxStatus::Committed {
            height: 1,
            index: 3,
            rejected: None
        }
    );
    drop(store);
    // Replaying the rules during verification agrees with what was stored.
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
    // A block time not after the previous block's (here the genesis time itself).
    let entries = blocks[0].entries.clone();
    let stale = net.block_at(store.head(), net.genesis.created_at_ms(), entries);
    match net.append(&mut store, &stale) {
        Err(Error::NotNext { height: 1, reason }) => assert!(reason.contains("block time")),
        other => panic!("expected a refusal of the block time, got {other:?}"),
    }
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
