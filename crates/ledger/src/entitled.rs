//! Who is entitled to a sealed transaction's data key (docs/SECURITY.md, "Confidential
//! records", §4.1), as a function of the committed chain and nothing else: no login and no
//! handler grants a key.
//!
//! | sealed kind | entitled while applied and not erased |
//! |---|---|
//! | `AddRecord` | the sealer; the patient's home; the home of every doctor holding a read grant of this patient that is live now |
//! | `RequestGrant` | the sealer; the patient's home |
//! | `Grant` | the sealer; the patient's home; the doctor's home |
//!
//! The first three, the [`Parties`], never change once the transaction is on chain (a person's
//! home and a key's origin are fixed), so a node keeps them in memory ([`parties_with`] takes
//! its caches). A grantee's entitlement changes with the clock and the chain
//! ([`read_grant_live`]). This module also reads what the node's key service needs from a
//! block it missed ([`applied_block`]): the same entries and verdicts the runtime hands it.
use rusqlite::OptionalExtension;

use crate::store::Queries;
use crate::tx::{Meta, PersonId, PublicKey, Scope, SignedTx, Signer, TxHeader, TxId};
use crate::{Error, Result, rules};

/// The validators entitled to a sealed transaction other than as grantees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parties {
    /// The validator that built the envelope and drew the data key: the origin of the signing
    /// key (a custodial key's home, a device key's page).
    pub sealer: u32,
    /// The patient's home: the one distributor of the patient's records to grantees (§5.2).
    pub patient_home: u32,
    /// The doctor's home (for `AddRecord` and `RequestGrant` also the sealer: a doctor's keys
    /// are all home-origin).
    pub doctor_home: u32,
}

impl Parties {
    /// Whether `validator` is one of them.
    pub fn includes(&self, validator: u32) -> bool {
        self.sealer == validator || self.patient_home == validator || self.doctor_home == validator
    }
}

/// The parties of `header`'s transaction, with a person's home and a key's origin looked up
/// through `home_of` and `origin_of` (a node's caches of what never changes once on chain).
/// `None` for a kind that is not sealed, or a person or key the chain does not know (such a
/// transaction is never applied).
pub fn parties_with(
    header: &TxHeader,
    home_of: &mut dyn FnMut(&PersonId) -> Result<Option<u32>>,
    origin_of: &mut dyn FnMut(&PublicKey) -> Result<Option<u32>>,
) -> Result<Option<Parties>> {
    let (patient, doctor) = match &header.meta {
        Meta::AddRecord(m) => (&m.patient, &m.doctor),
        Meta::RequestGrant(m) => (&m.patient, &m.doctor),
        Meta::Grant(m) => (&m.patient, &m.doctor),
        _ => return Ok(None),
    };
    let sealer = match &header.signer {
        Signer::Validator { index } => Some(*index),
        Signer::Device { key, .. } | Signer::Custodial { key, .. } => origin_of(key)?,
    };
    let (Some(sealer), Some(patient_home), Some(doctor_home)) =
        (sealer, home_of(patient)?, home_of(doctor)?)
    else {
        return Ok(None);
    };
    Ok(Some(Parties {
        sealer,
        patient_home,
        doctor_home,
    }))
}

/// [`parties_with`] reading the chain directly.
pub fn parties<Q: Queries + ?Sized>(queries: &Q, header: &TxHeader) -> Result<Option<Parties>> {
    parties_with(
        header,
        &mut |person| Ok(queries.person(person)?.map(|row| row.home)),
        &mut |key| Ok(queries.key(key)?.map(|row| row.origin)),
    )
}

/// Whether a read grant is live now: not revoked, and `T < expires_ms` at the latest applied
/// block time `block_time_ms` and by the node's clock `now_ms` (a chain with no new block does
/// not keep a grant alive).
pub fn read_grant_live(grant: &rules::GrantRow, block_time_ms: u64, now_ms: u64) -> bool {
    matches!(grant.scope, Scope::Read { .. })
        && grant.revoked.is_none()
        && block_time_ms < grant.expires_ms
        && now_ms < grant.expires_ms
}

/// [`read_grants_of_home`]'s condition (`?1` the home, `?2` the end after). Each live grant's
/// patient is looked up by key: `persons` has no index by home, and a list of the home's
/// persons would read them all (red team s59).
pub(crate) const LIVE_READ_GRANTS_OF_HOME: &str =
    "g.scope_read_ms IS NOT NULL AND g.revoked_tx IS NULL AND g.expires_ms > ?2
     AND EXISTS (SELECT 1 FROM persons p WHERE p.person = g.patient AND p.home = ?1)
     ORDER BY g.tx";

/// The read grants of patients whose home is `home`, not revoked and ending after
/// `after_ms`, oldest first: what a home's key service keeps in memory to answer grantees
/// (§5.3).
pub fn read_grants_of_home<Q: Queries + ?Sized>(
    queries: &Q,
    home: u32,
    after_ms: u64,
) -> Result<Vec<rules::GrantRow>> {
    crate::store::state::rows(
        queries.connection(),
        crate::store::state::LIVE_READ_GRANT_SELECT,
        LIVE_READ_GRANTS_OF_HOME,
        &[&home, &(after_ms.min(i64::MAX as u64) as i64)],
        crate::store::state::grant_row,
    )
}

/// Every transaction erased on chain (an accepted erasure names it), oldest erasure first:
/// what a key service keeps in memory to answer `Erased` without a read per asked id (§5.3).
pub fn erased_transactions<Q: Queries + ?Sized>(queries: &Q) -> Result<Vec<TxId>> {
    Ok(crate::store::state::rows(
        queries.connection(),
        crate::store::state::ERASURE_SELECT,
        "e.answered_tx IS NOT NULL ORDER BY e.answered_tx",
        &[],
        crate::store::state::erasure_row,
    )?
    .into_iter()
    .filter(|row| row.erased().is_some())
    .map(|row| row.target)
    .collect())
}

/// Whether transaction `tx` is erased on chain, and at which height: that of the
/// `AnswerErasure` that erased it (docs/SECURITY.md, "Confidential records", §7). From then on
/// nobody is entitled to its key.
pub fn erased<Q: Queries + ?Sized>(queries: &Q, tx: &TxId) -> Result<Option<u64>> {
    match queries
        .erasure_of(tx)?
        .as_ref()
        .and_then(rules::ErasureRow::erased)
    {
        Some(answer) => queries.transaction_height(&answer.tx),
        None => Ok(None),
    }
}

/// What the chain decided for one entry of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryVerdict {
    Applied,
    /// Rejected because its id was on chain already: it says nothing about the first copy.
    Duplicate,
    /// Rejected by a rule or the edge check.
    Rejected,
}

impl EntryVerdict {
    /// The verdict stored as the entry's `rejected` reason (`None`: applied).
    pub fn of(rejected: Option<&str>) -> Self {
        match rejected {
            None => EntryVerdict::Applied,
            Some(reason) if reason == rules::reason::DUPLICATE => EntryVerdict::Duplicate,
            Some(_) => EntryVerdict::Rejected,
        }
    }
}

/// One entry of an applied block, as a node's key service reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedEntry {
    pub id: TxId,
    /// `None` for an entry that carries no valid transaction.
    pub header: Option<TxHeader>,
    pub verdict: EntryVerdict,
}

/// An applied block's entries, in order, with its time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedBlock {
    pub height: u64,
    pub time_ms: u64,
    pub entries: Vec<AppliedEntry>,
}

/// The block at `height` as applied: every entry with its header and verdict, read in one go
/// (the runtime hands the key service the same without reading; this is for the blocks it
/// missed, and for a start).
pub fn applied_block<Q: Queries + ?Sized>(
    queries: &Q,
    height: u64,
) -> Result<Option<AppliedBlock>> {
    let conn = queries.connection();
    let time_ms: Option<i64> = conn
        .prepare_cached("SELECT timestamp_ms FROM blocks WHERE height = ?1")?
        .query_row([height as i64], |r| r.get(0))
        .optional()?;
    let Some(time_ms) = time_ms else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT t.id, bd.body, t.rejected FROM transactions t
         JOIN bodies bd ON bd.b = t.body_row WHERE t.height = ?1 ORDER BY t.idx",
    )?;
    let mut rows = stmt.query([height as i64])?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next()? {
        let id: Vec<u8> = row.get(0)?;
        let id: TxId = id
            .try_into()
            .map_err(|_| Error::State("a transaction id is not 32 bytes".into()))?;
        let body: Vec<u8> = row.get(1)?;
        let rejected: Option<String> = row.get(2)?;
        entries.push(AppliedEntry {
            id,
            header: SignedTx::from_bytes(&body).ok().map(|tx| tx.header),
            verdict: EntryVerdict::of(rejected.as_deref()),
        });
    }
    Ok(Some(AppliedBlock {
        height,
        time_ms: time_ms as u64,
        entries,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tx::{AddRecord, Attested, Grant, RequestGrant};

    fn header(meta: Meta, sealer: u8) -> TxHeader {
        TxHeader {
            meta,
            signer: Signer::Custodial {
                person: [9; 16],
                key: [sealer; 32],
            },
            created_ms: 1,
            not_after_ms: 2,
            nonce: [0; 16],
            body_hash: [0; 32],
        }
    }

    #[test]
    fn parties_of_each_sealed_kind() {
        // In this lookup a person's home, and a key's origin, is its first byte.
        let mut home_of = |person: &PersonId| Ok(Some(u32::from(person[0])));
        let mut origin_of = |key: &PublicKey| Ok(Some(u32::from(key[0])));
        let (patient, doctor) = ([1; 16], [2; 16]);
        let record = Meta::AddRecord(AddRecord {
            patient,
            doctor,
            department: "Oncology".into(),
            grant: [0; 32],
        });
        let request = Meta::RequestGrant(RequestGrant {
            patient,
            doctor,
            scope: Scope::Write,
        });
        let grant = Meta::Grant(Grant {
            patient,
            doctor,
            scope: Scope::Read {
                duration_ms: 60_000,
            },
            request: None,
            attested: Attested::Device,
        });
        for (meta, sealer) in [(record, 2), (request, 2), (grant, 3)] {
            let parties = parties_with(&header(meta, sealer), &mut home_of, &mut origin_of)
                .unwrap()
                .unwrap();
            assert_eq!(
                parties,
                Parties {
                    sealer: u32::from(sealer),
                    patient_home: 1,
                    doctor_home: 2
                }
            );
            assert!(parties.includes(1) && parties.includes(2) && !parties.includes(0));
        }
        let access = Meta::Access(crate::tx::Access {
            patient,
            reader: patient,
            serving: 1,
            grant: None,
        });
        assert_eq!(
            parties_with(&header(access, 1), &mut home_of, &mut origin_of).unwrap(),
            None,
            "a kind without content has no parties"
        );
    }

    #[test]
    fn a_grant_is_live_only_before_its_end_by_the_chain_and_by_the_clock() {
        let grant = rules::GrantRow {
            id: [1; 32],
            patient: [1; 16],
            doctor: [2; 16],
            scope: Scope::Read {
                duration_ms: 60_000,
            },
            attested: Attested::Device,
            request: None,
            granted_ms: 1_000,
            expires_ms: 61_000,
            used: None,
            revoked: None,
            sealer: 1,
        };
        assert!(read_grant_live(&grant, 1_000, 60_999));
        assert!(!read_grant_live(&grant, 61_000, 2_000), "by the chain");
        assert!(!read_grant_live(&grant, 2_000, 61_000), "by the clock");
        let revoked = rules::GrantRow {
            revoked: Some([3; 32]),
            ..grant.clone()
        };
        assert!(!read_grant_live(&revoked, 1_000, 1_000));
        let write = rules::GrantRow {
            scope: Scope::Write,
            ..grant
        };
        assert!(!read_grant_live(&write, 1_000, 1_000));
    }
}
