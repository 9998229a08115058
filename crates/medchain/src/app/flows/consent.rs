//! Grants: in person at the patient's home (the seed's `request_consent`), remote requests and
//! the patient's answer, revocation (docs/SECURITY.md, issue 9, §5.2, 5.3, 5.6).

use ledger::rules::{GrantRow, RequestRow};
use ledger::tx::{Attested, Grant, PurposeBody, RequestGrant, Revoke, Scope};
use ledger::{Meta, PersonId, Queries, SignedTx, TxId};

use super::records::Logins;
use super::sealed::{Readable, ReaderRole, ToOpen};
use super::{Action, Content, FlowError, FlowResult, Flows, Signing, Who, grant_expiry};
use crate::app::{Account, IssuedCode};

/// An in-person grant applied on chain.
#[derive(Debug)]
pub struct InPersonGrant {
    pub grant: TxId,
    pub scope: Scope,
    /// The grant's expiry on chain: its block's time plus its length.
    pub expires_ms: u64,
    /// A write grant's code, shown once.
    pub code: Option<IssuedCode>,
}

/// A grant with the names to show.
#[derive(Clone, Debug)]
pub struct GrantInfo {
    pub row: GrantRow,
    pub patient_login: Option<String>,
    pub doctor_login: Option<String>,
    pub doctor_name: Option<String>,
    pub department: Option<String>,
    /// For a doctor's live read grant, at their home: how the keys of the patient's records
    /// stand here.
    pub keys: Option<GrantKeys>,
}

/// How the keys of a read grant's patient's records stand at the grantee's hospital
/// (docs/SECURITY.md, "Confidential records", §5.4, §13), from its key service's memory: no
/// record is opened to count them (that would be a read without an `Access`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantKeys {
    /// Records of the patient whose keys this hospital holds.
    pub held: u64,
    /// Records of the patient whose keys it waits for.
    pub waiting: u64,
    /// The hospital asked for the record that has waited longest; when none waits, the
    /// patient's home (the one that hands a history to grantees, §5.2).
    pub from: u32,
    /// Since when (ms) the longest-waiting record has waited; `None` when none waits.
    pub since_ms: Option<u64>,
}

/// A grant or a request, by id.
#[derive(Clone, Debug)]
pub enum Consent {
    Grant(GrantRow),
    Request(RequestRow),
}

/// A request waiting for the patient's answer, as the patient sees it.
#[derive(Clone, Debug)]
pub struct PendingRequest {
    pub row: RequestRow,
    /// The doctor's login here, if they have one.
    pub doctor_login: Option<String>,
    pub doctor_name: Option<String>,
    pub department: Option<String>,
    /// The purpose, or the notice of why it does not open here.
    pub purpose: String,
    /// Whether the purpose opens here: a request whose purpose does not is approved at the
    /// patient's home (docs/SECURITY.md §16.15).
    pub purpose_opens: bool,
}

/// A request a doctor made that waits for the patient's answer, as the doctor sees it.
#[derive(Clone, Debug)]
pub struct MadeRequest {
    pub row: RequestRow,
    /// The patient's login here, if they have one.
    pub patient_login: Option<String>,
    pub purpose: String,
}

/// A patient's pending requests from one hospital's doctors, newest first.
#[derive(Clone, Debug)]
pub struct RequestGroup {
    pub hospital: u32,
    pub hospital_name: String,
    pub requests: Vec<PendingRequest>,
}

impl Flows {
    /// The seed's `request_consent` (§5.2): the patient typed their password on the doctor's
    /// screen (the caller checked it) at a node that is home to both. The patient's custodial
    /// key signs an in-person grant; once it is applied on chain, a write grant's code is drawn
    /// and returned once. Not applied in time: 503, no code.
    pub async fn grant_in_person(
        &self,
        doctor: &Account,
        patient: &Account,
        scope: Scope,
        purpose: String,
    ) -> FlowResult<InPersonGrant> {
        let doctor_row = self.home_doctor(doctor).await?;
        let patient_row = self.person_of(patient).await?;
        if patient_row.home != self.here.index {
            return Err(FlowError::ConsentElsewhere {
                patient: patient.id.clone(),
                home: self.hospital(patient_row.home),
            });
        }
        let meta = Meta::Grant(Grant {
            patient: patient_row.person,
            doctor: doctor_row.person,
            scope,
            request: None,
            attested: Attested::InPerson,
        });
        let body = Content::Purpose(PurposeBody { purpose });
        let Signing::Done(tx) = self
            .sign_as(
                patient,
                patient_row.person,
                Who::Custodial,
                Action::Grant,
                meta,
                body,
            )
            .await?
        else {
            return Err(FlowError::Invalid(
                "an in-person grant is signed here".into(),
            ));
        };
        let (grant, expires_ms) = self.submit_grant(tx).await?;
        let code = match scope {
            Scope::Write => {
                let (patient, doctor, now) = (patient_row.person, doctor_row.person, self.now_ms());
                let issued = self
                    .store(move |app, _| app.issue_code(&grant, &patient, &doctor, expires_ms, now))
                    .await
                    .map_err(|e| {
                        tracing::warn!(error = %e, "an applied grant's code could not be stored");
                        FlowError::Unavailable(
                            "The consent was recorded but its code could not be stored; please \
                             retry"
                                .into(),
                        )
                    })?;
                Some(issued)
            }
            Scope::Read { .. } => None,
        };
        Ok(InPersonGrant {
            grant,
            scope,
            expires_ms,
            code,
        })
    }

    /// Submits a signed grant and waits until it is applied: its id and expiry.
    pub(super) async fn submit_grant(&self, tx: SignedTx) -> FlowResult<(TxId, u64)> {
        let Meta::Grant(grant) = tx.meta().clone() else {
            return Err(FlowError::Invalid("not a grant".into()));
        };
        let (id, block_time_ms) = self.submit_and_apply(tx).await?;
        Ok((id, grant_expiry(grant.scope, block_time_ms)))
    }

    /// A doctor asks a patient remotely (§5.3): `RequestGrant` signed by the doctor's key,
    /// durable here. Over a cap: [`FlowError::TooManyPending`].
    pub async fn request_grant(
        &self,
        doctor: &Account,
        who: Who,
        patient: &str,
        scope: Scope,
        purpose: String,
    ) -> FlowResult<Signing<TxId>> {
        let doctor_row = self.home_doctor(doctor).await?;
        let (patient, _) = self
            .resolve_patient(patient)
            .await?
            .ok_or_else(|| FlowError::NotFound("No such patient".into()))?;
        let meta = Meta::RequestGrant(RequestGrant {
            patient,
            doctor: doctor_row.person,
            scope,
        });
        let body = Content::Purpose(PurposeBody { purpose });
        match self
            .sign_as(doctor, doctor_row.person, who, Action::Durable, meta, body)
            .await?
        {
            Signing::Done(tx) => Ok(Signing::Done(self.submit(tx).await?)),
            Signing::NeedsSignature(view) => Ok(Signing::NeedsSignature(view)),
        }
    }

    /// The requests `doctor` made that are still pending on chain, newest first (what their
    /// patients have not answered yet), each purpose opened here (the doctor's home sealed it).
    pub async fn requests_made(&self, doctor: &Account) -> FlowResult<Vec<MadeRequest>> {
        let row = self.person_of(doctor).await?;
        let now = self.now_ms();
        let (height, found) = self
            .current_snapshot(move |r| {
                let mut out = Vec::new();
                for request in r.pending_requests_by(&row.person, now)? {
                    let sealed = sealed_of(r, &request.id, request.doctor_home)?;
                    out.push((request, sealed));
                }
                Ok(out)
            })
            .await?;
        let (found, purposes) = self.purposes(height, found, ReaderRole::Doctor).await?;
        let mut logins = Logins::default();
        let mut made = Vec::with_capacity(found.len());
        for (row, purpose) in found.into_iter().zip(purposes) {
            made.push(MadeRequest {
                patient_login: logins.of(self, row.patient).await?,
                purpose: purpose.text,
                row,
            });
        }
        Ok(made)
    }

    /// A patient's requests pending on chain (at `T = now`), grouped by requesting hospital
    /// (so that one hospital's doctors crowd only its own group), newest first in each, each
    /// purpose opened here or replaced by its notice.
    pub async fn pending_requests(&self, patient: &Account) -> FlowResult<Vec<RequestGroup>> {
        let row = self.served_patient(patient).await?;
        let now = self.now_ms();
        let person = row.person;
        let (height, found) = self
            .current_snapshot(move |r| {
                let mut out = Vec::new();
                for request in r.pending_requests_of(&person, now)? {
                    let sealed = sealed_of(r, &request.id, request.doctor_home)?;
                    let doctor = r.person(&request.doctor)?;
                    out.push(((request, doctor), sealed));
                }
                Ok(out)
            })
            .await?;
        let (found, purposes) = self.purposes(height, found, ReaderRole::Patient).await?;
        let mut logins = Logins::default();
        let mut groups: Vec<RequestGroup> = Vec::new();
        for ((row, doctor), purpose) in found.into_iter().zip(purposes) {
            let request = PendingRequest {
                doctor_login: logins.of(self, row.doctor).await?,
                doctor_name: doctor.as_ref().and_then(|d| d.name.clone()),
                department: doctor.and_then(|d| d.department),
                purpose_opens: purpose.state == Readable::Open(()),
                purpose: purpose.text,
                row,
            };
            let hospital = request.row.doctor_home;
            match groups.iter_mut().find(|g| g.hospital == hospital) {
                Some(group) => group.requests.push(request),
                None => groups.push(RequestGroup {
                    hospital,
                    hospital_name: self.hospital(hospital),
                    requests: vec![request],
                }),
            }
        }
        Ok(groups)
    }

    /// Opens the purposes of `found` (each item with its sealed transaction), read from the
    /// snapshot at `height`: the items, and each purpose's text or notice. A purpose is not
    /// served under an `Access`: its barrier is the snapshot's, taken once this validator is
    /// not behind the chain ([`Flows::current_snapshot`], §16.25).
    async fn purposes<T>(
        &self,
        height: u64,
        found: Vec<(T, Option<ToOpen>)>,
        reader: ReaderRole,
    ) -> FlowResult<(Vec<T>, Vec<Purpose>)> {
        let mut items = Vec::with_capacity(found.len());
        let mut sealed = Vec::with_capacity(found.len());
        for (item, to_open) in found {
            let Some(to_open) = to_open else {
                return Err(FlowError::Unavailable(
                    "a request's transaction is missing from this validator's chain".into(),
                ));
            };
            items.push(item);
            sealed.push(to_open);
        }
        let opened = self
            .open_sealed(height, sealed, |plain| {
                PurposeBody::from_bytes(plain).ok().map(|b| b.purpose)
            })
            .await?;
        let purposes = opened
            .into_iter()
            .map(|readable| {
                let notice = readable.notice(self, reader, "purpose");
                let state = readable.without_content();
                let text = match (readable, notice) {
                    (Readable::Open(text), _) => text,
                    (Readable::Broken { .. }, notice) => notice.unwrap_or_default(),
                    (_, notice) => format!("purpose {}", notice.unwrap_or_default()),
                };
                Purpose { text, state }
            })
            .collect();
        Ok((items, purposes))
    }

    /// The patient approves a pending request (§5.3): only with a device key (a remote
    /// approval is never custodial); the grant may be shorter than the request asked.
    pub async fn approve_request(
        &self,
        patient: &Account,
        who: Who,
        request: TxId,
        duration_ms: Option<u64>,
    ) -> FlowResult<Signing<(TxId, u64)>> {
        let row = self.served_patient(patient).await?;
        let pending = self.pending_request_of(row.person, request).await?;
        let Who::Device(_) = who else {
            return Err(FlowError::ApproveOnDevice {
                home: self.hospital(row.home),
            });
        };
        // A read grant is signed with a key of the patient's home (§4.2), and a request whose
        // purpose this hospital cannot open is approved where it opens (§16.15).
        let at_home = FlowError::ApproveAtHome {
            home: self.hospital(row.home),
        };
        if matches!(pending.scope, Scope::Read { .. }) && row.home != self.here.index {
            return Err(at_home);
        }
        let purpose = self.purpose_of(request, pending.doctor_home).await?;
        match purpose.state {
            Readable::Open(()) => {}
            Readable::Elsewhere { .. } => return Err(at_home),
            Readable::Waiting { .. } => return Err(FlowError::Unavailable(purpose.text)),
            Readable::Erased { .. } | Readable::Broken { .. } => {
                return Err(FlowError::Rejected(purpose.text));
            }
        }
        let scope = match (pending.scope, duration_ms) {
            (Scope::Read { duration_ms: asked }, Some(d)) => Scope::Read {
                duration_ms: d.min(asked),
            },
            (scope, _) => scope,
        };
        let meta = Meta::Grant(Grant {
            patient: row.person,
            doctor: pending.doctor,
            scope,
            request: Some(request),
            attested: Attested::Device,
        });
        let body = Content::Purpose(PurposeBody {
            purpose: "Approved request".into(),
        });
        match self
            .sign_as(patient, row.person, who, Action::Grant, meta, body)
            .await?
        {
            Signing::Done(tx) => Ok(Signing::Done(self.submit_grant(tx).await?)),
            Signing::NeedsSignature(view) => Ok(Signing::NeedsSignature(view)),
        }
    }

    /// The purpose of request `id` as this hospital opens it.
    async fn purpose_of(&self, id: TxId, sealer: u32) -> FlowResult<Purpose> {
        let (height, found) = self
            .current_snapshot(move |r| Ok(vec![((), sealed_of(r, &id, sealer)?)]))
            .await?;
        let (_, purposes) = self.purposes(height, found, ReaderRole::Patient).await?;
        purposes
            .into_iter()
            .next()
            .ok_or_else(|| FlowError::NotFound("No such consent request".into()))
    }

    async fn pending_request_of(&self, patient: PersonId, id: TxId) -> FlowResult<RequestRow> {
        let now = self.now_ms();
        match self.chain(move |r| r.request(&id)).await? {
            Some(row) if row.patient == patient && row.pending_at(now) => Ok(row),
            Some(row) if row.patient == patient => Err(FlowError::Rejected(
                "This consent request is no longer pending".into(),
            )),
            _ => Err(FlowError::NotFound("No such consent request".into())),
        }
    }

    /// The patient denies a pending request, or revokes a grant not used up (§5.3, 5.6):
    /// `Revoke`, with their device key, or custodially at their home. Durable here; the chain
    /// orders it against any use of the grant.
    pub async fn revoke(
        &self,
        patient: &Account,
        who: Who,
        target: TxId,
    ) -> FlowResult<Signing<TxId>> {
        let row = self.served_patient(patient).await?;
        if who == Who::Custodial && row.home != self.here.index {
            return Err(FlowError::ApproveOnDevice {
                home: self.hospital(row.home),
            });
        }
        let person = row.person;
        let known = self
            .chain(move |r| {
                Ok(r.grant(&target)?.is_some_and(|g| g.patient == person)
                    || r.request(&target)?.is_some_and(|q| q.patient == person))
            })
            .await?;
        if !known {
            return Err(FlowError::NotFound("No such grant or request".into()));
        }
        let meta = Meta::Revoke(Revoke {
            patient: person,
            target,
        });
        match self
            .sign_as(patient, person, who, Action::Durable, meta, Content::Empty)
            .await?
        {
            Signing::Done(tx) => Ok(Signing::Done(self.submit(tx).await?)),
            Signing::NeedsSignature(view) => Ok(Signing::NeedsSignature(view)),
        }
    }

    /// The grants of the signed-in person from the chain, newest first: a patient's (given),
    /// or a doctor's (received), with the names to show; a doctor's live read grants at their
    /// home with the key status of the patient's records ([`GrantKeys`]).
    pub async fn grants(&self, account: &Account) -> FlowResult<Vec<GrantInfo>> {
        let Some(person) = account.person else {
            return Ok(Vec::new());
        };
        let role = account.role;
        let rows = self
            .chain(move |r| {
                let grants = match role {
                    crate::app::Role::Patient => r.grants_of_patient(&person)?,
                    crate::app::Role::Doctor => r.grants_of_doctor(&person, 0)?,
                };
                let mut out = Vec::with_capacity(grants.len());
                for grant in grants {
                    let doctor = r.person(&grant.doctor)?;
                    let patient_home = r.person(&grant.patient)?.map(|p| p.home);
                    out.push((grant, doctor, patient_home));
                }
                Ok(out)
            })
            .await?;
        // Keys come to the doctor's home: elsewhere there is nothing to say.
        let grantee_here =
            role == crate::app::Role::Doctor && account.home == Some(self.here.index);
        let now = self.now_ms();
        let mut logins = Logins::default();
        let mut out = Vec::with_capacity(rows.len());
        for (row, doctor, patient_home) in rows {
            let keys = match (grantee_here, row.scope, patient_home) {
                (true, Scope::Read { .. }, Some(home)) if row.live_at(now) => {
                    let keys = self.node.patient_keys(&row.patient).await?;
                    Some(GrantKeys {
                        held: keys.held,
                        waiting: keys.waiting,
                        from: keys.from.unwrap_or(home),
                        since_ms: keys.since_ms,
                    })
                }
                _ => None,
            };
            out.push(GrantInfo {
                patient_login: logins.of(self, row.patient).await?,
                doctor_login: logins.of(self, row.doctor).await?,
                doctor_name: doctor.as_ref().and_then(|d| d.name.clone()),
                department: doctor.and_then(|d| d.department),
                keys,
                row,
            });
        }
        Ok(out)
    }

    /// One grant or request by id, if `account` is its patient or doctor.
    pub async fn consent(&self, account: &Account, id: TxId) -> FlowResult<Consent> {
        let person = account.person.ok_or(FlowError::NotOnChain)?;
        let (grant, request) = self
            .chain(move |r| Ok((r.grant(&id)?, r.request(&id)?)))
            .await?;
        let mine = |patient: PersonId, doctor: PersonId| patient == person || doctor == person;
        match (grant, request) {
            (Some(g), _) if mine(g.patient, g.doctor) => Ok(Consent::Grant(g)),
            (_, Some(q)) if mine(q.patient, q.doctor) => Ok(Consent::Request(q)),
            _ => Err(FlowError::NotFound("No such consent".into())),
        }
    }
}

/// A purpose as a reader sees it: its text, or the notice of why it does not open here.
struct Purpose {
    text: String,
    /// Its state, without the text.
    state: Readable<()>,
}

/// The sealed transaction `id` as the chain holds it, to open; `sealer` named if its content
/// does not decode.
fn sealed_of(r: &ledger::Reader, id: &TxId, sealer: u32) -> ledger::Result<Option<ToOpen>> {
    Ok(r.transaction(id)?.map(|t| ToOpen {
        header: t.tx.header,
        body: t.tx.body,
        sealer,
    }))
}
