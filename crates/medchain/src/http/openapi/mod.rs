//! The API's contract for machines: an OpenAPI 3.1 document generated from the handlers'
//! `#[utoipa::path]` annotations and their bodies' `ToSchema` derives, served at
//! [`OPENAPI_PATH`], and a Swagger UI at [`DOCS_PATH`] whose files are in the binary
//! (utoipa-swagger-ui's `vendored` feature: nothing is fetched at build or run time).
//!
//! What every handler of a kind can answer is added here, from the extractors and the body, so
//! that no annotation forgets it: a JSON body ([`super::extract::ApiJson`]) can be refused with
//! 400, 413 or 415; a call that needs a session with 401; any `POST` from another origin with
//! 403 (`same_origin_writes`); a body with `devicePublicKey` is answered 202 with the bytes to
//! sign ([`super::consent::SignatureNeeded`]), or 429 while eight envelopes of the login wait;
//! and any API call can fail with 500. Each annotation lists what its handler adds.

pub mod answers;

pub use answers::{
    AttestedName, ErrorBody, KeyKindName, RefusalName, RoleName, ScopeName, ScopeSchema,
    SignerKindName, TxMeta,
};

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{AnyOfBuilder, Ref, Schema};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use super::ApiError;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/openapi.json";
/// Where the Swagger UI is served (`/api/docs/`, its files below it).
pub const DOCS_PATH: &str = "/api/docs";
/// The security scheme of the session cookie (its name is this hospital's, set per document).
pub const COOKIE_SCHEME: &str = "session_cookie";
/// The security scheme of `Authorization: Bearer <token>`.
pub const BEARER_SCHEME: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "medchain",
        description = "One hospital's door to a permissioned chain of medical records (README, \
            docs/API.md). Every answer is JSON with `success`; every refusal carries `message`. \
            Sign in with `POST /api/login`: browsers use the session cookie it sets, other \
            clients send `Authorization: Bearer <token>`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::healthz,
        openapi_json,
        super::auth::login,
        super::auth::logout,
        super::auth::me,
        super::consent::in_person,
        super::consent::list,
        super::consent::request_remote,
        super::consent::pending,
        super::consent::requests_made,
        super::consent::one,
        super::consent::approve,
        super::consent::deny,
        super::consent::revoke,
        super::consent::sign,
        super::erasure::request,
        super::erasure::list,
        super::identity::identity,
        super::identity::add_key,
        super::identity::revoke_key,
        super::identity::asks,
        super::identity::approve_ask,
        super::records::add_record,
        super::records::patient_records,
        super::records::doctor_records,
        super::records::access_log,
        super::chain::validate,
        super::chain::validate_chain,
        super::chain::metrics,
        super::chain::status,
        super::chain::series,
        super::chain::prometheus,
        super::chain::blocks,
        super::chain::tx_status,
    ),
    // Every call needs a session but those whose annotation says `security(())` (none) or
    // `security((), ...)` (optional).
    security(("session_cookie" = []), ("bearer" = [])),
    modifiers(&FromExtractors),
    tags(
        (name = "session", description = "Signing in and out"),
        (name = "consent", description = "Grants and requests on chain; a device key's two-step \
            signature"),
        (name = "records", description = "Adding and reading records; the access log"),
        (name = "erasure", description = "A patient's erasure requests"),
        (name = "identity", description = "Who the caller is on chain: links, keys, asks"),
        (name = "chain", description = "Blocks, verification, status and metrics"),
        (name = "service", description = "Health and this document"),
    )
)]
struct ApiDoc;

/// The document of a hospital whose session cookie is `cookie` (`medchain_<validator>`).
pub fn document(cookie: &str) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        COOKIE_SCHEME,
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            cookie,
            "The session cookie `POST /api/login` sets (HttpOnly, SameSite=Strict)",
        ))),
    );
    components.add_security_scheme(
        BEARER_SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("The `token` of `POST /api/login`"))
                .build(),
        ),
    );
    doc
}

/// `GET /api/openapi.json` and the Swagger UI, for the hospital whose cookie is `cookie`.
///
/// The UI runs under the site's own Content-Security-Policy ([`super::CSP`]), unrelaxed: its
/// page loads its scripts from files beside it (`swagger-initializer.js` holds the
/// configuration), none inline. The one `<style>` element its bundle injects is refused by the
/// policy, without a visible effect (checked in Chromium).
pub fn router<S: Clone + Send + Sync + 'static>(cookie: &str) -> Router<S> {
    // Serialising a document built from our own annotations cannot fail: a failure is a bug
    // that `tests::the_document_serialises_and_names_its_schemes` catches.
    let json = serde_json::to_vec(&document(cookie)).expect("the OpenAPI document serialises");
    let swagger = utoipa_swagger_ui::SwaggerUi::new(DOCS_PATH).config(
        utoipa_swagger_ui::Config::from(OPENAPI_PATH)
            // The default sends the document's URL to validator.swagger.io for a badge.
            .validator_url("none")
            .try_it_out_enabled(true),
    );
    Router::new()
        .route(OPENAPI_PATH, get(openapi_json))
        .with_state(Document(Bytes::from(json)))
        .merge(Router::from(swagger).layer(middleware::from_fn(json_refusals)))
}

#[derive(Clone)]
struct Document(Bytes);

/// This document.
#[utoipa::path(
    get, path = "/api/openapi.json", tag = "service",
    security(()),
    responses((status = 200, description = "This OpenAPI document", body = Object)),
)]
async fn openapi_json(State(Document(json)): State<Document>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}

/// The Swagger UI answers a file it does not have with an empty 404, and a failure with text:
/// under `/api/` every refusal is the API's JSON.
async fn json_refusals(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    match res.status() {
        StatusCode::NOT_FOUND => ApiError::NotFound("No such file of the API's docs".into()),
        status if status.is_server_error() => ApiError::internal("serving the API's docs"),
        _ => return res,
    }
    .into_response()
}

/// The status codes the extractors and the middleware add to every handler of a kind.
struct FromExtractors;

impl Modify for FromExtractors {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut signature_needed = Vec::new();
        collect::<super::consent::SignatureNeeded>(&mut signature_needed);
        components.schemas.extend(signature_needed);
        let schemas = components.schemas.clone();
        let global = doc.security.clone().unwrap_or_default();
        for (path, item) in doc.paths.paths.iter_mut() {
            let api = path.starts_with("/api/") && path != OPENAPI_PATH;
            let methods = [
                (false, item.get.as_mut()),
                (true, item.post.as_mut()),
                (true, item.put.as_mut()),
                (true, item.delete.as_mut()),
                (true, item.patch.as_mut()),
            ];
            for (writes, operation) in methods {
                let Some(operation) = operation else { continue };
                if operation.request_body.is_some() {
                    refusal(
                        operation,
                        400,
                        "Malformed JSON, or a field of the wrong type",
                    );
                    refusal(operation, 413, "The body is over 64 KiB");
                    refusal(operation, 415, "The body is not JSON (`Content-Type`)");
                }
                if needs_session(operation.security.as_ref().unwrap_or(&global)) {
                    refusal(operation, 401, "No (valid) session");
                }
                if body_has(operation, &schemas, "devicePublicKey") {
                    let to_sign = ResponseBuilder::new()
                        .description(
                            "With `devicePublicKey`: sign `signingBytes` with the device key and \
                             post the signature to `/api/sign/{preparedId}`",
                        )
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name(
                                    super::consent::SignatureNeeded::name(),
                                )))
                                .build(),
                        )
                        .build();
                    operation
                        .responses
                        .responses
                        .insert("202".into(), RefOr::T(to_sign));
                    refusal(
                        operation,
                        429,
                        "Eight actions of this login already wait for its device's signature",
                    );
                }
                if writes {
                    refusal(
                        operation,
                        403,
                        "A cross-origin request (an `Origin` that is not this server)",
                    );
                }
                if api {
                    refusal(
                        operation,
                        500,
                        "Internal error (logged here, never detailed)",
                    );
                    // The edge's refusals (http::server and http::client), before any route.
                    refusal(
                        operation,
                        408,
                        "The request's head or body did not arrive in time",
                    );
                    refusal(
                        operation,
                        421,
                        "The `Host` is not one this server serves (`--allowed-host`)",
                    );
                    refusal(operation, 431, "The request's headers are too large");
                    refusal(
                        operation,
                        503,
                        "The validator is busy, stopping, or catching up with the chain: retry \
                         shortly",
                    );
                }
            }
        }
    }
}

/// Whether an operation whose security is `alternatives` needs a session: it names schemes,
/// and none of them is "none" (`security(())`).
fn needs_session(alternatives: &[SecurityRequirement]) -> bool {
    !alternatives.is_empty() && !alternatives.contains(&SecurityRequirement::default())
}

/// Whether `operation`'s JSON body (a schema among `schemas`) has the property `name`.
fn body_has(operation: &Operation, schemas: &BTreeMap<String, RefOr<Schema>>, name: &str) -> bool {
    let Some(body) = &operation.request_body else {
        return false;
    };
    let Some(RefOr::Ref(reference)) = body
        .content
        .get("application/json")
        .and_then(|content| content.schema.as_ref())
    else {
        return false;
    };
    let schema_name = reference
        .ref_location
        .trim_start_matches("#/components/schemas/");
    matches!(
        schemas.get(schema_name),
        Some(RefOr::T(Schema::Object(object))) if object.properties.contains_key(name)
    )
}

/// Adds `status` with an [`ErrorBody`] to `operation`, or, if its annotation lists the status
/// already, adds `why` to the description.
fn refusal(operation: &mut Operation, status: u16, why: &str) {
    let responses = &mut operation.responses.responses;
    match responses.get_mut(&status.to_string()) {
        Some(RefOr::T(response)) => {
            if !response.description.contains(why) {
                response.description = format!("{}; or: {why}", response.description);
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let response = ResponseBuilder::new()
                .description(why)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                        .build(),
                )
                .build();
            responses.insert(status.to_string(), RefOr::T(response));
        }
    }
}

/// `anyOf` the schemas named `names`: an answer that is any one of several shapes, where one
/// JSON object may match more than one of them (`oneOf` would then refuse it).
pub(crate) fn any_of<const N: usize>(names: [Cow<'static, str>; N]) -> RefOr<Schema> {
    names
        .into_iter()
        .fold(AnyOfBuilder::new(), |any, name| {
            any.item(Ref::from_schema_name(name))
        })
        .into()
}

/// Puts `T`'s schema and those it refers to among `schemas` (a hand-written
/// [`ToSchema::schemas`]).
pub(crate) fn collect<T: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    schemas.push((T::name().into_owned(), T::schema()));
    T::schemas(schemas);
}

#[cfg(test)]
mod tests {
    use super::answers::*;
    use super::*;
    use ledger::tx;
    use serde::Serialize;
    use serde_json::{Value, json};

    fn doc() -> Value {
        serde_json::to_value(document("medchain_hospital")).unwrap()
    }

    #[test]
    fn the_document_serialises_and_names_its_schemes() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(
            schemes[COOKIE_SCHEME],
            json!({"type": "apiKey", "in": "cookie", "name": "medchain_hospital",
                   "description": "The session cookie `POST /api/login` sets (HttpOnly, \
                                   SameSite=Strict)"})
        );
        assert_eq!(schemes[BEARER_SCHEME]["scheme"], "bearer");
        // Every scheme an operation names exists, and every operation answers errors as
        // `ErrorBody`.
        let mut operations = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                operations += 1;
                for requirement in operation["security"].as_array().into_iter().flatten() {
                    for scheme in requirement.as_object().unwrap().keys() {
                        assert!(schemes.get(scheme).is_some(), "{method} {path}: {scheme}");
                    }
                }
                for (status, response) in operation["responses"].as_object().unwrap() {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert_eq!(
                            response["content"]["application/json"]["schema"]["$ref"],
                            "#/components/schemas/ErrorBody",
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
        assert!(operations > 30, "{operations} operations");
    }

    #[test]
    fn what_the_extractors_refuse_is_listed_on_every_handler_they_serve() {
        let doc = doc();
        let login = &doc["paths"]["/api/login"]["post"]["responses"];
        for status in ["400", "413", "415", "403", "500"] {
            assert!(login.get(status).is_some(), "login lacks {status}");
        }
        // The handler's own 403 keeps its words and gains the cross-origin refusal.
        let forbidden = login["403"]["description"].as_str().unwrap();
        assert!(forbidden.contains("not_linked") && forbidden.contains("cross-origin"));
        let me = &doc["paths"]["/api/me"]["get"]["responses"];
        assert!(me.get("415").is_none() && me.get("403").is_none());
        assert!(me.get("500").is_some());
        let health = &doc["paths"]["/healthz"]["get"]["responses"];
        assert!(health.get("500").is_none());
        // A session is needed: 401; optional (logout): none.
        assert!(me.get("401").is_some());
        assert!(
            doc["paths"]["/api/logout"]["post"]["responses"]
                .get("401")
                .is_none()
        );
        // A body with `devicePublicKey`: 202 with the bytes to sign, and the envelopes' cap.
        for (path, device) in [
            ("/api/add_record", true),
            ("/api/records/{id}/erasure", true),
            ("/api/keys/{key}/revoke", true),
            ("/api/keys", false),
            ("/api/sign/{prepared}", false),
        ] {
            let responses = &doc["paths"][path]["post"]["responses"];
            assert_eq!(responses.get("202").is_some(), device, "{path}");
            if device {
                assert_eq!(
                    responses["202"]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/SignatureNeeded"
                );
                let cap = responses["429"]["description"].as_str().unwrap();
                assert!(cap.contains("device's signature"), "{path}: {cap}");
            }
        }
        assert!(doc["components"]["schemas"]["TxPreview"].is_object());
    }

    /// Every `error_type` an answer can carry is one the document lists.
    #[tokio::test]
    async fn every_error_type_of_the_api_is_in_the_document() {
        use crate::app::flows::FlowError;
        let listed: Vec<Value> = doc()["components"]["schemas"]["ErrorType"]["enum"]
            .as_array()
            .unwrap()
            .clone();
        let home = || "clinic".to_string();
        let errors = [
            ApiError::MissingField("otp".into()),
            ApiError::validation("role", "bad"),
            ApiError::Chain("Invalid OTP".into()),
            FlowError::NotHome {
                person: "d".into(),
                home: home(),
            }
            .into(),
            FlowError::ConsentElsewhere {
                patient: "p".into(),
                home: home(),
            }
            .into(),
            FlowError::ApproveOnDevice { home: home() }.into(),
            FlowError::ApproveAtHome { home: home() }.into(),
            FlowError::NotLinkedHere {
                home: home(),
                code: None,
            }
            .into(),
            FlowError::Department { own: "x".into() }.into(),
        ];
        let mut seen = Vec::new();
        for error in errors {
            let response = error.into_response();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap();
            let kind = body["error_type"].clone();
            assert!(listed.contains(&kind), "{kind} is not listed");
            seen.push(kind);
        }
        seen.dedup();
        assert_eq!(
            seen.len(),
            listed.len(),
            "a listed error_type no answer carries"
        );
    }

    #[test]
    fn the_ledgers_enums_are_written_as_described() {
        fn same<L: Serialize, M: Serialize>(ledger: L, described: M) {
            assert_eq!(
                serde_json::to_value(ledger).unwrap(),
                serde_json::to_value(described).unwrap()
            );
        }
        // Each match names every variant of the ledger's enum: a new one fails to compile here.
        for role in [tx::Role::Patient, tx::Role::Doctor] {
            same(
                role,
                match role {
                    tx::Role::Patient => RoleName::Patient,
                    tx::Role::Doctor => RoleName::Doctor,
                },
            );
        }
        for kind in [tx::KeyKind::Device, tx::KeyKind::Custodial] {
            same(
                kind,
                match kind {
                    tx::KeyKind::Device => KeyKindName::Device,
                    tx::KeyKind::Custodial => KeyKindName::Custodial,
                },
            );
        }
        for kind in [
            tx::SignerKind::Device,
            tx::SignerKind::Custodial,
            tx::SignerKind::Validator,
        ] {
            same(
                kind,
                match kind {
                    tx::SignerKind::Device => SignerKindName::Device,
                    tx::SignerKind::Custodial => SignerKindName::Custodial,
                    tx::SignerKind::Validator => SignerKindName::Validator,
                },
            );
        }
        for attested in [tx::Attested::Device, tx::Attested::InPerson] {
            same(
                attested,
                match attested {
                    tx::Attested::Device => AttestedName::Device,
                    tx::Attested::InPerson => AttestedName::InPerson,
                },
            );
        }
        for refusal in [
            tx::Refusal::RetentionPeriod,
            tx::Refusal::OngoingCare,
            tx::Refusal::LegalClaims,
            tx::Refusal::PublicHealth,
        ] {
            same(
                refusal,
                match refusal {
                    tx::Refusal::RetentionPeriod => RefusalName::RetentionPeriod,
                    tx::Refusal::OngoingCare => RefusalName::OngoingCare,
                    tx::Refusal::LegalClaims => RefusalName::LegalClaims,
                    tx::Refusal::PublicHealth => RefusalName::PublicHealth,
                },
            );
        }
        for scope in [
            tx::Scope::Write,
            tx::Scope::Read {
                duration_ms: 60_000,
            },
        ] {
            same(
                scope,
                match scope {
                    tx::Scope::Write => ScopeSchema::Write,
                    tx::Scope::Read { duration_ms } => ScopeSchema::Read { duration_ms },
                },
            );
        }
        let kinds: Vec<Value> = doc()["components"]["schemas"]["TxKind"]["enum"]
            .as_array()
            .unwrap()
            .clone();
        let ledger_kinds: Vec<Value> = ledger::Meta::KINDS.iter().map(|k| json!(k)).collect();
        assert_eq!(kinds, ledger_kinds);
    }
}
