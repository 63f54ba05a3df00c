//! The OpenAPI document and the router agree: every documented operation is served, every
//! route the gateway serves is documented (or is one of the few pages that are not REST), and
//! the committed snapshot is the document the code produces.

use haven_auth::Role;
use haven_testkit::nats_url;
use serde_json::Value;
use uuid::Uuid;

use crate::webhooks::start_with;

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

/// Routes served outside the document, each for a reason: pages and files for a browser,
/// and the document itself.
const UNDOCUMENTED: &[&str] = &[
    "/console",
    "/console/",
    "/console/{*path}",
    "/api/docs",
    "/api/docs/init.js",
    "/api/docs/{file}",
    "/api/openapi.json",
];

fn document() -> String {
    let verifier = haven_auth::Verifier::hs256(haven_testkit::JWT_SECRET.as_bytes()).unwrap();
    haven_gateway::openapi::document(verifier)
}

#[test]
fn the_committed_snapshot_is_the_document() {
    let now = document();
    if std::env::var_os("HAVEN_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(SNAPSHOT, &now).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(SNAPSHOT).unwrap_or_default();
    assert!(
        committed == now,
        "services/gateway/openapi.json is not the document the code produces; review the change \
         and run `HAVEN_UPDATE_SNAPSHOTS=1 cargo nextest run -p haven-gateway openapi` to accept it"
    );
}

#[test]
fn the_document_is_openapi_3_1_and_every_operation_says_what_it_answers() {
    let doc: Value = serde_json::from_str(&document()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 18, "{} paths", paths.len());
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{method} {path} has no responses");
            assert!(
                op["summary"].is_string() || op["description"].is_string(),
                "{method} {path} is not described"
            );
        }
    }
    // Seed 000's calls are there in the shape its page reads.
    assert!(paths["/api/export"]["post"].is_object());
    assert!(paths["/api/export/history/{export_id}"]["get"].is_object());
}

/// Every `.route(` in the gateway's sources outside the documented routers is one of the
/// [`UNDOCUMENTED`] paths: a new REST route must come through `routes!` (and so the document).
#[test]
fn no_route_is_served_outside_the_document() {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for call in [".route(", ".route_service(", ".nest_service("] {
            for (at, _) in text.match_indices(call) {
                let rest = text[at + call.len()..].trim_start();
                let literal = rest
                    .strip_prefix('"')
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("<not a literal>");
                found.push((path.display().to_string(), literal.to_owned()));
            }
        }
    }
    for (file, route) in &found {
        let full = if file.ends_with("pages.rs") || file.ends_with("lib.rs") {
            route.clone()
        } else {
            format!("(in {file}) {route}")
        };
        assert!(
            UNDOCUMENTED.contains(&full.as_str()),
            "{file} serves {route} outside the OpenAPI document; add it with routes!(…)"
        );
    }
    assert_eq!(found.len(), UNDOCUMENTED.len(), "{found:?}");
}

/// Each documented operation, called with a valid token, reaches its handler: not the
/// fallback's 404 and not 405.
#[tokio::test]
async fn every_documented_operation_is_served() {
    let gw = start_with(&nats_url(), None, |c| c).await;
    let token = haven_testkit::token(Uuid::new_v4(), Role::User);
    let doc: Value = serde_json::from_str(&document()).unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{provider}", "klaviyo")
            .replace("{step}", "design_rules")
            .replace("{export_id}", &Uuid::new_v4().to_string())
            .replace("{id}", &Uuid::new_v4().to_string())
            .replace("{key}", "statistic-exports/a/b.csv");
        for method in item.as_object().unwrap().keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let res = gw
                .http
                .request(method.clone(), format!("{}{concrete}", gw.base))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = res.status();
            let body = res.text().await.unwrap_or_default();
            assert_ne!(status, 405, "{method} {path} is not served");
            assert!(
                !body.contains("no such API endpoint"),
                "{method} {path} fell through to the fallback"
            );
            checked += 1;
        }
    }
    assert!(checked >= 19, "{checked} operations");
    // The undocumented pages are served too, without a token.
    for page in ["/console/", "/api/docs", "/api/openapi.json"] {
        let res = gw
            .http
            .get(format!("{}{page}", gw.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{page}");
    }
    gw.stop.fire();
}

#[test]
fn operation_ids_are_unique() {
    let doc: Value = serde_json::from_str(&document()).unwrap();
    let mut ids = std::collections::HashSet::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            let id = op["operationId"].as_str().unwrap().to_owned();
            assert!(ids.insert(id.clone()), "operationId {id} twice");
        }
    }
}
