//! Writes a decision's [`Effect`]s into the derived tables: the one place state changes, used
//! by the store when it appends a block and by verification when it replays one.
use rusqlite::{Connection, params};

use super::index::Tag;
use super::state::{
    SqlState, answer_code, attested_code, decision_columns, key_kind_code, role_code, scope_column,
    signer_kind_code,
};
use crate::rules::Effect;
use crate::tx::TxId;
use crate::{Error, Result};

/// The values of the epoch index an effect inserts (its derived row's person columns).
pub(crate) fn indexed(effect: &Effect) -> Vec<(Tag, &[u8])> {
    match effect {
        Effect::Record { patient, .. } => vec![(Tag::RecordPatient, patient.as_slice())],
        Effect::Access { patient, .. } => vec![(Tag::AccessPatient, patient.as_slice())],
        Effect::Grant(g) => vec![
            (Tag::GrantPatient, g.patient.as_slice()),
            (Tag::GrantDoctor, g.doctor.as_slice()),
        ],
        Effect::Request(q) => vec![
            (Tag::RequestPatient, q.patient.as_slice()),
            (Tag::RequestDoctor, q.doctor.as_slice()),
        ],
        Effect::Ask(a) => vec![(Tag::AskPerson, a.person.as_slice())],
        Effect::Recovery(v) => vec![(Tag::RecoveryPerson, v.person.as_slice())],
        Effect::Erasure(e) => vec![(Tag::ErasurePatient, e.patient.as_slice())],
        Effect::Person(_)
        | Effect::Key(_)
        | Effect::RevokeKey(_)
        | Effect::Link(_)
        | Effect::AnswerAsk(_)
        | Effect::AnswerRequest(..)
        | Effect::UseGrant(_)
        | Effect::RevokeGrant(_)
        | Effect::CancelRecovery(_)
        | Effect::AnswerErasure { .. } => Vec::new(),
    }
}

/// The row of transaction `id`, which an effect refers to: it was applied (a rule read it,
/// through `state`, which remembers what it found).
fn row_of(state: &SqlState<'_>, id: &TxId) -> Result<i64> {
    state.tx_row(id)?.ok_or_else(|| {
        Error::State(format!(
            "an effect names transaction {}, which is not applied",
            crate::short_hex(id)
        ))
    })
}

/// Runs `sql` with `args`, which must change exactly one row.
fn one(conn: &Connection, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<()> {
    match conn.prepare_cached(sql)?.execute(args)? {
        1 => Ok(()),
        n => Err(Error::State(format!("{n} rows changed by: {sql}"))),
    }
}

/// Writes `effects` of the transaction at row `tx` (already in `transactions`), in order,
/// through the writer's view `state` that decided them.
pub(crate) fn apply(state: &SqlState<'_>, tx: i64, effects: &[Effect]) -> Result<()> {
    let conn = state.conn;
    for effect in effects {
        match effect {
            Effect::Person(p) => one(
                conn,
                "INSERT INTO persons (person, tx, role, department, name, home)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    p.person.as_slice(),
                    tx,
                    role_code(p.role),
                    p.department,
                    p.name,
                    p.home
                ],
            )?,
            Effect::Key(k) => one(
                conn,
                "INSERT INTO keys (key, tx, person, kind, label, origin, added_by, active_from_ms,
                                   recovery_tx, added_ms, young_until_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    k.key.as_slice(),
                    tx,
                    k.person.as_slice(),
                    key_kind_code(k.kind),
                    k.label,
                    k.origin,
                    signer_kind_code(k.added_by),
                    k.active_from_ms as i64,
                    k.recovery.map(|_| tx),
                    k.added_ms as i64,
                    k.young_until_ms as i64,
                ],
            )?,
            Effect::RevokeKey(key) => {
                state.index.keys.forget(key);
                one(
                    conn,
                    "UPDATE keys SET revoked_tx = ?2 WHERE key = ?1 AND revoked_tx IS NULL",
                    params![key.as_slice(), tx],
                )?
            }
            Effect::Link(l) => one(
                conn,
                "INSERT INTO links (person, validator, tx) VALUES (?1, ?2, ?3)",
                params![l.person.as_slice(), l.validator, tx],
            )?,
            Effect::Ask(a) => one(
                conn,
                "INSERT INTO asks (tx, person, validator, what, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    tx,
                    a.person.as_slice(),
                    a.validator,
                    borsh::to_vec(&a.what).unwrap_or_default(),
                    a.expires_ms as i64
                ],
            )?,
            Effect::AnswerAsk(id) => one(
                conn,
                "UPDATE asks SET answered_tx = ?2 WHERE tx = ?1 AND answered_tx IS NULL",
                params![row_of(state, id)?, tx],
            )?,
            Effect::Request(q) => {
                one(
                    conn,
                    "INSERT INTO requests (tx, patient, doctor, doctor_home, scope_read_ms,
                                           created_ms, expires_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        tx,
                        q.patient.as_slice(),
                        q.doctor.as_slice(),
                        q.doctor_home,
                        scope_column(q.scope),
                        q.created_ms as i64,
                        q.expires_ms as i64
                    ],
                )?;
                one(
                    conn,
                    "INSERT INTO open_requests (tx, patient, doctor, doctor_home, expires_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        tx,
                        q.patient.as_slice(),
                        q.doctor.as_slice(),
                        q.doctor_home,
                        q.expires_ms as i64
                    ],
                )?;
            }
            Effect::AnswerRequest(id, answer) => {
                let request = row_of(state, id)?;
                one(
                    conn,
                    "UPDATE requests SET answered_tx = ?2, answer = ?3 WHERE tx = ?1
                     AND answered_tx IS NULL",
                    params![request, tx, answer_code(*answer)],
                )?;
                // A request is answered only while pending at the block's time, which the
                // table keeps (`state::OPEN_KEPT_MS`): its row is there.
                one(
                    conn,
                    "DELETE FROM open_requests WHERE tx = ?1",
                    params![request],
                )?;
            }
            Effect::Grant(g) => {
                one(
                    conn,
                    "INSERT INTO grants (tx, patient, doctor, scope_read_ms, attested, request_tx,
                                         granted_ms, expires_ms, sealer)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        tx,
                        g.patient.as_slice(),
                        g.doctor.as_slice(),
                        scope_column(g.scope),
                        attested_code(g.attested),
                        g.request.map(|r| row_of(state, &r)).transpose()?,
                        g.granted_ms as i64,
                        g.expires_ms as i64,
                        g.sealer
                    ],
                )?;
                // What `GRANT_SELECT` reads back from the row just written (neither used nor
                // revoked yet).
                state.index.grants.keep(&g.id, &(g.clone(), tx));
            }
            Effect::UseGrant(id) | Effect::RevokeGrant(id) => {
                // The grant's row changes: the writer's held copy is forgotten first.
                state.index.grants.forget(id);
                let sql = if matches!(effect, Effect::UseGrant(_)) {
                    "UPDATE grants SET used_tx = ?2 WHERE tx = ?1 AND used_tx IS NULL"
                } else {
                    "UPDATE grants SET revoked_tx = ?2 WHERE tx = ?1 AND revoked_tx IS NULL"
                };
                one(conn, sql, params![row_of(state, id)?, tx])?
            }
            Effect::Recovery(v) => one(
                conn,
                "INSERT INTO recoveries (tx, person, key, effective_ms) VALUES (?1, ?2, ?3, ?4)",
                params![
                    tx,
                    v.person.as_slice(),
                    v.key.as_slice(),
                    v.effective_ms as i64
                ],
            )?,
            Effect::CancelRecovery(id) => one(
                conn,
                "UPDATE recoveries SET cancelled_tx = ?2 WHERE tx = ?1 AND cancelled_tx IS NULL",
                params![row_of(state, id)?, tx],
            )?,
            Effect::Record {
                patient,
                doctor,
                grant,
                hospital,
            } => one(
                conn,
                "INSERT INTO records (tx, patient, doctor, grant_tx, hospital)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    tx,
                    patient.as_slice(),
                    doctor.as_slice(),
                    row_of(state, grant)?,
                    hospital
                ],
            )?,
            Effect::Access {
                patient,
                reader,
                serving,
                grant,
            } => one(
                conn,
                "INSERT INTO accesses (tx, patient, reader, serving, grant_tx)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    tx,
                    patient.as_slice(),
                    reader.as_slice(),
                    serving,
                    grant.map(|g| row_of(state, &g)).transpose()?
                ],
            )?,
            Effect::Erasure(e) => one(
                conn,
                "INSERT INTO erasures (tx, patient, target_tx, hospital, requested_by,
                                       requested_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    tx,
                    e.patient.as_slice(),
                    row_of(state, &e.target)?,
                    e.hospital,
                    signer_kind_code(e.requested_by),
                    e.requested_ms as i64
                ],
            )?,
            Effect::AnswerErasure {
                request,
                decision,
                at_ms,
            } => {
                let (code, reason, until_ms) = decision_columns(*decision);
                one(
                    conn,
                    "UPDATE erasures SET answered_tx = ?2, answered_ms = ?3, decision = ?4,
                                         reason = ?5, until_ms = ?6
                     WHERE tx = ?1 AND answered_tx IS NULL",
                    params![
                        row_of(state, request)?,
                        tx,
                        *at_ms as i64,
                        code,
                        reason,
                        until_ms
                    ],
                )?
            }
        }
    }
    Ok(())
}
