//! Extractors whose rejections are [`ApiError`]s: a JSON body that names the offending field,
//! and the session of the caller (cookie or bearer token) with its role.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use crate::app::{Account, Role, Session};

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body. An empty body reads as `{}` (the seed's `/api/validate` sends none).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|_| body_too_large())?;
        if !is_blank(&bytes) {
            let is_json = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .is_some_and(|mime| {
                    let mime = mime.trim().to_ascii_lowercase();
                    mime == "application/json" || mime.ends_with("+json")
                });
            if !is_json {
                return Err(ApiError::UnsupportedMediaType);
            }
        }
        parse_body(&bytes).map(ApiJson)
    }
}

/// 413 for a body over [`MAX_BODY_BYTES`].
pub(crate) fn body_too_large() -> ApiError {
    ApiError::TooLarge(format!(
        "Request body too large: at most {MAX_BODY_BYTES} bytes"
    ))
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

/// A request body of JSON type as [`ApiJson`] reads it: a blank body reads as `{}`.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    parse_json(if is_blank(bytes) { b"{}" } else { bytes })
}

/// Parses `bytes` as a `T`, mapping errors to messages that name the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        json_error(&path, &inner)
    })?;
    de.end().map_err(|e| json_error(".", &e))?;
    Ok(value)
}

fn json_error(path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let text = e.to_string();
    let text = match text.rsplit_once(" at line ") {
        Some((head, _)) => head.to_string(),
        None => text,
    };
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::BadRequest(format!("Malformed JSON: {text}"))
        }
        Category::Data => {
            if let Some(rest) = text.strip_prefix("missing field `") {
                let field = rest.trim_end_matches('`');
                let full = if path == "." || path.is_empty() {
                    field.to_string()
                } else {
                    format!("{path}.{field}")
                };
                return ApiError::MissingField(full);
            }
            if path == "." || path.is_empty() {
                return ApiError::BadRequest("The body must be a JSON object".into());
            }
            ApiError::validation(
                path,
                format!("Invalid value for field '{path}': {}", expected(&text)),
            )
        }
    }
}

/// What serde expected, from one of its data errors, without the value it found: serde
/// quotes the offending value (`invalid type: string "…", expected u64`), and an answer never
/// echoes what the request carried (it may be a diagnosis; docs/SECURITY.md §8).
fn expected(serde_text: &str) -> String {
    match serde_text.rsplit_once(", expected ") {
        Some((_, expected)) => format!("expected {expected}"),
        None => "not of the expected type".to_string(),
    }
}

/// The session token of a request: `Authorization: Bearer` first, then the cookie named
/// `cookie` (this hospital's; another hospital's on the same host is ignored).
pub fn token_of(parts: &Parts, cookie: &str) -> Option<String> {
    if let Some(auth) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(token) = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
    {
        return Some(token.trim().to_string());
    }
    cookie_value(&parts.headers, cookie).map(str::to_string)
}

/// The value of the cookie `name` in `headers`, if one is set (not empty).
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|cookies| cookies.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, value)| *key == name && !value.is_empty())
        .map(|(_, value)| value)
}

/// A caller with a live session (401 otherwise).
pub struct Authed {
    pub session: Session,
    pub token: String,
}

impl Authed {
    pub fn account(&self) -> &Account {
        &self.session.account
    }
}

async fn lookup(parts: &Parts, state: &AppState) -> Result<Option<Authed>, ApiError> {
    let Some(token) = token_of(parts, &state.cookie) else {
        return Ok(None);
    };
    let app = state.app.clone();
    let now = state.now_ms();
    let t = token.clone();
    let session = tokio::task::spawn_blocking(move || app.session(&t, now)).await??;
    Ok(session.map(|session| Authed { session, token }))
}

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        lookup(parts, state)
            .await?
            .ok_or_else(ApiError::unauthorized)
    }
}

/// A caller that may or may not have a session.
pub struct MaybeAuthed(pub Option<Authed>);

impl FromRequestParts<AppState> for MaybeAuthed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(MaybeAuthed(lookup(parts, state).await?))
    }
}

/// A signed-in doctor (401 without a session, 403 for a patient).
pub struct Doctor(pub Account);

impl FromRequestParts<AppState> for Doctor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let a = Authed::from_request_parts(parts, state).await?;
        match a.session.account.role {
            Role::Doctor => Ok(Doctor(a.session.account)),
            Role::Patient => Err(ApiError::Forbidden("Only doctors may do this".into())),
        }
    }
}

/// A signed-in patient (401 without a session, 403 for a doctor).
pub struct Patient(pub Account);

impl FromRequestParts<AppState> for Patient {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let a = Authed::from_request_parts(parts, state).await?;
        match a.session.account.role {
            Role::Patient => Ok(Patient(a.session.account)),
            Role::Doctor => Err(ApiError::Forbidden("Only patients may do this".into())),
        }
    }
}

/// A required string field: present (else `missing_field`), non-empty after trimming (else
/// `validation`), at most `max` characters, without control characters.
pub fn required(field: &str, value: Option<String>, max: usize) -> Result<String, ApiError> {
    let Some(v) = value else {
        return Err(ApiError::MissingField(field.to_string()));
    };
    let v = v.trim().to_string();
    if v.is_empty() {
        return Err(ApiError::validation(
            field,
            format!("{} cannot be empty", super::error::capitalise(field)),
        ));
    }
    check_len(field, &v, max)?;
    Ok(v)
}

/// Rejects values over `max` characters or with control characters other than newline/tab.
pub fn check_len(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::validation(
            field,
            format!(
                "{} is too long (at most {max} characters)",
                super::error::capitalise(field)
            ),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(ApiError::validation(
            field,
            format!(
                "{} contains control characters",
                super::error::capitalise(field)
            ),
        ));
    }
    Ok(())
}

/// An account id field: required and well-formed.
pub fn account_id(field: &str, value: Option<String>) -> Result<String, ApiError> {
    let v = required(field, value, 32)?;
    crate::app::validate_account_id(&v)
        .map_err(|_| ApiError::validation(field, format!("{field} is not a valid id")))?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    #[serde(rename_all = "camelCase")]
    enum Scope {
        Write,
        Read,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        duration_ms: Option<u64>,
        scope: Option<Scope>,
        diagnosis: Option<String>,
    }

    fn message_of(json: &str) -> (String, String) {
        let error = parse_json::<Body>(json.as_bytes()).unwrap_err();
        match error {
            ApiError::Validation { field, message } => (field, message),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn a_wrong_type_names_the_field_and_what_was_expected_never_the_value() {
        let (field, message) = message_of(r#"{"durationMs": "Lymphoma, R-CHOP"}"#);
        assert_eq!(field, "durationMs");
        assert!(!message.contains("Lymphoma"), "{message}");
        assert!(message.contains("'durationMs'"), "{message}");
        assert!(message.contains("expected u64"), "{message}");

        let (field, message) = message_of(r#"{"scope": "Lymphoma"}"#);
        assert_eq!(field, "scope");
        assert!(!message.contains("Lymphoma"), "{message}");
        assert!(message.contains("`write`"), "{message}");

        let (field, message) = message_of(r#"{"diagnosis": 1234567}"#);
        assert_eq!(field, "diagnosis");
        assert!(!message.contains("1234567"), "{message}");
    }
}
