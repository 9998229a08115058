//! The web UI: static files from `crates/medchain/web/`, embedded in the binary.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "web/"]
struct Assets;

/// The content type of a file name, by extension.
pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// The names of the embedded files.
pub fn files() -> impl Iterator<Item = String> {
    Assets::iter().map(|f| f.into_owned())
}

/// Routes serving the UI: `/` is `index.html`, `/<file>` an embedded file.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/{file}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().trim_start_matches('/');
    serve(path, &headers)
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Not found",
        )
            .into_response();
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let cache = HeaderValue::from_static("no-cache");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header(header::ETAG, &etag)
            .header(header::CACHE_CONTROL, cache)
            .body(Body::empty())
            .unwrap_or_default();
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type(path))
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, cache)
        .body(Body::from(file.data.into_owned()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(name: &str) -> String {
        String::from_utf8(Assets::get(name).unwrap().data.into_owned()).unwrap()
    }

    #[test]
    fn the_ui_files_are_embedded_with_types() {
        let names: Vec<String> = files().collect();
        for f in ["index.html", "app.js", "app.css", "favicon.svg"] {
            assert!(names.iter().any(|n| n == f), "{f} missing from {names:?}");
        }
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("x/y.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("favicon.svg"), "image/svg+xml");
    }

    #[test]
    fn no_inline_script_no_handlers_no_cdn() {
        let html = text("index.html").to_lowercase();
        // Only one script element, and it loads a file.
        assert_eq!(html.matches("<script").count(), 1);
        assert!(html.contains("<script src=\"/app.js\" defer></script>"));
        assert!(
            !html.contains("style=\""),
            "inline styles are blocked by the CSP"
        );
        for handler in [
            " onclick",
            " onload",
            " onerror",
            " onsubmit",
            " onchange",
            " oninput",
        ] {
            assert!(!html.contains(handler), "inline handler {handler}");
        }
        for f in ["index.html", "app.js", "app.css"] {
            // The SVG namespace names the charts' elements; nothing is fetched from it.
            let t = text(f).replace("http://www.w3.org/2000/svg", "");
            assert!(
                !t.contains("http://") && !t.contains("https://"),
                "{f} fetches from outside"
            );
        }
    }

    #[test]
    fn scripts_never_use_inner_html_or_eval() {
        let js = text("app.js");
        for bad in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!js.contains(bad), "app.js uses {bad}");
        }
    }

    #[test]
    fn every_id_the_script_uses_exists() {
        let html = text("index.html");
        let js = text("app.js");
        let mut rest = js.as_str();
        let mut n = 0;
        while let Some(i) = rest.find("$('") {
            rest = &rest[i + 3..];
            let id = &rest[..rest.find('\'').unwrap()];
            assert!(
                html.contains(&format!("id=\"{id}\"")),
                "#{id} used by app.js is missing"
            );
            n += 1;
        }
        assert!(n > 50);
    }
}
