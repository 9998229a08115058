//! The chain's derived state in SQL: the [`StateView`] the rules read through (over the block's
//! write transaction, so a transaction sees the effects of the ones before it in its block, or
//! over a reader's snapshot for a precheck), and the row decoding the queries share.
//!
//! Derived rows are keyed by `tx`, the row of the transaction that made them in `transactions`
//! (appended in chain order, so inserts are cheap), and found by transaction id or by person
//! through the epoch index ([`super::index`]), whose candidates each query checks against the
//! whole value on the row; references to other transactions (`used_tx`, `revoked_tx`, ...) are
//! rows too, joined back to ids when read.
use std::rc::Rc;

use rusqlite::types::Value;
use rusqlite::vtab::array::Array;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::index::{Held, Index, Tag};

use crate::rules::{
    ASK_MS, Answer, AskRow, ErasureAnswer, ErasureRow, GrantRow, KeyRow, PersonRow, REQUEST_MS,
    RecoveryRow, RequestRow, SealedRow, StateView,
};
use crate::tx::{
    AskWhat, Attested, Decision, KeyKind, PersonId, PublicKey, Refusal, Role, Scope, SignerKind,
    TxId,
};
use crate::{Error, Result};

/// The rules' view of the chain through `conn`.
pub struct SqlState<'c> {
    pub(crate) conn: &'c Connection,
    pub(crate) index: &'c Index,
    view: View,
    /// Through a reader: the index catches up with the committed rows before the view's first
    /// lookup (the writer's is current: it adds each row as it writes it). Once is enough: a
    /// reader's view is one snapshot's ([`super::Queries::snapshot`]), and the rows this
    /// process's writer adds meanwhile are added to memory as it writes them.
    catch_up: bool,
    /// Whether the view caught up already ([`SqlState::catch_up_once`]): each catch-up is two
    /// queries, and a precheck made three lookups (1 % of the machine at saturation).
    caught_up: std::cell::Cell<bool>,
    /// The applied rows this view's lookups by id found, by id: the effects of the transaction
    /// decided through it name them again ([`SqlState::tx_row`]; a record's grant twice), and
    /// each was a walk of the index and a query (2 % of the machine at saturation).
    found_rows: std::cell::RefCell<Vec<(TxId, i64)>>,
    /// Whether the state holds an entry seen with no valid transaction (`created_ms` -1),
    /// which [`StateView::seen`] then probes for too: the writer's, asked in its block
    /// ([`SqlState::knowing_invalid_seen`]); a reader's is [`Index::no_invalid_seen`].
    invalid_seen: Option<bool>,
}

/// Whose view a [`SqlState`] is, and which rows held in memory ([`Held`]) it may answer from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum View {
    /// The writer, inside its block's transaction: it holds the persons and keys it reads.
    Writer,
    /// A precheck on the committed state (admission, the flows' early answers), which the
    /// block's rules decide again: the persons readers hold, and the keys the writer holds (as
    /// fresh as the committed rows or fresher: its block in flight is one consensus agreed).
    Precheck,
    /// A query: its snapshot's rows only, so that everything it reads is one state.
    Snapshot,
}

impl<'c> SqlState<'c> {
    fn new(conn: &'c Connection, index: &'c Index, view: View) -> Self {
        SqlState {
            conn,
            index,
            view,
            catch_up: view != View::Writer,
            caught_up: std::cell::Cell::new(false),
            found_rows: std::cell::RefCell::new(Vec::new()),
            invalid_seen: None,
        }
    }

    /// This view, told whether the state holds an entry seen with no valid transaction
    /// ([`invalid_seen`]): when it holds none, [`StateView::seen`] makes one probe, not two.
    pub(crate) fn knowing_invalid_seen(mut self, any: bool) -> Self {
        self.invalid_seen = Some(any);
        self
    }

    /// The view of the writer, inside its block's transaction.
    pub(crate) fn writer(conn: &'c Connection, index: &'c Index) -> Self {
        Self::new(conn, index, View::Writer)
    }

    /// The view of the committed state through a reader (or the writer between blocks), for
    /// a precheck.
    pub(crate) fn reader(conn: &'c Connection, index: &'c Index) -> Self {
        Self::new(conn, index, View::Precheck)
    }

    /// The view of the committed state a reader's snapshot shows, nothing else.
    pub(crate) fn snapshot(conn: &'c Connection, index: &'c Index) -> Self {
        Self::new(conn, index, View::Snapshot)
    }

    /// Catches the index up with the rows this view sees, if a reader's and not done yet.
    fn catch_up_once(&self) -> Result<()> {
        if self.catch_up && !self.caught_up.get() {
            self.index.catch_up(self.conn)?;
            self.caught_up.set(true);
        }
        Ok(())
    }

    /// The rows whose `tag` column may hold `value` (see [`Index::rows`]), as an `rarray`
    /// parameter.
    pub(crate) fn candidates(
        &self,
        tag: Tag,
        value: &[u8],
        since_ms: Option<u64>,
    ) -> Result<Array> {
        self.catch_up_once()?;
        let rows = self.index.rows(self.conn, tag, value, since_ms)?;
        Ok(Rc::new(rows.into_iter().map(Value::Integer).collect()))
    }

    /// The rows of entries with id `id` (candidates: compare `id` on the row), from the
    /// newest down to the first occurrence of the id: a valid entry not rejected as a duplicate
    /// (any earlier entry with its id would have made it one), which every lookup by id wants
    /// or comes after. Lookups of recent transactions read no run.
    pub(crate) fn id_rows(&self, id: &TxId) -> Result<Array> {
        let (_, rows, _) = self.walk_id(id, |_| Ok(None::<()>))?;
        Ok(array(&rows))
    }

    /// What `lookup` finds among the rows of entries with id `id` ([`SqlState::id_rows`]),
    /// asked first of the newest candidates: the applied row of an id is its first occurrence,
    /// so a row found among them is the one all the candidates would give, and a lookup of a
    /// recent transaction costs one query, not a search for the first occurrence and then the
    /// lookup (two per lookup by id, several a transaction, were 15 % of a validator's
    /// replica thread). `lookup` must find at most the applied row of `id` among the rows it
    /// is given.
    fn applied_by_id<T>(
        &self,
        id: &TxId,
        mut lookup: impl FnMut(&[i64]) -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        // What `lookup` finds among one candidate is that row: the applied row of `id`.
        let mut lookup = |candidates: &[i64]| {
            let found = lookup(candidates)?;
            if let (Some(_), [row]) = (&found, candidates) {
                self.found_rows.borrow_mut().push((*id, *row));
            }
            Ok(found)
        };
        let (found, rows, asked) = self.walk_id(id, &mut lookup)?;
        if found.is_none() && rows.len() != asked {
            // Candidates `lookup` was not given: memory's alone on a chain with no run yet, or
            // older rows past the last it was asked of.
            return lookup(&rows);
        }
        Ok(found)
    }

    /// The walk of [`SqlState::id_rows`], asking `lookup` of the candidates at each step and
    /// stopping at a row it finds: what it found, the candidates, and how many it was last
    /// given.
    fn walk_id<T>(
        &self,
        id: &TxId,
        mut lookup: impl FnMut(&[i64]) -> Result<Option<T>>,
    ) -> Result<(Option<T>, Vec<i64>, usize)> {
        self.catch_up_once()?;
        let (mut found, mut asked) = (None, 0);
        let rows = self
            .index
            .rows_until(self.conn, Tag::Id, id, None, |candidates| {
                asked = candidates.len();
                found = lookup(candidates)?;
                if found.is_some() {
                    return Ok(true);
                }
                let (sql, rows) = among(
                    candidates,
                    "SELECT 1 FROM transactions WHERE tx = ?1 AND id = ?2 AND kind != ?3
                     AND (rejected IS NULL OR rejected != ?4)",
                    "SELECT 1 FROM transactions WHERE tx IN rarray(?1) AND id = ?2 AND kind != ?3
                     AND (rejected IS NULL OR rejected != ?4)",
                );
                Ok(self.conn.prepare_cached(sql)?.exists(params![
                    rows,
                    id.as_slice(),
                    super::INVALID_KIND,
                    crate::rules::reason::DUPLICATE
                ])?)
            })?;
        Ok((found, rows, asked))
    }
}

/// `rows` as an `rarray` parameter.
fn array(rows: &[i64]) -> Array {
    Rc::new(rows.iter().copied().map(Value::Integer).collect())
}

/// Of two forms of a query over the candidate rows `rows` as its parameter `?1`, the one to run
/// and its `?1`: `one`, where `?1` is a row (`tx = ?1`), for a single candidate (nearly every
/// lookup by id), else `many`, where it is an `rarray` (`tx IN rarray(?1)`), whose virtual
/// table SQLite builds at each run: through it a lookup by id cost several times its row's read.
fn among<'q>(rows: &[i64], one: &'q str, many: &'q str) -> (&'q str, Box<dyn rusqlite::ToSql>) {
    match rows {
        [row] => (one, Box::new(*row)),
        rows => (many, Box::new(array(rows))),
    }
}

/// `seen_ids.created_ms` of an entry: its header's `created_ms`, or -1 for an entry that carries
/// no valid transaction.
pub(crate) fn created_column(created_ms: Option<u64>) -> i64 {
    created_ms.map_or(-1, |ms| ms as i64)
}

/// Whether `conn` sees an entry that carries no valid transaction (`created_ms` -1 in
/// `seen_ids`): one seek, to the table's first key. Nearly never: such an entry commits only
/// when more than f validators misbehave.
pub(crate) fn invalid_seen(conn: &Connection) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM seen_ids WHERE created_ms = -1")?
        .exists([])?)
}

/// `seen_ids.id_prefix`: the id's first 8 bytes.
pub(crate) fn id_prefix(id: &[u8]) -> i64 {
    let mut bytes = [0u8; 8];
    let n = id.len().min(8);
    bytes[..n].copy_from_slice(&id[..n]);
    i64::from_be_bytes(bytes)
}

/// The earliest block time of a row that can still be pending at `at_ms` if rows live `life_ms`
/// after their block: older epochs' runs need not be read.
pub(crate) fn since(at_ms: u64, life_ms: u64) -> Option<u64> {
    Some(at_ms.saturating_sub(life_ms))
}

/// How long past its expiry a request never answered stays in `open_requests` (schema 7). The
/// table lets the rules count a patient's pending requests by those still open, where scanning
/// every request of the last [`REQUEST_MS`] grew with how many the patient made (hundreds a run
/// under load). Rows go when answered, or at the first block at least this long after they
/// expired, so the table holds only the unanswered requests of the last two windows, whatever
/// the chain's length. Kept this long, not dropped at expiry, because a precheck counts at its
/// node's clock, which may be behind the head block's time: a count at a time older than the
/// table covers ([`open_kept_above`]) reads the requests themselves instead.
pub(crate) const OPEN_KEPT_MS: u64 = REQUEST_MS;

/// Every request not answered whose `expires_ms` is above this is in `open_requests` once the
/// block at `block_ms` is written (block times increase, so the head block's time is the
/// highest any block pruned at).
pub(crate) fn open_kept_above(block_ms: u64) -> i64 {
    block_ms.saturating_sub(OPEN_KEPT_MS).min(i64::MAX as u64) as i64
}

/// Drops the rows of `open_requests` that the block at `block_ms` no longer keeps.
pub(crate) fn prune_open_requests(conn: &Connection, block_ms: u64) -> Result<()> {
    conn.prepare_cached("DELETE FROM open_requests WHERE expires_ms <= ?1")?
        .execute([open_kept_above(block_ms)])?;
    Ok(())
}

pub(crate) fn fixed<const N: usize>(bytes: Vec<u8>, what: &'static str) -> Result<[u8; N]> {
    bytes.try_into().map_err(|_| Error::Decode {
        what,
        source: std::io::Error::other(format!("not {N} bytes")),
    })
}

fn opt_fixed<const N: usize>(
    bytes: Option<Vec<u8>>,
    what: &'static str,
) -> Result<Option<[u8; N]>> {
    bytes.map(|b| fixed(b, what)).transpose()
}

fn bad(what: &'static str) -> Error {
    Error::Decode {
        what,
        source: std::io::Error::other("unknown code"),
    }
}

/// An enum stored as an integer column: `$to` encodes, `$from` decodes (an unknown code is a
/// decoding error, never a guess).
macro_rules! column_code {
    ($t:ty, $what:literal, $to:ident, $from:ident, { $($variant:ident = $code:literal),+ $(,)? }) => {
        pub(crate) fn $to(value: $t) -> i64 {
            match value {
                $(<$t>::$variant => $code,)+
            }
        }

        fn $from(code: i64) -> Result<$t> {
            match code {
                $($code => Ok(<$t>::$variant),)+
                _ => Err(bad($what)),
            }
        }
    };
}

column_code!(Role, "role", role_code, role, { Patient = 0, Doctor = 1 });
column_code!(KeyKind, "key kind", key_kind_code, key_kind, { Device = 0, Custodial = 1 });
column_code!(SignerKind, "signer kind", signer_kind_code, signer_kind, {
    Device = 0,
    Custodial = 1,
    Validator = 2,
});
column_code!(Attested, "attestation", attested_code, attested, { Device = 0, InPerson = 1 });
column_code!(Answer, "answer", answer_code, answer, { Granted = 0, Denied = 1 });
column_code!(Refusal, "refusal", refusal_code, refusal, {
    RetentionPeriod = 0,
    OngoingCare = 1,
    LegalClaims = 2,
    PublicHealth = 3,
});

/// A decision as the columns `(decision, reason, until_ms)`: 0 erase; 1 refuse, with the
/// refusal's code and its end if it has one.
pub(crate) fn decision_columns(decision: Decision) -> (i64, Option<i64>, Option<i64>) {
    match decision {
        Decision::Erase => (0, None, None),
        Decision::Refuse { reason, until_ms } => {
            (1, Some(refusal_code(reason)), until_ms.map(|u| u as i64))
        }
    }
}

fn decision(code: i64, reason: Option<i64>, until_ms: Option<i64>) -> Result<Decision> {
    match (code, reason) {
        (0, None) => Ok(Decision::Erase),
        (1, Some(reason)) => Ok(Decision::Refuse {
            reason: refusal(reason)?,
            until_ms: until_ms.map(ms),
        }),
        _ => Err(bad("erasure decision")),
    }
}

/// A scope as a column: NULL for a write grant, else the read duration.
pub(crate) fn scope_column(scope: Scope) -> Option<i64> {
    match scope {
        Scope::Write => None,
        Scope::Read { duration_ms } => Some(duration_ms as i64),
    }
}

fn scope(column: Option<i64>) -> Scope {
    match column {
        None => Scope::Write,
        Some(d) => Scope::Read {
            duration_ms: d as u64,
        },
    }
}

fn ms(v: i64) -> u64 {
    v as u64
}

/// The `WHERE` that finds the rows of transaction `?2` among the candidates `?1` as `t`.
const BY_ID: &str = "t.tx IN rarray(?1) AND t.id = ?2";
/// [`BY_ID`] for one candidate row ([`among`]).
const BY_ID_ONE: &str = "t.tx = ?1 AND t.id = ?2";

pub(crate) const PERSON_SELECT: &str = "SELECT p.person, p.role, p.department, p.name, p.home, t.id
     FROM persons p JOIN transactions t ON t.tx = p.tx";

pub(crate) fn person_row(r: &Row<'_>) -> Result<PersonRow> {
    Ok(PersonRow {
        person: fixed(r.get(0)?, "person id")?,
        role: role(r.get(1)?)?,
        department: r.get(2)?,
        name: r.get(3)?,
        home: r.get(4)?,
        enrolled: fixed(r.get(5)?, "transaction id")?,
    })
}

pub(crate) const KEY_SELECT: &str = "SELECT k.key, k.person, k.kind, k.label, k.origin, t.id,
            k.added_by, k.active_from_ms, rv.id, rc.id, k.added_ms, k.young_until_ms
     FROM keys k JOIN transactions t ON t.tx = k.tx
     LEFT JOIN transactions rv ON rv.tx = k.revoked_tx
     LEFT JOIN transactions rc ON rc.tx = k.recovery_tx";

pub(crate) fn key_row(r: &Row<'_>) -> Result<KeyRow> {
    Ok(KeyRow {
        key: fixed(r.get(0)?, "public key")?,
        person: fixed(r.get(1)?, "person id")?,
        kind: key_kind(r.get(2)?)?,
        label: r.get(3)?,
        origin: r.get(4)?,
        added: fixed(r.get(5)?, "transaction id")?,
        added_by: signer_kind(r.get(6)?)?,
        added_ms: ms(r.get(10)?),
        young_until_ms: ms(r.get(11)?),
        active_from_ms: ms(r.get(7)?),
        revoked: opt_fixed(r.get(8)?, "transaction id")?,
        recovery: opt_fixed(r.get(9)?, "transaction id")?,
    })
}

pub(crate) const ASK_SELECT: &str =
    "SELECT t.id, a.person, a.validator, a.what, a.expires_ms, an.id
     FROM asks a JOIN transactions t ON t.tx = a.tx
     LEFT JOIN transactions an ON an.tx = a.answered_tx";

pub(crate) fn ask_row(r: &Row<'_>) -> Result<AskRow> {
    let what: Vec<u8> = r.get(3)?;
    Ok(AskRow {
        id: fixed(r.get(0)?, "transaction id")?,
        person: fixed(r.get(1)?, "person id")?,
        validator: r.get(2)?,
        what: borsh::from_slice::<AskWhat>(&what).map_err(|source| Error::Decode {
            what: "ask",
            source,
        })?,
        expires_ms: ms(r.get(4)?),
        answered: opt_fixed(r.get(5)?, "transaction id")?,
    })
}

pub(crate) const REQUEST_SELECT: &str =
    "SELECT t.id, q.patient, q.doctor, q.doctor_home, q.scope_read_ms,
            q.created_ms, q.expires_ms, an.id, q.answer
     FROM requests q JOIN transactions t ON t.tx = q.tx
     LEFT JOIN transactions an ON an.tx = q.answered_tx";

pub(crate) fn request_row(r: &Row<'_>) -> Result<RequestRow> {
    let answered: Option<[u8; 32]> = opt_fixed(r.get(7)?, "transaction id")?;
    let answer_code: Option<i64> = r.get(8)?;
    Ok(RequestRow {
        id: fixed(r.get(0)?, "transaction id")?,
        patient: fixed(r.get(1)?, "person id")?,
        doctor: fixed(r.get(2)?, "person id")?,
        doctor_home: r.get(3)?,
        scope: scope(r.get(4)?),
        created_ms: ms(r.get(5)?),
        expires_ms: ms(r.get(6)?),
        answered: match (answered, answer_code) {
            (Some(id), Some(code)) => Some((id, answer(code)?)),
            _ => None,
        },
    })
}

/// The select of [`GrantRow`]s, `grants` read as `$from` says.
macro_rules! grant_select {
    ($from:literal) => {
        concat!(
            "SELECT t.id, g.patient, g.doctor, g.scope_read_ms, g.attested, rq.id,
                    g.granted_ms, g.expires_ms, u.id, rv.id, g.sealer
             FROM ",
            $from,
            " JOIN transactions t ON t.tx = g.tx
             LEFT JOIN transactions rq ON rq.tx = g.request_tx
             LEFT JOIN transactions u ON u.tx = g.used_tx
             LEFT JOIN transactions rv ON rv.tx = g.revoked_tx"
        )
    };
}

pub(crate) const GRANT_SELECT: &str = grant_select!("grants g");

/// [`GRANT_SELECT`] through the index of read grants not revoked (schema 9): its condition
/// must hold `g.scope_read_ms IS NOT NULL AND g.revoked_tx IS NULL`. Named, because with no
/// statistics SQLite prefers a scan of every grant in `tx` order to a range of few.
pub(crate) const LIVE_READ_GRANT_SELECT: &str =
    grant_select!("grants g INDEXED BY grants_read_by_expiry");

pub(crate) fn grant_row(r: &Row<'_>) -> Result<GrantRow> {
    Ok(GrantRow {
        id: fixed(r.get(0)?, "transaction id")?,
        patient: fixed(r.get(1)?, "person id")?,
        doctor: fixed(r.get(2)?, "person id")?,
        scope: scope(r.get(3)?),
        attested: attested(r.get(4)?)?,
        request: opt_fixed(r.get(5)?, "transaction id")?,
        granted_ms: ms(r.get(6)?),
        expires_ms: ms(r.get(7)?),
        sealer: r.get(10)?,
        used: opt_fixed(r.get(8)?, "transaction id")?,
        revoked: opt_fixed(r.get(9)?, "transaction id")?,
    })
}

pub(crate) const RECOVERY_SELECT: &str = "SELECT t.id, v.person, v.key, v.effective_ms, c.id
     FROM recoveries v JOIN transactions t ON t.tx = v.tx
     LEFT JOIN transactions c ON c.tx = v.cancelled_tx";

pub(crate) fn recovery_row(r: &Row<'_>) -> Result<RecoveryRow> {
    Ok(RecoveryRow {
        id: fixed(r.get(0)?, "transaction id")?,
        person: fixed(r.get(1)?, "person id")?,
        key: fixed(r.get(2)?, "public key")?,
        effective_ms: ms(r.get(3)?),
        cancelled: opt_fixed(r.get(4)?, "transaction id")?,
    })
}

pub(crate) const ERASURE_SELECT: &str =
    "SELECT t.id, e.patient, tg.id, e.hospital, e.requested_by, e.requested_ms,
            an.id, e.answered_ms, e.decision, e.reason, e.until_ms
     FROM erasures e JOIN transactions t ON t.tx = e.tx
     JOIN transactions tg ON tg.tx = e.target_tx
     LEFT JOIN transactions an ON an.tx = e.answered_tx";

pub(crate) fn erasure_row(r: &Row<'_>) -> Result<ErasureRow> {
    let answered: Option<[u8; 32]> = opt_fixed(r.get(6)?, "transaction id")?;
    let answer = match (answered, r.get::<_, Option<i64>>(7)?, r.get(8)?) {
        (Some(tx), Some(at), Some(code)) => Some(ErasureAnswer {
            tx,
            block_time_ms: ms(at),
            decision: decision(code, r.get(9)?, r.get(10)?)?,
        }),
        (None, None, None) => None,
        _ => return Err(bad("erasure answer")),
    };
    Ok(ErasureRow {
        id: fixed(r.get(0)?, "transaction id")?,
        patient: fixed(r.get(1)?, "person id")?,
        target: fixed(r.get(2)?, "transaction id")?,
        hospital: r.get(3)?,
        requested_by: signer_kind(r.get(4)?)?,
        requested_ms: ms(r.get(5)?),
        answer,
    })
}

/// The applied sealed transactions: records, requests and grants, with their patient and
/// sealer, as `(id, patient, sealer)` rows found by the transaction's id (`?2`, among the
/// candidate rows `?1`).
const SEALED_BY_ID: &str = "
    SELECT t.id, r.patient, r.hospital FROM records r JOIN transactions t ON t.tx = r.tx
     WHERE t.tx IN rarray(?1) AND t.id = ?2
    UNION ALL
    SELECT t.id, q.patient, q.doctor_home FROM requests q JOIN transactions t ON t.tx = q.tx
     WHERE t.tx IN rarray(?1) AND t.id = ?2
    UNION ALL
    SELECT t.id, g.patient, g.sealer FROM grants g JOIN transactions t ON t.tx = g.tx
     WHERE t.tx IN rarray(?1) AND t.id = ?2";

/// The rows `select ... WHERE condition` finds, decoded by `decode`.
pub(crate) fn rows<T>(
    conn: &Connection,
    select: &str,
    condition: &str,
    args: &[&dyn rusqlite::ToSql],
    decode: fn(&Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(&format!("{select} WHERE {condition}"))?;
    let mut found = stmt.query(args)?;
    let mut out = Vec::new();
    while let Some(r) = found.next()? {
        out.push(decode(r)?);
    }
    Ok(out)
}

/// The row of the applied transaction `id` in `select`'s table, if any.
fn by_id<T>(
    state: &SqlState<'_>,
    select: &str,
    id: &TxId,
    decode: fn(&Row<'_>) -> Result<T>,
) -> Result<Option<T>> {
    state.applied_by_id(id, |candidates| {
        let (condition, candidates) = among(candidates, BY_ID_ONE, BY_ID);
        Ok(rows(
            state.conn,
            select,
            condition,
            &[&*candidates, &id.as_slice()],
            decode,
        )?
        .into_iter()
        .next())
    })
}

fn count(conn: &Connection, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<usize> {
    let n: i64 = conn.prepare_cached(sql)?.query_row(args, |r| r.get(0))?;
    Ok(n as usize)
}

impl StateView for SqlState<'_> {
    fn seen(&self, id: &TxId, created_ms: u64) -> Result<bool> {
        // A reader's snapshot began after the commit of any such entry it holds, and its writer
        // had cleared the flag before adding it (an older snapshot holds fewer entries); rows
        // another writer added clear it when the view catches up (`Index::forget_held`).
        let invalid_seen = match self.invalid_seen {
            Some(any) => any,
            None => {
                self.catch_up_once()?;
                !self
                    .index
                    .no_invalid_seen
                    .load(std::sync::atomic::Ordering::SeqCst)
            }
        };
        let sql = if invalid_seen {
            // Two probes, not `created_ms IN (?1, -1)`: SQLite builds an IN list into a
            // temporary B-tree at each run (a pager and a page cache opened and freed), which
            // cost more than the two seeks on every transaction decided.
            "SELECT 1 FROM seen_ids s JOIN transactions t ON t.tx = s.tx
             WHERE s.created_ms = ?1 AND s.id_prefix = ?2 AND t.id = ?3
             UNION ALL
             SELECT 1 FROM seen_ids s JOIN transactions t ON t.tx = s.tx
             WHERE s.created_ms = -1 AND s.id_prefix = ?2 AND t.id = ?3"
        } else {
            "SELECT 1 FROM seen_ids s JOIN transactions t ON t.tx = s.tx
             WHERE s.created_ms = ?1 AND s.id_prefix = ?2 AND t.id = ?3"
        };
        Ok(self.conn.prepare_cached(sql)?.exists(params![
            created_column(Some(created_ms)),
            id_prefix(id),
            id.as_slice()
        ])?)
    }

    fn person(&self, person: &PersonId) -> Result<Option<PersonRow>> {
        let held = match self.view {
            View::Writer => Some((&self.index.persons, true)),
            View::Precheck => Some((&self.index.committed_persons, true)),
            View::Snapshot => None,
        };
        self.held(held, person, || {
            Ok(rows(
                self.conn,
                PERSON_SELECT,
                "p.person = ?1",
                &[&person.as_slice()],
                person_row,
            )?
            .into_iter()
            .next())
        })
    }

    fn key(&self, key: &PublicKey) -> Result<Option<KeyRow>> {
        // A reader holds no keys (one its snapshot shows live may be revoked since); a
        // precheck reads the writer's, which it forgets before it revokes one.
        let held = match self.view {
            View::Writer => Some((&self.index.keys, true)),
            View::Precheck => {
                // Rows another writer added (another process, a file edited) would leave the
                // writer's keys out of date: catching up forgets them then (red team s53).
                self.catch_up_once()?;
                Some((&self.index.keys, false))
            }
            View::Snapshot => None,
        };
        self.held(held, key, || {
            Ok(rows(
                self.conn,
                KEY_SELECT,
                "k.key = ?1",
                &[&key.as_slice()],
                key_row,
            )?
            .into_iter()
            .next())
        })
    }

    fn keys_of(&self, person: &PersonId) -> Result<Vec<KeyRow>> {
        rows(
            self.conn,
            KEY_SELECT,
            "k.person = ?1 ORDER BY k.tx, k.key",
            &[&person.as_slice()],
            key_row,
        )
    }

    fn linked(&self, person: &PersonId, validator: u32) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM links WHERE person = ?1 AND validator = ?2")?
            .exists(params![person.as_slice(), validator])?)
    }

    fn ask(&self, id: &TxId) -> Result<Option<AskRow>> {
        by_id(self, ASK_SELECT, id, ask_row)
    }

    fn pending_asks(&self, person: &PersonId, validator: u32, at_ms: u64) -> Result<usize> {
        let candidates = self.candidates(Tag::AskPerson, person, since(at_ms, ASK_MS))?;
        count(
            self.conn,
            "SELECT COUNT(*) FROM asks WHERE tx IN rarray(?4) AND person = ?1 AND validator = ?2
             AND expires_ms > ?3 AND answered_tx IS NULL",
            &[&person.as_slice(), &validator, &(at_ms as i64), &candidates],
        )
    }

    fn request(&self, id: &TxId) -> Result<Option<RequestRow>> {
        by_id(self, REQUEST_SELECT, id, request_row)
    }

    fn pending_requests(&self, doctor: &PersonId, patient: &PersonId, at_ms: u64) -> Result<usize> {
        if self.open_requests_cover(at_ms)? {
            return count(
                self.conn,
                "SELECT COUNT(*) FROM open_requests WHERE patient = ?1 AND expires_ms > ?2
                 AND doctor = ?3",
                &[&patient.as_slice(), &(at_ms as i64), &doctor.as_slice()],
            );
        }
        let candidates = self.candidates(Tag::RequestPatient, patient, since(at_ms, REQUEST_MS))?;
        count(
            self.conn,
            "SELECT COUNT(*) FROM requests WHERE tx IN rarray(?4) AND patient = ?1
             AND expires_ms > ?2 AND answered_tx IS NULL AND doctor = ?3",
            &[
                &patient.as_slice(),
                &(at_ms as i64),
                &doctor.as_slice(),
                &candidates,
            ],
        )
    }

    fn pending_requests_from_hospital_of(
        &self,
        doctor: &PersonId,
        patient: &PersonId,
        at_ms: u64,
    ) -> Result<usize> {
        if self.open_requests_cover(at_ms)? {
            return count(
                self.conn,
                "SELECT COUNT(*) FROM open_requests WHERE patient = ?1 AND expires_ms > ?2
                 AND doctor_home = (SELECT home FROM persons WHERE person = ?3)",
                &[&patient.as_slice(), &(at_ms as i64), &doctor.as_slice()],
            );
        }
        let candidates = self.candidates(Tag::RequestPatient, patient, since(at_ms, REQUEST_MS))?;
        count(
            self.conn,
            "SELECT COUNT(*) FROM requests WHERE tx IN rarray(?4) AND patient = ?1
             AND expires_ms > ?2 AND answered_tx IS NULL
             AND doctor_home = (SELECT home FROM persons WHERE person = ?3)",
            &[
                &patient.as_slice(),
                &(at_ms as i64),
                &doctor.as_slice(),
                &candidates,
            ],
        )
    }

    fn grant(&self, id: &TxId) -> Result<Option<GrantRow>> {
        // The grants the writer wrote (a precheck reads them as the writer's keys, once caught
        // up); a query's snapshot, its own rows.
        let held = match self.view {
            View::Writer => true,
            View::Precheck => {
                self.catch_up_once()?;
                true
            }
            View::Snapshot => false,
        };
        if let Some((grant, row)) = held.then(|| self.index.grants.get(id)).flatten() {
            self.found_rows.borrow_mut().push((*id, row));
            return Ok(Some(grant));
        }
        by_id(self, GRANT_SELECT, id, grant_row)
    }

    fn pending_recovery(&self, person: &PersonId, at_ms: u64) -> Result<Option<RecoveryRow>> {
        // A recovery's wait is the chain's (`recovery_wait_ms`), unknown here: every epoch.
        let candidates = self.candidates(Tag::RecoveryPerson, person, None)?;
        Ok(rows(
            self.conn,
            RECOVERY_SELECT,
            "v.tx IN rarray(?3) AND v.person = ?1 AND v.effective_ms > ?2
             AND v.cancelled_tx IS NULL ORDER BY v.tx",
            &[&person.as_slice(), &(at_ms as i64), &candidates],
            recovery_row,
        )?
        .into_iter()
        .next())
    }

    fn sealed(&self, id: &TxId) -> Result<Option<SealedRow>> {
        self.applied_by_id(id, |candidates| {
            let mut stmt = self.conn.prepare_cached(SEALED_BY_ID)?;
            let mut found = stmt.query(params![array(candidates), id.as_slice()])?;
            let Some(r) = found.next()? else {
                return Ok(None);
            };
            Ok(Some(SealedRow {
                id: fixed(r.get(0)?, "transaction id")?,
                patient: fixed(r.get(1)?, "person id")?,
                sealer: r.get(2)?,
            }))
        })
    }

    fn erasure(&self, id: &TxId) -> Result<Option<ErasureRow>> {
        by_id(self, ERASURE_SELECT, id, erasure_row)
    }

    fn erasure_of(&self, target: &TxId) -> Result<Option<ErasureRow>> {
        let candidates = self.id_rows(target)?;
        Ok(rows(
            self.conn,
            ERASURE_SELECT,
            "tg.tx IN rarray(?1) AND tg.id = ?2 ORDER BY e.tx DESC LIMIT 1",
            &[&candidates, &target.as_slice()],
            erasure_row,
        )?
        .into_iter()
        .next())
    }
}

impl SqlState<'_> {
    /// The row of `key` as `read` reads it, through the rows `held` in memory ([`Held`]), if
    /// any, with whether to hold what `read` finds.
    fn held<K, V>(
        &self,
        held: Option<(&Held<K, V>, bool)>,
        key: &K,
        read: impl FnOnce() -> Result<Option<V>>,
    ) -> Result<Option<V>>
    where
        K: std::hash::Hash + Eq + Clone,
        V: Clone,
    {
        let Some((held, keep)) = held else {
            return read();
        };
        if let Some(row) = held.get(key) {
            return Ok(Some(row));
        }
        let row = read()?;
        if let Some(row) = row.as_ref().filter(|_| keep) {
            held.keep(key, row);
        }
        Ok(row)
    }

    /// Whether `open_requests` holds every request pending at `at_ms` (see [`OPEN_KEPT_MS`]):
    /// always for a block's rules, which count at its time, and for a precheck whose clock is
    /// not far behind the chain's.
    pub(crate) fn open_requests_cover(&self, at_ms: u64) -> Result<bool> {
        let head_ms: Option<i64> = self
            .conn
            .prepare_cached("SELECT timestamp_ms FROM blocks ORDER BY height DESC LIMIT 1")?
            .query_row([], |r| r.get(0))
            .optional()?;
        Ok(head_ms.is_none_or(|head| at_ms as i64 >= open_kept_above(head as u64)))
    }

    /// The row in `transactions` of the applied transaction `id` (the one whose effects are in
    /// the derived tables; a later duplicate or an invalid entry under the same id is
    /// rejected).
    pub(crate) fn tx_row(&self, id: &TxId) -> Result<Option<i64>> {
        let found = self
            .found_rows
            .borrow()
            .iter()
            .find(|(of, _)| of == id)
            .map(|&(_, row)| row);
        if found.is_some() {
            return Ok(found);
        }
        self.applied_by_id(id, |candidates| {
            let (sql, rows) = among(
                candidates,
                "SELECT tx FROM transactions WHERE tx = ?1 AND id = ?2 AND rejected IS NULL",
                "SELECT tx FROM transactions WHERE tx IN rarray(?1) AND id = ?2
                 AND rejected IS NULL ORDER BY tx LIMIT 1",
            );
            Ok(self
                .conn
                .prepare_cached(sql)?
                .query_row(params![rows, id.as_slice()], |r| r.get(0))
                .optional()?)
        })
    }
}
