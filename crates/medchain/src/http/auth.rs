//! Login, logout and "who am I".

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::client::ClientAddr;
use super::device::{self, PresentedDevice};
use super::extract::{ApiJson, Authed, MaybeAuthed, parse_body, required};
use super::openapi::ErrorBody;
use super::throttle::Asker;
use super::{ApiError, ApiResult, AppState};
use crate::app::{Account, Role};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/me", get(me))
}

/// The seed's login: `patientId` with `role: patient`, `doctorId` with `role: doctor`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct LoginBody {
    #[schema(value_type = super::openapi::RoleName, required = true)]
    role: Option<String>,
    /// The patient's login at this hospital (with `role: patient`).
    #[schema(value_type = String, required = false, min_length = 1, max_length = 64)]
    #[schema(example = "p001")]
    patient_id: Option<String>,
    /// The doctor's login at this hospital (with `role: doctor`).
    #[schema(value_type = String, required = false, min_length = 1, max_length = 64)]
    #[schema(example = "d001")]
    doctor_id: Option<String>,
    #[schema(value_type = String, required = true, example = "patient123")]
    password: Option<Zeroizing<String>>,
}

fn invalid_credentials() -> ApiError {
    ApiError::Unauthorized("Invalid credentials".into())
}

/// Who is signed in: the seed's fields, then who they are on chain.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WhoAnswer {
    success: bool,
    #[schema(value_type = super::openapi::RoleName)]
    user_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    patient_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    doctor_id: Option<String>,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    department: Option<String>,
    /// A doctor's public name, as enrolled.
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// The consortium-wide person id (32 hex digits).
    person_id: Option<String>,
    /// The home hospital's name.
    home: Option<String>,
    /// Whether this hospital is the person's home (a doctor acts only at home).
    home_here: bool,
    /// This hospital's validator index: the origin of a key made at this page, which its
    /// proof of possession binds (`key-pop/v2`).
    validator: u32,
    /// The session token, for `Authorization: Bearer` (login only; `/api/me` omits it).
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    /// When the session ends (ms since the epoch) unless used sooner.
    expires_at: u64,
}

impl WhoAnswer {
    fn of(state: &AppState, account: &Account, expires_at: u64) -> Self {
        let id = Some(account.id.clone());
        WhoAnswer {
            success: true,
            user_type: account.role.as_str(),
            patient_id: id.clone().filter(|_| account.role == Role::Patient),
            doctor_id: id.filter(|_| account.role == Role::Doctor),
            id: account.id.clone(),
            department: account.department.clone(),
            name: account.name.clone(),
            person_id: account.person.map(hex::encode),
            home: account.home.map(|h| state.flows.hospital(h)),
            home_here: account.home == Some(state.flows.here().index),
            validator: state.flows.here().index,
            token: None,
            expires_at,
        }
    }
}

/// The seed's login. Answers 503 while the person's enrollment (or, at a hospital that is not
/// their home, a patient's link) is not on chain, 403 for a patient this hospital may not
/// serve; a doctor may sign in anywhere (the explorer, the status page) but acts only at home.
#[utoipa::path(
    post, path = "/api/login", tag = "session",
    security(()),
    request_body = LoginBody,
    responses(
        (status = 200, description = "Signed in: the session token, also set as this hospital's \
            session cookie", body = WhoAnswer,
            headers(("set-cookie" = String, description = "`medchain_<validator>=<token>; Path=/; \
                HttpOnly; SameSite=Strict; Max-Age=<idle seconds>`, and the device cookie \
                `medchain_<validator>_device=<value>; Path=/api; HttpOnly; SameSite=Strict; \
                Max-Age=7776000` (a login that presents it is throttled per device, not per \
                address); each `; Secure` with `--secure-cookie`"))),
        (status = 400, description = "A missing or invalid field (`role`, the id, `password`)",
            body = ErrorBody),
        (status = 401, description = "`Invalid credentials`", body = ErrorBody),
        (status = 403, description = "`not_linked`: a patient this hospital may not serve yet \
            (`home` names their home)", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords for this account; wait",
            body = ErrorBody),
        (status = 503, description = "`not on chain yet`: the person's enrollment (or link) is \
            not applied on this validator's chain", body = ErrorBody),
    )
)]
async fn login(
    axum::extract::State(state): axum::extract::State<AppState>,
    client: ClientAddr,
    presented: PresentedDevice,
    ApiJson(body): ApiJson<LoginBody>,
) -> ApiResult<Response> {
    let role_s = required("role", body.role, 16)?;
    let role = Role::parse(&role_s)
        .ok_or_else(|| ApiError::validation("role", "Role must be 'patient' or 'doctor'"))?;
    let (field, id) = match role {
        Role::Patient => ("patientId", body.patient_id),
        Role::Doctor => ("doctorId", body.doctor_id),
    };
    let id = required(field, id, 64)?;
    let Some(password) = body.password else {
        return Err(ApiError::MissingField("password".into()));
    };
    if password.len() > 1024 {
        return Err(invalid_credentials());
    }
    let device = presented.device_for(&state, &id);
    let asker = Asker::Anyone {
        device: device.clone(),
    };
    let account = state
        .verify_password(client, &asker, id, Some(role), password)
        .await?
        .ok_or_else(invalid_credentials)?;
    state.flows.check_login(&account).await?;
    let (token, session) = state
        .blocking({
            let account = account.clone();
            move |app, now| Ok(app.create_session(&account, now)?)
        })
        .await?;
    let mut answer = WhoAnswer::of(&state, &account, session.expires_ms);
    answer.token = Some(token.as_str().to_string());
    let max_age = state.app.config().session_idle_ms / 1000;
    let cookie = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        state.cookie,
        token.as_str(),
        state.cookie_secure()
    );
    let mut res = Json(answer).into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
    );
    res.headers_mut().append(
        header::SET_COOKIE,
        device::set_cookie(&state, &account.id, device.as_deref())?,
    );
    Ok(res)
}

/// Ends the caller's session, if any, and clears the cookie.
#[utoipa::path(
    post, path = "/api/logout", tag = "session",
    security((), ("session_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The session (if any) ended; the cookie cleared",
            body = super::openapi::answers::Logout,
            headers(("set-cookie" = String, description = "The cookie, emptied (`Max-Age=0`)"))),
    )
)]
async fn logout(
    axum::extract::State(state): axum::extract::State<AppState>,
    MaybeAuthed(auth): MaybeAuthed,
) -> ApiResult<Response> {
    let ended = match auth {
        Some(a) => {
            let token = a.token;
            state
                .blocking(move |app, _| Ok(app.logout(&token)?))
                .await?
        }
        None => false,
    };
    let mut res =
        Json(json!({"success": true, "message": if ended { "Logged out" } else { "No session" }}))
            .into_response();
    let cookie = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        state.cookie,
        state.cookie_secure()
    );
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
    );
    Ok(res)
}

/// The signed-in person, as login answers (without `token`).
#[utoipa::path(
    get, path = "/api/me", tag = "session",
    responses(
        (status = 200, description = "The caller", body = WhoAnswer),
    )
)]
async fn me(
    axum::extract::State(state): axum::extract::State<AppState>,
    auth: Authed,
) -> Json<WhoAnswer> {
    Json(WhoAnswer::of(
        &state,
        auth.account(),
        auth.session.expires_ms,
    ))
}

/// `bytes` parsed as each JSON body of this area's handlers, as their [`ApiJson`] parses it
/// (the `api_json` fuzz target, `http::fuzzing`).
pub(super) fn parse_bodies(bytes: &[u8]) -> Vec<Result<(), ApiError>> {
    vec![parse_body::<LoginBody>(bytes).map(drop)]
}
