//! Identities: who the signed-in person is on chain, their links and keys, and adding the
//! device key a page made (docs/SECURITY.md, issue 9, §5.8).

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use ledger::tx::{KeyKind, SignerKind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use axum::extract::Path;
use axum::response::Response;
use ledger::tx::AskWhat;

use super::consent::{TxAnswer, answer, who_of};
use super::extract::{ApiJson, Authed, parse_body, required};
use super::openapi::ErrorBody;
use super::{ApiError, ApiResult, AppState};
use crate::app::flows::{KeyAdded, parse_key};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/identity", get(identity))
        .route("/api/keys", post(add_key))
        .route("/api/keys/{key}/revoke", post(revoke_key))
        .route("/api/asks", get(asks))
        .route("/api/asks/approve", post(approve_ask))
}

/// One key of the person, as the chain holds it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct KeyView {
    public_key: String,
    #[schema(value_type = super::openapi::KeyKindName)]
    kind: KeyKind,
    /// The hospital whose page made a device key, or that holds a custodial key.
    origin: String,
    /// Who signed the transaction that added it: the home's validator, a device, a custodial key.
    #[schema(value_type = super::openapi::SignerKindName)]
    added_by: SignerKind,
    added_tx: String,
    /// User text (never the key's origin).
    label: String,
    /// `live`, `revoked`, or `waiting` (a recovered key before its waiting period ends).
    status: &'static str,
    active_from_ms: u64,
    /// When it was added (its block's time).
    added_ms: u64,
    /// A live key added with the password alone (or vouched for by a key that could not
    /// vouch): until this time it shares the history with no other hospital and requests no
    /// erasure (docs/SECURITY.md, "Confidential records", §4.2). Null when it is not young.
    young_until_ms: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct RecoveryView {
    tx: String,
    public_key: String,
    effective_ms: u64,
    cancelled: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct IdentityAnswer {
    success: bool,
    person_id: String,
    #[schema(value_type = super::openapi::RoleName)]
    role: ledger::tx::Role,
    department: Option<String>,
    name: Option<String>,
    home: String,
    home_here: bool,
    /// The hospitals, other than the home, that may serve this person.
    links: Vec<String>,
    keys: Vec<KeyView>,
    recoveries: Vec<RecoveryView>,
}

#[utoipa::path(
    get, path = "/api/identity", tag = "identity",
    responses(
        (status = 200, description = "The caller on chain: links, keys, recoveries",
            body = IdentityAnswer),
        (status = 403, description = "A login this hospital may not serve", body = ErrorBody),
        (status = 503, description = "`not on chain yet`, or the validator is busy or stopped; \
            retry", body = ErrorBody),
    )
)]
async fn identity(State(state): State<AppState>, auth: Authed) -> ApiResult<Json<IdentityAnswer>> {
    let view = state.flows.identity(auth.account()).await?;
    let now = state.now_ms();
    let flows = &state.flows;
    Ok(Json(IdentityAnswer {
        success: true,
        person_id: hex::encode(view.person.person),
        role: view.person.role,
        department: view.person.department,
        name: view.person.name,
        home: flows.hospital(view.person.home),
        home_here: view.person.home == flows.here().index,
        links: view
            .links
            .iter()
            .map(|l| flows.hospital(l.validator))
            .collect(),
        keys: view
            .keys
            .iter()
            .map(|k| KeyView {
                public_key: hex::encode(k.key),
                kind: k.kind,
                origin: flows.hospital(k.origin),
                added_by: k.added_by,
                added_tx: hex::encode(k.added),
                label: k.label.clone(),
                status: if k.revoked.is_some() {
                    "revoked"
                } else if k.active_from_ms > now {
                    "waiting"
                } else {
                    "live"
                },
                active_from_ms: k.active_from_ms,
                added_ms: k.added_ms,
                young_until_ms: (k.revoked.is_none() && k.young_at(now))
                    .then_some(k.young_until_ms),
            })
            .collect(),
        recoveries: view
            .recoveries
            .iter()
            .map(|r| RecoveryView {
                tx: hex::encode(r.id),
                public_key: hex::encode(r.key),
                effective_ms: r.effective_ms,
                cancelled: r.cancelled.is_some(),
            })
            .collect(),
    }))
}

/// The one label of a key made at a page: labels are on chain, in clear, for every validator.
pub const PAGE_KEY_LABEL: &str = "web browser";

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct AddKeyBody {
    /// The new key (64 hex digits).
    #[schema(value_type = String, required = true, pattern = "^[0-9a-fA-F]{64}$")]
    public_key: Option<String>,
    /// The key's signature over `"medchain/key-pop/v2" || genesis_hash || person || key || kind
    /// || origin` (128 hex digits).
    #[schema(value_type = String, required = true, pattern = "^[0-9a-fA-F]{128}$")]
    pop: Option<String>,
    /// `web browser`, or omitted: labels are on chain in clear.
    label: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct AddKeyAnswer {
    success: bool,
    /// `added` (the home added it) or `asked` (approve `code` on a page with a key of yours).
    status: &'static str,
    tx_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
}

/// A page's new device key for the signed-in person.
#[utoipa::path(
    post, path = "/api/keys", tag = "identity",
    request_body = AddKeyBody,
    responses(
        (status = 200, description = "`added` at the person's home (applied); elsewhere `asked`, \
            with the code to approve on a page holding one of the person's keys",
            body = AddKeyAnswer),
        (status = 400, description = "A missing or invalid field, or a `pop` that does not \
            verify", body = ErrorBody),
        (status = 403, description = "`wrong_hospital` (a doctor's keys are made at home), or a \
            login this hospital may not serve", body = ErrorBody),
        (status = 409, description = "The chain refused it (its rule's reason)", body = ErrorBody),
        (status = 503, description = "The validator is busy, stopped, or did not apply the \
            step in time; retry", body = ErrorBody),
    )
)]
async fn add_key(
    State(state): State<AppState>,
    auth: Authed,
    ApiJson(body): ApiJson<AddKeyBody>,
) -> ApiResult<Json<AddKeyAnswer>> {
    let key = parse_key(&required("publicKey", body.public_key, 64)?)
        .ok_or_else(|| ApiError::validation("publicKey", "publicKey must be 64 hex digits"))?;
    let mut pop = [0u8; 64];
    hex::decode_to_slice(required("pop", body.pop, 128)?, &mut pop)
        .map_err(|_| ApiError::validation("pop", "pop must be 128 hex digits"))?;
    // A label is user text every validator sees in clear: only the generic one is accepted
    // (docs/SECURITY.md §2, §16.14).
    match body.label.as_deref() {
        None | Some(PAGE_KEY_LABEL) => {}
        Some(_) => {
            return Err(ApiError::validation(
                "label",
                format!(
                    "A key made at a page is labelled \"{PAGE_KEY_LABEL}\" (or the label omitted)"
                ),
            ));
        }
    }
    let label = PAGE_KEY_LABEL.to_string();
    let added = state
        .flows
        .add_device_key(auth.account(), key, pop, label)
        .await?;
    Ok(Json(match added {
        KeyAdded::Added { tx } => AddKeyAnswer {
            success: true,
            status: "added",
            tx_id: hex::encode(tx),
            code: None,
        },
        KeyAdded::Asked { ask, code } => AddKeyAnswer {
            success: true,
            status: "asked",
            tx_id: hex::encode(ask),
            code: Some(code),
        },
    }))
}

/// A pending ask as the person's page shows it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct AskJson {
    id: String,
    /// The six digits the person types to approve it.
    code: String,
    /// The asking hospital.
    hospital: String,
    /// `link` (serve this person) or `key` (a key its page made).
    what: &'static str,
    public_key: Option<String>,
    expires_ms: u64,
}

#[derive(Serialize, ToSchema)]
struct AsksAnswer {
    success: bool,
    asks: Vec<AskJson>,
}

/// The signed-in person's pending asks: a hospital that wants to serve them, or a page that
/// made a key for them, each with its six-digit code.
#[utoipa::path(
    get, path = "/api/asks", tag = "identity",
    responses(
        (status = 200, description = "Pending asks", body = AsksAnswer),
        (status = 403, description = "A login this hospital may not serve", body = ErrorBody),
        (status = 503, description = "The validator is busy, stopped, or did not apply the \
            step in time; retry", body = ErrorBody),
    )
)]
async fn asks(State(state): State<AppState>, auth: Authed) -> ApiResult<Json<AsksAnswer>> {
    let asks = state
        .flows
        .asks(auth.account())
        .await?
        .into_iter()
        .map(|a| {
            let (what, public_key) = match &a.row.what {
                AskWhat::Link => ("link", None),
                AskWhat::Key(k) => ("key", Some(hex::encode(k.key))),
            };
            AskJson {
                id: hex::encode(a.row.id),
                code: a.code,
                hospital: state.flows.hospital(a.row.validator),
                what,
                public_key,
                expires_ms: a.row.expires_ms,
            }
        })
        .collect();
    Ok(Json(AsksAnswer {
        success: true,
        asks,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ApproveAskBody {
    /// The six digits of the ask, as typed.
    #[schema(value_type = String, required = true, pattern = "^[0-9]{6}$")]
    code: Option<String>,
    /// Sign with this device key (64 hex digits): answers 202 with the bytes to sign.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    device_public_key: Option<String>,
}

/// Approves the one pending ask whose code the person typed (never taken from a URL): a link
/// or a key. 409 if asks of two hospitals match it.
#[utoipa::path(
    post, path = "/api/asks/approve", tag = "identity",
    request_body = ApproveAskBody,
    responses(
        (status = 200, description = "Approved on chain", body = TxAnswer),
        (status = 400, description = "A missing or invalid field", body = ErrorBody),
        (status = 403, description = "A device key that is not a live key of the caller, or \
            custodially away from home", body = ErrorBody),
        (status = 404, description = "No pending ask has this code", body = ErrorBody),
        (status = 409, description = "Asks of two hospitals match the code, or the chain refused \
            it", body = ErrorBody),
        (status = 503, description = "The validator is busy, stopped, or did not apply the \
            step in time; retry", body = ErrorBody),
    )
)]
async fn approve_ask(
    State(state): State<AppState>,
    auth: Authed,
    ApiJson(body): ApiJson<ApproveAskBody>,
) -> ApiResult<Response> {
    let code = required("code", body.code, 6)?;
    let who = who_of(body.device_public_key)?;
    let outcome = state.flows.approve_ask(auth.account(), who, &code).await?;
    Ok(answer(outcome.map(TxAnswer::new)))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct RevokeKeyBody {
    /// Sign with this device key (64 hex digits): answers 202 with the bytes to sign.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    device_public_key: Option<String>,
}

/// Revokes one of the signed-in person's keys (with a device key, or custodially at the
/// home); a key waiting for its recovery is cancelled with it.
#[utoipa::path(
    post, path = "/api/keys/{key}/revoke", tag = "identity",
    params(("key" = String, Path, pattern = "^[0-9a-fA-F]{64}$",
        description = "The public key (64 hex digits)")),
    request_body = RevokeKeyBody,
    responses(
        (status = 200, description = "Revoked on chain", body = TxAnswer),
        (status = 400, description = "An invalid field", body = ErrorBody),
        (status = 403, description = "A device key that is not a live key of the caller, or \
            custodially away from home", body = ErrorBody),
        (status = 404, description = "No such key of the caller's", body = ErrorBody),
        (status = 409, description = "The chain refused it (its rule's reason)", body = ErrorBody),
        (status = 503, description = "The validator is busy, stopped, or did not apply the \
            step in time; retry", body = ErrorBody),
    )
)]
async fn revoke_key(
    State(state): State<AppState>,
    auth: Authed,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<RevokeKeyBody>,
) -> ApiResult<Response> {
    let key = parse_key(&key).ok_or_else(|| ApiError::NotFound("No such key".into()))?;
    let who = who_of(body.device_public_key)?;
    let outcome = state.flows.revoke_key(auth.account(), who, key).await?;
    Ok(answer(outcome.map(TxAnswer::new)))
}

/// `bytes` parsed as each JSON body of this area's handlers, as their [`ApiJson`] parses it
/// (the `api_json` fuzz target, `http::fuzzing`).
pub(super) fn parse_bodies(bytes: &[u8]) -> Vec<Result<(), ApiError>> {
    vec![
        parse_body::<AddKeyBody>(bytes).map(drop),
        parse_body::<ApproveAskBody>(bytes).map(drop),
        parse_body::<RevokeKeyBody>(bytes).map(drop),
    ]
}
