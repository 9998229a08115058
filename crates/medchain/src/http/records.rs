//! Medical records: adding one under consent, reading them (the patient's own, or a doctor's
//! under consent), and the access log. Every read is an access transaction on chain, submitted
//! before the data is returned: no read goes unlogged.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::extract::{ApiJson, MaybeAuthed, Patient, check_len, required};
use super::{ApiError, ApiResult, AppState};
use crate::app::{Account, Role, UseKind, UsedConsent};

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

#[derive(Deserialize)]
struct MedicalData {
    diagnosis: Option<String>,
    prescription: Option<String>,
    notes: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddRecordBody {
    patient_id: Option<String>,
    doctor_id: Option<String>,
    otp: Option<Zeroizing<String>>,
    department: Option<String>,
    #[serde(rename = "medical_data")]
    medical_data: Option<MedicalData>,
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

/// A doctor's `doctorId` must be their own; omitted, it is taken from the session.
fn own_doctor_id(doctor: &Account, given: Option<String>) -> ApiResult<()> {
    match given {
        Some(id) if id != doctor.id => Err(ApiError::Forbidden("doctorId must be your own".into())),
        _ => Ok(()),
    }
}

async fn use_consent(
    state: &AppState,
    patient_id: String,
    doctor_id: String,
    otp: Zeroizing<String>,
    kind: UseKind,
) -> ApiResult<UsedConsent> {
    state
        .blocking(move |app, now| {
            Ok(app.use_code(&patient_id, &doctor_id, otp.trim(), kind, now)?)
        })
        .await
}

/// Gives a consent back when its transaction could not be submitted.
async fn release(state: &AppState, consent_id: String) {
    let result = state
        .blocking(move |app, _| Ok(app.release_use(&consent_id)?))
        .await;
    if let Err(e) = result {
        tracing::warn!(?e, "could not release a consent after a failed submission");
    }
}

/// The seed's `add_record`, for the signed-in doctor, under a consent code.
async fn add_record(
    State(state): State<AppState>,
    MaybeAuthed(auth): MaybeAuthed,
    ApiJson(body): ApiJson<AddRecordBody>,
) -> ApiResult<Json<Value>> {
    let auth = auth.ok_or_else(ApiError::unauthorized)?;
    let doctor = auth.session.account;
    if doctor.role != Role::Doctor {
        return Err(ApiError::Forbidden("Only doctors may add records".into()));
    }
    let patient_id = required("patientId", body.patient_id, 64)?;
    let Some(otp) = body.otp else {
        return Err(ApiError::MissingField("otp".into()));
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
            d.trim().to_string()
        }
        _ => doctor
            .department
            .clone()
            .unwrap_or_else(|| "General".into()),
    };
    let used = use_consent(
        &state,
        patient_id.clone(),
        doctor.id.clone(),
        otp,
        UseKind::AddRecord,
    )
    .await?;
    let tx = ledger::Transaction::AddRecord {
        patient_id,
        doctor_id: doctor.id.clone(),
        department,
        diagnosis,
        prescription,
        notes,
        consent_hash: used.consent_hash,
    };
    match state.submit(tx).await {
        Ok(id) => Ok(Json(json!({
            "success": true,
            "message": "Record added to batch",
            "txId": hex::encode(id),
            "consentHash": hex::encode(used.consent_hash),
        }))),
        Err(e) => {
            release(&state, used.consent_id).await;
            Err(e)
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordsBody {
    patient_id: Option<String>,
    password: Option<Zeroizing<String>>,
    otp: Option<Zeroizing<String>>,
}

/// The seed's `patient_records`: a patient's own records, authenticated by the patient's
/// password (as in the seed) or by their session; a doctor's session with a consent code reads
/// under consent.
async fn patient_records(
    State(state): State<AppState>,
    MaybeAuthed(auth): MaybeAuthed,
    ApiJson(body): ApiJson<RecordsBody>,
) -> ApiResult<Json<Value>> {
    if let Some(password) = body.password {
        let id = required("patientId", body.patient_id, 64)?;
        let patient = state
            .verify_password(id, Some(Role::Patient), password)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("Unauthorized".into()))?;
        return own_records(&state, patient).await;
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
            own_records(&state, account).await
        }
        Role::Doctor => {
            let patient_id = required("patientId", body.patient_id, 64)?;
            let Some(otp) = body.otp else {
                return Err(ApiError::Forbidden(
                    "A doctor reads a patient's records only with the patient's consent code \
                     (otp)"
                        .into(),
                ));
            };
            read_under_consent(&state, account, patient_id, otp).await
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DoctorReadBody {
    patient_id: Option<String>,
    otp: Option<Zeroizing<String>>,
}

/// A doctor reads a patient's committed records under a consent code.
async fn doctor_records(
    State(state): State<AppState>,
    MaybeAuthed(auth): MaybeAuthed,
    ApiJson(body): ApiJson<DoctorReadBody>,
) -> ApiResult<Json<Value>> {
    let account = auth.ok_or_else(ApiError::unauthorized)?.session.account;
    if account.role != Role::Doctor {
        return Err(ApiError::Forbidden("Only doctors may do this".into()));
    }
    let patient_id = required("patientId", body.patient_id, 64)?;
    let Some(otp) = body.otp else {
        return Err(ApiError::MissingField("otp".into()));
    };
    read_under_consent(&state, account, patient_id, otp).await
}

async fn own_records(state: &AppState, patient: Account) -> ApiResult<Json<Value>> {
    let access = state
        .submit(ledger::Transaction::Access {
            patient_id: patient.id.clone(),
            reader_id: patient.id.clone(),
            reader_role: Role::Patient.as_str().into(),
            consent_hash: None,
        })
        .await?;
    records_json(state, patient.id, access).await
}

async fn read_under_consent(
    state: &AppState,
    doctor: Account,
    patient_id: String,
    otp: Zeroizing<String>,
) -> ApiResult<Json<Value>> {
    let used = use_consent(
        state,
        patient_id.clone(),
        doctor.id.clone(),
        otp,
        UseKind::ReadRecords,
    )
    .await?;
    let access = state
        .submit(ledger::Transaction::Access {
            patient_id: patient_id.clone(),
            reader_id: doctor.id.clone(),
            reader_role: Role::Doctor.as_str().into(),
            consent_hash: Some(used.consent_hash),
        })
        .await;
    let access = match access {
        Ok(id) => id,
        Err(e) => {
            release(state, used.consent_id).await;
            return Err(e);
        }
    };
    // Mark the consent used on chain too; the access entry above already proves the read.
    if let Err(e) = state
        .submit(ledger::Transaction::ConsentUsed {
            patient_id: patient_id.clone(),
            doctor_id: doctor.id,
            consent_hash: used.consent_hash,
        })
        .await
    {
        tracing::warn!(?e, "consent-used transaction not submitted");
    }
    records_json(state, patient_id, access).await
}

async fn records_json(
    state: &AppState,
    patient_id: String,
    access_tx: ledger::Hash,
) -> ApiResult<Json<Value>> {
    let rows = state
        .read_chain(move |r| r.records_by_patient(&patient_id))
        .await?;
    let records: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "timestamp": r.timestamp_ms as f64 / 1000.0,
                "timestamp_ms": r.timestamp_ms,
                "doctor_id": r.doctor_id,
                "department": r.department,
                "diagnosis": r.diagnosis,
                "prescription": r.prescription,
                "notes": r.notes,
                "consent_hash": hex::encode(r.consent_hash),
                "height": r.height,
                "tx_id": hex::encode(r.tx_id),
            })
        })
        .collect();
    Ok(Json(json!({
        "success": true,
        "records": records,
        "accessTxId": hex::encode(access_tx),
    })))
}

/// Who read the signed-in patient's records, newest first.
async fn access_log(
    State(state): State<AppState>,
    Patient(patient): Patient,
) -> ApiResult<Json<Value>> {
    let rows = state
        .read_chain(move |r| r.accesses_by_patient(&patient.id))
        .await?;
    let entries: Vec<Value> = rows
        .iter()
        .rev()
        .map(|a| {
            json!({
                "timestamp_ms": a.timestamp_ms,
                "reader_id": a.reader_id,
                "reader_role": a.reader_role,
                "consent_hash": a.consent_hash.map(hex::encode),
                "height": a.height,
                "tx_id": hex::encode(a.tx_id),
            })
        })
        .collect();
    Ok(Json(json!({"success": true, "entries": entries})))
}
