//! Consent: in person (the seed's `/api/request_consent`) and remote (a doctor asks, the patient
//! approves or denies on their dashboard).

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::extract::{ApiJson, Authed, Doctor, Patient, account_id, check_len, required};
use super::{ApiError, ApiResult, AppState};
use crate::app::{ConsentView, Role};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/request_consent", post(in_person))
        .route("/api/consents", get(list))
        .route("/api/consents/request", post(request_remote))
        .route("/api/consents/pending", get(pending))
        .route("/api/consents/{id}", get(one))
        .route("/api/consents/{id}/approve", post(approve))
        .route("/api/consents/{id}/deny", post(deny))
}

const DEFAULT_PURPOSE: &str = "Consultation";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InPersonBody {
    patient_id: Option<String>,
    password: Option<Zeroizing<String>>,
    purpose: Option<String>,
}

fn purpose_of(p: Option<String>) -> ApiResult<String> {
    match p {
        Some(p) if !p.trim().is_empty() => {
            check_len("purpose", p.trim(), 200)?;
            Ok(p.trim().to_string())
        }
        _ => Ok(DEFAULT_PURPOSE.to_string()),
    }
}

fn doctor_department(doctor: &crate::app::Account) -> String {
    doctor
        .department
        .clone()
        .unwrap_or_else(|| "General".to_string())
}

/// The seed's in-person consent: the patient's own password, typed on the doctor's screen.
async fn in_person(
    State(state): State<AppState>,
    Doctor(doctor): Doctor,
    ApiJson(body): ApiJson<InPersonBody>,
) -> ApiResult<Json<Value>> {
    let patient_id = required("patientId", body.patient_id, 64)?;
    let Some(password) = body.password else {
        return Err(ApiError::MissingField("password".into()));
    };
    let purpose = purpose_of(body.purpose)?;
    let patient = state
        .verify_password(patient_id, Some(Role::Patient), password)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("Invalid patient credentials".into()))?;
    let department = doctor_department(&doctor);
    let (p, d, dep, pur) = (
        patient.id.clone(),
        doctor.id.clone(),
        department.clone(),
        purpose.clone(),
    );
    let issued = state
        .blocking(move |app, now| Ok(app.grant_in_person(&p, &d, &dep, &pur, now)?))
        .await?;
    let grant = record_grant(&state, &issued, patient.id, doctor.id, department, purpose).await;
    Ok(Json(code_json(&state, &issued, grant)))
}

/// Puts the grant on chain (its hash, never the code). A failure here does not take the code
/// back: the grant is the audit trail, the consent's use is what the chain enforces.
async fn record_grant(
    state: &AppState,
    issued: &crate::app::IssuedCode,
    patient_id: String,
    doctor_id: String,
    department: String,
    purpose: String,
) -> Option<String> {
    let tx = ledger::Transaction::ConsentGranted {
        patient_id,
        doctor_id,
        department,
        purpose,
        consent_hash: issued.consent_hash,
        expires_at_ms: issued.expires_ms,
    };
    match state.submit(tx).await {
        Ok(id) => Some(hex::encode(id)),
        Err(e) => {
            tracing::warn!(?e, "consent grant not recorded on chain");
            None
        }
    }
}

fn code_json(state: &AppState, issued: &crate::app::IssuedCode, grant_tx: Option<String>) -> Value {
    json!({
        "success": true,
        "otp": issued.code.as_str(),
        "expiry": state.app.config().consent_ttl_ms / 1000,
        "expiresAt": issued.expires_ms,
        "consentId": issued.consent_id,
        "consentHash": hex::encode(issued.consent_hash),
        "grantTxId": grant_tx,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RemoteBody {
    patient_id: Option<String>,
    purpose: Option<String>,
}

/// A doctor asks a patient for consent; the patient answers on their dashboard.
async fn request_remote(
    State(state): State<AppState>,
    Doctor(doctor): Doctor,
    ApiJson(body): ApiJson<RemoteBody>,
) -> ApiResult<Json<Value>> {
    let patient_id = account_id("patientId", body.patient_id)?;
    let purpose = required("purpose", body.purpose, 200)?;
    let department = doctor_department(&doctor);
    let view = state
        .blocking(move |app, now| {
            match app.account(&patient_id)? {
                Some(a) if a.role == Role::Patient => {}
                _ => return Err(ApiError::NotFound("No such patient".into())),
            }
            Ok(app.request_remote(&patient_id, &doctor.id, &department, &purpose, now)?)
        })
        .await?;
    Ok(Json(json!({"success": true, "consent": view})))
}

/// The caller's consents: a doctor's requests and grants, or a patient's.
async fn list(State(state): State<AppState>, auth: Authed) -> ApiResult<Json<Value>> {
    let account = auth.session.account;
    let consents: Vec<ConsentView> = state
        .blocking(move |app, now| {
            Ok(match account.role {
                Role::Doctor => app.consents_for_doctor(&account.id, now, 50)?,
                Role::Patient => app.consents_for_patient(&account.id, now, 50)?,
            })
        })
        .await?;
    Ok(Json(json!({"success": true, "consents": consents})))
}

/// The patient's requests waiting for an answer.
async fn pending(
    State(state): State<AppState>,
    Patient(patient): Patient,
) -> ApiResult<Json<Value>> {
    let requests = state
        .blocking(move |app, now| Ok(app.pending_for_patient(&patient.id, now)?))
        .await?;
    Ok(Json(json!({"success": true, "requests": requests})))
}

fn check_id(id: &str) -> ApiResult<()> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::NotFound("No such consent request".into()));
    }
    Ok(())
}

/// One consent, to its patient or its doctor only.
async fn one(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    check_id(&id)?;
    let account = auth.session.account;
    let view = state
        .blocking(move |app, now| Ok(app.consent(&id, now)?))
        .await?
        .filter(|v| match account.role {
            Role::Doctor => v.doctor_id == account.id,
            Role::Patient => v.patient_id == account.id,
        })
        .ok_or_else(|| ApiError::NotFound("No such consent request".into()))?;
    Ok(Json(json!({"success": true, "consent": view})))
}

/// The patient approves: the code is shown once, in this answer.
async fn approve(
    State(state): State<AppState>,
    Patient(patient): Patient,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    check_id(&id)?;
    let patient_id = patient.id.clone();
    let (issued, view) = state
        .blocking(move |app, now| {
            let issued = app.approve(&patient_id, &id, now)?;
            let view = app
                .consent(&id, now)?
                .ok_or(ApiError::internal("approved consent vanished"))?;
            Ok((issued, view))
        })
        .await?;
    let grant = record_grant(
        &state,
        &issued,
        patient.id,
        view.doctor_id,
        view.department,
        view.purpose,
    )
    .await;
    Ok(Json(code_json(&state, &issued, grant)))
}

async fn deny(
    State(state): State<AppState>,
    Patient(patient): Patient,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    check_id(&id)?;
    state
        .blocking(move |app, now| Ok(app.deny(&patient.id, &id, now)?))
        .await?;
    Ok(Json(
        json!({"success": true, "message": "Consent request denied"}),
    ))
}
