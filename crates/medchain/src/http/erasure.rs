//! Erasure (docs/SECURITY.md, issue 10, §7): a patient asks, at their home, for one of their
//! records to be erased, and sees their requests and the answers of the hospitals that wrote
//! them. Hospitals answer with `medchain erasure answer`, not through this API.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use ledger::tx::{Decision, SignerKind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::consent::{TxAnswer, answer, who_of};
use super::extract::{ApiJson, Patient};
use super::openapi::ErrorBody;
use super::{ApiError, ApiResult, AppState};
use crate::app::flows::erasure::ErasureView;
use crate::app::flows::parse_tx_id;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/records/{id}/erasure", post(request))
        .route("/api/erasures", get(list))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct RequestBody {
    /// Sign with this device key (64 hex digits): answers 202 with the bytes to sign.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    device_public_key: Option<String>,
}

/// The patient asks for record `id` (or a request or grant of theirs) to be erased: with
/// their device key (202, then `/api/sign`), or custodially, at their home only (403
/// `approve_at_home` elsewhere). Answers once the request is applied on chain.
#[utoipa::path(
    post, path = "/api/records/{id}/erasure", tag = "erasure",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{64}$",
        description = "The record's (or request's, grant's) transaction id (64 hex digits)")),
    request_body = RequestBody,
    responses(
        (status = 200, description = "The erasure request is applied on chain", body = TxAnswer),
        (status = 400, description = "An invalid field", body = ErrorBody),
        (status = 403, description = "Not a patient; `approve_at_home` (only a key of the home \
            signs it); a device key too young or not the caller's", body = ErrorBody),
        (status = 404, description = "No such record, request or grant of the caller's",
            body = ErrorBody),
        (status = 409, description = "The chain refused it (`an erasure of this transaction is \
            already pending`, `transaction already erased`, a young key's wait)",
            body = ErrorBody),
        (status = 503, description = "The validator is busy, stopped, or did not apply the \
            step in time; retry", body = ErrorBody),
    )
)]
async fn request(
    State(state): State<AppState>,
    Patient(patient): Patient,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RequestBody>,
) -> ApiResult<Response> {
    let tx = parse_tx_id(&id).ok_or_else(|| ApiError::NotFound("No such record".into()))?;
    let who = who_of(body.device_public_key)?;
    let outcome = state.flows.request_erasure(&patient, who, tx).await?;
    Ok(answer(outcome.map(TxAnswer::new)))
}

/// One erasure request as its patient sees it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ErasureJson {
    /// The `RequestErasure`.
    id: String,
    /// What it names: a record (`add_record`), or a request or grant.
    tx: String,
    kind: &'static str,
    department: Option<String>,
    doctor_person_id: Option<String>,
    doctor_name: Option<String>,
    /// When what it names was written (its block time).
    written_ms: u64,
    /// The hospital that answers: the one whose doctor wrote it.
    hospital: String,
    /// `device` or `custodial` (in person at the home).
    #[schema(value_type = super::openapi::SignerKindName)]
    requested_by: SignerKind,
    requested_how: String,
    requested_ms: u64,
    /// `pending`, `erased` or `refused`.
    state: &'static str,
    answered_ms: Option<u64>,
    /// A refusal's reason code (`retention_period`, `ongoing_care`, `legal_claims`,
    /// `public_health`) and, for a retention period, until when.
    #[schema(value_type = Option<super::openapi::RefusalName>)]
    reason: Option<ledger::tx::Refusal>,
    until_ms: Option<u64>,
    /// What the patient is told: `waiting for <hospital>'s answer since <date>`, `erased at the
    /// patient's request on <date>`, or `refused by <hospital> on <date>: <reason>[, until
    /// <date>]`.
    notice: String,
}

#[derive(Serialize, ToSchema)]
struct ErasuresAnswer {
    success: bool,
    erasures: Vec<ErasureJson>,
}

/// The signed-in patient's erasure requests and their answers, newest first.
#[utoipa::path(
    get, path = "/api/erasures", tag = "erasure",
    responses(
        (status = 200, description = "The caller's erasure requests", body = ErasuresAnswer),
        (status = 403, description = "Not a patient, or a login this hospital may not serve",
            body = ErrorBody),
        (status = 503, description = "The validator is busy, stopped, or did not apply the \
            step in time; retry", body = ErrorBody),
    )
)]
async fn list(
    State(state): State<AppState>,
    Patient(patient): Patient,
) -> ApiResult<Json<ErasuresAnswer>> {
    let home = patient.home.unwrap_or(state.flows.here().index);
    let erasures = state
        .flows
        .erasures(&patient)
        .await?
        .into_iter()
        .map(|e| erasure_json(&state, &e, home))
        .collect();
    Ok(Json(ErasuresAnswer {
        success: true,
        erasures,
    }))
}

fn erasure_json(state: &AppState, e: &ErasureView, home: u32) -> ErasureJson {
    let (reason, until_ms) = match e.row.answer.as_ref().map(|a| a.decision) {
        Some(Decision::Refuse { reason, until_ms }) => (Some(reason), until_ms),
        _ => (None, None),
    };
    ErasureJson {
        id: hex::encode(e.row.id),
        tx: hex::encode(e.row.target),
        kind: e.target.kind,
        department: e.target.department.clone(),
        doctor_person_id: e.target.doctor.map(hex::encode),
        doctor_name: e.target.doctor_name.clone(),
        written_ms: e.target.time_ms,
        hospital: state.flows.hospital(e.row.hospital),
        requested_by: e.row.requested_by,
        requested_how: e.requested_how(&state.flows, home),
        requested_ms: e.row.requested_ms,
        state: e.state(),
        answered_ms: e.row.answer.as_ref().map(|a| a.block_time_ms),
        reason,
        until_ms,
        notice: e.notice(&state.flows),
    }
}
