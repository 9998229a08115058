//! Red team s24: attacks on `open_requests` (schema 7), the table the caps of pending requests
//! (`MAX_PENDING_PER_DOCTOR`, `MAX_PENDING_PER_HOSPITAL`) count since commit 584bb6e4.
//!
//! The promise under attack: the count equals the old count (the unanswered, unexpired requests
//! of the patient by that doctor / that doctor's hospital at `t`) for every `t` the rules can
//! ask, at every validator, after a restart, after the migration of an old store and after the
//! replay of `medchain verify`; and the table stays bounded.
//!
//! The reference count here is the definition, read from `requests` itself (every request the
//! chain applied, with its answer): it never goes through `open_requests` nor the epoch index.
use super::*;
use crate::store::state::{OPEN_KEPT_MS, open_kept_above};
use crate::{Block, OpenOptions, Store};

/// The definition: the requests of `patient` by `doctor` (or by any doctor whose home, at the
/// time of the request, is `doctor`'s home) not answered and not expired at `t`.
fn reference(
    conn: &Connection,
    doctor: &PersonId,
    patient: &PersonId,
    t: u64,
    hospital: bool,
) -> usize {
    let sql = if hospital {
        "SELECT COUNT(*) FROM requests WHERE patient = ?1 AND expires_ms > ?2
         AND answered_tx IS NULL AND doctor_home = (SELECT home FROM persons WHERE person = ?3)"
    } else {
        "SELECT COUNT(*) FROM requests WHERE patient = ?1 AND expires_ms > ?2
         AND answered_tx IS NULL AND doctor = ?3"
    };
    let n: i64 = conn
        .query_row(
            sql,
            rusqlite::params![patient.as_slice(), t as i64, doctor.as_slice()],
            |r| r.get(0),
        )
        .expect("reference count");
    n as usize
}

fn head_ms(conn: &Connection) -> u64 {
    conn.query_row(
        "SELECT timestamp_ms FROM blocks ORDER BY height DESC LIMIT 1",
        [],
        |r| r.get::<_, i64>(0),
    )
    .expect("head") as u64
}

type OpenRow = (i64, Vec<u8>, Vec<u8>, i64, i64);

fn open_rows(conn: &Connection) -> Vec<OpenRow> {
    let mut stmt = conn
        .prepare(
            "SELECT tx, patient, doctor, doctor_home, expires_ms FROM open_requests ORDER BY tx",
        )
        .expect("q");
    stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .expect("q")
    .collect::<rusqlite::Result<_>>()
    .expect("rows")
}

/// What the table must hold after the head block: every request not answered whose expiry is
/// above `open_kept_above(head)`, and nothing else.
fn assert_table_is_exact(conn: &Connection, what: &str) {
    let kept = open_kept_above(head_ms(conn));
    let mut stmt = conn
        .prepare(
            "SELECT tx, patient, doctor, doctor_home, expires_ms FROM requests
             WHERE answered_tx IS NULL AND expires_ms > ?1 ORDER BY tx",
        )
        .expect("q");
    let want: Vec<OpenRow> = stmt
        .query_map([kept], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .expect("q")
        .collect::<rusqlite::Result<_>>()
        .expect("rows");
    assert_eq!(
        open_rows(conn),
        want,
        "{what}: open_requests is not the open requests kept"
    );
}

/// The times worth asking about on `conn`: around every request's creation and expiry, around
/// the head, around the edge of what the table covers, and long before/after.
fn interesting_times(conn: &Connection) -> Vec<u64> {
    let head = head_ms(conn);
    let kept = open_kept_above(head) as u64;
    let mut ts = vec![
        testkit::GENESIS_TIME_MS,
        head,
        head + 1,
        head.saturating_sub(1),
        kept.saturating_sub(1),
        kept,
        kept + 1,
        head + REQUEST_MS,
        head + REQUEST_MS + OPEN_KEPT_MS + 1,
    ];
    let mut stmt = conn
        .prepare("SELECT created_ms, expires_ms FROM requests")
        .expect("q");
    let rows: Vec<(i64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("q")
        .collect::<rusqlite::Result<_>>()
        .expect("rows");
    for (c, e) in rows {
        let (c, e) = (c as u64, e as u64);
        ts.extend([c - 1, c, c + 1, e - 1, e, e + 1]);
    }
    ts.sort_unstable();
    ts.dedup();
    ts
}

/// Every count the rules can ask on `c`'s committed state, for every pair of `doctors` and
/// `patients`, at every interesting time, against the definition.
fn assert_counts_are_the_old_ones(
    c: &Chain,
    doctors: &[&TestPerson],
    patients: &[&TestPerson],
    what: &str,
) {
    let view = c.view();
    for t in interesting_times(&c.conn) {
        for d in doctors {
            for p in patients {
                let have = (
                    view.pending_requests(&d.id, &p.id, t).expect("count"),
                    view.pending_requests_from_hospital_of(&d.id, &p.id, t)
                        .expect("count"),
                );
                let want = (
                    reference(&c.conn, &d.id, &p.id, t, false),
                    reference(&c.conn, &d.id, &p.id, t, true),
                );
                assert_eq!(
                    have,
                    want,
                    "{what}: counts of doctor {} for patient {} at t = head {:+} ms",
                    d.id[0],
                    p.id[0],
                    t as i64 - head_ms(&c.conn) as i64
                );
            }
        }
    }
}

/// Appends a block built elsewhere (so that two chains get the very same blocks).
fn append_block(c: &mut Chain, block: &Block) -> Vec<Verdict> {
    let checked = c.net.check(block);
    let db = c.conn.transaction().expect("begin");
    let applied = store::write_block(
        &db,
        &c.index,
        &c.net.genesis,
        block,
        &block.hash(),
        &checked,
    )
    .expect("block applies");
    db.commit().expect("commit");
    c.head = (block.header.height, block.hash());
    c.now = c.now.max(block.header.timestamp_ms + 1_000);
    let mut verdicts = vec![Ok(()); block.entries.len()];
    for (i, reason) in applied.rejected {
        verdicts[i] = Err(reason);
    }
    verdicts
}

/// A validator restarted on a store written by the build before schema 7: the table dropped,
/// the version set back to 6, the store migrated again (which fills the table), the epoch index
/// read again from the file.
fn restart_as_migrated(c: &mut Chain) {
    c.conn
        .execute_batch("DROP TABLE open_requests; PRAGMA user_version = 6;")
        .expect("downgrade");
    store::schema::migrate(&mut c.conn, Path::new(":memory:")).expect("migrate 6 -> 7");
    c.index = store::Index::default();
    c.index.catch_up(&c.conn).expect("index");
}

/// Two validators fed the same blocks: `a` runs on, `b` restarts from a schema-6 store before
/// every block. Both must reach the same verdicts and the same table, and count as the
/// definition says at every time.
struct Twin {
    a: Chain,
    b: Chain,
    doctors: Vec<TestPerson>,
    patients: Vec<TestPerson>,
}

impl Twin {
    fn new() -> Twin {
        let mut a = Chain::new();
        let mut b = Chain::new();
        let patients = vec![a.net.patient(1, 0), a.net.patient(2, 1)];
        let doctors = vec![
            a.net.doctor(3, 0, "Cardiology"),
            a.net.doctor(4, 0, "Neurology"),
            a.net.doctor(5, 0, "Oncology"),
            a.net.doctor(6, 0, "Cardiology"),
            a.net.doctor(7, 1, "Oncology"),
        ];
        let enrolls: Vec<SignedTx> = patients
            .iter()
            .chain(&doctors)
            .map(|p| a.net.enroll(p))
            .collect();
        let block = a.net.block_at(
            a.head,
            a.now,
            enrolls.iter().map(|t| a.net.request(t)).collect(),
        );
        assert!(append_block(&mut a, &block).iter().all(Result::is_ok));
        assert!(append_block(&mut b, &block).iter().all(Result::is_ok));
        Twin {
            a,
            b,
            doctors,
            patients,
        }
    }

    fn net(&self) -> &TestNet {
        &self.a.net
    }

    /// A block at `t` holding `txs` at both validators (the second restarted from schema 6
    /// first): the verdicts, which must agree.
    fn block(&mut self, t: u64, txs: &[&SignedTx]) -> Vec<Verdict> {
        let entries = txs.iter().map(|tx| self.a.net.request(tx)).collect();
        let block = self.a.net.block_at(self.a.head, t, entries);
        restart_as_migrated(&mut self.b);
        let va = append_block(&mut self.a, &block);
        let vb = append_block(&mut self.b, &block);
        assert_eq!(
            va, vb,
            "the migrated validator decides block {} otherwise",
            block.header.height
        );
        assert_eq!(
            open_rows(&self.a.conn),
            open_rows(&self.b.conn),
            "tables differ"
        );
        let what = format!("block {} at {t}", block.header.height);
        let doctors: Vec<&TestPerson> = self.doctors.iter().collect();
        let patients: Vec<&TestPerson> = self.patients.iter().collect();
        for c in [&self.a, &self.b] {
            assert_table_is_exact(&c.conn, &what);
            assert_counts_are_the_old_ones(c, &doctors, &patients, &what);
        }
        va
    }

    fn request(&self, doctor: usize, patient: usize) -> SignedTx {
        let d = &self.doctors[doctor];
        self.net()
            .request_grant(d, &self.patients[patient].id, Scope::Write, &d.custodial())
    }

    fn grant(&self, patient: usize, doctor: usize, request: &SignedTx) -> SignedTx {
        let p = &self.patients[patient];
        self.net().grant(
            p,
            &self.doctors[doctor].id,
            Scope::Write,
            Some(self.net().id(request)),
            &p.custodial(),
        )
    }

    fn deny(&self, patient: usize, request: &SignedTx) -> SignedTx {
        let p = &self.patients[patient];
        self.net().revoke(p, self.net().id(request), &p.custodial())
    }
}

/// Requests and their answers (grant, denial) in the same block in either order, duplicate
/// answers, answers at `expires - 1` and at `expires`, blocks placed so that the pruning edge
/// falls exactly on a request's expiry, a second hospital, four doctors of one hospital at its
/// cap: at every block both validators (one migrated from schema 6 before every block) decide
/// alike, the table holds exactly the open requests kept, and every count at every time around
/// every edge is the definition's.
#[test]
fn red_team_s24_counts_equal_the_definition_at_every_edge_and_after_migration() {
    let mut w = Twin::new();
    let t1 = w.a.now;
    // Request then its grant, in one block; a grant before the request it names, in one block.
    let r0 = w.request(0, 0);
    let g0 = w.grant(0, 0, &r0);
    assert_eq!(w.block(t1, &[&r0, &g0]), [Ok(()), Ok(())]);
    let r1 = w.request(0, 0);
    let g1 = w.grant(0, 0, &r1);
    assert_eq!(
        w.block(t1 + 1_000, &[&g1, &r1]),
        [Err(REQUEST_NOT_PENDING), Ok(())]
    );
    // A request, its denial, and the cap counted inside the block.
    let t3 = t1 + 2_000;
    let r2 = w.request(0, 0);
    let n2 = w.deny(0, &r2);
    let r3 = w.request(0, 0);
    let r4 = w.request(0, 0);
    let r5 = w.request(0, 0);
    assert_eq!(
        w.block(t3, &[&r2, &n2, &r3, &r4, &r5]),
        [
            Ok(()),
            Ok(()),
            Ok(()),
            Ok(()),
            Err(TOO_MANY_REQUESTS_DOCTOR)
        ]
    );
    // Duplicate answers: a second grant and a second denial of an answered request.
    let g2 = w.grant(0, 0, &r2);
    let n2b = w.deny(0, &r2);
    let n1 = w.deny(0, &r1);
    let n1b = w.deny(0, &r1);
    let r6 = w.request(0, 0);
    assert_eq!(
        w.block(t1 + 3_000, &[&g2, &n2b, &n1, &n1b, &r6]),
        [
            Err(REQUEST_NOT_PENDING),
            Err(NO_SUCH_TARGET),
            Ok(()),
            Err(NO_SUCH_TARGET),
            Ok(())
        ]
    );
    // The hospital's share: doctors 1..=3 of home 0 fill it to 10 (doctor 0 holds 3), the
    // eleventh and twelfth are refused; the other hospital's doctor is not counted in it.
    let mut txs = Vec::new();
    for doctor in 1..=3 {
        for _ in 0..3 {
            txs.push(w.request(doctor, 0));
        }
    }
    let other = w.request(4, 0);
    txs.push(other.clone());
    let refs: Vec<&SignedTx> = txs.iter().collect();
    let verdicts = w.block(t1 + 4_000, &refs);
    let refused = verdicts.iter().filter(|v| v.is_err()).count();
    assert_eq!(
        verdicts[6..],
        [
            Ok(()),
            Err(TOO_MANY_REQUESTS_HOSPITAL),
            Err(TOO_MANY_REQUESTS_HOSPITAL),
            Ok(())
        ],
        "{verdicts:?}"
    );
    assert_eq!(refused, 2);
    // Expiry edges: r3 and r4 were made at t3 and expire at t3 + R. A grant at expires - 1
    // answers; a denial at expires does not.
    let e = t3 + REQUEST_MS;
    let g3 = w.grant(0, 0, &r3);
    assert_eq!(w.block(e - 1, &[&g3]), [Ok(())]);
    let n4 = w.deny(0, &r4);
    assert_eq!(w.block(e, &[&n4]), [Err(NO_SUCH_TARGET)]);
    // The pruning edge: a block at e + K - 1 keeps r4 (expires e > e - 1); one at e + K drops
    // it (expires e <= e). Counts at e - 1 then fall back to `requests`, at e use the table.
    let r7 = w.request(0, 1);
    assert_eq!(w.block(e + OPEN_KEPT_MS - 1, &[&r7]), [Ok(())]);
    let r8 = w.request(0, 1);
    let g7 = w.grant(1, 0, &r7);
    assert_eq!(w.block(e + OPEN_KEPT_MS, &[&r8, &g7]), [Ok(()), Ok(())]);
    // Long after, one request pruned in the block that answers another.
    let late = e + OPEN_KEPT_MS + REQUEST_MS - 1;
    let g8 = w.grant(1, 0, &r8);
    let r9 = w.request(1, 1);
    assert_eq!(w.block(late, &[&g8, &r9]), [Ok(()), Ok(())]);
    let n9 = w.deny(1, &r9);
    assert_eq!(
        w.block(late + REQUEST_MS + OPEN_KEPT_MS, &[&n9]),
        [Err(NO_SUCH_TARGET)]
    );
}

/// A precheck counts at its node's clock, which may be behind the head: by up to
/// `OPEN_KEPT_MS` it reads the table, further it reads `requests`. At the edge (clock =
/// `open_kept_above(head)` and one below) both paths must give the definition's verdict for a
/// request, with requests made and answered after the clock's time.
#[test]
fn red_team_s24_precheck_verdicts_at_the_edge_of_the_table() {
    let mut w = world();
    let make = |w: &World| {
        w.c.net
            .request_grant(&w.d, &w.p.id, Scope::Write, &w.d.custodial())
    };
    let t = w.c.now;
    let r: Vec<SignedTx> = (0..3).map(|_| make(&w)).collect();
    // Three requests at t, t + 1 s, t + 2 s; then a long quiet; then the first one denied at
    // expires - 1 and a block placed so that the table's edge sits right on the others.
    for (i, tx) in r.iter().enumerate() {
        assert_eq!(w.c.at(t + i as u64 * 1_000, tx), Ok(()));
    }
    let deny = w.c.net.revoke(&w.p, w.c.id(&r[0]), &w.p.custodial());
    assert_eq!(w.c.at(t + REQUEST_MS - 1, &deny), Ok(()));
    let head = t + 1_000 + REQUEST_MS + OPEN_KEPT_MS; // prunes r[1] (expires t + 1 s + R)
    assert_eq!(w.c.append(head, &[]), []);
    let kept = open_kept_above(head) as u64;
    let probe = make(&w);
    for now in [
        t,
        t + 999,
        t + 1_000,
        t + 1_999,
        t + 2_000,
        kept - 1_001,
        kept - 1,
        kept,
        kept + 1,
        kept + 999,
        kept + 1_000,
        kept + 1_001,
        head,
    ] {
        let want_count = reference(&w.c.conn, &w.d.id, &w.p.id, now, false);
        let want = if want_count < MAX_PENDING_PER_DOCTOR {
            Ok(())
        } else {
            Err(TOO_MANY_REQUESTS_DOCTOR)
        };
        let view = w.c.view();
        let have = precheck(&view, &w.c.net.genesis, &probe, now)
            .expect("reads")
            .map(|_| ())
            .map_err(|r| r.0);
        assert_eq!(have, want, "precheck at head - {} ms", head - now);
        assert_eq!(
            view.pending_requests(&w.d.id, &w.p.id, now).expect("q"),
            want_count,
            "count at head - {} ms",
            head - now
        );
    }
}

/// A crash between the block's rows and the table's: `append_block` writes both in one SQLite
/// transaction, so a write that never commits leaves neither (the block is applied again, and
/// the table with it).
#[test]
fn red_team_s24_a_block_not_committed_leaves_no_open_row() {
    let mut w = world();
    let before = open_rows(&w.c.conn);
    let tx =
        w.c.net
            .request_grant(&w.d, &w.p.id, Scope::Write, &w.d.custodial());
    let block =
        w.c.net
            .block_at(w.c.head, w.c.now, vec![w.c.net.request(&tx)]);
    let checked = w.c.net.check(&block);
    {
        let db = w.c.conn.transaction().expect("begin");
        store::write_block(
            &db,
            &w.c.index,
            &w.c.net.genesis,
            &block,
            &block.hash(),
            &checked,
        )
        .expect("written");
        // dropped: rolled back, as a crash before the commit
    }
    w.c.index = store::Index::default();
    w.c.index.catch_up(&w.c.conn).expect("index");
    assert_eq!(open_rows(&w.c.conn), before);
    assert_eq!(append_block(&mut w.c, &block), [Ok(())]);
    assert_eq!(open_rows(&w.c.conn).len(), before.len() + 1);
    assert_table_is_exact(&w.c.conn, "after the block again");
}

/// The growth bound: a doctor who never gets an answer requests every patient as often as
/// the cap allows, for two hours of one-minute blocks. `requests` grows with the run;
/// `count` patients (ids from `first`, home 0), enrolled in one block at the world's time.
fn enrolled_patients(w: &mut World, first: u64, count: u64) -> Vec<TestPerson> {
    let patients: Vec<TestPerson> = (0..count).map(|k| w.c.net.patient(first + k, 0)).collect();
    let enrolls: Vec<SignedTx> = patients.iter().map(|p| w.c.net.enroll(p)).collect();
    let refs: Vec<&SignedTx> = enrolls.iter().collect();
    let now = w.c.now;
    assert!(w.c.append(now, &refs).iter().all(Result::is_ok));
    patients
}

/// `open_requests` holds at most the pending requests of the last two windows: 3 pending and 3
/// expired-but-kept per (doctor, patient).
#[test]
fn red_team_s24_a_flooding_doctor_cannot_grow_the_table() {
    let mut w = world();
    let patients = enrolled_patients(&mut w, 100, 12);
    let t0 = w.c.now;
    let mut max_rows = 0;
    let mut applied = 0;
    for minute in 1..=120u64 {
        let txs: Vec<SignedTx> = patients
            .iter()
            .map(|p| {
                w.c.net
                    .request_grant(&w.e, &p.id, Scope::Write, &w.e.custodial())
            })
            .collect();
        let refs: Vec<&SignedTx> = txs.iter().collect();
        applied +=
            w.c.append(t0 + minute * 60_000, &refs)
                .iter()
                .filter(|v| v.is_ok())
                .count();
        max_rows = max_rows.max(open_rows(&w.c.conn).len());
        if minute % 7 == 0 {
            assert_table_is_exact(&w.c.conn, "flood");
        }
    }
    let requests: i64 =
        w.c.conn
            .query_row("SELECT count(*) FROM requests", [], |r| r.get(0))
            .expect("q");
    assert_eq!(requests as usize, applied);
    assert!(applied > 6 * patients.len(), "{applied}");
    assert!(
        max_rows <= 6 * patients.len(),
        "open_requests peaked at {max_rows} rows for {} patients",
        patients.len()
    );
}

/// Writes the scenario of [`red_team_s24_counts_equal_the_definition_at_every_edge_and_after_migration`]'s
/// kind into a store file: enrollments, requests, answers in the same block, expiry and
/// pruning edges. Returns the net, the path's store closed, and the people.
fn write_store(path: &Path, migrate_at: Option<usize>) -> (TestNet, TestPerson, TestPerson) {
    let net = TestNet::new(4);
    let mut store = Store::open(path, &net.genesis, OpenOptions::default()).expect("store");
    let (p, d) = (net.patient(1, 0), net.doctor(3, 0, "Cardiology"));
    let req = |net: &TestNet| net.request_grant(&d, &p.id, Scope::Write, &d.custodial());
    let r: Vec<SignedTx> = (0..4).map(|_| req(&net)).collect();
    let t = T0;
    let g0 = net.grant(&p, &d.id, Scope::Write, Some(net.id(&r[0])), &p.custodial());
    let n1 = net.revoke(&p, net.id(&r[1]), &p.custodial());
    let steps: Vec<(u64, Vec<SignedTx>)> = vec![
        (t, vec![net.enroll(&p), net.enroll(&d)]),
        (
            t + 1_000,
            vec![r[0].clone(), g0, r[1].clone(), r[2].clone()],
        ),
        (t + 2_000, vec![n1, r[3].clone()]),
        // r[2] expires at t + 1 s + R; pruned from the block at t + 1 s + R + K.
        (t + 1_000 + REQUEST_MS + OPEN_KEPT_MS, vec![req(&net)]),
        (t + 2_000 + REQUEST_MS + OPEN_KEPT_MS, vec![req(&net)]),
    ];
    let n = steps.len();
    let migrate = |store: Store| {
        drop(store);
        let conn = Connection::open(path).expect("open");
        conn.execute_batch("DROP TABLE open_requests; PRAGMA user_version = 6;")
            .expect("downgrade");
        drop(conn);
        Store::open(path, &net.genesis, OpenOptions::default()).expect("migrated")
    };
    for (i, (time, txs)) in steps.into_iter().enumerate() {
        if migrate_at == Some(i) {
            store = migrate(store);
        }
        let entries = txs.iter().map(|tx| net.request(tx)).collect();
        let block = net.block_at(store.head(), time, entries);
        let applied = net.append(&mut store, &block).expect("appended");
        assert_eq!(applied.rejected, [], "step {i}");
    }
    if migrate_at == Some(n) {
        store = migrate(store);
    }
    drop(store);
    (net, p, d)
}

/// `medchain verify` on honest stores: written by this build throughout, or migrated from
/// schema 6 at any block (the migration's rows must be the replay's, or an honest validator's
/// store fails verification).
#[test]
fn red_team_s24_verify_accepts_every_honestly_migrated_store() {
    for migrate_at in [None, Some(1), Some(2), Some(3), Some(4), Some(5)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chain.db");
        let (net, _, _) = write_store(&path, migrate_at);
        assert_table_is_exact(&Connection::open(&path).expect("open"), "migrated");
        crate::verify::verify_store(&path, &net.genesis, &mut |_| {})
            .unwrap_or_else(|e| panic!("migrated at {migrate_at:?}: {e}"));
    }
}

/// `medchain verify` on a store whose table was edited behind its back, each edit one that
/// changes what the caps count (a ghost request blocking the patient; an open request removed,
/// letting a fourth one in; an expiry moved far into the future so the row is never pruned; a
/// request moved to another hospital): every one is found.
#[test]
fn red_team_s24_verify_finds_every_edit_of_the_table() {
    let edits = [
        "INSERT INTO open_requests SELECT tx, patient, doctor, doctor_home, 9000000000000000
         FROM requests WHERE answered_tx IS NOT NULL LIMIT 1",
        "DELETE FROM open_requests WHERE tx = (SELECT max(tx) FROM open_requests)",
        "UPDATE open_requests SET expires_ms = 9000000000000000
         WHERE tx = (SELECT min(tx) FROM open_requests)",
        "UPDATE open_requests SET doctor_home = 1 WHERE tx = (SELECT min(tx) FROM open_requests)",
        // The same bytes, stored as text that is valid UTF-8 (the count's `patient = ?1`, a
        // blob, no longer finds it).
        "UPDATE open_requests SET patient = 'not a blob'
         WHERE tx = (SELECT min(tx) FROM open_requests)",
    ];
    for edit in edits {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chain.db");
        let (net, _, _) = write_store(&path, None);
        let conn = Connection::open(&path).expect("open");
        let changed = conn.execute(edit, []).expect("edit");
        assert_eq!(changed, 1, "{edit}");
        drop(conn);
        match crate::verify::verify_store(&path, &net.genesis, &mut |_| {}) {
            Err(Error::Corrupt {
                fault: crate::Fault::State(what),
                ..
            }) => assert!(what.contains("open_requests"), "{edit}: {what}"),
            other => panic!("{edit}: expected the table named, got {other:?}"),
        }
    }
}

/// A validator that restarted (store reopened, epoch index read again) and one that did not
/// decide a fourth request alike, at the block's time and at a precheck's.
#[test]
fn red_team_s24_a_reopened_store_counts_as_a_running_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chain.db");
    let (net, p, d) = write_store(&path, Some(3));
    let store = Store::open(&path, &net.genesis, OpenOptions::default()).expect("open");
    let head_time = head_ms(&Connection::open(&path).expect("open"));
    let state = store.state();
    for now in [
        head_time,
        head_time + 1,
        open_kept_above(head_time) as u64,
        open_kept_above(head_time) as u64 - 1,
        T0 + 1_500,
        T0 + 2_500,
    ] {
        let conn = Connection::open(&path).expect("open");
        assert_eq!(
            state.pending_requests(&d.id, &p.id, now).expect("q"),
            reference(&conn, &d.id, &p.id, now, false),
            "at head - {}",
            head_time as i64 - now as i64
        );
        assert_eq!(
            state
                .pending_requests_from_hospital_of(&d.id, &p.id, now)
                .expect("q"),
            reference(&conn, &d.id, &p.id, now, true),
        );
    }
    drop(store);
    let conn = Connection::open(&path).expect("open");
    assert_table_is_exact(&conn, "reopened");
}

/// `medchain verify` on a store whose `open_requests` row holds the patient's id as TEXT (the
/// same bytes, not valid UTF-8): the count no longer finds the row (`patient = ?1` compares a
/// blob), so this validator admits a fourth request the others refuse. Verification must name
/// the table; it panics instead, in `first_difference` (rusqlite's `Value` from a TEXT cell
/// that is not UTF-8), so the operator gets a crash, not the height and the table.
#[test]
fn red_team_s24_verify_reports_a_non_utf8_text_cell_rather_than_panicking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chain.db");
    let (net, p, d) = write_store(&path, None);
    let conn = Connection::open(&path).expect("open");
    let changed = conn
        .execute(
            "UPDATE open_requests SET patient = CAST(patient AS TEXT)
             WHERE tx = (SELECT min(tx) FROM open_requests)",
            [],
        )
        .expect("edit");
    assert_eq!(changed, 1);
    // What the edit does to the rules: the open request is no longer counted.
    let head = head_ms(&conn);
    drop(conn);
    let store = Store::open(&path, &net.genesis, OpenOptions::default()).expect("open passes");
    let conn = Connection::open(&path).expect("open");
    assert_eq!(
        store
            .state()
            .pending_requests(&d.id, &p.id, head)
            .expect("q")
            + 1,
        reference(&conn, &d.id, &p.id, head, false),
        "the edited row is no longer counted"
    );
    drop(store);
    let verdict =
        std::panic::catch_unwind(|| crate::verify::verify_store(&path, &net.genesis, &mut |_| {}));
    match verdict {
        Ok(Err(Error::Corrupt {
            fault: crate::Fault::State(what),
            ..
        })) => assert!(what.contains("open_requests"), "{what}"),
        Ok(other) => panic!("expected the table named, got {other:?}"),
        Err(_) => panic!("medchain verify panicked on the edited store instead of reporting it"),
    }
}

/// The cost claim: a count is one seek in `open_requests_by_patient` plus the patient's open
/// rows, not a range of `open_requests_by_expiry` (every open request of the chain), before
/// and after SQLite has statistics on a flooded table.
#[test]
fn red_team_s24_a_count_seeks_by_patient() {
    let mut w = world();
    let patients = enrolled_patients(&mut w, 200, 12);
    let t0 = w.c.now;
    let txs: Vec<SignedTx> = patients
        .iter()
        .flat_map(|p| {
            [&w.d, &w.e].map(|d| {
                w.c.net
                    .request_grant(d, &p.id, Scope::Write, &d.custodial())
            })
        })
        .collect();
    let refs: Vec<&SignedTx> = txs.iter().collect();
    assert!(w.c.append(t0 + 1_000, &refs).iter().all(Result::is_ok));
    let plan = |conn: &Connection, sql: &str| -> String {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("plan");
        stmt.query_map(rusqlite::params![vec![0u8; 16], 0i64, vec![0u8; 16]], |r| {
            r.get::<_, String>(3)
        })
        .expect("q")
        .collect::<rusqlite::Result<Vec<_>>>()
        .expect("rows")
        .join("; ")
    };
    let doctor = "SELECT COUNT(*) FROM open_requests WHERE patient = ?1 AND expires_ms > ?2
                  AND doctor = ?3";
    let hospital = "SELECT COUNT(*) FROM open_requests WHERE patient = ?1 AND expires_ms > ?2
                    AND doctor_home = (SELECT home FROM persons WHERE person = ?3)";
    for stats in [false, true] {
        if stats {
            w.c.conn.execute_batch("ANALYZE").expect("analyze");
        }
        for sql in [doctor, hospital] {
            let p = plan(&w.c.conn, sql);
            assert!(p.contains("open_requests_by_patient"), "stats {stats}: {p}");
        }
    }
}
