//! Red team s72 against 024c6ffe (compare 4d136027): the grants the writer holds
//! (`Index::grants`, kept by `apply` at `Effect::Grant`, forgotten at `UseGrant`/`RevokeGrant`,
//! dropped by `Index::forget_held`), which the writer's view and prechecks answer from.
//!
//! The promise under attack: a held grant always reads as its row (`GRANT_SELECT` in the
//! writer's transaction), so a validator that holds grants across blocks decides every block as
//! one freshly opened on a copy of its file. Each test gives the same hostile blocks to a store
//! that has held grants since they were written and to a fresh store opened on a copy of its
//! file just before the block (no held rows), and compares verdicts and derived rows; between
//! blocks it compares what a precheck through the writer's connection reads (held grants) with
//! what a query reads (the snapshot's rows only).
//!
//! All pass on 024c6ffe (no finding). Each fails on a mutant of it (built apart): no
//! `forget` at `UseGrant` or at `RevokeGrant` (the hostile blocks, the second store, the
//! generations), no `grants.clear()` in `forget_held` (the hostile blocks' failed block,
//! another process), `Held::forget` leaving the older generation (the generations).

use std::path::{Path, PathBuf};

use ledger::rules::reason as why;
use ledger::testkit::{self, TestNet};
use ledger::tx::Scope;
use ledger::{Block, Decision, Queries, Reader, SignedTx, StateView, Store, TxId};
use rusqlite::types::Value;

const UNDECODABLE: &str = "invalid: payload does not decode as a signed transaction";

/// A copy of `store`'s file at `to` (its WAL checkpointed into it first, and copied too if a
/// reader kept the checkpoint from finishing), opened as a store: a new file, so a new `Index`
/// holding nothing.
fn fresh_copy(store: &Store, net: &TestNet, to: &Path) -> Store {
    let _: (i64, i64, i64) = store
        .connection()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    std::fs::copy(store.path(), to).unwrap();
    let mut wal = store.path().as_os_str().to_owned();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    if wal.exists() {
        let mut to_wal = to.as_os_str().to_owned();
        to_wal.push("-wal");
        std::fs::copy(&wal, PathBuf::from(to_wal)).unwrap();
    }
    Store::open(to, &net.genesis, ledger::OpenOptions::default()).unwrap()
}

/// Every row of `table`, in `tx` order.
fn dump(store: &impl Queries, table: &str) -> Vec<Vec<Value>> {
    let mut stmt = store
        .connection()
        .prepare(&format!("SELECT * FROM {table} ORDER BY tx"))
        .unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// The derived tables a grant, its use and its revocation touch, and what names grants.
const TABLES: [&str; 6] = [
    "transactions",
    "grants",
    "records",
    "accesses",
    "requests",
    "erasures",
];

/// What a precheck through `store`'s connection reads of each grant (held grants first) is
/// what a query reads (the rows): a held grant never differs from its row.
fn assert_held_grants_are_rows(store: &Store, ids: &[TxId], when: &str) {
    for id in ids {
        let held = StateView::grant(&store.state(), id).unwrap();
        let rows = store.grant(id).unwrap();
        assert_eq!(held, rows, "{when}: grant {}", hex(id));
    }
}

fn hex(id: &TxId) -> String {
    id[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends `block` to `held` and to a fresh store opened on a copy of `held`'s file just
/// before: the verdicts and the derived rows must be the same. Returns the verdicts.
fn decide_both(
    held: &mut Store,
    net: &TestNet,
    dir: &Path,
    block: &Block,
) -> Vec<(usize, &'static str)> {
    let copy = dir.join(format!("fresh-{}.db", block.header.height));
    let mut fresh = fresh_copy(held, net, &copy);
    let ours = net.append(held, block).unwrap().rejected;
    let theirs = net.append(&mut fresh, block).unwrap().rejected;
    assert_eq!(
        ours, theirs,
        "held and fresh stores decide block {} alike",
        block.header.height
    );
    for table in TABLES {
        assert!(
            dump(held, table) == dump(&fresh, table),
            "{table} differs after block {}",
            block.header.height
        );
    }
    ours
}

/// A dishonest proposer's blocks against held grants: a grant used twice and revoked after its
/// use in its own block; a grant revoked then used; a grant repeated; an invalid entry under a
/// grant's id first; a read grant used by an Access and named by a record; a request answered
/// by a grant, answered again, denied after; a grant erased then used; a failed block that
/// wrote a grant and used and revoked held ones; a held grant used after it expired. Each block
/// is decided alike by the store holding grants and a fresh one, and between blocks every
/// grant a precheck reads (held) is its row.
#[test]
fn held_grants_decide_hostile_blocks_as_a_fresh_store() {
    let dir = tempfile::tempdir().unwrap();
    let net = TestNet::new(4);
    let path = dir.path().join("chain.db");
    let mut store = net.write_chain(&path, 10, 5).unwrap();
    // Patients and doctors with one home each (0, 1, 2): in-person read grants are allowed.
    let (pa, da) = (net.sample_patient(30), net.sample_doctor(30));
    let (pb, db) = (net.sample_patient(31), net.sample_doctor(31));
    let (pc, dc) = (net.sample_patient(32), net.sample_doctor(32));
    assert_eq!((pa.home, pb.home, pc.home), (da.home, db.home, dc.home));
    let write = |p: &ledger::testkit::TestPerson, d: &ledger::testkit::TestPerson| {
        net.grant(p, &d.id, Scope::Write, None, &p.custodial())
    };
    let record =
        |d: &ledger::testkit::TestPerson, p: &ledger::testkit::TestPerson, g: &SignedTx| {
            net.add_record(d, &p.id, net.id(g), &d.custodial())
        };
    let revoke = |p: &ledger::testkit::TestPerson, target: &SignedTx| {
        net.revoke(p, net.id(target), &p.custodial())
    };
    let (g1, g2, g3, g4) = (
        write(&pa, &da),
        write(&pb, &db),
        write(&pc, &dc),
        write(&pa, &da),
    );
    let (g5, g6, g8) = (write(&pa, &da), write(&pa, &da), write(&pc, &dc));
    let gr = net.grant(
        &pb,
        &db.id,
        Scope::Read {
            duration_ms: 3_600_000,
        },
        None,
        &pb.custodial(),
    );
    let q = net.request_grant(&dc, &pc.id, Scope::Write, &dc.custodial());
    let gq = net.grant(&pc, &dc.id, Scope::Write, Some(net.id(&q)), &pc.custodial());
    let gq2 = net.grant(&pc, &dc.id, Scope::Write, Some(net.id(&q)), &pc.custodial());
    let read = |g: &SignedTx| net.access(db.home, &pb.id, &db.id, Some(net.id(g)));
    let mut grants: Vec<TxId> = [&g1, &g2, &g3, &g4, &g5, &g6, &g8, &gr, &gq, &gq2]
        .iter()
        .map(|g| net.id(g))
        .collect();
    assert_held_grants_are_rows(&store, &grants, "before");

    let entries = vec![
        net.request(&g1),                                                     // 0
        net.request(&record(&da, &pa, &g1)), // 1 uses g1 (held, just written)
        net.request(&record(&da, &pa, &g1)), // 2 used
        net.request(&revoke(&pa, &g1)),      // 3 used
        net.request(&g2),                    // 4
        net.request(&revoke(&pb, &g2)),      // 5
        net.request(&record(&db, &pb, &g2)), // 6 revoked
        net.request(&g3),                    // 7
        net.request(&g3),                    // 8 duplicate
        net.garbage(&g4),                    // 9 invalid
        net.request(&g4),                    // 10 duplicate of the invalid entry
        net.request(&record(&da, &pa, &g4)), // 11 no such grant
        net.request(&gr),                    // 12 read grant
        net.request(&read(&gr)),             // 13 access under it
        net.request(&record(&db, &pb, &gr)), // 14 a read grant is no write grant
        net.request(&q),                     // 15 request
        net.request(&gq),                    // 16 answers it
        net.request(&gq2),                   // 17 answered already
        net.request(&revoke(&pc, &q)),       // 18 a request answered: nothing to deny
        net.request(&g5),                    // 19
        net.request(&g6),                    // 20
        net.request(&net.access(da.home, &pa.id, &da.id, Some(net.id(&g5)))), // 21 write grant
        net.request(&g8),                    // 22
    ];
    let block = net.block_of_entries(store.head(), entries);
    let verdicts = decide_both(&mut store, &net, dir.path(), &block);
    assert_eq!(
        verdicts,
        vec![
            (2, why::GRANT_USED),
            (3, why::GRANT_USED),
            (6, why::GRANT_WAS_REVOKED),
            (8, why::DUPLICATE),
            (9, UNDECODABLE),
            (10, why::DUPLICATE),
            (11, why::NO_SUCH_GRANT),
            (14, why::NOT_A_WRITE_GRANT),
            (17, why::REQUEST_NOT_PENDING),
            (18, why::NO_SUCH_TARGET),
            (21, why::NOT_A_READ_GRANT),
        ]
    );
    assert_held_grants_are_rows(&store, &grants, "after block 1");

    // Held grants of the block before, used, revoked, erased.
    let e6 = net.request_erasure(&pa, net.id(&g6), &pa.custodial());
    let entries = vec![
        net.request(&record(&dc, &pc, &g3)), // 0 held, unused
        net.request(&record(&dc, &pc, &gq)), // 1 held, answered a request
        net.request(&read(&gr)),             // 2 read grants are not used up
        net.request(&revoke(&pb, &gr)),      // 3
        net.request(&read(&gr)),             // 4 revoked
        net.request(&record(&da, &pa, &g1)), // 5 used
        net.request(&e6),                    // 6 erasure of a held grant
        net.request(&net.answer_erasure(pa.home, net.id(&e6), Decision::Erase)), // 7
        net.request(&record(&da, &pa, &g6)), // 8 under the erased grant
        net.request(&revoke(&pa, &g5)),      // 9
        net.request(&record(&da, &pa, &g5)), // 10 revoked
        net.request(&revoke(&pb, &g3)),      // 11 another patient's grant
        net.request(&record(&db, &pb, &g8)), // 12 another patient's and doctor's grant
    ];
    let block = net.block_of_entries(store.head(), entries);
    let verdicts = decide_both(&mut store, &net, dir.path(), &block);
    assert_eq!(
        verdicts,
        vec![
            (4, why::GRANT_WAS_REVOKED),
            (5, why::GRANT_USED),
            (10, why::GRANT_WAS_REVOKED),
            (11, why::NO_SUCH_TARGET),
            (12, why::NOT_A_WRITE_GRANT),
        ]
    );
    assert_held_grants_are_rows(&store, &grants, "after block 2");

    // A block that writes a grant, uses and revokes held ones, then fails: nothing of it is
    // held, and the grants it used or revoked read as their rows (unused, not revoked).
    let (g7, g9, ge) = (write(&pb, &db), write(&pa, &da), write(&pb, &db));
    grants.extend([net.id(&g7), net.id(&g9), net.id(&ge)]);
    let r8 = record(&dc, &pc, &g8);
    let rv8 = revoke(&pc, &g8);
    testkit::fail_blocks_at_entry(&store, 3).unwrap();
    let failing = net.next_block(
        store.head(),
        vec![g7.clone(), r8.clone(), g9.clone(), ge.clone()],
    );
    assert!(net.append(&mut store, &failing).is_err());
    // Another failed block: the held g8 revoked, then a failure.
    let failing = net.next_block(
        store.head(),
        vec![rv8.clone(), g7.clone(), g9.clone(), ge.clone()],
    );
    assert!(net.append(&mut store, &failing).is_err());
    testkit::stop_failing(&store).unwrap();
    assert_held_grants_are_rows(&store, &grants, "after the failed blocks");
    let g8_row = store.grant(&net.id(&g8)).unwrap().expect("g8 applied");
    assert_eq!((g8_row.used, g8_row.revoked), (None, None));
    assert_eq!(store.grant(&net.id(&g7)).unwrap(), None);
    let entries = vec![
        net.request(&record(&db, &pb, &g7)), // 0 its grant was rolled back
        net.request(&revoke(&pb, &g7)),      // 1 likewise
        net.request(&r8),                    // 2 g8 unused after the rollback
        net.request(&g9),                    // 3
        net.request(&record(&da, &pa, &g9)), // 4
        net.request(&ge),                    // 5 held into the next block
        net.request(&rv8),                   // 6 used
    ];
    let block = net.block_of_entries(store.head(), entries);
    let verdicts = decide_both(&mut store, &net, dir.path(), &block);
    assert_eq!(
        verdicts,
        vec![
            (0, why::NO_SUCH_GRANT),
            (1, why::NO_SUCH_TARGET),
            (6, why::GRANT_USED),
        ]
    );
    assert_held_grants_are_rows(&store, &grants, "after block 3");

    // A held grant past its expiry: a record under it and its revocation are refused alike.
    let late = store.head_time_ms() + ledger::rules::WRITE_GRANT_MS + 1;
    let block = net.block_at(
        store.head(),
        late,
        vec![
            net.request(&record(&db, &pb, &ge)),
            net.request(&revoke(&pb, &ge)),
        ],
    );
    let verdicts = decide_both(&mut store, &net, dir.path(), &block);
    assert_eq!(
        verdicts,
        vec![(0, why::GRANT_HAS_EXPIRED), (1, why::GRANT_EXPIRED)]
    );
    assert_held_grants_are_rows(&store, &grants, "after block 4");
    drop(store);
    let verified = ledger::verify::verify_store(&path, &net.genesis, &mut |_| {});
    assert!(verified.is_ok(), "{verified:?}");
}

/// The child of [`another_process_uses_and_revokes_held_grants`]: appends a block with the
/// record of sample grant 100 and the revocation of sample grant 109 to the store its parent
/// names.
#[test]
#[ignore = "run by its parent test in a process of its own"]
fn red_team_s72_child_uses_held_grants() {
    let Some(path) = std::env::var_os("RED_TEAM_S72_STORE") else {
        return;
    };
    let net = TestNet::new(4);
    let mut store = Store::open(
        Path::new(&path),
        &net.genesis,
        ledger::OpenOptions::default(),
    )
    .unwrap();
    let p = net.sample_patient(32);
    let revoke = net.revoke(&p, net.id(&net.sample_tx(109)), &p.custodial());
    let block = net.next_block(store.head(), vec![net.sample_tx(101), revoke]);
    let applied = net.append(&mut store, &block).unwrap();
    assert!(applied.rejected.is_empty(), "{applied:?}");
}

/// This process's writer holds two grants; another process's writer uses one and revokes the
/// other. Prechecks here (through the writer's connection and a reader) read them as used and
/// revoked; this writer, behind the file, appends nothing; opened again, it decides the next
/// block as a fresh store does.
#[test]
fn another_process_uses_and_revokes_held_grants() {
    let dir = tempfile::tempdir().unwrap();
    let net = TestNet::new(4);
    let path = dir.path().join("chain.db");
    let mut store = net.write_chain(&path, 10, 5).unwrap();
    let (g100, g109) = (net.sample_tx(100), net.sample_tx(109));
    let ids = [net.id(&g100), net.id(&g109)];
    let block = net.next_block(store.head(), vec![g100.clone(), g109.clone()]);
    assert!(net.append(&mut store, &block).unwrap().rejected.is_empty());
    let reader = Reader::open(&path).unwrap();
    assert_held_grants_are_rows(&store, &ids, "held");
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "red_team_s72_child_uses_held_grants",
            "--exact",
            "--ignored",
            "--test-threads=1",
        ])
        .env("RED_TEAM_S72_STORE", &path)
        .output()
        .unwrap();
    assert!(child.status.success(), "{child:?}");
    let rows = |id: &TxId| reader.grant(id).unwrap().expect("applied");
    assert!(rows(&ids[0]).used.is_some(), "the child used it");
    assert!(rows(&ids[1]).revoked.is_some(), "the child revoked it");
    for (name, state) in [("writer's", store.state()), ("reader's", reader.state())] {
        for id in &ids {
            assert_eq!(
                StateView::grant(&state, id).unwrap(),
                Some(rows(id)),
                "{name} precheck of {}",
                hex(id)
            );
        }
    }
    // Behind the file, this writer appends nothing (here a record under the grant the child
    // used, which its held grant would let through).
    let (p, d) = (net.sample_patient(29), net.sample_doctor(29));
    let again = net.add_record(&d, &p.id, ids[0], &d.custodial());
    let stale = net.next_block(store.head(), vec![again.clone()]);
    assert!(net.append(&mut store, &stale).is_err());
    assert_held_grants_are_rows(&store, &ids, "after the stale block");
    drop(store);
    let mut store = Store::open(&path, &net.genesis, ledger::OpenOptions::default()).unwrap();
    let p32 = net.sample_patient(32);
    let block = net.next_block(
        store.head(),
        vec![again, net.revoke(&p32, ids[1], &p32.custodial())],
    );
    let verdicts = decide_both(&mut store, &net, dir.path(), &block);
    assert_eq!(
        verdicts,
        vec![(0, why::GRANT_USED), (1, why::GRANT_REVOKED)]
    );
    assert_held_grants_are_rows(&store, &ids, "reopened");
}

/// Two stores of one file in this process share one `Index` (`Index::for_path`): the first
/// holds grants it wrote; the second, opened after, uses one and revokes another. The first
/// (behind the file) reads them as their rows and appends nothing; the second decides its next
/// blocks as a fresh store does, including after the first's failed append.
#[test]
fn a_second_store_in_this_process_uses_the_first_ones_held_grants() {
    let dir = tempfile::tempdir().unwrap();
    let net = TestNet::new(4);
    let path = dir.path().join("chain.db");
    let mut first = net.write_chain(&path, 10, 5).unwrap();
    let (g100, g103, g106, g109) = (
        net.sample_tx(100),
        net.sample_tx(103),
        net.sample_tx(106),
        net.sample_tx(109),
    );
    let ids: Vec<TxId> = [&g100, &g103, &g106, &g109]
        .iter()
        .map(|g| net.id(g))
        .collect();
    let block = net.next_block(first.head(), vec![g100.clone(), g109.clone()]);
    assert!(net.append(&mut first, &block).unwrap().rejected.is_empty());
    let mut second = Store::open(&path, &net.genesis, ledger::OpenOptions::default()).unwrap();
    assert_eq!(second.head(), first.head());
    let p32 = net.sample_patient(32);
    let block = net.next_block(
        second.head(),
        vec![
            net.sample_tx(101),
            net.revoke(&p32, ids[3], &p32.custodial()),
            g106.clone(),
        ],
    );
    assert!(net.append(&mut second, &block).unwrap().rejected.is_empty());
    assert_held_grants_are_rows(&first, &ids, "first, behind");
    assert_held_grants_are_rows(&second, &ids, "second");
    // The first, behind the file, writes a grant and a record under the used grant: refused
    // whole (its block's height is taken).
    let (p, d) = (net.sample_patient(29), net.sample_doctor(29));
    let again = net.add_record(&d, &p.id, ids[0], &d.custodial());
    let stale = net.next_block(first.head(), vec![g103.clone(), again.clone()]);
    assert!(net.append(&mut first, &stale).is_err());
    assert_held_grants_are_rows(&second, &ids, "second, after the first failed");
    let block = net.next_block(
        second.head(),
        vec![
            again,
            net.sample_tx(104), // under g103, which the failed block wrote
            net.revoke(&p32, ids[3], &p32.custodial()),
            net.sample_tx(107), // under g106, held by the shared index
        ],
    );
    let verdicts = decide_both(&mut second, &net, dir.path(), &block);
    assert_eq!(
        verdicts,
        vec![
            (0, why::GRANT_USED),
            (1, why::NO_SUCH_GRANT),
            (2, why::GRANT_REVOKED)
        ]
    );
    assert_held_grants_are_rows(&second, &ids, "second, at the end");
    assert_held_grants_are_rows(&first, &ids, "first, at the end");
    drop((first, second));
    let verified = ledger::verify::verify_store(&path, &net.genesis, &mut |_| {});
    assert!(verified.is_ok(), "{verified:?}");
}

/// Across the two generations of held grants (`HELD_GRANTS`, 8,192 each): a grant pushed into
/// the older generation by a full newer one is used, another revoked (each forgotten there),
/// and a third dropped with the older generation is read from its row: decided as a fresh
/// store does, and every grant a precheck reads is its row.
#[test]
fn grants_held_in_the_older_generation_or_dropped_decide_as_rows() {
    const HELD_GRANTS: usize = 8_192;
    let dir = tempfile::tempdir().unwrap();
    let net = TestNet::new(4);
    let path = dir.path().join("chain.db");
    drop(net.write_chain(&path, 10, 5).unwrap());
    // Opened again: it holds no grant (the chain's own would shift the generations).
    let mut store = Store::open(&path, &net.genesis, ledger::OpenOptions::default()).unwrap();
    let (pa, da) = (net.sample_patient(30), net.sample_doctor(30));
    let write = || net.grant(&pa, &da.id, Scope::Write, None, &pa.custodial());
    let (gx, gy, gz) = (write(), write(), write());
    let ids = [net.id(&gx), net.id(&gy), net.id(&gz)];
    // Block A: gx, gy, gz and fillers, HELD_GRANTS grants in all (the newer generation full).
    let mut entries = vec![net.request(&gx), net.request(&gy), net.request(&gz)];
    entries.extend((3..HELD_GRANTS).map(|_| net.request(&write())));
    let block = net.block_of_entries(store.head(), entries);
    assert!(net.append(&mut store, &block).unwrap().rejected.is_empty());
    // Block B: as many again: block A's grants are the older generation.
    let entries = (0..HELD_GRANTS).map(|_| net.request(&write())).collect();
    let block = net.block_of_entries(store.head(), entries);
    assert!(net.append(&mut store, &block).unwrap().rejected.is_empty());
    assert_held_grants_are_rows(&store, &ids, "block A's grants in the older generation");
    // Block C: gx used and gy revoked from the older generation (forgotten there: a second
    // record under gx and a record under gy are refused); one more grant drops the older
    // generation (gz then read from its row).
    let record = |g: &SignedTx| net.add_record(&da, &pa.id, net.id(g), &da.custodial());
    let entries = vec![
        net.request(&record(&gx)),
        net.request(&net.revoke(&pa, ids[1], &pa.custodial())),
        net.request(&record(&gx)),
        net.request(&record(&gy)),
        net.request(&write()),
        net.request(&record(&gz)),
        net.request(&record(&gz)),
    ];
    let block = net.block_of_entries(store.head(), entries);
    let verdicts = decide_both(&mut store, &net, dir.path(), &block);
    assert_eq!(
        verdicts,
        vec![
            (2, why::GRANT_USED),
            (3, why::GRANT_WAS_REVOKED),
            (6, why::GRANT_USED),
        ]
    );
    assert_held_grants_are_rows(&store, &ids, "after block C");
}
