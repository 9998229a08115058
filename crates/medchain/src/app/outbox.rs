//! The outbox: chain steps that a command queues (`medchain user add`, `medchain erasure
//! answer`, `--demo`), kept as the signed transaction itself (docs/SECURITY.md, issue 9, §5.0).
//!
//! A step is signed once (with `not_after_ms = u64::MAX`, so that it applies whenever it
//! commits) and its bytes are written to `app.db` (fsynced) before anything is submitted; the
//! running node submits those same bytes, and again after a restart (a duplicate is harmless:
//! the id is fixed). A row is done when that id is applied on chain, failed (with the reason)
//! when the chain or admission rejects it, never "because the person exists". A row may wait
//! for another (`after`): a link is submitted only once the enrollment it needs is applied.

use ledger::{Hash, SignedTx, TxId};
use rusqlite::{OptionalExtension, params};

use super::db::Cached;
use super::{AppDb, AppError, from_sql_ms, to_sql_ms};

/// Where an outbox row stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxState {
    /// Signed and stored; not yet accepted by the node.
    Queued,
    /// Durable at the node; waiting for its block.
    Submitted,
    /// Applied on chain.
    Done,
    /// Rejected (by admission or by the chain); `reason` says why.
    Failed,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Queued => "queued",
            OutboxState::Submitted => "submitted",
            OutboxState::Done => "done",
            OutboxState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => OutboxState::Queued,
            "submitted" => OutboxState::Submitted,
            "done" => OutboxState::Done,
            "failed" => OutboxState::Failed,
            _ => return None,
        })
    }
}

/// One queued chain step.
#[derive(Clone, Debug)]
pub struct OutboxRow {
    pub id: i64,
    pub tx_id: TxId,
    /// The transaction's kind (`enroll`, `link`, ...).
    pub kind: String,
    /// The login it is for, if any.
    pub account: Option<String>,
    pub tx: SignedTx,
    /// The row that must be done before this one is submitted.
    pub after: Option<i64>,
    pub state: OutboxState,
    pub reason: Option<String>,
    /// The height of the block that applied (or rejected) it.
    pub height: Option<u64>,
    pub created_ms: u64,
    pub submitted_ms: Option<u64>,
}

const COLUMNS: &str = "id, tx_id, kind, account, signed, after, state, reason, height, \
     created_ms, submitted_ms";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<OutboxRow>> {
    let tx_id: Vec<u8> = r.get(1)?;
    let signed: Vec<u8> = r.get(4)?;
    let state: String = r.get(6)?;
    let (Ok(tx_id), Ok(tx), Some(state)) = (
        TxId::try_from(tx_id.as_slice()),
        SignedTx::from_bytes(&signed),
        OutboxState::parse(&state),
    ) else {
        return Ok(None);
    };
    Ok(Some(OutboxRow {
        id: r.get(0)?,
        tx_id,
        kind: r.get(2)?,
        account: r.get(3)?,
        tx,
        after: r.get(5)?,
        state,
        reason: r.get(7)?,
        height: r.get::<_, Option<i64>>(8)?.map(|h| h.max(0) as u64),
        created_ms: from_sql_ms(r.get(9)?),
        submitted_ms: r.get::<_, Option<i64>>(10)?.map(from_sql_ms),
    }))
}

impl AppDb {
    /// Queues the signed step `signed` in the write transaction `tx`; returns the row's id.
    pub(crate) fn queue_in(
        tx: &rusqlite::Connection,
        genesis_hash: &Hash,
        signed: &SignedTx,
        account: Option<&str>,
        after: Option<i64>,
        now_ms: u64,
    ) -> Result<i64, AppError> {
        tx.exec(
            "INSERT INTO outbox(tx_id, kind, account, signed, after, state, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6)",
            params![
                &signed.id(genesis_hash)[..],
                signed.meta().kind(),
                account,
                signed.to_bytes(),
                after,
                to_sql_ms(now_ms)
            ],
        )?;
        Ok(tx.last_insert_rowid())
    }

    /// Queues one signed step of this hospital's own (`medchain erasure answer`'s answer):
    /// stored (fsynced) before anything is submitted; the running validator submits it.
    /// Returns its transaction id.
    pub fn queue_step(
        &self,
        genesis_hash: &Hash,
        signed: &SignedTx,
        now_ms: u64,
    ) -> Result<TxId, AppError> {
        self.db
            .write(|tx| Self::queue_in(tx, genesis_hash, signed, None, None, now_ms))?;
        Ok(signed.id(genesis_hash))
    }

    fn outbox_where(
        &self,
        condition: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<OutboxRow>, AppError> {
        self.db.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM outbox WHERE {condition} ORDER BY id"
            ))?;
            let rows = st.query_map(params, row)?;
            let mut out = Vec::new();
            for r in rows {
                out.extend(r?);
            }
            Ok(out)
        })
    }

    /// Every row, oldest first.
    pub fn outbox(&self) -> Result<Vec<OutboxRow>, AppError> {
        self.outbox_where("1", [])
    }

    /// One row.
    pub fn outbox_row(&self, id: i64) -> Result<Option<OutboxRow>, AppError> {
        Ok(self.outbox_where("id = ?1", [id])?.into_iter().next())
    }

    /// The row of transaction `tx_id`, if queued here.
    pub fn outbox_row_of(&self, tx_id: &TxId) -> Result<Option<OutboxRow>, AppError> {
        Ok(self
            .outbox_where("tx_id = ?1", [&tx_id[..]])?
            .into_iter()
            .next())
    }

    /// Rows to work on: queued ones whose `after` is done (to submit), and submitted ones (to
    /// watch), oldest first.
    pub fn outbox_due(&self) -> Result<Vec<OutboxRow>, AppError> {
        self.outbox_where(
            "state = 'submitted' OR (state = 'queued' AND (after IS NULL OR after IN
                 (SELECT id FROM outbox WHERE state = 'done')))",
            [],
        )
    }

    /// Rows neither done nor failed (queued, or submitted and waiting for their block).
    pub fn outbox_open(&self) -> Result<usize, AppError> {
        self.db.read(|c| {
            Ok(c.row(
                "SELECT COUNT(*) FROM outbox WHERE state IN ('queued', 'submitted')",
                [],
                |r| r.get::<_, i64>(0),
            )? as usize)
        })
    }

    /// Records a row's new state (and the reason or height that goes with it).
    pub fn outbox_mark(
        &self,
        id: i64,
        state: OutboxState,
        reason: Option<&str>,
        height: Option<u64>,
        now_ms: u64,
    ) -> Result<(), AppError> {
        self.db.write(|tx| {
            tx.exec(
                "UPDATE outbox SET state = ?2, reason = ?3, height = COALESCE(?4, height),
                     submitted_ms = CASE WHEN ?2 = 'submitted' THEN ?5 ELSE submitted_ms END
                 WHERE id = ?1",
                params![
                    id,
                    state.as_str(),
                    reason,
                    height.map(|h| h as i64),
                    to_sql_ms(now_ms)
                ],
            )?;
            // A row that failed fails the rows waiting for it.
            if state == OutboxState::Failed {
                tx.exec(
                    "UPDATE outbox SET state = 'failed', reason = 'an earlier step failed: ' || ?2
                     WHERE after = ?1 AND state = 'queued'",
                    params![id, reason.unwrap_or("")],
                )?;
            }
            Ok(())
        })
    }

    /// After a restart of the node, every submitted row is submitted again (its bytes are the
    /// same, so a copy already durable or on chain changes nothing).
    pub fn outbox_resubmit_all(&self) -> Result<usize, AppError> {
        self.db.write(|tx| {
            Ok(tx.exec(
                "UPDATE outbox SET state = 'queued' WHERE state = 'submitted'",
                [],
            )?)
        })
    }

    /// The outbox row that enrolled `account`, if any.
    pub fn enrollment_of(&self, account: &str) -> Result<Option<OutboxRow>, AppError> {
        let id: Option<i64> = self.db.read(|c| {
            Ok(c.row(
                "SELECT id FROM outbox WHERE account = ?1 AND kind = 'enroll'
                 ORDER BY id DESC LIMIT 1",
                [account],
                |r| r.get(0),
            )
            .optional()?)
        })?;
        id.map_or(Ok(None), |id| self.outbox_row(id))
    }
}
