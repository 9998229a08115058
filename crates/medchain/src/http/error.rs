//! The one error type of the API: each variant has a status code, and the body is always
//! `{success: false, message, ...}`. Internal details are logged (without secrets), never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use node::NodeError;

use crate::app::AppError;
use crate::app::flows::FlowError;

#[derive(Debug)]
pub enum ApiError {
    /// 400 `error_type: "missing_field"`, the seed's `Missing required field: 'otp'`.
    MissingField(String),
    /// 400 `error_type: "validation"` with the offending `field`.
    Validation { field: String, message: String },
    /// 400 `error_type: "blockchain_validation"`: the consent or the chain refused.
    Chain(String),
    /// 400 without an error type (malformed request, bad parameter).
    BadRequest(String),
    /// 401: no (valid) session or wrong credentials.
    Unauthorized(String),
    /// 403: authenticated, but not allowed.
    Forbidden(String),
    /// 403 with a machine-readable `error_type`, and the field or the home hospital it names.
    ForbiddenBecause {
        error_type: &'static str,
        message: String,
        field: Option<&'static str>,
        home: Option<String>,
    },
    /// 404.
    NotFound(String),
    /// 409: the state does not allow it (a request no longer pending).
    Conflict(String),
    /// 413: a body or a transaction over its limit; the message says the limit.
    TooLarge(String),
    /// 415: a body that is not JSON.
    UnsupportedMediaType,
    /// 429 with `Retry-After`: over a rate limit (wrong passwords for one account from one
    /// address, or record reads); the message says which, and when to retry.
    RateLimited { message: String, retry_after_s: u64 },
    /// A refusal of the HTTP exchange itself (408 too slow, 421 a Host not served here, 431
    /// headers too large, 400 an unparsable request), answered like every other error.
    Refused { status: StatusCode, message: String },
    /// 429: over a cap of pending requests; the message names it.
    TooManyPending(String),
    /// 503: the validator is overloaded or stopped; retry later.
    Unavailable(String),
    /// 500: logged here with its cause; the client only learns that it failed.
    Internal(String),
}

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn internal(context: impl std::fmt::Display) -> Self {
        Self::Internal(context.to_string())
    }

    pub fn unauthorized() -> Self {
        Self::Unauthorized("Authentication required".into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingField(_)
            | ApiError::Validation { .. }
            | ApiError::Chain(_)
            | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::ForbiddenBecause { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } | ApiError::TooManyPending(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Refused { status, .. } => *status,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after_s = match &self {
            ApiError::RateLimited { retry_after_s, .. } => Some(*retry_after_s),
            _ => None,
        };
        let (status, body) = self.into_json();
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl ApiError {
    /// The status and the JSON body of this error, as [`IntoResponse`] sends them.
    pub(crate) fn into_json(self) -> (StatusCode, Value) {
        let status = self.status();
        let mut body = Map::new();
        body.insert("success".into(), Value::Bool(false));
        let message = match self {
            ApiError::MissingField(field) => {
                body.insert("error_type".into(), json!("missing_field"));
                body.insert("field".into(), json!(field));
                format!("Missing required field: '{field}'")
            }
            ApiError::Validation { field, message } => {
                body.insert("error_type".into(), json!("validation"));
                body.insert("field".into(), json!(field));
                message
            }
            ApiError::Chain(message) => {
                body.insert("error_type".into(), json!("blockchain_validation"));
                message
            }
            ApiError::ForbiddenBecause {
                error_type,
                message,
                field,
                home,
            } => {
                body.insert("error_type".into(), json!(error_type));
                if let Some(field) = field {
                    body.insert("field".into(), json!(field));
                }
                if let Some(home) = home {
                    body.insert("home".into(), json!(home));
                }
                message
            }
            ApiError::BadRequest(m)
            | ApiError::TooManyPending(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::TooLarge(m)
            | ApiError::Unavailable(m)
            | ApiError::RateLimited { message: m, .. }
            | ApiError::Refused { message: m, .. } => m,
            ApiError::UnsupportedMediaType => {
                "Expected a JSON body (Content-Type: application/json)".into()
            }
            ApiError::Internal(context) => {
                tracing::error!(%context, "internal error");
                "Internal error".into()
            }
        };
        body.insert("message".into(), Value::String(message));
        (status, Value::Object(body))
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Invalid { field, reason } => {
                ApiError::validation(field, format!("{} {reason}", capitalise(field)))
            }
            AppError::AccountExists(_) => ApiError::Conflict("Account already exists".into()),
            AppError::NotFound => ApiError::NotFound("Not found".into()),
            other => ApiError::internal(other),
        }
    }
}

/// Every flow's failure, mapped in one place (docs/API.md lists each answer).
impl From<FlowError> for ApiError {
    fn from(e: FlowError) -> Self {
        let message = e.to_string();
        let because = |error_type, field, home| ApiError::ForbiddenBecause {
            error_type,
            message: message.clone(),
            field,
            home,
        };
        match e {
            FlowError::NotHome { home, .. } => because("wrong_hospital", None, Some(home)),
            FlowError::ConsentElsewhere { home, .. } => {
                because("consent_elsewhere", Some("patientId"), Some(home))
            }
            FlowError::ApproveOnDevice { home } => because("approve_on_device", None, Some(home)),
            FlowError::ApproveAtHome { home } => because("approve_at_home", None, Some(home)),
            FlowError::NotLinkedHere { home, .. } => because("not_linked", None, Some(home)),
            FlowError::Department { .. } => because("not_allowed", Some("department"), None),
            FlowError::NotOnChain => ApiError::Unavailable(
                "not on chain yet: the enrollment is not applied; retry \
                     shortly"
                    .into(),
            ),
            FlowError::Code(_) => ApiError::Chain(message),
            FlowError::NotFound(m) => ApiError::NotFound(m),
            FlowError::Denied(m) => ApiError::Forbidden(m),
            FlowError::Invalid(m) => ApiError::BadRequest(m),
            FlowError::Rejected(m) => ApiError::Conflict(m),
            FlowError::CodeCollision { .. } => ApiError::Conflict(message),
            FlowError::TooManyPending(m) => ApiError::TooManyPending(m),
            FlowError::Unavailable(m) => ApiError::Unavailable(m),
            FlowError::Node(e) => node_error("flow", e),
            FlowError::Store(e) => e.into(),
        }
    }
}

/// Maps a validator's error: overload and shutdown are 503 (retry), a transaction over the
/// validators' limit 413, the rest is internal.
pub(crate) fn node_error(what: &str, e: NodeError) -> ApiError {
    match e {
        NodeError::Busy => {
            ApiError::Unavailable("The validator is busy; please retry shortly".into())
        }
        NodeError::Stopped => ApiError::Unavailable("The validator is not running".into()),
        NodeError::Timeout(_) => {
            ApiError::Unavailable("The validators did not answer in time; please retry".into())
        }
        NodeError::NothingPending => ApiError::BadRequest("No pending records to validate".into()),
        NodeError::TooLarge { bytes, limit } => ApiError::TooLarge(format!(
            "The transaction is {bytes} bytes once signed; validators accept at most {limit} bytes"
        )),
        NodeError::Refused(why) => ApiError::Conflict(why),
        // The key service has not processed the height a read needs yet (§6.1).
        NodeError::KeysCatchingUp => ApiError::Unavailable("keys catching up".into()),
        // It may lack an erasure the others applied: nothing sealed is opened (§16.25).
        NodeError::Behind => {
            ApiError::Unavailable("catching up with the chain; please retry shortly".into())
        }
        NodeError::Seal(why) => ApiError::TooLarge(format!("The content cannot be sealed: {why}")),
        NodeError::Invalid(invalid) => ApiError::BadRequest(invalid.reason().to_string()),
        other => ApiError::internal(format!("{what}: {other}")),
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal(format!("blocking task failed: {e}"))
    }
}

pub(crate) fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_transaction_over_the_limit_is_413_and_names_the_limit() {
        let error = node_error(
            "add_record",
            NodeError::TooLarge {
                bytes: 70_000,
                limit: 65_792,
            },
        );
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["success"], json!(false));
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("65792"), "{message}");
    }
}
