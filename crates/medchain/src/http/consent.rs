//! Consent: in person at the patient's home (the seed's `/api/request_consent`), remote
//! requests and the patient's answer, revocation, and the two-step signature of an action by
//! a device key (`/api/sign/{preparedId}`). Every grant and request lives on chain.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ledger::rules::{GrantRow, RequestRow};
use ledger::tx::{Attested, Scope};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::client::ClientAddr;
use super::extract::{ApiJson, Authed, Doctor, Patient, check_len, parse_body, required};
use super::openapi::{ErrorBody, ScopeSchema};
use super::records::RecordAdded;
use super::throttle::Asker;
use super::{ApiError, ApiResult, AppState};
use crate::app::flows::{
    Consent, Content, GrantInfo, PreparedView, Signed, Signing, Who, parse_key, parse_tx_id,
};
use crate::app::{Account, Role};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/request_consent", post(in_person))
        .route("/api/consents", get(list))
        .route("/api/consents/request", post(request_remote))
        .route("/api/consents/pending", get(pending))
        .route("/api/consents/requested", get(requests_made))
        .route("/api/consents/{id}", get(one))
        .route("/api/consents/{id}/approve", post(approve))
        .route("/api/consents/{id}/deny", post(deny))
        .route("/api/grants/{id}/revoke", post(revoke))
        .route("/api/sign/{prepared}", post(sign))
}

const DEFAULT_PURPOSE: &str = "Consultation";

/// The additive `scope` of a grant or request: `"write"` (the default) or
/// `{"read": {"durationMs": N}}`.
#[derive(Deserialize, Clone, Copy, ToSchema)]
#[serde(rename_all = "camelCase")]
enum ScopeBody {
    /// One record, within 5 minutes of the grant's block.
    Write,
    /// Reads for `durationMs` (1 minute to 30 days; default 1 hour) from the grant's block.
    Read {
        #[serde(rename = "durationMs")]
        #[schema(minimum = 60_000, maximum = 2_592_000_000_u64)]
        duration_ms: Option<u64>,
    },
}

/// A read grant's default length: one hour.
pub const DEFAULT_READ_MS: u64 = 3_600_000;

fn scope_of(body: Option<ScopeBody>) -> Scope {
    match body {
        None | Some(ScopeBody::Write) => Scope::Write,
        Some(ScopeBody::Read { duration_ms }) => Scope::Read {
            duration_ms: duration_ms.unwrap_or(DEFAULT_READ_MS),
        },
    }
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

/// How the caller signs: with `devicePublicKey` (hex) through a prepared envelope, else
/// custodially.
pub(crate) fn who_of(device_public_key: Option<String>) -> ApiResult<Who> {
    match device_public_key {
        None => Ok(Who::Custodial),
        Some(hex) => parse_key(&hex).map(Who::Device).ok_or_else(|| {
            ApiError::validation("devicePublicKey", "devicePublicKey must be 64 hex digits")
        }),
    }
}

fn consent_id(id: &str) -> ApiResult<ledger::TxId> {
    parse_tx_id(id).ok_or_else(|| ApiError::NotFound("No such consent".into()))
}

/// `202`: the page must sign `signingBytes` with its device key and post the signature to
/// `/api/sign/{preparedId}`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct SignatureNeeded {
    success: bool,
    signature_needed: bool,
    prepared_id: String,
    signing_bytes: String,
    tx: TxPreview,
}

/// What the page checks against what the user clicked: `{kind, meta}` as the ledger writes a
/// transaction's metadata in JSON (ids in hex), the body's bytes in hex (sealed, for a sealed
/// kind) and, for a sealed kind, `plain`: the content as typed, from this request, never
/// stored (docs/SECURITY.md §1.2).
#[derive(Serialize, ToSchema)]
struct TxPreview {
    #[serde(flatten)]
    #[schema(value_type = super::openapi::TxMeta)]
    meta: ledger::Meta,
    /// The body's bytes (hex): sealed, for a kind with content.
    body: String,
    /// The content as typed (`{diagnosis, prescription, notes}` or `{purpose}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    plain: Option<serde_json::Value>,
}

fn plain_json(content: &Content) -> Option<serde_json::Value> {
    match content {
        Content::Empty => None,
        Content::Record(record) => serde_json::to_value(record).ok(),
        Content::Purpose(purpose) => serde_json::to_value(purpose).ok(),
    }
}

impl From<PreparedView> for SignatureNeeded {
    fn from(view: PreparedView) -> Self {
        SignatureNeeded {
            success: true,
            signature_needed: true,
            prepared_id: view.id,
            signing_bytes: hex::encode(&view.signing_bytes),
            tx: TxPreview {
                plain: plain_json(&view.plain),
                meta: view.meta,
                body: hex::encode(&view.body),
            },
        }
    }
}

/// The id of a transaction an action submitted.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TxAnswer {
    success: bool,
    tx_id: String,
}

impl TxAnswer {
    pub(crate) fn new(tx: ledger::TxId) -> Self {
        TxAnswer {
            success: true,
            tx_id: hex::encode(tx),
        }
    }
}

/// An answer that may first need a device signature.
pub(crate) fn answer<T: Serialize>(outcome: Signing<T>) -> Response {
    match outcome {
        Signing::Done(answer) => Json(answer).into_response(),
        Signing::NeedsSignature(view) => {
            (StatusCode::ACCEPTED, Json(SignatureNeeded::from(*view))).into_response()
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct InPersonBody {
    /// The patient's login here, or their person id (32 hex digits).
    #[schema(value_type = String, required = true, min_length = 1, max_length = 64)]
    #[schema(example = "p001")]
    patient_id: Option<String>,
    /// The patient's own password, typed by the patient.
    #[schema(value_type = String, required = true, example = "patient123")]
    password: Option<Zeroizing<String>>,
    /// Default `Consultation`.
    #[schema(max_length = 200)]
    purpose: Option<String>,
    scope: Option<ScopeBody>,
}

/// The seed's answer to `request_consent`, and what medchain adds.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct InPersonAnswer {
    success: bool,
    /// A write grant's code, shown once (none for a read grant).
    otp: Option<String>,
    /// Seconds the grant lasts (300 for a write grant).
    expiry: u64,
    expires_at: u64,
    consent_id: String,
    grant_tx_id: String,
}

/// The seed's in-person consent: the patient's own password, typed on the doctor's screen, at
/// the node that is home to both. Answers the code only once the grant is applied on chain.
#[utoipa::path(
    post, path = "/api/request_consent", tag = "consent",
    request_body = InPersonBody,
    responses(
        (status = 200, description = "The grant is applied on chain: a write grant's code \
            (`otp`), shown once", body = InPersonAnswer),
        (status = 400, description = "A missing or invalid field", body = ErrorBody),
        (status = 401, description = "No (valid) session, or `Invalid patient credentials`",
            body = ErrorBody),
        (status = 403, description = "Not a doctor; `wrong_hospital` (a doctor acts at home); \
            `consent_elsewhere` (not the patient's home)", body = ErrorBody),
        (status = 409, description = "The chain refused the grant (its rule's reason)",
            body = ErrorBody),
        (status = 429, description = "Too many wrong passwords for this patient; wait",
            body = ErrorBody),
        (status = 503, description = "The validator is busy, stopped, or did not apply the \
            step in time; retry", body = ErrorBody),
    )
)]
async fn in_person(
    State(state): State<AppState>,
    client: ClientAddr,
    Doctor(doctor): Doctor,
    ApiJson(body): ApiJson<InPersonBody>,
) -> ApiResult<Json<InPersonAnswer>> {
    let patient_id = required("patientId", body.patient_id, 64)?;
    let Some(password) = body.password else {
        return Err(ApiError::MissingField("password".into()));
    };
    let purpose = purpose_of(body.purpose)?;
    let scope = scope_of(body.scope);
    let patient = state
        .verify_password(
            client,
            &Asker::PatientAtDesk {
                doctor: doctor.id.clone(),
            },
            patient_id,
            Some(Role::Patient),
            password,
        )
        .await?
        .ok_or_else(|| ApiError::Unauthorized("Invalid patient credentials".into()))?;
    let grant = state
        .flows
        .grant_in_person(&doctor, &patient, scope, purpose)
        .await?;
    let id = hex::encode(grant.grant);
    let seconds = match grant.scope {
        Scope::Write => ledger::rules::WRITE_GRANT_MS / 1000,
        Scope::Read { duration_ms } => duration_ms / 1000,
    };
    Ok(Json(InPersonAnswer {
        success: true,
        otp: grant.code.map(|c| c.code.to_string()),
        expiry: seconds,
        expires_at: grant.expires_ms,
        consent_id: id.clone(),
        grant_tx_id: id,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct RemoteBody {
    /// The patient's login here, or their person id (32 hex digits).
    #[schema(value_type = String, required = true, min_length = 1, max_length = 64)]
    #[schema(example = "p001")]
    patient_id: Option<String>,
    #[schema(value_type = String, required = true, min_length = 1, max_length = 200)]
    purpose: Option<String>,
    scope: Option<ScopeBody>,
    /// Sign with this device key (64 hex digits): answers 202 with the bytes to sign.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    device_public_key: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct RequestAnswer {
    success: bool,
    consent: RequestSent,
}

#[derive(Serialize, ToSchema)]
struct RequestSent {
    id: String,
    kind: &'static str,
    state: &'static str,
}

fn requested(id: ledger::TxId) -> RequestAnswer {
    RequestAnswer {
        success: true,
        consent: RequestSent {
            id: hex::encode(id),
            kind: "request",
            state: "requested",
        },
    }
}

/// A doctor asks a patient remotely; the patient answers on their dashboard, at any hospital
/// where they have a login.
#[utoipa::path(
    post, path = "/api/consents/request", tag = "consent",
    request_body = RemoteBody,
    responses(
        (status = 200, description = "Requested: durable here, on chain within the batch \
            window", body = RequestAnswer),
        (status = 400, description = "A missing or invalid field", body = ErrorBody),
        (status = 403, description = "Not a doctor, `wrong_hospital`, or a device key that is \
            not a live key of the caller", body = ErrorBody),
        (status = 404, description = "No such patient", body = ErrorBody),
        (status = 409, description = "The chain refused it (its rule's reason)", body = ErrorBody),
        (status = 429, description = "Over a cap of pending requests (3 per doctor and \
            patient, 10 per requesting hospital and patient; the message is the chain's reason)",
            body = ErrorBody),
        (status = 503, description = "The validator is busy, stopped, or did not apply the \
            step in time; retry", body = ErrorBody),
    )
)]
async fn request_remote(
    State(state): State<AppState>,
    Doctor(doctor): Doctor,
    ApiJson(body): ApiJson<RemoteBody>,
) -> ApiResult<Response> {
    let patient_id = required("patientId", body.patient_id, 64)?;
    let purpose = required("purpose", body.purpose, 200)?;
    let who = who_of(body.device_public_key)?;
    let outcome = state
        .flows
        .request_grant(&doctor, who, &patient_id, scope_of(body.scope), purpose)
        .await?;
    Ok(answer(outcome.map(requested)))
}

/// A grant as the dashboards show it (snake_case, as the consent views always were).
#[derive(Serialize, ToSchema)]
struct GrantView {
    id: String,
    kind: &'static str,
    patient_id: Option<String>,
    doctor_id: Option<String>,
    doctor_name: Option<String>,
    department: Option<String>,
    /// `write` or `read`.
    #[schema(value_type = super::openapi::ScopeName)]
    scope: &'static str,
    duration_ms: Option<u64>,
    /// `device` (approved on the patient's device) or `in_person` (attested at their home).
    #[schema(value_type = super::openapi::AttestedName)]
    attested: Attested,
    request: Option<String>,
    granted_ms: u64,
    expires_ms: u64,
    /// `active`, `used`, `revoked` or `expired`, at this node's clock.
    state: &'static str,
    time_left_ms: u64,
    used_by: Option<String>,
    revoked_by: Option<String>,
    /// A doctor's live read grant, at their home: how the keys of the patient's records stand
    /// here (docs/SECURITY.md §13).
    #[serde(skip_serializing_if = "Option::is_none")]
    keys: Option<KeysView>,
}

/// `{held, waiting, from, since_ms}`: records of the patient whose keys this hospital holds,
/// those it waits for, the hospital it waits for (the patient's home, when none waits), and
/// since when the longest-waiting one has waited (null when none waits).
#[derive(Serialize, ToSchema)]
struct KeysView {
    held: u64,
    waiting: u64,
    from: String,
    since_ms: Option<u64>,
}

fn grant_view(row: &GrantRow, info: Option<&GrantInfo>, now: u64) -> GrantView {
    let state = if row.revoked.is_some() {
        "revoked"
    } else if row.used.is_some() {
        "used"
    } else if now >= row.expires_ms {
        "expired"
    } else {
        "active"
    };
    let (scope, duration_ms) = match row.scope {
        Scope::Write => ("write", None),
        Scope::Read { duration_ms } => ("read", Some(duration_ms)),
    };
    GrantView {
        id: hex::encode(row.id),
        kind: "grant",
        patient_id: info
            .and_then(|i| i.patient_login.clone())
            .or_else(|| Some(hex::encode(row.patient))),
        doctor_id: info
            .and_then(|i| i.doctor_login.clone())
            .or_else(|| Some(hex::encode(row.doctor))),
        doctor_name: info.and_then(|i| i.doctor_name.clone()),
        department: info.and_then(|i| i.department.clone()),
        scope,
        duration_ms,
        attested: row.attested,
        request: row.request.map(hex::encode),
        granted_ms: row.granted_ms,
        expires_ms: row.expires_ms,
        state,
        time_left_ms: if state == "active" {
            row.expires_ms - now
        } else {
            0
        },
        used_by: row.used.map(hex::encode),
        revoked_by: row.revoked.map(hex::encode),
        keys: None,
    }
}

/// A request as its doctor or patient sees it.
#[derive(Serialize, ToSchema)]
struct RequestView {
    id: String,
    kind: &'static str,
    patient_id: String,
    doctor_id: String,
    #[schema(value_type = ScopeSchema)]
    scope: Scope,
    requested_ms: u64,
    expires_ms: u64,
    /// `requested`, `granted`, `denied` or `request_expired`, at this node's clock.
    state: &'static str,
    time_left_ms: u64,
    /// The grant or revocation that answered it.
    answer: Option<String>,
}

fn request_view(row: &RequestRow, now: u64) -> RequestView {
    let state = match row.answered {
        Some((_, ledger::rules::Answer::Granted)) => "granted",
        Some((_, ledger::rules::Answer::Denied)) => "denied",
        None if now >= row.expires_ms => "request_expired",
        None => "requested",
    };
    RequestView {
        id: hex::encode(row.id),
        kind: "request",
        patient_id: hex::encode(row.patient),
        doctor_id: hex::encode(row.doctor),
        scope: row.scope,
        requested_ms: row.created_ms,
        expires_ms: row.expires_ms,
        state,
        time_left_ms: if state == "requested" {
            row.expires_ms - now
        } else {
            0
        },
        answer: row.answered.map(|(tx, _)| hex::encode(tx)),
    }
}

#[derive(Serialize, ToSchema)]
struct GrantsAnswer {
    success: bool,
    consents: Vec<GrantView>,
}

/// The caller's grants from the chain: a doctor's (received), a patient's (given).
#[utoipa::path(
    get, path = "/api/consents", tag = "consent",
    responses(
        (status = 200, description = "Grants, newest first", body = GrantsAnswer),
        (status = 403, description = "`wrong_hospital`, or a login this hospital may not serve",
            body = ErrorBody),
        (status = 503, description = "The validator is busy, stopped, or did not apply the \
            step in time; retry", body = ErrorBody),
    )
)]
async fn list(State(state): State<AppState>, auth: Authed) -> ApiResult<Json<GrantsAnswer>> {
    let now = state.now_ms();
    let grants = state.flows.grants(auth.account()).await?;
    Ok(Json(GrantsAnswer {
        success: true,
        consents: grants
            .iter()
            .map(|g| GrantView {
                keys: g.keys.map(|keys| KeysView {
                    held: keys.held,
                    waiting: keys.waiting,
                    from: state.flows.hospital(keys.from),
                    since_ms: keys.since_ms,
                }),
                ..grant_view(&g.row, Some(g), now)
            })
            .collect(),
    }))
}

/// A pending request as the patient sees it.
#[derive(Serialize, Clone, ToSchema)]
struct PendingView {
    id: String,
    doctor_id: String,
    doctor_name: Option<String>,
    department: Option<String>,
    hospital: String,
    /// The purpose, or, where this hospital cannot open it, the notice saying so.
    purpose: String,
    /// Whether the purpose opens here; a request whose purpose does not is approved at the
    /// patient's home (403 `approve_at_home`).
    purpose_opens: bool,
    #[schema(value_type = ScopeSchema)]
    scope: Scope,
    requested_ms: u64,
    expires_ms: u64,
    time_left_ms: u64,
    state: &'static str,
}

#[derive(Serialize, ToSchema)]
struct PendingGroup {
    hospital: String,
    requests: Vec<PendingView>,
}

#[derive(Serialize, ToSchema)]
struct PendingAnswer {
    success: bool,
    /// Every pending request, newest first within each hospital's group.
    requests: Vec<PendingView>,
    groups: Vec<PendingGroup>,
}

/// The patient's requests pending on chain, grouped by requesting hospital, newest first.
#[utoipa::path(
    get, path = "/api/consents/pending", tag = "consent",
    responses(
        (status = 200, description = "Pending requests", body = PendingAnswer),
        (status = 403, description = "Not a patient, or a login this hospital may not serve",
            body = ErrorBody),
        (status = 503, description = "The validator is busy, stopped, or did not apply the \
            step in time; retry", body = ErrorBody),
    )
)]
async fn pending(
    State(state): State<AppState>,
    Patient(patient): Patient,
) -> ApiResult<Json<PendingAnswer>> {
    let now = state.now_ms();
    let groups: Vec<PendingGroup> = state
        .flows
        .pending_requests(&patient)
        .await?
        .into_iter()
        .map(|group| PendingGroup {
            requests: group
                .requests
                .into_iter()
                .map(|r| PendingView {
                    id: hex::encode(r.row.id),
                    doctor_id: r.doctor_login.unwrap_or_else(|| hex::encode(r.row.doctor)),
                    doctor_name: r.doctor_name,
                    department: r.department,
                    hospital: group.hospital_name.clone(),
                    purpose: r.purpose,
                    purpose_opens: r.purpose_opens,
                    scope: r.row.scope,
                    requested_ms: r.row.created_ms,
                    expires_ms: r.row.expires_ms,
                    time_left_ms: r.row.expires_ms.saturating_sub(now),
                    state: "requested",
                })
                .collect(),
            hospital: group.hospital_name,
        })
        .collect();
    Ok(Json(PendingAnswer {
        success: true,
        requests: groups.iter().flat_map(|g| g.requests.clone()).collect(),
        groups,
    }))
}

/// A request a doctor made, as the doctor sees it.
#[derive(Serialize, ToSchema)]
struct RequestedView {
    id: String,
    patient_id: String,
    purpose: String,
    #[schema(value_type = ScopeSchema)]
    scope: Scope,
    requested_ms: u64,
    expires_ms: u64,
    time_left_ms: u64,
    state: &'static str,
}

#[derive(Serialize, ToSchema)]
struct RequestedAnswer {
    success: bool,
    requests: Vec<RequestedView>,
}

/// The doctor's own requests still waiting for their patients' answers, newest first.
#[utoipa::path(
    get, path = "/api/consents/requested", tag = "consent",
    responses(
        (status = 200, description = "The doctor's pending requests", body = RequestedAnswer),
        (status = 403, description = "Not a doctor, or `wrong_hospital`", body = ErrorBody),
        (status = 503, description = "The validator is busy, stopped, or did not apply the \
            step in time; retry", body = ErrorBody),
    )
)]
async fn requests_made(
    State(state): State<AppState>,
    Doctor(doctor): Doctor,
) -> ApiResult<Json<RequestedAnswer>> {
    let now = state.now_ms();
    let requests = state
        .flows
        .requests_made(&doctor)
        .await?
        .into_iter()
        .map(|r| RequestedView {
            id: hex::encode(r.row.id),
            patient_id: r
                .patient_login
                .unwrap_or_else(|| hex::encode(r.row.patient)),
            purpose: r.purpose,
            scope: r.row.scope,
            requested_ms: r.row.created_ms,
            expires_ms: r.row.expires_ms,
            time_left_ms: r.row.expires_ms.saturating_sub(now),
            state: "requested",
        })
        .collect();
    Ok(Json(RequestedAnswer {
        success: true,
        requests,
    }))
}

/// A grant or a request.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum ConsentView {
    Grant(GrantView),
    Request(RequestView),
}

#[derive(Serialize, ToSchema)]
struct ConsentAnswer {
    success: bool,
    consent: ConsentView,
}

/// One grant or request, to its patient or its doctor only.
#[utoipa::path(
    get, path = "/api/consents/{id}", tag = "consent",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{64}$",
        description = "The consent's id: a grant's or a request's transaction id (64 hex digits)")),
    responses(
        (status = 200, description = "The grant or the request", body = ConsentAnswer),
        (status = 403, description = "A login this hospital may not serve", body = ErrorBody),
        (status = 404, description = "No such consent of the caller's", body = ErrorBody),
        (status = 503, description = "The validator is busy, stopped, or did not apply the \
            step in time; retry", body = ErrorBody),
    )
)]
async fn one(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<ConsentAnswer>> {
    let id = consent_id(&id)?;
    let now = state.now_ms();
    let consent = match state.flows.consent(auth.account(), id).await? {
        Consent::Grant(g) => ConsentView::Grant(grant_view(&g, None, now)),
        Consent::Request(q) => ConsentView::Request(request_view(&q, now)),
    };
    Ok(Json(ConsentAnswer {
        success: true,
        consent,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct AnswerBody {
    /// Sign with this device key (64 hex digits): answers 202 with the bytes to sign.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    device_public_key: Option<String>,
    /// An approval's read duration, in place of the request's.
    duration_ms: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct GrantAnswer {
    success: bool,
    grant_tx_id: String,
    expires_at: u64,
}

/// The patient approves a pending request, with their device key only (else 403
/// `approve_on_device`).
#[utoipa::path(
    post, path = "/api/consents/{id}/approve", tag = "consent",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{64}$",
        description = "The consent's id: a grant's or a request's transaction id (64 hex digits)")),
    request_body = AnswerBody,
    responses(
        (status = 200, description = "The grant is applied", body = GrantAnswer),
        (status = 400, description = "An invalid field", body = ErrorBody),
        (status = 403, description = "Not a patient; `approve_on_device` (without a device \
            key); `approve_at_home` (a read request away from home, or a purpose this hospital \
            cannot open)", body = ErrorBody),
        (status = 404, description = "No such request of the caller's", body = ErrorBody),
        (status = 409, description = "No longer pending, or the chain refused it",
            body = ErrorBody),
        (status = 503, description = "The validator is busy, stopped, or did not apply the \
            step in time; retry", body = ErrorBody),
    )
)]
async fn approve(
    State(state): State<AppState>,
    Patient(patient): Patient,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AnswerBody>,
) -> ApiResult<Response> {
    let id = consent_id(&id)?;
    let who = who_of(body.device_public_key)?;
    let outcome = state
        .flows
        .approve_request(&patient, who, id, body.duration_ms)
        .await?;
    Ok(answer(outcome.map(|(grant, expires_at)| GrantAnswer {
        success: true,
        grant_tx_id: hex::encode(grant),
        expires_at,
    })))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct RevokeAnswer {
    success: bool,
    message: &'static str,
    tx_id: String,
}

async fn revoke_target(
    state: &AppState,
    patient: &Account,
    id: &str,
    body: AnswerBody,
    message: &'static str,
) -> ApiResult<Response> {
    let id = consent_id(id)?;
    let who = who_of(body.device_public_key)?;
    let outcome = state.flows.revoke(patient, who, id).await?;
    Ok(answer(outcome.map(|tx| RevokeAnswer {
        success: true,
        message,
        tx_id: hex::encode(tx),
    })))
}

/// The patient denies a pending request (device key, or custodially at their home).
#[utoipa::path(
    post, path = "/api/consents/{id}/deny", tag = "consent",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{64}$",
        description = "The consent's id: a grant's or a request's transaction id (64 hex digits)")),
    request_body = AnswerBody,
    responses(
        (status = 200, description = "Denied on chain", body = RevokeAnswer),
        (status = 400, description = "An invalid field", body = ErrorBody),
        (status = 403, description = "Not a patient, or `approve_on_device` (custodially only \
            at the patient's home)", body = ErrorBody),
        (status = 404, description = "No such request of the caller's", body = ErrorBody),
        (status = 409, description = "No longer pending, or the chain refused it",
            body = ErrorBody),
        (status = 503, description = "The validator is busy, stopped, or did not apply the \
            step in time; retry", body = ErrorBody),
    )
)]
async fn deny(
    State(state): State<AppState>,
    Patient(patient): Patient,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AnswerBody>,
) -> ApiResult<Response> {
    revoke_target(&state, &patient, &id, body, "Consent request denied").await
}

/// The patient revokes a grant not used up (device key, or custodially at their home).
#[utoipa::path(
    post, path = "/api/grants/{id}/revoke", tag = "consent",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{64}$",
        description = "The grant's id (64 hex digits)")),
    request_body = AnswerBody,
    responses(
        (status = 200, description = "Revoked on chain", body = RevokeAnswer),
        (status = 400, description = "An invalid field", body = ErrorBody),
        (status = 403, description = "Not a patient, or `approve_on_device` (custodially only \
            at the patient's home)", body = ErrorBody),
        (status = 404, description = "No such grant of the caller's", body = ErrorBody),
        (status = 409, description = "The chain refused it (`grant already used`, ...)",
            body = ErrorBody),
        (status = 503, description = "The validator is busy, stopped, or did not apply the \
            step in time; retry", body = ErrorBody),
    )
)]
async fn revoke(
    State(state): State<AppState>,
    Patient(patient): Patient,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AnswerBody>,
) -> ApiResult<Response> {
    revoke_target(&state, &patient, &id, body, "Grant revoked").await
}

#[derive(Deserialize, ToSchema)]
struct SignBody {
    /// The device key's Ed25519 signature of `signingBytes` (128 hex digits).
    #[schema(value_type = String, required = true, pattern = "^[0-9a-fA-F]{128}$")]
    signature: Option<String>,
}

/// What a signed envelope did: the answer of the action that prepared it.
#[derive(Serialize)]
#[serde(untagged)]
enum SignedAnswer {
    Record(RecordAdded),
    Grant(GrantAnswer),
    Requested(RequestAnswer),
    Tx(TxAnswer),
}

/// Any of the four: a JSON object may match more than one (`anyOf`, not `oneOf`).
impl utoipa::PartialSchema for SignedAnswer {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        super::openapi::any_of([
            RecordAdded::name(),
            GrantAnswer::name(),
            RequestAnswer::name(),
            TxAnswer::name(),
        ])
    }
}

impl ToSchema for SignedAnswer {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        super::openapi::collect::<RecordAdded>(schemas);
        super::openapi::collect::<GrantAnswer>(schemas);
        super::openapi::collect::<RequestAnswer>(schemas);
        super::openapi::collect::<TxAnswer>(schemas);
    }
}

/// The device signature of a prepared envelope; answers what the action answers.
#[utoipa::path(
    post, path = "/api/sign/{prepared}", tag = "consent",
    params(("prepared" = String, Path, description = "`preparedId` of the 202 answer")),
    request_body = SignBody,
    responses(
        (status = 200, description = "What the action that prepared the envelope answers",
            body = SignedAnswer),
        (status = 400, description = "A missing or malformed signature, or one that does not \
            verify under the device key", body = ErrorBody),
        (status = 403, description = "The device key is no longer a live key of the caller, or \
            a refusal of the action (as it answers)", body = ErrorBody),
        (status = 404, description = "No such envelope waiting for this login's signature",
            body = ErrorBody),
        (status = 409, description = "The chain refused the transaction", body = ErrorBody),
        (status = 413, description = "The transaction is over the validators' limit",
            body = ErrorBody),
        (status = 429, description = "Over a cap of pending requests", body = ErrorBody),
        (status = 503, description = "The validator is busy, stopped, or did not apply the \
            step in time; retry", body = ErrorBody),
    )
)]
async fn sign(
    State(state): State<AppState>,
    auth: Authed,
    Path(prepared): Path<String>,
    ApiJson(body): ApiJson<SignBody>,
) -> ApiResult<Json<SignedAnswer>> {
    let text = required("signature", body.signature, 128)?;
    let mut signature = [0u8; 64];
    hex::decode_to_slice(&text, &mut signature)
        .map_err(|_| ApiError::validation("signature", "signature must be 128 hex digits"))?;
    let outcome = state
        .flows
        .sign_prepared(auth.account(), &prepared, signature)
        .await?;
    Ok(Json(match outcome {
        Signed::Record(r) => SignedAnswer::Record(RecordAdded::from(r)),
        Signed::Grant { grant, expires_ms } => SignedAnswer::Grant(GrantAnswer {
            success: true,
            grant_tx_id: hex::encode(grant),
            expires_at: expires_ms,
        }),
        Signed::Requested { request } => SignedAnswer::Requested(requested(request)),
        Signed::Submitted { tx } => SignedAnswer::Tx(TxAnswer::new(tx)),
    }))
}

/// `bytes` parsed as each JSON body of this area's handlers, as their [`ApiJson`] parses it
/// (the `api_json` fuzz target, `http::fuzzing`).
pub(super) fn parse_bodies(bytes: &[u8]) -> Vec<Result<(), ApiError>> {
    vec![
        parse_body::<InPersonBody>(bytes).map(drop),
        parse_body::<RemoteBody>(bytes).map(drop),
        parse_body::<AnswerBody>(bytes).map(drop),
        parse_body::<SignBody>(bytes).map(drop),
    ]
}
