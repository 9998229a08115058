//! Red team of issue 11 (docs/STORAGE.md §3): the bodies of a proposal staged in chain.db
//! before its block commits. The block's bytes are certified and were executed from memory;
//! a staged copy that no longer matches them (a byte flipped on disk, or a bug that staged the
//! wrong rows) must not become what the store keeps for the block, nor what a restarted
//! replica restores as the proposal behind its votes.
use std::path::Path;

use ledger::testkit::TestNet;
use ledger::verify::verify_store;
use ledger::{Block, Queries, Store};
use rusqlite::Connection;

/// The proposal `block` was made from (its digest is the block's hash).
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

/// Flips a byte of the first staged body, as a disk or another writer would.
fn flip_first_staged_body(path: &Path) {
    let conn = Connection::open(path).expect("open");
    let row: i64 = conn
        .query_row("SELECT first_body FROM proposals", [], |r| r.get(0))
        .expect("a staged proposal");
    let mut body: Vec<u8> = conn
        .query_row("SELECT body FROM bodies WHERE b = ?1", [row], |r| r.get(0))
        .expect("its first body");
    body[40] ^= 1;
    conn.execute(
        "UPDATE bodies SET body = ?1 WHERE b = ?2",
        rusqlite::params![body, row],
    )
    .expect("edit");
}

/// A chain of three blocks and the next block, staged.
fn staged(path: &Path, net: &TestNet) -> (Store, Block) {
    let mut store = net.write_chain(path, 3, 5).expect("chain");
    let txs = (15..20).map(|i| net.sample_tx(i)).collect();
    let block = net.next_block(store.head(), txs);
    store
        .stage_proposal(&block.hash(), &proposal_of(&block))
        .expect("staged");
    (store, block)
}

#[test]
fn a_staged_body_edited_before_its_block_commits_is_not_what_the_store_keeps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chain.db");
    let net = TestNet::new(4);
    let (mut store, block) = staged(&path, &net);
    flip_first_staged_body(&path);
    // The node executes the certified block it holds in memory.
    net.append(&mut store, &block).expect("appended");
    assert!(
        store.block(block.header.height).expect("read").as_ref() == Some(&block),
        "the store keeps other bytes than the block it executed"
    );
    drop(store);
    verify_store(&path, &net.genesis, &mut |_| {}).expect("the stored chain verifies");
    let conn = Connection::open(&path).expect("open");
    let count = |table: &str| -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .expect("count")
    };
    assert_eq!(
        (count("bodies"), count("proposals")),
        (count("transactions"), 0),
        "the staged copy is left behind"
    );
}

#[test]
fn a_staged_proposal_that_no_longer_hashes_to_its_digest_is_not_restored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chain.db");
    let net = TestNet::new(4);
    let (store, block) = staged(&path, &net);
    flip_first_staged_body(&path);
    // What a restarted replica joins back to its pre-prepare and prepared records.
    if let Some(proposal) = store.proposal(&block.hash()).expect("read") {
        assert!(
            ledger::proposal_digest(&proposal) == block.hash(),
            "restored as the proposal of its digest, with other bytes"
        );
    }
}
