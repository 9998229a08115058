//! The API's contract for machines (issue 12): `/api/openapi.json` lists every route the router
//! serves, each with the methods it serves, and `/api/docs` is a Swagger UI that loads under
//! the site's Content-Security-Policy from files in the binary. (scripts/schemathesis.sh checks
//! live answers against the document.)

mod common;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::Value;

/// Routes that are not the API: the web UI's files and the Swagger UI's.
const NOT_API: [&str; 6] = [
    "/",
    "/index.html",
    "/{file}",
    "/api/docs",
    "/api/docs/",
    "/api/docs/{*rest}",
];

/// The methods a route can be served for (HEAD follows GET in axum).
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

/// The paths of every route of `router`, as axum's `Debug` of its path router shows them
/// (`RouteId(3): "/api/login"`). axum has no API that lists routes; if its `Debug` changes, the
/// count below fails rather than the test passing on nothing.
fn routes_of(router: &axum::Router) -> BTreeSet<String> {
    let debug = format!("{router:?}");
    let mut paths = BTreeSet::new();
    for piece in debug.split("RouteId(").skip(1) {
        let Some((_, rest)) = piece.split_once("): \"") else {
            continue;
        };
        if let Some((path, _)) = rest.split_once('"')
            // axum's own catch-all, which carries the fallback.
            && !path.contains("__private__axum")
        {
            paths.insert(path.to_string());
        }
    }
    paths
}

/// A concrete request path for a route template (`{id}` → `0`).
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "0"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn get_raw(t: &common::TestApp, path: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let res = t.raw(Request::get(path).body(Body::empty()).unwrap()).await;
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 16 << 20)
        .await
        .unwrap();
    (status, headers, bytes.to_vec())
}

#[tokio::test]
async fn the_document_lists_every_route_the_router_serves_with_its_methods() {
    let t = common::app_only().await;
    let (status, headers, bytes) = get_raw(&t, "/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let doc: Value = serde_json::from_slice(&bytes).expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["session_cookie"]["name"],
        common::COOKIE,
        "the cookie scheme names this hospital's cookie"
    );

    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((path.clone(), method.to_uppercase()));
        }
    }

    let routes = routes_of(&t.router);
    assert!(
        routes.contains("/healthz") && routes.contains("/api/login") && routes.len() > 30,
        "the routes were not read from the router: {routes:?}"
    );
    let mut served = BTreeSet::new();
    for route in routes.iter().filter(|r| !NOT_API.contains(&r.as_str())) {
        for method in METHODS {
            // Anonymous: a handler refuses before it acts (401, 400); a method the route does
            // not serve is 405.
            let req = Request::builder()
                .method(method)
                .uri(concrete(route))
                .body(Body::empty())
                .unwrap();
            let status = t.raw(req).await.status();
            if status != StatusCode::METHOD_NOT_ALLOWED {
                served.insert((route.clone(), method.to_string()));
            }
        }
    }
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let not_served: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && not_served.is_empty(),
        "served but not in /api/openapi.json: {undocumented:?}; documented but not served: \
         {not_served:?}"
    );
}

#[tokio::test]
async fn the_swagger_ui_loads_from_the_binary_under_the_sites_csp() {
    let t = common::app_only().await;
    let (status, headers, _) = get_raw(&t, "/api/docs").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/api/docs/");

    let (status, headers, html) = get_raw(&t, "/api/docs/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    // The page is served under the site's policy: scripts from this origin only, none inline.
    assert_eq!(
        headers[header::CONTENT_SECURITY_POLICY],
        medchain::http::CSP
    );
    let html = String::from_utf8(html).unwrap();
    let mut scripts = Vec::new();
    for tag in html.split("<script").skip(1) {
        let (attributes, rest) = tag.split_once('>').unwrap();
        let inline = rest.split("</script>").next().unwrap();
        assert!(inline.trim().is_empty(), "an inline script: {inline}");
        let src = attributes
            .split("src=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_else(|| panic!("a script without src: {attributes}"));
        assert!(!src.contains("//"), "a script from elsewhere: {src}");
        scripts.push(src.trim_start_matches("./").to_string());
    }
    assert!(
        scripts.contains(&"swagger-ui-bundle.js".to_string())
            && scripts.contains(&"swagger-initializer.js".to_string()),
        "{scripts:?}"
    );
    assert!(!html.contains("style=\""), "an inline style attribute");
    for script in &scripts {
        let (status, headers, js) = get_raw(&t, &format!("/api/docs/{script}")).await;
        assert_eq!(status, StatusCode::OK, "{script}");
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .contains("javascript"),
            "{script}: {:?}",
            headers[header::CONTENT_TYPE]
        );
        assert!(js.len() > 100, "{script} is empty");
        if script == "swagger-initializer.js" {
            let js = String::from_utf8(js).unwrap();
            assert!(js.contains("\"/api/openapi.json\""), "{js}");
            // No third party is told about the document (validator.swagger.io's badge).
            assert!(js.contains("\"validatorUrl\": \"none\""), "{js}");
        }
    }
    let (status, _, css) = get_raw(&t, "/api/docs/swagger-ui.css").await;
    assert_eq!(status, StatusCode::OK);
    assert!(css.len() > 1000);

    // A file the UI does not have is the API's JSON refusal.
    let (status, headers, body) = get_raw(&t, "/api/docs/no-such-file.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["success"], false);
}
