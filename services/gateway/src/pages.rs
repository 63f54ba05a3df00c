//! What the gateway serves to a browser besides the API: the web console at `/console/` and
//! the API documentation at `/api/docs`. Their files are compiled into the binary, so a
//! deployment is the one executable and nothing is fetched from another host.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::ApiError;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// Its ETag, computed on first use.
    tag: OnceLock<HeaderValue>,
}

impl Asset {
    const fn new(name: &'static str, content_type: &'static str, body: &'static [u8]) -> Self {
        Asset {
            name,
            content_type,
            body,
            tag: OnceLock::new(),
        }
    }
}

macro_rules! asset {
    ($dir:literal, $name:literal, $type:expr) => {
        Asset::new(
            $name,
            $type,
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $dir, "/", $name)),
        )
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static CONSOLE: [Asset; 8] = [
    asset!("console", "index.html", HTML),
    asset!("console", "style.css", CSS),
    asset!("console", "app.js", JS),
    asset!("console", "api.js", JS),
    asset!("console", "exports.js", JS),
    asset!("console", "errors.js", JS),
    asset!("console", "integrations.js", JS),
    asset!("console", "schedules.js", JS),
];

static DOCS: [Asset; 2] = [
    asset!("assets/swagger-ui", "swagger-ui-bundle.js", JS),
    asset!("assets/swagger-ui", "swagger-ui.css", CSS),
];

/// The console's own code is all it runs and all it talks to.
const CONSOLE_CSP: &str = "default-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
/// Swagger UI sets inline styles on its elements; it still loads and calls nothing foreign.
const DOCS_CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Haven API</title>
<link rel="stylesheet" href="/api/docs/swagger-ui.css">
</head>
<body>
<main id="swagger-ui"></main>
<script src="/api/docs/swagger-ui-bundle.js"></script>
<script src="/api/docs/init.js"></script>
</body>
</html>
"#;

const DOCS_INIT: &str = "window.ui = SwaggerUIBundle({ url: '/api/openapi.json', \
    dom_id: '#swagger-ui', deepLinking: true });\n";

/// The console and the documentation page; both public (the console signs in by itself).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(console_index))
        .route("/console/{*path}", get(console_file))
        .route("/api/docs", get(docs_page))
        .route("/api/docs/init.js", get(docs_init))
        .route("/api/docs/{file}", get(docs_file))
}

async fn console_index(headers: HeaderMap) -> Response {
    serve(&headers, &CONSOLE[0], CONSOLE_CSP)
}

/// A console file by name; any other path is a page of the console (the OAuth callback comes
/// back to `/console/dashboard/settings/integrations`), so it gets `index.html`.
async fn console_file(headers: HeaderMap, Path(path): Path<String>) -> Response {
    match CONSOLE.iter().find(|a| a.name == path) {
        Some(asset) => serve(&headers, asset, CONSOLE_CSP),
        None if path.ends_with(".js") || path.ends_with(".css") => {
            ApiError::not_found(format!("no console file `{path}`")).into_response()
        }
        None => serve(&headers, &CONSOLE[0], CONSOLE_CSP),
    }
}

async fn docs_page(headers: HeaderMap) -> Response {
    static PAGE: Asset = Asset::new("docs.html", HTML, DOCS_PAGE.as_bytes());
    serve(&headers, &PAGE, DOCS_CSP)
}

async fn docs_init(headers: HeaderMap) -> Response {
    static INIT: Asset = Asset::new("init.js", JS, DOCS_INIT.as_bytes());
    serve(&headers, &INIT, DOCS_CSP)
}

async fn docs_file(headers: HeaderMap, Path(file): Path<String>) -> Response {
    match DOCS.iter().find(|a| a.name == file) {
        Some(asset) => serve(&headers, asset, DOCS_CSP),
        None => ApiError::not_found(format!("no documentation file `{file}`")).into_response(),
    }
}

/// The asset with its type, CSP and an ETag, so a browser revalidates instead of downloading
/// it again (names carry no version, so nothing may be cached without asking).
fn serve(request: &HeaderMap, asset: &'static Asset, csp: &'static str) -> Response {
    let etag = etag(asset);
    if request
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response.headers_mut().insert(header::ETAG, etag.clone());
        return response;
    }
    let mut response = asset.body.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(header::ETAG, etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// A strong validator from the file's bytes.
fn etag(asset: &'static Asset) -> &'static HeaderValue {
    asset.tag.get_or_init(|| {
        let digest = Sha256::digest(asset.body);
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
    })
}
