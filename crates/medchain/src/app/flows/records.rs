//! Records: adding one under a write grant, and reading a history, the patient's own or a
//! doctor's under a read grant, each read logged on chain before the data leaves this node
//! (docs/SECURITY.md, issue 9, §5.4, 5.5). A record is sealed by this validator before it is
//! signed, and a history is opened only once the read's access entry is applied here, from one
//! snapshot of the chain (issue 10, §1, §6).

use std::collections::HashMap;

use ledger::tx::{Access, AddRecord, Attested, RecordBody, Role as ChainRole, Scope, SignerKind};
use ledger::{Meta, PersonId, Queries, SignedTx, TxId, TxStatus};
use zeroize::Zeroizing;

use super::sealed::{Readable, ToOpen};
use super::{Action, Content, FlowError, FlowResult, Flows, Signing, Who};
use crate::app::{Account, CodeError, new_header};

/// A record is refused when less than this is left of its grant by this node's clock: the
/// batch window (6 s) plus the block-time tolerance (2 s) and a margin, so that a record
/// acknowledged here is not lost to expiry unless a primary delays it on purpose.
pub const GRANT_MARGIN_MS: u64 = 10_000;

/// Which write grant a record uses.
pub enum GrantRef {
    /// The in-person code drawn here (the seed's `otp`).
    Code(Zeroizing<String>),
    /// A grant on chain, by id (remote grants).
    Id(TxId),
}

/// What `add_record` needs besides the doctor.
pub struct RecordInput {
    /// A patient login here, or 32 hex digits of a person id.
    pub patient: String,
    pub grant: GrantRef,
    /// Must be the doctor's own if given.
    pub department: Option<String>,
    pub body: RecordBody,
}

/// A record durable at this validator.
#[derive(Clone, Debug)]
pub struct AddedRecord {
    pub tx: TxId,
    pub grant: TxId,
}

/// A record as a reader sees it, with who signed it and how.
#[derive(Clone, Debug)]
pub struct RecordView {
    pub tx: TxId,
    pub height: u64,
    /// Its block's time.
    pub time_ms: u64,
    pub doctor: PersonId,
    /// The doctor's login at this hospital, if any.
    pub doctor_login: Option<String>,
    pub doctor_name: Option<String>,
    pub department: String,
    /// Its content, if it opens here; else why not (docs/SECURITY.md, issue 10, §6.2).
    pub content: Readable<RecordBody>,
    pub grant: TxId,
    /// How the grant was given, on chain.
    pub attested: Option<Attested>,
    pub signer: SignerKind,
    /// The signing key's origin (a custodial key's home, a device key's page).
    pub origin: Option<u32>,
}

/// One read of a patient's records, from the chain's access log.
#[derive(Clone, Debug)]
pub struct AccessView {
    pub tx: TxId,
    pub height: u64,
    pub time_ms: u64,
    pub reader: PersonId,
    pub reader_login: Option<String>,
    pub reader_role: Option<ChainRole>,
    pub reader_name: Option<String>,
    /// The hospital that served the read.
    pub serving: u32,
    pub grant: Option<TxId>,
}

impl Flows {
    /// A record by `doctor`, at their home, for their own department, under a write grant
    /// (§5.4). The grant is checked by this node's clock, reserved here, and the record is
    /// durable here once this returns.
    pub async fn add_record(
        &self,
        doctor: &Account,
        who: Who,
        input: RecordInput,
    ) -> FlowResult<Signing<AddedRecord>> {
        let doctor_row = self.home_doctor(doctor).await?;
        let own = doctor_row.department.clone().unwrap_or_default();
        if let Some(department) = &input.department
            && department.trim() != own
        {
            return Err(FlowError::Department { own });
        }
        let Some((patient, _)) = self.resolve_patient(&input.patient).await? else {
            return Err(CodeError::ExpiredOrInvalid.into());
        };
        let doctor_person = doctor_row.person;
        let grant = match input.grant {
            GrantRef::Code(code) => {
                let now = self.now_ms();
                self.store(move |app, _| app.grant_of_code(&patient, &doctor_person, &code, now))
                    .await??
            }
            GrantRef::Id(id) => id,
        };
        self.usable_write_grant(grant, patient, doctor_person)
            .await?;
        let meta = Meta::AddRecord(AddRecord {
            patient,
            doctor: doctor_person,
            department: own,
            grant,
        });
        match self
            .sign_as(
                doctor,
                doctor_person,
                who,
                Action::AddRecord,
                meta,
                Content::Record(input.body),
            )
            .await?
        {
            Signing::Done(tx) => Ok(Signing::Done(self.submit_record(tx).await?)),
            Signing::NeedsSignature(view) => Ok(Signing::NeedsSignature(view)),
        }
    }

    /// The seed's checks of a write grant, by this node's clock and reservations: one for
    /// this pair, not used, not held by a record pending here, not revoked, at least
    /// [`GRANT_MARGIN_MS`] left.
    pub(super) async fn usable_write_grant(
        &self,
        grant: TxId,
        patient: PersonId,
        doctor: PersonId,
    ) -> FlowResult<()> {
        let row = self.chain(move |r| r.grant(&grant)).await?;
        let Some(row) = row else {
            return Err(CodeError::InvalidCode.into());
        };
        if row.scope != Scope::Write || row.patient != patient || row.doctor != doctor {
            return Err(CodeError::InvalidCode.into());
        }
        if row.used.is_some() {
            return Err(CodeError::AlreadyUsed.into());
        }
        if let Some(holder) = self
            .store(move |app, _| app.grant_reservation(&grant))
            .await?
        {
            if self.reservation_is_over(holder).await? {
                self.store(move |app, _| app.release_grant(&grant, &holder))
                    .await?;
            } else {
                return Err(CodeError::AlreadyUsed.into());
            }
        }
        if row.revoked.is_some() || self.now_ms().saturating_add(GRANT_MARGIN_MS) >= row.expires_ms
        {
            return Err(CodeError::ExpiredOrInvalid.into());
        }
        Ok(())
    }

    /// Whether the record `holder` that reserved a grant here was rejected on chain (applied,
    /// it has used the grant up; pending, it holds it).
    async fn reservation_is_over(&self, holder: TxId) -> FlowResult<bool> {
        let status = self.chain(move |r| r.tx_status(&holder)).await?;
        Ok(matches!(
            status,
            TxStatus::Committed {
                rejected: Some(_),
                ..
            }
        ))
    }

    /// Reserves the record's grant and submits it; the reservation is released if it cannot
    /// be submitted.
    pub(super) async fn submit_record(&self, tx: SignedTx) -> FlowResult<AddedRecord> {
        let Meta::AddRecord(meta) = tx.meta().clone() else {
            return Err(FlowError::Invalid("not a record".into()));
        };
        let id = tx.id(&self.here.genesis_hash);
        let (grant, now) = (meta.grant, self.now_ms());
        if !self
            .store(move |app, _| app.reserve_grant(&grant, &id, now))
            .await?
        {
            return Err(CodeError::AlreadyUsed.into());
        }
        match self.submit(tx).await {
            Ok(tx) => Ok(AddedRecord { tx, grant }),
            Err(e) => {
                if let Err(release) = self
                    .store(move |app, _| app.release_grant(&grant, &id))
                    .await
                {
                    tracing::warn!(error = %release, "a grant reservation could not be released");
                }
                Err(e)
            }
        }
    }

    /// A patient reads their own records here (§5.5): this hospital signs `Access` (it served
    /// the read), and the records are opened once that entry is applied here, so that every
    /// erasure committed before the read is applied first (docs/SECURITY.md, issue 10, §6.1).
    /// It cannot be rejected: this hospital is the patient's home or linked, and links are
    /// never removed.
    pub async fn read_own(&self, patient: &Account) -> FlowResult<(TxId, Vec<RecordView>)> {
        let row = self.served_patient(patient).await?;
        let meta = Meta::Access(Access {
            patient: row.person,
            reader: row.person,
            serving: self.here.index,
            grant: None,
        });
        let tx = self
            .node
            .sign_as_validator(new_header(meta, self.now_ms(), u64::MAX), Vec::new());
        let (access, _) = self.submit_and_apply(tx).await?;
        Ok((access, self.records(row.person).await?))
    }

    /// A doctor reads a patient's records under a live read grant, at the doctor's home
    /// (§5.5): the records are opened only once the access entry is applied on chain; if the
    /// chain rejected it (the grant was revoked or expired first), nothing is served.
    pub async fn read_under_grant(
        &self,
        doctor: &Account,
        patient: &str,
    ) -> FlowResult<(TxId, Vec<RecordView>)> {
        let doctor_row = self.home_doctor(doctor).await?;
        let (patient, _) = self
            .resolve_patient(patient)
            .await?
            .ok_or_else(|| FlowError::NotFound("No such patient".into()))?;
        let (doctor_person, now) = (doctor_row.person, self.now_ms());
        let grant = self
            .chain(move |r| r.grants_of_doctor(&doctor_person, now))
            .await?
            .into_iter()
            .find(|g| {
                g.patient == patient && matches!(g.scope, Scope::Read { .. }) && g.live_at(now)
            })
            .ok_or_else(|| FlowError::Denied("no live read grant".into()))?;
        let meta = Meta::Access(Access {
            patient,
            reader: doctor_person,
            serving: self.here.index,
            grant: Some(grant.id),
        });
        let tx = self
            .node
            .sign_as_validator(new_header(meta, now, u64::MAX), Vec::new());
        match self.submit_and_apply(tx).await {
            Ok((access, _)) => Ok((access, self.records(patient).await?)),
            Err(FlowError::Rejected(why)) => Err(FlowError::Denied(why)),
            Err(e) => Err(e),
        }
    }

    /// A patient's committed records, oldest first, with who signed each, read from one
    /// snapshot of the chain and opened at its height (§16.19). Callers serve them only
    /// after the read's own `Access` is applied (§6.1).
    async fn records(&self, patient: PersonId) -> FlowResult<Vec<RecordView>> {
        let (height, rows) = self
            .snapshot(move |r| {
                let mut out = Vec::new();
                for entry in r.records_of(&patient)? {
                    let attested = r.grant(&entry.grant)?.map(|g| g.attested);
                    let doctor = r.person(&entry.doctor)?;
                    out.push((entry, attested, doctor));
                }
                Ok(out)
            })
            .await?;
        let sealed = rows
            .iter()
            .map(|(entry, _, _)| ToOpen {
                header: entry.header.clone(),
                body: entry.body.clone(),
                sealer: entry.hospital,
            })
            .collect();
        let opened = self
            .open_sealed(height, sealed, |plain| RecordBody::from_bytes(plain).ok())
            .await?;
        let mut logins = Logins::default();
        let mut views = Vec::with_capacity(rows.len());
        for ((entry, attested, doctor), content) in rows.into_iter().zip(opened) {
            // The chain dates an erasure, and decides it: a record erased on chain shows no
            // content even if a key is still held for it (docs/SECURITY.md §5.6).
            let content = match (content, &entry.erased) {
                (_, Some(erased)) => Readable::Erased {
                    on_ms: Some(erased.block_time_ms),
                },
                (content, _) => content,
            };
            views.push(RecordView {
                tx: entry.tx_id,
                height: entry.height,
                time_ms: entry.block_time_ms,
                doctor: entry.doctor,
                doctor_login: logins.of(self, entry.doctor).await?,
                doctor_name: doctor.and_then(|d| d.name),
                department: entry.department,
                content,
                grant: entry.grant,
                attested,
                signer: entry.signer.kind(),
                origin: entry.origin,
            });
        }
        Ok(views)
    }

    /// Who read a patient's records and where, newest first.
    pub async fn access_log(&self, patient: &Account) -> FlowResult<Vec<AccessView>> {
        let Some(person) = patient.person else {
            return Ok(Vec::new());
        };
        let rows = self
            .chain(move |r| {
                let mut out = Vec::new();
                for entry in r.accesses_of(&person)? {
                    let reader = r.person(&entry.reader)?;
                    out.push((entry, reader));
                }
                Ok(out)
            })
            .await?;
        let mut logins = Logins::default();
        let mut views = Vec::with_capacity(rows.len());
        for (entry, reader) in rows.into_iter().rev() {
            views.push(AccessView {
                tx: entry.tx_id,
                height: entry.height,
                time_ms: entry.block_time_ms,
                reader: entry.reader,
                reader_login: logins.of(self, entry.reader).await?,
                reader_role: reader.as_ref().map(|p| p.role),
                reader_name: reader.and_then(|p| p.name),
                serving: entry.serving,
                grant: entry.grant,
            });
        }
        Ok(views)
    }
}

/// The login at this hospital of each person named, looked up once.
#[derive(Default)]
pub(super) struct Logins(HashMap<PersonId, Option<String>>);

impl Logins {
    pub(super) async fn of(
        &mut self,
        flows: &Flows,
        person: PersonId,
    ) -> FlowResult<Option<String>> {
        if let Some(login) = self.0.get(&person) {
            return Ok(login.clone());
        }
        let login = flows
            .store(move |app, _| app.account_of_person(&person))
            .await?
            .map(|a| a.id);
        self.0.insert(person, login.clone());
        Ok(login)
    }
}
