//! Medical records: adding one under a write grant, reading them (the patient's own, or a
//! doctor's under a read grant), and the access log. Every read is an access entry on chain,
//! applied before the records are opened and returned (docs/SECURITY.md, issue 10, §6.1).

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use ledger::tx::{Attested, RecordBody, SignerKind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::client::ClientAddr;
use super::device::PresentedDevice;
use super::extract::{ApiJson, Doctor, MaybeAuthed, Patient, check_len, parse_body, required};
use super::openapi::ErrorBody;
use super::throttle::Asker;
use super::{ApiError, ApiResult, AppState};
use crate::app::flows::{
    AddedRecord, GrantRef, Readable, ReaderRole, RecordInput, RecordView, parse_tx_id,
};
use crate::app::{Account, Role};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/add_record", post(add_record))
        .route("/api/patient_records", post(patient_records))
        .route("/api/doctor/patient_records", post(doctor_records))
        .route("/api/access_log", get(access_log))
}

/// Limits of a record's fields, in characters.
pub const MAX_DIAGNOSIS: usize = 2000;
pub const MAX_PRESCRIPTION: usize = 2000;
pub const MAX_NOTES: usize = 10_000;
pub const MAX_DEPARTMENT: usize = 64;

#[derive(Deserialize, ToSchema)]
struct MedicalData {
    #[schema(value_type = String, required = true, min_length = 1, max_length = 2000)]
    diagnosis: Option<String>,
    #[schema(value_type = String, required = true, min_length = 1, max_length = 2000)]
    prescription: Option<String>,
    #[schema(max_length = 10000)]
    notes: Option<String>,
}

/// The seed's `add_record`: under the in-person code (`otp`) or a write grant (`grantId`).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct AddRecordBody {
    /// The patient's login here, or their person id (32 hex digits).
    #[schema(value_type = String, required = true, min_length = 1, max_length = 64)]
    #[schema(example = "p001")]
    patient_id: Option<String>,
    /// The caller's own id, if given.
    doctor_id: Option<String>,
    /// The six-digit in-person code.
    #[schema(value_type = Option<String>, pattern = "^[0-9]{6}$")]
    otp: Option<Zeroizing<String>>,
    /// A write grant's id (64 hex digits), in place of `otp`.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    grant_id: Option<String>,
    /// The doctor's own department, if given (default: as enrolled).
    #[schema(max_length = 64)]
    department: Option<String>,
    #[serde(rename = "medical_data")]
    #[schema(required = true)]
    medical_data: Option<MedicalData>,
    /// Sign with this device key (64 hex digits): answers 202 with the bytes to sign.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    device_public_key: Option<String>,
}

fn nonempty(field: &str, label: &str, v: Option<String>, max: usize) -> ApiResult<String> {
    let v = v.unwrap_or_default();
    if v.trim().is_empty() {
        return Err(ApiError::validation(
            field,
            format!("{label} cannot be empty"),
        ));
    }
    check_len(field, &v, max)?;
    Ok(v)
}

/// A record fits a sealed body: at most `ledger::seal::MAX_PLAIN_BYTES` once encoded, the
/// validators' body limit less the sealing overhead (docs/SECURITY.md §16.24); else 413.
fn check_sealable(record: &RecordBody) -> ApiResult<()> {
    let bytes = record.to_bytes().len();
    if bytes > ledger::seal::MAX_PLAIN_BYTES {
        return Err(ApiError::TooLarge(format!(
            "The record is {bytes} bytes encoded; a record carries at most {} bytes: the \
             validators' {}-byte body limit less what sealing it adds",
            ledger::seal::MAX_PLAIN_BYTES,
            ledger::tx::MAX_BODY_BYTES
        )));
    }
    Ok(())
}

/// A doctor's `doctorId` must be their own; omitted, it is taken from the session.
fn own_doctor_id(doctor: &Account, given: Option<String>) -> ApiResult<()> {
    match given {
        Some(id) if id != doctor.id => Err(ApiError::Forbidden("doctorId must be your own".into())),
        _ => Ok(()),
    }
}

/// The seed's answer to `add_record`, and what medchain adds.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RecordAdded {
    success: bool,
    message: &'static str,
    tx_id: String,
    /// The write grant the record uses (the seed's `consent_hash`).
    consent_hash: String,
}

impl From<AddedRecord> for RecordAdded {
    fn from(r: AddedRecord) -> Self {
        RecordAdded {
            success: true,
            message: "Record added to batch",
            tx_id: hex::encode(r.tx),
            consent_hash: hex::encode(r.grant),
        }
    }
}

/// The seed's `add_record`, for the signed-in doctor at their home, under a write grant: the
/// in-person code (`otp`) or a grant's id (`grantId`).
#[utoipa::path(
    post, path = "/api/add_record", tag = "records",
    request_body = AddRecordBody,
    responses(
        (status = 200, description = "Durable here, sealed and submitted; committed within the \
            batch window", body = RecordAdded),
        (status = 400, description = "`missing_field`, `validation` (with `field`), or \
            `blockchain_validation` (`Invalid OTP`, `Consent already used`, `Expired or invalid \
            consent`)", body = ErrorBody),
        (status = 403, description = "Not a doctor; `doctorId` not the caller's; \
            `wrong_hospital`; `not_allowed` (`field: department`)", body = ErrorBody),
        (status = 404, description = "No such patient", body = ErrorBody),
        (status = 409, description = "The chain refused it (its rule's reason)", body = ErrorBody),
        (status = 413, description = "The record is over what a sealed body carries",
            body = ErrorBody),
        (status = 503, description = "The validator is busy, stopped, or did not apply the \
            step in time; retry", body = ErrorBody),
    )
)]
async fn add_record(
    State(state): State<AppState>,
    MaybeAuthed(auth): MaybeAuthed,
    ApiJson(body): ApiJson<AddRecordBody>,
) -> ApiResult<Response> {
    let auth = auth.ok_or_else(ApiError::unauthorized)?;
    let doctor = auth.session.account;
    if doctor.role != Role::Doctor {
        return Err(ApiError::Forbidden("Only doctors may add records".into()));
    }
    let patient_id = required("patientId", body.patient_id, 64)?;
    let grant = match (body.otp, body.grant_id) {
        (Some(otp), _) => GrantRef::Code(Zeroizing::new(otp.trim().to_string())),
        (None, Some(id)) => GrantRef::Id(
            parse_tx_id(&id)
                .ok_or_else(|| ApiError::validation("grantId", "grantId must be 64 hex digits"))?,
        ),
        (None, None) => return Err(ApiError::MissingField("otp".into())),
    };
    let Some(data) = body.medical_data else {
        return Err(ApiError::MissingField("medical_data".into()));
    };
    own_doctor_id(&doctor, body.doctor_id)?;
    let diagnosis = nonempty("diagnosis", "Diagnosis", data.diagnosis, MAX_DIAGNOSIS)?;
    let prescription = nonempty(
        "prescription",
        "Prescription",
        data.prescription,
        MAX_PRESCRIPTION,
    )?;
    let notes = data.notes.unwrap_or_default();
    check_len("notes", &notes, MAX_NOTES)?;
    let department = match body.department {
        Some(d) if !d.trim().is_empty() => {
            check_len("department", d.trim(), MAX_DEPARTMENT)?;
            Some(d.trim().to_string())
        }
        _ => None,
    };
    let who = super::consent::who_of(body.device_public_key)?;
    let record = RecordBody {
        diagnosis,
        prescription,
        notes,
    };
    check_sealable(&record)?;
    let input = RecordInput {
        patient: patient_id,
        grant,
        department,
        body: record,
    };
    let outcome = state.flows.add_record(&doctor, who, input).await?;
    Ok(super::consent::answer(outcome.map(RecordAdded::from)))
}

/// The seed's read by password (`patientId` and `password`, without another person's session),
/// or, with a session, the patient's own records or (a doctor's) a patient's under a read grant.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct RecordsBody {
    #[schema(max_length = 64, example = "p001")]
    patient_id: Option<String>,
    #[schema(value_type = Option<String>, example = "patient123")]
    password: Option<Zeroizing<String>>,
}

/// The seed's `patient_records`: a patient's own records, authenticated by the patient's
/// password (as in the seed, without another person's session) or by their session. The
/// records are opened once the access entry naming this hospital is applied.
#[utoipa::path(
    post, path = "/api/patient_records", tag = "records",
    security((), ("session_cookie" = []), ("bearer" = [])),
    request_body = RecordsBody,
    responses(
        (status = 200, description = "The committed records, oldest first, read once the \
            access entry is applied", body = RecordsAnswer),
        (status = 400, description = "A missing or invalid field", body = ErrorBody),
        (status = 401, description = "`Unauthorized`: a wrong password, or no password and no \
            session", body = ErrorBody),
        (status = 403, description = "A password read with another person's session; a \
            patient naming another; a doctor without a live read grant (`no live read grant`) \
            or away from home", body = ErrorBody),
        (status = 404, description = "No such patient (a doctor's read)", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords, or too many reads, for this \
            account; wait", body = ErrorBody),
        (status = 503, description = "The validator is busy, stopped, or did not apply the \
            step in time; `keys catching up`; retry", body = ErrorBody),
    )
)]
async fn patient_records(
    State(state): State<AppState>,
    client: ClientAddr,
    presented: PresentedDevice,
    MaybeAuthed(auth): MaybeAuthed,
    ApiJson(body): ApiJson<RecordsBody>,
) -> ApiResult<Json<RecordsAnswer>> {
    if let Some(password) = body.password {
        let id = required("patientId", body.patient_id, 64)?;
        if let Some(auth) = &auth
            && auth.account().id != id
        {
            return Err(ApiError::Forbidden(
                "A password read must be made without another person's session: sign out first"
                    .into(),
            ));
        }
        let asker = Asker::Anyone {
            device: presented.device_for(&state, &id),
        };
        let patient = state
            .verify_password(client, &asker, id, Some(Role::Patient), password)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("Unauthorized".into()))?;
        state.spend_read(&patient)?;
        let (access, records) = state.flows.read_own(&patient).await?;
        return Ok(Json(RecordsAnswer::of(
            &state,
            ReaderRole::Patient,
            access,
            records,
        )));
    }
    let auth = auth.ok_or_else(|| ApiError::Unauthorized("Unauthorized".into()))?;
    let account = auth.session.account;
    match account.role {
        Role::Patient => {
            if body.patient_id.as_ref().is_some_and(|p| *p != account.id) {
                return Err(ApiError::Forbidden(
                    "A patient may read only their own records".into(),
                ));
            }
            state.spend_read(&account)?;
            let (access, records) = state.flows.read_own(&account).await?;
            Ok(Json(RecordsAnswer::of(
                &state,
                ReaderRole::Patient,
                access,
                records,
            )))
        }
        Role::Doctor => {
            let patient_id = required("patientId", body.patient_id, 64)?;
            state.spend_read(&account)?;
            let (access, records) = state.flows.read_under_grant(&account, &patient_id).await?;
            Ok(Json(RecordsAnswer::of(
                &state,
                ReaderRole::Doctor,
                access,
                records,
            )))
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct DoctorReadBody {
    /// The patient's login here, or their person id (32 hex digits).
    #[schema(value_type = String, required = true, min_length = 1, max_length = 64)]
    #[schema(example = "p001")]
    patient_id: Option<String>,
}

/// A doctor reads a patient's committed records under a live read grant, at the doctor's
/// home: served only once the access entry is applied on chain.
#[utoipa::path(
    post, path = "/api/doctor/patient_records", tag = "records",
    request_body = DoctorReadBody,
    responses(
        (status = 200, description = "The patient's committed records", body = RecordsAnswer),
        (status = 400, description = "A missing or invalid field", body = ErrorBody),
        (status = 403, description = "Not a doctor; `wrong_hospital`; `no live read grant` or the \
            chain's reason", body = ErrorBody),
        (status = 404, description = "No such patient", body = ErrorBody),
        (status = 429, description = "Too many reads for this account; wait", body = ErrorBody),
        (status = 503, description = "The validator is busy, stopped, or did not apply the \
            step in time; `keys catching up`; retry", body = ErrorBody),
    )
)]
async fn doctor_records(
    State(state): State<AppState>,
    Doctor(doctor): Doctor,
    ApiJson(body): ApiJson<DoctorReadBody>,
) -> ApiResult<Json<RecordsAnswer>> {
    let patient_id = required("patientId", body.patient_id, 64)?;
    state.spend_read(&doctor)?;
    let (access, records) = state.flows.read_under_grant(&doctor, &patient_id).await?;
    Ok(Json(RecordsAnswer::of(
        &state,
        ReaderRole::Doctor,
        access,
        records,
    )))
}

/// One record: the seed's fields, then who signed it, how and where.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct RecordJson {
    timestamp: f64,
    #[serde(rename = "timestamp_ms")]
    timestamp_ms: u64,
    #[serde(rename = "doctor_id")]
    doctor_id: String,
    department: String,
    /// For a record that does not open here, its notice (so that a client that knows only
    /// the seed's fields shows it), and `prescription` and `notes` empty.
    diagnosis: String,
    prescription: String,
    notes: String,
    /// `open`, `erased`, `waiting`, `elsewhere` or `broken` (docs/SECURITY.md, issue 10,
    /// §6.2).
    state: &'static str,
    /// What is shown instead of the content; null when it is open.
    notice: Option<String>,
    /// The write grant the record used.
    #[serde(rename = "consent_hash")]
    consent_hash: String,
    height: u64,
    #[serde(rename = "tx_id")]
    tx_id: String,
    doctor_person_id: String,
    doctor_name: Option<String>,
    /// `device` (the doctor's device key) or `custodial` (the doctor's home signed for them).
    #[schema(value_type = super::openapi::SignerKindName)]
    signer_kind: SignerKind,
    /// The hospital whose page made the key, or that holds it.
    origin: Option<String>,
    /// How the grant was given: `device` or `in_person`.
    #[schema(value_type = Option<super::openapi::AttestedName>)]
    attested: Option<Attested>,
}

/// Records whose keys this hospital waits for from one validator (docs/SECURITY.md §5.4):
/// "3 records wait for their keys from hospital, asked since 10:02".
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct WaitingJson {
    from: String,
    count: usize,
    /// When this hospital first asked (ms; 0: not asked yet).
    since_ms: u64,
}

/// The seed's answer to `patient_records`, and the access entry that logged the read.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RecordsAnswer {
    success: bool,
    records: Vec<RecordJson>,
    /// The records shown `waiting`, by the validator they wait for.
    waiting: Vec<WaitingJson>,
    access_tx_id: String,
    /// The hospital that served the read (as the access entry names it).
    served_by: String,
}

impl RecordsAnswer {
    fn of(
        state: &AppState,
        reader: ReaderRole,
        access: ledger::TxId,
        records: Vec<RecordView>,
    ) -> Self {
        let mut waiting: Vec<WaitingJson> = Vec::new();
        for r in &records {
            if let Readable::Waiting { from, since_ms } = r.content {
                let from = state.flows.hospital(from);
                match waiting.iter_mut().find(|w| w.from == from) {
                    Some(w) => {
                        w.count += 1;
                        // The earliest ask (0, not asked yet, counts for nothing).
                        if w.since_ms == 0 || (since_ms != 0 && since_ms < w.since_ms) {
                            w.since_ms = since_ms;
                        }
                    }
                    None => waiting.push(WaitingJson {
                        from,
                        count: 1,
                        since_ms,
                    }),
                }
            }
        }
        RecordsAnswer {
            success: true,
            waiting,
            records: records
                .into_iter()
                .map(|r| {
                    let notice = r.content.notice(&state.flows, reader, "record");
                    let state_name = r.content.state();
                    let body = match r.content {
                        Readable::Open(body) => body,
                        _ => RecordBody {
                            diagnosis: notice.clone().unwrap_or_default(),
                            ..RecordBody::default()
                        },
                    };
                    RecordJson {
                        timestamp: r.time_ms as f64 / 1000.0,
                        timestamp_ms: r.time_ms,
                        doctor_id: r.doctor_login.unwrap_or_else(|| hex::encode(r.doctor)),
                        department: r.department,
                        diagnosis: body.diagnosis,
                        prescription: body.prescription,
                        notes: body.notes,
                        state: state_name,
                        notice,
                        consent_hash: hex::encode(r.grant),
                        height: r.height,
                        tx_id: hex::encode(r.tx),
                        doctor_person_id: hex::encode(r.doctor),
                        doctor_name: r.doctor_name,
                        signer_kind: r.signer,
                        origin: r.origin.map(|o| state.flows.hospital(o)),
                        attested: r.attested,
                    }
                })
                .collect(),
            access_tx_id: hex::encode(access),
            served_by: state.flows.hospital(state.flows.here().index),
        }
    }
}

/// One entry of the access log.
#[derive(Serialize, ToSchema)]
struct AccessJson {
    timestamp_ms: u64,
    reader_id: String,
    #[schema(value_type = Option<super::openapi::RoleName>)]
    reader_role: Option<ledger::tx::Role>,
    #[serde(rename = "readerName")]
    reader_name: Option<String>,
    /// The grant a doctor read under (none for the patient's own reads).
    consent_hash: Option<String>,
    height: u64,
    tx_id: String,
    /// The hospital that served the read.
    #[serde(rename = "servedBy")]
    served_by: String,
}

#[derive(Serialize, ToSchema)]
struct AccessLogAnswer {
    success: bool,
    entries: Vec<AccessJson>,
}

/// Who read the signed-in patient's records and at which hospital, newest first.
#[utoipa::path(
    get, path = "/api/access_log", tag = "records",
    responses(
        (status = 200, description = "The access log, newest first", body = AccessLogAnswer),
        (status = 403, description = "Not a patient, or a login this hospital may not serve",
            body = ErrorBody),
        (status = 503, description = "The validator is busy, stopped, or did not apply the \
            step in time; retry", body = ErrorBody),
    )
)]
async fn access_log(
    State(state): State<AppState>,
    Patient(patient): Patient,
) -> ApiResult<Json<AccessLogAnswer>> {
    let entries: Vec<AccessJson> = state
        .flows
        .access_log(&patient)
        .await?
        .into_iter()
        .map(|a| AccessJson {
            timestamp_ms: a.time_ms,
            reader_id: a.reader_login.unwrap_or_else(|| hex::encode(a.reader)),
            reader_role: a.reader_role,
            reader_name: a.reader_name,
            consent_hash: a.grant.map(hex::encode),
            height: a.height,
            tx_id: hex::encode(a.tx),
            served_by: state.flows.hospital(a.serving),
        })
        .collect();
    Ok(Json(AccessLogAnswer {
        success: true,
        entries,
    }))
}

/// `bytes` parsed as each JSON body of this area's handlers, as their [`ApiJson`] parses it
/// (the `api_json` fuzz target, `http::fuzzing`).
pub(super) fn parse_bodies(bytes: &[u8]) -> Vec<Result<(), ApiError>> {
    vec![
        parse_body::<AddRecordBody>(bytes).map(drop),
        parse_body::<RecordsBody>(bytes).map(drop),
        parse_body::<DoctorReadBody>(bytes).map(drop),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_over_what_a_sealed_body_carries_is_413_and_says_why() {
        let fits = RecordBody {
            diagnosis: "d".into(),
            prescription: "p".into(),
            notes: "n".repeat(ledger::seal::MAX_PLAIN_BYTES - 3 * 4 - 2),
        };
        assert_eq!(fits.to_bytes().len(), ledger::seal::MAX_PLAIN_BYTES);
        assert!(check_sealable(&fits).is_ok());
        let over = RecordBody {
            notes: format!("{}n", fits.notes),
            ..fits
        };
        let error = check_sealable(&over).unwrap_err();
        assert_eq!(error.status(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        let ApiError::TooLarge(message) = error else {
            unreachable!()
        };
        assert!(
            message.contains(&ledger::seal::MAX_PLAIN_BYTES.to_string())
                && message.contains("sealing"),
            "{message}"
        );
    }
}
