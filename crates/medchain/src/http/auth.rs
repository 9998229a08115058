//! Login, logout and "who am I".

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::extract::{ApiJson, Authed, MaybeAuthed, SESSION_COOKIE, required};
use super::{ApiError, ApiResult, AppState};
use crate::app::{Account, Role};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/me", get(me))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoginBody {
    role: Option<String>,
    patient_id: Option<String>,
    doctor_id: Option<String>,
    password: Option<Zeroizing<String>>,
}

fn invalid_credentials() -> ApiError {
    ApiError::Unauthorized("Invalid credentials".into())
}

fn account_json(account: &Account) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("success".into(), json!(true));
    m.insert("userType".into(), json!(account.role.as_str()));
    let key = match account.role {
        Role::Patient => "patientId",
        Role::Doctor => "doctorId",
    };
    m.insert(key.into(), json!(account.id));
    m.insert("id".into(), json!(account.id));
    if let Some(d) = &account.department {
        m.insert("department".into(), json!(d));
    }
    m
}

async fn login(
    axum::extract::State(state): axum::extract::State<AppState>,
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
    let account = state
        .verify_password(id, Some(role), password)
        .await?
        .ok_or_else(invalid_credentials)?;
    let (token, session) = state
        .blocking({
            let account = account.clone();
            move |app, now| Ok(app.create_session(&account, now)?)
        })
        .await?;
    let mut body = account_json(&account);
    body.insert("token".into(), json!(token.as_str()));
    body.insert("expiresAt".into(), json!(session.expires_ms));
    let max_age = state.app.config().session_idle_ms / 1000;
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        token.as_str(),
        if state.settings.secure_cookie {
            "; Secure"
        } else {
            ""
        }
    );
    let mut res = Json(Value::Object(body)).into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
    );
    Ok(res)
}

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
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if state.settings.secure_cookie {
            "; Secure"
        } else {
            ""
        }
    );
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
    );
    Ok(res)
}

async fn me(auth: Authed) -> Json<Value> {
    let mut body = account_json(auth.account());
    body.insert("expiresAt".into(), json!(auth.session.expires_ms));
    Json(Value::Object(body))
}
