//! Red team s59: a home's live read grants at start (`entitled::read_grants_of_home`), read
//! through the partial index `grants_read_by_expiry` of schema 9. The index must change how the
//! rows are found, never which: the answer is checked against the same select without the index
//! and against a filter of every grant in Rust, over random grants, revocations (in their
//! grant's block too), erasures and clocks, at every grant's end and around it.
use super::*;
use crate::store::state::{GRANT_SELECT, LIVE_READ_GRANT_SELECT, grant_row, rows};
use crate::tx::Decision;

/// The start's condition as first written, the differential's oracle (a list of the home's
/// persons, where the start looks each patient up).
const CONDITION: &str = "g.scope_read_ms IS NOT NULL AND g.revoked_tx IS NULL AND g.expires_ms > ?2
         AND g.patient IN (SELECT person FROM persons WHERE home = ?1) ORDER BY g.tx";

/// A fixed xorshift, so that a failure names the seed that makes it again.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn every_grant(c: &Chain) -> Vec<GrantRow> {
    rows(&c.conn, GRANT_SELECT, "1 ORDER BY g.tx", &[], grant_row).expect("grants")
}

/// The answer from every grant, filtered in Rust: no SQL condition shared with the query.
fn expected(c: &Chain, home: u32, after_ms: u64) -> Vec<GrantRow> {
    every_grant(c)
        .into_iter()
        .filter(|g| {
            matches!(g.scope, Scope::Read { .. })
                && g.revoked.is_none()
                && g.expires_ms > after_ms
                && c.person(&g.patient)
                    .expect("person")
                    .expect("enrolled")
                    .home
                    == home
        })
        .collect()
}

/// The three answers agree for every home (and one with no validator) at the clock, at each
/// grant's end and a millisecond either side, and at the extremes. Returns how many live grants
/// the answers held, so that a run proves it compared something.
fn check(c: &Chain, context: &str) -> usize {
    let mut afters = vec![0, T0, c.now - 1, c.now, i64::MAX as u64, u64::MAX];
    for g in every_grant(c) {
        afters.extend([g.expires_ms - 1, g.expires_ms, g.expires_ms + 1]);
    }
    let mut live = 0;
    for home in 0..3u32 {
        for &after in &afters {
            let want = expected(c, home, after);
            let indexed = crate::entitled::read_grants_of_home(c, home, after).expect("indexed");
            let plain = rows(
                &c.conn,
                GRANT_SELECT,
                CONDITION,
                &[&home, &(after.min(i64::MAX as u64) as i64)],
                grant_row,
            )
            .expect("plain");
            assert_eq!(indexed, want, "{context}: home {home}, after {after}");
            assert_eq!(
                plain, want,
                "{context}: home {home}, after {after} (no index)"
            );
            live += want.len();
        }
    }
    live
}

/// One random step on `w`: a grant, a grant and its revocation in one block, a revocation, an
/// erasure, or time passing (to a grant's end exactly, or a millisecond before). Verdicts are
/// whatever the rules say; a refused step changes nothing, which the check must see too.
fn step(w: &mut World, rng: &mut Rng, granted: &mut Vec<TxId>) {
    let durations = [
        READ_GRANT_MIN_MS,
        HOUR,
        4 * HOUR,
        READ_GRANT_MAX_MS,
        READ_GRANT_MIN_MS + 7_919,
    ];
    let scope = match rng.below(4) {
        0 => Scope::Write,
        _ => read(durations[rng.below(durations.len() as u64) as usize]),
    };
    // p -> d in person, p -> e on p's device (a key of the home), q -> e in person; and
    // q -> d in person, which the rules refuse for a read grant.
    let (patient, doctor, by) = match rng.below(4) {
        0 => (w.p.clone(), w.d.id, w.p.custodial()),
        1 => (w.p.clone(), w.e.id, w.p.device()),
        2 => (w.q.clone(), w.e.id, w.q.custodial()),
        _ => (w.q.clone(), w.d.id, w.q.custodial()),
    };
    let pick = |rng: &mut Rng, granted: &[TxId]| -> Option<TxId> {
        (!granted.is_empty()).then(|| granted[rng.below(granted.len() as u64) as usize])
    };
    match rng.below(7) {
        0 | 1 => {
            let tx = w.c.net.grant(&patient, &doctor, scope, None, &by);
            if w.c.now(&tx).is_ok() {
                granted.push(w.c.id(&tx));
            }
        }
        2 => {
            let tx = w.c.net.grant(&patient, &doctor, scope, None, &by);
            let revoke = w.c.net.revoke(&patient, w.c.id(&tx), &patient.custodial());
            let t = w.c.now;
            if w.c.append(t, &[&tx, &revoke])[0].is_ok() {
                granted.push(w.c.id(&tx));
            }
        }
        3 => {
            if let Some(target) = pick(rng, granted) {
                let row = w.c.grant(&target).expect("grant").expect("applied");
                let owner = if row.patient == w.p.id { &w.p } else { &w.q };
                let revoke = w.c.net.revoke(owner, target, &owner.custodial());
                let _ = w.c.now(&revoke);
            }
        }
        4 => {
            if let Some(target) = pick(rng, granted) {
                let row = w.c.grant(&target).expect("grant").expect("applied");
                let owner = if row.patient == w.p.id { &w.p } else { &w.q };
                let ask = w.c.net.request_erasure(owner, target, &owner.custodial());
                if w.c.now(&ask).is_ok() {
                    let ask_id = w.c.id(&ask);
                    let answer = w.c.net.answer_erasure(row.sealer, ask_id, Decision::Erase);
                    let _ = w.c.now(&answer);
                }
            }
        }
        5 => {
            if let Some(target) = pick(rng, granted) {
                let end =
                    w.c.grant(&target)
                        .expect("grant")
                        .expect("applied")
                        .expires_ms;
                let to = end - rng.below(2);
                w.c.now = w.c.now.max(to);
            }
        }
        _ => w.c.now += rng.below(2 * HOUR) + 1,
    }
}

/// The index answers as a scan of every grant would, after every step of random histories.
#[test]
fn the_indexed_live_read_grants_are_those_of_a_scan_in_every_history() {
    let mut live = 0;
    let mut revoked = 0;
    for seed in [0x5eed_0059, 7, 0xdead_beef, 42] {
        let mut w = world();
        w.p_device_aged();
        let mut rng = Rng(seed);
        let mut granted = Vec::new();
        for n in 0..30 {
            step(&mut w, &mut rng, &mut granted);
            live += check(&w.c, &format!("seed {seed:#x} step {n}"));
        }
        revoked += every_grant(&w.c)
            .iter()
            .filter(|g| g.revoked.is_some())
            .count();
    }
    assert!(live > 0 && revoked > 0, "live {live}, revoked {revoked}");
}

/// A grant and its revocation in one block, and a grant ending exactly at the time asked: the
/// first is never live, the second is not live at its end and is a millisecond before.
#[test]
fn a_grant_revoked_in_its_block_and_one_at_its_end_are_not_live() {
    let mut w = world();
    w.p_device_aged();
    let grant =
        w.c.net
            .grant(&w.p, &w.d.id, read(HOUR), None, &w.p.custodial());
    let revoke = w.c.net.revoke(&w.p, w.c.id(&grant), &w.p.custodial());
    let t = w.c.now;
    assert_eq!(w.c.append(t, &[&grant, &revoke]), [Ok(()), Ok(())]);
    let kept =
        w.c.net
            .grant(&w.p, &w.e.id, read(HOUR), None, &w.p.device());
    let t = w.c.now;
    let kept = w.c.ok(&kept);
    let ids = |w: &World, after_ms| -> Vec<TxId> {
        crate::entitled::read_grants_of_home(&w.c, 0, after_ms)
            .expect("read")
            .iter()
            .map(|g| g.id)
            .collect()
    };
    assert_eq!(ids(&w, t + HOUR - 1), [kept]);
    assert!(ids(&w, t + HOUR).is_empty());
    check(&w.c, "same block");
}

/// A random history with live and revoked read grants, copied to a file.
fn history_in_file(path: &Path) -> World {
    let mut w = world();
    w.p_device_aged();
    let mut rng = Rng(0x5959);
    let mut granted = Vec::new();
    for _ in 0..40 {
        step(&mut w, &mut rng, &mut granted);
    }
    w.c.conn
        .execute("VACUUM INTO ?1", [path.to_str().expect("utf-8")])
        .expect("copy");
    w
}

fn answers<Q: Queries + ?Sized>(q: &Q, afters: &[u64]) -> Vec<Vec<GrantRow>> {
    (0..2u32)
        .flat_map(|home| {
            afters
                .iter()
                .map(move |after| crate::entitled::read_grants_of_home(q, home, *after))
        })
        .collect::<Result<_>>()
        .expect("read")
}

/// A store of version 8 holding live and revoked read grants, reopened by `Store::open`: the
/// index built by migration 9 holds exactly the rows its condition names, and the answers are
/// those of the chain it was copied from.
#[test]
fn a_version_8_store_with_live_grants_answers_the_same_after_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.db");
    let w = history_in_file(&path);
    let afters = [0, T0, w.c.now - HOUR, w.c.now];
    let before = answers(&w.c, &afters);
    assert!(
        before.iter().any(|a| !a.is_empty()),
        "nothing live to compare"
    );
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("DROP INDEX grants_read_by_expiry; PRAGMA user_version = 8;")
        .unwrap();
    drop(conn);
    let store = crate::Store::open(&path, &w.c.net.genesis, Default::default()).unwrap();
    assert_eq!(answers(&store, &afters), before);
    let conn = store.connection();
    let ids = |from: &str| -> Vec<i64> {
        let sql = format!(
            "SELECT tx FROM {from} WHERE scope_read_ms IS NOT NULL AND revoked_tx IS NULL
             ORDER BY tx"
        );
        let mut stmt = conn.prepare(&sql).unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    assert_eq!(
        ids("grants INDEXED BY grants_read_by_expiry"),
        ids("grants NOT INDEXED")
    );
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

/// A store of version 9 whose index an operator dropped: the start either answers as before
/// (the index made again) or fails naming the index, never with the wrong rows.
#[test]
fn a_store_without_the_index_fails_naming_it_or_answers_right() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.db");
    let w = history_in_file(&path);
    let afters = [T0, w.c.now];
    let before = answers(&w.c, &afters);
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("DROP INDEX grants_read_by_expiry")
        .unwrap();
    drop(conn);
    let store = crate::Store::open(&path, &w.c.net.genesis, Default::default()).unwrap();
    match crate::entitled::read_grants_of_home(&store, 0, T0) {
        Ok(_) => assert_eq!(answers(&store, &afters), before),
        Err(e) => assert!(
            e.to_string().contains("grants_read_by_expiry"),
            "unclear error: {e}"
        ),
    }
}

/// The plan of the start's query finds grants through the index (no scan of `grants`), and no
/// read the rules make of `grants` goes through it: the index is this validator's alone, and
/// verdicts must not depend on it.
#[test]
fn only_the_start_reads_through_the_index_and_it_scans_no_grant() {
    let w = world();
    let plan = |sql: &str| -> Vec<String> {
        let mut stmt =
            w.c.conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
        let nulls = std::iter::repeat_n(rusqlite::types::Null, stmt.parameter_count());
        stmt.query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    let start = plan(&format!(
        "{LIVE_READ_GRANT_SELECT} WHERE {}",
        crate::entitled::LIVE_READ_GRANTS_OF_HOME
    ));
    assert!(
        start.iter().any(|d| d.contains("grants_read_by_expiry")),
        "{start:?}"
    );
    // Neither every grant nor every person of the home.
    assert!(!start.iter().any(|d| d.starts_with("SCAN")), "{start:?}");
    // The rules' reads of grants (`store::Queries`, `SqlState`): by id among candidates, by
    // patient, by doctor and end; and the writer's updates.
    for condition in [
        "g.tx IN rarray(?1) AND t.id = ?2",
        "g.tx IN rarray(?2) AND g.patient = ?1 ORDER BY g.tx DESC",
        "g.tx IN rarray(?3) AND g.doctor = ?1 AND g.expires_ms > ?2 ORDER BY g.tx DESC",
    ] {
        let rules = plan(&format!("{GRANT_SELECT} WHERE {condition}"));
        assert!(
            !rules.iter().any(|d| d.contains("grants_read_by_expiry")),
            "{condition}: {rules:?}"
        );
    }
    for update in [
        "UPDATE grants SET used_tx = ?2 WHERE tx = ?1 AND used_tx IS NULL",
        "UPDATE grants SET revoked_tx = ?2 WHERE tx = ?1 AND revoked_tx IS NULL",
    ] {
        let writes = plan(update);
        assert!(
            !writes.iter().any(|d| d.contains("grants_read_by_expiry")),
            "{update}: {writes:?}"
        );
    }
}

/// One dishonest validator's index that lies (it leaves out every grant, its SQL saying it
/// holds them): its own start misses its patients' live grants, which only denies its own
/// grantees (it holds the keys anyway); its verdicts stay those of the rows, as the other
/// validators' are.
#[test]
fn a_lying_index_changes_the_start_not_the_verdicts() {
    let mut w = world();
    w.p_device_aged();
    let grant =
        w.c.net
            .grant(&w.p, &w.e.id, read(HOUR), None, &w.p.device());
    let grant_id = w.c.ok(&grant);
    assert!(check(&w.c, "honest") > 0);
    // The lie is written in a copy of the file, as an operator would, and read by a new
    // connection (one that loaded the schema before keeps the true predicate).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.db");
    w.c.conn
        .execute("VACUUM INTO ?1", [path.to_str().expect("utf-8")])
        .unwrap();
    let edit = Connection::open(&path).unwrap();
    let honest: String = edit
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE name = 'grants_read_by_expiry'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    edit.execute_batch(
        "DROP INDEX grants_read_by_expiry;
         CREATE INDEX grants_read_by_expiry ON grants(expires_ms)
             WHERE scope_read_ms IS NOT NULL AND revoked_tx IS NULL AND tx < 0;
         PRAGMA writable_schema = ON;",
    )
    .unwrap();
    edit.execute(
        "UPDATE sqlite_schema SET sql = ?1 WHERE name = 'grants_read_by_expiry'",
        [&honest],
    )
    .unwrap();
    drop(edit);
    w.c.conn = Connection::open(&path).unwrap();
    store::schema::migrate(&mut w.c.conn, &path).unwrap();
    assert!(
        crate::entitled::read_grants_of_home(&w.c, 0, T0)
            .unwrap()
            .is_empty(),
        "the lie reaches the start"
    );
    assert_eq!(expected(&w.c, 0, T0).len(), 1);
    // The doctor still reads under the grant, at home 1: the rules read the row, not the index.
    let access = w.c.net.access(1, &w.p.id, &w.e.id, Some(grant_id));
    assert_eq!(w.c.now(&access), Ok(()));
}
