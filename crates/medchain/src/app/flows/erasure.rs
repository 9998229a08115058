//! Erasure (docs/SECURITY.md, issue 10, §7): the patient asks, at their home, for one of their
//! records to be erased; the hospital that sealed it answers (`medchain erasure answer`),
//! erasing or refusing with a reason code the patient sees. When an erasure is applied every
//! correct validator's key service deletes the record's key; the chain keeps its metadata.
//!
//! What a hospital's operator sees to decide is metadata only (§16.20): opening a record to
//! decide would be a read without an `Access`.

use ledger::rules::ErasureRow;
use ledger::tx::{AnswerErasure, Decision, Refusal, RequestErasure, SignerKind};
use ledger::{Meta, PersonId, Queries, SignedTx, TxHeader, TxId};

use super::{Action, Content, FlowError, FlowResult, Flows, Signing, Who, date_of};
use crate::app::{Account, AppDb, Here, new_header};

/// An erasure request with the metadata of the transaction it names (never its content).
#[derive(Clone, Debug)]
pub struct ErasureView {
    pub row: ErasureRow,
    pub target: Target,
}

/// What an erasure request names, as every validator sees it (docs/SECURITY.md §2).
#[derive(Clone, Debug)]
pub struct Target {
    /// `add_record`, `request_grant` or `grant`.
    pub kind: &'static str,
    /// A record's department.
    pub department: Option<String>,
    /// The doctor of a record, request or grant.
    pub doctor: Option<PersonId>,
    pub doctor_name: Option<String>,
    /// Its block time.
    pub time_ms: u64,
}

impl ErasureView {
    /// `pending`, `erased` or `refused`.
    pub fn state(&self) -> &'static str {
        match &self.row.answer {
            None => "pending",
            Some(answer) if answer.decision == Decision::Erase => "erased",
            Some(_) => "refused",
        }
    }

    /// What the patient is told (§7.1): who is to answer or answered, how, and when.
    pub fn notice(&self, flows: &Flows) -> String {
        let hospital = flows.hospital(self.row.hospital);
        match &self.row.answer {
            None => format!(
                "waiting for {hospital}'s answer since {}",
                date_of(self.row.requested_ms)
            ),
            Some(answer) => match answer.decision {
                Decision::Erase => format!(
                    "erased at the patient's request on {}",
                    date_of(answer.block_time_ms)
                ),
                Decision::Refuse { reason, until_ms } => format!(
                    "refused by {hospital} on {}: {}{}",
                    date_of(answer.block_time_ms),
                    refusal_text(reason),
                    until_ms.map_or(String::new(), |ms| format!(", until {}", date_of(ms)))
                ),
            },
        }
    }

    /// How the request was made: in person at the patient's home `home`, or on their device.
    pub fn requested_how(&self, flows: &Flows, home: u32) -> String {
        match self.row.requested_by {
            SignerKind::Custodial => format!("requested in person at {}", flows.hospital(home)),
            _ => "requested on your device".to_string(),
        }
    }
}

/// A refusal's reason as the patient reads it (GDPR Art. 17(3)).
pub fn refusal_text(reason: Refusal) -> &'static str {
    match reason {
        Refusal::RetentionPeriod => "a legal retention period",
        Refusal::OngoingCare => "needed for your ongoing care",
        Refusal::LegalClaims => "needed for legal claims",
        Refusal::PublicHealth => "public health",
    }
}

/// `row` with the metadata of the transaction it names, read from `r`.
fn describe(r: &impl Queries, row: ErasureRow) -> ledger::Result<ErasureView> {
    let committed = r.transaction(&row.target)?;
    let (kind, department, doctor) = match committed.as_ref().map(|c| c.tx.meta()) {
        Some(Meta::AddRecord(m)) => ("add_record", Some(m.department.clone()), Some(m.doctor)),
        Some(Meta::RequestGrant(m)) => ("request_grant", None, Some(m.doctor)),
        Some(Meta::Grant(m)) => ("grant", None, Some(m.doctor)),
        _ => ("unknown", None, None),
    };
    let doctor_name = match doctor {
        Some(d) => r.person(&d)?.and_then(|p| p.name),
        None => None,
    };
    Ok(ErasureView {
        target: Target {
            kind,
            department,
            doctor,
            doctor_name,
            time_ms: committed.map_or(0, |c| c.block_time_ms),
        },
        row,
    })
}

/// The erasure requests validator `hospital` has to answer (of transactions it sealed), oldest
/// first, with their targets' metadata: `medchain erasure list`.
pub fn to_answer(r: &impl Queries, hospital: u32) -> ledger::Result<Vec<ErasureView>> {
    r.pending_erasures_for(hospital)?
        .into_iter()
        .map(|row| describe(r, row))
        .collect()
}

/// Queues this hospital's answer to erasure request `request` in `app`'s outbox, signed by
/// `sign` (the validator's key): the running validator submits it (`medchain erasure answer`;
/// the outbox is issue 9's, §5.0). Checked first on the committed chain `r`: the request is
/// pending and is this hospital's to answer.
pub fn queue_answer(
    app: &AppDb,
    r: &impl Queries,
    here: &Here,
    sign: &dyn Fn(TxHeader, Vec<u8>) -> SignedTx,
    request: TxId,
    decision: Decision,
    now_ms: u64,
) -> FlowResult<TxId> {
    let Some(row) = r.erasure(&request)? else {
        return Err(FlowError::NotFound("No such erasure request".into()));
    };
    if !row.pending() {
        return Err(FlowError::Rejected(
            ledger::rules::reason::ERASURE_NOT_PENDING.into(),
        ));
    }
    if row.hospital != here.index {
        return Err(FlowError::Denied(
            ledger::rules::reason::ERASURE_NOT_SEALER.into(),
        ));
    }
    // A hospital's own statement: it applies whenever it commits.
    let meta = Meta::AnswerErasure(AnswerErasure { request, decision });
    let signed = sign(new_header(meta, now_ms, u64::MAX), Vec::new());
    Ok(app.queue_step(&here.genesis_hash, &signed, now_ms)?)
}

impl Flows {
    /// The patient asks for their record `tx` (or a request or grant of theirs) to be erased
    /// (§7.2, §16.16): `RequestErasure`, signed
    /// with a key of their home (custodially, or a device key made at the home's page: §7.1),
    /// hence only at their home; applied before it answers.
    pub async fn request_erasure(
        &self,
        patient: &Account,
        who: Who,
        tx: TxId,
    ) -> FlowResult<Signing<TxId>> {
        let row = self.served_patient(patient).await?;
        if row.home != self.here.index {
            return Err(FlowError::ApproveAtHome {
                home: self.hospital(row.home),
            });
        }
        let person = row.person;
        // A record, or a request or grant whose purpose is sealed (§16.16).
        let sealed = self.chain(move |r| r.sealed(&tx)).await?;
        if sealed.is_none_or(|s| s.patient != person) {
            return Err(FlowError::NotFound("No such record of yours".into()));
        }
        let meta = Meta::RequestErasure(RequestErasure {
            patient: person,
            tx,
        });
        match self
            .sign_as(patient, person, who, Action::Applied, meta, Content::Empty)
            .await?
        {
            Signing::Done(signed) => Ok(Signing::Done(self.submit_and_apply(signed).await?.0)),
            Signing::NeedsSignature(view) => Ok(Signing::NeedsSignature(view)),
        }
    }

    /// The patient's erasure requests and their answers, newest first.
    pub async fn erasures(&self, patient: &Account) -> FlowResult<Vec<ErasureView>> {
        let row = self.served_patient(patient).await?;
        let person = row.person;
        self.chain(move |r| {
            r.erasures_of_patient(&person)?
                .into_iter()
                .map(|row| describe(r, row))
                .collect()
        })
        .await
    }
}
