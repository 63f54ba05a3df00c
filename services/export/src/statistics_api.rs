//! The statistics RPCs: protobuf in, calls to [`crate::statistics`], protobuf out. Admins
//! trigger and watch runs; a tenant's users export and list their own shop's variants.

use std::time::Duration;

use chrono::{NaiveDate, Utc};
use haven_auth::Principal;
use haven_proto::export::v1 as pb;
use tonic::Status;
use uuid::Uuid;

use crate::error::ExportError;
use crate::statistics::{NewRun, RunKind, Statistics, stored_key, yesterday};

fn day(field: &'static str, text: &str) -> Result<NaiveDate, ExportError> {
    if text.is_empty() {
        return Ok(yesterday());
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| ExportError::invalid(field, format!("`{text}` is not a YYYY-MM-DD day")))?;
    if day > Utc::now().date_naive() {
        return Err(ExportError::invalid(field, "must not be in the future"));
    }
    Ok(day)
}

/// A Shopify numeric id, as `field` names it.
fn numeric(field: &'static str, text: &str) -> Result<u64, ExportError> {
    text.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ExportError::invalid(field, "must be Shopify's numeric id"))
}

/// The stored metrics (seed 004's JSON) as their message; `None` when unreadable.
fn metrics(value: &serde_json::Value) -> Option<pb::StatisticsMetrics> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Stored {
        impressions: i64,
        add_to_carts: i64,
        ctr: f64,
        orders: i64,
        revenue: f64,
    }
    let m: Stored = serde_json::from_value(value.clone()).ok()?;
    Some(pb::StatisticsMetrics {
        impressions: m.impressions,
        add_to_carts: m.add_to_carts,
        ctr: m.ctr,
        orders: m.orders,
        revenue: m.revenue,
    })
}

fn optional(text: &str) -> Option<String> {
    (!text.trim().is_empty()).then(|| text.trim().to_owned())
}

pub async fn trigger(
    statistics: &Statistics,
    principal: &Principal,
    r: &pb::TriggerStatisticsExportRequest,
) -> Result<pb::TriggerStatisticsExportResponse, Status> {
    if !(principal.is_admin() || principal.is_service()) {
        return Err(ExportError::PermissionDenied(
            "statistics runs are started by platform admins and services",
        )
        .into());
    }
    let day = day("date", &r.date)?;
    let (shop, product, variant) = (
        optional(&r.shop_domain),
        optional(&r.product_id),
        optional(&r.variant_id),
    );
    if let Some(shop) = &shop {
        haven_shopify::ShopDomain::parse(shop)
            .map_err(|e| ExportError::invalid("shop_domain", e.to_string()))?;
    }
    if let Some(p) = &product {
        numeric("product_id", p)?;
    }
    if let Some(v) = &variant {
        numeric("variant_id", v)?;
    }
    if r.daily && (shop.is_some() || product.is_some() || variant.is_some()) {
        return Err(ExportError::invalid(
            "daily",
            "the daily run covers every shop; leave shop_domain, product_id and variant_id empty",
        )
        .into());
    }
    let run = NewRun {
        day,
        kind: if r.daily {
            RunKind::Daily
        } else {
            RunKind::Admin
        },
        shop_domain: shop,
        product_id: product,
        variant_id: variant,
        requested_by: principal.user_id.clone(),
    };
    let (row, created) = statistics.trigger(run).await?;
    let run = statistics
        .run(row.id)
        .await?
        .ok_or_else(|| Status::internal("the new run vanished"))?;
    Ok(pb::TriggerStatisticsExportResponse {
        run: Some(run),
        created,
    })
}

fn admin(principal: &Principal) -> Result<(), Status> {
    if principal.is_admin() || principal.is_service() {
        Ok(())
    } else {
        Err(ExportError::PermissionDenied("statistics runs are for platform admins").into())
    }
}

pub async fn list_runs(
    statistics: &Statistics,
    principal: &Principal,
    r: &pb::ListStatisticsRunsRequest,
) -> Result<pb::ListStatisticsRunsResponse, Status> {
    admin(principal)?;
    let limit = match r.limit {
        0 => 20,
        n @ 1..=100 => i64::from(n),
        _ => return Err(ExportError::invalid("limit", "at most 100").into()),
    };
    let after =
        match r.page_token.as_str() {
            "" => None,
            t => Some(t.parse::<Uuid>().map_err(|_| {
                ExportError::invalid("page_token", "not a token from a previous page")
            })?),
        };
    let (runs, next_page_token) = statistics.runs(limit, after).await?;
    Ok(pb::ListStatisticsRunsResponse {
        runs,
        next_page_token,
    })
}

pub async fn get_run(
    statistics: &Statistics,
    principal: &Principal,
    r: &pb::GetStatisticsRunRequest,
) -> Result<pb::StatisticsRun, Status> {
    admin(principal)?;
    let id: Uuid =
        r.id.parse()
            .map_err(|_| ExportError::invalid("id", "must be a run id (UUID)"))?;
    statistics
        .run(id)
        .await?
        .ok_or_else(|| ExportError::NotFound(format!("no statistics run {id}")).into())
}

/// Time-limited links to a stored export's two files.
async fn links(
    statistics: &Statistics,
    csv: &str,
    json: &str,
) -> Result<(String, String, prost_types::Timestamp), Status> {
    let ttl: Duration = statistics.link_ttl();
    let objects = statistics.objects();
    let csv_url = objects
        .link(&stored_key(csv)?, ttl)
        .await
        .map_err(crate::statistics::StatError::from)?;
    let json_url = objects
        .link(&stored_key(json)?, ttl)
        .await
        .map_err(crate::statistics::StatError::from)?;
    let expires = Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default();
    Ok((csv_url, json_url, haven_proto::time::timestamp(expires)))
}

pub async fn export_variant(
    statistics: &Statistics,
    principal: &Principal,
    r: &pb::ExportVariantStatisticsRequest,
) -> Result<pb::VariantStatisticsExport, Status> {
    let product = numeric("product_id", &r.product_id)?;
    let variant = numeric("variant_id", &r.variant_id)?;
    for (field, gid, kind, id) in [
        (
            "shopify_product_id",
            &r.shopify_product_id,
            "Product",
            product,
        ),
        (
            "shopify_variant_id",
            &r.shopify_variant_id,
            "ProductVariant",
            variant,
        ),
    ] {
        if !gid.is_empty() && *gid != format!("gid://shopify/{kind}/{id}") {
            return Err(ExportError::invalid(
                field,
                format!("must be gid://shopify/{kind}/{id}, the same item as the numeric id"),
            )
            .into());
        }
    }
    let day = day("date", &r.date)?;
    let (shop, csv, json) = statistics
        .export_one(principal.tenant_id, None, product, variant, day)
        .await?;
    tracing::info!(tenant = %principal.tenant_id, user = %principal.user_id, %shop, product, variant, %day, "variant statistics exported on request");
    let (csv_url, json_url, expires) = links(statistics, csv.as_str(), json.as_str()).await?;
    let row = statistics
        .variant_exports(principal.tenant_id, &variant.to_string(), 366)
        .await?
        .into_iter()
        .find(|e| e.day == day && e.shop_domain == shop.as_str());
    Ok(pb::VariantStatisticsExport {
        variant_id: variant.to_string(),
        date: day.format("%Y-%m-%d").to_string(),
        csv_url,
        json_url,
        csv_key: csv.to_string(),
        json_key: json.to_string(),
        shop_domain: shop.to_string(),
        product_id: product.to_string(),
        metrics: row.as_ref().and_then(|r| metrics(&r.metrics.0)),
        exported_at: row.map(|r| haven_proto::time::timestamp(r.exported_at)),
        links_expire_at: Some(expires),
    })
}

pub async fn list_variant(
    statistics: &Statistics,
    principal: &Principal,
    r: &pb::ListVariantStatisticsRequest,
) -> Result<pb::ListVariantStatisticsResponse, Status> {
    let variant = numeric("variant_id", &r.variant_id)?;
    let limit = match r.limit {
        0 => 30,
        n @ 1..=366 => i64::from(n),
        _ => return Err(ExportError::invalid("limit", "at most 366").into()),
    };
    let rows = statistics
        .variant_exports(principal.tenant_id, &variant.to_string(), limit)
        .await?;
    let mut exports = Vec::with_capacity(rows.len());
    for row in rows {
        let (csv_url, json_url, expires) = links(statistics, &row.csv_key, &row.json_key).await?;
        exports.push(pb::VariantStatisticsExport {
            variant_id: row.variant_id,
            date: row.day.format("%Y-%m-%d").to_string(),
            csv_url,
            json_url,
            csv_key: row.csv_key,
            json_key: row.json_key,
            shop_domain: row.shop_domain,
            product_id: row.product_id,
            metrics: metrics(&row.metrics.0),
            exported_at: Some(haven_proto::time::timestamp(row.exported_at)),
            links_expire_at: Some(expires),
        });
    }
    Ok(pb::ListVariantStatisticsResponse { exports })
}
