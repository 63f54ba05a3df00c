//! The REST API's OpenAPI 3.1 document, built from the same handler list as the router
//! (utoipa-axum), so a route cannot be served without being documented. Served at
//! `/api/openapi.json` and drawn by the page at `/api/docs`; a committed snapshot
//! (`services/gateway/openapi.json`) makes every change to it visible in review.

use std::sync::Arc;

use haven_auth::{AuthLayer, JsonRejection, Verifier};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{
    ApiError, AppState, errors, export, integrations, objects, reports, schedules, statistics,
    webhooks,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Haven gateway",
        description = "REST API of Haven's backbone: exports and reports, the retry queue's error page, \
            integrations and the setup wizard. Every error answers \
            `{\"error\": text, \"code\", \"field\"?}`."
    ),
    modifiers(&Bearer),
    security(("bearer" = [])),
    tags(
        (name = "exports", description = "Downloads, the catalogue and export history"),
        (name = "reports", description = "The billing usage export and brand analytics reports"),
        (name = "retry", description = "The error queue"),
        (name = "integrations", description = "Provider connections and the setup wizard"),
        (name = "schedules", description = "Scheduled exports: weekly and monthly, in the schedule's time zone"),
        (name = "statistics", description = "Daily product statistics: the cron and manual triggers, runs and stored exports"),
        (name = "objects", description = "Stored files behind signed, time-limited links"),
        (name = "webhooks", description = "Deliveries from providers"),
        (name = "operations", description = "Health for load balancers and orchestrators"),
    )
)]
struct ApiDoc;

/// The bearer JWT every `/api` route needs unless it says otherwise.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("`havenctl token` mints one"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cron_secret",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "HAVEN_CRON_SECRET, for the statistics cron route only",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every REST route with its documentation: health at the root, the rest under `/api`.
pub(crate) fn api_router(verifier: Verifier) -> OpenApiRouter<Arc<AppState>> {
    let protected = OpenApiRouter::new()
        .merge(errors::routes())
        .merge(export::routes())
        .merge(reports::routes())
        .merge(statistics::routes())
        .merge(schedules::routes())
        .merge(integrations::routes())
        .fallback(|| async { ApiError::not_found("no such API endpoint") })
        .layer(AuthLayer::new(verifier, JsonRejection));
    let api = OpenApiRouter::new()
        .merge(webhooks::routes())
        .merge(integrations::public_routes())
        .merge(objects::routes())
        .merge(statistics::public_routes())
        .merge(protected);
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(crate::healthz))
        .routes(routes!(crate::readyz))
        .nest("/api", api)
}

/// Rewrites axum's catch-all segments (`{*key}`) as OpenAPI path templates (`{key}`): the
/// router needs the former, clients generated from the document the latter. A key's `/`
/// may be sent as is or as `%2F`; both reach the same object.
pub(crate) fn finish(mut api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let paths = std::mem::take(&mut api.paths.paths);
    api.paths.paths = paths
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
    api
}

/// The document as served, pretty-printed with a final newline (the snapshot's form).
pub fn document(verifier: Verifier) -> String {
    let mut json = finish(api_router(verifier).into_openapi())
        .to_pretty_json()
        .unwrap_or_default();
    json.push('\n');
    json
}
